//! What each request does. **Example domain code: this is the part to replace.**
//!
//! `ECHO`, `SLEEP` and `PRIMES` each stand for a kind of work a real service does, and show where
//! that kind belongs:
//!
//! * `ECHO` (like `PING` and `STATS`) is *light*: answered on the spot, it never touches the
//!   coordinator or allocates a task; a pipelined burst of them costs one read and one write.
//! * `SLEEP` *waits* (stand-in for a database call, an upstream request): it awaits a tokio timer
//!   inside the connection's task and blocks nothing else.
//! * `PRIMES` *computes*: it goes through the coordinator's bounded queue to the rayon pool, and the
//!   connection awaits the answer.
//!
//! Every reply that is not immediate also ends at `shutdown.abort` with `ERR shutting-down`, so
//! no request outlives the grace period.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::future::{self, BoxFuture, Either, Ready};
use tokio::time;
use tokio_util::sync::CancellationToken;

use crate::coordinator::{Coordinator, JobResult};
use crate::protocol::{ErrorCode, Request, Response};
use crate::stats::Stats;

/// A reply being prepared: ready at once, or a future. Connections keep them in request order.
pub type Reply = Either<Ready<Response>, BoxFuture<'static, Response>>;

/// Runs requests; one per service, cloned into every connection.
#[derive(Clone)]
pub struct Commands {
    coordinator: Coordinator,
    pool: cpu::CpuPool,
    stats: Arc<Stats>,
    abort: CancellationToken,
}

impl Commands {
    /// Commands that queue CPU work on `coordinator`, run it on `pool`, and give up on `abort`.
    pub fn new(
        coordinator: Coordinator,
        pool: cpu::CpuPool,
        stats: Arc<Stats>,
        abort: CancellationToken,
    ) -> Self {
        Self { coordinator, pool, stats, abort }
    }

    /// Starts `request` and returns its reply.
    pub fn execute(&self, request: Request) -> Reply {
        match request {
            Request::Ping => now(Response::ok("PONG")),
            Request::Echo(text) => now(Response::ok(text)),
            Request::Stats => now(Response::ok(self.stats.render(self.coordinator.queued()))),
            Request::Quit => now(Response::ok("BYE")),
            Request::Sleep(duration) => self.until_abort(async move {
                time::sleep(duration).await;
                Response::ok(duration.as_millis().to_string())
            }),
            Request::Primes(n) => self.until_abort(self.coordinator.run(count_primes(self.pool.clone(), n))),
        }
    }

    /// Boxes a reply that waits, ending it with `ERR shutting-down` when the grace period is over.
    fn until_abort(&self, reply: impl Future<Output = Response> + Send + 'static) -> Reply {
        let abort = self.abort.clone().cancelled_owned();
        Either::Right(Box::pin(async move {
            tokio::select! {
                // An answer that is ready wins over the abort.
                biased;
                response = reply => response,
                () = abort => Response::err(ErrorCode::ShuttingDown),
            }
        }))
    }
}

/// A reply that is ready now: no allocation, no task.
pub fn now(response: Response) -> Reply {
    Either::Left(future::ready(response))
}

/// The PRIMES job: count on the rayon pool; if this future is dropped (deadline, shutdown, the
/// client left), tell the sieve to stop at its next segment.
async fn count_primes(pool: cpu::CpuPool, n: u64) -> JobResult {
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_when_dropped = StopOnDrop(Arc::clone(&stop));
    match pool.spawn(move || cpu::primes::count_below_until(n, &stop)).await {
        Ok(Some(count)) => Ok(count.to_string()),
        // Only this future sets the flag, by being dropped, so nobody sees this answer.
        Ok(None) => Err(ErrorCode::ShuttingDown),
        Err(cpu::JobError::Panicked(message)) => {
            tracing::error!(%message, n, "PRIMES job panicked; answering ERR internal");
            Err(ErrorCode::Internal)
        }
        Err(cpu::JobError::Cancelled) => Err(ErrorCode::ShuttingDown),
    }
}

/// Sets the flag when dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
