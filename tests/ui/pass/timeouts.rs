//! `timeout` and `deadline` with `std::io::Error`, which can express a
//! timeout (`ErrorKind::TimedOut`, code `DeadlineExceeded`).

#![deny(warnings)]
#![deny(clippy::all, clippy::pedantic, clippy::nursery)]

use std::{io, time::Duration};

use tokio::time::{Instant, sleep};

#[steadfast::retry(max = 3, backoff = "const(10ms)", jitter = "none", timeout = "100ms")]
async fn slow_then_fast(calls: &mut u32) -> Result<u32, io::Error> {
    *calls += 1;
    if *calls < 3 {
        sleep(Duration::from_secs(1)).await;
    }
    Ok(*calls)
}

#[steadfast::retry(max = 2, backoff = "const(100ms)", jitter = "none", deadline = "250ms")]
async fn refused(calls: &mut u32) -> Result<(), io::Error> {
    *calls += 1;
    sleep(Duration::from_millis(50)).await;
    Err(io::ErrorKind::ConnectionRefused.into())
}

#[steadfast::retry(timeout = "1s", deadline = "1500ms", backoff = "none")]
async fn hangs(calls: &mut u32) -> Result<(), io::Error> {
    *calls += 1;
    sleep(Duration::from_mins(1)).await;
    Ok(())
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    let started = Instant::now();
    let mut calls = 0;
    assert_eq!(slow_then_fast(&mut calls).await.unwrap(), 3);
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(100 + 10 + 100 + 10)
    );

    // 50 ms attempts at 0 and 150 ms; a third (`max = 2` allows it) would
    // start at 300 ms, past the deadline, so its sleep does not start.
    let mut calls = 0;
    let error = refused(&mut calls).await.unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
    assert_eq!(calls, 2);

    // The first attempt times out at 1 s; the second is cut by the deadline.
    let started = Instant::now();
    let mut calls = 0;
    let error = hangs(&mut calls).await.unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    assert_eq!(calls, 2);
    assert_eq!(started.elapsed(), Duration::from_millis(1500));
}
