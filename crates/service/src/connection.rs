//! One connection: read request lines, answer them in order, enforce the per-connection bounds.
//!
//! [`Handler::run`] is generic over `AsyncRead + AsyncWrite`, so the same code serves a
//! `TcpStream` in production and a `tokio::io::duplex` stream in the paused-time tests.
//!
//! # Pipelining
//!
//! A client may send requests without waiting for answers. An answer that is ready at once
//! (PING, STATS, a refusal) with nothing in flight before it is encoded straight into the write
//! buffer; any other reply goes into a `FuturesOrdered`, which runs them concurrently and yields
//! them in request order, at most `max_in_flight` at once (and the ready answers after one wait
//! behind it there, to keep the order). The write buffer is flushed once per burst: a burst of
//! pipelined requests costs one read and one write system call, not one each (tokio-rs/mini-redis
//! flushes after every answer, which is simpler and much slower under pipelining).
//!
//! # Reading at the in-flight bound
//!
//! At `max_in_flight`, no new request starts, but the socket is still read, into a buffer of
//! bounded size (`max_line` plus [`READ_AHEAD`]). So a peer that resets its connection is noticed
//! at once, whatever it has in flight: the connection ends, its replies are dropped, and so is
//! their work (timers, queued and running jobs). Once the buffer is full, reading stops and TCP
//! flow control pushes back on the peer. This is why the loop reads into its own buffer and
//! decodes with the codec itself, rather than through `Framed`: `Framed` reads only when it
//! decodes, so it cannot watch the socket without taking in new requests.
//!
//! # Subscribers
//!
//! A connection that subscribes goes on on the subscriber threads, its state and its replies
//! in flight with it, and this task waits for it there (see `fanout/subscriber_threads.rs`):
//! the turn of the loop that finds it subscribed returns, and the same loop goes on there.
//!
//! A peer that half-closes (sends FIN, as `nc` does when its input ends) still gets every answer
//! to what it sent; the connection closes after the last one.
//!
//! # Timeouts
//!
//! * **Idle.** While nothing is in flight, a *complete* line must arrive within `idle_timeout` of
//!   the connection falling idle. The deadline is not pushed back by partial lines, so a peer
//!   trickling a byte at a time (slow loris) is cut off like a silent one; a connection waiting
//!   for a slow answer is not idle.
//! * **Write.** Every write is bounded by `write_timeout`, and by the end of the grace period at
//!   shutdown. A write cut short has sent an unknown part of its buffer (writes are not
//!   cancel-safe), so the connection is closed.
//!
//! `read_buf` inside `select!` is cancel-safe: if another branch wins, no byte is lost (see the
//! cancel-safety notes of `tokio::select!` and `AsyncReadExt::read_buf`).
//!
//! # Drain
//!
//! At drain a connection stops taking requests, answers those in flight, and closes. Its loop
//! polls the drain token after the read, not first: a poll takes two locks (the token's, then
//! its waiter list's), and first in line it was polled at every turn, about 170 of a PING's
//! instructions at depth 1; after the read, once per wait. But a peer that never stops sending
//! keeps the read ready, `select!` ends its turn at the first ready branch, and once the task's
//! cooperative budget is spent it yields before polling any (tokio's `macros/select.rs`): the
//! drain's branch might never be polled. So each read also asks the token (one lock).

use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::time::{self, Instant};
use tokio_util::bytes::{Buf as _, BufMut as _, BytesMut};
use tokio_util::codec::Encoder as _;
use tracing::Instrument as _;

use crate::commands::{self, Commands, Context, Reply};
use crate::fanout::subscriber_threads::Mover;
use crate::protocol::codec::{LineTooLong, RequestCodec};
use crate::protocol::{ErrorCode, Push, Response};
use crate::shared::Shared;
use crate::telemetry::spans::Traced;

/// Bytes a connection may read beyond one line while it waits at the in-flight bound.
const READ_AHEAD: usize = 4096;
/// The room a read is given once the buffer has less than [`READ_MIN_ROOM`] to spare.
const READ_CHUNK: usize = 4096;
/// The least spare room a read takes as it is. Each line taken off the front shortens the
/// buffer's spare room (`BytesMut` moves its start); topping it up to [`READ_CHUNK`] after
/// every line moved the start back (`reserve`) once per request: a PING at depth 1 cost 66
/// instructions more (callgrind).
const READ_MIN_ROOM: usize = 1024;
/// Pushed lines gathered for one write, at most, before the loop looks at its other work
/// again. [`MAX_PUSH_BYTES`] ends a batch first unless the lines are under 16 bytes.
const MAX_PUSH_BATCH: usize = 1024;
/// Bytes of pushed lines gathered for one write, at most (a batch may pass it by one line): a
/// subscriber behind on small messages catches up in few system calls. At 64 lines a write, a
/// subscriber of 8-byte messages got 0.65x redis-server's deliveries a second in the bench;
/// redis-server writes up to 64 KiB to a client a turn.
const MAX_PUSH_BYTES: usize = 16 * 1024;

/// Why a connection ended other than by the peer's EOF, `QUIT`, a long line or shutdown.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectionError {
    /// No complete request arrived in time while nothing was in flight.
    #[error("idle for {0:?} with no complete request")]
    Idle(Duration),
    /// A write did not finish in time: the peer stopped reading.
    #[error("write not finished within {0:?}")]
    WriteTimeout(Duration),
    /// The grace period ended with a write that could not go out at once; it was abandoned.
    #[error("write abandoned at the end of the grace period")]
    Aborted,
    /// Reading from or writing to the peer failed (a reset, a broken pipe).
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Serves connections; one per service, cloned into each connection's task.
#[derive(Clone)]
pub(crate) struct Handler {
    /// The service's core: its settings bound each connection.
    shared: Arc<Shared>,
    /// What requests are looked up in.
    commands: Commands,
    /// What moves a connection to the subscriber threads when it subscribes; `None` keeps it
    /// where it is (see `fanout/subscriber_threads.rs`).
    mover: Option<Mover>,
}

/// How [`Handler::serve`] ended.
enum Served {
    /// Everything is answered: the connection closes.
    Done,
    /// The connection has subscribed, and moves to the subscriber threads.
    Subscribed,
}

impl Handler {
    /// A handler bounded by `shared`'s settings, answering `commands`; with `mover`, a connection
    /// that subscribes goes on on the subscriber threads.
    pub(crate) fn new(shared: Arc<Shared>, commands: Commands, mover: Option<Mover>) -> Self {
        Self { shared, commands, mover }
    }

    /// The commands it answers.
    #[cfg(feature = "http")]
    pub(crate) fn commands(&self) -> &Commands {
        &self.commands
    }

    /// Serves one connection until the peer leaves, it sends `QUIT` or a line over the limit, a
    /// timeout fires, or shutdown drains it. Every answer due is written before a clean return.
    /// With `traced`, each request the sampler keeps is a span naming that peer (see
    /// `telemetry/spans.rs`). Once it subscribes, the rest of its life runs on the subscriber
    /// threads, if the handler has them, with this task waiting for it.
    pub(crate) async fn run<S>(&self, mut stream: S, traced: Option<Traced>) -> Result<(), ConnectionError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut state = State::new(
            RequestCodec::new(self.shared.config.max_line.get()),
            Context::new(&self.shared, &self.commands, traced),
            self.shared.config.idle_timeout,
        );
        let served = self.serve(&mut stream, &mut state, self.mover.is_some()).await?;
        if let (Served::Subscribed, Some(mover)) = (served, &self.mover) {
            tracing::debug!("subscribed: served on the subscriber threads from now");
            let handler = self.clone();
            let rest = async move {
                handler.serve(&mut stream, &mut state, false).await?;
                handler.bounded(stream.shutdown()).await
            };
            return mover.serve(rest.in_current_span()).await;
        }
        // Everything is answered and flushed: send EOF so the peer sees a clean close.
        self.bounded(stream.shutdown()).await
    }

    /// The connection's loop: until it ends, or, with `may_move`, until it has subscribed.
    async fn serve<S>(
        &self,
        stream: &mut S,
        state: &mut State,
        may_move: bool,
    ) -> Result<Served, ConnectionError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let max_in_flight = self.shared.config.max_in_flight.get();
        // Bounded: a line, its `\r\n`, and the read-ahead.
        let read_limit = self.shared.config.max_line.get().saturating_add(2 + READ_AHEAD);
        let idle_timeout = self.shared.config.idle_timeout;
        // Set to `state.idle_at` only when it fires (see `State::idle_at`).
        let idle = time::sleep_until(state.idle_at);
        // One waiter on the drain token for the whole connection: a fresh `cancelled()` each
        // turn would join and leave the token's waiter list (a lock each) once per request.
        let drain = self.shared.shutdown.drain.cancelled();
        tokio::pin!(idle, drain);
        loop {
            let now = Instant::now();
            state.start_ready(self, max_in_flight, now)?;
            // Answers that were ready at once are in the buffer already: out they go, in one
            // write for the whole burst.
            if !state.output.is_empty() {
                self.write_out(stream, &mut state.output).await?;
                state.answered(idle_timeout);
            }
            if !state.taking && state.in_flight.is_empty() {
                return Ok(Served::Done);
            }
            if may_move && !state.context.subscriptions.is_empty() {
                return Ok(Served::Subscribed);
            }
            let throttled = state.context.publisher.budget.wait_until(now);
            let room = state.make_room(read_limit);
            tokio::select! {
                // Order matters: answers first, so a pipelined burst is answered with one flush
                // once every ready reply is in the buffer; the drain after the read (see # Drain).
                biased;
                Some(answer) = state.in_flight.next(), if !state.in_flight.is_empty() => {
                    state.encode_answers(self, answer)?;
                    self.write_out(stream, &mut state.output).await?;
                    state.answered(idle_timeout);
                }
                // Messages for this connection's subscriptions, between the answers. They stop
                // at drain, with the reading.
                Some(push) = state.context.subscriptions.next(), if state.taking && !state.context.subscriptions.is_empty() => {
                    state.encode_pushes(self, push).await?;
                    self.write_out(stream, &mut state.output).await?;
                }
                // Read even at the in-flight bound (up to `read_limit`): see the module docs.
                read = async { stream.read_buf(&mut (&mut state.input).limit(room)).await }, if state.taking && !state.eof && room > 0 => {
                    if read? == 0 {
                        state.eof = true;
                    }
                    // The drain's branch might never be polled (see # Drain).
                    if self.shared.shutdown.drain.is_cancelled() {
                        state.taking = false;
                    }
                }
                () = &mut drain, if state.taking => state.taking = false,
                // The publish budget is back: start what was read meanwhile.
                // Made when polled: `select!` builds a disabled branch's future too, and a
                // `Sleep` takes a handle on the runtime's timer.
                () = async { time::sleep_until(throttled.unwrap_or(now)).await }, if state.taking && throttled.is_some() => {
                    state.idle_at = Instant::now() + idle_timeout;
                }
                // A subscribed connection waits for pushes, a throttled one for its budget:
                // neither is idle.
                () = &mut idle, if state.taking && state.in_flight.is_empty() && state.context.subscriptions.is_empty() && throttled.is_none() => {
                    if Instant::now() < state.idle_at {
                        idle.as_mut().reset(state.idle_at);
                    } else {
                        return Err(ConnectionError::Idle(idle_timeout));
                    }
                }
            }
        }
    }

    /// Records the answer's latency and adds it to the write buffer.
    fn encode(
        &self,
        codec: &mut RequestCodec,
        (response, started): (Response, Option<(usize, Instant)>),
        now: Instant,
        output: &mut BytesMut,
    ) -> Result<(), ConnectionError> {
        if let Some((command, at)) = started {
            // Most answers are ready in the instant they start: no subtraction for those.
            let elapsed = if at == now { Duration::ZERO } else { now.saturating_duration_since(at) };
            self.shared.metrics.observe_request(command, elapsed);
        }
        codec.encode(response, output).map_err(ConnectionError::Io)
    }

    /// Adds a pushed line to the write buffer; counts it unless it is a message (the batch's
    /// messages are counted at once, see [`State::encode_pushes`]). Whether it was a message.
    fn push(
        &self,
        codec: &mut RequestCodec,
        push: Push,
        output: &mut BytesMut,
    ) -> Result<bool, ConnectionError> {
        let message = match &push {
            Push::Message(..) => true,
            Push::Lagged(_, missed) => {
                self.shared.stats.count_missed(*missed);
                false
            }
            Push::Gap(_) => {
                self.shared.stats.count_gap();
                false
            }
        };
        codec.encode(push, output).map_err(ConnectionError::Io)?;
        Ok(message)
    }

    /// Writes the buffer out and flushes: one system call for everything gathered; then empties
    /// it. `write_all` and `clear`, not `write_all_buf`: that one readies 64 `IoSlice`s for a
    /// vectored write at each poll and moves the buffer's start, which the next answer's
    /// `reserve` moved back (with the throttle's `Sleep` made at each turn, which `run` now
    /// makes only when polled, a PING at depth 1 cost 390 instructions more under callgrind).
    /// A write cut short ends the connection either way (see the module docs).
    async fn write_out<S: AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        output: &mut BytesMut,
    ) -> Result<(), ConnectionError> {
        self.bounded(async {
            stream.write_all(output).await?;
            stream.flush().await
        })
        .await?;
        output.clear();
        Ok(())
    }

    /// Runs a write under `write_timeout`. Once the grace period is over, a write that cannot
    /// finish at once is abandoned, so a peer that does not read cannot hold shutdown up.
    async fn bounded(&self, write: impl Future<Output = io::Result<()>>) -> Result<(), ConnectionError> {
        // Most writes finish at once (the socket buffer has room): those need no timer and no
        // waiter on the abort token, which cost a PING at depth 1 about 300 instructions. One
        // that does not goes on, the same future, under both from here.
        let mut write = pin!(write);
        if let Some(written) = (&mut write).now_or_never() {
            return written.map_err(ConnectionError::Io);
        }
        let timeout = self.shared.config.write_timeout;
        tokio::select! {
            // The write goes first: after the abort, what fits in the socket buffer still goes out.
            biased;
            written = time::timeout(timeout, write) => match written {
                Ok(result) => result.map_err(ConnectionError::Io),
                Err(_elapsed) => Err(ConnectionError::WriteTimeout(timeout)),
            },
            () = self.shared.shutdown.abort.cancelled() => Err(ConnectionError::Aborted),
        }
    }
}

/// One connection's state between two turns of its loop.
struct State {
    codec: RequestCodec,
    /// Bytes read and not decoded yet; at most the loop's `read_limit`.
    input: BytesMut,
    /// Answers and pushed lines not written yet.
    output: BytesMut,
    /// Replies in request order, at most `max_in_flight`.
    in_flight: FuturesOrdered<Reply>,
    /// What its commands use of their own: its subscriptions and its publish budget.
    context: Context,
    /// Whether new requests are taken: false after EOF, QUIT, a long line, or the drain.
    taking: bool,
    /// Whether the peer has sent EOF; what is left in `input` is then its last request.
    eof: bool,
    /// When the connection is idle for too long, unless a request comes first. It moves on with
    /// every answer, the loop's timer only when it fires: resetting a registered `Sleep`
    /// re-files its entry in the timer wheel under the driver's lock, which cost a PING at
    /// depth 1 about 160 instructions (callgrind).
    idle_at: Instant,
}

impl State {
    fn new(codec: RequestCodec, context: Context, idle_timeout: Duration) -> Self {
        let (input, output, in_flight) = (BytesMut::new(), BytesMut::new(), FuturesOrdered::new());
        let idle_at = Instant::now() + idle_timeout;
        Self { codec, input, output, in_flight, context, taking: true, eof: false, idle_at }
    }

    /// After a write: with nothing left in flight, the connection is idle from now.
    fn answered(&mut self, idle_timeout: Duration) {
        if self.in_flight.is_empty() {
            self.idle_at = Instant::now() + idle_timeout;
        }
    }

    /// Adds `answer` and every other answer ready now to the write buffer, in request order.
    fn encode_answers(
        &mut self,
        handler: &Handler,
        answer: <Reply as Future>::Output,
    ) -> Result<(), ConnectionError> {
        // One clock read for the whole burst of answers.
        let now = Instant::now();
        handler.encode(&mut self.codec, answer, now, &mut self.output)?;
        while let Some(Some(answer)) = self.in_flight.next().now_or_never() {
            handler.encode(&mut self.codec, answer, now, &mut self.output)?;
        }
        Ok(())
    }

    /// Adds `push` and the pushed lines ready after it, [`MAX_PUSH_BATCH`] and
    /// [`MAX_PUSH_BYTES`] at most, to the write buffer, and counts the messages among them with
    /// one add: the counter is shared by every connection, and an add per message made its cache
    /// line bounce between the cores.
    ///
    /// It lets the messages sent with `push` come first: a yield puts this task at the back of
    /// the queue (tokio's `yield_now` docs), behind a publisher's or the relay's reader's next
    /// sends on the same runtime, and gives one on another runtime (a subscriber's, on the
    /// subscriber threads) the time to send them, so one write carries more lines (bench, 100
    /// subscribers: on one runtime, 10.3M -> 12.0M msg/s; on the subscriber threads, 6.4-6.5M
    /// without it, 6.5-8.5M with it; two replicas through Redis, 5.0M -> 5.6M).
    async fn encode_pushes(&mut self, handler: &Handler, push: Push) -> Result<(), ConnectionError> {
        tokio::task::yield_now().await;
        let mut messages = u64::from(handler.push(&mut self.codec, push, &mut self.output)?);
        for _ in 1..MAX_PUSH_BATCH {
            if self.output.len() >= MAX_PUSH_BYTES {
                break;
            }
            let Some(Some(push)) = self.context.subscriptions.next().now_or_never() else { break };
            messages += u64::from(handler.push(&mut self.codec, push, &mut self.output)?);
        }
        handler.shared.stats.count_delivered(messages);
        Ok(())
    }

    /// Starts every complete request already read, up to `max_in_flight` in flight, unless the
    /// connection's PUBLISHes have spent their budget (see `fanout/budget.rs`). `now` is
    /// when they count as read.
    ///
    /// An answer that is ready at once, with nothing in flight before it, goes straight into the
    /// write buffer (through `handler`, which records its latency): no future node for it.
    fn start_ready(
        &mut self,
        handler: &Handler,
        max_in_flight: usize,
        now: Instant,
    ) -> Result<(), ConnectionError> {
        // The lines are read where they lie and taken off the buffer together, at the end: one
        // `advance` per burst, not one per line (see `protocol/codec.rs`).
        let mut taken = 0;
        let started = self.start_lines(handler, max_in_flight, now, &mut taken);
        self.input.advance(taken);
        started
    }

    /// [`State::start_ready`]'s loop, over the lines after the first `taken` bytes of the input;
    /// adds those it starts to `taken`.
    fn start_lines(
        &mut self,
        handler: &Handler,
        max_in_flight: usize,
        now: Instant,
        taken: &mut usize,
    ) -> Result<(), ConnectionError> {
        while self.taking
            && self.in_flight.len() < max_in_flight
            && self.context.publisher.budget.wait_until(now).is_none()
        {
            let input = &self.input[*taken..];
            let frame = match self.codec.next_line(input, self.eof) {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    // After EOF nothing more will come.
                    self.taking = !self.eof;
                    return Ok(());
                }
                Err(LineTooLong(max)) => {
                    let refused = Response::err_with(ErrorCode::LineTooLong, format!("max {max} bytes"));
                    self.answer(handler, Reply::ready(refused), now)?;
                    self.taking = false;
                    continue;
                }
            };
            let (reply, keep_taking) = commands::start(&input[..frame.text], &mut self.context, now);
            *taken += frame.len;
            self.answer(handler, reply, now)?;
            self.taking = keep_taking;
        }
        Ok(())
    }

    /// Encodes `reply` at once if it is ready and nothing is in flight before it (answers go
    /// out in request order); queues it otherwise. Inlined, with the encoder, into the loop
    /// over a burst's lines: as calls, their entries and exits cost a pipelined PING about 30
    /// instructions (by callgrind, the template's instruction count).
    #[inline(always)]
    fn answer(&mut self, handler: &Handler, reply: Reply, now: Instant) -> Result<(), ConnectionError> {
        if !self.in_flight.is_empty() {
            self.in_flight.push_back(reply);
            return Ok(());
        }
        match reply.into_ready() {
            Ok(answer) => handler.encode(&mut self.codec, answer, now, &mut self.output),
            Err(reply) => {
                self.in_flight.push_back(reply);
                Ok(())
            }
        }
    }

    /// Makes sure the next read has room (at least [`READ_MIN_ROOM`], topped up to
    /// [`READ_CHUNK`], when the limit allows), and returns how much the input may still take
    /// under `read_limit`.
    fn make_room(&mut self, read_limit: usize) -> usize {
        let room = read_limit.saturating_sub(self.input.len());
        if room > 0 && self.input.capacity() - self.input.len() < READ_MIN_ROOM {
            self.input.reserve(READ_CHUNK.min(room));
        }
        room
    }
}

impl ConnectionError {
    /// Logs how the connection ended, once, at debug level: every one of these is something a
    /// peer can cause at will, so none may flood the log (`STATS` counts connections).
    pub(crate) fn log(&self) {
        tracing::debug!("closed: {self}");
    }
}
