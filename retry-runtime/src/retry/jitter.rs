//! Jitter: randomizing delays so that clients that failed together do not
//! retry together.

use std::time::Duration;

use steadfast_macro_support::JitterSpec;

use super::backoff::duration_nanos;
use crate::{Backoff, PolicyError};

/// How each computed delay is randomized. Whatever the jitter, the result
/// never exceeds the backoff's cap.
///
/// # Default
/// [`Jitter::Full`], uniform in `[0, d]`: the choice of the gRPC retry design
/// and of AWS's study of backoff and jitter, because it spreads a crowd of
/// clients best and so loads the server least.
///
/// ```
/// use steadfast::Jitter;
/// assert_eq!(Jitter::parse("25%").unwrap(), Jitter::Band(0.25));
/// assert_eq!(Jitter::default(), Jitter::Full);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Jitter {
    /// The delay as computed: exact schedules, for tests and for servers
    /// that are never hit by crowds.
    None,
    /// Uniform in `[0, d]`.
    #[default]
    Full,
    /// Uniform in `[d/2, d]`: never much shorter than the schedule.
    Equal,
    /// Uniform in `[base, 3 × previous delay]`, capped (AWS "decorrelated
    /// jitter"); it grows from the base by itself, whatever the backoff kind.
    Decorrelated,
    /// Uniform in `[d × (1 − p), d × (1 + p)]`, capped; `Band(0.25)` is `±25%`.
    Band(f64),
}

impl Jitter {
    /// Parses `none`, `full`, `equal`, `decorrelated` or a band such as `25%`.
    pub fn parse(text: &str) -> Result<Jitter, PolicyError> {
        Ok(Jitter::from_spec(steadfast_macro_support::parse_jitter(
            text,
        )?))
    }

    pub(crate) const fn from_spec(spec: JitterSpec) -> Jitter {
        match spec {
            JitterSpec::None => Jitter::None,
            JitterSpec::Full => Jitter::Full,
            JitterSpec::Equal => Jitter::Equal,
            JitterSpec::Decorrelated => Jitter::Decorrelated,
            JitterSpec::Band(fraction) => Jitter::Band(fraction),
        }
    }

    /// Randomizes `delay`; `previous` is the delay slept before the last
    /// retry (the base before the first), used by decorrelated jitter.
    pub(crate) fn apply(
        self,
        delay: Duration,
        previous: Duration,
        backoff: &Backoff,
        rng: &mut fastrand::Rng,
    ) -> Duration {
        let nanos = duration_nanos(delay);
        let jittered = match self {
            Jitter::None => return delay,
            Jitter::Full => rng.u64(0..=nanos),
            Jitter::Equal => rng.u64(nanos / 2..=nanos),
            Jitter::Decorrelated => {
                let low = duration_nanos(backoff.base());
                let high = duration_nanos(previous).saturating_mul(3).max(low);
                rng.u64(low..=high)
            }
            Jitter::Band(fraction) => {
                let spread = (nanos as f64 * fraction).min(u64::MAX as f64) as u64;
                rng.u64(nanos.saturating_sub(spread)..=nanos.saturating_add(spread))
            }
        };
        Duration::from_nanos(jittered).min(backoff.max())
    }
}

/// The delays of a policy, jittered, one per retry: what the engine sleeps.
///
/// ```
/// use steadfast::RetryPolicy;
/// let policy = RetryPolicy::parse("exp(100ms, max = 1s)").unwrap();
/// for delay in policy.delays_seeded(7).take(10) {
///     assert!(delay.as_millis() <= 1000);
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Delays {
    backoff: Backoff,
    jitter: Jitter,
    retry: u32,
    previous: Duration,
    rng: fastrand::Rng,
}

impl Delays {
    pub(crate) fn new(backoff: Backoff, jitter: Jitter, rng: fastrand::Rng) -> Delays {
        Delays {
            backoff,
            jitter,
            retry: 0,
            previous: backoff.base(),
            rng,
        }
    }
}

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let computed = self.backoff.delay(self.retry);
        let delay = self
            .jitter
            .apply(computed, self.previous, &self.backoff, &mut self.rng);
        self.retry = self.retry.saturating_add(1);
        self.previous = delay;
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEEDS: u64 = 2_000;

    fn delays(backoff: &str, jitter: &str, seed: u64, count: usize) -> Vec<Duration> {
        let backoff = Backoff::parse(backoff).unwrap();
        let jitter = Jitter::parse(jitter).unwrap();
        Delays::new(backoff, jitter, fastrand::Rng::with_seed(seed))
            .take(count)
            .collect()
    }

    #[test]
    fn none_is_exact() {
        let ms: Vec<u128> = delays("exp(100ms)", "none", 1, 3)
            .iter()
            .map(Duration::as_millis)
            .collect();
        assert_eq!(ms, [100, 200, 400]);
    }

    #[test]
    fn full_and_equal_stay_in_bounds_and_spread() {
        let (mut lowest, mut highest) = (Duration::MAX, Duration::ZERO);
        for seed in 0..SEEDS {
            let full = delays("exp(100ms)", "full", seed, 3);
            let equal = delays("exp(100ms)", "equal", seed, 3);
            for (retry, expected) in [100u64, 200, 400].into_iter().enumerate() {
                let expected = Duration::from_millis(expected);
                assert!(full[retry] <= expected);
                assert!(equal[retry] >= expected / 2 && equal[retry] <= expected);
            }
            lowest = lowest.min(full[0]);
            highest = highest.max(full[0]);
        }
        assert!(
            lowest < Duration::from_millis(5),
            "full jitter reaches near zero"
        );
        assert!(
            highest > Duration::from_millis(95),
            "full jitter reaches near the delay"
        );
    }

    #[test]
    fn band_and_decorrelated_respect_the_cap() {
        let cap = Duration::from_millis(300);
        for seed in 0..SEEDS {
            for delay in delays("exp(100ms, max = 300ms)", "50%", seed, 6) {
                assert!(
                    delay >= Duration::from_millis(50) && delay <= cap,
                    "{delay:?}"
                );
            }
            let decorrelated = delays("exp(100ms, max = 300ms)", "decorrelated", seed, 6);
            let mut previous = Duration::from_millis(100);
            for delay in decorrelated {
                assert!(delay >= Duration::from_millis(100) && delay <= cap);
                assert!(delay <= (previous * 3).max(Duration::from_millis(100)));
                previous = delay;
            }
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_delays() {
        assert_eq!(
            delays("fib(10ms)", "full", 42, 8),
            delays("fib(10ms)", "full", 42, 8)
        );
        assert_ne!(
            delays("fib(10ms)", "full", 42, 8),
            delays("fib(10ms)", "full", 43, 8)
        );
    }
}
