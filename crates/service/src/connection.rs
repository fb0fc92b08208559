//! One connection: read request lines, answer them in order, enforce the per-connection bounds.
//!
//! [`Handler::run`] is generic over `AsyncRead + AsyncWrite`, so the same code serves a
//! `TcpStream` in production and a `tokio::io::duplex` stream in the paused-time tests.
//!
//! # Pipelining
//!
//! A client may send requests without waiting for answers. Each request's [`Reply`] goes into a
//! `FuturesOrdered`, which runs them concurrently and yields them in request order, at most
//! `max_in_flight` at once; past that the handler stops reading, and TCP flow control pushes back
//! on the client. Answers go into the write buffer and are flushed only when no further answer is
//! ready, so a burst of pipelined requests costs one read and one write system call, not one each
//! (tokio-rs/mini-redis flushes after every answer, which is simpler and much slower under
//! pipelining).
//!
//! # Timeouts
//!
//! * **Idle.** While nothing is in flight, a *complete* line must arrive within `idle_timeout` of
//!   the connection falling idle. The deadline is not pushed back by partial lines, so a peer
//!   trickling a byte at a time (slow loris) is cut off like a silent one; a connection waiting
//!   for a slow answer is not idle.
//! * **Write.** Every write and flush is bounded by `write_timeout`. A write that times out has
//!   sent an unknown part of its buffer (writes are not cancel-safe), so the connection is closed.
//!
//! Reading with `StreamExt::next` inside `select!` is cancel-safe: a partial line stays in the
//! codec's buffer (see the cancel-safety notes of `tokio::select!`).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::time::{self, Instant};
use tokio_util::codec::Framed;

use crate::codec::{Frame, FrameError, RequestCodec};
use crate::commands::{Commands, Reply, now};
use crate::config::Config;
use crate::protocol::{self, ErrorCode, Request, Response};
use crate::shutdown::Shutdown;
use crate::stats::Stats;

/// The per-connection bounds, from [`Config`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// See [`Config::idle_timeout`].
    pub idle_timeout: Duration,
    /// See [`Config::write_timeout`].
    pub write_timeout: Duration,
    /// See [`Config::max_line`].
    pub max_line: usize,
    /// See [`Config::max_in_flight`].
    pub max_in_flight: usize,
}

impl From<&Config> for Limits {
    fn from(config: &Config) -> Self {
        Self {
            idle_timeout: config.idle_timeout,
            write_timeout: config.write_timeout,
            max_line: config.max_line,
            max_in_flight: config.max_in_flight,
        }
    }
}

/// Why a connection ended other than by the peer's EOF, `QUIT`, a long line or shutdown.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// No complete request arrived in time while nothing was in flight.
    #[error("idle for {0:?} with no complete request")]
    Idle(Duration),
    /// A write or flush did not finish in time: the peer stopped reading.
    #[error("write not finished within {0:?}")]
    WriteTimeout(Duration),
    /// Reading from or writing to the peer failed (a reset, a broken pipe).
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Serves connections; one per service, cloned into each connection's task.
#[derive(Clone)]
pub struct Handler {
    limits: Limits,
    commands: Commands,
    stats: Arc<Stats>,
    shutdown: Shutdown,
}

type Connection<S> = Framed<S, RequestCodec>;

impl Handler {
    /// A handler with these bounds, running requests with `commands`.
    pub fn new(limits: Limits, commands: Commands, stats: Arc<Stats>, shutdown: Shutdown) -> Self {
        Self { limits, commands, stats, shutdown }
    }

    /// Serves one connection until the peer leaves, it sends `QUIT` or a line over the limit, a
    /// timeout fires, or shutdown drains it. Every answer due is written before a clean return.
    pub async fn run<S>(&self, stream: S) -> Result<(), ConnectionError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let _open = self.stats.connection();
        let mut connection = Framed::new(stream, RequestCodec::new(self.limits.max_line));
        let mut in_flight: FuturesOrdered<Reply> = FuturesOrdered::new();
        let mut reading = true;
        let idle = time::sleep(self.limits.idle_timeout);
        tokio::pin!(idle);

        while reading || !in_flight.is_empty() {
            tokio::select! {
                // Order matters: take in everything already readable first (up to the bound), so
                // that a pipelined burst is answered with one flush.
                biased;
                () = self.shutdown.drain.cancelled(), if reading => reading = false,
                frame = connection.next(), if reading && in_flight.len() < self.limits.max_in_flight => {
                    let (reply, keep_reading) = match frame {
                        Some(Ok(frame)) => self.reply_to(frame),
                        Some(Err(FrameError::LineTooLong(max))) => {
                            (now(Response::err_with(ErrorCode::LineTooLong, format!("max {max} bytes"))), false)
                        }
                        Some(Err(FrameError::Io(error))) => return Err(error.into()),
                        // EOF: the peer sent everything it will; answer it, then close.
                        None => {
                            reading = false;
                            continue;
                        }
                    };
                    in_flight.push_back(reply);
                    reading = keep_reading;
                }
                Some(response) = in_flight.next(), if !in_flight.is_empty() => {
                    self.write(&mut connection, response).await?;
                    while let Some(Some(response)) = in_flight.next().now_or_never() {
                        self.write(&mut connection, response).await?;
                    }
                    self.bounded(connection.flush()).await?;
                    if in_flight.is_empty() {
                        idle.as_mut().reset(Instant::now() + self.limits.idle_timeout);
                    }
                }
                () = &mut idle, if reading && in_flight.is_empty() => {
                    return Err(ConnectionError::Idle(self.limits.idle_timeout));
                }
            }
        }
        // Everything is answered and flushed: send EOF so the peer sees a clean close.
        self.bounded(connection.get_mut().shutdown()).await
    }

    /// The reply to one frame, and whether to keep reading after it.
    fn reply_to(&self, frame: Frame) -> (Reply, bool) {
        let line = match frame {
            Frame::Line(line) => line,
            Frame::NotUtf8 => return (now(Response::err_with(ErrorCode::BadRequest, "not UTF-8")), true),
        };
        match protocol::parse(&line) {
            // After QUIT's answer, the connection closes.
            Ok(request) => {
                let keep_reading = request != Request::Quit;
                (self.commands.execute(request), keep_reading)
            }
            Err(response) => (now(response), true),
        }
    }

    /// Adds `response` to the write buffer (which writes out if the buffer is full).
    async fn write<S>(
        &self,
        connection: &mut Connection<S>,
        response: Response,
    ) -> Result<(), ConnectionError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.bounded(connection.feed(response)).await
    }

    /// Runs a write operation under `write_timeout`.
    async fn bounded(&self, write: impl Future<Output = io::Result<()>>) -> Result<(), ConnectionError> {
        match time::timeout(self.limits.write_timeout, write).await {
            Ok(result) => result.map_err(ConnectionError::Io),
            Err(_elapsed) => Err(ConnectionError::WriteTimeout(self.limits.write_timeout)),
        }
    }
}

impl ConnectionError {
    /// Logs how the connection ended, once, at a level that matches: peers going away and idle
    /// timeouts are routine, a peer that stops reading is worth noticing.
    pub fn log(&self) {
        match self {
            Self::Idle(_) => tracing::debug!("closed: {self}"),
            Self::WriteTimeout(_) => tracing::info!("closed: {self}"),
            Self::Io(_) => tracing::debug!("closed: {self}"),
        }
    }
}
