//! Cost as the work grows: PING throughput of [`CONNECTIONS`] loading connections while 1,000
//! other connections stay open and idle, then 5,000, beside the bare tokio server holding as
//! many; and the service's memory per idle connection among those thousands.
//!
//! Thousands of sockets need more open files than the 1,024 many systems allow a process by
//! default: the bench raises its own soft limit to the hard one first ([`raise_open_files`]), as
//! a unit file's `LimitNOFILE=` does for a service, and the servers it starts inherit it.

use std::net::SocketAddr;
use std::path::Path;

use testkit::TEST_TIMEOUT;

use crate::{CONNECTIONS, Figure, Goal, paired, peers, rounds};

/// The idle connections held while the load runs: first this many, then the second.
const IDLE: [usize; 2] = [1000, 5000];
/// Room for every idle connection and the load, and an idle timeout longer than the figure, as
/// a user expecting thousands of quiet clients would set them.
const IDLE_FLAGS: &[&str] = &["--max-connections", "8192", "--idle-timeout", "10m"];

/// The figures; skipped, with one line, when the open-file limit cannot hold the sockets.
pub(crate) async fn figures(binary: &Path) -> Vec<Figure> {
    // This process holds the client end of every idle connection to both servers, and the load's.
    let needed = 2 * IDLE[1] + 2 * CONNECTIONS + 256;
    let limit = raise_open_files();
    if limit < needed as u64 {
        println!("skipped the idle-connection figures: the open-file limit is {limit}, {needed} needed");
        return Vec::new();
    }
    let service = peers::service(binary, IDLE_FLAGS).await;
    let bare = peers::bare(false).await;
    let (mut at_service, mut at_bare) = (Vec::new(), Vec::new());
    let mut figures = Vec::new();
    let row = crate::BARE_ROW;
    let mut per_connection = 0;
    for (count, name) in
        IDLE.into_iter().zip(["throughput_1000_idle_vs_bare", "throughput_5000_idle_vs_bare"])
    {
        let (before, opened) = (service.resident_bytes().await, count - at_service.len());
        hold(&mut at_service, service.addr, count).await;
        hold(&mut at_bare, bare.addr, count).await;
        // The figure kept is the last step's: 4,000 connections opened after a load has run, when
        // the allocator's arenas are warm and what grows is the connections' own.
        per_connection = service.resident_bytes().await.saturating_sub(before) / opened as u64;
        let depth1 = rounds(&[service.addr, bare.addr], None, 1).await;
        figures.push(Figure::rounds(name, row, paired(&depth1, 1), "req/s", Goal::AtLeast(0.9)));
    }
    figures.push(Figure::alone(
        "bytes_per_idle_connection_5000",
        crate::MEMORY_ROW,
        per_connection as f64,
        "bytes",
        Goal::AtMost(16384.0),
    ));
    drop((at_service, at_bare));
    service.stop().await;
    bare.stop().await;
    figures
}

/// Opens connections to `addr` until `held` has `count` ([`open`]), and keeps them open.
async fn hold(held: &mut Vec<service::Client<tokio::net::TcpStream>>, addr: SocketAddr, count: usize) {
    while held.len() < count {
        held.push(open(addr).await);
    }
}

/// A connection to `addr` that has answered one PING (so the server has set it up: buffers,
/// timers).
pub(crate) async fn open(addr: SocketAddr) -> service::Client<tokio::net::TcpStream> {
    let mut client = service::Client::connect(addr, TEST_TIMEOUT, TEST_TIMEOUT).await.expect("connect");
    assert_eq!(client.request("PING").await.expect("an answer"), "OK PONG");
    client
}

/// Raises this process's soft limit on open files to its hard limit (children inherit it), and
/// returns the limit now in force. Unlimited counts as `u64::MAX`.
pub(crate) fn raise_open_files() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let raised = rustix::process::Rlimit { current: limit.maximum, ..limit };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => limit.maximum.unwrap_or(u64::MAX),
        Err(_) => limit.current.unwrap_or(u64::MAX),
    }
}
