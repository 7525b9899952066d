//! `locus thing add | ls | inspect | rm | attach | cmd`: the thing
//! commands, as calls to a node's API.

use anyhow::{Context, anyhow};
use locus_core::thing::{ThingSpec, ThingView};
use locus_core::workload::SpecFormat;
use locus_things::CommandResult;
use reqwest::Method;

use crate::cli::{ThingAddArgs, ThingCommand};
use crate::client::Client;
use crate::{Failure, output, print, url_escape};

pub async fn run(client: &Client, json: bool, command: &ThingCommand) -> Result<(), Failure> {
    match command {
        ThingCommand::Add(args) => add(client, json, args).await,
        ThingCommand::Ls { protocol, node } => {
            let mut query = Vec::new();
            if let Some(p) = protocol {
                query.push(format!("protocol={}", url_escape(p)));
            }
            if let Some(n) = node {
                query.push(format!("node={}", url_escape(n)));
            }
            let path = if query.is_empty() {
                "/api/v1/things".to_owned()
            } else {
                format!("/api/v1/things?{}", query.join("&"))
            };
            let list: Vec<ThingView> = client.get(&path).await?;
            print(json, &list, |list| {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|t| {
                        vec![
                            t.name.clone(),
                            t.protocol.as_str().to_owned(),
                            t.tenant.clone(),
                            t.manager.clone(),
                            t.workload.clone().unwrap_or_else(|| "-".into()),
                            t.resources.len().to_string(),
                            t.generation.to_string(),
                        ]
                    })
                    .collect();
                output::table(
                    &[
                        "NAME",
                        "PROTOCOL",
                        "TENANT",
                        "MANAGER",
                        "WORKLOAD",
                        "RESOURCES",
                        "GEN",
                    ],
                    &rows,
                )
            })?;
            Ok(())
        }
        ThingCommand::Inspect { thing } => {
            let t: ThingView = client
                .get(&format!("/api/v1/things/{}", url_escape(thing)))
                .await?;
            print(json, &t, render)?;
            Ok(())
        }
        ThingCommand::Rm { thing } => {
            let t: ThingView = client
                .call(
                    Method::DELETE,
                    &format!("/api/v1/things/{}", url_escape(thing)),
                    None,
                )
                .await?;
            print(json, &t, |t| format!("removed {}\n", t.name))?;
            Ok(())
        }
        ThingCommand::Attach {
            thing,
            node,
            workload,
        } => {
            let body = serde_json::json!({ "node": node, "workload": workload });
            let t: ThingView = client
                .call(
                    Method::POST,
                    &format!("/api/v1/things/{}/attach", url_escape(thing)),
                    Some(("application/json", body.to_string().into_bytes())),
                )
                .await?;
            print(json, &t, |t| {
                format!(
                    "{} is managed by node {}{} (generation {})\n",
                    t.name,
                    t.manager,
                    t.workload
                        .as_ref()
                        .map_or(String::new(), |w| format!(", workload {w}")),
                    t.generation
                )
            })?;
            Ok(())
        }
        ThingCommand::Cmd {
            thing,
            resource,
            value,
        } => {
            let body = serde_json::json!({ "resource": resource, "value": value });
            let r: CommandResult = client
                .call(
                    Method::POST,
                    &format!("/api/v1/things/{}/commands", url_escape(thing)),
                    Some(("application/json", body.to_string().into_bytes())),
                )
                .await?;
            print(json, &r, |r| {
                let action = format!("{:?}", r.action).to_lowercase();
                let value = match &r.value {
                    serde_json::Value::Null => String::new(),
                    v => format!(" = {v}"),
                };
                format!("{action} {}/{}{value}: {}\n", r.thing, r.resource, r.detail)
            })?;
            Ok(())
        }
    }
}

async fn add(client: &Client, json: bool, args: &ThingAddArgs) -> Result<(), Failure> {
    let path = args.file.display().to_string();
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {path}"))
        .map_err(Failure::Usage)?;
    // Check locally first: the error then points into the user's file.
    let mut spec = ThingSpec::parse(&text, SpecFormat::from_path(&path))
        .map_err(|e| Failure::Usage(anyhow!("{path}: {e}")))?;
    if args.node.is_some() {
        spec.manager.node = args.node.clone();
    }
    if args.workload.is_some() {
        spec.manager.workload = args.workload.clone();
    }
    let body = serde_json::to_vec(&spec).map_err(anyhow::Error::from)?;
    let t: ThingView = client
        .call(
            Method::POST,
            "/api/v1/things",
            Some(("application/json", body)),
        )
        .await?;
    print(json, &t, |t| {
        format!(
            "{} ({}) registered, managed by node {}\n",
            t.name,
            t.protocol.as_str(),
            t.manager
        )
    })?;
    Ok(())
}

fn render(t: &ThingView) -> String {
    let mut out = output::pairs(&[
        ("name", t.name.clone()),
        ("protocol", t.protocol.as_str().to_owned()),
        ("tenant", t.tenant.clone()),
        ("manager", t.manager.clone()),
        ("workload", t.workload.clone().unwrap_or_else(|| "-".into())),
        ("generation", t.generation.to_string()),
        (
            "credentials",
            match (t.password, &t.psk_identity) {
                (true, _) => "password".into(),
                (false, Some(id)) => format!("PSK identity {id}"),
                (false, None) => "none".into(),
            },
        ),
        ("endpoint", t.endpoint.clone().unwrap_or_else(|| "-".into())),
        ("url", t.url.clone().unwrap_or_else(|| "-".into())),
    ]);
    out.push_str("\nresources:\n");
    let rows: Vec<Vec<String>> = t
        .resources
        .iter()
        .map(|r| {
            vec![
                r.name.get().clone(),
                format!("{:?}", r.value_type).to_lowercase(),
                r.unit.as_ref().map_or("-".into(), |u| u.get().clone()),
                format!("{:?}", r.access).to_lowercase(),
                r.path.as_ref().map_or("-".into(), |p| p.get().clone()),
            ]
        })
        .collect();
    out.push_str(&output::table(
        &["RESOURCE", "TYPE", "UNIT", "ACCESS", "PATH"],
        &rows,
    ));
    out
}
