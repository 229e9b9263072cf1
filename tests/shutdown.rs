//! Graceful shutdown: on stop (or SIGTERM) the proxy refuses new connections, lets
//! in-flight requests finish up to `[shutdown] timeout`, then ends.
use crate::support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::*;
use tokio::net::TcpStream;

fn config(shutdown_timeout: &str, target: SocketAddr) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[shutdown]
timeout = "{shutdown_timeout}"

[[listeners]]
name = "web"
bind = "127.0.0.1:0"
default_action = {{ forward = "g" }}

[target_groups.g]
discovery = {{ static = ["{target}"] }}
"#
    )
}

/// Starts a GET of `url` in the background.
fn spawn_get(url: String) -> tokio::task::JoinHandle<Result<Reply, String>> {
    tokio::spawn(async move {
        let uri = url.parse().map_err(|e| format!("url: {e:?}"))?;
        let resp = client()
            .get(uri)
            .await
            .map_err(|e| format!("request: {e:?}"))?;
        let (parts, body) = resp.into_parts();
        let body = http_body_util::BodyExt::collect(body)
            .await
            .map_err(|e| format!("body: {e:?}"))?;
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        })
    })
}

/// Waits until `b` has received `n` requests (so they are in flight at the proxy).
async fn wait_for_hits(b: &Backend, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.hits() < n {
        assert!(
            Instant::now() < deadline,
            "the backend saw {} requests, not {n}",
            b.hits()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until connecting to `addr` is refused; returns how long that took.
async fn wait_for_refusal(addr: SocketAddr) -> Duration {
    let start = Instant::now();
    while TcpStream::connect(addr).await.is_ok() {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{addr} still accepts connections"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

#[tokio::test]
async fn graceful_shutdown_lets_a_slow_request_finish_and_refuses_new_connections() {
    let b = backend("one").await;
    let proxy = start_proxy(&config("10s", b.addr)).await;
    let slow = spawn_get(proxy.url("/slow?ms=1500"));
    wait_for_hits(&b, 1).await;

    let started = Instant::now();
    proxy.begin_stop().cancel();
    wait_for_refusal(proxy.addrs[0]).await;
    // The admin listener stays up while draining, and reports not ready.
    let ready = get(&proxy.admin_url("/ready")).await;
    assert_eq!(ready.status, 503);
    assert!(!slow.is_finished(), "the slow request ended early");

    let reply = slow
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!((reply.status.as_u16(), reply.body.as_str()), (200, "one"));
    tokio::time::timeout(Duration::from_secs(1), proxy.join())
        .await
        .expect("the proxy ends once the request has drained");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn graceful_shutdown_lets_an_http2_stream_finish() {
    let b = backend("one").await;
    let proxy = start_proxy(&config("10s", b.addr)).await;
    let h2 = h2_client();
    let req = http::Request::get(proxy.url("/slow?ms=1000"))
        .body(Default::default())
        .unwrap();
    let slow = tokio::spawn(async move { send(&h2, req).await });
    wait_for_hits(&b, 1).await;

    proxy.begin_stop().cancel();
    wait_for_refusal(proxy.addrs[0]).await;
    let reply = slow.await.expect("the in-flight stream completes");
    assert_eq!((reply.status.as_u16(), reply.body.as_str()), (200, "one"));
    tokio::time::timeout(Duration::from_secs(1), proxy.join())
        .await
        .expect("the proxy ends once the stream has drained");
}

#[tokio::test]
async fn idle_keep_alive_connections_do_not_delay_shutdown() {
    let b = backend("one").await;
    let proxy = start_proxy(&config("10s", b.addr)).await;
    // The client keeps its connection open in its pool after the response.
    let client = client();
    let r = send(
        &client,
        http::Request::get(proxy.url("/"))
            .body(Default::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);

    let started = Instant::now();
    proxy.begin_stop().cancel();
    tokio::time::timeout(Duration::from_secs(1), proxy.join())
        .await
        .expect("an idle connection is closed at once, not drained for the timeout");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    drop(client);
}

#[tokio::test]
async fn shutdown_timeout_cuts_off_a_request_that_outlasts_it() {
    let b = backend("one").await;
    let proxy = start_proxy(&config("300ms", b.addr)).await;
    let slow = spawn_get(proxy.url("/slow?ms=5000"));
    wait_for_hits(&b, 1).await;

    let started = Instant::now();
    proxy.begin_stop().cancel();
    tokio::time::timeout(Duration::from_secs(1), proxy.join())
        .await
        .expect("the proxy ends within about the shutdown timeout");
    let stopped = started.elapsed();
    assert!(
        stopped >= Duration::from_millis(250),
        "ended after {stopped:?}, before the timeout"
    );

    // Once the proxy has ended, its connections are gone: the client sees the
    // connection close, not a response after 5 s.
    let outcome = tokio::time::timeout(Duration::from_secs(1), slow)
        .await
        .expect("the cut-off request ends with the proxy, not when the target answers")
        .unwrap();
    assert!(outcome.is_err(), "the request was not cut off: {outcome:?}");
}

/// A config for the binary forwarding to `target`.
fn shutdown_config(
    addr: SocketAddr,
    admin: SocketAddr,
    target: SocketAddr,
    shutdown_timeout: &str,
) -> String {
    let tables = format!("[shutdown]\ntimeout = \"{shutdown_timeout}\"\n");
    binary_config(addr, admin, target, &tables)
}

#[tokio::test]
async fn sigterm_drains_an_in_flight_request_and_the_binary_exits_zero() {
    let b = backend("one").await;
    let mut ecslb = start_binary(|addr, admin| shutdown_config(addr, admin, b.addr, "10s")).await;
    let slow = spawn_get(ecslb.url("/slow?ms=1500"));
    wait_for_hits(&b, 1).await;

    ecslb.signal("TERM");
    wait_for_refusal(ecslb.addr).await;
    let reply = slow
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!((reply.status.as_u16(), reply.body.as_str()), (200, "one"));
    let status = ecslb
        .wait_exit(Duration::from_secs(2))
        .await
        .expect("ecslb exits once drained");
    assert!(status.success(), "{status}; log:\n{}", ecslb.log());
}

#[tokio::test]
async fn sigterm_with_nothing_in_flight_exits_at_once() {
    let b = backend("one").await;
    let mut ecslb = start_binary(|addr, admin| shutdown_config(addr, admin, b.addr, "10s")).await;
    assert_eq!(get(&ecslb.url("/")).await.body, "one");
    let started = Instant::now();
    ecslb.signal("TERM");
    let status = ecslb
        .wait_exit(Duration::from_secs(2))
        .await
        .expect("ecslb exits");
    assert!(status.success(), "{status}; log:\n{}", ecslb.log());
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn sigterm_cuts_off_a_request_that_outlasts_the_shutdown_timeout() {
    let b = backend("one").await;
    let mut ecslb = start_binary(|addr, admin| shutdown_config(addr, admin, b.addr, "300ms")).await;
    let slow = spawn_get(ecslb.url("/slow?ms=5000"));
    wait_for_hits(&b, 1).await;

    let started = Instant::now();
    ecslb.signal("TERM");
    let status = ecslb
        .wait_exit(Duration::from_secs(1))
        .await
        .expect("ecslb exits within about the timeout");
    assert!(status.success(), "{status}; log:\n{}", ecslb.log());
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "exited after {:?}",
        started.elapsed()
    );
    let outcome = tokio::time::timeout(Duration::from_secs(1), slow)
        .await
        .expect("the cut-off request ends with the process")
        .unwrap();
    assert!(outcome.is_err(), "the request was not cut off: {outcome:?}");
    assert!(
        ecslb.log().contains("shutdown timeout reached"),
        "{}",
        ecslb.log()
    );
}

#[tokio::test]
async fn a_reloaded_shutdown_timeout_applies_to_the_next_shutdown() {
    let b = backend("one").await;
    let proxy = start_proxy(&config("30s", b.addr)).await;
    // Serving (so the proxy has started under the first config).
    assert_eq!(get(&proxy.url("/")).await.status, 200);
    proxy.write_config(&config("300ms", b.addr));
    proxy.reloader.reload().unwrap();
    assert_eq!(
        proxy.reloader.config().shutdown_timeout,
        Duration::from_millis(300)
    );
    let _slow = spawn_get(proxy.url("/slow?ms=5000"));
    wait_for_hits(&b, 2).await;

    proxy.begin_stop().cancel();
    tokio::time::timeout(Duration::from_secs(1), proxy.join())
        .await
        .expect("the proxy ends within about the reloaded timeout, not the first one");
}

/// Logs go to stderr. When whatever reads it goes away (a log collector restarting,
/// `ecslb run ... | head`), every log write fails with EPIPE: the proxy must keep
/// serving, and SIGTERM must still drain and exit 0.
#[tokio::test]
async fn with_stderr_closed_the_binary_still_serves_and_exits_on_sigterm() {
    let b = backend("one").await;
    let dir = TempDir::new();
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config_path = dir.0.join("ecslb.toml");
    std::fs::write(&config_path, shutdown_config(addr, admin, b.addr, "10s")).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ecslb"))
        .args(["run", "-c"])
        .arg(&config_path)
        .env("ECSLB_LOG", "debug") // a log line for every request
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take()); // the reader is gone: writes to stderr now fail

    let url = format!("http://{addr}/");
    eventually("the proxy answers", async || {
        try_get(&url).await.is_some_and(|r| r.body == "one")
    })
    .await;
    for _ in 0..20 {
        assert_eq!(get(&url).await.body, "one");
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "ecslb exited: {:?}",
        child.try_wait()
    );

    signal_child(&child, "TERM");
    let exit = wait_child_exit(&mut child, Duration::from_secs(5)).await;
    if exit.is_none() {
        let _ = child.kill(); // our own child, by its pid
        let _ = child.wait();
    }
    let exit = exit.expect("ecslb exits within 5 s of SIGTERM");
    assert!(exit.success(), "{exit}");
}
