//! The L7 request path end to end: forwarding headers, HTTP/2 both ways, WebSocket
//! upgrades, streamed bodies and client keep-alive / idle timeout, over real sockets.
use crate::support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

async fn proxy_to(backend: &Backend, listener_extra: &str, group_extra: &str) -> Proxy {
    start_proxy(&one_group_config(
        &[backend.addr],
        listener_extra,
        group_extra,
    ))
    .await
}

/// Connects from `ip` (a 127.0.0.x address) so the proxy sees a distinctive client.
async fn connect_from(ip: &str, to: std::net::SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("a socket");
    let from = format!("{ip}:0").parse().expect("a loopback address");
    socket.bind(from).expect("bound to the client address");
    socket.connect(to).await.expect("connected to the proxy")
}

/// `1-` + 8 hex digits + `-` + 24 hex digits.
fn is_trace_id(id: &str) -> bool {
    let parts: Vec<&str> = id.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    parts.len() == 3 && parts[0] == "1" && hex(parts[1], 8) && hex(parts[2], 24)
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> &'h str {
    headers
        .get(name)
        .map_or("", |v| v.to_str().expect("an ASCII header value"))
}

#[tokio::test]
async fn forwarding_headers_are_added_as_alb_does() {
    let b = backend("one").await;
    let proxy = proxy_to(&b, "", "").await;
    let mut stream = connect_from("127.0.0.5", proxy.addrs[0]).await;
    let reply = raw_exchange_on(
        &mut stream,
        b"GET /echo-headers HTTP/1.1\r\nHost: app.example.com\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Port: 1\r\n\r\n",
    )
    .await;
    assert_eq!(reply.status, 200);
    let seen = b.last_headers();
    assert_eq!(header(&seen, "x-forwarded-for"), "203.0.113.7, 127.0.0.5");
    assert_eq!(header(&seen, "x-forwarded-proto"), "http");
    assert_eq!(
        header(&seen, "x-forwarded-port"),
        proxy.addrs[0].port().to_string()
    );
    assert_eq!(
        header(&seen, "host"),
        "app.example.com",
        "Host is the client's, not the target's"
    );
    let trace = header(&seen, "x-amzn-trace-id");
    let root = trace
        .strip_prefix("Root=")
        .unwrap_or_else(|| panic!("trace id {trace:?}"));
    assert!(is_trace_id(root), "trace id {trace:?}");
    // /echo-headers shows the same headers in its body.
    let body = String::from_utf8(reply.body).unwrap();
    assert!(
        body.contains("x-forwarded-for: 203.0.113.7, 127.0.0.5\n"),
        "{body}"
    );
    proxy.stop().await;
}

/// ALB's `X-Forwarded-For` processing modes, per listener: the client's address and
/// port appended, the client's header kept as sent, or the header removed. The other
/// forwarding headers are set in every mode.
#[tokio::test]
async fn x_forwarded_for_is_appended_with_the_port_preserved_or_removed_as_configured() {
    let b = backend("one").await;
    for (listener_extra, sent, want) in [
        (
            "xff_client_port = true",
            true,
            Some("203.0.113.7, 127.0.0.5:PORT"),
        ),
        ("xff_client_port = true", false, Some("127.0.0.5:PORT")),
        (
            "xff_header_processing = \"preserve\"",
            true,
            Some("203.0.113.7"),
        ),
        ("xff_header_processing = \"preserve\"", false, None),
        ("xff_header_processing = \"remove\"", true, None),
    ] {
        let proxy = proxy_to(&b, listener_extra, "").await;
        let mut stream = connect_from("127.0.0.5", proxy.addrs[0]).await;
        let port = stream.local_addr().unwrap().port();
        let xff = if sent {
            "X-Forwarded-For: 203.0.113.7\r\n"
        } else {
            ""
        };
        let request = format!("GET / HTTP/1.1\r\nHost: a.test\r\n{xff}\r\n");
        let reply = raw_exchange_on(&mut stream, request.as_bytes()).await;
        assert_eq!(reply.status, 200);
        let seen = b.last_headers();
        let want = want.map(|w| w.replace("PORT", &port.to_string()));
        let got = seen
            .get("x-forwarded-for")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(got, want, "{listener_extra}, client sent one: {sent}");
        assert_eq!(
            header(&seen, "x-forwarded-proto"),
            "http",
            "{listener_extra}"
        );
        proxy.stop().await;
    }
}

/// ALB's `drop_invalid_header_fields`: fields whose names are not `[-A-Za-z0-9]+` do
/// not reach the target (a WSGI or CGI target would read `X_Forwarded_For` as the
/// `X-Forwarded-For` the proxy sets), nor match rules; without it they go on.
#[tokio::test]
async fn fields_with_invalid_names_are_dropped_when_the_listener_says_so() {
    let b = backend("one").await;
    let rule = r#"drop_invalid_header_fields = DROP

[[listeners.rules]]
priority = 1
conditions = { http_header = [{ name = "x_role", values = ["admin"] }] }
action = { fixed_response = { status = 403, body = "matched" } }"#;
    for (drop, rule_status, reaches) in [(true, 200, false), (false, 403, true)] {
        let proxy = proxy_to(&b, &rule.replace("DROP", &drop.to_string()), "").await;
        let matched = raw_exchange(
            proxy.addrs[0],
            b"GET / HTTP/1.1\r\nHost: a.test\r\nX_Role: admin\r\n\r\n",
        )
        .await;
        assert_eq!(matched.status, rule_status, "drop: {drop}");
        let forwarded = raw_exchange(
            proxy.addrs[0],
            b"GET / HTTP/1.1\r\nHost: a.test\r\nX_Forwarded_For: 6.6.6.6\r\nX-Kept: 1\r\n\r\n",
        )
        .await;
        assert_eq!(forwarded.status, 200, "drop: {drop}");
        let seen = b.last_headers();
        assert_eq!(
            seen.contains_key("x_forwarded_for"),
            reaches,
            "drop: {drop}"
        );
        assert_eq!(header(&seen, "x-kept"), "1");
        proxy.stop().await;
    }
}

#[tokio::test]
async fn client_trace_id_gets_a_self_field() {
    let b = backend("one").await;
    let proxy = proxy_to(&b, "", "").await;
    let client_trace = "Root=1-5759e988-bd862e3fe1be46a994272793";
    let r = get_with(&proxy.url("/"), &[("x-amzn-trace-id", client_trace)]).await;
    assert_eq!(r.status, 200);
    let seen = b.last_headers();
    let trace = header(&seen, "x-amzn-trace-id");
    let (self_field, rest) = trace
        .split_once(';')
        .unwrap_or_else(|| panic!("trace id {trace:?}"));
    assert_eq!(rest, client_trace);
    let self_id = self_field
        .strip_prefix("Self=")
        .unwrap_or_else(|| panic!("trace id {trace:?}"));
    assert!(is_trace_id(self_id), "trace id {trace:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded() {
    let b = backend("one").await;
    let proxy = proxy_to(&b, "", "").await;
    let reply = raw_exchange(
        proxy.addrs[0],
        b"GET / HTTP/1.1\r\nHost: a.example\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: gzip\r\nProxy-Connection: keep-alive\r\nX-Kept: yes\r\n\r\n",
    )
    .await;
    assert_eq!(reply.status, 200);
    let seen = b.last_headers();
    for name in [
        "x-secret",
        "keep-alive",
        "te",
        "proxy-connection",
        "upgrade",
    ] {
        assert!(
            !seen.contains_key(name),
            "{name} reached the target: {seen:?}"
        );
    }
    assert!(
        seen.get_all("connection").iter().all(|v| !v
            .to_str()
            .unwrap()
            .to_ascii_lowercase()
            .contains("x-secret")),
        "{seen:?}"
    );
    assert_eq!(header(&seen, "x-kept"), "yes");
    assert_eq!(header(&seen, "host"), "a.example");
    proxy.stop().await;
}

#[tokio::test]
async fn h2c_client_reaches_http1_and_http2_targets() {
    let b = backend("one").await;
    for (group_extra, want) in [("", "HTTP/1.1"), ("protocol_version = \"http2\"", "HTTP/2")] {
        let proxy = proxy_to(&b, "", group_extra).await;
        let r = send(
            &h2_client(),
            Request::get(proxy.url("/version"))
                .body(Default::default())
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, 200);
        assert!(
            r.body.starts_with(want),
            "{group_extra:?}: target saw {:?}",
            r.body
        );
        if want == "HTTP/2" {
            // An HTTP/2 target gets the client's authority, not its own address, and
            // no Host field besides (nginx answers 400 to both).
            assert_eq!(r.body, format!("HTTP/2.0 http://{}", proxy.addrs[0]));
            assert_eq!(b.last_headers().get("host"), None);
        } else {
            // An HTTP/1.1 target needs a Host even though an h2 client sends only
            // :authority.
            assert_eq!(
                header(&b.last_headers(), "host"),
                proxy.addrs[0].to_string()
            );
        }
        proxy.stop().await;
    }
}

#[tokio::test]
async fn http1_client_reaches_an_http2_target() {
    let b = backend("one").await;
    let proxy = proxy_to(&b, "", "protocol_version = \"http2\"").await;
    let r = get_with(&proxy.url("/version"), &[("host", "app.example.com")]).await;
    assert_eq!(r.status, 200);
    // The Host goes on as `:authority` (HTTP/2 servers take the host from it), not
    // as a Host field besides.
    assert_eq!(r.body, "HTTP/2.0 http://app.example.com");
    assert_eq!(b.last_headers().get("host"), None);
    proxy.stop().await;
}

#[tokio::test]
async fn curl_speaks_h2c_prior_knowledge_through_the_proxy() {
    if !curl_installed() {
        eprintln!("curl not installed; skipping");
        return;
    }
    let b = backend("one").await;
    let proxy = proxy_to(&b, "", "protocol_version = \"http2\"").await;
    let url = proxy.url("/version");
    let stdout = curl(&[
        "--http2-prior-knowledge",
        "-w",
        "\n%{http_version} %{http_code}",
        &url,
    ])
    .await;
    let (body, meta) = stdout.rsplit_once('\n').unwrap();
    assert_eq!(meta, "2 200", "curl's HTTP version and status");
    assert!(body.starts_with("HTTP/2"), "target saw {body:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn websocket_messages_echo_through_the_proxy() {
    use tokio_tungstenite::tungstenite::Message;

    let b = ws_echo_backend("ws").await;
    let proxy = proxy_to(&b, "", "").await;
    let stream = TcpStream::connect(proxy.addrs[0]).await.unwrap();
    let url = format!("ws://{}/chat", proxy.addrs[0]);
    let (mut ws, resp) = tokio_tungstenite::client_async(url.as_str(), stream)
        .await
        .expect("handshake through the proxy");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    let messages = [
        Message::text("hello"),
        Message::binary(vec![0u8, 1, 2, 255]),
        Message::text("ü".repeat(10_000)),
        Message::binary(vec![7u8; 200_000]),
        Message::text("bye"),
    ];
    echo_over(&mut ws, &messages).await;
    assert_eq!(b.hits(), 1);
    let seen = b.last_headers();
    assert_eq!(header(&seen, "upgrade"), "websocket");
    assert!(header(&seen, "connection").eq_ignore_ascii_case("upgrade"));
    proxy.stop().await;
}

/// A request body of `left` bytes, produced chunk by chunk (never held whole).
struct Generated {
    chunk: Bytes,
    left: u64,
}

impl http_body::Body for Generated {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len() as u64);
        self.left -= n;
        std::task::Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n as usize)))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// Counts a response body's bytes frame by frame; the largest RSS seen meanwhile is
/// recorded in `peak`.
async fn drain(mut body: Incoming, peak: &mut u64) -> u64 {
    let mut n = 0u64;
    let mut frames = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("body streams").into_data() {
            n += data.len() as u64;
        }
        frames += 1;
        if frames.is_multiple_of(64) {
            *peak = (*peak).max(rss_bytes());
        }
    }
    n
}

// 256 MiB each way takes a few seconds in a debug build; the size is the point: were
// the proxy buffering a body, RSS would grow by about that much.
const LARGE: u64 = 256 * 1024 * 1024;
const RSS_BUDGET: u64 = 64 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_both_ways_without_buffering() {
    let b = backend("one").await;
    let proxy = proxy_to(&b, "", "").await;
    let warm_up = get(&proxy.url("/bytes?n=1048576")).await;
    assert_eq!(warm_up.body.len(), 1 << 20);
    let before = rss_bytes();
    let mut peak = before;
    let started = Instant::now();

    let stream = TcpStream::connect(proxy.addrs[0]).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let chunk = Bytes::from(vec![b'y'; 256 * 1024]);
    let req = Request::post("/echo-body")
        .header("host", "big.example")
        .body(Generated { chunk, left: LARGE })
        .unwrap();
    let resp = sender.send_request(req).await.expect("echo response");
    assert_eq!(resp.status(), 200);
    let echoed = drain(resp.into_body(), &mut peak).await;
    assert_eq!(echoed, LARGE, "echoed bytes");
    let upload = started.elapsed();

    // Same connection, now a download.
    sender
        .ready()
        .await
        .expect("connection kept alive after the echo");
    let req = Request::get(format!("/bytes?n={LARGE}"))
        .header("host", "big.example")
        .body(Generated {
            chunk: Bytes::new(),
            left: 0,
        })
        .unwrap();
    let resp = sender.send_request(req).await.expect("download response");
    assert_eq!(resp.status(), 200);
    let downloaded = drain(resp.into_body(), &mut peak).await;
    assert_eq!(downloaded, LARGE, "downloaded bytes");
    let after = rss_bytes();
    peak = peak.max(after);
    eprintln!(
        "echo {LARGE} B in {upload:?}, download in {:?}; RSS before {} MiB, peak {} MiB, after {} MiB",
        started.elapsed() - upload,
        before >> 20,
        peak >> 20,
        after >> 20
    );
    assert!(
        peak - before < RSS_BUDGET,
        "RSS grew by {} MiB",
        (peak - before) >> 20
    );
    proxy.stop().await;
}

#[tokio::test]
async fn two_requests_share_one_client_connection() {
    let b = backend("one").await;
    let proxy = proxy_to(&b, "", "").await;
    let stream = TcpStream::connect(proxy.addrs[0]).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    for path in ["/", "/echo-headers"] {
        let req = Request::get(path)
            .header("host", "a.example")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = sender
            .send_request(req)
            .await
            .expect("request on the kept-alive connection");
        assert_eq!(resp.status(), 200, "{path}");
        resp.into_body().collect().await.unwrap();
    }
    assert_eq!(b.hits(), 2);
    assert!(!conn.is_finished(), "the proxy kept the connection open");
    proxy.stop().await;
}

/// Reads until the peer closes; returns how long that took (None if not within `limit`).
async fn time_to_close(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((started + limit).into(), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn idle_client_connection_is_closed_after_idle_timeout() {
    let b = backend("one").await;
    let proxy = proxy_to(&b, "idle_timeout = \"300ms\"", "").await;

    // A client that never sends is held by the kernel until its first SYN-ACK
    // retransmission (deferred accept, about 1 s), then accepted, and closed once idle.
    let mut silent = TcpStream::connect(proxy.addrs[0]).await.unwrap();
    let waited = time_to_close(&mut silent, Duration::from_secs(4))
        .await
        .expect("closed within the kernel's hold and the idle timeout");
    assert!(
        waited >= Duration::from_millis(250),
        "closed after only {waited:?}"
    );

    // Idle after a completed request, too.
    let mut used = TcpStream::connect(proxy.addrs[0]).await.unwrap();
    used.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    while !reply.ends_with(b"\r\n\r\none") {
        let mut buf = [0u8; 1024];
        let n = used.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "closed before the response: {:?}",
            String::from_utf8_lossy(&reply)
        );
        reply.extend_from_slice(&buf[..n]);
    }
    assert!(
        reply.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );
    let waited = time_to_close(&mut used, Duration::from_secs(1))
        .await
        .expect("closed once idle");
    assert!(
        waited >= Duration::from_millis(200),
        "closed after only {waited:?}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_request_head_trickled_in_is_cut_off_after_the_header_timeout() {
    let b = backend("one").await;
    // The header timeout is the idle timeout when that is shorter than 30 s.
    let proxy = proxy_to(&b, "idle_timeout = \"400ms\"", "").await;
    let mut slow = TcpStream::connect(proxy.addrs[0]).await.unwrap();
    let started = Instant::now();
    let head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut cut = None;
    for byte in head {
        // Bytes keep moving (never idle), but the head does not complete in time.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut probe = [0u8; 64];
        let closed = matches!(
            tokio::time::timeout(Duration::from_millis(1), slow.read(&mut probe)).await,
            Ok(Ok(0) | Err(_))
        );
        if closed || slow.write_all(&[*byte]).await.is_err() {
            cut = Some(started.elapsed());
            break;
        }
    }
    let cut = cut.expect("the connection was closed before the head completed");
    assert!(
        cut >= Duration::from_millis(350) && cut < Duration::from_millis(1500),
        "closed after {cut:?}"
    );
    assert_eq!(b.hits(), 0, "the partial request never reached the target");
    // Heads that arrive in time, one after another on one connection, are served.
    let mut fine = TcpStream::connect(proxy.addrs[0]).await.unwrap();
    for _ in 0..3 {
        // Each exchange also waits 300 ms for a close that does not come.
        let reply = raw_exchange_on(&mut fine, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert_eq!((reply.status, reply.closed), (200, false));
    }
}

#[tokio::test]
async fn a_request_pipelined_behind_a_long_streaming_response_is_served() {
    let b = backend("one").await;
    // Header timeout 400 ms; the first response streams for 1.5 s, and the second
    // request's head sits in the connection all that time, waiting its turn.
    let proxy = proxy_to(&b, "idle_timeout = \"400ms\"", "").await;
    let mut stream = TcpStream::connect(proxy.addrs[0]).await.unwrap();
    stream
        .write_all(b"GET /drip?chunks=10&ms=150 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    // The proxy closes after the second answer.
    let answer = read_until_closed(&mut stream).await;
    assert_eq!(answer.matches("tick").count(), 10, "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 2, "{answer}");
    assert!(answer.ends_with("one"), "{answer}");
}

#[tokio::test]
async fn slow_in_flight_request_outlives_the_idle_timeout() {
    let b = backend("one").await;
    let proxy = proxy_to(&b, "idle_timeout = \"300ms\"", "").await;
    let started = Instant::now();
    let reply = raw_exchange(
        proxy.addrs[0],
        b"GET /slow?ms=800 HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, b"one");
    assert!(started.elapsed() >= Duration::from_millis(800));

    // A request that is still being sent is activity as well.
    let mut stream = TcpStream::connect(proxy.addrs[0]).await.unwrap();
    stream
        .write_all(b"POST /echo-body HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\n")
        .await
        .unwrap();
    for byte in b"abcdef" {
        tokio::time::sleep(Duration::from_millis(150)).await;
        stream.write_all(&[*byte]).await.unwrap();
    }
    let reply = raw_exchange_on(&mut stream, b"").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, b"abcdef");
    proxy.stop().await;
}

#[tokio::test]
async fn expect_continue_gets_100_then_the_answer() {
    let b = backend("one").await;
    let proxy = proxy_to(&b, "", "").await;
    let mut stream = TcpStream::connect(proxy.addrs[0]).await.unwrap();
    stream
        .write_all(b"POST /echo-body HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let mut interim = Vec::new();
    while !interim.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut byte))
            .await
            .expect("100 Continue in time")
            .unwrap();
        assert_eq!(n, 1, "closed before 100 Continue");
        interim.push(byte[0]);
    }
    assert!(
        interim.starts_with(b"HTTP/1.1 100"),
        "{:?}",
        String::from_utf8_lossy(&interim)
    );
    let reply = raw_exchange_on(&mut stream, b"hello").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, b"hello");
    proxy.stop().await;
}

#[tokio::test]
async fn idle_websocket_is_closed_after_idle_timeout() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let b = ws_echo_backend("ws").await;
    let proxy = proxy_to(&b, "idle_timeout = \"300ms\"", "").await;
    let stream = TcpStream::connect(proxy.addrs[0]).await.unwrap();
    let url = format!("ws://{}/chat", proxy.addrs[0]);
    let (mut ws, _) = tokio_tungstenite::client_async(url.as_str(), stream)
        .await
        .expect("handshake through the proxy");
    // Busy for three idle periods: stays open.
    for i in 0..9 {
        ws.send(Message::text(format!("ping {i}"))).await.unwrap();
        let echo = tokio::time::timeout(Duration::from_secs(1), ws.next())
            .await
            .expect("echo in time");
        assert!(
            matches!(echo, Some(Ok(Message::Text(_)))),
            "message {i}: {echo:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Then silent: closed.
    let started = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(2), ws.next()).await;
    assert!(
        matches!(end, Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_))))),
        "idle WebSocket still open after {:?}: {end:?}",
        started.elapsed()
    );
    proxy.stop().await;
}

// Plain HTTP/1.1 requests without a body are served by ecslb's lean HTTP/1 server; the
// first request that is not (a body, an upgrade, HTTP/1.0, an h2c preface) hands the
// connection to hyper with the bytes already read. These tests mix the two on one
// connection and check the framing the lean server writes.

/// Reads until the proxy closes the connection (at most 10 s).
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the proxy closes the connection")
        .expect("a clean close");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn pipelined_requests_of_every_kind_are_answered_in_order_on_one_connection() {
    let b = backend("one").await;
    let proxy = proxy_to(&b, "", "").await;
    let mut stream = TcpStream::connect(proxy.addrs[0]).await.unwrap();
    // Lean, lean, a body (handed to hyper), then hyper serves the rest.
    stream
        .write_all(
            b"GET /echo-headers HTTP/1.1\r\nHost: a\r\nX-First: 1\r\n\r\n\
              GET /status?code=201 HTTP/1.1\r\nHost: a\r\n\r\n\
              POST /echo-body HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello there\
              HEAD / HTTP/1.1\r\nHost: a\r\n\r\n\
              GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream).await;
    let statuses: Vec<&str> = answer
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &answer[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "201", "200", "200", "200"], "{answer}");
    let at = |needle: &str| {
        answer
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} missing: {answer}"))
    };
    assert!(at("x-first: 1") < at("HTTP/1.1 201"), "{answer}");
    assert!(at("HTTP/1.1 201") < at("hello there"), "{answer}");
    // The HEAD answer has no body: the last response follows its head directly, and
    // the connection ends after the body of the last one.
    assert!(answer.ends_with("\r\n\r\none"), "{answer}");
    assert_eq!(b.hits(), 5);
}

#[tokio::test]
async fn the_lean_server_frames_streamed_sized_and_empty_responses() {
    let b = backend("one").await;
    let proxy = start_proxy(&one_group_config(
        &[b.addr],
        r#"
[[listeners.rules]]
priority = 1
conditions = { path = ["/fixed"] }
action = { fixed_response = { status = 418, content_type = "text/plain", body = "short and stout" } }
"#,
        "",
    ))
    .await;
    let mut stream = TcpStream::connect(proxy.addrs[0]).await.unwrap();

    // A body of unknown length from the target goes out chunked.
    let r = raw_exchange_on(
        &mut stream,
        b"GET /drip?chunks=3&ms=20 HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.body.len(), "tick\n".len() * 3, "{r:?}");
    assert!(!r.closed);

    // A sized one keeps the target's Content-Length.
    let r = raw_exchange_on(&mut stream, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!((r.status, r.header("content-length")), (200, Some("3")));
    assert_eq!(r.body, b"one");

    // 204 and 304 carry no body and no framing of one.
    for code in [204, 304] {
        let request = format!("GET /status?code={code} HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = raw_exchange_on(&mut stream, request.as_bytes()).await;
        assert_eq!(r.status, code);
        assert_eq!(r.header("transfer-encoding"), None);
        assert!(r.body.is_empty() && !r.closed);
    }

    // The proxy's own answers get a length and a Date, as hyper gave them.
    let r = raw_exchange_on(&mut stream, b"GET /fixed HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(
        (r.status, r.body.as_slice()),
        (418, &b"short and stout"[..])
    );
    assert_eq!(r.header("content-length"), Some("15"));
    let date = r.header("date").expect("a Date header");
    assert!(date.ends_with(" GMT") && date.len() == 29, "{date}");

    // The client's `Connection: close` is answered in kind, then the connection ends.
    let r = raw_exchange_on(
        &mut stream,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.header("connection"), Some("close"));
    assert!(r.closed);

    // HEAD: the head only (with the target's length), and the next answer follows it.
    let mut stream = TcpStream::connect(proxy.addrs[0]).await.unwrap();
    stream
        .write_all(
            b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n\
              GET /status?code=202 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream).await;
    let (head, rest) = answer.split_once("\r\n\r\n").expect("a HEAD answer");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(head.contains("\r\ncontent-length: 3"), "{answer}");
    assert!(rest.starts_with("HTTP/1.1 202 Accepted\r\n"), "{answer}");
    assert!(rest.ends_with("\r\n\r\none"), "{answer}");
    proxy.stop().await;
}

#[tokio::test]
async fn curl_reads_chunked_and_sized_answers_through_the_lean_server() {
    if !curl_installed() {
        eprintln!("curl not installed; skipping");
        return;
    }
    let b = backend("one").await;
    let proxy = proxy_to(&b, "", "").await;
    // Two URLs on one connection: curl reuses it, and must find each answer's end.
    let (drip, sized) = (proxy.url("/drip?chunks=4&ms=10"), proxy.url("/"));
    let text = curl(&[
        "--http1.1",
        "-w",
        "|%{http_code}|%{num_connects}\\n",
        &drip,
        &sized,
    ])
    .await;
    assert_eq!(
        text,
        format!("{}|200|1\none|200|0\n", "tick\n".repeat(4)),
        "{text}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_client_that_closes_mid_request_cancels_it() {
    let b = backend("one").await;
    let proxy = proxy_to(&b, "", "").await;
    let target = b.addr.to_string();
    let mut stream = TcpStream::connect(proxy.addrs[0]).await.unwrap();
    stream
        .write_all(b"GET /slow?ms=15000 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    eventually("the request is in flight", async || {
        in_flight(proxy.admin).await[&target] == 1
    })
    .await;
    drop(stream);
    // Well before the target would answer, the request is given up and its target
    // no longer counts it (least-outstanding balancing reads that count).
    eventually("the abandoned request is cancelled", async || {
        in_flight(proxy.admin).await[&target] == 0
    })
    .await;
    proxy.stop().await;
}

/// While the proxy cannot accept (here it is stopped, as a busy worker would be), the
/// kernel holds a burst of new connections in the listener's accept queue; each is
/// served once the proxy resumes. With the 128 connections that tokio's `bind` queues,
/// the rest of the burst would have its SYNs dropped and wait a second or more to retry.
#[tokio::test]
async fn a_burst_of_new_connections_waits_in_the_accept_queue_while_the_proxy_is_busy() {
    const BURST: usize = 400;
    let b = backend("b").await;
    let ecslb = start_binary(|addr, admin| binary_config(addr, admin, b.addr, "")).await;

    ecslb.signal("STOP");
    let mut connecting = tokio::task::JoinSet::new();
    for _ in 0..BURST {
        let addr = ecslb.addr;
        connecting.spawn(async move {
            // A dropped SYN is sent again after 1 s, 3 s, ...: with the proxy still
            // stopped, those are dropped too, so 2 s tells queued from dropped.
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
                .await
                .ok()
                .and_then(Result::ok)
        });
    }
    let streams: Vec<TcpStream> = connecting.join_all().await.into_iter().flatten().collect();
    ecslb.signal("CONT");
    assert_eq!(
        streams.len(),
        BURST,
        "connections established while the proxy was not accepting"
    );

    let mut served = tokio::task::JoinSet::new();
    for mut stream in streams {
        served.spawn(async move {
            raw_exchange_on(
                &mut stream,
                b"GET / HTTP/1.1\r\nHost: burst.test\r\nConnection: close\r\n\r\n",
            )
            .await
            .status
        });
    }
    let statuses = served.join_all().await;
    assert!(
        statuses.iter().all(|s| *s == 200),
        "statuses once the proxy resumed: {statuses:?}"
    );
    assert_eq!(b.hits(), BURST);
}

/// Started with the soft limit on open files most services get (systemd's 1024; 256
/// here, so that the test stays small), the proxy raises it to the hard limit and
/// holds more client connections than the soft limit would allow descriptors.
#[tokio::test]
async fn the_proxy_holds_more_connections_than_the_soft_open_files_limit() {
    const SOFT_LIMIT: u32 = 256;
    const CONNECTIONS: usize = 400;
    let b = backend("b").await;
    let ecslb = start_binary_with_open_files(
        |addr, admin| binary_config(addr, admin, b.addr, ""),
        SOFT_LIMIT,
    )
    .await;

    let mut connecting = tokio::task::JoinSet::new();
    for _ in 0..CONNECTIONS {
        let addr = ecslb.addr;
        connecting.spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let reply =
                raw_exchange_on(&mut stream, b"GET / HTTP/1.1\r\nHost: many.test\r\n\r\n").await;
            (reply.status, reply.closed, stream) // kept open: a descriptor in the proxy each
        });
    }
    let open = connecting.join_all().await;
    let answered: Vec<(u16, bool)> = open.iter().map(|(s, c, _)| (*s, *c)).collect();
    assert!(
        answered.iter().all(|a| *a == (200, false)),
        "(status, closed) of each connection: {answered:?}"
    );
    assert!(
        ecslb.log().contains("raised the open files limit"),
        "{}",
        ecslb.log()
    );
}

/// CPU time (user + system, in clock ticks) of each runtime worker thread of `pid`,
/// from /proc/PID/task/*/stat. tokio names its threads `tokio-rt-worker`; threads
/// of its blocking pool, if any, share the name (and idle).
fn worker_ticks(pid: u32) -> Vec<u64> {
    let mut ticks = Vec::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc/PID/task");
    for task in tasks {
        let task = task.expect("a /proc/PID/task entry");
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue; // the thread ended
        };
        let (name, rest) = stat.split_once(") ").expect("pid (comm) fields");
        if !name.ends_with("(tokio-rt-worker") {
            continue;
        }
        ticks.push(cpu_ticks(rest));
    }
    ticks
}

/// User + system CPU time, in clock ticks, from a /proc stat line's fields after the
/// name: state, ppid, ... utime is the 12th, stime the 13th.
fn cpu_ticks(after_name: &str) -> u64 {
    after_name
        .split(' ')
        .skip(11)
        .take(2)
        .map(|f| f.parse::<u64>().expect("a number of ticks"))
        .sum()
}

/// How busy each worker thread of `pid` is over `window`, as a share of it; the
/// busiest first.
async fn worker_busy(pid: u32, window: Duration) -> Vec<f64> {
    let hz = 100.0; // USER_HZ: what /proc counts in on Linux
    let before = worker_ticks(pid);
    tokio::time::sleep(window).await;
    let after = worker_ticks(pid);
    assert_eq!(before.len(), after.len(), "the worker threads stayed");
    let mut busy: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| (a - b) as f64 / hz / window.as_secs_f64())
        .collect();
    busy.sort_by(|a, b| b.total_cmp(a));
    busy
}

/// `--busy-poll` (here through its variable, `ECSLB_BUSY_POLL`) keeps every worker
/// polling while there is nothing to do, as HAProxy's `busy-polling`: both workers of
/// an idle proxy use CPU, where without it they sleep. It still serves, and SIGTERM
/// still ends it at once.
#[tokio::test]
async fn with_busy_polling_every_worker_polls_while_idle_and_sigterm_still_ends_it() {
    const WINDOW: Duration = Duration::from_millis(600);
    let b = backend("b").await;
    let config = |addr, admin| binary_config(addr, admin, b.addr, "");

    let sleeping = start_binary(config).await;
    let busy = worker_busy(sleeping.pid(), WINDOW).await;
    assert!(busy.len() >= 2, "two workers (--workers 2): {busy:?}");
    assert!(
        busy.iter().all(|b| *b < 0.1),
        "idle workers' CPU share without busy polling: {busy:?}"
    );
    drop(sleeping);

    let mut polling =
        start_binary_with_env(config, &[("ECSLB_BUSY_POLL", "true".to_string())]).await;
    assert!(
        polling.log().contains("busy_poll=true"),
        "{}",
        polling.log()
    );
    let busy = worker_busy(polling.pid(), WINDOW).await;
    assert_eq!(busy.len(), 2, "two workers (--workers 2)");
    // Each would be 1.0 on idle cores; other tests share this machine's two.
    assert!(
        busy.iter().all(|b| *b > 0.3),
        "idle workers' CPU share with busy polling: {busy:?}"
    );

    for _ in 0..20 {
        assert_eq!(get(&polling.url("/")).await.body, "b");
    }
    polling.signal("TERM");
    let exit = polling.wait_exit(Duration::from_secs(5)).await;
    assert!(
        exit.is_some_and(|e| e.success()),
        "exit within 5 s of SIGTERM: {exit:?}"
    );
}

/// The CPU time `pid` used over `window`, as a share of it.
async fn process_busy(pid: u32, window: Duration) -> f64 {
    let ticks = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the stat file");
        let (_, rest) = stat.rsplit_once(") ").expect("pid (comm) fields");
        cpu_ticks(rest)
    };
    let before = ticks();
    tokio::time::sleep(window).await;
    (ticks() - before) as f64 / 100.0 / window.as_secs_f64()
}

/// `--poll-before-sleep` (here through `ECSLB_POLL_BEFORE_SLEEP`, with one worker) keeps
/// the worker polling for a moment after its last work, but an idle proxy still goes
/// to sleep: the kernel's timer ticks, which land on a polling thread and look like
/// work, must not keep it awake. Under a steady trickle of requests it polls between
/// them instead of sleeping.
#[tokio::test]
async fn with_poll_before_sleep_an_idle_proxy_still_sleeps() {
    const WINDOW: Duration = Duration::from_millis(600);
    let b = backend("b").await;
    let polling = start_binary_with_env(
        |addr, admin| binary_config(addr, admin, b.addr, ""),
        &[
            ("ECSLB_WORKERS", "1".to_string()),
            ("ECSLB_POLL_BEFORE_SLEEP", "500us".to_string()),
        ],
    )
    .await;
    assert!(
        polling.log().contains("poll_before_sleep=500µs"),
        "{}",
        polling.log()
    );
    for _ in 0..20 {
        assert_eq!(get(&polling.url("/")).await.body, "b");
    }
    let idle = process_busy(polling.pid(), WINDOW).await;
    assert!(idle < 0.1, "an idle proxy's CPU share: {idle}");

    // Requests 300 µs apart on one connection, from a thread (the test's runtime
    // would be too coarse): the worker never waits longer than its window, so it
    // polls between them: 7 sleeps in 1,000 requests when measured (148 with both
    // cores kept busy by other processes), against 1,061 without the window.
    let addr = polling.addr;
    let sleeps_before = voluntary_switches(polling.pid());
    let requests = tokio::task::spawn_blocking(move || {
        use std::io::{Read as _, Write as _};
        let mut stream = std::net::TcpStream::connect(addr).expect("connects");
        stream.set_nodelay(true).expect("nodelay");
        let mut reply = [0u8; 4096];
        for _ in 0..1000 {
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                .expect("sent");
            let n = stream.read(&mut reply).expect("answered");
            assert!(reply[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &reply[..n]);
            std::thread::sleep(Duration::from_micros(300));
        }
        1000
    })
    .await
    .expect("the requests");
    let sleeps = voluntary_switches(polling.pid()) - sleeps_before;
    assert!(
        sleeps < requests / 2,
        "the worker went to sleep {sleeps} times in {requests} requests"
    );
}

/// How many times the main thread of `pid` (a one-worker runtime's worker) gave up the
/// CPU to wait.
fn voluntary_switches(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .expect("voluntary_ctxt_switches")
        .trim()
        .parse()
        .expect("a number")
}

/// An idle keep-alive connection is cheap: while it waits for its next request the
/// proxy holds no read buffer and no request state for it. benches/idle_conns.sh
/// measures about 4 KiB per connection, where an 8 KiB buffer per connection and a
/// task sized for hyper's server took 25 KiB. Asserted loosely: under 12 KiB.
#[tokio::test]
async fn idle_keep_alive_connections_cost_the_proxy_little_memory() {
    const CONNECTIONS: usize = 2000;
    const BATCH: usize = 200; // in flight at once: bounds the upstream pool's growth
    let b = backend("b").await;
    let ecslb = start_binary(|addr, admin| binary_config(addr, admin, b.addr, "")).await;
    let pid = ecslb.pid().to_string();
    let request = b"GET / HTTP/1.1\r\nHost: idle.test\r\n\r\n";
    let answered = |mut stream: TcpStream| async move {
        let reply = raw_exchange_on(&mut stream, request).await;
        assert_eq!((reply.status, reply.closed), (200, false));
        stream
    };
    // A first batch, so that the upstream pool and the allocator's heaps are warm.
    let mut open = Vec::with_capacity(CONNECTIONS + BATCH);
    let mut batch = tokio::task::JoinSet::new();
    for _ in 0..BATCH {
        let stream = TcpStream::connect(ecslb.addr).await.unwrap();
        batch.spawn(answered(stream));
    }
    open.extend(batch.join_all().await);
    let before = rss_bytes_of(&pid);

    for _ in 0..CONNECTIONS / BATCH {
        let mut batch = tokio::task::JoinSet::new();
        for _ in 0..BATCH {
            let stream = TcpStream::connect(ecslb.addr).await.unwrap();
            batch.spawn(answered(stream));
        }
        open.extend(batch.join_all().await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let per_connection = rss_bytes_of(&pid).saturating_sub(before) / CONNECTIONS as u64;
    assert!(
        per_connection < 12 * 1024,
        "{per_connection} bytes of proxy memory per idle connection"
    );
    drop(open);
}

#[tokio::test]
async fn http2_client_connections_do_not_keep_target_read_buffers_alive() {
    // HTTP/2's HPACK encoder keeps the header values it indexes for the connection's
    // life. A value that shared the target connection's read buffer kept that buffer
    // alive with it: about 900 KB per client connection after 50 requests whose
    // responses each carried a distinct value. Through the lean HTTP/1.1 client, and
    // hyper's HTTP/1.1 (here over TLS) and HTTP/2 ones.
    let b = backend("b").await;
    let tls = support::tls::tls_backend(&support::tls::Ca::new("ca").issue(&["b"]), "b").await;
    for (group, target) in [
        ("", b.addr),
        ("protocol = \"https\"\ntls = { verify = false }\n", tls.addr),
        ("protocol_version = \"http2\"\n", b.addr),
    ] {
        let ecslb = start_binary(|addr, admin| {
            binary_config(addr, admin, target, "")
                .replace("discovery", &format!("{group}discovery"))
        })
        .await;
        let per_connection = http2_memory_per_connection(&ecslb).await;
        assert!(
            per_connection < 64 * 1024,
            "{group:?}: {per_connection} bytes of proxy memory more per HTTP/2 connection"
        );
    }
}

/// How much more memory `ecslb` holds per HTTP/2 client connection after 40 requests
/// on each of 100 connections than after one, the responses' `x-request-id` all
/// distinct.
async fn http2_memory_per_connection(ecslb: &Binary) -> u64 {
    const CONNECTIONS: usize = 100;
    const REQUESTS: usize = 40;
    let pid = ecslb.pid().to_string();
    let mut senders = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let stream = TcpStream::connect(ecslb.addr).await.expect("connects");
        let (sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(stream),
        )
        .await
        .expect("an HTTP/2 handshake");
        tokio::spawn(conn);
        senders.push(sender);
    }
    let round = |senders: Vec<hyper::client::conn::http2::SendRequest<Empty<Bytes>>>| async move {
        let mut calls = tokio::task::JoinSet::new();
        for mut sender in senders {
            calls.spawn(async move {
                let req = Request::get("http://h2.test/unique")
                    .body(Empty::new())
                    .expect("a request");
                let resp = sender.send_request(req).await.expect("a response");
                assert!(resp.headers().contains_key("x-request-id"));
                resp.into_body().collect().await.expect("the body");
                sender
            });
        }
        calls.join_all().await
    };
    // A first round warms the upstream pool and the allocator's heaps.
    senders = round(senders).await;
    let before = rss_bytes_of(&pid);
    for _ in 1..REQUESTS {
        senders = round(senders).await;
    }
    rss_bytes_of(&pid).saturating_sub(before) / CONNECTIONS as u64
}

/// Sends one HTTP/2 request for `uri` with `host` as a Host field besides (`None`:
/// none) over a new connection with the `h2` crate, which sends what it is given;
/// the answer's status, or `None` when the stream was refused.
async fn h2_status(addr: std::net::SocketAddr, uri: &str, host: Option<&str>) -> Option<u16> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut client, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let mut req = Request::get(uri);
    if let Some(host) = host {
        req = req.header("host", host);
    }
    let (resp, _) = client
        .send_request(req.body(()).expect("a request"), true)
        .expect("the request is sent");
    Some(resp.await.ok()?.status().as_u16())
}

/// An HTTP/2 request's host is `:authority`, or its Host field: when it has both, they
/// must name the same host (RFC 9113 §8.3.1), or the rules and an HTTP/1.1 target could
/// each take another one. Userinfo in `:authority` and a request with no host at all
/// are refused too, before they reach the target.
#[tokio::test]
async fn http2_requests_whose_host_is_ambiguous_or_missing_are_refused() {
    let b = backend("one").await;
    let proxy = start_proxy(&one_group_config(&[b.addr], "", "")).await;
    let addr = proxy.addrs[0];
    let port = addr.port();

    // An HTTP/1.1 target gets the Host field when there is one, as RFC 9113 asks of
    // intermediaries, else `:authority`.
    for (host, sent, why) in [
        (None, "a.test", "no Host field"),
        (Some("A.TEST"), "A.TEST", "the same host but for case"),
        (
            Some("a.test:80"),
            "a.test:80",
            "the same host and default port",
        ),
    ] {
        let status = h2_status(addr, "http://a.test/x", host).await;
        assert_eq!(status, Some(200), "{why}");
        assert_eq!(b.last_headers()["host"], sent, "{why}");
    }
    assert_eq!(b.hits(), 3);

    let other_port = format!("a.test:{port}");
    for (uri, host, why) in [
        ("http://a.test/x", Some("b.test"), "Host names another host"),
        (
            "http://a.test/x",
            Some(other_port.as_str()),
            "Host names another port",
        ),
        ("http://user@a.test/x", None, "userinfo in :authority"),
        ("/x", None, "no :authority and no Host"),
    ] {
        let status = h2_status(addr, uri, host).await;
        assert!(status.is_none() || status == Some(400), "{why}: {status:?}");
    }
    assert_eq!(b.hits(), 3, "the refused requests did not reach the target");
    proxy.stop().await;
}

/// Reads one response (with a `Content-Length`) off a raw HTTP/1.1 connection and
/// returns its head, lower-cased.
async fn read_response_head(stream: &mut TcpStream) -> String {
    let mut reply = Vec::new();
    loop {
        let text = String::from_utf8_lossy(&reply).to_ascii_lowercase();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|n| n.trim().parse::<usize>().ok())
                .expect("a content-length");
            if body.len() >= length {
                return head.to_owned();
            }
        }
        let mut buf = [0u8; 1024];
        let n = stream.read(&mut buf).await.expect("the response is read");
        assert!(n > 0, "closed before the response: {text:?}");
        reply.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn client_connections_end_after_the_keep_alive_duration() {
    // ALB's `client_keep_alive.seconds`: a connection this old ends after the response
    // in progress, so that long-lived clients reconnect and spread anew.
    let b = backend("one").await;
    let proxy = proxy_to(&b, "client_keep_alive = \"1s\"", "").await;
    let addr = proxy.addrs[0];

    // HTTP/1.1, on the lean path (no body) and on hyper's (a body): the response
    // finishing after 1 s says `Connection: close`, and the connection ends.
    for request in [
        &b"GET /slow?ms=1500 HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"POST /slow?ms=1500 HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx",
    ] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let head = read_response_head(&mut stream).await;
        assert!(
            !head.contains("connection: close"),
            "a young connection: {head}"
        );
        stream.write_all(request).await.unwrap();
        let head = read_response_head(&mut stream).await;
        assert!(
            head.starts_with("http/1.1 200") && head.contains("connection: close"),
            "{}: {head}",
            String::from_utf8_lossy(request)
        );
        time_to_close(&mut stream, Duration::from_secs(2))
            .await
            .expect("the connection ends after the response");
    }

    // HTTP/2: a GOAWAY at 1 s; the request in progress is answered, then the
    // connection ends.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(connection);
    let req = Request::get(format!("http://{addr}/slow?ms=1500"))
        .body(())
        .unwrap();
    let (resp, _) = client.send_request(req, true).unwrap();
    let started = Instant::now();
    assert_eq!(resp.await.unwrap().status(), 200);
    let ended = tokio::time::timeout(Duration::from_secs(2), connection).await;
    assert!(
        matches!(ended, Ok(Ok(Ok(())))),
        "the connection ends cleanly: {ended:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(1400));
    proxy.stop().await;
}
