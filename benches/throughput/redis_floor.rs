//! Redis's [`Floor`], through redis-rs: a `GET` for a replay, `SET NX PX`
//! then `SET XX PX` for a fresh request, on strings of their own.

use redis::aio::ConnectionManager;
use steadfast::idempotency::RecordKey;

use crate::{
    bench::{BoxFuture, Floor},
    redis::RedisBench,
    workload::{KEYS, LEASE, PAYLOAD, TTL},
};

/// The prefix of the raw Redis commands' keys.
const FLOOR_PREFIX: &str = "steadfast_throughput_floor";

/// The raw commands' key for `key`.
fn floor_key(key: &RecordKey) -> String {
    let hex: String = key
        .hash()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("{FLOOR_PREFIX}:{hex}")
}

/// Stores the completed keys `k-0` … `k-9999` as the raw commands do.
pub(crate) async fn fill_floor_keys(mut connection: ConnectionManager) {
    for k in 0..KEYS {
        let key = RecordKey::new("", &format!("k-{k}")).expect("a key");
        let () = redis::cmd("SET")
            .arg(floor_key(&key))
            .arg(PAYLOAD)
            .arg("PX")
            .arg(TTL)
            .query_async(&mut connection)
            .await
            .expect("SET");
    }
}

impl Floor for RedisBench {
    type Caller = ConnectionManager;

    fn caller(&self, held: bool) -> BoxFuture<'_, ConnectionManager> {
        Box::pin(async move {
            if held {
                ConnectionManager::new(self.client.clone())
                    .await
                    .expect("Redis")
            } else {
                self.shared.clone()
            }
        })
    }

    fn select<'a>(
        &'a self,
        caller: &'a mut ConnectionManager,
        key: &'a RecordKey,
    ) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let value: Option<Vec<u8>> = redis::cmd("GET")
                .arg(floor_key(key))
                .query_async(caller)
                .await
                .expect("GET");
            value.is_some()
        })
    }

    fn write<'a>(
        &'a self,
        caller: &'a mut ConnectionManager,
        key: &'a RecordKey,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let key = floor_key(key);
            let claimed: Option<String> = redis::cmd("SET")
                .arg(&key)
                .arg("in-progress")
                .arg("NX")
                .arg("PX")
                .arg(LEASE)
                .query_async(&mut *caller)
                .await
                .expect("SET NX");
            assert!(claimed.is_some(), "a new key is claimed");
            let stored: Option<String> = redis::cmd("SET")
                .arg(&key)
                .arg(PAYLOAD)
                .arg("XX")
                .arg("PX")
                .arg(TTL)
                .query_async(caller)
                .await
                .expect("SET XX");
            assert!(stored.is_some(), "the claim is completed");
        })
    }
}
