//! nginx (Debian's package, the server most often behind a load balancer) as a target,
//! over HTTP/1.1 and over HTTP/2 (h2c): health-checked in the group's protocol version
//! (or the check's own, for a health port beside the traffic port), and answering what
//! clients of either version send through the proxy.
#![allow(clippy::unwrap_used)]

use crate::support;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use support::nginx::start_nginx;
use support::{
    backend, eventually_within, get_with, h2_client, load_errors, one_group_config, send,
    sockets_to, start_proxy, wait_for_state, TcpState,
};

/// A listener forwarding to group `g` of one target, `protocol_version = version`,
/// health-checked on `/health` every 100 ms.
fn config(target: std::net::SocketAddr, version: &str) -> String {
    one_group_config(
        &[target],
        "",
        &format!(
            "protocol_version = \"{version}\"\n\
             health_check = {{ path = \"/health\", interval = \"100ms\", timeout = \"100ms\", healthy_threshold = 1 }}"
        ),
    )
}

#[tokio::test]
async fn nginx_targets_are_checked_and_reached_over_http1_and_http2() {
    // nginx's clear-text HTTP/2 port speaks nothing but HTTP/2 (prior knowledge): an
    // HTTP/1.1 health check fails there. And nginx answers 400 ("client sent duplicate
    // host header") to an HTTP/2 request carrying a Host field besides `:authority`.
    for (listen, version, protocol) in [("", "http1", "HTTP/1.1"), (" http2", "http2", "HTTP/2.0")]
    {
        let nginx = start_nginx(&format!(
            r#"server {{
                listen @ADDR@{listen};
                location = /health {{ return 200 "ok\n"; }}
                location / {{ return 200 "$server_protocol $host $request_uri\n"; }}
            }}"#
        ))
        .await;
        let proxy = start_proxy(&config(nginx.addr, version)).await;
        wait_for_state(proxy.admin, "g", nginx.addr, "healthy").await;

        let r = get_with(&proxy.url("/a/b?c=1"), &[("host", "app.example")]).await;
        assert_eq!(
            (r.status.as_u16(), r.body.as_str()),
            (200, format!("{protocol} app.example /a/b?c=1\n").as_str()),
            "an HTTP/1.1 client, {version} target; nginx's log:\n{}",
            nginx.log()
        );
        let r = send(
            &h2_client(),
            Request::get(proxy.url("/h2"))
                .body(Default::default())
                .unwrap(),
        )
        .await;
        assert_eq!(
            (r.status.as_u16(), r.body.as_str()),
            (
                200,
                format!("{protocol} {} /h2\n", proxy.addrs[0].ip()).as_str()
            ),
            "an HTTP/2 client, {version} target; nginx's log:\n{}",
            nginx.log()
        );
        proxy.stop().await;
    }
}

#[tokio::test]
async fn a_check_may_speak_http1_to_a_health_port_beside_an_http2_one() {
    // A common layout: the traffic port speaks HTTP/2 only, and a management port
    // answers health checks over HTTP/1.1.
    let health =
        start_nginx(r#"server { listen @ADDR@; location = /health { return 200 "ok\n"; } }"#).await;
    let app = start_nginx(
        r#"server { listen @ADDR@ http2; location / { return 200 "$server_protocol\n"; } }"#,
    )
    .await;
    let port = health.addr.port();
    let proxy = start_proxy(&config(app.addr, "http2").replace(
        "healthy_threshold = 1 }",
        &format!("healthy_threshold = 1, port = {port}, protocol_version = \"http1\" }}"),
    ))
    .await;
    wait_for_state(proxy.admin, "g", app.addr, "healthy").await;
    let r = get_with(&proxy.url("/"), &[]).await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "HTTP/2.0\n"));
    proxy.stop().await;
}

#[test]
fn a_checks_protocol_version_is_one_of_the_groups() {
    let config = config("127.0.0.1:1".parse().unwrap(), "http2").replace(
        "healthy_threshold = 1 }",
        "healthy_threshold = 1, protocol_version = \"h3\" }",
    );
    let errors = load_errors(&config);
    assert!(
        errors.contains("ecslb.toml:14: target_groups.g.health_check.protocol_version")
            && errors.contains("unknown value \"h3\"; expected one of http1, http2, grpc"),
        "{errors}"
    );
}

#[tokio::test]
async fn requests_nginx_left_unprocessed_when_closing_a_connection_go_out_again() {
    // nginx closes an HTTP/2 connection after `keepalive_requests` streams (1000 by
    // default) with a GOAWAY; the streams it had not started by then are not processed.
    // Each of them, with or without a body, whatever its method, must go out again on
    // another connection, and its body arrive whole. Before, every such request got 502
    // (about 4 % of POSTs with nginx's default and 10 requests in flight).
    let echo = backend("echo").await;
    let nginx = start_nginx(&format!(
        r#"keepalive_requests 10;
        server {{
            listen @ADDR@ http2;
            location = /health {{ return 200 "ok\n"; }}
            location / {{ proxy_pass http://{}; }}
        }}"#,
        echo.addr
    ))
    .await;
    let proxy = start_proxy(&config(nginx.addr, "http2")).await;
    wait_for_state(proxy.admin, "g", nginx.addr, "healthy").await;

    // 8 clients of one HTTP/2 connection, 25 requests each: more in flight than nginx
    // processes on a connection is not needed, only some in flight at each GOAWAY.
    let client = h2_client();
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..8usize {
        let (client, url) = (client.clone(), proxy.url("/echo-body"));
        clients.spawn(async move {
            let mut failed = Vec::new();
            for r in 0..25usize {
                let i = c * 25 + r;
                let (method, body) = match i % 4 {
                    0 => ("GET", Vec::new()),
                    1 => ("DELETE", Vec::new()),
                    // Up to 40 KB, the byte pattern telling requests apart.
                    _ => (
                        "POST",
                        (0..i * 199 % 40_000 + 1).map(|b| (b * i) as u8).collect(),
                    ),
                };
                let req = Request::builder().method(method).uri(&url);
                let reply = client
                    .request(req.body(Full::new(Bytes::from(body.clone()))).unwrap())
                    .await
                    .unwrap();
                let status = reply.status();
                let got = reply.into_body().collect().await.unwrap().to_bytes();
                if status != 200 || got != body {
                    failed.push(format!(
                        "{method} #{i}: {status}, {} of {} bytes",
                        got.len(),
                        body.len()
                    ));
                }
            }
            failed
        });
    }
    let failed: Vec<String> = clients.join_all().await.into_iter().flatten().collect();
    assert!(
        failed.is_empty(),
        "{} of 200 failed: {failed:?}",
        failed.len()
    );
    assert_eq!(echo.hits(), 200, "each request reached the target once");
    proxy.stop().await;
}

#[tokio::test]
async fn idle_target_connections_are_closed_once_nginx_closes_them_or_they_idle_too_long() {
    // nginx closes keep-alive connections idle past its `keepalive_timeout`. Before,
    // ecslb kept its side open (CLOSE_WAIT) until a request took the connection, which
    // a quiet target might never see; and a connection idle past the group's
    // `idle_timeout` was only closed when a request found it. Both now close within
    // a second or so, whichever client (lean GET, hyper's POST) held them; and so does
    // an HTTP/2 connection that carried no stream for `idle_timeout`, which its pings
    // kept open before.
    let server = |keepalive: &str| {
        format!(
            "server {{ listen @ADDR@; keepalive_timeout {keepalive}; \
             location / {{ return 200 \"ok\\n\"; }} }}"
        )
    };
    let closing = start_nginx(&server("1s")).await;
    let keeping = start_nginx(&server("300s")).await;
    let keeping_h2 = start_nginx(&server("300s").replace("@ADDR@", "@ADDR@ http2")).await;
    for (nginx, group_extra) in [
        (&closing, ""),
        (&keeping, "idle_timeout = \"1s\""),
        (
            &keeping_h2,
            "idle_timeout = \"1s\"\nprotocol_version = \"http2\"",
        ),
    ] {
        let proxy = start_proxy(&one_group_config(&[nginx.addr], "", group_extra)).await;
        let mut requests = tokio::task::JoinSet::new();
        for i in 0..12 {
            let url = proxy.url("/");
            requests.spawn(async move {
                if i % 3 == 0 {
                    let with_body =
                        Request::post(&url).body(Full::new(Bytes::from_static(b"a body")));
                    send(&support::client(), with_body.unwrap()).await.status
                } else {
                    support::get(&url).await.status
                }
            });
        }
        for status in requests.join_all().await {
            assert_eq!(status, 200);
        }
        let open = sockets_to(nginx.addr, TcpState::Established);
        assert!(open > 0, "the proxy keeps its connections to nginx open");
        // Within 3 s here: the first sweep (each second) after the last request marks
        // the HTTP/2 connection quiet, the first one a second after that closes it.
        eventually_within(
            std::time::Duration::from_secs(10),
            "the proxy closed its idle connections to nginx",
            async || {
                sockets_to(nginx.addr, TcpState::Established) == 0
                    && sockets_to(nginx.addr, TcpState::CloseWait) == 0
            },
        )
        .await;
        proxy.stop().await;
    }
}
