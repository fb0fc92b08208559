//! The TCP front: bind, accept, enforce the connection limit, hand streams to the [`App`]: the
//! line protocol's listener, and with `--http-listen` the HTTP front's, under one limit.
//!
//! The accept loop follows the rules of tokio's and hyper's servers:
//!
//! * **A limit on open connections** (a `Semaphore`; tokio's `TcpListener` docs and mini-redis's
//!   `MAX_CONNECTIONS`). A connection over the limit is answered `ERR busy` (503 on the HTTP
//!   port) and closed at once, instead of being left in the accept backlog where the client
//!   cannot tell slow from dead.
//! * **Accept errors never end the loop.** Errors about one connection (reset or aborted before
//!   we accepted it) are skipped; others (out of file descriptors, `EMFILE`) are logged and retried
//!   after a growing pause, because spinning on them would burn a core and flood the log
//!   (hyper's `accept` and tokio issue #1172 describe the same).
//! * **`TCP_NODELAY`** on every stream: answers are already batched by the connection's write
//!   buffer, and Nagle's algorithm would add up to 40 ms to each small answer.
//! * **TCP keepalive** on every stream (`--keepalive`), as Redis does for its clients: a
//!   subscriber waits for pushes without sending anything, so no timeout of ours can tell it from
//!   a peer that vanished without a FIN (a crashed host, a dropped NAT mapping); the kernel's
//!   probes can, and then the connection's next read fails and frees its slot.
//! * **A fixed send buffer** (`--send-buffer`, `SO_SNDBUF`). Left to itself, Linux grows each
//!   socket's send buffer up to `net.ipv4.tcp_wmem`'s maximum (4 MiB) while the peer does not
//!   read, so 200 subscribers that never read held 789 MB of the kernel's TCP memory, which no
//!   bound of ours saw. Fixed, it caps that at twice the flag (tcp(7): the kernel doubles it)
//!   per connection.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::time;
use tokio_util::task::TaskTracker;

use crate::admin;
use crate::app::{App, StartError};
use crate::backoff::Backoff;
use crate::commands::Commands;
use crate::config::Config;
use crate::log_throttle::LogThrottle;
use crate::protocol::{ErrorCode, Response};
use crate::shutdown::Shutdown;
use crate::stats::Stats;

/// The first pause after an accept error; it doubles up to [`MAX_ACCEPT_BACKOFF`].
const MIN_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
/// The longest pause between accept retries.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
/// The admin listener's backlog. Probes and scrapers connect a few at a time, but a flood of
/// connects must not fill it: a probe whose SYN is dropped waits a second for the retry.
const ADMIN_BACKLOG: u32 = 1024;
/// The whole answer to a connection over the limit: `ERR busy` and a newline, made once.
static BUSY: LazyLock<String> = LazyLock::new(|| format!("{}\n", Response::err(ErrorCode::Busy)));
/// The pause between keepalive probes, at most.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered keepalive probes before the kernel gives up on a peer.
const KEEPALIVE_PROBES: u32 = 3;
/// At most one log line per this period about refused connections (a flood of connects must
/// not become a flood of log).
const REFUSALS_LOG_PERIOD: Duration = Duration::from_secs(1);

/// A bound listener and the service behind it.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use service::{Config, Server};
///
/// let config = Config { listen: "127.0.0.1:0".parse()?, admin_listen: "127.0.0.1:0".parse()?, ..Config::default() };
/// let server = Server::bind(&config)?;
/// println!("listening on {}", server.local_addr());
/// let shutdown = server.shutdown().clone();
/// // ...cancel `shutdown.begin` from elsewhere to shut down gracefully.
/// server.run().await;
/// # Ok(())
/// # }
/// ```
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    admin: TcpListener,
    admin_addr: SocketAddr,
    /// With `--http-listen`: the HTTP front's listener and its address.
    #[cfg(feature = "http")]
    http: Option<(TcpListener, SocketAddr)>,
    app: App,
    max_connections: usize,
}

impl Server {
    /// Binds `config.listen` with a listen backlog of `config.backlog`, and the admin listener on
    /// `config.admin_listen`, then starts the service (the job queue and watchdog run from now),
    /// answering the [`crate::commands::REGISTRY`]. Must be called inside a tokio runtime; with
    /// TLS it reads files, so call it from sync code (see [`App::start`]).
    pub fn bind(config: &Config) -> Result<Self, StartError> {
        Self::bind_with(config, Commands::registry())
    }

    /// Like [`Server::bind`], answering `commands` (see [`Commands::with`]).
    pub fn bind_with(config: &Config, commands: Commands) -> Result<Self, StartError> {
        let app = App::start_with(config, commands)?;
        let bind = |addr, backlog| {
            let listener = listen(addr, backlog).map_err(|source| StartError::Bind { addr, source })?;
            let local = listener.local_addr().map_err(|source| StartError::Bind { addr, source })?;
            Ok::<_, StartError>((listener, local))
        };
        let (listener, local_addr) = bind(config.listen, config.backlog)?;
        let (admin, admin_addr) = bind(config.admin_listen, ADMIN_BACKLOG)?;
        #[cfg(feature = "http")]
        let http = config.http_listen.map(|addr| bind(addr, config.backlog)).transpose()?;
        let max_connections = config.max_connections.get().min(Semaphore::MAX_PERMITS);
        Ok(Self {
            listener,
            local_addr,
            admin,
            admin_addr,
            #[cfg(feature = "http")]
            http,
            app,
            max_connections,
        })
    }

    /// The address actually bound (the port the OS chose, for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The HTTP front's address, with `--http-listen`.
    #[cfg(feature = "http")]
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|(_, addr)| *addr)
    }

    /// The service's counters.
    pub fn stats(&self) -> &Arc<Stats> {
        self.app.stats()
    }

    /// The shutdown tokens: cancel `begin` to stop gracefully (after `drain_delay`), `abort` to
    /// cut the grace period short.
    pub fn shutdown(&self) -> &Shutdown {
        self.app.shutdown()
    }

    /// What reloads the TLS certificate, key and client CA; `None` without TLS.
    pub fn tls_reloader(&self) -> Option<&crate::tls::Reloader> {
        self.app.tls_reloader()
    }

    /// A receiver of the health state, as the admin endpoints see it.
    pub fn watch_health(&self) -> tokio::sync::watch::Receiver<crate::admin::health::Health> {
        self.app.watch_health()
    }

    /// Serves until shutdown (see [`crate::shutdown`]): marks the service ready, serves the admin
    /// endpoints, and once `begin` is cancelled goes on for `drain_delay` before it drains; then
    /// shuts down gracefully and returns once every task has ended.
    pub async fn run(self) {
        #[cfg(feature = "http")]
        let http = self.http;
        let Self { listener, local_addr, admin, admin_addr, app, max_connections, .. } = self;
        let endpoints = app.endpoints();
        app.spawn_background(|stop| {
            let tracker = TaskTracker::new();
            async move {
                admin::serve(admin, endpoints, stop, tracker.clone()).await;
                tracker.close();
                tracker.wait().await;
            }
        });
        tracing::info!(%local_addr, %admin_addr, "listening");
        app.set_listening();
        // One limit for both ports: it bounds the process's sockets, whoever speaks what.
        let slots = Arc::new(Semaphore::new(max_connections));
        let accepting = accept_loop(&listener, &app, Arc::clone(&slots), &Front::Line);
        #[cfg(feature = "http")]
        let accepting = async {
            let http = async {
                let Some((listener, addr)) = &http else { return };
                tracing::info!(http_addr = %addr, "listening for HTTP");
                accept_loop(listener, &app, slots, &Front::Http(Arc::new(app.http_front()))).await;
            };
            tokio::join!(accepting, http);
        };
        tokio::join!(accepting, app.drain_after_delay());
        // Closing the listeners refuses new connections at once while the old ones drain.
        drop(listener);
        #[cfg(feature = "http")]
        drop(http);
        tracing::info!("stopped accepting; draining connections");
        app.stop().await;
    }
}

/// A listener like `TcpListener::bind`, with our own backlog: mio's fixed 128 overflows under a
/// burst of connects, and each overflowed client waits a 1 s SYN retry.
fn listen(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    // As `TcpListener::bind` does on unix: a restarted server can bind while old connections of
    // the previous one sit in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Which protocol a listener serves.
enum Front {
    /// The line protocol.
    Line,
    /// The HTTP front.
    #[cfg(feature = "http")]
    Http(Arc<crate::http::Front>),
}

impl Front {
    /// What a connection over the limit is told before it is closed.
    fn busy(&self) -> &[u8] {
        match self {
            Self::Line => BUSY.as_bytes(),
            #[cfg(feature = "http")]
            Self::Http(_) => &crate::http::BUSY,
        }
    }
}

async fn accept_loop(listener: &TcpListener, app: &App, slots: Arc<Semaphore>, front: &Front) {
    let stop = &app.shutdown().drain;
    let mut backoff = Backoff::new(MIN_ACCEPT_BACKOFF, MAX_ACCEPT_BACKOFF);
    let mut refusals = LogThrottle::every(REFUSALS_LOG_PERIOD);
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let error = match accepted {
            Ok((stream, peer)) => {
                backoff.succeeded();
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
                }
                if let Err(error) = set_keepalive(&stream, app.config().keepalive) {
                    tracing::debug!(%peer, %error, "cannot set TCP keepalive");
                }
                let send_buffer = app.config().send_buffer.get();
                if let Err(error) = socket2::SockRef::from(&stream).set_send_buffer_size(send_buffer) {
                    tracing::debug!(%peer, %error, "cannot set SO_SNDBUF");
                }
                match (Arc::clone(&slots).try_acquire_owned(), front) {
                    (Ok(slot), Front::Line) => app.spawn_connection(stream, peer, Some(slot)),
                    #[cfg(feature = "http")]
                    (Ok(slot), Front::Http(http)) => app.spawn_http_connection(http, stream, peer, slot),
                    (Err(_), _) => {
                        refuse(&stream, peer, front.busy(), app.stats());
                        #[cfg(feature = "http")]
                        if let Front::Http(http) = front {
                            http.linger(stream);
                        }
                        if let Some(refused) = refusals.record() {
                            tracing::info!(refused, "connection limit reached; refusing with ERR busy");
                        }
                    }
                }
                continue;
            }
            Err(error) => error,
        };
        let Some(pause) = backoff.accept_failed(&error) else {
            tracing::debug!(%error, "accept: connection gone before it was accepted");
            continue;
        };
        tracing::error!(%error, retry_in = ?pause, "accept failed");
        tokio::select! {
            () = stop.cancelled() => break,
            () = time::sleep(pause) => {}
        }
    }
    if let Some(refused) = refusals.take_pending() {
        tracing::info!(refused, "connection limit reached; refusing with ERR busy");
    }
}

/// Turns on TCP keepalive: the first probe after `idle` with nothing received, then one every
/// [`KEEPALIVE_INTERVAL`] (or `idle`, if shorter), and the connection fails after
/// [`KEEPALIVE_PROBES`] unanswered ones.
fn set_keepalive(stream: &TcpStream, idle: Duration) -> io::Result<()> {
    let keepalive = socket2::TcpKeepalive::new().with_time(idle);
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "macos",
        target_os = "ios",
        target_os = "freebsd"
    ))]
    let keepalive = keepalive.with_interval(idle.min(KEEPALIVE_INTERVAL)).with_retries(KEEPALIVE_PROBES);
    socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive)
}

/// Answers a connection over the limit with `busy` and closes it, without a task: the socket
/// is new, so its send buffer is empty and a non-blocking write of a few bytes goes through whole.
fn refuse(stream: &TcpStream, peer: SocketAddr, busy: &[u8], stats: &Stats) {
    stats.count_rejected();
    if let Err(error) = stream.try_write(busy) {
        tracing::debug!(%peer, %error, "could not tell the refused peer");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keepalive_s_help_says_its_probes() {
        let help = crate::config::help("keepalive");
        let said = format!(
            "every {} s, or this if shorter; {KEEPALIVE_PROBES} probes",
            KEEPALIVE_INTERVAL.as_secs()
        );
        assert!(help.contains(&said), "{help}");
    }
}
