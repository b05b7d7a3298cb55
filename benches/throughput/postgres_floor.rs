//! PostgreSQL's [`Floor`], through raw sqlx: the store's primary-key read,
//! its claim statement and its complete statement.

use sqlx::{Postgres, Row, SqlSafeStr, SqlStr};
use steadfast::idempotency::RecordKey;

use crate::{
    bench::{BoxFuture, Floor},
    postgres::PostgresBench,
    source::Source,
    sql_statements::SqlStatements,
    workload::times,
};

/// The primary-key read of PostgreSQL's `select` (`pgbench` runs the same).
pub(crate) const PG_SELECT: &str = r#"SELECT token, fingerprint, lease_until, expires_at, payload FROM "steadfast_throughput" WHERE scope = $1 AND key_hash = $2"#;

impl Floor for PostgresBench {
    type Caller = Source<Postgres>;

    fn caller(&self, held: bool) -> BoxFuture<'_, Source<Postgres>> {
        Box::pin(Source::new(self.store.pool(), held))
    }

    fn select<'a>(
        &'a self,
        caller: &'a mut Source<Postgres>,
        key: &'a RecordKey,
    ) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let mut connection = caller.connection().await;
            Postgres::select_record(&mut connection, PG_SELECT.into_sql_str(), key).await
        })
    }

    fn write<'a>(
        &'a self,
        caller: &'a mut Source<Postgres>,
        key: &'a RecordKey,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let (claim, complete) = self.store.statements();
            let token = fastrand::i64(..);
            let claimed = {
                let mut connection = caller.connection().await;
                pg_claim(&mut connection, claim, key, token).await
            };
            assert!(claimed, "a new key is claimed");
            let mut connection = caller.connection().await;
            let expires_at = times().expires_at;
            let done =
                Postgres::complete_claim(&mut connection, complete, key, token, expires_at).await;
            assert_eq!(done.rows_affected(), 1);
        })
    }

    fn claim_statement<'a>(
        &'a self,
        caller: &'a mut Source<Postgres>,
        key: &'a RecordKey,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let (claim, _) = self.store.statements();
            let mut connection = caller.connection().await;
            let claimed = pg_claim(&mut connection, claim, key, fastrand::i64(..)).await;
            assert!(!claimed, "a completed key is not claimed");
        })
    }
}

/// Runs PostgreSQL's claim statement `claim` for `key` under `token`:
/// whether it claimed.
async fn pg_claim(
    connection: &mut sqlx::PgConnection,
    claim: SqlStr,
    key: &RecordKey,
    token: i64,
) -> bool {
    let row = Postgres::claim_query(claim, key, token, &times())
        .fetch_optional(connection)
        .await
        .expect("a claim")
        .expect("a row");
    row.try_get(0).expect("claimed")
}
