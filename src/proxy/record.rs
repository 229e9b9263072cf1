//! The access-log record of one request, filled in as the request goes through the
//! proxy and written when its response ends (for a target's streamed body: when the
//! last byte has been sent). Only built when access logs are on.

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use http::{header, Request, Response};

use super::headers::Forwarded;
use super::Body;
use crate::access_log::{AccessLog, Entry};

/// An access-log entry being filled in.
#[derive(Debug)]
pub struct Record {
    log: AccessLog,
    entry: Entry,
    received: Instant,
    sent_to_target: Option<Instant>,
    target_answered: Option<Instant>,
}

impl Record {
    /// Starts the record of `req`, received now from `client` on `listener`, whose
    /// scheme (`http`, `https`) and port the request line shows, as ALB's does.
    pub(super) fn new<B>(
        log: &AccessLog,
        listener: &str,
        (scheme, port): (&str, u16),
        client: &Forwarded,
        req: &Request<B>,
    ) -> Self {
        let header = |name| {
            req.headers()
                .get(name)
                .and_then(|v: &http::HeaderValue| v.to_str().ok())
                .unwrap_or("-")
                .to_owned()
        };
        // As the rules take it (`request_host`): the authority of an absolute-form or
        // HTTP/2 request, else Host.
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| req.headers().get(header::HOST)?.to_str().ok())
            .map_or("-", super::strip_port);
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let received_bytes = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(0);
        Self {
            log: log.clone(),
            entry: Entry {
                time: SystemTime::now(),
                listener: listener.to_owned(),
                client: client.addr,
                target: None,
                request_processing_time: -1.0,
                target_processing_time: -1.0,
                response_processing_time: -1.0,
                elb_status_code: 0,
                target_status_code: None,
                received_bytes,
                sent_bytes: 0,
                kind: kind(req, client.tls.is_some()),
                request: format!(
                    "{} {scheme}://{host}:{port}{path} {:?}",
                    req.method(),
                    req.version()
                ),
                user_agent: header(header::USER_AGENT),
                ssl_cipher: client.tls.as_ref().map_or("-", |t| t.cipher),
                ssl_protocol: client.tls.as_ref().map_or("-", |t| t.protocol),
                domain_name: client.tls.as_ref().and_then(|t| t.server_name.clone()),
                trace_id: "-".to_owned(),
                matched_rule_priority: None,
                target_group: None,
                error_reason: None,
            },
            received: Instant::now(),
            sent_to_target: None,
            target_answered: None,
        }
    }

    /// The rule that matched (`None`: the default action).
    pub(super) fn rule(&mut self, priority: Option<u32>) {
        self.entry.matched_rule_priority = priority;
    }

    /// The request leaves for `target` of `group` now, with this trace id.
    pub(super) fn forwarding(
        &mut self,
        group: &str,
        target: SocketAddr,
        trace_id: Option<&http::HeaderValue>,
    ) {
        self.entry.target_group = Some(group.to_owned());
        self.entry.target = Some(target);
        let trace_id = trace_id.and_then(|v| v.to_str().ok()).unwrap_or("-");
        self.entry.trace_id = trace_id.to_owned();
        self.sent_to_target = Some(Instant::now());
    }

    /// The target answered with `status`.
    pub(super) fn answered(&mut self, status: u16) {
        self.entry.target_status_code = Some(status);
        self.target_answered = Some(Instant::now());
    }

    /// Why the proxy answered itself.
    pub(super) fn error(&mut self, reason: &'static str) {
        self.entry.error_reason = Some(reason);
    }

    /// Completes the record once `resp` is the response: at once for a response the
    /// proxy made, at the end of the body for a target's.
    pub(super) fn finish(mut self, resp: &mut Response<Body>) {
        self.entry.elb_status_code = resp.status().as_u16();
        match resp.body_mut() {
            Body::Target(_, tail) => tail.record = Some(Box::new(self)),
            Body::Full(bytes) => {
                let sent = bytes.as_ref().map_or(0, |b| b.len() as u64);
                self.write(sent);
            }
        }
    }

    /// Writes the record: `sent` body bytes went to the client.
    pub(super) fn write(mut self, sent: u64) {
        let now = Instant::now();
        let secs = |from: Instant, to: Instant| to.saturating_duration_since(from).as_secs_f64();
        if let Some(sent_at) = self.sent_to_target {
            self.entry.request_processing_time = secs(self.received, sent_at);
            if let Some(answered) = self.target_answered {
                self.entry.target_processing_time = secs(sent_at, answered);
                self.entry.response_processing_time = secs(answered, now);
            }
        } else {
            self.entry.request_processing_time = secs(self.received, now);
        }
        self.entry.sent_bytes = sent;
        self.entry.time = SystemTime::now();
        self.log.log(self.entry);
    }
}

/// ALB's `type` of a request: `http`, `https`, `h2` (HTTP/2 over TLS), `grpcs`, `ws`,
/// `wss`; and, for what ALB does not take, `h2c` and `grpc` (HTTP/2 in the clear).
fn kind<B>(req: &Request<B>, tls: bool) -> &'static str {
    let headers = req.headers();
    if req.version() == http::Version::HTTP_2 {
        let grpc = headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        return match (grpc, tls) {
            (true, true) => "grpcs",
            (true, false) => "grpc",
            (false, true) => "h2",
            (false, false) => "h2c",
        };
    }
    let websocket = headers
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    match (websocket, tls) {
        (true, true) => "wss",
        (true, false) => "ws",
        (false, true) => "https",
        (false, false) => "http",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_request_gets_albs_type() {
        let req = |version, headers: &[(&str, &str)]| {
            let mut b = Request::builder().version(version).uri("/");
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            b.body(()).unwrap()
        };
        let h1 = http::Version::HTTP_11;
        let h2 = http::Version::HTTP_2;
        let ws = [("connection", "Upgrade"), ("upgrade", "WebSocket")];
        let grpc = [("content-type", "application/grpc+proto")];
        assert_eq!(kind(&req(h1, &[]), false), "http");
        assert_eq!(kind(&req(h1, &[]), true), "https");
        assert_eq!(kind(&req(h1, &ws), false), "ws");
        assert_eq!(kind(&req(h1, &ws), true), "wss");
        assert_eq!(kind(&req(h2, &[]), true), "h2");
        assert_eq!(kind(&req(h2, &[]), false), "h2c");
        assert_eq!(kind(&req(h2, &grpc), true), "grpcs");
        assert_eq!(kind(&req(h2, &grpc), false), "grpc");
        // Not an upgrade ALB counts as a WebSocket.
        assert_eq!(kind(&req(h1, &[("upgrade", "h2c")]), false), "http");
    }
}
