//! Traces to a real OpenTelemetry collector that nobody here wrote: rotel's agent (PyPI:
//! `pip install rotel`), which each test starts on free loopback ports and which prints every
//! span it receives. They send kept commands (PING, PUBLISH), and PRIMES only if the project
//! still has it. And the service with a collector that refuses, or accepts and never
//! answers: it serves as usual and exits within its grace period.
//!
//! Without `rotel-agent` on the PATH (the CI workflow installs it) the test that needs it says
//! once that it was skipped, and passes; under `CI=true` it fails instead.
#![cfg(all(unix, feature = "otel"))]
#![expect(
    clippy::disallowed_methods,
    reason = "tests that start and wait on child processes, and read their output on threads"
)]

use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{Log, PATIENCE, free_port, metric, request, required_program, signal, start_with, wait};

/// A rotel agent of the test's own, printing what it receives.
struct Collector {
    child: Child,
    endpoint: String,
    received: Arc<Mutex<String>>,
}

impl Collector {
    /// Starts the agent on free loopback ports (OTLP over HTTP, and gRPC, which it always
    /// opens), and waits until its HTTP port takes connections.
    fn start(agent: &Path) -> Self {
        let [http, grpc] = [free_port(), free_port()].map(|port| format!("127.0.0.1:{port}"));
        let mut child = Command::new(agent)
            .args(["start", "--exporter", "blackhole", "--debug-log", "traces"])
            .args(["--debug-log-verbosity", "detailed", "--otlp-http-endpoint", &http])
            .args(["--otlp-grpc-endpoint", &grpc])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rotel-agent");
        let received = Arc::new(Mutex::new(String::new()));
        collect(child.stdout.take().expect("piped"), &received);
        collect(child.stderr.take().expect("piped"), &received);
        let deadline = Instant::now() + PATIENCE;
        let addr: SocketAddr = http.parse().unwrap();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
            assert!(child.try_wait().unwrap().is_none(), "rotel-agent ended:\n{}", received.lock().unwrap());
            assert!(Instant::now() < deadline, "rotel-agent did not listen on {http} within {PATIENCE:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, endpoint: format!("http://{http}"), received }
    }

    /// Everything received once it holds `text`, within [`PATIENCE`].
    fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let received = self.received.lock().unwrap().clone();
            if received.contains(text) {
                return received;
            }
            assert!(Instant::now() < deadline, "the collector received no {text:?}:\n{received}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Appends what `output` says to `received`, line by line, on a thread that ends with it.
fn collect(output: impl std::io::Read + Send + 'static, received: &Arc<Mutex<String>>) {
    let received = Arc::clone(received);
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            received.lock().unwrap().extend([line.as_str(), "\n"]);
        }
    });
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The span block of the collector's output that names `name`.
fn span_named<'a>(received: &'a str, name: &str) -> &'a str {
    received
        .split("Span #")
        .find(|block| block.lines().any(|line| line.trim() == format!("Name           : {name}")))
        .unwrap_or_else(|| panic!("no span named {name} in:\n{received}"))
}

#[test]
fn spans_reach_a_real_collector_and_join_the_json_logs_by_trace_id() {
    let Some(agent) = required_program("rotel-agent", "pip install rotel", "trace export test") else {
        return;
    };
    let collector = Collector::start(&agent);
    // With a broker, a PUBLISH relayed to it is a span under the request's (the broker tests
    // say once if they skip for want of redis-server).
    #[cfg(feature = "redis")]
    let redis = crate::broker::redis_server().map(|binary| crate::broker::Redis::start(binary, None));
    #[cfg(feature = "redis")]
    let fanout = redis.as_ref().map(|redis| ["--fanout-url".to_owned(), redis.url()]);
    #[cfg(not(feature = "redis"))]
    let fanout = None::<[String; 2]>;
    let mut args = vec!["--log-format", "json"];
    args.extend(fanout.iter().flatten().map(String::as_str));
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint.as_str()),
        ("OTEL_SERVICE_NAME", "traced-service"),
        // The example PRIMES logs a line at debug level inside its request's span.
        ("RUST_LOG", "info,service::commands=debug"),
    ];
    let (mut child, addr, admin) = start_with(&args, &env);
    let log = Log::of(&mut child);
    // Ready is not relayed: the relay's own connection may still be on its way (start-up only
    // checked that the broker answers), and a PUBLISH before it is `ERR unavailable`.
    let deadline = Instant::now() + PATIENCE;
    while fanout.is_some() && metric(admin, "fanout_broker_up") != 1.0 {
        assert!(Instant::now() < deadline, "the relay did not connect within {PATIENCE:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(request(addr, "PING"), "OK PONG\n");
    assert_eq!(request(addr, "PUBLISH news hello"), "OK 0\n");
    // The example that computes on the pool and logs, unless the project removed it.
    let computed = request(addr, "PRIMES 1000") == "OK 168\n";
    let line = computed.then(|| log.wait_for("counting the primes"));
    let line: Option<serde_json::Value> =
        line.map(|line| serde_json::from_str(&line).expect("a JSON log line"));
    // The batch is sent at the latest when the service stops: SIGTERM, a clean exit.
    signal(&child, "TERM");
    assert_eq!(wait(&mut child).code(), Some(0));
    assert!(log.rest().contains("spans sent"));
    let received =
        collector.wait_for(if computed { "Name           : PRIMES" } else { "Name           : PUBLISH" });
    assert!(received.contains("service.name: Str(traced-service)"), "{received}");
    let ping = span_named(&received, "PING");
    assert!(ping.contains("SPAN_KIND_SERVER") && ping.contains("STATUS_CODE_OK"), "{ping}");
    assert!(ping.contains("network.peer.address: Str(127.0.0.1)"), "{ping}");
    if let Some(line) = line {
        // The log line and the PRIMES span: the same trace and span ids.
        let primes = span_named(&received, "PRIMES");
        let (trace_id, span_id) = (line["trace_id"].as_str(), line["span_id"].as_str());
        let (trace_id, span_id) =
            (trace_id.expect("the line's trace_id"), span_id.expect("the line's span_id"));
        assert!(primes.contains(&format!("Trace ID       : {trace_id}")), "{primes}\n{line}");
        assert!(primes.contains(&format!("ID             : {span_id}")), "{primes}\n{line}");
        for name in ["queued", "run"] {
            assert!(span_named(&received, name).contains(&format!("Parent ID      : {span_id}")));
        }
    }
    if fanout.is_some() {
        let publish = span_named(&received, "PUBLISH");
        let id = publish.lines().find_map(|line| line.trim().strip_prefix("ID             : ")).unwrap();
        let relayed = span_named(&received, "publish news");
        assert!(relayed.contains(&format!("Parent ID      : {id}")), "{relayed}");
        assert!(
            relayed.contains("SPAN_KIND_PRODUCER") && relayed.contains("messaging.system: Str(redis)"),
            "{relayed}"
        );
    }
}

#[test]
fn with_the_collector_down_or_silent_the_service_serves_and_exits_within_its_grace_period() {
    // Down: nothing listens at the endpoint. Silent: it takes connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("a listener");
    let endpoints =
        [free_port(), silent.local_addr().unwrap().port()].map(|port| format!("http://127.0.0.1:{port}"));
    let accepted =
        std::thread::spawn(move || silent.incoming().take(1).map(Result::unwrap).collect::<Vec<_>>());
    for (endpoint, down) in endpoints.iter().zip([true, false]) {
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            // Sent every 100 ms, and waited for 60 s each: only the grace period ends the wait.
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "60000"),
        ];
        let (mut child, addr, admin) = start_with(&["--shutdown-grace", "1s"], &env);
        let log = Log::of(&mut child);
        assert_eq!(request(addr, "PING"), "OK PONG\n");
        if down {
            // The export fails, is counted and logged, and the service still answers.
            log.wait_for("trace export failed");
            assert!(metric(admin, "trace_export_failures_total") >= 1.0);
        }
        assert_eq!(request(addr, "PING"), "OK PONG\n");
        signal(&child, "TERM");
        // Within PATIENCE (10 s) or `wait` fails: not the 60 s the export would wait.
        assert_eq!(wait(&mut child).code(), Some(0), "{endpoint}");
        let rest = log.rest();
        if !down {
            assert!(rest.contains("could not all be sent in time"), "{rest}");
        }
    }
    drop(accepted);
}
