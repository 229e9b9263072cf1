//! One health probe of one target: a GET (HTTP/1.1, or HTTP/2 for `http2` groups; in
//! clear or over TLS) whose status must match, a gRPC call (HTTP/2) whose `grpc-status`
//! must match, or a TCP connect. Each probe opens its own connection; probes never
//! share the traffic pools.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, HOST, TE, USER_AGENT};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::tracker::Failure;
use crate::config::{HealthCheck, HealthProtocol, ProtocolVersion};

/// The `User-Agent` of every HTTP and gRPC probe, as ALB's.
const HEALTH_CHECKER: &str = "ELB-HealthChecker/2.0";

/// Response body bytes a probe reads before closing its connection.
const MAX_PROBE_BODY: usize = 64 * 1024;

/// The body of a gRPC check: one message, not compressed, of length 0 (an empty
/// protobuf message, e.g. `grpc.health.v1.HealthCheckRequest` for every service).
const EMPTY_GRPC_MESSAGE: [u8; 5] = [0; 5];

/// Probes `addr` once (the caller bounds it with the check's timeout).
pub(crate) async fn run(addr: SocketAddr, check: &HealthCheck) -> Result<(), Failure> {
    let addr = SocketAddr::new(addr.ip(), check.port.unwrap_or(addr.port()));
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|_| Failure::Connection)?;
    let _ = stream.set_nodelay(true); // a failure only costs latency
    match check.protocol {
        HealthProtocol::Tcp => Ok(()),
        HealthProtocol::Http => exchange(stream, addr, check, "http").await,
        HealthProtocol::Https => {
            let name = match &check.host {
                Some(host) => {
                    ServerName::try_from(host.clone()).map_err(|_| Failure::Connection)?
                }
                None => ServerName::IpAddress(addr.ip().into()),
            };
            let tls = TlsConnector::from(tls_config(check.version.is_http2()))
                .connect(name, stream)
                .await
                .map_err(|_| Failure::Connection)?;
            exchange(tls, addr, check, "https").await
        }
    }
}

/// The check's exchange over `stream`, in the group's protocol version.
async fn exchange<S>(
    stream: S,
    addr: SocketAddr,
    check: &HealthCheck,
    scheme: &str,
) -> Result<(), Failure>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match check.version {
        ProtocolVersion::Http1 => http(stream, addr, check).await,
        ProtocolVersion::Http2 => http2_get(stream, addr, check, scheme).await,
        ProtocolVersion::Grpc => grpc(stream, addr, check, scheme).await,
    }
}

/// The `Host` (or `:authority`) of a check: the configured one, else the target's address.
fn host(addr: SocketAddr, check: &HealthCheck) -> Result<HeaderValue, Failure> {
    match &check.host {
        Some(host) => HeaderValue::from_str(host),
        None => HeaderValue::from_str(&addr.to_string()),
    }
    .map_err(|_| Failure::Connection)
}

async fn http<S>(stream: S, addr: SocketAddr, check: &HealthCheck) -> Result<(), Failure>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(|_| Failure::Connection)?;
    let req = Request::get(check.path.as_str())
        .header(HOST, host(addr, check)?)
        .header(USER_AGENT, HEALTH_CHECKER)
        .body(Empty::new())
        .map_err(|_| Failure::Connection)?;
    let response = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|_| Failure::Connection)?;
        answered(check, resp).await
    };
    while_driving(conn, response).await
}

/// An HTTP check of an `http2` group: the same GET on an HTTP/2 connection (prior
/// knowledge in clear, ALPN `h2` over TLS), as the group's requests go; the host goes
/// as `:authority`.
async fn http2_get<S>(
    stream: S,
    addr: SocketAddr,
    check: &HealthCheck,
    scheme: &str,
) -> Result<(), Failure>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let req = Request::get(http2_uri(addr, check, scheme)?)
        .header(USER_AGENT, HEALTH_CHECKER)
        .body(Empty::<Bytes>::new())
        .map_err(|_| Failure::Connection)?;
    over_http2(stream, req, |resp| answered(check, resp)).await
}

/// Sends `req` on a new HTTP/2 connection over `stream` and judges the answer with
/// `judge`, driving the connection meanwhile.
async fn over_http2<S, B, J, F>(stream: S, req: Request<B>, judge: J) -> Result<(), Failure>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    J: FnOnce(http::Response<Incoming>) -> F,
    F: std::future::Future<Output = Result<(), Failure>>,
{
    let (mut sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .map_err(|_| Failure::Connection)?;
    let response = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|_| Failure::Connection)?;
        judge(resp).await
    };
    while_driving(conn, response).await
}

/// Whether an HTTP check's answer passes, by its status. The (small) body is read too:
/// closing a connection with unread bytes resets it, and the target's server would log
/// a connection reset every check.
async fn answered(check: &HealthCheck, resp: http::Response<Incoming>) -> Result<(), Failure> {
    let status = resp.status().as_u16();
    let _ = Limited::new(resp.into_body(), MAX_PROBE_BODY)
        .collect()
        .await;
    matched(check, status)
}

/// The absolute URI of an HTTP/2 check: `scheme://host/path`.
fn http2_uri(addr: SocketAddr, check: &HealthCheck, scheme: &str) -> Result<String, Failure> {
    let host = host(addr, check)?;
    Ok(format!(
        "{scheme}://{}{}",
        host.to_str().unwrap_or_default(),
        check.path
    ))
}

/// A gRPC check: an HTTP/2 connection, one unary call with an empty message. It passes
/// when the HTTP status is 200 and the `grpc-status` (in the head of a trailers-only
/// response, else in the trailers) matches. An answer with no `grpc-status` is not a
/// gRPC server's and fails whatever the matcher says, with its HTTP status.
async fn grpc<S>(
    stream: S,
    addr: SocketAddr,
    check: &HealthCheck,
    scheme: &str,
) -> Result<(), Failure>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let req = Request::post(http2_uri(addr, check, scheme)?)
        .header(CONTENT_TYPE, "application/grpc")
        .header(TE, "trailers")
        .header(USER_AGENT, HEALTH_CHECKER)
        .body(Full::new(Bytes::from_static(&EMPTY_GRPC_MESSAGE)))
        .map_err(|_| Failure::Connection)?;
    over_http2(stream, req, |resp| async move {
        if resp.status() != StatusCode::OK {
            return Err(Failure::ResponseCodeMismatch(resp.status().as_u16()));
        }
        let code = match grpc_status(resp.headers()) {
            Some(code) => code,
            None => {
                let body = Limited::new(resp.into_body(), MAX_PROBE_BODY)
                    .collect()
                    .await
                    .map_err(|_| Failure::Connection)?;
                let code = body.trailers().and_then(grpc_status);
                code.ok_or(Failure::ResponseCodeMismatch(StatusCode::OK.as_u16()))?
            }
        };
        matched(check, code)
    })
    .await
}

/// Whether `code` (an HTTP status, or a gRPC one) passes the check's matcher.
fn matched(check: &HealthCheck, code: u16) -> Result<(), Failure> {
    if check.matcher.matches(code) {
        Ok(())
    } else {
        Err(Failure::ResponseCodeMismatch(code))
    }
}

/// Runs a probe's exchange while driving its connection here, not in a task of its
/// own (it lives for one probe); the connection ending first fails the probe.
async fn while_driving<C: std::future::Future>(
    conn: C,
    exchange: impl std::future::Future<Output = Result<(), Failure>>,
) -> Result<(), Failure> {
    tokio::pin!(conn);
    tokio::select! {
        outcome = exchange => outcome,
        _ = &mut conn => Err(Failure::Connection),
    }
}

/// A `grpc-status` field's code.
fn grpc_status(fields: &http::HeaderMap) -> Option<u16> {
    fields.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// TLS settings of HTTPS probes (with ALPN `h2` for HTTP/2 and gRPC ones), made once each: like
/// ALB's, they do not verify the target's certificate (targets commonly serve
/// self-signed ones), but they do check that the handshake is signed by the key of the
/// certificate presented.
fn tls_config(h2: bool) -> Arc<rustls::ClientConfig> {
    static HTTP1: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    static H2: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    Arc::clone((if h2 { &H2 } else { &HTTP1 }).get_or_init(|| {
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
        let mut config = config.expect("ring supports TLS 1.2 and 1.3");
        if h2 {
            config.alpn_protocols = vec![b"h2".to_vec()];
        }
        Arc::new(config)
    }))
}
