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
#![cfg_attr(docsrs, feature(doc_cfg))]
// `unsafe_code`, `rust_2018_idioms`, `unreachable_pub` and
// `missing_debug_implementations` come from `[workspace.lints]`.
#![warn(missing_docs)]

/// Retries an async (or blocking) fn that returns `Result<T, E>` while its
/// error is transient.
///
/// ```
/// use steadfast::Code;
///
/// #[steadfast::retry(max = 3, backoff = "exp(100ms, max = 1s)", jitter = "none", on = "Unavailable")]
/// async fn charge(attempts: &mut u32, amount: u64) -> Result<u64, Code> {
///     *attempts += 1;
///     if *attempts < 3 { return Err(Code::Unavailable) }
///     Ok(amount)
/// }
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let mut attempts = 0;
/// assert_eq!(charge(&mut attempts, 500).await, Ok(500));
/// assert_eq!(attempts, 3);
/// # }
/// ```
///
/// is equivalent to this hand-written loop over the same engine:
///
/// ```
/// # use steadfast::{Code, RetryPolicy, Backoff, Jitter, CodeSet};
/// # use std::time::Duration;
/// async fn charge(attempts: &mut u32, amount: u64) -> Result<u64, Code> {
///     const POLICY: RetryPolicy = RetryPolicy::new()
///         .with_max_retries(3)
///         .with_backoff(Backoff::exponential(Duration::from_millis(100)).with_max(Duration::from_secs(1)))
///         .with_jitter(Jitter::None)
///         .with_on(CodeSet::EMPTY.with(Code::Unavailable));
///     POLICY
///         .run(|| {
///             *attempts += 1;
///             let outcome = if *attempts < 3 { Err(Code::Unavailable) } else { Ok(amount) };
///             async move { outcome }
///         })
///         .await
/// }
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// # let mut attempts = 0;
/// # assert_eq!(charge(&mut attempts, 500).await, Ok(500));
/// # }
/// ```
///
/// except that the attribute re-runs the body itself, so `&mut` arguments,
/// `?` and `return` work in it as in any fn, owned arguments are cloned for
/// each attempt but the last, and every argument is checked at compile time.
///
/// # Arguments
///
/// `max = N` (retries after the first attempt, 1 to 100, default 3),
/// `backoff = "exp(100ms, factor = 2, max = 30s)"` (`none`, `const(D)`,
/// `linear(D)`, `exp(D)`, `fib(D)`), `jitter = "full"` (`none`, `full`,
/// `equal`, `decorrelated`, `25%`), `on = "Unavailable|DeadlineExceeded"` or
/// `on = predicate`, `allow_non_transient`, `timeout = "5s"`,
/// `deadline = "30s"`, `budget = EXPR` (any [`Budget`]: a [`RetryBudget`], a
/// [`RatioBudget`] or your own, shared by the calls), `notify = path`
/// (called with `(&E, RetryEvent)` before each sleep), `crate = path`.
/// The README has the full reference.
///
/// A policy that cannot do what it says is a compile error at the argument
/// at fault: a `timeout` above the `deadline`, or a `deadline` that has no
/// room for the `max + 1` attempts even if every attempt fails at once and
/// every sleep is at its shortest under the jitter (the backoff's delay with
/// `none`, half of it with `equal`, `1 − p` of it with a `±p` band, the base
/// with `decorrelated`; with `full` jitter a sleep may be zero, so no
/// deadline contradicts it). The message says how many attempts fit and
/// what to raise or lower. [`RetryPolicy::worst_case`] gives the most
/// attempts and the longest time a policy can take.
pub use steadfast_retry_macros::retry;

/// Derives [`Classify`](trait@Classify) for an error enum or struct.
///
/// Every variant says how it classifies: `#[code(Unavailable)]`, or
/// `#[classify(transparent)]` / `#[classify(from = field)]` to ask the error
/// it wraps. A unit variant marked `#[classify(timeout)]` also derives
/// [`FromTimeout`], so the type works with `timeout` and `deadline`.
///
/// ```
/// use steadfast::{Classify, Code};
///
/// #[derive(Debug, steadfast::Classify)]
/// enum FetchError {
///     #[code(Unavailable)]
///     Down,
///     #[code(DeadlineExceeded)]
///     #[classify(timeout)]
///     TimedOut,
///     #[classify(transparent)]
///     Io(std::io::Error),
///     #[classify(from = source)]
///     Parse { source: std::io::Error, line: u32 },
/// }
///
/// assert_eq!(FetchError::Down.code(), Some(Code::Unavailable));
/// let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
/// assert_eq!(FetchError::Io(reset).code(), Some(Code::Unavailable));
/// ```
pub use steadfast_retry_macros::Classify;
pub use steadfast_runtime::{
    Backoff, BackoffIter, Budget, Classify, Code, CodeSet, Delays, Elapsed, FromTimeout, Jitter,
    MAX_RETRIES_LIMIT, Nested, PolicyError, RatioBudget, RetryAfter, RetryBudget, RetryEvent,
    RetryPolicy, RetryPolicyBuilder, WorstCase, classify_source_chain, previous_attempts,
};

#[cfg(any(feature = "reqwest", feature = "tonic", feature = "axum"))]
pub use steadfast_runtime::http;

#[cfg(feature = "tonic")]
pub use steadfast_runtime::{PREVIOUS_ATTEMPTS_HEADER, PreviousAttempts, PreviousAttemptsLayer};

pub use steadfast_runtime::idempotency;

/// Makes an async request handler that returns `Result<T, E>` run at most
/// once per idempotency key; duplicates get the first result.
///
/// ```
/// use steadfast::idempotency::{IdempotencyError, MemoryStore};
///
/// struct Payments { store: MemoryStore, ledger: std::sync::Mutex<Vec<u64>> }
///
/// impl Payments {
///     #[steadfast::idempotent(key = request_id, store = self.store)]
///     async fn pay(&self, request_id: &str, cents: u64) -> Result<usize, IdempotencyError> {
///         let mut ledger = self.ledger.lock().unwrap();
///         ledger.push(cents);
///         Ok(ledger.len())
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let payments = Payments { store: MemoryStore::new(), ledger: Default::default() };
/// assert_eq!(payments.pay("order-1", 500).await.unwrap(), 1);
/// assert_eq!(payments.pay("order-1", 500).await.unwrap(), 1, "replayed, not run again");
/// assert_eq!(payments.ledger.lock().unwrap().len(), 1);
/// # }
/// ```
///
/// # Arguments
///
/// `key = EXPR` (required: a string, an `Option` of one, or a header or
/// metadata value), `store = EXPR` (default: [`idempotency::default_store`]),
/// `scope = EXPR` (default: the fn's module path and name),
/// `fingerprint = EXPR` (bytes of the payload: a reused key with another
/// payload gets `PayloadMismatch`), `ttl = "24h"`, `lease = "30s"`,
/// `in_progress = "reject"` or `"wait(5s)"`, `cache_errors = "A|B"`,
/// `crate = path`. The README has the full reference and the guarantees.
pub use steadfast_idempotent_macros::idempotent;

#[doc(hidden)]
pub use steadfast_runtime::__private;

/// README.md's Rust blocks, compiled and run as doctests (`cargo test --doc`).
/// A block that needs a feature wraps itself in a hidden `#[cfg(feature = …)]`
/// module, so that it compiles (to nothing) without it.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
mod readme {}
