//! `SqliteStore`: the embedded default, a database file beside the service.

use std::{fmt, str::FromStr, sync::Arc, time::Duration};

use sqlx::{
    Row, SqlStr,
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
    },
};

use super::{
    CLAIM_ATTEMPTS, DEFAULT_TABLE, Found, PURGE_BATCH, check_table_name, failed,
    fingerprint_column, index_name, spawn_release, sql, unsettled,
};
use crate::idempotency::{
    Claim, ClaimRequest, FENCED_LEASE, IdempotencyStore, Millis, RecordKey, StoreError, StoreFuture,
};

/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// An idempotency store in a SQLite database: the embedded default, for a
/// service whose replicas share one host (or that has one replica).
///
/// [`connect`](SqliteStore::connect) opens the file in WAL mode (readers do
/// not block the writer), with `synchronous = NORMAL` (a committed claim
/// survives a crash of the process; a power loss may lose the last
/// transactions, as it may lose the in-flight requests themselves) and a
/// 5 s `busy_timeout` for writers that meet each other. Do not put the file
/// on a network file system: SQLite's locks do not hold there.
///
/// # Schema
///
/// Created by [`migrate`](SqliteStore::migrate) (shown for the default table):
///
/// ```sql
/// CREATE TABLE IF NOT EXISTS "steadfast_idempotency" (
///     scope       TEXT    NOT NULL,
///     key_hash    BLOB    NOT NULL,
///     token       INTEGER NOT NULL,
///     fingerprint BLOB,
///     lease_until INTEGER NOT NULL,
///     expires_at  INTEGER NOT NULL,
///     payload     BLOB,
///     PRIMARY KEY (scope, key_hash)
/// );
/// CREATE INDEX IF NOT EXISTS "steadfast_idempotency_expires_at"
///     ON "steadfast_idempotency" (expires_at);
/// ```
///
/// # Statements per operation
///
/// A claim is one `INSERT … ON CONFLICT (scope, key_hash) DO UPDATE … WHERE
/// <takeable> RETURNING token` when it inserts or takes over; when that
/// returns no row, a `SELECT` of the record follows (two statements, both in
/// process). `complete`, `renew` and `release` are one statement each;
/// `purge_expired` one per 1000 rows it deletes, plus one.
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use retry_runtime::idempotency::{Claim, ClaimRequest, IdempotencyStore, RecordKey, SqliteStore};
///
/// // A file: "sqlite:/var/lib/payments/idempotency.db?mode=rwc".
/// let store = SqliteStore::connect("sqlite::memory:").await?;
/// store.migrate().await?;
///
/// let key = RecordKey::new("payments::pay", "order-17")?;
/// let request = ClaimRequest { key: &key, token: 7, fingerprint: None, now: 0, lease_until: 30_000, expires_at: 86_400_000 };
/// assert_eq!(store.claim(&request).await?, Claim::Claimed);
/// assert!(store.complete(&key, 7, b"receipt", 86_400_000).await?);
/// assert!(matches!(store.claim(&ClaimRequest { token: 8, ..request.clone() }).await?, Claim::Completed(_)));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    table: Arc<str>,
    sql: Arc<Statements>,
}

impl SqliteStore {
    /// Opens the database at `url` (`sqlite:path/to/file.db?mode=rwc` creates
    /// the file if missing; `sqlite::memory:` is a database private to this
    /// store, held by a single connection) in WAL mode with `synchronous =
    /// NORMAL` and a 5 s busy timeout. Does not create the table: call
    /// [`migrate`](SqliteStore::migrate).
    pub async fn connect(url: &str) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(failed("invalid SQLite URL"))?
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT);
        // Every connection to an in-memory database opens its own empty
        // database unless shared; one connection, kept open, holds it.
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let pool_options = if in_memory {
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            SqlitePoolOptions::new()
        };
        let pool = pool_options
            .connect_with(options)
            .await
            .map_err(failed("cannot open the SQLite database"))?;
        Ok(SqliteStore::from_pool(pool))
    }

    /// A store over an existing pool, using the table
    /// [`steadfast_idempotency`](super::DEFAULT_TABLE). The pool's own
    /// settings are kept: give it WAL mode and a busy timeout.
    pub fn from_pool(pool: SqlitePool) -> SqliteStore {
        SqliteStore {
            pool,
            table: Arc::from(DEFAULT_TABLE),
            sql: Arc::new(statements(DEFAULT_TABLE)),
        }
    }

    /// The same store over the table `name` (`[A-Za-z_][A-Za-z0-9_]{0,62}`);
    /// an error for any other name.
    pub fn with_table(self, name: &str) -> Result<SqliteStore, StoreError> {
        check_table_name(name)?;
        Ok(SqliteStore {
            pool: self.pool,
            table: Arc::from(name),
            sql: Arc::new(statements(name)),
        })
    }

    /// Creates the table and its index on `expires_at` if they are missing.
    /// Idempotent; concurrent callers wait on each other's write lock.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::query(self.sql.create_table.clone())
            .execute(&self.pool)
            .await
            .map_err(failed("SQLite migrate: create table"))?;
        sqlx::query(self.sql.create_index.clone())
            .execute(&self.pool)
            .await
            .map_err(failed("SQLite migrate: create index"))?;
        Ok(())
    }

    /// The connection pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    async fn claim_record(&self, request: &ClaimRequest<'_>) -> Result<Claim, StoreError> {
        let key = request.key;
        for _ in 0..CLAIM_ATTEMPTS {
            let claimed = sqlx::query(self.sql.claim.clone())
                .bind(key.scope())
                .bind(&key.hash()[..])
                .bind(request.token as i64)
                .bind(fingerprint_column(request.fingerprint.as_ref()))
                .bind(request.lease_until)
                .bind(request.expires_at)
                .bind(request.now)
                .fetch_optional(&self.pool)
                .await
                .map_err(failed("SQLite claim"))?;
            if claimed.is_some() {
                return Ok(Claim::Claimed);
            }
            // A live record is in the way: read it. It may have changed
            // since (released, purged, taken over): then claim again.
            let Some(row) = sqlx::query(self.sql.find.clone())
                .bind(key.scope())
                .bind(&key.hash()[..])
                .fetch_optional(&self.pool)
                .await
                .map_err(failed("SQLite claim: read record"))?
            else {
                continue;
            };
            if let Some(claim) =
                found(&row)?.into_claim(request.token, request.fingerprint.as_ref(), request.now)?
            {
                return Ok(claim);
            }
        }
        Err(unsettled())
    }
}

/// Reads `token, fingerprint, lease_until, expires_at, payload`.
fn found(row: &sqlx::sqlite::SqliteRow) -> Result<Found, StoreError> {
    let read = || -> Result<Found, sqlx::Error> {
        Ok(Found {
            token: row.try_get(0)?,
            fingerprint: row.try_get(1)?,
            lease_until: row.try_get(2)?,
            expires_at: row.try_get(3)?,
            payload: row.try_get(4)?,
        })
    };
    read().map_err(failed("SQLite claim: decode record"))
}

store_operations!(
    SqliteStore,
    SqlitePool,
    "SQLite",
    renew(query, lease_until) => query.bind(lease_until)
);

fence_method!(
    SqliteStore,
    sqlx::SqliteConnection,
    "SQLite",
    "sqlite:ledger.db?mode=rwc"
);

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("table", &self.table)
            .field("pool", &self.pool)
            .finish()
    }
}

/// The statements of one store, built once for its table.
#[derive(Debug)]
struct Statements {
    create_table: SqlStr,
    create_index: SqlStr,
    /// The upsert: `RETURNING` a row iff it inserted or took over.
    claim: SqlStr,
    /// Reads `token, fingerprint, lease_until, expires_at, payload`.
    find: SqlStr,
    complete: SqlStr,
    release: SqlStr,
    renew: SqlStr,
    purge: SqlStr,
    /// Fences the claim under `token` (see `fence`).
    fence: SqlStr,
    /// Reads `lease_until` of the claim under `token`.
    fenced: SqlStr,
}

/// The statements for `table` (validated, or the default).
fn statements(table: &str) -> Statements {
    let index = index_name(table);
    Statements {
        create_table: sql(format!(
            r#"CREATE TABLE IF NOT EXISTS "{table}" (
    scope TEXT NOT NULL,
    key_hash BLOB NOT NULL,
    token INTEGER NOT NULL,
    fingerprint BLOB,
    lease_until INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    payload BLOB,
    PRIMARY KEY (scope, key_hash)
)"#
        )),
        create_index: sql(format!(
            r#"CREATE INDEX IF NOT EXISTS "{index}" ON "{table}" (expires_at)"#
        )),
        claim: sql(format!(
            r#"INSERT INTO "{table}" (scope, key_hash, token, fingerprint, lease_until, expires_at, payload)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL)
ON CONFLICT (scope, key_hash) DO UPDATE SET
    token = excluded.token,
    fingerprint = excluded.fingerprint,
    lease_until = excluded.lease_until,
    expires_at = excluded.expires_at,
    payload = NULL
WHERE "{table}".expires_at <= ?7 OR (
    "{table}".payload IS NULL AND "{table}".lease_until <= ?7
    AND ("{table}".fingerprint IS NULL OR excluded.fingerprint IS NULL OR "{table}".fingerprint = excluded.fingerprint)
)
RETURNING token"#
        )),
        find: sql(format!(
            r#"SELECT token, fingerprint, lease_until, expires_at, payload FROM "{table}" WHERE scope = ?1 AND key_hash = ?2"#
        )),
        complete: sql(format!(
            r#"UPDATE "{table}" SET payload = ?1, expires_at = ?2
WHERE scope = ?3 AND key_hash = ?4 AND token = ?5 AND payload IS NULL"#
        )),
        release: sql(format!(
            r#"DELETE FROM "{table}" WHERE scope = ?1 AND key_hash = ?2 AND token = ?3 AND payload IS NULL AND lease_until < {FENCED_LEASE}"#
        )),
        renew: sql(format!(
            r#"UPDATE "{table}" SET lease_until = ?1, expires_at = MAX(expires_at, ?1)
WHERE scope = ?2 AND key_hash = ?3 AND token = ?4 AND payload IS NULL AND lease_until < {FENCED_LEASE}"#
        )),
        purge: sql(format!(
            r#"DELETE FROM "{table}" WHERE rowid IN (
    SELECT rowid FROM "{table}" WHERE expires_at <= ?1 LIMIT {PURGE_BATCH}
)"#
        )),
        fence: sql(format!(
            r#"UPDATE "{table}" SET lease_until = {FENCED_LEASE}
WHERE scope = ?1 AND key_hash = ?2 AND token = ?3 AND payload IS NULL AND lease_until < {FENCED_LEASE}"#
        )),
        fenced: sql(format!(
            r#"SELECT lease_until FROM "{table}" WHERE scope = ?1 AND key_hash = ?2 AND token = ?3 AND payload IS NULL"#
        )),
    }
}
