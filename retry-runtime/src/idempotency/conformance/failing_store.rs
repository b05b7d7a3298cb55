//! [`FailingStore`]: a store that fails chosen operations, for fault tests.

use std::{
    fmt,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
};

use super::super::{
    Claim, ClaimRequest, Completion, IdempotencyStore, Millis, RecordKey, StoreError, StoreFuture,
};

/// A store that forwards to `S` but fails chosen operations with a
/// [`StoreError`], and counts every call (failed ones included): for fault
/// tests of code over a store.
///
/// ```
/// use steadfast::idempotency::{Idempotency, IdempotencyError, MemoryStore, conformance::FailingStore};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let store = FailingStore::new(MemoryStore::new());
/// store.fail_claims(true);
/// let result: Result<u32, IdempotencyError> = Idempotency::new(&store).key("k").run(|| async { Ok(1) }).await;
/// assert!(matches!(result, Err(IdempotencyError::Store(_))));
/// assert_eq!(store.calls().claims, 1);
/// # }
/// ```
pub struct FailingStore<S> {
    inner: S,
    fail_claims: AtomicBool,
    fail_completes: AtomicBool,
    fail_releases: AtomicBool,
    fail_renews: AtomicBool,
    fail_purges: AtomicBool,
    claims: AtomicU64,
    completes: AtomicU64,
    releases: AtomicU64,
    detached_releases: AtomicU64,
    renews: AtomicU64,
    purges: AtomicU64,
}

/// How many times each operation of a [`FailingStore`] was called.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreCalls {
    /// `claim`.
    pub claims: u64,
    /// `complete`.
    pub completes: u64,
    /// `release`.
    pub releases: u64,
    /// `release_detached`.
    pub detached_releases: u64,
    /// `renew`.
    pub renews: u64,
    /// `purge_expired`.
    pub purges: u64,
}

impl<S> FailingStore<S> {
    /// Forwards every operation to `inner` until told to fail.
    pub fn new(inner: S) -> FailingStore<S> {
        FailingStore {
            inner,
            fail_claims: AtomicBool::new(false),
            fail_completes: AtomicBool::new(false),
            fail_releases: AtomicBool::new(false),
            fail_renews: AtomicBool::new(false),
            fail_purges: AtomicBool::new(false),
            claims: AtomicU64::new(0),
            completes: AtomicU64::new(0),
            releases: AtomicU64::new(0),
            detached_releases: AtomicU64::new(0),
            renews: AtomicU64::new(0),
            purges: AtomicU64::new(0),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Unwraps the store.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Makes `claim` fail (without reaching the inner store), or work again.
    pub fn fail_claims(&self, fail: bool) {
        self.fail_claims.store(fail, Ordering::SeqCst);
    }

    /// Makes `complete` fail (without reaching the inner store), or work again.
    pub fn fail_completes(&self, fail: bool) {
        self.fail_completes.store(fail, Ordering::SeqCst);
    }

    /// Makes `release` fail, and `release_detached` do nothing (without
    /// reaching the inner store), or work again.
    pub fn fail_releases(&self, fail: bool) {
        self.fail_releases.store(fail, Ordering::SeqCst);
    }

    /// Makes `renew` fail (without reaching the inner store), or work again.
    pub fn fail_renews(&self, fail: bool) {
        self.fail_renews.store(fail, Ordering::SeqCst);
    }

    /// Makes `purge_expired` fail (without reaching the inner store), or work again.
    pub fn fail_purges(&self, fail: bool) {
        self.fail_purges.store(fail, Ordering::SeqCst);
    }

    /// Makes every operation fail, or work again.
    pub fn fail_all(&self, fail: bool) {
        for flag in [
            &self.fail_claims,
            &self.fail_completes,
            &self.fail_releases,
            &self.fail_renews,
            &self.fail_purges,
        ] {
            flag.store(fail, Ordering::SeqCst);
        }
    }

    /// The calls so far.
    pub fn calls(&self) -> StoreCalls {
        let load = |counter: &AtomicU64| counter.load(Ordering::SeqCst);
        StoreCalls {
            claims: load(&self.claims),
            completes: load(&self.completes),
            releases: load(&self.releases),
            detached_releases: load(&self.detached_releases),
            renews: load(&self.renews),
            purges: load(&self.purges),
        }
    }

    /// Counts a call; `true` if it must fail.
    fn enter(&self, counter: &AtomicU64, fail: &AtomicBool) -> bool {
        counter.fetch_add(1, Ordering::SeqCst);
        fail.load(Ordering::SeqCst)
    }
}

impl<S> fmt::Debug for FailingStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flag = |flag: &AtomicBool| flag.load(Ordering::SeqCst);
        f.debug_struct("FailingStore")
            .field("fail_claims", &flag(&self.fail_claims))
            .field("fail_completes", &flag(&self.fail_completes))
            .field("fail_releases", &flag(&self.fail_releases))
            .field("fail_renews", &flag(&self.fail_renews))
            .field("fail_purges", &flag(&self.fail_purges))
            .field("calls", &self.calls())
            .finish_non_exhaustive()
    }
}

fn injected<'a, T: Send + 'a>(operation: &str) -> StoreFuture<'a, T> {
    let error = StoreError::msg(format!("{operation} failed (injected by FailingStore)"));
    Box::pin(std::future::ready(Err(error)))
}

impl<S: IdempotencyStore> IdempotencyStore for FailingStore<S> {
    fn claim<'a>(&'a self, request: &'a ClaimRequest<'a>) -> StoreFuture<'a, Claim> {
        if self.enter(&self.claims, &self.fail_claims) {
            return injected("claim");
        }
        self.inner.claim(request)
    }

    fn complete<'a>(&'a self, completion: Completion<'a>) -> StoreFuture<'a, bool> {
        if self.enter(&self.completes, &self.fail_completes) {
            return injected("complete");
        }
        self.inner.complete(completion)
    }

    fn release<'a>(&'a self, key: &'a RecordKey, token: u64) -> StoreFuture<'a, bool> {
        if self.enter(&self.releases, &self.fail_releases) {
            return injected("release");
        }
        self.inner.release(key, token)
    }

    fn renew<'a>(&'a self, key: &'a RecordKey, token: u64, until: Millis) -> StoreFuture<'a, bool> {
        if self.enter(&self.renews, &self.fail_renews) {
            return injected("renew");
        }
        self.inner.renew(key, token, until)
    }

    fn purge_expired(&self, now: Millis) -> StoreFuture<'_, u64> {
        if self.enter(&self.purges, &self.fail_purges) {
            return injected("purge_expired");
        }
        self.inner.purge_expired(now)
    }

    fn release_detached(&self, key: RecordKey, token: u64) {
        if !self.enter(&self.detached_releases, &self.fail_releases) {
            self.inner.release_detached(key, token);
        }
    }
}
