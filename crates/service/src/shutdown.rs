//! The shutdown protocol, and the signals that start it.
//!
//! Shutdown has three steps, each a [`CancellationToken`] (tokio-util; see tokio's "Graceful
//! Shutdown" guide, <https://tokio.rs/tokio/topics/shutdown>), in the order a cluster needs:
//!
//! 0. **Begin.** The first SIGINT or SIGTERM (or the caller of [`crate::Server::run`]) cancels
//!    `begin`. `/readyz` answers 503 from now on, so endpoint controllers and load balancers stop
//!    sending new connections; the service goes on serving for `drain_delay` (0 by default).
//! 1. **Drain.** Then `drain` is cancelled. The listener stops accepting at once; each
//!    connection stops reading new requests, answers the ones it has started, and closes; the
//!    job queue takes no new job and runs what it holds.
//! 2. **Abort.** When `shutdown_grace` has passed and work remains, or at a second signal,
//!    `abort` is cancelled. Every request still in flight is answered `ERR shutting-down` at once,
//!    queued jobs the same without running, running jobs are dropped (a CPU job is told to stop),
//!    a write that cannot go out now is abandoned, and the connections close.
//!
//! Every task is spawned on a `TaskTracker`, so "is everything finished?" is `tracker.wait()`;
//! no task is detached, and the process exits 0 once the trackers are empty. The subscriber
//! threads (see `fanout/subscriber_threads.rs`) stop then, with no task left on them. One kind
//! of work is kept out of the trackers on purpose: a blocking read of the TLS files, which
//! cannot be stopped once stuck in the kernel; `tls::server::Reads` holds its handle, and
//! `main` waits for it at most 100 ms.

use futures_util::FutureExt as _;
use futures_util::future::{FusedFuture as _, OptionFuture};
use tokio_util::sync::CancellationToken;

/// The shutdown tokens that every task of the service watches. Clones share the tokens.
#[derive(Debug, Clone)]
pub struct Shutdown {
    /// Step 0: shutdown was asked for. Readiness goes; serving goes on for `drain_delay`.
    pub begin: CancellationToken,
    /// Step 1: stop taking new work (no accepts, no new requests, no new jobs) and finish what is
    /// in flight. Tasks that produce nothing in flight (the watchdog) end here.
    pub drain: CancellationToken,
    /// Step 2: answer everything still in flight with `ERR shutting-down` and end now. `begin`
    /// and `drain` are its child tokens, so cancelling `abort` cancels both: no task can be
    /// aborted without also being drained.
    pub abort: CancellationToken,
}

impl Default for Shutdown {
    fn default() -> Self {
        let abort = CancellationToken::new();
        Self { begin: abort.child_token(), drain: abort.child_token(), abort }
    }
}

/// A signal, as the service takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT (Ctrl-C) or SIGTERM (what `docker stop` and Kubernetes send): shut down.
    Stop(&'static str),
    /// SIGHUP: reload what can be reloaded (the TLS certificate). A closed terminal or a
    /// supervisor's "reload" sends it, and neither means "stop".
    Reload,
    /// SIGUSR1, SIGUSR2 or SIGALRM: nothing uses them, and their default action (ending the
    /// process at once, with no drain) is never what a stray one means. Logged and ignored.
    Ignored(&'static str),
}

/// The signals the service handles, installed as one: see [`Signal`] for what each does.
///
/// Hold them back first ([`Signals::hold_back`]), before any thread starts, then install them
/// ([`Signals::install`]) before binding the listener: from then on a signal is caught and
/// counted, never lost. One that comes while they are held back waits in the kernel and is taken
/// once they are installed; after that, tokio keeps it for the next [`Signals::recv`], however
/// late that call comes.
pub struct Signals {
    #[cfg(unix)]
    handlers: Vec<(tokio::signal::unix::Signal, Signal)>,
}

/// The handled signals, blocked in the thread that called [`Signals::hold_back`] and in every
/// thread it starts from then on (a thread inherits its creator's signal mask), until
/// [`Signals::install`] unblocks them in that thread alone, its handlers ready. Dropped without
/// `install`, it unblocks them all the same.
#[must_use = "the signals stay held back until this is given to `Signals::install` or dropped"]
pub struct HeldBack {
    /// The calling thread's mask before: what `install` (or the drop) puts back.
    #[cfg(unix)]
    previous: nix::sys::signal::SigSet,
    /// A signal mask is a thread's: not `Send`, so this is put back on the thread it was taken
    /// from.
    _this_thread: std::marker::PhantomData<*const ()>,
}

/// SIGTERM and the other signals [`Signals`] handles, with what each means to the service.
#[cfg(unix)]
const HANDLED: [(tokio::signal::unix::SignalKind, Signal); 6] = {
    use tokio::signal::unix::SignalKind;
    [
        (SignalKind::terminate(), Signal::Stop("SIGTERM")),
        (SignalKind::interrupt(), Signal::Stop("SIGINT")),
        (SignalKind::hangup(), Signal::Reload),
        (SignalKind::user_defined1(), Signal::Ignored("SIGUSR1")),
        (SignalKind::user_defined2(), Signal::Ignored("SIGUSR2")),
        (SignalKind::alarm(), Signal::Ignored("SIGALRM")),
    ]
};

impl Signals {
    /// Blocks the handled signals in this thread, and so in every thread started from it after
    /// this call. Call it first, before anything starts a thread (the log's writer, a runtime).
    ///
    /// Why: installing a handler is not atomic, and a signal that comes in the middle is lost,
    /// so the service runs on after a SIGTERM. signal-hook-registry (under tokio) turns the OS
    /// handler on before it stores the action that handler runs, and a signal in between finds
    /// no action and is dropped (its `register_unchecked_impl`, "a short race condition"); tokio
    /// then turns delivery on before it adds the listener, and a signal that a runtime's driver
    /// hands out in between goes to no listener (tokio 1.54, `signal::unix::signal_with_handle`).
    /// Either loses a SIGTERM at start-up, and the service never stops (seen under load, about
    /// once in 3,000 start-then-SIGTERM cycles). A blocked signal is not delivered at all, only
    /// kept pending, so none can land in those gaps.
    pub fn hold_back() -> std::io::Result<HeldBack> {
        #[cfg(unix)]
        {
            use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};
            let mut handled = SigSet::empty();
            for (kind, _) in HANDLED {
                let number = nix::sys::signal::Signal::try_from(kind.as_raw_value())?;
                handled.add(number);
            }
            let mut previous = SigSet::empty();
            pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&handled), Some(&mut previous))?;
            Ok(HeldBack { previous, _this_thread: std::marker::PhantomData })
        }
        #[cfg(not(unix))]
        {
            Ok(HeldBack { _this_thread: std::marker::PhantomData })
        }
    }

    /// Installs the handlers, then unblocks the signals [`Signals::hold_back`] held back, in
    /// this thread only: the threads started meanwhile (the log's writer, a runtime's workers)
    /// keep them blocked, and the kernel hands a signal to a thread that does not block it. One
    /// that came meanwhile is handed out now, to handlers that are ready.
    /// Must be called inside a tokio runtime with IO enabled. An error means the service could
    /// not be stopped gracefully, so the caller should refuse to start.
    pub fn install(held: HeldBack) -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            let handlers = HANDLED
                .into_iter()
                .map(|(kind, signal)| Ok((tokio::signal::unix::signal(kind)?, signal)))
                .collect::<std::io::Result<_>>();
            // Unblocked here, whether or not every handler could be installed.
            drop(held);
            Ok(Self { handlers: handlers? })
        }
        #[cfg(not(unix))]
        {
            drop(held);
            Ok(Self {})
        }
    }

    /// Waits for the next signal.
    pub async fn recv(&mut self) -> Signal {
        #[cfg(unix)]
        {
            let next = self.handlers.iter_mut().map(|(handler, signal)| {
                let signal = *signal;
                Box::pin(async move {
                    // `None` only if the runtime is going away: then no signal came.
                    if handler.recv().await.is_none() {
                        std::future::pending::<()>().await;
                    }
                    signal
                })
            });
            futures_util::future::select_all(next).await.0
        }
        #[cfg(not(unix))]
        {
            // Outside unix only Ctrl-C exists; if its handler fails, never return rather than
            // report a signal that did not come.
            match tokio::signal::ctrl_c().await {
                Ok(()) => Signal::Stop("Ctrl-C"),
                Err(_) => std::future::pending().await,
            }
        }
    }

    /// Waits for a signal to stop. Meanwhile SIGHUP reloads the TLS certificate with `reload`
    /// (without TLS there is nothing to reload, and it is logged and ignored), and every other
    /// signal is logged as it comes.
    ///
    /// A reload runs beside the wait, not in its place: a stop signal is taken at once even
    /// while the files are read, and a SIGHUP during a reload starts a new one (the read of the
    /// old one goes on under its deadline; see `tls/server.rs`). Each logs its outcome, and a
    /// refused one changes nothing.
    pub async fn stop(&mut self, reload: Option<&crate::tls::Reloader>) -> &'static str {
        let mut reloading = std::pin::pin!(OptionFuture::from(None));
        loop {
            tokio::select! {
                // `recv` is cancel-safe: a signal that came is kept for the next call.
                signal = self.recv() => match signal {
                    Signal::Stop(name) => return name,
                    Signal::Reload => match reload {
                        Some(reload) => reloading.set(Some(reload.reload().fuse()).into()),
                        None => tracing::info!(signal = "SIGHUP", "nothing to reload; going on"),
                    },
                    Signal::Ignored(name) => tracing::info!(signal = name, "ignored"),
                },
                _ = &mut reloading, if !reloading.is_terminated() => {}
            }
        }
    }
}

impl Drop for HeldBack {
    fn drop(&mut self) {
        // Putting back a mask this thread had cannot fail: pthread_sigmask fails only for an
        // unknown `how` (EINVAL), and SIG_SETMASK is known.
        #[cfg(unix)]
        let _ = self.previous.thread_set_mask();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abort_cancels_every_step_and_no_step_cancels_a_later_one() {
        let first = Shutdown::default();
        first.begin.cancel();
        assert!(!first.drain.is_cancelled() && !first.abort.is_cancelled());
        first.drain.cancel();
        assert!(!first.abort.is_cancelled());
        let second = Shutdown::default();
        second.abort.cancel();
        assert!(second.begin.is_cancelled() && second.drain.is_cancelled());
    }
}
