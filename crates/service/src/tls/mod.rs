//! TLS on the service port, and for the clients: rustls through tokio-rustls.
//!
//! Plain TCP is the default. `serve --tls-cert PATH --tls-key PATH` turns TLS on, and
//! `--tls-client-ca PATH` asks every client for a certificate that chains to that CA (mutual
//! TLS). `call --tls` and `load --tls` speak it as clients ([`ClientTls`]).
//!
//! Choices, and why:
//!
//! * **One crypto provider, ring, passed to every builder** ([`provider`]). rustls panics at
//!   its first `builder()` when two providers are compiled in and none is installed as the
//!   process default; every config here is built with `builder_with_provider`, so a second
//!   provider pulled in by another crate changes nothing, and `main` installs ring as the
//!   default for other crates' configs ([`install_default_provider`]). ring builds in about a
//!   third of aws-lc-rs's time (34 s against 92 s, cold debug build, on the 2-core machine this
//!   template is built on); aws-lc-rs is the one to pick for FIPS.
//! * **PEM through `rustls-pki-types`** (`PemObject`): `rustls-pemfile` is unmaintained
//!   (RUSTSEC-2025-0134). Files are read whole, at most [`MAX_PEM_FILE`] bytes, before any parsing.
//! * **Files are read off the runtime's threads, and only regular files.** `serve` reads them in
//!   sync code before it serves, `call` and `load` before their runtime starts, and a reload
//!   (SIGHUP, or a change the watch sees) on `spawn_blocking` under a deadline: a read can wait
//!   on a slow disk or a stuck network mount. A FIFO, a device or a directory is refused before
//!   it is opened (symlinks are followed, as Kubernetes' `..data` swap needs): a FIFO's open
//!   or read would wait for a writer that never comes.
//! * **The handshake is part of the connection** ([`crate::App::spawn_connection`]): it runs in
//!   the connection's task, after the connection slot is taken, under `--tls-handshake-timeout`,
//!   so a peer that stalls it costs one slot for that long at most.

mod client;
mod server;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::{self, PemObject as _};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub use client::{ClientTls, ClientTlsArgs};
pub use server::Reloader;
pub(crate) use server::{Acceptor, Handshake, start};

/// The largest PEM file read, in bytes: a chain of ten certificates is about 20 KiB.
pub const MAX_PEM_FILE: u64 = 1 << 20;

/// The crypto provider of every TLS config here: ring (see the module docs).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs ring as the process's default provider as well, for any other crate that builds a
/// rustls config with plain `builder()` (which panics when two providers are compiled in and
/// none is installed). `main` calls it first thing; our own configs do not depend on it.
pub fn install_default_provider() {
    // An error means that a default is installed already: it stays, and ours still use ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Why a TLS setting cannot be used. Each names its flag and is one line when displayed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file named by a flag cannot be used.
    #[error("{flag} {}: {problem}", path.display())]
    File {
        /// The flag that names the file (`--tls-cert`).
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: Problem,
    },
    /// The crypto provider supports no safe protocol version (never with ring).
    #[error("the crypto provider cannot speak TLS 1.2 or 1.3: {0}")]
    Provider(rustls::Error),
    /// `--tls` without `--tls-ca`, on a system whose trusted roots cannot be read.
    #[error("--tls: no trusted root certificate found on this system; give --tls-ca PATH")]
    NoSystemRoots,
}

/// What is wrong with a TLS file.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// It cannot be read (missing, unreadable, a directory).
    #[error("cannot read it: {0}")]
    Unreadable(std::io::Error),
    /// It is not a regular file (after following symlinks): a FIFO, a device, a directory.
    #[error("not a regular file")]
    NotRegular,
    /// It is longer than [`MAX_PEM_FILE`].
    #[error("longer than {MAX_PEM_FILE} bytes")]
    TooLong,
    /// It holds a PEM section that does not parse.
    #[error("not valid PEM: {0}")]
    NotPem(&'static str),
    /// It holds no PEM certificate.
    #[error("no PEM certificate in it")]
    NoCertificate,
    /// It holds no PEM private key.
    #[error("no PEM private key in it")]
    NoKey,
    /// The private key is not the one of the certificate.
    #[error("the key does not match the certificate of --tls-cert")]
    KeyMismatch,
    /// The client CA cannot verify clients.
    #[error("{0}")]
    Verifier(rustls::server::VerifierBuilderError),
    /// rustls refused what the file holds.
    #[error("{0}")]
    Refused(rustls::Error),
}

impl TlsError {
    fn file(flag: &'static str, path: &Path, problem: Problem) -> Self {
        Self::File { flag, path: path.to_owned(), problem }
    }
}

/// A PEM file's bytes, at most [`MAX_PEM_FILE`], if it is a regular file (checked before it is
/// opened, and again on what was opened). Blocking: call it off the runtime.
#[expect(clippy::disallowed_methods, reason = "called before the runtime serves, or on spawn_blocking")]
fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let refused = |problem| TlsError::file(flag, path, problem);
    let regular = |metadata: std::fs::Metadata| {
        if metadata.is_file() { Ok(()) } else { Err(refused(Problem::NotRegular)) }
    };
    regular(std::fs::metadata(path).map_err(|error| refused(Problem::Unreadable(error)))?)?;
    let file = std::fs::File::open(path).map_err(|error| refused(Problem::Unreadable(error)))?;
    regular(file.metadata().map_err(|error| refused(Problem::Unreadable(error)))?)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| refused(Problem::Unreadable(error)))?;
    if bytes.len() as u64 > MAX_PEM_FILE {
        return Err(refused(Problem::TooLong));
    }
    Ok(bytes)
}

/// A PEM file of CA certificates (at least one, each parsed), as its bytes: `--fanout-ca`,
/// which redis-rs takes as PEM. Blocking: call it before the runtime serves.
pub fn read_ca(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let bytes = read(flag, path)?;
    roots_in(flag, path, &bytes)?;
    Ok(bytes)
}

/// Every certificate in a PEM file, in order; at least one.
fn certificates(flag: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    certificates_in(flag, path, &read(flag, path)?)
}

/// Every certificate in `bytes`, read from `path`, in order; at least one.
fn certificates_in(
    flag: &'static str,
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::file(flag, path, pem_problem(&error)))?;
    if certificates.is_empty() {
        return Err(TlsError::file(flag, path, Problem::NoCertificate));
    }
    Ok(certificates)
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
fn private_key(flag: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    private_key_in(flag, path, &read(flag, path)?)
}

/// The first private key in `bytes`, read from `path`.
fn private_key_in(flag: &'static str, path: &Path, bytes: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|error| {
        let problem = match error {
            pem::Error::NoItemsFound => Problem::NoKey,
            error => pem_problem(&error),
        };
        TlsError::file(flag, path, problem)
    })
}

/// Why rustls refused `--tls-key` with its certificate: the two do not match
/// (`CertifiedKey::keys_match`), or the key itself is refused.
fn key_refused(path: &Path, error: rustls::Error) -> TlsError {
    let problem = match error {
        rustls::Error::InconsistentKeys(_) => Problem::KeyMismatch,
        error => Problem::Refused(error),
    };
    TlsError::file("--tls-key", path, problem)
}

/// A trust store of every certificate in a PEM file.
fn roots(flag: &'static str, path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    roots_in(flag, path, &read(flag, path)?)
}

/// A trust store of every certificate in `bytes`, read from `path`.
fn roots_in(flag: &'static str, path: &Path, bytes: &[u8]) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in certificates_in(flag, path, bytes)? {
        roots.add(certificate).map_err(|error| TlsError::file(flag, path, Problem::Refused(error)))?;
    }
    Ok(roots)
}

/// A PEM parse error in a few words (the crate's own text quotes the file's bytes).
fn pem_problem(error: &pem::Error) -> Problem {
    Problem::NotPem(match error {
        pem::Error::MissingSectionEnd { .. } => "a section has no END line",
        pem::Error::IllegalSectionStart { .. } => "a BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a section is not base64",
        pem::Error::SectionTooLarge => "a section is too large",
        _ => "it does not parse",
    })
}
