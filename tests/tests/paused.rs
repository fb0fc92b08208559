//! Timing tests on paused time: every timeout of the service, to the exact virtual instant.
//!
//! Each test runs on `current_thread` with `start_paused = true` and talks to the service over
//! `tokio::io::duplex`; see the crate docs (`tests/src/lib.rs`) for why both are needed. Together
//! they cover several minutes of timeouts and finish in milliseconds.

use std::time::Duration;

use futures_util::StreamExt as _;
use service::Config;
use service::{Client, ClientError};
use testkit::{Harness, count, test_config};
use tokio::io::AsyncWriteExt as _;
use tokio::time::{self, Instant};

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
        for byte in b"PING slow loris never ends".iter().cycle() {
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
    assert_eq!(peer.request("WAIT 30000").await.as_deref(), Some("OK 30000"));
    assert_eq!(start.elapsed(), secs(30), "not closed at 10 s while the answer was pending");
    assert_eq!(peer.answer().await, None);
    assert_eq!(start.elapsed(), secs(40), "idle from the answer on");
    harness.stop().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_peer_that_stops_reading_is_dropped_at_the_write_timeout() {
    let harness = Harness::start(&Config { write_timeout: secs(5), idle_timeout: secs(60), ..test_config() });
    let start = Instant::now();
    // A 256-byte pipe: a few dozen answers fill it, and the peer never reads them.
    let (_answers, mut writer) = harness.connect_with_buffer(256).split();
    let request = "PING\n".repeat(16);
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
    assert_eq!(harness.app.stats().open_connections(), 0);
    harness.stop().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn sleep_answers_at_exactly_its_time_while_another_connection_is_served() {
    let harness = Harness::start(&Config { idle_timeout: secs(60), ..test_config() });
    let start = Instant::now();
    let mut sleeper = harness.connect();
    let mut other = harness.connect();
    let slow = async {
        let answer = sleeper.request("WAIT 30000").await;
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
    peer.send(b"WAIT 3000\nWAIT 1000\nPING\nWAIT 2000\n").await.unwrap();
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
    let harness =
        Harness::start(&Config { idle_timeout: secs(60), max_in_flight: count(2), ..test_config() });
    let start = Instant::now();
    let mut peer = harness.connect();
    peer.send(b"WAIT 1000\nWAIT 1000\nWAIT 1000\n").await.unwrap();
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

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn shutdown_lets_in_flight_requests_finish_inside_the_grace_period() {
    let harness = Harness::start(&Config { shutdown_grace: secs(10), ..test_config() });
    let start = Instant::now();
    let mut peer = harness.connect();
    peer.send(b"WAIT 4000\n").await.unwrap();
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
    assert_eq!(stats.open_connections(), 0, "nothing left running");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn past_the_grace_period_requests_are_answered_shutting_down_and_closed() {
    let harness =
        Harness::start(&Config { shutdown_grace: secs(10), idle_timeout: secs(60), ..test_config() });
    let start = Instant::now();
    let mut peer = harness.connect();
    let mut idle = harness.connect();
    peer.send(b"PING\nWAIT 60000\nWAIT 50000\n").await.unwrap();
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
    assert_eq!(stats.open_connections(), 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_draining_connection_reads_no_new_requests() {
    let harness =
        Harness::start(&Config { shutdown_grace: secs(10), idle_timeout: secs(60), ..test_config() });
    let mut peer = harness.connect();
    peer.send(b"WAIT 2000\n").await.unwrap();
    time::sleep(secs(1)).await;
    harness.app.shutdown().drain.cancel();
    time::sleep(Duration::from_millis(1)).await;
    // Sent after the drain began: never read, never answered.
    peer.send(b"PING\n").await.unwrap();
    assert_eq!(peer.answer().await.as_deref(), Some("OK 2000"));
    assert_eq!(peer.answer().await, None);
    harness.stop().await;
}

/// A peer that never stops sending is drained all the same: it keeps the connection's read
/// ready, and the drain branch after it would never be polled, so each read looks at the drain
/// too (`connection.rs`). The connection stops taking requests, answers what it took and closes.
/// (Time does not pass while the flood runs, so a starved drain would never end it: the count of
/// answers after the drain is the test's bound.)
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_peer_that_never_stops_sending_is_drained_all_the_same() {
    let harness =
        Harness::start(&Config { shutdown_grace: secs(10), idle_timeout: secs(60), ..test_config() });
    let (mut answers, mut writer) = harness.connect().split();
    let burst = "PING\n".repeat(1000);
    let flood = async { while writer.write_all(burst.as_bytes()).await.is_ok() {} };
    let drained = async {
        for _ in 0..10_000 {
            assert_eq!(answers.next().await.transpose().unwrap().as_deref(), Some("OK PONG"));
        }
        let start = Instant::now();
        harness.app.shutdown().drain.cancel();
        let mut after = 0;
        while let Some(Ok(_)) = answers.next().await {
            after += 1;
            assert!(after < 100_000, "{after} answers after the drain: the drain is starved");
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "closed at once, not at the end of the grace period");
    };
    tokio::join!(flood, drained);
    harness.stop().await;
}

/// A peer that never reads blocks the server's writes. Shutdown still ends when the grace period
/// does, not a write timeout later: the stuck write is abandoned and the connection closed.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn shutdown_ends_at_the_grace_period_even_with_a_write_stuck_on_a_peer_that_never_reads() {
    let config =
        Config { shutdown_grace: secs(2), write_timeout: secs(20), idle_timeout: secs(60), ..test_config() };
    let harness = Harness::start(&config);
    let (_answers, mut writer) = harness.connect_with_buffer(64).split();
    // 30 bytes of requests, about 1 KB of answers: far more than the 64-byte pipe holds, so the
    // server's write blocks.
    writer.write_all("STATS\n".repeat(5).as_bytes()).await.unwrap();
    time::sleep(secs(1)).await;
    let stats = std::sync::Arc::clone(harness.app.stats());
    let start = Instant::now();
    harness.stop().await;
    assert_eq!(start.elapsed(), secs(2), "stopped at the end of the grace period");
    assert_eq!(stats.open_connections(), 0);
}

/// A second signal cancels `abort` at once: in-flight requests are answered `ERR shutting-down`
/// and shutdown completes without waiting out the grace period.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn cancelling_abort_during_the_grace_period_ends_shutdown_at_once() {
    let harness =
        Harness::start(&Config { shutdown_grace: secs(30), idle_timeout: secs(60), ..test_config() });
    let mut peer = harness.connect();
    peer.send(b"WAIT 60000\n").await.unwrap();
    time::sleep(secs(1)).await;
    let shutdown = harness.app.shutdown().clone();
    let start = Instant::now();
    let second_signal = async {
        time::sleep(secs(3)).await;
        shutdown.abort.cancel();
    };
    let client = async { (peer.answer().await, peer.answer().await) };
    let ((), (answer, closed), ()) = tokio::join!(harness.stop(), client, second_signal);
    assert_eq!(answer.as_deref(), Some("ERR shutting-down"));
    assert_eq!(closed, None);
    assert_eq!(start.elapsed(), secs(3), "ended at the second signal, not at 30 s");
}

/// `\r\n` is not part of the line: a line of exactly `max_line` bytes with `\r\n` is served, one
/// byte more is refused and closes the connection.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_limit_counts_a_line_without_its_crlf() {
    let harness = Harness::start(&Config { max_line: count(8), ..test_config() });
    let mut peer = harness.connect();
    assert_eq!(peer.request("STATS 12\r").await.as_deref(), Some("ERR bad-argument STATS takes no argument"));
    peer.send(b"PING 1234\r\n").await.unwrap();
    assert_eq!(peer.answer().await.as_deref(), Some("ERR line-too-long max 8 bytes"));
    assert_eq!(peer.answer().await, None);
    harness.stop().await;
}
