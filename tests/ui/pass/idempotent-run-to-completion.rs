//! `run_to_completion`: on by default for handlers that own their arguments
//! (their result must then be `Send`), `false` for a handler whose result or
//! body is not `Send` (a `Box<dyn Error>`, an `Rc` held across an `.await`),
//! whose body then stops with its caller's future.

#![deny(warnings)]
#![deny(clippy::all, clippy::pedantic, clippy::nursery)]

use std::{error::Error, rc::Rc};

use steadfast::idempotency::IdempotencyError;

// Not `Send`, by the user's choice: clippy's `future_not_send` says so.
#[allow(clippy::future_not_send)]
#[steadfast::idempotent(key = request_id, run_to_completion = false)]
async fn boxed_error(request_id: String, cents: u64) -> Result<u64, Box<dyn Error>> {
    if cents == 0 {
        return Err("zero".into());
    }
    Ok(cents)
}

#[allow(clippy::future_not_send)]
#[steadfast::idempotent(key = request_id, run_to_completion = false)]
async fn holds_an_rc(request_id: String) -> Result<usize, IdempotencyError> {
    let shared = Rc::new(request_id.len());
    tokio::task::yield_now().await;
    Ok(*shared)
}

#[steadfast::idempotent(key = request_id, run_to_completion = true)]
async fn sendable(request_id: String) -> Result<usize, Box<dyn Error + Send + Sync>> {
    Ok(request_id.len())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    assert_eq!(boxed_error("a".to_owned(), 5).await.unwrap(), 5);
    assert!(boxed_error("b".to_owned(), 0).await.is_err());
    assert_eq!(holds_an_rc("abc".to_owned()).await.unwrap(), 3);
    assert_eq!(sendable("ab".to_owned()).await.unwrap(), 2);
}
