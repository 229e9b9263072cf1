//! Why the proxy answered a request itself, and with which status.

use http::StatusCode;
use http_desync_guardian::ClassificationReason;

/// A request the proxy could not forward; decides the status code and the log label.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The target group has no eligible target (503).
    #[error("no target is available in target group")]
    NoTarget,
    /// Connecting to the target failed: refused, unreachable or timed out (502).
    #[error("cannot connect to target")]
    Connect(#[source] crate::upstream::Error),
    /// The target reset the connection or sent something that is not HTTP (502).
    #[error("target failed the request")]
    Target(#[source] crate::upstream::Error),
    /// The target did not answer within the group's response timeout (504).
    #[error("target did not answer within the response timeout")]
    Timeout,
    /// The request target is longer than the listener allows (414).
    #[error("request target is too long")]
    UriTooLong,
    /// The request headers are larger or more numerous than the listener allows (431).
    #[error("request headers are too large")]
    HeadersTooLarge,
    /// An HTTP/1.1 or HTTP/2 request without a host (400).
    #[error("request has no host")]
    MissingHost,
    /// More than one Host field, a Host that is not `host[:port]`, or an HTTP/2 Host
    /// naming another host than `:authority` (400): what a target would take for the
    /// host could differ from what the rules matched.
    #[error("request has an invalid host")]
    InvalidHost,
    /// Blocked by the listener's desync mitigation mode (400).
    #[error("request blocked by desync mitigation: {0:?}")]
    Desync(ClassificationReason),
}

impl Error {
    /// The status code the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::NoTarget => StatusCode::SERVICE_UNAVAILABLE,
            Error::Connect(_) | Error::Target(_) => StatusCode::BAD_GATEWAY,
            Error::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Error::UriTooLong => StatusCode::URI_TOO_LONG,
            Error::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Error::MissingHost | Error::InvalidHost | Error::Desync(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// A short, fixed label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Error::NoTarget => "no_target",
            Error::Connect(_) => "connect",
            Error::Target(_) => "target",
            Error::Timeout => "timeout",
            Error::UriTooLong => "uri_too_long",
            Error::HeadersTooLarge => "headers_too_large",
            Error::MissingHost => "missing_host",
            Error::InvalidHost => "invalid_host",
            Error::Desync(_) => "desync",
        }
    }

    /// Whether the client connection should be closed after the response: the request
    /// may not have been framed the way we read it.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            Error::Desync(_) | Error::HeadersTooLarge | Error::UriTooLong
        )
    }

    /// Classifies an upstream client error.
    pub(crate) fn from_upstream(e: crate::upstream::Error) -> Self {
        if e.is_connect() {
            Error::Connect(e)
        } else {
            Error::Target(e)
        }
    }
}

/// An error and its sources, `: `-separated ("target failed the request: connection
/// error: ..."), for logs: the first line alone rarely says why.
pub(super) struct Causes<'a>(pub(super) &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Causes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}
