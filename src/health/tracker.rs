//! Health thresholds, as ALB counts them: pure state, no I/O.
//!
//! A target in `initial` becomes `healthy` after `healthy_threshold` consecutive passing
//! checks, or `unhealthy` after `unhealthy_threshold` consecutive failing ones; a healthy
//! target becomes unhealthy after `unhealthy_threshold` consecutive failures, and an
//! unhealthy one healthy after `healthy_threshold` consecutive passes.

use crate::target::Health;

/// Why the last check failed, with ALB's reason codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The check did not complete within the timeout (`Target.Timeout`).
    Timeout,
    /// The response status did not match the matcher (`Target.ResponseCodeMismatch`).
    ResponseCodeMismatch(u16),
    /// The connection was refused or reset (`Target.FailedHealthChecks`).
    Connection,
}

impl Failure {
    /// ALB's reason code.
    pub fn reason(self) -> &'static str {
        match self {
            Failure::Timeout => "Target.Timeout",
            Failure::ResponseCodeMismatch(_) => "Target.ResponseCodeMismatch",
            Failure::Connection => "Target.FailedHealthChecks",
        }
    }
}

/// Consecutive pass/fail counts of one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracker {
    healthy_threshold: u32,
    unhealthy_threshold: u32,
    state: Health,
    passes: u32,
    failures: u32,
}

impl Tracker {
    /// A tracker for a new target (`initial`).
    pub fn new(healthy_threshold: u32, unhealthy_threshold: u32) -> Self {
        Self::resume(healthy_threshold, unhealthy_threshold, Health::Initial)
    }

    /// A tracker continuing from a known state (after a reload changed the thresholds).
    pub fn resume(healthy_threshold: u32, unhealthy_threshold: u32, state: Health) -> Self {
        let state = match state {
            Health::Healthy | Health::Unhealthy => state,
            _ => Health::Initial,
        };
        Self {
            healthy_threshold: healthy_threshold.max(1),
            unhealthy_threshold: unhealthy_threshold.max(1),
            state,
            passes: 0,
            failures: 0,
        }
    }

    /// Records one check; returns the new state when it changed.
    pub fn record(&mut self, passed: bool) -> Option<Health> {
        if passed {
            self.passes = self.passes.saturating_add(1);
            self.failures = 0;
            if self.state != Health::Healthy && self.passes >= self.healthy_threshold {
                self.state = Health::Healthy;
                return Some(Health::Healthy);
            }
        } else {
            self.failures = self.failures.saturating_add(1);
            self.passes = 0;
            if self.state != Health::Unhealthy && self.failures >= self.unhealthy_threshold {
                self.state = Health::Unhealthy;
                return Some(Health::Unhealthy);
            }
        }
        None
    }

    /// Current state.
    pub fn state(&self) -> Health {
        self.state
    }

    /// Consecutive passing checks.
    pub fn passes(&self) -> u32 {
        self.passes
    }

    /// Consecutive failing checks.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_target_turns_healthy_after_exactly_the_threshold() {
        let mut t = Tracker::new(3, 2);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(true), Some(Health::Healthy));
        assert_eq!(t.record(true), None);
    }

    #[test]
    fn a_failure_resets_the_pass_count() {
        let mut t = Tracker::new(2, 5);
        t.record(true);
        t.record(false);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(true), Some(Health::Healthy));
    }

    #[test]
    fn healthy_target_turns_unhealthy_after_consecutive_failures() {
        let mut t = Tracker::resume(2, 2, Health::Healthy);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), Some(Health::Unhealthy));
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(true), Some(Health::Healthy));
    }

    #[test]
    fn initial_target_can_go_straight_to_unhealthy() {
        let mut t = Tracker::new(5, 2);
        t.record(false);
        assert_eq!(t.record(false), Some(Health::Unhealthy));
    }
}
