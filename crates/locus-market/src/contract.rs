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

use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
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
        terms.restake();
        terms
    }

    /// Set the stakes from the SLA and the window: the provider stakes
    /// one penalty, the customer the standby fee of the whole window (at
    /// least one millicredit each).
    pub fn restake(&mut self) {
        self.stakes = Stakes {
            customer: self
                .standby_cost(self.end.saturating_sub(self.start))
                .max(1),
            provider: self.sla.penalty.max(1),
        };
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
            &signed_message(&self.terms),
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

/// What both parties sign: `CONTRACT_DOMAIN ‖ postcard(terms)`.
fn signed_message(terms: &Terms) -> Vec<u8> {
    let body = encode(terms);
    let mut message = Vec::with_capacity(CONTRACT_DOMAIN.len() + body.len());
    message.extend_from_slice(CONTRACT_DOMAIN);
    message.extend_from_slice(&body);
    message
}

/// The encoded terms within a [`signed_message`].
fn body_of(message: &[u8]) -> &[u8] {
    message.get(CONTRACT_DOMAIN.len()..).unwrap_or_default()
}

/// The contract's id from its [`signed_message`].
fn id_of(message: &[u8]) -> RecordId {
    RecordId(*blake3::hash(body_of(message)).as_bytes())
}

/// The node and org that must sign for `side`.
fn signer(terms: &Terms, side: Side) -> (NodeId, OrgId) {
    match side {
        Side::Customer => (terms.customer, terms.customer_org),
        Side::Provider => (terms.provider, terms.provider_org),
    }
}

fn check_side(
    terms: &Terms,
    side: Side,
    signature: &PartySignature,
    message: &[u8],
    verifier: Option<&mut Verifier>,
) -> Result<(), ContractError> {
    let (node, org) = signer(terms, side);
    let result = match verifier {
        Some(v) => v.check(signature, message, node, org, terms.proposed_at),
        None => signature.verify_bytes(
            CONTRACT_DOMAIN,
            body_of(message),
            node,
            org,
            terms.proposed_at,
        ),
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

    fn verify_inner(&self, verifier: Option<&mut Verifier>) -> Result<RecordId, ContractError> {
        self.terms.validate()?;
        let message = signed_message(&self.terms);
        self.check_signatures(&message, verifier)?;
        Ok(id_of(&message))
    }

    /// Both signatures over `message`, the contract's [`signed_message`].
    fn check_signatures(
        &self,
        message: &[u8],
        mut verifier: Option<&mut Verifier>,
    ) -> Result<(), ContractError> {
        check_side(
            &self.terms,
            Side::Customer,
            &self.customer,
            message,
            verifier.as_deref_mut(),
        )?;
        check_side(
            &self.terms,
            Side::Provider,
            &self.provider,
            message,
            verifier,
        )
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
    /// By the org's signature of the certificate; the whole party is
    /// compared before a remembered key is used.
    certs: HashMap<[u8; 64], Known>,
}

/// A party whose certificate checked, and the node key it vouches for.
#[derive(Debug)]
struct Known {
    party: Party,
    key: VerifyingKey,
    /// Whether the key is free of any torsion component (so neither of
    /// small order), as a batch requires; found on first use in a batch.
    batchable: Option<bool>,
}

/// Most contracts whose signatures [`Verifier::verify_many`] checks in
/// one batch equation.
pub const MAX_BATCH: usize = 64;

/// ℓ, the order of ed25519's prime-order subgroup, little-endian.
const GROUP_ORDER: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// Whether the little-endian scalar `s` is canonical (below ℓ).
fn canonical_scalar(s: &[u8; 32]) -> bool {
    for (a, l) in s.iter().rev().zip(GROUP_ORDER.iter().rev()) {
        if a != l {
            return a < l;
        }
    }
    false
}

/// Whether an encoded point's y coordinate (its low 255 bits) is below
/// p = 2²⁵⁵ − 19, i.e. the encoding is the one compression gives.
fn canonical_y(point: &[u8; 32]) -> bool {
    !(point[31] & 0x7f == 0x7f && point[1..31].iter().all(|&b| b == 0xff) && point[0] >= 0xed)
}

/// Whether a signature `R ‖ s` passes what `verify_strict` refuses on
/// its own, whatever the key and message: `s` canonical, and `R` the
/// canonical encoding of a point not of small order.
fn batchable_signature(signature: &[u8; 64]) -> bool {
    let (Some(r), Some(s)) = (signature.first_chunk::<32>(), signature.last_chunk::<32>()) else {
        return false;
    };
    canonical_scalar(s) && canonical_y(r) && VerifyingKey::from_bytes(r).is_ok_and(|r| !r.is_weak())
}

/// Strict ed25519 verification of `message` (domain included).
fn strict(key: &VerifyingKey, message: &[u8], signature: &[u8; 64]) -> bool {
    key.verify_strict(message, &Signature::from_bytes(signature))
        .is_ok()
}

/// A contract of a batch: its signed message and both parties' keys.
struct Pending<'a> {
    index: usize,
    contract: &'a Contract,
    message: Vec<u8>,
    keys: [VerifyingKey; 2],
}

impl Verifier {
    /// The remembered entry of `party` if it signs as `node` of `org` and
    /// its certificate is valid at `at` (the window is part of the
    /// certificate: a remembered key is reused only inside it).
    fn known(&mut self, party: &Party, node: NodeId, org: OrgId, at: u64) -> Option<&mut Known> {
        let c = &party.cert.cert;
        if party.node() != node || party.org() != org || at < c.not_before || at >= c.not_after {
            return None;
        }
        self.certs
            .get_mut(&party.cert.signature)
            .filter(|k| k.party == *party)
    }

    /// Check `signature` over `message` (`CONTRACT_DOMAIN ‖ body`).
    fn check(
        &mut self,
        signature: &PartySignature,
        message: &[u8],
        node: NodeId,
        org: OrgId,
        at: u64,
    ) -> Result<(), SignatureError> {
        if let Some(known) = self.known(&signature.party, node, org, at) {
            return if strict(&known.key, message, &signature.signature) {
                Ok(())
            } else {
                Err(SignatureError::BadSignature(node))
            };
        }
        let key = signature.verify_bytes_key(CONTRACT_DOMAIN, body_of(message), node, org, at)?;
        if self.certs.len() >= MAX_CACHED_CERTS {
            self.certs.clear();
        }
        self.certs.insert(
            signature.party.cert.signature,
            Known {
                party: signature.party.clone(),
                key,
                batchable: None,
            },
        );
        Ok(())
    }

    /// The node key to check `signature` with in a batch: only for a
    /// known party, a key free of torsion and a signature that passes
    /// [`batchable_signature`].
    fn batch_key(
        &mut self,
        signature: &PartySignature,
        node: NodeId,
        org: OrgId,
        at: u64,
    ) -> Option<VerifyingKey> {
        if !batchable_signature(&signature.signature) {
            return None;
        }
        let known = self.known(&signature.party, node, org, at)?;
        let key = known.key;
        let batchable = *known
            .batchable
            .get_or_insert_with(|| !key.is_weak() && key.to_edwards().is_torsion_free());
        batchable.then_some(key)
    }

    /// Check many contracts, each as [`Contract::verify_with`] would, and
    /// answer in their order.
    ///
    /// A contract whose parties are both known to this verifier has its
    /// two signatures checked with those of other such contracts in one
    /// ed25519 batch equation, [`MAX_BATCH`] contracts at a time. When a
    /// batch fails, each of its contracts is checked alone, so each
    /// answer names what is wrong with that contract. A contract with a
    /// party not known yet is checked alone, as by
    /// [`Contract::verify_with`], and its certificates are remembered.
    ///
    /// A signature joins a batch only if it passes what `verify_strict`
    /// refuses on its own: `s` canonical (below ℓ), `R` the canonical
    /// encoding of a point not of small order, the node key not of small
    /// order; and only if the node key also has no torsion component
    /// (checked once per certificate). Anything else is checked alone,
    /// strictly.
    ///
    /// One difference with checking each alone remains (besides the
    /// batch's chance of about 2⁻¹²⁸ to accept errors of prime order that
    /// cancel). `verify_strict` accepts only if `R = [s]B − [k]A`
    /// exactly; the batch accepts if `Σ zᵢ·(Rᵢ − [sᵢ]B + [kᵢ]Aᵢ) = 0`,
    /// with 128-bit weights `zᵢ` derived from the batch's contents
    /// (ed25519-dalek's `verify_batch`). With the checks above, a
    /// signature's error term can still be a non-zero torsion point `T`
    /// (of order 2, 4 or 8) when `R` is a prime-order point plus `T`.
    /// `verify_strict` refuses such a signature; the batch accepts it
    /// when the weighted torsion terms cancel: with probability
    /// `1/order(T)`, at most ½, for one such signature, and since the
    /// weights are a function of the batch, its maker can search for a
    /// batch where they do. Making such a signature takes the node's
    /// private key (`s` must equal `r + k·a`), so no one can pass off a
    /// node's signature it did not make; a node can make a contract that
    /// a batch accepts and a check alone refuses. Refusing a torsion
    /// component of `R` would cost a scalar multiplication per
    /// signature, about as much as checking it alone.
    pub fn verify_many(&mut self, contracts: &[Contract]) -> Vec<Result<RecordId, ContractError>> {
        let mut results: Vec<Option<Result<RecordId, ContractError>>> = vec![None; contracts.len()];
        let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH.min(contracts.len()));
        for (index, contract) in contracts.iter().enumerate() {
            let t = &contract.terms;
            if let Err(e) = t.validate() {
                results[index] = Some(Err(e));
                continue;
            }
            let message = signed_message(t);
            let keys = [
                (Side::Customer, &contract.customer),
                (Side::Provider, &contract.provider),
            ]
            .map(|(side, signature)| {
                let (node, org) = signer(t, side);
                self.batch_key(signature, node, org, t.proposed_at)
            });
            let [Some(customer), Some(provider)] = keys else {
                results[index] = Some(
                    contract
                        .check_signatures(&message, Some(self))
                        .map(|()| id_of(&message)),
                );
                continue;
            };
            batch.push(Pending {
                index,
                contract,
                message,
                keys: [customer, provider],
            });
            if batch.len() >= MAX_BATCH {
                self.settle(&mut batch, &mut results);
            }
        }
        self.settle(&mut batch, &mut results);
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(ContractError::Malformed("left unchecked".into()))))
            .collect()
    }

    /// Check the signatures of `batch` together, each contract alone if
    /// they fail, and answer each into `results`.
    fn settle(
        &mut self,
        batch: &mut Vec<Pending>,
        results: &mut [Option<Result<RecordId, ContractError>>],
    ) {
        if batch.is_empty() {
            return;
        }
        let together = {
            let mut messages = Vec::with_capacity(2 * batch.len());
            let mut signatures = Vec::with_capacity(2 * batch.len());
            let mut keys = Vec::with_capacity(2 * batch.len());
            for p in batch.iter() {
                for (signature, key) in [&p.contract.customer, &p.contract.provider]
                    .into_iter()
                    .zip(p.keys)
                {
                    messages.push(p.message.as_slice());
                    signatures.push(Signature::from_bytes(&signature.signature));
                    keys.push(key);
                }
            }
            ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
        };
        for p in batch.drain(..) {
            let result = if together {
                Ok(())
            } else {
                p.contract.check_signatures(&p.message, Some(self))
            };
            if let Some(slot) = results.get_mut(p.index) {
                *slot = Some(result.map(|()| id_of(&p.message)));
            }
        }
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
        self.insert(contract, id, now)
    }

    /// As [`admit`](Self::admit), checking the signatures through
    /// `verifier`, which remembers the certificates of known parties.
    pub fn admit_with(
        &mut self,
        verifier: &mut Verifier,
        contract: Contract,
        now: u64,
    ) -> Result<RecordId, ContractError> {
        let id = contract.verify_with(verifier)?;
        self.insert(contract, id, now)
    }

    /// Register contracts, each at its own time, as [`admit`](Self::admit)
    /// would one after the other; their signatures are checked together
    /// through `verifier` ([`Verifier::verify_many`]). Answers in order.
    pub fn admit_many(
        &mut self,
        verifier: &mut Verifier,
        contracts: Vec<(Contract, u64)>,
    ) -> Vec<Result<RecordId, ContractError>> {
        let (contracts, times): (Vec<Contract>, Vec<u64>) = contracts.into_iter().unzip();
        let checked = verifier.verify_many(&contracts);
        contracts
            .into_iter()
            .zip(times)
            .zip(checked)
            .map(|((contract, now), checked)| checked.and_then(|id| self.insert(contract, id, now)))
            .collect()
    }

    /// Register `contract`, whose signatures checked and whose id is `id`.
    fn insert(
        &mut self,
        contract: Contract,
        id: RecordId,
        now: u64,
    ) -> Result<RecordId, ContractError> {
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
