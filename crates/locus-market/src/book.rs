//! Offers and requests: the signed, expiring records of the book.
//!
//! An **offer** is one unit of a class a provider node rents out, at a
//! price per unit-hour; a **request** is one unit a customer node needs,
//! at most at a price per unit-hour, for a duration, to run what it names
//! (resources, or "cover these workloads and things"). Both are signed by
//! their node ([`Signed`]) and live until they expire. Prices and amounts
//! are whole millicredits.

use std::collections::{BTreeMap, BTreeSet};

use locus_access::OrgId;
use locus_core::NodeId;
use serde::{Deserialize, Serialize};

use crate::class::{Class, Resources, Tier};
use crate::signed::{Authored, RecordId, Signed};

/// Domain of a node's signature over an offer (v2: with the site RTTs,
/// so an offer signed in the layout before them never checks as one).
pub const OFFER_DOMAIN: &[u8] = b"locus/market/offer/v2\0";
/// Domain of a node's signature over a request (v2: with `near`).
pub const REQUEST_DOMAIN: &[u8] = b"locus/market/request/v2\0";
/// Largest encoded offer or request accepted.
pub const MAX_RECORD_BYTES: usize = 8 * 1024;
/// Longest a record may live.
pub const MAX_LIFETIME_SECS: u64 = 24 * 3600;
/// Most workloads or things one request covers.
pub const MAX_COVERED: usize = 64;
/// Most live records a book holds.
pub const MAX_BOOK: usize = 100_000;
/// Highest price, value or penalty a record may name, millicredits (a
/// million credits).
pub const MAX_PRICE: u64 = 1_000_000_000_000;
/// Longest contract a record may ask for or accept (30 days).
pub const MAX_DURATION_SECS: u64 = 30 * 24 * 3600;
/// Longest handover an SLA may allow, seconds.
pub const MAX_HANDOVER_SECS: u32 = 3600;
/// Longest name of a site, interface, workload or thing in a record.
pub const MAX_NAME: usize = 128;
/// Most sites an offer gives its round-trip time to (with 16 interfaces
/// of [`MAX_NAME`] characters, the largest offer stays well within
/// [`MAX_RECORD_BYTES`]).
pub const MAX_SITE_RTTS: usize = 16;
/// Largest round-trip time an offer names or a request bounds, ms (a
/// minute: farther than that is no longer "near").
pub const MAX_RTT_MS: u32 = 60_000;

/// Where a node's power comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnergySource {
    Grid,
    Solar,
    SolarBattery,
    Battery,
}

impl EnergySource {
    pub fn renewable(self) -> bool {
        matches!(self, EnergySource::Solar | EnergySource::SolarBattery)
    }
}

/// What a provider node rents out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    pub provider: NodeId,
    pub org: OrgId,
    /// The node's number for this offer (a new offer, a new number).
    pub seq: u64,
    /// The spare resources R' of the node when it signed.
    pub spare: Resources,
    /// The unit it sells: a tier its spare resources fill (by default the
    /// largest; a provider may sell a smaller unit to meet smaller needs).
    pub tier: Tier,
    /// Connectivity interfaces (`ethernet`, `wifi`, `lte`, `lora`, …).
    pub interfaces: BTreeSet<String>,
    /// Measured uptime over the fabric's liveness history, per mille.
    pub uptime_permille: u16,
    pub energy: EnergySource,
    /// State of charge, where there is a battery.
    pub battery_percent: Option<u8>,
    /// Asked per unit-hour, millicredits.
    pub price: u64,
    /// Longest contract it takes, seconds.
    pub max_duration_secs: u64,
    /// Whether it takes standby-for-handover contracts.
    pub standby: bool,
    pub site: String,
    pub issued_at: u64,
    pub expires_at: u64,
    /// Round-trip time from the provider to each site it knows, ms: the
    /// least its fabric coordinates estimate to an alive node of the
    /// site, 0 for its own. At most [`MAX_SITE_RTTS`] sites, the nearest.
    #[serde(default)]
    pub site_rtt_ms: BTreeMap<String, u32>,
}

/// A request's bound on latency: the provider within `max_rtt_ms` of a
/// node of `site`, by the provider's own [`Offer::site_rtt_ms`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Near {
    pub site: String,
    /// At most [`MAX_RTT_MS`].
    pub max_rtt_ms: u32,
}

impl Near {
    /// Whether an offer whose provider measured `site_rtt_ms` is near
    /// enough: a site it gives no time for is not.
    pub fn met_by(&self, site_rtt_ms: &BTreeMap<String, u32>) -> bool {
        site_rtt_ms
            .get(&self.site)
            .is_some_and(|rtt| *rtt <= self.max_rtt_ms)
    }

    fn validate(&self) -> Result<(), BookError> {
        check_name("near", &self.site)?;
        if self.max_rtt_ms > MAX_RTT_MS {
            return Err(invalid(
                "near",
                format!("{} ms is more than {MAX_RTT_MS} ms", self.max_rtt_ms),
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for Near {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "within {} ms of {}", self.max_rtt_ms, self.site)
    }
}

/// What a request asks to be covered.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cover {
    pub workloads: BTreeSet<String>,
    pub things: BTreeSet<String>,
}

impl Cover {
    pub fn is_empty(&self) -> bool {
        self.workloads.is_empty() && self.things.is_empty()
    }
}

/// What the customer asks of a handover.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sla {
    /// Covered workloads running at the provider within this many seconds
    /// of the customer's death.
    pub handover_within_secs: u32,
    /// Paid by the provider to the customer per missed handover,
    /// millicredits.
    pub penalty: u64,
}

/// What a customer node needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub customer: NodeId,
    pub org: OrgId,
    pub seq: u64,
    /// The customer's tenant the contract grants use of the provider.
    pub tenant: String,
    /// What the covered work needs (estimated from what it uses).
    pub needs: Resources,
    pub cover: Cover,
    /// The site the provider must be in.
    pub site: String,
    pub min_uptime_permille: u16,
    pub renewable: bool,
    /// A standby-for-handover contract (else the unit is used at once).
    pub standby: bool,
    /// Paid at most per unit-hour, millicredits.
    pub max_price: u64,
    pub duration_secs: u64,
    pub sla: Sla,
    /// Orgs it will not contract with (a rejected negotiation).
    pub exclude: BTreeSet<OrgId>,
    pub issued_at: u64,
    pub expires_at: u64,
    /// The provider within this many ms of a site, by its offer's
    /// measured RTTs; `None`: anywhere in [`Request::site`].
    #[serde(default)]
    pub near: Option<Near>,
}

impl Authored for Offer {
    const DOMAIN: &'static [u8] = OFFER_DOMAIN;
    fn author(&self) -> NodeId {
        self.provider
    }
    fn author_org(&self) -> OrgId {
        self.org
    }
    fn signed_at(&self) -> u64 {
        self.issued_at
    }
}

impl Authored for Request {
    const DOMAIN: &'static [u8] = REQUEST_DOMAIN;
    fn author(&self) -> NodeId {
        self.customer
    }
    fn author_org(&self) -> OrgId {
        self.org
    }
    fn signed_at(&self) -> u64 {
        self.issued_at
    }
}

/// Why a record is not taken into the book.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BookError {
    #[error("not a market record: {0}")]
    Malformed(String),
    #[error(transparent)]
    Signature(#[from] crate::signed::SignatureError),
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("expired at {expires_at}, it is {now}")]
    Expired { expires_at: u64, now: u64 },
    #[error("issued at {issued_at}, in the future (it is {now})")]
    FromTheFuture { issued_at: u64, now: u64 },
    #[error("the book is full ({0} records)")]
    Full(usize),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> BookError {
    BookError::Invalid {
        field,
        reason: reason.into(),
    }
}

fn check_name(field: &'static str, s: &str) -> Result<(), BookError> {
    if s.is_empty() || s.len() > MAX_NAME || s.chars().any(char::is_control) {
        return Err(invalid(
            field,
            format!("{s:?} must be 1 to {MAX_NAME} printable characters"),
        ));
    }
    Ok(())
}

fn check_window(issued_at: u64, expires_at: u64) -> Result<(), BookError> {
    if expires_at <= issued_at || expires_at - issued_at > MAX_LIFETIME_SECS {
        return Err(invalid(
            "expires_at",
            format!(
                "{expires_at} must be after issued_at {issued_at} and at most {MAX_LIFETIME_SECS} s later"
            ),
        ));
    }
    Ok(())
}

impl Offer {
    /// The class it is listed in, or why it has none.
    pub fn class(&self) -> Result<Class, BookError> {
        if !self.spare.covers(&self.tier.resources()) {
            return Err(invalid(
                "tier",
                format!(
                    "{} is more than the spare resources fill ({})",
                    self.tier.as_str(),
                    Tier::filled_by(&self.spare).map_or(
                        "none; the smallest is 0.25 core, 256 MiB, 2 GiB, 1 Mbit/s",
                        Tier::as_str
                    )
                ),
            ));
        }
        Ok(Class {
            tier: self.tier,
            site: self.site.clone(),
            standby: self.standby,
        })
    }

    /// Every field within its bounds.
    pub fn validate(&self) -> Result<(), BookError> {
        check_window(self.issued_at, self.expires_at)?;
        check_name("site", &self.site)?;
        for i in &self.interfaces {
            check_name("interfaces", i)?;
        }
        if self.interfaces.len() > 16 {
            return Err(invalid("interfaces", "more than 16"));
        }
        if self.site_rtt_ms.len() > MAX_SITE_RTTS {
            return Err(invalid(
                "site_rtt_ms",
                format!(
                    "{} sites, more than {MAX_SITE_RTTS}",
                    self.site_rtt_ms.len()
                ),
            ));
        }
        for (site, rtt) in &self.site_rtt_ms {
            check_name("site_rtt_ms", site)?;
            if *rtt > MAX_RTT_MS {
                return Err(invalid(
                    "site_rtt_ms",
                    format!("{site}: {rtt} ms is more than {MAX_RTT_MS} ms"),
                ));
            }
        }
        if self.uptime_permille > 1000 {
            return Err(invalid(
                "uptime_permille",
                format!("{} > 1000", self.uptime_permille),
            ));
        }
        if self.battery_percent.is_some_and(|b| b > 100) {
            return Err(invalid("battery_percent", "more than 100"));
        }
        if self.max_duration_secs == 0 || self.max_duration_secs > MAX_DURATION_SECS {
            return Err(invalid(
                "max_duration_secs",
                format!(
                    "{} is not within 1..={MAX_DURATION_SECS}",
                    self.max_duration_secs
                ),
            ));
        }
        if self.price > MAX_PRICE {
            return Err(invalid(
                "price",
                format!("{} is more than {MAX_PRICE}", self.price),
            ));
        }
        self.class().map(|_| ())
    }
}

impl Request {
    /// The class it is listed in, or why it has none.
    pub fn class(&self) -> Result<Class, BookError> {
        let tier = Tier::covering(&self.needs).ok_or_else(|| {
            invalid(
                "needs",
                "more than the largest tier (8 cores, 32 GiB, 1 TiB, 1 Gbit/s)",
            )
        })?;
        Ok(Class {
            tier,
            site: self.site.clone(),
            standby: self.standby,
        })
    }

    /// Every field within its bounds.
    pub fn validate(&self) -> Result<(), BookError> {
        check_window(self.issued_at, self.expires_at)?;
        check_name("site", &self.site)?;
        check_name("tenant", &self.tenant)?;
        if self.min_uptime_permille > 1000 {
            return Err(invalid(
                "min_uptime_permille",
                format!("{} > 1000", self.min_uptime_permille),
            ));
        }
        if self.duration_secs == 0 || self.duration_secs > MAX_DURATION_SECS {
            return Err(invalid(
                "duration_secs",
                format!(
                    "{} is not within 1..={MAX_DURATION_SECS}",
                    self.duration_secs
                ),
            ));
        }
        if !(1..=MAX_HANDOVER_SECS).contains(&self.sla.handover_within_secs) {
            return Err(invalid(
                "handover_within_secs",
                format!(
                    "{} is not within 1..={MAX_HANDOVER_SECS}",
                    self.sla.handover_within_secs
                ),
            ));
        }
        if self.max_price > MAX_PRICE || self.sla.penalty > MAX_PRICE {
            return Err(invalid(
                "max_price",
                format!("prices and penalties are at most {MAX_PRICE}"),
            ));
        }
        if self.cover.workloads.len() > MAX_COVERED || self.cover.things.len() > MAX_COVERED {
            return Err(invalid(
                "cover",
                format!("more than {MAX_COVERED} workloads or things"),
            ));
        }
        for w in self.cover.workloads.iter().chain(&self.cover.things) {
            check_name("cover", w)?;
        }
        if self.exclude.contains(&self.org) {
            return Err(invalid("exclude", "names the customer's own org"));
        }
        if self.exclude.len() > 64 {
            return Err(invalid("exclude", "more than 64 orgs"));
        }
        if let Some(near) = &self.near {
            near.validate()?;
        }
        self.class().map(|_| ())
    }
}

/// A record of the book: an offer or a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entry {
    Offer(Signed<Offer>),
    Request(Signed<Request>),
}

impl Entry {
    pub fn id(&self) -> RecordId {
        match self {
            Entry::Offer(o) => o.id(),
            Entry::Request(r) => r.id(),
        }
    }

    pub fn expires_at(&self) -> u64 {
        match self {
            Entry::Offer(o) => o.body.expires_at,
            Entry::Request(r) => r.body.expires_at,
        }
    }

    pub fn issued_at(&self) -> u64 {
        match self {
            Entry::Offer(o) => o.body.issued_at,
            Entry::Request(r) => r.body.issued_at,
        }
    }

    pub fn org(&self) -> OrgId {
        match self {
            Entry::Offer(o) => o.body.org,
            Entry::Request(r) => r.body.org,
        }
    }

    /// The node that signed it.
    pub fn author(&self) -> NodeId {
        match self {
            Entry::Offer(o) => o.body.provider,
            Entry::Request(r) => r.body.customer,
        }
    }

    /// Decode at most [`MAX_RECORD_BYTES`] (not checked yet).
    pub fn from_bytes(bytes: &[u8]) -> Result<Entry, BookError> {
        locus_access::encoding::decode(bytes, MAX_RECORD_BYTES).map_err(BookError::Malformed)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        locus_access::encoding::encode(self)
    }

    /// Check signature, fields and lifetime at `now`.
    pub fn check(&self, now: u64) -> Result<(), BookError> {
        if self.issued_at() > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
            return Err(BookError::FromTheFuture {
                issued_at: self.issued_at(),
                now,
            });
        }
        if self.expires_at() <= now {
            return Err(BookError::Expired {
                expires_at: self.expires_at(),
                now,
            });
        }
        match self {
            Entry::Offer(o) => {
                o.body.validate()?;
                o.verify()?;
            }
            Entry::Request(r) => {
                r.body.validate()?;
                r.verify()?;
            }
        }
        Ok(())
    }
}

/// How far ahead of a node's clock a record may be issued.
pub const MAX_CLOCK_SKEW_SECS: u64 = 30;

/// The live records one node knows, by id, checked when taken.
#[derive(Clone, Debug, Default)]
pub struct Book {
    entries: BTreeMap<RecordId, Entry>,
}

impl Book {
    /// Take a record after checking it at `now`. Answers its id.
    pub fn insert(&mut self, entry: Entry, now: u64) -> Result<RecordId, BookError> {
        entry.check(now)?;
        let id = entry.id();
        if !self.entries.contains_key(&id) && self.entries.len() >= MAX_BOOK {
            return Err(BookError::Full(MAX_BOOK));
        }
        self.entries.insert(id, entry);
        Ok(id)
    }

    /// Forget the records expired at `now`.
    pub fn expire(&mut self, now: u64) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, e| e.expires_at() > now);
        before - self.entries.len()
    }

    pub fn remove(&mut self, id: &RecordId) -> Option<Entry> {
        self.entries.remove(id)
    }

    pub fn get(&self, id: &RecordId) -> Option<&Entry> {
        self.entries.get(id)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> impl Iterator<Item = (&RecordId, &Entry)> {
        self.entries.iter()
    }

    /// The records live at `now` issued at or before `cutoff`: what a round
    /// at `cutoff` clears.
    pub fn live_at(&self, cutoff: u64) -> Vec<&Entry> {
        self.entries
            .values()
            .filter(|e| e.issued_at() <= cutoff && e.expires_at() > cutoff)
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Signed records for tests: one unit of `small` at site `lab`, for
    //! standby, live 600 s from `at`.
    use super::*;
    use crate::signed::testing::TestNode;

    pub fn offer(n: &TestNode, seq: u64, price: u64, at: u64) -> Entry {
        Entry::Offer(Signed::sign(
            Offer {
                provider: n.node(),
                org: n.org(),
                seq,
                spare: Tier::Small.resources(),
                tier: Tier::Small,
                interfaces: ["ethernet".to_owned()].into(),
                uptime_permille: 995,
                energy: EnergySource::Grid,
                battery_percent: None,
                price,
                max_duration_secs: 3600,
                standby: true,
                site: "lab".into(),
                issued_at: at,
                expires_at: at + 600,
                site_rtt_ms: [("lab".to_owned(), 0)].into(),
            },
            n.party.clone(),
            &n.key,
        ))
    }

    pub fn request(n: &TestNode, seq: u64, max_price: u64, at: u64) -> Entry {
        Entry::Request(Signed::sign(
            Request {
                customer: n.node(),
                org: n.org(),
                seq,
                tenant: "default".into(),
                needs: Resources {
                    cpu_millis: 500,
                    memory_bytes: 64 << 20,
                    ..Default::default()
                },
                cover: Cover {
                    workloads: ["svc".to_owned()].into(),
                    things: Default::default(),
                },
                site: "lab".into(),
                min_uptime_permille: 0,
                renewable: false,
                standby: true,
                max_price,
                duration_secs: 3600,
                sla: Sla {
                    handover_within_secs: 3,
                    penalty: 500,
                },
                exclude: Default::default(),
                issued_at: at,
                expires_at: at + 600,
                near: None,
            },
            n.party.clone(),
            &n.key,
        ))
    }
}
