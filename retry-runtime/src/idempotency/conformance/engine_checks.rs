//! Engine-level checks: `Idempotency` over the store under test, with a
//! `FailingStore` around it where a fault is the point.

use std::time::Duration;

use super::super::{Fingerprint, IdempotencyError, IdempotencyStore, now_millis};

use super::FailingStore;
use super::{
    RACERS,
    check::{Check, KitError, Runs, is_in_progress, is_payload_mismatch, tokens},
    race::{join_all, yield_once},
};

/// Three sequential calls with one key run the body once and all get its
/// result; another key runs its own body.
pub async fn engine_replays_duplicates<S: IdempotencyStore + ?Sized>(store: &S) {
    let check = Check::new("engine_replays_duplicates", store);
    let runs = Runs::default();
    let call = |key: &'static str| {
        check.idempotency().key(key).run(|| async {
            let run = runs.count() + 1;
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
    let runs = runs.get();
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
    let runs = Runs::default();
    let calls: Vec<_> = (0..RACERS)
        .map(|_| {
            Box::pin(check.idempotency().key("contended").run(|| async {
                runs.count();
                yield_once().await;
                Ok::<_, KitError>(42u64)
            }))
        })
        .collect();
    let results = join_all(calls).await;
    let runs = runs.get();
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
    let runs = Runs::default();
    let call = |key, payload| check.paid_call(key, payload, &runs);
    check.ensure_ok(
        call("stored", "amount=5").await,
        "result for amount=5",
        "first call",
    );
    let reused = call("stored", "amount=6").await;
    let what = "a stored key reused with another payload";
    check.expect(reused, what, "PayloadMismatch", is_payload_mismatch);
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
        .attempt(&key, owner, Some(Fingerprint::of("amount=5")), now)
        .claimed("claim of another replica")
        .await;
    let reused = call("in-progress", "amount=6").await;
    let what = "a key in progress reused with another payload";
    check.expect(reused, what, "PayloadMismatch", is_payload_mismatch);
    let same = call("in-progress", "amount=5").await;
    let what = "a key in progress with the same payload";
    check.expect(same, what, "InProgress", is_in_progress);
    check.ensure(
        check.release(&key, owner).await,
        "release of the other replica's claim was refused",
    );
    check.ran_once(&runs);
}

/// A body that fails (with an error that is not cached) gives the caller its
/// error and releases the claim: the next call runs the body again, and a
/// success is then replayed.
pub async fn engine_error_releases_the_claim<S: IdempotencyStore + ?Sized>(store: &S) {
    let check = Check::new("engine_error_releases_the_claim", store);
    let runs = Runs::default();
    let call = || {
        check.idempotency().key("order-1").run(|| async {
            match runs.count() {
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
    let runs = runs.get();
    check.ensure(
        runs == 2,
        format_args!("the body ran {runs} times, expected twice (error, then success)"),
    );
}

/// How often the engine calls `complete` or `release` before it gives up:
/// once, and once more after each pause of its retries.
const STORE_CALL_ATTEMPTS: u64 = crate::idempotency::engine::STORE_RETRIES.len() as u64 + 1;

/// An engine check over a [`FailingStore`] around the store under test:
/// each call runs key `order-1` in the check's scope, with a body that
/// counts its runs.
struct FaultCheck<'s, S: ?Sized> {
    check: Check<'s, S>,
    failing: FailingStore<&'s S>,
    runs: Runs,
}

impl<'s, S: IdempotencyStore + ?Sized> FaultCheck<'s, S> {
    fn new(name: &'static str, store: &'s S) -> Self {
        FaultCheck {
            check: Check::new(name, store),
            failing: FailingStore::new(store),
            runs: Runs::default(),
        }
    }

    /// One call, whose body (if it runs) returns `answer`.
    async fn call(&self, answer: Result<u32, KitError>) -> Result<u32, KitError> {
        let body = || async {
            self.runs.count();
            answer
        };
        self.check
            .engine(&self.failing)
            .key("order-1")
            .run(body)
            .await
    }

    /// Passes if the engine called the failing operation `what` (which the
    /// store was asked `calls` times) once and once per retry.
    fn tried(&self, what: &str, calls: u64) {
        self.check.ensure(
            calls == STORE_CALL_ATTEMPTS,
            format_args!(
                "the engine tried to {what} {calls} times, expected {STORE_CALL_ATTEMPTS} (one call and its retries)"
            ),
        );
    }
}

/// A store whose `claim` fails: the call fails with
/// [`IdempotencyError::Store`] and the body does not run (fail closed); once
/// the store is back, the call runs normally.
pub async fn engine_fails_closed<S: IdempotencyStore + ?Sized>(store: &S) {
    let fault = FaultCheck::new("engine_fails_closed", store);
    let check = &fault.check;
    fault.failing.fail_claims(true);
    check.expect(
        fault.call(Ok(7)).await,
        "a call over a failing store",
        "a Store error",
        |got| matches!(got, Err(KitError::Idempotency(IdempotencyError::Store(_)))),
    );
    check.ensure(
        fault.runs.get() == 0,
        "the body ran although the claim failed (it must fail closed)",
    );
    fault.failing.fail_claims(false);
    check.ensure_ok(fault.call(Ok(7)).await, 7, "a call once the store is back");
    check.ensure(
        fault.runs.get() == 1,
        "the body did not run once the store was back",
    );
}

/// A store whose `complete` fails: the caller still gets the body's result
/// (after the engine's retries),
/// and the claim stays, so a duplicate within the lease gets `InProgress`
/// (not a second run).
pub async fn engine_survives_failing_complete<S: IdempotencyStore + ?Sized>(store: &S) {
    let fault = FaultCheck::new("engine_survives_failing_complete", store);
    let check = &fault.check;
    fault.failing.fail_completes(true);
    check.ensure_ok(fault.call(Ok(7)).await, 7, "a call whose complete failed");
    fault.tried("complete", fault.failing.calls().completes);
    fault.failing.fail_completes(false);
    check.expect(fault.call(Ok(7)).await, "a duplicate after a failed complete", "InProgress until the lease lapses", |got| {
        matches!(got, Err(KitError::Idempotency(IdempotencyError::InProgress { retry_after })) if *retry_after > Duration::ZERO)
    });
    check.ran_once(&fault.runs);
}

/// A store whose `release` fails: the caller still gets the body's error
/// (not a store error), and the claim lapses with its lease: a duplicate
/// within the lease gets `InProgress`.
pub async fn engine_survives_failing_release<S: IdempotencyStore + ?Sized>(store: &S) {
    let fault = FaultCheck::new("engine_survives_failing_release", store);
    let check = &fault.check;
    fault.failing.fail_releases(true);
    check.expect(
        fault.call(Err(KitError::Body(500))).await,
        "a failing body whose release failed",
        "its error",
        |got| matches!(got, Err(KitError::Body(500))),
    );
    fault.tried("release", fault.failing.calls().releases);
    fault.failing.fail_releases(false);
    let duplicate = fault.call(Err(KitError::Body(500))).await;
    let what = "a duplicate after a failed release";
    check.expect(duplicate, what, "InProgress", is_in_progress);
    check.ran_once(&fault.runs);
}
