//! Budgets through the public attribute: what each attempt tells the budget
//! (gRPC A6's rules for `RetryBudget`), when a retry withdraws, and the load
//! a storm of calls against a dead server makes with each budget.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use steadfast::{Budget, Classify, Code, RatioBudget, RetryAfter, RetryBudget};

/// An error with a code and an optional pushback.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Failure {
    code: Code,
    pushback: Option<RetryAfter>,
}

impl Classify for Failure {
    fn code(&self) -> Option<Code> {
        Some(self.code)
    }

    fn retry_after(&self) -> Option<RetryAfter> {
        self.pushback
    }
}

const UNAVAILABLE: Failure = Failure {
    code: Code::Unavailable,
    pushback: None,
};

/// A budget that allows everything and counts what it is told.
#[derive(Debug, Default)]
struct Counting {
    calls: AtomicU32,
    successes: AtomicU32,
    failures: AtomicU32,
    withdrawals: AtomicU32,
}

impl Counting {
    /// `[calls, successes, failures, withdrawals]`.
    fn counts(&self) -> [u32; 4] {
        [
            &self.calls,
            &self.successes,
            &self.failures,
            &self.withdrawals,
        ]
        .map(|count| count.load(Ordering::SeqCst))
    }
}

impl Budget for Counting {
    fn record_call(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
    }

    fn record_success(&self) {
        self.successes.fetch_add(1, Ordering::SeqCst);
    }

    fn record_failure(&self) {
        self.failures.fetch_add(1, Ordering::SeqCst);
    }

    fn withdraw(&self) -> bool {
        self.withdrawals.fetch_add(1, Ordering::SeqCst);
        true
    }
}

/// Answers each attempt from `outcomes`, in order (the last one repeats).
#[steadfast::retry(max = 2, backoff = "none", budget = budget)]
async fn scripted<B: Budget>(
    budget: &B,
    outcomes: &[Result<(), Failure>],
    attempts: &AtomicU32,
) -> Result<(), Failure> {
    let attempt = attempts.fetch_add(1, Ordering::SeqCst) as usize;
    outcomes[attempt.min(outcomes.len() - 1)]
}

async fn run_scripted(budget: &impl Budget, outcomes: &[Result<(), Failure>]) -> u32 {
    let attempts = AtomicU32::new(0);
    let _ = scripted(budget, outcomes, &attempts).await;
    attempts.into_inner()
}

#[tokio::test]
async fn each_attempt_tells_the_budget_what_happened() {
    // Fails twice, then succeeds: two failures, two retries, one success.
    let budget = Counting::default();
    let attempts = run_scripted(&budget, &[Err(UNAVAILABLE), Err(UNAVAILABLE), Ok(())]).await;
    assert_eq!(attempts, 3);
    assert_eq!(budget.counts(), [1, 1, 2, 2]);

    // Out of retries (max = 2): the last failure is recorded, but no
    // retry is withdrawn for it.
    let budget = Counting::default();
    assert_eq!(run_scripted(&budget, &[Err(UNAVAILABLE)]).await, 3);
    assert_eq!(budget.counts(), [1, 0, 3, 2]);

    // An error the policy does not retry says nothing about the server.
    let budget = Counting::default();
    let invalid = Failure {
        code: Code::InvalidArgument,
        pushback: None,
    };
    assert_eq!(run_scripted(&budget, &[Err(invalid)]).await, 1);
    assert_eq!(budget.counts(), [1, 0, 0, 0]);
}

/// `RetryPolicy::run_with_budget` tells the budget what the attribute does.
#[tokio::test]
async fn the_policy_run_tells_the_budget_as_the_attribute_does() {
    let policy = steadfast::RetryPolicy::parse("none")
        .expect("a backoff")
        .with_max_retries(2);
    let outcomes = [Err(UNAVAILABLE), Err(UNAVAILABLE), Ok(())];
    let budget = Counting::default();
    let attempts = AtomicU32::new(0);
    let result = policy
        .run_with_budget(&budget, || async {
            let attempt = attempts.fetch_add(1, Ordering::SeqCst) as usize;
            outcomes[attempt]
        })
        .await;
    assert_eq!(result, Ok(()));
    assert_eq!(attempts.into_inner(), 3);
    assert_eq!(budget.counts(), [1, 1, 2, 2]);

    // Success at once: one call, one success, nothing else.
    let budget = Counting::default();
    let result = policy
        .run_with_budget(&budget, || async { Ok::<(), Failure>(()) })
        .await;
    assert_eq!(result, Ok(()));
    assert_eq!(budget.counts(), [1, 1, 0, 0]);
}

#[tokio::test]
async fn a_pushback_that_says_stop_is_a_failure_whatever_the_code() {
    for code in [Code::Unavailable, Code::InvalidArgument] {
        let budget = Counting::default();
        let stop = Failure {
            code,
            pushback: Some(RetryAfter::Stop),
        };
        assert_eq!(run_scripted(&budget, &[Err(stop)]).await, 1, "{code:?}");
        assert_eq!(budget.counts(), [1, 0, 1, 0], "{code:?}");
    }
}

#[steadfast::retry(
    max = 2,
    backoff = "const(100ms)",
    jitter = "none",
    deadline = "500ms",
    budget = budget
)]
async fn near_a_deadline(budget: &Counting, attempts: &AtomicU32) -> Result<(), Code> {
    attempts.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(150)).await;
    Err(Code::Unavailable)
}

#[tokio::test(start_paused = true)]
async fn a_retry_the_deadline_forbids_withdraws_nothing() {
    let budget = Counting::default();
    let attempts = AtomicU32::new(0);
    assert_eq!(
        near_a_deadline(&budget, &attempts).await,
        Err(Code::Unavailable)
    );
    // Fails at 150 ms: a sleep of 100 ms fits in the 350 left, retry.
    // Fails again at 400 ms: 100 ms do not fit in the 100 left, so no
    // retry, and nothing is withdrawn for it (the failure still counts).
    assert_eq!(attempts.into_inner(), 2);
    assert_eq!(budget.counts(), [1, 0, 2, 1]);
}

#[tokio::test]
async fn the_retry_budget_takes_a_token_for_every_retryable_failure() {
    let budget = RetryBudget::new(100, 0.5);
    // Three failures (the first attempt and max = 2 retries): three tokens,
    // the last one too although no retry follows it.
    assert_eq!(run_scripted(&budget, &[Err(UNAVAILABLE)]).await, 3);
    assert_eq!(budget.tokens(), 97.0);
    // One failure, then a success: a token out, half a token back.
    assert_eq!(run_scripted(&budget, &[Err(UNAVAILABLE), Ok(())]).await, 2);
    assert_eq!(budget.tokens(), 96.5);
    // A pushback that says stop takes one too.
    let stop = Failure {
        code: Code::Unavailable,
        pushback: Some(RetryAfter::Stop),
    };
    assert_eq!(run_scripted(&budget, &[Err(stop)]).await, 1);
    assert_eq!(budget.tokens(), 95.5);
    // A non-retryable error takes nothing.
    let invalid = Failure {
        code: Code::InvalidArgument,
        pushback: None,
    };
    assert_eq!(run_scripted(&budget, &[Err(invalid)]).await, 1);
    assert_eq!(budget.tokens(), 95.5);
}

#[steadfast::retry(max = 3, backoff = "exp(10ms)", budget = budget)]
async fn dead_server<B: Budget>(budget: &B, attempts: &AtomicU32) -> Result<(), Code> {
    attempts.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1)).await;
    Err(Code::Unavailable)
}

/// 100 concurrent calls against a server that fails every one: the
/// attempts it receives.
async fn storm<B: Budget + 'static>(budget: Arc<B>) -> u32 {
    let attempts = Arc::new(AtomicU32::new(0));
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let (budget, attempts) = (budget.clone(), attempts.clone());
        calls.spawn(async move { dead_server(&*budget, &attempts).await });
    }
    while let Some(call) = calls.join_next().await {
        assert_eq!(call.unwrap(), Err(Code::Unavailable));
    }
    attempts.load(Ordering::SeqCst)
}

#[tokio::test(start_paused = true)]
async fn without_a_budget_a_dead_server_gets_four_times_the_calls() {
    assert_eq!(storm(Arc::new(None::<RetryBudget>)).await, 400);
}

#[tokio::test(start_paused = true)]
async fn a_retry_budget_keeps_a_dead_server_within_a_tenth_more() {
    let attempts = storm(Arc::new(RetryBudget::default())).await;
    // 10 tokens: the first failures take them down to 5, after which
    // nothing is retried: 100 calls + 5 retries at most.
    assert!(attempts <= 105, "{attempts} attempts for 100 calls");
}

#[tokio::test(start_paused = true)]
async fn a_ratio_budget_keeps_a_dead_server_within_its_share() {
    let budget = RatioBudget::new(10.0).with_min_per_second(0);
    let attempts = storm(Arc::new(budget)).await;
    assert_eq!(attempts, 110, "10 % of 100 calls retried, no more");
    let floored = RatioBudget::new(10.0).with_min_per_second(2);
    let attempts = storm(Arc::new(floored)).await;
    assert_eq!(
        attempts, 130,
        "10 % of the calls, plus 2 a second over 10 s"
    );
}
