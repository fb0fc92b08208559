//! `SUBSCRIBE <topic> [<topic> ...]`: answers `OK <topics subscribed now>`; from then on the
//! connection also receives `MSG <topic> <text>` for each message published to those topics, or
//! `LAG <topic> <missed>` when it fell behind, or `GAP <topic>` after a fan-out broker outage.
//! Kept machinery (see `publish.rs`).
//!
//! Answers keep request order, and pushed lines go between them; a client tells them apart by
//! the first word. A subscribed connection is not idle (it waits for pushes), but one that stops
//! reading is dropped at the write timeout like any peer. Bounds: at most `--max-subscriptions`
//! topics per connection, and `--max-topics` in all (past either: `ERR busy`); a request that
//! cannot take all its topics takes none.

use super::{Context, Reply, Spec, arguments};
use crate::protocol::{ErrorCode, Response};

pub(super) const SUBSCRIBE: Spec = Spec {
    name: "SUBSCRIBE",
    usage: "<topic>...",
    help: "OK <topics subscribed>; then MSG <topic> <text>, LAG <topic> <missed> or GAP <topic> lines",
    ends_connection: false,
    pushes: true,
    examples: &[
        ("SUBSCRIBE news", "OK 1"),
        ("SUBSCRIBE a b a", "OK 2"),
        ("SUBSCRIBE", "ERR bad-argument SUBSCRIBE takes one or more topics"),
    ],
    start,
};

fn start(argument: Option<&str>, context: &mut Context) -> Result<Reply, Response> {
    let topics: Vec<&str> = argument
        .ok_or_else(|| Response::err_with(ErrorCode::BadArgument, "SUBSCRIBE takes one or more topics"))?
        .split(' ')
        .map(|word| arguments::topic(SUBSCRIBE.name, word))
        .collect::<Result<_, _>>()?;
    let mut new: Vec<&str> =
        topics.iter().copied().filter(|topic| !context.subscriptions.contains(topic)).collect();
    new.sort_unstable();
    new.dedup();
    let limit = context.subscriptions.limit();
    if context.subscriptions.len() + new.len() > limit {
        let busy = format!("at most {limit} topics per connection");
        return Err(Response::err_with(ErrorCode::Busy, busy));
    }
    for (added, topic) in new.iter().enumerate() {
        if context.subscriptions.subscribe(topic).is_err() {
            // All or nothing: undo this request's subscriptions.
            for topic in &new[..added] {
                context.subscriptions.unsubscribe(topic);
            }
            return Err(Response::err_with(ErrorCode::Busy, "too many topics"));
        }
    }
    Ok(Reply::ready(Response::ok(context.subscriptions.len().to_string())))
}

#[cfg(test)]
mod tests {
    use crate::commands::tests::{answer, contexts};

    #[tokio::test(flavor = "current_thread")]
    async fn counts_topics_once_and_refuses_past_the_bounds_all_or_nothing() {
        // The test context allows 8 topics in all, 6 for one connection.
        let [first, second] = &mut contexts();
        assert_eq!(answer("SUBSCRIBE a b", first).await, "OK 2");
        assert_eq!(answer("subscribe b c", first).await, "OK 3");
        assert_eq!(answer("SUBSCRIBE d e f g", first).await, "ERR busy at most 6 topics per connection");
        assert_eq!(first.subscriptions.len(), 3, "nothing of the refused request stays");
        assert_eq!(answer("SUBSCRIBE p q r s t", second).await, "OK 5", "8 topics in all");
        assert_eq!(answer("SUBSCRIBE u", second).await, "ERR busy too many topics", "a 9th topic");
        assert_eq!(second.subscriptions.len(), 5);
        assert_eq!(answer("SUBSCRIBE a", second).await, "OK 6", "an existing topic is no new topic");
        assert_eq!(
            answer("SUBSCRIBE ok \u{7}", first).await,
            "ERR bad-argument SUBSCRIBE: a topic is 1 to 64 printable ASCII characters"
        );
        assert_eq!(
            answer("SUBSCRIBE a  b", first).await,
            "ERR bad-argument SUBSCRIBE: a topic is 1 to 64 printable ASCII characters",
            "two spaces make an empty topic"
        );
    }
}
