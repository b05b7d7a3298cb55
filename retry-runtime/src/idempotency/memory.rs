//! `MemoryStore`: records in this process, sharded and bounded.

use std::{
    borrow::Borrow,
    collections::{HashMap, hash_map::RandomState},
    hash::{BuildHasher, BuildHasherDefault, Hash, Hasher},
    sync::{Arc, Mutex, MutexGuard},
};

use super::{
    Claim, ClaimRequest, Completion, FENCED_LEASE, Fingerprint, IdempotencyStore, ImmediateClaim,
    ImmediateStore, Millis, RecordKey, SharedResult, StoreError, StoreFuture, store::DecodedSlot,
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
/// which could let a duplicate run twice. Each scope (a handler, or a tenant
/// under `IdempotencyLayer::scope_by`) is bounded too, so that one scope
/// cannot fill the store for the others: a claim of a scope at its bound
/// fails the same way, while other scopes still claim.
///
/// A key's shard, and its place in the shard's map, are chosen by one hash
/// per operation, keyed with a random seed per store, so that a client
/// cannot choose keys that all land in one shard (filling it would refuse a
/// sixteenth of every other client's keys) or in one bucket of its map.
///
/// It answers at once ([`IdempotencyStore::immediate`]): the engine claims
/// and completes without a boxed future, each operation one lock and one
/// lookup, and a replay shares the stored result rather than copying it.
///
/// ```
/// use steadfast::idempotency::MemoryStore;
/// let store = MemoryStore::with_capacity(10_000).with_scope_capacity(1_000);
/// assert_eq!(store.len(), 0);
/// ```
///
/// # Default
/// [`DEFAULT_CAPACITY`] records; a scope holds at most a quarter of the
/// capacity (25 000 by default). A store with a single scope (one handler,
/// no tenants) should give it the whole capacity with
/// [`with_scope_capacity`](MemoryStore::with_scope_capacity).
#[derive(Debug)]
pub struct MemoryStore {
    shards: Arc<[Mutex<Shard>]>,
    shard_capacity: usize,
    scope_shard_capacity: usize,
    placement: RandomState,
}

/// The records of one shard, and how many of them each scope holds.
#[derive(Debug, Default)]
struct Shard {
    records: HashMap<Slot, Entry, BuildHasherDefault<Prehashed>>,
    per_scope: HashMap<String, usize>,
}

/// A record's key in a shard's map, with the store's keyed hash of it,
/// worked out once per operation: the map hashes by it, and the shard is
/// chosen by other bits of it.
#[derive(Debug)]
struct Slot {
    hash: u64,
    key: RecordKey,
}

/// A key to find in a shard's map: a [`Slot`], or a caller's key and its
/// hash (looked up without cloning the key).
trait Lookup {
    fn hash(&self) -> u64;
    fn key(&self) -> &RecordKey;
}

impl Lookup for Slot {
    fn hash(&self) -> u64 {
        self.hash
    }

    fn key(&self) -> &RecordKey {
        &self.key
    }
}

impl Lookup for (u64, &RecordKey) {
    fn hash(&self) -> u64 {
        self.0
    }

    fn key(&self) -> &RecordKey {
        self.1
    }
}

impl<'a> Borrow<dyn Lookup + 'a> for Slot {
    fn borrow(&self) -> &(dyn Lookup + 'a) {
        self
    }
}

// `Slot` and `dyn Lookup` hash and compare alike, as `Borrow` requires.
impl Hash for dyn Lookup + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(Lookup::hash(self));
    }
}

impl PartialEq for dyn Lookup + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for dyn Lookup + '_ {}

impl Hash for Slot {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialEq for Slot {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for Slot {}

/// The hasher of a shard's map: its keys come hashed ([`Slot`]).
#[derive(Debug, Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn write(&mut self, bytes: &[u8]) {
        // Not reached (slots write one `u64`); a fold, should it be.
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl Shard {
    fn scope_len(&self, scope: &str) -> usize {
        self.per_scope.get(scope).copied().unwrap_or(0)
    }

    /// Inserts a record not yet held, and counts it for its scope.
    fn insert(&mut self, slot: Slot, entry: Entry) {
        let Shard { records, per_scope } = self;
        match per_scope.get_mut(slot.key.scope()) {
            Some(count) => *count += 1,
            None => {
                per_scope.insert(slot.key.scope().to_owned(), 1);
            }
        }
        records.insert(slot, entry);
    }

    fn remove(&mut self, hash: u64, key: &RecordKey) -> Option<Entry> {
        let removed = self.records.remove(&(hash, key) as &dyn Lookup)?;
        self.forget(key.scope());
        Some(removed)
    }

    /// Counts one record of `scope` less.
    fn forget(&mut self, scope: &str) {
        if let Some(count) = self.per_scope.get_mut(scope) {
            *count -= 1;
            if *count == 0 {
                self.per_scope.remove(scope);
            }
        }
    }

    /// Evicts the records whose TTL has ended at `now` (a lapsed claim
    /// keeps its key from another payload until then); returns how many.
    fn evict_expired(&mut self, now: Millis) -> usize {
        let before = self.records.len();
        let per_scope = &mut self.per_scope;
        self.records.retain(|slot, entry| {
            let keep = !entry.expired(now);
            if !keep && let Some(count) = per_scope.get_mut(slot.key.scope()) {
                *count -= 1;
            }
            keep
        });
        per_scope.retain(|_, count| *count > 0);
        before - self.records.len()
    }
}

#[derive(Debug, Clone)]
struct Entry {
    token: u64,
    fingerprint: Option<Fingerprint>,
    lease_until: Millis,
    expires_at: Millis,
    /// The stored result, shared with the replays that read it.
    payload: Option<Arc<[u8]>>,
    /// Where a replay keeps the value it decoded ([`SharedResult`]), made
    /// by the first replay (a fresh request allocates only the payload).
    decoded: Option<Arc<DecodedSlot>>,
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

    /// Whether `token` holds it as a claim (not yet completed).
    fn owned_by(&self, token: u64) -> bool {
        self.token == token && self.payload.is_none()
    }
}

impl MemoryStore {
    /// A store holding up to [`DEFAULT_CAPACITY`] records, a quarter of them
    /// per scope.
    pub fn new() -> MemoryStore {
        MemoryStore::with_capacity(DEFAULT_CAPACITY)
    }

    /// A store holding up to `capacity` records (at least one per shard), a
    /// quarter of them per scope (see
    /// [`with_scope_capacity`](MemoryStore::with_scope_capacity)).
    pub fn with_capacity(capacity: usize) -> MemoryStore {
        MemoryStore {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            shard_capacity: capacity.div_ceil(SHARDS).max(1),
            scope_shard_capacity: (capacity / 4).div_ceil(SHARDS).max(1),
            placement: RandomState::new(),
        }
    }

    /// Bounds the records one scope holds at once to `records` (at least
    /// one per shard), so that one scope (a tenant under
    /// `IdempotencyLayer::scope_by`, a busy handler) cannot fill the store
    /// for the others; a claim of a scope at its bound fails with a store
    /// error (the request fails closed), naming the scope. Like the
    /// capacity, the bound holds per shard (a sixteenth of it in each), so a
    /// scope may be refused a little before it holds `records` in all.
    ///
    /// # Default
    /// A quarter of the capacity.
    pub const fn with_scope_capacity(mut self, records: usize) -> MemoryStore {
        let per_shard = records.div_ceil(SHARDS);
        self.scope_shard_capacity = if per_shard == 0 { 1 } else { per_shard };
        self
    }

    /// The records held, expired ones included until evicted.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| lock(shard).records.len())
            .sum()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The store's hash of `key`, keyed by its random seed: the record
    /// hash alone is computed from public input (the scope and the client's
    /// key), so a client could pick keys of one shard, or of one bucket.
    fn hash_of(&self, key: &RecordKey) -> u64 {
        self.placement.hash_one(key.hash())
    }

    /// The shard of a key's hash: bits that the shard's map uses neither
    /// for its buckets (the low bits) nor for its tags (the top seven).
    fn shard_index(hash: u64) -> usize {
        (hash >> 48) as usize % SHARDS
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, Shard> {
        lock(&self.shards[Self::shard_index(hash)])
    }

    /// One lock, one hash and, when the key is held, one lookup.
    fn claim_record(&self, request: &ClaimRequest<'_>) -> Result<ImmediateClaim, StoreError> {
        let key = request.key;
        let hash = self.hash_of(key);
        let mut shard = self.shard(hash);
        let new_entry = || Entry {
            token: request.token,
            fingerprint: request.fingerprint,
            lease_until: request.lease_until,
            expires_at: request.expires_at,
            payload: None,
            decoded: None,
        };
        if let Some(entry) = shard.records.get_mut(&(hash, key) as &dyn Lookup) {
            if entry.takeable(request.now, request.fingerprint) {
                *entry = new_entry();
                return Ok(ImmediateClaim::Found(Claim::Claimed));
            }
            return Ok(match &entry.payload {
                Some(payload) => ImmediateClaim::Completed {
                    fingerprint: entry.fingerprint,
                    payload: SharedResult::from_parts(
                        Arc::clone(payload),
                        Arc::clone(entry.decoded.get_or_insert_with(Default::default)),
                    ),
                },
                None => ImmediateClaim::Found(Claim::InProgress {
                    lease_until: entry.lease_until,
                    fingerprint: entry.fingerprint,
                }),
            });
        }
        let scope = key.scope();
        let Shard { records, per_scope } = &mut *shard;
        let count = per_scope.get_mut(scope);
        let room = records.len() < self.shard_capacity
            && count
                .as_deref()
                .is_none_or(|held| *held < self.scope_shard_capacity);
        if room {
            // The common case: the scope's count found once, and bumped.
            match count {
                Some(held) => *held += 1,
                None => {
                    per_scope.insert(scope.to_owned(), 1);
                }
            }
            records.insert(
                Slot {
                    hash,
                    key: key.clone(),
                },
                new_entry(),
            );
            return Ok(ImmediateClaim::Found(Claim::Claimed));
        }
        shard.evict_expired(request.now);
        if shard.records.len() >= self.shard_capacity {
            return Err(StoreError::msg(format!(
                "memory store full ({} live records in this shard); raise its capacity or shorten the TTL",
                shard.records.len()
            )));
        }
        if shard.scope_len(scope) >= self.scope_shard_capacity {
            return Err(StoreError::msg(format!(
                "memory store: scope {scope:?} is full ({} live records of it in this shard, \
                 the bound per shard); raise MemoryStore::with_scope_capacity or shorten the TTL",
                shard.scope_len(scope)
            )));
        }
        shard.insert(
            Slot {
                hash,
                key: key.clone(),
            },
            new_entry(),
        );
        Ok(ImmediateClaim::Found(Claim::Claimed))
    }

    /// One lock, one lookup.
    fn complete_record(&self, completion: Completion<'_>) -> bool {
        let Completion { key, token, .. } = completion;
        let hash = self.hash_of(key);
        let mut shard = self.shard(hash);
        match shard.records.get_mut(&(hash, key) as &dyn Lookup) {
            Some(entry) if entry.owned_by(token) => {
                entry.payload = Some(Arc::from(completion.payload));
                entry.expires_at = completion.expires_at;
                true
            }
            _ => false,
        }
    }

    /// Deletes the claim held under `token`, unless it is fenced (its
    /// effects committed: a retry must not run it again).
    fn release_record(&self, key: &RecordKey, token: u64) -> bool {
        let hash = self.hash_of(key);
        let mut shard = self.shard(hash);
        let releasable = shard
            .records
            .get(&(hash, key) as &dyn Lookup)
            .is_some_and(|entry| entry.owned_by(token) && entry.lease_until < FENCED_LEASE);
        releasable && shard.remove(hash, key).is_some()
    }

    fn renew_record(&self, key: &RecordKey, token: u64, until: Millis) -> bool {
        let hash = self.hash_of(key);
        let mut shard = self.shard(hash);
        match shard.records.get_mut(&(hash, key) as &dyn Lookup) {
            // A fenced claim's lease never lapses: nothing to extend.
            Some(entry) if entry.owned_by(token) && entry.lease_until < FENCED_LEASE => {
                entry.lease_until = until;
                // A renewed claim outlives its lease: the TTL counts
                // from completion, never cuts a running body short.
                entry.expires_at = entry.expires_at.max(until);
                true
            }
            _ => false,
        }
    }
}

impl Default for MemoryStore {
    fn default() -> MemoryStore {
        MemoryStore::new()
    }
}

impl ImmediateStore for MemoryStore {
    fn claim_now(&self, request: &ClaimRequest<'_>) -> Result<ImmediateClaim, StoreError> {
        self.claim_record(request)
    }

    fn complete_now(&self, completion: Completion<'_>) -> Result<bool, StoreError> {
        Ok(self.complete_record(completion))
    }

    fn release_now(&self, key: &RecordKey, token: u64) -> Result<bool, StoreError> {
        Ok(self.release_record(key, token))
    }
}

impl IdempotencyStore for MemoryStore {
    fn claim<'a>(&'a self, request: &'a ClaimRequest<'a>) -> StoreFuture<'a, Claim> {
        let result = self.claim_record(request).map(ImmediateClaim::into_claim);
        Box::pin(std::future::ready(result))
    }

    fn complete<'a>(&'a self, completion: Completion<'a>) -> StoreFuture<'a, bool> {
        Box::pin(std::future::ready(Ok(self.complete_record(completion))))
    }

    fn release<'a>(&'a self, key: &'a RecordKey, token: u64) -> StoreFuture<'a, bool> {
        Box::pin(std::future::ready(Ok(self.release_record(key, token))))
    }

    fn renew<'a>(&'a self, key: &'a RecordKey, token: u64, until: Millis) -> StoreFuture<'a, bool> {
        Box::pin(std::future::ready(Ok(self.renew_record(key, token, until))))
    }

    fn release_detached(&self, key: RecordKey, token: u64) {
        self.release_record(&key, token);
    }

    /// Its records' map, shared by its handles.
    fn identity(&self) -> usize {
        Arc::as_ptr(&self.shards).cast::<()>() as usize
    }

    /// A handle to the same records.
    fn shared(&self) -> Option<Arc<dyn IdempotencyStore>> {
        Some(Arc::new(MemoryStore {
            shards: Arc::clone(&self.shards),
            shard_capacity: self.shard_capacity,
            scope_shard_capacity: self.scope_shard_capacity,
            placement: self.placement.clone(),
        }))
    }

    fn purge_expired(&self, now: Millis) -> StoreFuture<'_, u64> {
        let mut purged = 0;
        for shard in self.shards.iter() {
            purged += lock(shard).evict_expired(now) as u64;
        }
        Box::pin(std::future::ready(Ok(purged)))
    }

    fn immediate(&self) -> Option<&dyn ImmediateStore> {
        Some(self)
    }
}

/// A poisoned shard still holds consistent records: every update is a
/// single assignment, so a panic elsewhere cannot leave one half-written.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(scope: &'static str, count: usize) -> Vec<RecordKey> {
        (0..count)
            .map(|i| RecordKey::new(scope, &format!("key-{i}")).unwrap())
            .collect()
    }

    fn claim(store: &MemoryStore, key: &RecordKey, token: u64) -> Result<Claim, StoreError> {
        let now = 1_000;
        futures_ready(store.claim(&ClaimRequest {
            key,
            token,
            fingerprint: None,
            now,
            lease_until: now + 60_000,
            expires_at: now + 3_600_000,
        }))
    }

    /// A replay finds the value an earlier replay kept for the record it
    /// reads, never the one kept for a result the key held before.
    #[test]
    fn a_kept_value_goes_with_its_result() {
        let store = MemoryStore::new();
        let records = store.immediate().expect("it answers at once");
        let key = RecordKey::new("kept", "k").unwrap();
        let at = |now: Millis, token: u64| ClaimRequest {
            key: &key,
            token,
            fingerprint: None,
            now,
            lease_until: now + 1_000,
            expires_at: now + 10_000,
        };
        let completion = |token: u64, payload: &'static [u8], expires_at: Millis| Completion {
            key: &key,
            token,
            payload,
            expires_at,
        };
        let replay = |now: Millis| match records.claim_now(&at(now, 99)) {
            Ok(ImmediateClaim::Completed { payload, .. }) => payload,
            other => panic!("{other:?}"),
        };
        assert!(matches!(
            records.claim_now(&at(0, 1)),
            Ok(ImmediateClaim::Found(Claim::Claimed))
        ));
        assert!(
            records
                .complete_now(completion(1, b"first", 10_000))
                .unwrap()
        );
        replay(1).keep("first, decoded");
        assert_eq!(replay(2).decoded::<&str>(), Some(&"first, decoded"));
        // The TTL ends: the key is claimed again and holds another result.
        assert!(matches!(
            records.claim_now(&at(10_000, 2)),
            Ok(ImmediateClaim::Found(Claim::Claimed))
        ));
        assert!(
            records
                .complete_now(completion(2, b"second", 20_000))
                .unwrap()
        );
        let second = replay(10_001);
        assert_eq!(second.bytes(), b"second");
        assert_eq!(
            second.decoded::<&str>(),
            None,
            "the first result's value stayed behind"
        );
    }

    #[test]
    fn each_store_places_keys_by_its_own_seed() {
        let keys = keys("placement", 64);
        let (one, other) = (MemoryStore::new(), MemoryStore::new());
        let shards = |store: &MemoryStore| -> Vec<usize> {
            keys.iter()
                .map(|key| MemoryStore::shard_index(store.hash_of(key)))
                .collect()
        };
        assert_eq!(
            shards(&one),
            shards(&one),
            "a store places a key in one shard"
        );
        // Two unkeyed placements would agree on all 64 keys; two seeded ones
        // agree by chance with probability 16^-64.
        assert_ne!(shards(&one), shards(&other));
    }

    #[test]
    fn a_scope_at_its_bound_is_refused_while_another_still_claims() {
        // Four records of a scope per shard; room for 10 000 in all.
        let store = MemoryStore::with_capacity(10_000).with_scope_capacity(64);
        let mut held = 0;
        let mut refusal = None;
        for (token, key) in (1..).zip(&keys("tenant-a", 200)) {
            match claim(&store, key, token) {
                Ok(Claim::Claimed) => held += 1,
                Err(error) => refusal = Some(error),
                Ok(other) => panic!("a new key found {other:?}"),
            }
        }
        assert!(held <= 64, "{held} records of one scope");
        let refusal = refusal.expect("200 keys exceed a bound of 64").to_string();
        assert!(
            refusal.contains(r#"scope "tenant-a" is full"#)
                && refusal.contains("with_scope_capacity"),
            "{refusal}"
        );
        for (token, key) in (1000..).zip(&keys("tenant-b", 4)) {
            assert!(
                matches!(claim(&store, key, token), Ok(Claim::Claimed)),
                "another scope still claims"
            );
        }

        // Expired records no longer count against their scope.
        let purged = store.purge_expired(i64::MAX);
        let purged = futures_ready(purged).unwrap();
        assert_eq!(purged, held + 4);
        assert!(
            store
                .shards
                .iter()
                .all(|shard| lock(shard).per_scope.is_empty())
        );
        assert!(matches!(
            claim(&store, &keys("tenant-a", 1)[0], 1),
            Ok(Claim::Claimed)
        ));
    }

    #[test]
    fn releases_count_a_record_of_the_scope_less() {
        let store = MemoryStore::with_capacity(10_000).with_scope_capacity(16);
        let key = &keys("tenant-c", 1)[0];
        for token in 1..=3 {
            assert!(matches!(claim(&store, key, token), Ok(Claim::Claimed)));
            assert_eq!(
                lock(&store.shards[MemoryStore::shard_index(store.hash_of(key))])
                    .scope_len("tenant-c"),
                1
            );
            assert!(store.release_record(key, token));
            assert_eq!(
                lock(&store.shards[MemoryStore::shard_index(store.hash_of(key))])
                    .scope_len("tenant-c"),
                0
            );
        }
    }

    /// The value of a store future that is ready at once (as all of this
    /// store's are).
    fn futures_ready<T>(future: StoreFuture<'_, T>) -> Result<T, StoreError> {
        let mut future = future;
        let waker = std::task::Waker::noop();
        match future
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker))
        {
            std::task::Poll::Ready(result) => result,
            std::task::Poll::Pending => unreachable!("MemoryStore answers at once"),
        }
    }
}
