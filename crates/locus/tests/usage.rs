//! What running workloads measurably use, end to end on a real agent: a
//! process burning CPU and an idle one, measured through the gauges the
//! workloads service exports on `/metrics` (sampled every 5 s), and their
//! gauges gone once a workload stops.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use locus_testkit::*;
use serde_json::Value;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn find(agent: &Agent, name: &str) -> Option<Value> {
    get_json(agent, "/api/v1/workloads")
        .as_array()?
        .iter()
        .find(|w| w["name"] == name)
        .cloned()
}

fn wait_running(agent: &Agent, name: &str) -> String {
    wait_until(&format!("{name} runs"), Duration::from_secs(30), || {
        find(agent, name).is_some_and(|w| w["state"] == "running")
    });
    find(agent, name).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn metrics_text(agent: &Agent) -> String {
    anonymous()
        .get(agent.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap()
}

/// The value of one workload's gauge, if it is exported.
fn gauge(text: &str, family: &str, id: &str, name: &str) -> Option<f64> {
    let series = format!("{family}{{id=\"{id}\",name=\"{name}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series)?.parse().ok())
}

/// Removes the test's workloads even when it fails (a process workload
/// outlives its agent).
struct Cleanup<'a>(&'a Agent, &'a [&'a str]);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for name in self.1 {
            let _ = cli(self.0, &["rm", "--force", name]);
        }
    }
}

#[test]
fn a_busy_process_measures_about_a_core_and_an_idle_one_next_to_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&dir.path().join("n"), &[]);
    let _cleanup = Cleanup(&agent, &["busy", "idle"]);
    let busy = write(
        dir.path(),
        "busy.toml",
        "name = \"busy\"\nkind = \"process\"\nsource = \"/bin/sh\"\n\
         args = [\"-c\", \"while :; do :; done\"]\n[resources]\ncpu_millicores = 1000\n",
    );
    let idle = write(
        dir.path(),
        "idle.toml",
        "name = \"idle\"\nkind = \"process\"\nsource = \"/bin/sleep\"\nargs = [\"600\"]\n",
    );
    ok(&cli(&agent, &["run", busy.to_str().unwrap()]));
    ok(&cli(&agent, &["run", idle.to_str().unwrap()]));
    let busy_id = wait_running(&agent, "busy");
    let idle_id = wait_running(&agent, "idle");

    // Each time the busy one's cumulative CPU changes a round has just
    // sampled both: note when, and what both gauges say.
    const CPU: &str = "locus_workload_cpu_seconds_total";
    const MEM: &str = "locus_workload_memory_bytes";
    let mut rounds: Vec<(Instant, f64, f64, f64, f64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(45);
    while rounds.len() < 4 {
        assert!(
            Instant::now() < deadline,
            "too few sampling rounds seen: {rounds:?}\n{}",
            metrics_text(&agent)
        );
        let text = metrics_text(&agent);
        let read = |family, id: &str, name| gauge(&text, family, id, name);
        if let (Some(bc), Some(ic), Some(bm), Some(im)) = (
            read(CPU, &busy_id, "busy"),
            read(CPU, &idle_id, "idle"),
            read(MEM, &busy_id, "busy"),
            read(MEM, &idle_id, "idle"),
        ) && rounds.last().is_none_or(|r| r.1 != bc)
        {
            rounds.push((Instant::now(), bc, ic, bm, im));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The first change seen may be the first sample of all: measure from
    // the second to the last (about 10 s).
    let (first, last) = (rounds[1], rounds[rounds.len() - 1]);
    let secs = (last.0 - first.0).as_secs_f64();
    let busy_cores = (last.1 - first.1) / secs;
    let idle_cores = (last.2 - first.2) / secs;
    eprintln!(
        "over {secs:.1} s: busy {busy_cores:.3} cores, {} bytes; idle {idle_cores:.3} cores, {} bytes",
        last.3, last.4
    );
    assert!(
        busy_cores > 0.5,
        "busy: {busy_cores} cores over {secs} s: {rounds:?}"
    );
    assert!(
        idle_cores < 0.2,
        "idle: {idle_cores} cores over {secs} s: {rounds:?}"
    );
    assert!(last.3 > 0.0 && last.4 > 0.0, "memory: {rounds:?}");

    // Stopped, the busy one's gauges go at the next round.
    ok(&cli(&agent, &["stop", "busy"]));
    wait_until(
        "the stopped workload's gauges are removed",
        Duration::from_secs(20),
        || {
            let text = metrics_text(&agent);
            gauge(&text, CPU, &busy_id, "busy").is_none()
                && gauge(&text, MEM, &busy_id, "busy").is_none()
                && gauge(&text, CPU, &idle_id, "idle").is_some()
        },
    );
}
