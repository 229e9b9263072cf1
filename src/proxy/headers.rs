//! Request and response header rewriting, as ALB does it: hop-by-hop headers removed,
//! `X-Forwarded-For` appended, `X-Forwarded-Proto` / `X-Forwarded-Port` set,
//! `X-Amzn-Trace-Id` created (or given a `Self=` field), `Host` preserved.

use std::fmt::Write;

use bytes::BytesMut;
use smallvec::SmallVec;
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
    // One pass over the (few) names finds what to remove; only those are removed.
    // Hashing seven removals on every request and response cost several percent of CPU.
    let mut doomed: SmallVec<[HeaderName; 4]> = SmallVec::new();
    for (name, value) in headers.iter() {
        if name == header::CONNECTION {
            let tokens = value.to_str().unwrap_or("").split(',').map(str::trim);
            for token in tokens.filter(|t| !t.is_empty()) {
                let Ok(named) = HeaderName::from_bytes(token.as_bytes()) else {
                    continue;
                };
                if named != header::CONNECTION && !(upgrade && named == header::UPGRADE) {
                    doomed.push(named);
                }
            }
            doomed.push(header::CONNECTION);
        } else if (name == header::UPGRADE && !upgrade) || fixed_hop_by_hop().contains(&name) {
            doomed.push(name.clone());
        }
    }
    for name in doomed {
        headers.remove(&name);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Adds the `X-Forwarded-*` headers.
pub fn add_forwarded(headers: &mut HeaderMap, client: IpAddr, proto: &'static str, port: u16) {
    // Built in one buffer and validated once: this runs on every request.
    let mut xff = BytesMut::with_capacity(64);
    for existing in headers.get_all(&X_FORWARDED_FOR) {
        xff.extend_from_slice(existing.as_bytes());
        xff.extend_from_slice(b", ");
    }
    match client {
        IpAddr::V4(ip) => {
            for (i, octet) in ip.octets().iter().enumerate() {
                if i > 0 {
                    xff.extend_from_slice(b".");
                }
                push_decimal(&mut xff, u64::from(*octet));
            }
        }
        IpAddr::V6(ip) => {
            let _ = write!(xff, "{ip}"); // writing to a BytesMut cannot fail
        }
    }
    if let Ok(v) = HeaderValue::from_maybe_shared(xff.freeze()) {
        headers.insert(&X_FORWARDED_FOR, v);
    }
    headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    headers.insert(&X_FORWARDED_PORT, HeaderValue::from(port));
}

fn push_decimal(buf: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

fn push_hex(buf: &mut BytesMut, n: u64, width: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..width).rev() {
        buf.extend_from_slice(&[HEX[((n >> (shift * 4)) & 0xf) as usize]]);
    }
}

/// Sets `X-Amzn-Trace-Id`: a new `Root=` when absent, else a `Self=` field is added in
/// front of the client's. Returns the header value for the access log.
pub fn trace(headers: &mut HeaderMap) -> HeaderValue {
    let existing = headers.get(&X_AMZN_TRACE_ID).map(HeaderValue::as_bytes);
    let mut value = BytesMut::with_capacity(48 + existing.map_or(0, <[u8]>::len));
    match existing {
        Some(e) if e.windows(5).any(|w| w == b"Root=") => value.extend_from_slice(b"Self="),
        _ => value.extend_from_slice(b"Root="),
    }
    push_trace_id(&mut value);
    if let Some(e) = existing.filter(|e| !e.is_empty()) {
        value.extend_from_slice(b";");
        value.extend_from_slice(e);
    }
    let value =
        HeaderValue::from_maybe_shared(value.freeze()).unwrap_or(HeaderValue::from_static(""));
    headers.insert(&X_AMZN_TRACE_ID, value.clone());
    value
}

/// `1-{epoch seconds, 8 hex}-{96 random bits, 24 hex}`, the X-Ray trace id format.
fn push_trace_id(buf: &mut BytesMut) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    buf.extend_from_slice(b"1-");
    push_hex(buf, secs & 0xffff_ffff, 8);
    buf.extend_from_slice(b"-");
    push_hex(buf, u64::from(fastrand::u32(..)), 8);
    push_hex(buf, fastrand::u64(..), 16);
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
