use crate::{GrammarError, closest};

/// How a computed delay is randomized.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum JitterSpec {
    /// The delay as computed.
    None,
    /// Uniform in `[0, d]`.
    Full,
    /// Uniform in `[d/2, d]`.
    Equal,
    /// Uniform in `[base, 3 × previous]` (AWS "decorrelated jitter").
    Decorrelated,
    /// Uniform in `[d × (1 − p), d × (1 + p)]`; the value is `p` (0.25 for `25%`).
    Band(f64),
}

/// The jitter used when none is given: `full`.
pub const DEFAULT_JITTER: JitterSpec = JitterSpec::Full;

const NAMES: [&str; 4] = ["none", "full", "equal", "decorrelated"];

/// Parses a jitter string: `none`, `full`, `equal`, `decorrelated` or a band
/// such as `25%` (meaning ±25%).
///
/// ```
/// use steadfast_macro_support::{parse_jitter, JitterSpec};
/// assert_eq!(parse_jitter("25%"), Ok(JitterSpec::Band(0.25)));
/// assert_eq!(parse_jitter("full"), Ok(JitterSpec::Full));
/// ```
pub fn parse_jitter(input: &str) -> Result<JitterSpec, GrammarError> {
    let text = input.trim();
    match text {
        "none" => return Ok(JitterSpec::None),
        "full" => return Ok(JitterSpec::Full),
        "equal" => return Ok(JitterSpec::Equal),
        "decorrelated" => return Ok(JitterSpec::Decorrelated),
        _ => {}
    }
    if let Some(percent) = text.trim_start_matches(['±', '+']).strip_suffix('%') {
        return match percent.trim().parse::<f64>() {
            Ok(value) if value > 0.0 && value <= 100.0 => Ok(JitterSpec::Band(value / 100.0)),
            _ => Err(GrammarError::new(format!(
                "invalid jitter `{input}`: a band is a percentage above 0 and at most 100, such as `25%`"
            ))),
        };
    }
    let hint = closest(text, NAMES)
        .map(|known| format!(" (did you mean `{known}`?)"))
        .unwrap_or_default();
    Err(GrammarError::new(format!(
        "invalid jitter `{input}`{hint}: write `none`, `full`, `equal`, `decorrelated` or a band such as `25%`"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_parses() {
        assert_eq!(parse_jitter("none"), Ok(JitterSpec::None));
        assert_eq!(parse_jitter("equal"), Ok(JitterSpec::Equal));
        assert_eq!(parse_jitter("decorrelated"), Ok(JitterSpec::Decorrelated));
        assert_eq!(parse_jitter("±10%"), Ok(JitterSpec::Band(0.1)));
        assert_eq!(parse_jitter("100%"), Ok(JitterSpec::Band(1.0)));
    }

    #[test]
    fn mistakes_are_explained() {
        assert!(
            parse_jitter("ful")
                .unwrap_err()
                .message()
                .contains("did you mean `full`")
        );
        assert!(
            parse_jitter("0%")
                .unwrap_err()
                .message()
                .contains("above 0")
        );
        assert!(
            parse_jitter("150%")
                .unwrap_err()
                .message()
                .contains("at most 100")
        );
        assert!(
            parse_jitter("random")
                .unwrap_err()
                .message()
                .contains("`25%`")
        );
    }
}
