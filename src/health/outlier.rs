//! Passive outlier detection: a target whose requests fail (connection errors or 5xx)
//! `consecutive_errors` times in a row is ejected for a while; each repeat doubles the
//! ejection (capped), and never more than `max_ejection_percent` of a group is ejected.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::config::OutlierDetection;
use crate::target::{now_ms, Target};

/// Records the outcome of one request to `target`, a member of `group`.
pub fn record(group: &[Arc<Target>], target: &Target, od: &OutlierDetection, failed: bool) {
    let status = &target.status;
    if !failed {
        if status.request_errors.load(Ordering::Relaxed) != 0 {
            status.request_errors.store(0, Ordering::Relaxed);
        }
        // A target that has stayed in rotation for a full max ejection time since its
        // last ejection starts over at the base ejection time.
        let until = status.ejected_until_ms.load(Ordering::Relaxed);
        if until != 0 && now_ms() > until + od.max_ejection_time.as_millis() as u64 {
            status.ejections.store(0, Ordering::Relaxed);
            status.ejected_until_ms.store(0, Ordering::Relaxed);
        }
        return;
    }
    let errors = status.request_errors.fetch_add(1, Ordering::Relaxed) + 1;
    if errors < od.consecutive_errors || target.is_ejected() {
        return;
    }
    let ejected = group.iter().filter(|t| t.is_ejected()).count();
    let cap = (group.len() * od.max_ejection_percent as usize / 100)
        .max(usize::from(od.max_ejection_percent > 0));
    if ejected >= cap {
        return;
    }
    let repeats = status.ejections.fetch_add(1, Ordering::Relaxed).min(16);
    let duration = od
        .base_ejection_time
        .saturating_mul(1 << repeats)
        .min(od.max_ejection_time);
    status.request_errors.store(0, Ordering::Relaxed);
    status
        .ejected_until_ms
        .store(now_ms() + duration.as_millis() as u64, Ordering::Relaxed);
    tracing::warn!(target_addr = %target.addr, errors, ?duration, "target ejected by outlier detection");
}
