//! `#[steadfast::idempotent]` over a `RedisStore`, side by side with the
//! idempotency a service would hand-write on the same connection (the
//! pattern of AWS Powertools' Redis persistence layer): `SET key NX PX` to
//! claim, the handler, `SET key value XX PX` to store the result; a replay is
//! the `SET NX` that fails and a `GET`. Both use the same multiplexed
//! connection type and the same JSON result.
//!
//! The hand-written variant has no fencing token, no lease renewal, no
//! fingerprint and no caller-clock expiry: it is the floor, not a peer with
//! the same guarantees.
//!
//! Run with
//! `STEADFAST_TEST_REDIS_URL=redis://127.0.0.1:6379 cargo bench --features redis --bench redis_store`
//! (the default URL is that one; without a server the bench says so and exits).

use std::{cell::Cell, hint::black_box, sync::atomic::Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use redis::aio::ConnectionManager;
use steadfast::idempotency::{IdempotencyError, IdempotencyStore, RedisStore};
use support::{BODY_RUNS, Counter, Receipt, bench_replay, runtime, server_group};

mod support;

const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

async fn body(amount: u64) -> Result<Receipt, IdempotencyError> {
    BODY_RUNS.fetch_add(1, Ordering::Relaxed);
    Ok(Receipt {
        checksum: black_box(amount).wrapping_mul(0x0000_0100_0000_01b3),
        amount,
    })
}

#[steadfast::idempotent(key = key, store = store)]
async fn over_redis(
    store: &RedisStore,
    key: &str,
    amount: u64,
) -> Result<Receipt, IdempotencyError> {
    body(amount).await
}

/// The hand-written floor: claim with `SET NX PX`, run, store with `SET XX PX`;
/// a duplicate reads the stored value.
async fn hand_written(
    connection: &mut ConnectionManager,
    key: &str,
    amount: u64,
) -> Result<Receipt, redis::RedisError> {
    let claimed: Option<String> = redis::cmd("SET")
        .arg(key)
        .arg("in-progress")
        .arg("NX")
        .arg("PX")
        .arg(30_000)
        .query_async(connection)
        .await?;
    if claimed.is_none() {
        let stored: Vec<u8> = redis::cmd("GET").arg(key).query_async(connection).await?;
        return Ok(serde_json::from_slice(&stored).expect("a stored receipt"));
    }
    let receipt = body(amount).await.expect("the body succeeds");
    let () = redis::cmd("SET")
        .arg(key)
        .arg(serde_json::to_vec(&receipt).expect("JSON"))
        .arg("XX")
        .arg("PX")
        .arg(86_400_000)
        .query_async(connection)
        .await?;
    Ok(receipt)
}

fn redis_group(c: &mut Criterion) {
    let url = std::env::var("STEADFAST_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    let rt = runtime();
    let run = format!("steadfast_bench_{:016x}", fastrand::u64(..));
    let Ok(store) = rt.block_on(RedisStore::connect(&url)) else {
        eprintln!("redis_store bench skipped: no Redis at {url}");
        return;
    };
    let store = store.with_prefix(&run).expect("a valid prefix");
    rt.block_on(store.migrate()).expect("the scripts load");
    let mut raw = rt
        .block_on(ConnectionManager::new(
            redis::Client::open(url.as_str()).expect("a URL"),
        ))
        .expect("a raw connection");
    let keys = Counter(Cell::new(0));

    let mut group = server_group(c, "redis");
    group.bench_function("redis_store_fresh", |b| {
        b.to_async(&rt).iter(|| async {
            let key = format!("k-{}", keys.next());
            over_redis(&store, black_box(&key), 500).await
        });
    });
    group.bench_function("hand_written_fresh", |b| {
        b.to_async(&rt).iter(|| {
            let key = format!("{run}_raw:k-{}", keys.next());
            let mut connection = raw.clone();
            async move { hand_written(&mut connection, black_box(&key), 500).await }
        });
    });
    bench_replay(&mut group, &rt, "redis_store_replay", || {
        over_redis(&store, black_box("replayed"), 500)
    });
    let replayed_raw = format!("{run}_raw:replayed");
    bench_replay(&mut group, &rt, "hand_written_replay", || {
        let mut connection = raw.clone();
        let key = replayed_raw.clone();
        async move { hand_written(&mut connection, black_box(&key), 500).await }
    });
    group.finish();

    // Clean up: the store's records by a purge at the end of time, the
    // hand-written keys by pattern.
    rt.block_on(async {
        store.purge_expired(i64::MAX).await.expect("purge");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{run}_raw:*"))
            .query_async(&mut raw)
            .await
            .expect("KEYS");
        for chunk in keys.chunks(1000) {
            let _: i64 = redis::cmd("DEL")
                .arg(chunk)
                .query_async(&mut raw)
                .await
                .expect("DEL");
        }
    });
}

criterion_group!(benches, redis_group);
criterion_main!(benches);
