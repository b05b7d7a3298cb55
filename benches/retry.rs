//! `#[steadfast::retry]` side by side with its peers, on one async fn.
//!
//! Two groups, each run as one criterion group so that the ratios inside it
//! are comparable:
//!
//! - `success`: the call succeeds at once. A direct call of the fn is the
//!   floor; `#[steadfast::retry]`, backon's `#[backon]` attribute, backon's
//!   `Retryable` builder and tokio-retry2 wrap the very same fn.
//! - `three_failures_zero_delay`: the fn fails three times with a transient
//!   error, then succeeds, and every library is asked for a zero delay
//!   between attempts. steadfast never touches the timer for a zero delay;
//!   the peers sleep `Duration::ZERO` on tokio's timer, whose granularity is
//!   a millisecond.
//!
//! Run with `cargo bench --no-default-features --bench retry`.

use std::{cell::Cell, hint::black_box, time::Duration};

use backon::{ConstantBuilder, ExponentialBuilder, Retryable};
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use steadfast::Code;
use support::{PAYLOAD, bench_async, checksum, in_process_group};
use tokio::runtime::Runtime;
use tokio_retry2::{Retry, RetryError, strategy::FixedInterval};

mod support;

/// The remote call every variant makes: fails with `Unavailable` while
/// `failures` is above zero (counting it down), then checksums the payload.
#[inline]
async fn work(bytes: &[u8; 64], failures: &Cell<u32>) -> Result<u64, Code> {
    let left = failures.get();
    if left > 0 {
        failures.set(left - 1);
        return Err(Code::Unavailable);
    }
    Ok(checksum(black_box(bytes)))
}

// --- (a) the same fn without an attribute --------------------------------------

/// What `#[retry]` is added to: the fn of the other variants, bare. Its
/// cost over `work` is one more async fn's state machine.
async fn plain_fn(bytes: &[u8; 64], failures: &Cell<u32>) -> Result<u64, Code> {
    work(bytes, failures).await
}

// --- where the success path's instructions go ----------------------------------
//
// `#[retry]`'s expansion built up a layer at a time, by hand (criterion's
// `success/layer_*`, and `benches/callgrind.sh success/layer_*`): each
// variant adds one thing to the one before, and `steadfast_default` adds
// the last (the nested-retry guard around the attempt).

/// The body in an `async` block of its own, as every attempt is (so that
/// its `?` and `return` end the attempt, not the call).
async fn layer_block(bytes: &[u8; 64], failures: &Cell<u32>) -> Result<u64, Code> {
    async { work(bytes, failures).await }.await
}

/// The block in a loop that returns a success and otherwise awaits
/// something else before the next attempt (a second suspension point).
async fn layer_loop(bytes: &[u8; 64], failures: &Cell<u32>) -> Result<u64, Code> {
    loop {
        let result = async { work(bytes, failures).await }.await;
        if result.is_ok() {
            return result;
        }
        tokio::task::yield_now().await;
    }
}

/// The loop with the retry state and its decision, as `#[retry(max = 3)]`
/// expands, without the nested-retry guard: a success returns before the
/// retry state exists.
async fn layer_state(bytes: &[u8; 64], failures: &Cell<u32>) -> Result<u64, Code> {
    use steadfast::__private::{NestSlot, Retry, RetryPolicy, Split, Step, decide, split};
    const POLICY: RetryPolicy = RetryPolicy::new().with_max_retries(3);
    let nest = NestSlot::for_policy(&POLICY);
    let mut retry = None;
    loop {
        let result = async { work(bytes, failures).await }.await;
        let result = match split(result) {
            Split::Return(success) => return success,
            Split::Failed(failure) => failure,
        };
        let state = retry.get_or_insert_with(|| Retry::new(&POLICY, "layer_state", &nest, None));
        let delay = match decide(state, result) {
            Step::Return(result) => return result,
            Step::Retry { event, .. } => event.delay,
        };
        state.pause(delay).await;
    }
}

// --- (b) steadfast ---------------------------------------------------------

#[steadfast::retry(max = 3)]
async fn steadfast_default(bytes: &[u8; 64], failures: &Cell<u32>) -> Result<u64, Code> {
    work(bytes, failures).await
}

#[steadfast::retry(max = 3, backoff = "none")]
async fn steadfast_zero_delay(bytes: &[u8; 64], failures: &Cell<u32>) -> Result<u64, Code> {
    work(bytes, failures).await
}

// --- (c) backon's #[backon] attribute ---------------------------------------

#[backon_macros::backon]
async fn backon_attribute_default(bytes: &[u8; 64], failures: &Cell<u32>) -> Result<u64, Code> {
    work(bytes, failures).await
}

fn backon_zero_delay() -> ConstantBuilder {
    ConstantBuilder::new()
        .with_delay(Duration::ZERO)
        .with_max_times(3)
}

#[backon_macros::backon(backoff = backon_zero_delay)]
async fn backon_attribute_zero_delay(bytes: &[u8; 64], failures: &Cell<u32>) -> Result<u64, Code> {
    work(bytes, failures).await
}

// --- (d) backon's Retryable builder ------------------------------------------

async fn backon_builder_default(bytes: &[u8; 64], failures: &Cell<u32>) -> Result<u64, Code> {
    (|| async { work(bytes, failures).await })
        .retry(ExponentialBuilder::default())
        .await
}

async fn backon_builder_zero_delay(bytes: &[u8; 64], failures: &Cell<u32>) -> Result<u64, Code> {
    (|| async { work(bytes, failures).await })
        .retry(backon_zero_delay())
        .await
}

// --- (e) tokio-retry2 ----------------------------------------------------------

async fn tokio_retry2_default(bytes: &[u8; 64], failures: &Cell<u32>) -> Result<u64, Code> {
    // tokio-retry2's own example strategy: exponential from 10 ms, 3 retries.
    let strategy = tokio_retry2::strategy::ExponentialBackoff::from_millis(10).take(3);
    Retry::spawn(strategy, || async {
        work(bytes, failures).await.map_err(RetryError::transient)
    })
    .await
}

async fn tokio_retry2_zero_delay(bytes: &[u8; 64], failures: &Cell<u32>) -> Result<u64, Code> {
    let strategy = FixedInterval::new(Duration::ZERO).take(3);
    Retry::spawn(strategy, || async {
        work(bytes, failures).await.map_err(RetryError::transient)
    })
    .await
}

// --- the groups ------------------------------------------------------------------

/// Time only: nothing here does I/O.
fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime")
}

/// The same async fn, succeeding at once, called directly and through each
/// library.
fn success(c: &mut Criterion) {
    let rt = runtime();
    let failures = Cell::new(0);
    let failures = &failures;
    let mut group = in_process_group(c, "success");

    /// One call of `$f`, with the payload and no failures.
    macro_rules! call {
        ($f:ident) => {
            || $f(black_box(&PAYLOAD), black_box(failures))
        };
    }

    bench_async(&mut group, &rt, "direct", call!(work));
    bench_async(&mut group, &rt, "plain_fn", call!(plain_fn));
    bench_async(&mut group, &rt, "layer_block", call!(layer_block));
    bench_async(&mut group, &rt, "layer_loop", call!(layer_loop));
    bench_async(&mut group, &rt, "layer_state", call!(layer_state));
    bench_async(&mut group, &rt, "steadfast", call!(steadfast_default));
    bench_async(
        &mut group,
        &rt,
        "backon_attribute",
        call!(backon_attribute_default),
    );
    bench_async(
        &mut group,
        &rt,
        "backon_builder",
        call!(backon_builder_default),
    );
    bench_async(&mut group, &rt, "tokio_retry2", call!(tokio_retry2_default));
    group.finish();
    assert_eq!(failures.get(), 0);
}

/// Three transient failures, then success, with a zero delay between
/// attempts. Every iteration re-arms the three failures.
fn three_failures_zero_delay(c: &mut Criterion) {
    let rt = runtime();
    let failures = Cell::new(0);
    let failures = &failures;
    let mut group = in_process_group(c, "three_failures_zero_delay");
    group
        // The peers take milliseconds per call: flat sampling keeps the
        // group within its measurement time.
        .sampling_mode(SamplingMode::Flat);

    /// Re-arms three failures and runs one call, checking that it succeeded.
    macro_rules! call {
        ($f:ident) => {
            || async {
                failures.set(3);
                let result = $f(black_box(&PAYLOAD), black_box(failures)).await;
                debug_assert!(result.is_ok() && failures.get() == 0);
                result
            }
        };
    }

    bench_async(&mut group, &rt, "direct_4_calls", || async {
        failures.set(3);
        loop {
            if let Ok(value) = work(black_box(&PAYLOAD), black_box(failures)).await {
                break value;
            }
        }
    });
    bench_async(&mut group, &rt, "steadfast", call!(steadfast_zero_delay));
    bench_async(
        &mut group,
        &rt,
        "backon_attribute",
        call!(backon_attribute_zero_delay),
    );
    bench_async(
        &mut group,
        &rt,
        "backon_builder",
        call!(backon_builder_zero_delay),
    );
    bench_async(
        &mut group,
        &rt,
        "tokio_retry2",
        call!(tokio_retry2_zero_delay),
    );
    group.finish();
}

criterion_group!(benches, success, three_failures_zero_delay);
criterion_main!(benches);
