//! What an HTTPS listener with client certificates (mTLS) tells targets about the
//! client, in ALB's request headers:
//!
//! - `verify` mode, for the verified leaf certificate: `X-Amzn-Mtls-Clientcert-Serial-Number`
//!   (hex), `-Issuer` and `-Subject` (RFC 2253 distinguished names), `-Validity`
//!   (`NotBefore=…;NotAfter=…`, ISO 8601) and `-Leaf` (URL-encoded PEM);
//! - `passthrough` mode: `X-Amzn-Mtls-Clientcert`, the whole chain the client sent,
//!   URL-encoded PEM, unverified.
//!
//! The values are made once per connection, at the handshake. Headers of these names
//! that a client sends itself are removed from every request, so a target can trust
//! them. The few certificate fields needed are read with a small DER reader here.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use rustls::pki_types::CertificateDer;

const SERIAL: HeaderName = HeaderName::from_static("x-amzn-mtls-clientcert-serial-number");
const ISSUER: HeaderName = HeaderName::from_static("x-amzn-mtls-clientcert-issuer");
const SUBJECT: HeaderName = HeaderName::from_static("x-amzn-mtls-clientcert-subject");
const VALIDITY: HeaderName = HeaderName::from_static("x-amzn-mtls-clientcert-validity");
const LEAF: HeaderName = HeaderName::from_static("x-amzn-mtls-clientcert-leaf");
const CHAIN: HeaderName = HeaderName::from_static("x-amzn-mtls-clientcert");

/// Every header name this module sets.
const ALL: [HeaderName; 6] = [SERIAL, ISSUER, SUBJECT, VALIDITY, LEAF, CHAIN];

/// The client-certificate headers of one connection.
#[derive(Debug, Default)]
pub(crate) struct ClientCertHeaders(Vec<(HeaderName, HeaderValue)>);

impl ClientCertHeaders {
    /// `verify` mode: the fields of the (verified) leaf certificate. A leaf this reader
    /// cannot parse gets only the `-Leaf` header.
    pub(crate) fn verified(chain: &[CertificateDer<'_>]) -> Self {
        let Some(leaf) = chain.first() else {
            return Self::default();
        };
        let mut headers = Vec::with_capacity(5);
        if let Some(fields) = Fields::parse(leaf) {
            headers.push((SERIAL, fields.serial));
            headers.push((ISSUER, fields.issuer));
            headers.push((SUBJECT, fields.subject));
            headers.push((VALIDITY, fields.validity));
        }
        headers.extend(url_encoded_pem(std::slice::from_ref(leaf)).map(|v| (LEAF, v)));
        Self(headers)
    }

    /// `passthrough` mode: the chain as the client sent it (none: no header).
    pub(crate) fn passed_through(chain: &[CertificateDer<'_>]) -> Self {
        Self(
            url_encoded_pem(chain)
                .map(|v| (CHAIN, v))
                .into_iter()
                .collect(),
        )
    }

    /// Replaces whatever the client sent under these names with this connection's values.
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        for name in &ALL {
            headers.remove(name);
        }
        for (name, value) in &self.0 {
            headers.insert(name, value.clone());
        }
    }
}

/// The leaf fields `verify` mode reports, formatted as header values.
struct Fields {
    serial: HeaderValue,
    issuer: HeaderValue,
    subject: HeaderValue,
    validity: HeaderValue,
}

impl Fields {
    fn parse(cert: &[u8]) -> Option<Self> {
        let (cert, _) = expect(cert, SEQUENCE)?;
        let (tbs, _) = expect(cert, SEQUENCE)?;
        let (tag, _, mut rest) = tlv(tbs)?;
        if tag != VERSION {
            rest = tbs; // v1: no version field
        }
        let (serial, rest) = expect(rest, INTEGER)?;
        let (_signature, rest) = expect(rest, SEQUENCE)?;
        let (issuer, rest) = expect(rest, SEQUENCE)?;
        let (validity, rest) = expect(rest, SEQUENCE)?;
        let (subject, _) = expect(rest, SEQUENCE)?;
        let (not_before, validity) = time(validity)?;
        let (not_after, _) = time(validity)?;
        let value = |s: String| HeaderValue::try_from(s).ok();
        Some(Self {
            serial: value(serial_hex(serial))?,
            issuer: value(rfc2253(issuer)?)?,
            subject: value(rfc2253(subject)?)?,
            validity: value(format!("NotBefore={not_before};NotAfter={not_after}"))?,
        })
    }
}

const INTEGER: u8 = 0x02;
const OID: u8 = 0x06;
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const VERSION: u8 = 0xa0;

/// One DER element: its tag, its contents and what follows it.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The contents of an element that must have tag `want`, and what follows it.
fn expect(input: &[u8], want: u8) -> Option<(&[u8], &[u8])> {
    let (tag, contents, rest) = tlv(input)?;
    (tag == want).then_some((contents, rest))
}

/// The serial number in upper-case hex, as OpenSSL prints it (no sign byte).
fn serial_hex(serial: &[u8]) -> String {
    let start = serial
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(serial.len().saturating_sub(1));
    serial[start..].iter().map(|b| format!("{b:02X}")).collect()
}

/// A UTCTime or GeneralizedTime (`Z` form, as certificates use) in ISO 8601.
fn time(input: &[u8]) -> Option<(String, &[u8])> {
    let (tag, contents, rest) = tlv(input)?;
    let text = std::str::from_utf8(contents).ok()?;
    let digits = text.strip_suffix('Z')?;
    let full = match (tag, digits.len()) {
        (UTC_TIME, 12) => {
            // RFC 5280: two-digit years 50-99 are 19xx, 00-49 are 20xx.
            let century = if digits[..2].parse::<u8>().ok()? >= 50 {
                "19"
            } else {
                "20"
            };
            format!("{century}{digits}")
        }
        (GENERALIZED_TIME, 14) => digits.to_owned(),
        _ => return None,
    };
    if !full.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let f = |a: usize, b: usize| &full[a..b];
    let iso = format!(
        "{}-{}-{}T{}:{}:{}Z",
        f(0, 4),
        f(4, 6),
        f(6, 8),
        f(8, 10),
        f(10, 12),
        f(12, 14)
    );
    Some((iso, rest))
}

/// A distinguished name (the contents of a `Name`) as RFC 2253 writes it: the last
/// RDN first, attributes by their short names, values escaped.
fn rfc2253(name: &[u8]) -> Option<String> {
    let mut rdns = Vec::new();
    let mut rest = name;
    while !rest.is_empty() {
        let (set, next) = expect(rest, SET)?;
        rest = next;
        let mut parts = Vec::new();
        let mut attrs = set;
        while !attrs.is_empty() {
            let (attr, next) = expect(attrs, SEQUENCE)?;
            attrs = next;
            let (oid, value) = expect(attr, OID)?;
            let (tag, contents, _) = tlv(value)?;
            parts.push(match short_name(oid) {
                Some(short) => format!("{short}={}", attribute_value(tag, contents, value)),
                // Unknown types: the dotted OID and the value's DER in hex (RFC 2253 2.4).
                None => format!("{}=#{}", dotted(oid)?, hex(value)),
            });
        }
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    Some(rdns.join(","))
}

/// Short names for attribute types, as RFC 2253 and OpenSSL write them.
fn short_name(oid: &[u8]) -> Option<&'static str> {
    Some(match oid {
        [0x55, 0x04, n] => match n {
            3 => "CN",
            4 => "SN",
            5 => "serialNumber",
            6 => "C",
            7 => "L",
            8 => "ST",
            9 => "street",
            10 => "O",
            11 => "OU",
            12 => "title",
            42 => "GN",
            _ => return None,
        },
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01] => "emailAddress",
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19] => "DC",
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01] => "UID",
        _ => return None,
    })
}

/// An attribute value as text, escaped as RFC 2253 asks: `,+"\<>;` anywhere, `#` or a
/// space first, a space last; control and non-ASCII bytes as `\XX` (as OpenSSL does).
/// Strings that are not text are written as `#` and their DER in hex.
fn attribute_value(tag: u8, contents: &[u8], der: &[u8]) -> String {
    const UTF8: u8 = 0x0c;
    const PRINTABLE: u8 = 0x13;
    const TELETEX: u8 = 0x14;
    const IA5: u8 = 0x16;
    const BMP: u8 = 0x1e;
    let text: Vec<u8> = match tag {
        UTF8 | PRINTABLE | TELETEX | IA5 => contents.to_vec(),
        BMP if contents.len().is_multiple_of(2) => {
            let units = contents
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]));
            String::from_utf16_lossy(&units.collect::<Vec<_>>()).into_bytes()
        }
        _ => return format!("#{}", hex(der)),
    };
    let mut out = String::with_capacity(text.len());
    let last = text.len().saturating_sub(1);
    for (i, &b) in text.iter().enumerate() {
        match b {
            b',' | b'+' | b'"' | b'\\' | b'<' | b'>' | b';' => {
                out.push('\\');
                out.push(char::from(b));
            }
            b'#' if i == 0 => out.push_str("\\#"),
            b' ' if i == 0 || i == last => out.push_str("\\ "),
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\{b:02X}")),
        }
    }
    out
}

/// An object identifier in dotted form.
fn dotted(oid: &[u8]) -> Option<String> {
    let mut arcs: Vec<u64> = Vec::new();
    let mut value: u64 = 0;
    for &b in oid {
        value = value.checked_mul(128)? | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        }
    }
    let parts: Vec<String> = arcs.iter().map(u64::to_string).collect();
    (!parts.is_empty()).then(|| parts.join("."))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Certificates as PEM, URL-encoded with `+`, `=` and `/` left as they are (ALB's form).
fn url_encoded_pem(chain: &[CertificateDer<'_>]) -> Option<HeaderValue> {
    if chain.is_empty() {
        return None;
    }
    let mut pem = String::new();
    for cert in chain {
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        let b64 = base64(cert);
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    let mut encoded = String::with_capacity(pem.len() + 64);
    for b in pem.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                encoded.push(char::from(b));
            }
            b'+' | b'=' | b'/' => encoded.push(char::from(b)),
            _ => encoded.push_str(&format!("%{b:02X}")),
        }
    }
    HeaderValue::try_from(encoded).ok()
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_pads_as_the_standard_says() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn serials_lose_their_sign_byte_only() {
        assert_eq!(serial_hex(&[0x00, 0x9f, 0x01]), "9F01");
        assert_eq!(serial_hex(&[0x03, 0xa5]), "03A5");
        assert_eq!(serial_hex(&[0x00]), "00");
    }

    #[test]
    fn times_become_iso_8601() {
        let utc = [&[UTC_TIME, 13][..], b"240920015017Z"].concat();
        assert_eq!(time(&utc).unwrap().0, "2024-09-20T01:50:17Z");
        let old = [&[UTC_TIME, 13][..], b"991231235959Z"].concat();
        assert_eq!(time(&old).unwrap().0, "1999-12-31T23:59:59Z");
        let generalized = [&[GENERALIZED_TIME, 15][..], b"20991231235959Z"].concat();
        assert_eq!(time(&generalized).unwrap().0, "2099-12-31T23:59:59Z");
        let local = [&[UTC_TIME, 12][..], b"240920015017"].concat();
        assert!(time(&local).is_none());
    }

    #[test]
    fn values_are_escaped_as_rfc_2253_asks() {
        let v = |s: &str| attribute_value(0x0c, s.as_bytes(), &[]);
        assert_eq!(v("Acme, Inc."), "Acme\\, Inc.");
        assert_eq!(v("a+b=\"c\"<d>;e\\"), "a\\+b=\\\"c\\\"\\<d\\>\\;e\\\\");
        assert_eq!(v("#1 "), "\\#1\\ ");
        assert_eq!(v(" x"), "\\ x");
        assert_eq!(v("é"), "\\C3\\A9");
        assert_eq!(attribute_value(0x04, b"\x01", &[0x04, 1, 1]), "#040101");
    }

    #[test]
    fn oids_read_in_dotted_form() {
        assert_eq!(dotted(&[0x55, 0x04, 0x03]).unwrap(), "2.5.4.3");
        let email = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01];
        assert_eq!(dotted(&email).unwrap(), "1.2.840.113549.1.9.1");
    }

    #[test]
    fn names_list_the_last_rdn_first_and_join_multivalued_ones() {
        // SEQUENCE { SET { C=US }, SET { O=Acme + OU=Ops }, SET { 1.2.3.4=x } }
        let attr = |oid: &[u8], value: &[u8]| {
            let inner = [&[OID, oid.len() as u8][..], oid, value].concat();
            [&[SEQUENCE, inner.len() as u8][..], &inner].concat()
        };
        let set = |attrs: Vec<Vec<u8>>| {
            let inner = attrs.concat();
            [&[SET, inner.len() as u8][..], &inner].concat()
        };
        let name = [
            set(vec![attr(&[0x55, 0x04, 0x06], b"\x13\x02US")]),
            set(vec![
                attr(&[0x55, 0x04, 0x0a], b"\x0c\x04Acme"),
                attr(&[0x55, 0x04, 0x0b], b"\x0c\x03Ops"),
            ]),
            set(vec![attr(&[0x2a, 0x03, 0x04], b"\x0c\x01x")]),
        ]
        .concat();
        assert_eq!(
            rfc2253(&name).unwrap(),
            "1.2.3.4=#0c0178,O=Acme+OU=Ops,C=US"
        );
    }

    #[test]
    fn client_headers_replace_what_the_client_sent() {
        let mut headers = HeaderMap::new();
        headers.insert(SUBJECT, HeaderValue::from_static("CN=admin"));
        headers.insert(CHAIN, HeaderValue::from_static("forged"));
        ClientCertHeaders::passed_through(&[]).apply(&mut headers);
        assert!(headers.is_empty(), "{headers:?}");
    }
}
