use std::time::Duration;

use crate::GrammarError;

const UNITS: [(&str, u64); 6] = [
    ("ns", 1),
    ("us", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Parses a duration such as `500us`, `100ms`, `1.5s`, `2m` or `24h`.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(steadfast_macro_support::parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
/// assert!(steadfast_macro_support::parse_duration("5 seconds").is_err());
/// ```
pub fn parse_duration(input: &str) -> Result<Duration, GrammarError> {
    let text = input.trim();
    let unit_start = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(unit_start);
    let unit = unit.trim();
    let invalid = |why: &str| {
        GrammarError::new(format!(
            "invalid duration `{input}`: {why}; write a number followed by a unit, such as `500us`, `100ms`, `1.5s`, `2m` or `1h`"
        ))
    };
    if number.is_empty() {
        return Err(invalid("it does not start with a number"));
    }
    let Some(&(_, nanos_per_unit)) = UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err(if unit.is_empty() {
            invalid("the unit is missing")
        } else {
            invalid(&format!("`{unit}` is not a unit (ns, us, ms, s, m, h)"))
        });
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || fraction.contains('.') || (number.contains('.') && fraction.is_empty()) {
        return Err(invalid("the number is malformed"));
    }
    let too_long = || invalid("it is too long (at most about 584 years)");
    let whole: u64 = whole.parse().map_err(|_| too_long())?;
    let mut nanos = whole.checked_mul(nanos_per_unit).ok_or_else(too_long)?;
    let mut scale = nanos_per_unit;
    for digit in fraction.bytes() {
        if !scale.is_multiple_of(10) {
            return Err(invalid("it is finer than one nanosecond"));
        }
        scale /= 10;
        nanos = nanos
            .checked_add(u64::from(digit - b'0') * scale)
            .ok_or_else(too_long)?;
    }
    Ok(Duration::from_nanos(nanos))
}

/// Formats a duration in the grammar's own units, the inverse of
/// [`parse_duration`] for whole units (`100ms`, `1.5s`, `2m`).
///
/// ```
/// use std::time::Duration;
/// assert_eq!(steadfast_macro_support::format_duration(Duration::from_millis(1500)), "1.5s");
/// ```
pub fn format_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0ms".to_owned();
    }
    for (name, per_unit) in UNITS.iter().rev() {
        let per_unit = u128::from(*per_unit);
        if nanos >= per_unit && (nanos * 10).is_multiple_of(per_unit) {
            let tenths = nanos * 10 / per_unit;
            return if tenths.is_multiple_of(10) {
                format!("{}{name}", tenths / 10)
            } else {
                format!("{}.{}{name}", tenths / 10, tenths % 10)
            };
        }
    }
    format!("{nanos}ns")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_parses() {
        assert_eq!(parse_duration("250ns"), Ok(Duration::from_nanos(250)));
        assert_eq!(parse_duration("500us"), Ok(Duration::from_micros(500)));
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration(" 0.25ms "), Ok(Duration::from_micros(250)));
    }

    #[test]
    fn malformed_durations_say_what_to_write() {
        for bad in [
            "",
            "ms",
            "100",
            "1.5.2s",
            "1.s",
            ".5s",
            "5 sec",
            "-1s",
            "1.5ns",
            "99999999999h",
        ] {
            let error = parse_duration(bad).unwrap_err();
            assert!(error.message().contains("`100ms`"), "{bad}: {error}");
        }
        assert!(
            parse_duration("3 weeks")
                .unwrap_err()
                .message()
                .contains("`weeks` is not a unit")
        );
    }

    #[test]
    fn formatting_round_trips() {
        for text in ["100ms", "1.5s", "2m", "24h", "500us", "7ns"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }
}
