//! # locus-fabric
//!
//! The peer-to-peer layer: who is in the cluster, who is alive, what every
//! node says about itself, and how far apart nodes are.
//!
//! - Membership and failure detection are foca's (SWIM with suspicion),
//!   driven as a pure state machine ([`Fabric`]) so that the same code runs
//!   over UDP ([`udp`]) and in the deterministic simulator ([`sim`]).
//! - Owned records ([`records`]): each node is the only writer of its keys;
//!   updates ride on foca's custom broadcasts, and a replica that missed one
//!   learns it from a bounded digest a random peer sends every few seconds,
//!   then pulls it. A document larger than one record (a workload spec, a
//!   thing) is published as numbered [`chunks`].
//! - Network coordinates (Vivaldi) learn from the round-trip time of every
//!   exchange, measured by timestamps echoed in each datagram, which also
//!   carries the sender's coordinate ([`wire`]).
//! - Every datagram is sealed with the cluster key (XChaCha20-Poly1305)
//!   when one is set; others are dropped and counted.
//!
//! Must never: hand-roll membership or failure detection (foca owns them),
//! block, or let bytes from the network panic, allocate without bound or
//! overwrite a record it does not own.

pub mod chunks;
mod deadlines;
pub mod fabric;
pub mod member;
pub mod records;
pub mod sim;
pub mod udp;
pub mod view;
pub mod wire;

pub use fabric::{Fabric, Now, Output, Stats, Timer, Tuning};
pub use member::Member;
pub use wire::{ClusterKey, Sealer};
