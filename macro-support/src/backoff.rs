use std::time::Duration;

use crate::{GrammarError, closest, format_duration, parse_duration};

/// The shape of the delays between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackoffKind {
    /// No delay at all: retry at once.
    None,
    /// The same delay every time.
    Constant,
    /// `base`, `2 × base`, `3 × base`, …
    Linear,
    /// `base`, `base × factor`, `base × factor²`, …
    Exponential,
    /// `base × 1, 1, 2, 3, 5, 8, …`
    Fibonacci,
}

/// A parsed backoff string: its kind, base delay, growth factor and cap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffSpec {
    /// The shape of the schedule.
    pub kind: BackoffKind,
    /// The first delay.
    pub base: Duration,
    /// Growth factor (exponential only; 2 unless given).
    pub factor: f64,
    /// No delay exceeds this, before or after jitter.
    pub max: Duration,
}

impl BackoffSpec {
    /// The delay before retry number `retry + 1` (so `delay(0)` is the
    /// first), before jitter: saturating, and never above the cap. The
    /// runtime's schedule and the compile-time checks both compute it here.
    ///
    /// ```
    /// use steadfast_macro_support::parse_backoff;
    /// use std::time::Duration;
    /// let spec = parse_backoff("exp(100ms, max = 1s)").unwrap();
    /// assert_eq!(spec.delay(2), Duration::from_millis(400));
    /// assert_eq!(spec.delay(u32::MAX), Duration::from_secs(1));
    /// ```
    pub const fn delay(&self, retry: u32) -> Duration {
        let base = nanos(self.base);
        let delay = match self.kind {
            BackoffKind::None => 0,
            BackoffKind::Constant => base,
            BackoffKind::Linear => base.saturating_mul(retry as u64 + 1),
            BackoffKind::Exponential => {
                let scaled = base as f64 * powi(self.factor, retry);
                if scaled >= u64::MAX as f64 {
                    u64::MAX
                } else {
                    scaled.round() as u64
                }
            }
            BackoffKind::Fibonacci => base.saturating_mul(fibonacci(retry)),
        };
        if delay > nanos(self.max) {
            self.max
        } else {
            Duration::from_nanos(delay)
        }
    }
}

/// A duration in nanoseconds, saturating at `u64::MAX` (584 years).
pub(crate) const fn nanos(duration: Duration) -> u64 {
    let nanos = duration.as_nanos();
    if nanos > u64::MAX as u128 {
        u64::MAX
    } else {
        nanos as u64
    }
}

/// `factor` to the power `exponent`, by squaring (as `f64::powi`, which is
/// not `const`).
const fn powi(factor: f64, exponent: u32) -> f64 {
    let (mut square, mut exponent, mut power) = (factor, exponent, 1.0);
    loop {
        if exponent & 1 == 1 {
            power *= square;
        }
        exponent >>= 1;
        if exponent == 0 {
            return power;
        }
        square *= square;
    }
}

/// 1, 1, 2, 3, 5, … (`fibonacci(0) == 1`), saturating.
const fn fibonacci(index: u32) -> u64 {
    let (mut current, mut next) = (1u64, 1u64);
    let mut step = 0;
    // Once saturated, it stays there: stop.
    while step < index && current < u64::MAX {
        (current, next) = (next, current.saturating_add(next));
        step += 1;
    }
    current
}

/// The cap of a growing backoff when none is given (or the base, if larger).
pub const DEFAULT_CAP: Duration = Duration::from_secs(30);

/// The backoff used when none is given: `exp(100ms, max = 30s)`.
pub const DEFAULT_BACKOFF: BackoffSpec = BackoffSpec {
    kind: BackoffKind::Exponential,
    base: Duration::from_millis(100),
    factor: 2.0,
    max: DEFAULT_CAP,
};

const KINDS: [(&str, BackoffKind); 5] = [
    ("none", BackoffKind::None),
    ("const", BackoffKind::Constant),
    ("linear", BackoffKind::Linear),
    ("exp", BackoffKind::Exponential),
    ("fib", BackoffKind::Fibonacci),
];

const FORMS: &str = "`none`, `const(100ms)`, `linear(100ms)`, `exp(100ms)`, `fib(100ms)`, with options after the base as in `exp(100ms, factor = 2, max = 30s)`";

/// Parses a backoff string: `none`, `const(D)`, `linear(D)`, `exp(D)` or
/// `fib(D)`, with options after the base: `factor = F` (exp only, above 1)
/// and `max = D` (the cap, at least the base).
///
/// ```
/// use steadfast_macro_support::{parse_backoff, BackoffKind};
/// let spec = parse_backoff("exp(50ms, factor = 1.5)").unwrap();
/// assert_eq!((spec.kind, spec.factor), (BackoffKind::Exponential, 1.5));
/// assert!(parse_backoff("exp(1s, max = 100ms)").is_err());
/// ```
pub fn parse_backoff(input: &str) -> Result<BackoffSpec, GrammarError> {
    let text = input.trim();
    let (name, inner) = match text.split_once('(') {
        Some((name, rest)) => {
            let Some(inner) = rest.trim_end().strip_suffix(')') else {
                return Err(malformed(input, "the closing `)` is missing"));
            };
            (name.trim(), Some(inner))
        }
        None => (text, None),
    };
    let Some(&(_, kind)) = KINDS.iter().find(|(known, _)| *known == name) else {
        let hint = closest(name, KINDS.iter().map(|(known, _)| *known))
            .map(|known| format!(" (did you mean `{known}`?)"))
            .unwrap_or_default();
        return Err(malformed(
            input,
            &format!("`{name}` is not a backoff kind{hint}"),
        ));
    };
    if kind == BackoffKind::None {
        return match inner {
            None => Ok(BackoffSpec {
                kind,
                base: Duration::ZERO,
                factor: 1.0,
                max: Duration::ZERO,
            }),
            Some(_) => Err(malformed(input, "`none` takes no arguments")),
        };
    }
    let Some(inner) = inner else {
        return Err(malformed(
            input,
            &format!("`{name}` needs a base delay, as in `{name}(100ms)`"),
        ));
    };
    let mut parts = inner.split(',').map(str::trim);
    let base_text = parts.next().unwrap_or_default();
    if base_text.is_empty() || base_text.contains('=') {
        return Err(malformed(
            input,
            &format!("the base delay comes first, as in `{name}(100ms)`"),
        ));
    }
    let base = parse_duration(base_text)?;
    let mut factor: Option<f64> = None;
    let mut cap: Option<Duration> = None;
    for option in parts {
        let Some((key, value)) = option.split_once('=') else {
            return Err(malformed(
                input,
                &format!("`{option}` is not an option; options are `factor = F` and `max = D`"),
            ));
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "max" if cap.is_some() => return Err(malformed(input, "`max` is given twice")),
            "max" => cap = Some(parse_duration(value)?),
            "factor" if kind != BackoffKind::Exponential => {
                return Err(malformed(
                    input,
                    &format!("`factor` applies to `exp` only, not to `{name}`"),
                ));
            }
            "factor" if factor.is_some() => {
                return Err(malformed(input, "`factor` is given twice"));
            }
            "factor" => factor = Some(parse_factor(input, value)?),
            other => {
                let hint = closest(other, ["max", "factor"])
                    .map(|known| format!(" (did you mean `{known}`?)"))
                    .unwrap_or_default();
                return Err(malformed(
                    input,
                    &format!(
                        "`{other}` is not an option{hint}; options are `factor = F` (exp only) and `max = D`"
                    ),
                ));
            }
        }
    }
    if kind == BackoffKind::Constant && cap.is_some() {
        return Err(malformed(
            input,
            "`const` never grows, so `max` has no meaning there; remove it",
        ));
    }
    let max = match cap {
        Some(cap) if cap < base => {
            return Err(GrammarError::new(format!(
                "invalid backoff `{input}`: the cap `max = {}` is below the base delay `{}`; give a cap at least as large as the base",
                format_duration(cap),
                format_duration(base)
            )));
        }
        Some(cap) => cap,
        None if kind == BackoffKind::Constant => base,
        None => base.max(DEFAULT_CAP),
    };
    Ok(BackoffSpec {
        kind,
        base,
        factor: factor.unwrap_or(if kind == BackoffKind::Exponential {
            2.0
        } else {
            1.0
        }),
        max,
    })
}

fn parse_factor(input: &str, value: &str) -> Result<f64, GrammarError> {
    match value.parse::<f64>() {
        Ok(factor) if factor.is_finite() && factor > 1.0 && factor <= 100.0 => Ok(factor),
        Ok(_) => Err(malformed(
            input,
            "`factor` must be above 1 and at most 100; for a fixed delay write `const(D)`",
        )),
        Err(_) => Err(malformed(
            input,
            &format!(
                "`factor = {value}` is not a number; write e.g. `factor = 2` or `factor = 1.5`"
            ),
        )),
    }
}

fn malformed(input: &str, why: &str) -> GrammarError {
    GrammarError::new(format!(
        "invalid backoff `{input}`: {why}; the forms are {FORMS}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn every_kind_parses_with_its_defaults() {
        let none = parse_backoff("none").unwrap();
        assert_eq!(none.kind, BackoffKind::None);
        let constant = parse_backoff("const(250ms)").unwrap();
        assert_eq!(
            (constant.kind, constant.base, constant.max),
            (BackoffKind::Constant, ms(250), ms(250))
        );
        let linear = parse_backoff("linear(100ms)").unwrap();
        assert_eq!(
            (linear.kind, linear.max),
            (BackoffKind::Linear, DEFAULT_CAP)
        );
        let exp = parse_backoff("exp(100ms)").unwrap();
        assert_eq!(exp, DEFAULT_BACKOFF);
        let fib = parse_backoff(" fib( 10ms , max = 1s ) ").unwrap();
        assert_eq!(
            (fib.kind, fib.base, fib.max),
            (BackoffKind::Fibonacci, ms(10), ms(1000))
        );
        let big = parse_backoff("exp(1m)").unwrap();
        assert_eq!(big.max, Duration::from_secs(60));
    }

    #[test]
    fn options_parse() {
        let spec = parse_backoff("exp(100ms, factor = 3, max = 5s)").unwrap();
        assert_eq!((spec.factor, spec.max), (3.0, Duration::from_secs(5)));
    }

    #[test]
    fn mistakes_are_explained() {
        let cases = [
            ("expo(100ms)", "did you mean `exp`"),
            ("exp", "needs a base delay"),
            ("exp(100ms", "closing `)`"),
            ("exp(max = 1s)", "base delay comes first"),
            ("exp(100ms, max = 50ms)", "below the base delay `100ms`"),
            ("exp(100ms, maxx = 1s)", "did you mean `max`"),
            ("exp(100ms, factor = 1)", "above 1"),
            ("exp(100ms, factor = two)", "not a number"),
            ("linear(100ms, factor = 2)", "applies to `exp` only"),
            ("exp(100ms, max = 1s, max = 2s)", "given twice"),
            ("const(1s, max = 2s)", "never grows"),
            ("none(1s)", "takes no arguments"),
            ("exp(100)", "invalid duration"),
            ("exp(100ms, 2)", "is not an option"),
        ];
        for (input, expected) in cases {
            let error = parse_backoff(input).unwrap_err();
            assert!(error.message().contains(expected), "{input}: {error}");
        }
    }
}
