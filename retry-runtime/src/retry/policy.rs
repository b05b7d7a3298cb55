//! Retry policies: how many times, how long between, which errors.

use std::{fmt, future::Future, time::Duration};

use super::{
    engine::{Decision, Retry, attempt_or, started},
    jitter::Delays,
    nest::NestSlot,
};
use crate::{Backoff, Budget, Classify, Code, CodeSet, Elapsed, FromTimeout, Jitter, Nested};
use steadfast_macro_support::{JitterSpec, attempts_within, contradictions, sleep_bounds};

/// The most retries a policy may have (`max = 100`); bound longer efforts by
/// time with a deadline instead.
pub const MAX_RETRIES_LIMIT: u32 = steadfast_macro_support::MAX_RETRIES;

/// A retry policy: the number of retries, the backoff and its jitter, the
/// codes that are retried, and the per-attempt and overall time limits.
///
/// `#[retry(…)]` builds one in a `const`; code that cannot use the attribute
/// builds one with [`RetryPolicy::parse`] or [`RetryPolicy::builder`] and
/// calls [`RetryPolicy::run`] (or [`RetryPolicy::run_timed`] when it has a
/// timeout or a deadline): the same engine runs both.
///
/// # Default
/// `max = 3` retries, `exp(100ms, max = 30s)` with full jitter, on
/// `Unavailable|DeadlineExceeded`, no timeout, no deadline.
///
/// ```
/// use steadfast::{Code, RetryPolicy};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let policy = RetryPolicy::parse("none").unwrap();
/// let mut calls = 0;
/// let result: Result<u32, Code> = policy
///     .run(|| {
///         calls += 1;
///         let outcome = if calls < 3 { Err(Code::Unavailable) } else { Ok(calls) };
///         async move { outcome }
///     })
///     .await;
/// assert_eq!(result, Ok(3));
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    max_retries: u32,
    backoff: Backoff,
    jitter: Jitter,
    on: CodeSet,
    timeout: Option<Duration>,
    deadline: Option<Duration>,
    nested: Nested,
}

impl RetryPolicy {
    /// The default policy (see the type's docs).
    pub const fn new() -> RetryPolicy {
        RetryPolicy {
            max_retries: steadfast_macro_support::DEFAULT_MAX_RETRIES,
            backoff: Backoff::from_spec(steadfast_macro_support::DEFAULT_BACKOFF),
            jitter: Jitter::from_spec(steadfast_macro_support::DEFAULT_JITTER),
            on: CodeSet::DEFAULT_RETRIED,
            timeout: None,
            deadline: None,
            nested: Nested::Share,
        }
    }

    /// The default policy with this backoff string (`"exp(100ms, max = 1s)"`).
    pub fn parse(backoff: &str) -> Result<RetryPolicy, PolicyError> {
        Ok(RetryPolicy::new().with_backoff(Backoff::parse(backoff)?))
    }

    /// A builder that checks every value, as the attribute does.
    pub fn builder() -> RetryPolicyBuilder {
        RetryPolicyBuilder::default()
    }

    /// Retries after the first attempt: 3 means at most 4 attempts.
    ///
    /// # Panics
    /// Above [`MAX_RETRIES_LIMIT`] (at compile time, in a `const`).
    pub const fn with_max_retries(mut self, max_retries: u32) -> RetryPolicy {
        assert!(max_retries <= MAX_RETRIES_LIMIT, "at most 100 retries");
        self.max_retries = max_retries;
        self
    }

    /// The backoff schedule.
    pub const fn with_backoff(mut self, backoff: Backoff) -> RetryPolicy {
        self.backoff = backoff;
        self
    }

    /// The jitter applied to every delay.
    pub const fn with_jitter(mut self, jitter: Jitter) -> RetryPolicy {
        self.jitter = jitter;
        self
    }

    /// The codes that are retried.
    pub const fn with_on(mut self, on: CodeSet) -> RetryPolicy {
        self.on = on;
        self
    }

    /// The per-attempt timeout: an attempt that runs longer ends with an
    /// error built by [`FromTimeout`] (code `DeadlineExceeded`).
    pub const fn with_timeout(mut self, timeout: Duration) -> RetryPolicy {
        self.timeout = Some(timeout);
        self
    }

    /// The overall deadline: attempts and sleeps together never exceed it.
    /// No sleep starts that would end past it, and an attempt in flight when
    /// it passes ends with a `DeadlineExceeded` error.
    pub const fn with_deadline(mut self, deadline: Duration) -> RetryPolicy {
        self.deadline = Some(deadline);
        self
    }

    /// What the policy's calls do inside an attempt of another retried
    /// call in the same task ([`Nested::Share`] by default: attempts never
    /// multiply).
    pub const fn with_nested(mut self, nested: Nested) -> RetryPolicy {
        self.nested = nested;
        self
    }

    /// What the policy's calls do when nested.
    pub const fn nested(&self) -> Nested {
        self.nested
    }

    /// Retries after the first attempt.
    pub const fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// The backoff schedule.
    pub const fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// The jitter.
    pub const fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// The codes that are retried.
    pub const fn on(&self) -> CodeSet {
        self.on
    }

    /// The per-attempt timeout.
    pub const fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The overall deadline.
    pub const fn deadline(&self) -> Option<Duration> {
        self.deadline
    }

    /// The most this policy can cost one call: the most attempts, the
    /// longest their sleeps can add up to, and the longest the whole call
    /// can take. A `const fn`, so a bound can be checked at compile time.
    ///
    /// - **Attempts**: `max + 1`, or fewer when the deadline has no room for
    ///   them even if every attempt fails at once and every sleep is at its
    ///   shortest (the rule `#[retry]` and [`RetryPolicyBuilder::build`]
    ///   reject, so for their policies always `max + 1`).
    /// - **Sleeps**: each at its backoff's delay at the top of its jitter
    ///   (`none`, `full`, `equal`: the delay; a `±p` band: `(1 + p) ×` the
    ///   delay; `decorrelated`: 3 × the longest the sleep before it could be,
    ///   from the base), never above the backoff's cap; in all less than the
    ///   deadline, since no sleep starts that would end past it.
    /// - **Total**: every attempt at its timeout plus the sleeps, bounded by
    ///   the deadline; the deadline alone when there is no timeout; `None`
    ///   (unbounded) with neither, since an attempt without a timeout can
    ///   run forever.
    ///
    /// The sleeps are the policy's own. A server's pushback
    /// ([`Classify::retry_after`](crate::Classify::retry_after)) replaces a
    /// sleep with the delay the server asks for, which no policy can
    /// foresee: with pushback, the deadline is the bound that holds.
    ///
    /// ```
    /// use steadfast::{Backoff, Jitter, RetryPolicy, WorstCase};
    /// use std::time::Duration;
    ///
    /// const POLICY: RetryPolicy = RetryPolicy::new()
    ///     .with_max_retries(3)
    ///     .with_backoff(Backoff::exponential(Duration::from_millis(100)))
    ///     .with_jitter(Jitter::Band(0.25))
    ///     .with_timeout(Duration::from_secs(1));
    /// const WORST: WorstCase = POLICY.worst_case();
    /// // 4 attempts of at most 1s; sleeps of at most 125ms, 250ms and 500ms.
    /// assert_eq!(WORST.attempts, 4);
    /// assert_eq!(WORST.sleeps, Duration::from_millis(875));
    /// assert_eq!(WORST.total, Some(Duration::from_millis(4875)));
    ///
    /// // Checked by the compiler: this policy answers within 5 seconds.
    /// const _: () = assert!(WORST.total.unwrap().as_secs() < 5);
    ///
    /// // A deadline bounds it all; without any time limit, nothing does.
    /// let bounded = POLICY.with_deadline(Duration::from_secs(2)).worst_case();
    /// assert_eq!(bounded.total, Some(Duration::from_secs(2)));
    /// assert_eq!(RetryPolicy::new().worst_case().total, None);
    /// ```
    pub const fn worst_case(&self) -> WorstCase {
        let backoff = self.backoff.spec();
        let jitter = jitter_spec(self.jitter);
        let attempts = match self.deadline {
            Some(deadline) => attempts_within(&backoff, jitter, self.max_retries, deadline),
            None => self.max_retries + 1,
        };
        let sleeps = at_most(
            sleep_bounds(&backoff, jitter, attempts - 1).longest,
            self.deadline,
        );
        let total = match (self.timeout, self.deadline) {
            (None, None) => None,
            (None, Some(deadline)) => Some(deadline),
            (Some(timeout), deadline) => Some(at_most(
                timeout.saturating_mul(attempts).saturating_add(sleeps),
                deadline,
            )),
        };
        WorstCase {
            attempts,
            sleeps,
            total,
        }
    }

    /// Whether this policy retries `error` by its code.
    pub fn retries<E: Classify + ?Sized>(&self, error: &E) -> bool {
        error.code().is_some_and(|code| self.on.contains(code))
    }

    /// The jittered delays this policy sleeps, one per retry, from a random seed.
    pub fn delays(&self) -> Delays {
        Delays::new(self.backoff, self.jitter, fastrand::Rng::new())
    }

    /// The same delays from a fixed seed: the same seed, the same delays.
    pub fn delays_seeded(&self, seed: u64) -> Delays {
        Delays::new(self.backoff, self.jitter, fastrand::Rng::with_seed(seed))
    }

    /// Runs `operation` until it succeeds, fails with an error this policy
    /// does not retry, or runs out of retries. Each attempt calls
    /// `operation` again for a fresh future.
    ///
    /// The error type needs only [`Classify`], so any error works here
    /// (`reqwest::Error`, `sqlx::Error`, your own): a policy without a
    /// timeout or a deadline never has to make one up. A policy with either
    /// runs through [`run_timed`](RetryPolicy::run_timed), whose error type
    /// can express a timeout ([`FromTimeout`]).
    ///
    /// # Panics
    /// If the policy has a timeout or a deadline: an attempt cut by one
    /// must end with an error of type `E`, which only [`FromTimeout`] can
    /// build. The panic names `run_timed`; it happens at the call's start,
    /// before the first attempt, whatever the attempts would do.
    pub async fn run<T, E, F, Fut>(&self, operation: F) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Classify,
    {
        self.refuse_time_limits("run");
        self.drive(None, operation, untimed).await
    }

    /// [`RetryPolicy::run`] for a policy that may have a per-attempt timeout
    /// or a deadline: an attempt that runs out of time ends with
    /// `E::from_timeout` (code `DeadlineExceeded`), retried like any error.
    ///
    /// ```
    /// use steadfast::RetryPolicy;
    /// use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let policy = RetryPolicy::builder().max_retries(1).timeout(Duration::from_millis(50)).build().unwrap();
    /// let result: Result<(), std::io::Error> = policy
    ///     .run_timed(|| async { tokio::time::sleep(Duration::from_secs(1)).await; Ok(()) })
    ///     .await;
    /// assert_eq!(result.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
    /// # }
    /// ```
    pub async fn run_timed<T, E, F, Fut>(&self, operation: F) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Classify + FromTimeout,
    {
        self.drive(None, operation, E::from_timeout).await
    }

    /// [`RetryPolicy::run`], drawing retries from a shared [`Budget`]
    /// ([`RetryBudget`](crate::RetryBudget), [`RatioBudget`](crate::RatioBudget)
    /// or your own).
    ///
    /// # Panics
    /// As [`run`](RetryPolicy::run), if the policy has a timeout or a
    /// deadline: use [`run_timed_with_budget`](RetryPolicy::run_timed_with_budget).
    pub async fn run_with_budget<T, E, F, Fut>(
        &self,
        budget: &impl Budget,
        operation: F,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Classify,
    {
        self.refuse_time_limits("run_with_budget");
        self.drive(Some(budget), operation, untimed).await
    }

    /// [`RetryPolicy::run_timed`], drawing retries from a shared [`Budget`].
    pub async fn run_timed_with_budget<T, E, F, Fut>(
        &self,
        budget: &impl Budget,
        operation: F,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Classify + FromTimeout,
    {
        self.drive(Some(budget), operation, E::from_timeout).await
    }

    /// The check behind [`run`](RetryPolicy::run): only `run_timed` can end
    /// an attempt that runs out of time.
    fn refuse_time_limits(&self, method: &str) {
        if let Some((limit, duration)) = self
            .timeout
            .map(|timeout| ("timeout", timeout))
            .or(self.deadline.map(|deadline| ("deadline", deadline)))
        {
            panic!(
                "RetryPolicy::{method} cannot apply this policy's {limit} of {}: an attempt it cuts must end with an error built by `FromTimeout`; call `RetryPolicy::run_timed` (its error type implements `FromTimeout`), or build the policy without a timeout and a deadline",
                steadfast_macro_support::format_duration(duration)
            );
        }
    }

    async fn drive<T, E, F, Fut>(
        &self,
        budget: Option<&dyn Budget>,
        mut operation: F,
        on_timeout: fn(Elapsed) -> E,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Classify,
    {
        let started = started(self);
        let nest = NestSlot::for_policy(self);
        if let Some(budget) = budget {
            budget.record_call();
        }
        let mut retry = None;
        loop {
            // Matched at once, so that a success is not copied on as a
            // whole `Result` (see `__private::split`).
            let error =
                match attempt_or(self, started, &nest, &retry, operation(), on_timeout).await {
                    Ok(value) => {
                        if let Some(budget) = budget {
                            budget.record_success();
                        }
                        return Ok(value);
                    }
                    Err(error) => error,
                };
            let retry = retry.get_or_insert_with(|| {
                let retry = Retry::new(self, RUN, &nest, started);
                match budget {
                    Some(budget) => retry.with_budget(budget),
                    None => retry,
                }
            });
            match retry.decide(Err(error)) {
                Decision::Return(result) => return result,
                Decision::Retry { event, .. } => retry.pause(event.delay).await,
            }
        }
    }

    /// Runs a blocking `operation` the same way, sleeping the thread between
    /// attempts. A blocking call cannot be interrupted, so the per-attempt
    /// timeout does not apply here; the deadline still bounds the sleeps.
    ///
    /// ```
    /// use steadfast::{Code, RetryPolicy};
    /// let policy = RetryPolicy::parse("const(1ms)").unwrap();
    /// let mut calls = 0;
    /// let result: Result<(), Code> = policy.run_blocking(|| { calls += 1; Err(Code::Unavailable) });
    /// assert_eq!((result, calls), (Err(Code::Unavailable), 4));
    /// ```
    pub fn run_blocking<T, E, F>(&self, mut operation: F) -> Result<T, E>
    where
        F: FnMut() -> Result<T, E>,
        E: Classify,
    {
        let nest = NestSlot::for_policy(self);
        let mut retry = Retry::new(self, "RetryPolicy::run_blocking", &nest, started(self));
        loop {
            let result = retry.nested_blocking(&mut operation);
            match retry.decide(result) {
                Decision::Return(result) => return result,
                Decision::Retry { event, .. } => retry.pause_blocking(event.delay),
            }
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy::new()
    }
}

/// The most a [`RetryPolicy`] can cost one call, from
/// [`RetryPolicy::worst_case`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorstCase {
    /// The most attempts: the first and every retry that the deadline has
    /// room for.
    pub attempts: u32,
    /// The longest the sleeps between those attempts can add up to (the
    /// policy's own, not a server's pushback).
    pub sleeps: Duration,
    /// The longest the whole call can take, or `None` when nothing bounds
    /// it (no timeout and no deadline).
    pub total: Option<Duration>,
}

/// `duration`, no longer than `limit` if there is one.
const fn at_most(duration: Duration, limit: Option<Duration>) -> Duration {
    match limit {
        Some(limit) if limit.as_nanos() < duration.as_nanos() => limit,
        _ => duration,
    }
}

/// The jitter in the grammar's terms, for the bounds of its schedule.
const fn jitter_spec(jitter: Jitter) -> JitterSpec {
    match jitter {
        Jitter::None => JitterSpec::None,
        Jitter::Full => JitterSpec::Full,
        Jitter::Equal => JitterSpec::Equal,
        Jitter::Decorrelated => JitterSpec::Decorrelated,
        Jitter::Band(fraction) => JitterSpec::Band(fraction),
    }
}

/// Builds a [`RetryPolicy`] from strings in the attribute's grammar, checking
/// everything the attribute checks at compile time and reporting the first
/// mistake from [`build`](RetryPolicyBuilder::build), including time limits
/// that contradict the policy: a timeout above the deadline, or a deadline
/// that has no room for the `max + 1` attempts even when each fails at once
/// and each sleep is at its shortest under the jitter.
///
/// ```
/// use steadfast::RetryPolicy;
/// use std::time::Duration;
///
/// let policy = RetryPolicy::builder()
///     .max_retries(5)
///     .backoff("exp(50ms, max = 2s)")
///     .jitter("equal")
///     .on("Unavailable|ResourceExhausted")
///     .timeout(Duration::from_secs(1))
///     .deadline(Duration::from_secs(10))
///     .build()
///     .unwrap();
/// assert_eq!(policy.max_retries(), 5);
///
/// let error = RetryPolicy::builder().on("NotFound").build().unwrap_err();
/// assert!(error.to_string().contains("not transient"));
///
/// // Sleeps of at least 100ms, 200ms and 400ms cannot end before 500ms.
/// let error = RetryPolicy::builder()
///     .backoff("exp(100ms)")
///     .jitter("none")
///     .deadline(Duration::from_millis(500))
///     .build()
///     .unwrap_err();
/// assert!(error.to_string().contains("at most 3 of the 4 attempts"));
/// ```
#[derive(Debug, Default)]
pub struct RetryPolicyBuilder {
    policy: RetryPolicy,
    allow_non_transient: bool,
    error: Option<PolicyError>,
}

impl RetryPolicyBuilder {
    /// Retries after the first attempt (0 to 100; 0 disables retries).
    pub fn max_retries(mut self, max_retries: u32) -> Self {
        if max_retries > MAX_RETRIES_LIMIT {
            self.fail(format!(
                "max = {max_retries} is too many retries: at most {MAX_RETRIES_LIMIT}; bound long efforts with a deadline instead"
            ));
        } else {
            self.policy.max_retries = max_retries;
        }
        self
    }

    /// The backoff, as in `#[retry(backoff = "…")]`.
    pub fn backoff(mut self, backoff: &str) -> Self {
        match Backoff::parse(backoff) {
            Ok(backoff) => self.policy.backoff = backoff,
            Err(error) => self.error = self.error.or(Some(error)),
        }
        self
    }

    /// The jitter, as in `#[retry(jitter = "…")]`.
    pub fn jitter(mut self, jitter: &str) -> Self {
        match Jitter::parse(jitter) {
            Ok(jitter) => self.policy.jitter = jitter,
            Err(error) => self.error = self.error.or(Some(error)),
        }
        self
    }

    /// The codes to retry, as in `#[retry(on = "A|B")]`.
    pub fn on(mut self, codes: &str) -> Self {
        match CodeSet::parse(codes) {
            Ok(on) => self.policy.on = on,
            Err(error) => self.error = self.error.or(Some(error.into())),
        }
        self
    }

    /// Allows codes that retrying cannot fix (`NotFound`, …) in [`on`](Self::on).
    pub fn allow_non_transient(mut self) -> Self {
        self.allow_non_transient = true;
        self
    }

    /// The per-attempt timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        if timeout.is_zero() {
            self.fail(
                "a zero timeout would fail every attempt; give a positive duration".to_owned(),
            );
        }
        self.policy.timeout = Some(timeout);
        self
    }

    /// The overall deadline.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        if deadline.is_zero() {
            self.fail("a zero deadline would fail every call; give a positive duration".to_owned());
        }
        self.policy.deadline = Some(deadline);
        self
    }

    /// The policy, or the first mistake found.
    pub fn build(self) -> Result<RetryPolicy, PolicyError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        if !self.allow_non_transient
            && let Some(code) = self.policy.on.iter().find(|code| !code.is_transient())
        {
            return Err(non_transient(code));
        }
        let policy = self.policy;
        if let Some(contradiction) = contradictions(
            policy.max_retries,
            &policy.backoff.spec(),
            jitter_spec(policy.jitter),
            policy.timeout,
            policy.deadline,
        )
        .into_iter()
        .next()
        {
            return Err(contradiction.error.into());
        }
        Ok(policy)
    }

    fn fail(&mut self, message: String) {
        if self.error.is_none() {
            self.error = Some(PolicyError { message });
        }
    }
}

fn non_transient(code: Code) -> PolicyError {
    PolicyError {
        message: format!(
            "`{code}` is not transient: retrying cannot change the answer; remove it, or call `allow_non_transient()` if your server really returns it for transient failures"
        ),
    }
}

/// A policy value that does not follow the grammar or breaks a rule; the
/// message says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PolicyError {}

impl From<steadfast_macro_support::GrammarError> for PolicyError {
    fn from(error: steadfast_macro_support::GrammarError) -> PolicyError {
        PolicyError {
            message: error.message().to_owned(),
        }
    }
}

/// The name `RetryPolicy`'s runs give in their events.
const RUN: &str = "RetryPolicy::run";

/// The timeout error of a run whose policy has no time limit: never built.
fn untimed<E>(_: Elapsed) -> E {
    unreachable!("a policy without a timeout or a deadline cuts no attempt")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_reports_the_first_mistake() {
        let error = RetryPolicy::builder()
            .backoff("exp(1s, max = 1ms)")
            .jitter("ful")
            .build()
            .unwrap_err();
        assert!(
            error.to_string().contains("below the base delay"),
            "{error}"
        );
        let error = RetryPolicy::builder().jitter("ful").build().unwrap_err();
        assert!(error.to_string().contains("did you mean `full`"), "{error}");
        let error = RetryPolicy::builder().max_retries(101).build().unwrap_err();
        assert!(error.to_string().contains("at most 100"), "{error}");
        let error = RetryPolicy::builder()
            .on("Unavailible")
            .build()
            .unwrap_err();
        assert!(
            error.to_string().contains("did you mean `Unavailable`"),
            "{error}"
        );
        let error = RetryPolicy::builder()
            .timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert!(error.to_string().contains("zero timeout"), "{error}");
        assert!(
            RetryPolicy::builder()
                .on("NotFound")
                .allow_non_transient()
                .build()
                .is_ok()
        );
    }

    #[tokio::test]
    #[should_panic(expected = "call `RetryPolicy::run_timed`")]
    async fn run_refuses_a_policy_with_a_timeout() {
        #[derive(Debug)]
        struct NoTimeout;
        impl Classify for NoTimeout {
            fn code(&self) -> Option<Code> {
                Some(Code::Unavailable)
            }
        }
        let policy = RetryPolicy::new().with_timeout(Duration::from_secs(1));
        let _: Result<(), NoTimeout> = policy.run(|| async { Ok(()) }).await;
    }

    #[tokio::test]
    #[should_panic(expected = "deadline of 2s")]
    async fn run_refuses_a_policy_with_a_deadline() {
        let policy = RetryPolicy::new().with_deadline(Duration::from_secs(2));
        let _: Result<(), Code> = policy.run(|| async { Ok(()) }).await;
    }

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    fn policy(backoff: &str, jitter: &str) -> RetryPolicy {
        RetryPolicy::new()
            .with_backoff(Backoff::parse(backoff).unwrap())
            .with_jitter(Jitter::parse(jitter).unwrap())
            .with_timeout(ms(1000))
    }

    #[test]
    fn worst_case_of_each_backoff() {
        // max = 3: 4 attempts of 1s, and the sleeps before retries 1 to 3.
        let cases = [
            ("none", 0),
            ("const(100ms)", 300),
            ("linear(100ms)", 100 + 200 + 300),
            ("exp(100ms)", 100 + 200 + 400),
            ("exp(100ms, factor = 3)", 100 + 300 + 900),
            ("exp(100ms, max = 250ms)", 100 + 200 + 250),
            ("fib(100ms)", 100 + 100 + 200),
        ];
        for (backoff, sleeps) in cases {
            let worst = policy(backoff, "none").worst_case();
            assert_eq!(worst.attempts, 4, "{backoff}");
            assert_eq!(worst.sleeps, ms(sleeps), "{backoff}");
            assert_eq!(worst.total, Some(ms(4000 + sleeps)), "{backoff}");
        }
    }

    #[test]
    fn worst_case_of_each_jitter() {
        let (exp, capped) = ("exp(100ms)", "exp(100ms, max = 450ms)");
        let cases = [
            (exp, "none", 100 + 200 + 400),
            (exp, "full", 100 + 200 + 400),
            (exp, "equal", 100 + 200 + 400),
            (exp, "25%", 125 + 250 + 500),
            // The band's top is capped: 1.25 × 400ms is above 450ms.
            (capped, "25%", 125 + 250 + 450),
            // From the base, 3 × the longest previous sleep: 300, 900, 2700.
            (exp, "decorrelated", 300 + 900 + 2700),
            (capped, "decorrelated", 300 + 450 + 450),
        ];
        for (backoff, jitter, sleeps) in cases {
            let worst = policy(backoff, jitter).worst_case();
            assert_eq!(worst.sleeps, ms(sleeps), "{backoff} {jitter}");
            assert_eq!(worst.total, Some(ms(4000 + sleeps)), "{backoff} {jitter}");
        }
    }

    #[test]
    fn the_deadline_bounds_the_worst_case() {
        let timed = policy("exp(100ms)", "none");
        // Room for everything: the deadline is not reached.
        let roomy = timed.with_deadline(ms(60_000)).worst_case();
        assert_eq!((roomy.attempts, roomy.total), (4, Some(ms(4700))));
        // The attempts' timeouts would pass it: the deadline is the total.
        let cut = timed.with_deadline(ms(2000)).worst_case();
        assert_eq!(
            (cut.attempts, cut.sleeps, cut.total),
            (4, ms(700), Some(ms(2000)))
        );
        // Sleeps of at least 100ms and 200ms end before 500ms, 400ms more
        // would not: at most 3 attempts, and the sleeps between them.
        let short = timed.with_deadline(ms(500)).worst_case();
        assert_eq!(
            (short.attempts, short.sleeps, short.total),
            (3, ms(300), Some(ms(500)))
        );
        // No timeout: the deadline alone bounds the call.
        let untimed = RetryPolicy::new().with_deadline(ms(3000)).worst_case();
        assert_eq!((untimed.attempts, untimed.total), (4, Some(ms(3000))));
        // No timeout, no deadline: an attempt can run forever.
        assert_eq!(RetryPolicy::new().worst_case().total, None);
        // The sleeps never add up past the deadline.
        let long = RetryPolicy::new()
            .with_backoff(Backoff::constant(ms(900)))
            .with_jitter(Jitter::Full)
            .with_deadline(ms(1000))
            .worst_case();
        assert_eq!((long.attempts, long.sleeps), (4, ms(1000)));
    }

    #[test]
    fn worst_case_saturates_and_is_const() {
        const WORST: WorstCase = RetryPolicy::new()
            .with_max_retries(MAX_RETRIES_LIMIT)
            .with_backoff(Backoff::exponential(Duration::from_secs(3600)).with_max(Duration::MAX))
            .with_jitter(Jitter::Band(1.0))
            .with_timeout(Duration::MAX)
            .worst_case();
        assert_eq!(WORST.attempts, 101);
        assert_eq!(WORST.total, Some(Duration::MAX));
        assert_eq!(WORST.sleeps, Duration::from_nanos(u64::MAX));
    }

    #[test]
    fn drawn_delays_stay_within_the_schedule_bounds() {
        use steadfast_macro_support::{longest_sleep, shortest_sleep};
        for backoff in [
            "const(100ms)",
            "linear(10ms, max = 1s)",
            "exp(10ms, max = 1s)",
            "fib(10ms)",
        ] {
            for jitter in ["none", "full", "equal", "decorrelated", "50%", "100%"] {
                let policy = policy(backoff, jitter);
                let (spec, jitter_spec) = (policy.backoff.spec(), jitter_spec(policy.jitter));
                for seed in 0..200 {
                    for (retry, delay) in (0..).zip(policy.delays_seeded(seed).take(12)) {
                        let (low, high) = (
                            shortest_sleep(&spec, jitter_spec, retry),
                            longest_sleep(&spec, jitter_spec, retry),
                        );
                        assert!(
                            low <= delay && delay <= high,
                            "{backoff} {jitter} retry {retry}: {delay:?} outside {low:?}..={high:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn builder_rejects_contradicting_time_limits() {
        let error = RetryPolicy::builder()
            .timeout(ms(5000))
            .deadline(ms(2000))
            .build()
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "`timeout = 5s` exceeds `deadline = 2s`: the deadline cuts every attempt first, so the timeout would never apply; write a timeout ≤ the deadline, or drop one"
        );
        // The same order-independent check whichever is given first.
        let error = RetryPolicy::builder()
            .deadline(ms(500))
            .jitter("none")
            .build()
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("at most 3 of the 4 attempts that `max = 3` asks for"),
            "{error}"
        );
        let error = RetryPolicy::builder()
            .max_retries(2)
            .backoff("exp(400ms)")
            .jitter("equal")
            .deadline(ms(600))
            .build()
            .unwrap_err();
        assert!(
            error.to_string().contains("200ms, 400ms (equal jitter"),
            "{error}"
        );
        // What fits is accepted: lower max as the message says, or full
        // jitter (whose sleeps may be zero).
        assert!(
            RetryPolicy::builder()
                .max_retries(2)
                .jitter("none")
                .deadline(ms(500))
                .build()
                .is_ok()
        );
        assert!(RetryPolicy::builder().deadline(ms(1)).build().is_ok());
        assert!(
            RetryPolicy::builder()
                .timeout(ms(2000))
                .deadline(ms(2000))
                .build()
                .is_ok()
        );
    }

    #[test]
    fn defaults_are_documented_values() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.max_retries(), 3);
        assert_eq!(
            policy.backoff(),
            Backoff::parse("exp(100ms, max = 30s)").unwrap()
        );
        assert_eq!(policy.jitter(), Jitter::Full);
        assert_eq!(
            policy.on(),
            CodeSet::parse("Unavailable|DeadlineExceeded").unwrap()
        );
        assert_eq!((policy.timeout(), policy.deadline()), (None, None));
    }
}
