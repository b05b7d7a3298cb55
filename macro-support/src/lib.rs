//! The grammar shared by steadfast's attributes and its runtime parsers.
//!
//! One parser for each string a user writes, so that `#[retry(backoff = "…")]`
//! (checked at compile time) and `RetryPolicy::parse("…")` (checked at run
//! time) accept exactly the same language and report the same messages:
//!
//! - durations: `500us`, `100ms`, `1.5s`, `2m`, `1h`;
//! - backoff: `none`, `const(D)`, `linear(D)`, `exp(D)`, `fib(D)` with the
//!   options `factor = F` (exp only) and `max = D`;
//! - jitter: `none`, `full`, `equal`, `decorrelated` or a band such as `25%`;
//! - canonical code names (the gRPC status codes) and `A|B` lists of them.
//!
//! Beside the grammar, what a schedule allows: the shortest and longest
//! sleep under each jitter (`shortest_sleep`, `longest_sleep`,
//! `sleep_bounds`), how many attempts fit in a deadline (`attempts_within`),
//! and the time limits that contradict a policy (`contradictions`), for
//! `RetryPolicy::worst_case`, `RetryPolicyBuilder::build` and the
//! attribute's compile-time check alike.
//!
//! ```
//! use steadfast_macro_support::{parse_backoff, BackoffKind};
//! use std::time::Duration;
//!
//! let spec = parse_backoff("exp(100ms, max = 1s)").unwrap();
//! assert_eq!(spec.kind, BackoffKind::Exponential);
//! assert_eq!(spec.base, Duration::from_millis(100));
//! assert_eq!(spec.max, Duration::from_secs(1));
//! ```
#![warn(missing_docs)] // the rest comes from `[workspace.lints]`

mod backoff;
mod code;
mod duration;
mod error;
mod jitter;
mod nested;
mod schedule;
mod suggest;
#[cfg(feature = "syn")]
pub mod syntax;

pub use backoff::{BackoffKind, BackoffSpec, DEFAULT_BACKOFF, DEFAULT_CAP, parse_backoff};
pub use code::{CODE_NAMES, NON_TRANSIENT, code_index, is_transient, parse_code_list};
pub use duration::{format_duration, parse_duration};
pub use error::GrammarError;
pub use jitter::{DEFAULT_JITTER, JitterSpec, parse_jitter};
pub use nested::{NestedSpec, parse_nested};
pub use schedule::{
    Contradiction, SleepBounds, attempts_within, band_spread, contradictions, longest_sleep,
    shortest_sleep, sleep_bounds,
};
pub use suggest::closest;

/// The most retries a policy may have; bound longer efforts by time instead.
pub const MAX_RETRIES: u32 = 100;

/// The retries after the first attempt when `max` is not given.
pub const DEFAULT_MAX_RETRIES: u32 = 3;

/// Parses `in_progress`: `reject` (`None`) or `wait(D)` (`Some(D)`).
///
/// ```
/// use std::time::Duration;
/// assert_eq!(steadfast_macro_support::parse_in_progress("reject"), Ok(None));
/// assert_eq!(steadfast_macro_support::parse_in_progress("wait(5s)"), Ok(Some(Duration::from_secs(5))));
/// assert!(steadfast_macro_support::parse_in_progress("block").is_err());
/// ```
pub fn parse_in_progress(input: &str) -> Result<Option<std::time::Duration>, GrammarError> {
    let text = input.trim();
    if text == "reject" {
        return Ok(None);
    }
    let invalid = || {
        GrammarError::new(format!(
            "invalid in_progress `{input}`: write `reject` (answer duplicates `InProgress` at once) or `wait(5s)` (wait up to 5s for the first result)"
        ))
    };
    let inner = text
        .strip_prefix("wait(")
        .and_then(|rest| rest.strip_suffix(')'))
        .ok_or_else(invalid)?;
    let limit = parse_duration(inner)?;
    if limit.is_zero() {
        return Err(invalid());
    }
    Ok(Some(limit))
}
