//! Nothing to use: this crate exists so that `cargo clippy --all-targets`
//! lints the code both attributes generate in a user's crate, with
//! `clippy::pedantic` and `clippy::nursery` denied.
//!
//! Its examples are the trybuild pass cases (`tests/ui/pass/`, and
//! `tests/ui/pass-tonic/` with the feature `tonic`), listed in its
//! `Cargo.toml`; this library holds public, documented fns under each
//! attribute, for the lints that look only at a library's exported items
//! (`missing_errors_doc`, `missing_panics_doc`, `must_use_candidate`).
#![deny(warnings, missing_docs)]
#![deny(clippy::all, clippy::pedantic, clippy::nursery)]

use steadfast::{Code, idempotency::IdempotencyError};

/// The length of `name`, retried while the error is transient.
///
/// # Errors
/// The last error, once retries are spent or on a code that is not retried.
#[rustfmt::skip]
#[steadfast::retry(max = 2, backoff = "none", timeout = "1s")]
pub async fn retried(name: &str) -> Result<usize, std::io::Error> { Ok(name.len()) }

/// The blocking form.
///
/// # Errors
/// The last error, once retries are spent.
#[rustfmt::skip]
#[steadfast::retry(max = 2, backoff = "const(1ms)")]
pub fn retried_blocking(name: &str) -> Result<usize, Code> { Ok(name.len()) }

/// The length of `key`, computed once per key; duplicates replay it.
///
/// # Errors
/// `MissingKey` for an empty key; the store's error when it is down.
#[rustfmt::skip]
#[steadfast::idempotent(key = key)]
pub async fn once(key: String) -> Result<usize, IdempotencyError> { Ok(key.len()) }

/// Both attributes on one public fn.
///
/// # Errors
/// As [`once`], after the retries of [`retried`].
#[rustfmt::skip]
#[steadfast::retry(max = 1, backoff = "none")]
#[steadfast::idempotent(key = key, scope = "lint-check")]
pub async fn stacked(key: String) -> Result<usize, IdempotencyError> {
    let length = key.len();
    Ok(length)
}
