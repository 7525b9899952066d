//! Access on a running node: its [`Trust`] kept current from the fabric
//! (the certificates peers publish, the revocations anyone signs), and
//! the acts that need this node's keys: minting tokens, signing
//! revocations, making join tokens and enrolling nodes.
//!
//! Certificates travel as the record [`KEY_CERT`] of each node;
//! revocations as records under [`REVOCATION_PREFIX`] of the node that
//! signed them, so a node that was cut off learns them when its fabric
//! syncs again.

use std::collections::{BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use locus_access::cert::NodeRole;
use locus_access::directory::{DirectoryError, SignedDirectoryEntry};
use locus_access::revocation::{Revocation, RevocationKind, Revoker, SignedRevocation};
use locus_access::tenant::TenantRef;
use locus_access::token::Claims;
use locus_access::trust::{PeerError, Trust, VerifiedPeer, cert_to_hex};
use locus_access::{
    Denied, DirectoryEntry, EnrollRequest, JoinGrant, Operation, OrgId, Principal, SignedOrgEntry,
    Subject, Tenant, User,
};
use locus_core::NodeId;
use locus_fabric::udp::FabricHandle;
use tokio::task::JoinHandle;

use crate::credentials::{CredentialsError, EnrollError, Enroller, Enrollment};

/// Record key of a node's certificate (hex).
pub const KEY_CERT: &str = "node/cert";
/// Prefix of the record keys of revocations.
pub const REVOCATION_PREFIX: &str = "access/revocation/";
/// Prefix of the record keys of grants.
pub const GRANT_PREFIX: &str = "access/grant/";
/// Records of the tenants and users of an org, signed by its key.
pub const DIRECTORY_PREFIX: &str = "access/dir/";
/// Most directory records kept until the org that signed them is known.
pub const MAX_PENDING_DIRECTORY: usize = 1024;
/// Prefix of the record keys of org log entries (`org/log/<seq>`): every
/// node publishes the entries it holds.
pub const ORG_LOG_PREFIX: &str = "org/log/";
/// Revocations kept until the certificate of their signer arrives.
pub const MAX_PENDING_REVOCATIONS: usize = 1024;
/// How often revocations past their `until` are forgotten.
const FORGET_EVERY: Duration = Duration::from_secs(60);

/// Why an act of access failed.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("this node does not hold the org key of org {0}: ask the node that founded the org")]
    NoOrgKey(OrgId),
    #[error(transparent)]
    Enroll(#[from] EnrollError),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error("cannot mint: {0}")]
    Mint(String),
    #[error("cannot publish: {0}")]
    Publish(String),
    #[error("revocation refused: {0}")]
    Revoke(String),
    #[error("{0}")]
    Admit(String),
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A node's access state.
pub struct Access {
    data_dir: PathBuf,
    key: SigningKey,
    /// This node's org and certificate (hex), fixed for its life: read
    /// on every call without taking the trust lock.
    org: OrgId,
    cert_hex: String,
    trust: Mutex<Trust>,
    enroller: Option<Enroller>,
    fabric: FabricHandle,
    admin_token: Option<PathBuf>,
    /// Where a join token sends new nodes.
    api_addr: String,
    gossip_addr: String,
    cluster_key: Option<[u8; 32]>,
    pending: Mutex<VecDeque<SignedRevocation>>,
    /// Directory records of orgs this node has not seen admitted yet.
    pending_directory: Mutex<VecDeque<SignedDirectoryEntry>>,
    require_tokens: bool,
    public_metrics: bool,
}

/// What a node hands its [`Access`] at start.
pub struct AccessSetup {
    /// The data dir, where the org log is saved as it grows.
    pub data_dir: PathBuf,
    /// This node's key.
    pub key: SigningKey,
    /// What this node trusts at start (its certificate and org log).
    pub trust: Trust,
    /// Present on a node that holds its org's key.
    pub enroller: Option<Enroller>,
    pub fabric: FabricHandle,
    /// Where this node keeps the admin token it minted, if it did.
    pub admin_token: Option<PathBuf>,
    /// Where a join token sends new nodes to enroll and to gossip.
    pub api_addr: String,
    pub gossip_addr: String,
    /// The cluster key a join token carries.
    pub cluster_key: Option<[u8; 32]>,
    /// `[access] require_tokens`.
    pub require_tokens: bool,
    /// `[access] public_metrics`.
    pub public_metrics: bool,
}

impl Access {
    pub fn new(setup: AccessSetup) -> Access {
        let AccessSetup {
            data_dir,
            key,
            trust,
            enroller,
            fabric,
            admin_token,
            api_addr,
            gossip_addr,
            cluster_key,
            require_tokens,
            public_metrics,
        } = setup;
        Access {
            data_dir,
            key,
            org: trust.org(),
            cert_hex: cert_to_hex(trust.certificate()),
            trust: Mutex::new(trust),
            enroller,
            fabric,
            admin_token,
            api_addr,
            gossip_addr,
            cluster_key,
            pending: Mutex::new(VecDeque::new()),
            pending_directory: Mutex::new(VecDeque::new()),
            require_tokens,
            public_metrics,
        }
    }

    /// The TLS configuration of this node's API: its certificate made of
    /// the node key, carrying its node certificate.
    pub fn tls_server_config(
        &self,
        names: &[String],
    ) -> Result<rustls::ServerConfig, crate::tls::TlsError> {
        crate::tls::server_config(&self.key, &self.cert_hex, names)
    }

    /// This node's public key (what `--pin node:<hex>` names).
    pub fn node_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// Whether `/metrics` answers without a token (`[access] public_metrics`).
    pub fn public_metrics(&self) -> bool {
        self.public_metrics
    }

    /// Whether user calls need a token (`[access] require_tokens`).
    pub fn requires_tokens(&self) -> bool {
        self.require_tokens
    }

    /// The local org admin, whom a call without a token speaks for when
    /// tokens are not required.
    pub fn local_admin(&self) -> Principal {
        let org = self.org();
        Principal {
            user: locus_access::UserName::try_from(crate::credentials::LOCAL_ADMIN.to_owned())
                .unwrap_or_else(|_| unreachable!()),
            tenant: TenantRef::new(org, crate::credentials::default_tenant()),
            role: locus_access::Role::OrgAdmin,
            issuer: NodeId::from_public_key(&self.key.verifying_key()),
            revocation_ids: Vec::new(),
        }
    }

    fn trust(&self) -> std::sync::MutexGuard<'_, Trust> {
        self.trust.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This node's org.
    pub fn org(&self) -> OrgId {
        self.org
    }

    /// The local admin credential's file, on the founding node.
    pub fn admin_token(&self) -> Option<&PathBuf> {
        self.admin_token.as_ref()
    }

    /// Whether this node holds the org key.
    pub fn holds_org_key(&self) -> bool {
        self.enroller.is_some()
    }

    /// The org log this node holds.
    pub fn org_log(&self) -> Vec<SignedOrgEntry> {
        self.trust().org_log().entries().to_vec()
    }

    /// Authorize `token` for `operation` on this node, now.
    pub fn authorize(
        &self,
        token: &str,
        operation: Operation,
        resource_tenant: Option<&TenantRef>,
    ) -> Result<Principal, Denied> {
        self.trust()
            .authorize(token, operation, resource_tenant, now())
    }

    /// Whether `node` is a node of an admitted org, now.
    pub fn peer(&self, node: NodeId) -> Result<VerifiedPeer, PeerError> {
        self.trust().peer(node, now())
    }

    /// [`Access::peer`], or the certificate `node`'s call carries when
    /// the fabric has not brought its own yet.
    pub fn peer_or_carried(
        &self,
        node: NodeId,
        carried: Option<&str>,
    ) -> Result<VerifiedPeer, PeerError> {
        self.trust().peer_or_carried(node, carried, now())
    }

    /// Mint a token for `claims` with this node's key, carrying this
    /// node's certificate so that any node of an org that admitted ours
    /// checks it offline, even before the fabric told it about this node.
    pub fn mint(&self, claims: &Claims) -> Result<String, AccessError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| AccessError::Mint(e.to_string()))?;
        locus_access::token::mint_with_cert(&self.key, &self.cert_hex, claims, seed)
            .map_err(|e| AccessError::Mint(e.to_string()))
    }

    /// Narrow `token` to `node` and `operation` (a forwarded call),
    /// offline.
    pub fn narrow_for(
        &self,
        token: &str,
        node: NodeId,
        operation: Operation,
    ) -> Result<String, AccessError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| AccessError::Mint(e.to_string()))?;
        let narrowing = locus_access::Narrowing {
            node: Some(node),
            operation: Some(operation),
            ..Default::default()
        };
        locus_access::attenuate(token, &narrowing, seed)
            .map_err(|e| AccessError::Mint(e.to_string()))
    }

    /// Revoke `kind` until `until` (`None`: for good): sign it (with the
    /// org key for a certificate, else this node's key), take it here and
    /// publish it for every node.
    pub async fn revoke(
        &self,
        kind: RevocationKind,
        until: Option<u64>,
    ) -> Result<SignedRevocation, AccessError> {
        let org = self.org();
        let (by, key) = match (&kind, &self.enroller) {
            (RevocationKind::NodeCert { .. }, Some(e)) => (Revoker::Org(org), e.org_key()),
            (RevocationKind::NodeCert { .. }, None) => return Err(AccessError::NoOrgKey(org)),
            (_, _) => (
                Revoker::Node(NodeId::from_public_key(&self.key.verifying_key())),
                &self.key,
            ),
        };
        let signed = Revocation {
            kind,
            by,
            at: now(),
            until,
        }
        .sign(key);
        self.trust()
            .revoke(&signed, now())
            .map_err(|e| AccessError::Revoke(e.to_string()))?;
        let bytes = signed.to_bytes();
        let id = blake3::hash(&bytes);
        let record = format!(
            "{REVOCATION_PREFIX}{}",
            locus_core::hex(&id.as_bytes()[..12])
        );
        self.fabric
            .publish(&record, Some(bytes))
            .await
            .map_err(|e| AccessError::Publish(e.to_string()))?;
        Ok(signed)
    }

    /// A join token for `uses` machines valid `ttl_secs`, when this node
    /// holds the org key.
    pub fn join_token(
        &self,
        uses: u32,
        ttl_secs: u64,
        roles: BTreeSet<NodeRole>,
    ) -> Result<(String, JoinGrant), AccessError> {
        let enroller = self
            .enroller
            .as_ref()
            .ok_or(AccessError::NoOrgKey(self.org()))?;
        Ok(enroller.grant(
            uses,
            ttl_secs,
            roles,
            self.api_addr.clone(),
            self.gossip_addr.clone(),
            self.cluster_key,
        )?)
    }

    /// Enroll a node that presents a join token.
    pub fn enroll(&self, request: &EnrollRequest) -> Result<Enrollment, AccessError> {
        let enroller = self
            .enroller
            .as_ref()
            .ok_or(AccessError::NoOrgKey(self.org()))?;
        let log = self.trust().org_log().clone();
        Ok(enroller.enroll(request, &log)?)
    }

    /// Admit the org holding `org_key` as `name` into this org's log
    /// (this node must hold the org key), keep and publish the entry.
    pub async fn admit(
        &self,
        org_key: &ed25519_dalek::VerifyingKey,
        name: &str,
    ) -> Result<SignedOrgEntry, AccessError> {
        let enroller = self
            .enroller
            .as_ref()
            .ok_or(AccessError::NoOrgKey(self.org()))?;
        let entry = {
            let mut trust = self.trust();
            let mut log = trust.org_log().clone();
            let entry = log
                .admit(enroller.org_key(), org_key, name)
                .map_err(|e| AccessError::Admit(e.to_string()))?
                .clone();
            trust
                .merge_log(log.entries())
                .map_err(|e| AccessError::Admit(e.to_string()))?;
            crate::credentials::save_log(&self.data_dir, trust.org_log())?;
            entry
        };
        self.publish_entry(&entry).await?;
        Ok(entry)
    }

    async fn publish_entry(&self, entry: &SignedOrgEntry) -> Result<(), AccessError> {
        self.fabric
            .publish(
                &format!("{ORG_LOG_PREFIX}{}", entry.entry.seq),
                Some(entry.to_bytes()),
            )
            .await
            .map(|_| ())
            .map_err(|e| AccessError::Publish(e.to_string()))
    }

    /// Let `tenant` (of another org) use this node, or every node of the
    /// org with `all_nodes`, until `until`: signed with the org key (this
    /// node must hold it), taken here and published.
    pub async fn grant(
        &self,
        tenant: TenantRef,
        node: Option<NodeId>,
        until: Option<u64>,
    ) -> Result<locus_access::grant::SignedNodeGrant, AccessError> {
        let enroller = self
            .enroller
            .as_ref()
            .ok_or(AccessError::NoOrgKey(self.org()))?;
        let signed = locus_access::grant::NodeGrant {
            org: self.org(),
            tenant,
            node,
            at: now(),
            until,
        }
        .sign(enroller.org_key());
        self.trust()
            .take_grant(&signed)
            .map_err(|e| AccessError::Admit(e.to_string()))?;
        let bytes = signed.to_bytes();
        let id = blake3::hash(&bytes);
        self.fabric
            .publish(
                &format!("{GRANT_PREFIX}{}", locus_core::hex(&id.as_bytes()[..12])),
                Some(bytes),
            )
            .await
            .map_err(|e| AccessError::Publish(e.to_string()))?;
        Ok(signed)
    }

    /// Write a version of a tenant or user of this node's org (this node
    /// must hold the org key) and spread it.
    pub async fn put_directory(
        &self,
        subject: Subject,
        removed: bool,
    ) -> Result<SignedDirectoryEntry, AccessError> {
        let enroller = self
            .enroller
            .as_ref()
            .ok_or(AccessError::NoOrgKey(self.org()))?;
        if subject.org() != self.org() {
            return Err(AccessError::Admit(format!(
                "org {} signs only its own tenants and users, not org {}'s",
                self.org(),
                subject.org()
            )));
        }
        // Later than the version it replaces, even within one second.
        let at = match self.trust().directory().newest_at(&subject) {
            Some(last) => now().max(last + 1),
            None => now(),
        };
        let entry = DirectoryEntry {
            subject,
            at,
            removed,
        };
        let name = entry.record_name();
        let signed = entry.sign(enroller.org_key());
        self.trust()
            .take_directory_entry(&signed)
            .map_err(|e| AccessError::Admit(e.to_string()))?;
        self.fabric
            .publish(
                &format!("{DIRECTORY_PREFIX}{name}"),
                Some(signed.to_bytes()),
            )
            .await
            .map_err(|e| AccessError::Publish(e.to_string()))?;
        Ok(signed)
    }

    /// The tenants of every admitted org this node knows of.
    pub fn tenants(&self) -> Vec<Tenant> {
        self.trust().directory().tenants().cloned().collect()
    }

    /// The users of every admitted org this node knows of.
    pub fn users(&self) -> Vec<User> {
        self.trust().directory().users().cloned().collect()
    }

    /// User `name` of `tenant`, unless removed.
    pub fn user(&self, tenant: &TenantRef, name: &locus_access::UserName) -> Option<User> {
        self.trust().directory().user(tenant, name).cloned()
    }

    /// Tenant `tenant` as its record says, or with no quota and the
    /// default grant when its org wrote none.
    pub fn tenant(&self, tenant: &TenantRef) -> (Tenant, bool) {
        match self.trust().directory().tenant(tenant) {
            Some(t) => (t.clone(), true),
            None => (
                Tenant {
                    name: tenant.name.clone(),
                    org: tenant.org,
                    quota: Default::default(),
                    grant: Default::default(),
                },
                false,
            ),
        }
    }

    /// The tenants of other orgs granted use of this node.
    pub fn granted(&self) -> Vec<TenantRef> {
        self.trust().granted().iter().cloned().collect()
    }

    /// Take a record event of the fabric: a certificate, a revocation, a
    /// grant or an entry of the org log.
    fn take(&self, owner: NodeId, key: &str, value: Option<&[u8]>) {
        if key.starts_with(ORG_LOG_PREFIX)
            && let Some(bytes) = value
        {
            self.take_entry(bytes);
            return;
        }
        if key.starts_with(GRANT_PREFIX)
            && let Some(bytes) = value
        {
            match locus_access::grant::SignedNodeGrant::from_bytes(bytes) {
                Ok(g) => match self.trust().take_grant(&g) {
                    Ok(true) => tracing::info!(tenant = %g.grant.tenant, "grant taken"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(%owner, error = %e, "grant refused"),
                },
                Err(e) => tracing::warn!(%owner, error = %e, "undecodable grant record"),
            }
            return;
        }
        if key.starts_with(DIRECTORY_PREFIX)
            && let Some(bytes) = value
        {
            match SignedDirectoryEntry::from_bytes(bytes) {
                Ok(signed) => self.take_directory(signed),
                Err(e) => tracing::warn!(%owner, error = %e, "undecodable directory record"),
            }
            return;
        }
        if key == KEY_CERT {
            let text = value
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::to_owned);
            self.trust().set_published(owner, text);
            self.retry_pending();
        } else if key.starts_with(REVOCATION_PREFIX)
            && let Some(bytes) = value
        {
            match SignedRevocation::from_bytes(bytes) {
                Ok(signed) => self.apply(signed),
                Err(e) => tracing::warn!(%owner, error = %e, "undecodable revocation record"),
            }
        }
    }

    fn take_entry(&self, bytes: &[u8]) {
        let Ok(entry) = SignedOrgEntry::from_bytes(bytes) else {
            return;
        };
        let mut trust = self.trust();
        match trust.take_log_entry(entry.clone()) {
            Ok(true) => {
                tracing::info!(org = %entry.entry.org, name = %entry.entry.name, "org admitted");
                if let Err(e) = crate::credentials::save_log(&self.data_dir, trust.org_log()) {
                    tracing::warn!(error = %e, "cannot keep the org log");
                }
                drop(trust);
                self.retry_pending_directory();
                // Hold it out for the others too.
                let me = self.fabric.clone();
                tokio::spawn(async move {
                    let _ = me
                        .publish(
                            &format!("{ORG_LOG_PREFIX}{}", entry.entry.seq),
                            Some(entry.to_bytes()),
                        )
                        .await;
                });
            }
            Ok(false) => {}
            // Another org's log, or an entry ahead of a gap: not ours now.
            Err(e) => tracing::debug!(error = %e, "org log entry not taken"),
        }
    }

    fn take_directory(&self, signed: SignedDirectoryEntry) {
        let taken = self.trust().take_directory_entry(&signed);
        match taken {
            Ok(_) => {}
            Err(DirectoryError::UnknownOrg(org)) => {
                tracing::debug!(%org, "directory record kept until its org is admitted");
                let mut pending = self
                    .pending_directory
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if pending.len() >= MAX_PENDING_DIRECTORY {
                    pending.pop_front();
                }
                pending.push_back(signed);
            }
            Err(e) => tracing::warn!(error = %e, "directory record refused"),
        }
    }

    fn retry_pending_directory(&self) {
        let waiting: Vec<_> = {
            let mut pending = self
                .pending_directory
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            pending.drain(..).collect()
        };
        for signed in waiting {
            self.take_directory(signed);
        }
    }

    fn apply(&self, signed: SignedRevocation) {
        match self.trust().revoke(&signed, now()) {
            Ok(true) => tracing::info!(kind = ?signed.revocation.kind, "revocation taken"),
            Ok(false) => {}
            Err(e) => {
                tracing::debug!(error = %e, "revocation kept until its signer is known");
                let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                if pending.len() >= MAX_PENDING_REVOCATIONS {
                    pending.pop_front();
                }
                pending.push_back(signed);
            }
        }
    }

    fn retry_pending(&self) {
        let waiting: Vec<_> = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.drain(..).collect()
        };
        for signed in waiting {
            self.apply(signed);
        }
    }
}

impl locus_core::PeerTrust for Access {
    fn verdict(&self, node: NodeId) -> locus_core::PeerVerdict {
        if node == self.trust().me() {
            return locus_core::PeerVerdict::Trusted;
        }
        match self.peer(node) {
            Ok(_) => locus_core::PeerVerdict::Trusted,
            Err(PeerError::NoCertificate(_)) => locus_core::PeerVerdict::Unknown,
            Err(_) => locus_core::PeerVerdict::Refused,
        }
    }
}

/// Publish this node's certificate, then follow the fabric: every
/// certificate and revocation record, already there or to come.
pub async fn follow(access: Arc<Access>) -> Result<JoinHandle<()>, AccessError> {
    access
        .fabric
        .publish(KEY_CERT, Some(access.cert_hex.clone().into_bytes()))
        .await
        .map_err(|e| AccessError::Publish(e.to_string()))?;
    for entry in access.org_log() {
        access.publish_entry(&entry).await?;
    }
    let mut events = access.fabric.subscribe();
    Ok(tokio::spawn(async move {
        // What arrived before the subscription.
        for node in access.fabric.nodes().await {
            if let Ok(records) = access.fabric.records_of(node.id).await {
                for (key, _, value) in records {
                    access.take(node.id, &key, Some(&value));
                }
            }
        }
        let mut forget = tokio::time::interval(FORGET_EVERY);
        forget.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(e) => access.take(e.owner, &e.key, e.value.as_deref()),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "access fell behind the fabric; reading every record again");
                        for node in access.fabric.nodes().await {
                            if let Ok(records) = access.fabric.records_of(node.id).await {
                                for (key, _, value) in records {
                                    access.take(node.id, &key, Some(&value));
                                }
                            }
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = forget.tick() => {
                    access.trust().forget_expired(now());
                }
            }
        }
    }))
}

/// Market records are signed by this node on behalf of its org: the
/// party is the org's public key (from the org log) and the node's
/// certificate; the key never leaves `Access`.
impl locus_market::PartySigner for Access {
    fn party(&self) -> Option<locus_market::Party> {
        let trust = self.trust();
        let org_key = trust.org_log().orgs().key(&self.org)?;
        Some(locus_market::Party::new(
            org_key,
            trust.certificate().clone(),
        ))
    }

    fn sign(&self, domain: &[u8], body: &[u8]) -> [u8; 64] {
        locus_access::org::sign(&self.key, domain, body)
    }
}
