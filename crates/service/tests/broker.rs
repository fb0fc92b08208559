//! Fan-out across replicas: two service processes (the real binary) on one real Redis, which
//! each test starts on a free loopback port with a directory of its own, and stops.
//!
//! Without `redis-server` (Debian's `redis-server` package) the tests that need it say once that
//! they were skipped, and pass; under `CI=true` they fail instead, so CI cannot skip them unseen.
#![cfg(unix)]
#![expect(
    clippy::disallowed_methods,
    reason = "tests that start and wait on child processes, with a runtime of their own for the clients"
)]

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use service::Client;

mod common;

use common::{BINARY, PATIENCE};

/// `redis-server`, if installed (see [`common::required_program`]).
fn redis_server() -> Option<PathBuf> {
    common::required_program("redis-server", "redis-server", "fan-out broker tests")
}

/// A free loopback port (bound, then released for the child to take).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).expect("a free port").port()
}

/// A `redis-server` of the test's own: loopback, no persistence, its own directory.
struct Redis {
    child: Child,
    port: u16,
    dir: PathBuf,
    binary: PathBuf,
    password: Option<&'static str>,
}

impl Redis {
    fn start(binary: PathBuf, password: Option<&'static str>) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("broker-test-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory for redis-server");
        let child = Self::spawn(&binary, port, &dir, password);
        let redis = Self { child, port, dir, binary, password };
        redis.wait_until_up();
        redis
    }

    fn spawn(binary: &PathBuf, port: u16, dir: &PathBuf, password: Option<&str>) -> Child {
        let mut command = Command::new(binary);
        command.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        command.arg("--dir").arg(dir);
        if let Some(password) = password {
            command.args(["--requirepass", password]);
        }
        command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start redis-server")
    }

    fn url(&self) -> String {
        match self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Waits until the server takes connections.
    fn wait_until_up(&self) {
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills it outright (SIGKILL: no goodbye to its clients but the kernel's).
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port.
    fn restart(&mut self) {
        self.child = Self::spawn(&self.binary, self.port, &self.dir, self.password);
        self.wait_until_up();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A service process; killed if the test ends without stopping it.
struct Replica {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl Replica {
    fn start(fanout_url: &str) -> Self {
        let mut child = Command::new(BINARY)
            .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--cpu-threads", "1"])
            .args(["--fanout-url", fanout_url, "--max-connections", "256"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the binary");
        let mut stderr = BufReader::new(child.stderr.take().expect("piped"));
        let mut line = String::new();
        let deadline = Instant::now() + PATIENCE;
        while !line.contains("listening") {
            line.clear();
            assert!(
                stderr.read_line(&mut line).expect("read stderr") > 0 && Instant::now() < deadline,
                "no listening line"
            );
        }
        let field = |name: &str| -> SocketAddr {
            let value =
                line.split(&format!("{name}=")).nth(1).and_then(|rest| rest.split_whitespace().next());
            value.and_then(|addr| addr.parse().ok()).unwrap_or_else(|| panic!("no {name} in {line}"))
        };
        let (addr, admin) = (field("local_addr"), field("admin_addr"));
        // Keep reading stderr, so that a full pipe never holds the service up.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Self { child, addr, admin }
    }

    /// SIGTERM, and the exit status (0 for a graceful shutdown).
    fn stop(mut self) -> Option<i32> {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                return status.code();
            }
            assert!(Instant::now() < deadline, "the replica did not stop");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// One `/metrics` sample's value (classic format).
    fn metric(&self, name: &str) -> f64 {
        let mut stream =
            TcpStream::connect_timeout(&self.admin, PATIENCE).expect("connect to the admin port");
        stream.set_read_timeout(Some(PATIENCE)).expect("a read timeout");
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n").expect("send");
        let mut text = String::new();
        stream.read_to_string(&mut text).expect("read the metrics");
        let prefix = format!("{}_{name} ", env!("CARGO_PKG_NAME").replace('-', "_"));
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in /metrics"))
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime")
}

async fn client(addr: SocketAddr) -> Client {
    Client::connect(addr, PATIENCE, PATIENCE).await.expect("connect to a replica")
}

/// Publishes `probe` on `topic` from `publisher` until the broker says `replicas` replicas
/// subscribe to it: from then on, every subscriber on them gets every message.
async fn until_subscribed_everywhere(publisher: &mut Client, topic: &str, replicas: u64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while publisher.request(&format!("PUBLISH {topic} probe")).await.expect("an answer")
        != format!("OK {replicas}")
    {
        assert!(tokio::time::Instant::now() < deadline, "the replicas did not subscribe in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// 50 subscribers spread over two replicas, 5 publishers on both, 1,000 messages each: every
/// subscriber accounts for every message (received + missed = published), and receives each
/// publisher's messages in the order published, pipelined as they were.
#[test]
fn two_replicas_on_one_redis_are_one_service_for_fan_out() {
    let Some(binary) = redis_server() else { return };
    let redis = Redis::start(binary, None);
    let replicas = [Replica::start(&redis.url()), Replica::start(&redis.url())];
    let (addrs, publishers, messages) = ([replicas[0].addr, replicas[1].addr], 5, 1000);
    runtime().block_on(async {
        let mut subscribers = tokio::task::JoinSet::new();
        let mut clients = Vec::new();
        for index in 0..50 {
            let mut subscriber = client(addrs[index % 2]).await;
            assert_eq!(subscriber.request("SUBSCRIBE news").await.unwrap(), "OK 1");
            clients.push(subscriber);
        }
        let mut prober = client(addrs[0]).await;
        until_subscribed_everywhere(&mut prober, "news", 2).await;
        for mut subscriber in clients {
            subscribers.spawn(async move {
                // Per publisher: the last sequence number seen, and messages received or missed.
                let (mut last, mut accounted) = (HashMap::<String, u64>::new(), 0);
                while accounted < publishers * messages {
                    let line = subscriber.next_push(Some(PATIENCE)).await.expect("a pushed line");
                    let words: Vec<&str> = line.split(' ').collect();
                    match words[..] {
                        ["MSG", "news", "probe"] => {}
                        ["MSG", "news", from, sequence] => {
                            let sequence: u64 = sequence.parse().unwrap();
                            let previous = last.insert(from.to_owned(), sequence);
                            assert!(
                                previous.is_none_or(|previous| previous < sequence),
                                "{from} out of order: {line}"
                            );
                            accounted += 1;
                        }
                        ["LAG", "news", missed] => accounted += missed.parse::<u64>().unwrap(),
                        _ => panic!("unexpected {line:?}"),
                    }
                }
                assert_eq!(accounted, publishers * messages);
            });
        }
        let mut sending = tokio::task::JoinSet::new();
        for publisher in 0..publishers {
            let mut client = client(addrs[publisher as usize % 2]).await;
            sending.spawn(async move {
                for batch in 0..messages / 100 {
                    let lines: Vec<String> =
                        (0..100).map(|i| format!("PUBLISH news p{publisher} {}", batch * 100 + i)).collect();
                    for answer in client.pipeline(lines.iter().map(String::as_str)).await.unwrap() {
                        assert_eq!(answer, "OK 2", "both replicas subscribe");
                    }
                }
            });
        }
        tokio::time::timeout(PATIENCE * 3, sending.join_all()).await.expect("every PUBLISH answered");
        tokio::time::timeout(PATIENCE * 3, subscribers.join_all()).await.expect("every subscriber accounted");
    });
    for replica in replicas {
        assert_eq!(replica.stop(), Some(0));
    }
}

/// The broker killed mid-stream and started again: PING and STATS are answered throughout on
/// both replicas (the binary has no command of the tests' own, and the examples may be gone), PUBLISH is refused at once during the outage, every subscriber is told of the
/// gap, and delivery resumes within 2 s of the broker being back.
#[test]
fn a_broker_outage_costs_only_publish_and_is_announced() {
    let Some(binary) = redis_server() else { return };
    let mut redis = Redis::start(binary, None);
    let replicas = [Replica::start(&redis.url()), Replica::start(&redis.url())];
    let addrs = [replicas[0].addr, replicas[1].addr];
    runtime().block_on(async {
        let mut subscribers = Vec::new();
        for addr in addrs {
            let mut subscriber = client(addr).await;
            assert_eq!(subscriber.request("SUBSCRIBE news").await.unwrap(), "OK 1");
            subscribers.push(subscriber);
        }
        let mut publisher = client(addrs[0]).await;
        until_subscribed_everywhere(&mut publisher, "news", 2).await;
        redis.kill();
        // Once the replica has seen the loss (at once: the kernel closes the connection).
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !publisher.request("PUBLISH news during").await.unwrap().starts_with("ERR unavailable") {
            assert!(tokio::time::Instant::now() < deadline, "PUBLISH was never refused");
        }
        let started = tokio::time::Instant::now();
        for _ in 0..1000 {
            let answer = publisher.request("PUBLISH news during").await.unwrap();
            assert_eq!(answer, "ERR unavailable PUBLISH: the fan-out broker is out of reach");
        }
        println!("1,000 PUBLISH refused in {:?} during the outage", started.elapsed());
        for addr in addrs {
            let mut other = client(addr).await;
            assert_eq!(other.request("PING").await.unwrap(), "OK PONG");
            assert!(other.request("STATS").await.unwrap().starts_with("OK connections="));
            assert_eq!(other.request("SUBSCRIBE more").await.unwrap(), "OK 1", "subscribing works too");
        }
        assert_eq!(replicas[0].metric("fanout_broker_up"), 0.0);
        redis.restart();
        let back = tokio::time::Instant::now();
        // Every subscriber is told of the gap, then gets what is published after it.
        let deadline = back + PATIENCE;
        loop {
            let answer = publisher.request("PUBLISH news after").await.unwrap();
            if answer == "OK 2" {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "delivery did not resume: {answer}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let resumed = back.elapsed();
        println!("delivery resumed {resumed:?} after the broker was back");
        assert!(resumed < Duration::from_secs(2), "resumed after {resumed:?}");
        for subscriber in &mut subscribers {
            let mut lines = Vec::new();
            loop {
                let line = subscriber.next_push(Some(PATIENCE)).await.unwrap();
                if line == "MSG news after" {
                    break;
                }
                lines.push(line);
            }
            let gaps = lines.iter().filter(|line| *line == "GAP news").count();
            assert_eq!(gaps, 1, "one GAP line for the outage: {lines:?}");
            assert!(!lines.iter().any(|line| line == "MSG news during"), "{lines:?}");
        }
    });
    assert_eq!(replicas[0].metric("fanout_broker_up"), 1.0);
    assert_eq!(replicas[0].metric("fanout_reconnects_total"), 1.0);
    for replica in replicas {
        assert_eq!(replica.stop(), Some(0));
    }
}

/// A broker that does not answer at start, or refuses the password: the service does not start,
/// and says why in one line that names the flag (exit status 1, as for a port it cannot bind).
/// A bad URL is a usage error (status 2).
#[test]
fn start_up_refuses_a_broker_it_cannot_use() {
    let try_start = |url: &str| {
        let output = Command::new(BINARY)
            .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--fanout-url", url])
            .stdin(Stdio::null())
            .output()
            .expect("run the binary");
        (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let (status, stderr) = try_start(&format!("redis://127.0.0.1:{}", free_port()));
    assert_eq!(status, Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: --fanout-url redis://127.0.0.1:") && stderr.lines().count() == 1,
        "{stderr}"
    );
    let (status, stderr) = try_start("http://127.0.0.1:6379");
    assert_eq!(status, Some(2), "{stderr}");
    assert!(stderr.contains("--fanout-url") && stderr.lines().count() == 1, "{stderr}");
    let Some(binary) = redis_server() else { return };
    let redis = Redis::start(binary, Some("right"));
    let (status, stderr) = try_start(&format!("redis://:wrong@127.0.0.1:{}", redis.port));
    assert_eq!(status, Some(1), "{stderr}");
    assert!(stderr.contains("--fanout-url redis://:***@127.0.0.1") && !stderr.contains("wrong"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let replica = Replica::start(&redis.url());
    assert_eq!(replica.stop(), Some(0), "the right password works");
}
