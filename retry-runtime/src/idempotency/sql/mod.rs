//! SQL stores: [`SqliteStore`], [`PostgresStore`] and [`MySqlStore`], through
//! sqlx, each behind the feature of its name.
//!
//! # Schema
//!
//! One table (by default `steadfast_idempotency`, see
//! [`DEFAULT_TABLE`]) with the same columns on every database:
//!
//! | column | SQLite | PostgreSQL | MySQL/MariaDB | meaning |
//! |---|---|---|---|---|
//! | `scope` | `TEXT` | `TEXT` | `VARCHAR(255)` (`utf8mb4_bin`) | the record key's scope |
//! | `key_hash` | `BLOB` | `BYTEA` | `VARBINARY(32)` | SHA-256 of scope and client key |
//! | `token` | `INTEGER` | `BIGINT` | `BIGINT` | the owner's fencing token |
//! | `fingerprint` | `BLOB` | `BYTEA` | `VARBINARY(32)` | the request's fingerprint, or `NULL` |
//! | `lease_until` | `INTEGER` | `BIGINT` | `BIGINT` | ms since the epoch: the claim lapses then |
//! | `expires_at` | `INTEGER` | `BIGINT` | `BIGINT` | ms since the epoch: the record expires then |
//! | `payload` | `BLOB` | `BYTEA` | `LONGBLOB` | the stored result; `NULL` while in progress |
//!
//! The primary key is `(scope, key_hash)`: the unique constraint every claim
//! relies on. An index on `expires_at` serves
//! [`purge_expired`](super::IdempotencyStore::purge_expired).
//!
//! # Operations
//!
//! A record is *expired* at `now` when `expires_at <= now`: its TTL has
//! ended, and any claim takes it over, whatever its payload. A claim with
//! fingerprint `f` also takes over a claim whose lease lapsed
//! (`payload IS NULL AND lease_until <= now`) unless both fingerprints are
//! known and differ: a lapsed claim keeps its key from another payload until
//! its TTL ends. Every time is the caller's `now`, never the database's clock.
//!
//! - `claim` reads the record first, with a plain read on the primary key
//!   that takes no lock and writes nothing, and reports it when it may not
//!   take it: a replay, or a duplicate of a claim in progress, only reads.
//!   A missing record is inserted and a takeable one taken over by a
//!   conditional write on the primary key, whose condition is rechecked on
//!   the record's latest version (PostgreSQL: all of it in one statement;
//!   SQLite and MySQL: an `INSERT … ON CONFLICT … DO UPDATE … WHERE
//!   <takeable>` or `ON DUPLICATE KEY UPDATE` after the read); a record it
//!   may not take is read back and reported.
//! - `complete`, `renew` and `release` act only on `token = ? AND payload IS
//!   NULL` (fencing) and report whether a row matched. `renew` also raises
//!   `expires_at` to at least the new `lease_until`, so that a claim being
//!   renewed never expires; `complete` sets `expires_at` to the result's
//!   TTL, counted from completion.
//! - `purge_expired` deletes expired rows, `expires_at <= now`, in batches
//!   of `PURGE_BATCH` rows (each its own short statement, so that concurrent
//!   `complete`s never wait long on its locks), served by the index on
//!   `expires_at`. That one column says it all: a claim's `expires_at` is
//!   never below its `lease_until` (set so at claim time, TTL > lease, and
//!   kept so by `renew`; a fenced claim ends with its TTL), so a claim being
//!   renewed is never purged, and a lapsed claim is kept until its TTL ends
//!   like any record, because it still refuses other payloads.
//!
//! All values are bound parameters; the only text spliced into SQL is the
//! table name, validated by [`with_table`](SqlStore::with_table).
//!
//! # One algorithm, three databases
//!
//! [`SqlStore`] (`store.rs`) runs every operation above once, for any
//! database that implements [`SqlBackend`] (`backend.rs`): sqlx's `Sqlite`,
//! `Postgres` and `MySql`, in `sqlite.rs`, `postgres.rs` and `mysql.rs`,
//! each giving only its statements for a table, its claim statement (bound
//! and read as that database needs), its `migrate` and its rows affected,
//! the way each sqlx database gives `Migrate` to the one `Migrator::run`.
//! [`SqliteStore`], [`PostgresStore`] and [`MySqlStore`] are its three
//! instances.

mod backend;
#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;
mod store;
mod transaction;

use std::sync::Arc;

#[cfg(feature = "sqlite")]
use backend::Run;
#[cfg(any(feature = "sqlite", feature = "mysql"))]
use backend::Upsert;
#[cfg(feature = "postgres")]
use backend::bound;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
use backend::claim_binds;
pub use backend::{ACQUIRE_TIMEOUT, SqlBackend};
use backend::{Attempt, Bind, Statements};
#[cfg(feature = "mysql")]
pub use mysql::MySqlStore;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;
use sqlx::{AssertSqlSafe, SqlSafeStr, SqlStr};
pub use store::SqlStore;
pub use transaction::BodyTransaction;
pub(crate) use transaction::in_transaction;

use super::{Claim, Fingerprint, Millis, StoreError, StoredResult};

/// The table SQL stores use unless given another with `with_table`.
pub const DEFAULT_TABLE: &str = "steadfast_idempotency";

/// How many expired rows one statement of `purge_expired` deletes at most.
const PURGE_BATCH: u64 = 1_000;

/// How many times a claim statement runs before giving up, when concurrent
/// writers keep changing the record between its steps (each retry follows a
/// change by another caller, so this bound is only reached under a storm).
const CLAIM_ATTEMPTS: usize = 8;

/// Checks a table name: `[A-Za-z_][A-Za-z0-9_]{0,62}`, so that it can be
/// spliced into SQL (quoted) on every database.
fn check_table_name(name: &str) -> Result<(), StoreError> {
    let mut bytes = name.bytes();
    let valid = name.len() <= 63
        && bytes
            .next()
            .is_some_and(|first| first.is_ascii_alphabetic() || first == b'_')
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || byte == b'_');
    if valid {
        Ok(())
    } else {
        Err(StoreError::msg(format!(
            "invalid table name {name:?}: expected 1 to 63 ASCII letters, digits or underscores, not starting with a digit"
        )))
    }
}

/// The name of the table's index on `expires_at`: `<table>_expires_at`,
/// shortened with a hash of the table name to fit PostgreSQL's 63 bytes
/// (index names share a namespace with tables there and in SQLite).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn index_name(table: &str) -> String {
    use sha2::{Digest, Sha256};

    const SUFFIX: &str = "_expires_at";
    if table.len() + SUFFIX.len() <= 63 {
        return format!("{table}{SUFFIX}");
    }
    let digest = Sha256::digest(table.as_bytes());
    let tag: String = digest[..4]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    // 43 + 1 + 8 + 11 = 63 bytes; the name is ASCII, so any cut is a char boundary.
    format!("{}_{tag}{SUFFIX}", &table[..43])
}

/// SQL text built once per store (the table name is fixed), cheap to clone
/// into each query.
fn sql(text: String) -> SqlStr {
    AssertSqlSafe(Arc::<str>::from(text)).into_sql_str()
}

/// A record read back by a claim that did not take it.
#[derive(Debug)]
pub struct Found {
    token: i64,
    fingerprint: Option<Vec<u8>>,
    lease_until: Millis,
    expires_at: Millis,
    payload: Option<Vec<u8>>,
}

impl Found {
    /// What a claim at `now` with `token` and `fingerprint` reports for
    /// this record; `None` when the claim may take it over (it changed since
    /// the claim statement looked, or was read from an older snapshot):
    /// claim again.
    fn into_claim(
        self,
        token: u64,
        fingerprint: Option<&Fingerprint>,
        now: Millis,
    ) -> Result<Option<Claim>, StoreError> {
        if self.is_ours(token) {
            return Ok(Some(Claim::Claimed));
        }
        if self.takeable(fingerprint, now) {
            return Ok(None);
        }
        let fingerprint = self
            .fingerprint
            .map(|bytes| Fingerprint::from_stored(&bytes))
            .transpose()?;
        Ok(Some(match self.payload {
            Some(payload) => Claim::Completed(StoredResult {
                fingerprint,
                payload,
            }),
            None => Claim::InProgress {
                lease_until: self.lease_until,
                fingerprint,
            },
        }))
    }
}

impl Found {
    /// Whether this is the claim under `token`.
    fn is_ours(&self, token: u64) -> bool {
        self.token == token as i64 && self.payload.is_none()
    }

    /// Whether a claim at `now` with `fingerprint` may take this record
    /// over: expired, or a lapsed claim whose fingerprint does not differ.
    fn takeable(&self, fingerprint: Option<&Fingerprint>, now: Millis) -> bool {
        let differs = matches!(
            (&self.fingerprint, fingerprint),
            (Some(theirs), Some(ours)) if theirs[..] != ours.0[..]
        );
        self.expires_at <= now || (self.payload.is_none() && self.lease_until <= now && !differs)
    }

    /// Whether a claim with `request` is answered by this record alone,
    /// without a write: the record is not takeable (a result to replay, a
    /// live claim, a lapsed claim of another payload), or is ours.
    #[cfg(any(feature = "sqlite", feature = "mysql"))]
    fn settles(&self, request: &super::ClaimRequest<'_>) -> bool {
        self.is_ours(request.token) || !self.takeable(request.fingerprint.as_ref(), request.now)
    }
}

/// A fingerprint as a column value.
fn fingerprint_column(fingerprint: Option<&Fingerprint>) -> Option<&[u8]> {
    fingerprint.map(|fingerprint| &fingerprint.0[..])
}

/// Wraps an sqlx error with what the store was doing.
fn failed(what: impl Into<String>) -> impl FnOnce(sqlx::Error) -> StoreError {
    let what = what.into();
    move |error| StoreError::new(what, error)
}

/// The error of a claim that did not settle in [`CLAIM_ATTEMPTS`] attempts.
fn unsettled() -> StoreError {
    StoreError::msg(format!(
        "claim did not settle after {CLAIM_ATTEMPTS} attempts: the record kept changing under concurrent writers"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names() {
        for name in ["t", "_", "steadfast_idempotency", "T_1", &"a".repeat(63)] {
            assert!(check_table_name(name).is_ok(), "{name}");
        }
        for name in [
            "",
            "1t",
            "a-b",
            "a b",
            "t;drop",
            "\"t\"",
            "é",
            &"a".repeat(64),
        ] {
            assert!(check_table_name(name).is_err(), "{name}");
        }
    }

    #[test]
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    fn index_names_fit_postgres() {
        assert_eq!(
            index_name(DEFAULT_TABLE),
            "steadfast_idempotency_expires_at"
        );
        let long = "a".repeat(63);
        let index = index_name(&long);
        assert_eq!(index.len(), 63);
        assert!(
            index.starts_with(&long[..43]) && index.ends_with("_expires_at"),
            "{index}"
        );
        assert_ne!(index, long, "the index must not take the table's name");
        assert_ne!(index, index_name(&("a".repeat(62) + "b")));
    }
}
