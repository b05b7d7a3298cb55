//! `fingerprint = …` over what users have: a string, bytes, an integer, a
//! tuple of these, any serde value; a key reused with another payload gets
//! `PayloadMismatch`.

#![deny(warnings)]
#![deny(clippy::all, clippy::pedantic, clippy::nursery)]

use std::sync::LazyLock;

use steadfast::idempotency::{IdempotencyError, MemoryStore};

static STORE: LazyLock<MemoryStore> = LazyLock::new(MemoryStore::new);

#[derive(Debug, Clone, serde::Serialize)]
struct Transfer {
    id: String,
    to: String,
    amount: i64,
}

#[steadfast::idempotent(key = transfer.id, store = STORE, fingerprint = transfer.amount)]
async fn by_amount(transfer: Transfer) -> Result<i64, IdempotencyError> {
    Ok(transfer.amount)
}

#[steadfast::idempotent(key = transfer.id, store = STORE, fingerprint = (transfer.amount, &transfer.to))]
async fn by_tuple(transfer: Transfer) -> Result<i64, IdempotencyError> {
    Ok(transfer.amount)
}

#[steadfast::idempotent(key = transfer.id, store = STORE, fingerprint = transfer)]
async fn by_serde(transfer: Transfer) -> Result<i64, IdempotencyError> {
    Ok(transfer.amount)
}

#[steadfast::idempotent(key = transfer.id, store = STORE, fingerprint = transfer.to)]
async fn by_string(transfer: Transfer) -> Result<i64, IdempotencyError> {
    Ok(transfer.amount)
}

#[steadfast::idempotent(key = transfer.id, store = STORE, fingerprint = transfer.to.as_bytes())]
async fn by_bytes(transfer: Transfer) -> Result<i64, IdempotencyError> {
    Ok(transfer.amount)
}

fn transfer(id: &str, to: &str, amount: i64) -> Transfer {
    Transfer {
        id: id.to_owned(),
        to: to.to_owned(),
        amount,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    assert_eq!(by_amount(transfer("a", "bob", 5)).await.unwrap(), 5);
    assert!(matches!(
        by_amount(transfer("a", "bob", 6)).await,
        Err(IdempotencyError::PayloadMismatch)
    ));
    assert_eq!(by_tuple(transfer("t", "bob", 5)).await.unwrap(), 5);
    assert!(matches!(
        by_tuple(transfer("t", "eve", 5)).await,
        Err(IdempotencyError::PayloadMismatch)
    ));
    assert_eq!(by_serde(transfer("s", "bob", 5)).await.unwrap(), 5);
    assert!(matches!(
        by_serde(transfer("s", "bob", 7)).await,
        Err(IdempotencyError::PayloadMismatch)
    ));
    assert_eq!(by_string(transfer("x", "bob", 5)).await.unwrap(), 5);
    assert_eq!(
        by_string(transfer("x", "bob", 9)).await.unwrap(),
        5,
        "the amount is not fingerprinted"
    );
    assert_eq!(by_bytes(transfer("b", "bob", 5)).await.unwrap(), 5);
    assert!(matches!(
        by_bytes(transfer("b", "eve", 5)).await,
        Err(IdempotencyError::PayloadMismatch)
    ));
}
