//! The admin listener: HTTP for probes and Prometheus, apart from the protocol's port.
//!
//! * `GET /livez`: 200 while the runtime is responsive (the watchdog ticked recently and on
//!   time), else 503. It depends on nothing outside the process, so a slow dependency never
//!   gets the service restarted.
//! * `GET /readyz`: 200 while the service takes new work; 503 before the listener is bound and
//!   from the moment shutdown begins (before the drain delay, so load balancers stop routing
//!   first).
//! * `GET /metrics`: the metrics, in the OpenMetrics text format that Prometheus reads.
//!
//! hyper (the HTTP implementation under axum and reqwest) serves it, one request per
//! connection: no keep-alive, at most [`MAX_CONNECTIONS`] at once (more are closed at once), and
//! each bounded by [`REQUEST_TIMEOUT`] from accept to the end of the answer. It runs on its own
//! tracker, after the service's tasks: `/livez` keeps answering 200 through the drain and the
//! grace period, and `/readyz` 503.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::sync::{Semaphore, watch};
use tokio_util::bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::health::Health;
use crate::job_queue::JobQueue;
use crate::metrics::{Metrics, Scrape};
use crate::stats::Stats;
use crate::topics::Topics;

/// Admin connections served at once; probes and a scraper need a handful.
const MAX_CONNECTIONS: usize = 16;
/// The bound on one admin connection, from accept to the end of its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The content type of `/metrics`.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the endpoints read.
#[derive(Clone)]
pub(crate) struct Endpoints {
    pub(crate) health: watch::Receiver<Health>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) jobs: JobQueue,
    pub(crate) topics: Arc<Topics>,
    pub(crate) runtime: Handle,
    pub(crate) config: Arc<Config>,
    /// Metric names start with it: the program's name in snake case.
    pub(crate) prefix: Arc<str>,
}

impl Endpoints {
    /// The answer to `method path`: a status, a content type and a body.
    pub(crate) fn answer(&self, method: &Method, path: &str) -> (StatusCode, &'static str, String) {
        const TEXT: &str = "text/plain; charset=utf-8";
        let health = *self.health.borrow();
        match (method, path) {
            (&Method::GET, "/livez") => {
                if health.live(self.config.watchdog_period, self.config.stall_threshold) {
                    (StatusCode::OK, TEXT, "live\n".to_owned())
                } else {
                    let since = health.last_tick.elapsed();
                    let why = format!("stalled: last tick {since:?} ago, {:?} late\n", health.last_lag);
                    (StatusCode::SERVICE_UNAVAILABLE, TEXT, why)
                }
            }
            (&Method::GET, "/readyz") => match (health.listening, health.shutting_down) {
                (_, true) => (StatusCode::SERVICE_UNAVAILABLE, TEXT, "shutting down\n".to_owned()),
                (false, false) => (StatusCode::SERVICE_UNAVAILABLE, TEXT, "starting\n".to_owned()),
                (true, false) => (StatusCode::OK, TEXT, "ready\n".to_owned()),
            },
            (&Method::GET, "/metrics") => {
                let scrape = Scrape {
                    metrics: Arc::clone(&self.metrics),
                    stats: Arc::clone(&self.stats),
                    health,
                    jobs_queued: self.jobs.queued(),
                    topics: self.topics.count(),
                    runtime: self.runtime.clone(),
                };
                (StatusCode::OK, OPENMETRICS, scrape.render(&self.prefix))
            }
            (_, "/livez" | "/readyz" | "/metrics") => {
                (StatusCode::METHOD_NOT_ALLOWED, TEXT, "only GET\n".to_owned())
            }
            _ => (StatusCode::NOT_FOUND, TEXT, "not found: try /livez, /readyz or /metrics\n".to_owned()),
        }
    }
}

/// Serves the endpoints on `listener` until `stop` is cancelled, each connection on `tracker`.
pub(crate) async fn serve(
    listener: TcpListener,
    endpoints: Endpoints,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Per-connection errors and fd exhaustion alike: pause, so as not to spin.
                    tracing::debug!(%error, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Over the limit, the connection is simply closed: a probe retries.
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else { continue };
        let endpoints = endpoints.clone();
        tracker.spawn(async move {
            let _slot = slot;
            let service = service_fn(move |request: Request<Incoming>| {
                let (status, content_type, body) = endpoints.answer(request.method(), request.uri().path());
                let mut response = Response::new(Full::new(Bytes::from(body)));
                *response.status_mut() = status;
                response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
                std::future::ready(Ok::<_, Infallible>(response))
            });
            let connection =
                http1::Builder::new().keep_alive(false).serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(REQUEST_TIMEOUT, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::debug!(%peer, %error, "admin connection failed"),
                Err(_elapsed) => tracing::debug!(%peer, "admin connection timed out"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::App;

    #[tokio::test(flavor = "current_thread")]
    async fn readyz_is_503_until_listening_and_from_the_start_of_shutdown() {
        let app = App::start(&Config { cpu_threads: 1, ..Config::default() }).unwrap();
        let endpoints = app.endpoints();
        let answer = |method: Method, path: &str| {
            let (status, _, body) = endpoints.answer(&method, path);
            (status.as_u16(), body)
        };
        assert_eq!(answer(Method::GET, "/readyz"), (503, "starting\n".to_owned()));
        app.set_listening();
        assert_eq!(answer(Method::GET, "/readyz"), (200, "ready\n".to_owned()));
        assert_eq!(answer(Method::GET, "/livez"), (200, "live\n".to_owned()));
        app.shutdown().begin.cancel();
        app.drain_after_delay().await;
        assert_eq!(answer(Method::GET, "/readyz"), (503, "shutting down\n".to_owned()));
        assert!(app.shutdown().drain.is_cancelled(), "drained after the (zero) delay");
        assert_eq!(answer(Method::POST, "/metrics").0, 405);
        assert_eq!(answer(Method::GET, "/").0, 404);
        app.stop().await;
    }
}
