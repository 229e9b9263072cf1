//! Picking a target for a request: a [`Balancer`] is built from a target set and the
//! group's algorithm, and lives in the route table snapshot.
//!
//! Picks only consider eligible targets (see [`Target::is_eligible`]); they read atomics
//! and never lock. Stickiness (by cookie) is in [`sticky`].

mod least_outstanding;
mod round_robin;
pub mod sticky;
mod weighted_random;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use crate::config::Algorithm;
use crate::target::{Target, TargetSet};

/// Picks targets from one target set with one algorithm.
///
/// ```
/// use ecslb::balance::{Algorithm, Balancer};
/// use ecslb::target::{Health, TargetSet};
/// let set = TargetSet::build(
///     ["127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap()],
///     None,
///     Health::Unused,
/// );
/// let balancer = Balancer::new(Algorithm::RoundRobin, set);
/// let a = balancer.pick().unwrap().addr;
/// let b = balancer.pick().unwrap().addr;
/// assert_ne!(a, b);
/// ```
#[derive(Debug)]
pub struct Balancer {
    algorithm: Algorithm,
    targets: TargetSet,
    /// Round-robin position (also the tie-breaker of least outstanding requests).
    /// Starts at random: every reload or membership change builds a new balancer, and
    /// starting each at zero would hand every rebuild's first request to the same
    /// (lowest-addressed) target, as would every replica started at once.
    next: AtomicUsize,
    /// New targets ramp up over this long after turning healthy (zero: off).
    slow_start: Duration,
    /// Picks made while no target was eligible (ALB's fail-open); shared with the
    /// group's next balancers, so the count survives rebuilds.
    fail_open: Arc<AtomicU64>,
}

impl Balancer {
    /// A balancer over `targets`.
    pub fn new(algorithm: Algorithm, targets: TargetSet) -> Self {
        Self {
            algorithm,
            targets,
            next: AtomicUsize::new(fastrand::usize(..)),
            slow_start: Duration::ZERO,
            fail_open: Arc::default(),
        }
    }

    /// Continues counting fail-open picks in `counter` (the previous balancer's).
    pub fn with_fail_open_counter(mut self, counter: Arc<AtomicU64>) -> Self {
        self.fail_open = counter;
        self
    }

    /// The fail-open counter, to hand to the group's next balancer.
    pub fn fail_open_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.fail_open)
    }

    /// Ramps targets that turn healthy up linearly over `slow_start` (zero: off).
    pub fn with_slow_start(mut self, slow_start: Duration) -> Self {
        self.slow_start = slow_start;
        self
    }

    /// Picks made while no target was eligible.
    pub fn fail_open_picks(&self) -> u64 {
        self.fail_open.load(Ordering::Relaxed)
    }

    /// The target the algorithm chooses among the eligible ones (healthy or unchecked,
    /// not ejected), with targets in slow start taking their ramped share. When no
    /// target is eligible the group fails open, as ALB does: every target but the
    /// draining ones may be picked. `None` only when nothing but draining targets remain.
    pub fn pick(&self) -> Option<&Arc<Target>> {
        let slow_start = self.slow_start;
        if !slow_start.is_zero() {
            let ramped = |t: &Target| {
                t.is_eligible() && {
                    let share = t.slow_start_share(slow_start);
                    share >= 1.0 || fastrand::f64() < share
                }
            };
            let picked = match self.algorithm {
                Algorithm::WeightedRandom => self.pick_with(Target::is_eligible, |t| {
                    t.slow_start_share(slow_start).max(0.001)
                }),
                _ => self.pick_with(ramped, |_| 1.0),
            };
            if picked.is_some() {
                return picked;
            }
        }
        if let Some(t) = self.pick_with(Target::is_eligible, |_| 1.0) {
            return Some(t);
        }
        let t = self.pick_with(Target::is_fail_open_eligible, |_| 1.0)?;
        self.fail_open.fetch_add(1, Ordering::Relaxed);
        Some(t)
    }

    fn pick_with(
        &self,
        accept: impl Fn(&Target) -> bool,
        share: impl Fn(&Target) -> f64,
    ) -> Option<&Arc<Target>> {
        let targets = self.targets.targets();
        match self.algorithm {
            Algorithm::RoundRobin => round_robin::pick(targets, &self.next, accept),
            Algorithm::LeastOutstandingRequests => {
                least_outstanding::pick(targets, &self.next, accept)
            }
            Algorithm::WeightedRandom => weighted_random::pick(targets, accept, share),
        }
    }

    /// Like [`Balancer::pick`], passing over the targets at `avoid` (those a connection
    /// already failed to reach).
    pub fn pick_avoiding(&self, avoid: &[SocketAddr]) -> Option<&Arc<Target>> {
        if avoid.is_empty() {
            return self.pick();
        }
        let fresh = |t: &Target| !avoid.contains(&t.addr);
        if let Some(t) = self.pick_with(|t| t.is_eligible() && fresh(t), |_| 1.0) {
            return Some(t);
        }
        let t = self.pick_with(|t| t.is_fail_open_eligible() && fresh(t), |_| 1.0)?;
        self.fail_open.fetch_add(1, Ordering::Relaxed);
        Some(t)
    }

    /// The target at `addr` if it is a member and eligible (for stickiness).
    pub fn pick_addr(&self, addr: SocketAddr) -> Option<&Arc<Target>> {
        self.targets.find(addr).filter(|t| t.is_eligible())
    }

    /// The target set this balancer picks from.
    pub fn targets(&self) -> &TargetSet {
        &self.targets
    }

    /// The algorithm in use.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::Health;
    use std::collections::HashMap;

    fn set(n: u16) -> TargetSet {
        TargetSet::build(
            (1..=n).map(|p| SocketAddr::from(([127, 0, 0, 1], p))),
            None,
            Health::Unused,
        )
    }

    fn counts(b: &Balancer, picks: usize) -> HashMap<u16, usize> {
        let mut counts = HashMap::new();
        for _ in 0..picks {
            *counts.entry(b.pick().unwrap().addr.port()).or_default() += 1;
        }
        counts
    }

    #[test]
    fn round_robin_spreads_evenly() {
        let b = Balancer::new(Algorithm::RoundRobin, set(3));
        let counts = counts(&b, 300);
        assert_eq!(counts.values().copied().collect::<Vec<_>>(), vec![100; 3]);
    }

    #[test]
    fn every_algorithm_skips_ineligible_targets() {
        for algorithm in [
            Algorithm::RoundRobin,
            Algorithm::LeastOutstandingRequests,
            Algorithm::WeightedRandom,
        ] {
            let s = set(3);
            s.targets()[0].set_health(Health::Unhealthy);
            s.targets()[1].set_health(Health::Healthy);
            s.targets()[2].start_draining();
            let b = Balancer::new(algorithm, s);
            let counts = counts(&b, 50);
            assert_eq!(
                counts.keys().copied().collect::<Vec<_>>(),
                vec![2],
                "{algorithm:?}"
            );
        }
    }

    #[test]
    fn a_group_with_no_eligible_target_fails_open_but_never_to_draining_targets() {
        let s = set(3);
        s.targets()[0].set_health(Health::Initial);
        s.targets()[1].set_health(Health::Unhealthy);
        s.targets()[2].start_draining();
        for algorithm in [
            Algorithm::RoundRobin,
            Algorithm::LeastOutstandingRequests,
            Algorithm::WeightedRandom,
        ] {
            let b = Balancer::new(algorithm, s.clone());
            let counts = counts(&b, 60);
            assert!(
                !counts.contains_key(&3),
                "{algorithm:?} picked a draining target"
            );
            assert_eq!(counts.len(), 2, "{algorithm:?}");
            assert_eq!(b.fail_open_picks(), 60);
        }
    }

    #[test]
    fn a_group_failing_open_takes_every_target_in_turn() {
        for algorithm in [Algorithm::RoundRobin, Algorithm::LeastOutstandingRequests] {
            let s = set(2);
            for t in s.targets() {
                t.set_health(Health::Unhealthy);
            }
            let counts = counts(&Balancer::new(algorithm, s), 100);
            assert_eq!(
                counts.values().copied().collect::<Vec<_>>(),
                vec![50; 2],
                "{algorithm:?}"
            );
        }
    }

    #[test]
    fn only_draining_targets_pick_none() {
        let s = set(2);
        for t in s.targets() {
            t.start_draining();
        }
        for algorithm in [
            Algorithm::RoundRobin,
            Algorithm::LeastOutstandingRequests,
            Algorithm::WeightedRandom,
        ] {
            assert!(Balancer::new(algorithm, s.clone()).pick().is_none());
        }
        assert!(Balancer::new(Algorithm::RoundRobin, TargetSet::default())
            .pick()
            .is_none());
    }

    #[test]
    fn least_outstanding_prefers_the_idle_target() {
        let b = Balancer::new(Algorithm::LeastOutstandingRequests, set(3));
        let busy1 = b.targets().targets()[0].begin();
        let busy2 = b.targets().targets()[1].begin();
        for _ in 0..10 {
            assert_eq!(b.pick().unwrap().addr.port(), 3);
        }
        drop((busy1, busy2));
    }

    #[test]
    fn least_outstanding_breaks_ties_in_turn() {
        let b = Balancer::new(Algorithm::LeastOutstandingRequests, set(3));
        let counts = counts(&b, 300);
        assert_eq!(counts.values().copied().collect::<Vec<_>>(), vec![100; 3]);
    }

    #[test]
    fn weighted_random_is_roughly_uniform_for_equal_weights() {
        let b = Balancer::new(Algorithm::WeightedRandom, set(4));
        let counts = counts(&b, 40_000);
        for (&port, &n) in &counts {
            // Expected 10,000 each; 6 standard deviations is about ±520.
            assert!((9_400..=10_600).contains(&n), "target {port} got {n}");
        }
    }
}
