//! The raw statements the SQL benches run alike, for any sqlx database: a
//! setup statement on the pool, and the floors' primary-key `SELECT`,
//! claim binds and complete `UPDATE`, bound once here (as the store binds
//! its statements once in its `Run`).

use sqlx::{
    AssertSqlSafe, Database, Encode, Executor, IntoArguments, Pool, SqlStr, Type, query::Query,
};
use steadfast::idempotency::RecordKey;

use crate::{
    bench::BoxFuture,
    workload::{PAYLOAD, Times},
};

/// The statements the SQL benches run the same way on every database.
pub(crate) trait SqlStatements: Database {
    /// Runs the setup statement `sql` on `pool` (`what` names it if it
    /// fails).
    fn run_setup<'a>(pool: &'a Pool<Self>, sql: String, what: &'static str) -> BoxFuture<'a, ()>;

    /// Runs the primary-key read `find` of `key`: whether it found a row.
    fn select_record<'a>(
        connection: &'a mut Self::Connection,
        find: SqlStr,
        key: &'a RecordKey,
    ) -> BoxFuture<'a, bool>;

    /// The claim statement `claim` for `key` under `token`, bound as
    /// PostgreSQL's and SQLite's claims number their parameters: `scope,
    /// key_hash, token, fingerprint` (none)`, lease_until, expires_at, now`.
    fn claim_query<'a>(
        claim: SqlStr,
        key: &'a RecordKey,
        token: i64,
        times: &Times,
    ) -> Query<'a, Self, Self::Arguments>;

    /// Runs the complete statement `complete` for the claim of `key` under
    /// `token`, storing [`PAYLOAD`] until `expires_at`.
    fn complete_claim<'a>(
        connection: &'a mut Self::Connection,
        complete: SqlStr,
        key: &'a RecordKey,
        token: i64,
        expires_at: i64,
    ) -> BoxFuture<'a, Self::QueryResult>;
}

impl<DB> SqlStatements for DB
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> &'a [u8]: Encode<'a, DB> + Type<DB>,
    for<'a> Option<&'a [u8]>: Encode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Type<DB>,
{
    fn run_setup<'a>(pool: &'a Pool<DB>, sql: String, what: &'static str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            sqlx::query(AssertSqlSafe(sql))
                .execute(pool)
                .await
                .expect(what);
        })
    }

    fn select_record<'a>(
        connection: &'a mut DB::Connection,
        find: SqlStr,
        key: &'a RecordKey,
    ) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let row = sqlx::query(find)
                .bind(key.scope())
                .bind(&key.hash()[..])
                .fetch_optional(connection)
                .await
                .expect("a select");
            row.is_some()
        })
    }

    fn claim_query<'a>(
        claim: SqlStr,
        key: &'a RecordKey,
        token: i64,
        times: &Times,
    ) -> Query<'a, DB, DB::Arguments> {
        sqlx::query(claim)
            .bind(key.scope())
            .bind(&key.hash()[..])
            .bind(token)
            .bind(None::<&[u8]>)
            .bind(times.lease_until)
            .bind(times.expires_at)
            .bind(times.now)
    }

    fn complete_claim<'a>(
        connection: &'a mut DB::Connection,
        complete: SqlStr,
        key: &'a RecordKey,
        token: i64,
        expires_at: i64,
    ) -> BoxFuture<'a, DB::QueryResult> {
        Box::pin(async move {
            sqlx::query(complete)
                .bind(PAYLOAD)
                .bind(expires_at)
                .bind(key.scope())
                .bind(&key.hash()[..])
                .bind(token)
                .execute(connection)
                .await
                .expect("a complete")
        })
    }
}
