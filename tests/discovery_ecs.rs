//! ECS and Cloud Map discovery end to end: the real ecslb binary, through the real AWS
//! SDK, against the emulated ECS cluster (moto with ecslb's patches), whose tasks are
//! real HTTP servers on their discovered addresses.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use support::moto::Cluster;
use support::*;

/// Every emulated cluster seeds the same addresses (127.16.1.4:8080, ...), so the
/// tests of this file take turns.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config<'a>(group: &'a str, extra: &'a str) -> impl Fn(SocketAddr, SocketAddr) -> String + 'a {
    move |listener, admin| {
        format!(
            r#"
[admin]
listen = "{admin}"
[[listeners]]
name = "web"
bind = "{listener}"
default_action = {{ forward = "g" }}
[target_groups.g]
deregistration_delay = "5s"
{extra}
discovery = {{ {group} }}
"#
        )
    }
}

const WEB: &str = r#"ecs = { cluster = "demo", service = "web", container = "app", port = 8080, refresh = "200ms", full_refresh = "400ms" }"#;
const API: &str = r#"ecs = { cluster = "demo", service = "api", container = "app", port = 8080, refresh = "200ms", full_refresh = "400ms" }"#;

/// The tasks (by the `hello from <task>` answers) that `n` requests reach.
async fn answering(binary: &Binary, n: usize) -> HashSet<String> {
    let client = client();
    let mut seen = HashSet::new();
    for _ in 0..n {
        let req = http::Request::get(binary.url("/"))
            .body(Default::default())
            .unwrap();
        let r = send(&client, req).await;
        assert_eq!(r.status, 200, "{r:?}");
        seen.insert(r.body.trim().to_owned());
    }
    seen
}

/// Waits (up to 10 s) until `n` requests reach exactly `want` distinct tasks.
async fn wait_for_tasks(binary: &Binary, want: usize) -> HashSet<String> {
    let mut seen = HashSet::new();
    for _ in 0..100 {
        seen = answering(binary, want * 6).await;
        if seen.len() == want {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "wanted {want} tasks, requests reached {}: {seen:?}",
        seen.len()
    );
}

/// The group's targets and their states, from `/v1/targets`.
async fn target_states(binary: &Binary) -> Vec<(String, String)> {
    let r = get(&binary.admin_url("/v1/targets")).await;
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    v["target_groups"][0]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let field = |k: &str| t[k].as_str().unwrap().to_owned();
            (field("target"), field("state"))
        })
        .collect()
}

/// The addresses of the group's targets that are not draining.
async fn targets(binary: &Binary) -> Vec<String> {
    let all = target_states(binary).await;
    all.into_iter()
        .filter(|(_, s)| s != "draining")
        .map(|(t, _)| t)
        .collect()
}

/// Health checks as a target group behind ALB has them: a task's address is known
/// before its server listens, and checks keep it out of rotation until it answers.
const CHECKS: &str = r#"health_check = { path = "/", interval = "100ms", timeout = "90ms", healthy_threshold = 2, unhealthy_threshold = 2 }"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awsvpc_tasks_are_targets_at_their_eni_address_and_follow_scaling() {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = Cluster::start();
    let binary = start_binary_with_env(config(WEB, CHECKS), &cluster.env()).await;
    wait_for_tasks(&binary, 3).await;
    let mut addrs = targets(&binary).await;
    addrs.sort();
    assert_eq!(
        addrs,
        ["127.16.1.4:8080", "127.16.1.5:8080", "127.16.1.6:8080"]
    );
    // The tasks label their series, and Prometheus can discover them from ecslb.
    let metrics = get(&binary.admin_url("/metrics")).await.body;
    let task = cluster.tasks("web").await[0]
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    assert!(
        metrics.contains(&format!(r#"ecs_task="{task}",ecs_service="web"}}"#)),
        "{metrics}"
    );
    let sd: serde_json::Value =
        serde_json::from_str(&get(&binary.admin_url("/v1/sd/prometheus")).await.body).unwrap();
    let entries = sd.as_array().unwrap();
    assert_eq!(entries.len(), 3);
    assert!(
        entries
            .iter()
            .all(|e| e["labels"]["__meta_ecslb_ecs_service"] == "web"),
        "{sd}"
    );

    cluster.scale("web", 5).await;
    wait_for_tasks(&binary, 5).await;
    cluster.scale("web", 2).await;
    wait_for_tasks(&binary, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_tasks_are_targets_on_their_dynamic_host_ports() {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = Cluster::start();
    let binary = start_binary_with_env(config(API, CHECKS), &cluster.env()).await;
    wait_for_tasks(&binary, 2).await;
    // Four tasks on two instances: two per instance, each on its own host port.
    cluster.scale("api", 4).await;
    wait_for_tasks(&binary, 4).await;
    let addrs = targets(&binary).await;
    let on = |ip: &str| addrs.iter().filter(|a| a.starts_with(ip)).count();
    assert_eq!((on("127.0.0.21:"), on("127.0.0.22:")), (2, 2), "{addrs:?}");
    assert!(
        addrs.iter().all(|a| !a.ends_with(":8080")),
        "host ports, not the container port: {addrs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_health_turns_unhealthy_leaves() {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = Cluster::start();
    let binary = start_binary_with_env(config(WEB, ""), &cluster.env()).await;
    let before = wait_for_tasks(&binary, 3).await;
    let arn = cluster.tasks("web").await.remove(0);
    cluster.set_health(&arn, "UNHEALTHY").await;
    let after = wait_for_tasks(&binary, 2).await;
    let id = arn.rsplit('/').next().unwrap();
    assert!(before.iter().any(|b| b.contains(id)));
    assert!(!after.iter().any(|b| b.contains(id)), "{after:?}");
}

/// The states of the group's targets.
async fn states(binary: &Binary) -> Vec<String> {
    target_states(binary)
        .await
        .into_iter()
        .map(|(_, s)| s)
        .collect()
}

async fn wait_until_healthy(binary: &Binary, n: usize) {
    for _ in 0..100 {
        if states(binary)
            .await
            .iter()
            .filter(|s| *s == "healthy")
            .count()
            == n
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never {n} healthy targets: {:?}", states(binary).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_replacement_of_every_task_fails_no_request() {
    // Stopping tasks keep serving for 1 s (desiredStatus STOPPED, lastStatus RUNNING),
    // as ECS's stop timeout lets them. Each task is stopped in turn once its replacement
    // is healthy, as an ECS deployment with minimumHealthyPercent does.
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = Cluster::start_with(&["--stop-delay", "1"]);
    let binary = start_binary_with_env(config(WEB, CHECKS), &cluster.env()).await;
    wait_until_healthy(&binary, 3).await;
    let before = wait_for_tasks(&binary, 3).await;

    let url = binary.url("/");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = std::sync::Arc::clone(&stop);
    let load = tokio::spawn(async move {
        let client = client();
        let (mut ok, mut failed) = (0, Vec::new());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !stopped.load(std::sync::atomic::Ordering::Relaxed)
            && tokio::time::Instant::now() < deadline
        {
            let req = http::Request::get(&url).body(Default::default()).unwrap();
            match client.request(req).await {
                Ok(r) if r.status() == 200 => ok += 1,
                Ok(r) => failed.push(r.status().to_string()),
                Err(e) => failed.push(e.to_string()),
            }
        }
        (ok, failed)
    });
    let ecs = cluster.ecs();
    for arn in cluster.tasks("web").await {
        ecs.stop_task()
            .cluster("demo")
            .task(&arn)
            .send()
            .await
            .unwrap();
        // The replacement must turn healthy, and the stopped task finish draining.
        tokio::time::sleep(Duration::from_millis(300)).await;
        wait_until_healthy(&binary, 3).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = load.await.unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}\n{}",
        failed.len(),
        ok + failed.len(),
        binary.log()
    );
    assert!(ok > 100, "the load ran: {ok} requests");
    let after = wait_for_tasks(&binary, 3).await;
    assert!(
        before.is_disjoint(&after),
        "every task was replaced: {before:?} / {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ecs_outage_keeps_the_last_targets_and_updates_resume_after() {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = Cluster::start();
    let binary = start_binary_with_env(config(WEB, CHECKS), &cluster.env()).await;
    wait_for_tasks(&binary, 3).await;
    cluster.fail(503, -1).await;
    // Until discovery has failed (the SDK retries first, with backoff) and for several
    // refreshes more, with requests flowing: none fails and the targets stay.
    let failed = r#"ecslb_discovery_refresh_total{target_group="g",result="failure"}"#;
    let mut polls_failed = 0;
    for _ in 0..200 {
        assert_eq!(answering(&binary, 10).await.len(), 3);
        if get(&binary.admin_url("/metrics"))
            .await
            .body
            .contains(failed)
        {
            polls_failed += 1;
            if polls_failed == 10 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        polls_failed, 10,
        "discovery never reported a failed refresh"
    );
    cluster.heal().await;
    cluster.scale("web", 4).await;
    wait_for_tasks(&binary, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_ecs_endpoint_keeps_the_targets_and_updates_resume_after() {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = Cluster::start();
    let gate = support::moto::Gate::open(&cluster).await;
    let binary = start_binary_with_env(config(WEB, CHECKS), &gate.env(&cluster)).await;
    wait_for_tasks(&binary, 3).await;
    // The endpoint goes away (connections refused) for many refreshes, with requests
    // flowing throughout: none fails and the targets stay.
    // The SDK retries a refused call twice, with up to 3 s of backoff, before discovery
    // sees the failure; the outage lasts at least 2.5 s and until it has been seen.
    gate.close().await;
    let failed = r#"ecslb_discovery_refresh_total{target_group="g",result="failure"}"#;
    let started = tokio::time::Instant::now();
    let mut requests = 0;
    let mut seen = false;
    while started.elapsed() < Duration::from_secs(20) {
        assert_eq!(answering(&binary, 10).await.len(), 3);
        requests += 10;
        if started.elapsed() >= Duration::from_millis(2500) {
            seen = get(&binary.admin_url("/metrics"))
                .await
                .body
                .contains(failed);
            if seen {
                break;
            }
        }
    }
    assert!(seen, "discovery never failed while the endpoint was gone");
    assert_eq!(targets(&binary).await.len(), 3);
    // Meanwhile the service grew; once the endpoint is back, ecslb sees it.
    cluster.scale("web", 4).await;
    gate.reopen().await;
    wait_for_tasks(&binary, 4).await;
    assert!(requests >= 100, "{requests} requests during the outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_ecs_endpoint_times_out_and_keeps_the_targets() {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = Cluster::start();
    let gate = support::moto::Gate::open(&cluster).await;
    let with_timeout = |listener, admin| {
        format!(
            "[aws]\napi_timeout = \"300ms\"\n{}",
            config(WEB, CHECKS)(listener, admin)
        )
    };
    let binary = start_binary_with_env(with_timeout, &gate.env(&cluster)).await;
    wait_for_tasks(&binary, 3).await;
    // Connections are accepted and never answered: without a timeout, the poll would
    // wait for ever and no failure would ever be reported or retried.
    gate.silence().await;
    let failed = r#"ecslb_discovery_refresh_total{target_group="g",result="failure"}"#;
    let started = tokio::time::Instant::now();
    let mut seen = false;
    while !seen && started.elapsed() < Duration::from_secs(20) {
        assert_eq!(answering(&binary, 10).await.len(), 3);
        seen = get(&binary.admin_url("/metrics"))
            .await
            .body
            .contains(failed);
    }
    assert!(seen, "no poll failed while the endpoint was silent");
    // The failure is counted just before it is logged.
    eventually("the log says the call timed out", async || {
        binary.log().contains("timeout")
    })
    .await;
    assert_eq!(targets(&binary).await.len(), 3);
    cluster.scale("web", 4).await;
    gate.reopen().await;
    wait_for_tasks(&binary, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_cluster_costs_one_list_tasks_per_refresh_and_no_describe() {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = Cluster::start();
    let slow_full = r#"ecs = { cluster = "demo", service = "web", container = "app", port = 8080, refresh = "200ms", full_refresh = "1h" }"#;
    let binary = start_binary_with_env(config(slow_full, ""), &cluster.env()).await;
    wait_for_tasks(&binary, 3).await;
    let refreshes = |text: &str| {
        metric(
            text,
            r#"ecslb_discovery_refresh_total{target_group="g",result="success"}"#,
        )
    };
    let before = refreshes(&get(&binary.admin_url("/metrics")).await.body);
    cluster.reset_calls().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls = cluster.calls().await;
    let after = refreshes(&get(&binary.admin_url("/metrics")).await.body);
    let list = calls["ECS.ListTasks"].as_u64().unwrap_or(0);
    // A poll can be under way at either end of the window: one call either way.
    assert!(
        list.abs_diff(after - before) <= 1 && list >= 3,
        "one ListTasks per refresh: {list} calls for {} refreshes ({calls})",
        after - before
    );
    assert_eq!(
        calls.get("ECS.DescribeTasks"),
        None,
        "no DescribeTasks for known tasks: {calls}"
    );
}

/// The value of a sample in a Prometheus exposition (0 when absent).
fn metric(text: &str, series: &str) -> u64 {
    support::sample(text, series).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_map_instances_are_targets_and_unhealthy_ones_leave() {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = Cluster::start();
    let cloud_map = r#"cloud_map = { namespace = "local", service = "web", health_status = "HEALTHY", refresh = "200ms" }"#;
    let binary = start_binary_with_env(config(cloud_map, ""), &cluster.env()).await;
    wait_for_tasks(&binary, 3).await;
    let arn = cluster.tasks("web").await.remove(0);
    cluster.set_health(&arn, "UNHEALTHY").await;
    wait_for_tasks(&binary, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_keeps_the_discovery_settings_keeps_the_discovered_state() {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = Cluster::start();
    let slow_full = r#"ecs = { cluster = "demo", service = "web", container = "app", port = 8080, refresh = "200ms", full_refresh = "1h" }"#;
    let binary = start_binary_with_env(config(slow_full, ""), &cluster.env()).await;
    wait_for_tasks(&binary, 3).await;
    cluster.reset_calls().await;
    // Same discovery, another setting changed.
    binary.write_config(&config(
        slow_full,
        "algorithm = \"least_outstanding_requests\"",
    )(binary.addr, binary.admin));
    assert_eq!(post(&binary.admin_url("/v1/reload")).await.status, 200);
    assert_eq!(
        answering(&binary, 30).await.len(),
        3,
        "no target lost across the reload"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let calls = cluster.calls().await;
    assert_eq!(
        calls.get("ECS.DescribeTasks"),
        None,
        "the running provider kept its known tasks: {calls}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_calls_are_held_to_the_configured_rate() {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = Cluster::start();
    let fast = r#"ecs = { cluster = "demo", service = "web", container = "app", port = 8080, refresh = "100ms", full_refresh = "1h" }"#;
    let limited = |listener, admin| {
        format!(
            "[aws]\napi_rate = 2\napi_burst = 1\n{}",
            config(fast, "")(listener, admin)
        )
    };
    let binary = start_binary_with_env(limited, &cluster.env()).await;
    wait_for_tasks(&binary, 3).await;
    cluster.reset_calls().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls = cluster.calls().await;
    let list = calls["ECS.ListTasks"].as_u64().unwrap_or(0);
    // Unlimited, a 100 ms refresh would make about 30 calls in 3 s; at 2 per second, 6
    // (one more if a token was saved up when the window opened).
    assert!(
        (4..=7).contains(&list),
        "{list} ListTasks calls in 3 s at 2/s: {calls}"
    );
}

/// The fleet of the cold-start test: one service of 1,000 awsvpc tasks.
const FLEET_TASKS: usize = 1_000;
/// ECS's page size: `ListTasks` answers up to 100 ARNs, `DescribeTasks` takes up to 100.
const ECS_PAGE: usize = 100;

/// Every target group's non-draining targets, by group name, from `/v1/targets`.
async fn group_targets(binary: &Binary) -> std::collections::HashMap<String, HashSet<String>> {
    let r = get(&binary.admin_url("/v1/targets")).await;
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    v["target_groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let targets = g["targets"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["state"] != "draining")
                .map(|t| t["target"].as_str().unwrap().to_owned())
                .collect();
            (g["name"].as_str().unwrap().to_owned(), targets)
        })
        .collect()
}

/// How much later than ecslb took its token a call may reach the emulator (scheduling
/// and the emulator's GIL), on top of what the token bucket allows.
const ARRIVAL_JITTER: f64 = 0.1;

/// The calls' arrival times (sorted) against a token bucket of `rate` per second and
/// `burst` saved up: panics with the window of calls that exceeds
/// `burst + rate × (window + ARRIVAL_JITTER)`, if any; else answers a summary (peak
/// calls in one second, the worst window's margin).
fn assert_held_to(times: &[f64], rate: f64, burst: f64, context: &str) -> String {
    // The window the bucket holds worst: calls first..=last, and how far over they are.
    let mut worst = (0, 0, f64::NEG_INFINITY);
    for first in 0..times.len() {
        for last in first..times.len() {
            let calls = (last - first + 1) as f64;
            let excess = calls - (burst + rate * (times[last] - times[first]));
            if excess > worst.2 {
                worst = (first, last, excess);
            }
        }
    }
    let peak = (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|&&t| t < times[i] + 1.0)
                .count()
        })
        .max()
        .unwrap_or(0);
    let (first, last, excess) = worst;
    let summary = format!(
        "peak {peak} calls in 1 s; worst window {excess:+.2} calls against {burst} + {rate}/s"
    );
    assert!(
        excess <= rate * ARRIVAL_JITTER,
        "{} calls arrived in {:.3} s (t = {:.3} .. {:.3}): at {rate}/s with a burst of \
         {burst} the limiter lets {:.2} through ({:.2} with {ARRIVAL_JITTER} s of arrival \
         jitter). {summary}. {context}",
        last - first + 1,
        times[last] - times[first],
        times[first],
        times[last],
        burst + rate * (times[last] - times[first]),
        burst + rate * (times[last] - times[first] + ARRIVAL_JITTER),
    );
    summary
}

/// The arrival times of the logged calls, sorted.
fn arrival_times(log: &[support::moto::Call]) -> Vec<f64> {
    let mut times: Vec<f64> = log.iter().map(|c| c.t).collect();
    times.sort_by(f64::total_cmp);
    times
}

/// A listener forwarding by weight to `forward` (a list of `{ group, weight }`), with
/// `groups` and the AWS API limited to `rate` calls per second, bursts of `burst`.
fn limited_config(
    rate: f64,
    burst: f64,
    listener: SocketAddr,
    admin: SocketAddr,
    forward: &str,
    groups: &str,
) -> String {
    format!(
        r#"
[aws]
api_rate = {rate}
api_burst = {burst}
[admin]
listen = "{admin}"
[[listeners]]
name = "web"
bind = "{listener}"
default_action = {{ forward = [{forward}] }}
{groups}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_start_of_1000_tasks_is_economical_and_held_to_the_rate_limit() {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = Cluster::start_with_fleet("fleet", FLEET_TASKS);
    // The fleet's service in three target groups (one per port, as an ECS service
    // registered with several target groups), all cold at once and drawing on the
    // process's one limiter. Their 60 calls take 5 s at 10 per second with a burst of
    // 10; unlimited, the emulator answers them in about 1.3 s (54 in one second), and
    // with a limiter per group they would be 3 times the rate. A refresh of 1 h keeps
    // the test to the cold start: one poll per group. (The binary must be ready, i.e.
    // every group discovered, within the 10 s `start_binary_with_env` waits.)
    const RATE: f64 = 10.0;
    const BURST: f64 = 10.0;
    const PORTS: [u16; 3] = [8080, 8081, 9090];
    let config = |listener, admin| {
        let forward: Vec<String> = PORTS
            .iter()
            .map(|p| format!(r#"{{ group = "fleet-{p}", weight = 1 }}"#))
            .collect();
        let groups: String = PORTS
            .iter()
            .map(|p| {
                format!(
                    r#"
[target_groups.fleet-{p}]
discovery = {{ ecs = {{ cluster = "demo", service = "fleet", container = "app", port = {p}, refresh = "1h" }} }}
"#
                )
            })
            .collect();
        limited_config(RATE, BURST, listener, admin, &forward.join(", "), &groups)
    };
    cluster.reset_calls().await;
    let started = std::time::Instant::now();
    // Ready once every group has had its first discovery.
    let binary = start_binary_with_env(config, &cluster.env()).await;
    let cold_start = started.elapsed();
    let log = cluster.call_log().await;
    let targets = group_targets(&binary).await;

    // Every task is a target of every group.
    let tasks = cluster.task_addresses("fleet").await;
    assert_eq!(tasks.len(), FLEET_TASKS, "the emulator runs the fleet");
    for port in PORTS {
        let group = format!("fleet-{port}");
        let want: HashSet<String> = tasks.iter().map(|ip| format!("{ip}:{port}")).collect();
        let got = targets.get(&group).cloned().unwrap_or_default();
        assert!(
            got == want,
            "{group}: {} targets, {} of the {} tasks missing, {} unknown addresses",
            got.len(),
            want.difference(&got).count(),
            want.len(),
            got.difference(&want).count()
        );
    }

    // One ListTasks per page of 100 ARNs and one DescribeTasks per 100 tasks, per
    // group; nothing else (awsvpc tasks need no container instance lookups).
    let count = |action: &str| log.iter().filter(|c| c.action == action).count();
    let pages = FLEET_TASKS.div_ceil(ECS_PAGE) * PORTS.len();
    let summary = format!(
        "{} calls in {:.2} s ({} ListTasks, {} DescribeTasks); cold start {:.2} s",
        log.len(),
        log.last().map_or(0.0, |c| c.t) - log.first().map_or(0.0, |c| c.t),
        count("ECS.ListTasks"),
        count("ECS.DescribeTasks"),
        cold_start.as_secs_f64()
    );
    assert_eq!(
        count("ECS.ListTasks"),
        pages,
        "ListTasks pages of {ECS_PAGE} for {FLEET_TASKS} tasks in {} groups: {summary}",
        PORTS.len()
    );
    assert_eq!(
        count("ECS.DescribeTasks"),
        pages,
        "DescribeTasks batches of {ECS_PAGE} for {FLEET_TASKS} tasks in {} groups: {summary}",
        PORTS.len()
    );
    assert_eq!(log.len(), 2 * pages, "no other calls: {log:?}");
    assert!(
        log.iter().all(|c| c.status == 200),
        "every call answered 200: {log:?}"
    );

    // In no window did more calls arrive than the bucket lets through.
    let held = assert_held_to(&arrival_times(&log), RATE, BURST, &summary);
    println!("{summary}; {held}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_map_and_ec2_calls_draw_on_the_same_limiter() {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = Cluster::start();
    // A Cloud Map group and a bridge-mode ECS group (whose cold start looks up its
    // container instances: ECS DescribeContainerInstances, then EC2 DescribeInstances),
    // both polling every 100 ms: 20 calls a second wanted, 4 allowed.
    const RATE: f64 = 4.0;
    const BURST: f64 = 1.0;
    let config = |listener, admin| {
        limited_config(
            RATE,
            BURST,
            listener,
            admin,
            r#"{ group = "map", weight = 1 }, { group = "api", weight = 1 }"#,
            r#"
[target_groups.map]
discovery = { cloud_map = { namespace = "local", service = "web", refresh = "100ms" } }
[target_groups.api]
discovery = { ecs = { cluster = "demo", service = "api", container = "app", port = 8080, refresh = "100ms", full_refresh = "1h" } }
"#,
        )
    };
    cluster.reset_calls().await;
    let _binary = start_binary_with_env(config, &cluster.env()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = cluster.call_log().await;
    let count = |action: &str| log.iter().filter(|c| c.action == action).count();
    let mut calls = std::collections::BTreeMap::new();
    for c in &log {
        *calls.entry(c.action.as_str()).or_insert(0) += 1;
    }
    assert_eq!(
        (
            count("EC2.DescribeInstances"),
            count("ECS.DescribeContainerInstances")
        ),
        (1, 1),
        "one instance lookup at the cold start: {calls:?}"
    );
    let times = arrival_times(&log);
    let span = times.last().unwrap() - times.first().unwrap();
    assert!(
        times.len() as f64 >= 0.8 * (BURST + RATE * span),
        "wanting more, the groups ran at the limit: {} calls in {span:.2} s: {calls:?}",
        times.len()
    );
    let held = assert_held_to(&times, RATE, BURST, &format!("{calls:?}"));
    println!("{calls:?}; {held}");
}
