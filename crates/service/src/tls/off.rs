//! TLS without the `tls` feature: none. The server side's types are here with no values (enums
//! without variants), so `App`, the HTTP front and shutdown keep one shape (a connection's TLS
//! is an `Option` that is always `None`) and the compiler drops the TLS paths; no rustls crate
//! is built, and `serve`, `call` and `load` offer no `--tls*` flag.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::stats::Stats;
use crate::telemetry::spans::Traced;

/// Installs nothing: there is no crypto provider.
pub fn install_default_provider() {}

/// A TLS setting that cannot be used; none can exist.
#[derive(Debug, thiserror::Error)]
#[error("no TLS in this build")]
pub enum TlsError {}

/// Without the feature, never TLS.
pub(crate) fn start(_config: &Config, _stats: Arc<Stats>) -> Result<Option<(Acceptor, Reloader)>, TlsError> {
    Ok(None)
}

/// How a connection's handshake ended; no handshake runs.
#[expect(dead_code, reason = "the feature's shape, matched by the code that serves TLS")]
pub(crate) enum Handshake<S> {
    Done(S),
    Closed,
}

/// A connection's handshake; none can exist.
#[derive(Clone)]
pub(crate) enum Acceptor {}

impl Acceptor {
    #[expect(clippy::unused_async, reason = "the feature's signature")]
    pub(crate) async fn accept<S>(
        &self,
        _stream: S,
        _drain: &CancellationToken,
        _traced: Option<&Traced>,
    ) -> Handshake<S> {
        match *self {}
    }

    #[cfg(feature = "http")]
    pub(crate) fn for_http(&self) -> Self {
        match *self {}
    }

    pub(crate) fn flush_log(&self) {
        match *self {}
    }
}

/// What reloads the certificate; none can exist.
#[derive(Debug, Clone)]
pub enum Reloader {}

impl Reloader {
    /// Never called: there is no `Reloader`.
    #[expect(clippy::unused_async, reason = "the feature's signature")]
    pub async fn reload(&self) -> Result<(), TlsError> {
        match *self {}
    }

    /// Never called: there is no `Reloader`.
    pub fn reads_running(&self) -> usize {
        match *self {}
    }
}
