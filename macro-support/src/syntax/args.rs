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

/// The typed arguments of one attribute: the names it takes, how each is
/// set from its `name = value`, and the checks across them.
pub trait AttributeArguments: Default {
    /// The attribute, for messages: `retry`.
    const ATTRIBUTE: &'static str;
    /// Each argument it takes, with a value to show in messages.
    const ARGUMENTS: &'static [(&'static str, &'static str)];

    /// Sets one argument, reporting a bad value to `cx`.
    fn set(&mut self, name: &str, meta: Meta, cx: &Ctxt);

    /// The checks across arguments, once every one is set.
    fn check(&self, cx: &Ctxt);

    /// A value of the argument `name` to show in messages.
    fn example(name: &str) -> &'static str {
        Self::ARGUMENTS
            .iter()
            .find(|(known, _)| *known == name)
            .map_or("…", |(_, example)| example)
    }

    /// Parses `tokens`, reporting every mistake to `cx` and keeping what is
    /// valid.
    fn parse(tokens: TokenStream, cx: &Ctxt) -> Self {
        let mut args = Self::default();
        let names: Vec<&str> = Self::ARGUMENTS.iter().map(|(name, _)| *name).collect();
        named_arguments(tokens, Self::ATTRIBUTE, &names, cx, |name, meta| {
            args.set(name, meta, cx);
        });
        args.check(cx);
        args
    }
}

/// The value of `name = value`; `None` for a bare `name` or `name(…)`,
/// with an error that shows `name = example`.
pub fn value_of(meta: Meta, name: &str, example: &str, cx: &Ctxt) -> Option<Expr> {
    match meta {
        Meta::NameValue(name_value) => Some(name_value.value),
        other => {
            cx.error_spanned_by(
                other,
                format!("`{name}` needs a value: write `{name} = {example}`"),
            );
            None
        }
    }
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

/// `base` followed by `.method(duration)` for each duration given, as a
/// `const` builder chain: `with_durations(quote!(Config::new()), &[("with_ttl", Some(ttl))])`
/// is `Config::new().with_ttl(::core::time::Duration::from_nanos(…))`.
pub fn with_durations(
    base: TokenStream,
    settings: &[(&str, Option<std::time::Duration>)],
) -> TokenStream {
    settings
        .iter()
        .fold(base, |chain, (method, duration)| match duration {
            Some(duration) => {
                let method = proc_macro2::Ident::new(method, proc_macro2::Span::call_site());
                let duration = duration_expr(*duration);
                quote::quote!(#chain.#method(#duration))
            }
            None => chain,
        })
}
