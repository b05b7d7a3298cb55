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
            IdempotencyError::LeaseLost => {
                f.write_str("the idempotency claim was taken over by another caller")
            }
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
            IdempotencyError::MissingKey | IdempotencyError::KeyTooLong { .. } => {
                Code::InvalidArgument
            }
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

/// The gRPC answer to a request that could not be run idempotently:
/// `MissingKey`, `KeyTooLong` → `INVALID_ARGUMENT`; `InProgress` →
/// `ABORTED` with the remaining lease in `grpc-retry-pushback-ms` (rounded up
/// to the millisecond), which a steadfast client (`#[retry]`) waits for
/// before its next attempt; `PayloadMismatch` → `FAILED_PRECONDITION`;
/// `Store` → `UNAVAILABLE`; `Codec` → `INTERNAL`; `LeaseLost` → `ABORTED`.
/// The message is the error's `Display`.
#[cfg(feature = "tonic")]
impl From<IdempotencyError> for tonic::Status {
    fn from(error: IdempotencyError) -> tonic::Status {
        use tonic::Code as Grpc;
        let code = match &error {
            IdempotencyError::MissingKey | IdempotencyError::KeyTooLong { .. } => {
                Grpc::InvalidArgument
            }
            IdempotencyError::InProgress { .. } | IdempotencyError::LeaseLost => Grpc::Aborted,
            IdempotencyError::PayloadMismatch => Grpc::FailedPrecondition,
            IdempotencyError::Store(_) => Grpc::Unavailable,
            IdempotencyError::Codec { .. } => Grpc::Internal,
        };
        let mut status = tonic::Status::new(code, error.to_string());
        if let IdempotencyError::InProgress { retry_after } = error {
            let millis =
                u64::try_from(retry_after.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
            status
                .metadata_mut()
                .insert(crate::classify::tonic::PUSHBACK, millis.into());
        }
        status
    }
}

/// The HTTP answer to a request that could not be run idempotently, as the
/// IETF Idempotency-Key draft (`draft-ietf-httpapi-idempotency-key-header`)
/// says:
///
/// - `MissingKey`, `KeyTooLong`: `400 Bad Request`;
/// - `InProgress`: `409 Conflict`, with `Retry-After` the remaining lease in
///   seconds (rounded up, at least 1);
/// - `LeaseLost`: `409 Conflict` with `Retry-After: 1`;
/// - `PayloadMismatch`: `422 Unprocessable Content`;
/// - `Store`: `503 Service Unavailable` with `Retry-After: 1`;
/// - `Codec`: `500 Internal Server Error`.
///
/// The body is the error's `Display`, as `text/plain`.
#[cfg(feature = "axum")]
impl axum::response::IntoResponse for IdempotencyError {
    fn into_response(self) -> axum::response::Response {
        use axum::http::{HeaderValue, StatusCode, header::RETRY_AFTER};
        let (status, retry_after) = match &self {
            IdempotencyError::MissingKey | IdempotencyError::KeyTooLong { .. } => {
                (StatusCode::BAD_REQUEST, None)
            }
            IdempotencyError::InProgress { retry_after } => (
                StatusCode::CONFLICT,
                Some(retry_after.as_nanos().div_ceil(1_000_000_000).max(1)),
            ),
            IdempotencyError::LeaseLost => (StatusCode::CONFLICT, Some(1)),
            IdempotencyError::PayloadMismatch => (StatusCode::UNPROCESSABLE_ENTITY, None),
            IdempotencyError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, Some(1)),
            IdempotencyError::Codec { .. } => (StatusCode::INTERNAL_SERVER_ERROR, None),
        };
        let mut response = (status, self.to_string()).into_response();
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(
                RETRY_AFTER,
                HeaderValue::from(u64::try_from(seconds).unwrap_or(u64::MAX)),
            );
        }
        response
    }
}

#[cfg(all(test, any(feature = "tonic", feature = "axum")))]
mod tests {
    use super::*;

    fn every_error() -> Vec<IdempotencyError> {
        vec![
            IdempotencyError::MissingKey,
            IdempotencyError::KeyTooLong { length: 300 },
            IdempotencyError::InProgress {
                retry_after: Duration::from_millis(1500),
            },
            IdempotencyError::PayloadMismatch,
            IdempotencyError::Store(StoreError::msg("connection refused")),
            IdempotencyError::Codec {
                message: "the result type changed".to_owned(),
            },
            IdempotencyError::LeaseLost,
        ]
    }

    #[cfg(feature = "tonic")]
    #[test]
    fn statuses_carry_the_code_the_message_and_the_pushback() {
        use tonic::Code as Grpc;
        let expected = [
            Grpc::InvalidArgument,
            Grpc::InvalidArgument,
            Grpc::Aborted,
            Grpc::FailedPrecondition,
            Grpc::Unavailable,
            Grpc::Internal,
            Grpc::Aborted,
        ];
        for (error, code) in every_error().into_iter().zip(expected) {
            let (message, classified) = (error.to_string(), error.code());
            let status = tonic::Status::from(error);
            assert_eq!(status.code(), code, "{message}");
            assert_eq!(status.message(), message);
            // A steadfast client classifies the status as the server did the error.
            assert_eq!(Classify::code(&status), classified, "{message}");
        }
    }

    #[cfg(feature = "tonic")]
    #[test]
    fn in_progress_tells_a_steadfast_client_when_to_retry() {
        let status = tonic::Status::from(IdempotencyError::InProgress {
            retry_after: Duration::from_millis(1500),
        });
        assert_eq!(
            status
                .metadata()
                .get("grpc-retry-pushback-ms")
                .unwrap()
                .to_str()
                .unwrap(),
            "1500"
        );
        assert_eq!(
            Classify::retry_after(&status),
            Some(RetryAfter::Delay(Duration::from_millis(1500)))
        );
        // Rounded up: a client never retries before the lease lapses.
        let status = tonic::Status::from(IdempotencyError::InProgress {
            retry_after: Duration::from_micros(2001),
        });
        assert_eq!(
            Classify::retry_after(&status),
            Some(RetryAfter::Delay(Duration::from_millis(3)))
        );
        // Only `InProgress` pushes back.
        for error in every_error() {
            if !matches!(error, IdempotencyError::InProgress { .. }) {
                assert_eq!(Classify::retry_after(&tonic::Status::from(error)), None);
            }
        }
    }

    #[cfg(feature = "axum")]
    #[tokio::test]
    async fn responses_follow_the_idempotency_key_draft() {
        use axum::{
            http::{StatusCode, header},
            response::IntoResponse,
        };
        let expected = [
            (StatusCode::BAD_REQUEST, None),
            (StatusCode::BAD_REQUEST, None),
            (StatusCode::CONFLICT, Some("2")),
            (StatusCode::UNPROCESSABLE_ENTITY, None),
            (StatusCode::SERVICE_UNAVAILABLE, Some("1")),
            (StatusCode::INTERNAL_SERVER_ERROR, None),
            (StatusCode::CONFLICT, Some("1")),
        ];
        for (error, (status, retry_after)) in every_error().into_iter().zip(expected) {
            let message = error.to_string();
            let response = error.into_response();
            assert_eq!(response.status(), status, "{message}");
            let header = |name| {
                response
                    .headers()
                    .get(name)
                    .map(|value| value.to_str().unwrap())
            };
            assert_eq!(header(header::RETRY_AFTER), retry_after, "{message}");
            assert_eq!(
                header(header::CONTENT_TYPE),
                Some("text/plain; charset=utf-8")
            );
            let body = axum::body::to_bytes(response.into_body(), 1024)
                .await
                .unwrap();
            assert_eq!(body, message.as_bytes());
        }
    }

    #[cfg(feature = "axum")]
    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_at_least_one() {
        use axum::{http::header::RETRY_AFTER, response::IntoResponse};
        for (lease, seconds) in [
            (0, "1"),
            (1, "1"),
            (999, "1"),
            (1000, "1"),
            (1001, "2"),
            (30_000, "30"),
        ] {
            let response = IdempotencyError::InProgress {
                retry_after: Duration::from_millis(lease),
            }
            .into_response();
            assert_eq!(response.headers()[RETRY_AFTER], seconds, "{lease} ms");
        }
    }
}
