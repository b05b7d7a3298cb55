//! One caller: a request through the real engine (`Idempotency::run`), whose
//! body makes its effect the way the run's [`Body`](crate::store::Body)
//! says, and the answer it gets.

use std::{fmt, future::Future, pin::Pin, time::Duration};

use steadfast::idempotency::{Idempotency, IdempotencyError, current_claim};

use crate::{
    clock,
    store::{KEYS, SCOPE, SimStore},
};

/// The lease of every claim: renewed every second while its body runs.
pub(crate) const LEASE: Duration = Duration::from_secs(3);

/// The TTL of every record: longer than any run, so that every effect of a
/// run falls within it.
pub(crate) const TTL: Duration = Duration::from_secs(3_600);

/// What a caller does.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec {
    pub(crate) key: usize,
    /// Its clock in the pool (`clock::POOL`).
    pub(crate) clock: usize,
    /// The result its body returns: a value of its own, so that a result
    /// tells whose execution it is.
    pub(crate) value: u32,
    /// How long its body works before its effect.
    pub(crate) work: Duration,
}

/// A caller's request in flight.
pub(crate) type Call<'s> = Pin<Box<dyn Future<Output = Result<u32, IdempotencyError>> + 's>>;

/// The request: claim, then the body (a point of work right after the
/// claim, `work` of time, the transaction with the effect, a point of work
/// after it), then `complete`, all by the engine.
pub(crate) fn call(store: &SimStore, spec: Spec) -> Call<'_> {
    Box::pin(
        Idempotency::new(store)
            .key(KEYS[spec.key])
            .scope(SCOPE)
            .ttl(TTL)
            .lease(LEASE)
            .clock(&clock::POOL[spec.clock])
            .run(move || async move {
                let claim = current_claim().expect("a body runs under its claim");
                store
                    .work("starts its body")
                    .await
                    .map_err(IdempotencyError::Store)?;
                if !spec.work.is_zero() {
                    tokio::time::sleep(spec.work).await;
                }
                let committed = store
                    .effect(&claim, spec.value)
                    .await
                    .map_err(IdempotencyError::Store)?;
                if !committed {
                    return Err(IdempotencyError::LeaseLost);
                }
                store
                    .work("ends its body")
                    .await
                    .map_err(IdempotencyError::Store)?;
                Ok(spec.value)
            }),
    )
}

/// What a caller was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// A result: its body's, or a replay.
    Result(u32),
    InProgress,
    ResultLost,
    LeaseLost,
    /// A store error (injected).
    Store,
    /// Anything else: never expected.
    Other(String),
}

impl From<Result<u32, IdempotencyError>> for Answer {
    fn from(result: Result<u32, IdempotencyError>) -> Answer {
        match result {
            Ok(value) => Answer::Result(value),
            Err(IdempotencyError::InProgress { .. }) => Answer::InProgress,
            Err(IdempotencyError::ResultLost) => Answer::ResultLost,
            Err(IdempotencyError::LeaseLost) => Answer::LeaseLost,
            Err(IdempotencyError::Store(_)) => Answer::Store,
            Err(other) => Answer::Other(other.to_string()),
        }
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Result(value) => write!(f, "Ok({value})"),
            Answer::InProgress => f.write_str("InProgress"),
            Answer::ResultLost => f.write_str("ResultLost"),
            Answer::LeaseLost => f.write_str("LeaseLost"),
            Answer::Store => f.write_str("StoreError"),
            Answer::Other(error) => write!(f, "unexpected error: {error}"),
        }
    }
}
