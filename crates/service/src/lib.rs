//! A robust tokio service: a line protocol over TCP with a bound on everything, CPU work on a
//! rayon pool behind a bounded queue, and a graceful shutdown.
//!
//! The modules, from the wire inwards:
//!
//! * [`server`]: accept loop, connection limit;
//! * [`connection`]: one connection's pipelining, timeouts and ordering;
//! * [`codec`] and [`protocol`]: framing and the request/response language;
//! * [`commands`]: what each request does (**example domain code to replace**);
//! * [`coordinator`]: the bounded CPU job queue and its workers;
//! * [`app`]: the service's shared state and tasks;
//! * [`shutdown`]: the two-step shutdown protocol;
//! * [`watchdog`] and [`stats`]: runtime stall detection and counters;
//! * [`client`]: the client, for `call`, tests and benchmarks;
//! * [`cli`], [`config`], [`telemetry`]: the command line, settings and logging.

#![forbid(unsafe_code)]

pub mod app;
pub mod cli;
pub mod client;
pub mod codec;
pub mod commands;
pub mod config;
pub mod connection;
pub mod coordinator;
pub mod protocol;
pub mod server;
pub mod shutdown;
pub mod stats;
pub mod telemetry;
#[cfg(test)]
mod test_log;
pub mod watchdog;

pub use app::{App, StartError};
pub use client::{Client, ClientError};
pub use config::Config;
pub use server::Server;
