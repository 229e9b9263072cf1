//! Outbound: pooled keep-alive clients to targets, HTTP/1.1 or HTTP/2 (prior knowledge).
//!
//! One [`Client`] per target group, kept across reloads while the group's connection
//! settings are unchanged, so a reload does not drop pooled connections.

use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{self, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::{self, ProtocolVersion};

/// A pooled client to one target group's targets. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    inner: legacy::Client<HttpConnector, Incoming>,
    version: ProtocolVersion,
    connect_timeout: Duration,
}

/// Idle pooled connections are closed after this; shorter than the usual 60 s
/// keep-alive of targets, so we rarely pick a connection the target is closing.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);

impl Client {
    /// A client for `group`'s protocol version and connect timeout.
    pub fn new(group: &config::TargetGroup) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(group.connect_timeout));
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let mut builder = legacy::Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            // Keep the Host header we set: it is the client's, not the target's address.
            .set_host(false);
        if group.protocol_version == ProtocolVersion::Http2 {
            builder.http2_only(true);
        }
        Self {
            inner: builder.build(connector),
            version: group.protocol_version,
            connect_timeout: group.connect_timeout,
        }
    }

    /// Whether this client already has `group`'s connection settings.
    pub fn serves(&self, group: &config::TargetGroup) -> bool {
        self.version == group.protocol_version && self.connect_timeout == group.connect_timeout
    }

    /// The HTTP version requests to targets must carry.
    pub fn version(&self) -> http::Version {
        match self.version {
            ProtocolVersion::Http1 => http::Version::HTTP_11,
            ProtocolVersion::Http2 => http::Version::HTTP_2,
        }
    }

    /// Sends a request whose URI is absolute (`http://target/path`).
    pub fn request(&self, req: http::Request<Incoming>) -> ResponseFuture {
        self.inner.request(req)
    }
}
