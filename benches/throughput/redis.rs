//! Redis's [`Bench`]: the store of `RedisStore::connect`, its connection
//! shared with the raw commands; its keys deleted at start and at the end.

use std::sync::Arc;

use redis::{AsyncCommands, aio::ConnectionManager};
use steadfast::idempotency::{IdempotencyStore, RedisStore};

use crate::{
    bench::Bench, mode::Mode, redis_floor::fill_floor_keys, servers::redis_url, workload::fill,
};

/// The Redis store's key prefix (a prefix of the floor's too).
const PREFIX: &str = "steadfast_throughput";

pub(crate) struct RedisBench {
    store: RedisStore,
    pub(crate) client: redis::Client,
    /// The store's connection, shared by the raw modes without `-conn`.
    pub(crate) shared: ConnectionManager,
}

impl RedisBench {
    /// Deletes the keys of both prefixes.
    async fn clean(&self) {
        let mut connection = self.shared.clone();
        // `SCAN`, not `KEYS`: a run leaves millions of keys, which `KEYS`
        // would block the server on.
        let mut keys = Vec::new();
        let mut scan = connection
            .scan_match::<_, String>(format!("{PREFIX}*"))
            .await
            .expect("SCAN");
        while let Some(key) = scan.next_item().await {
            keys.push(key.expect("a key"));
        }
        drop(scan);
        for chunk in keys.chunks(1000) {
            let _: i64 = redis::cmd("UNLINK")
                .arg(chunk)
                .query_async(&mut connection)
                .await
                .expect("UNLINK");
        }
    }
}

impl Bench for RedisBench {
    const NAME: &'static str = "Redis";
    const MODES: &'static [Mode] = &[
        Mode::Write,
        Mode::WriteConn,
        Mode::Fresh,
        Mode::Select,
        Mode::SelectConn,
        Mode::Claim,
        Mode::Replay,
        Mode::Hot,
    ];
    const FLOORS: (Mode, Mode) = (Mode::Write, Mode::Select);

    /// The store of `RedisStore::connect`; its connection is shared.
    async fn open(_callers: usize) -> RedisBench {
        let url = redis_url();
        let client = redis::Client::open(url.as_str()).expect("a Redis URL");
        let store = RedisStore::connect(&url)
            .await
            .expect("Redis")
            .with_prefix(PREFIX)
            .expect("a prefix");
        let shared = ConnectionManager::new(client.clone()).await.expect("Redis");
        RedisBench {
            store,
            client,
            shared,
        }
    }

    async fn prepare(&self) {
        self.store.migrate().await.expect("migrate");
        self.clean().await;
        fill(&self.store).await;
        fill_floor_keys(self.shared.clone()).await;
    }

    /// Nothing: the next row's callers reuse the keys.
    async fn close(self) {}

    async fn finish(self) {
        self.clean().await;
    }

    fn store(&self) -> Arc<dyn IdempotencyStore> {
        Arc::new(self.store.clone())
    }
}
