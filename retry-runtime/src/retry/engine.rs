//! The retry engine: one attempt's outcome in, the next step out.
//!
//! `#[retry]` expands to a loop over this state machine, and
//! [`RetryPolicy::run`](crate::RetryPolicy::run) runs the same loop over a
//! closure. A [`Retry`] is built only when an attempt fails; until then a
//! call has its [`NestSlot`] (and, with a deadline, when it started):
//!
//! ```text
//! let nest = NestSlot::for_policy(&POLICY);
//! let mut retry = None;                                      // Option<Retry>
//! loop {
//!     let result = nest.attempt(&retry, async { body }).await;  // or attempt_or(…): timeout, deadline
//!     let result = match split(result) {                       // the success path ends here
//!         Split::Return(success) => return success,
//!         Split::Failed(failure) => failure,
//!     };
//!     let retry = retry.get_or_insert_with(|| Retry::new(&POLICY, "get", &nest, None));
//!     match retry.decide(result) {                             // classify, budget, pushback
//!         Decision::Return(result) => return result,
//!         Decision::Retry { error, event } => { notify(&error, event); retry.pause(event.delay).await }
//!     }
//! }
//! ```
//!
//! The success path checks the result and returns: no clock, no random
//! number, no allocation. The clock is read at the start only when a
//! deadline is set, and the random generator is seeded at the first retry.

use std::{future::Future, pin::Pin, time::Duration};

use tokio::time::Instant;

use super::{
    hedge::Verdict,
    nest::{InNest, NestSlot, NestVerdict},
};
use crate::{Budget, Classify, Code, Elapsed, RetryAfter, RetryPolicy};

/// What happened before a retry: passed to a `notify` hook before the sleep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryEvent {
    /// The attempt that failed, from 1.
    pub attempt: u32,
    /// The sleep before the next attempt.
    pub delay: Duration,
    /// The code of the error, if it has one.
    pub code: Option<Code>,
    /// Whether the delay is the server's pushback rather than the backoff's.
    pub pushback: bool,
}

/// The next step after an attempt.
#[derive(Debug)]
pub enum Decision<T, E> {
    /// Return this to the caller.
    Return(Result<T, E>),
    /// Sleep `event.delay`, then attempt again.
    Retry {
        /// The error of the failed attempt.
        error: E,
        /// What happened, for the `notify` hook.
        event: RetryEvent,
    },
}

/// The retry state of one call.
///
/// `#[retry]` builds it only when an attempt fails: until then a call has
/// its [`NestSlot`] (what each attempt needs) and, with a deadline, the
/// instant it started. Small on purpose: it lives in the caller's future,
/// and holds nothing that needs dropping (a `tracing::Span` held here
/// measured 28 extra instructions per successful call). The random
/// generator is seeded at the first failure; retry events carry the fn's
/// name instead of a span.
#[derive(Debug)]
pub struct Retry<'a> {
    policy: &'a RetryPolicy,
    budget: Option<&'a dyn Budget>,
    function: &'static str,
    attempts: u32,
    started: Option<Instant>,
    previous_delay: Duration,
    rng: Option<fastrand::Rng>,
    nest: &'a NestSlot,
}

impl<'a> Retry<'a> {
    /// A call of `function` under `policy`, whose attempts run in `nest`
    /// and whose deadline (if any) counts from `started` ([`started`]).
    #[inline]
    pub fn new(
        policy: &'a RetryPolicy,
        function: &'static str,
        nest: &'a NestSlot,
        started: Option<Instant>,
    ) -> Retry<'a> {
        Retry {
            policy,
            budget: None,
            function,
            attempts: 0,
            started,
            previous_delay: policy.backoff().base(),
            rng: None,
            nest,
        }
    }

    /// Draws retries from `budget`, and tells it what each attempt did
    /// (see [`Budget`] for the order). The call itself was counted in it
    /// when it started ([`Budget::record_call`]).
    #[inline]
    pub fn with_budget(mut self, budget: &'a dyn Budget) -> Retry<'a> {
        self.budget = Some(budget);
        self
    }

    /// The attempts made so far (each of which failed).
    #[inline]
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Runs a blocking attempt as this call's (see [`NestSlot::attempt`]).
    #[inline]
    pub fn nested_blocking<T>(&self, attempt: impl FnOnce() -> T) -> T {
        self.nest.run_in(attempt, self.attempts)
    }

    pub(super) fn remaining(&self) -> Option<(Duration, Duration)> {
        remaining(self.policy, self.started)
    }

    /// Classifies an attempt's outcome by the policy's codes.
    #[inline]
    pub fn decide<R>(&mut self, result: R) -> Decision<R::Ok, R::Err>
    where
        R: RetryOutput,
        R::Err: Classify,
    {
        match result.into_result() {
            Ok(value) => self.succeeded(value),
            Err(error) => {
                let code = error.code();
                let retryable = code.is_some_and(|code| self.policy.on().contains(code));
                // A budget counts a pushback that says stop as a failure,
                // whatever the code (gRPC A6).
                let pushback = if retryable || self.budget.is_some() {
                    error.retry_after()
                } else {
                    None
                };
                self.failed(error, code, retryable, pushback)
            }
        }
    }

    /// Classifies an attempt's outcome with a predicate instead of codes
    /// (`#[retry(on = path::to::predicate)]`); the error type need not
    /// implement [`Classify`], and no pushback is read.
    #[inline]
    pub fn decide_if<R: RetryOutput>(
        &mut self,
        result: R,
        retryable: impl FnOnce(&R::Err) -> bool,
    ) -> Decision<R::Ok, R::Err> {
        match result.into_result() {
            Ok(value) => self.succeeded(value),
            Err(error) => {
                let retryable = retryable(&error);
                self.failed(error, None, retryable, None)
            }
        }
    }

    #[inline]
    fn succeeded<T, E>(&mut self, value: T) -> Decision<T, E> {
        if let Some(budget) = self.budget {
            budget.record_success();
        }
        Decision::Return(Ok(value))
    }

    fn failed<T, E>(
        &mut self,
        error: E,
        code: Option<Code>,
        retryable: bool,
        pushback: Option<RetryAfter>,
    ) -> Decision<T, E> {
        self.attempts += 1;
        let attempt = self.attempts;
        let code_name = code.map_or("none", Code::name);
        let function = self.function;
        let give_up = |reason: &str, label: &'static str| {
            tracing::debug!(function, attempt, code = code_name, reason, "not retrying");
            super::telemetry::gave_up(function, code_name, label);
        };
        // Every attempt that fails with a retryable code, or is told to
        // stop, tells the budget, whether or not a retry follows (gRPC A6);
        // only a retry that is about to be made withdraws, last of all.
        if let Some(budget) = self.budget
            && (retryable || pushback == Some(RetryAfter::Stop))
        {
            budget.record_failure();
        }
        if !retryable {
            give_up("the error is not retryable", "not_retryable");
            return Decision::Return(Err(error));
        }
        if attempt > self.policy.max_retries() {
            give_up("no retries left", "exhausted");
            return Decision::Return(Err(error));
        }
        match self.nest.verdict() {
            NestVerdict::Allowed => {}
            NestVerdict::Spent => {
                give_up(
                    "the enclosing retried call has no retries left",
                    "nest_spent",
                );
                return Decision::Return(Err(error));
            }
            NestVerdict::NotOutermost => {
                give_up(
                    "an enclosing retried call retries (nested = \"outermost\")",
                    "nested",
                );
                return Decision::Return(Err(error));
            }
        }
        let (delay, pushback) = match pushback {
            Some(RetryAfter::Stop) => {
                give_up("the server asked not to retry", "server_stop");
                return Decision::Return(Err(error));
            }
            // A server cannot park a call for longer than the backoff's
            // cap (the deadline, below, bounds it too).
            Some(RetryAfter::Delay(delay)) => (delay.min(self.policy.backoff().max()), true),
            None => (self.next_delay(), false),
        };
        if let Some((_, remaining)) = self.remaining()
            && delay >= remaining
        {
            give_up("the next attempt would start past the deadline", "deadline");
            return Decision::Return(Err(error));
        }
        if let Some(budget) = self.budget
            && !budget.withdraw()
        {
            give_up("the retry budget is spent", "budget");
            return Decision::Return(Err(error));
        }
        tracing::debug!(
            function,
            attempt,
            code = code_name,
            delay_ms = delay.as_millis() as u64,
            pushback,
            "retrying"
        );
        super::telemetry::retried(function, code_name);
        self.nest.take();
        Decision::Retry {
            error,
            event: RetryEvent {
                attempt,
                delay,
                code,
                pushback,
            },
        }
    }

    fn next_delay(&mut self) -> Duration {
        let backoff = self.policy.backoff();
        let rng = self.rng.get_or_insert_with(fastrand::Rng::new);
        let computed = backoff.delay(self.attempts - 1);
        let delay = self
            .policy
            .jitter()
            .apply(computed, self.previous_delay, &backoff, rng);
        self.previous_delay = delay;
        delay
    }

    /// Sleeps before the next attempt; a zero delay returns at once without
    /// touching the timer (whose granularity is a millisecond).
    pub async fn pause(&self, delay: Duration) {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }

    /// Sleeps the thread before the next attempt of a blocking fn.
    pub fn pause_blocking(&self, delay: Duration) {
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
    }
}

/// What hedging (`hedge.rs`) needs of a call's state: the same budget,
/// nest and telemetry as a retry, in the order of [`Retry::decide`].
impl<'a> Retry<'a> {
    pub(super) fn policy(&self) -> &'a RetryPolicy {
        self.policy
    }

    pub(super) fn set_attempts(&mut self, attempts: u32) {
        self.attempts = attempts;
    }

    pub(super) fn record_success(&self) {
        if let Some(budget) = self.budget {
            budget.record_success();
        }
    }

    pub(super) fn record_failure(&self, verdict: &Verdict) {
        if let Some(budget) = self.budget
            && (verdict.retryable || verdict.pushback == Some(RetryAfter::Stop))
        {
            budget.record_failure();
        }
    }

    /// Whether another attempt may start now: the nest allows it and the
    /// budget gives a retry (asked last). Takes the nest's retry if so.
    pub(super) fn may_start_another(&self, code: Option<Code>) -> bool {
        let code_name = code.map_or("none", Code::name);
        match self.nest.verdict() {
            NestVerdict::Allowed => {}
            NestVerdict::Spent | NestVerdict::NotOutermost => {
                self.gave_up_hedging("the enclosing retried call retries", "nested", code);
                return false;
            }
        }
        if let Some(budget) = self.budget
            && !budget.withdraw()
        {
            self.gave_up_hedging("the retry budget is spent", "budget", code);
            return false;
        }
        self.nest.take();
        tracing::debug!(
            function = self.function,
            attempt = self.attempts + 1,
            code = code_name,
            "hedging"
        );
        super::telemetry::retried(self.function, code_name);
        true
    }

    pub(super) fn gave_up_hedging(&self, reason: &str, label: &'static str, code: Option<Code>) {
        let code_name = code.map_or("none", Code::name);
        tracing::debug!(
            function = self.function,
            attempt = self.attempts + 1,
            code = code_name,
            reason,
            "not hedging further"
        );
        super::telemetry::gave_up(self.function, code_name, label);
    }

    pub(super) fn poll_in_nest<F: Future>(
        &self,
        attempt: Pin<&mut F>,
        cx: &mut std::task::Context<'_>,
        attempts: u32,
    ) -> std::task::Poll<F::Output> {
        self.nest.poll_in(attempt, cx, attempts)
    }
}

/// When a call under `policy` started, for its deadline: `None` (no clock
/// read) when the policy has none.
#[inline]
pub fn started(policy: &RetryPolicy) -> Option<Instant> {
    policy.deadline().map(|_| Instant::now())
}

/// The attempts a call has made, by its retry state (none until one failed).
#[inline]
pub(crate) fn attempts_made(retry: &Option<Retry<'_>>) -> u32 {
    retry.as_ref().map_or(0, Retry::attempts)
}

/// Runs one attempt of a call under `policy` that started at `started`, in
/// `nest`, under the per-attempt timeout and what remains of the deadline;
/// an attempt that runs out of time ends with the error `on_timeout`
/// builds. The bound on the error type is then checked where `on_timeout`
/// is named, once, rather than again wherever this future is used
/// (`#[retry]` reports it at `timeout`).
pub async fn attempt_or<R, F>(
    policy: &RetryPolicy,
    started: Option<Instant>,
    nest: &NestSlot,
    retry: &Option<Retry<'_>>,
    attempt: F,
    on_timeout: impl FnOnce(Elapsed) -> R::Err,
) -> R
where
    F: Future<Output = R>,
    R: RetryOutput,
{
    let attempt = InNest::new(nest, attempts_made(retry), attempt);
    timed(policy, started, attempt, on_timeout).await
}

async fn timed<R: RetryOutput>(
    policy: &RetryPolicy,
    started: Option<Instant>,
    attempt: impl Future<Output = R>,
    on_timeout: impl FnOnce(Elapsed) -> R::Err,
) -> R {
    let Some((limit, elapsed)) = time_limit(policy, started) else {
        return attempt.await;
    };
    match tokio::time::timeout(limit, attempt).await {
        Ok(result) => result,
        Err(_) => R::from_err(on_timeout(elapsed)),
    }
}

fn time_limit(policy: &RetryPolicy, started: Option<Instant>) -> Option<(Duration, Elapsed)> {
    let timeout = policy
        .timeout()
        .map(|timeout| (timeout, Elapsed::attempt(timeout)));
    let remaining = remaining(policy, started)
        .map(|(deadline, remaining)| (remaining, Elapsed::deadline(deadline)));
    match (timeout, remaining) {
        (Some(timeout), Some(remaining)) => Some(if remaining.0 < timeout.0 {
            remaining
        } else {
            timeout
        }),
        (timeout, remaining) => timeout.or(remaining),
    }
}

/// The deadline and what remains of it, if the policy has one.
fn remaining(policy: &RetryPolicy, started: Option<Instant>) -> Option<(Duration, Duration)> {
    let deadline = policy.deadline()?;
    let started = started?;
    Some((deadline, deadline.saturating_sub(started.elapsed())))
}

/// `Result<T, E>`, the only output a retried fn may have; a trait so that
/// a fn returning anything else gets one clear error at its return type.
#[diagnostic::on_unimplemented(
    message = "#[retry] needs a fn that returns `Result<T, E>`, but this one returns `{Self}`",
    label = "not a `Result`",
    note = "return `Result<T, E>` where `E` implements `steadfast::Classify`, so that failures can be told apart and retried"
)]
pub trait RetryOutput: Sized {
    /// `T`.
    type Ok;
    /// `E`.
    type Err;
    /// The `Result` itself.
    fn into_result(self) -> Result<Self::Ok, Self::Err>;
    /// `Err(error)`.
    fn from_err(error: Self::Err) -> Self;
    /// The `Result` back as `Self`.
    fn from_result(result: Result<Self::Ok, Self::Err>) -> Self;
}

impl<T, E> RetryOutput for Result<T, E> {
    type Ok = T;
    type Err = E;

    #[inline(always)]
    fn into_result(self) -> Result<T, E> {
        self
    }

    #[inline(always)]
    fn from_err(error: E) -> Self {
        Err(error)
    }

    #[inline(always)]
    fn from_result(result: Result<T, E>) -> Self {
        result
    }
}
