//! [`SqlBackend`]: what one database gives the one SQL algorithm of
//! [`SqlStore`](super::SqlStore), as each sqlx database gives `Migrate` to
//! `Migrator::run`; and [`Run`], the sqlx calls that algorithm makes, bound
//! once here for every database.

use std::{fmt, future::Future};

use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, SqlStr, Type,
    pool::PoolOptions,
};

#[cfg(any(feature = "sqlite", feature = "postgres"))]
use super::fingerprint_column;
use super::{Found, failed};
#[cfg(any(feature = "sqlite", feature = "mysql"))]
use crate::idempotency::RecordKey;
use crate::idempotency::{ClaimRequest, StoreError};

/// How long an operation of a store made by
/// [`SqlStore::connect`](super::SqlStore::connect) waits for a connection
/// (sqlx's default is 30 s): while the database is down or refuses
/// connections, a claim fails closed within this time instead of holding
/// its caller for half a minute.
pub const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A database an SQL store runs on: implemented for sqlx's `Sqlite`,
/// `Postgres` and `MySql` (each behind its feature), and sealed (its items
/// name the store's private types).
pub trait SqlBackend: Database + Run {
    /// What a claim runs, built once per table.
    type Claim: fmt::Debug + Send + Sync + 'static;

    /// How many times `renew` binds the new `lease_until` before the key
    /// (MySQL's `?` cannot be referred to twice).
    const RENEW_LEASE_BINDS: usize = 1;

    /// The statements for `table` (validated, or the default).
    fn statements(table: &str) -> Statements<Self>;

    /// A pool for `url`: sqlx's defaults, except that a connection is not
    /// pinged before each use and a connection is waited for at most
    /// [`ACQUIRE_TIMEOUT`] (see [`SqlStore::connect`](super::SqlStore::connect)).
    fn connect(url: &str) -> impl Future<Output = Result<Pool<Self>, StoreError>> + Send {
        async move {
            PoolOptions::<Self>::new()
                .test_before_acquire(false)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect(url)
                .await
                .map_err(failed(format!("cannot connect to {}", Self::NAME)))
        }
    }

    /// Creates `table` and its index on `expires_at` if they are missing.
    fn migrate<'a>(
        pool: &'a Pool<Self>,
        sql: &'a Statements<Self>,
        table: &'a str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a;

    /// One run of the claim statement (and the read that follows it).
    fn claim<'a>(
        connection: &'a mut Self::Connection,
        claim: &'a Self::Claim,
        request: &'a ClaimRequest<'a>,
    ) -> impl Future<Output = Result<Attempt, StoreError>> + Send + 'a;

    /// The rows a statement changed (matched, on MySQL: sqlx connects with
    /// `CLIENT_FOUND_ROWS`).
    fn rows_affected(done: &Self::QueryResult) -> u64;
}

/// The statements of one store, built once for its table.
#[derive(Debug)]
pub struct Statements<DB: SqlBackend> {
    pub(super) create_table: SqlStr,
    pub(super) create_index: SqlStr,
    pub(super) claim: DB::Claim,
    /// Binds `payload, expires_at`, then the key and token.
    pub(super) complete: SqlStr,
    /// Binds the key and token.
    pub(super) release: SqlStr,
    /// Binds `lease_until` ([`SqlBackend::RENEW_LEASE_BINDS`] times), then the key and token.
    pub(super) renew: SqlStr,
    /// Binds `now`; deletes up to `PURGE_BATCH` expired rows.
    pub(super) purge: SqlStr,
    /// Binds the fenced `lease_until`, then the key and token; fences the
    /// claim under `token` (see `fence`).
    pub(super) fence: SqlStr,
    /// Reads `lease_until` of the claim under `token`.
    pub(super) fenced: SqlStr,
}

#[cfg(any(feature = "sqlite", feature = "mysql"))]
/// The claim of a database without `RETURNING` of the live record, in which
/// an upsert writes (MySQL: locks the row; SQLite: takes the database's
/// write lock) even when it leaves the record alone: a plain read of the
/// record first, which answers a replay or a live claim by itself; the
/// upsert only for a missing or takeable record, then the read again if it
/// did not claim.
#[derive(Debug)]
pub struct Upsert {
    pub(super) upsert: SqlStr,
    /// Binds the key; reads `token, fingerprint, lease_until, expires_at, payload`.
    pub(super) find: SqlStr,
}

/// What one run of a claim statement saw.
#[derive(Debug)]
pub enum Attempt {
    /// The record is ours.
    Claimed,
    /// Another live record (or one read from an older snapshot).
    Found(Found),
    /// No record to report (released, purged, or committed after the
    /// statement's snapshot): claim again.
    Gone,
}

#[cfg(any(feature = "sqlite", feature = "mysql"))]
impl Upsert {
    /// The record, when it answers the claim of `request` without a write
    /// (see [`Found::settles`]); `None` when the upsert must run.
    pub(super) async fn read_first<DB: SqlBackend>(
        &self,
        connection: &mut DB::Connection,
        request: &ClaimRequest<'_>,
    ) -> Result<Option<Attempt>, StoreError> {
        Ok(match self.read::<DB>(connection, request.key).await? {
            Attempt::Found(found) if found.settles(request) => Some(Attempt::Found(found)),
            _ => None,
        })
    }

    /// The record in the way of an upsert that did not claim.
    pub(super) async fn read<DB: SqlBackend>(
        &self,
        connection: &mut DB::Connection,
        key: &RecordKey,
    ) -> Result<Attempt, StoreError> {
        let binds = [Bind::Text(key.scope()), Bind::Bytes(Some(&key.hash()[..]))];
        let found = DB::fetch_record(connection, self.find.clone(), &binds)
            .await
            .map_err(failed(format!("{} claim: read record", DB::NAME)))?;
        Ok(found.map_or(Attempt::Gone, Attempt::Found))
    }
}

/// A value a statement binds.
#[derive(Debug, Clone, Copy)]
pub enum Bind<'a> {
    /// A scope.
    Text(&'a str),
    /// A key hash, fingerprint or payload.
    Bytes(Option<&'a [u8]>),
    /// A token or a time.
    Int(i64),
}

/// The sqlx calls of the SQL algorithm, for any database that can bind and
/// read its columns.
pub trait Run: Database {
    /// Runs `sql` with `binds`.
    fn execute<'a>(
        connection: &'a mut Self::Connection,
        sql: SqlStr,
        binds: &'a [Bind<'a>],
    ) -> impl Future<Output = Result<Self::QueryResult, sqlx::Error>> + Send + 'a;

    /// Reads the one `BIGINT` column of the row `sql` finds, if any.
    fn fetch_i64<'a>(
        connection: &'a mut Self::Connection,
        sql: SqlStr,
        binds: &'a [Bind<'a>],
    ) -> impl Future<Output = Result<Option<i64>, sqlx::Error>> + Send + 'a;

    /// Reads `token, fingerprint, lease_until, expires_at, payload` of the
    /// row `sql` finds, if any.
    fn fetch_record<'a>(
        connection: &'a mut Self::Connection,
        sql: SqlStr,
        binds: &'a [Bind<'a>],
    ) -> impl Future<Output = Result<Option<Found>, sqlx::Error>> + Send + 'a;
}

impl<DB> Run for DB
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> Option<&'a [u8]>: Encode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> Vec<u8>: Decode<'a, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    fn execute<'a>(
        connection: &'a mut DB::Connection,
        sql: SqlStr,
        binds: &'a [Bind<'a>],
    ) -> impl Future<Output = Result<DB::QueryResult, sqlx::Error>> + Send + 'a {
        let query = bound::<DB>(sql, binds);
        async move { query.execute(connection).await }
    }

    fn fetch_i64<'a>(
        connection: &'a mut DB::Connection,
        sql: SqlStr,
        binds: &'a [Bind<'a>],
    ) -> impl Future<Output = Result<Option<i64>, sqlx::Error>> + Send + 'a {
        let query = bound::<DB>(sql, binds);
        async move {
            let row = query.fetch_optional(connection).await?;
            row.map(|row| row.try_get(0)).transpose()
        }
    }

    fn fetch_record<'a>(
        connection: &'a mut DB::Connection,
        sql: SqlStr,
        binds: &'a [Bind<'a>],
    ) -> impl Future<Output = Result<Option<Found>, sqlx::Error>> + Send + 'a {
        let query = bound::<DB>(sql, binds);
        async move {
            let Some(row) = query.fetch_optional(connection).await? else {
                return Ok(None);
            };
            Ok(Some(Found {
                token: row.try_get(0)?,
                fingerprint: row.try_get(1)?,
                lease_until: row.try_get(2)?,
                expires_at: row.try_get(3)?,
                payload: row.try_get(4)?,
            }))
        }
    }
}

/// The binds of a claim: `scope, key_hash, token, fingerprint,
/// lease_until, expires_at, now`, as SQLite's and PostgreSQL's claim
/// statements number them.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(super) fn claim_binds<'a>(request: &'a ClaimRequest<'a>) -> [Bind<'a>; 7] {
    let key = request.key;
    [
        Bind::Text(key.scope()),
        Bind::Bytes(Some(&key.hash()[..])),
        Bind::Int(request.token as i64),
        Bind::Bytes(fingerprint_column(request.fingerprint.as_ref())),
        Bind::Int(request.lease_until),
        Bind::Int(request.expires_at),
        Bind::Int(request.now),
    ]
}

/// `sql` with `binds` bound in order.
pub(super) fn bound<'q, DB>(
    sql: SqlStr,
    binds: &[Bind<'_>],
) -> sqlx::query::Query<'q, DB, DB::Arguments>
where
    DB: Database,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> Option<&'a [u8]>: Encode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Type<DB>,
{
    binds
        .iter()
        .fold(sqlx::query(sql), |query, bind| match *bind {
            Bind::Text(text) => query.bind(text),
            Bind::Bytes(bytes) => query.bind(bytes),
            Bind::Int(int) => query.bind(int),
        })
}
