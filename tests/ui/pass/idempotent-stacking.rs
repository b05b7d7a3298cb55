//! `#[idempotent]` stacked with `#[retry]` and with `#[tracing::instrument]`,
//! in either order.

#![deny(warnings)]
#![deny(clippy::all, clippy::pedantic, clippy::nursery)]

use std::sync::{
    LazyLock,
    atomic::{AtomicU32, Ordering},
};

use steadfast::idempotency::{IdempotencyError, MemoryStore};

static STORE: LazyLock<MemoryStore> = LazyLock::new(MemoryStore::new);
static CALLS: AtomicU32 = AtomicU32::new(0);

#[derive(Debug, PartialEq, steadfast::Classify)]
enum Failure {
    #[code(Unavailable)]
    Transient,
    #[code(Aborted)]
    Idempotency,
}

impl From<IdempotencyError> for Failure {
    fn from(_: IdempotencyError) -> Self {
        Self::Idempotency
    }
}

/// Fails until the third call; the calls of all handlers count together.
fn flaky(attempts: &AtomicU32) -> Result<u32, Failure> {
    CALLS.fetch_add(1, Ordering::SeqCst);
    let attempt = attempts.fetch_add(1, Ordering::SeqCst) + 1;
    if attempt < 3 {
        Err(Failure::Transient)
    } else {
        Ok(attempt)
    }
}

/// Retries outside: each attempt claims, fails and releases, until one succeeds.
#[steadfast::retry(max = 3, backoff = "none")]
#[steadfast::idempotent(key = key, store = STORE)]
async fn retry_outside(key: &str, attempts: &AtomicU32) -> Result<u32, Failure> {
    flaky(attempts)
}

/// Idempotency outside: one claim around the whole retry loop.
#[steadfast::idempotent(key = key, store = STORE)]
#[steadfast::retry(max = 3, backoff = "none")]
async fn retry_inside(key: &str, attempts: &AtomicU32) -> Result<u32, Failure> {
    flaky(attempts)
}

#[tracing::instrument(skip(attempts))]
#[steadfast::idempotent(key = key, store = STORE)]
async fn instrument_outside(key: &str, attempts: &AtomicU32) -> Result<u32, Failure> {
    attempts.fetch_add(1, Ordering::SeqCst);
    Ok(1)
}

#[steadfast::idempotent(key = key, store = STORE)]
#[tracing::instrument(skip(attempts), err(Debug))]
async fn instrument_inside(key: &str, attempts: &AtomicU32) -> Result<u32, Failure> {
    attempts.fetch_add(1, Ordering::SeqCst);
    Ok(2)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let attempts = AtomicU32::new(0);
    assert_eq!(retry_outside("r-1", &attempts).await, Ok(3));
    assert_eq!(retry_outside("r-1", &attempts).await, Ok(3), "replayed");
    assert_eq!(attempts.load(Ordering::SeqCst), 3);

    let attempts = AtomicU32::new(0);
    assert_eq!(retry_inside("r-2", &attempts).await, Ok(3));
    assert_eq!(retry_inside("r-2", &attempts).await, Ok(3), "replayed");
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    assert_eq!(CALLS.load(Ordering::SeqCst), 6);

    let attempts = AtomicU32::new(0);
    for _ in 0..2 {
        assert_eq!(instrument_outside("t-1", &attempts).await, Ok(1));
        assert_eq!(instrument_inside("t-2", &attempts).await, Ok(2));
    }
    assert_eq!(attempts.load(Ordering::SeqCst), 2, "each body ran once");
}
