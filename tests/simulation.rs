//! A deterministic simulation of the idempotency protocol: many callers of
//! one or two keys, interleaved by a seeded scheduler, over the real engine
//! (`Idempotency::run`) and a simulated database, with faults.
//!
//! # The model
//!
//! - **The engine is the real one.** Each caller is an `Idempotency::run`
//!   future (claim, body with lease renewal, complete or release, with the
//!   engine's retries), polled by hand: no tokio scheduler chooses anything.
//!   Its clock is injected (`Idempotency::clock`): the simulation's time plus
//!   a skew of the caller's own. The simulation's time is tokio's paused
//!   time in a current-thread runtime per run, so that the engine's timers
//!   (renewal every third of the lease, retry pauses) fire only when the
//!   scheduler moves the time, at exact instants.
//! - **The store is a database** (`simulation/store.rs`): the records, as
//!   the SQL stores' statements treat them, and an effects table beside them.
//!   Every statement is a step that stays pending until the scheduler grants
//!   it, so the scheduler chooses every interleaving. A body is: a point of
//!   work right after the claim, some time of work (during which the lease
//!   must be renewed), its transaction, a point of work after it. Its
//!   transaction is one atomic step, in one of three ways:
//!   - *fenced* (a SQL store's `fence(&mut tx)`): it checks that its token
//!     still holds the unfenced claim, writes the effect and fences the
//!     record (`lease_until = fenced_lease(now, lease)`), or, no row
//!     matching, rolls back and the body fails with `LeaseLost`; the engine
//!     stores the result after;
//!   - *transactional* (`transaction = tx`): it checks the token, writes the
//!     effect and the result (the engine's own encoding of it) together;
//!   - *unfenced*, the fence switched off: it writes the effect, checking
//!     nothing.
//! - **The scheduler** (`simulation/scheduler.rs`) picks, by the seed, at
//!   every step: a caller arrives; a pending statement runs (and its caller
//!   runs on to its next one); a caller whose timer fired runs on; time
//!   passes (under a third of the lease).
//!
//! # The faults
//!
//! Chosen by the seed, at any step of the first 300 (and the first minute):
//! - a caller **crashes** between any two steps: after the claim, mid-body,
//!   after the effect, before `complete`, or after `complete` ran but before
//!   its answer arrived (a statement's answer may be held on the wire). Its
//!   future is dropped like a dead process's: nothing is released, its claim
//!   stays until its lease lapses;
//! - everything **stalls past a lease** (a GC pause, a partition): a body
//!   may lose its lease and another caller take the key over;
//! - a statement **fails**: the store is unreachable (it did not run), or it
//!   ran and its answer was lost;
//! - **clocks apart**: each caller's clock is off by up to the bound, either
//!   way, and every `now` the engine sends the store is its caller's.
//!
//! Then, without faults, every caller runs to its end; then, two leases and
//! the skews later, fault-free auditors on the true clock ask for each key,
//! twice.
//!
//! # The invariants (`simulation/invariants.rs`)
//!
//! - An effect at most once per key within the TTL (every run ends well
//!   within it), and no claim of a key after its effect committed.
//! - A completed key always replays the same result, the one its effect
//!   produced; no result is answered or stored that no effect produced.
//! - A fencing token never writes a record after a newer claim took it over.
//! - The non-results are `InProgress`, `ResultLost` (only for a fenced
//!   effect whose owner died before storing its result), `LeaseLost` (only
//!   for a body that did not commit) and the injected store errors; the
//!   audit gets a result, or `ResultLost`.
//!
//! With the fence switched off the checker finds a double execution, and a
//! test asserts that it does; another plants flaws in the store (`complete`
//! under any token, a fenced claim taken over) and asserts that they are
//! caught.
//!
//! # The clock-skew bound
//!
//! The runs bound the skew to a quarter of the lease (750 ms of 3 s), so
//! that two clocks are at most half a lease apart. Safety does not depend on
//! it: every decision that could repeat an effect is made by the database
//! under the token, in the body's transaction, and a test runs the fenced
//! bodies with clocks two leases apart to show it. What the bound buys is
//! liveness and precision: (1) an owner that renews every third of its lease
//! is not taken over while it lives (an observer sees its lease lapse
//! `lease - skew` after its last renewal, and the next renewal comes a third
//! of a lease after it); beyond the bound live owners lose their claims and
//! their bodies end in `LeaseLost`; (2) a result is kept at least
//! `TTL - 2·bound`; beyond, a fast clock sees it expire early and runs the
//! key again within the TTL; (3) `ResultLost` is answered only once the
//! fenced owner is late by more than `lease - 2·bound`; beyond, a result
//! still being stored can be declared lost.
//!
//! # Reproducing a seed
//!
//! A failing seed prints its trace (each step: its number, the time, the
//! caller, the statement and its answer, the record and the effects after
//! it) and the line that runs it alone:
//!
//! ```text
//! STEADFAST_SIM_SEED=123 cargo test --all-features --test simulation fenced_bodies_take_effect_at_most_once -- --nocapture
//! ```
//!
//! `STEADFAST_SIM_SEEDS=50000` runs more seeds.

#[path = "simulation/caller.rs"]
mod caller;
#[path = "simulation/clock.rs"]
mod clock;
#[path = "simulation/frames.rs"]
mod frames;
#[path = "simulation/invariants.rs"]
mod invariants;
#[path = "simulation/scheduler.rs"]
mod scheduler;
#[path = "simulation/store.rs"]
mod store;

use std::time::Instant;

use invariants::Kind;
use scheduler::{Outcome, Settings, Tally, simulate};
use store::{Body, Flaw};

/// The skew bound of the runs: a quarter of the lease.
const SKEW_BOUND: i64 = 750;

/// Clocks far apart: each off by up to two leases.
const FAR_APART: i64 = 6_000;

/// Seeds per test, unless `STEADFAST_SIM_SEEDS` says otherwise.
const SEEDS: u64 = 5_000;

/// The seeds to run: the one of `STEADFAST_SIM_SEED` (and whether it is
/// one), else `0..STEADFAST_SIM_SEEDS`, else `0..default`.
fn seeds(default: u64) -> (Vec<u64>, bool) {
    let number = |name: &str| {
        std::env::var(name).ok().map(|value| {
            value
                .trim()
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("{name}={value}: a number"))
        })
    };
    if let Some(seed) = number("STEADFAST_SIM_SEED") {
        return (vec![seed], true);
    }
    let count = number("STEADFAST_SIM_SEEDS").unwrap_or(default);
    ((0..count).collect(), false)
}

/// The trace, the violations and the line that reproduces the run.
fn report(test: &str, outcome: &Outcome) -> String {
    let mut report = outcome.trace.join("\n");
    report.push_str("\n\n");
    for violation in &outcome.violations {
        report.push_str(&format!("violated: {violation}\n"));
    }
    report.push_str(&format!(
        "reproduce: STEADFAST_SIM_SEED={} cargo test --all-features --test simulation {test} -- --nocapture\n",
        outcome.seed
    ));
    report
}

/// Runs the seeds; fails with the first run that breaks an invariant.
fn run_seeds(test: &str, settings: Settings, default: u64) {
    let started = Instant::now();
    let (seeds, one) = seeds(default);
    let mut tally = Tally::default();
    for seed in seeds {
        let outcome = simulate(seed, settings);
        if one {
            println!("{}", report(test, &outcome));
        }
        assert!(
            outcome.violations.is_empty(),
            "seed {seed} breaks an invariant:\n{}",
            report(test, &outcome)
        );
        tally.add(&outcome.tally);
    }
    println!("{test}: {tally}; {:.1?}", started.elapsed());
}

/// Fenced bodies (`fence(&mut tx)`): no interleaving of crashes, stalls,
/// store failures and skewed clocks repeats an effect or changes a result.
#[test]
fn fenced_bodies_take_effect_at_most_once() {
    let settings = Settings {
        body: Body::Fenced,
        skew_bound: SKEW_BOUND,
        flaw: None,
    };
    run_seeds("fenced_bodies_take_effect_at_most_once", settings, SEEDS);
}

/// Bodies whose effect and result commit together (`transaction = tx`): the
/// same, and a result is never lost.
#[test]
fn transactional_bodies_take_effect_at_most_once() {
    let settings = Settings {
        body: Body::Transactional,
        skew_bound: SKEW_BOUND,
        flaw: None,
    };
    run_seeds(
        "transactional_bodies_take_effect_at_most_once",
        settings,
        SEEDS,
    );
}

/// Clocks two leases apart break liveness, not safety: the fence is decided
/// by the database under the token.
#[test]
fn fenced_bodies_stay_safe_with_clocks_far_apart() {
    let settings = Settings {
        body: Body::Fenced,
        skew_bound: FAR_APART,
        flaw: None,
    };
    run_seeds(
        "fenced_bodies_stay_safe_with_clocks_far_apart",
        settings,
        SEEDS / 5,
    );
}

/// The checker can fail: with the fence switched off, seeds show a body
/// taking effect twice (a claim that lapsed while its body ran, taken over;
/// an owner that died after its effect, retried), and running such a seed
/// again shows it again.
#[test]
fn without_the_fence_the_checker_finds_the_double_execution() {
    const TEST: &str = "without_the_fence_the_checker_finds_the_double_execution";
    let settings = Settings {
        body: Body::Unfenced,
        skew_bound: SKEW_BOUND,
        flaw: None,
    };
    let (seeds, _) = seeds(1_000);
    let tried = seeds.len();
    let mut doubles = 0;
    let mut first = None;
    for seed in seeds {
        let outcome = simulate(seed, settings);
        if outcome
            .violations
            .iter()
            .any(|violation| violation.kind == Kind::DoubleExecution)
        {
            doubles += 1;
            first.get_or_insert(outcome);
        }
    }
    let found = first.unwrap_or_else(|| {
        panic!("{tried} seeds without the fence, and the checker found no double execution")
    });
    println!(
        "without the fence, {doubles} of {tried} seeds take effect twice; the first, seed {}:\n{}",
        found.seed,
        report(TEST, &found)
    );
    let again = simulate(found.seed, settings);
    assert_eq!(again.trace, found.trace, "a seed reproduces its trace");
    assert_eq!(again.violations, found.violations);
}

/// The other invariants can fail too: a store that completes under a stale
/// token, or takes a fenced claim over, is caught within a few seeds.
#[test]
fn a_flawed_store_is_caught() {
    let planted = [
        (
            Body::Unfenced,
            Flaw::CompleteIgnoresToken,
            Kind::StaleTokenWrite,
        ),
        (
            Body::Fenced,
            Flaw::TakesOverFencedClaims,
            Kind::DoubleExecution,
        ),
    ];
    for (body, flaw, kind) in planted {
        let settings = Settings {
            body,
            skew_bound: SKEW_BOUND,
            flaw: Some(flaw),
        };
        let caught = (0..1_000)
            .map(|seed| simulate(seed, settings))
            .find(|outcome| {
                outcome
                    .violations
                    .iter()
                    .any(|violation| violation.kind == kind)
            });
        let caught = caught
            .unwrap_or_else(|| panic!("{flaw:?} under {body:?} bodies: no {kind:?} in 1000 seeds"));
        let shown: Vec<String> = caught.violations.iter().map(ToString::to_string).collect();
        println!(
            "{flaw:?} under {body:?} bodies: seed {} shows {}",
            caught.seed,
            shown.join("; ")
        );
    }
}

/// A seed decides its run: the same seed, the same trace, step for step.
#[test]
fn a_seed_reproduces_its_trace() {
    for body in [Body::Fenced, Body::Transactional, Body::Unfenced] {
        let settings = Settings {
            body,
            skew_bound: SKEW_BOUND,
            flaw: None,
        };
        for seed in 0..25 {
            let (first, second) = (simulate(seed, settings), simulate(seed, settings));
            assert_eq!(first.trace, second.trace, "{body:?}, seed {seed}");
            assert_eq!(first.violations, second.violations);
        }
    }
}
