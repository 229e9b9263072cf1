//! One health probe of one target: an HTTP/1.1 GET whose status must match, or a TCP
//! connect. Each probe opens its own connection; probes never share the traffic pools.

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{HeaderValue, HOST, USER_AGENT};
use http::Request;
use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::tracker::Failure;
use crate::config::{HealthCheck, HealthProtocol};

/// Probes `addr` once (the caller bounds it with the check's timeout).
pub(crate) async fn run(addr: SocketAddr, check: &HealthCheck) -> Result<(), Failure> {
    let addr = SocketAddr::new(addr.ip(), check.port.unwrap_or(addr.port()));
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|_| Failure::Connection)?;
    if check.protocol == HealthProtocol::Tcp {
        return Ok(());
    }
    let _ = stream.set_nodelay(true); // a failure only costs latency
    let (mut sender, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(|_| Failure::Connection)?;
    let host = match &check.host {
        Some(host) => HeaderValue::from_str(host).map_err(|_| Failure::Connection)?,
        None => HeaderValue::from_str(&addr.to_string()).map_err(|_| Failure::Connection)?,
    };
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
