//! One health probe of one target: an HTTP/1.1 GET (in clear or over TLS) whose status
//! must match, or a TCP connect. Each probe opens its own connection; probes never share
//! the traffic pools.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::header::{HeaderValue, HOST, USER_AGENT};
use http::Request;
use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::tracker::Failure;
use crate::config::{HealthCheck, HealthProtocol};

/// Response body bytes a probe reads before closing its connection.
const MAX_PROBE_BODY: usize = 64 * 1024;

/// Probes `addr` once (the caller bounds it with the check's timeout).
pub(crate) async fn run(addr: SocketAddr, check: &HealthCheck) -> Result<(), Failure> {
    let addr = SocketAddr::new(addr.ip(), check.port.unwrap_or(addr.port()));
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|_| Failure::Connection)?;
    let _ = stream.set_nodelay(true); // a failure only costs latency
    match check.protocol {
        HealthProtocol::Tcp => Ok(()),
        HealthProtocol::Http => http(stream, addr, check).await,
        HealthProtocol::Https => {
            let name = match &check.host {
                Some(host) => {
                    ServerName::try_from(host.clone()).map_err(|_| Failure::Connection)?
                }
                None => ServerName::IpAddress(addr.ip().into()),
            };
            let tls = TlsConnector::from(tls_config())
                .connect(name, stream)
                .await
                .map_err(|_| Failure::Connection)?;
            http(tls, addr, check).await
        }
    }
}

async fn http<S>(stream: S, addr: SocketAddr, check: &HealthCheck) -> Result<(), Failure>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(|_| Failure::Connection)?;
    let host = match &check.host {
        Some(host) => HeaderValue::from_str(host),
        None => HeaderValue::from_str(&addr.to_string()),
    }
    .map_err(|_| Failure::Connection)?;
    let req = Request::get(check.path.as_str())
        .header(HOST, host)
        .header(USER_AGENT, "ELB-HealthChecker/2.0")
        .body(Empty::new())
        .map_err(|_| Failure::Connection)?;
    // The connection is driven here, not in a task of its own: it lives for one probe.
    let response = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|_| Failure::Connection)?;
        let status = resp.status().as_u16();
        // Read the (small) body too: closing a connection with unread bytes resets
        // it, and the target's server would log a connection reset every check.
        let body = http_body_util::Limited::new(resp.into_body(), MAX_PROBE_BODY);
        let _ = http_body_util::BodyExt::collect(body).await;
        if check.matcher.matches(status) {
            Ok(())
        } else {
            Err(Failure::ResponseCodeMismatch(status))
        }
    };
    tokio::pin!(conn);
    tokio::select! {
        outcome = response => outcome,
        _ = &mut conn => Err(Failure::Connection),
    }
}

/// TLS settings of HTTPS probes, made once: like ALB's, they do not verify the target's
/// certificate (targets commonly serve self-signed ones), but they do check that the
/// handshake is signed by the key of the certificate presented.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map(|b| {
                b.dangerous()
                    .with_custom_certificate_verifier(Arc::new(crate::tls::AnyCertificate(
                        provider,
                    )))
                    .with_no_client_auth()
            });
        // The ring provider supports the default protocol versions; failing here would
        // be a build mistake, not a runtime condition.
        Arc::new(config.expect("ring supports TLS 1.2 and 1.3"))
    }))
}
