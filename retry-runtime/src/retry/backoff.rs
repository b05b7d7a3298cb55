//! Backoff schedules: the delay before each retry, before jitter.

use std::time::Duration;

use steadfast_macro_support::{BackoffKind, BackoffSpec};

use crate::PolicyError;

/// A backoff schedule: `none`, `const(D)`, `linear(D)`, `exp(D)` or `fib(D)`,
/// with a cap that no delay exceeds. All arithmetic saturates: a schedule
/// never overflows, it reaches its cap and stays there.
///
/// A `Backoff` is an [`IntoIterator`] over the delays before retry 1, 2, …
///
/// # Default
/// `exp(100ms, factor = 2, max = 30s)`.
///
/// ```
/// use steadfast::Backoff;
/// use std::time::Duration;
///
/// let backoff = Backoff::exponential(Duration::from_millis(100)).with_max(Duration::from_millis(500));
/// let delays: Vec<_> = backoff.into_iter().take(4).map(|d| d.as_millis()).collect();
/// assert_eq!(delays, [100, 200, 400, 500]);
/// assert_eq!(Backoff::parse("exp(100ms, max = 500ms)").unwrap(), backoff);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    kind: BackoffKind,
    base: Duration,
    factor: f64,
    max: Duration,
}

impl Backoff {
    /// No delay: retry at once (and without touching the timer).
    pub const fn none() -> Backoff {
        Backoff {
            kind: BackoffKind::None,
            base: Duration::ZERO,
            factor: 1.0,
            max: Duration::ZERO,
        }
    }

    /// The same delay before every retry.
    pub const fn constant(delay: Duration) -> Backoff {
        Backoff {
            kind: BackoffKind::Constant,
            base: delay,
            factor: 1.0,
            max: delay,
        }
    }

    /// `base`, `2 × base`, `3 × base`, … capped at 30 s (or `base`, if larger).
    pub const fn linear(base: Duration) -> Backoff {
        Backoff::growing(BackoffKind::Linear, base, 1.0)
    }

    /// `base`, `2 × base`, `4 × base`, … capped at 30 s (or `base`, if larger).
    pub const fn exponential(base: Duration) -> Backoff {
        Backoff::growing(BackoffKind::Exponential, base, 2.0)
    }

    /// `base × 1, 1, 2, 3, 5, 8, …` capped at 30 s (or `base`, if larger).
    pub const fn fibonacci(base: Duration) -> Backoff {
        Backoff::growing(BackoffKind::Fibonacci, base, 1.0)
    }

    const fn growing(kind: BackoffKind, base: Duration, factor: f64) -> Backoff {
        let max = if base.as_nanos() > steadfast_macro_support::DEFAULT_CAP.as_nanos() {
            base
        } else {
            steadfast_macro_support::DEFAULT_CAP
        };
        Backoff {
            kind,
            base,
            factor,
            max,
        }
    }

    /// The growth factor of an exponential backoff.
    ///
    /// # Panics
    /// If the factor is not above 1 and at most 100 (at compile time, in a
    /// `const`), or if the backoff is not exponential.
    /// [`Backoff::parse`] reports the same mistakes as errors.
    pub const fn with_factor(mut self, factor: f64) -> Backoff {
        assert!(
            matches!(self.kind, BackoffKind::Exponential),
            "`factor` applies to exponential backoff only"
        );
        assert!(
            factor > 1.0 && factor <= 100.0,
            "the factor must be above 1 and at most 100"
        );
        self.factor = factor;
        self
    }

    /// The cap: no delay exceeds it, before or after jitter.
    ///
    /// # Panics
    /// If the cap is below the base delay (at compile time, in a `const`).
    pub const fn with_max(mut self, max: Duration) -> Backoff {
        assert!(
            max.as_nanos() >= self.base.as_nanos(),
            "the cap of a backoff must be at least its base delay"
        );
        if !matches!(self.kind, BackoffKind::None | BackoffKind::Constant) {
            self.max = max;
        }
        self
    }

    /// Parses the grammar of `#[retry(backoff = "…")]`.
    ///
    /// ```
    /// use steadfast::Backoff;
    /// assert!(Backoff::parse("fib(10ms, max = 1s)").is_ok());
    /// let error = Backoff::parse("exp(1s, max = 10ms)").unwrap_err();
    /// assert!(error.to_string().contains("below the base delay"));
    /// ```
    pub fn parse(text: &str) -> Result<Backoff, PolicyError> {
        Ok(Backoff::from_spec(steadfast_macro_support::parse_backoff(
            text,
        )?))
    }

    pub(crate) const fn from_spec(spec: BackoffSpec) -> Backoff {
        Backoff {
            kind: spec.kind,
            base: spec.base,
            factor: spec.factor,
            max: spec.max,
        }
    }

    /// The first delay.
    pub const fn base(&self) -> Duration {
        self.base
    }

    /// The cap.
    pub const fn max(&self) -> Duration {
        self.max
    }

    /// The delay before retry number `retry + 1` (so `delay(0)` is the first),
    /// before jitter.
    pub const fn delay(&self, retry: u32) -> Duration {
        self.spec().delay(retry)
    }

    /// The same schedule in the grammar's terms, for the bounds that
    /// `steadfast_macro_support` computes.
    pub(crate) const fn spec(&self) -> BackoffSpec {
        BackoffSpec {
            kind: self.kind,
            base: self.base,
            factor: self.factor,
            max: self.max,
        }
    }
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::from_spec(steadfast_macro_support::DEFAULT_BACKOFF)
    }
}

/// The delays of a [`Backoff`], one per retry, without end (a schedule that
/// reached its cap stays there; bound it with `take`).
#[derive(Debug, Clone)]
pub struct BackoffIter {
    backoff: Backoff,
    retry: u32,
}

impl Iterator for BackoffIter {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.backoff.delay(self.retry);
        self.retry = self.retry.saturating_add(1);
        Some(delay)
    }
}

impl IntoIterator for Backoff {
    type Item = Duration;
    type IntoIter = BackoffIter;

    fn into_iter(self) -> BackoffIter {
        BackoffIter {
            backoff: self,
            retry: 0,
        }
    }
}

pub(crate) fn duration_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(backoff: Backoff, count: usize) -> Vec<u128> {
        backoff
            .into_iter()
            .take(count)
            .map(|d| d.as_millis())
            .collect()
    }

    #[test]
    fn schedules_follow_their_kind() {
        let ms = Duration::from_millis;
        assert_eq!(millis(Backoff::none(), 3), [0, 0, 0]);
        assert_eq!(millis(Backoff::constant(ms(50)), 3), [50, 50, 50]);
        assert_eq!(millis(Backoff::linear(ms(100)), 4), [100, 200, 300, 400]);
        assert_eq!(
            millis(Backoff::exponential(ms(100)), 4),
            [100, 200, 400, 800]
        );
        assert_eq!(
            millis(Backoff::fibonacci(ms(10)), 7),
            [10, 10, 20, 30, 50, 80, 130]
        );
        assert_eq!(
            millis(Backoff::exponential(ms(100)).with_factor(1.5), 3),
            [100, 150, 225]
        );
    }

    #[test]
    fn caps_hold_and_math_saturates() {
        let capped =
            Backoff::exponential(Duration::from_millis(100)).with_max(Duration::from_secs(1));
        assert_eq!(capped.delay(3), Duration::from_millis(800));
        assert_eq!(capped.delay(4), Duration::from_secs(1));
        assert_eq!(capped.delay(u32::MAX), Duration::from_secs(1));
        let huge = Backoff::exponential(Duration::from_secs(3600)).with_max(Duration::MAX);
        assert_eq!(huge.delay(200), Duration::from_nanos(u64::MAX));
        let fib = Backoff::fibonacci(Duration::from_secs(1)).with_max(Duration::MAX);
        assert_eq!(fib.delay(500), Duration::from_nanos(u64::MAX));
        let linear = Backoff::linear(Duration::from_secs(1));
        assert_eq!(linear.delay(u32::MAX), Duration::from_secs(30));
        assert_eq!(Backoff::default().delay(20), Duration::from_secs(30));
    }

    #[test]
    fn parse_matches_constructors() {
        let ms = Duration::from_millis;
        let cases = [
            ("none", Backoff::none()),
            ("const(50ms)", Backoff::constant(ms(50))),
            ("linear(100ms)", Backoff::linear(ms(100))),
            ("fib(10ms)", Backoff::fibonacci(ms(10))),
            (
                "exp(10ms, factor = 3, max = 2s)",
                Backoff::exponential(ms(10))
                    .with_factor(3.0)
                    .with_max(ms(2000)),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(Backoff::parse(text).unwrap(), expected, "{text}");
        }
    }
}
