//! Targets leaving and joining a group, through the proxy over real sockets: a target
//! removed by reload drains (its in-flight requests finish, new ones go elsewhere, no
//! request fails) and is dropped once idle or after the deregistration delay; a target
//! that turns healthy ramps up its share of requests over the slow start period.
use crate::support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use support::*;

/// One listener forwarding to group `g` (round robin) over `targets`, with `settings`
/// lines in the group.
fn config(targets: &[SocketAddr], settings: &str) -> String {
    one_group_config(
        targets,
        "",
        &format!("algorithm = \"round_robin\"\n{settings}"),
    )
}

const CHECK: &str = r#"health_check = { path = "/health", interval = "100ms", timeout = "80ms", healthy_threshold = 2, unhealthy_threshold = 2 }"#;

/// The target with a request in flight, once there is one.
async fn busy_target(proxy: &Proxy) -> SocketAddr {
    let mut busy = None;
    eventually("a request is in flight", async || {
        busy = in_flight(proxy.admin)
            .await
            .into_iter()
            .find(|&(_, n)| n > 0)
            .map(|(addr, _)| addr.parse().expect("a target is an address"));
        busy.is_some()
    })
    .await;
    busy.expect("found above")
}

/// One request of a load loop: when it was sent, and its status and body (or why it
/// failed).
type Sent = (Instant, Result<(u16, String), String>);

/// Sends GETs of `url` one after another on one keep-alive connection until `stop`.
async fn load(url: String, stop: Arc<AtomicBool>) -> Vec<Sent> {
    let client = client();
    let mut sent = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let at = Instant::now();
        let req = Request::get(&url)
            .body(Full::<Bytes>::default())
            .expect("a valid request");
        let outcome = match client.request(req).await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                match resp.into_body().collect().await {
                    Ok(body) => Ok((status, String::from_utf8_lossy(&body.to_bytes()).into())),
                    Err(e) => Err(e.to_string()),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        sent.push((at, outcome));
    }
    sent
}

#[tokio::test]
async fn a_target_removed_by_reload_finishes_its_slow_request_while_new_requests_go_elsewhere() {
    let a = health_backend_on("127.0.0.40", "a").await;
    let b = health_backend_on("127.0.0.41", "b").await;
    let settings = format!("deregistration_delay = \"30s\"\n{CHECK}");
    let proxy = start_proxy(&config(&[a.addr, b.addr], &settings)).await;
    wait_for_state(proxy.admin, "g", a.addr, "healthy").await;
    wait_for_state(proxy.admin, "g", b.addr, "healthy").await;
    let url = proxy.url("/slow?ms=1500");
    let slow = tokio::spawn(async move { get(&url).await });
    let busy = busy_target(&proxy).await;
    let (removed, kept) = if busy == a.addr { (&a, &b) } else { (&b, &a) };

    let stop = Arc::new(AtomicBool::new(false));
    let loader = tokio::spawn(load(proxy.url("/"), stop.clone()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.write_config(&config(&[kept.addr], &settings));
    assert_eq!(post(&proxy.admin_url("/v1/reload")).await.status, 200);
    let reloaded = Instant::now();
    let t = target_status(proxy.admin, "g", removed.addr)
        .await
        .expect("a draining target stays listed");
    assert_eq!(t["state"], "draining", "{t}");
    assert_eq!(t["reason"], "Target.DeregistrationInProgress", "{t}");
    assert_eq!(t["in_flight"], 1, "{t}");
    assert!(t["draining_for_seconds"].as_f64().unwrap() < 0.5, "{t}");
    let probes_at_reload = removed.probe_count();

    let r = slow.await.unwrap();
    assert_eq!(
        (r.status.as_u16(), r.body.as_str()),
        (200, removed.name.as_str())
    );
    let finished = Instant::now();
    stop.store(true, Ordering::SeqCst);
    let sent = loader.await.unwrap();

    let failed: Vec<&Sent> = sent
        .iter()
        .filter(|(_, o)| !matches!(o, Ok((200, _))))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        sent.len()
    );
    let after: Vec<&str> = sent
        .iter()
        .filter(|(at, _)| *at > reloaded)
        .filter_map(|(_, o)| o.as_ref().ok().map(|(_, body)| body.as_str()))
        .collect();
    assert!(
        after.len() >= 20,
        "only {} requests while draining",
        after.len()
    );
    assert!(after.iter().all(|&body| body == kept.name), "{after:?}");
    // A draining target is no longer health checked (one probe may have been under way).
    assert!(removed.probe_count() <= probes_at_reload + 1);

    eventually("the drained target leaves the group", async || {
        target_status(proxy.admin, "g", removed.addr)
            .await
            .is_none()
    })
    .await;
    let idle_for = finished.elapsed();
    assert!(
        idle_for < Duration::from_secs(1),
        "dropped {idle_for:?} after going idle"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_draining_target_is_dropped_after_the_deregistration_delay_even_with_a_request_running() {
    // A real proxy has been up for longer than the delay; make sure this one has too,
    // since its clock starts with the process.
    while ecslb::target::now_ms() < 700 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a = backend_on("127.0.0.42", "a").await;
    let b = backend_on("127.0.0.43", "b").await;
    let settings = "deregistration_delay = \"500ms\"";
    let proxy = start_proxy(&config(&[a.addr, b.addr], settings)).await;
    let url = proxy.url("/slow?ms=3000");
    // Never awaited: the proxy task and this request end with the test's runtime.
    let _slow = tokio::spawn(async move { try_get(&url).await });
    let removed = busy_target(&proxy).await;
    let kept = if removed == a.addr { b.addr } else { a.addr };

    proxy.write_config(&config(&[kept], settings));
    assert_eq!(post(&proxy.admin_url("/v1/reload")).await.status, 200);
    let reloaded = Instant::now();
    let t = target_status(proxy.admin, "g", removed)
        .await
        .expect("a busy removed target drains");
    assert_eq!(t["state"], "draining", "{t}");
    assert_eq!(t["in_flight"], 1, "{t}");

    eventually("the draining target leaves the group", async || {
        target_status(proxy.admin, "g", removed).await.is_none()
    })
    .await;
    let drained_after = reloaded.elapsed();
    // The sweep runs every 200 ms.
    assert!(
        (Duration::from_millis(450)..Duration::from_millis(1000)).contains(&drained_after),
        "dropped {drained_after:?} after the reload"
    );
}

#[tokio::test]
async fn a_target_in_slow_start_takes_a_linearly_rising_share_of_requests() {
    let a = health_backend_on("127.0.0.44", "a").await;
    let b = health_backend_on("127.0.0.45", "b").await;
    b.set_health_status(500);
    let settings = format!("slow_start = \"2s\"\n{CHECK}");
    let proxy = start_proxy(&config(&[a.addr, b.addr], &settings)).await;
    // a turned healthy first and ramped alone; it is established once 2 s have passed.
    wait_for_state(proxy.admin, "g", a.addr, "healthy").await;
    eventually("a is out of slow start", async || {
        let t = target_status(proxy.admin, "g", a.addr).await.unwrap();
        t["healthy_for_seconds"].as_f64().unwrap() >= 2.05
    })
    .await;
    wait_for_state(proxy.admin, "g", b.addr, "unhealthy").await;

    b.set_health_status(200);
    let client = client();
    let mut replies: Vec<(Instant, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let req = Request::get(proxy.url("/")).body(Full::default()).unwrap();
        let r = send(&client, req).await;
        assert_eq!(r.status, 200, "{r:?}");
        replies.push((Instant::now(), r.body));
        // b turns healthy with its second passing probe: stop 2.6 s after that.
        let passing: Vec<Instant> = b
            .probes()
            .iter()
            .filter(|p| p.status == 200)
            .map(|p| p.at)
            .collect();
        if passing.len() >= 2 && passing[1].elapsed() > Duration::from_millis(2600) {
            break;
        }
        assert!(Instant::now() < deadline, "b did not turn healthy");
    }
    let t = target_status(proxy.admin, "g", b.addr).await.unwrap();
    let healthy_at =
        Instant::now() - Duration::from_secs_f64(t["healthy_for_seconds"].as_f64().unwrap());

    // b's share of the requests answered in each half second since it turned healthy;
    // round robin with a at its full share gives b half of its ramp: 6.25%, 18.75%,
    // 31.25%, 43.75%, then 50%.
    let shares: Vec<f64> = (0..5)
        .map(|k| {
            let from = healthy_at + Duration::from_millis(500 * k);
            let to = from + Duration::from_millis(500);
            let window: Vec<&String> = replies
                .iter()
                .filter(|(at, _)| (from..to).contains(at))
                .map(|(_, body)| body)
                .collect();
            assert!(
                window.len() >= 200,
                "only {} requests in window {k}",
                window.len()
            );
            let to_b = window.iter().filter(|&&body| body == "b").count();
            100.0 * to_b as f64 / window.len() as f64
        })
        .collect();
    // Tolerance: each window within 10 points of that ideal ramp. At the thousands of
    // requests a window holds, one standard deviation is about one point.
    let ideal = [6.25, 18.75, 31.25, 43.75, 50.0];
    for (share, ideal) in shares.iter().zip(ideal) {
        assert!((share - ideal).abs() <= 10.0, "{shares:?}, ideal {ideal}");
    }
    proxy.stop().await;
}
