//! The spans without the `otel` feature: none. `spans.rs`'s types are here with no values
//! (enums without variants), so the code that makes and ends spans type-checks unchanged, and
//! the compiler drops it: no connection is traced (`Traced::for_peer` is always `None`), an
//! untraced request pays what it pays with the feature, and no OpenTelemetry crate is built.

use std::fmt;

use crate::Config;

/// A span under a request; none can exist.
#[derive(Debug)]
pub(crate) enum Span {}

/// A traced connection; none can exist.
#[derive(Debug)]
pub(crate) enum Traced {}

impl Traced {
    /// No connection is traced without the `otel` feature, whatever `config` says.
    pub(crate) fn for_peer(_config: &Config, _peer: &dyn fmt::Display) -> Option<Self> {
        None
    }
}

/// A request's span; none can exist.
#[derive(Debug)]
pub(crate) enum RequestSpan {}

impl RequestSpan {
    pub(crate) fn new(_command: &'static str, traced: &Traced) -> Option<Self> {
        match *traced {}
    }

    pub(crate) fn in_scope<R>(&self, _f: impl FnOnce() -> R) -> R {
        match *self {}
    }

    pub(crate) fn instrument<F: Future>(&self, _work: F) -> F {
        match *self {}
    }

    pub(crate) fn finish(self, _error: Option<&'static str>) {
        match self {}
    }
}

/// A CPU job's spans; none can exist.
pub(crate) enum JobSpans {}

impl JobSpans {
    pub(crate) fn queued(traced: &Traced) -> Option<Self> {
        match *traced {}
    }

    pub(crate) fn running(self) -> Span {
        match self {}
    }
}

#[cfg(any(feature = "tls", feature = "redis"))]
pub(crate) fn end(span: Option<Span>, _error: Option<&str>) {
    if let Some(span) = span {
        match span {}
    }
}

#[cfg(feature = "tls")]
pub(crate) fn handshake(traced: &Traced) -> Span {
    match *traced {}
}

#[cfg(feature = "redis")]
pub(crate) fn relay_publish(_topic: &str) -> Option<Span> {
    None
}
