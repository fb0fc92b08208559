//! Shared test helpers: the patterns to copy when you test your own commands.
//!
//! Two kinds of test, two kinds of helper:
//!
//! * **Paused time** ([`Harness`], [`Peer`]): the service runs on a `current_thread` runtime with
//!   `start_paused = true`, and each connection is a `tokio::io::duplex` pair. When every task is
//!   waiting, tokio jumps the clock to the next timer ("auto-advance", see
//!   `tokio::time::pause`), so a 30-second timeout takes microseconds and fires at an exact,
//!   repeatable virtual instant. Two rules keep that sound:
//!   - *Only in-memory streams.* A real socket is I/O the runtime cannot see into: while a read
//!     waits on the kernel the runtime looks idle, auto-advance jumps the clock, and a timeout fires
//!     although the bytes were on their way. `duplex` streams are plain tokio tasks' memory.
//!   - *Drive time with `sleep`, not `advance`.* `sleep` lets every other task run up to the same
//!     instant; `advance` moves the clock under tasks that have not had their turn.
//!
//!   Work on other threads (the rayon pool) looks idle in the same way, so paused-time tests use
//!   jobs that wait on tokio timers, and CPU jobs are tested on real time.
//! * **Real time** ([`TestServer`]): the real server on `127.0.0.1:0` (loopback only, a port the
//!   OS picks), reached with the real [`Client`], or with a raw [`Peer`] from
//!   [`TestServer::connect`]. Every wait is bounded by [`TEST_TIMEOUT`], so a bug fails the test
//!   instead of hanging it.
//!
//! Both answer the registry and the tests' own [`commands`] (`WAIT`, `SPIN`), so the tests name
//! no example command.

pub mod bench_report;
pub mod commands;
#[cfg(feature = "tls")]
#[cfg_attr(not(feature = "tls"), path = "part_left_out.rs")]
pub mod pki;

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use futures_util::StreamExt as _;
#[cfg(feature = "tls")]
use service::ClientError;
use service::shutdown::Shutdown;
#[cfg(feature = "tls")]
use service::tls::ClientTls;
use service::tls::Reloader;
use service::{App, Client, Config, Server};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, DuplexStream, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, LinesCodec};

/// The bound on any wait in a real-time test.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest answer line a test peer accepts.
const MAX_ANSWER: usize = 64 * 1024;

/// A count for a [`Config`] field; panics on 0 (a test bug).
pub fn count(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("a count is at least 1")
}

/// Settings for tests: small and explicit, so each test states the bounds it relies on.
pub fn test_config() -> Config {
    Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        admin_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        idle_timeout: Duration::from_secs(10),
        write_timeout: Duration::from_secs(5),
        max_line: count(256),
        max_in_flight: count(32),
        queue_capacity: count(8),
        workers: count(2),
        job_timeout: Duration::from_secs(10),
        shutdown_grace: Duration::from_secs(10),
        cpu_threads: 2,
        ..Config::default()
    }
}

/// [`test_config`] serving TLS with `pki`'s server certificate; when `mutual`, every client must
/// present a certificate signed by `pki`'s CA.
#[cfg(feature = "tls")]
pub fn tls_config(pki: &pki::Pki, mutual: bool) -> Config {
    Config {
        tls_cert: Some(pki.server.cert.clone()),
        tls_key: Some(pki.server.key.clone()),
        tls_client_ca: mutual.then(|| pki.ca_cert.clone()),
        ..test_config()
    }
}

/// The certificate the server showed to a TLS client (DER).
#[cfg(feature = "tls")]
pub fn server_certificate<S>(client: &Client<tokio_rustls::client::TlsStream<S>>) -> Vec<u8> {
    let connection = client.get_ref().expect("an open client").get_ref().1;
    let chain = connection.peer_certificates().expect("the server showed a certificate");
    chain[0].to_vec()
}

/// The service without a listener, fed `duplex` connections. For paused-time tests.
pub struct Harness {
    /// The running service.
    pub app: App,
}

impl Harness {
    /// Starts the service. Call it inside the test's runtime.
    pub fn start(config: &Config) -> Self {
        Self { app: App::start_with(config, commands::commands()).expect("valid test config") }
    }

    /// Opens a connection whose pipe holds at most `buffer` bytes each way (a small buffer makes
    /// a peer that does not read block the server's writes quickly).
    pub fn connect_with_buffer(&self, buffer: usize) -> Peer {
        let (client, server) = tokio::io::duplex(buffer);
        self.app.spawn_connection(server, "duplex", None);
        Peer::new(client, None)
    }

    /// Opens a connection with a roomy pipe.
    pub fn connect(&self) -> Peer {
        self.connect_with_buffer(64 * 1024)
    }

    /// Opens a connection whose pipe holds `buffer` bytes each way, and shakes hands over it
    /// with `tls` (to a [`tls_config`] service), without a bound: see [`Peer`].
    #[cfg(feature = "tls")]
    pub async fn connect_tls(
        &self,
        tls: &ClientTls,
        buffer: usize,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<DuplexStream>> {
        let (client, server) = tokio::io::duplex(buffer);
        self.app.spawn_connection(server, "duplex", None);
        tls.handshake(client, tls.server_name_for("localhost:0")?).await
    }

    /// Shuts the service down (drain, grace, abort) and waits until every task has ended.
    pub async fn stop(self) {
        self.app.stop().await;
    }
}

/// The client end of a connection, speaking raw bytes: it can send what no well-behaved client
/// would (partial lines, invalid UTF-8). Over `duplex` (from [`Harness`]) its waits are unbounded,
/// since paused time fires any timeout the moment the test waits; over TCP (from
/// [`TestServer::connect`]) each wait is bounded by [`TEST_TIMEOUT`].
pub struct Peer<S = DuplexStream> {
    answers: FramedRead<ReadHalf<S>, LinesCodec>,
    writer: WriteHalf<S>,
    patience: Option<Duration>,
}

impl Peer<TcpStream> {
    /// A raw connection to a server on real time at `addr` (a test server, or the binary in a
    /// process of its own), each wait bounded by [`TEST_TIMEOUT`].
    pub async fn tcp(addr: SocketAddr) -> Peer<TcpStream> {
        let stream = tokio::time::timeout(TEST_TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("connected in time")
            .expect("connect to the test server");
        Peer::new(stream, Some(TEST_TIMEOUT))
    }
}

impl<S: AsyncRead + AsyncWrite> Peer<S> {
    fn new(stream: S, patience: Option<Duration>) -> Self {
        let (reader, writer) = tokio::io::split(stream);
        let answers = FramedRead::new(reader, LinesCodec::new_with_max_length(MAX_ANSWER));
        Self { answers, writer, patience }
    }

    /// Splits into the answer stream and the writing half, to read and write concurrently.
    pub fn split(self) -> (FramedRead<ReadHalf<S>, LinesCodec>, WriteHalf<S>) {
        (self.answers, self.writer)
    }

    /// Sends raw bytes.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes).await
    }

    /// Half-closes: the server reads EOF, answers what it has, and closes.
    pub async fn finish(&mut self) -> std::io::Result<()> {
        self.writer.shutdown().await
    }

    /// The next answer line, or `None` once the server has closed the connection.
    pub async fn answer(&mut self) -> Option<String> {
        let next = self.answers.next();
        let line = match self.patience {
            Some(patience) => tokio::time::timeout(patience, next).await.expect("an answer or EOF in time"),
            None => next.await,
        };
        line.map(|line| line.expect("a well-formed answer line"))
    }

    /// Sends one request line and returns its answer.
    pub async fn request(&mut self, line: &str) -> Option<String> {
        self.send(format!("{line}\n").as_bytes()).await.ok()?;
        self.answer().await
    }
}

/// The real server on `127.0.0.1:0`, on real time. For end-to-end tests.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where its admin endpoints listen.
    pub admin_addr: SocketAddr,
    stats: std::sync::Arc<service::Stats>,
    health: tokio::sync::watch::Receiver<service::Health>,
    shutdown: Shutdown,
    /// With TLS: what reloads its certificate.
    pub tls_reloader: Option<Reloader>,
    task: JoinHandle<()>,
}

impl TestServer {
    /// Binds a loopback port and serves on a task of this runtime.
    pub fn start(config: Config) -> Self {
        assert!(
            config.listen.ip().is_loopback() && config.admin_listen.ip().is_loopback(),
            "tests reach only loopback"
        );
        let server = Server::bind_with(&config, commands::commands()).expect("bind a loopback port");
        let addr = server.local_addr();
        let admin_addr = server.admin_addr();
        let stats = std::sync::Arc::clone(server.stats());
        let shutdown = server.shutdown().clone();
        let health = server.watch_health();
        let tls_reloader = server.tls_reloader().cloned();
        let task = tokio::spawn(server.run());
        Self { addr, admin_addr, stats, health, shutdown, tls_reloader, task }
    }

    /// A raw connection: bytes out, answer lines in, each wait bounded by [`TEST_TIMEOUT`].
    pub async fn connect(&self) -> Peer<TcpStream> {
        Peer::tcp(self.addr).await
    }

    /// A connected client with [`TEST_TIMEOUT`] bounds.
    pub async fn client(&self) -> Client {
        Client::connect(self.addr, TEST_TIMEOUT, TEST_TIMEOUT).await.expect("connect to the test server")
    }

    /// A client connected over TLS with `tls`, with [`TEST_TIMEOUT`] bounds; the server's
    /// certificate must be for `127.0.0.1`.
    #[cfg(feature = "tls")]
    pub async fn tls_client(
        &self,
        tls: &ClientTls,
    ) -> Result<Client<tokio_rustls::client::TlsStream<TcpStream>>, ClientError> {
        Client::connect_tls(&self.addr.to_string(), tls, TEST_TIMEOUT, TEST_TIMEOUT).await
    }

    /// The server's counters.
    pub fn stats(&self) -> &service::Stats {
        &self.stats
    }

    /// The server's shutdown tokens.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// The server's health, as its admin endpoints see it.
    pub fn health(&self) -> service::Health {
        *self.health.borrow()
    }

    /// Starts a graceful shutdown and waits (bounded) until the server has finished.
    pub async fn stop(self) {
        self.shutdown.begin.cancel();
        tokio::time::timeout(TEST_TIMEOUT, self.task)
            .await
            .expect("the server stops within the test timeout")
            .expect("the server task does not panic");
    }
}

/// Polls `condition` every few milliseconds until it holds, failing after [`TEST_TIMEOUT`]. For
/// real-time tests that wait on the server's counters.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `GET path` from an admin listener over loopback: the status code and the body. One request
/// per connection (the admin listener does not keep connections alive); every wait bounded.
pub async fn admin_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let HttpResponse { status, body, .. } = admin_request(addr, "GET", path, &[]).await;
    (status, body)
}

/// An admin listener's answer, as [`admin_request`] reads it.
#[derive(Debug)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The status line and the headers.
    pub head: String,
    /// The body.
    pub body: String,
}

/// `METHOD path` with extra `headers` from an admin listener over loopback: the status code, the
/// response head (status line and headers) and the body; every wait bounded.
pub async fn admin_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    use tokio::io::AsyncReadExt as _;
    const MAX_RESPONSE: usize = 1 << 20;
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect to the admin listener");
        let extra: String = headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
        let request = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{extra}\r\n");
        stream.write_all(request.as_bytes()).await.expect("send the request");
        let mut response = Vec::new();
        while stream.read_buf(&mut response).await.expect("read the response") > 0 {
            assert!(response.len() <= MAX_RESPONSE, "an admin response over {MAX_RESPONSE} bytes");
        }
        response
    };
    let response = tokio::time::timeout(TEST_TIMEOUT, exchange).await.expect("an admin answer in time");
    let response = String::from_utf8(response).expect("a UTF-8 response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status line");
    HttpResponse { status, head: head.to_owned(), body: body.to_owned() }
}

/// Parses the text of `/metrics` (OpenMetrics or the classic format) into its samples
/// (`name{labels}` to value), failing on any line that is neither a comment nor a sample, a value
/// that is not a number, or a series given twice.
pub fn parse_metrics(text: &str) -> std::collections::HashMap<String, f64> {
    let mut samples = std::collections::HashMap::new();
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line:?}"));
        let value = match value {
            "+Inf" => f64::INFINITY,
            value => value.parse().unwrap_or_else(|_| panic!("not a number in {line:?}")),
        };
        assert!(samples.insert(series.to_owned(), value).is_none(), "{series} twice");
    }
    samples
}

/// `count` clients subscribed to `topic` on the server at `addr`, each reading every pushed line
/// until `stop`, counting them in the returned counter: subscribers that keep up, for the
/// fan-out figures. Each connect and each answer is bounded by [`TEST_TIMEOUT`]. Join the set
/// after cancelling `stop`.
pub async fn reading_subscribers(
    addr: &str,
    count: usize,
    topic: &str,
    stop: &tokio_util::sync::CancellationToken,
) -> (tokio::task::JoinSet<()>, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let delivered = std::sync::Arc::new(AtomicU64::new(0));
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..count {
        let mut client = Client::connect(addr, TEST_TIMEOUT, TEST_TIMEOUT).await.expect("connect");
        assert_eq!(client.request(&format!("SUBSCRIBE {topic}")).await.expect("an answer"), "OK 1");
        let (stop, delivered) = (stop.clone(), std::sync::Arc::clone(&delivered));
        readers.spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    pushed = client.next_push(None) => match pushed {
                        Ok(_) => delivered.fetch_add(1, Ordering::Relaxed),
                        Err(_) => return,
                    },
                };
            }
        });
    }
    (readers, delivered)
}
