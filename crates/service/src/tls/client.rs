//! The client's side of TLS, for `call --tls`, `load --tls` and [`crate::Client::connect_tls`].

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::client::Resumption;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::{TlsError, certificates, key_refused, private_key, provider, roots};

/// The TLS flags of `call` and `load`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientTlsArgs {
    /// Connect over TLS, trusting the system's root certificates (or --tls-ca).
    #[arg(long)]
    pub tls: bool,
    /// PEM CA certificates to trust instead of the system's.
    #[arg(long, value_name = "PATH", requires = "tls")]
    pub tls_ca: Option<PathBuf>,
    /// The name the server's certificate must carry; by default the host of --addr.
    #[arg(long, value_name = "NAME", requires = "tls", value_parser = server_name)]
    pub tls_server_name: Option<ServerName<'static>>,
    /// PEM client certificate, for a server that asks for one (mutual TLS); with --tls-key.
    #[arg(long, value_name = "PATH", requires_all = ["tls", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "PATH", requires_all = ["tls", "tls_cert"])]
    pub tls_key: Option<PathBuf>,
}

fn server_name(name: &str) -> Result<ServerName<'static>, &'static str> {
    ServerName::try_from(name.to_owned()).map_err(|_| "not a DNS name or an IP address")
}

impl ClientTlsArgs {
    /// The TLS settings these flags ask for; `None` without `--tls`. Reads the files and the
    /// system's roots: blocking, so call it before the runtime starts or on `spawn_blocking`.
    pub fn load(&self) -> Result<Option<ClientTls>, TlsError> {
        if !self.tls {
            return Ok(None);
        }
        let roots = match &self.tls_ca {
            Some(path) => roots("--tls-ca", path)?,
            None => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
                if roots.is_empty() {
                    return Err(TlsError::NoSystemRoots);
                }
                roots
            }
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Provider)?
            .with_root_certificates(roots);
        let config = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                let chain = certificates("--tls-cert", cert)?;
                let private = private_key("--tls-key", key)?;
                builder.with_client_auth_cert(chain, private).map_err(|error| key_refused(key, error))?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(Some(ClientTls { config: Arc::new(config), server_name: self.tls_server_name.clone() }))
    }
}

/// How a client speaks TLS: whom it trusts, what it presents, and the name it expects.
#[derive(Debug, Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

impl ClientTls {
    /// The same, without session resumption: every handshake is a full one (what a benchmark of
    /// handshakes measures).
    #[must_use]
    pub fn without_resumption(mut self) -> Self {
        let mut config = (*self.config).clone();
        config.resumption = Resumption::disabled();
        self.config = Arc::new(config);
        self
    }

    /// The name the server's certificate must carry: `--tls-server-name`, or the host of `addr`
    /// (`host:port`, `[v6]:port`).
    pub fn server_name_for(&self, addr: &str) -> io::Result<ServerName<'static>> {
        if let Some(name) = &self.server_name {
            return Ok(name.clone());
        }
        let host = addr.rsplit_once(':').map_or(addr, |(host, _port)| host);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        server_name(host).map_err(|problem| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {problem}; give --tls-server-name"))
        })
    }

    /// Shakes hands over `stream`, expecting a certificate for `server_name`. Unbounded: the
    /// caller puts it under a timeout (the client's connect timeout does).
    pub async fn handshake<S>(&self, stream: S, server_name: ServerName<'static>) -> io::Result<TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        TlsConnector::from(Arc::clone(&self.config)).connect(server_name, stream).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn without_a_name() -> ClientTls {
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring speaks TLS 1.2 and 1.3")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        ClientTls { config: Arc::new(config), server_name: None }
    }

    #[test]
    fn the_server_name_is_the_host_of_the_address_unless_given() {
        let tls = without_a_name();
        let name = |addr: &str| tls.server_name_for(addr).map(|name| name.to_str().into_owned());
        assert_eq!(name("localhost:7878").unwrap(), "localhost");
        assert_eq!(name("127.0.0.1:7878").unwrap(), "127.0.0.1");
        assert_eq!(name("[::1]:7878").unwrap(), "::1");
        assert_eq!(name("example.com").unwrap(), "example.com");
        let refused = name("not a host:1").unwrap_err().to_string();
        assert!(refused.contains("give --tls-server-name"), "{refused}");
        let named = ClientTls { server_name: Some(server_name("api.internal").unwrap()), ..tls.clone() };
        assert_eq!(named.server_name_for("10.0.0.1:7878").unwrap().to_str(), "api.internal");
    }

    #[test]
    fn without_tls_nothing_is_read() {
        let args = ClientTlsArgs { tls_ca: Some("/nonexistent".into()), ..ClientTlsArgs::default() };
        assert!(args.load().unwrap().is_none(), "--tls is off: no file is read");
    }
}
