//! The one L7 request path: check limits and desync safety, route, pick a target,
//! forward, and stream the response back.
//!
//! [`Proxy::handle`] is called by the HTTP listener for every request. It reads the
//! current route table once, resolves everything it needs from it (group, target,
//! upstream client), and drops it before the first `.await`.

mod body;
pub mod desync;
mod error;
pub mod headers;
mod record;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::listener::idle::RequestBody;
use http::header::{self, HeaderValue};
use http::uri::Authority;
use http::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;

pub use body::{Body, Tail};
pub use error::Error;
pub use headers::Forwarded;

use crate::access_log::AccessLog;
use crate::balance::sticky;
use crate::config::{self, Stickiness};
use crate::listener::idle::{watch_idle, Activity, IdleStream};
use crate::metrics::Metrics;
use crate::routing::{self, Action, Routes};
use crate::target::InFlight;
use crate::upstream::Heads;
use record::Record;

/// Serves the requests of one listener.
#[derive(Debug)]
pub struct Proxy {
    routes: Routes,
    /// Per-listener counters (connections, proxy-generated responses).
    metrics: Arc<Metrics>,
    /// Where access-log records go, when access logs are on.
    access_log: Option<AccessLog>,
    /// Position of the listener in the config (and in each route table).
    listener: usize,
    /// The listener's port, for `X-Forwarded-Port` and redirects.
    port: u16,
    /// `"http"` or `"https"`, for `X-Forwarded-Proto` and redirects.
    scheme: &'static str,
    /// `X-Forwarded-Proto` and `X-Forwarded-Port`, made once.
    forwarded_proto: HeaderValue,
    forwarded_port: HeaderValue,
}

/// ALB's headers of the client's TLS session (`x_amzn_tls_version_and_cipher_suite`).
const X_AMZN_TLS_VERSION: http::HeaderName = http::HeaderName::from_static("x-amzn-tls-version");
const X_AMZN_TLS_CIPHER_SUITE: http::HeaderName =
    http::HeaderName::from_static("x-amzn-tls-cipher-suite");

/// How [`Proxy::prepare`] rewrites a request, besides for its target.
#[derive(Clone, Copy)]
struct Preparing {
    /// The listener's `X-Forwarded-For` processing.
    xff: crate::config::Xff,
    /// `X-Amzn-Tls-Version` and `X-Amzn-Tls-Cipher-Suite` go to the target.
    tls_headers: bool,
    /// An HTTP/1.1 upgrade: `Upgrade` and `Connection: upgrade` stay.
    upgrade: bool,
    /// The target connection is not to be reused (`Connection: close`).
    close: bool,
}

/// Where a forwarded request goes, resolved from one route-table snapshot.
struct Forwarding {
    group: Arc<routing::TargetGroup>,
    in_flight: InFlight,
    set_group_cookie: Option<Duration>,
}

impl Proxy {
    /// A proxy for the listener at `listener` (its position in the config).
    pub fn new(
        routes: Routes,
        metrics: Arc<Metrics>,
        access_log: Option<AccessLog>,
        listener: usize,
        port: u16,
        scheme: &'static str,
    ) -> Self {
        Self {
            routes,
            metrics,
            access_log,
            listener,
            port,
            scheme,
            forwarded_proto: HeaderValue::from_static(scheme),
            forwarded_port: HeaderValue::from(port),
        }
    }

    /// Handles one request from `client`; never fails: errors become responses.
    /// `heads`: whether the caller writes a target's response fields as received
    /// ([`Heads::Raw`], the lean HTTP/1 server) or needs them in the `HeaderMap`.
    pub async fn handle(
        &self,
        client: &Forwarded,
        req: Request<RequestBody>,
        heads: Heads,
    ) -> Response<Body> {
        let mut record = self.access_log.as_ref().map(|log| {
            let name = self.routes.load().listener(self.listener).name.clone();
            Record::new(log, &name, (self.scheme, self.port), client, &req)
        });
        let mut set = None;
        let mut resp = match self
            .serve(client, req, heads, record.as_mut(), &mut set)
            .await
        {
            Ok(resp) => resp,
            Err(e) => self.error_response(&e, record.as_mut()),
        };
        if let Some(fields) = set {
            let headers = resp.headers_mut();
            for (name, value) in fields.iter() {
                headers.insert(name.clone(), value.clone());
            }
        }
        if let Some(record) = record {
            record.finish(&mut resp);
        }
        resp
    }

    /// The proxy's own answer to a request it could not forward. (Not an `async fn`
    /// around `serve`: each level of nesting copies the whole request future again.)
    fn error_response(&self, e: &Error, record: Option<&mut Record>) -> Response<Body> {
        tracing::debug!(error = %error::Causes(e), reason = e.label(), "request answered by the proxy");
        if let Some(record) = record {
            record.error(e.label());
        }
        self.count_elb_response(e.status());
        let mut resp = status_response(e.status());
        if e.closes_connection() {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }

    async fn serve(
        &self,
        client: &Forwarded,
        mut req: Request<RequestBody>,
        heads: Heads,
        mut record: Option<&mut Record>,
        response_headers: &mut Option<routing::ResponseHeaders>,
    ) -> Result<Response<Body>, Error> {
        let mut close = false;
        let mut retried = false;
        let (forwarding, timeout, idle_timeout, counting, mut how) = loop {
            let table = self.routes.load();
            let listener = table.listener(self.listener);
            response_headers.clone_from(&listener.response_headers);
            let counting = table.metrics_enabled.then_some(table.listeners().len());
            check_limits(&req, &listener.limits)?;
            if req.version() <= Version::HTTP_11 {
                let (tier, reason) = desync::classify(&req);
                match desync::verdict(listener.desync_mode, tier, reason) {
                    desync::Verdict::Forward => {}
                    desync::Verdict::ForwardAndClose => close = true,
                    desync::Verdict::Block(reason) => return Err(Error::Desync(reason)),
                }
                if tier != http_desync_guardian::RequestSafetyTier::Compliant {
                    tracing::debug!(?tier, ?reason, "desync classification");
                }
            }
            // After the desync classification, which judges the request as it came.
            if listener.drop_invalid_header_fields {
                headers::drop_invalid_fields(req.headers_mut());
            }
            let host = request_host(&req, self.scheme)?;
            if host.is_none() && req.version() >= Version::HTTP_11 {
                return Err(Error::MissingHost);
            }
            let rule_req = routing::Request {
                host,
                path: req.uri().path(),
                query: req.uri().query(),
                method: req.method(),
                headers: req.headers(),
                source_ip: client.addr.ip(),
            };
            let (action, priority) = listener.route(&rule_req);
            if let Some(record) = record.as_deref_mut() {
                record.rule(priority);
            }
            match action {
                Action::FixedResponse(f) => {
                    let mut resp = Response::new(Body::full(f.body.clone()));
                    *resp.status_mut() = f.status;
                    resp.headers_mut()
                        .insert(header::CONTENT_TYPE, f.content_type.clone());
                    self.count_elb_response(f.status);
                    return Ok(resp);
                }
                Action::Redirect(r) => {
                    let resp = redirect(r, &req, host, (self.scheme, self.port));
                    self.count_elb_response(resp.status());
                    return Ok(resp);
                }
                Action::Forward(forward) => {
                    let (group, new_group_cookie) = forward.pick_group(req.headers());
                    let Some(target) =
                        sticky_target(group, req.headers()).or_else(|| group.balancer.pick())
                    else {
                        // A reload stores the next table, then marks the targets it
                        // removed as draining: a request that loaded this table just
                        // before can find them all draining. The next table has their
                        // successors, so look once more if there is one.
                        let newer = !std::ptr::eq(&**table, &**self.routes.load());
                        if newer && !retried {
                            retried = true;
                            continue;
                        }
                        return Err(Error::NoTarget);
                    };
                    let forwarding = Forwarding {
                        group: Arc::clone(group),
                        in_flight: target.begin(),
                        set_group_cookie: forward.stickiness.filter(|_| new_group_cookie),
                    };
                    break (
                        forwarding,
                        group.config.response_timeout,
                        listener.idle_timeout,
                        counting,
                        Preparing {
                            xff: listener.xff,
                            tls_headers: listener.tls_headers,
                            upgrade: false,
                            close,
                        },
                    );
                }
            }
        };
        let target = Arc::clone(forwarding.in_flight.target());
        let upgrade = req.version() == Version::HTTP_11 && headers::is_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        how.upgrade = upgrade;
        self.prepare(&mut req, client, &target, &forwarding.group, how);
        if let Some(record) = record.as_deref_mut() {
            let trace_id = headers::trace_id(req.headers());
            record.forwarding(&forwarding.group.config.name, target.addr, trace_id);
        }

        // One clock read serves the deadline and the response time.
        let started = tokio::time::Instant::now();
        // Fields as received cannot be searched for the application's cookie, nor
        // have some replaced by the listener's.
        let heads = match forwarding.group.config.stickiness {
            Some(Stickiness::AppCookie { .. }) => Heads::Map,
            _ if response_headers.is_some() => Heads::Map,
            _ => heads,
        };
        let sent = forwarding.group.upstream.send(&target, req, upgrade, heads);
        let deadline = started
            .checked_add(timeout)
            .unwrap_or_else(|| started + Duration::from_secs(365 * 86_400));
        let outcome = match tokio::time::timeout_at(deadline, sent).await {
            Ok(Ok(sent)) => Ok(sent),
            Ok(Err(e)) => Err(Error::from_upstream(e)),
            Err(_) => Err(Error::Timeout),
        };
        if let Some(listeners) = counting {
            match &outcome {
                Ok((resp, _)) => {
                    let now = tokio::time::Instant::now();
                    let counters = &forwarding.group.counters;
                    counters.record(now - started, now.into_std());
                    let status = resp.status().as_u16();
                    target
                        .counters
                        .count_response(self.listener, listeners, status);
                }
                Err(Error::Connect(_)) => {
                    target
                        .counters
                        .connection_errors
                        .fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {}
            }
        }
        if let Some(od) = &forwarding.group.config.outlier_detection {
            let failed = outcome
                .as_ref()
                .map_or(true, |(resp, _)| resp.status().is_server_error());
            let group = forwarding.group.balancer.targets().targets();
            crate::health::outlier::record(group, &target, od, failed);
        }
        let (mut resp, reuse) = outcome?;
        if let Some(record) = record {
            record.answered(resp.status().as_u16());
        }
        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        headers::strip_hop_by_hop(resp.headers_mut(), switching);
        set_sticky_cookies(&mut resp, &forwarding);
        if close {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        match client_upgrade {
            Some(client_upgrade) if switching => {
                let target_upgrade = hyper::upgrade::on(&mut resp);
                let in_flight = forwarding.in_flight;
                tokio::spawn(tunnel(
                    client_upgrade,
                    target_upgrade,
                    in_flight,
                    idle_timeout,
                ));
                Ok(resp.map(|_| Body::empty()))
            }
            _ => {
                let tail = Tail {
                    in_flight: Some(forwarding.in_flight),
                    reuse,
                    ..Tail::default()
                };
                Ok(resp.map(|b| Body::Target(b, tail)))
            }
        }
    }

    /// Rewrites the request for the target: URI form and version for the target's
    /// protocol, hop-by-hop headers out, forwarding headers in.
    fn prepare(
        &self,
        req: &mut Request<RequestBody>,
        client: &Forwarded,
        target: &crate::target::Target,
        group: &routing::TargetGroup,
        how: Preparing,
    ) {
        let Preparing {
            xff,
            tls_headers,
            upgrade,
            close,
        } = how;
        // HTTP/2 clients send the authority instead of a Host header, and an HTTP/1
        // absolute-form target's authority replaces Host (RFC 9112 §3.2.2); targets
        // need Host.
        if let Some(authority) = req.uri().authority() {
            let replace = req.version() != Version::HTTP_2;
            if replace || !req.headers().contains_key(header::HOST) {
                if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                    req.headers_mut().insert(header::HOST, host);
                }
            }
        }
        let headers = req.headers_mut();
        headers::strip_hop_by_hop(headers, upgrade);
        headers::add_forwarded(
            headers,
            client,
            &self.forwarded_proto,
            &self.forwarded_port,
            xff,
        );
        if let Some(tls) = client.tls.as_ref().filter(|_| tls_headers) {
            headers.insert(X_AMZN_TLS_VERSION, HeaderValue::from_static(tls.protocol));
            headers.insert(
                X_AMZN_TLS_CIPHER_SUITE,
                HeaderValue::from_static(tls.cipher),
            );
        }
        headers::trace(headers);
        if close {
            // Ambiguous request (desync defensive mode): the target connection must not
            // be reused either.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        // HTTP/1.1 connections take the origin form (`/path?query`), HTTP/2 the
        // absolute form its pseudo-headers are made from.
        if group.upstream.version() == Version::HTTP_2 {
            // `:authority` is the Host the client asked for, as `Host` is preserved for
            // HTTP/1.1 targets: HTTP/2 servers take the host from it. The Host field
            // itself does not go on: nginx answers 400 ("duplicate host header") to a
            // request with both, and RFC 9113 §8.3.1 has clients send `:authority`
            // alone. The target's address only when the request has no usable host.
            let host = req.headers_mut().remove(header::HOST);
            // The target connection is shared and long-lived: its HPACK table must not
            // keep client read buffers alive.
            headers::own_values(req.headers_mut());
            parts.scheme = Some(group.upstream.scheme());
            let host = host.as_ref().map(HeaderValue::as_bytes);
            parts.authority = match (parts.authority.take(), host) {
                (Some(authority), Some(host)) if authority.as_str().as_bytes() == host => {
                    Some(authority)
                }
                (_, Some(host)) => Authority::try_from(host).ok(),
                (authority, None) => authority,
            }
            .or_else(|| Some(target.authority.clone()));
        } else {
            parts.scheme = None;
            parts.authority = None;
        }
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        *req.uri_mut() = Uri::from_parts(parts).unwrap_or_default();
        *req.version_mut() = group.upstream.version();
    }
}

impl Proxy {
    fn count_elb_response(&self, status: StatusCode) {
        if self.routes.load().metrics_enabled {
            self.metrics
                .listener(self.listener)
                .count_elb_response(status.as_u16());
        }
    }
}

/// Carries an upgraded connection (WebSocket and the like) both ways until either side
/// ends or no byte moves for the listener's idle timeout, as ALB closes idle WebSockets.
/// The tunnel counts as one request in flight to its target until it ends.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    target: hyper::upgrade::OnUpgrade,
    in_flight: InFlight,
    idle_timeout: Duration,
) {
    let _in_flight = in_flight;
    let (Ok(client_io), Ok(target_io)) = tokio::join!(client, target) else {
        return;
    };
    let activity = Activity::new(None);
    let mut client_io = IdleStream::new(TokioIo::new(client_io), Arc::clone(&activity));
    let mut target_io = TokioIo::new(target_io);
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client_io, &mut target_io) => {
            if let Err(e) = copied {
                tracing::debug!(error = %e, "upgraded connection ended");
            }
        }
        () = watch_idle(&activity, idle_timeout) => {
            tracing::debug!("closing idle upgraded connection");
        }
    }
}

fn check_limits<B>(req: &Request<B>, limits: &config::Limits) -> Result<(), Error> {
    let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri_len > limits.max_uri_bytes {
        return Err(Error::UriTooLong);
    }
    let headers = req.headers();
    if headers.len() > limits.max_headers {
        return Err(Error::HeadersTooLarge);
    }
    let bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if bytes > limits.max_header_bytes {
        return Err(Error::HeadersTooLarge);
    }
    Ok(())
}

/// The host name a request is for, without its port (`None`: it names none), checked
/// as RFC 9112 §3.2 and RFC 9113 §8.3.1 ask, so that a target cannot take another host
/// from it than the rules matched: one Host field at most, of `host[:port]` syntax; an HTTP/1
/// absolute-form target's authority instead of Host (which [`Proxy::prepare`] then
/// rewrites to it); an HTTP/2 Host naming the same as `:authority`.
fn request_host<'r, B>(req: &'r Request<B>, scheme: &str) -> Result<Option<&'r str>, Error> {
    let mut fields = req.headers().get_all(header::HOST).iter();
    let field = fields.next();
    if fields.next().is_some() {
        return Err(Error::InvalidHost);
    }
    let field = field
        .map(|v| v.to_str().map_err(|_| Error::InvalidHost))
        .transpose()?;
    let authority = req.uri().authority().map(Authority::as_str);
    let host = match (authority, field) {
        (Some(authority), Some(field)) if req.version() == Version::HTTP_2 => {
            if !headers::same_host(authority, field, scheme) {
                return Err(Error::InvalidHost);
            }
            authority
        }
        (Some(authority), _) => authority,
        (None, Some(field)) => field,
        (None, None) => return Ok(None),
    };
    match host {
        "" => Ok(None),
        host => headers::host_name(host).map(Some).ok_or(Error::InvalidHost),
    }
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `[::1]`.
fn strip_port(host: &str) -> &str {
    // From the end: digits, then a `:` ends the port; a `]` first means an IPv6
    // literal without one. (A byte loop: `rfind` and `contains` cost more per request.)
    for (i, &b) in host.as_bytes().iter().enumerate().rev() {
        match b {
            b':' => return &host[..i],
            b']' => return host,
            _ => {}
        }
    }
    host
}

fn sticky_target<'g>(
    group: &'g routing::TargetGroup,
    headers: &http::HeaderMap,
) -> Option<&'g Arc<crate::target::Target>> {
    let cookie = match group.config.stickiness.as_ref()? {
        Stickiness::LbCookie { .. } => sticky::LB_COOKIE,
        Stickiness::AppCookie { .. } => sticky::APP_COOKIE,
    };
    let addr = sticky::decode_addr(sticky::find_cookie(headers, cookie)?)?;
    group.balancer.pick_addr(addr)
}

fn set_sticky_cookies(resp: &mut Response<crate::upstream::ResponseBody>, f: &Forwarding) {
    let target = f.in_flight.target().addr;
    let cookie = match &f.group.config.stickiness {
        Some(Stickiness::LbCookie { duration }) => {
            sticky::set_cookie(sticky::LB_COOKIE, &sticky::encode_addr(target), *duration)
        }
        Some(Stickiness::AppCookie {
            cookie_name,
            duration,
        }) => {
            let app_set_it = resp.headers().get_all(header::SET_COOKIE).iter().any(|v| {
                v.as_bytes().starts_with(cookie_name.as_bytes())
                    && v.as_bytes().get(cookie_name.len()) == Some(&b'=')
            });
            app_set_it
                .then(|| {
                    sticky::set_cookie(sticky::APP_COOKIE, &sticky::encode_addr(target), *duration)
                })
                .flatten()
        }
        None => None,
    };
    if let Some(cookie) = cookie {
        resp.headers_mut().append(header::SET_COOKIE, cookie);
    }
    if let Some(duration) = f.set_group_cookie {
        if let Some(cookie) =
            sticky::set_cookie(sticky::GROUP_COOKIE, &f.group.config.name, duration)
        {
            resp.headers_mut().append(header::SET_COOKIE, cookie);
        }
    }
}

/// A redirect with ALB's placeholders filled in: `#{protocol}`, `#{host}`, `#{port}`,
/// `#{path}` (without its leading `/`) and `#{query}`.
fn redirect<B>(
    r: &config::Redirect,
    req: &Request<B>,
    host: Option<&str>,
    (scheme, port): (&str, u16),
) -> Response<Body> {
    let host = host.unwrap_or("");
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    let port_text = port.to_string();
    let fill = |template: &str| {
        template
            .replace("#{protocol}", scheme)
            .replace("#{host}", host)
            .replace("#{port}", &port_text)
            .replace("#{path}", path.strip_prefix('/').unwrap_or(path))
            .replace("#{query}", query)
    };
    let protocol = fill(&r.protocol);
    let port = fill(&r.port);
    let default_port = matches!(
        (protocol.as_str(), port.as_str()),
        ("http", "80") | ("https", "443")
    );
    let mut location = format!("{protocol}://{}", fill(&r.host));
    if !default_port && !port.is_empty() {
        location.push(':');
        location.push_str(&port);
    }
    location.push_str(&fill(&r.path));
    let query = fill(&r.query);
    if !query.is_empty() {
        location.push('?');
        location.push_str(&query);
    }
    let mut resp =
        status_response(StatusCode::from_u16(r.status).unwrap_or(StatusCode::MOVED_PERMANENTLY));
    match HeaderValue::from_str(&location) {
        Ok(v) => {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        Err(_) => *resp.status_mut() = StatusCode::BAD_REQUEST,
    }
    resp
}

/// A small plain-text response for a status the proxy generates itself.
pub fn status_response(status: StatusCode) -> Response<Body> {
    let text = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut resp = Response::new(Body::full(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("127.0.0.1:18080"), "127.0.0.1");
        assert_eq!(strip_port(""), "");
    }
}
