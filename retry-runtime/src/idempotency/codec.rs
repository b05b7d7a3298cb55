//! Encoding results for storage, with a type tag so that a deploy that
//! changes a handler's result type gets a clear `Codec` error on replay,
//! never a wrong value.
//!
//! The codec is chosen at compile time by `#[idempotent]`:
//! `tonic::Response<M>` of a prost message → [`ProstCodec`] (the message
//! only: metadata is not stored), `tonic::Status` errors → [`StatusCodec`]
//! (code and message), any serde type → [`JsonCodec`]; any other type is a
//! compile error.

use std::any::type_name;

use serde::{Serialize, de::DeserializeOwned};

use super::SharedResult;

/// Encodes and decodes values of `T` for the store.
#[diagnostic::on_unimplemented(
    message = "`{T}` cannot be stored as an idempotent result, so its duplicates could not be answered",
    label = "no codec for this type",
    note = "derive `serde::Serialize` and `serde::Deserialize` for it, or return `tonic::Response<M>` of a prost message",
    note = "errors are stored only for codes named in `cache_errors`; `tonic::Status` and serde types can be"
)]
pub trait ResultCodec<T>: Send + Sync {
    /// The codec's name, part of the stored type tag.
    fn name(&self) -> &'static str;
    /// The shape of `T` as this codec sees it, part of the stored type tag
    /// when known: a record of another shape is refused, not decoded into
    /// defaults. `None` (the default) tags by the type's name only.
    fn shape(&self) -> Option<&'static str> {
        None
    }
    /// The bytes of `value`.
    fn encode(&self, value: &T) -> Result<Vec<u8>, String>;
    /// The bytes of `value`, appended to `out` (the stored record, after
    /// its type tag); on error, what was appended is discarded. The
    /// default appends [`encode`](ResultCodec::encode)'s bytes; a codec
    /// that can write in place saves a buffer and a copy per result.
    ///
    /// ```
    /// use steadfast::idempotency::{JsonCodec, ResultCodec};
    /// let mut out = b"tag:".to_vec();
    /// ResultCodec::<u64>::encode_into(&JsonCodec, &500, &mut out).unwrap();
    /// assert_eq!(out, b"tag:500");
    /// ```
    fn encode_into(&self, value: &T, out: &mut Vec<u8>) -> Result<(), String> {
        out.extend_from_slice(&self.encode(value)?);
        Ok(())
    }
    /// The value of `bytes`.
    fn decode(&self, bytes: &[u8]) -> Result<T, String>;
    /// The value of `body`, the body of `shared`: a result stored in this
    /// process and shared by its replays (on a store that answers at once,
    /// such as [`MemoryStore`](super::MemoryStore)). The default decodes
    /// `body`; a codec of a type that can be cloned keeps the value the
    /// first replay decoded in `shared` and answers the next ones with
    /// clones of it ([`CachedJsonCodec`]): the same value, without
    /// decoding.
    fn decode_shared(&self, body: &[u8], shared: &SharedResult) -> Result<T, String> {
        let _ = shared;
        self.decode(body)
    }
}

/// serde types as JSON.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonCodec;

impl<T: Serialize + DeserializeOwned> ResultCodec<T> for JsonCodec {
    fn name(&self) -> &'static str {
        "json"
    }

    /// Its structs' fields, enums' variants and primitive types
    /// (worked out once per type by a probing deserializer).
    fn shape(&self) -> Option<&'static str> {
        Some(super::shape::shape_of::<T>())
    }

    fn encode(&self, value: &T) -> Result<Vec<u8>, String> {
        serde_json::to_vec(value).map_err(|error| error.to_string())
    }

    fn encode_into(&self, value: &T, out: &mut Vec<u8>) -> Result<(), String> {
        serde_json::to_writer(out, value).map_err(|error| error.to_string())
    }

    fn decode(&self, bytes: &[u8]) -> Result<T, String> {
        serde_json::from_slice(bytes).map_err(|error| error.to_string())
    }
}

/// serde types that can be cloned, as JSON (the same records as
/// [`JsonCodec`], under the same tag), with the value of a result stored in
/// this process decoded once: the first replay keeps it in the shared
/// record and the next ones get clones of it
/// ([`ResultCodec::decode_shared`]), so that a replay on a
/// [`MemoryStore`](super::MemoryStore) costs a clone rather than a JSON
/// decode. `#[idempotent]` picks it for a result type that is `Clone`
/// (and `Send + Sync + 'static`).
///
/// A replay is the stored value decoded, as with any store: a clone of it
/// is that value again, unless the type's `Clone` shares state that a
/// caller can change (an `Arc<Mutex<_>>` field), which the replays would
/// then share.
///
/// ```
/// use steadfast::idempotency::{CachedJsonCodec, ResultCodec, SharedResult};
/// let shared = SharedResult::new(b"[1,2]");
/// let first: Vec<u32> = CachedJsonCodec.decode_shared(shared.bytes(), &shared).unwrap();
/// assert_eq!(first, [1, 2]);
/// assert_eq!(shared.decoded::<Vec<u32>>(), Some(&vec![1, 2]), "kept for the next replay");
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct CachedJsonCodec;

impl<T> ResultCodec<T> for CachedJsonCodec
where
    T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    fn name(&self) -> &'static str {
        ResultCodec::<T>::name(&JsonCodec)
    }

    fn shape(&self) -> Option<&'static str> {
        ResultCodec::<T>::shape(&JsonCodec)
    }

    fn encode(&self, value: &T) -> Result<Vec<u8>, String> {
        JsonCodec.encode(value)
    }

    fn encode_into(&self, value: &T, out: &mut Vec<u8>) -> Result<(), String> {
        JsonCodec.encode_into(value, out)
    }

    fn decode(&self, bytes: &[u8]) -> Result<T, String> {
        JsonCodec.decode(bytes)
    }

    fn decode_shared(&self, body: &[u8], shared: &SharedResult) -> Result<T, String> {
        if let Some(kept) = shared.decoded::<T>() {
            return Ok(kept.clone());
        }
        let value: T = JsonCodec.decode(body)?;
        shared.keep(value.clone());
        Ok(value)
    }
}

/// The codec of errors that are never stored (no `cache_errors`).
#[derive(Debug, Clone, Copy, Default)]
pub struct NotStored;

impl<T> ResultCodec<T> for NotStored {
    fn name(&self) -> &'static str {
        "none"
    }

    fn encode(&self, _: &T) -> Result<Vec<u8>, String> {
        Err("this error type is not stored".to_owned())
    }

    fn decode(&self, _: &[u8]) -> Result<T, String> {
        Err("this error type is not stored".to_owned())
    }
}

/// `tonic::Response<M>` as the prost encoding of `M`.
#[cfg(feature = "tonic")]
#[derive(Debug, Clone, Copy, Default)]
pub struct ProstCodec;

#[cfg(feature = "tonic")]
impl<M: prost::Message + Default> ResultCodec<tonic::Response<M>> for ProstCodec {
    fn name(&self) -> &'static str {
        "prost"
    }

    fn encode(&self, value: &tonic::Response<M>) -> Result<Vec<u8>, String> {
        Ok(value.get_ref().encode_to_vec())
    }

    fn encode_into(&self, value: &tonic::Response<M>, out: &mut Vec<u8>) -> Result<(), String> {
        value
            .get_ref()
            .encode(out)
            .map_err(|error| error.to_string())
    }

    fn decode(&self, bytes: &[u8]) -> Result<tonic::Response<M>, String> {
        M::decode(bytes)
            .map(tonic::Response::new)
            .map_err(|error| error.to_string())
    }
}

/// `tonic::Status` as its code and message.
#[cfg(feature = "tonic")]
#[derive(Debug, Clone, Copy, Default)]
pub struct StatusCodec;

#[cfg(feature = "tonic")]
impl ResultCodec<tonic::Status> for StatusCodec {
    fn name(&self) -> &'static str {
        "status"
    }

    fn encode(&self, status: &tonic::Status) -> Result<Vec<u8>, String> {
        let mut bytes = (status.code() as i32).to_be_bytes().to_vec();
        bytes.extend_from_slice(status.message().as_bytes());
        Ok(bytes)
    }

    fn decode(&self, bytes: &[u8]) -> Result<tonic::Status, String> {
        let (code, message) = bytes
            .split_first_chunk::<4>()
            .ok_or("a stored status is truncated")?;
        let message = std::str::from_utf8(message).map_err(|error| error.to_string())?;
        Ok(tonic::Status::new(
            tonic::Code::from_i32(i32::from_be_bytes(*code)),
            message,
        ))
    }
}

const FORMAT: u8 = 1;

/// Whether a stored record holds a success or a cached error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok = 0,
    Err = 1,
}

/// The type tag of `T` under `codec`, in parts: `codec ":" type name`, then
/// `"#"` and the type's shape where the codec knows it.
fn tag_parts<T>(codec: &dyn ResultCodec<T>) -> [&'static str; 5] {
    let (hash, shape) = codec.shape().map_or(("", ""), |shape| ("#", shape));
    [codec.name(), ":", type_name::<T>(), hash, shape]
}

/// `[format][outcome][tag length: u16][tag][body]`, with `value` encoded
/// by `codec` as the body, in place (one buffer per record).
pub(crate) fn frame<T>(
    outcome: Outcome,
    codec: &dyn ResultCodec<T>,
    value: &T,
) -> Result<Vec<u8>, String> {
    /// Room for a small body, so that most records take one allocation.
    const BODY: usize = 64;
    let parts = tag_parts(codec);
    let tag_length = parts.iter().map(|part| part.len()).sum::<usize>();
    let tag_length = tag_length.min(usize::from(u16::MAX));
    let mut framed = Vec::with_capacity(4 + tag_length + BODY);
    framed.extend_from_slice(&[FORMAT, outcome as u8]);
    framed.extend_from_slice(&(tag_length as u16).to_be_bytes());
    for part in parts {
        framed.extend_from_slice(part.as_bytes());
    }
    framed.truncate(4 + tag_length);
    codec.encode_into(value, &mut framed)?;
    Ok(framed)
}

/// Checks the format and splits a stored record (its tag as bytes: it is
/// compared, not read, unless it differs).
pub(crate) fn unframe(bytes: &[u8]) -> Result<(Outcome, &[u8], &[u8]), String> {
    let [format, outcome, high, low, rest @ ..] = bytes else {
        return Err("a stored result is truncated".to_owned());
    };
    if *format != FORMAT {
        return Err(format!(
            "a stored result has format {format}, this build reads format {FORMAT}"
        ));
    }
    let outcome = match outcome {
        0 => Outcome::Ok,
        1 => Outcome::Err,
        other => return Err(format!("a stored result has an unknown outcome {other}")),
    };
    let tag_length = usize::from(u16::from_be_bytes([*high, *low]));
    if rest.len() < tag_length {
        return Err("a stored result is truncated".to_owned());
    }
    let (tag, body) = rest.split_at(tag_length);
    Ok((outcome, tag, body))
}

/// Decodes `body` if `stored` is the tag of `T` under `codec` (compared
/// part by part, as bytes: a replay allocates no tag); `shared`, the record
/// `body` is part of when it is held in this process, for
/// [`ResultCodec::decode_shared`].
pub(crate) fn decode_tagged<T>(
    codec: &dyn ResultCodec<T>,
    stored: &[u8],
    body: &[u8],
    shared: Option<&SharedResult>,
) -> Result<T, String> {
    check_tag(codec, stored)?;
    match shared {
        Some(shared) => codec.decode_shared(body, shared),
        None => codec.decode(body),
    }
}

/// Whether `stored` is the tag of `T` under `codec`.
fn check_tag<T>(codec: &dyn ResultCodec<T>, stored: &[u8]) -> Result<(), String> {
    let parts = tag_parts(codec);
    let rest = parts
        .iter()
        .try_fold(stored, |rest, part| rest.strip_prefix(part.as_bytes()));
    if rest != Some(&[]) {
        let Ok(stored) = std::str::from_utf8(stored) else {
            return Err("a stored result has a malformed type tag".to_owned());
        };
        return Err(format!(
            "the stored result is `{stored}` but this handler returns `{}`; the result type (its name or its shape) changed since it was stored (it expires with its TTL)",
            parts.concat()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// JSON, with a shape of the test's choosing.
    struct Shaped(&'static str);

    impl ResultCodec<u32> for Shaped {
        fn name(&self) -> &'static str {
            "json"
        }

        fn shape(&self) -> Option<&'static str> {
            Some(self.0)
        }

        fn encode(&self, value: &u32) -> Result<Vec<u8>, String> {
            ResultCodec::<u32>::encode(&JsonCodec, value)
        }

        fn decode(&self, bytes: &[u8]) -> Result<u32, String> {
            ResultCodec::<u32>::decode(&JsonCodec, bytes)
        }
    }

    #[test]
    fn a_record_of_another_shape_of_the_same_type_is_refused() {
        let framed = frame::<u32>(Outcome::Ok, &Shaped("0a0a"), &7).unwrap();
        let (_, tag, body) = unframe(&framed).unwrap();
        assert_eq!(
            decode_tagged::<u32>(&Shaped("0a0a"), tag, body, None).unwrap(),
            7
        );
        let error = decode_tagged::<u32>(&Shaped("0b0b"), tag, body, None).unwrap_err();
        assert!(error.contains("its name or its shape"), "{error}");
    }

    #[test]
    fn frames_round_trip_and_tags_are_checked() {
        let codec = JsonCodec;
        let framed = frame::<Vec<u32>>(Outcome::Ok, &codec, &vec![1, 2]).unwrap();
        let (outcome, tag, body) = unframe(&framed).unwrap();
        assert_eq!(outcome, Outcome::Ok);
        assert_eq!(
            decode_tagged::<Vec<u32>>(&codec, tag, body, None).unwrap(),
            vec![1, 2]
        );
        let error = decode_tagged::<Vec<u64>>(&codec, tag, body, None).unwrap_err();
        assert!(
            error.contains("the result type (its name or its shape) changed"),
            "{error}"
        );
        assert!(unframe(&framed[..3]).is_err());
        assert!(unframe(&[9, 0, 0, 0]).unwrap_err().contains("format 9"));
    }
}
