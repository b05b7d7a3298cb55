//! A blocking fn: the loop sleeps the thread; `deadline` bounds the sleeps.

#![deny(warnings)]
#![deny(clippy::all, clippy::pedantic, clippy::nursery)]

use std::io;

use steadfast::Code;

#[steadfast::retry(max = 3, backoff = "const(1ms)", jitter = "none", deadline = "10s")]
fn read_config(calls: &mut u32, path: String) -> Result<String, io::Error> {
    *calls += 1;
    if *calls < 3 {
        return Err(io::ErrorKind::ConnectionReset.into());
    }
    Ok(format!("{path}: ok"))
}

#[steadfast::retry(max = 2, backoff = "none")]
fn never(calls: &mut u32) -> Result<u32, Code> {
    *calls += 1;
    Err(Code::Unavailable)
}

#[steadfast::retry(max = 3, backoff = "const(30ms)", jitter = "none", deadline = "100ms")]
fn bounded(calls: &mut u32) -> Result<u32, Code> {
    *calls += 1;
    std::thread::sleep(std::time::Duration::from_millis(5));
    Err(Code::Unavailable)
}

fn main() {
    let mut calls = 0;
    assert_eq!(
        read_config(&mut calls, "app.toml".into()).unwrap(),
        "app.toml: ok"
    );
    assert_eq!(calls, 3);

    let mut calls = 0;
    assert_eq!(never(&mut calls), Err(Code::Unavailable));
    assert_eq!(calls, 3);

    // No sleep starts that would end past the deadline.
    let mut calls = 0;
    let started = std::time::Instant::now();
    assert_eq!(bounded(&mut calls), Err(Code::Unavailable));
    assert!(started.elapsed() < std::time::Duration::from_millis(100));
    assert!((2..=3).contains(&calls), "{calls} attempts");
}
