//! The grammar of `#[retry(nested = "…")]`.

use crate::{GrammarError, closest};

/// What a retried call does inside an attempt of another retried call in
/// the same task; the runtime's `steadfast::Nested`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NestedSpec {
    /// `share` (the default): the nest shares the outermost call's retries.
    Share,
    /// `outermost`: only the outermost call retries.
    Outermost,
    /// `independent`: the call retries as if alone (attempts multiply).
    Independent,
}

const NAMES: [&str; 3] = ["share", "outermost", "independent"];

/// Parses `share`, `outermost` or `independent`.
///
/// ```
/// use steadfast_macro_support::{NestedSpec, parse_nested};
/// assert_eq!(parse_nested("outermost"), Ok(NestedSpec::Outermost));
/// let error = parse_nested("shared").unwrap_err();
/// assert!(error.message().contains("did you mean `share`?"));
/// ```
pub fn parse_nested(input: &str) -> Result<NestedSpec, GrammarError> {
    match input.trim() {
        "share" => Ok(NestedSpec::Share),
        "outermost" => Ok(NestedSpec::Outermost),
        "independent" => Ok(NestedSpec::Independent),
        other => {
            let hint = closest(other, NAMES)
                .map(|known| format!(" (did you mean `{known}`?)"))
                .unwrap_or_default();
            Err(GrammarError::new(format!(
                "invalid nested rule `{input}`{hint}: write `share` (the default: nested calls share the outermost call's retries), `outermost` (only the outermost call retries) or `independent` (retries multiply across layers)"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_parses_and_others_are_refused() {
        for (name, spec) in NAMES.iter().zip([
            NestedSpec::Share,
            NestedSpec::Outermost,
            NestedSpec::Independent,
        ]) {
            assert_eq!(parse_nested(name), Ok(spec));
        }
        let error = parse_nested("never").unwrap_err();
        assert!(
            error.message().contains("write `share`"),
            "{}",
            error.message()
        );
    }
}
