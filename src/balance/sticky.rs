//! Stickiness cookies, named as ALB names them: `AWSALB` (load-balancer cookie),
//! `AWSALBAPP-0` (application cookie), `AWSALBTG` (group stickiness of a weighted
//! forward). Values encode the target address (or the group name) in hex: they are
//! opaque to clients but, unlike ALB's, not encrypted.

use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};

/// The load-balancer cookie of `lb_cookie` stickiness.
pub const LB_COOKIE: &str = "AWSALB";
/// The cookie the proxy sets beside the application's own in `app_cookie` stickiness.
pub const APP_COOKIE: &str = "AWSALBAPP-0";
/// The group-stickiness cookie of a weighted forward action.
pub const GROUP_COOKIE: &str = "AWSALBTG";

/// The value of the first cookie called `name` in the request's `Cookie` headers.
pub fn find_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v.trim_matches('"'))
        })
}

/// Encodes a target address as a cookie value.
pub fn encode_addr(addr: SocketAddr) -> String {
    let mut out = String::with_capacity(36);
    match addr.ip() {
        IpAddr::V4(ip) => ip.octets().iter().for_each(|b| push_hex(&mut out, *b)),
        IpAddr::V6(ip) => ip.octets().iter().for_each(|b| push_hex(&mut out, *b)),
    }
    addr.port()
        .to_be_bytes()
        .iter()
        .for_each(|b| push_hex(&mut out, *b));
    out
}

fn push_hex(out: &mut String, b: u8) {
    let _ = write!(out, "{b:02x}"); // writing to a String cannot fail
}

/// Decodes a value made by [`encode_addr`]; anything else is `None`.
pub fn decode_addr(value: &str) -> Option<SocketAddr> {
    let bytes: Option<Vec<u8>> = (0..value.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(value.get(i..i + 2)?, 16).ok())
        .collect();
    let bytes = bytes?;
    let (ip, port): (IpAddr, &[u8]) = match bytes.len() {
        6 => (
            Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).into(),
            &bytes[4..],
        ),
        18 => {
            let octets: [u8; 16] = bytes[..16].try_into().ok()?;
            (Ipv6Addr::from(octets).into(), &bytes[16..])
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, u16::from_be_bytes([port[0], port[1]])))
}

/// A `Set-Cookie` value for `name=value` lasting `duration`.
pub fn set_cookie(name: &str, value: &str, duration: Duration) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{name}={value}; Max-Age={}; Path=/",
        duration.as_secs()
    ))
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_through_cookie_values() {
        for addr in ["127.0.0.1:8080", "[::1]:443", "10.1.2.3:1"] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(decode_addr(&encode_addr(addr)), Some(addr));
        }
        assert_eq!(decode_addr("zz"), None);
        assert_eq!(decode_addr(""), None);
        assert_eq!(decode_addr("7f00000"), None);
    }

    #[test]
    fn cookies_are_found_among_several_headers() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1; AWSALB=abc"));
        h.append(COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(find_cookie(&h, "AWSALB"), Some("abc"));
        assert_eq!(find_cookie(&h, "b"), Some("2"));
        assert_eq!(find_cookie(&h, "c"), None);
    }
}
