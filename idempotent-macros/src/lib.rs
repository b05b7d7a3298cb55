//! The `#[idempotent]` attribute of steadfast.
//!
//! Use it through the `steadfast` crate, which documents it with examples;
//! this crate only converts token streams and hands off to `args` (parsing
//! and checks) and `expand` (code generation).
#![warn(missing_docs)] // the rest comes from `[workspace.lints]`

mod args;
mod expand;

use proc_macro::TokenStream;

/// Makes an async handler that returns `Result<T, E>` run at most once per
/// idempotency key. See `steadfast::idempotent` for the full reference.
#[proc_macro_attribute]
pub fn idempotent(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(args.into(), item.into()).into()
}
