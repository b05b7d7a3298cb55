//! What a schedule allows: the shortest and the longest each sleep can be
//! under a jitter, how many attempts a deadline has room for, and the time
//! limits that contradict the rest of a policy.
//!
//! `RetryPolicy::worst_case` (a `const fn`), `RetryPolicyBuilder::build` and
//! `#[retry]` at compile time all compute them here, with the arithmetic the
//! runtime's jitter uses, so that the bounds hold for the delays it draws.

use std::time::Duration;

use crate::{BackoffSpec, GrammarError, JitterSpec, backoff::nanos, format_duration};

/// The shortest sleep before retry `retry + 1` (so `shortest_sleep(…, 0)` is
/// the first): the backoff's delay at the low end of its jitter.
///
/// ```
/// use steadfast_macro_support::{parse_backoff, shortest_sleep, JitterSpec};
/// use std::time::Duration;
/// let backoff = parse_backoff("exp(100ms)").unwrap();
/// assert_eq!(shortest_sleep(&backoff, JitterSpec::Equal, 1), Duration::from_millis(100));
/// assert_eq!(shortest_sleep(&backoff, JitterSpec::Full, 1), Duration::ZERO);
/// ```
pub const fn shortest_sleep(backoff: &BackoffSpec, jitter: JitterSpec, retry: u32) -> Duration {
    let delay = nanos(backoff.delay(retry));
    let shortest = match jitter {
        JitterSpec::None => delay,
        JitterSpec::Full => 0,
        JitterSpec::Equal => delay / 2,
        JitterSpec::Decorrelated => nanos(backoff.base),
        JitterSpec::Band(fraction) => delay.saturating_sub(band_spread(delay, fraction)),
    };
    capped(shortest, backoff)
}

/// The longest sleep before retry `retry + 1`: the backoff's delay at the
/// high end of its jitter, never above the cap. Decorrelated jitter draws
/// from `[base, 3 × previous sleep]`, so its bound grows from the base by
/// threes, whatever the backoff's kind.
///
/// ```
/// use steadfast_macro_support::{longest_sleep, parse_backoff, JitterSpec};
/// use std::time::Duration;
/// let backoff = parse_backoff("exp(100ms, max = 1s)").unwrap();
/// assert_eq!(longest_sleep(&backoff, JitterSpec::Band(0.25), 0), Duration::from_millis(125));
/// assert_eq!(longest_sleep(&backoff, JitterSpec::Decorrelated, 1), Duration::from_millis(900));
/// assert_eq!(longest_sleep(&backoff, JitterSpec::Decorrelated, 2), Duration::from_secs(1));
/// ```
pub const fn longest_sleep(backoff: &BackoffSpec, jitter: JitterSpec, retry: u32) -> Duration {
    let mut previous = nanos(backoff.base);
    let mut step = 0;
    loop {
        let longest = longest_after(backoff, jitter, step, previous);
        if step == retry {
            return Duration::from_nanos(longest);
        }
        previous = longest;
        step += 1;
    }
}

/// The sums of the sleeps before retries 1 to `retries`, each at its
/// shortest and each at its longest (saturating).
///
/// ```
/// use steadfast_macro_support::{parse_backoff, sleep_bounds, JitterSpec};
/// use std::time::Duration;
/// let backoff = parse_backoff("exp(100ms)").unwrap();
/// let bounds = sleep_bounds(&backoff, JitterSpec::Equal, 3);
/// assert_eq!(bounds.shortest, Duration::from_millis(350));
/// assert_eq!(bounds.longest, Duration::from_millis(700));
/// ```
pub const fn sleep_bounds(backoff: &BackoffSpec, jitter: JitterSpec, retries: u32) -> SleepBounds {
    let (mut shortest, mut longest) = (0u64, 0u64);
    let mut previous = nanos(backoff.base);
    let mut retry = 0;
    while retry < retries {
        shortest = shortest.saturating_add(nanos(shortest_sleep(backoff, jitter, retry)));
        previous = longest_after(backoff, jitter, retry, previous);
        longest = longest.saturating_add(previous);
        retry += 1;
    }
    SleepBounds {
        shortest: Duration::from_nanos(shortest),
        longest: Duration::from_nanos(longest),
    }
}

/// The least and the most time a run of sleeps can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SleepBounds {
    /// Every sleep at its shortest.
    pub shortest: Duration,
    /// Every sleep at its longest.
    pub longest: Duration,
}

/// The most attempts, up to `max_retries + 1`, that a call can make within
/// `deadline`: with attempts that fail at once and every sleep at its
/// shortest, retry `n` is made only if the sleeps before it, together, end
/// before the deadline (the engine starts no sleep that would end at or
/// past it).
///
/// ```
/// use steadfast_macro_support::{attempts_within, parse_backoff, JitterSpec};
/// use std::time::Duration;
/// let backoff = parse_backoff("exp(100ms)").unwrap();
/// // 100ms + 200ms end before 500ms; 400ms more would not.
/// assert_eq!(attempts_within(&backoff, JitterSpec::None, 3, Duration::from_millis(500)), 3);
/// assert_eq!(attempts_within(&backoff, JitterSpec::Full, 3, Duration::from_millis(500)), 4);
/// ```
pub const fn attempts_within(
    backoff: &BackoffSpec,
    jitter: JitterSpec,
    max_retries: u32,
    deadline: Duration,
) -> u32 {
    let deadline = nanos(deadline);
    let mut slept = 0u64;
    let mut retries = 0;
    while retries < max_retries {
        slept = slept.saturating_add(nanos(shortest_sleep(backoff, jitter, retries)));
        if slept >= deadline {
            break;
        }
        retries += 1;
    }
    retries + 1
}

/// A time limit that contradicts the rest of a policy: the argument at
/// fault (`timeout` or `deadline`) and a message that says what fits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contradiction {
    /// The argument to point at: `"timeout"` or `"deadline"`.
    pub argument: &'static str,
    /// What is wrong and what to write instead.
    pub error: GrammarError,
}

/// The time limits of a policy that cannot do what it says, in argument
/// order, empty when none does:
///
/// - a `timeout` above the `deadline`: the deadline cuts every attempt
///   first, so the timeout could never apply;
/// - a `deadline` that certainly leaves no room for the `max + 1` attempts:
///   even when every attempt fails at once, the sleeps before the retries,
///   each at its shortest under the jitter, reach the deadline (with `full`
///   jitter the shortest sleep is zero, so a deadline never contradicts it).
///   A server's pushback, which replaces a sleep, is not counted on.
///
/// ```
/// use steadfast_macro_support::{contradictions, parse_backoff, JitterSpec};
/// use std::time::Duration;
/// let backoff = parse_backoff("exp(100ms)").unwrap();
/// let found = contradictions(3, &backoff, JitterSpec::None, None, Some(Duration::from_millis(500)));
/// assert_eq!(found[0].argument, "deadline");
/// assert!(found[0].error.message().contains("at most 3 of the 4 attempts"));
/// assert!(contradictions(3, &backoff, JitterSpec::Full, None, Some(Duration::from_millis(500))).is_empty());
/// ```
pub fn contradictions(
    max_retries: u32,
    backoff: &BackoffSpec,
    jitter: JitterSpec,
    timeout: Option<Duration>,
    deadline: Option<Duration>,
) -> Vec<Contradiction> {
    let Some(deadline) = deadline else {
        return Vec::new();
    };
    let mut found = Vec::new();
    if let Some(timeout) = timeout
        && timeout > deadline
    {
        found.push(Contradiction {
            argument: "timeout",
            error: GrammarError::new(format!(
                "`timeout = {}` exceeds `deadline = {}`: the deadline cuts every attempt first, so the timeout would never apply; write a timeout ≤ the deadline, or drop one",
                format_duration(timeout),
                format_duration(deadline),
            )),
        });
    }
    let fit = attempts_within(backoff, jitter, max_retries, deadline);
    if fit <= max_retries {
        found.push(Contradiction {
            argument: "deadline",
            error: GrammarError::new(deadline_too_short(
                max_retries,
                backoff,
                jitter,
                deadline,
                fit,
            )),
        });
    }
    found
}

/// "`deadline = 1s` leaves room for at most 3 of the 4 attempts …".
fn deadline_too_short(
    max_retries: u32,
    backoff: &BackoffSpec,
    jitter: JitterSpec,
    deadline: Duration,
    fit: u32,
) -> String {
    let sleeps: Vec<String> = (0..max_retries)
        .map(|retry| format_duration(shortest_sleep(backoff, jitter, retry)))
        .collect();
    let listed = match sleeps.as_slice() {
        [first, second, third, .., last] if sleeps.len() > 4 => {
            format!("{first}, {second}, {third}, …, {last}")
        }
        all => all.join(", "),
    };
    let why = match jitter {
        JitterSpec::None | JitterSpec::Full => String::new(),
        JitterSpec::Equal => " (equal jitter halves each delay at most)".to_owned(),
        JitterSpec::Decorrelated => {
            " (decorrelated jitter never sleeps less than the base)".to_owned()
        }
        JitterSpec::Band(fraction) => {
            let percent = (fraction * 100_000.0).round() / 1000.0;
            format!(" (the ±{percent}% jitter shortens each delay by {percent}% at most)")
        }
    };
    let total = format_duration(sleep_bounds(backoff, jitter, max_retries).shortest);
    let fix = if fit > 1 {
        format!(
            "raise the deadline above {total}, or lower `max` to {}",
            fit - 1
        )
    } else {
        format!(
            "the first sleep alone reaches the deadline, so no retry fits: raise the deadline above {total}, or shorten the backoff"
        )
    };
    let attempts = u64::from(max_retries) + 1;
    format!(
        "`deadline = {}` leaves room for at most {fit} of the {attempts} attempts that `max = {max_retries}` asks for: even if every attempt failed at once, the sleeps before the retries would last at least {listed}{why}, {total} in all, and no sleep starts that would end at or past the deadline; {fix}",
        format_duration(deadline),
    )
}

/// The longest sleep before retry `retry + 1`, given the longest the sleep
/// before it could be (the base before the first).
const fn longest_after(
    backoff: &BackoffSpec,
    jitter: JitterSpec,
    retry: u32,
    previous: u64,
) -> u64 {
    let delay = nanos(backoff.delay(retry));
    let longest = match jitter {
        JitterSpec::None | JitterSpec::Full | JitterSpec::Equal => delay,
        JitterSpec::Band(fraction) => delay.saturating_add(band_spread(delay, fraction)),
        JitterSpec::Decorrelated => {
            let base = nanos(backoff.base);
            let high = previous.saturating_mul(3);
            if high > base { high } else { base }
        }
    };
    nanos(capped(longest, backoff))
}

/// How far a band jitter may move `delay` either way, in nanoseconds: the
/// runtime's jitter draws from `delay ± band_spread(delay, fraction)`.
///
/// ```
/// assert_eq!(steadfast_macro_support::band_spread(1_000, 0.25), 250);
/// ```
pub const fn band_spread(delay: u64, fraction: f64) -> u64 {
    // `as` saturates: a spread past `u64::MAX` is `u64::MAX`.
    (delay as f64 * fraction) as u64
}

/// `nanos` as a duration, no longer than the backoff's cap.
const fn capped(nanos_value: u64, backoff: &BackoffSpec) -> Duration {
    if nanos_value > nanos(backoff.max) {
        backoff.max
    } else {
        Duration::from_nanos(nanos_value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_backoff;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    fn shortest(backoff: &str, jitter: JitterSpec, count: u32) -> Vec<u128> {
        let backoff = parse_backoff(backoff).unwrap();
        (0..count)
            .map(|retry| shortest_sleep(&backoff, jitter, retry).as_millis())
            .collect()
    }

    fn longest(backoff: &str, jitter: JitterSpec, count: u32) -> Vec<u128> {
        let backoff = parse_backoff(backoff).unwrap();
        (0..count)
            .map(|retry| longest_sleep(&backoff, jitter, retry).as_millis())
            .collect()
    }

    #[test]
    fn each_jitter_bounds_each_sleep() {
        let exp = "exp(100ms, max = 1s)";
        assert_eq!(
            shortest(exp, JitterSpec::None, 5),
            [100, 200, 400, 800, 1000]
        );
        assert_eq!(
            longest(exp, JitterSpec::None, 5),
            [100, 200, 400, 800, 1000]
        );
        assert_eq!(shortest(exp, JitterSpec::Full, 3), [0, 0, 0]);
        assert_eq!(longest(exp, JitterSpec::Full, 3), [100, 200, 400]);
        assert_eq!(shortest(exp, JitterSpec::Equal, 3), [50, 100, 200]);
        assert_eq!(longest(exp, JitterSpec::Equal, 3), [100, 200, 400]);
        assert_eq!(
            shortest(exp, JitterSpec::Band(0.25), 5),
            [75, 150, 300, 600, 750]
        );
        assert_eq!(
            longest(exp, JitterSpec::Band(0.25), 5),
            [125, 250, 500, 1000, 1000]
        );
        assert_eq!(shortest(exp, JitterSpec::Decorrelated, 3), [100, 100, 100]);
        assert_eq!(longest(exp, JitterSpec::Decorrelated, 3), [300, 900, 1000]);
        // Decorrelated grows by itself, even from a constant backoff's base…
        assert_eq!(
            longest("linear(10ms, max = 1s)", JitterSpec::Decorrelated, 3),
            [30, 90, 270]
        );
        // …but never past the cap, which for `const` is the delay itself.
        assert_eq!(
            longest("const(10ms)", JitterSpec::Decorrelated, 2),
            [10, 10]
        );
        assert_eq!(longest("none", JitterSpec::Band(0.5), 2), [0, 0]);
    }

    #[test]
    fn sums_saturate() {
        let huge = parse_backoff("exp(1h, max = 100000h)").unwrap();
        let bounds = sleep_bounds(&huge, JitterSpec::Band(1.0), 100);
        assert!(bounds.longest >= Duration::from_secs(100_000 * 3600));
        assert_eq!(
            sleep_bounds(&huge, JitterSpec::Full, 100).shortest,
            Duration::ZERO
        );
    }

    #[test]
    fn a_deadline_fits_the_attempts_whose_sleeps_end_before_it() {
        let exp = parse_backoff("exp(100ms)").unwrap();
        // Shortest sleeps 100, 200, 400: they end at 100, 300, 700.
        let fit = |deadline| attempts_within(&exp, JitterSpec::None, 3, ms(deadline));
        assert_eq!(fit(100), 1, "a sleep ending at the deadline is not started");
        assert_eq!(fit(101), 2);
        assert_eq!(fit(700), 3);
        assert_eq!(fit(701), 4);
        assert_eq!(fit(60_000), 4, "never more than max + 1");
        assert_eq!(
            attempts_within(&exp, JitterSpec::Full, 100, ms(1)),
            101,
            "full jitter may sleep zero"
        );
    }

    #[test]
    fn a_timeout_above_the_deadline_is_reported_at_the_timeout() {
        let backoff = parse_backoff("none").unwrap();
        let found = contradictions(
            3,
            &backoff,
            JitterSpec::Full,
            Some(ms(5000)),
            Some(ms(2000)),
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].argument, "timeout");
        assert_eq!(
            found[0].error.message(),
            "`timeout = 5s` exceeds `deadline = 2s`: the deadline cuts every attempt first, so the timeout would never apply; write a timeout ≤ the deadline, or drop one"
        );
        assert!(
            contradictions(
                3,
                &backoff,
                JitterSpec::Full,
                Some(ms(2000)),
                Some(ms(2000))
            )
            .is_empty()
        );
        assert!(contradictions(3, &backoff, JitterSpec::Full, Some(ms(5000)), None).is_empty());
    }

    #[test]
    fn a_deadline_too_short_says_what_fits() {
        let exp = parse_backoff("exp(100ms)").unwrap();
        let found = contradictions(3, &exp, JitterSpec::None, None, Some(ms(500)));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].argument, "deadline");
        assert_eq!(
            found[0].error.message(),
            "`deadline = 500ms` leaves room for at most 3 of the 4 attempts that `max = 3` asks for: even if every attempt failed at once, the sleeps before the retries would last at least 100ms, 200ms, 400ms, 700ms in all, and no sleep starts that would end at or past the deadline; raise the deadline above 700ms, or lower `max` to 2"
        );
        let found = contradictions(6, &exp, JitterSpec::Band(0.25), None, Some(ms(60)));
        let message = found[0].error.message();
        assert!(message.contains("at most 1 of the 7 attempts"), "{message}");
        assert!(
            message.contains("75ms, 150ms, 300ms, …, 2.4s (the ±25% jitter"),
            "{message}"
        );
        assert!(message.contains("no retry fits"), "{message}");
        let equal = contradictions(3, &exp, JitterSpec::Equal, None, Some(ms(350)));
        assert!(equal[0].error.message().contains("halves"), "{equal:?}");
        assert!(contradictions(3, &exp, JitterSpec::Equal, None, Some(ms(351))).is_empty());
        let decorrelated = contradictions(3, &exp, JitterSpec::Decorrelated, None, Some(ms(300)));
        assert!(
            decorrelated[0]
                .error
                .message()
                .contains("100ms, 100ms, 100ms")
        );
    }

    #[test]
    fn bounds_are_const() {
        const BACKOFF: BackoffSpec = crate::DEFAULT_BACKOFF;
        const FIT: u32 = attempts_within(&BACKOFF, JitterSpec::None, 3, Duration::from_secs(1));
        const LONGEST: SleepBounds = sleep_bounds(&BACKOFF, JitterSpec::Decorrelated, 2);
        assert_eq!(FIT, 4);
        assert_eq!(LONGEST.longest, ms(300 + 900));
    }
}
