//! The runtime of steadfast, in two halves that share a vocabulary:
//!
//! - **Retry** (`retry/`): [`RetryPolicy`] (attempts, [`Backoff`],
//!   [`Jitter`], the codes to retry, timeouts, a deadline), budgets against
//!   retry storms ([`Budget`], [`RetryBudget`], [`RatioBudget`]), and the engine that
//!   `#[retry]` and [`RetryPolicy::run`] run.
//! - **Idempotency** ([`idempotency`]): the engine that `#[idempotent]`,
//!   [`Idempotency`](idempotency::Idempotency) and `IdempotencyLayer` run
//!   (claim, run to completion, complete or release), its record keys and
//!   codecs, and its stores (memory, SQLite, PostgreSQL, MySQL, Redis).
//! - Shared: the canonical [`Code`]s and the [`Classify`] trait that maps
//!   every error type into them.
//!
//! Most users depend on the `steadfast` facade, which re-exports all of this
//! together with the attributes.
#![cfg_attr(docsrs, feature(doc_cfg))]
// `unsafe_code`, `rust_2018_idioms`, `unreachable_pub` and
// `missing_debug_implementations` come from `[workspace.lints]`.
#![warn(missing_docs)]

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
#[cfg(feature = "tonic")]
pub use retry::attempt_header::{
    PREVIOUS_ATTEMPTS_HEADER, PreviousAttempts, PreviousAttemptsLayer,
};
pub use retry::backoff::{Backoff, BackoffIter};
pub use retry::budget::{Budget, RatioBudget, RetryBudget};
pub use retry::engine::RetryEvent;
pub use retry::jitter::{Delays, Jitter};
pub use retry::nest::{Nested, previous_attempts};
pub use retry::policy::{
    MAX_RETRIES_LIMIT, PolicyError, RetryPolicy, RetryPolicyBuilder, WorstCase,
};
