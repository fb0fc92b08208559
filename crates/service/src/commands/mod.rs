//! The protocol's commands: one file each, and the registry that lists them.
//!
//! **This folder is the seam where a user replaces the example domain.** Each file holds one
//! command whole: its name, how it parses its argument (limits and errors included), what it
//! does, whether it ends the connection, examples of its answers, and its unit tests.
//! [`REGISTRY`] is the single list that the parser, `serve --help`, the metrics and the
//! end-to-end test read.
//!
//! The commands come in two kinds:
//!
//! * **Kept** (any service wants them): `PING`, `STATS`, `QUIT`, and the fan-out commands
//!   `PUBLISH`, `SUBSCRIBE` and `UNSUBSCRIBE`, which the connection loop, the codec, the
//!   counters and the client serve.
//! * **The example domain, to replace:** `ECHO` (answered at once), `SLEEP` (waits on tokio)
//!   and `PRIMES` (computes on the CPU pool). Nothing outside this folder names them, and each
//!   can go with its file and its two registry lines.
//!
//! A command uses only what [`Context`] offers: [`Reply::ready`] for an answer at once,
//! [`Context::wait`] for one that waits on tokio, [`Context::compute`] for CPU work. These are
//! public, so the machinery behind them (the job queue, the pool) stays whole when the last
//! example that uses it goes: no dead code, and a new command of any kind copies in a few lines.
//!
//! To add a command, copy the file of the one most like it, then declare its module and add it
//! to [`REGISTRY`] below. A program that embeds the server can add commands of its own without
//! touching this folder ([`Commands::with`]); the tests do, for the commands they time.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use futures_util::future::{self, BoxFuture, Either, Ready};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::job_queue::{JobQueue, QueueError};
use crate::protocol::{ErrorCode, Response};
use crate::stats::Stats;
use crate::topics::{Publisher, Subscriptions, Topics};

pub mod arguments;
mod echo;
mod ping;
mod primes;
mod publish;
mod quit;
mod sleep;
mod stats;
mod subscribe;
mod unsubscribe;

/// How much of an unknown command's name the error shows, in characters: a peer's bytes, so
/// bounded.
const MAX_NAME_SHOWN: usize = 32;

/// Every command of the protocol, in the order `serve --help` lists them.
pub static REGISTRY: &[&Spec] = &[
    // Kept: worth keeping in any service.
    &ping::PING,
    &stats::STATS,
    &quit::QUIT,
    &publish::PUBLISH,
    &subscribe::SUBSCRIBE,
    &unsubscribe::UNSUBSCRIBE,
    // The example domain: replace these with your own.
    &echo::ECHO,
    &sleep::SLEEP,
    &primes::PRIMES,
];

/// One command: what the registry knows of it.
pub struct Spec {
    /// The name, in upper case; requests match it in any case.
    pub name: &'static str,
    /// The argument as help shows it (`<ms>`), or `""` when it takes none.
    pub usage: &'static str,
    /// What it answers, in a few words, for `serve --help`.
    pub help: &'static str,
    /// Whether the connection closes after its answer.
    pub ends_connection: bool,
    /// Whether, after its answer, the server may push lines on the connection (`MSG`, `LAG`,
    /// `GAP`): `call` then goes on printing them.
    pub pushes: bool,
    /// Requests and their exact answers, which the end-to-end test sends to a live server, each
    /// on a fresh connection.
    pub examples: &'static [(&'static str, &'static str)],
    /// Parses the argument (`None` when the line is the name alone) and starts the work. An
    /// `Err` is the refusal to answer (`ERR bad-argument ...`).
    pub start: fn(Option<&str>, &mut Context) -> Result<Reply, Response>,
}

/// The commands one service answers: the [`REGISTRY`], and any a program adds. Cheap to clone.
#[derive(Clone)]
pub struct Commands(Arc<[&'static Spec]>);

impl Commands {
    /// The [`REGISTRY`] alone.
    pub fn registry() -> Self {
        Self(REGISTRY.into())
    }

    /// The [`REGISTRY`] and `extra`, after it.
    ///
    /// # Panics
    ///
    /// If two commands have the same name: a bug in the program, found at start.
    pub fn with(extra: &[&'static Spec]) -> Self {
        let all: Arc<[&'static Spec]> = REGISTRY.iter().chain(extra).copied().collect();
        for (index, spec) in all.iter().enumerate() {
            let twice = all[..index].iter().any(|earlier| earlier.name.eq_ignore_ascii_case(spec.name));
            assert!(!twice, "two commands are named {}", spec.name);
        }
        Self(all)
    }

    /// The command named `name` (in any case), and its place in the list.
    pub fn find(&self, name: &str) -> Option<(usize, &'static Spec)> {
        self.0.iter().copied().enumerate().find(|(_, spec)| spec.name.eq_ignore_ascii_case(name))
    }

    /// Every command, in order.
    pub fn iter(&self) -> impl Iterator<Item = &'static Spec> + '_ {
        self.0.iter().copied()
    }

    /// The protocol, one line per command, for `serve --help`.
    pub fn help(&self) -> String {
        let mut text = String::from("Protocol v1 (one request per line, answers in request order):\n");
        for spec in self.iter() {
            let request = if spec.usage.is_empty() {
                spec.name.to_owned()
            } else {
                format!("{} {}", spec.name, spec.usage)
            };
            text.push_str(&format!("  {request:<24} {}\n", spec.help));
        }
        text
    }
}

/// The service's parts that commands use, shared by every connection.
#[derive(Clone)]
pub(crate) struct Shared {
    commands: Commands,
    jobs: JobQueue,
    pool: cpu::CpuPool,
    stats: Arc<Stats>,
    topics: Arc<Topics>,
    abort: CancellationToken,
}

/// Everything [`Shared`] is made of.
pub(crate) struct Parts {
    pub(crate) commands: Commands,
    pub(crate) jobs: JobQueue,
    pub(crate) pool: cpu::CpuPool,
    pub(crate) stats: Arc<Stats>,
    pub(crate) topics: Arc<Topics>,
    pub(crate) abort: CancellationToken,
}

impl Shared {
    pub(crate) fn new(parts: Parts) -> Self {
        let Parts { commands, jobs, pool, stats, topics, abort } = parts;
        Self { commands, jobs, pool, stats, topics, abort }
    }

    /// A new connection's context: the shared parts, and subscriptions and a publisher (its
    /// budget) of its own.
    pub(crate) fn context(&self) -> Context {
        let subscriptions = Subscriptions::new(Arc::clone(&self.topics));
        let publisher = self.topics.publisher();
        Context { shared: self.clone(), subscriptions, publisher }
    }
}

/// What a command may use: the service's shared parts, and its own connection's state.
pub struct Context {
    shared: Shared,
    /// The connection's subscriptions, which its loop reads pushed messages from.
    pub(crate) subscriptions: Subscriptions,
    /// What the connection publishes with; its loop waits while its budget is spent.
    pub(crate) publisher: Publisher,
}

impl Context {
    /// A reply that waits on tokio (a timer, a socket, a channel) inside the connection's task;
    /// `reply` is the answer once it is ready. At the end of the grace period it is answered
    /// `ERR shutting-down` instead, so no request outlives shutdown, whatever it waits on.
    pub fn wait(&self, reply: impl Future<Output = Response> + Send + 'static) -> Reply {
        let abort = self.shared.abort.clone().cancelled_owned();
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
        let job = self.shared.jobs.submit(async move {
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
    started: Option<(usize, Instant)>,
}

impl Reply {
    /// An answer that is ready now: no allocation, no task.
    pub fn ready(response: Response) -> Self {
        Self { response: Either::Left(future::ready(response)), started: None }
    }

    fn later(response: BoxFuture<'static, Response>) -> Self {
        Self { response: Either::Right(response), started: None }
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

/// Starts the request on one line (without its line ending). Returns its reply, and whether the
/// connection goes on reading after it.
///
/// A line is a command name, then optionally one space and the argument, which is everything
/// after that space, byte for byte. Only the space separates: a tab is part of a word.
///
/// `now` is when the line was read: the start of its latency. (The connection reads the clock
/// once per burst of requests, not once per request.)
pub(crate) fn start(line: &str, context: &mut Context, now: Instant) -> (Reply, bool) {
    let (name, argument) = match line.split_once(' ') {
        Some((name, argument)) => (name, Some(argument)),
        None => (line, None),
    };
    let Some((index, spec)) = context.shared.commands.find(name) else {
        let detail = if name.is_empty() {
            "empty request".to_owned()
        } else {
            name.chars().take(MAX_NAME_SHOWN).collect()
        };
        let unknown = Response::err_with(ErrorCode::UnknownCommand, detail);
        return (Reply::ready(unknown), true);
    };
    let (mut reply, keep_reading) = match (spec.start)(argument, context) {
        Ok(reply) => (reply, !spec.ends_connection),
        // A refused request does not end the connection, whatever the command.
        Err(refused) => (Reply::ready(refused), true),
    };
    reply.started = Some((index, now));
    (reply, keep_reading)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A connection's context for unit tests of commands. Call it inside a runtime.
    pub(crate) fn context() -> Context {
        shared().context()
    }

    /// The shared parts for unit tests: a small pool and queue, at most 8 topics of 4 messages
    /// (6 for one connection). Call it inside a runtime.
    pub(crate) fn shared() -> Shared {
        let count = |n| std::num::NonZeroUsize::new(n).expect("a count");
        let config = Arc::new(crate::Config {
            cpu_threads: 1,
            topic_capacity: count(4),
            max_topics: count(8),
            max_subscriptions: count(6),
            ..crate::Config::default()
        });
        let stats = Arc::new(Stats::default());
        let shutdown = crate::shutdown::Shutdown::default();
        let tracker = tokio_util::task::TaskTracker::new();
        let commands = Commands::registry();
        let metrics = Arc::new(crate::metrics::Metrics::new(commands.iter().map(|spec| spec.name)));
        let jobs = JobQueue::start(Arc::clone(&config), Arc::clone(&stats), metrics, &shutdown, &tracker);
        let topics = Arc::new(Topics::new(&config, Arc::clone(&stats), None));
        let pool = cpu::CpuPool::new(1).expect("a pool");
        Shared::new(Parts { commands, jobs, pool, stats, topics, abort: shutdown.abort })
    }

    /// The answer to one request line.
    pub(crate) async fn answer(line: &str, context: &mut Context) -> String {
        start(line, context, Instant::now()).0.await.0.to_string()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn unknown_and_empty_commands_are_refused_with_a_safe_detail() {
        let context = &mut context();
        assert_eq!(answer("FLY me", context).await, "ERR unknown-command FLY");
        assert_eq!(answer("", context).await, "ERR unknown-command empty request");
        assert_eq!(answer(" PING", context).await, "ERR unknown-command empty request");
        assert_eq!(answer("PING\t", context).await, r"ERR unknown-command PING\t");
        assert_eq!(answer("\u{1b}[2J", context).await, r"ERR unknown-command \u{1b}[2J");
        assert_eq!(answer("PiNg", context).await, "OK PONG", "names match in any case");
        assert_eq!(answer("PING ", context).await, "ERR bad-argument PING takes no argument");
        let long = "X".repeat(1000);
        assert_eq!(
            answer(&long, context).await,
            format!("ERR unknown-command {}", "X".repeat(MAX_NAME_SHOWN))
        );
    }

    /// Every example in the registry, answered as it says (the end-to-end test sends the same
    /// over TCP).
    #[tokio::test(flavor = "current_thread")]
    async fn every_example_is_answered_as_written() {
        let shared = shared();
        for spec in REGISTRY {
            for (request, expected) in spec.examples {
                // Each on a fresh connection, as the end-to-end test sends them.
                assert_eq!(answer(request, &mut shared.context()).await, *expected, "{request:?}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "two commands are named ping")]
    fn a_program_cannot_add_a_command_under_a_name_taken() {
        static AGAIN: Spec = Spec { name: "ping", ..ping::PING };
        let _ = Commands::with(&[&AGAIN]);
    }

    #[test]
    fn names_are_upper_case_and_unique_and_examples_use_their_command() {
        let mut names: Vec<_> = REGISTRY.iter().map(|spec| spec.name).collect();
        for name in &names {
            assert!(!name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase()), "{name}");
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), REGISTRY.len(), "a name is registered twice");
        for spec in REGISTRY {
            for (request, _) in spec.examples {
                let name = request.split(' ').next().unwrap_or_default();
                assert!(name.eq_ignore_ascii_case(spec.name), "{request:?} is not a {} request", spec.name);
            }
        }
    }

    #[test]
    fn help_lists_every_command() {
        let help = Commands::registry().help();
        for spec in REGISTRY {
            assert!(help.lines().any(|line| line.trim_start().starts_with(spec.name)), "{}", spec.name);
        }
    }
}
