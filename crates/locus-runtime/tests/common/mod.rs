//! Helpers shared by the driver tests: test assets, ids, waiting for an end.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use locus_core::workload::WorkloadId;
use locus_runtime::{Driver, Exit, Instance, Observed};

/// A test asset under `target/test-assets/`, built by
/// `scripts/test-images.sh` (run here, once, when it is missing).
pub fn asset(name: &str) -> PathBuf {
    static BUILD: Mutex<()> = Mutex::new(());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = root.join("target/test-assets").join(name);
    let _once = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if !path.exists() {
        let script = root.join("scripts/test-images.sh");
        let status = std::process::Command::new(&script)
            .status()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(status.success(), "{} failed: {status}", script.display());
    }
    assert!(
        path.exists(),
        "{} is missing after scripts/test-images.sh (is a Docker engine reachable?)",
        path.display()
    );
    path
}

/// A fresh workload id, so that tests never share containers or handles.
pub fn random_id() -> WorkloadId {
    use std::hash::{BuildHasher, RandomState};
    WorkloadId(RandomState::new().hash_one(Instant::now()).to_le_bytes())
}

/// Wait until the instance ends, at most `limit`; panics if it is gone.
pub async fn wait_exit(driver: &dyn Driver, instance: &Instance, limit: Duration) -> Exit {
    let deadline = Instant::now() + limit;
    loop {
        match driver.observe(instance).await {
            Observed::Exited(e) => return e,
            Observed::Gone => panic!("instance {} is gone", instance.handle),
            Observed::Running => {}
        }
        assert!(
            Instant::now() < deadline,
            "{} still running after {limit:?}",
            instance.handle
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
