//! Fan-out to 100 subscribers: the service in one process, beside a bare tokio broadcast loop,
//! and two replicas relaying through Redis, beside the one process.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use testkit::{Peer, TEST_TIMEOUT};
use tokio::task::JoinSet;

use crate::{Figure, Goal, SERVICE_FLAGS, peers};

const SUBSCRIBERS: usize = 100;
const MESSAGES: usize = 20_000;
/// 64 topics of 1,024 messages keep at most 71 MiB (the 1,024 topics of the defaults could keep
/// over the 1 GiB ceiling). The publish budget is lifted: this measures the fan-out machinery,
/// and `bystander_p99_one_publisher` what the budget protects.
const FANOUT_FLAGS: &[&str] = &[
    "--topic-capacity",
    "1024",
    "--max-topics",
    "64",
    "--max-subscriptions",
    "1",
    "--publish-budget",
    "1000000000",
];

/// The figures: in one process beside the bare loop, and on two replicas through Redis beside
/// the one process (skipped without redis-server).
pub(crate) async fn figures(binary: &Path) -> Vec<Figure> {
    let bare = bare_broadcast().await;
    let flags = [SERVICE_FLAGS, FANOUT_FLAGS].concat();
    let alone = peers::service(binary, &flags).await;
    let delivered = service(&[alone.addr]).await;
    alone.stop().await;
    let row = "fan-out to 100 / bare";
    #[cfg_attr(not(feature = "redis"), expect(unused_mut, reason = "only the two replicas' figure is added"))]
    let mut figures = vec![Figure::beside("fanout_msgs_per_s", row, delivered, "msg/s", bare, Goal::Watch)];
    #[cfg(feature = "redis")]
    figures.extend(two_replicas(binary, &flags, delivered).await);
    figures
}

/// Two replicas through Redis, beside one process's `alone` (skipped without redis-server).
#[cfg(feature = "redis")]
async fn two_replicas(binary: &Path, flags: &[&str], alone: f64) -> Option<Figure> {
    let Some(redis) = peers::redis().await else {
        println!("skipped fanout_two_replicas_redis_msgs_per_s: redis-server is not installed");
        return None;
    };
    let url = format!("redis://{}", redis.addr);
    let relayed_flags = [flags, &["--fanout-url", &url]].concat();
    let replicas =
        [peers::service(binary, &relayed_flags).await, peers::service(binary, &relayed_flags).await];
    let relayed = service(&[replicas[0].addr, replicas[1].addr]).await;
    for replica in replicas {
        replica.stop().await;
    }
    redis.stop().await;
    let row = "fan-out, 2 replicas via Redis / 1 process";
    Some(Figure::beside("fanout_two_replicas_redis_msgs_per_s", row, relayed, "msg/s", alone, Goal::Watch))
}

/// One tokio broadcast channel, 100 receiving tasks; messages received per second.
async fn bare_broadcast() -> f64 {
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
/// first; MSG lines received per second. With more than one server (replicas through a broker),
/// publishing waits until the broker says every one subscribes (`OK <replicas>`).
async fn service(servers: &[SocketAddr]) -> f64 {
    let mut subscribers = JoinSet::new();
    for index in 0..SUBSCRIBERS {
        let mut peer = Peer::tcp(servers[index % servers.len()]).await;
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
    let mut publisher =
        service::Client::connect(servers[0], TEST_TIMEOUT, TEST_TIMEOUT).await.expect("connect");
    if servers.len() > 1 {
        let everywhere = format!("OK {}", servers.len());
        while publisher.request("PUBLISH bench probe").await.expect("an answer") != everywhere {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let start = Instant::now();
    for batch in 0..MESSAGES / 100 {
        let requests: Vec<String> = (0..100).map(|i| format!("PUBLISH bench {}", batch * 100 + i)).collect();
        publisher.pipeline(requests.iter().map(String::as_str)).await.expect("answers");
    }
    let received: usize = subscribers.join_all().await.into_iter().sum();
    received as f64 / start.elapsed().as_secs_f64()
}
