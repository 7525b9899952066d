//! The node's resources as published to the cluster (the R' model), derived
//! from the host inventory.

use std::sync::Mutex;

use locus_core::cluster::{Allocation, Capacity};
use locus_core::inventory::Inventory;
use locus_core::workload::Kind;
use locus_fabric::udp::FabricHandle;

const GIB: u64 = 1 << 30;

/// Entries of each list published, at most (a record must fit in a packet).
const MAX_LISTED: usize = 16;

/// What the inventory offers, with cgroup limits applied.
pub fn of(inv: &Inventory) -> Capacity {
    let cores = u64::from(inv.cpu.online_cores.max(inv.cpu.logical_cores).max(1));
    let mut cpu = cores * 1000;
    if let Some(quota) = inv.cpu.cgroup_quota_millicores {
        cpu = cpu.min(quota);
    }
    let mut memory = inv.memory.total_bytes;
    if let Some(limit) = inv.memory.cgroup_limit_bytes {
        memory = memory.min(limit);
    }
    let physical = inv.interfaces.iter().filter(|i| !i.loopback);
    Capacity {
        cpu_millicores: cpu,
        memory_bytes: memory,
        // Whole GiB: free space moves all the time, the record should not.
        storage_bytes: inv.disk.available_bytes / GIB * GIB,
        bandwidth_mbps: physical.clone().filter_map(|i| i.speed_mbps).max(),
        interfaces: physical.map(|i| i.name.clone()).take(MAX_LISTED).collect(),
        devices: inv
            .devices()
            .into_iter()
            .map(|d| d.id)
            .take(MAX_LISTED)
            .collect(),
        battery_percent: inv
            .power
            .iter()
            .find(|p| p.kind.eq_ignore_ascii_case("battery"))
            .and_then(|p| p.capacity_percent),
        allocated: Allocation::default(),
        drivers: Vec::new(),
    }
}

/// Publishes the node's capacity whenever the inventory, the allocation or
/// the set of drivers changes (and only then: the record should not churn).
pub struct CapacityPublisher {
    fabric: FabricHandle,
    inner: Mutex<Published>,
}

#[derive(Default)]
struct Published {
    allocated: Allocation,
    drivers: Vec<Kind>,
    last: Option<Capacity>,
}

impl CapacityPublisher {
    /// A publisher writing to `fabric`.
    pub fn new(fabric: FabricHandle) -> CapacityPublisher {
        CapacityPublisher {
            fabric,
            inner: Mutex::new(Published::default()),
        }
    }

    /// Set what workloads hold and which drivers answer.
    pub fn set_usage(&self, allocated: Allocation, drivers: Vec<Kind>) {
        let mut p = self.lock();
        p.allocated = allocated;
        p.drivers = drivers;
    }

    /// The capacity as it would be published now.
    pub fn current(&self, inv: &Inventory) -> Capacity {
        let p = self.lock();
        let mut c = of(inv);
        c.allocated = p.allocated.clone();
        c.drivers = p.drivers.clone();
        c
    }

    /// Publish if anything changed; a failure is logged, never fatal.
    pub async fn publish(&self, inv: &Inventory) {
        let capacity = self.current(inv);
        {
            let mut p = self.lock();
            if p.last.as_ref() == Some(&capacity) {
                return;
            }
            p.last = Some(capacity.clone());
        }
        if let Err(e) = self
            .fabric
            .publish_json(locus_fabric::fabric::KEY_CAPACITY, &capacity)
            .await
        {
            self.lock().last = None;
            tracing::warn!(error = %e, "cannot publish the node capacity");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Published> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}
