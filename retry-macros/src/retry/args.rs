//! Parsing and checking the arguments of `#[retry(…)]`.

use std::time::Duration;

use steadfast_macro_support::{
    BackoffSpec, JitterSpec, NestedSpec, contradictions, parse_backoff, parse_code_list,
    parse_jitter, parse_nested,
};
use syn::{Expr, ExprLit, ExprPath, Lit, LitInt, Meta, Path};

use steadfast_macro_support::syntax::{
    AttributeArguments, Ctxt, Spanned, positive_duration, runtime_root, string_value, value_of,
};

/// Each argument, with a value to show in messages.
const ARGUMENTS: [(&str, &str); 12] = [
    ("max", "3"),
    ("backoff", "\"exp(100ms)\""),
    ("jitter", "\"full\""),
    ("on", "\"Unavailable|DeadlineExceeded\""),
    ("timeout", "\"5s\""),
    ("deadline", "\"30s\""),
    ("budget", "BUDGET"),
    ("nested", "\"share\""),
    ("hedge", "\"50ms\""),
    ("notify", "log_retry"),
    ("allow_non_transient", ""),
    ("crate", "::steadfast"),
];

/// What `on = …` says to retry.
pub(crate) enum On {
    /// `on = "Unavailable|DeadlineExceeded"`.
    Codes(Spanned<Vec<&'static str>>),
    /// `on = path::to::predicate`, a `fn(&E) -> bool`.
    Predicate(Expr),
}

/// The arguments of one `#[retry(…)]`, each checked on its own; absent ones
/// take the documented defaults at expansion.
#[derive(Default)]
pub(crate) struct RetryArgs {
    pub(crate) max: Option<(u32, LitInt)>,
    pub(crate) backoff: Option<Spanned<BackoffSpec>>,
    pub(crate) jitter: Option<Spanned<JitterSpec>>,
    pub(crate) on: Option<On>,
    pub(crate) timeout: Option<Spanned<Duration>>,
    pub(crate) deadline: Option<Spanned<Duration>>,
    pub(crate) budget: Option<Expr>,
    pub(crate) nested: Option<Spanned<NestedSpec>>,
    pub(crate) hedge: Option<Spanned<Duration>>,
    pub(crate) notify: Option<Expr>,
    pub(crate) allow_non_transient: Option<Path>,
    pub(crate) crate_path: Option<Path>,
    /// Whether `max`, `backoff` or `jitter` was given but invalid: the
    /// schedule is then unknown, and the time limits are not checked
    /// against it.
    schedule_invalid: bool,
}

impl AttributeArguments for RetryArgs {
    const ATTRIBUTE: &'static str = "retry";
    const ARGUMENTS: &'static [(&'static str, &'static str)] = &ARGUMENTS;

    fn set(&mut self, name: &str, meta: Meta, cx: &Ctxt) {
        if name == "allow_non_transient" {
            match meta {
                Meta::Path(path) => self.allow_non_transient = Some(path),
                other => cx.error_spanned_by(
                    other,
                    "`allow_non_transient` takes no value: write `allow_non_transient`",
                ),
            }
            return;
        }
        let example = Self::example(name);
        let Some(value) = value_of(meta, name, example, cx) else {
            return;
        };
        match name {
            "max" => {
                self.max = parse_max(&value, cx);
                self.schedule_invalid |= self.max.is_none();
            }
            "backoff" => {
                self.backoff = string_value(&value, name, example, cx, parse_backoff);
                self.schedule_invalid |= self.backoff.is_none();
            }
            "jitter" => {
                self.jitter = string_value(&value, name, example, cx, parse_jitter);
                self.schedule_invalid |= self.jitter.is_none();
            }
            "timeout" => self.timeout = positive_duration(&value, name, example, cx),
            "deadline" => self.deadline = positive_duration(&value, name, example, cx),
            "on" => {
                self.on = match value {
                    Expr::Lit(ExprLit {
                        lit: Lit::Str(_), ..
                    }) => string_value(&value, name, example, cx, parse_code_list).map(On::Codes),
                    Expr::Path(_) | Expr::Closure(_) => Some(On::Predicate(value)),
                    other => {
                        cx.error_spanned_by(
                            other,
                            "`on` takes codes, as in `on = \"Unavailable|DeadlineExceeded\"`, or the path of a `fn(&E) -> bool`",
                        );
                        None
                    }
                }
            }
            "budget" => self.budget = Some(value),
            "nested" => self.nested = string_value(&value, name, example, cx, parse_nested),
            "hedge" => self.hedge = positive_duration(&value, name, example, cx),
            "notify" => self.notify = Some(value),
            "crate" => match value {
                Expr::Path(ExprPath { path, .. }) => self.crate_path = Some(path),
                other => {
                    cx.error_spanned_by(other, "`crate` takes a path, as in `crate = ::steadfast`")
                }
            },
            _ => unreachable!("every argument in ARGUMENTS is handled"),
        }
    }

    fn check(&self, cx: &Ctxt) {
        self.check_across(cx);
        self.check_time_limits(cx);
    }
}

impl RetryArgs {
    /// A policy that cannot do what it says, each at the argument at fault
    /// (`steadfast_macro_support::contradictions` has the rule):
    ///
    /// ```text
    /// #[retry(timeout = "5s", deadline = "2s")]        → error at "5s": exceeds the deadline
    /// #[retry(max = 3, backoff = "exp(100ms)", jitter = "none", deadline = "500ms")]
    ///                                                  → error at "500ms": sleeps of at least
    ///                                                    100ms + 200ms + 400ms reach it
    /// ```
    fn check_time_limits(&self, cx: &Ctxt) {
        if self.schedule_invalid || (self.timeout.is_none() && self.deadline.is_none()) {
            return;
        }
        let max = self
            .max
            .as_ref()
            .map_or(steadfast_macro_support::DEFAULT_MAX_RETRIES, |(max, _)| {
                *max
            });
        let backoff = self
            .backoff
            .as_ref()
            .map_or(steadfast_macro_support::DEFAULT_BACKOFF, |backoff| {
                backoff.value
            });
        let jitter = self
            .jitter
            .as_ref()
            .map_or(steadfast_macro_support::DEFAULT_JITTER, |jitter| {
                jitter.value
            });
        let limit = |limit: &Option<Spanned<Duration>>| limit.as_ref().map(|limit| limit.value);
        for contradiction in contradictions(
            max,
            &backoff,
            jitter,
            limit(&self.timeout),
            limit(&self.deadline),
        ) {
            let at = match contradiction.argument {
                "timeout" => &self.timeout,
                _ => &self.deadline,
            };
            if let Some(at) = at {
                cx.error_spanned_by(&at.literal, contradiction.error);
            }
        }
    }

    fn check_across(&self, cx: &Ctxt) {
        let Some(On::Codes(codes)) = &self.on else {
            return;
        };
        if self.allow_non_transient.is_some() {
            return;
        }
        let permanent: Vec<&str> = codes
            .value
            .iter()
            .copied()
            .filter(|code| !steadfast_macro_support::is_transient(code))
            .collect();
        if let [first, ..] = permanent.as_slice() {
            let list = permanent
                .iter()
                .map(|code| format!("`{code}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let (verb, pronoun) = if permanent.len() == 1 {
                ("is", "it")
            } else {
                ("are", "them")
            };
            cx.error_spanned_by(
                &codes.literal,
                format!(
                    "{list} {verb} not transient: retrying cannot change the answer; remove {pronoun}, or add `allow_non_transient` if your server really returns `{first}` for transient failures"
                ),
            );
        }
    }

    /// The root of the runtime in generated code.
    pub(crate) fn root(&self) -> Path {
        runtime_root(self.crate_path.as_ref())
    }
}

fn parse_max(value: &Expr, cx: &Ctxt) -> Option<(u32, LitInt)> {
    let Expr::Lit(ExprLit {
        lit: Lit::Int(literal),
        ..
    }) = value
    else {
        cx.error_spanned_by(value, "`max` takes an integer literal, the number of retries after the first attempt: `max = 3`");
        return None;
    };
    let limit = steadfast_macro_support::MAX_RETRIES;
    match literal.base10_parse::<u32>() {
        Ok(0) => cx.error_spanned_by(
            literal,
            "`max = 0` would never retry: give at least 1 (`max` counts retries after the first attempt), or remove #[retry]",
        ),
        Ok(max) if max <= limit => return Some((max, literal.clone())),
        _ => cx.error_spanned_by(
            literal,
            format!("`max = {literal}` is too many retries: at most {limit}; to keep trying for a while, bound it by time with `deadline = \"…\"`"),
        ),
    }
    None
}
