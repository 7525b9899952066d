//! `locus artifact put | get | fetch | ls | stat | pin | unpin | gc`: the
//! artifact commands, as calls to a node's API. Transfers stream (the CLI
//! never holds a whole artifact in memory) and show a progress bar on a
//! terminal.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, anyhow};
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use locus_artifacts::service::{
    ArtifactView, FetchEnd, FetchProgress, FetchReport, GcReport, PutReport,
};
use locus_core::ArtifactId;
use reqwest::Method;

use crate::cli::{ArtifactCommand, ArtifactGetArgs, ArtifactPutArgs};
use crate::client::Client;
use crate::{Failure, output, print, url_escape};

pub async fn run(client: &Client, json: bool, command: &ArtifactCommand) -> Result<(), Failure> {
    match command {
        ArtifactCommand::Put(args) => put(client, json, args).await,
        ArtifactCommand::Get(args) => get(client, json, args).await,
        ArtifactCommand::Fetch { cid } => {
            let id = parse(cid)?;
            let report = fetch(client, json, id).await?;
            print(json, &report, render_report).map_err(Failure::Failed)
        }
        ArtifactCommand::Ls => {
            let list: Vec<ArtifactView> = client.get("/api/v1/artifacts").await?;
            print(json, &list, |l| render_list(l)).map_err(Failure::Failed)
        }
        ArtifactCommand::Stat { cid } => {
            let id = parse(cid)?;
            let v: ArtifactView = client.get(&format!("/api/v1/artifacts/{id}")).await?;
            print(json, &v, render_view).map_err(Failure::Failed)
        }
        ArtifactCommand::Pin { cid } | ArtifactCommand::Unpin { cid } => {
            let id = parse(cid)?;
            let verb = if matches!(command, ArtifactCommand::Pin { .. }) {
                "pin"
            } else {
                "unpin"
            };
            let v: ArtifactView = client
                .call(
                    Method::POST,
                    &format!("/api/v1/artifacts/{id}/{verb}"),
                    None,
                )
                .await?;
            print(json, &v, render_view).map_err(Failure::Failed)
        }
        ArtifactCommand::Gc { all } => {
            let r: GcReport = client
                .call(
                    Method::POST,
                    &format!("/api/v1/artifacts/gc?all={all}"),
                    None,
                )
                .await?;
            print(json, &r, |r| {
                format!(
                    "removed {} artifact(s) and {} abandoned download(s), {} freed; the store uses {} of {}\n",
                    r.removed.len(),
                    r.discarded_partials.len(),
                    output::bytes(r.freed_bytes),
                    output::bytes(r.used_bytes),
                    output::bytes(r.budget_bytes)
                )
            })
            .map_err(Failure::Failed)
        }
    }
}

fn parse(cid: &str) -> Result<ArtifactId, Failure> {
    cid.parse()
        .map_err(|e: locus_core::artifact::ArtifactIdError| Failure::Usage(anyhow!("{e}")))
}

fn bar(json: bool, len: u64, what: &str) -> ProgressBar {
    if json {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

async fn put(client: &Client, json: bool, args: &ArtifactPutArgs) -> Result<(), Failure> {
    let shown = args.file.display().to_string();
    let file = tokio::fs::File::open(&args.file)
        .await
        .with_context(|| format!("cannot open {shown}"))
        .map_err(Failure::Usage)?;
    let size = file
        .metadata()
        .await
        .with_context(|| format!("cannot read {shown}"))
        .map_err(Failure::Usage)?
        .len();
    let name = args.name.clone().or_else(|| {
        args.file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
    });
    let progress = bar(json, size, "put");
    let p2 = progress.clone();
    let chunks = locus_artifacts::pipe::file_chunks(file, move |n| p2.inc(n));
    let mut path = format!("/api/v1/artifacts?replicas={}", args.replicas);
    if args.no_wait {
        path.push_str("&wait=false");
    }
    if let Some(n) = &name {
        path.push_str(&format!("&name={}", url_escape(n)));
    }
    let response = client
        .transfer(Method::POST, &path, |r| {
            r.header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .header(reqwest::header::CONTENT_LENGTH, size)
                .body(reqwest::Body::wrap_stream(chunks))
        })
        .await;
    progress.finish_and_clear();
    let report: PutReport = response?
        .json()
        .await
        .context("unexpected answer to the upload")?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("cannot show the answer")?
        );
    } else {
        println!("{}", report.artifact.cid);
        if (report.copies.len() as u32) < report.wanted {
            eprintln!(
                "warning: {} of {} copies are durable; the cluster goes on making the others ({})",
                report.copies.len(),
                report.wanted,
                report.failures.join("; ")
            );
        }
    }
    Ok(())
}

/// Have the node fetch the artifact, following its progress.
async fn fetch(client: &Client, json: bool, id: ArtifactId) -> Result<FetchReport, Failure> {
    let mut response = client
        .transfer(
            Method::POST,
            &format!("/api/v1/artifacts/{id}/fetch?progress=true"),
            |r| r,
        )
        .await?;
    let progress = bar(json, 0, "fetch");
    let mut pending = Vec::new();
    let end = loop {
        let Some(chunk) = response
            .chunk()
            .await
            .context("the fetch progress stream broke")?
        else {
            break None;
        };
        pending.extend_from_slice(&chunk);
        let mut last = None;
        while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            if let Ok(p) = serde_json::from_slice::<FetchProgress>(&line) {
                last = Some(p);
            }
        }
        if let Some(p) = last {
            progress.set_length(p.size);
            progress.set_position(p.have);
            if let Some(end) = p.done {
                break Some(end);
            }
        }
    };
    progress.finish_and_clear();
    match end {
        Some(FetchEnd::Ok(report)) => Ok(report),
        Some(FetchEnd::Failed { message, .. }) => Err(Failure::Failed(anyhow!("{message}"))),
        None => Err(Failure::Failed(anyhow!(
            "the fetch of {id} ended without a result"
        ))),
    }
}

async fn get(client: &Client, json: bool, args: &ArtifactGetArgs) -> Result<(), Failure> {
    let id = parse(&args.cid)?;
    let report = fetch(client, json, id).await?;
    let response = client
        .transfer(
            Method::GET,
            &format!("/api/v1/artifacts/{id}/content"),
            |r| r,
        )
        .await?;
    let progress = bar(json || args.output.is_none(), report.size, "get");
    let mut hasher = blake3::Hasher::new();
    let mut stream = response.bytes_stream();
    let (mut sink, tmp): (Box<dyn Write>, Option<tempfile::NamedTempFile>) = match &args.output {
        Some(path) => {
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let tmp = tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("cannot write in {}", dir.display()))
                .map_err(Failure::Usage)?;
            let f = tmp.reopen().context("cannot reopen the temporary file")?;
            (
                Box::new(std::io::BufWriter::with_capacity(1 << 20, f)),
                Some(tmp),
            )
        }
        None => (Box::new(std::io::stdout().lock()), None),
    };
    let mut got = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.context("the download broke")?;
        hasher.update(&chunk);
        sink.write_all(&chunk)
            .context("cannot write the artifact")?;
        got += chunk.len() as u64;
        progress.set_position(got);
    }
    sink.flush().context("cannot write the artifact")?;
    drop(sink);
    progress.finish_and_clear();
    // The node verified it chunk by chunk; check the whole once more here,
    // where it lands.
    if ArtifactId::from_digest(*hasher.finalize().as_bytes()) != id {
        return Err(Failure::Failed(anyhow!(
            "the {got} bytes received do not hash to {id}; nothing was written"
        )));
    }
    if let (Some(tmp), Some(path)) = (tmp, &args.output) {
        tmp.persist(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if json {
        print(true, &report, render_report)?;
    } else if args.output.is_some() {
        eprintln!("{}", render_report(&report).trim_end());
    }
    Ok(())
}

fn render_report(r: &FetchReport) -> String {
    if r.already_local {
        return format!(
            "{} ({}) was already on the node\n",
            r.cid,
            output::bytes(r.size)
        );
    }
    let secs = Duration::from_millis(r.elapsed_ms).as_secs_f64().max(0.001);
    let mut s = format!(
        "{} ({}) fetched in {:.2} s ({}/s) from {} peer(s)",
        r.cid,
        output::bytes(r.size),
        secs,
        output::bytes((r.fetched_bytes as f64 / secs) as u64),
        r.peers.iter().filter(|p| p.bytes > 0).count()
    );
    if r.resumed_bytes > 0 {
        s.push_str(&format!(", {} resumed", output::bytes(r.resumed_bytes)));
    }
    if r.corrupt_chunks > 0 {
        s.push_str(&format!(", {} corrupt chunk(s) rejected", r.corrupt_chunks));
    }
    s.push('\n');
    for p in r.peers.iter().filter(|p| p.dropped.is_some()) {
        s.push_str(&format!(
            "  peer {} dropped: {}\n",
            p.node,
            p.dropped.as_deref().unwrap_or("")
        ));
    }
    s
}

fn render_view(v: &ArtifactView) -> String {
    output::pairs(&[
        ("cid", v.cid.to_string()),
        ("name", v.name.clone().unwrap_or_else(|| "-".into())),
        (
            "size",
            format!("{} ({} bytes)", output::bytes(v.size), v.size),
        ),
        ("here", if v.local { "yes".into() } else { "no".into() }),
        ("pinned", if v.pinned { "yes".into() } else { "no".into() }),
        ("in use", if v.in_use { "yes".into() } else { "no".into() }),
        (
            "replicas",
            if v.replicas == 0 {
                "-".into()
            } else {
                v.replicas.to_string()
            },
        ),
        (
            "holders",
            format!(
                "{} ({})",
                v.holders.len(),
                v.holders
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    ])
}

fn render_list(list: &[ArtifactView]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|v| {
            vec![
                v.cid.to_string(),
                output::bytes(v.size),
                v.name.clone().unwrap_or_else(|| "-".into()),
                if v.pinned {
                    "pinned".into()
                } else {
                    "-".into()
                },
                if v.replicas == 0 {
                    "-".into()
                } else {
                    format!("{}/{}", v.holders.len(), v.replicas)
                },
            ]
        })
        .collect();
    output::table(&["CID", "SIZE", "NAME", "PIN", "COPIES"], &rows)
}
