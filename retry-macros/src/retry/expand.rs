//! Code generation for `#[retry]`.
//!
//! In:
//!
//! ```text
//! #[retry(max = 3, backoff = "exp(100ms)")]
//! async fn get(client: &mut Client, req: Request) -> Result<Reply, Status> { client.get(req).await }
//! ```
//!
//! Out (names shortened; generated locals are `__steadfast_*`, mixed-site):
//!
//! ```text
//! async fn get(client: &mut Client, req: Request) -> Result<Reply, Status> {
//!     const POLICY: RetryPolicy = RetryPolicy::new().with_max_retries(3).with_backoff(…);
//!     let mut slot_req = arg_slot(req);
//!     let nest = NestSlot::for_policy(&POLICY);          // + `started(&POLICY)` with a deadline, `budget(&b)` with a budget
//!     let mut retry = None;                              // the retry state, built at the first failure
//!     loop {
//!         let req = for_attempt(&mut slot_req, is_last_attempt(&POLICY, &retry)); // clone (checks `Request: Clone`), or move on the last
//!         let client = &mut *client;                     // reborrow
//!         let result = nest.attempt(&retry, async {     // or attempt_or(&POLICY, started, &nest, &retry, …) with a timeout
//!             if let Some(r) = None::<Result<Reply, Status>> { return r; } // pins `?` and `return`
//!             { client.get(req).await }
//!         }).await;
//!         let result = match split(result) {             // the success path ends here
//!             Split::Return(success) => return success,
//!             Split::Failed(failure) => failure,
//!         };
//!         let state = retry.get_or_insert_with(|| Retry::new(&POLICY, "get", &nest, None));
//!         let delay = match decide(state, result) {     // checks `Status: Classify`
//!             Step::Return(result) => return result,
//!             Step::Retry { error, event } => { notify(&error, event); event.delay } // error dropped here
//!         };
//!         state.pause(delay).await;
//!     }
//! }
//! ```
//!
//! The loop runs in the fn's own future: the success path costs the nest's
//! slot, the guard around the attempt and one check of the result. Under
//! `#[async_trait]` the same loop goes inside its `Box::pin(async move { … })`.

use proc_macro2::{Group, Ident, Literal, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use steadfast_macro_support::{BackoffKind, BackoffSpec, JitterSpec, NestedSpec};
use syn::{Path, spanned::Spanned};

use super::{
    args::{On, RetryArgs},
    plan::{ArgPlan, Plan, Shape},
};
use steadfast_macro_support::syntax::{
    MaybeItemFn, duration_expr, nested_body, rename_self, with_durations,
};

const SELF_NAME: &str = "__steadfast_self";

pub(super) struct Names {
    pub(super) policy: Ident,
    pub(super) nest: Ident,
    pub(super) started: Ident,
    pub(super) budget: Ident,
    pub(super) retry: Ident,
    state: Ident,
    result: Ident,
    attempt: Ident,
    error: Ident,
    event: Ident,
    delay: Ident,
}

impl Names {
    fn new() -> Names {
        let local = |name: &str| Ident::new(name, Span::mixed_site());
        Names {
            policy: Ident::new("__STEADFAST_POLICY", Span::mixed_site()),
            nest: local("__steadfast_nest"),
            started: local("__steadfast_started"),
            budget: local("__steadfast_budget"),
            retry: local("__steadfast_retry"),
            state: local("__steadfast_state"),
            result: local("__steadfast_result"),
            attempt: local("__steadfast_attempt"),
            error: local("__steadfast_error"),
            event: local("__steadfast_event"),
            delay: local("__steadfast_delay"),
        }
    }
}

pub(crate) fn generate(item: &MaybeItemFn, args: &RetryArgs, plan: &Plan) -> TokenStream {
    let MaybeItemFn {
        attrs,
        vis,
        sig,
        body,
    } = item;
    let root = args.root();
    let names = Names::new();
    let body = match &plan.shape {
        Shape::AsyncTrait { body } => body,
        Shape::Async | Shape::Blocking => body,
    };
    let body = if plan
        .args
        .iter()
        .any(|arg| matches!(arg, ArgPlan::OwnedSelf { .. }))
    {
        let mut renamed = Group::new(body.delimiter(), rename_self(body.stream(), SELF_NAME));
        renamed.set_span(body.span());
        renamed
    } else {
        body.clone()
    };
    let policy = policy_expr(args, &root);
    let name = Literal::string(&sig.ident.to_string());
    let slots = slots(plan, &root);
    let call_setup = call_setup(args, &root, &names);
    let retry_new = retry_new(args, &root, &names, &name);
    let Names {
        policy: policy_ident,
        retry: retry_ident,
        ..
    } = &names;
    let rebinds = owned_bindings(
        plan,
        &root,
        &quote!(#root::__private::is_last_attempt(&#policy_ident, &#retry_ident)),
    );
    let Names {
        policy: policy_name,
        result,
        ..
    } = &names;
    let attempt = attempt(args, plan, &root, &names, &body);
    let decision = decision(args, plan, &root, &names, &retry_new);
    let lints = quote! {
        #[allow(
            unreachable_code,
            unused_mut,
            clippy::let_unit_value,
            clippy::needless_return,
            clippy::redundant_closure_call,
            clippy::diverging_sub_expression,
            clippy::used_underscore_binding
        )]
    };
    let setup = quote! {
        const #policy_name: #root::__private::RetryPolicy = #policy;
        #(#slots)*
    };
    let retry_loop = match &args.hedge {
        Some(hedge) => {
            let call = super::hedge::call(args, plan, &root, &names, &body, hedge.value);
            quote! {
                #call_setup
                let mut #retry_ident = #retry_new;
                #lints
                let #result = #call;
                #result
            }
        }
        None => quote! {
            #call_setup
            let mut #retry_ident = ::core::option::Option::None;
            loop {
                #(#rebinds)*
                #lints
                let #result = #attempt;
                #decision
            }
        },
    };
    // The loop runs in the fn's own future (or `#[async_trait]`'s): no
    // nested future to move, nothing to wrap on the success path.
    let new_body = match &plan.shape {
        Shape::AsyncTrait { .. } => quote! {
            ::std::boxed::Box::pin(async move {
                #setup
                #retry_loop
            })
        },
        Shape::Async | Shape::Blocking => quote! {
            #setup
            #retry_loop
        },
    };
    quote! {
        #(#attrs)*
        #vis #sig {
            #new_body
        }
    }
}

/// What every attempt needs, before the first: the nest's slot, when the
/// call started (read only with a deadline) and its budget, counted.
fn call_setup(args: &RetryArgs, root: &Path, names: &Names) -> TokenStream {
    let Names {
        policy,
        nest,
        started,
        budget: budget_ident,
        ..
    } = names;
    let started = args
        .deadline
        .as_ref()
        .map(|_| quote!(let #started = #root::__private::started(&#policy);));
    let budget = args.budget.as_ref().map(|budget| {
        let span = budget.span();
        let located = located_tokens(root, span);
        quote_spanned! {span=>
            let #budget_ident = #located::__private::budget(&#budget);
        }
    });
    quote! {
        let #nest = #root::__private::NestSlot::for_policy(&#policy);
        #started
        #budget
    }
}

/// The call's retry state (`Retry::new(…)`), built at the first failure
/// (or before the first attempt of a hedged call).
fn retry_new(args: &RetryArgs, root: &Path, names: &Names, name: &Literal) -> TokenStream {
    let Names {
        policy,
        nest,
        started,
        budget,
        ..
    } = names;
    let started = match args.deadline {
        Some(_) => quote!(#started),
        None => quote!(::core::option::Option::None),
    };
    let budget = args.budget.as_ref().map(|_| quote!(.with_budget(#budget)));
    quote! {
        #root::__private::Retry::new(&#policy, #name, &#nest, #started) #budget
    }
}

/// `let mut __steadfast_slot_x = arg_slot(x);` for each owned argument.
fn slots(plan: &Plan, root: &Path) -> Vec<TokenStream> {
    plan.args
        .iter()
        .filter_map(|arg| {
            let (ident, mutable, span) = match arg {
                ArgPlan::Owned {
                    ident,
                    mutable,
                    span,
                } => (ident.clone(), *mutable, *span),
                ArgPlan::OwnedSelf { mutable, span } => {
                    (Ident::new("self", *span), *mutable, *span)
                }
                ArgPlan::Reuse | ArgPlan::Reborrow { .. } => return None,
            };
            let slot = slot_name(&ident);
            // `mut name: T` stays in the signature, but each attempt binds
            // its own `mut name`: use the parameter's `mut` once, so that
            // it does not warn as unused.
            let used_mut = mutable.then(|| quote_spanned!(span=> let _ = &mut #ident;));
            Some(quote_spanned! {span=>
                #used_mut
                let mut #slot = #root::__private::arg_slot(#ident);
            })
        })
        .collect()
}

fn slot_name(ident: &Ident) -> Ident {
    format_ident!(
        "__steadfast_slot_{}",
        ident.to_string().trim_start_matches("r#"),
        span = Span::mixed_site()
    )
}

/// The per-attempt bindings that shadow the arguments.
///
/// The `Clone` bound of an owned argument is checked here, once, with the
/// slot located at the argument's type: a missing `Clone` is reported there.
///
/// `last` says whether the attempt is the last (its owned arguments are
/// then moved rather than cloned): `is_last_attempt(&POLICY, &retry)` in the loop,
/// `false` for hedged attempts, which all get a clone.
pub(super) fn owned_bindings(plan: &Plan, root: &Path, last: &TokenStream) -> Vec<TokenStream> {
    plan.args
        .iter()
        .filter_map(|arg| {
            let (binding, slot, mutable, span) = match arg {
                ArgPlan::Reuse => return None,
                ArgPlan::Reborrow { ident } => return Some(quote!(let #ident = &mut *#ident;)),
                ArgPlan::Owned {
                    ident,
                    mutable,
                    span,
                } => (ident.clone(), slot_name(ident), *mutable, *span),
                ArgPlan::OwnedSelf { mutable, span } => (
                    Ident::new(SELF_NAME, *span),
                    slot_name(&Ident::new("self", *span)),
                    *mutable,
                    *span,
                ),
            };
            let slot = located_at(&slot, span);
            let mutability = mutable.then(|| quote!(mut));
            Some(quote_spanned! {span=>
                let #mutability #binding =
                    #root::__private::for_attempt(&mut #slot, #last);
            })
        })
        .collect()
}

/// `tokens`, resolved as before but reported at `span`: the whole call
/// `root::__private::f(…)` is then at one place, and an unmet bound is
/// reported once.
pub(super) fn located_tokens(tokens: impl quote::ToTokens, span: Span) -> TokenStream {
    tokens
        .into_token_stream()
        .into_iter()
        .map(|mut tree| {
            if let proc_macro2::TokenTree::Group(group) = &tree {
                let mut located =
                    Group::new(group.delimiter(), located_tokens(group.stream(), span));
                located.set_span(group.span().located_at(span));
                tree = proc_macro2::TokenTree::Group(located);
            } else {
                tree.set_span(tree.span().located_at(span));
            }
            tree
        })
        .collect()
}

/// `ident`, resolved as before but reported at `span`, so that an unmet
/// bound on the value it names points at the user's tokens.
fn located_at(ident: &Ident, span: Span) -> Ident {
    let mut located = ident.clone();
    located.set_span(ident.span().located_at(span));
    located
}

/// One attempt, as an expression of the fn's `Result` type.
fn attempt(args: &RetryArgs, plan: &Plan, root: &Path, names: &Names, body: &Group) -> TokenStream {
    let Names {
        policy,
        nest,
        started,
        retry,
        attempt,
        ..
    } = names;
    let output = &plan.output;
    if let Shape::Blocking = plan.shape {
        let annotation = plan.output_nameable.then(|| quote!(-> #output));
        return quote!(#nest.attempt_blocking(&#retry, || #annotation #body));
    }
    let pin = attempt_pin(plan);
    // Polled as this call's attempt: a `#[retry]` call inside shares its
    // retries (the nested guard).
    let run = match from_timeout(args, root) {
        Some(from_timeout) => {
            let started = match args.deadline {
                Some(_) => quote!(#started),
                None => quote!(::core::option::Option::None),
            };
            quote!(#root::__private::attempt_or(&#policy, #started, &#nest, &#retry, #attempt, #from_timeout).await)
        }
        None => quote!(#nest.attempt(&#retry, #attempt).await),
    };
    let body = nested_body(body);
    quote! {{
        let #attempt = async {
            #pin
            #body
        };
        #run
    }}
}

/// `from_timeout as fn(_) -> _`, when the policy has a `timeout` or a
/// `deadline`: `E: FromTimeout` is checked where `from_timeout` is named, at
/// `timeout = "…"` (or `deadline`); as a fn pointer, the future holds no
/// bound that would be checked again.
pub(super) fn from_timeout(args: &RetryArgs, root: &Path) -> Option<TokenStream> {
    let limit = args.timeout.as_ref().or(args.deadline.as_ref())?;
    let span = limit.literal.span();
    let root = located_tokens(root, span);
    Some(quote_spanned!(span=> #root::__private::from_timeout as fn(_) -> _))
}

/// `if let Some(r) = None::<Output> { return r; }` at the head of an
/// attempt's `async` block, which pins the type of its `?` and `return`
/// (left out when the output holds `impl Trait` and cannot be named).
pub(super) fn attempt_pin(plan: &Plan) -> Option<TokenStream> {
    let output = &plan.output;
    plan.output_nameable.then(|| {
        quote! {
            if let ::core::option::Option::Some(__steadfast_return) = ::core::option::Option::None::<#output> {
                return __steadfast_return;
            }
        }
    })
}

/// Classifies the attempt's result and returns, or notifies and sleeps.
fn decision(
    args: &RetryArgs,
    plan: &Plan,
    root: &Path,
    names: &Names,
    retry_new: &TokenStream,
) -> TokenStream {
    let Names {
        retry,
        state,
        budget,
        result,
        error,
        event,
        delay,
        ..
    } = names;
    // The result is located at the predicate, or at the error type, so that
    // an unmet bound (`E: Classify`, `R: RetryOutput`) is reported there.
    let decide = match &args.on {
        Some(On::Predicate(predicate)) => {
            let span = predicate.span();
            let located = located_at(result, span);
            let root = located_tokens(root, span);
            quote_spanned!(span=> #root::__private::decide_if(#state, #located, #predicate))
        }
        _ => {
            let span = plan.error_span;
            let located = located_at(result, span);
            let root = located_tokens(root, span);
            quote_spanned!(span=> #root::__private::decide(#state, #located))
        }
    };
    let notify = args
        .notify
        .as_ref()
        .map(|notify| quote_spanned!(notify.span()=> (#notify)(&#error, #event);));
    // The error is dropped at the end of its arm, before the sleep.
    let pause = match plan.shape {
        Shape::Blocking => quote!(#state.pause_blocking(#delay);),
        Shape::Async | Shape::AsyncTrait { .. } => quote!(#state.pause(#delay).await;),
    };
    // A success returns before anything else; the retry state is built at
    // the first failure. (`split` needs `R: RetryOutput` as `decide` does;
    // the whole match is located at the error type, so that a fn that
    // returns no `Result` gets one error.)
    let success = args
        .budget
        .as_ref()
        .map(|_| quote!(#budget.record_success();));
    let split = {
        let span = plan.error_span;
        let located = located_at(result, span);
        let root = located_tokens(root, span);
        quote_spanned! {span=>
            match #root::__private::split(#located) {
                #root::__private::Split::Return(__steadfast_return) => {
                    #success
                    return __steadfast_return;
                }
                #root::__private::Split::Failed(__steadfast_failed) => __steadfast_failed,
            }
        }
    };
    quote! {
        let #result = #split;
        let #state = #retry.get_or_insert_with(|| #retry_new);
        let #delay = match #decide {
            #root::__private::Step::Return(__steadfast_return) => return __steadfast_return,
            #root::__private::Step::Retry { error: #error, event: #event } => {
                #notify
                #event.delay
            }
        };
        #pause
    }
}

/// The `const` expression of the policy.
fn policy_expr(args: &RetryArgs, root: &Path) -> TokenStream {
    let private = quote!(#root::__private);
    let mut policy = quote!(#private::RetryPolicy::new());
    if let Some((_, literal)) = &args.max {
        policy = quote!(#policy.with_max_retries(#literal));
    }
    if let Some(backoff) = &args.backoff {
        let backoff = backoff_expr(&backoff.value, &private);
        policy = quote!(#policy.with_backoff(#backoff));
    }
    if let Some(jitter) = &args.jitter {
        let jitter = match jitter.value {
            JitterSpec::None => quote!(None),
            JitterSpec::Full => quote!(Full),
            JitterSpec::Equal => quote!(Equal),
            JitterSpec::Decorrelated => quote!(Decorrelated),
            JitterSpec::Band(fraction) => {
                let fraction = Literal::f64_suffixed(fraction);
                quote!(Band(#fraction))
            }
        };
        policy = quote!(#policy.with_jitter(#private::Jitter::#jitter));
    }
    if let Some(nested) = &args.nested {
        let nested = match nested.value {
            NestedSpec::Share => quote!(Share),
            NestedSpec::Outermost => quote!(Outermost),
            NestedSpec::Independent => quote!(Independent),
        };
        policy = quote!(#policy.with_nested(#private::Nested::#nested));
    }
    if let Some(On::Codes(codes)) = &args.on {
        let codes = codes
            .value
            .iter()
            .map(|code| Ident::new(code, Span::call_site()));
        policy =
            quote!(#policy.with_on(#private::CodeSet::EMPTY #(.with(#private::Code::#codes))*));
    }
    let limits = [
        (
            "with_timeout",
            args.timeout.as_ref().map(|timeout| timeout.value),
        ),
        (
            "with_deadline",
            args.deadline.as_ref().map(|deadline| deadline.value),
        ),
    ];
    with_durations(policy, &limits)
}

fn backoff_expr(spec: &BackoffSpec, private: &TokenStream) -> TokenStream {
    let base = duration_expr(spec.base);
    let max = duration_expr(spec.max);
    let backoff = quote!(#private::Backoff);
    match spec.kind {
        BackoffKind::None => quote!(#backoff::none()),
        BackoffKind::Constant => quote!(#backoff::constant(#base)),
        BackoffKind::Linear => quote!(#backoff::linear(#base).with_max(#max)),
        BackoffKind::Fibonacci => quote!(#backoff::fibonacci(#base).with_max(#max)),
        BackoffKind::Exponential => {
            let factor = Literal::f64_suffixed(spec.factor);
            quote!(#backoff::exponential(#base).with_factor(#factor).with_max(#max))
        }
    }
}
