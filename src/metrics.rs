//! Metrics: counters held where they are counted, and `/metrics` rendered from them.
//!
//! Nothing on the request path hashes a label set. Per-target counters live on each
//! [`Target`] ([`TargetCounters`]), per-group ones on the route table's target groups
//! ([`GroupCounters`], carried across rebuilds by name), per-listener and process ones
//! in [`Metrics`]. `/metrics` walks the current route table, so the series of a target
//! disappear once it has drained and left its group: cardinality follows the live
//! targets, whatever the churn.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::routing::RouteTable;
use crate::target::{ms_at, now_ms, Health, Target};

/// Status classes counted: 1xx to 5xx.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn class(status: u16) -> usize {
    usize::from(status / 100).clamp(1, 5) - 1
}

/// Upper bounds (seconds) of the target response time histogram buckets.
const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Counters of one target.
#[derive(Debug, Default)]
pub struct TargetCounters {
    /// Responses by listener, then status class; sized on first use.
    requests: OnceLock<Box<[[AtomicU64; 5]]>>,
    /// Connections to the target that failed.
    pub connection_errors: AtomicU64,
}

impl TargetCounters {
    /// Counts a response from this target on listener `listener` (of `listeners`).
    pub fn count_response(&self, listener: usize, listeners: usize, status: u16) {
        let by_listener = self.requests.get_or_init(|| {
            (0..listeners.max(listener + 1))
                .map(|_| Default::default())
                .collect()
        });
        if let Some(row) = by_listener.get(listener) {
            row[class(status)].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Counters of one target group, carried across route-table rebuilds by group name.
#[derive(Debug)]
pub struct GroupCounters {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
    /// Requests per second over the last minute: (second, count) slots by second % 60.
    window: [(AtomicU64, AtomicU64); 60],
    /// Picks made while no target was healthy (fail-open).
    pub fail_open: AtomicU64,
}

impl Default for GroupCounters {
    fn default() -> Self {
        Self {
            buckets: Default::default(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
            window: std::array::from_fn(|_| (AtomicU64::new(0), AtomicU64::new(0))),
            fail_open: AtomicU64::new(0),
        }
    }
}

impl GroupCounters {
    /// Records one forwarded request and how long the target took to answer.
    pub fn record(&self, elapsed: Duration, now: Instant) {
        let secs = elapsed.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        if let Some(b) = self.buckets.get(bucket) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        let second = ms_at(now) / 1000;
        let (stamp, count) = &self.window[(second % 60) as usize];
        if stamp.load(Ordering::Relaxed) != second {
            // First request of a new second in this slot. Two racing requests may both
            // reset it; one count can be lost at a second's boundary, never invented.
            stamp.store(second, Ordering::Relaxed);
            count.store(0, Ordering::Relaxed);
        }
        count.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests in the last 60 seconds.
    pub fn last_minute(&self) -> u64 {
        let now = now_ms() / 1000;
        self.window
            .iter()
            .filter(|(stamp, _)| now.saturating_sub(stamp.load(Ordering::Relaxed)) < 60)
            .map(|(_, count)| count.load(Ordering::Relaxed))
            .sum()
    }
}

/// Per-listener counters.
#[derive(Debug, Default)]
pub struct ListenerCounters {
    /// Open client connections.
    pub active_connections: AtomicI64,
    /// Client connections accepted.
    pub new_connections: AtomicU64,
    /// Bytes received from and sent to clients.
    pub processed_bytes: AtomicU64,
    /// Responses the proxy generated itself, by status class.
    elb_responses: [AtomicU64; 5],
}

impl ListenerCounters {
    /// Counts a response the proxy generated (error, redirect, fixed response).
    pub fn count_elb_response(&self, status: u16) {
        self.elb_responses[class(status)].fetch_add(1, Ordering::Relaxed);
    }
}

/// Process-wide metrics: per-listener counters and config reloads. Target and group
/// counters live in the route table.
#[derive(Debug)]
pub struct Metrics {
    /// Listener names and counters, in config order (listeners never change at runtime).
    listeners: Vec<(String, ListenerCounters)>,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    /// Discovery polls by (target group, succeeded): rare, so a lock is fine.
    discovery: Mutex<BTreeMap<(String, bool), u64>>,
    /// AWS API calls by name.
    api_calls: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    /// Metrics for these listeners.
    pub fn new(listeners: impl IntoIterator<Item = String>) -> Self {
        Self {
            listeners: listeners
                .into_iter()
                .map(|n| (n, ListenerCounters::default()))
                .collect(),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            discovery: Mutex::default(),
            api_calls: Mutex::default(),
        }
    }

    /// The counters of the listener at `index`.
    pub fn listener(&self, index: usize) -> &ListenerCounters {
        &self.listeners[index].1
    }

    /// Counts a discovery poll of `group`.
    pub fn count_discovery(&self, group: &str, ok: bool) {
        let mut polls = self.discovery.lock().unwrap_or_else(|p| p.into_inner());
        *polls.entry((group.to_owned(), ok)).or_default() += 1;
    }

    /// Counts one AWS API call (e.g. `ECS.ListTasks`).
    pub fn count_api_call(&self, api: &'static str) {
        let mut calls = self.api_calls.lock().unwrap_or_else(|p| p.into_inner());
        *calls.entry(api).or_default() += 1;
    }

    /// AWS API calls made so far, by name.
    pub fn api_calls(&self, api: &str) -> u64 {
        let calls = self.api_calls.lock().unwrap_or_else(|p| p.into_inner());
        calls.get(api).copied().unwrap_or(0)
    }

    /// Counts a config reload.
    pub fn count_reload(&self, ok: bool) {
        let counter = if ok {
            &self.reloads_ok
        } else {
            &self.reloads_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition (format 0.0.4) of everything.
    pub fn render(&self, table: &RouteTable) -> String {
        let mut out = String::with_capacity(4096);
        let w = &mut out;
        family(
            w,
            "requests_total",
            "counter",
            "Responses from targets, by listener, target group, target and status class.",
        );
        for group in table.groups().values() {
            for target in group.balancer.targets().targets() {
                let Some(rows) = target.counters.requests.get() else {
                    continue;
                };
                let ecs = target.ecs.load_full();
                let addr = target.addr.to_string();
                for (l, row) in rows.iter().enumerate() {
                    let Some((listener, _)) = self.listeners.get(l) else {
                        continue;
                    };
                    for (c, n) in row.iter().enumerate() {
                        let n = n.load(Ordering::Relaxed);
                        if n > 0 {
                            let mut l = vec![
                                ("listener", listener.as_str()),
                                ("target_group", group.config.name.as_str()),
                                ("target", addr.as_str()),
                                ("code", CLASSES[c]),
                            ];
                            // Where discovery knows the task (ECS), its labels too.
                            if let Some(ecs) = &ecs {
                                l.push(("ecs_task", ecs.task.as_str()));
                                if let Some(service) = &ecs.service {
                                    l.push(("ecs_service", service.as_str()));
                                }
                            }
                            sample(w, "requests_total", &l, n);
                        }
                    }
                }
            }
        }
        family(
            w,
            "target_connection_errors_total",
            "counter",
            "Failed connections to targets.",
        );
        for group in table.groups().values() {
            for target in group.balancer.targets().targets() {
                let n = target.counters.connection_errors.load(Ordering::Relaxed);
                if n > 0 {
                    sample(
                        w,
                        "target_connection_errors_total",
                        &[
                            ("target_group", &group.config.name),
                            ("target", &target.addr.to_string()),
                        ],
                        n,
                    );
                }
            }
        }
        family(
            w,
            "target_response_seconds",
            "histogram",
            "Time from sending a request to a target to its response head, by target group.",
        );
        for group in table.groups().values() {
            let c = &group.counters;
            let name = group.config.name.as_str();
            let mut cumulative = 0;
            for (i, bound) in BUCKETS.iter().enumerate() {
                cumulative += c.buckets[i].load(Ordering::Relaxed);
                sample(
                    w,
                    "target_response_seconds_bucket",
                    &[("target_group", name), ("le", &bound.to_string())],
                    cumulative,
                );
            }
            let count = c.count.load(Ordering::Relaxed);
            sample(
                w,
                "target_response_seconds_bucket",
                &[("target_group", name), ("le", "+Inf")],
                count,
            );
            let sum = c.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            sample(
                w,
                "target_response_seconds_sum",
                &[("target_group", name)],
                sum,
            );
            sample(
                w,
                "target_response_seconds_count",
                &[("target_group", name)],
                count,
            );
        }
        for (metric, help, states) in [
            (
                "target_group_healthy_targets",
                "Targets in rotation (healthy, or unchecked).",
                &[Health::Healthy, Health::Unused][..],
            ),
            (
                "target_group_unhealthy_targets",
                "Targets failing health checks or not yet passing them.",
                &[Health::Unhealthy, Health::Initial][..],
            ),
            (
                "target_group_draining_targets",
                "Targets removed from their group, finishing in-flight requests.",
                &[Health::Draining][..],
            ),
        ] {
            family(w, metric, "gauge", help);
            for group in table.groups().values() {
                let n = count_in(group.balancer.targets().targets(), states);
                sample(w, metric, &[("target_group", &group.config.name)], n as u64);
            }
        }
        family(w, "target_group_requests_per_target", "gauge", "Requests to the group in the last 60 s divided by its healthy targets (ALB's RequestCountPerTarget).");
        for group in table.groups().values() {
            let healthy = count_in(
                group.balancer.targets().targets(),
                &[Health::Healthy, Health::Unused],
            );
            let requests = group.counters.last_minute() as f64;
            let per_target = if healthy == 0 {
                requests
            } else {
                requests / healthy as f64
            };
            sample(
                w,
                "target_group_requests_per_target",
                &[("target_group", &group.config.name)],
                per_target,
            );
        }
        family(
            w,
            "target_group_fail_open_total",
            "counter",
            "Requests routed to unhealthy targets because no target was healthy.",
        );
        for group in table.groups().values() {
            sample(
                w,
                "target_group_fail_open_total",
                &[("target_group", &group.config.name)],
                group.counters.fail_open.load(Ordering::Relaxed),
            );
        }
        family(w, "elb_responses_total", "counter", "Responses the proxy generated itself (errors, redirects, fixed responses), by status class.");
        for (name, l) in &self.listeners {
            for (c, n) in l.elb_responses.iter().enumerate() {
                let n = n.load(Ordering::Relaxed);
                if n > 0 {
                    sample(
                        w,
                        "elb_responses_total",
                        &[("listener", name), ("code", CLASSES[c])],
                        n,
                    );
                }
            }
        }
        family(w, "active_connections", "gauge", "Open client connections.");
        for (name, l) in &self.listeners {
            let n = l.active_connections.load(Ordering::Relaxed).max(0) as u64;
            sample(w, "active_connections", &[("listener", name)], n);
        }
        family(
            w,
            "new_connections_total",
            "counter",
            "Client connections accepted.",
        );
        for (name, l) in &self.listeners {
            sample(
                w,
                "new_connections_total",
                &[("listener", name)],
                l.new_connections.load(Ordering::Relaxed),
            );
        }
        family(
            w,
            "processed_bytes_total",
            "counter",
            "Bytes received from and sent to clients.",
        );
        for (name, l) in &self.listeners {
            sample(
                w,
                "processed_bytes_total",
                &[("listener", name)],
                l.processed_bytes.load(Ordering::Relaxed),
            );
        }
        family(
            w,
            "discovery_refresh_total",
            "counter",
            "Discovery polls, by target group and result.",
        );
        for ((group, ok), n) in self
            .discovery
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let result = if *ok { "success" } else { "failure" };
            sample(
                w,
                "discovery_refresh_total",
                &[("target_group", group), ("result", result)],
                *n,
            );
        }
        family(
            w,
            "discovery_api_calls_total",
            "counter",
            "AWS API calls made by discovery, by API.",
        );
        for (api, n) in self
            .api_calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            sample(w, "discovery_api_calls_total", &[("api", api)], *n);
        }
        family(
            w,
            "config_reloads_total",
            "counter",
            "Config reloads, by result.",
        );
        sample(
            w,
            "config_reloads_total",
            &[("result", "success")],
            self.reloads_ok.load(Ordering::Relaxed),
        );
        sample(
            w,
            "config_reloads_total",
            &[("result", "failure")],
            self.reloads_failed.load(Ordering::Relaxed),
        );
        out
    }
}

fn count_in(targets: &[std::sync::Arc<Target>], states: &[Health]) -> usize {
    targets
        .iter()
        .filter(|t| states.contains(&t.health()))
        .count()
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP ecslb_{name} {help}"); // writing to a String cannot fail
    let _ = writeln!(out, "# TYPE ecslb_{name} {kind}");
}

fn labels(out: &mut String, labels: &[(&str, &str)]) {
    out.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        for ch in v.chars() {
            match ch {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

fn sample(out: &mut String, name: &str, l: &[(&str, &str)], value: impl std::fmt::Display) {
    out.push_str("ecslb_");
    out.push_str(name);
    labels(out, l);
    let _ = writeln!(out, " {value}"); // writing to a String cannot fail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_fall_into_their_class() {
        assert_eq!(CLASSES[class(200)], "2xx");
        assert_eq!(CLASSES[class(503)], "5xx");
        assert_eq!(CLASSES[class(101)], "1xx");
        assert_eq!(CLASSES[class(999)], "5xx");
    }

    #[test]
    fn the_last_minute_counts_recent_requests_only() {
        let g = GroupCounters::default();
        for _ in 0..7 {
            g.record(Duration::from_millis(3), Instant::now());
        }
        assert_eq!(g.last_minute(), 7);
        assert_eq!(g.count.load(Ordering::Relaxed), 7);
        assert_eq!(
            g.buckets[1].load(Ordering::Relaxed),
            7,
            "3 ms falls in the 5 ms bucket"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        labels(&mut out, &[("a", "x\"y\\z\n")]);
        assert_eq!(out, r#"{a="x\"y\\z\n"}"#);
    }
}
