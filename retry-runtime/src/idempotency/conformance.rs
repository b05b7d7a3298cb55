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
//! use retry_runtime::idempotency::{MemoryStore, conformance};
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
//! Engine-level checks run [`Idempotency`] over the store (with the real
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

use std::{
    borrow::Cow,
    fmt,
    future::{Future, poll_fn},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    task::Poll,
    time::Duration,
};

use super::{
    Claim, ClaimRequest, Fingerprint, Idempotency, IdempotencyError, IdempotencyStore, Millis,
    RecordKey, StoreError, StoreFuture, StoredResult, now_millis,
};

/// How long the store-level checks' claims hold.
const LEASE: Millis = 30_000;
/// How long the store-level checks' records live.
const TTL: Millis = 3_600_000;
/// How many callers race for one key.
const RACERS: usize = 64;
/// 2000-01-01T00:00:00Z: the time of the [`purge_expired`] check.
const PURGE_EPOCH: Millis = 946_684_800_000;
/// 2001-01-01T00:00:00Z: the time of the [`purge_during_completes`] check.
const CONCURRENT_PURGE_EPOCH: Millis = 978_307_200_000;

/// Runs every check against `store`, in turn, printing one line per check
/// that passed; panics at the first violation.
///
/// [`concurrent_claims_in_tasks`], which needs a `'static` store, is not
/// among them: call it as well.
pub async fn run_all<S: IdempotencyStore + ?Sized>(store: &S) {
    macro_rules! run {
        ($($check:ident),* $(,)?) => {$(
            $check(store).await;
            println!("idempotency store conformance: {} ... ok", stringify!($check));
        )*};
    }
    run!(
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
        engine_replays_duplicates,
        engine_concurrent_duplicates,
        engine_payload_mismatch,
        engine_error_releases_the_claim,
        engine_fails_closed,
        engine_survives_failing_complete,
        engine_survives_failing_release,
    );
}

// ---------------------------------------------------------------------------
// Store-level checks
// ---------------------------------------------------------------------------

/// A claim of a new key is `Claimed`; `complete` under its token stores the
/// result; later claims get `Completed` with that result (as often as asked),
/// and a caller that never owned the record cannot complete it.
pub async fn claim_complete_replay<S: IdempotencyStore + ?Sized>(store: &S) {
    let check = Check::new("claim_complete_replay", store);
    let key = check.key("order-1");
    let t0 = now_millis();
    let (owner, other) = tokens();
    let payload = b"receipt 1".to_vec();

    check
        .claimed(
            &key,
            owner,
            None,
            t0,
            t0 + LEASE,
            t0 + TTL,
            "first claim of a new key",
        )
        .await;
    check.ensure(
        check.complete(&key, owner, &payload, t0 + TTL).await,
        "the owner's complete was refused",
    );
    for (step, now) in [("first duplicate", t0 + 1), ("second duplicate", t0 + 2)] {
        check
            .completed(&key, other, None, now, &payload, None, step)
            .await;
    }
    check.ensure(
        !check.complete(&key, other, b"not mine", t0 + TTL).await,
        "a complete under a token that never held the claim was accepted",
    );
    // A result, once stored, is final: its owner can neither replace it nor
    // release it (a duplicate would run the body again), nor renew it.
    check.ensure(
        !check
            .complete(&key, owner, b"second result", t0 + TTL)
            .await,
        "a second complete by the owner was accepted",
    );
    check.ensure(
        !check.release(&key, owner).await,
        "the owner's release of a stored result was accepted",
    );
    check.ensure(
        !check.renew(&key, owner, t0 + 2 * LEASE).await,
        "the owner's renew of a stored result was accepted",
    );
    check
        .completed(
            &key,
            other,
            None,
            t0 + 3,
            &payload,
            None,
            "replay after the late calls",
        )
        .await;
}

/// A claim while another caller's claim is live reports `InProgress`, with
/// that caller's `lease_until` and fingerprint, up to the last millisecond
/// of the lease, and takes nothing over: the owner still completes.
pub async fn duplicate_sees_in_progress<S: IdempotencyStore + ?Sized>(store: &S) {
    let check = Check::new("duplicate_sees_in_progress", store);
    let t0 = now_millis();
    let theirs = Fingerprint::of(check.scope.as_bytes());
    let ours = Fingerprint::of(b"another payload");
    for (name, fingerprint) in [
        ("with-fingerprint", Some(theirs)),
        ("without-fingerprint", None),
    ] {
        let key = check.key(name);
        let (owner, duplicate) = tokens();
        let lease_until = t0 + LEASE;
        check
            .claimed(
                &key,
                owner,
                fingerprint,
                t0,
                lease_until,
                t0 + TTL,
                "first claim",
            )
            .await;
        check
            .in_progress(
                &key,
                duplicate,
                Some(ours),
                t0 + 1,
                lease_until,
                fingerprint,
                "duplicate during the lease",
            )
            .await;
        check
            .in_progress(
                &key,
                duplicate,
                None,
                lease_until - 1,
                lease_until,
                fingerprint,
                "duplicate in the lease's last ms",
            )
            .await;
        check.ensure(
            check.complete(&key, owner, b"done", t0 + TTL).await,
            "the owner's complete was refused after duplicates claimed",
        );
        check.ensure(
            !check
                .complete(&key, duplicate, b"duplicate", t0 + TTL)
                .await,
            "a duplicate's complete was accepted",
        );
        check
            .completed(
                &key,
                duplicate,
                None,
                t0 + 2,
                b"done",
                fingerprint,
                "replay",
            )
            .await;
    }
}

/// `release` under the owner's token deletes the claim, so that the next
/// claim is `Claimed`; under another token, or of a missing key, it is
/// refused (`false`) and changes nothing.
pub async fn release_frees_the_key<S: IdempotencyStore + ?Sized>(store: &S) {
    let check = Check::new("release_frees_the_key", store);
    let key = check.key("order-1");
    let t0 = now_millis();
    let (owner, stranger) = tokens();
    let (next, _) = tokens();

    check.ensure(
        !check.release(&check.key("missing"), owner).await,
        "release of a missing key returned true",
    );
    check
        .claimed(&key, owner, None, t0, t0 + LEASE, t0 + TTL, "first claim")
        .await;
    check.ensure(
        !check.release(&key, stranger).await,
        "release under a foreign token returned true",
    );
    check
        .in_progress(
            &key,
            stranger,
            None,
            t0 + 1,
            t0 + LEASE,
            None,
            "claim after a foreign release",
        )
        .await;
    check.ensure(
        check.release(&key, owner).await,
        "the owner's release was refused",
    );
    check
        .claimed(
            &key,
            next,
            None,
            t0 + 2,
            t0 + 2 + LEASE,
            t0 + TTL,
            "claim after the release",
        )
        .await;
    check.ensure(
        !check.release(&key, owner).await,
        "a second release by the former owner returned true",
    );
    check
        .in_progress(
            &key,
            stranger,
            None,
            t0 + 3,
            t0 + 2 + LEASE,
            None,
            "the new claim after a stale release",
        )
        .await;
}

/// The record expires at the `expires_at` given to `complete` (not the one
/// of the claim): replayed until its last millisecond, taken over (a new
/// owner, who can complete it, while the old token cannot) from that instant.
pub async fn ttl_expiry<S: IdempotencyStore + ?Sized>(store: &S) {
    let check = Check::new("ttl_expiry", store);
    let t0 = now_millis();

    // A result outlives the claim's expiry.
    let longer = check.key("longer");
    let (owner, duplicate) = tokens();
    check
        .claimed(&longer, owner, None, t0, t0 + 1_000, t0 + 2_000, "claim")
        .await;
    check.ensure(
        check.complete(&longer, owner, b"kept", t0 + 50_000).await,
        "complete was refused",
    );
    check
        .completed(
            &longer,
            duplicate,
            None,
            t0 + 10_000,
            b"kept",
            None,
            "replay after the claim's expiry, before the result's",
        )
        .await;

    // And expires at its own time.
    let key = check.key("shorter");
    let (first, second) = tokens();
    let (late, _) = tokens();
    let fingerprint = Some(Fingerprint::of(b"second payload"));
    check
        .claimed(&key, first, None, t0, t0 + LEASE, t0 + TTL, "claim")
        .await;
    check.ensure(
        check.complete(&key, first, b"first", t0 + 5_000).await,
        "complete was refused",
    );
    check
        .completed(
            &key,
            second,
            None,
            t0 + 4_999,
            b"first",
            None,
            "replay in the TTL's last ms",
        )
        .await;
    check
        .claimed(
            &key,
            second,
            fingerprint,
            t0 + 5_000,
            t0 + 5_000 + LEASE,
            t0 + 5_000 + TTL,
            "claim at the instant the TTL ends",
        )
        .await;
    check
        .in_progress(
            &key,
            late,
            None,
            t0 + 5_001,
            t0 + 5_000 + LEASE,
            fingerprint,
            "the new claim",
        )
        .await;
    check.ensure(
        !check.complete(&key, first, b"first again", t0 + TTL).await,
        "the expired record's token still completes",
    );
    check.ensure(
        check.complete(&key, second, b"second", t0 + TTL).await,
        "the new owner's complete was refused",
    );
    check
        .completed(
            &key,
            late,
            None,
            t0 + 5_002,
            b"second",
            fingerprint,
            "replay of the new result",
        )
        .await;
}

/// A claim whose lease lapsed (at its `lease_until`, exactly) is taken over:
/// the new claim installs its token, lease and fingerprint; the new owner's
/// `renew` works and the old owner's does not. (The first claim has no
/// fingerprint: a lapsed claim refuses another payload, see
/// [`takeover_checks_the_fingerprint`].)
pub async fn lease_expiry_and_takeover<S: IdempotencyStore + ?Sized>(store: &S) {
    let check = Check::new("lease_expiry_and_takeover", store);
    let key = check.key("order-1");
    let t0 = now_millis();
    let (first, second) = tokens();
    let (third, _) = tokens();
    let (old_print, new_print) = (None, Some(Fingerprint::of(b"new")));
    let takeover = t0 + 1_000;

    check
        .claimed(
            &key,
            first,
            old_print,
            t0,
            takeover,
            t0 + TTL,
            "first claim",
        )
        .await;
    check
        .in_progress(
            &key,
            second,
            new_print,
            takeover - 1,
            takeover,
            old_print,
            "claim in the lease's last ms",
        )
        .await;
    check
        .claimed(
            &key,
            second,
            new_print,
            takeover,
            takeover + LEASE,
            takeover + TTL,
            "claim at the instant the lease lapses",
        )
        .await;
    check
        .in_progress(
            &key,
            third,
            None,
            takeover + 1,
            takeover + LEASE,
            new_print,
            "claim after the takeover",
        )
        .await;
    check.ensure(
        check.renew(&key, second, takeover + 2 * LEASE).await,
        "the new owner's renew was refused",
    );
    check.ensure(
        !check.renew(&key, first, takeover + 3 * LEASE).await,
        "the old owner's renew was accepted",
    );
    check.ensure(
        check
            .complete(&key, second, b"second", takeover + TTL)
            .await,
        "the new owner's complete was refused",
    );
    check
        .completed(
            &key,
            third,
            None,
            takeover + 2,
            b"second",
            new_print,
            "replay",
        )
        .await;
}

/// `renew` under the owner's token moves `lease_until`: the claim holds past
/// its first lease, until the new one; `renew` of a missing key or under a
/// foreign token is refused.
pub async fn renew_extends_the_lease<S: IdempotencyStore + ?Sized>(store: &S) {
    let check = Check::new("renew_extends_the_lease", store);
    let key = check.key("order-1");
    let t0 = now_millis();
    let (owner, other) = tokens();

    check.ensure(
        !check.renew(&check.key("missing"), owner, t0 + LEASE).await,
        "renew of a missing key returned true",
    );
    check
        .claimed(&key, owner, None, t0, t0 + 1_000, t0 + TTL, "claim")
        .await;
    check.ensure(
        !check.renew(&key, other, t0 + 9_000).await,
        "renew under a foreign token returned true",
    );
    check.ensure(
        check.renew(&key, owner, t0 + 5_000).await,
        "the owner's renew was refused",
    );
    check
        .in_progress(
            &key,
            other,
            None,
            t0 + 2_000,
            t0 + 5_000,
            None,
            "claim after the first lease, within the renewed one",
        )
        .await;
    check
        .in_progress(
            &key,
            other,
            None,
            t0 + 4_999,
            t0 + 5_000,
            None,
            "claim in the renewed lease's last ms",
        )
        .await;
    check
        .claimed(
            &key,
            other,
            None,
            t0 + 5_000,
            t0 + 5_000 + LEASE,
            t0 + TTL,
            "claim when the renewed lease lapses",
        )
        .await;
}

/// `renew` raises the record's expiry to at least the new lease, so that a
/// claim being renewed never expires, whatever its TTL: a claim made with a
/// 1 s TTL and a 300 ms lease, renewed every 100 ms for 2 s, is still in
/// progress (for every payload) at and past the TTL it was made with; its
/// result then lives the TTL `complete` gives it, counted from completion.
pub async fn renew_raises_expiry<S: IdempotencyStore + ?Sized>(store: &S) {
    let check = Check::new("renew_raises_expiry", store);
    let key = check.key("order-1");
    let t0 = now_millis();
    let (owner, other) = tokens();
    let (ours, theirs) = (
        Some(Fingerprint::of(b"the running body's payload")),
        Some(Fingerprint::of(b"another payload")),
    );

    check
        .claimed(
            &key,
            owner,
            ours,
            t0,
            t0 + 300,
            t0 + 1_000,
            "claim with a 1 s TTL",
        )
        .await;
    for at in (100..=2_000).step_by(100) {
        check.ensure(
            check.renew(&key, owner, t0 + at + 300).await,
            format_args!("the owner's renew at {at} ms was refused"),
        );
    }
    let lease_until = t0 + 2_300;
    for (now, fingerprint, step) in [
        (
            t0 + 1_000,
            ours,
            "claim at the instant the claim's first TTL ends",
        ),
        (
            t0 + 2_000,
            ours,
            "claim past the first TTL, within the renewed lease",
        ),
        (
            t0 + 2_000,
            None,
            "claim without a fingerprint past the first TTL",
        ),
        (
            t0 + 2_000,
            theirs,
            "claim with another payload past the first TTL",
        ),
        (t0 + 2_299, ours, "claim in the renewed lease's last ms"),
    ] {
        check
            .in_progress(&key, other, fingerprint, now, lease_until, ours, step)
            .await;
    }
    // The TTL counts from completion.
    let completed_at = t0 + 2_100;
    check.ensure(
        check
            .complete(&key, owner, b"receipt", completed_at + 1_000)
            .await,
        "the renewed owner's complete was refused",
    );
    check
        .completed(
            &key,
            other,
            ours,
            completed_at + 999,
            b"receipt",
            ours,
            "replay in the last ms of the TTL counted from completion",
        )
        .await;
    check
        .claimed(
            &key,
            other,
            theirs,
            completed_at + 1_000,
            completed_at + 1_000 + LEASE,
            completed_at + 1_000 + TTL,
            "claim when the result's TTL ends",
        )
        .await;
}

/// A claim whose lease lapsed (its TTL not ended) is not taken over by a
/// request with another fingerprint: that one sees `InProgress` with the
/// lapsed claim's lease and fingerprint (the engine then answers
/// `PayloadMismatch` and does not run the body), and the record is left as
/// it was. The same fingerprint, or a missing one on either side, takes it
/// over; a record whose TTL ended is free for any payload.
pub async fn takeover_checks_the_fingerprint<S: IdempotencyStore + ?Sized>(store: &S) {
    let check = Check::new("takeover_checks_the_fingerprint", store);
    let t0 = now_millis();
    let lapse = t0 + 1_000;
    let (five, six) = (
        Some(Fingerprint::of("amount=5")),
        Some(Fingerprint::of("amount=6")),
    );

    // Another payload: refused, the record untouched.
    let key = check.key("another-payload");
    let (owner, intruder) = tokens();
    check
        .claimed(&key, owner, five, t0, lapse, t0 + TTL, "first claim")
        .await;
    for (now, step) in [
        (lapse, "claim with another payload when the lease lapses"),
        (lapse + LEASE, "claim with another payload long after"),
    ] {
        check
            .in_progress(&key, intruder, six, now, lapse, five, step)
            .await;
    }
    check.ensure(
        check.complete(&key, owner, b"five", t0 + TTL).await,
        "the lapsed owner's complete was refused after claims with another payload",
    );
    check
        .completed(
            &key,
            intruder,
            six,
            lapse + 1,
            b"five",
            five,
            "claim with another payload after the owner completed",
        )
        .await;

    // The same payload, or no fingerprint on either side: taken over.
    for (name, stored, request) in [
        ("same-payload", five, five),
        ("request-without-fingerprint", five, None),
        ("claim-without-fingerprint", None, six),
    ] {
        let key = check.key(name);
        let (first, second) = tokens();
        let (observer, _) = tokens();
        check
            .claimed(&key, first, stored, t0, lapse, t0 + TTL, name)
            .await;
        check
            .claimed(
                &key,
                second,
                request,
                lapse,
                lapse + LEASE,
                lapse + TTL,
                &format!("{name}: takeover when the lease lapses"),
            )
            .await;
        check
            .in_progress(
                &key,
                observer,
                None,
                lapse + 1,
                lapse + LEASE,
                request,
                &format!("{name}: claim after the takeover"),
            )
            .await;
        check.ensure(
            !check.complete(&key, first, b"stale", t0 + TTL).await,
            format_args!("{name}: the old owner's complete was accepted after the takeover"),
        );
    }

    // A record whose TTL ended is free for any payload, claim or result.
    let claim = check.key("expired-claim");
    let result = check.key("expired-result");
    let (first, second) = tokens();
    check
        .claimed(
            &claim,
            first,
            five,
            t0,
            lapse,
            t0 + 2_000,
            "claim, short TTL",
        )
        .await;
    check
        .claimed(&result, first, five, t0, lapse, t0 + TTL, "second claim")
        .await;
    check.ensure(
        check.complete(&result, first, b"five", t0 + 2_000).await,
        "complete was refused",
    );
    check
        .in_progress(
            &claim,
            second,
            six,
            t0 + 1_999,
            lapse,
            five,
            "claim with another payload in the TTL's last ms",
        )
        .await;
    for (key, what) in [(&claim, "claim"), (&result, "result")] {
        check
            .claimed(
                key,
                second,
                six,
                t0 + 2_000,
                t0 + 2_000 + LEASE,
                t0 + 2_000 + TTL,
                &format!("claim with another payload when the {what}'s TTL ends"),
            )
            .await;
    }

    // Through the engine: a lapsed claim of another replica with another
    // payload is `PayloadMismatch`, and the body does not run.
    let key = check.key("engine");
    let (other_replica, _) = tokens();
    let now = now_millis();
    check
        .claimed(
            &key,
            other_replica,
            five,
            now - 2 * LEASE,
            now - LEASE,
            now + TTL,
            "claim of another replica, lapsed",
        )
        .await;
    let runs = AtomicU32::new(0);
    let call = |payload: &'static str| {
        let runs = &runs;
        check
            .idempotency()
            .key("engine")
            .fingerprint(payload)
            .run(move || async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, KitError>(format!("result for {payload}"))
            })
    };
    match call("amount=6").await {
        Err(KitError::Idempotency(IdempotencyError::PayloadMismatch)) => {}
        other => check.fail(format_args!(
            "a lapsed claim taken over with another payload returned {other:?}, expected PayloadMismatch"
        )),
    }
    check.ensure(
        runs.load(Ordering::SeqCst) == 0,
        "the body ran under another payload's key",
    );
    check.ensure_ok(
        call("amount=5").await,
        "result for amount=5",
        "takeover of the lapsed claim with its own payload",
    );
}

/// A fenced claim (lease [`FENCED_LEASE`](super::FENCED_LEASE), as a
/// store's `fence` leaves it): `release` and `renew` leave it alone, other
/// callers see it in progress however late they come within its TTL, its
/// owner's `complete` stores the result, and its TTL still ends it.
pub async fn fenced_claim_holds<S: IdempotencyStore + ?Sized>(store: &S) {
    let check = Check::new("fenced_claim_holds", store);
    let key = check.key("order-1");
    let t0 = now_millis();
    let (owner, other) = tokens();
    let fenced = super::FENCED_LEASE;

    check
        .claimed(&key, owner, None, t0, fenced, t0 + TTL, "fenced claim")
        .await;
    check.ensure(
        !check.release(&key, owner).await,
        "a fenced claim was released",
    );
    check.ensure(
        !check.renew(&key, owner, t0 + 1_000).await,
        "a fenced claim's lease was renewed (shortened)",
    );
    check
        .in_progress(
            &key,
            other,
            None,
            t0 + TTL - 1,
            fenced,
            None,
            "claim in the fenced record's last ms",
        )
        .await;
    check.ensure(
        check.complete(&key, owner, b"receipt", t0 + TTL).await,
        "the owner could not complete its fenced claim",
    );
    check
        .completed(
            &key,
            other,
            None,
            t0 + 1,
            b"receipt",
            None,
            "replay after completion",
        )
        .await;

    let lapsed = check.key("order-2");
    check
        .claimed(
            &lapsed,
            owner,
            None,
            t0,
            fenced,
            t0 + TTL,
            "second fenced claim",
        )
        .await;
    check
        .claimed(
            &lapsed,
            other,
            None,
            t0 + TTL,
            t0 + TTL + LEASE,
            t0 + 2 * TTL,
            "claim when the fenced record's TTL ends",
        )
        .await;
}

/// Fencing: after a takeover, the old owner's late `complete`, `release` and
/// `renew` are refused (`false`), before and after the new owner completes,
/// and leave the new owner's record as it was.
pub async fn stale_owner_is_fenced<S: IdempotencyStore + ?Sized>(store: &S) {
    let check = Check::new("stale_owner_is_fenced", store);
    let key = check.key("order-1");
    let t0 = now_millis();
    let (stale, owner) = tokens();
    let (observer, _) = tokens();
    let fingerprint = Some(Fingerprint::of(b"the new owner's payload"));
    let takeover = t0 + 1_000;
    let lease_until = takeover + LEASE;

    check
        .claimed(&key, stale, None, t0, takeover, t0 + TTL, "first claim")
        .await;
    check
        .claimed(
            &key,
            owner,
            fingerprint,
            takeover,
            lease_until,
            takeover + TTL,
            "takeover",
        )
        .await;

    check.ensure(
        !check.complete(&key, stale, b"stale", takeover + TTL).await,
        "the stale owner's complete was accepted",
    );
    check.ensure(
        !check.renew(&key, stale, lease_until + LEASE).await,
        "the stale owner's renew was accepted",
    );
    check.ensure(
        !check.release(&key, stale).await,
        "the stale owner's release was accepted",
    );
    check
        .in_progress(
            &key,
            observer,
            None,
            takeover + 1,
            lease_until,
            fingerprint,
            "the new owner's claim after the stale calls",
        )
        .await;

    check.ensure(
        check.complete(&key, owner, b"fresh", takeover + TTL).await,
        "the new owner's complete was refused",
    );
    check.ensure(
        !check.complete(&key, stale, b"stale", takeover + TTL).await,
        "the stale owner's complete was accepted after the new owner's",
    );
    check.ensure(
        !check.release(&key, stale).await,
        "the stale owner's release was accepted after the new owner's complete",
    );
    check.ensure(
        !check.renew(&key, stale, lease_until + LEASE).await,
        "the stale owner's renew was accepted after the new owner's complete",
    );
    check
        .completed(
            &key,
            observer,
            None,
            takeover + 2,
            b"fresh",
            fingerprint,
            "replay of the new owner's result",
        )
        .await;
}

/// The fingerprint given at claim time is returned, bit for bit, with
/// `InProgress` and with `Completed`; no fingerprint stays none.
pub async fn fingerprint_round_trip<S: IdempotencyStore + ?Sized>(store: &S) {
    let check = Check::new("fingerprint_round_trip", store);
    let t0 = now_millis();
    let mut edges = [0u8; 32];
    edges[0] = 0xff;
    edges[31] = 0x80;
    let cases = [
        ("hashed", Some(Fingerprint::of(check.scope.as_bytes()))),
        ("zeros", Some(Fingerprint([0; 32]))),
        ("ones", Some(Fingerprint([0xff; 32]))),
        ("edges", Some(Fingerprint(edges))),
        ("none", None),
    ];
    for (name, fingerprint) in cases {
        let key = check.key(name);
        let (owner, duplicate) = tokens();
        check
            .claimed(&key, owner, fingerprint, t0, t0 + LEASE, t0 + TTL, name)
            .await;
        check
            .in_progress(&key, duplicate, None, t0 + 1, t0 + LEASE, fingerprint, name)
            .await;
        check.ensure(
            check.complete(&key, owner, name.as_bytes(), t0 + TTL).await,
            "complete was refused",
        );
        check
            .completed(
                &key,
                duplicate,
                None,
                t0 + 2,
                name.as_bytes(),
                fingerprint,
                name,
            )
            .await;
    }
}

/// The same client key in two scopes makes two records.
pub async fn scopes_are_separate<S: IdempotencyStore + ?Sized>(store: &S) {
    let check = Check::new("scopes_are_separate", store);
    let t0 = now_millis();
    let (left, right) = (
        check.key_in("left", "order-1"),
        check.key_in("right", "order-1"),
    );
    let (first, second) = tokens();
    let (observer, _) = tokens();
    check
        .claimed(
            &left,
            first,
            None,
            t0,
            t0 + LEASE,
            t0 + TTL,
            "claim in the first scope",
        )
        .await;
    check
        .claimed(
            &right,
            second,
            None,
            t0,
            t0 + LEASE,
            t0 + TTL,
            "claim of the same key in a second scope",
        )
        .await;
    check.ensure(
        check.complete(&left, first, b"left", t0 + TTL).await,
        "complete in the first scope was refused",
    );
    check.ensure(
        check.complete(&right, second, b"right", t0 + TTL).await,
        "complete in the second scope was refused",
    );
    check
        .completed(
            &left,
            observer,
            None,
            t0 + 1,
            b"left",
            None,
            "replay in the first scope",
        )
        .await;
    check
        .completed(
            &right,
            observer,
            None,
            t0 + 1,
            b"right",
            None,
            "replay in the second scope",
        )
        .await;
}

/// 64 claims of one key, issued together and polled concurrently on this
/// task (a store with a connection pool runs them in parallel): exactly one
/// is `Claimed`, every other one `InProgress` with the winner's lease and
/// fingerprint, and only the winner's token completes.
pub async fn concurrent_claims<S: IdempotencyStore + ?Sized>(store: &S) {
    let check = Check::new("concurrent_claims", store);
    let key = check.key("contended");
    let t0 = now_millis();
    let racers = Racers::new(t0);
    let requests: Vec<ClaimRequest<'_>> = (0..RACERS)
        .map(|racer| racers.request(&key, racer))
        .collect();
    let results = join_all(
        requests
            .iter()
            .map(|request| store.claim(request))
            .collect(),
    )
    .await;
    racers.verify(&check, &key, results).await;
}

/// [`concurrent_claims`] from 64 tokio tasks released together by a
/// barrier: on a multi-threaded runtime the claims really race. Needs a
/// runtime (the tasks are spawned on the current one).
pub async fn concurrent_claims_in_tasks<S: IdempotencyStore + 'static>(store: Arc<S>) {
    let check = Check::new("concurrent_claims_in_tasks", &*store);
    let key = check.key("contended");
    let t0 = now_millis();
    let racers = Arc::new(Racers::new(t0));
    let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
    let tasks: Vec<_> = (0..RACERS)
        .map(|racer| {
            let (store, key, racers, barrier) =
                (store.clone(), key.clone(), racers.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.claim(&racers.request(&key, racer)).await
            })
        })
        .collect();
    let mut results = Vec::with_capacity(RACERS);
    for task in tasks {
        match task.await {
            Ok(result) => results.push(result),
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => check.fail(format_args!("a claim task was cancelled: {error}")),
        }
    }
    racers.verify(&check, &key, results).await;
}

/// `purge_expired(now)` deletes exactly the records expired at `now`
/// (results and claims whose TTL ended, at its instant included), returns
/// how many, and keeps every other record, results and claims, whatever
/// their other times: a claim whose lease lapsed is kept until its TTL ends
/// (it still refuses other payloads).
///
/// Works with times of January 2000 (see the module's docs).
pub async fn purge_expired<S: IdempotencyStore + ?Sized>(store: &S) {
    let check = Check::new("purge_expired", store);
    let t0 = PURGE_EPOCH;
    let at = t0 + 10_000;
    let far = t0 + 100_000;
    // What earlier runs left in this window.
    check.purge(at).await;

    // (name, lease_until, expires_at, completed, expired at `at`)
    let records = [
        ("result-expired", t0 + 1_000, t0 + 5_000, true, true),
        ("result-expiring-now", t0 + 1_000, at, true, true),
        ("result-live", t0 + 1_000, at + 1, true, false),
        ("result-long", t0 + 1_000, far, true, false),
        ("claim-lapsed", t0 + 5_000, far, false, false),
        ("claim-lapsing-now", at, far, false, false),
        ("claim-expired", far, at, false, true),
        ("claim-live", at + 1, far, false, false),
        ("claim-long", far, far, false, false),
    ];
    for &(name, lease_until, expires_at, completed, _) in &records {
        let key = check.key(name);
        let (owner, _) = tokens();
        check
            .claimed(&key, owner, None, t0, lease_until, expires_at, name)
            .await;
        if completed {
            check.ensure(
                check
                    .complete(&key, owner, name.as_bytes(), expires_at)
                    .await,
                "complete was refused",
            );
        }
    }
    let expired = records.iter().filter(|record| record.4).count() as u64;
    let purged = check.purge(at).await;

    // Claims at a time before every expiry tell a purged record (Claimed)
    // from a kept one (replayed or in progress).
    for &(name, lease_until, expires_at, completed, expired) in &records {
        let key = check.key(name);
        let (probe, _) = tokens();
        let found = check.claim(&key, probe, None, t0 + 1, far, far).await;
        let kept = match &found {
            Claim::Claimed => false,
            Claim::Completed(stored) if completed && stored.payload == name.as_bytes() => true,
            Claim::InProgress {
                lease_until: found, ..
            } if !completed && *found == lease_until => true,
            other => check.fail(format_args!(
                "record {name}: after the purge, a claim found {}",
                show(other)
            )),
        };
        check.ensure(
            kept != expired,
            format_args!(
                "record {name} (lease_until {lease_until}, expires_at {expires_at}, completed: {completed}) was {} by purge_expired({at})",
                if kept { "kept" } else { "deleted" }
            ),
        );
    }
    if purged != expired {
        let hint = if purged > expired {
            " (is another purge_expired check running on this store at the same time?)"
        } else {
            ""
        };
        check.fail(format_args!(
            "purge_expired({at}) deleted the {expired} expired records but returned {purged}{hint}"
        ));
    }
    let again = check.purge(at).await;
    check.ensure(
        again == 0,
        format_args!("a second purge_expired({at}) returned {again}, expected 0"),
    );
    check.purge(far + 1).await;
}

/// `purge_expired` while 50 `complete`s of live claims run against it (a
/// store with a connection pool runs them in parallel): of 200 records, the
/// 100 expired ones (results and claims) are gone, the 100 live ones are
/// kept, and every `complete` succeeds. The claims being completed, and 25
/// claims left in progress, have lapsed leases (slow owners) within their
/// TTL: they are not expired.
///
/// Works with times of January 2001 (see the module's docs).
pub async fn purge_during_completes<S: IdempotencyStore + ?Sized>(store: &S) {
    #[derive(Clone, Copy, PartialEq)]
    enum Kind {
        ExpiredResult,
        ExpiredClaim,
        Completing,
        LiveResult,
        LapsedClaim,
    }
    let check = Check::new("purge_during_completes", store);
    let t0 = CONCURRENT_PURGE_EPOCH;
    let at = t0 + 10_000;
    let far = t0 + 100_000;
    // What earlier runs left in this window.
    check.purge(at).await;

    let kinds = (0..200).map(|index| match index {
        0..50 => Kind::ExpiredResult,
        50..100 => Kind::ExpiredClaim,
        100..150 => Kind::Completing,
        150..175 => Kind::LiveResult,
        _ => Kind::LapsedClaim,
    });
    let mut records = Vec::with_capacity(200);
    for (index, kind) in kinds.enumerate() {
        let key = check.key(&format!("record-{index}"));
        let (owner, _) = tokens();
        let lease_until = t0 + 1_000 + index as Millis;
        let expires_at = match kind {
            Kind::ExpiredResult | Kind::ExpiredClaim => t0 + 5_000 + index as Millis,
            _ => far,
        };
        let fingerprint = Some(Fingerprint::of(key.hash()));
        check
            .claimed(
                &key,
                owner,
                fingerprint,
                t0,
                lease_until,
                expires_at,
                "setup",
            )
            .await;
        if matches!(kind, Kind::ExpiredResult | Kind::LiveResult) {
            check.ensure(
                check.complete(&key, owner, key.hash(), expires_at).await,
                "complete was refused",
            );
        }
        records.push((key, owner, kind, lease_until));
    }

    let completing: Vec<_> = records
        .iter()
        .filter(|record| record.2 == Kind::Completing)
        .collect();
    let mut calls: Vec<StoreFuture<'_, u64>> = completing
        .iter()
        .map(|(key, owner, _, _)| -> StoreFuture<'_, u64> {
            Box::pin(async move {
                let completed = store.complete(key, *owner, key.hash(), far).await?;
                Ok(u64::from(completed))
            })
        })
        .collect();
    // In the middle: half the completes are sent before it, half after.
    calls.insert(completing.len() / 2, store.purge_expired(at));
    let mut outcomes = join_all(calls).await;
    let purged = outcomes.remove(completing.len() / 2);
    for ((key, _, _, _), outcome) in completing.iter().zip(outcomes) {
        match outcome {
            Ok(1) => {}
            Ok(_) => check.fail(format_args!(
                "the complete of the live claim {key:?} during the purge was refused"
            )),
            Err(error) => check.fail(format_args!(
                "the complete of the live claim {key:?} during the purge failed: {error}"
            )),
        }
    }
    let purged = match purged {
        Ok(purged) => purged,
        Err(error) => check.fail(format_args!("purge_expired({at}) failed: {error}")),
    };

    // Claims at a time before every expiry tell a purged record (Claimed)
    // from a kept one (replayed or in progress).
    for (key, _, kind, lease_until) in &records {
        let (probe, _) = tokens();
        let found = check.claim(key, probe, None, t0 + 1, far, far).await;
        let expected = match kind {
            Kind::ExpiredResult | Kind::ExpiredClaim => Claim::Claimed,
            Kind::Completing | Kind::LiveResult => Claim::Completed(StoredResult {
                fingerprint: Some(Fingerprint::of(key.hash())),
                payload: key.hash().to_vec(),
            }),
            Kind::LapsedClaim => Claim::InProgress {
                lease_until: *lease_until,
                fingerprint: Some(Fingerprint::of(key.hash())),
            },
        };
        if found != expected {
            check.fail(format_args!(
                "record {key:?}: after the purge, a claim found {}, expected {}",
                show(&found),
                show(&expected)
            ));
        }
    }
    check.ensure(
        purged == 100,
        format_args!(
            "purge_expired({at}) deleted the 100 expired records but returned {purged}{}",
            if purged > 100 {
                " (is another purge check running on this store at the same time?)"
            } else {
                ""
            }
        ),
    );
    check.purge(far + 1).await;
}

/// A 1 MiB result of random bytes (every byte value, NUL first) is stored
/// and replayed byte for byte.
pub async fn large_result<S: IdempotencyStore + ?Sized>(store: &S) {
    let check = Check::new("large_result", store);
    let key = check.key("large");
    let t0 = now_millis();
    let (owner, duplicate) = tokens();
    let mut payload = vec![0u8; 1 << 20];
    fastrand::Rng::new().fill(&mut payload);
    payload[..6].copy_from_slice(b"\0\xff'\"\\%");
    for (index, byte) in payload[6..262].iter_mut().enumerate() {
        *byte = index as u8;
    }

    check
        .claimed(&key, owner, None, t0, t0 + LEASE, t0 + TTL, "claim")
        .await;
    check.ensure(
        check.complete(&key, owner, &payload, t0 + TTL).await,
        "complete of 1 MiB was refused",
    );
    match check
        .claim(&key, duplicate, None, t0 + 1, t0 + LEASE, t0 + TTL)
        .await
    {
        Claim::Completed(stored) if stored.payload == payload => {}
        Claim::Completed(stored) => {
            let first_difference = stored
                .payload
                .iter()
                .zip(&payload)
                .position(|(got, sent)| got != sent);
            check.fail(format_args!(
                "the 1 MiB result came back as {} bytes (sent {}); first difference at byte {}",
                stored.payload.len(),
                payload.len(),
                first_difference.map_or_else(
                    || "none (truncated or extended)".to_owned(),
                    |at| at.to_string()
                ),
            ))
        }
        other => check.fail(format_args!(
            "replay of the 1 MiB result found {}",
            show(&other)
        )),
    }
}

// ---------------------------------------------------------------------------
// Engine-level checks
// ---------------------------------------------------------------------------

/// Three sequential calls with one key run the body once and all get its
/// result; another key runs its own body.
pub async fn engine_replays_duplicates<S: IdempotencyStore + ?Sized>(store: &S) {
    let check = Check::new("engine_replays_duplicates", store);
    let runs = AtomicU32::new(0);
    let call = |key: &'static str| {
        check.idempotency().key(key).run(|| async {
            let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
            Ok::<_, KitError>(format!("receipt of run {run}"))
        })
    };
    for attempt in 1..=3 {
        match call("order-1").await {
            Ok(receipt) if receipt == "receipt of run 1" => {}
            other => check.fail(format_args!(
                "call {attempt} with one key returned {other:?}, expected the first run's receipt"
            )),
        }
    }
    match call("order-2").await {
        Ok(receipt) if receipt == "receipt of run 2" => {}
        other => check.fail(format_args!(
            "a call with another key returned {other:?}, expected its own run"
        )),
    }
    let runs = runs.load(Ordering::SeqCst);
    check.ensure(
        runs == 2,
        format_args!("the bodies ran {runs} times for 4 calls with 2 keys, expected 2"),
    );
}

/// 64 calls with one key, polled concurrently on this task while the first
/// body is pending: the body runs once; every call gets its result or
/// `InProgress`.
pub async fn engine_concurrent_duplicates<S: IdempotencyStore + ?Sized>(store: &S) {
    let check = Check::new("engine_concurrent_duplicates", store);
    let runs = AtomicU32::new(0);
    let calls: Vec<_> = (0..RACERS)
        .map(|_| {
            Box::pin(check.idempotency().key("contended").run(|| async {
                runs.fetch_add(1, Ordering::SeqCst);
                yield_once().await;
                Ok::<_, KitError>(42u64)
            }))
        })
        .collect();
    let results = join_all(calls).await;
    let runs = runs.load(Ordering::SeqCst);
    check.ensure(
        runs == 1,
        format_args!("{RACERS} concurrent calls with one key ran the body {runs} times"),
    );
    let mut answered = 0;
    for result in results {
        match result {
            Ok(42) => answered += 1,
            Err(KitError::Idempotency(IdempotencyError::InProgress { .. })) => {}
            other => check.fail(format_args!("a concurrent duplicate returned {other:?}")),
        }
    }
    check.ensure(answered >= 1, "no concurrent call got the result");
}

/// A key reused with another fingerprint gets `PayloadMismatch`, never the
/// other payload's result, whether that one is stored or still in progress;
/// the same payload is replayed, and the body never runs for a mismatch.
pub async fn engine_payload_mismatch<S: IdempotencyStore + ?Sized>(store: &S) {
    let check = Check::new("engine_payload_mismatch", store);
    let runs = AtomicU32::new(0);
    let call = |key: &'static str, payload: &'static str| {
        let runs = &runs;
        check
            .idempotency()
            .key(key)
            .fingerprint(payload)
            .run(move || async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, KitError>(format!("result for {payload}"))
            })
    };
    check.ensure_ok(
        call("stored", "amount=5").await,
        "result for amount=5",
        "first call",
    );
    match call("stored", "amount=6").await {
        Err(KitError::Idempotency(IdempotencyError::PayloadMismatch)) => {}
        other => check.fail(format_args!(
            "a stored key reused with another payload returned {other:?}, expected PayloadMismatch"
        )),
    }
    check.ensure_ok(
        call("stored", "amount=5").await,
        "result for amount=5",
        "replay with the first payload",
    );

    // A live claim of another replica, with its fingerprint.
    let key = check.key("in-progress");
    let (owner, _) = tokens();
    let now = now_millis();
    check
        .claimed(
            &key,
            owner,
            Some(Fingerprint::of("amount=5")),
            now,
            now + LEASE,
            now + TTL,
            "claim of another replica",
        )
        .await;
    match call("in-progress", "amount=6").await {
        Err(KitError::Idempotency(IdempotencyError::PayloadMismatch)) => {}
        other => check.fail(format_args!("a key in progress reused with another payload returned {other:?}, expected PayloadMismatch")),
    }
    match call("in-progress", "amount=5").await {
        Err(KitError::Idempotency(IdempotencyError::InProgress { .. })) => {}
        other => check.fail(format_args!(
            "a key in progress with the same payload returned {other:?}, expected InProgress"
        )),
    }
    check.ensure(
        check.release(&key, owner).await,
        "release of the other replica's claim was refused",
    );
    let runs = runs.load(Ordering::SeqCst);
    check.ensure(
        runs == 1,
        format_args!("the body ran {runs} times, expected once"),
    );
}

/// A body that fails (with an error that is not cached) gives the caller its
/// error and releases the claim: the next call runs the body again, and a
/// success is then replayed.
pub async fn engine_error_releases_the_claim<S: IdempotencyStore + ?Sized>(store: &S) {
    let check = Check::new("engine_error_releases_the_claim", store);
    let runs = AtomicU32::new(0);
    let call = || {
        check.idempotency().key("order-1").run(|| async {
            match runs.fetch_add(1, Ordering::SeqCst) {
                0 => Err(KitError::Body(503)),
                run => Ok(run),
            }
        })
    };
    match call().await {
        Err(KitError::Body(503)) => {}
        other => check.fail(format_args!(
            "a failing body returned {other:?} to its caller, expected its error"
        )),
    }
    check.ensure_ok(call().await, 1, "the retry after an error");
    check.ensure_ok(call().await, 1, "a duplicate after the successful retry");
    let runs = runs.load(Ordering::SeqCst);
    check.ensure(
        runs == 2,
        format_args!("the body ran {runs} times, expected twice (error, then success)"),
    );
}

/// A store whose `claim` fails: the call fails with
/// [`IdempotencyError::Store`] and the body does not run (fail closed); once
/// the store is back, the call runs normally.
pub async fn engine_fails_closed<S: IdempotencyStore + ?Sized>(store: &S) {
    let check = Check::new("engine_fails_closed", store);
    let failing = FailingStore::new(store);
    failing.fail_claims(true);
    let runs = AtomicU32::new(0);
    let call = || {
        Idempotency::new(&failing)
            .scope(check.scope.clone())
            .key("order-1")
            .run(|| async {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, KitError>(7)
            })
    };
    match call().await {
        Err(KitError::Idempotency(IdempotencyError::Store(_))) => {}
        other => check.fail(format_args!(
            "a call over a failing store returned {other:?}, expected a Store error"
        )),
    }
    check.ensure(
        runs.load(Ordering::SeqCst) == 0,
        "the body ran although the claim failed (it must fail closed)",
    );
    failing.fail_claims(false);
    check.ensure_ok(call().await, 7, "a call once the store is back");
    check.ensure(
        runs.load(Ordering::SeqCst) == 1,
        "the body did not run once the store was back",
    );
}

/// How often the engine calls `complete` or `release` before it gives up:
/// once, and once more after each pause of its retries.
const STORE_CALL_ATTEMPTS: u64 = super::engine::STORE_RETRIES.len() as u64 + 1;

/// A store whose `complete` fails: the caller still gets the body's result
/// (after the engine's retries),
/// and the claim stays, so a duplicate within the lease gets `InProgress`
/// (not a second run).
pub async fn engine_survives_failing_complete<S: IdempotencyStore + ?Sized>(store: &S) {
    let check = Check::new("engine_survives_failing_complete", store);
    let failing = FailingStore::new(store);
    failing.fail_completes(true);
    let runs = AtomicU32::new(0);
    let call = || {
        Idempotency::new(&failing)
            .scope(check.scope.clone())
            .key("order-1")
            .run(|| async {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, KitError>(7)
            })
    };
    check.ensure_ok(call().await, 7, "a call whose complete failed");
    let completes = failing.calls().completes;
    check.ensure(
        completes == STORE_CALL_ATTEMPTS,
        format_args!(
            "the engine tried to complete {completes} times, expected {STORE_CALL_ATTEMPTS} (one call and its retries)"
        ),
    );
    failing.fail_completes(false);
    match call().await {
        Err(KitError::Idempotency(IdempotencyError::InProgress { retry_after })) if retry_after > Duration::ZERO => {}
        other => check.fail(format_args!(
            "a duplicate after a failed complete returned {other:?}, expected InProgress until the lease lapses"
        )),
    }
    let runs = runs.load(Ordering::SeqCst);
    check.ensure(
        runs == 1,
        format_args!("the body ran {runs} times, expected once"),
    );
}

/// A store whose `release` fails: the caller still gets the body's error
/// (not a store error), and the claim lapses with its lease: a duplicate
/// within the lease gets `InProgress`.
pub async fn engine_survives_failing_release<S: IdempotencyStore + ?Sized>(store: &S) {
    let check = Check::new("engine_survives_failing_release", store);
    let failing = FailingStore::new(store);
    failing.fail_releases(true);
    let runs = AtomicU32::new(0);
    let call = || {
        Idempotency::new(&failing)
            .scope(check.scope.clone())
            .key("order-1")
            .run(|| async {
                runs.fetch_add(1, Ordering::SeqCst);
                Err::<u32, _>(KitError::Body(500))
            })
    };
    match call().await {
        Err(KitError::Body(500)) => {}
        other => check.fail(format_args!(
            "a failing body whose release failed returned {other:?}, expected its error"
        )),
    }
    let releases = failing.calls().releases;
    check.ensure(
        releases == STORE_CALL_ATTEMPTS,
        format_args!(
            "the engine tried to release {releases} times, expected {STORE_CALL_ATTEMPTS} (one call and its retries)"
        ),
    );
    failing.fail_releases(false);
    match call().await {
        Err(KitError::Idempotency(IdempotencyError::InProgress { .. })) => {}
        other => check.fail(format_args!(
            "a duplicate after a failed release returned {other:?}, expected InProgress"
        )),
    }
    let runs = runs.load(Ordering::SeqCst);
    check.ensure(
        runs == 1,
        format_args!("the body ran {runs} times, expected once"),
    );
}

// ---------------------------------------------------------------------------
// FailingStore
// ---------------------------------------------------------------------------

/// A store that forwards to `S` but fails chosen operations with a
/// [`StoreError`], and counts every call (failed ones included): for fault
/// tests of code over a store.
///
/// ```
/// use retry_runtime::idempotency::{Idempotency, IdempotencyError, MemoryStore, conformance::FailingStore};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let store = FailingStore::new(MemoryStore::new());
/// store.fail_claims(true);
/// let result: Result<u32, IdempotencyError> = Idempotency::new(&store).key("k").run(|| async { Ok(1) }).await;
/// assert!(matches!(result, Err(IdempotencyError::Store(_))));
/// assert_eq!(store.calls().claims, 1);
/// # }
/// ```
pub struct FailingStore<S> {
    inner: S,
    fail_claims: AtomicBool,
    fail_completes: AtomicBool,
    fail_releases: AtomicBool,
    fail_renews: AtomicBool,
    fail_purges: AtomicBool,
    claims: AtomicU64,
    completes: AtomicU64,
    releases: AtomicU64,
    detached_releases: AtomicU64,
    renews: AtomicU64,
    purges: AtomicU64,
}

/// How many times each operation of a [`FailingStore`] was called.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreCalls {
    /// `claim`.
    pub claims: u64,
    /// `complete`.
    pub completes: u64,
    /// `release`.
    pub releases: u64,
    /// `release_detached`.
    pub detached_releases: u64,
    /// `renew`.
    pub renews: u64,
    /// `purge_expired`.
    pub purges: u64,
}

impl<S> FailingStore<S> {
    /// Forwards every operation to `inner` until told to fail.
    pub fn new(inner: S) -> FailingStore<S> {
        FailingStore {
            inner,
            fail_claims: AtomicBool::new(false),
            fail_completes: AtomicBool::new(false),
            fail_releases: AtomicBool::new(false),
            fail_renews: AtomicBool::new(false),
            fail_purges: AtomicBool::new(false),
            claims: AtomicU64::new(0),
            completes: AtomicU64::new(0),
            releases: AtomicU64::new(0),
            detached_releases: AtomicU64::new(0),
            renews: AtomicU64::new(0),
            purges: AtomicU64::new(0),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Unwraps the store.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Makes `claim` fail (without reaching the inner store), or work again.
    pub fn fail_claims(&self, fail: bool) {
        self.fail_claims.store(fail, Ordering::SeqCst);
    }

    /// Makes `complete` fail (without reaching the inner store), or work again.
    pub fn fail_completes(&self, fail: bool) {
        self.fail_completes.store(fail, Ordering::SeqCst);
    }

    /// Makes `release` fail, and `release_detached` do nothing (without
    /// reaching the inner store), or work again.
    pub fn fail_releases(&self, fail: bool) {
        self.fail_releases.store(fail, Ordering::SeqCst);
    }

    /// Makes `renew` fail (without reaching the inner store), or work again.
    pub fn fail_renews(&self, fail: bool) {
        self.fail_renews.store(fail, Ordering::SeqCst);
    }

    /// Makes `purge_expired` fail (without reaching the inner store), or work again.
    pub fn fail_purges(&self, fail: bool) {
        self.fail_purges.store(fail, Ordering::SeqCst);
    }

    /// Makes every operation fail, or work again.
    pub fn fail_all(&self, fail: bool) {
        for flag in [
            &self.fail_claims,
            &self.fail_completes,
            &self.fail_releases,
            &self.fail_renews,
            &self.fail_purges,
        ] {
            flag.store(fail, Ordering::SeqCst);
        }
    }

    /// The calls so far.
    pub fn calls(&self) -> StoreCalls {
        let load = |counter: &AtomicU64| counter.load(Ordering::SeqCst);
        StoreCalls {
            claims: load(&self.claims),
            completes: load(&self.completes),
            releases: load(&self.releases),
            detached_releases: load(&self.detached_releases),
            renews: load(&self.renews),
            purges: load(&self.purges),
        }
    }

    /// Counts a call; `true` if it must fail.
    fn enter(&self, counter: &AtomicU64, fail: &AtomicBool) -> bool {
        counter.fetch_add(1, Ordering::SeqCst);
        fail.load(Ordering::SeqCst)
    }
}

impl<S> fmt::Debug for FailingStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flag = |flag: &AtomicBool| flag.load(Ordering::SeqCst);
        f.debug_struct("FailingStore")
            .field("fail_claims", &flag(&self.fail_claims))
            .field("fail_completes", &flag(&self.fail_completes))
            .field("fail_releases", &flag(&self.fail_releases))
            .field("fail_renews", &flag(&self.fail_renews))
            .field("fail_purges", &flag(&self.fail_purges))
            .field("calls", &self.calls())
            .finish_non_exhaustive()
    }
}

fn injected<'a, T: Send + 'a>(operation: &str) -> StoreFuture<'a, T> {
    let error = StoreError::msg(format!("{operation} failed (injected by FailingStore)"));
    Box::pin(std::future::ready(Err(error)))
}

impl<S: IdempotencyStore> IdempotencyStore for FailingStore<S> {
    fn claim<'a>(&'a self, request: &'a ClaimRequest<'a>) -> StoreFuture<'a, Claim> {
        if self.enter(&self.claims, &self.fail_claims) {
            return injected("claim");
        }
        self.inner.claim(request)
    }

    fn complete<'a>(
        &'a self,
        key: &'a RecordKey,
        token: u64,
        payload: &'a [u8],
        expires_at: Millis,
    ) -> StoreFuture<'a, bool> {
        if self.enter(&self.completes, &self.fail_completes) {
            return injected("complete");
        }
        self.inner.complete(key, token, payload, expires_at)
    }

    fn release<'a>(&'a self, key: &'a RecordKey, token: u64) -> StoreFuture<'a, bool> {
        if self.enter(&self.releases, &self.fail_releases) {
            return injected("release");
        }
        self.inner.release(key, token)
    }

    fn renew<'a>(
        &'a self,
        key: &'a RecordKey,
        token: u64,
        lease_until: Millis,
    ) -> StoreFuture<'a, bool> {
        if self.enter(&self.renews, &self.fail_renews) {
            return injected("renew");
        }
        self.inner.renew(key, token, lease_until)
    }

    fn purge_expired(&self, now: Millis) -> StoreFuture<'_, u64> {
        if self.enter(&self.purges, &self.fail_purges) {
            return injected("purge_expired");
        }
        self.inner.purge_expired(now)
    }

    fn release_detached(&self, key: RecordKey, token: u64) {
        if !self.enter(&self.detached_releases, &self.fail_releases) {
            self.inner.release_detached(key, token);
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The error type of the engine-level checks' bodies.
#[derive(Debug)]
enum KitError {
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
fn tokens() -> (u64, u64) {
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
struct Check<'s, S: ?Sized> {
    name: &'static str,
    scope: String,
    store: &'s S,
}

impl<'s, S: IdempotencyStore + ?Sized> Check<'s, S> {
    fn new(name: &'static str, store: &'s S) -> Self {
        Check {
            name,
            scope: format!("steadfast-conformance/{name}/{:016x}", fastrand::u64(..)),
            store,
        }
    }

    fn fail(&self, message: impl fmt::Display) -> ! {
        panic!("idempotency store conformance: {}: {message}", self.name)
    }

    #[track_caller]
    fn ensure(&self, condition: bool, message: impl fmt::Display) {
        if !condition {
            self.fail(message);
        }
    }

    fn ensure_ok<T: PartialEq<U> + fmt::Debug, U: fmt::Debug>(
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

    fn key(&self, name: &str) -> RecordKey {
        RecordKey::new(self.scope.clone(), name).expect("the checks' keys are valid")
    }

    fn key_in(&self, scope: &str, name: &str) -> RecordKey {
        RecordKey::new(format!("{}/{scope}", self.scope), name).expect("the checks' keys are valid")
    }

    /// The engine over this check's store and scope.
    fn idempotency(&self) -> Idempotency<'_> {
        Idempotency::new(&self.store)
            .scope(Cow::Owned(self.scope.clone()))
            .ttl(Duration::from_secs(3600))
    }

    async fn claim(
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
    async fn claimed(
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
    async fn in_progress(
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
    async fn completed(
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

    async fn complete(
        &self,
        key: &RecordKey,
        token: u64,
        payload: &[u8],
        expires_at: Millis,
    ) -> bool {
        match self.store.complete(key, token, payload, expires_at).await {
            Ok(done) => done,
            Err(error) => self.fail(format_args!("complete of {key:?} failed: {error}")),
        }
    }

    async fn release(&self, key: &RecordKey, token: u64) -> bool {
        match self.store.release(key, token).await {
            Ok(done) => done,
            Err(error) => self.fail(format_args!("release of {key:?} failed: {error}")),
        }
    }

    async fn renew(&self, key: &RecordKey, token: u64, lease_until: Millis) -> bool {
        match self.store.renew(key, token, lease_until).await {
            Ok(done) => done,
            Err(error) => self.fail(format_args!("renew of {key:?} failed: {error}")),
        }
    }

    async fn purge(&self, now: Millis) -> u64 {
        match self.store.purge_expired(now).await {
            Ok(purged) => purged,
            Err(error) => self.fail(format_args!("purge_expired({now}) failed: {error}")),
        }
    }
}

/// A claim's outcome for a message, with payloads summarized.
fn show(claim: &Claim) -> String {
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

/// The callers of a race for one key: distinct tokens and fingerprints.
struct Racers {
    now: Millis,
    first_token: u64,
}

impl Racers {
    fn new(now: Millis) -> Racers {
        Racers {
            now,
            first_token: fastrand::u64(1..=(i64::MAX as u64 - RACERS as u64)),
        }
    }

    fn token(&self, racer: usize) -> u64 {
        self.first_token + racer as u64
    }

    fn fingerprint(racer: usize) -> Fingerprint {
        Fingerprint::of(format!("racer {racer}"))
    }

    fn request<'k>(&self, key: &'k RecordKey, racer: usize) -> ClaimRequest<'k> {
        ClaimRequest {
            key,
            token: self.token(racer),
            fingerprint: Some(Racers::fingerprint(racer)),
            now: self.now,
            lease_until: self.now + LEASE,
            expires_at: self.now + TTL,
        }
    }

    /// Exactly one winner; every loser saw its claim; only its token holds.
    async fn verify<S: IdempotencyStore + ?Sized>(
        &self,
        check: &Check<'_, S>,
        key: &RecordKey,
        results: Vec<Result<Claim, StoreError>>,
    ) {
        let mut winners = Vec::new();
        let mut losers = Vec::new();
        for (racer, result) in results.into_iter().enumerate() {
            match result {
                Ok(Claim::Claimed) => winners.push(racer),
                Ok(Claim::InProgress {
                    lease_until,
                    fingerprint,
                }) => losers.push((racer, lease_until, fingerprint)),
                Ok(other) => check.fail(format_args!("racer {racer} found {}", show(&other))),
                Err(error) => check.fail(format_args!(
                    "racer {racer}'s claim failed under contention: {error}"
                )),
            }
        }
        let [winner] = winners[..] else {
            check.fail(format_args!("{RACERS} concurrent claims of one key: {} Claimed (racers {winners:?}), expected exactly 1", winners.len()))
        };
        for (racer, lease_until, fingerprint) in losers {
            check.ensure(
                lease_until == self.now + LEASE && fingerprint == Some(Racers::fingerprint(winner)),
                format_args!(
                    "racer {racer} saw InProgress {{ lease_until: {lease_until}, fingerprint: {fingerprint:?} }}, not the winner's (racer {winner})"
                ),
            );
        }
        let loser = (winner + 1) % RACERS;
        check.ensure(
            !check
                .complete(key, self.token(loser), b"loser", self.now + TTL)
                .await,
            "a loser's complete was accepted",
        );
        check.ensure(
            check
                .complete(key, self.token(winner), b"winner", self.now + TTL)
                .await,
            "the winner's complete was refused",
        );
        let (observer, _) = tokens();
        check
            .completed(
                key,
                observer,
                None,
                self.now + 1,
                b"winner",
                Some(Racers::fingerprint(winner)),
                "replay after the race",
            )
            .await;
    }
}

/// Polls every future on this task until all are ready; their outputs in order.
async fn join_all<F: Future + Unpin>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pending: Vec<Option<F>> = futures.into_iter().map(Some).collect();
    let mut outputs: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    poll_fn(|context| {
        let mut done = true;
        for (slot, output) in pending.iter_mut().zip(outputs.iter_mut()) {
            if let Some(future) = slot {
                match Pin::new(future).poll(context) {
                    Poll::Ready(value) => {
                        *output = Some(value);
                        *slot = None;
                    }
                    Poll::Pending => done = false,
                }
            }
        }
        if done { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
    outputs
        .into_iter()
        .map(|output| output.expect("every future finished"))
        .collect()
}

/// Pending once (waking itself at once), then ready: lets the other
/// futures of a [`join_all`] run.
async fn yield_once() {
    let mut yielded = false;
    poll_fn(|context| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            context.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await;
}
