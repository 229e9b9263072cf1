//! `GET /metrics` as a real Prometheus sees it: a server scraping the admin listener
//! every second counts each target's requests exactly as the targets received them and
//! reports ALB's RequestCountPerTarget, and `promtool` accepts the exposition as is.
//! Needs Debian's `prometheus` package (`/usr/bin/prometheus`, `/usr/bin/promtool`).
#![allow(clippy::unwrap_used)]

use crate::support;

use std::collections::HashMap;
use std::time::Duration;

use support::prometheus::{promtool_check_metrics, start_prometheus, Prometheus};
use support::*;

/// Health checks every 100 ms, so both targets are `healthy` (not `unused`) within
/// about 200 ms; the checks go to `/health`, which [`HealthBackend::hits`] leaves out.
const CHECK: &str = r#"health_check = { path = "/health", interval = "100ms", timeout = "80ms", healthy_threshold = 2, unhealthy_threshold = 2 }"#;

/// Two healthy targets in group `g` (round robin) behind listener `web`, and a
/// Prometheus scraping the admin listener.
async fn setup() -> ([HealthBackend; 2], Proxy, Prometheus) {
    let targets = [
        health_backend_on("127.0.0.2", "a").await,
        health_backend_on("127.0.0.3", "b").await,
    ];
    let group = format!("algorithm = \"round_robin\"\n{CHECK}");
    let proxy = start_proxy(&one_group_config(
        &[targets[0].addr, targets[1].addr],
        "",
        &group,
    ))
    .await;
    for t in &targets {
        wait_for_state(proxy.admin, "g", t.addr, "healthy").await;
    }
    let prom = start_prometheus(proxy.admin).await;
    (targets, proxy, prom)
}

/// Sends `n` sequential GETs through the listener, pausing `gap` after each.
async fn send_requests(proxy: &Proxy, n: usize, gap: Duration) {
    for _ in 0..n {
        let r = get(&proxy.url("/")).await;
        assert_eq!(r.status, 200, "{r:?}");
        tokio::time::sleep(gap).await;
    }
}

/// Waits for two scrapes that started after everything sent so far, and checks that
/// they succeeded, so an empty query result means a missing metric, not a failed scrape.
async fn settle(prom: &Prometheus) {
    prom.wait_for_more_scrapes(2).await;
    assert_eq!(
        prom.value(r#"up{job="ecslb"}"#).await,
        Some(1.0),
        "the last scrape of /metrics failed: {}",
        prom.last_scrape_error().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_counts_requests_per_target_as_sent() {
    let (targets, proxy, prom) = setup().await;
    // Half while Prometheus warms up (its first scrape comes ~5 s after start), half
    // after a scrape has seen the series: rate() needs two samples that differ.
    send_requests(&proxy, 150, Duration::from_millis(10)).await;
    prom.wait_for_scrapes(1).await;
    send_requests(&proxy, 150, Duration::from_millis(10)).await;
    settle(&prom).await;

    let received: HashMap<String, f64> = targets
        .iter()
        .map(|t| (t.addr.to_string(), t.hits() as f64))
        .collect();
    assert_eq!(received.values().sum::<f64>(), 300.0);
    // The raw counter, not increase(): increase() extrapolates, the counter is exact.
    let counted: HashMap<String, f64> = prom
        .values_by(
            r#"sum by (target) (ecslb_requests_total{listener="web",target_group="g"})"#,
            "target",
        )
        .await
        .into_iter()
        .collect();
    assert_eq!(counted, received, "ecslb_requests_total by target");
    let by_code = prom
        .value(r#"sum(ecslb_requests_total{target_group="g",code="2xx"})"#)
        .await;
    assert_eq!(by_code, Some(300.0), "every response was a 2xx");

    let rates = prom
        .values_by(
            r#"sum by (target) (rate(ecslb_requests_total{target_group="g"}[1m]))"#,
            "target",
        )
        .await;
    assert_eq!(rates.len(), 2, "a rate for each target: {rates:?}");
    for (target, rate) in &rates {
        assert!(*rate > 0.0, "rate for {target} is {rate}");
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_per_target_matches_alb_semantics() {
    let (targets, proxy, prom) = setup().await;
    send_requests(&proxy, 200, Duration::ZERO).await;
    settle(&prom).await;

    // ALB's RequestCountPerTarget: the group's requests in the last 60 s divided by its
    // healthy targets. All 200 were sent within the last few seconds.
    assert_eq!(targets[0].hits() + targets[1].hits(), 200);
    let healthy = prom
        .value(r#"ecslb_target_group_healthy_targets{target_group="g"}"#)
        .await;
    assert_eq!(healthy, Some(2.0), "healthy targets in g");
    let per_target = prom
        .value(r#"ecslb_target_group_requests_per_target{target_group="g"}"#)
        .await
        .expect("ecslb_target_group_requests_per_target{target_group=\"g\"} was scraped");
    assert!(
        (per_target - 100.0).abs() <= 1.0,
        "requests per target is {per_target}, want 200 / 2 = 100"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exposition_passes_promtool() {
    let target = backend("a").await;
    let proxy = start_proxy(&one_group_config(&[target.addr], "", "")).await;
    // Traffic first, so the labelled families and the histogram have series to show.
    send_requests(&proxy, 10, Duration::ZERO).await;
    let _ = get(&proxy.url("/status?code=503")).await;

    let r = get(&proxy.admin_url("/metrics")).await;
    assert_eq!(r.status, 200, "{r:?}");
    let content_type = r
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain") && content_type.contains("version=0.0.4"),
        "content-type {content_type:?}"
    );
    assert!(
        r.body.contains("ecslb_requests_total{"),
        "no requests_total series in:\n{}",
        r.body
    );
    let (passed, printed) = promtool_check_metrics(&r.body);
    assert!(
        passed && printed.trim().is_empty(),
        "promtool check metrics (exit ok: {passed}):\n{printed}\non:\n{}",
        r.body
    );
    proxy.stop().await;
}
