//! Retry budgets: protection against retry storms.
//!
//! When a server is overloaded, every client that retries multiplies its
//! load: with `max = 3`, a server that fails every call receives four times
//! the traffic it can already not serve, and it stays down. A budget bounds
//! retries to a fraction of successful calls, shared by every call that uses
//! it, so that a healthy service retries freely while a failing one quickly
//! stops retrying and lets the server recover.
//!
//! [`RetryBudget`] is the token bucket of the gRPC retry design ("retry
//! throttling"): it holds up to `max_tokens`; every failed attempt takes one
//! token, every success gives back `token_ratio`; retries are allowed only
//! while more than half of `max_tokens` remain.

use std::sync::atomic::{AtomicU64, Ordering};

/// A shared limit on retries: something to take from on each failure and to
/// give back to on each success.
pub trait Budget {
    /// A call succeeded: give back to the budget.
    fn deposit(&self);
    /// An attempt failed with a retryable error: take from the budget.
    /// Returns whether a retry is still allowed.
    fn withdraw(&self) -> bool;
}

const SCALE: u64 = 1000;

/// The gRPC retry-throttling token bucket. Share one per downstream service
/// (in a `static`, or an `Arc` in your client), and name it in
/// `#[retry(budget = …)]` or [`RetryPolicy::run_with_budget`](crate::RetryPolicy::run_with_budget).
///
/// # Default
/// `max_tokens = 10`, `token_ratio = 0.1`: after a burst of failures,
/// retries stop, and resume after about ten successes per retry.
///
/// ```
/// use steadfast::{Budget, RetryBudget};
/// static BUDGET: RetryBudget = RetryBudget::new(4, 0.5);
/// assert!(BUDGET.withdraw()); // 3 tokens left: above half of 4
/// assert!(!BUDGET.withdraw()); // 2 left: not above half, no retry
/// for _ in 0..3 {
///     BUDGET.deposit(); // 2 → 3.5 tokens
/// }
/// assert!(BUDGET.withdraw()); // 2.5 left: above half
/// ```
#[derive(Debug)]
pub struct RetryBudget {
    max_milli: u64,
    ratio_milli: u64,
    milli_tokens: AtomicU64,
}

impl RetryBudget {
    /// A full bucket of `max_tokens` that refills by `token_ratio` per success.
    ///
    /// # Panics
    /// If `max_tokens` is 0 or above 1000, or `token_ratio` is not in `(0, max_tokens]`.
    pub const fn new(max_tokens: u32, token_ratio: f64) -> RetryBudget {
        assert!(
            max_tokens > 0 && max_tokens <= 1000,
            "max_tokens must be in 1..=1000"
        );
        assert!(
            token_ratio > 0.0 && token_ratio <= max_tokens as f64,
            "token_ratio must be above 0 and at most max_tokens"
        );
        let max_milli = max_tokens as u64 * SCALE;
        RetryBudget {
            max_milli,
            ratio_milli: (token_ratio * SCALE as f64) as u64,
            milli_tokens: AtomicU64::new(max_milli),
        }
    }

    /// The tokens left, for metrics.
    pub fn tokens(&self) -> f64 {
        self.milli_tokens.load(Ordering::Relaxed) as f64 / SCALE as f64
    }
}

impl Default for RetryBudget {
    fn default() -> RetryBudget {
        RetryBudget::new(10, 0.1)
    }
}

impl Budget for RetryBudget {
    fn deposit(&self) {
        let _ = self
            .milli_tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tokens| {
                (tokens < self.max_milli).then(|| (tokens + self.ratio_milli).min(self.max_milli))
            });
    }

    fn withdraw(&self) -> bool {
        let before = self
            .milli_tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tokens| {
                Some(tokens.saturating_sub(SCALE))
            })
            .unwrap_or_default();
        before.saturating_sub(SCALE) > self.max_milli / 2
    }
}

impl AsRef<RetryBudget> for RetryBudget {
    fn as_ref(&self) -> &RetryBudget {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_drain_and_successes_refill() {
        let budget = RetryBudget::new(10, 0.1);
        let allowed = (0..10).filter(|_| budget.withdraw()).count();
        assert_eq!(allowed, 4, "10 → 9, 8, 7, 6 are above 5; 5 is not");
        assert_eq!(budget.tokens(), 0.0);
        for _ in 0..60 {
            budget.deposit();
        }
        assert!((budget.tokens() - 6.0).abs() < 1e-9);
        assert!(!budget.withdraw(), "6 → 5 is not above half");
        for _ in 0..1000 {
            budget.deposit();
        }
        assert_eq!(budget.tokens(), 10.0, "never above max_tokens");
    }

    #[test]
    fn concurrent_use_never_loses_tokens() {
        let budget = std::sync::Arc::new(RetryBudget::new(1000, 1.0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let budget = budget.clone();
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        budget.withdraw();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(budget.tokens(), 600.0);
    }
}
