//! The `container` driver against the real Docker engine of the node, with
//! a busybox image loaded from a `docker save` tarball (built into
//! `target/test-assets/` by `scripts/test-images.sh`, which these tests run
//! themselves when the tarball is missing). Every container a test creates
//! carries the test's own random workload id and is removed at the end,
//! even when the test fails.

mod common;

use common::wait_exit;

use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::RemoveImageOptions;
use locus_core::workload::{SpecFormat, WorkloadId, WorkloadSpec};
use locus_runtime::container::ContainerDriver;
use locus_runtime::{Driver, DriverError, Exit, Observed, Run};
use tokio::sync::OnceCell;

const IMAGE: &str = "locus-test-busybox:1";

/// The image tarball, built if missing, then loaded through the driver
/// once per test run after removing the image from the engine — so the
/// driver really loads it from the tarball.
async fn tarball() -> String {
    static LOADED: OnceCell<String> = OnceCell::const_new();
    LOADED
        .get_or_init(|| async {
            let tar = common::asset("busybox-image.tar");
            let docker = Docker::connect_with_unix_defaults()
                .unwrap()
                .negotiate_version()
                .await
                .unwrap();
            let options = RemoveImageOptions {
                force: true,
                ..Default::default()
            };
            let _ = docker.remove_image(IMAGE, Some(options), None).await;
            assert!(
                docker.inspect_image(IMAGE).await.is_err(),
                "{IMAGE} is still in the engine"
            );
            let driver = driver().await;
            let image = driver.load_image(&tar).await.unwrap();
            assert_eq!(image, IMAGE);
            docker
                .inspect_image(IMAGE)
                .await
                .expect("the image is in the engine after loading");
            // Loading again is a no-op that names the same image.
            assert_eq!(driver.load_image(&tar).await.unwrap(), IMAGE);
            tar.display().to_string()
        })
        .await
        .clone()
}

async fn driver() -> ContainerDriver {
    let driver = ContainerDriver::connect().expect("a Docker engine socket");
    driver.probe().await.expect("a Docker engine that answers");
    driver
}

async fn engine() -> Docker {
    Docker::connect_with_unix_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap()
}

/// A test's workload: a random id, and removal of every container carrying
/// it when dropped.
struct Workload {
    id: WorkloadId,
    dir: tempfile::TempDir,
}

impl Workload {
    fn new() -> Workload {
        Workload {
            id: common::random_id(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    async fn run(&self, args: &[&str], extra: serde_json::Value) -> Run {
        let mut spec = serde_json::json!({
            "name": "ctest",
            "kind": "container",
            "source": tarball().await,
            "args": args,
            "env": { "GREETING": "hello" },
        });
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        Run {
            id: self.id,
            epoch: 1,
            spec: WorkloadSpec::parse(&spec.to_string(), SpecFormat::Json).expect("valid spec"),
            dir: self.dir.path().to_owned(),
            log_limit_bytes: 1 << 20,
        }
    }

    fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.dir.path().join("log")).unwrap_or_default())
            .into_owned()
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let filter = format!("label=locus.workload={}", self.id);
        let out = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output();
        if let Ok(out) = out {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f", id])
                    .output();
            }
        }
    }
}

#[tokio::test]
async fn a_container_from_a_tarball_runs_logs_and_exits_0() {
    let w = Workload::new();
    let driver = driver().await;
    let script =
        "echo hello from a container; echo \"greeting=$GREETING\"; echo to stderr >&2; exit 0";
    let instance = driver
        .start(&w.run(&["sh", "-c", script], serde_json::json!({})).await)
        .await
        .unwrap();
    assert_eq!((instance.id, instance.epoch), (w.id, 1));

    let exit = wait_exit(&driver, &instance, Duration::from_secs(20)).await;
    assert_eq!(
        exit,
        Exit {
            code: Some(0),
            failed: false,
            reason: "exited with code 0".into()
        }
    );
    let log = w.log();
    for line in [
        "hello from a container\n",
        "greeting=hello\n",
        "to stderr\n",
    ] {
        assert!(log.contains(line), "{line:?} missing from the log: {log:?}");
    }
    // Name, labels and limits as documented.
    let c = engine()
        .await
        .inspect_container(&instance.handle, None)
        .await
        .unwrap();
    assert_eq!(
        c.name.as_deref(),
        Some(format!("/locus-{}-1", w.id).as_str())
    );
    let labels = c.config.unwrap().labels.unwrap();
    assert_eq!(labels.get("locus.workload"), Some(&w.id.to_string()));
    assert_eq!(labels.get("locus.epoch").map(String::as_str), Some("1"));
    assert_eq!(labels.get("locus.name").map(String::as_str), Some("ctest"));
    let host = c.host_config.unwrap();
    assert_eq!(host.nano_cpus, Some(100 * 1_000_000));
    assert_eq!(host.memory, Some(64 << 20));

    // Ended: stop and kill are no-ops that report the same end.
    assert_eq!(
        driver
            .stop(&instance, Duration::from_secs(1))
            .await
            .unwrap(),
        exit
    );
    assert_eq!(driver.kill(&instance).await.unwrap(), exit);
    driver.remove(&instance).await.unwrap();
    driver.remove(&instance).await.unwrap();
    assert_eq!(driver.observe(&instance).await, Observed::Gone);
}

#[tokio::test]
async fn a_failing_command_fails_and_a_missing_image_is_a_source_error() {
    let w = Workload::new();
    let driver = driver().await;
    let instance = driver
        .start(&w.run(&["sh", "-c", "exit 3"], serde_json::json!({})).await)
        .await
        .unwrap();
    let exit = wait_exit(&driver, &instance, Duration::from_secs(20)).await;
    assert_eq!(
        exit,
        Exit {
            code: Some(3),
            failed: true,
            reason: "exited with code 3".into()
        }
    );
    driver.remove(&instance).await.unwrap();

    let run = w
        .run(&[], serde_json::json!({ "source": "locus-test-missing:0" }))
        .await;
    match driver.start(&run).await {
        Err(DriverError::Source { reason, .. }) => {
            assert!(
                reason.contains("not in the engine") && reason.contains("tarball"),
                "{reason}"
            )
        }
        other => panic!("expected a source error, got {other:?}"),
    }
}

#[tokio::test]
async fn stop_ends_a_running_container_within_its_timeout() {
    let w = Workload::new();
    let driver = driver().await;
    let instance = driver
        .start(&w.run(&["sleep", "30"], serde_json::json!({})).await)
        .await
        .unwrap();
    assert_eq!(driver.observe(&instance).await, Observed::Running);
    let t = Instant::now();
    let exit = driver
        .stop(&instance, Duration::from_secs(1))
        .await
        .unwrap();
    // `sleep` as PID 1 ignores SIGTERM: the engine kills it after 1 s.
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "stop took {:?}",
        t.elapsed()
    );
    assert!(exit.failed && exit.code.is_some(), "{exit:?}");
    assert!(matches!(driver.observe(&instance).await, Observed::Exited(e) if e == exit));
    driver.remove(&instance).await.unwrap();
}

#[tokio::test]
async fn kill_ends_a_running_container_at_once() {
    let w = Workload::new();
    let driver = driver().await;
    let instance = driver
        .start(&w.run(&["sleep", "30"], serde_json::json!({})).await)
        .await
        .unwrap();
    assert_eq!(driver.observe(&instance).await, Observed::Running);
    let t = Instant::now();
    let exit = driver.kill(&instance).await.unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "kill took {:?}",
        t.elapsed()
    );
    assert_eq!(
        exit,
        Exit {
            code: Some(137),
            failed: true,
            reason: "exited with code 137 (killed by SIGKILL)".into()
        }
    );
    assert_eq!(driver.kill(&instance).await.unwrap(), exit);
    driver.remove(&instance).await.unwrap();
}

#[tokio::test]
async fn a_container_exceeding_its_memory_limit_is_oom_killed() {
    let w = Workload::new();
    let driver = driver().await;
    // `tail` keeps the current "line" of /dev/zero (which has no newline)
    // in memory: it grows until the limit stops it.
    let run = w
        .run(
            &["tail", "/dev/zero"],
            serde_json::json!({ "resources": { "memory_mb": 8 } }),
        )
        .await;
    let instance = driver.start(&run).await.unwrap();
    let exit = wait_exit(&driver, &instance, Duration::from_secs(30)).await;
    let info = engine().await.info().await.unwrap();
    assert_eq!(
        exit,
        Exit {
            code: Some(137),
            failed: true,
            reason: "memory limit of 8 MiB exceeded".into()
        },
        "the engine did not OOM-kill the container (memory limit support: {:?}, swap limit support: {:?}, \
         cgroup driver {:?} v{:?})",
        info.memory_limit,
        info.swap_limit,
        info.cgroup_driver,
        info.cgroup_version
    );
    driver.remove(&instance).await.unwrap();
}

#[tokio::test]
async fn ports_are_published_on_localhost() {
    let w = Workload::new();
    let driver = driver().await;
    let host_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let ports = serde_json::json!({ "ports": [
        { "container": 8080, "host": host_port },
        { "container": 5353, "protocol": "udp", "host": host_port },
    ] });
    let instance = driver
        .start(&w.run(&["sleep", "30"], ports).await)
        .await
        .unwrap();
    let c = engine()
        .await
        .inspect_container(&instance.handle, None)
        .await
        .unwrap();
    let ports = c.network_settings.and_then(|n| n.ports).unwrap_or_default();
    for key in ["8080/tcp", "5353/udp"] {
        let bound = ports.get(key).cloned().flatten().unwrap_or_default();
        assert!(
            bound
                .iter()
                .any(|b| b.host_ip.as_deref() == Some("127.0.0.1")
                    && b.host_port.as_deref() == Some(host_port.to_string().as_str())),
            "{key} is not published on 127.0.0.1:{host_port}: {ports:?}"
        );
    }
    driver.kill(&instance).await.unwrap();
    driver.remove(&instance).await.unwrap();
}

#[tokio::test]
async fn a_restarted_agent_finds_its_containers_again() {
    let w = Workload::new();
    let first = driver().await;
    let script = "echo before; sleep 1; echo after; sleep 30";
    let instance = first
        .start(&w.run(&["sh", "-c", script], serde_json::json!({})).await)
        .await
        .unwrap();
    drop(first);

    // The "restarted agent" knows nothing but what the engine holds.
    let second = driver().await;
    let found = second.leftovers().await.unwrap();
    assert!(
        found.contains(&instance),
        "{instance:?} not among the leftovers {found:?}"
    );
    assert!(
        found
            .iter()
            .all(|i| i.kind == locus_core::workload::Kind::Container)
    );
    assert_eq!(second.observe(&instance).await, Observed::Running);
    // It follows the logs again: what the container says now reaches the log.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !w.log().contains("after") {
        assert!(
            Instant::now() < deadline,
            "the log was not followed again: {:?}",
            w.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Removing a running container forces it; removing again is fine.
    second.remove(&instance).await.unwrap();
    second.remove(&instance).await.unwrap();
    assert_eq!(second.observe(&instance).await, Observed::Gone);
    assert!(!second.leftovers().await.unwrap().contains(&instance));
    // Stop and kill of a container that is gone report it, they do not fail.
    assert!(
        !second
            .stop(&instance, Duration::from_secs(1))
            .await
            .unwrap()
            .failed
    );
    assert!(!second.kill(&instance).await.unwrap().failed);
}

#[tokio::test]
async fn usage_reads_the_engine_s_cpu_and_memory_statistics() {
    let w = Workload::new();
    let driver = driver().await;
    let extra = serde_json::json!({ "resources": { "cpu_millicores": 1000 } });
    let instance = driver
        .start(&w.run(&["sh", "-c", "while :; do :; done"], extra).await)
        .await
        .unwrap();
    let first = driver.usage(&instance).await.expect("a running container");
    let began = Instant::now();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let second = driver.usage(&instance).await.unwrap();
    let cores = (second.cpu_seconds - first.cpu_seconds) / began.elapsed().as_secs_f64();
    // Held to one core by its quota; a busy loop gets most of it.
    assert!(
        cores > 0.5 && cores < 1.2,
        "{cores} cores: {first:?} → {second:?}"
    );
    assert!(second.memory_bytes > 0, "{second:?}");

    driver.kill(&instance).await.unwrap();
    assert_eq!(driver.usage(&instance).await, None, "an ended container");
    driver.remove(&instance).await.unwrap();
    assert_eq!(driver.usage(&instance).await, None, "a removed container");
}
