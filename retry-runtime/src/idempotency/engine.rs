//! The claim / run / complete-or-release algorithm.

use std::{
    borrow::Cow,
    future::{Future, poll_fn},
    pin::pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::Poll,
    time::Duration,
};

use super::{
    Claim, ClaimRequest, Clock, Completion, Fingerprint, IdempotencyError, IdempotencyStore,
    ImmediateClaim, JsonCodec, Millis, NotStored, RecordKey, ResultCodec, SharedResult, StoreError,
    StoreFuture, SystemClock,
    codec::{Outcome, decode_tagged, frame, unframe},
    detach::Detach,
    fence::{CurrentClaim, FENCED_RETRY_AFTER, fenced_owner_deadline},
    inflight::{Inflight, StoreId, store_id},
    stats,
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
#[derive(Debug, Clone, Copy)]
pub struct IdempotencyConfig {
    ttl: Duration,
    lease: Duration,
    in_progress: InProgressPolicy,
    clock: &'static dyn Clock,
}

impl PartialEq for IdempotencyConfig {
    fn eq(&self, other: &Self) -> bool {
        (self.ttl, self.lease, self.in_progress) == (other.ttl, other.lease, other.in_progress)
            && std::ptr::addr_eq(self.clock, other.clock)
    }
}

impl Eq for IdempotencyConfig {}

impl IdempotencyConfig {
    /// The defaults.
    pub const fn new() -> IdempotencyConfig {
        IdempotencyConfig {
            ttl: Duration::from_secs(24 * 3600),
            lease: Duration::from_secs(30),
            in_progress: InProgressPolicy::Reject,
            clock: &SystemClock,
        }
    }

    /// The clock that stamps records and decides leases and TTLs: the
    /// system's by default; a test's own for exact TTL and lease tests on
    /// tokio's paused time.
    pub const fn with_clock(mut self, clock: &'static dyn Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The clock.
    pub const fn clock(&self) -> &'static dyn Clock {
        self.clock
    }

    /// How long a result is kept and replayed.
    pub const fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How long a claim holds without renewal.
    pub const fn lease(&self) -> Duration {
        self.lease
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

impl IdempotencyConfig {
    /// Checks that the settings can work: a lease of at least 1 ms (stores
    /// count in milliseconds: a shorter lease lapses at once, and every
    /// duplicate takes the claim over) and a TTL above the lease.
    ///
    /// ```
    /// use std::time::Duration;
    /// use steadfast::idempotency::IdempotencyConfig;
    /// assert!(IdempotencyConfig::new().validate().is_ok());
    /// let short = IdempotencyConfig::new().with_ttl(Duration::from_secs(10)); // lease 30 s
    /// assert!(short.validate().is_err());
    /// assert!(IdempotencyConfig::new().with_lease(Duration::from_micros(500)).validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), IdempotencyError> {
        let message = if self.lease < Duration::from_millis(1) {
            format!(
                "the lease ({:?}) must be at least 1 ms; the default is 30 s",
                self.lease
            )
        } else if self.ttl <= self.lease {
            format!(
                "the TTL ({:?}) must exceed the lease ({:?}), as in a TTL of 24 h and a lease of 30 s",
                self.ttl, self.lease
            )
        } else {
            return Ok(());
        };
        Err(IdempotencyError::InvalidConfig { message })
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
/// use steadfast::idempotency::{Idempotency, IdempotencyError, MemoryStore};
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

    /// The clock that stamps records (see [`IdempotencyConfig::with_clock`]).
    pub fn clock(mut self, clock: &'static dyn Clock) -> Self {
        self.config = self.config.with_clock(clock);
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

    /// Runs `body` once for this key and runs it to its end: once the claim
    /// is won, dropping the returned future (a client's cancel, an outer
    /// timeout) neither cancels the body nor releases its claim; the body
    /// finishes, its result is stored, and the retry gets it (or
    /// `InProgress` while it still runs). The body owns what it uses
    /// (`'static`). Results are JSON; errors release the claim.
    ///
    /// ```
    /// use std::{sync::{Arc, atomic::{AtomicU32, Ordering}}, time::Duration};
    /// use steadfast::idempotency::{Idempotency, IdempotencyError, InProgressPolicy, MemoryStore};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let store = MemoryStore::new();
    /// let runs = Arc::new(AtomicU32::new(0));
    /// let pay = |runs: Arc<AtomicU32>| {
    ///     Idempotency::new(&store)
    ///         .key("payment-42")
    ///         .in_progress(InProgressPolicy::Wait(Duration::from_secs(5)))
    ///         .run_to_completion(move || async move {
    ///             runs.fetch_add(1, Ordering::SeqCst); // the effect
    ///             tokio::time::sleep(Duration::from_millis(300)).await;
    ///             Ok::<_, IdempotencyError>(500)
    ///         })
    /// };
    /// // The caller gives up after 100 ms; the body goes on.
    /// assert!(tokio::time::timeout(Duration::from_millis(100), pay(runs.clone())).await.is_err());
    /// // The retry waits for the first body's result instead of running again.
    /// assert_eq!(pay(runs.clone()).await.unwrap(), 500);
    /// assert_eq!(runs.load(Ordering::SeqCst), 1);
    /// # }
    /// ```
    pub async fn run_to_completion<T, E, F, Fut>(self, body: F) -> Result<T, E>
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
        E: From<IdempotencyError> + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let call = self.call()?;
        let replies = OwnedReplies::new(Box::new(JsonCodec), Box::new(NotStored), E::from);
        execute_to_completion(self.store, call, replies, |_: &E| false, body).await
    }

    /// The call these settings describe, or why there is none.
    fn call(&self) -> Result<Call, IdempotencyError> {
        self.config.validate()?;
        let Some(key) = self.key.as_deref() else {
            return Err(IdempotencyError::MissingKey);
        };
        let key = RecordKey::new(self.scope.clone(), key)?;
        Ok(Call::new(self.config, key, self.fingerprint))
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
        let call = self.call()?;
        let replies = Replies::new(codec, error_codec, E::from);
        execute_with(self.store, call, replies, cache_error, body).await
    }
}

/// The SQL stores' transactions (`transaction = tx` without the attribute).
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql")))
)]
impl Idempotency<'_> {
    /// Runs `body` once for this key in a transaction of `store`'s database
    /// (the store given to [`Idempotency::new`]), begun after the claim;
    /// on `Ok`, the result is stored in that transaction and it commits, so
    /// the body's writes and its stored result commit together or not at
    /// all: whatever instant a process dies at, a retry either runs the
    /// body again (nothing committed) or replays its result. On `Err` the
    /// transaction rolls back and the claim is released. A failed commit is
    /// an error, never a result that did not commit. Results are JSON.
    ///
    /// ```
    /// use steadfast::idempotency::{Idempotency, IdempotencyError, SqliteStore, StoreError};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), StoreError> {
    /// let store = SqliteStore::connect("sqlite::memory:").await?;
    /// store.migrate().await?;
    /// sqlx::query("CREATE TABLE ledger (cents INTEGER)").execute(store.pool()).await.unwrap();
    /// for _ in 0..3 {
    ///     let paid: Result<i64, IdempotencyError> = Idempotency::new(&store)
    ///         .key("payment-42")
    ///         .run_in_transaction(&store, |mut tx| async move {
    ///             sqlx::query("INSERT INTO ledger VALUES (500)")
    ///                 .execute(&mut *tx)
    ///                 .await
    ///                 .map_err(|error| IdempotencyError::Store(StoreError::new("ledger", error)))?;
    ///             Ok(500)
    ///         })
    ///         .await;
    ///     assert_eq!(paid.unwrap(), 500);
    /// }
    /// let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger").fetch_one(store.pool()).await.unwrap();
    /// assert_eq!(rows, 1, "the payment ran once; duplicates replayed its result");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn run_in_transaction<DB, T, E, F, Fut>(
        self,
        store: &super::SqlStore<DB>,
        body: F,
    ) -> Result<T, E>
    where
        DB: super::SqlBackend,
        T: serde::Serialize + serde::de::DeserializeOwned,
        E: From<IdempotencyError>,
        F: FnOnce(super::BodyTransaction<DB>) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.run_in_transaction_with(store, &JsonCodec, body).await
    }

    /// [`run_in_transaction`](Idempotency::run_in_transaction) with an
    /// explicit codec for the result, as a tonic service stores a
    /// `tonic::Response` of a prost message with `ProstCodec`.
    pub async fn run_in_transaction_with<DB, T, E, F, Fut>(
        self,
        store: &super::SqlStore<DB>,
        codec: &dyn ResultCodec<T>,
        body: F,
    ) -> Result<T, E>
    where
        DB: super::SqlBackend,
        E: From<IdempotencyError>,
        F: FnOnce(super::BodyTransaction<DB>) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        if store.identity() != self.store.identity() {
            return Err(E::from(IdempotencyError::InvalidConfig {
                message: "run_in_transaction needs the store given to Idempotency::new: the result is stored in its database, in the body's transaction".to_owned(),
            }));
        }
        let call = self.call()?;
        let config = call.config;
        let replies = Replies::new(codec, &NotStored, E::from);
        let body = || super::sql::in_transaction(store, codec, &config, E::from, body);
        execute_with(self.store, call, replies, |_| false, body).await
    }
}

/// One idempotent call: its settings, its record, its payload's fingerprint.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    config: IdempotencyConfig,
    key: RecordKey,
    fingerprint: Option<Fingerprint>,
}

impl Call {
    pub(crate) fn new(
        config: IdempotencyConfig,
        key: RecordKey,
        fingerprint: Option<Fingerprint>,
    ) -> Call {
        Call {
            config,
            key,
            fingerprint,
        }
    }
}

/// How one handler's outcomes are kept and answered: the codecs of its
/// results and of its errors, and the conversion of the engine's errors
/// into its error type.
pub(crate) struct Replies<'c, T, E> {
    codec: &'c dyn ResultCodec<T>,
    error_codec: &'c dyn ResultCodec<E>,
    into_error: fn(IdempotencyError) -> E,
}

impl<'c, T, E> Replies<'c, T, E> {
    pub(crate) fn new(
        codec: &'c dyn ResultCodec<T>,
        error_codec: &'c dyn ResultCodec<E>,
        into_error: fn(IdempotencyError) -> E,
    ) -> Self {
        Replies {
            codec,
            error_codec,
            into_error,
        }
    }

    fn error(&self, error: IdempotencyError) -> E {
        (self.into_error)(error)
    }
}

/// [`Replies`] that own their codecs, for a body that may outlive its caller.
pub(crate) struct OwnedReplies<T, E> {
    codec: Box<dyn ResultCodec<T>>,
    error_codec: Box<dyn ResultCodec<E>>,
    into_error: fn(IdempotencyError) -> E,
}

impl<T, E> OwnedReplies<T, E> {
    pub(crate) fn new(
        codec: Box<dyn ResultCodec<T>>,
        error_codec: Box<dyn ResultCodec<E>>,
        into_error: fn(IdempotencyError) -> E,
    ) -> Self {
        OwnedReplies {
            codec,
            error_codec,
            into_error,
        }
    }

    fn borrowed(&self) -> Replies<'_, T, E> {
        Replies::new(&*self.codec, &*self.error_codec, self.into_error)
    }
}

/// The algorithm behind [`Idempotency`], `#[idempotent]` and
/// `IdempotencyLayer`, with the conversion of [`IdempotencyError`] passed
/// as a value rather than required as a bound: `#[idempotent]` checks that
/// bound once, in a sync fn, so that a missing `From` is reported once (a
/// bound of an async fn is reported again at each use of its future).
///
/// The body runs in the caller's future: dropping it cancels the body. Its
/// claim is then released (a retry runs it again); once the body has ended,
/// storing its result runs to its end whatever happens to the caller when
/// the store can be [`shared`](IdempotencyStore::shared).
pub(crate) async fn execute_with<T, E, F, Fut>(
    store: &dyn IdempotencyStore,
    call: Call,
    replies: Replies<'_, T, E>,
    cache_error: impl FnOnce(&E) -> bool,
    body: F,
) -> Result<T, E>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let claimant = Claimant::new(store, store_id(store), &call);
    if let Some(answer) = claimant.claim_or_answer(&replies, None).await {
        return answer;
    }
    claimant.run_claimed(&replies, cache_error, body()).await
}

/// The engine for bodies that own what they use: once the claim is won,
/// the body runs to its end, and its result is stored, even if the caller's
/// future is dropped (a client's cancel or deadline, a closed connection,
/// an outer timeout). It is polled in the caller's task and moves to a task
/// of its own only when the caller goes away ([`Detach`]). A drop before the
/// claim is won leaves nothing behind: a claim still in flight is released
/// as soon as it lands.
///
/// A store that cannot be [`shared`](IdempotencyStore::shared) runs the body
/// in the caller's future instead, as [`execute_with`] does, with a
/// one-time warning.
pub(crate) async fn execute_to_completion<T, E, F, Fut, K>(
    store: &dyn IdempotencyStore,
    call: Call,
    replies: OwnedReplies<T, E>,
    cache_error: K,
    body: F,
) -> Result<T, E>
where
    T: Send + 'static,
    E: Send + 'static,
    K: FnOnce(&E) -> bool + Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
{
    let Some(shared) = store.shared() else {
        warn_unshared_store();
        return execute_with(store, call, replies.borrowed(), cache_error, body).await;
    };
    let id = store_id(store);
    let caller_gone = Arc::new(AtomicBool::new(false));
    let gone = caller_gone.clone();
    let work = async move {
        let claimant = Claimant::new(&*shared, id, &call);
        let replies = replies.borrowed();
        if let Some(answer) = claimant.claim_or_answer(&replies, Some(&gone)).await {
            return answer;
        }
        if gone.load(Ordering::SeqCst) {
            // Nobody waits for this body any more, and it has not started:
            // give the key back rather than run it for no one.
            claimant.give_back().await;
            return Err(replies.error(IdempotencyError::InProgress {
                retry_after: Duration::ZERO,
            }));
        }
        claimant.run_claimed(&replies, cache_error, body()).await
    };
    Detach::new(work).signalling(caller_gone).await
}

/// Warns, once per process, that a store cannot be shared, so that bodies
/// over it stop when their caller's future is dropped.
fn warn_unshared_store() {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            "this idempotency store returns None from IdempotencyStore::shared, so idempotent bodies over it stop when their caller's future is dropped; implement shared() to let them run to completion"
        );
    });
}

fn new_token() -> u64 {
    // Tokens fit in a signed 64-bit column.
    fastrand::u64(1..=i64::MAX as u64)
}

/// A caller of one request, claiming its record under a fencing token of
/// its own.
struct Claimant<'a> {
    store: &'a dyn IdempotencyStore,
    id: StoreId,
    call: &'a Call,
    token: u64,
}

impl<'a> Claimant<'a> {
    fn new(store: &'a dyn IdempotencyStore, id: StoreId, call: &'a Call) -> Self {
        Claimant {
            store,
            id,
            call,
            token: new_token(),
        }
    }

    /// Claims the record: `None` if the claim is ours, else the answer for
    /// this caller (a replay, `InProgress`, a mismatch, a store error). A
    /// duplicate that waits stops waiting, and claims nothing, once
    /// `caller_gone` is set: nobody would get its answer.
    async fn claim_or_answer<T, E>(
        &self,
        replies: &Replies<'_, T, E>,
        caller_gone: Option<&AtomicBool>,
    ) -> Option<Result<T, E>> {
        let Call {
            config,
            key,
            fingerprint,
        } = self.call;
        let wait = match config.in_progress {
            InProgressPolicy::Reject => None,
            InProgressPolicy::Wait(limit) => Some(tokio::time::Instant::now() + limit),
        };
        let mut poll_delay = Duration::from_millis(10);
        loop {
            if caller_gone.is_some_and(|gone| gone.load(Ordering::SeqCst)) {
                return Some(Err(replies.error(IdempotencyError::InProgress {
                    retry_after: Duration::ZERO,
                })));
            }
            // Listen for a local first request before asking the store, so
            // that its completion cannot slip between the two.
            let local = wait.and_then(|_| Inflight::lookup(self.id, key));
            let mut notified = local.as_ref().map(|notify| Box::pin(notify.notified()));
            if let Some(notified) = notified.as_mut() {
                notified.as_mut().enable();
            }
            let now = config.clock.now_millis();
            let request = ClaimRequest {
                key,
                token: self.token,
                fingerprint: *fingerprint,
                now,
                lease_until: now + millis(config.lease),
                expires_at: now + millis(config.ttl),
            };
            // A store that answers at once does so without a boxed future,
            // and shares a stored result rather than copying it.
            let found = match self.store.immediate() {
                Some(records) => records.claim_now(&request),
                None => self.store.claim(&request).await.map(ImmediateClaim::Found),
            };
            let found = match found {
                Ok(found) => found,
                Err(error) => return Some(Err(replies.error(IdempotencyError::Store(error)))),
            };
            let (lease_until, theirs) = match found {
                ImmediateClaim::Found(Claim::Claimed) => return None,
                ImmediateClaim::Found(Claim::Completed(stored)) => {
                    let theirs = stored.fingerprint;
                    let stored = Stored::Copied(&stored.payload);
                    return Some(replay(theirs, stored, *fingerprint, replies));
                }
                ImmediateClaim::Completed {
                    fingerprint: theirs,
                    payload,
                } => {
                    let stored = Stored::Shared(&payload);
                    return Some(replay(theirs, stored, *fingerprint, replies));
                }
                ImmediateClaim::Found(Claim::InProgress {
                    lease_until,
                    fingerprint,
                }) => (lease_until, fingerprint),
            };
            if mismatched(*fingerprint, theirs) {
                return Some(Err(replies.error(IdempotencyError::PayloadMismatch)));
            }
            // A fenced claim's lease never lapses; its owner stores the
            // result within moments, unless it died: then, once a lease
            // has passed since the fence, the result is lost for good.
            let retry_after = match fenced_owner_deadline(lease_until) {
                Some(dead_at) if now >= dead_at => {
                    stats::record(&stats::RESULTS_LOST);
                    return Some(Err(replies.error(IdempotencyError::ResultLost)));
                }
                Some(dead_at) => FENCED_RETRY_AFTER.min(millis_until(now, dead_at)),
                None => millis_until(now, lease_until),
            };
            let Some(wait_until) = wait.filter(|until| tokio::time::Instant::now() < *until) else {
                stats::record(&stats::IN_PROGRESS);
                return Some(Err(
                    replies.error(IdempotencyError::InProgress { retry_after })
                ));
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

    /// Releases a claim whose body never started.
    async fn give_back(&self) {
        let key = &self.call.key;
        if finish_now(self.store, key, self.token, &Ending::Release, 0) {
            return;
        }
        let window = tokio::time::Instant::now() + self.call.config.lease / 3;
        finish(self.store, key, self.token, &Ending::Release, 0, window).await;
    }

    /// Runs the body under the claim, then stores its result or releases
    /// the claim. With `shared`, the storing runs to its end even if this
    /// future is dropped.
    async fn run_claimed<T, E>(
        &self,
        replies: &Replies<'_, T, E>,
        cache_error: impl FnOnce(&E) -> bool,
        body: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let (store, token) = (self.store, self.token);
        let Call { config, key, .. } = self.call;
        stats::record(&stats::EXECUTIONS);
        let waits = matches!(config.in_progress, InProgressPolicy::Wait(_));
        let inflight = waits.then(|| Inflight::register(self.id, key));
        let mut guard = ClaimGuard {
            store,
            key,
            token,
            armed: true,
        };
        let claim = CurrentClaim::new(key.clone(), token, config.lease, config.clock);
        let result = run_renewing(store, &claim, config.lease, body).await;
        // From here on the body has run: a drop must not release the claim
        // (a retry would run it again).
        guard.armed = false;
        let expires_at = config.clock.now_millis() + millis(config.ttl);
        let ending = match &result {
            // Committed with the body's transaction.
            Ok(_) if claim.is_stored() => Ending::Keep,
            // Its commit failed, maybe after taking effect: neither store an
            // error over a result that may have committed nor release.
            Err(_) if claim.is_uncertain() => Ending::Keep,
            Ok(value) => encoded(key, Outcome::Ok, replies.codec, value),
            Err(error) if cache_error(error) => {
                encoded(key, Outcome::Err, replies.error_codec, error)
            }
            Err(_) if claim.is_fenced() => {
                // The body fenced its claim, so its effects may have
                // committed: running it again could repeat them. The record
                // stays a fenced claim; duplicates get `InProgress` until
                // its TTL.
                tracing::warn!(key = ?key, "an idempotent body failed after fencing its claim; the claim is kept, not released");
                Ending::Keep
            }
            Err(_) => Ending::Release,
        };
        // A store that answers at once stores the result here, in this
        // poll: nothing is awaited, so a drop cannot come in between.
        if finish_now(store, key, token, &ending, expires_at) {
            drop(inflight);
            return result;
        }
        // The lease was renewed at most a third of it ago: retries of the
        // ending stay within that third, so that no one takes the claim over
        // while they run.
        let window = tokio::time::Instant::now() + config.lease / 3;
        let ending = Unfinished {
            store,
            key,
            token,
            ending: Some(ending),
            expires_at,
            window,
        };
        ending.finish().await;
        drop(inflight);
        result
    }
}

/// The ending of a body, applied here; if this future is dropped before it
/// is applied, applied again from the start in a task of its own over the
/// store's [`shared`](IdempotencyStore::shared) handle (`complete` and
/// `release` are safe to repeat under the token). The common case costs
/// nothing more than the store calls.
struct Unfinished<'a> {
    store: &'a dyn IdempotencyStore,
    key: &'a RecordKey,
    token: u64,
    ending: Option<Ending>,
    expires_at: Millis,
    window: tokio::time::Instant,
}

impl Unfinished<'_> {
    async fn finish(mut self) {
        if let Some(ending) = &self.ending {
            finish(
                self.store,
                self.key,
                self.token,
                ending,
                self.expires_at,
                self.window,
            )
            .await;
        }
        self.ending = None;
    }
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        let Some(ending) = self.ending.take() else {
            return;
        };
        let (Some(store), Ok(runtime)) =
            (self.store.shared(), tokio::runtime::Handle::try_current())
        else {
            tracing::warn!(key = ?self.key, "an idempotent result was being stored when its caller left, and the store cannot be shared; the claim lapses with its lease");
            return;
        };
        let (key, token, expires_at, window) =
            (self.key.clone(), self.token, self.expires_at, self.window);
        super::detach::spawn_tracked(&runtime, async move {
            finish(&*store, &key, token, &ending, expires_at, window).await;
        });
    }
}

/// The time from `now` to `then`, none if it has passed.
fn millis_until(now: Millis, then: Millis) -> Duration {
    Duration::from_millis(then.saturating_sub(now).max(0) as u64)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX / 4)
}

fn mismatched(ours: Option<Fingerprint>, theirs: Option<Fingerprint>) -> bool {
    matches!((ours, theirs), (Some(ours), Some(theirs)) if ours != theirs)
}

/// A stored result as a claim found it.
#[derive(Clone, Copy)]
enum Stored<'a> {
    /// Copied out of the store.
    Copied(&'a [u8]),
    /// Held in this process, shared by the replays.
    Shared(&'a SharedResult),
}

/// The answer of a stored result (stored by a request of fingerprint
/// `theirs`) to a request of fingerprint `ours`.
fn replay<T, E>(
    theirs: Option<Fingerprint>,
    stored: Stored<'_>,
    ours: Option<Fingerprint>,
    replies: &Replies<'_, T, E>,
) -> Result<T, E> {
    if mismatched(ours, theirs) {
        return Err(replies.error(IdempotencyError::PayloadMismatch));
    }
    let (payload, shared) = match stored {
        Stored::Copied(payload) => (payload, None),
        Stored::Shared(shared) => (shared.bytes(), Some(shared)),
    };
    let codec_error = |message: String| replies.error(IdempotencyError::Codec { message });
    let (outcome, tag, body) = unframe(payload).map_err(codec_error)?;
    stats::record(&stats::REPLAYS);
    match outcome {
        Outcome::Ok => decode_tagged(replies.codec, tag, body, shared).map_err(codec_error),
        Outcome::Err => {
            Err(decode_tagged(replies.error_codec, tag, body, shared).map_err(codec_error)?)
        }
    }
}

/// What happens to the record once the body has ended.
enum Ending {
    /// Store this encoded result.
    Complete(Vec<u8>),
    /// Give the key back, so that a retry runs again.
    Release,
    /// Leave the record as it is (a fenced claim, or a result that could
    /// not be encoded: the claim lapses with its lease).
    Keep,
}

fn encoded<V>(key: &RecordKey, outcome: Outcome, codec: &dyn ResultCodec<V>, value: &V) -> Ending {
    match frame(outcome, codec, value) {
        Ok(framed) => Ending::Complete(framed),
        Err(error) => {
            stats::record(&stats::STORE_FAILURES);
            tracing::error!(key = ?key, %error, "could not encode an idempotent result; the claim lapses with its lease");
            Ending::Keep
        }
    }
}

/// The pauses before each retry of a failed `complete` or `release`: a
/// transient failure (a busy database, a lock-wait timeout, a network blip)
/// must not lose a result that the body paid for. The fencing token makes
/// a repeated operation safe.
pub(crate) const STORE_RETRIES: [Duration; 3] = [
    Duration::from_millis(20),
    Duration::from_millis(100),
    Duration::from_millis(400),
];

/// Applies `ending` to the record at once, through the store's
/// [`immediate`](IdempotencyStore::immediate) operations: `false` if it has
/// none, or if its call failed (then [`finish`] applies it, with retries).
fn finish_now(
    store: &dyn IdempotencyStore,
    key: &RecordKey,
    token: u64,
    ending: &Ending,
    expires_at: Millis,
) -> bool {
    let Some(records) = store.immediate() else {
        return false;
    };
    let outcome = match ending {
        Ending::Keep => return true,
        Ending::Complete(payload) => records.complete_now(Completion {
            key,
            token,
            payload,
            expires_at,
        }),
        Ending::Release => records.release_now(key, token),
    };
    match outcome {
        Ok(applied) => {
            report(key, ending, Ok((applied, false)));
            true
        }
        Err(error) => {
            tracing::debug!(%error, "a store call failed; retrying");
            false
        }
    }
}

/// Applies `ending` to the record, retrying failed store calls while a
/// retry can end before `window` closes.
async fn finish(
    store: &dyn IdempotencyStore,
    key: &RecordKey,
    token: u64,
    ending: &Ending,
    expires_at: Millis,
    window: tokio::time::Instant,
) {
    let outcome = match ending {
        Ending::Keep => return,
        Ending::Complete(payload) => {
            let completion = Completion {
                key,
                token,
                payload,
                expires_at,
            };
            with_retries(window, || store.complete(completion)).await
        }
        Ending::Release => with_retries(window, || store.release(key, token)).await,
    };
    report(key, ending, outcome);
}

/// Logs and counts what came of `ending`: applied or not (and whether it
/// took a retry), or failed.
fn report(key: &RecordKey, ending: &Ending, outcome: Result<(bool, bool), StoreError>) {
    let what = match ending {
        Ending::Complete(_) => "store an idempotent result",
        Ending::Release | Ending::Keep => "release an idempotency claim",
    };
    match outcome {
        Ok((true, _)) => {}
        // An earlier attempt may have acted before its answer was lost.
        Ok((false, retried)) if retried => {
            tracing::debug!(key = ?key, "the token no longer holds after a retried store call; an earlier attempt acted");
        }
        Ok((false, _)) => {
            if matches!(ending, Ending::Complete(_)) {
                stats::record(&stats::LEASES_LOST);
                tracing::warn!(key = ?key, "the idempotency lease was lost before the result was stored");
            }
        }
        Err(error) => {
            stats::record(&stats::STORE_FAILURES);
            tracing::error!(key = ?key, %error, "could not {what}, retries included; the claim lapses with its lease");
        }
    }
}

/// Runs `operation` until it succeeds, at most `STORE_RETRIES.len() + 1`
/// times and while the next pause ends before `window`; the success, and
/// whether it took a retry.
async fn with_retries<'a, R>(
    window: tokio::time::Instant,
    mut operation: impl FnMut() -> StoreFuture<'a, R>,
) -> Result<(R, bool), StoreError> {
    let mut pauses = STORE_RETRIES.iter();
    let mut retried = false;
    loop {
        match operation().await {
            Ok(value) => return Ok((value, retried)),
            Err(error) => match pauses
                .next()
                .filter(|pause| tokio::time::Instant::now() + **pause < window)
            {
                Some(pause) => {
                    tracing::debug!(%error, "a store call failed; retrying");
                    tokio::time::sleep(*pause).await;
                    retried = true;
                }
                None => return Err(error),
            },
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
            let until = claim.clock().now_millis() + millis(lease);
            match store.renew(key, token, until).await {
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
