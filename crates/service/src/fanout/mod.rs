//! Fan-out: a `tokio::sync::broadcast` channel per topic, and each connection's subscriptions.
//! With `--fanout-url`, PUBLISH goes to the broker instead, and the relay feeds these same
//! channels with what the broker sends (see `fanout/relay.rs`): everything below holds either way.
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
//!   subscriber's connection, so it is charged to budgets of deliveries a second: its
//!   connection's, the process's, and with a relay the publisher's on every replica its message
//!   reaches (see `fanout/budget.rs`). Past them a local publisher's next request waits (the message
//!   already sent stays sent, and order is kept); a relayed message past them is not delivered,
//!   and its subscribers are told how many they missed (`LAG`) before the next one.
//! * **The broker is input, not a trusted peer.** A message from it becomes at most one `MSG`
//!   line, and only one that a local PUBLISH could have produced ([`message_text`]); anything
//!   else is counted and missed (`LAG`), never passed on.
//!
//! On a multi-threaded runtime, a connection that subscribes is served on threads of its own
//! from then on, at a lower priority, so that deliveries do not delay other clients' answers
//! (see `fanout/subscriber_threads.rs`).
//!
//! The map of topics sits behind a `std::sync::Mutex`, held only to look up, create or remove a
//! channel and never across an `.await` (tokio's docs on `Mutex`: a blocking mutex is the right
//! choice for short critical sections without awaits).

use std::collections::HashMap;
use std::pin::Pin;
#[cfg(feature = "redis")]
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::sync::broadcast;
#[cfg(feature = "redis")]
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tokio_stream::StreamMap;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

#[cfg(feature = "redis")]
use self::budget::{Origin, OriginBudgets};
use self::budget::{ProcessBudget, PublishBudget};
#[cfg(feature = "redis")]
use self::relay::{Refused, RelayError};
use crate::config::Config;
use crate::protocol::{ErrorCode, Push};
use crate::stats::Stats;

pub(crate) mod budget;
#[cfg(feature = "redis")]
#[cfg_attr(not(feature = "redis"), path = "../part_left_out.rs")]
pub(crate) mod relay;
pub(crate) mod subscriber_threads;

/// What a topic's channel carries: cheap to clone into every subscriber's queue.
#[derive(Debug, Clone)]
pub(crate) enum Delivery {
    /// A published message's text: cloned for each subscriber, so inline when short (see the
    /// workspace manifest's `smol_str`).
    Message(smol_str::SmolStr),
    /// This many messages from the broker were not delivered here (past a budget, or refused).
    Missed(u64),
    /// Messages may be missing here, and how many cannot be known: the broker was out of reach.
    #[cfg(feature = "redis")]
    Gap,
}

/// One topic: its channel, and what its subscribers have missed and not been told yet.
#[derive(Debug)]
struct Channel {
    sender: broadcast::Sender<Delivery>,
    /// Messages from the broker not delivered since the last delivery: told as one `LAG`
    /// before the next message, so that a flood past the budget costs no line per message.
    missed: u64,
}

impl Channel {
    /// Sends `delivery` to every subscriber, after a `LAG` for what they missed; how many it
    /// reached.
    fn send(&mut self, delivery: Delivery) -> usize {
        self.tell_missed();
        self.sender.send(delivery).unwrap_or(0)
    }

    /// Sends the `LAG` for what the subscribers missed, if they missed anything.
    fn tell_missed(&mut self) {
        if self.missed > 0 {
            let _ = self.sender.send(Delivery::Missed(std::mem::take(&mut self.missed)));
        }
    }
}

/// Every topic with at least one subscriber; shared by the whole service.
#[derive(Debug)]
pub(crate) struct Topics {
    channels: Mutex<HashMap<Arc<str>, Channel>>,
    /// Messages each topic keeps for subscribers that are behind.
    capacity: usize,
    /// Topics that may exist at once.
    max_topics: usize,
    /// Topics one connection may subscribe to.
    max_subscriptions: usize,
    /// The longest text a message may have.
    max_message: usize,
    /// Each connection's deliveries a second (`--publish-budget`), for local and relayed
    /// publishers alike.
    publish_budget: usize,
    /// Every delivery this process makes.
    process_budget: Arc<ProcessBudget>,
    /// The budgets of the publishers on other replicas, for what the broker relays here.
    #[cfg(feature = "redis")]
    origins: Mutex<OriginBudgets>,
    /// This replica, in the origin of what it publishes through the broker.
    #[cfg(feature = "redis")]
    replica: u64,
    /// The next connection's number, in the origin of what it publishes.
    #[cfg(feature = "redis")]
    connections: AtomicU64,
    stats: Arc<Stats>,
    /// With `--fanout-url`, the relay that PUBLISH goes through; `None`: topics live here only.
    #[cfg(feature = "redis")]
    relay: Option<relay::Handle>,
    /// Woken when a topic is created or removed, so the relay follows (only with a relay).
    #[cfg(feature = "redis")]
    changed: Notify,
}

/// Where a PUBLISH went.
#[derive(Debug)]
pub(crate) enum Published {
    /// Delivered here, to this many subscribers.
    Here(usize),
    /// Handed to the relay; the broker's count (replicas reached) comes on the receiver.
    #[cfg(feature = "redis")]
    Relayed(oneshot::Receiver<Result<u64, RelayError>>),
}

/// Why a PUBLISH was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PublishError {
    /// Its text is longer than this many bytes.
    #[error("a text is at most {0} bytes")]
    TooLong(usize),
    /// Its text holds a control character (a tab aside).
    #[error("a text holds no control character but tab")]
    Control,
    /// The broker is out of reach (or the relay's queue is full): refused at once.
    #[cfg(feature = "redis")]
    #[error("{0}")]
    Relay(RelayError),
}

impl PublishError {
    /// The answer's error code.
    pub(crate) fn code(self) -> ErrorCode {
        match self {
            Self::TooLong(_) | Self::Control => ErrorCode::BadArgument,
            #[cfg(feature = "redis")]
            Self::Relay(error) => error.code(),
        }
    }
}

/// A message's text, checked: at most `max` bytes of UTF-8 with no control character but tab.
/// So a `MSG` line is one line, and nothing in it moves a cursor on a subscriber's terminal.
/// Local PUBLISHes and the broker's messages pass the same check.
pub(crate) fn message_text(text: &[u8], max: usize) -> Result<&str, PublishError> {
    if text.len() > max {
        return Err(PublishError::TooLong(max));
    }
    // Control characters are ASCII (C0, DEL) or U+0080..=U+009F: checked on the bytes first,
    // the common case, then on the characters only if a byte is past ASCII.
    let text = std::str::from_utf8(text).map_err(|_| PublishError::Control)?;
    if text.bytes().any(|b| (b.is_ascii_control() && b != b'\t') || !b.is_ascii())
        && text.chars().any(|c| c.is_control() && c != '\t')
    {
        return Err(PublishError::Control);
    }
    Ok(text)
}

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many topics")]
pub(crate) struct TooManyTopics;

/// What one connection publishes with: its number (its origin through a broker), its budget,
/// and its share of the relay's queue.
#[derive(Debug)]
pub(crate) struct Publisher {
    #[cfg(feature = "redis")]
    connection: u64,
    pub(crate) budget: PublishBudget,
    #[cfg(feature = "redis")]
    share: relay::Share,
}

impl Topics {
    /// Topics bounded as `config` says, living here only (see [`Self::with_relay`]).
    pub(crate) fn new(config: &Config, stats: Arc<Stats>) -> Self {
        Self {
            channels: Mutex::default(),
            capacity: config.topic_capacity.get(),
            max_topics: config.max_topics.get(),
            max_subscriptions: config.max_subscriptions.get(),
            max_message: config.max_message.get(),
            publish_budget: config.publish_budget.get(),
            process_budget: Arc::new(ProcessBudget::new(config.process_publish_budget.get())),
            #[cfg(feature = "redis")]
            origins: Mutex::new(OriginBudgets::new(config.publish_budget.get())),
            #[cfg(feature = "redis")]
            replica: crate::backoff::random(),
            #[cfg(feature = "redis")]
            connections: AtomicU64::new(0),
            stats,
            #[cfg(feature = "redis")]
            relay: None,
            #[cfg(feature = "redis")]
            changed: Notify::new(),
        }
    }

    /// These topics spanning every replica through `relay` (`None`: living here only).
    #[cfg(feature = "redis")]
    pub(crate) fn with_relay(self, relay: Option<relay::Handle>) -> Self {
        Self { relay, ..self }
    }

    /// A new connection's publisher.
    pub(crate) fn publisher(&self) -> Publisher {
        Publisher {
            #[cfg(feature = "redis")]
            connection: self.connections.fetch_add(1, Ordering::Relaxed),
            budget: PublishBudget::new(self.publish_budget, Arc::clone(&self.process_budget)),
            #[cfg(feature = "redis")]
            share: relay::Share::default(),
        }
    }

    /// Publishes `text` on `topic` for `publisher`, charging its budget (see `fanout/budget.rs`).
    /// Without a relay, it is sent to every subscriber here, and the answer is how many it
    /// reached (0 if nobody subscribes: the message goes nowhere, and no topic is created). With
    /// one, it goes to the broker, which sends it to every replica with subscribers (this one
    /// too), in the order published.
    pub(crate) fn publish(
        &self,
        topic: &str,
        text: &str,
        publisher: &mut Publisher,
        now: Instant,
    ) -> Result<Published, PublishError> {
        let text = message_text(text.as_bytes(), self.max_message)?;
        #[cfg(feature = "redis")]
        if let Some(relay) = &self.relay {
            let origin = Origin { replica: self.replica, connection: publisher.connection };
            let answer = relay.publish(topic, origin, text, &publisher.share).map_err(PublishError::Relay)?;
            // This replica's own subscribers are charged now: its deliveries of its own messages
            // are not charged again when the broker sends them back.
            publisher.budget.spend(self.local_subscribers(topic), now);
            self.stats.count_published();
            return Ok(Published::Relayed(answer));
        }
        let reached = self.deliver(topic, Delivery::Message(smol_str::SmolStr::new(text)));
        publisher.budget.spend(reached, now);
        self.stats.count_published();
        Ok(Published::Here(reached))
    }

    /// Sends `delivery` to every subscriber of `topic` here; returns how many it reached.
    pub(crate) fn deliver(&self, topic: &str, delivery: Delivery) -> usize {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        channels.get_mut(topic).map_or(0, |channel| channel.send(delivery))
    }

    /// A message from the broker for `topic`, published by `origin` (`None`: it named none):
    /// delivered here if its text passes [`message_text`] and its publisher's budget and the
    /// process's are open at `now` (its own replica's messages were charged when published).
    /// Otherwise it is missed: its subscribers are told with the next message, or at once for a
    /// message refused.
    #[cfg(feature = "redis")]
    pub(crate) fn deliver_relayed(
        &self,
        topic: &str,
        origin: Option<Origin>,
        text: &[u8],
        now: Instant,
    ) -> Result<(), Refused> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(channel) = channels.get_mut(topic) else { return Ok(()) };
        let subscribers = channel.sender.receiver_count();
        let checked = match (origin, message_text(text, self.max_message)) {
            (None, _) => Err(Refused::Malformed),
            (Some(_), Err(PublishError::TooLong(_))) => Err(Refused::TooLong),
            (Some(_), Err(_)) => Err(Refused::NotText),
            (Some(origin), Ok(text)) => Ok((origin, text)),
        };
        let (origin, text) = match checked {
            Ok(checked) => checked,
            Err(why) => {
                channel.missed += 1;
                // Told at once, if the process can afford the line.
                if self.process_budget.try_spend(subscribers, now) {
                    channel.tell_missed();
                }
                return Err(why);
            }
        };
        if origin.replica != self.replica {
            let origins = &mut self.origins.lock().unwrap_or_else(PoisonError::into_inner);
            if !origins.try_spend(origin, subscribers, now)
                || !self.process_budget.try_spend(subscribers, now)
            {
                channel.missed += 1;
                return Err(Refused::OverBudget);
            }
        }
        channel.send(Delivery::Message(smol_str::SmolStr::new(text)));
        Ok(())
    }

    /// With a relay, its figures.
    #[cfg(feature = "redis")]
    pub(crate) fn relay_stats(&self) -> Option<relay::Figures> {
        self.relay.as_ref().map(|relay| relay.stats().read())
    }

    /// Subscribers of `topic` here.
    #[cfg(feature = "redis")]
    pub(crate) fn local_subscribers(&self, topic: &str) -> usize {
        let channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        channels.get(topic).map_or(0, |channel| channel.sender.receiver_count())
    }

    /// Tells every subscriber of every topic that messages may be missing (after an outage).
    #[cfg(feature = "redis")]
    pub(crate) fn gap_everywhere(&self) {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        for channel in channels.values_mut() {
            channel.send(Delivery::Gap);
        }
    }

    /// The topics alive now, for the relay to subscribe to.
    #[cfg(feature = "redis")]
    pub(crate) fn names(&self) -> Vec<Arc<str>> {
        self.channels.lock().unwrap_or_else(PoisonError::into_inner).keys().cloned().collect()
    }

    /// Waits until a topic is created or removed.
    #[cfg(feature = "redis")]
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Topics alive now.
    pub(crate) fn count(&self) -> usize {
        self.channels.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    fn subscribe(&self, topic: &str) -> Result<broadcast::Receiver<Delivery>, TooManyTopics> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(channel) = channels.get(topic) {
            return Ok(channel.sender.subscribe());
        }
        if channels.len() >= self.max_topics {
            return Err(TooManyTopics);
        }
        let (sender, receiver) = broadcast::channel(self.capacity);
        channels.insert(Arc::from(topic), Channel { sender, missed: 0 });
        #[cfg(feature = "redis")]
        if self.relay.is_some() {
            self.changed.notify_one();
        }
        Ok(receiver)
    }

    /// Removes `topic` if nobody subscribes to it any more.
    fn release(&self, topic: &str) {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if channels.get(topic).is_some_and(|channel| channel.sender.receiver_count() == 0) {
            channels.remove(topic);
            #[cfg(feature = "redis")]
            if self.relay.is_some() {
                self.changed.notify_one();
            }
        }
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
            let receiver = self.topics.subscribe(topic)?;
            // The connection's own copy of the name: each pushed line carries a clone of it,
            // and clones of one shared `Arc` bounced its count's cache line between the cores.
            self.streams.insert(Arc::from(topic), BroadcastStream::new(receiver));
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
                Ok(Delivery::Missed(missed)) => Push::Lagged(topic, missed),
                #[cfg(feature = "redis")]
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
    #[cfg(feature = "redis")]
    use std::time::Duration;

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
        Arc::new(Topics::new(&config, Arc::new(Stats::default())))
    }

    /// A PUBLISH from a connection of its own.
    fn publish(topics: &Topics, topic: &str, text: &str) -> Result<Published, PublishError> {
        topics.publish(topic, text, &mut topics.publisher(), Instant::now())
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_topic_lives_exactly_as_long_as_its_subscribers() {
        let topics = topics(4, 8);
        let (mut first, mut second) =
            (Subscriptions::new(Arc::clone(&topics)), Subscriptions::new(Arc::clone(&topics)));
        assert!(matches!(publish(&topics, "news", "nobody"), Ok(Published::Here(0))));
        assert_eq!(topics.count(), 0, "publishing creates no topic");
        first.subscribe("news").unwrap();
        second.subscribe("news").unwrap();
        assert_eq!(topics.count(), 1);
        assert!(matches!(publish(&topics, "news", "hello"), Ok(Published::Here(2))));
        assert!(
            matches!(publish(&topics, "news", "123456789"), Err(PublishError::TooLong(8))),
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
                matches!(publish(&topics, "t", &i.to_string()), Ok(Published::Here(1))),
                "the publisher never waits"
            );
        }
        assert_eq!(slow.next().await, Some(Push::Lagged("t".into(), 3)));
        assert_eq!(slow.next().await, Some(Push::Message("t".into(), "3".into())));
        assert_eq!(slow.next().await, Some(Push::Message("t".into(), "4".into())));
    }

    /// With a relay, the relay is woken when a topic gets its first local subscriber and when it
    /// loses its last, and not for the subscribers in between.
    #[cfg(feature = "redis")]
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn the_relay_hears_of_a_topic_s_first_and_last_local_subscriber_only() {
        let count = |n| std::num::NonZeroUsize::new(n).unwrap();
        let config = Config { topic_capacity: count(4), max_topics: count(8), ..Config::default() };
        let (handle, _relay) = crate::fanout::relay::relay(
            &crate::FanoutUrl::parse("redis://127.0.0.1:1").unwrap(),
            None,
            "p:",
            false,
        );
        let topics = Arc::new(Topics::new(&config, Arc::new(Stats::default())).with_relay(Some(handle)));
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
    fn past_max_topics_a_new_topic_is_refused_but_an_old_one_is_not() {
        let topics = topics(2, 2);
        let mut subscriptions = Subscriptions::new(Arc::clone(&topics));
        subscriptions.subscribe("a").unwrap();
        subscriptions.subscribe("b").unwrap();
        assert_eq!(subscriptions.subscribe("c"), Err(TooManyTopics));
        let mut other = Subscriptions::new(Arc::clone(&topics));
        assert_eq!(other.subscribe("a"), Ok(()), "an existing topic takes more subscribers");
    }

    #[test]
    fn a_message_is_one_line_without_control_characters() {
        assert_eq!(message_text(b"hello\tworld \xc3\xa9", 16), Ok("hello\tworld \u{e9}"));
        assert_eq!(message_text(b"", 16), Ok(""));
        for bad in [&b"a\nOK 42"[..], b"a\rb", b"\x1b[2J", b"\x7f", "\u{85}".as_bytes(), b"\xff\xfe"] {
            assert_eq!(message_text(bad, 16), Err(PublishError::Control), "{bad:?}");
        }
        assert_eq!(message_text(&[b'x'; 17], 16), Err(PublishError::TooLong(16)));
    }

    /// What the broker sends is checked like a local PUBLISH and charged to its publisher: a
    /// refused message or one past the budget is missed and told as `LAG`, never passed on.
    #[cfg(feature = "redis")]
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn the_broker_s_messages_are_checked_and_charged_to_their_publisher() {
        let count = |n| std::num::NonZeroUsize::new(n).unwrap();
        let config = Config {
            topic_capacity: count(64),
            max_message: count(8),
            publish_budget: count(10),
            ..Config::default()
        };
        let topics = Arc::new(Topics::new(&config, Arc::new(Stats::default())));
        let mut subscriber = Subscriptions::new(Arc::clone(&topics));
        subscriber.subscribe("t").unwrap();
        let (remote, other) = (Origin { replica: 7, connection: 1 }, Origin { replica: 7, connection: 2 });
        let now = Instant::now();
        let next = async |subscriber: &mut Subscriptions| subscriber.next().await.unwrap();
        assert_eq!(topics.deliver_relayed("t", Some(remote), b"ok", now), Ok(()));
        assert_eq!(next(&mut subscriber).await, Push::Message("t".into(), "ok".into()));
        for (bad, why) in [
            (&b"a\nOK 42"[..], Refused::NotText),
            (b"\xff", Refused::NotText),
            (b"123456789", Refused::TooLong),
        ] {
            assert_eq!(topics.deliver_relayed("t", Some(remote), bad, now), Err(why));
            assert_eq!(next(&mut subscriber).await, Push::Lagged("t".into(), 1), "told at once");
        }
        assert_eq!(topics.deliver_relayed("t", None, b"no origin", now), Err(Refused::Malformed));
        assert_eq!(next(&mut subscriber).await, Push::Lagged("t".into(), 1));
        // At 10 a second, one delivery costs 100 ms: the burst (100 ms ahead) lets one more in.
        assert_eq!(topics.deliver_relayed("t", Some(remote), b"burst", now), Ok(()));
        assert_eq!(next(&mut subscriber).await, Push::Message("t".into(), "burst".into()));
        assert_eq!(topics.deliver_relayed("t", Some(remote), b"over", now), Err(Refused::OverBudget));
        assert_eq!(topics.deliver_relayed("t", Some(remote), b"over", now), Err(Refused::OverBudget));
        assert_eq!(topics.deliver_relayed("t", Some(other), b"other", now), Ok(()), "another publisher");
        assert_eq!(next(&mut subscriber).await, Push::Lagged("t".into(), 2), "the two missed, first");
        assert_eq!(next(&mut subscriber).await, Push::Message("t".into(), "other".into()));
        let own = Origin { replica: topics.replica, connection: 1 };
        for _ in 0..5 {
            assert_eq!(
                topics.deliver_relayed("t", Some(own), b"mine", now),
                Ok(()),
                "charged when published"
            );
        }
        assert_eq!(topics.deliver_relayed("nobody", Some(remote), b"x", now), Ok(()), "no topic here");
    }
}
