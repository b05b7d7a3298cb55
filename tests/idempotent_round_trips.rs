//! Store operations per request: a fresh request claims and completes (2),
//! a replay only claims (1). Each operation is one statement on PostgreSQL
//! and SQLite (one round trip); see the README for MySQL.

use steadfast::idempotency::IdempotencyError;
use steadfast_test_support::TestStore;

#[steadfast::idempotent(key = key, store = store)]
async fn handler(store: &TestStore, key: &str, fail: bool) -> Result<u64, IdempotencyError> {
    if fail {
        return Err(IdempotencyError::LeaseLost);
    }
    Ok(42)
}

#[tokio::test]
async fn fresh_requests_take_two_operations_and_replays_one() {
    let store = TestStore::new();
    handler(&store, "k-1", false).await.unwrap();
    assert_eq!(store.take_operations(), 2, "fresh: claim + complete");
    handler(&store, "k-1", false).await.unwrap();
    assert_eq!(store.take_operations(), 1, "replay: claim");
    handler(&store, "k-2", true).await.unwrap_err();
    assert_eq!(store.take_operations(), 2, "error: claim + release");
}
