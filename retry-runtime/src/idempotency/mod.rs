//! Idempotency: a request that arrives twice runs once.
//!
//! A client that retries a write (a payment) cannot know whether its first
//! attempt ran: the server may have executed it and lost the answer. It sends
//! the same idempotency key on every attempt; the server records the key
//! before running the handler and the result after, in a store shared by
//! every replica, and answers duplicates with the recorded result.
//!
//! # The algorithm
//!
//! 1. The record key is the SHA-256 of the scope and the client's key
//!    ([`RecordKey`]): fixed-size, no raw client input stored.
//! 2. [`claim`](IdempotencyStore::claim) inserts an in-progress record with a
//!    fresh fencing token and a lease, under the store's unique constraint.
//!    A completed, unexpired record is replayed (after its fingerprint is
//!    compared); a live claim makes the duplicate fail with `InProgress` or
//!    wait; an expired lease or TTL is taken over atomically.
//! 3. The body runs while the lease is renewed every third of its length.
//! 4. Success: [`complete`](IdempotencyStore::complete) stores the result if
//!    the token still holds. Error: stored if its code is in `cache_errors`,
//!    else the claim is released so that a retry runs again.
//! 5. The body's result is returned even if storing it failed (logged and
//!    counted in [`stats`]).
//!
//! # Guarantees
//!
//! - While its process lives, a request's body runs at most once per key
//!   and scope within the TTL; every duplicate gets its stored result, or
//!   `InProgress` while it runs.
//! - A store that is down fails closed: the body does not run unprotected.
//! - If the process dies (or stalls longer than the lease) after claiming,
//!   the claim lapses with its lease and a later duplicate runs the body
//!   again: the body may have run partly or fully once before. Keep handlers'
//!   effects transactional (as the payments demo does) or make the lease
//!   longer than any stall.
//! - A dropped future or a panic before the body ends releases the claim;
//!   after the body ends the claim is never released (only its lease lapses).
//! - Fencing: a caller whose lease was taken over can neither store its
//!   result over the new owner's nor release the new owner's claim.
//! - Expiry is enforced by the conditions of each operation (`now` against
//!   the lease and the TTL), never by trusting a store to remove rows.

mod codec;
#[cfg(any(feature = "tonic", feature = "axum"))]
mod completion_layer;
#[cfg(feature = "testing")]
pub mod conformance;
mod detach;
mod engine;
mod error;
mod fence;
#[cfg(feature = "axum")]
mod http_layer;
mod inflight;
mod key;
mod memory;
#[cfg(feature = "redis")]
mod redis_store;
mod shape;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
mod sql;
mod stats;
mod store;

pub use codec::{CachedJsonCodec, JsonCodec, NotStored, ResultCodec};
#[cfg(feature = "tonic")]
pub use codec::{ProstCodec, StatusCodec};
#[cfg(any(feature = "tonic", feature = "axum"))]
pub use completion_layer::{RunToCompletion, RunToCompletionFuture, RunToCompletionLayer};
pub use detach::drain;
pub(crate) use engine::{Call, OwnedReplies, Replies, execute_to_completion, execute_with};
pub use engine::{
    Idempotency, IdempotencyConfig, InProgressPolicy, default_store, set_default_store,
};
pub use error::IdempotencyError;
pub use fence::{CurrentClaim, FENCED_LEASE, current_claim, fenced_lease};
#[cfg(feature = "axum")]
pub use http_layer::{
    DEFAULT_MAX_BODY, IDEMPOTENCY_KEY, IDEMPOTENCY_REPLAYED, IdempotencyLayer, Idempotent,
};
pub use key::{Fingerprint, MAX_KEY_BYTES, RecordKey};
pub use memory::{DEFAULT_CAPACITY, MemoryStore};
#[cfg(feature = "redis")]
pub use redis_store::RedisStore;
#[cfg(feature = "mysql")]
pub use sql::MySqlStore;
#[cfg(feature = "postgres")]
pub use sql::PostgresStore;
#[cfg(feature = "sqlite")]
pub use sql::SqliteStore;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub(crate) use sql::in_transaction;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub use sql::{ACQUIRE_TIMEOUT, BodyTransaction, DEFAULT_TABLE, SqlBackend, SqlStore};
pub use stats::{IdempotencyStats, stats};
pub use store::{
    Claim, ClaimRequest, Clock, Completion, IdempotencyStore, ImmediateClaim, ImmediateStore,
    Millis, SharedResult, StoreError, StoreFuture, StoredResult, SystemClock, now_millis,
};
