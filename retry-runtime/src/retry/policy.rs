//! Retry policies: how many times, how long between, which errors.

use std::{fmt, future::Future, time::Duration};

use super::{
    engine::{Decision, Retry},
    jitter::Delays,
};
use crate::{Backoff, Budget, Classify, Code, CodeSet, Elapsed, FromTimeout, Jitter};

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
}

impl RetryPolicy {
    /// The default policy (see the type's docs).
    pub const fn new() -> RetryPolicy {
        RetryPolicy {
            max_retries: 3,
            backoff: Backoff::from_spec(steadfast_macro_support::DEFAULT_BACKOFF),
            jitter: Jitter::Full,
            on: CodeSet::DEFAULT_RETRIED,
            timeout: None,
            deadline: None,
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
        self.drive(Retry::new(self, RUN), operation, untimed).await
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
        self.drive(Retry::new(self, RUN), operation, E::from_timeout)
            .await
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
        let retry = Retry::new(self, RUN).with_budget(budget);
        self.drive(retry, operation, untimed).await
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
        let retry = Retry::new(self, RUN).with_budget(budget);
        self.drive(retry, operation, E::from_timeout).await
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
        mut retry: Retry<'_>,
        mut operation: F,
        on_timeout: fn(Elapsed) -> E,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Classify,
    {
        loop {
            let result = retry.attempt_or(operation(), on_timeout).await;
            match retry.decide(result) {
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
        let mut retry = Retry::new(self, "RetryPolicy::run_blocking");
        loop {
            match retry.decide(operation()) {
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

/// Builds a [`RetryPolicy`] from strings in the attribute's grammar, checking
/// everything the attribute checks at compile time and reporting the first
/// mistake from [`build`](RetryPolicyBuilder::build).
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
        Ok(self.policy)
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
