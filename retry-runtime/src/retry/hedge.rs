//! Hedging (`#[retry(hedge = "50ms")]`): when an attempt has not answered
//! after the hedge delay, another starts while the first goes on; a
//! retryable failure starts the next at once. The first success, or the
//! first error that is not retried, wins; the other attempts are dropped.
//!
//! Every attempt is polled here, in the caller's task: nothing is spawned,
//! and dropping the call drops them all. At most `max + 1` attempts are made
//! in all; each one after the first is a retry to the budget and to the nest
//! (it withdraws from the budget, and takes one of the nest's retries).
//! Each attempt has the policy's per-attempt timeout, and the deadline ends
//! the whole call. A pushback that says stop starts no more attempts (those
//! in flight go on); a pushback delay holds the next one back that long (at
//! most the backoff's cap).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::time::{Instant, Sleep};

use super::engine::Retry;
use super::engine::RetryEvent;
use crate::{Code, Elapsed, RetryAfter};

/// How a hedged call reads one attempt's error: what `#[retry(hedge = …)]`
/// computes with the policy's codes, or with its `on = predicate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// The error's code, if it has one.
    pub code: Option<Code>,
    /// Whether the policy retries it.
    pub retryable: bool,
    /// The server's pushback, if any.
    pub pushback: Option<RetryAfter>,
}

/// One attempt in flight.
struct InFlight<Fut> {
    /// Attempts made before this one.
    index: u32,
    future: Pin<Box<Fut>>,
    /// When its per-attempt timeout ends it.
    timeout: Option<Pin<Box<Sleep>>>,
}

/// What ended a hedged call.
enum Outcome<T, E> {
    Value(T),
    Error(E),
}

impl<'a> Retry<'a> {
    /// Runs the attempts `make` makes, hedged after `hedge` (see the
    /// module docs); `judge` reads an error; `notify` hears of each failed
    /// attempt that another follows; `on_timeout` builds the error of an
    /// attempt or a call that runs out of time (`None`: the policy has no
    /// timeout and no deadline).
    pub async fn hedged<T, E, F, Fut>(
        &mut self,
        hedge: Duration,
        mut make: F,
        judge: impl Fn(&E) -> Verdict,
        mut notify: impl FnMut(&E, RetryEvent),
        on_timeout: Option<fn(Elapsed) -> E>,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let total = self.policy().max_retries().saturating_add(1);
        let mut in_flight: Vec<InFlight<Fut>> = Vec::with_capacity(total.min(8) as usize);
        let mut started = 0;
        let mut last_error: Option<E> = None;
        // The code of the last failure, for the next attempt's telemetry.
        let mut last_code = None;
        let mut stopped = false;
        // A failure without pushback starts the next attempt at once,
        // without the timer (whose granularity is a millisecond).
        let mut launch_now = false;
        let mut next = Box::pin(tokio::time::sleep(hedge));
        let deadline = self
            .remaining()
            .map(|(deadline, remaining)| (deadline, Box::pin(tokio::time::sleep(remaining))));
        let (deadline_limit, mut deadline_sleep) = match deadline {
            Some((limit, sleep)) => (Some(limit), Some(sleep)),
            None => (None, None),
        };
        let timeout = self.policy().timeout();
        let mut launch =
            |retry: &mut Retry<'_>, in_flight: &mut Vec<InFlight<Fut>>, started: &mut u32| {
                in_flight.push(InFlight {
                    index: *started,
                    future: Box::pin(make()),
                    timeout: timeout.map(|limit| Box::pin(tokio::time::sleep(limit))),
                });
                *started += 1;
                retry.set_attempts(*started - 1);
            };
        launch(self, &mut in_flight, &mut started);

        let outcome = std::future::poll_fn(|cx: &mut Context<'_>| {
            loop {
                if let Some(sleep) = deadline_sleep.as_mut()
                    && sleep.as_mut().poll(cx).is_ready()
                {
                    let deadline = deadline_limit.expect("a deadline when it sleeps");
                    self.gave_up_hedging("the deadline passed", "deadline", None);
                    let on_timeout = on_timeout.expect("a deadline needs FromTimeout");
                    return Poll::Ready(Outcome::Error(on_timeout(Elapsed::deadline(deadline))));
                }
                let mut progressed = false;
                let mut index = 0;
                while index < in_flight.len() {
                    let Some(result) =
                        self.poll_attempt(&mut in_flight[index], cx, timeout, on_timeout)
                    else {
                        index += 1;
                        continue;
                    };
                    in_flight.swap_remove(index);
                    progressed = true;
                    match result {
                        Ok(value) => {
                            self.record_success();
                            return Poll::Ready(Outcome::Value(value));
                        }
                        Err(error) => {
                            let verdict = judge(&error);
                            self.record_failure(&verdict);
                            if !verdict.retryable {
                                self.gave_up_hedging(
                                    "the error is not retryable",
                                    "not_retryable",
                                    verdict.code,
                                );
                                return Poll::Ready(Outcome::Error(error));
                            }
                            let (delay, pushback) = match verdict.pushback {
                                Some(RetryAfter::Stop) => {
                                    stopped = true;
                                    (Duration::ZERO, true)
                                }
                                Some(RetryAfter::Delay(delay)) => {
                                    (delay.min(self.policy().backoff().max()), true)
                                }
                                None => (Duration::ZERO, false),
                            };
                            if !stopped && started < total {
                                if delay.is_zero() {
                                    launch_now = true;
                                } else {
                                    next.as_mut().reset(Instant::now() + delay);
                                }
                                notify(
                                    &error,
                                    RetryEvent {
                                        attempt: started,
                                        delay,
                                        code: verdict.code,
                                        pushback,
                                    },
                                );
                            }
                            last_error = Some(error);
                            last_code = verdict.code;
                        }
                    }
                }
                if !stopped
                    && started < total
                    && (std::mem::take(&mut launch_now) || next.as_mut().poll(cx).is_ready())
                {
                    if self.may_start_another(last_code) {
                        launch(self, &mut in_flight, &mut started);
                        next.as_mut().reset(Instant::now() + hedge);
                        progressed = true;
                    } else {
                        stopped = true;
                    }
                }
                if in_flight.is_empty() && (stopped || started >= total) {
                    let error = last_error.take().expect("an attempt failed");
                    return Poll::Ready(Outcome::Error(error));
                }
                if !progressed {
                    return Poll::Pending;
                }
            }
        })
        .await;
        match outcome {
            Outcome::Value(value) => Ok(value),
            Outcome::Error(error) => Err(error),
        }
    }

    /// Polls one attempt; `Some` when it ended (its timeout ends it too).
    fn poll_attempt<T, E, Fut>(
        &self,
        attempt: &mut InFlight<Fut>,
        cx: &mut Context<'_>,
        timeout: Option<Duration>,
        on_timeout: Option<fn(Elapsed) -> E>,
    ) -> Option<Result<T, E>>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        if let Poll::Ready(result) = self.poll_in_nest(attempt.future.as_mut(), cx, attempt.index) {
            return Some(result);
        }
        let ended = attempt
            .timeout
            .as_mut()
            .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready());
        ended.then(|| {
            let on_timeout = on_timeout.expect("a timeout needs FromTimeout");
            Err(on_timeout(Elapsed::attempt(
                timeout.expect("a timeout when it sleeps"),
            )))
        })
    }
}
