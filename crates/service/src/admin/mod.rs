//! The admin listener: HTTP for probes and Prometheus, apart from the protocol's port.
//!
//! * `GET /livez`: 200 while the runtime is responsive (the watchdog ticked recently and on
//!   time), else 503. It depends on nothing outside the process, so a slow dependency never
//!   gets the service restarted.
//! * `GET /readyz`: 200 while the service takes new work; 503 before the listener is bound and
//!   from the moment shutdown begins (before the drain delay, so load balancers stop routing
//!   first).
//! * `GET /metrics`: the metrics, in OpenMetrics when the scraper asks for it (Prometheus does),
//!   else in the classic text format 0.0.4.
//!
//! `HEAD` answers as `GET` does, without the body.
//!
//! hyper (the HTTP implementation under axum and reqwest) serves it, one request per
//! connection: no keep-alive. It runs on its own tracker, after the service's tasks: `/livez`
//! keeps answering 200 through the drain and the grace period, and `/readyz` 503.
//!
//! # A probe gets through, whatever other peers do
//!
//! A probe that goes unanswered gets the pod taken out of its Service, then restarted. So a peer
//! that connects and sends nothing, or trickles its request a byte at a time (slow loris), must
//! not be able to keep a probe out:
//!
//! * **The request head has [`HEAD_TIMEOUT`]** (hyper's `header_read_timeout`), a fraction of a
//!   kubelet probe's 1 s: trickling does not push it back.
//! * **A connection that has not sent its whole head yet holds its slot only until somebody
//!   needs it.** With all [`MAX_CONNECTIONS`] slots taken, a new connection takes the place of the
//!   oldest one still waiting for its head, which is closed. A probe sends its head at once, so it
//!   is answered however many silent peers there are; an attacker would have to send complete
//!   requests, which are answered at once. Evicted connections end at their next poll. At most
//!   [`MAX_TASKS`] connection tasks exist at once, counting those: at that bound the listener
//!   waits for one to end, and new connections wait in its backlog (`ADMIN_BACKLOG`, sized for
//!   a flood of connects), not refused.
//! * **The whole exchange has [`REQUEST_TIMEOUT`]**, from accept to the end of the answer.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::sync::{Semaphore, watch};
use tokio_util::bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::health::Health;
use self::scrape::{Format, Scrape};
use crate::backoff::Backoff;
use crate::shared::Shared;

pub(crate) mod health;
mod scrape;
pub(crate) mod watchdog;

/// Admin connections served at once; probes and a scraper need a handful.
const MAX_CONNECTIONS: usize = 512;
/// Connection tasks alive at once, counting the evicted ones that have not ended yet.
const MAX_TASKS: usize = 2 * MAX_CONNECTIONS;
/// Time for a request's head to arrive whole, from accept.
const HEAD_TIMEOUT: Duration = Duration::from_millis(500);
/// The bound on one admin connection, from accept to the end of its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The first pause after an accept error; it doubles up to [`LAST_ACCEPT_PAUSE`].
const FIRST_ACCEPT_PAUSE: Duration = Duration::from_millis(50);
/// The longest pause between accept retries.
const LAST_ACCEPT_PAUSE: Duration = Duration::from_secs(1);

/// What the endpoints read.
#[derive(Clone)]
pub(crate) struct Endpoints {
    /// The service's core, whose counters a scrape reads.
    pub(crate) shared: Arc<Shared>,
    pub(crate) health: watch::Receiver<Health>,
    /// The runtime whose figures a scrape reads.
    pub(crate) runtime: Handle,
    /// Metric names start with it: the program's name in snake case.
    pub(crate) prefix: Arc<str>,
}

impl Endpoints {
    /// The answer to `method path` (`accept`: the request's `Accept` header): a status, a
    /// content type and a body. `HEAD` is answered as `GET`; hyper leaves the body out.
    pub(crate) fn answer(&self, method: &Method, path: &str, accept: Option<&str>) -> Answer {
        const TEXT: &str = "text/plain; charset=utf-8";
        let health = *self.health.borrow();
        let method = if method == Method::HEAD { &Method::GET } else { method };
        match (method, path) {
            (&Method::GET, "/livez") => {
                let config = &self.shared.config;
                if health.live(config.watchdog_period, config.stall_threshold) {
                    Answer::new(StatusCode::OK, TEXT, "live\n".to_owned())
                } else {
                    let since = health.last_tick.elapsed();
                    let why = format!("stalled: last tick {since:?} ago, {:?} late\n", health.last_lag);
                    Answer::new(StatusCode::SERVICE_UNAVAILABLE, TEXT, why)
                }
            }
            (&Method::GET, "/readyz") => match (health.listening, health.shutting_down) {
                (_, true) => Answer::new(StatusCode::SERVICE_UNAVAILABLE, TEXT, "shutting down\n".to_owned()),
                (false, false) => Answer::new(StatusCode::SERVICE_UNAVAILABLE, TEXT, "starting\n".to_owned()),
                (true, false) => Answer::new(StatusCode::OK, TEXT, "ready\n".to_owned()),
            },
            (&Method::GET, "/metrics") => {
                let scrape =
                    Scrape { shared: Arc::clone(&self.shared), health, runtime: self.runtime.clone() };
                let format = Format::negotiate(accept);
                Answer::new(StatusCode::OK, format.content_type(), scrape.render(&self.prefix, format))
            }
            (_, "/livez" | "/readyz" | "/metrics") => {
                Answer::new(StatusCode::METHOD_NOT_ALLOWED, TEXT, "only GET and HEAD\n".to_owned())
            }
            _ => Answer::new(
                StatusCode::NOT_FOUND,
                TEXT,
                "not found: try /livez, /readyz or /metrics\n".to_owned(),
            ),
        }
    }
}

/// An endpoint's answer: a status, a content type and a body.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) content_type: &'static str,
    pub(crate) body: String,
}

impl Answer {
    fn new(status: StatusCode, content_type: &'static str, body: String) -> Self {
        Self { status, content_type, body }
    }
}

/// Serves the endpoints on `listener` until `stop` is cancelled, each connection on `tracker`.
pub(crate) async fn serve(
    listener: TcpListener,
    endpoints: Endpoints,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let admission = Arc::new(Admission::default());
    let tasks = Arc::new(Semaphore::new(MAX_TASKS));
    let mut backoff = Backoff::new(FIRST_ACCEPT_PAUSE, LAST_ACCEPT_PAUSE);
    loop {
        // At the bound on tasks, wait for one to end (evicted ones end at their next poll)
        // rather than refuse: the next connection may be a probe.
        let task = tokio::select! {
            () = stop.cancelled() => return,
            task = Arc::clone(&tasks).acquire_owned() => task.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: pause, so as not to spin.
                    if let Some(pause) = backoff.accept_failed(&error) {
                        tracing::debug!(%error, retry_in = ?pause, "admin accept failed");
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(pause) => {}
                        }
                    }
                    continue;
                }
            },
        };
        backoff.succeeded();
        // With no slot to take, the connection is simply closed: a probe retries.
        let Some(ticket) = Admission::admit(&admission) else { continue };
        let endpoints = endpoints.clone();
        tracker.spawn(async move {
            let _task = task;
            let evicted = ticket.evicted.clone();
            let ticket = Arc::new(ticket);
            let service = service_fn(move |request: Request<Incoming>| {
                // The head is in: from now on this connection keeps its slot.
                ticket.head_received();
                let accept = request.headers().get(ACCEPT).and_then(|value| value.to_str().ok());
                let Answer { status, content_type, body } =
                    endpoints.answer(request.method(), request.uri().path(), accept);
                let mut response = Response::new(Full::new(Bytes::from(body)));
                *response.status_mut() = status;
                response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
                std::future::ready(Ok::<_, Infallible>(response))
            });
            let connection = http1::Builder::new()
                .keep_alive(false)
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                served = tokio::time::timeout(REQUEST_TIMEOUT, connection) => match served {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => tracing::debug!(%peer, %error, "admin connection failed"),
                    Err(_elapsed) => tracing::debug!(%peer, "admin connection timed out"),
                },
                () = evicted.cancelled() => tracing::debug!(%peer, "admin connection evicted before its request"),
            }
        });
    }
}

/// Who gets an admin connection slot; see the module docs.
#[derive(Debug, Default)]
struct Admission {
    state: Mutex<AdmissionState>,
}

#[derive(Debug, Default)]
struct AdmissionState {
    /// Connections that hold a slot: alive and not evicted.
    slots: usize,
    /// Connections still waiting for their request's head, by age (ids grow), each with the
    /// token that evicts it.
    waiting: BTreeMap<u64, CancellationToken>,
    next_id: u64,
}

impl Admission {
    /// A ticket for a new connection, evicting the oldest one still waiting for its head if
    /// every slot is taken; `None` if every slot holds a request being answered.
    fn admit(this: &Arc<Self>) -> Option<Ticket> {
        let mut state = this.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.slots >= MAX_CONNECTIONS {
            let (_, oldest) = state.waiting.pop_first()?;
            oldest.cancel();
            state.slots -= 1;
        }
        state.slots += 1;
        let id = state.next_id;
        state.next_id += 1;
        let evicted = CancellationToken::new();
        state.waiting.insert(id, evicted.clone());
        Some(Ticket { id, evicted, admission: Arc::clone(this) })
    }
}

/// A connection's place in the [`Admission`]; dropped when its task ends.
#[derive(Debug)]
struct Ticket {
    id: u64,
    /// Cancelled when a newer connection takes this one's slot.
    evicted: CancellationToken,
    admission: Arc<Admission>,
}

impl Ticket {
    /// The request's head has arrived: the connection can no longer be evicted.
    fn head_received(&self) {
        let mut state = self.admission.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.waiting.remove(&self.id);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut state = self.admission.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.waiting.remove(&self.id);
        if !self.evicted.is_cancelled() {
            state.slots -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{App, Config};

    #[tokio::test(flavor = "current_thread")]
    async fn readyz_is_503_until_listening_and_from_the_start_of_shutdown() {
        let app = App::start(&Config { cpu_threads: 1, ..Config::default() }).unwrap();
        let endpoints = app.endpoints();
        let answer = |method: Method, path: &str| {
            let Answer { status, body, .. } = endpoints.answer(&method, path, None);
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
        assert_eq!(answer(Method::HEAD, "/livez").0, 200);
        assert_eq!(answer(Method::GET, "/").0, 404);
        app.stop().await;
    }

    #[test]
    fn a_new_connection_takes_the_slot_of_the_oldest_one_without_a_request() {
        let admission = Arc::new(Admission::default());
        let mut tickets: Vec<Ticket> =
            (0..MAX_CONNECTIONS).map(|_| Admission::admit(&admission).expect("a free slot")).collect();
        tickets[0].head_received();
        let newcomer = Admission::admit(&admission).expect("the oldest waiting one makes room");
        assert!(!tickets[0].evicted.is_cancelled(), "a connection with its request in keeps its slot");
        assert!(tickets[1].evicted.is_cancelled(), "the oldest waiting one is evicted");
        assert!(tickets[2..].iter().all(|ticket| !ticket.evicted.is_cancelled()));
        // Every remaining connection sends its request: nobody can be evicted now.
        for ticket in &tickets[2..] {
            ticket.head_received();
        }
        newcomer.head_received();
        assert!(Admission::admit(&admission).is_none(), "every slot holds a request");
        // The evicted task ends; its slot was already handed over.
        drop(tickets.remove(1));
        assert!(Admission::admit(&admission).is_none());
        drop(tickets.remove(0));
        assert!(Admission::admit(&admission).is_some(), "a connection that ended frees its slot");
    }
}
