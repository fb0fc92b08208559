//! Trace ids in the JSON logs (the `otel` feature): a line written inside a traced span carries
//! `trace_id` and `span_id` beside its other fields, so a log search can jump to the trace and a
//! trace to its logs.
//!
//! tracing-subscriber's JSON formatter writes the line; this one adds the two fields to its
//! object. The ids are the OpenTelemetry span's, which the bridge (tracing-opentelemetry) keeps
//! in the span's extensions: the innermost span of the current stack that it knows (a request,
//! a job's wait or run, a handshake, a relay PUBLISH) gives them. A span that the sampler left
//! out, or a line outside any traced span, gets no ids.

use std::fmt;
use std::sync::{Arc, OnceLock};

use opentelemetry::trace::{SpanId, TraceContextExt as _, TraceId};
use tracing::dispatcher::WeakDispatch;
use tracing::{Event, Subscriber};
use tracing_subscriber::Registry;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// A JSON event format with the trace ids added; see the module docs.
pub(super) struct WithTraceIds<F> {
    inner: F,
    /// The subscriber this format runs in, set once it is built (the format is part of it):
    /// the bridge reads a span's ids through it.
    dispatch: Arc<OnceLock<WeakDispatch>>,
}

impl<F> WithTraceIds<F> {
    /// `inner` (a JSON format) with the ids of the subscriber that `dispatch` will be set to.
    pub(super) fn new(inner: F, dispatch: Arc<OnceLock<WeakDispatch>>) -> Self {
        Self { inner, dispatch }
    }

    /// The ids of the innermost traced span of the current stack, if it is sampled.
    fn ids(&self) -> Option<(TraceId, SpanId)> {
        let dispatch = self.dispatch.get()?.upgrade()?;
        let registry = dispatch.downcast_ref::<Registry>()?;
        let mut id = registry.current_span().id()?.clone();
        loop {
            // Never while holding a span's extensions (the bridge locks them): nothing is held.
            if let Some(context) = tracing_opentelemetry::get_otel_context(&id, &dispatch) {
                let span = context.span();
                let span = span.span_context();
                return (span.is_valid() && span.is_sampled()).then(|| (span.trace_id(), span.span_id()));
            }
            id = registry.span(&id)?.parent()?.id();
        }
    }
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some((trace_id, span_id)) = self.ids() else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.inner.format_event(ctx, Writer::new(&mut line), event)?;
        // The JSON format writes one object and a line break: the ids go in before its `}`.
        let Some(object) = line.trim_end().strip_suffix('}') else {
            return writer.write_str(&line);
        };
        writeln!(writer, "{object},\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"}}")
    }
}
