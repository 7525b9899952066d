//! What the API asks of the market and shows of it: the calls behind
//! `/api/v1/market/…` and their JSON.

use std::collections::{BTreeMap, BTreeSet};

use locus_core::cluster::{Liveness, Transition, estimate_rtt};
use locus_market::dmu::NodeState;
use locus_market::measure::{self, UPTIME_WINDOW_MS};
use locus_market::{
    Contract, Cover, EnergySource, Entry, Near, RecordId, Request, Resources, Signed, Sla,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{MAX_OWN_ENTRIES, Market, MarketError, now_ms, now_secs};

/// Default lifetime of an offer or a request on the book.
pub const DEFAULT_LIFETIME_SECS: u64 = 600;

/// What to offer; every field defaults to the node's rules.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OfferAsk {
    /// Asked per unit-hour, millicredits (at least the rules' minimum).
    #[schema(maximum = 1_000_000_000_000_u64)]
    pub price: Option<u64>,
    /// Take standby-for-handover contracts (default: the rules decide,
    /// by battery).
    pub standby: Option<bool>,
    /// Seconds on the book (default 600, at most 86400).
    #[schema(minimum = 1, maximum = 86400)]
    pub lifetime_secs: Option<u64>,
    /// The unit to sell: `nano`, `small`, `medium`, `large` or `xlarge`
    /// (default: the largest the spare resources fill).
    #[schema(value_type = Option<TierName>)]
    pub tier: Option<locus_market::Tier>,
}

/// A size tier, as the API names it (`locus_market::Tier`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)] // only its schema is used
pub enum TierName {
    Nano,
    Small,
    Medium,
    Large,
    Xlarge,
}

/// What to ask for.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestAsk {
    /// Workloads of this node to cover (names or ids); their needs are
    /// measured, and the request and its contract name their ids.
    #[serde(default)]
    #[schema(value_type = Vec<BookName>)]
    pub workloads: Vec<String>,
    /// Things to cover (names).
    #[serde(default)]
    #[schema(value_type = Vec<BookName>)]
    pub things: Vec<String>,
    /// Thousandths of a core, when no workload is covered (at most the
    /// largest tier's 8 cores).
    #[schema(maximum = 8000)]
    pub cpu_millis: Option<u32>,
    /// MiB of memory, when no workload is covered (at most the largest
    /// tier's 32 GiB).
    #[schema(maximum = 32768)]
    pub memory_mb: Option<u64>,
    /// The customer's tenant the contract grants (default `default`).
    #[schema(value_type = Option<BookName>)]
    pub tenant: Option<String>,
    /// The provider's site (default this node's).
    #[schema(value_type = Option<BookName>)]
    pub site: Option<String>,
    /// Paid at most per unit-hour, millicredits (default the rules').
    #[schema(maximum = 1_000_000_000_000_u64)]
    pub max_price: Option<u64>,
    /// Contract length, seconds (default 3600).
    #[schema(minimum = 1, maximum = 2592000)]
    pub duration_secs: Option<u64>,
    /// A standby-for-handover contract (default true).
    pub standby: Option<bool>,
    #[schema(maximum = 1000)]
    pub min_uptime_permille: Option<u16>,
    /// Only a provider within this round-trip time of a site, by the
    /// RTTs its offer measured (default: anywhere in `site`).
    pub near: Option<NearAsk>,
    #[serde(default)]
    pub renewable: bool,
    /// Covered workloads running at the provider within this many seconds
    /// of this node's death (default 3).
    #[schema(minimum = 1, maximum = 3600)]
    pub handover_within_secs: Option<u32>,
    /// Paid by the provider per missed handover, millicredits (default 1000).
    #[schema(maximum = 1_000_000_000_000_u64)]
    pub penalty: Option<u64>,
    /// Seconds on the book (default 600, at most 86400).
    #[schema(minimum = 1, maximum = 86400)]
    pub lifetime_secs: Option<u64>,
}

/// A request's bound on latency: the provider within `max_rtt_ms` of a
/// node of `site`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NearAsk {
    #[schema(value_type = BookName)]
    pub site: String,
    /// Milliseconds, at most 60000.
    #[schema(maximum = 60000)]
    pub max_rtt_ms: u32,
}

impl From<NearAsk> for Near {
    fn from(n: NearAsk) -> Near {
        Near {
            site: n.site,
            max_rtt_ms: n.max_rtt_ms,
        }
    }
}

impl From<&Near> for NearAsk {
    fn from(n: &Near) -> NearAsk {
        NearAsk {
            site: n.site.clone(),
            max_rtt_ms: n.max_rtt_ms,
        }
    }
}

/// A record of the book.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EntryView {
    pub id: String,
    /// `offer` or `request`.
    pub kind: String,
    pub node: String,
    pub org: String,
    /// The class it trades in (`tier@site[ standby]`).
    pub class: String,
    /// Offer: asked per unit-hour; request: paid at most.
    pub price: u64,
    pub issued_at: u64,
    pub expires_at: u64,
    /// Whether this node signed it.
    pub mine: bool,
    /// Offer: the provider's measured round-trip time to each site it
    /// knows, ms (its own site 0); request: empty.
    pub site_rtt_ms: BTreeMap<String, u32>,
    /// Request: its bound on latency to a site, if any.
    pub near: Option<NearAsk>,
    /// The signed record.
    #[schema(value_type = Object)]
    pub record: Entry,
}

/// A round this node received.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RoundView {
    pub number: u64,
    pub cutoff: u64,
    pub clearer: String,
    pub records: usize,
    pub matches: Vec<MatchView>,
    /// `null` when it checks here, else why not.
    pub refused: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MatchView {
    pub request: String,
    pub offer: String,
    pub class: String,
    pub buyer_pays: u64,
    pub seller_gets: u64,
}

/// Why a record traded or did not, and what happened to it here.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Explained {
    pub record: String,
    /// The last checked round that had it on its book.
    pub round: Option<u64>,
    /// The clearing's account of it in that round.
    #[schema(value_type = Object)]
    pub clearing: Option<locus_market::Explanation>,
    /// What this node did about it (negotiation, rules, contract), oldest
    /// first.
    pub notes: Vec<String>,
    /// The record as this node holds it (on its book or in that round),
    /// with its latency terms.
    pub entry: Option<EntryView>,
}

/// A name on the book (a covered workload or thing, a tenant, a site):
/// 1 to 128 printable characters, as the book checks; documented as
/// printable ASCII, which the book always takes.
pub struct BookName;

impl utoipa::PartialSchema for BookName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .min_length(Some(1))
            .max_length(Some(128))
            .pattern(Some("^[ -~]{1,128}$"))
            .into()
    }
}

impl ToSchema for BookName {}

/// A contract this node holds.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ContractView {
    pub id: String,
    /// `customer`, `provider` or `arbitrator`: this node's part.
    pub role: String,
    pub customer: String,
    pub customer_org: String,
    pub tenant: String,
    pub provider: String,
    pub provider_org: String,
    pub arbitrator: String,
    pub arbitrator_org: String,
    pub class: String,
    pub buyer_pays: u64,
    pub seller_gets: u64,
    pub start: u64,
    pub end: u64,
    /// Covered workloads, by id.
    pub workloads: Vec<String>,
    pub things: Vec<String>,
    pub handover_within_secs: u32,
    /// Paid by the provider per missed handover, millicredits.
    pub penalty: u64,
    /// Counter-proposals before both signed (0: the first proposal).
    pub revision: u32,
    /// What this node did about it (as provider: the placement dry run and
    /// the prefetch of each covered workload).
    pub notes: Vec<String>,
    /// The signed contract (what `locus verify contract` checks).
    #[schema(value_type = Object)]
    pub contract: Contract,
    /// Where its settlement stands.
    pub settlement: SettlementView,
}

/// Where a contract's settlement stands, as this node sees it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct SettlementView {
    /// `open`, `active` (the provider runs the customer's work),
    /// `closed` (metered, statement being answered), `awaiting_answer`
    /// (a statement waits for `locus contract sign|dispute`),
    /// `disputed`, `countersigned` or `ruled`.
    pub state: String,
    /// Why it closed.
    pub close: Option<String>,
    pub standby_secs: Option<u64>,
    pub active_secs: Option<u64>,
    pub handovers_done: Option<u32>,
    pub handovers_missed: Option<u32>,
    /// Owed by the customer, and by the provider for missed handovers
    /// (as settled: the ruling's figures when ruled), millicredits.
    pub due: Option<u64>,
    pub penalty: Option<u64>,
    /// The org that lost a dispute.
    pub lost_by: Option<String>,
    /// The arbitrator's reasons.
    pub reasons: Vec<String>,
    /// Stakes the arbitrator holds for it now, per org, as this node's
    /// accounts show.
    pub held: BTreeMap<String, u64>,
    /// The signed settlement (what `locus verify contract` checks), once
    /// complete.
    #[schema(value_type = Option<Object>)]
    pub signed: Option<locus_market::Settlement>,
}

/// This node's org's accounts, as the receipts it received prove them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AccountView {
    pub org: String,
    /// Net balance, millicredits (negative: it owes).
    pub balance: i64,
    /// How far below 0 a balance may go.
    pub credit_limit: u64,
    /// Per org it has receipts with: net position and receipts.
    pub pairs: Vec<PairView>,
    /// Every org's balance this node knows (they sum to 0).
    pub balances: BTreeMap<String, i64>,
    /// Stakes held in escrow, by contract and org.
    pub escrow: Vec<EscrowView>,
    /// The chains of receipts of this org's pairs, signed (what
    /// `locus verify account` checks).
    #[schema(value_type = Vec<Object>)]
    pub chains: Vec<locus_market::PairChain>,
    /// Every org's reputation as this org sees it, from the settlements
    /// this node knows (score and weight per mille; what the rules use).
    #[schema(value_type = Object)]
    pub reputation: BTreeMap<String, locus_market::Reputation>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PairView {
    pub org: String,
    pub balance: i64,
    pub receipts: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EscrowView {
    pub contract: String,
    pub arbitrator_org: String,
    pub org: String,
    pub held: u64,
}

fn entry_view(id: &RecordId, e: &Entry, mine: bool) -> EntryView {
    let (kind, price, class, site_rtt_ms, near) = match e {
        Entry::Offer(o) => (
            "offer",
            o.body.price,
            o.body.class(),
            o.body.site_rtt_ms.clone(),
            None,
        ),
        Entry::Request(r) => (
            "request",
            r.body.max_price,
            r.body.class(),
            BTreeMap::new(),
            r.body.near.as_ref().map(NearAsk::from),
        ),
    };
    EntryView {
        id: id.to_string(),
        kind: kind.to_owned(),
        node: e.author().to_string(),
        org: e.org().to_string(),
        class: class.map_or_else(|e| format!("none ({e})"), |c| c.to_string()),
        price,
        issued_at: e.issued_at(),
        expires_at: e.expires_at(),
        mine,
        site_rtt_ms,
        near,
        record: e.clone(),
    }
}

impl Market {
    fn own_room(&self) -> Result<(), MarketError> {
        if self.state().mine.len() >= MAX_OWN_ENTRIES {
            return Err(MarketError::Conflict(format!(
                "this node has {MAX_OWN_ENTRIES} records on the book already; withdraw one"
            )));
        }
        Ok(())
    }

    /// Offer this node's spare resources, by its rules.
    pub async fn offer(&self, ask: OfferAsk) -> Result<EntryView, MarketError> {
        self.own_room()?;
        let party = self.inner.party.party().ok_or(MarketError::NoCertificate)?;
        let state = self.node_state(party.org()).await?;
        let rules = &self.inner.rules.provider;
        let lifetime = lifetime(ask.lifetime_secs)?;
        let mut offer = rules
            .offer(&state, self.next_seq(), now_secs(), lifetime)
            .map_err(|v| {
                MarketError::Conflict(format!(
                    "nothing to offer: {}",
                    v.refusal().unwrap_or_default()
                ))
            })?;
        offer.site_rtt_ms = self.site_rtts(&offer.site).await;
        if let Some(price) = ask.price {
            if price < rules.min_price {
                return Err(MarketError::Conflict(format!(
                    "price {price} is below this node's minimum {}",
                    rules.min_price
                )));
            }
            offer.price = price;
        }
        if let Some(tier) = ask.tier {
            if tier > offer.tier {
                return Err(MarketError::Conflict(format!(
                    "tier {} is more than this node's spare resources fill ({})",
                    tier.as_str(),
                    offer.tier.as_str()
                )));
            }
            offer.tier = tier;
        }
        if let Some(standby) = ask.standby {
            if standby && !offer.standby {
                return Err(MarketError::Conflict(format!(
                    "no standby offers with the battery at {:?} % (the rules' floor is {} %)",
                    offer.battery_percent, rules.standby_min_battery
                )));
            }
            offer.standby = standby;
        }
        offer
            .validate()
            .map_err(|e| MarketError::Invalid(e.to_string()))?;
        let signed = Signed::sign_with(offer, self.inner.party.as_ref())
            .ok_or(MarketError::NoCertificate)?;
        let entry = Entry::Offer(signed);
        let id = self.publish_entry(entry.clone()).await?;
        self.wake();
        Ok(entry_view(&id, &entry, true))
    }

    /// Ask for a unit that covers workloads and things of this node.
    pub async fn request(&self, ask: RequestAsk) -> Result<EntryView, MarketError> {
        self.own_room()?;
        let party = self.inner.party.party().ok_or(MarketError::NoCertificate)?;
        let asked: BTreeSet<String> = ask.workloads.iter().cloned().collect();
        let (mut needs, workloads) = if asked.is_empty() {
            (Resources::default(), BTreeSet::new())
        } else {
            self.inner
                .cover
                .estimate(&asked)
                .await
                .map_err(MarketError::Conflict)?
        };
        if let Some(cpu) = ask.cpu_millis {
            needs.cpu_millis = needs.cpu_millis.max(cpu);
        }
        if let Some(mb) = ask.memory_mb {
            needs.memory_bytes = needs.memory_bytes.max(mb.saturating_mul(1 << 20));
        }

        let site = match ask.site {
            Some(s) => s,
            None => self.node_state(party.org()).await?.site,
        };
        let now = now_secs();
        let request = Request {
            customer: self.inner.me,
            org: party.org(),
            seq: self.next_seq(),
            tenant: ask.tenant.unwrap_or_else(|| "default".to_owned()),
            needs,
            cover: Cover {
                workloads,
                things: ask.things.into_iter().collect(),
            },
            site,
            min_uptime_permille: ask.min_uptime_permille.unwrap_or(0),
            renewable: ask.renewable,
            standby: ask.standby.unwrap_or(true),
            max_price: ask.max_price.unwrap_or(self.inner.rules.customer.max_price),
            duration_secs: ask.duration_secs.unwrap_or(3600),
            sla: Sla {
                handover_within_secs: ask.handover_within_secs.unwrap_or(3),
                penalty: ask.penalty.unwrap_or(1000),
            },
            exclude: BTreeSet::new(),
            issued_at: now,
            expires_at: now + lifetime(ask.lifetime_secs)?,
            near: ask.near.map(Near::from),
        };
        request
            .validate()
            .map_err(|e| MarketError::Invalid(e.to_string()))?;
        let signed = Signed::sign_with(request, self.inner.party.as_ref())
            .ok_or(MarketError::NoCertificate)?;
        let entry = Entry::Request(signed);
        let id = self.publish_entry(entry.clone()).await?;
        self.wake();
        Ok(entry_view(&id, &entry, true))
    }

    /// Take one of this node's records off the book.
    pub async fn withdraw(&self, id: &str) -> Result<(), MarketError> {
        let id: RecordId = id.parse().map_err(MarketError::Invalid)?;
        if !self.state().mine.contains_key(&id) {
            return Err(MarketError::NotFound(format!(
                "record {id} is not one of this node's"
            )));
        }
        self.withdraw_entry(id).await
    }

    /// The live book as this node holds it.
    pub fn book(&self) -> Vec<EntryView> {
        let st = self.state();
        st.book
            .iter()
            .map(|(id, h)| entry_view(id, &h.entry, h.owner == self.inner.me))
            .collect()
    }

    /// The rounds this node received, newest first.
    pub fn rounds(&self) -> Vec<RoundView> {
        let st = self.state();
        st.rounds
            .iter()
            .rev()
            .map(|s| {
                let r = &s.signed.body;
                RoundView {
                    number: r.number,
                    cutoff: r.cutoff,
                    clearer: r.clearer.to_string(),
                    records: r.book.len(),
                    matches: r
                        .matches
                        .iter()
                        .map(|m| MatchView {
                            request: m.request.to_string(),
                            offer: m.offer.to_string(),
                            class: m.class.to_string(),
                            buyer_pays: m.buyer_pays,
                            seller_gets: m.seller_gets,
                        })
                        .collect(),
                    refused: s.verdict.clone().err(),
                }
            })
            .collect()
    }

    /// Why a record traded or not, and what this node did about it.
    pub fn explain(&self, id: &str) -> Result<Explained, MarketError> {
        let record: RecordId = id.parse().map_err(MarketError::Invalid)?;
        let st = self.state();
        let last = st
            .rounds
            .iter()
            .rev()
            .find(|s| s.verdict.is_ok() && s.signed.body.book.binary_search(&record).is_ok());
        let notes: Vec<String> = st
            .notes
            .get(&record)
            .map(|n| n.iter().cloned().collect())
            .unwrap_or_default();
        if last.is_none() && notes.is_empty() && !st.book.contains_key(&record) {
            return Err(MarketError::NotFound(format!(
                "record {id} is in no round, book or note of this node"
            )));
        }
        let entry = st
            .book
            .get(&record)
            .map(|h| entry_view(&record, &h.entry, h.owner == self.inner.me))
            .or_else(|| {
                last.and_then(|s| s.entries.iter().find(|e| e.id() == record))
                    .map(|e| entry_view(&record, e, e.author() == self.inner.me))
            });
        Ok(Explained {
            record: record.to_string(),
            round: last.map(|s| s.signed.body.number),
            clearing: last.and_then(|s| locus_market::explain(s.entries.iter(), &record)),
            notes,
            entry,
        })
    }

    /// The contracts this node holds.
    pub fn contracts(&self) -> Vec<ContractView> {
        let st = self.state();
        st.contracts
            .iter()
            .map(|(_, c)| self.contract_view(&st, c))
            .collect()
    }

    /// One contract, by id or its first hex digits.
    pub fn contract(&self, id: &str) -> Result<ContractView, MarketError> {
        let c = self.find_contract(id)?;
        Ok(self.contract_view(&self.state(), &c))
    }

    /// The contract `id` (or its first hex digits) names.
    pub(crate) fn find_contract(&self, id: &str) -> Result<Contract, MarketError> {
        let st = self.state();
        let found: Vec<&Contract> = st
            .contracts
            .iter()
            .filter(|(cid, _)| cid.to_string().starts_with(id))
            .map(|(_, c)| c)
            .collect();
        match found.as_slice() {
            [c] if !id.is_empty() => Ok((*c).clone()),
            [] | [_] => Err(MarketError::NotFound(format!(
                "no contract {id} on this node"
            ))),
            _ => Err(MarketError::Invalid(format!(
                "{id} names {} contracts; give more digits",
                found.len()
            ))),
        }
    }

    fn contract_view(&self, st: &crate::State, c: &Contract) -> ContractView {
        let t = &c.terms;
        let me = self.inner.me;
        let role = if t.customer == me {
            "customer"
        } else if t.provider == me {
            "provider"
        } else {
            "arbitrator"
        };
        ContractView {
            id: c.id().to_string(),
            role: role.to_owned(),
            customer: t.customer.to_string(),
            customer_org: t.customer_org.to_string(),
            tenant: t.tenant.clone(),
            provider: t.provider.to_string(),
            provider_org: t.provider_org.to_string(),
            arbitrator: t.arbitrator.to_string(),
            arbitrator_org: t.arbitrator_org.to_string(),
            class: t.class.to_string(),
            buyer_pays: t.buyer_pays,
            seller_gets: t.seller_gets,
            start: t.start,
            end: t.end,
            workloads: t.cover.workloads.iter().cloned().collect(),
            things: t.cover.things.iter().cloned().collect(),
            handover_within_secs: t.sla.handover_within_secs,
            penalty: t.sla.penalty,
            revision: t.revision,
            notes: st
                .notes
                .get(&c.id())
                .map(|n| n.iter().cloned().collect())
                .unwrap_or_default(),
            contract: c.clone(),
            settlement: settlement_view(st, c),
        }
    }

    /// This node's org's accounts.
    pub fn account(&self) -> Result<AccountView, MarketError> {
        let org = self
            .inner
            .party
            .party()
            .ok_or(MarketError::NoCertificate)?
            .org();
        let st = self.state();
        let a = &st.ledger.accounts;
        let pairs = crate::settlement::pairs_of(a, org);
        let chains = pairs
            .iter()
            .filter_map(|(other, _, _)| a.pair(org, *other).cloned())
            .collect();
        let escrow = st
            .ledger
            .accounts
            .escrows()
            .map(|(contract, arbitrator, party, held)| EscrowView {
                contract: contract.to_string(),
                arbitrator_org: arbitrator.to_string(),
                org: party.to_string(),
                held,
            })
            .collect();
        let outcomes: Vec<locus_market::Outcome> = st.outcomes.values().cloned().collect();
        let reputation = locus_market::reputation(org, &outcomes, now_secs())
            .into_iter()
            .map(|(o, r)| (o.to_string(), r))
            .collect();
        Ok(AccountView {
            reputation,
            org: org.to_string(),
            balance: a.balance(org),
            credit_limit: a.credit_limit(),
            pairs: pairs
                .into_iter()
                .map(|(o, balance, receipts)| PairView {
                    org: o.to_string(),
                    balance,
                    receipts,
                })
                .collect(),
            balances: a
                .balances()
                .iter()
                .map(|(o, b)| (o.to_string(), *b))
                .collect(),
            escrow,
            chains,
        })
    }

    /// What this node knows of itself to offer: resources from its
    /// published capacity, uptime from its fabric entry and its boots
    /// (see [`Market::uptime_permille`]), energy from its info.
    async fn node_state(&self, org: locus_access::OrgId) -> Result<NodeState, MarketError> {
        let nodes = self.inner.fabric.nodes().await;
        let me = nodes
            .iter()
            .find(|n| n.is_self || n.id == self.inner.me)
            .ok_or_else(|| {
                MarketError::Conflict("the fabric does not know this node yet".to_owned())
            })?;
        let cap = me.capacity.clone().ok_or_else(|| {
            MarketError::Conflict("this node's capacity is not published yet".to_owned())
        })?;
        let info = me.info.clone();
        let bandwidth_kbps = cap.bandwidth_mbps.unwrap_or(1000).saturating_mul(1000);
        let energy = match info.as_ref().map(|i| i.energy.source) {
            Some(locus_core::config::PowerSource::Solar) => EnergySource::Solar,
            Some(locus_core::config::PowerSource::SolarBattery) => EnergySource::SolarBattery,
            Some(locus_core::config::PowerSource::Battery) => EnergySource::Battery,
            _ => EnergySource::Grid,
        };
        Ok(NodeState {
            node: self.inner.me,
            org,
            site: info
                .as_ref()
                .map_or_else(|| "default".to_owned(), |i| i.site.name.get().clone()),
            capacity: Resources {
                cpu_millis: cap.cpu_millicores.min(u64::from(u32::MAX)) as u32,
                memory_bytes: cap.memory_bytes,
                storage_bytes: cap.storage_bytes,
                bandwidth_kbps,
            },
            used: Resources {
                cpu_millis: cap.allocated.cpu_millicores.min(u64::from(u32::MAX)) as u32,
                memory_bytes: cap.allocated.memory_bytes,
                storage_bytes: cap.allocated.storage_bytes,
                bandwidth_kbps: cap.allocated.bandwidth_mbps.saturating_mul(1000),
            },
            interfaces: cap.interfaces.iter().cloned().collect(),
            uptime_permille: self.uptime_permille(&me.transitions).await,
            energy,
            battery_percent: cap.battery_percent,
        })
    }

    /// The uptime this node offers, per mille, over the last
    /// [`UPTIME_WINDOW_MS`]: the least of what the fabric's history of
    /// itself shows (`own`: its entry's transitions) and what its store's
    /// record of boots shows. A node's own entry starts `alive` when this
    /// run started and never shows it down (no node observes itself
    /// down), so alone it would claim 1000 ‰ for any node just
    /// restarted; the boots cover the time before, where a run that ended
    /// without closing the store counts as down (its end is not known)
    /// and so do the gaps between runs. Peers record the same downtime in
    /// their histories of this node, which is what customers check the
    /// claim against ([`locus_market::check_claimed_uptime`]).
    async fn uptime_permille(&self, own: &[Transition]) -> u16 {
        let now = now_ms();
        let fabric = measure::uptime(own, now, UPTIME_WINDOW_MS).map_or(1000, |u| u.permille);
        let boots = self
            .inner
            .store
            .call(|c| {
                let mut stmt = c.prepare(
                    "SELECT started_at_ms, stopped_at_ms FROM boots ORDER BY generation",
                )?;
                let rows = stmt.query_map([], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?))
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
            .unwrap_or_default();
        fabric.min(boots_uptime_permille(&boots, now, UPTIME_WINDOW_MS))
    }

    /// The provider's round-trip time to each site for its offer, from
    /// the fabric's coordinates: the least estimate to an alive node of
    /// each site (see [`measure::site_rtts`]); `own_site` at 0.
    async fn site_rtts(&self, own_site: &str) -> BTreeMap<String, u32> {
        let nodes = self.inner.fabric.nodes().await;
        let Some(me) = nodes.iter().find(|n| n.is_self || n.id == self.inner.me) else {
            return measure::site_rtts(own_site, []);
        };
        let estimates = nodes.iter().filter_map(|n| {
            if n.id == me.id || n.liveness != Liveness::Alive {
                return None;
            }
            let site = n.info.as_ref()?.site.name.get().as_str();
            Some((site, estimate_rtt(me, n)?.rtt_ms))
        });
        measure::site_rtts(own_site, estimates)
    }
}

/// Share of the last `window_ms` before `now` that the agent ran, per
/// mille, from its runs (`boots`: start and stop, unix ms, oldest first;
/// no stop: the current run if last, else a run that crashed, counted as
/// down). Measured since the first start when that is within the window;
/// 0 with no run at all.
fn boots_uptime_permille(boots: &[(i64, Option<i64>)], now: u64, window_ms: u64) -> u16 {
    let Some(first) = boots.first().map(|b| b.0.max(0) as u64) else {
        return 0;
    };
    let from = first.max(now.saturating_sub(window_ms));
    let last = boots.len() - 1;
    let up: u64 = boots
        .iter()
        .enumerate()
        .map(|(i, (start, stop))| {
            let start = ((*start).max(0) as u64).max(from);
            let stop = match stop {
                Some(stop) => ((*stop).max(0) as u64).min(now),
                None if i == last => now,
                None => return 0,
            };
            stop.saturating_sub(start)
        })
        .sum();
    let span = now.saturating_sub(from).max(1);
    (up.saturating_mul(1000) / span).min(1000) as u16
}

/// An offer's or request's seconds on the book: the default, or what was
/// asked within 1..=[`locus_market::book::MAX_LIFETIME_SECS`].
fn lifetime(asked: Option<u64>) -> Result<u64, MarketError> {
    let max = locus_market::book::MAX_LIFETIME_SECS;
    match asked {
        None => Ok(DEFAULT_LIFETIME_SECS),
        Some(s) if (1..=max).contains(&s) => Ok(s),
        Some(s) => Err(MarketError::Invalid(format!(
            "lifetime_secs {s} is not within 1..={max}"
        ))),
    }
}

/// Where `c`'s settlement stands in `st`.
fn settlement_view(st: &crate::State, c: &Contract) -> SettlementView {
    let id = c.id();
    let held = st
        .ledger
        .accounts
        .stakes(id)
        .map(|(o, h)| (o.to_string(), h))
        .collect();
    let mut v = SettlementView {
        state: "open".into(),
        held,
        ..Default::default()
    };
    let usage = |v: &mut SettlementView, u: &locus_market::Usage| {
        v.close = Some(u.close.to_string());
        v.standby_secs = Some(u.standby_secs);
        v.active_secs = Some(u.active_secs);
        v.handovers_done = Some(u.handovers_done);
        v.handovers_missed = Some(u.handovers_missed);
        v.due = Some(u.due);
        v.penalty = Some(u.penalty);
    };
    if let Some(s) = st.settlements.get(&id) {
        usage(&mut v, &s.statement.body);
        match &s.ending {
            locus_market::Ending::Countersigned(_) => v.state = "countersigned".into(),
            locus_market::Ending::Ruled(r) => {
                v.state = "ruled".into();
                v.due = Some(r.body.due);
                v.penalty = Some(r.body.penalty);
                v.lost_by = Some(r.body.lost_by.to_string());
                v.reasons = r.body.reasons.clone();
            }
        }
        v.signed = Some(s.clone());
    } else if let Some(s) = st.awaiting.get(&id) {
        usage(&mut v, &s.body);
        v.state = "awaiting_answer".into();
    } else if let Some(m) = st.meters.get(&id) {
        if let Some(s) = &m.statement {
            usage(&mut v, &s.body);
        }
        v.state = match (&m.closed, &m.open, &m.reply) {
            (Some(_), _, Some(r)) if r.body.answer != locus_market::Answer::Countersign => {
                "disputed"
            }
            (Some(_), _, _) => "closed",
            (None, Some(_), _) => "active",
            (None, None, _) => "open",
        }
        .into();
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_from_boots_counts_crashed_runs_and_gaps_as_down_within_the_window() {
        const H: i64 = 3_600_000;
        let now = 100 * H as u64;
        // No run recorded: nothing to claim.
        assert_eq!(boots_uptime_permille(&[], now, UPTIME_WINDOW_MS), 0);
        // Running for 2 h since the first start: all of it.
        let fresh = [(98 * H, None)];
        assert_eq!(boots_uptime_permille(&fresh, now, UPTIME_WINDOW_MS), 1000);
        // The window starts at 76 h: a run stopped cleanly at 78 h (2 h
        // of it in the window), one that crashed (no stop: down), one of
        // 6 h, and the current run of 4 h.
        let runs = [
            (70 * H, Some(78 * H)),
            (79 * H, None),
            (84 * H, Some(90 * H)),
            (96 * H, None),
        ];
        // 2 + 6 + 4 = 12 h up of 24 h.
        assert_eq!(boots_uptime_permille(&runs, now, UPTIME_WINDOW_MS), 500);
    }

    #[test]
    fn a_lifetime_on_the_book_is_within_its_bounds() {
        assert_eq!(lifetime(None).unwrap(), DEFAULT_LIFETIME_SECS);
        assert_eq!(lifetime(Some(1)).unwrap(), 1);
        for bad in [0, locus_market::book::MAX_LIFETIME_SECS + 1] {
            let e = lifetime(Some(bad)).unwrap_err().to_string();
            assert!(
                e.contains("lifetime_secs") && e.contains(&bad.to_string()),
                "{e}"
            );
        }
    }
}
