//! `#[idempotent]` on methods: `store = self.store`, a key from `self`'s
//! argument, an `#[async_trait]` impl (whose future must be `Send`; its
//! arguments and `self` moved into the future), and
//! `cache_errors` with an error enum deriving `Classify` and serde.

#![deny(warnings)]
#![deny(clippy::all, clippy::pedantic, clippy::nursery)]

use std::sync::atomic::{AtomicU32, Ordering};

use serde::{Deserialize, Serialize};
use steadfast::idempotency::{IdempotencyError, MemoryStore};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Receipt {
    cents: u64,
    run: u32,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, steadfast::Classify)]
enum PayError {
    #[code(InvalidArgument)]
    ZeroAmount,
    #[code(Unavailable)]
    LedgerDown,
    #[code(Aborted)]
    Idempotency { reason: String },
}

impl From<IdempotencyError> for PayError {
    fn from(error: IdempotencyError) -> Self {
        Self::Idempotency {
            reason: error.to_string(),
        }
    }
}

struct Payments {
    store: MemoryStore,
    tenant: String,
    runs: AtomicU32,
}

impl Payments {
    fn run(&self) -> u32 {
        self.runs.fetch_add(1, Ordering::SeqCst) + 1
    }

    #[steadfast::idempotent(key = request_id, store = self.store, cache_errors = "InvalidArgument")]
    async fn pay(&self, request_id: &str, cents: u64, down: bool) -> Result<Receipt, PayError> {
        let run = self.run();
        match (cents, down) {
            (_, true) => Err(PayError::LedgerDown),
            (0, false) => Err(PayError::ZeroAmount),
            (cents, false) => Ok(Receipt { cents, run }),
        }
    }
}

#[async_trait::async_trait]
trait Ledger {
    async fn credit(&self, request_id: String, cents: u64) -> Result<Receipt, PayError>;
}

#[async_trait::async_trait]
impl Ledger for Payments {
    #[steadfast::idempotent(key = request_id, store = self.store, scope = self.tenant)]
    async fn credit(&self, request_id: String, cents: u64) -> Result<Receipt, PayError> {
        Ok(Receipt {
            cents,
            run: self.run(),
        })
    }
}

const fn assert_send<T: Send>(value: T) -> T {
    value
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let payments = Payments {
        store: MemoryStore::new(),
        tenant: "acme".to_owned(),
        runs: AtomicU32::new(0),
    };

    let first = payments.pay("p-1", 5, false).await.unwrap();
    assert_eq!(
        payments.pay("p-1", 5, false).await.unwrap(),
        first,
        "replayed"
    );

    // A cached error is replayed; another is released, and a retry runs again.
    assert_eq!(
        payments.pay("p-2", 0, false).await,
        Err(PayError::ZeroAmount)
    );
    assert_eq!(
        payments.pay("p-2", 5, false).await,
        Err(PayError::ZeroAmount),
        "cached"
    );
    assert_eq!(
        payments.pay("p-3", 5, true).await,
        Err(PayError::LedgerDown)
    );
    assert_eq!(
        payments.pay("p-3", 5, false).await.unwrap().cents,
        5,
        "released"
    );

    let credit = assert_send(payments.credit("c-1".to_owned(), 7))
        .await
        .unwrap();
    assert_eq!(payments.credit("c-1".to_owned(), 7).await.unwrap(), credit);
    assert_eq!(payments.runs.load(Ordering::SeqCst), 5);
}
