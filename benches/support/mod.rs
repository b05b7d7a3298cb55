//! What the benches share: the payload and its checksum, the receipt and
//! the count of body runs, key counters, the runtime and the way a group
//! times an async call (fresh, or replaying one completed record). Each bench includes it
//! with `mod support;` and uses what it needs.

#![allow(dead_code)]

use std::{
    cell::Cell,
    fmt::Debug,
    future::Future,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use criterion::{BenchmarkGroup, Criterion, SamplingMode, measurement::WallTime};
use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime;

/// The request payload every variant checksums.
pub(crate) static PAYLOAD: [u8; 64] = {
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
pub(crate) fn checksum(bytes: &[u8; 64]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for pair in bytes.chunks_exact(2) {
        hash ^= u64::from(u16::from_le_bytes([pair[0], pair[1]]));
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// What every idempotent handler returns (stored as JSON by `#[idempotent]`;
/// `Clone`, as most result types are, so that replays in this process clone
/// the first decoded value).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Receipt {
    pub(crate) checksum: u64,
    pub(crate) amount: u64,
}

/// How many times a handler's body ran: replays must not move it.
pub(crate) static BODY_RUNS: AtomicU64 = AtomicU64::new(0);

/// Hands out key numbers, never the same twice from one counter.
pub(crate) struct Counter(pub(crate) Cell<u64>);

impl Counter {
    pub(crate) fn next(&self) -> u64 {
        let n = self.0.get();
        self.0.set(n + 1);
        n
    }
}

/// A current-thread tokio runtime with time and I/O enabled.
pub(crate) fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
}

/// A group of in-process calls: 3 s of measurement, 50 samples.
pub(crate) fn in_process_group<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(50);
    group
}

/// A group of calls to a database server: 4 s of measurement, 30 samples,
/// flat sampling (a call takes milliseconds).
pub(crate) fn server_group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30)
        .sampling_mode(SamplingMode::Flat);
    group
}

/// Times `call` as `name` in `group`, each iteration one awaited call on `rt`.
pub(crate) fn bench_async<F: Future>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &Runtime,
    name: &str,
    mut call: impl FnMut() -> F,
) {
    group.bench_function(name, |b| b.to_async(rt).iter(&mut call));
}

/// Times `call` as `name` replaying one completed record: a first, untimed
/// call runs the body, and no timed call may run it again.
pub(crate) fn bench_replay<F, T, E>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &Runtime,
    name: &str,
    mut call: impl FnMut() -> F,
) where
    F: Future<Output = Result<T, E>>,
    E: Debug,
{
    rt.block_on(call()).expect("the first call runs");
    let runs = BODY_RUNS.load(Ordering::Relaxed);
    bench_async(group, rt, name, &mut call);
    assert_eq!(
        BODY_RUNS.load(Ordering::Relaxed),
        runs,
        "replays ran the body"
    );
}
