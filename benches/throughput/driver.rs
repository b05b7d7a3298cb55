//! The concurrency driver: `N` callers in one mode for a while, on the
//! store or on its floor, and their calls per second.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use steadfast::idempotency::{Claim, ClaimRequest, RecordKey};

use crate::{
    bench::Bench,
    mode::Mode,
    workload::{KEYS, call, times},
};

/// Calls per second of `callers` tasks, each made by `caller` and looping
/// until the flag it is given is set, `seconds` later; each returns how
/// many calls it made.
async fn for_a_while<F>(callers: usize, seconds: f64, caller: impl Fn(Arc<AtomicBool>) -> F) -> f64
where
    F: Future<Output = u64> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| tokio::spawn(caller(Arc::clone(&stop))))
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut calls = 0;
    for task in tasks {
        calls += task.await.expect("a caller");
    }
    calls as f64 / start.elapsed().as_secs_f64()
}

/// Calls per second of `callers` callers in `mode` (the store or the raw
/// client) for `seconds`.
pub(crate) async fn measure<B: Bench>(
    bench: &Arc<B>,
    mode: Mode,
    callers: usize,
    seconds: f64,
) -> f64 {
    static FRESH: AtomicU64 = AtomicU64::new(0);
    for_a_while(callers, seconds, |stop| {
        let bench = Arc::clone(bench);
        let store = bench.store();
        async move {
            let mut caller = if mode.raw() {
                Some(bench.caller(mode.holds()).await)
            } else {
                None
            };
            let mut calls = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = match mode {
                    Mode::Hot => "k-0".to_owned(),
                    _ if mode.writes() => format!("f-{}", FRESH.fetch_add(1, Ordering::Relaxed)),
                    _ => format!("k-{}", fastrand::u64(..KEYS)),
                };
                let record = RecordKey::new("", &key).expect("a key");
                match (mode, caller.as_mut()) {
                    (Mode::Replay | Mode::Hot | Mode::Fresh, _) => {
                        let answer = call(&*store, &key).await.expect("an idempotent call");
                        assert_eq!(answer, 42);
                    }
                    (Mode::Claim, _) => {
                        let times = times();
                        let request = ClaimRequest {
                            key: &record,
                            token: fastrand::u64(..),
                            fingerprint: None,
                            now: times.now,
                            lease_until: times.lease_until,
                            expires_at: times.expires_at,
                        };
                        let claim = store.claim(&request).await.expect("a claim");
                        assert!(matches!(claim, Claim::Completed(_)));
                    }
                    (Mode::ClaimConn, Some(caller)) => bench.claim_statement(caller, &record).await,
                    (Mode::Select | Mode::SelectConn, Some(caller)) => {
                        assert!(bench.select(caller, &record).await, "a completed record");
                    }
                    (Mode::Write | Mode::WriteConn, Some(caller)) => {
                        bench.write(caller, &record).await;
                    }
                    (Mode::ReadWriteConn, Some(caller)) => {
                        assert!(!bench.select(caller, &record).await, "a new key");
                        bench.write(caller, &record).await;
                    }
                    _ => unreachable!("{mode:?} runs elsewhere"),
                }
                calls += 1;
            }
            calls
        }
    })
    .await
}
