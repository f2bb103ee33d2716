//! TLS for `strata serve`: the server's certificate chain and key (PEM files read at start),
//! and optionally the authority whose certificates clients must then present. Both protocols
//! use them: Flight SQL through tonic, the PostgreSQL protocol through its `SSLRequest`, and
//! the dashboard through a listener whose connections are HTTPS.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use super::ServerError;

/// How long a client may take over its TLS handshake before its connection is closed.
const HANDSHAKE_TIME: Duration = Duration::from_secs(10);

/// The server's TLS identity, checked when loaded (the key must match the certificate).
#[derive(Clone)]
pub struct Tls {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
    config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("client_certificates", &self.client_ca.is_some())
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ServerError> {
    std::fs::read(path).map_err(|e| tls_error(path, format!("cannot read it: {e}")))
}

fn tls_error(path: &Path, message: impl std::fmt::Display) -> ServerError {
    ServerError::Tls {
        file: path.display().to_string(),
        message: message.to_string(),
    }
}

fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, ServerError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(tls_error(path, "holds no PEM certificate"));
    }
    Ok(certs)
}

impl Tls {
    /// Read the certificate chain and private key (PEM), and with `client_ca` the authority
    /// (PEM) that must have signed every client's certificate.
    pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Tls, ServerError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // tonic builds its configuration with the process's provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cert_pem = read(cert)?;
        let key_pem = read(key)?;
        let chain = certificates(cert, &cert_pem)?;
        let private = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| tls_error(key, format!("holds no PEM private key: {e}")))?;
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(cert, e))?;
        let (builder, ca_pem) = match client_ca {
            Some(path) => {
                let pem = read(path)?;
                let mut roots = rustls::RootCertStore::empty();
                for c in certificates(path, &pem)? {
                    roots.add(c).map_err(|e| tls_error(path, e))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| tls_error(path, e))?;
                (builder.with_client_cert_verifier(verifier), Some(pem))
            }
            None => (builder.with_no_client_auth(), None),
        };
        let mut config = builder
            .with_single_cert(chain, private)
            .map_err(|e| tls_error(key, format!("does not fit the certificate: {e}")))?;
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(Tls {
            cert: cert_pem,
            key: key_pem,
            client_ca: ca_pem,
            config: Arc::new(config),
        })
    }

    /// Whether clients must present a certificate signed by the configured authority.
    pub fn requires_client_certificates(&self) -> bool {
        self.client_ca.is_some()
    }

    /// The configuration of the Flight SQL (gRPC) listener.
    pub(super) fn flight(&self) -> ServerTlsConfig {
        let config = ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert, &self.key))
            .timeout(HANDSHAKE_TIME);
        match &self.client_ca {
            Some(ca) => config.client_ca_root(Certificate::from_pem(ca)),
            None => config,
        }
    }

    /// The acceptor of the PostgreSQL listener (its clients ask for TLS with `SSLRequest`,
    /// or connect with TLS directly and name `postgresql` by ALPN).
    pub(super) fn postgres(&self) -> pgwire::tokio::TlsAcceptor {
        pgwire::tokio::TlsAcceptor::from(self.config.clone())
    }

    /// A listener of HTTPS connections on `listener`: each handshake (bounded in time) runs
    /// on its own, so one slow client does not hold up the others.
    pub fn https(&self, listener: TcpListener) -> HttpsListener {
        let mut config = (*self.config).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let address = listener.local_addr();
        let (ready, connections) = mpsc::channel(64);
        let accepting = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors, say: try again shortly.
                        log::warn!(target: "strata::server", "accepting a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, ready) = (acceptor.clone(), ready.clone());
                tokio::spawn(async move {
                    let failure =
                        match tokio::time::timeout(HANDSHAKE_TIME, acceptor.accept(tcp)).await {
                            Ok(Ok(tls)) => {
                                let _ = ready.send((tls, peer)).await;
                                return;
                            }
                            Ok(Err(e)) => e.to_string(),
                            Err(_) => "too slow".to_string(),
                        };
                    log::debug!(target: "strata::server", "TLS handshake with {peer}: {failure}");
                });
            }
        });
        HttpsListener {
            address,
            connections,
            accepting,
        }
    }
}

/// Connections whose TLS handshake is done, for `axum::serve`; dropping it stops accepting.
#[derive(Debug)]
pub struct HttpsListener {
    address: std::io::Result<SocketAddr>,
    connections: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Drop for HttpsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for HttpsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.recv().await {
            Some(connection) => connection,
            // The accepting task ended (it does not, but for its panic): no more connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match &self.address {
            Ok(address) => Ok(*address),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        }
    }
}
