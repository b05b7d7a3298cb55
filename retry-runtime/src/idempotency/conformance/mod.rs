//! The conformance suite of [`IdempotencyStore`]s: run it against your own
//! store (feature `testing`).
//!
//! Every check is an async fn that takes the store, runs one property, and
//! panics with a message naming the check and the step that failed;
//! [`run_all`] runs them all in turn and prints one line per check. The
//! steadfast stores (`MemoryStore`, `SqliteStore`, `PostgresStore`,
//! `MySqlStore`) all pass it.
//!
//! ```
//! use std::sync::Arc;
//! use steadfast::idempotency::{MemoryStore, conformance};
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! // Your store here, over a table of its own.
//! let store = Arc::new(MemoryStore::new());
//! conformance::run_all(&*store).await;
//! // 64 claims of one key from 64 tasks: the tasks need `'static`, hence the `Arc`.
//! // Give it a multi-threaded runtime, so that the claims really run in parallel.
//! conformance::concurrent_claims_in_tasks(store).await;
//! # }
//! ```
//!
//! With the `steadfast` facade, enable its `testing` feature in your
//! dev-dependencies and call `steadfast::idempotency::conformance::run_all`
//! from a `#[tokio::test]`.
//!
//! # What is checked
//!
//! Store-level checks call the store directly, with explicit `now` values
//! (never sleeping), so that expiry is exact:
//!
//! - a claim is stored, completed and replayed ([`claim_complete_replay`]);
//! - a duplicate during a live claim sees `InProgress` with the claimer's
//!   lease and fingerprint ([`duplicate_sees_in_progress`]);
//! - a release frees the key, only under the owner's token ([`release_frees_the_key`]);
//! - a completed record past its `expires_at` is taken over ([`ttl_expiry`]);
//! - a claim past its `lease_until` is taken over with a new token
//!   ([`lease_expiry_and_takeover`]), and `renew` moves `lease_until`
//!   ([`renew_extends_the_lease`]);
//! - `renew` raises the record's expiry with its lease: a claim renewed past
//!   its TTL is still in progress, and its result then lives its own TTL
//!   ([`renew_raises_expiry`]);
//! - a lapsed claim is not taken over by a request with another fingerprint
//!   (it sees `InProgress` with the claimer's fingerprint), but is by the
//!   same fingerprint or when either is missing, and a record whose TTL
//!   ended is free for any payload ([`takeover_checks_the_fingerprint`]);
//! - fencing: a stale owner's late `complete`, `release` and `renew` are
//!   refused and leave the new owner's record intact ([`stale_owner_is_fenced`]);
//! - fingerprints are stored and returned as given ([`fingerprint_round_trip`]);
//! - records of different scopes never meet ([`scopes_are_separate`]);
//! - 64 concurrent claims of one key make exactly one owner
//!   ([`concurrent_claims`], and [`concurrent_claims_in_tasks`] from 64 tasks);
//! - `purge_expired` removes exactly the expired records and keeps live ones
//!   ([`purge_expired`]), also while 50 `complete`s of live claims run
//!   against it, which all succeed ([`purge_during_completes`]);
//! - a 1 MiB result round-trips byte for byte ([`large_result`]).
//!
//! A store that answers at once ([`IdempotencyStore::immediate`]) runs
//! these store-level checks a second time through its
//! [`ImmediateStore`](super::ImmediateStore) operations (its futures for
//! the rest), so that both ways to reach its records are held to the same
//! contract.
//!
//! Engine-level checks run [`Idempotency`](super::Idempotency) over the store (with the real
//! clock), so that they also check how the engine uses it:
//!
//! - sequential duplicates run the body once and replay its result
//!   ([`engine_replays_duplicates`]), concurrent ones too
//!   ([`engine_concurrent_duplicates`]);
//! - a payload mismatch gives `PayloadMismatch`, never the other payload's
//!   result ([`engine_payload_mismatch`]);
//! - an error releases the claim and a retry runs again ([`engine_error_releases_the_claim`]);
//! - a store that fails mid-call, through [`FailingStore`]: a failing claim
//!   fails closed ([`engine_fails_closed`]); a failing complete still returns
//!   the body's result and keeps the claim ([`engine_survives_failing_complete`]);
//!   a failing release still returns the body's error, and the claim lapses
//!   with its lease ([`engine_survives_failing_release`]).
//!
//! # The contract
//!
//! Times are the caller's `now`, in ms since the epoch: a store must compare
//! them, never its own clock. A lease or TTL ends at its instant: a record
//! is *expired* at `now` when `expires_at <= now`, and a claim (no result
//! yet) has *lapsed* when `lease_until <= now`. A claim takes over an
//! expired record whatever its payload, and a lapsed claim unless both
//! fingerprints are known and differ (then it reports `InProgress` with the
//! lapsed claim's lease and fingerprint). `purge_expired(now)` deletes
//! exactly the expired records (a lapsed claim is kept until its TTL ends).
//! `complete`, `release` and `renew` act only on a claim (no result yet)
//! held under their token, and report whether they acted; `renew` raises
//! `expires_at` to at least the new `lease_until`, so that a claim being
//! renewed never expires, and `complete` sets it (the TTL counts from
//! completion).
//!
//! # Running it
//!
//! - Inside a tokio runtime with the time driver (`#[tokio::test]`).
//! - Each check works under fresh random scopes, so one table serves every
//!   check, and runs again against the same table; the checks leave records
//!   behind, which expire within the hour (give the suite a table of its own).
//! - [`purge_expired`] works with times of January 2000, and
//!   [`purge_during_completes`] with times of January 2001, which no other
//!   check uses, so that they can count what they purge. They fail if
//!   another purge check runs at the same time on the same store, or if the
//!   store deletes records by its own clock in the background.

use super::{IdempotencyStore, Millis};

mod check;
mod engine_checks;
mod failing_store;
mod immediate;
mod race;
mod store_checks;

pub use engine_checks::*;
pub use failing_store::{FailingStore, StoreCalls};
pub use store_checks::*;

/// How long the store-level checks' claims hold.
pub(super) const LEASE: Millis = 30_000;
/// How long the store-level checks' records live.
pub(super) const TTL: Millis = 3_600_000;
/// How many callers race for one key.
pub(super) const RACERS: usize = 64;
/// 2000-01-01T00:00:00Z: the time of the [`purge_expired`] check.
pub(super) const PURGE_EPOCH: Millis = 946_684_800_000;
/// 2001-01-01T00:00:00Z: the time of the [`purge_during_completes`] check.
pub(super) const CONCURRENT_PURGE_EPOCH: Millis = 978_307_200_000;

/// Runs every check against `store`, in turn, printing one line per check
/// that passed; panics at the first violation.
///
/// [`concurrent_claims_in_tasks`], which needs a `'static` store, is not
/// among them: call it as well.
pub async fn run_all<S: IdempotencyStore + ?Sized>(store: &S) {
    macro_rules! run {
        ($store:expr, $way:literal: $($check:ident),* $(,)?) => {$(
            $check($store).await;
            println!("idempotency store conformance: {}{} ... ok", stringify!($check), $way);
        )*};
    }
    macro_rules! store_checks {
        ($store:expr, $way:literal) => {
            run!(
                $store, $way:
                claim_complete_replay,
                duplicate_sees_in_progress,
                release_frees_the_key,
                ttl_expiry,
                lease_expiry_and_takeover,
                renew_extends_the_lease,
                renew_raises_expiry,
                takeover_checks_the_fingerprint,
                stale_owner_is_fenced,
                fenced_claim_holds,
                fingerprint_round_trip,
                scopes_are_separate,
                concurrent_claims,
                purge_expired,
                purge_during_completes,
                large_result,
            )
        };
    }
    store_checks!(store, "");
    run!(
        store, "":
        engine_replays_duplicates,
        engine_concurrent_duplicates,
        engine_payload_mismatch,
        engine_error_releases_the_claim,
        engine_fails_closed,
        engine_survives_failing_complete,
        engine_survives_failing_release,
    );
    if store.immediate().is_some() {
        store_checks!(&immediate::Immediately(store), " (immediate)");
    }
}
