//! The running service minus its listener: the coordinator, the CPU pool, the watchdog, the
//! counters, the shutdown tokens and the tracker that every task is spawned on.
//!
//! [`crate::Server`] feeds it TCP connections; the paused-time tests feed it
//! `tokio::io::duplex` streams through [`App::spawn_connection`], and drive the very same shutdown.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::commands::Commands;
use crate::config::{Config, ConfigError};
use crate::connection::{Handler, Limits};
use crate::coordinator::{Coordinator, CoordinatorConfig};
use crate::shutdown::Shutdown;
use crate::stats::Stats;
use crate::watchdog;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting cannot work.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The CPU pool's threads could not be started. (The cause is the error's `source`, so
    /// `{:#}` prints it once.)
    #[error("cannot start the CPU pool")]
    CpuPool(#[from] cpu::ThreadPoolBuildError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// The service's shared state and tasks; see the module docs.
pub struct App {
    handler: Handler,
    stats: Arc<Stats>,
    shutdown: Shutdown,
    tracker: TaskTracker,
    grace: Duration,
}

impl App {
    /// Starts the coordinator and the watchdog. Must be called inside a tokio runtime.
    pub fn start(config: &Config) -> Result<Self, StartError> {
        config.validate()?;
        let pool = cpu::CpuPool::new(config.cpu_threads)?;
        let stats = Arc::new(Stats::default());
        let shutdown = Shutdown::default();
        let tracker = TaskTracker::new();
        let coordinator = Coordinator::start(
            CoordinatorConfig {
                queue_capacity: config.queue_capacity,
                workers: config.workers,
                job_timeout: config.job_timeout,
            },
            Arc::clone(&stats),
            shutdown.clone(),
            &tracker,
        );
        tracker.spawn(watchdog::run(
            config.watchdog_period,
            config.stall_threshold,
            Arc::clone(&stats),
            shutdown.drain.clone(),
        ));
        let commands = Commands::new(coordinator, pool, Arc::clone(&stats), shutdown.abort.clone());
        let handler = Handler::new(Limits::from(config), commands, Arc::clone(&stats), shutdown.clone());
        Ok(Self { handler, stats, shutdown, tracker, grace: config.shutdown_grace })
    }

    /// The connection handler, to serve a stream on a task of one's own.
    pub fn handler(&self) -> &Handler {
        &self.handler
    }

    /// The service's counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// The shutdown tokens (cancel `drain` to begin a shutdown that [`App::stop`] completes).
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Serves `stream` on a tracked task, in a span naming `peer`. `permit` (a connection-limit
    /// slot) is held until the connection ends.
    pub fn spawn_connection<S>(
        &self,
        stream: S,
        peer: impl fmt::Display,
        permit: Option<OwnedSemaphorePermit>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let handler = self.handler.clone();
        let span = tracing::info_span!("connection", %peer);
        self.tracker.spawn(
            async move {
                let _permit = permit;
                tracing::debug!("open");
                match handler.run(stream).await {
                    Ok(()) => tracing::debug!("closed"),
                    Err(error) => error.log(),
                }
            }
            .instrument(span),
        );
    }

    /// Shuts down (see [`crate::shutdown`]): drain, wait up to the grace period for in-flight work,
    /// then abort what is left and wait for every task to end.
    pub async fn stop(self) {
        let Self { handler, shutdown, tracker, grace, .. } = self;
        shutdown.drain.cancel();
        // Our handler holds a handle to the coordinator's queue; the dispatcher ends when the
        // last handle is gone, so let go of ours.
        drop(handler);
        tracker.close();
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(?grace, "grace period over; answering what is left with ERR shutting-down");
            shutdown.abort();
            tracker.wait().await;
        }
        tracing::info!("shutdown complete");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Client;
    use crate::test_log::Captured;

    #[test]
    fn each_connection_logs_in_a_span_naming_its_peer() {
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
}
