//! The servers that the throughput and latency figures measure, each in a process of its own, as
//! users run them: the service's release binary, the bare tokio line server and the bare hyper
//! and axum servers (this bench's own executable started again with [`BARE_SERVER`],
//! [`crate::http::BARE_HTTP_SERVER`] or [`crate::http::BARE_AXUM_SERVER`], see [`crate::bare`]
//! and [`crate::http`]) and redis-server.
//! The bench process is the load client and nothing else (but `wrk`, for HTTP), so the figures do
//! not move with how one runtime shares its workers between a server and its client.
//!
//! A child is killed when its [`Process`] drops (`kill_on_drop`); the bare servers also end when
//! their stdin closes, so none outlives a bench that panics.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use testkit::TEST_TIMEOUT;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::task::JoinHandle;

/// The argument that makes this executable the bare server.
pub(crate) const BARE_SERVER: &str = "--bare-server";
/// With [`BARE_SERVER`]: `SPIN <ms>` spins inline (the negative control).
pub(crate) const INLINE_SPIN: &str = "--inline-spin";

/// A server in a child process.
pub(crate) struct Process {
    child: Child,
    /// Where it serves its protocol.
    pub(crate) addr: SocketAddr,
    /// The service with `--http-listen`: where it serves HTTP.
    #[cfg_attr(not(feature = "http"), expect(dead_code, reason = "only the HTTP figure reads it"))]
    pub(crate) http: Option<SocketAddr>,
    /// The bare server's stdin: it ends when this closes.
    stdin: Option<ChildStdin>,
    /// The service only: reads its log to the end, passing on warnings and errors, so a full
    /// pipe never stops it. It ends when the service does.
    log: Option<JoinHandle<()>>,
}

impl Process {
    /// Stops the child: the service by SIGTERM, then waiting for its graceful shutdown; a bare
    /// server by closing its stdin, then waiting for it to end (so that a tool it runs under,
    /// callgrind, writes its count); the others by killing them.
    pub(crate) async fn stop(mut self) {
        if self.stdin.take().is_some() {
            let status = tokio::time::timeout(TEST_TIMEOUT, self.child.wait())
                .await
                .expect("the bare server ends in time when its stdin closes")
                .expect("wait for the bare server");
            assert!(status.success(), "the bare server ended with {status}");
        } else if self.log.is_some() {
            let pid = self.child.id().expect("the service is running").to_string();
            let sent = Command::new("kill").args(["-TERM", &pid]).status().await.expect("run kill");
            assert!(sent.success(), "kill -TERM {pid}");
            let status = tokio::time::timeout(TEST_TIMEOUT, self.child.wait())
                .await
                .expect("the service stops in time")
                .expect("wait for the service");
            assert!(status.success(), "the service ended with {status}");
        } else {
            self.child.kill().await.expect("kill the child");
        }
        if let Some(log) = self.log.take() {
            log.await.expect("the log reader does not panic");
        }
    }

    /// The child's resident memory, from `/proc/PID/statm` (Linux; 0 elsewhere).
    pub(crate) async fn resident_bytes(&self) -> u64 {
        let pid = self.child.id().expect("the child is running");
        let statm = tokio::fs::read_to_string(format!("/proc/{pid}/statm")).await.unwrap_or_default();
        statm.split_whitespace().nth(1).and_then(|pages| pages.parse::<u64>().ok()).unwrap_or(0) * 4096
    }
}

/// Builds the service's release binary (cargo does nothing when it is fresh) and returns its
/// path. Sync: it runs before the bench's runtime starts.
pub(crate) fn build_service() -> PathBuf {
    // The tests package is `NAME-tests`; the service's package and binary are `NAME`.
    let package = env!("CARGO_PKG_NAME").strip_suffix("-tests").expect("the tests package is NAME-tests");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // Not with the variables cargo set for this bench (`CARGO_PKG_NAME=NAME-tests`, ...): ring's
    // build script reruns when one of them changes, so a build with them, then one without
    // (`cargo build`, or the next `cargo bench`), rebuilt ring and all above it every time.
    let set_for_this_bench = std::env::vars_os().filter_map(|(name, _)| {
        let text = name.to_str()?;
        let set = ["CARGO_PKG_", "CARGO_MANIFEST_"].iter().any(|prefix| text.starts_with(prefix))
            || ["CARGO_CRATE_NAME", "CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"]
                .contains(&text);
        set.then_some(name)
    });
    let mut command = std::process::Command::new(cargo);
    for name in set_for_this_bench {
        command.env_remove(name);
    }
    #[expect(clippy::disallowed_methods, reason = "no runtime runs yet")]
    let output = command
        .args(["build", "--release", "--package", package, "--bin", package])
        .args(["--message-format", "json-render-diagnostics"])
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo build");
    assert!(output.status.success(), "cargo build --release -p {package} failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["target"]["name"] == package)
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .expect("cargo names the service's executable")
}

/// The service's release binary, serving on loopback ports of its own choosing with `flags`
/// added to its defaults.
pub(crate) async fn service(binary: &Path, flags: &[&str]) -> Process {
    service_with_env(binary, flags, &[]).await
}

/// [`service`] with more environment variables (`OTEL_*`, for the traces figure).
pub(crate) async fn service_with_env(binary: &Path, flags: &[&str], env: &[(&str, &str)]) -> Process {
    start_service(Command::new(binary), flags, env).await
}

/// [`service`] under callgrind (`valgrind --tool=callgrind`), which writes its count to `out`
/// when the service exits (the instructions figures).
pub(crate) async fn service_counted(binary: &Path, flags: &[&str], out: &Path) -> Process {
    start_service(callgrind(binary, out), flags, &[]).await
}

/// `valgrind --tool=callgrind --callgrind-out-file=OUT PROGRAM`, the program's arguments to add.
fn callgrind(program: &Path, out: &Path) -> Command {
    let mut command = Command::new("valgrind");
    command
        .args(["-q", "--tool=callgrind"])
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(program);
    command
}

/// Starts the service that `command` runs (its binary, or a tool that runs it), with `flags`
/// and `env`, and waits until it says where it listens.
async fn start_service(mut command: Command, flags: &[&str], env: &[(&str, &str)]) -> Process {
    let mut child = command
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(flags)
        .envs(env.iter().copied())
        // At info whatever the project's default level: the address is read from the log.
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the service");
    let mut log = BufReader::new(child.stderr.take().expect("a piped stderr")).lines();
    let listening = tokio::time::timeout(TEST_TIMEOUT, async {
        while let Some(line) = log.next_line().await.expect("read the service's log") {
            if line.contains("listening") {
                return line;
            }
        }
        panic!("the service ended before it listened");
    });
    let line = listening.await.expect("the service listens in time");
    let addr = address(&line, "local_addr=").unwrap_or_else(|| panic!("no address in {line}"));
    // Its HTTP front says where it listens on the next line, if it has one (the `http` feature).
    let http = if flags.contains(&"--http-listen") {
        let line =
            tokio::time::timeout(TEST_TIMEOUT, log.next_line()).await.expect("the log goes on in time");
        line.expect("read the service's log").and_then(|line| address(&line, "http_addr="))
    } else {
        None
    };
    let log = tokio::spawn(async move {
        while let Ok(Some(line)) = log.next_line().await {
            if line.contains("WARN") || line.contains("ERROR") {
                eprintln!("service: {line}");
            }
        }
    });
    Process { child, addr, http, stdin: None, log: Some(log) }
}

/// The address after `field` in a text log line.
fn address(line: &str, field: &str) -> Option<SocketAddr> {
    line.split(field)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|addr| addr.parse().ok())
}

/// rotel's agent, the OpenTelemetry collector of the traces figure (PyPI: `pip install rotel`),
/// taking OTLP over HTTP on a loopback port of its own and keeping nothing (`--exporter
/// blackhole`); `None` (said once) without `rotel-agent` on the PATH. Its OTLP/HTTP endpoint.
#[cfg(feature = "otel")]
pub(crate) async fn collector() -> Option<(Process, String)> {
    let mut ports = Vec::new();
    for _ in 0..2 {
        ports.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.ok()?.local_addr().ok()?);
    }
    let (http, grpc) = (ports[0], ports[1]);
    let child = Command::new("rotel-agent")
        .args(["start", "--exporter", "blackhole"])
        .args(["--otlp-http-endpoint", &http.to_string(), "--otlp-grpc-endpoint", &grpc.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let Ok(child) = child else {
        println!("skipped trace_throughput: rotel-agent is not installed (pip install rotel)");
        return None;
    };
    listening(http).await.then(|| {
        (Process { child, addr: http, http: None, stdin: None, log: None }, format!("http://{http}"))
    })
}

/// Whether `addr` takes connections within five seconds (a child just started).
async fn listening(addr: SocketAddr) -> bool {
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// The bare tokio line server (PING only; `SPIN <ms>` spun inline when `inline_spin`).
pub(crate) async fn bare(inline_spin: bool) -> Process {
    if inline_spin {
        this_executable(&[BARE_SERVER, INLINE_SPIN]).await
    } else {
        this_executable(&[BARE_SERVER]).await
    }
}

/// The bare hyper server ([`crate::http`]).
#[cfg(feature = "http")]
pub(crate) async fn bare_http() -> Process {
    this_executable(&[crate::http::BARE_HTTP_SERVER]).await
}

/// The bare axum server ([`crate::http`]).
#[cfg(feature = "http")]
pub(crate) async fn bare_axum() -> Process {
    this_executable(&[crate::http::BARE_AXUM_SERVER]).await
}

/// The bare tokio line server under callgrind, which writes its count to `out` when the server
/// exits (the instructions figures).
pub(crate) async fn bare_counted(out: &Path) -> Process {
    start_bare(callgrind(&std::env::current_exe().expect("this bench's executable"), out), &[BARE_SERVER])
        .await
}

/// This bench's executable started with `args`, as one of the bare servers: it prints its
/// address and serves until its stdin closes.
async fn this_executable(args: &[&str]) -> Process {
    start_bare(Command::new(std::env::current_exe().expect("this bench's executable")), args).await
}

/// Starts the bare server that `command` runs with `args`, and reads where it listens.
async fn start_bare(mut command: Command, args: &[&str]) -> Process {
    let mut child = command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the bare server");
    let stdin = child.stdin.take();
    let mut out = BufReader::new(child.stdout.take().expect("a piped stdout")).lines();
    let line = tokio::time::timeout(TEST_TIMEOUT, out.next_line())
        .await
        .expect("the bare server listens in time")
        .expect("read the bare server's stdout")
        .expect("the bare server says where it listens");
    let addr = line.parse().unwrap_or_else(|_| panic!("no address in {line:?}"));
    Process { child, addr, http: None, stdin, log: None }
}

/// redis-server on a free loopback port, without persistence, if one is installed.
pub(crate) async fn redis() -> Option<Process> {
    let port = tokio::net::TcpListener::bind("127.0.0.1:0").await.ok()?.local_addr().ok()?.port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .ok()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    listening(addr).await.then(|| Process { child, addr, http: None, stdin: None, log: None })
}
