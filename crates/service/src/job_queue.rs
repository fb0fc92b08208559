//! The job queue: a bounded queue of jobs and the workers that run them.
//!
//! A job is any future of a `Result<T, QueueError>` (CPU work on the pool is one: see
//! `commands::Context::compute`); its caller awaits the job's value, or a [`QueueError`] saying
//! why there is none. The queue knows nothing of the protocol: the commands turn its errors into
//! answers. It answers the four questions every job queue must:
//!
//! * **What if the queue is full?** [`JobQueue::submit`] uses `try_send`: a full queue refuses
//!   at once with [`QueueError::Busy`] (load shedding). Waiting for room instead would let queued
//!   work, memory and latency grow without bound under overload.
//! * **How many run at once?** `workers`, enforced by a semaphore. `tokio::sync::mpsc::Receiver`
//!   is single-consumer (it is not `Clone`), so "several workers sharing one receiver" does not
//!   compile; `Arc<Mutex<Receiver>>` would, but makes idle workers queue on a lock held across
//!   `.await`. Instead one dispatcher task owns the receiver: it takes a worker permit *first*,
//!   then a job, and spawns the job with the permit. Taking the permit first keeps jobs in the
//!   queue (where `queue_capacity` bounds them and `STATS` counts them) until a worker is free.
//! * **What if a job takes too long?** Each job has a deadline counted from submission. A job
//!   still queued at its deadline ends with [`QueueError::TimedOut`] without running; a running
//!   one is dropped at its deadline (a job holding CPU work tells it to stop when dropped).
//! * **What if a job panics?** The job runs under `catch_unwind`: its caller gets
//!   [`QueueError::Panicked`], and the workers carry on. (A job on the CPU pool reports its own
//!   panic as `Err(QueueError::Panicked)`; it is counted the same way.)
//!
//! A job whose caller stops waiting (its connection closed) is dropped at once, not run to the
//! end for nobody, and counted as abandoned; after `abort`, as cancelled, whoever dropped it
//! first. So each job ends in exactly one outcome, whatever the order in which shutdown reaches
//! the job, its worker and its caller.
//!
//! **Shutdown.** At `drain` the queue closes: a new job is refused with
//! [`QueueError::ShuttingDown`] (and counted as cancelled), queued jobs still run, and the dispatcher ends once the queue is
//! empty. It never waits for every handle to be dropped, so a handle kept by some task cannot
//! stretch shutdown. At `abort`, queued and running jobs end with `ShuttingDown`.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::FutureExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::{self, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::stats::{JobOutcome, Stats};

/// Why a job produced no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum QueueError {
    /// The queue was full: the job was refused without waiting.
    #[error("the job queue is full")]
    Busy,
    /// The job missed its deadline, queued or running.
    #[error("the job missed its deadline")]
    TimedOut,
    /// The job panicked.
    #[error("the job panicked")]
    Panicked,
    /// The service is shutting down: the job was refused, or dropped unfinished.
    #[error("the service is shutting down")]
    ShuttingDown,
}

/// A job in the queue, its type erased: it sends its own value to its caller when it runs.
type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A handle to submit jobs; clones share the queue.
#[derive(Clone)]
pub(crate) struct JobQueue {
    queue: mpsc::Sender<Job>,
    config: Arc<Config>,
    stats: Arc<Stats>,
    metrics: Arc<Metrics>,
    abort: CancellationToken,
}

impl JobQueue {
    /// Starts the dispatcher on `tracker` and returns the handle to submit jobs to it. Reads
    /// `queue_capacity`, `workers` and `job_timeout` from `config`.
    pub(crate) fn start(
        config: Arc<Config>,
        stats: Arc<Stats>,
        metrics: Arc<Metrics>,
        shutdown: &Shutdown,
        tracker: &TaskTracker,
    ) -> Self {
        let (queue, jobs) = mpsc::channel(config.queue_capacity.get().min(Semaphore::MAX_PERMITS));
        let workers = Arc::new(Semaphore::new(config.workers.get().min(Semaphore::MAX_PERMITS)));
        tracker.spawn(dispatch(jobs, workers, Arc::clone(&stats), shutdown.clone(), tracker.clone()));
        Self { queue, config, stats, metrics, abort: shutdown.abort.clone() }
    }

    /// Queues `work` and returns a future of its value. A full queue refuses at once: the
    /// future is then ready with [`QueueError::Busy`]. The future never waits past the job's
    /// deadline (plus the time to notice it) or, at shutdown, the grace period. Dropping it
    /// abandons the job.
    pub(crate) fn submit<T, W>(
        &self,
        work: W,
    ) -> impl Future<Output = Result<T, QueueError>> + Send + 'static + use<T, W>
    where
        T: Send + 'static,
        W: Future<Output = Result<T, QueueError>> + Send + 'static,
    {
        let (reply, value) = oneshot::channel();
        let submitted = Instant::now();
        let ledger = Ledger {
            submitted,
            deadline: submitted + self.config.job_timeout,
            stats: Arc::clone(&self.stats),
            metrics: Arc::clone(&self.metrics),
            abort: self.abort.clone(),
        };
        let job = Box::pin(run_job(work, reply, ledger));
        let refused = match self.queue.try_send(job) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.stats.count_job(JobOutcome::Shed);
                Some(QueueError::Busy)
            }
            // Closed at drain: no new job. Counted as cancelled, so every job submitted ends in
            // exactly one outcome counter.
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.stats.count_job(JobOutcome::Cancelled);
                Some(QueueError::ShuttingDown)
            }
        };
        async move {
            match refused {
                Some(error) => Err(error),
                // The job was dropped unrun or unfinished: only shutdown does that to a job
                // whose caller still waits.
                None => value.await.unwrap_or(Err(QueueError::ShuttingDown)),
            }
        }
    }

    /// Jobs waiting in the queue now.
    pub(crate) fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }
}

/// What a job needs to account for itself: its deadline, the counters, the metrics, and the
/// shutdown's `abort` (a job dropped after it counts as cancelled, not abandoned).
struct Ledger {
    submitted: Instant,
    deadline: Instant,
    stats: Arc<Stats>,
    metrics: Arc<Metrics>,
    abort: CancellationToken,
}

impl Ledger {
    /// Counts a job whose caller is gone: abandoned, or cancelled if shutdown has aborted (the
    /// caller may be a connection that the abort closed).
    fn count_dropped(&self) {
        let outcome = if self.abort.is_cancelled() { JobOutcome::Cancelled } else { JobOutcome::Abandoned };
        self.stats.count_job(outcome);
    }
}

/// One job, as a worker runs it: checks its deadline and its caller, runs it under
/// `catch_unwind` until the deadline, counts how it ended and how long it waited and ran, and
/// sends the value.
async fn run_job<T, W>(work: W, mut reply: oneshot::Sender<Result<T, QueueError>>, ledger: Ledger)
where
    W: Future<Output = Result<T, QueueError>>,
{
    let started = Instant::now();
    ledger.metrics.job_wait.observe(started - ledger.submitted);
    if reply.is_closed() {
        ledger.count_dropped();
        return;
    }
    let value = if Instant::now() >= ledger.deadline {
        // It waited in the queue past its deadline: running it would only waste a worker.
        Err(QueueError::TimedOut)
    } else {
        let _running = ledger.stats.start_job();
        let work = AssertUnwindSafe(work).catch_unwind();
        tokio::select! {
            biased;
            // The caller is gone: drop the work, nobody needs it.
            () = reply.closed() => {
                ledger.count_dropped();
                return;
            }
            finished = time::timeout_at(ledger.deadline, work) => match finished {
                Ok(Ok(value)) => value,
                Ok(Err(_panic)) => Err(QueueError::Panicked),
                Err(_elapsed) => Err(QueueError::TimedOut),
            },
        }
    };
    ledger.metrics.job_run.observe(started.elapsed());
    ledger.stats.count_job(match &value {
        Ok(_) => JobOutcome::Done,
        Err(QueueError::TimedOut) => JobOutcome::TimedOut,
        Err(QueueError::Panicked) => {
            tracing::error!("a job panicked; its caller is told, and the workers carry on");
            JobOutcome::Panicked
        }
        // A job reports no other error of its own; shutdown is counted where it happens.
        Err(QueueError::Busy | QueueError::ShuttingDown) => JobOutcome::Cancelled,
    });
    // The caller may have gone meanwhile; then the value has nobody to go to.
    let _ = reply.send(value);
}

/// Owns the receiving end: takes a worker permit, then a job, and runs the job with the permit.
async fn dispatch(
    mut jobs: mpsc::Receiver<Job>,
    workers: Arc<Semaphore>,
    stats: Arc<Stats>,
    shutdown: Shutdown,
    tracker: TaskTracker,
) {
    let mut open = true;
    let mut permit = None;
    loop {
        // Every branch is cancel-safe: `recv` loses no job, and a permit not yet granted is no loss.
        tokio::select! {
            biased;
            () = shutdown.abort.cancelled() => break,
            () = shutdown.drain.cancelled(), if open => {
                // No new jobs; `recv` still yields the queued ones, then `None`.
                jobs.close();
                open = false;
            }
            granted = Arc::clone(&workers).acquire_owned(), if permit.is_none() => {
                permit = Some(granted.expect("the worker semaphore is never closed"));
            }
            job = jobs.recv(), if permit.is_some() => match (job, permit.take()) {
                (Some(job), Some(permit)) => {
                    tracker.spawn(on_worker(job, permit, shutdown.abort.clone(), Arc::clone(&stats)));
                }
                // Closed and empty (or every handle gone): nothing will ever come.
                _ => return,
            },
        }
    }
    // The grace period is over: what is still queued will not run. Dropping a job drops its
    // reply sender, which its caller reads as `ShuttingDown`.
    jobs.close();
    while let Ok(job) = jobs.try_recv() {
        stats.count_job(JobOutcome::Cancelled);
        drop(job);
    }
}

/// Runs one job, holding a worker permit throughout; drops it unfinished at `abort`.
async fn on_worker(job: Job, _permit: OwnedSemaphorePermit, abort: CancellationToken, stats: Arc<Stats>) {
    tokio::select! {
        biased;
        () = job => {}
        () = abort.cancelled() => stats.count_job(JobOutcome::Cancelled),
    }
}

#[cfg(test)]
mod tests {
    //! Paused time: jobs wait on tokio timers, so every deadline fires at an exact instant.

    use std::num::NonZeroUsize;
    use std::time::Duration;

    use super::*;

    const fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    struct Fixture {
        queue: JobQueue,
        stats: Arc<Stats>,
        shutdown: Shutdown,
        tracker: TaskTracker,
    }

    fn start(queue_capacity: usize, workers: usize, job_timeout: Duration) -> Fixture {
        let config = Config {
            queue_capacity: NonZeroUsize::new(queue_capacity).unwrap(),
            workers: NonZeroUsize::new(workers).unwrap(),
            job_timeout,
            ..Config::default()
        };
        let (stats, shutdown, tracker) =
            (Arc::new(Stats::default()), Shutdown::default(), TaskTracker::new());
        let metrics = Arc::new(Metrics::new([]));
        let queue = JobQueue::start(Arc::new(config), Arc::clone(&stats), metrics, &shutdown, &tracker);
        Fixture { queue, stats, shutdown, tracker }
    }

    impl Fixture {
        /// Drains and waits for the dispatcher, as the service's shutdown does.
        async fn finish(self) {
            self.shutdown.drain.cancel();
            self.tracker.close();
            self.tracker.wait().await;
        }
    }

    /// A job that takes `duration` of (virtual) time.
    async fn timed(duration: Duration) -> Result<u128, QueueError> {
        time::sleep(duration).await;
        Ok(duration.as_millis())
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_full_queue_refuses_busy_at_once() {
        let fixture = start(1, 1, secs(60));
        let running = tokio::spawn(fixture.queue.submit(timed(secs(10))));
        // Let the dispatcher hand the first job to the only worker.
        time::sleep(Duration::from_millis(1)).await;
        let queued = tokio::spawn(fixture.queue.submit(timed(secs(10))));
        tokio::task::yield_now().await;
        assert_eq!(fixture.queue.queued(), 1);
        let start = Instant::now();
        assert_eq!(fixture.queue.submit(timed(secs(10))).await, Err(QueueError::Busy));
        assert_eq!(start.elapsed(), Duration::ZERO, "shed without waiting");
        assert_eq!(running.await.unwrap(), Ok(10_000));
        assert_eq!(queued.await.unwrap(), Ok(10_000));
        assert_eq!(fixture.stats.jobs_ended(JobOutcome::Shed), 1);
        fixture.finish().await;
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_job_past_its_deadline_times_out_running_or_queued() {
        let fixture = start(4, 1, secs(5));
        let start = Instant::now();
        let slow = fixture.queue.submit(timed(secs(60)));
        // Queued behind it: its deadline passes while it waits, so it never runs.
        let waiting = fixture.queue.submit(timed(Duration::ZERO));
        assert_eq!(slow.await, Err(QueueError::TimedOut));
        assert_eq!(start.elapsed(), secs(5));
        assert_eq!(waiting.await, Err(QueueError::TimedOut));
        assert_eq!(start.elapsed(), secs(5));
        assert_eq!(fixture.stats.jobs_ended(JobOutcome::TimedOut), 2);
        fixture.finish().await;
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_panicking_job_is_reported_and_the_next_job_runs() {
        let fixture = start(4, 1, secs(5));
        let panicking = fixture.queue.submit(async {
            time::sleep(secs(1)).await;
            panic!("job failed on purpose")
        });
        assert_eq!(panicking.await, Err::<(), _>(QueueError::Panicked));
        // A job that reports a panic of its own (as CPU work on the pool does) counts the same.
        let reported = fixture.queue.submit(async { Err::<(), _>(QueueError::Panicked) });
        assert_eq!(reported.await, Err(QueueError::Panicked));
        assert_eq!(fixture.queue.submit(timed(secs(1))).await, Ok(1000));
        assert_eq!(fixture.stats.jobs_ended(JobOutcome::Panicked), 2);
        fixture.finish().await;
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_job_whose_caller_leaves_is_dropped_at_once_and_counted() {
        let fixture = start(4, 1, secs(60));
        // The work holds a sender: when the work is dropped, the receiver hears it closed.
        let (held, mut dropped) = oneshot::channel::<()>();
        let abandoned = fixture.queue.submit(async move {
            let _held = held;
            timed(secs(30)).await
        });
        // Start it, then give up on it after 1 s.
        assert!(time::timeout(secs(1), abandoned).await.is_err());
        tokio::task::yield_now().await;
        assert_eq!(
            dropped.try_recv(),
            Err(oneshot::error::TryRecvError::Closed),
            "the work was dropped at once"
        );
        assert_eq!(fixture.stats.running_jobs(), 0);
        assert_eq!(fixture.stats.jobs_ended(JobOutcome::Abandoned), 1);
        fixture.finish().await;
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn abort_ends_running_and_queued_jobs_and_later_jobs_are_refused() {
        let fixture = start(4, 1, secs(60));
        let running = tokio::spawn(fixture.queue.submit(timed(secs(30))));
        let queued = tokio::spawn(fixture.queue.submit(timed(secs(30))));
        time::sleep(secs(1)).await;
        fixture.shutdown.abort.cancel();
        assert_eq!(running.await.unwrap(), Err(QueueError::ShuttingDown));
        assert_eq!(queued.await.unwrap(), Err(QueueError::ShuttingDown));
        assert_eq!(fixture.queue.submit(timed(secs(1))).await, Err(QueueError::ShuttingDown));
        assert_eq!(fixture.stats.jobs_ended(JobOutcome::Cancelled), 3, "the two, and the one refused after");
        fixture.finish().await;
    }

    /// At `abort`, callers that give up at that instant too (a connection the abort closes)
    /// race the workers that drop their jobs: whoever is first, each job is counted once, as
    /// cancelled.
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn at_abort_each_job_counts_once_as_cancelled_whoever_drops_it_first() {
        let fixture = start(8, 2, secs(60));
        let mut callers = Vec::new();
        for _ in 0..6 {
            let job = fixture.queue.submit(timed(secs(30)));
            let abort = fixture.shutdown.abort.clone();
            callers.push(tokio::spawn(async move {
                tokio::select! {
                    value = job => value,
                    () = abort.cancelled() => Err(QueueError::ShuttingDown),
                }
            }));
        }
        time::sleep(secs(1)).await;
        fixture.shutdown.abort.cancel();
        for caller in callers {
            assert_eq!(caller.await.unwrap(), Err(QueueError::ShuttingDown));
        }
        tokio::task::yield_now().await;
        let ended: u64 = JobOutcome::ALL.into_iter().map(|outcome| fixture.stats.jobs_ended(outcome)).sum();
        assert_eq!(ended, 6, "one outcome per job");
        assert_eq!(fixture.stats.jobs_ended(JobOutcome::Cancelled), 6);
        fixture.finish().await;
    }

    /// The dispatcher ends at drain once the queue is empty, even while handles to the queue
    /// are still alive: a forgotten clone cannot stretch shutdown.
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn drain_runs_what_is_queued_then_ends_while_handles_live() {
        let fixture = start(4, 1, secs(60));
        let kept = fixture.queue.clone();
        let start = Instant::now();
        let first = tokio::spawn(fixture.queue.submit(timed(secs(2))));
        let second = tokio::spawn(fixture.queue.submit(timed(secs(2))));
        tokio::task::yield_now().await;
        fixture.shutdown.drain.cancel();
        // Let the dispatcher see the drain.
        tokio::task::yield_now().await;
        assert_eq!(kept.submit(timed(secs(1))).await, Err(QueueError::ShuttingDown), "no new job");
        assert_eq!(fixture.stats.jobs_ended(JobOutcome::Cancelled), 1, "refused at drain: counted");
        assert_eq!(first.await.unwrap(), Ok(2000));
        assert_eq!(second.await.unwrap(), Ok(2000), "queued before the drain: it runs");
        fixture.tracker.close();
        fixture.tracker.wait().await;
        assert_eq!(start.elapsed(), secs(4), "ended with the last job, not with the handles");
        drop(kept);
    }
}
