//! Active health checks and passive outlier detection through the proxy, over real
//! sockets: thresholds counted probe by probe, timeouts and refused connections, status
//! matchers, check port and Host header, TCP checks, fail-open, one probe in flight per
//! target with jittered starts, and ejection of targets whose requests fail.
use crate::support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

/// HTTP health checks of `/health` every 100 ms (80 ms timeout), healthy after 3 passes
/// and unhealthy after 2 failures, with `overrides` (key, TOML value) replacing or
/// adding keys.
fn check(overrides: &[(&str, &str)]) -> String {
    let mut keys = vec![
        ("path", r#""/health""#),
        ("interval", r#""100ms""#),
        ("timeout", r#""80ms""#),
        ("healthy_threshold", "3"),
        ("unhealthy_threshold", "2"),
    ];
    for &(key, value) in overrides {
        match keys.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => keys.push((key, value)),
        }
    }
    let keys: Vec<String> = keys.iter().map(|(k, v)| format!("{k} = {v}")).collect();
    format!("health_check = {{ {} }}", keys.join(", "))
}

/// One listener forwarding to group `g` (round robin) over `targets`, with `settings`
/// lines in the group.
fn config(targets: &[SocketAddr], settings: &str) -> String {
    one_group_config(
        targets,
        "",
        &format!("algorithm = \"round_robin\"\n{settings}"),
    )
}

/// Polls the entry of `addr` until its state is `until`, handing every entry seen on
/// the way (including the last) to `each`; panics after 5 s.
async fn watch_until(
    proxy: &Proxy,
    addr: SocketAddr,
    until: &str,
    mut each: impl FnMut(&Value),
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let t = target_status(proxy.admin, "g", addr)
            .await
            .expect("the target is a member");
        each(&t);
        if t["state"] == until {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "{addr} did not turn {until}: {t}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// When the entry `t`, fetched at `fetched`, says the target turned healthy.
fn healthy_at(t: &Value, fetched: Instant) -> Instant {
    let ago = t["healthy_for_seconds"]
        .as_f64()
        .expect("a healthy target has healthy_for_seconds");
    fetched - Duration::from_secs_f64(ago)
}

/// How many passing probes in a row `probes` ends with, counting only those that
/// arrived by `at` (plus a margin far below the 100 ms interval, for the time between a
/// probe's arrival and its result being recorded).
fn passes_before(probes: &[ProbeSeen], at: Instant) -> usize {
    let cutoff = at + Duration::from_millis(30);
    let arrived = probes.iter().take_while(|p| p.at <= cutoff).count();
    probes[..arrived]
        .iter()
        .rev()
        .take_while(|p| p.status == 200)
        .count()
}

/// Sends `n` sequential GETs of `/` and counts the backend that answered each.
async fn tally(proxy: &Proxy, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let r = get(&proxy.url("/")).await;
        assert_eq!(r.status, 200, "{r:?}");
        *counts.entry(r.body).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn a_new_target_stays_initial_without_traffic_until_exactly_healthy_threshold_passes() {
    let a = health_backend_on("127.0.0.2", "a").await;
    let b = health_backend_on("127.0.0.3", "b").await;
    let proxy = start_proxy(&config(&[a.addr], &check(&[]))).await;
    wait_for_state(proxy.admin, "g", a.addr, "healthy").await;

    proxy.write_config(&config(&[a.addr, b.addr], &check(&[])));
    assert_eq!(post(&proxy.admin_url("/v1/reload")).await.status, 200);
    let counts = tally(&proxy, 10).await;
    assert_eq!(counts, HashMap::from([("a".into(), 10)]));
    let mut states = Vec::new();
    let mut most_passes_while_initial = 0;
    let mut fetched = Instant::now();
    let t = watch_until(&proxy, b.addr, "healthy", |t| {
        fetched = Instant::now();
        states.push(t["state"].clone());
        let passes = t["consecutive_passes"].as_u64().unwrap();
        if t["state"] == "initial" {
            assert_eq!(t["reason"], "Elb.InitialHealthChecking", "{t}");
            assert!(passes < 3, "still initial after {passes} passes: {t}");
            most_passes_while_initial = most_passes_while_initial.max(passes);
        } else {
            assert_eq!(t["state"], "healthy", "{t}");
        }
    })
    .await;
    // b was still initial after those requests, so they all went to a while it was.
    assert_eq!(states[0], "initial");
    assert_eq!(b.hits(), 0);
    assert_eq!(
        most_passes_while_initial, 2,
        "b was seen initial after 2 passes"
    );
    assert_eq!(t["reason"], "", "{t}");
    assert_eq!(t["consecutive_failures"], 0, "{t}");
    assert!(t["consecutive_passes"].as_u64().unwrap() >= 3, "{t}");
    assert!(t["last_check_seconds_ago"].as_f64().unwrap() < 0.5, "{t}");
    // The probe that made b healthy was the third one b received.
    let probes = b.probes();
    assert_eq!(passes_before(&probes, healthy_at(&t, fetched)), 3, "{t}");
    assert_eq!(probes.len(), b.probes_answered(200));
    // With the traffic port and no host set, probes ask for the path at b's own address.
    assert_eq!(probes[0].path, "/health");
    assert_eq!(probes[0].headers["host"], b.addr.to_string().as_str());

    let counts = tally(&proxy, 20).await;
    assert_eq!(counts, HashMap::from([("a".into(), 10), ("b".into(), 10)]));
    proxy.stop().await;
}

#[tokio::test]
async fn a_target_leaves_rotation_after_exactly_two_failures_and_returns_after_three_passes() {
    let a = health_backend_on("127.0.0.2", "a").await;
    let b = health_backend_on("127.0.0.3", "b").await;
    let proxy = start_proxy(&config(&[a.addr, b.addr], &check(&[]))).await;
    wait_for_state(proxy.admin, "g", a.addr, "healthy").await;
    wait_for_state(proxy.admin, "g", b.addr, "healthy").await;

    b.set_health_status(500);
    let mut seen_healthy_after_one_failure = false;
    let t = watch_until(&proxy, b.addr, "unhealthy", |t| {
        let failures = t["consecutive_failures"].as_u64().unwrap();
        if t["state"] == "healthy" {
            assert!(failures < 2, "still healthy after {failures} failures: {t}");
            seen_healthy_after_one_failure |= failures == 1;
        }
    })
    .await;
    let failed_probes = b.probes_answered(500);
    assert!(
        seen_healthy_after_one_failure,
        "b stayed healthy after 1 failure"
    );
    assert_eq!(t["consecutive_failures"], 2, "{t}");
    assert_eq!(
        failed_probes, 2,
        "b turned unhealthy on its second failing probe"
    );
    assert_eq!(t["consecutive_passes"], 0, "{t}");
    assert_eq!(t["reason"], "Target.ResponseCodeMismatch", "{t}");
    assert!(t["last_check_seconds_ago"].as_f64().unwrap() < 0.5, "{t}");
    assert!(t["healthy_for_seconds"].is_null(), "{t}");

    let hits = b.hits();
    let counts = tally(&proxy, 10).await;
    assert_eq!(counts, HashMap::from([("a".into(), 10)]));
    assert_eq!(b.hits(), hits);

    b.set_health_status(200);
    let mut fetched = Instant::now();
    let t = watch_until(&proxy, b.addr, "healthy", |t| {
        fetched = Instant::now();
        if t["state"] == "unhealthy" {
            assert!(t["consecutive_passes"].as_u64().unwrap() < 3, "{t}");
            // Passing checks do not clear the reason until the target is healthy again.
            assert_eq!(t["reason"], "Target.ResponseCodeMismatch", "{t}");
        }
    })
    .await;
    let probes = b.probes();
    let passes = passes_before(&probes, healthy_at(&t, fetched));
    assert_eq!(passes, 3, "b returned on its third passing probe: {t}");
    assert_eq!(t["reason"], "", "{t}");
    let counts = tally(&proxy, 10).await;
    assert_eq!(counts, HashMap::from([("a".into(), 5), ("b".into(), 5)]));
    proxy.stop().await;
}

#[tokio::test]
async fn a_health_endpoint_slower_than_the_timeout_makes_the_target_unhealthy_with_target_timeout()
{
    let slow = health_backend_on("127.0.0.4", "slow").await;
    slow.set_health_delay(Duration::from_millis(200));
    let proxy = start_proxy(&config(&[slow.addr], &check(&[]))).await;
    let t = watch_until(&proxy, slow.addr, "unhealthy", |t| {
        assert_ne!(t["state"], "healthy", "{t}");
    })
    .await;
    assert_eq!(t["reason"], "Target.Timeout", "{t}");
    assert!(t["consecutive_failures"].as_u64().unwrap() >= 2, "{t}");
    // The probes did arrive; they were answered too late.
    assert!(slow.probe_count() >= 2);
    proxy.stop().await;
}

#[tokio::test]
async fn a_closed_port_makes_the_target_unhealthy_with_failed_health_checks() {
    let closed = {
        let socket = std::net::TcpListener::bind("127.0.0.61:0").unwrap();
        socket.local_addr().unwrap()
    };
    let proxy = start_proxy(&config(&[closed], &check(&[]))).await;
    let t = wait_for_state(proxy.admin, "g", closed, "unhealthy").await;
    assert_eq!(t["reason"], "Target.FailedHealthChecks", "{t}");
    assert!(t["consecutive_failures"].as_u64().unwrap() >= 2, "{t}");
    proxy.stop().await;
}

#[tokio::test]
async fn the_matcher_passes_listed_codes_and_ranges_and_fails_every_other_code() {
    let mut targets = Vec::new();
    for (i, status) in [202, 302, 399, 201, 400].into_iter().enumerate() {
        let t = health_backend_on(&format!("127.0.0.{}", 20 + i), &status.to_string()).await;
        t.set_health_status(status);
        targets.push((status, t));
    }
    let addrs: Vec<SocketAddr> = targets.iter().map(|(_, t)| t.addr).collect();
    let matcher = check(&[
        ("matcher", r#""200,202,300-399""#),
        ("healthy_threshold", "2"),
    ]);
    let proxy = start_proxy(&config(&addrs, &matcher)).await;
    for (status, t) in &targets {
        let passes = [202, 302, 399].contains(status);
        let entry = wait_for_state(
            proxy.admin,
            "g",
            t.addr,
            if passes { "healthy" } else { "unhealthy" },
        )
        .await;
        let reason = if passes {
            ""
        } else {
            "Target.ResponseCodeMismatch"
        };
        assert_eq!(entry["reason"], reason, "{status}: {entry}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn health_checks_use_the_configured_port_and_host_and_the_elb_user_agent() {
    // Traffic and health checks on two ports of one address, as a container with a
    // separate management port.
    let traffic = backend_on("127.0.0.5", "b").await;
    let health = health_endpoint_on("127.0.0.5").await;
    let port = health.addr.port().to_string();
    let settings = check(&[
        ("path", r#""/ping?deep=1""#),
        ("port", &port),
        ("host", r#""hc.example""#),
    ]);
    let proxy = start_proxy(&config(&[traffic.addr], &settings)).await;
    wait_for_state(proxy.admin, "g", traffic.addr, "healthy").await;
    assert_eq!(traffic.hits(), 0, "a probe went to the traffic port");
    let probes = health.probes();
    assert!(probes.len() >= 3);
    for probe in &probes {
        assert_eq!(probe.path, "/ping");
        assert_eq!(probe.headers["host"], "hc.example");
        assert_eq!(probe.headers["user-agent"], "ELB-HealthChecker/2.0");
    }
    assert_eq!(get(&proxy.url("/")).await.body, "b");
    assert_eq!(traffic.hits(), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn tcp_checks_pass_while_the_port_accepts_and_fail_once_it_is_closed() {
    let target = tcp_target_on("127.0.0.6").await;
    let settings = r#"health_check = { protocol = "tcp", interval = "100ms", timeout = "80ms", healthy_threshold = 2, unhealthy_threshold = 2 }"#;
    let proxy = start_proxy(&config(&[target.addr], settings)).await;
    let t = wait_for_state(proxy.admin, "g", target.addr, "healthy").await;
    assert_eq!(t["reason"], "", "{t}");
    assert!(target.accepts() >= 2);

    target.close();
    let t = wait_for_state(proxy.admin, "g", target.addr, "unhealthy").await;
    assert_eq!(t["reason"], "Target.FailedHealthChecks", "{t}");
    proxy.stop().await;
}

#[tokio::test]
async fn a_group_whose_targets_are_all_unhealthy_fails_open_to_every_target() {
    let a = health_backend_on("127.0.0.7", "a").await;
    let b = health_backend_on("127.0.0.8", "b").await;
    a.set_health_status(503);
    b.set_health_status(503);
    let proxy = start_proxy(&config(&[a.addr, b.addr], &check(&[]))).await;
    wait_for_state(proxy.admin, "g", a.addr, "unhealthy").await;
    wait_for_state(proxy.admin, "g", b.addr, "unhealthy").await;
    let before = group_status(proxy.admin, "g").await["fail_open_picks"]
        .as_u64()
        .unwrap();

    let counts = tally(&proxy, 20).await;
    assert_eq!(counts, HashMap::from([("a".into(), 10), ("b".into(), 10)]));
    let after = group_status(proxy.admin, "g").await["fail_open_picks"]
        .as_u64()
        .unwrap();
    assert_eq!(after - before, 20);
    proxy.stop().await;
}

#[tokio::test]
async fn a_slow_health_endpoint_never_sees_two_probes_from_one_target_at_once() {
    // Each probe takes most of the interval (a timeout above the interval is rejected
    // by config validation, as ALB rejects it).
    let slow = health_backend_on("127.0.0.9", "slow").await;
    slow.set_health_delay(Duration::from_millis(250));
    let check = check(&[
        ("interval", r#""300ms""#),
        ("timeout", r#""300ms""#),
        ("healthy_threshold", "2"),
    ]);
    let proxy = start_proxy(&config(&[slow.addr], &check)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Reloads that leave the check as it is keep the probe loop: no second loop, and
    // no restart (whose jitter would show as a short gap).
    assert_eq!(post(&proxy.admin_url("/v1/reload")).await.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let changed = one_group_config(
        &[slow.addr],
        "",
        &format!("algorithm = \"least_outstanding_requests\"\n{check}"),
    );
    proxy.write_config(&changed);
    assert_eq!(post(&proxy.admin_url("/v1/reload")).await.status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;

    assert_eq!(slow.max_concurrent_probes(), 1);
    let probes = slow.probes();
    assert!((3..=6).contains(&probes.len()), "{} probes", probes.len());
    for pair in probes.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(280), "probes {gap:?} apart");
    }
    let t = target_status(proxy.admin, "g", slow.addr).await.unwrap();
    assert_eq!(
        t["state"], "healthy",
        "250 ms is within the 300 ms timeout: {t}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn the_first_probes_of_many_targets_are_spread_over_the_interval() {
    let mut targets = Vec::new();
    for i in 0..20 {
        targets.push(health_backend_on("127.0.0.10", &format!("t{i}")).await);
    }
    let addrs: Vec<SocketAddr> = targets.iter().map(|t| t.addr).collect();
    let settings = check(&[("interval", r#""500ms""#), ("timeout", r#""400ms""#)]);
    let proxy = start_proxy(&config(&addrs, &settings)).await;
    eventually("every target has been probed", async || {
        targets.iter().all(|t| t.probe_count() > 0)
    })
    .await;

    let mut firsts: Vec<Instant> = targets.iter().map(|t| t.probes()[0].at).collect();
    firsts.sort();
    // Uniform over 500 ms, 20 starts span about 450 ms; under 200 ms is about a
    // one-in-a-million draw.
    let spread = firsts[19] - firsts[0];
    assert!(
        spread >= Duration::from_millis(200),
        "first probes span {spread:?}"
    );
    // And they do not bunch up: about one is expected in any 20 ms.
    let most_within_20ms = (0..20)
        .map(|i| {
            firsts[i..]
                .iter()
                .take_while(|&&t| t - firsts[i] < Duration::from_millis(20))
                .count()
        })
        .max()
        .unwrap();
    assert!(
        most_within_20ms <= 8,
        "{most_within_20ms} first probes within 20 ms"
    );
    proxy.stop().await;
}

/// Outlier detection ejecting after 3 consecutive errors, for `base` at first.
fn outlier(base: &str) -> String {
    format!(
        r#"outlier_detection = {{ consecutive_errors = 3, base_ejection_time = "{base}", max_ejection_time = "4s", max_ejection_percent = 50 }}"#
    )
}

#[tokio::test]
async fn a_target_failing_three_requests_in_a_row_is_ejected_for_the_base_ejection_time_then_returns(
) {
    let a = backend_on("127.0.0.11", "a").await;
    let b = backend_on("127.0.0.12", "b").await;
    let proxy = start_proxy(&config(&[a.addr, b.addr], &outlier("500ms"))).await;
    // Round robin over two targets alternates, so after an answer from b the next
    // request goes to a: send a the failing requests and b the others.
    let mut next_is_a = get(&proxy.url("/")).await.body == "b";
    let mut failures = 0;
    while failures < 3 {
        let r = if next_is_a {
            get(&proxy.url("/status?code=503")).await
        } else {
            get(&proxy.url("/")).await
        };
        if next_is_a {
            assert_eq!(r.status, 503, "{r:?}");
            assert_eq!(r.headers["x-backend"], "a", "{r:?}");
            failures += 1;
        } else {
            assert_eq!(r.body, "b", "{r:?}");
        }
        next_is_a = !next_is_a;
    }
    let ejected_at = Instant::now();
    let t = target_status(proxy.admin, "g", a.addr).await.unwrap();
    assert_eq!(t["ejected"], true, "{t}");
    assert_eq!(t["ejections"], 1, "{t}");
    let other = target_status(proxy.admin, "g", b.addr).await.unwrap();
    assert_eq!(other["ejected"], false, "{other}");

    let hits = a.hits();
    let counts = tally(&proxy, 10).await;
    assert_eq!(counts, HashMap::from([("b".into(), 10)]));
    assert_eq!(a.hits(), hits, "an ejected target got traffic");

    eventually("a is no longer ejected", async || {
        let t = target_status(proxy.admin, "g", a.addr).await.unwrap();
        t["ejected"] == false
    })
    .await;
    let ejected_for = ejected_at.elapsed();
    assert!(
        (Duration::from_millis(400)..Duration::from_millis(900)).contains(&ejected_for),
        "ejected for {ejected_for:?}"
    );
    let counts = tally(&proxy, 10).await;
    assert_eq!(counts, HashMap::from([("a".into(), 5), ("b".into(), 5)]));
    proxy.stop().await;
}

#[tokio::test]
async fn outlier_detection_never_ejects_more_than_max_ejection_percent_of_the_group() {
    let mut targets = Vec::new();
    for i in 0..4 {
        targets.push(backend_on(&format!("127.0.0.{}", 30 + i), &format!("t{i}")).await);
    }
    let addrs: Vec<SocketAddr> = targets.iter().map(|t| t.addr).collect();
    // Ejections outlast the test, so ejected targets cannot return and make room.
    let proxy = start_proxy(&config(&addrs, &outlier("3s"))).await;
    let ejected = async || {
        let g = group_status(proxy.admin, "g").await;
        let targets = g["targets"].as_array().unwrap().clone();
        targets.iter().filter(|t| t["ejected"] == true).count()
    };
    for _ in 0..30 {
        let r = get(&proxy.url("/status?code=503")).await;
        // Every failure is the target's own answer: the proxy always had one to pick.
        assert_eq!(r.status, 503, "{r:?}");
        assert!(r.headers.contains_key("x-backend"), "{r:?}");
        assert!(ejected().await <= 2, "more than 50% of the group ejected");
    }
    assert_eq!(ejected().await, 2);
    proxy.stop().await;
}

#[tokio::test]
async fn probes_read_the_answer_and_close_cleanly() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A target whose health answer has a 32 KiB body; after answering, it waits for
    // the next request and tells a clean close (EOF) from a reset.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (clean, resets) = (
        std::sync::Arc::new(AtomicUsize::new(0)),
        std::sync::Arc::new(AtomicUsize::new(0)),
    );
    let (c, r) = (clean.clone(), resets.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (c, r) = (c.clone(), r.clone());
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let body = vec![b'x'; 32 * 1024];
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&body).await;
                match s.read(&mut buf).await {
                    Ok(0) => c.fetch_add(1, Ordering::SeqCst),
                    _ => r.fetch_add(1, Ordering::SeqCst),
                };
            });
        }
    });
    let proxy = start_proxy(&config(&[addr], &check(&[("interval", "\"100ms\"")]))).await;
    eventually("five probes ended", async || {
        clean.load(Ordering::SeqCst) + resets.load(Ordering::SeqCst) >= 5
    })
    .await;
    assert_eq!(
        resets.load(Ordering::SeqCst),
        0,
        "probe connections were reset"
    );
    drop(proxy);
}
