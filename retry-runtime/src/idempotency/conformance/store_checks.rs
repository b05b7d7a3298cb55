//! Store-level checks: each operation of `IdempotencyStore`, one record at a time, at exact boundaries of leases and TTLs, and under races.

use std::sync::Arc;

use super::super::{
    Claim, ClaimRequest, Completion, Fingerprint, IdempotencyStore, Millis, StoreFuture,
    StoredResult, now_millis,
};

use super::{
    CONCURRENT_PURGE_EPOCH, LEASE, PURGE_EPOCH, RACERS, TTL,
    check::{Check, Runs, is_payload_mismatch, show, tokens},
    race::{Racers, join_all},
};

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
        .attempt(&key, owner, None, t0)
        .claimed("first claim of a new key")
        .await;
    check.ensure(
        check.complete(&key, owner, &payload, t0 + TTL).await,
        "the owner's complete was refused",
    );
    for (step, now) in [("first duplicate", t0 + 1), ("second duplicate", t0 + 2)] {
        check
            .attempt(&key, other, None, now)
            .completed(&payload, None, step)
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
        .attempt(&key, other, None, t0 + 3)
        .completed(&payload, None, "replay after the late calls")
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
            .attempt(&key, owner, fingerprint, t0)
            .lease_until(lease_until)
            .claimed("first claim")
            .await;
        check
            .attempt(&key, duplicate, Some(ours), t0 + 1)
            .in_progress(lease_until, fingerprint, "duplicate during the lease")
            .await;
        check
            .attempt(&key, duplicate, None, lease_until - 1)
            .in_progress(lease_until, fingerprint, "duplicate in the lease's last ms")
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
            .attempt(&key, duplicate, None, t0 + 2)
            .completed(b"done", fingerprint, "replay")
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
        .attempt(&key, owner, None, t0)
        .claimed("first claim")
        .await;
    check.ensure(
        !check.release(&key, stranger).await,
        "release under a foreign token returned true",
    );
    check
        .attempt(&key, stranger, None, t0 + 1)
        .in_progress(t0 + LEASE, None, "claim after a foreign release")
        .await;
    check.ensure(
        check.release(&key, owner).await,
        "the owner's release was refused",
    );
    check
        .attempt(&key, next, None, t0 + 2)
        .expires_at(t0 + TTL)
        .claimed("claim after the release")
        .await;
    check.ensure(
        !check.release(&key, owner).await,
        "a second release by the former owner returned true",
    );
    check
        .attempt(&key, stranger, None, t0 + 3)
        .in_progress(t0 + 2 + LEASE, None, "the new claim after a stale release")
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
        .attempt(&longer, owner, None, t0)
        .lease_until(t0 + 1_000)
        .expires_at(t0 + 2_000)
        .claimed("claim")
        .await;
    check.ensure(
        check.complete(&longer, owner, b"kept", t0 + 50_000).await,
        "complete was refused",
    );
    check
        .attempt(&longer, duplicate, None, t0 + 10_000)
        .completed(
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
    check.attempt(&key, first, None, t0).claimed("claim").await;
    check.ensure(
        check.complete(&key, first, b"first", t0 + 5_000).await,
        "complete was refused",
    );
    check
        .attempt(&key, second, None, t0 + 4_999)
        .completed(b"first", None, "replay in the TTL's last ms")
        .await;
    check
        .attempt(&key, second, fingerprint, t0 + 5_000)
        .claimed("claim at the instant the TTL ends")
        .await;
    check
        .attempt(&key, late, None, t0 + 5_001)
        .in_progress(t0 + 5_000 + LEASE, fingerprint, "the new claim")
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
        .attempt(&key, late, None, t0 + 5_002)
        .completed(b"second", fingerprint, "replay of the new result")
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
        .attempt(&key, first, old_print, t0)
        .lease_until(takeover)
        .claimed("first claim")
        .await;
    check
        .attempt(&key, second, new_print, takeover - 1)
        .in_progress(takeover, old_print, "claim in the lease's last ms")
        .await;
    check
        .attempt(&key, second, new_print, takeover)
        .claimed("claim at the instant the lease lapses")
        .await;
    check
        .attempt(&key, third, None, takeover + 1)
        .in_progress(takeover + LEASE, new_print, "claim after the takeover")
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
        .attempt(&key, third, None, takeover + 2)
        .completed(b"second", new_print, "replay")
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
        .attempt(&key, owner, None, t0)
        .lease_until(t0 + 1_000)
        .claimed("claim")
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
        .attempt(&key, other, None, t0 + 2_000)
        .in_progress(
            t0 + 5_000,
            None,
            "claim after the first lease, within the renewed one",
        )
        .await;
    check
        .attempt(&key, other, None, t0 + 4_999)
        .in_progress(t0 + 5_000, None, "claim in the renewed lease's last ms")
        .await;
    check
        .attempt(&key, other, None, t0 + 5_000)
        .expires_at(t0 + TTL)
        .claimed("claim when the renewed lease lapses")
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
        .attempt(&key, owner, ours, t0)
        .lease_until(t0 + 300)
        .expires_at(t0 + 1_000)
        .claimed("claim with a 1 s TTL")
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
            .attempt(&key, other, fingerprint, now)
            .in_progress(lease_until, ours, step)
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
        .attempt(&key, other, ours, completed_at + 999)
        .completed(
            b"receipt",
            ours,
            "replay in the last ms of the TTL counted from completion",
        )
        .await;
    check
        .attempt(&key, other, theirs, completed_at + 1_000)
        .claimed("claim when the result's TTL ends")
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
        .attempt(&key, owner, five, t0)
        .lease_until(lapse)
        .claimed("first claim")
        .await;
    for (now, step) in [
        (lapse, "claim with another payload when the lease lapses"),
        (lapse + LEASE, "claim with another payload long after"),
    ] {
        check
            .attempt(&key, intruder, six, now)
            .in_progress(lapse, five, step)
            .await;
    }
    check.ensure(
        check.complete(&key, owner, b"five", t0 + TTL).await,
        "the lapsed owner's complete was refused after claims with another payload",
    );
    check
        .attempt(&key, intruder, six, lapse + 1)
        .completed(
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
            .attempt(&key, first, stored, t0)
            .lease_until(lapse)
            .claimed(name)
            .await;
        check
            .attempt(&key, second, request, lapse)
            .claimed(&format!("{name}: takeover when the lease lapses"))
            .await;
        check
            .attempt(&key, observer, None, lapse + 1)
            .in_progress(
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
        .attempt(&claim, first, five, t0)
        .lease_until(lapse)
        .expires_at(t0 + 2_000)
        .claimed("claim, short TTL")
        .await;
    check
        .attempt(&result, first, five, t0)
        .lease_until(lapse)
        .claimed("second claim")
        .await;
    check.ensure(
        check.complete(&result, first, b"five", t0 + 2_000).await,
        "complete was refused",
    );
    check
        .attempt(&claim, second, six, t0 + 1_999)
        .in_progress(
            lapse,
            five,
            "claim with another payload in the TTL's last ms",
        )
        .await;
    for (key, what) in [(&claim, "claim"), (&result, "result")] {
        check
            .attempt(key, second, six, t0 + 2_000)
            .claimed(&format!(
                "claim with another payload when the {what}'s TTL ends"
            ))
            .await;
    }

    // Through the engine: a lapsed claim of another replica with another
    // payload is `PayloadMismatch`, and the body does not run.
    let key = check.key("engine");
    let (other_replica, _) = tokens();
    let now = now_millis();
    check
        .attempt(&key, other_replica, five, now - 2 * LEASE)
        .lease_until(now - LEASE)
        .expires_at(now + TTL)
        .claimed("claim of another replica, lapsed")
        .await;
    let runs = Runs::default();
    let reused = check.paid_call("engine", "amount=6", &runs).await;
    let what = "a lapsed claim taken over with another payload";
    check.expect(reused, what, "PayloadMismatch", is_payload_mismatch);
    check.ensure(runs.get() == 0, "the body ran under another payload's key");
    check.ensure_ok(
        check.paid_call("engine", "amount=5", &runs).await,
        "result for amount=5",
        "takeover of the lapsed claim with its own payload",
    );
}

/// A fenced claim (lease [`FENCED_LEASE`](crate::idempotency::FENCED_LEASE), as a
/// store's `fence` leaves it): `release` and `renew` leave it alone, other
/// callers see it in progress however late they come within its TTL, its
/// owner's `complete` stores the result, and its TTL still ends it.
pub async fn fenced_claim_holds<S: IdempotencyStore + ?Sized>(store: &S) {
    let check = Check::new("fenced_claim_holds", store);
    let key = check.key("order-1");
    let t0 = now_millis();
    let (owner, other) = tokens();
    // As a fence writes it: the mark, plus when its owner is taken for dead.
    let fenced =
        crate::idempotency::fenced_lease(t0, std::time::Duration::from_millis(LEASE as u64));

    check
        .attempt(&key, owner, None, t0)
        .lease_until(fenced)
        .claimed("fenced claim")
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
        .attempt(&key, other, None, t0 + TTL - 1)
        .in_progress(fenced, None, "claim in the fenced record's last ms")
        .await;
    check.ensure(
        check.complete(&key, owner, b"receipt", t0 + TTL).await,
        "the owner could not complete its fenced claim",
    );
    check
        .attempt(&key, other, None, t0 + 1)
        .completed(b"receipt", None, "replay after completion")
        .await;

    let lapsed = check.key("order-2");
    check
        .attempt(&lapsed, owner, None, t0)
        .lease_until(fenced)
        .claimed("second fenced claim")
        .await;
    check
        .attempt(&lapsed, other, None, t0 + TTL)
        .expires_at(t0 + 2 * TTL)
        .claimed("claim when the fenced record's TTL ends")
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
        .attempt(&key, stale, None, t0)
        .lease_until(takeover)
        .claimed("first claim")
        .await;
    check
        .attempt(&key, owner, fingerprint, takeover)
        .lease_until(lease_until)
        .claimed("takeover")
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
        .attempt(&key, observer, None, takeover + 1)
        .in_progress(
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
        .attempt(&key, observer, None, takeover + 2)
        .completed(b"fresh", fingerprint, "replay of the new owner's result")
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
            .attempt(&key, owner, fingerprint, t0)
            .claimed(name)
            .await;
        check
            .attempt(&key, duplicate, None, t0 + 1)
            .in_progress(t0 + LEASE, fingerprint, name)
            .await;
        check.ensure(
            check.complete(&key, owner, name.as_bytes(), t0 + TTL).await,
            "complete was refused",
        );
        check
            .attempt(&key, duplicate, None, t0 + 2)
            .completed(name.as_bytes(), fingerprint, name)
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
        .attempt(&left, first, None, t0)
        .claimed("claim in the first scope")
        .await;
    check
        .attempt(&right, second, None, t0)
        .claimed("claim of the same key in a second scope")
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
        .attempt(&left, observer, None, t0 + 1)
        .completed(b"left", None, "replay in the first scope")
        .await;
    check
        .attempt(&right, observer, None, t0 + 1)
        .completed(b"right", None, "replay in the second scope")
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
            .attempt(&key, owner, None, t0)
            .lease_until(lease_until)
            .expires_at(expires_at)
            .claimed(name)
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
        let found = check
            .attempt(&key, probe, None, t0 + 1)
            .lease_until(far)
            .expires_at(far)
            .claim()
            .await;
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
            .attempt(&key, owner, fingerprint, t0)
            .lease_until(lease_until)
            .expires_at(expires_at)
            .claimed("setup")
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
                let completion = Completion {
                    key,
                    token: *owner,
                    payload: key.hash(),
                    expires_at: far,
                };
                let completed = store.complete(completion).await?;
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
        let found = check
            .attempt(key, probe, None, t0 + 1)
            .lease_until(far)
            .expires_at(far)
            .claim()
            .await;
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

    check.attempt(&key, owner, None, t0).claimed("claim").await;
    check.ensure(
        check.complete(&key, owner, &payload, t0 + TTL).await,
        "complete of 1 MiB was refused",
    );
    match check
        .attempt(&key, duplicate, None, t0 + 1)
        .lease_until(t0 + LEASE)
        .expires_at(t0 + TTL)
        .claim()
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
