//! The HTTP front as a user meets it: the real binary with `--http-listen`, and `curl` (Debian's),
//! a client nobody here wrote, over HTTP/1.1, HTTP/2 (prior knowledge, and ALPN over TLS) and
//! Server-Sent Events; a slow loris and a reader that stops reading, over raw sockets. The tests
//! send kept commands (PING, PUBLISH, SUBSCRIBE's events), and PRIMES only if the project still
//! has it. Without `curl` they say once that they were skipped; under `CI=true` they fail.
#![cfg(all(unix, feature = "http"))]
#![expect(
    clippy::disallowed_methods,
    reason = "tests that start and wait on child processes and read raw sockets, on no runtime"
)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[cfg(feature = "tls")]
use testkit::pki::Pki;

use crate::common::{Log, PATIENCE, free_port, request, required_program, signal, start, wait};

/// `curl` from the PATH, or `None` (the test is skipped, saying so once; under CI it fails).
fn curl() -> Option<PathBuf> {
    required_program("curl", "apt-get install curl", "the HTTP front's tests with a real client")
}

/// The service with the HTTP front on a free port, and `args`: the child, its line address and
/// its HTTP address.
fn start_http(args: &[&str]) -> (Child, SocketAddr, SocketAddr) {
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let http_text = http.to_string();
    let mut all = vec!["--http-listen", &http_text];
    all.extend_from_slice(args);
    let (child, addr, _) = start(&all);
    (child, addr, http)
}

/// `curl` with `args`, bounded by [`PATIENCE`], printing a last line with the status and the
/// HTTP version.
fn command(curl: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(curl);
    command
        .args([
            "--silent",
            "--show-error",
            "--max-time",
            "10",
            "--write-out",
            "\n%{http_code} %{http_version}",
        ])
        .args(args)
        .stdin(Stdio::null());
    command
}

/// What `curl` printed for `args` ([`command`]).
fn run(curl: &Path, args: &[&str]) -> String {
    let output = command(curl, args).output().expect("run curl");
    assert!(output.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("UTF-8")
}

#[test]
fn curl_is_answered_on_every_route_over_http_1_1_and_http_2() {
    let Some(curl) = curl() else { return };
    let (mut child, addr, http) = start_http(&[]);
    let url = |path: &str| format!("http://{http}{path}");
    let commands = url("/v1/commands/");
    assert_eq!(run(&curl, &["-X", "POST", &format!("{commands}ping")]), "{\"answer\":\"PONG\"}\n\n200 1.1");
    assert_eq!(
        run(&curl, &["--http2-prior-knowledge", "-X", "POST", &format!("{commands}PING")]),
        "{\"answer\":\"PONG\"}\n\n200 2",
        "h2c with prior knowledge"
    );
    assert_eq!(
        run(&curl, &["-d", "x", &format!("{commands}FLY")]),
        "{\"error\":{\"code\":\"unknown-command\",\"detail\":\"FLY\"}}\n\n404 1.1"
    );
    assert_eq!(
        run(&curl, &["-d", "one two", &format!("{commands}PING")]),
        "{\"error\":{\"code\":\"bad-argument\",\"detail\":\"PING takes no argument\"}}\n\n400 1.1"
    );
    assert_eq!(run(&curl, &["-d", "hi", &url("/v1/topics/news")]), "{\"answer\":\"0\"}\n\n200 1.1");
    // A head past its bound is refused, whatever the request (the line's bound on memory).
    let big = format!("x-big: {}", "x".repeat(40_000));
    for version in ["--http1.1", "--http2-prior-knowledge"] {
        let refused = run(&curl, &[version, "-H", &big, "-X", "POST", &format!("{commands}PING")]);
        assert!(refused.ends_with("\n431 1.1") || refused.ends_with("\n431 2"), "{version}: {refused}");
    }
    // PRIMES, through the same queue and pool as a line's, if the project still has it.
    if request(addr, "PRIMES 10") == "OK 4\n" {
        assert_eq!(
            run(&curl, &["-d", "1000000", &format!("{commands}PRIMES")]),
            "{\"answer\":\"78498\"}\n\n200 1.1"
        );
    }
    signal(&child, "TERM");
    assert!(wait(&mut child).success());
}

#[test]
fn curl_follows_a_topic_as_server_sent_events_until_shutdown_ends_the_stream_cleanly() {
    let Some(curl) = curl() else { return };
    let (mut server, addr, http) = start_http(&[]);
    let mut events = Command::new(&curl)
        .args(["--silent", "--show-error", "--no-buffer", "--max-time", "20"])
        .arg(format!("http://{http}/v1/topics/news/events"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run curl");
    let lines = Log::lines_of(events.stdout.take().expect("stdout piped"));
    // Published once the subscription is in (the answer counts it), from the line port and over
    // HTTP: both reach the event stream.
    let deadline = Instant::now() + PATIENCE;
    while request(addr, "PUBLISH news first") != "OK 1\n" {
        assert!(Instant::now() < deadline, "the event stream never subscribed");
        std::thread::sleep(Duration::from_millis(20));
    }
    lines.wait_for("event: MSG");
    lines.wait_for("data: first");
    assert_eq!(
        run(&curl, &["-d", "second", &format!("http://{http}/v1/topics/news")]),
        "{\"answer\":\"1\"}\n\n200 1.1"
    );
    lines.wait_for("event: MSG");
    lines.wait_for("data: second");
    // Shutdown ends the stream: curl sees its end, not a cut connection.
    signal(&server, "TERM");
    assert!(wait(&mut server).success());
    let status = wait(&mut events);
    assert!(status.success(), "curl saw the event stream cut, not ended: {status}");
}

#[cfg(feature = "tls")]
#[test]
fn curl_is_answered_over_tls_with_http_2_by_alpn() {
    let Some(curl) = curl() else { return };
    let pki = Pki::new();
    let [cert, key, ca] =
        [&pki.server.cert, &pki.server.key, &pki.ca_cert].map(|path| path.to_str().expect("UTF-8"));
    let (mut child, _, http) = start_http(&["--tls-cert", cert, "--tls-key", key]);
    let url = format!("https://localhost:{}/v1/commands/PING", http.port());
    assert_eq!(
        run(&curl, &["--cacert", ca, "--http2", "-X", "POST", &url]),
        "{\"answer\":\"PONG\"}\n\n200 2"
    );
    assert_eq!(
        run(&curl, &["--cacert", ca, "--http1.1", "-X", "POST", &url]),
        "{\"answer\":\"PONG\"}\n\n200 1.1"
    );
    signal(&child, "TERM");
    assert!(wait(&mut child).success());
}

/// A peer that trickles a request's head, a byte every 100 ms, on a thread of its own; it ends
/// when the server has closed the connection (a write fails), and returns how long that took.
fn loris(http: SocketAddr) -> std::thread::JoinHandle<Duration> {
    let stream = TcpStream::connect_timeout(&http, PATIENCE).expect("connect");
    let started = Instant::now();
    std::thread::spawn(move || {
        for byte in b"POST /v1/commands/PING HTTP/1.1\r\n".iter().cycle() {
            if (&stream).write_all(&[*byte]).is_err() || started.elapsed() > PATIENCE {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        started.elapsed()
    })
}

#[test]
fn a_slow_loris_holding_every_slot_is_cut_at_the_idle_timeout_and_curl_gets_in() {
    let Some(curl) = curl() else { return };
    let (mut child, _, http) = start_http(&["--max-connections", "4", "--idle-timeout", "1s"]);
    let lorises: Vec<_> = (0..4).map(|_| loris(http)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let url = format!("http://{http}/v1/commands/PING");
    // Every slot is taken: a new connection is refused at once, not left waiting.
    let refused = run(&curl, &["-X", "POST", &url]);
    assert!(refused.ends_with("503 1.1") && refused.contains("\"busy\""), "{refused}");
    // Trickling does not push the deadline back: each loris is closed about a second in.
    for loris in lorises {
        let cut = loris.join().expect("the loris's thread");
        assert!(cut >= Duration::from_secs(1) && cut < Duration::from_secs(3), "cut after {cut:?}");
    }
    assert_eq!(run(&curl, &["-X", "POST", &url]), "{\"answer\":\"PONG\"}\n\n200 1.1");
    signal(&child, "TERM");
    assert!(wait(&mut child).success());
}

#[test]
fn an_event_reader_that_stops_reading_gets_lag_and_never_holds_up_the_publisher() {
    let (mut child, addr, http) =
        start_http(&["--topic-capacity", "8", "--send-buffer", "4096", "--write-timeout", "30s"]);
    // A reader with a small receive buffer, so that the kernel's buffers fill soon.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect_timeout(&http.into(), PATIENCE).expect("connect");
    let reader: TcpStream = socket.into();
    reader.set_read_timeout(Some(PATIENCE)).expect("a read timeout");
    (&reader).write_all(b"GET /v1/topics/flood/events HTTP/1.1\r\nHost: test\r\n\r\n").expect("send");
    let mut reader = BufReader::new(reader);
    let mut line = String::new();
    reader.read_line(&mut line).expect("the status line");
    assert_eq!(line, "HTTP/1.1 200 OK\r\n");
    // The reader reads nothing more while 2,000 messages of 1,000 bytes go out (about 2 MB, far
    // past every buffer): the publisher is answered every time, at once.
    let text = "x".repeat(1000);
    let publisher = TcpStream::connect_timeout(&addr, PATIENCE).expect("connect");
    publisher.set_read_timeout(Some(PATIENCE)).expect("a read timeout");
    let started = Instant::now();
    let burst: String = (0..2000).map(|_| format!("PUBLISH flood {text}\n")).collect();
    (&publisher).write_all(burst.as_bytes()).expect("publish");
    let mut answers = BufReader::new(&publisher);
    for _ in 0..2000 {
        line.clear();
        answers.read_line(&mut line).expect("an answer");
        assert_eq!(line, "OK 1\n");
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "the publisher waited {took:?}");
    // Now it reads: what it missed is told as LAG, not kept for it.
    let deadline = Instant::now() + PATIENCE;
    loop {
        line.clear();
        reader.read_line(&mut line).expect("an event");
        if line == "event: LAG\n" {
            break;
        }
        assert!(Instant::now() < deadline, "no LAG event");
    }
    // Gone before shutdown: a peer that does not read holds a drain up to the grace period.
    drop(reader);
    signal(&child, "TERM");
    assert!(wait(&mut child).success());
}

/// `curl` sending `body` to `url` in the background ([`command`]), its output piped.
fn curl_in_background(curl: &Path, body: &str, url: &str) -> Child {
    command(curl, &["-d", body, url]).stdout(Stdio::piped()).spawn().expect("run curl")
}

/// What a background `curl` printed, once it has ended.
fn printed(mut curl: Child) -> String {
    assert!(wait(&mut curl).success(), "curl failed");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut curl.stdout.take().expect("stdout piped"), &mut out).expect("read");
    out
}

#[test]
fn at_shutdown_a_request_in_flight_is_answered_and_one_past_the_grace_period_gets_503() {
    let Some(curl) = curl() else { return };
    let (mut child, addr, http) = start_http(&["--shutdown-grace", "1s"]);
    // SLEEP (an example) stands for a slow request, if the project still has it.
    if request(addr, "SLEEP 0") != "OK 0\n" {
        signal(&child, "TERM");
        assert!(wait(&mut child).success());
        return;
    }
    let url = format!("http://{http}/v1/commands/SLEEP");
    let (finishing, cut) = (curl_in_background(&curl, "300", &url), curl_in_background(&curl, "5000", &url));
    std::thread::sleep(Duration::from_millis(100));
    signal(&child, "TERM");
    assert_eq!(printed(finishing), "{\"answer\":\"300\"}\n\n200 1.1", "finished within the grace period");
    assert_eq!(
        printed(cut),
        "{\"error\":{\"code\":\"shutting-down\",\"detail\":null}}\n\n503 1.1",
        "answered at its end"
    );
    assert!(wait(&mut child).success());
}
