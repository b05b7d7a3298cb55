//! Process-wide counters of idempotent calls, for dashboards and demos.

use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) static EXECUTIONS: AtomicU64 = AtomicU64::new(0);
pub(crate) static REPLAYS: AtomicU64 = AtomicU64::new(0);
pub(crate) static IN_PROGRESS: AtomicU64 = AtomicU64::new(0);
pub(crate) static STORE_FAILURES: AtomicU64 = AtomicU64::new(0);
pub(crate) static LEASES_LOST: AtomicU64 = AtomicU64::new(0);

pub(crate) fn record(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Counters of every idempotent call in this process since it started.
///
/// ```
/// let before = retry_runtime::idempotency::stats();
/// assert!(retry_runtime::idempotency::stats().executions >= before.executions);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IdempotencyStats {
    /// Bodies run.
    pub executions: u64,
    /// Stored results replayed to duplicates.
    pub replays: u64,
    /// Duplicates rejected (or that gave up waiting) while the first ran.
    pub in_progress: u64,
    /// Results that could not be stored or claims not released (logged too).
    pub store_failures: u64,
    /// Leases taken over while their body ran.
    pub leases_lost: u64,
}

/// A snapshot of the counters.
pub fn stats() -> IdempotencyStats {
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    IdempotencyStats {
        executions: load(&EXECUTIONS),
        replays: load(&REPLAYS),
        in_progress: load(&IN_PROGRESS),
        store_failures: load(&STORE_FAILURES),
        leases_lost: load(&LEASES_LOST),
    }
}
