//! [`RatioBudget`]: retries as a share of calls over a sliding window.

use std::{
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;

use super::Budget;

/// The window is kept as this many slots of equal length, in a ring.
const SLOTS: usize = 10;
/// What one retry costs, in the units of a slot's balance; a call deposits
/// `percent × 10` units, so percentages are kept to a tenth.
const RETRY_COST: i64 = 1000;

/// Retries limited to a share of calls: at most `percent` % of the calls
/// made over a sliding window (10 s by default), plus a floor of
/// `min_per_second` retries a second. Finagle's `RetryBudget`, tower's
/// `TpsBudget`.
///
/// Where [`RetryBudget`](crate::RetryBudget) reacts to the ratio of failures
/// to successes, this one bounds the extra load itself: at 10 %, whatever
/// the server does, it receives at most 1.1 times the calls, plus the floor.
/// The floor lets a client that makes few calls (one a minute) still retry
/// its rare failure.
///
/// Each call deposits `percent / 100` of a retry into the slot of the
/// current tenth of the window; a retry is allowed while the deposits of
/// the last ten slots, plus the floor's `min_per_second × window`, less
/// the retries already taken in them, still cover one more. A slot older
/// than the window is cleared when its place in the ring comes round again,
/// so deposits and retries count for between 9/10 of the window and the
/// whole of it. Successes and failures change nothing: only calls and
/// retries count.
///
/// Lock-free: each slot is one `AtomicU64` (its tenth of the window and its
/// balance), and a retry is taken by one compare-and-swap on the current
/// slot against the sum of all the others, so concurrent callers never
/// take more than the budget holds. Time is read from
/// [`tokio::time::Instant`], so tests on tokio's paused clock are exact; it
/// counts from the budget's first use.
///
/// # Default
/// `percent = 10`, a window of 10 s, `min_per_second = 10`. Tower and
/// Finagle default to 20 %; 10 % matches gRPC's throttling of about one
/// failure in ten.
///
/// ```
/// use std::time::Duration;
/// use steadfast::{Budget, RatioBudget};
///
/// static BUDGET: RatioBudget = RatioBudget::new(20.0)
///     .with_window(Duration::from_secs(5))
///     .with_min_per_second(0);
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// for _ in 0..10 {
///     BUDGET.record_call(); // each call deposits 0.2 retries
/// }
/// assert!(BUDGET.withdraw());
/// assert!(BUDGET.withdraw());
/// assert!(!BUDGET.withdraw(), "20 % of 10 calls is 2 retries");
/// tokio::time::sleep(Duration::from_secs(5)).await;
/// BUDGET.record_call();
/// assert!(!BUDGET.withdraw(), "the first ten calls left the window");
/// # }
/// ```
///
/// A field of the client, shared by every call through it:
///
/// ```
/// use std::sync::Arc;
/// use steadfast::{Code, RatioBudget};
///
/// struct Client {
///     budget: Arc<RatioBudget>,
/// }
///
/// impl Client {
///     #[steadfast::retry(max = 3, backoff = "none", budget = self.budget)]
///     async fn get(&self) -> Result<u32, Code> {
///         Ok(7)
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let client = Client { budget: Arc::new(RatioBudget::default()) };
/// assert_eq!(client.get().await, Ok(7));
/// # }
/// ```
#[derive(Debug)]
pub struct RatioBudget {
    percent: f64,
    window: Duration,
    min_per_second: u32,
    /// Units a call deposits: `percent × 10`.
    deposit: i64,
    /// When the budget was first used: slot 0 starts then.
    origin: OnceLock<Instant>,
    /// Each slot: its tick (the tenth of the window it counts, since
    /// `origin`) in the high 32 bits, its balance (an `i32`) in the low ones.
    slots: [AtomicU64; SLOTS],
}

impl RatioBudget {
    /// Retries up to `percent` % of the calls over the last 10 s, plus a
    /// floor of 10 a second (see the [`Default`](#default) section).
    ///
    /// # Panics
    /// If `percent` is not in `0.0..=1000.0` (at compile time, in a `static`
    /// or `const`).
    pub const fn new(percent: f64) -> RatioBudget {
        assert!(
            percent >= 0.0 && percent <= 1000.0,
            "percent must be in 0..=1000"
        );
        RatioBudget {
            percent,
            window: Duration::from_secs(10),
            min_per_second: 10,
            deposit: (percent * (RETRY_COST as f64 / 100.0)) as i64,
            origin: OnceLock::new(),
            slots: [const { AtomicU64::new(0) }; SLOTS],
        }
    }

    /// The window over which calls and retries count.
    ///
    /// # Panics
    /// If `window` is not between 1 s and 60 s.
    pub const fn with_window(mut self, window: Duration) -> RatioBudget {
        assert!(
            window.as_secs() >= 1 && window.as_nanos() <= 60_000_000_000,
            "the window must be between 1s and 60s"
        );
        self.window = window;
        self
    }

    /// Retries a second allowed whatever the calls, for clients that make
    /// few of them; 0 for none.
    ///
    /// # Panics
    /// Above 1000.
    pub const fn with_min_per_second(mut self, min_per_second: u32) -> RatioBudget {
        assert!(
            min_per_second <= 1000,
            "min_per_second must be at most 1000"
        );
        self.min_per_second = min_per_second;
        self
    }

    /// The share of calls that may be retried, in percent.
    pub const fn percent(&self) -> f64 {
        self.percent
    }

    /// The window over which calls and retries count.
    pub const fn window(&self) -> Duration {
        self.window
    }

    /// The retries a second allowed whatever the calls.
    pub const fn min_per_second(&self) -> u32 {
        self.min_per_second
    }

    /// The retries the budget would allow now (fractional), for metrics and
    /// tests.
    pub fn available(&self) -> f64 {
        let tick = self.tick();
        let total = self.others(tick, usize::MAX) + self.reserve();
        total as f64 / RETRY_COST as f64
    }

    /// The tenth of the window now falls in, counted from the first use.
    fn tick(&self) -> u32 {
        let origin = *self.origin.get_or_init(Instant::now);
        let slot = (self.window.as_nanos() / SLOTS as u128).max(1);
        // Wraps after 2^32 tenths of a window (13 years at 1 s): a slot is
        // current only when its tick equals this one, never by age alone.
        (origin.elapsed().as_nanos() / slot) as u32
    }

    /// The floor over one window, in units: `min_per_second × window`.
    fn reserve(&self) -> i64 {
        let nanos = self.window.as_nanos() as i64;
        i64::from(self.min_per_second) * nanos / 1_000_000_000 * RETRY_COST
    }

    /// The balance of every slot in the window but `skip`.
    fn others(&self, tick: u32, skip: usize) -> i64 {
        self.slots
            .iter()
            .enumerate()
            .filter(|(index, _)| *index != skip)
            .map(|(_, slot)| {
                let (slot_tick, balance) = unpack(slot.load(Ordering::Acquire));
                if tick.wrapping_sub(slot_tick) < SLOTS as u32 {
                    i64::from(balance)
                } else {
                    0
                }
            })
            .sum()
    }
}

impl Default for RatioBudget {
    fn default() -> RatioBudget {
        RatioBudget::new(10.0)
    }
}

/// The current slot's balance as `packed` holds it: what it holds if it is
/// this tick's (or a later one's, for a caller whose clock read lags), zero
/// if it is left from an earlier turn of the ring.
fn current(packed: u64, tick: u32) -> (u32, i32) {
    let (slot_tick, balance) = unpack(packed);
    if (slot_tick.wrapping_sub(tick) as i32) >= 0 {
        (slot_tick, balance)
    } else {
        (tick, 0)
    }
}

fn pack(tick: u32, balance: i32) -> u64 {
    (u64::from(tick) << 32) | u64::from(balance as u32)
}

fn unpack(packed: u64) -> (u32, i32) {
    ((packed >> 32) as u32, packed as u32 as i32)
}

impl Budget for RatioBudget {
    fn record_call(&self) {
        if self.deposit == 0 {
            return;
        }
        let tick = self.tick();
        let deposit = self.deposit as i32;
        let _ = self.slots[tick as usize % SLOTS].fetch_update(
            Ordering::AcqRel,
            Ordering::Acquire,
            |packed| {
                let (tick, balance) = current(packed, tick);
                Some(pack(tick, balance.saturating_add(deposit)))
            },
        );
    }

    fn withdraw(&self) -> bool {
        let tick = self.tick();
        let index = tick as usize % SLOTS;
        let covered = self.others(tick, index) + self.reserve();
        self.slots[index]
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |packed| {
                let (tick, balance) = current(packed, tick);
                (covered + i64::from(balance) >= RETRY_COST)
                    .then(|| pack(tick, balance.saturating_sub(RETRY_COST as i32)))
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::time::advance;

    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    fn retries(budget: &RatioBudget) -> usize {
        std::iter::from_fn(|| budget.withdraw().then_some(())).count()
    }

    #[test]
    fn nothing_deposited_nothing_retried() {
        let budget = RatioBudget::new(50.0).with_min_per_second(0);
        assert!(!budget.withdraw());
        assert_eq!(budget.available(), 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_a_share_of_calls() {
        let budget = RatioBudget::new(10.0).with_min_per_second(0);
        for _ in 0..100 {
            budget.record_call();
        }
        assert_eq!(retries(&budget), 10);
        for _ in 0..9 {
            budget.record_call();
        }
        assert_eq!(retries(&budget), 0, "0.9 of a retry is not one");
        budget.record_call();
        assert_eq!(retries(&budget), 1);
        let generous = RatioBudget::new(250.0).with_min_per_second(0);
        generous.record_call();
        generous.record_call();
        assert_eq!(retries(&generous), 5, "2.5 retries per call");
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_leave_the_window_by_tenths() {
        let budget = RatioBudget::new(100.0)
            .with_window(Duration::from_secs(1))
            .with_min_per_second(0);
        budget.record_call(); // t = 0, slot 0
        advance(ms(300)).await;
        budget.record_call(); // slot 3
        advance(ms(650)).await; // t = 950 ms, slot 9: both still count
        assert_eq!(budget.available(), 2.0);
        advance(ms(50)).await; // t = 1 s: slot 0 is the current slot again
        assert_eq!(budget.available(), 1.0, "the first call left the window");
        advance(ms(299)).await; // t = 1.299 s, slot 2 of the next turn
        assert_eq!(budget.available(), 1.0);
        advance(ms(1)).await; // t = 1.3 s, slot 3 again
        assert_eq!(budget.available(), 0.0);
        advance(Duration::from_secs(3600)).await;
        assert!(!budget.withdraw(), "an hour later, nothing is left");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_taken_return_when_they_leave_the_window() {
        let budget = RatioBudget::new(100.0)
            .with_window(Duration::from_secs(1))
            .with_min_per_second(0);
        for _ in 0..3 {
            budget.record_call();
        }
        advance(ms(500)).await;
        assert_eq!(retries(&budget), 3);
        advance(ms(500)).await; // the calls leave; the retries still count
        for _ in 0..3 {
            budget.record_call();
        }
        assert_eq!(retries(&budget), 0, "3 new calls, 3 retries in the window");
        advance(ms(500)).await; // the retries leave
        assert_eq!(retries(&budget), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_floor_allows_retries_without_calls() {
        let budget = RatioBudget::new(0.0)
            .with_window(Duration::from_secs(2))
            .with_min_per_second(3);
        assert_eq!(retries(&budget), 6, "3 a second over a 2 s window");
        advance(ms(1000)).await;
        assert_eq!(retries(&budget), 0, "the window still holds them");
        advance(ms(1000)).await;
        assert_eq!(retries(&budget), 6, "the first 6 left the window");
    }

    #[test]
    fn concurrent_withdrawals_never_overdraw() {
        let budget = Arc::new(RatioBudget::new(10.0).with_min_per_second(0));
        for _ in 0..1000 {
            budget.record_call();
        }
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let budget = budget.clone();
                std::thread::spawn(move || retries(&budget))
            })
            .collect();
        let taken: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(taken, 100);
    }

    #[test]
    fn balances_pack_both_signs() {
        for (tick, balance) in [(0, 0), (7, -1000), (u32::MAX, i32::MIN), (3, i32::MAX)] {
            assert_eq!(unpack(pack(tick, balance)), (tick, balance));
        }
    }
}
