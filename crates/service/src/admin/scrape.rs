//! `/metrics`: every counter of `STATS`, the latency histograms, the watchdog's lag, the
//! relay's figures and tokio's runtime figures, read at scrape time.
//!
//! The exposition format is prometheus-client's (the Prometheus project's own Rust client): a
//! scrape builds a registry around one [`Collector`] that reads everything as it is at that
//! moment, so recording (`crate::metrics`, `crate::stats`) pays nothing for the format.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::runtime::Handle;

use super::health::Health;
#[cfg(feature = "redis")]
use crate::fanout::relay::{self, Refused};
use crate::shared::Shared;
use crate::stats::{HandshakeFailure, JobOutcome, Messages};

/// Everything a scrape reads.
pub(crate) struct Scrape {
    /// The service's core: its counters, histograms, job queue and topics.
    pub(crate) shared: Arc<Shared>,
    /// The health state when the scrape began.
    pub(crate) health: Health,
    /// The runtime whose figures it reads.
    pub(crate) runtime: Handle,
}

/// A collector must be `Debug`; the figures it reads are its output, not its debug form.
impl fmt::Debug for Scrape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrape").field("health", &self.health).finish_non_exhaustive()
    }
}

/// The two text formats a scraper may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// OpenMetrics 1.0, what Prometheus asks for first.
    OpenMetrics,
    /// Prometheus's classic text format 0.0.4, for scrapers that do not ask for OpenMetrics.
    Classic,
}

impl Format {
    /// The format for a request's `Accept` header. As Prometheus's own Go client negotiates:
    /// OpenMetrics if the scraper names it, the classic text format otherwise.
    pub(crate) fn negotiate(accept: Option<&str>) -> Self {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Self::OpenMetrics,
            _ => Self::Classic,
        }
    }

    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Classic => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

impl Scrape {
    /// The text of this scrape in `format`, every name prefixed with `prefix` (the program's
    /// name in snake case).
    pub(crate) fn render(self, prefix: &str, format: Format) -> String {
        let mut registry = Registry::with_prefix(prefix);
        registry.register_collector(Box::new(self));
        let mut text = String::new();
        // Writing to a String cannot fail, and every value here encodes.
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("metrics encode to a String");
        match format {
            Format::OpenMetrics => text,
            Format::Classic => classic(&text),
        }
    }
}

/// The classic text format (0.0.4) of an OpenMetrics text, as prometheus-client writes it (it
/// writes no other): the same samples, without the `# EOF` line, and with each counter's
/// `# HELP`/`# TYPE` naming its `_total` sample, as the classic format wants. prometheus-client
/// writes no `# UNIT`, `_created` or exemplar for these metrics (none is given to it).
fn classic(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines().filter(|line| *line != "# EOF") {
        let metadata = ["# HELP ", "# TYPE "].into_iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        text.push_str(metadata.as_deref().unwrap_or(line));
        text.push('\n');
    }
    text
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(value);
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let counter = ConstCounter::new(value);
    counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)
}

/// A counter family with one label, one sample per `(label value, count)`.
fn counters<'a>(
    encoder: &mut DescriptorEncoder<'_>,
    (name, help, label): (&str, &str, &str),
    samples: impl IntoIterator<Item = (&'a str, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, count) in samples {
        ConstCounter::new(count).encode(family.encode_family(&[(label, value)])?)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        self.encode_connections_and_jobs(&mut encoder)?;
        self.encode_fanout(&mut encoder)?;
        self.encode_latencies(&mut encoder)?;
        #[cfg(feature = "http")]
        self.encode_http(&mut encoder)?;
        #[cfg(feature = "otel")]
        encode_traces(&mut encoder)?;
        self.encode_runtime(&mut encoder)
    }
}

/// With traces exported, what the exporter has done: spans sent, spans dropped at the bound of
/// its queue, and exports that failed.
#[cfg(feature = "otel")]
fn encode_traces(encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
    let Some(figures) = crate::telemetry::figures() else { return Ok(()) };
    counter(encoder, "trace_spans_exported", "Spans the collector accepted", figures.exported)?;
    counter(
        encoder,
        "trace_spans_dropped",
        "Spans dropped because the export queue was full",
        figures.dropped,
    )?;
    counter(
        encoder,
        "trace_export_failures",
        "Exports (batches of spans) that failed: the collector was down, slow or refused them",
        figures.failed_exports,
    )?;
    counter(encoder, "trace_spans_failed", "Spans in the exports that failed", figures.failed_spans)
}

#[expect(
    clippy::cast_precision_loss,
    reason = "gauges are f64 in Prometheus; counts this large lose nothing that matters"
)]
impl Scrape {
    /// Connections, TLS handshake failures and CPU jobs.
    fn encode_connections_and_jobs(
        &self,
        encoder: &mut DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        let stats = &self.shared.stats;
        gauge(encoder, "connections", "Connections open now", stats.open_connections() as f64)?;
        counter(
            encoder,
            "connections_rejected",
            "Connections refused at the connection limit",
            stats.rejected(),
        )?;
        counters(
            encoder,
            ("tls_handshake_failures", "TLS handshakes failed, by reason", "reason"),
            HandshakeFailure::ALL.map(|reason| (reason.name(), stats.handshakes_failed(reason))),
        )?;
        gauge(encoder, "jobs_queued", "CPU jobs waiting for a worker", self.shared.jobs.queued() as f64)?;
        gauge(encoder, "jobs_running", "CPU jobs running now", stats.running_jobs() as f64)?;
        counters(
            encoder,
            ("jobs", "CPU jobs ended, by outcome", "outcome"),
            JobOutcome::ALL.map(|outcome| (outcome.name(), stats.jobs_ended(outcome))),
        )
    }

    /// Topics and messages, and with a relay the broker's figures.
    fn encode_fanout(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Messages { published, delivered, missed } = self.shared.stats.messages();
        gauge(encoder, "topics", "Topics with subscribers now", self.shared.topics.count() as f64)?;
        counter(encoder, "messages_published", "PUBLISH requests", published)?;
        counter(encoder, "messages_delivered", "Messages written to subscribers", delivered)?;
        counter(encoder, "messages_missed", "Messages lagging subscribers missed (LAG)", missed)?;
        counter(
            encoder,
            "message_gaps",
            "GAP lines: messages a subscriber may have missed",
            self.shared.stats.gaps(),
        )?;
        #[cfg(feature = "redis")]
        self.encode_relay(encoder)?;
        Ok(())
    }

    /// With a relay, the broker's figures.
    #[cfg(feature = "redis")]
    fn encode_relay(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(relay::Figures { up, reconnects, relayed, published, refused }) =
            self.shared.topics.relay_stats()
        else {
            return Ok(());
        };
        gauge(
            encoder,
            "fanout_broker_up",
            "1 while the fan-out broker is reachable",
            f64::from(u8::from(up)),
        )?;
        counter(
            encoder,
            "fanout_reconnects",
            "Connections to the broker made again after a loss",
            reconnects,
        )?;
        counter(encoder, "fanout_relayed", "Messages the broker sent here for local subscribers", relayed)?;
        counter(encoder, "fanout_published", "Messages sent to the broker", published)?;
        counters(
            encoder,
            (
                "fanout_refused",
                "Messages from the broker not delivered (subscribers told LAG), by reason",
                "reason",
            ),
            Refused::ALL.into_iter().map(Refused::name).zip(refused),
        )
    }

    /// The latency histograms: requests by command, and the CPU jobs' wait and run.
    fn encode_latencies(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut requests = encoder.encode_descriptor(
            "request_duration_seconds",
            "Time from reading a request to its answer being ready, by command",
            None,
            MetricType::Histogram,
        )?;
        for (command, histogram) in self.shared.metrics.commands.iter().zip(&self.shared.metrics.requests) {
            histogram.encode(requests.encode_family(&[("command", *command)])?)?;
        }
        let wait = encoder.encode_descriptor(
            "job_queue_wait_seconds",
            "Time a CPU job waited in the queue for a worker",
            None,
            MetricType::Histogram,
        )?;
        self.shared.metrics.job_wait.encode(wait)?;
        let run = encoder.encode_descriptor(
            "job_run_seconds",
            "Time a CPU job ran",
            None,
            MetricType::Histogram,
        )?;
        self.shared.metrics.job_run.encode(run)
    }

    /// The HTTP front's latency by route, and its answers by route and status.
    #[cfg(feature = "http")]
    fn encode_http(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let http = &self.shared.metrics.http;
        let mut durations = encoder.encode_descriptor(
            "http_request_duration_seconds",
            "Time from an HTTP request's head to its answer's, by route",
            None,
            MetricType::Histogram,
        )?;
        for (route, histogram) in http.durations() {
            histogram.encode(durations.encode_family(&[("route", route.path())])?)?;
        }
        let mut responses = encoder.encode_descriptor(
            "http_responses",
            "HTTP answers, by route and status",
            None,
            MetricType::Counter,
        )?;
        for (route, status, count) in http.responses() {
            let labels = [("route", route.path()), ("status", status.as_str())];
            ConstCounter::new(count).encode(responses.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// The watchdog's lag and the tokio runtime's own figures.
    fn encode_runtime(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        gauge(
            encoder,
            "watchdog_lag_seconds",
            "How late the watchdog's last tick ran",
            self.health.last_lag.as_secs_f64(),
        )?;
        gauge(
            encoder,
            "watchdog_worst_lag_seconds",
            "The latest the watchdog has ever run",
            self.shared.stats.worst_lag().as_secs_f64(),
        )?;
        let runtime = self.runtime.metrics();
        let workers = runtime.num_workers();
        gauge(encoder, "tokio_workers", "Worker threads of the tokio runtime", workers as f64)?;
        gauge(
            encoder,
            "tokio_alive_tasks",
            "Tasks alive on the tokio runtime",
            runtime.num_alive_tasks() as f64,
        )?;
        gauge(
            encoder,
            "tokio_global_queue_depth",
            "Tasks waiting in the runtime's global queue",
            runtime.global_queue_depth() as f64,
        )?;
        let busy: Duration = (0..workers).map(|worker| runtime.worker_total_busy_duration(worker)).sum();
        let busy_seconds = busy.as_secs_f64();
        let mut busy_total = encoder.encode_descriptor(
            "tokio_busy_seconds",
            "Time the runtime's workers spent busy, summed over workers (rate / workers = busy ratio)",
            None,
            MetricType::Counter,
        )?;
        busy_total.encode_counter::<NoLabelSet, f64, f64>(&busy_seconds, None)?;
        let available = self.shared.metrics.started.elapsed().as_secs_f64() * workers as f64;
        let ratio = if available > 0.0 { (busy_seconds / available).min(1.0) } else { 0.0 };
        gauge(encoder, "tokio_busy_ratio", "Share of the workers' time spent busy since start", ratio)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classic_format_names_counters_by_their_samples_and_has_no_eof() {
        let openmetrics = "# HELP s_jobs CPU jobs.\n# TYPE s_jobs counter\ns_jobs_total{outcome=\"done\"} 1\n\
                           # HELP s_topics Topics.\n# TYPE s_topics gauge\ns_topics 2\n# EOF\n";
        assert_eq!(
            classic(openmetrics),
            "# HELP s_jobs_total CPU jobs.\n# TYPE s_jobs_total counter\ns_jobs_total{outcome=\"done\"} 1\n\
             # HELP s_topics Topics.\n# TYPE s_topics gauge\ns_topics 2\n"
        );
    }

    #[test]
    fn prometheus_asks_for_openmetrics_and_anything_else_gets_the_classic_format() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                          version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("text/plain; version=0.0.4")), Format::Classic);
        assert_eq!(Format::negotiate(None), Format::Classic);
    }
}
