//! TLS termination for `https` and `tls` listeners: certificates chosen by SNI (exact
//! names, then `*.` wildcards, then the first certificate), ALB's security policies,
//! ALPN, client certificates (ALB's mTLS `verify` and `passthrough` modes), and
//! certificate rotation.
//!
//! Each listener's rustls `ServerConfig` sits in an `ArcSwap`: every handshake takes the
//! current one, so a reload or a changed certificate file applies to new connections
//! while open ones keep the session they negotiated.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use super::mtls::ClientCertHeaders;
use crate::config::{Certificate, FileStamp as Stamp, ListenerTls, MutualTls};

/// The TLS side of one listener.
#[derive(Debug)]
pub struct Terminator {
    /// The listener's name (fixed: renaming a listener needs a restart).
    listener: String,
    config: ArcSwap<Serving>,
    /// The settings in force and what their files looked like when loaded.
    current: Mutex<(ListenerTls, Vec<Stamp>)>,
}

/// What new handshakes get.
#[derive(Debug)]
struct Serving {
    rustls: Arc<ServerConfig>,
    client_certs: ClientCerts,
}

impl Serving {
    fn new(tls: &ListenerTls, previous: Option<&ServerConfig>) -> Result<Self, String> {
        Ok(Self {
            rustls: Arc::new(server_config(tls, previous)?),
            client_certs: match tls.mutual_tls {
                MutualTls::Off => ClientCerts::None,
                MutualTls::Verify(_) => ClientCerts::Verified,
                MutualTls::Passthrough => ClientCerts::PassedThrough,
            },
        })
    }
}

/// What becomes of a connection's client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCerts {
    /// None is asked for.
    None,
    /// Verified at the handshake; its fields go to targets.
    Verified,
    /// Taken unverified; the chain goes to targets.
    PassedThrough,
}

impl ClientCerts {
    /// The headers telling targets about `conn`'s client certificate, if the listener
    /// asks for one (then they are set on every request, replacing any the client sent).
    pub(crate) fn headers<D>(
        self,
        conn: &rustls::ConnectionCommon<D>,
    ) -> Option<ClientCertHeaders> {
        let chain = conn.peer_certificates().unwrap_or_default();
        match self {
            ClientCerts::None => None,
            ClientCerts::Verified => Some(ClientCertHeaders::verified(chain)),
            ClientCerts::PassedThrough => Some(ClientCertHeaders::passed_through(chain)),
        }
    }
}

impl Terminator {
    /// A terminator serving `tls` (whose certificates validation has loaded).
    pub fn new(listener: &str, tls: &ListenerTls) -> Result<Self, String> {
        Ok(Self {
            listener: listener.to_owned(),
            config: ArcSwap::from_pointee(Serving::new(tls, None)?),
            current: Mutex::new((tls.clone(), stamps(tls))),
        })
    }

    /// The name of the listener this terminator serves.
    pub fn listener(&self) -> &str {
        &self.listener
    }

    /// The acceptor for the next handshake (a reference count, no copy).
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.config.load().rustls))
    }

    /// The acceptor for a new connection, with what becomes of its client certificate.
    pub fn acceptor_for_http(&self) -> (TlsAcceptor, ClientCerts) {
        let serving = self.config.load();
        (
            TlsAcceptor::from(Arc::clone(&serving.rustls)),
            serving.client_certs,
        )
    }

    /// Serves `tls` from now on (a reload); open connections are not touched.
    pub fn update(&self, tls: &ListenerTls) -> Result<(), String> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.0 == *tls {
            return Ok(());
        }
        let serving = Serving::new(tls, Some(&self.config.load().rustls))?;
        self.config.store(Arc::new(serving));
        *current = (tls.clone(), stamps(tls));
        Ok(())
    }

    /// Loads the certificate and trust-store files again if any of them changed on
    /// disk since they were last loaded. `Ok(true)`: new ones are in force. On error the
    /// previous ones stay, and the same files are not retried until they change again.
    pub fn reload_changed_files(&self) -> Result<bool, String> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let now = stamps(&current.0);
        if now == current.1 {
            return Ok(false);
        }
        current.1 = now;
        let mut next = current.0.clone();
        for c in &mut next.certificates {
            let loaded = crate::tls::load_certificate(&c.cert, &c.key).map_err(|e| e.message)?;
            c.loaded = Arc::new(loaded);
        }
        if let MutualTls::Verify(ca) = &mut next.mutual_tls {
            ca.certs = Arc::new(crate::tls::load_ca_bundle(&ca.path)?);
        }
        if next == current.0 {
            return Ok(false); // touched, not changed
        }
        let serving = Serving::new(&next, Some(&self.config.load().rustls))?;
        self.config.store(Arc::new(serving));
        current.0 = next;
        Ok(true)
    }
}

fn stamps(tls: &ListenerTls) -> Vec<Stamp> {
    tls.certificates
        .iter()
        .flat_map(|c| [&c.cert, &c.key])
        .chain(match &tls.mutual_tls {
            MutualTls::Verify(ca) => Some(&ca.path),
            MutualTls::Off | MutualTls::Passthrough => None,
        })
        .map(|p| Stamp::of(p))
        .collect()
}

/// Builds the rustls configuration of a listener.
///
/// Sessions resume from stateless tickets (TLS 1.2 and 1.3; ChaCha20-Poly1305 keys
/// made at start and rotated every 6 hours by rustls), so any number of clients can
/// resume, not only as many as a server-side cache holds; the cache remains for TLS 1.2
/// clients that offer no ticket support. Both carry over from `previous`, so clients
/// resume their sessions across certificate rotations and reloads.
fn server_config(
    tls: &ListenerTls,
    previous: Option<&ServerConfig>,
) -> Result<ServerConfig, String> {
    let provider = Arc::new(crate::tls::provider(tls.policy));
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(crate::tls::versions(tls.policy))
        .map_err(|e| format!("TLS policy {:?}: {e}", tls.policy))?;
    let builder = match &tls.mutual_tls {
        MutualTls::Verify(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(ca.certs.iter().cloned());
            if added == 0 {
                return Err(format!("{}: no usable CA certificate", ca.path.display()));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("{}: {e}", ca.path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        MutualTls::Passthrough => {
            builder.with_client_cert_verifier(Arc::new(crate::tls::AnyCertificate(provider)))
        }
        MutualTls::Off => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(SniResolver::new(&tls.certificates)?));
    config.alpn_protocols = tls.alpn.protocols();
    // One TLS 1.3 ticket per handshake, as s2n-tls (ALB's TLS library) sends and as
    // OpenSSL sends after a resumption; a client resuming gets the ticket for its next
    // connection. rustls's default of two doubles the ticket work on both sides.
    config.send_tls13_tickets = 1;
    match previous {
        Some(previous) => {
            config.session_storage = Arc::clone(&previous.session_storage);
            config.ticketer = Arc::clone(&previous.ticketer);
        }
        None => {
            config.ticketer = rustls::crypto::ring::Ticketer::new()
                .map_err(|e| format!("session ticket keys: {e}"))?;
        }
    }
    Ok(config)
}

/// Picks the certificate for a client hello's server name.
#[derive(Debug)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// By the part after `*.`: a wildcard covers exactly one label.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    fn new(certificates: &[Certificate]) -> Result<Self, String> {
        let default = certificates
            .first()
            .map(|c| Arc::clone(&c.loaded.key))
            .ok_or("no certificate")?;
        let (mut exact, mut wildcard) = (HashMap::new(), HashMap::new());
        // The first certificate to claim a name keeps it.
        for c in certificates {
            for name in &c.loaded.names {
                let key = Arc::clone(&c.loaded.key);
                match name.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_owned()).or_insert(key),
                    None => exact.entry(name.clone()).or_insert(key),
                };
            }
        }
        Ok(Self {
            exact,
            wildcard,
            default,
        })
    }

    fn find(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = name else {
            return Arc::clone(&self.default);
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let found = self.exact.get(&name).or_else(|| {
            let (_, parent) = name.split_once('.')?;
            self.wildcard.get(parent)
        });
        Arc::clone(found.unwrap_or(&self.default))
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.find(hello.server_name()))
    }
}
