//! What one publisher costs everybody else: a bystander's PING latency (open loop) while one
//! connection pipelines `PUBLISH` of 1,000 bytes to 1,000 subscribers that read everything,
//! beside the same PING latency with nobody publishing, at the default `--publish-budget`. The
//! server is a process of its own and the bystander runs on a runtime of its own, on a thread of
//! its own, so its latency is the server's doing, not its own client's queue.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use service::load::{LoadPlan, LoadReport};

use crate::{Figure, Goal, SERVICE_FLAGS, load, peers, plan};

const SUBSCRIBERS: usize = 1000;
const LOAD: Duration = Duration::from_secs(3);
/// The bystander's PINGs a second: 3,000 in a run, so that its p99 is the 30th slowest, not
/// the 6th of 600 (which swung twofold between runs).
const BYSTANDER_RATE: u64 = 1000;

pub(crate) async fn figure(binary: &Path) -> Figure {
    let server = peers::service(binary, &[SERVICE_FLAGS, &["--max-line", "2048"]].concat()).await;
    let Bystander { alone, loaded, rate } = bystander_p99(server.addr).await;
    server.stop().await;
    println!("one publisher to {SUBSCRIBERS} subscribers, default budget: {rate:.0} deliveries/s");
    Figure::beside(
        "bystander_p99_one_publisher",
        "PING p99, a publisher to 1,000 / idle",
        loaded.as_secs_f64() * 1e3,
        "ms",
        alone.as_secs_f64() * 1e3,
        Goal::AtMost(3.0),
    )
}

/// What the bystander saw.
struct Bystander {
    /// Its PING p99 with nobody publishing.
    alone: Duration,
    /// Its PING p99 while the publisher runs.
    loaded: Duration,
    /// Messages delivered per second meanwhile.
    rate: f64,
}

/// The bystander's PING p99 alone, then while the publisher runs; and the messages delivered
/// per second meanwhile.
async fn bystander_p99(addr: SocketAddr) -> Bystander {
    let stop = tokio_util::sync::CancellationToken::new();
    let (subscribers, delivered) =
        testkit::reading_subscribers(&addr.to_string(), SUBSCRIBERS, "amp", &stop).await;
    let ping = LoadPlan { rate: Some(BYSTANDER_RATE), duration: LOAD, ..plan(addr, 1, 1, &["PING"]) };
    let alone = apart(ping.clone()).await.quantile(0.99);
    let publish = format!("PUBLISH amp {}", "x".repeat(1000));
    let publisher = LoadPlan { duration: LOAD, ..plan(addr, 1, 32, &[publish.as_str()]) };
    let before = delivered.load(Ordering::Relaxed);
    let started = Instant::now();
    let (bystander, _) = tokio::join!(apart(ping), load(&publisher));
    let rate = (delivered.load(Ordering::Relaxed) - before) as f64 / started.elapsed().as_secs_f64();
    stop.cancel();
    subscribers.join_all().await;
    Bystander { alone, loaded: bystander.quantile(0.99), rate }
}

/// Runs `plan` on a `current_thread` runtime on a thread of its own.
async fn apart(plan: LoadPlan) -> LoadReport {
    let (report, received) = tokio::sync::oneshot::channel();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let _ = report.send(runtime.block_on(load(&plan)));
    });
    let report = received.await.expect("the load thread reports");
    // The thread has sent its report: it is ending, and the join does not wait.
    #[expect(clippy::disallowed_methods, reason = "the thread has already sent its last value")]
    thread.join().expect("the load thread does not panic");
    report
}
