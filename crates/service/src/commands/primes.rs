//! `PRIMES <n>`: the count of primes below `n`, computed on the CPU pool. **Example domain code:
//! replace it.**
//!
//! It stands for the *computing* kind of command: its work is a plain sync function of the cpu
//! crate, and [`Context::compute`] does the rest (the bounded job queue, the rayon pool, the
//! deadline, panics, and stopping the sieve when nobody waits for it any more). Copying it takes
//! its parse, its function and that one call.

use super::{Context, Reply, Spec, arguments};
use crate::protocol::Response;

/// The largest `n`: it bounds the work one request can ask for (about 1 s on one core) and the
/// sieve's memory (its base primes grow with the square root of `n`).
const MAX_N: u64 = 1_000_000_000;

pub(super) const PRIMES: Spec = Spec {
    name: "PRIMES",
    usage: "<n>",
    help: "OK <count of primes below n>, on the CPU pool (n <= 1e9)",
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
    // A command's log lines are written inside its request's span: with traces on, a JSON line
    // carries the request's trace id (`RUST_LOG=service::commands=debug` shows this one).
    tracing::debug!(n, "counting the primes below n on the CPU pool");
    Ok(context
        .compute(move |stop| cpu::primes::try_count_below(n, stop), |count| Response::ok(count.to_string())))
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
