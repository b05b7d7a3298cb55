//! The shape of a serde type, for the type tag of stored results: the names
//! of its structs and their fields, of its enums and their variants, and the
//! primitive types under them, as far as one made-up value reaches.
//!
//! A type's name alone misses the change a deploy makes most often: a field
//! added to the result type. JSON records of the old shape would decode into
//! the new type with that field at its default (an `Option` as `None`, a
//! `#[serde(default)]` as its default), silently. With the shape in the tag,
//! such a record is a clear `Codec` error instead, until it expires.
//!
//! The shape is read by deserializing the type from [`ShapeProbe`], a
//! deserializer that answers every request with the simplest value (`0`,
//! `""`, the first variant, one element of a sequence) and writes down what
//! was asked. Types that deserialize themselves by hand (`deserialize_any`)
//! contribute what they ask for; recursion stops at a fixed depth.

use std::{
    collections::HashMap,
    fmt::Write as _,
    hash::{BuildHasherDefault, Hasher},
    sync::{OnceLock, PoisonError, RwLock},
};

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

/// How deep the probe follows nested types (and recursive ones).
const DEPTH: usize = 12;

/// The shape of `T`, as 16 hex digits; worked out once per type, then
/// looked up under a read lock by the address of the type's name (a cache
/// miss for a type whose name is stored twice only works it out again).
pub(crate) fn shape_of<T: DeserializeOwned>() -> &'static str {
    type Shapes = HashMap<(usize, usize), &'static str, BuildHasherDefault<AddressHasher>>;
    static SHAPES: OnceLock<RwLock<Shapes>> = OnceLock::new();
    let name = std::any::type_name::<T>();
    let id = (name.as_ptr() as usize, name.len());
    let shapes = SHAPES.get_or_init(Default::default);
    if let Some(shape) = shapes
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&id)
    {
        return shape;
    }
    let mut written = String::new();
    let _ = T::deserialize(ShapeProbe {
        depth: 0,
        out: &mut written,
    });
    let digest = <sha2::Sha256 as sha2::Digest>::digest(written.as_bytes());
    let hex: String = digest[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let shape: &'static str = Box::leak(hex.into_boxed_str());
    shapes
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(id, shape);
    shape
}

/// The hasher of the shapes' cache, whose keys are addresses and lengths
/// of type names (not input a client chooses): a multiply per word, as
/// rustc's `FxHasher`, in place of SipHash on every encode and replay.
#[derive(Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.write_u64(u64::from(*byte));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_usize(&mut self, word: usize) {
        self.write_u64(word as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The probe's only error: the depth is reached, or a visitor refused.
#[derive(Debug)]
struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("shape probe stopped")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: std::fmt::Display>(_: T) -> Stop {
        Stop
    }
}

/// A deserializer that writes down what it is asked for.
struct ShapeProbe<'w> {
    depth: usize,
    out: &'w mut String,
}

impl ShapeProbe<'_> {
    fn deeper(&mut self) -> Result<ShapeProbe<'_>, Stop> {
        if self.depth >= DEPTH {
            self.out.push('…');
            return Err(Stop);
        }
        Ok(ShapeProbe {
            depth: self.depth + 1,
            out: self.out,
        })
    }

    fn note(&mut self, what: &str) {
        self.out.push_str(what);
        self.out.push(';');
    }
}

macro_rules! primitives {
    ($($method:ident => $name:literal, $visit:ident($value:expr)),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, Stop> {
            self.note($name);
            visitor.$visit($value)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for ShapeProbe<'_> {
    type Error = Stop;

    primitives!(
        deserialize_bool => "bool", visit_bool(false),
        deserialize_i8 => "i8", visit_i8(0),
        deserialize_i16 => "i16", visit_i16(0),
        deserialize_i32 => "i32", visit_i32(0),
        deserialize_i64 => "i64", visit_i64(0),
        deserialize_i128 => "i128", visit_i128(0),
        deserialize_u8 => "u8", visit_u8(0),
        deserialize_u16 => "u16", visit_u16(0),
        deserialize_u32 => "u32", visit_u32(0),
        deserialize_u64 => "u64", visit_u64(0),
        deserialize_u128 => "u128", visit_u128(0),
        deserialize_f32 => "f32", visit_f32(0.0),
        deserialize_f64 => "f64", visit_f64(0.0),
        deserialize_char => "char", visit_char('a'),
        deserialize_str => "str", visit_str(""),
        deserialize_string => "string", visit_string(String::new()),
        deserialize_bytes => "bytes", visit_bytes(&[]),
        deserialize_byte_buf => "bytes", visit_byte_buf(Vec::new()),
        deserialize_identifier => "identifier", visit_str(""),
    );

    fn deserialize_unit<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, Stop> {
        self.note("()");
        visitor.visit_unit()
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, Stop> {
        self.note("ignored");
        visitor.visit_unit()
    }

    fn deserialize_any<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, Stop> {
        self.note("any");
        visitor.visit_unit()
    }

    fn deserialize_option<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, Stop> {
        self.note("option");
        let deeper = self.deeper()?;
        visitor.visit_some(deeper)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        mut self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Stop> {
        self.note(name);
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        mut self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Stop> {
        self.note(name);
        let deeper = self.deeper()?;
        visitor.visit_newtype_struct(deeper)
    }

    fn deserialize_seq<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, Stop> {
        self.note("seq");
        visitor.visit_seq(Elements {
            probe: self,
            left: 1,
        })
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Stop> {
        let _ = write!(self.out, "tuple{len};");
        visitor.visit_seq(Elements {
            probe: self,
            left: len,
        })
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Stop> {
        let _ = write!(self.out, "{name}({len});");
        visitor.visit_seq(Elements {
            probe: self,
            left: len,
        })
    }

    fn deserialize_map<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, Stop> {
        self.note("map");
        visitor.visit_map(Entries {
            probe: self,
            fields: None,
            next: 0,
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Stop> {
        let _ = write!(self.out, "{name}{{{}}};", fields.join(","));
        visitor.visit_map(Entries {
            probe: self,
            fields: Some(fields),
            next: 0,
        })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Stop> {
        let _ = write!(self.out, "{name}[{}];", variants.join(","));
        let first = variants.first().copied().ok_or(Stop)?;
        visitor.visit_enum(Variant { probe: self, first })
    }

    fn is_human_readable(&self) -> bool {
        true
    }
}

/// A sequence of `left` made-up elements.
struct Elements<'w> {
    probe: ShapeProbe<'w>,
    left: usize,
}

impl<'de> SeqAccess<'de> for Elements<'_> {
    type Error = Stop;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, Stop> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(self.probe.deeper()?).map(Some)
    }
}

/// A struct's fields (each once, by name) or a map's one made-up entry.
struct Entries<'w> {
    probe: ShapeProbe<'w>,
    fields: Option<&'static [&'static str]>,
    next: usize,
}

impl<'de> MapAccess<'de> for Entries<'_> {
    type Error = Stop;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Stop> {
        match self.fields {
            Some(fields) => match fields.get(self.next) {
                Some(field) => {
                    self.next += 1;
                    seed.deserialize((*field).into_deserializer()).map(Some)
                }
                None => Ok(None),
            },
            None if self.next == 0 => {
                self.next = 1;
                seed.deserialize(self.probe.deeper()?).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, Stop> {
        seed.deserialize(self.probe.deeper()?)
    }
}

/// An enum at its first variant.
struct Variant<'w> {
    probe: ShapeProbe<'w>,
    first: &'static str,
}

impl<'de, 'w> EnumAccess<'de> for Variant<'w> {
    type Error = Stop;
    type Variant = ShapeProbe<'w>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), Stop> {
        let value = seed.deserialize(self.first.into_deserializer())?;
        Ok((value, self.probe))
    }
}

impl<'de> VariantAccess<'de> for ShapeProbe<'_> {
    type Error = Stop;

    fn unit_variant(self) -> Result<(), Stop> {
        Ok(())
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(mut self, seed: S) -> Result<S::Value, Stop> {
        seed.deserialize(self.deeper()?)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Stop> {
        de::Deserializer::deserialize_tuple(self, len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Stop> {
        de::Deserializer::deserialize_struct(self, "", fields, visitor)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::shape_of;

    #[allow(dead_code)]
    mod before {
        #[derive(serde::Deserialize)]
        pub(super) struct Receipt {
            pub(super) id: String,
            pub(super) cents: u64,
        }
    }

    #[allow(dead_code)]
    mod after {
        #[derive(serde::Deserialize)]
        pub(super) struct Receipt {
            pub(super) id: String,
            pub(super) cents: u64,
            #[serde(default)]
            pub(super) note: Option<String>,
        }
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    enum Outcome {
        Paid { receipt: Box<Outcome> },
        Refused(String),
    }

    #[test]
    fn an_added_field_changes_the_shape() {
        assert_ne!(shape_of::<before::Receipt>(), shape_of::<after::Receipt>());
        assert_eq!(shape_of::<before::Receipt>(), shape_of::<before::Receipt>());
        assert_eq!(shape_of::<before::Receipt>().len(), 16);
    }

    #[test]
    fn a_changed_field_type_changes_the_shape() {
        assert_ne!(shape_of::<Vec<u32>>(), shape_of::<Vec<u64>>());
        assert_ne!(shape_of::<(String, u8)>(), shape_of::<(String, i8)>());
        assert_ne!(shape_of::<Option<u8>>(), shape_of::<u8>());
    }

    #[test]
    fn recursive_types_have_a_shape() {
        assert_eq!(shape_of::<Outcome>().len(), 16);
        assert_eq!(shape_of::<serde_json::Value>().len(), 16);
    }
}
