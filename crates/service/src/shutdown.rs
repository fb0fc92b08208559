//! The shutdown protocol, and the signals that start it.
//!
//! Shutdown has two steps, each a [`CancellationToken`] (tokio-util; see tokio's "Graceful
//! Shutdown" guide, <https://tokio.rs/tokio/topics/shutdown>):
//!
//! 1. **Drain.** SIGINT or SIGTERM (or the caller of [`crate::Server::run`]) cancels `drain`. The
//!    listener stops accepting at once; each connection stops reading new requests, answers the
//!    ones in flight, and closes; the CPU queue keeps running what it holds.
//! 2. **Abort.** When `shutdown_grace` has passed and work remains, `abort` is cancelled. Every
//!    request still in flight is answered `ERR shutting-down` at once, queued jobs are answered the
//!    same without running, running CPU jobs are told to stop, and the connections close.
//!
//! Every task is spawned on one `TaskTracker`, so "is everything finished?" is
//! `tracker.wait()`; no task is detached, and the process exits 0 once the tracker is empty.

use tokio_util::sync::CancellationToken;

/// The two shutdown tokens that every task of the service watches. Clones share the tokens.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Cancelled first: stop taking new work (no accepts, no new requests), finish what is in
    /// flight. Long-running tasks that produce nothing in flight (the watchdog) end here.
    pub drain: CancellationToken,
    /// Cancelled when the grace period is over: answer everything still in flight with
    /// `ERR shutting-down` and end now. Cancelling it also cancels `drain`.
    pub abort: CancellationToken,
}

impl Shutdown {
    /// Starts step 2 (and step 1, if nobody had).
    pub fn abort(&self) {
        self.drain.cancel();
        self.abort.cancel();
    }
}

/// Waits for SIGINT (Ctrl-C) or SIGTERM (what `docker stop` and Kubernetes send) and returns its
/// name. If a handler cannot be installed the error is returned, so the caller can refuse to start
/// rather than run a server that cannot be stopped gracefully.
pub async fn signal() -> std::io::Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = terminate.recv() => Ok("SIGTERM"),
            _ = interrupt.recv() => Ok("SIGINT"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        Ok("Ctrl-C")
    }
}
