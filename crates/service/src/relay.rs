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
//! * **The publisher**: PUBLISH requests go into one bounded queue ([`QUEUE`]) in request order,
//!   and the relay sends them to Redis in pipelines of up to [`BATCH`], in that order. So a
//!   topic's messages from one publishing connection reach every subscriber on every replica in
//!   the order published, pipelined PUBLISHes included. The answer is Redis's count: the
//!   replicas with subscribers to the topic (this one included), not the subscribers.
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
//! A message from Redis longer than `--max-message` (another program published it) is not kept:
//! its subscribers get `GAP` instead, so the topics' memory ceiling holds whoever publishes.
//!
//! redis-rs drives each connection on a task of its own, which it aborts when the connection is
//! dropped: at drain, when the relay ends after sending what is queued.

use std::collections::HashSet;
use std::convert::Infallible;
use std::fmt;
use std::hash::{BuildHasher as _, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, IntoConnectionInfo as _, ProtocolVersion, PushInfo, PushKind, Value};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::protocol::ErrorCode;
use crate::topics::Topics;

/// PUBLISH requests waiting for the broker, at most; past it, `ERR busy`.
const QUEUE: usize = 1024;
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

/// The broker's address, as `--fanout-url` takes it: `redis://[user:password@]host:port[/db]`.
/// Shown (in logs, errors and `Debug`) without its password.
#[derive(Clone, PartialEq, Eq)]
pub struct FanoutUrl {
    url: String,
    shown: String,
}

impl FanoutUrl {
    /// Parses a `redis://` URL (what `--fanout-url` accepts), or says why not in one line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some(rest) = text.strip_prefix("redis://") else {
            return Err("a redis:// URL, such as redis://127.0.0.1:6379".to_owned());
        };
        text.into_connection_info().map_err(|error| format!("not a Redis URL: {error}"))?;
        // `user:password@` is everything before the last `@` of the authority.
        let authority = rest.split('/').next().unwrap_or_default();
        let shown = match authority.rsplit_once('@') {
            Some((userinfo, _)) if userinfo.contains(':') => {
                let user = userinfo.split(':').next().unwrap_or_default();
                format!("redis://{user}:***@{}", &rest[userinfo.len() + 1..])
            }
            _ => text.to_owned(),
        };
        Ok(Self { url: text.to_owned(), shown })
    }

    /// A client for it, speaking RESP3 (pushed messages share the connection with answers).
    fn client(&self) -> redis::RedisResult<redis::Client> {
        let info = self.url.as_str().into_connection_info()?;
        let resp3 = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
        redis::Client::open(info.set_redis_settings(resp3))
    }

    /// Connects once, bounded, and asks the broker for PING: what start-up checks, so that a
    /// wrong address or password is found when the service is deployed, not at the first PUBLISH.
    pub async fn check(&self) -> Result<(), String> {
        let unusable = |error: redis::RedisError| format!("cannot use the broker: {error}");
        let client = self.client().map_err(unusable)?;
        let mut connection =
            client.get_multiplexed_async_connection_with_config(&config()).await.map_err(unusable)?;
        redis::cmd("PING").query_async::<()>(&mut connection).await.map_err(unusable)
    }
}

impl fmt::Display for FanoutUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for FanoutUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FanoutUrl({})", self.shown)
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
    /// [`QUEUE`] PUBLISH requests already wait for the broker.
    #[error("too many PUBLISH requests wait for the fan-out broker")]
    Busy,
}

impl RelayError {
    /// The answer's error code.
    pub(crate) fn code(self) -> ErrorCode {
        match self {
            Self::Unavailable => ErrorCode::Unavailable,
            Self::Busy => ErrorCode::Busy,
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
}

impl RelayStats {
    /// Whether the broker is reachable, reconnects, messages relayed here, messages published.
    pub(crate) fn read(&self) -> (bool, u64, u64, u64) {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        (self.up.load(Ordering::Relaxed), load(&self.reconnects), load(&self.relayed), load(&self.published))
    }
}

/// One PUBLISH on its way to the broker.
#[derive(Debug)]
struct Publish {
    topic: Arc<str>,
    text: Arc<str>,
    reply: oneshot::Sender<Result<u64, RelayError>>,
}

/// What PUBLISH uses; clones share the relay.
#[derive(Debug, Clone)]
pub(crate) struct Handle {
    queue: mpsc::Sender<Publish>,
    stats: Arc<RelayStats>,
}

impl Handle {
    /// Queues a PUBLISH for the broker, in request order; the receiver gets the broker's count
    /// (the replicas reached). Refused at once while the broker is out of reach or the queue is
    /// full.
    pub(crate) fn publish(
        &self,
        topic: &str,
        text: &str,
    ) -> Result<oneshot::Receiver<Result<u64, RelayError>>, RelayError> {
        if !self.stats.up.load(Ordering::Relaxed) {
            return Err(RelayError::Unavailable);
        }
        let (reply, answer) = oneshot::channel();
        let publish = Publish { topic: topic.into(), text: text.into(), reply };
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
    queue: mpsc::Receiver<Publish>,
    stats: Arc<RelayStats>,
}

/// A relay for `url`: the handle PUBLISH uses, and the relay to run.
pub(crate) fn relay(url: &FanoutUrl) -> (Handle, Relay) {
    let (sender, queue) = mpsc::channel(QUEUE);
    let stats = Arc::new(RelayStats::default());
    (Handle { queue: sender, stats: Arc::clone(&stats) }, Relay { url: url.clone(), queue, stats })
}

impl Relay {
    /// Relays until `drain`: connects, serves, and reconnects after each loss (see the module
    /// docs); at drain, sends what is queued and ends.
    pub(crate) async fn run(mut self, topics: Arc<Topics>, drain: CancellationToken) {
        let mut backoff = Backoff::default();
        // Whether a connection was ever lost (the next one is a reconnection), and whether the
        // relay has been disconnected since it last served (subscribers may have missed messages:
        // the next connection tells them so).
        let (mut lost_once, mut gap_due) = (false, false);
        loop {
            let connected = tokio::select! {
                () = drain.cancelled() => break,
                connected = Session::open(&self.url, &topics, &self.stats) => connected,
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
}

impl Session {
    /// Connects both, each bounded; the subscriber hands every pushed message to `topics`.
    async fn open(
        url: &FanoutUrl,
        topics: &Arc<Topics>,
        stats: &Arc<RelayStats>,
    ) -> redis::RedisResult<Self> {
        let client = url.client()?;
        let lost = Arc::new(Notify::new());
        let push = {
            let (topics, stats, lost) = (Arc::clone(topics), Arc::clone(stats), Arc::clone(&lost));
            // Called by redis-rs's reader for each push: it must not wait, and does not
            // (`broadcast::Sender::send` never waits).
            move |push: PushInfo| -> Result<(), Infallible> {
                match (push.kind, push.data.as_slice()) {
                    (PushKind::Message, [Value::BulkString(topic), Value::BulkString(text)]) => {
                        stats.relayed.fetch_add(1, Ordering::Relaxed);
                        topics.deliver_relayed(&String::from_utf8_lossy(topic), text);
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
        Ok(Self { subscriber, publisher, lost, subscribed: HashSet::new() })
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
        let (new, gone) = changes(&self.subscribed, &wanted);
        if !new.is_empty() {
            self.subscriber.subscribe(&new).await?;
        }
        if !gone.is_empty() {
            self.subscriber.unsubscribe(&gone).await?;
        }
        self.subscribed = wanted;
        Ok(())
    }

    /// Sends `batch` in one pipeline and answers each PUBLISH with the broker's count.
    async fn publish(&mut self, batch: &mut Vec<Publish>) -> redis::RedisResult<()> {
        let mut pipeline = redis::pipe();
        for publish in batch.iter() {
            pipeline.cmd("PUBLISH").arg(&*publish.topic).arg(&*publish.text);
        }
        match pipeline.query_async::<Vec<u64>>(&mut self.publisher).await {
            Ok(counts) => {
                for (publish, count) in batch.drain(..).zip(counts) {
                    let _ = publish.reply.send(Ok(count));
                }
                Ok(())
            }
            Err(error) => {
                for publish in batch.drain(..) {
                    let _ = publish.reply.send(Err(RelayError::Unavailable));
                }
                Err(error)
            }
        }
    }
}

/// What to subscribe to and what to unsubscribe from, to go from `subscribed` to `wanted`.
fn changes(subscribed: &HashSet<Arc<str>>, wanted: &HashSet<Arc<str>>) -> (Vec<String>, Vec<String>) {
    let new = wanted.difference(subscribed).map(|topic| topic.to_string()).collect();
    let gone = subscribed.difference(wanted).map(|topic| topic.to_string()).collect();
    (new, gone)
}

/// The pause before each reconnection: drawn at random below a bound that doubles from
/// [`MIN_BACKOFF`] to [`MAX_BACKOFF`] while attempts fail ("full jitter"), and starts again
/// after a success.
#[derive(Debug)]
struct Backoff {
    bound: Duration,
    random: RandomState,
    draws: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { bound: MIN_BACKOFF, random: RandomState::new(), draws: 0 }
    }
}

impl Backoff {
    fn succeeded(&mut self) {
        self.bound = MIN_BACKOFF;
    }

    fn next_pause(&mut self) -> Duration {
        // `RandomState` is seeded at random per process: hashing a counter with it draws
        // numbers that differ between replicas, which is all jitter needs.
        self.draws += 1;
        let fraction = (self.random.hash_one(self.draws) >> 11) as f64 / (1u64 << 53) as f64;
        let pause = self.bound.mul_f64(fraction);
        self.bound = (self.bound * 2).min(MAX_BACKOFF);
        pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_is_a_redis_url_and_is_shown_without_its_password() {
        let url = FanoutUrl::parse("redis://app:s3cret@redis.internal:6380/2").unwrap();
        assert_eq!(url.to_string(), "redis://app:***@redis.internal:6380/2");
        assert!(!format!("{url:?}").contains("s3cret"));
        assert_eq!(FanoutUrl::parse("redis://127.0.0.1:6379").unwrap().to_string(), "redis://127.0.0.1:6379");
        for bad in ["127.0.0.1:6379", "http://x", "rediss://x:1", "redis://host:notaport"] {
            assert!(FanoutUrl::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn the_relay_subscribes_to_new_topics_and_leaves_the_gone_ones() {
        let set = |names: &[&str]| names.iter().map(|name| Arc::<str>::from(*name)).collect::<HashSet<_>>();
        let (mut new, mut gone) = changes(&set(&["a", "b"]), &set(&["b", "c", "d"]));
        new.sort();
        gone.sort();
        assert_eq!((new, gone), (vec!["c".to_owned(), "d".to_owned()], vec!["a".to_owned()]));
        let (new, gone) = changes(&set(&["a"]), &set(&["a"]));
        assert!(new.is_empty() && gone.is_empty(), "nothing to send when nothing changed");
    }

    #[test]
    fn reconnect_pauses_stay_below_a_bound_that_doubles_to_its_maximum() {
        let mut backoff = Backoff::default();
        let mut bound = MIN_BACKOFF;
        let mut pauses = Vec::new();
        for _ in 0..12 {
            let pause = backoff.next_pause();
            assert!(pause < bound, "{pause:?} under {bound:?}");
            pauses.push(pause);
            bound = (bound * 2).min(MAX_BACKOFF);
        }
        assert!(pauses.windows(2).any(|pair| pair[0] != pair[1]), "jittered: {pauses:?}");
        backoff.succeeded();
        assert!(backoff.next_pause() < MIN_BACKOFF, "back to the start after a success");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn publish_is_refused_at_once_while_the_broker_is_out_of_reach_and_when_the_queue_is_full() {
        let (handle, mut relay) = relay(&FanoutUrl::parse("redis://127.0.0.1:1").unwrap());
        assert!(matches!(handle.publish("t", "x"), Err(RelayError::Unavailable)), "not connected yet");
        relay.stats.up.store(true, Ordering::Relaxed);
        let queued: Vec<_> =
            (0..QUEUE).map(|_| handle.publish("t", "x").expect("room in the queue")).collect();
        assert!(matches!(handle.publish("t", "x"), Err(RelayError::Busy)), "the queue is bounded");
        assert_eq!(relay.queue.recv().await.map(|publish| publish.topic), Some("t".into()), "in order");
        drop(queued);
    }
}
