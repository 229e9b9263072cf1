//! L4 listeners against real TCP servers: a 1 GiB stream each way arriving
//! byte-identical, half-close both ways, moving on from a target that refuses, the
//! PROXY protocol both ways, TLS termination, TLS passthrough routed by SNI, the idle
//! timeout, and TCP health checks.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::net::SocketAddr;
use std::time::Duration;

use support::tls::{certificates_toml, connect, default_client, peer_leaf, Ca};
use support::{free_port, get, start_proxy, TempDir};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// A deterministic byte stream: a random 64 KiB block, repeated, with the block's
/// number in its first 8 bytes, so lost, repeated or reordered bytes all show.
struct Pattern {
    block: Vec<u8>,
    current: Vec<u8>,
    index: u64,
    offset: usize,
}

const BLOCK: usize = 64 * 1024;

impl Pattern {
    fn new(seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let block: Vec<u8> = (0..BLOCK).map(|_| rng.u8(..)).collect();
        let mut p = Self {
            current: block.clone(),
            block,
            index: 0,
            offset: 0,
        };
        p.stamp();
        p
    }

    fn stamp(&mut self) {
        self.current.copy_from_slice(&self.block);
        self.current[..8].copy_from_slice(&self.index.to_le_bytes());
    }

    fn advance(&mut self, n: usize) {
        self.offset += n;
        if self.offset == BLOCK {
            self.offset = 0;
            self.index += 1;
            self.stamp();
        }
    }

    /// The next bytes of the stream (up to the end of the current block).
    fn next(&mut self, max: usize) -> Vec<u8> {
        let n = max.min(BLOCK - self.offset);
        let out = self.current[self.offset..self.offset + n].to_vec();
        self.advance(n);
        out
    }

    /// Whether `data` is what comes next.
    fn check(&mut self, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            let n = data.len().min(BLOCK - self.offset);
            if data[..n] != self.current[self.offset..self.offset + n] {
                return false;
            }
            self.advance(n);
            data = &data[n..];
        }
        true
    }
}

/// Writes `total` pattern bytes, then shuts the stream for writing.
async fn send_pattern<W: AsyncWrite + Unpin>(w: &mut W, seed: u64, total: u64) {
    let mut p = Pattern::new(seed);
    let mut sent = 0u64;
    while sent < total {
        let chunk = p.next((total - sent).min(BLOCK as u64) as usize);
        w.write_all(&chunk).await.unwrap();
        sent += chunk.len() as u64;
    }
    w.shutdown().await.unwrap();
}

/// Reads to EOF, checking every byte against the pattern; returns the count, or the
/// offset of the first wrong byte as an error.
async fn receive_pattern<R: AsyncRead + Unpin>(r: &mut R, seed: u64) -> Result<u64, u64> {
    let mut p = Pattern::new(seed);
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            return Ok(got);
        }
        if !p.check(&buf[..n]) {
            return Err(got);
        }
        got += n as u64;
    }
}

/// A target that streams `total` pattern bytes (seed 2) while checking what it gets
/// against pattern seed 1, and reports the check.
async fn pattern_backend(total: u64) -> (SocketAddr, mpsc::UnboundedReceiver<Result<u64, u64>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (mut r, mut w) = stream.into_split();
                let (received, ()) =
                    tokio::join!(receive_pattern(&mut r, 1), send_pattern(&mut w, 2, total));
                let _ = tx.send(received);
            });
        }
    });
    (addr, rx)
}

/// A target that runs `serve` on each connection.
async fn target<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serve = std::sync::Arc::new(serve);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let serve = serve.clone();
            tokio::spawn(async move { serve(stream).await });
        }
    });
    addr
}

/// A target that answers each connection with `name\n` and then echoes.
async fn echo_target(name: &'static str) -> SocketAddr {
    target(move |mut s| async move {
        s.write_all(format!("{name}\n").as_bytes()).await.unwrap();
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    })
    .await
}

fn l4_config(
    protocol: &str,
    listener_extra: &str,
    targets: &[SocketAddr],
    group_extra: &str,
) -> String {
    l4_config_to("tcp", protocol, listener_extra, targets, group_extra)
}

/// One L4 listener of `protocol` forwarding to group `g` (of `group_protocol`).
fn l4_config_to(
    group_protocol: &str,
    protocol: &str,
    listener_extra: &str,
    targets: &[SocketAddr],
    group_extra: &str,
) -> String {
    let targets: Vec<String> = targets.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[listeners]]
name = "l4"
bind = "127.0.0.1:0"
protocol = "{protocol}"
default_action = {{ forward = "g" }}
{listener_extra}

[target_groups.g]
protocol = "{group_protocol}"
discovery = {{ static = [{}] }}
{group_extra}
"#,
        targets.join(", ")
    )
}

/// Reads one `\n`-terminated line.
async fn line<R: AsyncRead + Unpin>(r: &mut R) -> String {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while r.read(&mut byte).await.unwrap() == 1 && byte[0] != b'\n' {
        out.push(byte[0]);
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gibibyte_each_way_arrives_byte_identical() {
    const TOTAL: u64 = 1 << 30;
    let (addr, mut reports) = pattern_backend(TOTAL).await;
    let proxy = start_proxy(&l4_config("tcp", "", &[addr], "")).await;
    let client = TcpStream::connect(proxy.addrs[0]).await.unwrap();
    let (mut r, mut w) = client.into_split();
    let (received, ()) = tokio::time::timeout(Duration::from_secs(300), async {
        tokio::join!(receive_pattern(&mut r, 2), send_pattern(&mut w, 1, TOTAL))
    })
    .await
    .expect("1 GiB each way within 5 minutes");
    assert_eq!(received, Ok(TOTAL), "target → client");
    assert_eq!(reports.recv().await.unwrap(), Ok(TOTAL), "client → target");
    let metrics = get(&proxy.admin_url("/metrics")).await.body;
    let bytes: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"ecslb_processed_bytes_total{listener="l4"} "#))
        .and_then(|v| v.parse().ok())
        .expect("processed bytes of the listener");
    assert!(bytes >= (2 * TOTAL) as f64, "processed bytes {bytes}");
}

#[tokio::test]
async fn half_closed_connections_keep_flowing_the_other_way() {
    // The client finishes sending first: the target still answers after EOF.
    let counts = target(|mut s| async move {
        let mut all = Vec::new();
        s.read_to_end(&mut all).await.unwrap();
        s.write_all(format!("got {}", all.len()).as_bytes())
            .await
            .unwrap();
    })
    .await;
    // The target finishes first: the client can still send, and the target reads it.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let closes_first = target(move |mut s| {
        let tx = tx.clone();
        async move {
            s.write_all(b"bye").await.unwrap();
            s.shutdown().await.unwrap();
            let mut all = Vec::new();
            s.read_to_end(&mut all).await.unwrap();
            tx.send(all).unwrap();
        }
    })
    .await;
    let proxy = start_proxy(&format!(
        "{}\n{}",
        l4_config("tcp", "", &[counts], ""),
        r#"
[[listeners]]
name = "second"
bind = "127.0.0.1:0"
protocol = "tcp"
default_action = { forward = "h" }

[target_groups.h]
protocol = "tcp"
discovery = { static = ["TARGET"] }
"#
        .replace("TARGET", &closes_first.to_string())
    ))
    .await;

    let mut s = TcpStream::connect(proxy.addrs[0]).await.unwrap();
    s.write_all(&[7u8; 100_000]).await.unwrap();
    s.shutdown().await.unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).await.unwrap();
    assert_eq!(reply, "got 100000");

    let mut s = TcpStream::connect(proxy.addrs[1]).await.unwrap();
    let mut first = Vec::new();
    s.read_to_end(&mut first).await.unwrap(); // EOF arrives: the target shut its side
    assert_eq!(first, b"bye");
    s.write_all(b"still here").await.unwrap();
    s.shutdown().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, b"still here");
}

#[tokio::test]
async fn a_target_that_refuses_is_skipped_for_the_next_one() {
    let dead: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let live = echo_target("live").await;
    let proxy = start_proxy(&l4_config(
        "tcp",
        "",
        &[dead, live],
        r#"algorithm = "least_connections""#,
    ))
    .await;
    for _ in 0..6 {
        let mut s = TcpStream::connect(proxy.addrs[0]).await.unwrap();
        assert_eq!(line(&mut s).await, "live");
        s.write_all(b"ping\n").await.unwrap();
        assert_eq!(line(&mut s).await, "ping");
    }
    let metrics = get(&proxy.admin_url("/metrics")).await.body;
    let errors: u64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("ecslb_target_connection_errors_total") && l.contains(&dead.to_string())
        })
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0);
    assert!(errors >= 1, "refused connections are counted: {metrics}");
}

/// Parses a PROXY v2 header (written here independently of ecslb's parser).
async fn read_proxy_v2(s: &mut TcpStream) -> (SocketAddr, SocketAddr) {
    let mut head = [0u8; 16];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(&head[..12], b"\r\n\r\n\0\r\nQUIT\n", "v2 signature");
    assert_eq!(head[12], 0x21, "version 2, PROXY command");
    let len = u16::from_be_bytes([head[14], head[15]]) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    assert_eq!(head[13], 0x11, "TCP over IPv4");
    let ip = |b: &[u8]| std::net::IpAddr::from([b[0], b[1], b[2], b[3]]);
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    (
        SocketAddr::new(ip(&body[0..4]), port(&body[8..10])),
        SocketAddr::new(ip(&body[4..8]), port(&body[10..12])),
    )
}

#[tokio::test]
async fn targets_that_ask_for_it_get_a_proxy_v2_header_with_the_client_address() {
    let reports = target(|mut s| async move {
        let (src, dst) = read_proxy_v2(&mut s).await;
        s.write_all(format!("{src} {dst}\n").as_bytes())
            .await
            .unwrap();
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    })
    .await;
    let proxy = start_proxy(&l4_config(
        "tcp",
        "",
        &[reports],
        "proxy_protocol_v2 = true",
    ))
    .await;
    let mut s = TcpStream::connect(proxy.addrs[0]).await.unwrap();
    let me = s.local_addr().unwrap();
    assert_eq!(line(&mut s).await, format!("{me} {}", proxy.addrs[0]));
    s.write_all(b"data after the header\n").await.unwrap();
    assert_eq!(line(&mut s).await, "data after the header");

    // Behind a front balancer that sends PROXY v1, the original client is passed on.
    let proxy = start_proxy(&l4_config(
        "tcp",
        "accept_proxy_protocol = true",
        &[reports],
        "proxy_protocol_v2 = true",
    ))
    .await;
    let mut s = TcpStream::connect(proxy.addrs[0]).await.unwrap();
    s.write_all(b"PROXY TCP4 203.0.113.7 198.51.100.1 40000 443\r\n")
        .await
        .unwrap();
    assert_eq!(line(&mut s).await, "203.0.113.7:40000 198.51.100.1:443");
    // Without the header it expects, the listener closes the connection.
    let mut s = TcpStream::connect(proxy.addrs[0]).await.unwrap();
    s.write_all(b"hello without a header\r\n").await.unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest).await;
    assert!(rest.is_empty(), "{rest:?}");
}

#[tokio::test]
async fn http_listeners_take_the_client_address_from_a_proxy_header() {
    let b = support::backend("b").await;
    let proxy = start_proxy(&support::one_group_config(
        &[b.addr],
        "accept_proxy_protocol = true",
        "",
    ))
    .await;
    let mut header = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    header.extend_from_slice(&[192, 0, 2, 44, 10, 0, 0, 1]);
    header.extend_from_slice(&51000u16.to_be_bytes());
    header.extend_from_slice(&80u16.to_be_bytes());
    let mut s = TcpStream::connect(proxy.addrs[0]).await.unwrap();
    s.write_all(&header).await.unwrap();
    let reply =
        support::raw_exchange_on(&mut s, b"GET /echo-headers HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(reply.status, 200);
    let body = String::from_utf8_lossy(&reply.body).into_owned();
    assert!(body.contains("x-forwarded-for: 192.0.2.44\n"), "{body}");
}

#[tokio::test]
async fn tls_listeners_terminate_and_forward_the_plain_stream() {
    let dir = TempDir::new();
    let ca = Ca::new("ca");
    let files = [ca.issue(&["db.test"]).write(&dir.0, "db")];
    let echo = echo_target("plain").await;
    let proxy = start_proxy(&l4_config("tls", &certificates_toml(&files), &[echo], "")).await;
    let mut s = connect(proxy.addrs[0], "db.test", default_client(&ca))
        .await
        .unwrap();
    assert_eq!(line(&mut s).await, "plain");
    // 32 MiB through TLS (buffered copy on this path), checked byte by byte.
    let mut payload = Pattern::new(9);
    let mut expect = Pattern::new(9);
    let (mut r, mut w) = tokio::io::split(s);
    let send = async {
        for _ in 0..512 {
            w.write_all(&payload.next(BLOCK)).await.unwrap();
        }
        w.shutdown().await.unwrap();
    };
    let receive = async {
        let mut buf = vec![0u8; BLOCK];
        let mut got = 0;
        loop {
            let n = r.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            assert!(expect.check(&buf[..n]), "echo differs at {got}");
            got += n;
        }
        got
    };
    let ((), got) = tokio::join!(send, receive);
    assert_eq!(got, 512 * BLOCK);
}

#[tokio::test]
async fn tls_passthrough_routes_by_server_name_without_terminating() {
    let ca = Ca::new("ca");
    let a_cert = ca.issue(&["a.test"]);
    let b_cert = ca.issue(&["b.test", "other.test"]);
    let a = support::tls::tls_backend(&a_cert, "a").await;
    let b = support::tls::tls_backend(&b_cert, "b").await;
    let config = format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[listeners]]
name = "pass"
bind = "127.0.0.1:0"
protocol = "tls_passthrough"
default_action = {{ forward = "b" }}

[[listeners.rules]]
priority = 1
conditions = {{ host = ["a.test"] }}
action = {{ forward = "a" }}

[target_groups.a]
protocol = "tcp"
discovery = {{ static = ["{}"] }}

[target_groups.b]
protocol = "tcp"
discovery = {{ static = ["{}"] }}
"#,
        a.addr, b.addr
    );
    let proxy = start_proxy(&config).await;
    for (sni, cert, name) in [("a.test", &a_cert, "a"), ("other.test", &b_cert, "b")] {
        let s = connect(proxy.addrs[0], sni, default_client(&ca))
            .await
            .unwrap();
        assert_eq!(
            &peer_leaf(&s),
            &cert.der,
            "{sni}: the target's own certificate"
        );
        let (status, _, body) = support::tls::Https::over(s)
            .await
            .get(sni, "/")
            .await
            .unwrap();
        assert_eq!((status.as_u16(), body.as_str()), (200, name), "{sni}");
    }
    // Not TLS at all: the connection is closed, nothing reaches a target.
    let mut s = TcpStream::connect(proxy.addrs[0]).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest).await;
    assert!(rest.is_empty());
    assert_eq!(a.hits() + b.hits(), 2);
}

#[tokio::test]
async fn http_listeners_accept_once_the_client_speaks_and_tcp_listeners_at_once() {
    let greeter = echo_target("hello").await;
    let web = support::backend("web").await;
    let proxy = start_proxy(&format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[listeners]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
default_action = {{ forward = "web" }}

[[listeners]]
name = "l4"
bind = "127.0.0.1:0"
protocol = "tcp"
default_action = {{ forward = "greeter" }}

[[listeners]]
name = "behind_nlb"
bind = "127.0.0.1:0"
protocol = "tcp"
accept_proxy_protocol = true
default_action = {{ forward = "greeter" }}

[target_groups.web]
discovery = {{ static = ["{}"] }}

[target_groups.greeter]
protocol = "tcp"
discovery = {{ static = ["{greeter}"] }}
"#,
        web.addr
    ))
    .await;
    let accepted = |text: &str, listener: &str| {
        let series = format!("ecslb_new_connections_total{{listener=\"{listener}\"}}");
        support::sample::<u64>(text, &series).unwrap_or(0)
    };
    // All clients stay silent. The HTTP one is held back by the kernel until it sends
    // (or for about a second), as is one on a tcp listener that expects a PROXY header
    // first; the plain TCP one is accepted and proxied at once, so a target that speaks
    // first (SMTP, MySQL, this greeter) is heard without delay. Had the plain TCP
    // listener been held back too, its greeting would come after the other clients'
    // hold ended, and they would show as accepted below.
    let mut http = TcpStream::connect(proxy.addrs[0]).await.unwrap();
    let _behind_nlb = TcpStream::connect(proxy.addrs[2]).await.unwrap();
    let mut tcp = TcpStream::connect(proxy.addrs[1]).await.unwrap();
    let greeting = tokio::time::timeout(Duration::from_secs(5), line(&mut tcp))
        .await
        .expect("the target's greeting");
    assert_eq!(greeting, "hello");
    let text = get(&proxy.admin_url("/metrics")).await.body;
    assert_eq!(accepted(&text, "l4"), 1, "{text}");
    assert_eq!(accepted(&text, "behind_nlb"), 0, "{text}");
    assert_eq!(
        accepted(&text, "web"),
        0,
        "a silent HTTP client was accepted: {text}"
    );

    http.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), http.read_to_end(&mut reply))
        .await
        .expect("the response")
        .unwrap();
    assert!(
        reply.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );
    let text = get(&proxy.admin_url("/metrics")).await.body;
    assert_eq!(accepted(&text, "web"), 1, "{text}");
}

#[tokio::test]
async fn an_idle_tcp_connection_is_closed_after_the_idle_timeout() {
    let echo = echo_target("e").await;
    let proxy = start_proxy(&l4_config("tcp", r#"idle_timeout = "1s""#, &[echo], "")).await;
    let mut s = TcpStream::connect(proxy.addrs[0]).await.unwrap();
    assert_eq!(line(&mut s).await, "e");
    let started = tokio::time::Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("closed by the idle timeout")
        .unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}"
    );
}

#[tokio::test]
async fn tcp_groups_are_health_checked_by_connecting() {
    // Accepts connections but never speaks HTTP: an HTTP check would time out.
    let silent = target(|s| async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(s);
    })
    .await;
    let dead: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let checks = r#"health_check = { interval = "200ms", timeout = "100ms", healthy_threshold = 2, unhealthy_threshold = 2 }"#;
    let proxy = start_proxy(&l4_config("tcp", "", &[silent, dead], checks)).await;
    support::eventually(
        "the silent target is healthy and the closed port unhealthy",
        async || {
            let r = get(&proxy.admin_url("/v1/targets")).await;
            let json: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            let state = |addr: SocketAddr| {
                json["target_groups"][0]["targets"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|t| t["target"] == addr.to_string())
                    .map(|t| t["state"].as_str().unwrap_or("").to_owned())
            };
            state(silent).as_deref() == Some("healthy")
                && state(dead).as_deref() == Some("unhealthy")
        },
    )
    .await;
}

#[tokio::test]
async fn tls_target_groups_get_a_new_verified_tls_connection() {
    let dir = TempDir::new();
    let ca = Ca::new("internal ca");
    let ca_file = ca.write(&dir.0, "ca.pem").display().to_string();
    let https = support::tls::tls_backend(&ca.issue(&["db.internal"]), "behind-tls").await;
    let config = |extra: &str| {
        let tls = format!("tls = {{ ca = {ca_file:?}{extra} }}");
        l4_config_to("tls", "tcp", "", &[https.addr], &tls)
    };
    // Plain HTTP in, TLS (verified against the group's CA and name) out.
    let proxy = start_proxy(&config(", server_name = \"db.internal\"")).await;
    let mut s = TcpStream::connect(proxy.addrs[0]).await.unwrap();
    let reply =
        support::raw_exchange_on(&mut s, b"GET / HTTP/1.1\r\nHost: db.internal\r\n\r\n").await;
    assert_eq!(
        (reply.status, reply.body.as_slice()),
        (200, &b"behind-tls"[..])
    );
    // A name the certificate does not carry: the handshake fails, the client is closed.
    let proxy = start_proxy(&config(", server_name = \"other.internal\"")).await;
    let mut s = TcpStream::connect(proxy.addrs[0]).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: db.internal\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest).await;
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
}
