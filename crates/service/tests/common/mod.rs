//! Helpers shared by the tests that run the real binary: finding a program the tests need,
//! starting the service on ports picked here and waiting until it is ready, signalling and
//! waiting for the child, and reading its log. Every wait has a deadline ([`PATIENCE`]) and
//! fails saying what it waited for.

#![expect(
    clippy::disallowed_methods,
    reason = "sync helpers that signal and wait on child processes, never on a runtime"
)]
#![cfg_attr(
    not(all(feature = "tls", feature = "redis", feature = "otel", feature = "http")),
    allow(dead_code, reason = "some helpers serve only the tests of a part this build leaves out")
)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

/// The binary that cargo built for this package (the name follows a generated project's).
pub(crate) const BINARY: &str = env!(concat!("CARGO_BIN_EXE_", env!("CARGO_PKG_NAME")));
/// The bound on any wait for the child.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

/// `program` from the PATH, if installed. Without it, the tests that need it say once per run
/// that they were skipped (and how to `install` it), and pass; under `CI=true` they fail, so CI
/// cannot skip them unseen.
pub(crate) fn required_program(program: &str, install: &str, tests: &str) -> Option<PathBuf> {
    static SKIPPED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|path| path.is_file());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true, but {program} is not installed ({install})"
        );
        let mut skipped = SKIPPED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !skipped.iter().any(|name| name == program) {
            skipped.push(program.to_owned());
            // Written to stderr itself: the test harness keeps what `eprintln!` says to itself
            // when a test passes, and this must be seen.
            let _ =
                writeln!(std::io::stderr(), "skipped the {tests}: {program} is not installed ({install})");
        }
    }
    found
}

/// Sends SIG`name` to the child.
pub(crate) fn signal(child: &Child, name: &str) {
    let sent =
        Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status().expect("run kill");
    assert!(sent.success(), "kill -{name} {}", child.id());
}

/// Waits for the child to end, at most [`PATIENCE`]; kills it and fails the test otherwise.
pub(crate) fn wait(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().expect("poll the child") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            // What it logged says which step of start-up or shutdown it was stuck in.
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            panic!("the server did not end within {PATIENCE:?}; its stderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One request over TCP, and its answer line (with its line ending), each bounded by
/// [`PATIENCE`].
pub(crate) fn request(addr: SocketAddr, line: &str) -> String {
    let stream = TcpStream::connect_timeout(&addr, PATIENCE).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("a read timeout");
    (&stream).write_all(format!("{line}\n").as_bytes()).expect("send");
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).expect("an answer");
    answer
}

/// One `/metrics` sample's value on `admin` (classic format): `name` is the sample's name
/// without the program's prefix, and its labels (`fanout_refused_total{reason="not_text"}`).
pub(crate) fn metric(admin: SocketAddr, name: &str) -> f64 {
    let mut stream = TcpStream::connect_timeout(&admin, PATIENCE).expect("connect to the admin port");
    stream.set_read_timeout(Some(PATIENCE)).expect("a read timeout");
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n").expect("send");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut stream, &mut text).expect("read the metrics");
    let prefix = format!("{}_{name} ", env!("CARGO_PKG_NAME").replace('-', "_"));
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in /metrics"))
}

/// A free loopback port (bound, then released for the child to take). Another process could
/// take it in between: then the child fails to bind and the test fails saying so, never hangs.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).expect("a free port").port()
}

/// `serve` on loopback at `addr` and `admin`, with `--cpu-threads 1` and then `args`; stdin and
/// stdout closed, stderr piped. `RUST_LOG=info` (which a test may override) fixes what the log
/// says whatever default level a project sets.
pub(crate) fn serve_at(addr: SocketAddr, admin: SocketAddr, args: &[&str]) -> Command {
    let mut command = Command::new(BINARY);
    command
        .args(["serve", "--listen", &addr.to_string(), "--admin-listen", &admin.to_string()])
        .args(["--cpu-threads", "1"])
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// [`serve_at`] two loopback ports picked here ([`free_port`]), which it returns: the test knows
/// the addresses without reading the log.
pub(crate) fn serve(args: &[&str]) -> (Command, SocketAddr, SocketAddr) {
    let [addr, admin] = [free_port(), free_port()].map(|port| SocketAddr::from(([127, 0, 0, 1], port)));
    (serve_at(addr, admin, args), addr, admin)
}

/// Starts [`serve`] with `args` and waits until it is ready ([`wait_until_ready`]): the child,
/// its protocol address and its admin address. Should another process take a picked port
/// between its pick and the child's bind, the child exits saying so, and this starts it again on
/// other ports (three tries).
pub(crate) fn start(args: &[&str]) -> (Child, SocketAddr, SocketAddr) {
    start_with(args, &[])
}

/// [`start`] with more environment variables.
pub(crate) fn start_with(args: &[&str], env: &[(&str, &str)]) -> (Child, SocketAddr, SocketAddr) {
    for _ in 0..3 {
        let (mut command, addr, admin) = serve(args);
        command.envs(env.iter().copied());
        let mut child = command.spawn().expect("start the binary");
        match wait_until_ready(&mut child, admin) {
            Ok(()) => return (child, addr, admin),
            Err(log) if log.contains("Address already in use") => continue,
            Err(log) => panic!("the server ended before /readyz on {admin} answered 200:\n{log}"),
        }
    }
    panic!("three tries at free ports found each taken before the server bound it");
}

/// Waits until the child's `/readyz` on `admin` answers 200, which it does once the service
/// listens; at most [`PATIENCE`], then fails saying so. If the child ends first, its stderr.
/// (The admin port, not the service's: a probe connection there would count as a client, and
/// with TLS as a failed handshake.)
pub(crate) fn wait_until_ready(child: &mut Child, admin: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if child.try_wait().expect("poll the child").is_some() {
            let mut log = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut stderr, &mut log);
            }
            return Err(log);
        }
        if readyz(admin).is_some_and(|status_line| status_line.starts_with("HTTP/1.1 200")) {
            return Ok(());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("waited {PATIENCE:?} for /readyz on {admin} to answer 200");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The status line of `GET /readyz` on `admin`, if it answers within a short timeout.
fn readyz(admin: SocketAddr) -> Option<String> {
    let short = Duration::from_millis(200);
    let mut stream = TcpStream::connect_timeout(&admin, short).ok()?;
    stream.set_read_timeout(Some(short)).ok()?;
    stream.write_all(b"GET /readyz HTTP/1.1\r\nHost: test\r\n\r\n").ok()?;
    let mut status_line = String::new();
    BufReader::new(stream).read_line(&mut status_line).ok()?;
    Some(status_line)
}

/// A child's stderr (or stdout), read line by line on a thread of its own, so that a full pipe
/// never holds the child up and every wait for a line has a deadline (a blocking read has none).
pub(crate) struct Log(mpsc::Receiver<String>);

impl Log {
    /// Takes `child`'s piped stderr.
    pub(crate) fn of(child: &mut Child) -> Self {
        Self::lines_of(child.stderr.take().expect("stderr piped"))
    }

    /// The lines of `output`, a child's piped stderr or stdout.
    pub(crate) fn lines_of(output: impl std::io::Read + Send + 'static) -> Self {
        let (lines, log) = mpsc::channel();
        // Ends when the child closes its end, or when this `Log` is dropped.
        std::thread::spawn(move || {
            for line in BufReader::new(output).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    return;
                }
            }
        });
        Self(log)
    }

    /// The next line that holds `text`, within [`PATIENCE`]; fails naming it otherwise.
    pub(crate) fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.0.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("waited {PATIENCE:?} for a log line with {text:?}")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("the log ended without a line with {text:?}")
                }
            }
        }
    }

    /// Every line from now until the child closes stderr (it has ended), within [`PATIENCE`].
    pub(crate) fn rest(&self) -> String {
        let deadline = Instant::now() + PATIENCE;
        let mut rest = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.0.recv_timeout(left) {
                Ok(line) => rest.extend([line.as_str(), "\n"]),
                Err(mpsc::RecvTimeoutError::Disconnected) => return rest,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("waited {PATIENCE:?} for the log to end:\n{rest}")
                }
            }
        }
    }
}
