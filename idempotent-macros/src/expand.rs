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
//!     const CONFIG: IdempotencyConfig = IdempotencyConfig::new();       // ttl, lease, in_progress
//!     let shape: HandlerShape<Result<PayReceipt, Status>, _, _> = handler_output(); // R: HandlerOutput
//!     let scope = { fn marker() {} handler_scope(&CELL, type_name_of_val(&marker)) }; // or scope_of(&(…))
//!     let key = record_key(scope, &(req.request_id));                 // K: KeyArg
//!     let fingerprint = None;                     // or fingerprint_value((&&&&&FingerprintProbe::new(&(…))).fingerprint())
//!     let store = store_ref(&(self.store));                           // S: StoreArg; or default_store()
//!     let ok_probe = (&&&&ok_probe(&shape)).codec();                   // prost, status or JSON, by type
//!     let ok_codec = ok_codec(&(shape), &(ok_probe));                 // C: Storable<PayReceipt>
//!     let err_probe = NotStored;                                      // or as above, with cache_errors
//!     let err_codec = err_codec(&(shape), &(err_probe));
//!     let into_error = error_conversion(&(shape));                    // Status: From<IdempotencyError>
//!     idempotent(shape, store, &CONFIG, key, fingerprint, ok_codec, err_codec, into_error,
//!         |_| false,                                                  // or |e| cached(e, codes)
//!         move || async move {
//!             if let Some(r) = None::<Result<PayReceipt, Status>> { return r; } // pins `?` and `return`
//!             body
//!         },
//!     ).await
//! }
//! ```
//!
//! With `transaction = tx` (and `store = …`, an SQL store), the body closure
//! runs the body in the store's transaction, bound to the user's `tx`:
//!
//! ```text
//! let tx_store = transaction_store(&(self.store));                  // S: TransactionStore
//! let tx_codec = (&&&&ok_probe(&shape)).codec();
//! … move || async move {
//!     in_transaction(shape, &tx_store, &tx_codec, &CONFIG, into_error,
//!         move |mut tx| async move { /* the guard, then */ body }).await
//! }
//! ```
//!
//! Each bound the handler must meet is checked once, by the sync call named
//! in the comment, whose tokens are located over the user's tokens it is
//! about (see [`located_over`]): the error points at `self.store`, at
//! `PayReceipt`, at `Status`. `idempotent` itself has no such bound (a bound
//! of an async fn is reported again at each use of its future).
//!
//! The key, scope and fingerprint are evaluated first, so the body may move
//! the arguments they borrow from. Under `#[async_trait]`, they are
//! evaluated after its prologue (`let __self = self; let req = req;`), with
//! `self` renamed `__self` as in the body.

use proc_macro2::{Delimiter, Group, Ident, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote};
use steadfast_macro_support::syntax::{
    Ctxt, MaybeItemFn, async_trait_parts, contains_impl_trait, duration_expr, nested_body,
    parse_fn, rename_self, with_durations,
};
use syn::{Block, GenericArgument, Pat, PathArguments, ReturnType, Stmt, Type, parse::Parser};

use crate::args::IdempotentArgs;
use steadfast_macro_support::syntax::AttributeArguments as _;

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let cx = Ctxt::new();
    let args = IdempotentArgs::parse(args, &cx);
    let Some(item_fn) = parse_fn(&item, "idempotent", "goes on an async request handler", &cx)
    else {
        return with_errors(cx, item);
    };
    let shape = shape(&item_fn, &cx);
    match (cx.check(), shape) {
        (Ok(()), Some((body, output, boxed))) => generate(&item_fn, args, &body, &output, boxed),
        (Err(errors), _) => {
            // The fn as written, so that the rest of the crate still sees
            // it; its arguments are unused without the expansion, which is
            // not worth a warning on top of the error.
            let errors = errors.to_compile_error();
            quote!(#errors #[allow(unused_variables)] #item)
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

fn generate(
    item: &MaybeItemFn,
    mut args: IdempotentArgs,
    body: &Group,
    output: &Type,
    boxed: bool,
) -> TokenStream {
    let MaybeItemFn {
        attrs, vis, sig, ..
    } = item;
    // Under `#[async_trait]`, the arguments of the attribute are evaluated
    // after its prologue, over the arguments as the body sees them (moved
    // into the future; `self` renamed `__self`).
    let (prologue, body) = match boxed.then(|| split_async_trait_body(body)).flatten() {
        Some((prologue, rest)) => (Some(prologue), rest),
        None => (None, body.clone()),
    };
    if prologue.is_some() && sig.receiver().is_some() {
        args.rewrite_exprs(|expr| rename_self(expr.to_token_stream(), "__self"));
    }
    let body = nested_body(&body);
    let args = &args;
    let root = args.root();
    let private = quote!(#root::__private);
    let local = |name: &str| Ident::new(name, Span::mixed_site());
    let [
        config,
        shape,
        scope,
        key,
        fingerprint,
        store,
        ok_probe,
        ok_codec,
        err_probe,
        err_codec,
        into_error,
    ] = [
        "__STEADFAST_IDEMPOTENCY",
        "__steadfast_shape",
        "__steadfast_scope",
        "__steadfast_key",
        "__steadfast_fingerprint",
        "__steadfast_store",
        "__steadfast_ok_probe",
        "__steadfast_ok_codec",
        "__steadfast_err_probe",
        "__steadfast_err_codec",
        "__steadfast_into_error",
    ]
    .map(local);
    let config_expr = config_expr(args, &private);
    let (ok_type, err_type) = result_parts(output);

    // Each bound a handler must meet is checked once, by one sync call below,
    // located over the tokens it is about: its error points there.
    let written = user(output);
    let shape_type = quote!(#private::HandlerShape<#written, _, _>);
    let shape_value = located_over(output, quote!(#private::handler_output()));
    let scope_value = match &args.scope {
        Some(expr) => {
            let written = user(expr);
            located_over(expr, quote!(#private::scope_of(&(#written))))
        }
        None => {
            // The handler's path as rustc names it (module, implementing
            // type and trait, fn), read from a marker fn declared inside it.
            let marker = local("__steadfast_scope");
            let cell = local("__STEADFAST_SCOPE");
            quote! {{
                fn #marker() {}
                static #cell: ::std::sync::OnceLock<::std::boxed::Box<str>> = ::std::sync::OnceLock::new();
                #private::handler_scope(&#cell, ::core::any::type_name_of_val(&#marker))
            }}
        }
    };
    let key_expr = args.key.as_ref().expect("checked by parse");
    let written = user(key_expr);
    let key_value = located_over(key_expr, quote!(#private::record_key(#scope, &(#written))));
    let fingerprint_value = match &args.fingerprint {
        Some(expr) => {
            let written = user(expr);
            located_over(
                expr,
                quote!(#private::fingerprint_value((&&&&&#private::FingerprintProbe::new(&(#written))).fingerprint())),
            )
        }
        None => quote!(::core::option::Option::None),
    };
    let store_value = match &args.store {
        Some(expr) => {
            let written = user(expr);
            located_over(expr, quote!(#private::store_ref(&(#written))))
        }
        None => quote!(#private::default_store()),
    };
    // A handler that owns its arguments runs to its end even if its caller
    // goes away; one that borrows (`&self`, `&T`) runs in its caller's future.
    let owns = !boxed && owns_everything(sig);
    let to_completion = match &args.run_to_completion {
        Some(flag) if flag.value && !owns => {
            let error = syn::Error::new(
                flag.span,
                "`run_to_completion = true` needs a handler that owns its arguments (no `self` receiver, no references or lifetimes, no generics), so that its body can outlive its caller's future; on a tonic service, install `steadfast::idempotency::RunToCompletionLayer` on the server instead",
            )
            .to_compile_error();
            let original = &item.body;
            return quote!(#error #(#attrs)* #[allow(unused_variables)] #vis #sig #original);
        }
        Some(flag) => flag.value,
        None => owns,
    };
    let ok_codec_value = if to_completion {
        located_over(
            ok_type,
            quote!(#private::ok_codec_owned(&(#shape), #ok_probe)),
        )
    } else {
        located_over(ok_type, quote!(#private::ok_codec(&(#shape), &(#ok_probe))))
    };
    let into_error_value = located_over(err_type, quote!(#private::error_conversion(&(#shape))));
    let (err_probe_value, err_codec_value, cache) = match &args.cache_errors {
        Some(codes) => {
            let names = codes
                .value
                .iter()
                .map(|code| Ident::new(code, Span::call_site()));
            let set = quote!(#private::CodeSet::EMPTY #(.with(#private::Code::#names))*);
            let cached_error = local("__steadfast_error");
            (
                quote!((&&&&#private::err_probe(&#shape)).codec()),
                if to_completion {
                    located_over(
                        &codes.literal,
                        quote!(#private::err_codec_owned(&(#shape), #err_probe)),
                    )
                } else {
                    located_over(
                        &codes.literal,
                        quote!(#private::err_codec(&(#shape), &(#err_probe))),
                    )
                },
                located_over(
                    &codes.literal,
                    quote!(|#cached_error| #private::cached(#cached_error, #set)),
                ),
            )
        }
        None if to_completion => (
            quote!(#private::NotStored),
            quote!(#private::err_codec_owned(&#shape, #err_probe)),
            quote!(|_| false),
        ),
        None => (
            quote!(#private::NotStored),
            quote!(#private::err_codec(&#shape, &#err_probe)),
            quote!(|_| false),
        ),
    };
    let (engine, runs_alone) = if to_completion {
        (
            quote!(#private::idempotent_to_completion),
            Some(located_over(output, quote!(#private::runs_alone(&#shape);))),
        )
    } else {
        (quote!(#private::idempotent), None)
    };
    let guarded_body = quote! {
        #[allow(unreachable_code, clippy::diverging_sub_expression, clippy::needless_return)]
        if let ::core::option::Option::Some(__steadfast_return) = ::core::option::Option::None::<#output> {
            return __steadfast_return;
        }
        #body
    };
    // `transaction = tx`: the body runs in a transaction of the store's
    // database, bound to the user's `tx`, and its result is stored in it.
    let (transaction_setup, engine_body) = match (&args.transaction, &args.store) {
        (Some(name), Some(store_expr)) => {
            let [tx_store, tx_codec] = [
                "__steadfast_transaction_store",
                "__steadfast_transaction_codec",
            ]
            .map(local);
            let written = user(store_expr);
            let tx_store_value =
                located_over(store_expr, quote!(#private::transaction_store(&(#written))));
            (
                quote! {
                    let #tx_store = #tx_store_value;
                    #[allow(clippy::needless_borrow)]
                    let #tx_codec = (&&&&#private::ok_probe(&#shape)).codec();
                },
                quote! {
                    move || async move {
                        #private::in_transaction(
                            #shape, &#tx_store, &#tx_codec, &#config, #into_error,
                            move |#[allow(unused_mut)] mut #name| async move { #guarded_body },
                        )
                        .await
                    }
                },
            )
        }
        _ => (quote!(), quote!(move || async move { #guarded_body })),
    };
    let wrapped = quote! {
        const #config: #private::IdempotencyConfig = #config_expr;
        let #shape: #shape_type = #shape_value;
        #runs_alone
        let #scope = #scope_value;
        let #key = #key_value;
        #[allow(clippy::needless_borrow)]
        let #fingerprint = #fingerprint_value;
        let #store = #store_value;
        #[allow(unused_imports)]
        use #private::{
            ProbeMessage as _, ProbeNone as _, ProbeNothing as _, ProbeOwnedMessage as _,
            ProbeCloneSerde as _, ProbeParts as _, ProbeSerde as _, ProbeSerialize as _,
            ProbeTonic as _,
        };
        #[allow(clippy::needless_borrow)]
        let #ok_probe = (&&&&#private::ok_probe(&#shape)).codec();
        let #ok_codec = #ok_codec_value;
        #[allow(clippy::needless_borrow)]
        let #err_probe = #err_probe_value;
        let #err_codec = #err_codec_value;
        let #into_error = #into_error_value;
        #transaction_setup
        #engine(
            #shape, #store, &#config, #key, #fingerprint, #ok_codec, #err_codec, #into_error, #cache,
            #engine_body,
        )
        .await
    };
    let new_body = if boxed {
        quote!(::std::boxed::Box::pin(async move { #prologue #wrapped }))
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

/// Whether the fn owns everything its future holds, so that the future can
/// outlive its caller (`'static`): no receiver, no generics, and no
/// reference, lifetime or `impl Trait` in an argument or the output. A free
/// fn or an axum handler (`State(s): State<App>, Json(req): Json<Req>`)
/// does; `&self` methods and `&str` arguments do not.
fn owns_everything(sig: &syn::Signature) -> bool {
    fn borrows(tokens: TokenStream) -> bool {
        tokens.into_iter().any(|token| match token {
            TokenTree::Punct(punct) => matches!(punct.as_char(), '&' | '\''),
            TokenTree::Ident(ident) => ident == "impl" || ident == "Self",
            TokenTree::Group(group) => borrows(group.stream()),
            TokenTree::Literal(_) => false,
        })
    }
    sig.receiver().is_none()
        && sig.generics.params.is_empty()
        && sig.inputs.iter().all(|input| match input {
            syn::FnArg::Typed(typed) => !borrows(typed.ty.to_token_stream()),
            syn::FnArg::Receiver(_) => false,
        })
        && !borrows(sig.output.to_token_stream())
}

/// Splits the body that `#[async_trait]` wrote into its prologue (the
/// return-type guard and the rebinding of each argument) and the rest:
///
/// In: `{ if let Some(__ret) = None::<R> { return __ret; } let __self = self; let id = id; let __ret: R = { body }; __ret }`
/// Out: `if let … { return __ret; } let __self = self; let id = id;` and `{ let __ret: R = { body }; __ret }`
///
/// `None` for a body of another shape, which is then wrapped whole.
fn split_async_trait_body(body: &Group) -> Option<(TokenStream, Group)> {
    let stmts = Block::parse_within.parse2(body.stream()).ok()?;
    let split = stmts.iter().position(|stmt| {
        matches!(stmt, Stmt::Local(local)
            if matches!(&local.pat, Pat::Type(typed)
                if matches!(&*typed.pat, Pat::Ident(binding) if binding.ident == "__ret")))
    })?;
    let (prologue, rest) = stmts.split_at(split);
    let mut rest = Group::new(Delimiter::Brace, quote!(#(#rest)*));
    rest.set_span(body.span());
    Some((quote!(#(#prologue)*), rest))
}

/// `A` and `B` of an output written `Result<A, B>`, to point errors about
/// the success or the error type at it; else the whole output, twice.
fn result_parts(output: &Type) -> (&dyn ToTokens, &dyn ToTokens) {
    if let Type::Path(path) = output
        && let Some(last) = path.path.segments.last()
        && last.ident == "Result"
        && let PathArguments::AngleBracketed(arguments) = &last.arguments
        && let [GenericArgument::Type(ok), GenericArgument::Type(err)] =
            arguments.args.iter().collect::<Vec<_>>().as_slice()
    {
        return (ok, err);
    }
    (output, output)
}

/// The user's tokens, in an invisible group that [`located_over`] leaves as written.
fn user(tokens: &dyn ToTokens) -> Group {
    Group::new(Delimiter::None, tokens.to_token_stream())
}

/// `generated` with each of its own tokens moved to `range`, the user's
/// tokens that it is about: idents and puncts to its first token, groups
/// to its last, so that rustc's span of the whole expression (and of each
/// argument that starts with an ident or punct and ends with a group)
/// covers `range`, and an unmet bound is reported there, under the tokens
/// the user wrote. Name resolution is kept (`located_at`); the user's own
/// tokens, in [`user`] groups, keep their spans.
///
/// In: `::steadfast::__private::store_ref(&(⟦self.db⟧))` (all at the attribute)
/// Out: the same, with `::steadfast::__private::store_ref` and `&` at `self`
/// and both `(…)` at `db`: rustc's `&(self.db)` spans `self.db`.
fn located_over(range: &dyn ToTokens, generated: TokenStream) -> TokenStream {
    let tokens = range.to_token_stream();
    let first = tokens
        .clone()
        .into_iter()
        .next()
        .map_or_else(Span::call_site, |token| token.span());
    let last = tokens
        .into_iter()
        .last()
        .map_or(first, |token| match token {
            TokenTree::Group(group) => group.span_close(),
            other => other.span(),
        });
    relocate(generated, first, last)
}

fn relocate(tokens: TokenStream, first: Span, last: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|token| match token {
            TokenTree::Group(group) if group.delimiter() == Delimiter::None => {
                TokenTree::Group(group)
            }
            TokenTree::Group(group) => {
                let mut moved =
                    Group::new(group.delimiter(), relocate(group.stream(), first, last));
                moved.set_span(group.span().located_at(last));
                TokenTree::Group(moved)
            }
            mut other => {
                other.set_span(other.span().located_at(first));
                other
            }
        })
        .collect()
}

fn config_expr(args: &IdempotentArgs, private: &TokenStream) -> TokenStream {
    let durations = [
        ("with_ttl", args.ttl.as_ref().map(|ttl| ttl.value)),
        ("with_lease", args.lease.as_ref().map(|lease| lease.value)),
    ];
    let mut config = with_durations(quote!(#private::IdempotencyConfig::new()), &durations);
    if let Some(in_progress) = &args.in_progress {
        let policy = match in_progress.value {
            Some(limit) => {
                let limit = duration_expr(limit);
                quote!(#private::InProgressPolicy::Wait(#limit))
            }
            None => quote!(#private::InProgressPolicy::Reject),
        };
        config = quote!(#config.with_in_progress(#policy));
    }
    config
}
