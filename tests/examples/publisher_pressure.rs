//! What one publisher costs everybody else, against a running server (the release binary in its
//! own process, as users run it): SUBSCRIBERS connections subscribe to `amp` and read everything,
//! then one connection pipelines `PUBLISH amp <1000 bytes>` 32 deep for SECONDS, and the
//! deliveries per second are printed. Run a bystander beside it, in a process of its own:
//!
//! ```sh
//! cargo run --release -p NAME -- serve --max-connections 2048 --max-line 2048 &
//! cargo run --release -p NAME-tests --example publisher_pressure -- 127.0.0.1:7878 1000 5 &
//! sleep 2; cargo run --release -p NAME -- load --connections 1 --rate 200 --duration 2s PING
//! ```

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use service::load::{LoadPlan, run};

const PATIENCE: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(addr), Some(subscribers), Some(seconds)) = (
        args.first().cloned(),
        args.get(1).and_then(|n| n.parse::<usize>().ok()).filter(|n| (1..=10_000).contains(n)),
        args.get(2).and_then(|n| n.parse::<u64>().ok()).filter(|n| (1..=3600).contains(n)),
    ) else {
        eprintln!("usage: publisher_pressure ADDR SUBSCRIBERS(1..=10000) SECONDS(1..=3600)");
        std::process::exit(2);
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let (readers, delivered) = testkit::reading_subscribers(&addr, subscribers, "amp", &stop).await;
    let publish = format!("PUBLISH amp {}", "x".repeat(1000));
    let plan = LoadPlan {
        addr,
        connections: 1,
        depth: 32,
        duration: Duration::from_secs(seconds),
        rate: None,
        requests: vec![publish],
        connect_timeout: PATIENCE,
        timeout: PATIENCE,
        #[cfg(feature = "tls")]
        tls: None,
    };
    let started = Instant::now();
    let report = run(&plan, Arc::default()).await.expect("the publisher runs");
    let rate = delivered.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    stop.cancel();
    readers.join_all().await;
    println!("{report}");
    println!("{subscribers} subscribers: {rate:.0} deliveries/s (MSG and LAG lines)");
}
