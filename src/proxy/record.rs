//! The access-log record of one request, filled in as the request goes through the
//! proxy and written when its response ends (for a target's streamed body: when the
//! last byte has been sent). Only built when access logs are on.

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use http::{header, Request, Response};

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
    /// Starts the record of `req`, received now from `client` on `listener`.
    pub(super) fn new<B>(
        log: &AccessLog,
        listener: &str,
        client: SocketAddr,
        req: &Request<B>,
    ) -> Self {
        let header = |name| {
            req.headers()
                .get(name)
                .and_then(|v: &http::HeaderValue| v.to_str().ok())
                .unwrap_or("-")
                .to_owned()
        };
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .unwrap_or("-");
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
                client,
                target: None,
                request_processing_time: -1.0,
                target_processing_time: -1.0,
                response_processing_time: -1.0,
                elb_status_code: 0,
                target_status_code: None,
                received_bytes,
                sent_bytes: 0,
                request: format!("{} http://{host}{path} {:?}", req.method(), req.version()),
                user_agent: header(header::USER_AGENT),
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
