//! Framing: newline-delimited lines with a bound on their length, read in place.
//!
//! [`RequestCodec::next_line`] finds the next complete line in the connection's read buffer
//! and says where it lies; the connection reads it there, and takes the lines of a burst off
//! the buffer together. No line is copied or split off (tokio-util's `AnyDelimiterCodec`, used
//! before, hands each one out as `Bytes`, an atomic reference count taken and dropped per
//! request, and looks for the delimiter one byte at a time: together about 200 of a pipelined
//! PING's 1,000 instructions, by the template's instruction count under callgrind, at depth 16).
//! A byte loop, then `memchr`, finds the newline ([`SHORT_LINE`]). The bound is the one the
//! `LinesCodec::new` docs warn about: without it, a decoder buffers whatever a peer sends until
//! it sends a newline, a memory DoS.
//! The protocol's small print:
//!
//! * `\n` ends a line; one `\r` before it is dropped, and does not count toward `max_line`.
//! * A line over `max_line` bytes is [`LineTooLong`]: the connection answers and closes, and
//!   the buffer never holds more than the limit plus one read of the peer's bytes.
//! * A line that is not UTF-8 is a line all the same, not an error: `commands::start` answers
//!   `ERR bad-request` and the connection goes on with the next line.
//! * At EOF, bytes after the last newline are one more line.
//!
//! Answers and pushed lines are encoded straight into the write buffer, from the words that
//! [`Response::words`] and [`Push::words`] give (their form is written there once), with a
//! trailing `\n`; the most common line, `OK <text>`, is written by the encoder itself, and a
//! test holds every encoded line to `Display`.

use std::io;

use tokio_util::bytes::BytesMut;
use tokio_util::codec::Encoder;

use super::{Push, Response};

/// Where the next complete line lies in the read buffer: its text is `buffer[..text]`, and with
/// its line ending it takes the first `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) text: usize,
    pub(crate) len: usize,
}

/// A line longer than the limit; after it, the connection reads no more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("request line longer than {0} bytes")]
pub(crate) struct LineTooLong(pub(crate) usize);

/// The protocol's codec; see the module docs.
#[derive(Debug, Clone)]
pub(crate) struct RequestCodec {
    max_line: usize,
    /// How much of the buffer's start is known to hold no newline: a line that arrives in many
    /// reads is searched once, not once per read.
    searched: usize,
}

impl RequestCodec {
    /// A codec that refuses lines longer than `max_line` bytes (not counting `\r\n`).
    pub(crate) fn new(max_line: usize) -> Self {
        Self { max_line, searched: 0 }
    }

    /// The first complete line in `buffer`, which the caller takes off it (`frame.len` bytes)
    /// before asking for the next. With `eof`, what follows the last newline is a line too.
    pub(crate) fn next_line(&mut self, buffer: &[u8], eof: bool) -> Result<Option<Frame>, LineTooLong> {
        // The longest a line may take with its `\r\n`: no need to look further for the newline.
        let window = buffer.len().min(self.max_line.saturating_add(2));
        let from = self.searched.min(window);
        let (end, len) = match find_newline(&buffer[from..window]) {
            Some(at) => (from + at, from + at + 1),
            None if window > self.max_line.saturating_add(1) => return Err(LineTooLong(self.max_line)),
            None if eof && !buffer.is_empty() => (buffer.len(), buffer.len()),
            None => {
                self.searched = window;
                return Ok(None);
            }
        };
        self.searched = 0;
        let text = if end > 0 && buffer[end - 1] == b'\r' { end - 1 } else { end };
        if text > self.max_line {
            return Err(LineTooLong(self.max_line));
        }
        Ok(Some(Frame { text, len }))
    }
}

/// How many bytes a newline is looked for one at a time before `memchr` takes over: most
/// request lines are shorter (`PING`, `SLEEP 10`), and for them `memchr`'s vector setup cost
/// more than the whole search (about 70 of a pipelined PING's instructions, against 20).
const SHORT_LINE: usize = 32;

/// Where the first `\n` in `bytes` is: a byte loop over the first [`SHORT_LINE`] bytes, then
/// `memchr`.
fn find_newline(bytes: &[u8]) -> Option<usize> {
    let (head, rest) = bytes.split_at(bytes.len().min(SHORT_LINE));
    match head.iter().position(|&byte| byte == b'\n') {
        Some(at) => Some(at),
        None => memchr::memchr(b'\n', rest).map(|at| SHORT_LINE + at),
    }
}

// Both encoders copy the pieces of a line in, where `writeln!` would run the formatting
// machinery: for PING that was about a sixth of the service's instructions per request, as
// callgrind counts them. The lines are the ones `Display` writes; a test below holds the two
// together.

impl Encoder<Response> for RequestCodec {
    type Error = io::Error;

    #[inline]
    fn encode(&mut self, response: Response, dst: &mut BytesMut) -> Result<(), io::Error> {
        match &response {
            // Most answers (`OK PONG`), written without the words' slice: the pieces of known
            // length are copied inline, and only the text by `memcpy` (about 50 of a pipelined
            // PING's instructions, by callgrind). The line is `words`' `[OK, text]`, which the
            // test below holds it to.
            Response::Ok(text) if !text.is_empty() => {
                dst.reserve(text.len() + 4);
                dst.extend_from_slice(b"OK ");
                dst.extend_from_slice(text.as_bytes());
                dst.extend_from_slice(b"\n");
            }
            _ => response.words(|words| line(dst, words)),
        }
        Ok(())
    }
}

impl Encoder<Push> for RequestCodec {
    type Error = io::Error;

    fn encode(&mut self, push: Push, dst: &mut BytesMut) -> Result<(), io::Error> {
        push.words(|words| line(dst, words));
        Ok(())
    }
}

/// Appends the line of `words` to `dst`: a space between each two, and a newline.
fn line(dst: &mut BytesMut, words: &[&str]) {
    let Some((first, rest)) = words.split_first() else { return dst.extend_from_slice(b"\n") };
    dst.reserve(words.iter().map(|word| word.len() + 1).sum());
    dst.extend_from_slice(first.as_bytes());
    for word in rest {
        dst.extend_from_slice(b" ");
        dst.extend_from_slice(word.as_bytes());
    }
    dst.extend_from_slice(b"\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line `input` holds (and, with `eof`, its last unterminated one), taken off one
    /// after the other as the connection does; an error ends the list.
    fn lines(codec: &mut RequestCodec, input: &[u8], eof: bool) -> Vec<Result<Vec<u8>, String>> {
        let mut buffer = BytesMut::from(input);
        let mut lines = Vec::new();
        loop {
            match codec.next_line(&buffer, eof) {
                Ok(Some(frame)) => {
                    lines.push(Ok(buffer[..frame.text].to_vec()));
                    let _taken = buffer.split_to(frame.len);
                }
                Ok(None) => return lines,
                Err(error) => {
                    lines.push(Err(error.to_string()));
                    return lines;
                }
            }
        }
    }

    fn ok(line: &[u8]) -> Result<Vec<u8>, String> {
        Ok(line.to_vec())
    }

    #[test]
    fn a_newline_is_found_on_either_side_of_the_short_line_search() {
        for at in [0, 1, SHORT_LINE - 1, SHORT_LINE, SHORT_LINE + 1, 100] {
            let mut bytes = vec![b'x'; at];
            bytes.extend_from_slice(b"\nyy\n");
            assert_eq!(find_newline(&bytes), Some(at), "newline at {at}");
            assert_eq!(find_newline(&bytes[..at]), None, "no newline in {at} bytes");
        }
    }

    #[test]
    fn splits_lines_and_accepts_crlf() {
        let frames = lines(&mut RequestCodec::new(16), b"PING\r\nPUBLISH t a b\nPAR", false);
        assert_eq!(frames, [ok(b"PING"), ok(b"PUBLISH t a b")]);
        let at_eof = lines(&mut RequestCodec::new(16), b"PING\r\nPAR\r", true);
        assert_eq!(at_eof, [ok(b"PING"), ok(b"PAR")], "at EOF, the rest is a line");
    }

    #[test]
    fn only_one_carriage_return_is_part_of_the_line_ending() {
        let frames = lines(&mut RequestCodec::new(16), b"A\r\r\nB\rC\n", false);
        assert_eq!(frames, [ok(b"A\r"), ok(b"B\rC")]);
    }

    #[test]
    fn a_line_that_is_not_utf8_is_a_line_and_the_next_line_still_decodes() {
        let frames = lines(&mut RequestCodec::new(16), b"\xff\xfe\nPING\n", false);
        assert_eq!(frames, [ok(b"\xff\xfe"), ok(b"PING")]);
    }

    #[test]
    fn a_line_in_pieces_is_found_when_its_newline_comes() {
        let mut codec = RequestCodec::new(16);
        let mut buffer = BytesMut::new();
        for piece in [&b"PUB"[..], b"LISH t", b" a b"] {
            buffer.extend_from_slice(piece);
            assert_eq!(codec.next_line(&buffer, false), Ok(None));
        }
        buffer.extend_from_slice(b"\r\nPING\n");
        assert_eq!(codec.next_line(&buffer, false), Ok(Some(Frame { text: 13, len: 15 })));
        let _taken = buffer.split_to(15);
        assert_eq!(
            codec.next_line(&buffer, false),
            Ok(Some(Frame { text: 4, len: 5 })),
            "searched from the start again"
        );
    }

    #[test]
    fn the_limit_counts_the_line_without_its_crlf() {
        let refused = [Err("request line longer than 8 bytes".to_owned())];
        assert_eq!(lines(&mut RequestCodec::new(8), b"01234567\r\n", false), [ok(b"01234567")]);
        assert_eq!(lines(&mut RequestCodec::new(8), b"012345678\n", false), refused);
        assert_eq!(lines(&mut RequestCodec::new(8), b"\xff12345678\n", false), refused);
        assert_eq!(lines(&mut RequestCodec::new(8), b"012345678", true), refused, "the last line too");
        // No newline in sight: refused once the buffer passes the limit, without waiting for one.
        assert_eq!(lines(&mut RequestCodec::new(8), b"01234567\r", false), [], "its newline may still come");
        assert_eq!(lines(&mut RequestCodec::new(8), b"0123456789", false), refused);
        let mut codec = RequestCodec::new(8);
        assert_eq!(codec.next_line(b"0123", false), Ok(None));
        assert_eq!(codec.next_line(b"0123456789", false), Err(LineTooLong(8)), "in pieces too");
    }

    #[test]
    fn encodes_a_response_with_a_newline() {
        let mut codec = RequestCodec::new(8);
        let mut buffer = BytesMut::new();
        codec.encode(Response::ok("PONG"), &mut buffer).unwrap();
        assert_eq!(&buffer[..], b"OK PONG\n");
    }

    #[test]
    fn every_encoded_line_is_its_display_and_a_newline() {
        use crate::protocol::ErrorCode;
        let mut codec = RequestCodec::new(8);
        let responses = [
            Response::ok(""),
            Response::ok("PONG"),
            Response::err(ErrorCode::Busy),
            Response::err_with(ErrorCode::BadArgument, "SLEEP takes a number"),
        ];
        for response in responses {
            let (mut buffer, line) = (BytesMut::from(&b"before\n"[..]), format!("before\n{response}\n"));
            codec.encode(response, &mut buffer).unwrap();
            assert_eq!(std::str::from_utf8(&buffer).unwrap(), line);
        }
        let pushes = [
            Push::Message("news".into(), "hello world".into()),
            Push::Message("news".into(), "".into()),
            Push::Lagged("news".into(), 12),
            Push::Gap("news".into()),
        ];
        for push in pushes {
            let (mut buffer, line) = (BytesMut::new(), format!("{push}\n"));
            codec.encode(push, &mut buffer).unwrap();
            assert_eq!(std::str::from_utf8(&buffer).unwrap(), line);
        }
    }
}
