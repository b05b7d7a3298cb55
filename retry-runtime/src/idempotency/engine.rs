//! The claim / run / complete-or-release algorithm.

use std::{
    borrow::Cow,
    future::{Future, poll_fn},
    pin::pin,
    sync::Arc,
    task::Poll,
    time::Duration,
};

use super::{
    Claim, ClaimRequest, Fingerprint, IdempotencyError, IdempotencyStore, JsonCodec, NotStored,
    RecordKey, ResultCodec, StoredResult,
    codec::{Outcome, decode_tagged, frame, unframe},
    fence::{CurrentClaim, FENCED_LEASE, FENCED_RETRY_AFTER},
    inflight::Inflight,
    now_millis, stats,
};

/// What a duplicate does when it arrives while the first request runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InProgressPolicy {
    /// Fail at once with [`IdempotencyError::InProgress`].
    Reject,
    /// Wait up to this long for the first request's result. In-process
    /// duplicates wait on the first without polling the store; duplicates
    /// on other replicas poll the store with backoff.
    Wait(Duration),
}

/// The fixed part of an idempotent handler's behaviour; `#[idempotent]`
/// builds one in a `const`.
///
/// # Default
/// `ttl = 24h`, `lease = 30s`, `in_progress = reject`, no cached errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdempotencyConfig {
    ttl: Duration,
    lease: Duration,
    in_progress: InProgressPolicy,
}

impl IdempotencyConfig {
    /// The defaults.
    pub const fn new() -> IdempotencyConfig {
        IdempotencyConfig {
            ttl: Duration::from_secs(24 * 3600),
            lease: Duration::from_secs(30),
            in_progress: InProgressPolicy::Reject,
        }
    }

    /// How long a result is kept and replayed.
    pub const fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long a claim holds without renewal (renewed every third of it while the body runs).
    pub const fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// What a duplicate does while the first runs.
    pub const fn with_in_progress(mut self, in_progress: InProgressPolicy) -> Self {
        self.in_progress = in_progress;
        self
    }
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        IdempotencyConfig::new()
    }
}

/// Runs a closure at most once per key, against a store shared by every
/// replica: the non-macro form of `#[idempotent]`, and the engine under it.
///
/// ```
/// use retry_runtime::idempotency::{Idempotency, IdempotencyError, MemoryStore};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let store = MemoryStore::new();
/// let mut runs = 0;
/// for _ in 0..3 {
///     let receipt: Result<u64, IdempotencyError> = Idempotency::new(&store)
///         .key("payment-42")
///         .scope("payments")
///         .run(|| async { runs += 1; Ok(500) })
///         .await;
///     assert_eq!(receipt.unwrap(), 500);
/// }
/// assert_eq!(runs, 1, "duplicates replay the first result");
/// # }
/// ```
pub struct Idempotency<'s> {
    store: &'s dyn IdempotencyStore,
    config: IdempotencyConfig,
    scope: Cow<'static, str>,
    key: Option<String>,
    fingerprint: Option<Fingerprint>,
}

impl std::fmt::Debug for Idempotency<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotency")
            .field("config", &self.config)
            .field("scope", &self.scope)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl<'s> Idempotency<'s> {
    /// Calls against `store`, with the default configuration and scope `""`.
    pub fn new(store: &'s dyn IdempotencyStore) -> Self {
        Idempotency {
            store,
            config: IdempotencyConfig::new(),
            scope: Cow::Borrowed(""),
            key: None,
            fingerprint: None,
        }
    }

    /// The client's idempotency key (required: missing or empty fails with `MissingKey`).
    pub fn key(mut self, key: impl AsRef<str>) -> Self {
        self.key = Some(key.as_ref().to_owned());
        self
    }

    /// The namespace of the key: records of different scopes never meet.
    pub fn scope(mut self, scope: impl Into<Cow<'static, str>>) -> Self {
        self.scope = scope.into();
        self
    }

    /// The request payload's fingerprint, compared before any replay.
    pub fn fingerprint(mut self, payload: impl AsRef<[u8]>) -> Self {
        self.fingerprint = Some(Fingerprint::of(payload));
        self
    }

    /// How long a result is kept.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.config = self.config.with_ttl(ttl);
        self
    }

    /// How long a claim holds without renewal.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.config = self.config.with_lease(lease);
        self
    }

    /// What a duplicate does while the first runs.
    pub fn in_progress(mut self, policy: InProgressPolicy) -> Self {
        self.config = self.config.with_in_progress(policy);
        self
    }

    /// Runs `body` once for this key; duplicates get its result (as JSON).
    /// Errors are not stored: they release the claim so that a retry runs again.
    pub async fn run<T, E, F, Fut>(self, body: F) -> Result<T, E>
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
        E: From<IdempotencyError>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.run_with(&JsonCodec, &NotStored, |_| false, body).await
    }

    /// Runs `body` with explicit codecs; errors for which `cache_error`
    /// is true are stored and replayed like results.
    pub async fn run_with<T, E, F, Fut>(
        self,
        codec: &dyn ResultCodec<T>,
        error_codec: &dyn ResultCodec<E>,
        cache_error: impl FnOnce(&E) -> bool,
        body: F,
    ) -> Result<T, E>
    where
        E: From<IdempotencyError>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let key = match self
            .key
            .as_deref()
            .map(|key| RecordKey::new(self.scope.clone(), key))
        {
            Some(Ok(key)) => key,
            Some(Err(error)) => return Err(error.into()),
            None => return Err(IdempotencyError::MissingKey.into()),
        };
        execute(
            self.store,
            &self.config,
            key,
            self.fingerprint,
            codec,
            error_codec,
            cache_error,
            body,
        )
        .await
    }
}

/// The algorithm, shared by [`Idempotency`] and `#[idempotent]`.
#[allow(clippy::too_many_arguments)]
pub async fn execute<T, E, F, Fut>(
    store: &dyn IdempotencyStore,
    config: &IdempotencyConfig,
    key: RecordKey,
    fingerprint: Option<Fingerprint>,
    codec: &dyn ResultCodec<T>,
    error_codec: &dyn ResultCodec<E>,
    cache_error: impl FnOnce(&E) -> bool,
    body: F,
) -> Result<T, E>
where
    E: From<IdempotencyError>,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    execute_with(
        store,
        config,
        key,
        fingerprint,
        codec,
        error_codec,
        E::from,
        cache_error,
        body,
    )
    .await
}

/// [`execute`], with the conversion of [`IdempotencyError`] passed as a
/// value rather than required as a bound: `#[idempotent]` checks that bound
/// once, in a sync fn, so that a missing `From` is reported once (a bound of
/// an async fn is reported again at each use of its future).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn execute_with<T, E, F, Fut>(
    store: &dyn IdempotencyStore,
    config: &IdempotencyConfig,
    key: RecordKey,
    fingerprint: Option<Fingerprint>,
    codec: &dyn ResultCodec<T>,
    error_codec: &dyn ResultCodec<E>,
    into_error: fn(IdempotencyError) -> E,
    cache_error: impl FnOnce(&E) -> bool,
    body: F,
) -> Result<T, E>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    // Tokens fit in a signed 64-bit column.
    let token = fastrand::u64(1..=i64::MAX as u64);
    let wait = match config.in_progress {
        InProgressPolicy::Reject => None,
        InProgressPolicy::Wait(limit) => Some(tokio::time::Instant::now() + limit),
    };
    let mut poll_delay = Duration::from_millis(10);
    loop {
        // Listen for a local first request before asking the store, so that
        // its completion cannot slip between the two.
        let local = wait.and_then(|_| Inflight::lookup(store, &key));
        let mut notified = local.as_ref().map(|notify| Box::pin(notify.notified()));
        if let Some(notified) = notified.as_mut() {
            notified.as_mut().enable();
        }
        let now = now_millis();
        let request = ClaimRequest {
            key: &key,
            token,
            fingerprint,
            now,
            lease_until: now + millis(config.lease),
            expires_at: now + millis(config.ttl),
        };
        let found = store
            .claim(&request)
            .await
            .map_err(|error| into_error(IdempotencyError::Store(error)))?;
        match found {
            Claim::Claimed => break,
            Claim::Completed(stored) => {
                return replay(stored, fingerprint, codec, error_codec, into_error);
            }
            Claim::InProgress {
                lease_until,
                fingerprint: theirs,
            } => {
                if mismatched(fingerprint, theirs) {
                    return Err(into_error(IdempotencyError::PayloadMismatch));
                }
                // A fenced claim's lease never lapses; its owner stores the
                // result within moments, unless it died (then never).
                let retry_after = if lease_until == FENCED_LEASE {
                    FENCED_RETRY_AFTER
                } else {
                    Duration::from_millis(lease_until.saturating_sub(now).max(0) as u64)
                };
                let Some(wait_until) = wait.filter(|until| tokio::time::Instant::now() < *until)
                else {
                    stats::record(&stats::IN_PROGRESS);
                    return Err(into_error(IdempotencyError::InProgress { retry_after }));
                };
                let remaining = wait_until - tokio::time::Instant::now();
                match notified {
                    Some(notified) => {
                        let _ = tokio::time::timeout(remaining, notified).await;
                    }
                    None => {
                        tokio::time::sleep(poll_delay.min(remaining)).await;
                        poll_delay = (poll_delay * 2).min(Duration::from_millis(500));
                    }
                }
            }
        }
    }
    stats::record(&stats::EXECUTIONS);
    let inflight = wait.map(|_| Inflight::register(store, &key));
    let mut guard = ClaimGuard {
        store,
        key: &key,
        token,
        armed: true,
    };
    let claim = CurrentClaim::new(key.clone(), token);
    let result = run_renewing(store, &claim, config.lease, body()).await;
    // From here on the body has run: a drop must not release the claim
    // (a retry would run it again); the lease expires instead.
    guard.armed = false;
    let expires_at = now_millis() + millis(config.ttl);
    match &result {
        Ok(value) => store_result(store, &key, token, Outcome::Ok, codec, value, expires_at).await,
        Err(error) if cache_error(error) => {
            store_result(
                store,
                &key,
                token,
                Outcome::Err,
                error_codec,
                error,
                expires_at,
            )
            .await;
        }
        Err(_) if claim.is_fenced() => {
            // The body fenced its claim, so its effects may have committed:
            // running it again could repeat them. The record stays a fenced
            // claim; duplicates get `InProgress` until its TTL.
            tracing::warn!(key = ?key, "an idempotent body failed after fencing its claim; the claim is kept, not released");
        }
        Err(_) => {
            if let Err(error) = store.release(&key, token).await {
                stats::record(&stats::STORE_FAILURES);
                tracing::warn!(key = ?key, %error, "could not release an idempotency claim; it lapses with its lease");
            }
        }
    }
    drop(inflight);
    result
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX / 4)
}

fn mismatched(ours: Option<Fingerprint>, theirs: Option<Fingerprint>) -> bool {
    matches!((ours, theirs), (Some(ours), Some(theirs)) if ours != theirs)
}

fn replay<T, E>(
    stored: StoredResult,
    fingerprint: Option<Fingerprint>,
    codec: &dyn ResultCodec<T>,
    error_codec: &dyn ResultCodec<E>,
    into_error: fn(IdempotencyError) -> E,
) -> Result<T, E> {
    if mismatched(fingerprint, stored.fingerprint) {
        return Err(into_error(IdempotencyError::PayloadMismatch));
    }
    let codec_error = |message: String| into_error(IdempotencyError::Codec { message });
    let (outcome, tag, body) = unframe(&stored.payload).map_err(codec_error)?;
    stats::record(&stats::REPLAYS);
    match outcome {
        Outcome::Ok => decode_tagged(codec, tag, body).map_err(codec_error),
        Outcome::Err => Err(decode_tagged(error_codec, tag, body).map_err(codec_error)?),
    }
}

async fn store_result<V>(
    store: &dyn IdempotencyStore,
    key: &RecordKey,
    token: u64,
    outcome: Outcome,
    codec: &dyn ResultCodec<V>,
    value: &V,
    expires_at: i64,
) {
    let payload = match codec.encode(value) {
        Ok(body) => frame(outcome, codec, &body),
        Err(error) => {
            stats::record(&stats::STORE_FAILURES);
            tracing::error!(key = ?key, %error, "could not encode an idempotent result; the claim lapses with its lease");
            return;
        }
    };
    match store.complete(key, token, &payload, expires_at).await {
        Ok(true) => {}
        Ok(false) => {
            stats::record(&stats::LEASES_LOST);
            tracing::warn!(key = ?key, "the idempotency lease was lost before the result was stored");
        }
        Err(error) => {
            stats::record(&stats::STORE_FAILURES);
            tracing::error!(key = ?key, %error, "could not store an idempotent result; it was returned all the same");
        }
    }
}

/// Runs `body` with `claim` current, renewing the lease every third of it
/// until the body ends or fences its claim. The renewal is polled only while
/// the body is pending, so a body that is ready at once never touches the
/// timer.
async fn run_renewing<R>(
    store: &dyn IdempotencyStore,
    claim: &CurrentClaim,
    lease: Duration,
    body: impl Future<Output = R>,
) -> R {
    let (key, token) = (claim.record_key(), claim.token());
    let mut body = pin!(body);
    let renewal = async {
        loop {
            tokio::time::sleep(lease / 3).await;
            if claim.is_fenced() {
                return;
            }
            match store.renew(key, token, now_millis() + millis(lease)).await {
                Ok(true) => {}
                // A fence committed meanwhile: the lease no longer lapses.
                Ok(false) if claim.is_fenced() => return,
                Ok(false) => {
                    stats::record(&stats::LEASES_LOST);
                    tracing::warn!(key = ?key, "the idempotency lease was taken over while the body ran");
                    return;
                }
                Err(error) => {
                    tracing::warn!(key = ?key, %error, "could not renew an idempotency lease")
                }
            }
        }
    };
    let mut renewal = pin!(renewal);
    let mut renewing = true;
    poll_fn(|context| {
        if let Poll::Ready(result) = claim.enter(|| body.as_mut().poll(context)) {
            return Poll::Ready(result);
        }
        if renewing && renewal.as_mut().poll(context).is_ready() {
            renewing = false;
        }
        Poll::Pending
    })
    .await
}

/// Releases the claim if the body is dropped or panics before it ends.
struct ClaimGuard<'a> {
    store: &'a dyn IdempotencyStore,
    key: &'a RecordKey,
    token: u64,
    armed: bool,
}

impl Drop for ClaimGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.store.release_detached(self.key.clone(), self.token);
        }
    }
}

/// The process-wide default store, for handlers that name none.
static DEFAULT_STORE: std::sync::OnceLock<Arc<dyn IdempotencyStore>> = std::sync::OnceLock::new();

/// Sets the store of every `#[idempotent]` handler without `store = …`;
/// returns `false` if one was already set (the first one stays).
pub fn set_default_store(store: Arc<dyn IdempotencyStore>) -> bool {
    DEFAULT_STORE.set(store).is_ok()
}

/// The default store: the one set with [`set_default_store`], else a
/// process-wide [`MemoryStore`](super::MemoryStore), with a one-time
/// warning (it does not protect against duplicates on other replicas).
pub fn default_store() -> &'static dyn IdempotencyStore {
    &**DEFAULT_STORE.get_or_init(|| {
        tracing::warn!(
            "no idempotency store configured: using an in-process MemoryStore, which does not see other replicas; call steadfast::idempotency::set_default_store"
        );
        Arc::new(super::MemoryStore::new())
    })
}
