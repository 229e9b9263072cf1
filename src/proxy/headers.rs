//! Request and response header rewriting, as ALB does it: hop-by-hop headers removed,
//! `X-Forwarded-For` appended, `X-Forwarded-Proto` / `X-Forwarded-Port` set,
//! `X-Amzn-Trace-Id` created (or given a `Self=` field), `Host` preserved.

use std::fmt::Write;

use bytes::BytesMut;
use smallvec::SmallVec;
use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderName, HeaderValue};
use http::HeaderMap;

use crate::config::{Xff, XffMode};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_AMZN_TRACE_ID: HeaderName = HeaderName::from_static("x-amzn-trace-id");
/// Whether a field of this name is hop-by-hop (RFC 9110 §7.6.1): `Connection`,
/// `Upgrade` and the fields no proxy passes on. (Fields a `Connection` field names are
/// hop-by-hop too; only that field's value tells which.) Compared by length first:
/// most names are compared with none of these.
pub(crate) fn is_hop_by_hop(name: &[u8]) -> bool {
    let is = |known: &str| name.eq_ignore_ascii_case(known.as_bytes());
    match name.len() {
        2 => is("te"),
        7 => is("trailer") || is("upgrade"),
        10 => is("connection") || is("keep-alive"),
        16 => is("proxy-connection"),
        17 => is("transfer-encoding"),
        19 => is("proxy-authorization"),
        _ => false,
    }
}

/// Whether a `Connection` value (a comma-separated list) has `token`.
pub(crate) fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Whether the request asks for a protocol upgrade (WebSocket and the like).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| has_token(v.as_bytes(), "upgrade"))
}

/// Removes hop-by-hop headers, including those the `Connection` header names. With
/// `upgrade`, `Connection: upgrade` and `Upgrade` are kept for the next hop. A `TE`
/// that lists `trailers` goes on as `TE: trailers`, as RFC 9113 allows it in HTTP/2:
/// it tells the target the client takes trailer fields, and gRPC servers refuse a
/// call without it.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // One pass over the (few) names finds what to remove; only those are removed.
    // Hashing seven removals on every request and response cost several percent of CPU,
    // and so did making a name of every `Connection` token (an allocation each): tokens
    // are compared with the names present instead.
    let mut doomed: SmallVec<[HeaderName; 4]> = SmallVec::new();
    let mut trailers = false;
    for (name, value) in headers.iter() {
        if name == header::CONNECTION {
            let tokens = value.to_str().unwrap_or("").split(',').map(str::trim);
            for token in tokens.filter(|t| !t.is_empty()) {
                // Host stays even when named: without it an HTTP/1.1 target answers 400
                // or serves its default host, not the one the rules matched.
                if token.eq_ignore_ascii_case("connection")
                    || token.eq_ignore_ascii_case("host")
                    || (upgrade && token.eq_ignore_ascii_case("upgrade"))
                {
                    continue;
                }
                for named in headers.keys() {
                    if named.as_str().eq_ignore_ascii_case(token) && !doomed.contains(named) {
                        doomed.push(named.clone());
                    }
                }
            }
            doomed.push(header::CONNECTION);
        } else if !(upgrade && name == header::UPGRADE) && is_hop_by_hop(name.as_str().as_bytes()) {
            trailers |= name == header::TE && has_token(value.as_bytes(), "trailers");
            doomed.push(name.clone());
        }
    }
    for name in doomed {
        headers.remove(&name);
    }
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Gives every value its own allocation. For messages sent over HTTP/2: its HPACK
/// encoder keeps the values it indexes for the life of the connection, and a value
/// parsed in place shares the read buffer it came in (8 KiB or more, of a target's or
/// a client's connection), which it would keep alive with it. Without this, an HTTP/2
/// client connection kept one target read buffer per distinct value (a `Date`, a
/// request id) in its table: about 900 KB per connection after 50 requests.
pub fn own_values(headers: &mut HeaderMap) {
    for value in headers.values_mut() {
        if let Ok(mut copy) = HeaderValue::from_bytes(value.as_bytes()) {
            copy.set_sensitive(value.is_sensitive());
            *value = copy;
        }
    }
}

/// The forwarding headers' values that stay the same for every request of a connection.
#[derive(Debug, Clone)]
pub struct Forwarded {
    /// The client's address (after a PROXY protocol header, if any).
    pub addr: SocketAddr,
    /// `X-Forwarded-For` when the client sent none: its IP address.
    ip: HeaderValue,
    /// The connection's TLS session, on HTTPS listeners (for access logs).
    pub tls: Option<crate::tls::Session>,
}

impl Forwarded {
    /// The values for a client at `addr`, made once per connection; `tls` its session
    /// on an HTTPS listener.
    pub fn new(addr: SocketAddr, tls: Option<crate::tls::Session>) -> Self {
        let mut text = SmallVec::<[u8; 48]>::new();
        push_ip(&mut text, addr.ip());
        let ip = HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static(""));
        Self { addr, ip, tls }
    }

    /// `ip:port` (`[ip]:port` for IPv6), for `X-Forwarded-For` with the client's port.
    /// Made per request: few listeners ask for it.
    fn ip_and_port(&self) -> HeaderValue {
        let ip = self.ip.as_bytes();
        let v6 = ip.contains(&b':');
        let mut text = SmallVec::<[u8; 56]>::new();
        if v6 {
            text.push(b'[');
        }
        text.extend_from_slice(ip);
        if v6 {
            text.push(b']');
        }
        text.push(b':');
        push_decimal(&mut text, u64::from(self.addr.port()));
        HeaderValue::from_bytes(&text).unwrap_or_else(|_| self.ip.clone())
    }
}

/// Removes the fields whose names are not `[-A-Za-z0-9]+` (ALB's
/// `drop_invalid_header_fields`): names like `X_Forwarded_For`, which servers that map
/// `-` and `_` alike (CGI, WSGI, Rack) would take for the field the proxy sets.
pub fn drop_invalid_fields(headers: &mut HeaderMap) {
    let invalid = |name: &HeaderName| {
        !name
            .as_str()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if !headers.keys().any(invalid) {
        return;
    }
    let doomed: SmallVec<[HeaderName; 4]> =
        headers.keys().filter(|n| invalid(n)).cloned().collect();
    for name in doomed {
        headers.remove(&name);
    }
}

/// The name of `host` without its port (`[::1]` keeps its brackets), if `host` is
/// `host[:port]` as RFC 9110 §7.2 has it: a registered name or IPv4 address (RFC 3986's
/// unreserved characters, sub-delims and `%`-escapes) or a bracketed IPv6 literal, then
/// an optional `:` and port digits. No userinfo, no spaces, no second port: what
/// targets could read as another host.
pub(crate) fn host_name(host: &str) -> Option<&str> {
    let bytes = host.as_bytes();
    let name_end = if bytes.first() == Some(&b'[') {
        match bytes.iter().position(|&b| b == b']') {
            Some(end)
                if end > 1
                    && bytes[1..end]
                        .iter()
                        .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.') =>
            {
                end + 1
            }
            _ => return None,
        }
    } else {
        let end = bytes.iter().position(|&b| b == b':').unwrap_or(bytes.len());
        if end == 0 || !bytes[..end].iter().all(|&b| REG_NAME[usize::from(b)]) {
            return None;
        }
        end
    };
    let valid = match &bytes[name_end..] {
        [] => true,
        [b':', port @ ..] => port.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    valid.then(|| &host[..name_end])
}

/// The bytes of a registered name: unreserved, sub-delims and `%`.
static REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            );
        b += 1;
    }
    table
};

/// Whether an HTTP/2 request's Host field names the same host as its `:authority`:
/// equal but for case, or for the scheme's default port on one of them (RFC 9113
/// §8.3.1 asks for this much normalization).
pub(crate) fn same_host<'a>(authority: &'a str, field: &'a str, scheme: &str) -> bool {
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    let normal = |h: &'a str| h.strip_suffix(default_port).unwrap_or(h);
    normal(authority).eq_ignore_ascii_case(normal(field))
}

fn push_ip(out: &mut SmallVec<[u8; 48]>, ip: IpAddr) {
    match ip {
        IpAddr::V4(ip) => {
            for (i, octet) in ip.octets().iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_decimal(out, u64::from(*octet));
            }
        }
        IpAddr::V6(ip) => {
            let _ = write!(Ascii(out), "{ip}"); // writing to a SmallVec cannot fail
        }
    }
}

/// `fmt::Write` into a byte buffer.
struct Ascii<'a>(&'a mut SmallVec<[u8; 48]>);

impl Write for Ascii<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Adds the `X-Forwarded-*` headers: `proto` and `port` are the listener's, made once;
/// `X-Forwarded-For` as the listener's `xff` says.
pub fn add_forwarded(
    headers: &mut HeaderMap,
    client: &Forwarded,
    proto: &HeaderValue,
    port: &HeaderValue,
    xff: Xff,
) {
    match xff.mode {
        XffMode::Append => {
            let own = if xff.client_port {
                client.ip_and_port()
            } else {
                client.ip.clone()
            };
            let forwarded_for = if headers.contains_key(&X_FORWARDED_FOR) {
                let mut value = BytesMut::with_capacity(64);
                for existing in headers.get_all(&X_FORWARDED_FOR) {
                    value.extend_from_slice(existing.as_bytes());
                    value.extend_from_slice(b", ");
                }
                value.extend_from_slice(own.as_bytes());
                HeaderValue::from_maybe_shared(value.freeze()).ok()
            } else {
                Some(own)
            };
            if let Some(v) = forwarded_for {
                headers.insert(&X_FORWARDED_FOR, v);
            }
        }
        XffMode::Preserve => {}
        XffMode::Remove => {
            headers.remove(&X_FORWARDED_FOR);
        }
    }
    headers.insert(&X_FORWARDED_PROTO, proto.clone());
    headers.insert(&X_FORWARDED_PORT, port.clone());
}

/// `n` in decimal digits, appended to `buf`.
pub(crate) fn push_decimal(buf: &mut impl Extend<u8>, mut n: u64) {
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
    buf.extend(digits[i..].iter().copied());
}

/// The low `width` (at most 16) hex digits of `n`, appended to `buf`.
fn push_hex<const N: usize>(buf: &mut SmallVec<[u8; N]>, n: u64, width: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    for (i, d) in digits[..width].iter_mut().enumerate() {
        *d = HEX[((n >> ((width - 1 - i) * 4)) & 0xf) as usize];
    }
    buf.extend_from_slice(&digits[..width]);
}

/// Sets `X-Amzn-Trace-Id`: a new `Root=` when absent, else a `Self=` field is added in
/// front of the client's. The value is made on the stack and copied once.
pub fn trace(headers: &mut HeaderMap) {
    let existing = headers.get(&X_AMZN_TRACE_ID).map(HeaderValue::as_bytes);
    let mut value = SmallVec::<[u8; 128]>::new();
    match existing {
        Some(e) if e.windows(5).any(|w| w == b"Root=") => value.extend_from_slice(b"Self="),
        _ => value.extend_from_slice(b"Root="),
    }
    push_trace_id(&mut value);
    if let Some(e) = existing.filter(|e| !e.is_empty()) {
        value.push(b';');
        value.extend_from_slice(e);
    }
    let mut value = HeaderValue::from_bytes(&value).unwrap_or(HeaderValue::from_static(""));
    // New on every request: HPACK encodes it "never indexed" to HTTP/2 targets, rather
    // than adding each to the connection's table and evicting fields that repeat.
    value.set_sensitive(true);
    headers.insert(&X_AMZN_TRACE_ID, value);
}

/// The `X-Amzn-Trace-Id` a request carries (after [`trace`]).
pub fn trace_id(headers: &HeaderMap) -> Option<&HeaderValue> {
    headers.get(&X_AMZN_TRACE_ID)
}

/// `1-{epoch seconds, 8 hex}-{96 random bits, 24 hex}`, the X-Ray trace id format.
fn push_trace_id(buf: &mut SmallVec<[u8; 128]>) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    buf.extend_from_slice(b"1-");
    push_hex(buf, secs & 0xffff_ffff, 8);
    buf.push(b'-');
    push_hex(buf, u64::from(fastrand::u32(..)), 8);
    push_hex(buf, fastrand::u64(..), 16);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_names_or_ip_literals_with_an_optional_port() {
        for host in [
            "a.test",
            "A-1.example.com:8080",
            "xn--bcher-kva.test",
            "a_b.test",
            "10.0.0.1",
            "10.0.0.1:",
            "[::1]",
            "[2001:db8::1]:443",
            "a%2Eb.test",
        ] {
            assert!(host_name(host).is_some(), "{host}");
        }
        for host in [
            "",
            ":80",
            "user@a.test",
            "a.test b.test",
            "a.test:80:81",
            "a.test:8o",
            "a.test/x",
            "a.test\\x",
            "a.test?x",
            "a.test#x",
            "[::1",
            "[]",
            "[::1]x",
            "[::1]:80:81",
            "[::g]",
            "a\tb",
        ] {
            assert_eq!(host_name(host), None, "{host}");
        }
    }

    #[test]
    fn a_host_name_is_the_host_without_its_port() {
        assert_eq!(host_name("a.test:8080"), Some("a.test"));
        assert_eq!(host_name("a.test"), Some("a.test"));
        assert_eq!(host_name("10.0.0.1:"), Some("10.0.0.1"));
        assert_eq!(host_name("[::1]:80"), Some("[::1]"));
        assert_eq!(host_name("[::1]"), Some("[::1]"));
    }

    #[test]
    fn an_http2_host_may_differ_from_the_authority_only_in_case_and_default_port() {
        assert!(same_host("a.test", "a.test", "http"));
        assert!(same_host("a.test", "A.Test", "http"));
        assert!(same_host("a.test", "a.test:80", "http"));
        assert!(same_host("a.test:443", "a.test", "https"));
        assert!(!same_host("a.test", "a.test:443", "http"));
        assert!(!same_host("a.test", "b.test", "http"));
        assert!(!same_host("a.test:8080", "a.test", "http"));
    }

    #[test]
    fn fields_with_names_beyond_letters_digits_and_hyphens_are_dropped() {
        let mut h = HeaderMap::new();
        for name in ["x-forwarded-for", "x_forwarded_for", "x.a", "x-b2", "x~c"] {
            h.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("1"),
            );
        }
        drop_invalid_fields(&mut h);
        let mut kept: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        kept.sort_unstable();
        assert_eq!(kept, ["x-b2", "x-forwarded-for"]);
    }

    #[test]
    fn a_connection_option_naming_host_leaves_it() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("a.test"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Host, x-a"));
        h.insert("x-a", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.get(header::HOST).unwrap(), "a.test");
        assert!(h.get("x-a").is_none());
        assert!(h.get(header::CONNECTION).is_none());
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("gzip"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }

    #[test]
    fn te_goes_on_as_trailers_only_when_it_lists_trailers() {
        for (te, connection, want) in [
            ("trailers", None, Some("trailers")),
            ("gzip, Trailers", Some("TE"), Some("trailers")),
            ("gzip", None, None),
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::TE, HeaderValue::from_static(te));
            if let Some(c) = connection {
                h.insert(header::CONNECTION, HeaderValue::from_static(c));
            }
            strip_hop_by_hop(&mut h, false);
            assert_eq!(
                h.get(header::TE).map(|v| v.to_str().unwrap()),
                want,
                "{te:?}"
            );
            assert!(!h.contains_key(header::CONNECTION));
        }
    }

    #[test]
    fn connection_tokens_remove_the_headers_they_name_in_any_case() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("X-Secret, ,bad token, connection"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }

    #[test]
    fn forwarded_for_is_the_client_address_when_absent() {
        let (proto, port) = (HeaderValue::from_static("https"), HeaderValue::from(443));
        for (addr, text) in [
            (SocketAddr::from(([10, 0, 0, 1], 1)), "10.0.0.1"),
            ("[2001:db8::7]:1".parse().unwrap(), "2001:db8::7"),
        ] {
            let mut h = HeaderMap::new();
            add_forwarded(&mut h, &Forwarded::new(addr, None), &proto, &port, APPEND);
            assert_eq!(h["x-forwarded-for"], text);
            assert_eq!(h["x-forwarded-proto"], "https");
            assert_eq!(h["x-forwarded-port"], "443");
        }
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
        let client = Forwarded::new(([127, 0, 0, 9], 4000).into(), None);
        let (proto, port) = (HeaderValue::from_static("http"), HeaderValue::from(8080));
        add_forwarded(&mut h, &client, &proto, &port, APPEND);
        assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-port"], "8080");
    }

    const APPEND: Xff = Xff {
        mode: XffMode::Append,
        client_port: false,
    };

    #[test]
    fn forwarded_for_is_appended_with_the_port_preserved_or_removed_as_asked() {
        let (proto, port) = (HeaderValue::from_static("http"), HeaderValue::from(80));
        let v4 = Forwarded::new(([10, 0, 0, 1], 4000).into(), None);
        let v6 = Forwarded::new("[2001:db8::7]:4001".parse().unwrap(), None);
        let xff = |mode, client_port| Xff { mode, client_port };
        for (client, sent, xff, want) in [
            (&v4, None, xff(XffMode::Append, true), Some("10.0.0.1:4000")),
            (
                &v6,
                Some("192.0.2.1"),
                xff(XffMode::Append, true),
                Some("192.0.2.1, [2001:db8::7]:4001"),
            ),
            (
                &v4,
                Some("192.0.2.1"),
                xff(XffMode::Preserve, false),
                Some("192.0.2.1"),
            ),
            (&v4, None, xff(XffMode::Preserve, true), None),
            (&v4, Some("192.0.2.1"), xff(XffMode::Remove, false), None),
        ] {
            let mut h = HeaderMap::new();
            if let Some(sent) = sent {
                h.insert("x-forwarded-for", HeaderValue::from_static(sent));
            }
            add_forwarded(&mut h, client, &proto, &port, xff);
            assert_eq!(
                h.get("x-forwarded-for").map(|v| v.to_str().unwrap()),
                want,
                "{xff:?} {sent:?}"
            );
            assert_eq!(h["x-forwarded-proto"], "http");
        }
    }

    #[test]
    fn trace_id_is_created_or_extended() {
        let mut h = HeaderMap::new();
        trace(&mut h);
        let v = trace_id(&h).unwrap().to_str().unwrap();
        assert!(
            v.starts_with("Root=1-") && v.len() == "Root=1-".len() + 8 + 1 + 24,
            "{v}"
        );
        let mut h = HeaderMap::new();
        h.insert(
            "x-amzn-trace-id",
            HeaderValue::from_static("Root=1-5759e988-bd862e3fe1be46a994272793"),
        );
        trace(&mut h);
        let v = trace_id(&h).unwrap().to_str().unwrap();
        assert!(
            v.starts_with("Self=1-") && v.ends_with(";Root=1-5759e988-bd862e3fe1be46a994272793"),
            "{v}"
        );
    }
}
