//! The OMA LwM2M TLV format (`application/vnd.oma.lwm2m+tlv`, LwM2M 1.0
//! TS §6.4.3).
//!
//! Each entry is a type byte, an identifier, an optional length and a
//! value. The type byte holds, from the top bit down: the identifier type
//! (2 bits: 00 Object Instance, 01 Resource Instance, 10 Multiple Resource,
//! 11 Resource with Value), the identifier length (1 bit: 8 or 16 bits), the
//! length type (2 bits: 0 = the length is in the low 3 bits, else an 8-, 16-
//! or 24-bit length field follows the identifier) and the 3-bit length.
//!
//! An Object Instance holds Resources and Multiple Resources; a Multiple
//! Resource holds Resource Instances; the other two hold a value. The
//! decoder enforces this nesting, which also bounds the depth to
//! [`MAX_DEPTH`] levels; every error carries the byte offset where the
//! problem is. The encoder picks the shortest identifier and length forms.
//!
//! [`value`] encodes the typed values (integer, float, boolean, string,
//! opaque, object link); the `as_*` methods of [`Tlv`] decode them.

use thiserror::Error;

/// The longest value a 24-bit length can carry.
pub const MAX_LEN: usize = 0xFF_FFFF;
/// Object Instance > Multiple Resource > Resource Instance.
pub const MAX_DEPTH: usize = 3;

/// The four identifier types of the type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    ObjectInstance,
    ResourceInstance,
    MultipleResource,
    Resource,
}

impl Kind {
    fn bits(self) -> u8 {
        match self {
            Kind::ObjectInstance => 0b00,
            Kind::ResourceInstance => 0b01,
            Kind::MultipleResource => 0b10,
            Kind::Resource => 0b11,
        }
    }

    fn from_bits(b: u8) -> Self {
        match b & 0b11 {
            0b00 => Kind::ObjectInstance,
            0b01 => Kind::ResourceInstance,
            0b10 => Kind::MultipleResource,
            _ => Kind::Resource,
        }
    }

    /// Whether an entry of this kind may hold an entry of kind `child`
    /// (`None`: at the top level, anything).
    fn may_hold(parent: Option<Kind>, child: Kind) -> bool {
        match parent {
            None => true,
            Some(Kind::ObjectInstance) => {
                matches!(child, Kind::Resource | Kind::MultipleResource)
            }
            Some(Kind::MultipleResource) => child == Kind::ResourceInstance,
            Some(Kind::Resource | Kind::ResourceInstance) => false,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::ObjectInstance => "object instance",
            Kind::ResourceInstance => "resource instance",
            Kind::MultipleResource => "multiple resource",
            Kind::Resource => "resource",
        })
    }
}

/// One TLV entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tlv {
    /// Holds [`Tlv::Resource`]s and [`Tlv::MultipleResource`]s.
    ObjectInstance { id: u16, resources: Vec<Tlv> },
    /// A single-instance resource and its value.
    Resource { id: u16, value: Vec<u8> },
    /// Holds [`Tlv::ResourceInstance`]s.
    MultipleResource { id: u16, instances: Vec<Tlv> },
    /// One instance of a multiple resource and its value.
    ResourceInstance { id: u16, value: Vec<u8> },
}

/// What is wrong with TLV bytes, a tree to encode, or a value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TlvError {
    #[error("offset {offset}: the {part} needs {need} bytes, {have} are left")]
    Truncated {
        offset: usize,
        part: &'static str,
        need: usize,
        have: usize,
    },
    #[error("offset {offset}: a {parent} cannot hold a {child}")]
    Nesting {
        offset: usize,
        parent: Kind,
        child: Kind,
    },
    #[error("{kind} {id}: a value of {len} bytes is longer than TLV allows ({MAX_LEN})")]
    TooLong { kind: Kind, id: u16, len: usize },
    #[error("{kind} {id} holds no value")]
    NotAValue { kind: Kind, id: u16 },
    #[error("{kind} {id}: {len} bytes are not a valid {expected}")]
    Value {
        kind: Kind,
        id: u16,
        expected: &'static str,
        len: usize,
    },
    #[error("{kind} {id}: the string is not UTF-8 (at byte {at})")]
    Utf8 { kind: Kind, id: u16, at: usize },
    #[error("{kind} {id}: boolean byte {value:#04x} is neither 0 nor 1")]
    Bool { kind: Kind, id: u16, value: u8 },
}

impl Tlv {
    /// A single-instance resource.
    pub fn resource(id: u16, value: Vec<u8>) -> Self {
        Tlv::Resource { id, value }
    }
    /// An instance of a multiple resource.
    pub fn instance(id: u16, value: Vec<u8>) -> Self {
        Tlv::ResourceInstance { id, value }
    }
    /// A multiple resource holding `instances`.
    pub fn multiple(id: u16, instances: Vec<Tlv>) -> Self {
        Tlv::MultipleResource { id, instances }
    }
    /// An object instance holding `resources`.
    pub fn object_instance(id: u16, resources: Vec<Tlv>) -> Self {
        Tlv::ObjectInstance { id, resources }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Tlv::ObjectInstance { .. } => Kind::ObjectInstance,
            Tlv::Resource { .. } => Kind::Resource,
            Tlv::MultipleResource { .. } => Kind::MultipleResource,
            Tlv::ResourceInstance { .. } => Kind::ResourceInstance,
        }
    }

    pub fn id(&self) -> u16 {
        match self {
            Tlv::ObjectInstance { id, .. }
            | Tlv::Resource { id, .. }
            | Tlv::MultipleResource { id, .. }
            | Tlv::ResourceInstance { id, .. } => *id,
        }
    }

    /// The entries this one holds (none for a value).
    pub fn children(&self) -> &[Tlv] {
        match self {
            Tlv::ObjectInstance { resources: c, .. }
            | Tlv::MultipleResource { instances: c, .. } => c,
            _ => &[],
        }
    }

    /// The child with identifier `id`.
    pub fn child(&self, id: u16) -> Option<&Tlv> {
        self.children().iter().find(|c| c.id() == id)
    }

    /// The raw value of a resource or resource instance.
    pub fn value(&self) -> Result<&[u8], TlvError> {
        match self {
            Tlv::Resource { value, .. } | Tlv::ResourceInstance { value, .. } => Ok(value),
            _ => Err(TlvError::NotAValue {
                kind: self.kind(),
                id: self.id(),
            }),
        }
    }

    fn bad(&self, expected: &'static str, len: usize) -> TlvError {
        TlvError::Value {
            kind: self.kind(),
            id: self.id(),
            expected,
            len,
        }
    }

    /// A signed integer: 1, 2, 4 or 8 bytes, big-endian, two's complement.
    pub fn as_int(&self) -> Result<i64, TlvError> {
        let v = self.value()?;
        value::to_int(v).ok_or_else(|| self.bad("integer (1, 2, 4 or 8 bytes)", v.len()))
    }

    /// A float: 4 or 8 bytes, IEEE 754, big-endian.
    pub fn as_float(&self) -> Result<f64, TlvError> {
        let v = self.value()?;
        value::to_float(v).ok_or_else(|| self.bad("float (4 or 8 bytes)", v.len()))
    }

    /// A boolean: one byte, 0 or 1.
    pub fn as_bool(&self) -> Result<bool, TlvError> {
        match self.value()? {
            [0] => Ok(false),
            [1] => Ok(true),
            [b] => Err(TlvError::Bool {
                kind: self.kind(),
                id: self.id(),
                value: *b,
            }),
            v => Err(self.bad("boolean (1 byte)", v.len())),
        }
    }

    /// A UTF-8 string.
    pub fn as_str(&self) -> Result<&str, TlvError> {
        std::str::from_utf8(self.value()?).map_err(|e| TlvError::Utf8 {
            kind: self.kind(),
            id: self.id(),
            at: e.valid_up_to(),
        })
    }

    /// An object link: object id, then instance id, 16 bits each.
    pub fn as_objlnk(&self) -> Result<(u16, u16), TlvError> {
        match *self.value()? {
            [a, b, c, d] => Ok((u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]))),
            ref v => Err(self.bad("object link (4 bytes)", v.len())),
        }
    }
}

/// Encoders and decoders of the typed values.
pub mod value {
    /// The shortest of 1, 2, 4 or 8 big-endian bytes holding `v`.
    pub fn int(v: i64) -> Vec<u8> {
        if let Ok(x) = i8::try_from(v) {
            x.to_be_bytes().to_vec()
        } else if let Ok(x) = i16::try_from(v) {
            x.to_be_bytes().to_vec()
        } else if let Ok(x) = i32::try_from(v) {
            x.to_be_bytes().to_vec()
        } else {
            v.to_be_bytes().to_vec()
        }
    }

    /// 4 bytes when `v` is exactly a 32-bit float, else 8.
    pub fn float(v: f64) -> Vec<u8> {
        let narrow = v as f32;
        if f64::from(narrow) == v || v.is_nan() {
            narrow.to_be_bytes().to_vec()
        } else {
            v.to_be_bytes().to_vec()
        }
    }

    pub fn boolean(v: bool) -> Vec<u8> {
        vec![u8::from(v)]
    }

    pub fn string(v: &str) -> Vec<u8> {
        v.as_bytes().to_vec()
    }

    /// An object link to `/object/instance`.
    pub fn objlnk(object: u16, instance: u16) -> Vec<u8> {
        let mut v = object.to_be_bytes().to_vec();
        v.extend_from_slice(&instance.to_be_bytes());
        v
    }

    /// A 1, 2, 4 or 8-byte big-endian signed integer.
    pub fn to_int(v: &[u8]) -> Option<i64> {
        Some(match *v {
            [a] => i64::from(i8::from_be_bytes([a])),
            [a, b] => i64::from(i16::from_be_bytes([a, b])),
            [a, b, c, d] => i64::from(i32::from_be_bytes([a, b, c, d])),
            [a, b, c, d, e, f, g, h] => i64::from_be_bytes([a, b, c, d, e, f, g, h]),
            _ => return None,
        })
    }

    /// A 4 or 8-byte big-endian IEEE 754 float.
    pub fn to_float(v: &[u8]) -> Option<f64> {
        Some(match *v {
            [a, b, c, d] => f64::from(f32::from_be_bytes([a, b, c, d])),
            [a, b, c, d, e, f, g, h] => f64::from_be_bytes([a, b, c, d, e, f, g, h]),
            _ => return None,
        })
    }
}

/// Encode a sequence of entries.
pub fn encode(entries: &[Tlv]) -> Result<Vec<u8>, TlvError> {
    let mut out = Vec::new();
    encode_seq(entries, None, &mut out)?;
    Ok(out)
}

fn encode_seq(entries: &[Tlv], parent: Option<Kind>, out: &mut Vec<u8>) -> Result<(), TlvError> {
    for e in entries {
        if let Some(p) = parent
            && !Kind::may_hold(parent, e.kind())
        {
            return Err(TlvError::Nesting {
                offset: out.len(),
                parent: p,
                child: e.kind(),
            });
        }
        let body = match e {
            Tlv::Resource { value, .. } | Tlv::ResourceInstance { value, .. } => value.clone(),
            Tlv::ObjectInstance { resources: c, .. }
            | Tlv::MultipleResource { instances: c, .. } => {
                let mut inner = Vec::new();
                encode_seq(c, Some(e.kind()), &mut inner)?;
                inner
            }
        };
        header(e.kind(), e.id(), body.len(), out)?;
        out.extend_from_slice(&body);
    }
    Ok(())
}

fn header(kind: Kind, id: u16, len: usize, out: &mut Vec<u8>) -> Result<(), TlvError> {
    if len > MAX_LEN {
        return Err(TlvError::TooLong { kind, id, len });
    }
    let wide = id > 0xFF;
    let (len_type, inline) = match len {
        0..=7 => (0u8, len as u8),
        8..=0xFF => (1, 0),
        0x100..=0xFFFF => (2, 0),
        _ => (3, 0),
    };
    out.push(kind.bits() << 6 | u8::from(wide) << 5 | len_type << 3 | inline);
    if wide {
        out.extend_from_slice(&id.to_be_bytes());
    } else {
        out.push(id as u8);
    }
    let l = (len as u32).to_be_bytes();
    match len_type {
        1 => out.push(l[3]),
        2 => out.extend_from_slice(&l[2..]),
        3 => out.extend_from_slice(&l[1..]),
        _ => {}
    }
    Ok(())
}

/// Decode a sequence of entries. Never panics; errors carry the offset.
pub fn decode(bytes: &[u8]) -> Result<Vec<Tlv>, TlvError> {
    decode_seq(bytes, 0, None)
}

fn decode_seq(bytes: &[u8], base: usize, parent: Option<Kind>) -> Result<Vec<Tlv>, TlvError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let offset = base + at;
        let truncated = |part, need: usize, have: usize| TlvError::Truncated {
            offset: base + bytes.len() - have,
            part,
            need,
            have,
        };
        let t = bytes[at];
        let kind = Kind::from_bits(t >> 6);
        if let Some(p) = parent
            && !Kind::may_hold(parent, kind)
        {
            return Err(TlvError::Nesting {
                offset,
                parent: p,
                child: kind,
            });
        }
        at += 1;
        let id_len = if t & 0x20 != 0 { 2 } else { 1 };
        let rest = &bytes[at..];
        if rest.len() < id_len {
            return Err(truncated("identifier", id_len, rest.len()));
        }
        let id = if id_len == 2 {
            u16::from_be_bytes([rest[0], rest[1]])
        } else {
            u16::from(rest[0])
        };
        at += id_len;
        let len_len = usize::from((t >> 3) & 0b11);
        let rest = &bytes[at..];
        if rest.len() < len_len {
            return Err(truncated("length", len_len, rest.len()));
        }
        let len = if len_len == 0 {
            usize::from(t & 0b111)
        } else {
            rest[..len_len]
                .iter()
                .fold(0usize, |acc, b| acc << 8 | usize::from(*b))
        };
        at += len_len;
        let rest = &bytes[at..];
        if rest.len() < len {
            return Err(truncated("value", len, rest.len()));
        }
        let value = &rest[..len];
        let value_at = base + at;
        at += len;
        out.push(match kind {
            Kind::Resource => Tlv::Resource {
                id,
                value: value.to_vec(),
            },
            Kind::ResourceInstance => Tlv::ResourceInstance {
                id,
                value: value.to_vec(),
            },
            Kind::ObjectInstance => Tlv::ObjectInstance {
                id,
                resources: decode_seq(value, value_at, Some(kind))?,
            },
            Kind::MultipleResource => Tlv::MultipleResource {
                id,
                instances: decode_seq(value, value_at, Some(kind))?,
            },
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
