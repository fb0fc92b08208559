//! Logging: `tracing` to stderr, filtered by `RUST_LOG` (default `info`), as text or JSON.
//!
//! **Logging never blocks a runtime thread.** Log lines go into a bounded queue, and a dedicated
//! thread writes them to stderr (tracing-appender's non-blocking writer). If stderr is slow or
//! nobody reads it (a full pipe), the queue fills and further lines are dropped and counted,
//! instead of the accept loop or a connection stalling on a write to stderr. Events a peer can
//! cause at will are summarised before they reach the log (see `log_throttle.rs`).
//!
//! Each connection runs in a span carrying its peer address (see [`crate::App`]), so every line
//! a connection logs says whose it is. Errors are logged once, where they are handled. Field
//! values are written by tracing-subscriber, which escapes terminal control sequences in them.
//!
//! **Traces** (the `otel` feature, `otel.rs`): with `OTEL_EXPORTER_OTLP_ENDPOINT` set, the spans
//! of `spans.rs` (made with the OpenTelemetry API) go to an OpenTelemetry collector through the
//! SDK, and each JSON log line inside one carries its trace ids (`trace_ids.rs`). Without the
//! feature, `spans_off.rs` stands in for `spans.rs`, and nothing is traced.
//!
//! With the `console` feature (and `RUSTFLAGS="--cfg tokio_unstable"`), a tokio-console layer is
//! added beside the log output; it sees every task regardless of `RUST_LOG`.

use std::io::IsTerminal as _;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer as _, fmt};

#[cfg(feature = "otel")]
use self::otel::Exporting;
#[cfg(feature = "otel")]
pub(crate) use self::otel::figures;

#[cfg(feature = "otel")]
#[cfg_attr(not(feature = "otel"), path = "../part_left_out.rs")]
mod otel;
#[cfg_attr(not(feature = "otel"), path = "spans_off.rs")]
pub(crate) mod spans;
#[cfg(feature = "otel")]
#[cfg_attr(not(feature = "otel"), path = "../part_left_out.rs")]
mod trace_ids;

/// Log lines that may wait for stderr; past this, lines are dropped and counted. At a few
/// hundred bytes a line, a few MiB at most.
const BUFFERED_LINES: usize = 16_384;

/// The level when `RUST_LOG` is unset or empty. The tests read no log line to find a server,
/// so a project may raise it (the template's CI runs the suite at WARN).
const DEFAULT_LEVEL: LevelFilter = LevelFilter::INFO;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The filter of `RUST_LOG`: `target=level` directives and a bare level for the rest
/// (`info,service=debug`), `info` when unset or empty. `Targets`, not `EnvFilter`: span and field
/// filters are all `EnvFilter` adds, and its `env-filter` feature brings `regex-automata` and
/// `regex-syntax` into the build (the first alone took 14 s of a cold build here). So a span or
/// field filter (`[conn]=debug`) is refused, not read as a target no event has (which would
/// silence every line).
///
/// Targets are module paths. The binary's are its own name's (`NAME`, `-` as `_`); the
/// libraries keep the names `service` and `cpu` whatever the project is called (Rust sources
/// never change on generation), so the project's names select them too: `NAME` (or `NAME::x`)
/// also means `service` (`service::x`), and `NAME_cpu` means `cpu`.
fn filter(rust_log: Option<&str>) -> anyhow::Result<Targets> {
    let Some(directives) = rust_log.map(str::trim).filter(|directives| !directives.is_empty()) else {
        return Ok(Targets::new().with_default(DEFAULT_LEVEL));
    };
    let invalid = |why: &dyn std::fmt::Display| anyhow::anyhow!("invalid RUST_LOG {directives:?}: {why}");
    let mut read = Vec::new();
    for directive in directives.split(',').map(str::trim) {
        let target = directive.split_once('=').map_or(directive, |(target, _)| target);
        if target.contains(['[', ']', '{', '}', '"']) {
            return Err(invalid(
                &"span and field filters ([span], {field}) are not supported: use target=level",
            ));
        }
        read.push(directive.to_owned());
        read.extend(library_directive(directive));
    }
    read.join(",").parse().map_err(|error| invalid(&error))
}

/// `directive` for the library its target names by the project's name, if it names one:
/// `NAME_cpu...` is `cpu...`, `NAME...` is `service...` (see [`filter`]).
fn library_directive(directive: &str) -> Option<String> {
    let project = env!("CARGO_PKG_NAME").replace('-', "_");
    [(format!("{project}_cpu"), "cpu"), (project.clone(), "service")].into_iter().find_map(
        |(name, library)| {
            let rest = directive.strip_prefix(name.as_str())?;
            let whole = rest.is_empty() || rest.starts_with("::") || rest.starts_with('=');
            (whole && name != library).then(|| format!("{library}{rest}"))
        },
    )
}

/// The running log writer (and, with traces, their exporter). Keep it until the program ends:
/// dropping it flushes what is queued (waiting at most about a second) and stops the writer
/// thread.
#[must_use = "dropping it stops the log writer"]
pub struct Logging {
    _writer: WorkerGuard,
    dropped: ErrorCounter,
    #[cfg(feature = "otel")]
    traces: Option<Exporting>,
}

impl Logging {
    /// Log lines dropped so far because stderr did not keep up.
    pub fn dropped_lines(&self) -> usize {
        self.dropped.dropped_lines()
    }

    /// Whether spans are exported: the service then makes them (`Config::trace_requests`).
    pub fn traced(&self) -> bool {
        #[cfg(feature = "otel")]
        return self.traces.is_some();
        #[cfg(not(feature = "otel"))]
        false
    }

    /// With traces, sends the spans still queued, waiting at most `left` (what remains of the
    /// shutdown's bound), then stops the exporter's thread; nothing without. It blocks: call it
    /// off every runtime thread, after the runtime's work has ended.
    pub fn finish_traces(&mut self, left: std::time::Duration) {
        #[cfg(feature = "otel")]
        if let Some(traces) = self.traces.take() {
            traces.finish(left);
        }
        #[cfg(not(feature = "otel"))]
        let _ = left;
    }
}

/// Installs the global subscriber (the log output) and, with `OTEL_EXPORTER_OTLP_ENDPOINT` set
/// (the `otel` feature), the global tracer provider that exports the spans of `spans.rs`. Fails
/// on an invalid `RUST_LOG` or `OTEL_*` variable, with the reason. Call it before any runtime
/// starts.
pub fn init(format: LogFormat) -> anyhow::Result<Logging> {
    let filter = filter(std::env::var("RUST_LOG").ok().as_deref())?;
    #[cfg(feature = "otel")]
    let traces = Exporting::from_env()?;
    let (stderr, writer) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("log-writer")
        .finish(std::io::stderr());
    let dropped = stderr.error_counter();
    // Colours only for a person at a terminal, not for a log collector reading a pipe.
    let ansi = std::io::stderr().is_terminal();
    subscriber(format, filter, stderr, ansi).try_init()?;
    #[cfg(feature = "otel")]
    if let Some(traces) = &traces {
        traces.install();
    }
    Ok(Logging {
        _writer: writer,
        dropped,
        #[cfg(feature = "otel")]
        traces,
    })
}

/// The subscriber: the log output in `format` through `filter` to `writer`.
fn subscriber<W>(format: LogFormat, filter: Targets, writer: W, ansi: bool) -> tracing::Dispatch
where
    W: for<'writer> fmt::MakeWriter<'writer> + Send + Sync + 'static,
{
    let output = match format {
        LogFormat::Text => fmt::layer().with_writer(writer).with_ansi(ansi).boxed(),
        // With traces, a line inside a traced request carries its ids.
        #[cfg(feature = "otel")]
        LogFormat::Json => fmt::layer()
            .json()
            .event_format(trace_ids::WithTraceIds(fmt::format().json()))
            .with_writer(writer)
            .boxed(),
        #[cfg(not(feature = "otel"))]
        LogFormat::Json => fmt::layer().json().with_writer(writer).boxed(),
    };
    let registry = tracing_subscriber::registry().with(output.with_filter(filter));
    #[cfg(feature = "console")]
    let registry = registry.with(console_subscriber::spawn());
    tracing::Dispatch::new(registry)
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::filter::LevelFilter;

    use super::{DEFAULT_LEVEL, filter};

    #[test]
    fn rust_log_takes_a_default_level_and_targets() {
        let unset = filter(None).unwrap();
        assert_eq!(unset.default_level(), Some(DEFAULT_LEVEL));
        assert_eq!(filter(Some(" ")).unwrap(), unset);
        let mixed = filter(Some("warn,service::server=debug")).unwrap();
        assert!(mixed.would_enable("service::server", &tracing::Level::DEBUG));
        assert!(!mixed.would_enable("service::app", &tracing::Level::INFO));
        assert_eq!(filter(Some("off")).unwrap().default_level(), Some(LevelFilter::OFF));
    }

    #[test]
    fn a_bad_rust_log_is_refused_with_its_reason() {
        let error = filter(Some("service=loud")).unwrap_err().to_string();
        assert!(error.starts_with("invalid RUST_LOG \"service=loud\": "), "{error}");
        for spans in ["[conn]=debug", "info,service[conn]=debug", "[{peer=1}]", "service{x}=trace"] {
            let error = filter(Some(spans)).unwrap_err().to_string();
            assert!(error.contains("span and field filters") && !error.contains('\n'), "{spans}: {error}");
        }
    }

    #[test]
    fn the_project_s_names_select_its_libraries() {
        // In the raw template the project is `service`, so only `_cpu` maps; a generated project
        // `payments-ledger` maps `payments_ledger` to `service` as well (its own test run says).
        let project = env!("CARGO_PKG_NAME").replace('-', "_");
        let debug = filter(Some(&format!("warn,{project}=debug"))).unwrap();
        for target in [project.as_str(), "service::server", "service::fanout::relay"] {
            assert!(debug.would_enable(target, &tracing::Level::DEBUG), "{target}");
        }
        assert!(!debug.would_enable("cpu::primes", &tracing::Level::INFO), "cpu is not service");
        let cpu = filter(Some(&format!("{project}_cpu=trace"))).unwrap();
        assert!(cpu.would_enable("cpu::rayon_bridge", &tracing::Level::TRACE));
        let module = filter(Some(&format!("{project}::server=debug"))).unwrap();
        assert!(module.would_enable("service::server", &tracing::Level::DEBUG));
        assert!(!module.would_enable("service::app", &tracing::Level::DEBUG));
        let other = filter(Some(&format!("{project}x=debug"))).unwrap();
        assert!(!other.would_enable("service", &tracing::Level::DEBUG), "a longer name is another target");
    }
}
