//! `MySqlStore`: records in MySQL or MariaDB, shared by every replica.

use sqlx::{
    MySql, MySqlConnection, Pool,
    mysql::{MySqlDatabaseError, MySqlQueryResult},
};

use super::{
    Attempt, PURGE_BATCH, SqlBackend, SqlStore, Statements, Upsert, failed, fingerprint_column, sql,
};
use crate::idempotency::{ClaimRequest, FENCED_LEASE, StoreError};

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
/// A claim first reads the record with a plain `SELECT` on the primary key
/// (a consistent read: no lock, no write), which answers a replay, or a
/// duplicate of a claim in progress, by itself: one round trip. Only a
/// missing or takeable record goes on to the upsert, which locks the row.
///
/// MySQL has neither `RETURNING` on upserts nor data-modifying `WITH`, and
/// `INSERT IGNORE` would hide real errors (a truncated scope, a bad value)
/// as well as the duplicate. The upsert is one `INSERT … ON DUPLICATE KEY
/// UPDATE` whose update takes over the record only if it may (see the
/// module docs: expired, or a lapsed claim whose fingerprint does not differ).
/// The condition is evaluated once, in the first assignment, before any
/// column changes (MySQL assigns left to right, and later expressions see
/// earlier assignments); its outcome is kept in `LAST_INSERT_ID(expr)`,
/// which the later assignments read and which the server reports back with
/// the affected rows. So a claim that inserts or takes over the record is
/// two round trips (the read, the upsert); an upsert that meets a record
/// committed since the read reads it again. If the
/// server's answer is anything other than "inserted" or "taken over", the
/// claim trusts only the `SELECT`: the record is ours if and only if it
/// holds our token. `complete`, `renew` and `release` are one round trip
/// each (`purge_expired` one per 1000 rows it deletes, plus one): a fresh
/// request costs three round trips, a replay one.
/// (These counts are for the pool of [`connect`](MySqlStore::connect); a
/// pool that pings each connection before use, sqlx's default, adds a
/// round trip to every operation.)
///
/// # Example
///
/// ```no_run
/// # async fn example() -> Result<(), steadfast::idempotency::StoreError> {
/// use steadfast::idempotency::MySqlStore;
///
/// let store = MySqlStore::connect("mysql://app@db.internal/payments").await?;
/// store.migrate().await?;
/// # Ok(())
/// # }
/// ```
pub type MySqlStore = SqlStore<MySql>;

/// Counts the table's indexes that start with `expires_at` (binds the table name).
const FIND_INDEX: &str = "SELECT COUNT(*) FROM information_schema.STATISTICS
WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = 'expires_at' AND SEQ_IN_INDEX = 1";

impl SqlBackend for MySql {
    /// The upsert, whose outcome is in `LAST_INSERT_ID` (see `INSERTED`),
    /// and the read of a live record.
    type Claim = Upsert;

    const RENEW_LEASE_BINDS: usize = 2;

    fn statements(table: &str) -> Statements<MySql> {
        statements(table)
    }

    /// Creates the table, with its index on `expires_at`, if it is missing,
    /// and the index if the table lacks it (a table made by an older
    /// version). The server serializes the DDL under a metadata lock, and
    /// an index that another replica created in the meantime counts as
    /// created.
    async fn migrate(
        pool: &Pool<MySql>,
        sql: &Statements<MySql>,
        table: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(sql.create_table.clone())
            .execute(pool)
            .await
            .map_err(failed("MySQL migrate: create table"))?;
        // MySQL has no `CREATE INDEX IF NOT EXISTS` (MariaDB has): look first.
        let indexed: i64 = sqlx::query_scalar(FIND_INDEX)
            .bind(table)
            .fetch_one(pool)
            .await
            .map_err(failed("MySQL migrate: find index"))?;
        if indexed == 0 {
            match sqlx::query(sql.create_index.clone()).execute(pool).await {
                Ok(_) => {}
                // ER_DUP_KEYNAME: a concurrent migrate created it.
                Err(sqlx::Error::Database(error))
                    if error
                        .try_downcast_ref::<MySqlDatabaseError>()
                        .is_some_and(|error| error.number() == ER_DUP_KEYNAME) => {}
                Err(error) => return Err(failed("MySQL migrate: create index")(error)),
            }
        }
        Ok(())
    }

    /// A read of the record, which answers by itself unless the record is
    /// missing or takeable; then the upsert, and when the server's answer
    /// is not "inserted" or "taken over", the record, which is ours if and
    /// only if it holds our token.
    async fn claim(
        connection: &mut MySqlConnection,
        claim: &Upsert,
        request: &ClaimRequest<'_>,
    ) -> Result<Attempt, StoreError> {
        if let Some(found) = claim.read_first::<MySql>(connection, request).await? {
            return Ok(found);
        }
        let key = request.key;
        let token = request.token as i64;
        let fingerprint = fingerprint_column(request.fingerprint.as_ref());
        let done = sqlx::query(claim.upsert.clone())
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
            .execute(&mut *connection)
            .await
            .map_err(failed("MySQL claim"))?;
        // Affected rows: 1 for an insert, 2 for an update that changed
        // the row (with sqlx's CLIENT_FOUND_ROWS, 1 for one left alone).
        match (done.last_insert_id(), done.rows_affected()) {
            (INSERTED, 1) | (TAKEN_OVER, 2) => Ok(Attempt::Claimed),
            // A live record (or an answer we do not trust): read it.
            _ => claim.read::<MySql>(connection, key).await,
        }
    }

    fn rows_affected(done: &MySqlQueryResult) -> u64 {
        done.rows_affected()
    }
}

/// The statements for `table` (validated, or the default).
fn statements(table: &str) -> Statements<MySql> {
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
        create_index: sql(format!(
            "CREATE INDEX expires_at_index ON `{table}` (expires_at)"
        )),
        // The VALUES row sets LAST_INSERT_ID to INSERTED; on a duplicate the
        // first assignment overwrites it with TAKEN_OVER or 1 (live), from
        // the record's values before any assignment, and the others follow it.
        claim: Upsert {
            upsert: sql(format!(
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
        },
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
            "UPDATE `{table}` SET lease_until = ?
WHERE scope = ? AND key_hash = ? AND token = ? AND payload IS NULL AND lease_until < {FENCED_LEASE}"
        )),
        fenced: sql(format!(
            "SELECT lease_until FROM `{table}` WHERE scope = ? AND key_hash = ? AND token = ? AND payload IS NULL"
        )),
    }
}
