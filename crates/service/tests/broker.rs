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
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use service::Client;

use crate::common::{BINARY, PATIENCE, free_port};

/// `redis-server`, if installed (see [`crate::common::required_program`]).
pub(crate) fn redis_server() -> Option<PathBuf> {
    crate::common::required_program(
        "redis-server",
        "Debian: apt-get install redis-server",
        "fan-out broker tests",
    )
}

/// A `redis-server` of the test's own: loopback, no persistence, its own directory.
pub(crate) struct Redis {
    child: Child,
    port: u16,
    dir: PathBuf,
    binary: PathBuf,
    password: Option<&'static str>,
    /// More settings, each a flag and its words (`--user NAME RULES...`).
    settings: Vec<Vec<String>>,
}

impl Redis {
    pub(crate) fn start(binary: PathBuf, password: Option<&'static str>) -> Self {
        Self::with_settings(binary, password, |_| Vec::new())
    }

    /// Started with more settings, made for the port it listens on.
    fn with_settings(
        binary: PathBuf,
        password: Option<&'static str>,
        settings: impl Fn(u16) -> Vec<Vec<String>>,
    ) -> Self {
        // Another test may take the free port before redis-server binds it; that redis-server
        // exits at once (and a connect may reach the other test's listener), so another port.
        for _ in 0..3 {
            let port = free_port();
            let settings = settings(port);
            let dir = std::env::temp_dir().join(format!("broker-test-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("a directory for redis-server");
            let child = Self::spawn(&binary, port, &dir, password, &settings);
            let mut redis = Self { child, port, dir, binary: binary.clone(), password, settings };
            if redis.wait_until_up() {
                return redis;
            }
        }
        panic!("redis-server did not start on any of three free ports");
    }

    fn spawn(
        binary: &PathBuf,
        port: u16,
        dir: &PathBuf,
        password: Option<&str>,
        settings: &[Vec<String>],
    ) -> Child {
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
        for setting in settings {
            command.args(setting);
        }
        command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start redis-server")
    }

    pub(crate) fn url(&self) -> String {
        match self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Waits until the server takes connections; false if it exited instead (its port was
    /// taken). It must still run a moment after the port answers: one that lost the port exits
    /// as soon as it finds so.
    fn wait_until_up(&mut self) -> bool {
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if self.exited() {
                return false;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(100));
        !self.exited()
    }

    fn exited(&mut self) -> bool {
        self.child.try_wait().expect("redis-server's status").is_some()
    }

    /// Sends it one command as `user` (RESP, by hand: the tests need no Redis client) and
    /// returns the first line of the answer.
    fn command(&self, user: Option<(&str, &str)>, words: &[&[u8]]) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis-server");
        stream.set_read_timeout(Some(PATIENCE)).expect("a read timeout");
        let mut request = Vec::new();
        let mut encode = |words: &[&[u8]]| {
            request.extend(format!("*{}\r\n", words.len()).into_bytes());
            for word in words {
                request.extend(format!("${}\r\n", word.len()).into_bytes());
                request.extend(*word);
                request.extend(b"\r\n");
            }
        };
        if let Some((name, password)) = user {
            encode(&[b"AUTH", name.as_bytes(), password.as_bytes()]);
        }
        encode(words);
        stream.write_all(&request).expect("send to redis-server");
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        if user.is_some() {
            reader.read_line(&mut line).expect("the AUTH answer");
            assert_eq!(line, "+OK\r\n", "AUTH");
            line.clear();
        }
        reader.read_line(&mut line).expect("an answer from redis-server");
        line.trim_end().to_owned()
    }

    /// Stops (SIGSTOP) or resumes (SIGCONT) it: a broker that hangs, not one that is gone.
    fn signal(&self, name: &str) {
        crate::common::signal(&self.child, name);
    }

    /// Kills it outright (SIGKILL: no goodbye to its clients but the kernel's).
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port.
    fn restart(&mut self) {
        self.child = Self::spawn(&self.binary, self.port, &self.dir, self.password, &self.settings);
        assert!(self.wait_until_up(), "redis-server did not start again on its port");
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
        Self::with_flags(fanout_url, &[])
    }

    fn with_flags(fanout_url: &str, flags: &[&str]) -> Self {
        let fanout = ["--fanout-url", fanout_url, "--max-connections", "256"];
        let (child, addr, admin) = crate::common::start(&[&fanout[..], flags].concat());
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

    /// One `/metrics` sample's value (classic format): `name` is the sample's name without the
    /// program's prefix, and its labels (`fanout_refused_total{reason="not_text"}`).
    fn metric(&self, name: &str) -> f64 {
        crate::common::metric(self.admin, name)
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

/// `serve` with `args` on loopback, run to its end: its exit status and stderr (for settings
/// it refuses at start).
fn try_start(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(BINARY)
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run the binary");
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// A broker that does not answer at start, or refuses the password: the service does not start,
/// and says why in one line that names the flag (exit status 1, as for a port it cannot bind).
/// A bad URL is a usage error (status 2).
#[test]
fn start_up_refuses_a_broker_it_cannot_use() {
    let (status, stderr) = try_start(&["--fanout-url", &format!("redis://127.0.0.1:{}", free_port())]);
    assert_eq!(status, Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: --fanout-url redis://127.0.0.1:") && stderr.lines().count() == 1,
        "{stderr}"
    );
    let (status, stderr) = try_start(&["--fanout-url", "http://127.0.0.1:6379"]);
    assert_eq!(status, Some(2), "{stderr}");
    assert!(stderr.contains("--fanout-url") && stderr.lines().count() == 1, "{stderr}");
    // A URL that does not parse is still shown without its password.
    for bad in ["redis://app:s3cret@127.0.0.1:notaport", "redis://app:s3cret@127.0.0.1:1/notadb"] {
        let (status, stderr) = try_start(&["--fanout-url", bad]);
        assert_eq!(status, Some(2), "{stderr}");
        assert!(stderr.contains("app:***@") && !stderr.contains("s3cret"), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    let Some(binary) = redis_server() else { return };
    let redis = Redis::start(binary, Some("right"));
    let (status, stderr) = try_start(&["--fanout-url", &format!("redis://:wrong@127.0.0.1:{}", redis.port)]);
    assert_eq!(status, Some(1), "{stderr}");
    assert!(stderr.contains("--fanout-url redis://:***@127.0.0.1") && !stderr.contains("wrong"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let replica = Replica::start(&redis.url());
    assert_eq!(replica.stop(), Some(0), "the right password works");
}

/// The channel of `topic` for a replica on database `db` with the default prefix.
fn channel(db: u32, topic: &str) -> Vec<u8> {
    format!("{}:{db}:{topic}", env!("CARGO_PKG_NAME")).into_bytes()
}

/// Reads pushed lines until `last`, and returns those before it.
async fn pushes_until(subscriber: &mut Client, last: &str) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let line = subscriber.next_push(Some(PATIENCE)).await.expect("a pushed line");
        if line == last {
            return lines;
        }
        lines.push(line);
    }
}

/// Whatever another program publishes on the broker becomes at most one `MSG` line, and only
/// one a local PUBLISH could have sent: a message without an origin, with a line break, a
/// control character or bytes that are not UTF-8 is told as `LAG` and counted, and the
/// subscriber's answers stay in step.
#[test]
fn the_broker_s_messages_are_checked_like_a_client_s_line() {
    let Some(binary) = redis_server() else { return };
    let redis = Redis::start(binary, None);
    let replica = Replica::start(&redis.url());
    runtime().block_on(async {
        let mut subscriber = client(replica.addr).await;
        assert_eq!(subscriber.request("SUBSCRIBE news").await.unwrap(), "OK 1");
        let mut publisher = client(replica.addr).await;
        until_subscribed_everywhere(&mut publisher, "news", 1).await;
        let publish = |channel: &[u8], message: &[u8]| redis.command(None, &[b"PUBLISH", channel, message]);
        let news = channel(0, "news");
        assert_eq!(publish(&news, b"hello\nOK 42\nERR busy fake"), ":1", "no origin");
        assert_eq!(publish(&news, b"1.1 hello\nOK 42"), ":1", "a line break");
        assert_eq!(publish(&news, b"1.1 \x1b[2J"), ":1", "a control character");
        let invalid = [b"1.1 ".as_slice(), &[0xFF; 1024]].concat();
        assert_eq!(publish(&news, &invalid), ":1", "not UTF-8");
        assert_eq!(publish(b"news", b"1.1 bare"), ":0", "the bare topic is nobody's channel");
        assert_eq!(publish(&news, b"1.1 fine, thanks"), ":1");
        let lines = pushes_until(&mut subscriber, "MSG news fine, thanks").await;
        let lags: Vec<&str> =
            lines.iter().map(String::as_str).filter(|line| *line != "MSG news probe").collect();
        assert_eq!(lags, ["LAG news 1"; 4], "{lines:?}");
        assert_eq!(subscriber.request("PING").await.unwrap(), "OK PONG", "answers stay in step");
    });
    assert_eq!(replica.metric("fanout_refused_total{reason=\"malformed\"}"), 1.0);
    assert_eq!(replica.metric("fanout_refused_total{reason=\"not_text\"}"), 3.0);
    assert!(replica.metric("fanout_published_total") >= 1.0, "the probes went through the broker");
    assert_eq!(replica.stop(), Some(0));
}

/// The ACL line of `deploy/README.md`, for the user `service` and the prefix of database 1.
fn acl_user(password: &str) -> Vec<String> {
    let rules = format!(
        "service on >{password} resetchannels &{}:1:* -@all +hello +auth +ping +select +subscribe \
         +unsubscribe +publish",
        env!("CARGO_PKG_NAME")
    );
    std::iter::once("--user".to_owned()).chain(rules.split(' ').map(str::to_owned)).collect()
}

/// Deployments on one Redis stay apart: a replica on another database does not hear them
/// (pub/sub ignores databases, the prefix does not), and a user outside the service's ACL
/// cannot publish on its channels, while the service runs under that ACL alone.
#[test]
fn deployments_on_one_redis_hear_only_their_own_channels() {
    let Some(binary) = redis_server() else { return };
    let other =
        ["--user", "other", "on", ">pw2", "resetchannels", "&other:*", "+@all"].map(str::to_owned).to_vec();
    let redis = Redis::with_settings(binary, None, |_| vec![acl_user("pw1"), other.clone()]);
    let url = |user: &str, db: u32| format!("redis://{user}@127.0.0.1:{}/{db}", redis.port);
    let ours = Replica::start(&url("service:pw1", 1));
    let theirs = Replica::start(&url("other:pw2", 2));
    runtime().block_on(async {
        let mut subscriber = client(ours.addr).await;
        assert_eq!(subscriber.request("SUBSCRIBE news").await.unwrap(), "OK 1");
        let mut publisher = client(ours.addr).await;
        until_subscribed_everywhere(&mut publisher, "news", 1).await;
        // Another deployment, with a prefix of its own: its PUBLISH reaches nobody here.
        let mut stranger = client(theirs.addr).await;
        let refused = stranger.request("PUBLISH news from another deployment").await.unwrap();
        assert!(refused == "OK 0" || refused.starts_with("ERR unavailable"), "{refused}");
        // A client outside the ACL cannot publish on our channels at all.
        let answer = redis.command(Some(("other", "pw2")), &[b"PUBLISH", &channel(1, "news"), b"1.1 forged"]);
        assert!(answer.starts_with("-NOPERM"), "{answer}");
        assert_eq!(publisher.request("PUBLISH news ours").await.unwrap(), "OK 1");
        let lines = pushes_until(&mut subscriber, "MSG news ours").await;
        assert!(lines.iter().all(|line| line == "MSG news probe"), "{lines:?}");
    });
    assert_eq!(ours.stop(), Some(0));
    assert_eq!(theirs.stop(), Some(0));
}

/// A publisher on one replica costs another no more deliveries a second than its budget, even
/// where nobody subscribes on its own replica: the other replica charges it on arrival.
#[test]
fn a_publisher_s_budget_holds_on_every_replica_its_messages_reach() {
    let Some(binary) = redis_server() else { return };
    let redis = Redis::start(binary, None);
    let budget = 2000;
    let flag = budget.to_string();
    let flags = ["--publish-budget", flag.as_str()];
    let (a, b) = (Replica::with_flags(&redis.url(), &flags), Replica::with_flags(&redis.url(), &flags));
    let subscribers = 20;
    let (window, delivered) = runtime().block_on(async {
        let mut readers = Vec::new();
        for _ in 0..subscribers {
            let mut subscriber = client(b.addr).await;
            assert_eq!(subscriber.request("SUBSCRIBE flood").await.unwrap(), "OK 1");
            readers.push(subscriber);
        }
        let mut publisher = client(a.addr).await;
        until_subscribed_everywhere(&mut publisher, "flood", 1).await;
        // Let the probes' cost settle, then flood from A for a second, pipelined.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = b.metric("messages_delivered_total");
        let started = Instant::now();
        let lines: Vec<String> = (0..100).map(|i| format!("PUBLISH flood {i}")).collect();
        while started.elapsed() < Duration::from_secs(1) {
            publisher.pipeline(lines.iter().map(String::as_str)).await.expect("answers");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        (started.elapsed(), b.metric("messages_delivered_total") - before)
    });
    let allowed = budget as f64 * window.as_secs_f64() + budget as f64 / 10.0;
    println!("B delivered {delivered} messages in {window:?} from one publisher on A (allowed {allowed:.0})");
    assert!(delivered <= allowed, "B delivered {delivered} in {window:?}, over {allowed:.0}");
    assert!(b.metric("fanout_refused_total{reason=\"over_budget\"}") > 0.0, "the flood was held");
    assert_eq!(a.stop(), Some(0));
    assert_eq!(b.stop(), Some(0));
}

/// A broker that hangs (SIGSTOP) is not one that is down: its connection stays open, and a
/// PUBLISH waits for its answer no longer than 250 ms before `ERR unavailable`.
#[test]
fn a_hung_broker_costs_a_publish_no_more_than_its_answer_timeout() {
    let Some(binary) = redis_server() else { return };
    let redis = Redis::start(binary, None);
    let replica = Replica::start(&redis.url());
    runtime().block_on(async {
        let mut publisher = client(replica.addr).await;
        until_subscribed_everywhere(&mut publisher, "news", 0).await;
        redis.signal("STOP");
        let mut slowest = Duration::ZERO;
        for _ in 0..20 {
            let started = Instant::now();
            let answer = publisher.request("PUBLISH news hung").await.unwrap();
            slowest = slowest.max(started.elapsed());
            assert!(answer.starts_with("ERR unavailable"), "{answer}");
        }
        println!("the slowest of 20 PUBLISHes to a hung broker took {slowest:?}");
        assert!(slowest < Duration::from_secs(1), "{slowest:?}");
        redis.signal("CONT");
        let deadline = Instant::now() + PATIENCE;
        while publisher.request("PUBLISH news after").await.unwrap() != "OK 0" {
            assert!(Instant::now() < deadline, "PUBLISH did not come back");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    assert_eq!(replica.stop(), Some(0));
}

/// A managed Redis speaks TLS: `rediss://` with `--fanout-ca` for its private CA carries
/// fan-out, on the service's own rustls and ring. Without the CA (the system's roots), or with
/// `redis://`, the broker is refused at start; a CA file that is not PEM is a usage error.
#[cfg(feature = "tls")]
#[test]
fn a_broker_over_tls_with_a_private_ca_carries_fan_out() {
    let Some(binary) = redis_server() else { return };
    let pki = testkit::pki::Pki::new();
    let file = |path: &std::path::Path| path.to_str().expect("a UTF-8 temp path").to_owned();
    let (cert, key, ca) = (file(&pki.server.cert), file(&pki.server.key), file(&pki.ca_cert));
    let redis = Redis::with_settings(binary, None, |port| {
        let setting = |words: &[&str]| words.iter().map(|word| (*word).to_owned()).collect();
        vec![
            setting(&["--port", "0", "--tls-port", &port.to_string(), "--tls-auth-clients", "no"]),
            setting(&["--tls-cert-file", &cert, "--tls-key-file", &key, "--tls-ca-cert-file", &ca]),
        ]
    });
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let replica = Replica::with_flags(&url, &["--fanout-ca", &ca]);
    runtime().block_on(async {
        let mut subscriber = client(replica.addr).await;
        assert_eq!(subscriber.request("SUBSCRIBE news").await.unwrap(), "OK 1");
        let mut publisher = client(replica.addr).await;
        until_subscribed_everywhere(&mut publisher, "news", 1).await;
        assert_eq!(publisher.request("PUBLISH news over tls").await.unwrap(), "OK 1");
        let lines = pushes_until(&mut subscriber, "MSG news over tls").await;
        assert!(lines.iter().all(|line| line == "MSG news probe"), "{lines:?}");
    });
    assert_eq!(replica.stop(), Some(0));
    let (status, stderr) = try_start(&["--fanout-url", &url]);
    assert_eq!(status, Some(1), "the system's roots do not know the test CA: {stderr}");
    assert!(stderr.starts_with("error: --fanout-url rediss://") && stderr.lines().count() == 1, "{stderr}");
    let plain = format!("redis://127.0.0.1:{}", redis.port);
    let (status, stderr) = try_start(&["--fanout-url", &plain]);
    assert_eq!(status, Some(1), "plain RESP to a TLS port: {stderr}");
    let (status, stderr) =
        try_start(&["--fanout-url", &url, "--fanout-ca", &cert.replace("server", "missing")]);
    assert_eq!(status, Some(2), "{stderr}");
    assert!(stderr.starts_with("error: --fanout-ca ") && stderr.lines().count() == 1, "{stderr}");
    let (status, stderr) = try_start(&["--fanout-url", &plain, "--fanout-ca", &ca]);
    assert_eq!(status, Some(2), "{stderr}");
    assert!(stderr.contains("--fanout-ca needs a rediss://"), "{stderr}");
}
