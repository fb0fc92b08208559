//! `STATS`: the service's counters as `key=value` pairs. Observability for any service; keep it.

use super::{Context, Reply, Spec, arguments};
use crate::protocol::Response;

pub(super) const STATS: Spec = Spec {
    name: "STATS",
    usage: "",
    help: "OK connections=.. rejected=.. jobs_queued=.. (every counter)",
    ends_connection: false,
    pushes: false,
    // The counters depend on what ran before; the end-to-end tests check them.
    examples: &[("STATS now", "ERR bad-argument STATS takes no argument")],
    start,
};

fn start(argument: Option<&str>, context: &mut Context) -> Result<Reply, Response> {
    arguments::none(STATS.name, argument)?;
    Ok(Reply::ready(Response::ok(context.stats().render(context.jobs_queued(), context.topics().count()))))
}
