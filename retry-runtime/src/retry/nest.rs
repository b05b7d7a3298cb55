//! The nested-retry guard: a `#[retry]` call that runs inside an attempt of
//! another `#[retry]` call, in the same task, does not multiply its
//! attempts by the enclosing call's.
//!
//! Three layers of `max = 3`, each calling the next, make 4 × 4 × 4 = 64
//! calls to a leaf that always fails when each retries on its own (as with
//! every peer: backon, tower, Polly, gRPC). Under the default rule,
//! [`Nested::Share`], the nest shares the outermost call's retries: a retry
//! made at any layer takes one of them, so the leaf runs at most 4 times
//! however deep the nest, and the retry is made by the layer nearest the
//! failure (the innermost sees it first), which redoes the least work.
//!
//! How a layer knows it is nested, without allocating or spawning: while a
//! call polls its attempt, a thread-local holds the nest's retries left
//! (and the attempt number). A call inside reads it when it decides to
//! retry and takes from it; the enclosing call copies it back when its poll
//! returns. Only values are kept, never pointers, and only for the length
//! of a poll, so a future moved to another task simply stops being nested.

use super::engine::{Retry, attempts_made};
use crate::RetryPolicy;
use std::{
    cell::Cell,
    future::Future,
    pin::Pin,
    sync::atomic::{AtomicU32, Ordering::Relaxed},
    task::{Context, Poll},
};

/// How a `#[retry]` call behaves inside an attempt of another `#[retry]`
/// call in the same task (`#[retry(nested = "share" | "outermost" |
/// "independent")]`, [`RetryPolicy::with_nested`](crate::RetryPolicy::with_nested)).
///
/// ```
/// use steadfast::{Code, Nested, RetryPolicy};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let policy = RetryPolicy::parse("none").unwrap();
/// let calls = std::cell::Cell::new(0);
/// let leaf = || async {
///     calls.set(calls.get() + 1);
///     Err::<(), Code>(Code::Unavailable)
/// };
/// // Two nested layers of max = 3 (the default): the leaf runs 4 times, not 16.
/// let _ = policy.run(|| policy.run(leaf)).await;
/// assert_eq!(calls.get(), 4);
///
/// // Retrying on its own, the inner layer multiplies.
/// calls.set(0);
/// let independent = policy.with_nested(Nested::Independent);
/// let _ = policy.run(|| independent.run(leaf)).await;
/// assert_eq!(calls.get(), 16);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Nested {
    /// The default: a nested call retries while the nest has retries left,
    /// and each retry takes one from the outermost call's `max`. The
    /// innermost operation then runs at most `max + 1` times (the
    /// outermost's), whichever layers retry.
    #[default]
    Share,
    /// A nested call makes one attempt and returns its error: only the
    /// outermost call retries (the rule of retrying at one layer only).
    Outermost,
    /// A nested call retries on its own, as if it were alone: attempts
    /// multiply across layers. Its own nested calls share its retries.
    Independent,
}

impl Nested {
    /// The rule named `name` (`share`, `outermost`, `independent`).
    ///
    /// ```
    /// use steadfast::Nested;
    ///
    /// assert_eq!(Nested::from_name("outermost"), Some(Nested::Outermost));
    /// assert_eq!(Nested::from_name("inner"), None);
    /// ```
    pub fn from_name(name: &str) -> Option<Nested> {
        match name {
            "share" => Some(Nested::Share),
            "outermost" => Some(Nested::Outermost),
            "independent" => Some(Nested::Independent),
            _ => None,
        }
    }
}

/// What a call publishes to the calls inside its attempt while it polls
/// it, packed in one word so that publishing costs a load and a store:
/// [`PRESENT`], the nest's retries left (the low 15 bits) and the attempts
/// the call made before this one (the high 16 bits); 0 when no attempt is
/// being polled.
type Frame = u32;

const PRESENT: Frame = 1 << 15;
const RETRIES: Frame = PRESENT - 1;

fn retries_of(frame: Frame) -> u32 {
    frame & RETRIES
}

fn previous_attempts_of(frame: Frame) -> Option<u32> {
    (frame & PRESENT != 0).then_some(frame >> 16)
}

thread_local! {
    static CURRENT: Cell<Frame> = const { Cell::new(0) };
}

/// One call's place in a nest: its rule, and the retries it gives its nest
/// when it is the outermost (or independent). What every attempt of a
/// `#[retry]` call needs, built before the first one (the rest of the
/// call's state, [`Retry`], only when an attempt fails).
#[derive(Debug)]
pub struct NestSlot {
    rule: Nested,
    /// An atomic only so that a call's future stays `Send` (it is borrowed
    /// across `.await`); it is read and written by one task, relaxed.
    own_retries: AtomicU32,
}

/// What a call may do when it wants to retry, by its nest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NestVerdict {
    /// Retry; take one retry from the nest with [`NestSlot::take`].
    Allowed,
    /// The nest has no retries left.
    Spent,
    /// Only the outermost call retries, and this one is nested.
    NotOutermost,
}

impl NestSlot {
    /// The slot of a call under `policy`.
    #[inline]
    pub fn for_policy(policy: &RetryPolicy) -> NestSlot {
        NestSlot::new(policy.nested(), policy.max_retries())
    }

    /// The next attempt of the call whose retry state is `retry` (`None`
    /// before the first failure), polled as this call's: a `#[retry]` call
    /// inside it shares this call's retries ([`Nested`]) and sees its
    /// attempt number ([`previous_attempts`]).
    #[inline]
    pub fn attempt<F: Future>(&self, retry: &Option<Retry<'_>>, attempt: F) -> InNest<'_, F> {
        InNest::new(self, attempts_made(retry), attempt)
    }

    /// Runs the next blocking attempt as this call's (see [`attempt`](NestSlot::attempt)).
    #[inline]
    pub fn attempt_blocking<T>(&self, retry: &Option<Retry<'_>>, attempt: impl FnOnce() -> T) -> T {
        self.run_in(attempt, attempts_made(retry))
    }

    #[inline]
    pub(crate) const fn new(rule: Nested, max_retries: u32) -> NestSlot {
        // `max_retries` is at most 100 (`with_max_retries` asserts it): it
        // fits the frame's 15 bits, and the attempts (at most 101) its 16.
        NestSlot {
            rule,
            own_retries: AtomicU32::new(max_retries),
        }
    }

    /// The enclosing frame, if this call is nested and shares or defers.
    #[inline]
    fn enclosing(&self, current: Frame) -> Option<Frame> {
        (current & PRESENT != 0 && self.rule != Nested::Independent).then_some(current)
    }

    /// Whether a retry is allowed now (called while deciding, in the
    /// enclosing call's poll).
    pub(crate) fn verdict(&self) -> NestVerdict {
        let retries = match self.enclosing(CURRENT.get()) {
            Some(_) if self.rule == Nested::Outermost => return NestVerdict::NotOutermost,
            Some(frame) => retries_of(frame),
            None => self.own_retries.load(Relaxed),
        };
        if retries == 0 {
            NestVerdict::Spent
        } else {
            NestVerdict::Allowed
        }
    }

    /// Takes the retry [`verdict`](NestSlot::verdict) allowed.
    pub(crate) fn take(&self) {
        let current = CURRENT.get();
        match self.enclosing(current) {
            Some(frame) => CURRENT.set(frame - u32::from(retries_of(frame) > 0)),
            None => self
                .own_retries
                .store(self.own_retries.load(Relaxed).saturating_sub(1), Relaxed),
        }
    }

    /// Polls `attempt` with this call published as the nest's frame, then
    /// carries what the calls inside took back to where it came from.
    #[inline(always)]
    pub(crate) fn poll_in<F: Future>(
        &self,
        attempt: Pin<&mut F>,
        cx: &mut Context<'_>,
        attempts: u32,
    ) -> Poll<F::Output> {
        let _published = self.publish(attempts);
        attempt.poll(cx)
    }

    /// Runs a blocking attempt with this call published, as
    /// [`poll_in`](NestSlot::poll_in) polls a future.
    pub(crate) fn run_in<T>(&self, attempt: impl FnOnce() -> T, attempts: u32) -> T {
        let _published = self.publish(attempts);
        attempt()
    }

    /// Publishes this call as the nest's frame until the guard drops (also
    /// when the attempt panics: no frame outlives its poll). On the success
    /// path: a thread-local load and store here, a load, a compare and a
    /// store on drop; carrying retries taken inside back is the cold path.
    #[inline(always)]
    fn publish(&self, attempts: u32) -> Published<'_> {
        let enclosing = CURRENT.get();
        let retries = if enclosing != 0 && self.rule != Nested::Independent {
            enclosing & RETRIES
        } else {
            self.own_retries.load(Relaxed)
        };
        let mine = PRESENT | retries | (attempts << 16);
        CURRENT.set(mine);
        Published {
            slot: self,
            enclosing,
            mine,
        }
    }

    /// After a poll in which calls inside took `left` retries short of
    /// what was published: where they come from pays for them. Returns the
    /// frame to restore.
    #[cold]
    fn carry_back(&self, enclosing: Frame, left: u32) -> Frame {
        if enclosing != 0 && self.rule != Nested::Independent {
            (enclosing & !RETRIES) | left
        } else {
            self.own_retries.store(left, Relaxed);
            enclosing
        }
    }
}

/// A call's frame, published while it polls its attempt.
struct Published<'a> {
    slot: &'a NestSlot,
    /// What was published before (restored on drop).
    enclosing: Frame,
    /// What this call published.
    mine: Frame,
}

impl Drop for Published<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        let now = CURRENT.get();
        let restore = if now == self.mine {
            self.enclosing
        } else {
            self.slot.carry_back(self.enclosing, now & RETRIES)
        };
        CURRENT.set(restore);
    }
}

pin_project_lite::pin_project! {
    /// An attempt polled with its call published as the nest's frame
    /// ([`Retry::nested`](super::engine::Retry::nested)). It holds the
    /// attempt's future itself, so that the attempt costs one layer of
    /// future rather than two.
    #[derive(Debug)]
    #[must_use = "futures do nothing unless polled"]
    pub struct InNest<'a, F> {
        slot: &'a NestSlot,
        attempts: u32,
        #[pin]
        attempt: F,
    }
}

impl<'a, F> InNest<'a, F> {
    pub(crate) fn new(slot: &'a NestSlot, attempts: u32, attempt: F) -> Self {
        InNest {
            slot,
            attempts,
            attempt,
        }
    }
}

impl<F: Future> Future for InNest<'_, F> {
    type Output = F::Output;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        this.slot.poll_in(this.attempt, cx, *this.attempts)
    }
}

/// How many attempts the `#[retry]` call whose attempt is running now (in
/// this task, on this thread) made before it, or `None` outside any:
/// what a client sends as gRPC's `grpc-previous-rpc-attempts`, so that the
/// server can tell a retry from a first try ([`PreviousAttemptsLayer`](crate::PreviousAttemptsLayer)).
///
/// ```
/// use steadfast::{Code, RetryPolicy, previous_attempts};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let policy = RetryPolicy::parse("none").unwrap();
/// let seen = std::cell::RefCell::new(Vec::new());
/// let _ = policy
///     .run(|| async {
///         seen.borrow_mut().push(previous_attempts());
///         Err::<(), Code>(Code::Unavailable)
///     })
///     .await;
/// assert_eq!(*seen.borrow(), [Some(0), Some(1), Some(2), Some(3)]);
/// assert_eq!(previous_attempts(), None);
/// # }
/// ```
pub fn previous_attempts() -> Option<u32> {
    previous_attempts_of(CURRENT.get())
}
