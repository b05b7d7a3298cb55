//! What `#[retry]` and `#[derive(Classify)]` expand to.

pub use crate::retry::engine::{Decision, Retry, RetryOutput, attempt_or, started};
pub use crate::retry::hedge::Verdict;
pub use crate::retry::nest::{InNest, NestSlot};
pub use crate::{
    Backoff, Classify, Code, CodeSet, Elapsed, FromTimeout, Jitter, Nested, RetryAfter,
    RetryBudget, RetryEvent, RetryPolicy,
};

/// An owned argument of a retried fn: cloned for every attempt but the
/// last, moved into the last.
#[derive(Debug)]
pub struct ArgSlot<T>(Option<T>);

/// Stores an owned argument; the `Clone` bound is checked by [`for_attempt`].
#[inline]
pub fn arg_slot<T>(value: T) -> ArgSlot<T> {
    ArgSlot(Some(value))
}

/// The argument for the next attempt: a clone, or the value itself on the
/// last attempt.
#[inline]
pub fn for_attempt<T: CloneArg>(slot: &mut ArgSlot<T>, last: bool) -> T {
    if last && let Some(value) = slot.0.take() {
        return value;
    }
    match &slot.0 {
        Some(value) => value.clone_arg(),
        None => panic!("steadfast: an argument was requested after the last attempt"),
    }
}

/// `Clone`, with the message a user of `#[retry]` needs when it is missing.
#[diagnostic::on_unimplemented(
    message = "`#[retry]` clones this argument for every attempt, but `{Self}` does not implement `Clone`",
    label = "this argument is not `Clone`",
    note = "take it by reference (`&{Self}`), which every attempt can reuse, or implement `Clone` for it"
)]
pub trait CloneArg {
    /// A copy for one attempt.
    fn clone_arg(&self) -> Self;
}

impl<T: Clone> CloneArg for T {
    #[inline]
    fn clone_arg(&self) -> T {
        self.clone()
    }
}

/// [`Classify`], as `#[retry]` asks for it of the fn's error type.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be classified, so `#[retry]` cannot tell its transient errors from permanent ones",
    label = "this error type does not implement `steadfast::Classify`",
    note = "derive it on your error enum: `#[derive(steadfast::Classify)]`, with `#[code(Unavailable)]` (or another code) on each variant",
    note = "or implement it: `impl steadfast::Classify for {Self} {{ fn code(&self) -> Option<steadfast::Code> {{ … }} }}`",
    note = "or retry by a predicate instead of codes: `#[retry(on = path::to::is_transient)]` with `fn is_transient(error: &{Self}) -> bool`"
)]
pub trait ClassifyError: Classify {}

// `do_not_recommend`: the error names `ClassifyError`, with the message
// above, rather than `Classify` with a list of its impls.
#[diagnostic::do_not_recommend]
impl<E: Classify + ?Sized> ClassifyError for E {}

/// [`FromTimeout`], as `timeout` and `deadline` ask for it of the fn's error type.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot express a timeout, so `timeout` and `deadline` cannot end an attempt with it",
    label = "this error type does not implement `steadfast::FromTimeout`",
    note = "with `#[derive(steadfast::Classify)]`, add a variant `#[code(DeadlineExceeded)] #[classify(timeout)] TimedOut`",
    note = "or implement it: `impl steadfast::FromTimeout for {Self} {{ fn from_timeout(elapsed: steadfast::Elapsed) -> Self {{ … }} }}`",
    note = "or remove `timeout` and `deadline`"
)]
pub trait TimeoutError: FromTimeout {}

#[diagnostic::do_not_recommend]
impl<E: FromTimeout> TimeoutError for E {}

/// The next step after an attempt of a `#[retry]` fn: [`Decision`], with
/// the fn's own output type in `Return`, so that `return` type-checks even
/// when that type is not a `Result` (the one error is then `RetryOutput`).
#[derive(Debug)]
pub enum Step<R, E> {
    /// Return this to the caller.
    Return(R),
    /// Notify, sleep `event.delay`, then attempt again.
    Retry {
        /// The error of the failed attempt.
        error: E,
        /// What happened, for the `notify` hook.
        event: RetryEvent,
    },
}

/// The attempt's `result`, told apart at once: a success is returned
/// before anything else (the retry state is built only after a failure).
/// It is taken apart and rebuilt, rather than tested with `is_ok` and
/// moved on as it is, so that a success travels as its value (in
/// registers) and not as a whole `Result` copied through the future's
/// state, whose byte-wise copies the CPU cannot forward to the word-wise
/// reads that follow (see README, "Benchmarks").
#[inline(always)]
pub fn split<R: RetryOutput>(result: R) -> Split<R> {
    match result.into_result() {
        Ok(value) => Split::Return(R::from_result(Ok(value))),
        Err(error) => Split::Failed(R::from_err(error)),
    }
}

/// An attempt's result, [`split`].
#[derive(Debug)]
pub enum Split<R> {
    /// A success: the call returns it.
    Return(R),
    /// A failure, for the decision.
    Failed(R),
}

/// Whether the next attempt is the last one the policy allows (owned
/// arguments are moved into it instead of cloned).
#[inline]
pub fn is_last_attempt(policy: &RetryPolicy, retry: &Option<Retry<'_>>) -> bool {
    crate::retry::engine::attempts_made(retry) >= policy.max_retries()
}

/// A call's budget (`budget = EXPR`), counted with this call
/// ([`Budget::record_call`](crate::Budget::record_call)).
#[inline]
pub fn budget<B: crate::Budget>(budget: &B) -> &dyn crate::Budget {
    budget.record_call();
    budget
}

/// [`Retry::decide`], for a fn whose error type implements [`Classify`].
#[inline]
pub fn decide<R, E>(retry: &mut Retry<'_>, result: R) -> Step<R, E>
where
    R: RetryOutput<Err = E>,
    E: ClassifyError,
{
    step(retry.decide(result))
}

/// [`Retry::decide_if`], for `on = predicate`.
#[inline]
pub fn decide_if<R, E>(
    retry: &mut Retry<'_>,
    result: R,
    retryable: impl FnOnce(&E) -> bool,
) -> Step<R, E>
where
    R: RetryOutput<Err = E>,
{
    step(retry.decide_if(result, retryable))
}

/// How a hedged call reads an error, by the policy's codes.
pub fn judge<E: ClassifyError>(policy: &RetryPolicy, error: &E) -> Verdict {
    let code = error.code();
    let retryable = code.is_some_and(|code| policy.on().contains(code));
    Verdict {
        code,
        retryable,
        pushback: error.retry_after(),
    }
}

/// How a hedged call reads an error, by `on = predicate`.
pub fn judge_if(retryable: bool) -> Verdict {
    Verdict {
        code: None,
        retryable,
        pushback: None,
    }
}

#[inline]
fn step<R: RetryOutput>(decision: Decision<R::Ok, R::Err>) -> Step<R, R::Err> {
    match decision {
        Decision::Return(result) => Step::Return(R::from_result(result)),
        Decision::Retry { error, event } => Step::Retry { error, event },
    }
}

/// [`FromTimeout::from_timeout`], named by `#[retry]` where `timeout` or
/// `deadline` is given and passed to [`attempt_or`]; the bound is
/// checked here, once.
#[inline]
pub fn from_timeout<E: TimeoutError>(elapsed: Elapsed) -> E {
    E::from_timeout(elapsed)
}
