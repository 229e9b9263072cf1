//! Reloading the config (`POST /v1/reload`, SIGHUP) while serving, and the admin API:
//! good configs take effect without failing a request, bad ones are refused with
//! located errors and the running config stays.
use crate::support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use support::*;

/// One listener: `/fixed` answers `body`, `/api/*` answers "api" if `api_rule`, and
/// everything else goes to group `g` over `targets` (round robin).
fn config(body: &str, api_rule: bool, targets: &[&Backend]) -> String {
    let addrs: Vec<String> = targets.iter().map(|b| format!("\"{}\"", b.addr)).collect();
    let api = if api_rule {
        r#"
[[listeners.rules]]
priority = 5
conditions = { path = ["/api/*"] }
action = { fixed_response = { status = 200, body = "api" } }
"#
    } else {
        ""
    };
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[listeners]]
name = "web"
bind = "127.0.0.1:0"
default_action = {{ forward = "g" }}

[[listeners.rules]]
priority = 10
conditions = {{ path = ["/fixed"] }}
action = {{ fixed_response = {{ status = 200, content_type = "text/plain", body = "{body}" }} }}
{api}
[target_groups.g]
algorithm = "round_robin"
discovery = {{ static = [{}] }}
"#,
        addrs.join(", ")
    )
}

async fn reload(proxy: &Proxy) -> Reply {
    post(&proxy.admin_url("/v1/reload")).await
}

async fn json(url: &str) -> Value {
    let r = get(url).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.headers["content-type"], "application/json");
    serde_json::from_str(&r.body).expect("a JSON body")
}

#[tokio::test]
async fn reload_applies_a_changed_fixed_response_body() {
    let b = backend("one").await;
    let proxy = start_proxy(&config("before", false, &[&b])).await;
    assert_eq!(get(&proxy.url("/fixed")).await.body, "before");
    proxy.write_config(&config("after", false, &[&b]));
    let r = reload(&proxy).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&r.body).unwrap()["result"],
        "reloaded"
    );
    assert_eq!(get(&proxy.url("/fixed")).await.body, "after");
    proxy.stop().await;
}

#[tokio::test]
async fn reload_adds_a_rule() {
    let b = backend("one").await;
    let proxy = start_proxy(&config("fixed", false, &[&b])).await;
    assert_eq!(get(&proxy.url("/api/users")).await.body, "one");
    proxy.write_config(&config("fixed", true, &[&b]));
    assert_eq!(reload(&proxy).await.status, 200);
    assert_eq!(get(&proxy.url("/api/users")).await.body, "api");
    assert_eq!(get(&proxy.url("/other")).await.body, "one");
    proxy.stop().await;
}

#[tokio::test]
async fn reload_moves_a_group_to_new_static_targets() {
    let (one, two, three) = (
        backend("one").await,
        backend("two").await,
        backend("three").await,
    );
    let proxy = start_proxy(&config("fixed", false, &[&one])).await;
    assert_eq!(get(&proxy.url("/")).await.body, "one");
    proxy.write_config(&config("fixed", false, &[&two, &three]));
    assert_eq!(reload(&proxy).await.status, 200);
    let mut seen: Vec<String> = Vec::new();
    for _ in 0..10 {
        seen.push(get(&proxy.url("/")).await.body);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["three", "two"]);
    assert_eq!(one.hits(), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn invalid_config_is_rejected_with_located_errors_and_the_running_one_keeps_serving() {
    let b = backend("one").await;
    let good = config("before", false, &[&b]);
    let proxy = start_proxy(&good).await;
    let bad = good
        .replace(r#"body = "before""#, r#"body = "after""#)
        .replace(
            r#"algorithm = "round_robin""#,
            "algorithm = \"fastest\"\nretries = 3",
        )
        .replace(
            r#"bind = "127.0.0.1:0""#,
            "bind = \"127.0.0.1:0\"\nidle_timeout = \"soon\"",
        );
    proxy.write_config(&bad);
    let line_of = |needle: &str| 1 + bad.lines().position(|l| l.starts_with(needle)).unwrap();
    let file = display(&proxy.config_path);

    let r = reload(&proxy).await;
    assert_eq!(r.status, 400, "{r:?}");
    let body: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(body["result"], "rejected");
    let errors: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    for (needle, field) in [
        ("algorithm", "target_groups.g.algorithm"),
        ("retries", "target_groups.g.retries"),
        ("idle_timeout", "listeners[0].idle_timeout"),
    ] {
        let prefix = format!("{file}:{}: {field}: ", line_of(needle));
        assert!(
            errors.iter().any(|e| e.starts_with(&prefix)),
            "no error starting {prefix:?} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), 3, "{errors:#?}");

    assert_eq!(get(&proxy.url("/fixed")).await.body, "before");
    assert_eq!(get(&proxy.url("/")).await.body, "one");
    proxy.stop().await;
}

#[tokio::test]
async fn unparsable_config_is_rejected_with_its_line() {
    let b = backend("one").await;
    let good = config("before", false, &[&b]);
    let proxy = start_proxy(&good).await;
    let bad = good.replace("[target_groups.g]", "[target_groups.g\n");
    proxy.write_config(&bad);
    let r = reload(&proxy).await;
    assert_eq!(r.status, 400, "{r:?}");
    let body: Value = serde_json::from_str(&r.body).unwrap();
    let line = 1 + bad
        .lines()
        .position(|l| l.starts_with("[target_groups.g"))
        .unwrap();
    let error = body["errors"][0].as_str().unwrap();
    assert!(
        error.starts_with(&format!("{}:{line}: ", display(&proxy.config_path))),
        "{error}"
    );
    assert_eq!(get(&proxy.url("/fixed")).await.body, "before");
    proxy.stop().await;
}

#[tokio::test]
async fn reload_refuses_to_rebind_a_listener() {
    let b = backend("one").await;
    let good = config("before", false, &[&b]);
    let proxy = start_proxy(&good).await;
    let moved = good
        .replace(r#"bind = "127.0.0.1:0""#, r#"bind = "127.0.0.1:1""#)
        .replace("before", "after");
    proxy.write_config(&moved);
    let r = reload(&proxy).await;
    assert_eq!(r.status, 400, "{r:?}");
    let body: Value = serde_json::from_str(&r.body).unwrap();
    let error = body["errors"][0].as_str().unwrap();
    assert!(
        error.contains("listeners[0]") && error.contains("restart"),
        "{error}"
    );
    assert_eq!(get(&proxy.url("/fixed")).await.body, "before");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_continuous_load_fail_no_request() {
    let backends = [
        backend_on("127.0.0.2", "blue-1").await,
        backend_on("127.0.0.3", "blue-2").await,
        backend_on("127.0.0.4", "green-1").await,
        backend_on("127.0.0.5", "green-2").await,
    ];
    let blue = config("blue", false, &[&backends[0], &backends[1]]);
    let green = config("green", false, &[&backends[2], &backends[3]]);
    let proxy = start_proxy(&blue).await;

    let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
    let load: Vec<_> = (0..4)
        .map(|_| {
            let url = proxy.url("/");
            tokio::spawn(async move {
                let client = client();
                let mut replies = Vec::new();
                while tokio::time::Instant::now() < deadline {
                    let req = http::Request::get(&url).body(Default::default()).unwrap();
                    match client.request(req).await {
                        Ok(resp) => {
                            let status = resp.status();
                            let body = http_body_util::BodyExt::collect(resp.into_body()).await;
                            let body =
                                body.map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned());
                            replies.push(format!(
                                "{status} {}",
                                body.unwrap_or_else(|e| format!("body error: {e}"))
                            ));
                        }
                        Err(e) => replies.push(format!("request error: {e}")),
                    }
                }
                replies
            })
        })
        .collect();

    for i in 0..20 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        proxy.write_config(if i % 2 == 0 { &green } else { &blue });
        let r = reload(&proxy).await;
        assert_eq!(r.status, 200, "reload {i}: {r:?}");
    }
    let mut replies = Vec::new();
    for l in load {
        replies.extend(l.await.unwrap());
    }
    let expected: Vec<String> = backends
        .iter()
        .map(|b| format!("200 OK {}", b.name))
        .collect();
    let failed: Vec<&String> = replies.iter().filter(|r| !expected.contains(r)).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        replies.len()
    );
    assert!(replies.len() >= 100, "only {} requests ran", replies.len());
    for b in &backends {
        assert!(b.hits() > 0, "{} served nothing", b.name);
    }
    // The last config (blue) is in force.
    for b in &backends {
        b.reset_hits();
    }
    for _ in 0..10 {
        assert!(get(&proxy.url("/")).await.body.starts_with("blue-"));
    }
    proxy.stop().await;
}

#[tokio::test]
async fn targets_keep_their_in_flight_counts_across_reloads() {
    let (one, two) = (backend("one").await, backend("two").await);
    let proxy = start_proxy(&config("before", false, &[&one])).await;
    let slow: Vec<_> = (0..3)
        .map(|_| {
            let url = proxy.url("/slow?ms=1500");
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    let (a, b) = (one.addr.to_string(), two.addr.to_string());
    eventually("three requests are in flight", async || {
        in_flight(proxy.admin).await[&a] == 3
    })
    .await;

    proxy.write_config(&config("after", true, &[&one, &two]));
    assert_eq!(reload(&proxy).await.status, 200);
    let counts = in_flight(proxy.admin).await;
    assert_eq!((counts[&a], counts[&b]), (3, 0));

    for s in slow {
        let r = s.await.unwrap();
        assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "one"));
    }
    eventually("the slow requests are counted out", async || {
        in_flight(proxy.admin).await[&a] == 0
    })
    .await;
    proxy.stop().await;
}

#[tokio::test]
async fn admin_endpoints_report_health_readiness_routes_and_targets() {
    let b = backend("one").await;
    let proxy = start_proxy(&config("fixed", false, &[&b])).await;

    let r = get(&proxy.admin_url("/healthz")).await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "ok\n"));
    let r = get(&proxy.admin_url("/ready")).await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "ready\n"));

    let routes = json(&proxy.admin_url("/v1/routes")).await;
    let web = &routes["listeners"][0];
    assert_eq!(web["name"], "web");
    assert_eq!(web["bind"], "127.0.0.1:0");
    assert_eq!(web["protocol"], "http");
    assert_eq!(web["rules"][0]["priority"], 10);
    assert_eq!(
        web["rules"][0]["conditions"]["path"],
        serde_json::json!(["/fixed"])
    );
    assert_eq!(web["rules"][0]["action"]["fixed_response"]["body"], "fixed");
    assert_eq!(
        web["default_action"]["forward"]["groups"],
        serde_json::json!([{ "group": "g", "weight": 1 }])
    );

    let targets = json(&proxy.admin_url("/v1/targets")).await;
    let group = &targets["target_groups"][0];
    assert_eq!(group["name"], "g");
    assert_eq!(group["algorithm"], "round_robin");
    let listed = group["targets"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["target"], b.addr.to_string());
    assert_eq!(listed[0]["state"], "unused");
    assert_eq!(listed[0]["reason"], "Target.HealthCheckDisabled");
    assert_eq!(listed[0]["in_flight"], 0);

    assert_eq!(post(&proxy.admin_url("/healthz")).await.status, 405);
    assert_eq!(get(&proxy.admin_url("/v1/reload")).await.status, 405);
    assert_eq!(get(&proxy.admin_url("/nope")).await.status, 404);
    proxy.stop().await;
}

/// A config for the binary: `/fixed` answers `body`.
fn binary_config(addr: SocketAddr, admin: SocketAddr, body: &str) -> String {
    format!(
        r#"
[admin]
listen = "{admin}"

[[listeners]]
name = "web"
bind = "{addr}"
default_action = {{ fixed_response = {{ status = 200, body = "{body}" }} }}
"#
    )
}

#[tokio::test]
async fn sighup_reloads_the_running_binary() {
    let mut ecslb = start_binary(|addr, admin| binary_config(addr, admin, "before")).await;
    assert_eq!(get(&ecslb.url("/")).await.body, "before");

    ecslb.write_config(&binary_config(ecslb.addr, ecslb.admin, "after"));
    // Without --watch, a changed file waits for the signal.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(get(&ecslb.url("/")).await.body, "before");
    ecslb.signal("HUP");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while get(&ecslb.url("/")).await.body != "after" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "SIGHUP did not reload; log:\n{}",
            ecslb.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The new table serves before the reload's log line is written.
    eventually("the reload is logged", async || {
        ecslb.log().contains("config reloaded")
    })
    .await;

    // A bad file on SIGHUP is logged and the process keeps serving the last good one.
    ecslb.write_config("[[listeners]]\nname = 1\n");
    ecslb.signal("HUP");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !ecslb.log().contains("config reload rejected") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no rejection logged; log:\n{}",
            ecslb.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get(&ecslb.url("/")).await.body, "after");

    ecslb.signal("TERM");
    let status = ecslb
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("ecslb exits on SIGTERM");
    assert!(status.success(), "{status}; log:\n{}", ecslb.log());
}

/// Waits up to 5 s for `/` of `ecslb` to answer `body`.
async fn until_it_answers(ecslb: &support::Binary, body: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while get(&ecslb.url("/")).await.body != body {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never answered {body:?}; log:\n{}",
            ecslb.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn with_watch_a_changed_file_is_reloaded_without_a_signal() {
    let watch = [("ECSLB_WATCH", "true".to_owned())];
    let ecslb =
        start_binary_with_env(|addr, admin| binary_config(addr, admin, "before"), &watch).await;
    assert_eq!(get(&ecslb.url("/")).await.body, "before");
    ecslb.write_config(&binary_config(ecslb.addr, ecslb.admin, "after"));
    until_it_answers(&ecslb, "after").await;

    // A bad change is logged once (it is not retried while the file stays the same),
    // and the last good config keeps serving.
    ecslb.write_config("[[listeners]]\nname = 1\n");
    let rejections = || ecslb.log().matches("config reload rejected").count();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while rejections() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "{}", ecslb.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = rejections();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(rejections(), first, "rejected again: {}", ecslb.log());
    assert_eq!(get(&ecslb.url("/")).await.body, "after");

    ecslb.write_config(&binary_config(ecslb.addr, ecslb.admin, "fixed"));
    until_it_answers(&ecslb, "fixed").await;
}

#[tokio::test]
async fn reload_raises_the_header_count_limit() {
    let b = backend("one").await;
    let limited = |n: usize| one_group_config(&[b.addr], &format!("max_headers = {n}"), "");
    let proxy = start_proxy(&limited(10)).await;
    let headers: Vec<(String, String)> = (0..30)
        .map(|i| (format!("x-h{i}"), "v".to_owned()))
        .collect();
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(get_with(&proxy.url("/"), &headers).await.status, 431);

    proxy.write_config(&limited(50));
    assert_eq!(reload(&proxy).await.status, 200);
    let r = get_with(&proxy.url("/"), &headers).await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "one"), "{r:?}");
    proxy.stop().await;
}
