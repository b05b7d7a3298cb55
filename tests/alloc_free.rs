//! The success path of `#[retry]` allocates nothing (DESIGN.md §3), and
//! neither does an `#[idempotent]` replay from a `MemoryStore`.
//!
//! A counting global allocator (from `steadfast-test-support`, where the
//! `unsafe` it takes lives: the workspace forbids `unsafe_code` here) counts
//! what the test thread allocates while 1000 calls that succeed at once run
//! on a current-thread runtime. The runtime is built and each fn called once
//! before counting starts, so that one-time costs (the runtime, tracing's
//! callsite registration) are not counted. The counters are thread-local,
//! so the tests of this file may run in parallel.
//!
//! A `timeout` or a `deadline` allocates nothing either: tokio's `Timeout`
//! polls the attempt before its `Sleep`, and a `Sleep` is an intrusive
//! timer entry inside the future (registered with the driver on its first
//! poll, never boxed). The last tests show that retrying, with or without a
//! sleep, allocates nothing as well; DESIGN.md promises it only for success.

use std::{cell::Cell, future::Future, hint::black_box};

use std::sync::LazyLock;

use steadfast::{
    Code, RatioBudget, RetryBudget,
    idempotency::{IdempotencyError, MemoryStore},
};
use steadfast_test_support::alloc::{Allocations, Counting, CountingAllocator};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const CALLS: u64 = 1000;

const NONE: Allocations = Allocations {
    allocations: 0,
    bytes: 0,
};

/// The clock of the runtime that counts: tokio's real clock, or the paused
/// clock (sleeps end at once).
#[derive(Clone, Copy, PartialEq)]
enum Clock {
    Real,
    Paused,
}

/// What `CALLS` calls of `call` allocate, after one call to warm up, on a
/// current-thread runtime with the `clock` given.
fn allocations_of<F, Fut>(clock: Clock, mut call: F) -> Allocations
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u64, Code>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(clock == Clock::Paused)
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async {
        assert_eq!(call().await, Ok(EXPECTED));
        let counting = Counting::start();
        for _ in 0..CALLS {
            let result = black_box(call().await);
            assert_eq!(result, Ok(EXPECTED));
        }
        counting.stop()
    })
}

static PAYLOAD: [u8; 16] = *b"steadfast-alloc!";
const EXPECTED: u64 = 1560;

/// The work of every retried fn below: sums the payload, and counts the
/// attempts so that a test can see that each call made exactly one.
fn work(payload: &[u8; 16], attempts: &Cell<u64>) -> Result<u64, Code> {
    attempts.set(attempts.get() + 1);
    Ok(black_box(payload).iter().map(|&byte| u64::from(byte)).sum())
}

#[steadfast::retry(max = 3)]
async fn plain(payload: &[u8; 16], attempts: &Cell<u64>) -> Result<u64, Code> {
    work(payload, attempts)
}

#[steadfast::retry(max = 3, backoff = "exp(10ms)")]
async fn exponential(payload: &[u8; 16], attempts: &Cell<u64>) -> Result<u64, Code> {
    work(payload, attempts)
}

#[steadfast::retry(
    max = 3,
    backoff = "exp(10ms)",
    jitter = "full",
    on = "Unavailable|ResourceExhausted"
)]
async fn with_jitter_and_codes(payload: &[u8; 16], attempts: &Cell<u64>) -> Result<u64, Code> {
    work(payload, attempts)
}

#[steadfast::retry(max = 3, backoff = "exp(10ms)", timeout = "1s")]
async fn with_timeout(payload: &[u8; 16], attempts: &Cell<u64>) -> Result<u64, Code> {
    work(payload, attempts)
}

#[steadfast::retry(max = 3, backoff = "exp(10ms)", deadline = "10s")]
async fn with_deadline(payload: &[u8; 16], attempts: &Cell<u64>) -> Result<u64, Code> {
    work(payload, attempts)
}

#[steadfast::retry(max = 3, backoff = "exp(10ms)", timeout = "1s", deadline = "10s")]
async fn with_timeout_and_deadline(payload: &[u8; 16], attempts: &Cell<u64>) -> Result<u64, Code> {
    work(payload, attempts)
}

static BUDGET: RetryBudget = RetryBudget::new(10, 0.1);

#[steadfast::retry(max = 3, budget = BUDGET)]
async fn with_budget(payload: &[u8; 16], attempts: &Cell<u64>) -> Result<u64, Code> {
    work(payload, attempts)
}

static RATIO_BUDGET: RatioBudget = RatioBudget::new(10.0);

#[steadfast::retry(max = 3, budget = RATIO_BUDGET)]
async fn with_ratio_budget(payload: &[u8; 16], attempts: &Cell<u64>) -> Result<u64, Code> {
    work(payload, attempts)
}

/// What a flaky fn counts: its attempts, and the failures it has left.
#[derive(Default)]
struct Flaky {
    attempts: Cell<u64>,
    failures: Cell<u32>,
}

/// Fails with `Unavailable` while `failures` is above zero (counting it
/// down), then does the work.
fn flaky(payload: &[u8; 16], counts: &Flaky) -> Result<u64, Code> {
    let left = counts.failures.get();
    if left > 0 {
        counts.failures.set(left - 1);
        counts.attempts.set(counts.attempts.get() + 1);
        return Err(Code::Unavailable);
    }
    work(payload, &counts.attempts)
}

#[steadfast::retry(max = 3, backoff = "none")]
async fn retried_at_once(payload: &[u8; 16], counts: &Flaky) -> Result<u64, Code> {
    flaky(payload, counts)
}

#[steadfast::retry(
    max = 3,
    backoff = "exp(10ms)",
    jitter = "full",
    timeout = "1s",
    deadline = "10s"
)]
async fn retried_after_sleeps(payload: &[u8; 16], counts: &Flaky) -> Result<u64, Code> {
    flaky(payload, counts)
}

/// The counter counts: without this, a zero below could mean that the
/// allocator is not installed.
#[test]
fn the_counter_sees_allocations() {
    let allocations = allocations_of(Clock::Real, || async {
        Ok(black_box(Box::new(EXPECTED)).as_ref().to_owned())
    });
    assert_eq!(
        allocations,
        Allocations {
            allocations: CALLS,
            bytes: CALLS * 8,
        }
    );
}

#[test]
fn a_direct_call_allocates_nothing() {
    let attempts = Cell::new(0);
    assert_eq!(
        allocations_of(Clock::Real, || async { work(&PAYLOAD, &attempts) }),
        NONE
    );
}

/// One test per retried fn: `CALLS` + 1 calls of it allocate nothing. Each
/// call makes one attempt (on the real clock); or, written `after N
/// failures, on the … clock`, fails N times first (N retries per call), on a
/// runtime with the clock named.
macro_rules! allocates_nothing {
    ($($test:ident: $fn:ident;)*) => {$(
        #[test]
        fn $test() {
            let attempts = Cell::new(0);
            let allocations = allocations_of(Clock::Real, || $fn(&PAYLOAD, &attempts));
            assert_eq!(attempts.get(), CALLS + 1, "one attempt per call");
            assert_eq!(allocations, NONE);
        }
    )*};
    ($($test:ident: $fn:ident after $failures:literal failures, on the $clock:ident clock;)*) => {$(
        #[test]
        fn $test() {
            let counts = Flaky::default();
            let allocations = allocations_of(Clock::$clock, || {
                counts.failures.set($failures);
                $fn(&PAYLOAD, &counts)
            });
            assert_eq!(
                counts.attempts.get(),
                ($failures + 1) * (CALLS + 1),
                "the retries of each call"
            );
            assert_eq!(allocations, NONE);
        }
    )*};
}

allocates_nothing! {
    the_default_policy_allocates_nothing: plain;
    an_exponential_backoff_allocates_nothing: exponential;
    jitter_and_codes_allocate_nothing: with_jitter_and_codes;
    a_budget_allocates_nothing: with_budget;
    a_ratio_budget_allocates_nothing: with_ratio_budget;
    a_timeout_allocates_nothing: with_timeout;
    a_deadline_allocates_nothing: with_deadline;
    a_timeout_and_a_deadline_allocate_nothing: with_timeout_and_deadline;
}

allocates_nothing! {
    zero_delay_retries_allocate_nothing:
        retried_at_once after 3 failures, on the Real clock;
    retries_that_sleep_allocate_nothing:
        retried_after_sleeps after 3 failures, on the Paused clock;
}

static RECORDS: LazyLock<MemoryStore> = LazyLock::new(MemoryStore::new);

#[steadfast::idempotent(key = key, store = RECORDS)]
async fn replayed(key: &str, runs: &Cell<u64>) -> Result<u64, IdempotencyError> {
    runs.set(runs.get() + 1);
    Ok(EXPECTED)
}

/// A result type that cannot be cloned: every replay decodes it.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Unclonable(u64);

#[steadfast::idempotent(key = key, store = RECORDS)]
async fn replayed_unclonable(key: &str, runs: &Cell<u64>) -> Result<Unclonable, IdempotencyError> {
    runs.set(runs.get() + 1);
    Ok(Unclonable(EXPECTED))
}

/// The allocations of `CALLS` replays of `call`, after its first call (which
/// runs it) and its first replay.
fn replay_allocations<F: Future<Output = ()>>(call: impl Fn() -> F) -> Allocations {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async {
        call().await;
        call().await;
        let counting = Counting::start();
        for _ in 0..CALLS {
            call().await;
        }
        counting.stop()
    })
}

/// A replay from a `MemoryStore` allocates nothing: the key is hashed on
/// the stack, the claim answers at once (no boxed future), and the stored
/// result is shared, not copied. A result that can be cloned is decoded by
/// the first replay, which keeps the value in room it makes in the record
/// (its allocations), and cloned by the next (a `u64` needs no buffer).
#[test]
fn a_replay_from_a_memory_store_allocates_nothing() {
    let runs = Cell::new(0);
    let allocations = replay_allocations(|| async {
        let result = replayed(black_box("order-1"), &runs).await;
        assert_eq!(result.unwrap(), EXPECTED);
    });
    assert_eq!(runs.get(), 1, "the first call ran, the others replayed");
    assert_eq!(allocations, NONE);
}

/// A result that cannot be cloned is decoded by every replay, which
/// allocates nothing either (after the first, which makes the record's room
/// for a decoded value, as for any type).
#[test]
fn a_replay_of_a_result_that_cannot_be_cloned_allocates_nothing() {
    let runs = Cell::new(0);
    let allocations = replay_allocations(|| async {
        let result = replayed_unclonable(black_box("order-2"), &runs).await;
        assert_eq!(result.unwrap(), Unclonable(EXPECTED));
    });
    assert_eq!(runs.get(), 1, "the first call ran, the others replayed");
    assert_eq!(allocations, NONE);
}
