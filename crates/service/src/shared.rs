//! The service's shared core: what every part of a running service reads, made once by
//! [`crate::App`] and handed out as one `Arc`.
//!
//! The connection handler, each connection's command [`crate::commands::Context`], and the admin
//! endpoints all hold this one `Arc<Shared>` (and the [`crate::App`] that made it), so a part the
//! service gains is added here once, not threaded through each of them.

use std::sync::Arc;

use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::fanout::Topics;
use crate::job_queue::JobQueue;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::stats::Stats;

/// The service's shared parts. Each is shared further on its own where a task needs only it
/// (the job queue's workers hold the stats and metrics, the relay the topics).
pub(crate) struct Shared {
    /// The settings, checked.
    pub(crate) config: Arc<Config>,
    /// The counters of `STATS` and `/metrics`.
    pub(crate) stats: Arc<Stats>,
    /// The latency histograms.
    pub(crate) metrics: Arc<Metrics>,
    /// The bounded queue of CPU jobs.
    pub(crate) jobs: JobQueue,
    /// Every topic with subscribers (and, with `--fanout-url`, the relay's handle).
    pub(crate) topics: Arc<Topics>,
    /// The CPU pool that runs the jobs.
    pub(crate) pool: cpu::CpuPool,
    /// The shutdown's tokens.
    pub(crate) shutdown: Shutdown,
}

impl Shared {
    /// The core for `config` (checked) and `stats`: histograms for the commands `names`, the job
    /// queue (its workers on `tracker`), `topics` (with their relay, with a broker) and `pool`.
    /// Must be called inside a tokio runtime.
    pub(crate) fn new(
        config: Arc<Config>,
        stats: Arc<Stats>,
        names: impl IntoIterator<Item = &'static str>,
        pool: cpu::CpuPool,
        topics: Topics,
        tracker: &TaskTracker,
    ) -> Self {
        let metrics = Arc::new(Metrics::new(names));
        let shutdown = Shutdown::default();
        let jobs = JobQueue::start(
            Arc::clone(&config),
            Arc::clone(&stats),
            Arc::clone(&metrics),
            &shutdown,
            tracker,
        );
        let topics = Arc::new(topics);
        Self { config, stats, metrics, jobs, topics, pool, shutdown }
    }
}
