//! Traces to an OpenTelemetry collector (the `otel` feature): off until
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, configured by
//! the standard variables, and sent as OTLP over HTTP/protobuf.
//!
//! **Never on the runtime.** A span that ends goes into the SDK's batch processor with a
//! non-blocking `try_send`; the processor's own thread (`OpenTelemetry.Traces.BatchProcessor`)
//! batches them and posts each batch with reqwest's *blocking* client, on that thread. (An
//! async client there would need a runtime the thread does not have, and panics it; every
//! later span would be lost.)
//!
//! **Never unbounded.** Spans ended and not yet exported are at most [`QUEUE`]: past it a span is
//! dropped and counted ([`Counters`], in `/metrics`). The count is kept here, in front of the
//! SDK's processor, whose own drop count is private: the SDK's queue is as long as ours, and
//! ours counts a span until its batch is exported, so the SDK's never fills. A collector that is
//! down, slow or refusing costs a failed export (counted, and logged at most once a minute) on
//! that thread, each bounded by `OTEL_EXPORTER_OTLP_TIMEOUT` (10 s by default), and the queue
//! drops what does not fit: memory stays flat.
//!
//! **Never holding shutdown.** The SDK's shutdown blocks until the last batch is sent; `main`
//! calls it (`Logging::finish_traces`, then [`Exporting::finish`]) after the runtime's work has
//! ended, off every runtime thread, with what is left of the drain delay and grace period (see
//! `main.rs`).

use std::env;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use opentelemetry::{KeyValue, global};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::resource::{EnvResourceDetector, TelemetryResourceDetector};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter, SpanProcessor,
};

use crate::log_throttle::LogThrottle;

/// Spans ended and not yet exported, at most (the SDK's default queue; `OTEL_BSP_MAX_QUEUE_SIZE`
/// is not read, so the bound is this one). At a few hundred bytes a span, about a MiB.
const QUEUE: usize = 2048;

/// At most one log line per this period about failed exports: a collector that is down fails
/// every batch.
const FAILURE_LOG_PERIOD: Duration = Duration::from_secs(60);

/// The samplers `OTEL_TRACES_SAMPLER` may name (the SDK's; it would read any other as the
/// default, silently).
const SAMPLERS: &[&str] = &[
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
];

/// The counters of the exporter that `telemetry::init` installed, which `/metrics` shows.
static PUBLISHED: OnceLock<Arc<Counters>> = OnceLock::new();

/// What the installed exporter has done; `None` when no traces are exported.
pub(crate) fn figures() -> Option<Figures> {
    PUBLISHED.get().map(|counters| counters.read())
}

/// What the exporter has done, for `/metrics`. Shared by the processor (drops, at enqueue) and
/// the exporter (its outcomes, on the batch thread).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Spans ended and not exported yet (in the SDK's queue, or in a batch being sent).
    queued: AtomicUsize,
    exported: AtomicU64,
    dropped: AtomicU64,
    failed_exports: AtomicU64,
    failed_spans: AtomicU64,
}

/// The figures of [`Counters`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Figures {
    /// Spans the collector accepted.
    pub(crate) exported: u64,
    /// Spans dropped because [`QUEUE`] spans were waiting already.
    pub(crate) dropped: u64,
    /// Exports (batches) that failed: the collector was down, slow or refused them.
    pub(crate) failed_exports: u64,
    /// Spans in the batches that failed.
    pub(crate) failed_spans: u64,
}

impl Counters {
    /// The figures now.
    pub(crate) fn read(&self) -> Figures {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Figures {
            exported: load(&self.exported),
            dropped: load(&self.dropped),
            failed_exports: load(&self.failed_exports),
            failed_spans: load(&self.failed_spans),
        }
    }
}

/// Traces being exported: the SDK's provider, and its counts. Keep it until the program ends,
/// then [`Exporting::finish`] it.
#[derive(Debug)]
pub(crate) struct Exporting {
    provider: SdkTracerProvider,
    counters: Arc<Counters>,
}

impl Exporting {
    /// The exporter the standard variables describe, or `None` when no endpoint is set (or
    /// `OTEL_SDK_DISABLED=true`). A variable the SDK would misread or ignore is refused here
    /// with one line. Call it before any runtime starts (reqwest's blocking client is built now).
    pub(super) fn from_env() -> anyhow::Result<Option<Self>> {
        let set = |name: &str| env::var(name).ok().filter(|value| !value.trim().is_empty());
        let endpoint = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .map(|value| ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", value))
            .or_else(|| {
                set("OTEL_EXPORTER_OTLP_ENDPOINT").map(|value| ("OTEL_EXPORTER_OTLP_ENDPOINT", value))
            });
        let disabled =
            set("OTEL_SDK_DISABLED").is_some_and(|value| value.trim().eq_ignore_ascii_case("true"));
        let Some((variable, endpoint)) = endpoint.filter(|_| !disabled) else {
            return Ok(None);
        };
        check_endpoint(variable, &endpoint)?;
        for protocol in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
            if let Some(value) = set(protocol).filter(|value| value.trim() != "http/protobuf") {
                anyhow::bail!("{protocol}={value:?}: this build sends http/protobuf only");
            }
        }
        check_sampler(set("OTEL_TRACES_SAMPLER").as_deref(), set("OTEL_TRACES_SAMPLER_ARG").as_deref())?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .build()
            .map_err(|error| anyhow::anyhow!("{variable}={endpoint:?}: {error}"))?;
        Ok(Some(Self::with_exporter(exporter, resource())))
    }

    /// Exports through `exporter`, counted and bounded (see the module docs).
    pub(crate) fn with_exporter(exporter: impl SpanExporter + 'static, resource: Resource) -> Self {
        let counters = Arc::new(Counters::default());
        let counted = Counted {
            inner: exporter,
            counters: Arc::clone(&counters),
            failures: Mutex::new(LogThrottle::every(FAILURE_LOG_PERIOD)),
        };
        let config = BatchConfigBuilder::default().with_max_queue_size(QUEUE).build();
        let batch = BatchSpanProcessor::new(counted, config);
        let bounded = Bounded { inner: batch, counters: Arc::clone(&counters) };
        let provider =
            SdkTracerProvider::builder().with_span_processor(bounded).with_resource(resource).build();
        Self { provider, counters }
    }

    /// Makes it the global tracer provider, which the spans of `spans.rs` start on, and its
    /// counters the ones `/metrics` shows (once: there is one global provider).
    pub(super) fn install(&self) {
        global::set_tracer_provider(self.provider.clone());
        let _ = PUBLISHED.set(Arc::clone(&self.counters));
    }

    /// Sends the spans still queued, waiting at most `within`, then stops the batch thread. It
    /// blocks: call it off every runtime thread. With `within` zero, it sends nothing.
    pub(crate) fn finish(self, within: Duration) {
        let waiting = self.counters.queued.load(Ordering::Relaxed);
        if within.is_zero() {
            tracing::info!(waiting, "no time left to send the queued spans; leaving without them");
            return;
        }
        tracing::info!(waiting, ?within, "sending the queued spans");
        match self.provider.shutdown_with_timeout(within) {
            Ok(()) => tracing::info!(exported = self.counters.read().exported, "spans sent"),
            Err(error) => tracing::warn!(%error, "the queued spans could not all be sent in time"),
        }
    }
}

/// Refuses an endpoint this build cannot send to, before anything starts.
fn check_endpoint(variable: &str, endpoint: &str) -> anyhow::Result<()> {
    if endpoint.starts_with("http://") {
        return Ok(());
    }
    let why = if endpoint.starts_with("https://") {
        "this build sends OTLP over plain http (a node-local or sidecar collector), not https"
    } else {
        "an endpoint is an http:// URL, such as http://127.0.0.1:4318"
    };
    anyhow::bail!("{variable}={endpoint:?}: {why}")
}

/// Refuses a sampler the SDK would read as its default without a word.
fn check_sampler(sampler: Option<&str>, argument: Option<&str>) -> anyhow::Result<()> {
    let Some(sampler) = sampler.map(str::trim) else { return Ok(()) };
    if !SAMPLERS.contains(&sampler) {
        anyhow::bail!("OTEL_TRACES_SAMPLER={sampler:?}: one of {}", SAMPLERS.join(", "));
    }
    if sampler.ends_with("traceidratio") {
        let ratio = argument.and_then(|argument| argument.trim().parse::<f64>().ok());
        if !ratio.is_some_and(|ratio| (0.0..=1.0).contains(&ratio)) {
            anyhow::bail!(
                "OTEL_TRACES_SAMPLER_ARG={:?}: {sampler} takes a ratio from 0 to 1",
                argument.unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// What the spans say of the service: `service.name` (`OTEL_SERVICE_NAME`, else `service.name`
/// in `OTEL_RESOURCE_ATTRIBUTES`, else the program's name), `service.version` (the package's),
/// and the rest of `OTEL_RESOURCE_ATTRIBUTES`.
fn resource() -> Resource {
    let mut builder = Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", env!("CARGO_PKG_NAME")),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        ])
        .with_detectors(&[Box::new(TelemetryResourceDetector), Box::new(EnvResourceDetector::new())]);
    if let Some(name) = env::var("OTEL_SERVICE_NAME").ok().filter(|name| !name.trim().is_empty()) {
        builder = builder.with_service_name(name);
    }
    builder.build()
}

/// The SDK's batch processor behind a bound of our own, which counts what it drops.
#[derive(Debug)]
struct Bounded {
    inner: BatchSpanProcessor,
    counters: Arc<Counters>,
}

impl SpanProcessor for Bounded {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.counters.queued.fetch_add(1, Ordering::Relaxed) >= QUEUE {
            self.counters.queued.fetch_sub(1, Ordering::Relaxed);
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP exporter, counting its outcomes; it runs on the batch thread.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    counters: Arc<Counters>,
    failures: Mutex<LogThrottle>,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        let counters = &self.counters;
        counters.queued.fetch_sub(spans, Ordering::Relaxed);
        match &result {
            Ok(()) => {
                counters.exported.fetch_add(spans as u64, Ordering::Relaxed);
            }
            Err(error) => {
                counters.failed_exports.fetch_add(1, Ordering::Relaxed);
                counters.failed_spans.fetch_add(spans as u64, Ordering::Relaxed);
                let report = self.failures.lock().map(|mut throttle| throttle.record());
                if let Ok(Some(failed)) = report {
                    tracing::warn!(failed, spans, %error, "trace export failed; its spans are lost");
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{MutexGuard, PoisonError, mpsc};

    use opentelemetry::Value;
    use opentelemetry::trace::{
        Link, Span as _, SpanKind, Status, TraceId, TraceState, Tracer as _, TracerProvider as _,
    };
    use opentelemetry_sdk::error::OTelSdkError;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SamplingDecision, SamplingResult, ShouldSample};

    use super::*;
    use crate::commands::{Commands, Spec};
    use crate::protocol::Response;
    use tracing_subscriber::filter::{LevelFilter, Targets};

    use crate::telemetry::{LogFormat, subscriber};
    use crate::test_log::Captured;
    use crate::{App, Client, Config};

    /// The spans of traced requests start on the global tracer provider: the tests that make
    /// them share one, exporting into memory as each span ends, and run one at a time.
    fn global_exporter() -> (MutexGuard<'static, ()>, &'static InMemorySpanExporter) {
        static EXPORTER: OnceLock<InMemorySpanExporter> = OnceLock::new();
        static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
        let guard = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        let exporter = EXPORTER.get_or_init(|| {
            let exporter = InMemorySpanExporter::default();
            let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone());
            global::set_tracer_provider(provider.with_sampler(LeavesOut(UNSAMPLED.name)).build());
            exporter
        });
        exporter.reset();
        (guard, exporter)
    }

    fn attributes(span: &SpanData) -> HashMap<&str, &Value> {
        span.attributes.iter().map(|KeyValue { key, value, .. }| (key.as_str(), value)).collect()
    }

    /// Runs `serve` against an app made from `config` with traces on, logging JSON at debug
    /// level into `logs`; returns what `serve` returns and the spans exported.
    fn traced<T>(config: Config, logs: &Captured, serve: impl AsyncFnOnce(&App) -> T) -> (T, Vec<SpanData>) {
        let (_one_at_a_time, exporter) = global_exporter();
        let filter = Targets::new().with_default(LevelFilter::DEBUG);
        let writer = logs.clone();
        let subscriber = subscriber(LogFormat::Json, filter, move || writer.clone(), false);
        let served = tracing::dispatcher::with_default(&subscriber, || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            // Inside the runtime, outside any task: with TLS, it reads the files.
            let entered = runtime.enter();
            let config = Config { trace_requests: true, ..config };
            let app = App::start_with(&config, Commands::with(&[&WORK, &UNSAMPLED])).unwrap();
            drop(entered);
            runtime.block_on(async {
                let served = serve(&app).await;
                app.stop().await;
                served
            })
        });
        (served, exporter.get_finished_spans().unwrap())
    }

    /// A CPU job of the test's own (a project may remove the examples): it logs, then adds up
    /// on the pool.
    static WORK: Spec = Spec {
        name: "WORK",
        usage: "",
        help: "OK 4, on the CPU pool",
        ends_connection: false,
        pushes: false,
        examples: &[],
        start: |_, context| {
            tracing::debug!("adding up on the pool");
            Ok(context.compute(|_stop| Ok(2 + 2), |sum: u64| Response::ok(sum.to_string())))
        },
    };

    /// A CPU job like [`WORK`], which the tests' sampler leaves out.
    static UNSAMPLED: Spec = Spec { name: "UNSAMPLED", ..WORK };

    /// A sampler that leaves out the spans named `.0`, and keeps every other.
    #[derive(Debug, Clone)]
    struct LeavesOut(&'static str);

    impl ShouldSample for LeavesOut {
        fn should_sample(
            &self,
            _: Option<&opentelemetry::Context>,
            _: TraceId,
            name: &str,
            _: &SpanKind,
            _: &[KeyValue],
            _: &[Link],
        ) -> SamplingResult {
            let left_out = name == self.0;
            let decision = if left_out { SamplingDecision::Drop } else { SamplingDecision::RecordAndSample };
            SamplingResult { decision, attributes: Vec::new(), trace_state: TraceState::default() }
        }
    }

    /// Sends `requests` on one connection from 127.0.0.1:4000, and returns the answers.
    async fn requests(app: &App, requests: &[&str]) -> Vec<String> {
        let (client, server) = tokio::io::duplex(1024);
        app.spawn_connection(server, "127.0.0.1:4000", None);
        let mut client = Client::new(client, Duration::from_secs(5));
        let mut answers = Vec::new();
        for request in requests {
            answers.push(client.request(request).await.unwrap());
        }
        answers
    }

    fn config() -> Config {
        Config { cpu_threads: 1, ..Config::default() }
    }

    #[test]
    fn a_request_is_a_server_span_named_for_its_command_with_its_peer_and_outcome() {
        let sent = ["PING", "STATS now", "NOPE", "PUBLISH t hi"];
        let (answers, spans) = traced(config(), &Captured::default(), async |app| requests(app, &sent).await);
        assert_eq!(answers[0], "OK PONG");
        assert!(answers[1].starts_with("ERR bad-argument") && answers[2].starts_with("ERR unknown-command"));
        // An unknown command has no span: span names are the registry's, a bounded set.
        let names: Vec<_> = spans.iter().map(|span| span.name.as_ref()).collect();
        assert_eq!(names, ["PING", "STATS", "PUBLISH"]);
        for span in &spans {
            assert_eq!(span.span_kind, SpanKind::Server);
            assert_eq!(span.parent_span_id, opentelemetry::trace::SpanId::INVALID, "each request is a trace");
            let attributes = attributes(span);
            assert_eq!(attributes["rpc.method"], &Value::from(span.name.to_string()));
            assert_eq!(attributes["network.peer.address"], &Value::from("127.0.0.1"));
            assert_eq!(attributes["network.peer.port"], &Value::I64(4000));
            assert_eq!(attributes["network.transport"], &Value::from("tcp"));
        }
        assert_eq!(spans[0].status, Status::Ok);
        assert_eq!(spans[1].status, Status::error(""));
        assert_eq!(attributes(&spans[1])["error.type"], &Value::from("bad-argument"));
        assert!(!attributes(&spans[0]).contains_key("error.type"));
        let traces: std::collections::HashSet<_> =
            spans.iter().map(|span| span.span_context.trace_id()).collect();
        assert_eq!(traces.len(), 3, "a trace id each");
    }

    #[test]
    fn a_cpu_job_s_wait_and_run_are_spans_under_its_request_and_its_log_lines_carry_the_ids() {
        let logs = Captured::default();
        let (answers, spans) = traced(config(), &logs, async |app| requests(app, &["WORK"]).await);
        assert_eq!(answers, ["OK 4"]);
        let named = |name: &str| {
            spans.iter().find(|span| span.name == name).unwrap_or_else(|| panic!("no {name} span"))
        };
        let (request, queued, run) = (named("WORK"), named("queued"), named("run"));
        assert_eq!(spans.len(), 3);
        for child in [queued, run] {
            assert_eq!(child.parent_span_id, request.span_context.span_id());
            assert_eq!(child.span_context.trace_id(), request.span_context.trace_id());
            assert!(child.start_time >= request.start_time && child.end_time <= request.end_time);
        }
        assert!(queued.end_time <= run.start_time, "the wait ends when the run begins");
        // The command's own log line (debug) is inside the request: it carries its ids, and
        // the connection's lines outside any request carry none.
        let logs = logs.text();
        let line = logs.lines().find(|line| line.contains("adding up on the pool")).expect("WORK's log line");
        let line: serde_json::Value = serde_json::from_str(line).expect("one JSON object");
        assert_eq!(line["trace_id"], request.span_context.trace_id().to_string());
        assert_eq!(line["span_id"], request.span_context.span_id().to_string());
        let open = logs.lines().find(|line| line.contains("\"open\"")).expect("the connection's open line");
        assert!(!open.contains("trace_id"), "{open}");
    }

    #[test]
    fn a_request_the_sampler_leaves_out_has_no_span_and_no_spans_under_it() {
        let logs = Captured::default();
        let sent = ["UNSAMPLED", "PING"];
        let (answers, spans) = traced(config(), &logs, async |app| requests(app, &sent).await);
        assert_eq!(answers, ["OK 4", "OK PONG"]);
        let names: Vec<_> = spans.iter().map(|span| span.name.as_ref()).collect();
        assert_eq!(names, ["PING"], "no queued or run span without their request's");
        let logs = logs.text();
        let line = logs.lines().find(|line| line.contains("adding up on the pool")).expect("its log line");
        assert!(!line.contains("trace_id"), "{line}");
    }

    #[cfg(feature = "tls")]
    #[test]
    fn a_tls_handshake_is_a_span_with_its_outcome_and_a_request_after_it_a_trace_of_its_own() {
        let pki = testkit::pki::Pki::new();
        let config = Config {
            tls_cert: Some(pki.server.cert.clone()),
            tls_key: Some(pki.server.key.clone()),
            ..config()
        };
        let tls =
            crate::tls::ClientTlsArgs { tls: true, tls_ca: Some(pki.ca_cert.clone()), ..Default::default() };
        let tls = tls.load().unwrap().unwrap();
        let (answer, spans) = traced(config, &Captured::default(), async |app| {
            // Plaintext where a handshake belongs: refused, as the peer broke TLS's rules.
            let (mut plain, server) = tokio::io::duplex(1024);
            app.spawn_connection(server, "127.0.0.1:4001", None);
            tokio::io::AsyncWriteExt::write_all(&mut plain, b"PING\n").await.unwrap();
            // Until the server closes it (what it sends first, an alert, is dropped).
            tokio::io::copy(&mut plain, &mut tokio::io::sink()).await.unwrap();
            let (client, server) = tokio::io::duplex(16 * 1024);
            app.spawn_connection(server, "127.0.0.1:4000", None);
            let stream = tls.handshake(client, tls.server_name_for("localhost:1").unwrap()).await.unwrap();
            Client::new(stream, Duration::from_secs(5)).request("PING").await.unwrap()
        });
        assert_eq!(answer, "OK PONG");
        let handshakes: Vec<_> = spans.iter().filter(|span| span.name == "tls handshake").collect();
        assert_eq!(handshakes.len(), 2, "{spans:?}");
        let refused = handshakes.iter().find(|span| span.status != Status::Ok).expect("the refused one");
        assert_eq!(attributes(refused)["error.type"], &Value::from("protocol"));
        assert_eq!(attributes(refused)["network.peer.port"], &Value::I64(4001));
        let done = handshakes.iter().find(|span| span.status == Status::Ok).expect("the one done");
        let ping = spans.iter().find(|span| span.name == "PING").expect("the PING after it");
        assert_ne!(ping.span_context.trace_id(), done.span_context.trace_id(), "no span per connection");
    }

    /// An exporter that holds every export until its sender is dropped, then fails or accepts.
    #[derive(Debug)]
    struct Held {
        release: Mutex<mpsc::Receiver<()>>,
        fail: bool,
    }

    impl SpanExporter for Held {
        #[expect(
            clippy::disallowed_methods,
            reason = "it runs on the SDK's batch thread, which is what it holds up"
        )]
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            let _ = self.release.lock().unwrap().recv();
            if self.fail { Err(OTelSdkError::InternalFailure("refused".into())) } else { Ok(()) }
        }
    }

    /// Ends `count` spans through `traces`, with exports held until `release` is dropped.
    fn end_spans(traces: &Exporting, count: usize, release: mpsc::Sender<()>) {
        let tracer = traces.provider.tracer("test");
        for _ in 0..count {
            tracer.start("span").end();
        }
        drop(release);
        traces.provider.force_flush().unwrap_or_default();
    }

    #[test]
    fn spans_past_the_queue_s_bound_are_dropped_and_counted() {
        let (release, held) = mpsc::channel();
        let exporter = Held { release: Mutex::new(held), fail: false };
        let traces = Exporting::with_exporter(exporter, Resource::builder_empty().build());
        // The exports are held: nothing leaves the queue, whatever the batch thread has taken.
        end_spans(&traces, QUEUE + 100, release);
        let figures = traces.counters.read();
        assert_eq!(figures.dropped, 100);
        assert_eq!(figures.exported, QUEUE as u64);
        assert_eq!((figures.failed_exports, figures.failed_spans), (0, 0));
    }

    #[test]
    fn a_failed_export_is_counted_with_its_spans() {
        let (release, held) = mpsc::channel();
        let traces = Exporting::with_exporter(
            Held { release: Mutex::new(held), fail: true },
            Resource::builder_empty().build(),
        );
        end_spans(&traces, 10, release);
        let figures = traces.counters.read();
        assert!(figures.failed_exports >= 1);
        assert_eq!((figures.failed_spans, figures.exported, figures.dropped), (10, 0, 0));
    }

    #[test]
    fn an_endpoint_or_sampler_the_sdk_would_misread_is_refused_in_one_line() {
        assert!(check_endpoint("E", "http://127.0.0.1:4318").is_ok());
        for (endpoint, says) in [("https://collector:4318", "not https"), ("127.0.0.1:4318", "http://")] {
            let error = check_endpoint("E", endpoint).unwrap_err().to_string();
            assert!(error.contains(says) && !error.contains('\n'), "{error}");
        }
        assert!(check_sampler(None, None).is_ok());
        assert!(check_sampler(Some("parentbased_traceidratio"), Some("0.25")).is_ok());
        let unknown = check_sampler(Some("sometimes"), None).unwrap_err().to_string();
        assert!(unknown.contains("always_on"), "{unknown}");
        for argument in [None, Some("2"), Some("half")] {
            let error = check_sampler(Some("traceidratio"), argument).unwrap_err().to_string();
            assert!(error.contains("a ratio from 0 to 1"), "{error}");
        }
    }
}
