//! The rayon bridge: run CPU work on a dedicated rayon pool and await its result from async
//! code. [`CpuPool`]'s docs say how, and why it is safe to use from a server.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use crate::JobError;
use crate::stop::Stop;

/// How far the pool's threads lower their priority (`nice`), on Linux. When jobs keep every
/// core busy, the kernel then favours a runtime thread that I/O wakes over them (a nice 10
/// thread weighs about a tenth of a nice 0 one, sched(7)): answers stay quick while the pool is
/// saturated (the bench's `isolation_p99`). A job still gets every core nobody else wants.
pub(crate) const NICENESS: i32 = 10;

/// Lowers the calling thread's priority by ten `nice` steps, as the pool's threads do at their
/// start: for threads of bulk work that should not delay a runtime's (the service's subscriber
/// threads call it too). Linux keeps a nice value per thread (nice(2), "NOTES"); POSIX systems
/// that keep one per process would lower the whole service, so elsewhere this does nothing. A
/// failure leaves the thread as it was: it only costs latency.
pub fn lower_priority() {
    #[cfg(target_os = "linux")]
    let _ = rustix::process::nice(NICENESS);
}

/// A rayon thread pool shared by cheap clones.
///
/// CPU-bound work on a tokio worker blocks every other task on that worker for as long as it runs
/// ("async code should never spend a long time without reaching an `.await`": see
/// <https://ryhl.io/blog/async-what-is-blocking/>). So the work goes to rayon, and the async side
/// waits on a `tokio::sync::oneshot`, which needs no runtime features and so works from any
/// runtime, `current_thread` included.
///
/// Two details make it safe to use from a server:
///
/// * **Panics come back as values.** A panic inside `rayon::spawn` with no panic handler aborts the
///   whole process (see `rayon::ThreadPoolBuilder::panic_handler`). The closure runs inside
///   `catch_unwind`, so a panicking job yields [`JobError::Panicked`] and the pool keeps working.
/// * **The job starts at once, not on first poll.** [`CpuPool::spawn`] queues the job before it
///   returns. Dropping the returned [`CpuTask`] discards the result, but **the job still runs to the
///   end**: rayon cannot interrupt a running closure. Work that should stop early takes a
///   [`Stop`] through [`CpuPool::spawn_stoppable`], which dropping the task sets, as [`crate::primes::try_count_below`] does.
#[derive(Clone)]
pub struct CpuPool {
    pool: Arc<rayon::ThreadPool>,
}

impl CpuPool {
    /// A pool of `threads` threads named `cpu-N` (0 means one per available core, rayon's
    /// default). On Linux they run ten `nice` steps below the thread that builds the pool, so
    /// that a saturated pool does not slow the runtime's threads down.
    pub fn new(threads: usize) -> Result<Self, rayon::ThreadPoolBuildError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("cpu-{i}"))
            .start_handler(|_| lower_priority())
            .build()?;
        Ok(Self { pool: Arc::new(pool) })
    }

    /// The number of threads in the pool.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Queues `job` on the pool now and returns a future of its result.
    ///
    /// Inside `job`, rayon's parallel iterators run on this pool too.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = cpu::CpuPool::new(2).unwrap();
    /// let count = pool.spawn(|| cpu::primes::count_below(1_000)).await;
    /// assert_eq!(count, Ok(168));
    ///
    /// let panicked = pool.spawn(|| -> u64 { panic!("boom") }).await;
    /// assert_eq!(panicked, Err(cpu::JobError::Panicked("boom".into())));
    /// # }
    /// ```
    pub fn spawn<F, T>(&self, job: F) -> CpuTask<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.spawn_stoppable(move |_| job())
    }

    /// Like [`CpuPool::spawn`], and `job` gets a [`Stop`] that is set when the returned
    /// [`CpuTask`] is dropped, so work nobody waits for can give up early.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = cpu::CpuPool::new(1).unwrap();
    /// let count = pool.spawn_stoppable(|stop| cpu::primes::try_count_below(1_000, stop)).await;
    /// assert_eq!(count, Ok(Ok(168)));
    /// # }
    /// ```
    pub fn spawn_stoppable<F, T>(&self, job: F) -> CpuTask<T>
    where
        F: FnOnce(&Stop) -> T + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let stop = Stop::new();
        let seen_by_the_job = stop.clone();
        self.pool.spawn(move || {
            let result =
                catch_unwind(AssertUnwindSafe(|| job(&seen_by_the_job))).map_err(JobError::from_panic);
            // The receiver is gone if the caller stopped waiting: the result is discarded.
            let _ = tx.send(result);
        });
        CpuTask { rx, stop }
    }
}

/// The result of a job on a [`CpuPool`]; see [`CpuPool::spawn`]. Dropping it sets the job's
/// [`Stop`].
#[must_use = "the job runs anyway; dropping this only discards its result and sets its Stop"]
pub struct CpuTask<T> {
    rx: oneshot::Receiver<Result<T, JobError>>,
    stop: Stop,
}

impl<T> Drop for CpuTask<T> {
    fn drop(&mut self) {
        // Harmless once the job has ended; before, it tells a stoppable job to give up.
        self.stop.set();
    }
}

impl<T> Future for CpuTask<T> {
    type Output = Result<T, JobError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // The sender is dropped without sending only if the pool dropped the job unrun.
        Pin::new(&mut self.rx).poll(cx).map(|received| received.unwrap_or(Err(JobError::Cancelled)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn returns_the_value_on_a_current_thread_runtime() {
        let pool = CpuPool::new(2).unwrap();
        assert_eq!(pool.threads(), 2);
        assert_eq!(pool.spawn(|| crate::primes::count_below(10_000)).await, Ok(1_229));
    }

    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "current_thread")]
    async fn the_pools_threads_run_below_the_thread_that_built_it() {
        let nice = || rustix::process::getpriority_process(None).expect("getpriority");
        let builder = nice();
        let pool = CpuPool::new(2).unwrap();
        let (first, second) = tokio::join!(pool.spawn(nice), pool.spawn(nice));
        // The kernel caps nice values at 19.
        let expected = (builder + NICENESS).min(19);
        assert_eq!((first, second), (Ok(expected), Ok(expected)));
        assert_eq!(nice(), builder, "the caller's thread keeps its priority");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_panic_is_an_error_and_the_pool_keeps_working() {
        let pool = CpuPool::new(1).unwrap();
        let panicked = pool.spawn(|| -> u32 { panic!("job {} failed", 7) }).await;
        assert_eq!(panicked, Err(JobError::Panicked("job 7 failed".into())));
        // The single thread survived the panic.
        assert_eq!(pool.spawn(|| 40 + 2).await, Ok(42));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_dropped_future_discards_the_result_but_the_job_runs_to_the_end() {
        let pool = CpuPool::new(1).unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel();
        let task = {
            let ran = Arc::clone(&ran);
            pool.spawn(move || {
                // Wait until the future below has been dropped.
                #[expect(
                    clippy::disallowed_methods,
                    reason = "a test job on the rayon pool, not in async code"
                )]
                release_rx.recv().unwrap();
                ran.fetch_add(1, Ordering::SeqCst);
                let _ = done_tx.send(());
            })
        };
        drop(task);
        release_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), done_rx).await.unwrap().unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn dropping_the_task_of_a_stoppable_job_stops_it() {
        let pool = CpuPool::new(1).unwrap();
        let (started_tx, started_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let task = pool.spawn_stoppable(move |stop: &Stop| {
            let _ = started_tx.send(());
            // Work that checks its flag between steps, forever unless stopped.
            let mut steps = 0u64;
            while stop.check().is_ok() {
                steps += 1;
                std::hint::black_box(steps);
            }
            let _ = done_tx.send(steps);
        });
        tokio::time::timeout(Duration::from_secs(10), started_rx).await.unwrap().unwrap();
        drop(task);
        // Without the stop, the loop never ends and this times out.
        let ended = tokio::time::timeout(Duration::from_secs(10), done_rx).await;
        assert!(matches!(ended, Ok(Ok(_))), "the job stopped when its task was dropped");
    }
}
