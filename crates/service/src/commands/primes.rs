//! `PRIMES <n>`: the count of primes below `n`, computed on the CPU pool. **Example domain code:
//! replace it.**
//!
//! It stands for the *computing* kind of command: the work is a plain sync function in the cpu
//! crate, run on the rayon pool through the bounded job queue, and the connection awaits the
//! answer. The queue sheds load (`ERR busy`), enforces the job deadline (`ERR timeout`) and
//! survives panics (`ERR internal`). When the job is dropped (deadline, shutdown, the client
//! left), it tells the sieve to stop at its next segment, so the CPU is freed too.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{Context, Reply, Spec, Work, arguments};
use crate::protocol::Response;

/// The largest `n`: it bounds the work one request can ask for (about 1 s on one core).
const MAX_N: u64 = 1_000_000_000;

pub(super) const PRIMES: Spec = Spec {
    name: "PRIMES",
    usage: "<n>",
    answer: "OK <count of primes below n>, on the CPU pool (n <= 1e9)",
    work: Work::Computes,
    ends_connection: false,
    pushes: false,
    examples: &[
        ("PRIMES 1000000", "OK 78498"),
        ("PRIMES 2", "OK 0"),
        ("PRIMES 1000000001", "ERR bad-argument PRIMES takes a number from 0 to 1000000000"),
    ],
    start,
};

fn start(argument: Option<&str>, context: &mut Context) -> Result<Reply, Response> {
    let n = arguments::number(PRIMES.name, argument, MAX_N)?;
    let job = context.jobs().submit(count_primes(context.pool().clone(), n));
    Ok(context.later(async move {
        match job.await {
            Ok(Some(count)) => Response::ok(count.to_string()),
            // The pool stopped the count: only shutdown does that to a job that is awaited.
            Ok(None) => Response::err(crate::protocol::ErrorCode::ShuttingDown),
            Err(error) => Response::from(error),
        }
    }))
}

/// The job: count on the rayon pool. If this future is dropped, the sieve stops at its next
/// segment. A panic on the pool is raised again here, so the job queue reports and counts it
/// like any other job's panic.
async fn count_primes(pool: cpu::CpuPool, n: u64) -> Option<u64> {
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_when_dropped = StopOnDrop(Arc::clone(&stop));
    match pool.spawn(move || cpu::primes::count_below_until(n, &stop)).await {
        Ok(count) => count,
        // `resume_unwind` skips the panic hook: the pool's thread already printed the panic.
        Err(cpu::JobError::Panicked(message)) => std::panic::resume_unwind(Box::new(message)),
        Err(cpu::JobError::Cancelled) => None,
    }
}

/// Sets the flag when dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use crate::commands::tests::{answer, context};

    #[tokio::test(flavor = "current_thread")]
    async fn counts_on_the_pool_and_refuses_past_the_limit() {
        let context = &mut context();
        assert_eq!(answer("PRIMES 100", context).await, "OK 25");
        assert_eq!(answer("primes 0", context).await, "OK 0");
        for line in ["PRIMES", "PRIMES 1000000001", "PRIMES 18446744073709551616", "PRIMES x"] {
            assert_eq!(
                answer(line, context).await,
                "ERR bad-argument PRIMES takes a number from 0 to 1000000000",
                "{line:?}"
            );
        }
    }
}
