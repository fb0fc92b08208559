//! The service crate's integration tests: the real binary (`CARGO_BIN_EXE_<name>`, which only
//! this package's tests are given), as an operator runs it. One test binary, a module per area,
//! as ripgrep's `tests/tests.rs` does: a binary per file would link the crate once each.
//!
//! The tests that drive the service in-process (paused time, `tokio::io::duplex`) live in the
//! tests crate; these need a child process.

#[cfg(feature = "redis")]
#[cfg_attr(not(feature = "redis"), path = "../src/part_left_out.rs")]
mod broker;
mod common;
#[cfg(feature = "http")]
#[cfg_attr(not(feature = "http"), path = "../src/part_left_out.rs")]
mod http;
#[cfg(feature = "otel")]
#[cfg_attr(not(feature = "otel"), path = "../src/part_left_out.rs")]
mod otel;
mod process;
#[cfg(feature = "tls")]
#[cfg_attr(not(feature = "tls"), path = "../src/part_left_out.rs")]
mod tls;
