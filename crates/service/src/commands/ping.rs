//! `PING`: answered `OK PONG` at once. A liveness check for clients and load balancers; keep it.

use super::{Context, Reply, Spec, arguments};
use crate::protocol::Response;

pub(super) const PING: Spec = Spec {
    name: "PING",
    usage: "",
    help: "OK PONG",
    ends_connection: false,
    pushes: false,
    examples: &[
        ("PING", "OK PONG"),
        ("ping", "OK PONG"),
        ("PING now", "ERR bad-argument PING takes no argument"),
    ],
    start,
};

fn start(argument: Option<&str>, _: &mut Context) -> Result<Reply, Response> {
    arguments::none(PING.name, argument)?;
    Ok(Reply::ready(Response::ok("PONG")))
}
