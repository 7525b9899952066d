//! The node's loop: follow the fabric, clear the rounds this node is
//! first to clear, forget what expired.

use std::collections::BTreeSet;
use std::time::Duration;

use locus_core::NodeId;
use locus_market::Signed;
use locus_market::clearing::{clearers, round};
use tokio::sync::broadcast::error::RecvError;

use crate::documents::{self, ROUND_KEY};
use crate::{Market, now_secs};

impl Market {
    pub(crate) async fn run(self) {
        let mut events = self.inner.fabric.subscribe();
        let period = (self.inner.round / 4).min(Duration::from_millis(250));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Everyone once at start: records that arrived before we listened.
        let mut dirty: BTreeSet<NodeId> = self
            .inner
            .fabric
            .nodes()
            .await
            .iter()
            .map(|n| n.id)
            .collect();
        let mut round_chunks = 0usize;
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Ok(ev) if ev.key.starts_with("mkt/") => { dirty.insert(ev.owner); }
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => {
                        dirty.extend(self.inner.fabric.nodes().await.iter().map(|n| n.id));
                    }
                    Err(RecvError::Closed) => return,
                },
                _ = tick.tick() => {
                    self.refresh_alive().await;
                    for owner in std::mem::take(&mut dirty) {
                        self.rescan(owner).await;
                    }
                    self.recheck();
                    self.observe().await;
                    if let Some(n) = self.clear_round(round_chunks).await {
                        round_chunks = n;
                    }
                    self.expire().await;
                    self.withdraw_spread().await;
                    self.settle_tick().await;
                }
                _ = self.inner.wake.notified() => {}
            }
        }
    }

    /// If a new round began and this node is its first clearer, clear it,
    /// sign it and publish it. Answers the chunks published.
    async fn clear_round(&self, old_chunks: usize) -> Option<usize> {
        let round_secs = self.inner.round.as_secs().max(1);
        let number = now_secs() / round_secs;
        let me = self.inner.me;
        let body = {
            let mut st = self.state();
            if number <= st.last_round {
                return None;
            }
            st.last_round = number;
            let cutoff = number * round_secs;
            let live = st.live_book(cutoff);
            if live.is_empty() {
                return None;
            }
            let ranked = clearers(number, live.iter().map(|e| e.author()));
            if ranked.first() != Some(&me) {
                return None;
            }
            let party = self.inner.party.party()?;
            round(number, cutoff, me, party.org(), &live)
        };
        let matches = body.matches.len();
        let signed = Signed::sign_with(body, self.inner.party.as_ref())?;
        tracing::debug!(round = number, matches, "clearing a round");
        let n = documents::publish(
            &self.inner.fabric,
            ROUND_KEY,
            &signed.to_bytes(),
            old_chunks,
        )
        .await;
        self.take_round(signed);
        n
    }

    /// Forget expired records (ours leave the fabric and the store) and
    /// ended contracts.
    async fn expire(&self) {
        let now = now_secs();
        let expired: Vec<_> = {
            let mut st = self.state();
            st.book
                .retain(|_, h| h.entry.expires_at() > now || h.owner == self.inner.me);
            st.mine
                .iter()
                .filter(|(_, m)| m.entry.expires_at() <= now)
                .map(|(id, _)| *id)
                .collect()
        };
        for id in expired {
            if let Err(e) = self.withdraw_entry(id).await {
                tracing::warn!(record = %id.short(), error = %e, "cannot withdraw an expired record");
            }
            self.state().note(id, "expired".to_owned());
        }
    }
}
