//! Trace ids in the JSON logs (the `otel` feature): a line written inside a traced span carries
//! `trace_id` and `span_id` beside its other fields, so a log search can jump to the trace and a
//! trace to its logs.
//!
//! tracing-subscriber's JSON formatter writes the line; this one adds the two fields to its
//! object. The ids are those of the current OpenTelemetry context's span: a request's work runs
//! with its span's context attached (see `spans.rs`), on whichever thread polls it. A span that
//! the sampler left out, or a line outside any traced request, gets no ids.

use std::fmt;

use opentelemetry::Context;
use opentelemetry::trace::{SpanId, TraceContextExt as _, TraceId};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// A JSON event format with the trace ids added; see the module docs.
pub(super) struct WithTraceIds<F>(pub(super) F);

/// The ids of the current context's span, if it is sampled.
fn ids() -> Option<(TraceId, SpanId)> {
    Context::map_current(|context| {
        let span = context.span();
        let span = span.span_context();
        span.is_sampled().then(|| (span.trace_id(), span.span_id()))
    })
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
        let Some((trace_id, span_id)) = ids() else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        // The JSON format writes one object and a line break: the ids go in before its `}`.
        let Some(object) = line.trim_end().strip_suffix('}') else {
            return writer.write_str(&line);
        };
        writeln!(writer, "{object},\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"}}")
    }
}
