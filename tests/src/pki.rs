//! Test certificates: a CA, a server certificate for `localhost`, `127.0.0.1` and `::1`, client
//! certificates (a good one, one from another CA, an expired one), made in memory by rcgen and
//! written as PEM files to a directory of their own, removed on drop. Nothing is fetched.
//!
//! The service crate's own integration tests use it too (this crate is their dev-dependency).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, date_time_ymd,
};

/// A certificate and its key, as PEM files, and the certificate's DER (what a peer sees).
#[derive(Debug, Clone)]
pub struct Identity {
    /// The certificate's PEM file.
    pub cert: PathBuf,
    /// The private key's PEM file.
    pub key: PathBuf,
    /// The certificate, DER-encoded.
    pub der: Vec<u8>,
}

/// The certificates of a test; see the module docs.
pub struct Pki {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
    /// The CA's certificate (PEM file): what clients trust, and `--tls-client-ca`.
    pub ca_cert: PathBuf,
    /// The server's certificate, signed by the CA.
    pub server: Identity,
    /// A client certificate signed by the CA.
    pub client: Identity,
    /// A client certificate from another CA.
    pub stranger: Identity,
    /// A client certificate signed by the CA, expired in 2001.
    pub expired: Identity,
}

impl Pki {
    /// Makes every certificate and writes them to a new directory under the system's temp dir.
    ///
    /// # Panics
    /// If a certificate cannot be made or written (a broken test machine).
    pub fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "service-pki-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        write_file(&dir, None);
        let ca = authority("test CA");
        let ca_cert = write_file(&dir.join("ca.pem"), Some(&ca.pem()));
        let server = leaf(&dir, "server", &ca, ExtendedKeyUsagePurpose::ServerAuth, false);
        let client = leaf(&dir, "client", &ca, ExtendedKeyUsagePurpose::ClientAuth, false);
        let expired = leaf(&dir, "expired", &ca, ExtendedKeyUsagePurpose::ClientAuth, true);
        let other = authority("another CA");
        let stranger = leaf(&dir, "stranger", &other, ExtendedKeyUsagePurpose::ClientAuth, false);
        Self { dir, ca, ca_cert, server, client, stranger, expired }
    }

    /// A new server certificate with a new key (so a new serial), signed by the same CA, written
    /// over the server's files as a renewal would be. Returns its DER.
    pub fn renew_server(&self) -> Vec<u8> {
        leaf(&self.dir, "server", &self.ca, ExtendedKeyUsagePurpose::ServerAuth, false).der
    }

    /// A path in the test's directory, for files a test writes itself (a broken one).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A client's TLS settings: trusting the CA, presenting `identity` if given.
    pub fn client_tls(&self, identity: Option<&Identity>) -> service::tls::ClientTls {
        let args = service::tls::ClientTlsArgs {
            tls: true,
            tls_ca: Some(self.ca_cert.clone()),
            tls_server_name: None,
            tls_cert: identity.map(|identity| identity.cert.clone()),
            tls_key: identity.map(|identity| identity.key.clone()),
        };
        args.load().expect("the test certificates load").expect("--tls is on")
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("a CA key")).expect("a CA certificate")
}

fn leaf(
    dir: &Path,
    name: &str,
    issuer: &Issuer<'static, KeyPair>,
    usage: ExtendedKeyUsagePurpose,
    expired: bool,
) -> Identity {
    let names = ["localhost", "127.0.0.1", "::1"].map(str::to_owned);
    let mut params = CertificateParams::new(names).expect("leaf parameters");
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![usage];
    if expired {
        (params.not_before, params.not_after) = (date_time_ymd(2000, 1, 1), date_time_ymd(2001, 1, 1));
    }
    let key = KeyPair::generate().expect("a leaf key");
    let certificate = params.signed_by(&key, issuer).expect("a leaf certificate");
    Identity {
        cert: write_file(&dir.join(format!("{name}.pem")), Some(&certificate.pem())),
        key: write_file(&dir.join(format!("{name}-key.pem")), Some(&key.serialize_pem())),
        der: certificate.der().to_vec(),
    }
}

/// Writes `text` to `path`, or makes the directory `path` without text.
#[expect(clippy::disallowed_methods, reason = "test set-up, before or beside the runtime")]
fn write_file(path: &Path, text: Option<&str>) -> PathBuf {
    match text {
        Some(text) => std::fs::write(path, text).expect("write a PEM file"),
        None => std::fs::create_dir_all(path).expect("make the certificates' directory"),
    }
    path.to_owned()
}
