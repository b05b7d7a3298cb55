//! Store operations per request: a fresh request claims and completes (2),
//! a replay only claims (1). Each operation is one statement on PostgreSQL
//! and SQLite (one round trip); see the README for MySQL.

use std::sync::atomic::{AtomicU32, Ordering};

use steadfast::idempotency::{
    Claim, ClaimRequest, IdempotencyError, IdempotencyStore, MemoryStore, Millis, RecordKey,
    StoreFuture,
};

/// Forwards to a `MemoryStore`, counting every operation.
#[derive(Default)]
struct CountingStore {
    inner: MemoryStore,
    operations: AtomicU32,
}

impl CountingStore {
    fn take(&self) -> u32 {
        self.operations.swap(0, Ordering::SeqCst)
    }

    fn count(&self) {
        self.operations.fetch_add(1, Ordering::SeqCst);
    }
}

impl IdempotencyStore for CountingStore {
    fn claim<'a>(&'a self, request: &'a ClaimRequest<'a>) -> StoreFuture<'a, Claim> {
        self.count();
        self.inner.claim(request)
    }

    fn complete<'a>(
        &'a self,
        key: &'a RecordKey,
        token: u64,
        payload: &'a [u8],
        expires_at: Millis,
    ) -> StoreFuture<'a, bool> {
        self.count();
        self.inner.complete(key, token, payload, expires_at)
    }

    fn release<'a>(&'a self, key: &'a RecordKey, token: u64) -> StoreFuture<'a, bool> {
        self.count();
        self.inner.release(key, token)
    }

    fn renew<'a>(
        &'a self,
        key: &'a RecordKey,
        token: u64,
        lease_until: Millis,
    ) -> StoreFuture<'a, bool> {
        self.count();
        self.inner.renew(key, token, lease_until)
    }

    fn purge_expired(&self, now: Millis) -> StoreFuture<'_, u64> {
        self.count();
        self.inner.purge_expired(now)
    }
}

#[steadfast::idempotent(key = key, store = store)]
async fn handler(store: &CountingStore, key: &str, fail: bool) -> Result<u64, IdempotencyError> {
    if fail {
        return Err(IdempotencyError::LeaseLost);
    }
    Ok(42)
}

#[tokio::test]
async fn fresh_requests_take_two_operations_and_replays_one() {
    let store = CountingStore::default();
    handler(&store, "k-1", false).await.unwrap();
    assert_eq!(store.take(), 2, "fresh: claim + complete");
    handler(&store, "k-1", false).await.unwrap();
    assert_eq!(store.take(), 1, "replay: claim");
    handler(&store, "k-2", true).await.unwrap_err();
    assert_eq!(store.take(), 2, "error: claim + release");
}
