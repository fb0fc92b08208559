//! `GET /v1/topics/{topic}/events`: a topic's messages as Server-Sent Events, for browsers'
//! `EventSource` and `curl -N`.
//!
//! The request is a `SUBSCRIBE topic` in a command context of its own (the same bounds:
//! `--max-topics`, `--max-subscriptions`), then each pushed line is an event of its type:
//! `MSG` (the data is the message's text), `LAG` (the data is how many were missed) or `GAP`
//! (the data is the topic). Like a line subscriber, an event stream reads from the topic's
//! bounded ring and never holds up a publisher: hyper pulls the next event only when the
//! connection can take it, so a reader that falls behind is told `LAG`, and one that stops
//! reading loses its connection at `--write-timeout`. A comment line goes out every
//! [`KEEPALIVE`] so that proxies keep a quiet stream open, and the stream ends at drain. An empty
//! message is an `MSG` event without a data line, which browsers' `EventSource` skips (SSE
//! cannot tell it from no data).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse as _, Response};
use futures_util::StreamExt as _;
use tokio::time::Instant;

use super::routes::{Answer, Service};
use super::{Connection, answered};
use crate::commands::{self, Context, arguments};
use crate::protocol::{self, Push};
use crate::telemetry::spans::Traced;

/// A comment line after this long with no event.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// `GET /v1/topics/{topic}/events`.
pub(super) async fn subscribe(
    State(service): State<Service>,
    Extension(connection): Extension<Arc<Connection>>,
    Path(topic): Path<String>,
) -> Response {
    // Checked here: a space would make two topics of one.
    if let Err(refused) = arguments::topic("SUBSCRIBE", &topic) {
        return Answer(refused).into_response();
    }
    let Service { shared, commands } = service;
    let traced = Traced::for_peer(&shared.config, &connection.peer);
    let mut context = Context::new(&shared, &commands, traced);
    let (reply, _) = commands::start_named("SUBSCRIBE", Some(&topic), &mut context, Instant::now());
    let answer = answered(reply, &shared).await;
    if let protocol::Response::Err(..) = answer {
        return Answer(answer).into_response();
    }
    let drain = shared.shutdown.drain.clone().cancelled_owned();
    let events = futures_util::stream::poll_fn(move |cx| context.subscriptions.poll_next_unpin(cx))
        .map(move |push| {
            let event = match &push {
                Push::Message(_, text) => {
                    shared.stats.count_delivered(1);
                    Event::default().event("MSG").data(&**text)
                }
                Push::Lagged(_, missed) => {
                    shared.stats.count_missed(*missed);
                    Event::default().event("LAG").data(missed.to_string())
                }
                Push::Gap(topic) => {
                    shared.stats.count_gap();
                    Event::default().event("GAP").data(&**topic)
                }
            };
            Ok::<_, Infallible>(event)
        })
        .take_until(drain);
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEPALIVE)).into_response()
}
