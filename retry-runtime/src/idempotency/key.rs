//! Record keys: the scope and the client's key, hashed.

use std::{borrow::Cow, fmt};

use sha2::{Digest, Sha256};

use super::IdempotencyError;

/// The longest key accepted, in bytes (the IETF draft's bound for a header value we store).
pub const MAX_KEY_BYTES: usize = 255;

/// Where a record lives: a scope (the handler, or a tenant) and the SHA-256 of
/// the scope and the client's key, so that stored keys are fixed-size and hold
/// no raw client input.
///
/// ```
/// use steadfast::idempotency::RecordKey;
/// let key = RecordKey::new("payments::pay", "order-17").unwrap();
/// assert_eq!(key.scope(), "payments::pay");
/// assert_eq!(key.hash().len(), 32);
/// assert_ne!(key, RecordKey::new("refunds::refund", "order-17").unwrap());
/// assert!(RecordKey::new("payments::pay", "").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RecordKey {
    scope: Cow<'static, str>,
    hash: [u8; 32],
}

impl RecordKey {
    /// Builds the key of `key` in `scope`; rejects an empty key and one longer than 255 bytes.
    pub fn new(
        scope: impl Into<Cow<'static, str>>,
        key: &str,
    ) -> Result<RecordKey, IdempotencyError> {
        let scope = scope.into();
        if key.is_empty() {
            return Err(IdempotencyError::MissingKey);
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(IdempotencyError::KeyTooLong { length: key.len() });
        }
        let mut hasher = Sha256::new();
        hasher.update((scope.len() as u64).to_be_bytes());
        hasher.update(scope.as_bytes());
        hasher.update(key.as_bytes());
        Ok(RecordKey {
            scope,
            hash: hasher.finalize().into(),
        })
    }

    /// A key from its stored parts (for stores that read keys back).
    pub fn from_parts(scope: String, hash: [u8; 32]) -> RecordKey {
        RecordKey {
            scope: Cow::Owned(scope),
            hash,
        }
    }

    /// The scope.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// SHA-256 of the scope and the key.
    pub fn hash(&self) -> &[u8; 32] {
        &self.hash
    }
}

/// `scope/0123456789ab…`: the scope with its control characters, quotes and
/// backslashes escaped (a scope may hold a caller's name: a `\n` in it must
/// not forge a log line), and the first 6 bytes of the hash.
impl fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/", self.scope.escape_debug())?;
        for byte in &self.hash[..6] {
            write!(f, "{byte:02x}")?;
        }
        f.write_str("…")
    }
}

/// The SHA-256 of a request payload, compared before any replay.
///
/// ```
/// use steadfast::idempotency::Fingerprint;
/// assert_eq!(Fingerprint::of("amount=5"), Fingerprint::of(b"amount=5"));
/// assert_ne!(Fingerprint::of("amount=5"), Fingerprint::of("amount=6"));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of `payload`'s bytes.
    pub fn of(payload: impl AsRef<[u8]>) -> Fingerprint {
        Fingerprint(Sha256::digest(payload.as_ref()).into())
    }

    /// The fingerprint of `parts` one after the other (as [`of`](Self::of)
    /// their concatenation), without copying them into one buffer.
    #[cfg(feature = "axum")]
    pub(crate) fn of_parts(parts: &[&[u8]]) -> Fingerprint {
        let mut hasher = Sha256::new();
        for part in parts {
            hasher.update(part);
        }
        Fingerprint(hasher.finalize().into())
    }
}

#[cfg(any(
    feature = "sqlite",
    feature = "postgres",
    feature = "mysql",
    feature = "redis"
))]
impl Fingerprint {
    /// A fingerprint as a store kept it, checked: 32 bytes.
    pub(crate) fn from_stored(bytes: &[u8]) -> Result<Fingerprint, super::StoreError> {
        <[u8; 32]>::try_from(bytes).map(Fingerprint).map_err(|_| {
            super::StoreError::msg(format!(
                "stored fingerprint has {} bytes, expected 32",
                bytes.len()
            ))
        })
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0[..6] {
            write!(f, "{byte:02x}")?;
        }
        f.write_str("…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_bounded() {
        assert!(matches!(
            RecordKey::new("s", ""),
            Err(IdempotencyError::MissingKey)
        ));
        assert!(RecordKey::new("s", &"k".repeat(255)).is_ok());
        assert!(matches!(
            RecordKey::new("s", &"k".repeat(256)),
            Err(IdempotencyError::KeyTooLong { length: 256 })
        ));
    }

    #[test]
    fn debug_escapes_control_characters_of_the_scope() {
        let key = RecordKey::new("tenant\nINFO forged line \u{1b}[31m\r", "k").unwrap();
        let shown = format!("{key:?}");
        assert!(
            !shown.chars().any(char::is_control),
            "a control character reached the output: {shown:?}"
        );
        assert!(
            shown.starts_with(r"tenant\nINFO forged line \u{1b}[31m\r/"),
            "{shown}"
        );
        assert_eq!(
            format!("{:?}", RecordKey::new("payments::pay", "k").unwrap()).len(),
            "payments::pay/".len() + 12 + "…".len(),
            "a plain scope is shown as it is"
        );
    }

    #[test]
    fn scope_and_key_cannot_be_confused() {
        assert_ne!(
            RecordKey::new("ab", "c").unwrap().hash(),
            RecordKey::new("a", "bc").unwrap().hash()
        );
    }
}
