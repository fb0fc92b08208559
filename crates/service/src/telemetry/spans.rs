//! The spans a trace is made of: one per request (a server span named for its command), the CPU
//! job's wait in the queue and run on the pool under it, a TLS handshake, and a PUBLISH relayed
//! to the broker. Their attributes follow the OpenTelemetry semantic conventions where one fits
//! (`network.peer.address`, `error.type`, `messaging.*`).
//!
//! They are made with the OpenTelemetry API, on the global tracer provider: with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set, `telemetry::otel` installs the SDK's there; otherwise the
//! API's no-op tracer makes spans that record nothing, and a request goes untraced. (This module
//! is the `otel` feature's; without it, `spans_off.rs` stands in: the same types, with no
//! values.) The API, not `tracing` spans through a bridge: the sampler decides when a span
//! starts, so a request left out of the sample costs only that decision, and no registry lookup
//! is paid on every poll (through tracing-opentelemetry, with one request in ten sampled, a PING
//! cost about 13,000 instructions more than untraced: the bridge builds every span in full).
//!
//! They are made only when [`crate::Config::trace_requests`] is set (`main` sets it when traces
//! are exported): with it off, the request path pays a branch on an `Option`, not a span (the
//! traced path is out of line: `commands::start_traced`, `Reply::traced`). While a request's
//! work runs, its span's context is the current OpenTelemetry context (attached around each
//! poll), which the spans it opens take as their parent, and which a JSON log line reads its
//! trace ids from (`trace_ids.rs`).
//!
//! There is no span per connection: a subscriber stays connected for hours, and a trace with a
//! connection's thousands of requests under it is one no collector keeps whole. Each request is
//! a trace of its own, which names its peer.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use opentelemetry::context::{FutureExt as _, WithContext};
use opentelemetry::global::{self, BoxedSpan, BoxedTracer};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};

use crate::Config;

/// A span under a request, a TLS handshake's or a relayed PUBLISH's: it ends when dropped, or
/// at [`end`].
pub(crate) type Span = BoxedSpan;

/// The instrumentation scope of every span here: the program's name.
const SCOPE: &str = env!("CARGO_PKG_NAME");

/// A traced connection: the tracer its spans start on, and its peer as attributes.
pub(crate) struct Traced {
    tracer: BoxedTracer,
    /// `network.peer.address` (shared, not copied, by each span) and `network.peer.port`; a peer
    /// that is not a socket address (a test's name) is its text.
    address: Arc<str>,
    port: Option<i64>,
}

impl fmt::Debug for Traced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Traced").field("address", &self.address).field("port", &self.port).finish()
    }
}

impl Traced {
    /// The connection from `peer`, traced if `config` says so ([`Config::trace_requests`]).
    pub(crate) fn for_peer(config: &Config, peer: &dyn fmt::Display) -> Option<Self> {
        config.trace_requests.then(|| Self::new(peer))
    }

    /// A connection from `peer`, whose spans start on the global tracer provider's tracer.
    pub(crate) fn new(peer: &dyn fmt::Display) -> Self {
        let text = peer.to_string();
        let (address, port) = match text.parse::<SocketAddr>() {
            Ok(addr) => (addr.ip().to_string().into(), Some(addr.port().into())),
            Err(_) => (text.into(), None),
        };
        Self { tracer: global::tracer(SCOPE), address, port }
    }

    /// The peer's attributes.
    fn peer(&self) -> impl Iterator<Item = KeyValue> {
        let port = self.port.map(|port| KeyValue::new("network.peer.port", port));
        [KeyValue::new("network.peer.address", Arc::clone(&self.address))].into_iter().chain(port)
    }
}

/// A request's server span, open from when its line is read to when its answer is ready (as
/// the latency histogram), in the context that its work runs in.
#[derive(Debug)]
pub(crate) struct RequestSpan(Context);

impl RequestSpan {
    /// The span of a request for `command` on `traced`'s connection: the root of a trace.
    /// `None` if the sampler leaves it out: the request then goes untraced, with no context and
    /// no spans under it (orphans of a trace nobody keeps), and costs no more than the
    /// sampler's decision. Its attributes are added once it is kept (no sampler here reads
    /// them).
    pub(crate) fn new(command: &'static str, traced: &Traced) -> Option<Self> {
        let builder = traced.tracer.span_builder(command).with_kind(SpanKind::Server);
        let mut span = builder.start_with_context(&traced.tracer, &Context::new());
        if !span.is_recording() {
            return None;
        }
        span.set_attributes([
            KeyValue::new("rpc.method", command),
            KeyValue::new("network.transport", "tcp"),
        ]);
        span.set_attributes(traced.peer());
        Some(Self(Context::new().with_span(span)))
    }

    /// Runs `f` in the request's context (its span the active one).
    pub(crate) fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        let _attached = self.0.clone().attach();
        f()
    }

    /// `work`, run in the request's context (its span the active one) at each poll.
    pub(crate) fn instrument<F: Future>(&self, work: F) -> WithContext<F> {
        work.with_context(self.0.clone())
    }

    /// Ends the span with the request's outcome: OK, or the error code it was answered with.
    pub(crate) fn finish(self, error: Option<&'static str>) {
        let span = self.0.span();
        let (status, error) = outcome(error);
        span.set_status(status);
        span.set_attributes(error);
        span.end();
    }
}

/// An outcome as the span records it: its status, and the error's code as `error.type`.
fn outcome(error: Option<&str>) -> (Status, Option<KeyValue>) {
    match error {
        None => (Status::Ok, None),
        Some(code) => (Status::error(""), Some(KeyValue::new("error.type", code.to_owned()))),
    }
}

/// Ends a handshake's or a relayed PUBLISH's span, if there is one, with its outcome: OK, or
/// `error` (the handshake's failure reason, the broker's error code).
#[cfg(any(feature = "tls", feature = "redis"))]
pub(crate) fn end(span: Option<Span>, error: Option<&str>) {
    let Some(mut span) = span else { return };
    let (status, error) = outcome(error);
    span.set_status(status);
    if let Some(error) = error {
        span.set_attribute(error);
    }
    span.end();
}

/// The current context, if it has a span: a traced request's, while its work runs. Spans under
/// a request start only then (no orphans of a request that is not traced).
fn request() -> Option<Context> {
    let current = Context::current();
    current.has_active_span().then_some(current)
}

/// A CPU job's spans under its request: its wait in the queue, then its run on the pool.
pub(crate) struct JobSpans {
    request: Context,
    queued: BoxedSpan,
}

impl JobSpans {
    /// Opens the wait in the queue, under the current context's span: the request's, if it is
    /// traced (`None` otherwise: no orphan spans).
    pub(crate) fn queued(traced: &Traced) -> Option<Self> {
        let request = request()?;
        let queued = traced.tracer.start_with_context("queued", &request);
        Some(Self { request, queued })
    }

    /// Ends the wait and opens the run (a worker took the job); it ends when dropped.
    pub(crate) fn running(mut self) -> Span {
        self.queued.end();
        global::tracer(SCOPE).start_with_context("run", &self.request)
    }
}

/// A TLS handshake with `traced`'s peer, under no request (it comes before any).
#[cfg(feature = "tls")]
pub(crate) fn handshake(traced: &Traced) -> Span {
    let builder =
        traced.tracer.span_builder("tls handshake").with_attributes(traced.peer().collect::<Vec<_>>());
    builder.start_with_context(&traced.tracer, &Context::new())
}

/// A PUBLISH on `topic` sent to the broker (a producer span), under the current context's span
/// (the request's, if it is traced: `None` otherwise), open until the broker answers.
#[cfg(feature = "redis")]
pub(crate) fn relay_publish(topic: &str) -> Option<Span> {
    let request = request()?;
    let tracer = global::tracer(SCOPE);
    let attributes = vec![
        KeyValue::new("messaging.system", "redis"),
        KeyValue::new("messaging.operation.type", "send"),
        KeyValue::new("messaging.operation.name", "PUBLISH"),
        KeyValue::new("messaging.destination.name", topic.to_owned()),
    ];
    let builder = tracer.span_builder(format!("publish {topic}")).with_kind(SpanKind::Producer);
    Some(builder.with_attributes(attributes).start_with_context(&tracer, &request))
}
