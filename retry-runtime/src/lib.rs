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

mod backoff;
mod budget;
mod classify;
mod code;
mod engine;
pub mod idempotency;
mod jitter;
mod policy;
mod telemetry;

#[doc(hidden)]
pub mod __private;

pub use backoff::{Backoff, BackoffIter};
pub use budget::{Budget, RetryBudget};
#[cfg(feature = "http")]
pub use classify::http;
pub use classify::{Classify, Elapsed, FromTimeout, RetryAfter, classify_source_chain};
pub use code::{Code, CodeSet};
pub use engine::RetryEvent;
pub use jitter::{Delays, Jitter};
pub use policy::{MAX_RETRIES_LIMIT, PolicyError, RetryPolicy, RetryPolicyBuilder};
