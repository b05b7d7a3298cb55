//! [`Check`]: one check in progress (its name, scope and store), with the
//! assertions and store calls the checks share.

use std::{borrow::Cow, fmt, time::Duration};

use super::super::{
    Claim, ClaimRequest, Completion, Fingerprint, Idempotency, IdempotencyError, IdempotencyStore,
    Millis, RecordKey, StoredResult,
};
use super::{LEASE, TTL};

/// The error type of the engine-level checks' bodies.
#[derive(Debug)]
pub(super) enum KitError {
    Idempotency(IdempotencyError),
    Body(u16),
}

impl From<IdempotencyError> for KitError {
    fn from(error: IdempotencyError) -> KitError {
        KitError::Idempotency(error)
    }
}

/// Two distinct fencing tokens, in the engine's range (they fit in a signed
/// 64-bit column).
pub(super) fn tokens() -> (u64, u64) {
    let first = fastrand::u64(1..=i64::MAX as u64);
    let second = loop {
        let second = fastrand::u64(1..=i64::MAX as u64);
        if second != first {
            break second;
        }
    };
    (first, second)
}

/// A check in progress: its name (for messages), scope and store.
pub(super) struct Check<'s, S: ?Sized> {
    pub(super) name: &'static str,
    pub(super) scope: String,
    pub(super) store: &'s S,
}

impl<'s, S: IdempotencyStore + ?Sized> Check<'s, S> {
    pub(super) fn new(name: &'static str, store: &'s S) -> Self {
        Check {
            name,
            scope: format!("steadfast-conformance/{name}/{:016x}", fastrand::u64(..)),
            store,
        }
    }

    pub(super) fn fail(&self, message: impl fmt::Display) -> ! {
        panic!("idempotency store conformance: {}: {message}", self.name)
    }

    #[track_caller]
    /// Passes if `fits(&got)`; else fails, saying what `what` returned
    /// instead of `expected`. The shape of every "call, then match the
    /// answer" step of the checks.
    pub(super) fn expect<T: fmt::Debug>(
        &self,
        got: T,
        what: &str,
        expected: &str,
        fits: impl FnOnce(&T) -> bool,
    ) {
        if !fits(&got) {
            self.fail(format_args!("{what} returned {got:?}, expected {expected}"));
        }
    }

    pub(super) fn ensure(&self, condition: bool, message: impl fmt::Display) {
        if !condition {
            self.fail(message);
        }
    }

    pub(super) fn ensure_ok<T: PartialEq<U> + fmt::Debug, U: fmt::Debug>(
        &self,
        result: Result<T, KitError>,
        expected: U,
        step: &str,
    ) {
        match result {
            Ok(value) if value == expected => {}
            other => self.fail(format_args!(
                "{step} returned {other:?}, expected Ok({expected:?})"
            )),
        }
    }

    pub(super) fn key(&self, name: &str) -> RecordKey {
        RecordKey::new(self.scope.clone(), name).expect("the checks' keys are valid")
    }

    pub(super) fn key_in(&self, scope: &str, name: &str) -> RecordKey {
        RecordKey::new(format!("{}/{scope}", self.scope), name).expect("the checks' keys are valid")
    }

    /// The engine over this check's store and scope.
    pub(super) fn idempotency(&self) -> Idempotency<'_> {
        Idempotency::new(&self.store)
            .scope(Cow::Owned(self.scope.clone()))
            .ttl(Duration::from_secs(3600))
    }

    pub(super) async fn claim(
        &self,
        key: &RecordKey,
        token: u64,
        fingerprint: Option<Fingerprint>,
        now: Millis,
        lease_until: Millis,
        expires_at: Millis,
    ) -> Claim {
        let request = ClaimRequest {
            key,
            token,
            fingerprint,
            now,
            lease_until,
            expires_at,
        };
        match self.store.claim(&request).await {
            Ok(claim) => claim,
            Err(error) => self.fail(format_args!("claim of {key:?} at {now} failed: {error}")),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn claimed(
        &self,
        key: &RecordKey,
        token: u64,
        fingerprint: Option<Fingerprint>,
        now: Millis,
        lease_until: Millis,
        expires_at: Millis,
        step: &str,
    ) {
        match self
            .claim(key, token, fingerprint, now, lease_until, expires_at)
            .await
        {
            Claim::Claimed => {}
            other => self.fail(format_args!(
                "{step}: expected Claimed, found {}",
                show(&other)
            )),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn in_progress(
        &self,
        key: &RecordKey,
        token: u64,
        fingerprint: Option<Fingerprint>,
        now: Millis,
        lease_until: Millis,
        theirs: Option<Fingerprint>,
        step: &str,
    ) {
        let found = self
            .claim(key, token, fingerprint, now, now + LEASE, now + TTL)
            .await;
        let expected = Claim::InProgress {
            lease_until,
            fingerprint: theirs,
        };
        if found != expected {
            self.fail(format_args!(
                "{step}: expected {}, found {}",
                show(&expected),
                show(&found)
            ));
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn completed(
        &self,
        key: &RecordKey,
        token: u64,
        fingerprint: Option<Fingerprint>,
        now: Millis,
        payload: &[u8],
        theirs: Option<Fingerprint>,
        step: &str,
    ) {
        let found = self
            .claim(key, token, fingerprint, now, now + LEASE, now + TTL)
            .await;
        let expected = Claim::Completed(StoredResult {
            fingerprint: theirs,
            payload: payload.to_vec(),
        });
        if found != expected {
            self.fail(format_args!(
                "{step}: expected {}, found {}",
                show(&expected),
                show(&found)
            ));
        }
    }

    pub(super) async fn complete(
        &self,
        key: &RecordKey,
        token: u64,
        payload: &[u8],
        expires_at: Millis,
    ) -> bool {
        match self
            .store
            .complete(Completion {
                key,
                token,
                payload,
                expires_at,
            })
            .await
        {
            Ok(done) => done,
            Err(error) => self.fail(format_args!("complete of {key:?} failed: {error}")),
        }
    }

    pub(super) async fn release(&self, key: &RecordKey, token: u64) -> bool {
        match self.store.release(key, token).await {
            Ok(done) => done,
            Err(error) => self.fail(format_args!("release of {key:?} failed: {error}")),
        }
    }

    pub(super) async fn renew(&self, key: &RecordKey, token: u64, lease_until: Millis) -> bool {
        match self.store.renew(key, token, lease_until).await {
            Ok(done) => done,
            Err(error) => self.fail(format_args!("renew of {key:?} failed: {error}")),
        }
    }

    pub(super) async fn purge(&self, now: Millis) -> u64 {
        match self.store.purge_expired(now).await {
            Ok(purged) => purged,
            Err(error) => self.fail(format_args!("purge_expired({now}) failed: {error}")),
        }
    }
}

/// A claim's outcome for a message, with payloads summarized.
pub(super) fn show(claim: &Claim) -> String {
    match claim {
        Claim::Claimed => "Claimed".to_owned(),
        Claim::InProgress {
            lease_until,
            fingerprint,
        } => {
            format!("InProgress {{ lease_until: {lease_until}, fingerprint: {fingerprint:?} }}")
        }
        Claim::Completed(StoredResult {
            fingerprint,
            payload,
        }) => {
            let shown = if payload.len() <= 64 {
                format!("{:?}", String::from_utf8_lossy(payload))
            } else {
                format!("{} bytes", payload.len())
            };
            format!("Completed {{ fingerprint: {fingerprint:?}, payload: {shown} }}")
        }
    }
}
