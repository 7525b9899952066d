//! `locus tenant set|ls|rm` and `locus user add|ls|rm`: the tenants of
//! the org (quota, grant, usage) and their users.

use anyhow::anyhow;
use serde_json::{Value, json};

use crate::Failure;
use crate::cli::{TenantCommand, TenantSetArgs, UserCommand};
use crate::client::Client;
use crate::output::bytes;

/// Bytes from `512MiB`, `4GiB`, `1TB`, `100k` or a plain number of bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| {
        format!("{text:?}: expected a number and an optional unit (k, M, G, T, KiB, MiB, GiB, TiB)")
    })?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "k" | "K" | "kB" | "KB" => 1_000,
        "M" | "MB" => 1_000_000,
        "G" | "GB" => 1_000_000_000,
        "T" | "TB" => 1_000_000_000_000,
        "Ki" | "KiB" => 1 << 10,
        "Mi" | "MiB" => 1 << 20,
        "Gi" | "GiB" => 1 << 30,
        "Ti" | "TiB" => 1 << 40,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (k, M, G, T, KiB, MiB, GiB, TiB)"
            ));
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Millicores from `2` (cores), `1.5` or `500m`.
pub fn parse_cpu(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if let Some(m) = t.strip_suffix('m') {
        return m
            .parse()
            .map_err(|_| format!("{text:?}: expected cores (2, 1.5) or millicores (500m)"));
    }
    let cores: f64 = t
        .parse()
        .map_err(|_| format!("{text:?}: expected cores (2, 1.5) or millicores (500m)"))?;
    if !(cores.is_finite() && (0.0..=1e6).contains(&cores)) {
        return Err(format!("{text:?}: out of range"));
    }
    Ok((cores * 1000.0).round() as u64)
}

/// `{"first", "last"}` from `8080` or `8000-8100`.
fn parse_ports(text: &str) -> Result<Value, String> {
    let bad = || format!("{text:?}: expected a port or first-last, 1 to 65535");
    let (a, b) = text.split_once('-').unwrap_or((text, text));
    let first: u16 = a.trim().parse().map_err(|_| bad())?;
    let last: u16 = b.trim().parse().map_err(|_| bad())?;
    if first == 0 || last < first {
        return Err(bad());
    }
    Ok(json!({"first": first, "last": last}))
}

fn usage(e: String, flag: &str) -> Failure {
    Failure::Usage(anyhow!("{flag}: {e}"))
}

fn set_body(a: &TenantSetArgs) -> Result<Value, Failure> {
    let mut quota = serde_json::Map::new();
    if let Some(c) = &a.cpu {
        quota.insert(
            "cpu_millis".into(),
            parse_cpu(c).map_err(|e| usage(e, "--cpu"))?.into(),
        );
    }
    if let Some(m) = &a.memory {
        quota.insert(
            "memory_bytes".into(),
            parse_size(m).map_err(|e| usage(e, "--memory"))?.into(),
        );
    }
    if let Some(s) = &a.storage {
        quota.insert(
            "storage_bytes".into(),
            parse_size(s).map_err(|e| usage(e, "--storage"))?.into(),
        );
    }
    if let Some(n) = a.things {
        quota.insert("things".into(), n.into());
    }
    if let Some(n) = a.workloads {
        quota.insert("workloads".into(), n.into());
    }
    let mut grant = serde_json::Map::new();
    if !a.kinds.is_empty() {
        grant.insert("kinds".into(), json!(a.kinds));
    }
    let ports = a
        .host_ports
        .iter()
        .map(|p| parse_ports(p).map_err(|e| usage(e, "--host-port")))
        .collect::<Result<Vec<_>, _>>()?;
    grant.insert("host_ports".into(), json!(ports));
    grant.insert("host_paths".into(), json!(a.host_paths));
    grant.insert("devices".into(), json!(a.devices));
    Ok(json!({"quota": quota, "grant": grant}))
}

/// A limit as shown: `-` for none.
fn limit(q: &Value, key: &str, show: impl Fn(u64) -> String) -> String {
    q[key].as_u64().map_or_else(|| "-".to_owned(), show)
}

fn print_tenant(t: &Value) {
    let q = &t["quota"];
    let u = &t["usage"];
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or_default();
    println!(
        "{:<20} {:>11} {:>21} {:>9} {:>13} {}",
        t["name"].as_str().unwrap_or("?"),
        format!(
            "{}/{}",
            n(u, "workloads"),
            limit(q, "workloads", |v| v.to_string())
        ),
        format!(
            "{}m/{}",
            n(u, "cpu_millis"),
            limit(q, "cpu_millis", |v| format!("{v}m"))
        ),
        format!(
            "{}/{}",
            n(u, "things"),
            limit(q, "things", |v| v.to_string())
        ),
        limit(q, "memory_bytes", bytes),
        t["grant"]["kinds"]
            .as_array()
            .map(|k| k
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(","))
            .unwrap_or_default()
    );
}

pub async fn tenant(client: &Client, json: bool, command: &TenantCommand) -> Result<(), Failure> {
    match command {
        TenantCommand::Set(args) => {
            let body = set_body(args)?;
            let t: Value = client
                .call_json(
                    reqwest::Method::PUT,
                    &format!("/api/v1/tenants/{}", args.name),
                    &body,
                )
                .await?;
            if json {
                println!("{t}");
            } else {
                let q = &t["quota"];
                println!(
                    "tenant {} set: workloads {}, cpu {}, memory {}, storage {}, things {} (- : no limit)",
                    args.name,
                    limit(q, "workloads", |v| v.to_string()),
                    limit(q, "cpu_millis", |v| format!("{v}m")),
                    limit(q, "memory_bytes", bytes),
                    limit(q, "storage_bytes", bytes),
                    limit(q, "things", |v| v.to_string()),
                );
            }
        }
        TenantCommand::Ls => {
            let all: Value = client.get("/api/v1/tenants").await?;
            if json {
                println!("{all}");
            } else {
                println!(
                    "{:<20} {:>11} {:>21} {:>9} {:>13} KINDS",
                    "TENANT", "WORKLOADS", "CPU", "THINGS", "MEMORY"
                );
                for t in all.as_array().into_iter().flatten() {
                    print_tenant(t);
                }
            }
        }
        TenantCommand::Rm { name } => {
            client
                .call::<()>(
                    reqwest::Method::DELETE,
                    &format!("/api/v1/tenants/{name}"),
                    None,
                )
                .await?;
            if json {
                println!("{}", json!({"removed": name}));
            } else {
                println!(
                    "tenant {name} removed (its workloads and things stay; it has no quota and the default grant again)"
                );
            }
        }
    }
    Ok(())
}

pub async fn user(client: &Client, json: bool, command: &UserCommand) -> Result<(), Failure> {
    match command {
        UserCommand::Add {
            name,
            role,
            tenant,
            ttl,
        } => {
            let ttl = crate::token_cli::parse_ttl(ttl.as_deref())?;
            let body = json!({"user": name, "role": role, "tenant": tenant, "ttl_secs": ttl});
            let made: Value = client
                .call_json(reqwest::Method::POST, "/api/v1/users", &body)
                .await?;
            if json {
                println!("{made}");
            } else {
                eprintln!(
                    "user {} added to tenant {} as {}; its token (a secret, shown once):",
                    name,
                    made["tenant"].as_str().unwrap_or("?"),
                    made["role"].as_str().unwrap_or("?")
                );
                println!("{}", made["token"].as_str().unwrap_or_default());
            }
        }
        UserCommand::Ls { tenant } => {
            let path = match tenant {
                Some(t) => format!("/api/v1/users?tenant={t}"),
                None => "/api/v1/users".to_owned(),
            };
            let all: Value = client.get(&path).await?;
            if json {
                println!("{all}");
            } else {
                println!("{:<24} {:<20} ROLE", "USER", "TENANT");
                for u in all.as_array().into_iter().flatten() {
                    println!(
                        "{:<24} {:<20} {}",
                        u["name"].as_str().unwrap_or("?"),
                        u["tenant"].as_str().unwrap_or("?"),
                        u["role"].as_str().unwrap_or("?")
                    );
                }
            }
        }
        UserCommand::Rm { name, tenant } => {
            client
                .call::<()>(
                    reqwest::Method::DELETE,
                    &format!("/api/v1/users/{tenant}/{name}"),
                    None,
                )
                .await?;
            if json {
                println!("{}", json!({"removed": name, "tenant": tenant}));
            } else {
                println!("user {name} of tenant {tenant} removed; every token of it is revoked");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_cpus_parse_with_units_and_name_the_bad_input() {
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("512M"), Ok(512_000_000));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("4 parsecs").unwrap_err().contains("parsecs"));
        assert!(parse_size("GiB").is_err());
        assert!(
            parse_size("99999999999TiB")
                .unwrap_err()
                .contains("too large")
        );
        assert_eq!(parse_cpu("2"), Ok(2000));
        assert_eq!(parse_cpu("1.5"), Ok(1500));
        assert_eq!(parse_cpu("250m"), Ok(250));
        assert!(parse_cpu("two").is_err());
        assert!(parse_cpu("-1").is_err());
        assert_eq!(
            parse_ports("8000-8100"),
            Ok(json!({"first": 8000, "last": 8100}))
        );
        assert_eq!(parse_ports("22"), Ok(json!({"first": 22, "last": 22})));
        for bad in ["9-1", "0", "x", "70000"] {
            assert!(parse_ports(bad).is_err(), "{bad}");
        }
    }
}
