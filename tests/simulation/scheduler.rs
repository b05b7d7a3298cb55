//! The scheduler: one seeded run. Every store statement and every point of
//! a body's work waits for it, and timers fire only when it moves the time,
//! so the seed alone decides the interleaving, the faults and their instants.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Wake, Waker},
    time::Duration,
};

use fastrand::Rng;
use steadfast::idempotency::Millis;

use crate::{
    caller::{self, Answer, Call, LEASE, Spec},
    clock::{self, CLOCKS, TRUE_CLOCK},
    frames,
    invariants::{self, Violation},
    store::{Body, Event, Flaw, Grant, SimStore, millis},
};

/// The steps of a run in which faults may happen…
const CHAOS_STEPS: usize = 300;

/// …and the time in which they may (ms), well within the TTL.
const HORIZON: Millis = 60_000;

/// The steps a fault-free phase may take to end every caller; past them the
/// run is stuck.
const DRAIN_STEPS: usize = 3_000;

/// What a set of runs simulates.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) body: Body,
    /// Each caller's clock is off the simulation's time by at most this
    /// (ms), either way.
    pub(crate) skew_bound: Millis,
    /// A flaw planted in the store, if any.
    pub(crate) flaw: Option<Flaw>,
}

/// A run: its trace, what it broke, what happened in it.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) seed: u64,
    pub(crate) trace: Vec<String>,
    pub(crate) violations: Vec<Violation>,
    pub(crate) tally: Tally,
}

/// Counts over runs, to show what they exercised.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Tally {
    pub(crate) runs: u64,
    pub(crate) steps: u64,
    pub(crate) retries: u64,
    pub(crate) crashes: u64,
    pub(crate) stalls: u64,
    pub(crate) store_faults: u64,
    pub(crate) takeovers: u64,
    pub(crate) effects: u64,
    pub(crate) results: u64,
    pub(crate) in_progress: u64,
    pub(crate) results_lost: u64,
    pub(crate) leases_lost: u64,
    pub(crate) store_errors: u64,
}

impl Tally {
    pub(crate) fn add(&mut self, other: &Tally) {
        self.runs += other.runs;
        self.steps += other.steps;
        self.retries += other.retries;
        self.crashes += other.crashes;
        self.stalls += other.stalls;
        self.store_faults += other.store_faults;
        self.takeovers += other.takeovers;
        self.effects += other.effects;
        self.results += other.results;
        self.in_progress += other.in_progress;
        self.results_lost += other.results_lost;
        self.leases_lost += other.leases_lost;
        self.store_errors += other.store_errors;
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} runs, {} steps, {} retries; faults: {} crashes, {} stalls past a lease, {} store failures; \
             {} takeovers, {} effects; answers: {} results, {} InProgress, {} ResultLost, \
             {} LeaseLost, {} store errors",
            self.runs,
            self.steps,
            self.retries,
            self.crashes,
            self.stalls,
            self.store_faults,
            self.takeovers,
            self.effects,
            self.results,
            self.in_progress,
            self.results_lost,
            self.leases_lost,
            self.store_errors
        )
    }
}

/// What a caller was answered, and when.
#[derive(Debug, Clone)]
pub(crate) struct Answered {
    pub(crate) caller: usize,
    pub(crate) key: usize,
    pub(crate) auditor: bool,
    pub(crate) answer: Answer,
    pub(crate) step: usize,
}

/// Runs `seed`: in a current-thread runtime of its own, its time paused.
pub(crate) fn simulate(seed: u64, settings: Settings) -> Outcome {
    frames::warm();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(run(seed, settings))
}

/// The faults a run may still inject, and how often.
#[derive(Debug)]
struct Faults {
    crash_weight: u32,
    crashes: usize,
    stall_weight: u32,
    stalls: usize,
    fail_percent: u32,
    failures: usize,
    hold_percent: u32,
}

enum State<'s> {
    Waiting,
    Running(Call<'s>),
    Ended,
}

/// One attempt of a client: a caller of the engine.
struct Caller<'s> {
    spec: Spec,
    auditor: bool,
    /// The attempts its client may still make after this one.
    retries: u8,
    /// The caller whose retry it is.
    retry_of: Option<usize>,
    /// It arrives no earlier than this (the simulation's time).
    not_before: Millis,
    state: State<'s>,
    woken: Arc<Woken>,
}

impl Caller<'_> {
    fn new(spec: Spec, auditor: bool, retries: u8) -> Self {
        Caller {
            spec,
            auditor,
            retries,
            retry_of: None,
            not_before: 0,
            state: State::Waiting,
            woken: Arc::new(Woken(AtomicBool::new(false))),
        }
    }
}

/// A caller's waker: a flag the scheduler reads (a timer fired).
struct Woken(AtomicBool);

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[derive(Debug, Clone, Copy)]
enum Action {
    /// A caller sends its request.
    Start(usize),
    /// A caller whose timer fired runs on.
    Poll(usize),
    /// A pending step goes (and its caller runs on).
    Grant {
        id: u64,
        caller: usize,
        failable: bool,
        reply: bool,
    },
    /// Time passes, less than a renewal's period.
    Pass,
    /// Everything stalls past a lease (a GC pause, a partition).
    Stall,
    /// A caller's process dies.
    Crash,
}

struct Scheduler<'s> {
    rng: Rng,
    store: &'s SimStore,
    callers: Vec<Caller<'s>>,
    skews: [Millis; CLOCKS],
    skew_bound: Millis,
    faults: Faults,
    answers: Vec<Answered>,
    tally: Tally,
    step: usize,
}

async fn run(seed: u64, settings: Settings) -> Outcome {
    let mut rng = Rng::with_seed(seed);
    // The engine draws its fencing tokens from this thread's generator.
    fastrand::seed(seed);
    let lease = millis(LEASE);
    let lease_ms = LEASE.as_millis() as u64;
    let keys = rng.usize(1..=2);
    let callers = rng.usize(3..=6);
    let mut skews = [0; CLOCKS];
    for skew in &mut skews[..callers] {
        *skew = rng.i64(-settings.skew_bound..=settings.skew_bound);
    }
    let clients: Vec<Caller<'_>> = (0..callers)
        .map(|index| {
            let spec = Spec {
                key: rng.usize(..keys),
                clock: index,
                value: u32::try_from(index).expect("a few callers") + 1,
                work: Duration::from_millis(match rng.u8(..4) {
                    0 | 1 => 0,
                    2 => rng.u64(1..=lease_ms / 2),
                    _ => rng.u64(lease_ms..=2 * lease_ms),
                }),
            };
            Caller::new(spec, false, rng.u8(..=2))
        })
        .collect();
    let faults = Faults {
        crash_weight: rng.u32(..=2),
        crashes: 2,
        stall_weight: rng.u32(..=2),
        stalls: 2,
        fail_percent: rng.u32(..=20),
        failures: 3,
        hold_percent: rng.u32(..=30),
    };
    let _time = clock::start(skews);
    let store = SimStore::new(settings.body, settings.flaw, keys);
    store.db().log(
        None,
        format_args!(
            "seed {seed}: {:?} bodies{}, {callers} callers of {keys} key(s), lease {lease} ms, \
             skews {:?} ms, {faults:?}",
            settings.body,
            settings
                .flaw
                .map_or_else(String::new, |flaw| format!(" (planted flaw: {flaw:?})")),
            &skews[..callers]
        ),
    );
    let mut scheduler = Scheduler {
        rng,
        store: &store,
        callers: clients,
        skews,
        skew_bound: settings.skew_bound,
        faults,
        answers: Vec::new(),
        tally: Tally {
            runs: 1,
            ..Tally::default()
        },
        step: 0,
    };
    let finished = scheduler.chaos().await && scheduler.audit().await;
    let (answers, mut tally) = scheduler.finish();
    let db = store.db();
    let violations = invariants::check(settings.body, &db, &answers, finished);
    tally.effects = db.effects.len() as u64;
    tally.takeovers = db
        .events
        .iter()
        .filter(|event| {
            matches!(
                event,
                Event::Claimed {
                    took_over: Some(_),
                    ..
                }
            )
        })
        .count() as u64;
    Outcome {
        seed,
        trace: db.trace.clone(),
        violations,
        tally,
    }
}

impl Scheduler<'_> {
    /// Steps with faults, until the chaos budget of steps or time is spent;
    /// then the fault-free drain. Whether every caller ended.
    async fn chaos(&mut self) -> bool {
        while self.step < CHAOS_STEPS && clock::now() < HORIZON {
            if !self.step(true).await {
                return true;
            }
        }
        self.drain().await
    }

    /// Steps without faults until every caller has ended; whether they did.
    async fn drain(&mut self) -> bool {
        for _ in 0..DRAIN_STEPS {
            if !self.step(false).await {
                return true;
            }
        }
        false
    }

    /// Once every caller has ended and every lease and skew has passed,
    /// fault-free callers (on the true clock) ask for each key, twice.
    async fn audit(&mut self) -> bool {
        let rest = 2 * millis(LEASE) + 2 * self.skew_bound + 1;
        self.advance(rest).await;
        self.store.db().log(
            None,
            format_args!("audit: {rest} ms on, fault-free callers ask for each key, twice"),
        );
        for round in 0..2 {
            for key in 0..self.store.keys() {
                let spec = Spec {
                    key,
                    clock: TRUE_CLOCK,
                    value: 100 + 10 * round + u32::try_from(key).expect("two keys"),
                    work: Duration::ZERO,
                };
                self.callers.push(Caller::new(spec, true, 0));
            }
            if !self.drain().await {
                return false;
            }
        }
        true
    }

    /// The answers and the tally; drops what still runs (a stuck run).
    fn finish(self) -> (Vec<Answered>, Tally) {
        (self.answers, self.tally)
    }

    /// One step: picks an action by the seed and takes it; `false` once
    /// every caller has ended.
    async fn step(&mut self, chaos: bool) -> bool {
        let running = |caller: &Caller<'_>| matches!(caller.state, State::Running(_));
        if self
            .callers
            .iter()
            .all(|caller| matches!(caller.state, State::Ended))
        {
            return false;
        }
        self.step += 1;
        self.tally.steps += 1;
        let mut menu = Vec::new();
        let now = clock::now();
        for (index, caller) in self.callers.iter().enumerate() {
            match caller.state {
                State::Waiting if caller.not_before <= now => menu.push((2, Action::Start(index))),
                State::Running(_) if caller.woken.0.load(Ordering::SeqCst) => {
                    menu.push((6, Action::Poll(index)));
                }
                _ => {}
            }
        }
        {
            let mut db = self.store.db();
            db.step = self.step;
            for pending in &db.pending {
                menu.push((
                    6,
                    Action::Grant {
                        id: pending.id,
                        caller: pending.caller,
                        failable: pending.failable,
                        reply: pending.reply,
                    },
                ));
            }
        }
        let busy = !menu.is_empty();
        if chaos {
            if self.faults.stalls > 0 && self.faults.stall_weight > 0 {
                menu.push((self.faults.stall_weight, Action::Stall));
            }
            if self.faults.crashes > 0
                && self.faults.crash_weight > 0
                && self.callers.iter().any(running)
            {
                menu.push((self.faults.crash_weight, Action::Crash));
            }
            menu.push((2, Action::Pass));
        } else if !busy {
            menu.push((1, Action::Pass));
        }
        let total: u32 = menu.iter().map(|(weight, _)| weight).sum();
        let mut pick = self.rng.u32(..total);
        let action = menu
            .iter()
            .find(|(weight, _)| {
                let here = pick < *weight;
                pick = pick.saturating_sub(*weight);
                here
            })
            .map(|(_, action)| *action)
            .expect("a pick within the total");
        match action {
            Action::Start(index) => self.start(index),
            Action::Poll(index) => {
                self.store.db().log(Some(index), "runs on: a timer fired");
                self.poll(index);
            }
            Action::Grant {
                id,
                caller,
                failable,
                reply,
            } => {
                let grant = if reply || !chaos {
                    Grant::Act
                } else {
                    self.grant(failable)
                };
                self.store.db().grant(id, grant);
                self.poll(caller);
            }
            Action::Pass => {
                let passed = self.rng.u64(1..=LEASE.as_millis() as u64 / 3);
                self.advance(passed as Millis).await;
            }
            Action::Stall => {
                self.faults.stalls -= 1;
                self.tally.stalls += 1;
                let lease = millis(LEASE);
                let stalled = lease + self.rng.i64(1..=lease);
                self.store.db().log(
                    None,
                    format_args!("everything stalls {stalled} ms: leases may lapse"),
                );
                self.advance(stalled).await;
            }
            Action::Crash => {
                let candidates: Vec<usize> = (0..self.callers.len())
                    .filter(|index| running(&self.callers[*index]))
                    .collect();
                let index = candidates[self.rng.usize(..candidates.len())];
                self.faults.crashes -= 1;
                self.tally.crashes += 1;
                self.store.db().log(
                    Some(index),
                    "crashes: its process dies; what it holds stays in the store",
                );
                // Dropped: its pending steps are forgotten, nothing is released.
                self.callers[index].state = State::Ended;
                self.retry(index);
            }
        }
        true
    }

    /// How a store statement goes, by the seed and the faults left.
    fn grant(&mut self, failable: bool) -> Grant {
        if !failable {
            return Grant::Act;
        }
        if self.faults.failures > 0 && self.rng.u32(..100) < self.faults.fail_percent {
            self.faults.failures -= 1;
            self.tally.store_faults += 1;
            return if self.rng.bool() {
                Grant::Fail
            } else {
                Grant::ActThenFail
            };
        }
        if self.rng.u32(..100) < self.faults.hold_percent {
            Grant::ActThenHold
        } else {
            Grant::Act
        }
    }

    fn start(&mut self, index: usize) {
        let caller = &mut self.callers[index];
        let spec = caller.spec;
        caller.state = State::Running(caller::call(self.store, spec));
        let role = match (caller.auditor, caller.retry_of) {
            (true, _) => "audits".to_owned(),
            (false, Some(first)) => format!("retries c{first}'s call:"),
            (false, None) => "calls".to_owned(),
        };
        self.store.db().log(
            Some(index),
            format_args!(
                "{role} k{} (clock {:+} ms, body works {} ms, result {})",
                spec.key,
                self.skews[spec.clock],
                spec.work.as_millis(),
                spec.value
            ),
        );
        self.poll(index);
    }

    /// Polls a caller once; records its answer if it has one.
    fn poll(&mut self, index: usize) {
        let caller = &mut self.callers[index];
        let State::Running(call) = &mut caller.state else {
            return;
        };
        caller.woken.0.store(false, Ordering::SeqCst);
        self.store.db().caller = index;
        let waker = Waker::from(Arc::clone(&caller.woken));
        let Poll::Ready(result) = call.as_mut().poll(&mut Context::from_waker(&waker)) else {
            return;
        };
        caller.state = State::Ended;
        let answer = Answer::from(result);
        let tally = &mut self.tally;
        match answer {
            Answer::Result(_) => tally.results += 1,
            Answer::InProgress => tally.in_progress += 1,
            Answer::ResultLost => tally.results_lost += 1,
            Answer::LeaseLost => tally.leases_lost += 1,
            Answer::Store => tally.store_errors += 1,
            Answer::Other(_) => {}
        }
        self.store
            .db()
            .log(Some(index), format_args!("is answered {answer}"));
        let retried = matches!(
            answer,
            Answer::InProgress | Answer::LeaseLost | Answer::Store
        );
        self.answers.push(Answered {
            caller: index,
            key: caller.spec.key,
            auditor: caller.auditor,
            answer,
            step: self.step,
        });
        if retried {
            self.retry(index);
        }
    }

    /// The client of a caller that crashed or was answered without a
    /// result tries again, after a pause, if it has attempts left.
    fn retry(&mut self, index: usize) {
        let caller = &self.callers[index];
        if caller.retries == 0 {
            return;
        }
        let pause = self.rng.i64(..=millis(LEASE));
        let retry = Caller {
            retries: caller.retries - 1,
            retry_of: Some(caller.retry_of.unwrap_or(index)),
            not_before: clock::now() + pause,
            ..Caller::new(caller.spec, caller.auditor, 0)
        };
        self.callers.push(retry);
        self.tally.retries += 1;
    }

    /// Moves the time (tokio's, which every clock reads); the timers due fire.
    async fn advance(&mut self, by: Millis) {
        let by = u64::try_from(by).expect("time moves forward");
        tokio::time::advance(Duration::from_millis(by)).await;
        self.store.db().log(None, format_args!("{by} ms pass"));
    }
}
