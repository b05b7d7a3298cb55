//! Retry budgets: protection against retry storms.
//!
//! # Why a budget, and not only `max`
//!
//! `max = 3` is a guess that works while failures are rare. When a server
//! is overloaded, every client that retries multiplies its load: with
//! `max = 3`, a server that fails every call receives four times the traffic
//! it already cannot serve, and stays down. Worse, retries compound across
//! layers: a service that retries three times, called by one that retries
//! three times, turns one failure into sixteen attempts. This is a retry
//! storm, and the server's recovery waits for it to end.
//!
//! A budget is shared by every call to one downstream service (a `static`,
//! or a field of the client), and bounds retries by what the service has
//! been doing lately: while calls succeed, the rare failure is retried
//! freely; when most calls fail, retries stop and the load falls back to
//! about what the callers offer. `#[retry(budget = EXPR)]` takes any
//! [`Budget`]; two come with the crate:
//!
//! - [`RetryBudget`], the token bucket of gRPC's retry throttling (gRPC
//!   proposal A6): failures take tokens, successes give back a fraction,
//!   and retries stop while half the bucket or less is left. It reacts to
//!   the *ratio* of failures to successes, needs no clock, and is a `const`.
//! - [`RatioBudget`], Finagle's retry budget (tower's `TpsBudget`): retries
//!   may be at most a percentage of the calls made over a sliding window
//!   (10 s by default), plus a small floor per second for clients that make
//!   few calls. It bounds the *extra load* directly: at 10 %, the server
//!   never sees more than 1.1 times what the callers offer, however badly
//!   it fails.

use std::sync::Arc;

mod ratio;
mod tokens;

pub use ratio::RatioBudget;
pub use tokens::RetryBudget;

/// A shared limit on retries, told what every call does and asked before
/// every retry.
///
/// # How a call uses a budget
///
/// For one call under `#[retry(budget = …)]` (or
/// [`RetryPolicy::run_with_budget`](crate::RetryPolicy::run_with_budget)),
/// the engine calls, in this order:
///
/// 1. [`record_call`](Budget::record_call) once, as the call starts;
/// 2. after each attempt, [`record_success`](Budget::record_success) if it
///    succeeded, or [`record_failure`](Budget::record_failure) if it failed
///    with a code the policy retries, or with a pushback that says not to
///    retry (every such attempt, the last one too, whether or not a retry
///    follows); an error the policy does not retry records nothing;
/// 3. [`withdraw`](Budget::withdraw) once per retry that is about to be
///    made, after every other check has passed (retries left, no pushback
///    saying stop, the sleep ends before the deadline): a retry that is not
///    made for another reason takes nothing.
///
/// # Your own budget
///
/// Implement the trait; every method but `withdraw` does nothing by default.
/// A budget is shared between tasks, so it is `Send + Sync`: keep its state
/// in atomics (or behind a lock, if it is not on a hot path).
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use steadfast::{Budget, Code};
///
/// /// At most `limit` retries, ever: a budget for a batch job.
/// struct AtMost {
///     left: AtomicU32,
/// }
///
/// impl Budget for AtMost {
///     fn withdraw(&self) -> bool {
///         self.left
///             .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(1))
///             .is_ok()
///     }
/// }
///
/// static RETRIES: AtMost = AtMost { left: AtomicU32::new(2) };
///
/// #[steadfast::retry(max = 3, backoff = "none", budget = RETRIES)]
/// async fn flaky(attempts: &mut u32) -> Result<(), Code> {
///     *attempts += 1;
///     Err(Code::Unavailable)
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mut attempts = 0;
/// assert_eq!(flaky(&mut attempts).await, Err(Code::Unavailable));
/// assert_eq!(attempts, 3, "the first attempt, and the 2 retries the budget had");
/// # }
/// ```
///
/// Implemented for [`RetryBudget`], [`RatioBudget`], your own types, and
/// through references, [`Arc`] and [`Box`] (so `budget = self.budget` works
/// with a field of type `Arc<RetryBudget>` or `Arc<dyn Budget>`), and for
/// [`Option`]: `None` allows every retry, for clients whose budget is a
/// setting.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a retry budget, so `budget = …` cannot draw retries from it",
    label = "this is not a `steadfast::Budget`",
    note = "name a shared budget: a `static BUDGET: steadfast::RetryBudget = steadfast::RetryBudget::new(10, 0.1);` (gRPC retry throttling), or a `steadfast::RatioBudget` (a share of the calls), or a field holding one (`budget = self.budget`)",
    note = "or implement `steadfast::Budget` for `{Self}`: `fn withdraw(&self) -> bool` is the one method without a default"
)]
pub trait Budget: Send + Sync {
    /// A call starts: its first attempt is about to run. Does nothing by
    /// default; [`RatioBudget`] counts the call here (its retries are a
    /// share of calls).
    #[inline]
    fn record_call(&self) {}

    /// An attempt succeeded. Does nothing by default; [`RetryBudget`] gives
    /// back `token_ratio` here.
    #[inline]
    fn record_success(&self) {}

    /// An attempt failed with a code the policy retries, or with a pushback
    /// that says not to retry: the server is in trouble. Called for every
    /// such attempt, the last one included, whether or not a retry follows.
    /// Does nothing by default; [`RetryBudget`] takes a token here.
    #[inline]
    fn record_failure(&self) {}

    /// A retry is about to be made, and every other check allows it: take
    /// what it costs and return `true`, or return `false` and the call
    /// returns the attempt's error instead.
    fn withdraw(&self) -> bool;
}

/// A budget behind a reference or a pointer, as a call's state holds it.
impl std::fmt::Debug for dyn Budget + '_ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dyn Budget")
    }
}

/// Forwards every method to the budget `Self` holds.
macro_rules! forward_budget {
    ($($ty:ty),*) => {$(
        impl<B: Budget + ?Sized> Budget for $ty {
            #[inline]
            fn record_call(&self) {
                (**self).record_call();
            }

            #[inline]
            fn record_success(&self) {
                (**self).record_success();
            }

            #[inline]
            fn record_failure(&self) {
                (**self).record_failure();
            }

            #[inline]
            fn withdraw(&self) -> bool {
                (**self).withdraw()
            }
        }
    )*};
}

forward_budget!(&B, Arc<B>, Box<B>);

/// An optional budget: `Some` is the budget it holds, `None` allows every
/// retry (and records nothing).
///
/// ```
/// use steadfast::{Budget, RetryBudget};
/// let unlimited: Option<RetryBudget> = None;
/// unlimited.record_failure();
/// assert!(unlimited.withdraw());
/// ```
impl<B: Budget> Budget for Option<B> {
    #[inline]
    fn record_call(&self) {
        if let Some(budget) = self {
            budget.record_call();
        }
    }

    #[inline]
    fn record_success(&self) {
        if let Some(budget) = self {
            budget.record_success();
        }
    }

    #[inline]
    fn record_failure(&self) {
        if let Some(budget) = self {
            budget.record_failure();
        }
    }

    #[inline]
    fn withdraw(&self) -> bool {
        self.as_ref().is_none_or(Budget::withdraw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrappers_forward_to_the_budget_they_hold() {
        let shared = Arc::new(RetryBudget::new(4, 1.0));
        let as_dyn: Arc<dyn Budget> = shared.clone();
        as_dyn.record_failure();
        Some(&shared).record_failure();
        Box::new(&*shared).record_success();
        assert_eq!(shared.tokens(), 3.0, "4 - 1 - 1 + 1");
        assert!(as_dyn.withdraw(), "3 > 2");
        assert!(None::<RetryBudget>.withdraw());
    }
}
