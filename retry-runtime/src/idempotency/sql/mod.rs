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
//! - `claim` inserts the record, or takes over one it may take, in one
//!   conditional statement on the primary key (`INSERT … ON CONFLICT … DO
//!   UPDATE … WHERE <takeable>` or MySQL's `ON DUPLICATE KEY UPDATE`); a
//!   record it may not take is read back and reported.
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
//! table name, validated by [`with_table`](SqliteStore::with_table).

/// The operations that act under a claim's token, the same statements' shape
/// on every database: `release` (also detached), `complete`, `renew`,
/// `purge_expired`, and the `IdempotencyStore` impl of `$store` over a
/// `$pool`, whose `claim` is the store's own `claim_record`. `renew` binds
/// the new `lease_until` as the database's statement needs it (MySQL's `?`
/// cannot be referred to twice).
macro_rules! store_operations {
    (
        $store:ident,
        $pool:ty,
        $database:literal,
        renew($query:ident, $lease_until:ident) => $bind_lease:expr
    ) => {
        async fn release(
            pool: &$pool,
            sql: &Statements,
            key: &RecordKey,
            token: u64,
        ) -> Result<bool, StoreError> {
            let done = sqlx::query(sql.release.clone())
                .bind(key.scope())
                .bind(&key.hash()[..])
                .bind(token as i64)
                .execute(pool)
                .await
                .map_err(failed(concat!($database, " release")))?;
            Ok(done.rows_affected() == 1)
        }

        impl IdempotencyStore for $store {
            fn claim<'a>(&'a self, request: &'a ClaimRequest<'a>) -> StoreFuture<'a, Claim> {
                Box::pin(self.claim_record(request))
            }

            fn complete<'a>(
                &'a self,
                key: &'a RecordKey,
                token: u64,
                payload: &'a [u8],
                expires_at: Millis,
            ) -> StoreFuture<'a, bool> {
                Box::pin(async move {
                    let done = sqlx::query(self.sql.complete.clone())
                        .bind(payload)
                        .bind(expires_at)
                        .bind(key.scope())
                        .bind(&key.hash()[..])
                        .bind(token as i64)
                        .execute(&self.pool)
                        .await
                        .map_err(failed(concat!($database, " complete")))?;
                    Ok(done.rows_affected() == 1)
                })
            }

            fn release<'a>(&'a self, key: &'a RecordKey, token: u64) -> StoreFuture<'a, bool> {
                Box::pin(release(&self.pool, &self.sql, key, token))
            }

            fn renew<'a>(
                &'a self,
                key: &'a RecordKey,
                token: u64,
                lease_until: Millis,
            ) -> StoreFuture<'a, bool> {
                Box::pin(async move {
                    // MySQL: sqlx connects with CLIENT_FOUND_ROWS, so a row
                    // that matched counts even when its lease is unchanged.
                    let $query = sqlx::query(self.sql.renew.clone());
                    let $lease_until = lease_until;
                    let done = $bind_lease
                        .bind(key.scope())
                        .bind(&key.hash()[..])
                        .bind(token as i64)
                        .execute(&self.pool)
                        .await
                        .map_err(failed(concat!($database, " renew")))?;
                    Ok(done.rows_affected() == 1)
                })
            }

            /// Deletes up to 1000 expired rows at a time, each batch
            /// its own statement (and transaction), until a batch finds
            /// fewer: no lock is held longer than one batch takes.
            fn purge_expired(&self, now: Millis) -> StoreFuture<'_, u64> {
                Box::pin(async move {
                    let mut purged = 0;
                    loop {
                        let done = sqlx::query(self.sql.purge.clone())
                            .bind(now)
                            .execute(&self.pool)
                            .await
                            .map_err(failed(concat!($database, " purge")))?;
                        purged += done.rows_affected();
                        if done.rows_affected() < super::PURGE_BATCH {
                            return Ok(purged);
                        }
                    }
                })
            }

            /// Spawns the release on the current tokio runtime (nothing
            /// without one: the claim then lapses with its lease).
            fn release_detached(&self, key: RecordKey, token: u64) {
                let (pool, sql) = (self.pool.clone(), Arc::clone(&self.sql));
                spawn_release(async move { release(&pool, &sql, &key, token).await });
            }

            /// A clone: the pool is shared.
            fn shared(&self) -> Option<Arc<dyn IdempotencyStore>> {
                Some(Arc::new(self.clone()))
            }

            /// Its statements, shared by its clones.
            fn identity(&self) -> usize {
                Arc::as_ptr(&self.sql).cast::<()>() as usize
            }
        }
    };
}

/// `fence` for one SQL store: `$store` over connections `$connection`.
macro_rules! fence_method {
    ($store:ident, $connection:ty, $database:literal, $example_url:literal) => {
        impl $store {
            /// Fences the current idempotent body's claim inside the
            /// transaction (or on the connection) `connection`, which must
            /// reach the same database as this store: call it in the
            /// transaction that makes the body's effects, just before
            /// `COMMIT`. The effects and the fence then commit together or
            /// not at all, and once committed, no retry runs the body again,
            /// even if this process dies before the result is stored
            /// (duplicates get `InProgress` until the record's TTL).
            ///
            /// Fails with `LeaseLost` if the claim was taken over (roll the
            /// transaction back), and with a `Store` error outside an
            /// idempotent body or if the statement fails. Calling it twice
            /// in one body is fine.
            ///
            /// ```no_run
            #[doc = concat!("use retry_runtime::idempotency::{Idempotency, IdempotencyError, ", stringify!($store), "};")]
            /// # async fn example() -> Result<(), IdempotencyError> {
            #[doc = concat!("let store = ", stringify!($store), "::connect(\"", $example_url, "\").await.map_err(IdempotencyError::Store)?;")]
            /// let receipt: Result<u64, IdempotencyError> = Idempotency::new(&store)
            ///     .key("payment-42")
            ///     .run(|| async {
            ///         let failed = |error| IdempotencyError::Store(retry_runtime::idempotency::StoreError::new("ledger", error));
            ///         let mut tx = store.pool().begin().await.map_err(failed)?;
            ///         sqlx::query("UPDATE accounts SET cents = cents - 500 WHERE id = 1")
            ///             .execute(&mut *tx)
            ///             .await
            ///             .map_err(failed)?;
            ///         store.fence(&mut *tx).await?;
            ///         tx.commit().await.map_err(failed)?;
            ///         Ok(500)
            ///     })
            ///     .await;
            /// # Ok(())
            /// # }
            /// ```
            pub async fn fence(
                &self,
                connection: &mut $connection,
            ) -> Result<(), crate::idempotency::IdempotencyError> {
                use crate::idempotency::{FENCED_LEASE, IdempotencyError, current_claim};

                let claim = current_claim().ok_or_else(|| {
                    IdempotencyError::Store(StoreError::msg(
                        "fence called outside an idempotent body: there is no claim to fence",
                    ))
                })?;
                let key = claim.record_key();
                let failed =
                    |error| IdempotencyError::Store(StoreError::new(concat!($database, " fence"), error));
                let done = sqlx::query(self.sql.fence.clone())
                    .bind(key.scope())
                    .bind(&key.hash()[..])
                    .bind(claim.token() as i64)
                    .execute(&mut *connection)
                    .await
                    .map_err(failed)?;
                let fenced = done.rows_affected() == 1 || {
                    // Nothing changed: fenced already (by this body), or not ours.
                    let lease: Option<i64> = sqlx::query_scalar(self.sql.fenced.clone())
                        .bind(key.scope())
                        .bind(&key.hash()[..])
                        .bind(claim.token() as i64)
                        .fetch_optional(&mut *connection)
                        .await
                        .map_err(failed)?;
                    lease == Some(FENCED_LEASE)
                };
                if fenced {
                    claim.mark_fenced();
                    Ok(())
                } else {
                    Err(IdempotencyError::LeaseLost)
                }
            }
        }
    };
}

#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::sync::Arc;

#[cfg(feature = "mysql")]
pub use mysql::MySqlStore;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;
use sqlx::{AssertSqlSafe, SqlSafeStr, SqlStr};

use super::{Claim, Fingerprint, Millis, StoreError, StoredResult, store::spawn_release};

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
struct Found {
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
        if self.token == token as i64 && self.payload.is_none() {
            return Ok(Some(Claim::Claimed));
        }
        let differs = matches!(
            (&self.fingerprint, fingerprint),
            (Some(theirs), Some(ours)) if theirs[..] != ours.0[..]
        );
        let takeable = self.expires_at <= now
            || (self.payload.is_none() && self.lease_until <= now && !differs);
        if takeable {
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

/// A fingerprint as a column value.
fn fingerprint_column(fingerprint: Option<&Fingerprint>) -> Option<&[u8]> {
    fingerprint.map(|fingerprint| &fingerprint.0[..])
}

/// Wraps an sqlx error with what the store was doing.
fn failed(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
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
