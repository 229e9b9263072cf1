//! Config errors and the CLI: an invalid file reports every problem at once as
//! `FILE:LINE: field.path: message`, at any depth, and `ecslb check` / `--help` behave.
// clippy's `allow-unwrap-in-tests` covers `#[test]` functions only, not the helpers
// (here and in `support`) they call.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ecslb::config::Config;
use support::TempDir;

/// Problems of `text`, parsed as if read from `bad.toml`.
fn problems(text: &str) -> Vec<String> {
    match Config::parse(Path::new("bad.toml"), text) {
        Ok(_) => panic!("config unexpectedly valid:\n{text}"),
        Err(e) => e.problems,
    }
}

/// Asserts `problems` are exactly `expected`, each given as the start of one problem
/// (`bad.toml:LINE: field: message...`), in any order.
fn assert_problems(problems: &[String], expected: &[&str]) {
    for want in expected {
        let found = problems.iter().filter(|p| p.starts_with(want)).count();
        assert_eq!(
            found,
            1,
            "want one problem starting {want:?}, got:\n{}",
            problems.join("\n")
        );
    }
    assert_eq!(
        problems.len(),
        expected.len(),
        "unexpected problems:\n{}",
        problems.join("\n")
    );
}

/// A file with seven problems of five kinds spread over rules and target groups.
const INVALID: &str = r#"[admin]
listen = "127.0.0.1:0"
[[listeners]]
name = "web"
bind = "127.0.0.1:0"
default_action = { forward = "web" }
[[listeners.rules]]
priority = 10
conditions = { path = ["/a/*"] }
action = { forward = "web" }
[[listeners.rules]]
conditions = { pathh = ["/b/*"], source_ip = ["10.0.0.0/33"] }
priority = 10
action = { forward = "missing", stickiness = "an hour" }

[[listeners.rules]]
priority = 20
conditions = { path = ["/c"] }
action = { redirect = { status = 307 } }

[target_groups.web]
deregistration_delay = "soon"
discovery = { static = ["127.0.0.1:3000"] }
"#;

/// [`INVALID`]'s problems, with `FILE` standing for the file name.
const INVALID_PROBLEMS: [&str; 7] = [
    "FILE:12: listeners[0].rules[1].conditions.pathh: unknown field",
    "FILE:12: listeners[0].rules[1].conditions.source_ip[0]: invalid CIDR \"10.0.0.0/33\"",
    "FILE:13: listeners[0].rules[1].priority: priority 10 is used by another rule",
    "FILE:14: listeners[0].rules[1].action.forward: unknown target group \"missing\"",
    "FILE:14: listeners[0].rules[1].action.stickiness: invalid duration \"an hour\"",
    "FILE:19: listeners[0].rules[2].action.redirect.status: 307 is not a redirect status",
    "FILE:22: target_groups.web.deregistration_delay: invalid duration \"soon\"",
];

fn invalid_problems(file: &str) -> Vec<String> {
    INVALID_PROBLEMS
        .iter()
        .map(|p| p.replacen("FILE", file, 1))
        .collect()
}

#[test]
fn invalid_file_reports_every_problem_with_its_line_and_field() {
    let want = invalid_problems("bad.toml");
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    assert_problems(&problems(INVALID), &want);
}

#[test]
fn load_names_the_file_it_read_in_every_problem() {
    let dir = TempDir::new();
    let path = dir.0.join("ecslb.toml");
    std::fs::write(&path, INVALID).unwrap();
    let err = Config::load(&path).unwrap_err();
    let want = invalid_problems(&path.display().to_string());
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    assert_problems(&err.problems, &want);
    // Display puts one problem on each line.
    assert_eq!(err.to_string().lines().count(), INVALID_PROBLEMS.len());
}

#[test]
fn load_of_a_missing_file_says_it_cannot_be_read() {
    let err = Config::load(Path::new("/nonexistent/ecslb.toml")).unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert!(
        err.problems[0].starts_with("/nonexistent/ecslb.toml: cannot read"),
        "{err}"
    );
}

#[test]
fn unknown_keys_are_reported_at_every_depth() {
    let text = r#"[admn]
x = 1

[admin]
lisen = "127.0.0.1:0"

[[listeners]]
name = "web"
bind = "127.0.0.1:0"
colour = "blue"
default_action = { forward = [{ group = "web", wieght = 2 }] }

[[listeners.rules]]
priority = 1
label = "first"
conditions.path = ["/x"]
conditions.hots = ["a.test"]
action = { forward = "web" }

[[listeners.rules]]
priority = 2
conditions = { http_header = [{ name = "x-a", values = ["1"] }, { name = "x-b", values = ["2"], regex = true }] }

[listeners.rules.action.redirect]
status = 301
pth = "/q"

[target_groups.web]
helth_check = { path = "/" }
discovery = { static = ["127.0.0.1:3000"], consul = "web" }

[target_groups.web.stickiness]
type = "lb_cookie"
duration = "1h"
cookie_nme = "x"
"#;
    assert_problems(
        &problems(text),
        &[
            "bad.toml:1: admn: unknown field",
            "bad.toml:5: admin.lisen: unknown field",
            "bad.toml:10: listeners[0].colour: unknown field",
            "bad.toml:11: listeners[0].default_action.forward[0].wieght: unknown field",
            "bad.toml:15: listeners[0].rules[0].label: unknown field",
            "bad.toml:17: listeners[0].rules[0].conditions.hots: unknown field",
            "bad.toml:22: listeners[0].rules[1].conditions.http_header[1].regex: unknown field",
            "bad.toml:26: listeners[0].rules[1].action.redirect.pth: unknown field",
            "bad.toml:29: target_groups.web.helth_check: unknown field",
            "bad.toml:30: target_groups.web.discovery.consul: unknown field",
            "bad.toml:35: target_groups.web.stickiness.cookie_nme: unknown field",
        ],
    );
}

#[test]
fn missing_required_fields_point_at_their_table() {
    let text = r#"[[listeners]]
name = "a"
bind = "127.0.0.1:0"
default_action = { forward = "web" }

[[listeners.rules]]
priority = 1
conditions = { path = ["/x"] }
action = { forward = "web" }

[[listeners.rules]]
conditions = { path = ["/y"] }
action = { forward = "web" }

[[listeners]]
name = "b"
default_action = { forward = "web" }

[target_groups.web]
discovery = { static = ["127.0.0.1:3000"] }

[target_groups.nowhere]
algorithm = "round_robin"
"#;
    assert_problems(
        &problems(text),
        &[
            "bad.toml:11: listeners[0].rules[1].priority: missing (required)",
            "bad.toml:15: listeners[1].bind: missing (required)",
            "bad.toml:22: target_groups.nowhere.discovery: missing (required)",
        ],
    );
}

#[test]
fn problems_after_an_invalid_listener_name_the_right_listener() {
    let text = r#"[[listeners]]
bind = "127.0.0.1:0"
default_action = { forward = "web" }

[[listeners]]
name = "b"
bind = "127.0.0.1:8081"
default_action = { forward = "web" }

[[listeners]]
name = "b"
bind = "127.0.0.1:8081"
default_action = { forward = "web" }

[target_groups.web]
discovery = { static = ["127.0.0.1:3000"] }
"#;
    assert_problems(
        &problems(text),
        &[
            "bad.toml:1: listeners[0].name: missing (required)",
            "bad.toml:11: listeners[2].name: duplicate listener name \"b\"",
            "bad.toml:12: listeners[2].bind: address 127.0.0.1:8081 is already used",
        ],
    );
}

#[test]
fn toml_syntax_error_names_its_line() {
    let text = "[admin]\nlisten = \"127.0.0.1:0\"\n\n[[listeners]]\nname = \"web\nbind = \"127.0.0.1:0\"\n";
    let p = problems(text);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("bad.toml:5: "), "{p:?}");

    let text = "[[listeners]]\nname = \"web\"\nbind = 127.0.0.1:0\n";
    let p = problems(text);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("bad.toml:3: "), "{p:?}");
}

#[test]
fn type_error_names_its_line_and_field() {
    let text = r#"[[listeners]]
name = "a"
bind = "127.0.0.1:0"
default_action = { forward = "web" }

[[listeners.rules]]
priority = 1
conditions = { path = ["/x"] }
action = { forward = "web" }

[[listeners.rules]]
priority = "ten"
conditions = { path = ["/y"] }
action = { forward = "web" }

[target_groups.web]
discovery = { static = ["127.0.0.1:3000"] }

[[listeners]]
name = "b"
bind = "127.0.0.1:0"
default_action = { forward = "web" }
max_headers = "many"
"#;
    let p = problems(text);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("bad.toml:12: listeners[0].rules[1].priority: invalid type"),
        "{p:?}"
    );

    // A `[[listeners]]` element that comes after other tables is still found.
    let later = text.replace("priority = \"ten\"", "priority = 2");
    let p = problems(&later);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("bad.toml:23: listeners[1].max_headers: invalid type"),
        "{p:?}"
    );
}

/// Runs the `ecslb` binary with `args`, with no config or log settings from the environment.
fn ecslb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ecslb"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("ECSLB_CONFIG")
        .env_remove("ECSLB_WORKERS")
        .env_remove("ECSLB_BUSY_POLL")
        .env_remove("ECSLB_POLL_BEFORE_SLEEP")
        .env_remove("ECSLB_LOG")
        .env_remove("ECSLB_LOG_FORMAT")
        .output()
        .expect("ecslb runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// `ecslb check -c path` succeeds and prints every listener, rule and target group the
/// library loads from `path`; returns what it printed.
fn assert_check_prints_the_config(path: &Path) -> String {
    let config =
        Config::load(path).unwrap_or_else(|e| panic!("{} is invalid:\n{e}", path.display()));
    let out = ecslb(&["check", "-c", path.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{text}\nstderr:\n{}",
        stderr(&out)
    );
    assert!(
        text.starts_with(&format!("{}: ok\n", path.display())),
        "{text}"
    );
    for l in &config.listeners {
        assert!(
            text.contains(&format!(
                "listener {:?} {} on {}",
                l.name,
                l.protocol.name(),
                l.bind
            )),
            "{text}"
        );
        for r in &l.rules {
            assert!(
                text.contains(&format!("  rule {:>5}: ", r.priority)),
                "rule {}: {text}",
                r.priority
            );
        }
    }
    assert_eq!(
        text.matches("  default: ").count(),
        config.listeners.len(),
        "{text}"
    );
    for name in config.target_groups.keys() {
        assert!(
            text.contains(&format!("target group {name:?}: ")),
            "{name}: {text}"
        );
    }
    text
}

#[test]
fn check_accepts_the_local_config_and_prints_its_routes() {
    let text = assert_check_prints_the_config(&repo_file("config/local.toml"));
    for line in [
        "admin: 127.0.0.1:9901",
        "  rule    10: {\"path\":[\"/health\"]} -> fixed_response 200 text/plain (3 bytes)",
        "  rule    20: {\"path\":[\"/old/*\"]} -> redirect 301 ",
        "  default: forward [web:1]",
        "static [127.0.0.1:3001, 127.0.0.1:3002, 127.0.0.1:3003]",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}

#[test]
fn check_accepts_the_example_config_if_present() {
    let path = repo_file("config/example.toml");
    if !path.exists() {
        eprintln!("skipped: {} does not exist yet", path.display());
        return;
    }
    assert_check_prints_the_config(&path);
}

#[test]
fn check_rejects_an_invalid_file_and_prints_every_located_problem() {
    let dir = TempDir::new();
    let path = dir.0.join("bad.toml");
    std::fs::write(&path, INVALID).unwrap();
    let out = ecslb(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "", "nothing on stdout for an invalid file");
    let err = stderr(&out);
    for want in invalid_problems(&path.display().to_string()) {
        let found = err
            .lines()
            .any(|l| l.trim_start_matches("error: ").starts_with(&want));
        assert!(found, "missing {want:?} in:\n{err}");
    }
}

#[test]
fn check_of_a_missing_file_exits_1() {
    let out = ecslb(&["check", "-c", "/nonexistent/ecslb.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("/nonexistent/ecslb.toml: cannot read"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn help_mentions_every_flag_where_it_applies() {
    let cases: [(&[&str], &[&str]); 3] = [
        (
            &["--help"],
            &["run", "check", "--log-format", "--log-level", "--version"],
        ),
        (
            &["run", "--help"],
            &[
                "--config",
                "-c,",
                "--workers",
                "--busy-poll",
                "--poll-before-sleep",
                "--watch",
                "--log-format",
                "--log-level",
            ],
        ),
        (
            &["check", "--help"],
            &["--config", "-c,", "--log-format", "--log-level"],
        ),
    ];
    for (args, flags) in cases {
        let out = ecslb(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let text = stdout(&out);
        for flag in flags {
            assert!(
                text.contains(flag),
                "`ecslb {}` does not mention {flag}:\n{text}",
                args.join(" ")
            );
        }
    }
}

/// `--poll-before-sleep` takes at most 500us, only with one worker and not with
/// `--busy-poll`: each mistake is refused before anything is served, with the reason.
#[test]
fn poll_before_sleep_is_refused_above_its_limit_and_with_several_workers() {
    let config = repo_file("config/local.toml");
    let cases: [(&[&str], i32, &str); 3] = [
        (
            &["--workers", "1", "--poll-before-sleep", "2ms"],
            2,
            "at most 500us",
        ),
        (
            &["--workers", "2", "--poll-before-sleep", "50us"],
            1,
            "--poll-before-sleep needs --workers 1",
        ),
        (
            &["--busy-poll", "--poll-before-sleep", "50us"],
            2,
            "cannot be used with",
        ),
    ];
    for (flags, code, message) in cases {
        let mut args = vec!["run", "-c", config.to_str().unwrap()];
        args.extend(flags);
        let out = ecslb(&args);
        assert_eq!(out.status.code(), Some(code), "{flags:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(message),
            "{flags:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn run_without_a_config_is_a_usage_error() {
    let out = ecslb(&["run"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--config <FILE>"), "{}", stderr(&out));
}

#[test]
fn mutual_tls_modes_are_checked_where_they_apply() {
    let text = r#"[[listeners]]
name = "a"
bind = "127.0.0.1:0"
protocol = "tls"
certificates = [{ cert = "config/certs/site.pem", key = "config/certs/site.key" }]
mutual_tls = { mode = "passthrough" }
default_action = { forward = "tcp" }

[[listeners]]
name = "b"
bind = "127.0.0.1:1"
protocol = "https"
certificates = [{ cert = "config/certs/site.pem", key = "config/certs/site.key" }]
mutual_tls = { mode = "passthrough", trust_store = "config/certs/clients-ca.pem" }
default_action = { forward = "web" }

[[listeners]]
name = "c"
bind = "127.0.0.1:2"
protocol = "https"
certificates = [{ cert = "config/certs/site.pem", key = "config/certs/site.key" }]
mutual_tls = { mode = "strict" }
default_action = { forward = "web" }

[target_groups.web]
discovery = { static = ["127.0.0.1:3000"] }

[target_groups.tcp]
protocol = "tcp"
discovery = { static = ["127.0.0.1:3001"] }
"#;
    assert_problems(
        &problems(text),
        &[
            "bad.toml:6: listeners[0].mutual_tls.mode: passthrough hands the certificate to targets in HTTP headers",
            "bad.toml:14: listeners[1].mutual_tls.trust_store: applies to mode \"verify\" only",
            "bad.toml:22: listeners[2].mutual_tls.mode: unknown value \"strict\"",
        ],
    );
}

#[test]
fn forwarding_header_options_are_checked_where_they_apply() {
    let text = r#"[[listeners]]
name = "a"
bind = "127.0.0.1:0"
xff_header_processing = "keep"
x_amzn_tls_version_and_cipher_suite = true
default_action = { forward = "web" }

[[listeners]]
name = "b"
bind = "127.0.0.1:1"
protocol = "tcp"
xff_client_port = true
drop_invalid_header_fields = true
default_action = { forward = "tcp" }

[target_groups.web]
discovery = { static = ["127.0.0.1:3000"] }

[target_groups.tcp]
protocol = "tcp"
discovery = { static = ["127.0.0.1:3001"] }
"#;
    assert_problems(
        &problems(text),
        &[
            "bad.toml:4: listeners[0].xff_header_processing: unknown value \"keep\"",
            "bad.toml:5: listeners[0].x_amzn_tls_version_and_cipher_suite: applies to https listeners only",
            "bad.toml:12: listeners[1].xff_client_port: applies to http and https listeners only",
            "bad.toml:13: listeners[1].drop_invalid_header_fields: applies to http and https listeners only",
        ],
    );
}

#[test]
fn response_header_values_are_checked_as_alb_checks_them() {
    let text = r#"[[listeners]]
name = "a"
bind = "127.0.0.1:0"
default_action = { forward = "web" }

[listeners.response_headers]
strict_transport_security = "includeSubDomains"
x_content_type_options = "sniff"
x_frame_options = "ALLOW-FROM"
access_control_allow_origin = "https://app.example/path"
access_control_allow_methods = "GET, PO ST"
access_control_allow_credentials = "yes"
content_security_policy = "default-src 'self'\n"
x_xss_protection = "1"

[[listeners]]
name = "b"
bind = "127.0.0.1:1"
protocol = "tcp"
response_headers = { x_frame_options = "DENY" }
default_action = { forward = "tcp" }

[target_groups.web]
discovery = { static = ["127.0.0.1:3000"] }

[target_groups.tcp]
protocol = "tcp"
discovery = { static = ["127.0.0.1:3001"] }
"#;
    assert_problems(
        &problems(text),
        &[
            "bad.toml:7: listeners[0].response_headers.strict_transport_security: must have max-age=SECONDS",
            "bad.toml:8: listeners[0].response_headers.x_content_type_options: must be \"nosniff\"",
            "bad.toml:9: listeners[0].response_headers.x_frame_options: must be DENY, SAMEORIGIN or ALLOW-FROM <uri>",
            "bad.toml:10: listeners[0].response_headers.access_control_allow_origin: must be *, null or an origin",
            "bad.toml:11: listeners[0].response_headers.access_control_allow_methods: \"PO ST\" is not a method",
            "bad.toml:12: listeners[0].response_headers.access_control_allow_credentials: must be \"true\"",
            "bad.toml:13: listeners[0].response_headers.content_security_policy: must be visible ASCII",
            "bad.toml:14: listeners[0].response_headers.x_xss_protection: unknown field",
            "bad.toml:20: listeners[1].response_headers: applies to http and https listeners only",
        ],
    );
}

#[test]
fn client_keep_alive_is_checked_where_it_applies() {
    let text = r#"[[listeners]]
name = "a"
bind = "127.0.0.1:0"
client_keep_alive = "8d"
default_action = { forward = "web" }

[[listeners]]
name = "b"
bind = "127.0.0.1:1"
protocol = "tcp"
client_keep_alive = "1h"
default_action = { forward = "tcp" }

[target_groups.web]
discovery = { static = ["127.0.0.1:3000"] }

[target_groups.tcp]
protocol = "tcp"
discovery = { static = ["127.0.0.1:3001"] }
"#;
    assert_problems(
        &problems(text),
        &[
            "bad.toml:4: listeners[0].client_keep_alive: must be from 1s to 7 days",
            "bad.toml:11: listeners[1].client_keep_alive: applies to http and https listeners only",
        ],
    );
}
