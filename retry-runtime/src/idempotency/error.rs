//! The errors of an idempotent call.

use std::{fmt, time::Duration};

#[cfg(any(feature = "tonic", feature = "axum"))]
use super::RecordKey;
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
    /// The request with this key ran and its effects committed, but its
    /// owner stopped (a crash) before storing the result, which is lost. It
    /// is not run again until the key's TTL ends: a retry cannot help, and
    /// the caller must find out the outcome another way. Only a body that
    /// fences its claim can end so; `transaction = tx` never does.
    ResultLost,
    /// The handler's settings cannot work (a lease under 1 ms, a TTL not
    /// above the lease): nothing was run. `#[idempotent]` checks them at
    /// compile time; the builders at the first request.
    InvalidConfig {
        /// What is wrong, and what to write instead.
        message: String,
    },
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
            IdempotencyError::ResultLost => f.write_str(
                "the request with this idempotency key ran, but its result was not kept; it will not run again",
            ),
            IdempotencyError::InvalidConfig { message } => {
                write!(f, "invalid idempotency settings: {message}")
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

impl IdempotencyError {
    /// What a client is told: the `Display`, except for `Store` and `Codec`,
    /// whose text may name hosts, tables, SQL or stored bytes. Those get a
    /// generic message with a random reference, and their detail goes to a
    /// `tracing` event (target `steadfast::idempotency::error`) with the
    /// same reference and, when known, the record `key` (its scope and hash,
    /// never the client's key), so that operators can find it.
    #[cfg(any(feature = "tonic", feature = "axum"))]
    fn client_message(&self, key: Option<&RecordKey>) -> String {
        let generic = match self {
            IdempotencyError::Store(_) => {
                "the idempotency store is unavailable; the request was not run, retry later"
            }
            IdempotencyError::Codec { .. } => {
                "an idempotency record could not be stored or read back"
            }
            _ => return self.to_string(),
        };
        let reference = format!("{:08x}", fastrand::u32(..));
        let key = key.map(tracing::field::debug);
        match self {
            IdempotencyError::Store(_) => tracing::warn!(
                key,
                reference,
                error = %self,
                "idempotency store failure answered to the client as unavailable"
            ),
            _ => tracing::error!(
                key,
                reference,
                error = %self,
                "idempotency codec failure answered to the client as an internal error"
            ),
        }
        format!("{generic} (reference {reference})")
    }
}

impl From<StoreError> for IdempotencyError {
    fn from(error: StoreError) -> IdempotencyError {
        IdempotencyError::Store(error)
    }
}

/// `MissingKey`, `KeyTooLong` → `InvalidArgument`; `InProgress`, `LeaseLost`
/// → `Aborted` (retry later, with the remaining lease as pushback);
/// `PayloadMismatch` → `FailedPrecondition`; `ResultLost` → `DataLoss`
/// (not retried: the request ran); `Store` → `Unavailable`; `Codec` →
/// `Internal`.
impl Classify for IdempotencyError {
    fn code(&self) -> Option<Code> {
        Some(match self {
            IdempotencyError::MissingKey | IdempotencyError::KeyTooLong { .. } => {
                Code::InvalidArgument
            }
            IdempotencyError::InProgress { .. } | IdempotencyError::LeaseLost => Code::Aborted,
            IdempotencyError::PayloadMismatch => Code::FailedPrecondition,
            IdempotencyError::ResultLost => Code::DataLoss,
            IdempotencyError::Store(_) => Code::Unavailable,
            IdempotencyError::Codec { .. } | IdempotencyError::InvalidConfig { .. } => {
                Code::Internal
            }
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
/// `Store` → `UNAVAILABLE`; `Codec` → `INTERNAL`; `LeaseLost` → `ABORTED`;
/// `ResultLost` → `DATA_LOSS`, which no retry policy retries.
/// The message is the error's `Display`, except for `Store` and `Codec`:
/// their text may name hosts, tables or SQL, so the client gets a generic
/// message with a reference, and the detail is logged (a `tracing` event
/// with the same reference).
#[cfg(feature = "tonic")]
impl From<IdempotencyError> for tonic::Status {
    fn from(error: IdempotencyError) -> tonic::Status {
        // The codes of `Classify`, whose numbers are gRPC's.
        let code = error.code().map_or(tonic::Code::Unknown, |code| {
            tonic::Code::from_i32(code as i32)
        });
        let mut status = tonic::Status::new(code, error.client_message(None));
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
/// - `ResultLost`: `410 Gone` (the request ran and its result is lost; no
///   client retries a 4xx of this kind);
/// - `Store`: `503 Service Unavailable` with `Retry-After: 1`;
/// - `Codec`: `500 Internal Server Error`.
///
/// The body is the error's `Display`, as `text/plain`, except for `Store`
/// and `Codec`: their text may name hosts, tables or SQL, so the client gets
/// a generic message with a reference, and the detail is logged (a
/// `tracing` event with the same reference).
#[cfg(feature = "axum")]
impl axum::response::IntoResponse for IdempotencyError {
    fn into_response(self) -> axum::response::Response {
        self.into_client_response(None)
    }
}

#[cfg(feature = "axum")]
impl IdempotencyError {
    /// [`IntoResponse`](axum::response::IntoResponse), with the record key
    /// in the log event of a `Store` or `Codec` error.
    pub(crate) fn into_client_response(self, key: Option<&RecordKey>) -> axum::response::Response {
        use axum::{
            http::{HeaderValue, StatusCode, header::RETRY_AFTER},
            response::IntoResponse as _,
        };
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
            IdempotencyError::ResultLost => (StatusCode::GONE, None),
            IdempotencyError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, Some(1)),
            IdempotencyError::Codec { .. } | IdempotencyError::InvalidConfig { .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, None)
            }
        };
        let mut response = (status, self.client_message(key)).into_response();
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
            IdempotencyError::ResultLost,
            IdempotencyError::InvalidConfig {
                message: "the lease must be at least 1 ms".to_owned(),
            },
        ]
    }

    /// Whether an error's text is for operators only.
    fn is_internal(error: &IdempotencyError) -> bool {
        matches!(
            error,
            IdempotencyError::Store(_) | IdempotencyError::Codec { .. }
        )
    }

    /// Store and codec errors as a real store makes them: naming hosts,
    /// users, tables and SQL.
    fn revealing_errors() -> Vec<IdempotencyError> {
        vec![
            IdempotencyError::Store(StoreError::new(
                "claim failed on db-primary.internal.example:5432 (user payments_rw)",
                std::io::Error::other("relation \"idempotency_records\" does not exist"),
            )),
            IdempotencyError::Codec {
                message: "stored bytes from db-primary.internal.example are truncated".to_owned(),
            },
        ]
    }

    const SECRETS: [&str; 3] = [
        "db-primary.internal.example",
        "payments_rw",
        "idempotency_records",
    ];

    #[cfg(feature = "tonic")]
    #[test]
    fn statuses_never_carry_store_or_codec_details() {
        for error in revealing_errors() {
            let status = tonic::Status::from(error);
            let shown = format!(
                "{} {:?} {:?}",
                status.message(),
                status.details(),
                status.metadata()
            );
            for secret in SECRETS {
                assert!(
                    !shown.contains(secret),
                    "{secret} reached the client: {shown}"
                );
            }
            assert!(status.message().contains("(reference "), "{shown}");
        }
    }

    #[cfg(feature = "axum")]
    #[tokio::test]
    async fn responses_never_carry_store_or_codec_details() {
        use axum::response::IntoResponse;
        for error in revealing_errors() {
            let response = error.into_response();
            let headers = format!("{:?}", response.headers());
            let body = axum::body::to_bytes(response.into_body(), 4096)
                .await
                .unwrap();
            let body = String::from_utf8(body.to_vec()).unwrap();
            for secret in SECRETS {
                assert!(
                    !body.contains(secret),
                    "{secret} reached the client: {body}"
                );
                assert!(!headers.contains(secret), "{secret} in {headers}");
            }
            assert!(body.contains("(reference "), "{body}");
        }
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
            Grpc::DataLoss,
            Grpc::Internal,
        ];
        assert_eq!(every_error().len(), expected.len());
        for (error, code) in every_error().into_iter().zip(expected) {
            let (message, classified) = (error.to_string(), error.code());
            let internal = is_internal(&error);
            let status = tonic::Status::from(error);
            assert_eq!(status.code(), code, "{message}");
            if internal {
                assert!(status.message().contains("(reference "), "{status:?}");
            } else {
                assert_eq!(status.message(), message);
            }
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
            (StatusCode::GONE, None),
            (StatusCode::INTERNAL_SERVER_ERROR, None),
        ];
        assert_eq!(every_error().len(), expected.len());
        for (error, (status, retry_after)) in every_error().into_iter().zip(expected) {
            let message = error.to_string();
            let internal = is_internal(&error);
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
            if !internal {
                assert_eq!(body, message.as_bytes());
            }
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
