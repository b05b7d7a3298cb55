use crate::{GrammarError, closest};

/// The canonical code names, in the order of their gRPC numbers (1 to 16).
pub const CODE_NAMES: [&str; 16] = [
    "Cancelled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// Codes that say the request itself is wrong: retrying cannot help.
pub const NON_TRANSIENT: [&str; 8] = [
    "InvalidArgument",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "Unauthenticated",
    "FailedPrecondition",
    "OutOfRange",
    "Unimplemented",
];

/// The gRPC number (1–16) of a canonical code name.
///
/// ```
/// assert_eq!(steadfast_macro_support::code_index("Unavailable"), Some(14));
/// assert_eq!(steadfast_macro_support::code_index("Ok"), None);
/// ```
pub fn code_index(name: &str) -> Option<u8> {
    CODE_NAMES
        .iter()
        .position(|known| *known == name)
        .map(|position| position as u8 + 1)
}

/// Whether retrying an error with this code can succeed.
///
/// ```
/// assert!(steadfast_macro_support::is_transient("Unavailable"));
/// assert!(!steadfast_macro_support::is_transient("NotFound"));
/// ```
pub fn is_transient(name: &str) -> bool {
    !NON_TRANSIENT.contains(&name)
}

/// Parses `A|B|C` into canonical names, rejecting unknown and repeated ones.
///
/// ```
/// assert_eq!(steadfast_macro_support::parse_code_list("Unavailable|Aborted"), Ok(vec!["Unavailable", "Aborted"]));
/// let error = steadfast_macro_support::parse_code_list("Unavailible").unwrap_err();
/// assert!(error.message().contains("did you mean `Unavailable`"));
/// ```
pub fn parse_code_list(input: &str) -> Result<Vec<&'static str>, GrammarError> {
    let mut codes: Vec<&'static str> = Vec::new();
    for raw in input.split('|') {
        let name = raw.trim();
        if name.is_empty() {
            return Err(GrammarError::new(format!(
                "invalid code list `{input}`: an entry is empty; write codes separated by `|`, such as `Unavailable|DeadlineExceeded`"
            )));
        }
        let Some(known) = CODE_NAMES.iter().find(|known| **known == name) else {
            let hint = match closest(name, CODE_NAMES) {
                Some(known) => format!("did you mean `{known}`?"),
                None => format!("the codes are {}", CODE_NAMES.join(", ")),
            };
            return Err(GrammarError::new(format!("unknown code `{name}`: {hint}")));
        };
        if codes.contains(known) {
            return Err(GrammarError::new(format!(
                "code `{name}` is listed twice in `{input}`"
            )));
        }
        codes.push(known);
    }
    Ok(codes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_grpc() {
        assert_eq!(code_index("Cancelled"), Some(1));
        assert_eq!(code_index("DeadlineExceeded"), Some(4));
        assert_eq!(code_index("Unauthenticated"), Some(16));
    }

    #[test]
    fn transient_codes() {
        let transient: Vec<_> = CODE_NAMES
            .iter()
            .filter(|name| is_transient(name))
            .collect();
        assert_eq!(transient.len(), 8);
        assert!(is_transient("ResourceExhausted") && is_transient("Aborted"));
    }

    #[test]
    fn lists_are_checked() {
        assert!(
            parse_code_list("Unavailable||Aborted")
                .unwrap_err()
                .message()
                .contains("empty")
        );
        assert!(
            parse_code_list("Aborted|Aborted")
                .unwrap_err()
                .message()
                .contains("twice")
        );
        assert!(
            parse_code_list("Gone")
                .unwrap_err()
                .message()
                .contains("the codes are Cancelled")
        );
        assert!(
            parse_code_list("UNAVAILABLE")
                .unwrap_err()
                .message()
                .contains("`Unavailable`")
        );
    }
}
