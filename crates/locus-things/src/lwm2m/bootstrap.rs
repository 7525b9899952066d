//! The LwM2M bootstrap server: a Bootstrap-Request starts the thing's plan:
//! Delete `/0` and `/1`, Bootstrap-Discover `/0` to learn which Security
//! instances the client kept (its own Bootstrap-Server account survives the
//! Delete), Write the Security instance of its manager's LwM2M server at the
//! first free instance id and the Server instance, Bootstrap-Finish. A
//! client that does not know Bootstrap-Discover (LwM2M 1.0) gets the
//! Security instance at `/0/1`, which never overwrites an account kept at
//! the conventional `/0/0`.

use super::*;

impl Inner {
    /// Send one bootstrap request; the answer when its code is `want`.
    async fn bootstrap_step(
        &self,
        peer: &Peer,
        step: usize,
        r: iot::Request,
        want: &[ResponseType],
    ) -> Result<coap::Response, String> {
        let name = method_name(r.method);
        let out = Outgoing::new(request_type(r.method), segments("/", &r.path))
            .payload(r.content_format, r.payload)
            .accept(r.accept);
        let step = format!("step {step} ({name} {})", r.path);
        match self.bootstrap_for(peer).request(peer, out, true).await {
            Ok(resp) if coap::response_code(&resp.packet).is_some_and(|c| want.contains(&c)) => {
                Ok(resp)
            }
            Ok(resp) => Err(format!(
                "{step} answered {} {}",
                coap::code_text(&resp.packet),
                coap::diagnostic(&resp.packet)
            )),
            Err(e) => Err(format!("{step}: {e}")),
        }
    }

    /// The requests of one bootstrap, in order; the first that fails ends it.
    /// The requests of one bootstrap, in order; the content format its
    /// writes went in.
    async fn bootstrap_steps(&self, peer: &Peer, mut plan: Plan) -> Result<u16, String> {
        let mut step = 0;
        for r in iot::bootstrap_clear() {
            step += 1;
            self.bootstrap_step(peer, step, r, &[ResponseType::Deleted])
                .await?;
        }
        // Which Security instances the client kept. Any answer but 2.05
        // (a 1.0 client: 4.00, 4.04, 4.05) means it cannot tell.
        step += 1;
        let discovered = self
            .bootstrap_step(peer, step, iot::bootstrap_discover(), &ALL_CODES)
            .await?;
        plan.security.instance = match coap::response_code(&discovered.packet) {
            Some(ResponseType::Content) => match iot::parse_links(&discovered.packet.payload) {
                Ok(links) => iot::free_instance(&links, iot::SECURITY_OBJECT),
                Err(e) => {
                    self.malformed_payload("bootstrap", "link-format");
                    return Err(format!(
                        "step {step} (GET /0) answered links that do not parse: {e}"
                    ));
                }
            },
            _ => UNDISCOVERED_INSTANCE,
        };
        // The writes, in the client's format: what it asked for (pct), or
        // TLV; a client that answers a write 4.15 or 4.06 (an LwM2M 1.1
        // client built without TLV) gets it again in SenML JSON, then CBOR.
        let mut format = plan.format;
        let mut tried = Vec::new();
        let writes_in = |f| {
            iot::bootstrap_writes_as(&plan.security, &plan.server, f).map_err(|e| e.to_string())
        };
        let mut writes = writes_in(format)?;
        let mut i = 0;
        while let Some(r) = writes.get(i).cloned() {
            step += 1;
            let resp = self
                .bootstrap_step(
                    peer,
                    step,
                    r,
                    &[ResponseType::Changed, FORMAT_REFUSED[0], FORMAT_REFUSED[1]],
                )
                .await?;
            if coap::response_code(&resp.packet).is_some_and(|c| FORMAT_REFUSED.contains(&c)) {
                // Each format is tried once, in the order of FORMATS.
                tried.push(format);
                let Some(next) = FORMATS.into_iter().find(|f| !tried.contains(f)) else {
                    return Err(format!(
                        "step {step} answered {}: the client reads neither TLV nor SenML JSON nor SenML CBOR",
                        coap::code_text(&resp.packet)
                    ));
                };
                format = next;
                writes = writes_in(format)?;
                continue;
            }
            i += 1;
        }
        Ok(format)
    }

    /// Bootstrap-Request (`POST /bs?ep=NAME`).
    pub(crate) async fn bootstrap_request(self: &Arc<Self>, req: Packet, peer: Peer) -> Reply {
        let query::BootstrapQuery {
            endpoint,
            preferred_format,
        } = match query::parse_bootstrap(coap::query(&req).iter().map(Vec::as_slice)) {
            Ok(q) => q,
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
        // Its PSK goes only to a client that holds it.
        if let Err((reason, why)) = security_binding(&thing, &peer, "bootstrap") {
            self.metrics
                .lwm2m_rejected_registrations
                .with_label_values(&[reason])
                .inc();
            tracing::info!(reason, %peer, %why, "LWM2M bootstrap refused");
            return Reply::diagnostic(ResponseType::Forbidden, why);
        }
        let plan = match bootstrap_plan(&thing, &self.settings) {
            Ok(mut p) => {
                // What it asks for, else what it took last time, else TLV.
                p.format = preferred_format
                    .filter(|f| FORMATS.contains(f))
                    .or_else(|| lock(&self.bootstraps).formats.get(&endpoint).copied())
                    .unwrap_or(content::TLV);
                p
            }
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
                address: peer.addr.to_string(),
                started_ms: now_ms(),
                finished_ms: None,
                result: "running".to_owned(),
            });
        }
        tracing::info!(endpoint, thing = thing.name, %peer, "bootstrapping");
        let mut reply = Reply::new(ResponseType::Changed);
        let this = self.clone();
        reply.then = Some(Box::pin(async move {
            this.run_bootstrap(endpoint, peer, plan).await;
        }));
        reply
    }

    pub(crate) async fn run_bootstrap(&self, endpoint: String, peer: Peer, plan: Plan) {
        let result = self.bootstrap_steps(&peer, plan).await;
        let label = match &result {
            Ok(_) => {
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
        if let Ok(format) = result {
            if b.formats.len() >= MAX_REMEMBERED_FORMATS && !b.formats.contains_key(&endpoint) {
                b.formats.clear();
            }
            b.formats.insert(endpoint.clone(), format);
        }
        if let Some(v) = b
            .history
            .iter_mut()
            .rev()
            .find(|v| v.endpoint == endpoint && v.finished_ms.is_none())
        {
            v.finished_ms = Some(now_ms());
            v.result = match result {
                Ok(_) => "ok".to_owned(),
                Err(why) => format!("failed: {why}"),
            };
        }
    }
}

/// The Security instance given to a client that cannot say which it kept
/// (no Bootstrap-Discover): `/0/0` is where clients keep their
/// Bootstrap-Server account by convention.
pub(super) const UNDISCOVERED_INSTANCE: u16 = 1;

/// Every answer a Bootstrap-Discover may get and still let the bootstrap go on.
const ALL_CODES: [ResponseType; 6] = [
    ResponseType::Content,
    ResponseType::BadRequest,
    ResponseType::NotFound,
    ResponseType::MethodNotAllowed,
    ResponseType::NotAcceptable,
    ResponseType::NotImplemented,
];

/// What a thing's bootstrap writes; the Security instance id is settled
/// once the client said which it kept.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) security: Security,
    pub(crate) server: Server,
    /// The content format of the writes (TLV unless the client asked).
    pub(crate) format: u16,
}

/// The content formats of the writes, in the order they are tried when a
/// client refuses one (4.15, 4.06).
const FORMATS: [u16; 3] = [content::TLV, content::SENML_JSON, content::SENML_CBOR];

/// Why a thing cannot be bootstrapped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PlanError {
    #[error("its LWM2M server {uri:?} is not a {scheme} URI, which its security mode needs")]
    Scheme { uri: String, scheme: &'static str },
    #[error(transparent)]
    Writes(#[from] iot::Lwm2mError),
}

/// The bootstrap of `thing`: its manager's server URI (`coaps://` exactly
/// when the thing has PSK credentials), its security mode, and the short
/// server id and lifetime of `settings`. Checked here, so that a thing that
/// cannot be bootstrapped is refused at its Bootstrap-Request.
pub(super) fn bootstrap_plan(thing: &Lwm2mThing, settings: &Settings) -> Result<Plan, PlanError> {
    let uri = thing.server_uri.clone();
    let scheme = match thing.security {
        SecurityMode::Psk { .. } => "coaps://",
        SecurityMode::NoSec => "coap://",
    };
    if !uri.starts_with(scheme) {
        return Err(PlanError::Scheme { uri, scheme });
    }
    let ssid = settings.short_server_id;
    let plan = Plan {
        security: Security {
            instance: 0,
            server_uri: uri,
            mode: thing.security.clone(),
            short_server_id: ssid,
        },
        server: Server::new(0, ssid, settings.lifetime_s),
        format: content::TLV,
    };
    iot::bootstrap_writes(&plan.security, &plan.server)?;
    Ok(plan)
}

/// What the bootstrap server's socket serves.
pub(super) struct BootstrapRole(pub(super) Arc<Inner>);

#[async_trait::async_trait]
impl Service for BootstrapRole {
    async fn handle(&self, req: Packet, peer: Peer) -> Reply {
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

    fn notification(&self, _packet: Packet, _peer: Peer) -> Verdict {
        // The bootstrap server observes nothing.
        Verdict::Unknown
    }
}
