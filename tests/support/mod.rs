//! Test kit: start ecslb on `127.0.0.1:0` from a TOML string, real backends on 127.0.0.x
//! that count their hits, and small clients (hyper, raw TCP).
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

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
    let app = ecslb::app::App::bind(&config_path)
        .await
        .expect("config starts");
    let addrs = app.listener_addrs();
    let admin = app.admin_addr().unwrap();
    let reloader = app.reloader();
    let stop = CancellationToken::new();
    let task = tokio::spawn(app.run(stop.clone()));
    Proxy {
        addrs,
        admin,
        config_path,
        reloader,
        stop,
        task,
        _dir: dir,
    }
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
/// in 64 KiB chunks; `/drip?chunks=N&ms=M` → N lines `tick`, one every M ms;
/// `/slow?ms=N` → waits N ms, then answers; `/status?code=N` → that
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
    serve_backend_with(listener, name, None)
}

/// Serves the backend on `listener`, behind a TLS handshake when `tls` is given.
pub fn serve_backend_with(
    listener: TcpListener,
    name: &str,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> Backend {
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let last_headers = Arc::new(std::sync::Mutex::new(HeaderMap::new()));
    let stop = CancellationToken::new();
    let (name_c, hits_c, last_c, stop_c) = (
        name.to_owned(),
        hits.clone(),
        last_headers.clone(),
        stop.clone(),
    );
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                r = listener.accept() => match r { Ok(r) => r, Err(_) => continue },
                () = stop_c.cancelled() => return,
            };
            let (name, hits, last) = (name_c.clone(), hits_c.clone(), last_c.clone());
            let stop = stop_c.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let (name, hits, last) = (name.clone(), hits.clone(), last.clone());
                    async move { Ok::<_, Infallible>(backend_response(&name, &hits, &last, req).await) }
                });
                let io: Box<dyn Io> = match tls {
                    None => Box::new(stream),
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(stream) => Box::new(stream),
                        Err(_) => return,
                    },
                };
                let builder = auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
                tokio::select! {
                    _ = conn => {}
                    () = stop.cancelled() => {}
                }
            });
        }
    });
    Backend {
        addr,
        name: name.to_owned(),
        hits,
        last_headers,
        stop,
    }
}

/// A backend's client connection: plain TCP or TLS over it.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

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
            let (tx, rx) =
                tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, hyper::Error>>(4);
            tokio::spawn(async move {
                let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
                let mut left = n;
                while left > 0 {
                    let len = left.min(chunk.len());
                    if tx
                        .send(Ok(http_body::Frame::data(chunk.slice(..len))))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    left -= len;
                }
            });
            let stream = http_body_util::StreamBody::new(tokio_stream_from(rx));
            *resp.body_mut() = stream.boxed();
        }
        "/drip" => {
            let chunks: usize = q.get("chunks").and_then(|n| n.parse().ok()).unwrap_or(5);
            let ms: u64 = q.get("ms").and_then(|n| n.parse().ok()).unwrap_or(100);
            let (tx, rx) =
                tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, hyper::Error>>(1);
            tokio::spawn(async move {
                for _ in 0..chunks {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    let tick = http_body::Frame::data(Bytes::from_static(b"tick\n"));
                    if tx.send(Ok(tick)).await.is_err() {
                        return;
                    }
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
            resp.headers_mut()
                .insert("set-cookie", format!("{cookie}=1; Path=/").parse().unwrap());
        }
        "/unique" => {
            // A header value no other response has (as a request id would be).
            let n = hits.load(Ordering::SeqCst);
            resp.headers_mut()
                .insert("x-request-id", format!("{n:032x}").parse().unwrap());
        }
        "/version" => {
            // HTTP/2 requests carry their scheme and host as `:scheme` and
            // `:authority`, in the URI.
            let authority = req.uri().authority().map_or("", |a| a.as_str());
            let scheme = req
                .uri()
                .scheme_str()
                .map_or(String::new(), |s| format!("{s}://"));
            *resp.body_mut() = full(format!("{:?} {scheme}{authority}", req.version()));
        }
        _ => {}
    }
    resp.headers_mut()
        .insert("x-backend", name.parse().unwrap());
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
        up.headers_mut()
            .insert("connection", "upgrade".parse().unwrap());
        up.headers_mut()
            .insert("upgrade", req.headers()["upgrade"].clone());
        if let Some(key) = req.headers().get("sec-websocket-key") {
            let accept =
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            up.headers_mut()
                .insert("sec-websocket-accept", accept.parse().unwrap());
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
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
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
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
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

/// GET `url` with a fresh client, or `None` if the request fails (for polling).
pub async fn try_get(url: &str) -> Option<Reply> {
    let resp = client().get(url.parse().ok()?).await.ok()?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.ok()?.to_bytes();
    Some(Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// POST an empty body to `url` with a fresh client.
pub async fn post(url: &str) -> Reply {
    let req = Request::post(url)
        .body(Full::default())
        .expect("a valid request");
    send(&client(), req).await
}

/// The value of one series (name and labels, as printed) in a /metrics text.
pub fn sample<T: std::str::FromStr>(text: &str, series: &str) -> Option<T> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// A port on 127.0.0.1 that was free a moment ago: bound, then released, so another
/// process may take it first ([`start_binary`] retries when that happens).
pub fn free_port() -> u16 {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    socket.local_addr().expect("a bound address").port()
}

/// The errors `Config::load` reports for `toml` written to a file `ecslb.toml`, one
/// per line; panics if it loads.
pub fn load_errors(toml: &str) -> String {
    let dir = TempDir::new();
    let path = dir.0.join("ecslb.toml");
    std::fs::write(&path, toml).expect("the config is written");
    match ecslb::config::Config::load(&path) {
        Ok(_) => panic!("the config loaded:\n{toml}"),
        Err(e) => e.to_string(),
    }
}

/// Finds the program `name` on `PATH` or in `/usr/sbin` or `/usr/bin`; panics saying
/// which Debian package to install (`scripts/test.sh` installs them) if it is absent.
pub fn binary(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` not found on PATH, in /usr/sbin or in /usr/bin: install Debian's \
                 `{package}` package (`apt-get install -y {package}`; scripts/test.sh does)"
            )
        })
}

/// The `ecslb` binary running `ecslb run -c FILE`; killed on drop if still running.
pub struct Binary {
    /// Address of the first listener.
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub config_path: PathBuf,
    log_path: PathBuf,
    child: std::process::Child,
    _dir: TempDir,
}

/// Starts the `ecslb` binary on the config `config(listener, admin)` with free ports
/// and waits until it has bound both and `/ready` answers 200. A config with fixed
/// ports cannot be given `:0`, so a port taken between picking and binding makes the
/// binary exit: then it is started again on other ports.
pub async fn start_binary(config: impl Fn(SocketAddr, SocketAddr) -> String) -> Binary {
    start_binary_with_env(config, &[]).await
}

/// [`start_binary`] with extra environment variables for the child (e.g. the AWS
/// endpoint of an emulator: the environment of the test process is shared by tests).
pub async fn start_binary_with_env(
    config: impl Fn(SocketAddr, SocketAddr) -> String,
    env: &[(&str, String)],
) -> Binary {
    spawn_binary(config, env, None).await
}

/// [`start_binary`] with the soft limit on open files set to `soft_nofile` (the hard
/// limit stays), as systemd starts services with 1024.
pub async fn start_binary_with_open_files(
    config: impl Fn(SocketAddr, SocketAddr) -> String,
    soft_nofile: u32,
) -> Binary {
    spawn_binary(config, &[], Some(soft_nofile)).await
}

async fn spawn_binary(
    config: impl Fn(SocketAddr, SocketAddr) -> String,
    env: &[(&str, String)],
    soft_nofile: Option<u32>,
) -> Binary {
    let mut log = String::new();
    for _ in 0..3 {
        let dir = TempDir::new();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config_path = dir.0.join("ecslb.toml");
        std::fs::write(&config_path, config(addr, admin)).expect("the config is written");
        let log_path = dir.0.join("ecslb.log");
        let mut command = match soft_nofile {
            None => std::process::Command::new(env!("CARGO_BIN_EXE_ecslb")),
            Some(n) => {
                let mut sh = std::process::Command::new("sh");
                sh.args(["-c", &format!("ulimit -Sn {n} && exec \"$0\" \"$@\"")])
                    .arg(env!("CARGO_BIN_EXE_ecslb"));
                sh
            }
        };
        command.arg("run");
        // Two workers unless the test sets ECSLB_WORKERS (an argument would override it).
        if !env.iter().any(|(k, _)| *k == "ECSLB_WORKERS") {
            command.args(["--workers", "2"]);
        }
        let child = command
            .arg("-c")
            .arg(&config_path)
            .env("ECSLB_LOG", "info,ecslb::proxy=debug")
            .env("ECSLB_LOG_FORMAT", "human")
            .env("NO_COLOR", "1")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log_path).expect("the log file is created"))
            .spawn()
            .expect("the ecslb binary starts");
        let mut binary = Binary {
            addr,
            admin,
            config_path,
            log_path,
            child,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = binary.child.try_wait() {
                break; // exited: a port was taken
            }
            // "ecslb started" is logged once both sockets are bound: only then is a 200
            // from the admin port ours and not another process's.
            if binary.log().contains("ecslb started") {
                if let Some(r) = try_get(&binary.admin_url("/ready")).await {
                    if r.status == StatusCode::OK {
                        return binary;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        log = binary.log();
    }
    panic!("the ecslb binary did not become ready; its log:\n{log}");
}

impl Binary {
    /// `http://<first listener><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `http://<admin><path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Rewrites the config file (the next SIGHUP reads it).
    pub fn write_config(&self, toml: &str) {
        std::fs::write(&self.config_path, toml).expect("the config is written");
    }

    /// Sends a signal by name (`"HUP"`, `"TERM"`) with `kill`.
    pub fn signal(&self, name: &str) {
        signal_child(&self.child, name);
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        wait_child_exit(&mut self.child, timeout).await
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process has logged so far (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

/// Sends `child` a signal by name (`"HUP"`, `"TERM"`) with `kill`.
pub fn signal_child(child: &std::process::Child, name: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {} failed", child.id());
}

/// Waits up to `timeout` for `child` to exit; `None` if it is still running.
pub async fn wait_child_exit(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("the child can be waited on") {
            return Some(status);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill(); // our own child, by its pid
            let _ = self.child.wait();
        }
    }
}

/// A WebSocket echo backend on 127.0.0.1: answers a valid WebSocket upgrade with 101,
/// then echoes every text and binary message until the client closes. Each upgrade
/// request counts as a hit; anything else gets 400.
pub async fn ws_echo_backend(name: &str) -> Backend {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let last_headers = Arc::new(std::sync::Mutex::new(HeaderMap::new()));
    let stop = CancellationToken::new();
    let (hits_c, last_c, stop_c) = (hits.clone(), last_headers.clone(), stop.clone());
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                r = listener.accept() => match r { Ok(r) => r, Err(_) => continue },
                () = stop_c.cancelled() => return,
            };
            let (hits, last, stop) = (hits_c.clone(), last_c.clone(), stop_c.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let (hits, last) = (hits.clone(), last.clone());
                    async move { Ok::<_, Infallible>(ws_accept(&hits, &last, req)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades();
                tokio::select! {
                    _ = conn => {}
                    () = stop.cancelled() => {}
                }
            });
        }
    });
    Backend {
        addr,
        name: name.to_owned(),
        hits,
        last_headers,
        stop,
    }
}

fn ws_accept(
    hits: &AtomicUsize,
    last: &std::sync::Mutex<HeaderMap>,
    mut req: Request<Incoming>,
) -> Response<BoxBody> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::WebSocketStream;

    hits.fetch_add(1, Ordering::SeqCst);
    *last.lock().unwrap() = req.headers().clone();
    let is_websocket = req
        .headers()
        .get("upgrade")
        .is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let Some(key) = req
        .headers()
        .get("sec-websocket-key")
        .filter(|_| is_websocket)
        .cloned()
    else {
        let mut resp = Response::new(full("not a websocket upgrade"));
        *resp.status_mut() = StatusCode::BAD_REQUEST;
        return resp;
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                break;
            }
        }
    });
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = resp.headers_mut();
    headers.insert("connection", "upgrade".parse().unwrap());
    headers.insert("upgrade", "websocket".parse().unwrap());
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    headers.insert("sec-websocket-accept", accept.parse().unwrap());
    resp
}

/// One HTTP/1.1 response read off a raw socket, plus whether the peer then closed.
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    /// Header names lowercased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The peer closed (or reset) the connection after the response, within 300 ms.
    pub closed: bool,
}

impl RawReply {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Writes `request` on a fresh connection to `addr` and reads one response (framed by
/// Content-Length, chunked, or the close), then waits up to 300 ms for the peer to close.
/// Panics if no response head arrives within 5 s.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> RawReply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    raw_exchange_on(&mut stream, request).await
}

/// [`raw_exchange`] on an existing connection.
pub async fn raw_exchange_on(stream: &mut TcpStream, request: &[u8]) -> RawReply {
    // The peer may answer and close before reading everything (a blocked request):
    // a failed write is not an error here, the reply is what matters.
    let _ = stream.write_all(request).await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut eof = false;
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => panic!(
                "connection ended before a response head: {:?}",
                String::from_utf8_lossy(&buf)
            ),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => panic!(
                "no response head within 5s: {:?}",
                String::from_utf8_lossy(&buf)
            ),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(raw_status).expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = buf[head_end..].to_vec();
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let done = |body: &[u8]| -> bool {
        if let Some(len) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
            body.len() >= len
        } else if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            body.starts_with(b"0\r\n\r\n") || body.ends_with(b"\r\n0\r\n\r\n")
        } else {
            // 1xx/204/304 have no body; anything else without framing ends at the close.
            status < 200 || status == 204 || status == 304
        }
    };
    while !done(&body) {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                eof = true;
                break;
            }
            Ok(Ok(n)) => body.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("response body incomplete after 5s"),
        }
    }
    if let Some(len) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.truncate(len);
    } else if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        body = dechunk(&body);
    }
    let closed = eof
        || match tokio::time::timeout(Duration::from_millis(300), stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(_)) | Err(_) => false,
        };
    RawReply {
        status,
        headers,
        body,
        closed,
    }
}

/// Resident set size of this process in bytes (`VmRSS` in /proc/self/status).
pub fn rss_bytes() -> u64 {
    rss_bytes_of("self")
}

/// Resident set size of process `pid` (a number, or `self`) in bytes.
pub fn rss_bytes_of(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kb * 1024
}

/// The TOML for [`start_binary`]: listener `web` on `addr` forwarding to group `g`
/// at `target`, the admin listener on `admin`; `tables` (e.g. `[access_log]`) first.
pub fn binary_config(
    addr: SocketAddr,
    admin: SocketAddr,
    target: SocketAddr,
    tables: &str,
) -> String {
    format!(
        r#"{tables}
[admin]
listen = "{admin}"

[[listeners]]
name = "web"
bind = "{addr}"
default_action = {{ forward = "g" }}

[target_groups.g]
discovery = {{ static = ["{target}"] }}
"#
    )
}

/// The TOML of one HTTP listener (`listener_extra` lines go under it) forwarding to
/// group `g` at `targets` (`group_extra` lines go under the group).
pub fn one_group_config(targets: &[SocketAddr], listener_extra: &str, group_extra: &str) -> String {
    let targets: Vec<String> = targets.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[listeners]]
name = "web"
bind = "127.0.0.1:0"
default_action = {{ forward = "g" }}
{listener_extra}

[target_groups.g]
discovery = {{ static = [{}] }}
{group_extra}
"#,
        targets.join(", ")
    )
}

/// The payload of a complete chunked body (extensions and trailers ignored).
pub fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&raw[..eol]);
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .expect("chunk size");
        if size == 0 {
            break;
        }
        let data = &raw[eol + 2..];
        out.extend_from_slice(&data[..size]);
        raw = &data[size + 2..];
    }
    out
}

/// The in-flight count of every target (`"ip:port"` → count), from `GET /v1/targets`
/// on the admin listener at `admin`.
pub async fn in_flight(admin: SocketAddr) -> HashMap<String, u64> {
    let r = get(&format!("http://{admin}/v1/targets")).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let json: serde_json::Value = serde_json::from_str(&r.body).expect("/v1/targets is JSON");
    let groups = json["target_groups"]
        .as_array()
        .expect("target_groups is a list");
    groups
        .iter()
        .flat_map(|g| g["targets"].as_array().expect("targets is a list"))
        .map(|t| {
            let addr = t["target"].as_str().expect("target is a string");
            (
                addr.to_owned(),
                t["in_flight"].as_u64().expect("in_flight is a number"),
            )
        })
        .collect()
}

/// Polls `done` every 10 ms until it holds; panics naming `what` after 5 s.
pub async fn eventually(what: &str, done: impl AsyncFnMut() -> bool) {
    eventually_within(Duration::from_secs(5), what, done).await;
}

/// [`eventually`], panicking after `limit`.
pub async fn eventually_within(limit: Duration, what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A TCP state as `/proc/net/tcp` numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpState {
    Established = 0x01,
    /// The peer closed; this side has not yet.
    CloseWait = 0x08,
}

/// How many IPv4 sockets of this network namespace (the tests' and the proxy's) are
/// connected to `remote` in `state`, from `/proc/net/tcp`.
pub fn sockets_to(remote: SocketAddr, state: TcpState) -> usize {
    let SocketAddr::V4(remote) = remote else {
        panic!("{remote} is not IPv4");
    };
    // The address as the kernel prints it: the in-memory u32 (network order) in hex,
    // then the port.
    let wanted = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(remote.ip().octets()),
        remote.port()
    );
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp is readable");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(2) == Some(&wanted.as_str())
                && fields.get(3).and_then(|s| u8::from_str_radix(s, 16).ok()) == Some(state as u8)
        })
        .count()
}

/// One health check as a [`HealthBackend`] saw it.
#[derive(Debug, Clone)]
pub struct ProbeSeen {
    pub at: std::time::Instant,
    /// The status the endpoint answered with.
    pub status: u16,
    pub path: String,
    pub headers: HeaderMap,
}

/// The health endpoint of a [`HealthBackend`]: its answer can be changed at runtime,
/// and it records every probe and how many were in flight at once.
#[derive(Debug)]
struct HealthEndpoint {
    status: std::sync::atomic::AtomicU16,
    delay_ms: std::sync::atomic::AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    probes: std::sync::Mutex<Vec<ProbeSeen>>,
}

/// A backend with a health endpoint whose status and latency can be changed at runtime.
///
/// Made by [`health_backend_on`] (`/health` is the health endpoint, every other path is
/// answered as by [`Backend`], and only those count as hits) or [`health_endpoint_on`]
/// (every path is the health endpoint: a health check port apart from the traffic port).
pub struct HealthBackend {
    pub addr: SocketAddr,
    pub name: String,
    hits: Arc<AtomicUsize>,
    health: Arc<HealthEndpoint>,
    stop: CancellationToken,
}

impl HealthBackend {
    /// Requests other than health checks.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Makes the health endpoint answer `status` from the next probe on.
    pub fn set_health_status(&self, status: u16) {
        self.health.status.store(status, Ordering::SeqCst);
    }

    /// Makes the health endpoint wait `delay` before answering, from the next probe on.
    pub fn set_health_delay(&self, delay: Duration) {
        self.health
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Every probe received so far, in arrival order.
    pub fn probes(&self) -> Vec<ProbeSeen> {
        self.health.probes.lock().unwrap().clone()
    }

    /// Probes received so far.
    pub fn probe_count(&self) -> usize {
        self.health.probes.lock().unwrap().len()
    }

    /// Probes answered with `status` so far.
    pub fn probes_answered(&self, status: u16) -> usize {
        let probes = self.health.probes.lock().unwrap();
        probes.iter().filter(|p| p.status == status).count()
    }

    /// The most probes the endpoint was answering at the same time.
    pub fn max_concurrent_probes(&self) -> usize {
        self.health.max_in_flight.load(Ordering::SeqCst)
    }

    /// Stops accepting connections and closes the open ones (the port then refuses).
    pub fn close(&self) {
        self.stop.cancel();
    }
}

impl Drop for HealthBackend {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Starts a [`HealthBackend`] on `ip:0` whose `/health` answers 200 until told otherwise.
pub async fn health_backend_on(ip: &str, name: &str) -> HealthBackend {
    serve_health_backend(ip, name, false).await
}

/// Starts a health endpoint alone on `ip:0`: every request is a probe (answered 200
/// until told otherwise), so its port can serve as a group's health check `port`.
pub async fn health_endpoint_on(ip: &str) -> HealthBackend {
    serve_health_backend(ip, "health", true).await
}

async fn serve_health_backend(ip: &str, name: &str, probes_only: bool) -> HealthBackend {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let health = Arc::new(HealthEndpoint {
        status: std::sync::atomic::AtomicU16::new(200),
        delay_ms: std::sync::atomic::AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        max_in_flight: AtomicUsize::new(0),
        probes: std::sync::Mutex::new(Vec::new()),
    });
    let stop = CancellationToken::new();
    let (name_c, hits_c, health_c, stop_c) =
        (name.to_owned(), hits.clone(), health.clone(), stop.clone());
    tokio::spawn(async move {
        let last = Arc::new(std::sync::Mutex::new(HeaderMap::new()));
        loop {
            let (stream, _) = tokio::select! {
                r = listener.accept() => match r { Ok(r) => r, Err(_) => continue },
                () = stop_c.cancelled() => return,
            };
            let (name, hits, health, last) = (
                name_c.clone(),
                hits_c.clone(),
                health_c.clone(),
                last.clone(),
            );
            let stop = stop_c.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let (name, hits, health, last) =
                        (name.clone(), hits.clone(), health.clone(), last.clone());
                    async move {
                        let resp = if probes_only || req.uri().path() == "/health" {
                            health_response(&health, req).await
                        } else {
                            backend_response(&name, &hits, &last, req).await
                        };
                        Ok::<_, Infallible>(resp)
                    }
                });
                let builder = auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    _ = conn => {}
                    () = stop.cancelled() => {}
                }
            });
        }
    });
    HealthBackend {
        addr,
        name: name.to_owned(),
        hits,
        health,
        stop,
    }
}

/// Counts a probe out of the endpoint's in-flight count when its handler ends, also
/// when the prober gives up and the handler is dropped.
struct ProbeInFlight<'a>(&'a AtomicUsize);

impl Drop for ProbeInFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn health_response(health: &HealthEndpoint, req: Request<Incoming>) -> Response<BoxBody> {
    let status = health.status.load(Ordering::SeqCst);
    health.probes.lock().unwrap().push(ProbeSeen {
        at: std::time::Instant::now(),
        status,
        path: req.uri().path().to_owned(),
        headers: req.headers().clone(),
    });
    let now = health.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let _in_flight = ProbeInFlight(&health.in_flight);
    health.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let delay = health.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let mut resp = Response::new(full("health"));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap();
    resp
}

/// A TCP listener that accepts connections and closes them at once (a target for TCP
/// health checks); [`TcpTarget::close`] stops it, and the port then refuses.
pub struct TcpTarget {
    pub addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl TcpTarget {
    /// Connections accepted so far.
    pub fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    /// Closes the listening socket.
    pub fn close(&self) {
        self.stop.cancel();
    }
}

impl Drop for TcpTarget {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Starts a [`TcpTarget`] on `ip:0`.
pub async fn tcp_target_on(ip: &str) -> TcpTarget {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepts = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let (accepts_c, stop_c) = (accepts.clone(), stop.clone());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                r = listener.accept() => if r.is_ok() {
                    accepts_c.fetch_add(1, Ordering::SeqCst);
                },
                // Returning drops the listener: the port refuses from then on.
                () = stop_c.cancelled() => return,
            }
        }
    });
    TcpTarget {
        addr,
        accepts,
        stop,
    }
}

/// Group `group` of `GET /v1/targets` on the admin listener at `admin`.
pub async fn group_status(admin: SocketAddr, group: &str) -> serde_json::Value {
    let r = get(&format!("http://{admin}/v1/targets")).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let json: serde_json::Value = serde_json::from_str(&r.body).expect("/v1/targets is JSON");
    json["target_groups"]
        .as_array()
        .expect("target_groups is a list")
        .iter()
        .find(|g| g["name"] == group)
        .unwrap_or_else(|| panic!("no target group {group:?} in {json}"))
        .clone()
}

/// The `/v1/targets` entry of target `addr` in group `group`; `None` once it is no
/// longer a member.
pub async fn target_status(
    admin: SocketAddr,
    group: &str,
    addr: SocketAddr,
) -> Option<serde_json::Value> {
    let group = group_status(admin, group).await;
    let targets = group["targets"].as_array().expect("targets is a list");
    targets
        .iter()
        .find(|t| t["target"] == addr.to_string().as_str())
        .cloned()
}

/// Polls the entry of `addr` in `group` until its `state` is `state`, and returns it;
/// panics after 5 s with the last entry seen.
pub async fn wait_for_state(
    admin: SocketAddr,
    group: &str,
    addr: SocketAddr,
    state: &str,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let t = target_status(admin, group, addr).await;
        if let Some(t) = t.as_ref().filter(|t| t["state"] == state) {
            return t.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{addr} did not turn {state} within 5s; last seen: {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
pub mod grpc;
pub mod moto;
pub mod nginx;
pub mod prometheus;
pub mod tls;

/// Whether `curl` can be run here.
pub fn curl_installed() -> bool {
    std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok()
}

/// Runs `curl -sS --max-time 10 ARGS`; panics unless it succeeds. Returns its output.
pub async fn curl(args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10"])
            .args(args)
            .output()
    })
    .await
    .expect("the curl task")
    .expect("curl runs");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sends `messages` over `ws`, expects each echoed back in order (5 s each), then
/// closes it.
pub async fn echo_over<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    messages: &[tokio_tungstenite::tungstenite::Message],
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::{SinkExt, StreamExt};
    for msg in messages {
        ws.send(msg.clone()).await.expect("a message is sent");
    }
    for want in messages {
        let got = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("echo in time")
            .expect("the connection stays open")
            .expect("a message");
        assert_eq!(&got, want);
    }
    ws.close(None).await.expect("the close is sent");
}
