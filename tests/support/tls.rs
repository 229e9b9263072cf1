//! TLS test kit: a CA made with rcgen at test time, certificates it issues (written to
//! PEM files for the proxy's config), rustls clients, and HTTPS backends.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::Backend;

/// A certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate issued by a [`Ca`], with its key.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    /// A leaf certificate for `names` (DNS names, `*.` wildcards or IP addresses).
    pub fn issue(&self, names: &[&str]) -> Issued {
        let cn = names.first().copied().unwrap_or("leaf");
        self.issue_to(names, vec![(DnType::CommonName, cn.into())])
    }

    /// A leaf certificate for `names` whose subject is `subject`, in this order.
    pub fn issue_to(&self, names: &[&str], subject: Vec<(DnType, rcgen::DnValue)>) -> Issued {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        for (kind, value) in subject {
            params.distinguished_name.push(kind, value);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA certificate to `dir/<file>`.
    pub fn write(&self, dir: &Path, file: &str) -> PathBuf {
        let path = dir.join(file);
        std::fs::write(&path, self.pem()).unwrap();
        path
    }

    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        roots
    }
}

impl Issued {
    /// Writes `dir/<stem>.pem` and `dir/<stem>.key`.
    pub fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (
            dir.join(format!("{stem}.pem")),
            dir.join(format!("{stem}.key")),
        );
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }

    fn key_der(&self) -> PrivateKeyDer<'static> {
        let pem = pem_body(&self.key_pem);
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pem))
    }
}

fn pem_body(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .secret_pkcs8_der()
        .to_vec()
}

/// `certificates = [...]` for a listener.
pub fn certificates_toml(files: &[(PathBuf, PathBuf)]) -> String {
    let entries: Vec<String> = files
        .iter()
        .map(|(c, k)| {
            format!(
                "{{ cert = {:?}, key = {:?} }}",
                c.display().to_string(),
                k.display().to_string()
            )
        })
        .collect();
    format!("certificates = [{}]", entries.join(", "))
}

/// A rustls client trusting `ca`, offering `alpn`, limited to `versions`, presenting
/// `client_cert` when given.
pub fn client_config(
    ca: &Ca,
    alpn: &[&[u8]],
    versions: &[&'static SupportedProtocolVersion],
    client_cert: Option<&Issued>,
) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(ca.roots());
    let mut config = match client_cert {
        Some(c) => builder
            .with_client_auth_cert(vec![c.der.clone()], c.key_der())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// The default client: trusts `ca`, offers h2 and http/1.1, TLS 1.2 and 1.3.
pub fn default_client(ca: &Ca) -> Arc<ClientConfig> {
    client_config(ca, &[b"h2", b"http/1.1"], rustls::DEFAULT_VERSIONS, None)
}

/// Opens a TLS connection to `addr` with server name `sni` (an IP address sends none).
pub async fn connect(
    addr: SocketAddr,
    sni: &str,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    TlsConnector::from(config).connect(name, tcp).await
}

/// The leaf certificate the server presented.
pub fn peer_leaf(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// The ALPN protocol negotiated.
pub fn alpn(stream: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

/// An HTTP connection over an established TLS stream: HTTP/2 when ALPN said h2.
pub enum Https {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

impl Https {
    pub async fn over(stream: TlsStream<TcpStream>) -> Self {
        let h2 = alpn(&stream).as_deref() == Some(b"h2");
        let io = TokioIo::new(stream);
        if h2 {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            Https::H2(sender)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            Https::H1(sender)
        }
    }

    /// GET `path` with `Host: host`; status, headers and body.
    pub async fn get(
        &mut self,
        host: &str,
        path: &str,
    ) -> hyper::Result<(StatusCode, HeaderMap, String)> {
        self.get_with(host, path, &[]).await
    }

    /// [`Https::get`] with these request headers as well.
    pub async fn get_with(
        &mut self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> hyper::Result<(StatusCode, HeaderMap, String)> {
        let with_headers = |mut req: Request<Empty<Bytes>>| {
            for (name, value) in headers {
                req.headers_mut().append(
                    http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    value.parse().unwrap(),
                );
            }
            req
        };
        let resp = match self {
            Https::H1(s) => {
                let req = Request::get(path)
                    .header("host", host)
                    .body(Empty::new())
                    .unwrap();
                s.send_request(with_headers(req)).await?
            }
            Https::H2(s) => {
                let req = Request::get(format!("https://{host}{path}"))
                    .body(Empty::new())
                    .unwrap();
                s.send_request(with_headers(req)).await?
            }
        };
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok((
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        ))
    }
}

/// An HTTPS backend (HTTP/1.1 and HTTP/2 by ALPN) serving `issued`, answering like
/// [`super::backend`].
pub async fn tls_backend(issued: &Issued, name: &str) -> Backend {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![issued.der.clone()], issued.key_der())
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    super::serve_backend_with(listener, name, Some(TlsAcceptor::from(Arc::new(config))))
}
