//! ECS and Cloud Map discovery end to end: the real ecslb binary, through the real AWS
//! SDK, against the emulated ECS cluster (moto with ecslb's patches), whose tasks are
//! real HTTP servers on their discovered addresses.
#![allow(clippy::unwrap_used)]

mod support;

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
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
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
