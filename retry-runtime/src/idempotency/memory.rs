//! `MemoryStore`: records in this process, sharded and bounded.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use super::{
    Claim, ClaimRequest, FENCED_LEASE, Fingerprint, IdempotencyStore, Millis, RecordKey,
    StoreError, StoreFuture, StoredResult,
};

const SHARDS: usize = 16;

/// The default bound: records held at once, over all shards.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// An in-process store: right for a single replica, for tests, and as the
/// fallback when no store is configured. Records live in 16 shards, each
/// behind its own lock; records whose TTL ended are evicted when their shard
/// is full, and by [`purge_expired`](IdempotencyStore::purge_expired).
///
/// Bounded: a claim that finds its shard full of live records fails with a
/// store error (the request fails closed) rather than evicting a live result,
/// which could let a duplicate run twice.
///
/// ```
/// use retry_runtime::idempotency::MemoryStore;
/// let store = MemoryStore::new();
/// assert_eq!(store.len(), 0);
/// ```
#[derive(Debug)]
pub struct MemoryStore {
    shards: Arc<[Mutex<HashMap<RecordKey, Entry>>]>,
    shard_capacity: usize,
}

#[derive(Debug, Clone)]
struct Entry {
    token: u64,
    fingerprint: Option<Fingerprint>,
    lease_until: Millis,
    expires_at: Millis,
    payload: Option<Vec<u8>>,
}

impl Entry {
    /// Whether its TTL has ended: free for any claim, and purged.
    fn expired(&self, now: Millis) -> bool {
        self.expires_at <= now
    }

    /// Whether a claim at `now` with `fingerprint` takes it over: its TTL
    /// ended, or it is a claim whose lease lapsed and whose payload is not
    /// known to differ (a lapsed claim still keeps its key from another
    /// payload until its TTL ends).
    fn takeable(&self, now: Millis, fingerprint: Option<Fingerprint>) -> bool {
        let differs = matches!(
            (self.fingerprint, fingerprint),
            (Some(theirs), Some(ours)) if theirs != ours
        );
        self.expired(now) || (self.payload.is_none() && self.lease_until <= now && !differs)
    }
}

impl MemoryStore {
    /// A store holding up to [`DEFAULT_CAPACITY`] records.
    pub fn new() -> MemoryStore {
        MemoryStore::with_capacity(DEFAULT_CAPACITY)
    }

    /// A store holding up to `capacity` records (at least one per shard).
    pub fn with_capacity(capacity: usize) -> MemoryStore {
        MemoryStore {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            shard_capacity: capacity.div_ceil(SHARDS).max(1),
        }
    }

    /// The records held, expired ones included until evicted.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).len()).sum()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, key: &RecordKey) -> MutexGuard<'_, HashMap<RecordKey, Entry>> {
        // The key is already a SHA-256: its first byte is uniform.
        lock(&self.shards[usize::from(key.hash()[0]) % SHARDS])
    }

    fn claim_now(&self, request: &ClaimRequest<'_>) -> Result<Claim, StoreError> {
        let mut shard = self.shard(request.key);
        let new_entry = || Entry {
            token: request.token,
            fingerprint: request.fingerprint,
            lease_until: request.lease_until,
            expires_at: request.expires_at,
            payload: None,
        };
        if let Some(entry) = shard.get_mut(request.key) {
            if entry.takeable(request.now, request.fingerprint) {
                *entry = new_entry();
                return Ok(Claim::Claimed);
            }
            return Ok(match &entry.payload {
                Some(payload) => Claim::Completed(StoredResult {
                    fingerprint: entry.fingerprint,
                    payload: payload.clone(),
                }),
                None => Claim::InProgress {
                    lease_until: entry.lease_until,
                    fingerprint: entry.fingerprint,
                },
            });
        }
        if shard.len() >= self.shard_capacity {
            shard.retain(|_, entry| !entry.expired(request.now));
            if shard.len() >= self.shard_capacity {
                return Err(StoreError::msg(format!(
                    "memory store full ({} live records in this shard); raise its capacity or shorten the TTL",
                    shard.len()
                )));
            }
        }
        shard.insert(request.key.clone(), new_entry());
        Ok(Claim::Claimed)
    }

    fn with_owned<R>(
        &self,
        key: &RecordKey,
        token: u64,
        act: impl FnOnce(&mut HashMap<RecordKey, Entry>) -> R,
    ) -> Option<R> {
        let mut shard = self.shard(key);
        let owned = shard
            .get(key)
            .is_some_and(|entry| entry.token == token && entry.payload.is_none());
        owned.then(|| act(&mut shard))
    }

    /// Deletes the claim held under `token`, unless it is fenced (its
    /// effects committed: a retry must not run it again).
    fn release_now(&self, key: &RecordKey, token: u64) -> bool {
        self.with_owned(key, token, |shard| {
            if shard.get(key)?.lease_until == FENCED_LEASE {
                return None;
            }
            shard.remove(key)
        })
        .flatten()
        .is_some()
    }
}

impl Default for MemoryStore {
    fn default() -> MemoryStore {
        MemoryStore::new()
    }
}

impl IdempotencyStore for MemoryStore {
    fn claim<'a>(&'a self, request: &'a ClaimRequest<'a>) -> StoreFuture<'a, Claim> {
        let result = self.claim_now(request);
        Box::pin(std::future::ready(result))
    }

    fn complete<'a>(
        &'a self,
        key: &'a RecordKey,
        token: u64,
        payload: &'a [u8],
        expires_at: Millis,
    ) -> StoreFuture<'a, bool> {
        let stored = self
            .with_owned(key, token, |shard| {
                if let Some(entry) = shard.get_mut(key) {
                    entry.payload = Some(payload.to_vec());
                    entry.expires_at = expires_at;
                }
            })
            .is_some();
        Box::pin(std::future::ready(Ok(stored)))
    }

    fn release<'a>(&'a self, key: &'a RecordKey, token: u64) -> StoreFuture<'a, bool> {
        Box::pin(std::future::ready(Ok(self.release_now(key, token))))
    }

    fn renew<'a>(
        &'a self,
        key: &'a RecordKey,
        token: u64,
        lease_until: Millis,
    ) -> StoreFuture<'a, bool> {
        let renewed = self
            .with_owned(key, token, |shard| {
                let entry = shard.get_mut(key)?;
                // A fenced claim's lease never lapses: nothing to extend.
                (entry.lease_until != FENCED_LEASE).then(|| {
                    entry.lease_until = lease_until;
                    // A renewed claim outlives its lease: the TTL counts
                    // from completion, never cuts a running body short.
                    entry.expires_at = entry.expires_at.max(lease_until);
                })
            })
            .flatten()
            .is_some();
        Box::pin(std::future::ready(Ok(renewed)))
    }

    fn release_detached(&self, key: RecordKey, token: u64) {
        self.release_now(&key, token);
    }

    /// A handle to the same records.
    fn shared(&self) -> Option<Arc<dyn IdempotencyStore>> {
        Some(Arc::new(MemoryStore {
            shards: Arc::clone(&self.shards),
            shard_capacity: self.shard_capacity,
        }))
    }

    fn purge_expired(&self, now: Millis) -> StoreFuture<'_, u64> {
        let mut purged = 0;
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            let before = shard.len();
            shard.retain(|_, entry| !entry.expired(now));
            purged += (before - shard.len()) as u64;
        }
        Box::pin(std::future::ready(Ok(purged)))
    }
}

/// A poisoned shard still holds consistent records: every update is a
/// single assignment, so a panic elsewhere cannot leave one half-written.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
