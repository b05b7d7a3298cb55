//! HTTP: status codes mapped to canonical codes, `Retry-After`, and
//! [`HttpError`], an error that keeps both.
//!
//! Status codes map as gRPC gateways map them (the standard HTTP↔gRPC
//! mapping): `503` is `Unavailable`, `504` `DeadlineExceeded`, `429`
//! `ResourceExhausted`, and the other `4xx` are codes that retrying cannot
//! fix. A status below 400 is not an error and has no code.
//!
//! ```
//! use http::StatusCode;
//! use steadfast_runtime::{Classify, Code, RetryAfter, http::parse_retry_after};
//! use std::time::{Duration, SystemTime};
//!
//! assert_eq!(StatusCode::SERVICE_UNAVAILABLE.code(), Some(Code::Unavailable));
//! assert_eq!(StatusCode::NOT_FOUND.code(), Some(Code::NotFound));
//! assert_eq!(StatusCode::OK.code(), None);
//! assert_eq!(
//!     parse_retry_after("120", SystemTime::now()),
//!     Some(RetryAfter::Delay(Duration::from_secs(120)))
//! );
//! ```
//!
//! # `Retry-After` with reqwest
//!
//! `reqwest::Error` does not keep the response's headers, so a
//! `reqwest::Error` built by `error_for_status` cannot say when to retry.
//! Check the response with `HttpError::check` instead (feature `reqwest`):
//! the error keeps the status and the server's `Retry-After`, which then
//! replaces the backoff's delay. `?` converts the other `reqwest::Error`s.
//!
//! ```no_run
//! # #[cfg(feature = "reqwest")]
//! # mod example {
//! use steadfast_runtime::{RetryPolicy, http::HttpError};
//!
//! /// GETs `url`; a `429` or `503` keeps its `Retry-After`.
//! async fn fetch(client: &reqwest::Client, url: &str) -> Result<String, HttpError> {
//!     let response = HttpError::check(client.get(url).send().await?)?;
//!     Ok(response.text().await?)
//! }
//!
//! pub async fn balance(client: &reqwest::Client) -> Result<String, HttpError> {
//!     let policy = RetryPolicy::builder()
//!         .backoff("exp(100ms, max = 5s)")
//!         .on("Unavailable|DeadlineExceeded|ResourceExhausted")
//!         .build()
//!         .expect("a valid policy");
//!     policy.run(|| fetch(client, "http://127.0.0.1:8080/balance")).await
//! }
//! # }
//! ```
//!
//! With the attribute, the same `fetch` is written
//! `#[steadfast::retry(on = "Unavailable|DeadlineExceeded|ResourceExhausted")]`.

use std::{
    error::Error,
    fmt,
    time::{Duration, SystemTime},
};

use ::http::{HeaderMap, StatusCode, header::RETRY_AFTER};

use super::{Classify, Elapsed, FromTimeout, RetryAfter, classify_source_chain};
use crate::Code;

/// `None` below 400; otherwise the standard HTTP→gRPC mapping: 400 and 422
/// `InvalidArgument`, 401 `Unauthenticated`, 403 `PermissionDenied`, 404
/// `NotFound`, 405 and 501 `Unimplemented`, 408 and 504 `DeadlineExceeded`,
/// 409 `Aborted`, 412 `FailedPrecondition`, 416 `OutOfRange`, 429
/// `ResourceExhausted`, 499 `Cancelled`, other 4xx `FailedPrecondition`, 500
/// `Internal`, 502 and 503 `Unavailable`, other 5xx `Unknown`.
impl Classify for StatusCode {
    fn code(&self) -> Option<Code> {
        Some(match self.as_u16() {
            ..400 => return None,
            400 | 422 => Code::InvalidArgument,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::NotFound,
            405 | 501 => Code::Unimplemented,
            408 | 504 => Code::DeadlineExceeded,
            409 => Code::Aborted,
            412 => Code::FailedPrecondition,
            416 => Code::OutOfRange,
            429 => Code::ResourceExhausted,
            499 => Code::Cancelled,
            400..500 => Code::FailedPrecondition,
            500 => Code::Internal,
            502 | 503 => Code::Unavailable,
            _ => Code::Unknown,
        })
    }
}

/// Parses a `Retry-After` value: delta-seconds (`"120"`) or an HTTP-date
/// (`"Wed, 21 Oct 2015 07:28:00 GMT"`), which is read relative to `now`.
/// `None` for anything else, and for a date that is not after `now`: such a
/// date says "retry whenever you like" (or that the two clocks disagree),
/// not "retry at once", so the backoff's own delay applies rather than none
/// at all. An explicit `"0"` is a zero delay: the server asked for it.
///
/// ```
/// use steadfast_runtime::{RetryAfter, http::parse_retry_after};
/// use std::time::{Duration, SystemTime};
///
/// let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
/// assert_eq!(parse_retry_after("2", now), Some(RetryAfter::Delay(Duration::from_secs(2))));
/// assert_eq!(
///     parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
///     Some(RetryAfter::Delay(Duration::from_secs(30)))
/// );
/// assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now), None, "in the past");
/// assert_eq!(parse_retry_after("soon", now), None);
/// ```
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<RetryAfter> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit()) {
        return value
            .parse()
            .ok()
            .map(|seconds| RetryAfter::Delay(Duration::from_secs(seconds)));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    match date.duration_since(now) {
        Ok(delay) if !delay.is_zero() => Some(RetryAfter::Delay(delay)),
        _ => None,
    }
}

/// An HTTP call that failed: the response's status and `Retry-After` if there
/// was a response, a message, and the underlying error if there is one.
///
/// Classified by its status (see [`Classify` for
/// `StatusCode`](#impl-Classify-for-StatusCode)); without a status, by the
/// first error that steadfast knows in its source chain (`Unknown` if none).
/// Its `retry_after` is the response's `Retry-After`. With the feature
/// `reqwest`, `HttpError::check` builds one from a response and `?`
/// converts a `reqwest::Error` into one (see the [module docs](self)).
///
/// ```
/// use http::{HeaderMap, HeaderValue, StatusCode, header::RETRY_AFTER};
/// use steadfast_runtime::{Classify, Code, RetryAfter, http::HttpError};
/// use std::time::Duration;
///
/// let mut headers = HeaderMap::new();
/// headers.insert(RETRY_AFTER, HeaderValue::from_static("3"));
/// let error = HttpError::from_status(StatusCode::TOO_MANY_REQUESTS, &headers);
/// assert_eq!(error.code(), Some(Code::ResourceExhausted));
/// assert_eq!(error.retry_after(), Some(RetryAfter::Delay(Duration::from_secs(3))));
/// assert_eq!(error.to_string(), "HTTP status 429 Too Many Requests");
/// ```
#[derive(Debug)]
pub struct HttpError {
    status: Option<StatusCode>,
    retry_after: Option<RetryAfter>,
    message: String,
    source: Option<Box<dyn Error + Send + Sync + 'static>>,
}

impl HttpError {
    /// An error with this message and no status (a failure before any response).
    pub fn new(message: impl Into<String>) -> HttpError {
        HttpError {
            status: None,
            retry_after: None,
            message: message.into(),
            source: None,
        }
    }

    /// The error for a response with `status`; keeps the `Retry-After` found
    /// in `headers` (read relative to the current time).
    pub fn from_status(status: StatusCode, headers: &HeaderMap) -> HttpError {
        let retry_after = headers
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, SystemTime::now()));
        HttpError {
            status: Some(status),
            retry_after,
            message: format!("HTTP status {status}"),
            source: None,
        }
    }

    /// This error, caused by `source` (returned by [`Error::source`] and
    /// searched for a code when there is no status).
    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn Error + Send + Sync + 'static>>,
    ) -> HttpError {
        self.source = Some(source.into());
        self
    }

    /// The response's status, if there was a response.
    pub fn status(&self) -> Option<StatusCode> {
        self.status
    }

    /// The response's `Retry-After`, if it had a valid one.
    pub fn retry_after(&self) -> Option<RetryAfter> {
        self.retry_after
    }

    /// The message, without the source's.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error for HttpError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        let source: &(dyn Error + 'static) = self.source.as_deref()?;
        Some(source)
    }
}

/// The status's code; without a status (or below 400), the code of the first
/// error that steadfast knows in the source chain, else `Unknown`.
impl Classify for HttpError {
    fn code(&self) -> Option<Code> {
        self.status
            .and_then(|status| status.code())
            .or_else(|| {
                let source: &(dyn Error + 'static) = self.source.as_deref()?;
                classify_source_chain(source)?.code()
            })
            .or(Some(Code::Unknown))
    }

    fn retry_after(&self) -> Option<RetryAfter> {
        self.retry_after
    }
}

/// An error without a status whose source is the [`Elapsed`]: classified as
/// `DeadlineExceeded`.
impl FromTimeout for HttpError {
    fn from_timeout(elapsed: Elapsed) -> HttpError {
        HttpError::new(elapsed.to_string()).with_source(elapsed)
    }
}

#[cfg(feature = "reqwest")]
impl HttpError {
    /// Returns `response` if its status is below 400, else an error that keeps
    /// the status and the server's `Retry-After`, so that a retry waits as
    /// long as the server asked. Use it instead of
    /// `reqwest::Response::error_for_status`, whose error drops the headers
    /// (see the [module docs](self)).
    pub fn check(response: ::reqwest::Response) -> Result<::reqwest::Response, HttpError> {
        let status = response.status();
        if status.as_u16() < 400 {
            return Ok(response);
        }
        let mut error = HttpError::from_status(status, response.headers());
        error.message = format!("HTTP status {status} from {}", response.url());
        Err(error)
    }
}

/// Keeps the status (if the error came from a response) and the error as the
/// source, which classifies it when there is no status.
#[cfg(feature = "reqwest")]
impl From<::reqwest::Error> for HttpError {
    fn from(error: ::reqwest::Error) -> HttpError {
        HttpError {
            status: error.status(),
            retry_after: None,
            message: error.to_string(),
            source: Some(Box::new(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use ::http::HeaderValue;

    use super::*;

    fn code(status: u16) -> Option<Code> {
        StatusCode::from_u16(status).unwrap().code()
    }

    /// Asserts each status's code, naming the status that differs.
    fn maps_to(expected: &[(u16, Code)]) {
        for &(status, expected) in expected {
            assert_eq!(code(status), Some(expected), "{status}");
        }
    }

    #[test]
    fn statuses_below_400_have_no_code() {
        for status in [100, 200, 201, 204, 301, 304, 399] {
            assert_eq!(code(status), None, "{status}");
        }
    }

    #[test]
    fn statuses_from_400_map_to_codes() {
        maps_to(&[
            // Client errors: non-transient, except 408, 409, 429 and 499.
            (400, Code::InvalidArgument),
            (401, Code::Unauthenticated),
            (402, Code::FailedPrecondition),
            (403, Code::PermissionDenied),
            (404, Code::NotFound),
            (405, Code::Unimplemented),
            (408, Code::DeadlineExceeded),
            (409, Code::Aborted),
            (410, Code::FailedPrecondition),
            (412, Code::FailedPrecondition),
            (416, Code::OutOfRange),
            (418, Code::FailedPrecondition),
            (422, Code::InvalidArgument),
            (429, Code::ResourceExhausted),
            (499, Code::Cancelled),
            // Server errors.
            (500, Code::Internal),
            (501, Code::Unimplemented),
            (502, Code::Unavailable),
            (503, Code::Unavailable),
            (504, Code::DeadlineExceeded),
            (505, Code::Unknown),
            (599, Code::Unknown),
        ]);
    }

    #[test]
    fn retry_after_in_seconds() {
        let now = SystemTime::now();
        assert_eq!(
            parse_retry_after("0", now),
            Some(RetryAfter::Delay(Duration::ZERO))
        );
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(RetryAfter::Delay(Duration::from_secs(120)))
        );
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("1.5", now), None);
        assert_eq!(parse_retry_after("", now), None);
        assert_eq!(parse_retry_after("99999999999999999999999", now), None);
    }

    #[test]
    fn retry_after_as_a_date() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:51:37 GMT", now),
            Some(RetryAfter::Delay(Duration::from_secs(120)))
        );
        // The obsolete formats that HTTP still accepts.
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:50:37 GMT", now),
            Some(RetryAfter::Delay(Duration::from_secs(60)))
        );
        assert_eq!(
            parse_retry_after("Sun Nov  6 08:49:47 1994", now),
            Some(RetryAfter::Delay(Duration::from_secs(10)))
        );
        // A date in the past (or now) leaves the delay to the backoff.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:36 GMT", now),
            None
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            None
        );
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49", now), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_date_in_the_past_keeps_the_backoff() {
        let mut headers = HeaderMap::new();
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        let policy = crate::RetryPolicy::builder()
            .max_retries(1)
            .backoff("const(100ms)")
            .jitter("none")
            .build()
            .unwrap();
        let started = tokio::time::Instant::now();
        let mut attempts = 0;
        let result: Result<(), HttpError> = policy
            .run(|| {
                attempts += 1;
                let error = HttpError::from_status(StatusCode::SERVICE_UNAVAILABLE, &headers);
                async move { Err(error) }
            })
            .await;
        assert_eq!(result.unwrap_err().retry_after(), None);
        assert_eq!(attempts, 2);
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(100),
            "the backoff's delay, not zero"
        );
    }

    #[test]
    fn from_status_keeps_the_status_and_retry_after() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        let error = HttpError::from_status(StatusCode::SERVICE_UNAVAILABLE, &headers);
        assert_eq!(error.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(error.code(), Some(Code::Unavailable));
        assert_eq!(
            Classify::retry_after(&error),
            Some(RetryAfter::Delay(Duration::from_secs(7)))
        );
        assert_eq!(error.to_string(), "HTTP status 503 Service Unavailable");
        assert!(error.source().is_none());

        let error = HttpError::from_status(StatusCode::BAD_GATEWAY, &HeaderMap::new());
        assert_eq!(error.retry_after(), None);
    }

    #[test]
    fn an_invalid_retry_after_is_ignored() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("later"));
        let error = HttpError::from_status(StatusCode::TOO_MANY_REQUESTS, &headers);
        assert_eq!(error.retry_after(), None);
        assert_eq!(error.code(), Some(Code::ResourceExhausted));
    }

    #[test]
    fn without_a_status_the_source_chain_decides() {
        let reset = HttpError::new("sending the request")
            .with_source(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(reset.code(), Some(Code::Unavailable));
        assert_eq!(reset.message(), "sending the request");
        assert_eq!(reset.source().unwrap().to_string(), "connection reset");

        assert_eq!(HttpError::new("no idea").code(), Some(Code::Unknown));
        assert_eq!(
            HttpError::new("no idea").with_source("plain text").code(),
            Some(Code::Unknown)
        );
    }

    #[test]
    fn timeouts_are_deadline_exceeded_and_found_in_chains() {
        let error = HttpError::from_timeout(Elapsed::deadline(Duration::from_secs(2)));
        assert_eq!(error.code(), Some(Code::DeadlineExceeded));
        assert_eq!(error.to_string(), "retry deadline of 2s elapsed");

        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        let wrapped = anyhow::Error::new(HttpError::from_status(
            StatusCode::SERVICE_UNAVAILABLE,
            &headers,
        ))
        .context("loading the balance");
        assert_eq!(wrapped.code(), Some(Code::Unavailable));
        assert_eq!(
            wrapped.retry_after(),
            Some(RetryAfter::Delay(Duration::from_secs(1)))
        );
    }
}
