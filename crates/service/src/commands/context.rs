//! What a command works with: its [`Context`] (the service's shared core, and its own
//! connection's subscriptions and publisher) and the [`Reply`] it returns, ready now, waiting on
//! tokio ([`Context::wait`]) or computed on the CPU pool ([`Context::compute`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use futures_util::future::{self, BoxFuture, Either, Ready};
use tokio::time::Instant;

use super::Commands;
use crate::fanout::{Publisher, Subscriptions, Topics};
use crate::job_queue::QueueError;
use crate::protocol::{ErrorCode, Response};
use crate::shared::Shared;
use crate::stats::Stats;
use crate::telemetry::spans::{JobSpans, RequestSpan, Traced};

/// What a command may use: the service's shared parts, and its own connection's state.
pub struct Context {
    shared: Arc<Shared>,
    /// The commands this service answers, which [`super::start`] looks a request's name up in.
    pub(super) commands: Commands,
    /// The connection's subscriptions, which its loop reads pushed messages from.
    pub(crate) subscriptions: Subscriptions,
    /// What the connection publishes with; its loop waits while its budget is spent.
    pub(crate) publisher: Publisher,
    /// With traces on, the connection its requests' spans name; `None` makes no span.
    pub(super) traced: Option<Traced>,
}

impl Context {
    /// A new connection's context: the shared core, and subscriptions and a publisher (its
    /// budget) of its own. With `traced`, each request is a span naming that peer.
    pub(crate) fn new(shared: &Arc<Shared>, commands: &Commands, traced: Option<Traced>) -> Self {
        let subscriptions = Subscriptions::new(Arc::clone(&shared.topics));
        let publisher = shared.topics.publisher();
        Self { shared: Arc::clone(shared), commands: commands.clone(), subscriptions, publisher, traced }
    }

    /// A reply that waits on tokio (a timer, a socket, a channel) inside the connection's task;
    /// `reply` is the answer once it is ready. At the end of the grace period it is answered
    /// `ERR shutting-down` instead, so no request outlives shutdown, whatever it waits on.
    pub fn wait(&self, reply: impl Future<Output = Response> + Send + 'static) -> Reply {
        let abort = self.shared.shutdown.abort.clone().cancelled_owned();
        Reply::later(Box::pin(async move {
            tokio::select! {
                // An answer that is ready wins over the abort.
                biased;
                response = reply => response,
                () = abort => Response::err(ErrorCode::ShuttingDown),
            }
        }))
    }

    /// A reply computed on the CPU pool: `work` (a plain sync function) runs there through the
    /// bounded job queue, and `answer` turns its value into the answer.
    ///
    /// `work` gets a [`cpu::Stop`], set when nobody waits for it any more (its deadline passed,
    /// its client left, shutdown): it should `stop.check()?` between steps. Everything else is
    /// answered here: a full queue `ERR busy`, a missed deadline `ERR timeout`, a panic (or a
    /// `Stopped` nobody asked for) `ERR internal`, the end of the grace period
    /// `ERR shutting-down`. The job queue counts each job's outcome once.
    pub fn compute<T, W, A>(&self, work: W, answer: A) -> Reply
    where
        T: Send + 'static,
        W: FnOnce(&cpu::Stop) -> Result<T, cpu::Stopped> + Send + 'static,
        A: FnOnce(T) -> Response + Send + 'static,
    {
        let pool = self.shared.pool.clone();
        // Traced: the wait in the queue and the run on the pool, under the request's span.
        let spans = self.traced.as_ref().and_then(JobSpans::queued);
        let job = self.shared.jobs.submit(async move {
            let _running = spans.map(JobSpans::running);
            // Started when a worker takes the job, not before: queued jobs hold no thread.
            match pool.spawn_stoppable(work).await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(cpu::Stopped)) | Err(cpu::JobError::Panicked(_)) => Err(QueueError::Panicked),
                Err(cpu::JobError::Cancelled) => Err(QueueError::ShuttingDown),
            }
        });
        // No abort of its own here: the job queue ends its jobs at the abort, and counts them.
        Reply::later(Box::pin(async move {
            match job.await {
                Ok(value) => answer(value),
                Err(error) => Response::from(error),
            }
        }))
    }

    /// The service's counters.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// CPU jobs waiting in the queue now.
    pub(crate) fn jobs_queued(&self) -> usize {
        self.shared.jobs.queued()
    }

    /// Every topic with subscribers.
    pub(crate) fn topics(&self) -> &Topics {
        &self.shared.topics
    }

    /// The topics, and this connection's publisher (borrowed together).
    pub(crate) fn topics_and_publisher(&mut self) -> (&Topics, &mut Publisher) {
        (&self.shared.topics, &mut self.publisher)
    }
}

/// An answer being prepared: ready now, or a future. Connections keep them in request order.
pub struct Reply {
    response: Either<Ready<Response>, BoxFuture<'static, Response>>,
    /// The command's place in the list and when it started, for its latency histogram.
    pub(super) started: Option<(usize, Instant)>,
}

impl Reply {
    /// An answer that is ready now: no allocation, no task.
    pub fn ready(response: Response) -> Self {
        Self { response: Either::Left(future::ready(response)), started: None }
    }

    pub(super) fn later(response: BoxFuture<'static, Response>) -> Self {
        Self { response: Either::Right(response), started: None }
    }

    /// This reply of a traced request: a ready answer ends `span` now; one to wait for is
    /// polled in the span's context and ends it when ready. (So the reply of an untraced
    /// request carries nothing for traces.)
    pub(super) fn traced(self, span: RequestSpan) -> Self {
        let Self { response, started } = self;
        let response = match response {
            Either::Left(ready) => {
                let response = ready.into_inner();
                span.finish(response.error_code());
                Either::Left(future::ready(response))
            }
            Either::Right(later) => Either::Right(Box::pin(async move {
                let response = span.instrument(later).await;
                span.finish(response.error_code());
                response
            }) as BoxFuture<'static, Response>),
        };
        Self { response, started }
    }

    /// The answer and its command's start, if it is ready now; else the reply itself.
    pub(crate) fn into_ready(self) -> Result<(Response, Option<(usize, Instant)>), Self> {
        match self.response {
            Either::Left(ready) => Ok((ready.into_inner(), self.started)),
            Either::Right(_) => Err(self),
        }
    }
}

impl Future for Reply {
    /// The answer, and which command it answers and since when (none for a refused line).
    type Output = (Response, Option<(usize, Instant)>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let started = self.started;
        Pin::new(&mut self.response).poll(cx).map(|response| (response, started))
    }
}

/// The job queue's errors, as protocol answers.
impl From<QueueError> for Response {
    fn from(error: QueueError) -> Self {
        Self::err(match error {
            QueueError::Busy => ErrorCode::Busy,
            QueueError::TimedOut => ErrorCode::Timeout,
            QueueError::Panicked => ErrorCode::Internal,
            QueueError::ShuttingDown => ErrorCode::ShuttingDown,
        })
    }
}
