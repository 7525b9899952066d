//! The client side of the CLI: calls a node's API and turns its answers
//! (including the error envelope) into values or clear errors.

use std::time::Duration;

use anyhow::{Context, anyhow};
use serde::de::DeserializeOwned;

/// How long the CLI waits for a node.
const TIMEOUT: Duration = Duration::from_secs(10);

pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(api: &str) -> anyhow::Result<Client> {
        let base = api.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(anyhow!(
                "invalid --api {api:?}: expected a URL like {}",
                crate::cli::DEFAULT_API
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Client { base, http })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base);
        let response = self.http.get(&url).send().await.map_err(|e| {
            let why = if e.is_connect() {
                "connection refused or unreachable"
            } else if e.is_timeout() {
                "timed out"
            } else {
                "request failed"
            };
            anyhow!(
                "cannot reach the locus agent at {}: {why} (is `locus agent` running? set --api or LOCUS_API)",
                self.base
            )
        })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .with_context(|| format!("reading the answer of {url}"))?;
        if !status.is_success() {
            return Err(
                match serde_json::from_slice::<locus_api::ErrorBody>(&body) {
                    Ok(e) => anyhow!(
                        "the agent answered {status}: {} ({})",
                        e.error.message,
                        e.error.code
                    ),
                    Err(_) => anyhow!("the agent answered {status} to GET {path}"),
                },
            );
        }
        serde_json::from_slice(&body).with_context(|| format!("unexpected answer from GET {url}"))
    }
}
