//! Test kit: start ecslb on `127.0.0.1:0` from a TOML string, real backends on 127.0.0.x
//! that count their hits, and small clients (hyper, raw TCP).
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ecslb-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running ecslb, in-process, on the sockets its config names (use `127.0.0.1:0`).
pub struct Proxy {
    /// Bound address of each listener, in config order.
    pub addrs: Vec<SocketAddr>,
    pub admin: SocketAddr,
    pub config_path: PathBuf,
    pub reloader: Arc<ecslb::app::Reloader>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _dir: TempDir,
}

/// Writes `toml` to a file and starts ecslb on it.
pub async fn start_proxy(toml: &str) -> Proxy {
    let dir = TempDir::new();
    let config_path = dir.0.join("ecslb.toml");
    std::fs::write(&config_path, toml).unwrap();
    let app = ecslb::app::App::bind(&config_path).await.expect("config starts");
    let addrs = app.listener_addrs();
    let admin = app.admin_addr().unwrap();
    let reloader = app.reloader();
    let stop = CancellationToken::new();
    let task = tokio::spawn(app.run(stop.clone()));
    Proxy { addrs, admin, config_path, reloader, stop, task, _dir: dir }
}

impl Proxy {
    /// `http://<first listener><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addrs[0])
    }

    /// `http://<admin><path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Rewrites the config file (the next reload reads it).
    pub fn write_config(&self, toml: &str) {
        std::fs::write(&self.config_path, toml).unwrap();
    }

    /// Signals shutdown and waits for the proxy to finish draining.
    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }

    /// Signals shutdown without waiting.
    pub fn begin_stop(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Waits for the serving task (after `begin_stop`).
    pub async fn join(self) {
        self.task.await.unwrap();
    }
}

/// A backend HTTP server (HTTP/1.1 and h2c) answering with its name.
///
/// Paths: `/` and anything else → 200 with body = name and header `x-backend: name`;
/// `/echo-headers` → the request headers as `name: value` lines;
/// `/echo-body` → streams the request body back; `/bytes?n=N` → N bytes of 'x' streamed
/// in 64 KiB chunks; `/slow?ms=N` → waits N ms, then answers; `/status?code=N` → that
/// status; `/set-cookie?name=N` → sets cookie N=1; `/version` → the HTTP version seen;
/// an HTTP/1.1 upgrade request → 101 and then echoes the upgraded stream.
pub struct Backend {
    pub addr: SocketAddr,
    pub name: String,
    hits: Arc<AtomicUsize>,
    pub last_headers: Arc<std::sync::Mutex<HeaderMap>>,
    stop: CancellationToken,
}

impl Backend {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn reset_hits(&self) {
        self.hits.store(0, Ordering::SeqCst);
    }

    /// Headers of the last request received.
    pub fn last_headers(&self) -> HeaderMap {
        self.last_headers.lock().unwrap().clone()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Starts a backend on `ip:0` (e.g. "127.0.0.2").
pub async fn backend_on(ip: &str, name: &str) -> Backend {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    serve_backend(listener, name)
}

/// Starts a backend on 127.0.0.1.
pub async fn backend(name: &str) -> Backend {
    backend_on("127.0.0.1", name).await
}

fn serve_backend(listener: TcpListener, name: &str) -> Backend {
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let last_headers = Arc::new(std::sync::Mutex::new(HeaderMap::new()));
    let stop = CancellationToken::new();
    let (name_c, hits_c, last_c, stop_c) = (name.to_owned(), hits.clone(), last_headers.clone(), stop.clone());
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                r = listener.accept() => match r { Ok(r) => r, Err(_) => continue },
                () = stop_c.cancelled() => return,
            };
            let (name, hits, last) = (name_c.clone(), hits_c.clone(), last_c.clone());
            let stop = stop_c.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let (name, hits, last) = (name.clone(), hits.clone(), last.clone());
                    async move { Ok::<_, Infallible>(backend_response(&name, &hits, &last, req).await) }
                });
                let builder = auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                tokio::select! {
                    _ = conn => {}
                    () = stop.cancelled() => {}
                }
            });
        }
    });
    Backend { addr, name: name.to_owned(), hits, last_headers, stop }
}

type BoxBody = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

fn full(b: impl Into<Bytes>) -> BoxBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

async fn backend_response(
    name: &str,
    hits: &AtomicUsize,
    last: &std::sync::Mutex<HeaderMap>,
    req: Request<Incoming>,
) -> Response<BoxBody> {
    hits.fetch_add(1, Ordering::SeqCst);
    *last.lock().unwrap() = req.headers().clone();
    let q = query(&req);
    if req.headers().contains_key("upgrade") {
        return upgrade_response(req);
    }
    let mut resp = Response::new(full(name.to_owned()));
    match req.uri().path() {
        "/echo-headers" => {
            let text: String = req
                .headers()
                .iter()
                .map(|(k, v)| format!("{k}: {}\n", v.to_str().unwrap_or("?")))
                .collect();
            *resp.body_mut() = full(text);
        }
        "/echo-body" => {
            let body = req.into_body();
            *resp.body_mut() = body.boxed();
        }
        "/bytes" => {
            let n: usize = q.get("n").and_then(|n| n.parse().ok()).unwrap_or(0);
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, hyper::Error>>(4);
            tokio::spawn(async move {
                let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
                let mut left = n;
                while left > 0 {
                    let len = left.min(chunk.len());
                    if tx.send(Ok(http_body::Frame::data(chunk.slice(..len)))).await.is_err() {
                        return;
                    }
                    left -= len;
                }
            });
            let stream = http_body_util::StreamBody::new(tokio_stream_from(rx));
            *resp.body_mut() = stream.boxed();
        }
        "/slow" => {
            let ms: u64 = q.get("ms").and_then(|n| n.parse().ok()).unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        "/status" => {
            let code: u16 = q.get("code").and_then(|n| n.parse().ok()).unwrap_or(200);
            *resp.status_mut() = StatusCode::from_u16(code).unwrap();
        }
        "/set-cookie" => {
            let cookie = q.get("name").cloned().unwrap_or_else(|| "SESSION".into());
            resp.headers_mut().insert("set-cookie", format!("{cookie}=1; Path=/").parse().unwrap());
        }
        "/version" => {
            *resp.body_mut() = full(format!("{:?}", req.version()));
        }
        _ => {}
    }
    resp.headers_mut().insert("x-backend", name.parse().unwrap());
    resp
}

fn upgrade_response(mut req: Request<Incoming>) -> Response<BoxBody> {
    {
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = on_upgrade.await {
                let mut io = TokioIo::new(upgraded);
                let mut buf = vec![0u8; 16 * 1024];
                // Echo raw bytes; a WebSocket client sees its own (masked) frames come back
                // unmasked only if it speaks WebSocket, so ws tests use `ws_echo_backend`.
                loop {
                    match io.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if io.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            }
        });
        let mut up = Response::new(full(Bytes::new()));
        *up.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        up.headers_mut().insert("connection", "upgrade".parse().unwrap());
        up.headers_mut().insert("upgrade", req.headers()["upgrade"].clone());
        if let Some(key) = req.headers().get("sec-websocket-key") {
            let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            up.headers_mut().insert("sec-websocket-accept", accept.parse().unwrap());
        }
        up
    }
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<http_body::Frame<Bytes>, hyper::Error>>,
) -> impl futures_util::Stream<Item = Result<http_body::Frame<Bytes>, hyper::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A plain HTTP/1.1 client (keep-alive pool).
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 prior-knowledge client.
pub fn h2_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).http2_only(true).build_http()
}

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

/// Sends `req` and reads the whole response.
pub async fn send(client: &Client<HttpConnector, Full<Bytes>>, req: Request<Full<Bytes>>) -> Reply {
    let resp = client.request(req).await.expect("request completes");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body completes").to_bytes();
    Reply { status: parts.status, headers: parts.headers, body: String::from_utf8_lossy(&body).into_owned() }
}

/// GET `url` with a fresh HTTP/1.1 client.
pub async fn get(url: &str) -> Reply {
    send(&client(), Request::get(url).body(Full::default()).unwrap()).await
}

/// GET `url` with extra headers.
pub async fn get_with(url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(&client(), req.body(Full::default()).unwrap()).await
}

/// Writes raw bytes to `addr` and reads until the peer closes or `timeout` passes.
/// Returns what was read and whether the peer closed the connection.
pub async fn raw(addr: SocketAddr, request: &[u8], timeout: Duration) -> (String, bool) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let closed = loop {
        match tokio::time::timeout(timeout, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// Status code of the first response in a raw reply (`HTTP/1.1 400 ...`).
pub fn raw_status(reply: &str) -> Option<u16> {
    reply.split_whitespace().nth(1)?.parse().ok()
}

/// The config path as a string, for error-message assertions.
pub fn display(path: &Path) -> String {
    path.display().to_string()
}
