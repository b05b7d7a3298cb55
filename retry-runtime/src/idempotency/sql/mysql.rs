//! `MySqlStore`: records in MySQL or MariaDB, shared by every replica.

use std::{fmt, sync::Arc};

use sqlx::{
    Row, SqlStr,
    mysql::{MySqlPool, MySqlPoolOptions, MySqlRow},
};

use super::{
    CLAIM_ATTEMPTS, DEFAULT_TABLE, Found, PURGE_BATCH, check_table_name, failed,
    fingerprint_column, spawn_release, sql, unsettled,
};
use crate::idempotency::{
    Claim, ClaimRequest, FENCED_LEASE, IdempotencyStore, Millis, RecordKey, StoreError, StoreFuture,
};

/// What the claim statement leaves in `LAST_INSERT_ID`, reported in the
/// server's answer, when it inserted the record (`3` in the statement).
const INSERTED: u64 = 3;
/// The same when it took over an expired record or lapsed claim (`2` in the statement;
/// `1` when it found a live record and left it alone).
const TAKEN_OVER: u64 = 2;

/// MySQL's error number for an index name the table already has.
const ER_DUP_KEYNAME: u16 = 1061;

/// An idempotency store in MySQL (8.0 or later) or MariaDB (10.5 or later;
/// tested on 10.11), with InnoDB.
///
/// # Schema
///
/// Created by [`migrate`](MySqlStore::migrate) (shown for the default table):
///
/// ```sql
/// CREATE TABLE IF NOT EXISTS `steadfast_idempotency` (
///     scope       VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
///     key_hash    VARBINARY(32) NOT NULL,
///     token       BIGINT NOT NULL,
///     fingerprint VARBINARY(32) NULL,
///     lease_until BIGINT NOT NULL,
///     expires_at  BIGINT NOT NULL,
///     payload     LONGBLOB NULL,
///     PRIMARY KEY (scope, key_hash),
///     INDEX expires_at_index (expires_at)
/// ) ENGINE = InnoDB
/// ```
///
/// Scopes are limited to 255 characters here (a claim with a longer scope
/// fails in strict SQL mode), and a stored result to the server's
/// `max_allowed_packet` (16 MiB by default on MariaDB, 64 MiB on MySQL).
///
/// # Round trips
///
/// MySQL has neither `RETURNING` on upserts nor data-modifying `WITH`, and
/// `INSERT IGNORE` would hide real errors (a truncated scope, a bad value)
/// as well as the duplicate. A claim is one `INSERT … ON DUPLICATE KEY
/// UPDATE` whose update takes over the record only if it may (see the
/// module docs: expired, or a lapsed claim whose fingerprint does not differ).
/// The condition is evaluated once, in the first assignment, before any
/// column changes (MySQL assigns left to right, and later expressions see
/// earlier assignments); its outcome is kept in `LAST_INSERT_ID(expr)`,
/// which the later assignments read and which the server reports back with
/// the affected rows. So a claim that inserts or takes over the record is
/// one round trip; a claim that finds a live record (a replay, a duplicate
/// in progress) reads it with a second `SELECT`, two round trips. If the
/// server's answer is anything other than "inserted" or "taken over", the
/// claim trusts only the `SELECT`: the record is ours if and only if it
/// holds our token. `complete`, `renew` and `release` are one round trip
/// each (`purge_expired` one per 1000 rows it deletes, plus one): a fresh
/// request costs two round trips, a replay two.
/// (These counts are for the pool of [`connect`](MySqlStore::connect); a
/// pool that pings each connection before use, sqlx's default, adds a
/// round trip to every operation.)
///
/// # Example
///
/// ```no_run
/// # async fn example() -> Result<(), retry_runtime::idempotency::StoreError> {
/// use retry_runtime::idempotency::MySqlStore;
///
/// let store = MySqlStore::connect("mysql://app@db.internal/payments").await?;
/// store.migrate().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct MySqlStore {
    pool: MySqlPool,
    table: Arc<str>,
    sql: Arc<Statements>,
}

impl MySqlStore {
    /// Connects a pool to the database at `url`: sqlx's defaults, except
    /// that a connection is not pinged before each use
    /// (`test_before_acquire(false)`), which would double the round trips of
    /// every operation. sqlx still pings each connection when it goes back
    /// to the pool, off the request's path, and drops it if broken; a
    /// connection that breaks while idle fails the next operation, which
    /// fails closed (the client retries). Does not
    /// create the table: call [`migrate`](MySqlStore::migrate).
    pub async fn connect(url: &str) -> Result<MySqlStore, StoreError> {
        let pool = MySqlPoolOptions::new()
            .test_before_acquire(false)
            .connect(url)
            .await
            .map_err(failed("cannot connect to MySQL"))?;
        Ok(MySqlStore::from_pool(pool))
    }

    /// A store over an existing pool, using the table
    /// [`steadfast_idempotency`](super::DEFAULT_TABLE).
    pub fn from_pool(pool: MySqlPool) -> MySqlStore {
        MySqlStore {
            pool,
            table: Arc::from(DEFAULT_TABLE),
            sql: Arc::new(statements(DEFAULT_TABLE)),
        }
    }

    /// The same store over the table `name` (`[A-Za-z_][A-Za-z0-9_]{0,62}`);
    /// an error for any other name.
    pub fn with_table(self, name: &str) -> Result<MySqlStore, StoreError> {
        check_table_name(name)?;
        Ok(MySqlStore {
            pool: self.pool,
            table: Arc::from(name),
            sql: Arc::new(statements(name)),
        })
    }

    /// Creates the table, with its index on `expires_at`, if it is missing,
    /// and the index if the table lacks it (a table made by an older
    /// version). Idempotent, and safe to run from several replicas at once:
    /// the server serializes the DDL under a metadata lock, and an index
    /// that another replica created in the meantime counts as created.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::query(self.sql.create_table.clone())
            .execute(&self.pool)
            .await
            .map_err(failed("MySQL migrate: create table"))?;
        // MySQL has no `CREATE INDEX IF NOT EXISTS` (MariaDB has): look first.
        let indexed: i64 = sqlx::query_scalar(self.sql.find_index.clone())
            .bind(&*self.table)
            .fetch_one(&self.pool)
            .await
            .map_err(failed("MySQL migrate: find index"))?;
        if indexed == 0 {
            match sqlx::query(self.sql.create_index.clone())
                .execute(&self.pool)
                .await
            {
                Ok(_) => {}
                // ER_DUP_KEYNAME: a concurrent migrate created it.
                Err(sqlx::Error::Database(error))
                    if error
                        .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                        .is_some_and(|error| error.number() == ER_DUP_KEYNAME) => {}
                Err(error) => return Err(failed("MySQL migrate: create index")(error)),
            }
        }
        Ok(())
    }

    /// The connection pool.
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    async fn claim_record(&self, request: &ClaimRequest<'_>) -> Result<Claim, StoreError> {
        let key = request.key;
        let token = request.token as i64;
        let fingerprint = fingerprint_column(request.fingerprint.as_ref());
        for _ in 0..CLAIM_ATTEMPTS {
            let done = sqlx::query(self.sql.claim.clone())
                .bind(key.scope())
                .bind(&key.hash()[..])
                .bind(token)
                .bind(fingerprint)
                .bind(request.lease_until)
                .bind(request.expires_at)
                .bind(request.now)
                .bind(request.now)
                .bind(fingerprint)
                .bind(fingerprint)
                .bind(token)
                .bind(fingerprint)
                .bind(request.lease_until)
                .bind(request.expires_at)
                .execute(&self.pool)
                .await
                .map_err(failed("MySQL claim"))?;
            // Affected rows: 1 for an insert, 2 for an update that changed
            // the row (with sqlx's CLIENT_FOUND_ROWS, 1 for one left alone).
            match (done.last_insert_id(), done.rows_affected()) {
                (INSERTED, 1) | (TAKEN_OVER, 2) => return Ok(Claim::Claimed),
                _ => {}
            }
            // A live record (or an answer we do not trust): read it. It may
            // have changed since (released, purged, taken over): then claim again.
            let Some(row) = sqlx::query(self.sql.find.clone())
                .bind(key.scope())
                .bind(&key.hash()[..])
                .fetch_optional(&self.pool)
                .await
                .map_err(failed("MySQL claim: read record"))?
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
fn found(row: &MySqlRow) -> Result<Found, StoreError> {
    let read = || -> Result<Found, sqlx::Error> {
        Ok(Found {
            token: row.try_get(0)?,
            fingerprint: row.try_get(1)?,
            lease_until: row.try_get(2)?,
            expires_at: row.try_get(3)?,
            payload: row.try_get(4)?,
        })
    };
    read().map_err(failed("MySQL claim: decode record"))
}

store_operations!(
    MySqlStore,
    MySqlPool,
    "MySQL",
    renew(query, lease_until) => query.bind(lease_until).bind(lease_until)
);

fence_method!(
    MySqlStore,
    sqlx::MySqlConnection,
    "MySQL",
    "mysql://app@db.internal/payments"
);

impl fmt::Debug for MySqlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlStore")
            .field("table", &self.table)
            .field("pool", &self.pool)
            .finish()
    }
}

/// The statements of one store, built once for its table.
#[derive(Debug)]
struct Statements {
    create_table: SqlStr,
    /// Counts the table's indexes that start with `expires_at` (binds the table name).
    find_index: SqlStr,
    create_index: SqlStr,
    /// The upsert; its outcome is in `LAST_INSERT_ID` (see [`INSERTED`]).
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
    Statements {
        create_table: sql(format!(
            "CREATE TABLE IF NOT EXISTS `{table}` (
    scope VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    key_hash VARBINARY(32) NOT NULL,
    token BIGINT NOT NULL,
    fingerprint VARBINARY(32) NULL,
    lease_until BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    payload LONGBLOB NULL,
    PRIMARY KEY (scope, key_hash),
    INDEX expires_at_index (expires_at)
) ENGINE = InnoDB"
        )),
        find_index: sql(
            "SELECT COUNT(*) FROM information_schema.STATISTICS
WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = 'expires_at' AND SEQ_IN_INDEX = 1"
                .to_owned(),
        ),
        create_index: sql(format!(
            "CREATE INDEX expires_at_index ON `{table}` (expires_at)"
        )),
        // The VALUES row sets LAST_INSERT_ID to INSERTED; on a duplicate the
        // first assignment overwrites it with TAKEN_OVER or 1 (live), from
        // the record's values before any assignment, and the others follow it.
        claim: sql(format!(
            "INSERT INTO `{table}` (scope, key_hash, token, fingerprint, lease_until, expires_at, payload)
VALUES (?, ?, ?, ?, ?, ?, IF(LAST_INSERT_ID(3) = 3, NULL, NULL))
ON DUPLICATE KEY UPDATE
    token = IF(LAST_INSERT_ID(IF(
        expires_at <= ? OR (
            payload IS NULL AND lease_until <= ?
            AND (fingerprint IS NULL OR ? IS NULL OR fingerprint = ?)
        ), 2, 1)) = 2, ?, token),
    fingerprint = IF(LAST_INSERT_ID() = 2, ?, fingerprint),
    lease_until = IF(LAST_INSERT_ID() = 2, ?, lease_until),
    expires_at = IF(LAST_INSERT_ID() = 2, ?, expires_at),
    payload = IF(LAST_INSERT_ID() = 2, NULL, payload)"
        )),
        find: sql(format!(
            "SELECT token, fingerprint, lease_until, expires_at, payload FROM `{table}` WHERE scope = ? AND key_hash = ?"
        )),
        complete: sql(format!(
            "UPDATE `{table}` SET payload = ?, expires_at = ?
WHERE scope = ? AND key_hash = ? AND token = ? AND payload IS NULL"
        )),
        release: sql(format!(
            "DELETE FROM `{table}` WHERE scope = ? AND key_hash = ? AND token = ? AND payload IS NULL AND lease_until < {FENCED_LEASE}"
        )),
        renew: sql(format!(
            "UPDATE `{table}` SET lease_until = ?, expires_at = GREATEST(expires_at, ?)
WHERE scope = ? AND key_hash = ? AND token = ? AND payload IS NULL AND lease_until < {FENCED_LEASE}"
        )),
        purge: sql(format!(
            "DELETE FROM `{table}` WHERE expires_at <= ? ORDER BY expires_at LIMIT {PURGE_BATCH}"
        )),
        fence: sql(format!(
            "UPDATE `{table}` SET lease_until = {FENCED_LEASE}
WHERE scope = ? AND key_hash = ? AND token = ? AND payload IS NULL AND lease_until < {FENCED_LEASE}"
        )),
        fenced: sql(format!(
            "SELECT lease_until FROM `{table}` WHERE scope = ? AND key_hash = ? AND token = ? AND payload IS NULL"
        )),
    }
}
