//! The LwM2M bootstrap server: a Bootstrap-Request starts the thing's plan
//! (Delete `/0` and `/1`, Write the Security and Server objects of its
//! manager's LwM2M server, Bootstrap-Finish); a thing that moved is asked to
//! bootstrap again.

use super::*;

impl Inner {
    /// Bootstrap-Request (`POST /bs?ep=NAME`).
    pub(crate) async fn bootstrap_request(
        self: &Arc<Self>,
        req: Packet,
        peer: SocketAddr,
    ) -> Reply {
        let endpoint = match query::parse_bootstrap(coap::query(&req).iter().map(Vec::as_slice)) {
            Ok(e) => e,
            Err(e) => return Reply::diagnostic(ResponseType::BadRequest, e),
        };
        // LwM2M 1.0 TS §5.2.7.1: an unknown endpoint gets 4.00.
        let thing = match self.lookup(&endpoint).await {
            Ok(t) => t,
            Err(reply) => return reply,
        };
        let Some(thing) = thing else {
            tracing::info!(endpoint, %peer, "bootstrap refused: unknown endpoint");
            return Reply::diagnostic(
                ResponseType::BadRequest,
                format!("unknown endpoint client name {endpoint:?}"),
            );
        };
        let requests = match bootstrap_plan(&thing, &self.settings) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(endpoint, thing = thing.name, error = %e, "cannot bootstrap");
                return Reply::diagnostic(
                    ResponseType::InternalServerError,
                    format!("cannot bootstrap thing {:?}: {e}", thing.name),
                );
            }
        };
        {
            let mut b = lock(&self.bootstraps);
            if b.running.contains(&endpoint) {
                // The one in progress configures it.
                return Reply::new(ResponseType::Changed);
            }
            if b.running.len() >= MAX_BOOTSTRAPS {
                return Reply::diagnostic(
                    ResponseType::ServiceUnavailable,
                    format!("{MAX_BOOTSTRAPS} bootstraps are in progress, try again"),
                );
            }
            b.running.insert(endpoint.clone());
            if b.history.len() >= BOOTSTRAP_HISTORY {
                b.history.pop_front();
            }
            b.history.push_back(BootstrapView {
                endpoint: endpoint.clone(),
                thing: thing.name.clone(),
                address: peer.to_string(),
                started_ms: now_ms(),
                finished_ms: None,
                result: "running".to_owned(),
            });
        }
        tracing::info!(endpoint, thing = thing.name, %peer, "bootstrapping");
        let mut reply = Reply::new(ResponseType::Changed);
        let this = self.clone();
        reply.then = Some(Box::pin(async move {
            this.run_bootstrap(endpoint, peer, requests).await;
        }));
        reply
    }

    pub(crate) async fn run_bootstrap(
        &self,
        endpoint: String,
        peer: SocketAddr,
        requests: Vec<iot::Request>,
    ) {
        let mut result = Ok(());
        for (i, r) in requests.into_iter().enumerate() {
            let name = method_name(r.method);
            let want = match r.method {
                Method::Delete => ResponseType::Deleted,
                _ => ResponseType::Changed,
            };
            let out = Outgoing::new(request_type(r.method), segments("/", &r.path))
                .payload(r.content_format, r.payload);
            let step = format!("step {} ({name} {})", i + 1, r.path);
            match self.bootstrap.request(peer, out, true).await {
                Ok(resp) if coap::response_code(&resp.packet) == Some(want) => {}
                Ok(resp) => {
                    result = Err(format!(
                        "{step} answered {} {}",
                        coap::code_text(&resp.packet),
                        coap::diagnostic(&resp.packet)
                    ));
                    break;
                }
                Err(e) => {
                    result = Err(format!("{step}: {e}"));
                    break;
                }
            }
        }
        let label = match &result {
            Ok(()) => {
                tracing::info!(endpoint, %peer, "bootstrap finished");
                "ok"
            }
            Err(why) => {
                tracing::warn!(endpoint, %peer, why, "bootstrap failed");
                "failed"
            }
        };
        self.metrics
            .lwm2m_bootstraps
            .with_label_values(&[label])
            .inc();
        let mut b = lock(&self.bootstraps);
        b.running.remove(&endpoint);
        if let Some(v) = b
            .history
            .iter_mut()
            .rev()
            .find(|v| v.endpoint == endpoint && v.finished_ms.is_none())
        {
            v.finished_ms = Some(now_ms());
            v.result = match result {
                Ok(()) => "ok".to_owned(),
                Err(why) => format!("failed: {why}"),
            };
        }
    }
}

/// The bootstrap requests for `thing`: its manager's server URI (as
/// `coaps://` when the thing has PSK credentials), its security mode, and
/// the short server id and lifetime of `settings`.
pub(super) fn bootstrap_plan(
    thing: &Lwm2mThing,
    settings: &Settings,
) -> Result<Vec<iot::Request>, iot::Lwm2mError> {
    let mut uri = thing.server_uri.clone();
    if let SecurityMode::Psk { .. } = thing.security
        && let Some(rest) = uri.strip_prefix("coap://")
    {
        uri = format!("coaps://{rest}");
    }
    let ssid = settings.short_server_id;
    iot::bootstrap_requests(
        &Security {
            instance: 0,
            server_uri: uri,
            mode: thing.security.clone(),
            short_server_id: ssid,
        },
        &Server::new(0, ssid, settings.lifetime_s),
    )
}

/// What the bootstrap server's socket serves.
pub(super) struct BootstrapRole(pub(super) Arc<Inner>);

#[async_trait::async_trait]
impl Service for BootstrapRole {
    async fn handle(&self, req: Packet, peer: SocketAddr) -> Reply {
        let path = coap::path(&req).unwrap_or_default();
        match (req.header.code, path.as_slice()) {
            (coap_lite::MessageClass::Request(RequestType::Post), [bs]) if bs == "bs" => {
                self.0.bootstrap_request(req, peer).await
            }
            _ => Reply::diagnostic(
                ResponseType::NotFound,
                "this is an LWM2M bootstrap server: POST /bs?ep=NAME",
            ),
        }
    }

    fn notification(&self, _packet: Packet, _peer: SocketAddr) -> Verdict {
        // The bootstrap server observes nothing.
        Verdict::Unknown
    }
}
