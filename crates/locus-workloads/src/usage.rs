//! What each running workload measurably uses.
//!
//! Every [`USAGE_PERIOD`] a sampling round asks the driver of each running
//! owned workload for its [`Usage`] (cumulative CPU time, resident memory),
//! keeps the last [`USAGE_WINDOW`] samples of each workload, and sets the
//! gauges `locus_workload_cpu_seconds_total` and
//! `locus_workload_memory_bytes`. [`Workloads::usage`] derives a
//! [`MeasuredUsage`] from each window: what a marketplace request for the
//! workload must cover, and what an energy estimate starts from.
//!
//! The reconcile pass starts a round when one is due, as its own task, and
//! never more than one at a time: the loop does not wait on a driver, and a
//! round holds the workloads lock only to list what runs, never while a
//! driver answers. Rounds therefore stop with the loop (the agent aborts it
//! at shutdown); a round under way ends once its drivers have answered,
//! each within [`USAGE_TIMEOUT`].
//!
//! A workload's samples are forgotten (and its gauges removed) at the first
//! round that no longer finds it running on this node, or finds it running
//! as another instance (a restart: its counters begin again);
//! [`Workloads::usage`] only ever reports workloads running now.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use locus_core::workload::{State, WorkloadId};
use locus_runtime::{Driver, Instance, Usage};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Workloads;
use crate::metrics::WorkloadMetrics;

/// Time between two sampling rounds.
pub const USAGE_PERIOD: Duration = Duration::from_secs(5);
/// Samples kept per workload: about a minute at [`USAGE_PERIOD`].
pub const USAGE_WINDOW: usize = 12;
/// Longest wait for one driver's answer (the container driver bounds its
/// own call to 2 s; this bounds any driver).
pub const USAGE_TIMEOUT: Duration = Duration::from_secs(3);
/// Drivers asked at once in a round (each may read all of `/proc`, or wait
/// on the Docker engine).
const USAGE_CONCURRENCY: usize = 8;

/// What a workload measurably used over its window of samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MeasuredUsage {
    /// Average CPU over the window, in cores: CPU seconds used between the
    /// first and the last sample over the time between them. 0 with fewer
    /// than two samples.
    pub cpu_cores: f64,
    /// Highest CPU, in cores, between two consecutive samples of the
    /// window. 0 with fewer than two samples.
    pub cpu_cores_peak: f64,
    /// Resident memory at the last sample, in bytes.
    pub memory_bytes: u64,
    /// Most resident memory over the window's samples, in bytes.
    pub memory_bytes_peak: u64,
    /// Samples in the window (at most [`USAGE_WINDOW`]).
    pub samples: usize,
    /// Seconds between the first and the last sample.
    pub window_secs: f64,
}

/// One reading of a driver, and when it was taken.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    pub at: Instant,
    pub usage: Usage,
}

/// Append `sample` to `window`, keeping the newest `cap` samples. A sample
/// that is not later than the last one is dropped (no rate could be made
/// from the two).
pub(crate) fn push(window: &mut VecDeque<Sample>, sample: Sample, cap: usize) {
    if window.back().is_some_and(|last| sample.at <= last.at) {
        return;
    }
    window.push_back(sample);
    while window.len() > cap.max(1) {
        window.pop_front();
    }
}

/// CPU cores used between two samples; never negative (a cumulative
/// reading that dips — a child of a process reaped mid-reading — counts
/// as no use, not as negative use).
fn cores_between(a: &Sample, b: &Sample) -> Option<f64> {
    let secs = b.at.checked_duration_since(a.at)?.as_secs_f64();
    (secs > 0.0).then(|| (b.usage.cpu_seconds - a.usage.cpu_seconds).max(0.0) / secs)
}

/// What a window of samples (oldest first) says; `None` when it is empty.
pub(crate) fn measure(window: &VecDeque<Sample>) -> Option<MeasuredUsage> {
    let (first, last) = (window.front()?, window.back()?);
    let cpu_cores_peak = window
        .iter()
        .zip(window.iter().skip(1))
        .filter_map(|(a, b)| cores_between(a, b))
        .fold(0.0, f64::max);
    Some(MeasuredUsage {
        cpu_cores: cores_between(first, last).unwrap_or(0.0),
        cpu_cores_peak,
        memory_bytes: last.usage.memory_bytes,
        memory_bytes_peak: window
            .iter()
            .map(|s| s.usage.memory_bytes)
            .max()
            .unwrap_or(0),
        samples: window.len(),
        window_secs: last
            .at
            .checked_duration_since(first.at)
            .unwrap_or_default()
            .as_secs_f64(),
    })
}

/// A running workload as a round sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Running {
    /// The instance's handle: samples of another instance do not mix.
    pub handle: String,
    pub name: String,
}

/// The samples of every running workload, and when rounds ran. Its lock is
/// a plain mutex, never held across an await.
#[derive(Default)]
pub(crate) struct UsageBook {
    state: std::sync::Mutex<Book>,
}

#[derive(Default)]
struct Book {
    /// When the last round began.
    last_round: Option<Instant>,
    /// A round is under way.
    sampling: bool,
    tracks: BTreeMap<WorkloadId, Track>,
}

struct Track {
    running: Running,
    window: VecDeque<Sample>,
}

impl UsageBook {
    fn lock(&self) -> MutexGuard<'_, Book> {
        // Every change leaves the book consistent: a poisoned lock still
        // holds good data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a round is due at `now`; if so it is marked as begun.
    pub(crate) fn begin_round(&self, now: Instant) -> bool {
        let mut book = self.lock();
        let due = book
            .last_round
            .is_none_or(|t| now.saturating_duration_since(t) >= USAGE_PERIOD);
        if book.sampling || !due {
            return false;
        }
        book.sampling = true;
        book.last_round = Some(now);
        true
    }

    fn end_round(&self) {
        self.lock().sampling = false;
    }

    /// Record a round's readings. `running` is what ran when the round
    /// began: every other workload's samples and gauges are forgotten, and
    /// so are those of a workload that runs as another instance now.
    pub(crate) fn record(
        &self,
        running: &BTreeMap<WorkloadId, Running>,
        readings: Vec<(WorkloadId, Sample)>,
        metrics: &WorkloadMetrics,
    ) {
        let mut book = self.lock();
        book.tracks.retain(|id, track| {
            let keep = running
                .get(id)
                .is_some_and(|r| r.handle == track.running.handle);
            if !keep {
                metrics.forget_usage(&id.to_string(), &track.running.name);
            }
            keep
        });
        for (id, sample) in readings {
            let Some(now) = running.get(&id) else {
                continue;
            };
            let track = book.tracks.entry(id).or_insert_with(|| Track {
                running: now.clone(),
                window: VecDeque::with_capacity(USAGE_WINDOW),
            });
            if track.running.name != now.name {
                metrics.forget_usage(&id.to_string(), &track.running.name);
                track.running.name = now.name.clone();
            }
            push(&mut track.window, sample, USAGE_WINDOW);
            metrics.set_usage(&id.to_string(), &now.name, &sample.usage);
        }
    }

    /// What the samples say of each workload of `running` (as it runs now).
    pub(crate) fn measured(
        &self,
        running: &BTreeMap<WorkloadId, Running>,
    ) -> BTreeMap<WorkloadId, MeasuredUsage> {
        self.lock()
            .tracks
            .iter()
            .filter(|(id, t)| {
                running
                    .get(id)
                    .is_some_and(|r| r.handle == t.running.handle)
            })
            .filter_map(|(id, t)| Some((*id, measure(&t.window)?)))
            .collect()
    }
}

/// Marks the round as ended however its task ends.
struct RoundEnd<'a>(&'a UsageBook);

impl Drop for RoundEnd<'_> {
    fn drop(&mut self) {
        self.0.end_round();
    }
}

/// Ask each driver for its instance's usage, at most [`USAGE_CONCURRENCY`]
/// at a time and each within [`USAGE_TIMEOUT`]; the readings that came
/// back, each timed when its answer arrived.
pub(crate) async fn read_all(
    targets: Vec<(Arc<dyn Driver>, Instance)>,
) -> Vec<(WorkloadId, Sample)> {
    let mut waiting: VecDeque<_> = targets.into();
    let mut asked = tokio::task::JoinSet::new();
    let mut readings = Vec::new();
    loop {
        while asked.len() < USAGE_CONCURRENCY
            && let Some((driver, instance)) = waiting.pop_front()
        {
            asked.spawn(async move {
                let usage = tokio::time::timeout(USAGE_TIMEOUT, driver.usage(&instance))
                    .await
                    .ok()
                    .flatten();
                (instance.id, Instant::now(), usage)
            });
        }
        let Some(done) = asked.join_next().await else {
            break;
        };
        if let Ok((id, at, Some(usage))) = done {
            readings.push((id, Sample { at, usage }));
        }
    }
    readings
}

impl Workloads {
    /// Start a sampling round as its own task when one is due (called by
    /// each reconcile pass; see the module docs).
    pub(crate) fn sample_usage_if_due(&self) {
        if !self.inner.usage.begin_round(Instant::now()) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let _end = RoundEnd(&this.inner.usage);
            this.sample_usage().await;
        });
    }

    /// The running owned workloads, and for each its driver and instance.
    async fn running(
        &self,
    ) -> (
        BTreeMap<WorkloadId, Running>,
        Vec<(Arc<dyn Driver>, Instance)>,
    ) {
        let owned = self.inner.owned.lock().await;
        let mut running = BTreeMap::new();
        let mut targets = Vec::new();
        for e in owned.entries.values() {
            if e.w.state != State::Running || e.w.destroyed_unix_ms.is_some() {
                continue;
            }
            let (Some(instance), Some(driver)) =
                (&e.instance, self.inner.drivers.get(&e.w.spec.kind))
            else {
                continue;
            };
            running.insert(
                e.w.id,
                Running {
                    handle: instance.handle.clone(),
                    name: e.w.spec.name.get().clone(),
                },
            );
            targets.push((driver.clone(), instance.clone()));
        }
        (running, targets)
    }

    /// One round: list what runs (under the lock), ask the drivers (without
    /// it), record the readings.
    async fn sample_usage(&self) {
        let (running, targets) = self.running().await;
        let readings = read_all(targets).await;
        self.inner
            .usage
            .record(&running, readings, &self.inner.metrics);
    }

    /// What each running owned workload measurably uses, from the samples
    /// of its current instance (see [`MeasuredUsage`]). A workload appears
    /// once its first sample is taken (within [`USAGE_PERIOD`] of its
    /// start); its CPU figures need two.
    pub async fn usage(&self) -> BTreeMap<WorkloadId, MeasuredUsage> {
        let (running, _) = self.running().await;
        self.inner.usage.measured(&running)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use locus_core::workload::Kind;
    use locus_runtime::{DriverError, Exit, Observed, Run};

    fn at(t0: Instant, secs: f64) -> Instant {
        t0 + Duration::from_secs_f64(secs)
    }

    fn sample(t0: Instant, secs: f64, cpu_seconds: f64, memory_bytes: u64) -> Sample {
        Sample {
            at: at(t0, secs),
            usage: Usage {
                cpu_seconds,
                memory_bytes,
            },
        }
    }

    fn window(samples: &[Sample]) -> VecDeque<Sample> {
        let mut w = VecDeque::new();
        for s in samples {
            push(&mut w, *s, USAGE_WINDOW);
        }
        w
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn an_empty_window_says_nothing_and_one_sample_gives_memory_only() {
        assert_eq!(measure(&VecDeque::new()), None);
        let t0 = Instant::now();
        let m = measure(&window(&[sample(t0, 0.0, 3.0, 100)])).unwrap();
        assert_eq!(
            m,
            MeasuredUsage {
                cpu_cores: 0.0,
                cpu_cores_peak: 0.0,
                memory_bytes: 100,
                memory_bytes_peak: 100,
                samples: 1,
                window_secs: 0.0,
            }
        );
    }

    #[test]
    fn average_and_peak_cpu_and_last_and_peak_memory() {
        let t0 = Instant::now();
        // 0.5 core for 5 s, 1.5 cores for 5 s, then idle for 10 s.
        let w = window(&[
            sample(t0, 0.0, 10.0, 1000),
            sample(t0, 5.0, 12.5, 4000),
            sample(t0, 10.0, 20.0, 3000),
            sample(t0, 20.0, 20.0, 2000),
        ]);
        let m = measure(&w).unwrap();
        assert!(close(m.cpu_cores, 10.0 / 20.0), "{m:?}");
        assert!(close(m.cpu_cores_peak, 1.5), "{m:?}");
        assert_eq!((m.memory_bytes, m.memory_bytes_peak), (2000, 4000));
        assert_eq!(m.samples, 4);
        assert!(close(m.window_secs, 20.0));
    }

    #[test]
    fn the_window_keeps_the_newest_samples() {
        let t0 = Instant::now();
        let mut w = VecDeque::new();
        for i in 0..30u32 {
            let i = f64::from(i);
            // One core throughout; memory peaks at sample 3 only.
            let memory = if i == 3.0 { 9999 } else { 10 };
            push(&mut w, sample(t0, 5.0 * i, 5.0 * i, memory), USAGE_WINDOW);
        }
        assert_eq!(w.len(), USAGE_WINDOW);
        let m = measure(&w).unwrap();
        assert!(
            close(m.cpu_cores, 1.0) && close(m.cpu_cores_peak, 1.0),
            "{m:?}"
        );
        assert_eq!(m.memory_bytes_peak, 10, "the peak left the window");
        assert!(close(m.window_secs, 5.0 * (USAGE_WINDOW as f64 - 1.0)));
    }

    #[test]
    fn samples_out_of_order_or_at_the_same_instant_are_dropped() {
        let t0 = Instant::now();
        let w = window(&[
            sample(t0, 5.0, 5.0, 1),
            sample(t0, 5.0, 7.0, 2),
            sample(t0, 1.0, 0.0, 3),
            sample(t0, 10.0, 10.0, 4),
        ]);
        assert_eq!(w.len(), 2);
        let m = measure(&w).unwrap();
        assert!(
            close(m.cpu_cores, 1.0) && close(m.cpu_cores_peak, 1.0),
            "{m:?}"
        );
        assert_eq!(m.memory_bytes_peak, 4);
    }

    #[test]
    fn a_dipping_counter_never_gives_negative_cpu() {
        let t0 = Instant::now();
        let w = window(&[
            sample(t0, 0.0, 10.0, 1),
            sample(t0, 5.0, 8.0, 1),
            sample(t0, 10.0, 9.0, 1),
        ]);
        let m = measure(&w).unwrap();
        assert_eq!(m.cpu_cores, 0.0);
        assert!(close(m.cpu_cores_peak, 0.2), "{m:?}");
        assert!(m.cpu_cores >= 0.0 && m.cpu_cores_peak >= 0.0);
    }

    use prometheus::core::Collector;

    fn metrics() -> WorkloadMetrics {
        WorkloadMetrics::register(&prometheus::Registry::new()).unwrap()
    }

    fn running(handle: &str, name: &str) -> Running {
        Running {
            handle: handle.to_owned(),
            name: name.to_owned(),
        }
    }

    #[test]
    fn the_book_forgets_what_stopped_or_restarted_and_its_gauges() {
        let (a, b) = (WorkloadId([1; 8]), WorkloadId([2; 8]));
        let metrics = metrics();
        let book = UsageBook::default();
        let t0 = Instant::now();
        let both = BTreeMap::from([(a, running("a1", "alpha")), (b, running("b1", "beta"))]);
        book.record(
            &both,
            vec![(a, sample(t0, 0.0, 1.0, 10)), (b, sample(t0, 0.0, 2.0, 20))],
            &metrics,
        );
        book.record(
            &both,
            vec![(a, sample(t0, 5.0, 6.0, 30)), (b, sample(t0, 5.0, 2.0, 20))],
            &metrics,
        );
        let m = book.measured(&both);
        assert_eq!(m.len(), 2);
        assert!(close(m[&a].cpu_cores, 1.0) && m[&a].memory_bytes == 30);
        assert!(close(m[&b].cpu_cores, 0.0) && m[&b].samples == 2);
        let gauge = |id: WorkloadId, name: &str| {
            metrics
                .workload_memory_bytes
                .get_metric_with_label_values(&[&id.to_string(), name])
                .map(|g| g.get())
                .unwrap_or(-1)
        };
        assert_eq!(gauge(a, "alpha"), 30);
        assert_eq!(
            metrics
                .workload_cpu_seconds
                .with_label_values(&[&a.to_string(), "alpha"])
                .get(),
            6.0
        );

        // b stopped; a restarted as another instance.
        let restarted = BTreeMap::from([(a, running("a2", "alpha"))]);
        assert!(book.measured(&restarted).is_empty(), "a's samples are a1's");
        book.record(&restarted, vec![(a, sample(t0, 10.0, 0.5, 5))], &metrics);
        let m = book.measured(&restarted);
        assert_eq!(m.keys().copied().collect::<Vec<_>>(), vec![a]);
        assert_eq!((m[&a].samples, m[&a].memory_bytes), (1, 5));
        let families = metrics.workload_memory_bytes.collect();
        assert_eq!(families[0].get_metric().len(), 1, "b's gauge is gone");
        assert_eq!(gauge(a, "alpha"), 5);

        // Nothing runs: everything is forgotten.
        book.record(&BTreeMap::new(), Vec::new(), &metrics);
        assert!(book.measured(&restarted).is_empty());
        assert!(
            metrics.workload_cpu_seconds.collect()[0]
                .get_metric()
                .is_empty()
        );
    }

    #[test]
    fn rounds_are_due_every_period_and_never_overlap() {
        let book = UsageBook::default();
        let t0 = Instant::now();
        assert!(book.begin_round(t0), "the first round is due at once");
        assert!(!book.begin_round(t0 + USAGE_PERIOD * 2), "one under way");
        book.end_round();
        assert!(!book.begin_round(t0 + USAGE_PERIOD / 2));
        assert!(book.begin_round(t0 + USAGE_PERIOD));
        {
            let _end = RoundEnd(&book);
        }
        assert!(book.begin_round(t0 + USAGE_PERIOD * 2));
    }

    /// A driver whose instances use what their handle says
    /// (`cpu/memory`), and nothing for any other handle.
    struct Fake;

    #[async_trait::async_trait]
    impl Driver for Fake {
        fn kind(&self) -> Kind {
            Kind::Process
        }
        async fn probe(&self) -> Result<(), DriverError> {
            Ok(())
        }
        async fn start(&self, _: &Run) -> Result<Instance, DriverError> {
            Err(DriverError::Runtime("fake".to_owned()))
        }
        async fn observe(&self, _: &Instance) -> Observed {
            Observed::Running
        }
        async fn stop(&self, _: &Instance, _: Duration) -> Result<Exit, DriverError> {
            Err(DriverError::Runtime("fake".to_owned()))
        }
        async fn kill(&self, _: &Instance) -> Result<Exit, DriverError> {
            Err(DriverError::Runtime("fake".to_owned()))
        }
        async fn remove(&self, _: &Instance) -> Result<(), DriverError> {
            Ok(())
        }
        async fn leftovers(&self) -> Result<Vec<Instance>, DriverError> {
            Ok(Vec::new())
        }
        async fn usage(&self, instance: &Instance) -> Option<Usage> {
            let (cpu, memory) = instance.handle.split_once('/')?;
            Some(Usage {
                cpu_seconds: cpu.parse().ok()?,
                memory_bytes: memory.parse().ok()?,
            })
        }
    }

    #[tokio::test]
    async fn a_round_asks_every_driver_and_keeps_what_answered() {
        let driver: Arc<dyn Driver> = Arc::new(Fake);
        let targets: Vec<_> = (0..20u8)
            .map(|i| {
                let handle = if i % 5 == 0 {
                    "gone".to_owned()
                } else {
                    format!("{i}/{}", u64::from(i) * 100)
                };
                let instance = Instance {
                    id: WorkloadId([i; 8]),
                    epoch: 1,
                    kind: Kind::Process,
                    handle,
                };
                (driver.clone(), instance)
            })
            .collect();
        let before = Instant::now();
        let mut readings = read_all(targets).await;
        readings.sort_by_key(|(id, _)| *id);
        assert_eq!(readings.len(), 16);
        for (id, s) in readings {
            let i = id.0[0];
            assert_ne!(i % 5, 0);
            assert_eq!(s.usage.cpu_seconds, f64::from(i));
            assert_eq!(s.usage.memory_bytes, u64::from(i) * 100);
            assert!(s.at >= before);
        }
        assert!(read_all(Vec::new()).await.is_empty());
    }
}
