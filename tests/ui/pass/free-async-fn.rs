//! A free async fn: codes, `allow_non_transient`, exhaustion, and `?` and
//! `return` in the body ending one attempt rather than the call.

#![deny(warnings)]
#![deny(clippy::all, clippy::pedantic, clippy::nursery)]

use std::sync::atomic::{AtomicU32, Ordering};

use steadfast::Code;

#[steadfast::retry(
    max = 3,
    backoff = "exp(10ms)",
    jitter = "none",
    on = "Unavailable|DeadlineExceeded"
)]
async fn flaky(calls: &AtomicU32, succeed_on: u32) -> Result<u32, Code> {
    let call = calls.fetch_add(1, Ordering::SeqCst) + 1;
    if call < succeed_on {
        // Ends this attempt only.
        return Err(Code::Unavailable);
    }
    Ok(call)
}

const fn parse(call: u32) -> Result<u32, Code> {
    if call < 3 {
        Err(Code::DeadlineExceeded)
    } else {
        Ok(call * 10)
    }
}

#[steadfast::retry(max = 5, backoff = "const(1ms)")]
async fn with_question_mark(calls: &mut u32) -> Result<u32, Code> {
    *calls += 1;
    // Ends this attempt only.
    let value = parse(*calls)?;
    Ok(value + 1)
}

#[steadfast::retry(
    max = 2,
    backoff = "none",
    on = "Unavailable|NotFound",
    allow_non_transient
)]
async fn eventually_found(calls: &mut u32) -> Result<&'static str, Code> {
    *calls += 1;
    if *calls < 3 {
        Err(Code::NotFound)
    } else {
        Ok("found")
    }
}

#[steadfast::retry]
async fn invalid(calls: &mut u32) -> Result<(), Code> {
    *calls += 1;
    Err(Code::InvalidArgument)
}

#[steadfast::retry(max = 2, backoff = "none")]
pub(crate) async fn always_down(calls: &mut u32) -> Result<(), Code> {
    *calls += 1;
    Err(Code::Unavailable)
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    let calls = AtomicU32::new(0);
    let started = tokio::time::Instant::now();
    assert_eq!(flaky(&calls, 3).await, Ok(3));
    assert_eq!(started.elapsed(), std::time::Duration::from_millis(10 + 20));

    let mut calls = 0;
    assert_eq!(with_question_mark(&mut calls).await, Ok(31));
    assert_eq!(calls, 3);

    let mut calls = 0;
    assert_eq!(eventually_found(&mut calls).await, Ok("found"));
    assert_eq!(calls, 3);

    // Not in `on`: returned at once.
    let mut calls = 0;
    assert_eq!(invalid(&mut calls).await, Err(Code::InvalidArgument));
    assert_eq!(calls, 1);

    // `max = 2`: three attempts, then the last error.
    let mut calls = 0;
    assert_eq!(always_down(&mut calls).await, Err(Code::Unavailable));
    assert_eq!(calls, 3);
}
