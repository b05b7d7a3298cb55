//! The bytes the engine stores for a result, so that a transactional body
//! can commit its result with its effect, as `transaction = tx` does, and so
//! that the trace can show which result a record holds.
//!
//! They are the engine's own: each is what `Idempotency::run` hands its
//! store's `complete` for that value (the frame is not public API).

use std::{
    future::Future,
    pin::pin,
    sync::{Mutex, OnceLock, PoisonError},
    task::{Context, Poll, Waker},
};

use steadfast::idempotency::{
    Claim, ClaimRequest, Completion, Idempotency, IdempotencyError, IdempotencyStore, Millis,
    RecordKey, StoreFuture,
};

/// Results are `0..VALUES`.
pub(crate) const VALUES: u32 = 128;

static FRAMES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();

/// Computes the frames (once per process); called before a run seeds the
/// engine's random numbers, so that a run never draws one for this.
pub(crate) fn warm() {
    FRAMES.get_or_init(|| (0..VALUES).map(capture).collect());
}

/// What the engine stores for `value`.
pub(crate) fn frame(value: u32) -> &'static [u8] {
    warm();
    &FRAMES.get().expect("warmed")[value as usize]
}

/// The value whose frame `payload` is, if any.
pub(crate) fn value_of(payload: &[u8]) -> Option<u32> {
    warm();
    let frames = FRAMES.get().expect("warmed");
    (0..VALUES).find(|value| frames[*value as usize] == payload)
}

/// Runs the engine once over a store that grants every claim and keeps what
/// `complete` is given.
fn capture(value: u32) -> Vec<u8> {
    let store = Capture::default();
    let run = Idempotency::new(&store)
        .key("frame")
        .run(|| async move { Ok::<_, IdempotencyError>(value) });
    // Every step is ready at once: no runtime, no timer.
    let polled = pin!(run).poll(&mut Context::from_waker(Waker::noop()));
    assert!(
        matches!(polled, Poll::Ready(Ok(answer)) if answer == value),
        "the capture runs at once"
    );
    let payload = store
        .payload
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    payload.expect("the engine stored its result")
}

#[derive(Default)]
struct Capture {
    payload: Mutex<Option<Vec<u8>>>,
}

impl IdempotencyStore for Capture {
    fn claim<'a>(&'a self, _: &'a ClaimRequest<'a>) -> StoreFuture<'a, Claim> {
        Box::pin(std::future::ready(Ok(Claim::Claimed)))
    }

    fn complete<'a>(&'a self, completion: Completion<'a>) -> StoreFuture<'a, bool> {
        *self.payload.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(completion.payload.to_vec());
        Box::pin(std::future::ready(Ok(true)))
    }

    fn release<'a>(&'a self, _: &'a RecordKey, _: u64) -> StoreFuture<'a, bool> {
        Box::pin(std::future::ready(Ok(true)))
    }

    fn renew<'a>(&'a self, _: &'a RecordKey, _: u64, _: Millis) -> StoreFuture<'a, bool> {
        Box::pin(std::future::ready(Ok(true)))
    }

    fn purge_expired(&self, _: Millis) -> StoreFuture<'_, u64> {
        Box::pin(std::future::ready(Ok(0)))
    }
}
