//! `PUBLISH <topic> <text>`: sends the text to every subscriber of the topic and answers
//! `OK <subscribers reached>`; with `--fanout-url`, to every replica's subscribers through the
//! broker, answering `OK <replicas reached>` (see `fanout/relay.rs`). Kept machinery, like SUBSCRIBE
//! and UNSUBSCRIBE: the README's removal recipe keeps them.
//!
//! It stands for fan-out, the fourth kind of work a service does (after answering, waiting and
//! computing): one event pushed to many clients. It never waits for a subscriber: each
//! subscriber's connection reads from a bounded `broadcast` channel, and one that falls behind is
//! told what it missed (see `fanout/mod.rs`); its own connection waits only for its publish budget.
//! The text is everything after the topic's space, byte for byte: at most `--max-message` bytes,
//! and no control character but tab. Through the broker, the answer waits at most
//! `relay::ANSWER_TIMEOUT` (250 ms), then is `ERR unavailable`.

use super::{Context, Reply, Spec, arguments};
#[cfg(feature = "redis")]
use crate::fanout::relay::{ANSWER_TIMEOUT, RelayError};
use crate::fanout::{PublishError, Published};
use crate::protocol::{ErrorCode, Response};

pub(super) const PUBLISH: Spec = Spec {
    name: "PUBLISH",
    usage: "<topic> <text>",
    help: "OK <subscribers reached>",
    ends_connection: false,
    pushes: false,
    examples: &[
        ("PUBLISH news nobody listens", "OK 0"),
        ("PUBLISH news", "ERR bad-argument PUBLISH takes a topic and a text"),
    ],
    start,
};

fn start(argument: Option<&str>, context: &mut Context) -> Result<Reply, Response> {
    let refused = || Response::err_with(ErrorCode::BadArgument, "PUBLISH takes a topic and a text");
    let (topic, text) = argument.and_then(|argument| argument.split_once(' ')).ok_or_else(refused)?;
    let topic = arguments::topic(PUBLISH.name, topic)?;
    let refused = |refused: PublishError| Response::err_with(refused.code(), format!("PUBLISH: {refused}"));
    let now = tokio::time::Instant::now();
    let (topics, publisher) = context.topics_and_publisher();
    match topics.publish(topic, text, publisher, now).map_err(refused)? {
        Published::Here(reached) => Ok(Reply::ready(Response::ok(reached.to_string()))),
        #[cfg(feature = "redis")]
        Published::Relayed(answer) => Ok(context.wait(async move {
            match tokio::time::timeout(ANSWER_TIMEOUT, answer).await {
                Ok(Ok(Ok(replicas))) => Response::ok(replicas.to_string()),
                Ok(Ok(Err(error))) => refused(PublishError::Relay(error)),
                Ok(Err(_relay_ended)) => Response::err(ErrorCode::ShuttingDown),
                Err(_elapsed) => refused(PublishError::Relay(RelayError::NoAnswer)),
            }
        })),
    }
}

#[cfg(test)]
mod tests {
    use crate::commands::tests::{answer, contexts};

    #[tokio::test(flavor = "current_thread")]
    async fn reaches_every_subscriber_and_nobody_else() {
        let [publisher, first, second] = &mut contexts();
        assert_eq!(answer("PUBLISH t hi", publisher).await, "OK 0");
        assert_eq!(answer("SUBSCRIBE t", first).await, "OK 1");
        assert_eq!(answer("SUBSCRIBE t u", second).await, "OK 2");
        assert_eq!(answer("PUBLISH t hi there", publisher).await, "OK 2");
        assert_eq!(answer("PUBLISH u ", publisher).await, "OK 1", "an empty text is a text");
        let long = format!("PUBLISH t {}", "x".repeat(1025));
        assert_eq!(answer(&long, publisher).await, "ERR bad-argument PUBLISH: a text is at most 1024 bytes");
        assert_eq!(
            answer("PUBLISH t a\rOK 42", publisher).await,
            "ERR bad-argument PUBLISH: a text holds no control character but tab"
        );
        assert_eq!(answer("PUBLISH t a\tb", publisher).await, "OK 2", "a tab is text");
        assert_eq!(
            answer("PUBLISH  hi", publisher).await,
            "ERR bad-argument PUBLISH: a topic is 1 to 64 printable ASCII characters"
        );
    }
}
