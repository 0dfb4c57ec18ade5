//! TLS for what replication exposes to the internet: the players' login over HTTPS and the
//! game's WebSocket as `wss://`. The certificate and key come from PEM files (a Kubernetes TLS
//! Secret mounted as files, renewed in place by cert-manager) and are reloaded when either file
//! changes; a renewal that does not parse keeps the old certificate and says why.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// What a TLS listener serves (re-exported for the binary, which has no rustls of its own).
pub use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tracing::{info, warn};

/// How often the files are looked at for a renewal.
pub const RELOAD_CHECK: Duration = Duration::from_secs(2);

/// Where the certificate chain and its private key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{0} holds no certificate")]
    NoCertificate(PathBuf),
    #[error("the key in {path} cannot sign: {source}")]
    Key {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("cannot set up TLS: {0}")]
    Config(#[from] rustls::Error),
}

/// The files' certificate and key, as rustls serves them.
pub fn load(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    fn read(path: &std::path::Path) -> impl Fn(rustls::pki_types::pem::Error) -> TlsError + '_ {
        move |source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        }
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(read(&files.cert))?
        .collect::<Result<_, _>>()
        .map_err(read(&files.cert))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(files.cert.clone()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(read(&files.key))?;
    let signer =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|source| TlsError::Key {
            path: files.key.clone(),
            source,
        })?;
    Ok(CertifiedKey::new(chain, signer))
}

/// The certificate served now, replaced when the files change.
#[derive(Debug)]
pub struct ReloadingCert {
    files: TlsFiles,
    current: RwLock<(Arc<CertifiedKey>, Option<SystemTime>)>,
}

impl ReloadingCert {
    pub fn open(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let key = load(&files)?;
        let stamp = stamp(&files);
        Ok(Arc::new(Self {
            files,
            current: RwLock::new((Arc::new(key), stamp)),
        }))
    }

    /// Loads the files again if they changed since last loaded; true when the certificate was
    /// replaced.
    pub fn reload_if_changed(&self) -> bool {
        let now = stamp(&self.files);
        if now == self.current.read().expect("cert lock").1 {
            return false;
        }
        match load(&self.files) {
            Ok(key) => {
                *self.current.write().expect("cert lock") = (Arc::new(key), now);
                info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                // Half-written files during a renewal: keep serving the old one, try again.
                warn!(error = %e, "TLS files changed but do not load; keeping the current certificate");
                false
            }
        }
    }

    /// Checks the files every [`RELOAD_CHECK`] for as long as the process runs.
    pub async fn watch(self: Arc<Self>) {
        let mut every = tokio::time::interval(RELOAD_CHECK);
        loop {
            every.tick().await;
            self.reload_if_changed();
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("cert lock").0.clone())
    }
}

/// The newest modification time of the two files (`None` when one is missing).
fn stamp(files: &TlsFiles) -> Option<SystemTime> {
    let m = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some(m(&files.cert)?.max(m(&files.key)?))
}

/// A rustls server config answering with `cert`, speaking `alpn` (HTTP/1.1 for login).
pub fn server_config(
    cert: Arc<ReloadingCert>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}
