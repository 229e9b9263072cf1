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
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

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
}

impl Balancer {
    /// A balancer over `targets`.
    pub fn new(algorithm: Algorithm, targets: TargetSet) -> Self {
        Self {
            algorithm,
            targets,
            next: AtomicUsize::new(fastrand::usize(..)),
        }
    }

    /// The eligible target the algorithm chooses, or `None` when no target is eligible.
    pub fn pick(&self) -> Option<&Arc<Target>> {
        let targets = self.targets.targets();
        match self.algorithm {
            Algorithm::RoundRobin => round_robin::pick(targets, &self.next),
            Algorithm::LeastOutstandingRequests => least_outstanding::pick(targets, &self.next),
            Algorithm::WeightedRandom => weighted_random::pick(targets),
        }
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
            s.targets()[2].set_health(Health::Draining);
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
    fn no_eligible_target_picks_none() {
        let s = set(2);
        for t in s.targets() {
            t.set_health(Health::Initial);
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
