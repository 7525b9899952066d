//! Which token the CLI calls a node with, and the commands that manage
//! tokens and the org on a node: `login`, `logout`, `whoami`,
//! `token create|revoke`, `org ls|join-token`.
//!
//! The token is found, in order: `--credential FILE`, `LOCUS_TOKEN`, the
//! login file's entry for the API (`locus login`), the local admin token
//! `admin.token` in the data dir of an agent on this machine
//! (`LOCUS_DATA_DIR`, default `.locus`), as K3s's kubeconfig is found.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use serde_json::{Value, json};

use crate::Failure;
use crate::cli::{AuditArgs, JoinTokenArgs, OrgCommand, TokenCreateArgs, TokenRevokeArgs};
use crate::client::Client;

/// The login file: `LOCUS_LOGIN_FILE`, else `$XDG_CONFIG_HOME/locus/login.json`,
/// else `~/.config/locus/login.json`.
pub fn login_file() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LOCUS_LOGIN_FILE") {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("locus").join("login.json"))
}

fn read_logins(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

fn write_logins(path: &Path, logins: &BTreeMap<String, String>) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(serde_json::to_string_pretty(logins)?.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn normalize(api: &str) -> String {
    api.trim_end_matches('/').to_owned()
}

/// The token to call `api` with, if any is found.
pub fn discover(api: &str, credential: Option<&Path>) -> anyhow::Result<Option<String>> {
    if let Some(path) = credential {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the credential {}", path.display()))?;
        return Ok(Some(text.trim().to_owned()));
    }
    if let Ok(token) = std::env::var("LOCUS_TOKEN")
        && !token.trim().is_empty()
    {
        return Ok(Some(token.trim().to_owned()));
    }
    if let Some(file) = login_file()
        && let Some(token) = read_logins(&file).get(&normalize(api))
    {
        return Ok(Some(token.clone()));
    }
    let data_dir = std::env::var_os("LOCUS_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".locus"));
    Ok(
        std::fs::read_to_string(data_dir.join(locus_trust::credentials::ADMIN_TOKEN_FILE))
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty()),
    )
}

/// `locus login`: check the token with the node, then save it.
pub async fn login(api: &str, pin: Option<&str>, token: String, json: bool) -> Result<(), Failure> {
    let client = Client::new(api, pin, Some(token.clone())).map_err(Failure::Usage)?;
    let me: Value = client.get("/api/v1/whoami").await?;
    let file = login_file().ok_or_else(|| {
        Failure::Usage(anyhow!(
            "no place for the login file: set LOCUS_LOGIN_FILE or HOME"
        ))
    })?;
    let mut logins = read_logins(&file);
    logins.insert(normalize(api), token);
    write_logins(&file, &logins)?;
    if json {
        println!("{me}");
    } else {
        println!(
            "logged in to {api} as {} ({} of tenant {} of org {})",
            me["user"].as_str().unwrap_or("?"),
            me["role"].as_str().unwrap_or("?"),
            me["tenant"].as_str().unwrap_or("?"),
            me["org"].as_str().unwrap_or("?"),
        );
    }
    Ok(())
}

/// `locus logout`: forget the token saved for `api`.
pub fn logout(api: &str) -> Result<(), Failure> {
    let Some(file) = login_file() else {
        return Ok(());
    };
    let mut logins = read_logins(&file);
    if logins.remove(&normalize(api)).is_some() {
        write_logins(&file, &logins)?;
        println!("logged out of {api}");
    } else {
        println!("no login saved for {api}");
    }
    Ok(())
}

/// `locus whoami`.
pub async fn whoami(client: &Client, json: bool) -> Result<(), Failure> {
    let me: Value = client.get("/api/v1/whoami").await?;
    if json {
        println!("{me}");
    } else {
        println!(
            "user {} · role {} · tenant {} · org {} · token issued by node {}",
            me["user"].as_str().unwrap_or("?"),
            me["role"].as_str().unwrap_or("?"),
            me["tenant"].as_str().unwrap_or("?"),
            me["org"].as_str().unwrap_or("?"),
            me["issuer"].as_str().unwrap_or("?"),
        );
    }
    Ok(())
}

async fn post(client: &Client, path: &str, body: Value) -> anyhow::Result<Value> {
    client.call_json(reqwest::Method::POST, path, &body).await
}

/// `locus token create`: prints the token (or all of it with --json).
pub async fn token_create(
    client: &Client,
    json: bool,
    args: &TokenCreateArgs,
) -> Result<(), Failure> {
    let ttl = crate::token_cli::parse_ttl(args.ttl.as_deref())?;
    let minted = post(
        client,
        "/api/v1/tokens",
        json!({"user": args.user, "role": args.role, "tenant": args.tenant, "ttl_secs": ttl}),
    )
    .await?;
    if json {
        println!("{minted}");
    } else {
        println!("{}", minted["token"].as_str().unwrap_or_default());
    }
    Ok(())
}

/// `locus token revoke`.
pub async fn token_revoke(
    client: &Client,
    json: bool,
    args: &TokenRevokeArgs,
) -> Result<(), Failure> {
    let body = match (&args.token, &args.user, &args.node) {
        (Some(t), _, _) => json!({ "token": t }),
        (_, Some(u), _) => json!({ "user": u, "tenant": args.tenant }),
        (_, _, Some(n)) => json!({ "node": n }),
        _ => return Err(Failure::Usage(anyhow!("name --token, --user or --node"))),
    };
    let revoked = post(client, "/api/v1/revocations", body).await?;
    if json {
        println!("{revoked}");
    } else {
        println!(
            "revoked ({}); every node refuses it once the revocation spreads",
            revoked["kind"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

/// `locus org ls|join-token`.
pub async fn org(client: &Client, json: bool, command: &OrgCommand) -> Result<(), Failure> {
    match command {
        OrgCommand::Ls => {
            let orgs: Value = client.get("/api/v1/orgs").await?;
            if json {
                println!("{orgs}");
            } else {
                println!(
                    "{:<4} {:<20} {:<24} {:<20} KEY",
                    "SEQ", "ORG", "NAME", "ADMITTED BY"
                );
                for o in orgs.as_array().into_iter().flatten() {
                    println!(
                        "{:<4} {:<20} {:<24} {:<20} {}",
                        o["seq"].as_u64().unwrap_or_default(),
                        o["org"].as_str().unwrap_or("?"),
                        o["name"].as_str().unwrap_or("?"),
                        o["by"].as_str().unwrap_or("?"),
                        o["key"].as_str().unwrap_or("?")
                    );
                }
            }
        }
        OrgCommand::Admit { key, name } => {
            let e = post(client, "/api/v1/orgs", json!({"key": key, "name": name})).await?;
            if json {
                println!("{e}");
            } else {
                println!(
                    "admitted org {} as {:?} (seq {})",
                    e["org"].as_str().unwrap_or("?"),
                    e["name"].as_str().unwrap_or("?"),
                    e["seq"]
                );
            }
        }
        OrgCommand::Grant {
            org,
            tenant,
            node,
            ttl,
        } => {
            let ttl = crate::token_cli::parse_ttl(ttl.as_deref())?;
            let g = post(
                client,
                "/api/v1/grants",
                json!({"org": org, "tenant": tenant, "node": node, "ttl_secs": ttl}),
            )
            .await?;
            if json {
                println!("{g}");
            } else {
                println!(
                    "granted tenant {} of org {} the use of {}",
                    tenant,
                    org,
                    node.as_deref().unwrap_or("every node of the org")
                );
            }
        }
        OrgCommand::Grants => {
            let g: Value = client.get("/api/v1/grants").await?;
            if json {
                println!("{g}");
            } else {
                for t in g.as_array().into_iter().flatten() {
                    println!(
                        "{} of org {}",
                        t["tenant"].as_str().unwrap_or("?"),
                        t["org"].as_str().unwrap_or("?")
                    );
                }
            }
        }
        OrgCommand::JoinToken(JoinTokenArgs { uses, ttl }) => {
            let ttl = crate::token_cli::parse_duration(ttl)
                .map_err(|e| Failure::Usage(anyhow!("--ttl: {e}")))?;
            let made = post(
                client,
                "/api/v1/org/join-tokens",
                json!({"uses": uses, "ttl_secs": ttl}),
            )
            .await?;
            if json {
                println!("{made}");
            } else {
                println!("{}", made["token"].as_str().unwrap_or_default());
                eprintln!(
                    "on the new machine: locus agent --join <token>  (valid for {} machine(s) until unix time {}; keep it secret)",
                    made["uses"], made["expires_at"]
                );
            }
        }
    }
    Ok(())
}

/// `locus audit`.
pub async fn audit(client: &Client, json: bool, args: &AuditArgs) -> Result<(), Failure> {
    let from_ms = match &args.since {
        Some(d) => {
            let secs = crate::token_cli::parse_duration(d)
                .map_err(|e| Failure::Usage(anyhow!("--since: {e}")))?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            now - (secs as i64) * 1000
        }
        None => 0,
    };
    let entries: Value = client
        .get(&format!(
            "/api/v1/audit?from_ms={from_ms}&limit={}",
            args.limit
        ))
        .await?;
    if json {
        println!("{entries}");
        return Ok(());
    }
    println!(
        "{:<8} {:<22} {:<8} {:<6} {:<40} WHO",
        "SEQ", "OPERATION", "OUTCOME", "STATUS", "REQUEST"
    );
    for e in entries.as_array().into_iter().flatten() {
        println!(
            "{:<8} {:<22} {:<8} {:<6} {:<40} {}",
            e["seq"].as_u64().unwrap_or_default(),
            e["operation"].as_str().unwrap_or("?"),
            e["outcome"].as_str().unwrap_or("?"),
            e["status"].as_u64().unwrap_or_default(),
            e["request"].as_str().unwrap_or("?"),
            e["who"].as_str().unwrap_or("?"),
        );
    }
    Ok(())
}
