//! End-to-end tests: the real server on `127.0.0.1:0`, real sockets, real time.
//!
//! Every wait is bounded (`TEST_TIMEOUT`), and only loopback is reached. These prove what paused
//! time cannot: the TCP accept loop and connection limit, the CPU pool, and the whole path from
//! bytes on a socket to an answer.

use std::time::Duration;

use service::Config;
use testkit::{TEST_TIMEOUT, TestServer, count, eventually, test_config};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Every example of every command (the registry's and the tests' own), each on a fresh
/// connection, over real TCP.
#[tokio::test]
async fn every_registered_example_is_answered_as_written() {
    let server = TestServer::start(test_config());
    for spec in testkit::commands::commands().iter() {
        for (request, expected) in spec.examples {
            let mut client = server.client().await;
            assert_eq!(client.request(request).await.unwrap(), *expected, "answer to {request}");
            if spec.ends_connection && expected.starts_with("OK") {
                assert!(client.request("PING").await.is_err(), "closed after {request}");
            }
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn stats_counts_connections_and_every_job_outcome() {
    let server = TestServer::start(test_config());
    let mut client = server.client().await;
    assert_eq!(client.request("SPIN 1").await.unwrap(), "OK 1");
    assert_eq!(client.request("DANCE").await.unwrap(), "ERR unknown-command DANCE");
    let stats = client.request("STATS").await.unwrap();
    // The lag is the machine's; every other counter is exact.
    let counters: Vec<&str> =
        stats.split(' ').skip(1).filter(|pair| !pair.starts_with("worst_lag_ms=")).collect();
    assert_eq!(
        counters,
        [
            "connections=1",
            "rejected=0",
            "handshakes_failed=0",
            "jobs_queued=0",
            "jobs_running=0",
            "jobs_done=1",
            "jobs_shed=0",
            "jobs_panicked=0",
            "jobs_timed_out=0",
            "jobs_abandoned=0",
            "jobs_cancelled=0",
            "topics=0",
            "messages_published=0",
            "messages_delivered=0",
            "messages_missed=0"
        ],
        "{stats}"
    );
    server.stop().await;
}

#[tokio::test]
async fn light_requests_are_served_while_the_cpu_pool_works() {
    let server = TestServer::start(Config { job_timeout: Duration::from_secs(30), ..test_config() });
    let mut client = server.client().await;
    let mut ping = server.client().await;
    let (spun, pong) = tokio::join!(client.request("SPIN 1000"), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = std::time::Instant::now();
        (ping.request("PING").await, started.elapsed())
    });
    assert_eq!(spun.unwrap(), "OK 1000");
    assert_eq!(pong.0.unwrap(), "OK PONG");
    assert!(pong.1 < Duration::from_millis(500), "PING waited {:?} behind the CPU work", pong.1);
    server.stop().await;
}

#[tokio::test]
async fn sixty_four_connections_pipelining_two_hundred_requests_each() {
    let server = TestServer::start(Config { max_connections: count(128), ..test_config() });
    let mut clients = tokio::task::JoinSet::new();
    for connection in 0..64 {
        let mut client = server.client().await;
        clients.spawn(async move {
            // Every request waits on a timer for a different time, so answers complete out of
            // order inside the connection and must still come back in request order.
            let requests: Vec<String> =
                (0..200).map(|i| format!("WAIT {}", (connection + 7 * i) % 11)).collect();
            let answers = client.pipeline(requests.iter().map(String::as_str)).await.unwrap();
            for (i, answer) in answers.iter().enumerate() {
                let expected = format!("OK {}", (connection + 7 * i) % 11);
                assert_eq!(*answer, expected, "connection {connection}, request {i}");
            }
            answers.len()
        });
    }
    let counts = timeout(TEST_TIMEOUT, clients.join_all()).await.unwrap();
    assert_eq!(counts, vec![200; 64]);
    server.stop().await;
}

#[tokio::test]
async fn a_connection_over_the_limit_is_answered_busy_and_closed() {
    let server = TestServer::start(Config { max_connections: count(2), ..test_config() });
    let mut first = server.client().await;
    let mut second = server.client().await;
    assert_eq!(first.request("PING").await.unwrap(), "OK PONG");
    assert_eq!(second.request("PING").await.unwrap(), "OK PONG");

    let mut third = server.connect().await;
    assert_eq!(third.answer().await.as_deref(), Some("ERR busy"));
    assert_eq!(third.answer().await, None, "closed");
    assert!(server.stats().open_connections() == 2);

    // A slot frees when a connection ends.
    assert_eq!(first.request("QUIT").await.unwrap(), "OK BYE");
    eventually("the first connection is gone", || server.stats().open_connections() == 1).await;
    let mut fourth = server.client().await;
    assert_eq!(fourth.request("PING").await.unwrap(), "OK PONG");
    server.stop().await;
}

#[tokio::test]
async fn a_line_over_the_limit_is_refused_and_the_connection_closed() {
    let server = TestServer::start(Config { max_line: count(64), ..test_config() });
    let mut peer = server.connect().await;
    peer.send(format!("PING\nPING {}\nPING\n", "y".repeat(100)).as_bytes()).await.unwrap();
    assert_eq!(peer.answer().await.as_deref(), Some("OK PONG"));
    assert_eq!(peer.answer().await.as_deref(), Some("ERR line-too-long max 64 bytes"));
    assert_eq!(peer.answer().await, None, "closed");
    server.stop().await;
}

#[tokio::test]
async fn a_huge_line_is_cut_off_without_buffering_it() {
    let server = TestServer::start(Config { max_line: count(1024), ..test_config() });
    let mut peer = server.connect().await;
    // 64 MiB with no newline, more than loopback's socket buffers hold: the server must stop
    // reading (and close) after 1 KiB, or every write would go through.
    let chunk = vec![b'z'; 64 * 1024];
    let writer = async {
        for _ in 0..1024 {
            if peer.send(&chunk).await.is_err() {
                return true; // the server closed the connection
            }
        }
        false
    };
    let refused = timeout(TEST_TIMEOUT, writer).await.expect("no hang");
    assert!(refused, "the server kept reading a line far over the limit");
    eventually("the connection is closed", || server.stats().open_connections() == 0).await;
    server.stop().await;
}

#[tokio::test]
async fn bytes_that_are_not_utf8_are_a_bad_request_and_the_connection_goes_on() {
    let server = TestServer::start(test_config());
    let mut peer = server.connect().await;
    peer.send(b"PING \xc3\x28\r\nPING\r\n").await.unwrap();
    assert_eq!(peer.answer().await.as_deref(), Some("ERR bad-request not UTF-8"));
    assert_eq!(peer.answer().await.as_deref(), Some("OK PONG"));
    server.stop().await;
}

#[tokio::test]
async fn quit_answers_bye_and_closes_and_later_requests_are_not_read() {
    let server = TestServer::start(test_config());
    let mut peer = server.connect().await;
    peer.send(b"PING\nQUIT\nPING\n").await.unwrap();
    assert_eq!(peer.answer().await.as_deref(), Some("OK PONG"));
    assert_eq!(peer.answer().await.as_deref(), Some("OK BYE"));
    assert_eq!(peer.answer().await, None, "closed");
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_disconnects_mid_request_frees_its_connection_and_its_job() {
    let server = TestServer::start(Config { job_timeout: Duration::from_secs(30), ..test_config() });
    let mut stream = timeout(TEST_TIMEOUT, TcpStream::connect(server.addr)).await.unwrap().unwrap();
    stream.write_all(b"SPIN 20000\n").await.unwrap();
    eventually("the job runs", || server.stats().running_jobs() == 1).await;
    // Reset the connection (RST, not a polite FIN): the server's next read fails at once.
    stream.set_zero_linger().unwrap();
    drop(stream);
    eventually("the connection is gone", || server.stats().open_connections() == 0).await;
    eventually("the job is abandoned", || server.stats().running_jobs() == 0).await;
    let mut client = server.client().await;
    assert_eq!(client.request("PING").await.unwrap(), "OK PONG", "the server is unharmed");
    server.stop().await;
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_and_then_refuses_connections() {
    let server = TestServer::start(test_config());
    let mut client = server.client().await;
    let addr = server.addr;
    let request = client.request("WAIT 300");
    let stop = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        server.stop().await;
    };
    let (answer, ()) = tokio::join!(request, stop);
    assert_eq!(answer.unwrap(), "OK 300", "the in-flight request finished");
    let refused = TcpStream::connect(addr).await;
    assert!(refused.is_err(), "the listener is closed");
}

/// Opens a raw connection, sends `requests` and resets it (RST, not a polite FIN) once the server
/// has had time to read them.
async fn send_then_reset(server: &TestServer, requests: &str) {
    let stream = timeout(TEST_TIMEOUT, TcpStream::connect(server.addr)).await.unwrap().unwrap();
    let mut stream = stream;
    stream.write_all(requests.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream.set_zero_linger().unwrap();
    drop(stream);
}

/// A peer at its in-flight bound is still watched: its reset frees its slot at once, though its
/// requests would wait a minute. (Before the fix, the slot stayed taken until the first WAIT
/// ended: 60 s, past the test's bound.)
#[tokio::test]
async fn a_peer_that_resets_at_the_in_flight_bound_frees_its_slot_at_once() {
    let config = Config { max_connections: count(1), max_in_flight: count(4), ..test_config() };
    let server = TestServer::start(config);
    send_then_reset(&server, &"WAIT 60000\n".repeat(6)).await;
    let reset = std::time::Instant::now();
    eventually("the slot is free", || server.stats().open_connections() == 0).await;
    println!("slot freed {:?} after the reset", reset.elapsed());
    let mut client = server.client().await;
    assert_eq!(client.request("PING").await.unwrap(), "OK PONG", "the only slot is free again");
    server.stop().await;
}

/// A peer's CPU jobs end with it: running ones are dropped (and stop their work), queued ones are
/// never run, and each is counted, so the outcome counters add up to what was submitted.
#[tokio::test]
async fn the_jobs_of_a_peer_that_resets_are_abandoned_and_counted() {
    let config = Config {
        max_in_flight: count(8),
        queue_capacity: count(4),
        workers: count(2),
        job_timeout: Duration::from_secs(60),
        ..test_config()
    };
    let server = TestServer::start(config);
    send_then_reset(&server, &"SPIN 20000\n".repeat(8)).await;
    eventually("the connection is gone", || server.stats().open_connections() == 0).await;
    eventually("no job runs", || server.stats().running_jobs() == 0).await;
    let stats = server.stats();
    let ended = |outcome| stats.jobs_ended(outcome);
    use service::JobOutcome::{Abandoned, Shed};
    eventually("every job is accounted for", || {
        service::JobOutcome::ALL.into_iter().map(ended).sum::<u64>() == 8
    })
    .await;
    // 2 workers and a queue of 4: at least 2 of the 8 were shed, and every job that was not shed
    // ended with its peer (none ran to the end: each takes 20 s).
    assert_eq!(ended(Shed) + ended(Abandoned), 8, "{}", stats.render(0, 0));
    assert!(ended(Abandoned) >= 4, "{}", stats.render(0, 0));
    server.stop().await;
}

/// The load generator against the real server: closed loop counts what it got, open loop sends
/// no more than its schedule, and ERR answers are counted as errors.
#[tokio::test]
async fn load_measures_closed_and_open_loops_and_counts_errors() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    use service::load::{LoadPlan, run};
    let server = TestServer::start(test_config());
    let plan = LoadPlan {
        addr: server.addr.to_string(),
        connections: 4,
        depth: 4,
        duration: Duration::from_millis(300),
        rate: None,
        requests: vec!["PING".to_owned()],
        connect_timeout: TEST_TIMEOUT,
        timeout: TEST_TIMEOUT,
        #[cfg(feature = "tls")]
        tls: None,
    };
    let progress = Arc::new(AtomicU64::new(0));
    let closed = run(&plan, Arc::clone(&progress)).await.unwrap();
    assert!(closed.answers > 0 && closed.errors == 0, "{closed}");
    assert_eq!(closed.latency.len(), closed.answers, "every answer's latency is recorded");
    assert_eq!(progress.load(std::sync::atomic::Ordering::Relaxed), closed.answers);
    let open = run(
        &LoadPlan { rate: Some(200), duration: Duration::from_millis(500), ..plan.clone() },
        Arc::default(),
    )
    .await
    .unwrap();
    assert!(open.answers <= 100 + 4, "at most the schedule's 100 (and one per connection): {open}");
    assert!(open.answers >= 50, "{open}");
    let errors =
        run(&LoadPlan { requests: vec!["NOPE".to_owned()], ..plan.clone() }, Arc::default()).await.unwrap();
    assert_eq!(errors.errors, errors.answers, "{errors}");
    assert_eq!(errors.unexpected, 0, "an ERR answers its request: {errors}");
    // One request a second on 4 connections for 300 ms: one request, and a run of 300 ms.
    let slow = run(&LoadPlan { rate: Some(1), ..plan }, Arc::default()).await.unwrap();
    assert_eq!(slow.answers, 1, "{slow}");
    assert!(slow.elapsed >= Duration::from_millis(300), "the run lasts its duration: {slow}");
    assert!(slow.throughput() < 4.0, "1 answer in 300 ms or more: {slow}");
    server.stop().await;
}

/// A server that answers every request twice is not reported clean: the lines that answer no
/// request are counted as unexpected.
#[tokio::test]
async fn load_counts_answers_that_answer_no_request() {
    use futures_util::StreamExt as _;
    use service::load::{LoadPlan, run};
    use tokio::io::AsyncWriteExt as _;
    use tokio_util::codec::{FramedRead, LinesCodec};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut connections = tokio::task::JoinSet::new();
    let twice = async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            connections.spawn(async move {
                let (reader, mut writer) = stream.into_split();
                let mut lines = FramedRead::new(reader, LinesCodec::new_with_max_length(64));
                while let Some(Ok(_)) = lines.next().await {
                    writer.write_all(b"OK PONG\nOK PONG\n").await.unwrap();
                }
            });
        }
    };
    let plan = LoadPlan {
        addr: addr.to_string(),
        connections: 2,
        depth: 1,
        duration: Duration::from_millis(200),
        rate: None,
        requests: vec!["PING".to_owned()],
        connect_timeout: TEST_TIMEOUT,
        timeout: TEST_TIMEOUT,
        #[cfg(feature = "tls")]
        tls: None,
    };
    let report = tokio::select! {
        report = run(&plan, std::sync::Arc::default()) => report.unwrap(),
        () = twice => unreachable!("the fake server serves until dropped"),
    };
    assert!(report.unexpected >= report.answers / 2 && report.unexpected > 0, "{report}");
}
