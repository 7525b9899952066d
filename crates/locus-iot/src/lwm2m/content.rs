//! The values of LwM2M resources as they travel in Read, Observe/Notify
//! and Write payloads, and their readings.
//!
//! A resource is addressed by a [`ResourcePath`] (`/object/instance/resource`)
//! and has a data type, its [`ResourceKind`], which the object's model
//! defines: TLV carries untyped bytes, so the kind is what says whether four
//! bytes are an integer or a float. [`ResourceKind::well_known`] knows the
//! kinds of a few common resources; any other resource's kind comes from the
//! thing's definition.
//!
//! Content formats read: `text/plain` (0), `application/octet-stream` (42)
//! and `application/vnd.oma.lwm2m+tlv` (11542). A payload without a
//! Content-Format is read as `text/plain`. SenML and the LwM2M JSON format
//! are refused with the format's number: LwM2M's SenML names
//! (`/3303/0/5700`) do not follow RFC 8428's name rule that [`crate::senml`]
//! enforces.
//!
//! Every decoder returns an error naming the resource and what is wrong, and
//! never panics on input bytes.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::reading::{Reading, ReadingError, Value};
use crate::tlv::{self, Tlv, TlvError};

/// CoAP Content-Format `text/plain; charset=utf-8`.
pub const TEXT: u16 = 0;
/// CoAP Content-Format `application/link-format`.
pub const LINK_FORMAT: u16 = 40;
/// CoAP Content-Format `application/octet-stream`.
pub const OPAQUE: u16 = 42;
/// CoAP Content-Format `application/senml+json`.
pub const SENML_JSON: u16 = 110;
/// `application/senml+cbor` (LwM2M 1.1).
pub const SENML_CBOR: u16 = 112;
/// CoAP Content-Format `application/vnd.oma.lwm2m+tlv`.
pub const TLV: u16 = 11542;
/// CoAP Content-Format `application/vnd.oma.lwm2m+json`.
pub const LWM2M_JSON: u16 = 11543;

/// The largest id of an object, instance or resource (65535 is reserved).
pub const MAX_ID: u16 = 65534;

/// `/object/instance/resource`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourcePath {
    pub object: u16,
    pub instance: u16,
    pub resource: u16,
}

impl ResourcePath {
    pub const fn new(object: u16, instance: u16, resource: u16) -> Self {
        Self {
            object,
            instance,
            resource,
        }
    }

    /// The three segments, as CoAP Uri-Path options.
    pub fn segments(&self) -> [String; 3] {
        [
            self.object.to_string(),
            self.instance.to_string(),
            self.resource.to_string(),
        ]
    }
}

impl fmt::Display for ResourcePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}/{}/{}", self.object, self.instance, self.resource)
    }
}

/// Why a path is not `/object/instance/resource`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("path {path:?}: {why}")]
pub struct PathError {
    pub path: String,
    pub why: String,
}

impl FromStr for ResourcePath {
    type Err = PathError;

    /// `3303/0/5700` or `/3303/0/5700`: three decimal ids up to 65534.
    fn from_str(s: &str) -> Result<Self, PathError> {
        let bad = |why: String| PathError {
            path: s.chars().take(64).collect(),
            why,
        };
        let body = s.strip_prefix('/').unwrap_or(s);
        let segs: Vec<&str> = body.split('/').collect();
        if segs.len() != 3 {
            return Err(bad(format!(
                "{} segments, a resource path has 3 (object/instance/resource)",
                segs.len()
            )));
        }
        let mut ids = [0u16; 3];
        for (i, (seg, what)) in segs
            .iter()
            .zip(["object", "instance", "resource"])
            .enumerate()
        {
            let id = (!seg.is_empty() && seg.len() <= 5 && seg.bytes().all(|b| b.is_ascii_digit()))
                .then(|| seg.parse::<u32>().ok())
                .flatten()
                .filter(|v| *v <= u32::from(MAX_ID))
                .ok_or_else(|| {
                    bad(format!(
                        "the {what} id {seg:?} is not a number in 0..=65534"
                    ))
                })?;
            ids[i] = id as u16;
        }
        Ok(Self::new(ids[0], ids[1], ids[2]))
    }
}

/// The data types of LwM2M 1.0 resources (TS Appendix C).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    String,
    Integer,
    Float,
    Boolean,
    Opaque,
    /// Unix seconds, an integer.
    Time,
    /// `object:instance`.
    ObjLnk,
}

impl ResourceKind {
    pub const ALL: [ResourceKind; 7] = [
        ResourceKind::String,
        ResourceKind::Integer,
        ResourceKind::Float,
        ResourceKind::Boolean,
        ResourceKind::Opaque,
        ResourceKind::Time,
        ResourceKind::ObjLnk,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::String => "string",
            ResourceKind::Integer => "integer",
            ResourceKind::Float => "float",
            ResourceKind::Boolean => "boolean",
            ResourceKind::Opaque => "opaque",
            ResourceKind::Time => "time",
            ResourceKind::ObjLnk => "objlnk",
        }
    }

    /// The kind of a resource of the OMA objects 1 (Server) and 3 (Device)
    /// or of an IPSO reusable resource (the same id in every IPSO object),
    /// when this table knows it.
    pub fn well_known(path: &ResourcePath) -> Option<ResourceKind> {
        use ResourceKind::*;
        Some(match (path.object, path.resource) {
            (1, 0 | 1 | 2 | 3 | 5) => Integer,
            (1, 6) => Boolean,
            (1, 7) => String,
            (3, 0 | 1 | 2 | 3 | 14 | 15 | 16 | 17 | 18 | 19) => String,
            (3, 9 | 10 | 20 | 21) => Integer,
            (3, 13) => Time,
            (o, r) if o >= 3200 => match r {
                5500 => Boolean,
                5501 | 5851 => Integer,
                5601..=5604 | 5700 | 5800 | 5805 | 5821 => Float,
                5701 | 5750 => String,
                5850 => Boolean,
                _ => return None,
            },
            _ => return None,
        })
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ResourceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ResourceKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!("{s:?} is not a resource kind (string, integer, float, boolean, opaque, time, objlnk)")
            })
    }
}

/// What is wrong with a payload or a value to write.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ContentError {
    #[error(
        "{path}: content format {format} is not read (text/plain 0, octet-stream 42, SenML JSON 110, SenML CBOR 112, LwM2M TLV 11542 are)"
    )]
    Format { path: ResourcePath, format: u16 },
    #[error("{path}: SenML: {why}")]
    Senml { path: ResourcePath, why: String },
    #[error("{path}: TLV: {source}")]
    Tlv {
        path: ResourcePath,
        #[source]
        source: TlvError,
    },
    #[error("{path}: the TLV payload holds no resource {}: {found}", path.resource)]
    Missing { path: ResourcePath, found: String },
    #[error("{path}: a multiple-instance resource is not one value")]
    Multiple { path: ResourcePath },
    #[error("{path}: text is not UTF-8 (at byte {at})")]
    Utf8 { path: ResourcePath, at: usize },
    #[error("{path}: text {text:?} is not a {kind}")]
    Text {
        path: ResourcePath,
        kind: ResourceKind,
        text: String,
    },
    #[error("{path}: a {kind} resource cannot hold {value}")]
    Mismatch {
        path: ResourcePath,
        kind: ResourceKind,
        value: String,
    },
    #[error("{path}: the value is not a valid reading: {source}")]
    Reading {
        path: ResourcePath,
        #[source]
        source: ReadingError,
    },
}

fn describe(v: &Value) -> String {
    match v {
        Value::Number(x) => format!("the number {x}"),
        Value::String(s) => format!("the string {:?}", s.chars().take(32).collect::<String>()),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Data(d) => format!("{} bytes of data", d.len()),
    }
}

fn text_value(
    path: ResourcePath,
    kind: Option<ResourceKind>,
    payload: &[u8],
) -> Result<Value, ContentError> {
    let text = std::str::from_utf8(payload).map_err(|e| ContentError::Utf8 {
        path,
        at: e.valid_up_to(),
    })?;
    let bad = |kind| ContentError::Text {
        path,
        kind,
        text: text.chars().take(64).collect(),
    };
    let number = |kind| {
        text.trim()
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .map(Value::Number)
            .ok_or_else(|| bad(kind))
    };
    match kind {
        None => Ok(number(ResourceKind::Float).unwrap_or_else(|_| Value::String(text.to_owned()))),
        Some(ResourceKind::String) => Ok(Value::String(text.to_owned())),
        Some(k @ (ResourceKind::Integer | ResourceKind::Time)) => text
            .trim()
            .parse::<i64>()
            .map(|i| Value::Number(i as f64))
            .map_err(|_| bad(k)),
        Some(k @ ResourceKind::Float) => number(k),
        Some(k @ ResourceKind::Boolean) => match text.trim() {
            "0" => Ok(Value::Bool(false)),
            "1" => Ok(Value::Bool(true)),
            _ => Err(bad(k)),
        },
        Some(k @ ResourceKind::ObjLnk) => {
            let ok = text
                .split_once(':')
                .is_some_and(|(o, i)| o.parse::<u16>().is_ok() && i.parse::<u16>().is_ok());
            if ok {
                Ok(Value::String(text.to_owned()))
            } else {
                Err(bad(k))
            }
        }
        // LwM2M 1.0 has no text form of opaque data.
        Some(k @ ResourceKind::Opaque) => Err(bad(k)),
    }
}

fn tlv_value(
    path: ResourcePath,
    kind: Option<ResourceKind>,
    entry: &Tlv,
) -> Result<Value, ContentError> {
    let t = |source| ContentError::Tlv { path, source };
    Ok(match kind {
        None | Some(ResourceKind::Opaque) => Value::Data(entry.value().map_err(t)?.to_vec()),
        Some(ResourceKind::String) => Value::String(entry.as_str().map_err(t)?.to_owned()),
        Some(ResourceKind::Integer | ResourceKind::Time) => {
            Value::Number(entry.as_int().map_err(t)? as f64)
        }
        Some(ResourceKind::Float) => {
            let x = entry.as_float().map_err(t)?;
            if !x.is_finite() {
                return Err(ContentError::Reading {
                    path,
                    source: ReadingError::NotFinite,
                });
            }
            Value::Number(x)
        }
        Some(ResourceKind::Boolean) => Value::Bool(entry.as_bool().map_err(t)?),
        Some(ResourceKind::ObjLnk) => {
            let (o, i) = entry.as_objlnk().map_err(t)?;
            Value::String(format!("{o}:{i}"))
        }
    })
}

/// Find resource `path.resource` in a TLV payload answering a Read of the
/// resource: the resource entry itself, or (as some clients answer) the
/// object instance holding it.
fn find(path: ResourcePath, entries: &[Tlv]) -> Result<&Tlv, ContentError> {
    let top = entries
        .iter()
        .find_map(|e| match e {
            Tlv::ObjectInstance { id, .. } if *id == path.instance => e.child(path.resource),
            Tlv::Resource { id, .. } | Tlv::MultipleResource { id, .. } if *id == path.resource => {
                Some(e)
            }
            _ => None,
        })
        .ok_or_else(|| ContentError::Missing {
            path,
            found: if entries.is_empty() {
                "it is empty".to_owned()
            } else {
                entries
                    .iter()
                    .take(8)
                    .map(|e| format!("{} {}", e.kind(), e.id()))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        })?;
    if matches!(top, Tlv::MultipleResource { .. }) {
        return Err(ContentError::Multiple { path });
    }
    Ok(top)
}

/// The value of resource `path` in a Read or Notify payload of content
/// format `format` (`None`: no Content-Format option, read as text).
///
/// Without a `kind`, text that reads as a finite number is a number and any
/// other text a string, and a TLV value is opaque data.
pub fn decode_value(
    path: ResourcePath,
    kind: Option<ResourceKind>,
    format: Option<u16>,
    payload: &[u8],
) -> Result<Value, ContentError> {
    match format.unwrap_or(TEXT) {
        TEXT => text_value(path, kind, payload),
        OPAQUE => match kind {
            None | Some(ResourceKind::Opaque) => Ok(Value::Data(payload.to_vec())),
            Some(kind) => Err(ContentError::Mismatch {
                path,
                kind,
                value: format!("{} bytes of octet-stream", payload.len()),
            }),
        },
        TLV => {
            let entries =
                tlv::decode(payload).map_err(|source| ContentError::Tlv { path, source })?;
            tlv_value(path, kind, find(path, &entries)?)
        }
        SENML_JSON | SENML_CBOR => senml_value(path, kind, format, payload),
        format => Err(ContentError::Format { path, format }),
    }
}

/// The value of resource `path` in a SenML JSON pack (LwM2M 1.1): the
/// record named by the path (`bn` + `n`); of several (a notification that
/// carries a history), the last. The value must fit `kind`.
fn senml_value(
    path: ResourcePath,
    kind: Option<ResourceKind>,
    format: Option<u16>,
    payload: &[u8],
) -> Result<Value, ContentError> {
    let records = if format == Some(SENML_CBOR) {
        crate::senml::resolve_lwm2m_cbor(payload)
    } else {
        crate::senml::resolve_lwm2m(payload)
    }
    .map_err(|e| ContentError::Senml {
        path,
        why: e.to_string(),
    })?;
    let name = path.to_string();
    let Some(record) = records.iter().rev().find(|r| r.name == name) else {
        let found: Vec<&str> = records.iter().map(|r| r.name.as_str()).take(8).collect();
        return Err(ContentError::Senml {
            path,
            why: format!("no record named {name}; the pack names {found:?}"),
        });
    };
    let Some(value) = record.value.clone() else {
        return Err(ContentError::Senml {
            path,
            why: format!("record {name} has a sum but no value"),
        });
    };
    let mismatch = |kind| ContentError::Mismatch {
        path,
        kind,
        value: describe(&value),
    };
    match (kind, &value) {
        (None, _)
        | (Some(ResourceKind::String), Value::String(_))
        | (Some(ResourceKind::Float), Value::Number(_))
        | (Some(ResourceKind::Boolean), Value::Bool(_))
        | (Some(ResourceKind::Opaque), Value::Data(_)) => Ok(value.clone()),
        (Some(ResourceKind::Integer | ResourceKind::Time), Value::Number(x))
            if x.fract() == 0.0 =>
        {
            Ok(value.clone())
        }
        (Some(ResourceKind::ObjLnk), Value::String(s)) if s.split_once(':').is_some() => {
            Ok(value.clone())
        }
        (Some(kind), _) => Err(mismatch(kind)),
    }
}

/// A resource of a thing that becomes readings: its reading name, path,
/// unit and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceDef {
    /// The reading's resource name.
    pub name: String,
    pub path: ResourcePath,
    pub unit: Option<String>,
    /// The data type; [`ResourceKind::well_known`] when not given.
    pub kind: Option<ResourceKind>,
}

impl ResourceDef {
    /// The kind given, else the well-known one, else none.
    pub fn kind(&self) -> Option<ResourceKind> {
        self.kind.or_else(|| ResourceKind::well_known(&self.path))
    }

    /// The reading of a Read or Notify payload of this resource on `thing`
    /// at `time_ms` (unix milliseconds; when the server received it).
    pub fn reading(
        &self,
        thing: &str,
        format: Option<u16>,
        payload: &[u8],
        time_ms: i64,
    ) -> Result<Reading, ContentError> {
        let path = self.path;
        let value = decode_value(path, self.kind(), format, payload)?;
        Reading::new(thing, self.name.clone(), value, self.unit.clone(), time_ms)
            .map_err(|source| ContentError::Reading { path, source })
    }
}

/// A Write payload for resource `path` in SenML JSON (for an LwM2M 1.1
/// client): one record named by the path. The value is checked against
/// `kind` as [`encode_value`] checks it.
pub fn encode_senml_json(
    path: ResourcePath,
    kind: Option<ResourceKind>,
    value: &Value,
) -> Result<(u16, Vec<u8>), ContentError> {
    encode_senml(path, kind, value, SENML_JSON)
}

/// A Write payload for resource `path` in SenML JSON or SenML CBOR
/// (`format`): one record named by the path, checked as [`encode_value`]
/// checks it.
pub fn encode_senml(
    path: ResourcePath,
    kind: Option<ResourceKind>,
    value: &Value,
    format: u16,
) -> Result<(u16, Vec<u8>), ContentError> {
    encode_value(path, kind, value)?;
    let record = crate::senml::WriteRecord {
        base_name: None,
        name: path.to_string(),
        value: value.clone(),
    };
    Ok((format, senml_pack(&[record], format)))
}

/// The bytes of a pack of SenML records: CBOR for [`SENML_CBOR`], JSON
/// otherwise.
pub fn senml_pack(records: &[crate::senml::WriteRecord], format: u16) -> Vec<u8> {
    if format == SENML_CBOR {
        crate::senml::pack_cbor(records)
    } else {
        crate::senml::pack_json(records)
    }
}

/// A Write payload for resource `path`: its content format and bytes.
///
/// With a `kind`, the value is written as a TLV resource of that type, and
/// must fit it (an integer must be a whole number within `i64`). Without
/// one, numbers, booleans (`0`/`1`) and strings go as `text/plain`, whose
/// reading the client does with its own model, and data as an
/// octet-stream.
pub fn encode_value(
    path: ResourcePath,
    kind: Option<ResourceKind>,
    value: &Value,
) -> Result<(u16, Vec<u8>), ContentError> {
    let mismatch = |kind| ContentError::Mismatch {
        path,
        kind,
        value: describe(value),
    };
    let Some(kind) = kind else {
        return Ok(match value {
            Value::Number(x) if x.is_finite() => (TEXT, x.to_string().into_bytes()),
            Value::Number(_) => {
                return Err(ContentError::Reading {
                    path,
                    source: ReadingError::NotFinite,
                });
            }
            Value::Bool(b) => (TEXT, if *b { b"1".to_vec() } else { b"0".to_vec() }),
            Value::String(s) => (TEXT, s.as_bytes().to_vec()),
            Value::Data(d) => (OPAQUE, d.clone()),
        });
    };
    let bytes = match (kind, value) {
        (ResourceKind::String, Value::String(s)) => tlv::value::string(s),
        (ResourceKind::Opaque, Value::Data(d)) => d.clone(),
        (ResourceKind::Boolean, Value::Bool(b)) => tlv::value::boolean(*b),
        (ResourceKind::Float, Value::Number(x)) if x.is_finite() => tlv::value::float(*x),
        (ResourceKind::Integer | ResourceKind::Time, Value::Number(x))
            // The bounds are exact in f64: -2^63 and 2^63.
            if x.fract() == 0.0 && *x >= -9_223_372_036_854_775_808.0 && *x < 9_223_372_036_854_775_808.0 =>
        {
            tlv::value::int(*x as i64)
        }
        (ResourceKind::ObjLnk, Value::String(s)) => {
            match s.split_once(':').and_then(|(o, i)| Some((o.parse().ok()?, i.parse().ok()?))) {
                Some((o, i)) => tlv::value::objlnk(o, i),
                None => return Err(mismatch(kind)),
            }
        }
        _ => return Err(mismatch(kind)),
    };
    let bytes = tlv::encode(&[Tlv::resource(path.resource, bytes)])
        .map_err(|source| ContentError::Tlv { path, source })?;
    Ok((TLV, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TEMP: ResourcePath = ResourcePath::new(3303, 0, 5700);

    #[test]
    fn paths_parse_and_name_the_bad_segment() {
        assert_eq!("3303/0/5700".parse::<ResourcePath>(), Ok(TEMP));
        assert_eq!("/3303/0/5700".parse::<ResourcePath>(), Ok(TEMP));
        assert_eq!(TEMP.to_string(), "/3303/0/5700");
        let e = "/3303/x/5700".parse::<ResourcePath>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "path \"/3303/x/5700\": the instance id \"x\" is not a number in 0..=65534"
        );
        for bad in [
            "",
            "/",
            "3303/0",
            "3303/0/5700/1",
            "1/2/65535",
            "1//2",
            "+1/2/3",
            "1/2/3/",
        ] {
            assert!(bad.parse::<ResourcePath>().is_err(), "{bad}");
        }
    }

    #[test]
    fn text_values_follow_the_kind() {
        let d = |k, s: &str| decode_value(TEMP, k, Some(TEXT), s.as_bytes());
        assert_eq!(
            d(Some(ResourceKind::Float), "21.5"),
            Ok(Value::Number(21.5))
        );
        assert_eq!(
            d(Some(ResourceKind::Integer), "-7"),
            Ok(Value::Number(-7.0))
        );
        assert_eq!(d(Some(ResourceKind::Boolean), "1"), Ok(Value::Bool(true)));
        assert_eq!(
            d(Some(ResourceKind::String), "on"),
            Ok(Value::String("on".into()))
        );
        assert_eq!(
            d(Some(ResourceKind::ObjLnk), "3:0"),
            Ok(Value::String("3:0".into()))
        );
        assert_eq!(d(None, "21.5"), Ok(Value::Number(21.5)));
        assert_eq!(d(None, "warm"), Ok(Value::String("warm".into())));
        assert_eq!(
            decode_value(TEMP, None, None, b"3"),
            Ok(Value::Number(3.0)),
            "no content format is text"
        );
        let e = d(Some(ResourceKind::Float), "warm").unwrap_err();
        assert_eq!(e.to_string(), "/3303/0/5700: text \"warm\" is not a float");
        assert!(matches!(
            d(Some(ResourceKind::Float), "inf"),
            Err(ContentError::Text { .. })
        ));
        assert!(matches!(
            d(Some(ResourceKind::Integer), "1.5"),
            Err(ContentError::Text { .. })
        ));
        assert!(matches!(
            d(Some(ResourceKind::Boolean), "true"),
            Err(ContentError::Text { .. })
        ));
        assert!(matches!(
            d(Some(ResourceKind::Opaque), "AA=="),
            Err(ContentError::Text { .. })
        ));
        assert_eq!(
            decode_value(TEMP, None, Some(TEXT), &[b'1', 0xff]),
            Err(ContentError::Utf8 { path: TEMP, at: 1 })
        );
    }

    #[test]
    fn tlv_values_follow_the_kind() {
        let enc = |id, v: Vec<u8>| tlv::encode(&[Tlv::resource(id, v)]).unwrap();
        let d = |k, bytes: &[u8]| decode_value(TEMP, k, Some(TLV), bytes);
        assert_eq!(
            d(
                Some(ResourceKind::Float),
                &enc(5700, tlv::value::float(21.5))
            ),
            Ok(Value::Number(21.5))
        );
        assert_eq!(
            d(
                Some(ResourceKind::Integer),
                &enc(5700, tlv::value::int(300))
            ),
            Ok(Value::Number(300.0))
        );
        assert_eq!(d(None, &enc(5700, vec![1, 2])), Ok(Value::Data(vec![1, 2])));
        // Inside its object instance, as some clients answer.
        let inst = tlv::encode(&[Tlv::object_instance(
            0,
            vec![
                Tlv::resource(5701, b"Cel".to_vec()),
                Tlv::resource(5700, tlv::value::float(-3.0)),
            ],
        )])
        .unwrap();
        assert_eq!(d(Some(ResourceKind::Float), &inst), Ok(Value::Number(-3.0)));
        // Errors name the resource and the problem.
        let e = d(Some(ResourceKind::Float), &enc(5700, vec![1, 2, 3])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/3303/0/5700: TLV: resource 5700: 3 bytes are not a valid float (4 or 8 bytes)"
        );
        let e = d(Some(ResourceKind::Float), &enc(5701, vec![0; 4])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/3303/0/5700: the TLV payload holds no resource 5700: resource 5701"
        );
        assert!(matches!(
            d(Some(ResourceKind::Float), &[0xC8]),
            Err(ContentError::Tlv { .. })
        ));
        let multi = tlv::encode(&[Tlv::multiple(5700, vec![Tlv::instance(0, vec![1])])]).unwrap();
        assert_eq!(d(None, &multi), Err(ContentError::Multiple { path: TEMP }));
        assert!(matches!(
            d(
                Some(ResourceKind::Float),
                &enc(5700, tlv::value::float(f64::NAN))
            ),
            Err(ContentError::Reading { .. })
        ));
    }

    #[test]
    fn other_formats_are_refused_by_number() {
        assert_eq!(
            decode_value(TEMP, None, Some(LWM2M_JSON), b"[]"),
            Err(ContentError::Format {
                path: TEMP,
                format: LWM2M_JSON
            })
        );
        assert_eq!(
            decode_value(TEMP, None, Some(OPAQUE), b"\x00"),
            Ok(Value::Data(vec![0]))
        );
        assert!(matches!(
            decode_value(TEMP, Some(ResourceKind::Float), Some(OPAQUE), b"\x00"),
            Err(ContentError::Mismatch { .. })
        ));
    }

    #[test]
    fn readings_carry_the_resource_name_and_unit() {
        let temp = ResourceDef {
            name: "temp".into(),
            path: TEMP,
            unit: Some("Cel".into()),
            kind: None,
        };
        assert_eq!(temp.kind(), Some(ResourceKind::Float), "well known");
        let r = temp.reading("t1", Some(TEXT), b"20.25", 1234).unwrap();
        assert_eq!(
            r,
            Reading::new("t1", "temp", Value::Number(20.25), Some("Cel".into()), 1234).unwrap()
        );
        assert!(matches!(
            temp.reading("", Some(TEXT), b"1", 0),
            Err(ContentError::Reading { .. })
        ));
        let named = ResourceDef {
            kind: Some(ResourceKind::String),
            ..temp
        };
        assert_eq!(
            named
                .reading("t1", Some(TEXT), b"20.25", 0)
                .unwrap()
                .value(),
            &Value::String("20.25".into())
        );
    }

    #[test]
    fn writes_encode_by_kind() {
        let sw = ResourcePath::new(3311, 0, 5850);
        let (f, b) = encode_value(sw, Some(ResourceKind::Boolean), &Value::Bool(true)).unwrap();
        // 16-bit identifier, 1-byte value.
        assert_eq!((f, b), (TLV, vec![0xE1, 0x16, 0xDA, 1]));
        assert_eq!(
            encode_value(sw, None, &Value::Bool(false)).unwrap(),
            (TEXT, b"0".to_vec())
        );
        assert_eq!(
            encode_value(sw, None, &Value::Number(21.5)).unwrap(),
            (TEXT, b"21.5".to_vec())
        );
        assert_eq!(
            encode_value(sw, None, &Value::Data(vec![7])).unwrap(),
            (OPAQUE, vec![7])
        );
        let e =
            encode_value(sw, Some(ResourceKind::Boolean), &Value::String("on".into())).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/3311/0/5850: a boolean resource cannot hold the string \"on\""
        );
        assert!(encode_value(sw, Some(ResourceKind::Integer), &Value::Number(1.5)).is_err());
        assert!(encode_value(sw, Some(ResourceKind::Integer), &Value::Number(1e19)).is_err());
        assert!(encode_value(sw, Some(ResourceKind::ObjLnk), &Value::String("3".into())).is_err());
        assert_eq!(ResourceKind::well_known(&sw), Some(ResourceKind::Boolean));
        assert_eq!(ResourceKind::well_known(&TEMP), Some(ResourceKind::Float));
        assert_eq!(
            ResourceKind::well_known(&ResourcePath::new(3, 0, 9)),
            Some(ResourceKind::Integer)
        );
        assert_eq!(ResourceKind::well_known(&ResourcePath::new(9, 0, 9)), None);
        for k in ResourceKind::ALL {
            assert_eq!(k.as_str().parse::<ResourceKind>(), Ok(k));
        }
        assert!("number".parse::<ResourceKind>().is_err());
    }

    fn arb_kind() -> impl Strategy<Value = Option<ResourceKind>> {
        proptest::option::of(proptest::sample::select(ResourceKind::ALL.to_vec()))
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<f64>()
                .prop_filter("finite", |x| x.is_finite())
                .prop_map(Value::Number),
            any::<i32>().prop_map(|i| Value::Number(i.into())),
            ".{0,20}".prop_map(Value::String),
            any::<bool>().prop_map(Value::Bool),
            proptest::collection::vec(any::<u8>(), 0..16).prop_map(Value::Data),
            (any::<u16>(), any::<u16>()).prop_map(|(o, i)| Value::String(format!("{o}:{i}"))),
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_payloads_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
            kind in arb_kind(),
            format in proptest::sample::select(vec![None, Some(TEXT), Some(OPAQUE), Some(TLV), Some(SENML_JSON), Some(7)]),
        ) {
            if let Err(e) = decode_value(TEMP, kind, format, &bytes) {
                prop_assert!(e.to_string().starts_with("/3303/0/5700: "), "{e}");
            }
        }

        #[test]
        fn arbitrary_paths_never_panic(s in ".{0,24}", t in "/?[0-9]{0,6}(/[0-9]{0,6}){0,3}") {
            let _ = s.parse::<ResourcePath>();
            if let Ok(p) = t.parse::<ResourcePath>() {
                prop_assert_eq!(p.to_string().parse::<ResourcePath>(), Ok(p));
            }
        }

        #[test]
        fn written_values_read_back(kind in arb_kind(), value in arb_value()) {
            let path = ResourcePath::new(3311, 2, 5850);
            if let Ok((format, bytes)) = encode_value(path, kind, &value) {
                let back = decode_value(path, kind, Some(format), &bytes).unwrap();
                match (kind, &value) {
                    // A float narrowed to 4 bytes reads back exactly; text
                    // numbers print and parse to the same bits.
                    (_, Value::Number(_)) | (Some(_), _) => prop_assert_eq!(back, value),
                    // Without a kind, text is read back as a number where it reads as one.
                    (None, Value::Bool(b)) => prop_assert_eq!(back, Value::Number(if *b { 1.0 } else { 0.0 })),
                    (None, Value::String(s)) => {
                        if s.trim().parse::<f64>().is_ok_and(f64::is_finite) {
                            prop_assert!(matches!(back, Value::Number(_)));
                        } else {
                            prop_assert_eq!(back, value.clone());
                        }
                    }
                    (None, Value::Data(_)) => prop_assert_eq!(back, value),
                }
            }
        }
    }
}

#[cfg(test)]
mod senml_tests {
    use super::*;

    const TEMP: ResourcePath = ResourcePath::new(3303, 0, 5700);
    const ON: ResourcePath = ResourcePath::new(3311, 0, 5850);

    #[test]
    fn lwm2m_1_1_senml_json_values_are_read_by_path_and_kind() {
        let d =
            |path, kind, json: &str| decode_value(path, kind, Some(SENML_JSON), json.as_bytes());
        // bn + n name the resource; a notification may carry a history: the last counts.
        let pack = r#"[{"bn":"/3303/0/","n":"5700","v":21.5,"bt":1700000000},{"n":"5700","v":22.0,"t":1}]"#;
        assert_eq!(
            d(TEMP, Some(ResourceKind::Float), pack),
            Ok(Value::Number(22.0))
        );
        assert_eq!(d(TEMP, None, pack), Ok(Value::Number(22.0)));
        // Whole names, booleans, strings, data.
        assert_eq!(
            d(
                ON,
                Some(ResourceKind::Boolean),
                r#"[{"n":"/3311/0/5850","vb":true}]"#
            ),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            d(ON, None, r#"[{"n":"/3311/0/5850","vs":"red"}]"#),
            Ok(Value::String("red".into()))
        );
        assert_eq!(
            d(
                ON,
                Some(ResourceKind::Opaque),
                r#"[{"n":"/3311/0/5850","vd":"AAE"}]"#
            ),
            Ok(Value::Data(vec![0, 1]))
        );
        // A value of the wrong kind, a missing record, bad names and bad JSON are errors that name the path.
        let e = d(
            ON,
            Some(ResourceKind::Boolean),
            r#"[{"n":"/3311/0/5850","v":1}]"#,
        )
        .unwrap_err();
        assert!(matches!(e, ContentError::Mismatch { .. }), "{e}");
        let e = d(
            TEMP,
            Some(ResourceKind::Integer),
            r#"[{"n":"/3303/0/5700","v":1.5}]"#,
        )
        .unwrap_err();
        assert!(matches!(e, ContentError::Mismatch { .. }), "{e}");
        let e = d(TEMP, None, r#"[{"n":"/3303/0/5701","v":1}]"#).unwrap_err();
        assert!(
            e.to_string().contains("no record named /3303/0/5700"),
            "{e}"
        );
        let e = d(TEMP, None, r#"[{"n":"//3303","v":1}]"#).unwrap_err();
        assert!(matches!(e, ContentError::Senml { .. }), "{e}");
        let e = d(TEMP, None, "[{").unwrap_err();
        assert!(
            e.to_string().starts_with("/3303/0/5700: SenML: not JSON"),
            "{e}"
        );
    }

    #[test]
    fn senml_json_writes_read_back() {
        for (path, kind, v) in [
            (ON, Some(ResourceKind::Boolean), Value::Bool(true)),
            (TEMP, Some(ResourceKind::Float), Value::Number(-3.25)),
            (TEMP, Some(ResourceKind::Integer), Value::Number(42.0)),
            (ON, None, Value::String("red".into())),
            (ON, Some(ResourceKind::Opaque), Value::Data(vec![0, 1, 250])),
        ] {
            for format in [SENML_JSON, SENML_CBOR] {
                let (f, bytes) = encode_senml(path, kind, &v, format).unwrap();
                assert_eq!(f, format);
                assert_eq!(
                    decode_value(path, kind, Some(format), &bytes),
                    Ok(v.clone())
                );
            }
        }
        assert!(encode_senml_json(ON, Some(ResourceKind::Boolean), &Value::Number(1.0)).is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_senml_payload_is_read_or_refused_without_panicking(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = decode_value(TEMP, None, Some(SENML_JSON), &bytes);
            let _ = decode_value(TEMP, Some(ResourceKind::Integer), Some(SENML_JSON), &bytes);
            let _ = decode_value(TEMP, None, Some(SENML_CBOR), &bytes);
        }
    }
}
