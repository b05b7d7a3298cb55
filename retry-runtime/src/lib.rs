//! The runtime of steadfast: retry policies, backoff and jitter, the
//! classification of errors into canonical codes, retry budgets and the
//! retry engine that `#[retry]` expands to.
//!
//! Most users depend on the `steadfast` facade, which re-exports all of this
//! together with the attributes.
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

mod classify;
mod code;
pub mod idempotency;
mod retry;

#[doc(hidden)]
pub mod __private;

#[cfg(feature = "http")]
pub use classify::http;
pub use classify::{Classify, Elapsed, FromTimeout, RetryAfter, classify_source_chain};
pub use code::{Code, CodeSet};
pub use retry::backoff::{Backoff, BackoffIter};
pub use retry::budget::{Budget, RetryBudget};
pub use retry::engine::RetryEvent;
pub use retry::jitter::{Delays, Jitter};
pub use retry::policy::{MAX_RETRIES_LIMIT, PolicyError, RetryPolicy, RetryPolicyBuilder};
