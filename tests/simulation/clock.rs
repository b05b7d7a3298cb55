//! The callers' clocks: the simulation's time (tokio's paused time, which
//! moves only when the scheduler advances it) plus a skew of each caller's
//! own.

use std::cell::RefCell;

use steadfast::idempotency::{Clock, Millis};

/// Where every simulated clock starts: a plausible Unix time in ms.
pub(crate) const EPOCH: Millis = 1_700_000_000_000;

/// Clocks in the pool: one per caller, and the last one, never skewed, for
/// the auditors.
pub(crate) const CLOCKS: usize = 8;

/// The auditors' clock: the simulation's time, unskewed.
pub(crate) const TRUE_CLOCK: usize = CLOCKS - 1;

struct Time {
    start: tokio::time::Instant,
    skews: [Millis; CLOCKS],
}

thread_local! {
    /// The time of the simulation running on this thread (a run lives on
    /// one thread, in a current-thread runtime).
    static TIME: RefCell<Option<Time>> = const { RefCell::new(None) };
}

/// One caller's clock. The engine takes `&'static dyn Clock`: a fixed pool
/// of statics that read the simulation of their thread, so that thousands of
/// runs leak nothing and runs on parallel test threads never meet.
#[derive(Debug)]
pub(crate) struct SimClock(usize);

/// The pool: caller `i` reads `POOL[i]`, the auditors `POOL[TRUE_CLOCK]`.
pub(crate) static POOL: [SimClock; CLOCKS] = [
    SimClock(0),
    SimClock(1),
    SimClock(2),
    SimClock(3),
    SimClock(4),
    SimClock(5),
    SimClock(6),
    SimClock(7),
];

impl Clock for SimClock {
    fn now_millis(&self) -> Millis {
        TIME.with_borrow(|time| {
            let time = time
                .as_ref()
                .expect("a simulated clock is read inside its simulation");
            EPOCH + elapsed(time.start) + time.skews[self.0]
        })
    }
}

fn elapsed(start: tokio::time::Instant) -> Millis {
    Millis::try_from(start.elapsed().as_millis()).expect("a simulation lasts less than an aeon")
}

/// The simulation's time: milliseconds since it started.
pub(crate) fn now() -> Millis {
    TIME.with_borrow(|time| {
        elapsed(
            time.as_ref()
                .expect("the simulation's time is read inside it")
                .start,
        )
    })
}

/// The simulation's time as a clock shows it (`EPOCH + now`), relative to
/// the epoch, for the trace.
pub(crate) fn shown(millis: Millis) -> Millis {
    millis - EPOCH
}

/// Starts the simulation's time on this thread (in its runtime, whose time
/// is paused), with each clock's skew; it stops when the guard drops.
pub(crate) fn start(skews: [Millis; CLOCKS]) -> Running {
    TIME.set(Some(Time {
        start: tokio::time::Instant::now(),
        skews,
    }));
    Running(())
}

/// The simulation's time, running until dropped.
pub(crate) struct Running(());

impl Drop for Running {
    fn drop(&mut self) {
        TIME.set(None);
    }
}
