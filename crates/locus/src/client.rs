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
    /// For transfers: no overall deadline, only a connect and a read
    /// timeout.
    long: reqwest::Client,
}

impl Client {
    pub fn new(api: &str, pin: Option<&str>, token: Option<String>) -> anyhow::Result<Client> {
        let base = api.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(anyhow!(
                "invalid --api {api:?}: expected a URL like {}",
                crate::cli::DEFAULT_API
            ));
        }
        let pin: Option<locus_access::pin::Pin> = pin
            .map(|p| p.parse().map_err(|e| anyhow!("--pin: {e}")))
            .transpose()?;
        let tls = match (base.starts_with("https://"), pin) {
            (true, Some(pin)) => Some(crate::pin::client_config(pin)?),
            (true, None) => {
                return Err(anyhow!(
                    "{api} is https: say which node or org to trust with --pin node:<key> or \
                     --pin org:<key> (locus trusts no certificate authority)"
                ));
            }
            (false, Some(_)) => {
                return Err(anyhow!("--pin is for an https:// API, not {api}"));
            }
            (false, None) => None,
        };
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| anyhow!("the token holds characters a header cannot carry"))?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let with_tls = |b: reqwest::ClientBuilder| match &tls {
            Some(config) => b.tls_backend_preconfigured(config.clone()),
            None => b,
        };
        let http = with_tls(reqwest::Client::builder())
            .default_headers(headers.clone())
            .timeout(TIMEOUT)
            .build()
            .context("cannot build the HTTP client")?;
        let long = with_tls(reqwest::Client::builder())
            .default_headers(headers)
            .connect_timeout(TIMEOUT)
            .read_timeout(Duration::from_secs(120))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Client { base, http, long })
    }

    /// Start a long call (an upload or a download) and return the response
    /// once its status is a success; the agent's error otherwise.
    pub async fn transfer(
        &self,
        method: reqwest::Method,
        path: &str,
        prepare: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}{path}", self.base);
        let request = prepare(self.long.request(method.clone(), &url));
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.bytes().await.unwrap_or_default();
            return Err(self.refusal(status, method.as_str(), path, &body));
        }
        Ok(response)
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// A call with a JSON body.
    pub async fn call_json<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<T> {
        let bytes = serde_json::to_vec(body).context("cannot encode the request")?;
        self.call(method, path, Some(("application/json", bytes)))
            .await
    }

    /// A call with an optional body `(content type, bytes)`; `T = ()`
    /// accepts an empty answer (204).
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> anyhow::Result<T> {
        let body = self.send(method.clone(), path, body).await?;
        let body = if body.is_empty() {
            &b"null"[..]
        } else {
            &body[..]
        };
        serde_json::from_slice(body)
            .with_context(|| format!("unexpected answer from {method} {}{path}", self.base))
    }

    /// Stream a response body to stdout as it arrives (for `logs -f`).
    pub async fn stream_to_stdout(&self, path: &str) -> anyhow::Result<()> {
        use std::io::Write;
        let url = format!("{}{path}", self.base);
        let mut response = self
            .long
            .get(&url)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.bytes().await.unwrap_or_default();
            return Err(self.refusal(status, "GET", path, &body));
        }
        let mut out = std::io::stdout();
        while let Some(chunk) = response.chunk().await.context("the log stream broke")? {
            out.write_all(&chunk)?;
            out.flush()?;
        }
        Ok(())
    }

    /// The raw answer of a call, or the agent's error.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> anyhow::Result<Vec<u8>> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method.clone(), &url);
        if let Some((content_type, bytes)) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(bytes);
        }
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .with_context(|| format!("reading the answer of {url}"))?;
        if !status.is_success() {
            return Err(self.refusal(status, method.as_str(), path, &body));
        }
        Ok(body.to_vec())
    }

    fn unreachable(&self, e: &reqwest::Error) -> anyhow::Error {
        // A refused certificate is not an agent that is down: say why.
        if let Some(tls) = tls_cause(e) {
            let why = match tls {
                rustls::Error::InvalidCertificate(rustls::CertificateError::Other(
                    rustls::OtherError(why),
                )) => why.to_string(),
                other => other.to_string(),
            };
            return anyhow!("the agent at {} is not the one pinned: {why}", self.base);
        }
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
    }

    fn refusal(
        &self,
        status: reqwest::StatusCode,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> anyhow::Error {
        match serde_json::from_slice::<locus_api::ErrorBody>(body) {
            Ok(e) => anyhow!(
                "the agent answered {status}: {} ({})",
                e.error.message,
                e.error.code
            ),
            Err(_) => anyhow!("the agent answered {status} to {method} {path}"),
        }
    }
}

/// The TLS error under `e`, looking into I/O errors that wrap others
/// (whose `source` skips the error they wrap).
fn tls_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    if let Some(inner) = e
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        && let Some(tls) = tls_cause(inner)
    {
        return Some(tls);
    }
    e.source().and_then(tls_cause)
}
