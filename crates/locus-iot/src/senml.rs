//! Readings sent as JSON: SenML (RFC 8428) packs, resolved into records,
//! and locus's two simple forms.
//!
//! # SenML JSON
//!
//! A pack is an array of records. Base fields (`bn`, `bt`, `bu`, `bv`,
//! `bs`, `bver`) apply to their record and every later one until another
//! record sets them again. Resolution (RFC 8428 §4.5–4.6):
//!
//! - name = `bn` + `n`; it must be non-empty, start with a letter or
//!   digit and hold only letters, digits and `- : . / _`;
//! - unit = `u`, else `bu` (an empty `u` means no unit);
//! - time = `bt` + `t` (each 0 when absent); a result below 2^28 is
//!   relative to `now` (0 is "now", negative is the past), so the record's
//!   time is `now` + that;
//! - value: at most one of `v` (plus `bv`), `vs`, `vb`, `vd` (base64url,
//!   padding optional); sum = `bs` + `s` when either is present. A record
//!   needs a value or a sum.
//!
//! Numbers must be finite after resolution, `bver` at most 10, and a field
//! whose label ends in `_` (must-understand) is refused; other unknown
//! fields are ignored.
//!
//! # Simple JSON
//!
//! [`parse`] also accepts, as a JSON object:
//!
//! - one reading: `{"resource": "temp", "value": 21.5, "unit": "Cel",
//!   "time": 1700000000.25}` — `value` a number, string or boolean; `unit`
//!   and `time` (absolute unix seconds; default `now`) optional; no other
//!   member;
//! - or, when it has no `resource` member, a map of resource names to
//!   values: `{"temp": 21.5, "door": false}`, all at `now`, without units,
//!   returned in name order.
//!
//! Resource names follow the SenML name rule. Every error names the record
//! (its index in the array, or the member) and the field.

use base64::Engine;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::{Map, Value as Json};
use thiserror::Error;

use crate::reading::{Reading, ReadingError, Value};

/// The SenML version this resolver implements.
pub const VERSION: i64 = 10;
/// Times below this (2^28 s) are relative to "now".
pub const RELATIVE_BELOW: f64 = 268_435_456.0;
/// Most records read from one payload.
pub const MAX_RECORDS: usize = 4096;
/// Largest resolved time, in seconds either side of the epoch (just under
/// 2^53 ms, about 285,000 years):
/// every time rounds to whole milliseconds within range of an `i64`.
pub const MAX_TIME_S: f64 = 9_007_199_254_740.0;

/// One resolved record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub name: String,
    pub unit: Option<String>,
    /// Absolute time, seconds since the Unix epoch.
    pub time: f64,
    /// The value, if the record has one; a record has a value, a sum or both.
    pub value: Option<Value>,
    pub sum: Option<f64>,
    /// `ut`: the longest time, in seconds, before the sensor reports again.
    pub update_time: Option<f64>,
}

impl Record {
    /// The reading of this record for `thing`: its value, or its sum as a
    /// number when it has no value; the time rounded to milliseconds.
    pub fn to_reading(&self, thing: &str) -> Result<Reading, ReadingError> {
        let value = match (&self.value, self.sum) {
            (Some(v), _) => v.clone(),
            (None, Some(s)) => Value::Number(s),
            // Resolution never makes a record without both.
            (None, None) => return Err(ReadingError::Empty { field: "value" }),
        };
        // Within ±MAX_TIME_S, so the product fits an i64 exactly.
        let ms = (self.time * 1000.0).round() as i64;
        Reading::new(thing, self.name.clone(), value, self.unit.clone(), ms)
    }
}

/// What is wrong with a payload, naming the record and the field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SenmlError {
    #[error("not SenML CBOR: {why}")]
    Cbor { why: String },
    #[error("not JSON, line {line} column {column}: {why}")]
    Json {
        line: usize,
        column: usize,
        why: String,
    },
    #[error("expected a SenML array or a reading object, found {found}")]
    TopLevel { found: &'static str },
    #[error("{count} records, at most {max} are read")]
    TooMany { count: usize, max: usize },
    #[error("record {index}: expected an object, found {found}")]
    NotAnObject { index: usize, found: &'static str },
    #[error("record {index}, field {field:?}: expected {expected}, found {found}")]
    Type {
        index: usize,
        field: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("record {index}: name {name:?} {why}")]
    Name {
        index: usize,
        name: String,
        why: String,
    },
    #[error("record {index}: no value (v, vs, vb, vd) and no sum (s, bs)")]
    NoValue { index: usize },
    #[error("record {index}: more than one value ({fields})")]
    MultipleValues { index: usize, fields: String },
    #[error("record {index}, field {field:?}: the result is not a finite number")]
    NotFinite { index: usize, field: &'static str },
    #[error(
        "record {index}: time {time} s is out of range (at most {MAX_TIME_S} s from the epoch)"
    )]
    Time { index: usize, time: String },
    #[error("record {index}: SenML version {version} is not supported (at most {VERSION})")]
    Version { index: usize, version: String },
    #[error("record {index}: field {field:?} must be understood and is not")]
    MustUnderstand { index: usize, field: String },
    #[error("record {index}, field \"vd\": not base64url: {why}")]
    Data { index: usize, why: String },
    #[error("record {index}: unknown field {field:?}")]
    Unknown { index: usize, field: String },
}

fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

fn parse_json(bytes: &[u8]) -> Result<Json, SenmlError> {
    serde_json::from_slice(bytes).map_err(|e| SenmlError::Json {
        line: e.line(),
        column: e.column(),
        why: e.to_string(),
    })
}

/// Resolve a SenML JSON pack.
pub fn resolve(json: &[u8], now: f64) -> Result<Vec<Record>, SenmlError> {
    match parse_json(json)? {
        Json::Array(records) => resolve_pack(&records, now),
        other => Err(SenmlError::TopLevel {
            found: kind(&other),
        }),
    }
}

/// Read a payload in any accepted form: a SenML array, one simple reading
/// or a map of resources to values (see the module documentation).
pub fn parse(json: &[u8], now: f64) -> Result<Vec<Record>, SenmlError> {
    match parse_json(json)? {
        Json::Array(records) => resolve_pack(&records, now),
        Json::Object(o) if o.contains_key("resource") => Ok(vec![simple_reading(&o, now)?]),
        Json::Object(o) => resource_map(&o, now),
        other => Err(SenmlError::TopLevel {
            found: kind(&other),
        }),
    }
}

/// Check a resolved name against RFC 8428 §4.5.1.
pub fn check_name(index: usize, name: &str) -> Result<(), SenmlError> {
    let bad = |why: String| SenmlError::Name {
        index,
        name: name.to_owned(),
        why,
    };
    let Some(first) = name.chars().next() else {
        return Err(bad("is empty".into()));
    };
    if !first.is_ascii_alphanumeric() {
        return Err(bad(format!("starts with {first:?}, not a letter or digit")));
    }
    if let Some((at, c)) = name
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '-' | ':' | '.' | '/' | '_')))
    {
        return Err(bad(format!("has {c:?} at byte {at}")));
    }
    Ok(())
}

/// Reads the typed fields of one record, naming the record on error.
struct Fields<'a> {
    index: usize,
    o: &'a Map<String, Json>,
}

impl<'a> Fields<'a> {
    fn type_err(&self, field: &str, expected: &'static str, v: &Json) -> SenmlError {
        SenmlError::Type {
            index: self.index,
            field: field.to_owned(),
            expected,
            found: kind(v),
        }
    }

    fn str(&self, field: &str) -> Result<Option<&'a str>, SenmlError> {
        match self.o.get(field) {
            None => Ok(None),
            Some(Json::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.type_err(field, "a string", v)),
        }
    }

    fn num(&self, field: &str) -> Result<Option<f64>, SenmlError> {
        match self.o.get(field) {
            None => Ok(None),
            Some(Json::Number(n)) => Ok(n.as_f64()),
            Some(v) => Err(self.type_err(field, "a number", v)),
        }
    }

    fn bool(&self, field: &str) -> Result<Option<bool>, SenmlError> {
        match self.o.get(field) {
            None => Ok(None),
            Some(Json::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.type_err(field, "a boolean", v)),
        }
    }
}

fn finite(index: usize, field: &'static str, x: f64) -> Result<f64, SenmlError> {
    if x.is_finite() {
        Ok(x)
    } else {
        Err(SenmlError::NotFinite { index, field })
    }
}

fn check_time(index: usize, t: f64) -> Result<f64, SenmlError> {
    if t.is_finite() && t.abs() <= MAX_TIME_S {
        Ok(t)
    } else {
        Err(SenmlError::Time {
            index,
            time: t.to_string(),
        })
    }
}

/// Absolute time of a resolved SenML time: below 2^28 it is relative.
fn absolute(index: usize, t: f64, now: f64) -> Result<f64, SenmlError> {
    let t = if t < RELATIVE_BELOW { now + t } else { t };
    check_time(index, t)
}

fn data_engine() -> GeneralPurpose {
    GeneralPurpose::new(
        &URL_SAFE,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    )
}

#[derive(Default)]
struct Base {
    name: String,
    time: f64,
    unit: Option<String>,
    value: f64,
    sum: Option<f64>,
}

/// How resolved names are checked: RFC 8428 §4.5.1, or LwM2M's object
/// paths (`/3303/0/5700`), which start with a `/` (LwM2M 1.1 TS §7.4.4).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Names {
    Rfc8428,
    Lwm2mPaths,
}

/// Resolve a SenML JSON pack whose names are LwM2M paths (content format
/// 110 of an LwM2M 1.1 Read or Notify).
pub fn resolve_lwm2m(json: &[u8]) -> Result<Vec<Record>, SenmlError> {
    match parse_json(json)? {
        Json::Array(records) => resolve_records(&records, 0.0, Names::Lwm2mPaths),
        other => Err(SenmlError::TopLevel {
            found: kind(&other),
        }),
    }
}

/// The labels of SenML CBOR (RFC 8428 Table 6) and their JSON names.
const CBOR_LABELS: [(i64, &str); 15] = [
    (-1, "bver"),
    (-2, "bn"),
    (-3, "bt"),
    (-4, "bu"),
    (-5, "bv"),
    (-6, "bs"),
    (0, "n"),
    (1, "u"),
    (2, "v"),
    (3, "vs"),
    (4, "vb"),
    (5, "s"),
    (6, "t"),
    (7, "ut"),
    (8, "vd"),
];

/// Resolve a SenML CBOR pack whose names are LwM2M paths (content format
/// 112): each record's integer labels become their JSON names and `vd`
/// bytes base64url, then it resolves as SenML JSON does.
pub fn resolve_lwm2m_cbor(cbor: &[u8]) -> Result<Vec<Record>, SenmlError> {
    use base64::Engine;
    use ciborium::Value as Cbor;
    let bad = |why: String| SenmlError::Cbor { why };
    let value: Cbor = ciborium::de::from_reader(cbor).map_err(|e| bad(e.to_string()))?;
    let Cbor::Array(records) = value else {
        return Err(bad("the pack is not an array".into()));
    };
    if records.len() > MAX_RECORDS {
        return Err(SenmlError::TooMany {
            count: records.len(),
            max: MAX_RECORDS,
        });
    }
    let mut json = Vec::with_capacity(records.len());
    for (index, record) in records.into_iter().enumerate() {
        let Cbor::Map(fields) = record else {
            return Err(bad(format!("record {index} is not a map")));
        };
        let mut o = Map::new();
        for (k, v) in fields {
            let label = k
                .as_integer()
                .and_then(|i| i64::try_from(i).ok())
                .ok_or_else(|| bad(format!("record {index}: a label is not an integer")))?;
            let name = CBOR_LABELS
                .iter()
                .find(|(l, _)| *l == label)
                .map(|(_, n)| *n)
                .ok_or_else(|| bad(format!("record {index}: unknown label {label}")))?;
            let v = match v {
                Cbor::Bytes(b) if name == "vd" => {
                    Json::String(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
                }
                Cbor::Text(t) => Json::String(t),
                Cbor::Bool(b) => Json::Bool(b),
                Cbor::Integer(i) => Json::from(i128::from(i) as f64),
                Cbor::Float(x) => serde_json::Number::from_f64(x)
                    .map(Json::Number)
                    .ok_or_else(|| bad(format!("record {index}, {name}: not a finite number")))?,
                _ => return Err(bad(format!("record {index}, {name}: not a SenML value"))),
            };
            o.insert(name.to_owned(), v);
        }
        json.push(Json::Object(o));
    }
    resolve_records(&json, 0.0, Names::Lwm2mPaths)
}

/// One record of a pack this node writes (LwM2M 1.1 writes and bootstrap
/// instances): an optional base name, a name and a value.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteRecord {
    pub base_name: Option<String>,
    pub name: String,
    pub value: Value,
}

/// `records` as SenML JSON: `bn`, `n`, and one of `v`, `vs`, `vb`, or `vd`
/// in base64url without padding (RFC 8428 §4.3).
pub fn pack_json(records: &[WriteRecord]) -> Vec<u8> {
    use base64::Engine;
    let records: Vec<Json> = records
        .iter()
        .map(|r| {
            let mut o = Map::new();
            if let Some(bn) = &r.base_name {
                o.insert("bn".into(), bn.clone().into());
            }
            o.insert("n".into(), r.name.clone().into());
            let (key, v): (&str, Json) = match &r.value {
                Value::Number(x) => ("v", (*x).into()),
                Value::String(s) => ("vs", s.clone().into()),
                Value::Bool(b) => ("vb", (*b).into()),
                Value::Data(d) => (
                    "vd",
                    base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .encode(d)
                        .into(),
                ),
            };
            o.insert(key.into(), v);
            Json::Object(o)
        })
        .collect();
    serde_json::to_vec(&records).unwrap_or_default()
}

/// `records` as SenML CBOR: the integer labels of RFC 8428 Table 6, data
/// as bytes.
pub fn pack_cbor(records: &[WriteRecord]) -> Vec<u8> {
    use ciborium::Value as Cbor;
    let label = |l: i64| Cbor::Integer(l.into());
    let pack = Cbor::Array(
        records
            .iter()
            .map(|r| {
                let mut fields = Vec::with_capacity(3);
                if let Some(bn) = &r.base_name {
                    fields.push((label(-2), Cbor::Text(bn.clone())));
                }
                fields.push((label(0), Cbor::Text(r.name.clone())));
                fields.push(match &r.value {
                    Value::Number(x) => (label(2), Cbor::Float(*x)),
                    Value::String(s) => (label(3), Cbor::Text(s.clone())),
                    Value::Bool(b) => (label(4), Cbor::Bool(*b)),
                    Value::Data(d) => (label(8), Cbor::Bytes(d.clone())),
                });
                Cbor::Map(fields)
            })
            .collect(),
    );
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = ciborium::ser::into_writer(&pack, &mut out);
    out
}

fn resolve_pack(records: &[Json], now: f64) -> Result<Vec<Record>, SenmlError> {
    resolve_records(records, now, Names::Rfc8428)
}

fn resolve_records(records: &[Json], now: f64, names: Names) -> Result<Vec<Record>, SenmlError> {
    if records.len() > MAX_RECORDS {
        return Err(SenmlError::TooMany {
            count: records.len(),
            max: MAX_RECORDS,
        });
    }
    let mut base = Base::default();
    let mut out = Vec::with_capacity(records.len());
    for (index, r) in records.iter().enumerate() {
        let Json::Object(o) = r else {
            return Err(SenmlError::NotAnObject {
                index,
                found: kind(r),
            });
        };
        let f = Fields { index, o };
        if let Some(field) = o.keys().find(|k| k.ends_with('_')) {
            return Err(SenmlError::MustUnderstand {
                index,
                field: field.clone(),
            });
        }
        if let Some(v) = o.get("bver") {
            let ok = v.as_i64().is_some_and(|n| (1..=VERSION).contains(&n));
            if !ok {
                return Err(match v {
                    Json::Number(n) => SenmlError::Version {
                        index,
                        version: n.to_string(),
                    },
                    other => f.type_err("bver", "a number", other),
                });
            }
        }
        // Base fields first: they apply to this record too.
        if let Some(bn) = f.str("bn")? {
            base.name = bn.to_owned();
        }
        if let Some(bt) = f.num("bt")? {
            base.time = finite(index, "bt", bt)?;
        }
        if let Some(bu) = f.str("bu")? {
            base.unit = (!bu.is_empty()).then(|| bu.to_owned());
        }
        if let Some(bv) = f.num("bv")? {
            base.value = finite(index, "bv", bv)?;
        }
        if let Some(bs) = f.num("bs")? {
            base.sum = Some(finite(index, "bs", bs)?);
        }

        let name = format!("{}{}", base.name, f.str("n")?.unwrap_or(""));
        match (names, name.strip_prefix('/')) {
            (Names::Lwm2mPaths, Some(rest)) => check_name(index, rest)?,
            _ => check_name(index, &name)?,
        }
        let unit = match f.str("u")? {
            Some("") => None,
            Some(u) => Some(u.to_owned()),
            None => base.unit.clone(),
        };
        let t = base.time + f.num("t")?.unwrap_or(0.0);
        let time = absolute(index, finite(index, "t", t)?, now)?;

        let present: Vec<&str> = ["v", "vs", "vb", "vd"]
            .into_iter()
            .filter(|k| o.contains_key(*k))
            .collect();
        if present.len() > 1 {
            return Err(SenmlError::MultipleValues {
                index,
                fields: present.join(", "),
            });
        }
        let value = if let Some(v) = f.num("v")? {
            Some(Value::Number(finite(index, "v", base.value + v)?))
        } else if let Some(s) = f.str("vs")? {
            Some(Value::String(s.to_owned()))
        } else if let Some(b) = f.bool("vb")? {
            Some(Value::Bool(b))
        } else if let Some(d) = f.str("vd")? {
            let bytes = data_engine().decode(d).map_err(|e| SenmlError::Data {
                index,
                why: e.to_string(),
            })?;
            Some(Value::Data(bytes))
        } else {
            None
        };
        let sum = match (f.num("s")?, base.sum) {
            (None, None) => None,
            (s, bs) => Some(finite(index, "s", bs.unwrap_or(0.0) + s.unwrap_or(0.0))?),
        };
        if value.is_none() && sum.is_none() {
            return Err(SenmlError::NoValue { index });
        }
        let update_time = match f.num("ut")? {
            Some(ut) => Some(finite(index, "ut", ut)?),
            None => None,
        };
        out.push(Record {
            name,
            unit,
            time,
            value,
            sum,
            update_time,
        });
    }
    Ok(out)
}

fn scalar(index: usize, field: &str, v: &Json) -> Result<Value, SenmlError> {
    match v {
        Json::Number(n) => match n.as_f64() {
            Some(x) if x.is_finite() => Ok(Value::Number(x)),
            _ => Err(SenmlError::NotFinite {
                index,
                field: "value",
            }),
        },
        Json::String(s) => Ok(Value::String(s.clone())),
        Json::Bool(b) => Ok(Value::Bool(*b)),
        other => Err(SenmlError::Type {
            index,
            field: field.to_owned(),
            expected: "a number, a string or a boolean",
            found: kind(other),
        }),
    }
}

fn simple_reading(o: &Map<String, Json>, now: f64) -> Result<Record, SenmlError> {
    let f = Fields { index: 0, o };
    if let Some(k) = o
        .keys()
        .find(|k| !matches!(k.as_str(), "resource" | "value" | "unit" | "time"))
    {
        return Err(SenmlError::Unknown {
            index: 0,
            field: k.clone(),
        });
    }
    let name = f.str("resource")?.unwrap_or_default().to_owned();
    check_name(0, &name)?;
    let value = match o.get("value") {
        Some(v) => scalar(0, "value", v)?,
        None => return Err(SenmlError::NoValue { index: 0 }),
    };
    let unit = f.str("unit")?.filter(|u| !u.is_empty()).map(str::to_owned);
    let time = match f.num("time")? {
        Some(t) => check_time(0, t)?,
        None => check_time(0, now)?,
    };
    Ok(Record {
        name,
        unit,
        time,
        value: Some(value),
        sum: None,
        update_time: None,
    })
}

fn resource_map(o: &Map<String, Json>, now: f64) -> Result<Vec<Record>, SenmlError> {
    if o.len() > MAX_RECORDS {
        return Err(SenmlError::TooMany {
            count: o.len(),
            max: MAX_RECORDS,
        });
    }
    let time = check_time(0, now)?;
    o.iter()
        .enumerate()
        .map(|(index, (name, v))| {
            check_name(index, name)?;
            Ok(Record {
                name: name.clone(),
                unit: None,
                time,
                value: Some(scalar(index, name, v)?),
                sum: None,
                update_time: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
