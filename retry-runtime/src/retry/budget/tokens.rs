//! [`RetryBudget`]: the token bucket of gRPC's retry throttling.

use std::sync::atomic::{AtomicU64, Ordering};

use super::Budget;

/// Tokens are kept in thousandths: gRPC allows `token_ratio` to three
/// decimal places.
const SCALE: u64 = 1000;

/// The token bucket of gRPC's retry throttling (gRPC proposal A6), shared
/// by every call to one server. Put one in a `static` (its constructor is a
/// `const fn`) or in your client, and name it in `#[retry(budget = …)]` or
/// [`RetryPolicy::run_with_budget`](crate::RetryPolicy::run_with_budget).
///
/// It follows A6 exactly:
///
/// - the bucket starts full, at `max_tokens`, and never holds more, nor
///   fewer than 0;
/// - every attempt that fails with a code the policy retries, or with a
///   pushback that says not to retry, takes one token, *whether or not a
///   retry follows*: the last attempt of a call that ran out of retries,
///   and an attempt whose retry the deadline forbids, still tell of a
///   server in trouble, and A6 counts every failed RPC;
/// - every successful attempt gives back `token_ratio`;
/// - an error the policy does not retry (`InvalidArgument`, …) neither
///   takes nor gives: it says nothing about the server's health;
/// - a retry is made only while more than `max_tokens / 2` are left. The
///   check takes nothing more: the failure already paid, so a retry that is
///   not made (the budget says no, retries are spent, the deadline is near)
///   costs the same as one that is.
///
/// So with the defaults, retries stop once failures outnumber successes by
/// about ten to one, and resume after about ten successes per failure since.
/// All updates are single atomic operations: no lock, no clock.
///
/// # Default
/// `max_tokens = 10`, `token_ratio = 0.1`, the values of A6's example.
///
/// ```
/// use steadfast::{Budget, RetryBudget};
/// static BUDGET: RetryBudget = RetryBudget::new(4, 0.5);
/// BUDGET.record_failure(); // 3 tokens
/// assert!(BUDGET.withdraw()); // above half of 4: retry
/// BUDGET.record_failure(); // 2 tokens
/// assert!(!BUDGET.withdraw()); // not above half: no retry
/// BUDGET.record_success();
/// BUDGET.record_success(); // 3 tokens
/// assert!(BUDGET.withdraw());
/// assert_eq!(BUDGET.tokens(), 3.0, "a withdrawal takes nothing: the failure paid");
/// ```
#[derive(Debug)]
pub struct RetryBudget {
    max_milli: u64,
    ratio_milli: u64,
    milli_tokens: AtomicU64,
}

impl RetryBudget {
    /// A full bucket of `max_tokens` that refills by `token_ratio` per
    /// success (three decimal places are kept, as in A6).
    ///
    /// # Panics
    /// If `max_tokens` is 0 or above 1000, or `token_ratio` is not in
    /// `[0.001, max_tokens]` (at compile time, in a `static` or `const`).
    pub const fn new(max_tokens: u32, token_ratio: f64) -> RetryBudget {
        assert!(
            max_tokens > 0 && max_tokens <= 1000,
            "max_tokens must be in 1..=1000"
        );
        assert!(
            token_ratio >= 0.001 && token_ratio <= max_tokens as f64,
            "token_ratio must be at least 0.001 and at most max_tokens"
        );
        let max_milli = max_tokens as u64 * SCALE;
        RetryBudget {
            max_milli,
            ratio_milli: (token_ratio * SCALE as f64) as u64,
            milli_tokens: AtomicU64::new(max_milli),
        }
    }

    /// The tokens left, for metrics and tests.
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
    fn record_success(&self) {
        // A full bucket is left as it is: no write on the common path.
        let _ = self
            .milli_tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tokens| {
                (tokens < self.max_milli).then(|| (tokens + self.ratio_milli).min(self.max_milli))
            });
    }

    fn record_failure(&self) {
        let _ = self
            .milli_tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tokens| {
                (tokens > 0).then(|| tokens.saturating_sub(SCALE))
            });
    }

    fn withdraw(&self) -> bool {
        self.milli_tokens.load(Ordering::Relaxed) > self.max_milli / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_drain_and_successes_refill() {
        let budget = RetryBudget::new(10, 0.1);
        let allowed = (0..10)
            .filter(|_| {
                budget.record_failure();
                budget.withdraw()
            })
            .count();
        assert_eq!(allowed, 4, "10 → 9, 8, 7, 6 are above 5; 5 is not");
        assert_eq!(budget.tokens(), 0.0);
        budget.record_failure();
        assert_eq!(budget.tokens(), 0.0, "never below zero");
        for _ in 0..60 {
            budget.record_success();
        }
        assert!((budget.tokens() - 6.0).abs() < 1e-9);
        assert!(budget.withdraw(), "6 is above half");
        budget.record_failure();
        assert!(!budget.withdraw(), "5 is not above half");
        for _ in 0..1000 {
            budget.record_success();
        }
        assert_eq!(budget.tokens(), 10.0, "never above max_tokens");
    }

    #[test]
    fn withdrawing_takes_nothing() {
        let budget = RetryBudget::new(10, 0.1);
        for _ in 0..100 {
            assert!(budget.withdraw());
        }
        assert_eq!(budget.tokens(), 10.0);
    }

    #[test]
    fn concurrent_use_never_loses_tokens() {
        let budget = std::sync::Arc::new(RetryBudget::new(1000, 1.0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let budget = budget.clone();
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        budget.record_failure();
                        budget.record_success();
                        budget.record_failure();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(budget.tokens(), 600.0, "1000 - 4 × 100 × (2 - 1)");
    }
}
