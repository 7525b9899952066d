//! The URI query parameters of the LwM2M interfaces that carry them:
//! Bootstrap-Request (`ep`, and `pct` in 1.1), Register (`ep`, `lt`, `lwm2m`, `b`, `sms`,
//! `Q`) and Update (`lt`, `b`, `sms`, `Q`), as CoAP Uri-Query options,
//! one `name=value` per option (LwM2M 1.0 TS §5.2.7, §5.3.1; 1.1 adds `Q`).
//!
//! Every error names the parameter and the value. A parameter given twice
//! is refused; a parameter this code does not know is ignored, as later
//! versions of the specification add some (`pct`, `cp`…).

use thiserror::Error;

use super::Binding;

/// Longest endpoint client name accepted, in bytes.
pub const MAX_ENDPOINT: usize = 256;
/// The registration lifetime when Register does not say (LwM2M: 86400 s).
pub const DEFAULT_LIFETIME_S: u32 = 86_400;
/// The LwM2M version when Register does not say (1.0 made it optional).
pub const DEFAULT_VERSION: &str = "1.0";
/// Most digits of an MSISDN (ITU-T E.164).
pub const MAX_MSISDN: usize = 15;

/// What is wrong with a query.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QueryError {
    #[error("query option {index} is not UTF-8")]
    NotUtf8 { index: usize },
    #[error("query parameter {param:?} is missing")]
    Missing { param: &'static str },
    #[error("query parameter {param:?} is given twice")]
    Duplicate { param: &'static str },
    #[error("query parameter {param}={value:?}: {why}")]
    Invalid {
        param: &'static str,
        value: String,
        why: &'static str,
    },
}

/// The parameters of a Register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterQuery {
    /// `ep`: the endpoint client name.
    pub endpoint: String,
    /// `lt`: seconds the registration lasts without an Update.
    pub lifetime_s: u32,
    /// `lwm2m`: the enabler version, `major.minor`.
    pub version: String,
    /// `b`: the transport binding (and queue mode, in 1.0).
    pub binding: Binding,
    /// `sms`: the MSISDN where the client can be reached by SMS.
    pub sms: Option<String>,
    /// `Q` (1.1): the client is in queue mode.
    pub queue_mode: bool,
}

/// The parameters of an Update; each is present only when it changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateQuery {
    pub lifetime_s: Option<u32>,
    pub binding: Option<Binding>,
    pub sms: Option<String>,
    pub queue_mode: bool,
}

/// One `name=value` (or bare `name`) query option.
struct Param<'a> {
    name: &'a str,
    value: Option<&'a str>,
}

fn split<'a, I>(options: I) -> Result<Vec<Param<'a>>, QueryError>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let mut out = Vec::new();
    for (index, raw) in options.into_iter().enumerate() {
        let s = std::str::from_utf8(raw).map_err(|_| QueryError::NotUtf8 { index })?;
        out.push(match s.split_once('=') {
            Some((name, value)) => Param {
                name,
                value: Some(value),
            },
            None => Param {
                name: s,
                value: None,
            },
        });
    }
    Ok(out)
}

/// The value of `param`, at most once.
fn single<'a>(
    params: &[Param<'a>],
    param: &'static str,
) -> Result<Option<Option<&'a str>>, QueryError> {
    let mut found = None;
    for p in params.iter().filter(|p| p.name == param) {
        if found.is_some() {
            return Err(QueryError::Duplicate { param });
        }
        found = Some(p.value);
    }
    Ok(found)
}

fn invalid(param: &'static str, value: &str, why: &'static str) -> QueryError {
    QueryError::Invalid {
        param,
        value: value.chars().take(64).collect(),
        why,
    }
}

/// The value of `param`, which must have one (`name=value`).
fn valued<'a>(params: &[Param<'a>], param: &'static str) -> Result<Option<&'a str>, QueryError> {
    match single(params, param)? {
        None => Ok(None),
        Some(Some(v)) => Ok(Some(v)),
        Some(None) => Err(invalid(param, "", "it needs a value (name=value)")),
    }
}

/// Whether the flag `param` is present; it takes no value.
fn flag(params: &[Param<'_>], param: &'static str) -> Result<bool, QueryError> {
    match single(params, param)? {
        None => Ok(false),
        Some(None) => Ok(true),
        Some(Some(v)) => Err(invalid(param, v, "it is a flag and takes no value")),
    }
}

/// Check an endpoint client name: 1 to [`MAX_ENDPOINT`] bytes, printable.
pub fn check_endpoint(value: &str) -> Result<(), QueryError> {
    if value.is_empty() {
        return Err(invalid("ep", value, "it is empty"));
    }
    if value.len() > MAX_ENDPOINT {
        return Err(invalid("ep", value, "it is longer than 256 bytes"));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid("ep", value, "it contains a control character"));
    }
    Ok(())
}

fn lifetime(value: &str) -> Result<u32, QueryError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            "lt",
            value,
            "it is not a decimal number of seconds",
        ));
    }
    match value.parse::<u32>() {
        Ok(0) => Err(invalid("lt", value, "a registration lasts at least 1 s")),
        Ok(v) => Ok(v),
        Err(_) => Err(invalid("lt", value, "it does not fit 32 bits")),
    }
}

fn binding(value: &str) -> Result<Binding, QueryError> {
    Binding::parse(value).ok_or_else(|| {
        invalid(
            "b",
            value,
            "it is not a binding of LwM2M 1.0 (U, UQ, S, SQ, US, UQS)",
        )
    })
}

fn sms(value: &str) -> Result<String, QueryError> {
    let digits = value.strip_prefix('+').unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("sms", value, "it is not an MSISDN (digits)"));
    }
    if digits.len() > MAX_MSISDN {
        return Err(invalid("sms", value, "an MSISDN has at most 15 digits"));
    }
    Ok(value.to_owned())
}

fn version(value: &str) -> Result<String, QueryError> {
    let ok = value.split_once('.').is_some_and(|(major, minor)| {
        major == "1"
            && !minor.is_empty()
            && minor.len() <= 3
            && minor.bytes().all(|b| b.is_ascii_digit())
    });
    if !ok {
        return Err(invalid(
            "lwm2m",
            value,
            "it is not a version 1.x of the enabler",
        ));
    }
    Ok(value.to_owned())
}

/// Read the Uri-Query options of a Register.
pub fn parse_register<'a, I>(options: I) -> Result<RegisterQuery, QueryError>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let params = split(options)?;
    let endpoint = valued(&params, "ep")?.ok_or(QueryError::Missing { param: "ep" })?;
    check_endpoint(endpoint)?;
    Ok(RegisterQuery {
        endpoint: endpoint.to_owned(),
        lifetime_s: valued(&params, "lt")?
            .map(lifetime)
            .transpose()?
            .unwrap_or(DEFAULT_LIFETIME_S),
        version: valued(&params, "lwm2m")?
            .map(version)
            .transpose()?
            .unwrap_or_else(|| DEFAULT_VERSION.to_owned()),
        binding: valued(&params, "b")?
            .map(binding)
            .transpose()?
            .unwrap_or_default(),
        sms: valued(&params, "sms")?.map(sms).transpose()?,
        queue_mode: flag(&params, "Q")?,
    })
}

/// Read the Uri-Query options of an Update.
pub fn parse_update<'a, I>(options: I) -> Result<UpdateQuery, QueryError>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let params = split(options)?;
    if single(&params, "ep")?.is_some() {
        return Err(invalid("ep", "", "an Update cannot change the endpoint"));
    }
    Ok(UpdateQuery {
        lifetime_s: valued(&params, "lt")?.map(lifetime).transpose()?,
        binding: valued(&params, "b")?.map(binding).transpose()?,
        sms: valued(&params, "sms")?.map(sms).transpose()?,
        queue_mode: flag(&params, "Q")?,
    })
}

/// The parameters of a Bootstrap-Request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapQuery {
    /// `ep`: the endpoint client name.
    pub endpoint: String,
    /// `pct` (LwM2M 1.1): the content format the client prefers.
    pub preferred_format: Option<u16>,
}

/// Read the Uri-Query options of a Bootstrap-Request.
pub fn parse_bootstrap<'a, I>(options: I) -> Result<BootstrapQuery, QueryError>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let params = split(options)?;
    let endpoint = valued(&params, "ep")?.ok_or(QueryError::Missing { param: "ep" })?;
    check_endpoint(endpoint)?;
    let preferred_format = valued(&params, "pct")?
        .map(|v| {
            v.parse::<u16>()
                .map_err(|_| invalid("pct", v, "it is not a content format number"))
        })
        .transpose()?;
    Ok(BootstrapQuery {
        endpoint: endpoint.to_owned(),
        preferred_format,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q(parts: &[&str]) -> Vec<Vec<u8>> {
        parts.iter().map(|p| p.as_bytes().to_vec()).collect()
    }

    fn reg(parts: &[&str]) -> Result<RegisterQuery, QueryError> {
        let o = q(parts);
        parse_register(o.iter().map(Vec::as_slice))
    }

    fn upd(parts: &[&str]) -> Result<UpdateQuery, QueryError> {
        let o = q(parts);
        parse_update(o.iter().map(Vec::as_slice))
    }

    #[test]
    fn register_with_every_parameter() {
        let r = reg(&[
            "ep=urn:dev:1",
            "lt=300",
            "lwm2m=1.1",
            "b=UQ",
            "sms=+3312345",
            "Q",
        ])
        .unwrap();
        assert_eq!(
            r,
            RegisterQuery {
                endpoint: "urn:dev:1".into(),
                lifetime_s: 300,
                version: "1.1".into(),
                binding: Binding::UQ,
                sms: Some("+3312345".into()),
                queue_mode: true,
            }
        );
    }

    #[test]
    fn register_defaults() {
        let r = reg(&["ep=x", "pct=11543"]).unwrap();
        assert_eq!(r.lifetime_s, DEFAULT_LIFETIME_S);
        assert_eq!(r.version, "1.0");
        assert_eq!(r.binding, Binding::U);
        assert_eq!(r.sms, None);
        assert!(!r.queue_mode);
    }

    #[test]
    fn register_errors_name_the_parameter_and_value() {
        assert_eq!(reg(&["lt=5"]), Err(QueryError::Missing { param: "ep" }));
        assert_eq!(
            reg(&["ep=a", "ep=b"]),
            Err(QueryError::Duplicate { param: "ep" })
        );
        let e = reg(&["ep=a", "lt=-4"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "query parameter lt=\"-4\": it is not a decimal number of seconds"
        );
        for (part, param) in [
            ("lt=0", "lt"),
            ("lt=99999999999", "lt"),
            ("lt=", "lt"),
            ("lt", "lt"),
            ("b=X", "b"),
            ("lwm2m=2.0", "lwm2m"),
            ("lwm2m=1", "lwm2m"),
            ("sms=12ab", "sms"),
            ("sms=+1234567890123456", "sms"),
            ("Q=1", "Q"),
        ] {
            match reg(&["ep=a", part]) {
                Err(QueryError::Invalid { param: p, .. }) => assert_eq!(p, param, "{part}"),
                other => panic!("{part}: {other:?}"),
            }
        }
        assert!(matches!(
            reg(&["ep="]),
            Err(QueryError::Invalid { param: "ep", .. })
        ));
        assert!(matches!(
            reg(&["ep=a\u{7}b"]),
            Err(QueryError::Invalid { param: "ep", .. })
        ));
        let long = format!("ep={}", "e".repeat(MAX_ENDPOINT + 1));
        assert!(matches!(
            reg(&[long.as_str()]),
            Err(QueryError::Invalid { param: "ep", .. })
        ));
        assert_eq!(
            parse_register([&[0xff, b'='][..]]),
            Err(QueryError::NotUtf8 { index: 0 })
        );
    }

    #[test]
    fn update_parameters_are_optional() {
        assert_eq!(upd(&[]).unwrap(), UpdateQuery::default());
        let u = upd(&["lt=60", "b=U"]).unwrap();
        assert_eq!(u.lifetime_s, Some(60));
        assert_eq!(u.binding, Some(Binding::U));
        assert!(matches!(
            upd(&["ep=x"]),
            Err(QueryError::Invalid { param: "ep", .. })
        ));
        assert_eq!(
            upd(&["lt=1", "lt=2"]),
            Err(QueryError::Duplicate { param: "lt" })
        );
    }

    #[test]
    fn bootstrap_needs_an_endpoint() {
        let o = q(&["ep=dev-1"]);
        assert_eq!(
            parse_bootstrap(o.iter().map(Vec::as_slice))
                .unwrap()
                .endpoint,
            "dev-1"
        );
        let o = q(&["ep=dev-1", "pct=112"]);
        assert_eq!(
            parse_bootstrap(o.iter().map(Vec::as_slice))
                .unwrap()
                .preferred_format,
            Some(112)
        );
        let o = q(&["ep=dev-1", "pct=senml"]);
        assert!(parse_bootstrap(o.iter().map(Vec::as_slice)).is_err());
        assert_eq!(
            parse_bootstrap(std::iter::empty()),
            Err(QueryError::Missing { param: "ep" })
        );
    }

    proptest! {
        #[test]
        fn arbitrary_options_never_panic(opts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..24), 0..8)) {
            let r = parse_register(opts.iter().map(Vec::as_slice));
            let _ = parse_update(opts.iter().map(Vec::as_slice));
            let _ = parse_bootstrap(opts.iter().map(Vec::as_slice));
            if let Err(e) = r {
                prop_assert!(!e.to_string().is_empty());
            }
        }

        #[test]
        fn textual_options_never_panic(opts in proptest::collection::vec("(ep|lt|b|lwm2m|sms|Q|x)(=[-+.0-9A-Za-z]{0,12})?", 0..8)) {
            let o: Vec<Vec<u8>> = opts.iter().map(|s| s.as_bytes().to_vec()).collect();
            match parse_register(o.iter().map(Vec::as_slice)) {
                Ok(r) => {
                    prop_assert!(!r.endpoint.is_empty());
                    prop_assert!(r.lifetime_s > 0);
                }
                Err(QueryError::Invalid { param, .. }) | Err(QueryError::Duplicate { param }) | Err(QueryError::Missing { param }) => {
                    prop_assert!(["ep", "lt", "b", "lwm2m", "sms", "Q"].contains(&param));
                }
                Err(e) => prop_assert!(false, "{e}"),
            }
        }

        #[test]
        fn register_round_trips(ep in "[a-z0-9:-]{1,40}", lt in 1u32.., minor in 0u8..4, b in 0usize..6) {
            let binding = [Binding::U, Binding::UQ, Binding::S, Binding::SQ, Binding::US, Binding::UQS][b];
            let parts = [format!("ep={ep}"), format!("lt={lt}"), format!("lwm2m=1.{minor}"), format!("b={}", binding.as_str())];
            let o: Vec<Vec<u8>> = parts.iter().map(|s| s.as_bytes().to_vec()).collect();
            let r = parse_register(o.iter().map(Vec::as_slice)).unwrap();
            prop_assert_eq!(r.endpoint, ep);
            prop_assert_eq!(r.lifetime_s, lt);
            prop_assert_eq!(r.version, format!("1.{minor}"));
            prop_assert_eq!(r.binding, binding);
        }
    }
}
