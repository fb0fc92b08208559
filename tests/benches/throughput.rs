//! Throughput over loopback: requests per second, one at a time and pipelined.
//!
//! `cargo bench --bench throughput` starts the real server on `127.0.0.1:0` and prints figures; it
//! asserts nothing about speed (a timing goal is a figure to watch, not a test to flake). Each
//! scenario runs for a fixed time on a warm connection.
//!
//! * `sequential`: one request, wait for its answer, repeat; bound by round-trip latency and two
//!   system calls per request.
//! * `pipelined xN`: N requests in one write, then N answers; the server answers a burst with one
//!   flush, so the cost per request falls far below a system call.
//! * `PRIMES 1e7`: latency of a CPU job through the coordinator and the rayon pool.
//!
//! The same figures are taken from a bare tokio line server (read a line, write the answer,
//! flush after every answer, as tokio-rs/mini-redis does; no limits, no timeouts) on the same
//! machine in the same run, so the service's own cost shows as the difference.

use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use service::{Client, Config};
use testkit::{TEST_TIMEOUT, TestServer, test_config};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::codec::{Framed, LinesCodec};

const RUN_FOR: Duration = Duration::from_secs(2);

async fn requests_per_second(client: &mut Client, depth: usize) -> f64 {
    let batch = vec!["PING"; depth];
    let start = Instant::now();
    let mut done = 0usize;
    while start.elapsed() < RUN_FOR {
        let answers = client.pipeline(batch.iter().copied()).await.expect("answers");
        debug_assert!(answers.iter().all(|answer| answer == "OK PONG"));
        done += answers.len();
    }
    done as f64 / start.elapsed().as_secs_f64()
}

/// The baseline: a minimal line server answering PING, flushing after every answer. Its
/// connections live in a `JoinSet` owned by the accept task, so aborting that task ends them all.
async fn bare_line_server() -> (std::net::SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("an address");
    let accept = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            stream.set_nodelay(true).expect("nodelay");
            connections.spawn(async move {
                let mut lines = Framed::new(stream, LinesCodec::new_with_max_length(1024));
                while let Some(Ok(_line)) = lines.next().await {
                    if lines.send("OK PONG").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, accept)
}

async fn report(name: &str, client: &mut Client) {
    let sequential = requests_per_second(client, 1).await;
    println!("{:<40} {:>12.0}", format!("{name}: sequential"), sequential);
    for depth in [4, 16, 64] {
        let pipelined = requests_per_second(client, depth).await;
        let label = format!("{name}: pipelined x{depth}");
        println!("{label:<40} {pipelined:>12.0}   ({:.1}x sequential)", pipelined / sequential);
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        println!("{:<40} {:>12}", "scenario", "requests/s");
        let (bare, bare_server) = bare_line_server().await;
        let mut baseline = Client::connect(bare, TEST_TIMEOUT, TEST_TIMEOUT).await.expect("connect");
        report("bare tokio line server", &mut baseline).await;
        bare_server.abort();
        assert!(bare_server.await.is_err_and(|error| error.is_cancelled()));

        let config = Config {
            max_in_flight: testkit::count(64),
            job_timeout: Duration::from_secs(60),
            ..test_config()
        };
        let server = TestServer::start(config);
        let mut client = server.client().await;
        report("service", &mut client).await;

        let rounds = 10;
        let start = Instant::now();
        for _ in 0..rounds {
            assert_eq!(client.request("PRIMES 10000000").await.expect("an answer"), "OK 664579");
        }
        let mean_ms = start.elapsed().as_secs_f64() * 1e3 / f64::from(rounds);
        println!("{:<40} {mean_ms:>9.1} ms   (mean of {rounds})", "service: PRIMES 1e7 latency");
        server.stop().await;

        let bare = bare_broadcast().await;
        println!("{:<40} {bare:>12.0}", "bare broadcast loop: msgs/s to 100");
        let config = Config {
            max_connections: testkit::count(256),
            topic_capacity: testkit::count(1024),
            ..test_config()
        };
        let server = TestServer::start(config);
        let delivered = fanout(&server).await;
        println!(
            "{:<40} {delivered:>12.0}   ({:.2}x the bare loop)",
            "service: msgs/s to 100 subscribers",
            delivered / bare
        );
        server.stop().await;
    });
}

/// Subscribers and messages of the fan-out figures.
const SUBSCRIBERS: usize = 100;
const MESSAGES: usize = 20_000;

/// The baseline: one tokio broadcast channel, 100 receiving tasks on this runtime, messages sent
/// as fast as the channel takes them; messages received per second, across receivers.
async fn bare_broadcast() -> f64 {
    let (sender, _) = tokio::sync::broadcast::channel::<std::sync::Arc<str>>(1024);
    let mut receivers = JoinSet::new();
    for _ in 0..SUBSCRIBERS {
        let mut receiver = sender.subscribe();
        receivers.spawn(async move {
            let mut received = 0usize;
            loop {
                match receiver.recv().await {
                    Ok(_) => received += 1,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return received,
                }
            }
        });
    }
    let start = Instant::now();
    for i in 0..MESSAGES {
        let _ = sender.send(format!("{i}").into());
        if i % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
    drop(sender);
    let received: usize = receivers.join_all().await.into_iter().sum();
    received as f64 / start.elapsed().as_secs_f64()
}

/// The service: 100 subscribers over loopback, one publisher pipelining; MSG lines received per
/// second, across subscribers (a LAG line's messages are not counted as delivered).
async fn fanout(server: &TestServer) -> f64 {
    let mut subscribers = JoinSet::new();
    for _ in 0..SUBSCRIBERS {
        let mut peer = server.connect().await;
        assert_eq!(peer.request("SUBSCRIBE bench").await.as_deref(), Some("OK 1"));
        subscribers.spawn(async move {
            let mut received = 0usize;
            let mut accounted = 0usize;
            while accounted < MESSAGES {
                let line = peer.answer().await.expect("a pushed line");
                match line.split(' ').next() {
                    Some("MSG") => received += 1,
                    Some("LAG") => {
                        accounted += line.rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0)
                    }
                    _ => panic!("{line}"),
                }
                accounted += usize::from(line.starts_with("MSG"));
            }
            received
        });
    }
    let mut publisher = server.client().await;
    let start = Instant::now();
    for batch in 0..MESSAGES / 100 {
        let requests: Vec<String> = (0..100).map(|i| format!("PUBLISH bench {}", batch * 100 + i)).collect();
        publisher.pipeline(requests.iter().map(String::as_str)).await.expect("answers");
    }
    let received: usize = subscribers.join_all().await.into_iter().sum();
    received as f64 / start.elapsed().as_secs_f64()
}
