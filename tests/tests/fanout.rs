//! Fan-out: PUBLISH, SUBSCRIBE and UNSUBSCRIBE. Paused time over duplex for the exact timings and
//! counts, loopback for many subscribers at once, and a property test against a model.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use service::Config;
use testkit::{Harness, Peer, TEST_TIMEOUT, TestServer, count, test_config};
use tokio::io::AsyncWriteExt as _;
use tokio::time::{self, Instant};

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The value of `key` in a `STATS` answer.
fn stat(stats: &str, key: &str) -> u64 {
    let prefix = format!("{key}=");
    stats
        .split(' ')
        .find_map(|pair| pair.strip_prefix(&prefix))
        .and_then(|value| value.parse().ok())
        .expect(key)
}

/// Ten messages published in one burst to a topic that keeps four: the subscriber is told it
/// missed exactly six, then gets the last four, in order.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_subscriber_that_falls_behind_gets_lag_with_the_exact_count() {
    let harness = Harness::start(&Config { topic_capacity: count(4), ..test_config() });
    let mut subscriber = harness.connect();
    let mut publisher = harness.connect();
    assert_eq!(subscriber.request("SUBSCRIBE news").await.as_deref(), Some("OK 1"));
    let burst: String = (0..10).map(|i| format!("PUBLISH news {i}\n")).collect();
    publisher.send(burst.as_bytes()).await.unwrap();
    for _ in 0..10 {
        assert_eq!(publisher.answer().await.as_deref(), Some("OK 1"), "the publisher never waits");
    }
    let mut lines = vec![subscriber.answer().await.unwrap()];
    for _ in 0..4 {
        lines.push(subscriber.answer().await.unwrap());
    }
    assert_eq!(lines, ["LAG news 6", "MSG news 6", "MSG news 7", "MSG news 8", "MSG news 9"]);
    harness.stop().await;
}

/// One connection pipelining PUBLISH to 10 subscribers, with a budget of 1,000 deliveries a
/// second: each PUBLISH costs 10 ms of it, a burst of 100 ms passes at once, and the 200th
/// PUBLISH starts exactly when the 1,990 ms used by the 199 before it are within that burst of
/// now: at 1.89 s. Every message still reaches every subscriber, in order.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_publisher_past_its_budget_waits_and_nothing_is_lost() {
    let config = Config { publish_budget: count(1000), idle_timeout: secs(60), ..test_config() };
    let harness = Harness::start(&config);
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let mut subscriber = harness.connect();
        assert_eq!(subscriber.request("SUBSCRIBE news").await.as_deref(), Some("OK 1"));
        readers.spawn(async move {
            let mut lines = Vec::new();
            for _ in 0..200 {
                lines.push(subscriber.answer().await.expect("a pushed line"));
            }
            lines
        });
    }
    let mut publisher = harness.connect();
    let start = Instant::now();
    let burst: String = (0..200).map(|i| format!("PUBLISH news {i}\n")).collect();
    publisher.send(burst.as_bytes()).await.unwrap();
    for _ in 0..200 {
        assert_eq!(publisher.answer().await.as_deref(), Some("OK 10"));
    }
    assert_eq!(start.elapsed(), Duration::from_millis(1890));
    let expected: Vec<String> = (0..200).map(|i| format!("MSG news {i}")).collect();
    for lines in readers.join_all().await {
        assert_eq!(lines, expected);
    }
    harness.stop().await;
}

/// A subscriber that never reads fills its pipe, and is dropped at the write timeout; the
/// publisher's answers come at once all along, before and after.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_subscriber_that_never_reads_is_dropped_at_the_write_timeout_and_publishers_never_wait() {
    let config = Config { write_timeout: secs(5), idle_timeout: secs(60), ..test_config() };
    let harness = Harness::start(&config);
    let (_unread, mut writer) = harness.connect_with_buffer(64).split();
    writer.write_all(b"SUBSCRIBE news\n").await.unwrap();
    // Let the server take the subscription in.
    time::sleep(Duration::from_millis(1)).await;
    let mut publisher = harness.connect();
    let start = Instant::now();
    let mut reached = Vec::new();
    // A message every 10 ms for 8 s: the pipe fills within the first few.
    for i in 0..800 {
        let sent = Instant::now();
        let answer = publisher.request(&format!("PUBLISH news message {i}")).await.unwrap();
        assert_eq!(sent.elapsed(), Duration::ZERO, "answered at once, whatever the subscriber does");
        reached.push((answer, sent - start));
        time::sleep(Duration::from_millis(10)).await;
    }
    let first_unreached =
        reached.iter().find(|(answer, _)| answer == "OK 0").expect("the subscriber was dropped");
    // Its write blocked on the first messages; it was dropped 5 s later, not before.
    assert!(
        first_unreached.1 >= secs(5) && first_unreached.1 <= secs(5) + Duration::from_millis(100),
        "{first_unreached:?}"
    );
    assert!(reached.iter().take_while(|(answer, _)| answer == "OK 1").count() >= 499);
    let stats = publisher.request("STATS").await.unwrap();
    assert_eq!(stat(&stats, "connections"), 1, "{stats}");
    assert_eq!(stat(&stats, "topics"), 0, "the topic went with its only subscriber: {stats}");
    harness.stop().await;
}

/// Subscribing to random names leaks nothing: topics go with their last subscriber.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn topics_are_removed_with_their_last_subscriber() {
    let harness = Harness::start(&test_config());
    let mut first = harness.connect();
    let mut second = harness.connect();
    assert_eq!(first.request("SUBSCRIBE a b c").await.as_deref(), Some("OK 3"));
    assert_eq!(second.request("SUBSCRIBE c d").await.as_deref(), Some("OK 2"));
    let topics = |stats: Option<String>| stat(&stats.unwrap(), "topics");
    assert_eq!(topics(first.request("STATS").await), 4);
    assert_eq!(first.request("UNSUBSCRIBE a c").await.as_deref(), Some("OK 1"));
    assert_eq!(topics(first.request("STATS").await), 3, "c still has a subscriber");
    second.finish().await.unwrap();
    assert_eq!(second.answer().await, None);
    assert_eq!(topics(first.request("STATS").await), 1, "c and d went with the connection");
    assert_eq!(first.request("UNSUBSCRIBE").await.as_deref(), Some("OK 0"));
    assert_eq!(topics(first.request("STATS").await), 0);
    harness.stop().await;
}

/// Pushed lines go between answers; answers keep request order.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn pushed_lines_interleave_with_answers_in_request_order() {
    let harness = Harness::start(&test_config());
    let mut subscriber = harness.connect();
    let mut publisher = harness.connect();
    let start = Instant::now();
    subscriber.send(b"SUBSCRIBE t\nWAIT 100\nPING\n").await.unwrap();
    let publish = async {
        time::sleep(Duration::from_millis(50)).await;
        publisher.request("PUBLISH t between").await
    };
    let read = async {
        let mut lines = Vec::new();
        for _ in 0..4 {
            lines.push((subscriber.answer().await.unwrap(), start.elapsed().as_millis()));
        }
        lines
    };
    let (published, lines) = tokio::join!(publish, read);
    assert_eq!(published.as_deref(), Some("OK 1"));
    let expected = [("OK 1", 0), ("MSG t between", 50), ("OK 100", 100), ("OK PONG", 100)];
    assert_eq!(lines, expected.map(|(line, at)| (line.to_owned(), at)));
    harness.stop().await;
}

/// A subscribed connection is waiting for pushes, not idle; subscriptions end at drain, after
/// the answers in flight.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_subscribed_connection_is_not_idle_and_ends_at_drain_after_its_answers() {
    let harness = Harness::start(&Config { idle_timeout: secs(10), ..test_config() });
    let mut subscriber = harness.connect();
    let start = Instant::now();
    assert_eq!(subscriber.request("SUBSCRIBE t").await.as_deref(), Some("OK 1"));
    subscriber.send(b"WAIT 30000\n").await.unwrap();
    time::sleep(secs(25)).await;
    let stats = std::sync::Arc::clone(harness.app.stats());
    assert_eq!(stats.open_connections(), 1, "still open at 25 s, past the 10 s idle timeout");
    let stop = async {
        harness.stop().await;
        start.elapsed()
    };
    let read = async { (subscriber.answer().await, subscriber.answer().await, start.elapsed()) };
    let (stopped, (answer, closed, closed_at)) = tokio::join!(stop, read);
    assert_eq!(answer.as_deref(), Some("OK 30000"), "the answer in flight first");
    assert_eq!(closed, None, "then the subscription ends with the connection");
    assert_eq!((closed_at, stopped), (secs(30), secs(30)));
}

/// 100 subscribers, 10 publishers of 1,000 messages each, over loopback: every subscriber
/// accounts for every message of every topic (received + missed = published), and each topic's
/// messages arrive in publish order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_subscribers_account_for_every_message_in_order() {
    const TOPICS: usize = 10;
    const MESSAGES: usize = 1000;
    let config = Config { max_connections: count(256), topic_capacity: count(256), ..test_config() };
    let server = TestServer::start(config);
    let all_topics: Vec<String> = (0..TOPICS).map(|t| format!("topic-{t}")).collect();
    let mut subscribers = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let mut peer = server.connect().await;
        let answer = peer.request(&format!("SUBSCRIBE {}", all_topics.join(" "))).await;
        assert_eq!(answer.as_deref(), Some("OK 10"));
        subscribers.spawn(account(peer, TOPICS, MESSAGES));
    }
    let mut publishers = tokio::task::JoinSet::new();
    for topic in all_topics {
        let mut client = server.client().await;
        publishers.spawn(async move {
            for batch in 0..MESSAGES / 100 {
                let requests: Vec<String> =
                    (0..100).map(|i| format!("PUBLISH {topic} {}", batch * 100 + i)).collect();
                let answers = client.pipeline(requests.iter().map(String::as_str)).await.unwrap();
                assert!(answers.iter().all(|answer| answer == "OK 100"), "{answers:?}");
            }
        });
    }
    let published =
        tokio::time::timeout(TEST_TIMEOUT, publishers.join_all()).await.expect("published in time");
    assert_eq!(published.len(), TOPICS);
    let accounts =
        tokio::time::timeout(TEST_TIMEOUT, subscribers.join_all()).await.expect("accounted in time");
    let missed: u64 = accounts.iter().sum();
    println!(
        "100 subscribers: {} messages delivered, {missed} missed",
        100 * TOPICS * MESSAGES - missed as usize
    );
    server.stop().await;
}

/// Reads pushed lines until every topic's `messages` are accounted for; checks their order and
/// returns how many were missed.
async fn account(mut peer: Peer<tokio::net::TcpStream>, topics: usize, messages: usize) -> u64 {
    let mut next: HashMap<String, u64> = HashMap::new();
    let mut missed = 0;
    while next.len() < topics || next.values().any(|&seen| seen < messages as u64) {
        let line = peer.answer().await.expect("a pushed line");
        let mut words = line.splitn(3, ' ');
        let (kind, topic, value) =
            (words.next(), words.next().unwrap_or_default(), words.next().unwrap_or_default());
        let seen = next.entry(topic.to_owned()).or_default();
        let value: u64 = value.parse().expect("a number");
        match kind {
            // Each topic's messages in publish order: exactly the next one.
            Some("MSG") => assert_eq!(value, *seen, "{topic}: out of order"),
            Some("LAG") => missed += value,
            _ => panic!("not a pushed line: {line}"),
        }
        *seen += if kind == Some("MSG") { 1 } else { value };
    }
    missed
}

/// A model of the fan-out: which topics each connection subscribes to.
#[derive(Debug, Clone)]
enum Op {
    Subscribe(usize, Vec<usize>),
    Unsubscribe(usize, Vec<usize>),
    Publish(usize, usize),
}

const NAMES: [&str; 3] = ["a", "b", "c"];

fn op() -> impl Strategy<Value = Op> {
    let topics = prop::collection::vec(0..NAMES.len(), 0..3);
    prop_oneof![
        (0..3usize, topics.clone().prop_filter("at least one topic", |t| !t.is_empty()))
            .prop_map(|(c, t)| Op::Subscribe(c, t)),
        (0..3usize, topics).prop_map(|(c, t)| Op::Unsubscribe(c, t)),
        (0..3usize, 0..NAMES.len()).prop_map(|(c, t)| Op::Publish(c, t)),
    ]
}

#[test]
fn arbitrary_interleavings_agree_with_a_model_on_every_count() {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
    let harness = {
        let _inside = runtime.enter();
        Harness::start(&test_config())
    };
    let mut runner = TestRunner::new(ProptestConfig::with_cases(128));
    runner
        .run(&prop::collection::vec(op(), 1..30), |ops| {
            runtime.block_on(async {
                let mut peers = [harness.connect(), harness.connect(), harness.connect()];
                let mut model: [HashSet<usize>; 3] = Default::default();
                for op in &ops {
                    let (connection, request, expected) = match op {
                        Op::Subscribe(c, topics) => {
                            model[*c].extend(topics);
                            (*c, format!("SUBSCRIBE {}", names(topics)), model[*c].len())
                        }
                        Op::Unsubscribe(c, topics) => {
                            if topics.is_empty() {
                                model[*c].clear();
                            } else {
                                topics.iter().for_each(|t| {
                                    model[*c].remove(t);
                                });
                            }
                            (
                                *c,
                                format!("UNSUBSCRIBE {}", names(topics)).trim_end().to_owned(),
                                model[*c].len(),
                            )
                        }
                        Op::Publish(c, t) => {
                            let reached = model.iter().filter(|topics| topics.contains(t)).count();
                            (*c, format!("PUBLISH {} x", NAMES[*t]), reached)
                        }
                    };
                    let peer = &mut peers[connection];
                    peer.send(format!("{request}\n").as_bytes()).await.unwrap();
                    // Skip the messages this connection's own subscriptions bring.
                    let answer = loop {
                        let line = peer.answer().await.unwrap();
                        if !service::protocol::is_push(&line) {
                            break line;
                        }
                    };
                    prop_assert_eq!(answer, format!("OK {expected}"), "{}", request);
                }
                for peer in &mut peers {
                    peer.finish().await.unwrap();
                    while peer.answer().await.is_some() {}
                }
                Ok(())
            })
        })
        .unwrap();
    runtime.block_on(harness.stop());
}

fn names(topics: &[usize]) -> String {
    topics.iter().map(|&t| NAMES[t]).collect::<Vec<_>>().join(" ")
}

/// The kernel's send queue of the connection from `server` to the local port `peer`, in
/// bytes (`tx_queue` in /proc/net/tcp: what is written and not yet acknowledged).
#[cfg(target_os = "linux")]
async fn send_queue(server: std::net::SocketAddr, peer: u16) -> Option<u64> {
    let table = tokio::fs::read_to_string("/proc/net/tcp").await.expect("read /proc/net/tcp");
    let port = |address: &str| address.split(':').nth(1).and_then(|hex| u16::from_str_radix(hex, 16).ok());
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let ours = port(fields[1]) == Some(server.port()) && port(fields[2]) == Some(peer);
        let queues = fields[4].split(':').next()?;
        ours.then(|| u64::from_str_radix(queues, 16).ok()).flatten()
    })
}

/// A subscriber that never reads parks at most about twice `--send-buffer` in the kernel for
/// its connection, however much is published to it: the kernel would otherwise grow the
/// socket's send buffer to 4 MiB, outside every bound of the process.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "current_thread")]
async fn a_subscriber_that_never_reads_parks_a_bounded_amount_in_the_kernel() {
    let config = Config {
        send_buffer: count(16 << 10),
        max_message: count(4096),
        max_line: count(8192),
        write_timeout: secs(60),
        publish_budget: count(1_000_000_000),
        process_publish_budget: count(1_000_000_000),
        ..test_config()
    };
    let server = TestServer::start(config);
    // The subscriber's own receive buffer is small, so its window closes at once and what is
    // left waits in the server's send queue.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut subscriber = socket.connect(server.addr).await.unwrap();
    subscriber.write_all(b"SUBSCRIBE t\n").await.unwrap();
    let peer = subscriber.local_addr().unwrap().port();
    let mut publisher = server.client().await;
    let text = "x".repeat(4000);
    let lines: Vec<String> = (0..100).map(|_| format!("PUBLISH t {text}")).collect();
    let mut reached = 0;
    for _ in 0..20 {
        let answers = publisher.pipeline(lines.iter().map(String::as_str)).await.unwrap();
        reached += answers.iter().filter(|answer| *answer == "OK 1").count();
    }
    assert!(reached > 0, "the subscriber subscribed");
    time::sleep(Duration::from_millis(200)).await;
    let queued = send_queue(server.addr, peer).await.expect("the subscriber's connection in /proc/net/tcp");
    println!(
        "{reached} messages of 4 KB to a subscriber that never reads: {queued} bytes queued in the kernel"
    );
    assert!(queued <= 4 * (16 << 10), "{queued} bytes in the kernel's send queue");
    drop(subscriber);
    server.stop().await;
}
