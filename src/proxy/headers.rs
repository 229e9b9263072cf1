//! Request and response header rewriting, as ALB does it: hop-by-hop headers removed,
//! `X-Forwarded-For` appended, `X-Forwarded-Proto` / `X-Forwarded-Port` set,
//! `X-Amzn-Trace-Id` created (or given a `Self=` field), `Host` preserved.

use std::fmt::Write;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderName, HeaderValue};
use http::HeaderMap;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_AMZN_TRACE_ID: HeaderName = HeaderName::from_static("x-amzn-trace-id");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Hop-by-hop headers (RFC 9110 7.6.1), always removed.
fn fixed_hop_by_hop() -> [&'static HeaderName; 6] {
    [
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::PROXY_AUTHORIZATION,
    ]
}

/// Whether the request asks for a protocol upgrade (WebSocket and the like).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_has(headers, "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers, including those the `Connection` header names. With
/// `upgrade`, `Connection: upgrade` and `Upgrade` are kept for the next hop.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            if !(upgrade && name == header::UPGRADE) {
                headers.remove(&name);
            }
        }
        headers.remove(header::CONNECTION);
    }
    for name in fixed_hop_by_hop() {
        headers.remove(name);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// Adds the `X-Forwarded-*` headers.
pub fn add_forwarded(headers: &mut HeaderMap, client: IpAddr, proto: &'static str, port: u16) {
    let mut xff = String::with_capacity(64);
    for existing in headers.get_all(&X_FORWARDED_FOR) {
        if let Ok(v) = existing.to_str() {
            xff.push_str(v);
            xff.push_str(", ");
        }
    }
    let _ = write!(xff, "{client}"); // writing to a String cannot fail
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(&X_FORWARDED_FOR, v);
    }
    headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    headers.insert(&X_FORWARDED_PORT, HeaderValue::from(port));
}

/// Sets `X-Amzn-Trace-Id`: a new `Root=` when absent, else a `Self=` field is added in
/// front of the client's. Returns the header value for the access log.
pub fn trace(headers: &mut HeaderMap) -> HeaderValue {
    let id = new_trace_id();
    let value = match headers.get(&X_AMZN_TRACE_ID).and_then(|v| v.to_str().ok()) {
        Some(existing) if existing.contains("Root=") => format!("Self={id};{existing}"),
        Some(existing) if !existing.is_empty() => format!("Root={id};{existing}"),
        _ => format!("Root={id}"),
    };
    let value = HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static(""));
    headers.insert(&X_AMZN_TRACE_ID, value.clone());
    value
}

/// `1-{epoch seconds, 8 hex}-{96 random bits, 24 hex}`, the X-Ray trace id format.
fn new_trace_id() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "1-{:08x}-{:08x}{:016x}",
        secs as u32,
        fastrand::u32(..),
        fastrand::u64(..)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }

    #[test]
    fn upgrade_headers_survive_for_an_upgrade() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::CONNECTION], "upgrade");
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.7"));
        add_forwarded(&mut h, [127, 0, 0, 9].into(), "http", 8080);
        assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-port"], "8080");
    }

    #[test]
    fn trace_id_is_created_or_extended() {
        let mut h = HeaderMap::new();
        let v = trace(&mut h);
        let v = v.to_str().unwrap();
        assert!(
            v.starts_with("Root=1-") && v.len() == "Root=1-".len() + 8 + 1 + 24,
            "{v}"
        );
        let mut h = HeaderMap::new();
        h.insert(
            "x-amzn-trace-id",
            HeaderValue::from_static("Root=1-5759e988-bd862e3fe1be46a994272793"),
        );
        let v = trace(&mut h);
        let v = v.to_str().unwrap();
        assert!(
            v.starts_with("Self=1-") && v.ends_with(";Root=1-5759e988-bd862e3fe1be46a994272793"),
            "{v}"
        );
    }
}
