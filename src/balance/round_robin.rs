//! Round robin: each accepted target in turn.

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
    let picked = (0..n)
        .map(|i| &targets[(start.wrapping_add(i)) % n])
        .find(|t| accept(t));
    if picked.is_none() {
        // No pick, so the turn is not used: the fallback pass (fail-open, or past slow
        // start) takes it. Skipping it would move two places per pick, and a fallback
        // over an even number of targets would only ever reach half of them.
        next.fetch_sub(1, Ordering::Relaxed);
    }
    picked
}
