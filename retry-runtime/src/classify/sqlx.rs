//! `sqlx::Error`: pool and I/O failures are transient; database errors are
//! classified by their kind, their SQLSTATE and, for MySQL/MariaDB and
//! SQLite, by the driver's own error number.

use std::io;

use ::sqlx::error::{DatabaseError, Error, ErrorKind};

use super::{Classify, Elapsed, FromTimeout};
use crate::Code;

/// | the error | code |
/// |---|---|
/// | `PoolTimedOut`, `Tls`, `Protocol`, `WorkerCrashed` | `Unavailable` |
/// | `Io(e)` | the code of the `io::Error` (refused, reset → `Unavailable`; timed out → `DeadlineExceeded`; …) |
/// | `PoolClosed` | `Cancelled` |
/// | `RowNotFound` | `NotFound` |
/// | `Configuration`, `InvalidArgument` | `InvalidArgument` |
/// | `Database`: unique violation | `AlreadyExists` |
/// | `Database`: foreign key, not null, check or exclusion violation | `FailedPrecondition` |
/// | `Database`: SQLSTATE `40001` (serialization failure), `40P01` (deadlock) | `Aborted` |
/// | `Database`: SQLSTATE `57P01`, `57P02`, `57P03` (shutdown, cannot connect now) | `Unavailable` |
/// | `Database`: SQLSTATE `53300` (too many connections) | `ResourceExhausted` |
/// | `Database`: SQLSTATE `57014` (query canceled, also by `statement_timeout`) | `Cancelled` |
/// | `Database`, MySQL/MariaDB: error 1213 (deadlock), 1205 (lock wait timeout) | `Aborted` |
/// | `Database`, MySQL/MariaDB: error 1040 (too many connections) | `ResourceExhausted` |
/// | `Database`, SQLite: `SQLITE_BUSY`, `SQLITE_LOCKED` (database is locked) | `Unavailable` |
/// | `Database`, SQLite: `SQLITE_BUSY_SNAPSHOT` (the transaction must restart) | `Aborted` |
/// | any other `Database` error, and decoding, encoding, column and type errors | `Internal` |
/// | variants added to sqlx later | `Unknown` |
///
/// `Aborted` is not retried by default: retry it where the whole transaction
/// is retried (`on = "Aborted|Unavailable"`).
impl Classify for Error {
    fn code(&self) -> Option<Code> {
        Some(match self {
            Error::Io(error) => return Classify::code(error),
            Error::PoolTimedOut | Error::Tls(_) | Error::Protocol(_) | Error::WorkerCrashed => {
                Code::Unavailable
            }
            Error::PoolClosed => Code::Cancelled,
            Error::RowNotFound => Code::NotFound,
            Error::Configuration(_) | Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::Database(error) => database(&**error),
            Error::TypeNotFound { .. }
            | Error::ColumnIndexOutOfBounds { .. }
            | Error::ColumnNotFound(_)
            | Error::ColumnDecode { .. }
            | Error::Encode(_)
            | Error::Decode(_)
            | Error::AnyDriverError(_)
            | Error::InvalidSavePointStatement
            | Error::BeginFailed => Code::Internal,
            _ => Code::Unknown,
        })
    }
}

/// `Error::Io` of kind `TimedOut` whose inner error is the [`Elapsed`]:
/// classified as `DeadlineExceeded`.
impl FromTimeout for Error {
    fn from_timeout(elapsed: Elapsed) -> Error {
        Error::Io(io::Error::new(io::ErrorKind::TimedOut, elapsed))
    }
}

fn database(error: &(dyn DatabaseError + 'static)) -> Code {
    match error.kind() {
        ErrorKind::UniqueViolation => return Code::AlreadyExists,
        ErrorKind::ForeignKeyViolation
        | ErrorKind::NotNullViolation
        | ErrorKind::CheckViolation
        | ErrorKind::ExclusionViolation => return Code::FailedPrecondition,
        _ => {}
    }
    #[cfg(feature = "mysql")]
    if let Some(code) = error
        .try_downcast_ref::<::sqlx::mysql::MySqlDatabaseError>()
        .and_then(|mysql| mysql_number(mysql.number()))
    {
        return code;
    }
    #[cfg(feature = "sqlite")]
    if let Some(code) = error
        .try_downcast_ref::<::sqlx::sqlite::SqliteError>()
        .and_then(|sqlite| sqlite_result_code(sqlite.code()?.parse().ok()?))
    {
        return code;
    }
    error.code().as_deref().map_or(Code::Internal, sqlstate)
}

/// Codes by SQLSTATE, as PostgreSQL names them (MySQL uses the same for the
/// few it shares, `40001` among them).
fn sqlstate(state: &str) -> Code {
    match state {
        // serialization_failure, deadlock_detected
        "40001" | "40P01" => Code::Aborted,
        // admin_shutdown, crash_shutdown, cannot_connect_now
        "57P01" | "57P02" | "57P03" => Code::Unavailable,
        // too_many_connections
        "53300" => Code::ResourceExhausted,
        // query_canceled
        "57014" => Code::Cancelled,
        _ => Code::Internal,
    }
}

/// MySQL/MariaDB error numbers whose SQLSTATE does not tell (`HY000`, `08004`).
#[cfg(any(feature = "mysql", test))]
fn mysql_number(number: u16) -> Option<Code> {
    match number {
        // ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT
        1213 | 1205 => Some(Code::Aborted),
        // ER_CON_COUNT_ERROR
        1040 => Some(Code::ResourceExhausted),
        _ => None,
    }
}

/// SQLite extended result codes (`SqliteError::code` is the number).
#[cfg(any(feature = "sqlite", test))]
fn sqlite_result_code(code: i32) -> Option<Code> {
    const SQLITE_BUSY: i32 = 5;
    const SQLITE_LOCKED: i32 = 6;
    const SQLITE_BUSY_SNAPSHOT: i32 = SQLITE_BUSY | (2 << 8);
    match code {
        SQLITE_BUSY_SNAPSHOT => Some(Code::Aborted),
        _ if code & 0xff == SQLITE_BUSY || code & 0xff == SQLITE_LOCKED => Some(Code::Unavailable),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::{borrow::Cow, error::Error as StdError, fmt, time::Duration};

    use super::*;

    /// A database error with a given SQLSTATE and kind, as a driver reports it.
    #[derive(Debug)]
    struct Reported {
        state: &'static str,
        kind: fn() -> ErrorKind,
    }

    impl fmt::Display for Reported {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "SQLSTATE {}", self.state)
        }
    }

    impl StdError for Reported {}

    impl DatabaseError for Reported {
        fn message(&self) -> &str {
            self.state
        }

        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.state))
        }

        fn as_error(&self) -> &(dyn StdError + Send + Sync + 'static) {
            self
        }

        fn as_error_mut(&mut self) -> &mut (dyn StdError + Send + Sync + 'static) {
            self
        }

        fn into_error(self: Box<Self>) -> Box<dyn StdError + Send + Sync + 'static> {
            self
        }

        fn kind(&self) -> ErrorKind {
            (self.kind)()
        }
    }

    fn reported(state: &'static str) -> Option<Code> {
        Error::Database(Box::new(Reported {
            state,
            kind: || ErrorKind::Other,
        }))
        .code()
    }

    #[test]
    fn pool_and_connection_failures_are_unavailable() {
        codes_are([
            (Error::PoolTimedOut, Code::Unavailable),
            (Error::WorkerCrashed, Code::Unavailable),
            (
                Error::Protocol("unexpected packet".into()),
                Code::Unavailable,
            ),
            (Error::Tls("handshake failed".into()), Code::Unavailable),
            (Error::PoolClosed, Code::Cancelled),
        ]);
    }

    #[test]
    fn io_errors_are_classified_as_io_errors() {
        let io = |kind| Error::Io(io::Error::from(kind)).code();
        assert_eq!(
            io(io::ErrorKind::ConnectionRefused),
            Some(Code::Unavailable)
        );
        assert_eq!(io(io::ErrorKind::ConnectionReset), Some(Code::Unavailable));
        assert_eq!(io(io::ErrorKind::TimedOut), Some(Code::DeadlineExceeded));
    }

    #[test]
    fn mistakes_in_the_program_are_not_transient() {
        codes_are([
            (Error::RowNotFound, Code::NotFound),
            (
                Error::Configuration("bad url".into()),
                Code::InvalidArgument,
            ),
            (Error::ColumnNotFound("cents".into()), Code::Internal),
            (Error::Decode("not an integer".into()), Code::Internal),
            (
                Error::ColumnIndexOutOfBounds { index: 3, len: 2 },
                Code::Internal,
            ),
        ]);
    }

    /// Asserts each error's code, naming the error that differs.
    fn codes_are<const N: usize>(cases: [(Error, Code); N]) {
        for (error, code) in cases {
            assert_eq!(error.code(), Some(code), "{error:?}");
        }
    }

    #[test]
    fn constraint_violations_by_kind() {
        let kind = |kind: fn() -> ErrorKind| {
            Error::Database(Box::new(Reported {
                state: "23000",
                kind,
            }))
            .code()
        };
        let expected: [(fn() -> ErrorKind, Code); 5] = [
            (|| ErrorKind::UniqueViolation, Code::AlreadyExists),
            (|| ErrorKind::ForeignKeyViolation, Code::FailedPrecondition),
            (|| ErrorKind::NotNullViolation, Code::FailedPrecondition),
            (|| ErrorKind::CheckViolation, Code::FailedPrecondition),
            (|| ErrorKind::ExclusionViolation, Code::FailedPrecondition),
        ];
        for (made, code) in expected {
            assert_eq!(kind(made), Some(code), "{:?}", made());
        }
        assert_eq!(kind(|| ErrorKind::Other), Some(Code::Internal));
    }

    #[test]
    fn transient_database_errors_by_sqlstate() {
        assert_eq!(reported("40001"), Some(Code::Aborted));
        assert_eq!(reported("40P01"), Some(Code::Aborted));
        assert_eq!(reported("57P01"), Some(Code::Unavailable));
        assert_eq!(reported("57P02"), Some(Code::Unavailable));
        assert_eq!(reported("57P03"), Some(Code::Unavailable));
        assert_eq!(reported("53300"), Some(Code::ResourceExhausted));
        assert_eq!(reported("57014"), Some(Code::Cancelled));
        assert_eq!(reported("42601"), Some(Code::Internal));
    }

    #[test]
    fn mysql_error_numbers() {
        assert_eq!(mysql_number(1213), Some(Code::Aborted));
        assert_eq!(mysql_number(1205), Some(Code::Aborted));
        assert_eq!(mysql_number(1040), Some(Code::ResourceExhausted));
        assert_eq!(mysql_number(1064), None);
    }

    #[test]
    fn sqlite_result_codes() {
        assert_eq!(sqlite_result_code(5), Some(Code::Unavailable));
        assert_eq!(sqlite_result_code(5 | (3 << 8)), Some(Code::Unavailable));
        assert_eq!(sqlite_result_code(6), Some(Code::Unavailable));
        assert_eq!(sqlite_result_code(5 | (2 << 8)), Some(Code::Aborted));
        assert_eq!(sqlite_result_code(2067), None);
        assert_eq!(sqlite_result_code(1), None);
    }

    #[test]
    fn timeouts_become_timed_out_io_errors() {
        let error = Error::from_timeout(Elapsed::attempt(Duration::from_secs(1)));
        assert!(matches!(&error, Error::Io(io) if io.kind() == io::ErrorKind::TimedOut));
        assert_eq!(error.code(), Some(Code::DeadlineExceeded));
        assert_eq!(
            error.to_string(),
            "error communicating with database: attempt timeout of 1s elapsed"
        );
    }

    #[test]
    fn an_sqlx_error_is_found_in_a_source_chain() {
        let wrapped = anyhow::Error::new(Error::PoolTimedOut).context("loading the balance");
        assert_eq!(wrapped.code(), Some(Code::Unavailable));
    }
}
