//! HTTPS for the HTTP front (cargo feature `tls`): rustls with the `ring`
//! provider, a certificate chain and key read from PEM files, and a reload
//! that swaps them for new connections while open ones keep theirs.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use super::server::TARGET;

/// A server certificate chain and private key loaded from PEM files, which
/// [`TlsFiles::reload`] reads again: connections opened after a reload
/// present the new certificate, connections already open keep theirs and
/// are not interrupted. Cloning shares the same certificate.
///
/// ```no_run
/// use tokenvault::http::TlsFiles;
/// let tls = TlsFiles::load("/etc/tokenvault/cert.pem", "/etc/tokenvault/key.pem")?;
/// // ...later, e.g. on SIGHUP, after the files were renewed:
/// tls.reload()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    /// The configuration new connections get. A reload replaces it whole,
    /// session cache included, so that no session made with the old
    /// certificate is resumed after it.
    config: Arc<RwLock<Arc<ServerConfig>>>,
}

impl fmt::Debug for TlsFiles {
    // The paths only: never the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsFiles")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// The one certificate of a configuration.
struct Fixed(Arc<CertifiedKey>);

impl fmt::Debug for Fixed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Fixed(..)")
    }
}

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The server configuration for the certificate and key in these files.
fn configure(cert: &Path, key: &Path) -> io::Result<Arc<ServerConfig>> {
    let pair = Arc::new(read_pair(cert, key)?);
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("TLS setup: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Fixed(pair)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

impl TlsFiles {
    /// Reads the certificate chain (`cert`: PEM, the server's certificate
    /// first) and its private key (`key`: PEM, PKCS#8, PKCS#1 or SEC1) and
    /// checks that they belong together.
    ///
    /// **Blocks** for two small file reads (microseconds).
    ///
    /// # Errors
    /// `io::ErrorKind::NotFound` / `PermissionDenied` (and the like) if a
    /// file cannot be read, with its path; `io::ErrorKind::InvalidData` if
    /// a file holds no PEM certificate or key, the key is of a kind rustls
    /// cannot use, or the key does not match the certificate. The message
    /// names the file, never its contents.
    ///
    /// ```no_run
    /// let tls = tokenvault::http::TlsFiles::load("cert.pem", "key.pem")?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn load(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> io::Result<TlsFiles> {
        let (cert, key) = (cert.as_ref().to_path_buf(), key.as_ref().to_path_buf());
        let config = configure(&cert, &key)?;
        Ok(TlsFiles {
            cert,
            key,
            config: Arc::new(RwLock::new(config)),
        })
    }

    /// Reads both files again and, if they are good, serves them to every
    /// connection opened from now on (with a fresh session cache: no client
    /// resumes a session of the old certificate); if not, keeps the
    /// certificate in use and returns the error (as [`TlsFiles::load`]).
    /// Open connections are not touched.
    ///
    /// **Blocks** for two small file reads (microseconds).
    ///
    /// # Errors
    /// As [`TlsFiles::load`]; nothing changes then.
    ///
    /// ```no_run
    /// let tls = tokenvault::http::TlsFiles::load("cert.pem", "key.pem")?;
    /// tls.reload()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn reload(&self) -> io::Result<()> {
        let config = configure(&self.cert, &self.key)?;
        *self.config.write() = config;
        Ok(())
    }

    /// The acceptor for a connection accepted now.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.read().clone())
    }
}

/// Installs a SIGHUP handler at once (so a SIGHUP from now on no longer
/// ends the process) and returns the future that reloads `tls` on each
/// SIGHUP until dropped, logging each reload (a failed one keeps the
/// certificate in use). Spawn it beside the server. Call it inside a tokio
/// runtime; it does not block, and the future blocks a worker only for
/// the two file reads of a reload.
///
/// # Errors
/// The I/O error if the signal handler cannot be installed.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// let tls = tokenvault::http::TlsFiles::load("cert.pem", "key.pem")?;
/// tokio::spawn(tokenvault::http::reload_on_sighup(tls.clone())?);
/// # Ok(()) }
/// ```
#[cfg(unix)]
pub fn reload_on_sighup(tls: TlsFiles) -> io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    Ok(async move {
        while hup.recv().await.is_some() {
            match tls.reload() {
                Ok(()) => tracing::info!(target: TARGET, "TLS certificate and key reloaded"),
                Err(e) => tracing::warn!(
                    target: TARGET,
                    error = %e,
                    "TLS reload failed; the certificate in use is kept"
                ),
            }
        }
    })
}

/// rustls with the `ring` provider (no C toolchain beyond ring's own).
/// rustls 0.23.48 deprecates it for its lack of post-quantum key exchange;
/// the classical key exchanges it offers are what a client of this API
/// negotiates today.
#[allow(deprecated)]
fn provider() -> CryptoProvider {
    tokio_rustls::rustls::crypto::ring::default_provider()
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

fn read_file(path: &Path, what: &str) -> io::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot read the TLS {what} {}: {e}", path.display()),
        )
    })
}

fn read_pair(cert: &Path, key: &Path) -> io::Result<CertifiedKey> {
    let cert_pem = read_file(cert, "certificate")?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| {
            invalid(format!(
                "the TLS certificate {} is not valid PEM",
                cert.display()
            ))
        })?;
    if chain.is_empty() {
        return Err(invalid(format!(
            "the TLS certificate {} holds no PEM certificate",
            cert.display()
        )));
    }
    let key_pem = zeroize::Zeroizing::new(read_file(key, "key")?);
    let der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
        invalid(format!(
            "the TLS key {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
            key.display()
        ))
    })?;
    CertifiedKey::from_der(chain, der, &provider()).map_err(|e| {
        invalid(format!(
            "the TLS key {} does not fit the certificate {}: {e}",
            key.display(),
            cert.display()
        ))
    })
}

/// [`serve_on`](super::serve_on) over TLS: every connection's bytes pass
/// through a rustls handshake with the current certificate of `tls` (which
/// must be done within [`HttpConfig::first_request_timeout`](super::HttpConfig::first_request_timeout)),
/// then are served exactly as [`serve_on`](super::serve_on) serves them, caps
/// and timeouts included. A [`TlsFiles::reload`] meanwhile changes the
/// certificate of later connections only.
///
/// Runs until `shutdown` completes (it blocks nothing: the connections are
/// tasks of the caller's tokio runtime).
///
/// # Errors
/// The I/O error if the listener's address cannot be read. Failed
/// handshakes, failed accepts and broken connections are logged and
/// skipped.
///
/// ```no_run
/// use tokenvault::http::{app, serve_tls_on, HttpConfig, TlsFiles};
/// # async fn run() -> std::io::Result<()> {
/// let store = tokenvault::TokenStore::open("tokens.db").expect("store");
/// let tls = TlsFiles::load("cert.pem", "key.pem")?;
/// let cfg = HttpConfig::default();
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:8443").await?;
/// serve_tls_on(listener, app(store, &cfg), &cfg, &tls, async {
///     let _ = tokio::signal::ctrl_c().await;
/// })
/// .await
/// # }
/// ```
pub async fn serve_tls_on<F>(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    cfg: &super::HttpConfig,
    tls: &TlsFiles,
    shutdown: F,
) -> io::Result<()>
where
    F: std::future::Future<Output = ()> + Send,
{
    super::server::serve_conns(listener, app, cfg, Some(tls.clone()), shutdown).await
}
