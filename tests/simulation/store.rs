//! The simulated database: the idempotency records, the effects table beside
//! them in the same database, and every statement as a [`Step`] that waits
//! until the scheduler lets it run.
//!
//! The records follow the SQL stores' statements (`sql/sqlite.rs`): a claim
//! takes over a record whose TTL ended, or an unfenced claim whose lease
//! lapsed by the caller's `now`; `complete` needs the token and no result;
//! `release` and `renew` need the token and leave fenced claims alone. The
//! body's transaction is one step: the fence (`UPDATE … SET lease_until =
//! fenced_lease(now, lease) WHERE token = ? AND payload IS NULL AND
//! lease_until < FENCED_LEASE`) and the effect commit together, or, when no
//! row matched, roll back together (`LeaseLost`).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll},
};

use steadfast::idempotency::{
    Claim, ClaimRequest, Completion, CurrentClaim, FENCED_LEASE, Fingerprint, IdempotencyStore,
    Millis, RecordKey, StoreError, StoreFuture, fenced_lease,
};

use crate::{
    caller::TTL,
    clock::{self, shown},
    frames,
};

/// The idempotency keys of a run (it uses the first one or two).
pub(crate) const KEYS: [&str; 2] = ["k0", "k1"];

/// The scope of every record.
pub(crate) const SCOPE: &str = "simulation";

/// How a body makes its effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Body {
    /// The effect and the fence commit in one transaction (a SQL store's
    /// `fence(&mut tx)`); the engine stores the result after.
    Fenced,
    /// The effect and the result commit in one transaction, under the
    /// token (`transaction = tx`).
    Transactional,
    /// The fence switched off: the effect is written without checking that
    /// the claim still holds.
    Unfenced,
}

/// A flaw planted in the store, to show that the checker catches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flaw {
    /// `complete` stores a result under any token.
    CompleteIgnoresToken,
    /// A claim takes a fenced record over once its owner is taken for dead.
    TakesOverFencedClaims,
}

/// An idempotency record.
#[derive(Debug, Clone)]
struct Record {
    token: u64,
    fingerprint: Option<Fingerprint>,
    lease_until: Millis,
    expires_at: Millis,
    payload: Option<Vec<u8>>,
}

/// A row of the effects table: one execution of a body that committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Effect {
    pub(crate) step: usize,
    pub(crate) key: usize,
    pub(crate) caller: usize,
    /// The token, named by the order of first sight (`t1`, `t2`, …).
    pub(crate) token: usize,
    pub(crate) value: u32,
}

/// What the checker reads besides the effects: who claimed, and who wrote
/// under which token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// A claim was granted, maybe taking over another token's record.
    Claimed {
        step: usize,
        key: usize,
        caller: usize,
        token: usize,
        took_over: Option<usize>,
    },
    /// A record was changed under a token.
    Wrote {
        step: usize,
        key: usize,
        token: usize,
        what: &'static str,
    },
}

/// How the scheduler lets a step go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grant {
    /// Run it and answer.
    Act,
    /// Run it; the answer stays on the wire until granted again (a crash
    /// meanwhile loses it).
    ActThenHold,
    /// Fail before running it: the store was unreachable.
    Fail,
    /// Run it, then fail: it took effect, but its answer was lost.
    ActThenFail,
}

/// A step waiting for the scheduler.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub(crate) id: u64,
    pub(crate) caller: usize,
    /// A store statement (which may fail), not the body's own work.
    pub(crate) failable: bool,
    /// The answer of a step that ran, on its way back.
    pub(crate) reply: bool,
}

/// The database, and the bookkeeping of the steps waiting on it.
#[derive(Debug)]
pub(crate) struct Db {
    body: Body,
    flaw: Option<Flaw>,
    records: Vec<Option<Record>>,
    pub(crate) effects: Vec<Effect>,
    pub(crate) events: Vec<Event>,
    pub(crate) pending: Vec<Pending>,
    grants: Vec<(u64, Grant)>,
    next_id: u64,
    tokens: Vec<u64>,
    /// The caller being polled: the owner of the steps it creates.
    pub(crate) caller: usize,
    /// The scheduler's step, for the trace.
    pub(crate) step: usize,
    pub(crate) trace: Vec<String>,
}

impl Db {
    /// Appends a line to the trace: step, time, caller, text.
    pub(crate) fn log(&mut self, caller: Option<usize>, text: impl fmt::Display) {
        let who = caller.map_or_else(|| "  ".to_owned(), |caller| format!("c{caller}"));
        let line = format!("{:>4} t={:<6} {who} {text}", self.step, clock::now());
        self.trace.push(line);
    }

    /// The name of `token`: its rank by first sight, from 1.
    fn token(&mut self, token: u64) -> usize {
        match self.tokens.iter().position(|seen| *seen == token) {
            Some(index) => index + 1,
            None => {
                self.tokens.push(token);
                self.tokens.len()
            }
        }
    }

    /// Grants a pending step; the scheduler polls its caller next.
    pub(crate) fn grant(&mut self, id: u64, grant: Grant) {
        self.pending.retain(|pending| pending.id != id);
        self.grants.push((id, grant));
    }

    fn take_grant(&mut self, id: u64) -> Option<Grant> {
        let index = self.grants.iter().position(|(granted, _)| *granted == id)?;
        Some(self.grants.remove(index).1)
    }

    fn forget(&mut self, id: u64) {
        self.pending.retain(|pending| pending.id != id);
        self.grants.retain(|(granted, _)| *granted != id);
    }

    /// A record as the trace shows it, with its effects.
    pub(crate) fn show(&self, key: usize) -> String {
        let record = match &self.records[key] {
            None => "none".to_owned(),
            Some(record) => {
                let token = self.tokens.iter().position(|seen| *seen == record.token);
                let token = token.map_or(0, |index| index + 1);
                let state = match (&record.payload, record.lease_until) {
                    (Some(payload), _) => match frames::value_of(payload) {
                        Some(value) => format!("done({value})"),
                        None => "done(?)".to_owned(),
                    },
                    (None, lease) if lease >= FENCED_LEASE => {
                        format!("fenced(owner dead at {})", shown(lease - FENCED_LEASE))
                    }
                    (None, lease) => format!("claim(lease {})", shown(lease)),
                };
                format!("t{token} {state} exp {}", shown(record.expires_at))
            }
        };
        let effects: Vec<String> = self
            .effects
            .iter()
            .filter(|effect| effect.key == key)
            .map(|effect| format!("c{}/t{}={}", effect.caller, effect.token, effect.value))
            .collect();
        format!("[k{key}: {record}; effects {}]", effects.join(" "))
    }

    /// The keys of the run.
    pub(crate) fn keys(&self) -> usize {
        self.records.len()
    }

    /// The value of the record's stored result, if it has one.
    pub(crate) fn stored_value(&self, key: usize) -> Option<Option<u32>> {
        let record = self.records.get(key)?.as_ref()?;
        record.payload.as_deref().map(frames::value_of)
    }

    /// Whether `token` holds an unfenced claim without a result (the
    /// condition of `release`, `renew` and the fence).
    fn holds(&self, key: usize, token: u64) -> bool {
        self.records[key].as_ref().is_some_and(|record| {
            record.token == token && record.payload.is_none() && record.lease_until < FENCED_LEASE
        })
    }

    fn wrote(&mut self, key: usize, token: usize, what: &'static str) {
        let step = self.step;
        self.events.push(Event::Wrote {
            step,
            key,
            token,
            what,
        });
    }

    fn claim(&mut self, caller: usize, ask: &Ask) -> Claim {
        let token = self.token(ask.token);
        let found = self.records[ask.key].clone();
        let takeable = found.as_ref().is_none_or(|record| {
            let differs = matches!(
                (record.fingerprint, ask.fingerprint),
                (Some(theirs), Some(ours)) if theirs != ours
            );
            let owner_dead = self.flaw == Some(Flaw::TakesOverFencedClaims)
                && record.lease_until >= FENCED_LEASE
                && record.lease_until - FENCED_LEASE <= ask.now;
            record.expires_at <= ask.now
                || (record.payload.is_none()
                    && (record.lease_until <= ask.now || owner_dead)
                    && !differs)
        });
        let answer = if takeable {
            let took_over = found.as_ref().map(|record| self.token(record.token));
            self.records[ask.key] = Some(Record {
                token: ask.token,
                fingerprint: ask.fingerprint,
                lease_until: ask.lease_until,
                expires_at: ask.expires_at,
                payload: None,
            });
            let step = self.step;
            self.events.push(Event::Claimed {
                step,
                key: ask.key,
                caller,
                token,
                took_over,
            });
            Claim::Claimed
        } else {
            match found {
                Some(Record {
                    payload: Some(payload),
                    fingerprint,
                    ..
                }) => Claim::Completed(steadfast::idempotency::StoredResult {
                    fingerprint,
                    payload,
                }),
                Some(record) => Claim::InProgress {
                    lease_until: record.lease_until,
                    fingerprint: record.fingerprint,
                },
                None => unreachable!("an absent record is taken"),
            }
        };
        let shown_answer = match &answer {
            Claim::Claimed => "Claimed".to_owned(),
            Claim::Completed(stored) => match frames::value_of(&stored.payload) {
                Some(value) => format!("Completed({value})"),
                None => "Completed(?)".to_owned(),
            },
            Claim::InProgress { .. } => "InProgress".to_owned(),
        };
        let text = format!(
            "claim k{} t{token} at {}: {shown_answer} {}",
            ask.key,
            shown(ask.now),
            self.show(ask.key)
        );
        self.log(Some(caller), text);
        answer
    }

    fn complete(
        &mut self,
        caller: usize,
        key: usize,
        token: u64,
        payload: Vec<u8>,
        expires_at: Millis,
    ) -> bool {
        let name = self.token(token);
        let any_token = self.flaw == Some(Flaw::CompleteIgnoresToken);
        let record = self.records[key]
            .as_mut()
            .filter(|record| (record.token == token || any_token) && record.payload.is_none());
        let done = record.is_some_and(|record| {
            record.payload = Some(payload);
            record.expires_at = expires_at;
            true
        });
        if done {
            self.wrote(key, name, "complete");
        }
        let text = format!("complete k{key} t{name}: {done} {}", self.show(key));
        self.log(Some(caller), text);
        done
    }

    fn release(&mut self, caller: usize, key: usize, token: u64) -> bool {
        let name = self.token(token);
        let released = self.holds(key, token);
        if released {
            self.records[key] = None;
            self.wrote(key, name, "release");
        }
        let text = format!("release k{key} t{name}: {released} {}", self.show(key));
        self.log(Some(caller), text);
        released
    }

    fn renew(&mut self, caller: usize, key: usize, token: u64, until: Millis) -> bool {
        let name = self.token(token);
        let renewed = self.holds(key, token);
        if renewed && let Some(record) = self.records[key].as_mut() {
            record.lease_until = until;
            record.expires_at = record.expires_at.max(until);
            self.wrote(key, name, "renew");
        }
        let text = format!("renew k{key} t{name}: {renewed} {}", self.show(key));
        self.log(Some(caller), text);
        renewed
    }

    fn purge(&mut self, caller: usize, now: Millis) -> u64 {
        let mut purged = 0;
        for record in &mut self.records {
            if record
                .as_ref()
                .is_some_and(|record| record.expires_at <= now)
            {
                *record = None;
                purged += 1;
            }
        }
        self.log(
            Some(caller),
            format_args!("purge_expired at {}: {purged}", shown(now)),
        );
        purged
    }

    /// The body's transaction: its effect, with the fence or the result
    /// (none when the fence is off), all or nothing.
    fn effect(&mut self, caller: usize, claim: &CurrentClaim, key: usize, value: u32) -> bool {
        let token = self.token(claim.token());
        let committed = match self.body {
            Body::Unfenced => true,
            Body::Fenced if self.holds(key, claim.token()) => {
                let lease = fenced_lease(claim.clock().now_millis(), claim.lease());
                if let Some(record) = self.records[key].as_mut() {
                    record.lease_until = lease;
                }
                // The fence statement matched: what the SQL stores mark
                // before the commit.
                claim.mark_fenced();
                self.wrote(key, token, "fence");
                true
            }
            Body::Transactional => {
                let expires_at = claim.clock().now_millis() + millis(TTL);
                let record = self.records[key]
                    .as_mut()
                    .filter(|record| record.token == claim.token() && record.payload.is_none());
                let stored = record.is_some_and(|record| {
                    record.payload = Some(frames::frame(value).to_vec());
                    record.expires_at = expires_at;
                    true
                });
                if stored {
                    // The result is written in the transaction: from here
                    // on the claim must not be released.
                    claim.mark_fenced();
                    self.wrote(key, token, "complete in the body's transaction");
                }
                stored
            }
            Body::Fenced => false,
        };
        if committed {
            let step = self.step;
            self.effects.push(Effect {
                step,
                key,
                caller,
                token,
                value,
            });
        }
        let what = match self.body {
            Body::Fenced => "effect + fence",
            Body::Transactional => "effect + result",
            Body::Unfenced => "effect (no fence)",
        };
        let outcome = if committed {
            "committed"
        } else {
            "no row matched: rolled back (LeaseLost)"
        };
        let text = format!(
            "{what} k{key} t{token} = {value}: {outcome} {}",
            self.show(key)
        );
        self.log(Some(caller), text);
        if self
            .effects
            .iter()
            .filter(|effect| effect.key == key)
            .count()
            > 1
        {
            self.log(
                Some(caller),
                format_args!("!! k{key} took effect more than once"),
            );
        }
        committed
    }
}

/// A claim request, owned by its step.
#[derive(Debug)]
struct Ask {
    key: usize,
    token: u64,
    fingerprint: Option<Fingerprint>,
    now: Millis,
    lease_until: Millis,
    expires_at: Millis,
}

/// The store of a run: its database, shared with the steps in flight.
#[derive(Debug)]
pub(crate) struct SimStore {
    keys: Vec<RecordKey>,
    db: Arc<Mutex<Db>>,
}

impl SimStore {
    pub(crate) fn new(body: Body, flaw: Option<Flaw>, keys: usize) -> SimStore {
        let keys: Vec<RecordKey> = KEYS[..keys]
            .iter()
            .map(|key| RecordKey::new(SCOPE, key).expect("a valid key"))
            .collect();
        let db = Db {
            body,
            flaw,
            records: vec![None; keys.len()],
            effects: Vec::new(),
            events: Vec::new(),
            pending: Vec::new(),
            grants: Vec::new(),
            next_id: 1,
            tokens: Vec::new(),
            caller: 0,
            step: 0,
            trace: Vec::new(),
        };
        SimStore {
            keys,
            db: Arc::new(Mutex::new(db)),
        }
    }

    /// The database. Never held while a caller is polled or dropped: its
    /// steps lock it.
    pub(crate) fn db(&self) -> MutexGuard<'_, Db> {
        self.db.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn keys(&self) -> usize {
        self.keys.len()
    }

    fn key(&self, key: &RecordKey) -> usize {
        self.keys
            .iter()
            .position(|known| known == key)
            .expect("a key of this run")
    }

    fn step<T>(
        &self,
        label: String,
        failable: bool,
        act: impl FnOnce(&mut Db, usize) -> T + Send + 'static,
    ) -> Step<T> {
        Step {
            db: Arc::clone(&self.db),
            label,
            failable,
            id: None,
            act: Some(Box::new(act)),
            held: None,
        }
    }

    /// A point in the body where it waits (on work of its own): a place
    /// for the scheduler to crash it, or to let others go first.
    pub(crate) fn work(&self, what: &'static str) -> Step<()> {
        self.step(what.to_owned(), false, move |db, caller| {
            db.log(Some(caller), what);
        })
    }

    /// The body's transaction (see [`Body`]): whether it committed.
    pub(crate) fn effect(&self, claim: &CurrentClaim, value: u32) -> Step<bool> {
        let key = self.key(claim.record_key());
        let claim = claim.clone();
        self.step(format!("effect k{key}"), true, move |db, caller| {
            db.effect(caller, &claim, key, value)
        })
    }
}

impl IdempotencyStore for SimStore {
    fn claim<'a>(&'a self, request: &'a ClaimRequest<'a>) -> StoreFuture<'a, Claim> {
        let ask = Ask {
            key: self.key(request.key),
            token: request.token,
            fingerprint: request.fingerprint,
            now: request.now,
            lease_until: request.lease_until,
            expires_at: request.expires_at,
        };
        let label = format!("claim k{}", ask.key);
        Box::pin(self.step(label, true, move |db, caller| db.claim(caller, &ask)))
    }

    fn complete<'a>(&'a self, completion: Completion<'a>) -> StoreFuture<'a, bool> {
        let key = self.key(completion.key);
        let (token, payload, expires_at) = (
            completion.token,
            completion.payload.to_vec(),
            completion.expires_at,
        );
        Box::pin(
            self.step(format!("complete k{key}"), true, move |db, caller| {
                db.complete(caller, key, token, payload, expires_at)
            }),
        )
    }

    fn release<'a>(&'a self, key: &'a RecordKey, token: u64) -> StoreFuture<'a, bool> {
        let key = self.key(key);
        Box::pin(
            self.step(format!("release k{key}"), true, move |db, caller| {
                db.release(caller, key, token)
            }),
        )
    }

    fn renew<'a>(&'a self, key: &'a RecordKey, token: u64, until: Millis) -> StoreFuture<'a, bool> {
        let key = self.key(key);
        Box::pin(self.step(format!("renew k{key}"), true, move |db, caller| {
            db.renew(caller, key, token, until)
        }))
    }

    fn purge_expired(&self, now: Millis) -> StoreFuture<'_, u64> {
        Box::pin(self.step("purge".to_owned(), true, move |db, caller| {
            db.purge(caller, now)
        }))
    }

    // No `release_detached`: a caller's future dropped by the scheduler is
    // a process that died, and releases nothing. No `shared`: nothing runs
    // on after its caller.
}

type Act<T> = Box<dyn FnOnce(&mut Db, usize) -> T + Send>;

/// A statement (or a point of the body's work) that runs only when the
/// scheduler grants it: pending at its first poll, then run, failed, or run
/// with its answer held, as granted.
pub(crate) struct Step<T> {
    db: Arc<Mutex<Db>>,
    label: String,
    failable: bool,
    /// Its id and its caller, once registered.
    id: Option<(u64, usize)>,
    act: Option<Act<T>>,
    held: Option<T>,
}

impl<T: Unpin> Future for Step<T> {
    type Output = Result<T, StoreError>;

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        let step = self.get_mut();
        let mut db = step.db.lock().unwrap_or_else(PoisonError::into_inner);
        let Some((id, caller)) = step.id else {
            let (id, caller) = (db.next_id, db.caller);
            db.next_id += 1;
            db.pending.push(Pending {
                id,
                caller,
                failable: step.failable,
                reply: false,
            });
            step.id = Some((id, caller));
            return Poll::Pending;
        };
        let Some(grant) = db.take_grant(id) else {
            return Poll::Pending;
        };
        if let Some(answer) = step.held.take() {
            step.id = None;
            let text = format!("gets the answer of its {}", step.label);
            db.log(Some(caller), text);
            return Poll::Ready(Ok(answer));
        }
        let act = step.act.take().expect("a step runs once");
        let lost = || StoreError::msg("simulated: the store is unreachable");
        let answer = match grant {
            Grant::Act => Ok(act(&mut db, caller)),
            Grant::ActThenHold => {
                step.held = Some(act(&mut db, caller));
                db.pending.push(Pending {
                    id,
                    caller,
                    failable: false,
                    reply: true,
                });
                return Poll::Pending;
            }
            Grant::Fail => {
                let text = format!("{}: store unreachable, not run (StoreError)", step.label);
                db.log(Some(caller), text);
                Err(lost())
            }
            Grant::ActThenFail => {
                act(&mut db, caller);
                let text = format!("{}: ran, but its answer is lost (StoreError)", step.label);
                db.log(Some(caller), text);
                Err(lost())
            }
        };
        step.id = None;
        Poll::Ready(answer)
    }
}

impl<T> Drop for Step<T> {
    fn drop(&mut self) {
        if let Some((id, _)) = self.id {
            self.db
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .forget(id);
        }
    }
}

pub(crate) fn millis(duration: std::time::Duration) -> Millis {
    Millis::try_from(duration.as_millis()).expect("a short duration")
}
