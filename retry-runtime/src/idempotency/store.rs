//! The store trait: atomic operations on one record each.

use std::{error::Error, fmt, future::Future, pin::Pin};

use super::{Fingerprint, RecordKey};

/// The future of a store operation (boxed, so that stores are object-safe and
/// can be shared as `Arc<dyn IdempotencyStore>`).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Milliseconds since the Unix epoch: the clock every replica and store shares.
pub type Millis = i64;

/// The current time in [`Millis`], as the system's clock last ticked.
///
/// On Linux it is the kernel's coarse realtime clock
/// (`CLOCK_REALTIME_COARSE`, read from the vDSO): it lags the precise
/// clock by at most one tick (1 to 4 ms) and costs a few nanoseconds
/// against tens, on every claim and completion. Stamps for leases and
/// TTLs of seconds need no finer clock, and a clock that is off (by a tick
/// or by a replica's skew) never lets a body run twice: completion is
/// fenced by the claim's token, not by the time. Elsewhere it is
/// [`SystemTime::now`](std::time::SystemTime::now).
///
/// ```
/// use std::time::{SystemTime, UNIX_EPOCH};
/// use steadfast::idempotency::now_millis;
///
/// let precise = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
/// assert!((precise - now_millis()).abs() < 1_000);
/// ```
pub fn now_millis() -> Millis {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
        now.tv_sec * 1_000 + now.tv_nsec / 1_000_000
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as Millis)
    }
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
///     Ok(ImmediateClaim::Completed { payload, .. }) => assert_eq!(payload.bytes(), b"receipt"),
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
        payload: SharedResult,
    },
}

/// A result stored in this process and shared by its replays
/// ([`ImmediateClaim::Completed`]): its encoded bytes, and room for the
/// value a replay decoded from them, both shared with the store's record
/// (cloning a `SharedResult` clones two `Arc`s). A codec of a type that can
/// be cloned keeps the first replay's value there, so that the next replays
/// clone it rather than decode the bytes again
/// ([`ResultCodec::decode_shared`](super::ResultCodec::decode_shared)).
///
/// A value is kept at most once, and found only as the type it was kept
/// as: a replay that asks for another type decodes the bytes.
///
/// ```
/// use steadfast::idempotency::SharedResult;
/// let shared = SharedResult::new(b"{\"amount\":5}");
/// assert_eq!(shared.bytes(), b"{\"amount\":5}");
/// assert_eq!(shared.decoded::<u64>(), None);
/// shared.keep(5_u64);
/// shared.keep(6_u64); // the first value stays
/// assert_eq!(shared.decoded::<u64>(), Some(&5));
/// assert_eq!(shared.clone().decoded::<u64>(), Some(&5), "clones share it");
/// assert_eq!(shared.decoded::<u32>(), None);
/// ```
#[derive(Clone)]
pub struct SharedResult {
    bytes: std::sync::Arc<[u8]>,
    decoded: std::sync::Arc<DecodedSlot>,
}

/// Where a replay keeps the value it decoded.
pub(crate) type DecodedSlot = std::sync::OnceLock<Box<dyn std::any::Any + Send + Sync>>;

impl SharedResult {
    /// A stored result of these bytes, with no value kept.
    pub fn new(bytes: &[u8]) -> SharedResult {
        SharedResult::from_parts(bytes.into(), Default::default())
    }

    /// A stored result of `bytes` that keeps its value in `decoded`.
    pub(crate) fn from_parts(
        bytes: std::sync::Arc<[u8]>,
        decoded: std::sync::Arc<DecodedSlot>,
    ) -> SharedResult {
        SharedResult { bytes, decoded }
    }

    /// The encoded result (type tag included).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The value a replay kept, if it was kept as a `T`.
    pub fn decoded<T: 'static>(&self) -> Option<&T> {
        self.decoded.get()?.downcast_ref()
    }

    /// Keeps `value` for the next replays, unless a value is kept already.
    pub fn keep<T: Send + Sync + 'static>(&self, value: T) {
        let _ = self.decoded.set(Box::new(value));
    }
}

/// Its bytes' length, and whether a value is kept.
impl fmt::Debug for SharedResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedResult")
            .field("bytes", &self.bytes.len())
            .field("decoded", &self.decoded.get().is_some())
            .finish()
    }
}

/// Equal when their bytes are (a kept value is a copy of what they hold).
impl PartialEq for SharedResult {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for SharedResult {}

impl ImmediateClaim {
    /// The [`Claim`] the store's futures answer for the same record (a
    /// stored result copied out).
    ///
    /// ```
    /// use steadfast::idempotency::{Claim, ImmediateClaim, SharedResult};
    /// let found = ImmediateClaim::Completed { fingerprint: None, payload: SharedResult::new(b"receipt") };
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
                payload: payload.bytes().to_vec(),
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

#[cfg(test)]
mod tests {
    use super::now_millis;
    use std::time::{SystemTime, UNIX_EPOCH};

    fn precise() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    }

    /// The coarse clock is never ahead of the precise one and lags it by
    /// at most a tick (10 ms at the slowest kernel tick, 100 Hz).
    #[test]
    fn now_millis_lags_the_precise_clock_by_at_most_a_tick() {
        for _ in 0..1_000 {
            let before = precise();
            let now = now_millis();
            let after = precise();
            assert!(now <= after, "ahead: {now} > {after}");
            assert!(now >= before - 11, "lags by {} ms", before - now);
        }
    }
}
