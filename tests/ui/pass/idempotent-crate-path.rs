//! `crate = path` for `#[idempotent]`: generated code reaches the runtime
//! through the path given, in a crate where `::steadfast` names another
//! crate (without `crate = …`, `::steadfast::__private` would not resolve).

#![deny(warnings)]
#![deny(clippy::all, clippy::pedantic, clippy::nursery)]

extern crate core as steadfast;
extern crate steadfast as sf;

use steadfast_idempotent_macros::idempotent;
use steadfast_runtime::idempotency::{IdempotencyError, MemoryStore};

#[derive(
    Debug, PartialEq, serde::Serialize, serde::Deserialize, steadfast_retry_macros::Classify,
)]
#[classify(crate = ::steadfast_runtime)]
enum PayError {
    #[code(InvalidArgument)]
    ZeroAmount,
    #[code(Aborted)]
    Duplicate,
}

impl From<IdempotencyError> for PayError {
    fn from(_: IdempotencyError) -> Self {
        Self::Duplicate
    }
}

struct Service {
    store: MemoryStore,
}

impl Service {
    #[idempotent(crate = ::steadfast_runtime, key = id, store = self.store, cache_errors = "InvalidArgument")]
    async fn direct(&self, id: &str, cents: u64) -> Result<u64, PayError> {
        if cents == 0 {
            Err(PayError::ZeroAmount)
        } else {
            Ok(cents)
        }
    }

    #[sf::idempotent(crate = sf, key = id, store = self.store)]
    async fn renamed(&self, id: &str, cents: u64) -> Result<u64, IdempotencyError> {
        Ok(cents)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let service = Service {
        store: MemoryStore::new(),
    };
    assert_eq!(service.direct("a", 1).await, Ok(1));
    assert_eq!(service.direct("a", 2).await, Ok(1), "replayed");
    assert_eq!(service.direct("b", 0).await, Err(PayError::ZeroAmount));
    assert_eq!(
        service.direct("b", 1).await,
        Err(PayError::ZeroAmount),
        "cached"
    );
    assert_eq!(service.renamed("c", 3).await.unwrap(), 3);
    assert_eq!(service.renamed("c", 4).await.unwrap(), 3);
    let _ = steadfast::mem::size_of::<u8>();
}
