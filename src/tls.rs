//! TLS material shared by listeners, upstreams and health checks: PEM files in,
//! ALB's security policies as rustls crypto providers, and the verifier used where a
//! target's certificate is deliberately not checked.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{CipherSuite, DigitallySignedStruct, SignatureScheme, SupportedProtocolVersion};

use crate::config::TlsPolicy;

/// A certificate chain with its private key, checked to belong together.
pub struct LoadedCertificate {
    /// Ready for the handshake.
    pub key: Arc<CertifiedKey>,
    /// The DNS names of the leaf (subject alternative names; `*.` for wildcards),
    /// lower-cased.
    pub names: Vec<String>,
    /// The files' bytes, to tell whether a reload changed anything.
    fingerprint: (Vec<u8>, Vec<u8>),
}

impl PartialEq for LoadedCertificate {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl std::fmt::Debug for LoadedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("LoadedCertificate")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

/// Why a certificate could not be loaded, and which of its two files is at fault.
#[derive(Debug)]
pub struct CertificateError {
    /// `"cert"` or `"key"`.
    pub field: &'static str,
    /// The file and what is wrong with it.
    pub message: String,
}

impl std::fmt::Display for CertificateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Reads a PEM chain (leaf first) and its PEM private key, and checks that the key is
/// the leaf's. The error names the file and what is wrong with it.
pub fn load_certificate(cert: &Path, key: &Path) -> Result<LoadedCertificate, CertificateError> {
    let in_cert = |message| CertificateError {
        field: "cert",
        message,
    };
    let in_key = |message| CertificateError {
        field: "key",
        message,
    };
    let cert_pem = read(cert).map_err(in_cert)?;
    let key_pem = read(key).map_err(in_key)?;
    let chain = parse_certificates(cert, &cert_pem).map_err(in_cert)?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        in_key(format!(
            "{}: no usable private key ({e}); expected a PEM PKCS#8, PKCS#1 or SEC1 key",
            key.display()
        ))
    })?;
    let names = webpki::EndEntityCert::try_from(&chain[0])
        .map_err(|e| {
            in_cert(format!(
                "{}: the first certificate does not parse: {e}",
                cert.display()
            ))
        })?
        .valid_dns_names()
        .map(str::to_ascii_lowercase)
        .collect();
    let certified = CertifiedKey::from_der(chain, private, &provider(TlsPolicy::Tls13And12))
        .map_err(|e| {
            in_key(match e {
                rustls::Error::InconsistentKeys(_) => format!(
                    "{}: the private key does not belong to the certificate in {}",
                    key.display(),
                    cert.display()
                ),
                e => format!("{}: unusable private key: {e}", key.display()),
            })
        })?;
    Ok(LoadedCertificate {
        key: Arc::new(certified),
        names,
        fingerprint: (cert_pem, key_pem),
    })
}

/// Reads a PEM bundle of CA certificates.
pub fn load_ca_bundle(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    parse_certificates(path, &read(path)?)
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))
}

fn parse_certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: invalid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no PEM certificate (-----BEGIN CERTIFICATE-----) found",
            path.display()
        ));
    }
    Ok(certs)
}

/// The protocol versions a policy allows.
pub fn versions(policy: TlsPolicy) -> &'static [&'static SupportedProtocolVersion] {
    static BOTH: [&SupportedProtocolVersion; 2] =
        [&rustls::version::TLS13, &rustls::version::TLS12];
    static TLS13: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    match policy {
        TlsPolicy::Tls13And12 | TlsPolicy::Tls13And12Restricted => &BOTH,
        TlsPolicy::Tls13Only => &TLS13,
    }
}

/// The ring provider with only the cipher suites a policy lists. ALB's TLS 1.2 lists
/// have no ChaCha20 suite; its TLS 1.3 ones do.
pub fn provider(policy: TlsPolicy) -> CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.retain(|s| {
        let suite = s.suite();
        let tls13 = matches!(
            suite,
            CipherSuite::TLS13_AES_128_GCM_SHA256
                | CipherSuite::TLS13_AES_256_GCM_SHA384
                | CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
        );
        let tls12 = matches!(
            suite,
            CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
                | CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
        );
        tls13 || (tls12 && policy != TlsPolicy::Tls13Only)
    });
    provider
}

/// What an HTTPS listener's access log tells of a client's TLS session, as ALB logs it.
#[derive(Debug, Clone)]
pub struct Session {
    /// `TLSv1.2` or `TLSv1.3` (ALB's `ssl_protocol`).
    pub protocol: &'static str,
    /// The cipher suite by its OpenSSL name, as ALB writes `ssl_cipher`.
    pub cipher: &'static str,
    /// The server name the client sent (SNI; ALB's `domain_name`), if any.
    pub server_name: Option<Arc<str>>,
}

impl Session {
    /// The session of a connection whose handshake is done.
    pub fn of(connection: &rustls::ServerConnection) -> Self {
        let protocol = match connection.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "-",
        };
        let cipher = connection
            .negotiated_cipher_suite()
            .map_or("-", |s| openssl_name(s.suite()));
        Self {
            protocol,
            cipher,
            server_name: connection.server_name().map(Arc::from),
        }
    }
}

/// The OpenSSL name of each suite a policy can offer ([`provider`]); ALB's logs and
/// policy tables use these.
fn openssl_name(suite: CipherSuite) -> &'static str {
    match suite {
        CipherSuite::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256",
        CipherSuite::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384",
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384",
        other => other.as_str().unwrap_or("-"),
    }
}

/// CAs trusted for targets when a group names none: the system bundle
/// (`SSL_CERT_FILE`, then the Debian and Red Hat paths), else Mozilla's roots.
pub fn system_roots() -> Arc<rustls::RootCertStore> {
    static ROOTS: OnceLock<Arc<rustls::RootCertStore>> = OnceLock::new();
    Arc::clone(ROOTS.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        let candidates = std::env::var_os("SSL_CERT_FILE")
            .map(std::path::PathBuf::from)
            .into_iter()
            .chain(
                [
                    "/etc/ssl/certs/ca-certificates.crt",
                    "/etc/pki/tls/certs/ca-bundle.crt",
                ]
                .map(std::path::PathBuf::from),
            );
        for path in candidates {
            if let Ok(certs) = load_ca_bundle(&path) {
                let (added, _) = roots.add_parsable_certificates(certs);
                if added > 0 {
                    tracing::debug!(path = %path.display(), roots = added, "trusting the system CA bundle");
                    return Arc::new(roots);
                }
            }
        }
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        Arc::new(roots)
    }))
}

/// Accepts any certificate, but verifies handshake signatures against it: for health
/// checks (as ALB's, which do not verify), groups with `verify = false`, and clients of
/// listeners in mTLS `passthrough` mode (where a certificate is optional).
#[derive(Debug)]
pub struct AnyCertificate(pub Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl rustls::server::danger::ClientCertVerifier for AnyCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        ServerCertVerifier::verify_tls12_signature(self, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        ServerCertVerifier::verify_tls13_signature(self, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        ServerCertVerifier::supported_verify_schemes(self)
    }
}
