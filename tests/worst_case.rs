//! `RetryPolicy::worst_case` against the real engine on tokio's paused
//! clock: an operation that always fails, each attempt running until its
//! timeout cuts it, never makes more attempts or takes longer than the
//! bound, and reaches it exactly where the bound is tight (no jitter, no
//! deadline).

use std::time::Duration;

use steadfast::{Backoff, Jitter, RetryPolicy};
use tokio::time::Instant;

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// Runs `policy` over an operation that never answers before its timeout;
/// returns the attempts made and the time the call took.
async fn run_to_exhaustion(policy: &RetryPolicy) -> (u32, Duration) {
    let started = Instant::now();
    let mut attempts = 0;
    let result: Result<(), std::io::Error> = policy
        .run_timed(|| {
            attempts += 1;
            std::future::pending()
        })
        .await;
    assert_eq!(
        result.unwrap_err().kind(),
        std::io::ErrorKind::TimedOut,
        "the last attempt ran out of time"
    );
    (attempts, started.elapsed())
}

fn policies() -> Vec<RetryPolicy> {
    let backoffs = [
        "none",
        "const(70ms)",
        "linear(30ms, max = 100ms)",
        "exp(20ms, factor = 3)",
        "fib(25ms)",
    ];
    let jitters = ["none", "full", "equal", "decorrelated", "40%"];
    let mut policies = Vec::new();
    for backoff in backoffs {
        for jitter in jitters {
            for max in [1, 4] {
                policies.push(
                    RetryPolicy::builder()
                        .max_retries(max)
                        .backoff(backoff)
                        .jitter(jitter)
                        .timeout(ms(50))
                        .build()
                        .unwrap(),
                );
            }
        }
    }
    policies
}

#[tokio::test(start_paused = true)]
async fn no_run_exceeds_the_worst_case() {
    for policy in policies() {
        let worst = policy.worst_case();
        let total = worst.total.expect("a timeout bounds every attempt");
        for _ in 0..20 {
            let (attempts, took) = run_to_exhaustion(&policy).await;
            assert_eq!(
                attempts, worst.attempts,
                "{policy:?}: every attempt fails and no deadline stops them"
            );
            assert!(took <= total, "{policy:?}: {took:?} > {total:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn without_jitter_the_worst_case_is_reached_exactly() {
    for policy in policies()
        .into_iter()
        .filter(|policy| policy.jitter() == Jitter::None)
    {
        let worst = policy.worst_case();
        assert_eq!(
            run_to_exhaustion(&policy).await,
            (worst.attempts, worst.total.unwrap()),
            "{policy:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn under_a_deadline_no_run_exceeds_the_worst_case() {
    for deadline in [ms(120), ms(260), ms(400), ms(5000)] {
        for policy in policies() {
            let policy = policy.with_deadline(deadline);
            let worst = policy.worst_case();
            for _ in 0..5 {
                let (attempts, took) = run_to_exhaustion(&policy).await;
                assert!(
                    attempts <= worst.attempts,
                    "{policy:?}: {attempts} attempts > {}",
                    worst.attempts
                );
                assert!(took <= worst.total.unwrap(), "{policy:?}: {took:?}");
                assert!(took <= deadline, "{policy:?}: {took:?}");
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn attempts_that_fail_at_once_reach_the_deadlines_attempt_count() {
    // Attempts that take no time and sleeps at their only length: the
    // count of attempts that fit is exact.
    for deadline in [100, 101, 300, 301, 700, 701] {
        let policy = RetryPolicy::new()
            .with_backoff(Backoff::exponential(ms(100)))
            .with_jitter(Jitter::None)
            .with_deadline(ms(deadline));
        let mut attempts = 0;
        let result: Result<(), std::io::Error> = policy
            .run_timed(|| {
                attempts += 1;
                async { Err(std::io::ErrorKind::ConnectionRefused.into()) }
            })
            .await;
        assert!(result.is_err());
        assert_eq!(
            attempts,
            policy.worst_case().attempts,
            "deadline = {deadline}ms"
        );
    }
}

/// The attribute runs the policy it describes: the same bound holds.
#[steadfast::retry(max = 2, backoff = "linear(100ms)", jitter = "none", timeout = "1s")]
async fn always_slow(attempts: &mut u32) -> Result<(), std::io::Error> {
    *attempts += 1;
    std::future::pending().await
}

#[tokio::test(start_paused = true)]
async fn the_attribute_reaches_the_worst_case_of_its_policy() {
    const POLICY: RetryPolicy = RetryPolicy::new()
        .with_max_retries(2)
        .with_backoff(Backoff::linear(Duration::from_millis(100)))
        .with_jitter(Jitter::None)
        .with_timeout(Duration::from_secs(1));
    const WORST: steadfast::WorstCase = POLICY.worst_case();
    const _: () = assert!(WORST.attempts == 3);
    let started = Instant::now();
    let mut attempts = 0;
    always_slow(&mut attempts).await.unwrap_err();
    assert_eq!(
        (attempts, Some(started.elapsed())),
        (WORST.attempts, WORST.total)
    );
    assert_eq!(WORST.total, Some(ms(3000 + 100 + 200)));
}

/// With full jitter a sleep may be zero, so any deadline has room for every
/// attempt: the attribute accepts it.
#[steadfast::retry(max = 3, backoff = "exp(1s)", deadline = "10ms")]
async fn refused_quickly(attempts: &mut u32) -> Result<(), std::io::Error> {
    *attempts += 1;
    Err(std::io::ErrorKind::ConnectionRefused.into())
}

#[tokio::test(start_paused = true)]
async fn a_deadline_shorter_than_the_schedule_is_accepted_under_full_jitter() {
    let mut attempts = 0;
    refused_quickly(&mut attempts).await.unwrap_err();
    assert!((1..=4).contains(&attempts), "{attempts}");
}
