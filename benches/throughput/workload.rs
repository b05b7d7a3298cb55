//! What every store is measured on: the table, the completed keys, the
//! payload, a request's times, and the idempotent call itself.

use steadfast::idempotency::{Idempotency, IdempotencyError, IdempotencyStore, now_millis};

/// The table the SQL stores, their floors and `pgbench` share.
pub(crate) const TABLE: &str = "steadfast_throughput";
/// How many completed keys `replay` draws from.
pub(crate) const KEYS: u64 = 10_000;
/// What the raw writes store: the body's answer, as the store encodes it.
pub(crate) const PAYLOAD: &[u8] = b"42";
/// A claim's lease and a record's lifetime, in milliseconds.
pub(crate) const LEASE: i64 = 30_000;
pub(crate) const TTL: i64 = 86_400_000;

/// The claim's binds around a new key: the request's times.
pub(crate) struct Times {
    pub(crate) now: i64,
    pub(crate) lease_until: i64,
    pub(crate) expires_at: i64,
}

pub(crate) fn times() -> Times {
    let now = now_millis();
    Times {
        now,
        lease_until: now + LEASE,
        expires_at: now + TTL,
    }
}

/// One idempotent call with key `key`: the body runs only for a new key.
pub(crate) async fn call(store: &dyn IdempotencyStore, key: &str) -> Result<u64, IdempotencyError> {
    Idempotency::new(store)
        .key(key)
        .run(|| async { Ok::<u64, IdempotencyError>(42) })
        .await
}

/// Stores the completed keys `k-0` … `k-9999`.
pub(crate) async fn fill(store: &dyn IdempotencyStore) {
    for k in 0..KEYS {
        call(store, &format!("k-{k}")).await.expect("fill");
    }
}
