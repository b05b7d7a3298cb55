//! `SqliteStore`: the embedded default, a database file beside the service.

use std::{str::FromStr, time::Duration};

use sqlx::{
    Pool, Sqlite, SqliteConnection,
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult,
        SqliteSynchronous,
    },
};

use super::{
    Attempt, PURGE_BATCH, Run, SqlBackend, SqlStore, Statements, Upsert, claim_binds, failed,
    index_name, sql,
};
use crate::idempotency::{ClaimRequest, FENCED_LEASE, StoreError};

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
/// A claim first reads the record (`SELECT`, a read transaction: no write
/// lock), which answers a replay, or a duplicate of a claim in progress, by
/// itself, so replays never wait for writers nor hold them up. Only a
/// missing or takeable record goes on to one `INSERT … ON CONFLICT
/// (scope, key_hash) DO UPDATE … WHERE <takeable> RETURNING token`; when
/// that returns no row (a record written since the read), the `SELECT`
/// again. All statements run in process. `complete`, `renew` and `release`
/// are one statement each;
/// `purge_expired` one per 1000 rows it deletes, plus one.
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use steadfast::idempotency::{Claim, ClaimRequest, Completion, IdempotencyStore, RecordKey, SqliteStore};
///
/// // A file: "sqlite:/var/lib/payments/idempotency.db?mode=rwc".
/// let store = SqliteStore::connect("sqlite::memory:").await?;
/// store.migrate().await?;
///
/// let key = RecordKey::new("payments::pay", "order-17")?;
/// let request = ClaimRequest { key: &key, token: 7, fingerprint: None, now: 0, lease_until: 30_000, expires_at: 86_400_000 };
/// assert_eq!(store.claim(&request).await?, Claim::Claimed);
/// let receipt = Completion { key: &key, token: 7, payload: b"receipt", expires_at: 86_400_000 };
/// assert!(store.complete(receipt).await?);
/// assert!(matches!(store.claim(&ClaimRequest { token: 8, ..request.clone() }).await?, Claim::Completed(_)));
/// # Ok(())
/// # }
/// ```
pub type SqliteStore = SqlStore<Sqlite>;

impl SqlBackend for Sqlite {
    type Claim = Upsert;

    fn statements(table: &str) -> Statements<Sqlite> {
        statements(table)
    }

    /// Opens the database at `url` (`sqlite:path/to/file.db?mode=rwc`
    /// creates the file if missing; `sqlite::memory:` is a database private
    /// to this store, held by a single connection) in WAL mode with
    /// `synchronous = NORMAL` and a 5 s busy timeout.
    async fn connect(url: &str) -> Result<Pool<Sqlite>, StoreError> {
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
        pool_options
            .connect_with(options)
            .await
            .map_err(failed("cannot open the SQLite database"))
    }

    /// Creates the table and its index; concurrent callers wait on each
    /// other's write lock.
    async fn migrate(
        pool: &Pool<Sqlite>,
        sql: &Statements<Sqlite>,
        _table: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(sql.create_table.clone())
            .execute(pool)
            .await
            .map_err(failed("SQLite migrate: create table"))?;
        sqlx::query(sql.create_index.clone())
            .execute(pool)
            .await
            .map_err(failed("SQLite migrate: create index"))?;
        Ok(())
    }

    /// A read of the record, which answers by itself unless the record is
    /// missing or takeable; then the upsert `RETURNING` a row iff it
    /// inserted or took over, else the record in the way.
    async fn claim(
        connection: &mut SqliteConnection,
        claim: &Upsert,
        request: &ClaimRequest<'_>,
    ) -> Result<Attempt, StoreError> {
        if let Some(found) = claim.read_first::<Sqlite>(connection, request).await? {
            return Ok(found);
        }
        let binds = claim_binds(request);
        let claimed = Sqlite::fetch_i64(connection, claim.upsert.clone(), &binds)
            .await
            .map_err(failed("SQLite claim"))?;
        if claimed.is_some() {
            return Ok(Attempt::Claimed);
        }
        claim.read::<Sqlite>(connection, request.key).await
    }

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }
}

/// The statements for `table` (validated, or the default).
fn statements(table: &str) -> Statements<Sqlite> {
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
        claim: Upsert {
            upsert: sql(format!(
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
        },
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
            r#"UPDATE "{table}" SET lease_until = ?1
WHERE scope = ?2 AND key_hash = ?3 AND token = ?4 AND payload IS NULL AND lease_until < {FENCED_LEASE}"#
        )),
        fenced: sql(format!(
            r#"SELECT lease_until FROM "{table}" WHERE scope = ?1 AND key_hash = ?2 AND token = ?3 AND payload IS NULL"#
        )),
    }
}
