//! ALB listener-rule semantics end to end: each condition type, how conditions combine,
//! priorities, the default action, and every action (fixed response, redirect, forward,
//! weighted forward with group stickiness), through the real proxy on real sockets.
// clippy's `allow-unwrap-in-tests` covers `#[test]` functions only, not the helpers
// (here and in `support`) they call.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::collections::HashMap;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::*;

/// Body of the listeners' default fixed response.
const DEFAULT: &str = "default";

/// A config with one listener (`default_action`, then `rules`: `[[listeners.rules]]`
/// blocks) and one target group per backend, named after the backend.
fn config(default_action: &str, rules: &str, backends: &[&Backend]) -> String {
    let mut toml = format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[listeners]]
name = "web"
bind = "127.0.0.1:0"
default_action = {default_action}
{rules}
"#
    );
    for b in backends {
        toml += &format!(
            "\n[target_groups.{}]\ndiscovery = {{ static = [\"{}\"] }}\n",
            b.name, b.addr
        );
    }
    toml
}

/// The proxy with `rules` and a default action answering 404 `default`.
async fn proxy_with(rules: &str, backends: &[&Backend]) -> Proxy {
    let default = format!(r#"{{ fixed_response = {{ status = 404, body = "{DEFAULT}" }} }}"#);
    start_proxy(&config(&default, rules, backends)).await
}

/// Sends `method path` with `headers` through the proxy.
async fn ask(proxy: &Proxy, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::builder().method(method).uri(proxy.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(&client(), req.body(Full::default()).unwrap()).await
}

/// Who answered: the backend's name, or the body of a fixed response.
fn answered_by(r: &Reply) -> String {
    if let Some(name) = r.headers.get("x-backend") {
        assert_eq!(name, r.body.as_str(), "x-backend header and body disagree");
    }
    r.body.clone()
}

/// Who answers `GET path` with this Host header.
async fn who_for_host(proxy: &Proxy, host: &str, path: &str) -> String {
    answered_by(&ask(proxy, "GET", path, &[("host", host)]).await)
}

/// Who answers `GET path`.
async fn who_for_path(proxy: &Proxy, path: &str) -> String {
    answered_by(&ask(proxy, "GET", path, &[]).await)
}

#[tokio::test]
async fn host_condition_matches_exact_name_ignoring_case_and_port() {
    let api = backend_on("127.0.0.2", "api").await;
    let proxy = proxy_with(
        r#"
[[listeners.rules]]
priority = 10
conditions = { host = ["api.example.com"] }
action = { forward = "api" }
"#,
        &[&api],
    )
    .await;
    for (host, want) in [
        ("api.example.com", "api"),
        ("API.Example.COM", "api"),
        ("api.example.com:8080", "api"),
        ("example.com", DEFAULT),
        ("xapi.example.com", DEFAULT),
        ("api.example.com.evil", DEFAULT),
    ] {
        assert_eq!(who_for_host(&proxy, host, "/").await, want, "host {host}");
    }
    assert_eq!(api.hits(), 3);
    proxy.stop().await;
}

#[tokio::test]
async fn host_condition_reads_the_http2_authority() {
    let api = backend_on("127.0.0.2", "api").await;
    let proxy = proxy_with(
        r#"
[[listeners.rules]]
priority = 10
conditions = { host = ["127.0.0.1"] }
action = { forward = "api" }
"#,
        &[&api],
    )
    .await;
    // HTTP/2 requests carry `:authority` (here `127.0.0.1:PORT`) instead of Host.
    let r = send(
        &h2_client(),
        Request::get(proxy.url("/")).body(Full::default()).unwrap(),
    )
    .await;
    assert_eq!(answered_by(&r), "api");
    proxy.stop().await;
}

#[tokio::test]
async fn host_wildcards_match_any_run_or_exactly_one_character() {
    let star = backend_on("127.0.0.2", "star").await;
    let one = backend_on("127.0.0.3", "one").await;
    let proxy = proxy_with(
        r#"
[[listeners.rules]]
priority = 10
conditions = { host = ["*.example.com"] }
action = { forward = "star" }

[[listeners.rules]]
priority = 20
conditions = { host = ["app?.test"] }
action = { forward = "one" }
"#,
        &[&star, &one],
    )
    .await;
    for (host, want) in [
        ("a.example.com", "star"),
        ("a.b.EXAMPLE.com", "star"),
        ("a.example.com:443", "star"),
        ("example.com", DEFAULT),
        ("app1.test", "one"),
        ("APPX.test", "one"),
        ("app.test", DEFAULT),
        ("app12.test", DEFAULT),
    ] {
        assert_eq!(who_for_host(&proxy, host, "/").await, want, "host {host}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn exact_path_matches_only_itself_and_ignores_the_query() {
    let health = backend_on("127.0.0.2", "health").await;
    let proxy = proxy_with(
        r#"
[[listeners.rules]]
priority = 10
conditions = { path = ["/health"] }
action = { forward = "health" }
"#,
        &[&health],
    )
    .await;
    for (path, want) in [
        ("/health", "health"),
        ("/health?verbose=1", "health"),
        ("/health/", DEFAULT),
        ("/healthz", DEFAULT),
        ("/Health", DEFAULT),
        ("/", DEFAULT),
    ] {
        assert_eq!(who_for_path(&proxy, path).await, want, "path {path}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn prefix_path_matches_the_bare_prefix_and_everything_below_it() {
    let api = backend_on("127.0.0.2", "api").await;
    let proxy = proxy_with(
        r#"
[[listeners.rules]]
priority = 10
conditions = { path = ["/api/*"] }
action = { forward = "api" }
"#,
        &[&api],
    )
    .await;
    for (path, want) in [
        ("/api/", "api"),
        ("/api/v1", "api"),
        ("/api/v1/users/42?x=1", "api"),
        ("/api", DEFAULT),
        ("/apix/v1", DEFAULT),
        ("/API/v1", DEFAULT),
        ("/v1/api/", DEFAULT),
    ] {
        assert_eq!(who_for_path(&proxy, path).await, want, "path {path}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn nested_prefixes_and_exact_paths_each_keep_their_priority() {
    let proxy = proxy_with(
        r#"
[[listeners.rules]]
priority = 20
conditions = { path = ["/a/*"] }
action = { fixed_response = { status = 200, body = "a" } }

[[listeners.rules]]
priority = 10
conditions = { path = ["/a/b/*"] }
action = { fixed_response = { status = 200, body = "ab" } }

[[listeners.rules]]
priority = 30
conditions = { path = ["/a/b/c"] }
action = { fixed_response = { status = 200, body = "abc" } }

[[listeners.rules]]
priority = 5
conditions = { path = ["/a/"] }
action = { fixed_response = { status = 200, body = "a-exact" } }

[[listeners.rules]]
priority = 40
conditions = { path = ["/t/{id}/*"] }
action = { fixed_response = { status = 200, body = "braces" } }
"#,
        &[],
    )
    .await;
    for (path, want) in [
        ("/a/", "a-exact"),
        ("/a/x", "a"),
        ("/a/b", "a"),
        ("/a/b/", "ab"),
        ("/a/b/c", "ab"),
        ("/a/bc", "a"),
        ("/a/b/c/d", "ab"),
        ("/a", DEFAULT),
        ("/t/{id}/x", "braces"),
        ("/t/42/x", DEFAULT),
    ] {
        assert_eq!(who_for_path(&proxy, path).await, want, "path {path}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn path_wildcards_work_mid_pattern_and_question_mark_is_one_character() {
    let png = backend_on("127.0.0.2", "png").await;
    let version = backend_on("127.0.0.3", "version").await;
    let proxy = proxy_with(
        r#"
[[listeners.rules]]
priority = 10
conditions = { path = ["/img/*.png"] }
action = { forward = "png" }

[[listeners.rules]]
priority = 20
conditions = { path = ["/v?/items"] }
action = { forward = "version" }
"#,
        &[&png, &version],
    )
    .await;
    for (path, want) in [
        ("/img/a.png", "png"),
        ("/img/a/b/c.png", "png"),
        ("/img/.png", "png"),
        ("/img/a.jpg", DEFAULT),
        ("/img/a.PNG", DEFAULT),
        ("/img/a.png/x", DEFAULT),
        ("/v1/items", "version"),
        ("/vX/items", "version"),
        ("/v/items", DEFAULT),
        ("/v10/items", DEFAULT),
    ] {
        assert_eq!(who_for_path(&proxy, path).await, want, "path {path}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn path_matching_is_case_sensitive() {
    let upper = backend_on("127.0.0.2", "upper").await;
    let lower = backend_on("127.0.0.3", "lower").await;
    let proxy = proxy_with(
        r#"
[[listeners.rules]]
priority = 10
conditions = { path = ["/API/*"] }
action = { forward = "upper" }

[[listeners.rules]]
priority = 20
conditions = { path = ["/Docs/*.HTML"] }
action = { forward = "lower" }
"#,
        &[&upper, &lower],
    )
    .await;
    for (path, want) in [
        ("/API/x", "upper"),
        ("/api/x", DEFAULT),
        ("/Api/x", DEFAULT),
        ("/Docs/a.HTML", "lower"),
        ("/docs/a.HTML", DEFAULT),
        ("/Docs/a.html", DEFAULT),
    ] {
        assert_eq!(who_for_path(&proxy, path).await, want, "path {path}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn header_condition_name_ignores_case_and_values_take_wildcards() {
    let prod = backend_on("127.0.0.2", "prod").await;
    let proxy = proxy_with(
        r#"
[[listeners.rules]]
priority = 10
conditions = { http_header = [{ name = "X-Env", values = ["prod*", "stag?"] }] }
action = { forward = "prod" }
"#,
        &[&prod],
    )
    .await;
    for (name, value, want) in [
        ("x-env", "production", "prod"),
        ("X-ENV", "PROD-eu", "prod"),
        ("x-env", "prod", "prod"),
        ("x-env", "stage", "prod"),
        ("x-env", "staging", DEFAULT),
        ("x-env", "dev", DEFAULT),
        ("x-envy", "prod", DEFAULT),
    ] {
        let r = ask(&proxy, "GET", "/", &[(name, value)]).await;
        assert_eq!(answered_by(&r), want, "{name}: {value}");
    }
    assert_eq!(who_for_path(&proxy, "/").await, DEFAULT, "no header at all");
    proxy.stop().await;
}

#[tokio::test]
async fn several_header_conditions_must_all_match() {
    let both = backend_on("127.0.0.2", "both").await;
    let proxy = proxy_with(
        r#"
[[listeners.rules]]
priority = 10
conditions = { http_header = [{ name = "x-a", values = ["1"] }, { name = "x-b", values = ["2", "3"] }] }
action = { forward = "both" }
"#,
        &[&both],
    )
    .await;
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[("x-a", "1"), ("x-b", "2")], "both"),
        (&[("x-a", "1"), ("x-b", "3")], "both"),
        (&[("x-a", "1")], DEFAULT),
        (&[("x-b", "2")], DEFAULT),
        (&[("x-a", "2"), ("x-b", "2")], DEFAULT),
    ];
    for (headers, want) in cases {
        let r = ask(&proxy, "GET", "/", headers).await;
        assert_eq!(answered_by(&r), want, "headers {headers:?}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn method_condition_matches_only_the_listed_methods() {
    let writes = backend_on("127.0.0.2", "writes").await;
    let proxy = proxy_with(
        r#"
[[listeners.rules]]
priority = 10
conditions = { method = ["POST", "PUT"] }
action = { forward = "writes" }
"#,
        &[&writes],
    )
    .await;
    for (method, want) in [
        ("POST", "writes"),
        ("PUT", "writes"),
        ("GET", DEFAULT),
        ("DELETE", DEFAULT),
        ("PATCH", DEFAULT),
    ] {
        assert_eq!(
            answered_by(&ask(&proxy, method, "/x", &[]).await),
            want,
            "method {method}"
        );
    }
    proxy.stop().await;
}

#[tokio::test]
async fn query_condition_matches_key_and_value_with_wildcards_or_any_key() {
    let v1 = backend_on("127.0.0.2", "v1").await;
    let english = backend_on("127.0.0.3", "english").await;
    let debug = backend_on("127.0.0.4", "debug").await;
    let proxy = proxy_with(
        r#"
[[listeners.rules]]
priority = 10
conditions = { query = [{ key = "version", value = "v1" }] }
action = { forward = "v1" }

[[listeners.rules]]
priority = 20
conditions = { query = [{ key = "lang", value = "en*" }] }
action = { forward = "english" }

[[listeners.rules]]
priority = 30
conditions = { query = [{ value = "debug" }] }
action = { forward = "debug" }
"#,
        &[&v1, &english, &debug],
    )
    .await;
    for (path, want) in [
        ("/?version=v1", "v1"),
        ("/?a=b&version=v1", "v1"),
        ("/?VERSION=V1", "v1"),
        ("/?version=v2", DEFAULT),
        ("/?version=v1x", DEFAULT),
        ("/?lang=en", "english"),
        ("/?lang=en-GB", "english"),
        ("/?lang=fr", DEFAULT),
        ("/?mode=debug", "debug"),
        ("/?anything=DEBUG&x=y", "debug"),
        ("/?debugging=1", DEFAULT),
        ("/", DEFAULT),
    ] {
        assert_eq!(who_for_path(&proxy, path).await, want, "path {path}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn source_ip_condition_matches_the_client_address_against_cidrs() {
    let never = backend_on("127.0.0.2", "never").await;
    let local = backend_on("127.0.0.3", "local").await;
    let proxy = proxy_with(
        r#"
[[listeners.rules]]
priority = 10
conditions = { source_ip = ["10.0.0.0/8", "2001:db8::/32", "::1/128"] }
action = { forward = "never" }

[[listeners.rules]]
priority = 20
conditions = { source_ip = ["127.0.0.1/32"] }
action = { forward = "local" }
"#,
        &[&never, &local],
    )
    .await;
    // The kit's client connects from 127.0.0.1.
    assert_eq!(who_for_path(&proxy, "/").await, "local");

    // A client bound to another loopback address matches neither rule.
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some([127, 0, 0, 2].into()));
    let other: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    let r = send(
        &other,
        Request::get(proxy.url("/")).body(Full::default()).unwrap(),
    )
    .await;
    assert_eq!(answered_by(&r), DEFAULT);
    assert_eq!(never.hits(), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn values_within_a_condition_are_ored_and_conditions_are_anded() {
    let hit = backend_on("127.0.0.2", "hit").await;
    let proxy = proxy_with(
        r#"
[[listeners.rules]]
priority = 10
conditions = { host = ["a.test", "b.test"], path = ["/x", "/y/*"], method = ["GET", "HEAD"], http_header = [{ name = "x-team", values = ["red", "blue"] }] }
action = { forward = "hit" }
"#,
        &[&hit],
    )
    .await;
    for (method, host, path, team, want) in [
        ("GET", "a.test", "/x", "red", "hit"),
        ("GET", "b.test", "/y/z", "blue", "hit"),
        ("GET", "c.test", "/x", "red", DEFAULT),
        ("GET", "a.test", "/z", "red", DEFAULT),
        ("POST", "a.test", "/x", "red", DEFAULT),
        ("GET", "a.test", "/x", "green", DEFAULT),
    ] {
        let r = ask(&proxy, method, path, &[("host", host), ("x-team", team)]).await;
        assert_eq!(answered_by(&r), want, "{method} {host}{path} team={team}");
    }
    let head = ask(
        &proxy,
        "HEAD",
        "/x",
        &[("host", "a.test"), ("x-team", "red")],
    )
    .await;
    assert_eq!(head.headers["x-backend"], "hit");
    proxy.stop().await;
}

#[tokio::test]
async fn lowest_priority_number_wins_regardless_of_file_order() {
    let thirty = backend_on("127.0.0.2", "thirty").await;
    let ten = backend_on("127.0.0.3", "ten").await;
    let twenty = backend_on("127.0.0.4", "twenty").await;
    let proxy = proxy_with(
        r#"
[[listeners.rules]]
priority = 30
conditions = { path = ["/api/*"] }
action = { forward = "thirty" }

[[listeners.rules]]
priority = 10
conditions = { path = ["/api/*"], method = ["POST"] }
action = { forward = "ten" }

[[listeners.rules]]
priority = 20
conditions = { path = ["/api/*"], host = ["api.test"] }
action = { forward = "twenty" }
"#,
        &[&thirty, &ten, &twenty],
    )
    .await;
    let post = ask(&proxy, "POST", "/api/x", &[("host", "api.test")]).await;
    assert_eq!(answered_by(&post), "ten");
    assert_eq!(who_for_host(&proxy, "api.test", "/api/x").await, "twenty");
    assert_eq!(who_for_host(&proxy, "other.test", "/api/x").await, "thirty");
    proxy.stop().await;
}

#[tokio::test]
async fn general_rule_with_a_lower_number_beats_a_more_specific_one() {
    let general = backend_on("127.0.0.2", "general").await;
    let specific = backend_on("127.0.0.3", "specific").await;
    let proxy = proxy_with(
        r#"
[[listeners.rules]]
priority = 10
conditions = { path = ["/api/users"] }
action = { forward = "specific" }

[[listeners.rules]]
priority = 5
conditions = { path = ["/*"], method = ["GET"] }
action = { forward = "general" }
"#,
        &[&general, &specific],
    )
    .await;
    assert_eq!(who_for_path(&proxy, "/api/users").await, "general");
    assert_eq!(who_for_path(&proxy, "/").await, "general");
    // Once the general rule does not match, the specific one is next.
    assert_eq!(
        answered_by(&ask(&proxy, "POST", "/api/users", &[]).await),
        "specific"
    );
    assert_eq!(
        answered_by(&ask(&proxy, "POST", "/api/other", &[]).await),
        DEFAULT
    );
    proxy.stop().await;
}

#[tokio::test]
async fn wildcard_and_prefix_rules_interleave_by_priority() {
    // `/img/*.png` is not a plain prefix, so it is matched apart from the path index;
    // the two kinds must still be tried in one priority order.
    let proxy = proxy_with(
        r#"
[[listeners.rules]]
priority = 15
conditions = { path = ["/img/*.gif"] }
action = { fixed_response = { status = 200, body = "gif" } }

[[listeners.rules]]
priority = 10
conditions = { path = ["/img/*"] }
action = { fixed_response = { status = 200, body = "img" } }

[[listeners.rules]]
priority = 5
conditions = { path = ["/img/*.png"] }
action = { fixed_response = { status = 200, body = "png" } }

[[listeners.rules]]
priority = 20
conditions = { method = ["DELETE"] }
action = { fixed_response = { status = 200, body = "delete" } }
"#,
        &[],
    )
    .await;
    assert_eq!(who_for_path(&proxy, "/img/a.png").await, "png");
    assert_eq!(who_for_path(&proxy, "/img/a.gif").await, "img");
    assert_eq!(who_for_path(&proxy, "/img/").await, "img");
    assert_eq!(
        answered_by(&ask(&proxy, "DELETE", "/img/a.png", &[]).await),
        "png"
    );
    assert_eq!(
        answered_by(&ask(&proxy, "DELETE", "/other", &[]).await),
        "delete"
    );
    assert_eq!(who_for_path(&proxy, "/other").await, DEFAULT);
    proxy.stop().await;
}

#[tokio::test]
async fn default_action_answers_when_no_rule_matches() {
    let api = backend_on("127.0.0.2", "api").await;
    let fallback = backend_on("127.0.0.3", "fallback").await;
    let rules = r#"
[[listeners.rules]]
priority = 10
conditions = { path = ["/api/*"] }
action = { forward = "api" }
"#;
    let proxy = start_proxy(&config(
        r#"{ forward = "fallback" }"#,
        rules,
        &[&api, &fallback],
    ))
    .await;
    assert_eq!(who_for_path(&proxy, "/api/x").await, "api");
    assert_eq!(who_for_path(&proxy, "/").await, "fallback");
    assert_eq!(who_for_path(&proxy, "/apix").await, "fallback");
    assert_eq!((api.hits(), fallback.hits()), (1, 2));
    proxy.stop().await;
}

#[tokio::test]
async fn fixed_response_answers_with_its_status_content_type_and_body() {
    let proxy = proxy_with(
        r#"
[[listeners.rules]]
priority = 10
conditions = { path = ["/down"] }
action = { fixed_response = { status = 503, content_type = "application/json", body = '{"down":true}' } }

[[listeners.rules]]
priority = 20
conditions = { path = ["/plain"] }
action = { fixed_response = { status = 200, body = "ok" } }
"#,
        &[],
    )
    .await;
    let down = ask(&proxy, "GET", "/down", &[]).await;
    assert_eq!(down.status, 503);
    assert_eq!(down.headers["content-type"], "application/json");
    assert_eq!(down.body, r#"{"down":true}"#);

    let plain = ask(&proxy, "POST", "/plain", &[]).await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.headers["content-type"], "text/plain");
    assert_eq!(plain.body, "ok");

    let none = ask(&proxy, "GET", "/nothing", &[]).await;
    assert_eq!(none.status, 404);
    assert_eq!(none.body, DEFAULT);
    proxy.stop().await;
}

#[tokio::test]
async fn redirect_fills_placeholders_and_explicit_parts() {
    let proxy = proxy_with(
        r##"
[[listeners.rules]]
priority = 1
conditions = { path = ["/moved/*"] }
action = { redirect = { status = 301, protocol = "https", host = "new.example.com", port = "8443", path = "/v2/#{path}", query = "#{query}&moved=1" } }

[[listeners.rules]]
priority = 2
conditions = { path = ["/temp/*"] }
action = { redirect = { path = "/new/#{path}", status = 302 } }

[[listeners.rules]]
priority = 3
conditions = { path = ["/secure/*"] }
action = { redirect = { protocol = "HTTPS", port = "443" } }

[[listeners.rules]]
priority = 4
conditions = { path = ["/mirror/*"] }
action = { redirect = { protocol = "#{protocol}", host = "#{host}.mirror.test", port = "#{port}", path = "/#{path}", query = "", status = 302 } }

[[listeners.rules]]
priority = 5
conditions = { path = ["/plain/*"] }
action = { redirect = { host = "plain.test", port = "80", query = "from=#{host}" } }
"##,
        &[],
    )
    .await;
    let port = proxy.addrs[0].port();
    let host = [("host", "www.example.com:1234")];
    for (path, status, location) in [
        (
            "/moved/x?a=1",
            301,
            "https://new.example.com:8443/v2/moved/x?a=1&moved=1".to_owned(),
        ),
        (
            "/temp/x?a=1&b=2",
            302,
            format!("http://www.example.com:{port}/new/temp/x?a=1&b=2"),
        ),
        (
            "/temp/x",
            302,
            format!("http://www.example.com:{port}/new/temp/x"),
        ),
        (
            "/secure/x?a=1",
            301,
            "https://www.example.com/secure/x?a=1".to_owned(),
        ),
        (
            "/mirror/a/b?dropped=1",
            302,
            format!("http://www.example.com.mirror.test:{port}/mirror/a/b"),
        ),
        (
            "/plain/x?a=1",
            301,
            "http://plain.test/plain/x?from=www.example.com".to_owned(),
        ),
    ] {
        let r = ask(&proxy, "GET", path, &host).await;
        assert_eq!(r.status, status, "{path}");
        assert_eq!(r.headers["location"], location.as_str(), "{path}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn forward_sends_every_matching_request_to_its_group() {
    let a = backend_on("127.0.0.2", "a").await;
    let b = backend_on("127.0.0.3", "b").await;
    let proxy = proxy_with(
        r#"
[[listeners.rules]]
priority = 10
conditions = { path = ["/a/*"] }
action = { forward = "a" }

[[listeners.rules]]
priority = 20
conditions = { path = ["/b/*"] }
action = { forward = [{ group = "b", weight = 1 }] }
"#,
        &[&a, &b],
    )
    .await;
    for _ in 0..10 {
        assert_eq!(who_for_path(&proxy, "/a/x").await, "a");
        assert_eq!(who_for_path(&proxy, "/b/x").await, "b");
    }
    assert_eq!((a.hits(), b.hits()), (10, 10));
    proxy.stop().await;
}

#[tokio::test]
async fn weighted_forward_splits_requests_by_weight_and_zero_gets_none() {
    const REQUESTS: usize = 2_000;
    const TASKS: usize = 8;
    let blue = backend_on("127.0.0.2", "blue").await;
    let green = backend_on("127.0.0.3", "green").await;
    let red = backend_on("127.0.0.4", "red").await;
    let proxy = proxy_with(
        r#"
[[listeners.rules]]
priority = 10
conditions = { path = ["/*"] }
action = { forward = [{ group = "blue", weight = 75 }, { group = "green", weight = 25 }, { group = "red", weight = 0 }] }
"#,
        &[&blue, &green, &red],
    )
    .await;
    let shared = client();
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (c, url) = (shared.clone(), proxy.url("/"));
        tasks.push(tokio::spawn(async move {
            let mut counts: HashMap<String, usize> = HashMap::new();
            for _ in 0..REQUESTS / TASKS {
                let r = send(&c, Request::get(&url).body(Full::default()).unwrap()).await;
                assert!(
                    r.headers.get("set-cookie").is_none(),
                    "no stickiness, no cookie"
                );
                *counts.entry(answered_by(&r)).or_default() += 1;
            }
            counts
        }));
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for t in tasks {
        for (name, n) in t.await.unwrap() {
            *counts.entry(name).or_default() += n;
        }
    }
    let share = |name: &str| counts.get(name).copied().unwrap_or(0) as f64 / REQUESTS as f64;
    // 75/25 over 2,000 draws: one standard deviation is about 1 point; allow ±5.
    assert!(
        (share("blue") - 0.75).abs() <= 0.05,
        "blue share {} of {counts:?}",
        share("blue")
    );
    assert!(
        (share("green") - 0.25).abs() <= 0.05,
        "green share {} of {counts:?}",
        share("green")
    );
    assert_eq!(red.hits(), 0, "weight 0 gets nothing: {counts:?}");
    assert_eq!(blue.hits() + green.hits(), REQUESTS);
    proxy.stop().await;
}

#[tokio::test]
async fn group_stickiness_cookie_keeps_a_client_on_its_first_group() {
    let blue = backend_on("127.0.0.2", "blue").await;
    let green = backend_on("127.0.0.3", "green").await;
    let proxy = proxy_with(
        r#"
[[listeners.rules]]
priority = 10
conditions = { path = ["/*"] }
action = { forward = [{ group = "blue", weight = 50 }, { group = "green", weight = 50 }], stickiness = "1h" }
"#,
        &[&blue, &green],
    )
    .await;
    let first = ask(&proxy, "GET", "/", &[]).await;
    let group = answered_by(&first);
    let set_cookie = first.headers["set-cookie"].to_str().unwrap();
    assert_eq!(
        set_cookie,
        format!("AWSALBTG={group}; Max-Age=3600; Path=/")
    );
    let cookie = set_cookie.split(';').next().unwrap().to_owned();

    for _ in 0..30 {
        let r = ask(
            &proxy,
            "GET",
            "/",
            &[("cookie", &format!("session=abc; {cookie}"))],
        )
        .await;
        assert_eq!(answered_by(&r), group, "the cookie keeps the group");
        assert!(
            r.headers.get("set-cookie").is_none(),
            "a valid cookie is not set again"
        );
    }

    // Without a cookie (or with one naming no group of the action), the draw is by
    // weight again: over 40 requests both groups answer.
    let mut seen = std::collections::HashSet::new();
    for i in 0..40 {
        let headers: &[(&str, &str)] = if i % 2 == 0 {
            &[]
        } else {
            &[("cookie", "AWSALBTG=nope")]
        };
        let r = ask(&proxy, "GET", "/", headers).await;
        assert!(r.headers["set-cookie"]
            .to_str()
            .unwrap()
            .starts_with("AWSALBTG="));
        seen.insert(answered_by(&r));
    }
    assert_eq!(seen.len(), 2, "both groups answer fresh clients: {seen:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn the_right_rule_wins_among_a_thousand() {
    let mut rules = String::new();
    let mut add = |priority: usize, path: &str, body: &str| {
        rules += &format!(
            "[[listeners.rules]]\npriority = {priority}\nconditions = {{ path = [\"{path}\"] }}\naction = {{ fixed_response = {{ status = 200, body = \"{body}\" }} }}\n"
        );
    };
    for i in 0..900 {
        add(1000 + i, &format!("/r{i}/*"), &format!("r{i}"));
    }
    for j in 0..50 {
        add(2000 + j, &format!("/w{j}/*.png"), &format!("w{j}"));
    }
    // Wildcard rules shadowed by the lower-numbered prefix rules above.
    for j in 0..49 {
        add(3000 + j, &format!("/r{j}/x?z"), &format!("lose{j}"));
    }
    // One wildcard rule ahead of every prefix rule it overlaps.
    add(500, "/r7*/deep", "deep");
    assert_eq!(rules.matches("[[listeners.rules]]").count(), 1000);

    let proxy = proxy_with(&rules, &[]).await;
    for (path, want) in [
        ("/r0/a", "r0"),
        ("/r1/", "r1"),
        ("/r1", DEFAULT),
        ("/r10/a/b", "r10"),
        ("/r100/a", "r100"),
        ("/r899/x/y?q=1", "r899"),
        ("/r900/a", DEFAULT),
        ("/w3/a/b.png", "w3"),
        ("/w49/x.png", "w49"),
        ("/w3/a.jpg", DEFAULT),
        ("/r12/xyz", "r12"),
        ("/r7/deep", "deep"),
        ("/r71/deep", "deep"),
        ("/r715/deep", "deep"),
        ("/r71/deeper", "r71"),
        ("/r8/deep", "r8"),
    ] {
        assert_eq!(who_for_path(&proxy, path).await, want, "path {path}");
    }
    proxy.stop().await;
}
