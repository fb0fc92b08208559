//! TLS beside plain TCP: PING throughput at depth 1 and 16 (the same service flags, the same
//! client, rounds alternating), and full handshakes a second (no session resumption), each
//! connection shaking hands, answering one PING and closing; and, under callgrind, the
//! instructions the server runs for each such handshake; and memory per idle TLS connection.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use service::load::LoadPlan;
use service::tls::ClientTls;
use testkit::TEST_TIMEOUT;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_rustls::client::TlsStream;

use crate::{
    CONNECTIONS, Figure, Goal, ROUND, ROUNDS, SERVICE_FLAGS, bytes_per_connection, instructions, load,
    paired, peers, plan,
};

/// Connections opening and closing at once in the handshake figure.
const HANDSHAKERS: usize = 8;
/// Idle TLS connections held for the memory figure.
const IDLE_CONNECTIONS: usize = 1000;
/// Full handshakes counted under callgrind (about 50 times slower there).
const COUNTED_HANDSHAKES: u64 = 50;

pub(crate) async fn figures(binary: &Path) -> Vec<Figure> {
    let pki = testkit::pki::Pki::new();
    let client = pki.client_tls(None);
    let plain = peers::service(binary, SERVICE_FLAGS).await;
    let (cert, key) =
        (pki.server.cert.to_str().expect("a UTF-8 path"), pki.server.key.to_str().expect("a UTF-8 path"));
    let secure =
        peers::service(binary, &[SERVICE_FLAGS, &["--tls-cert", cert, "--tls-key", key]].concat()).await;
    let mut figures = Vec::new();
    let row = "PING over TLS / TCP, depth 1, 16";
    for (name, depth) in [("tls_throughput_depth1", 1), ("tls_throughput_depth16", 16)] {
        // Each round: [TLS, TCP], so the figure is TLS's and the baseline TCP's.
        let mut rounds = Vec::new();
        for _ in 0..ROUNDS {
            let over_tcp = load(&plan(plain.addr, CONNECTIONS, depth, &["PING"])).await.throughput();
            let tls_plan =
                LoadPlan { tls: Some(client.clone()), ..plan(secure.addr, CONNECTIONS, depth, &["PING"]) };
            rounds.push(vec![load(&tls_plan).await.throughput(), over_tcp]);
        }
        figures.push(Figure::rounds(name, row, paired(&rounds, 1), "req/s", Goal::AtLeast(0.9)));
    }
    let full = client.clone().without_resumption();
    let handshakes = handshakes_per_second(secure.addr, &full).await;
    let row = "full TLS handshakes, instructions each";
    figures.push(Figure::alone("tls_full_handshakes_per_s", row, handshakes, "hs/s", Goal::Watch));
    let per_connection = memory_per_connection(&secure, &client).await;
    let memory_row = "memory per idle TLS connection";
    figures.push(Figure::alone(
        "tls_bytes_per_idle_connection",
        memory_row,
        per_connection,
        "bytes",
        Goal::Watch,
    ));
    plain.stop().await;
    secure.stop().await;
    let tls_flags = [SERVICE_FLAGS, &["--tls-cert", cert, "--tls-key", key]].concat();
    if let Some(count) = instructions_per_handshake(binary, &tls_flags, &full).await {
        figures.push(Figure::alone(
            "tls_instructions_per_handshake",
            row,
            count,
            "instructions",
            Goal::Watch,
        ));
    }
    figures
}

/// The instructions the server runs per full handshake (and the one PING after it), under
/// callgrind: [`COUNTED_HANDSHAKES`] in turn, less a run without them as long (start-up,
/// reading the certificate, shutdown). `None` without valgrind, said once.
async fn instructions_per_handshake(binary: &Path, flags: &[&str], client: &ClientTls) -> Option<f64> {
    let dir = instructions::counts_dir("tls_instructions_per_handshake").await?;
    let (loaded, idle) = (dir.join("handshakes.out"), dir.join("idle.out"));
    let server = peers::service_counted(binary, flags, &loaded).await;
    let (addr, started) = (server.addr.to_string(), Instant::now());
    for _ in 0..COUNTED_HANDSHAKES {
        shake_hands(&addr, client).await;
    }
    let took = started.elapsed();
    server.stop().await;
    let server = peers::service_counted(binary, flags, &idle).await;
    tokio::time::sleep(took).await;
    server.stop().await;
    let per_handshake = instructions::total(&loaded).await.saturating_sub(instructions::total(&idle).await)
        / COUNTED_HANDSHAKES;
    let _ = tokio::fs::remove_dir_all(&dir).await;
    Some(per_handshake as f64)
}

/// The service's resident memory per idle TLS connection: among [`IDLE_CONNECTIONS`] that each
/// shook hands and answered one PING, taken as the plain figure is ([`bytes_per_connection`]).
async fn memory_per_connection(service: &peers::Process, client: &ClientTls) -> f64 {
    let addr = service.addr.to_string();
    bytes_per_connection(service, IDLE_CONNECTIONS, || shake_hands(&addr, client)).await
}

/// Full handshakes a second, each followed by one PING ([`shake_hands`]), from [`HANDSHAKERS`]
/// loops for [`ROUND`] x 2.
async fn handshakes_per_second(addr: SocketAddr, client: &ClientTls) -> f64 {
    let started = Instant::now();
    let deadline = started + 2 * ROUND;
    let mut loops = JoinSet::new();
    for _ in 0..HANDSHAKERS {
        let client = client.clone();
        loops.spawn(async move {
            let (addr, mut done) = (addr.to_string(), 0_u64);
            while Instant::now() < deadline {
                shake_hands(&addr, &client).await;
                done += 1;
            }
            done
        });
    }
    let done: u64 = loops.join_all().await.into_iter().sum();
    done as f64 / started.elapsed().as_secs_f64()
}

/// A TLS connection to `addr` that has shaken hands and answered one PING: under TLS 1.3 the
/// client is done first, and the answer says the server is too.
async fn shake_hands(addr: &str, client: &ClientTls) -> service::Client<TlsStream<TcpStream>> {
    let connected = service::Client::connect_tls(addr, client, TEST_TIMEOUT, TEST_TIMEOUT);
    let mut connection = connected.await.expect("a TLS connection");
    assert_eq!(connection.request("PING").await.expect("an answer"), "OK PONG");
    connection
}
