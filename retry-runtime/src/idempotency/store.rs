//! The store trait: atomic operations on one record each.

use std::{error::Error, fmt, future::Future, pin::Pin};

use super::{Fingerprint, RecordKey};

/// The future of a store operation (boxed, so that stores are object-safe and
/// can be shared as `Arc<dyn IdempotencyStore>`).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Milliseconds since the Unix epoch: the clock every replica and store shares.
pub type Millis = i64;

/// The current time in [`Millis`].
pub fn now_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as Millis)
}

/// Where the idempotency engine reads the time it stamps records with and
/// compares leases and TTLs against: [`SystemClock`] in production; a clock
/// of the test's own for exact TTL and lease tests on tokio's paused time,
/// or for a simulation (`IdempotencyConfig::with_clock`).
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now, in [`Millis`].
    fn now_millis(&self) -> Millis;
}

/// The system's clock ([`now_millis`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> Millis {
        now_millis()
    }
}

/// A request to claim a record.
#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    /// The record.
    pub key: &'a RecordKey,
    /// The fencing token to install if the claim is ours.
    pub token: u64,
    /// The request's fingerprint, stored with the claim.
    pub fingerprint: Option<Fingerprint>,
    /// Now, by the caller's clock.
    pub now: Millis,
    /// When the claim lapses unless renewed.
    pub lease_until: Millis,
    /// When the record (claim or result) expires whatever its state.
    pub expires_at: Millis,
}

/// A result to store under a claim: what [`IdempotencyStore::complete`]
/// is given.
#[derive(Debug, Clone, Copy)]
pub struct Completion<'a> {
    /// The record.
    pub key: &'a RecordKey,
    /// The fencing token the claim was made under.
    pub token: u64,
    /// The encoded result (type tag included).
    pub payload: &'a [u8],
    /// When the result expires (the TTL, counted from completion).
    pub expires_at: Millis,
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The record is ours, under the request's token: it was absent, or its
    /// lease or TTL had expired and we took it over.
    Claimed,
    /// A result is stored and unexpired: replay it.
    Completed(StoredResult),
    /// Another caller holds a live claim, or a lapsed one made with another
    /// fingerprint (which guards its key from other payloads until its TTL
    /// ends; the engine answers `PayloadMismatch`).
    InProgress {
        /// When its lease lapses.
        lease_until: Millis,
        /// Its fingerprint.
        fingerprint: Option<Fingerprint>,
    },
}

/// A stored result, as the codec encoded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResult {
    /// The fingerprint of the request that produced it.
    pub fingerprint: Option<Fingerprint>,
    /// The encoded result (type tag included).
    pub payload: Vec<u8>,
}

/// A store of idempotency records shared by every replica of a service.
///
/// Each operation is one atomic step on one record; the fencing token given
/// at claim time must still hold for `complete`, `release` and `renew` to
/// act, so that a caller whose lease expired (and was taken over) can no
/// longer overwrite the new owner's record.
///
/// Stores must enforce expiry in their conditions (`now` against
/// `lease_until` and `expires_at`), never trust a background expiry to
/// have removed a record.
pub trait IdempotencyStore: Send + Sync {
    /// Inserts a claim, takes over an expired record (`expires_at <= now`,
    /// whatever its payload) or a claim whose lease lapsed (unless both
    /// fingerprints are set and differ), or reports the record found.
    fn claim<'a>(&'a self, request: &'a ClaimRequest<'a>) -> StoreFuture<'a, Claim>;

    /// Stores the result under the completion's token; `false` if the token
    /// no longer holds.
    fn complete<'a>(&'a self, completion: Completion<'a>) -> StoreFuture<'a, bool>;

    /// Deletes the claim held under `token`, so that a retry runs again;
    /// `false` if the token no longer holds.
    fn release<'a>(&'a self, key: &'a RecordKey, token: u64) -> StoreFuture<'a, bool>;

    /// Extends the lease held under `token`, and raises the record's
    /// `expires_at` to at least `lease_until` (a claim being renewed never
    /// expires); `false` if the token no longer holds.
    fn renew<'a>(&'a self, key: &'a RecordKey, token: u64, until: Millis) -> StoreFuture<'a, bool>;

    /// Deletes every record expired at `now`; returns how many.
    fn purge_expired(&self, now: Millis) -> StoreFuture<'_, u64>;

    /// A handle to this store that owns what it needs (a clone of its pool,
    /// an `Arc` of its map), for work that outlives its caller: a body that
    /// runs to its end after the caller's future was dropped, a result
    /// stored after the caller went away. `None`, the default, keeps such
    /// work in the caller's future, where a drop cancels it; every store of
    /// steadfast returns `Some`.
    fn shared(&self) -> Option<std::sync::Arc<dyn IdempotencyStore>> {
        None
    }

    /// The identity of the records this handle reaches: equal for every
    /// handle to the same records (its clones, its [`shared`] handles,
    /// `Arc`s and references of it), so that an in-process duplicate finds
    /// the request it waits for and is woken when it ends instead of
    /// polling the store. The default, the address of `self`, suits a store
    /// that is not cloned.
    ///
    /// [`shared`]: IdempotencyStore::shared
    fn identity(&self) -> usize {
        std::ptr::from_ref(self).cast::<()>() as usize
    }

    /// Releases a claim from a destructor (a dropped or panicked body),
    /// where nothing can be awaited: synchronously, or in a task of its own.
    /// The default does nothing, and the claim lapses with its lease.
    fn release_detached(&self, key: RecordKey, token: u64) {
        let _ = (key, token);
    }

    /// This store's operations that answer at once, without awaiting
    /// (records in this process, behind a lock): the engine then claims,
    /// completes and releases through them, with no boxed future and no
    /// copy of a replayed result. `None`, the default, keeps every
    /// operation on the futures above; [`MemoryStore`](super::MemoryStore)
    /// returns `Some`.
    ///
    /// ```
    /// use steadfast::idempotency::{IdempotencyStore, MemoryStore};
    /// assert!(MemoryStore::new().immediate().is_some());
    /// ```
    fn immediate(&self) -> Option<&dyn ImmediateStore> {
        None
    }
}

/// The operations of a store that answers without awaiting: those of
/// [`IdempotencyStore`], with the same conditions and fencing, run to their
/// end before they return (named `…_now`, so that a store with both keeps
/// its method names unambiguous). Only for stores whose every operation is a
/// short step in this process (a lock, a map): the engine calls them on the
/// caller's task, where a blocking call would stall the runtime.
///
/// A store that has them returns itself from
/// [`IdempotencyStore::immediate`]; its futures must answer the same (they
/// are what stores that wrap it, and the conformance suite, call). An `Err`
/// means that the operation did not act: the engine then retries a
/// `complete` or a `release` through the futures.
///
/// ```
/// use steadfast::idempotency::{Claim, ClaimRequest, Completion, ImmediateClaim, IdempotencyStore, MemoryStore, RecordKey};
/// let store = MemoryStore::new();
/// let records = store.immediate().expect("a MemoryStore answers at once");
/// let key = RecordKey::new("payments", "order-17").unwrap();
/// let request = ClaimRequest { key: &key, token: 7, fingerprint: None, now: 0, lease_until: 30_000, expires_at: 86_400_000 };
/// assert!(matches!(records.claim_now(&request), Ok(ImmediateClaim::Found(Claim::Claimed))));
/// let completion = Completion { key: &key, token: 7, payload: b"receipt", expires_at: 86_400_000 };
/// assert!(records.complete_now(completion).unwrap());
/// match records.claim_now(&ClaimRequest { token: 8, ..request }) {
///     Ok(ImmediateClaim::Completed { payload, .. }) => assert_eq!(&payload[..], b"receipt"),
///     other => panic!("{other:?}"),
/// }
/// ```
pub trait ImmediateStore: Send + Sync {
    /// As [`IdempotencyStore::claim`]; a stored result comes shared, not
    /// copied.
    fn claim_now(&self, request: &ClaimRequest<'_>) -> Result<ImmediateClaim, StoreError>;

    /// As [`IdempotencyStore::complete`].
    fn complete_now(&self, completion: Completion<'_>) -> Result<bool, StoreError>;

    /// As [`IdempotencyStore::release`].
    fn release_now(&self, key: &RecordKey, token: u64) -> Result<bool, StoreError>;
}

/// What an [`ImmediateStore`]'s claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImmediateClaim {
    /// A claim won, or one held by another caller, as the futures answer.
    Found(Claim),
    /// A result is stored and unexpired: replay it.
    Completed {
        /// The fingerprint of the request that produced it.
        fingerprint: Option<Fingerprint>,
        /// The encoded result (type tag included), shared with the store.
        payload: std::sync::Arc<[u8]>,
    },
}

impl ImmediateClaim {
    /// The [`Claim`] the store's futures answer for the same record (a
    /// stored result copied out).
    ///
    /// ```
    /// use steadfast::idempotency::{Claim, ImmediateClaim};
    /// let found = ImmediateClaim::Completed { fingerprint: None, payload: b"receipt"[..].into() };
    /// assert!(matches!(found.into_claim(), Claim::Completed(stored) if stored.payload == b"receipt"));
    /// ```
    pub fn into_claim(self) -> Claim {
        match self {
            ImmediateClaim::Found(claim) => claim,
            ImmediateClaim::Completed {
                fingerprint,
                payload,
            } => Claim::Completed(StoredResult {
                fingerprint,
                payload: payload.to_vec(),
            }),
        }
    }
}

macro_rules! forward_store {
    ($([$($generics:tt)*] $wrapper:ty),*) => {$(
impl<$($generics)*> IdempotencyStore for $wrapper {
    fn claim<'a>(&'a self, request: &'a ClaimRequest<'a>) -> StoreFuture<'a, Claim> {
        (**self).claim(request)
    }

    fn complete<'a>(&'a self, completion: Completion<'a>) -> StoreFuture<'a, bool> {
        (**self).complete(completion)
    }

    fn release<'a>(&'a self, key: &'a RecordKey, token: u64) -> StoreFuture<'a, bool> {
        (**self).release(key, token)
    }

    fn renew<'a>(&'a self, key: &'a RecordKey, token: u64, until: Millis) -> StoreFuture<'a, bool> {
        (**self).renew(key, token, until)
    }

    fn purge_expired(&self, now: Millis) -> StoreFuture<'_, u64> {
        (**self).purge_expired(now)
    }

    fn release_detached(&self, key: RecordKey, token: u64) {
        (**self).release_detached(key, token);
    }

    fn shared(&self) -> Option<std::sync::Arc<dyn IdempotencyStore>> {
        (**self).shared()
    }

    fn identity(&self) -> usize {
        (**self).identity()
    }

    fn immediate(&self) -> Option<&dyn ImmediateStore> {
        (**self).immediate()
    }
}
    )*};
}

// A `LazyLock` too, for a store in a `static`:
// `static STORE: LazyLock<MemoryStore> = LazyLock::new(MemoryStore::new);`
// and `#[idempotent(key = …, store = STORE)]`.
forward_store!(
    [S: IdempotencyStore + ?Sized] std::sync::Arc<S>,
    [S: IdempotencyStore + ?Sized] &S,
    [S: IdempotencyStore + ?Sized] Box<S>,
    [S: IdempotencyStore, F: FnOnce() -> S + Send] std::sync::LazyLock<S, F>
);

/// A store that failed: unreachable, or answered something unexpected.
/// Requests fail closed on it: the handler is not run unprotected.
#[derive(Debug)]
pub struct StoreError {
    message: String,
    source: Option<Box<dyn Error + Send + Sync>>,
}

impl StoreError {
    /// A failure described by `message`, caused by `source`.
    pub fn new(
        message: impl Into<String>,
        source: impl Into<Box<dyn Error + Send + Sync>>,
    ) -> StoreError {
        StoreError {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// A failure described by `message` alone.
    pub fn msg(message: impl Into<String>) -> StoreError {
        StoreError {
            message: message.into(),
            source: None,
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "idempotency store: {}: {source}", self.message),
            None => write!(f, "idempotency store: {}", self.message),
        }
    }
}

impl Error for StoreError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn Error + 'static))
    }
}

#[cfg(any(
    feature = "sqlite",
    feature = "postgres",
    feature = "mysql",
    feature = "redis"
))]
/// Runs `release` in a task of the current tokio runtime, if any; logs its failure.
pub(crate) fn spawn_release<F>(release: F)
where
    F: std::future::Future<Output = Result<bool, StoreError>> + Send + 'static,
{
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            if let Err(error) = release.await {
                tracing::warn!(%error, "could not release an idempotency claim; it lapses with its lease");
            }
        });
    }
}
