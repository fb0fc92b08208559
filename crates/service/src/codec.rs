//! Framing: newline-delimited UTF-8 with a bound on the line length.
//!
//! [`RequestCodec`] is tokio-util's [`LinesCodec`] with a maximum length (the unbounded
//! `LinesCodec::new()` buffers whatever a peer sends until it sends a newline: a memory DoS, as
//! its docs warn). It changes two things for the protocol:
//!
//! * A line that is not UTF-8 is a [`Frame::NotUtf8`] value, not an error, so the connection
//!   answers `ERR bad-request` and goes on. (`LinesCodec` has already consumed the line when it
//!   reports the bad bytes, so the stream stays in sync.)
//! * A line over the limit is [`FrameError::LineTooLong`]: the connection answers and closes, and
//!   the codec never holds more than the limit plus one read of the peer's bytes.
//!
//! `\r\n` is accepted as a line ending (`LinesCodec` strips the `\r`). Responses are encoded
//! straight into the write buffer with a trailing `\n`.

use std::fmt::Write as _;
use std::io;

use tokio_util::bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder, LinesCodec, LinesCodecError};

use crate::protocol::Response;

/// One decoded request line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete UTF-8 line, without its line ending.
    Line(String),
    /// A complete line that is not UTF-8.
    NotUtf8,
}

/// Why decoding stopped. After either, the stream yields no more frames.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A line longer than the limit.
    #[error("request line longer than {0} bytes")]
    LineTooLong(usize),
    /// Reading from the peer failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The protocol's codec; see the module docs.
#[derive(Debug, Clone)]
pub struct RequestCodec {
    lines: LinesCodec,
    max_line: usize,
}

impl RequestCodec {
    /// A codec that refuses lines longer than `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        Self { lines: LinesCodec::new_with_max_length(max_line), max_line }
    }

    fn frame(&self, decoded: Result<Option<String>, LinesCodecError>) -> Result<Option<Frame>, FrameError> {
        match decoded {
            Ok(line) => Ok(line.map(Frame::Line)),
            Err(LinesCodecError::MaxLineLengthExceeded) => Err(FrameError::LineTooLong(self.max_line)),
            // Decoding does no I/O: the only error LinesCodec raises here is the UTF-8 check.
            Err(LinesCodecError::Io(error)) if error.kind() == io::ErrorKind::InvalidData => {
                Ok(Some(Frame::NotUtf8))
            }
            Err(LinesCodecError::Io(error)) => Err(FrameError::Io(error)),
        }
    }
}

impl Decoder for RequestCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let decoded = self.lines.decode(src);
        self.frame(decoded)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let decoded = self.lines.decode_eof(src);
        self.frame(decoded)
    }
}

impl Encoder<Response> for RequestCodec {
    type Error = io::Error;

    fn encode(&mut self, response: Response, dst: &mut BytesMut) -> Result<(), io::Error> {
        writeln!(dst, "{response}").map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &mut RequestCodec, input: &[u8]) -> Vec<Result<Frame, String>> {
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
        let frames = decode_all(&mut codec, b"PING\r\nECHO a b\nPAR");
        assert_eq!(frames, [Ok(Frame::Line("PING".into())), Ok(Frame::Line("ECHO a b".into()))]);
    }

    #[test]
    fn a_line_that_is_not_utf8_is_a_frame_and_the_next_line_still_decodes() {
        let mut codec = RequestCodec::new(16);
        let frames = decode_all(&mut codec, b"\xff\xfe\nPING\n");
        assert_eq!(frames, [Ok(Frame::NotUtf8), Ok(Frame::Line("PING".into()))]);
    }

    #[test]
    fn a_line_over_the_limit_is_an_error_and_memory_stays_bounded() {
        let mut codec = RequestCodec::new(8);
        let mut buffer = BytesMut::from(&b"0123456789"[..]);
        assert!(matches!(codec.decode(&mut buffer), Err(FrameError::LineTooLong(8))));
        // A line of exactly the limit is fine.
        let mut codec = RequestCodec::new(8);
        assert_eq!(decode_all(&mut codec, b"01234567\n"), [Ok(Frame::Line("01234567".into()))]);
    }

    #[test]
    fn encodes_a_response_with_a_newline() {
        let mut codec = RequestCodec::new(8);
        let mut buffer = BytesMut::new();
        codec.encode(Response::ok("PONG"), &mut buffer).unwrap();
        assert_eq!(&buffer[..], b"OK PONG\n");
    }
}
