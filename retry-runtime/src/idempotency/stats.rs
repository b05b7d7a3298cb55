//! Process-wide counters of idempotent calls, for dashboards and demos.

use std::sync::atomic::{AtomicU64, Ordering};

/// A process-wide counter, also exported as the `metrics` counter `metric`
/// (feature `metrics`).
pub(crate) struct Stat {
    count: AtomicU64,
    metric: &'static str,
}

impl Stat {
    const fn new(metric: &'static str) -> Stat {
        Stat {
            count: AtomicU64::new(0),
            metric,
        }
    }
}

pub(crate) static EXECUTIONS: Stat = Stat::new("steadfast_idempotency_executions_total");
pub(crate) static REPLAYS: Stat = Stat::new("steadfast_idempotency_replays_total");
pub(crate) static IN_PROGRESS: Stat = Stat::new("steadfast_idempotency_in_progress_total");
pub(crate) static STORE_FAILURES: Stat = Stat::new("steadfast_idempotency_store_failures_total");
pub(crate) static LEASES_LOST: Stat = Stat::new("steadfast_idempotency_leases_lost_total");
pub(crate) static RESULTS_LOST: Stat = Stat::new("steadfast_idempotency_results_lost_total");

pub(crate) fn record(stat: &Stat) {
    stat.count.fetch_add(1, Ordering::Relaxed);
    crate::retry::telemetry::idempotency(stat.metric);
}

/// Counters of every idempotent call in this process since it started.
/// With the feature `metrics` they are also exported through the `metrics`
/// facade as `steadfast_idempotency_{executions,replays,in_progress,store_failures,leases_lost,results_lost}_total`.
///
/// ```
/// let before = steadfast::idempotency::stats();
/// assert!(steadfast::idempotency::stats().executions >= before.executions);
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
    /// Duplicates answered `ResultLost`: a fenced body's owner died before
    /// storing its result.
    pub results_lost: u64,
}

/// A snapshot of the counters.
pub fn stats() -> IdempotencyStats {
    let load = |stat: &Stat| stat.count.load(Ordering::Relaxed);
    IdempotencyStats {
        executions: load(&EXECUTIONS),
        replays: load(&REPLAYS),
        in_progress: load(&IN_PROGRESS),
        store_failures: load(&STORE_FAILURES),
        leases_lost: load(&LEASES_LOST),
        results_lost: load(&RESULTS_LOST),
    }
}
