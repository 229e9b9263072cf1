//! Least outstanding requests: the accepted target with the fewest requests in flight;
//! ties go to each target in turn, so an idle group is spread like round robin.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::target::Target;

pub(super) fn pick<'a>(
    targets: &'a [Arc<Target>],
    next: &AtomicUsize,
    accept: impl Fn(&Target) -> bool,
) -> Option<&'a Arc<Target>> {
    let n = targets.len();
    if n == 0 {
        return None;
    }
    let start = next.fetch_add(1, Ordering::Relaxed);
    let mut best: Option<(&Arc<Target>, usize)> = None;
    for i in 0..n {
        let t = &targets[start.wrapping_add(i) % n];
        let load = t.in_flight();
        if best.is_some_and(|(_, b)| load >= b) || !accept(t) {
            continue;
        }
        best = Some((t, load));
        if load == 0 {
            break;
        }
    }
    if best.is_none() {
        // No pick, so the turn is not used (see round_robin): the fallback pass takes it.
        next.fetch_sub(1, Ordering::Relaxed);
    }
    best.map(|(t, _)| t)
}
