//! `crate = path`: generated code reaches the runtime through the path
//! given, here in a crate where `::steadfast` names another crate, as for a
//! user who depends on `retry-runtime` and `retry-macros` directly or
//! renames the dependency. (Without `crate = …`, `::steadfast::__private`
//! would not resolve.)

#![deny(warnings)]
#![deny(clippy::all, clippy::pedantic, clippy::nursery)]

extern crate core as steadfast;
extern crate steadfast as sf;

use steadfast_retry_macros::{Classify, retry};
use steadfast_runtime::Code;

#[derive(Debug, PartialEq, Classify)]
#[classify(crate = ::steadfast_runtime)]
enum FetchError {
    #[code(DeadlineExceeded)]
    #[classify(timeout)]
    TimedOut,
    #[code(Unavailable)]
    Down,
}

#[retry(crate = ::steadfast_runtime, max = 2, backoff = "none", timeout = "1s")]
async fn direct(calls: &mut u32, name: String) -> Result<String, FetchError> {
    *calls += 1;
    if *calls < 3 {
        Err(FetchError::Down)
    } else {
        Ok(name)
    }
}

#[sf::retry(crate = sf, backoff = "none")]
async fn renamed(calls: &mut u32) -> Result<u32, sf::Code> {
    *calls += 1;
    if *calls < 2 {
        Err(sf::Code::Unavailable)
    } else {
        Ok(*calls)
    }
}

#[derive(Debug, PartialEq, sf::Classify)]
#[classify(crate = sf)]
#[code(Unavailable)]
struct Down;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut calls = 0;
    assert_eq!(direct(&mut calls, "a".into()).await, Ok("a".to_owned()));
    let mut calls = 0;
    assert_eq!(renamed(&mut calls).await, Ok(2));
    assert_eq!(
        steadfast_runtime::Classify::code(&Down),
        Some(Code::Unavailable)
    );
    let _ = steadfast::mem::size_of::<u8>();
}
