//! `locus token attenuate|inspect`: user tokens, offline. Attenuation
//! needs no key of the issuer and no node; inspection reads what a token
//! says without checking its signatures.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, anyhow};
use locus_access::token::{MAX_TOKEN_CHARS, MintError};
use locus_access::{Narrowing, Operation, TenantName, TenantRef};
use locus_core::NodeId;
use serde_json::json;

use crate::Failure;
use crate::cli::{TokenAttenuateArgs, TokenCommand, TokenInput};
use crate::output;

/// What `inspect` says before anything else: nothing was verified.
const NOT_VERIFIED: &str = "not verified: inspect shows what the token says";

pub fn run(json: bool, command: &TokenCommand) -> Result<(), Failure> {
    match command {
        TokenCommand::Attenuate(args) => attenuate(json, args),
        TokenCommand::Inspect(input) => inspect(json, input),
        TokenCommand::Create(_) | TokenCommand::Revoke(_) => Err(Failure::Usage(anyhow!(
            "token create and revoke call a node"
        ))),
    }
}

/// The token from `--token`, `--token-file` or stdin (`-`), trimmed.
pub fn read_token(input: &TokenInput) -> Result<String, Failure> {
    // Read a little past the longest token so that a longer one is refused
    // with its length, but never without bound.
    let bound = (MAX_TOKEN_CHARS as u64) * 4;
    let read_bounded = |r: &mut dyn Read, what: &str| -> Result<String, Failure> {
        let mut text = String::new();
        r.take(bound)
            .read_to_string(&mut text)
            .with_context(|| format!("cannot read the token from {what}"))
            .map_err(Failure::Usage)?;
        Ok(text)
    };
    let text = match (&input.token, &input.token_file) {
        (Some(t), _) if t != "-" => t.clone(),
        (Some(_), _) => read_bounded(&mut std::io::stdin().lock(), "stdin")?,
        (None, Some(p)) if p == Path::new("-") => {
            read_bounded(&mut std::io::stdin().lock(), "stdin")?
        }
        (None, Some(p)) => {
            let shown = p.display().to_string();
            let mut f = std::fs::File::open(p)
                .with_context(|| format!("cannot open {shown}"))
                .map_err(Failure::Usage)?;
            read_bounded(&mut f, &shown)?
        }
        (None, None) => {
            return Err(Failure::Usage(anyhow!(
                "give the token with --token TOKEN or --token-file PATH (`-`: stdin)"
            )));
        }
    };
    let token = text.trim();
    if token.is_empty() {
        return Err(Failure::Usage(anyhow!("the token is empty")));
    }
    Ok(token.to_owned())
}

/// A token error: the input's fault (exit 2) unless Biscuit itself failed.
fn token_failure(e: MintError) -> Failure {
    match e {
        MintError::Biscuit(_) => Failure::Failed(anyhow!("cannot narrow the token: {e}")),
        other => Failure::Usage(anyhow!("invalid token: {other}")),
    }
}

/// The seconds of an optional `--ttl`, or a usage error naming it.
pub fn parse_ttl(ttl: Option<&str>) -> Result<Option<u64>, crate::Failure> {
    ttl.map(parse_duration)
        .transpose()
        .map_err(|e| crate::Failure::Usage(anyhow::anyhow!("--ttl: {e}")))
}

/// Seconds in `text`: one or more `<number><unit>` with unit s, m, h or d
/// (`10m`, `1h30m`).
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "invalid duration {text:?}: expected a number and a unit (s, m, h, d), e.g. 10m or 1h"
        )
    };
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| format!("duration {text:?} is too long"))?;
    }
    if !digits.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(total)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn attenuate(json: bool, args: &TokenAttenuateArgs) -> Result<(), Failure> {
    let token = read_token(&args.input)?;
    let seen = locus_access::inspect(&token).map_err(token_failure)?;
    let usage = |e: String| Failure::Usage(anyhow!(e));
    let tenant = match &args.tenant {
        Some(name) => Some(TenantRef::new(
            seen.claims.tenant.org,
            TenantName::try_from(name.clone())
                .map_err(|e| usage(format!("invalid --tenant: {e}")))?,
        )),
        None => None,
    };
    let node = match &args.node {
        Some(id) => Some(
            id.parse::<NodeId>()
                .map_err(|e| usage(format!("invalid --node: {e}")))?,
        ),
        None => None,
    };
    let now = now_secs();
    let expires_at = match (&args.expires_in, args.expires_at) {
        (Some(d), _) => {
            let secs =
                parse_duration(d).map_err(|e| usage(format!("invalid --expires-in: {e}")))?;
            Some(
                now.checked_add(secs)
                    .ok_or_else(|| usage(format!("invalid --expires-in {d:?}: too long")))?,
            )
        }
        (None, at) => at,
    };
    let operation = match &args.operation {
        Some(name) => Some(Operation::from_name(name).ok_or_else(|| {
            usage(format!(
                "invalid --operation {name:?}: expected a dotted operation name such as workload.list"
            ))
        })?),
        None => None,
    };
    let narrowing = Narrowing {
        read_only: args.read_only,
        tenant,
        node,
        operation,
        expires_at,
    };
    if narrowing == Narrowing::default() {
        return Err(usage(
            "nothing to narrow: give --read-only, --tenant, --node, --operation, --expires-in or --expires-at"
                .into(),
        ));
    }
    if let Some(at) = expires_at {
        if at >= seen.effective_expires_at {
            eprintln!(
                "warning: the token already expires at {}, before {at}: the expiry changes nothing",
                seen.effective_expires_at
            );
        } else if at <= now {
            eprintln!("warning: {at} is in the past: the narrowed token is already expired");
        }
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow!("no randomness available: {e}"))?;
    let narrowed = locus_access::attenuate(&token, &narrowing, seed).map_err(token_failure)?;
    if json {
        let v = json!({
            "token": narrowed,
            "narrowing": {
                "read_only": narrowing.read_only,
                "tenant": narrowing.tenant.as_ref().map(ToString::to_string),
                "node": narrowing.node.as_ref().map(ToString::to_string),
                "expires_at": narrowing.expires_at,
            },
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(anyhow::Error::from)?
        );
    } else {
        println!("{narrowed}");
    }
    Ok(())
}

/// `in 59m 3s` or `expired 2m 1s ago`.
fn relative(at: u64, now: u64) -> String {
    if at > now {
        format!("in {}", output::duration(at - now))
    } else {
        format!("expired {} ago", output::duration(now - at))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn inspect(json: bool, input: &TokenInput) -> Result<(), Failure> {
    let token = read_token(input)?;
    let seen = locus_access::inspect(&token).map_err(token_failure)?;
    let c = &seen.claims;
    let now = now_secs();
    if json {
        let v = json!({
            "verified": false,
            "note": NOT_VERIFIED,
            "issuer": seen.issuer.to_string(),
            "user": c.user.get(),
            "org": c.tenant.org.to_string(),
            "tenant": c.tenant.name.get(),
            "role": c.role.as_str(),
            "expires_at": c.expires_at,
            "effective_expires_at": seen.effective_expires_at,
            "expired": seen.effective_expires_at <= now,
            "blocks": seen.blocks,
            "revocation_ids": seen.revocation_ids.iter().map(|r| hex(r)).collect::<Vec<_>>(),
            "bytes": token.len(),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(anyhow::Error::from)?
        );
        return Ok(());
    }
    let mut out = format!("{NOT_VERIFIED}\n");
    out.push_str(&output::pairs(&[
        ("issuer", seen.issuer.to_string()),
        ("user", c.user.get().to_owned()),
        ("org", c.tenant.org.to_string()),
        ("tenant", c.tenant.name.get().to_owned()),
        ("role", c.role.as_str().to_owned()),
        (
            "expires",
            format!("{} ({})", c.expires_at, relative(c.expires_at, now)),
        ),
        (
            "effective",
            format!(
                "{} ({})",
                seen.effective_expires_at,
                relative(seen.effective_expires_at, now)
            ),
        ),
        ("blocks", seen.blocks.len().to_string()),
        ("bytes", token.len().to_string()),
    ]));
    for (i, block) in seen.blocks.iter().enumerate() {
        let title = if i == 0 {
            "authority".to_owned()
        } else {
            format!("attenuation {i}")
        };
        out.push_str(&format!("\nblock {i} ({title}):\n"));
        for line in block.lines().filter(|l| !l.trim().is_empty()) {
            out.push_str(&format!("  {}\n", line.trim()));
        }
    }
    print!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("10m"), Ok(600));
        assert_eq!(parse_duration("1h"), Ok(3600));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("2d"), Ok(172_800));
        assert_eq!(parse_duration("45s"), Ok(45));
        for bad in ["", "10", "m", "10x", "-1h", "0m", "1.5h"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
        assert!(parse_duration("99999999999999999999d").is_err());
    }
}
