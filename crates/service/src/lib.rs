//! A robust tokio service: a line protocol over TCP with a bound on everything, CPU work on a
//! rayon pool behind a bounded queue, fan-out on broadcast channels, health and metrics over
//! HTTP, and a graceful shutdown.
//!
//! The modules, from the wire inwards:
//!
//! * [`server`]: accept loop, connection limit, listen backlog;
//! * `admin`, [`health`], `metrics`: `/livez`, `/readyz` and `/metrics` over HTTP;
//! * `connection`: one connection's pipelining, timeouts and ordering;
//! * `codec` and [`protocol`]: framing, and the answer line with its error codes;
//! * [`commands`]: one file per command and the registry (**the example domain to replace**);
//! * `job_queue`: the bounded queue of CPU jobs and its workers;
//! * `topics`: fan-out, a broadcast channel per topic and each connection's subscriptions;
//! * [`app`]: the service's shared state and tasks;
//! * [`shutdown`]: the shutdown protocol's three steps and the signals;
//! * `watchdog`, [`stats`], `summary`: stall detection, counters, rate-limited logging;
//! * [`client`]: the client, for `call`, tests and benchmarks;
//! * [`load`]: the load generator, for `load` and the benchmarks;
//! * [`cli`], [`config`], [`telemetry`]: the command line, settings and logging.
//!
//! # What is public, and why
//!
//! Items are `pub(crate)` unless something outside the crate needs them:
//!
//! * the binary (`main.rs`, a crate of its own) needs [`cli`], [`telemetry`], [`shutdown`],
//!   [`Server`] and [`Client`];
//! * the tests crate drives the service without a socket through [`App`], reads [`Stats`] and
//!   [`health`], checks answers against [`protocol::ErrorCode`] and the [`commands::REGISTRY`]'s
//!   examples, checks the README against [`cli::command`], and measures with [`load`];
//! * a program embedding the server needs [`Config`], [`Server`] and [`shutdown::Shutdown`].
//!
//! Layers point one way: lower modules (config, stats, protocol, codec, job queue) import nothing
//! from higher ones (connection, server, cli).

#![forbid(unsafe_code)]

mod admin;
pub mod app;
pub mod cli;
pub mod client;
mod codec;
pub mod commands;
pub mod config;
mod connection;
pub mod health;
mod job_queue;
pub mod load;
mod metrics;
pub mod protocol;
pub mod server;
pub mod shutdown;
pub mod stats;
mod summary;
pub mod telemetry;
#[cfg(test)]
mod test_log;
mod topics;
mod watchdog;

pub use app::{App, StartError};
pub use client::{Client, ClientError};
pub use config::Config;
pub use server::Server;
pub use stats::Stats;
