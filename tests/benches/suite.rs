//! The benchmark suite: `cargo bench -p NAME-tests` (release mode, a few minutes on two cores).
//!
//! Each figure is measured beside its baseline in the same run, with the same client
//! (`service::load`), alternating the two sides over several rounds, so a noisy machine moves the
//! ratio little. It prints a table and writes `target/bench-report.json`: a list of figures, each
//! with `name`, `value`, `unit`, `baseline`, `ratio` and `goal`. It asserts nothing: a timing
//! goal is a figure to watch, not a test to flake.
//!
//! The anti-pattern of the negative control (CPU work spun inline on the runtime) lives only here.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use service::Config;
use service::load::{LoadPlan, LoadReport, run};
use testkit::{TEST_TIMEOUT, TestServer, count, test_config};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::bytes::BytesMut;

/// Connections of the throughput and latency figures.
const CONNECTIONS: usize = 50;
/// Rounds per side of each side-by-side figure.
const ROUNDS: usize = 3;
/// One round of load.
const ROUND: Duration = Duration::from_secs(1);

/// One line of the report.
struct Figure {
    name: &'static str,
    value: f64,
    unit: &'static str,
    baseline: Option<f64>,
    ratio: Option<f64>,
    goal: &'static str,
}

impl Figure {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name, "value": self.value, "unit": self.unit,
            "baseline": self.baseline, "ratio": self.ratio, "goal": self.goal,
        })
    }
}

fn plan(addr: std::net::SocketAddr, connections: usize, depth: usize, requests: &[&str]) -> LoadPlan {
    LoadPlan {
        addr: addr.to_string(),
        connections,
        depth,
        duration: ROUND,
        rate: None,
        requests: requests.iter().map(|request| (*request).to_owned()).collect(),
        connect_timeout: TEST_TIMEOUT,
        timeout: TEST_TIMEOUT,
        tls: None,
    }
}

async fn load(plan: &LoadPlan) -> LoadReport {
    run(plan, Arc::new(AtomicU64::new(0))).await.expect("the load runs")
}

/// The baseline: the fastest bare tokio line server we can write with the same framing and the
/// same flush batching as the service (read what is there, answer every complete line, one write
/// per read), no limits, no timeouts, no job queue. PING only; `SPIN ms` spins inline when
/// `inline_spin` (the negative control: CPU work on the runtime, never do this).
async fn bare_server(inline_spin: bool) -> (std::net::SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("an address");
    let accept = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            stream.set_nodelay(true).expect("nodelay");
            connections.spawn(async move {
                let (mut input, mut output) = (BytesMut::with_capacity(8192), Vec::with_capacity(8192));
                while stream.read_buf(&mut input).await.is_ok_and(|read| read > 0) {
                    while let Some(end) = input.iter().position(|&b| b == b'\n') {
                        let line = input.split_to(end + 1);
                        match line.strip_prefix(b"SPIN ").filter(|_| inline_spin) {
                            Some(ms) => {
                                let ms: u64 = std::str::from_utf8(ms)
                                    .ok()
                                    .and_then(|ms| ms.trim().parse().ok())
                                    .unwrap_or(0);
                                let until = Instant::now() + Duration::from_millis(ms);
                                while Instant::now() < until {
                                    std::hint::spin_loop();
                                }
                                output.extend_from_slice(format!("OK {ms}\n").as_bytes());
                            }
                            None => output.extend_from_slice(b"OK PONG\n"),
                        }
                    }
                    if stream.write_all(&output).await.is_err() {
                        return;
                    }
                    output.clear();
                }
            });
        }
    });
    (addr, accept)
}

fn service_config() -> Config {
    Config {
        max_connections: count(2048),
        max_in_flight: count(64),
        queue_capacity: count(256),
        job_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(600),
        cpu_threads: 0,
        ..test_config()
    }
}

/// Throughput (answers/s) of both sides at `depth`, alternating rounds.
async fn side_by_side(bare: std::net::SocketAddr, service: std::net::SocketAddr, depth: usize) -> (f64, f64) {
    let (mut bare_total, mut service_total) = (0.0, 0.0);
    for _ in 0..ROUNDS {
        bare_total += load(&plan(bare, CONNECTIONS, depth, &["PING"])).await.throughput();
        service_total += load(&plan(service, CONNECTIONS, depth, &["PING"])).await.throughput();
    }
    (service_total / ROUNDS as f64, bare_total / ROUNDS as f64)
}

/// PING p99 (open loop) alone, then while a closed loop of `SPIN 20` keeps the CPU busy.
async fn ping_p99_idle_and_loaded(addr: std::net::SocketAddr) -> (Duration, Duration) {
    let ping =
        LoadPlan { rate: Some(2000), duration: Duration::from_secs(2), ..plan(addr, 10, 4, &["PING"]) };
    let idle = load(&ping).await.quantile(0.99);
    let cpu = LoadPlan {
        duration: Duration::from_secs(2),
        timeout: Duration::from_secs(60),
        ..plan(addr, 4, 4, &["SPIN 20"])
    };
    let (loaded, _) = tokio::join!(load(&ping), load(&cpu));
    (idle, loaded.quantile(0.99))
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// About 1 ms of CPU work on this machine (a single-threaded count: the pool has one job).
fn one_millisecond_of_work() -> u64 {
    cpu::primes::count_below(3_000_000)
}

/// This process's resident memory (Linux; 0 elsewhere).
fn resident_bytes() -> u64 {
    #[expect(clippy::disallowed_methods, reason = "a read of /proc that never waits on a device")]
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm.split_whitespace().nth(1).and_then(|pages| pages.parse::<u64>().ok()).unwrap_or(0) * 4096
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    let mut figures = runtime.block_on(async {
        let mut figures = Vec::new();
        let server = TestServer::start(service_config());
        let (bare, bare_task) = bare_server(false).await;

        // 1, 2. Throughput beside the bare server, one at a time and pipelined.
        let (service_1, bare_1) = side_by_side(bare, server.addr, 1).await;
        let (service_16, bare_16) = side_by_side(bare, server.addr, 16).await;
        for (name, value, baseline) in [
            ("throughput_vs_bare_depth1", service_1, bare_1),
            ("throughput_vs_bare_depth16", service_16, bare_16),
        ] {
            figures.push(Figure {
                name,
                value,
                unit: "req/s",
                baseline: Some(baseline),
                ratio: Some(value / baseline),
                goal: "ratio >= 0.8",
            });
        }
        figures.push(Figure {
            name: "pipelining_gain",
            value: service_16 / service_1,
            unit: "x",
            baseline: Some(service_1),
            ratio: Some(service_16 / service_1),
            goal: ">= 8",
        });
        bare_task.abort();

        // 2b. A server people know, beside the service: redis-server (its own process, loopback,
        // persistence off), which answers the inline `PING` with `+PONG`, driven by the same
        // client (skipped without redis-server).
        match fanout::redis().await {
            Some((redis, url)) => {
                let peer = url.trim_start_matches("redis://").parse().expect("a loopback address");
                for (name, depth) in [("throughput_vs_redis_depth1", 1), ("throughput_vs_redis_depth16", 16)]
                {
                    let (service, redis) = side_by_side(peer, server.addr, depth).await;
                    figures.push(Figure {
                        name,
                        value: service,
                        unit: "req/s",
                        baseline: Some(redis),
                        ratio: Some(service / redis),
                        goal: "ratio >= 1.0",
                    });
                }
                drop(redis);
            }
            None => println!("skipped throughput_vs_redis: redis-server is not installed"),
        }

        // 3. Isolation: PING latency while the CPU pool is saturated, and the negative control.
        let (idle, loaded) = ping_p99_idle_and_loaded(server.addr).await;
        let isolation = loaded.as_secs_f64() / idle.as_secs_f64();
        figures.push(Figure {
            name: "isolation_p99",
            value: loaded.as_secs_f64() * 1e3,
            unit: "ms",
            baseline: Some(idle.as_secs_f64() * 1e3),
            ratio: Some(isolation),
            goal: "ratio <= 3",
        });
        let (inline, inline_task) = bare_server(true).await;
        let (_, inline_loaded) = ping_p99_idle_and_loaded(inline).await;
        inline_task.abort();
        figures.push(Figure {
            name: "inline_blocking_p99",
            value: inline_loaded.as_secs_f64() * 1e3,
            unit: "ms",
            baseline: Some(loaded.as_secs_f64() * 1e3),
            ratio: Some(inline_loaded.as_secs_f64() / loaded.as_secs_f64()),
            goal: "ratio >= 10 (the harness sees blocking)",
        });

        // 4. The bridges' cost.
        let pool = cpu::CpuPool::new(2).expect("a pool");
        let blocking = cpu::BlockingPool::new(8);
        let mut rayon_trips = Vec::new();
        let mut blocking_trips = Vec::new();
        for _ in 0..2000 {
            let start = Instant::now();
            pool.spawn(|| ()).await.expect("a no-op");
            rayon_trips.push(start.elapsed());
            let start = Instant::now();
            blocking.run(|| ()).await.expect("a no-op");
            blocking_trips.push(start.elapsed());
        }
        let (rayon_noop, blocking_noop) = (median(rayon_trips), median(blocking_trips));
        figures.push(Figure {
            name: "offload_noop_us",
            value: rayon_noop.as_secs_f64() * 1e6,
            unit: "us",
            baseline: None,
            ratio: None,
            goal: "a figure to watch",
        });
        figures.push(Figure {
            name: "spawn_blocking_noop_us",
            value: blocking_noop.as_secs_f64() * 1e6,
            unit: "us",
            baseline: None,
            ratio: None,
            goal: "a figure to watch",
        });
        let (mut bridged, mut inline_runs) = (Vec::new(), Vec::new());
        for _ in 0..200 {
            let start = Instant::now();
            std::hint::black_box(pool.spawn(one_millisecond_of_work).await.expect("work"));
            bridged.push(start.elapsed());
            let start = Instant::now();
            std::hint::black_box(one_millisecond_of_work());
            inline_runs.push(start.elapsed());
        }
        let (bridged, inline_run) = (median(bridged), median(inline_runs));
        figures.push(Figure {
            name: "offload_1ms_ratio",
            value: bridged.as_secs_f64() * 1e3,
            unit: "ms",
            baseline: Some(inline_run.as_secs_f64() * 1e3),
            ratio: Some(bridged.as_secs_f64() / inline_run.as_secs_f64()),
            goal: "ratio <= 1.1",
        });

        // 5. Parallel speed-up of the sieve: the median of the ratios of paired rounds (one on
        // two threads, then one on one), so a VM core that changes speed between rounds moves
        // one ratio, not the figure.
        let single = cpu::CpuPool::new(1).expect("a pool");
        let (mut speedups, mut on_one) = (Vec::new(), Vec::new());
        for _ in 0..2 * ROUNDS + 1 {
            let start = Instant::now();
            std::hint::black_box(
                pool.spawn(|| cpu::primes::count_below(100_000_000)).await.expect("a count"),
            );
            let on_pool = start.elapsed();
            let start = Instant::now();
            std::hint::black_box(
                single.spawn(|| cpu::primes::count_below(100_000_000)).await.expect("a count"),
            );
            let one = start.elapsed();
            on_one.push(one);
            speedups.push(one.as_secs_f64() / on_pool.as_secs_f64());
        }
        speedups.sort_by(f64::total_cmp);
        let speedup = speedups[speedups.len() / 2];
        figures.push(Figure {
            name: "parallel_speedup",
            value: speedup,
            unit: "x",
            baseline: Some(median(on_one).as_secs_f64()),
            ratio: Some(speedup),
            goal: ">= 1.7 on 2 cores",
        });

        // 6. Timer lateness under mixed load: WAIT 10 (open loop) beside a closed loop of PING.
        let sleeps = LoadPlan {
            rate: Some(500),
            duration: Duration::from_secs(2),
            ..plan(server.addr, 10, 8, &["WAIT 10"])
        };
        let pings = LoadPlan { duration: Duration::from_secs(2), ..plan(server.addr, 10, 4, &["PING"]) };
        let (slept, _) = tokio::join!(load(&sleeps), load(&pings));
        let late = slept.quantile(0.99).saturating_sub(Duration::from_millis(10));
        figures.push(Figure {
            name: "timer_overshoot_p99_ms",
            value: late.as_secs_f64() * 1e3,
            unit: "ms",
            baseline: None,
            ratio: None,
            goal: "<= 2",
        });

        // 7. Memory per idle connection (the clients are in this process too, a few hundred
        // bytes each: the figure is an upper bound).
        let before = resident_bytes();
        let mut idle = Vec::new();
        for _ in 0..1000 {
            let mut client = server.client().await;
            assert_eq!(client.request("PING").await.expect("an answer"), "OK PONG");
            idle.push(client);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let per_connection = resident_bytes().saturating_sub(before) as f64 / 1000.0;
        figures.push(Figure {
            name: "bytes_per_idle_connection",
            value: per_connection,
            unit: "bytes",
            baseline: None,
            ratio: None,
            goal: "<= 16384",
        });
        drop(idle);
        server.stop().await;

        // 8. Fan-out to 100 subscribers, beside a bare broadcast loop.
        let bare_fanout = fanout::bare_broadcast().await;
        // 64 topics of 1,024 messages keep at most 71 MiB (the 1,024 topics of the defaults could
        // keep over the 1 GiB ceiling). The publish budget is lifted: this measures the fan-out
        // machinery, and `bystander_p99_one_publisher` what the budget protects.
        let fanout_server = TestServer::start(Config {
            topic_capacity: count(1024),
            max_topics: count(64),
            max_subscriptions: count(1),
            publish_budget: count(1_000_000_000),
            ..service_config()
        });
        let delivered = fanout::service(&[&fanout_server]).await;
        fanout_server.stop().await;
        figures.push(Figure {
            name: "fanout_msgs_per_s",
            value: delivered,
            unit: "msg/s",
            baseline: Some(bare_fanout),
            ratio: Some(delivered / bare_fanout),
            goal: "a figure to watch",
        });

        // 9. The same on two replicas through Redis, beside the figure above (skipped without
        // redis-server).
        match fanout::redis().await {
            Some((redis, url)) => {
                let config = Config {
                    fanout_url: Some(service::FanoutUrl::parse(&url).expect("a Redis URL")),
                    topic_capacity: count(1024),
                    max_topics: count(64),
                    max_subscriptions: count(1),
                    publish_budget: count(1_000_000_000),
                    ..service_config()
                };
                let replicas = [TestServer::start(config.clone()), TestServer::start(config)];
                let relayed = fanout::service(&[&replicas[0], &replicas[1]]).await;
                for replica in replicas {
                    replica.stop().await;
                }
                drop(redis);
                figures.push(Figure {
                    name: "fanout_two_replicas_redis_msgs_per_s",
                    value: relayed,
                    unit: "msg/s",
                    baseline: Some(delivered),
                    ratio: Some(relayed / delivered),
                    goal: "a figure to watch",
                });
            }
            None => println!("skipped fanout_two_replicas_redis_msgs_per_s: redis-server is not installed"),
        }

        // 10. TLS: PING beside plain TCP, one at a time and pipelined, and full handshakes.
        figures.extend(tls::figures().await);
        figures
    });
    drop(runtime);
    figures.push(amplification::figure());

    println!("{:<28} {:>14} {:<6} {:>14} {:>8}  goal", "figure", "value", "unit", "baseline", "ratio");
    for figure in &figures {
        let baseline = figure.baseline.map_or(String::from("-"), |b| format!("{b:.1}"));
        let ratio = figure.ratio.map_or(String::from("-"), |r| format!("{r:.2}"));
        println!(
            "{:<28} {:>14.1} {:<6} {:>14} {:>8}  {}",
            figure.name, figure.value, figure.unit, baseline, ratio, figure.goal
        );
    }
    let report = serde_json::Value::Array(figures.iter().map(Figure::json).collect());
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace");
    let path = workspace.join("target/bench-report.json");
    #[expect(
        clippy::disallowed_methods,
        reason = "the report is written once, after the runtime has finished"
    )]
    std::fs::write(&path, format!("{report:#}\n")).expect("write target/bench-report.json");
    println!("wrote {}", path.display());
}

/// TLS beside plain TCP: PING throughput at depth 1 and 16 (the same server settings, the same
/// client, rounds alternating), and full handshakes a second (no session resumption), each
/// connection shaking hands, answering one PING and closing.
mod tls {
    use super::*;

    /// Connections opening and closing at once in the handshake figure.
    const HANDSHAKERS: usize = 8;

    pub(super) async fn figures() -> Vec<Figure> {
        let pki = testkit::pki::Pki::new();
        let client = pki.client_tls(None);
        let plain = TestServer::start(service_config());
        let secure = TestServer::start(Config {
            tls_cert: Some(pki.server.cert.clone()),
            tls_key: Some(pki.server.key.clone()),
            ..service_config()
        });
        let mut figures = Vec::new();
        for (name, depth) in [("tls_throughput_depth1", 1), ("tls_throughput_depth16", 16)] {
            let (mut over_tcp, mut over_tls) = (0.0, 0.0);
            for _ in 0..ROUNDS {
                over_tcp += load(&plan(plain.addr, CONNECTIONS, depth, &["PING"])).await.throughput();
                let tls_plan = LoadPlan {
                    tls: Some(client.clone()),
                    ..plan(secure.addr, CONNECTIONS, depth, &["PING"])
                };
                over_tls += load(&tls_plan).await.throughput();
            }
            let (over_tcp, over_tls) = (over_tcp / ROUNDS as f64, over_tls / ROUNDS as f64);
            figures.push(Figure {
                name,
                value: over_tls,
                unit: "req/s",
                baseline: Some(over_tcp),
                ratio: Some(over_tls / over_tcp),
                goal: "a figure to watch",
            });
        }
        let handshakes = handshakes_per_second(secure.addr, &client.without_resumption()).await;
        figures.push(Figure {
            name: "tls_full_handshakes_per_s",
            value: handshakes,
            unit: "hs/s",
            baseline: None,
            ratio: None,
            goal: "a figure to watch",
        });
        plain.stop().await;
        secure.stop().await;
        figures
    }

    /// Full handshakes a second, each followed by one PING (under TLS 1.3 the client is done
    /// first; the answer says the server is too), from [`HANDSHAKERS`] loops for [`ROUND`] x 2.
    async fn handshakes_per_second(addr: std::net::SocketAddr, client: &service::tls::ClientTls) -> f64 {
        let started = Instant::now();
        let deadline = started + 2 * ROUND;
        let mut loops = JoinSet::new();
        for _ in 0..HANDSHAKERS {
            let client = client.clone();
            loops.spawn(async move {
                let (addr, mut done) = (addr.to_string(), 0_u64);
                while Instant::now() < deadline {
                    let connected = service::Client::connect_tls(&addr, &client, TEST_TIMEOUT, TEST_TIMEOUT);
                    let mut connection = connected.await.expect("a TLS connection");
                    assert_eq!(connection.request("PING").await.expect("an answer"), "OK PONG");
                    done += 1;
                }
                done
            });
        }
        let done: u64 = loops.join_all().await.into_iter().sum();
        done as f64 / started.elapsed().as_secs_f64()
    }
}

/// What one publisher costs everybody else: a bystander's PING latency (open loop) while one
/// connection pipelines `PUBLISH` of 1,000 bytes to 1,000 subscribers that read everything,
/// beside the same PING latency with nobody publishing. The server, the subscribers with the
/// publisher, and the bystander each run on a runtime of their own, on threads of their own, so
/// the bystander's latency is the server's doing, not its own client's queue.
mod amplification {
    use std::sync::atomic::Ordering;

    use super::*;

    const SUBSCRIBERS: usize = 1000;
    const LOAD: Duration = Duration::from_secs(3);

    /// The figure, for the default `--publish-budget`.
    pub(super) fn figure() -> Figure {
        let config = Config { max_line: count(2048), max_connections: count(2048), ..service_config() };
        let budget = config.publish_budget.get();
        let server_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("the server's runtime");
        let server = server_runtime.block_on(async { TestServer::start(config) });
        let clients = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
        let (alone, loaded, rate) = clients.block_on(bystander_p99(server.addr));
        server_runtime.block_on(server.stop());
        println!("one publisher to {SUBSCRIBERS} subscribers, budget {budget}/s: {rate:.0} deliveries/s");
        Figure {
            name: "bystander_p99_one_publisher",
            value: loaded.as_secs_f64() * 1e3,
            unit: "ms",
            baseline: Some(alone.as_secs_f64() * 1e3),
            ratio: Some(loaded.as_secs_f64() / alone.as_secs_f64()),
            goal: "a figure to watch",
        }
    }

    /// The bystander's PING p99 alone, then while the publisher runs; and the messages
    /// delivered per second meanwhile.
    async fn bystander_p99(addr: std::net::SocketAddr) -> (Duration, Duration, f64) {
        let stop = tokio_util::sync::CancellationToken::new();
        let (subscribers, delivered) =
            testkit::reading_subscribers(&addr.to_string(), SUBSCRIBERS, "amp", &stop).await;
        let ping = LoadPlan { rate: Some(200), duration: LOAD, ..plan(addr, 1, 1, &["PING"]) };
        let alone = apart(ping.clone()).await.quantile(0.99);
        let publish = format!("PUBLISH amp {}", "x".repeat(1000));
        let publisher = LoadPlan { duration: LOAD, ..plan(addr, 1, 32, &[publish.as_str()]) };
        let before = delivered.load(Ordering::Relaxed);
        let started = Instant::now();
        let (bystander, _) = tokio::join!(apart(ping), load(&publisher));
        let rate = (delivered.load(Ordering::Relaxed) - before) as f64 / started.elapsed().as_secs_f64();
        stop.cancel();
        subscribers.join_all().await;
        (alone, bystander.quantile(0.99), rate)
    }

    /// Runs `plan` on a `current_thread` runtime on a thread of its own.
    async fn apart(plan: LoadPlan) -> LoadReport {
        let (report, received) = tokio::sync::oneshot::channel();
        let thread = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            let _ = report.send(runtime.block_on(load(&plan)));
        });
        let report = received.await.expect("the load thread reports");
        // The thread has sent its report: it is ending, and the join does not wait.
        #[expect(clippy::disallowed_methods, reason = "the thread has already sent its last value")]
        thread.join().expect("the load thread does not panic");
        report
    }
}

/// The fan-out figure and its baseline.
mod fanout {
    use super::*;

    const SUBSCRIBERS: usize = 100;
    const MESSAGES: usize = 20_000;

    /// One tokio broadcast channel, 100 receiving tasks; messages received per second.
    pub(super) async fn bare_broadcast() -> f64 {
        let (sender, _) = tokio::sync::broadcast::channel::<Arc<str>>(1024);
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
            let _ = sender.send(Arc::from(i.to_string()));
            if i % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
        drop(sender);
        let received: usize = receivers.join_all().await.into_iter().sum();
        received as f64 / start.elapsed().as_secs_f64()
    }

    /// 100 subscribers over loopback, spread over `servers`, and one pipelining publisher on the
    /// first; MSG lines received per second. With more than one server (replicas through a
    /// broker), publishing waits until the broker says every one subscribes (`OK <replicas>`).
    pub(super) async fn service(servers: &[&TestServer]) -> f64 {
        let mut subscribers = JoinSet::new();
        for index in 0..SUBSCRIBERS {
            let mut peer = servers[index % servers.len()].connect().await;
            assert_eq!(peer.request("SUBSCRIBE bench").await.as_deref(), Some("OK 1"));
            subscribers.spawn(async move {
                let (mut received, mut accounted) = (0, 0);
                while accounted < MESSAGES {
                    let line = peer.answer().await.expect("a pushed line");
                    if line == "MSG bench probe" {
                        continue;
                    }
                    if line.starts_with("MSG ") {
                        received += 1;
                        accounted += 1;
                    } else {
                        accounted +=
                            line.rsplit(' ').next().and_then(|n| n.parse::<usize>().ok()).expect("LAG n");
                    }
                }
                received
            });
        }
        let mut publisher = servers[0].client().await;
        if servers.len() > 1 {
            let everywhere = format!("OK {}", servers.len());
            while publisher.request("PUBLISH bench probe").await.expect("an answer") != everywhere {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let start = Instant::now();
        for batch in 0..MESSAGES / 100 {
            let requests: Vec<String> =
                (0..100).map(|i| format!("PUBLISH bench {}", batch * 100 + i)).collect();
            publisher.pipeline(requests.iter().map(String::as_str)).await.expect("answers");
        }
        let received: usize = subscribers.join_all().await.into_iter().sum();
        received as f64 / start.elapsed().as_secs_f64()
    }

    /// A `redis-server` on a free loopback port, without persistence, if one is installed; it
    /// ends with the returned child.
    pub(super) async fn redis() -> Option<(tokio::process::Child, String)> {
        let port = TcpListener::bind("127.0.0.1:0").await.ok()?.local_addr().ok()?.port();
        let child = tokio::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .ok()?;
        for _ in 0..500 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Some((child, format!("redis://127.0.0.1:{port}")));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }
}
