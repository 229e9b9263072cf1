//! The PROXY protocol (HAProxy's, versions 1 and 2): reading the header a front load
//! balancer puts before a connection's bytes, and writing a version 2 header before
//! ours to targets that asked for it (`proxy_protocol_v2`, as on NLB).
//!
//! The header is read with `peek` first, so exactly its bytes are consumed and the
//! connection's own bytes stay in the socket for TLS or HTTP to read.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The 12-byte signature that opens a version 2 header.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// A version 1 header is at most 107 bytes, CRLF included.
const V1_MAX: usize = 107;

/// The addresses a PROXY header carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// The original client.
    pub source: SocketAddr,
    /// The address the client connected to.
    pub destination: SocketAddr,
}

/// Reads the PROXY header at the start of `stream` (v1 or v2) within `timeout`.
/// `Ok(None)`: a valid header that carries no addresses (v2 `LOCAL`, v1 `UNKNOWN`,
/// or a non-IP family): the connection's own addresses stand. A connection without a
/// valid header is an error: whoever enables the PROXY protocol requires it.
pub async fn read_header(
    stream: &mut TcpStream,
    timeout: Duration,
) -> io::Result<Option<Addresses>> {
    tokio::time::timeout(timeout, read_header_now(stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no PROXY protocol header in time"))?
}

async fn read_header_now(stream: &mut TcpStream) -> io::Result<Option<Addresses>> {
    let mut buf = [0u8; 536]; // 16-byte v2 header + the largest address block we parse + TLVs room
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Err(invalid(
                "connection closed before the PROXY protocol header",
            ));
        }
        match parse(&buf[..n])? {
            Parsed::Complete(len, addrs) => {
                let mut consumed = vec![0u8; len];
                stream.read_exact(&mut consumed).await?;
                return Ok(addrs);
            }
            Parsed::Incomplete => {
                // Headers arrive in one segment in practice; when split, wait briefly
                // for the rest (peek returns at once while bytes are pending).
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Parsed::Long(len) => {
                // A v2 header with TLVs beyond the peek buffer: read it whole.
                let mut header = vec![0u8; len];
                stream.read_exact(&mut header).await?;
                return match parse(&header)? {
                    Parsed::Complete(_, addrs) => Ok(addrs),
                    _ => Err(invalid("inconsistent PROXY protocol v2 header length")),
                };
            }
        }
    }
}

#[derive(Debug, PartialEq)]
enum Parsed {
    /// A whole header of this many bytes.
    Complete(usize, Option<Addresses>),
    /// More bytes are needed.
    Incomplete,
    /// A v2 header of this many bytes, longer than the peek buffer.
    Long(usize),
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

fn parse(buf: &[u8]) -> io::Result<Parsed> {
    let signature = &V2_SIGNATURE[..buf.len().min(12)];
    if buf.starts_with(signature) {
        return parse_v2(buf);
    }
    let v1 = &b"PROXY "[..buf.len().min(6)];
    if buf.starts_with(v1) {
        return parse_v1(buf);
    }
    Err(invalid(
        "the connection does not start with a PROXY protocol header",
    ))
}

fn parse_v1(buf: &[u8]) -> io::Result<Parsed> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(invalid("PROXY protocol v1 header longer than 107 bytes"))
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    let line =
        std::str::from_utf8(&buf[..end]).map_err(|_| invalid("PROXY v1 header is not ASCII"))?;
    let mut fields = line.split(' ').skip(1);
    let addrs = match fields.next() {
        Some("UNKNOWN") => None,
        Some(family @ ("TCP4" | "TCP6")) => {
            let mut next = || {
                fields
                    .next()
                    .ok_or_else(|| invalid("PROXY v1 header is missing fields"))
            };
            let (src, dst, sport, dport) = (next()?, next()?, next()?, next()?);
            let ip = |s: &str| -> io::Result<IpAddr> {
                let ip: IpAddr = s
                    .parse()
                    .map_err(|_| invalid("PROXY v1 header has a bad address"))?;
                if ip.is_ipv4() != (family == "TCP4") {
                    return Err(invalid("PROXY v1 address does not match its family"));
                }
                Ok(ip)
            };
            let port = |s: &str| -> io::Result<u16> {
                s.parse()
                    .map_err(|_| invalid("PROXY v1 header has a bad port"))
            };
            Some(Addresses {
                source: SocketAddr::new(ip(src)?, port(sport)?),
                destination: SocketAddr::new(ip(dst)?, port(dport)?),
            })
        }
        _ => return Err(invalid("PROXY v1 header with an unknown protocol")),
    };
    Ok(Parsed::Complete(end + 2, addrs))
}

fn parse_v2(buf: &[u8]) -> io::Result<Parsed> {
    if buf.len() < 16 {
        return Ok(Parsed::Incomplete);
    }
    let version_command = buf[12];
    if version_command >> 4 != 2 {
        return Err(invalid("PROXY protocol header with an unknown version"));
    }
    let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if buf.len() < len {
        return Ok(if len > 536 {
            Parsed::Long(len)
        } else {
            Parsed::Incomplete
        });
    }
    let body = &buf[16..len];
    let addrs = match (version_command & 0x0f, buf[13]) {
        // LOCAL: health checks of the front balancer itself; keep the real addresses.
        (0x0, _) => None,
        (0x1, 0x11) if body.len() >= 12 => {
            let ip = |at: usize| {
                IpAddr::V4(Ipv4Addr::new(
                    body[at],
                    body[at + 1],
                    body[at + 2],
                    body[at + 3],
                ))
            };
            let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
            Some(Addresses {
                source: SocketAddr::new(ip(0), port(8)),
                destination: SocketAddr::new(ip(4), port(10)),
            })
        }
        (0x1, 0x21) if body.len() >= 36 => {
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&body[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
            Some(Addresses {
                source: SocketAddr::new(ip(0), port(32)),
                destination: SocketAddr::new(ip(16), port(34)),
            })
        }
        (0x1, 0x11 | 0x21) => return Err(invalid("PROXY v2 address block too short")),
        // UDP, UNIX sockets, unspecified: nothing we can use as a client address.
        (0x1, _) => None,
        _ => return Err(invalid("PROXY v2 header with an unknown command")),
    };
    Ok(Parsed::Complete(len, addrs))
}

/// A version 2 `PROXY` header for a TCP connection from `source` to `destination`
/// (IPv4 when both are IPv4, else both as IPv6), without TLVs.
pub fn v2_header(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(52);
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x21); // version 2, PROXY
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(0x11); // TCP over IPv4
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.push(0x21); // TCP over IPv6
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v2_headers_round_trip() {
        for (src, dst) in [
            ("10.1.2.3:40000", "192.168.0.1:443"),
            ("[2001:db8::1]:5000", "[2001:db8::2]:80"),
        ] {
            let header = v2_header(addr(src), addr(dst));
            let mut with_data = header.clone();
            with_data.extend_from_slice(b"GET / HTTP/1.1\r\n");
            let want = Addresses {
                source: addr(src),
                destination: addr(dst),
            };
            assert_eq!(
                parse(&with_data).unwrap(),
                Parsed::Complete(header.len(), Some(want))
            );
            assert_eq!(
                parse(&header[..header.len() - 1]).unwrap(),
                Parsed::Incomplete
            );
        }
    }

    #[test]
    fn mixed_families_are_sent_as_ipv6() {
        let header = v2_header(addr("10.0.0.1:1"), addr("[::1]:2"));
        let Parsed::Complete(_, Some(a)) = parse(&header).unwrap() else {
            panic!("no addresses");
        };
        assert_eq!(a.source, addr("[::ffff:10.0.0.1]:1"));
    }

    #[test]
    fn v2_local_and_tlvs() {
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(parse(&local).unwrap(), Parsed::Complete(16, None));
        // An IPv4 block followed by a TLV (type 0x04 NOOP, 3 bytes).
        let mut tlv = v2_header(addr("1.2.3.4:5"), addr("6.7.8.9:10"));
        tlv[15] += 6;
        tlv.extend_from_slice(&[0x04, 0, 3, 0, 0, 0]);
        let Parsed::Complete(len, Some(a)) = parse(&tlv).unwrap() else {
            panic!("not parsed");
        };
        assert_eq!((len, a.source), (tlv.len(), addr("1.2.3.4:5")));
        // A header longer than the peek buffer is reported for a whole read.
        let mut long = V2_SIGNATURE.to_vec();
        long.extend_from_slice(&[0x21, 0x11, 0x03, 0x00]);
        assert_eq!(parse(&long).unwrap(), Parsed::Long(16 + 0x300));
    }

    #[test]
    fn v1_headers() {
        let h = b"PROXY TCP4 192.168.1.9 10.0.0.1 56324 443\r\nGET /";
        let want = Addresses {
            source: addr("192.168.1.9:56324"),
            destination: addr("10.0.0.1:443"),
        };
        assert_eq!(parse(h).unwrap(), Parsed::Complete(43, Some(want)));
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n").unwrap(),
            Parsed::Complete(15, None)
        );
        assert_eq!(
            parse(b"PROXY TCP6 ::1 ::1 1 2").unwrap(),
            Parsed::Incomplete
        );
        assert_eq!(parse(b"PRO").unwrap(), Parsed::Incomplete);
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PROXY TCP4 ::1 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 10.0.0.1 99999 2\r\n",
            b"PROXY SCTP 1.2.3.4 1.2.3.4 1 2\r\n",
            &[b'P'; 200][..],
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut unknown_version = V2_SIGNATURE.to_vec();
        unknown_version.extend_from_slice(&[0x31, 0x11, 0, 0]);
        assert!(parse(&unknown_version).is_err());
    }
}
