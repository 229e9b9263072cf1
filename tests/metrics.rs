//! `/metrics` follows the live targets: series of targets that left their group are gone
//! once they have drained, so churn does not grow cardinality; proxy-generated responses,
//! connections and reloads are counted; `[metrics] enabled = false` turns it all off.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::time::Duration;

use support::*;

fn config(targets: &[&Backend], extra: &str) -> String {
    let addrs: Vec<_> = targets.iter().map(|b| b.addr).collect();
    let group = "deregistration_delay = \"1s\"\nalgorithm = \"round_robin\"";
    one_group_config(&addrs, "", &format!("{group}\n{extra}"))
}

async fn series(proxy: &Proxy) -> Vec<String> {
    let r = get(&proxy.admin_url("/metrics")).await;
    assert_eq!(r.status, 200);
    r.body
        .lines()
        .filter(|l| l.starts_with("ecslb_"))
        .map(|l| l.rsplit_once(' ').unwrap().0.to_owned())
        .collect()
}

fn value(text: &str, series: &str) -> Option<f64> {
    support::sample(text, series)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_of_a_thousand_departed_targets_are_removed_after_draining() {
    let base = backend("base").await;
    let proxy = start_proxy(&config(&[&base], "")).await;
    assert_eq!(get(&proxy.url("/")).await.status, 200);
    let baseline = series(&proxy).await;

    let mut fleet = Vec::with_capacity(1000);
    for i in 0..1000 {
        fleet.push(backend(&format!("t{i}")).await);
    }
    // The base target stays throughout: its series must survive the churn.
    let refs: Vec<&Backend> = std::iter::once(&base).chain(fleet.iter()).collect();
    proxy.write_config(&config(&refs, ""));
    assert_eq!(post(&proxy.admin_url("/v1/reload")).await.status, 200);
    let client = client();
    for _ in 0..1001 {
        let r = send(
            &client,
            http::Request::get(proxy.url("/"))
                .body(Default::default())
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    assert!(
        fleet.iter().all(|b| b.hits() == 1),
        "round robin reached every target once"
    );
    let grown = series(&proxy).await;
    let per_target = grown
        .iter()
        .filter(|s| s.starts_with("ecslb_requests_total{"))
        .count();
    assert_eq!(
        per_target, 1001,
        "one requests_total series per target that answered"
    );

    proxy.write_config(&config(&[&base], ""));
    assert_eq!(post(&proxy.admin_url("/v1/reload")).await.status, 200);
    // Idle targets leave at the next drain sweep (every 200 ms).
    let mut after = series(&proxy).await;
    for _ in 0..50 {
        if after.len() == baseline.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = series(&proxy).await;
    }
    // The same series as before the churn.
    assert_eq!(
        after,
        baseline,
        "series left behind: {}",
        after.len() as i64 - baseline.len() as i64
    );
    proxy.stop().await;
}

#[tokio::test]
async fn proxy_responses_connections_and_reloads_are_counted() {
    let b = backend("one").await;
    let fixed = r#"[[listeners.rules]]
priority = 1
conditions = { path = ["/fixed"] }
action = { fixed_response = { status = 404, body = "no" } }"#;
    let toml = one_group_config(&[b.addr], fixed, "");
    let proxy = start_proxy(&toml).await;
    let client = client();
    for path in ["/", "/", "/fixed"] {
        send(
            &client,
            http::Request::get(proxy.url(path))
                .body(Default::default())
                .unwrap(),
        )
        .await;
    }
    proxy.write_config("not toml [");
    assert_eq!(post(&proxy.admin_url("/v1/reload")).await.status, 400);
    let text = get(&proxy.admin_url("/metrics")).await.body;
    let target = format!(
        "ecslb_requests_total{{listener=\"web\",target_group=\"g\",target=\"{}\",code=\"2xx\"}}",
        b.addr
    );
    assert_eq!(value(&text, &target), Some(2.0), "{text}");
    assert_eq!(
        value(
            &text,
            "ecslb_elb_responses_total{listener=\"web\",code=\"4xx\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "ecslb_new_connections_total{listener=\"web\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "ecslb_active_connections{listener=\"web\"}"),
        Some(1.0)
    );
    assert!(value(&text, "ecslb_processed_bytes_total{listener=\"web\"}").unwrap() > 100.0);
    assert_eq!(
        value(&text, "ecslb_config_reloads_total{result=\"failure\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "ecslb_target_response_seconds_count{target_group=\"g\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &text,
            "ecslb_target_group_healthy_targets{target_group=\"g\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "ecslb_target_group_requests_per_target{target_group=\"g\"}"
        ),
        Some(2.0)
    );
    proxy.stop().await;
}

#[tokio::test]
async fn refused_connections_count_as_target_connection_errors() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = start_proxy(&one_group_config(&[dead], "", "")).await;
    assert_eq!(get(&proxy.url("/")).await.status, 502);
    let text = get(&proxy.admin_url("/metrics")).await.body;
    let series =
        format!("ecslb_target_connection_errors_total{{target_group=\"g\",target=\"{dead}\"}}");
    assert_eq!(value(&text, &series), Some(1.0), "{text}");
    assert_eq!(
        value(
            &text,
            "ecslb_elb_responses_total{listener=\"web\",code=\"5xx\"}"
        ),
        Some(1.0)
    );
    proxy.stop().await;
}

#[tokio::test]
async fn disabled_metrics_count_nothing_and_serve_no_exposition() {
    let b = backend("one").await;
    let toml = format!(
        "[metrics]\nenabled = false\n{}",
        one_group_config(&[b.addr], "", "")
    );
    let proxy = start_proxy(&toml).await;
    assert_eq!(get(&proxy.url("/")).await.status, 200);
    assert_eq!(get(&proxy.admin_url("/metrics")).await.status, 404);
    proxy.stop().await;
}
