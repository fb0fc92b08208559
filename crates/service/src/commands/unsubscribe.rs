//! `UNSUBSCRIBE [<topic> ...]`: ends those subscriptions (all of them when no topic is given) and
//! answers `OK <topics left>`. Kept machinery (see `publish.rs`). A topic left without
//! subscribers is removed.

use super::{Context, Reply, Spec, arguments};
use crate::protocol::Response;

pub(super) const UNSUBSCRIBE: Spec = Spec {
    name: "UNSUBSCRIBE",
    usage: "[<topic>...]",
    help: "OK <topics left> (no topic: all)",
    ends_connection: false,
    pushes: false,
    examples: &[("UNSUBSCRIBE", "OK 0"), ("UNSUBSCRIBE never-subscribed", "OK 0")],
    start,
};

fn start(argument: Option<&str>, context: &mut Context) -> Result<Reply, Response> {
    match argument {
        None => context.subscriptions.clear(),
        Some(topics) => {
            let topics: Vec<&str> = topics
                .split(' ')
                .map(|word| arguments::topic(UNSUBSCRIBE.name, word))
                .collect::<Result<_, _>>()?;
            for topic in topics {
                context.subscriptions.unsubscribe(topic);
            }
        }
    }
    Ok(Reply::ready(Response::ok(context.subscriptions.len().to_string())))
}

#[cfg(test)]
mod tests {
    use crate::commands::tests::{answer, context};

    #[tokio::test(flavor = "current_thread")]
    async fn leaves_what_it_names_or_everything() {
        let context = &mut context();
        assert_eq!(answer("SUBSCRIBE a b c", context).await, "OK 3");
        assert_eq!(answer("UNSUBSCRIBE a z", context).await, "OK 2");
        assert_eq!(context.topics().count(), 2, "a is gone with its only subscriber");
        assert_eq!(answer("UNSUBSCRIBE", context).await, "OK 0");
        assert_eq!(context.topics().count(), 0);
    }
}
