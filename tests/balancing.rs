//! Balancing through the proxy: how each algorithm spreads requests over three real
//! targets, and how `lb_cookie` and `app_cookie` stickiness keep a client on one.
use crate::support;

use std::collections::HashMap;

use support::*;

/// A listener forwarding everything to group `g` over `targets`, with extra lines for
/// the group (algorithm, stickiness).
fn config(group_settings: &str, targets: &[&Backend]) -> String {
    let addrs: Vec<_> = targets.iter().map(|b| b.addr).collect();
    one_group_config(&addrs, "", group_settings)
}

async fn three_backends() -> [Backend; 3] {
    [
        backend_on("127.0.0.2", "a").await,
        backend_on("127.0.0.3", "b").await,
        backend_on("127.0.0.4", "c").await,
    ]
}

/// Sends `n` sequential GETs (with `headers`) and counts the backend that answered each.
async fn tally(url: &str, n: usize, headers: &[(&str, &str)]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let r = get_with(url, headers).await;
        assert_eq!(r.status, 200, "{r:?}");
        *counts.entry(r.body).or_default() += 1;
    }
    counts
}

/// `name=value` of the cookie `name` set by the response, if any.
fn set_cookie(reply: &Reply, name: &str) -> Option<String> {
    reply
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap_or(v).to_owned())
}

fn spawn_get(url: String, headers: Vec<(String, String)>) -> tokio::task::JoinHandle<Reply> {
    tokio::spawn(async move {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        get_with(&url, &headers).await
    })
}

#[tokio::test]
async fn round_robin_spreads_sequential_requests_exactly_evenly() {
    let backends = three_backends().await;
    let proxy = start_proxy(&config(
        r#"algorithm = "round_robin""#,
        &backends.each_ref(),
    ))
    .await;
    let counts = tally(&proxy.url("/"), 300, &[]).await;
    assert_eq!(
        counts,
        HashMap::from([("a".into(), 100), ("b".into(), 100), ("c".into(), 100)])
    );
    proxy.stop().await;
}

#[tokio::test]
async fn weighted_random_gives_equal_weights_about_a_third_each() {
    let backends = three_backends().await;
    let proxy = start_proxy(&config(
        r#"algorithm = "weighted_random""#,
        &backends.each_ref(),
    ))
    .await;
    let counts = tally(&proxy.url("/"), 1500, &[]).await;
    // Each share is binomial(1500, 1/3): one standard deviation is 1.2 points, so
    // ±6 points is about 5 sigma (a flake once in several million runs).
    for b in &backends {
        let share = 100.0 * *counts.get(&b.name).unwrap_or(&0) as f64 / 1500.0;
        assert!(
            (27.0..=39.5).contains(&share),
            "{} got {share:.1}% ({counts:?})",
            b.name
        );
    }
    proxy.stop().await;
}

#[tokio::test]
async fn least_outstanding_requests_sends_new_requests_to_the_idle_target() {
    let backends = three_backends().await;
    let proxy = start_proxy(&config(
        r#"algorithm = "least_outstanding_requests""#,
        &backends.each_ref(),
    ))
    .await;
    // Two slow requests take two different targets (each goes to one with nothing in flight).
    let slow: Vec<_> = (0..2)
        .map(|_| spawn_get(proxy.url("/slow?ms=1500"), vec![]))
        .collect();
    eventually("both slow requests reach a target", async || {
        backends.iter().map(Backend::hits).sum::<usize>() == 2
    })
    .await;
    let idle: Vec<&Backend> = backends.iter().filter(|b| b.hits() == 0).collect();
    assert_eq!(
        idle.len(),
        1,
        "the slow requests went to two different targets"
    );

    let counts = tally(&proxy.url("/"), 30, &[]).await;
    assert_eq!(counts, HashMap::from([(idle[0].name.clone(), 30)]));
    for s in slow {
        assert_eq!(s.await.unwrap().status, 200);
    }
    proxy.stop().await;
}

#[tokio::test]
async fn least_outstanding_requests_avoids_a_target_busy_with_slow_requests() {
    let backends = three_backends().await;
    let settings = r#"
algorithm = "least_outstanding_requests"
stickiness = { type = "lb_cookie", duration = "1h" }"#;
    let proxy = start_proxy(&config(settings, &backends.each_ref())).await;
    // Stickiness piles three slow requests onto one target.
    let first = get(&proxy.url("/")).await;
    let busy = backends.iter().find(|b| b.name == first.body).unwrap();
    let cookie = set_cookie(&first, "AWSALB").expect("AWSALB is set");
    let slow: Vec<_> = (0..3)
        .map(|_| {
            spawn_get(
                proxy.url("/slow?ms=1500"),
                vec![("cookie".into(), cookie.clone())],
            )
        })
        .collect();
    eventually(
        "three requests are in flight on the busy target",
        async || in_flight(proxy.admin).await[&busy.addr.to_string()] == 3,
    )
    .await;

    let counts = tally(&proxy.url("/"), 40, &[]).await;
    assert!(!counts.contains_key(&busy.name), "{counts:?}");
    assert_eq!(
        counts.len(),
        2,
        "both idle targets share the new requests: {counts:?}"
    );
    for s in slow {
        let r = s.await.unwrap();
        assert_eq!(
            (r.status.as_u16(), r.body.as_str()),
            (200, busy.name.as_str())
        );
    }
    proxy.stop().await;
}

#[tokio::test]
async fn lb_cookie_keeps_a_client_on_its_first_target() {
    let backends = three_backends().await;
    let settings = r#"stickiness = { type = "lb_cookie", duration = "1h" }"#;
    let proxy = start_proxy(&config(settings, &backends.each_ref())).await;
    let first = get(&proxy.url("/")).await;
    let header = first.headers.get("set-cookie").unwrap().to_str().unwrap();
    assert!(header.starts_with("AWSALB="), "{header}");
    assert!(header.contains("Max-Age=3600"), "{header}");
    let cookie = set_cookie(&first, "AWSALB").unwrap();

    let counts = tally(
        &proxy.url("/"),
        30,
        &[("cookie", &format!("other=1; {cookie}"))],
    )
    .await;
    assert_eq!(counts, HashMap::from([(first.body.clone(), 30)]));
    proxy.stop().await;
}

#[tokio::test]
async fn lb_cookie_naming_a_target_that_left_the_group_falls_back_to_normal_picking() {
    let backends = three_backends().await;
    let settings = r#"stickiness = { type = "lb_cookie", duration = "1h" }"#;
    let proxy = start_proxy(&config(settings, &backends.each_ref())).await;
    let first = get(&proxy.url("/")).await;
    let cookie = set_cookie(&first, "AWSALB").unwrap();
    let gone = backends.iter().position(|b| b.name == first.body).unwrap();
    let rest: Vec<&Backend> = backends
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != gone)
        .map(|(_, b)| b)
        .collect();
    proxy.write_config(&config(settings, &rest));
    proxy.reloader.reload().unwrap();

    let r = get_with(&proxy.url("/"), &[("cookie", &cookie)]).await;
    assert_eq!(r.status, 200);
    assert_ne!(r.body, first.body);
    let renewed = set_cookie(&r, "AWSALB").expect("a new AWSALB replaces the stale one");
    assert_ne!(renewed, cookie);
    // The stale cookie does not stick: round robin spreads its requests.
    let counts = tally(&proxy.url("/"), 20, &[("cookie", &cookie)]).await;
    assert_eq!(
        counts,
        HashMap::from([(rest[0].name.clone(), 10), (rest[1].name.clone(), 10)])
    );
    proxy.stop().await;
}

#[tokio::test]
async fn garbage_lb_cookie_falls_back_to_normal_picking() {
    let backends = three_backends().await;
    let settings = r#"stickiness = { type = "lb_cookie", duration = "1h" }"#;
    let proxy = start_proxy(&config(settings, &backends.each_ref())).await;
    for garbage in [
        "AWSALB=not-hex",
        "AWSALB=",
        "AWSALB=7f000002",
        "AWSALB=\"zz\"",
    ] {
        let counts = tally(&proxy.url("/"), 30, &[("cookie", garbage)]).await;
        assert_eq!(
            counts,
            HashMap::from([("a".into(), 10), ("b".into(), 10), ("c".into(), 10)]),
            "cookie {garbage}"
        );
    }
    proxy.stop().await;
}

#[tokio::test]
async fn app_cookie_sticks_once_the_target_sets_the_application_cookie() {
    let backends = three_backends().await;
    let settings =
        r#"stickiness = { type = "app_cookie", cookie_name = "SESSION", duration = "1h" }"#;
    let proxy = start_proxy(&config(settings, &backends.each_ref())).await;

    // No application cookie set: the proxy adds none of its own.
    let plain = get(&proxy.url("/")).await;
    assert!(plain.headers.get("set-cookie").is_none(), "{plain:?}");

    let login = get(&proxy.url("/set-cookie?name=SESSION")).await;
    assert_eq!(set_cookie(&login, "SESSION").as_deref(), Some("SESSION=1"));
    let app = set_cookie(&login, "AWSALBAPP-0").expect("AWSALBAPP-0 is set beside SESSION");
    let cookie = format!("SESSION=1; {app}");
    let counts = tally(&proxy.url("/"), 30, &[("cookie", &cookie)]).await;
    assert_eq!(counts, HashMap::from([(login.body.clone(), 30)]));

    // The application's cookie alone does not stick: stickiness follows AWSALBAPP-0.
    let counts = tally(&proxy.url("/"), 30, &[("cookie", "SESSION=1")]).await;
    assert_eq!(counts.len(), 3, "{counts:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn app_cookie_is_not_set_for_another_cookie_of_the_application() {
    let backends = three_backends().await;
    let settings =
        r#"stickiness = { type = "app_cookie", cookie_name = "SESSION", duration = "1h" }"#;
    let proxy = start_proxy(&config(settings, &backends.each_ref())).await;
    for name in ["OTHER", "SESSIONX"] {
        let r = get(&proxy.url(&format!("/set-cookie?name={name}"))).await;
        assert!(set_cookie(&r, name).is_some());
        assert_eq!(set_cookie(&r, "AWSALBAPP-0"), None, "after {name}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn round_robin_does_not_restart_at_the_same_target_after_each_reload() {
    let backends = three_backends().await;
    let toml = config(r#"algorithm = "round_robin""#, &backends.each_ref());
    let proxy = start_proxy(&toml).await;
    // A rebuilt route table (reload, or a discovery change) must not hand its first
    // request to the same target every time: with one request between rebuilds, that
    // target would take all the traffic.
    for _ in 0..60 {
        proxy.reloader.reload().unwrap();
        assert_eq!(get(&proxy.url("/")).await.status, 200);
    }
    for b in &backends {
        // Each target has a 1/3 chance per rebuild: missing all 60 happens about
        // once in 10^10 runs.
        assert!(b.hits() > 0, "{} got none of 60 first requests", b.name);
    }
    proxy.stop().await;
}
