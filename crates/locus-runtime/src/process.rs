//! The `process` driver: a native executable run as a child of the agent.
//!
//! - The child gets exactly the spec's environment plus the agent's `PATH`
//!   (a `PATH` in the spec wins), runs in `<dir>/files`, and leads its own
//!   session (`setsid`), so a stop or kill reaches every process it started.
//! - Its stdout and stderr are the log file itself (`<dir>/log`, opened
//!   `O_APPEND`): it keeps logging when the agent is down. A keeper task
//!   bounds the file by copy-truncate (see [`ProcessDriver`]).
//! - The handle is `pid:starttime` (field 22 of `/proc/<pid>/stat`), so a
//!   restarted agent can find the process again and never mistakes a reused
//!   pid for it.
//!
//! Limits: `RLIMIT_AS` (address space) is always set to the memory limit;
//! on a writable cgroup v2 hierarchy the child also runs in
//! `/sys/fs/cgroup/locus/<workload id>` with `cpu.max` and `memory.max`.
//! Without one (cgroup v1, no permission) the CPU share is not enforced —
//! [`ProcessDriver::limits`] says which applies.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use locus_core::workload::Kind;
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::{AccessFlags, Pid, access, setsid};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{Driver, DriverError, Exit, Instance, LOG_FILE, Observed, Run};

/// How often, at most, the keeper looks at a log file while the process is
/// quiet.
pub const KEEPER_PERIOD: Duration = Duration::from_millis(500);
/// How soon the keeper looks again after it had to cut the log, and first
/// after a start (a chatty process is watched more closely).
const KEEPER_BUSY_PERIOD: Duration = Duration::from_millis(50);
/// Sidecar file recording the log limit of a run, so that a restarted agent
/// can keep bounding the log of a process it adopts.
const LOG_LIMIT_FILE: &str = "log.limit";
/// How long to wait for a process to go after `SIGKILL`.
const KILL_GRACE: Duration = Duration::from_secs(10);
/// Poll interval for processes that are not our children.
const POLL: Duration = Duration::from_millis(25);
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// `cpu.max` period in microseconds.
const CPU_PERIOD_US: u64 = 100_000;

/// Runs native executables as child processes (see the module docs).
///
/// **Log bound.** A keeper task checks `<dir>/log` 50 ms after the start
/// and after each cut, backing off (doubling) to every [`KEEPER_PERIOD`]
/// while the log stays small. When the log is over half of
/// `log_limit_bytes` it keeps the newest half-limit of bytes as
/// `<dir>/log.1` and truncates `log` to 0 (copy-truncate: the process's
/// `O_APPEND` writes go on at the new end; what it writes during the cut
/// itself is lost). So `log.1` never holds more than half the limit, `log`
/// holds at most half the limit plus what the process writes in one keeper
/// period, and once the process has ended (the keeper makes a last pass
/// before the exit is reported) both together hold at most the limit.
///
/// **Re-adoption.** A handle this driver did not start (a previous agent
/// run did) is looked up in `/proc`: alive with the same starttime, it is
/// `Running`, stop and kill signal its process group, and the log its
/// stdout points to keeps being bounded (the run's limit is recorded in
/// `<dir>/log.limit`). Gone, it is `Exited` with no code and `failed`:
/// its exit status is lost, and the usual causes (a crash, a reboot of the
/// node) are failures a restart policy should answer.
pub struct ProcessDriver {
    inner: Arc<Inner>,
}

struct Inner {
    entries: Mutex<HashMap<String, Entry>>,
    cgroup: Option<PathBuf>,
    limits: &'static str,
    /// Dropped with the driver: the tasks of its children then stop keeping
    /// their logs (whoever adopts them does) and only wait for them.
    alive: watch::Sender<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for (_, entry) in self
            .entries
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
        {
            if let Entry::Adopted {
                keeper: Some(keeper),
                ..
            } = entry
            {
                keeper.abort();
            }
        }
    }
}

enum Entry {
    /// Started by this driver: a task waits for it and records its exit.
    Child {
        pid: i32,
        exit: watch::Receiver<Option<Exit>>,
    },
    /// Left by a previous agent run and found again through `/proc`.
    Adopted {
        pid: i32,
        starttime: u64,
        keeper: Option<JoinHandle<()>>,
    },
}

impl Default for ProcessDriver {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessDriver {
    /// A driver; looks once for a usable cgroup v2 hierarchy (creating
    /// `/sys/fs/cgroup/locus` with the `cpu` and `memory` controllers).
    pub fn new() -> ProcessDriver {
        let (cgroup, limits) = match prepare_cgroup_root(Path::new(CGROUP_ROOT)) {
            Ok(dir) => (
                Some(dir),
                "cgroup v2 (cpu.max, memory.max) and RLIMIT_AS on the address space",
            ),
            Err(why) => {
                tracing::info!(
                    "process driver: no usable cgroup v2 hierarchy ({why}); memory is bounded by \
                     RLIMIT_AS only and the CPU share is not enforced"
                );
                (
                    None,
                    "RLIMIT_AS on the address space only (no usable cgroup v2 hierarchy: \
                     the CPU share is not enforced)",
                )
            }
        };
        ProcessDriver {
            inner: Arc::new(Inner {
                entries: Mutex::new(HashMap::new()),
                cgroup,
                limits,
                alive: watch::channel(()).0,
            }),
        }
    }

    /// Which resource limits this driver enforces on this node, in words.
    pub fn limits(&self) -> &'static str {
        self.inner.limits
    }
}

impl Inner {
    fn entries(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock leaves a map that is still valid.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A parsed `pid:starttime` handle.
#[derive(Debug, Clone, Copy)]
struct Handle {
    pid: i32,
    starttime: u64,
}

fn parse_handle(handle: &str) -> Option<Handle> {
    let (pid, start) = handle.split_once(':')?;
    let pid: i32 = pid.parse().ok()?;
    let starttime: u64 = start.parse().ok()?;
    (pid > 1).then_some(Handle { pid, starttime })
}

fn bad_handle(handle: &str) -> DriverError {
    DriverError::Runtime(format!(
        "invalid process handle {handle:?}: expected pid:starttime"
    ))
}

/// What `/proc/<pid>/stat` says about a process (times in clock ticks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcStat {
    state: char,
    /// Session id (field 6).
    session: i32,
    /// `utime + stime` (fields 14 and 15): the process's own CPU time,
    /// all its threads together.
    cpu_ticks: u64,
    /// `cutime + cstime` (fields 16 and 17): the CPU time of the children
    /// it has waited for.
    children_ticks: u64,
    /// Field 22, in clock ticks after boot.
    starttime: u64,
}

fn proc_stat(pid: i32) -> Option<ProcStat> {
    // Bytes, not text: a process may name itself with any bytes.
    parse_stat(&std::fs::read(format!("/proc/{pid}/stat")).ok()?)
}

/// Parse a `/proc/<pid>/stat` line; `None` for anything not shaped like
/// one (never panics).
fn parse_stat(bytes: &[u8]) -> Option<ProcStat> {
    // `pid (comm) state ...`: comm may hold spaces, parentheses and any
    // other byte, so it ends at the last `)`; every later field is ASCII.
    let close = bytes.iter().rposition(|b| *b == b')')?;
    let rest = std::str::from_utf8(bytes.get(close + 1..)?).ok()?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state).
    let field = |n: usize| fields.get(n.checked_sub(3)?).copied();
    let unsigned = |n: usize| field(n)?.parse::<u64>().ok();
    // cutime and cstime are signed in the kernel's format.
    let signed = |n: usize| {
        field(n)?
            .parse::<i64>()
            .ok()
            .map(|v| u64::try_from(v).unwrap_or(0))
    };
    Some(ProcStat {
        state: field(3)?.chars().next()?,
        session: field(6)?.parse().ok()?,
        cpu_ticks: unsigned(14)?.saturating_add(unsigned(15)?),
        children_ticks: signed(16)?.saturating_add(signed(17)?),
        starttime: unsigned(22)?,
    })
}

/// Resident pages from a `/proc/<pid>/statm` line (its second field).
fn parse_statm_resident(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes)
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The cgroup v2 path of a process from `/proc/<pid>/cgroup` (the line
/// `0::<path>`), relative to the cgroup mount.
fn parse_cgroup_v2_path(text: &str) -> Option<&str> {
    text.lines().find_map(|l| l.strip_prefix("0::"))
}

/// The value of `key` in a flat keyed cgroup file (`cpu.stat`,
/// `memory.stat`: lines of `key value`).
fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut parts = l.split_whitespace();
        (parts.next()? == key).then_some(())?;
        parts.next()?.parse().ok()
    })
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`; 100, Linux's
/// `USER_HZ`, if it cannot be read).
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .and_then(|t| u64::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

/// Bytes per page (`sysconf(_SC_PAGESIZE)`; 4096 if it cannot be read).
fn page_size() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .and_then(|p| u64::try_from(p).ok())
            .filter(|p| *p > 0)
            .unwrap_or(4096)
    })
}

fn resident_pages(pid: i32) -> Option<u64> {
    parse_statm_resident(&std::fs::read(format!("/proc/{pid}/statm")).ok()?)
}

/// What a cgroup v2 directory says its processes use: `usage_usec` of
/// `cpu.stat` (everything that ever ran in it), and `memory.current`
/// less `inactive_file` of `memory.stat` (the working set: page cache the
/// kernel may reclaim first is not counted).
fn cgroup_usage(dir: &Path) -> Option<crate::Usage> {
    let cpu = std::fs::read_to_string(dir.join("cpu.stat")).ok()?;
    let usec = keyed_value(&cpu, "usage_usec")?;
    let current: u64 = std::fs::read_to_string(dir.join("memory.current"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let inactive = std::fs::read_to_string(dir.join("memory.stat"))
        .ok()
        .and_then(|t| keyed_value(&t, "inactive_file"))
        .unwrap_or(0);
    Some(crate::Usage {
        cpu_seconds: usec as f64 / 1e6,
        memory_bytes: current.saturating_sub(inactive),
    })
}

/// Whether process `pid` is in the cgroup v2 directory `dir`.
fn in_cgroup(pid: i32, dir: &Path) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .as_deref()
        .and_then(parse_cgroup_v2_path)
        .is_some_and(|rel| Path::new(CGROUP_ROOT).join(rel.trim_start_matches('/')) == dir)
}

/// What the process of a handle uses, with everything it started: from
/// its cgroup when it runs in `cgroup`, else summed over its session.
/// `None` once it is gone (or the pid is another process's).
fn process_usage(h: Handle, cgroup: Option<&Path>) -> Option<crate::Usage> {
    let leader = proc_stat(h.pid)?;
    if leader.starttime != h.starttime || matches!(leader.state, 'Z' | 'X' | 'x') {
        return None;
    }
    if let Some(dir) = cgroup
        && in_cgroup(h.pid, dir)
        && let Some(usage) = cgroup_usage(dir)
    {
        return Some(usage);
    }
    let mut ticks = leader.cpu_ticks.saturating_add(leader.children_ticks);
    let mut pages = resident_pages(h.pid).unwrap_or(0);
    // The leader made its own session (`setsid`): its members are what it
    // started, unless they left for a session of their own.
    if leader.session == h.pid {
        let entries = std::fs::read_dir("/proc").ok()?;
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            if pid == h.pid {
                continue;
            }
            // Gone since the listing: nothing to count.
            let Some(stat) = proc_stat(pid) else {
                continue;
            };
            if stat.session != h.pid {
                continue;
            }
            ticks = ticks
                .saturating_add(stat.cpu_ticks)
                .saturating_add(stat.children_ticks);
            pages = pages.saturating_add(resident_pages(pid).unwrap_or(0));
        }
    }
    Some(crate::Usage {
        cpu_seconds: ticks as f64 / clock_ticks() as f64,
        memory_bytes: pages.saturating_mul(page_size()),
    })
}

/// Whether the process of a handle is still the one we started, and alive.
fn is_alive(h: Handle) -> bool {
    matches!(proc_stat(h.pid), Some(s) if s.starttime == h.starttime && !matches!(s.state, 'Z' | 'X' | 'x'))
}

/// How a process ended, from its wait status.
fn exit_of(status: ExitStatus) -> Exit {
    if let Some(code) = status.code() {
        Exit {
            code: Some(code),
            failed: code != 0,
            reason: format!("exited with code {code}"),
        }
    } else if let Some(sig) = status.signal() {
        let core = if status.core_dumped() {
            " (core dumped)"
        } else {
            ""
        };
        Exit {
            code: None,
            failed: true,
            reason: format!("killed by {}{core}", signal_name(sig)),
        }
    } else {
        Exit {
            code: None,
            failed: true,
            reason: format!("ended with wait status {status}"),
        }
    }
}

fn signal_name(sig: i32) -> String {
    Signal::try_from(sig)
        .map(|s| s.as_str().to_owned())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

/// The exit of an adopted process that has gone: a previous agent run
/// started it, so nobody here could read its exit status. It counts as a
/// failure: the usual cause is a crash or a reboot of the node, and a
/// workload whose restart policy is `on-failure` should then run again.
fn unobserved_exit() -> Exit {
    Exit {
        code: None,
        failed: true,
        reason: "exited while the agent was down (exit status unknown)".to_owned(),
    }
}

/// Send a signal to the process group led by `pid`; a group that is gone
/// is fine.
fn signal_group(pid: i32, sig: Signal) -> Result<(), DriverError> {
    match killpg(Pid::from_raw(pid), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(DriverError::Runtime(format!(
            "cannot send {} to process group {pid}: {e}",
            sig.as_str()
        ))),
    }
}

fn source_error(source: &str, reason: impl Into<String>) -> DriverError {
    DriverError::Source {
        source_ref: source.to_owned(),
        reason: reason.into(),
    }
}

/// The executable of a spec: an existing regular file the agent may run.
fn executable(source: &str) -> Result<PathBuf, DriverError> {
    let path = std::path::absolute(source)
        .map_err(|e| source_error(source, format!("not a usable path: {e}")))?;
    let meta = std::fs::metadata(&path)
        .map_err(|e| source_error(source, format!("cannot read it: {e}")))?;
    if !meta.is_file() {
        return Err(source_error(source, "not a regular file"));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(source_error(
            source,
            format!(
                "not executable (mode {:o})",
                meta.permissions().mode() & 0o7777
            ),
        ));
    }
    access(&path, AccessFlags::X_OK)
        .map_err(|e| source_error(source, format!("the agent may not execute it: {e}")))?;
    Ok(path)
}

/// Set up `<root>/locus` for workload cgroups: cgroup v2 with the `cpu`
/// and `memory` controllers, writable by the agent. Returns the directory,
/// or why it cannot be used.
fn prepare_cgroup_root(root: &Path) -> Result<PathBuf, String> {
    let controllers = std::fs::read_to_string(root.join("cgroup.controllers"))
        .map_err(|e| format!("{}/cgroup.controllers: {e}", root.display()))?;
    let have: Vec<&str> = controllers.split_whitespace().collect();
    for c in ["cpu", "memory"] {
        if !have.contains(&c) {
            return Err(format!("the {c} controller is not available"));
        }
    }
    access(root, AccessFlags::W_OK)
        .map_err(|e| format!("{} is not writable: {e}", root.display()))?;
    let enable = |dir: &Path| -> Result<(), String> {
        let file = dir.join("cgroup.subtree_control");
        let current = std::fs::read_to_string(&file).unwrap_or_default();
        if current.split_whitespace().any(|c| c == "cpu")
            && current.split_whitespace().any(|c| c == "memory")
        {
            return Ok(());
        }
        std::fs::write(&file, "+cpu +memory").map_err(|e| format!("{}: {e}", file.display()))
    };
    enable(root)?;
    let base = root.join("locus");
    std::fs::create_dir_all(&base).map_err(|e| format!("{}: {e}", base.display()))?;
    enable(&base)?;
    Ok(base)
}

/// Create the cgroup of a workload and set its limits; returns the path of
/// its `cgroup.procs` (the child moves itself in before `exec`).
fn workload_cgroup(base: &Path, run: &Run) -> Result<CString, DriverError> {
    let dir = base.join(run.id.to_string());
    let io = |path: &Path, source: std::io::Error| DriverError::Io {
        path: path.to_owned(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    let quota = run.spec.resources.cpu_millicores.get() * CPU_PERIOD_US / 1000;
    let cpu = dir.join("cpu.max");
    std::fs::write(&cpu, format!("{} {CPU_PERIOD_US}", quota.max(1000)))
        .map_err(|e| io(&cpu, e))?;
    let mem = dir.join("memory.max");
    std::fs::write(&mem, run.spec.resources.memory_bytes().to_string()).map_err(|e| io(&mem, e))?;
    // No swap beyond the limit, where swap is accounted.
    let _ = std::fs::write(dir.join("memory.swap.max"), "0");
    let procs = dir.join("cgroup.procs");
    CString::new(procs.as_os_str().as_encoded_bytes()).map_err(|_| {
        DriverError::Runtime(format!("cgroup path {} holds a NUL byte", procs.display()))
    })
}

/// If `log` is over `half` bytes, keep its newest `half` bytes as `log.1`
/// and truncate it to 0. Returns whether it cut.
fn cut_log(log: &Path, half: u64) -> std::io::Result<bool> {
    let mut file = match OpenOptions::new().read(true).write(true).open(log) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    if len <= half {
        return Ok(false);
    }
    file.seek(SeekFrom::Start(len - half))?;
    let mut tail = Vec::new();
    (&mut file).take(half).read_to_end(&mut tail)?;
    // Truncate at once, so the least output is lost between read and cut.
    file.set_len(0)?;
    let old = log.with_file_name(format!("{LOG_FILE}.1"));
    let tmp = log.with_file_name(format!("{LOG_FILE}.1.tmp"));
    std::fs::write(&tmp, &tail)?;
    std::fs::rename(&tmp, &old)?;
    Ok(true)
}

/// Bytes per log file for a run's limit (as [`crate::LogFile`] does).
fn half_of(limit: u64) -> u64 {
    (limit / 2).max(1024)
}

/// One keeper pass; returns the delay to the next: short after a cut
/// (the process is chatty), then doubling up to [`KEEPER_PERIOD`].
async fn keeper_pass(log: &Path, half: u64, delay: Duration) -> Duration {
    let calm = (delay * 2).min(KEEPER_PERIOD);
    // The size check is one cheap stat; only a cut goes off the async threads.
    match std::fs::metadata(log) {
        Ok(m) if m.len() > half => {}
        _ => return calm,
    }
    let path = log.to_owned();
    match tokio::task::spawn_blocking(move || cut_log(&path, half)).await {
        Ok(Ok(true)) => KEEPER_BUSY_PERIOD,
        Ok(Ok(false)) => calm,
        Ok(Err(e)) => {
            tracing::warn!("cannot bound log {}: {e}", log.display());
            KEEPER_PERIOD
        }
        Err(e) => {
            tracing::warn!("log keeper of {} failed: {e}", log.display());
            KEEPER_PERIOD
        }
    }
}

/// The log of a process we did not start: where its stdout points, if that
/// is a locus log with a recorded limit.
fn adopted_log(pid: i32) -> Option<(PathBuf, u64)> {
    let target = std::fs::read_link(format!("/proc/{pid}/fd/1")).ok()?;
    if target.file_name()? != LOG_FILE {
        return None;
    }
    let limit = std::fs::read_to_string(target.with_file_name(LOG_LIMIT_FILE)).ok()?;
    Some((target, limit.trim().parse().ok()?))
}

/// Keep bounding the log of an adopted process while it lives.
fn adopted_keeper(h: Handle) -> Option<JoinHandle<()>> {
    let (log, limit) = adopted_log(h.pid)?;
    let half = half_of(limit);
    Some(tokio::spawn(async move {
        let mut delay = KEEPER_BUSY_PERIOD;
        loop {
            let alive = is_alive(h);
            delay = keeper_pass(&log, half, delay).await;
            if !alive {
                break;
            }
            tokio::time::sleep(delay).await;
        }
    }))
}

impl ProcessDriver {
    /// Find the entry of an instance, adopting a live process this driver
    /// did not start.
    fn lookup(&self, handle: &str) -> Lookup {
        let mut entries = self.inner.entries();
        if let Some(entry) = entries.get(handle) {
            return match entry {
                Entry::Child { pid, exit, .. } => Lookup::Child(*pid, exit.clone()),
                Entry::Adopted { pid, starttime, .. } => Lookup::Adopted(Handle {
                    pid: *pid,
                    starttime: *starttime,
                }),
            };
        }
        let Some(h) = parse_handle(handle) else {
            return Lookup::Invalid;
        };
        if !is_alive(h) {
            return Lookup::Ended;
        }
        tracing::info!("adopting process {handle} left by a previous agent run");
        entries.insert(
            handle.to_owned(),
            Entry::Adopted {
                pid: h.pid,
                starttime: h.starttime,
                keeper: adopted_keeper(h),
            },
        );
        Lookup::Adopted(h)
    }

    /// Signal a process group, wait up to `timeout` for its leader to end,
    /// then `SIGKILL` the group. Returns how it ended.
    async fn end(
        &self,
        instance: &Instance,
        first: Signal,
        timeout: Duration,
    ) -> Result<Exit, DriverError> {
        match self.lookup(&instance.handle) {
            Lookup::Invalid => Err(bad_handle(&instance.handle)),
            Lookup::Ended => Ok(unobserved_exit()),
            Lookup::Child(pid, exit) => {
                if let Some(done) = exit.borrow().clone() {
                    return Ok(done);
                }
                signal_group(pid, first)?;
                let wait = |mut rx: watch::Receiver<Option<Exit>>, limit: Duration| async move {
                    let got = tokio::time::timeout(limit, rx.wait_for(Option::is_some)).await;
                    match got {
                        Ok(Ok(e)) => e.clone(),
                        _ => None,
                    }
                };
                let ended = match wait(exit.clone(), timeout).await {
                    Some(e) => e,
                    None => {
                        signal_group(pid, Signal::SIGKILL)?;
                        wait(exit.clone(), KILL_GRACE).await.ok_or_else(|| {
                            DriverError::Runtime(format!(
                                "process {} did not end {KILL_GRACE:?} after SIGKILL",
                                instance.handle
                            ))
                        })?
                    }
                };
                // The leader is gone (and reaped): kill what it left in its
                // group, so the workload ends as a whole.
                let _ = signal_group(pid, Signal::SIGKILL);
                Ok(ended)
            }
            Lookup::Adopted(h) => {
                if !is_alive(h) {
                    return Ok(unobserved_exit());
                }
                signal_group(h.pid, first)?;
                let mut sent = first;
                if !poll_end(h, timeout).await {
                    // Still the same process: the starttime was checked.
                    if is_alive(h) {
                        signal_group(h.pid, Signal::SIGKILL)?;
                        sent = Signal::SIGKILL;
                    }
                    if !poll_end(h, KILL_GRACE).await {
                        return Err(DriverError::Runtime(format!(
                            "process {} did not end {KILL_GRACE:?} after SIGKILL",
                            instance.handle
                        )));
                    }
                }
                Ok(Exit {
                    code: None,
                    failed: true,
                    reason: format!(
                        "ended after {} (started by a previous agent run: exit status unknown)",
                        sent.as_str()
                    ),
                })
            }
        }
    }
}

/// Wait up to `limit` for a process we cannot wait on to end.
async fn poll_end(h: Handle, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if !is_alive(h) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

enum Lookup {
    Invalid,
    /// Not ours and not alive.
    Ended,
    Child(i32, watch::Receiver<Option<Exit>>),
    Adopted(Handle),
}

#[async_trait]
impl Driver for ProcessDriver {
    fn kind(&self) -> Kind {
        Kind::Process
    }

    async fn probe(&self) -> Result<(), DriverError> {
        if Path::new("/proc/self/stat").exists() {
            Ok(())
        } else {
            Err(DriverError::Unavailable {
                kind: Kind::Process,
                reason: "/proc is not mounted".to_owned(),
            })
        }
    }

    async fn start(&self, run: &Run) -> Result<Instance, DriverError> {
        let source = run.spec.source.get();
        let program = executable(source)?;
        let io = |path: PathBuf| move |source| DriverError::Io { path, source };
        let files = run.files_dir();
        std::fs::create_dir_all(&files).map_err(io(files.clone()))?;
        let log_path = run.dir.join(LOG_FILE);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io(log_path.clone()))?;
        let log_err = log.try_clone().map_err(io(log_path.clone()))?;
        let limit_path = run.dir.join(LOG_LIMIT_FILE);
        std::fs::write(&limit_path, run.log_limit_bytes.to_string()).map_err(io(limit_path))?;
        let procs = match &self.inner.cgroup {
            Some(base) => Some(workload_cgroup(base, run)?),
            None => None,
        };

        let mut cmd = tokio::process::Command::new(&program);
        cmd.args(run.spec.args.iter().map(|a| a.get()))
            .env_clear()
            .current_dir(&files)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(false);
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        cmd.envs(run.spec.env.iter().map(|(k, v)| (k.get(), v.get())));
        let memory = run.spec.resources.memory_bytes();
        // SAFETY: the closure runs in the forked child before exec and only
        // makes async-signal-safe system calls (setsid, open, write, close,
        // setrlimit); it allocates nothing (the path was built before).
        unsafe {
            cmd.pre_exec(move || {
                setsid()?;
                if let Some(procs) = &procs {
                    let fd = nix::fcntl::open(
                        procs.as_c_str(),
                        nix::fcntl::OFlag::O_WRONLY,
                        nix::sys::stat::Mode::empty(),
                    )?;
                    nix::unistd::write(&fd, b"0")?;
                }
                setrlimit(Resource::RLIMIT_AS, memory, memory)?;
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| match e.raw_os_error() {
            Some(
                nix::libc::ENOENT | nix::libc::EACCES | nix::libc::ENOEXEC | nix::libc::ETXTBSY,
            ) => source_error(source, format!("cannot execute it: {e}")),
            _ => DriverError::Runtime(format!("cannot start {}: {e}", program.display())),
        })?;
        let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
            return Err(DriverError::Runtime(format!(
                "{} ended before its pid could be read",
                program.display()
            )));
        };
        // Not reaped yet (only the task below waits), so /proc holds it.
        let Some(stat) = proc_stat(pid) else {
            let _ = signal_group(pid, Signal::SIGKILL);
            let _ = child.wait().await;
            return Err(DriverError::Runtime(format!(
                "cannot read /proc/{pid}/stat of the new process"
            )));
        };
        let handle = format!("{pid}:{}", stat.starttime);

        let (tx, rx) = watch::channel(None);
        let half = half_of(run.log_limit_bytes);
        let driver = self.inner.alive.subscribe();
        tokio::spawn(async move {
            let mut delay = KEEPER_BUSY_PERIOD;
            let mut keeping = true;
            let status = loop {
                if !keeping {
                    break child.wait().await;
                }
                tokio::select! {
                    status = child.wait() => break status,
                    () = tokio::time::sleep(delay) => {
                        if driver.has_changed().is_err() {
                            // The driver is gone; whoever adopts the process
                            // keeps its log from now on.
                            keeping = false;
                        } else {
                            delay = keeper_pass(&log_path, half, delay).await;
                        }
                    }
                }
            };
            if keeping {
                // A last pass, so that an ended run holds at most its limit.
                keeper_pass(&log_path, half, delay).await;
            }
            let exit = match status {
                Ok(status) => exit_of(status),
                Err(e) => Exit {
                    code: None,
                    failed: true,
                    reason: format!("cannot wait for the process: {e}"),
                },
            };
            let _ = tx.send(Some(exit));
        });
        self.inner
            .entries()
            .insert(handle.clone(), Entry::Child { pid, exit: rx });
        tracing::debug!(%handle, program = %program.display(), "process started");
        Ok(Instance {
            id: run.id,
            epoch: run.epoch,
            kind: Kind::Process,
            handle,
        })
    }

    async fn observe(&self, instance: &Instance) -> Observed {
        match self.lookup(&instance.handle) {
            Lookup::Invalid => Observed::Gone,
            Lookup::Ended => Observed::Exited(unobserved_exit()),
            Lookup::Child(_, exit) => match exit.borrow().clone() {
                Some(e) => Observed::Exited(e),
                None => Observed::Running,
            },
            Lookup::Adopted(h) => {
                if is_alive(h) {
                    Observed::Running
                } else {
                    Observed::Exited(unobserved_exit())
                }
            }
        }
    }

    async fn stop(&self, instance: &Instance, timeout: Duration) -> Result<Exit, DriverError> {
        self.end(instance, Signal::SIGTERM, timeout).await
    }

    async fn kill(&self, instance: &Instance) -> Result<Exit, DriverError> {
        self.end(instance, Signal::SIGKILL, Duration::ZERO).await
    }

    async fn remove(&self, instance: &Instance) -> Result<(), DriverError> {
        let entry = self.inner.entries().remove(&instance.handle);
        // A child keeps its task, which reaps it (and has ended if it has).
        if let Some(Entry::Adopted {
            keeper: Some(keeper),
            ..
        }) = entry
        {
            keeper.abort();
        }
        if let Some(base) = &self.inner.cgroup {
            // Fails while processes remain in it: nothing to release then.
            let _ = std::fs::remove_dir(base.join(instance.id.to_string()));
        }
        Ok(())
    }

    /// With a cgroup of the workload's own (cgroup v2, writable), and the
    /// process in it: `usage_usec` of its `cpu.stat` (every process that
    /// ever ran in it, ended ones included) and its working set
    /// (`memory.current` less `inactive_file`).
    ///
    /// Otherwise, summed over the processes of the session the process
    /// leads: `utime + stime + cutime + cstime` of each live member of
    /// `/proc/<pid>/stat` (the time of a child that ended and was waited
    /// for by a member moves into the parent's `cutime`, so it keeps
    /// counting), in clock ticks of `sysconf(_SC_CLK_TCK)`, and the sum of
    /// their resident pages (`/proc/<pid>/statm`). Limits of that path: a
    /// page shared by several members counts once per member (RSS, not
    /// PSS); a member that leaves the session (`setsid`), or one that ends
    /// after its parent did (its time goes to whoever adopts it), is not
    /// counted; a child reaped during the reading may count twice or not
    /// at all for that reading; the reading lists all of `/proc`.
    ///
    /// `None` once the process has ended, for an invalid handle, or when
    /// the pid now names another process (its starttime differs).
    async fn usage(&self, instance: &Instance) -> Option<crate::Usage> {
        let h = parse_handle(&instance.handle)?;
        if let Some(Entry::Child { exit, .. }) = self.inner.entries().get(&instance.handle)
            && exit.borrow().is_some()
        {
            return None;
        }
        let cgroup = self
            .inner
            .cgroup
            .as_ref()
            .map(|base| base.join(instance.id.to_string()));
        // Reading /proc is quick but blocking (and lists every process
        // without a cgroup).
        tokio::task::spawn_blocking(move || process_usage(h, cgroup.as_deref()))
            .await
            .ok()
            .flatten()
    }

    async fn leftovers(&self) -> Result<Vec<Instance>, DriverError> {
        // The agent keeps process handles in its store and asks `observe`.
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real line of a shell, fields 1 to 52.
    const SH: &str = "4242 (sh) S 4200 4242 4242 0 -1 4194560 1234 5678 0 0 250 75 \
                      10 5 20 0 1 0 987654 2473984 220 18446744073709551615 1 1 0 0 0 0 0 \
                      0 65538 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";

    #[test]
    fn a_stat_line_gives_state_session_times_and_starttime() {
        let s = parse_stat(SH.as_bytes()).unwrap();
        assert_eq!(
            s,
            ProcStat {
                state: 'S',
                session: 4242,
                cpu_ticks: 250 + 75,
                children_ticks: 10 + 5,
                starttime: 987654,
            }
        );
    }

    #[test]
    fn a_comm_with_spaces_and_parentheses_ends_at_the_last_parenthesis() {
        for comm in [
            "my prog",
            "a) b (c",
            ") (",
            "((()))",
            "x) R 1 2 3 4 5 6 7 8 9 10 11 12 13",
        ] {
            let line = SH.replacen("(sh)", &format!("({comm})"), 1);
            let s = parse_stat(line.as_bytes()).unwrap_or_else(|| panic!("{comm:?}"));
            assert_eq!(
                (s.state, s.session, s.cpu_ticks),
                ('S', 4242, 325),
                "{comm:?}"
            );
            assert_eq!(s.starttime, 987654, "{comm:?}");
        }
        // Bytes that are not UTF-8 in comm are fine too.
        let mut line = b"4242 (\xff\xfe bad)".to_vec();
        line.extend_from_slice(&SH.as_bytes()[SH.find(") ").unwrap() + 1..]);
        assert_eq!(parse_stat(&line).unwrap().cpu_ticks, 325);
    }

    #[test]
    fn negative_children_times_count_as_zero() {
        let line = SH.replacen(" 10 5 20 ", " -10 5 20 ", 1);
        assert_eq!(parse_stat(line.as_bytes()).unwrap().children_ticks, 5);
    }

    #[test]
    fn odd_stat_input_is_none_and_never_panics() {
        let cut = &SH[..SH.find(" 987654").unwrap()];
        for bad in [
            "",
            ")",
            "(",
            "4242 (sh)",
            "4242 (sh) ",
            "4242 sh S 1 2",
            cut,
            "4242 (sh) S x 4242 4242",
            "4242 (sh) S 1 2 notanumber",
        ] {
            assert_eq!(parse_stat(bad.as_bytes()), None, "{bad:?}");
        }
        let overflow = SH.replacen(" 250 75 ", " 18446744073709551615 75 ", 1);
        assert_eq!(
            parse_stat(overflow.as_bytes()).unwrap().cpu_ticks,
            u64::MAX,
            "saturates"
        );
        assert_eq!(parse_stat(&[0xff; 64]), None);
        assert_eq!(parse_stat(b"1 (a) \xff S"), None);
    }

    #[test]
    fn statm_gives_resident_pages() {
        assert_eq!(
            parse_statm_resident(b"2416 220 190 27 0 102 0\n"),
            Some(220)
        );
        for bad in [&b""[..], b"2416", b"2416 x 1", b"\xff \xff"] {
            assert_eq!(parse_statm_resident(bad), None);
        }
    }

    #[test]
    fn cgroup_files_parse() {
        assert_eq!(
            parse_cgroup_v2_path("12:cpu:/old\n0::/locus/00ff\n"),
            Some("/locus/00ff")
        );
        assert_eq!(parse_cgroup_v2_path("4:memory:/x\n"), None);
        let cpu = "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n";
        assert_eq!(keyed_value(cpu, "usage_usec"), Some(1_500_000));
        assert_eq!(keyed_value(cpu, "user"), None);
        assert_eq!(
            keyed_value("usage_usec\nusage_usec x\n", "usage_usec"),
            None
        );
    }

    #[test]
    fn a_cgroup_directory_gives_cpu_and_working_set() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("cpu.stat"),
            "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("memory.current"), "10485760\n").unwrap();
        assert_eq!(
            cgroup_usage(dir.path()),
            Some(crate::Usage {
                cpu_seconds: 2.5,
                memory_bytes: 10 << 20
            })
        );
        std::fs::write(
            dir.path().join("memory.stat"),
            "anon 6291456\nfile 4194304\ninactive_file 4194304\n",
        )
        .unwrap();
        assert_eq!(cgroup_usage(dir.path()).unwrap().memory_bytes, 6 << 20);
        std::fs::write(dir.path().join("memory.current"), "garbage").unwrap();
        assert_eq!(cgroup_usage(dir.path()), None);
    }

    #[test]
    fn this_process_measures_itself() {
        let me = proc_stat(std::process::id() as i32).unwrap();
        let h = Handle {
            pid: std::process::id() as i32,
            starttime: me.starttime,
        };
        let usage = process_usage(h, None).unwrap();
        assert!(usage.memory_bytes > 0);
        assert!(usage.cpu_seconds >= 0.0);
        let wrong = Handle {
            starttime: me.starttime + 1,
            ..h
        };
        assert_eq!(process_usage(wrong, None), None);
        assert!(clock_ticks() > 0 && page_size() >= 4096);
    }
}
