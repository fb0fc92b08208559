//! A robust tokio service: a line protocol over TCP with a bound on everything, CPU work on a
//! rayon pool behind a bounded queue, fan-out on broadcast channels, health and metrics over
//! HTTP, and a graceful shutdown.
//!
//! The modules, from the wire inwards; the request path is at the top, a concern with several
//! files is a folder:
//!
//! * `server`: accept loop, connection limit, listen backlog, keepalive;
//! * `connection`: one connection's pipelining, timeouts and ordering;
//! * `http` (the `http` feature): the same commands and topics over HTTP/1.1 and HTTP/2, with
//!   axum's routes, tower's bounds and Server-Sent Events;
//! * [`protocol`] (and its `codec`): the wire format (answers, pushes, error codes, the topic and
//!   line-break rules), and the framing;
//! * [`commands`]: one file per command, the registry, and the command API (`context.rs`): the
//!   seam where **the example domain is replaced**;
//! * `job_queue`: the bounded queue of CPU jobs and its workers;
//! * `fanout`: topics (a broadcast channel each) and each connection's subscriptions; its
//!   `budget` (what a publisher may send) and its `relay` (with `--fanout-url`, the topics span
//!   every replica through Redis pub/sub);
//! * `shared`: the shared core every part reads; `app`: the service's tasks, which make it;
//! * `admin`: `/livez`, `/readyz` and `/metrics` over HTTP (`health`, `scrape`, and the
//!   `watchdog` that detects stalls);
//! * [`shutdown`]: the shutdown protocol's three steps and the signals;
//! * `stats`, `metrics`, `log_throttle`, `backoff`: counters, latency histograms, rate-limited
//!   logging, the pauses of every retry loop;
//! * [`tls`]: TLS on the service port (with certificate reload) and for the clients;
//! * `client`: the client, for `call`, tests and benchmarks, and [`load`], the load generator;
//! * [`cli`], `config`, [`telemetry`]: the command line, settings, logging, and the spans a
//!   trace is made of (exported to an OpenTelemetry collector with the `otel` feature).
//!
//! Four parts are cargo features, all on in the template's own workspace (a generated project
//! has the ones chosen at generation): `tls`, `redis` (the relay), `otel` (the spans and their
//! export) and `http` (the front). A part left out is not compiled: its module and its flags are
//! cfg'd out, or, where the code around it keeps one shape, a stand-in takes its place whose
//! types have no values (`tls/off.rs`, `telemetry/spans_off.rs`), so the paths that would use
//! them compile away. (`part_left_out.rs` is for rustfmt: it says why.)
//!
//! Imports between these modules point one way, from the wire inwards: `stats`, `metrics`,
//! `protocol`, `backoff`, `config`, `log_throttle` and `telemetry` import none of the others
//! (but `telemetry` its log throttle); `tls`, `shutdown`, `job_queue` and `fanout` only those;
//! `shared` gathers them; `commands` reads `shared`; `connection`, `http` and `admin` read
//! `commands` and `shared`; `app` and `server` put it all together; `client` and `cli` stand beside, on
//! `protocol`, `config` and `tls`. No module imports one that imports it.
//! Within a folder, a file reaches its siblings through `super::`, and everything else through
//! `crate::`.
//!
//! # What is public, and why
//!
//! Items are `pub(crate)` unless something outside the crate needs them (the workspace's
//! `unreachable_pub` lint holds that), and each public type has one path: a module is public
//! when it is a namespace its users name ([`cli`], [`commands`], [`load`], [`protocol`],
//! [`shutdown`], [`telemetry`], [`tls`]), otherwise private with its types re-exported here.
//!
//! * the binary (`main.rs`, a crate of its own) needs [`cli`], [`telemetry`], [`shutdown`],
//!   [`load`], [`tls`], [`Server`] and [`Client`];
//! * the command API ([`commands::Context`], [`commands::Spec`], [`commands::Reply`],
//!   [`commands::arguments`]) is public because it is the seam: a command of any kind uses it,
//!   and public items do not become dead code when the last example command using them goes;
//! * the tests crate drives the service without a socket through [`App`], adds its own
//!   commands, reads [`Stats`] and [`Health`], checks answers against [`protocol::ErrorCode`],
//!   checks the README against [`cli::command`], and measures with [`load`];
//! * a program embedding the server needs [`Config`] (and, with the relay, `FanoutUrl`, a
//!   field's type),
//!   [`Server`] and [`shutdown::Shutdown`].

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
#[cfg(feature = "http")]
#[cfg_attr(not(feature = "http"), path = "part_left_out.rs")]
mod http;
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
#[cfg_attr(not(feature = "tls"), path = "tls/off.rs")]
pub mod tls;

pub use admin::health::Health;
pub use app::{App, StartError};
pub use client::{Client, ClientError, load};
#[cfg(feature = "redis")]
pub use config::FanoutUrl;
pub use config::{Config, ConfigError};
pub use server::Server;
pub use stats::{HandshakeFailure, JobOutcome, Messages, Stats};
