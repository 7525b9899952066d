//! The `wasm` driver: WebAssembly modules (WASI preview 1) run in-process on
//! wasmtime, each as a tokio task.
//!
//! * **Sandbox**: the guest sees its arguments (`[name, args...]`), its
//!   environment, and one directory, the run's `files` directory, as `/data`
//!   (read-write). Nothing else of the node: no network, no other files.
//! * **Logs**: stdout and stderr both go, interleaved as written, to the
//!   workload's bounded log ([`LogFile`]).
//! * **Memory**: a [`ResourceLimiter`] refuses to grow linear memory past
//!   `resources.memory_mb`; a run that then fails ends with `memory limit of
//!   N MiB exceeded`.
//! * **CPU**: one engine-wide epoch advances every 10 ms. At each tick the
//!   guest yields to tokio (so a busy guest never holds an executor thread
//!   for long) and is paced to its `cpu_millicores` share by a token bucket
//!   over the busy time of its task: a guest over its share sleeps until it
//!   is back within it.
//! * **Stop / kill**: Wasm has no signals; both interrupt the guest at once
//!   (at its next epoch tick, or at once when it waits in a host call or in
//!   its pacing sleep).
//!
//! Instances live in the agent's process: they cannot outlive it, so a
//! handle from a previous agent run observes as [`Observed::Gone`].

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use locus_core::workload::{Kind, WorkloadId};
use tokio::io::AsyncWrite;
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::AbortHandle;
use wasmtime::{
    Config, Engine, ExternType, InstancePre, Linker, Module, ResourceLimiter, Store, Trap,
    UpdateDeadline,
};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p1::{self, WasiP1Ctx};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use crate::{Driver, DriverError, Exit, Instance, LogFile, Observed, Run};

/// How often the engine's epoch advances: the period of CPU pacing and the
/// longest a guest runs before it can be interrupted or must yield.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Where the run's `files` directory appears in the guest.
pub const GUEST_DATA_DIR: &str = "/data";

/// Most CPU time a guest that was idle may then use at full speed before
/// pacing holds it to its share.
const CPU_BURST: Duration = Duration::from_millis(50);

/// How long `kill` waits for an interrupted instance to end.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// Most table elements (function references) a guest may hold.
const TABLE_ELEMENTS_LIMIT: usize = 1_000_000;

/// The `wasm` driver: one wasmtime engine shared by every instance, and the
/// instances started by this agent run.
pub struct WasmDriver {
    /// Made at the first start: a node that runs no Wasm pays nothing for
    /// the engine.
    runtime: Mutex<Option<Arc<Runtime>>>,
    instances: Mutex<HashMap<String, Arc<Slot>>>,
    /// Makes handles unique across agent runs, so that a handle stored by a
    /// previous run never names an instance of this one.
    handle_prefix: String,
    next_handle: AtomicU64,
    /// Tasks still holding a store; the epoch thread runs until it is zero
    /// after the driver is dropped.
    live: Arc<AtomicUsize>,
    /// Set when the driver is dropped.
    closing: Arc<AtomicBool>,
}

/// The engine, the WASI linker, and the thread that advances the epoch.
struct Runtime {
    engine: Engine,
    linker: Linker<Guest>,
    ticker: std::thread::Thread,
}

impl std::fmt::Debug for WasmDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmDriver")
            .field("handle_prefix", &self.handle_prefix)
            .field("live", &self.live.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl WasmDriver {
    /// A driver with its engine (async, epoch interruption) and the thread
    /// that advances the epoch every [`EPOCH_TICK`].
    pub fn new() -> Result<WasmDriver, DriverError> {
        let live = Arc::new(AtomicUsize::new(0));
        let closing = Arc::new(AtomicBool::new(false));
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        Ok(WasmDriver {
            runtime: Mutex::new(None),
            instances: Mutex::new(HashMap::new()),
            handle_prefix: format!("wasm-{:x}-{since_epoch:x}", std::process::id()),
            next_handle: AtomicU64::new(1),
            live,
            closing,
        })
    }

    /// CPU time the instance's guest has used so far (time its task spent
    /// running wasm or host calls, not waiting); `None` for an unknown
    /// handle.
    pub fn cpu_time(&self, instance: &Instance) -> Option<Duration> {
        self.slot(instance).map(|slot| slot.meter.busy())
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Slot>>> {
        // The map is only ever left consistent: a poisoned lock still holds
        // good data.
        self.instances
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn slot(&self, instance: &Instance) -> Option<Arc<Slot>> {
        self.map()
            .get(&instance.handle)
            .filter(|slot| slot.id == instance.id && slot.epoch == instance.epoch)
            .cloned()
    }

    /// Compile the module off the async runtime's threads.
    async fn compile(&self, source: &str) -> Result<Module, DriverError> {
        let invalid = |reason: String| DriverError::Source {
            source_ref: source.to_owned(),
            reason,
        };
        let path = PathBuf::from(source);
        match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => return Err(invalid("not a regular file".to_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(invalid("no such file on this node".to_owned()));
            }
            Err(e) => return Err(invalid(format!("cannot read the file: {e}"))),
        }
        let engine = self.runtime()?.engine.clone();
        let module = tokio::task::spawn_blocking(move || Module::from_file(&engine, &path))
            .await
            .map_err(|e| DriverError::Runtime(format!("the wasm compile task failed: {e}")))?
            .map_err(|e| invalid(format!("not a valid wasm module: {e:#}")))?;
        match module.get_export("_start") {
            Some(ExternType::Func(ty)) if ty.params().len() == 0 && ty.results().len() == 0 => {
                Ok(module)
            }
            Some(_) => Err(invalid(
                "`_start` is not a function without parameters and results".to_owned(),
            )),
            None => Err(invalid(
                "the module exports no `_start` function (not a WASI command)".to_owned(),
            )),
        }
    }

    /// The guest's WASI context: arguments, environment, `/data`, logs.
    fn wasi(&self, run: &Run, log: &LogSink) -> Result<WasiP1Ctx, DriverError> {
        let files = run.files_dir();
        std::fs::create_dir_all(&files).map_err(|source| DriverError::Io {
            path: files.clone(),
            source,
        })?;
        let spec = &run.spec;
        let mut args = Vec::with_capacity(spec.args.len() + 1);
        args.push(spec.name.get().as_str());
        args.extend(spec.args.iter().map(|a| a.get().as_str()));
        let mut builder = WasiCtxBuilder::new();
        builder.args(&args).stdout(log.clone()).stderr(log.clone());
        for (name, value) in &spec.env {
            builder.env(name.get(), value.get());
        }
        builder
            .preopened_dir(&files, GUEST_DATA_DIR, FsPerms::ReadWrite)
            .map_err(|e| {
                DriverError::Runtime(format!(
                    "cannot offer {} to the guest as {GUEST_DATA_DIR}: {e:#}",
                    files.display()
                ))
            })?;
        Ok(builder.build_p1())
    }
}

impl WasmDriver {
    /// The engine and linker, made on first use with the epoch thread.
    fn runtime(&self) -> Result<Arc<Runtime>, DriverError> {
        let mut slot = self.runtime.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = slot.as_ref() {
            return Ok(r.clone());
        }
        let mut config = Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config)
            .map_err(|e| DriverError::Runtime(format!("cannot create the wasm engine: {e:#}")))?;
        let mut linker = Linker::new(&engine);
        p1::add_to_linker_async(&mut linker, |guest: &mut Guest| &mut guest.wasi).map_err(|e| {
            DriverError::Runtime(format!("cannot add WASI to the wasm linker: {e:#}"))
        })?;
        let ticker = {
            let engine = engine.clone();
            let live = self.live.clone();
            let closing = self.closing.clone();
            // Ticks while an instance holds a store; sleeps otherwise (a
            // start wakes it). Ends once the driver is dropped and every
            // instance has ended: an instance only notices an interruption
            // at an epoch tick.
            std::thread::Builder::new()
                .name("locus-wasm-epoch".to_owned())
                .spawn(move || {
                    loop {
                        let running = live.load(Ordering::Acquire);
                        if running == 0 {
                            if closing.load(Ordering::Acquire) {
                                return;
                            }
                            std::thread::park_timeout(Duration::from_secs(1));
                            continue;
                        }
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| {
                    DriverError::Runtime(format!("cannot start the wasm epoch thread: {e}"))
                })?
                .thread()
                .clone()
        };
        let r = Arc::new(Runtime {
            engine,
            linker,
            ticker,
        });
        *slot = Some(r.clone());
        Ok(r)
    }
}

impl Drop for WasmDriver {
    fn drop(&mut self) {
        for slot in self.map().values() {
            slot.request(Interrupt::Kill);
        }
        self.closing.store(true, Ordering::Release);
        if let Some(r) = self
            .runtime
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            r.ticker.unpark();
        }
    }
}

#[async_trait]
impl Driver for WasmDriver {
    fn kind(&self) -> Kind {
        Kind::Wasm
    }

    async fn probe(&self) -> Result<(), DriverError> {
        Ok(())
    }

    async fn start(&self, run: &Run) -> Result<Instance, DriverError> {
        let source = run.spec.source.get().as_str();
        let module = self.compile(source).await?;
        let runtime = self.runtime()?;
        let pre = runtime
            .linker
            .instantiate_pre(&module)
            .map_err(|e| DriverError::Source {
                source_ref: source.to_owned(),
                reason: format!("cannot link the module with WASI preview 1: {e:#}"),
            })?;

        let log =
            LogFile::open(&run.dir, run.log_limit_bytes).map_err(|source| DriverError::Io {
                path: run.dir.join(crate::LOG_FILE),
                source,
            })?;
        let log = LogSink::new(log);
        let wasi = self.wasi(run, &log)?;

        let memory_mb = *run.spec.resources.memory_mb.get();
        let memory_bytes = usize::try_from(run.spec.resources.memory_bytes()).unwrap_or(usize::MAX);
        let millicores = *run.spec.resources.cpu_millicores.get();

        let meter = Arc::new(Meter::new());
        let memory = Arc::new(AtomicUsize::new(0));
        let (exit, _) = watch::channel(None);
        let slot = Arc::new(Slot {
            id: run.id,
            epoch: run.epoch,
            interrupt: AtomicU8::new(0),
            wake: Notify::new(),
            exit,
            meter: meter.clone(),
            memory: memory.clone(),
            abort: Mutex::new(None),
        });

        let mut store = Store::new(
            &runtime.engine,
            Guest {
                wasi,
                limiter: Limiter {
                    memory_bytes,
                    denied: false,
                    size: memory,
                    before: None,
                },
            },
        );
        store.limiter(|guest| &mut guest.limiter);
        store.set_epoch_deadline(1);
        {
            let slot = slot.clone();
            let mut pacer = Pacer::new(millicores, meter.clone());
            store.epoch_deadline_callback(move |_| {
                if let Some(why) = slot.interrupted() {
                    return Err(wasmtime::Error::new(Interrupted(why)));
                }
                Ok(match pacer.tick() {
                    Some(wait) => {
                        UpdateDeadline::YieldCustom(1, Box::pin(tokio::time::sleep(wait)))
                    }
                    // tokio's own yield lets the runtime poll its timers
                    // and I/O before the guest runs again.
                    None => UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now())),
                })
            });
        }

        let n = self.next_handle.fetch_add(1, Ordering::Relaxed);
        let handle = format!("{}-{n}", self.handle_prefix);
        let (ready_tx, ready_rx) = oneshot::channel();
        let guard = TaskGuard::new(slot.clone(), self.live.clone());
        runtime.ticker.unpark();
        let guest = Metered {
            inner: Box::pin(run_guest(pre, store, ready_tx, slot.clone(), memory_mb)),
            meter,
        };
        // Held in the map from now on, so that the guest can always be
        // found and ended; `starting` takes it back out (and kills it)
        // unless the start succeeds, even when this future is dropped.
        self.map().insert(handle.clone(), slot.clone());
        let mut starting = Starting {
            driver: self,
            handle: handle.clone(),
            slot: &slot,
            done: false,
        };
        let task = tokio::spawn(supervise(guest, slot.clone(), guard));
        if let Ok(mut abort) = slot.abort.lock() {
            *abort = Some(task.abort_handle());
        }

        match ready_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                let why = slot
                    .exit
                    .borrow()
                    .as_ref()
                    .map_or_else(|| "the task ended".to_owned(), |exit| exit.reason.clone());
                return Err(DriverError::Runtime(format!(
                    "the wasm instance ended while starting: {why}"
                )));
            }
        }
        starting.done = true;
        tracing::debug!(%handle, workload = %run.id, "wasm instance started");
        Ok(Instance {
            id: run.id,
            epoch: run.epoch,
            kind: Kind::Wasm,
            handle,
        })
    }

    async fn observe(&self, instance: &Instance) -> Observed {
        match self.slot(instance) {
            None => Observed::Gone,
            Some(slot) => match slot.exit() {
                Some(exit) => Observed::Exited(exit),
                None => Observed::Running,
            },
        }
    }

    async fn stop(&self, instance: &Instance, timeout: Duration) -> Result<Exit, DriverError> {
        let Some(slot) = self.slot(instance) else {
            return Ok(unknown_exit());
        };
        if let Some(exit) = slot.exit() {
            return Ok(exit);
        }
        slot.request(Interrupt::Stop);
        if let Some(exit) = slot.wait(timeout).await {
            return Ok(exit);
        }
        self.kill(instance).await
    }

    async fn kill(&self, instance: &Instance) -> Result<Exit, DriverError> {
        let Some(slot) = self.slot(instance) else {
            return Ok(unknown_exit());
        };
        if let Some(exit) = slot.exit() {
            return Ok(exit);
        }
        slot.request(Interrupt::Kill);
        if let Some(exit) = slot.wait(KILL_WAIT / 2).await {
            return Ok(exit);
        }
        // The guest did not get back to its task: cancel the task itself.
        if let Ok(abort) = slot.abort.lock()
            && let Some(abort) = abort.as_ref()
        {
            abort.abort();
        }
        slot.wait(KILL_WAIT / 2).await.ok_or_else(|| {
            DriverError::Runtime(format!(
                "wasm instance {} did not end within {KILL_WAIT:?} of being killed",
                instance.handle
            ))
        })
    }

    async fn remove(&self, instance: &Instance) -> Result<(), DriverError> {
        let mut map = self.map();
        let Some(slot) = map
            .get(&instance.handle)
            .filter(|slot| slot.id == instance.id && slot.epoch == instance.epoch)
        else {
            return Ok(());
        };
        if slot.exit().is_none() {
            return Err(DriverError::Runtime(format!(
                "wasm instance {} is still running; stop it first",
                instance.handle
            )));
        }
        map.remove(&instance.handle);
        Ok(())
    }

    /// `cpu_seconds` is the CPU time, read from the thread CPU clock
    /// (`CLOCK_THREAD_CPUTIME_ID`) around each poll of the instance's task,
    /// of the executor threads while they ran it: the guest's code, and the
    /// host calls (WASI) that complete within the poll. Not counted: work
    /// a host call hands to another thread (WASI file I/O runs on tokio's
    /// blocking threads), compiling the module, and the poll under way (at
    /// most about one [`EPOCH_TICK`]). It is not the wall time the pacing
    /// of [`WasmDriver::cpu_time`] uses, which also counts time the thread
    /// was preempted.
    ///
    /// `memory_bytes` is the size of the guest's linear memory (as the
    /// memory limiter allowed it to grow), not what is resident: pages the
    /// guest never touched count, and what the host holds for the instance
    /// (compiled code, the store, the WASI context, log buffers) does not.
    ///
    /// `None` once the instance has ended or for an unknown handle.
    async fn usage(&self, instance: &Instance) -> Option<crate::Usage> {
        let slot = self.slot(instance)?;
        if slot.exit().is_some() {
            return None;
        }
        Some(crate::Usage {
            cpu_seconds: slot.meter.cpu().as_secs_f64(),
            memory_bytes: u64::try_from(slot.memory.load(Ordering::Acquire)).unwrap_or(u64::MAX),
        })
    }

    async fn leftovers(&self) -> Result<Vec<Instance>, DriverError> {
        // Instances live in the agent's process and end with it.
        Ok(Vec::new())
    }
}

/// An instance being started: unless `done`, dropping it kills the guest
/// and forgets it.
struct Starting<'a> {
    driver: &'a WasmDriver,
    handle: String,
    slot: &'a Slot,
    done: bool,
}

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.slot.request(Interrupt::Kill);
            self.driver.map().remove(&self.handle);
        }
    }
}

/// What `stop`/`kill` report for a handle this driver does not hold.
fn unknown_exit() -> Exit {
    Exit {
        code: None,
        failed: false,
        reason: "not running: the instance is unknown to this agent run".to_owned(),
    }
}

/// Instantiate the module, report that it started, run `_start` and say
/// how it ended (`None` when it never started: `ready` carries the error).
async fn run_guest(
    pre: InstancePre<Guest>,
    mut store: Store<Guest>,
    ready: oneshot::Sender<Result<(), DriverError>>,
    slot: Arc<Slot>,
    memory_mb: u64,
) -> Option<Exit> {
    let started = async {
        let instance = pre.instantiate_async(&mut store).await?;
        instance.get_typed_func::<(), ()>(&mut store, "_start")
    }
    .await;
    let start = match started {
        Ok(start) => start,
        Err(e) => {
            let message = if store.data().limiter.denied {
                format!("memory limit of {memory_mb} MiB exceeded while instantiating the module")
            } else {
                format!("cannot instantiate the module: {e:#}")
            };
            // The caller is waiting on `ready`; if it went away there is
            // nobody to tell.
            let _ = ready.send(Err(DriverError::Runtime(message)));
            return None;
        }
    };
    if ready.send(Ok(())).is_err() {
        return None;
    }
    let result = start.call_async(&mut store, ()).await;
    let memory_denied = store.data().limiter.denied;
    Some(exit_of(
        result,
        memory_denied,
        memory_mb,
        slot.interrupted(),
    ))
}

/// How a call of `_start` ended, in [`Exit`] terms.
fn exit_of(
    result: wasmtime::Result<()>,
    memory_denied: bool,
    memory_mb: u64,
    interrupted: Option<&'static str>,
) -> Exit {
    let memory = || format!("memory limit of {memory_mb} MiB exceeded");
    let error = match result {
        Ok(()) => return exited(0),
        Err(e) => e,
    };
    if let Some(I32Exit(code)) = error.downcast_ref::<I32Exit>() {
        let code = *code;
        if code != 0 && memory_denied {
            return Exit {
                code: Some(code),
                failed: true,
                reason: memory(),
            };
        }
        return exited(code);
    }
    if let Some(Interrupted(why)) = error.downcast_ref::<Interrupted>() {
        return interrupted_exit(why);
    }
    if memory_denied {
        return Exit {
            code: None,
            failed: true,
            reason: memory(),
        };
    }
    if let Some(why) = interrupted {
        return interrupted_exit(why);
    }
    let message = match error.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => error.root_cause().to_string(),
    };
    tracing::debug!(error = ?error, "wasm guest trapped");
    Exit {
        code: None,
        failed: true,
        reason: format!("trapped: {message}"),
    }
}

fn exited(code: i32) -> Exit {
    Exit {
        code: Some(code),
        failed: code != 0,
        reason: format!("exited with code {code}"),
    }
}

/// A stop or kill is the node's decision, not a failure of the workload.
fn interrupted_exit(why: &str) -> Exit {
    Exit {
        code: None,
        failed: false,
        reason: why.to_owned(),
    }
}

/// The instance's task: run the guest until it ends or is interrupted, then
/// record how it ended.
async fn supervise(
    guest: Metered<impl Future<Output = Option<Exit>>>,
    slot: Arc<Slot>,
    guard: TaskGuard,
) {
    let exit = tokio::select! {
        biased;
        () = slot.wake.notified() => interrupted_exit(slot.interrupted().unwrap_or("killed")),
        exit = guest => match exit {
            Some(exit) => exit,
            // Never started: `start` reports why.
            None => return,
        },
    };
    slot.finish(exit);
    drop(guard);
}

/// Store data of one instance.
struct Guest {
    wasi: WasiP1Ctx,
    limiter: Limiter,
}

/// Caps linear memory, remembers whether it refused a growth, and keeps
/// the size of the guest's linear memory (the limiter is asked before the
/// memory is made, with a current size of 0, and before each growth).
struct Limiter {
    memory_bytes: usize,
    denied: bool,
    /// Bytes of linear memory the guest has now (shared with its [`Slot`]).
    size: Arc<AtomicUsize>,
    /// The size before the growth last allowed, in case it fails.
    before: Option<usize>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // What wasmtime says the memory has now is the truth (it corrects a
        // size kept after a growth that failed unreported).
        self.size.store(current, Ordering::Release);
        if desired > self.memory_bytes {
            self.denied = true;
            return Ok(false);
        }
        let allowed = maximum.is_none_or(|max| desired <= max);
        if allowed {
            self.before = Some(current);
            self.size.store(desired, Ordering::Release);
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        tracing::debug!(error = %error, "a wasm guest's memory could not grow");
        if let Some(before) = self.before.take() {
            self.size.store(before, Ordering::Release);
        }
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= TABLE_ELEMENTS_LIMIT && maximum.is_none_or(|max| desired <= max))
    }

    fn instances(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        // The memory limit applies to each memory: with one, it is the
        // guest's total.
        1
    }

    fn tables(&self) -> usize {
        16
    }
}

/// Why a guest was interrupted, raised from the epoch callback.
#[derive(Debug)]
struct Interrupted(&'static str);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Interrupted {}

/// A stop or kill request.
#[derive(Debug, Clone, Copy)]
#[repr(u8)]
enum Interrupt {
    Stop = 1,
    Kill = 2,
}

/// The shared state of one instance.
struct Slot {
    id: WorkloadId,
    epoch: u64,
    /// 0, or the strongest [`Interrupt`] requested.
    interrupt: AtomicU8,
    /// Wakes the task when an interrupt is requested.
    wake: Notify,
    /// `None` while running, then how the run ended.
    exit: watch::Sender<Option<Exit>>,
    /// The guest's busy time and CPU time.
    meter: Arc<Meter>,
    /// Bytes of the guest's linear memory.
    memory: Arc<AtomicUsize>,
    /// Cancels the task when a killed guest does not get back to it.
    abort: Mutex<Option<AbortHandle>>,
}

impl Slot {
    fn request(&self, what: Interrupt) {
        self.interrupt.fetch_max(what as u8, Ordering::AcqRel);
        self.wake.notify_one();
    }

    fn interrupted(&self) -> Option<&'static str> {
        match self.interrupt.load(Ordering::Acquire) {
            0 => None,
            1 => Some("stopped"),
            _ => Some("killed"),
        }
    }

    fn exit(&self) -> Option<Exit> {
        self.exit.borrow().clone()
    }

    /// Record how the run ended; the first record wins.
    fn finish(&self, exit: Exit) {
        self.exit.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(exit);
                true
            } else {
                false
            }
        });
    }

    /// How the run ended, waiting up to `timeout` for it to end.
    async fn wait(&self, timeout: Duration) -> Option<Exit> {
        let mut rx = self.exit.subscribe();
        match tokio::time::timeout(timeout, rx.wait_for(Option::is_some)).await {
            Ok(Ok(exit)) => exit.clone(),
            _ => self.exit(),
        }
    }
}

/// Owned by an instance's task: when the task ends, however it ends
/// (aborted, dropped with its runtime), the instance is recorded as ended
/// and the epoch thread learns one task fewer holds a store.
struct TaskGuard {
    slot: Arc<Slot>,
    live: Arc<AtomicUsize>,
}

impl TaskGuard {
    fn new(slot: Arc<Slot>, live: Arc<AtomicUsize>) -> TaskGuard {
        live.fetch_add(1, Ordering::AcqRel);
        TaskGuard { slot, live }
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        let exit = match self.slot.interrupted() {
            Some(why) => interrupted_exit(why),
            None => Exit {
                code: None,
                failed: true,
                reason: "lost: the instance's task was cancelled".to_owned(),
            },
        };
        self.slot.finish(exit);
        self.live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Busy time of an instance: the time its task spends being polled, i.e.
/// running guest code or host calls, not waiting; and the CPU time the
/// polling threads spent in those polls.
struct Meter {
    origin: Instant,
    /// Busy time of the polls that have returned.
    busy_ns: AtomicU64,
    /// When the current poll began (ns since `origin`, plus one), or 0.
    poll_since: AtomicU64,
    /// CPU time of the polls that have returned (thread CPU clock).
    cpu_ns: AtomicU64,
}

impl Meter {
    fn new() -> Meter {
        Meter {
            origin: Instant::now(),
            busy_ns: AtomicU64::new(0),
            poll_since: AtomicU64::new(0),
            cpu_ns: AtomicU64::new(0),
        }
    }

    /// CPU time of the polls that have returned (a poll lasts at most about
    /// one [`EPOCH_TICK`]: the one under way is not counted yet).
    fn cpu(&self) -> Duration {
        Duration::from_nanos(self.cpu_ns.load(Ordering::Acquire))
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Busy time so far, the poll under way included.
    fn busy(&self) -> Duration {
        let mut busy = self.busy_ns.load(Ordering::Acquire);
        let since = self.poll_since.load(Ordering::Acquire);
        if since != 0 {
            busy += self.now_ns().saturating_sub(since - 1);
        }
        Duration::from_nanos(busy)
    }
}

/// A future whose polls are timed into a [`Meter`].
struct Metered<F> {
    inner: Pin<Box<F>>,
    meter: Arc<Meter>,
}

impl<F: Future> Future for Metered<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let start = self.meter.now_ns();
        let cpu_start = thread_cpu_ns();
        self.meter.poll_since.store(start + 1, Ordering::Release);
        let result = self.inner.as_mut().poll(cx);
        let end = self.meter.now_ns();
        self.meter.poll_since.store(0, Ordering::Release);
        self.meter
            .busy_ns
            .fetch_add(end.saturating_sub(start), Ordering::AcqRel);
        // A poll runs on one thread from start to end: the difference of
        // its CPU clock is what the poll used.
        let cpu = match (cpu_start, thread_cpu_ns()) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            // No thread clock: the poll's wall time, an upper bound.
            _ => end.saturating_sub(start),
        };
        self.meter.cpu_ns.fetch_add(cpu, Ordering::AcqRel);
        result
    }
}

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`) in
/// nanoseconds; `None` if the clock cannot be read.
fn thread_cpu_ns() -> Option<u64> {
    let mut ts = nix::libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec that outlives the call.
    let rc = unsafe { nix::libc::clock_gettime(nix::libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return None;
    }
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u64::try_from(ts.tv_nsec).ok()?;
    Some(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}

/// Holds a guest to its CPU share: a token bucket filled at `millicores /
/// 1000` of wall time (up to [`CPU_BURST`]) and drained by busy time. Asked
/// at each epoch tick; says how long to sleep when the bucket is empty.
struct Pacer {
    millicores: u64,
    meter: Arc<Meter>,
    last_at: Instant,
    last_busy: Duration,
    credit_ns: i128,
}

impl Pacer {
    fn new(millicores: u64, meter: Arc<Meter>) -> Pacer {
        Pacer {
            millicores,
            meter,
            last_at: Instant::now(),
            last_busy: Duration::ZERO,
            credit_ns: 0,
        }
    }

    fn tick(&mut self) -> Option<Duration> {
        // A guest is single-threaded: a share of a whole core or more
        // cannot be exceeded.
        if self.millicores >= 1000 {
            return None;
        }
        let now = Instant::now();
        let busy = self.meter.busy();
        let used = busy.saturating_sub(self.last_busy).as_nanos() as i128;
        let elapsed = now.duration_since(self.last_at).as_nanos() as i128;
        self.last_at = now;
        self.last_busy = busy;
        let earned = elapsed * i128::from(self.millicores) / 1000;
        self.credit_ns = (self.credit_ns + earned - used).min(CPU_BURST.as_nanos() as i128);
        if self.credit_ns >= 0 {
            return None;
        }
        let wait_ns = -self.credit_ns * 1000 / i128::from(self.millicores);
        Some(Duration::from_nanos(
            u64::try_from(wait_ns).unwrap_or(u64::MAX),
        ))
    }
}

/// The guest's stdout and stderr: appends to the workload's bounded log.
#[derive(Clone)]
struct LogSink(Arc<LogShared>);

struct LogShared {
    file: Mutex<LogFile>,
    /// Whether a failed write was already reported (once is enough).
    warned: AtomicBool,
}

impl LogSink {
    fn new(file: LogFile) -> LogSink {
        LogSink(Arc::new(LogShared {
            file: Mutex::new(file),
            warned: AtomicBool::new(false),
        }))
    }

    fn append(&self, bytes: &[u8]) {
        let mut file = self
            .0
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A log that cannot be written must not break the workload: its
        // output is dropped.
        if let Err(e) = file.append(bytes)
            && !self.0.warned.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(error = %e, "cannot write a wasm workload's log; dropping its output");
        }
    }
}

impl IsTerminal for LogSink {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogSink {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for LogSink {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
