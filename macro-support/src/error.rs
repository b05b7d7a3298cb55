use std::fmt;

/// A string that does not follow the grammar: the message says what is
/// wrong and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrammarError {
    message: String,
}

impl GrammarError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The message, ready to show to a user.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for GrammarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for GrammarError {}
