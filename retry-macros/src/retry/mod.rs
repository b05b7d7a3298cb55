//! `#[retry]`: parse the arguments, analyse the fn, generate the loop.

mod args;
mod expand;
mod hedge;
mod plan;

use proc_macro2::TokenStream;
use quote::quote;

use args::RetryArgs;
use steadfast_macro_support::syntax::AttributeArguments as _;
use steadfast_macro_support::syntax::{Ctxt, parse_fn};

/// Expands `#[retry(args)] item`. On any error the original item is emitted
/// unchanged beside the errors, so that the rest of the crate still compiles
/// and the IDE still knows the fn.
pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let cx = Ctxt::new();
    let args = RetryArgs::parse(args, &cx);
    let wants = "goes on a fn that returns `Result<T, E>`";
    let Some(item_fn) = parse_fn(&item, "retry", wants, &cx) else {
        return with_errors(cx, item);
    };
    let plan = plan::Plan::new(&item_fn, &args, &cx);
    match cx.check() {
        Ok(()) => expand::generate(
            &item_fn,
            &args,
            &plan.expect("a plan when there is no error"),
        ),
        Err(errors) => {
            let errors = errors.to_compile_error();
            quote!(#errors #item)
        }
    }
}

fn with_errors(cx: Ctxt, item: TokenStream) -> TokenStream {
    let errors = cx.check().err().map(|error| error.to_compile_error());
    quote!(#errors #item)
}
