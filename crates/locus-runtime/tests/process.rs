//! The `process` driver against a real executable: Debian's static busybox
//! (built into `target/test-assets/` by `scripts/test-images.sh`, which these
//! tests run themselves when the asset is missing).

mod common;

use common::{random_id, wait_exit};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use locus_core::workload::{SpecFormat, WorkloadSpec};
use locus_runtime::process::ProcessDriver;
use locus_runtime::{Driver, DriverError, Exit, Instance, Observed, Run};

/// The static busybox executable.
fn busybox() -> PathBuf {
    common::asset("busybox")
}

/// A run of busybox with `args`, in a fresh directory.
fn run(dir: &Path, args: &[&str], memory_mb: u64, log_limit_bytes: u64) -> Run {
    let spec = serde_json::json!({
        "name": "t",
        "kind": "process",
        "source": busybox(),
        "args": args,
        "env": { "GREETING": "hello" },
        "resources": { "memory_mb": memory_mb },
    });
    Run {
        id: random_id(),
        epoch: 1,
        spec: WorkloadSpec::parse(&spec.to_string(), SpecFormat::Json).expect("valid spec"),
        dir: dir.to_owned(),
        log_limit_bytes,
    }
}

fn log_text(dir: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(dir.join("log")).unwrap_or_default()).into_owned()
}

/// Wait until the log holds `needle` (the process reached that point).
async fn wait_log(dir: &Path, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log_text(dir).contains(needle) {
        assert!(
            Instant::now() < deadline,
            "log never showed {needle:?}: {:?}",
            log_text(dir)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pid_of(instance: &Instance) -> i32 {
    instance.handle.split(':').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn output_env_and_cwd_go_where_they_should_and_code_0_is_success() {
    let dir = tempfile::tempdir().unwrap();
    let driver = ProcessDriver::new();
    driver.probe().await.unwrap();
    let r = run(
        dir.path(),
        &[
            "sh",
            "-c",
            "echo to stdout; echo to stderr >&2; echo \"greeting=$GREETING\"; \
                       echo \"cargo=[$CARGO_MANIFEST_DIR]\"; echo \"cwd=$(pwd)\"; exit 0",
        ],
        64,
        1 << 20,
    );
    let instance = driver.start(&r).await.unwrap();
    assert_eq!(instance.id, r.id);
    let (pid, start) = instance.handle.split_once(':').unwrap();
    assert!(
        pid.parse::<u32>().is_ok() && start.parse::<u64>().is_ok(),
        "{}",
        instance.handle
    );

    let exit = wait_exit(&driver, &instance, Duration::from_secs(10)).await;
    assert_eq!(
        exit,
        Exit {
            code: Some(0),
            failed: false,
            reason: "exited with code 0".into()
        }
    );
    let log = log_text(dir.path());
    assert!(
        log.contains("to stdout\n") && log.contains("to stderr\n"),
        "{log}"
    );
    assert!(
        log.contains("greeting=hello\n"),
        "the spec's env reaches the process: {log}"
    );
    assert!(
        log.contains("cargo=[]\n"),
        "the agent's env does not leak: {log}"
    );
    let files = std::fs::canonicalize(r.files_dir()).unwrap();
    assert!(log.contains(&format!("cwd={}\n", files.display())), "{log}");
    // Idempotent on an ended instance.
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
    println!("limits here: {}", driver.limits());
}

#[tokio::test]
async fn a_non_zero_exit_is_a_failure_with_its_code() {
    let dir = tempfile::tempdir().unwrap();
    let driver = ProcessDriver::new();
    let instance = driver
        .start(&run(dir.path(), &["sh", "-c", "exit 7"], 64, 1 << 20))
        .await
        .unwrap();
    let exit = wait_exit(&driver, &instance, Duration::from_secs(10)).await;
    assert_eq!(
        exit,
        Exit {
            code: Some(7),
            failed: true,
            reason: "exited with code 7".into()
        }
    );
}

#[tokio::test]
async fn a_missing_or_non_executable_source_is_a_source_error() {
    let dir = tempfile::tempdir().unwrap();
    let driver = ProcessDriver::new();
    let mut r = run(dir.path(), &[], 64, 1 << 20);
    let missing = dir.path().join("nope");
    r.spec.source = serde_json::from_value(serde_json::json!(missing)).unwrap();
    match driver.start(&r).await {
        Err(DriverError::Source { reason, .. }) => {
            assert!(reason.contains("No such file"), "{reason}")
        }
        other => panic!("expected a source error, got {other:?}"),
    }
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "#!/bin/sh\n").unwrap();
    r.spec.source = serde_json::from_value(serde_json::json!(plain)).unwrap();
    match driver.start(&r).await {
        Err(DriverError::Source { reason, .. }) => {
            assert!(reason.contains("not executable"), "{reason}")
        }
        other => panic!("expected a source error, got {other:?}"),
    }
}

#[tokio::test]
async fn stop_ends_a_running_process_with_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let driver = ProcessDriver::new();
    let instance = driver
        .start(&run(dir.path(), &["sleep", "30"], 64, 1 << 20))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(driver.observe(&instance).await, Observed::Running);
    let t = Instant::now();
    let exit = driver
        .stop(&instance, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "stop took {:?}",
        t.elapsed()
    );
    assert_eq!(
        exit,
        Exit {
            code: None,
            failed: true,
            reason: "killed by SIGTERM".into()
        }
    );
    assert_eq!(driver.observe(&instance).await, Observed::Exited(exit));
}

#[tokio::test]
async fn a_process_ignoring_sigterm_is_killed_after_the_timeout_with_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let driver = ProcessDriver::new();
    // The shell and its `sleep` child both ignore SIGTERM.
    let args = [
        "sh",
        "-c",
        "trap '' TERM; echo ready; sleep 30; echo survived",
    ];
    let instance = driver
        .start(&run(dir.path(), &args, 64, 1 << 20))
        .await
        .unwrap();
    wait_log(dir.path(), "ready").await;
    let t = Instant::now();
    let exit = driver
        .stop(&instance, Duration::from_secs(1))
        .await
        .unwrap();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(4),
        "stop took {took:?}"
    );
    assert_eq!(
        exit,
        Exit {
            code: None,
            failed: true,
            reason: "killed by SIGKILL".into()
        }
    );
    // The group went with it: no `sleep` left in the session.
    let pid = pid_of(&instance);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let left: Vec<_> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let fields: Vec<&str> = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            // fields[3] is the process group (field 5), fields[0] the state.
            fields.get(3) == Some(&pid.to_string().as_str()) && fields.first() != Some(&"Z")
        })
        .collect();
    assert!(left.is_empty(), "processes left in the group: {left:?}");
    assert!(!log_text(dir.path()).contains("survived"));
}

#[tokio::test]
async fn a_process_needing_more_than_its_memory_limit_fails() {
    let dir = tempfile::tempdir().unwrap();
    let driver = ProcessDriver::new();
    let dd = ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"];
    // With room, the same command succeeds…
    let ok = driver
        .start(&run(dir.path(), &dd, 256, 1 << 20))
        .await
        .unwrap();
    let exit = wait_exit(&driver, &ok, Duration::from_secs(10)).await;
    assert_eq!(exit.code, Some(0), "{exit:?}: {}", log_text(dir.path()));
    // …and within 16 MiB it cannot get its 64 MiB buffer.
    let small = tempfile::tempdir().unwrap();
    let bad = driver
        .start(&run(small.path(), &dd, 16, 1 << 20))
        .await
        .unwrap();
    let exit = wait_exit(&driver, &bad, Duration::from_secs(10)).await;
    assert!(exit.failed, "{exit:?}");
    assert_ne!(exit.code, Some(0), "{exit:?}");
    let log = log_text(small.path());
    assert!(
        log.contains("memory"),
        "dd should say it is out of memory: {log:?}"
    );
}

#[tokio::test]
async fn a_restarted_agent_finds_a_running_process_and_can_stop_it() {
    let dir = tempfile::tempdir().unwrap();
    let first = ProcessDriver::new();
    let args = ["sh", "-c", "echo ready; exec sleep 30"];
    let instance = first
        .start(&run(dir.path(), &args, 64, 1 << 20))
        .await
        .unwrap();
    wait_log(dir.path(), "ready").await;

    // The "restarted agent": a new driver that knows only the handle.
    let second = ProcessDriver::new();
    assert_eq!(second.observe(&instance).await, Observed::Running);
    let t = Instant::now();
    let exit = second
        .stop(&instance, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "stop took {:?}",
        t.elapsed()
    );
    assert!(exit.reason.contains("SIGTERM"), "{exit:?}");
    match second.observe(&instance).await {
        Observed::Exited(e) => assert!(e.code.is_none() && e.failed, "{e:?}"),
        other => panic!("expected an exit, got {other:?}"),
    }
    // The first driver, which reaped it, knows exactly how it ended.
    let exit = wait_exit(&first, &instance, Duration::from_secs(5)).await;
    assert_eq!(exit.reason, "killed by SIGTERM");
    second.remove(&instance).await.unwrap();

    // A handle whose process is gone, or whose pid was reused.
    let gone = Instance {
        handle: format!("{}:1", std::process::id()),
        ..instance.clone()
    };
    match second.observe(&gone).await {
        Observed::Exited(e) => assert!(e.reason.contains("agent was down"), "{e:?}"),
        other => panic!("expected an exit, got {other:?}"),
    }
    let bad = Instance {
        handle: "nonsense".into(),
        ..instance
    };
    assert_eq!(second.observe(&bad).await, Observed::Gone);
    assert!(second.stop(&bad, Duration::from_secs(1)).await.is_err());
}

fn size(dir: &Path, file: &str) -> u64 {
    std::fs::metadata(dir.join(file))
        .map(|m| m.len())
        .unwrap_or(0)
}

/// Watch the log of a chatty process for `period`, checking at every
/// sample that `log.1` holds at most half the limit and `log` at most half
/// the limit plus what the process wrote in the last second (`wchar` of
/// /proc/<pid>/io) — the keeper looks every 50 ms while the process stays
/// chatty and every 500 ms at most otherwise; the rest of the second is
/// room for a loaded machine. Returns the bytes written and the most bytes
/// on disk at once.
async fn watch_bound(dir: &Path, pid: i32, limit: u64, period: Duration) -> (u64, u64) {
    let written = || -> Option<u64> {
        let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
        io.lines()
            .find_map(|l| l.strip_prefix("wchar: "))?
            .trim()
            .parse()
            .ok()
    };
    let window = Duration::from_secs(1);
    // (time, bytes written by then)
    let mut history: Vec<(Instant, u64)> = Vec::new();
    let start = Instant::now();
    let mut peak = 0;
    while start.elapsed() < period {
        let (log, old) = (size(dir, "log"), size(dir, "log.1"));
        let Some(now_written) = written() else { break };
        let now = Instant::now();
        history.push((now, now_written));
        let before = history
            .iter()
            .rev()
            .find(|(t, _)| now.duration_since(*t) >= window)
            .map_or(0, |(_, w)| *w);
        assert!(
            old <= limit / 2,
            "log.1 holds {old} bytes; the limit is {limit}"
        );
        assert!(
            log <= limit / 2 + (now_written - before),
            "log holds {log} bytes, more than half the limit plus the {} bytes written in the last {window:?}",
            now_written - before
        );
        peak = peak.max(log + old);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (history.last().map_or(0, |(_, w)| *w), peak)
}

#[tokio::test]
async fn a_chatty_process_never_holds_much_more_than_its_log_limit() {
    let dir = tempfile::tempdir().unwrap();
    let driver = ProcessDriver::new();
    let limit: u64 = 64 * 1024;
    let instance = driver
        .start(&run(dir.path(), &["yes"], 64, limit))
        .await
        .unwrap();
    let (written, peak) = watch_bound(
        dir.path(),
        pid_of(&instance),
        limit,
        Duration::from_millis(2500),
    )
    .await;
    let exit = driver
        .stop(&instance, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(exit.reason, "killed by SIGTERM");
    // The keeper makes a last pass before the exit is reported.
    let (log, old) = (size(dir.path(), "log"), size(dir.path(), "log.1"));
    assert!(
        log + old <= limit,
        "an ended run holds {} bytes; the limit is {limit}",
        log + old
    );
    assert!(written > 100 * limit, "yes wrote only {written} bytes");
    println!("yes wrote {written} bytes; at most {peak} were on disk at once");
    // The newest output is kept.
    let tail = std::fs::read(dir.path().join(if log > 0 { "log" } else { "log.1" })).unwrap();
    assert!(
        tail.ends_with(b"y\n"),
        "the log ends with {:?}",
        &tail[tail.len().saturating_sub(8)..]
    );
}

#[tokio::test]
async fn a_restarted_agent_keeps_bounding_the_log_of_a_process_it_adopts() {
    let dir = tempfile::tempdir().unwrap();
    let limit: u64 = 64 * 1024;
    let first = ProcessDriver::new();
    let instance = first
        .start(&run(dir.path(), &["yes"], 64, limit))
        .await
        .unwrap();
    // The agent goes away; the process logs on, and nothing bounds it.
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(size(dir.path(), "log") > limit, "the process kept logging");

    let second = ProcessDriver::new();
    assert_eq!(second.observe(&instance).await, Observed::Running);
    let (written, peak) = watch_bound(
        dir.path(),
        pid_of(&instance),
        limit,
        Duration::from_millis(1500),
    )
    .await;
    let exit = second
        .stop(&instance, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(exit.reason.contains("SIGTERM"), "{exit:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (log, old) = (size(dir.path(), "log"), size(dir.path(), "log.1"));
    assert!(
        log + old <= limit,
        "an ended run holds {} bytes; the limit is {limit}",
        log + old
    );
    println!("adopted: yes wrote {written} bytes; at most {peak} were on disk at once");
}

#[tokio::test]
async fn usage_counts_the_cpu_and_memory_of_the_whole_session() {
    let dir = tempfile::tempdir().unwrap();
    let driver = ProcessDriver::new();
    // The leader waits; a child it started burns CPU.
    let busy = driver
        .start(&run(
            dir.path(),
            &["sh", "-c", "while :; do :; done & wait"],
            64,
            1 << 20,
        ))
        .await
        .unwrap();
    let idle_dir = tempfile::tempdir().unwrap();
    let idle = driver
        .start(&run(idle_dir.path(), &["sleep", "600"], 64, 1 << 20))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (b0, i0) = (
        driver.usage(&busy).await.unwrap(),
        driver.usage(&idle).await.unwrap(),
    );
    let began = Instant::now();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let (b1, i1) = (
        driver.usage(&busy).await.unwrap(),
        driver.usage(&idle).await.unwrap(),
    );
    let secs = began.elapsed().as_secs_f64();
    let busy_cores = (b1.cpu_seconds - b0.cpu_seconds) / secs;
    let idle_cores = (i1.cpu_seconds - i0.cpu_seconds) / secs;
    assert!(
        busy_cores > 0.5,
        "busy: {busy_cores} cores ({b0:?} → {b1:?})"
    );
    assert!(
        idle_cores < 0.1,
        "idle: {idle_cores} cores ({i0:?} → {i1:?})"
    );
    assert!(b1.memory_bytes > 0 && i1.memory_bytes > 0, "{b1:?} {i1:?}");

    driver.kill(&busy).await.unwrap();
    driver.kill(&idle).await.unwrap();
    wait_exit(&driver, &busy, Duration::from_secs(10)).await;
    assert_eq!(
        driver.usage(&busy).await,
        None,
        "an ended process uses nothing"
    );
    assert_eq!(driver.usage(&idle).await, None);
    let bad = Instance {
        handle: "not a handle".to_owned(),
        ..idle.clone()
    };
    assert_eq!(driver.usage(&bad).await, None);
    driver.remove(&busy).await.unwrap();
    driver.remove(&idle).await.unwrap();
}
