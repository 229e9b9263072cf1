//! Targets: one `ip:port` each, shared as `Arc<Target>` between route-table snapshots.
//!
//! What changes per request or per probe (health, in-flight count) lives in atomics on
//! the target, so it changes without rebuilding the route table. A [`TargetSet`] is a
//! target group's members at one instant, sorted by address so that change detection
//! is a plain `==`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A target's health state, as ALB reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Health {
    /// New target that has not yet passed its health checks.
    Initial = 0,
    /// Passing its health checks.
    Healthy = 1,
    /// Failing its health checks.
    Unhealthy = 2,
    /// Removed from the group; finishing its in-flight requests.
    Draining = 3,
    /// The group has no health check configured: the target is taken as healthy.
    Unused = 4,
}

impl Health {
    fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Initial,
            1 => Self::Healthy,
            2 => Self::Unhealthy,
            3 => Self::Draining,
            _ => Self::Unused,
        }
    }
}

/// One target: an address a target group forwards to.
///
/// Identity is the address (plus the ECS task, where there is one); health and the
/// in-flight count are atomics, so readers never block.
#[derive(Debug)]
pub struct Target {
    /// Where requests are sent.
    pub addr: SocketAddr,
    /// `addr` as a URI authority, made once rather than per request.
    pub authority: http::uri::Authority,
    /// Relative share of new requests under `weighted_random` (static targets: 1).
    pub weight: u32,
    health: AtomicU8,
    in_flight: AtomicUsize,
    /// Open connections to this target, carried across reloads with it.
    pub pool: crate::upstream::Pool,
    /// Health-check and draining details, for the admin API and slow start.
    pub status: Status,
    /// Request and error counters, rendered by `/metrics` while the target is a member.
    pub counters: crate::metrics::TargetCounters,
    /// The ECS task behind the target, when discovery knows it (for metric labels).
    pub ecs: arc_swap::ArcSwapOption<EcsLabels>,
}

/// What ECS discovery knows of a target: its task and service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcsLabels {
    /// The task id (the last part of its ARN).
    pub task: String,
    /// The service that started it, if any.
    pub service: Option<String>,
}

/// Milliseconds on a process-wide monotonic clock (0 = never).
pub fn now_ms() -> u64 {
    ms_at(Instant::now())
}

/// [`now_ms`] of an instant already read (spares a clock read on the request path).
pub fn ms_at(at: Instant) -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(|| at);
    at.saturating_duration_since(start).as_millis() as u64 + 1
}

/// What is known about a target besides its health state; every field is an atomic
/// written by one owner (the health checker, the proxy or the reconciler).
#[derive(Debug, Default)]
pub struct Status {
    /// ALB reason code of the current state (index into [`REASONS`]).
    pub reason: AtomicU8,
    /// When the last health check completed ([`now_ms`]), 0 if never.
    pub last_check_ms: AtomicU64,
    /// Consecutive passing health checks.
    pub passes: AtomicU32,
    /// Consecutive failing health checks.
    pub failures: AtomicU32,
    /// When the target last turned healthy ([`now_ms`]): slow start ramps from here.
    pub healthy_since_ms: AtomicU64,
    /// When draining began ([`now_ms`]), 0 if not draining.
    pub draining_since_ms: AtomicU64,
    /// Consecutive failed requests (outlier detection).
    pub request_errors: AtomicU32,
    /// Ejected by outlier detection until this time ([`now_ms`]), 0 if not ejected.
    pub ejected_until_ms: AtomicU64,
    /// Ejections so far; each one lasts twice as long as the one before.
    pub ejections: AtomicU32,
}

/// ALB's target health reason codes, indexed by [`Status::reason`].
pub const REASONS: [&str; 8] = [
    "",
    "Elb.InitialHealthChecking",
    "Target.ResponseCodeMismatch",
    "Target.Timeout",
    "Target.FailedHealthChecks",
    "Target.DeregistrationInProgress",
    "Target.HealthCheckDisabled",
    "Target.Ejected",
];

/// Index of a reason code in [`REASONS`].
pub fn reason_index(code: &str) -> u8 {
    REASONS.iter().position(|r| *r == code).unwrap_or(0) as u8
}

impl Target {
    /// A new target in the given initial health state.
    pub fn new(addr: SocketAddr, health: Health) -> Self {
        let authority = http::uri::Authority::try_from(addr.to_string())
            .expect("a socket address is a valid authority");
        Self {
            addr,
            authority,
            weight: 1,
            health: AtomicU8::new(health as u8),
            in_flight: AtomicUsize::new(0),
            pool: crate::upstream::Pool::default(),
            status: Status::default(),
            counters: crate::metrics::TargetCounters::default(),
            ecs: arc_swap::ArcSwapOption::empty(),
        }
    }

    /// A new target for a group with or without health checks: `initial` (waiting for
    /// its first checks) or `unused` (no checks: taken as healthy).
    pub fn joining(addr: SocketAddr, checked: bool) -> Self {
        let target = Self::new(
            addr,
            if checked {
                Health::Initial
            } else {
                Health::Unused
            },
        );
        let reason = if checked {
            "Elb.InitialHealthChecking"
        } else {
            "Target.HealthCheckDisabled"
        };
        target
            .status
            .reason
            .store(reason_index(reason), Ordering::Relaxed);
        target
    }

    /// The reason code of the current state.
    pub fn reason(&self) -> &'static str {
        REASONS[usize::from(self.status.reason.load(Ordering::Relaxed)).min(REASONS.len() - 1)]
    }

    /// Whether outlier detection has this target ejected right now.
    pub fn is_ejected(&self) -> bool {
        let until = self.status.ejected_until_ms.load(Ordering::Relaxed);
        // Checked before reading the clock: almost always 0.
        until != 0 && now_ms() < until
    }

    /// Keeps a listed target in rotation after a reconcile: a draining one rejoins, and
    /// its state follows health checks being turned on or off.
    fn rejoin(&self, checked: bool) {
        let health = self.health();
        let fresh = match (health, checked) {
            (Health::Draining, _) | (Health::Unused, true) => Some(Health::Initial),
            (Health::Initial | Health::Healthy | Health::Unhealthy, false) => Some(Health::Unused),
            _ => None,
        };
        if let Some(fresh) = fresh {
            let fresh = if checked { fresh } else { Health::Unused };
            self.set_health(fresh);
            self.status.draining_since_ms.store(0, Ordering::Relaxed);
            let reason = if checked {
                "Elb.InitialHealthChecking"
            } else {
                "Target.HealthCheckDisabled"
            };
            self.status
                .reason
                .store(reason_index(reason), Ordering::Relaxed);
        }
    }

    /// Whether this target is draining (removed, finishing in-flight requests).
    pub fn is_draining(&self) -> bool {
        self.health() == Health::Draining
    }

    /// Starts draining: no new requests from now on.
    pub fn start_draining(&self) {
        if !self.is_draining() {
            self.set_health(Health::Draining);
            self.status
                .draining_since_ms
                .store(now_ms(), Ordering::Relaxed);
            self.status.reason.store(
                reason_index("Target.DeregistrationInProgress"),
                Ordering::Relaxed,
            );
        }
    }

    /// Whether a draining target may now be dropped: idle, or past `delay`. A target
    /// not draining yet (just removed) may be dropped only if idle.
    pub fn drained(&self, delay: Duration) -> bool {
        let since = self.status.draining_since_ms.load(Ordering::Relaxed);
        // `since` is 0 until draining starts; without this check a busy target removed
        // from a proxy up for longer than `delay` would count as drained at once.
        self.in_flight() == 0
            || (since != 0 && now_ms().saturating_sub(since) >= delay.as_millis() as u64)
    }

    /// Share (0 to 1) of its normal traffic a target in slow start takes now.
    pub fn slow_start_share(&self, slow_start: Duration) -> f64 {
        let since = self.status.healthy_since_ms.load(Ordering::Relaxed);
        if slow_start.is_zero() || since == 0 {
            return 1.0;
        }
        let elapsed = now_ms().saturating_sub(since) as f64;
        (elapsed / slow_start.as_millis() as f64).min(1.0)
    }

    /// Current health state.
    pub fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Relaxed))
    }

    /// Sets the health state; takes effect on the next pick.
    pub fn set_health(&self, health: Health) {
        self.health.store(health as u8, Ordering::Relaxed);
    }

    /// Whether the balancer may send new requests here: healthy (or unchecked) and not
    /// ejected by outlier detection.
    pub fn is_eligible(&self) -> bool {
        matches!(self.health(), Health::Healthy | Health::Unused) && !self.is_ejected()
    }

    /// Whether the target may take requests when the group fails open (no target is
    /// eligible): anything but draining.
    pub fn is_fail_open_eligible(&self) -> bool {
        !self.is_draining()
    }

    /// Requests currently being forwarded to this target.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts one more request in flight; the returned guard counts it out when dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            target: Arc::clone(self),
        }
    }
}

/// A request in flight to a target: dropping it decrements the target's count.
#[derive(Debug)]
pub struct InFlight {
    target: Arc<Target>,
}

impl InFlight {
    /// The target the request goes to.
    pub fn target(&self) -> &Arc<Target> {
        &self.target
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.target.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A target group's members at one instant, sorted by address.
///
/// ```
/// use ecslb::target::{Health, TargetSet};
/// let set = TargetSet::build(
///     ["127.0.0.1:3001".parse().unwrap(), "127.0.0.1:3000".parse().unwrap()],
///     None,
///     Health::Unused,
/// );
/// assert_eq!(set.targets()[0].addr.port(), 3000);
/// assert!(set.find("127.0.0.1:3001".parse().unwrap()).is_some());
/// ```
#[derive(Debug, Clone, Default)]
pub struct TargetSet {
    targets: Arc<[Arc<Target>]>,
}

impl TargetSet {
    /// Builds a set from addresses, reusing the `Arc<Target>` of any address already in
    /// `previous` so that health and in-flight counts carry over; new ones start in `health`.
    pub fn build(
        addrs: impl IntoIterator<Item = SocketAddr>,
        previous: Option<&TargetSet>,
        health: Health,
    ) -> Self {
        let mut addrs: Vec<SocketAddr> = addrs.into_iter().collect();
        addrs.sort_unstable();
        addrs.dedup();
        let targets = addrs
            .into_iter()
            .map(|addr| match previous.and_then(|p| p.find(addr)) {
                Some(existing) => Arc::clone(existing),
                None => Arc::new(Target::new(addr, health)),
            })
            .collect();
        Self { targets }
    }

    /// The next set of a target group whose members are now `addrs`:
    ///
    /// - members still listed keep their `Arc<Target>` (health, counts, pools);
    /// - new addresses join as `initial` (`checked`) or `unused`;
    /// - members no longer listed stay (ineligible once draining) until idle or
    ///   `deregistration_delay` has passed; a draining member listed again rejoins.
    ///
    /// Members that must start draining are pushed to `to_drain` rather than marked
    /// here: the previous set is still serving, and marking them now could leave it
    /// with nothing eligible before the new set is stored.
    pub fn reconcile(
        addrs: impl IntoIterator<Item = SocketAddr>,
        previous: &TargetSet,
        checked: bool,
        deregistration_delay: Duration,
        to_drain: &mut Vec<Arc<Target>>,
    ) -> Self {
        let mut addrs: Vec<SocketAddr> = addrs.into_iter().collect();
        addrs.sort_unstable();
        addrs.dedup();
        let mut targets: Vec<Arc<Target>> = addrs
            .iter()
            .map(|&addr| match previous.find(addr) {
                Some(existing) => {
                    existing.rejoin(checked);
                    Arc::clone(existing)
                }
                None => Arc::new(Target::joining(addr, checked)),
            })
            .collect();
        for old in previous.targets() {
            if addrs.binary_search(&old.addr).is_err() && !old.drained(deregistration_delay) {
                if !old.is_draining() {
                    to_drain.push(Arc::clone(old));
                }
                targets.push(Arc::clone(old));
            }
        }
        targets.sort_unstable_by_key(|t| t.addr);
        Self {
            targets: targets.into(),
        }
    }

    /// Whether a draining member could now be dropped by [`TargetSet::reconcile`].
    pub fn has_drained(&self, deregistration_delay: Duration) -> bool {
        self.targets
            .iter()
            .any(|t| t.is_draining() && t.drained(deregistration_delay))
    }

    /// The members, sorted by address.
    pub fn targets(&self) -> &[Arc<Target>] {
        &self.targets
    }

    /// The member with this address, if any (binary search).
    pub fn find(&self, addr: SocketAddr) -> Option<&Arc<Target>> {
        self.targets
            .binary_search_by(|t| t.addr.cmp(&addr))
            .ok()
            .map(|i| &self.targets[i])
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether the set has no member.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}

impl PartialEq for TargetSet {
    fn eq(&self, other: &Self) -> bool {
        self.targets.len() == other.targets.len()
            && self
                .targets
                .iter()
                .zip(other.targets.iter())
                .all(|(a, b)| a.addr == b.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_carries_state_of_existing_targets() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let first = TargetSet::build([a], None, Health::Initial);
        first.targets()[0].set_health(Health::Healthy);
        let second = TargetSet::build([b, a], Some(&first), Health::Initial);
        assert_eq!(second.find(a).unwrap().health(), Health::Healthy);
        assert_eq!(second.find(b).unwrap().health(), Health::Initial);
        assert!(Arc::ptr_eq(second.find(a).unwrap(), &first.targets()[0]));
    }

    #[test]
    fn a_busy_target_counts_as_drained_only_once_it_has_drained_for_the_delay() {
        let t = Arc::new(Target::new("127.0.0.1:1".parse().unwrap(), Health::Healthy));
        let busy = t.begin();
        assert!(!t.drained(Duration::ZERO), "removed but not draining yet");
        t.start_draining();
        assert!(t.drained(Duration::ZERO));
        assert!(!t.drained(Duration::from_secs(60)));
        drop(busy);
        assert!(t.drained(Duration::from_secs(60)));
    }

    #[test]
    fn in_flight_guard_counts_out_on_drop() {
        let t = Arc::new(Target::new("127.0.0.1:1".parse().unwrap(), Health::Unused));
        let g1 = t.begin();
        let g2 = t.begin();
        assert_eq!(t.in_flight(), 2);
        drop(g1);
        drop(g2);
        assert_eq!(t.in_flight(), 0);
    }
}
