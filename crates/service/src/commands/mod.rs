//! The protocol's commands: one file each, and the registry that lists them.
//!
//! **This folder is the seam where a user replaces the example domain.** Each file holds one
//! command whole: its name, how it parses its argument (limits and errors included), what it
//! does, whether it ends the connection, examples of its answers, and its unit tests.
//! [`REGISTRY`] is the single list that the parser, the HTTP front's routes, `serve --help`, the
//! metrics and the end-to-end test read.
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

use std::sync::Arc;

use tokio::time::Instant;

use crate::protocol::{ErrorCode, Response};
use crate::telemetry::spans::RequestSpan;

mod context;
pub use self::context::{Context, Reply};

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

/// The longest command name, in characters.
const MAX_NAME: usize = 32;

/// Checks a command's name against the rule of [`Spec::name`], saying it if broken: one word
/// that cannot be mistaken for another in any case, and fits a metric's label as it is.
fn name_rule(name: &str) -> Result<(), String> {
    let mut bytes = name.bytes();
    let first_is_letter = bytes.next().is_some_and(|b| b.is_ascii_uppercase());
    if first_is_letter
        && name.len() <= MAX_NAME
        && bytes.all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    {
        return Ok(());
    }
    Err(format!(
        "command name {name:?}: a name is 1 to {MAX_NAME} of A-Z, 0-9 and _, a letter first (upper case: requests match it in any case)"
    ))
}

/// One command: what the registry knows of it.
pub struct Spec {
    /// The name: 1 to 32 of `A-Z`, `0-9` and `_`, a letter first (`PING`, `B64`, `GET_KEY`);
    /// requests match it in any case. [`Commands::with`] and the registry's test refuse others.
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
            if let Err(why) = name_rule(spec.name) {
                panic!("{why}");
            }
            let twice = all[..index].iter().any(|earlier| earlier.name.eq_ignore_ascii_case(spec.name));
            assert!(!twice, "two commands are named {}", spec.name);
        }
        Self(all)
    }

    /// The command named `name` (in any case), and its place in the list.
    pub fn find(&self, name: &str) -> Option<(usize, &'static Spec)> {
        self.find_bytes(name.as_bytes())
    }

    /// [`Commands::find`] for a name not yet known to be UTF-8 (a request line's first word).
    fn find_bytes(&self, name: &[u8]) -> Option<(usize, &'static Spec)> {
        // Every name is upper case ([`Spec::name`]), so only the request's side is folded:
        // half the work of `eq_ignore_ascii_case`, and no call to `memcmp` for a few bytes.
        self.0.iter().copied().enumerate().find(|(_, spec)| {
            let known = spec.name.as_bytes();
            known.len() == name.len() && known.iter().zip(name).all(|(&k, &n)| k == n.to_ascii_uppercase())
        })
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

/// Starts the request on one line (without its line ending). Returns its reply, and whether the
/// connection goes on reading after it.
///
/// A line is a command name, then optionally one space and the argument, which is everything
/// after that space, byte for byte. Only the space separates: a tab is part of a word. A line
/// that is not UTF-8 is answered `ERR bad-request`.
///
/// `now` is when the line was read: the start of its latency. (The connection reads the clock
/// once per burst of requests, not once per request.)
///
/// Inlined into the connection's loop over a burst's lines: as a call, its entry and exit cost
/// a pipelined PING about 20 instructions (callgrind, the template's instruction count).
#[inline(always)]
pub(crate) fn start(line: &[u8], context: &mut Context, now: Instant) -> (Reply, bool) {
    // A byte loop, not `memchr`: it stops at the end of the name, a few bytes in, where
    // `memchr`'s vector setup costs more than it saves.
    let (name, argument) = match line.iter().position(|byte| *byte == b' ') {
        Some(space) => (&line[..space], Some(&line[space + 1..])),
        None => (line, None),
    };
    let Some(found) = context.commands.find_bytes(name) else {
        return match std::str::from_utf8(line) {
            // The name ends at a space or at the end: a char boundary.
            Ok(line) => (unknown(&line[..name.len()]), true),
            Err(_) => (not_utf8(), true),
        };
    };
    // The names are ASCII, so only the argument needs the UTF-8 check: a PING has nothing to
    // check (the whole line's check was about 70 of its instructions).
    let Ok(argument) = argument.map(std::str::from_utf8).transpose() else {
        return (not_utf8(), true);
    };
    start_found(found, argument, context, now)
}

/// [`start`] for a request whose name and argument come apart already (the HTTP front's
/// `POST /v1/commands/{name}`, with the body as the argument).
#[cfg(feature = "http")]
pub(crate) fn start_named(
    name: &str,
    argument: Option<&str>,
    context: &mut Context,
    now: Instant,
) -> (Reply, bool) {
    match context.commands.find(name) {
        Some(found) => start_found(found, argument, context, now),
        None => (unknown(name), true),
    }
}

/// The answer to a name that no command has.
fn unknown(name: &str) -> Reply {
    let detail = if name.is_empty() {
        "empty request".to_owned()
    } else {
        name.chars().take(MAX_NAME_SHOWN).collect()
    };
    Reply::ready(Response::err_with(ErrorCode::UnknownCommand, detail))
}

/// The answer to a line that is not UTF-8.
fn not_utf8() -> Reply {
    Reply::ready(Response::err_with(ErrorCode::BadRequest, "not UTF-8"))
}

/// Starts the command `spec`, found at `index` of the list. Always inlined: left to `#[inline]`,
/// this part of `start` stayed a call of its own, and a line PING cost 38 instructions more at
/// depth 1 and 21 at depth 16 under callgrind (the template's instruction count).
#[inline(always)]
fn start_found(
    (index, spec): (usize, &'static Spec),
    argument: Option<&str>,
    context: &mut Context,
    now: Instant,
) -> (Reply, bool) {
    if let Some(span) = context.traced.as_ref().and_then(|traced| RequestSpan::new(spec.name, traced)) {
        return start_traced(span, spec, index, argument, context, now);
    }
    let (mut reply, keep_reading) = started(spec, (spec.start)(argument, context));
    reply.started = Some((index, now));
    (reply, keep_reading)
}

/// The reply to what `spec.start` returned, and whether the connection goes on reading.
fn started(spec: &Spec, started: Result<Reply, Response>) -> (Reply, bool) {
    match started {
        Ok(reply) => (reply, !spec.ends_connection),
        // A refused request does not end the connection, whatever the command.
        Err(refused) => (Reply::ready(refused), true),
    }
}

/// [`start`] with traces on: the request's `span` is the current context while the command
/// starts its work, so that the spans its work opens (a CPU job's, a relayed PUBLISH's) and its
/// log lines go under it. Out of line: an untraced request does not carry its code.
#[cold]
#[inline(never)]
fn start_traced(
    span: RequestSpan,
    spec: &'static Spec,
    index: usize,
    argument: Option<&str>,
    context: &mut Context,
    now: Instant,
) -> (Reply, bool) {
    let (mut reply, keep_reading) = span.in_scope(|| started(spec, (spec.start)(argument, context)));
    reply.started = Some((index, now));
    (reply.traced(span), keep_reading)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::shared::Shared;
    use crate::stats::Stats;

    /// A connection's context for unit tests of commands. Call it inside a runtime.
    pub(crate) fn context() -> Context {
        Context::new(&shared(), &Commands::registry(), None)
    }

    /// `N` connections' contexts on one shared core, for commands that reach each other.
    pub(crate) fn contexts<const N: usize>() -> [Context; N] {
        let (shared, commands) = (shared(), Commands::registry());
        std::array::from_fn(|_| Context::new(&shared, &commands, None))
    }

    /// The shared core for unit tests: a small pool and queue, at most 8 topics of 4 messages
    /// (6 for one connection). Call it inside a runtime.
    pub(crate) fn shared() -> Arc<Shared> {
        let count = |n| std::num::NonZeroUsize::new(n).expect("a count");
        shared_with(crate::Config {
            cpu_threads: 1,
            topic_capacity: count(4),
            max_topics: count(8),
            max_subscriptions: count(6),
            ..crate::Config::default()
        })
    }

    /// [`shared`] with `config`.
    pub(crate) fn shared_with(config: crate::Config) -> Arc<Shared> {
        let config = Arc::new(config);
        let pool = cpu::CpuPool::new(1).expect("a pool");
        let names = REGISTRY.iter().map(|spec| spec.name);
        // The job queue's workers end at shutdown, which these tests never start.
        let tracker = tokio_util::task::TaskTracker::new();
        let topics = crate::fanout::Topics::new(&config, Arc::new(Stats::default()));
        Arc::new(Shared::new(config, Arc::new(Stats::default()), names, pool, topics, &tracker))
    }

    /// The answer to one request line.
    pub(crate) async fn answer(line: &str, context: &mut Context) -> String {
        start(line.as_bytes(), context, Instant::now()).0.await.0.to_string()
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

    /// The name is looked up before any UTF-8 check; whichever word holds the bad bytes, the
    /// answer is the same.
    #[tokio::test(flavor = "current_thread")]
    async fn a_line_that_is_not_utf8_is_a_bad_request_wherever_its_bad_bytes_are() {
        // PING, which a project keeps: the examples (ECHO...) may be gone.
        let context = &mut context();
        for line in [&b"\xff"[..], b"PI\xffNG", b"PING \xff", b"NOPE a\xff", b"\xff PING"] {
            let answer = start(line, context, Instant::now()).0.await.0.to_string();
            assert_eq!(answer, "ERR bad-request not UTF-8", "{}", line.escape_ascii());
        }
        let answer = start(b"PING caf\xc3\xa9", context, Instant::now()).0.await.0.to_string();
        assert_eq!(answer, "ERR bad-argument PING takes no argument", "a UTF-8 argument reaches the command");
    }

    /// Every example in the registry, answered as it says (the end-to-end test sends the same
    /// over TCP).
    #[tokio::test(flavor = "current_thread")]
    async fn every_example_is_answered_as_written() {
        let (shared, commands) = (shared(), Commands::registry());
        for spec in REGISTRY {
            for (request, expected) in spec.examples {
                // Each on a fresh connection, as the end-to-end test sends them.
                let context = &mut Context::new(&shared, &commands, None);
                assert_eq!(answer(request, context).await, *expected, "{request:?}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "two commands are named PING")]
    fn a_program_cannot_add_a_command_under_a_name_taken() {
        static AGAIN: Spec = Spec { name: "PING", ..ping::PING };
        let _ = Commands::with(&[&AGAIN]);
    }

    #[test]
    #[should_panic(expected = "command name \"b64\": a name is 1 to 32 of A-Z, 0-9 and _")]
    fn a_program_cannot_add_a_command_whose_name_breaks_the_rule() {
        static LOWER: Spec = Spec { name: "b64", ..ping::PING };
        let _ = Commands::with(&[&LOWER]);
    }

    #[test]
    fn names_are_upper_case_and_unique_and_examples_use_their_command() {
        let mut names: Vec<_> = REGISTRY.iter().map(|spec| spec.name).collect();
        for name in &names {
            if let Err(why) = name_rule(name) {
                panic!("{why}");
            }
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
    fn the_name_rule_takes_digits_and_says_itself() {
        for good in ["PING", "B64", "GET_KEY", "X"] {
            assert_eq!(name_rule(good), Ok(()), "{good}");
        }
        for bad in ["", "ping", "64B", "_X", "GET-KEY", "GET KEY", "\u{c9}CHO", &"X".repeat(MAX_NAME + 1)] {
            let why = name_rule(bad).unwrap_err();
            assert!(why.contains("a name is 1 to 32 of A-Z, 0-9 and _"), "{bad:?}: {why}");
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
