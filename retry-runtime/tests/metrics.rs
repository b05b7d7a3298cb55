//! The `metrics` feature: retries, give-ups and idempotency outcomes are
//! counted through the `metrics` facade, with the labels a dashboard needs,
//! and a call that succeeds at once records nothing.
//!
//! Each test installs a recorder of its own for its thread (the tests run on
//! current-thread runtimes), so they do not see each other's counts.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use metrics::{
    Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use steadfast_runtime::{
    Classify, Code, Elapsed, FromTimeout, RetryPolicy,
    idempotency::{Idempotency, IdempotencyError, InProgressPolicy, MemoryStore},
};

/// Counters by `name{label=value,…}` (labels sorted).
#[derive(Default)]
struct TestRecorder {
    counters: Mutex<BTreeMap<String, Arc<Count>>>,
}

#[derive(Default)]
struct Count(AtomicU64);

impl CounterFn for Count {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }

    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::Relaxed);
    }
}

impl TestRecorder {
    fn get(&self, name: &str) -> u64 {
        self.counters
            .lock()
            .unwrap()
            .get(name)
            .map_or(0, |count| count.0.load(Ordering::Relaxed))
    }

    fn names(&self) -> Vec<String> {
        self.counters.lock().unwrap().keys().cloned().collect()
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut labels: Vec<String> = key
            .labels()
            .map(|label| format!("{}={}", label.key(), label.value()))
            .collect();
        labels.sort();
        let name = if labels.is_empty() {
            key.name().to_owned()
        } else {
            format!("{}{{{}}}", key.name(), labels.join(","))
        };
        let count = Arc::clone(self.counters.lock().unwrap().entry(name).or_default());
        Counter::from_arc(count)
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// An error of a chosen code.
#[derive(Debug)]
struct Failure(Code);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "failed with {:?}", self.0)
    }
}

impl Classify for Failure {
    fn code(&self) -> Option<Code> {
        Some(self.0)
    }
}

impl FromTimeout for Failure {
    fn from_timeout(_: Elapsed) -> Failure {
        Failure(Code::DeadlineExceeded)
    }
}

fn policy(max: u32) -> RetryPolicy {
    RetryPolicy::builder()
        .max_retries(max)
        .backoff("const(1ms)")
        .on("Unavailable|DeadlineExceeded")
        .build()
        .unwrap()
}

const UNAVAILABLE_RETRIES: &str =
    "steadfast_retries_total{code=Unavailable,function=RetryPolicy::run}";

#[tokio::test(start_paused = true)]
async fn retries_and_give_ups_are_counted_with_code_and_reason() {
    let recorder = TestRecorder::default();
    let _local = metrics::set_default_local_recorder(&recorder);

    let mut failures = 2;
    let result: Result<u32, Failure> = policy(3)
        .run(|| {
            let fail = failures > 0;
            failures -= 1;
            async move {
                if fail {
                    Err(Failure(Code::Unavailable))
                } else {
                    Ok(7)
                }
            }
        })
        .await;
    assert_eq!(result.unwrap(), 7);
    assert_eq!(
        recorder.get(UNAVAILABLE_RETRIES),
        2,
        "{:?}",
        recorder.names()
    );

    always_failing(1, Code::Unavailable).await;
    assert_eq!(recorder.get(UNAVAILABLE_RETRIES), 3);
    assert_once(
        &recorder,
        "steadfast_retry_give_ups_total{code=Unavailable,function=RetryPolicy::run,reason=exhausted}",
    );

    always_failing(3, Code::InvalidArgument).await;
    assert_once(
        &recorder,
        "steadfast_retry_give_ups_total{code=InvalidArgument,function=RetryPolicy::run,reason=not_retryable}",
    );
}

/// Runs a call that always fails with `code`, under `policy(max)`.
async fn always_failing(max: u32, code: Code) {
    let result: Result<u32, Failure> = policy(max).run(|| async move { Err(Failure(code)) }).await;
    assert!(result.is_err());
}

/// The counter `name` was recorded once.
#[track_caller]
fn assert_once(recorder: &TestRecorder, name: &str) {
    assert_eq!(recorder.get(name), 1, "{:?}", recorder.names());
}

#[tokio::test(start_paused = true)]
async fn a_call_that_succeeds_at_once_records_nothing() {
    let recorder = TestRecorder::default();
    let _local = metrics::set_default_local_recorder(&recorder);
    let result: Result<u32, Failure> = policy(3).run(|| async { Ok(1) }).await;
    assert_eq!(result.unwrap(), 1);
    assert!(recorder.names().is_empty(), "{:?}", recorder.names());
}

#[tokio::test]
async fn idempotency_outcomes_are_counted() {
    let recorder = TestRecorder::default();
    let _local = metrics::set_default_local_recorder(&recorder);
    let store = MemoryStore::new();
    for _ in 0..3 {
        let result: Result<u32, IdempotencyError> = Idempotency::new(&store)
            .key("order-1")
            .run(|| async { Ok(5) })
            .await;
        assert_eq!(result.unwrap(), 5);
    }
    assert_eq!(recorder.get("steadfast_idempotency_executions_total"), 1);
    assert_eq!(recorder.get("steadfast_idempotency_replays_total"), 2);

    let gate = tokio::sync::Notify::new();
    let first = Idempotency::new(&store).key("order-2").run(|| async {
        gate.notified().await;
        Ok::<u32, IdempotencyError>(1)
    });
    let duplicate = async {
        tokio::task::yield_now().await;
        let refused: Result<u32, IdempotencyError> = Idempotency::new(&store)
            .key("order-2")
            .in_progress(InProgressPolicy::Reject)
            .run(|| async { Ok(2) })
            .await;
        assert!(matches!(refused, Err(IdempotencyError::InProgress { .. })));
        gate.notify_one();
    };
    let (first, ()) = tokio::join!(first, duplicate);
    assert_eq!(first.unwrap(), 1);
    assert_eq!(recorder.get("steadfast_idempotency_in_progress_total"), 1);
    assert_eq!(recorder.get("steadfast_idempotency_executions_total"), 2);
}
