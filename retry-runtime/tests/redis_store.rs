//! `RedisStore` against a real Redis.
//!
//! The tests read `STEADFAST_TEST_REDIS_URL` (for example
//! `redis://127.0.0.1:6379`); without it they print "skipped" and pass,
//! except under `CI=true`, where they fail. Every test works under a key
//! prefix of its own (tests run in parallel) and purges it at the end.
//!
//! Run: `cargo test -p retry-runtime --features redis,testing --test redis_store`

use std::{future::Future, sync::Arc};

use steadfast_runtime::idempotency::{
    Claim, ClaimRequest, Idempotency, IdempotencyError, IdempotencyStore, RecordKey, RedisStore,
    conformance, now_millis,
};

fn prefix() -> String {
    format!("steadfast_test_{:016x}", fastrand::u64(..))
}

async fn open(prefix: &str) -> Option<RedisStore> {
    let url = steadfast_test_support::server_url(steadfast_test_support::REDIS_URL)?;
    let store = RedisStore::connect(&url)
        .await
        .expect("the test Redis is reachable")
        .with_prefix(prefix)
        .expect("a valid prefix");
    store.migrate().await.expect("migrate");
    Some(store)
}

/// Runs `check` against a store with a fresh prefix, then purges every
/// record under it (a purge at the end of time removes them all), whether
/// the check passed or not.
async fn run<Fut>(check: impl FnOnce(RedisStore) -> Fut)
where
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(store) = open(&prefix()).await else {
        return;
    };
    let outcome = tokio::spawn(check(store.clone())).await;
    store.purge_expired(i64::MAX).await.expect("cleanup purge");
    if let Err(failure) = outcome {
        std::panic::resume_unwind(failure.into_panic());
    }
}

/// A plain connection to the test server, to look under the store.
async fn raw_connection() -> redis::aio::MultiplexedConnection {
    let url = steadfast_test_support::server_url(steadfast_test_support::REDIS_URL)
        .expect("run() checked the URL");
    redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn request(key: &RecordKey, token: u64, now: i64) -> ClaimRequest<'_> {
    ClaimRequest {
        key,
        token,
        fingerprint: None,
        now,
        lease_until: now + 30_000,
        expires_at: now + 3_600_000,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_passes_the_conformance_suite() {
    run(|store| async move {
        conformance::run_all(&store).await;
        conformance::concurrent_claims_in_tasks(Arc::new(store)).await;
    })
    .await;
}

#[tokio::test]
async fn prefixes_are_checked_and_keep_records_apart() {
    run(|store| async move {
        for bad in ["", "a b", "a:b", "a*", "ü", &"p".repeat(64)] {
            let error = store.clone().with_prefix(bad).unwrap_err();
            assert!(
                error.to_string().contains("invalid Redis key prefix"),
                "{error}"
            );
        }
        let other = store.clone().with_prefix(&prefix()).unwrap();
        let key = RecordKey::new("redis_store", "shared-name").unwrap();
        let now = now_millis();
        assert_eq!(
            store.claim(&request(&key, 1, now)).await.unwrap(),
            Claim::Claimed
        );
        assert_eq!(
            other.claim(&request(&key, 2, now)).await.unwrap(),
            Claim::Claimed
        );
        assert_eq!(other.purge_expired(i64::MAX).await.unwrap(), 1);
    })
    .await;
}

#[tokio::test]
async fn two_replicas_share_records_through_redis() {
    run(|store| async move {
        let url = steadfast_test_support::server_url(steadfast_test_support::REDIS_URL)
            .expect("run() checked the URL");
        let replica = RedisStore::connect(&url)
            .await
            .unwrap()
            .with_prefix(store.prefix())
            .unwrap();
        let mut runs = 0;
        for target in [&store, &replica, &store] {
            let receipt: Result<String, IdempotencyError> = Idempotency::new(target)
                .key("payment-7")
                .scope("redis_store")
                .run(|| async {
                    runs += 1;
                    Ok(format!("receipt {runs}"))
                })
                .await;
            assert_eq!(receipt.unwrap(), "receipt 1");
        }
        assert_eq!(runs, 1, "the duplicates on both replicas replayed");
    })
    .await;
}

#[tokio::test]
async fn purge_leaves_keys_that_are_not_records_alone() {
    run(|store| async move {
        let mut raw = raw_connection().await;
        // Shaped like a record's key, but a string, and a hash of another app.
        let lookalike = format!("{}:{}", store.prefix(), "0".repeat(64));
        let foreign_hash = format!("{}:{}", store.prefix(), "1".repeat(64));
        let () = redis::cmd("SET")
            .arg(&lookalike)
            .arg("not a record")
            .query_async(&mut raw)
            .await
            .unwrap();
        let () = redis::cmd("HSET")
            .arg(&foreign_hash)
            .arg("field")
            .arg("value")
            .query_async(&mut raw)
            .await
            .unwrap();
        let key = RecordKey::new("redis_store", "expired").unwrap();
        let now = now_millis();
        assert_eq!(
            store.claim(&request(&key, 9, now)).await.unwrap(),
            Claim::Claimed
        );

        assert_eq!(store.purge_expired(now + 3_600_000).await.unwrap(), 1);
        let left: i64 = redis::cmd("EXISTS")
            .arg(&lookalike)
            .arg(&foreign_hash)
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!(left, 2, "only records are purged");
        let () = redis::cmd("DEL")
            .arg(&lookalike)
            .arg(&foreign_hash)
            .query_async(&mut raw)
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn records_carry_a_redis_expiry_past_their_ttl() {
    run(|store| async move {
        let mut raw = raw_connection().await;
        let key = RecordKey::new("redis_store", "expiring").unwrap();
        let now = now_millis();
        assert_eq!(
            store.claim(&request(&key, 3, now)).await.unwrap(),
            Claim::Claimed
        );
        let hex: String = key
            .hash()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let ttl: i64 = redis::cmd("PTTL")
            .arg(format!("{}:{hex}", store.prefix()))
            .query_async(&mut raw)
            .await
            .unwrap();
        // TTL 1 h plus the minute of grace, never less than the TTL.
        assert!(
            (3_600_000..=3_660_000).contains(&ttl),
            "PTTL {ttl} ms: Redis must not drop a record before its TTL"
        );
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_redis_is_a_store_error() {
    let error = RedisStore::connect("redis://127.0.0.1:1")
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("cannot connect to Redis"),
        "{error}"
    );
    let error = RedisStore::connect("not a url").await.unwrap_err();
    assert!(error.to_string().contains("invalid Redis URL"), "{error}");
}
