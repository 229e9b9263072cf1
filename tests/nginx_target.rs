//! nginx (Debian's package, the server most often behind a load balancer) as a target,
//! over HTTP/1.1 and over HTTP/2 (h2c): health-checked in the group's protocol version
//! (or the check's own, for a health port beside the traffic port), and answering what
//! clients of either version send through the proxy.
#![allow(clippy::unwrap_used)]

use crate::support;

use http::Request;
use support::nginx::start_nginx;
use support::{
    get_with, h2_client, load_errors, one_group_config, send, start_proxy, wait_for_state,
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
