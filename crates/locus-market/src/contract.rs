//! Contracts: the terms a match becomes, the bounded negotiation over
//! them, both orgs' signatures, and the offline check anyone can run.
//!
//! A contract starts from a [`Match`] of a signed round: parties, class
//! and prices come from the clearing and never change. The customer
//! proposes the terms ([`Terms::from_match`]); each side may counter up to
//! [`MAX_REVISIONS`] times, changing only the SLA, the stakes and the
//! window ([`check_counter`]); a side accepts by countersigning or rejects,
//! after which the customer re-lists its request excluding that provider
//! ([`Request::after_rejection`]), so negotiation restarts in the next
//! round instead of stalling.
//!
//! The arbitrator is chosen by rule ([`arbitrator`]): rendezvous hashing
//! on the pair `(request, offer)` over the nodes of the round's book that
//! belong to neither party's org. A [`Contract`] carries both parties'
//! signatures with their org keys and certificates, so
//! [`Contract::verify`] needs nothing else. [`Contracts`] is one node's
//! register: it refuses a contract twice (replay) and a second contract
//! for one request or one offer.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ed25519_dalek::{SigningKey, VerifyingKey};
use locus_access::OrgId;
use locus_access::encoding::{self, encode};
use locus_core::NodeId;
use serde::{Deserialize, Serialize};

use crate::book::{Cover, MAX_COVERED, Offer, Request, Sla};
use crate::class::Class;
use crate::clearing::Match;
use crate::signed::{Party, PartySignature, PartySigner, RecordId, SignatureError};

/// Domain of both parties' signatures over the terms.
pub const CONTRACT_DOMAIN: &[u8] = b"locus/market/contract/v1\0";
/// Most counter-proposals before a negotiation must end.
pub const MAX_REVISIONS: u32 = 4;
/// Largest encoded contract accepted.
pub const MAX_CONTRACT_BYTES: usize = 16 * 1024;
/// Share of the price paid while the provider stands by, per mille.
pub const STANDBY_PERMILLE: u16 = 100;
/// Most contracts one register holds.
pub const MAX_CONTRACTS: usize = 65_536;
/// Most node certificates a [`Verifier`] remembers.
pub const MAX_CACHED_CERTS: usize = 4096;

/// What each party stakes, held by the arbitrator, millicredits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stakes {
    pub customer: u64,
    pub provider: u64,
}

/// What both parties sign.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terms {
    pub round: u64,
    pub request: RecordId,
    pub offer: RecordId,
    pub customer: NodeId,
    pub customer_org: OrgId,
    /// The customer's tenant, granted use of the provider's node.
    pub tenant: String,
    pub provider: NodeId,
    pub provider_org: OrgId,
    pub arbitrator: NodeId,
    pub arbitrator_org: OrgId,
    pub class: Class,
    /// Paid by the customer per unit-hour while active, millicredits.
    pub buyer_pays: u64,
    /// Got by the provider per unit-hour while active, millicredits.
    pub seller_gets: u64,
    /// Share of the price paid while standing by, per mille.
    pub standby_permille: u16,
    pub start: u64,
    pub end: u64,
    pub cover: Cover,
    pub sla: Sla,
    pub stakes: Stakes,
    /// 0 for the first proposal, then one more per counter-proposal.
    pub revision: u32,
    /// When the latest revision was proposed (certificates must be valid).
    pub proposed_at: u64,
}

/// Why terms, a negotiation step or a contract are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    #[error("not a contract: {0}")]
    Malformed(String),
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("{side} signature: {source}")]
    Signature {
        side: &'static str,
        source: SignatureError,
    },
    #[error("a counter-proposal may not change {0}")]
    Immutable(&'static str),
    #[error("negotiation ended after {MAX_REVISIONS} revisions")]
    TooManyRevisions,
    #[error("the negotiation is {0}")]
    Closed(&'static str),
    #[error("contract {0} is already registered")]
    Replayed(RecordId),
    #[error("{what} {id} is already under contract {contract}")]
    DoubleContract {
        what: &'static str,
        id: RecordId,
        contract: RecordId,
    },
    #[error("contract {id} ended at {end}, it is {now}")]
    Ended { id: RecordId, end: u64, now: u64 },
    #[error("the register is full ({0} contracts)")]
    Full(usize),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ContractError {
    ContractError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// The arbitrator of the pair `(request, offer)`: among `candidates`
/// (node, org), those of neither party's org, the highest rendezvous
/// weight.
pub fn arbitrator(
    request: &RecordId,
    offer: &RecordId,
    customer_org: OrgId,
    provider_org: OrgId,
    candidates: impl IntoIterator<Item = (NodeId, OrgId)>,
) -> Option<(NodeId, OrgId)> {
    candidates
        .into_iter()
        .filter(|(_, o)| *o != customer_org && *o != provider_org)
        .max_by_key(|(n, _)| {
            let mut h = blake3::Hasher::new();
            h.update(b"locus/market/arbitrator\0");
            h.update(&request.0);
            h.update(&offer.0);
            h.update(n.as_bytes());
            *h.finalize().as_bytes()
        })
}

impl Terms {
    /// The first proposal for a match: the window is the shorter of the
    /// request's duration and the offer's longest contract from `now`; the
    /// provider stakes one SLA penalty, the customer the standby fee of the
    /// whole window (at least one millicredit each).
    pub fn from_match(
        round: u64,
        m: &Match,
        request: &Request,
        offer: &Offer,
        arbitrator: (NodeId, OrgId),
        now: u64,
    ) -> Terms {
        let duration = request.duration_secs.min(offer.max_duration_secs);
        let mut terms = Terms {
            round,
            request: m.request,
            offer: m.offer,
            customer: request.customer,
            customer_org: request.org,
            tenant: request.tenant.clone(),
            provider: offer.provider,
            provider_org: offer.org,
            arbitrator: arbitrator.0,
            arbitrator_org: arbitrator.1,
            class: m.class.clone(),
            buyer_pays: m.buyer_pays,
            seller_gets: m.seller_gets,
            standby_permille: if m.class.standby {
                STANDBY_PERMILLE
            } else {
                1000
            },
            start: now,
            end: now.saturating_add(duration),
            cover: request.cover.clone(),
            sla: request.sla,
            stakes: Stakes::default(),
            revision: 0,
            proposed_at: now,
        };
        terms.stakes = Stakes {
            customer: terms.standby_cost(duration).max(1),
            provider: request.sla.penalty.max(1),
        };
        terms
    }

    /// The contract's id: BLAKE3 of the encoded terms.
    pub fn id(&self) -> RecordId {
        RecordId(*blake3::hash(&encode(self)).as_bytes())
    }

    /// What `secs` seconds of standby cost the customer, millicredits
    /// (rounded up).
    pub fn standby_cost(&self, secs: u64) -> u64 {
        let per_hour = self.buyer_pays as u128 * self.standby_permille as u128;
        (per_hour * secs as u128)
            .div_ceil(3600 * 1000)
            .min(u64::MAX as u128) as u64
    }

    /// What `secs` seconds active cost the customer (rounded up).
    pub fn active_cost(&self, secs: u64) -> u64 {
        (self.buyer_pays as u128 * secs as u128)
            .div_ceil(3600)
            .min(u64::MAX as u128) as u64
    }

    /// Every field within its bounds and the parties distinct.
    pub fn validate(&self) -> Result<(), ContractError> {
        if self.end <= self.start {
            return Err(invalid(
                "end",
                format!("{} is not after start {}", self.end, self.start),
            ));
        }
        if self.customer_org == self.provider_org {
            return Err(invalid("provider_org", "is the customer's org"));
        }
        if self.arbitrator_org == self.customer_org || self.arbitrator_org == self.provider_org {
            return Err(invalid("arbitrator_org", "is a party's org"));
        }
        if self.buyer_pays < self.seller_gets {
            return Err(invalid(
                "seller_gets",
                format!(
                    "{} is more than the customer pays ({})",
                    self.seller_gets, self.buyer_pays
                ),
            ));
        }
        if self.standby_permille > 1000 {
            return Err(invalid(
                "standby_permille",
                format!("{} > 1000", self.standby_permille),
            ));
        }
        if self.revision > MAX_REVISIONS {
            return Err(ContractError::TooManyRevisions);
        }
        if self.cover.workloads.len() > MAX_COVERED || self.cover.things.len() > MAX_COVERED {
            return Err(invalid(
                "cover",
                format!("more than {MAX_COVERED} workloads or things"),
            ));
        }
        if self.tenant.is_empty() || self.tenant.len() > crate::book::MAX_NAME {
            return Err(invalid(
                "tenant",
                format!("{:?} is not a tenant name", self.tenant),
            ));
        }
        Ok(())
    }
}

/// Check that `next` is a counter-proposal of `prev` that changes only
/// what may be negotiated.
pub fn check_counter(prev: &Terms, next: &Terms) -> Result<(), ContractError> {
    if next.revision != prev.revision + 1 {
        return Err(invalid(
            "revision",
            format!("{} does not follow {}", next.revision, prev.revision),
        ));
    }
    if next.revision > MAX_REVISIONS {
        return Err(ContractError::TooManyRevisions);
    }
    let fixed: [(&'static str, bool); 12] = [
        ("round", prev.round == next.round),
        ("request", prev.request == next.request),
        ("offer", prev.offer == next.offer),
        (
            "customer",
            prev.customer == next.customer && prev.customer_org == next.customer_org,
        ),
        (
            "provider",
            prev.provider == next.provider && prev.provider_org == next.provider_org,
        ),
        (
            "arbitrator",
            prev.arbitrator == next.arbitrator && prev.arbitrator_org == next.arbitrator_org,
        ),
        ("class", prev.class == next.class),
        (
            "prices",
            prev.buyer_pays == next.buyer_pays && prev.seller_gets == next.seller_gets,
        ),
        (
            "standby_permille",
            prev.standby_permille == next.standby_permille,
        ),
        ("tenant", prev.tenant == next.tenant),
        ("cover", prev.cover == next.cover),
        ("proposed_at", next.proposed_at >= prev.proposed_at),
    ];
    if let Some((name, _)) = fixed.iter().find(|(_, same)| !same) {
        return Err(ContractError::Immutable(name));
    }
    next.validate()
}

/// Which side of a contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Customer,
    Provider,
}

impl Side {
    fn as_str(self) -> &'static str {
        match self {
            Side::Customer => "customer",
            Side::Provider => "provider",
        }
    }
    fn other(self) -> Side {
        match self {
            Side::Customer => Side::Provider,
            Side::Provider => Side::Customer,
        }
    }
}

/// A proposal (or counter-proposal) signed by the side that makes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub terms: Terms,
    pub by: Side,
    pub signature: PartySignature,
}

impl Proposal {
    pub fn sign(terms: Terms, by: Side, party: Party, node_key: &SigningKey) -> Proposal {
        let signature = PartySignature::sign(party, node_key, CONTRACT_DOMAIN, &terms);
        Proposal {
            terms,
            by,
            signature,
        }
    }

    /// Sign through `signer`; `None` while it has no certificate.
    pub fn sign_with(terms: Terms, by: Side, signer: &dyn PartySigner) -> Option<Proposal> {
        let signature = PartySignature::sign_with(signer, CONTRACT_DOMAIN, &terms)?;
        Some(Proposal {
            terms,
            by,
            signature,
        })
    }

    /// Accept through `signer`: countersign the terms as they are.
    pub fn accept_with(&self, signer: &dyn PartySigner) -> Option<Contract> {
        let mine = PartySignature::sign_with(signer, CONTRACT_DOMAIN, &self.terms)?;
        let (customer, provider) = match self.by {
            Side::Customer => (self.signature.clone(), mine),
            Side::Provider => (mine, self.signature.clone()),
        };
        Some(Contract {
            terms: self.terms.clone(),
            customer,
            provider,
        })
    }

    /// Check the proposer's signature (and the terms' bounds).
    pub fn verify(&self) -> Result<(), ContractError> {
        self.terms.validate()?;
        check_side(
            &self.terms,
            self.by,
            &self.signature,
            &encode(&self.terms),
            None,
        )
    }

    /// Accept: countersign the terms as they are, giving the contract.
    pub fn accept(&self, party: Party, node_key: &SigningKey) -> Contract {
        let mine = PartySignature::sign(party, node_key, CONTRACT_DOMAIN, &self.terms);
        let (customer, provider) = match self.by {
            Side::Customer => (self.signature.clone(), mine),
            Side::Provider => (mine, self.signature.clone()),
        };
        Contract {
            terms: self.terms.clone(),
            customer,
            provider,
        }
    }
}

fn check_side(
    terms: &Terms,
    side: Side,
    signature: &PartySignature,
    body: &[u8],
    verifier: Option<&mut Verifier>,
) -> Result<(), ContractError> {
    let (node, org) = match side {
        Side::Customer => (terms.customer, terms.customer_org),
        Side::Provider => (terms.provider, terms.provider_org),
    };
    let result = match verifier {
        Some(v) => v.check(signature, body, node, org, terms.proposed_at),
        None => signature.verify_bytes(CONTRACT_DOMAIN, body, node, org, terms.proposed_at),
    };
    result.map_err(|source| ContractError::Signature {
        side: side.as_str(),
        source,
    })
}

/// Where a negotiation stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Negotiation {
    /// Waiting for `latest.by`'s counterpart.
    Open(Box<Proposal>),
    Agreed(Box<Contract>),
    Rejected {
        by: Side,
        reason: String,
    },
}

impl Negotiation {
    /// Start with the customer's first proposal.
    pub fn start(first: Proposal) -> Result<Negotiation, ContractError> {
        if first.terms.revision != 0 {
            return Err(invalid("revision", "a negotiation starts at revision 0"));
        }
        first.verify()?;
        Ok(Negotiation::Open(Box::new(first)))
    }

    /// Take a counter-proposal from the side whose turn it is.
    pub fn counter(self, next: Proposal) -> Result<Negotiation, ContractError> {
        let Negotiation::Open(latest) = self else {
            return Err(ContractError::Closed("over"));
        };
        if next.by != latest.by.other() {
            return Err(invalid("by", "a side cannot counter its own proposal"));
        }
        check_counter(&latest.terms, &next.terms)?;
        next.verify()?;
        Ok(Negotiation::Open(Box::new(next)))
    }

    /// The other side countersigns the latest proposal.
    pub fn agree(self, contract: Contract) -> Result<Negotiation, ContractError> {
        let Negotiation::Open(latest) = self else {
            return Err(ContractError::Closed("over"));
        };
        if contract.terms != latest.terms {
            return Err(invalid("terms", "the contract is not the latest proposal"));
        }
        contract.verify()?;
        Ok(Negotiation::Agreed(Box::new(contract)))
    }

    /// A side walks away.
    pub fn reject(self, by: Side, reason: String) -> Result<Negotiation, ContractError> {
        match self {
            Negotiation::Open(_) => Ok(Negotiation::Rejected { by, reason }),
            _ => Err(ContractError::Closed("over")),
        }
    }
}

impl Request {
    /// The request to re-list after a negotiation with `provider_org` was
    /// rejected: the same need, a new number, that org excluded.
    pub fn after_rejection(&self, provider_org: OrgId, now: u64) -> Request {
        let lifetime = self.expires_at.saturating_sub(self.issued_at);
        let mut next = self.clone();
        next.seq = self.seq + 1;
        next.exclude.insert(provider_org);
        next.issued_at = now;
        next.expires_at = now.saturating_add(lifetime.max(1));
        next
    }
}

/// Terms signed by both parties.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contract {
    pub terms: Terms,
    pub customer: PartySignature,
    pub provider: PartySignature,
}

impl Contract {
    pub fn id(&self) -> RecordId {
        self.terms.id()
    }

    /// Check the terms and both signatures, with nothing but the contract.
    pub fn verify(&self) -> Result<RecordId, ContractError> {
        self.verify_inner(None)
    }

    /// As [`verify`](Self::verify), reusing certificates already checked.
    pub fn verify_with(&self, verifier: &mut Verifier) -> Result<RecordId, ContractError> {
        self.verify_inner(Some(verifier))
    }

    fn verify_inner(&self, mut verifier: Option<&mut Verifier>) -> Result<RecordId, ContractError> {
        self.terms.validate()?;
        let body = encode(&self.terms);
        check_side(
            &self.terms,
            Side::Customer,
            &self.customer,
            &body,
            verifier.as_deref_mut(),
        )?;
        check_side(&self.terms, Side::Provider, &self.provider, &body, verifier)?;
        Ok(RecordId(*blake3::hash(&body).as_bytes()))
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decode at most [`MAX_CONTRACT_BYTES`]; the result is not checked.
    pub fn from_bytes(bytes: &[u8]) -> Result<Contract, ContractError> {
        encoding::decode(bytes, MAX_CONTRACT_BYTES).map_err(ContractError::Malformed)
    }
}

/// Checks signatures, remembering the certificates it has checked (a
/// node verifies many contracts of few parties). Bounded.
#[derive(Debug, Default)]
pub struct Verifier {
    certs: HashMap<[u8; 32], VerifyingKey>,
}

impl Verifier {
    fn check(
        &mut self,
        signature: &PartySignature,
        body: &[u8],
        node: NodeId,
        org: OrgId,
        at: u64,
    ) -> Result<(), SignatureError> {
        let party = &signature.party;
        let c = &party.cert.cert;
        // The certificate's validity window is part of its bytes: a
        // remembered key is reused only inside it.
        if party.node() == node && party.org() == org && c.not_before <= at && at < c.not_after {
            let key = blake3::hash(&encode(party));
            if let Some(node_key) = self.certs.get(key.as_bytes()) {
                return if locus_access::org::verify(
                    node_key,
                    CONTRACT_DOMAIN,
                    body,
                    &signature.signature,
                ) {
                    Ok(())
                } else {
                    Err(SignatureError::BadSignature(node))
                };
            }
            signature.verify_bytes(CONTRACT_DOMAIN, body, node, org, at)?;
            if self.certs.len() >= MAX_CACHED_CERTS {
                self.certs.clear();
            }
            if let Ok(node_key) = party.check(at) {
                self.certs.insert(*key.as_bytes(), node_key);
            }
            return Ok(());
        }
        signature.verify_bytes(CONTRACT_DOMAIN, body, node, org, at)
    }
}

/// One node's register of contracts: each once, one per request and per
/// offer.
#[derive(Clone, Debug, Default)]
pub struct Contracts {
    by_id: BTreeMap<RecordId, Contract>,
    by_record: BTreeMap<RecordId, RecordId>,
}

impl Contracts {
    /// Register a verified contract at `now`.
    pub fn admit(&mut self, contract: Contract, now: u64) -> Result<RecordId, ContractError> {
        let id = contract.verify()?;
        if self.by_id.contains_key(&id) {
            return Err(ContractError::Replayed(id));
        }
        if contract.terms.end <= now {
            return Err(ContractError::Ended {
                id,
                end: contract.terms.end,
                now,
            });
        }
        for (what, record) in [
            ("request", contract.terms.request),
            ("offer", contract.terms.offer),
        ] {
            if let Some(other) = self.by_record.get(&record) {
                return Err(ContractError::DoubleContract {
                    what,
                    id: record,
                    contract: *other,
                });
            }
        }
        if self.by_id.len() >= MAX_CONTRACTS {
            return Err(ContractError::Full(MAX_CONTRACTS));
        }
        self.by_record.insert(contract.terms.request, id);
        self.by_record.insert(contract.terms.offer, id);
        self.by_id.insert(id, contract);
        Ok(id)
    }

    pub fn get(&self, id: &RecordId) -> Option<&Contract> {
        self.by_id.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&RecordId, &Contract)> {
        self.by_id.iter()
    }

    /// The contracts in force at `now` in which `org` takes part.
    pub fn of_org(&self, org: OrgId, now: u64) -> Vec<&Contract> {
        self.by_id
            .values()
            .filter(|c| {
                let t = &c.terms;
                t.start <= now
                    && now < t.end
                    && [t.customer_org, t.provider_org, t.arbitrator_org].contains(&org)
            })
            .collect()
    }

    /// Forget contracts ended before `now` (their records are settled
    /// elsewhere). Answers how many.
    pub fn expire(&mut self, now: u64) -> usize {
        let ended: BTreeSet<RecordId> = self
            .by_id
            .iter()
            .filter(|(_, c)| c.terms.end <= now)
            .map(|(id, _)| *id)
            .collect();
        self.by_id.retain(|id, _| !ended.contains(id));
        self.by_record.retain(|_, c| !ended.contains(c));
        ended.len()
    }
}

#[cfg(test)]
pub(crate) mod tests;
