//! The spans a trace is made of: one per request (a server span named for its command), the CPU
//! job's wait in the queue and run on the pool under it, a TLS handshake, and a PUBLISH relayed
//! to the broker. Their attributes follow the OpenTelemetry semantic conventions where one fits
//! (`network.peer.address`, `error.type`, `messaging.*`); the bridge reads the `otel.*` fields
//! as the span's name, kind and status.
//!
//! They are made only when [`crate::Config::trace_requests`] is set (`main` sets it when traces
//! are exported): with it off, the request path pays a branch on an `Option`, not a span (the
//! traced path is out of line: `commands::start_traced`, `Reply::traced`). The log output does
//! not show them (`telemetry` filters this module's target out of it); a JSON line logged inside
//! one carries its trace ids instead.
//!
//! There is no span per connection: a subscriber stays connected for hours, and a trace with a
//! connection's thousands of requests under it is one no collector keeps whole. Each request is
//! a trace of its own, which names its peer.

use std::fmt;
use std::net::SocketAddr;

use tracing::Span;
use tracing::field::Empty;

/// The target of every span here, which the exporting layer takes and the log output leaves.
pub(crate) const TARGET: &str = module_path!();

/// A connection's peer, as span attributes: its address and port.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    address: Box<str>,
    /// An `i64`: the bridge records other integers as text.
    port: Option<i64>,
}

impl Peer {
    /// The peer's attributes; a peer that is not a socket address (a test's name) is its text.
    pub(crate) fn new(peer: &dyn fmt::Display) -> Self {
        let text = peer.to_string();
        match text.parse::<SocketAddr>() {
            Ok(addr) => Self { address: addr.ip().to_string().into(), port: Some(addr.port().into()) },
            Err(_) => Self { address: text.into(), port: None },
        }
    }
}

/// A request's server span, open from when its line is read to when its answer is ready (as
/// the latency histogram).
#[derive(Debug)]
pub(crate) struct RequestSpan(Span);

impl RequestSpan {
    /// The span of a request for `command` from `peer`.
    pub(crate) fn new(command: &'static str, peer: &Peer) -> Self {
        Self(tracing::info_span!(
            target: TARGET,
            "request",
            otel.name = command,
            otel.kind = "server",
            otel.status_code = Empty,
            rpc.method = command,
            network.transport = "tcp",
            network.peer.address = &*peer.address,
            network.peer.port = peer.port,
            error.type = Empty,
        ))
    }

    /// The span, to enter while the request's work runs.
    pub(crate) fn span(&self) -> &Span {
        &self.0
    }

    /// Ends the span with the request's outcome: OK, or the error code it was answered with.
    pub(crate) fn finish(self, error: Option<&'static str>) {
        failed(&self.0, error);
    }
}

/// Records an outcome on `span`: its status, and the error's code as `error.type`.
fn failed(span: &Span, error: Option<&str>) {
    match error {
        None => {
            span.record("otel.status_code", "OK");
        }
        Some(code) => {
            span.record("otel.status_code", "ERROR");
            span.record("error.type", code);
        }
    }
}

/// A CPU job's spans under its request: its wait in the queue, then its run on the pool.
#[derive(Debug)]
pub(crate) struct JobSpans {
    request: Span,
    queued: Span,
}

impl JobSpans {
    /// Opens the wait in the queue, under the span entered now (the request's).
    pub(crate) fn queued() -> Self {
        let request = Span::current();
        let queued =
            tracing::info_span!(target: TARGET, parent: &request, "job queued", otel.name = "queued");
        Self { request, queued }
    }

    /// Ends the wait and opens the run: a worker took the job.
    pub(crate) fn running(self) -> Span {
        drop(self.queued);
        tracing::info_span!(target: TARGET, parent: &self.request, "job run", otel.name = "run")
    }
}

/// A TLS handshake with `peer`, under no request (it comes before any).
pub(crate) fn handshake(peer: &Peer) -> Span {
    tracing::info_span!(
        target: TARGET,
        "tls handshake",
        otel.name = "tls handshake",
        otel.status_code = Empty,
        network.peer.address = &*peer.address,
        network.peer.port = peer.port,
        error.type = Empty,
    )
}

/// Ends a handshake's span with its outcome: `error` is the failure's reason.
pub(crate) fn handshake_done(span: &Span, error: Option<&str>) {
    failed(span, error);
}

/// A PUBLISH on `topic` sent to the broker (a producer span), under the span entered now (the
/// request's), open until the broker answers.
pub(crate) fn relay_publish(topic: &str) -> Span {
    tracing::info_span!(
        target: TARGET,
        "relay publish",
        otel.name = format!("publish {topic}"),
        otel.kind = "producer",
        otel.status_code = Empty,
        messaging.system = "redis",
        messaging.operation.type = "send",
        messaging.operation.name = "PUBLISH",
        messaging.destination.name = topic,
        error.type = Empty,
    )
}

/// Ends a relayed PUBLISH's span with the broker's outcome.
pub(crate) fn relay_published(span: &Span, error: Option<&str>) {
    failed(span, error);
}
