//! Weighted random: an accepted target drawn at random in proportion to its weight
//! (scaled by `share`, which slow start uses to ramp a new target up).

use std::sync::Arc;

use crate::target::Target;

pub(super) fn pick(
    targets: &[Arc<Target>],
    accept: impl Fn(&Target) -> bool,
    share: impl Fn(&Target) -> f64,
) -> Option<&Arc<Target>> {
    let weight = |t: &Target| f64::from(t.weight) * share(t);
    let total: f64 = targets
        .iter()
        .filter(|t| accept(t))
        .map(|t| weight(t))
        .sum();
    if total <= 0.0 {
        return None;
    }
    let mut draw = fastrand::f64() * total;
    let mut last = None;
    for t in targets.iter().filter(|t| accept(t)) {
        let w = weight(t);
        if draw < w {
            return Some(t);
        }
        draw -= w;
        last = Some(t);
    }
    // Rounding can leave a sliver past the last weight.
    last
}
