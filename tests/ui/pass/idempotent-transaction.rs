//! `transaction = tx`: the body runs in a transaction of the SQL store's
//! database, bound to `tx` (`&mut *tx` is an sqlx executor); its result is
//! stored in that transaction, which commits with the body's writes. On a
//! method over `self.store`, on an `#[async_trait]` method, and on a free
//! fn that owns an `Arc` of the store (and so runs to completion).

#![deny(warnings)]
#![deny(clippy::all, clippy::pedantic, clippy::nursery)]

use std::sync::Arc;

use steadfast::idempotency::{IdempotencyError, SqliteStore, StoreError};

fn ledger_error(error: sqlx::Error) -> IdempotencyError {
    IdempotencyError::Store(StoreError::new("ledger", error))
}

/// Writes in the body's transaction: `&mut tx` is a `&mut SqliteConnection`.
async fn record(tx: &mut sqlx::SqliteConnection, cents: i64) -> Result<i64, IdempotencyError> {
    sqlx::query("INSERT INTO ledger (cents) VALUES (?1)")
        .bind(cents)
        .execute(tx)
        .await
        .map_err(ledger_error)?;
    Ok(cents)
}

struct Ledger {
    store: SqliteStore,
}

impl Ledger {
    #[steadfast::idempotent(key = payment_id, store = self.store, transaction = tx)]
    async fn pay(&self, payment_id: &str, cents: i64) -> Result<i64, IdempotencyError> {
        record(&mut tx, cents).await
    }
}

/// Behind `#[async_trait]`, as tonic services are written.
#[async_trait::async_trait]
trait Refunds {
    async fn refund(&self, payment_id: &str, cents: i64) -> Result<i64, IdempotencyError>;
}

#[async_trait::async_trait]
impl Refunds for Ledger {
    #[steadfast::idempotent(key = payment_id, store = self.store, transaction = tx)]
    async fn refund(&self, payment_id: &str, cents: i64) -> Result<i64, IdempotencyError> {
        record(&mut tx, -cents).await
    }
}

#[steadfast::idempotent(key = payment_id, store = store, transaction = tx)]
async fn deposit(
    store: Arc<SqliteStore>,
    payment_id: String,
    cents: i64,
) -> Result<i64, IdempotencyError> {
    record(&mut tx, cents).await
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let store = SqliteStore::connect("sqlite::memory:")
            .await
            .expect("SQLite");
        store.migrate().await.expect("the records table");
        sqlx::query("CREATE TABLE ledger (cents INTEGER NOT NULL)")
            .execute(store.pool())
            .await
            .expect("the ledger");
        let ledger = Ledger { store };
        for _ in 0..2 {
            assert_eq!(ledger.pay("p-1", 500).await.expect("paid"), 500);
        }
        for _ in 0..2 {
            assert_eq!(ledger.refund("r-1", 200).await.expect("refunded"), -200);
        }
        let store = Arc::new(ledger.store);
        for _ in 0..2 {
            assert_eq!(
                deposit(Arc::clone(&store), "d-1".to_owned(), 700)
                    .await
                    .expect("deposited"),
                700
            );
        }
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger")
            .fetch_one(store.pool())
            .await
            .expect("the count");
        assert_eq!(rows, 3, "each payment ran once");
    });
}
