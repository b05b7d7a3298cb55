//! The `#[retry]` attribute and `#[derive(Classify)]` of steadfast.
//!
//! Use them through the `steadfast` crate, which documents them with
//! examples; this crate only converts token streams and hands off to
//! its modules `retry` and `classify`.
#![warn(missing_docs)] // the rest comes from `[workspace.lints]`

mod classify;
mod retry;

use proc_macro::TokenStream;

/// Retries an async (or blocking) fn that returns `Result<T, E>` while its
/// error is transient. See `steadfast::retry` for the full reference.
#[proc_macro_attribute]
pub fn retry(args: TokenStream, item: TokenStream) -> TokenStream {
    retry::expand(args.into(), item.into()).into()
}

/// Implements `steadfast::Classify` for an error enum or struct from
/// `#[code(…)]` and `#[classify(…)]` attributes. See `steadfast::Classify`.
#[proc_macro_derive(Classify, attributes(code, classify))]
pub fn derive_classify(input: TokenStream) -> TokenStream {
    classify::expand(input.into()).into()
}
