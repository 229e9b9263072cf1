//! Access logs: one JSON line per request with ALB's fields, written when the response
//! has been sent (for a streamed body, with the bytes actually sent).
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::Value;
use support::*;

#[tokio::test]
async fn every_request_gets_one_json_line_with_alb_fields() {
    let b = backend("one").await;
    let dir = TempDir::new();
    let log = dir.0.join("access.log");
    let fixed = r#"[[listeners.rules]]
priority = 7
conditions = { path = ["/fixed"] }
action = { fixed_response = { status = 418, body = "teapot" } }"#;
    let toml = format!(
        "[access_log]\noutput = \"{}\"\n{}",
        log.display(),
        one_group_config(&[b.addr], fixed, "")
    );
    let proxy = start_proxy(&toml).await;
    let forwarded = get_with(
        &proxy.url("/bytes?n=100000"),
        &[("user-agent", "tester/1.0")],
    )
    .await;
    assert_eq!(forwarded.body.len(), 100_000);
    assert_eq!(get(&proxy.url("/fixed")).await.status, 418);
    proxy.stop().await; // flushes the log

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    let first = &lines[0];
    assert_eq!(first["elb"], "web");
    assert_eq!(first["target"], b.addr.to_string());
    assert_eq!(first["elb_status_code"], 200);
    assert_eq!(first["target_status_code"], "200");
    assert_eq!(
        first["sent_bytes"], 100_000,
        "bytes of the streamed body actually sent"
    );
    assert_eq!(first["user_agent"], "tester/1.0");
    assert_eq!(first["target_group"], "g");
    assert_eq!(
        first["matched_rule_priority"], 0,
        "the default action, as ALB writes it"
    );
    assert!(first["request"]
        .as_str()
        .unwrap()
        .starts_with("GET http://"));
    assert!(first["request"]
        .as_str()
        .unwrap()
        .ends_with("/bytes?n=100000 HTTP/1.1"));
    assert!(first["trace_id"].as_str().unwrap().starts_with("Root=1-"));
    assert!(first["target_processing_time"].as_f64().unwrap() >= 0.0);
    assert!(first["time"].as_str().unwrap().ends_with('Z'));
    let second = &lines[1];
    assert_eq!(second["elb_status_code"], 418);
    assert_eq!(second["target"], "-");
    assert_eq!(second["matched_rule_priority"], 7);
    assert_eq!(second["sent_bytes"], 6);
    assert_eq!(second["target_processing_time"], -1.0);
}

#[tokio::test]
async fn an_access_log_that_cannot_be_opened_stops_the_start() {
    let b = backend("one").await;
    let toml = format!(
        "[access_log]\noutput = \"/nonexistent-dir/access.log\"\n{}",
        one_group_config(&[b.addr], "", "")
    );
    let dir = TempDir::new();
    let path = dir.0.join("ecslb.toml");
    std::fs::write(&path, toml).unwrap();
    let err = ecslb::app::App::bind(&path).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("/nonexistent-dir/access.log"),
        "{err:#}"
    );
}

/// Log rotation as logrotate does it by default: the file is renamed, then the process
/// is told to open a new one, with SIGUSR1 (as for nginx) or SIGHUP. Each line lands
/// in the file that was current when its request finished; none is lost.
#[tokio::test]
async fn sigusr1_and_sighup_reopen_a_rotated_access_log_file() {
    let b = backend("one").await;
    let dir = TempDir::new();
    let log = dir.0.join("access.log");
    let tables = format!("[access_log]\noutput = \"{}\"\n", log.display());
    let ecslb = start_binary(|addr, admin| binary_config(addr, admin, b.addr, &tables)).await;
    let paths = |file: &std::path::Path| -> Vec<String> {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let line: Value = serde_json::from_str(l).unwrap();
                let request = line["request"].as_str().unwrap().to_owned();
                request
                    .split(' ')
                    .nth(1)
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };

    let mut rotated = Vec::new();
    for (n, signal) in [(1, "USR1"), (2, "HUP")] {
        assert_eq!(get(&ecslb.url(&format!("/before-{n}"))).await.status, 200);
        eventually("the line is written", async || paths(&log).len() == 1).await;
        let old = dir.0.join(format!("access.log.{n}"));
        std::fs::rename(&log, &old).unwrap();
        // Written after the rename, before the signal: still goes to the moved file.
        assert_eq!(get(&ecslb.url(&format!("/moved-{n}"))).await.status, 200);
        eventually("the line is written to the moved file", async || {
            paths(&old).len() == 2
        })
        .await;
        ecslb.signal(signal);
        eventually("the file is reopened", async || {
            ecslb.log().matches("access log file reopened").count() == n
        })
        .await;
        rotated.push(old);
    }
    assert_eq!(get(&ecslb.url("/after")).await.status, 200);
    eventually("the last line is written", async || {
        paths(&log) == ["after"]
    })
    .await;
    assert_eq!(paths(&rotated[0]), ["before-1", "moved-1"]);
    assert_eq!(paths(&rotated[1]), ["before-2", "moved-2"]);
}
