//! gRPC through the proxy, with a real gRPC client and real gRPC servers (grpcio):
//! unary calls with trailers, error statuses, server and bidirectional streaming, over
//! h2c and over an HTTPS listener; and ALB's gRPC health checks (`protocol_version =
//! "grpc"`), passed or failed by the `grpc-status` the target answers.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::collections::HashMap;
use std::net::SocketAddr;

use support::grpc::{call, call_many, hold_many, Server};
use support::tls::{certificates_toml, Ca};
use support::{backend, load_errors, start_proxy, wait_for_state, TempDir};

/// A listener (`protocol`, with `listener_extra`) forwarding to a `grpc` group of
/// `targets`, health-checked every 100 ms.
fn grpc_config(protocol: &str, listener_extra: &str, targets: &[SocketAddr]) -> String {
    let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[listeners]]
name = "grpc"
bind = "127.0.0.1:0"
protocol = "{protocol}"
{listener_extra}
default_action = {{ forward = "api" }}

[target_groups.api]
protocol_version = "grpc"
discovery = {{ static = [{}] }}
health_check = {{ interval = "100ms", timeout = "100ms", healthy_threshold = 1 }}
"#,
        targets.join(", ")
    )
}

/// What every report of `call` must hold, whichever target answered.
fn assert_calls_came_through(report: &serde_json::Value, calls: usize) {
    let echo = report["echo"].as_array().unwrap();
    let trailers = report["trailers"].as_array().unwrap();
    assert_eq!(echo.len(), calls, "{report}");
    for (i, (reply, trailer)) in echo.iter().zip(trailers).enumerate() {
        let (server, message) = reply.as_str().unwrap().split_once(':').unwrap();
        assert_eq!(message, format!("hi{i}"), "{report}");
        // The trailing metadata arrives, and names the server that answered.
        assert_eq!(trailer.as_str(), Some(server), "{report}");
    }
    assert_eq!(
        report["fail"],
        serde_json::json!(["NOT_FOUND", "no such thing"]),
        "an error status and its message come through: {report}"
    );
    assert_eq!(
        report["count"],
        serde_json::json!(["0", "1", "2", "3", "4"])
    );
    assert_eq!(
        report["chat"],
        serde_json::json!(["ONE", "TWO", "THREE"]),
        "each message of a bidirectional stream is answered before the next is sent"
    );
}

#[tokio::test]
async fn grpc_calls_stream_through_an_h2c_listener_with_their_trailers() {
    let (a, b) = (Server::start("a", None), Server::start("b", None));
    let proxy = start_proxy(&grpc_config("http", "", &[a.addr, b.addr])).await;
    for target in [a.addr, b.addr] {
        wait_for_state(proxy.admin, "api", target, "healthy").await;
    }
    let report = call(proxy.addrs[0], 10, None).await;
    assert_calls_came_through(&report, 10);
    let mut served: HashMap<&str, usize> = HashMap::new();
    for trailer in report["trailers"].as_array().unwrap() {
        *served.entry(trailer.as_str().unwrap()).or_default() += 1;
    }
    assert_eq!(
        served,
        HashMap::from([("a", 5), ("b", 5)]),
        "calls are balanced per request, not per connection"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn grpc_calls_pass_through_an_https_listener() {
    let dir = TempDir::new();
    let ca = Ca::new("grpc test CA");
    let files = [ca.issue(&["api.test"]).write(&dir.0, "api")];
    let ca_file = ca.write(&dir.0, "ca.pem");
    let server = Server::start("a", None);
    let proxy = start_proxy(&grpc_config(
        "https",
        &certificates_toml(&files),
        &[server.addr],
    ))
    .await;
    wait_for_state(proxy.admin, "api", server.addr, "healthy").await;
    let report = call(proxy.addrs[0], 3, Some((&ca_file, "api.test"))).await;
    assert_calls_came_through(&report, 3);
    proxy.stop().await;
}

#[tokio::test]
async fn grpc_targets_behind_tls_are_reached_with_alpn_h2() {
    let dir = TempDir::new();
    let ca = Ca::new("target CA");
    let (cert, key) = ca.issue(&["127.0.0.1"]).write(&dir.0, "target");
    let ca_file = ca.write(&dir.0, "ca.pem");
    let server = Server::start("tls", Some((&cert, &key)));
    let config = grpc_config("http", "", &[server.addr]).replace(
        "protocol_version = \"grpc\"",
        &format!("protocol = \"https\"\nprotocol_version = \"grpc\"\ntls = {{ ca = {ca_file:?} }}"),
    );
    let proxy = start_proxy(&config).await;
    // The health check speaks gRPC over TLS too.
    wait_for_state(proxy.admin, "api", server.addr, "healthy").await;
    let report = call(proxy.addrs[0], 2, None).await;
    assert_calls_came_through(&report, 2);
    proxy.stop().await;
}

#[tokio::test]
async fn calls_go_on_when_a_target_keeps_closing_its_connections() {
    // gRPC servers are commonly set to close each connection after a while (a maximum
    // connection age, so that clients rebalance). Calls the proxy had queued on a
    // connection as it closed used to fail with 502 (19 and 28 of 3,000 in two runs).
    let server = Server::start_with("aging", None, &[("MAX_CONNECTION_AGE_MS", "100")]);
    let proxy = start_proxy(&grpc_config("http", "", &[server.addr])).await;
    wait_for_state(proxy.admin, "api", server.addr, "healthy").await;
    let statuses = call_many(proxy.addrs[0], 3000).await;
    assert_eq!(statuses, serde_json::json!({ "OK": 3000 }));
    proxy.stop().await;
}

#[tokio::test]
async fn streams_beyond_a_target_connections_limit_go_on_another_connection() {
    // A target allows so many streams per connection (SETTINGS_MAX_CONCURRENT_STREAMS;
    // Go's servers 250, nginx 128). Through one shared connection, long-lived streams
    // from all clients together would fill it, and later calls would wait until one
    // ended: 10 of these 30 got their first message before.
    let server = Server::start_with("a", None, &[("MAX_CONCURRENT_STREAMS", "10")]);
    let proxy = start_proxy(&grpc_config("http", "", &[server.addr])).await;
    wait_for_state(proxy.admin, "api", server.addr, "healthy").await;
    let outcomes = hold_many(proxy.addrs[0], 30).await;
    assert_eq!(outcomes, serde_json::json!({ "OK": 30 }));
    proxy.stop().await;
}

#[tokio::test]
async fn grpc_health_checks_pass_on_the_grpc_status_the_matcher_names() {
    let server = Server::start("a", None);
    let http = backend("not grpc").await;
    let group = |name: &str, target: SocketAddr, check: &str| {
        format!(
            r#"
[target_groups.{name}]
protocol_version = "grpc"
discovery = {{ static = ["{target}"] }}
health_check = {{ interval = "100ms", timeout = "100ms", healthy_threshold = 1, unhealthy_threshold = 1{check} }}
"#
        )
    };
    let config = [
        grpc_config("http", "", &[server.addr]),
        // ALB's default: /AWS.ALB/healthcheck answered UNIMPLEMENTED (12) passes.
        group("default", server.addr, ""),
        // The same call with matcher 0 (OK) fails on the 12 it gets.
        group("wants_ok", server.addr, ", matcher = \"0\""),
        // The standard health service answers OK.
        group(
            "health_service",
            server.addr,
            ", matcher = \"0\", path = \"/grpc.health.v1.Health/Check\"",
        ),
        // An HTTP server that is not a gRPC server sends no grpc-status.
        group("plain_http", http.addr, ", matcher = \"0-99\""),
    ]
    .concat();
    let proxy = start_proxy(&config).await;
    wait_for_state(proxy.admin, "default", server.addr, "healthy").await;
    wait_for_state(proxy.admin, "health_service", server.addr, "healthy").await;
    let wants_ok = wait_for_state(proxy.admin, "wants_ok", server.addr, "unhealthy").await;
    assert_eq!(
        wants_ok["reason"], "Target.ResponseCodeMismatch",
        "{wants_ok}"
    );
    let plain = wait_for_state(proxy.admin, "plain_http", http.addr, "unhealthy").await;
    assert_eq!(plain["reason"], "Target.ResponseCodeMismatch", "{plain}");
    proxy.stop().await;
}

#[tokio::test]
async fn grpc_matchers_take_grpc_codes() {
    let config = grpc_config("http", "", &["127.0.0.1:1".parse().unwrap()]).replace(
        "healthy_threshold = 1 }",
        "healthy_threshold = 1, matcher = \"200\" }",
    );
    let errors = load_errors(&config);
    assert!(
        errors.contains("target_groups.api.health_check.matcher")
            && errors.contains("gRPC codes and ranges 0-99"),
        "{errors}"
    );
}
