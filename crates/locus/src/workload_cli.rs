//! `locus run | ps | inspect | logs | start | stop | kill | update | rm`:
//! the workload commands, as calls to a node's API.

use anyhow::{Context, anyhow};
use locus_core::workload::{SpecFormat, Workload, WorkloadSpec};
use locus_workloads::{Submitted, WorkloadView};
use reqwest::Method;

use crate::cli::{LogsArgs, PsArgs, RmArgs, RunArgs, UpdateArgs};
use crate::client::Client;
use crate::{Failure, output, print, url_escape};

pub async fn run(client: &Client, json: bool, args: &RunArgs) -> Result<(), Failure> {
    let path = args.file.display().to_string();
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {path}"))
        .map_err(Failure::Usage)?;
    let format = SpecFormat::from_path(&path);
    // Check locally first: the error then points into the user's file.
    let spec =
        WorkloadSpec::parse(&text, format).map_err(|e| Failure::Usage(anyhow!("{path}: {e}")))?;
    let body = spec.to_json();
    let query = if args.dry_run { "?dry_run=true" } else { "" };
    let submitted: Submitted = client
        .call(
            Method::POST,
            &format!("/api/v1/workloads{query}"),
            Some(("application/json", body)),
        )
        .await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&submitted).map_err(anyhow::Error::from)?
        );
        return Ok(());
    }
    if args.explain || args.dry_run {
        let rows: Vec<Vec<String>> = submitted
            .placement
            .verdicts
            .iter()
            .map(|v| {
                vec![
                    v.name.clone(),
                    v.site.clone(),
                    if v.fits { "fits".into() } else { "no".into() },
                    format!("{:.3}", v.score),
                    v.terms
                        .as_ref()
                        .and_then(|t| t.rtt_ms)
                        .map_or("-".into(), |r| format!("{r:.1}")),
                    if v.reasons.is_empty() {
                        "-".into()
                    } else {
                        v.reasons.join("; ")
                    },
                ]
            })
            .collect();
        print!(
            "{}",
            output::table(
                &["NODE", "SITE", "VERDICT", "SCORE", "RTT_MS", "REASONS"],
                &rows
            )
        );
    }
    match (&submitted.workload, submitted.placement.chosen) {
        (None, Some(c)) => println!("would run on node {c}"),
        (None, None) => println!("no node fits: it would stay pending"),
        (Some(w), _) => println!(
            "{} {} {} on node {} ({})",
            w.id,
            w.spec.name.get(),
            w.state,
            w.owner,
            w.reason
        ),
    }
    Ok(())
}

pub async fn ps(client: &Client, json: bool, args: &PsArgs) -> Result<(), Failure> {
    let mut query = Vec::new();
    if let Some(n) = &args.node {
        query.push(format!("node={}", url_escape(n)));
    }
    if let Some(s) = &args.site {
        query.push(format!("site={}", url_escape(s)));
    }
    if let Some(s) = &args.state {
        query.push(format!("state={s}"));
    }
    let path = if query.is_empty() {
        "/api/v1/workloads".to_owned()
    } else {
        format!("/api/v1/workloads?{}", query.join("&"))
    };
    let list: Vec<WorkloadView> = client.get(&path).await?;
    print(json, &list, |list| {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|v| {
                let s = &v.summary;
                vec![
                    s.id.to_string(),
                    s.name.clone(),
                    s.kind.to_string(),
                    s.state.to_string(),
                    if v.node_name.is_empty() {
                        s.owner.to_string()
                    } else {
                        v.node_name.clone()
                    },
                    v.site.clone(),
                    s.epoch.to_string(),
                    s.restarts.to_string(),
                    s.reason.clone(),
                ]
            })
            .collect();
        output::table(
            &[
                "ID", "NAME", "KIND", "STATE", "NODE", "SITE", "EPOCH", "RESTARTS", "REASON",
            ],
            &rows,
        )
    })?;
    Ok(())
}

pub async fn inspect(client: &Client, json: bool, workload: &str) -> Result<(), Failure> {
    let w: Workload = client
        .get(&format!("/api/v1/workloads/{}", url_escape(workload)))
        .await?;
    print(json, &w, render)?;
    Ok(())
}

fn render(w: &Workload) -> String {
    let s = &w.spec;
    let mut out = output::pairs(&[
        ("id", w.id.to_string()),
        ("name", s.name.get().clone()),
        ("kind", s.kind.to_string()),
        ("source", s.source.get().clone()),
        ("state", format!("{} ({})", w.state, w.reason)),
        ("desired", format!("{:?}", w.desired).to_lowercase()),
        ("node", w.owner.to_string()),
        ("epoch", w.epoch.to_string()),
        (
            "resources",
            format!(
                "{}m cpu, {} MiB memory",
                s.resources.cpu_millicores.get(),
                s.resources.memory_mb.get()
            ),
        ),
        ("restart", format!("{:?}", s.restart).to_lowercase()),
        ("failover", format!("{:?}", s.failover).to_lowercase()),
        ("restarts", w.restarts.to_string()),
        (
            "exit code",
            w.exit_code.map_or("-".into(), |c| c.to_string()),
        ),
    ]);
    out.push_str("\nhistory:\n");
    for h in &w.history {
        out.push_str(&format!(
            "  {} {} → {}: {}\n",
            h.at_unix_ms, h.from, h.to, h.reason
        ));
    }
    out
}

pub async fn logs(client: &Client, args: &LogsArgs) -> Result<(), Failure> {
    let path = format!(
        "/api/v1/workloads/{}/logs?tail={}&follow={}",
        url_escape(&args.workload),
        args.tail,
        args.follow
    );
    if args.follow {
        client.stream_to_stdout(&path).await?;
    } else {
        let bytes = client.send(Method::GET, &path, None).await?;
        use std::io::Write;
        std::io::stdout()
            .write_all(&bytes)
            .map_err(anyhow::Error::from)?;
    }
    Ok(())
}

pub async fn verb(client: &Client, json: bool, workload: &str, verb: &str) -> Result<(), Failure> {
    let w: Workload = client
        .call(
            Method::POST,
            &format!("/api/v1/workloads/{}/{verb}", url_escape(workload)),
            None,
        )
        .await?;
    print(json, &w, |w| {
        format!("{} {} ({})\n", w.id, w.state, w.reason)
    })?;
    Ok(())
}

pub async fn update(client: &Client, json: bool, args: &UpdateArgs) -> Result<(), Failure> {
    let mut body = serde_json::Map::new();
    if args.cpu.is_some() || args.memory.is_some() {
        let current: Workload = client
            .get(&format!("/api/v1/workloads/{}", url_escape(&args.workload)))
            .await?;
        body.insert(
            "resources".into(),
            serde_json::json!({
                "cpu_millicores": args.cpu.unwrap_or(*current.spec.resources.cpu_millicores.get()),
                "memory_mb": args.memory.unwrap_or(*current.spec.resources.memory_mb.get()),
            }),
        );
    }
    if !args.env.is_empty() {
        let mut env = serde_json::Map::new();
        for kv in &args.env {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| Failure::Usage(anyhow!("--env {kv:?}: expected NAME=VALUE")))?;
            env.insert(k.to_owned(), v.into());
        }
        body.insert("env".into(), env.into());
    }
    if body.is_empty() {
        return Err(Failure::Usage(anyhow!(
            "nothing to update: give --cpu, --memory or --env"
        )));
    }
    let w: Workload = client
        .call(
            Method::PATCH,
            &format!("/api/v1/workloads/{}", url_escape(&args.workload)),
            Some((
                "application/json",
                serde_json::to_vec(&body).map_err(anyhow::Error::from)?,
            )),
        )
        .await?;
    print(json, &w, |w| format!("{} updated ({})\n", w.id, w.state))?;
    Ok(())
}

pub async fn rm(client: &Client, json: bool, args: &RmArgs) -> Result<(), Failure> {
    let q = if args.force { "?force=true" } else { "" };
    let () = client
        .call(
            Method::DELETE,
            &format!("/api/v1/workloads/{}{q}", url_escape(&args.workload)),
            None,
        )
        .await?;
    if json {
        println!("{}", serde_json::json!({ "removed": args.workload }));
    } else {
        println!("removed {}", args.workload);
    }
    Ok(())
}
