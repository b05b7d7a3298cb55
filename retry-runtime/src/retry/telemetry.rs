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
    recorded::count(
        "steadfast_retries_total",
        recorded::labels(&["function", "code"], [function, code, ""]),
    );
    #[cfg(not(feature = "metrics"))]
    let _ = (function, code);
}

/// `function` returns its attempt's error (`code`) for `reason`.
#[inline]
pub(crate) fn gave_up(function: &'static str, code: &'static str, reason: &'static str) {
    #[cfg(feature = "metrics")]
    recorded::count(
        "steadfast_retry_give_ups_total",
        recorded::labels(&["function", "code", "reason"], [function, code, reason]),
    );
    #[cfg(not(feature = "metrics"))]
    let _ = (function, code, reason);
}

/// One more of the idempotency counter `name`.
#[inline]
pub(crate) fn idempotency(name: &'static str) {
    #[cfg(feature = "metrics")]
    recorded::count(name, &[]);
    #[cfg(not(feature = "metrics"))]
    let _ = name;
}

/// Counting without allocating: every label set is interned once, as a
/// `&'static [Label]` (there are finitely many: functions × codes ×
/// reasons), so that a retry after the first of its kind builds its key
/// from static parts. The counter is looked up in the current recorder at
/// each count, so a recorder installed late (or a test's local one) sees it.
#[cfg(feature = "metrics")]
mod recorded {
    use std::{
        collections::HashMap,
        sync::{Mutex, OnceLock, PoisonError},
    };

    use metrics::{Key, KeyName, Label, Level, Metadata};

    static METADATA: Metadata<'static> =
        Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

    /// Label names and values (unused trailing values `""`) → their interned labels.
    type Interned = HashMap<(&'static [&'static str], [&'static str; 3]), &'static [Label]>;

    static INTERNED: OnceLock<Mutex<Interned>> = OnceLock::new();

    pub(super) fn labels(
        names: &'static [&'static str],
        values: [&'static str; 3],
    ) -> &'static [Label] {
        let interned = INTERNED.get_or_init(Mutex::default);
        let mut interned = interned.lock().unwrap_or_else(PoisonError::into_inner);
        interned.entry((names, values)).or_insert_with(|| {
            let labels: Vec<Label> = names
                .iter()
                .zip(values)
                .map(|(name, value)| Label::from_static_parts(name, value))
                .collect();
            Box::leak(labels.into_boxed_slice())
        })
    }

    pub(super) fn count(name: &'static str, labels: &'static [Label]) {
        let key = Key::from_static_labels(KeyName::from_const_str(name), labels);
        metrics::with_recorder(|recorder| recorder.register_counter(&key, &METADATA)).increment(1);
    }
}
