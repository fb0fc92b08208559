//! Framing: newline-delimited UTF-8 with a bound on the line length.
//!
//! [`RequestCodec`] splits lines with tokio-util's `AnyDelimiterCodec`, given a maximum length
//! (without one, a codec buffers whatever a peer sends until it sends a newline: a memory DoS,
//! as the `LinesCodec::new` docs warn). On top of it, the protocol's small print:
//!
//! * `\n` ends a line; one `\r` before it is dropped, and does not count toward `max_line`.
//! * A line over `max_line` bytes is [`FrameError::LineTooLong`]: the connection answers and
//!   closes, and the codec never holds more than the limit plus one read of the peer's bytes.
//! * A line that is not UTF-8 is a line all the same, not an error: [`Line::text`] says so, and
//!   the connection answers `ERR bad-request` and goes on with the next line.
//!
//! Answers and pushed lines are encoded straight into the write buffer, from the words that
//! [`Response::words`] and [`Push::words`] give (their form is written there once), with a
//! trailing `\n`.

use std::io;

use tokio_util::bytes::{Bytes, BytesMut};
use tokio_util::codec::{AnyDelimiterCodec, AnyDelimiterCodecError, Decoder, Encoder};

use super::{Push, Response};

/// A complete request line, without its line ending. It shares the read buffer's memory: no
/// copy, no `String` per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line(Bytes);

impl Line {
    /// The line's text, or `None` if it is not UTF-8.
    ///
    /// Checked here, where the text is read, and not when the line is decoded too: the check
    /// of a short line costs more than its framing, and a `&str` kept from decoding would need
    /// `unsafe` (`from_utf8_unchecked`), which the workspace forbids.
    pub(crate) fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
}

#[cfg(test)]
impl From<&'static str> for Line {
    fn from(text: &'static str) -> Self {
        Self(Bytes::from_static(text.as_bytes()))
    }
}

/// Why decoding stopped. After it, the stream yields no more frames.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// A line longer than the limit.
    #[error("request line longer than {0} bytes")]
    LineTooLong(usize),
    /// Reading from the peer failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The protocol's codec; see the module docs.
#[derive(Debug, Clone)]
pub(crate) struct RequestCodec {
    lines: AnyDelimiterCodec,
    max_line: usize,
}

impl RequestCodec {
    /// A codec that refuses lines longer than `max_line` bytes (not counting `\r\n`).
    pub(crate) fn new(max_line: usize) -> Self {
        // One more byte for a `\r`; a longer line without one is refused in `frame`.
        let lines = AnyDelimiterCodec::new_with_max_length(
            b"\n".to_vec(),
            b"\n".to_vec(),
            max_line.saturating_add(1),
        );
        Self { lines, max_line }
    }

    fn frame(
        &self,
        decoded: Result<Option<Bytes>, AnyDelimiterCodecError>,
    ) -> Result<Option<Line>, FrameError> {
        let line = match decoded {
            Ok(Some(line)) => line,
            Ok(None) => return Ok(None),
            Err(AnyDelimiterCodecError::MaxChunkLengthExceeded) => {
                return Err(FrameError::LineTooLong(self.max_line));
            }
            Err(AnyDelimiterCodecError::Io(error)) => return Err(FrameError::Io(error)),
        };
        let line = if line.ends_with(b"\r") { line.slice(..line.len() - 1) } else { line };
        if line.len() > self.max_line {
            return Err(FrameError::LineTooLong(self.max_line));
        }
        Ok(Some(Line(line)))
    }
}

impl Decoder for RequestCodec {
    type Item = Line;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Line>, FrameError> {
        let decoded = self.lines.decode(src);
        self.frame(decoded)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Line>, FrameError> {
        let decoded = self.lines.decode_eof(src);
        self.frame(decoded)
    }
}

// Both encoders copy the pieces of a line in, where `writeln!` would run the formatting
// machinery: for PING that was about a sixth of the service's instructions per request, as
// callgrind counts them. The lines are the ones `Display` writes; a test below holds the two
// together.

impl Encoder<Response> for RequestCodec {
    type Error = io::Error;

    fn encode(&mut self, response: Response, dst: &mut BytesMut) -> Result<(), io::Error> {
        response.words(|words| line(dst, words));
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
    dst.reserve(words.iter().map(|word| word.len() + 1).sum());
    for (index, word) in words.iter().enumerate() {
        if index > 0 {
            dst.extend_from_slice(b" ");
        }
        dst.extend_from_slice(word.as_bytes());
    }
    dst.extend_from_slice(b"\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &mut RequestCodec, input: &[u8]) -> Vec<Result<Line, String>> {
        let mut buffer = BytesMut::from(input);
        let mut frames = Vec::new();
        loop {
            match codec.decode(&mut buffer) {
                Ok(Some(frame)) => frames.push(Ok(frame)),
                Ok(None) => return frames,
                Err(error) => {
                    frames.push(Err(error.to_string()));
                    return frames;
                }
            }
        }
    }

    #[test]
    fn splits_lines_and_accepts_crlf() {
        let mut codec = RequestCodec::new(16);
        let frames = decode_all(&mut codec, b"PING\r\nPUBLISH t a b\nPAR");
        assert_eq!(frames, [Ok("PING".into()), Ok("PUBLISH t a b".into())]);
    }

    #[test]
    fn only_one_carriage_return_is_part_of_the_line_ending() {
        let mut codec = RequestCodec::new(16);
        let frames = decode_all(&mut codec, b"A\r\r\nB\rC\n");
        assert_eq!(frames, [Ok("A\r".into()), Ok("B\rC".into())]);
    }

    #[test]
    fn a_line_that_is_not_utf8_is_a_line_and_the_next_line_still_decodes() {
        let mut codec = RequestCodec::new(16);
        let frames = decode_all(&mut codec, b"\xff\xfe\nPING\n");
        let texts: Vec<_> = frames.iter().map(|line| line.as_ref().unwrap().text()).collect();
        assert_eq!(texts, [None, Some("PING")]);
    }

    #[test]
    fn the_limit_counts_the_line_without_its_crlf() {
        let exactly = decode_all(&mut RequestCodec::new(8), b"01234567\r\n");
        assert_eq!(exactly, [Ok("01234567".into())]);
        let over = decode_all(&mut RequestCodec::new(8), b"012345678\n");
        assert_eq!(over, [Err("request line longer than 8 bytes".into())]);
        let over_invalid = decode_all(&mut RequestCodec::new(8), b"\xff12345678\n");
        assert_eq!(over_invalid, [Err("request line longer than 8 bytes".into())], "length is checked first");
        // No newline in sight: refused once the buffer passes the limit, without waiting for one.
        let mut buffer = BytesMut::from(&b"0123456789"[..]);
        assert!(matches!(RequestCodec::new(8).decode(&mut buffer), Err(FrameError::LineTooLong(8))));
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
