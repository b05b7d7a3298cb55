//! Hedging through the public attribute, on tokio's paused clock: a slow
//! attempt is hedged after the delay, a retryable failure starts the next
//! at once, the first success or non-retryable error wins and the others
//! are dropped, at most `max + 1` attempts, the budget pays for hedges.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use steadfast::{Code, RetryBudget, previous_attempts, retry};
use tokio::time::Instant;

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// A backend whose attempts each take a set time and end as scripted, by
/// attempt number; it records when each started and which were dropped.
#[derive(Debug)]
struct Backend {
    script: Vec<(u64, Result<u32, Code>)>,
    started: Mutex<Vec<(u32, Duration)>>,
    finished: AtomicU32,
    dropped: AtomicU32,
    epoch: Instant,
}

impl Backend {
    fn new(script: Vec<(u64, Result<u32, Code>)>) -> Arc<Backend> {
        Arc::new(Backend {
            script,
            started: Mutex::new(Vec::new()),
            finished: AtomicU32::new(0),
            dropped: AtomicU32::new(0),
            epoch: Instant::now(),
        })
    }

    async fn call(&self) -> Result<u32, Code> {
        let attempt = previous_attempts().expect("inside an attempt");
        self.started
            .lock()
            .unwrap()
            .push((attempt, self.epoch.elapsed()));
        let (millis, outcome) = self.script[attempt as usize];
        let guard = DropCounter(&self.dropped);
        tokio::time::sleep(ms(millis)).await;
        std::mem::forget(guard);
        self.finished.fetch_add(1, Ordering::Relaxed);
        outcome
    }

    fn starts(&self) -> Vec<(u32, u128)> {
        self.started
            .lock()
            .unwrap()
            .iter()
            .map(|(attempt, at)| (*attempt, at.as_millis()))
            .collect()
    }
}

/// Counts the attempts dropped before they ended.
struct DropCounter<'a>(&'a AtomicU32);

impl Drop for DropCounter<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[retry(max = 3, hedge = "50ms", backoff = "none")]
async fn hedged(backend: &Backend) -> Result<u32, Code> {
    backend.call().await
}

#[tokio::test(start_paused = true)]
async fn a_slow_attempt_is_hedged_and_the_fast_one_wins() {
    let backend = Backend::new(vec![(1000, Ok(1)), (10, Ok(2))]);
    let started = Instant::now();
    assert_eq!(hedged(&backend).await, Ok(2));
    assert_eq!(
        started.elapsed(),
        ms(60),
        "the hedge at 50 ms answered 10 ms later"
    );
    assert_eq!(backend.starts(), [(0, 0), (1, 50)]);
    assert_eq!(
        backend.dropped.load(Ordering::Relaxed),
        1,
        "the slow attempt was dropped"
    );
}

#[tokio::test(start_paused = true)]
async fn a_fast_answer_needs_no_hedge() {
    let backend = Backend::new(vec![(10, Ok(1))]);
    assert_eq!(hedged(&backend).await, Ok(1));
    assert_eq!(backend.starts(), [(0, 0)]);
}

#[tokio::test(start_paused = true)]
async fn a_retryable_failure_starts_the_next_at_once() {
    let backend = Backend::new(vec![(5, Err(Code::Unavailable)), (5, Ok(2))]);
    let started = Instant::now();
    assert_eq!(hedged(&backend).await, Ok(2));
    assert_eq!(backend.starts(), [(0, 0), (1, 5)]);
    assert_eq!(started.elapsed(), ms(10));
}

#[tokio::test(start_paused = true)]
async fn a_non_retryable_error_wins_and_ends_the_others() {
    let backend = Backend::new(vec![(100, Ok(1)), (10, Err(Code::InvalidArgument))]);
    assert_eq!(hedged(&backend).await, Err(Code::InvalidArgument));
    assert_eq!(backend.starts(), [(0, 0), (1, 50)]);
    assert_eq!(backend.dropped.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn at_most_max_plus_one_attempts() {
    let slow = (10_000, Ok(1));
    let backend = Backend::new(vec![slow, slow, slow, (10_000, Ok(4)), slow]);
    assert_eq!(hedged(&backend).await, Ok(1), "the first to answer wins");
    assert_eq!(backend.starts(), [(0, 0), (1, 50), (2, 100), (3, 150)]);
    assert_eq!(backend.dropped.load(Ordering::Relaxed), 3);
}

#[tokio::test(start_paused = true)]
async fn every_attempt_failing_returns_the_last_error() {
    let fail = (5, Err(Code::Unavailable));
    let backend = Backend::new(vec![fail, fail, fail, (5, Err(Code::DeadlineExceeded))]);
    assert_eq!(hedged(&backend).await, Err(Code::DeadlineExceeded));
    assert_eq!(backend.starts().len(), 4);
}

static SPENT: RetryBudget = RetryBudget::new(2, 0.1);

#[retry(max = 3, hedge = "50ms", backoff = "none", budget = SPENT)]
async fn hedged_on_a_budget(backend: &Backend) -> Result<u32, Code> {
    backend.call().await
}

#[tokio::test(start_paused = true)]
async fn hedges_take_from_the_budget() {
    // Spend the budget: its two tokens go on two failures.
    let fail = (1, Err(Code::Unavailable));
    let backend = Backend::new(vec![fail, fail, fail, fail]);
    let _ = hedged_on_a_budget(&backend).await;
    // With nothing left, a slow attempt is not hedged.
    let backend = Backend::new(vec![(200, Ok(1)), (10, Ok(2))]);
    assert_eq!(hedged_on_a_budget(&backend).await, Ok(1));
    assert_eq!(backend.starts(), [(0, 0)], "no hedge without budget");
}

#[retry(max = 2, hedge = "20ms", backoff = "none", timeout = "30ms")]
async fn hedged_with_a_timeout(backend: &Backend) -> Result<u32, Code> {
    backend.call().await
}

#[tokio::test(start_paused = true)]
async fn each_attempt_has_its_timeout() {
    let slow = (1000, Ok(1));
    let backend = Backend::new(vec![slow, slow, slow]);
    let started = Instant::now();
    assert_eq!(
        hedged_with_a_timeout(&backend).await,
        Err(Code::DeadlineExceeded)
    );
    // Attempts at 0, 20 and 30 (the first timed out, which starts the next
    // at once); the last ends at 60.
    assert_eq!(backend.starts(), [(0, 0), (1, 20), (2, 30)]);
    assert_eq!(started.elapsed(), ms(60));
}

#[derive(Debug)]
struct Request {
    clones: Arc<AtomicU32>,
}

impl Clone for Request {
    fn clone(&self) -> Request {
        self.clones.fetch_add(1, Ordering::Relaxed);
        Request {
            clones: self.clones.clone(),
        }
    }
}

#[retry(max = 3, hedge = "50ms", backoff = "none")]
async fn hedged_owned(backend: &Backend, request: Request) -> Result<u32, Code> {
    let _ = &request;
    backend.call().await
}

#[tokio::test(start_paused = true)]
async fn owned_arguments_are_cloned_for_each_attempt() {
    let clones = Arc::new(AtomicU32::new(0));
    let backend = Backend::new(vec![(1000, Ok(1)), (10, Ok(2))]);
    let request = Request {
        clones: clones.clone(),
    };
    assert_eq!(hedged_owned(&backend, request).await, Ok(2));
    assert_eq!(clones.load(Ordering::Relaxed), 2);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_call_drops_every_attempt() {
    let backend = Backend::new(vec![(1000, Ok(1)), (1000, Ok(2)), (1000, Ok(3))]);
    let call = hedged(&backend);
    assert!(tokio::time::timeout(ms(120), call).await.is_err());
    assert_eq!(backend.starts().len(), 3);
    assert_eq!(backend.dropped.load(Ordering::Relaxed), 3);
}

#[retry(max = 3, backoff = "none")]
async fn outer_of_hedged(backend: &Backend) -> Result<u32, Code> {
    hedged(backend).await
}

#[tokio::test(start_paused = true)]
async fn hedges_inside_another_retried_call_share_its_retries() {
    let fail = (5, Err(Code::Unavailable));
    let backend = Backend::new(vec![fail; 16]);
    assert_eq!(outer_of_hedged(&backend).await, Err(Code::Unavailable));
    assert_eq!(backend.starts().len(), 4, "not 4 × 4 = 16");
}
