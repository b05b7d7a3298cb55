//! PostgreSQL's [`Bench`]: `PostgresStore` on a pool of its own, its table
//! emptied, refilled and vacuumed.

use std::sync::Arc;

use sqlx::{Postgres, postgres::PgPoolOptions};
use steadfast::idempotency::{IdempotencyStore, PostgresStore};

use crate::{
    bench::Bench,
    mode::Mode,
    servers::postgres_url,
    sql_statements::SqlStatements,
    workload::{TABLE, fill},
};

pub(crate) struct PostgresBench {
    pub(crate) store: PostgresStore,
}

impl Bench for PostgresBench {
    const NAME: &'static str = "PostgreSQL";
    const MODES: &'static [Mode] = &[
        Mode::PgbenchWrite,
        Mode::WriteConn,
        Mode::Write,
        Mode::Fresh,
        Mode::PgbenchSelect,
        Mode::SelectConn,
        Mode::Select,
        Mode::ClaimConn,
        Mode::Claim,
        Mode::Replay,
        Mode::Hot,
    ];
    const FLOORS: (Mode, Mode) = (Mode::PgbenchWrite, Mode::PgbenchSelect);

    async fn open(callers: usize) -> PostgresBench {
        let pool = PgPoolOptions::new()
            .max_connections(callers as u32)
            .min_connections(callers as u32)
            .test_before_acquire(false)
            .connect(&postgres_url())
            .await
            .expect("PostgreSQL");
        let store = PostgresStore::from_pool(pool)
            .with_table(TABLE)
            .expect("a table name");
        PostgresBench { store }
    }

    async fn prepare(&self) {
        self.store.migrate().await.expect("migrate");
        let pool = self.store.pool();
        Postgres::run_setup(pool, format!(r#"TRUNCATE "{TABLE}""#), "truncate").await;
        fill(&self.store).await;
        Postgres::run_setup(pool, format!(r#"VACUUM ANALYZE "{TABLE}""#), "vacuum").await;
    }

    async fn close(self) {
        self.store.pool().close().await;
    }

    fn store(&self) -> Arc<dyn IdempotencyStore> {
        Arc::new(self.store.clone())
    }
}
