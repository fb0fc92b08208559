//! The client: one connection, one request at a time or pipelined, every step under a timeout.
//!
//! `service call` uses it, and so do the end-to-end tests and the benchmark; over TCP, or TLS
//! ([`Client::connect_tls`]). Connecting, the TLS handshake included, is bounded by a connect
//! timeout (a dropped SYN otherwise waits for the OS, minutes on Linux), each request by a
//! request timeout. The client is generic over the stream, so tests run it over
//! `tokio::io::duplex`, or inject a connector that never completes.
//!
//! Waiting for an answer is not cancel-safe as a whole: after a timeout the answer may still
//! arrive and would be read as the answer to the *next* request. So a timed-out client is
//! closed, and every later call returns [`ClientError::Closed`]. An answer is a whole line: bytes
//! cut off by the server closing before the newline are [`ClientError::Truncated`], not an answer.
//!
//! A subscribed connection also receives pushed lines (`MSG`, `LAG`, `GAP`) between its answers.
//! The client keeps them apart: answers go to the request that waits for them, pushes into a
//! bounded queue that [`Client::next_push`] reads.

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::time;
#[cfg(feature = "tls")]
use tokio_rustls::client::TlsStream;
use tokio_util::bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder, Framed, LinesCodec, LinesCodecError};

use crate::protocol::{has_line_break, is_push};
#[cfg(feature = "tls")]
use crate::tls::ClientTls;

pub mod load;

/// The longest answer line the client accepts: the server's answers are bounded by its
/// `max_line` (an answer may repeat its request), so anything longer is not our server.
pub(crate) const MAX_RESPONSE: usize = 1 << 20;
/// Pushed lines kept while answers are awaited; past it, the oldest are dropped.
const MAX_KEPT_PUSHES: usize = 1024;

/// A request word as `call` and `load` take it (their parser): one with a line break is
/// refused, for the reason [`ClientError::LineBreak`] gives.
pub(crate) fn request_word(word: &str) -> Result<String, String> {
    if has_line_break(word) { Err(ClientError::LineBreak.to_string()) } else { Ok(word.to_owned()) }
}

/// Why a call failed. Each is one line when displayed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection was not made in time.
    #[error("connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    /// The connection was refused or failed.
    #[error("cannot connect: {0}")]
    Connect(io::Error),
    /// The answer did not arrive in time; the client is closed.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The server closed the connection before answering.
    #[error("connection closed by the server")]
    Closed,
    /// The server closed the connection in the middle of an answer line.
    #[error("connection closed in the middle of an answer")]
    Truncated,
    /// A request holds a line break, so it would reach the server as several requests and
    /// their answers would be taken for later requests'.
    #[error("a request cannot contain a line break")]
    LineBreak,
    /// An answer line was longer than `MAX_RESPONSE` (1 MiB).
    #[error("answer longer than {MAX_RESPONSE} bytes")]
    ResponseTooLong,
    /// Reading or writing failed.
    #[error("connection failed: {0}")]
    Io(io::Error),
}

impl From<LinesCodecError> for ClientError {
    fn from(error: LinesCodecError) -> Self {
        match error {
            LinesCodecError::MaxLineLengthExceeded => Self::ResponseTooLong,
            LinesCodecError::Io(error) => Self::Io(error),
        }
    }
}

impl From<io::Error> for ClientError {
    fn from(error: io::Error) -> Self {
        Self::Io(error)
    }
}

/// Answer lines, bounded by [`MAX_RESPONSE`]; unlike `LinesCodec`, bytes left without a newline
/// at EOF are an error, not a last line.
struct AnswerCodec(LinesCodec);

impl Decoder for AnswerCodec {
    type Item = String;
    type Error = ClientError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<String>, ClientError> {
        Ok(self.0.decode(src)?)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<String>, ClientError> {
        match self.0.decode(src)? {
            Some(line) => Ok(Some(line)),
            None if src.is_empty() => Ok(None),
            None => Err(ClientError::Truncated),
        }
    }
}

impl Encoder<&str> for AnswerCodec {
    type Error = ClientError;

    fn encode(&mut self, request: &str, dst: &mut BytesMut) -> Result<(), ClientError> {
        Ok(self.0.encode(request, dst)?)
    }
}

/// A connection to the service.
pub struct Client<S = TcpStream> {
    /// `None` once closed by a timeout or an error.
    connection: Option<Framed<S, AnswerCodec>>,
    request_timeout: Duration,
    /// Pushed lines read while waiting for answers, oldest first.
    pushes: VecDeque<String>,
}

impl Client<TcpStream> {
    /// Connects over TCP (resolving `addr` counts against `connect_timeout`).
    pub async fn connect(
        addr: impl ToSocketAddrs,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Result<Self, ClientError> {
        let client = Self::connect_with(TcpStream::connect(addr), connect_timeout, request_timeout).await?;
        if let Some(connection) = &client.connection {
            // Requests are small and each waits for its answer: do not let Nagle hold them back.
            connection.get_ref().set_nodelay(true).map_err(ClientError::Connect)?;
        }
        Ok(client)
    }
}

#[cfg(feature = "tls")]
impl Client<TlsStream<TcpStream>> {
    /// Connects over TLS: TCP, then the handshake, both within `connect_timeout`. The server's
    /// certificate must carry the name `tls` gives, or the host of `addr`.
    pub async fn connect_tls(
        addr: &str,
        tls: &ClientTls,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Result<Self, ClientError> {
        let connector = async {
            let server_name = tls.server_name_for(addr)?;
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            tls.handshake(stream, server_name).await
        };
        Self::connect_with(connector, connect_timeout, request_timeout).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Connects with any connector future, bounded by `connect_timeout`.
    pub async fn connect_with(
        connector: impl Future<Output = io::Result<S>>,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Result<Self, ClientError> {
        match time::timeout(connect_timeout, connector).await {
            Ok(Ok(stream)) => Ok(Self::new(stream, request_timeout)),
            Ok(Err(error)) => Err(ClientError::Connect(error)),
            Err(_elapsed) => Err(ClientError::ConnectTimeout(connect_timeout)),
        }
    }

    /// A client over a stream that is already connected.
    pub fn new(stream: S, request_timeout: Duration) -> Self {
        let codec = AnswerCodec(LinesCodec::new_with_max_length(MAX_RESPONSE));
        Self { connection: Some(Framed::new(stream, codec)), request_timeout, pushes: VecDeque::new() }
    }

    /// Sends one request and returns its answer line (`OK ...` or `ERR ...`).
    pub async fn request(&mut self, request: &str) -> Result<String, ClientError> {
        self.pipeline([request]).await.map(|mut answers| answers.remove(0))
    }

    /// Sends every request in one write, then reads as many answers, in order, all within one
    /// request timeout. A request with a line break is refused before anything is sent.
    pub async fn pipeline<'a>(
        &mut self,
        requests: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<String>, ClientError> {
        let requests: Vec<&str> = requests.into_iter().collect();
        if requests.iter().any(|request| has_line_break(request)) {
            return Err(ClientError::LineBreak);
        }
        let timeout = self.request_timeout;
        let connection = self.connection.as_mut().ok_or(ClientError::Closed)?;
        let pushes = &mut self.pushes;
        let exchange = async {
            for request in &requests {
                connection.feed(*request).await?;
            }
            SinkExt::<&str>::flush(connection).await?;
            let mut answers = Vec::with_capacity(requests.len());
            while answers.len() < requests.len() {
                let line = connection.next().await.ok_or(ClientError::Closed)??;
                if is_push(&line) {
                    if pushes.len() == MAX_KEPT_PUSHES {
                        pushes.pop_front();
                    }
                    pushes.push_back(line);
                } else {
                    answers.push(line);
                }
            }
            Ok(answers)
        };
        let result = match time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_elapsed) => Err(ClientError::Timeout(timeout)),
        };
        if result.is_err() {
            // Late answers would be taken for the next request's: this connection is done.
            self.connection = None;
        }
        result
    }
}

impl<S> Client<S> {
    /// The stream under the client (a TLS stream tells what the server showed); `None` once
    /// the client is closed.
    pub fn get_ref(&self) -> Option<&S> {
        self.connection.as_ref().map(Framed::get_ref)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// The next pushed line: one kept while answers were awaited, or the next one to arrive,
    /// waiting at most `timeout` (`None`: until one comes or the server closes).
    pub async fn next_push(&mut self, timeout: Option<Duration>) -> Result<String, ClientError> {
        if let Some(line) = self.pushes.pop_front() {
            return Ok(line);
        }
        let connection = self.connection.as_mut().ok_or(ClientError::Closed)?;
        let next = async { connection.next().await.ok_or(ClientError::Closed)? };
        let result = match timeout {
            Some(timeout) => time::timeout(timeout, next).await.unwrap_or(Err(ClientError::Timeout(timeout))),
            None => next.await,
        };
        if result.is_err() {
            self.connection = None;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_request_with_a_line_break_is_refused_before_sending() {
        let (client_end, mut server_end) = tokio::io::duplex(64);
        let mut client = Client::new(client_end, Duration::from_secs(1));
        assert!(matches!(client.request("PUBLISH t a\nPING").await, Err(ClientError::LineBreak)));
        assert!(matches!(client.request("PUBLISH t a\r").await, Err(ClientError::LineBreak)));
        drop(client);
        // Nothing reached the server: it reads EOF straight away.
        let mut received = Vec::new();
        let read = tokio::io::AsyncReadExt::read_buf(&mut server_end, &mut received).await.unwrap();
        assert_eq!(read, 0);
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn pushed_lines_are_kept_apart_from_answers() {
        let (client_end, mut server_end) = tokio::io::duplex(256);
        let mut client = Client::new(client_end, Duration::from_secs(1));
        let server = async {
            let lines = b"MSG t one\nOK 1\nLAG t 3\nMSG t two\nOK PONG\nMSG t three\n";
            tokio::io::AsyncWriteExt::write_all(&mut server_end, lines).await.unwrap();
            server_end
        };
        let (answers, _server_end) = tokio::join!(client.pipeline(["SUBSCRIBE t", "PING"]), server);
        assert_eq!(answers.unwrap(), ["OK 1", "OK PONG"]);
        for expected in ["MSG t one", "LAG t 3", "MSG t two", "MSG t three"] {
            assert_eq!(client.next_push(Some(Duration::from_secs(1))).await.unwrap(), expected);
        }
        assert!(matches!(client.next_push(Some(Duration::from_secs(1))).await, Err(ClientError::Timeout(_))));
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn an_answer_cut_off_before_its_newline_is_an_error() {
        let (client_end, mut server_end) = tokio::io::duplex(64);
        let mut client = Client::new(client_end, Duration::from_secs(1));
        let server = async {
            tokio::io::AsyncWriteExt::write_all(&mut server_end, b"OK PON").await.unwrap();
            drop(server_end);
        };
        let (answer, ()) = tokio::join!(client.request("PING"), server);
        assert!(matches!(answer, Err(ClientError::Truncated)), "{answer:?}");
    }
}
