//! The claim of the body that is running, and the fence: the mark a body
//! puts on its claim inside its own database transaction, so that its
//! effects and "this request has run" commit together.
//!
//! A fenced record is a claim (no result yet) whose lease never lapses
//! ([`FENCED_LEASE`]): no other caller takes it over before its TTL ends,
//! `renew` and `release` leave it alone, and only its owner's `complete`
//! changes it. If the process dies after the commit and before the result
//! is stored, duplicates get `InProgress` until the TTL, never a second run.

use std::{
    cell::RefCell,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use super::{Millis, RecordKey};

/// The `lease_until` of a fenced claim: the largest value a signed 64-bit
/// column holds, so that the lease never lapses.
pub const FENCED_LEASE: Millis = i64::MAX;

/// How long a duplicate of a fenced claim is told to wait before asking
/// again: its owner normally stores the result within milliseconds.
pub(crate) const FENCED_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug)]
struct ClaimState {
    key: RecordKey,
    token: u64,
    fenced: AtomicBool,
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
    pub(crate) fn new(key: RecordKey, token: u64) -> CurrentClaim {
        CurrentClaim(Arc::new(ClaimState {
            key,
            token,
            fenced: AtomicBool::new(false),
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

    /// Whether the body has fenced its claim (in a transaction that may
    /// still roll back).
    pub fn is_fenced(&self) -> bool {
        self.0.fenced.load(Ordering::Acquire)
    }

    /// Records that a fence statement succeeded (stores call this).
    pub fn mark_fenced(&self) {
        self.0.fenced.store(true, Ordering::Release);
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

    #[test]
    fn nested_claims_are_restored() {
        let outer = CurrentClaim::new(RecordKey::new("s", "outer").unwrap(), 1);
        let inner = CurrentClaim::new(RecordKey::new("s", "inner").unwrap(), 2);
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
        let claim = CurrentClaim::new(RecordKey::new("s", "k").unwrap(), 3);
        let caught = std::panic::catch_unwind(|| claim.enter(|| panic!("body panicked")));
        assert!(caught.is_err());
        assert!(current_claim().is_none());
    }

    #[test]
    fn marking_is_shared_by_clones() {
        let claim = CurrentClaim::new(RecordKey::new("s", "k").unwrap(), 4);
        let clone = claim.clone();
        assert!(!claim.is_fenced());
        clone.mark_fenced();
        assert!(claim.is_fenced());
    }
}
