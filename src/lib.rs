//! # steadfast
//!
//! Reliable remote calls with two attributes: `#[retry]` on the client turns
//! an async fn into a retry loop that retries only transient errors, with
//! backoff, jitter, timeouts, a deadline and a retry budget; policies are
//! checked at compile time.
//!
//! ```
//! use steadfast::Code;
//!
//! #[steadfast::retry(max = 3, backoff = "exp(10ms)", on = "Unavailable|DeadlineExceeded")]
//! async fn fetch(attempts: &mut u32) -> Result<u32, Code> {
//!     *attempts += 1;
//!     if *attempts < 3 { Err(Code::Unavailable) } else { Ok(*attempts) }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let mut attempts = 0;
//! assert_eq!(fetch(&mut attempts).await, Ok(3));
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms, unreachable_pub)]

pub use retry_macros::{Classify, retry};
pub use retry_runtime::{
    Backoff, BackoffIter, Budget, Classify, Code, CodeSet, Delays, Elapsed, FromTimeout, Jitter,
    MAX_RETRIES_LIMIT, PolicyError, RetryAfter, RetryBudget, RetryEvent, RetryPolicy, RetryPolicyBuilder,
    classify_source_chain,
};

#[cfg(feature = "reqwest")]
pub use retry_runtime::http;

#[doc(hidden)]
pub use retry_runtime::__private;
