//! The canonical error codes and sets of them.

use std::fmt;

/// The canonical error codes: the gRPC status codes, which every error type
/// maps into through [`Classify`](crate::Classify).
///
/// The discriminants are the gRPC numbers, so `Code::Unavailable as i32 == 14`.
///
/// ```
/// use steadfast::Code;
/// assert_eq!(Code::from_name("Unavailable"), Some(Code::Unavailable));
/// assert!(Code::Unavailable.is_transient());
/// assert!(!Code::NotFound.is_transient());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum Code {
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl Code {
    /// All sixteen codes, in the order of their numbers.
    pub const ALL: [Code; 16] = [
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// The code with this gRPC number; `None` for 0 (OK) and unknown numbers.
    ///
    /// ```
    /// assert_eq!(steadfast::Code::from_i32(4), Some(steadfast::Code::DeadlineExceeded));
    /// ```
    pub const fn from_i32(number: i32) -> Option<Code> {
        if number >= 1 && number <= 16 {
            Some(Code::ALL[(number - 1) as usize])
        } else {
            None
        }
    }

    /// The code with this canonical name (`"Unavailable"`).
    pub fn from_name(name: &str) -> Option<Code> {
        steadfast_macro_support::code_index(name)
            .and_then(|number| Code::from_i32(i32::from(number)))
    }

    /// The canonical name, as written in `on = "…"`.
    pub const fn name(self) -> &'static str {
        steadfast_macro_support::CODE_NAMES[self as usize - 1]
    }

    /// Whether retrying can succeed: false for the codes that say the
    /// request itself is wrong (`InvalidArgument`, `NotFound`, `AlreadyExists`,
    /// `PermissionDenied`, `Unauthenticated`, `FailedPrecondition`,
    /// `OutOfRange`, `Unimplemented`).
    pub const fn is_transient(self) -> bool {
        !matches!(
            self,
            Code::InvalidArgument
                | Code::NotFound
                | Code::AlreadyExists
                | Code::PermissionDenied
                | Code::Unauthenticated
                | Code::FailedPrecondition
                | Code::OutOfRange
                | Code::Unimplemented
        )
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of codes, such as the codes a policy retries. Copy, one word, and
/// built in `const` context.
///
/// ```
/// use steadfast::{Code, CodeSet};
/// const RETRIED: CodeSet = CodeSet::EMPTY.with(Code::Unavailable).with(Code::Aborted);
/// assert!(RETRIED.contains(Code::Aborted));
/// assert!(!RETRIED.contains(Code::NotFound));
/// assert_eq!(CodeSet::parse("Unavailable|Aborted"), Ok(RETRIED));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CodeSet(u32);

impl CodeSet {
    /// No code.
    pub const EMPTY: CodeSet = CodeSet(0);

    /// The set of [`RetryPolicy`](crate::RetryPolicy)'s default: `Unavailable|DeadlineExceeded`.
    pub const DEFAULT_RETRIED: CodeSet = CodeSet::EMPTY
        .with(Code::Unavailable)
        .with(Code::DeadlineExceeded);

    /// This set plus `code`.
    pub const fn with(self, code: Code) -> CodeSet {
        CodeSet(self.0 | 1 << code as u32)
    }

    /// Whether `code` is in the set.
    pub const fn contains(self, code: Code) -> bool {
        self.0 & (1 << code as u32) != 0
    }

    /// Parses `A|B|C`, with the same checks and messages as the attribute.
    pub fn parse(list: &str) -> Result<CodeSet, steadfast_macro_support::GrammarError> {
        let names = steadfast_macro_support::parse_code_list(list)?;
        Ok(names
            .into_iter()
            .filter_map(Code::from_name)
            .fold(CodeSet::EMPTY, CodeSet::with))
    }

    /// The codes in the set, in the order of their numbers.
    pub fn iter(self) -> impl Iterator<Item = Code> {
        Code::ALL
            .into_iter()
            .filter(move |code| self.contains(*code))
    }
}

impl fmt::Debug for CodeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_agree_with_the_grammar() {
        for (index, code) in Code::ALL.into_iter().enumerate() {
            assert_eq!(code as usize, index + 1);
            assert_eq!(Code::from_name(code.name()), Some(code));
            assert_eq!(
                code.is_transient(),
                steadfast_macro_support::is_transient(code.name())
            );
        }
        assert_eq!(Code::from_i32(0), None);
        assert_eq!(Code::from_i32(17), None);
    }

    #[test]
    fn sets_hold_exactly_their_codes() {
        let set = CodeSet::DEFAULT_RETRIED;
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            [Code::DeadlineExceeded, Code::Unavailable]
        );
        assert_eq!(format!("{set:?}"), "{DeadlineExceeded, Unavailable}");
        assert!(CodeSet::parse("Nope").is_err());
    }
}
