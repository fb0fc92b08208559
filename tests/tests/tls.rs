//! TLS on the service port: the handshake's bounds on paused time (over `duplex`), then the
//! real server on loopback: requests, mutual TLS, hostile peers and certificate reload (by call
//! and by the watch). A client nobody here wrote (`openssl s_client`) is tested against the real
//! binary, in the service crate's `tests/tls.rs`.
//!
//! Certificates come from [`testkit::pki`]: made in memory, written to a directory of the test's.

use std::sync::Arc;
use std::time::Duration;

use service::tls::ClientTls;
use service::{Config, HandshakeFailure};
use testkit::pki::Pki;
use testkit::{Harness, TEST_TIMEOUT, TestServer, eventually, server_certificate, tls_config};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::{self, Instant};

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_stalled_handshake_is_closed_at_exactly_the_timeout_and_frees_its_slot() {
    let pki = Pki::new();
    let config = Config { tls_handshake_timeout: secs(3), ..tls_config(&pki, false) };
    let harness = Harness::start(&config);
    let slots = Arc::new(Semaphore::new(1));
    for sent in [&b""[..], b"\x16\x03\x01"] {
        let start = Instant::now();
        let (mut peer, server) = tokio::io::duplex(4096);
        let slot = Arc::clone(&slots).try_acquire_owned().expect("the slot is free");
        harness.app.spawn_connection(server, "stalled", Some(slot));
        // Nothing, or the first bytes of a record header: then silence.
        peer.write_all(sent).await.unwrap();
        let mut buffer = [0; 64];
        assert_eq!(peer.read(&mut buffer).await.unwrap(), 0, "closed without a word");
        assert_eq!(start.elapsed(), secs(3), "closed at the handshake timeout ({sent:?} sent)");
        assert_eq!(slots.available_permits(), 1, "the slot is free again");
    }
    assert_eq!(harness.app.stats().handshakes_failed(HandshakeFailure::Timeout), 2);
    harness.stop().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn after_a_good_handshake_the_idle_timeout_holds_as_on_plain_tcp() {
    let pki = Pki::new();
    let harness = Harness::start(&Config { idle_timeout: secs(10), ..tls_config(&pki, false) });
    let stream = harness.connect_tls(&pki.client_tls(None), 64 * 1024).await.unwrap();
    let mut client = service::Client::new(stream, TEST_TIMEOUT);
    let start = Instant::now();
    time::sleep(secs(9)).await;
    assert_eq!(client.request("PING").await.unwrap(), "OK PONG");
    assert!(client.next_push(None).await.is_err(), "closed");
    assert_eq!(start.elapsed(), secs(19), "idle 10 s after the answer at 9 s");
    harness.stop().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn after_a_good_handshake_a_peer_that_stops_reading_is_dropped_at_the_write_timeout() {
    let pki = Pki::new();
    let harness =
        Harness::start(&Config { write_timeout: secs(5), idle_timeout: secs(60), ..tls_config(&pki, false) });
    // A 1 KiB pipe: the server's encrypted answers fill it, and the peer never reads them.
    let mut stream = harness.connect_tls(&pki.client_tls(None), 1024).await.unwrap();
    let start = Instant::now();
    let request = "PING\n".repeat(16);
    let broken_at = loop {
        if stream.write_all(request.as_bytes()).await.and(stream.flush().await).is_err() {
            break Instant::now();
        }
    };
    assert_eq!(broken_at - start, secs(5), "dropped exactly at the write timeout");
    assert_eq!(harness.app.stats().open_connections(), 0);
    harness.stop().await;
}

/// On a multi-threaded runtime a subscriber moves to the subscriber threads, its TLS session
/// with it (see `fanout/subscriber_threads.rs`): it still gets what is published, is still
/// answered, and still closes at shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_over_tls_is_served_after_it_moves() {
    let pki = Pki::new();
    let server = TestServer::start(tls_config(&pki, false));
    let tls = pki.client_tls(None);
    let mut subscriber = server.tls_client(&tls).await.unwrap();
    let mut publisher = server.tls_client(&tls).await.unwrap();
    assert_eq!(subscriber.request("SUBSCRIBE news").await.unwrap(), "OK 1");
    for text in ["one", "two"] {
        assert_eq!(publisher.request(&format!("PUBLISH news {text}")).await.unwrap(), "OK 1");
        assert_eq!(subscriber.next_push(Some(TEST_TIMEOUT)).await.unwrap(), format!("MSG news {text}"));
    }
    assert_eq!(subscriber.request("PING").await.unwrap(), "OK PONG");
    server.stop().await;
    assert!(subscriber.next_push(Some(TEST_TIMEOUT)).await.is_err(), "closed at shutdown");
}

#[tokio::test]
async fn ping_pipelining_and_graceful_shutdown_work_over_tls() {
    let pki = Pki::new();
    let server = TestServer::start(tls_config(&pki, false));
    let tls = pki.client_tls(None);
    let mut client = server.tls_client(&tls).await.unwrap();
    assert_eq!(client.request("PING").await.unwrap(), "OK PONG");
    let answers = client.pipeline(std::iter::repeat_n("PING", 16)).await.unwrap();
    assert_eq!(answers, vec!["OK PONG"; 16], "16 pipelined, answered in order");
    // A request in flight at shutdown is answered, then the connection closes.
    let mut waiting = server.tls_client(&tls).await.unwrap();
    let (answer, ()) = tokio::join!(waiting.request("WAIT 300"), async {
        eventually("the WAIT is in flight", || server.stats().open_connections() == 2).await;
        time::sleep(Duration::from_millis(50)).await;
        server.shutdown().begin.cancel();
    });
    assert_eq!(answer.unwrap(), "OK 300");
    assert!(waiting.next_push(Some(TEST_TIMEOUT)).await.is_err(), "closed after its answer");
    server.stop().await;
}

#[tokio::test]
async fn mutual_tls_refuses_a_client_without_a_good_certificate_and_serves_a_good_one() {
    let pki = Pki::new();
    let server = TestServer::start(tls_config(&pki, true));
    for (who, identity) in
        [("no certificate", None), ("another CA", Some(&pki.stranger)), ("expired", Some(&pki.expired))]
    {
        // Under TLS 1.3 the client finishes its side first; the server's refusal comes as an
        // alert, at the latest on the first read.
        let refused = match server.tls_client(&pki.client_tls(identity)).await {
            Ok(mut client) => client.request("PING").await.err(),
            Err(error) => Some(error),
        };
        assert!(refused.is_some(), "{who}: served");
    }
    let counted = || server.stats().handshakes_failed(HandshakeFailure::Certificate);
    eventually("three refusals are counted", || counted() == 3).await;
    let mut client = server.tls_client(&pki.client_tls(Some(&pki.client))).await.unwrap();
    assert_eq!(client.request("PING").await.unwrap(), "OK PONG");
    server.stop().await;
}

#[tokio::test]
async fn plaintext_and_garbage_on_the_tls_port_are_closed_and_counted_by_reason() {
    let pki = Pki::new();
    let server = TestServer::start(tls_config(&pki, false));
    for bytes in [&b"PING\n"[..], &[0x16, 0x03, 0x01, 0x00, 0x05, 0xde, 0xad, 0xbe, 0xef, 0x00]] {
        let mut peer = TcpStream::connect(server.addr).await.unwrap();
        peer.write_all(bytes).await.unwrap();
        // rustls answers with an alert record, which is no line, and closes.
        let answer = time::timeout(TEST_TIMEOUT, async {
            let mut everything = Vec::with_capacity(4096);
            while everything.len() < 4096 && peer.read_buf(&mut everything).await.unwrap_or(0) > 0 {}
            everything
        })
        .await
        .expect("closed in time");
        assert!(!answer.windows(2).any(|pair| pair == b"OK"), "{bytes:?} was answered: {answer:?}");
    }
    eventually("both are counted", || server.stats().handshakes_failed(HandshakeFailure::Protocol) == 2)
        .await;
    let (_, metrics) = testkit::admin_get(server.admin_addr, "/metrics").await;
    let prefix = env!("CARGO_PKG_NAME").trim_end_matches("-tests").replace('-', "_");
    let series = format!("{prefix}_tls_handshake_failures_total{{reason=\"protocol\"}}");
    assert_eq!(testkit::parse_metrics(&metrics).get(&series), Some(&2.0), "{metrics}");
    server.stop().await;
}

#[tokio::test]
async fn a_reload_changes_the_certificate_of_new_connections_only_and_a_bad_one_changes_nothing() {
    let pki = Pki::new();
    let server = TestServer::start(tls_config(&pki, false));
    let reloader = server.tls_reloader.clone().expect("a TLS server has a reloader");
    let tls = pki.client_tls(None);
    let mut old = server.tls_client(&tls).await.unwrap();
    assert_eq!(server_certificate(&old), pki.server.der);

    let renewed = pki.renew_server();
    reloader.reload().await.expect("the renewed files load");
    let new = server.tls_client(&tls).await.unwrap();
    assert_eq!(server_certificate(&new), renewed, "new connections get the renewed certificate");
    assert_eq!(server_certificate(&old), pki.server.der, "an open connection keeps its own");
    assert_eq!(old.request("PING").await.unwrap(), "OK PONG");

    // A key that is not the certificate's, then a certificate that is not PEM: refused.
    tokio::fs::copy(&pki.client.key, &pki.server.key).await.unwrap();
    let refused = reloader.reload().await.unwrap_err().to_string();
    assert!(refused.starts_with("--tls-key") && refused.contains("does not match"), "{refused}");
    tokio::fs::write(&pki.server.cert, "not a certificate").await.unwrap();
    let refused = reloader.reload().await.unwrap_err().to_string();
    assert!(refused.starts_with("--tls-cert") && refused.contains("no PEM certificate"), "{refused}");
    let mut after = server.tls_client(&tls).await.unwrap();
    assert_eq!(server_certificate(&after), renewed, "the certificate in use stays");
    assert_eq!(after.request("PING").await.unwrap(), "OK PONG");
    server.stop().await;
}

/// Waits (bounded) until a new connection is shown `certificate`: the watch picked it up.
async fn until_served(server: &TestServer, tls: &ClientTls, certificate: &[u8]) {
    let deadline = Instant::now() + TEST_TIMEOUT;
    loop {
        let client = server.tls_client(tls).await.unwrap();
        if server_certificate(&client) == certificate {
            return;
        }
        assert!(Instant::now() < deadline, "the renewed certificate was not picked up");
        time::sleep(Duration::from_millis(20)).await;
    }
}

/// A renewed pair written with the old modification times (as `cp -p`, secret syncers and
/// restores do) is still picked up: the watch compares what the files hold.
#[tokio::test]
async fn a_certificate_renewed_with_its_old_modification_times_is_picked_up() {
    let pki = Pki::new();
    let config = Config { tls_watch_period: Duration::from_millis(20), ..tls_config(&pki, false) };
    let server = TestServer::start(config);
    let tls = pki.client_tls(None);
    let files = [pki.server.cert.clone(), pki.server.key.clone()];
    let times = tokio::task::spawn_blocking({
        let files = files.clone();
        move || {
            #[expect(clippy::disallowed_methods, reason = "a test's blocking file work, on spawn_blocking")]
            let times: Vec<_> = files
                .iter()
                .map(|file| std::fs::metadata(file).and_then(|m| m.modified()).unwrap())
                .collect();
            times
        }
    })
    .await
    .unwrap();
    let renewed = pki.renew_server();
    tokio::task::spawn_blocking(move || {
        for (file, time) in files.iter().zip(times) {
            let opened = std::fs::File::options().write(true).open(file).unwrap();
            opened.set_modified(time).unwrap();
        }
    })
    .await
    .unwrap();
    until_served(&server, &tls, &renewed).await;
    server.stop().await;
}

#[tokio::test]
async fn a_certificate_renewed_in_place_is_picked_up_without_a_signal() {
    let pki = Pki::new();
    let config = Config { tls_watch_period: Duration::from_millis(20), ..tls_config(&pki, false) };
    let server = TestServer::start(config);
    let tls = pki.client_tls(None);
    let renewed = pki.renew_server();
    until_served(&server, &tls, &renewed).await;
    server.stop().await;
}
