//! The EdgeX Foundry v3 event shape (core-data `AddEventRequest`), as an
//! EdgeX device service posts it to `POST /api/v3/event/{service}/
//! {profile}/{device}/{source}`, turned into [`Reading`]s.
//!
//! Accepted: `{"apiVersion": "v3", "event": {"id", "deviceName",
//! "profileName", "sourceName", "origin", "readings": [{"resourceName",
//! "valueType", "value" | "binaryValue", "units"?, "origin"?}]}}`, with
//! `origin` in nanoseconds. Numeric value types (`Int*`, `Uint*`,
//! `Float*`) become numbers, `Bool` a boolean, `String` a string,
//! `Binary` bytes (base64 `binaryValue`). Array and object value types are
//! refused. The thing is the device name.
//!
//! Going back ([`edgex_value`], [`reading_id`]): a reading answered to an
//! EdgeX reading query gets the value type it was posted with when it
//! still fits its value (numbers that are whole stay integers for `Int*`
//! and `Uint*`), else the type of its value (`Float64`, `Bool`, `String`,
//! `Binary`); its id is a UUID (version 8) made of its seal leaf hash.

use base64::Engine;
use serde::Deserialize;

use crate::reading::{Reading, Value};

/// Most readings in one event.
pub const MAX_EVENT_READINGS: usize = 4096;

/// Why an event was refused; `path` names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct EdgexError {
    pub path: String,
    pub reason: String,
}

fn err(path: impl Into<String>, reason: impl Into<String>) -> EdgexError {
    EdgexError {
        path: path.into(),
        reason: reason.into(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddEvent {
    api_version: String,
    event: Event,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    #[serde(default)]
    id: Option<String>,
    device_name: String,
    #[serde(default)]
    profile_name: Option<String>,
    #[serde(default)]
    source_name: Option<String>,
    origin: i64,
    readings: Vec<EdgexReading>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EdgexReading {
    resource_name: String,
    value_type: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    binary_value: Option<String>,
    #[serde(default)]
    units: Option<String>,
    #[serde(default)]
    origin: Option<i64>,
    #[serde(default)]
    device_name: Option<String>,
}

/// An accepted event: its id and its readings.
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptedEvent {
    pub id: String,
    pub device: String,
    pub profile: String,
    pub source: String,
    pub readings: Vec<Reading>,
    /// The EdgeX `valueType` of each reading, in the same order.
    pub value_types: Vec<String>,
}

/// Parse an EdgeX v3 event body posted for `device` (from the path).
pub fn parse_event(body: &[u8], device: &str) -> Result<AcceptedEvent, EdgexError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let ev: AddEvent = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| err(e.path().to_string(), e.inner().to_string()))?;
    if ev.api_version != "v3" {
        return Err(err("apiVersion", format!("{:?} is not v3", ev.api_version)));
    }
    let e = ev.event;
    if e.device_name != device {
        return Err(err(
            "event.deviceName",
            format!(
                "{:?} does not match the path's device {device:?}",
                e.device_name
            ),
        ));
    }
    if e.readings.is_empty() {
        return Err(err("event.readings", "an event needs at least one reading"));
    }
    if e.readings.len() > MAX_EVENT_READINGS {
        return Err(err(
            "event.readings",
            format!(
                "{} readings; the limit is {MAX_EVENT_READINGS}",
                e.readings.len()
            ),
        ));
    }
    let mut readings = Vec::with_capacity(e.readings.len());
    let mut value_types = Vec::with_capacity(e.readings.len());
    for (i, r) in e.readings.iter().enumerate() {
        let path = |f: &str| format!("event.readings[{i}].{f}");
        if let Some(d) = &r.device_name
            && d != &e.device_name
        {
            return Err(err(path("deviceName"), "differs from the event's device"));
        }
        let text = || {
            r.value
                .as_deref()
                .ok_or_else(|| err(path("value"), "missing"))
        };
        let value = match r.value_type.as_str() {
            "Bool" => Value::Bool(
                text()?
                    .parse()
                    .map_err(|_| err(path("value"), "not true or false"))?,
            ),
            "String" => Value::String(text()?.to_owned()),
            "Binary" => {
                let b = r
                    .binary_value
                    .as_deref()
                    .ok_or_else(|| err(path("binaryValue"), "missing"))?;
                Value::Data(
                    base64::engine::general_purpose::STANDARD
                        .decode(b)
                        .map_err(|e| err(path("binaryValue"), format!("not base64: {e}")))?,
                )
            }
            t if t.starts_with("Int") || t.starts_with("Uint") || t.starts_with("Float") => {
                let v: f64 = text()?
                    .trim()
                    .parse()
                    .map_err(|_| err(path("value"), format!("not a number for {t}")))?;
                if !v.is_finite() {
                    return Err(err(path("value"), "not a finite number"));
                }
                Value::Number(v)
            }
            other => {
                return Err(err(
                    path("valueType"),
                    format!(
                        "{other:?} is not supported (Bool, String, Binary, Int*, Uint*, Float*)"
                    ),
                ));
            }
        };
        let origin_ns = r.origin.unwrap_or(e.origin);
        let reading = Reading::new(
            e.device_name.clone(),
            r.resource_name.clone(),
            value,
            r.units.clone().filter(|u| !u.is_empty()),
            origin_ns.div_euclid(1_000_000),
        )
        .map_err(|x| err(format!("event.readings[{i}]"), x.to_string()))?;
        readings.push(reading);
        value_types.push(r.value_type.clone());
    }
    Ok(AcceptedEvent {
        id: e.id.unwrap_or_default(),
        device: e.device_name,
        profile: e.profile_name.unwrap_or_default(),
        source: e.source_name.unwrap_or_default(),
        readings,
        value_types,
    })
}

/// Whether `value` can be written back as EdgeX type `value_type`.
pub fn value_type_fits(value: &Value, value_type: &str) -> bool {
    match value {
        Value::Number(x) => {
            if value_type.starts_with("Float") {
                true
            } else if value_type.starts_with("Uint") {
                x.fract() == 0.0 && *x >= 0.0 && *x < 2f64.powi(64)
            } else if value_type.starts_with("Int") {
                x.fract() == 0.0 && *x >= -(2f64.powi(63)) && *x < 2f64.powi(63)
            } else {
                false
            }
        }
        Value::Bool(_) => value_type == "Bool",
        Value::String(_) => value_type == "String",
        Value::Data(_) => value_type == "Binary",
    }
}

/// A value in EdgeX terms: `(valueType, value, binaryValue)`. The type it
/// was posted with (`posted`) is kept when it still fits the value.
pub fn edgex_value(value: &Value, posted: Option<&str>) -> (String, String, Option<String>) {
    let value_type = match posted {
        Some(t) if value_type_fits(value, t) => t.to_owned(),
        _ => match value {
            Value::Number(_) => "Float64",
            Value::Bool(_) => "Bool",
            Value::String(_) => "String",
            Value::Data(_) => "Binary",
        }
        .to_owned(),
    };
    match value {
        Value::Number(x) if value_type.starts_with("Uint") => {
            (value_type, format!("{}", *x as u64), None)
        }
        Value::Number(x) if value_type.starts_with("Int") => {
            (value_type, format!("{}", *x as i64), None)
        }
        Value::Number(x) => (value_type, format!("{x}"), None),
        Value::Bool(b) => (value_type, b.to_string(), None),
        Value::String(v) => (value_type, v.clone(), None),
        Value::Data(d) => (
            value_type,
            String::new(),
            Some(base64::engine::general_purpose::STANDARD.encode(d)),
        ),
    }
}

/// The EdgeX id of a reading: a UUID (version 8, RFC 9562) made of the
/// first 16 bytes of its seal leaf hash, so it is stable and unique.
pub fn reading_id(leaf: &[u8; 32]) -> String {
    let mut b = [0u8; 16];
    b.copy_from_slice(&leaf[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EVENT: &str = r#"{"apiVersion":"v3","event":{"apiVersion":"v3","id":"6a3f","deviceName":"greenhouse-1",
        "profileName":"climate","sourceName":"temperature","origin":1602168089665565200,
        "readings":[{"id":"r1","origin":1602168089665565200,"deviceName":"greenhouse-1","resourceName":"temperature",
        "profileName":"climate","valueType":"Float64","value":"23.5","units":"Cel"},
        {"resourceName":"door","valueType":"Bool","value":"true"}]}}"#;

    #[test]
    fn an_edgex_event_becomes_readings() {
        let e = parse_event(EVENT.as_bytes(), "greenhouse-1").unwrap();
        assert_eq!(e.id, "6a3f");
        assert_eq!(e.readings.len(), 2);
        assert_eq!(e.readings[0].thing(), "greenhouse-1");
        assert_eq!(e.readings[0].value(), &Value::Number(23.5));
        assert_eq!(e.readings[0].unit(), Some("Cel"));
        assert_eq!(e.readings[0].time_ms(), 1_602_168_089_665);
        assert_eq!(e.readings[1].value(), &Value::Bool(true));
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse_event(EVENT.as_bytes(), "other").unwrap_err();
        assert_eq!(e.path, "event.deviceName");
        let bad = EVENT.replace("\"23.5\"", "\"warm\"");
        assert_eq!(
            parse_event(bad.as_bytes(), "greenhouse-1")
                .unwrap_err()
                .path,
            "event.readings[0].value"
        );
        let bad = EVENT.replace("\"Bool\"", "\"Object\"");
        assert_eq!(
            parse_event(bad.as_bytes(), "greenhouse-1")
                .unwrap_err()
                .path,
            "event.readings[1].valueType"
        );
        let bad = EVENT.replace(
            "\"origin\":1602168089665565200,\n        \"readings\"",
            "\"readings\"",
        );
        assert!(parse_event(bad.as_bytes(), "greenhouse-1").is_err());
    }

    #[test]
    fn values_go_back_with_their_posted_type_when_it_fits() {
        let e = parse_event(EVENT.as_bytes(), "greenhouse-1").unwrap();
        assert_eq!(e.value_types, vec!["Float64", "Bool"]);
        let v = |x| Value::Number(x);
        assert_eq!(
            edgex_value(&v(23.5), Some("Float64")),
            ("Float64".into(), "23.5".into(), None)
        );
        assert_eq!(
            edgex_value(&v(7.0), Some("Int32")),
            ("Int32".into(), "7".into(), None)
        );
        assert_eq!(
            edgex_value(&v(-7.0), Some("Uint8")),
            ("Float64".into(), "-7".into(), None)
        );
        assert_eq!(
            edgex_value(&v(7.5), Some("Int64")),
            ("Float64".into(), "7.5".into(), None)
        );
        assert_eq!(edgex_value(&v(1.0), None).0, "Float64");
        assert_eq!(
            edgex_value(&Value::Bool(true), Some("String")),
            ("Bool".into(), "true".into(), None)
        );
        assert_eq!(
            edgex_value(&Value::Data(vec![1, 2, 3]), Some("Binary")),
            ("Binary".into(), String::new(), Some("AQID".into()))
        );
        let id = reading_id(&[0xab; 32]);
        assert_eq!(id, "abababab-abab-8bab-abab-abababababab");
    }

    proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_event(&body, "d");
        }

        #[test]
        fn mutated_events_never_panic(i in 0usize..600, b in any::<u8>()) {
            let mut body = EVENT.as_bytes().to_vec();
            let i = i % body.len();
            body[i] = b;
            let _ = parse_event(&body, "greenhouse-1");
        }
    }
}
