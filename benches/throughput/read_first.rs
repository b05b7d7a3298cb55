//! The read-first stores' [`Bench`], once for MariaDB and SQLite: stores
//! that read a record before their claim upserts it (`SqlStore` over
//! `SqlBackend<Claim = Upsert>`); [`ReadFirst`] is what each database
//! gives it.

use std::{future::Future, sync::Arc};

use sqlx::{Pool, SqlStr};
use steadfast::idempotency::{IdempotencyStore, RecordKey, SqlBackend, SqlStore};

use crate::{
    bench::{Bench, BoxFuture},
    mode::Mode,
    sql_statements::SqlStatements,
    workload::{TABLE, Times, fill},
};

/// A database whose store reads first: what differs between MariaDB and
/// SQLite in their bench and floor.
pub(crate) trait ReadFirst: SqlBackend + SqlStatements {
    /// The store's name in the table.
    const DISPLAY_NAME: &'static str;

    /// The store's pool, with as many connections as `callers`.
    fn pool(callers: usize) -> impl Future<Output = Pool<Self>>;
    /// The statement that deletes every row of [`TABLE`].
    fn empty_table_sql() -> String;
    /// The store's read, claim upsert and complete statements
    /// (`SqlStore::statements`, whose bound names a type private to the
    /// crate: hence one line a database).
    fn store_statements(store: &SqlStore<Self>) -> (SqlStr, SqlStr, SqlStr);
    /// Runs the claim `upsert` for the new key `key` under `token` and
    /// asserts that it inserted.
    fn claim_new<'a>(
        connection: &'a mut Self::Connection,
        upsert: SqlStr,
        key: &'a RecordKey,
        token: i64,
        times: &'a Times,
    ) -> BoxFuture<'a, ()>;
}

/// The store of a read-first database `DB`.
pub(crate) struct ReadFirstBench<DB: ReadFirst> {
    pub(crate) store: SqlStore<DB>,
}

impl<DB: ReadFirst> Bench for ReadFirstBench<DB> {
    const NAME: &'static str = DB::DISPLAY_NAME;
    const MODES: &'static [Mode] = &[
        Mode::WriteConn,
        Mode::ReadWriteConn,
        Mode::Write,
        Mode::Fresh,
        Mode::SelectConn,
        Mode::Select,
        Mode::Claim,
        Mode::Replay,
        Mode::Hot,
    ];
    const FLOORS: (Mode, Mode) = (Mode::WriteConn, Mode::SelectConn);

    async fn open(callers: usize) -> ReadFirstBench<DB> {
        let store = SqlStore::from_pool(DB::pool(callers).await)
            .with_table(TABLE)
            .expect("a table name");
        ReadFirstBench { store }
    }

    async fn prepare(&self) {
        self.store.migrate().await.expect("migrate");
        DB::run_setup(self.store.pool(), DB::empty_table_sql(), "empty the table").await;
        fill(&self.store).await;
    }

    async fn close(self) {
        self.store.pool().close().await;
    }

    fn store(&self) -> Arc<dyn IdempotencyStore> {
        Arc::new(self.store.clone())
    }
}
