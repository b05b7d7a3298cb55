//! [`TestStore`]: an instrumented `MemoryStore`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use steadfast_runtime::idempotency::{
    Claim, ClaimRequest, Completion, IdempotencyStore, MemoryStore, Millis, RecordKey, StoreError,
    StoreFuture,
};

/// A [`MemoryStore`] that counts its operations, and can take a while to
/// `claim` or `complete` (so that a caller can be dropped while they are in
/// flight) or fail its first `complete`s (`database is locked`).
///
/// Clones share the records and the counters, as handles to one database
/// do (their [`identity`](IdempotencyStore::identity) is equal), and
/// [`shared`](IdempotencyStore::shared) gives such a handle, so the store
/// supports run to completion.
///
/// ```
/// use steadfast_runtime::idempotency::{Idempotency, IdempotencyError};
/// use steadfast_test_support::TestStore;
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let store = TestStore::new();
/// let run = || Idempotency::new(&store).key("k-1").run(|| async { Ok::<_, IdempotencyError>(1) });
/// assert_eq!(run().await.unwrap(), 1);
/// assert_eq!(store.take_operations(), 2, "fresh: claim + complete");
/// assert_eq!(run().await.unwrap(), 1);
/// assert_eq!(store.take_operations(), 1, "replay: claim");
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct TestStore(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    records: MemoryStore,
    /// `None`: forwards at once; `Some`: sleeps first (a zero sleep too).
    claim_delay: Option<Duration>,
    complete_delay: Option<Duration>,
    complete_failures: AtomicU32,
    claims: AtomicU32,
    completes: AtomicU32,
    operations: AtomicU32,
}

impl TestStore {
    /// A store that answers at once and never fails.
    pub fn new() -> TestStore {
        TestStore::default()
    }

    /// A store whose `claim` sleeps `claim_delay` and whose `complete`
    /// sleeps `complete_delay` before they run (a zero delay still goes
    /// through the timer), and whose first
    /// `complete_failures` completes fail.
    pub fn slow(
        claim_delay: Duration,
        complete_delay: Duration,
        complete_failures: u32,
    ) -> TestStore {
        TestStore(Arc::new(Inner {
            claim_delay: Some(claim_delay),
            complete_delay: Some(complete_delay),
            complete_failures: AtomicU32::new(complete_failures),
            ..Inner::default()
        }))
    }

    /// `claim` calls so far.
    pub fn claims(&self) -> u32 {
        self.0.claims.load(Ordering::SeqCst)
    }

    /// `complete` calls so far, the failed ones included.
    pub fn completes(&self) -> u32 {
        self.0.completes.load(Ordering::SeqCst)
    }

    /// Operations of every kind since the last call (resets the count).
    pub fn take_operations(&self) -> u32 {
        self.0.operations.swap(0, Ordering::SeqCst)
    }

    fn count(&self) {
        self.0.operations.fetch_add(1, Ordering::SeqCst);
    }
}

impl IdempotencyStore for TestStore {
    fn claim<'a>(&'a self, request: &'a ClaimRequest<'a>) -> StoreFuture<'a, Claim> {
        self.count();
        Box::pin(async move {
            if let Some(delay) = self.0.claim_delay {
                tokio::time::sleep(delay).await;
            }
            self.0.claims.fetch_add(1, Ordering::SeqCst);
            self.0.records.claim(request).await
        })
    }

    fn complete<'a>(&'a self, completion: Completion<'a>) -> StoreFuture<'a, bool> {
        self.count();
        Box::pin(async move {
            if let Some(delay) = self.0.complete_delay {
                tokio::time::sleep(delay).await;
            }
            self.0.completes.fetch_add(1, Ordering::SeqCst);
            let failing = self
                .0
                .complete_failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                    left.checked_sub(1)
                })
                .is_ok();
            if failing {
                return Err(StoreError::msg("database is locked"));
            }
            self.0.records.complete(completion).await
        })
    }

    fn release<'a>(&'a self, key: &'a RecordKey, token: u64) -> StoreFuture<'a, bool> {
        self.count();
        self.0.records.release(key, token)
    }

    fn renew<'a>(&'a self, key: &'a RecordKey, token: u64, until: Millis) -> StoreFuture<'a, bool> {
        self.count();
        self.0.records.renew(key, token, until)
    }

    fn purge_expired(&self, now: Millis) -> StoreFuture<'_, u64> {
        self.count();
        self.0.records.purge_expired(now)
    }

    fn shared(&self) -> Option<Arc<dyn IdempotencyStore>> {
        Some(Arc::new(self.clone()))
    }

    fn identity(&self) -> usize {
        self.0.records.identity()
    }
}
