//! Commands to things: read a resource, write a value, execute an action.
//!
//! [`plan`] is the pure part: it checks a command against the thing's
//! profile (the resource exists, its access allows the action, the value
//! parses as the resource's type) and says what to do. [`Commands::run`]
//! carries the plan out over the thing's protocol on its manager node:
//!
//! - **mqtt**: a write or execute is a QoS 1 publish on
//!   `things/{thing}/commands/{resource}` (payload: the value as JSON, or
//!   the execute arguments as text), done when the thing's PUBACK arrives;
//!   a read answers the newest stored reading of the resource (MQTT things
//!   push their readings).
//! - **lwm2m**: Read, Write or Execute on the resource's object path.
//! - **http**: `GET` or `PUT {url}/api/v3/device/name/{thing}/{resource}`
//!   on the thing's device service (the EdgeX device service API).
//!
//! This module runs commands only on things its node manages; the API
//! forwards a command to the manager.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use locus_core::thing::{ThingProtocol, ThingSpec, ValueType};
use locus_iot::Value;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::mqtt::Broker;
use locus_readings::Readings;

/// Timeout of a call to an HTTP thing's device service.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read from a device service.
const MAX_ANSWER: usize = 64 * 1024;

/// What a command does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Read,
    Write,
    Execute,
}

/// A command, checked against the thing's profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub action: Action,
    pub resource: String,
    /// The value to write (writes only).
    pub value: Option<Value>,
    /// Arguments of an execute, as given.
    pub args: Option<String>,
}

/// Why a command cannot run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommandError {
    #[error("thing {thing:?} has no resource {resource:?}")]
    NoResource { thing: String, resource: String },
    #[error("{0}")]
    NotAllowed(String),
    #[error("value {value:?} for resource {resource:?}: {why}")]
    BadValue {
        resource: String,
        value: String,
        why: String,
    },
    #[error("{0}")]
    Unavailable(String),
    #[error("the thing answered: {0}")]
    Failed(String),
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CommandResult {
    pub thing: String,
    pub resource: String,
    pub protocol: ThingProtocol,
    pub action: Action,
    /// The value read (reads), or written (writes), as JSON.
    #[schema(value_type = Object, nullable = true)]
    pub value: serde_json::Value,
    /// Unix ms of the value read, when known.
    pub time_ms: Option<i64>,
    /// How it was carried out (`delivered: PUBACK on things/t/commands/led`).
    pub detail: String,
    /// Not delivered yet: kept for the thing's persistent MQTT session and
    /// delivered when it is back.
    #[serde(default)]
    pub queued: bool,
}

/// Parse `text` as a value of `ty`.
pub fn parse_value(ty: ValueType, text: &str) -> Result<Value, String> {
    match ty {
        ValueType::Float => text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Value::Number)
            .ok_or_else(|| "not a finite number".to_owned()),
        ValueType::Int => text
            .trim()
            .parse::<i64>()
            .map(|i| Value::Number(i as f64))
            .map_err(|_| "not an integer".to_owned()),
        ValueType::Bool => match text.trim() {
            "true" | "1" | "on" => Ok(Value::Bool(true)),
            "false" | "0" | "off" => Ok(Value::Bool(false)),
            _ => Err("not a boolean (true/false, on/off, 1/0)".to_owned()),
        },
        ValueType::String => Ok(Value::String(text.to_owned())),
        ValueType::Binary => base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map(Value::Data)
            .map_err(|e| format!("not base64: {e}")),
    }
}

/// A value as JSON (numbers that are integers print as integers).
pub fn value_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Number(n) if n.fract() == 0.0 && n.abs() < 9e15 => serde_json::json!(*n as i64),
        Value::Number(n) => serde_json::json!(n),
        Value::String(s) => serde_json::json!(s),
        Value::Bool(b) => serde_json::json!(b),
        Value::Data(d) => serde_json::json!(base64::engine::general_purpose::STANDARD.encode(d)),
    }
}

/// A value as text (what EdgeX and LwM2M text/plain carry).
pub fn value_text(v: &Value) -> String {
    match value_json(v) {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    }
}

/// Check a command against the thing's profile: no value reads (or
/// executes an executable resource); a value writes (or is the argument of
/// an execute).
pub fn plan(spec: &ThingSpec, resource: &str, value: Option<&str>) -> Result<Plan, CommandError> {
    let Some(r) = spec.resource(resource) else {
        return Err(CommandError::NoResource {
            thing: spec.name.get().clone(),
            resource: resource.to_owned(),
        });
    };
    let access = r.access;
    let plan = |action, value, args| Plan {
        action,
        resource: resource.to_owned(),
        value,
        args,
    };
    match value {
        _ if access.executable() => Ok(plan(Action::Execute, None, value.map(str::to_owned))),
        None if access.readable() => Ok(plan(Action::Read, None, None)),
        None => Err(CommandError::NotAllowed(format!(
            "resource {resource:?} is write-only; give a value to write"
        ))),
        Some(v) if access.writable() => {
            let parsed = parse_value(r.value_type, v).map_err(|why| CommandError::BadValue {
                resource: resource.to_owned(),
                value: v.to_owned(),
                why,
            })?;
            Ok(plan(Action::Write, Some(parsed), None))
        }
        Some(_) => Err(CommandError::NotAllowed(format!(
            "resource {resource:?} is read-only"
        ))),
    }
}

/// Carries commands out on this node's things.
#[derive(Clone)]
pub struct Commands {
    pub(crate) readings: Readings,
    pub(crate) broker: Option<Arc<Broker>>,
    pub(crate) upstream: Option<Arc<crate::mqtt::Upstream>>,
    pub(crate) lwm2m: Option<crate::lwm2m::Lwm2m>,
    pub(crate) http: reqwest::Client,
}

impl Commands {
    /// Run `plan` on `spec`, a thing this node manages.
    pub async fn run(&self, spec: &ThingSpec, plan: Plan) -> Result<CommandResult, CommandError> {
        let thing = spec.name.get().clone();
        let mut out = CommandResult {
            thing: thing.clone(),
            resource: plan.resource.clone(),
            protocol: spec.protocol,
            action: plan.action,
            value: plan
                .value
                .as_ref()
                .map_or(serde_json::Value::Null, value_json),
            time_ms: None,
            detail: String::new(),
            queued: false,
        };
        match spec.protocol {
            ThingProtocol::Mqtt => self.run_mqtt(&thing, &plan, &mut out).await?,
            ThingProtocol::Lwm2m => self.run_lwm2m(spec, &plan, &mut out).await?,
            ThingProtocol::Http => self.run_http(spec, &plan, &mut out).await?,
        }
        Ok(out)
    }

    async fn run_mqtt(
        &self,
        thing: &str,
        plan: &Plan,
        out: &mut CommandResult,
    ) -> Result<(), CommandError> {
        if plan.action == Action::Read {
            let latest = self
                .readings
                .latest_of(thing, &plan.resource)
                .await
                .map_err(|e| CommandError::Unavailable(e.to_string()))?;
            let Some(r) = latest else {
                return Err(CommandError::Unavailable(format!(
                    "thing {thing:?} has sent no reading of {:?} yet",
                    plan.resource
                )));
            };
            out.value = value_json(r.reading.value());
            out.time_ms = Some(r.reading.time_ms());
            out.detail = format!("newest stored reading (seq {})", r.seq);
            return Ok(());
        }
        let payload = match (&plan.value, &plan.args) {
            (Some(v), _) => value_json(v).to_string().into_bytes(),
            (None, Some(a)) => a.clone().into_bytes(),
            (None, None) => Vec::new(),
        };
        if let Some(up) = &self.upstream {
            let topic = up
                .command(thing, &plan.resource, payload)
                .await
                .map_err(|e| CommandError::Unavailable(e.to_string()))?;
            out.detail = format!("PUBACK from the broker {} on {topic}", up.addr());
            return Ok(());
        }
        let Some(broker) = &self.broker else {
            return Err(CommandError::Unavailable(
                "the MQTT broker does not run on this node".into(),
            ));
        };
        match broker
            .command(thing, &plan.resource, payload)
            .await
            .map_err(|e| CommandError::Unavailable(e.to_string()))?
        {
            crate::mqtt::Delivery::Delivered { topic } => {
                out.detail = format!("delivered: PUBACK on {topic}");
            }
            crate::mqtt::Delivery::Queued { topic, waiting } => {
                out.queued = true;
                out.detail = format!(
                    "queued: {thing} is offline; {waiting} command(s) wait for its persistent session on {topic}"
                );
            }
        }
        Ok(())
    }

    async fn run_lwm2m(
        &self,
        spec: &ThingSpec,
        plan: &Plan,
        out: &mut CommandResult,
    ) -> Result<(), CommandError> {
        let Some(lwm2m) = &self.lwm2m else {
            return Err(CommandError::Unavailable(
                "the LwM2M server does not run on this node".into(),
            ));
        };
        let thing = spec.name.get();
        let path = spec
            .resource(&plan.resource)
            .and_then(|r| r.path.as_ref())
            .map(|p| p.get().clone())
            .unwrap_or_default();
        match plan.action {
            Action::Read => {
                let v = lwm2m
                    .read(thing, &path)
                    .await
                    .map_err(|e| CommandError::Failed(e.to_string()))?;
                out.value = value_json(&v);
                out.detail = format!("LwM2M Read /{path}");
            }
            Action::Write => {
                let v = plan
                    .value
                    .as_ref()
                    .ok_or_else(|| CommandError::NotAllowed("a write needs a value".into()))?;
                lwm2m
                    .write(thing, &path, v)
                    .await
                    .map_err(|e| CommandError::Failed(e.to_string()))?;
                out.detail = format!("LwM2M Write /{path}");
            }
            Action::Execute => {
                lwm2m
                    .execute(thing, &path, plan.args.as_deref())
                    .await
                    .map_err(|e| CommandError::Failed(e.to_string()))?;
                out.detail = format!("LwM2M Execute /{path}");
            }
        }
        Ok(())
    }

    async fn run_http(
        &self,
        spec: &ThingSpec,
        plan: &Plan,
        out: &mut CommandResult,
    ) -> Result<(), CommandError> {
        let Some(url) = &spec.url else {
            return Err(CommandError::Unavailable(format!(
                "http thing {:?} has no device service url",
                spec.name.get()
            )));
        };
        let url = format!(
            "{}/api/v3/device/name/{}/{}",
            url.get().trim_end_matches('/'),
            spec.name.get(),
            plan.resource
        );
        let req = match plan.action {
            Action::Read => self.http.get(&url),
            Action::Write | Action::Execute => {
                let text = match (&plan.value, &plan.args) {
                    (Some(v), _) => value_text(v),
                    (None, Some(a)) => a.clone(),
                    (None, None) => String::new(),
                };
                self.http
                    .put(&url)
                    .json(&serde_json::json!({ plan.resource.clone(): text }))
            }
        };
        let resp = req
            .timeout(HTTP_TIMEOUT)
            .send()
            .await
            .map_err(|e| CommandError::Unavailable(format!("{url}: {e}")))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| CommandError::Unavailable(format!("{url}: {e}")))?;
        let body = &body[..body.len().min(MAX_ANSWER)];
        if !status.is_success() {
            return Err(CommandError::Failed(format!(
                "{url} answered {status}: {}",
                String::from_utf8_lossy(body)
            )));
        }
        out.detail = format!(
            "{} {url} → {status}",
            if plan.action == Action::Read {
                "GET"
            } else {
                "PUT"
            }
        );
        if plan.action == Action::Read {
            // An EdgeX EventResponse: {"event": {"readings": [{"resourceName", "value", "origin"}]}}.
            let json: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
                CommandError::Failed(format!("{url} answered something that is not JSON: {e}"))
            })?;
            let reading = json["event"]["readings"]
                .as_array()
                .and_then(|rs| {
                    rs.iter()
                        .find(|r| r["resourceName"] == plan.resource.as_str())
                })
                .ok_or_else(|| {
                    CommandError::Failed(format!(
                        "{url} answered no reading of {:?}",
                        plan.resource
                    ))
                })?;
            out.value = reading["value"].clone();
            out.time_ms = reading["origin"].as_i64().map(|ns| ns / 1_000_000);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use locus_core::workload::SpecFormat;

    fn spec() -> ThingSpec {
        ThingSpec::parse(
            r#"
name = "pump"
protocol = "http"
[[resources]]
name = "flow"
[[resources]]
name = "speed"
type = "int"
access = "rw"
[[resources]]
name = "valve"
type = "bool"
access = "w"
[[resources]]
name = "reboot"
access = "x"
"#,
            SpecFormat::Toml,
        )
        .unwrap()
    }

    #[test]
    fn plans_follow_the_profile() {
        let s = spec();
        assert_eq!(plan(&s, "flow", None).unwrap().action, Action::Read);
        assert!(matches!(
            plan(&s, "flow", Some("3")),
            Err(CommandError::NotAllowed(_))
        ));
        let p = plan(&s, "speed", Some("42")).unwrap();
        assert_eq!(
            (p.action, p.value),
            (Action::Write, Some(Value::Number(42.0)))
        );
        assert!(matches!(
            plan(&s, "speed", Some("4.5")),
            Err(CommandError::BadValue { .. })
        ));
        assert_eq!(
            plan(&s, "valve", Some("on")).unwrap().value,
            Some(Value::Bool(true))
        );
        assert!(matches!(
            plan(&s, "valve", None),
            Err(CommandError::NotAllowed(_))
        ));
        let p = plan(&s, "reboot", Some("now")).unwrap();
        assert_eq!(
            (p.action, p.args.as_deref()),
            (Action::Execute, Some("now"))
        );
        assert!(matches!(
            plan(&s, "nope", None),
            Err(CommandError::NoResource { .. })
        ));
    }

    #[test]
    fn values_print_as_json_and_text() {
        assert_eq!(value_json(&Value::Number(3.0)), serde_json::json!(3));
        assert_eq!(value_json(&Value::Number(2.5)), serde_json::json!(2.5));
        assert_eq!(value_text(&Value::String("on".into())), "on");
        assert_eq!(value_text(&Value::Bool(true)), "true");
        assert!(parse_value(ValueType::Float, "NaN").is_err());
        assert!(parse_value(ValueType::Binary, "!!").is_err());
    }
}
