//! `on = predicate` (a path or a closure, for an error type without
//! `Classify`), `notify = path` and `budget = STATIC`.

#![deny(warnings)]
#![deny(clippy::all, clippy::pedantic, clippy::nursery)]

use std::{sync::Mutex, time::Duration};

use steadfast::{Code, RetryBudget, RetryEvent};

#[derive(Debug, PartialEq)]
struct Busy {
    transient: bool,
}

mod checks {
    pub const fn is_busy(error: &super::Busy) -> bool {
        error.transient
    }
}

#[steadfast::retry(max = 3, backoff = "none", on = checks::is_busy)]
async fn by_path(calls: &mut u32, transient: bool) -> Result<u32, Busy> {
    *calls += 1;
    if *calls < 3 {
        Err(Busy { transient })
    } else {
        Ok(*calls)
    }
}

#[steadfast::retry(max = 3, backoff = "none", on = |error: &Busy| error.transient)]
async fn by_closure(calls: &mut u32) -> Result<u32, Busy> {
    *calls += 1;
    if *calls < 2 {
        Err(Busy { transient: true })
    } else {
        Ok(*calls)
    }
}

static EVENTS: Mutex<Vec<(Code, u32, Duration)>> = Mutex::new(Vec::new());

mod hooks {
    pub fn record<E: steadfast::Classify>(error: &E, event: steadfast::RetryEvent) {
        let code = error.code().expect("retried errors have a code");
        super::EVENTS
            .lock()
            .unwrap()
            .push((code, event.attempt, event.delay));
    }
}

#[steadfast::retry(max = 3, backoff = "const(5ms)", jitter = "none", notify = hooks::record)]
async fn notified(calls: &mut u32) -> Result<u32, Code> {
    *calls += 1;
    if *calls < 3 {
        Err(Code::Unavailable)
    } else {
        Ok(*calls)
    }
}

static BUDGET: RetryBudget = RetryBudget::new(4, 0.5);

#[steadfast::retry(max = 5, backoff = "none", budget = BUDGET)]
async fn budgeted(calls: &mut u32) -> Result<(), Code> {
    *calls += 1;
    Err(Code::Unavailable)
}

const fn _event_is_public(event: RetryEvent) -> u32 {
    event.attempt
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    let mut calls = 0;
    assert_eq!(by_path(&mut calls, true).await, Ok(3));
    let mut calls = 0;
    assert_eq!(
        by_path(&mut calls, false).await,
        Err(Busy { transient: false })
    );
    assert_eq!(calls, 1);
    let mut calls = 0;
    assert_eq!(by_closure(&mut calls).await, Ok(2));

    let mut calls = 0;
    assert_eq!(notified(&mut calls).await, Ok(3));
    let delay = Duration::from_millis(5);
    assert_eq!(
        *EVENTS.lock().unwrap(),
        [(Code::Unavailable, 1, delay), (Code::Unavailable, 2, delay)]
    );

    // 4 tokens, a retry needs more than half left: one retry, then the
    // budget stops the loop although `max = 5`.
    let mut calls = 0;
    assert_eq!(budgeted(&mut calls).await, Err(Code::Unavailable));
    assert_eq!(calls, 2);
}
