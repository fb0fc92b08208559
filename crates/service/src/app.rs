//! The running service minus its listener: the job queue, the CPU pool, the watchdog, the
//! counters, the shutdown tokens and the tracker that every task is spawned on.
//!
//! [`crate::Server`] feeds it TCP connections; the paused-time tests feed it
//! `tokio::io::duplex` streams through [`App::spawn_connection`], and drive the very same shutdown.

use std::fmt;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::commands::Context;
use crate::config::Config;
use crate::connection::Handler;
use crate::job_queue::JobQueue;
use crate::shutdown::Shutdown;
use crate::stats::Stats;
use crate::watchdog;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
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
    config: Arc<Config>,
}

impl App {
    /// Starts the job queue and the watchdog. Must be called inside a tokio runtime.
    pub fn start(config: &Config) -> Result<Self, StartError> {
        let config = Arc::new(config.clone());
        let pool = cpu::CpuPool::new(config.cpu_threads)?;
        let stats = Arc::new(Stats::default());
        let shutdown = Shutdown::default();
        let tracker = TaskTracker::new();
        let jobs = JobQueue::start(Arc::clone(&config), Arc::clone(&stats), &shutdown, &tracker);
        tracker.spawn(watchdog::run(
            config.watchdog_period,
            config.stall_threshold,
            Arc::clone(&stats),
            shutdown.drain.clone(),
        ));
        let context = Context::new(jobs, pool, Arc::clone(&stats), shutdown.abort.clone());
        let handler = Handler::new(Arc::clone(&config), context, Arc::clone(&stats), shutdown.clone());
        Ok(Self { handler, stats, shutdown, tracker, config })
    }

    /// The service's counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// The shutdown tokens: cancel `drain` to begin a shutdown that [`App::stop`] completes, or
    /// `abort` to cut the grace period short.
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

    /// Shuts down (see [`crate::shutdown`]): drain, wait up to the grace period (or until
    /// `abort` is cancelled) for in-flight work, then abort what is left and wait for every task.
    pub async fn stop(self) {
        let Self { shutdown, tracker, config, .. } = self;
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
        tracing::info!("shutdown complete");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
