//! The blocking bridge: run blocking I/O (a sync client library, `std::fs`) on tokio's blocking
//! thread pool, with a bound on how many such jobs run at once. [`BlockingPool`]'s docs say
//! how and why.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::JobError;

/// Runs blocking jobs on tokio's blocking pool, at most `max_jobs` at once. Clones share the bound.
///
/// `tokio::task::spawn_blocking` is meant for code that *waits* (on a disk, a socket inside a sync
/// library), not for CPU work: its pool grows to 512 threads by default, and each queued job holds
/// a thread while it waits (see the "CPU-bound tasks and blocking code" section of the
/// `tokio::task` docs). Left unbounded, a burst of slow jobs would start hundreds of threads, so
/// [`BlockingPool`] admits at most `max_jobs` at a time with a semaphore; the rest wait for a permit,
/// asynchronously.
///
/// The permit moves into the blocking closure, so the bound holds even when the caller stops
/// waiting: `spawn_blocking` work cannot be cancelled, and a dropped future leaves the job running
/// to the end, permit in hand.
#[derive(Clone)]
pub struct BlockingPool {
    permits: Arc<Semaphore>,
}

impl BlockingPool {
    /// A bound of `max_jobs` concurrent blocking jobs (at least 1).
    pub fn new(max_jobs: usize) -> Self {
        Self { permits: Arc::new(Semaphore::new(max_jobs.max(1))) }
    }

    /// The number of jobs that could start now without waiting.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }

    /// Waits for a permit, then runs `job` on the blocking pool and returns its result.
    /// Must be called from within a tokio runtime.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = cpu::BlockingPool::new(4);
    /// let dir = std::env::temp_dir();
    /// // std::fs blocks, so it runs here rather than on the async thread.
    /// let exists = pool.run(move || dir.is_dir()).await;
    /// assert_eq!(exists, Ok(true));
    /// # }
    /// ```
    pub async fn run<F, T>(&self, job: F) -> Result<T, JobError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let permit = Arc::clone(&self.permits).acquire_owned().await.expect("the semaphore is never closed");
        let handle = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            job()
        });
        handle.await.map_err(|error| match error.try_into_panic() {
            Ok(payload) => JobError::from_panic(payload),
            Err(_) => JobError::Cancelled,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn runs_the_job_and_catches_its_panic() {
        let pool = BlockingPool::new(1);
        assert_eq!(pool.run(|| "read").await, Ok("read"));
        let panicked = pool.run(|| -> () { panic!("disk on fire") }).await;
        assert_eq!(panicked, Err(JobError::Panicked("disk on fire".into())));
        assert_eq!(pool.available(), 1, "a panicking job gives its permit back");
    }

    /// Eight concurrent jobs on a bound of two: never more than two run at once, and all finish.
    #[tokio::test(flavor = "current_thread")]
    async fn never_runs_more_than_the_bound() {
        let pool = BlockingPool::new(2);
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut jobs = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (pool, running, peak) = (pool.clone(), Arc::clone(&running), Arc::clone(&peak));
            jobs.spawn(async move {
                pool.run(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    #[expect(
                        clippy::disallowed_methods,
                        reason = "stands in for blocking I/O on the blocking pool"
                    )]
                    std::thread::sleep(Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                })
                .await
            });
        }
        let results = jobs.join_all().await;
        assert_eq!(results.len(), 8);
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }

    /// A job whose caller gave up keeps its permit until it really ends.
    #[tokio::test(flavor = "current_thread")]
    async fn a_dropped_future_keeps_the_permit_until_the_job_ends() {
        let pool = BlockingPool::new(1);
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let waiting = pool.run(move || {
            #[expect(clippy::disallowed_methods, reason = "a blocking job on the blocking pool")]
            release_rx.recv().unwrap();
        });
        // Start it (it takes the only permit), then give up on it.
        let gave_up = tokio::time::timeout(Duration::from_millis(20), waiting).await;
        assert!(gave_up.is_err());
        assert_eq!(pool.available(), 0, "the abandoned job still holds its permit");
        release_tx.send(()).unwrap();
        assert_eq!(pool.run(|| 1).await, Ok(1));
        assert_eq!(pool.available(), 1);
    }
}
