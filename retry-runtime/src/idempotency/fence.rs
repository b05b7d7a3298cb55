//! The claim of the body that is running, and the fence: the mark a body
//! puts on its claim inside its own database transaction, so that its
//! effects and "this request has run" commit together.
//!
//! A fenced record is a claim (no result yet) whose lease never lapses (its
//! `lease_until` is at least [`FENCED_LEASE`]): no other caller takes it
//! over before its TTL ends, `renew` and `release` leave it alone, and only
//! its owner's `complete` changes it. Its owner stores the result moments
//! after the commit; duplicates meanwhile get `InProgress`. If the owner
//! dies in between, the result is lost: once a lease has passed since the
//! fence (`lease_until - FENCED_LEASE`), duplicates get
//! [`ResultLost`](super::IdempotencyError::ResultLost), which no client
//! retries, never a second run. A body that runs in the engine's
//! transaction (`transaction = tx`) stores its result in the same commit
//! and never ends so.

use std::{
    cell::RefCell,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use super::{Millis, RecordKey};

/// The least `lease_until` of a fenced claim: `2^62` ms, past any clock, so
/// that its lease never lapses. A fence writes `FENCED_LEASE` plus the time
/// at which its owner, if it has not stored the result by then, is taken
/// for dead ([`fenced_lease`]).
pub const FENCED_LEASE: Millis = 1 << 62;

/// The `lease_until` a claim fenced at `now` is given: [`FENCED_LEASE`]
/// plus `now + lease`.
pub fn fenced_lease(now: Millis, lease: std::time::Duration) -> Millis {
    let lease = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    FENCED_LEASE.saturating_add(now.max(0).saturating_add(lease).min(FENCED_LEASE - 1))
}

/// For a fenced claim's `lease_until`, when its owner is taken for dead;
/// `None` for a claim that is not fenced.
pub(crate) fn fenced_owner_deadline(lease_until: Millis) -> Option<Millis> {
    (lease_until >= FENCED_LEASE).then(|| lease_until - FENCED_LEASE)
}

/// How long a duplicate of a fenced claim is told to wait before asking
/// again: its owner normally stores the result within milliseconds.
pub(crate) const FENCED_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug)]
struct ClaimState {
    key: RecordKey,
    token: u64,
    lease: std::time::Duration,
    clock: &'static dyn super::Clock,
    fenced: AtomicBool,
    stored: AtomicBool,
    uncertain: AtomicBool,
}

/// The claim under which the current `#[idempotent]` body (or
/// [`Idempotency::run`](super::Idempotency::run) closure) runs: its record
/// and its fencing token. Stores' `fence` methods read it.
///
/// ```
/// use steadfast::idempotency::{Idempotency, IdempotencyError, MemoryStore, current_claim};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// assert!(current_claim().is_none(), "outside a body there is none");
/// let store = MemoryStore::new();
/// let scope: Result<String, IdempotencyError> = Idempotency::new(&store)
///     .key("order-7")
///     .run(|| async { Ok(current_claim().expect("inside the body").record_key().scope().to_owned()) })
///     .await;
/// assert_eq!(scope.unwrap(), "");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct CurrentClaim(Arc<ClaimState>);

impl CurrentClaim {
    pub(crate) fn new(
        key: RecordKey,
        token: u64,
        lease: std::time::Duration,
        clock: &'static dyn super::Clock,
    ) -> CurrentClaim {
        CurrentClaim(Arc::new(ClaimState {
            key,
            token,
            lease,
            clock,
            fenced: AtomicBool::new(false),
            stored: AtomicBool::new(false),
            uncertain: AtomicBool::new(false),
        }))
    }

    /// The record: scope and key hash.
    pub fn record_key(&self) -> &RecordKey {
        &self.0.key
    }

    /// The fencing token the claim was made with.
    pub fn token(&self) -> u64 {
        self.0.token
    }

    /// The claim's lease: how long its owner may stay silent before others
    /// take it for dead.
    pub fn lease(&self) -> std::time::Duration {
        self.0.lease
    }

    /// The clock of the claim's engine, which stamps what its store writes.
    pub fn clock(&self) -> &'static dyn super::Clock {
        self.0.clock
    }

    /// Whether the body has fenced its claim (in a transaction that may
    /// still roll back).
    pub fn is_fenced(&self) -> bool {
        self.0.fenced.load(Ordering::Acquire)
    }

    /// Records that a fence statement succeeded (stores call this).
    pub fn mark_fenced(&self) {
        self.0.fenced.store(true, Ordering::Release);
    }

    /// Whether the body's result is stored already, committed in the
    /// body's own transaction: the engine has nothing left to store.
    pub(crate) fn is_stored(&self) -> bool {
        self.0.stored.load(Ordering::Acquire)
    }

    /// Whether the commit of the body's transaction failed without saying
    /// whether it took effect: the record must be left as it is.
    pub(crate) fn is_uncertain(&self) -> bool {
        self.0.uncertain.load(Ordering::Acquire)
    }

    /// Records a commit whose outcome is unknown.
    #[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
    pub(crate) fn mark_uncertain(&self) {
        self.0.uncertain.store(true, Ordering::Release);
    }

    /// Records that the result committed with the body's transaction.
    #[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
    pub(crate) fn mark_stored(&self) {
        self.0.stored.store(true, Ordering::Release);
    }

    /// Runs `poll` with this claim current on this thread, restoring the
    /// previous one after (nested bodies see their own claim).
    pub(crate) fn enter<R>(&self, poll: impl FnOnce() -> R) -> R {
        struct Restore(Option<CurrentClaim>);
        impl Drop for Restore {
            fn drop(&mut self) {
                CURRENT.with(|current| *current.borrow_mut() = self.0.take());
            }
        }
        let previous = CURRENT.with(|current| current.borrow_mut().replace(self.clone()));
        let _restore = Restore(previous);
        poll()
    }
}

thread_local! {
    static CURRENT: RefCell<Option<CurrentClaim>> = const { RefCell::new(None) };
}

/// The claim of the idempotent body being polled on this thread, if any.
/// Tasks the body spawns do not see it: fence in the body itself.
pub fn current_claim() -> Option<CurrentClaim> {
    CURRENT.with(|current| current.borrow().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: std::time::Duration = std::time::Duration::from_secs(2);

    fn claim(key: &str, token: u64) -> CurrentClaim {
        let key = RecordKey::new("s", key).unwrap();
        CurrentClaim::new(key, token, LEASE, &super::super::SystemClock)
    }

    #[test]
    fn a_fenced_lease_is_marked_and_carries_its_owners_deadline() {
        let lease = fenced_lease(1_700_000_000_000, LEASE);
        assert!(lease >= FENCED_LEASE);
        assert_eq!(fenced_owner_deadline(lease), Some(1_700_000_002_000));
        assert_eq!(fenced_owner_deadline(1_700_000_002_000), None);
        // Absurd inputs saturate and stay fenced.
        let far = fenced_lease(i64::MAX, std::time::Duration::MAX);
        assert!(far >= FENCED_LEASE && fenced_owner_deadline(far).is_some());
        // A record fenced by an older version (`i64::MAX`) is fenced, its
        // owner never taken for dead.
        assert!(fenced_owner_deadline(i64::MAX).unwrap() > 1 << 61);
    }

    #[test]
    fn nested_claims_are_restored() {
        let outer = claim("outer", 1);
        let inner = claim("inner", 2);
        assert!(current_claim().is_none());
        outer.enter(|| {
            assert_eq!(current_claim().unwrap().token(), 1);
            inner.enter(|| assert_eq!(current_claim().unwrap().token(), 2));
            assert_eq!(current_claim().unwrap().token(), 1);
        });
        assert!(current_claim().is_none());
    }

    #[test]
    fn a_panicking_poll_restores_the_previous_claim() {
        let claim = claim("k", 3);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            claim.enter(|| panic!("body panicked"))
        }));
        assert!(caught.is_err());
        assert!(current_claim().is_none());
    }

    #[test]
    fn marking_is_shared_by_clones() {
        let claim = claim("k", 4);
        let clone = claim.clone();
        assert!(!claim.is_fenced());
        clone.mark_fenced();
        assert!(claim.is_fenced());
    }
}
