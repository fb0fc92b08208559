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
    });
}
