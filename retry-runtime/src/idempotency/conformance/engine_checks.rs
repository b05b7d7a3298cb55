//! Engine-level checks: `Idempotency` over the store under test, with a
//! `FailingStore` around it where a fault is the point.

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use super::super::{Fingerprint, Idempotency, IdempotencyError, IdempotencyStore, now_millis};

use super::FailingStore;
use super::{
    LEASE, RACERS, TTL,
    check::{Check, KitError, tokens},
    race::{join_all, yield_once},
};

/// Three sequential calls with one key run the body once and all get its
/// result; another key runs its own body.
pub async fn engine_replays_duplicates<S: IdempotencyStore + ?Sized>(store: &S) {
    let check = Check::new("engine_replays_duplicates", store);
    let runs = AtomicU32::new(0);
    let call = |key: &'static str| {
        check.idempotency().key(key).run(|| async {
            let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
            Ok::<_, KitError>(format!("receipt of run {run}"))
        })
    };
    for attempt in 1..=3 {
        check.expect(
            call("order-1").await,
            &format!("call {attempt} with one key"),
            "the first run's receipt",
            |got| matches!(got, Ok(receipt) if receipt == "receipt of run 1"),
        );
    }
    check.expect(
        call("order-2").await,
        "a call with another key",
        "its own run",
        |got| matches!(got, Ok(receipt) if receipt == "receipt of run 2"),
    );
    let runs = runs.load(Ordering::SeqCst);
    check.ensure(
        runs == 2,
        format_args!("the bodies ran {runs} times for 4 calls with 2 keys, expected 2"),
    );
}

/// 64 calls with one key, polled concurrently on this task while the first
/// body is pending: the body runs once; every call gets its result or
/// `InProgress`.
pub async fn engine_concurrent_duplicates<S: IdempotencyStore + ?Sized>(store: &S) {
    let check = Check::new("engine_concurrent_duplicates", store);
    let runs = AtomicU32::new(0);
    let calls: Vec<_> = (0..RACERS)
        .map(|_| {
            Box::pin(check.idempotency().key("contended").run(|| async {
                runs.fetch_add(1, Ordering::SeqCst);
                yield_once().await;
                Ok::<_, KitError>(42u64)
            }))
        })
        .collect();
    let results = join_all(calls).await;
    let runs = runs.load(Ordering::SeqCst);
    check.ensure(
        runs == 1,
        format_args!("{RACERS} concurrent calls with one key ran the body {runs} times"),
    );
    let mut answered = 0;
    for result in results {
        match result {
            Ok(42) => answered += 1,
            Err(KitError::Idempotency(IdempotencyError::InProgress { .. })) => {}
            other => check.fail(format_args!("a concurrent duplicate returned {other:?}")),
        }
    }
    check.ensure(answered >= 1, "no concurrent call got the result");
}

/// A key reused with another fingerprint gets `PayloadMismatch`, never the
/// other payload's result, whether that one is stored or still in progress;
/// the same payload is replayed, and the body never runs for a mismatch.
pub async fn engine_payload_mismatch<S: IdempotencyStore + ?Sized>(store: &S) {
    let check = Check::new("engine_payload_mismatch", store);
    let runs = AtomicU32::new(0);
    let call = |key: &'static str, payload: &'static str| {
        let runs = &runs;
        check
            .idempotency()
            .key(key)
            .fingerprint(payload)
            .run(move || async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, KitError>(format!("result for {payload}"))
            })
    };
    check.ensure_ok(
        call("stored", "amount=5").await,
        "result for amount=5",
        "first call",
    );
    check.expect(
        call("stored", "amount=6").await,
        "a stored key reused with another payload",
        "PayloadMismatch",
        |got| {
            matches!(
                got,
                Err(KitError::Idempotency(IdempotencyError::PayloadMismatch))
            )
        },
    );
    check.ensure_ok(
        call("stored", "amount=5").await,
        "result for amount=5",
        "replay with the first payload",
    );

    // A live claim of another replica, with its fingerprint.
    let key = check.key("in-progress");
    let (owner, _) = tokens();
    let now = now_millis();
    check
        .claimed(
            &key,
            owner,
            Some(Fingerprint::of("amount=5")),
            now,
            now + LEASE,
            now + TTL,
            "claim of another replica",
        )
        .await;
    check.expect(
        call("in-progress", "amount=6").await,
        "a key in progress reused with another payload",
        "PayloadMismatch",
        |got| {
            matches!(
                got,
                Err(KitError::Idempotency(IdempotencyError::PayloadMismatch))
            )
        },
    );
    check.expect(
        call("in-progress", "amount=5").await,
        "a key in progress with the same payload",
        "InProgress",
        |got| {
            matches!(
                got,
                Err(KitError::Idempotency(IdempotencyError::InProgress { .. }))
            )
        },
    );
    check.ensure(
        check.release(&key, owner).await,
        "release of the other replica's claim was refused",
    );
    let runs = runs.load(Ordering::SeqCst);
    check.ensure(
        runs == 1,
        format_args!("the body ran {runs} times, expected once"),
    );
}

/// A body that fails (with an error that is not cached) gives the caller its
/// error and releases the claim: the next call runs the body again, and a
/// success is then replayed.
pub async fn engine_error_releases_the_claim<S: IdempotencyStore + ?Sized>(store: &S) {
    let check = Check::new("engine_error_releases_the_claim", store);
    let runs = AtomicU32::new(0);
    let call = || {
        check.idempotency().key("order-1").run(|| async {
            match runs.fetch_add(1, Ordering::SeqCst) {
                0 => Err(KitError::Body(503)),
                run => Ok(run),
            }
        })
    };
    match call().await {
        Err(KitError::Body(503)) => {}
        other => check.fail(format_args!(
            "a failing body returned {other:?} to its caller, expected its error"
        )),
    }
    check.ensure_ok(call().await, 1, "the retry after an error");
    check.ensure_ok(call().await, 1, "a duplicate after the successful retry");
    let runs = runs.load(Ordering::SeqCst);
    check.ensure(
        runs == 2,
        format_args!("the body ran {runs} times, expected twice (error, then success)"),
    );
}

/// A store whose `claim` fails: the call fails with
/// [`IdempotencyError::Store`] and the body does not run (fail closed); once
/// the store is back, the call runs normally.
pub async fn engine_fails_closed<S: IdempotencyStore + ?Sized>(store: &S) {
    let check = Check::new("engine_fails_closed", store);
    let failing = FailingStore::new(store);
    failing.fail_claims(true);
    let runs = AtomicU32::new(0);
    let call = || {
        Idempotency::new(&failing)
            .scope(check.scope.clone())
            .key("order-1")
            .run(|| async {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, KitError>(7)
            })
    };
    check.expect(
        call().await,
        "a call over a failing store",
        "a Store error",
        |got| matches!(got, Err(KitError::Idempotency(IdempotencyError::Store(_)))),
    );
    check.ensure(
        runs.load(Ordering::SeqCst) == 0,
        "the body ran although the claim failed (it must fail closed)",
    );
    failing.fail_claims(false);
    check.ensure_ok(call().await, 7, "a call once the store is back");
    check.ensure(
        runs.load(Ordering::SeqCst) == 1,
        "the body did not run once the store was back",
    );
}

/// How often the engine calls `complete` or `release` before it gives up:
/// once, and once more after each pause of its retries.
const STORE_CALL_ATTEMPTS: u64 = crate::idempotency::engine::STORE_RETRIES.len() as u64 + 1;

/// A store whose `complete` fails: the caller still gets the body's result
/// (after the engine's retries),
/// and the claim stays, so a duplicate within the lease gets `InProgress`
/// (not a second run).
pub async fn engine_survives_failing_complete<S: IdempotencyStore + ?Sized>(store: &S) {
    let check = Check::new("engine_survives_failing_complete", store);
    let failing = FailingStore::new(store);
    failing.fail_completes(true);
    let runs = AtomicU32::new(0);
    let call = || {
        Idempotency::new(&failing)
            .scope(check.scope.clone())
            .key("order-1")
            .run(|| async {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, KitError>(7)
            })
    };
    check.ensure_ok(call().await, 7, "a call whose complete failed");
    let completes = failing.calls().completes;
    check.ensure(
        completes == STORE_CALL_ATTEMPTS,
        format_args!(
            "the engine tried to complete {completes} times, expected {STORE_CALL_ATTEMPTS} (one call and its retries)"
        ),
    );
    failing.fail_completes(false);
    check.expect(call().await, "a duplicate after a failed complete", "InProgress until the lease lapses", |got| {
        matches!(got, Err(KitError::Idempotency(IdempotencyError::InProgress { retry_after })) if *retry_after > Duration::ZERO)
    });
    let runs = runs.load(Ordering::SeqCst);
    check.ensure(
        runs == 1,
        format_args!("the body ran {runs} times, expected once"),
    );
}

/// A store whose `release` fails: the caller still gets the body's error
/// (not a store error), and the claim lapses with its lease: a duplicate
/// within the lease gets `InProgress`.
pub async fn engine_survives_failing_release<S: IdempotencyStore + ?Sized>(store: &S) {
    let check = Check::new("engine_survives_failing_release", store);
    let failing = FailingStore::new(store);
    failing.fail_releases(true);
    let runs = AtomicU32::new(0);
    let call = || {
        Idempotency::new(&failing)
            .scope(check.scope.clone())
            .key("order-1")
            .run(|| async {
                runs.fetch_add(1, Ordering::SeqCst);
                Err::<u32, _>(KitError::Body(500))
            })
    };
    check.expect(
        call().await,
        "a failing body whose release failed",
        "its error",
        |got| matches!(got, Err(KitError::Body(500))),
    );
    let releases = failing.calls().releases;
    check.ensure(
        releases == STORE_CALL_ATTEMPTS,
        format_args!(
            "the engine tried to release {releases} times, expected {STORE_CALL_ATTEMPTS} (one call and its retries)"
        ),
    );
    failing.fail_releases(false);
    check.expect(
        call().await,
        "a duplicate after a failed release",
        "InProgress",
        |got| {
            matches!(
                got,
                Err(KitError::Idempotency(IdempotencyError::InProgress { .. }))
            )
        },
    );
    let runs = runs.load(Ordering::SeqCst);
    check.ensure(
        runs == 1,
        format_args!("the body ran {runs} times, expected once"),
    );
}
