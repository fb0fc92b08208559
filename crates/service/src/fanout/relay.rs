//! The fan-out relay: with `--fanout-url redis://...`, topics span every replica pointed at the
//! same Redis, through its pub/sub.
//!
//! Without the flag there is no relay: topics live in the process, and no broker code is on the
//! path. With it, each process keeps one relay, a tracked task that owns two connections:
//!
//! * **The subscriber** (RESP3, so Redis pushes messages on it): subscribed to exactly the
//!   topics that have subscribers here (SUBSCRIBE with a topic's first local subscriber,
//!   UNSUBSCRIBE with its last: the relay follows [`Topics::changed`]). Each message Redis pushes
//!   is handed by redis-rs's reader to a plain function that sends it into the topic's local
//!   `broadcast` channel, which never waits. So the socket is read as fast as Redis writes (its
//!   `client-output-buffer-limit pubsub` never trips because of a slow client of ours), and a
//!   slow local subscriber is told `LAG` as without a broker. Nothing is buffered in between.
//! * **The publisher**: PUBLISH requests go into one bounded queue in request order, and the
//!   relay sends them to Redis in pipelines of up to [`BATCH`], in that order. So a topic's
//!   messages from one publishing connection reach every subscriber on every replica in the
//!   order published, pipelined PUBLISHes included. The answer is Redis's count: the replicas
//!   with subscribers to the topic (this one included), not the subscribers.
//!
//! **The broker is input, not a trusted peer.** Redis pub/sub ignores the database number, so
//! every channel is the topic behind a prefix (`--fanout-prefix`, by default the program's name
//! and the URL's database: `service:0:`), which keeps deployments on one Redis apart and lets a
//! Redis ACL confine the service's user to its own channels (`deploy/README.md`). A message is
//! `ORIGIN TEXT` ([`Envelope`]): the publishing replica and connection, so that every replica
//! charges it to its publisher's budget (see `fanout/budget.rs`). What the broker sends is checked as a
//! client's line would be: a channel outside the prefix, a message without an origin, a text a
//! local PUBLISH could not have sent (a line break, a control character, not UTF-8, longer than
//! `--max-message`) or past its publisher's budget is not delivered; its subscribers are told
//! `LAG`, and `fanout_refused_total` counts it by [`Refused`] reason.
//!
//! **The queue is bounded three ways**, so one publisher cannot take it from the others and a
//! broker that hangs cannot grow it: [`QUEUE`] PUBLISHes and [`QUEUE_BYTES`] of them at most (or
//! one, if longer); a connection that already has one waiting may take only an equal part of
//! three quarters of that (one part kept for a newcomer), the last quarter being for
//! connections that have none; and a PUBLISH waits for the broker's answer at most
//! [`ANSWER_TIMEOUT`], then is answered `ERR unavailable` (and not sent, if it has not been).
//!
//! Delivery is at most once, as Redis pub/sub's. While the broker is out of reach:
//!
//! * PUBLISH is refused at once with `ERR unavailable` (and `ERR busy` if the queue is full):
//!   it never waits for the broker and nothing queues up. Every other command works as before.
//! * The relay reconnects after a pause drawn at random below a bound that doubles from
//!   [`MIN_BACKOFF`] to [`MAX_BACKOFF`] (full jitter, so replicas do not reconnect in step),
//!   pushes `GAP <topic>` to each subscriber (messages may be missing just before that line, and
//!   how many cannot be known), then subscribes to every local topic again.
//! * Every Redis call is bounded: connecting by [`CONNECT_TIMEOUT`], each answer by
//!   [`RESPONSE_TIMEOUT`]. The log says each change of state once.
//!
//! redis-rs drives each connection on a task of its own, which it aborts when the connection is
//! dropped: at drain, when the relay ends after sending what is queued.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, IntoConnectionInfo as _, ProtocolVersion, PushInfo, PushKind, Value};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::Topics;
use super::budget::Origin;
use crate::backoff::Backoff;
use crate::config::FanoutUrl;
use crate::protocol::{self, ErrorCode};
use crate::telemetry::spans;

/// PUBLISH requests waiting for the broker, at most; past it, `ERR busy`.
const QUEUE: usize = 1024;
/// Bytes of PUBLISH texts waiting for the broker or on their way to it, at most, unless a
/// single one is longer; past it, `ERR busy`.
pub(crate) const QUEUE_BYTES: usize = 8 << 20;
/// The longest a PUBLISH waits for the broker's answer before `ERR unavailable`: well under a
/// second, so that a broker that hangs (not one that is down, which is found at once) costs a
/// publisher no more than this.
pub(crate) const ANSWER_TIMEOUT: Duration = Duration::from_millis(250);
/// PUBLISH requests sent to the broker in one pipeline, at most.
const BATCH: usize = 64;
/// Time to connect to the broker (authentication included).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time for each of the broker's answers.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The first bound on the pause before reconnecting; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// The longest pause before reconnecting: delivery resumes within it of the broker being back.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What the relay does with the broker's address.
impl FanoutUrl {
    /// A client for it, speaking RESP3 (pushed messages share the connection with answers),
    /// without `CLIENT SETINFO`, which the ACL of `deploy/README.md` does not allow. Over TLS,
    /// the broker's certificate must chain to `ca` (PEM), or without it to the system's roots.
    fn client(&self, ca: Option<&[u8]>) -> redis::RedisResult<redis::Client> {
        let info = self.with_password().into_connection_info()?;
        let resp3 =
            info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3).set_skip_set_lib_name();
        let info = info.set_redis_settings(resp3);
        match ca {
            #[cfg(feature = "tls")]
            Some(ca) if self.tls() => {
                let certificates = redis::TlsCertificates { client_tls: None, root_cert: Some(ca.to_vec()) };
                redis::Client::build_with_tls(info, certificates)
            }
            _ => redis::Client::open(info),
        }
    }

    /// Connects once, bounded, and asks the broker for PING: what start-up checks, so that a
    /// wrong address, password or certificate is found when the service is deployed, not at the
    /// first PUBLISH. `ca` is `--fanout-ca`'s PEM.
    pub async fn check(&self, ca: Option<&[u8]>) -> Result<(), String> {
        let unusable = |error: redis::RedisError| format!("cannot use the broker: {error}");
        let client = self.client(ca).map_err(unusable)?;
        let mut connection =
            client.get_multiplexed_async_connection_with_config(&config()).await.map_err(unusable)?;
        redis::cmd("PING").query_async::<()>(&mut connection).await.map_err(unusable)
    }
}

/// A message as it goes through the broker: `ORIGIN TEXT`, the origin `REPLICA.CONNECTION` in
/// lower-case hexadecimal.
pub(crate) struct Envelope;

impl Envelope {
    /// The broker's message for `text` published by `origin`.
    pub(crate) fn encode(origin: Origin, text: &str) -> Vec<u8> {
        format!("{:x}.{:x} {text}", origin.replica, origin.connection).into_bytes()
    }

    /// The origin and text of a message from the broker, or `None` if it is not an envelope.
    pub(crate) fn decode(message: &[u8]) -> Option<(Origin, &[u8])> {
        let space = message.iter().position(|&b| b == b' ')?;
        let (origin, text) = (&message[..space], &message[space + 1..]);
        let dot = origin.iter().position(|&b| b == b'.')?;
        let number = |digits: &[u8]| {
            let digits = std::str::from_utf8(digits).ok()?;
            let lower = digits.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            (!digits.is_empty() && digits.len() <= 16 && lower)
                .then(|| u64::from_str_radix(digits, 16).ok())?
        };
        Some((Origin { replica: number(&origin[..dot])?, connection: number(&origin[dot + 1..])? }, text))
    }
}

/// Timeouts for every connection to the broker.
fn config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
}

/// Why the relay refused a PUBLISH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RelayError {
    /// The broker is out of reach.
    #[error("the fan-out broker is out of reach")]
    Unavailable,
    /// The queue is full, or this connection holds its fair part of it.
    #[error("too many PUBLISH requests wait for the fan-out broker")]
    Busy,
    /// The broker did not answer within [`ANSWER_TIMEOUT`].
    #[error("the fan-out broker did not answer in time")]
    NoAnswer,
}

impl RelayError {
    /// The answer's error code.
    pub(crate) fn code(self) -> ErrorCode {
        match self {
            Self::Unavailable | Self::NoAnswer => ErrorCode::Unavailable,
            Self::Busy => ErrorCode::Busy,
        }
    }
}

/// Why a message from the broker was not delivered: `fanout_refused_total`'s `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Its channel is not one of this deployment's (outside the prefix, or not a topic name).
    Foreign,
    /// It has no origin: another program published it.
    Malformed,
    /// Its text is longer than `--max-message`.
    TooLong,
    /// Its text holds a line break or another control character, or is not UTF-8.
    NotText,
    /// Its publisher's budget here, or the process's, was spent.
    OverBudget,
}

impl Refused {
    /// Every reason, in the order `/metrics` lists them.
    pub(crate) const ALL: [Self; 5] =
        [Self::Foreign, Self::Malformed, Self::TooLong, Self::NotText, Self::OverBudget];

    /// Its label in `/metrics`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Foreign => "foreign",
            Self::Malformed => "malformed",
            Self::TooLong => "too_long",
            Self::NotText => "not_text",
            Self::OverBudget => "over_budget",
        }
    }
}

/// The relay's figures, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct RelayStats {
    /// Whether the relay is connected to the broker now.
    up: AtomicBool,
    /// Connections made again after one was lost.
    reconnects: AtomicU64,
    /// Messages the broker sent here, for local subscribers.
    relayed: AtomicU64,
    /// Messages sent to the broker.
    published: AtomicU64,
    /// Messages from the broker not delivered, one counter per [`Refused`], in its `ALL` order.
    refused: [AtomicU64; Refused::ALL.len()],
    /// What waits for the broker now, for the queue's bounds.
    queue: QueueLoad,
}

/// A snapshot of [`RelayStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Figures {
    pub(crate) up: bool,
    pub(crate) reconnects: u64,
    pub(crate) relayed: u64,
    pub(crate) published: u64,
    pub(crate) refused: [u64; Refused::ALL.len()],
}

impl RelayStats {
    /// A snapshot.
    pub(crate) fn read(&self) -> Figures {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Figures {
            up: self.up.load(Ordering::Relaxed),
            reconnects: load(&self.reconnects),
            relayed: load(&self.relayed),
            published: load(&self.published),
            refused: self.refused.each_ref().map(load),
        }
    }

    fn count_refused(&self, why: Refused) {
        self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// What waits in the relay's queue, or in the pipeline on its way to the broker.
#[derive(Debug, Default)]
struct QueueLoad {
    /// Connections with at least one PUBLISH waiting.
    holders: AtomicUsize,
    /// PUBLISHes waiting.
    count: AtomicUsize,
    /// Bytes of their texts.
    bytes: AtomicUsize,
}

/// One connection's part of the relay's queue: what it has waiting. Cheap to clone.
#[derive(Debug, Default, Clone)]
pub(crate) struct Share(Arc<ShareCount>);

#[derive(Debug, Default)]
struct ShareCount {
    count: AtomicUsize,
    bytes: AtomicUsize,
}

/// A PUBLISH's place in the queue's bounds, given back when it is answered or dropped.
#[derive(Debug)]
struct Held {
    share: Share,
    stats: Arc<RelayStats>,
    bytes: usize,
}

impl Held {
    /// Takes a place of `bytes` for `share`, if the queue's bounds allow it (see the module
    /// docs): a connection that holds some may take an equal part of three quarters of the
    /// queue, with one more part kept for a newcomer; the last quarter is for connections that
    /// hold nothing, so it takes 256 connections to crowd out another.
    fn take(share: &Share, stats: &Arc<RelayStats>, bytes: usize) -> Option<Self> {
        let (queue, mine) = (&stats.queue, &share.0);
        let (count, held) = (mine.count.load(Ordering::Relaxed), mine.bytes.load(Ordering::Relaxed));
        let limit = if count > 0 {
            let parts = queue.holders.load(Ordering::Relaxed) + 1;
            let full = queue.count.load(Ordering::Relaxed) >= QUEUE / 4 * 3;
            if full || count >= QUEUE / parts || held + bytes > QUEUE_BYTES / parts {
                return None;
            }
            QUEUE_BYTES / 4 * 3
        } else {
            QUEUE_BYTES
        };
        queue
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |total| {
                (total == 0 || total + bytes <= limit).then_some(total + bytes)
            })
            .ok()?;
        queue.count.fetch_add(1, Ordering::Relaxed);
        if mine.count.fetch_add(1, Ordering::Relaxed) == 0 {
            queue.holders.fetch_add(1, Ordering::Relaxed);
        }
        mine.bytes.fetch_add(bytes, Ordering::Relaxed);
        Some(Self { share: share.clone(), stats: Arc::clone(stats), bytes })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let (queue, mine) = (&self.stats.queue, &self.share.0);
        queue.bytes.fetch_sub(self.bytes, Ordering::Relaxed);
        queue.count.fetch_sub(1, Ordering::Relaxed);
        mine.bytes.fetch_sub(self.bytes, Ordering::Relaxed);
        if mine.count.fetch_sub(1, Ordering::Relaxed) == 1 {
            queue.holders.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// One PUBLISH on its way to the broker.
#[derive(Debug)]
struct Publish {
    channel: Vec<u8>,
    message: Vec<u8>,
    reply: oneshot::Sender<Result<u64, RelayError>>,
    _held: Held,
    /// Traced: its span, open until the broker answers.
    span: Option<spans::Span>,
}

/// What PUBLISH uses; clones share the relay.
#[derive(Debug, Clone)]
pub(crate) struct Handle {
    queue: mpsc::Sender<Publish>,
    stats: Arc<RelayStats>,
    prefix: Arc<str>,
    /// Whether each PUBLISH is a span (`Config::trace_requests`).
    traced: bool,
}

impl Handle {
    /// Queues a PUBLISH of `text` on `topic` by `origin` for the broker, in request order; the
    /// receiver gets the broker's count (the replicas reached). Refused at once while the broker
    /// is out of reach, or when the queue is full or `share` holds its fair part of it.
    pub(crate) fn publish(
        &self,
        topic: &str,
        origin: Origin,
        text: &str,
        share: &Share,
    ) -> Result<oneshot::Receiver<Result<u64, RelayError>>, RelayError> {
        if !self.stats.up.load(Ordering::Relaxed) {
            return Err(RelayError::Unavailable);
        }
        let held = Held::take(share, &self.stats, text.len()).ok_or(RelayError::Busy)?;
        let (reply, answer) = oneshot::channel();
        let channel = [self.prefix.as_bytes(), topic.as_bytes()].concat();
        // Under the request's span: its context is the current one while PUBLISH starts.
        let span = if self.traced { spans::relay_publish(topic) } else { None };
        let publish = Publish { channel, message: Envelope::encode(origin, text), reply, _held: held, span };
        match self.queue.try_send(publish) {
            Ok(()) => Ok(answer),
            Err(mpsc::error::TrySendError::Full(_)) => Err(RelayError::Busy),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(RelayError::Unavailable),
        }
    }

    /// The relay's figures.
    pub(crate) fn stats(&self) -> &Arc<RelayStats> {
        &self.stats
    }
}

/// The relay's own end, for its task: see the module docs.
pub(crate) struct Relay {
    url: FanoutUrl,
    /// `--fanout-ca`'s PEM, for a `rediss://` broker with a private CA.
    ca: Option<Arc<[u8]>>,
    prefix: Arc<str>,
    queue: mpsc::Receiver<Publish>,
    stats: Arc<RelayStats>,
}

/// A relay for `url` (its certificate chaining to `ca`, over TLS) whose channels are topics
/// behind `prefix`: the handle PUBLISH uses, and the relay to run. With `traced`, each PUBLISH
/// sent to the broker is a span.
pub(crate) fn relay(url: &FanoutUrl, ca: Option<Arc<[u8]>>, prefix: &str, traced: bool) -> (Handle, Relay) {
    let (sender, queue) = mpsc::channel(QUEUE);
    let (stats, prefix) = (Arc::new(RelayStats::default()), Arc::<str>::from(prefix));
    let handle = Handle { queue: sender, stats: Arc::clone(&stats), prefix: Arc::clone(&prefix), traced };
    (handle, Relay { url: url.clone(), ca, prefix, queue, stats })
}

impl Relay {
    /// Relays until `drain`: connects, serves, and reconnects after each loss (see the module
    /// docs); at drain, sends what is queued and ends.
    pub(crate) async fn run(mut self, topics: Arc<Topics>, drain: CancellationToken) {
        let mut backoff = Backoff::jittered(MIN_BACKOFF, MAX_BACKOFF);
        // Whether a connection was ever lost (the next one is a reconnection), and whether the
        // relay has been disconnected since it last served (subscribers may have missed messages:
        // the next connection tells them so).
        let (mut lost_once, mut gap_due) = (false, false);
        loop {
            let connected = tokio::select! {
                () = drain.cancelled() => break,
                connected = Session::open(&self.url, self.ca.as_deref(), &self.prefix, &topics, &self.stats) => connected,
            };
            match connected {
                Ok(mut session) => {
                    backoff.succeeded();
                    self.stats.up.store(true, Ordering::Relaxed);
                    if lost_once {
                        self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::info!(broker = %self.url, "fan-out broker reachable");
                    let served = session.serve(&mut self.queue, &topics, &drain, gap_due).await;
                    self.stats.up.store(false, Ordering::Relaxed);
                    match served {
                        Ok(()) => return,
                        Err(error) => tracing::warn!(
                            broker = %self.url,
                            %error,
                            "fan-out broker lost; PUBLISH answers ERR unavailable until it is back"
                        ),
                    }
                    lost_once = true;
                }
                Err(error) => {
                    tracing::debug!(broker = %self.url, %error, "fan-out broker still out of reach")
                }
            }
            gap_due = true;
            // What was queued when the connection broke will not reach the broker.
            while let Ok(publish) = self.queue.try_recv() {
                let _ = publish.reply.send(Err(RelayError::Unavailable));
            }
            tokio::select! {
                () = drain.cancelled() => break,
                () = tokio::time::sleep(backoff.next_pause()) => {}
            }
        }
        self.queue.close();
        while let Ok(publish) = self.queue.try_recv() {
            let _ = publish.reply.send(Err(RelayError::Unavailable));
        }
    }
}

/// One connection to the broker: the subscriber and the publisher.
struct Session {
    subscriber: MultiplexedConnection,
    publisher: MultiplexedConnection,
    /// Told by redis-rs when the subscriber's connection closes.
    lost: Arc<Notify>,
    /// The topics the broker has confirmed this connection subscribes to.
    subscribed: HashSet<Arc<str>>,
    /// What every channel starts with.
    prefix: Arc<str>,
    stats: Arc<RelayStats>,
}

impl Session {
    /// Connects both, each bounded; the subscriber hands every pushed message to `topics`.
    async fn open(
        url: &FanoutUrl,
        ca: Option<&[u8]>,
        prefix: &Arc<str>,
        topics: &Arc<Topics>,
        stats: &Arc<RelayStats>,
    ) -> redis::RedisResult<Self> {
        let client = url.client(ca)?;
        let lost = Arc::new(Notify::new());
        let push = {
            let (topics, stats, lost, prefix) =
                (Arc::clone(topics), Arc::clone(stats), Arc::clone(&lost), Arc::clone(prefix));
            // Called by redis-rs's reader for each push: it must not wait, and does not
            // (`broadcast::Sender::send` never waits).
            move |push: PushInfo| -> Result<(), Infallible> {
                match (push.kind, push.data.as_slice()) {
                    (PushKind::Message, [Value::BulkString(channel), Value::BulkString(message)]) => {
                        stats.relayed.fetch_add(1, Ordering::Relaxed);
                        if let Err(why) = receive(&topics, &prefix, channel, message) {
                            stats.count_refused(why);
                        }
                    }
                    (PushKind::Disconnection, _) => lost.notify_one(),
                    _ => {}
                }
                Ok(())
            }
        };
        let subscriber =
            client.get_multiplexed_async_connection_with_config(&config().set_push_sender(push)).await?;
        let publisher = client.get_multiplexed_async_connection_with_config(&config()).await?;
        let (subscribed, prefix, stats) = (HashSet::new(), Arc::clone(prefix), Arc::clone(stats));
        Ok(Self { subscriber, publisher, lost, subscribed, prefix, stats })
    }

    /// Tells every local subscriber of the gap (after an outage) and subscribes to every local
    /// topic, then follows the topics and sends PUBLISHes until the connection is lost (an
    /// error) or `drain` (sends what is queued, then `Ok`).
    async fn serve(
        &mut self,
        queue: &mut mpsc::Receiver<Publish>,
        topics: &Topics,
        drain: &CancellationToken,
        after_outage: bool,
    ) -> redis::RedisResult<()> {
        // The GAP goes first: a message the broker pushes once subscribed can then never reach a
        // subscriber ahead of it.
        if after_outage {
            topics.gap_everywhere();
        }
        self.follow(topics).await?;
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            // Every branch is cancel-safe: `recv_many` loses nothing, and a `Notify` keeps its
            // permit for the next `notified()`.
            tokio::select! {
                biased;
                () = self.lost.notified() => {
                    return Err(redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset)));
                }
                () = drain.cancelled() => {
                    queue.close();
                    while queue.recv_many(&mut batch, BATCH).await > 0 {
                        self.publish(&mut batch).await?;
                    }
                    return Ok(());
                }
                () = topics.changed() => self.follow(topics).await?,
                received = queue.recv_many(&mut batch, BATCH) => {
                    if received == 0 {
                        return Ok(());
                    }
                    self.publish(&mut batch).await?;
                }
            }
        }
    }

    /// Subscribes to the topics that have local subscribers and unsubscribes from the others.
    async fn follow(&mut self, topics: &Topics) -> redis::RedisResult<()> {
        let wanted: HashSet<Arc<str>> = topics.names().into_iter().collect();
        let (new, gone) = changes(&self.subscribed, &wanted, &self.prefix);
        if !new.is_empty() {
            self.subscriber.subscribe(&new).await?;
        }
        if !gone.is_empty() {
            self.subscriber.unsubscribe(&gone).await?;
        }
        self.subscribed = wanted;
        Ok(())
    }

    /// Sends `batch` in one pipeline and answers each PUBLISH with the broker's count. A
    /// PUBLISH whose publisher stopped waiting (past [`ANSWER_TIMEOUT`]) is not sent: it was
    /// answered `ERR unavailable`.
    async fn publish(&mut self, batch: &mut Vec<Publish>) -> redis::RedisResult<()> {
        batch.retain(|publish| !publish.reply.is_closed());
        if batch.is_empty() {
            return Ok(());
        }
        let mut pipeline = redis::pipe();
        for publish in batch.iter() {
            pipeline.cmd("PUBLISH").arg(&publish.channel).arg(&publish.message);
        }
        match pipeline.query_async::<Vec<u64>>(&mut self.publisher).await {
            Ok(counts) => {
                self.stats.published.fetch_add(batch.len() as u64, Ordering::Relaxed);
                for (publish, count) in batch.drain(..).zip(counts) {
                    spans::end(publish.span, None);
                    let _ = publish.reply.send(Ok(count));
                }
                Ok(())
            }
            Err(error) => {
                for publish in batch.drain(..) {
                    spans::end(publish.span, Some(RelayError::Unavailable.code().as_str()));
                    let _ = publish.reply.send(Err(RelayError::Unavailable));
                }
                Err(error)
            }
        }
    }
}

/// A message the broker pushed on `channel`: delivered to the topic's subscribers here if it is
/// one of this deployment's, from a replica, and passes what a local PUBLISH must (see the
/// module docs).
fn receive(topics: &Topics, prefix: &str, channel: &[u8], message: &[u8]) -> Result<(), Refused> {
    let topic = channel
        .strip_prefix(prefix.as_bytes())
        .and_then(|topic| std::str::from_utf8(topic).ok())
        .filter(|topic| protocol::is_topic(topic))
        .ok_or(Refused::Foreign)?;
    let (origin, text) = Envelope::decode(message).unzip();
    topics.deliver_relayed(topic, origin, text.unwrap_or_default(), tokio::time::Instant::now())
}

/// The channels to subscribe to and to unsubscribe from, to go from `subscribed` to `wanted`.
fn changes(
    subscribed: &HashSet<Arc<str>>,
    wanted: &HashSet<Arc<str>>,
    prefix: &str,
) -> (Vec<String>, Vec<String>) {
    let channel = |topic: &Arc<str>| format!("{prefix}{topic}");
    let new = wanted.difference(subscribed).map(channel).collect();
    let gone = subscribed.difference(wanted).map(channel).collect();
    (new, gone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_carries_its_origin_and_refuses_what_has_none() {
        let origin = Origin { replica: u64::MAX, connection: 7 };
        let message = Envelope::encode(origin, "hello world");
        assert_eq!(message, b"ffffffffffffffff.7 hello world");
        assert_eq!(Envelope::decode(&message), Some((origin, &b"hello world"[..])));
        assert_eq!(Envelope::decode(b"a.b "), Some((Origin { replica: 10, connection: 11 }, &b""[..])));
        for bad in
            [&b"hello"[..], b"hello world", b"a. x", b".a x", b"A.1 x", b"+1.1 x", b"11111111111111111.1 x"]
        {
            assert_eq!(Envelope::decode(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn the_relay_subscribes_to_new_topics_and_leaves_the_gone_ones() {
        let set = |names: &[&str]| names.iter().map(|name| Arc::<str>::from(*name)).collect::<HashSet<_>>();
        let (mut new, mut gone) = changes(&set(&["a", "b"]), &set(&["b", "c", "d"]), "p:");
        new.sort();
        gone.sort();
        assert_eq!((new, gone), (vec!["p:c".to_owned(), "p:d".to_owned()], vec!["p:a".to_owned()]));
        let (new, gone) = changes(&set(&["a"]), &set(&["a"]), "p:");
        assert!(new.is_empty() && gone.is_empty(), "nothing to send when nothing changed");
    }

    const ORIGIN: Origin = Origin { replica: 1, connection: 1 };

    #[tokio::test(flavor = "current_thread")]
    async fn publish_is_refused_at_once_while_the_broker_is_out_of_reach_and_when_the_queue_is_full() {
        let (handle, mut relay) = relay(&FanoutUrl::parse("redis://127.0.0.1:1").unwrap(), None, "p:", false);
        let share = Share::default();
        assert!(matches!(handle.publish("t", ORIGIN, "x", &share), Err(RelayError::Unavailable)));
        relay.stats.up.store(true, Ordering::Relaxed);
        let shares: Vec<Share> = (0..QUEUE).map(|_| Share::default()).collect();
        let queued: Vec<_> = shares
            .iter()
            .map(|share| handle.publish("t", ORIGIN, "x", share).expect("room in the queue"))
            .collect();
        assert!(matches!(handle.publish("t", ORIGIN, "x", &share), Err(RelayError::Busy)), "bounded");
        let first = relay.queue.recv().await.expect("queued");
        assert_eq!((&first.channel[..], &first.message[..]), (&b"p:t"[..], &b"1.1 x"[..]), "in order");
        drop(queued);
    }

    /// One connection holds at most an equal part of the queue with one part kept for a
    /// newcomer, so a bystander gets in past any number of flooding connections.
    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_holds_only_its_fair_share_of_the_queue() {
        let (handle, relay) = relay(&FanoutUrl::parse("redis://127.0.0.1:1").unwrap(), None, "p:", false);
        relay.stats.up.store(true, Ordering::Relaxed);
        let mut answers = Vec::new();
        let mut fill = |share: &Share| {
            let mut held = 0;
            while let Ok(answer) = handle.publish("t", ORIGIN, "x", share) {
                answers.push(answer);
                held += 1;
            }
            held
        };
        let alone = Share::default();
        assert_eq!(fill(&alone), QUEUE / 2, "half, and half kept for a newcomer");
        let second = Share::default();
        assert_eq!(fill(&second), QUEUE / 4, "up to three quarters of the queue");
        let floods: Vec<Share> = (0..62).map(|_| Share::default()).collect();
        for flood in &floods {
            assert_eq!(fill(flood), 1, "one each in the last quarter");
        }
        let bystander = Share::default();
        assert!(handle.publish("t", ORIGIN, "x", &bystander).is_ok(), "a newcomer still gets in");
        assert_eq!(relay.stats.queue.holders.load(Ordering::Relaxed), 65);
        drop(answers);
    }

    /// The queue's texts are bounded in bytes: a broker that hangs cannot grow it past
    /// [`QUEUE_BYTES`], and what is answered or dropped gives its room back.
    #[tokio::test(flavor = "current_thread")]
    async fn the_queue_is_bounded_in_bytes_and_gives_room_back() {
        let (handle, mut relay) = relay(&FanoutUrl::parse("redis://127.0.0.1:1").unwrap(), None, "p:", false);
        relay.stats.up.store(true, Ordering::Relaxed);
        let megabyte = "x".repeat(1 << 20);
        let shares: Vec<Share> = (0..16).map(|_| Share::default()).collect();
        let accepted =
            shares.iter().filter(|share| handle.publish("t", ORIGIN, &megabyte, share).is_ok()).count();
        assert_eq!(accepted, QUEUE_BYTES >> 20, "8 MiB of texts, from connections with none waiting");
        assert_eq!(relay.stats.queue.bytes.load(Ordering::Relaxed), QUEUE_BYTES);
        drop(relay.queue.recv().await);
        assert_eq!(relay.stats.queue.bytes.load(Ordering::Relaxed), QUEUE_BYTES - (1 << 20), "room back");
        let huge = "x".repeat(QUEUE_BYTES + 1);
        while relay.queue.try_recv().is_ok() {}
        assert!(handle.publish("t", ORIGIN, &huge, &Share::default()).is_ok(), "one longer passes alone");
        assert!(matches!(handle.publish("t", ORIGIN, "x", &Share::default()), Err(RelayError::Busy)));
    }
}
