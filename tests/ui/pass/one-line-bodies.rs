//! One-line bodies under each attribute, as a new user writes them first,
//! in every shape: async and blocking, free fns and methods (`&self`,
//! `&mut self`), owned arguments, `#[async_trait]`, every argument at once,
//! and `return` and `?` in an idempotent body. Their braces are needed, so
//! neither rustc's `unused_braces` nor clippy may say otherwise.

#![deny(warnings)]
#![deny(clippy::all, clippy::pedantic, clippy::nursery)]

use std::{io, time::Duration};

use steadfast::{
    Code, RetryBudget, RetryEvent,
    idempotency::{IdempotencyError, MemoryStore},
};

#[rustfmt::skip]
#[steadfast::retry(max = 2, backoff = "none")]
async fn one_liner(x: &str) -> Result<usize, io::Error> { Ok(x.len()) }

#[rustfmt::skip]
#[steadfast::retry(max = 2, backoff = "none")]
fn blocking_one_liner(x: &str) -> Result<usize, io::Error> { Ok(x.len()) }

#[rustfmt::skip]
#[steadfast::retry(max = 2, backoff = "const(1ms)", deadline = "1s")]
fn blocking_with_deadline(x: &str) -> Result<usize, io::Error> { Ok(x.len()) }

#[rustfmt::skip]
#[steadfast::retry(max = 2, backoff = "none")]
async fn owned_one_liner(name: String) -> Result<usize, io::Error> { Ok(name.len()) }

static BUDGET: RetryBudget = RetryBudget::new(10, 0.1);

const fn record(_: &io::Error, _: RetryEvent) {}

#[rustfmt::skip]
#[steadfast::retry(max = 2, backoff = "exp(1ms, max = 10ms)", jitter = "full", on = "Unavailable|DeadlineExceeded", timeout = "1s", deadline = "5s", budget = BUDGET, notify = record)]
async fn every_retry_argument(x: &str) -> Result<usize, io::Error> { Ok(x.len()) }

#[rustfmt::skip]
#[steadfast::retry(max = 1, backoff = "none", on = "Unavailable|NotFound", allow_non_transient)]
async fn non_transient_one_liner(code: Code) -> Result<(), Code> { Err(code) }

#[rustfmt::skip]
#[steadfast::idempotent(key = key)]
async fn free_one_liner(key: String) -> Result<usize, IdempotencyError> { Ok(key.len()) }

static STORE: std::sync::LazyLock<MemoryStore> = std::sync::LazyLock::new(MemoryStore::new);

#[rustfmt::skip]
#[steadfast::idempotent(key = key, store = STORE, scope = "one-liners", fingerprint = cents.to_be_bytes(), ttl = "1h", lease = "10s", in_progress = "wait(1s)", cache_errors = "InvalidArgument")]
async fn every_idempotent_argument(key: String, cents: u64) -> Result<u64, PayError> { Ok(cents) }

#[rustfmt::skip]
#[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, steadfast::Classify)]
enum PayError { #[code(InvalidArgument)] Negative, #[code(FailedPrecondition)] Zero, #[code(Aborted)] Idempotency(String) }

#[rustfmt::skip]
impl From<IdempotencyError> for PayError { fn from(error: IdempotencyError) -> Self { Self::Idempotency(error.to_string()) } }

fn parse(cents: i64) -> Result<u64, PayError> {
    u64::try_from(cents).map_err(|_| PayError::Negative)
}

/// `?` and `return` end the body with the handler's error type.
#[rustfmt::skip]
#[steadfast::idempotent(key = key, store = STORE)]
async fn early_exits(key: String, cents: i64) -> Result<u64, PayError> {
    if cents == 0 {
        return Err(PayError::Zero);
    }
    let cents = parse(cents)?;
    Ok(cents * 2)
}

#[rustfmt::skip]
#[steadfast::idempotent(key = key, store = STORE)]
async fn question_mark_one_liner(key: String, cents: i64) -> Result<u64, PayError> { Ok(parse(cents)? + 1) }

struct Service {
    store: MemoryStore,
    calls: u32,
}

impl Service {
    #[rustfmt::skip]
    #[steadfast::retry(max = 1, backoff = "none")]
    async fn method_one_liner(&self, x: &str) -> Result<usize, io::Error> { Ok(x.len() + self.store.len()) }

    #[rustfmt::skip]
    #[steadfast::retry(max = 1, backoff = "none")]
    async fn mut_method_one_liner(&mut self) -> Result<u32, io::Error> { self.calls += 1; Ok(self.calls) }

    #[rustfmt::skip]
    #[steadfast::idempotent(key = key, store = self.store)]
    async fn idempotent_one_liner(&self, key: String) -> Result<usize, IdempotencyError> { Ok(key.len()) }
}

#[async_trait::async_trait]
trait Lookup {
    async fn lookup(&self, key: String) -> Result<usize, IdempotencyError>;
    async fn fetch(&self, x: &str) -> Result<usize, io::Error>;
}

#[async_trait::async_trait]
impl Lookup for Service {
    #[rustfmt::skip]
    #[steadfast::idempotent(key = key, store = self.store)]
    async fn lookup(&self, key: String) -> Result<usize, IdempotencyError> { Ok(key.len()) }

    #[rustfmt::skip]
    #[steadfast::retry(max = 1, backoff = "none")]
    async fn fetch(&self, x: &str) -> Result<usize, io::Error> { Ok(x.len()) }
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    assert_eq!(one_liner("abc").await.unwrap(), 3);
    assert_eq!(blocking_one_liner("ab").unwrap(), 2);
    assert_eq!(blocking_with_deadline("ab").unwrap(), 2);
    assert_eq!(owned_one_liner("abcde".to_owned()).await.unwrap(), 5);
    assert_eq!(every_retry_argument("a").await.unwrap(), 1);
    assert_eq!(
        non_transient_one_liner(Code::NotFound).await,
        Err(Code::NotFound)
    );
    assert_eq!(free_one_liner("abcd".to_owned()).await.unwrap(), 4);
    assert_eq!(every_idempotent_argument("e".to_owned(), 5).await, Ok(5));
    assert_eq!(early_exits("x1".to_owned(), 0).await, Err(PayError::Zero));
    assert_eq!(
        early_exits("x2".to_owned(), -1).await,
        Err(PayError::Negative)
    );
    assert_eq!(early_exits("x3".to_owned(), 4).await, Ok(8));
    assert_eq!(question_mark_one_liner("q".to_owned(), 3).await, Ok(4));
    let mut service = Service {
        store: MemoryStore::new(),
        calls: 0,
    };
    assert_eq!(service.method_one_liner("a").await.unwrap(), 1);
    assert_eq!(service.mut_method_one_liner().await.unwrap(), 1);
    assert_eq!(
        service.idempotent_one_liner("k".to_owned()).await.unwrap(),
        1
    );
    assert_eq!(service.lookup("kk".to_owned()).await.unwrap(), 2);
    assert_eq!(service.fetch("abc").await.unwrap(), 3);
    let _ = Duration::ZERO;
}
