//! HTTP desync mitigation over raw HTTP/1.1 bytes: each listener mode (monitor,
//! defensive, strictest) against requests of each tier, taken from the cases of
//! `http_desync_guardian`'s own tests that hyper can parse at all.
use crate::support;

use futures_util::future::join_all;
use support::*;

/// What a listener does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Forwarded; the client connection stays open.
    Forwarded,
    /// Forwarded, answered with `Connection: close`, and the connection is closed.
    ForwardedThenClosed,
    /// 400, connection closed, the target never sees it.
    Blocked,
}

use Outcome::*;

struct Case {
    name: &'static str,
    request: &'static [u8],
    /// The body `/echo-body` sends back when the request is forwarded.
    echoed: &'static [u8],
    monitor: Outcome,
    defensive: Outcome,
    strictest: Outcome,
}

const CASES: &[Case] = &[
    Case {
        name: "compliant POST with Content-Length",
        request: b"POST /echo-body HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        echoed: b"hello",
        monitor: Forwarded,
        defensive: Forwarded,
        strictest: Forwarded,
    },
    Case {
        name: "compliant chunked POST",
        request: b"POST /echo-body HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        echoed: b"hello",
        monitor: Forwarded,
        defensive: Forwarded,
        strictest: Forwarded,
    },
    Case {
        name: "acceptable: GET with Content-Length: 0",
        request: b"GET /echo-body HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        echoed: b"",
        monitor: Forwarded,
        defensive: Forwarded,
        strictest: Blocked,
    },
    Case {
        name: "ambiguous: Transfer_Encoding with an underscore",
        request: b"POST /echo-body HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\n\r\n",
        echoed: b"",
        monitor: Forwarded,
        defensive: ForwardedThenClosed,
        strictest: Blocked,
    },
    Case {
        name: "ambiguous: Content_Length with an underscore",
        request: b"POST /echo-body HTTP/1.1\r\nHost: a\r\nContent_Length: 1000\r\n\r\n",
        echoed: b"",
        monitor: Forwarded,
        defensive: ForwardedThenClosed,
        strictest: Blocked,
    },
    Case {
        name: "ambiguous: GET with a body",
        request: b"GET /echo-body HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        echoed: b"hello",
        monitor: Forwarded,
        defensive: ForwardedThenClosed,
        strictest: Blocked,
    },
    // hyper drops the Content-Length and closes the connection itself (RFC 9112
    // 6.1), so this one is closed in every mode. Strictest is in its own test below.
    Case {
        name: "ambiguous: Transfer-Encoding and Content-Length",
        request: b"POST /echo-body HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        echoed: b"hello",
        monitor: ForwardedThenClosed,
        defensive: ForwardedThenClosed,
        strictest: ForwardedThenClosed,
    },
    Case {
        name: "severe: Transfer-Encoding: chunked twice",
        request: b"POST /echo-body HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        echoed: b"hello",
        monitor: Forwarded,
        defensive: Blocked,
        strictest: Blocked,
    },
    Case {
        name: "severe: Transfer-Encoding: chunked,chunked",
        request: b"POST /echo-body HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked,chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        echoed: b"hello",
        monitor: Forwarded,
        defensive: Blocked,
        strictest: Blocked,
    },
    // hyper refuses these before our classifier sees them: 400 in every mode.
    Case {
        name: "severe: Content-Length: 5,5",
        request: b"POST /echo-body HTTP/1.1\r\nHost: a\r\nContent-Length: 5,5\r\n\r\nhello",
        echoed: b"",
        monitor: Blocked,
        defensive: Blocked,
        strictest: Blocked,
    },
    Case {
        name: "severe: two different Content-Lengths",
        request: b"POST /echo-body HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        echoed: b"",
        monitor: Blocked,
        defensive: Blocked,
        strictest: Blocked,
    },
    Case {
        name: "severe: Transfer-Encoding: xchunked",
        request: b"POST /echo-body HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        echoed: b"",
        monitor: Blocked,
        defensive: Blocked,
        strictest: Blocked,
    },
];

/// Selects a case's expected outcome for one mode.
type Expected = fn(&Case) -> Outcome;

/// Runs every case against a listener in `mode`; returns one line per mismatch.
async fn run_mode(mode: &'static str, pick: Expected) -> Vec<String> {
    let b = backend("one").await;
    let listener_extra = format!("desync_mitigation_mode = \"{mode}\"");
    let proxy = start_proxy(&one_group_config(&[b.addr], &listener_extra, "")).await;
    let mut failures = Vec::new();
    for case in CASES {
        b.reset_hits();
        let want = pick(case);
        let reply = raw_exchange(proxy.addrs[0], case.request).await;
        let close_header = reply
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let got = match (reply.status, reply.closed, b.hits()) {
            (200, false, 1) if !close_header && reply.body == case.echoed => Some(Forwarded),
            (200, true, 1) if close_header && reply.body == case.echoed => {
                Some(ForwardedThenClosed)
            }
            (400, true, 0) => Some(Blocked),
            _ => None,
        };
        if got != Some(want) {
            failures.push(format!(
                "{mode} / {}: want {want:?}, got status {} closed {} connection-close {} hits {} body {:?}",
                case.name,
                reply.status,
                reply.closed,
                close_header,
                b.hits(),
                String::from_utf8_lossy(&reply.body),
            ));
        }
        // Whatever the request did, the listener still serves.
        let after = raw_exchange(proxy.addrs[0], b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
        if after.status != 200 {
            failures.push(format!(
                "{mode} / {}: next request got {}",
                case.name, after.status
            ));
        }
    }
    proxy.stop().await;
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_mode_treats_each_tier_as_alb_documents() {
    let modes: [(&'static str, Expected); 3] = [
        ("monitor", |c| c.monitor),
        ("defensive", |c| c.defensive),
        ("strictest", |c| c.strictest),
    ];
    let failures: Vec<String> =
        join_all(modes.into_iter().map(|(mode, pick)| run_mode(mode, pick)))
            .await
            .into_iter()
            .flatten()
            .collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[tokio::test]
async fn defensive_is_the_default_mode() {
    let b = backend("one").await;
    let proxy = start_proxy(&one_group_config(&[b.addr], "", "")).await;
    let severe = raw_exchange(
        proxy.addrs[0],
        b"POST /echo-body HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!((severe.status, severe.closed, b.hits()), (400, true, 0));
    assert_eq!(severe.header("connection"), Some("close"));
    let ambiguous = raw_exchange(
        proxy.addrs[0],
        b"POST /echo-body HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\n\r\n",
    )
    .await;
    assert_eq!(
        (ambiguous.status, ambiguous.closed, b.hits()),
        (200, true, 1)
    );
    assert_eq!(ambiguous.header("connection"), Some("close"));
    proxy.stop().await;
}

#[tokio::test]
async fn ambiguous_request_does_not_reuse_the_target_connection() {
    let b = backend("one").await;
    let proxy = start_proxy(&one_group_config(&[b.addr], "", "")).await;
    raw_exchange(
        proxy.addrs[0],
        b"POST /echo-body HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\n\r\n",
    )
    .await;
    let seen = b.last_headers();
    let connection = seen
        .get("connection")
        .map(|v| v.to_str().unwrap().to_ascii_lowercase());
    assert_eq!(connection.as_deref(), Some("close"), "target saw {seen:?}");
    proxy.stop().await;
}

/// ALB's strictest mode answers 400 to every request that is not compliant, and
/// `Transfer-Encoding` with `Content-Length` is ambiguous (RFC 9112 6.1).
#[tokio::test]
async fn chunked_request_with_content_length_is_reframed_and_its_connection_closed() {
    // hyper's parser drops the Content-Length of a request that also carries
    // `Transfer-Encoding: chunked` before our classifier sees it, so even strictest mode
    // cannot tell it apart from a plain chunked request. What it guarantees instead: the
    // target gets one unambiguous framing (chunked, no Content-Length) and the client
    // connection is closed after the response, as ALB does for Ambiguous requests.
    let b = backend("one").await;
    let proxy = start_proxy(&one_group_config(
        &[b.addr],
        "desync_mitigation_mode = \"strictest\"",
        "",
    ))
    .await;
    let reply = raw_exchange(
        proxy.addrs[0],
        b"POST /echo-body HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!((reply.status, reply.closed, b.hits()), (200, true, 1));
    assert_eq!(reply.body, b"hello");
    assert!(
        !b.last_headers().contains_key("content-length"),
        "the target saw one framing only"
    );
    proxy.stop().await;
}
