//! Counters for dashboards through the `metrics` facade (feature `metrics`;
//! without it every function here is an empty inline fn). Only failures and
//! idempotency outcomes are counted: a call that succeeds at once records
//! nothing, so the success path stays as cheap as without the feature.
//!
//! | counter | labels | counts |
//! |---|---|---|
//! | `steadfast_retries_total` | `function`, `code` | attempts that failed and are retried |
//! | `steadfast_retry_give_ups_total` | `function`, `code`, `reason` | failures returned to the caller: `not_retryable`, `exhausted`, `server_stop`, `budget`, `deadline` |
//! | `steadfast_idempotency_executions_total` | | idempotent bodies run |
//! | `steadfast_idempotency_replays_total` | | stored results replayed |
//! | `steadfast_idempotency_in_progress_total` | | duplicates refused while the first ran |
//! | `steadfast_idempotency_store_failures_total` | | results not stored, claims not released |
//! | `steadfast_idempotency_leases_lost_total` | | leases taken over while their body ran |

/// An attempt of `function` failed with `code` and will be retried.
#[inline]
pub(crate) fn retried(function: &'static str, code: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("steadfast_retries_total", "function" => function, "code" => code)
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (function, code);
}

/// `function` returns its attempt's error (`code`) for `reason`.
#[inline]
pub(crate) fn gave_up(function: &'static str, code: &'static str, reason: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(
        "steadfast_retry_give_ups_total",
        "function" => function,
        "code" => code,
        "reason" => reason
    )
    .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (function, code, reason);
}

/// One more of the idempotency counter `name`.
#[inline]
pub(crate) fn idempotency(name: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(name).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = name;
}
