//! The service's settings, each written once.
//!
//! Every setting is one field of [`Config`]. Its doc comment is its help text, and its `#[arg]`
//! attribute holds its flag, its default and its bounds. The same definition gives
//! `Config::default()` and the `serve` command line (where [`crate::cli`] adds an environment
//! variable to each flag). Nothing else repeats a setting's name, default or bound. A few help
//! texts name a constant of the code they describe (the keepalive's probes, a publisher's burst,
//! the topics' ceiling): a test beside each constant checks that its help still says it.
//!
//! Every bound is finite. A value outside its bounds is refused with a one-line error before
//! anything starts. The upper bounds also keep the service clear of panics inside tokio: a
//! semaphore holds at most `usize::MAX >> 3` permits, and `Instant + Duration` panics on overflow.
//!
//! Tests and programs that embed the server build a `Config` in code, with struct-update syntax
//! (`Config { idle_timeout: .., ..Config::default() }`). Counts are `NonZero` there too, so a
//! zero bound cannot be written; the upper bounds are enforced only when parsing.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::ops::RangeInclusive;
#[cfg(feature = "tls")]
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::TypedValueParser as _;

#[cfg(feature = "redis")]
pub use self::fanout_url::FanoutUrl;
#[cfg(feature = "redis")]
use self::fanout_url::FanoutUrlParser;

#[cfg(feature = "redis")]
#[cfg_attr(not(feature = "redis"), path = "../part_left_out.rs")]
mod fanout_url;

/// Everything `serve` can be told. Each field is a bound or a timeout; none is infinite.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct Config {
    /// Address to listen on. Loopback by default: exposing a service is a deliberate act (use
    /// 0.0.0.0:PORT).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7878")]
    pub listen: SocketAddr,

    /// Address of the admin HTTP listener (`/livez`, `/readyz`, `/metrics`). Loopback by default,
    /// like `--listen`; a container sets 0.0.0.0:7879 so that probes and Prometheus reach it.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7879")]
    pub admin_listen: SocketAddr,

    /// Address of the HTTP front: the commands, PUBLISH and SUBSCRIBE over HTTP/1.1 and HTTP/2,
    /// with the same bounds, TLS and shutdown as --listen (README, "HTTP"). Off unless given.
    #[cfg(feature = "http")]
    #[arg(long, value_name = "ADDR")]
    pub http_listen: Option<SocketAddr>,

    /// HTTP requests answered at once, at most, over every HTTP connection; past it a request
    /// is answered 503 busy at once (load shedding, not a queue).
    #[cfg(feature = "http")]
    #[arg(long, value_name = "N", default_value = "1024", value_parser = count(1..=1_000_000))]
    pub http_max_requests: NonZeroUsize,

    /// Time for an HTTP request, from its head to its answer's head (a Server-Sent Events
    /// stream is not bounded by it); past it, 504 timeout.
    #[cfg(feature = "http")]
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration(MILLISECOND..=HOUR))]
    pub http_request_timeout: Duration,

    /// PEM certificate chain (the server's first) to serve TLS with, with --tls-key; without
    /// them, plain TCP. SIGHUP, or a change to one of the TLS files (they are checked every
    /// minute), reads them again.
    #[cfg(feature = "tls")]
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[cfg(feature = "tls")]
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificates: every client must then present a certificate that chains to one
    /// (mutual TLS). Without it, any client may connect over TLS.
    #[cfg(feature = "tls")]
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// With TLS, time for a new connection's handshake, counted once it has a connection slot.
    #[cfg(feature = "tls")]
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration(MILLISECOND..=MINUTE))]
    pub tls_handshake_timeout: Duration,

    /// Connections open at once, line and HTTP together; one more is answered `ERR busy` (on
    /// the HTTP port, 503) and closed.
    #[arg(long, value_name = "N", default_value = "1024", value_parser = count(1..=1_000_000))]
    pub max_connections: NonZeroUsize,

    /// Connections the kernel may hold for us before we accept them (the listen backlog).
    #[arg(long, value_name = "N", default_value = "1024", value_parser = clap::value_parser!(u32).range(1..=65_535))]
    pub backlog: u32,

    /// While nothing is in flight, time for a complete request line (over HTTP/1, a request's
    /// head) to arrive. A peer trickling bytes without finishing a line is cut off too.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration(MILLISECOND..=DAY))]
    pub idle_timeout: Duration,

    /// Time for each write to a peer; a peer that stops reading is dropped.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration(MILLISECOND..=HOUR))]
    pub write_timeout: Duration,

    /// TCP keepalive: after this long with nothing from the peer, the kernel probes it (every
    /// 10 s, or this if shorter; 3 probes), so a peer that vanished without a word (no FIN, no
    /// RST), such as a subscriber waiting for pushes, is found and its connection closed.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration(SECOND..=2 * HOUR))]
    pub keepalive: Duration,

    /// The kernel's send buffer for each connection, in bytes (SO_SNDBUF; Linux doubles it for
    /// its bookkeeping). It bounds what a peer that does not read parks in the kernel: by
    /// default the kernel grows it to 4 MiB per socket, outside the process's memory.
    #[arg(long, value_name = "BYTES", default_value = "65536", value_parser = count(4096..=16 << 20))]
    pub send_buffer: NonZeroUsize,

    /// Longest request line, in bytes, without its line ending (over HTTP, the longest body).
    /// It bounds the memory of a connection, whatever the peer sends.
    #[arg(long, value_name = "BYTES", default_value = "8192", value_parser = count(1..=16 << 20))]
    pub max_line: NonZeroUsize,

    /// Requests in flight per connection (pipelining depth; over HTTP/2, concurrent streams).
    /// Past it, no new request from that connection starts until an answer has gone out.
    #[arg(long, value_name = "N", default_value = "32", value_parser = count(1..=1024))]
    pub max_in_flight: NonZeroUsize,

    /// CPU jobs that may wait for a worker; when the queue is full, a new job is answered
    /// `ERR busy`.
    #[arg(long, value_name = "N", default_value = "64", value_parser = count(1..=65_536))]
    pub queue_capacity: NonZeroUsize,

    /// CPU jobs that run at once.
    #[arg(long, value_name = "N", default_value = "2", value_parser = count(1..=1024))]
    pub workers: NonZeroUsize,

    /// Deadline of a CPU job, counted from when it is queued; past it the job is answered
    /// `ERR timeout`.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration(MILLISECOND..=HOUR))]
    pub job_timeout: Duration,

    /// On shutdown, time to go on serving with `/readyz` answering 503 before draining, so load
    /// balancers stop sending new connections first (Kubernetes: the time its endpoints take).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = duration(Duration::ZERO..=FIVE_MINUTES))]
    pub drain_delay: Duration,

    /// On shutdown, time for in-flight requests to finish before they are answered
    /// `ERR shutting-down`.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration(Duration::ZERO..=HOUR))]
    pub shutdown_grace: Duration,

    /// Messages each topic keeps for a subscriber that is behind; one further behind loses the
    /// oldest and is told how many (`LAG`).
    #[arg(long, value_name = "N", default_value = "32", value_parser = count(1..=65_536))]
    pub topic_capacity: NonZeroUsize,

    /// Topics that may exist at once; past it, a subscription to a new topic is `ERR busy`.
    #[arg(long, value_name = "N", default_value = "1024", value_parser = count(1..=1_000_000))]
    pub max_topics: NonZeroUsize,

    /// Topics one connection may subscribe to; past it, `ERR busy`. At most `--max-topics`
    /// / 64, so that no fewer than 64 connections can take every topic.
    #[arg(long, value_name = "N", default_value = "16", value_parser = count(1..=1024))]
    pub max_subscriptions: NonZeroUsize,

    /// Messages one connection's PUBLISHes may deliver per second, counted per subscriber
    /// reached and one at least (bursts of a tenth of it pass at once). Past it, that
    /// connection's next request waits: it bounds what one publisher costs everyone else. With
    /// --fanout-url, it holds on every replica the messages reach.
    #[arg(long, value_name = "N", default_value = "200000", value_parser = count(1..=1_000_000_000))]
    pub publish_budget: NonZeroUsize,

    /// Messages the whole process may deliver per second, whoever publishes: past it, local
    /// publishers wait, and messages relayed from other replicas are missed (`LAG`).
    #[arg(long, value_name = "N", default_value = "1000000", value_parser = count(1..=1_000_000_000))]
    pub process_publish_budget: NonZeroUsize,

    /// A Redis to relay topics through, so they span every replica pointed at it
    /// (`redis://[user:password@]host:port[/db]`; `rediss://` for TLS, in a build with it).
    /// Without it, topics live in this process. The broker must answer at start; an outage later
    /// costs only PUBLISH (`ERR unavailable`).
    #[cfg(feature = "redis")]
    #[arg(long, value_name = "URL", value_parser = FanoutUrlParser)]
    pub fanout_url: Option<FanoutUrl>,

    /// PEM CA certificates that a rediss:// broker's certificate must chain to (a private CA,
    /// as managed Redis often has); without it, the system's trusted roots.
    #[cfg(all(feature = "redis", feature = "tls"))]
    #[arg(long, value_name = "PATH")]
    pub fanout_ca: Option<PathBuf>,

    /// What every Redis channel starts with: deployments that share a Redis (whatever the
    /// database) hear each other only with the same prefix. Default: the program's name and
    /// the --fanout-url database (`NAME:DB:`).
    #[cfg(feature = "redis")]
    #[arg(long, value_name = "PREFIX", value_parser = fanout_url::prefix)]
    pub fanout_prefix: Option<String>,

    /// Longest PUBLISH text, in bytes. With `--max-topics` and `--topic-capacity` it bounds what
    /// the topics keep for subscribers that are behind (36 MiB at the defaults; at most 1 GiB).
    #[arg(long, value_name = "BYTES", default_value = "1024", value_parser = count(1..=16 << 20))]
    pub max_message: NonZeroUsize,

    /// Threads in the CPU (rayon) pool; 0 means one per core.
    #[arg(long, value_name = "N", default_value = "0", value_parser = clap::value_parser!(u16).range(0..=1024).map(usize::from))]
    pub cpu_threads: usize,

    /// Threads that serve subscribed connections, at a lower priority (on Linux) than those that
    /// answer requests, so that deliveries do not delay other clients' answers; 0 means as many as
    /// the request runtime has (`TOKIO_WORKER_THREADS`, else one per core).
    #[arg(long, value_name = "N", default_value = "0", value_parser = clap::value_parser!(u16).range(0..=1024).map(usize::from))]
    pub subscriber_threads: usize,

    /// With TLS, how often the files are checked for a change, which reloads them (not a flag).
    #[cfg(feature = "tls")]
    #[arg(skip = Duration::from_secs(60))]
    pub tls_watch_period: Duration,

    /// With TLS, the longest a reload waits for the files to be read (not a flag): a stuck
    /// mount costs a reload this, and never shutdown.
    #[cfg(feature = "tls")]
    #[arg(skip = Duration::from_secs(5))]
    pub tls_read_timeout: Duration,

    /// How often the stall watchdog checks the runtime (not a flag).
    #[arg(skip = Duration::from_millis(250))]
    pub watchdog_period: Duration,

    /// A watchdog tick later than this is logged as a stall (not a flag).
    #[arg(skip = Duration::from_millis(100))]
    pub stall_threshold: Duration,

    /// Whether the service makes the spans of a trace: one per request, per TLS handshake and
    /// per PUBLISH relayed to the broker, on the global OpenTelemetry tracer provider (not a
    /// flag: `main` sets it when `OTEL_EXPORTER_OTLP_ENDPOINT` is set; see `telemetry/spans.rs`).
    /// Without the `otel` feature nothing is traced, whatever it says.
    #[arg(skip)]
    pub trace_requests: bool,
}

pub(crate) const MILLISECOND: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);
#[cfg(feature = "tls")]
const MINUTE: Duration = Duration::from_secs(60);
const FIVE_MINUTES: Duration = Duration::from_secs(300);
pub(crate) const HOUR: Duration = Duration::from_secs(3600);
pub(crate) const DAY: Duration = Duration::from_secs(24 * 3600);

impl Default for Config {
    /// The defaults written in the `#[arg]` attributes, read through clap without the environment.
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            config: Config,
        }
        <Defaults as clap::Parser>::try_parse_from(["defaults"])
            .expect("every default is within its bounds (tested)")
            .config
    }
}

/// The most the topics may keep, in all, for subscribers that are behind.
pub(crate) const MAX_FANOUT_MEMORY: u64 = 1 << 30;
/// No fewer connections than this, each at `--max-subscriptions`, can take every topic.
pub(crate) const CONNECTIONS_TO_FILL_TOPICS: usize = 64;
/// What one kept message costs beyond its text: its allocation's header and the allocator's
/// rounding (an upper bound).
const MESSAGE_OVERHEAD: u64 = 64;
/// What one slot of a topic's ring costs (a `broadcast` slot: a lock, a count, a position and a
/// pointer; an upper bound).
const SLOT_BYTES: u64 = 48;

/// Settings that are each within bounds but do not fit together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The topics could keep more memory than `MAX_FANOUT_MEMORY` (1 GiB).
    #[error(
        "--max-topics x --topic-capacity x --max-message let the topics keep {} MiB, over {} MiB: lower one of them",
        .0 >> 20,
        MAX_FANOUT_MEMORY >> 20
    )]
    FanoutMemory(u64),
    /// A channel prefix without a broker to use it on.
    #[cfg(feature = "redis")]
    #[error("--fanout-prefix needs --fanout-url")]
    PrefixWithoutBroker,
    /// A CA for a broker that does not speak TLS.
    #[cfg(all(feature = "redis", feature = "tls"))]
    #[error("--fanout-ca needs a rediss:// --fanout-url")]
    CaWithoutTls,
    /// Fewer than `CONNECTIONS_TO_FILL_TOPICS` (64) connections could take every topic.
    #[error(
        "--max-subscriptions {asked} lets fewer than {CONNECTIONS_TO_FILL_TOPICS} connections take all of --max-topics {topics}: at most {allowed}"
    )]
    Subscriptions {
        /// `--max-subscriptions`.
        asked: usize,
        /// `--max-topics`.
        topics: usize,
        /// The most `--max-subscriptions` may be with these `--max-topics`.
        allowed: usize,
    },
}

impl Config {
    /// The most memory the topics can keep, whatever peers do: every topic's ring full of the
    /// longest messages, none yet read by every subscriber. (A message is dropped as soon as every
    /// subscriber has read it; a subscriber further behind than the ring loses the oldest.)
    pub fn fanout_memory(&self) -> u64 {
        let slots = self.topic_capacity.get().next_power_of_two() as u64;
        let message = self.max_message.get() as u64 + MESSAGE_OVERHEAD + SLOT_BYTES;
        (self.max_topics.get() as u64).saturating_mul(slots).saturating_mul(message)
    }

    /// The most topics one connection may take: `max_subscriptions`, if it fits.
    fn subscriptions_allowed(&self) -> usize {
        (self.max_topics.get() / CONNECTIONS_TO_FILL_TOPICS).max(1)
    }

    /// Checks what single bounds cannot: that the settings fit together.
    pub fn check(&self) -> Result<(), ConfigError> {
        #[cfg(feature = "redis")]
        if self.fanout_prefix.is_some() && self.fanout_url.is_none() {
            return Err(ConfigError::PrefixWithoutBroker);
        }
        #[cfg(all(feature = "redis", feature = "tls"))]
        if self.fanout_ca.is_some() && !self.fanout_url.as_ref().is_some_and(FanoutUrl::tls) {
            return Err(ConfigError::CaWithoutTls);
        }
        let memory = self.fanout_memory();
        if memory > MAX_FANOUT_MEMORY {
            return Err(ConfigError::FanoutMemory(memory));
        }
        let allowed = self.subscriptions_allowed();
        if self.max_subscriptions.get() > allowed {
            let (asked, topics) = (self.max_subscriptions.get(), self.max_topics.get());
            return Err(ConfigError::Subscriptions { asked, topics, allowed });
        }
        Ok(())
    }
}

/// A count within `range`.
fn count(range: RangeInclusive<u64>) -> impl clap::builder::TypedValueParser<Value = NonZeroUsize> {
    clap::value_parser!(u64).range(range).try_map(|value| {
        usize::try_from(value).ok().and_then(NonZeroUsize::new).ok_or("not a count this machine can hold")
    })
}

/// A human-readable duration (`250ms`, `5s`, `1m`) within `range`.
pub(crate) fn duration(
    range: RangeInclusive<Duration>,
) -> impl clap::builder::TypedValueParser<Value = Duration> {
    move |text: &str| {
        let value = humantime::parse_duration(text).map_err(|error| error.to_string())?;
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(format!(
                "{text} is not between {} and {}",
                humantime::format_duration(*range.start()),
                humantime::format_duration(*range.end())
            ))
        }
    }
}

/// `--flag`'s help text, for the tests that hold it to the constants it names.
#[cfg(test)]
pub(crate) fn help(flag: &str) -> String {
    let command = <Config as clap::Args>::augment_args(clap::Command::new("serve"));
    let arg = command.get_arguments().find(|arg| arg.get_long() == Some(flag));
    arg.and_then(clap::Arg::get_help).map(ToString::to_string).unwrap_or_else(|| panic!("no --{flag}"))
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn help_texts_say_the_constants_they_name() {
        let memory = Config::default().fanout_memory() as f64 / f64::from(1 << 20);
        let max_message = help("max-message");
        assert!(max_message.contains(&format!("{memory:.0} MiB at the defaults")), "{max_message}");
        assert!(MAX_FANOUT_MEMORY == 1 << 30 && max_message.contains("at most 1 GiB"), "{max_message}");
        let subscriptions = help("max-subscriptions");
        assert!(subscriptions.contains(&format!("/ {CONNECTIONS_TO_FILL_TOPICS}, so")), "{subscriptions}");
    }

    #[cfg(feature = "tls")]
    #[test]
    fn the_tls_help_says_how_often_the_files_are_checked() {
        let watch = help("tls-cert");
        assert!(Config::default().tls_watch_period == MINUTE && watch.contains("every minute"), "{watch}");
    }

    #[derive(Debug, clap::Parser)]
    struct Flags {
        #[command(flatten)]
        config: Config,
    }

    fn parse(args: &[&str]) -> Result<Config, String> {
        Flags::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
            .map(|flags| flags.config)
            .map_err(|error| error.to_string())
    }

    #[test]
    fn defaults_are_loopback_and_within_bounds() {
        let config = Config::default();
        assert!(config.listen.ip().is_loopback());
        assert_eq!(config.max_connections.get(), 1024);
        assert_eq!(config.idle_timeout, Duration::from_secs(30));
    }

    #[test]
    fn durations_are_human_readable_and_bounded() {
        let config = parse(&["--idle-timeout", "250ms", "--job-timeout", "1m"]).unwrap();
        assert_eq!(config.idle_timeout, Duration::from_millis(250));
        assert_eq!(config.job_timeout, Duration::from_secs(60));
        let refused = parse(&["--idle-timeout", "300000000000y"]).unwrap_err();
        assert!(refused.contains("--idle-timeout"), "{refused}");
        let refused = parse(&["--job-timeout", "2h"]).unwrap_err();
        assert!(refused.contains("2h is not between 1ms and 1h"), "{refused}");
        assert!(parse(&["--idle-timeout", "0s"]).is_err());
        assert_eq!(parse(&["--shutdown-grace", "0s"]).unwrap().shutdown_grace, Duration::ZERO);
    }

    #[cfg(feature = "tls")]
    #[test]
    fn tls_takes_a_certificate_and_its_key_or_neither() {
        assert_eq!(parse(&[]).unwrap().tls_cert, None, "plain TCP by default");
        let both = parse(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]).unwrap();
        assert_eq!(both.tls_key, Some(PathBuf::from("k.pem")));
        for alone in [&["--tls-cert", "c.pem"][..], &["--tls-key", "k.pem"], &["--tls-client-ca", "ca.pem"]] {
            let refused = parse(alone).unwrap_err();
            assert!(refused.contains("required arguments were not provided"), "{alone:?}: {refused}");
        }
        assert!(parse(&["--tls-handshake-timeout", "2m"]).is_err());
    }

    #[test]
    fn counts_are_bounded_on_both_sides() {
        for flag in ["--max-connections", "--workers", "--queue-capacity", "--max-in-flight", "--max-line"] {
            for bad in ["0", "-1", "18446744073709551615", "99999999999999999999999", "ten"] {
                assert!(parse(&[flag, bad]).is_err(), "{flag} {bad} was accepted");
            }
        }
        assert_eq!(parse(&["--workers", "1024"]).unwrap().workers.get(), 1024);
        assert!(parse(&["--backlog", "65536"]).is_err());
        assert!(parse(&["--cpu-threads", "1025"]).is_err());
        assert_eq!(parse(&["--cpu-threads", "0"]).unwrap().cpu_threads, 0);
    }

    #[test]
    fn the_topics_keep_at_most_36_mib_at_the_defaults_and_1_gib_whatever_the_flags() {
        let defaults = Config::default();
        assert_eq!(defaults.check(), Ok(()));
        // 1024 topics x 32 slots x (1024 B + 64 B + 48 B).
        assert_eq!(defaults.fanout_memory(), 1024 * 32 * 1136);
        assert_eq!(defaults.fanout_memory() >> 20, 35, "--max-message's help says 36 MiB (35.5)");
        let huge =
            parse(&["--max-topics", "1000000", "--topic-capacity", "65536", "--max-message", "16777216"])
                .unwrap();
        assert!(huge.fanout_memory() > MAX_FANOUT_MEMORY);
        let refused = huge.check().unwrap_err().to_string();
        assert!(refused.starts_with("--max-topics x --topic-capacity x --max-message"), "{refused}");
        let big = parse(&["--max-topics", "1024", "--topic-capacity", "1024"]).unwrap();
        assert!(
            matches!(big.check(), Err(ConfigError::FanoutMemory(_))),
            "1024 x 1024 x 1 KiB is over 1 GiB"
        );
    }

    #[test]
    fn no_fewer_than_64_connections_can_take_every_topic() {
        assert_eq!(Config::default().max_topics.get() / Config::default().max_subscriptions.get(), 64);
        let few = parse(&["--max-subscriptions", "17"]).unwrap();
        assert_eq!(few.check(), Err(ConfigError::Subscriptions { asked: 17, topics: 1024, allowed: 16 }));
        let small = parse(&["--max-topics", "10", "--max-subscriptions", "1"]).unwrap();
        assert_eq!(small.check(), Ok(()), "below 64 topics, one each is allowed");
    }
}
