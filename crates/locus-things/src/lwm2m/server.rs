//! The LwM2M server: registrations (Register, Update, De-register) checked
//! against the thing directory, observations of every observable resource,
//! and notifications stored as readings before they are acknowledged.

use super::*;

impl Inner {
    /// Ask the directory, at most [`DIRECTORY_TIMEOUT`].
    pub(crate) async fn lookup(&self, endpoint: &str) -> Result<Option<Lwm2mThing>, Reply> {
        tokio::time::timeout(DIRECTORY_TIMEOUT, self.directory.lwm2m_thing(endpoint))
            .await
            .map_err(|_| {
                tracing::warn!(endpoint, "the thing directory did not answer in time");
                Reply::diagnostic(
                    ResponseType::ServiceUnavailable,
                    "the thing directory did not answer in time, try again",
                )
            })
    }

    /// Register (`POST /rd`).
    pub(crate) async fn register(self: &Arc<Self>, req: Packet, peer: Peer) -> Reply {
        let q = match query::parse_register(coap::query(&req).iter().map(Vec::as_slice)) {
            Ok(q) => q,
            Err(e) => return self.reject("invalid", ResponseType::BadRequest, e),
        };
        match coap::content_format(&req) {
            None | Some(content::LINK_FORMAT) => {}
            Some(cf) => {
                return self.reject(
                    "invalid",
                    ResponseType::UnsupportedContentFormat,
                    format!("a Register payload is link format (40), not content format {cf}"),
                );
            }
        }
        let links = match iot::parse_links(&req.payload) {
            Ok(l) => l,
            Err(e) => {
                self.malformed_payload("server", "register links");
                return self.reject(
                    "invalid",
                    ResponseType::BadRequest,
                    format!("Register payload: {e}"),
                );
            }
        };
        let thing = match self.lookup(&q.endpoint).await {
            Ok(t) => t,
            Err(reply) => return reply,
        };
        let Some(thing) = thing else {
            return self.reject(
                "unknown",
                ResponseType::Forbidden,
                format!(
                    "endpoint {:?} is not an LWM2M thing of this cluster",
                    q.endpoint
                ),
            );
        };
        if let Err((reason, why)) = security_binding(&thing, &peer, "register") {
            return self.reject(reason, ResponseType::Forbidden, why);
        }
        if !thing.managed_here {
            return self.reject(
                "not_managed",
                ResponseType::Forbidden,
                format!(
                    "thing {:?} (endpoint {:?}) is managed by another node: bootstrap again",
                    thing.name, q.endpoint
                ),
            );
        }
        let endpoint = q.endpoint.clone();
        let registered = {
            let mut st = lock(&self.state);
            let mut result = Err(RegistryError::IdInUse(String::new()));
            // A random id colliding twice in a row is a broken RNG.
            for _ in 0..3 {
                result = st.registry().register(
                    registration_id(),
                    q.clone(),
                    links.clone(),
                    peer.clone(),
                    now_ms(),
                );
                if !matches!(result, Err(RegistryError::IdInUse(_))) {
                    break;
                }
            }
            match result {
                Ok(r) => {
                    if let Some(old) = &r.replaced {
                        st.drop_registration(&old.id);
                    }
                    st.sessions.insert(
                        r.registration.id.clone(),
                        Session {
                            thing: thing.clone(),
                        },
                    );
                    self.set_registration_gauge(&mut st);
                    Ok(r.registration)
                }
                Err(e) => Err(e),
            }
        };
        let reg = match registered {
            Ok(r) => r,
            Err(e) => return self.reject("full", ResponseType::ServiceUnavailable, e),
        };
        tracing::info!(
            endpoint, thing = thing.name, id = reg.id, %peer,
            lifetime_s = reg.lifetime_s, "LWM2M client registered"
        );
        let mut reply = Reply::new(ResponseType::Created);
        reply.location = vec!["rd".to_owned(), reg.id.clone()];
        let this = self.clone();
        reply.then = Some(Box::pin(async move { this.observe_all(&reg.id).await }));
        reply
    }

    /// Update (`POST /rd/<id>`).
    pub(crate) async fn update(self: &Arc<Self>, id: &str, req: Packet, peer: Peer) -> Reply {
        let q = match query::parse_update(coap::query(&req).iter().map(Vec::as_slice)) {
            Ok(q) => q,
            Err(e) => return Reply::diagnostic(ResponseType::BadRequest, e),
        };
        let links = if req.payload.is_empty() {
            None
        } else {
            match iot::parse_links(&req.payload) {
                Ok(l) => Some(l),
                Err(e) => {
                    self.malformed_payload("server", "update links");
                    return Reply::diagnostic(
                        ResponseType::BadRequest,
                        format!("Update payload: {e}"),
                    );
                }
            }
        };
        let new_links = links.is_some();
        {
            let mut st = lock(&self.state);
            if let Some(why) = st.wrong_identity(id, &peer) {
                drop(st);
                return self.reject("wrong_identity", ResponseType::Forbidden, why);
            }
            if let Err(e) = st.registry().update(id, q, links, peer.clone(), now_ms()) {
                return Reply::diagnostic(ResponseType::NotFound, e);
            }
            for o in st
                .observations
                .values_mut()
                .filter(|o| o.registration == id)
            {
                o.peer = peer.clone();
            }
        }
        tracing::debug!(id, %peer, "LWM2M registration updated");
        let mut reply = Reply::new(ResponseType::Changed);
        if new_links {
            let this = self.clone();
            let id = id.to_owned();
            reply.then = Some(Box::pin(async move { this.observe_all(&id).await }));
        }
        reply
    }

    /// De-register (`DELETE /rd/<id>`).
    pub(crate) fn deregister(&self, id: &str, peer: &Peer) -> Reply {
        let mut st = lock(&self.state);
        if let Some(why) = st.wrong_identity(id, peer) {
            drop(st);
            return self.reject("wrong_identity", ResponseType::Forbidden, why);
        }
        match st.registry().deregister(id) {
            Ok(r) => {
                st.drop_registration(id);
                self.set_registration_gauge(&mut st);
                tracing::info!(id, endpoint = r.endpoint, "LWM2M client de-registered");
                Reply::new(ResponseType::Deleted)
            }
            Err(e) => Reply::diagnostic(ResponseType::NotFound, e),
        }
    }

    /// Observe every resource of registration `id` marked `observe` that
    /// the client announced and that is not observed yet.
    pub(crate) async fn observe_all(self: &Arc<Self>, id: &str) {
        let targets: Vec<(Peer, String, String, ResourceDef)> = {
            let mut st = lock(&self.state);
            let Some(r) = st.registry().get(id).cloned() else {
                return;
            };
            let Some(session) = st.sessions.get(id) else {
                return;
            };
            let observed: HashSet<ResourcePath> = st
                .observations
                .values()
                .filter(|o| o.registration == id)
                .map(|o| o.def.path)
                .collect();
            let thing = &session.thing;
            thing
                .resources
                .iter()
                .filter(|res| res.observe)
                .filter_map(|res| match thing.def(res) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        tracing::warn!(thing = thing.name, error = %e, "LWM2M resource skipped");
                        None
                    }
                })
                .filter(|d| r.announces(d.path.object, d.path.instance))
                .filter(|d| !observed.contains(&d.path))
                .map(|d| (r.addr.clone(), r.root.clone(), thing.name.clone(), d))
                .collect()
        };
        for (peer, root, thing, def) in targets {
            self.observe(id, &peer, &root, &thing, def).await;
        }
    }

    pub(crate) async fn observe(
        &self,
        id: &str,
        peer: &Peer,
        root: &str,
        thing: &str,
        def: ResourceDef,
    ) {
        let server = self.server_for(peer);
        let token = server.token();
        let path = def.path;
        {
            let mut st = lock(&self.state);
            if st.observations.len() >= MAX_OBSERVATIONS {
                tracing::warn!(
                    thing,
                    path = %path,
                    "not observed: {MAX_OBSERVATIONS} observations are in place"
                );
                return;
            }
            if st.registry().get(id).is_none() {
                return;
            }
            st.observations.insert(
                token.clone(),
                Observation {
                    registration: id.to_owned(),
                    thing: thing.to_owned(),
                    def: def.clone(),
                    peer: peer.clone(),
                    last: None,
                },
            );
        }
        let forget = |why: &dyn std::fmt::Display| {
            lock(&self.state).observations.remove(&token);
            tracing::warn!(thing, path = %path, why = %why, "LWM2M observation not in place");
        };
        let mut out = Outgoing::new(RequestType::Get, segments(root, &path.to_string()));
        out.observe = Some(0);
        out.token = Some(token.clone());
        let resp = match server.request(peer, out, false).await {
            Ok(r) => r,
            Err(e) => return forget(&e),
        };
        let packet = &resp.packet;
        if coap::response_code(packet) != Some(ResponseType::Content) {
            if let Some(mid) = resp.unacked {
                server.ack(peer, mid).await;
            }
            let why = format!(
                "the client answered {} {}",
                coap::code_text(packet),
                coap::diagnostic(packet)
            );
            return forget(&why);
        }
        let seq = coap::observe(packet);
        {
            let mut st = lock(&self.state);
            match (st.observations.get_mut(&token), seq) {
                (Some(o), Some(seq)) => o.last = Some((seq, Instant::now())),
                // The client does not observe it: one value, no more.
                (Some(_), None) => {
                    st.observations.remove(&token);
                    tracing::info!(thing, path = %path, "the client does not support Observe here; read once");
                }
                (None, _) => {}
            }
        }
        let stored = self.store(thing, &def, packet, now_ms()).await;
        if let Some(mid) = resp.unacked {
            match stored {
                Err(StoreFailure::Store) => server.release(peer, mid),
                _ => server.ack(peer, mid).await,
            }
        }
        if stored.is_ok() {
            tracing::debug!(thing, path = %path, "LWM2M resource observed");
        }
    }

    /// Store the reading a Read/Notify response carries.
    pub(crate) async fn store(
        &self,
        thing: &str,
        def: &ResourceDef,
        packet: &Packet,
        received_ms: u64,
    ) -> Result<(), StoreFailure> {
        let reading = def
            .reading(
                thing,
                coap::content_format(packet),
                &packet.payload,
                received_ms as i64,
            )
            .map_err(|e| {
                self.malformed_payload("server", "resource value");
                tracing::info!(thing, error = %e, "LWM2M value not stored");
                StoreFailure::Payload
            })?;
        match self.readings.ingest(vec![reading]).await {
            Ok(_) => {
                self.metrics.lwm2m_readings.inc();
                Ok(())
            }
            Err(e) => {
                tracing::warn!(thing, error = %e, "LWM2M reading not stored; the client will resend it");
                Err(StoreFailure::Store)
            }
        }
    }

    /// Take a notification off the receive loop (no waiting here).
    pub(crate) fn notification(&self, packet: Packet, peer: Peer) -> Verdict {
        // Room in the queue first, so that nothing is marked as seen for a
        // notification that is then dropped.
        let Ok(permit) = self.notifications.try_reserve() else {
            tracing::warn!(%peer, "LWM2M notification queue full; left for the client to resend");
            return Verdict::Release;
        };
        let mut st = lock(&self.state);
        let token = packet.get_token().to_vec();
        let Some(o) = st.observations.get_mut(&token) else {
            return Verdict::Unknown;
        };
        if o.peer != peer {
            return Verdict::Unknown;
        }
        let code = coap::response_code(&packet);
        if code.is_none_or(|c| c.is_error()) {
            // RFC 7641 §3.2: an error ends the observation.
            tracing::info!(thing = o.thing, path = %o.def.path, code = coap::code_text(&packet), "LWM2M observation ended by the client");
            st.observations.remove(&token);
            return Verdict::Ack;
        }
        let now = Instant::now();
        let (thing, def) = (o.thing.clone(), o.def.clone());
        match coap::observe(&packet) {
            Some(seq) => {
                if let Some((v1, t1)) = o.last
                    && !fresher(v1, t1, seq, now)
                {
                    // Older than what was taken: reordered on the way.
                    return Verdict::Ack;
                }
                o.last = Some((seq, now));
            }
            // A notification without Observe is the last one.
            None => {
                st.observations.remove(&token);
            }
        }
        permit.send(Notification {
            thing,
            def,
            packet,
            peer,
            received_ms: now_ms(),
        });
        Verdict::Queued
    }
}

/// What the LWM2M server's socket serves.
pub(super) struct ServerRole(pub(super) Arc<Inner>);

/// Store queued notifications in order, acknowledging each confirmable one
/// once its reading is durable.
pub(super) async fn store_notifications(inner: Arc<Inner>, mut rx: mpsc::Receiver<Notification>) {
    while let Some(n) = rx.recv().await {
        let confirmable = n.packet.header.get_type() == coap_lite::MessageType::Confirmable;
        let mid = n.packet.header.message_id;
        let stored = inner
            .store(&n.thing, &n.def, &n.packet, n.received_ms)
            .await;
        if confirmable {
            match stored {
                Err(StoreFailure::Store) => inner.server_for(&n.peer).release(&n.peer, mid),
                _ => inner.server_for(&n.peer).ack(&n.peer, mid).await,
            }
        }
    }
}

/// Remove registrations whose lifetime ran out.
pub(super) async fn expire_registrations(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(EXPIRY_SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut st = lock(&inner.state);
        let gone = st.registry().expire(now_ms());
        for r in &gone {
            st.drop_registration(&r.id);
            tracing::info!(
                id = r.id,
                endpoint = r.endpoint,
                "LWM2M registration expired"
            );
        }
        if !gone.is_empty() {
            inner.set_registration_gauge(&mut st);
        }
    }
}

#[async_trait::async_trait]
impl Service for ServerRole {
    async fn handle(&self, req: Packet, peer: Peer) -> Reply {
        let Some(path) = coap::path(&req) else {
            self.0.malformed_payload("server", "uri-path");
            return Reply::diagnostic(ResponseType::BadRequest, "a Uri-Path option is not UTF-8");
        };
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        let method = match req.header.code {
            coap_lite::MessageClass::Request(m) => Some(m),
            _ => None,
        };
        match (method, path.as_slice()) {
            (Some(RequestType::Post), ["rd"]) => self.0.register(req, peer).await,
            (Some(RequestType::Post), ["rd", id]) => self.0.update(id, req, peer).await,
            (Some(RequestType::Delete), ["rd", id]) => self.0.deregister(id, &peer),
            (_, ["rd"] | ["rd", _]) => Reply::diagnostic(
                ResponseType::MethodNotAllowed,
                "POST /rd registers, POST /rd/<id> updates, DELETE /rd/<id> de-registers",
            ),
            _ => Reply::diagnostic(
                ResponseType::NotFound,
                format!(
                    "no resource /{}: this LWM2M server serves /rd",
                    path.join("/")
                ),
            ),
        }
    }

    fn notification(&self, packet: Packet, peer: Peer) -> Verdict {
        self.0.notification(packet, peer)
    }
}
