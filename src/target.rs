//! Targets: one `ip:port` each, shared as `Arc<Target>` between route-table snapshots.
//!
//! What changes per request or per probe (health, in-flight count) lives in atomics on
//! the target, so it changes without rebuilding the route table. A [`TargetSet`] is a
//! target group's members at one instant, sorted by address so that change detection
//! is a plain `==`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

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
        }
    }

    /// Current health state.
    pub fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Relaxed))
    }

    /// Sets the health state; takes effect on the next pick.
    pub fn set_health(&self, health: Health) {
        self.health.store(health as u8, Ordering::Relaxed);
    }

    /// Whether the balancer may send new requests here.
    pub fn is_eligible(&self) -> bool {
        matches!(self.health(), Health::Healthy | Health::Unused)
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
