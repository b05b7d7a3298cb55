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
use tokio::runtime::Runtime;
use tokio_retry2::{Retry, RetryError, strategy::FixedInterval};

/// The payload every variant checksums.
static PAYLOAD: [u8; 64] = {
    let mut bytes = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        bytes[i] = (i as u8).wrapping_mul(37).wrapping_add(11);
        i += 1;
    }
    bytes
};

/// FNV-1a over the buffer, two bytes at a time: a dependent chain of 32
/// multiplies that the compiler can neither vectorise nor fold.
#[inline]
fn checksum(bytes: &[u8; 64]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for pair in bytes.chunks_exact(2) {
        hash ^= u64::from(u16::from_le_bytes([pair[0], pair[1]]));
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

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
    let mut group = c.benchmark_group("success");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(50);

    group.bench_function("direct", |b| {
        b.to_async(&rt)
            .iter(|| work(black_box(&PAYLOAD), black_box(failures)));
    });
    group.bench_function("steadfast", |b| {
        b.to_async(&rt)
            .iter(|| steadfast_default(black_box(&PAYLOAD), black_box(failures)));
    });
    group.bench_function("backon_attribute", |b| {
        b.to_async(&rt)
            .iter(|| backon_attribute_default(black_box(&PAYLOAD), black_box(failures)));
    });
    group.bench_function("backon_builder", |b| {
        b.to_async(&rt)
            .iter(|| backon_builder_default(black_box(&PAYLOAD), black_box(failures)));
    });
    group.bench_function("tokio_retry2", |b| {
        b.to_async(&rt)
            .iter(|| tokio_retry2_default(black_box(&PAYLOAD), black_box(failures)));
    });
    group.finish();
    assert_eq!(failures.get(), 0);
}

/// Three transient failures, then success, with a zero delay between
/// attempts. Every iteration re-arms the three failures.
fn three_failures_zero_delay(c: &mut Criterion) {
    let rt = runtime();
    let failures = Cell::new(0);
    let failures = &failures;
    let mut group = c.benchmark_group("three_failures_zero_delay");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(50)
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

    group.bench_function("direct_4_calls", |b| {
        b.to_async(&rt).iter(|| async {
            failures.set(3);
            loop {
                if let Ok(value) = work(black_box(&PAYLOAD), black_box(failures)).await {
                    break value;
                }
            }
        });
    });
    group.bench_function("steadfast", |b| {
        b.to_async(&rt).iter(call!(steadfast_zero_delay));
    });
    group.bench_function("backon_attribute", |b| {
        b.to_async(&rt).iter(call!(backon_attribute_zero_delay));
    });
    group.bench_function("backon_builder", |b| {
        b.to_async(&rt).iter(call!(backon_builder_zero_delay));
    });
    group.bench_function("tokio_retry2", |b| {
        b.to_async(&rt).iter(call!(tokio_retry2_zero_delay));
    });
    group.finish();
}

criterion_group!(benches, success, three_failures_zero_delay);
criterion_main!(benches);
