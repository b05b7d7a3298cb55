//! `#[retry]`: parse the arguments, analyse the fn, generate the loop.

mod args;
mod expand;
mod plan;

use proc_macro2::TokenStream;
use quote::quote;

use macro_support::syntax::{Ctxt, MaybeItemFn};
use args::RetryArgs;

/// Expands `#[retry(args)] item`. On any error the original item is emitted
/// unchanged beside the errors, so that the rest of the crate still compiles
/// and the IDE still knows the fn.
pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let cx = Ctxt::new();
    let args = RetryArgs::parse(args, &cx);
    let item_fn = match syn::parse2::<MaybeItemFn>(item.clone()) {
        Ok(item_fn) => item_fn,
        Err(error) => {
            cx.syn_error(not_a_fn(&item).unwrap_or(error));
            return with_errors(cx, item);
        }
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

/// The error for an item that is not a fn at all, at its keyword.
fn not_a_fn(item: &TokenStream) -> Option<syn::Error> {
    let parsed: syn::Item = syn::parse2(item.clone()).ok()?;
    let (what, tokens): (&str, &dyn quote::ToTokens) = match &parsed {
        syn::Item::Fn(_) => return None,
        syn::Item::Struct(item) => ("a struct", &item.struct_token),
        syn::Item::Enum(item) => ("an enum", &item.enum_token),
        syn::Item::Impl(item) => (
            "an impl block (put it on each method instead)",
            &item.impl_token,
        ),
        syn::Item::Trait(item) => (
            "a trait (put it on each method implementation instead)",
            &item.trait_token,
        ),
        syn::Item::Mod(item) => ("a module", &item.mod_token),
        syn::Item::Const(item) => ("a const", &item.const_token),
        syn::Item::Static(item) => ("a static", &item.static_token),
        syn::Item::Type(item) => ("a type alias", &item.type_token),
        _ => ("this item", &parsed),
    };
    Some(syn::Error::new_spanned(
        tokens,
        format!("#[retry] goes on a fn that returns `Result<T, E>`, not on {what}"),
    ))
}
