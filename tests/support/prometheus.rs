//! A real Prometheus server for tests: started on a free loopback port with a temp data
//! dir, scraping one `host:port` `/metrics` every second, queried over its HTTP API, and
//! killed on drop. Also `promtool check metrics` on an exposition. Needs the binaries
//! of Debian's `prometheus` package (`/usr/bin/prometheus`, `/usr/bin/promtool`).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{binary, free_port, get, try_get, TempDir};

/// The job name the scraped ecslb gets (`up{job="ecslb"}`).
pub const JOB: &str = "ecslb";

/// A Prometheus server scraping one target; killed (by its pid) on drop.
pub struct Prometheus {
    /// Its web/API address.
    pub addr: SocketAddr,
    log_path: PathBuf,
    child: Child,
    _dir: TempDir,
}

/// Starts Prometheus scraping `http://{target}/metrics` every 1 s and waits until
/// `/-/ready` answers 200. Prometheus cannot be handed a bound socket, so a port taken
/// between picking and binding makes it exit: then it is started again on another.
pub async fn start_prometheus(target: SocketAddr) -> Prometheus {
    let bin = binary("prometheus", "prometheus");
    let mut log = String::new();
    for _ in 0..3 {
        let dir = TempDir::new();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = dir.0.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .expect("the prometheus config is written");
        let log_path = dir.0.join("prometheus.log");
        let log_file = std::fs::File::create(&log_path).expect("the log file is created");
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("data").display()
            ))
            .args(["--storage.tsdb.retention.time=1h", "--log.level=warn"])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("the log file is shared"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", bin.display()));
        let mut prom = Prometheus {
            addr,
            log_path,
            child,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = prom.child.try_wait() {
                break; // exited: most likely the port was taken
            }
            let ready = try_get(&prom.url("/-/ready")).await;
            if ready.is_some_and(|r| r.status == 200) {
                return prom;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        log = prom.log();
    }
    panic!("prometheus did not become ready; its log:\n{log}");
}

impl Prometheus {
    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What Prometheus has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Runs the instant query `promql` now and returns `data.result`; panics if the
    /// query is rejected.
    pub async fn query(&self, promql: &str) -> serde_json::Value {
        let r = get(&self.url(&format!("/api/v1/query?query={}", encode(promql)))).await;
        let json: serde_json::Value =
            serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {r:?}"));
        assert_eq!(json["status"], "success", "query {promql:?}: {json}");
        json["data"]["result"].clone()
    }

    /// Each series of an instant-vector query as (value of `label`, sample value).
    pub async fn values_by(&self, promql: &str, label: &str) -> Vec<(String, f64)> {
        let result = self.query(promql).await;
        let series = result.as_array().expect("an instant vector");
        series
            .iter()
            .map(|s| {
                let key = s["metric"][label].as_str().unwrap_or_default().to_owned();
                (key, sample(&s["value"]))
            })
            .collect()
    }

    /// The value of a query expected to return one series; `None` if it returns none.
    pub async fn value(&self, promql: &str) -> Option<f64> {
        let result = self.query(promql).await;
        let series = result.as_array().expect("an instant vector");
        assert!(
            series.len() <= 1,
            "{promql:?} returned several series: {result}"
        );
        series.first().map(|s| sample(&s["value"]))
    }

    /// How many times the target has been scraped so far (samples of `up`), failed
    /// scrapes included.
    pub async fn scrapes(&self) -> u64 {
        let count = self
            .value(&format!("count_over_time(up{{job=\"{JOB}\"}}[1h])"))
            .await;
        count.unwrap_or(0.0) as u64
    }

    /// Waits until the target has been scraped `n` times in all (see [`Self::scrapes`]);
    /// panics after 10 s with the target's health and last scrape error.
    pub async fn wait_for_scrapes(&self, n: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.scrapes().await < n {
            if tokio::time::Instant::now() >= deadline {
                let targets = get(&self.url("/api/v1/targets")).await.body;
                panic!("not scraped {n} times within 10s; targets: {targets}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for `n` more scrapes than have happened so far: the last of them started
    /// after this call, so it saw everything done before it.
    pub async fn wait_for_more_scrapes(&self, n: u64) {
        let now = self.scrapes().await;
        self.wait_for_scrapes(now + n).await;
    }

    /// The last scrape error Prometheus reports for the target (`""` if none).
    pub async fn last_scrape_error(&self) -> String {
        let body = get(&self.url("/api/v1/targets")).await.body;
        let json: serde_json::Value = serde_json::from_str(&body).expect("targets are JSON");
        json["data"]["activeTargets"][0]["lastError"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill(); // our own child, by its pid
            let _ = self.child.wait();
        }
    }
}

/// Runs `promtool check metrics` on `text`: whether it exited 0, and everything it
/// printed. It exits non-zero on parse errors and on lint problems (no HELP, a counter
/// without `_total`, ...), so "passes with no warnings" is `(true, "")`.
pub fn promtool_check_metrics(text: &str) -> (bool, String) {
    let bin = binary("promtool", "prometheus");
    let mut child = Command::new(&bin)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{} does not start: {e}", bin.display()));
    let mut stdin = child.stdin.take().expect("promtool's stdin");
    let text = text.to_owned();
    // Written from a thread so a large input cannot deadlock against full output pipes.
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let out = child.wait_with_output().expect("promtool runs");
    // promtool stops reading at a parse error: the broken pipe is then expected, and
    // the error it printed is what the caller needs.
    let _ = writer.join();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), printed)
}

/// A Prometheus API sample `[time, "value"]` as a number.
fn sample(v: &serde_json::Value) -> f64 {
    v[1].as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a sample: {v}"))
}

/// Percent-encodes a query-string value (everything but RFC 3986 unreserved bytes).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
