//! The invariants every run is checked against, once it has ended (the
//! store marks a second effect in the trace at the step it happens).

use std::fmt;

use crate::{
    caller::Answer,
    scheduler::Answered,
    store::{Body, Db, Event},
};

/// Which invariant a run broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A key took effect more than once within its TTL.
    DoubleExecution,
    /// A key was claimed (its body ran) after its effect had committed.
    RunAfterEffect,
    /// Answers for one key carried different results.
    DifferentResults,
    /// A result was answered or stored that no committed effect produced.
    ResultWithoutEffect,
    /// A token wrote a record after a newer claim had taken it over.
    StaleTokenWrite,
    /// An answer no caller should get there.
    UnexpectedAnswer,
    /// Callers still ran after the fault-free drain.
    Stuck,
}

/// A broken invariant, with the steps that show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Violation {
    pub(crate) kind: Kind,
    pub(crate) detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.detail)
    }
}

/// Every violation of the run whose database is `db` and whose callers were
/// answered `answers`.
pub(crate) fn check(body: Body, db: &Db, answers: &[Answered], finished: bool) -> Vec<Violation> {
    let mut found = Vec::new();
    let mut report = |kind, detail: String| found.push(Violation { kind, detail });
    if !finished {
        report(
            Kind::Stuck,
            "callers still running after the fault-free drain".to_owned(),
        );
    }
    for key in 0..db.keys() {
        let effects: Vec<_> = db
            .effects
            .iter()
            .filter(|effect| effect.key == key)
            .collect();
        // At most once within the TTL (every run ends well within it).
        if effects.len() > 1 {
            let runs: Vec<String> = effects
                .iter()
                .map(|effect| {
                    format!(
                        "c{} (t{}) at step {}",
                        effect.caller, effect.token, effect.step
                    )
                })
                .collect();
            report(
                Kind::DoubleExecution,
                format!(
                    "k{key} took effect {} times: {}",
                    effects.len(),
                    runs.join(", ")
                ),
            );
        }
        // Once its effect committed, a key is never claimed again: its
        // record is fenced, or holds the result.
        if let Some(first) = effects.first() {
            for event in &db.events {
                if let Event::Claimed {
                    step,
                    key: claimed,
                    caller,
                    token,
                    ..
                } = *event
                    && claimed == key
                    && step > first.step
                {
                    report(
                        Kind::RunAfterEffect,
                        format!(
                            "c{caller} claimed k{key} as t{token} at step {step}, after its effect committed at step {}",
                            first.step
                        ),
                    );
                }
            }
        }
        // A completed key always answers the same result, the one its
        // effect produced.
        let mut results: Vec<(usize, u32)> = answers
            .iter()
            .filter(|answered| answered.key == key)
            .filter_map(|answered| match answered.answer {
                Answer::Result(value) => Some((answered.caller, value)),
                _ => None,
            })
            .collect();
        match db.stored_value(key) {
            Some(Some(value)) => results.push((usize::MAX, value)),
            Some(None) => report(
                Kind::ResultWithoutEffect,
                format!("k{key} stores a payload of no known result"),
            ),
            None => {}
        }
        for (caller, value) in &results {
            if !effects.iter().any(|effect| effect.value == *value) {
                let who = if *caller == usize::MAX {
                    "the record".to_owned()
                } else {
                    format!("c{caller}")
                };
                report(
                    Kind::ResultWithoutEffect,
                    format!("{who} got {value} for k{key}, which no committed effect produced"),
                );
            }
        }
        if results.windows(2).any(|pair| pair[0].1 != pair[1].1) {
            let shown: Vec<String> = results
                .iter()
                .map(|(caller, value)| match *caller {
                    usize::MAX => format!("stored {value}"),
                    caller => format!("c{caller}: {value}"),
                })
                .collect();
            report(
                Kind::DifferentResults,
                format!("k{key} answered {}", shown.join(", ")),
            );
        }
    }
    // A token never writes over a newer owner.
    let mut superseded = Vec::new();
    for event in &db.events {
        match *event {
            Event::Claimed {
                key,
                took_over: Some(old),
                ..
            } => superseded.push((key, old)),
            Event::Wrote {
                step,
                key,
                token,
                what,
            } if superseded.contains(&(key, token)) => report(
                Kind::StaleTokenWrite,
                format!(
                    "t{token} wrote k{key} ({what}) at step {step}, after a newer claim took it over"
                ),
            ),
            _ => {}
        }
    }
    // The non-results: InProgress, ResultLost where a fenced owner died,
    // LeaseLost for a body that did not commit, injected store errors.
    for answered in answers {
        let (caller, key) = (answered.caller, answered.key);
        let effect_of_key = db.effects.iter().any(|effect| effect.key == key);
        let unexpected = match &answered.answer {
            Answer::Other(error) => Some(error.clone()),
            Answer::LeaseLost if db.effects.iter().any(|effect| effect.caller == caller) => {
                Some("LeaseLost, though its effect committed".to_owned())
            }
            Answer::ResultLost if body != Body::Fenced || !effect_of_key => {
                Some("ResultLost, though no fenced effect was lost".to_owned())
            }
            // After every lease and skew has passed, with no fault left, a
            // key answers its result, or ResultLost if its fenced owner died.
            answer
                if answered.auditor
                    && !matches!(answer, Answer::Result(_) | Answer::ResultLost) =>
            {
                Some(format!("{answer} in the audit"))
            }
            _ => None,
        };
        if let Some(unexpected) = unexpected {
            report(
                Kind::UnexpectedAnswer,
                format!("c{caller} (k{key}) at step {}: {unexpected}", answered.step),
            );
        }
    }
    found
}
