//! `PostgresStore`: records in PostgreSQL, shared by every replica.

use sha2::{Digest, Sha256};
use sqlx::{
    PgConnection, Pool, Postgres, Row, SqlStr,
    postgres::{PgQueryResult, PgRow},
};

use super::{
    Attempt, Found, PURGE_BATCH, SqlBackend, SqlStore, Statements, bound, claim_binds, failed,
    index_name, sql,
};
use crate::idempotency::{ClaimRequest, FENCED_LEASE, StoreError};

/// An idempotency store in PostgreSQL: the store for a service with several
/// replicas (or hosts) that already runs PostgreSQL.
///
/// # Schema
///
/// Created by [`migrate`](PostgresStore::migrate) (shown for the default
/// table), in the connection's current schema (`search_path`):
///
/// ```sql
/// CREATE TABLE IF NOT EXISTS "steadfast_idempotency" (
///     scope       TEXT   NOT NULL,
///     key_hash    BYTEA  NOT NULL,
///     token       BIGINT NOT NULL,
///     fingerprint BYTEA,
///     lease_until BIGINT NOT NULL,
///     expires_at  BIGINT NOT NULL,
///     payload     BYTEA,
///     PRIMARY KEY (scope, key_hash)
/// );
/// CREATE INDEX IF NOT EXISTS "steadfast_idempotency_expires_at"
///     ON "steadfast_idempotency" (expires_at);
/// ```
///
/// # Round trips
///
/// A claim is one statement, so one round trip: a data-modifying `WITH`
/// that first reads the record (a plain `SELECT` on the primary key), inserts
/// it only if that read found nothing (`INSERT … SELECT … WHERE NOT EXISTS
/// … ON CONFLICT DO NOTHING`), takes it over only if the record read may be
/// taken (an `UPDATE … WHERE <takeable>`, its condition rechecked on the
/// row's latest version), and reports the record read when it did neither.
/// So a replay, or a duplicate of a claim in progress, only reads: no row
/// lock, no transaction id, no commit record or flush, and concurrent
/// duplicates of one key do not queue on its row. (Under `READ COMMITTED`
/// the record may have been committed, released or taken over after the
/// statement's snapshot, so that the insert meets a conflict and nothing is
/// returned, or the record read is takeable but the take-over finds it
/// changed; the claim then runs the statement again, which happens only
/// when two callers race for one key.) `complete`,
/// `renew` and `release` are one round trip each (`purge_expired` one per
/// 1000 rows it deletes, plus one): a fresh request costs two round trips,
/// a replay one. (These counts are for the
/// pool of [`connect`](PostgresStore::connect); a pool that pings each
/// connection before use, sqlx's default, adds a round trip to every
/// operation.)
///
/// The store needs the default `READ COMMITTED` isolation: under
/// `REPEATABLE READ` or `SERIALIZABLE` a claim that races another fails with
/// a serialization error.
///
/// # Example
///
/// ```no_run
/// # async fn example() -> Result<(), steadfast::idempotency::StoreError> {
/// use steadfast::idempotency::PostgresStore;
///
/// let store = PostgresStore::connect("postgres://app@db.internal/payments").await?;
/// store.migrate().await?;
/// # Ok(())
/// # }
/// ```
pub type PostgresStore = SqlStore<Postgres>;

impl PostgresStore {
    /// The claim and complete statements as this store runs them (table
    /// name filled in), for the raw-sqlx baseline of `benches/idempotency.rs`.
    #[doc(hidden)]
    pub fn statements(&self) -> (SqlStr, SqlStr) {
        (self.sql.claim.clone(), self.sql.complete.clone())
    }
}

impl SqlBackend for Postgres {
    /// Returns `claimed, token, fingerprint, lease_until, expires_at,
    /// payload`: `claimed` true (the rest NULL) when the record is ours,
    /// else false and the live record; or no row (see `claim`).
    type Claim = SqlStr;

    fn statements(table: &str) -> Statements<Postgres> {
        statements(table)
    }

    /// The DDL runs in a transaction under an advisory lock on the table's
    /// name (concurrent `CREATE TABLE IF NOT EXISTS` alone can fail on
    /// PostgreSQL's catalog constraints).
    async fn migrate(
        pool: &Pool<Postgres>,
        sql: &Statements<Postgres>,
        table: &str,
    ) -> Result<(), StoreError> {
        let mut transaction = pool
            .begin()
            .await
            .map_err(failed("PostgreSQL migrate: begin"))?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(migrate_lock(table))
            .execute(&mut *transaction)
            .await
            .map_err(failed("PostgreSQL migrate: lock"))?;
        sqlx::query(sql.create_table.clone())
            .execute(&mut *transaction)
            .await
            .map_err(failed("PostgreSQL migrate: create table"))?;
        sqlx::query(sql.create_index.clone())
            .execute(&mut *transaction)
            .await
            .map_err(failed("PostgreSQL migrate: create index"))?;
        transaction
            .commit()
            .await
            .map_err(failed("PostgreSQL migrate: commit"))
    }

    /// One statement: claimed, or the live record, or no row.
    async fn claim(
        connection: &mut PgConnection,
        claim: &SqlStr,
        request: &ClaimRequest<'_>,
    ) -> Result<Attempt, StoreError> {
        let row = bound::<Postgres>(claim.clone(), &claim_binds(request))
            .fetch_optional(connection)
            .await
            .map_err(failed("PostgreSQL claim"))?;
        // No row: the conflicting record was committed after this
        // statement's snapshot. A row that is takeable: it was read from
        // the snapshot, while the newer version (live, since the take-over
        // did not happen) was not. Either way (`Gone`, or a `Found` that
        // `into_claim` finds takeable), the store claims again.
        match row {
            None => Ok(Attempt::Gone),
            Some(row) => read(&row),
        }
    }

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }
}

/// `Claimed` when the row says so, else the live record it carries.
fn read(row: &PgRow) -> Result<Attempt, StoreError> {
    let read = || -> Result<Attempt, sqlx::Error> {
        if row.try_get::<bool, _>(0)? {
            return Ok(Attempt::Claimed);
        }
        Ok(Attempt::Found(Found {
            token: row.try_get(1)?,
            fingerprint: row.try_get(2)?,
            lease_until: row.try_get(3)?,
            expires_at: row.try_get(4)?,
            payload: row.try_get(5)?,
        }))
    };
    read().map_err(failed("PostgreSQL claim: decode record"))
}

/// The advisory lock under which `migrate` creates `table`.
fn migrate_lock(table: &str) -> i64 {
    let digest = Sha256::digest(format!("steadfast idempotency migrate {table}").as_bytes());
    i64::from_be_bytes(
        digest[..8]
            .try_into()
            .expect("a SHA-256 has 8 bytes to spare"),
    )
}

/// The statements for `table` (validated, or the default).
fn statements(table: &str) -> Statements<Postgres> {
    let index = index_name(table);
    Statements {
        create_table: sql(format!(
            r#"CREATE TABLE IF NOT EXISTS "{table}" (
    scope TEXT NOT NULL,
    key_hash BYTEA NOT NULL,
    token BIGINT NOT NULL,
    fingerprint BYTEA,
    lease_until BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    payload BYTEA,
    PRIMARY KEY (scope, key_hash)
)"#
        )),
        create_index: sql(format!(
            r#"CREATE INDEX IF NOT EXISTS "{index}" ON "{table}" (expires_at)"#
        )),
        // A replay only reads: `found` is a plain read of the record (no
        // row lock), the insert runs only when the snapshot has no record
        // (`DO NOTHING` on a record committed since, which takes no lock
        // either), and the take-over only when the record read is takeable
        // (a one-time filter: the row is not even visited otherwise); its own
        // condition, rechecked on the row's latest version, decides. A
        // statement that changes no row takes no transaction id, so it
        // commits without a WAL record or flush.
        claim: sql(format!(
            r#"WITH found AS (
    SELECT token, fingerprint, lease_until, expires_at, payload FROM "{table}"
    WHERE scope = $1 AND key_hash = $2
), inserted AS (
    INSERT INTO "{table}" (scope, key_hash, token, fingerprint, lease_until, expires_at, payload)
    SELECT $1, $2, $3, $4, $5, $6, NULL WHERE NOT EXISTS (SELECT 1 FROM found)
    ON CONFLICT (scope, key_hash) DO NOTHING
    RETURNING 1
), taken AS (
    UPDATE "{table}" AS existing SET
        token = $3, fingerprint = $4, lease_until = $5, expires_at = $6, payload = NULL
    WHERE scope = $1 AND key_hash = $2
    AND EXISTS (
        SELECT 1 FROM found WHERE found.expires_at <= $7
        OR (found.payload IS NULL AND found.lease_until <= $7)
    )
    AND (existing.expires_at <= $7 OR (
        existing.payload IS NULL AND existing.lease_until <= $7
        AND (existing.fingerprint IS NULL OR $4::BYTEA IS NULL OR existing.fingerprint = $4)
    ))
    RETURNING 1
)
SELECT TRUE, NULL::BIGINT, NULL::BYTEA, NULL::BIGINT, NULL::BIGINT, NULL::BYTEA FROM inserted
UNION ALL
SELECT TRUE, NULL, NULL, NULL, NULL, NULL FROM taken
UNION ALL
SELECT FALSE, token, fingerprint, lease_until, expires_at, payload FROM found
WHERE NOT EXISTS (SELECT 1 FROM taken)"#
        )),
        complete: sql(format!(
            r#"UPDATE "{table}" SET payload = $1, expires_at = $2
WHERE scope = $3 AND key_hash = $4 AND token = $5 AND payload IS NULL"#
        )),
        release: sql(format!(
            r#"DELETE FROM "{table}" WHERE scope = $1 AND key_hash = $2 AND token = $3 AND payload IS NULL AND lease_until < {FENCED_LEASE}"#
        )),
        renew: sql(format!(
            r#"UPDATE "{table}" SET lease_until = $1, expires_at = GREATEST(expires_at, $1)
WHERE scope = $2 AND key_hash = $3 AND token = $4 AND payload IS NULL AND lease_until < {FENCED_LEASE}"#
        )),
        purge: sql(format!(
            // A row taken over between the subquery and the delete has a
            // new `expires_at`: the outer condition, rechecked on the row's
            // latest version, keeps it.
            r#"DELETE FROM "{table}" WHERE (scope, key_hash) IN (
    SELECT scope, key_hash FROM "{table}" WHERE expires_at <= $1 LIMIT {PURGE_BATCH}
) AND expires_at <= $1"#
        )),
        fence: sql(format!(
            r#"UPDATE "{table}" SET lease_until = $1
WHERE scope = $2 AND key_hash = $3 AND token = $4 AND payload IS NULL AND lease_until < {FENCED_LEASE}"#
        )),
        fenced: sql(format!(
            r#"SELECT lease_until FROM "{table}" WHERE scope = $1 AND key_hash = $2 AND token = $3 AND payload IS NULL"#
        )),
    }
}
