//! Classification: how an error says whether, and when, to retry.

use std::{error::Error, fmt, io, time::Duration};

use crate::Code;

mod chain;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "reqwest")]
mod reqwest;
#[cfg(feature = "sqlx")]
mod sqlx;
#[cfg(feature = "tonic")]
pub(crate) mod tonic;

pub use chain::classify_source_chain;

/// What a server asked for in its answer: when to retry, or not to.
///
/// gRPC servers say it with the `grpc-retry-pushback-ms` trailer, HTTP
/// servers with `Retry-After`. A delay replaces the one the backoff
/// computed, but never exceeds the backoff's cap (`max` of `exp(…)`, the
/// delay of `const(…)`, zero for `none`): a hostile or broken server cannot
/// park a call for hours. The deadline bounds it too: a delay that would
/// end past the deadline ends the call with the error instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// Retry after this delay (instead of the backoff's), at most the
    /// backoff's cap.
    Delay(Duration),
    /// Do not retry (a negative or unparsable gRPC pushback).
    Stop,
}

/// Maps an error into a canonical [`Code`], so that a policy can tell
/// transient errors (retry) from permanent ones (return at once).
///
/// Implemented for `std::io::Error`, `anyhow::Error`, `Box<dyn Error + Send + Sync>`
/// (both walk the source chain), [`Elapsed`], `tonic::Status`, HTTP status codes,
/// `reqwest::Error` and `sqlx::Error` (behind their features), and for your
/// own enums with `#[derive(Classify)]`.
///
/// ```
/// use steadfast::{Classify, Code};
///
/// #[derive(Debug)]
/// enum FetchError { Down, BadInput }
///
/// impl Classify for FetchError {
///     fn code(&self) -> Option<Code> {
///         Some(match self {
///             FetchError::Down => Code::Unavailable,
///             FetchError::BadInput => Code::InvalidArgument,
///         })
///     }
/// }
/// assert_eq!(FetchError::Down.code(), Some(Code::Unavailable));
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be classified, so a retry policy cannot tell its transient errors from permanent ones",
    label = "this error type does not implement `Classify`",
    note = "derive it on your error enum: `#[derive(steadfast::Classify)]`, with `#[code(Unavailable)]` (or another code) on each variant",
    note = "or implement it: `impl steadfast::Classify for {Self} {{ fn code(&self) -> Option<steadfast::Code> {{ … }} }}`",
    note = "or return an error type that already implements it: `tonic::Status`, `std::io::Error`, `anyhow::Error`, `Box<dyn Error + Send + Sync>`"
)]
pub trait Classify {
    /// The canonical code of this error; `None` if it has none (never retried
    /// by a code list).
    fn code(&self) -> Option<Code>;

    /// The server's pushback, if the error carries one.
    fn retry_after(&self) -> Option<RetryAfter> {
        None
    }
}

/// Builds an error of this type that says an attempt or the overall deadline
/// elapsed; needed by `timeout` and `deadline`.
///
/// ```
/// use steadfast::{Classify, Code, Elapsed, FromTimeout};
/// let error = std::io::Error::from_timeout(Elapsed::attempt(std::time::Duration::from_secs(1)));
/// assert_eq!(error.code(), Some(Code::DeadlineExceeded));
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot express a timeout, so `timeout` and `deadline` cannot end an attempt with it",
    label = "this error type does not implement `FromTimeout`",
    note = "implement `steadfast::FromTimeout for {Self}` (build your timeout variant from the `Elapsed` it gets)",
    note = "or, with `#[derive(steadfast::Classify)]`, mark a unit variant `#[classify(timeout)]`",
    note = "or return an error type that can express it: `tonic::Status`, `std::io::Error`, `anyhow::Error`, `Box<dyn Error + Send + Sync>`"
)]
pub trait FromTimeout {
    /// The error for an attempt (or the whole call) that ran out of time.
    fn from_timeout(elapsed: Elapsed) -> Self;
}

/// An attempt or the overall deadline ran out of time. Classified as
/// [`Code::DeadlineExceeded`], also when found in a source chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed {
    limit: Duration,
    deadline: bool,
}

impl Elapsed {
    /// A per-attempt `timeout` of `limit` elapsed.
    pub const fn attempt(limit: Duration) -> Elapsed {
        Elapsed {
            limit,
            deadline: false,
        }
    }

    /// The overall `deadline` of `limit` elapsed.
    pub const fn deadline(limit: Duration) -> Elapsed {
        Elapsed {
            limit,
            deadline: true,
        }
    }

    /// The limit that elapsed.
    pub const fn limit(&self) -> Duration {
        self.limit
    }

    /// Whether it was the overall deadline (rather than one attempt's timeout).
    pub const fn is_deadline(&self) -> bool {
        self.deadline
    }
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.deadline {
            "retry deadline"
        } else {
            "attempt timeout"
        };
        write!(
            f,
            "{what} of {} elapsed",
            steadfast_macro_support::format_duration(self.limit)
        )
    }
}

impl Error for Elapsed {}

impl Classify for Elapsed {
    fn code(&self) -> Option<Code> {
        Some(Code::DeadlineExceeded)
    }
}

impl Classify for Code {
    fn code(&self) -> Option<Code> {
        Some(*self)
    }
}

impl FromTimeout for Code {
    fn from_timeout(_: Elapsed) -> Code {
        Code::DeadlineExceeded
    }
}

impl<C: Classify + ?Sized> Classify for &C {
    fn code(&self) -> Option<Code> {
        (**self).code()
    }

    fn retry_after(&self) -> Option<RetryAfter> {
        (**self).retry_after()
    }
}

/// Connection refused, reset or aborted, not connected, broken pipe, host or
/// network unreachable and interrupted are `Unavailable`; timed out is
/// `DeadlineExceeded`. An `Other` error delegates to the error it wraps.
impl Classify for io::Error {
    fn code(&self) -> Option<Code> {
        use io::ErrorKind as Kind;
        Some(match self.kind() {
            Kind::ConnectionRefused
            | Kind::ConnectionReset
            | Kind::ConnectionAborted
            | Kind::NotConnected
            | Kind::BrokenPipe
            | Kind::HostUnreachable
            | Kind::NetworkUnreachable
            | Kind::NetworkDown
            | Kind::AddrNotAvailable
            | Kind::UnexpectedEof
            | Kind::Interrupted
            | Kind::WouldBlock => Code::Unavailable,
            Kind::TimedOut => Code::DeadlineExceeded,
            Kind::NotFound => Code::NotFound,
            Kind::PermissionDenied => Code::PermissionDenied,
            Kind::AlreadyExists => Code::AlreadyExists,
            Kind::InvalidInput | Kind::InvalidData => Code::InvalidArgument,
            Kind::Unsupported => Code::Unimplemented,
            Kind::OutOfMemory | Kind::StorageFull | Kind::QuotaExceeded => Code::ResourceExhausted,
            _ => {
                return self.get_ref().map_or(Some(Code::Unknown), |inner| {
                    classify_source_chain(inner).map_or(Some(Code::Unknown), |found| found.code())
                });
            }
        })
    }

    fn retry_after(&self) -> Option<RetryAfter> {
        let inner = self.get_ref()?;
        classify_source_chain(inner)?.retry_after()
    }
}

impl FromTimeout for io::Error {
    fn from_timeout(elapsed: Elapsed) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, elapsed)
    }
}

/// Walks the source chain for the first error it knows (see
/// [`classify_source_chain`]); `Unknown` if none.
impl Classify for Box<dyn Error + Send + Sync> {
    fn code(&self) -> Option<Code> {
        classify_source_chain(&**self).map_or(Some(Code::Unknown), |found| found.code())
    }

    fn retry_after(&self) -> Option<RetryAfter> {
        classify_source_chain(&**self)?.retry_after()
    }
}

impl FromTimeout for Box<dyn Error + Send + Sync> {
    fn from_timeout(elapsed: Elapsed) -> Self {
        Box::new(elapsed)
    }
}

/// Walks the chain (`anyhow::Error::chain`) for the first error it knows;
/// `Unknown` if none.
impl Classify for anyhow::Error {
    fn code(&self) -> Option<Code> {
        let root: &(dyn Error + 'static) = self.as_ref();
        classify_source_chain(root).map_or(Some(Code::Unknown), |found| found.code())
    }

    fn retry_after(&self) -> Option<RetryAfter> {
        let root: &(dyn Error + 'static) = self.as_ref();
        classify_source_chain(root)?.retry_after()
    }
}

impl FromTimeout for anyhow::Error {
    fn from_timeout(elapsed: Elapsed) -> Self {
        anyhow::Error::new(elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_kinds_map_to_codes() {
        let code = |kind| io::Error::from(kind).code();
        assert_eq!(
            code(io::ErrorKind::ConnectionRefused),
            Some(Code::Unavailable)
        );
        assert_eq!(
            code(io::ErrorKind::ConnectionReset),
            Some(Code::Unavailable)
        );
        assert_eq!(code(io::ErrorKind::BrokenPipe), Some(Code::Unavailable));
        assert_eq!(code(io::ErrorKind::TimedOut), Some(Code::DeadlineExceeded));
        assert_eq!(code(io::ErrorKind::NotFound), Some(Code::NotFound));
        assert_eq!(
            code(io::ErrorKind::InvalidData),
            Some(Code::InvalidArgument)
        );
        assert_eq!(code(io::ErrorKind::Other), Some(Code::Unknown));
    }

    #[test]
    fn wrapped_errors_are_found_in_the_chain() {
        let inner = io::Error::other(Elapsed::attempt(Duration::from_secs(1)));
        assert_eq!(inner.code(), Some(Code::DeadlineExceeded));
        let boxed: Box<dyn Error + Send + Sync> =
            Box::new(io::Error::from(io::ErrorKind::ConnectionReset));
        assert_eq!(boxed.code(), Some(Code::Unavailable));
        let context =
            anyhow::Error::new(io::Error::from(io::ErrorKind::TimedOut)).context("loading");
        assert_eq!(context.code(), Some(Code::DeadlineExceeded));
        let unknown: Box<dyn Error + Send + Sync> = "plain message".into();
        assert_eq!(unknown.code(), Some(Code::Unknown));
        assert_eq!(anyhow::anyhow!("plain").code(), Some(Code::Unknown));
    }

    #[test]
    fn timeouts_classify_as_deadline_exceeded() {
        let elapsed = Elapsed::deadline(Duration::from_millis(1500));
        assert_eq!(elapsed.to_string(), "retry deadline of 1.5s elapsed");
        assert_eq!(
            anyhow::Error::from_timeout(elapsed).code(),
            Some(Code::DeadlineExceeded)
        );
        assert_eq!(
            <Box<dyn Error + Send + Sync>>::from_timeout(elapsed).code(),
            Some(Code::DeadlineExceeded)
        );
        assert_eq!(
            io::Error::from_timeout(elapsed).code(),
            Some(Code::DeadlineExceeded)
        );
    }
}
