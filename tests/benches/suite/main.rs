//! The benchmark suite: `cargo bench -p NAME-tests` (release mode, a few minutes on two cores).
//!
//! Each figure is measured beside its baseline in the same run, with the same client
//! (`service::load`; for fan-out, one that speaks both the service's lines and redis-server's
//! RESP), alternating the sides round by round, so a noisy machine moves the ratio little. The
//! servers run as users run them, each in a process of its own ([`peers`]): the
//! service's release binary, the bare tokio line server, redis-server, rotel's collector for
//! the traces figures, and the bare hyper server and a bare axum router for the HTTP figures.
//! This process is the load client, but for HTTP, which `wrk` loads. The instruction counts
//! run the service and the bare server under callgrind ([`instructions`]). The figures of an
//! optional part (TLS, the relay, traces, HTTP) are built only with that part's feature, as its
//! rows of the README's table.
//!
//! Every answer is checked: a load that gets an `ERR` stops the run, and a figure whose command
//! the service no longer has (an example removed, as the README shows) is skipped with one line
//! saying so; `-- --probe` says which, measuring nothing.
//!
//! It prints a table and writes `target/bench-report.json` (its form: `testkit::bench_report`).
//! Then `cargo bench -p NAME-tests -- --record` keeps that report in `tests/benches/report.json`
//! and writes the README's table from it. It asserts nothing: a timing goal is a figure to
//! watch, not a test to flake.
//!
//! The anti-pattern of the negative control (CPU work spun inline on the runtime) lives only here.

mod amplification;
mod bare;
mod fanout;
#[cfg(feature = "http")]
#[cfg_attr(not(feature = "http"), path = "../../src/part_left_out.rs")]
mod http;
mod idle;
mod instructions;
mod peers;
#[cfg(feature = "tls")]
#[cfg_attr(not(feature = "tls"), path = "../../src/part_left_out.rs")]
mod tls;
#[cfg(feature = "otel")]
#[cfg_attr(not(feature = "otel"), path = "../../src/part_left_out.rs")]
mod traces;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use service::load::{LoadPlan, LoadReport, run};
use service::protocol::{ErrorCode, is_ok};
use testkit::TEST_TIMEOUT;
use testkit::bench_report::{self, Parts, bound, shown};

/// Where a run writes its report, from the workspace's root.
const REPORT: &str = "target/bench-report.json";
/// Connections of the throughput and latency figures.
const CONNECTIONS: usize = 50;
/// Rounds per side of each side-by-side figure.
const ROUNDS: usize = 5;
/// One round of load.
const ROUND: Duration = Duration::from_secs(1);
/// The flags every service in the suite runs with, beside its defaults: room for the 1,000
/// connections of the memory and amplification figures.
const SERVICE_FLAGS: &[&str] = &["--max-connections", "2048"];
/// PING a second beside the timers of the lateness figure: about a sixth of what the service
/// answers at depth 1 here.
const PING_RATE: u64 = 20_000;
/// CPU work for the isolation figure: a sieve of about 15 ms on two threads, on the CPU pool.
const SIEVE: &str = "PRIMES 30000000";
/// What tells whether the service still has the example commands the isolation figures
/// ([`SIEVE`]) and the timer figure (`SLEEP 10`) send.
const PRIMES_PROBE: &str = "PRIMES 10";
const SLEEP_PROBE: &str = "SLEEP 0";
/// The row of PING throughput beside the bare server: at depth 1 and 16, then at depth 1 with
/// 1,000 and 5,000 idle connections held ([`idle`]).
const BARE_ROW: &str = "PING / bare tokio, depth 1, 16; 1,000, 5,000 idle";
/// The row of the memory figures: per idle connection among 1,000, and among 5,000 ([`idle`]).
const MEMORY_ROW: &str = "memory per idle connection, 1,000, 5,000";
/// The argument of [`probe`].
const PROBE: &str = "--probe";

/// What a figure's number (its ratio, or else its value) should be.
#[derive(Clone, Copy)]
enum Goal {
    AtLeast(f64),
    AtMost(f64),
    /// A figure to watch, with no bound.
    Watch,
}

/// One line of the report.
struct Figure {
    name: &'static str,
    /// Its line in the README's table; figures on the same line share it.
    row: &'static str,
    value: f64,
    unit: &'static str,
    baseline: Option<f64>,
    ratio: Option<f64>,
    goal: Goal,
}

impl Figure {
    /// A figure with a baseline; the ratio is `value / baseline`.
    fn beside(
        name: &'static str,
        row: &'static str,
        value: f64,
        unit: &'static str,
        baseline: f64,
        goal: Goal,
    ) -> Self {
        Self { name, row, value, unit, baseline: Some(baseline), ratio: Some(value / baseline), goal }
    }

    /// A figure from paired rounds, as [`paired`] gives them.
    fn rounds(
        name: &'static str,
        row: &'static str,
        Paired { value, baseline, ratio }: Paired,
        unit: &'static str,
        goal: Goal,
    ) -> Self {
        Self { ratio: Some(ratio), ..Self::beside(name, row, value, unit, baseline, goal) }
    }

    /// A figure on its own.
    fn alone(name: &'static str, row: &'static str, value: f64, unit: &'static str, goal: Goal) -> Self {
        Self { name, row, value, unit, baseline: None, ratio: None, goal }
    }

    /// The goal as the table shows it, and whether it is met (`None` for a figure to watch).
    fn judged(&self) -> (Option<String>, Option<bool>) {
        let (number, unit) = shown(self.ratio, self.value, self.unit);
        match self.goal {
            Goal::AtLeast(at_least) => {
                (Some(format!(">= {}", bound(at_least, unit))), Some(number >= at_least))
            }
            Goal::AtMost(at_most) => (Some(format!("<= {}", bound(at_most, unit))), Some(number <= at_most)),
            Goal::Watch => (None, None),
        }
    }

    fn json(&self) -> serde_json::Value {
        let (goal, met) = self.judged();
        serde_json::json!({
            "name": self.name, "row": self.row, "value": self.value, "unit": self.unit,
            "baseline": self.baseline, "ratio": self.ratio, "goal": goal, "met": met,
        })
    }
}

fn plan(addr: SocketAddr, connections: usize, depth: usize, requests: &[&str]) -> LoadPlan {
    LoadPlan {
        addr: addr.to_string(),
        connections,
        depth,
        duration: ROUND,
        rate: None,
        requests: requests.iter().map(|request| (*request).to_owned()).collect(),
        connect_timeout: TEST_TIMEOUT,
        timeout: TEST_TIMEOUT,
        #[cfg(feature = "tls")]
        tls: None,
    }
}

/// Runs `plan`, and checks that every answer was `OK` and answered a request: a figure made of
/// refusals (`ERR busy`, or `ERR unknown-command` for a command removed) would measure nothing.
async fn load(plan: &LoadPlan) -> LoadReport {
    let report = load_unchecked(plan).await;
    let LoadReport { answers, errors, unexpected, .. } = report;
    assert!(
        errors == 0 && unexpected == 0,
        "{:?} to {}: {errors} of {answers} answers were ERR and {unexpected} lines answered nothing",
        plan.requests,
        plan.addr,
    );
    report
}

/// Runs `plan` on a server whose answers are not the protocol's: redis-server answers `PING`
/// with `+PONG`, which the load client counts (as not `OK`) but cannot check.
async fn load_unchecked(plan: &LoadPlan) -> LoadReport {
    run(plan, Arc::new(AtomicU64::new(0))).await.expect("the load runs")
}

/// Whether the service at `addr` has the command `request` starts with: the example commands
/// (`SLEEP`, `PRIMES`) go when a user replaces the example domain, and the figures that send
/// them are then skipped, each with one line saying why.
async fn has_command(addr: SocketAddr, request: &str) -> bool {
    let mut client = service::Client::connect(addr, TEST_TIMEOUT, TEST_TIMEOUT).await.expect("connect");
    let answer = client.request(request).await.expect("an answer");
    let name = request.split(' ').next().unwrap_or_default();
    if answer.starts_with(&format!("ERR {}", ErrorCode::UnknownCommand.as_str())) {
        println!("skipped the figures that send {name}: the service has no {name} command");
        return false;
    }
    assert!(is_ok(&answer), "{request}: {answer}");
    true
}

/// PING throughput (answers/s) of each of `servers` at `depth`: [`ROUNDS`] rounds, each loading
/// every server in turn. Returns each round's figures, in the order of `servers`.
/// redis-server, if among them, is last.
async fn rounds(servers: &[SocketAddr], redis: Option<SocketAddr>, depth: usize) -> Vec<Vec<f64>> {
    let mut rounds = Vec::new();
    for _ in 0..ROUNDS {
        let mut round = Vec::new();
        for &server in servers.iter().chain(&redis) {
            let plan = plan(server, CONNECTIONS, depth, &["PING"]);
            let report = if Some(server) == redis { load_unchecked(&plan).await } else { load(&plan).await };
            round.push(report.throughput());
        }
        rounds.push(round);
    }
    rounds
}

/// The median of `samples`.
fn median_of(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// The median of column 0 in `rounds` (the side measured), the median of column `other`, and the
/// median of their ratios, round by round: a VM core that changes speed between rounds moves
/// one ratio, not the figure.
fn paired(rounds: &[Vec<f64>], other: usize) -> Paired {
    Paired {
        value: median_of(rounds.iter().map(|round| round[0]).collect()),
        baseline: median_of(rounds.iter().map(|round| round[other]).collect()),
        ratio: median_of(rounds.iter().map(|round| round[0] / round[other]).collect()),
    }
}

/// A side-by-side figure from rounds ([`paired`]).
#[derive(Clone, Copy)]
struct Paired {
    /// The median of the side measured.
    value: f64,
    /// The median of the baseline.
    baseline: f64,
    /// The median of the rounds' ratios (not the ratio of the medians).
    ratio: f64,
}

/// PING p99 (open loop) alone, then while a closed loop of `cpu_work` keeps the CPU busy.
async fn ping_p99_idle_and_loaded(addr: SocketAddr, cpu_work: &str) -> (Duration, Duration) {
    let ping =
        LoadPlan { rate: Some(2000), duration: Duration::from_secs(2), ..plan(addr, 10, 4, &["PING"]) };
    let idle = load(&ping).await.quantile(0.99);
    let cpu = LoadPlan {
        duration: Duration::from_secs(2),
        timeout: Duration::from_secs(60),
        ..plan(addr, 4, 4, &[cpu_work])
    };
    let (loaded, _) = tokio::join!(load(&ping), load(&cpu));
    (idle, loaded.quantile(0.99))
}

/// How late `SLEEP 10` answers (p99, from its sending) while PING comes at [`PING_RATE`]. The
/// sleeps go one at a time on each connection (the bare server answers a connection's lines in
/// turn), and the PINGs on a fixed schedule: a closed loop of PING would keep both cores busy,
/// and the kernel's time slices between this process and the server's would be the figure.
/// tokio's timers tick in whole milliseconds and round a deadline up, so even the bare server
/// is a millisecond or two late: the figure that counts is the ratio.
async fn timer_lateness(addr: SocketAddr) -> Duration {
    let sleeps = LoadPlan { duration: Duration::from_secs(2), ..plan(addr, 20, 1, &["SLEEP 10"]) };
    let pings =
        LoadPlan { rate: Some(PING_RATE), duration: Duration::from_secs(2), ..plan(addr, 10, 4, &["PING"]) };
    let (slept, _) = tokio::join!(load(&sleeps), load(&pings));
    slept.quantile(0.99).saturating_sub(Duration::from_millis(10))
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// The 1 ms jobs in each round of the bridge's figure: about 10 ms a side.
const JOBS_PER_ROUND: usize = 10;

/// About 1 ms of CPU work on this machine (a single-threaded count: the pool has one job).
fn one_millisecond_of_work() -> u64 {
    cpu::primes::count_below(3_000_000)
}

/// The figures of the servers in their own processes: throughput beside the bare server and
/// redis-server, isolation, timer lateness, memory, throughput beside thousands of idle
/// connections, instructions per request, fan-out beside redis-server's pub/sub, TLS, what a
/// publisher costs a bystander, traces and HTTP.
async fn server_figures(binary: &Path) -> Vec<Figure> {
    let service = peers::service(binary, SERVICE_FLAGS).await;
    let mut figures = throughput(service.addr).await;
    if has_command(service.addr, PRIMES_PROBE).await {
        figures.extend(isolation(service.addr).await);
    }
    if has_command(service.addr, SLEEP_PROBE).await {
        figures.push(timer_overshoot(service.addr).await);
    }
    figures.push(memory_per_connection(&service).await);
    service.stop().await;
    figures.extend(idle::figures(binary).await);
    figures.extend(instructions::figures(binary).await);
    // Fan-out, in one process and on two replicas through Redis; TLS beside plain TCP; what one
    // publisher costs a bystander.
    figures.extend(fanout::figures(binary).await);
    #[cfg(feature = "tls")]
    figures.extend(tls::figures(binary).await);
    figures.push(amplification::figure(binary).await);
    #[cfg(feature = "otel")]
    figures.extend(traces::figures(binary).await);
    #[cfg(feature = "http")]
    figures.extend(http::figures(binary).await);
    figures
}

/// PING throughput beside the bare server and redis-server, one at a time and pipelined, and
/// the service's gain from pipelining.
async fn throughput(service: SocketAddr) -> Vec<Figure> {
    let mut figures = Vec::new();
    let bare = peers::bare(false).await;
    // A server people know: redis-server (persistence off) answers the inline `PING` with
    // `+PONG`, so the same client drives it (skipped without redis-server).
    let redis = peers::redis().await;
    let servers = [service, bare.addr];
    let redis_addr = redis.as_ref().map(|redis| redis.addr);
    let (depth1, depth16) = (rounds(&servers, redis_addr, 1).await, rounds(&servers, redis_addr, 16).await);
    let (at_1, at_16) = (paired(&depth1, 1), paired(&depth16, 1));
    for (name, figure) in [("throughput_vs_bare_depth1", at_1), ("throughput_vs_bare_depth16", at_16)] {
        figures.push(Figure::rounds(name, BARE_ROW, figure, "req/s", Goal::AtLeast(0.9)));
    }
    match &redis {
        Some(_) => {
            let redis_row = "PING / redis-server, depth 1, 16";
            for (name, rounds) in
                [("throughput_vs_redis_depth1", &depth1), ("throughput_vs_redis_depth16", &depth16)]
            {
                let figure = paired(rounds, 2);
                figures.push(Figure::rounds(name, redis_row, figure, "req/s", Goal::AtLeast(1.0)));
            }
        }
        None => println!("skipped throughput_vs_redis: redis-server is not installed"),
    }
    let gain = at_16.value / at_1.value;
    figures.push(Figure {
        ratio: Some(gain),
        ..Figure::beside(
            "pipelining_gain",
            "pipelining gain, depth 16 / 1",
            gain,
            "x",
            at_1.value,
            Goal::AtLeast(8.0),
        )
    });
    bare.stop().await;
    if let Some(redis) = redis {
        redis.stop().await;
    }
    figures
}

/// Isolation: PING latency while the CPU pool is saturated ([`SIEVE`]), and the negative
/// control (the bare server spinning the same work inline).
async fn isolation(service: SocketAddr) -> [Figure; 2] {
    let (idle, loaded) = ping_p99_idle_and_loaded(service, SIEVE).await;
    let inline = peers::bare(true).await;
    let (_, inline_loaded) = ping_p99_idle_and_loaded(inline.addr, "SPIN 20").await;
    inline.stop().await;
    [
        Figure::beside(
            "isolation_p99",
            "PING p99, CPU pool busy / idle",
            loaded.as_secs_f64() * 1e3,
            "ms",
            idle.as_secs_f64() * 1e3,
            Goal::AtMost(3.0),
        ),
        Figure::beside(
            "inline_blocking_p99",
            "the same, CPU work inline (control)",
            inline_loaded.as_secs_f64() * 1e3,
            "ms",
            loaded.as_secs_f64() * 1e3,
            Goal::AtLeast(10.0),
        ),
    ]
}

/// Timer lateness under mixed load, beside the bare server's tokio timer. Rounds alternate, and
/// the figure is the median of their ratios, as for throughput.
async fn timer_overshoot(service: SocketAddr) -> Figure {
    let bare = peers::bare(false).await;
    let mut lateness = Vec::new();
    for _ in 0..ROUNDS {
        let late = timer_lateness(service).await.as_secs_f64() * 1e3;
        lateness.push(vec![late, timer_lateness(bare.addr).await.as_secs_f64() * 1e3]);
    }
    bare.stop().await;
    Figure::rounds(
        "timer_overshoot_p99_ms",
        "`SLEEP 10` p99 lateness / bare tokio",
        paired(&lateness, 1),
        "ms",
        Goal::AtMost(1.5),
    )
}

/// Memory per idle connection: among 1,000 that each answered one PING ([`bytes_per_connection`]).
async fn memory_per_connection(service: &peers::Process) -> Figure {
    let per_connection = bytes_per_connection(service, 1000, || idle::open(service.addr)).await;
    Figure::alone("bytes_per_idle_connection", MEMORY_ROW, per_connection, "bytes", Goal::AtMost(16384.0))
}

/// The service's resident memory per connection: before, and 200 ms after `count` connections
/// that `open` makes one after the other and that stay open meanwhile (the plain figure's, and
/// TLS's in `tls.rs`).
pub(crate) async fn bytes_per_connection<C, F>(
    service: &peers::Process,
    count: usize,
    mut open: impl FnMut() -> F,
) -> f64
where
    F: Future<Output = C>,
{
    let before = service.resident_bytes().await;
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        held.push(open().await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    service.resident_bytes().await.saturating_sub(before) as f64 / count as f64
}

/// The figures of the CPU crate's bridges, in this process: no server is involved.
async fn cpu_figures() -> Vec<Figure> {
    let mut figures = Vec::new();
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
    let row = "no-op via rayon, spawn_blocking";
    figures.push(Figure::alone("offload_noop_us", row, rayon_noop.as_secs_f64() * 1e6, "us", Goal::Watch));
    figures.push(Figure::alone(
        "spawn_blocking_noop_us",
        row,
        blocking_noop.as_secs_f64() * 1e6,
        "us",
        Goal::Watch,
    ));
    // The bridge's cost on a 1 ms job, and the sieve's speed-up on two threads, each from paired
    // rounds that alternate which side goes first ([`alternating`]); each round is long enough
    // (tens of ms) that a timer tick or a context switch is a small part of it.
    let jobs = alternating(
        4 * ROUNDS + 1,
        || async {
            let start = Instant::now();
            for _ in 0..JOBS_PER_ROUND {
                std::hint::black_box(pool.spawn(one_millisecond_of_work).await.expect("work"));
            }
            start.elapsed().as_secs_f64() * 1e3 / JOBS_PER_ROUND as f64
        },
        || async {
            let start = Instant::now();
            for _ in 0..JOBS_PER_ROUND {
                std::hint::black_box(one_millisecond_of_work());
            }
            start.elapsed().as_secs_f64() * 1e3 / JOBS_PER_ROUND as f64
        },
    )
    .await;
    let row = "1 ms job via the bridge / inline";
    figures.push(Figure::rounds("offload_1ms_ratio", row, paired(&jobs, 1), "ms", Goal::AtMost(1.1)));
    let single = cpu::CpuPool::new(1).expect("a pool");
    // [one thread, two]: the ratio is the speed-up.
    let sieves = alternating(2 * ROUNDS + 1, || sieve_seconds(&single), || sieve_seconds(&pool)).await;
    let row = "sieve time, 1 thread / 2";
    figures.push(Figure::rounds("parallel_speedup", row, paired(&sieves, 1), "s", Goal::AtLeast(1.7)));
    figures
}

/// Seconds to count the primes below 100,000,000 on `pool`.
async fn sieve_seconds(pool: &cpu::CpuPool) -> f64 {
    let start = Instant::now();
    std::hint::black_box(pool.spawn(|| cpu::primes::count_below(100_000_000)).await.expect("a count"));
    start.elapsed().as_secs_f64()
}

/// `rounds` paired rounds of `first` and `second`, in turn first in a round, each round as
/// [`paired`] takes them: `[first, second]`.
async fn alternating<F, S, FF, SF>(rounds: usize, first: F, second: S) -> Vec<Vec<f64>>
where
    F: Fn() -> FF,
    S: Fn() -> SF,
    FF: Future<Output = f64>,
    SF: Future<Output = f64>,
{
    let mut measured = Vec::new();
    for round in 0..rounds {
        let (a, b) = if round % 2 == 0 {
            let a = first().await;
            (a, second().await)
        } else {
            let b = second().await;
            (first().await, b)
        };
        measured.push(vec![a, b]);
    }
    measured
}

/// The machine, for the report: CPUs, their model and the memory.
fn machine() -> String {
    #[expect(clippy::disallowed_methods, reason = "reads of /proc before the runtime starts")]
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name").and_then(|rest| rest.split(':').nth(1)))
        .map_or("an unknown CPU", str::trim)
        .to_owned();
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get);
    let memory_kib: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    format!("{cpus} x {model}, {:.0} GiB", memory_kib as f64 / 1024.0 / 1024.0)
}

fn main() {
    if std::env::args().any(|arg| arg == peers::BARE_SERVER) {
        return bare::main();
    }
    #[cfg(feature = "http")]
    if std::env::args().any(|arg| arg == http::BARE_HTTP_SERVER) {
        return http::main();
    }
    #[cfg(feature = "http")]
    if std::env::args().any(|arg| arg == http::BARE_AXUM_SERVER) {
        return http::axum_main();
    }
    if std::env::args().any(|arg| arg == "--record") {
        return record();
    }
    if std::env::args().any(|arg| arg == PROBE) {
        return probe();
    }
    let binary = peers::build_service();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    let mut figures = runtime.block_on(server_figures(&binary));
    figures.extend(runtime.block_on(cpu_figures()));
    drop(runtime);

    println!("{:<36} {:>14} {:<6} {:>14} {:>8}  goal", "figure", "value", "unit", "baseline", "ratio");
    for figure in &figures {
        let baseline = figure.baseline.map_or(String::from("-"), |b| format!("{b:.1}"));
        let ratio = figure.ratio.map_or(String::from("-"), |r| format!("{r:.2}"));
        let goal = match figure.judged() {
            (Some(goal), Some(true)) => format!("{goal} (met)"),
            (Some(goal), _) => format!("{goal} (NOT MET)"),
            (None, _) => String::from("watch"),
        };
        println!(
            "{:<36} {:>14.1} {:<6} {:>14} {:>8}  {goal}",
            figure.name, figure.value, figure.unit, baseline, ratio
        );
    }
    let date = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let report = serde_json::json!({
        "machine": machine(),
        "date": date[..10],
        "figures": figures.iter().map(Figure::json).collect::<Vec<_>>(),
    });
    write(&workspace().join(REPORT), &format!("{report:#}\n"));
}

/// `-- --probe`: starts the service and says which figures a run would skip because the
/// service lacks their command, measuring nothing. The template's CI runs it after removing the
/// example commands.
fn probe() {
    let binary = peers::build_service();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        let service = peers::service(&binary, SERVICE_FLAGS).await;
        for request in [PRIMES_PROBE, SLEEP_PROBE] {
            if has_command(service.addr, request).await {
                println!("measured: the figures that send {}", request.split(' ').next().unwrap_or_default());
            }
        }
        service.stop().await;
    });
}

/// `-- --record`: keeps the last report ([`REPORT`]) as the recorded one and writes the README's
/// table from it (and its twin's, in the template) and this release's row of instructions per
/// PING, measuring nothing.
fn record() {
    let workspace = workspace();
    #[expect(clippy::disallowed_methods, reason = "no runtime runs: this is all the bench does")]
    let read = |path: &Path| std::fs::read_to_string(path);
    let text = read(&workspace.join(REPORT))
        .unwrap_or_else(|error| panic!("{REPORT}: {error}; run the bench first"));
    let report: serde_json::Value = serde_json::from_str(&text).expect("the report is JSON");
    let manifest = read(&workspace.join("Cargo.toml")).expect("the workspace's Cargo.toml");
    write(&workspace.join(bench_report::RECORDED), &text);
    // The README has this project's parts' rows; the template's twin, if here, every row under
    // its part's condition.
    for (name, parts) in [("README.md", Parts::Of(&manifest)), ("README.md.liquid", Parts::Conditioned)] {
        let readme = workspace.join(name);
        let Ok(text) = read(&readme) else { continue };
        let table = bench_report::table(&report, parts).expect("the report makes a table");
        write(&readme, &bench_report::with_table(&text, &table).expect("the README has a bench table"));
    }
    // This release's row of instructions per PING (none without valgrind's counts).
    let page = workspace.join(bench_report::RELEASES);
    let release = bench_report::template_version(&manifest).expect("the template's version in Cargo.toml");
    if let Some(row) = bench_report::release_row(&report, release) {
        let text = read(&page).unwrap_or_else(|error| panic!("{}: {error}", bench_report::RELEASES));
        write(&page, &bench_report::with_release_row(&text, &row).expect("the page has a table of releases"));
    }
}

/// The workspace's root.
fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace")
}

/// Writes `text` to `path` and says so.
fn write(path: &Path, text: &str) {
    #[expect(clippy::disallowed_methods, reason = "written once, after the runtime has finished")]
    let written = std::fs::create_dir_all(path.parent().expect("a file in a directory"))
        .and_then(|()| std::fs::write(path, text));
    written.unwrap_or_else(|error| panic!("write {}: {error}", path.display()));
    println!("wrote {}", path.display());
}
