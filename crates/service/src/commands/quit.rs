//! `QUIT`: answered `OK BYE`, then the server closes the connection. A clean goodbye; keep it.
//!
//! Requests sent after `QUIT` on the same connection are never read.

use super::{Context, Reply, Spec, arguments};
use crate::protocol::Response;

pub(super) const QUIT: Spec = Spec {
    name: "QUIT",
    usage: "",
    help: "OK BYE, then the connection closes",
    ends_connection: true,
    pushes: false,
    examples: &[("QUIT", "OK BYE"), ("QUIT 1", "ERR bad-argument QUIT takes no argument")],
    start,
};

fn start(argument: Option<&str>, _: &mut Context) -> Result<Reply, Response> {
    arguments::none(QUIT.name, argument)?;
    Ok(Reply::ready(Response::ok("BYE")))
}
