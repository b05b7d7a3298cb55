//! The errors of an idempotent call.

use std::{fmt, time::Duration};

use super::StoreError;
use crate::{Classify, Code, RetryAfter};

/// Why an idempotent call did not run its body (or could not store its result).
///
/// The handler's error type implements `From<IdempotencyError>`; steadfast
/// provides it for `tonic::Status` and axum responses.
#[derive(Debug)]
#[non_exhaustive]
pub enum IdempotencyError {
    /// The request has no idempotency key, or an empty one.
    MissingKey,
    /// The key is longer than 255 bytes.
    KeyTooLong {
        /// Its length in bytes.
        length: usize,
    },
    /// The same key is being processed by another request.
    InProgress {
        /// When the other request's lease lapses, at the latest.
        retry_after: Duration,
    },
    /// The key was used before with another payload.
    PayloadMismatch,
    /// The store failed; the body was not run (fail closed).
    Store(StoreError),
    /// A stored result could not be decoded as this handler's result type
    /// (the type changed in a deploy), or a result could not be encoded.
    Codec {
        /// What went wrong.
        message: String,
    },
    /// The claim was lost to another caller before the body could start.
    LeaseLost,
}

impl fmt::Display for IdempotencyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdempotencyError::MissingKey => f.write_str("the request has no idempotency key"),
            IdempotencyError::KeyTooLong { length } => {
                write!(f, "the idempotency key is {length} bytes long; at most 255")
            }
            IdempotencyError::InProgress { retry_after } => write!(
                f,
                "a request with this idempotency key is in progress; retry after {} ms",
                retry_after.as_millis()
            ),
            IdempotencyError::PayloadMismatch => {
                f.write_str("the idempotency key was used before with a different payload")
            }
            IdempotencyError::Store(error) => write!(f, "{error}"),
            IdempotencyError::Codec { message } => write!(f, "idempotency codec: {message}"),
            IdempotencyError::LeaseLost => f.write_str("the idempotency claim was taken over by another caller"),
        }
    }
}

impl std::error::Error for IdempotencyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            IdempotencyError::Store(error) => Some(error),
            _ => None,
        }
    }
}

impl From<StoreError> for IdempotencyError {
    fn from(error: StoreError) -> IdempotencyError {
        IdempotencyError::Store(error)
    }
}

/// `MissingKey`, `KeyTooLong` → `InvalidArgument`; `InProgress`, `LeaseLost`
/// → `Aborted` (retry later, with the remaining lease as pushback);
/// `PayloadMismatch` → `FailedPrecondition`; `Store` → `Unavailable`;
/// `Codec` → `Internal`.
impl Classify for IdempotencyError {
    fn code(&self) -> Option<Code> {
        Some(match self {
            IdempotencyError::MissingKey | IdempotencyError::KeyTooLong { .. } => Code::InvalidArgument,
            IdempotencyError::InProgress { .. } | IdempotencyError::LeaseLost => Code::Aborted,
            IdempotencyError::PayloadMismatch => Code::FailedPrecondition,
            IdempotencyError::Store(_) => Code::Unavailable,
            IdempotencyError::Codec { .. } => Code::Internal,
        })
    }

    fn retry_after(&self) -> Option<RetryAfter> {
        match self {
            IdempotencyError::InProgress { retry_after } => Some(RetryAfter::Delay(*retry_after)),
            _ => None,
        }
    }
}
