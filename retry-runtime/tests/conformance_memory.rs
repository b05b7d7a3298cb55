//! The store conformance suite against `MemoryStore`, and what only an
//! in-process store can show: its capacity bound, the release of a claim
//! whose body is dropped or panics, and in-process waiting.
//!
//! Run: `cargo test -p retry-runtime --features testing --test conformance_memory`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use steadfast_runtime::idempotency::{
    Claim, ClaimRequest, Completion, Idempotency, IdempotencyError, IdempotencyStore,
    ImmediateStore, InProgressPolicy, MemoryStore, RecordKey,
    conformance::{self, FailingStore},
    now_millis,
};
use tokio::{sync::oneshot, task::JoinHandle};

#[tokio::test]
async fn memory_store_conforms() {
    conformance::run_all(&MemoryStore::new()).await;
}

/// Through `Arc<dyn IdempotencyStore>`, in a spawned task: the suite takes
/// unsized stores and its futures are `Send`.
#[tokio::test]
async fn memory_store_conforms_as_a_shared_trait_object() {
    let store: Arc<dyn IdempotencyStore> = Arc::new(MemoryStore::new());
    tokio::spawn(async move { conformance::run_all(&*store).await })
        .await
        .unwrap();
}

/// 64 tasks on 8 threads race for one key, twenty times over.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_claims_from_threads_make_one_owner() {
    let store = Arc::new(MemoryStore::new());
    for _ in 0..20 {
        conformance::concurrent_claims_in_tasks(store.clone()).await;
    }
}

/// The kit fails on a broken store, naming the check: a store that forgets
/// fencing tokens.
#[tokio::test]
#[should_panic(
    expected = "idempotency store conformance: stale_owner_is_fenced: the stale owner's complete was accepted"
)]
async fn the_kit_catches_a_store_without_fencing() {
    conformance::stale_owner_is_fenced(&Unfenced(MemoryStore::new())).await;
}

/// Completes under whatever token it is given.
struct Unfenced(MemoryStore);

impl IdempotencyStore for Unfenced {
    fn claim<'a>(
        &'a self,
        request: &'a ClaimRequest<'a>,
    ) -> steadfast_runtime::idempotency::StoreFuture<'a, Claim> {
        self.0.claim(request)
    }

    fn complete<'a>(
        &'a self,
        completion: Completion<'a>,
    ) -> steadfast_runtime::idempotency::StoreFuture<'a, bool> {
        let Completion {
            key, expires_at, ..
        } = completion;
        Box::pin(async move {
            // Take the record over at its current lease (a forged claim), then complete.
            let token = 1;
            let request = ClaimRequest {
                key,
                token,
                fingerprint: None,
                now: i64::MAX / 2,
                lease_until: i64::MAX / 2 + 1,
                expires_at,
            };
            self.0.claim(&request).await?;
            self.0
                .complete(Completion {
                    token,
                    ..completion
                })
                .await
        })
    }

    fn release<'a>(
        &'a self,
        key: &'a RecordKey,
        token: u64,
    ) -> steadfast_runtime::idempotency::StoreFuture<'a, bool> {
        self.0.release(key, token)
    }

    fn renew<'a>(
        &'a self,
        key: &'a RecordKey,
        token: u64,
        lease_until: i64,
    ) -> steadfast_runtime::idempotency::StoreFuture<'a, bool> {
        self.0.renew(key, token, lease_until)
    }

    fn purge_expired(&self, now: i64) -> steadfast_runtime::idempotency::StoreFuture<'_, u64> {
        self.0.purge_expired(now)
    }
}

/// The engine claims, completes and releases through a store's immediate
/// operations when it has them, never through its futures (which box).
#[tokio::test]
async fn the_engine_uses_a_stores_immediate_operations() {
    let store = ImmediateOnly(MemoryStore::new());
    let runs = AtomicU32::new(0);
    for _ in 0..3 {
        let paid: Result<u32, IdempotencyError> = Idempotency::new(&store)
            .key("order-1")
            .run(|| async {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok(500)
            })
            .await;
        assert_eq!(paid.unwrap(), 500, "run, then replayed");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // An error releases the claim, immediately too: a retry runs again.
    for _ in 0..2 {
        let refused: Result<u32, IdempotencyError> = Idempotency::new(&store)
            .key("order-2")
            .run(|| async {
                runs.fetch_add(1, Ordering::SeqCst);
                Err(IdempotencyError::MissingKey)
            })
            .await;
        assert!(matches!(refused, Err(IdempotencyError::MissingKey)));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 3);
}

/// A `MemoryStore` whose futures must not be called: claims, completes and
/// releases go through its immediate operations.
struct ImmediateOnly(MemoryStore);

impl IdempotencyStore for ImmediateOnly {
    fn claim<'a>(
        &'a self,
        _: &'a ClaimRequest<'a>,
    ) -> steadfast_runtime::idempotency::StoreFuture<'a, Claim> {
        panic!("the engine awaited a claim of a store that answers at once")
    }

    fn complete<'a>(
        &'a self,
        _: Completion<'a>,
    ) -> steadfast_runtime::idempotency::StoreFuture<'a, bool> {
        panic!("the engine awaited a complete of a store that answers at once")
    }

    fn release<'a>(
        &'a self,
        _: &'a RecordKey,
        _: u64,
    ) -> steadfast_runtime::idempotency::StoreFuture<'a, bool> {
        panic!("the engine awaited a release of a store that answers at once")
    }

    fn renew<'a>(
        &'a self,
        key: &'a RecordKey,
        token: u64,
        lease_until: i64,
    ) -> steadfast_runtime::idempotency::StoreFuture<'a, bool> {
        self.0.renew(key, token, lease_until)
    }

    fn purge_expired(&self, now: i64) -> steadfast_runtime::idempotency::StoreFuture<'_, u64> {
        self.0.purge_expired(now)
    }

    fn immediate(&self) -> Option<&dyn ImmediateStore> {
        self.0.immediate()
    }
}

fn request(
    key: &RecordKey,
    token: u64,
    now: i64,
    lease_until: i64,
    expires_at: i64,
) -> ClaimRequest<'_> {
    ClaimRequest {
        key,
        token,
        fingerprint: None,
        now,
        lease_until,
        expires_at,
    }
}

/// A full store refuses new claims with a store error (the request fails
/// closed) and never evicts a live record to make room; expired records
/// make room.
#[tokio::test]
async fn a_full_store_fails_closed_without_evicting_live_records() {
    // 16 shards of one record each.
    let store = MemoryStore::with_capacity(16);
    let t0 = now_millis();
    let (lease_until, expires_at) = (t0 + 60_000, t0 + 3_600_000);
    let keys: Vec<RecordKey> = (0..200)
        .map(|i| RecordKey::new("capacity", &format!("k{i}")).unwrap())
        .collect();
    let mut held = Vec::new();
    let mut refused = Vec::new();
    for (token, key) in (1..).zip(&keys) {
        match store
            .claim(&request(key, token, t0, lease_until, expires_at))
            .await
        {
            Ok(Claim::Claimed) => held.push((key, token)),
            Err(error) => {
                assert!(error.to_string().contains("memory store full"), "{error}");
                refused.push(key);
            }
            Ok(other) => panic!("a new key found {other:?}"),
        }
    }
    assert_eq!(held.len(), 16, "one record per shard");
    assert_eq!(store.len(), 16);

    // Every held claim is intact, and stays so when its result is stored.
    for &(key, _) in &held {
        let found = store
            .claim(&request(key, 999, t0 + 1, lease_until, expires_at))
            .await
            .unwrap();
        assert_eq!(
            found,
            Claim::InProgress {
                lease_until,
                fingerprint: None
            }
        );
    }
    for &(key, token) in &held {
        assert!(
            store
                .complete(Completion {
                    key,
                    token,
                    payload: b"kept",
                    expires_at
                })
                .await
                .unwrap()
        );
    }
    for &(key, _) in &held {
        assert!(
            store
                .claim(&request(refused[0], 999, t0 + 2, lease_until, expires_at))
                .await
                .is_err()
        );
        let found = store
            .claim(&request(key, 999, t0 + 2, lease_until, expires_at))
            .await
            .unwrap();
        assert!(matches!(found, Claim::Completed(stored) if stored.payload == b"kept"));
    }

    // Through the engine: a store error, and the body does not run.
    let runs = AtomicU32::new(0);
    let result: Result<u32, IdempotencyError> = Idempotency::new(&store)
        .scope("capacity")
        .key("k-refused-by-the-engine")
        .run(|| async {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok(1)
        })
        .await;
    // The engine's key may land in any shard: all are full.
    assert!(
        matches!(result, Err(IdempotencyError::Store(_))),
        "{result:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0);

    // Once the records expire they make room, one per shard.
    let later = expires_at;
    assert_eq!(
        store
            .claim(&request(
                refused[0],
                1000,
                later,
                later + 60_000,
                later + 3_600_000
            ))
            .await
            .unwrap(),
        Claim::Claimed
    );
    assert_eq!(store.len(), 16);
}

/// Aborting the task of a running body drops it: the claim is released at
/// once (not left to lapse with its lease), and a retry runs.
#[tokio::test]
async fn dropping_a_running_body_releases_the_claim() {
    let store = Arc::new(FailingStore::new(MemoryStore::new()));
    let (started, running) = oneshot::channel();
    let task = spawn_order(&store, "drop", move || async move {
        started.send(()).unwrap();
        std::future::pending::<Result<u32, IdempotencyError>>().await
    });
    running.await.unwrap();

    let duplicate: Result<u32, IdempotencyError> = Idempotency::new(&*store)
        .scope("drop")
        .key("order-1")
        .run(|| async { panic!("a duplicate ran while the first ran") })
        .await;
    assert!(
        matches!(duplicate, Err(IdempotencyError::InProgress { .. })),
        "{duplicate:?}"
    );

    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    released_once_and_a_retry_runs(&store, "drop").await;
}

/// A body that panics releases its claim; the panic reaches the task's
/// `JoinHandle`, and a retry runs.
#[tokio::test]
async fn a_panicking_body_releases_the_claim() {
    let store = Arc::new(FailingStore::new(MemoryStore::new()));
    let task = spawn_order(&store, "panic", panicking_body);
    let failure = task.await.unwrap_err();
    assert!(failure.is_panic());
    assert_eq!(
        *failure.into_panic().downcast::<&str>().unwrap(),
        "the body panicked"
    );
    released_once_and_a_retry_runs(&store, "panic").await;
}

/// `body` under the engine as `order-1` in `scope`, in a task of its own.
fn spawn_order<F, Fut>(
    store: &Arc<FailingStore<MemoryStore>>,
    scope: &'static str,
    body: F,
) -> JoinHandle<Result<u32, IdempotencyError>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<u32, IdempotencyError>> + Send,
{
    let store = Arc::clone(store);
    tokio::spawn(async move {
        Idempotency::new(&*store)
            .scope(scope)
            .key("order-1")
            .run(body)
            .await
    })
}

/// The claim of `order-1` in `scope` was released once, by the body's
/// guard: nothing is left, and a retry runs.
async fn released_once_and_a_retry_runs(store: &FailingStore<MemoryStore>, scope: &'static str) {
    assert_eq!(store.calls().detached_releases, 1);
    assert!(store.inner().is_empty(), "the claim was released");
    let retry: Result<u32, IdempotencyError> = Idempotency::new(store)
        .scope(scope)
        .key("order-1")
        .run(|| async { Ok(2) })
        .await;
    assert_eq!(retry.unwrap(), 2);
}

async fn panicking_body() -> Result<u32, IdempotencyError> {
    tokio::task::yield_now().await;
    panic!("the body panicked")
}

/// `Wait(d)` duplicates in the process of the first request wait on it, not
/// on the store: each claims once, sees it in progress, sleeps until the
/// first one ends, and claims once more to read the result.
#[tokio::test(start_paused = true)]
async fn in_process_duplicates_wait_without_polling() {
    const DUPLICATES: u64 = 8;
    let store = Arc::new(FailingStore::new(MemoryStore::new()));
    let runs = Arc::new(AtomicU32::new(0));
    let call = |store: Arc<FailingStore<MemoryStore>>,
                runs: Arc<AtomicU32>,
                started: Option<oneshot::Sender<()>>| async move {
        Idempotency::new(&*store)
            .scope("wait")
            .key("order-1")
            .in_progress(InProgressPolicy::Wait(Duration::from_secs(5)))
            .run(move || async move {
                runs.fetch_add(1, Ordering::SeqCst);
                if let Some(started) = started {
                    started.send(()).unwrap();
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
                Ok::<_, IdempotencyError>("receipt".to_owned())
            })
            .await
    };
    let (started, running) = oneshot::channel();
    let start = tokio::time::Instant::now();
    let first = tokio::spawn(call(store.clone(), runs.clone(), Some(started)));
    running.await.unwrap();
    let duplicates: Vec<_> = (0..DUPLICATES)
        .map(|_| tokio::spawn(call(store.clone(), runs.clone(), None)))
        .collect();

    assert_eq!(first.await.unwrap().unwrap(), "receipt");
    for duplicate in duplicates {
        assert_eq!(duplicate.await.unwrap().unwrap(), "receipt");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(2),
        "the duplicates were answered when the first ended"
    );
    let calls = store.calls();
    assert_eq!(calls.claims, 1 + 2 * DUPLICATES, "{calls:?}");
    assert_eq!(calls.completes, 1, "{calls:?}");
}

/// A `Wait(d)` duplicate on another replica (another store value over the
/// same records) cannot wait on the first in-process: it polls the store
/// with backoff, a bounded number of times, and gets the result.
#[tokio::test(start_paused = true)]
async fn other_replicas_poll_with_backoff() {
    let records = Arc::new(MemoryStore::new());
    let (replica_a, replica_b) = (
        FailingStore::new(records.clone()),
        Arc::new(FailingStore::new(records)),
    );
    let (started, running) = oneshot::channel();
    let duplicate = tokio::spawn({
        let replica_b = replica_b.clone();
        async move {
            running.await.unwrap();
            Idempotency::new(&*replica_b)
                .scope("replicas")
                .key("order-1")
                .in_progress(InProgressPolicy::Wait(Duration::from_secs(5)))
                .run(|| async { Ok::<_, IdempotencyError>("ran twice".to_owned()) })
                .await
        }
    });
    let first: Result<String, IdempotencyError> = Idempotency::new(&replica_a)
        .scope("replicas")
        .key("order-1")
        .in_progress(InProgressPolicy::Wait(Duration::from_secs(5)))
        .run(|| async {
            started.send(()).unwrap();
            tokio::time::sleep(Duration::from_secs(2)).await;
            Ok("receipt".to_owned())
        })
        .await;
    assert_eq!(first.unwrap(), "receipt");
    assert_eq!(duplicate.await.unwrap().unwrap(), "receipt");
    let claims = replica_b.calls().claims;
    assert!(
        (4..=16).contains(&claims),
        "the other replica claimed {claims} times in 2 s"
    );
}
