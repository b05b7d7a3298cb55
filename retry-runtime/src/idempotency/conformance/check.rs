//! [`Check`]: one check in progress (its name, scope and store), with the
//! assertions and store calls the checks share.

use std::{
    fmt,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

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

/// How often the body of an engine-level check ran.
#[derive(Default)]
pub(super) struct Runs(AtomicU32);

impl Runs {
    /// Counts a run; how many ran before it.
    pub(super) fn count(&self) -> u32 {
        self.0.fetch_add(1, Ordering::SeqCst)
    }

    /// How many ran.
    pub(super) fn get(&self) -> u32 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Whether an engine call answered `PayloadMismatch`.
pub(super) fn is_payload_mismatch<T>(got: &Result<T, KitError>) -> bool {
    matches!(
        got,
        Err(KitError::Idempotency(IdempotencyError::PayloadMismatch))
    )
}

/// Whether an engine call answered `InProgress`.
pub(super) fn is_in_progress<T>(got: &Result<T, KitError>) -> bool {
    matches!(
        got,
        Err(KitError::Idempotency(IdempotencyError::InProgress { .. }))
    )
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

    /// Passes if the body ran once.
    pub(super) fn ran_once(&self, runs: &Runs) {
        let runs = runs.get();
        self.ensure(
            runs == 1,
            format_args!("the body ran {runs} times, expected once"),
        );
    }

    pub(super) fn key(&self, name: &str) -> RecordKey {
        RecordKey::new(self.scope.clone(), name).expect("the checks' keys are valid")
    }

    pub(super) fn key_in(&self, scope: &str, name: &str) -> RecordKey {
        RecordKey::new(format!("{}/{scope}", self.scope), name).expect("the checks' keys are valid")
    }

    /// The engine over `store` (this check's store, or one around it), in
    /// this check's scope.
    pub(super) fn engine<'a>(&self, store: &'a dyn IdempotencyStore) -> Idempotency<'a> {
        Idempotency::new(store).scope(self.scope.clone())
    }

    /// The engine over this check's store and scope, keeping results an hour.
    pub(super) fn idempotency(&self) -> Idempotency<'_> {
        self.engine(&self.store).ttl(Duration::from_secs(3600))
    }

    /// An engine call with `key` and the fingerprint of `payload`, whose
    /// body counts its run in `runs` and returns `result for {payload}`.
    pub(super) async fn paid_call(
        &self,
        key: &str,
        payload: &str,
        runs: &Runs,
    ) -> Result<String, KitError> {
        let body = || async move {
            runs.count();
            Ok(format!("result for {payload}"))
        };
        self.idempotency()
            .key(key)
            .fingerprint(payload)
            .run(body)
            .await
    }

    /// A claim of `key` at `now` under `token`, holding for [`LEASE`] and
    /// expiring after [`TTL`] unless told otherwise; then what it must find.
    pub(super) fn attempt<'c>(
        &'c self,
        key: &'c RecordKey,
        token: u64,
        fingerprint: Option<Fingerprint>,
        now: Millis,
    ) -> Attempt<'c, S> {
        let (lease_until, expires_at) = (now + LEASE, now + TTL);
        let request = ClaimRequest {
            key,
            token,
            fingerprint,
            now,
            lease_until,
            expires_at,
        };
        Attempt {
            check: self,
            request,
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

/// One claim of a check (see [`Check::attempt`]), sent by the step that
/// says what it must find: [`claimed`](Attempt::claimed),
/// [`in_progress`](Attempt::in_progress), [`completed`](Attempt::completed),
/// or [`claim`](Attempt::claim) for the answer itself.
#[must_use = "an attempt does nothing until a step sends it"]
pub(super) struct Attempt<'c, S: ?Sized> {
    check: &'c Check<'c, S>,
    request: ClaimRequest<'c>,
}

impl<S: IdempotencyStore + ?Sized> Attempt<'_, S> {
    /// Holds the claim until `lease_until` instead.
    pub(super) fn lease_until(mut self, lease_until: Millis) -> Self {
        self.request.lease_until = lease_until;
        self
    }

    /// Expires the record at `expires_at` instead.
    pub(super) fn expires_at(mut self, expires_at: Millis) -> Self {
        self.request.expires_at = expires_at;
        self
    }

    /// The store's answer (a store error fails the check).
    pub(super) async fn claim(self) -> Claim {
        let ClaimRequest { key, now, .. } = self.request;
        match self.check.store.claim(&self.request).await {
            Ok(claim) => claim,
            Err(error) => self
                .check
                .fail(format_args!("claim of {key:?} at {now} failed: {error}")),
        }
    }

    /// The claim is ours.
    pub(super) async fn claimed(self, step: &str) {
        self.finds(Claim::Claimed, step).await;
    }

    /// The claim finds the record in progress, held until `lease_until`
    /// by a claim with fingerprint `theirs`.
    pub(super) async fn in_progress(
        self,
        lease_until: Millis,
        theirs: Option<Fingerprint>,
        step: &str,
    ) {
        let expected = Claim::InProgress {
            lease_until,
            fingerprint: theirs,
        };
        self.finds(expected, step).await;
    }

    /// The claim finds the result `payload`, stored by a claim with
    /// fingerprint `theirs`.
    pub(super) async fn completed(self, payload: &[u8], theirs: Option<Fingerprint>, step: &str) {
        let expected = Claim::Completed(StoredResult {
            fingerprint: theirs,
            payload: payload.to_vec(),
        });
        self.finds(expected, step).await;
    }

    async fn finds(self, expected: Claim, step: &str) {
        let check = self.check;
        let found = self.claim().await;
        if found != expected {
            check.fail(format_args!(
                "{step}: expected {}, found {}",
                show(&expected),
                show(&found)
            ));
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
