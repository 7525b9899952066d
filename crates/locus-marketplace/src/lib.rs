//! # locus-marketplace
//!
//! The market as one node takes part in it. The rules are
//! `locus-market`'s pure functions; this crate only moves data between
//! them and the world.
//!
//! Owns: the `market` table of the store (this node's offers and
//! requests, the contracts it signed or arbitrates), its records on the
//! fabric (`mkt/e/<id>` offers and requests, `mkt/r` the last round it
//! cleared, `mkt/c/<id>` its contracts), the book of every live record it
//! has checked, the rounds it has checked, and its side of each
//! negotiation.
//! Must never: decide a match, a price or a verdict itself (the pure
//! crate does), sign as anyone but its node, act on a round it has not
//! recomputed, or answer a proposal before the contract is in its store.
//!
//! Every round (1 s by default) each node ranks the round's clearers over
//! the authors of the live book; the first signs the round and publishes
//! it. Every node recomputes a round it receives and drops it if it
//! differs. A customer whose request a checked round matched proposes the
//! contract's terms to the provider over a signed node-to-node call; the
//! provider finds the same match in the same round, applies its rules and
//! countersigns. Both keep the contract and withdraw the matched records.
//!
//! Each party then places its stake with the arbitrator; the provider
//! meters what it runs for the customer, and when the contract closes
//! (its end, the customer's credits, or a party settling early) signs a
//! statement; the customer countersigns or disputes, the arbitrator rules
//! a dispute, and the stakes come back or go as the settlement says
//! (`settlement`). Receipts (`mkt/l/<hash>`) and settlements
//! (`mkt/s/<contract>`) are on the fabric, so every node keeps the
//! accounts and the reputation of every org it hears of.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use locus_core::NodeId;
use locus_core::cluster::Liveness;
use locus_fabric::udp::FabricHandle;
use locus_market::contract::Verifier;
use locus_market::{
    Contract, Contracts, Entry, Observation, PartySigner, RecordId, Resources, Round, Rules, Signed,
};
use locus_store::Store;
use tokio::sync::Notify;

mod documents;
mod follow;
mod negotiate;
mod rounds;
mod settlement;
mod standby;
mod table;
pub mod views;

pub use negotiate::Answer;
pub use settlement::{Half, SettleAction, SettleAnswer, SettleMsg};
pub use views::{
    AccountView, ContractView, EntryView, Explained, OfferAsk, RequestAsk, RoundView,
    SettlementView,
};

use table::{Kind, MarketTable};

/// Period of the clearing rounds unless configured.
pub const DEFAULT_ROUND: Duration = Duration::from_secs(1);
/// A record issued this long before a round's cutoff must be in its book.
pub const SETTLE_SECS: u64 = 3;
/// Rounds kept (checked or refused) for `explain` and proposals.
pub const MAX_ROUNDS: usize = 32;
/// Offers and requests one node may have on the book at once.
pub const MAX_OWN_ENTRIES: usize = 64;
/// Notes kept per record for `explain`.
pub const MAX_NOTES: usize = 16;
/// Records with notes kept.
pub const MAX_NOTED: usize = 1024;
/// Longest a proposal call waits for the other side.
pub const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Contracts of other nodes watched for witnessing, at most.
pub const MAX_WATCHED: usize = 4096;
/// An observer signs its observation again this often while the subject
/// stays dead, so it never goes stale.
pub const OBSERVATION_REFRESH_SECS: u64 = 20;
/// A customer must be back this long before a provider hands its work
/// back.
pub const HAND_BACK_AFTER_MS: u64 = 2000;
/// Receipts and settlements stay on the fabric this long after this node
/// completed them, and contracts this long after they end: every node up
/// meanwhile took them, the parties keep theirs in their stores, and a
/// node's fabric records stay bounded whatever its history (a node owns
/// at most `locus_fabric::records::MAX_RECORDS_PER_OWNER`).
pub const SPREAD_SECS: u64 = 3600;
/// Longest a provider waits for the round a proposal names.
pub const ROUND_WAIT: Duration = Duration::from_secs(2);
/// Times a customer proposes a request again to a provider that could not
/// answer yet (the round had not reached it, or its offer was in another
/// negotiation) before it counts as a refusal.
pub const MAX_NOT_YET: u32 = 5;

/// Why a market call failed.
#[derive(Debug, thiserror::Error)]
pub enum MarketError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("this node has no certificate of its org yet: it cannot sign market records")]
    NoCertificate,
    #[error(transparent)]
    Store(#[from] locus_store::StoreError),
}

/// What the covered workloads of a request measurably use.
#[async_trait::async_trait]
pub trait CoverSource: Send + Sync + 'static {
    /// The sum of what `workloads` (names or ids of workloads this node
    /// owns) use now, measured, and their ids: a contract covers these
    /// workloads, not whatever carries their names elsewhere. An error
    /// names a workload that is not here or not measured yet.
    async fn estimate(
        &self,
        workloads: &BTreeSet<String>,
    ) -> Result<(Resources, BTreeSet<String>), String>;

    /// A provider prepares to take `customer`'s `workloads` over: checks
    /// that each would run here (a placement dry run) and starts fetching
    /// every `cid:` source it needs. Answers one line per workload.
    async fn prepare(&self, customer: NodeId, workloads: &BTreeSet<String>) -> Vec<String>;

    /// A provider hands readings back: those of each of `things` it
    /// stored since `from_ms`, sealed in its log, with their proofs; and
    /// the key its log is signed with.
    async fn readings_taken(
        &self,
        things: &BTreeSet<String>,
        from_ms: u64,
    ) -> Result<(String, Vec<locus_iot::Bundle>), String>;

    /// A customer takes back readings `provider` took on its behalf:
    /// checks every entry's proof against the provider's signed log (and
    /// that the log is `provider`'s) and keeps them. Answers how many are
    /// new here.
    async fn take_readings(
        &self,
        provider: NodeId,
        verifier_key: &str,
        bundle: locus_iot::Bundle,
    ) -> Result<u64, String>;
}

/// Everything [`Market::start`] needs.
pub struct MarketSetup {
    pub me: NodeId,
    pub store: Store,
    pub fabric: FabricHandle,
    /// Signs market records as this node of its org.
    pub party: Arc<dyn PartySigner>,
    /// Signs node-to-node calls (proposals).
    pub signer: locus_core::Signer,
    pub rules: Rules,
    /// Period of the clearing rounds (whole seconds, at least 1).
    pub round: Duration,
    pub cover: Arc<dyn CoverSource>,
    /// Observers of other orgs than the provider's a takeover needs.
    pub witnesses: usize,
    /// How long a customer has to answer a usage statement (seconds).
    pub answer_secs: u64,
}

/// One record of the book, as this node holds it.
#[derive(Clone, Debug)]
pub(crate) struct Held {
    pub entry: Entry,
    pub owner: NodeId,
}

/// A record of this node's own, on the fabric.
#[derive(Clone, Debug)]
pub(crate) struct Mine {
    pub entry: Entry,
    pub chunks: usize,
    /// Proposals of this request a provider could not answer yet (see
    /// [`MAX_NOT_YET`]).
    pub not_yet: u32,
}

/// A round as this node received it, with its verdict.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub signed: Signed<Round>,
    pub verdict: Result<(), String>,
    /// The records of its book, as held when it was checked.
    pub entries: Vec<Entry>,
    /// A round that lists records not here yet is checked again until
    /// then (they may still be on their way).
    pub retry_until: Option<std::time::Instant>,
}

#[derive(Default)]
pub(crate) struct State {
    pub book: BTreeMap<RecordId, Held>,
    pub mine: BTreeMap<RecordId, Mine>,
    pub rounds: VecDeque<Seen>,
    pub contracts: Contracts,
    /// Records in a negotiation now.
    pub busy: BTreeSet<RecordId>,
    /// What happened to a record, newest last (for `explain`).
    pub notes: BTreeMap<RecordId, VecDeque<String>>,
    /// The newest round this node cleared or handled.
    pub last_round: u64,
    pub seq: u64,
    /// Nodes the fabric sees alive (and this node).
    pub alive: BTreeSet<NodeId>,
    /// Since when (unix ms) the fabric sees each node as it is now.
    pub since: BTreeMap<NodeId, (Liveness, u64)>,
    /// Contracts other nodes published (this node is no party): whose
    /// customers this node watches as a witness.
    pub watched: BTreeMap<RecordId, Contract>,
    /// The certificates of parties whose contracts checked, remembered.
    pub verifier: Verifier,
    /// The latest observation of each (observer, subject), from the fabric.
    pub observations: BTreeMap<(NodeId, NodeId), Signed<Observation>>,
    /// The subjects this node published an observation of: its chunks and
    /// when it was signed (unix seconds).
    pub observed: BTreeMap<NodeId, (usize, u64)>,
    /// Accounts between orgs, from every receipt received.
    pub ledger: settlement::Ledger,
    /// The meter of each contract this node provides.
    pub meters: BTreeMap<RecordId, settlement::Meter>,
    /// Verified settlements (this node's and those on the fabric), and
    /// the outcome each gives.
    pub settlements: BTreeMap<RecordId, locus_market::Settlement>,
    pub outcomes: BTreeMap<RecordId, locus_market::Outcome>,
    /// Statements waiting for this customer's manual answer.
    pub awaiting: BTreeMap<RecordId, Signed<locus_market::Usage>>,
    /// Contracts a user asked to settle now.
    pub settle_now: BTreeSet<RecordId>,
    /// When each settlement call was last tried (unix seconds).
    pub tries: BTreeMap<(RecordId, settlement::Call), u64>,
    /// Documents this node withdraws from the fabric in time: key →
    /// (chunks, when, unix seconds).
    pub spread: BTreeMap<String, (usize, u64)>,
}

/// The documents of `spread` whose time on the fabric is over at `now`,
/// removed from it: (key, chunks) of each.
fn withdrawn(spread: &mut BTreeMap<String, (usize, u64)>, now: u64) -> Vec<(String, usize)> {
    let due: Vec<String> = spread
        .iter()
        .filter(|(_, (_, until))| *until <= now)
        .map(|(k, _)| k.clone())
        .collect();
    due.into_iter()
        .filter_map(|k| spread.remove(&k).map(|(n, _)| (k, n)))
        .collect()
}

impl State {
    pub(crate) fn note(&mut self, id: RecordId, note: String) {
        tracing::info!(record = %id.short(), "{note}");
        if !self.notes.contains_key(&id) && self.notes.len() >= MAX_NOTED {
            self.notes.pop_first();
        }
        let notes = self.notes.entry(id).or_default();
        if notes.len() >= MAX_NOTES {
            notes.pop_front();
        }
        notes.push_back(note);
    }

    /// The live book at `cutoff`: records of live authors.
    pub(crate) fn live_book(&self, cutoff: u64) -> Vec<&Entry> {
        self.book
            .values()
            .filter(|h| self.alive.contains(&h.owner))
            .map(|h| &h.entry)
            .filter(|e| e.issued_at() <= cutoff && e.expires_at() > cutoff)
            .collect()
    }
}

pub(crate) struct Inner {
    pub me: NodeId,
    pub store: Store,
    pub fabric: FabricHandle,
    pub party: Arc<dyn PartySigner>,
    pub signer: locus_core::Signer,
    pub rules: Rules,
    pub round: Duration,
    pub cover: Arc<dyn CoverSource>,
    pub witnesses: usize,
    pub answer_secs: u64,
    pub http: reqwest::Client,
    pub state: Mutex<State>,
    pub wake: Notify,
}

/// This node's part of the market. Cheap to clone.
#[derive(Clone)]
pub struct Market {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn now_secs() -> u64 {
    now_ms() / 1000
}

impl Market {
    /// Load this node's records and contracts from the store, publish the
    /// live ones again, and start following the fabric and clearing.
    pub async fn start(
        setup: MarketSetup,
    ) -> Result<(Market, tokio::task::JoinHandle<()>), MarketError> {
        let round = Duration::from_secs(setup.round.as_secs().max(1));
        let inner = Arc::new(Inner {
            me: setup.me,
            store: setup.store,
            fabric: setup.fabric,
            party: setup.party,
            signer: setup.signer,
            rules: setup.rules,
            round,
            cover: setup.cover,
            witnesses: setup.witnesses.max(1),
            answer_secs: setup.answer_secs.max(1),
            http: reqwest::Client::builder()
                .timeout(PROPOSAL_TIMEOUT)
                .build()
                .unwrap_or_default(),
            state: Mutex::new(State::default()),
            wake: Notify::new(),
        });
        let market = Market { inner };
        market.load().await?;
        let task = tokio::spawn(market.clone().run());
        Ok((market, task))
    }

    pub(crate) fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn load(&self) -> Result<(), MarketError> {
        let now = now_secs();
        for (id, body) in self.inner.store.market(Kind::Entry).await? {
            match Entry::from_bytes(&body) {
                Ok(entry) if entry.expires_at() > now => {
                    self.publish_entry(entry).await?;
                }
                Ok(_) => {
                    self.inner.store.delete_market(Kind::Entry, id).await?;
                }
                Err(e) => {
                    tracing::error!(%id, error = %e, "unreadable market record left in the store")
                }
            }
        }
        let mut ids = Vec::new();
        let mut stored = Vec::new();
        for (id, body) in self.inner.store.market(Kind::Contract).await? {
            match Contract::from_bytes(&body) {
                Ok(c) => {
                    let at = now.min(c.terms.end.saturating_sub(1));
                    ids.push(id);
                    stored.push((c, at));
                }
                Err(e) => tracing::error!(%id, error = %e, "unreadable contract left in the store"),
            }
        }
        // Checked together: each party's certificate once, the
        // signatures in batches.
        let contracts: Vec<Contract> = stored.iter().map(|(c, _)| c.clone()).collect();
        let admitted = {
            let mut guard = self.state();
            let st = &mut *guard;
            st.contracts.admit_many(&mut st.verifier, stored)
        };
        for ((id, c), admitted) in ids.into_iter().zip(contracts).zip(admitted) {
            match admitted {
                Ok(_) => {
                    self.publish_contract(&c).await;
                    if c.terms.provider == self.inner.me && c.terms.end > now {
                        self.prepare(&c);
                    }
                }
                Err(e) => tracing::warn!(%id, error = %e, "stored contract not taken"),
            }
        }
        self.load_settlement().await
    }

    /// Store, then publish, one of this node's records.
    pub(crate) async fn publish_entry(&self, entry: Entry) -> Result<RecordId, MarketError> {
        let id = entry.id();
        self.inner
            .store
            .put_market(Kind::Entry, id.to_string(), entry.to_bytes(), now_ms())
            .await?;
        let key = format!("{}{}", documents::ENTRY_PREFIX, id.short());
        let chunks = documents::publish(&self.inner.fabric, &key, &entry.to_bytes(), 0)
            .await
            .unwrap_or(0);
        let mut st = self.state();
        st.book.insert(
            id,
            Held {
                entry: entry.clone(),
                owner: self.inner.me,
            },
        );
        st.mine.insert(
            id,
            Mine {
                entry,
                chunks,
                not_yet: 0,
            },
        );
        Ok(id)
    }

    /// Take one of this node's records off the book: fabric, store, state.
    pub(crate) async fn withdraw_entry(&self, id: RecordId) -> Result<(), MarketError> {
        let mine = {
            let mut st = self.state();
            st.book.remove(&id);
            st.mine.remove(&id)
        };
        if let Some(m) = mine {
            let key = format!("{}{}", documents::ENTRY_PREFIX, id.short());
            documents::unpublish(&self.inner.fabric, &key, m.chunks).await;
        }
        self.inner
            .store
            .delete_market(Kind::Entry, id.to_string())
            .await?;
        Ok(())
    }

    /// Keep a contract: store first, then the register and the fabric.
    pub(crate) async fn keep_contract(&self, c: &Contract) -> Result<RecordId, MarketError> {
        let id = {
            let mut st = self.state();
            c.verify_with(&mut st.verifier)
                .map_err(|e| MarketError::Invalid(e.to_string()))?
        };
        self.inner
            .store
            .put_market(Kind::Contract, id.to_string(), c.to_bytes(), now_ms())
            .await?;
        let admitted = {
            let st = &mut *self.state();
            st.contracts
                .admit_with(&mut st.verifier, c.clone(), now_secs())
        };
        match admitted {
            Ok(_) | Err(locus_market::ContractError::Replayed(_)) => {}
            Err(e) => return Err(MarketError::Conflict(e.to_string())),
        }
        self.publish_contract(c).await;
        Ok(id)
    }

    async fn publish_contract(&self, c: &Contract) {
        let id = c.id();
        let key = format!("{}{}", documents::CONTRACT_PREFIX, id.short());
        let until = c.terms.end.saturating_add(SPREAD_SECS);
        self.publish_until(key, &c.to_bytes(), until).await;
    }

    /// Publish a document that leaves the fabric at `until` (unix
    /// seconds); nothing when that time is past. Answers its chunks.
    pub(crate) async fn publish_until(
        &self,
        key: String,
        bytes: &[u8],
        until: u64,
    ) -> Option<usize> {
        if until <= now_secs() {
            return None;
        }
        let n = documents::publish(&self.inner.fabric, &key, bytes, 0).await?;
        self.state().spread.insert(key, (n, until));
        Some(n)
    }

    /// Withdraw the documents whose time on the fabric is over.
    pub(crate) async fn withdraw_spread(&self) {
        let due = withdrawn(&mut self.state().spread, now_secs());
        for (key, chunks) in due {
            documents::unpublish(&self.inner.fabric, &key, chunks).await;
        }
    }

    pub(crate) fn next_seq(&self) -> u64 {
        let mut st = self.state();
        st.seq = st.seq.max(now_ms());
        st.seq += 1;
        st.seq
    }

    /// Refresh who is alive, and since when, from the fabric.
    pub(crate) async fn refresh_alive(&self) {
        let nodes = self.inner.fabric.nodes().await;
        let alive: BTreeSet<NodeId> = nodes
            .iter()
            .filter(|n| n.is_self || n.liveness == Liveness::Alive)
            .map(|n| n.id)
            .chain([self.inner.me])
            .collect();
        let since = nodes
            .iter()
            .map(|n| (n.id, (n.liveness, n.since_unix_ms)))
            .collect();
        let mut st = self.state();
        st.alive = alive;
        st.since = since;
    }

    /// POST `body` (JSON) to `path` on `node`, signed as this node;
    /// answers the body of a 2xx.
    pub(crate) async fn call_node(
        &self,
        node: NodeId,
        path: &str,
        body: Vec<u8>,
    ) -> Result<String, String> {
        let nodes = self.inner.fabric.nodes().await;
        let api = nodes
            .iter()
            .find(|n| n.id == node)
            .and_then(|n| n.info.as_ref())
            .map(|i| i.api_addr.clone())
            .ok_or("its API address is unknown")?;
        let mut req = self
            .inner
            .http
            .post(format!("http://{api}{path}"))
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        for (name, value) in self.inner.signer.sign("POST", path, &body) {
            req = req.header(name, value);
        }
        let resp = req.body(body).send().await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{status}: {text}"));
        }
        Ok(text)
    }

    /// Wake the loop (a record of ours changed).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_leave_the_fabric_when_their_time_is_over() {
        let mut spread: BTreeMap<String, (usize, u64)> = [
            ("mkt/l/a".to_owned(), (1, 100)),
            ("mkt/s/b".to_owned(), (4, 200)),
            ("mkt/c/c".to_owned(), (2, 100)),
        ]
        .into();
        assert!(withdrawn(&mut spread, 99).is_empty());
        assert_eq!(
            withdrawn(&mut spread, 100),
            vec![("mkt/c/c".to_owned(), 2), ("mkt/l/a".to_owned(), 1)]
        );
        assert_eq!(spread.len(), 1, "what is withdrawn is forgotten");
        assert!(withdrawn(&mut spread, 150).is_empty());
        assert_eq!(withdrawn(&mut spread, 300), vec![("mkt/s/b".to_owned(), 4)]);
        assert!(spread.is_empty());
    }
}
