//! The fingerprint of `fingerprint = EXPR`, from what users have, chosen at
//! compile time by autoref specialization, most specific first:
//!
//! 1. strings, bytes, integers, `bool`, and tuples of these
//!    ([`FingerprintPart`]): hashed as they are (a single string or byte
//!    string as its bytes, so `fingerprint = req.body` is
//!    `Fingerprint::of(&req.body)`);
//! 2. a prost message, borrowed (`request.get_ref()`) or owned: its encoding;
//! 3. any serde value: a deterministic JSON encoding (maps sorted by key);
//! 4. anything else: [`Unfingerprintable`], which [`fingerprint_value`]
//!    refuses with a message that lists what works.

use std::marker::PhantomData;

use sha2::{Digest, Sha256};

use crate::idempotency::Fingerprint;

/// A value that hashes into a fingerprint as it is.
pub trait FingerprintPart {
    /// Feeds the value to `hasher`, framed so that two values never run
    /// into each other (`("ab", "c")` differs from `("a", "bc")`).
    fn feed(&self, hasher: &mut Sha256);

    /// The fingerprint of the value alone.
    fn alone(&self) -> Fingerprint {
        let mut hasher = Sha256::new();
        self.feed(&mut hasher);
        Fingerprint(hasher.finalize().into())
    }
}

fn feed_bytes(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_be_bytes());
    hasher.update(bytes);
}

/// Bytes alone hash as themselves, as `Fingerprint::of` does.
macro_rules! byte_parts {
    ($($type:ty),*) => {$(
        impl FingerprintPart for $type {
            fn feed(&self, hasher: &mut Sha256) {
                feed_bytes(hasher, AsRef::<[u8]>::as_ref(self));
            }

            fn alone(&self) -> Fingerprint {
                Fingerprint::of(AsRef::<[u8]>::as_ref(self))
            }
        }
    )*};
}

byte_parts!(str, String, [u8], Vec<u8>);

impl<const N: usize> FingerprintPart for [u8; N] {
    fn feed(&self, hasher: &mut Sha256) {
        feed_bytes(hasher, self);
    }

    fn alone(&self) -> Fingerprint {
        Fingerprint::of(self)
    }
}

macro_rules! integer_parts {
    ($($type:ty),*) => {$(
        impl FingerprintPart for $type {
            fn feed(&self, hasher: &mut Sha256) {
                feed_bytes(hasher, &self.to_be_bytes());
            }
        }
    )*};
}

integer_parts!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize
);

impl FingerprintPart for bool {
    fn feed(&self, hasher: &mut Sha256) {
        feed_bytes(hasher, &[u8::from(*self)]);
    }
}

impl<T: FingerprintPart + ?Sized> FingerprintPart for &T {
    fn feed(&self, hasher: &mut Sha256) {
        (**self).feed(hasher);
    }

    fn alone(&self) -> Fingerprint {
        (**self).alone()
    }
}

impl<T: FingerprintPart> FingerprintPart for Option<T> {
    fn feed(&self, hasher: &mut Sha256) {
        match self {
            None => hasher.update([0]),
            Some(value) => {
                hasher.update([1]);
                value.feed(hasher);
            }
        }
    }
}

macro_rules! tuple_parts {
    ($(($($name:ident),+)),*) => {$(
        impl<$($name: FingerprintPart),+> FingerprintPart for ($($name,)+) {
            #[allow(non_snake_case)]
            fn feed(&self, hasher: &mut Sha256) {
                let ($($name,)+) = self;
                $($name.feed(hasher);)+
            }
        }
    )*};
}

tuple_parts!(
    (A),
    (A, B),
    (A, B, C),
    (A, B, C, D),
    (A, B, C, D, E),
    (A, B, C, D, E, F)
);

/// The probe: `(&&&&&FingerprintProbe::new(&value)).fingerprint()`.
#[derive(Debug)]
pub struct FingerprintProbe<'v, T: ?Sized>(&'v T, PhantomData<fn() -> &'v T>);

impl<'v, T: ?Sized> FingerprintProbe<'v, T> {
    /// A probe of `value`.
    pub const fn new(value: &'v T) -> Self {
        FingerprintProbe(value, PhantomData)
    }
}

/// No fingerprint fits the value.
#[derive(Debug, Clone, Copy)]
pub struct Unfingerprintable;

/// Highest priority: strings, bytes, integers and tuples of these.
pub trait ProbeParts {
    /// The fingerprint.
    fn fingerprint(&self) -> Fingerprint;
}

/// Then: a prost message borrowed.
pub trait ProbeMessage {
    /// The fingerprint.
    fn fingerprint(&self) -> Fingerprint;
}

/// Then: serde values.
pub trait ProbeSerialize {
    /// The fingerprint.
    fn fingerprint(&self) -> Fingerprint;
}

/// Last: nothing fits.
pub trait ProbeNothing {
    /// Not a fingerprint.
    fn fingerprint(&self) -> Unfingerprintable;
}

impl<T: FingerprintPart + ?Sized> ProbeParts for &&&&FingerprintProbe<'_, T> {
    fn fingerprint(&self) -> Fingerprint {
        self.0.alone()
    }
}

/// A prost message borrowed, as `request.get_ref()` gives it.
#[cfg(feature = "tonic")]
impl<M: prost::Message> ProbeMessage for &&&FingerprintProbe<'_, &M> {
    fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(self.0.encode_to_vec())
    }
}

/// Then: a prost message owned.
pub trait ProbeOwnedMessage {
    /// The fingerprint.
    fn fingerprint(&self) -> Fingerprint;
}

#[cfg(feature = "tonic")]
impl<M: prost::Message> ProbeOwnedMessage for &&FingerprintProbe<'_, M> {
    fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(self.0.encode_to_vec())
    }
}

impl<T: serde::Serialize + ?Sized> ProbeSerialize for &FingerprintProbe<'_, T> {
    fn fingerprint(&self) -> Fingerprint {
        // Through `serde_json::Value`, whose maps are sorted by key: the
        // same value always gives the same bytes, whatever the order of a
        // `HashMap`'s entries.
        let encoded = serde_json::to_value(self.0)
            .and_then(|value| serde_json::to_vec(&value))
            .unwrap_or_else(|error| format!("unserializable: {error}").into_bytes());
        Fingerprint::of(encoded)
    }
}

impl<T: ?Sized> ProbeNothing for FingerprintProbe<'_, T> {
    fn fingerprint(&self) -> Unfingerprintable {
        Unfingerprintable
    }
}

/// A fingerprint, as `fingerprint = …` needs one.
#[diagnostic::on_unimplemented(
    message = "`fingerprint = …` cannot fingerprint this value",
    label = "not a payload steadfast can fingerprint",
    note = "give a string or bytes (`req.body`), an integer (`req.amount`), a tuple of these (`(req.amount, &req.to)`), a prost message (`request.get_ref()`, feature `tonic`) or any `serde::Serialize` value",
    note = "or compute the bytes yourself: `fingerprint = format!(\"{{}}:{{}}\", req.to, req.amount)`"
)]
pub trait FingerprintValue {
    /// The fingerprint.
    fn into_fingerprint(self) -> Fingerprint;
}

#[diagnostic::do_not_recommend]
impl FingerprintValue for Fingerprint {
    fn into_fingerprint(self) -> Fingerprint {
        self
    }
}

/// The fingerprint the probe found, where an unfingerprintable value is
/// reported, once.
#[inline]
pub fn fingerprint_value<F: FingerprintValue>(found: F) -> Option<Fingerprint> {
    Some(found.into_fingerprint())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    #[allow(clippy::needless_borrow)] // the borrows select the impl
    fn each_kind_of_payload_has_its_fingerprint() {
        let body = String::from("amount=5");
        assert_eq!(
            (&&&&&FingerprintProbe::new(&body)).fingerprint(),
            Fingerprint::of("amount=5"),
            "a string is its bytes"
        );
        let amount = (&&&&&FingerprintProbe::new(&5_i64)).fingerprint();
        assert_ne!(amount, (&&&&&FingerprintProbe::new(&6_i64)).fingerprint());
        let pair = (&&&&&FingerprintProbe::new(&(5_i64, "bob"))).fingerprint();
        assert_ne!(
            pair,
            (&&&&&FingerprintProbe::new(&(5_i64, "bo"))).fingerprint()
        );
        assert_ne!(
            (&&&&&FingerprintProbe::new(&("ab", "c"))).fingerprint(),
            (&&&&&FingerprintProbe::new(&("a", "bc"))).fingerprint(),
            "parts are framed"
        );
        let mut one = HashMap::new();
        let mut other = HashMap::new();
        for key in 0..50 {
            one.insert(key.to_string(), key);
        }
        for key in (0..50).rev() {
            other.insert(key.to_string(), key);
        }
        assert_eq!(
            (&&&&&FingerprintProbe::new(&one)).fingerprint(),
            (&&&&&FingerprintProbe::new(&other)).fingerprint(),
            "a serde map is encoded in one order"
        );
        struct Opaque;
        let _: Unfingerprintable = (&&&&&FingerprintProbe::new(&Opaque)).fingerprint();
    }
}
