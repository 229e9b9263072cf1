//! Active health checks: one probe loop per checked target, at most one probe in flight
//! each, spread over the interval; thresholds counted by [`tracker::Tracker`]. Results
//! land in the target's atomics, so a flip takes effect on the next pick without a
//! route-table rebuild.
//!
//! [`spawn`] follows the route table: on every change it starts probe loops for new
//! targets (or changed checks) and stops those of targets that left or are draining.
//! Passive outlier detection is in [`outlier`].

pub mod outlier;
mod probe;
pub mod tracker;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::HealthCheck;
use crate::routing::{RouteTable, Routes};
use crate::target::{now_ms, reason_index, Health, Target};
use tracker::Tracker;

/// A running probe loop.
struct Probe {
    target: Arc<Target>,
    check: HealthCheck,
    task: JoinHandle<()>,
}

/// Starts the health checker; it runs until `stop` fires.
pub fn spawn(routes: Routes, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut changes = routes.subscribe();
        let mut probes: HashMap<(String, SocketAddr), Probe> = HashMap::new();
        loop {
            reconcile(&routes.load_full(), &mut probes);
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { break },
                () = stop.cancelled() => break,
            }
        }
        for probe in probes.into_values() {
            probe.task.abort();
        }
    })
}

/// Makes the running probe loops match the table's checked, non-draining targets.
fn reconcile(table: &RouteTable, probes: &mut HashMap<(String, SocketAddr), Probe>) {
    let mut wanted = HashMap::new();
    for group in table.groups().values() {
        let Some(check) = &group.config.health_check else {
            continue;
        };
        for target in group.balancer.targets().targets() {
            if !target.is_draining() {
                wanted.insert((group.config.name.clone(), target.addr), (target, check));
            }
        }
    }
    probes.retain(|key, probe| {
        let keep = wanted
            .get(key)
            .is_some_and(|(t, c)| Arc::ptr_eq(t, &probe.target) && **c == probe.check);
        if !keep {
            probe.task.abort();
        }
        keep
    });
    for (key, (target, check)) in wanted {
        probes.entry(key).or_insert_with(|| Probe {
            target: Arc::clone(target),
            check: check.clone(),
            task: tokio::spawn(probe_loop(Arc::clone(target), check.clone())),
        });
    }
}

/// Probes one target every interval, forever (the supervisor aborts it).
async fn probe_loop(target: Arc<Target>, check: HealthCheck) {
    // Spread the first probes of many targets over one interval instead of a burst.
    let jitter = check.interval.mul_f64(fastrand::f64());
    tokio::time::sleep(jitter).await;
    let mut tracker = Tracker::resume(
        check.healthy_threshold,
        check.unhealthy_threshold,
        target.health(),
    );
    let mut ticks = tokio::time::interval(check.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let outcome =
            match tokio::time::timeout(check.timeout, probe::run(target.addr, &check)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(tracker::Failure::Timeout),
            };
        record(&target, &mut tracker, outcome);
    }
}

/// Applies one probe outcome to the target's state.
fn record(target: &Target, tracker: &mut Tracker, outcome: Result<(), tracker::Failure>) {
    if target.is_draining() {
        return;
    }
    let status = &target.status;
    let changed = tracker.record(outcome.is_ok());
    status.last_check_ms.store(now_ms(), Ordering::Relaxed);
    status.passes.store(tracker.passes(), Ordering::Relaxed);
    status.failures.store(tracker.failures(), Ordering::Relaxed);
    let reason = match (tracker.state(), outcome) {
        (Health::Healthy, _) => "",
        (Health::Initial, _) => "Elb.InitialHealthChecking",
        (_, Err(failure)) => failure.reason(),
        (_, Ok(())) => target.reason(),
    };
    status.reason.store(reason_index(reason), Ordering::Relaxed);
    if let Some(health) = changed {
        if health == Health::Healthy {
            status.healthy_since_ms.store(now_ms(), Ordering::Relaxed);
        }
        target.set_health(health);
        tracing::info!(target_addr = %target.addr, ?health, reason, "target health changed");
    }
}
