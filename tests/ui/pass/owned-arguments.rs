//! Owned arguments: cloned for each attempt but the last, which gets the
//! value itself; `&mut T` is reborrowed; a `mut` argument starts each
//! attempt from the caller's value.

#![deny(warnings)]
#![deny(clippy::all, clippy::pedantic, clippy::nursery)]

use std::sync::atomic::{AtomicU32, Ordering};

use steadfast::Code;

static CLONES: AtomicU32 = AtomicU32::new(0);

#[derive(Debug, PartialEq)]
struct Payload(String);

impl Clone for Payload {
    fn clone(&self) -> Self {
        CLONES.fetch_add(1, Ordering::SeqCst);
        Self(self.0.clone())
    }
}

#[steadfast::retry(max = 2, backoff = "none")]
async fn upload(log: &mut Vec<String>, payload: Payload, mut name: String) -> Result<(), Code> {
    name.push('!');
    log.push(format!("{name} {}", payload.0));
    drop(payload);
    Err(Code::Unavailable)
}

#[steadfast::retry(max = 2, backoff = "none")]
async fn moved_into_last(attempts: &mut u32, payload: Payload) -> Result<Payload, Code> {
    *attempts += 1;
    if *attempts < 3 {
        Err(Code::Unavailable)
    } else {
        Ok(payload)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut log = Vec::new();
    let result = upload(&mut log, Payload("body".into()), "put".into()).await;
    assert_eq!(result, Err(Code::Unavailable));
    // Three attempts, each from the caller's `name`.
    assert_eq!(log, ["put! body", "put! body", "put! body"]);
    // Two clones: the third attempt moves the payload in.
    assert_eq!(CLONES.swap(0, Ordering::SeqCst), 2);

    let mut attempts = 0;
    let original = Payload("body".into());
    assert_eq!(
        moved_into_last(&mut attempts, original.clone()).await,
        Ok(Payload("body".into()))
    );
    assert_eq!(attempts, 3);
    assert_eq!(CLONES.swap(0, Ordering::SeqCst), 1 + 2);
}
