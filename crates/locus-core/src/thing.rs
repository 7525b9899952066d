//! Things: the IoT devices (sensors, actuators) that a node, or a workload
//! on a node, manages.
//!
//! A [`ThingSpec`] is what a user registers (TOML or JSON): its name, the
//! protocol it speaks (`mqtt`, `lwm2m`, `http`), its credentials, the
//! resources it exposes (an EdgeX-style device profile: name, value type,
//! unit, access) and who manages it. It is validated while it is read, and
//! [`ThingSpec::check`] adds the rules that span fields, so errors name the
//! field path (`resources[2].path`).
//!
//! A [`Thing`] is a registered spec plus where it stands: the node that
//! manages it (the owner of its record), the generation that counts manager
//! changes, and the argon2 hash of its MQTT password. The password itself
//! is never stored; a [`ThingView`] (what the API shows) carries neither
//! the hash nor the PSK key.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::NodeId;
use crate::config::{ConfigError, check_name, parse_json_object, parse_toml, validated};
use crate::workload::SpecFormat;

/// A tenant's name (see [`crate::config::Tenant`]).
pub use crate::config::Tenant;

/// Most resources in one thing's profile.
pub const MAX_RESOURCES: usize = 64;

validated!(
    /// Name of a thing: 1–63 letters, digits, `.`, `_` or `-`. It is the
    /// MQTT user name and topic level, and the EdgeX device name.
    #[derive(Eq, PartialOrd, Ord, Hash)]
    ThingName(String, "String"), schema = String,
    check = |v| check_name("thing name", v, 63),
    constrain = |o| o.pattern = Some("^[A-Za-z0-9._-]{1,63}$".into())
);

validated!(
    /// Name of a resource of a thing: 1–63 letters, digits, `.`, `_` or `-`.
    #[derive(Eq, PartialOrd, Ord, Hash)]
    ResourceName(String, "String"), schema = String,
    check = |v| check_name("resource name", v, 63),
    constrain = |o| o.pattern = Some("^[A-Za-z0-9._-]{1,63}$".into())
);

fn printable(what: &str, v: &str, min: usize, max: usize) -> Result<(), String> {
    let n = v.chars().count();
    if n < min || n > max {
        Err(format!(
            "{what} is {n} characters long; it must be {min} to {max}"
        ))
    } else if v.chars().any(char::is_control) {
        Err(format!("{what} contains a control character"))
    } else {
        Ok(())
    }
}

validated!(
    /// A unit (`Cel`, `%RH`, `W`): 1–32 characters, no control characters.
    Unit(String, "String"), schema = String,
    check = |v| printable("unit", v, 1, 32),
    constrain = |o| {
        o.max_length = Some(32);
        o.pattern = Some("^[^\\x00-\\x1f\\x7f-\\x9f]{1,32}$".into());
    }
);

validated!(
    /// An LwM2M resource path `object/instance/resource` (`3303/0/5700`).
    Lwm2mPath(String, "String"), schema = String,
    check = |v| {
        let parts: Vec<&str> = v.split('/').collect();
        let id = |p: &str| {
            let digits = p.trim_start_matches('0');
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && digits.len() <= 5 && digits.parse::<u32>().map_or(digits.is_empty(), |n| n <= 65_535)
        };
        let ok = parts.len() == 3 && parts.iter().all(|p| id(p));
        if ok { Ok(()) } else { Err(format!("LwM2M path {v:?} must be object/instance/resource, three numbers up to 65535 (3303/0/5700)")) }
    },
    constrain = |o| o.pattern = Some(format!("^{ID}/{ID}/{ID}$", ID = LWM2M_ID))
);

/// One id of an LwM2M path as a regular expression: 0 to 65535, leading
/// zeros allowed.
const LWM2M_ID: &str =
    "0*([0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])";

impl Lwm2mPath {
    /// The three ids.
    pub fn ids(&self) -> (u16, u16, u16) {
        let mut it = self.0.split('/').map(|p| {
            let digits = p.trim_start_matches('0');
            digits.parse::<u16>().unwrap_or(0)
        });
        (
            it.next().unwrap_or(0),
            it.next().unwrap_or(0),
            it.next().unwrap_or(0),
        )
    }
}

validated!(
    /// A thing's MQTT password: 8–128 characters, no control characters.
    Password(String, "String"), schema = String,
    check = |v| printable("password", v, 8, 128),
    constrain = |o| {
        o.min_length = Some(8);
        o.max_length = Some(128);
        o.pattern = Some("^[^\\x00-\\x1f\\x7f-\\x9f]{8,128}$".into());
    }
);

validated!(
    /// A PSK identity: 1–128 characters, no control characters.
    PskIdentity(String, "String"), schema = String,
    check = |v| printable("psk_identity", v, 1, 128),
    constrain = |o| {
        o.max_length = Some(128);
        o.pattern = Some("^[^\\x00-\\x1f\\x7f-\\x9f]{1,128}$".into());
    }
);

validated!(
    /// A pre-shared key in hex: 1 to 64 bytes.
    PskKey(String, "String"), schema = String,
    check = |v| {
        if v.is_empty() || v.len() > 128 || v.len() % 2 != 0 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
            Err("psk_key must be 1 to 64 bytes written as an even number of hex digits".to_owned())
        } else {
            Ok(())
        }
    },
    constrain = |o| o.pattern = Some("^([0-9a-fA-F]{2}){1,64}$".into())
);

impl PskKey {
    /// The key's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        (0..self.0.len())
            .step_by(2)
            .filter_map(|i| u8::from_str_radix(&self.0[i..i + 2], 16).ok())
            .collect()
    }
}

validated!(
    /// An LwM2M client endpoint name: 1–128 characters, no spaces or
    /// control characters.
    Endpoint(String, "String"), schema = String,
    check = |v| {
        printable("endpoint", v, 1, 128)?;
        if v.chars().any(char::is_whitespace) { Err(format!("endpoint {v:?} contains a space")) } else { Ok(()) }
    },
    constrain = |o| o.pattern = Some("^[^\\s\\x00-\\x1f\\x7f-\\x9f]{1,128}$".into())
);

validated!(
    /// The base URL of an HTTP thing's device service (`http://host:port`),
    /// which answers EdgeX's `GET|PUT /api/v3/device/name/{name}/{command}`.
    DeviceUrl(String, "String"), schema = String,
    check = |v| {
        printable("url", v, 8, 512)?;
        if !(v.starts_with("http://") || v.starts_with("https://")) || v.chars().any(char::is_whitespace) {
            Err(format!("url {v:?} must be an http:// or https:// URL without spaces"))
        } else {
            Ok(())
        }
    },
    constrain = |o| o.pattern = Some("^https?://[^\\s\\x00-\\x1f\\x7f-\\x9f]{1,504}$".into())
);

/// The protocol a thing speaks.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ThingProtocol {
    /// Publishes readings to the node's MQTT broker; receives commands on
    /// `things/{thing}/commands/{resource}`.
    Mqtt,
    /// An LwM2M client: bootstrapped by the node, registers with its LwM2M
    /// server, observed for readings, written and executed for commands.
    Lwm2m,
    /// Posts EdgeX events over HTTP; commands go to its device service.
    Http,
}

impl ThingProtocol {
    /// The protocol's name as written in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            ThingProtocol::Mqtt => "mqtt",
            ThingProtocol::Lwm2m => "lwm2m",
            ThingProtocol::Http => "http",
        }
    }
}

/// The type of a resource's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    #[default]
    Float,
    Int,
    Bool,
    String,
    Binary,
}

/// What may be done with a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Read (and observe) only.
    #[default]
    R,
    /// Write only.
    W,
    /// Read and write.
    Rw,
    /// Execute (an LwM2M executable resource, an actuator trigger).
    X,
}

impl Access {
    pub fn readable(self) -> bool {
        matches!(self, Access::R | Access::Rw)
    }
    pub fn writable(self) -> bool {
        matches!(self, Access::W | Access::Rw)
    }
    pub fn executable(self) -> bool {
        self == Access::X
    }
}

/// One resource of a thing's profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceSpec {
    /// The resource's name; a reading's `resource`.
    pub name: ResourceName,
    /// `float` (default), `int`, `bool`, `string` or `binary`.
    #[serde(default, rename = "type")]
    pub value_type: ValueType,
    /// Unit of its readings.
    #[serde(default)]
    pub unit: Option<Unit>,
    /// `r` (default), `w`, `rw` or `x`.
    #[serde(default)]
    pub access: Access,
    /// For LwM2M things: the resource's path (`3303/0/5700`).
    #[serde(default)]
    pub path: Option<Lwm2mPath>,
    /// For LwM2M things: observe a readable resource after registration
    /// (default true).
    #[serde(default = "yes")]
    pub observe: bool,
}

fn yes() -> bool {
    true
}

/// How a thing proves who it is.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// MQTT password (the user name is the thing's name). Required for
    /// MQTT things; only its argon2 hash is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Password>,
    /// LwM2M PSK identity (with `psk_key`: the bootstrap writes security
    /// mode PSK; without: NoSec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psk_identity: Option<PskIdentity>,
    /// LwM2M pre-shared key, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psk_key: Option<PskKey>,
}

/// Who should manage a thing.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ManagerSpec {
    /// A node id, unique id prefix (4+ hex digits) or node name; default:
    /// the node that receives the call.
    #[serde(default)]
    #[schema(max_length = 64)]
    pub node: Option<String>,
    /// A workload on that node that manages the thing (its name or id).
    #[serde(default)]
    #[schema(max_length = 64)]
    pub workload: Option<String>,
}

/// What a user registers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ThingSpec {
    /// Unique in the cluster.
    pub name: ThingName,
    /// `mqtt`, `lwm2m` or `http`.
    pub protocol: ThingProtocol,
    /// The tenant that owns the thing (default `default`).
    #[serde(default)]
    pub tenant: Tenant,
    /// The device profile.
    #[serde(default)]
    #[schema(max_items = 64)]
    pub resources: Vec<ResourceSpec>,
    /// Password (MQTT) or PSK (LwM2M).
    #[serde(default)]
    pub credentials: Credentials,
    /// Who manages it.
    #[serde(default, deserialize_with = "crate::config::only_fields")]
    pub manager: ManagerSpec,
    /// LwM2M client endpoint name (default: the thing's name).
    #[serde(default)]
    pub endpoint: Option<Endpoint>,
    /// HTTP things: the device service that answers commands.
    #[serde(default)]
    pub url: Option<DeviceUrl>,
}

impl ThingSpec {
    /// Parse and validate a thing document; errors carry the field path,
    /// line and column.
    pub fn parse(src: &str, format: SpecFormat) -> Result<ThingSpec, ConfigError> {
        let spec = Self::parse_fields(src, format)?;
        spec.check()?;
        Ok(spec)
    }

    /// Parse a thing document and validate each field, but not the rules
    /// that span fields ([`ThingSpec::check`]).
    pub fn parse_fields(src: &str, format: SpecFormat) -> Result<ThingSpec, ConfigError> {
        match format {
            SpecFormat::Toml => parse_toml(src),
            SpecFormat::Json => parse_json_object(src, "a thing"),
        }
    }

    /// Rules that span fields.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.check_with(false)
    }

    /// [`ThingSpec::check`], where a stored password hash stands for the
    /// password.
    fn check_with(&self, hashed_password: bool) -> Result<(), ConfigError> {
        let err = |path: String, message: String| {
            Err(ConfigError {
                path,
                line: None,
                column: None,
                message,
            })
        };
        if self.resources.len() > MAX_RESOURCES {
            return err(
                "resources".into(),
                format!(
                    "{} resources; the limit is {MAX_RESOURCES}",
                    self.resources.len()
                ),
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut paths = std::collections::BTreeSet::new();
        for (i, r) in self.resources.iter().enumerate() {
            if !seen.insert(r.name.get()) {
                return err(
                    format!("resources[{i}].name"),
                    format!("resource {:?} is declared twice", r.name.get()),
                );
            }
            match (self.protocol, &r.path) {
                (ThingProtocol::Lwm2m, None) => {
                    return err(
                        format!("resources[{i}].path"),
                        "an lwm2m resource needs its object path (3303/0/5700)".into(),
                    );
                }
                (ThingProtocol::Lwm2m, Some(p)) if !paths.insert(p.get()) => {
                    return err(
                        format!("resources[{i}].path"),
                        format!("path {} is used twice", p.get()),
                    );
                }
                (ThingProtocol::Mqtt | ThingProtocol::Http, Some(_)) => {
                    return err(
                        format!("resources[{i}].path"),
                        format!(
                            "only lwm2m resources have an object path; this thing speaks {}",
                            self.protocol.as_str()
                        ),
                    );
                }
                _ => {}
            }
        }
        let c = &self.credentials;
        if self.protocol == ThingProtocol::Mqtt && c.password.is_none() && !hashed_password {
            return err(
                "credentials.password".into(),
                "an mqtt thing authenticates with its own password; set one (8 to 128 characters)"
                    .into(),
            );
        }
        if self.protocol != ThingProtocol::Lwm2m
            && (c.psk_identity.is_some() || c.psk_key.is_some())
        {
            return err(
                "credentials.psk_identity".into(),
                "a PSK is for lwm2m things".into(),
            );
        }
        if c.psk_identity.is_some() != c.psk_key.is_some() {
            return err(
                "credentials.psk_key".into(),
                "psk_identity and psk_key go together".into(),
            );
        }
        if self.protocol != ThingProtocol::Lwm2m && self.endpoint.is_some() {
            return err(
                "endpoint".into(),
                "an endpoint name is for lwm2m things".into(),
            );
        }
        if self.protocol != ThingProtocol::Http && self.url.is_some() {
            return err(
                "url".into(),
                "a device service URL is for http things".into(),
            );
        }
        Ok(())
    }

    /// The resource named `name`.
    pub fn resource(&self, name: &str) -> Option<&ResourceSpec> {
        self.resources.iter().find(|r| r.name.get() == name)
    }

    /// The LwM2M client endpoint name.
    pub fn endpoint(&self) -> &str {
        self.endpoint
            .as_ref()
            .map_or(self.name.get().as_str(), |e| e.get().as_str())
    }
}

/// A registered thing, as its manager stores and replicates it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Thing {
    /// The spec, without its password.
    pub spec: ThingSpec,
    /// argon2 PHC string of the MQTT password.
    #[schema(max_length = 256)]
    pub password_hash: Option<String>,
    /// The node that manages it (and owns its record).
    pub manager: NodeId,
    /// The workload on that node that manages it, if any.
    pub workload: Option<String>,
    /// Counts manager changes; a record with a higher generation wins.
    pub generation: u64,
    pub created_unix_ms: u64,
    pub updated_unix_ms: u64,
}

impl Thing {
    /// The rules of a stored thing: those of its spec, the password hash
    /// standing for the password.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.spec.check_with(self.password_hash.is_some())
    }

    /// What the API shows: no password hash, no PSK key.
    pub fn view(&self) -> ThingView {
        let c = &self.spec.credentials;
        ThingView {
            name: self.spec.name.get().clone(),
            protocol: self.spec.protocol,
            tenant: self.spec.tenant.get().clone(),
            resources: self.spec.resources.clone(),
            manager: self.manager.to_string(),
            workload: self.workload.clone(),
            generation: self.generation,
            endpoint: (self.spec.protocol == ThingProtocol::Lwm2m)
                .then(|| self.spec.endpoint().to_owned()),
            url: self.spec.url.as_ref().map(|u| u.get().clone()),
            password: self.password_hash.is_some(),
            psk_identity: c.psk_identity.as_ref().map(|p| p.get().clone()),
            created_unix_ms: self.created_unix_ms,
            updated_unix_ms: self.updated_unix_ms,
        }
    }
}

/// A thing as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ThingView {
    pub name: String,
    pub protocol: ThingProtocol,
    pub tenant: String,
    pub resources: Vec<ResourceSpec>,
    /// Id of the managing node.
    pub manager: String,
    /// The managing workload, if any.
    pub workload: Option<String>,
    /// Manager changes so far.
    pub generation: u64,
    /// LwM2M endpoint name.
    pub endpoint: Option<String>,
    /// HTTP device service.
    pub url: Option<String>,
    /// Whether an MQTT password is set.
    pub password: bool,
    /// LwM2M PSK identity (the key is never shown).
    pub psk_identity: Option<String>,
    pub created_unix_ms: u64,
    pub updated_unix_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<ThingSpec, ConfigError> {
        ThingSpec::parse(src, SpecFormat::Toml)
    }

    #[test]
    fn a_sensor_parses_with_defaults() {
        let t = parse(
            r#"
name = "greenhouse-1"
protocol = "mqtt"
credentials = { password = "s3cret-pass" }
[[resources]]
name = "temperature"
unit = "Cel"
"#,
        )
        .unwrap();
        assert_eq!(t.tenant.get(), "default");
        assert_eq!(t.resources[0].value_type, ValueType::Float);
        assert_eq!(t.resources[0].access, Access::R);
        assert!(t.manager.node.is_none());
    }

    #[test]
    fn a_manager_is_a_table_not_a_list() {
        let ok = ThingSpec::parse(
            r#"{"name": "a", "protocol": "http", "manager": {"node": "n1"}}"#,
            SpecFormat::Json,
        )
        .unwrap();
        assert_eq!(ok.manager.node.as_deref(), Some("n1"));
        let e = ThingSpec::parse(
            r#"{"name": "a", "protocol": "http", "manager": [null, null]}"#,
            SpecFormat::Json,
        )
        .unwrap_err();
        assert_eq!(e.path, "manager", "{e}");
        assert!(parse("name = \"a\"\nprotocol = \"http\"\n[manager]\nworkload = \"w\"\n").is_ok());
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse("name = \"a\"\nprotocol = \"mqtt\"\n").unwrap_err();
        assert_eq!(e.path, "credentials.password");
        let e = parse("name = \"a b\"\nprotocol = \"http\"\n").unwrap_err();
        assert_eq!(e.path, "name");
        assert_eq!(e.line, Some(1));
        let e = parse(
            "name = \"a\"\nprotocol = \"lwm2m\"\n[[resources]]\nname = \"t\"\npath = \"3303/0\"\n",
        )
        .unwrap_err();
        assert_eq!(e.path, "resources[0].path");
        let e =
            parse("name = \"a\"\nprotocol = \"lwm2m\"\n[[resources]]\nname = \"t\"\n").unwrap_err();
        assert_eq!(e.path, "resources[0].path");
        let e = parse(
            "name = \"a\"\nprotocol = \"http\"\n[[resources]]\nname = \"t\"\n[[resources]]\nname = \"t\"\n",
        )
        .unwrap_err();
        assert_eq!(e.path, "resources[1].name");
        let e = parse("name = \"a\"\nprotocol = \"lwm2m\"\ncredentials = { psk_key = \"0a\" }\n")
            .unwrap_err();
        assert_eq!(e.path, "credentials.psk_key");
        let e = parse("name = \"a\"\nprotocol = \"zigbee\"\n").unwrap_err();
        assert_eq!(e.path, "protocol");
        let e = ThingSpec::parse("[1]", SpecFormat::Json).unwrap_err();
        assert!(e.message.contains("JSON object"), "{e}");
    }

    #[test]
    fn views_hide_secrets() {
        let spec = parse(
            "name = \"a\"\nprotocol = \"lwm2m\"\ncredentials = { psk_identity = \"id\", psk_key = \"00ff\" }\n",
        )
        .unwrap();
        assert_eq!(
            spec.credentials.psk_key.as_ref().unwrap().bytes(),
            vec![0, 255]
        );
        let t = Thing {
            spec,
            password_hash: Some("$argon2id$...".into()),
            manager: NodeId::from_bytes([1; 10]),
            workload: None,
            generation: 1,
            created_unix_ms: 0,
            updated_unix_ms: 0,
        };
        let v = serde_json::to_string(&t.view()).unwrap();
        assert!(!v.contains("00ff") && !v.contains("argon2"), "{v}");
        assert_eq!(t.view().endpoint.as_deref(), Some("a"));
    }

    #[test]
    fn the_example_things_parse() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/things");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let format = SpecFormat::from_path(&path.display().to_string());
            ThingSpec::parse(&text, format).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
        assert!(n >= 3);
    }

    #[test]
    fn lwm2m_paths_split_into_ids() {
        let p = Lwm2mPath::try_from("3303/0/5700".to_owned()).unwrap();
        assert_eq!(p.ids(), (3303, 0, 5700));
        assert!(Lwm2mPath::try_from("70000/0/1".to_owned()).is_err());
        assert!(Lwm2mPath::try_from("1/2/3/4".to_owned()).is_err());
        assert!(Lwm2mPath::try_from("05594/80333/9".to_owned()).is_err());
        assert_eq!(
            Lwm2mPath::try_from("0003/00/65535".to_owned())
                .unwrap()
                .ids(),
            (3, 0, 65535)
        );
    }
}
