//! Protocol v1: parse a request line, format a response line.
//!
//! One request per line, one response line per request, in request order. Commands are
//! case-insensitive; errors are `ERR <code> [detail]`. Parsing is pure (no I/O, no allocation for
//! the common commands), so it is unit-tested here and property-tested in the tests crate.
//!
//! **Example domain code:** `ECHO`, `SLEEP` and `PRIMES` are examples; replace them with your
//! own commands (here, and in [`crate::commands`] where they are served). Keep `PING`, `STATS` and
//! `QUIT`: health checks, observability and a clean goodbye are useful in any service.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

/// The longest `SLEEP`, in milliseconds.
pub const MAX_SLEEP_MS: u64 = 60_000;
/// The largest `PRIMES` argument.
pub const MAX_PRIMES_N: u64 = cpu::primes::MAX_N;
/// How much of an unknown command is echoed back in the error detail.
const MAX_DETAIL: usize = 32;

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `PING`: answered `OK PONG`.
    Ping,
    /// `ECHO <text>`: answered `OK <text>`. *Example command.*
    Echo(String),
    /// `SLEEP <ms>`: answered `OK <ms>` after `ms` milliseconds on a tokio timer. *Example command.*
    Sleep(Duration),
    /// `PRIMES <n>`: the count of primes below `n`, computed on the CPU pool. *Example command.*
    Primes(u64),
    /// `STATS`: counters of the running service.
    Stats,
    /// `QUIT`: answered `OK BYE`, then the connection closes.
    Quit,
}

/// The error codes of protocol v1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The command is not one of protocol v1's.
    UnknownCommand,
    /// The command is known but its argument is missing, extra or out of range.
    BadArgument,
    /// The line is not UTF-8.
    BadRequest,
    /// The line is longer than `max_line`; the connection closes after this answer.
    LineTooLong,
    /// The CPU queue is full (load shedding): try again later.
    Busy,
    /// The job missed its deadline.
    Timeout,
    /// The job failed inside the server (it panicked); the server keeps running.
    Internal,
    /// The server is shutting down and will not finish this request.
    ShuttingDown,
}

impl ErrorCode {
    /// Every code of protocol v1.
    pub const ALL: [Self; 8] = [
        Self::UnknownCommand,
        Self::BadArgument,
        Self::BadRequest,
        Self::LineTooLong,
        Self::Busy,
        Self::Timeout,
        Self::Internal,
        Self::ShuttingDown,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownCommand => "unknown-command",
            Self::BadArgument => "bad-argument",
            Self::BadRequest => "bad-request",
            Self::LineTooLong => "line-too-long",
            Self::Busy => "busy",
            Self::Timeout => "timeout",
            Self::Internal => "internal",
            Self::ShuttingDown => "shutting-down",
        }
    }
}

/// One response line, without its newline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// `OK <text>` (or `OK` alone when the text is empty).
    Ok(Cow<'static, str>),
    /// `ERR <code> [detail]`.
    Err(ErrorCode, Option<Cow<'static, str>>),
}

impl Response {
    /// `OK <text>`.
    pub fn ok(text: impl Into<Cow<'static, str>>) -> Self {
        Self::Ok(text.into())
    }

    /// `ERR <code>` with no detail.
    pub fn err(code: ErrorCode) -> Self {
        Self::Err(code, None)
    }

    /// `ERR <code> <detail>`.
    pub fn err_with(code: ErrorCode, detail: impl Into<Cow<'static, str>>) -> Self {
        Self::Err(code, Some(detail.into()))
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ok(text) if text.is_empty() => f.write_str("OK"),
            Self::Ok(text) => write!(f, "OK {text}"),
            Self::Err(code, None) => write!(f, "ERR {}", code.as_str()),
            Self::Err(code, Some(detail)) => write!(f, "ERR {} {detail}", code.as_str()),
        }
    }
}

/// Parses one request line (without its line ending).
pub fn parse(line: &str) -> Result<Request, Response> {
    let line = line.trim_matches(' ');
    let (command, argument) = match line.split_once(' ') {
        Some((command, argument)) => (command, Some(argument.trim_start_matches(' '))),
        None => (line, None),
    };
    let is = |name: &str| command.eq_ignore_ascii_case(name);
    if is("PING") {
        no_argument("PING", argument).map(|()| Request::Ping)
    } else if is("ECHO") {
        Ok(Request::Echo(argument.unwrap_or_default().to_owned()))
    } else if is("SLEEP") {
        number("SLEEP", argument, MAX_SLEEP_MS).map(|ms| Request::Sleep(Duration::from_millis(ms)))
    } else if is("PRIMES") {
        number("PRIMES", argument, MAX_PRIMES_N).map(Request::Primes)
    } else if is("STATS") {
        no_argument("STATS", argument).map(|()| Request::Stats)
    } else if is("QUIT") {
        no_argument("QUIT", argument).map(|()| Request::Quit)
    } else if command.is_empty() {
        Err(Response::err_with(ErrorCode::UnknownCommand, "empty request"))
    } else {
        let shown: String = command.chars().take(MAX_DETAIL).collect();
        Err(Response::err_with(ErrorCode::UnknownCommand, shown))
    }
}

fn no_argument(command: &'static str, argument: Option<&str>) -> Result<(), Response> {
    match argument {
        None => Ok(()),
        Some(_) => Err(Response::err_with(ErrorCode::BadArgument, format!("{command} takes no argument"))),
    }
}

fn number(command: &'static str, argument: Option<&str>, max: u64) -> Result<u64, Response> {
    argument.and_then(|text| text.parse::<u64>().ok()).filter(|&value| value <= max).ok_or_else(|| {
        Response::err_with(ErrorCode::BadArgument, format!("{command} takes a number from 0 to {max}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(request: &str) -> String {
        match parse(request) {
            Ok(request) => format!("{request:?}"),
            Err(response) => response.to_string(),
        }
    }

    #[test]
    fn parses_every_command_case_insensitively() {
        assert_eq!(parse("PING"), Ok(Request::Ping));
        assert_eq!(parse("ping"), Ok(Request::Ping));
        assert_eq!(parse("Echo hello  world "), Ok(Request::Echo("hello  world".into())));
        assert_eq!(parse("ECHO"), Ok(Request::Echo(String::new())));
        assert_eq!(parse("sleep 250"), Ok(Request::Sleep(Duration::from_millis(250))));
        assert_eq!(parse("PRIMES 1000000000"), Ok(Request::Primes(1_000_000_000)));
        assert_eq!(parse("Stats"), Ok(Request::Stats));
        assert_eq!(parse("QUIT"), Ok(Request::Quit));
        assert_eq!(parse("  PING  "), Ok(Request::Ping));
    }

    #[test]
    fn refuses_bad_arguments_with_a_one_line_reason() {
        assert_eq!(line("SLEEP"), "ERR bad-argument SLEEP takes a number from 0 to 60000");
        assert_eq!(line("SLEEP 60001"), "ERR bad-argument SLEEP takes a number from 0 to 60000");
        assert_eq!(line("SLEEP -1"), "ERR bad-argument SLEEP takes a number from 0 to 60000");
        assert_eq!(line("PRIMES 1000000001"), "ERR bad-argument PRIMES takes a number from 0 to 1000000000");
        assert_eq!(
            line("PRIMES 99999999999999999999999"),
            "ERR bad-argument PRIMES takes a number from 0 to 1000000000"
        );
        assert_eq!(line("PING now"), "ERR bad-argument PING takes no argument");
        assert_eq!(line("QUIT 1"), "ERR bad-argument QUIT takes no argument");
    }

    #[test]
    fn refuses_unknown_commands_with_a_bounded_detail() {
        assert_eq!(line("FLY me"), "ERR unknown-command FLY");
        assert_eq!(line(""), "ERR unknown-command empty request");
        let long = "X".repeat(1000);
        assert_eq!(line(&long), format!("ERR unknown-command {}", "X".repeat(MAX_DETAIL)));
    }

    #[test]
    fn formats_responses() {
        assert_eq!(Response::ok("PONG").to_string(), "OK PONG");
        assert_eq!(Response::ok("").to_string(), "OK");
        assert_eq!(Response::err(ErrorCode::Busy).to_string(), "ERR busy");
        assert_eq!(
            Response::err_with(ErrorCode::LineTooLong, "max 10").to_string(),
            "ERR line-too-long max 10"
        );
        let wire: Vec<_> = ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
        assert_eq!(
            wire,
            [
                "unknown-command",
                "bad-argument",
                "bad-request",
                "line-too-long",
                "busy",
                "timeout",
                "internal",
                "shutting-down"
            ]
        );
    }
}
