//! The admin endpoints over loopback, on real time: probes, metrics, and the order of a cluster
//! shutdown (not ready, still serving for the drain delay, then the listener closes).

use std::collections::BTreeMap;
use std::time::Duration;

use service::Config;
use testkit::{
    HttpResponse, TEST_TIMEOUT, TestServer, admin_get, admin_request, eventually, parse_metrics, test_config,
};
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
    assert_eq!(client.request("SPIN 1").await.unwrap(), "OK 1");
    let HttpResponse { status, head, body: text } =
        admin_request(server.admin_addr, "GET", "/metrics", &[("Accept", "application/openmetrics-text")])
            .await;
    assert_eq!(status, 200);
    assert!(head.contains("application/openmetrics-text; version=1.0.0"), "{head}");
    assert!(text.ends_with("# EOF\n"), "OpenMetrics text ends with # EOF");
    let samples = parse_metrics(&text);
    let prefix = env!("CARGO_PKG_NAME").trim_end_matches("-tests").replace('-', "_");
    let sample = |series: &str| {
        let name = format!("{prefix}_{series}");
        *samples.get(&name).unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    assert_eq!(sample("connections"), 1.0);
    assert_eq!(sample(r#"jobs_total{outcome="done"}"#), 1.0);
    assert_eq!(sample(r#"request_duration_seconds_count{command="PING"}"#), 1.0);
    assert_eq!(sample(r#"request_duration_seconds_count{command="SPIN"}"#), 1.0);
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

/// Every histogram, in both formats, as `histogram_quantile` needs it: buckets cumulative, the
/// last one `le="+Inf"` and equal to `_count`, and a `_sum`. `HEAD` answers as `GET`, without a
/// body.
#[tokio::test]
async fn every_histogram_ends_at_inf_and_adds_up_in_both_formats() {
    let server = TestServer::start(test_config());
    let mut client = server.client().await;
    for request in ["PING", "SPIN 1", "WAIT 1"] {
        assert!(client.request(request).await.unwrap().starts_with("OK"));
    }
    let formats = [
        ("application/openmetrics-text; version=1.0.0", "application/openmetrics-text; version=1.0.0"),
        ("text/plain; version=0.0.4", "text/plain; version=0.0.4"),
    ];
    for (accept, content_type) in formats {
        let HttpResponse { status, head, body: text } =
            admin_request(server.admin_addr, "GET", "/metrics", &[("Accept", accept)]).await;
        assert_eq!(status, 200);
        assert!(head.contains(content_type), "{head}");
        let samples = parse_metrics(&text);
        // Each histogram series (a family and its labels but `le`), with its buckets in order.
        let mut histograms: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let Some((name, labels)) = series.split_once("_bucket{") else { continue };
            let (le, others): (Vec<&str>, Vec<&str>) =
                labels.trim_end_matches('}').split(',').partition(|label| label.starts_with("le="));
            let key =
                if others.is_empty() { name.to_owned() } else { format!("{name}{{{}}}", others.join(",")) };
            histograms.entry(key).or_default().push((le.concat(), value.parse().unwrap()));
        }
        assert!(histograms.len() >= 3, "requests, queue wait, run time:\n{text}");
        for (key, buckets) in &histograms {
            let suffixed = |suffix: &str| match key.split_once('{') {
                Some((name, labels)) => format!("{name}{suffix}{{{labels}"),
                None => format!("{key}{suffix}"),
            };
            let (last, total) = buckets.last().unwrap();
            assert_eq!(last, r#"le="+Inf""#, "{key} ends at +Inf:\n{text}");
            assert!(buckets.windows(2).all(|pair| pair[0].1 <= pair[1].1), "{key} is cumulative");
            assert_eq!(samples.get(&suffixed("_count")), Some(total), "{key}: +Inf equals _count");
            assert!(samples.get(&suffixed("_sum")).is_some_and(|sum| *sum >= 0.0), "{key} has a _sum");
        }
        assert_eq!(
            histograms.values().filter(|buckets| buckets.last().unwrap().1 > 0.0).count(),
            5,
            "PING, SPIN, WAIT, queue wait and run time observed"
        );
    }
    for path in ["/livez", "/metrics"] {
        let HttpResponse { status, head, body } = admin_request(server.admin_addr, "HEAD", path, &[]).await;
        assert_eq!((status, body.as_str()), (200, ""), "HEAD {path}: {head}");
    }
    server.stop().await;
}

/// A probe is answered within a kubelet's 1 s while 1,000 peers that send nothing and 20 that
/// trickle a request a byte every 200 ms hold admin connections (each reconnects when closed).
/// Linux only: the peers need over 1,000 file descriptors, past macOS's default limit of 256.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_get_through_while_a_thousand_silent_and_twenty_trickling_peers_hold_connections() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio_util::sync::CancellationToken;

    const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
    let server = TestServer::start(test_config());
    let admin = server.admin_addr;
    let stop = CancellationToken::new();
    let mut peers = tokio::task::JoinSet::new();
    for trickles in std::iter::repeat_n(false, 1000).chain(std::iter::repeat_n(true, 20)) {
        let stop = stop.clone();
        peers.spawn(async move {
            while !stop.is_cancelled() {
                let Ok(Ok(mut stream)) = tokio::time::timeout(TEST_TIMEOUT, TcpStream::connect(admin)).await
                else {
                    continue;
                };
                let hold = async {
                    if trickles {
                        stream.write_all(b"GET /livez HTTP/1.1\r\n").await?;
                        loop {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            stream.write_all(b"X").await?;
                        }
                    }
                    // Silent: wait for the server to close.
                    let mut byte = [0; 1];
                    stream.read(&mut byte).await
                };
                tokio::select! {
                    () = stop.cancelled() => {}
                    _closed = hold => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        });
    }
    // Let the peers take every slot first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let probe = || async {
        let mut stream = TcpStream::connect(admin).await.ok()?;
        stream.write_all(b"GET /livez HTTP/1.1\r\nHost: kubelet\r\n\r\n").await.ok()?;
        let mut response = Vec::new();
        while stream.read_buf(&mut response).await.ok()? > 0 {}
        String::from_utf8(response).ok()?.split(' ').nth(1)?.parse::<u16>().ok()
    };
    let (mut answered, mut slowest) = (0, Duration::ZERO);
    let mut ticks = tokio::time::interval(Duration::from_millis(50));
    let probes = 60;
    for _ in 0..probes {
        ticks.tick().await;
        let started = std::time::Instant::now();
        if let Ok(Some(200)) = tokio::time::timeout(PROBE_TIMEOUT, probe()).await {
            answered += 1;
            slowest = slowest.max(started.elapsed());
        }
    }
    stop.cancel();
    while peers.join_next().await.is_some() {}
    println!(
        "{answered} of {probes} probes answered 200 within {PROBE_TIMEOUT:?}, the slowest in {slowest:?}"
    );
    assert_eq!(answered, probes, "every probe answered in time");
    server.stop().await;
}
