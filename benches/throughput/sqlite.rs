//! SQLite as a [`ReadFirst`] database: its database file, its pool (the
//! options of `SqliteStore::connect`), and its claim upsert.

use std::{path::PathBuf, str::FromStr, time::Duration};

use sqlx::{
    Pool, SqlStr, Sqlite, SqliteConnection,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use steadfast::idempotency::{RecordKey, SqliteStore};

use crate::{
    bench::BoxFuture,
    read_first::ReadFirst,
    sql_statements::SqlStatements,
    workload::{TABLE, Times},
};

/// The bench's database, in the temporary directory.
fn database_file() -> PathBuf {
    std::env::temp_dir().join("steadfast_throughput.db")
}

/// Deletes the database file and its WAL files, left by an earlier run.
pub(crate) fn remove_database_file() {
    let path = database_file();
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
}

impl ReadFirst for Sqlite {
    const DISPLAY_NAME: &'static str = "SQLite";

    /// The options of `SqliteStore::connect` (WAL, `synchronous = NORMAL`,
    /// a 5 s busy timeout), with as many connections as callers.
    async fn pool(callers: usize) -> Pool<Sqlite> {
        let url = format!("sqlite:{}?mode=rwc", database_file().display());
        let options = SqliteConnectOptions::from_str(&url)
            .expect("a SQLite URL")
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        SqlitePoolOptions::new()
            .max_connections(callers as u32)
            .min_connections(callers as u32)
            .connect_with(options)
            .await
            .expect("SQLite")
    }

    fn empty_table_sql() -> String {
        format!(r#"DELETE FROM "{TABLE}""#)
    }

    fn store_statements(store: &SqliteStore) -> (SqlStr, SqlStr, SqlStr) {
        store.statements()
    }

    fn claim_new<'a>(
        connection: &'a mut SqliteConnection,
        upsert: SqlStr,
        key: &'a RecordKey,
        token: i64,
        times: &'a Times,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let claimed = Sqlite::claim_query(upsert, key, token, times)
                .fetch_optional(connection)
                .await
                .expect("a claim");
            assert!(claimed.is_some(), "a new key is claimed");
        })
    }
}
