//! Run to completion: once an idempotent body has started, a caller that
//! gives up (an outer timeout, a dropped future) neither cancels it nor
//! releases its claim; the body runs to its end, its result is stored, and
//! the retry gets it. Also: a drop before the claim is won leaves nothing
//! behind, and storing a result survives a slow or once-failing store.

use std::{
    sync::{
        Arc, LazyLock,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use steadfast::idempotency::{IdempotencyError, MemoryStore};
use steadfast_test_support::TestStore;
use tokio::time::{sleep, timeout};

static STORE: LazyLock<MemoryStore> = LazyLock::new(MemoryStore::new);
static EFFECTS: AtomicU32 = AtomicU32::new(0);

/// An ordinary handler, not fenced: the effect, then more work.
#[steadfast::idempotent(key = payment_id, store = STORE, in_progress = "wait(5s)")]
async fn pay(payment_id: String, cents: u64) -> Result<u64, IdempotencyError> {
    EFFECTS.fetch_add(1, Ordering::SeqCst);
    sleep(Duration::from_millis(300)).await;
    Ok(cents)
}

#[steadfast::idempotent(key = payment_id, store = STORE)]
async fn pay_rejecting(payment_id: String, cents: u64) -> Result<u64, IdempotencyError> {
    EFFECTS.fetch_add(1, Ordering::SeqCst);
    sleep(Duration::from_millis(300)).await;
    Ok(cents)
}

fn effects() -> u32 {
    EFFECTS.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_outer_timeout_does_not_run_the_body_twice() {
    let before = effects();
    // The caller gives up after 150 ms, mid-body, after the effect.
    assert!(
        timeout(Duration::from_millis(150), pay("p-timeout".into(), 5))
            .await
            .is_err()
    );
    // The retry waits for the first body instead of running it again.
    assert_eq!(pay("p-timeout".into(), 5).await.unwrap(), 5);
    assert_eq!(effects() - before, 1, "the body ran once");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_retry_gets_in_progress_then_the_stored_result() {
    let before = effects();
    assert!(
        timeout(
            Duration::from_millis(100),
            pay_rejecting("p-reject".into(), 7)
        )
        .await
        .is_err()
    );
    assert!(matches!(
        pay_rejecting("p-reject".into(), 7).await,
        Err(IdempotencyError::InProgress { .. })
    ));
    sleep(Duration::from_millis(400)).await;
    assert_eq!(pay_rejecting("p-reject".into(), 7).await.unwrap(), 7);
    assert_eq!(effects() - before, 1);
}

struct Service {
    store: TestStore,
    runs: AtomicU32,
}

impl Service {
    fn new(store: TestStore) -> Arc<Service> {
        Arc::new(Service {
            store,
            runs: AtomicU32::new(0),
        })
    }

    fn runs(&self) -> u32 {
        self.runs.load(Ordering::SeqCst)
    }

    /// A borrowing handler (`&self`): its body runs in its caller's future,
    /// but storing its result, once the body has ended, runs to its end.
    #[steadfast::idempotent(key = key, store = self.store)]
    async fn quick(&self, key: String) -> Result<u32, IdempotencyError> {
        Ok(self.runs.fetch_add(1, Ordering::SeqCst) + 1)
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_drop_while_the_result_is_stored_keeps_the_result() {
    let store = TestStore::slow(Duration::ZERO, Duration::from_millis(200), 0);
    let service = Service::new(store.clone());
    // The body ends at once; the caller leaves while `complete` is in flight.
    assert!(
        timeout(Duration::from_millis(50), service.quick("k-drop".into()))
            .await
            .is_err()
    );
    assert_eq!(service.runs(), 1);
    sleep(Duration::from_millis(300)).await;
    assert_eq!(
        service.quick("k-drop".into()).await.unwrap(),
        1,
        "replayed, not run again"
    );
    assert_eq!(service.runs(), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_complete_that_fails_once_is_retried() {
    let store = TestStore::slow(Duration::ZERO, Duration::ZERO, 1);
    let service = Service::new(store.clone());
    assert_eq!(service.quick("k-fail".into()).await.unwrap(), 1);
    assert_eq!(store.completes(), 2, "failed once, then stored");
    assert_eq!(service.quick("k-fail".into()).await.unwrap(), 1, "replayed");
    assert_eq!(service.runs(), 1);
}

static SLOW_CLAIMS: LazyLock<TestStore> =
    LazyLock::new(|| TestStore::slow(Duration::from_millis(100), Duration::ZERO, 0));
static CLAIM_RUNS: AtomicU32 = AtomicU32::new(0);

#[steadfast::idempotent(key = key, store = *SLOW_CLAIMS)]
async fn behind_a_slow_claim(key: String) -> Result<u32, IdempotencyError> {
    Ok(CLAIM_RUNS.fetch_add(1, Ordering::SeqCst) + 1)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_drop_before_the_claim_is_won_leaves_nothing_behind() {
    // The caller leaves while its claim is in flight: the claim lands, and
    // is given back at once rather than running the body for no one.
    assert!(
        timeout(
            Duration::from_millis(10),
            behind_a_slow_claim("k-claim".into())
        )
        .await
        .is_err()
    );
    sleep(Duration::from_millis(150)).await;
    assert_eq!(CLAIM_RUNS.load(Ordering::SeqCst), 0, "the body did not run");
    // Not blocked for a lease: the next call claims and runs.
    assert_eq!(behind_a_slow_claim("k-claim".into()).await.unwrap(), 1);
}

#[tokio::test]
async fn the_builder_refuses_settings_that_cannot_work() {
    let store = MemoryStore::new();
    let ran = Arc::new(AtomicU32::new(0));
    for (ttl, lease) in [
        (Duration::from_secs(10), Duration::from_secs(30)),
        (Duration::from_secs(30), Duration::from_secs(30)),
        (Duration::from_secs(60), Duration::from_micros(500)),
    ] {
        let counted = ran.clone();
        let result: Result<u32, IdempotencyError> =
            steadfast::idempotency::Idempotency::new(&store)
                .key("k-config")
                .ttl(ttl)
                .lease(lease)
                .run(|| async move { Ok(counted.fetch_add(1, Ordering::SeqCst)) })
                .await;
        assert!(
            matches!(result, Err(IdempotencyError::InvalidConfig { .. })),
            "ttl {ttl:?}, lease {lease:?}: {result:?}"
        );
    }
    assert_eq!(ran.load(Ordering::SeqCst), 0, "nothing ran");
}

static LONG_RUNS: AtomicU32 = AtomicU32::new(0);

/// A body that runs twice as long as its TTL, its lease renewed meanwhile.
#[steadfast::idempotent(key = key, store = STORE, ttl = "1s", lease = "300ms")]
async fn longer_than_its_ttl(key: String) -> Result<u32, IdempotencyError> {
    let run = LONG_RUNS.fetch_add(1, Ordering::SeqCst) + 1;
    sleep(Duration::from_secs(2)).await;
    Ok(run)
}

/// Real time: the stores' clock is the system's, which tokio cannot pause.
#[tokio::test]
async fn a_body_running_past_its_ttl_keeps_its_claim() {
    let first = tokio::spawn(longer_than_its_ttl("k-long".into()));
    sleep(Duration::from_millis(1300)).await;
    assert!(
        matches!(
            longer_than_its_ttl("k-long".into()).await,
            Err(IdempotencyError::InProgress { .. })
        ),
        "past the TTL, the renewed claim still holds"
    );
    assert_eq!(first.await.unwrap().unwrap(), 1);
    assert_eq!(
        longer_than_its_ttl("k-long".into()).await.unwrap(),
        1,
        "replayed: the TTL counts from completion"
    );
    assert_eq!(LONG_RUNS.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn retries_of_a_failing_complete_stay_within_the_lease() {
    // Lease 300 ms: retries may run for a third of it after the body ends,
    // so the 20 ms retry runs and the 100 ms one does not.
    let store = TestStore::slow(Duration::ZERO, Duration::ZERO, 5);
    let result: Result<u32, IdempotencyError> = steadfast::idempotency::Idempotency::new(&store)
        .key("k-window")
        .lease(Duration::from_millis(300))
        .run(|| async { Ok(1) })
        .await;
    assert_eq!(
        result.unwrap(),
        1,
        "the body's result, although it was not stored"
    );
    assert_eq!(store.completes(), 2, "one call and one retry");
}

static WAITED_STORE: LazyLock<TestStore> =
    LazyLock::new(|| TestStore::slow(Duration::ZERO, Duration::ZERO, 0));

#[steadfast::idempotent(key = key, store = *WAITED_STORE, in_progress = "wait(5s)")]
async fn slow_and_waited(key: String) -> Result<u32, IdempotencyError> {
    sleep(Duration::from_millis(300)).await;
    Ok(7)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_waiting_duplicate_whose_caller_left_stops_waiting() {
    let first = tokio::spawn(slow_and_waited("k-wait".into()));
    sleep(Duration::from_millis(10)).await;
    // A duplicate waits for the first, then its caller gives up.
    assert!(
        timeout(Duration::from_millis(50), slow_and_waited("k-wait".into()))
            .await
            .is_err()
    );
    assert_eq!(first.await.unwrap().unwrap(), 7);
    sleep(Duration::from_secs(1)).await;
    assert_eq!(
        WAITED_STORE.claims(),
        2,
        "the abandoned duplicate claimed once, and not again when the first ended"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn duplicates_through_other_handles_of_one_store_wait_without_polling() {
    // Two handles to the same records, as an axum `State` clone per request.
    let records = TestStore::slow(Duration::ZERO, Duration::ZERO, 0);
    let (first, second) = (records.clone(), records.clone());
    let wait = steadfast::idempotency::InProgressPolicy::Wait(Duration::from_secs(5));
    let slow = tokio::spawn(async move {
        steadfast::idempotency::Idempotency::new(&first)
            .key("k-handles")
            .in_progress(wait)
            .run(|| async {
                sleep(Duration::from_millis(500)).await;
                Ok::<u32, IdempotencyError>(3)
            })
            .await
    });
    sleep(Duration::from_millis(10)).await;
    let duplicate: Result<u32, IdempotencyError> =
        steadfast::idempotency::Idempotency::new(&second)
            .key("k-handles")
            .in_progress(wait)
            .run(|| async { Ok(4) })
            .await;
    assert_eq!(duplicate.unwrap(), 3, "the first result");
    assert_eq!(slow.await.unwrap().unwrap(), 3);
    assert_eq!(
        records.claims(),
        3,
        "the first claim, the duplicate's, and one more when it was woken: no polling"
    );
}
