//! The `wasm` driver against real wasmtime, with the WAT modules of
//! `tests/modules/`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use locus_core::workload::{Kind, SpecFormat, WorkloadId, WorkloadSpec};
use locus_runtime::wasm::WasmDriver;
use locus_runtime::{Driver, DriverError, Exit, Instance, Observed, Run, read_log};
use tempfile::TempDir;

fn module(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/modules")
        .join(name)
        .display()
        .to_string()
}

/// A run of `source` in a fresh directory; `resources` is TOML for the
/// `[resources]` table.
fn run(dir: &TempDir, source: &str, resources: &str) -> Run {
    let toml = format!(
        "name = \"hello-test\"\nsource = {source:?}\nargs = [\"world\"]\n\
         env = {{ GREETING = \"hi\" }}\n[resources]\n{resources}\n"
    );
    let spec = WorkloadSpec::parse(&toml, SpecFormat::Toml).expect("test spec parses");
    Run {
        id: WorkloadId([7; 8]),
        epoch: 1,
        spec,
        dir: dir.path().to_path_buf(),
        log_limit_bytes: 1 << 20,
    }
}

fn log_text(dir: &TempDir) -> String {
    let (bytes, _) = read_log(dir.path(), 1 << 20).expect("log readable");
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Wait (up to 2 s) for the instance to end.
async fn ended(driver: &WasmDriver, instance: &Instance) -> Exit {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match driver.observe(instance).await {
            Observed::Exited(exit) => return exit,
            Observed::Running if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            other => panic!("instance did not end: {other:?}"),
        }
    }
}

/// CPU time (user + system) of the calling thread, from
/// `/proc/thread-self/stat` (clock ticks of 10 ms).
fn thread_cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("/proc/thread-self/stat");
    // Fields after the command name (which is in parentheses): state is
    // field 3, utime field 14, stime field 15.
    let rest = &stat[stat.rfind(')').expect("stat has a command") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Duration::from_millis(ticks * 10)
}

#[tokio::test]
async fn a_module_sees_its_args_and_env_and_its_output_reaches_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let driver = WasmDriver::new().unwrap();
    assert_eq!(driver.kind(), Kind::Wasm);
    driver.probe().await.unwrap();
    let run = run(&dir, &module("hello.wat"), "");
    let instance = driver.start(&run).await.unwrap();
    assert_eq!(instance.kind, Kind::Wasm);
    assert_eq!((instance.id, instance.epoch), (run.id, run.epoch));

    let exit = ended(&driver, &instance).await;
    assert_eq!(
        exit,
        Exit {
            code: Some(0),
            failed: false,
            reason: "exited with code 0".to_owned()
        }
    );
    let log = log_text(&dir);
    assert!(log.contains("hello from wasm\n"), "{log:?}");
    // argv = [name, args...]; stderr shares the log.
    assert!(log.contains("\nhello-test\nworld\n"), "{log:?}");
    assert!(log.contains("GREETING=hi\n"), "{log:?}");
}

#[tokio::test]
async fn proc_exit_with_a_non_zero_code_is_a_failure_with_that_code() {
    let dir = tempfile::tempdir().unwrap();
    let driver = WasmDriver::new().unwrap();
    let instance = driver
        .start(&run(&dir, &module("exit3.wat"), ""))
        .await
        .unwrap();
    let exit = ended(&driver, &instance).await;
    assert_eq!(exit.code, Some(3));
    assert!(exit.failed);
    assert_eq!(exit.reason, "exited with code 3");
}

#[tokio::test]
async fn growing_memory_past_the_limit_fails_with_the_memory_limit() {
    let dir = tempfile::tempdir().unwrap();
    let driver = WasmDriver::new().unwrap();
    let instance = driver
        .start(&run(&dir, &module("grow.wat"), "memory_mb = 2"))
        .await
        .unwrap();
    let exit = ended(&driver, &instance).await;
    assert!(exit.failed, "{exit:?}");
    assert_eq!(exit.code, None);
    assert_eq!(exit.reason, "memory limit of 2 MiB exceeded");

    // A module whose initial memory is already past the limit does not
    // start.
    let big = dir.path().join("big.wat");
    std::fs::write(&big, "(module (memory 64) (func (export \"_start\")))").unwrap();
    match driver
        .start(&run(&dir, &big.display().to_string(), "memory_mb = 2"))
        .await
    {
        Err(DriverError::Runtime(reason)) => assert!(reason.contains("memory limit"), "{reason}"),
        other => panic!("expected a runtime error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_trap_is_a_failure_that_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let driver = WasmDriver::new().unwrap();
    let source = dir.path().join("trap.wat");
    std::fs::write(
        &source,
        "(module (memory 1) (func (export \"_start\") unreachable))",
    )
    .unwrap();
    let instance = driver
        .start(&run(&dir, &source.display().to_string(), ""))
        .await
        .unwrap();
    let exit = ended(&driver, &instance).await;
    assert!(exit.failed);
    assert!(exit.reason.starts_with("trapped: "), "{exit:?}");
    assert!(exit.reason.contains("unreachable"), "{exit:?}");
}

#[tokio::test]
async fn stop_interrupts_a_busy_infinite_loop() {
    let dir = tempfile::tempdir().unwrap();
    let driver = WasmDriver::new().unwrap();
    let instance = driver
        .start(&run(&dir, &module("spin.wat"), "cpu_millicores = 1000"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(driver.observe(&instance).await, Observed::Running);
    assert!(driver.cpu_time(&instance).unwrap() >= Duration::from_millis(20));
    // A running instance cannot be removed.
    assert!(driver.remove(&instance).await.is_err());

    let began = Instant::now();
    let exit = driver
        .stop(&instance, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(
        exit,
        Exit {
            code: None,
            failed: false,
            reason: "stopped".to_owned()
        }
    );
    assert_eq!(
        driver.observe(&instance).await,
        Observed::Exited(exit.clone())
    );
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
    assert_eq!(driver.observe(&instance).await, Observed::Gone);
    driver.remove(&instance).await.unwrap();
    assert!(driver.stop(&instance, Duration::from_secs(1)).await.is_ok());
}

#[tokio::test]
async fn kill_interrupts_a_loop_even_while_it_is_held_back_by_pacing() {
    let dir = tempfile::tempdir().unwrap();
    let driver = WasmDriver::new().unwrap();
    // One millicore: after its first tick the guest sleeps for seconds.
    let instance = driver
        .start(&run(&dir, &module("spin.wat"), "cpu_millicores = 1"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(driver.observe(&instance).await, Observed::Running);

    let began = Instant::now();
    let exit = driver.kill(&instance).await.unwrap();
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(exit.reason, "killed");
    assert_eq!(exit.code, None);
    assert_eq!(
        driver.observe(&instance).await,
        Observed::Exited(exit.clone())
    );
    assert_eq!(driver.kill(&instance).await.unwrap(), exit);
    assert_eq!(
        driver
            .stop(&instance, Duration::from_secs(1))
            .await
            .unwrap(),
        exit
    );
}

#[tokio::test]
async fn an_infinite_loop_is_paced_to_its_cpu_share() {
    // A current-thread runtime: the guest runs on this very thread, whose
    // CPU time the kernel accounts apart from the other tests'.
    let dir = tempfile::tempdir().unwrap();
    let driver = WasmDriver::new().unwrap();
    let instance = driver
        .start(&run(&dir, &module("spin.wat"), "cpu_millicores = 100"))
        .await
        .unwrap();
    let cpu_before = thread_cpu_time();
    let busy_before = driver.cpu_time(&instance).unwrap();
    let began = Instant::now();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let wall = began.elapsed();
    let cpu = thread_cpu_time() - cpu_before;
    let busy = driver.cpu_time(&instance).unwrap() - busy_before;
    driver.kill(&instance).await.unwrap();

    // 10% of ~1 s is 100 ms; allow the burst, tick granularity and the
    // kernel's 10 ms accounting. Unpaced, the loop would use all of it.
    assert!(
        cpu <= Duration::from_millis(250),
        "thread used {cpu:?} in {wall:?}"
    );
    assert!(
        busy <= Duration::from_millis(250),
        "guest was busy {busy:?} in {wall:?}"
    );
    // It did run.
    assert!(
        busy >= Duration::from_millis(10),
        "guest was busy {busy:?} in {wall:?}"
    );
}

#[tokio::test]
async fn a_module_writes_its_files_under_data() {
    let dir = tempfile::tempdir().unwrap();
    let driver = WasmDriver::new().unwrap();
    let run = run(&dir, &module("data.wat"), "");
    let instance = driver.start(&run).await.unwrap();
    let exit = ended(&driver, &instance).await;
    assert_eq!(exit.code, Some(0), "{exit:?}");
    let written = std::fs::read_to_string(run.files_dir().join("out.txt")).unwrap();
    assert_eq!(written, "written by wasm\n");
}

#[tokio::test]
async fn a_missing_or_invalid_source_is_a_source_error() {
    let dir = tempfile::tempdir().unwrap();
    let driver = WasmDriver::new().unwrap();
    let missing = dir.path().join("nope.wasm").display().to_string();
    match driver.start(&run(&dir, &missing, "")).await {
        Err(DriverError::Source { source_ref, reason }) => {
            assert_eq!(source_ref, missing);
            assert!(reason.contains("no such file"), "{reason}");
        }
        other => panic!("expected a source error, got {other:?}"),
    }

    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm but not really").unwrap();
    let garbage = garbage.display().to_string();
    assert!(matches!(
        driver.start(&run(&dir, &garbage, "")).await,
        Err(DriverError::Source { .. })
    ));

    // A module without `_start` is not a WASI command.
    let library = dir.path().join("lib.wat");
    std::fs::write(&library, "(module (func (export \"f\")))").unwrap();
    match driver
        .start(&run(&dir, &library.display().to_string(), ""))
        .await
    {
        Err(DriverError::Source { reason, .. }) => assert!(reason.contains("_start"), "{reason}"),
        other => panic!("expected a source error, got {other:?}"),
    }

    // A handle from a previous agent run is gone.
    let lost = Instance {
        id: WorkloadId([7; 8]),
        epoch: 1,
        kind: Kind::Wasm,
        handle: "wasm-0-0-1".to_owned(),
    };
    assert_eq!(driver.observe(&lost).await, Observed::Gone);
    assert!(driver.leftovers().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_the_guest_s_cpu_time_and_linear_memory() {
    let dir = tempfile::tempdir().unwrap();
    let driver = WasmDriver::new().unwrap();
    let busy = driver
        .start(&run(&dir, &module("spin.wat"), "cpu_millicores = 1000"))
        .await
        .unwrap();
    let first = driver.usage(&busy).await.expect("a running instance");
    // One page of 64 KiB, as the module declares.
    assert_eq!(first.memory_bytes, 65536);
    let began = Instant::now();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let second = driver.usage(&busy).await.unwrap();
    let cores = (second.cpu_seconds - first.cpu_seconds) / began.elapsed().as_secs_f64();
    // A busy loop on a (shared) core: well above idle, never above one core.
    assert!(
        cores > 0.3 && cores <= 1.05,
        "{cores} cores: {first:?} → {second:?}"
    );
    driver.kill(&busy).await.unwrap();
    assert_eq!(
        driver.usage(&busy).await,
        None,
        "an ended instance uses nothing"
    );

    // A guest that grows its memory up to its limit: the limit is what it has.
    let grow = driver
        .start(&run(&dir, &module("grow.wat"), "memory_mb = 1"))
        .await;
    if let Ok(grow) = grow {
        ended(&driver, &grow).await;
        assert_eq!(driver.usage(&grow).await, None);
    }
    let unknown = Instance {
        handle: "wasm-none-1".to_owned(),
        ..busy
    };
    assert_eq!(driver.usage(&unknown).await, None);
}
