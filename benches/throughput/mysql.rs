//! MariaDB as a [`ReadFirst`] database: its pool, and its claim upsert
//! (each `?` bound once, in order).

use sqlx::{MySql, MySqlConnection, Pool, SqlStr, mysql::MySqlPoolOptions};
use steadfast::idempotency::{MySqlStore, RecordKey};

use crate::{
    bench::BoxFuture,
    read_first::ReadFirst,
    servers::mysql_url,
    workload::{TABLE, Times},
};

impl ReadFirst for MySql {
    const DISPLAY_NAME: &'static str = "MariaDB";

    async fn pool(callers: usize) -> Pool<MySql> {
        MySqlPoolOptions::new()
            .max_connections(callers as u32)
            .min_connections(callers as u32)
            .test_before_acquire(false)
            .connect(&mysql_url())
            .await
            .expect("MySQL")
    }

    fn empty_table_sql() -> String {
        format!("TRUNCATE `{TABLE}`")
    }

    fn store_statements(store: &MySqlStore) -> (SqlStr, SqlStr, SqlStr) {
        store.statements()
    }

    fn claim_new<'a>(
        connection: &'a mut MySqlConnection,
        upsert: SqlStr,
        key: &'a RecordKey,
        token: i64,
        times: &'a Times,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let fingerprint = None::<&[u8]>;
            let done = sqlx::query(upsert)
                .bind(key.scope())
                .bind(&key.hash()[..])
                .bind(token)
                .bind(fingerprint)
                .bind(times.lease_until)
                .bind(times.expires_at)
                .bind(times.now)
                .bind(times.now)
                .bind(fingerprint)
                .bind(fingerprint)
                .bind(token)
                .bind(fingerprint)
                .bind(times.lease_until)
                .bind(times.expires_at)
                .execute(connection)
                .await
                .expect("a claim");
            // Inserted (see `MySqlStore`'s claim).
            assert_eq!((done.last_insert_id(), done.rows_affected()), (3, 1));
        })
    }
}
