//! A robust tokio service: a line protocol over TCP with a bound on everything, CPU work on a
//! rayon pool behind a bounded queue, fan-out on broadcast channels, health and metrics over
//! HTTP, and a graceful shutdown.
//!
//! The modules, from the wire inwards:
//!
//! * `server`: accept loop, connection limit, listen backlog, keepalive;
//! * `admin`, `health`, `metrics`: `/livez`, `/readyz` and `/metrics` over HTTP;
//! * `connection`: one connection's pipelining, timeouts and ordering;
//! * `codec` and [`protocol`]: framing, and the wire format (answers, pushes, error codes);
//! * [`commands`]: one file per command, the registry, and the command API (the seam where
//!   **the example domain is replaced**);
//! * `job_queue`: the bounded queue of CPU jobs and its workers;
//! * `topics`: fan-out, a broadcast channel per topic and each connection's subscriptions;
//! * `relay`: with `--fanout-url`, the topics span every replica through Redis pub/sub;
//! * `app`: the service's shared state and tasks;
//! * [`shutdown`]: the shutdown protocol's three steps and the signals;
//! * `watchdog`, `stats`, `log_throttle`: stall detection, counters, rate-limited logging;
//! * [`tls`]: TLS on the service port (with certificate reload) and for the clients;
//! * `client`: the client, for `call`, tests and benchmarks;
//! * [`load`]: the load generator, for `load` and the benchmarks;
//! * [`cli`], `config`, [`telemetry`]: the command line, settings and logging.
//!
//! # What is public, and why
//!
//! Items are `pub(crate)` unless something outside the crate needs them (the workspace's
//! `unreachable_pub` lint holds that), and each public type
//! has one path: a module is public when it is a namespace its users name ([`cli`],
//! [`commands`], [`load`], [`protocol`], [`shutdown`], [`telemetry`], [`tls`]), otherwise
//! private with its types re-exported here.
//!
//! * the binary (`main.rs`, a crate of its own) needs [`cli`], [`telemetry`], [`shutdown`],
//!   [`load`], [`tls`], [`Server`] and [`Client`];
//! * the command API ([`commands::Context`], [`commands::Spec`], [`commands::Reply`],
//!   [`commands::arguments`]) is public because it is the seam: a command of any kind uses it,
//!   and public items do not become dead code when the last example command using them goes;
//! * the tests crate drives the service without a socket through [`App`], adds its own
//!   commands, reads [`Stats`] and [`Health`], checks answers against [`protocol::ErrorCode`],
//!   checks the README against [`cli::command`], and measures with [`load`];
//! * a program embedding the server needs [`Config`], [`Server`] and [`shutdown::Shutdown`].
//!
//! Lower modules (stats, protocol, codec, job queue) import nothing from higher ones
//! (connection, server, cli). Not yet one way: `config` takes the broker URL's parser and the
//! channel prefix's check from `relay`, which reaches `topics` (and `commands::arguments` for the
//! topic rule), which reads `config`.

#![forbid(unsafe_code)]

mod admin;
mod app;
mod backoff;
pub mod cli;
mod client;
pub mod commands;
mod config;
mod connection;
mod fanout;
mod job_queue;
mod log_throttle;
mod metrics;
pub mod protocol;
mod server;
mod shared;
pub mod shutdown;
mod stats;
pub mod telemetry;
#[cfg(test)]
mod test_log;
pub mod tls;

pub use admin::health::Health;
pub use app::{App, StartError};
pub use client::{Client, ClientError, load};
pub use config::{Config, ConfigError, FanoutUrl};
pub use server::Server;
pub use stats::{HandshakeFailure, JobOutcome, Messages, Stats};
