//! `#[derive(Classify)]`: codes, `transparent`, `from = field`, `timeout`,
//! structs and generic enums; and the derived type under `#[retry]`.

#![deny(warnings)]
#![deny(clippy::all, clippy::pedantic, clippy::nursery)]

use std::io;

use steadfast::{Classify, Code, Elapsed, FromTimeout};

#[derive(Debug, steadfast::Classify)]
enum FetchError {
    #[code(Unavailable)]
    Down,
    #[code(DeadlineExceeded)]
    #[classify(timeout)]
    TimedOut,
    #[code(InvalidArgument)]
    BadInput { field: &'static str },
    #[classify(transparent)]
    Io(io::Error),
    #[classify(from = source)]
    Parse { line: u32, source: io::Error },
}

#[derive(Debug, steadfast::Classify)]
enum Wrapped<E> {
    #[classify(transparent)]
    Inner(E),
    #[code(ResourceExhausted)]
    Overloaded,
}

#[derive(Debug, steadfast::Classify)]
#[code(Unavailable)]
struct Maintenance;

#[derive(Debug, steadfast::Classify)]
#[classify(transparent)]
struct Transport(io::Error);

#[derive(Debug, steadfast::Classify)]
enum Layered {
    #[classify(transparent, timeout)]
    Io(io::Error),
}

#[steadfast::retry(max = 3, backoff = "none", timeout = "100ms")]
async fn fetch(calls: &mut u32) -> Result<u32, FetchError> {
    *calls += 1;
    match *calls {
        1 => Err(FetchError::Down),
        2 => Err(FetchError::Io(io::ErrorKind::ConnectionReset.into())),
        3 => {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            Ok(0)
        }
        _ => Ok(*calls),
    }
}

#[steadfast::retry(backoff = "none", on = "ResourceExhausted|Unavailable")]
async fn generic<E: Classify>(calls: &mut u32, error: fn() -> E) -> Result<u32, Wrapped<E>> {
    *calls += 1;
    if *calls < 2 {
        Err(Wrapped::Overloaded)
    } else if *calls < 3 {
        Err(Wrapped::Inner(error()))
    } else {
        Ok(*calls)
    }
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    assert_eq!(FetchError::Down.code(), Some(Code::Unavailable));
    assert_eq!(FetchError::TimedOut.code(), Some(Code::DeadlineExceeded));
    let bad_input = FetchError::BadInput { field: "id" };
    assert_eq!(bad_input.code(), Some(Code::InvalidArgument));
    assert!(matches!(bad_input, FetchError::BadInput { field: "id" }));
    assert_eq!(
        FetchError::Io(io::ErrorKind::TimedOut.into()).code(),
        Some(Code::DeadlineExceeded)
    );
    let parse = FetchError::Parse {
        line: 3,
        source: io::ErrorKind::InvalidData.into(),
    };
    assert_eq!(parse.code(), Some(Code::InvalidArgument));
    assert!(matches!(parse, FetchError::Parse { line: 3, .. }));
    assert!(matches!(
        FetchError::from_timeout(Elapsed::attempt(std::time::Duration::from_secs(1))),
        FetchError::TimedOut
    ));

    assert_eq!(Wrapped::Inner(Code::Aborted).code(), Some(Code::Aborted));
    assert_eq!(
        Wrapped::<io::Error>::Overloaded.code(),
        Some(Code::ResourceExhausted)
    );
    assert_eq!(Maintenance.code(), Some(Code::Unavailable));
    assert_eq!(
        Transport(io::ErrorKind::BrokenPipe.into()).code(),
        Some(Code::Unavailable)
    );
    let Layered::Io(timed_out) =
        Layered::from_timeout(Elapsed::deadline(std::time::Duration::from_secs(1)));
    assert_eq!(timed_out.kind(), io::ErrorKind::TimedOut);

    // Down, then a reset, then a timeout (the derived `TimedOut`), then success.
    let mut calls = 0;
    assert_eq!(fetch(&mut calls).await.unwrap(), 4);

    let mut calls = 0;
    assert_eq!(
        generic(&mut calls, || Code::Unavailable).await.ok(),
        Some(3)
    );
}
