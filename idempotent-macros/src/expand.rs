//! Code generation for `#[idempotent]`.
//!
//! In:
//!
//! ```text
//! #[idempotent(key = req.request_id, store = self.store)]
//! async fn pay(&self, req: PayRequest) -> Result<PayReceipt, Status> { body }
//! ```
//!
//! Out (names shortened; generated locals are `__steadfast_*`, mixed-site):
//!
//! ```text
//! async fn pay(&self, req: PayRequest) -> Result<PayReceipt, Status> {
//!     const CONFIG: IdempotencyConfig = IdempotencyConfig::new();           // ttl, lease, in_progress
//!     let key = record_key(static_scope(concat!(module_path!(), "::pay")), &(req.request_id));
//!     let fingerprint = None;                                             // or Some(fingerprint(&(…)))
//!     let store = store_ref(&(self.store));                               // or default_store()
//!     let codec = (&&&Probe::<PayReceipt>::new()).codec();                 // prost, status or JSON, chosen by type
//!     idempotent(store, &CONFIG, key, fingerprint, &codec, &NotStored, |_| false, move || async move {
//!         if let Some(r) = None::<Result<PayReceipt, Status>> { return r; } // pins `?` and `return`
//!         body
//!     }).await
//! }
//! ```
//!
//! The key, scope and fingerprint are evaluated first, so the body may move
//! the arguments they borrow from.

use macro_support::syntax::{Ctxt, MaybeItemFn, async_trait_parts, contains_impl_trait, not_a_fn};
use proc_macro2::{Group, Ident, Literal, Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::{ReturnType, Type, spanned::Spanned};

use crate::args::IdempotentArgs;

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let cx = Ctxt::new();
    let args = IdempotentArgs::parse(args, &cx);
    let item_fn = match syn::parse2::<MaybeItemFn>(item.clone()) {
        Ok(item_fn) => item_fn,
        Err(error) => {
            cx.syn_error(not_a_fn(&item, "idempotent", "goes on an async request handler").unwrap_or(error));
            return with_errors(cx, item);
        }
    };
    let shape = shape(&item_fn, &cx);
    match (cx.check(), shape) {
        (Ok(()), Some((body, output, boxed))) => generate(&item_fn, &args, &body, &output, boxed),
        (Err(errors), _) => {
            let errors = errors.to_compile_error();
            quote!(#errors #item)
        }
        (Ok(()), None) => item,
    }
}

fn with_errors(cx: Ctxt, item: TokenStream) -> TokenStream {
    let errors = cx.check().err().map(|error| error.to_compile_error());
    quote!(#errors #item)
}

/// The body to wrap, the handler's output type, and whether the fn was
/// rewritten by `#[async_trait]` (the body then goes back in a `Box::pin`).
fn shape(item: &MaybeItemFn, cx: &Ctxt) -> Option<(Group, Type, bool)> {
    let sig = &item.sig;
    let (body, output, boxed) = if sig.asyncness.is_some() {
        let ReturnType::Type(_, output) = &sig.output else {
            cx.error_spanned_by(
                &sig.ident,
                format!(
                    "#[idempotent] needs a handler that returns `Result<T, E>`, but `{}` returns `()`",
                    sig.ident
                ),
            );
            return None;
        };
        (item.body.clone(), (**output).clone(), false)
    } else if let Some((body, output)) = async_trait_parts(item) {
        (body, output, true)
    } else {
        cx.error_spanned_by(
            sig.fn_token,
            format!(
                "#[idempotent] goes on an async request handler, but `{}` is not async: write `async fn {}`",
                sig.ident, sig.ident
            ),
        );
        return None;
    };
    if contains_impl_trait(&output) {
        cx.error_spanned_by(
            &output,
            "#[idempotent] stores the handler's result, so it must be a nameable type: write `Result<T, E>` without `impl Trait`",
        );
        return None;
    }
    Some((body, output, boxed))
}

fn generate(item: &MaybeItemFn, args: &IdempotentArgs, body: &Group, output: &Type, boxed: bool) -> TokenStream {
    let MaybeItemFn { attrs, vis, sig, .. } = item;
    let root = args.root();
    let private = quote!(#root::__private);
    let local = |name: &str| Ident::new(name, Span::mixed_site());
    let (config, key, fingerprint, store, codec, error_codec) = (
        local("__STEADFAST_IDEMPOTENCY"),
        local("__steadfast_key"),
        local("__steadfast_fingerprint"),
        local("__steadfast_store"),
        local("__steadfast_codec"),
        local("__steadfast_error_codec"),
    );
    let config_expr = config_expr(args, &private);
    let scope = match &args.scope {
        Some(scope) => quote_spanned!(scope.span()=> #private::scope_of(&(#scope))),
        None => {
            let name = Literal::string(&format!("::{}", sig.ident));
            quote!(#private::static_scope(::core::concat!(::core::module_path!(), #name)))
        }
    };
    let key_expr = args.key.as_ref().expect("checked by parse");
    let key_value = quote_spanned!(key_expr.span()=> #private::record_key(#scope, &(#key_expr)));
    let fingerprint_value = match &args.fingerprint {
        Some(payload) => quote_spanned!(payload.span()=> ::core::option::Option::Some(#private::fingerprint(&(#payload)))),
        None => quote!(::core::option::Option::None),
    };
    let store_value = match &args.store {
        Some(store) => quote_spanned!(store.span()=> #private::store_ref(&(#store))),
        None => quote!(#private::default_store()),
    };
    let ok_type = quote_spanned!(output.span()=> <#output as #private::HandlerOutput>::Ok);
    let err_type = quote_spanned!(output.span()=> <#output as #private::HandlerOutput>::Err);
    let codec_value = quote_spanned!(output.span()=> (&&&#private::Probe::<#ok_type>::new()).codec());
    let (error_codec_value, cache) = match &args.cache_errors {
        Some(codes) => {
            let names = codes.value.iter().map(|code| Ident::new(code, Span::call_site()));
            let set = quote!(#private::CodeSet::EMPTY #(.with(#private::Code::#names))*);
            (
                quote_spanned!(codes.literal.span()=> (&&&#private::Probe::<#err_type>::new()).codec()),
                quote_spanned!(codes.literal.span()=> |__steadfast_error: &#err_type| #private::cached(__steadfast_error, #set)),
            )
        }
        None => (quote!(#private::NotStored), quote!(|_: &#err_type| false)),
    };
    let call = quote_spanned! {output.span()=>
        #private::idempotent::<#output, _, _, _, _>(
            #store, &#config, #key, #fingerprint, &#codec, &#error_codec, #cache,
            move || async move {
                #[allow(unreachable_code, clippy::diverging_sub_expression, clippy::needless_return)]
                if let ::core::option::Option::Some(__steadfast_return) = ::core::option::Option::None::<#output> {
                    return __steadfast_return;
                }
                #body
            },
        )
    };
    let wrapped = quote! {
        const #config: #private::IdempotencyConfig = #config_expr;
        let #key = #key_value;
        let #fingerprint = #fingerprint_value;
        let #store = #store_value;
        #[allow(unused_imports)]
        use #private::{ProbeNone as _, ProbeSerde as _, ProbeTonic as _};
        #[allow(clippy::needless_borrow)]
        let #codec = #codec_value;
        #[allow(clippy::needless_borrow)]
        let #error_codec = #error_codec_value;
        #call.await
    };
    let new_body = if boxed {
        quote!(::std::boxed::Box::pin(async move { #wrapped }))
    } else {
        wrapped
    };
    quote! {
        #(#attrs)*
        #vis #sig {
            #new_body
        }
    }
}

fn config_expr(args: &IdempotentArgs, private: &TokenStream) -> TokenStream {
    let duration = |duration: std::time::Duration| {
        let nanos = Literal::u64_suffixed(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX));
        quote!(::core::time::Duration::from_nanos(#nanos))
    };
    let mut config = quote!(#private::IdempotencyConfig::new());
    if let Some(ttl) = &args.ttl {
        let ttl = duration(ttl.value);
        config = quote!(#config.with_ttl(#ttl));
    }
    if let Some(lease) = &args.lease {
        let lease = duration(lease.value);
        config = quote!(#config.with_lease(#lease));
    }
    if let Some(in_progress) = &args.in_progress {
        let policy = match in_progress.value {
            Some(limit) => {
                let limit = duration(limit);
                quote!(#private::InProgressPolicy::Wait(#limit))
            }
            None => quote!(#private::InProgressPolicy::Reject),
        };
        config = quote!(#config.with_in_progress(#policy));
    }
    config
}
