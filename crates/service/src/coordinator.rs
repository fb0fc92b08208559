//! The coordinator: a bounded queue of CPU jobs and the workers that run them.
//!
//! A request that needs CPU work submits a job (a future) and awaits its answer on a `oneshot`. The
//! design answers four questions every job queue must:
//!
//! * **What if the queue is full?** [`Coordinator::submit`] uses `try_send`: a full queue answers
//!   `ERR busy` at once (load shedding). Waiting for room instead would let queued work, memory
//!   and latency grow without bound under overload.
//! * **How many run at once?** `workers`, enforced by a semaphore. `tokio::sync::mpsc::Receiver`
//!   is single-consumer (it is not `Clone`), so "several workers sharing one receiver" does not
//!   compile; `Arc<Mutex<Receiver>>` would, but makes idle workers queue on a lock held across
//!   `.await`. Instead one dispatcher task owns the receiver: it takes a worker permit *first*,
//!   then a job, and spawns the job with the permit. Taking the permit first keeps jobs in the
//!   queue (where `queue_capacity` bounds them and `STATS` counts them) until a worker is free.
//! * **What if a job takes too long?** Each job has a deadline counted from submission. A job
//!   still queued at its deadline is answered `ERR timeout` without running; a running one is
//!   dropped at its deadline (PRIMES then tells its rayon job to stop) and answered `ERR timeout`.
//! * **What if a job panics?** The job's future runs under `catch_unwind` and the rayon bridge
//!   catches panics on its side: the answer is `ERR internal`, and the workers carry on.
//!
//! Jobs are futures, so the coordinator does not care what they wait on: PRIMES waits on the
//! rayon pool, and the paused-time tests use jobs that wait on tokio timers.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::{self, Instant};
use tokio_util::task::TaskTracker;

use crate::protocol::{ErrorCode, Response};
use crate::shutdown::Shutdown;
use crate::stats::{JobOutcome, Stats};

/// What a job computes: the text of its `OK` answer, or an error code.
pub type JobResult = Result<String, ErrorCode>;

/// A unit of work: a future that runs when a worker takes it (futures are lazy).
pub type JobFuture = Pin<Box<dyn Future<Output = JobResult> + Send>>;

/// A job in the queue.
struct Job {
    work: JobFuture,
    deadline: Instant,
    reply: oneshot::Sender<JobResult>,
}

/// The sizes and deadline of the coordinator.
#[derive(Debug, Clone, Copy)]
pub struct CoordinatorConfig {
    /// Jobs that may wait in the queue.
    pub queue_capacity: usize,
    /// Jobs that may run at once.
    pub workers: usize,
    /// Deadline of a job, from submission.
    pub job_timeout: Duration,
}

/// A handle to submit jobs; clones share the queue.
#[derive(Clone)]
pub struct Coordinator {
    queue: mpsc::Sender<Job>,
    job_timeout: Duration,
    stats: Arc<Stats>,
}

impl Coordinator {
    /// Starts the dispatcher on `tracker` and returns the handle to submit jobs to it.
    ///
    /// The dispatcher ends once every handle is dropped and the queue is empty, or at once on
    /// `shutdown.abort`, answering whatever is still queued with `ERR shutting-down`.
    pub fn start(
        config: CoordinatorConfig,
        stats: Arc<Stats>,
        shutdown: Shutdown,
        tracker: &TaskTracker,
    ) -> Self {
        let (queue, jobs) = mpsc::channel(config.queue_capacity);
        let workers = Arc::new(Semaphore::new(config.workers));
        tracker.spawn(dispatch(jobs, workers, Arc::clone(&stats), shutdown, tracker.clone()));
        Self { queue, job_timeout: config.job_timeout, stats }
    }

    /// Queues `work`, or answers `Err(busy)` at once if the queue is full. The returned receiver
    /// yields the job's answer; it never waits longer than the job's deadline (plus the time to
    /// notice it) or, at shutdown, the grace period.
    pub fn submit(
        &self,
        work: impl Future<Output = JobResult> + Send + 'static,
    ) -> Result<oneshot::Receiver<JobResult>, ErrorCode> {
        let (reply, answer) = oneshot::channel();
        let job = Job { work: Box::pin(work), deadline: Instant::now() + self.job_timeout, reply };
        match self.queue.try_send(job) {
            Ok(()) => Ok(answer),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.stats.job(JobOutcome::Shed);
                Err(ErrorCode::Busy)
            }
            // The dispatcher is gone: the grace period is over.
            Err(mpsc::error::TrySendError::Closed(_)) => Err(ErrorCode::ShuttingDown),
        }
    }

    /// Queues `work` and turns its answer into a response line.
    pub fn run<W>(&self, work: W) -> impl Future<Output = Response> + use<W>
    where
        W: Future<Output = JobResult> + Send + 'static,
    {
        let submitted = self.submit(work);
        async move {
            let answer = match submitted {
                // A dropped sender means the job was abandoned at shutdown.
                Ok(answer) => answer.await.unwrap_or(Err(ErrorCode::ShuttingDown)),
                Err(code) => Err(code),
            };
            match answer {
                Ok(text) => Response::ok(text),
                Err(code) => Response::err(code),
            }
        }
    }

    /// Jobs waiting in the queue now.
    pub fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }
}

/// Owns the receiving end: takes a worker permit, then a job, and runs the job with the permit.
async fn dispatch(
    mut jobs: mpsc::Receiver<Job>,
    workers: Arc<Semaphore>,
    stats: Arc<Stats>,
    shutdown: Shutdown,
    tracker: TaskTracker,
) {
    loop {
        let permit = tokio::select! {
            biased;
            () = shutdown.abort.cancelled() => break,
            permit = Arc::clone(&workers).acquire_owned() => permit.expect("the worker semaphore is never closed"),
        };
        let job = tokio::select! {
            biased;
            () = shutdown.abort.cancelled() => break,
            job = jobs.recv() => match job {
                Some(job) => job,
                // Every handle is gone and the queue is empty.
                None => return,
            },
        };
        tracker.spawn(work(job, permit, Arc::clone(&stats), shutdown.clone()));
    }
    // The grace period is over: what is still queued will not run.
    jobs.close();
    while let Ok(job) = jobs.try_recv() {
        stats.job(JobOutcome::Failed);
        let _ = job.reply.send(Err(ErrorCode::ShuttingDown));
    }
}

/// Runs one job to its answer, holding a worker permit throughout.
async fn work(mut job: Job, _permit: OwnedSemaphorePermit, stats: Arc<Stats>, shutdown: Shutdown) {
    let _running = stats.job_running();
    let answer = if Instant::now() >= job.deadline {
        // It waited in the queue past its deadline: running it would only waste a worker.
        Err(ErrorCode::Timeout)
    } else {
        let work = AssertUnwindSafe(job.work).catch_unwind();
        tokio::select! {
            biased;
            () = shutdown.abort.cancelled() => Err(ErrorCode::ShuttingDown),
            // The requester is gone (its connection closed): drop the work, nobody needs it.
            () = job.reply.closed() => return,
            finished = time::timeout_at(job.deadline, work) => match finished {
                Ok(Ok(answer)) => answer,
                Ok(Err(_panic)) => {
                    tracing::error!("a job panicked; answering ERR internal");
                    Err(ErrorCode::Internal)
                }
                Err(_elapsed) => Err(ErrorCode::Timeout),
            },
        }
    };
    stats.job(match answer {
        Ok(_) => JobOutcome::Done,
        Err(ErrorCode::Timeout) => JobOutcome::TimedOut,
        Err(_) => JobOutcome::Failed,
    });
    // The requester may have gone meanwhile; then the answer has nobody to go to.
    let _ = job.reply.send(answer);
}
