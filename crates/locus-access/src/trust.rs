//! What one node trusts: its own certificate, the org log it holds, the
//! revocations in force and the tenants its org granted, and from them
//! whether a peer (by the certificate it published) is a node of an
//! admitted org, and whether a token's issuer may issue.
//!
//! Plain data with a bounded cache of peer verdicts: the caller passes
//! `now` and holds it behind whatever lock it likes.

use std::collections::{BTreeSet, HashMap};

use ed25519_dalek::VerifyingKey;
use locus_core::NodeId;

use crate::cert::{CertError, NodeRole, SignedNodeCertificate};
use crate::encoding;
use crate::org::OrgId;
use crate::orglog::{OrgLog, OrgLogError, SignedOrgEntry};
use crate::revocation::{
    RevocationError, RevocationKind, RevocationSet, Revoker, SignedRevocation,
};
use crate::tenant::TenantRef;
use crate::token::Issuer;

/// Most peer verdicts kept; the cache is emptied when full.
pub const MAX_CACHED_PEERS: usize = 4096;
/// Most authorization decisions kept; the cache is emptied when full.
pub const MAX_CACHED_DECISIONS: usize = 4096;
/// How long an allowed decision is reused (seconds), never past the
/// token's own expiry; any change of what the node trusts (a
/// certificate, the org log, a revocation, a grant) forgets them all.
pub const DECISION_SECS: u64 = 5;

/// A peer whose certificate chains to an admitted org.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedPeer {
    pub node: NodeId,
    pub key: VerifyingKey,
    pub org: OrgId,
    pub roles: BTreeSet<NodeRole>,
    pub serial: u64,
    /// Unix seconds, excluded.
    pub not_after: u64,
}

/// Why a peer is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("node {0} published no certificate")]
    NoCertificate(NodeId),
    #[error("node {node}: {reason}")]
    BadCertificate { node: NodeId, reason: String },
    #[error("node {node} belongs to org {org}, which was never admitted to this cluster")]
    UnknownOrg { node: NodeId, org: OrgId },
    #[error("the certificate published for node {node} is node {actual}'s")]
    NotItsCertificate { node: NodeId, actual: NodeId },
    #[error("the certificate of node {node} (serial {serial}) is revoked")]
    Revoked { node: NodeId, serial: u64 },
    #[error("node {node} has no {role} role")]
    MissingRole { node: NodeId, role: NodeRole },
}

impl PeerError {
    /// A short label for counters and error codes.
    pub fn reason(&self) -> &'static str {
        match self {
            PeerError::NoCertificate(_) => "no_certificate",
            PeerError::BadCertificate { .. } | PeerError::NotItsCertificate { .. } => {
                "bad_certificate"
            }
            PeerError::UnknownOrg { .. } => "unknown_org",
            PeerError::Revoked { .. } => "revoked_certificate",
            PeerError::MissingRole { .. } => "missing_role",
        }
    }
}

/// Why a node cannot trust its own credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error("the org log: {0}")]
    Log(#[from] OrgLogError),
    #[error("this node's certificate: {0}")]
    OwnCertificate(String),
}

/// The text form of a certificate as nodes publish it: hex of its bytes.
pub fn cert_to_hex(cert: &SignedNodeCertificate) -> String {
    encoding::hex(&cert.to_bytes())
}

/// Read a published certificate.
pub fn cert_from_hex(text: &str) -> Result<SignedNodeCertificate, CertError> {
    let bytes = hex_bytes(text).ok_or_else(|| CertError::Malformed("not hex".into()))?;
    SignedNodeCertificate::from_bytes(&bytes)
}

/// The text form of a log entry: hex of its bytes.
pub fn entry_to_hex(entry: &SignedOrgEntry) -> String {
    encoding::hex(&entry.to_bytes())
}

/// Read a log entry from its text form.
pub fn entry_from_hex(text: &str) -> Result<SignedOrgEntry, OrgLogError> {
    let bytes = hex_bytes(text).ok_or_else(|| OrgLogError::Entry {
        index: 0,
        fault: crate::orglog::EntryFault::Malformed("not hex".into()),
    })?;
    SignedOrgEntry::from_bytes(&bytes)
}

fn hex_bytes(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 4 * crate::cert::MAX_CERT_BYTES {
        return None;
    }
    (0..text.len() / 2)
        .map(|i| {
            text.get(2 * i..2 * i + 2)
                .and_then(|d| u8::from_str_radix(d, 16).ok())
        })
        .collect()
}

/// One node's trust.
#[derive(Debug)]
pub struct Trust {
    own: Own,
    revoked: RevocationSet,
    granted: BTreeSet<TenantRef>,
    /// (until, tenant) of the grants that end.
    grant_until: BTreeSet<(u64, TenantRef)>,
    peers: Peers,
    /// The tenants and users of the admitted orgs.
    directory: crate::directory::Directory,
    /// Allowed decisions by BLAKE3 of (token, operation, resource tenant):
    /// the principal and until when (unix seconds, excluded) it holds.
    decisions: HashMap<[u8; 32], (crate::Principal, u64)>,
}

/// This node's own credentials.
#[derive(Debug)]
struct Own {
    me: NodeId,
    key: VerifyingKey,
    cert: SignedNodeCertificate,
    log: OrgLog,
}

/// What peers published, and the verdicts on it.
#[derive(Debug, Default)]
struct Peers {
    /// Certificates as peers published them (hex), at most
    /// [`MAX_CACHED_PEERS`].
    published: HashMap<NodeId, String>,
    /// Verdicts by node, with the certificate text they were made from.
    verdicts: HashMap<NodeId, (String, Result<VerifiedPeer, PeerError>)>,
}

impl Trust {
    /// The trust of the node holding `key`, enrolled by `cert`, knowing
    /// `log`: the certificate must chain to an org of the log at `now`.
    pub fn new(
        key: VerifyingKey,
        cert: SignedNodeCertificate,
        log: OrgLog,
        now: u64,
    ) -> Result<Trust, TrustError> {
        let me = NodeId::from_public_key(&key);
        let org_key = log.orgs().key(&cert.cert.org).ok_or_else(|| {
            TrustError::OwnCertificate(format!(
                "it names org {}, which the org log does not admit",
                cert.cert.org
            ))
        })?;
        let node_key = cert
            .verify(org_key, now)
            .map_err(|e| TrustError::OwnCertificate(e.to_string()))?;
        if node_key != key {
            return Err(TrustError::OwnCertificate(format!(
                "it is node {}'s, not this node's ({me})",
                cert.cert.node
            )));
        }
        Ok(Trust {
            own: Own { me, key, cert, log },
            revoked: RevocationSet::new(),
            granted: BTreeSet::new(),
            grant_until: BTreeSet::new(),
            peers: Peers::default(),
            directory: Default::default(),
            decisions: HashMap::new(),
        })
    }

    /// This node.
    pub fn me(&self) -> NodeId {
        self.own.me
    }

    /// This node's org.
    pub fn org(&self) -> OrgId {
        self.own.cert.cert.org
    }

    /// This node's certificate.
    pub fn certificate(&self) -> &SignedNodeCertificate {
        &self.own.cert
    }

    /// The org log this node holds.
    pub fn org_log(&self) -> &OrgLog {
        &self.own.log
    }

    /// Tenants of other orgs this node's org granted use of this node.
    pub fn granted(&self) -> &BTreeSet<TenantRef> {
        &self.granted
    }

    /// The tenants and users of the admitted orgs.
    pub fn directory(&self) -> &crate::directory::Directory {
        &self.directory
    }

    /// Take a tenant or user record signed by its org, which must be
    /// admitted; answers whether it changed the directory.
    pub fn take_directory_entry(
        &mut self,
        signed: &crate::directory::SignedDirectoryEntry,
    ) -> Result<bool, crate::directory::DirectoryError> {
        let org = signed.entry.subject.org();
        let key = self.own.log.orgs().key(&org);
        self.directory.take(signed, key)
    }

    /// The revocations in force.
    pub fn revocations(&self) -> &RevocationSet {
        &self.revoked
    }

    /// What node `node` published as its certificate (hex), or that it
    /// published none (`None`: it left, or withdrew it).
    pub fn set_published(&mut self, node: NodeId, cert: Option<String>) {
        self.decisions.clear();
        let peers = &mut self.peers;
        peers.verdicts.remove(&node);
        match cert {
            Some(text) => {
                if peers.published.len() >= MAX_CACHED_PEERS && !peers.published.contains_key(&node)
                {
                    return;
                }
                peers.published.insert(node, text);
            }
            None => {
                peers.published.remove(&node);
            }
        }
    }

    /// Take one entry of the org log from the fabric: appended when it is
    /// the next one of this node's log (answers true), ignored when this
    /// log holds it already (false); an entry of another org's log, or
    /// one that does not chain, is an error and changes nothing.
    pub fn take_log_entry(&mut self, entry: SignedOrgEntry) -> Result<bool, OrgLogError> {
        let seq = entry.entry.seq as usize;
        let held = self.own.log.entries();
        if seq < held.len() {
            return if held[seq] == entry {
                Ok(false)
            } else {
                Err(OrgLogError::Fork { seq: seq as u64 })
            };
        }
        let mut longer = held.to_vec();
        longer.push(entry);
        self.merge_log(&longer).map(|n| n > 0)
    }

    /// Take a grant of this node's org that names this node or all of the
    /// org's nodes; answers whether it applies here.
    pub fn take_grant(
        &mut self,
        signed: &crate::grant::SignedNodeGrant,
    ) -> Result<bool, crate::grant::GrantRecordError> {
        let org = self.org();
        let Some(key) = self.own.log.orgs().key(&org) else {
            return Ok(false);
        };
        if signed.grant.org != org {
            return Ok(false);
        }
        let grant = signed.verify(key)?;
        if grant.node.is_some_and(|n| n != self.own.me) {
            return Ok(false);
        }
        if self.granted.len() >= crate::grant::MAX_GRANTS && !self.granted.contains(&grant.tenant) {
            return Ok(false);
        }
        self.granted.insert(grant.tenant.clone());
        self.decisions.clear();
        if let Some(until) = grant.until {
            self.grant_until.insert((until, grant.tenant.clone()));
        }
        Ok(true)
    }

    /// Add the entries of a longer log that extends this one; answers how
    /// many were new. Verdicts are made again afterwards.
    pub fn merge_log(&mut self, entries: &[SignedOrgEntry]) -> Result<usize, OrgLogError> {
        let added = self.own.log.merge(entries)?;
        if added > 0 {
            self.peers.verdicts.clear();
            self.decisions.clear();
        }
        Ok(added)
    }

    /// Add a signed revocation, answering whether it was new. An org key
    /// of the log may revoke anything; a node of an admitted org (which
    /// published `revoker_cert`) may revoke tokens, and users of its own
    /// org, never certificates.
    pub fn revoke(&mut self, signed: &SignedRevocation, now: u64) -> Result<bool, RevokeError> {
        let by = signed.revocation.by;
        let key = match by {
            Revoker::Org(org) => *self
                .own
                .log
                .orgs()
                .key(&org)
                .ok_or(RevokeError::UnknownRevoker(by))?,
            Revoker::Node(node) => {
                let peer = self
                    .peer(node, now)
                    .map_err(|e| RevokeError::Revoker(e.to_string()))?;
                match &signed.revocation.kind {
                    RevocationKind::Token { .. } => {}
                    RevocationKind::User { tenant, .. } if tenant.org == peer.org => {}
                    _ => return Err(RevokeError::NotItsToRevoke(by)),
                }
                peer.key
            }
        };
        let revocation = signed.verify(&key).map_err(RevokeError::Invalid)?;
        let new = self
            .revoked
            .insert(revocation)
            .map_err(RevokeError::Invalid)?;
        if new {
            self.peers.verdicts.clear();
            self.decisions.clear();
        }
        Ok(new)
    }

    /// Forget revocations past their `until`.
    pub fn forget_expired(&mut self, now: u64) -> usize {
        while let Some((until, tenant)) = self.grant_until.first().cloned() {
            if until > now {
                break;
            }
            self.grant_until.pop_first();
            self.granted.remove(&tenant);
            self.decisions.clear();
        }
        self.revoked.forget_expired(now)
    }

    /// Whether node `node`, by the certificate it published, is a node of
    /// an admitted org, at `now`.
    pub fn peer(&mut self, node: NodeId, now: u64) -> Result<VerifiedPeer, PeerError> {
        self.peers.peer(&self.own, &self.revoked, node, now)
    }

    /// [`Trust::peer`], or, when the fabric has not brought `node`'s
    /// certificate yet, the one its call carries (checked the same way).
    pub fn peer_or_carried(
        &mut self,
        node: NodeId,
        carried: Option<&str>,
        now: u64,
    ) -> Result<VerifiedPeer, PeerError> {
        self.peers
            .peer_or_carried(&self.own, &self.revoked, node, carried, now)
    }

    /// The issuer a token authorizer needs, when `node` may issue tokens.
    pub fn issuer(&mut self, node: NodeId, now: u64) -> Result<Issuer, PeerError> {
        issuer_of(self.peer(node, now)?)
    }

    /// Authorize a request for `operation` on a record of
    /// `resource_tenant` (`None`: the token's own tenant) answered by this
    /// node at `now`: the token's issuer must be a node of an admitted org
    /// with the issuer role, and neither the token nor its user revoked.
    pub fn authorize(
        &mut self,
        token: &str,
        operation: crate::Operation,
        resource_tenant: Option<&TenantRef>,
        now: u64,
    ) -> Result<crate::Principal, crate::Denied> {
        let key = {
            let mut h = blake3::Hasher::new();
            h.update(token.as_bytes());
            h.update(&[0]);
            h.update(operation.name().as_bytes());
            if let Some(t) = resource_tenant {
                h.update(&[0]);
                h.update(t.to_string().as_bytes());
            }
            *h.finalize().as_bytes()
        };
        if let Some((principal, until)) = self.decisions.get(&key)
            && now < *until
        {
            return Ok(principal.clone());
        }
        let decided = self.decide(token, operation, resource_tenant, now);
        if let Ok(principal) = &decided {
            let expires = crate::inspect(token).map_or(now, |i| i.effective_expires_at);
            let until = expires.min(now.saturating_add(DECISION_SECS));
            if until > now {
                if self.decisions.len() >= MAX_CACHED_DECISIONS {
                    self.decisions.clear();
                }
                self.decisions.insert(key, (principal.clone(), until));
            }
        }
        decided
    }

    fn decide(
        &mut self,
        token: &str,
        operation: crate::Operation,
        resource_tenant: Option<&TenantRef>,
        now: u64,
    ) -> Result<crate::Principal, crate::Denied> {
        let Trust {
            own,
            revoked,
            granted,
            peers,
            ..
        } = self;
        let req = crate::Request {
            operation,
            resource_tenant,
            target_node: own.me,
            node_org: own.cert.cert.org,
            granted_tenants: granted,
            now,
        };
        crate::authorize(
            token,
            |n, cert| {
                peers
                    .peer_or_carried(own, revoked, *n, cert, now)
                    .and_then(issuer_of)
                    .ok()
            },
            &req,
            revoked,
        )
    }
}

fn issuer_of(peer: VerifiedPeer) -> Result<Issuer, PeerError> {
    if !peer.roles.contains(&NodeRole::Issuer) {
        return Err(PeerError::MissingRole {
            node: peer.node,
            role: NodeRole::Issuer,
        });
    }
    Ok(Issuer {
        key: peer.key.to_bytes(),
        org: peer.org,
    })
}

impl Peers {
    /// [`Peers::peer`], or, when the node published no certificate this
    /// node holds, the one a token carries (checked the same way).
    fn peer_or_carried(
        &mut self,
        own: &Own,
        revoked: &RevocationSet,
        node: NodeId,
        carried: Option<&str>,
        now: u64,
    ) -> Result<VerifiedPeer, PeerError> {
        match (self.peer(own, revoked, node, now), carried) {
            (Err(PeerError::NoCertificate(_)), Some(text)) => judge(own, revoked, node, text, now),
            (verdict, _) => verdict,
        }
    }

    fn peer(
        &mut self,
        own: &Own,
        revoked: &RevocationSet,
        node: NodeId,
        now: u64,
    ) -> Result<VerifiedPeer, PeerError> {
        if node == own.me {
            let c = &own.cert.cert;
            return Ok(VerifiedPeer {
                node,
                key: own.key,
                org: c.org,
                roles: c.roles.clone(),
                serial: c.serial,
                not_after: c.not_after,
            });
        }
        let Some(text) = self.published.get(&node) else {
            return Err(PeerError::NoCertificate(node));
        };
        if let Some((seen, verdict)) = self.verdicts.get(&node)
            && seen == text
        {
            // A cached yes still ends with its certificate.
            match verdict {
                Ok(p) if now < p.not_after => return Ok(p.clone()),
                Err(e) => return Err(e.clone()),
                Ok(_) => {}
            }
        }
        let text = text.clone();
        let verdict = judge(own, revoked, node, &text, now);
        if self.verdicts.len() >= MAX_CACHED_PEERS {
            self.verdicts.clear();
        }
        self.verdicts.insert(node, (text, verdict.clone()));
        verdict
    }
}

fn judge(
    own: &Own,
    revoked: &RevocationSet,
    node: NodeId,
    text: &str,
    now: u64,
) -> Result<VerifiedPeer, PeerError> {
    let bad = |reason: String| PeerError::BadCertificate { node, reason };
    let signed = cert_from_hex(text).map_err(|e| bad(e.to_string()))?;
    let c = &signed.cert;
    if c.node != node {
        return Err(PeerError::NotItsCertificate {
            node,
            actual: c.node,
        });
    }
    let org_key = own
        .log
        .orgs()
        .key(&c.org)
        .ok_or(PeerError::UnknownOrg { node, org: c.org })?;
    let key = signed
        .verify(org_key, now)
        .map_err(|e| bad(e.to_string()))?;
    if revoked.is_cert_revoked(node, c.serial) {
        return Err(PeerError::Revoked {
            node,
            serial: c.serial,
        });
    }
    Ok(VerifiedPeer {
        node,
        key,
        org: c.org,
        roles: c.roles.clone(),
        serial: c.serial,
        not_after: c.not_after,
    })
}

/// Why a revocation is not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevokeError {
    #[error("{0}")]
    Invalid(RevocationError),
    #[error("revocation signed by {0:?}, which is not an org of the log")]
    UnknownRevoker(Revoker),
    #[error("revocation signed by a node that is not trusted: {0}")]
    Revoker(String),
    #[error("{0:?} may not revoke this: only its org key may")]
    NotItsToRevoke(Revoker),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::NodeCertificate;
    use ed25519_dalek::SigningKey;

    fn org_key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn node_key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[100 + n; 32])
    }

    fn cert(org: &SigningKey, node: &SigningKey, roles: &[NodeRole]) -> SignedNodeCertificate {
        NodeCertificate::new(
            &node.verifying_key(),
            OrgId::from_public_key(&org.verifying_key()),
            roles.iter().copied().collect(),
            1,
            0,
            1_000,
        )
        .sign(org)
    }

    fn trust() -> Trust {
        let log = OrgLog::genesis(&org_key(1), "one").unwrap();
        Trust::new(
            node_key(0).verifying_key(),
            cert(&org_key(1), &node_key(0), &NodeRole::ALL),
            log,
            10,
        )
        .unwrap()
    }

    /// Claims of user `ann` of tenant `acme` of `t`'s org, until 100.
    fn ann(t: &Trust, role: crate::Role) -> crate::Claims {
        crate::Claims {
            user: crate::UserName::try_from("ann".to_owned()).unwrap(),
            tenant: TenantRef::new(
                t.org(),
                crate::tenant::TenantName::try_from("acme".to_owned()).unwrap(),
            ),
            role,
            expires_at: 100,
        }
    }

    fn id(k: &SigningKey) -> NodeId {
        NodeId::from_public_key(&k.verifying_key())
    }

    #[test]
    fn a_node_of_the_org_is_trusted_and_one_of_an_unknown_org_is_not() {
        let mut t = trust();
        let peer = cert_to_hex(&cert(&org_key(1), &node_key(1), &[NodeRole::Worker]));
        t.set_published(id(&node_key(1)), Some(peer));
        let ok = t.peer(id(&node_key(1)), 10).unwrap();
        assert_eq!(ok.org, t.org());
        assert_eq!(
            t.issuer(id(&node_key(1)), 10),
            Err(PeerError::MissingRole {
                node: id(&node_key(1)),
                role: NodeRole::Issuer
            })
        );
        let stranger = cert_to_hex(&cert(&org_key(2), &node_key(2), &NodeRole::ALL));
        t.set_published(id(&node_key(2)), Some(stranger));
        let err = t.peer(id(&node_key(2)), 10).unwrap_err();
        assert_eq!(err.reason(), "unknown_org");
        // Once admitted, it is.
        let mut log = t.org_log().clone();
        log.admit(&org_key(1), &org_key(2).verifying_key(), "two")
            .unwrap();
        assert_eq!(t.merge_log(log.entries()).unwrap(), 1);
        t.issuer(id(&node_key(2)), 10).unwrap();
    }

    #[test]
    fn a_certificate_published_for_another_node_expired_or_absent_is_refused() {
        let mut t = trust();
        let peer = cert_to_hex(&cert(&org_key(1), &node_key(1), &[NodeRole::Worker]));
        t.set_published(id(&node_key(3)), Some(peer.clone()));
        assert_eq!(
            t.peer(id(&node_key(3)), 10).unwrap_err().reason(),
            "bad_certificate"
        );
        t.set_published(id(&node_key(1)), Some(peer));
        assert_eq!(
            t.peer(id(&node_key(1)), 2_000).unwrap_err().reason(),
            "bad_certificate"
        );
        assert_eq!(
            t.peer(id(&node_key(4)), 10).unwrap_err().reason(),
            "no_certificate"
        );
        t.set_published(id(&node_key(1)), Some("zz".into()));
        assert!(t.peer(id(&node_key(1)), 10).is_err());
    }

    #[test]
    fn a_revoked_certificate_or_token_is_refused_and_only_its_org_revokes_a_certificate() {
        use crate::revocation::Revocation;
        let mut t = trust();
        let peer = cert_to_hex(&cert(&org_key(1), &node_key(1), &NodeRole::ALL));
        t.set_published(id(&node_key(1)), Some(peer));
        t.peer(id(&node_key(1)), 10).unwrap();
        let kind = RevocationKind::NodeCert {
            node: id(&node_key(1)),
            serial: 1,
        };
        let by_node = Revocation {
            kind: kind.clone(),
            by: Revoker::Node(id(&node_key(1))),
            at: 10,
            until: None,
        }
        .sign(&node_key(1));
        assert!(matches!(
            t.revoke(&by_node, 10),
            Err(RevokeError::NotItsToRevoke(_))
        ));
        let by_org = Revocation {
            kind,
            by: Revoker::Org(t.org()),
            at: 10,
            until: None,
        }
        .sign(&org_key(1));
        assert_eq!(t.revoke(&by_org, 10), Ok(true));
        assert_eq!(t.revoke(&by_org, 10), Ok(false));
        assert_eq!(
            t.peer(id(&node_key(1)), 10).unwrap_err().reason(),
            "revoked_certificate"
        );
        let token = Revocation {
            kind: RevocationKind::Token { id: vec![1; 64] },
            by: Revoker::Node(id(&node_key(0))),
            at: 10,
            until: Some(20),
        }
        .sign(&node_key(0));
        assert_eq!(t.revoke(&token, 10), Ok(true));
        assert!(t.revocations().is_token_revoked(&[vec![1; 64]]));
        assert_eq!(t.forget_expired(20), 1);
    }

    #[test]
    fn log_entries_and_grants_from_the_fabric_are_taken_only_when_they_are_ours() {
        let mut t = trust();
        // An admission by this org: the next entry.
        let mut log = t.org_log().clone();
        log.admit(&org_key(1), &org_key(2).verifying_key(), "two")
            .unwrap();
        let entry = log.entries()[1].clone();
        assert_eq!(t.take_log_entry(entry.clone()), Ok(true));
        assert_eq!(t.take_log_entry(entry), Ok(false));
        // Another org's log (its own genesis) is not ours.
        let theirs = OrgLog::genesis(&org_key(3), "three").unwrap();
        assert!(t.take_log_entry(theirs.entries()[0].clone()).is_err());
        assert_eq!(t.org_log().len(), 2);
        // A grant of this org to a tenant of org two, for every node.
        let tenant = TenantRef::new(
            OrgId::from_public_key(&org_key(2).verifying_key()),
            crate::tenant::TenantName::try_from("acme".to_owned()).unwrap(),
        );
        let org = t.org();
        let me = t.me();
        let grant = |node: Option<NodeId>, until: Option<u64>| crate::grant::NodeGrant {
            org,
            tenant: tenant.clone(),
            node,
            at: 1,
            until,
        };
        let elsewhere = grant(Some(id(&node_key(9))), None).sign(&org_key(1));
        assert_eq!(t.take_grant(&elsewhere), Ok(false));
        let forged = grant(None, None).sign(&org_key(2));
        assert!(t.take_grant(&forged).is_err());
        assert!(t.granted().is_empty());
        let here = grant(Some(me), Some(50)).sign(&org_key(1));
        assert_eq!(t.take_grant(&here), Ok(true));
        assert!(t.granted().contains(&tenant));
        t.forget_expired(50);
        assert!(t.granted().is_empty());
    }

    #[test]
    fn an_allowed_decision_is_reused_until_a_revocation_or_its_time() {
        use crate::revocation::Revocation;
        let mut t = trust();
        let claims = ann(&t, crate::Role::Operator);
        let token = crate::mint(&node_key(0), &claims, [9; 32]).unwrap();
        let op = crate::Operation::WorkloadList;
        t.authorize(&token, op, None, 10).unwrap();
        assert_eq!(t.decisions.len(), 1);
        // Reused, and still refused for another operation.
        t.authorize(&token, op, None, 11).unwrap();
        assert!(
            t.authorize(&token, crate::Operation::OrgAdmit, None, 11)
                .is_err()
        );
        // Never past the token's expiry, though within DECISION_SECS.
        assert!(t.authorize(&token, op, None, 100).is_err());
        t.authorize(&token, op, None, 96).unwrap();
        // A revocation forgets every decision at once.
        let id = crate::inspect(&token).unwrap().revocation_ids[0].clone();
        let r = Revocation {
            kind: RevocationKind::Token { id },
            by: Revoker::Node(t.me()),
            at: 96,
            until: Some(100),
        }
        .sign(&node_key(0));
        t.revoke(&r, 96).unwrap();
        assert!(matches!(
            t.authorize(&token, op, None, 96),
            Err(crate::Denied::Revoked(_))
        ));
    }

    #[test]
    fn a_token_carrying_its_issuers_certificate_is_checked_without_the_fabric() {
        let mut t = trust();
        let claims = ann(&t, crate::Role::Viewer);
        let op = crate::Operation::WorkloadList;
        // Node 1 of this org, which this node has not heard of yet.
        let issuer_cert = cert_to_hex(&cert(&org_key(1), &node_key(1), &NodeRole::ALL));
        let carried =
            crate::token::mint_with_cert(&node_key(1), &issuer_cert, &claims, [3; 32]).unwrap();
        t.authorize(&carried, op, None, 10).unwrap();
        let bare = crate::mint(&node_key(1), &claims, [3; 32]).unwrap();
        assert!(matches!(
            t.authorize(&bare, op, None, 10),
            Err(crate::Denied::UnknownIssuer(_))
        ));
        // A certificate of an org never admitted, or of another node, is
        // no help.
        let stranger = cert_to_hex(&cert(&org_key(2), &node_key(2), &NodeRole::ALL));
        let t2 = crate::token::mint_with_cert(&node_key(2), &stranger, &claims, [3; 32]).unwrap();
        assert!(t.authorize(&t2, op, None, 10).is_err());
        let borrowed =
            crate::token::mint_with_cert(&node_key(3), &issuer_cert, &claims, [3; 32]).unwrap();
        assert!(t.authorize(&borrowed, op, None, 10).is_err());
    }

    #[test]
    fn own_credentials_must_chain_to_the_log() {
        let log = OrgLog::genesis(&org_key(1), "one").unwrap();
        let err = Trust::new(
            node_key(0).verifying_key(),
            cert(&org_key(2), &node_key(0), &NodeRole::ALL),
            log.clone(),
            10,
        )
        .unwrap_err();
        assert!(err.to_string().contains("does not admit"), "{err}");
        let err = Trust::new(
            node_key(0).verifying_key(),
            cert(&org_key(1), &node_key(1), &NodeRole::ALL),
            log,
            10,
        )
        .unwrap_err();
        assert!(err.to_string().contains("not this node's"), "{err}");
    }
}
