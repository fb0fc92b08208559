//! The tests' own commands: the tools the shared tests time and load the service with, so that
//! no shared test names an example command (a user removes those freely). They are added to the
//! registry with [`Commands::with`], as a program embedding the server adds its own, and each is
//! a model of its kind on the public command API.

use std::time::{Duration, Instant};

use service::commands::{Commands, Context, Reply, Spec, arguments};
use service::protocol::Response;

/// The longest `WAIT` or `SPIN`, in milliseconds.
const MAX_MS: u64 = 60_000;

/// `WAIT <ms>`: answered `OK <ms>` after that long on a tokio timer (waits, holds no thread).
pub static WAIT: Spec = Spec {
    name: "WAIT",
    usage: "<ms>",
    help: "OK <ms> after ms milliseconds on a tokio timer (tests only)",
    ends_connection: false,
    pushes: false,
    examples: &[("WAIT 5", "OK 5"), ("WAIT 60001", "ERR bad-argument WAIT takes a number from 0 to 60000")],
    start: wait,
};

fn wait(argument: Option<&str>, context: &mut Context) -> Result<Reply, Response> {
    let ms = arguments::number(WAIT.name, argument, MAX_MS)?;
    Ok(context.wait(async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Response::ok(ms.to_string())
    }))
}

/// `SPIN <ms>`: keeps a CPU-pool thread busy for that long, then answers `OK <ms>` (computes;
/// gives up within 100 µs once nobody waits for it).
pub static SPIN: Spec = Spec {
    name: "SPIN",
    usage: "<ms>",
    help: "OK <ms> after ms milliseconds of CPU work on the pool (tests only)",
    ends_connection: false,
    pushes: false,
    examples: &[("SPIN 1", "OK 1"), ("SPIN x", "ERR bad-argument SPIN takes a number from 0 to 60000")],
    start: spin,
};

fn spin(argument: Option<&str>, context: &mut Context) -> Result<Reply, Response> {
    let ms = arguments::number(SPIN.name, argument, MAX_MS)?;
    Ok(context.compute(
        move |stop| {
            let until = Instant::now() + Duration::from_millis(ms);
            while Instant::now() < until {
                stop.check()?;
                let step = Instant::now() + Duration::from_micros(100);
                while Instant::now() < step {
                    std::hint::spin_loop();
                }
            }
            Ok(ms)
        },
        |ms| Response::ok(ms.to_string()),
    ))
}

/// The registry and the tests' own commands.
pub fn commands() -> Commands {
    Commands::with(&[&WAIT, &SPIN])
}
