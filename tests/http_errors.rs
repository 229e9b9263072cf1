//! Statuses the proxy answers itself, as ALB does: 502/503/504 when the target side
//! fails, 400/414/431 for malformed or oversized requests; none of them takes the
//! proxy down, and a bad request never reaches a target.
use crate::support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An address nothing listens on: bound, read back, released.
async fn refusing_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    listener.local_addr().expect("a bound address")
}

/// A fake target that reads (part of) each request, then answers with `reply`
/// and closes; with `reset`, it closes with an RST instead of answering.
async fn broken_target(reply: &'static [u8], reset: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let addr = listener.local_addr().expect("a bound address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            // Only a way of waiting for the request: what it says does not matter.
            let _ = stream.read(&mut buf).await;
            if reset {
                stream.set_zero_linger().expect("SO_LINGER is set");
            } else {
                let _ = stream.write_all(reply).await;
            }
            drop(stream);
        }
    });
    addr
}

async fn status_through(targets: &[SocketAddr], group_extra: &str, path: &str) -> u16 {
    let proxy = start_proxy(&one_group_config(targets, "", group_extra)).await;
    let r = get(&proxy.url(path)).await;
    proxy.stop().await;
    r.status.as_u16()
}

#[tokio::test]
async fn refused_connection_gets_502() {
    assert_eq!(status_through(&[refusing_addr().await], "", "/").await, 502);
}

#[tokio::test]
async fn garbage_from_the_target_gets_502() {
    let target = broken_target(b"garbage\r\n\r\n", false).await;
    assert_eq!(status_through(&[target], "", "/").await, 502);
}

#[tokio::test]
async fn connection_reset_by_the_target_gets_502() {
    let target = broken_target(b"", true).await;
    assert_eq!(status_through(&[target], "", "/").await, 502);
}

#[tokio::test]
async fn target_closing_without_an_answer_gets_502() {
    let target = broken_target(b"", false).await;
    assert_eq!(status_through(&[target], "", "/").await, 502);
}

#[tokio::test]
async fn empty_target_group_gets_503() {
    assert_eq!(status_through(&[], "", "/").await, 503);
}

#[tokio::test]
async fn slow_target_gets_504_after_the_response_timeout() {
    let b = backend("slow").await;
    let started = Instant::now();
    let status = status_through(&[b.addr], "response_timeout = \"200ms\"", "/slow?ms=2000").await;
    assert_eq!(status, 504);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn proxy_keeps_serving_after_target_failures() {
    let good = backend("good").await;
    let dead = refusing_addr().await;
    let toml = format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[listeners]]
name = "web"
bind = "127.0.0.1:0"
default_action = {{ forward = "good" }}

[[listeners.rules]]
priority = 1
conditions = {{ path = ["/dead"] }}
action = {{ forward = "dead" }}

[target_groups.good]
discovery = {{ static = ["{}"] }}

[target_groups.dead]
discovery = {{ static = ["{dead}"] }}
"#,
        good.addr
    );
    let proxy = start_proxy(&toml).await;
    for _ in 0..3 {
        assert_eq!(get(&proxy.url("/dead")).await.status, 502);
        let r = get(&proxy.url("/")).await;
        assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "good"));
    }
    proxy.stop().await;
}

/// `n` headers `x-h{i}: v` (plus Host).
fn many_headers(n: usize) -> Vec<u8> {
    let mut req = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..n {
        req.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    req
}

#[tokio::test]
async fn malformed_and_oversized_requests_are_refused_without_reaching_the_target() {
    let b = backend("one").await;
    let limits = "max_header_bytes = 2048\nmax_headers = 20\nmax_uri_bytes = 256";
    let proxy = start_proxy(&one_group_config(&[b.addr], limits, "")).await;
    let big_headers = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nx-big-1: {}\r\nx-big-2: {}\r\n\r\n",
        "a".repeat(1500),
        "b".repeat(1500)
    );
    let huge_headers = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nx-huge: {}\r\n\r\n",
        "c".repeat(20_000)
    );
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "u".repeat(1000));
    // (case, request, status, connection closed after the answer)
    let cases: Vec<(&str, Vec<u8>, u16, bool)> = vec![
        (
            "malformed request line",
            b"NOT A REQUEST\r\n\r\n".to_vec(),
            400,
            true,
        ),
        (
            "request line without a version",
            b"GET /\r\nHost: a\r\n\r\n".to_vec(),
            400,
            true,
        ),
        (
            "header line without a colon",
            b"GET / HTTP/1.1\r\nHost: a\r\nno colon here\r\n\r\n".to_vec(),
            400,
            true,
        ),
        (
            "3 KB of headers over a 2 KB limit",
            big_headers.into_bytes(),
            431,
            true,
        ),
        (
            "headers larger than the parser's buffer",
            huge_headers.into_bytes(),
            431,
            true,
        ),
        ("one header over max_headers", many_headers(20), 431, true),
        (
            "far more headers than max_headers",
            many_headers(200),
            431,
            true,
        ),
        (
            "1 KB URI over a 256 B limit",
            long_uri.into_bytes(),
            414,
            true,
        ),
        // Well framed, so the connection may stay open.
        (
            "HTTP/1.1 without Host",
            b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n".to_vec(),
            400,
            false,
        ),
        (
            "HTTP/1.1 with an empty Host",
            b"GET / HTTP/1.1\r\nHost:\r\n\r\n".to_vec(),
            400,
            false,
        ),
        // Hosts a target could read as another host than the rules matched (RFC 9112
        // §3.2: 400 for more than one Host, or an invalid one).
        (
            "two Host fields",
            b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n".to_vec(),
            400,
            false,
        ),
        (
            "a Host with userinfo",
            b"GET / HTTP/1.1\r\nHost: user@a.test\r\n\r\n".to_vec(),
            400,
            false,
        ),
        (
            "a Host with a space",
            b"GET / HTTP/1.1\r\nHost: a.test b.test\r\n\r\n".to_vec(),
            400,
            false,
        ),
        (
            "a Host with two ports",
            b"GET / HTTP/1.1\r\nHost: a.test:80:81\r\n\r\n".to_vec(),
            400,
            false,
        ),
        (
            "a Host with a path",
            b"GET / HTTP/1.1\r\nHost: a.test/x\r\n\r\n".to_vec(),
            400,
            false,
        ),
        (
            "an absolute-form target with userinfo",
            b"GET http://user@a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n".to_vec(),
            400,
            false,
        ),
    ];
    for (name, request, status, closed) in cases {
        let reply = raw_exchange(proxy.addrs[0], &request).await;
        assert_eq!(
            (reply.status, reply.closed),
            (status, closed),
            "{name}: (status, closed)"
        );
        assert_eq!(b.hits(), 0, "{name}: the request reached the target");
        let r = get(&proxy.url("/")).await;
        assert_eq!(r.status, 200, "{name}: the proxy still serves");
        b.reset_hits();
    }
    proxy.stop().await;
}

#[tokio::test]
async fn requests_at_the_limits_are_forwarded() {
    let b = backend("one").await;
    let limits = "max_header_bytes = 2048\nmax_headers = 20\nmax_uri_bytes = 256";
    let proxy = start_proxy(&one_group_config(&[b.addr], limits, "")).await;
    let uri = format!("/{}", "u".repeat(255));
    let at_uri_limit = format!("GET {uri} HTTP/1.1\r\nHost: a\r\n\r\n");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("256 B URI", at_uri_limit.into_bytes()),
        ("20 headers", many_headers(19)),
        ("HTTP/1.0 without Host", b"GET / HTTP/1.0\r\n\r\n".to_vec()),
    ];
    for (name, request) in cases {
        let reply = raw_exchange(proxy.addrs[0], &request).await;
        assert_eq!(reply.status, 200, "{name}");
        assert_eq!(b.hits(), 1, "{name}");
        b.reset_hits();
    }
    proxy.stop().await;
}

/// Hosts of every valid form go through as sent: names, IPv4 and IPv6 literals, ports.
/// An absolute-form target names the host instead of Host (RFC 9112 §3.2.2): the rules
/// match it and the target gets it as Host.
#[tokio::test]
async fn valid_hosts_reach_the_target_as_the_rules_matched_them() {
    let b = backend("one").await;
    let rules = r#"[[listeners.rules]]
priority = 1
conditions = { host = ["other.test"] }
action = { fixed_response = { status = 403, body = "other" } }"#;
    let proxy = start_proxy(&one_group_config(&[b.addr], rules, "")).await;
    for host in [
        "a.test",
        "A-1.test:8080",
        "127.0.0.1",
        "127.0.0.1:80",
        "[::1]",
        "[::1]:8080",
        "a_b.test",
    ] {
        let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let reply = raw_exchange(proxy.addrs[0], request.as_bytes()).await;
        assert_eq!(reply.status, 200, "{host}");
        assert_eq!(b.last_headers()["host"], host);
    }
    let reply = raw_exchange(
        proxy.addrs[0],
        b"GET http://other.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n",
    )
    .await;
    assert_eq!(reply.status, 403, "the rule for the absolute form's host");
    let reply = raw_exchange(
        proxy.addrs[0],
        b"GET http://b.test:81/x HTTP/1.1\r\nHost: a.test\r\n\r\n",
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(b.last_headers()["host"], "b.test:81");
    // A Connection option may name end-to-end fields to drop, but not the host.
    let reply = raw_exchange(
        proxy.addrs[0],
        b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: host\r\n\r\n",
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(b.last_headers()["host"], "a.test");
    proxy.stop().await;
}
