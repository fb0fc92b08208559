//! Timing tests on paused time: every timeout of the service, to the exact virtual instant.
//!
//! Each test runs on `current_thread` with `start_paused = true` and talks to the service over
//! `tokio::io::duplex`; see the crate docs (`tests/src/lib.rs`) for why both are needed. Together
//! they cover several minutes of timeouts and finish in milliseconds.

use std::time::Duration;

use futures_util::StreamExt as _;
use service::Config;
use service::client::{Client, ClientError};
use service::coordinator::{Coordinator, CoordinatorConfig};
use service::protocol::ErrorCode;
use service::shutdown::Shutdown;
use service::stats::Stats;
use testkit::{Harness, test_config};
use tokio::io::AsyncWriteExt as _;
use tokio::time::{self, Instant};
use tokio_util::task::TaskTracker;

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_silent_peer_is_closed_exactly_at_the_idle_timeout() {
    let harness = Harness::start(&Config { idle_timeout: secs(10), ..test_config() });
    let start = Instant::now();
    let mut peer = harness.connect();
    assert_eq!(peer.answer().await, None, "closed without an answer");
    assert_eq!(start.elapsed(), secs(10), "closed at the idle timeout, not before or after");
    harness.stop().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_idle_deadline_starts_again_after_each_answer() {
    let harness = Harness::start(&Config { idle_timeout: secs(10), ..test_config() });
    let start = Instant::now();
    let mut peer = harness.connect();
    time::sleep(secs(9)).await;
    assert_eq!(peer.request("PING").await.as_deref(), Some("OK PONG"));
    assert_eq!(peer.answer().await, None);
    assert_eq!(start.elapsed(), secs(19), "idle 10 s after the answer at 9 s");
    harness.stop().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_peer_trickling_bytes_without_a_newline_is_closed_at_the_idle_timeout() {
    let harness = Harness::start(&Config { idle_timeout: secs(10), ..test_config() });
    let start = Instant::now();
    let (mut answers, mut writer) = harness.connect().split();
    let trickle = async {
        // One byte every 700 ms: always sending, never finishing a line (slow loris).
        for byte in b"ECHO slow loris never ends".iter().cycle() {
            time::sleep(Duration::from_millis(700)).await;
            if writer.write_all(&[*byte]).await.is_err() {
                return Instant::now();
            }
        }
        unreachable!("the cycle is endless")
    };
    let (closed, trickle_refused) = tokio::join!(answers.next(), trickle);
    assert!(closed.is_none(), "closed without an answer");
    // The read side saw EOF at 10 s; the next trickled byte (at 10.5 s) found the pipe broken.
    assert_eq!(trickle_refused - start, Duration::from_millis(10_500));
    harness.stop().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_peer_waiting_for_a_slow_answer_is_not_idle() {
    let harness = Harness::start(&Config { idle_timeout: secs(10), ..test_config() });
    let start = Instant::now();
    let mut peer = harness.connect();
    assert_eq!(peer.request("SLEEP 30000").await.as_deref(), Some("OK 30000"));
    assert_eq!(start.elapsed(), secs(30), "not closed at 10 s while the answer was pending");
    assert_eq!(peer.answer().await, None);
    assert_eq!(start.elapsed(), secs(40), "idle from the answer on");
    harness.stop().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_peer_that_stops_reading_is_dropped_at_the_write_timeout() {
    let harness = Harness::start(&Config { write_timeout: secs(5), idle_timeout: secs(60), ..test_config() });
    let start = Instant::now();
    // A 256-byte pipe: the answers to a few ECHOs fill it, and the peer never reads them.
    let (_answers, mut writer) = harness.connect_with_buffer(256).split();
    let request = format!("ECHO {}\n", "x".repeat(200));
    let mut sent = 0;
    let broken_at = loop {
        match writer.write_all(request.as_bytes()).await {
            Ok(()) => sent += 1,
            Err(error) => {
                assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe);
                break Instant::now();
            }
        }
    };
    assert!(sent > 2, "the server read requests until its own write blocked ({sent} sent)");
    assert_eq!(broken_at - start, secs(5), "dropped exactly at the write timeout");
    assert_eq!(harness.app.stats().connections(), 0);
    harness.stop().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn sleep_answers_at_exactly_its_time_while_another_connection_is_served() {
    let harness = Harness::start(&Config { idle_timeout: secs(60), ..test_config() });
    let start = Instant::now();
    let mut sleeper = harness.connect();
    let mut other = harness.connect();
    let slow = async {
        let answer = sleeper.request("SLEEP 30000").await;
        (answer, start.elapsed())
    };
    let busy = async {
        let mut answered_at = Vec::new();
        for _ in 0..4 {
            assert_eq!(other.request("PING").await.as_deref(), Some("OK PONG"));
            answered_at.push(start.elapsed());
            time::sleep(secs(10)).await;
        }
        answered_at
    };
    let ((answer, slept), pings) = tokio::join!(slow, busy);
    assert_eq!(answer.as_deref(), Some("OK 30000"));
    assert_eq!(slept, secs(30));
    assert_eq!(pings, [secs(0), secs(10), secs(20), secs(30)], "PING answered at once throughout");
    harness.stop().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn pipelined_requests_run_concurrently_and_are_answered_in_order() {
    let harness = Harness::start(&Config { idle_timeout: secs(60), ..test_config() });
    let start = Instant::now();
    let mut peer = harness.connect();
    peer.send(b"SLEEP 3000\nSLEEP 1000\nPING\nSLEEP 2000\n").await.unwrap();
    let mut answers = Vec::new();
    for _ in 0..4 {
        answers.push((peer.answer().await.unwrap(), start.elapsed()));
    }
    // All four ran at once: everything is answered at 3 s (the longest), in request order.
    let expected = ["OK 3000", "OK 1000", "OK PONG", "OK 2000"].map(|answer| (answer.to_owned(), secs(3)));
    assert_eq!(answers, expected);
    harness.stop().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn in_flight_requests_beyond_the_bound_wait_for_a_free_slot() {
    let harness = Harness::start(&Config { idle_timeout: secs(60), max_in_flight: 2, ..test_config() });
    let start = Instant::now();
    let mut peer = harness.connect();
    peer.send(b"SLEEP 1000\nSLEEP 1000\nSLEEP 1000\n").await.unwrap();
    let mut times = Vec::new();
    for _ in 0..3 {
        assert_eq!(peer.answer().await.as_deref(), Some("OK 1000"));
        times.push(start.elapsed());
    }
    // Two at once; the third is read only when a slot frees at 1 s.
    assert_eq!(times, [secs(1), secs(1), secs(2)]);
    harness.stop().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_client_connect_timeout_fires_on_a_connector_that_never_completes() {
    let start = Instant::now();
    let never = std::future::pending::<std::io::Result<tokio::io::DuplexStream>>();
    let outcome = Client::connect_with(never, secs(3), secs(5)).await;
    assert!(matches!(outcome, Err(ClientError::ConnectTimeout(timeout)) if timeout == secs(3)));
    assert_eq!(start.elapsed(), secs(3));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_client_request_timeout_fires_and_closes_the_client() {
    let start = Instant::now();
    // A server end that is never read nor answered.
    let (client_end, _silent_server) = tokio::io::duplex(1024);
    let mut client = Client::new(client_end, secs(5));
    assert!(matches!(client.request("PING").await, Err(ClientError::Timeout(timeout)) if timeout == secs(5)));
    assert_eq!(start.elapsed(), secs(5));
    // A late answer could now be mistaken for the next one's: the client refuses to go on.
    assert!(matches!(client.request("PING").await, Err(ClientError::Closed)));
}

/// A coordinator on its own, with jobs that wait on tokio timers.
fn coordinator(
    queue_capacity: usize,
    workers: usize,
    job_timeout: Duration,
) -> (Coordinator, Shutdown, TaskTracker) {
    let shutdown = Shutdown::default();
    let tracker = TaskTracker::new();
    let config = CoordinatorConfig { queue_capacity, workers, job_timeout };
    let coordinator =
        Coordinator::start(config, std::sync::Arc::new(Stats::default()), shutdown.clone(), &tracker);
    (coordinator, shutdown, tracker)
}

/// A job that takes `duration` of (virtual) time.
async fn timed_job(duration: Duration) -> Result<String, ErrorCode> {
    time::sleep(duration).await;
    Ok(format!("slept {}", duration.as_millis()))
}

async fn finish(coordinator: Coordinator, tracker: TaskTracker) {
    drop(coordinator);
    tracker.close();
    tracker.wait().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_full_queue_answers_busy_at_once() {
    let (coordinator, _shutdown, tracker) = coordinator(1, 1, secs(60));
    let running = coordinator.submit(timed_job(secs(10))).unwrap();
    // Let the dispatcher hand the first job to the only worker.
    time::sleep(Duration::from_millis(1)).await;
    let queued = coordinator.submit(timed_job(secs(10))).unwrap();
    assert_eq!(coordinator.queued(), 1);
    let start = Instant::now();
    assert!(matches!(coordinator.submit(timed_job(secs(10))), Err(ErrorCode::Busy)));
    assert_eq!(start.elapsed(), Duration::ZERO, "shed without waiting");
    assert_eq!(running.await.unwrap().as_deref(), Ok("slept 10000"));
    assert_eq!(queued.await.unwrap().as_deref(), Ok("slept 10000"));
    finish(coordinator, tracker).await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_job_past_its_deadline_answers_timeout() {
    let (coordinator, _shutdown, tracker) = coordinator(4, 1, secs(5));
    let start = Instant::now();
    let slow = coordinator.submit(timed_job(secs(60))).unwrap();
    // Queued behind it: its deadline passes while it waits, so it never runs.
    let waiting = coordinator.submit(timed_job(Duration::ZERO)).unwrap();
    assert_eq!(slow.await.unwrap(), Err(ErrorCode::Timeout));
    assert_eq!(start.elapsed(), secs(5));
    assert_eq!(waiting.await.unwrap(), Err(ErrorCode::Timeout));
    assert_eq!(start.elapsed(), secs(5));
    finish(coordinator, tracker).await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_panicking_job_answers_internal_and_the_next_job_succeeds() {
    let (coordinator, _shutdown, tracker) = coordinator(4, 1, secs(5));
    let panicking = coordinator.submit(async {
        time::sleep(secs(1)).await;
        panic!("job failed on purpose")
    });
    assert_eq!(panicking.unwrap().await.unwrap(), Err(ErrorCode::Internal));
    let next = coordinator.submit(timed_job(secs(1))).unwrap();
    assert_eq!(next.await.unwrap().as_deref(), Ok("slept 1000"));
    finish(coordinator, tracker).await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn abort_answers_running_and_queued_jobs_shutting_down() {
    let (coordinator, shutdown, tracker) = coordinator(4, 1, secs(60));
    let running = coordinator.submit(timed_job(secs(30))).unwrap();
    let queued = coordinator.submit(timed_job(secs(30))).unwrap();
    time::sleep(secs(1)).await;
    shutdown.abort();
    assert_eq!(running.await.unwrap(), Err(ErrorCode::ShuttingDown));
    assert_eq!(queued.await.unwrap(), Err(ErrorCode::ShuttingDown));
    assert!(matches!(coordinator.submit(timed_job(secs(1))), Err(ErrorCode::ShuttingDown)));
    finish(coordinator, tracker).await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn shutdown_lets_in_flight_requests_finish_inside_the_grace_period() {
    let harness = Harness::start(&Config { shutdown_grace: secs(10), ..test_config() });
    let start = Instant::now();
    let mut peer = harness.connect();
    peer.send(b"SLEEP 4000\n").await.unwrap();
    time::sleep(secs(1)).await;
    let stats = std::sync::Arc::clone(harness.app.stats());
    let client = async {
        let answer = peer.answer().await;
        let closed = peer.answer().await;
        (answer, closed, start.elapsed())
    };
    let stop = async {
        harness.stop().await;
        start.elapsed()
    };
    let ((answer, closed, closed_at), stopped_at) = tokio::join!(client, stop);
    assert_eq!(answer.as_deref(), Some("OK 4000"), "the request finished");
    assert_eq!(closed, None, "then the connection closed");
    assert_eq!(closed_at, secs(4));
    assert_eq!(stopped_at, secs(4), "stop returned as soon as the last request was answered");
    assert_eq!(stats.connections(), 0, "nothing left running");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn past_the_grace_period_requests_are_answered_shutting_down_and_closed() {
    let harness =
        Harness::start(&Config { shutdown_grace: secs(10), idle_timeout: secs(60), ..test_config() });
    let start = Instant::now();
    let mut peer = harness.connect();
    let mut idle = harness.connect();
    peer.send(b"PING\nSLEEP 60000\nSLEEP 50000\n").await.unwrap();
    assert_eq!(peer.answer().await.as_deref(), Some("OK PONG"));
    let stats = std::sync::Arc::clone(harness.app.stats());
    let client = async {
        let mut lines = Vec::new();
        while let Some(line) = peer.answer().await {
            lines.push(line);
        }
        let idle_closed = idle.answer().await;
        (lines, idle_closed, start.elapsed())
    };
    let stop = async {
        harness.stop().await;
        start.elapsed()
    };
    let ((lines, idle_closed, closed_at), stopped_at) = tokio::join!(client, stop);
    assert_eq!(lines, ["ERR shutting-down", "ERR shutting-down"]);
    assert_eq!(idle_closed, None, "an idle connection closes at once");
    assert_eq!(closed_at, secs(10));
    assert_eq!(stopped_at, secs(10), "every task ended at the end of the grace period");
    assert_eq!(stats.connections(), 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_draining_connection_reads_no_new_requests() {
    let harness =
        Harness::start(&Config { shutdown_grace: secs(10), idle_timeout: secs(60), ..test_config() });
    let mut peer = harness.connect();
    peer.send(b"SLEEP 2000\n").await.unwrap();
    time::sleep(secs(1)).await;
    harness.app.shutdown().drain.cancel();
    time::sleep(Duration::from_millis(1)).await;
    // Sent after the drain began: never read, never answered.
    peer.send(b"PING\n").await.unwrap();
    assert_eq!(peer.answer().await.as_deref(), Some("OK 2000"));
    assert_eq!(peer.answer().await, None);
    harness.stop().await;
}
