//! Upstream connections: pooled keep-alive connections to targets are reused across
//! requests, one per concurrent request, and a connection the target closed while idle
//! is replaced without failing a request; every response framing arrives whole, and
//! bad framing gets 502, whether the lean client or hyper's read the response.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use support::*;
use tokio::net::TcpListener;

/// A backend's address, and counts of the TCP connections it accepted and saw close.
struct Counted {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
}

/// A backend that counts the TCP connections it accepts and sees close, and can close
/// them after each response (`close_after_each`); `/slow` answers after 100 ms.
async fn counting_backend(close_after_each: bool) -> Counted {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (accepted, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (accepts, closes) = (Arc::clone(&accepted), Arc::clone(&closed));
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            accepts.fetch_add(1, Ordering::SeqCst);
            let closes = Arc::clone(&closes);
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<_>| async move {
                    if req.uri().path() == "/slow" {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    let mut resp = hyper::Response::new(Full::new(Bytes::from_static(b"ok")));
                    if close_after_each {
                        resp.headers_mut()
                            .insert("connection", "close".parse().unwrap());
                    }
                    Ok::<_, Infallible>(resp)
                });
                let builder = auto::Builder::new(TokioExecutor::new());
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                closes.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    Counted {
        addr,
        accepted,
        closed,
    }
}

/// Sends `n` GETs of `url` at once (each from a client of its own) and asserts that
/// each is answered `status`.
async fn all_answer(url: &str, n: usize, status: u16) {
    let requests: Vec<_> = (0..n)
        .map(|_| {
            let url = url.to_owned();
            tokio::spawn(async move { get(&url).await.status.as_u16() })
        })
        .collect();
    for r in requests {
        assert_eq!(r.await.unwrap(), status);
    }
}

fn config(target: SocketAddr) -> String {
    one_group_config(&[target], "", "")
}

#[tokio::test]
async fn sequential_requests_share_one_target_connection() {
    let Counted { addr, accepted, .. } = counting_backend(false).await;
    let proxy = start_proxy(&config(addr)).await;
    for _ in 0..50 {
        let r = get(&proxy.url("/")).await;
        assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "ok"));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_open_at_most_one_connection_each() {
    let Counted { addr, accepted, .. } = counting_backend(false).await;
    let proxy = start_proxy(&config(addr)).await;
    for _ in 0..5 {
        all_answer(&proxy.url("/"), 8, 200).await;
    }
    let opened = accepted.load(Ordering::SeqCst);
    assert!(
        (1..=8).contains(&opened),
        "{opened} connections for 8 concurrent requests"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_to_a_cold_http2_target_opens_one_connection() {
    // Requests that find no HTTP/2 connection with room wait for the one being opened
    // rather than each opening their own (after a restart under load, every client's
    // first request would otherwise cost the target a connection, and over TLS a
    // handshake; 27 to 38 connections for these 40 before). A connection carries 100
    // streams until the target's SETTINGS arrive, so a burst of 150 takes at most two.
    for (burst, most) in [(40, 1), (150, 2)] {
        let Counted { addr, accepted, .. } = counting_backend(false).await;
        let proxy = start_proxy(&one_group_config(
            &[addr],
            "",
            "protocol_version = \"http2\"",
        ))
        .await;
        all_answer(&proxy.url("/"), burst, 200).await;
        let opened = accepted.load(Ordering::SeqCst);
        assert!(
            (1..=most).contains(&opened),
            "{opened} connections for a burst of {burst}"
        );
        proxy.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_waiting_for_an_http2_connection_fail_with_it() {
    // A target that accepts TCP connections and then says nothing: each TLS handshake
    // runs into the connect timeout. The requests waiting for the one connection being
    // opened fail with it (502), rather than each trying again in turn, one connect
    // timeout after another.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    let group = "protocol = \"https\"\nprotocol_version = \"http2\"\nconnect_timeout = \"300ms\"";
    let proxy = start_proxy(&one_group_config(&[addr], "", group)).await;
    all_answer(&proxy.url("/"), 20, 502).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn connections_the_target_closes_are_replaced_without_failing_requests() {
    let Counted { addr, accepted, .. } = counting_backend(true).await;
    let proxy = start_proxy(&config(addr)).await;
    for _ in 0..20 {
        let r = get(&proxy.url("/")).await;
        assert_eq!(r.status.as_u16(), 200);
        // Give the closed connection time to be noticed, as an idle keep-alive expiry would.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 20);
    proxy.stop().await;
}

#[tokio::test]
async fn connections_idle_past_the_groups_idle_timeout_are_not_reused() {
    // As ALB closes target connections at its idle timeout: a target whose own
    // keep-alive timeout is longer then never closes a connection the proxy is about
    // to reuse.
    let Counted { addr, accepted, .. } = counting_backend(false).await;
    let proxy = start_proxy(&one_group_config(&[addr], "", "idle_timeout = \"300ms\"")).await;
    let with_body = |url: String| async move {
        let req = hyper::Request::post(url)
            .body(Full::new(Bytes::from_static(b"a body")))
            .unwrap();
        send(&client(), req).await.status.as_u16()
    };
    // Requests without a body take the lean client, those with one hyper's.
    for (path, n) in [("lean", 1), ("hyper", 3)] {
        let request = |_| async {
            if path == "lean" {
                get(&proxy.url("/")).await.status.as_u16()
            } else {
                with_body(proxy.url("/")).await
            }
        };
        assert_eq!(request(()).await, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(request(()).await, 200);
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            n,
            "{path}: reused while fresh"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(request(()).await, 200);
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            n + 1,
            "{path}: not reused once stale"
        );
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_a_burst_left_idle_close_while_later_requests_go_on() {
    // A burst opens several connections; the requests after it take only the most
    // recently released one, and the others, idle past the timeout, are let go rather
    // than held open for good.
    let Counted {
        addr,
        accepted,
        closed,
    } = counting_backend(false).await;
    let proxy = start_proxy(&one_group_config(&[addr], "", "idle_timeout = \"300ms\"")).await;
    all_answer(&proxy.url("/slow"), 6, 200).await;
    let opened = accepted.load(Ordering::SeqCst);
    assert!(opened > 1, "the burst took {opened} connection(s)");
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(get(&proxy.url("/")).await.status.as_u16(), 200);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), opened, "no new connection");
    // Closing reaches the backend a moment after the proxy lets go.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while closed.load(Ordering::SeqCst) < opened - 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        closed.load(Ordering::SeqCst),
        opened - 1,
        "all but the one in use closed"
    );
    proxy.stop().await;
}

/// A target that answers every request on a connection with `reply` (raw bytes), then
/// closes the connection when `close` is set; counts its connections.
async fn scripted_target(reply: &'static [u8], close: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    scripted_target_in_parts(vec![(Duration::ZERO, reply)], close).await
}

/// [`scripted_target`] whose reply is written in parts, each after its delay.
async fn scripted_target_in_parts(
    parts: Vec<(Duration, &'static [u8])>,
    close: bool,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let parts = Arc::new(parts);
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let parts = Arc::clone(&parts);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = stream.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        for (delay, part) in parts.iter() {
                            if !delay.is_zero() {
                                tokio::time::sleep(*delay).await;
                            }
                            if stream.write_all(part).await.is_err() {
                                return;
                            }
                        }
                        if close {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// Requests without a body to clear-text targets take the lean client; the others,
/// hyper's. Each response must be read the same whichever took it.
async fn get_and_post(url: &str) -> [(&'static str, Reply); 2] {
    let post = Request::post(url)
        .body(Full::new(Bytes::from_static(b"a body")))
        .unwrap();
    [
        ("GET (the lean client)", get(url).await),
        (
            "POST with a body (hyper's client)",
            send(&client(), post).await,
        ),
    ]
}

#[tokio::test]
async fn every_response_framing_arrives_whole() {
    let cases: [(&str, &'static [u8], bool, &str); 5] = [
        ("content-length", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false, "hello"),
        (
            "chunked with an extension and trailers",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nhel\r\n2\r\nlo\r\n0\r\nX-Sum: 1\r\n\r\n",
            false,
            "hello",
        ),
        ("to the end of the connection", b"HTTP/1.1 200 OK\r\n\r\nhello", true, "hello"),
        (
            "after 100 Continue and 103 Early Hints",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            false,
            "hello",
        ),
        ("HTTP/1.0 with a length", b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello", true, "hello"),
    ];
    for (what, reply, close, body) in cases {
        let (target, connections) = scripted_target(reply, close).await;
        let proxy = start_proxy(&config(target)).await;
        for i in 0..3 {
            let r = get(&proxy.url("/")).await;
            assert_eq!(
                (r.status.as_u16(), r.body.as_str()),
                (200, body),
                "{what}, request {i}"
            );
        }
        let opened = connections.load(Ordering::SeqCst);
        // Connections end after close-delimited and HTTP/1.0 answers; others are reused.
        let want = if close { 3 } else { 1 };
        assert_eq!(opened, want, "{what}: connections opened");
        let [_, (how, r)] = get_and_post(&proxy.url("/")).await;
        assert_eq!(
            (r.status.as_u16(), r.body.as_str()),
            (200, body),
            "{what}, {how}"
        );
    }
}

#[tokio::test]
async fn a_response_with_120_fields_passes_whichever_client_read_it() {
    // hyper's client takes 100 fields unless told otherwise; the lean one, 128.
    let fields: String = (0..120).map(|i| format!("X-F{i}: v\r\n")).collect();
    let reply = format!("HTTP/1.1 200 OK\r\n{fields}Content-Length: 5\r\n\r\nhello");
    let (target, _) =
        scripted_target(Box::leak(reply.into_bytes().into_boxed_slice()), false).await;
    let proxy = start_proxy(&config(target)).await;
    for request in [
        &b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 6\r\n\r\na body",
    ] {
        let (reply, _) = raw(proxy.addrs[0], request, Duration::from_secs(5)).await;
        let fields = reply
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("x-f"))
            .count();
        assert_eq!(
            (raw_status(&reply), fields),
            (Some(200), 120),
            "{}",
            String::from_utf8_lossy(request)
        );
    }
}

#[tokio::test]
async fn responses_with_bad_framing_get_502() {
    for (what, reply) in [
        (
            "conflicting lengths",
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"[..],
        ),
        (
            "a 101 nobody asked for",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
        ),
        ("a bad status line", b"HTTP/1.1 2000 OK\r\n\r\n"),
        // Framing the client could read otherwise than the proxy (fields pass on as
        // received), or a transfer coding that would reach it unlabelled.
        (
            "Content-Length beside Transfer-Encoding",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        ),
        (
            "a list of lengths",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\nabc",
        ),
        (
            "a transfer coding before chunked",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        ),
        ("a head cut short", b"HTTP/1.1 200 OK\r\nContent-Le"),
        (
            "chunked twice",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        ),
    ] {
        let (target, _) = scripted_target(reply, true).await;
        let proxy = start_proxy(&config(target)).await;
        for (how, r) in get_and_post(&proxy.url("/")).await {
            assert_eq!(r.status.as_u16(), 502, "{what}, {how}: {r:?}");
        }
    }
    // A body cut short after its head: the client's response ends in an error, not
    // in a shorter body that looks complete.
    let (target, _) =
        scripted_target(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", true).await;
    let proxy = start_proxy(&config(target)).await;
    let (reply, closed) = raw(
        proxy.addrs[0],
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert!(closed && body.len() < 10, "closed: {closed}, {reply:?}");
}

#[tokio::test]
async fn target_fields_reach_the_client_without_hop_by_hop_ones() {
    // Plain hop-by-hop fields: the lean server writes the target's fields as received,
    // leaving these out. `Connection` naming another field: that one goes too (the
    // HeaderMap path).
    let cases: [(&str, &'static [u8], &[&str]); 2] = [
        (
            "keep-alive fields",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nX-Kept: yes\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nok",
            &["keep-alive", "proxy-connection"],
        ),
        (
            "a field named by Connection",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-Secret\r\nX-Secret: 1\r\nX-Kept: yes\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nok",
            &["x-secret"],
        ),
    ];
    for (what, reply, dropped) in cases {
        let (target, _) = scripted_target(reply, false).await;
        let proxy = start_proxy(&config(target)).await;
        // HTTP/1.1 is answered by the lean server, HTTP/1.0 by hyper's.
        for version in ["1.1", "1.0"] {
            let request = format!("GET / HTTP/{version}\r\nHost: a\r\n\r\n");
            let r = raw_exchange(proxy.addrs[0], request.as_bytes()).await;
            let context = format!("{what}, HTTP/{version}: {r:?}");
            assert_eq!(
                (r.status, r.body.as_slice()),
                (200, &b"ok"[..]),
                "{context}"
            );
            assert_eq!(r.header("x-kept"), Some("yes"), "{context}");
            assert_eq!(r.header("content-length"), Some("2"), "{context}");
            let cookies: Vec<&str> = r
                .headers
                .iter()
                .filter(|(k, _)| k == "set-cookie")
                .map(|(_, v)| v.as_str())
                .collect();
            assert_eq!(cookies, ["a=1", "b=2"], "{context}");
            for name in dropped {
                assert_eq!(r.header(name), None, "{name} passed: {context}");
            }
            // The target's own `Connection` never reaches the client.
            assert!(
                r.header("connection")
                    .is_none_or(|v| v == "close" || v == "keep-alive"),
                "{context}"
            );
        }
        proxy.stop().await;
    }
}

/// A 204 has no body whatever its fields say. When one announcing a length sends those
/// bytes anyway, after the head, its connection is not reused: the next answer on it
/// would start with them (a pooled connection with bytes to read is let go).
#[tokio::test]
async fn a_204_announcing_a_body_does_not_leave_its_connection_for_the_next_request() {
    let (target, connections) = scripted_target_in_parts(
        vec![
            (
                Duration::ZERO,
                b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n",
            ),
            (Duration::from_millis(50), b"abc"),
        ],
        false,
    )
    .await;
    let proxy = start_proxy(&config(target)).await;
    for i in 0..3 {
        let r = get(&proxy.url("/")).await;
        assert_eq!(
            (r.status.as_u16(), r.body.as_str()),
            (204, ""),
            "request {i}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await; // the stray bytes arrive
    }
    assert_eq!(connections.load(Ordering::SeqCst), 3, "connections opened");
}

#[tokio::test]
async fn a_listeners_response_headers_are_set_on_every_response_it_sends() {
    // As ALB's response header attributes: HSTS, CORS, X-Frame-Options and the like,
    // set on the target's responses (replacing its own field of that name) and on the
    // proxy's own answers alike.
    let (target, _) = scripted_target(
        b"HTTP/1.1 200 OK\r\nX-Frame-Options: SAMEORIGIN\r\nX-Other: kept\r\nContent-Length: 5\r\n\r\nhello",
        false,
    )
    .await;
    let proxy = start_proxy(&one_group_config(
        &[target],
        r#"response_headers = { strict_transport_security = "max-age=600; includeSubDomains", x_frame_options = "DENY", access_control_allow_origin = "https://app.example" }

[[listeners.rules]]
priority = 1
conditions = { path = ["/fixed"] }
action = { fixed_response = { status = 404, body = "none" } }

[[listeners.rules]]
priority = 2
conditions = { path = ["/down"] }
action = { forward = "down" }

[target_groups.down]
discovery = { static = ["127.0.0.1:1"] }"#,
        "",
    ))
    .await;
    let set = [
        (
            "strict-transport-security",
            "max-age=600; includeSubDomains",
        ),
        ("x-frame-options", "DENY"),
        ("access-control-allow-origin", "https://app.example"),
    ];
    let h2 = |path: &str| Request::get(proxy.url(path)).body(Full::default()).unwrap();
    let mut replies = Vec::from(get_and_post(&proxy.url("/")).await);
    replies.push(("an HTTP/2 client", send(&h2_client(), h2("/")).await));
    replies.push(("a fixed response", get(&proxy.url("/fixed")).await));
    replies.push(("the proxy's 502", get(&proxy.url("/down")).await));
    for (what, r) in replies {
        for (name, value) in set {
            let values: Vec<_> = r.headers.get_all(name).iter().collect();
            assert_eq!(values, [value], "{what}: {name}, in {:?}", r.headers);
        }
        if r.status == 200 {
            assert_eq!(r.headers["x-other"], "kept", "{what}");
            assert_eq!(r.body, "hello", "{what}");
        }
    }
    proxy.stop().await;
}
