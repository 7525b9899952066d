//! The cluster as every node sees it: what each node publishes about itself,
//! its liveness with the time of each transition, sites, and network
//! coordinates (Vivaldi) to estimate round-trip times between any two nodes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::NodeId;
use crate::config::{EnergyProfile, SiteConfig};

/// What a node publishes about itself; changes rarely.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeInfo {
    /// Node id.
    pub id: NodeId,
    /// ed25519 public key, 64 hex digits.
    pub public_key: String,
    /// Human name.
    pub name: String,
    /// Where the node stands.
    pub site: SiteConfig,
    /// HTTP API address.
    pub api_addr: String,
    /// Gossip address.
    pub gossip_addr: String,
    /// Labels used by placement.
    pub labels: BTreeMap<String, String>,
    /// locus version.
    pub version: String,
    /// Start counter of the node's data dir.
    pub generation: u64,
    /// Unix time (ms) when this generation started.
    pub started_at_unix_ms: u64,
    /// What powers the node (the energy-state slot; filled by energy-aware
    /// placement later).
    pub energy: EnergyProfile,
}

/// Resources of a node (the R' model): what it has and what is allocated.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct Capacity {
    /// CPU, in millicores (1000 per core, or the cgroup quota if lower).
    pub cpu_millicores: u64,
    /// Memory, in bytes (MemTotal, or the cgroup limit if lower).
    pub memory_bytes: u64,
    /// Free storage of the data dir's file system, in bytes.
    pub storage_bytes: u64,
    /// Fastest non-loopback link, in Mbit/s, when the kernel knows it.
    pub bandwidth_mbps: Option<u32>,
    /// Non-loopback network interfaces.
    pub interfaces: Vec<String>,
    /// Attachable host devices (ids as in `/api/v1/devices`).
    pub devices: Vec<String>,
    /// Battery state of charge, when the node has a battery.
    pub battery_percent: Option<u8>,
    /// Allocated to workloads so far.
    pub allocated: Allocation,
    /// Workload kinds this node can run (drivers that answered their probe).
    #[serde(default)]
    pub drivers: Vec<crate::workload::Kind>,
}

/// Resources allocated to workloads.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct Allocation {
    /// CPU, in millicores.
    pub cpu_millicores: u64,
    /// Memory, in bytes.
    pub memory_bytes: u64,
    /// Storage, in bytes.
    pub storage_bytes: u64,
    /// Bandwidth, in Mbit/s.
    pub bandwidth_mbps: u32,
    /// Devices attached to workloads.
    pub devices: Vec<String>,
}

/// Liveness of a node as the local failure detector sees it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    /// Answers probes.
    Alive,
    /// Some member failed to reach it; it has a short time to refute.
    Suspect,
    /// Declared down by the failure detector.
    Dead,
    /// Announced its own departure (a planned stop).
    Left,
}

impl Liveness {
    /// Every state, in order.
    pub const ALL: [Liveness; 4] = [
        Liveness::Alive,
        Liveness::Suspect,
        Liveness::Dead,
        Liveness::Left,
    ];

    /// The word used in JSON, metrics labels and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Alive => "alive",
            Liveness::Suspect => "suspect",
            Liveness::Dead => "dead",
            Liveness::Left => "left",
        }
    }
}

/// One change of liveness.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Transition {
    /// New liveness.
    pub to: Liveness,
    /// Unix time (ms) of the change, on the observing node's clock.
    pub at_unix_ms: u64,
}

/// A node of the cluster as one observer sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClusterNode {
    /// Node id.
    pub id: NodeId,
    /// Current liveness.
    pub liveness: Liveness,
    /// Unix time (ms) of the last liveness change.
    pub since_unix_ms: u64,
    /// The last liveness changes, oldest first (at most 16).
    pub transitions: Vec<Transition>,
    /// Generation of the node's current incarnation.
    pub generation: u64,
    /// Gossip address.
    pub gossip_addr: String,
    /// What the node published about itself, once received.
    pub info: Option<NodeInfo>,
    /// Its resources, once received.
    pub capacity: Option<Capacity>,
    /// Its network coordinate, once received.
    pub coordinate: Option<Coordinate>,
    /// True for the observing node itself.
    pub is_self: bool,
}

/// A site and its nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Site {
    /// Site name.
    pub name: String,
    /// Nodes of the site, alive or not.
    pub nodes: Vec<NodeId>,
    /// How many of them are alive or suspect.
    pub alive: usize,
    /// Coordinates of the site, from the first node that gives some.
    pub latitude: Option<f64>,
    /// Coordinates of the site, from the first node that gives some.
    pub longitude: Option<f64>,
}

/// Estimated round-trip time between two nodes, from their coordinates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RttEstimate {
    /// First node.
    pub from: NodeId,
    /// Second node.
    pub to: NodeId,
    /// Estimated round-trip time, milliseconds.
    pub rtt_ms: f64,
    /// Relative error estimate of the two coordinates (0 = confident).
    pub error: f64,
}

/// Why a node could not be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("no node matches {0:?}")]
    NotFound(String),
    #[error("{query:?} matches several nodes: {}", .candidates.join(", "))]
    Ambiguous {
        query: String,
        candidates: Vec<String>,
    },
}

/// Find a node by exact id, exact name, or unique id prefix (at least 4
/// hex digits).
pub fn find<'a>(nodes: &'a [ClusterNode], query: &str) -> Result<&'a ClusterNode, LookupError> {
    if let Some(n) = nodes.iter().find(|n| n.id.to_string() == query) {
        return Ok(n);
    }
    let by_name: Vec<&ClusterNode> = nodes
        .iter()
        .filter(|n| n.info.as_ref().is_some_and(|i| i.name == query))
        .collect();
    let by_prefix: Vec<&ClusterNode> = if query.len() >= 4 {
        nodes
            .iter()
            .filter(|n| n.id.to_string().starts_with(query))
            .collect()
    } else {
        Vec::new()
    };
    let candidates = if by_name.is_empty() {
        by_prefix
    } else {
        by_name
    };
    match candidates.as_slice() {
        [one] => Ok(one),
        [] => Err(LookupError::NotFound(query.to_owned())),
        many => Err(LookupError::Ambiguous {
            query: query.to_owned(),
            candidates: many.iter().map(|n| n.id.to_string()).collect(),
        }),
    }
}

/// Estimate the RTT between two nodes; `None` until both have coordinates.
pub fn estimate_rtt(a: &ClusterNode, b: &ClusterNode) -> Option<RttEstimate> {
    let (ca, cb) = (a.coordinate.as_ref()?, b.coordinate.as_ref()?);
    if a.id == b.id {
        return Some(RttEstimate {
            from: a.id,
            to: b.id,
            rtt_ms: 0.0,
            error: 0.0,
        });
    }
    Some(RttEstimate {
        from: a.id,
        to: b.id,
        rtt_ms: ca.distance_secs(cb) * 1000.0,
        error: (ca.error + cb.error) / 2.0,
    })
}

/// Group nodes by site; nodes whose info has not arrived yet are left out.
pub fn sites(nodes: &[ClusterNode]) -> Vec<Site> {
    let mut by_name: BTreeMap<String, Site> = BTreeMap::new();
    for n in nodes {
        let Some(info) = &n.info else { continue };
        let site = by_name
            .entry(info.site.name.get().clone())
            .or_insert_with(|| Site {
                name: info.site.name.get().clone(),
                nodes: Vec::new(),
                alive: 0,
                latitude: None,
                longitude: None,
            });
        site.nodes.push(n.id);
        if matches!(n.liveness, Liveness::Alive | Liveness::Suspect) {
            site.alive += 1;
        }
        if site.latitude.is_none()
            && let (Some(lat), Some(lon)) = (&info.site.latitude, &info.site.longitude)
        {
            site.latitude = Some(*lat.get());
            site.longitude = Some(*lon.get());
        }
    }
    by_name.into_values().collect()
}

/// Dimensions of a Vivaldi coordinate (as in Serf).
pub const COORD_DIMENSIONS: usize = 8;

/// A Vivaldi network coordinate with height and error, after Serf's
/// `coordinate` package: the distance between two coordinates estimates the
/// round-trip time between their nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Coordinate {
    /// Euclidean part, in seconds.
    pub vec: Vec<f64>,
    /// Estimated error, relative (1.5 at start, shrinks as samples agree).
    pub error: f64,
    /// Height: the access-link part of the latency, in seconds.
    pub height: f64,
    /// Adjustment term, in seconds (mean of recent residuals).
    pub adjustment: f64,
}

/// Tuning of the Vivaldi algorithm (Serf's defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VivaldiTuning {
    pub error_max: f64,
    pub ce: f64,
    pub cc: f64,
    pub height_min: f64,
    pub gravity_rho: f64,
}

impl Default for VivaldiTuning {
    fn default() -> Self {
        VivaldiTuning {
            error_max: 1.5,
            ce: 0.25,
            cc: 0.25,
            height_min: 10.0e-6,
            gravity_rho: 150.0,
        }
    }
}

impl Default for Coordinate {
    fn default() -> Self {
        Coordinate {
            vec: vec![0.0; COORD_DIMENSIONS],
            error: VivaldiTuning::default().error_max,
            height: VivaldiTuning::default().height_min,
            adjustment: 0.0,
        }
    }
}

impl Coordinate {
    /// Whether every component is a finite number of the right dimension
    /// (coordinates arrive from the network).
    pub fn is_valid(&self) -> bool {
        self.vec.len() == COORD_DIMENSIONS
            && self.vec.iter().all(|v| v.is_finite())
            && self.error.is_finite()
            && self.height.is_finite()
            && self.adjustment.is_finite()
    }

    fn raw_distance(&self, other: &Coordinate) -> f64 {
        let d: f64 = self
            .vec
            .iter()
            .zip(&other.vec)
            .map(|(a, b)| (a - b) * (a - b))
            .sum();
        d.sqrt() + self.height + other.height
    }

    /// Estimated round-trip time to `other`, in seconds.
    pub fn distance_secs(&self, other: &Coordinate) -> f64 {
        let raw = self.raw_distance(other);
        let adjusted = raw + self.adjustment + other.adjustment;
        if adjusted > 0.0 { adjusted } else { raw }
    }

    /// Move this coordinate after observing `rtt_secs` to a node at
    /// `other` (one step of Vivaldi, with Serf's height and gravity).
    pub fn update(&mut self, other: &Coordinate, rtt_secs: f64, tuning: &VivaldiTuning) {
        if !other.is_valid() || !rtt_secs.is_finite() || rtt_secs <= 0.0 || rtt_secs > 10.0 {
            return;
        }
        let dist = self.raw_distance(other);
        let total_error = (self.error + other.error).max(f64::EPSILON);
        let weight = self.error / total_error;
        let wrongness = (dist - rtt_secs).abs() / rtt_secs;
        self.error = (tuning.ce * weight * wrongness + self.error * (1.0 - tuning.ce * weight))
            .min(tuning.error_max);
        let force = tuning.cc * weight * (rtt_secs - dist);
        self.apply_force(other, force, tuning);
        // Gravity pulls everything gently towards the origin.
        let origin = Coordinate {
            vec: vec![0.0; COORD_DIMENSIONS],
            error: 0.0,
            height: 0.0,
            adjustment: 0.0,
        };
        let to_origin = self.raw_distance(&origin) - self.height;
        let gravity = -((to_origin / tuning.gravity_rho).powi(2));
        self.apply_force(&origin, gravity, tuning);
        // Serf keeps a window of residuals; one exponential average is enough here.
        let residual = rtt_secs - self.distance_secs(other);
        self.adjustment = 0.95 * self.adjustment + 0.05 * residual / 2.0;
        if !self.is_valid() {
            *self = Coordinate::default();
        }
    }

    fn apply_force(&mut self, other: &Coordinate, force: f64, tuning: &VivaldiTuning) {
        let diff: Vec<f64> = self
            .vec
            .iter()
            .zip(&other.vec)
            .map(|(a, b)| a - b)
            .collect();
        let mag = diff.iter().map(|d| d * d).sum::<f64>().sqrt();
        let unit: Vec<f64> = if mag > f64::EPSILON {
            diff.iter().map(|d| d / mag).collect()
        } else {
            // Coincident points: push along a fixed axis chosen from the force sign.
            let mut u = vec![0.0; COORD_DIMENSIONS];
            u[0] = 1.0;
            u
        };
        for (v, u) in self.vec.iter_mut().zip(&unit) {
            *v += u * force;
        }
        if mag > f64::EPSILON {
            self.height =
                ((self.height + other.height) * force / mag + self.height).max(tuning.height_min);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nodes placed on a line with RTT = |i - j| × 10 ms converge to
    /// coordinates whose distances predict those RTTs.
    #[test]
    fn vivaldi_learns_a_line() {
        let n = 6;
        let rtt = |i: usize, j: usize| (i as f64 - j as f64).abs() * 0.010 + 0.001;
        let tuning = VivaldiTuning::default();
        let mut coords = vec![Coordinate::default(); n];
        // Deterministic pseudo-random pairs.
        let mut x: u64 = 42;
        for _ in 0..20_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let i = (x >> 33) as usize % n;
            let j = (x >> 17) as usize % n;
            if i == j {
                continue;
            }
            let other = coords[j].clone();
            coords[i].update(&other, rtt(i, j), &tuning);
        }
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    let est = coords[i].distance_secs(&coords[j]);
                    let err = (est - rtt(i, j)).abs() / rtt(i, j);
                    assert!(
                        err < 0.25,
                        "rtt {i}-{j}: est {est} vs {} ({err})",
                        rtt(i, j)
                    );
                }
            }
        }
    }

    #[test]
    fn liveness_words_match_the_json_names() {
        for l in Liveness::ALL {
            assert_eq!(serde_json::to_value(l).unwrap(), l.as_str());
        }
    }

    #[test]
    fn garbage_from_the_network_never_poisons_a_coordinate() {
        let mut c = Coordinate::default();
        let bad = Coordinate {
            vec: vec![f64::NAN; COORD_DIMENSIONS],
            ..Coordinate::default()
        };
        c.update(&bad, 0.01, &VivaldiTuning::default());
        assert!(c.is_valid());
        let short = Coordinate {
            vec: vec![1.0; 2],
            ..Coordinate::default()
        };
        c.update(&short, 0.01, &VivaldiTuning::default());
        assert!(c.is_valid());
        c.update(
            &Coordinate::default(),
            f64::INFINITY,
            &VivaldiTuning::default(),
        );
        assert!(c.is_valid());
    }
}
