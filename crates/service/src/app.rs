//! The running service minus its listeners: the job queue, the CPU pool, the watchdog, the
//! topics (and their relay, with `--fanout-url`), the subscriber threads, the counters and
//! metrics, the health state, the shutdown tokens and the trackers that every task is spawned on.
//!
//! [`App::start_with`] makes them once: what every part reads goes into one shared core
//! (`crate::shared::Shared`, an `Arc`), which the connection handler, each connection's command
//! context and the admin endpoints hold.
//!
//! [`crate::Server`] feeds it TCP connections (the line protocol's, and the HTTP front's through
//! [`App::spawn_http_connection`]) and serves its admin endpoints; the paused-time
//! tests feed it `tokio::io::duplex` streams through [`App::spawn_connection`], and drive the
//! very same shutdown.

use std::fmt;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::admin::Endpoints;
use crate::admin::health::Health;
use crate::admin::watchdog;
use crate::commands::Commands;
use crate::config::Config;
use crate::connection::Handler;
use crate::fanout::Topics;
#[cfg(feature = "redis")]
use crate::fanout::relay;
use crate::fanout::subscriber_threads::SubscriberThreads;
use crate::shared::Shared;
use crate::shutdown::Shutdown;
use crate::stats::Stats;
use crate::telemetry::spans::Traced;
use crate::tls::{self, Acceptor, Handshake, Reloader};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Settings that do not fit together.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The CPU pool's threads could not be started. (The cause is the error's `source`, so
    /// `{:#}` prints it once.)
    #[error("cannot start the CPU pool")]
    CpuPool(#[from] cpu::ThreadPoolBuildError),
    /// The subscriber threads could not be started.
    #[error("cannot start the subscriber threads")]
    SubscriberThreads(#[source] std::io::Error),
    /// A TLS file cannot be used (`main` exits 2 for it: the flag is wrong).
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// With a broker (`--fanout-url`), the relay: the handle PUBLISH goes through, and its task. Reads
/// `--fanout-ca`, if given.
#[cfg(feature = "redis")]
fn relay(config: &Config) -> Result<Option<(relay::Handle, relay::Relay)>, StartError> {
    let Some(url) = &config.fanout_url else { return Ok(None) };
    #[cfg(feature = "tls")]
    let ca = config.fanout_ca.as_deref().map(|path| tls::read_ca("--fanout-ca", path)).transpose()?;
    #[cfg(not(feature = "tls"))]
    let ca = None::<Vec<u8>>;
    let prefix = config.fanout_prefix.clone().unwrap_or_else(|| url.default_prefix());
    Ok(Some(relay::relay(url, ca.map(Arc::from), &prefix, config.trace_requests)))
}

/// The service's shared state and tasks; see the module docs.
pub struct App {
    /// The core every part reads (settings, counters, job queue, topics, pool, shutdown).
    shared: Arc<Shared>,
    handler: Handler,
    /// With TLS: the handshake each connection runs first, and what reloads its certificate.
    tls: Option<(Acceptor, Reloader)>,
    health: watch::Sender<Health>,
    /// The service's work: connections and jobs.
    tracker: TaskTracker,
    /// What must outlive that work: the watchdog and the admin endpoints, which report on the
    /// shutdown while it happens. They end when `background_stop` is cancelled, last.
    background: TaskTracker,
    background_stop: CancellationToken,
    /// Where subscribed connections move (see `fanout/subscriber_threads.rs`); `None` on a
    /// `current_thread` runtime.
    subscriber_threads: Option<SubscriberThreads>,
}

impl App {
    /// Starts the job queue, the watchdog and (with `--fanout-url`) the fan-out relay, answering
    /// the [`crate::commands::REGISTRY`]. Must be called inside a tokio runtime. With
    /// `--tls-cert` (or `--fanout-ca`) it reads the files, which blocks: call it from sync code
    /// (as `main` does, inside `Runtime::enter`) or on `spawn_blocking`.
    pub fn start(config: &Config) -> Result<Self, StartError> {
        Self::start_with(config, Commands::registry())
    }

    /// Like [`App::start`], answering `commands` (a program's own, added to the registry with
    /// [`Commands::with`]).
    pub fn start_with(config: &Config, commands: Commands) -> Result<Self, StartError> {
        config.check()?;
        let config = Arc::new(config.clone());
        let pool = cpu::CpuPool::new(config.cpu_threads)?;
        let stats = Arc::new(Stats::default());
        let (health, _) = watch::channel(Health::starting());
        let (tracker, background, background_stop) =
            (TaskTracker::new(), TaskTracker::new(), CancellationToken::new());
        let tls = tls::start(&config, Arc::clone(&stats))?;
        let (subscriber_threads, mover) = SubscriberThreads::start(config.subscriber_threads, &tracker)
            .map_err(StartError::SubscriberThreads)?
            .unzip();
        let topics = Topics::new(&config, Arc::clone(&stats));
        // With a broker, the relay: its handle goes to the topics, its task is started below.
        #[cfg(feature = "redis")]
        let (topics, relay) = {
            let (handle, relay) = relay(&config)?.unzip();
            (topics.with_relay(handle), relay)
        };
        // Nothing below fails: tasks start only once every file has been read.
        let names = commands.iter().map(|spec| spec.name);
        let shared =
            Arc::new(Shared::new(Arc::clone(&config), Arc::clone(&stats), names, pool, topics, &tracker));
        #[cfg(feature = "tls")]
        if let Some((_, reloader)) = &tls {
            background.spawn(reloader.clone().watch(config.tls_watch_period, background_stop.clone()));
        }
        background.spawn(watchdog::run(
            config.watchdog_period,
            config.stall_threshold,
            Arc::clone(&stats),
            health.clone(),
            background_stop.clone(),
        ));
        // The relay is a tracked task that ends at drain, like the subscriptions.
        #[cfg(feature = "redis")]
        if let Some(relay) = relay {
            tracker.spawn(relay.run(Arc::clone(&shared.topics), shared.shutdown.drain.clone()));
        }
        let handler = Handler::new(Arc::clone(&shared), commands, mover);
        Ok(Self { shared, handler, tls, health, tracker, background, background_stop, subscriber_threads })
    }

    /// The service's counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.shared.stats
    }

    /// What reloads the TLS certificate, key and client CA; `None` without TLS.
    pub fn tls_reloader(&self) -> Option<&Reloader> {
        self.tls.as_ref().map(|(_, reloader)| reloader)
    }

    /// The settings it runs with.
    pub(crate) fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The shutdown tokens: cancel `begin` to start a shutdown that [`App::stop`] completes, or
    /// `abort` to cut the grace period short.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shared.shutdown
    }

    /// A receiver of every change to the health state.
    pub fn watch_health(&self) -> watch::Receiver<Health> {
        self.health.subscribe()
    }

    /// Marks the service as accepting: `/readyz` answers 200 until shutdown begins.
    pub(crate) fn set_listening(&self) {
        self.health.send_modify(|health| health.listening = true);
    }

    /// What the admin endpoints read.
    pub(crate) fn endpoints(&self) -> Endpoints {
        Endpoints {
            shared: Arc::clone(&self.shared),
            health: self.health.subscribe(),
            runtime: tokio::runtime::Handle::current(),
            prefix: env!("CARGO_PKG_NAME").replace('-', "_").into(),
        }
    }

    /// Spawns a task that must outlive the service's work (see the `background` field).
    pub(crate) fn spawn_background<F>(&self, task: impl FnOnce(CancellationToken) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.background.spawn(task(self.background_stop.clone()));
    }

    /// Steps 0 to 1 of the shutdown: once `begin` is cancelled, answer `/readyz` with 503 and go
    /// on serving for `drain_delay` (cut short by `abort`), then cancel `drain`. Ends at once
    /// if `drain` is cancelled first.
    pub(crate) async fn drain_after_delay(&self) {
        let Shared { shutdown, config, .. } = &*self.shared;
        tokio::select! {
            () = shutdown.begin.cancelled() => {}
            () = shutdown.drain.cancelled() => return,
        }
        self.health.send_modify(|health| health.shutting_down = true);
        let delay = config.drain_delay;
        if !delay.is_zero() {
            tracing::info!(?delay, "not ready; draining after the delay");
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.abort.cancelled() => {}
        }
        shutdown.drain.cancel();
    }

    /// Serves `stream` on a tracked task, in a span naming `peer`; with TLS, after its handshake.
    /// `permit` (a connection-limit slot) is held until the connection ends, so a handshake
    /// holds one too, for `--tls-handshake-timeout` at most.
    pub fn spawn_connection<S>(
        &self,
        stream: S,
        peer: impl fmt::Display,
        permit: Option<OwnedSemaphorePermit>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let handler = self.handler.clone();
        let acceptor = self.tls.as_ref().map(|(acceptor, _)| acceptor.clone());
        let (stats, drain) = (Arc::clone(&self.shared.stats), self.shared.shutdown.drain.clone());
        // Traced, its handshake and requests are spans naming the peer.
        let traced = Traced::for_peer(&self.shared.config, &peer);
        // At debug, as every line about one connection is (a peer can cause each at will): at the
        // default level the span is off and costs nothing, where entering and leaving it at
        // each poll of the task cost a PING about 540 instructions (`Dispatch::enter`/`exit`).
        let span = tracing::debug_span!("connection", %peer);
        self.tracker.spawn(
            async move {
                let _permit = permit;
                let _open = stats.open_connection();
                tracing::debug!("open");
                let served = match acceptor {
                    None => handler.run(stream, traced).await,
                    // Boxed: the handshake's state and a TLS connection's are larger, and a
                    // plain connection's task should not carry room for them.
                    Some(acceptor) => {
                        let served = Box::pin(async move {
                            match acceptor.accept(stream, &drain, traced.as_ref()).await {
                                Handshake::Done(stream) => Some(handler.run(stream, traced).await),
                                Handshake::Closed => None,
                            }
                        });
                        let Some(served) = served.await else { return };
                        served
                    }
                };
                match served {
                    Ok(()) => tracing::debug!("closed"),
                    Err(error) => error.log(),
                }
            }
            .instrument(span),
        );
    }

    /// The HTTP front on this service: its commands, topics, TLS and tracker.
    #[cfg(feature = "http")]
    pub(crate) fn http_front(&self) -> crate::http::Front {
        let tls = self.tls.as_ref().map(|(acceptor, _)| acceptor.for_http());
        crate::http::Front::new(&self.shared, self.handler.commands(), &self.tracker, tls)
    }

    /// Serves an HTTP connection on a tracked task, in a span naming `peer`; `permit` as for
    /// [`App::spawn_connection`].
    #[cfg(feature = "http")]
    pub(crate) fn spawn_http_connection(
        &self,
        front: &Arc<crate::http::Front>,
        stream: tokio::net::TcpStream,
        peer: std::net::SocketAddr,
        permit: OwnedSemaphorePermit,
    ) {
        let front = Arc::clone(front);
        let stats = Arc::clone(&self.shared.stats);
        // At debug, as the line connection's span (see `spawn_connection`).
        let span = tracing::debug_span!("http", %peer);
        self.tracker.spawn(
            async move {
                let _permit = permit;
                let _open = stats.open_connection();
                tracing::debug!("open");
                front.accept(stream, peer).await;
            }
            .instrument(span),
        );
    }

    /// Shuts down (see [`crate::shutdown`]): drain, wait up to the grace period (or until
    /// `abort` is cancelled) for in-flight work, then abort what is left and wait for every task;
    /// the watchdog and the admin endpoints last.
    pub async fn stop(self) {
        let Self { shared, health, tracker, background, background_stop, tls, subscriber_threads, .. } = self;
        let Shared { shutdown, config, .. } = &*shared;
        shutdown.begin.cancel();
        health.send_modify(|health| health.shutting_down = true);
        shutdown.drain.cancel();
        tracker.close();
        let grace = config.shutdown_grace;
        let finished = tokio::select! {
            () = tracker.wait() => true,
            () = tokio::time::sleep(grace) => false,
            () = shutdown.abort.cancelled() => false,
        };
        if !finished {
            tracing::warn!(?grace, "grace period over; answering what is left with ERR shutting-down");
            shutdown.abort.cancel();
            tracker.wait().await;
        }
        if let Some(threads) = subscriber_threads {
            drop(threads);
            tracing::info!("subscriber threads stopped");
        }
        if let Some((acceptor, _)) = &tls {
            acceptor.flush_log();
        }
        background_stop.cancel();
        background.close();
        background.wait().await;
        tracing::info!("shutdown complete");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Client;
    use crate::test_log::Captured;

    /// Held by the tests here that serve connections: `tracing` keeps whether each call site is
    /// enabled for every thread at once, and connections served on other threads (with no
    /// subscriber) while a test captures the log made it miss lines now and then (the
    /// connection's span, or its "open").
    static CALL_SITES: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn each_connection_logs_in_a_span_naming_its_peer() {
        let _alone = CALL_SITES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let logs = Captured::default();
        tracing::subscriber::with_default(logs.subscriber(), || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .unwrap();
            runtime.block_on(async {
                let app = App::start(&Config { cpu_threads: 1, ..Config::default() }).unwrap();
                let (client, server) = tokio::io::duplex(1024);
                app.spawn_connection(server, "peer-7", None);
                let mut client = Client::new(client, Duration::from_secs(5));
                assert_eq!(client.request("PING").await.unwrap(), "OK PONG");
                drop(client);
                app.stop().await;
            });
        });
        let logs = logs.text();
        for event in ["open", "closed"] {
            assert!(
                logs.lines().any(|line| line.contains("connection{peer=peer-7}") && line.ends_with(event)),
                "no {event:?} line in the connection's span:\n{logs}"
            );
        }
    }

    /// On a multi-threaded runtime, a connection that subscribes goes on on the subscriber
    /// threads: it gets what is published, is answered, and ends at shutdown like any other.
    #[test]
    fn a_subscribed_connection_moves_and_is_served_until_shutdown() {
        let _alone = CALL_SITES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        runtime.block_on(async {
            let config = Config { cpu_threads: 1, subscriber_threads: 1, ..Config::default() };
            let app = App::start(&config).unwrap();
            let moved = || app.subscriber_threads.as_ref().expect("subscriber threads").connections();
            let connect = |peer| {
                let (client, server) = tokio::io::duplex(1024);
                app.spawn_connection(server, peer, None);
                Client::new(client, Duration::from_secs(5))
            };
            let (mut subscriber, mut publisher) = (connect("subscriber"), connect("publisher"));
            assert_eq!(subscriber.request("PING").await.unwrap(), "OK PONG");
            assert_eq!(moved(), 0, "not subscribed: not moved");
            assert_eq!(subscriber.request("SUBSCRIBE news").await.unwrap(), "OK 1");
            assert_eq!(publisher.request("PUBLISH news hello").await.unwrap(), "OK 1");
            assert_eq!(subscriber.next_push(None).await.unwrap(), "MSG news hello");
            assert_eq!(subscriber.request("PING").await.unwrap(), "OK PONG", "still answered");
            assert_eq!(moved(), 1, "the subscriber moved, the publisher did not");
            app.stop().await;
            assert!(subscriber.request("PING").await.is_err(), "closed at shutdown");
        });
    }
}
