//! The HTTP front (`--http-listen`): the same commands, topics and bounds as the line protocol,
//! over HTTP/1.1 and HTTP/2, for the clients that speak only HTTP.
//!
//! axum routes the requests (`routes.rs`, `events.rs`); hyper (the one under the admin port)
//! serves each connection, HTTP/1.1 or HTTP/2 by what the client speaks (h2c with prior
//! knowledge, or ALPN over TLS). No command has HTTP code of its own: `POST
//! /v1/commands/{name}` looks the name up in the same registry as a request line, so a command
//! added in `commands/` is served here too, through the same job queue, pool and topics.
//!
//! # The bounds, from hyper and tower
//!
//! * **Connections**: the line port's `Semaphore` (`--max-connections` counts both ports); one
//!   over it is answered 503 and closed at once, as the line port answers `ERR busy`.
//! * **A request's head** must arrive whole within `--idle-timeout` (hyper's
//!   `header_read_timeout`, which also closes an HTTP/1 connection left idle that long), and a
//!   connection's first request too (what hyper reads to tell HTTP/1 from HTTP/2 has no timeout
//!   of its own): a slow loris holds its slot no longer than a silent line peer. An HTTP/2
//!   connection with no stream open stays while it answers the pings (hyper has no idle timeout
//!   for HTTP/2); `--max-connections` bounds how many.
//! * **The head**: over HTTP/1 a connection's read buffer is `--max-line` plus [`HEAD_ROOM`]
//!   (16 KiB), and a request's head must fit in it; over HTTP/2 the header list is at most
//!   16 KiB (hyper's default). Past either, 431.
//! * **The body** is at most `--max-line` bytes (413 beyond it), read within the request timeout.
//! * **Requests at once**, over every connection: `--http-max-requests` (tower's global
//!   concurrency limit behind `LoadShed`: past it, 503 busy at once, never a queue).
//! * **A request's time**, head to answer: `--http-request-timeout` (tower's `Timeout`, 504).
//! * **Per connection**: HTTP/1 answers one request at a time; HTTP/2 takes at most
//!   `--max-in-flight` concurrent streams.
//! * **Writes**: each is bounded by `--write-timeout` (tokio-io-timeout under hyper, which has
//!   none), so a client that stops reading (a stalled Server-Sent Events reader) loses its
//!   connection as a line peer does; TCP keepalive and the send buffer are set at accept.
//!
//! # Shutdown
//!
//! Steps as for the line protocol (see [`crate::shutdown`]): `/readyz` turns 503; after the
//! drain delay this listener closes with the line listener, each connection is told to shut
//! down gracefully (HTTP/1 closes after the request in progress, or at once when idle; HTTP/2
//! sends GOAWAY and finishes its open streams), and event streams end. Requests still running
//! at the end of the grace period are answered 503 shutting-down, as far as that can be written
//! at once, and the connection is cut.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use futures_util::FutureExt as _;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::{self, Instant};
use tokio_io_timeout::TimeoutStream;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use self::routes::Routes;
use crate::commands::{self, Commands, Context, Reply};
use crate::metrics::http::Route;
use crate::shared::Shared;
use crate::telemetry::spans::Traced;
use crate::tls::{Acceptor, Handshake};

mod events;
mod routes;

/// An HTTP/2 client's pings: one after this long with no frame from it.
const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// Time for the answer to an HTTP/2 ping before the connection is closed.
const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Room for an HTTP/1 request's head in a connection's read buffer, beside a body of
/// `--max-line` (hyper's default buffer is 408 KiB a connection, which no bound of ours chose).
const HEAD_ROOM: usize = 16 * 1024;
/// Refused connections whose request is being read before they close, at most.
const MAX_LINGERING: usize = 64;
/// How long a refused connection's request is read for, at most.
const LINGER: Duration = Duration::from_secs(1);
/// What a connection over the limit is answered before it is closed (it has not been read, so
/// HTTP/1 is the guess; an HTTP/2 or TLS client sees the connection close).
pub(crate) static BUSY: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let body = "{\"error\":{\"code\":\"busy\",\"detail\":\"too many connections\"}}\n";
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
});

/// The HTTP front: its routes and how its connections are served. One per service.
pub(crate) struct Front {
    routes: Routes,
    builder: auto::Builder<Tracked>,
    shared: Arc<Shared>,
    commands: Commands,
    /// With TLS, the handshake each connection runs first (offering h2 by ALPN).
    tls: Option<Acceptor>,
    /// Where refused connections linger (see [`Front::linger`]), and their bound.
    tracker: TaskTracker,
    lingering: Arc<Semaphore>,
}

/// Runs HTTP/2's streams (hyper spawns one task each) on the service's tracker, so that
/// shutdown waits for them like every other task: none is detached.
#[derive(Clone)]
struct Tracked(TaskTracker);

impl<F> hyper::rt::Executor<F> for Tracked
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, future: F) {
        self.0.spawn(future);
    }
}

impl Front {
    /// The front for the service `shared`, answering `commands`, over `tls` if given; HTTP/2's
    /// streams run on `tracker`.
    pub(crate) fn new(
        shared: &Arc<Shared>,
        commands: &Commands,
        tracker: &TaskTracker,
        tls: Option<Acceptor>,
    ) -> Self {
        let config = &shared.config;
        let mut builder = auto::Builder::new(Tracked(tracker.clone()));
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(config.idle_timeout)
            .max_buf_size(config.max_line.get().saturating_add(HEAD_ROOM))
            .keep_alive(true);
        let streams = u32::try_from(config.max_in_flight.get()).unwrap_or(u32::MAX);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(streams)
            .keep_alive_interval(H2_KEEPALIVE_INTERVAL)
            .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT);
        let routes = routes::routes(Arc::clone(shared), commands.clone());
        let lingering = Arc::new(Semaphore::new(MAX_LINGERING));
        let (shared, commands, tracker) = (Arc::clone(shared), commands.clone(), tracker.clone());
        Self { routes, builder, shared, commands, tls, tracker, lingering }
    }

    /// Closes a connection refused at the limit (told [`BUSY`] already) without losing that
    /// answer: Linux resets a connection closed with unread bytes, and a reset can destroy the
    /// 503 before the client reads it. So its request is read and dropped, for [`LINGER`] at
    /// most, before it is closed; at most [`MAX_LINGERING`] at once, past which it is closed at
    /// once (a flood of connects is not worth a task each).
    pub(crate) fn linger(&self, stream: TcpStream) {
        let Ok(slot) = Arc::clone(&self.lingering).try_acquire_owned() else { return };
        self.tracker.spawn(async move {
            let _slot = slot;
            let mut stream = stream;
            let mut sink = [0; 1024];
            let _ = time::timeout(LINGER, async {
                stream.shutdown().await?;
                while stream.read(&mut sink).await? > 0 {}
                Ok::<_, std::io::Error>(())
            })
            .await;
        });
    }

    /// Serves a new connection, after its TLS handshake if TLS is on (the same timeout, counters
    /// and log lines as the line port's).
    pub(crate) async fn accept(&self, stream: TcpStream, peer: SocketAddr) {
        let traced = Traced::for_peer(&self.shared.config, &peer);
        match &self.tls {
            None => self.serve(stream, peer, traced).await,
            Some(acceptor) => {
                match acceptor.accept(stream, &self.shared.shutdown.drain, traced.as_ref()).await {
                    Handshake::Done(stream) => self.serve(stream, peer, traced).await,
                    Handshake::Closed => {}
                }
            }
        }
    }

    /// Serves one connection (TLS done, if any) until the peer leaves, an error or timeout ends
    /// it, or shutdown does (see the module docs).
    async fn serve<S>(&self, stream: S, peer: SocketAddr, traced: Option<Traced>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Shared { config, shutdown, .. } = &*self.shared;
        let mut stream = TimeoutStream::new(stream);
        stream.set_write_timeout(Some(config.write_timeout));
        let connection = Arc::new(Connection {
            context: Mutex::new(Context::new(&self.shared, &self.commands, traced)),
            peer,
            asked: AtomicBool::new(false),
        });
        let (routes, shared) = (self.routes.clone(), Arc::clone(&self.shared));
        let service = service_fn({
            let connection = Arc::clone(&connection);
            move |mut request: hyper::Request<Incoming>| {
                // A plain store would write the cache line on every request; this reads it.
                if !connection.asked.load(Ordering::Relaxed) {
                    connection.asked.store(true, Ordering::Relaxed);
                }
                // Its route, status and time to its answer's head, refusals by the bounds
                // included.
                let (route, started) = (Route::of(request.uri().path()), Instant::now());
                request.extensions_mut().insert(Arc::clone(&connection));
                let shared = Arc::clone(&shared);
                routes.clone().oneshot(request.map(axum::body::Body::new)).map(move |answered| {
                    if let Ok(response) = &answered {
                        shared.metrics.http.observe(route, response.status(), started.elapsed());
                    }
                    answered
                })
            }
        });
        let served = self.builder.serve_connection(TokioIo::new(Box::pin(stream)), service);
        let idle = time::sleep(config.idle_timeout);
        tokio::pin!(served, idle);
        let mut waiting_for_first = true;
        let ended = loop {
            tokio::select! {
                ended = served.as_mut() => break ended,
                // hyper reads a connection's first bytes to tell HTTP/1 from HTTP/2 with no
                // timeout of its own (hyper-util's `auto`), and HTTP/2 has no header timeout: a
                // peer silent from the start, or stopping inside the preface, is cut here, as an
                // idle line peer is. (Later, HTTP/1's head timeout bounds an idle connection.)
                () = &mut idle, if waiting_for_first => {
                    if !connection.asked.load(Ordering::Relaxed) {
                        break Err(format!("no request within {:?}", config.idle_timeout).into());
                    }
                    waiting_for_first = false;
                }
                () = shutdown.drain.cancelled() => {
                    served.as_mut().graceful_shutdown();
                    break tokio::select! {
                        // The connection first: at the abort, its requests answer 503
                        // shutting-down, and what can be written at once goes out before the
                        // connection is cut (HTTP/2 streams that have not run by then are reset).
                        biased;
                        ended = served.as_mut() => ended,
                        () = shutdown.abort.cancelled() => served.as_mut().now_or_never().unwrap_or(Ok(())),
                    };
                }
            }
        };
        match ended {
            Ok(()) => tracing::debug!("closed"),
            Err(error) => tracing::debug!("closed: {error}"),
        }
    }
}

/// One HTTP connection's own state, which every request on it reaches (an HTTP/2 connection's
/// run at once): the command context its requests start in, as a line connection's do. So its
/// PUBLISHes share one budget, and wait for it as a line connection's next request does.
pub(crate) struct Connection {
    /// Locked only while a command starts (a sync call), never across an `.await`.
    context: Mutex<Context>,
    /// Who is connected, for the event streams' spans.
    peer: SocketAddr,
    /// Whether a request has come in yet (see `Front::serve`).
    asked: AtomicBool,
}

/// The answer to a command started on this front, its latency recorded in the command's
/// histogram, as the line protocol records it.
async fn answered(reply: Reply, shared: &Shared) -> crate::protocol::Response {
    let (response, started) = reply.await;
    if let Some((command, at)) = started {
        shared.metrics.observe_request(command, at.elapsed());
    }
    response
}

impl Connection {
    /// Starts the command `name` on `argument`, once the connection's publish budget allows.
    async fn start(&self, name: &str, argument: Option<&str>) -> Reply {
        loop {
            let now = Instant::now();
            let resume = {
                let mut context = self.context.lock().unwrap_or_else(PoisonError::into_inner);
                match context.publisher.budget.wait_until(now) {
                    None => return commands::start_named(name, argument, &mut context, now).0,
                    Some(resume) => resume,
                }
            };
            time::sleep_until(resume).await;
        }
    }
}

#[cfg(test)]
mod tests;
