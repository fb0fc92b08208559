//! Protocol v1's wire format: the `OK`/`ERR` answer line and its error codes, the `MSG`, `LAG`
//! and `GAP` lines pushed to subscribers, how a client tells them apart, and the rules for what
//! goes into a line (a topic's name; no line break in a request), which the commands, the
//! relay, the CLI and the client share. Each line's words are written once, here
//! (`Response::words`), for `Display` and for the codec (`codec.rs`), which frames the lines.
//!
//! One request per line, one answer line per request, in request order; pushed lines go between
//! the answers, and start with a word no answer starts with. What each request means lives in
//! [`crate::commands`], one file per command; this module names no command, so adding or
//! removing one never touches it.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

pub(crate) mod codec;

/// The error codes of protocol v1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The command is not one of the registry's.
    UnknownCommand,
    /// The command is known but its argument is missing, extra or out of range.
    BadArgument,
    /// The line is not UTF-8.
    BadRequest,
    /// The line is longer than `max_line`; the connection closes after this answer.
    LineTooLong,
    /// A bound is reached (load shedding): the CPU queue, the connection limit, the topics, or
    /// the fan-out relay's queue. Try again later.
    Busy,
    /// The job missed its deadline.
    Timeout,
    /// The job failed inside the server (it panicked); the server keeps running.
    Internal,
    /// The server is shutting down and will not finish this request.
    ShuttingDown,
    /// A service it needs is out of reach (the fan-out broker): refused at once, try again later.
    Unavailable,
}

impl ErrorCode {
    /// Every code of protocol v1.
    pub const ALL: [Self; 9] = [
        Self::UnknownCommand,
        Self::BadArgument,
        Self::BadRequest,
        Self::LineTooLong,
        Self::Busy,
        Self::Timeout,
        Self::Internal,
        Self::ShuttingDown,
        Self::Unavailable,
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
            Self::Unavailable => "unavailable",
        }
    }
}

/// One answer line, without its newline.
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

    /// `ERR <code> <detail>`. A detail may quote a peer's bytes, so it is [`escaped`]: a peer
    /// cannot write terminal escapes into another program's output, or a line break into the
    /// protocol.
    pub fn err_with(code: ErrorCode, detail: impl Into<Cow<'static, str>>) -> Self {
        let detail = match escaped(&detail.into()) {
            Cow::Borrowed(same) => Cow::Owned(same.to_owned()),
            Cow::Owned(escaped) => Cow::Owned(escaped),
        };
        Self::Err(code, Some(detail))
    }

    /// The error code's word of an `ERR` answer (a trace's outcome); `None` for `OK`.
    pub(crate) fn error_code(&self) -> Option<&'static str> {
        match self {
            Self::Ok(_) => None,
            Self::Err(code, _) => Some(code.as_str()),
        }
    }

    /// Calls `line` with the answer's words: the line is them with one space between each two.
    /// The one place an answer's form is written, for `Display` and the codec alike (but for
    /// `OK <text>`, which the codec writes itself, held to this by a test of its own).
    pub(crate) fn words<R>(&self, line: impl FnOnce(&[&str]) -> R) -> R {
        match self {
            Self::Ok(text) if text.is_empty() => line(&[OK]),
            Self::Ok(text) => line(&[OK, text]),
            Self::Err(code, None) => line(&[ERR, code.as_str()]),
            Self::Err(code, Some(detail)) => line(&[ERR, code.as_str(), detail]),
        }
    }
}

/// `text` with every character that could act on a terminal or hide in it written as its Rust
/// escape (`\u{1b}`, `\t`, `\u{202e}`): control characters (escape sequences, line breaks), and
/// the invisible format characters that reorder or hide text (bidi overrides and isolates,
/// zero-width spaces and joiners; CVE-2021-42574, "Trojan Source"). Anything else is unchanged.
pub fn escaped(text: &str) -> Cow<'_, str> {
    fn hides(c: char) -> bool {
        c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
    }
    if text.chars().any(hides) {
        Cow::Owned(
            text.chars()
                .map(|c| if hides(c) { c.escape_default().to_string() } else { c.to_string() })
                .collect(),
        )
    } else {
        Cow::Borrowed(text)
    }
}

/// Whether `text` holds a line break (`\n` or `\r`, which the codec also takes as one): sent as
/// one request, it would reach the server as several. The CLI and the client refuse it.
pub(crate) fn has_line_break(text: &str) -> bool {
    text.contains(['\n', '\r'])
}

/// The longest topic name, in bytes.
pub const MAX_TOPIC: usize = 64;

/// Whether `word` is a topic name: 1 to [`MAX_TOPIC`] printable ASCII characters (`!` to `~`; a
/// space ends it, as it ends any word). Topic names reach other peers' screens in `MSG` lines,
/// so nothing in them can move a cursor, reorder text (bidi overrides) or hide (zero-width
/// characters). What a subscriber gives and what the broker relays are checked by it alike.
pub fn is_topic(word: &str) -> bool {
    !word.is_empty() && word.len() <= MAX_TOPIC && word.bytes().all(|b| b.is_ascii_graphic())
}

/// The first word of an answer that succeeded.
const OK: &str = "OK";
/// The first word of an answer that did not.
const ERR: &str = "ERR";
/// The first words of the pushed lines: a message, a count of missed ones, a gap.
const PUSHES: [&str; 3] = [MSG, LAG, GAP];
const MSG: &str = "MSG";
const LAG: &str = "LAG";
const GAP: &str = "GAP";

/// Whether an answer is `OK`: exactly `OK`, or `OK` and a space (`OKAY` is not).
pub fn is_ok(answer: &str) -> bool {
    answer.strip_prefix(OK).is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
}

/// Whether a line is pushed by the server (a subscription's message), not an answer: every
/// pushed line has a word after its first.
pub fn is_push(line: &str) -> bool {
    PUSHES.iter().any(|word| line.strip_prefix(word).is_some_and(|rest| rest.starts_with(' ')))
}

/// Writes `words` to `f` with one space between each two.
fn write_words(f: &mut fmt::Formatter<'_>, words: &[&str]) -> fmt::Result {
    for (index, word) in words.iter().enumerate() {
        if index > 0 {
            f.write_str(" ")?;
        }
        f.write_str(word)?;
    }
    Ok(())
}

/// A line pushed to a subscribed connection, between its answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Push {
    /// `MSG <topic> <text>`.
    Message(Arc<str>, smol_str::SmolStr),
    /// `LAG <topic> <missed>`: the subscriber fell behind and this many messages are gone.
    Lagged(Arc<str>, u64),
    /// `GAP <topic>`: messages of the topic may be missing just before this line, how many
    /// cannot be known (the fan-out broker was out of reach).
    #[cfg_attr(
        not(feature = "redis"),
        allow(dead_code, reason = "only the relay sends it; the protocol keeps it")
    )]
    Gap(Arc<str>),
}

impl Push {
    /// Calls `line` with the pushed line's words, as [`Response::words`] does.
    pub(crate) fn words<R>(&self, line: impl FnOnce(&[&str]) -> R) -> R {
        match self {
            Self::Message(topic, text) => line(&[MSG, topic, text]),
            // Rare (a subscriber fell behind): the number's text is allocated.
            Self::Lagged(topic, missed) => line(&[LAG, topic, &missed.to_string()]),
            Self::Gap(topic) => line(&[GAP, topic]),
        }
    }
}

impl fmt::Display for Push {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.words(|words| write_words(f, words))
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.words(|words| write_words(f, words))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_answers() {
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
                "shutting-down",
                "unavailable"
            ]
        );
    }

    #[test]
    fn a_detail_never_carries_control_bytes() {
        let hostile = Response::err_with(ErrorCode::UnknownCommand, "\u{1b}[31mRED\r\0");
        assert_eq!(hostile.to_string(), r"ERR unknown-command \u{1b}[31mRED\r\u{0}");
        let tab = Response::err_with(ErrorCode::UnknownCommand, "PING\t");
        assert_eq!(tab.to_string(), r"ERR unknown-command PING\t");
    }

    #[test]
    fn pushes_and_answers_are_told_apart_by_their_first_word() {
        let message = Push::Message("news".into(), "OK hi".into()).to_string();
        let lagged = Push::Lagged("news".into(), 3).to_string();
        let gap = Push::Gap("news".into()).to_string();
        assert_eq!(
            (message.as_str(), lagged.as_str(), gap.as_str()),
            ("MSG news OK hi", "LAG news 3", "GAP news")
        );
        assert!(is_push(&message) && is_push(&lagged) && is_push(&gap));
        for answer in [Response::ok("MSG"), Response::err(ErrorCode::Busy)] {
            assert!(!is_push(&answer.to_string()), "{answer}");
        }
        assert!(is_ok("OK") && is_ok("OK PONG") && !is_ok("OKAY") && !is_ok("ERR busy"));
    }

    #[test]
    fn escaping_leaves_plain_text_alone_and_shows_what_hides() {
        assert!(matches!(escaped("MSG news héllo wörld"), Cow::Borrowed(_)));
        assert_eq!(escaped("\u{1b}]0;pwned\u{7}\u{1b}[2J"), r"\u{1b}]0;pwned\u{7}\u{1b}[2J");
        assert_eq!(escaped("admin\u{202e}gnp.exe"), r"admin\u{202e}gnp.exe");
        assert_eq!(escaped("a\u{200b}b\u{feff}"), r"a\u{200b}b\u{feff}");
    }
}
