//! The `name = value` arguments of an attribute: parsed once, each unknown
//! or repeated name reported at its tokens.

use proc_macro2::TokenStream;
use syn::{Expr, ExprLit, Lit, LitStr, Meta, Token, parse::Parser, punctuated::Punctuated};

use super::Ctxt;
use crate::GrammarError;

/// A value with the string literal it was written as, for errors that point at it.
#[allow(missing_debug_implementations)] // syn's types implement Debug only with `extra-traits`
pub struct Spanned<T> {
    /// The parsed value.
    pub value: T,
    /// The literal.
    pub literal: LitStr,
}

/// Splits `tokens` into `name = value` arguments and hands each known one,
/// in source order, to `visit`, reporting to `cx` a syntax error, each
/// unknown name (with the nearest known one and the full list) and each
/// repeated name (only the first is visited). Returns the names visited.
pub fn named_arguments(
    tokens: TokenStream,
    attribute: &str,
    known: &[&str],
    cx: &Ctxt,
    mut visit: impl FnMut(&str, Meta),
) -> Vec<String> {
    let metas = match Punctuated::<Meta, Token![,]>::parse_terminated.parse2(tokens) {
        Ok(metas) => metas,
        Err(error) => {
            cx.syn_error(error);
            return Vec::new();
        }
    };
    let mut seen: Vec<String> = Vec::new();
    for meta in metas {
        let path = meta.path();
        let name = path
            .get_ident()
            .map(ToString::to_string)
            .unwrap_or_else(|| quote::quote!(#path).to_string().replace(' ', ""));
        if !known.contains(&name.as_str()) {
            let hint = crate::closest(&name, known.iter().copied())
                .map(|near| format!(" (did you mean `{near}`?)"))
                .unwrap_or_default();
            cx.error_spanned_by(
                path,
                format!(
                    "unknown argument `{name}`{hint}; the arguments of #[{attribute}] are: {}",
                    known.join(", ")
                ),
            );
        } else if seen.contains(&name) {
            cx.error_spanned_by(
                path,
                format!("duplicate argument `{name}`: give each argument once"),
            );
        } else {
            visit(&name, meta);
            seen.push(name);
        }
    }
    seen
}

/// Parses the string literal `value` with `parse`, reporting a value that
/// is not a string (with `example` of one) or that `parse` rejects.
pub fn string_value<T>(
    value: &Expr,
    name: &str,
    example: &str,
    cx: &Ctxt,
    parse: impl FnOnce(&str) -> Result<T, GrammarError>,
) -> Option<Spanned<T>> {
    let Expr::Lit(ExprLit {
        lit: Lit::Str(literal),
        ..
    }) = value
    else {
        cx.error_spanned_by(
            value,
            format!("`{name}` takes a string: `{name} = {example}`"),
        );
        return None;
    };
    match parse(&literal.value()) {
        Ok(value) => Some(Spanned {
            value,
            literal: literal.clone(),
        }),
        Err(error) => {
            cx.error_spanned_by(literal, error);
            None
        }
    }
}

/// A positive duration string (`"5s"`): zero is reported, as it would fail every call.
pub fn positive_duration(
    value: &Expr,
    name: &str,
    example: &str,
    cx: &Ctxt,
) -> Option<Spanned<std::time::Duration>> {
    let duration = string_value(value, name, example, cx, crate::parse_duration)?;
    if duration.value.is_zero() {
        cx.error_spanned_by(
            &duration.literal,
            format!("a zero `{name}` would fail every call: give a positive duration, as in `{name} = {example}`"),
        );
        return None;
    }
    Some(duration)
}

/// The root of the runtime in generated code: `crate = path` if given, else
/// `::steadfast`.
pub fn runtime_root(crate_path: Option<&syn::Path>) -> syn::Path {
    crate_path
        .cloned()
        .unwrap_or_else(|| syn::parse_quote_spanned!(proc_macro2::Span::call_site()=> ::steadfast))
}

/// `duration` as an expression of generated code, exact to the nanosecond:
/// `::core::time::Duration::from_nanos(…)`.
pub fn duration_expr(duration: std::time::Duration) -> TokenStream {
    let nanos =
        proc_macro2::Literal::u64_suffixed(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX));
    quote::quote!(::core::time::Duration::from_nanos(#nanos))
}
