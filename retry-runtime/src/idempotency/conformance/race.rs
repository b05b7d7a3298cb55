//! Races: many callers of one key, polled on one task.

use std::{
    future::{Future, poll_fn},
    pin::Pin,
    task::Poll,
};

use super::super::{
    Claim, ClaimRequest, Fingerprint, IdempotencyStore, Millis, RecordKey, StoreError,
};

use super::{
    LEASE, RACERS, TTL,
    check::{Check, show, tokens},
};

/// The callers of a race for one key: distinct tokens and fingerprints.
pub(super) struct Racers {
    now: Millis,
    first_token: u64,
}

impl Racers {
    pub(super) fn new(now: Millis) -> Racers {
        Racers {
            now,
            first_token: fastrand::u64(1..=(i64::MAX as u64 - RACERS as u64)),
        }
    }

    pub(super) fn token(&self, racer: usize) -> u64 {
        self.first_token + racer as u64
    }

    pub(super) fn fingerprint(racer: usize) -> Fingerprint {
        Fingerprint::of(format!("racer {racer}"))
    }

    pub(super) fn request<'k>(&self, key: &'k RecordKey, racer: usize) -> ClaimRequest<'k> {
        ClaimRequest {
            key,
            token: self.token(racer),
            fingerprint: Some(Racers::fingerprint(racer)),
            now: self.now,
            lease_until: self.now + LEASE,
            expires_at: self.now + TTL,
        }
    }

    /// Exactly one winner; every loser saw its claim; only its token holds.
    pub(super) async fn verify<S: IdempotencyStore + ?Sized>(
        &self,
        check: &Check<'_, S>,
        key: &RecordKey,
        results: Vec<Result<Claim, StoreError>>,
    ) {
        let mut winners = Vec::new();
        let mut losers = Vec::new();
        for (racer, result) in results.into_iter().enumerate() {
            match result {
                Ok(Claim::Claimed) => winners.push(racer),
                Ok(Claim::InProgress {
                    lease_until,
                    fingerprint,
                }) => losers.push((racer, lease_until, fingerprint)),
                Ok(other) => check.fail(format_args!("racer {racer} found {}", show(&other))),
                Err(error) => check.fail(format_args!(
                    "racer {racer}'s claim failed under contention: {error}"
                )),
            }
        }
        let [winner] = winners[..] else {
            check.fail(format_args!("{RACERS} concurrent claims of one key: {} Claimed (racers {winners:?}), expected exactly 1", winners.len()))
        };
        for (racer, lease_until, fingerprint) in losers {
            check.ensure(
                lease_until == self.now + LEASE && fingerprint == Some(Racers::fingerprint(winner)),
                format_args!(
                    "racer {racer} saw InProgress {{ lease_until: {lease_until}, fingerprint: {fingerprint:?} }}, not the winner's (racer {winner})"
                ),
            );
        }
        let loser = (winner + 1) % RACERS;
        check.ensure(
            !check
                .complete(key, self.token(loser), b"loser", self.now + TTL)
                .await,
            "a loser's complete was accepted",
        );
        check.ensure(
            check
                .complete(key, self.token(winner), b"winner", self.now + TTL)
                .await,
            "the winner's complete was refused",
        );
        let (observer, _) = tokens();
        check
            .attempt(key, observer, None, self.now + 1)
            .completed(
                b"winner",
                Some(Racers::fingerprint(winner)),
                "replay after the race",
            )
            .await;
    }
}

/// Polls every future on this task until all are ready; their outputs in order.
pub(super) async fn join_all<F: Future + Unpin>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pending: Vec<Option<F>> = futures.into_iter().map(Some).collect();
    let mut outputs: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    poll_fn(|context| {
        let mut done = true;
        for (slot, output) in pending.iter_mut().zip(outputs.iter_mut()) {
            if let Some(future) = slot {
                match Pin::new(future).poll(context) {
                    Poll::Ready(value) => {
                        *output = Some(value);
                        *slot = None;
                    }
                    Poll::Pending => done = false,
                }
            }
        }
        if done { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
    outputs
        .into_iter()
        .map(|output| output.expect("every future finished"))
        .collect()
}

/// Pending once (waking itself at once), then ready: lets the other
/// futures of a [`join_all`] run.
pub(super) async fn yield_once() {
    let mut yielded = false;
    poll_fn(|context| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            context.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await;
}
