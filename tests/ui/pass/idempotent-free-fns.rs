//! `#[idempotent]` on free fns: stores in statics (a `LazyLock`, a
//! `&'static`) and the default store; keys as `String`, `&str` and
//! `Option<String>`; `scope`, `fingerprint`, `ttl`, `lease`, `in_progress`.

#![deny(warnings)]
#![deny(clippy::all, clippy::pedantic, clippy::nursery)]

use std::sync::{
    LazyLock,
    atomic::{AtomicU32, Ordering},
};

use steadfast::idempotency::{IdempotencyError, MemoryStore};

static STORE: LazyLock<MemoryStore> = LazyLock::new(MemoryStore::new);
static LEAKED: LazyLock<&'static MemoryStore> =
    LazyLock::new(|| Box::leak(Box::new(MemoryStore::new())));
static RUNS: AtomicU32 = AtomicU32::new(0);

fn run() -> u32 {
    RUNS.fetch_add(1, Ordering::SeqCst) + 1
}

/// `store = STORE`: the `static` itself, borrowed by the expansion.
#[steadfast::idempotent(key = request_id, store = STORE)]
async fn lazy_store(request_id: String, cents: u64) -> Result<(u64, u32), IdempotencyError> {
    Ok((cents, run()))
}

/// A `&'static` store, and a key borrowed as `&str`.
#[steadfast::idempotent(key = request_id, store = *LEAKED)]
async fn leaked_store(request_id: &str) -> Result<u32, IdempotencyError> {
    Ok(run())
}

/// No `store`: the process default (an in-process `MemoryStore` here).
#[steadfast::idempotent(key = request_id)]
async fn default_store(request_id: Option<String>) -> Result<u32, IdempotencyError> {
    Ok(run())
}

/// Every option at once, over the fields of a request.
#[steadfast::idempotent(
    key = request.id.as_deref(),
    store = STORE,
    scope = request.tenant,
    fingerprint = request.cents.to_be_bytes(),
    ttl = "1h",
    lease = "10s",
    in_progress = "wait(1s)",
)]
async fn everything(request: Request) -> Result<String, IdempotencyError> {
    Ok(format!("{}:{}#{}", request.tenant, request.cents, run()))
}

struct Request {
    id: Option<String>,
    tenant: String,
    cents: u64,
}

fn request(id: Option<&str>, tenant: &str, cents: u64) -> Request {
    Request {
        id: id.map(str::to_owned),
        tenant: tenant.to_owned(),
        cents,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let first = lazy_store("a".to_owned(), 5).await.unwrap();
    assert_eq!(
        lazy_store("a".to_owned(), 5).await.unwrap(),
        first,
        "replayed"
    );
    assert_ne!(
        lazy_store("b".to_owned(), 5).await.unwrap(),
        first,
        "another key runs"
    );

    let first = leaked_store("a").await.unwrap();
    assert_eq!(leaked_store("a").await.unwrap(), first);

    let first = default_store(Some("a".to_owned())).await.unwrap();
    assert_eq!(default_store(Some("a".to_owned())).await.unwrap(), first);
    assert!(matches!(
        default_store(None).await,
        Err(IdempotencyError::MissingKey)
    ));

    let first = everything(request(Some("a"), "acme", 5)).await.unwrap();
    assert_eq!(
        everything(request(Some("a"), "acme", 5)).await.unwrap(),
        first
    );
    assert!(matches!(
        everything(request(Some("a"), "acme", 6)).await,
        Err(IdempotencyError::PayloadMismatch)
    ));
    assert_ne!(
        everything(request(Some("a"), "globex", 5)).await.unwrap(),
        first,
        "another scope"
    );
    assert!(matches!(
        everything(request(None, "acme", 5)).await,
        Err(IdempotencyError::MissingKey)
    ));
}
