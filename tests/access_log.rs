//! Access logs: one JSON line per request with ALB's fields, written when the response
//! has been sent (for a streamed body, with the bytes actually sent).
#![allow(clippy::unwrap_used)]

use crate::support;

use serde_json::Value;
use support::*;

/// The log file's text, and its lines as JSON.
fn json_lines(log: &std::path::Path) -> (String, Vec<Value>) {
    let text = std::fs::read_to_string(log).unwrap();
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (text, lines)
}

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

    let (text, lines) = json_lines(&log);
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

/// Each line says what kind of request it was and, over TLS, what the session was,
/// as ALB's `type`, `ssl_protocol`, `ssl_cipher` and `domain_name` do; the request
/// line carries the listener's scheme and port, as ALB's does. Driven by curl.
#[tokio::test]
async fn lines_tell_the_kind_of_request_and_the_tls_session_as_alb_does() {
    let b = backend("b").await;
    let dir = TempDir::new();
    let ca = support::tls::Ca::new("ca");
    let files = [ca.issue(&["site.test"]).write(&dir.0, "site")];
    let ca_file = ca.write(&dir.0, "ca.pem").display().to_string();
    let log = dir.0.join("access.log");
    let toml = format!(
        r#"
[access_log]
output = "{log}"

[admin]
listen = "127.0.0.1:0"

[[listeners]]
name = "plain"
bind = "127.0.0.1:0"
default_action = {{ forward = "web" }}

[[listeners]]
name = "secure"
bind = "127.0.0.1:0"
protocol = "https"
{certificates}
default_action = {{ forward = "web" }}

[target_groups.web]
discovery = {{ static = ["{target}"] }}
"#,
        log = log.display(),
        certificates = support::tls::certificates_toml(&files),
        target = b.addr,
    );
    let proxy = start_proxy(&toml).await;
    let (plain, secure) = (proxy.addrs[0], proxy.addrs[1]);
    let resolve = format!("site.test:{}:127.0.0.1", secure.port());
    let https = |path: &str| format!("https://site.test:{}{path}", secure.port());
    let tls = ["--cacert", &ca_file, "--resolve", &resolve];
    let tls12 = [&tls[..], &["--http1.1", "--tlsv1.2", "--tls-max", "1.2"]].concat();
    curl(&[&tls12[..], &[&https("/one?x=1")]].concat()).await;
    let tls13 = [&tls[..], &["--http2", "--tlsv1.3"]].concat();
    curl(&[&tls13[..], &[&https("/two")]].concat()).await;
    curl(&[&format!("http://{plain}/three")]).await;
    let h2c = ["--http2-prior-knowledge", "-H", "Host: app.test"];
    curl(&[&h2c[..], &[&format!("http://{plain}/four")]].concat()).await;
    proxy.stop().await; // flushes the log

    let (text, lines) = json_lines(&log);
    assert_eq!(lines.len(), 4, "{text}");
    let field = |i: usize, name: &str| lines[i][name].as_str().unwrap().to_owned();
    let port = secure.port();
    // The certificate's key is ECDSA; which AES the client prefers is its choice.
    let tls12 = [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
    ];
    let tls13 = [
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_256_GCM_SHA384",
        "TLS_CHACHA20_POLY1305_SHA256",
    ];
    // (type, request, ssl_protocol, ssl_cipher one of, domain_name), line by line.
    let expected: [(&str, String, &str, &[&str], &str); 4] = [
        (
            "https",
            format!("GET https://site.test:{port}/one?x=1 HTTP/1.1"),
            "TLSv1.2",
            &tls12,
            "site.test",
        ),
        (
            "h2",
            format!("GET https://site.test:{port}/two HTTP/2.0"),
            "TLSv1.3",
            &tls13,
            "site.test",
        ),
        // The Host names the port already; it is written once.
        (
            "http",
            format!("GET http://{plain}/three HTTP/1.1"),
            "-",
            &["-"],
            "-",
        ),
        (
            "h2c",
            format!("GET http://app.test:{}/four HTTP/2.0", plain.port()),
            "-",
            &["-"],
            "-",
        ),
    ];
    for (i, (kind, request, protocol, ciphers, domain)) in expected.iter().enumerate() {
        assert_eq!(field(i, "type"), *kind, "line {i}");
        assert_eq!(field(i, "request"), *request, "line {i}");
        assert_eq!(field(i, "ssl_protocol"), *protocol, "line {i}");
        let cipher = field(i, "ssl_cipher");
        assert!(ciphers.contains(&cipher.as_str()), "line {i}: {cipher}");
        assert_eq!(field(i, "domain_name"), *domain, "line {i}");
    }
    assert_eq!(field(3, "elb"), "plain");
}
