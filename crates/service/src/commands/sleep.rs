//! `SLEEP <ms>`: answered `OK <ms>` after that many milliseconds. **Example domain code: replace
//! it.**
//!
//! It stands for the *waiting* kind of command (a database call, a request to another service):
//! it awaits a tokio timer inside the connection's task, holds no thread while it waits, and
//! blocks nothing else. Awaiting is all it takes; nothing here touches the job queue.

use std::time::Duration;

use super::{Context, Reply, Spec, arguments};
use crate::protocol::Response;

/// The longest `SLEEP`, in milliseconds: a bound on how long one request can hold a slot.
const MAX_MS: u64 = 60_000;

pub(super) const SLEEP: Spec = Spec {
    name: "SLEEP",
    usage: "<ms>",
    help: "OK <ms> after ms milliseconds on a tokio timer (ms <= 60000)",
    ends_connection: false,
    pushes: false,
    examples: &[
        ("SLEEP 20", "OK 20"),
        ("SLEEP 60001", "ERR bad-argument SLEEP takes a number from 0 to 60000"),
    ],
    start,
};

fn start(argument: Option<&str>, context: &mut Context) -> Result<Reply, Response> {
    let ms = arguments::number(SLEEP.name, argument, MAX_MS)?;
    Ok(context.wait(async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Response::ok(ms.to_string())
    }))
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use crate::commands::tests::{answer, context};

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn answers_after_exactly_its_time() {
        let context = &mut context();
        let start = Instant::now();
        assert_eq!(answer("SLEEP 1500", context).await, "OK 1500");
        assert_eq!(start.elapsed().as_millis(), 1500);
        assert_eq!(answer("SLEEP 0", context).await, "OK 0");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn refuses_what_is_not_a_number_within_bounds() {
        let context = &mut context();
        for line in ["SLEEP", "SLEEP -1", "SLEEP +5", "SLEEP 1e3", "SLEEP  5", "SLEEP 60001"] {
            assert_eq!(
                answer(line, context).await,
                "ERR bad-argument SLEEP takes a number from 0 to 60000",
                "{line:?}"
            );
        }
    }
}
