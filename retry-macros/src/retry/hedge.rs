//! Code generation for `#[retry(hedge = "…")]`: instead of the loop, one
//! call of `Retry::hedged` with a closure that makes an attempt.
//!
//! ```text
//! let nest = NestSlot::for_policy(&POLICY);
//! let mut retry = Retry::new(&POLICY, "get", &nest, None);   // started(&POLICY) with a deadline; .with_budget(b)
//! retry.hedged(
//!     Duration::from_nanos(50_000_000),
//!     || {
//!         let req = for_attempt(&mut slot_req, false);   // every attempt gets its own clone
//!         async move { if let Some(r) = None::<Result<Reply, Status>> { return r; } { … } }
//!     },
//!     |error: &_| judge(&POLICY, error),                  // checks `Status: Classify`
//!     |error, event| notify(error, event),                // or nothing
//!     Some(from_timeout as fn(_) -> _),                   // or None without time limits
//! ).await
//! ```

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::{Path, spanned::Spanned};

use super::{
    args::{On, RetryArgs},
    expand::{Names, attempt_pin, from_timeout, located_tokens, owned_bindings},
    plan::Plan,
};
use steadfast_macro_support::syntax::{duration_expr, nested_body};

/// The hedged call, as the fn's tail expression (after the call's set-up and `retry_new`).
pub(super) fn call(
    args: &RetryArgs,
    plan: &Plan,
    root: &Path,
    names: &Names,
    body: &proc_macro2::Group,
    hedge: std::time::Duration,
) -> TokenStream {
    let Names { policy, retry, .. } = names;
    let hedge = duration_expr(hedge);
    let bindings = owned_bindings(plan, root, &quote!(false));
    let pin = attempt_pin(plan);
    let body = nested_body(body);
    let judge = match &args.on {
        Some(On::Predicate(predicate)) => {
            let span = predicate.span();
            let root = located_tokens(root, span);
            quote_spanned!(span=> |__steadfast_error: &_| #root::__private::judge_if((#predicate)(__steadfast_error)))
        }
        _ => {
            let span = plan.error_span;
            let root = located_tokens(root, span);
            quote_spanned!(span=> |__steadfast_error: &_| #root::__private::judge(&#policy, __steadfast_error))
        }
    };
    let notify = match &args.notify {
        Some(notify) => {
            quote_spanned!(notify.span()=> |__steadfast_error: &_, __steadfast_event| (#notify)(__steadfast_error, __steadfast_event))
        }
        None => quote!(|_: &_, _| {}),
    };
    let on_timeout = match from_timeout(args, root) {
        Some(from_timeout) => quote!(::core::option::Option::Some(#from_timeout)),
        None => quote!(::core::option::Option::None),
    };
    quote! {
        #retry
            .hedged(
                #hedge,
                || {
                    #(#bindings)*
                    async move {
                        #pin
                        #body
                    }
                },
                #judge,
                #notify,
                #on_timeout,
            )
            .await
    }
}
