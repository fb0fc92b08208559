//! The admin endpoints over loopback, on real time: probes, metrics, and the order of a cluster
//! shutdown (not ready, still serving for the drain delay, then the listener closes).

use std::time::Duration;

use service::Config;
use testkit::{TEST_TIMEOUT, TestServer, admin_get, eventually, parse_metrics, test_config};
use tokio::net::TcpStream;

#[tokio::test]
async fn probes_answer_and_unknown_paths_do_not() {
    let server = TestServer::start(test_config());
    assert_eq!(admin_get(server.admin_addr, "/livez").await, (200, "live\n".to_owned()));
    assert_eq!(admin_get(server.admin_addr, "/readyz").await, (200, "ready\n".to_owned()));
    assert_eq!(admin_get(server.admin_addr, "/nothing").await.0, 404);
    server.stop().await;
}

#[tokio::test]
async fn metrics_parse_and_count_what_was_served() {
    let server = TestServer::start(test_config());
    let mut client = server.client().await;
    assert_eq!(client.request("PING").await.unwrap(), "OK PONG");
    assert_eq!(client.request("PRIMES 1000").await.unwrap(), "OK 168");
    let (status, text) = admin_get(server.admin_addr, "/metrics").await;
    assert_eq!(status, 200);
    let samples = parse_metrics(&text);
    let prefix = env!("CARGO_PKG_NAME").trim_end_matches("-tests").replace('-', "_");
    let sample = |series: &str| {
        let name = format!("{prefix}_{series}");
        *samples.get(&name).unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    assert_eq!(sample("connections"), 1.0);
    assert_eq!(sample(r#"jobs_total{outcome="done"}"#), 1.0);
    assert_eq!(sample(r#"request_duration_seconds_count{command="PING"}"#), 1.0);
    assert_eq!(sample(r#"request_duration_seconds_count{command="PRIMES"}"#), 1.0);
    assert_eq!(sample("job_queue_wait_seconds_count"), 1.0);
    assert_eq!(sample("job_run_seconds_count"), 1.0);
    assert!(sample("tokio_workers") >= 1.0);
    assert!(sample("tokio_alive_tasks") >= 1.0);
    assert!((0.0..=1.0).contains(&sample("tokio_busy_ratio")));
    assert!(sample("watchdog_worst_lag_seconds") >= 0.0);
    server.stop().await;
}

/// SIGTERM in a cluster: `/readyz` turns 503 at once while the service still answers on open
/// connections and still accepts new ones; only after the drain delay does the listener close.
#[tokio::test]
async fn shutdown_turns_ready_off_first_then_serves_for_the_drain_delay_then_closes() {
    let server = TestServer::start(Config { drain_delay: Duration::from_millis(800), ..test_config() });
    let mut open = server.client().await;
    server.shutdown().begin.cancel();
    let start = std::time::Instant::now();
    eventually("readyz is 503", || server.health().shutting_down).await;
    assert_eq!(admin_get(server.admin_addr, "/readyz").await, (503, "shutting down\n".to_owned()));
    assert_eq!(admin_get(server.admin_addr, "/livez").await.0, 200, "alive while draining");
    assert_eq!(open.request("PING").await.unwrap(), "OK PONG", "still serving");
    let mut new = server.client().await;
    assert_eq!(new.request("PING").await.unwrap(), "OK PONG", "still accepting during the delay");
    assert!(start.elapsed() < Duration::from_millis(800), "all of the above within the delay");
    // Connect until refused: the listener has closed.
    let refused = async {
        while TcpStream::connect(server.addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(TEST_TIMEOUT, refused).await.expect("the listener closes");
    assert!(start.elapsed() >= Duration::from_millis(800), "closed only after the delay");
    drop((open, new));
    server.stop().await;
}
