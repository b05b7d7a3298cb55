//! `tonic::Status`: its code, and the server's pushback in
//! `grpc-retry-pushback-ms`.

use std::time::Duration;

use ::tonic::{Status, metadata::MetadataMap};

use super::{Classify, Elapsed, FromTimeout, RetryAfter};
use crate::Code;

/// The metadata key with which a gRPC server tells its clients when to retry
/// (gRPC retry design A6).
pub(crate) const PUSHBACK: &str = "grpc-retry-pushback-ms";

/// The status code maps one to one (`Ok` has no code), with one exception:
/// an `Unknown` or `Cancelled` status that carries a source error was made
/// by the client's own transport (a status received from a server never has
/// a source), for a connection that broke while the call was in flight
/// (hyper says `Canceled: connection closed` when the server's process died
/// with the request queued on its connection), and is `Unavailable`, as
/// gRPC's own clients report it. `retry_after` reads the
/// `grpc-retry-pushback-ms` trailer as the gRPC retry design (A6) says: a
/// non-negative integer is a delay in milliseconds, anything else (negative,
/// not a number) asks the client not to retry.
impl Classify for Status {
    fn code(&self) -> Option<Code> {
        use ::tonic::Code as Grpc;
        Some(match self.code() {
            Grpc::Ok => return None,
            Grpc::Unknown | Grpc::Cancelled if std::error::Error::source(self).is_some() => {
                Code::Unavailable
            }
            Grpc::Cancelled => Code::Cancelled,
            Grpc::Unknown => Code::Unknown,
            Grpc::InvalidArgument => Code::InvalidArgument,
            Grpc::DeadlineExceeded => Code::DeadlineExceeded,
            Grpc::NotFound => Code::NotFound,
            Grpc::AlreadyExists => Code::AlreadyExists,
            Grpc::PermissionDenied => Code::PermissionDenied,
            Grpc::ResourceExhausted => Code::ResourceExhausted,
            Grpc::FailedPrecondition => Code::FailedPrecondition,
            Grpc::Aborted => Code::Aborted,
            Grpc::OutOfRange => Code::OutOfRange,
            Grpc::Unimplemented => Code::Unimplemented,
            Grpc::Internal => Code::Internal,
            Grpc::Unavailable => Code::Unavailable,
            Grpc::DataLoss => Code::DataLoss,
            Grpc::Unauthenticated => Code::Unauthenticated,
        })
    }

    fn retry_after(&self) -> Option<RetryAfter> {
        pushback(self.metadata())
    }
}

/// An elapsed attempt or deadline is `DEADLINE_EXCEEDED`, as a gRPC deadline
/// would be; the message says which limit elapsed.
impl FromTimeout for Status {
    fn from_timeout(elapsed: Elapsed) -> Status {
        Status::deadline_exceeded(elapsed.to_string())
    }
}

fn pushback(metadata: &MetadataMap) -> Option<RetryAfter> {
    let value = metadata.get(PUSHBACK)?;
    let millis = value
        .to_str()
        .ok()
        .and_then(|text| text.trim().parse::<i64>().ok())
        .and_then(|millis| u64::try_from(millis).ok());
    Some(millis.map_or(RetryAfter::Stop, |millis| {
        RetryAfter::Delay(Duration::from_millis(millis))
    }))
}

#[cfg(test)]
mod tests {
    use ::tonic::metadata::MetadataValue;

    use super::*;

    #[test]
    fn a_broken_connection_is_unavailable_but_a_servers_unknown_is_not() {
        let broken = Status::from_error(Box::new(std::io::Error::from(
            std::io::ErrorKind::BrokenPipe,
        )));
        assert_eq!(
            Classify::code(&broken),
            Some(Code::Unavailable),
            "{broken:?}"
        );
        let from_server = Status::unknown("handler panicked");
        assert_eq!(Classify::code(&from_server), Some(Code::Unknown));
    }

    #[test]
    fn a_request_cancelled_by_a_closed_connection_is_unavailable() {
        // What tonic makes of hyper's `Canceled: connection closed`.
        let mut closed = Status::cancelled("operation was canceled");
        closed.set_source(std::sync::Arc::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        assert_eq!(Classify::code(&closed), Some(Code::Unavailable));
        let from_server = Status::cancelled("the server gave up");
        assert_eq!(Classify::code(&from_server), Some(Code::Cancelled));
    }

    fn with_pushback(value: &'static str) -> Status {
        let mut status = Status::resource_exhausted("slow down");
        status
            .metadata_mut()
            .insert(PUSHBACK, MetadataValue::from_static(value));
        status
    }

    #[test]
    fn every_grpc_code_maps_to_the_code_with_its_number() {
        assert_eq!(Classify::code(&Status::ok("fine")), None);
        for number in 1..=16 {
            let status = Status::new(::tonic::Code::from_i32(number), "failed");
            assert_eq!(
                Classify::code(&status),
                Code::from_i32(number),
                "gRPC code {number}"
            );
        }
    }

    #[test]
    fn pushback_is_a_delay_in_milliseconds() {
        assert_eq!(
            with_pushback("150").retry_after(),
            Some(RetryAfter::Delay(Duration::from_millis(150)))
        );
        assert_eq!(
            with_pushback("0").retry_after(),
            Some(RetryAfter::Delay(Duration::ZERO))
        );
    }

    #[test]
    fn negative_or_unparsable_pushback_says_stop() {
        assert_eq!(with_pushback("-1").retry_after(), Some(RetryAfter::Stop));
        assert_eq!(with_pushback("soon").retry_after(), Some(RetryAfter::Stop));
        assert_eq!(with_pushback("1.5").retry_after(), Some(RetryAfter::Stop));
        assert_eq!(with_pushback("").retry_after(), Some(RetryAfter::Stop));
    }

    /// `RESOURCE_EXHAUSTED` with a pushback of `i64::MAX` ms (292 million
    /// years) on the first attempt, then success.
    async fn pushed_back_forever(policy: crate::RetryPolicy) -> (Result<(), Status>, Duration) {
        let started = tokio::time::Instant::now();
        let mut attempts = 0;
        let result = policy
            .run_timed(|| {
                attempts += 1;
                let outcome = if attempts == 1 {
                    Err(with_pushback("9223372036854775807"))
                } else {
                    Ok(())
                };
                async move { outcome }
            })
            .await;
        (result, started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn an_endless_pushback_waits_the_backoffs_cap_at_most() {
        let policy = crate::RetryPolicy::builder()
            .max_retries(1)
            .backoff("exp(10ms, max = 2s)")
            .on("ResourceExhausted")
            .build()
            .unwrap();
        let (result, elapsed) = pushed_back_forever(policy).await;
        assert!(result.is_ok());
        assert_eq!(elapsed, Duration::from_secs(2), "clamped to the cap");
    }

    #[tokio::test(start_paused = true)]
    async fn an_endless_pushback_past_the_deadline_ends_the_call() {
        let policy = crate::RetryPolicy::builder()
            .max_retries(1)
            .backoff("exp(10ms)")
            .on("ResourceExhausted")
            .deadline(Duration::from_secs(5))
            .build()
            .unwrap();
        let (result, elapsed) = pushed_back_forever(policy).await;
        let status = result.unwrap_err();
        assert_eq!(status.code(), ::tonic::Code::ResourceExhausted);
        assert_eq!(
            elapsed,
            Duration::ZERO,
            "the default cap of 30 s ends past the 5 s deadline"
        );
    }

    #[test]
    fn no_pushback_without_the_trailer() {
        assert_eq!(Status::unavailable("down").retry_after(), None);
    }

    #[test]
    fn timeouts_become_deadline_exceeded() {
        let status = Status::from_timeout(Elapsed::attempt(Duration::from_millis(250)));
        assert_eq!(status.code(), ::tonic::Code::DeadlineExceeded);
        assert_eq!(status.message(), "attempt timeout of 250ms elapsed");
        assert_eq!(Classify::code(&status), Some(Code::DeadlineExceeded));
    }

    #[test]
    fn a_status_is_found_in_a_source_chain() {
        let wrapped = anyhow::Error::new(with_pushback("20")).context("calling the ledger");
        assert_eq!(wrapped.code(), Some(Code::ResourceExhausted));
        assert_eq!(
            wrapped.retry_after(),
            Some(RetryAfter::Delay(Duration::from_millis(20)))
        );
    }
}
