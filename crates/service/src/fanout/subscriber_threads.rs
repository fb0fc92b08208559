//! The subscriber threads: a runtime of their own for connections that subscribe, at a lower
//! priority than the runtime that answers requests.
//!
//! A PUBLISH wakes the task of every subscriber at once, and each then writes to its socket. On
//! the runtime that answers requests, those wakes would queue ahead of any request that arrives
//! meanwhile: tokio has no task priorities, and a worker's queues are first in, first out
//! (tokio's `runtime` module docs, "Multi threaded runtime"). One publisher to 1,000 subscribers
//! made a bystander's PING wait for their writes (bench: `bystander_p99_one_publisher`, 5 to 20
//! times its p99 with nobody publishing; 2.2 to 3.0 since, over five runs). So a connection
//! moves here when it first subscribes ([`Mover::serve`]), with everything it has in flight,
//! and stays until it closes:
//!
//! * the request runtime's queues then hold requests only, and
//! * on Linux these threads run ten `nice` steps lower (as the CPU pool's do, see
//!   `cpu::lower_priority`), so when both runtimes have work the kernel runs the request
//!   threads first; deliveries get every core nobody else wants.
//!
//! The connection's socket stays registered with the request runtime's I/O driver, which wakes
//! the moved task where it now runs: a socket is driven by the runtime it was registered with,
//! whichever task polls it, so it answers only while that runtime runs (tokio-rs/tokio#7337,
//! where it had stopped); `App::stop` stops this runtime once every connection has ended, and
//! `main` stops that one after. The moved connection's timers are this runtime's.
//!
//! A service on a `current_thread` runtime (the paused-time tests) has one thread by choice:
//! there, subscribed connections stay where they are, and nothing here is made. The HTTP
//! front's event streams stay on the request runtime too: hyper polls an HTTP/1.1 response
//! body in its connection's task, and spawns HTTP/2's streams where the front's executor says
//! (`http/mod.rs`), not knowing which will subscribe.

use std::future::Future;
use std::io;

use tokio::runtime::{Builder, Handle, Runtime, RuntimeFlavor};
use tokio_util::task::{AbortOnDropHandle, TaskTracker};

use crate::connection::ConnectionError;

/// The runtime subscribed connections move to; [`App`](crate::App) owns it, and stops it by
/// dropping it once every connection has ended: with no task left to wait for, its threads exit
/// on their own.
pub(crate) struct SubscriberThreads {
    /// Taken by the drop (`shutdown_background`, since a runtime dropped in async code panics).
    runtime: Option<Runtime>,
}

/// What moves a connection there: the runtime's handle, and the tracker its tasks are on.
/// Each connection's handler holds one; it does not keep the runtime up.
#[derive(Clone)]
pub(crate) struct Mover {
    handle: Handle,
    tracker: TaskTracker,
}

impl SubscriberThreads {
    /// `threads` threads named `subscribers` (0: tokio's default, which `TOKIO_WORKER_THREADS`
    /// sets, as for the request runtime; else one per core), unless the current runtime
    /// is a `current_thread` one (see the module docs). Moved connections go on `tracker`,
    /// which the shutdown waits for.
    pub(crate) fn start(threads: usize, tracker: &TaskTracker) -> io::Result<Option<(Self, Mover)>> {
        if Handle::current().runtime_flavor() == RuntimeFlavor::CurrentThread {
            return Ok(None);
        }
        let mut builder = Builder::new_multi_thread();
        if threads > 0 {
            builder.worker_threads(threads);
        }
        let runtime =
            builder.thread_name("subscribers").on_thread_start(cpu::lower_priority).enable_all().build()?;
        let mover = Mover { handle: runtime.handle().clone(), tracker: tracker.clone() };
        Ok(Some((Self { runtime: Some(runtime) }, mover)))
    }
}

#[cfg(test)]
impl SubscriberThreads {
    /// The tasks alive on these threads: the connections that moved and have not ended.
    pub(crate) fn connections(&self) -> usize {
        self.runtime.as_ref().map_or(0, |runtime| runtime.metrics().num_alive_tasks())
    }
}

impl Drop for SubscriberThreads {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Mover {
    /// Runs `serve` (a subscribed connection's remaining life) on the subscriber threads, and
    /// returns the wait for it: the caller's task keeps the connection's slot and span
    /// meanwhile. Dropping the wait aborts the moved task, so it never outlives the caller's.
    ///
    /// Spawned now, not in the wait's first poll: the wait then holds a handle, not `serve`,
    /// so a connection's task is no larger for being able to move (an `async fn` here made
    /// every connection's task larger by about 500 bytes: the bench's memory per idle connection).
    pub(crate) fn serve<F>(&self, serve: F) -> impl Future<Output = Result<(), ConnectionError>> + use<F>
    where
        F: Future<Output = Result<(), ConnectionError>> + Send + 'static,
    {
        let moved = AbortOnDropHandle::new(self.tracker.spawn_on(serve, &self.handle));
        async move {
            match moved.await {
                Ok(served) => served,
                // A panic is the connection's, as if it had not moved.
                Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                // Only if the threads stopped first, which `App::stop` has them do after every
                // connection.
                Err(error) => Err(ConnectionError::Io(io::Error::other(error))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn multi_thread() -> Runtime {
        Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
    }

    #[test]
    fn a_moved_connection_runs_on_the_subscriber_threads_until_they_stop() {
        multi_thread().block_on(async {
            let tracker = TaskTracker::new();
            let (threads, mover) = SubscriberThreads::start(2, &tracker).unwrap().expect("threads");
            let on = mover.serve(async {
                assert_eq!(std::thread::current().name(), Some("subscribers"));
                Ok(())
            });
            assert!(on.await.is_ok());
            drop(threads);
            let error = mover.serve(async { Ok(()) }).await.expect_err("no threads to run on");
            assert!(matches!(error, ConnectionError::Io(_)), "{error}");
        });
    }

    #[test]
    fn a_moved_connection_s_panic_is_its_own() {
        multi_thread().block_on(async {
            let (_threads, mover) =
                SubscriberThreads::start(1, &TaskTracker::new()).unwrap().expect("threads");
            let waited =
                tokio::spawn(async move { mover.serve(async { panic!("in the moved task") }).await });
            let error = waited.await.expect_err("the waiting task panics too");
            assert!(error.is_panic());
        });
    }

    #[test]
    fn a_current_thread_service_keeps_its_subscribers_where_they_are() {
        let runtime = Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            assert!(SubscriberThreads::start(0, &TaskTracker::new()).unwrap().is_none());
        });
    }
}
