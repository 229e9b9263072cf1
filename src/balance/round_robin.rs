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
    (0..n)
        .map(|i| &targets[(start.wrapping_add(i)) % n])
        .find(|t| accept(t))
}
