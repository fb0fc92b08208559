//! Fan-out beside a pub/sub server people know: messages delivered a second to 100 and to 1,000
//! subscribers of one topic, from one pipelining publisher, by the service and by redis-server's
//! own PUBLISH/SUBSCRIBE (skipped without redis-server); and two replicas relaying through Redis,
//! beside one process.
//!
//! One client speaks to both ([`Wire`]): redis-server takes the same request lines (RESP's
//! inline commands, `SUBSCRIBE bench` and `PUBLISH bench 00000042`) and answers each PUBLISH with
//! one line, as the service does. A subscriber only counts the newlines it reads, the same work
//! per byte for both; a message is one line of the service's (`MSG bench
//! 00000042`) and seven of RESP's. Messages are counted until the last one arrives, or until a
//! subscriber has heard nothing for [`QUIET`] (one the server dropped, or told `LAG`): the rate
//! is over the time to the last byte, so a drop is missing deliveries, never idle time.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use testkit::TEST_TIMEOUT;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::{Figure, Goal, ROUNDS, SERVICE_FLAGS, alternating, paired, peers};

/// The subscriber counts of the two figures.
const SUBSCRIBERS: [usize; 2] = [100, 1000];
/// Deliveries a round aims at: messages x subscribers.
const DELIVERIES: usize = 2_000_000;
/// PUBLISHes written before their answers are read.
const PIPELINE: usize = 100;
/// A subscriber that has heard nothing this long has had all it will get.
const QUIET: Duration = Duration::from_millis(500);
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
    "--process-publish-budget",
    "1000000000",
];

/// How a server's answers are laid out, in lines ('\n'); its requests are the same lines.
#[derive(Clone, Copy)]
struct Wire {
    /// The lines of the answer to `SUBSCRIBE bench`.
    subscribed: usize,
    /// The lines of one message pushed to a subscriber.
    message: usize,
}

/// The service: `OK 1`, then `MSG bench <text>`.
const SERVICE: Wire = Wire { subscribed: 1, message: 1 };
/// RESP: `*3 $9 subscribe $5 bench :1`, then `*3 $7 message $5 bench $8 <text>`.
const RESP: Wire = Wire { subscribed: 6, message: 7 };

/// The figures: the service beside redis-server at each subscriber count, and two replicas
/// through Redis beside one process (each skipped without redis-server).
pub(crate) async fn figures(binary: &Path) -> Vec<Figure> {
    let Some(redis) = peers::redis().await else {
        println!("skipped the fan-out figures: redis-server is not installed");
        return Vec::new();
    };
    let flags = [SERVICE_FLAGS, FANOUT_FLAGS].concat();
    let service = peers::service(binary, &flags).await;
    let mut figures = Vec::new();
    let mut alone = 0.0;
    let (at_service, at_redis) = ([service.addr], [redis.addr]);
    for (subscribers, name) in SUBSCRIBERS.into_iter().zip(["fanout_100_vs_redis", "fanout_1000_vs_redis"]) {
        let rounds = alternating(
            ROUNDS,
            || delivered(&at_service, subscribers, SERVICE),
            || delivered(&at_redis, subscribers, RESP),
        )
        .await;
        let figure = paired(&rounds, 1);
        let goal = if subscribers == SUBSCRIBERS[0] { Goal::AtLeast(1.2) } else { Goal::AtLeast(2.0) };
        let row = "fan-out / redis-server, 100, 1,000 subscribers";
        figures.push(Figure::rounds(name, row, figure, "msg/s", goal));
        if subscribers == SUBSCRIBERS[0] {
            alone = figure.value;
        }
    }
    service.stop().await;
    #[cfg(feature = "redis")]
    figures.push(two_replicas(binary, &flags, &redis, alone).await);
    #[cfg(not(feature = "redis"))]
    let _ = alone;
    redis.stop().await;
    figures
}

/// Two replicas relaying through `redis`, 100 subscribers spread over them, beside one
/// process's `alone`.
#[cfg(feature = "redis")]
async fn two_replicas(binary: &Path, flags: &[&str], redis: &peers::Process, alone: f64) -> Figure {
    let url = format!("redis://{}", redis.addr);
    let relayed_flags = [flags, &["--fanout-url", &url]].concat();
    let replicas =
        [peers::service(binary, &relayed_flags).await, peers::service(binary, &relayed_flags).await];
    let addrs = [replicas[0].addr, replicas[1].addr];
    let mut rounds = Vec::new();
    for _ in 0..ROUNDS {
        rounds.push(delivered(&addrs, SUBSCRIBERS[0], SERVICE).await);
    }
    for replica in replicas {
        replica.stop().await;
    }
    let row = "fan-out, 2 replicas via Redis / 1 process";
    let relayed = crate::median_of(rounds);
    Figure::beside("fanout_two_replicas_redis_msgs_per_s", row, relayed, "msg/s", alone, Goal::AtLeast(0.8))
}

/// Messages delivered a second: `subscribers` spread over `servers`, each subscribed to `bench`,
/// and one publisher on the first server pipelining [`DELIVERIES`] / `subscribers` messages.
async fn delivered(servers: &[SocketAddr], subscribers: usize, wire: Wire) -> f64 {
    let messages = DELIVERIES / subscribers;
    let mut reading = JoinSet::new();
    for index in 0..subscribers {
        let mut stream = connect(servers[index % servers.len()]).await;
        stream.write_all(b"SUBSCRIBE bench\n").await.expect("send SUBSCRIBE");
        lines(&mut stream, wire.subscribed).await;
        reading.spawn(count_messages(stream, messages * wire.message));
    }
    let mut publisher = connect(servers[0]).await;
    if servers.len() > 1 {
        every_replica_subscribes(servers).await;
    }
    let start = Instant::now();
    for batch in 0..messages.div_ceil(PIPELINE) {
        let (from, to) = (batch * PIPELINE, ((batch + 1) * PIPELINE).min(messages));
        let requests: String = (from..to).map(|i| format!("PUBLISH bench {i:08}\n")).collect();
        publisher.write_all(requests.as_bytes()).await.expect("send PUBLISHes");
        lines(&mut publisher, to - from).await;
    }
    let (mut received, mut last) = (0, start);
    for (lines, at) in reading.join_all().await {
        received += lines / wire.message;
        last = last.max(at);
    }
    assert!(received > 0, "no message was delivered");
    received as f64 / last.duration_since(start).as_secs_f64()
}

/// Waits until a PUBLISH on the first of `servers` reaches subscribers on each (the broker
/// says so: `OK <replicas>`). The subscribers count each probe as a message: a few among
/// thousands.
async fn every_replica_subscribes(servers: &[SocketAddr]) {
    let mut client = service::Client::connect(servers[0], TEST_TIMEOUT, TEST_TIMEOUT).await.expect("connect");
    let everywhere = format!("OK {}", servers.len());
    while client.request("PUBLISH bench probe").await.expect("an answer") != everywhere {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A connection to `addr`, without Nagle's delay (the publisher's batches go out at once).
async fn connect(addr: SocketAddr) -> TcpStream {
    let stream = tokio::time::timeout(TEST_TIMEOUT, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    stream
}

/// Reads `count` answer lines (nothing else is sent meanwhile), and checks that none is an
/// error (`ERR ...` from the service, `-ERR ...` from redis-server).
async fn lines(stream: &mut TcpStream, count: usize) {
    let mut answers = Vec::new();
    let mut buffer = [0; 4096];
    while newlines(&answers) < count {
        let read = tokio::time::timeout(TEST_TIMEOUT, stream.read(&mut buffer))
            .await
            .expect("answers in time")
            .expect("read answers");
        assert!(read > 0, "the server closed the connection");
        answers.extend_from_slice(&buffer[..read]);
    }
    let answers = String::from_utf8_lossy(&answers);
    assert!(!answers.contains("ERR"), "{answers}");
}

/// One subscriber: reads until it has `expected` lines or hears nothing for [`QUIET`]; the
/// lines it read, and when the last came.
async fn count_messages(mut stream: TcpStream, expected: usize) -> (usize, Instant) {
    let mut buffer = vec![0; 64 * 1024];
    let (mut lines, mut last) = (0, Instant::now());
    while lines < expected {
        match tokio::time::timeout(QUIET, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(read)) => {
                lines += newlines(&buffer[..read]);
                last = Instant::now();
            }
            Ok(Err(error)) => panic!("a subscriber's read: {error}"),
        }
    }
    (lines, last)
}

fn newlines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&byte| byte == b'\n').count()
}
