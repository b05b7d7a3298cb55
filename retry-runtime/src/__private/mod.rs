//! Items that generated code reaches through `::steadfast::__private`.
//! Not part of the public API: they change without notice.
//!
//! Each bound that a user's fn must meet is checked exactly once, by one of
//! the wrappers below, through a trait of this module with a single blanket
//! impl: the error then carries that trait's message and lists no impls
//! (which would vary with the enabled features).

mod codec_probe;
mod fingerprint_probe;
mod idempotent;
mod retry;

pub use idempotent::*;
pub use retry::*;
