//! The integration tests: one test binary, a module per area, as ripgrep's `tests/tests.rs` does
//! (a binary per file would link the service once each). `testkit` (this package's library)
//! holds what they share.
//!
//! * `paused`, `bad_input`: one connection's handler over `tokio::io::duplex`, under paused time;
//! * `e2e`, `admin`, `fanout`, `tls`: a whole service on loopback, with real time;
//! * `readme`: the README against `serve --help` and the code.

mod admin;
mod bad_input;
mod e2e;
mod fanout;
mod paused;
mod readme;
#[cfg(feature = "tls")]
#[cfg_attr(not(feature = "tls"), path = "../src/part_left_out.rs")]
mod tls;
