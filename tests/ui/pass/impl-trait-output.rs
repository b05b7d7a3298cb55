//! `Result<impl Trait, E>`: the return type cannot be named in the body,
//! and the expansion does not need to.

#![deny(warnings)]
#![deny(clippy::all, clippy::pedantic, clippy::nursery)]

use std::fmt::Display;

use steadfast::Code;

#[steadfast::retry(backoff = "none")]
async fn label(calls: &mut u32) -> Result<impl Display, Code> {
    *calls += 1;
    if *calls < 2 {
        return Err(Code::Unavailable);
    }
    Ok(format!("attempt {calls}"))
}

#[steadfast::retry(backoff = "none")]
fn numbers(calls: &mut u32) -> Result<impl Iterator<Item = u32>, Code> {
    *calls += 1;
    if *calls < 2 {
        Err(Code::Unavailable)
    } else {
        Ok(0..*calls)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut calls = 0;
    let label = label(&mut calls).await.unwrap();
    assert_eq!(format!("{label}"), "attempt 2");
    let mut calls = 0;
    assert_eq!(numbers(&mut calls).unwrap().sum::<u32>(), 1);
}
