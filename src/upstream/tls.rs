//! TLS towards targets (`https` and `tls` target groups): verification on by default,
//! against the group's CA bundle or the system's; the name checked (and sent as SNI)
//! is the group's `server_name`, or else the target's IP address.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::config::{self, ProtocolVersion};

/// A group's TLS client settings.
#[derive(Clone)]
pub(crate) struct Settings {
    connector: TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// The settings of `group`, or `None` when its targets do not speak TLS.
    pub(crate) fn of(group: &config::TargetGroup) -> Option<Self> {
        if !group.protocol.is_tls() {
            return None;
        }
        let tls = &group.tls;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            // The ring provider supports both default versions: not a runtime condition.
            .ok()?;
        let mut client = if tls.verify {
            let roots = match &tls.ca {
                Some(ca) => {
                    let mut roots = rustls::RootCertStore::empty();
                    roots.add_parsable_certificates(ca.certs.iter().cloned());
                    Arc::new(roots)
                }
                None => crate::tls::system_roots(),
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(crate::tls::AnyCertificate(provider)))
                .with_no_client_auth()
        };
        client.alpn_protocols = match (group.protocol, group.protocol_version) {
            (config::GroupProtocol::Https, ProtocolVersion::Http1) => vec![b"http/1.1".to_vec()],
            (config::GroupProtocol::Https, v) if v.is_http2() => vec![b"h2".to_vec()],
            _ => Vec::new(),
        };
        let server_name = tls
            .server_name
            .as_ref()
            .and_then(|n| ServerName::try_from(n.clone()).ok());
        Some(Self {
            connector: TlsConnector::from(Arc::new(client)),
            server_name,
        })
    }

    /// Runs the TLS handshake with the target at `addr` over `stream`.
    pub(crate) async fn handshake(&self, addr: SocketAddr, stream: TcpStream) -> io::Result<Conn> {
        let name = self
            .server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
        let tls = self.connector.connect(name, stream).await?;
        Ok(Conn::Tls(Box::new(tls)))
    }
}

/// A connection to a target: plain TCP, or TLS over it.
#[derive(Debug)]
pub enum Conn {
    /// Clear text.
    Plain(TcpStream),
    /// TLS.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
