//! Items that generated code reaches through `::steadfast::__private`.
//! Not part of the public API: they change without notice.

pub use crate::engine::{Decision, Retry, RetryOutput, retry_span};
pub use crate::{
    Backoff, Classify, Code, CodeSet, Elapsed, FromTimeout, Jitter, RetryAfter, RetryBudget,
    RetryEvent, RetryPolicy,
};
pub use tracing::Instrument;

/// An owned argument of a retried fn: cloned for every attempt but the
/// last, moved into the last.
#[derive(Debug)]
pub struct ArgSlot<T>(Option<T>);

/// Stores an owned argument; the bound is checked here, at the argument.
#[inline]
pub fn arg_slot<T: CloneArg>(value: T) -> ArgSlot<T> {
    ArgSlot(Some(value))
}

impl<T: CloneArg> ArgSlot<T> {
    /// The argument for the next attempt.
    #[inline]
    pub fn for_attempt(&mut self, last: bool) -> T {
        if last && let Some(value) = self.0.take() {
            return value;
        }
        match &self.0 {
            Some(value) => value.clone_arg(),
            None => panic!("steadfast: an argument was requested after the last attempt"),
        }
    }
}

/// `Clone`, with the message a user of `#[retry]` needs when it is missing.
#[diagnostic::on_unimplemented(
    message = "`#[retry]` clones this argument for every attempt, but `{Self}` does not implement `Clone`",
    label = "this argument is not `Clone`",
    note = "take it by reference (`&{Self}`), which every attempt can reuse, or implement `Clone` for it"
)]
pub trait CloneArg {
    /// A copy for one attempt.
    fn clone_arg(&self) -> Self;
}

impl<T: Clone> CloneArg for T {
    #[inline]
    fn clone_arg(&self) -> T {
        self.clone()
    }
}
