//! The HTTP front beside a bare hyper server and a bare axum router: `POST /v1/commands/PING`
//! over 50 keep-alive connections, loaded by `wrk` (Debian's package: a load generator nobody
//! here wrote), rounds alternating between the three. The bare hyper server is hyper's HTTP/1.1
//! connection and nothing else (no router, no limits, no timeouts, no metrics); the bare axum
//! server is the same connection with an axum router and the front's one route in front of it,
//! its handler taking the name from the path (no bounds, no command, no metrics). Both answer
//! every request with the bytes the service answers PING with. So the first ratio is what the
//! front costs in all, and the second what it costs above the framework it is written in.
//! Without `wrk`, or without the `http` feature, the figures are skipped with one line.
//!
//! The bare servers run in processes of their own: this bench's executable, started with
//! [`BARE_HTTP_SERVER`] or [`BARE_AXUM_SERVER`]. Each prints its address on stdout and serves
//! until its stdin closes.

use std::convert::Infallible;
use std::path::Path;

use axum::Router;
use axum::extract::Path as Segment;
use axum::routing::post;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::process::Command;
use tower::ServiceExt as _;

use crate::{CONNECTIONS, Figure, Goal, ROUNDS, SERVICE_FLAGS, paired, peers};

/// The argument that makes this executable the bare hyper server.
pub(crate) const BARE_HTTP_SERVER: &str = "--bare-http-server";
/// The argument that makes this executable the bare axum server.
pub(crate) const BARE_AXUM_SERVER: &str = "--bare-axum-server";
/// What the bare servers answer: the service's answer to PING.
const PONG: &str = "{\"answer\":\"PONG\"}\n";
/// wrk's script: every request a POST (an empty body: PING takes no argument).
const POST: &str = "wrk.method = \"POST\"\n";

/// The bare hyper server: serves until stdin closes.
pub(crate) fn main() {
    crate::bare::serve_until_stdin_closes(|stream| async move {
        let _ = stream.set_nodelay(true);
        let service = service_fn(|_: Request<Incoming>| async {
            let mut response = Response::new(Full::new(Bytes::from_static(PONG.as_bytes())));
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok::<_, Infallible>(response)
        });
        let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
    });
}

/// The bare axum server: the front's route on the same hyper connection, served as the front
/// serves its router (cloned for each request, as `TowerToHyperService` does). Until stdin
/// closes.
pub(crate) fn axum_main() {
    let router = Router::new().route(
        "/v1/commands/{name}",
        post(|Segment(_name): Segment<String>| async { ([(CONTENT_TYPE, "application/json")], PONG) }),
    );
    crate::bare::serve_until_stdin_closes(move |stream| {
        let router = router.clone();
        async move {
            let _ = stream.set_nodelay(true);
            let service = service_fn(move |request: Request<Incoming>| {
                router.clone().oneshot(request.map(axum::body::Body::new))
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        }
    });
}

/// HTTP PING throughput of the service's front beside the bare hyper and axum servers.
pub(crate) async fn figures(binary: &Path) -> Vec<Figure> {
    // A service built without the `http` feature has no `--http-listen` to start it with.
    let help = Command::new(binary).args(["serve", "--help"]).output().await.expect("run serve --help");
    if !String::from_utf8_lossy(&help.stdout).contains("--http-listen") {
        println!("skipped http_vs_bare_hyper: the service has no HTTP front (the `http` feature)");
        return Vec::new();
    }
    if Command::new("wrk").arg("--version").output().await.is_err() {
        println!("skipped http_vs_bare_hyper: wrk is not installed (apt-get install wrk)");
        return Vec::new();
    }
    let flags = [SERVICE_FLAGS, &["--http-listen", "127.0.0.1:0"]].concat();
    let service = peers::service(binary, &flags).await;
    let front = service.http.expect("the service logs where its HTTP front listens");
    let (bare, bare_axum) = (peers::bare_http().await, peers::bare_axum().await);
    let script = std::env::temp_dir().join(format!("bench-post-{}.lua", std::process::id()));
    tokio::fs::write(&script, POST).await.expect("write wrk's script");
    let mut rounds = Vec::new();
    for _ in 0..ROUNDS {
        let mut round = Vec::new();
        for addr in [front, bare.addr, bare_axum.addr] {
            round.push(wrk(&script, &format!("http://{addr}/v1/commands/PING")).await);
        }
        rounds.push(round);
    }
    let _ = tokio::fs::remove_file(&script).await;
    service.stop().await;
    bare.stop().await;
    bare_axum.stop().await;
    // One row: the goal is hyper's, and axum's figure (to watch) is the front's own cost.
    let row = "HTTP PING (keep-alive) / bare hyper, bare axum";
    vec![
        Figure::rounds("http_vs_bare_hyper", row, paired(&rounds, 1), "req/s", Goal::AtLeast(0.9)),
        Figure::rounds("http_vs_bare_axum", row, paired(&rounds, 2), "req/s", Goal::Watch),
    ]
}

/// One round of wrk on `url`: its requests a second, after checking that every answer was a 2xx
/// and no socket failed (a figure made of refusals would measure nothing).
async fn wrk(script: &Path, url: &str) -> f64 {
    let connections = CONNECTIONS.to_string();
    let output = Command::new("wrk")
        .args(["--threads", "2", "--connections", &connections, "--duration", "1s", "--script"])
        .arg(script)
        .arg(url)
        .output()
        .await
        .expect("run wrk");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "wrk {url}: {report}");
    assert!(
        !report.contains("Non-2xx") && !report.contains("Socket errors"),
        "wrk {url}: answers that were not 200:\n{report}"
    );
    report
        .lines()
        .find_map(|line| line.strip_prefix("Requests/sec:"))
        .and_then(|rate| rate.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk's report:\n{report}"))
}
