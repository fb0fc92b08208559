//! Fan-out: a `tokio::sync::broadcast` channel per topic, and each connection's subscriptions.
//! With `--fanout-url`, PUBLISH goes to the broker instead, and the relay feeds these same
//! channels with what the broker sends (see `relay.rs`): everything below holds either way.
//!
//! The rules a fan-out must keep, and how:
//!
//! * **Nothing waits on a subscriber.** `broadcast::Sender::send` never waits: each topic keeps
//!   its last `topic_capacity` messages, and a subscriber that falls further behind loses the
//!   oldest ones. A publisher never notices a slow subscriber.
//! * **No silent loss.** A subscriber that fell behind reads `Lagged(n)` from its receiver
//!   (through tokio-stream's `BroadcastStream`), which its connection passes on as
//!   `LAG <topic> <n>`. So for every subscriber, messages received + missed = messages published
//!   while it was subscribed. (tokio-rs/mini-redis skips lagged messages without a word.)
//! * **Nothing grows without bound.** A topic exists only while it has subscribers: the first
//!   subscription creates it, the last one to go removes it, so subscribing to random names
//!   leaks nothing. Past `max_topics` topics in all, a new topic is refused, and one connection
//!   holds at most `max_subscriptions` (a 64th of them or less: see [`crate::config`]).
//! * **A memory ceiling.** A PUBLISH text is at most `max_message` bytes, and each topic keeps
//!   at most `topic_capacity` messages, each dropped once every subscriber has read it. So what
//!   the topics keep is at most [`Config::fanout_memory`] (36 MiB at the defaults), whatever
//!   peers do; `App::start` refuses settings that would allow more than 1 GiB.
//!
//! * **One publisher cannot crowd out the others.** A PUBLISH costs a write on every
//!   subscriber's connection, so one connection pipelining them to a thousand subscribers makes
//!   a thousand times the work it sends. Each connection has a [`PublishBudget`] of deliveries
//!   per second; past it, its next request waits (the message already sent stays sent, and order
//!   is kept: only the start of new requests is delayed).
//!
//! The map of topics sits behind a `std::sync::Mutex`, held only to look up, create or remove a
//! channel and never across an `.await` (tokio's docs on `Mutex`: a blocking mutex is the right
//! choice for short critical sections without awaits).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::{Notify, broadcast, oneshot};
use tokio::time::Instant;
use tokio_stream::StreamMap;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::config::Config;
use crate::protocol::{ErrorCode, Push};
use crate::relay::{self, RelayError};
use crate::stats::Stats;

/// What a topic's channel carries: cheap to clone into every subscriber's queue.
#[derive(Debug, Clone)]
pub(crate) enum Delivery {
    /// A published message's text.
    Message(Arc<str>),
    /// Messages may be missing here: the broker was out of reach, or sent one too long to keep.
    Gap,
}

/// Every topic with at least one subscriber; shared by the whole service.
#[derive(Debug)]
pub(crate) struct Topics {
    channels: Mutex<HashMap<Arc<str>, broadcast::Sender<Delivery>>>,
    /// Messages each topic keeps for subscribers that are behind.
    capacity: usize,
    /// Topics that may exist at once.
    max_topics: usize,
    /// Topics one connection may subscribe to.
    max_subscriptions: usize,
    /// The longest text a message may have.
    max_message: usize,
    stats: Arc<Stats>,
    /// With `--fanout-url`, the relay that PUBLISH goes through; `None`: topics live here only.
    relay: Option<relay::Handle>,
    /// Woken when a topic is created or removed, so the relay follows (only with a relay).
    changed: Notify,
}

/// Where a PUBLISH went.
#[derive(Debug)]
pub(crate) enum Published {
    /// Delivered here, to this many subscribers.
    Here(usize),
    /// Handed to the relay; the broker's count (replicas reached) comes on the receiver.
    Relayed(oneshot::Receiver<Result<u64, RelayError>>),
}

/// Why a PUBLISH was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PublishError {
    /// Its text is longer than this many bytes.
    #[error("a text is at most {0} bytes")]
    TooLong(usize),
    /// The broker is out of reach (or the relay's queue is full): refused at once.
    #[error("{0}")]
    Relay(RelayError),
}

impl PublishError {
    /// The answer's error code.
    pub(crate) fn code(self) -> ErrorCode {
        match self {
            Self::TooLong(_) => ErrorCode::BadArgument,
            Self::Relay(error) => error.code(),
        }
    }
}

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many topics")]
pub(crate) struct TooManyTopics;

impl Topics {
    /// Topics bounded as `config` says, living here only (`relay` is `None`) or spanning every
    /// replica through the relay.
    pub(crate) fn new(config: &Config, stats: Arc<Stats>, relay: Option<relay::Handle>) -> Self {
        Self {
            channels: Mutex::default(),
            capacity: config.topic_capacity.get(),
            max_topics: config.max_topics.get(),
            max_subscriptions: config.max_subscriptions.get(),
            max_message: config.max_message.get(),
            stats,
            relay,
            changed: Notify::new(),
        }
    }

    /// Publishes `text` on `topic`. Without a relay, it is sent to every subscriber here, and the
    /// answer is how many it reached (0 if nobody subscribes: the message goes nowhere, and no
    /// topic is created). With one, it goes to the broker, which sends it to every replica with
    /// subscribers (this one too), in the order published.
    pub(crate) fn publish(&self, topic: &str, text: &str) -> Result<Published, PublishError> {
        if text.len() > self.max_message {
            return Err(PublishError::TooLong(self.max_message));
        }
        let published = match &self.relay {
            None => Published::Here(self.deliver(topic, Delivery::Message(Arc::from(text)))),
            Some(relay) => Published::Relayed(relay.publish(topic, text).map_err(PublishError::Relay)?),
        };
        self.stats.count_published();
        Ok(published)
    }

    /// Sends `delivery` to every subscriber of `topic` here; returns how many it reached.
    pub(crate) fn deliver(&self, topic: &str, delivery: Delivery) -> usize {
        let channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        channels.get(topic).and_then(|channel| channel.send(delivery).ok()).unwrap_or(0)
    }

    /// A message from the broker for `topic`: delivered here, or a [`Delivery::Gap`] if it is
    /// longer than any PUBLISH here may be (another program published it), so that the topics'
    /// memory ceiling holds whoever publishes.
    pub(crate) fn deliver_relayed(&self, topic: &str, text: &[u8]) {
        let delivery = if text.len() > self.max_message {
            Delivery::Gap
        } else {
            Delivery::Message(String::from_utf8_lossy(text).into())
        };
        self.deliver(topic, delivery);
    }

    /// With a relay, its figures: the broker reachable, reconnects, messages relayed, published.
    pub(crate) fn relay_stats(&self) -> Option<(bool, u64, u64, u64)> {
        self.relay.as_ref().map(|relay| relay.stats().read())
    }

    /// Subscribers of `topic` here.
    pub(crate) fn local_subscribers(&self, topic: &str) -> usize {
        let channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        channels.get(topic).map_or(0, broadcast::Sender::receiver_count)
    }

    /// Tells every subscriber of every topic that messages may be missing (after an outage).
    pub(crate) fn gap_everywhere(&self) {
        let channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        for channel in channels.values() {
            let _ = channel.send(Delivery::Gap);
        }
    }

    /// The topics alive now, for the relay to subscribe to.
    pub(crate) fn names(&self) -> Vec<Arc<str>> {
        self.channels.lock().unwrap_or_else(PoisonError::into_inner).keys().cloned().collect()
    }

    /// Waits until a topic is created or removed.
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Topics alive now.
    pub(crate) fn count(&self) -> usize {
        self.channels.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    fn subscribe(&self, topic: &str) -> Result<(Arc<str>, broadcast::Receiver<Delivery>), TooManyTopics> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((name, channel)) = channels.get_key_value(topic) {
            return Ok((Arc::clone(name), channel.subscribe()));
        }
        if channels.len() >= self.max_topics {
            return Err(TooManyTopics);
        }
        let name: Arc<str> = Arc::from(topic);
        let (channel, receiver) = broadcast::channel(self.capacity);
        channels.insert(Arc::clone(&name), channel);
        if self.relay.is_some() {
            self.changed.notify_one();
        }
        Ok((name, receiver))
    }

    /// Removes `topic` if nobody subscribes to it any more.
    fn release(&self, topic: &str) {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if channels.get(topic).is_some_and(|channel| channel.receiver_count() == 0) {
            channels.remove(topic);
            if self.relay.is_some() {
                self.changed.notify_one();
            }
        }
    }
}

/// How many deliveries one connection's PUBLISHes may cause per second: the generic cell rate
/// algorithm (GCRA, a token bucket kept as one instant). Each delivery costs `1 / rate`
/// seconds of the connection's allowance, which may run ahead of now by a tenth of a second
/// (the burst). Past that, the connection waits until it is back within it.
#[derive(Debug)]
pub(crate) struct PublishBudget {
    /// The cost of one delivery.
    per_delivery: Duration,
    /// How far ahead of now the allowance may run.
    burst: Duration,
    /// The instant the deliveries so far have used the allowance up to.
    used_until: Option<Instant>,
}

impl PublishBudget {
    /// A budget of `rate` deliveries a second.
    pub(crate) fn new(rate: usize) -> Self {
        let per_delivery = Duration::from_secs(1)
            .checked_div(u32::try_from(rate).unwrap_or(u32::MAX))
            .unwrap_or(Duration::ZERO);
        Self { per_delivery, burst: Duration::from_millis(100), used_until: None }
    }

    /// Records `deliveries` made at `now`.
    pub(crate) fn spend(&mut self, deliveries: usize, now: Instant) {
        let from = self.used_until.map_or(now, |until| until.max(now));
        let cost = self.per_delivery.saturating_mul(u32::try_from(deliveries).unwrap_or(u32::MAX));
        self.used_until = Some(from + cost);
    }

    /// Until when the connection must wait before its next request, if it must.
    pub(crate) fn wait_until(&self, now: Instant) -> Option<Instant> {
        let resume = self.used_until?.checked_sub(self.burst)?;
        (resume > now).then_some(resume)
    }
}

/// One connection's subscriptions, polled by its loop as a stream of [`Push`]es. Dropping it
/// unsubscribes from everything (and removes topics left without subscribers).
pub(crate) struct Subscriptions {
    streams: StreamMap<Arc<str>, BroadcastStream<Delivery>>,
    topics: Arc<Topics>,
}

impl Subscriptions {
    pub(crate) fn new(topics: Arc<Topics>) -> Self {
        Self { streams: StreamMap::new(), topics }
    }

    /// Topics subscribed to now.
    pub(crate) fn len(&self) -> usize {
        self.streams.len()
    }

    /// Topics this connection may subscribe to at most.
    pub(crate) fn limit(&self) -> usize {
        self.topics.max_subscriptions
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Whether `topic` is subscribed to already.
    pub(crate) fn contains(&self, topic: &str) -> bool {
        self.streams.contains_key(topic)
    }

    /// Subscribes to `topic` (nothing happens if it already is).
    pub(crate) fn subscribe(&mut self, topic: &str) -> Result<(), TooManyTopics> {
        if !self.streams.contains_key(topic) {
            let (name, receiver) = self.topics.subscribe(topic)?;
            self.streams.insert(name, BroadcastStream::new(receiver));
        }
        Ok(())
    }

    /// Unsubscribes from `topic`, if subscribed.
    pub(crate) fn unsubscribe(&mut self, topic: &str) {
        if self.streams.remove(topic).is_some() {
            self.topics.release(topic);
        }
    }

    /// Unsubscribes from every topic.
    pub(crate) fn clear(&mut self) {
        let names: Vec<Arc<str>> = self.streams.keys().cloned().collect();
        self.streams.clear();
        for name in names {
            self.topics.release(&name);
        }
    }
}

impl Stream for Subscriptions {
    type Item = Push;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Push>> {
        Pin::new(&mut self.streams).poll_next(cx).map(|next| {
            next.map(|(topic, received)| match received {
                Ok(Delivery::Message(text)) => Push::Message(topic, text),
                Ok(Delivery::Gap) => Push::Gap(topic),
                Err(BroadcastStreamRecvError::Lagged(missed)) => Push::Lagged(topic, missed),
            })
        })
    }
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt as _;

    use super::*;

    fn topics(capacity: usize, max_topics: usize) -> Arc<Topics> {
        let count = |n| std::num::NonZeroUsize::new(n).unwrap();
        let config = Config {
            topic_capacity: count(capacity),
            max_topics: count(max_topics),
            max_message: count(8),
            ..Config::default()
        };
        Arc::new(Topics::new(&config, Arc::new(Stats::default()), None))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_topic_lives_exactly_as_long_as_its_subscribers() {
        let topics = topics(4, 8);
        let (mut first, mut second) =
            (Subscriptions::new(Arc::clone(&topics)), Subscriptions::new(Arc::clone(&topics)));
        assert!(matches!(topics.publish("news", "nobody"), Ok(Published::Here(0))));
        assert_eq!(topics.count(), 0, "publishing creates no topic");
        first.subscribe("news").unwrap();
        second.subscribe("news").unwrap();
        assert_eq!(topics.count(), 1);
        assert!(matches!(topics.publish("news", "hello"), Ok(Published::Here(2))));
        assert!(
            matches!(topics.publish("news", "123456789"), Err(PublishError::TooLong(8))),
            "past max_message"
        );
        assert_eq!(first.next().await, Some(Push::Message("news".into(), "hello".into())));
        first.unsubscribe("news");
        assert_eq!(topics.count(), 1, "the second still subscribes");
        drop(second);
        assert_eq!(topics.count(), 0, "gone with its last subscriber");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_subscriber_that_falls_behind_is_told_how_much_it_missed() {
        let topics = topics(2, 8);
        let mut slow = Subscriptions::new(Arc::clone(&topics));
        slow.subscribe("t").unwrap();
        for i in 0..5 {
            assert!(
                matches!(topics.publish("t", &i.to_string()), Ok(Published::Here(1))),
                "the publisher never waits"
            );
        }
        assert_eq!(slow.next().await, Some(Push::Lagged("t".into(), 3)));
        assert_eq!(slow.next().await, Some(Push::Message("t".into(), "3".into())));
        assert_eq!(slow.next().await, Some(Push::Message("t".into(), "4".into())));
    }

    /// With a relay, the relay is woken when a topic gets its first local subscriber and when it
    /// loses its last, and not for the subscribers in between.
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn the_relay_hears_of_a_topic_s_first_and_last_local_subscriber_only() {
        let count = |n| std::num::NonZeroUsize::new(n).unwrap();
        let config = Config { topic_capacity: count(4), max_topics: count(8), ..Config::default() };
        let (handle, _relay) =
            crate::relay::relay(&crate::relay::FanoutUrl::parse("redis://127.0.0.1:1").unwrap());
        let topics = Arc::new(Topics::new(&config, Arc::new(Stats::default()), Some(handle)));
        let woken =
            || async { tokio::time::timeout(Duration::from_millis(1), topics.changed()).await.is_ok() };
        let (mut first, mut second) =
            (Subscriptions::new(Arc::clone(&topics)), Subscriptions::new(Arc::clone(&topics)));
        assert!(!woken().await, "nothing yet");
        first.subscribe("news").unwrap();
        assert!(woken().await, "the first local subscriber");
        second.subscribe("news").unwrap();
        first.unsubscribe("news");
        assert!(!woken().await, "the topic still has a local subscriber");
        drop(second);
        assert!(woken().await, "the last one left");
        assert!(topics.names().is_empty());
    }

    #[test]
    fn a_publisher_past_its_budget_waits_until_it_is_back_within_its_burst() {
        // 1,000 deliveries a second: one costs 1 ms, and the burst is 100 ms (100 deliveries).
        let mut budget = PublishBudget::new(1000);
        let start = Instant::now();
        budget.spend(100, start);
        assert_eq!(budget.wait_until(start), None, "a burst of 100 passes at once");
        budget.spend(1000, start);
        assert_eq!(
            budget.wait_until(start),
            Some(start + Duration::from_millis(1000)),
            "1,100 ms used, 100 ahead"
        );
        let later = start + Duration::from_secs(5);
        assert_eq!(budget.wait_until(later), None, "an idle budget does not bank more than its burst");
        budget.spend(200, later);
        assert_eq!(budget.wait_until(later), Some(later + Duration::from_millis(100)));
    }

    #[test]
    fn past_max_topics_a_new_topic_is_refused_but_an_old_one_is_not() {
        let topics = topics(2, 2);
        let mut subscriptions = Subscriptions::new(Arc::clone(&topics));
        subscriptions.subscribe("a").unwrap();
        subscriptions.subscribe("b").unwrap();
        assert_eq!(subscriptions.subscribe("c"), Err(TooManyTopics));
        let mut other = Subscriptions::new(Arc::clone(&topics));
        assert_eq!(other.subscribe("a"), Ok(()), "an existing topic takes more subscribers");
    }
}
