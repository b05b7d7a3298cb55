//! Where the demo keeps its money and its idempotency records: one database
//! for both, named by the `--store` flag.

use std::{fmt, path::PathBuf, str::FromStr};

/// The database of a run: the idempotency store and the ledger's tables
/// live in it side by side (in-process maps for [`Backend::Memory`]).
///
/// ```
/// use steadfast_payments::Backend;
///
/// assert_eq!("memory".parse::<Backend>().unwrap(), Backend::Memory);
/// assert!(matches!("sqlite:/tmp/ledger.db".parse(), Ok(Backend::Sqlite(_))));
/// assert!(matches!("postgres://postgres@127.0.0.1/test".parse(), Ok(Backend::Postgres(_))));
/// assert!("redis://127.0.0.1".parse::<Backend>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// In-process maps, shared by the replicas of one process.
    Memory,
    /// A SQLite file (created if missing), opened by every replica.
    Sqlite(PathBuf),
    /// A PostgreSQL URL (`postgres://…` or `postgresql://…`).
    Postgres(String),
    /// A MySQL or MariaDB URL (`mysql://…` or `mariadb://…`).
    MySql(String),
}

impl Backend {
    /// A short name for summaries: `memory`, `sqlite`, `postgres`, `mysql`.
    pub fn kind(&self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
            Backend::MySql(_) => "mysql",
        }
    }

    /// The sqlx URL of a SQLite file, created if missing.
    /// The store as `--store` takes it, with its password: what a parent
    /// passes to the replicas it starts as processes (`Display` hides the
    /// password).
    ///
    /// ```
    /// use steadfast_payments::Backend;
    ///
    /// let backend: Backend = "postgres://u:secret@h/db".parse().unwrap();
    /// assert_eq!(backend.flag(), "postgres://u:secret@h/db");
    /// assert_eq!(backend.flag().parse::<Backend>(), Ok(backend));
    /// ```
    pub fn flag(&self) -> String {
        match self {
            Backend::Memory => "memory".to_owned(),
            Backend::Sqlite(path) => format!("sqlite:{}", path.display()),
            Backend::Postgres(url) | Backend::MySql(url) => url.clone(),
        }
    }

    pub(crate) fn sqlite_url(path: &std::path::Path) -> String {
        format!("sqlite:{}?mode=rwc", path.display())
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backend::Memory => f.write_str("memory"),
            Backend::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            // URLs may carry a password: show the scheme and host only.
            Backend::Postgres(url) | Backend::MySql(url) => f.write_str(&redact(url)),
        }
    }
}

/// `scheme://user:secret@host/db` without the secret.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((user, host)) => {
            let user = user.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}@{host}")
        }
        None => url.to_owned(),
    }
}

/// A `--store` value that names no known database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownBackend(String);

impl fmt::Display for UnknownBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown store {:?}: expected memory, sqlite:PATH, postgres://… or mysql://…",
            self.0
        )
    }
}

impl std::error::Error for UnknownBackend {}

impl FromStr for Backend {
    type Err = UnknownBackend;

    fn from_str(text: &str) -> Result<Backend, UnknownBackend> {
        if text == "memory" {
            Ok(Backend::Memory)
        } else if let Some(path) = text.strip_prefix("sqlite:") {
            let path = path.trim_start_matches("//");
            if path.is_empty() {
                return Err(UnknownBackend(text.to_owned()));
            }
            Ok(Backend::Sqlite(PathBuf::from(path)))
        } else if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Ok(Backend::Postgres(text.to_owned()))
        } else if text.starts_with("mysql://") || text.starts_with("mariadb://") {
            Ok(Backend::MySql(text.replacen("mariadb://", "mysql://", 1)))
        } else {
            Err(UnknownBackend(text.to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(
            "sqlite:ledger.db".parse(),
            Ok(Backend::Sqlite("ledger.db".into()))
        );
        assert_eq!(
            "sqlite:///tmp/x.db".parse(),
            Ok(Backend::Sqlite("/tmp/x.db".into()))
        );
        assert_eq!(
            "mariadb://root@h/test".parse(),
            Ok(Backend::MySql("mysql://root@h/test".into()))
        );
        assert!("sqlite:".parse::<Backend>().is_err());
        assert!("".parse::<Backend>().is_err());
    }

    #[test]
    fn display_hides_passwords() {
        let backend: Backend = "postgres://app:hunter2@db:5432/pay".parse().unwrap();
        assert_eq!(backend.to_string(), "postgres://app@db:5432/pay");
    }
}
