//! Weighted random: an eligible target drawn at random in proportion to its weight.

use std::sync::Arc;

use crate::target::Target;

pub(super) fn pick(targets: &[Arc<Target>]) -> Option<&Arc<Target>> {
    let total: u64 = targets
        .iter()
        .filter(|t| t.is_eligible())
        .map(|t| u64::from(t.weight))
        .sum();
    if total == 0 {
        return None;
    }
    let mut draw = fastrand::u64(0..total);
    targets.iter().filter(|t| t.is_eligible()).find(|t| {
        let w = u64::from(t.weight);
        if draw < w {
            true
        } else {
            draw -= w;
            false
        }
    })
}
