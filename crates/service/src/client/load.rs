//! `load`: a load generator for any running instance, and the measuring client of the benchmarks.
//!
//! It ships in the service's own binary on purpose: a load generator that speaks the protocol is
//! in every image, so a deployment can be measured from inside its cluster
//! (`kubectl exec ... NAME load --addr ...`) with nothing else installed. What it costs a build:
//! `hdrhistogram` (about a second of a cold build); `serde_json` is there anyway, for the JSON
//! logs of `tracing-subscriber`.
//!
//! Each of `connections` connections keeps up to `depth` requests in flight (pipelining), for
//! `duration`. Two ways to pace them:
//!
//! * **Closed loop** (no `rate`): a request goes out as soon as an answer frees a slot. This
//!   measures the most the service does, but hides a stall: while the service is stuck, no new
//!   request is sent, so no request sees the stall.
//! * **Open loop** (`rate` requests a second, spread over the connections): requests are due on a
//!   fixed schedule, and each one's latency counts from the moment it was *due*, not sent. A stall
//!   then shows in every request that should have gone out meanwhile: no coordinated omission
//!   (Gil Tene, "How NOT to Measure Latency").
//!
//! Latencies go into an HDR histogram (`hdrhistogram`: microseconds, 3 significant digits), one
//! per connection, merged at the end. Every wait is bounded: connecting (and, with TLS, the
//! handshake) by `connect_timeout`, and each answer by `timeout` from the moment its request was
//! sent.
//!
//! A run lasts `duration` even when fewer requests were due (an open loop slower than one
//! request per connection), so the throughput it reports is over the whole run. At the end each
//! connection half-closes and reads until the server closes (at most `DRAIN_WAIT`): a line
//! that comes then answers no request, and is counted as [`LoadReport::unexpected`], like a
//! server that answers twice. Pushed lines (`MSG`, `LAG`, `GAP`) answer nothing and are skipped.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{FutureExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{self, Instant};
use tokio_util::codec::{FramedRead, LinesCodec};
#[cfg(feature = "tls")]
use tokio_util::either::Either;

use clap::builder::TypedValueParser as _;

use super::{ClientError, MAX_RESPONSE};
use crate::config::{DAY, HOUR, MILLISECOND, duration};
use crate::protocol::{is_ok, is_push};
#[cfg(feature = "tls")]
use crate::tls::ClientTls;

/// How long a connection waits, at the end, for the server to close after its half-close.
const DRAIN_WAIT: Duration = Duration::from_millis(250);

/// What to send, how hard, and for how long: `load`'s flags (each doc comment is its help text,
/// each bound in its `#[arg]`), and what the benchmarks run.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadPlan {
    /// Server address (host:port).
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub addr: String,
    /// Connections, each with its own requests in flight.
    #[arg(long, value_name = "N", default_value = "50", value_parser = clap::value_parser!(u16).range(1..=10_000).map(usize::from))]
    pub connections: usize,
    /// Requests in flight per connection (pipelining depth).
    #[arg(long, value_name = "N", default_value = "1", value_parser = clap::value_parser!(u16).range(1..=1024).map(usize::from))]
    pub depth: usize,
    /// How long the run lasts (answers still due are then awaited).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration(MILLISECOND..=DAY))]
    pub duration: Duration,
    /// Requests a second in all, on a fixed schedule (open loop, latency from when each was due);
    /// without it, each connection sends as fast as answers come (closed loop).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub rate: Option<u64>,
    /// Time to connect (resolving the address included).
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = duration(MILLISECOND..=HOUR))]
    pub connect_timeout: Duration,
    /// Time for each answer, from its request's sending.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = duration(MILLISECOND..=HOUR))]
    pub timeout: Duration,
    /// TLS, or `None` for plain TCP. (`load` fills it from its `--tls` flags, see
    /// [`crate::tls::ClientTlsArgs::load`].)
    #[cfg(feature = "tls")]
    #[arg(skip)]
    pub tls: Option<ClientTls>,
    /// The request lines, sent in turn (quote each: `load "PING" "STATS"`).
    #[arg(default_value = "PING", value_parser = super::request_word)]
    pub requests: Vec<String>,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Answers received.
    pub answers: u64,
    /// Of which `ERR` answers.
    pub errors: u64,
    /// Lines that answered no request: they came after every request had its answer.
    pub unexpected: u64,
    /// From the first request to the last answer.
    pub elapsed: Duration,
    /// Latency of every answer, in microseconds.
    pub latency: Histogram<u64>,
}

impl LoadReport {
    /// Answers per second.
    pub fn throughput(&self) -> f64 {
        self.answers as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// A latency quantile (0.5, 0.99, ...).
    pub fn quantile(&self, quantile: f64) -> Duration {
        Duration::from_micros(self.latency.value_at_quantile(quantile))
    }

    /// The report as JSON, for machines.
    pub fn to_json(&self) -> serde_json::Value {
        let us = |quantile| self.latency.value_at_quantile(quantile);
        serde_json::json!({
            "answers": self.answers,
            "errors": self.errors,
            "unexpected": self.unexpected,
            "seconds": self.elapsed.as_secs_f64(),
            "throughput_per_second": self.throughput(),
            "latency_us": { "p50": us(0.5), "p99": us(0.99), "p999": us(0.999), "max": self.latency.max() },
        })
    }
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |quantile| format!("{:?}", self.quantile(quantile));
        write!(
            f,
            "{} answers ({} ERR, {} unexpected) in {:.2?}: {:.0}/s; latency p50 {} p99 {} p99.9 {} max {:?}",
            self.answers,
            self.errors,
            self.unexpected,
            self.elapsed,
            self.throughput(),
            show(0.5),
            show(0.99),
            show(0.999),
            Duration::from_micros(self.latency.max())
        )
    }
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A connection could not be made, or broke, or an answer did not come in time.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The plan cannot run (no request, no connection).
    #[error("{0}")]
    Plan(&'static str),
}

/// Runs `plan`; `progress` counts answers as they come, for a live display.
pub async fn run(plan: &LoadPlan, progress: Arc<AtomicU64>) -> Result<LoadReport, LoadError> {
    if plan.requests.is_empty() || plan.connections == 0 || plan.depth == 0 {
        return Err(LoadError::Plan("load needs a request, a connection and a depth of at least 1"));
    }
    let addr = match time::timeout(plan.connect_timeout, tokio::net::lookup_host(plan.addr.as_str())).await {
        Ok(Ok(mut addrs)) => addrs.next().ok_or(LoadError::Plan("the address resolves to nothing"))?,
        Ok(Err(error)) => return Err(ClientError::Connect(error).into()),
        Err(_elapsed) => return Err(ClientError::ConnectTimeout(plan.connect_timeout).into()),
    };
    // The name the server's certificate must carry, once for every connection.
    #[cfg(feature = "tls")]
    let tls = match &plan.tls {
        None => None,
        Some(tls) => Some((tls, tls.server_name_for(&plan.addr).map_err(ClientError::Connect)?)),
    };
    // Connect everything first, so connecting (and shaking hands) is not measured.
    let mut streams = Vec::with_capacity(plan.connections);
    for _ in 0..plan.connections {
        let connect = async {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            #[cfg(feature = "tls")]
            let stream = match &tls {
                None => Either::Left(stream),
                Some((tls, name)) => Either::Right(tls.handshake(stream, name.clone()).await?),
            };
            Ok::<_, std::io::Error>(stream)
        };
        match time::timeout(plan.connect_timeout, connect).await {
            Ok(Ok(stream)) => streams.push(stream),
            Ok(Err(error)) => return Err(ClientError::Connect(error).into()),
            Err(_elapsed) => return Err(ClientError::ConnectTimeout(plan.connect_timeout).into()),
        }
    }
    let start = Instant::now();
    let end = start + plan.duration;
    // Each connection's share of the rate: one request every `interval`.
    let interval =
        plan.rate.map(|rate| Duration::from_secs_f64(plan.connections as f64 / rate.max(1) as f64));
    let mut tasks = JoinSet::new();
    for (index, stream) in streams.into_iter().enumerate() {
        let plan = plan.clone();
        let progress = Arc::clone(&progress);
        // Stagger the open-loop schedules, so the connections do not fire in step.
        let first = start
            + interval.map_or(Duration::ZERO, |every| every.mul_f64(index as f64 / plan.connections as f64));
        tasks.spawn(async move { connection(stream, &plan, first, end, interval, &progress).await });
    }
    let mut report = LoadReport {
        answers: 0,
        errors: 0,
        unexpected: 0,
        elapsed: Duration::ZERO,
        latency: latency_histogram(),
    };
    while let Some(done) = tasks.join_next().await {
        let tally = done.expect("a load task does not panic")?;
        report.answers += tally.answers;
        report.errors += tally.errors;
        report.unexpected += tally.unexpected;
        report.latency.add(tally.latency).expect("histograms of the same bounds");
    }
    // The run lasts its duration, whenever the last request was due.
    time::sleep_until(end).await;
    report.elapsed = start.elapsed();
    Ok(report)
}

/// What one connection counted.
struct Tally {
    answers: u64,
    errors: u64,
    unexpected: u64,
    latency: Histogram<u64>,
}

/// A histogram of latencies in microseconds, 1 µs to an hour, 3 significant digits. Every
/// connection's has the same bounds, so they merge.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

/// One connection's loop: send what is due (up to `depth` in flight), read answers, record.
async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    plan: &LoadPlan,
    first: Instant,
    end: Instant,
    interval: Option<Duration>,
    progress: &AtomicU64,
) -> Result<Tally, ClientError> {
    let mut run = Run {
        // One stream, no split: writing and reading take turns here. Writes go to the stream
        // under the reader (`get_mut`), which leaves the reader's buffer alone.
        answers: FramedRead::new(stream, LinesCodec::new_with_max_length(MAX_RESPONSE)),
        plan,
        interval,
        progress,
        in_flight: VecDeque::with_capacity(plan.depth),
        next_due: first,
        next_request: 0,
        buffer: Vec::new(),
        tally: Tally { answers: 0, errors: 0, unexpected: 0, latency: latency_histogram() },
    };
    loop {
        let now = Instant::now();
        run.queue_due(now, end);
        run.send().await?;
        let Some(&(_, sent)) = run.in_flight.front() else {
            if now >= end || run.next_due >= end {
                break;
            }
            time::sleep_until(run.next_due).await;
            continue;
        };
        let may_send = interval.is_some() && run.in_flight.len() < plan.depth && run.next_due < end;
        tokio::select! {
            line = time::timeout_at(sent + plan.timeout, run.answers.next()) => {
                let line = match line {
                    Ok(Some(line)) => line?,
                    Ok(None) => return Err(ClientError::Closed),
                    Err(_elapsed) => return Err(ClientError::Timeout(plan.timeout)),
                };
                if !is_push(&line) {
                    run.take_answers(line)?;
                }
            }
            () = time::sleep_until(run.next_due), if may_send => {}
        }
    }
    run.finish().await
}

/// One connection's state while it runs; see [`connection`].
struct Run<'a, S> {
    answers: FramedRead<S, LinesCodec>,
    plan: &'a LoadPlan,
    /// Open loop: the time between two requests. Closed loop: `None`.
    interval: Option<Duration>,
    progress: &'a AtomicU64,
    /// When each request in flight was due (open loop) or sent (closed loop), and when it was
    /// sent, oldest first.
    in_flight: VecDeque<(Instant, Instant)>,
    next_due: Instant,
    /// The next of `plan.requests` to send, counted from the start.
    next_request: usize,
    /// Requests due, not written yet.
    buffer: Vec<u8>,
    tally: Tally,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Run<'_, S> {
    /// Queues every request due by `now` (and before `end`) that `depth` has room for.
    fn queue_due(&mut self, now: Instant, end: Instant) {
        let requests = &self.plan.requests;
        while now < end && self.in_flight.len() < self.plan.depth && self.next_due <= now {
            self.buffer.extend_from_slice(requests[self.next_request % requests.len()].as_bytes());
            self.buffer.push(b'\n');
            self.next_request += 1;
            // Open loop: the schedule, however late we are. Closed loop: now.
            let due = if self.interval.is_some() { self.next_due } else { now };
            self.in_flight.push_back((due, now));
            self.next_due = match self.interval {
                Some(every) => self.next_due + every,
                None => now,
            };
        }
    }

    /// Writes what is queued, in one write, bounded by the request timeout.
    async fn send(&mut self) -> Result<(), ClientError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        // Flushed too: TLS may keep encrypted bytes back when the socket is full.
        let stream = self.answers.get_mut();
        let written = async {
            stream.write_all(&self.buffer).await?;
            stream.flush().await
        };
        match time::timeout(self.plan.timeout, written).await {
            Ok(written) => written.map_err(ClientError::Io)?,
            Err(_elapsed) => return Err(ClientError::Timeout(self.plan.timeout)),
        }
        self.buffer.clear();
        Ok(())
    }

    /// Records `line`, the answer to the oldest request in flight, and every answer already
    /// read after it, so the freed slots are refilled with one write: the client batches as
    /// the server does, so it is not the bottleneck.
    fn take_answers(&mut self, mut line: String) -> Result<(), ClientError> {
        loop {
            let (due, _) = self.in_flight.pop_front().expect("an answer answers a request in flight");
            let micros = u64::try_from(due.elapsed().as_micros()).unwrap_or(u64::MAX).max(1);
            self.tally.latency.saturating_record(micros);
            self.tally.answers += 1;
            self.tally.errors += u64::from(!is_ok(&line));
            self.progress.fetch_add(1, Ordering::Relaxed);
            let next = loop {
                match self.answers.next().now_or_never() {
                    Some(Some(Ok(next))) if is_push(&next) => {}
                    next => break next,
                }
            };
            match next {
                Some(Some(Ok(next))) if !self.in_flight.is_empty() => line = next,
                // A line with nothing in flight: it answers no request.
                Some(Some(Ok(_))) => {
                    self.tally.unexpected += 1;
                    return Ok(());
                }
                Some(Some(Err(error))) => return Err(error.into()),
                _ => return Ok(()),
            }
        }
    }

    /// Every request has its answer: half-closes, and counts what still comes until the server
    /// closes (lines that answer nothing).
    async fn finish(mut self) -> Result<Tally, ClientError> {
        let drained = async {
            self.answers.get_mut().shutdown().await?;
            while let Some(line) = self.answers.next().await {
                if !is_push(&line?) {
                    self.tally.unexpected += 1;
                }
            }
            Ok::<_, ClientError>(())
        };
        // A server that keeps the connection open after our half-close is not an error.
        if let Ok(result) = time::timeout(DRAIN_WAIT, drained).await {
            result?;
        }
        Ok(self.tally)
    }
}
