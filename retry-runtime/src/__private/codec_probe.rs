//! The codec of a handler's result, chosen at compile time by autoref
//! specialization: `(&&&&Probe::<T>::new()).codec()` picks the first impl
//! that applies, from the most to the least specific.

use std::marker::PhantomData;

use serde::{Serialize, de::DeserializeOwned};

use crate::idempotency::{CachedJsonCodec, JsonCodec};
#[cfg(feature = "tonic")]
use crate::idempotency::{ProstCodec, StatusCodec};

/// Compile-time selection of a codec for `T` (autoref specialization):
/// `(&&&&Probe::<T>::new()).codec()` is a [`ProstCodec`](crate::idempotency::ProstCodec) for
/// `tonic::Response<M>`, [`StatusCodec`](crate::idempotency::StatusCodec) for `tonic::Status`, a
/// [`CachedJsonCodec`](crate::idempotency::CachedJsonCodec) for serde types that can be cloned, a
/// [`JsonCodec`](crate::idempotency::JsonCodec) for other serde types, and [`Unstorable`] otherwise (which then
/// fails to implement [`ResultCodec`](crate::idempotency::ResultCodec), with a clear message).
#[derive(Debug)]
pub struct Probe<T>(PhantomData<fn() -> T>);

impl<T> Probe<T> {
    /// A probe for `T`.
    pub const fn new() -> Probe<T> {
        Probe(PhantomData)
    }
}

impl<T> Default for Probe<T> {
    fn default() -> Probe<T> {
        Probe::new()
    }
}

/// No codec fits: not a serde type, not a tonic response.
#[derive(Debug, Clone, Copy)]
pub struct Unstorable;

/// Highest priority: tonic types.
pub trait ProbeTonic {
    /// The codec.
    type Codec;
    /// The codec.
    fn codec(&self) -> Self::Codec;
}

/// Second priority: serde types that can be cloned (their replays in this
/// process decoded once).
pub trait ProbeCloneSerde {
    /// The codec.
    fn codec(&self) -> CachedJsonCodec;
}

/// Third priority: serde types.
pub trait ProbeSerde {
    /// The codec.
    fn codec(&self) -> JsonCodec;
}

/// Lowest priority: nothing fits.
pub trait ProbeNone {
    /// The codec.
    fn codec(&self) -> Unstorable;
}

#[cfg(feature = "tonic")]
impl<M: prost::Message + Default> ProbeTonic for &&&Probe<tonic::Response<M>> {
    type Codec = ProstCodec;
    fn codec(&self) -> ProstCodec {
        ProstCodec
    }
}

#[cfg(feature = "tonic")]
impl ProbeTonic for &&&Probe<tonic::Status> {
    type Codec = StatusCodec;
    fn codec(&self) -> StatusCodec {
        StatusCodec
    }
}

impl<T> ProbeCloneSerde for &&Probe<T>
where
    T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    fn codec(&self) -> CachedJsonCodec {
        CachedJsonCodec
    }
}

impl<T: Serialize + DeserializeOwned> ProbeSerde for &Probe<T> {
    fn codec(&self) -> JsonCodec {
        JsonCodec
    }
}

impl<T> ProbeNone for Probe<T> {
    fn codec(&self) -> Unstorable {
        Unstorable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::needless_borrow)] // the borrows select the impl
    fn probes_pick_the_codec_at_compile_time() {
        let cached: CachedJsonCodec = (&&&&Probe::<String>::new()).codec();
        let _ = cached;
        /// Not `Sync`: JSON, decoded on every replay.
        #[derive(Clone, serde::Serialize, serde::Deserialize)]
        struct Unshared(std::cell::Cell<u32>);
        let json: JsonCodec = (&&&&Probe::<Unshared>::new()).codec();
        let _ = json;
        struct Opaque;
        let none: Unstorable = (&&&&Probe::<Opaque>::new()).codec();
        let _ = none;
    }
}
