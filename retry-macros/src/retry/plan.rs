//! What the expansion must do with each part of the fn: how its body is
//! wrapped (async, `#[async_trait]` or blocking), what it returns, and how
//! each argument reaches every attempt.

use proc_macro2::{Group, Span};
use quote::ToTokens;
use syn::{FnArg, GenericArgument, Pat, PathArguments, ReturnType, Type, spanned::Spanned};

use super::args::RetryArgs;
use steadfast_macro_support::syntax::{
    Ctxt, MaybeItemFn, async_trait_parts, contains_impl_trait, single_generic,
};

/// How the body is wrapped.
pub(crate) enum Shape {
    /// `async fn`: the loop runs in the fn's own future.
    Async,
    /// A fn already rewritten by `#[async_trait]`: the loop runs inside its
    /// `Box::pin(async move { … })`, whose block is `body`.
    AsyncTrait { body: Group },
    /// A plain fn: the loop blocks the thread while it sleeps.
    Blocking,
}

/// How one argument reaches each attempt.
pub(crate) enum ArgPlan {
    /// `&T`, `&self`, `_`: every attempt reuses it.
    Reuse,
    /// `&mut T`: reborrowed for each attempt (`let x = &mut *x;`).
    Reborrow { ident: syn::Ident },
    /// An owned value: cloned for each attempt but the last, moved into the last.
    Owned {
        ident: syn::Ident,
        mutable: bool,
        span: Span,
    },
    /// `self` or `mut self` by value: as `Owned`, under a new name.
    OwnedSelf { mutable: bool, span: Span },
}

/// Everything the generator needs beyond the arguments.
pub(crate) struct Plan {
    pub(crate) shape: Shape,
    /// The `Result` type an attempt produces.
    pub(crate) output: Type,
    /// Where an unmet bound on the error type is reported: at `E` in
    /// `Result<T, E>`, else at the return type.
    pub(crate) error_span: Span,
    /// Whether `output` can be named in the body (it cannot hold `impl Trait`).
    pub(crate) output_nameable: bool,
    pub(crate) args: Vec<ArgPlan>,
}

impl Plan {
    pub(crate) fn new(item: &MaybeItemFn, args: &RetryArgs, cx: &Ctxt) -> Option<Plan> {
        let sig = &item.sig;
        let async_trait = if sig.asyncness.is_none() {
            async_trait_parts(item)
        } else {
            None
        };
        let (shape, output) = match (&sig.output, async_trait) {
            (_, Some((body, output))) => (Shape::AsyncTrait { body }, output),
            (ReturnType::Default, None) => {
                cx.error_spanned_by(
                    &sig.ident,
                    format!(
                        "#[retry] needs a fn that returns `Result<T, E>`, but `{}` returns `()`; write `-> Result<(), E>` with an error type `E` that implements `steadfast::Classify`",
                        sig.ident
                    ),
                );
                return None;
            }
            (ReturnType::Type(_, ty), None) => {
                let shape = if sig.asyncness.is_some() {
                    Shape::Async
                } else {
                    Shape::Blocking
                };
                (shape, (**ty).clone())
            }
        };
        if let Type::ImplTrait(_) = output {
            cx.error_spanned_by(
                &output,
                "#[retry] needs a fn that returns `Result<T, E>`, but this fn returns `impl Trait`; write the `Result` type",
            );
            return None;
        }
        if let Some((what, ok)) = certainly_not_result(&output) {
            cx.error_spanned_by(
                &output,
                format!(
                    "#[retry] needs a fn that returns `Result<T, E>`, but `{}` returns {what}; write `-> Result<{ok}, E>` with an error type `E` that implements `steadfast::Classify`",
                    sig.ident
                ),
            );
            return None;
        }
        if let (Shape::Blocking, Some(timeout)) = (&shape, &args.timeout) {
            cx.error_spanned_by(
                &timeout.literal,
                "`timeout` needs an async fn: a blocking call cannot be interrupted; make the fn `async`, or remove `timeout` (a `deadline` still bounds the sleeps)",
            );
        }
        if let Some(hedge) = &args.hedge {
            check_hedge(sig, &shape, &hedge.literal, cx);
        }
        let args = sig
            .inputs
            .iter()
            .filter_map(|input| arg_plan(input, cx))
            .collect();
        Some(Plan {
            error_span: error_span(&output),
            output_nameable: !contains_impl_trait(&output),
            shape,
            output,
            args,
        })
    }
}

/// `hedge` runs attempts at the same time: an async fn, and no argument
/// they would all borrow mutably.
fn check_hedge(sig: &syn::Signature, shape: &Shape, hedge: &syn::LitStr, cx: &Ctxt) {
    if let Shape::Blocking = shape {
        cx.error_spanned_by(
            hedge,
            "`hedge` needs an async fn: hedged attempts run at the same time, and a blocking fn runs one at a time; make the fn `async`, or remove `hedge`",
        );
    }
    for input in &sig.inputs {
        let mutable = match input {
            FnArg::Receiver(receiver) => {
                (receiver.reference.is_some() && receiver.mutability.is_some())
                    || matches!(&*receiver.ty, Type::Reference(reference) if reference.mutability.is_some())
            }
            FnArg::Typed(typed) => {
                matches!(&*typed.ty, Type::Reference(reference) if reference.mutability.is_some())
            }
        };
        if mutable {
            cx.error_spanned_by(
                input,
                "`hedge` runs attempts at the same time, and they cannot all borrow this `&mut`: take `&T` (with interior mutability if each attempt must write), or remove `hedge`",
            );
        }
    }
}

fn arg_plan(input: &FnArg, cx: &Ctxt) -> Option<ArgPlan> {
    match input {
        FnArg::Receiver(receiver) => {
            if receiver.reference.is_some() || matches!(*receiver.ty, Type::Reference(_)) {
                Some(ArgPlan::Reuse)
            } else {
                Some(ArgPlan::OwnedSelf {
                    mutable: receiver.mutability.is_some(),
                    span: receiver.self_token.span,
                })
            }
        }
        FnArg::Typed(typed) => {
            let by_reference = match &*typed.ty {
                Type::Reference(reference) => Some(reference.mutability.is_some()),
                _ => None,
            };
            match (&*typed.pat, by_reference) {
                (Pat::Wild(_), _) | (_, Some(false)) => Some(ArgPlan::Reuse),
                (Pat::Ident(pat), _) if pat.by_ref.is_none() && pat.subpat.is_none() => {
                    Some(match by_reference {
                        Some(_) => ArgPlan::Reborrow {
                            ident: pat.ident.clone(),
                        },
                        None => ArgPlan::Owned {
                            ident: pat.ident.clone(),
                            mutable: pat.mutability.is_some(),
                            span: typed.ty.span(),
                        },
                    })
                }
                (pattern, _) => {
                    cx.error_spanned_by(
                        pattern,
                        "#[retry] gives every attempt its own copy of each owned argument, so it needs a plain name here: write `name: Type` and destructure `name` inside the body",
                    );
                    None
                }
            }
        }
    }
}

/// What a return type is, when it is certainly not a `Result` (nor an
/// alias of one): a primitive, `String`, `Vec`, `Option`, a tuple, a
/// reference, an array…; and the success type to suggest. Other types are
/// left to the compiler, which checks them against `RetryOutput`.
fn certainly_not_result(ty: &Type) -> Option<(String, String)> {
    const NOT_RESULT: [&str; 19] = [
        "bool", "char", "str", "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32",
        "i64", "i128", "isize", "f32", "f64", "String", "Vec",
    ];
    let written = type_to_string(ty);
    match ty {
        Type::Path(path) if path.qself.is_none() => {
            let last = path.path.segments.last()?;
            if last.ident == "Option" {
                let some = single_generic(ty, "Option")
                    .map_or("T".to_owned(), |some| type_to_string(&some));
                return Some((format!("`{written}`, which has no error to classify"), some));
            }
            let name = last.ident.to_string();
            NOT_RESULT
                .contains(&name.as_str())
                .then(|| (format!("`{written}`"), written))
        }
        Type::Tuple(_)
        | Type::Reference(_)
        | Type::Array(_)
        | Type::Slice(_)
        | Type::Ptr(_)
        | Type::Never(_)
        | Type::BareFn(_)
        | Type::TraitObject(_) => Some((format!("`{written}`"), written)),
        Type::Paren(paren) => certainly_not_result(&paren.elem),
        _ => None,
    }
}

/// `Option<u32>` rather than `Option < u32 >`.
fn type_to_string(ty: &Type) -> String {
    let mut written = ty.to_token_stream().to_string();
    for (spaced, tight) in [
        (" <", "<"),
        ("< ", "<"),
        (" >", ">"),
        (" ,", ","),
        (" :: ", "::"),
        (":: ", "::"),
        ("& ", "&"),
        (" ;", ";"),
    ] {
        written = written.replace(spaced, tight);
    }
    written
}

/// The span of `E` in `…Result<T, E>`, else of the whole type.
fn error_span(output: &Type) -> Span {
    let Type::Path(path) = output else {
        return output.span();
    };
    let Some(PathArguments::AngleBracketed(arguments)) =
        path.path.segments.last().map(|segment| &segment.arguments)
    else {
        return output.span();
    };
    let types: Vec<&Type> = arguments
        .args
        .iter()
        .filter_map(|argument| match argument {
            GenericArgument::Type(ty) => Some(ty),
            _ => None,
        })
        .collect();
    match types.as_slice() {
        [_, error] => error.span(),
        _ => output.span(),
    }
}
