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
    }
    Ok(AcceptedEvent {
        id: e.id.unwrap_or_default(),
        device: e.device_name,
        profile: e.profile_name.unwrap_or_default(),
        source: e.source_name.unwrap_or_default(),
        readings,
    })
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
