//! An injected clock (`IdempotencyConfig::with_clock`, `Idempotency::clock`)
//! on tokio's paused time: TTLs and leases end at their exact millisecond,
//! tested in no real time.

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use steadfast::idempotency::{
    Claim, ClaimRequest, Clock, Idempotency, IdempotencyError, IdempotencyStore, MemoryStore,
    Millis, RecordKey,
};

/// Tokio's time, in milliseconds from a fixed epoch: paused in these tests,
/// so it moves only when they advance it.
#[derive(Debug)]
struct TokioClock {
    epoch: Millis,
    start: tokio::time::Instant,
}

impl Clock for TokioClock {
    fn now_millis(&self) -> Millis {
        let elapsed = i64::try_from(self.start.elapsed().as_millis()).expect("a short test");
        self.epoch + elapsed
    }
}

/// A clock for one test (leaked: engines take `&'static dyn Clock`).
fn paused_clock() -> &'static TokioClock {
    Box::leak(Box::new(TokioClock {
        epoch: 1_700_000_000_000,
        start: tokio::time::Instant::now(),
    }))
}

async fn pay(
    store: &MemoryStore,
    clock: &'static TokioClock,
    runs: &AtomicU32,
) -> Result<u32, IdempotencyError> {
    Idempotency::new(store)
        .key("payment-1")
        .ttl(Duration::from_secs(10))
        .lease(Duration::from_secs(1))
        .clock(clock)
        .run(|| async { Ok(runs.fetch_add(1, Ordering::SeqCst) + 1) })
        .await
}

/// A result is replayed until the last millisecond of its TTL, counted from
/// completion, and the body runs again at the TTL's end.
#[tokio::test(start_paused = true)]
async fn a_result_is_kept_for_exactly_its_ttl() {
    let (store, clock, runs) = (MemoryStore::new(), paused_clock(), AtomicU32::new(0));
    assert_eq!(pay(&store, clock, &runs).await.unwrap(), 1);
    tokio::time::advance(Duration::from_millis(9_999)).await;
    assert_eq!(
        pay(&store, clock, &runs).await.unwrap(),
        1,
        "replayed within the TTL"
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(
        pay(&store, clock, &runs).await.unwrap(),
        2,
        "run again at the TTL's end"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

/// A claim whose owner went silent holds until the last millisecond of its
/// lease (a duplicate is told how long is left), and is taken over at its
/// end.
#[tokio::test(start_paused = true)]
async fn a_silent_owner_holds_its_claim_for_exactly_its_lease() {
    let (store, clock, runs) = (MemoryStore::new(), paused_clock(), AtomicU32::new(0));
    // The claim of a replica that died at once, stamped by the same clock.
    let key = RecordKey::new("", "payment-1").unwrap();
    let now = clock.now_millis();
    let dead = ClaimRequest {
        key: &key,
        token: 1,
        fingerprint: None,
        now,
        lease_until: now + 1_000,
        expires_at: now + 10_000,
    };
    assert_eq!(store.claim(&dead).await.unwrap(), Claim::Claimed);
    tokio::time::advance(Duration::from_millis(999)).await;
    match pay(&store, clock, &runs).await {
        Err(IdempotencyError::InProgress { retry_after }) => {
            assert_eq!(retry_after, Duration::from_millis(1));
        }
        other => panic!("expected InProgress in the lease's last ms, got {other:?}"),
    }
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(
        pay(&store, clock, &runs).await.unwrap(),
        1,
        "taken over at the lease's end"
    );
}

/// Without a clock of its own, the engine uses the system's: a real-time
/// record is not expired by the paused clock of a test.
#[test]
fn the_default_clock_is_the_systems() {
    use steadfast::idempotency::{IdempotencyConfig, SystemClock};
    let config = IdempotencyConfig::new();
    let drift = (config.clock().now_millis() - SystemClock.now_millis()).abs();
    assert!(drift < 1_000, "{drift} ms apart");
    assert_ne!(
        config,
        config.with_clock(&FROZEN),
        "configs differ by their clock"
    );
}

/// A clock stopped at the epoch.
#[derive(Debug)]
struct Frozen;

impl Clock for Frozen {
    fn now_millis(&self) -> Millis {
        0
    }
}

static FROZEN: Frozen = Frozen;
