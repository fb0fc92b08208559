//! End-to-end tests: the real server on `127.0.0.1:0`, real sockets, real time.
//!
//! Every wait is bounded (`TEST_TIMEOUT`), and only loopback is reached. These prove what paused
//! time cannot: the TCP accept loop and connection limit, the CPU pool, and the whole path from
//! bytes on a socket to an answer.

use std::time::Duration;

use service::Config;
use testkit::{TEST_TIMEOUT, TestServer, eventually, test_config};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::time::timeout;

#[tokio::test]
async fn every_protocol_command() {
    let server = TestServer::start(test_config()).await;
    let mut client = server.client().await;
    for (request, expected) in [
        ("PING", "OK PONG"),
        ("ping", "OK PONG"),
        ("ECHO hello world", "OK hello world"),
        ("SLEEP 20", "OK 20"),
        ("PRIMES 1000000", "OK 78498"),
        ("PRIMES 2", "OK 0"),
        ("PRIMES 1000000001", "ERR bad-argument PRIMES takes a number from 0 to 1000000000"),
        ("SLEEP 60001", "ERR bad-argument SLEEP takes a number from 0 to 60000"),
        ("DANCE", "ERR unknown-command DANCE"),
    ] {
        assert_eq!(client.request(request).await.unwrap(), expected, "answer to {request}");
    }
    let stats = client.request("STATS").await.unwrap();
    assert!(
        stats.starts_with("OK connections=1 rejected=0 jobs_queued=0 jobs_running=0 jobs_done=2 "),
        "{stats}"
    );
    assert_eq!(client.request("QUIT").await.unwrap(), "OK BYE");
    assert!(client.request("PING").await.is_err(), "closed after QUIT");
    server.stop().await;
}

#[tokio::test]
async fn primes_up_to_the_protocol_limit_runs_on_the_cpu_pool() {
    let server = TestServer::start(Config { job_timeout: Duration::from_secs(30), ..test_config() }).await;
    let mut client = server.client().await;
    let mut ping = server.client().await;
    let (primes, pong) = tokio::join!(client.request("PRIMES 1000000000"), ping.request("PING"));
    assert_eq!(primes.unwrap(), "OK 50847534");
    assert_eq!(pong.unwrap(), "OK PONG", "light requests are served while the CPU pool works");
    server.stop().await;
}

#[tokio::test]
async fn sixty_four_connections_pipelining_two_hundred_requests_each() {
    let server = TestServer::start(Config { max_connections: 128, ..test_config() }).await;
    let mut clients = tokio::task::JoinSet::new();
    for connection in 0..64 {
        let mut client = server.client().await;
        clients.spawn(async move {
            // Every tenth request waits on a timer, so answers complete out of order inside the
            // connection and must still come back in request order.
            let requests: Vec<String> = (0..200)
                .map(|i| {
                    if i % 10 == 0 {
                        format!("SLEEP {}", 10 - i / 20)
                    } else {
                        format!("ECHO {connection}-{i}")
                    }
                })
                .collect();
            let answers = client.pipeline(requests.iter().map(String::as_str)).await.unwrap();
            for (i, answer) in answers.iter().enumerate() {
                let expected =
                    if i % 10 == 0 { format!("OK {}", 10 - i / 20) } else { format!("OK {connection}-{i}") };
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
    let server = TestServer::start(Config { max_connections: 2, ..test_config() }).await;
    let mut first = server.client().await;
    let mut second = server.client().await;
    assert_eq!(first.request("PING").await.unwrap(), "OK PONG");
    assert_eq!(second.request("PING").await.unwrap(), "OK PONG");

    let mut third = server.connect().await;
    assert_eq!(third.answer().await.as_deref(), Some("ERR busy"));
    assert_eq!(third.answer().await, None, "closed");
    assert!(server.stats().connections() == 2);

    // A slot frees when a connection ends.
    assert_eq!(first.request("QUIT").await.unwrap(), "OK BYE");
    eventually("the first connection is gone", || server.stats().connections() == 1).await;
    let mut fourth = server.client().await;
    assert_eq!(fourth.request("PING").await.unwrap(), "OK PONG");
    server.stop().await;
}

#[tokio::test]
async fn a_line_over_the_limit_is_refused_and_the_connection_closed() {
    let server = TestServer::start(Config { max_line: 64, ..test_config() }).await;
    let mut peer = server.connect().await;
    peer.send(format!("PING\nECHO {}\nPING\n", "y".repeat(100)).as_bytes()).await.unwrap();
    assert_eq!(peer.answer().await.as_deref(), Some("OK PONG"));
    assert_eq!(peer.answer().await.as_deref(), Some("ERR line-too-long max 64 bytes"));
    assert_eq!(peer.answer().await, None, "closed");
    server.stop().await;
}

#[tokio::test]
async fn a_huge_line_is_cut_off_without_buffering_it() {
    let server = TestServer::start(Config { max_line: 1024, ..test_config() }).await;
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
    eventually("the connection is closed", || server.stats().connections() == 0).await;
    server.stop().await;
}

#[tokio::test]
async fn bytes_that_are_not_utf8_are_a_bad_request_and_the_connection_goes_on() {
    let server = TestServer::start(test_config()).await;
    let mut peer = server.connect().await;
    peer.send(b"ECHO \xc3\x28\r\nPING\r\n").await.unwrap();
    assert_eq!(peer.answer().await.as_deref(), Some("ERR bad-request not UTF-8"));
    assert_eq!(peer.answer().await.as_deref(), Some("OK PONG"));
    server.stop().await;
}

#[tokio::test]
async fn quit_answers_bye_and_closes_and_later_requests_are_not_read() {
    let server = TestServer::start(test_config()).await;
    let mut peer = server.connect().await;
    peer.send(b"PING\nQUIT\nPING\n").await.unwrap();
    assert_eq!(peer.answer().await.as_deref(), Some("OK PONG"));
    assert_eq!(peer.answer().await.as_deref(), Some("OK BYE"));
    assert_eq!(peer.answer().await, None, "closed");
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_disconnects_mid_request_frees_its_connection_and_its_job() {
    let server = TestServer::start(Config { job_timeout: Duration::from_secs(30), ..test_config() }).await;
    let mut stream = timeout(TEST_TIMEOUT, TcpStream::connect(server.addr)).await.unwrap().unwrap();
    stream.write_all(b"PRIMES 1000000000\n").await.unwrap();
    eventually("the job runs", || server.stats().jobs_running() == 1).await;
    // Reset the connection (RST, not a polite FIN): the server's next read fails at once.
    stream.set_zero_linger().unwrap();
    drop(stream);
    eventually("the connection is gone", || server.stats().connections() == 0).await;
    eventually("the job is abandoned", || server.stats().jobs_running() == 0).await;
    let mut client = server.client().await;
    assert_eq!(client.request("PING").await.unwrap(), "OK PONG", "the server is unharmed");
    server.stop().await;
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_and_then_refuses_connections() {
    let server = TestServer::start(test_config()).await;
    let mut client = server.client().await;
    let addr = server.addr;
    let request = client.request("SLEEP 300");
    let stop = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        server.stop().await;
    };
    let (answer, ()) = tokio::join!(request, stop);
    assert_eq!(answer.unwrap(), "OK 300", "the in-flight request finished");
    let refused = TcpStream::connect(addr).await;
    assert!(refused.is_err(), "the listener is closed");
}
