//! A client-side token bucket for AWS API calls: every discovery provider of the
//! process draws from one bucket, sized to ECS's published quota (20 requests per
//! second sustained, bursts of 100), so many target groups cannot get one throttled.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A token bucket; `acquire` waits for a token.
#[derive(Debug)]
pub struct Limiter {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl Limiter {
    /// `rate` tokens per second, up to `burst` saved up (starts full).
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Waits until a call may be made. Callers are served in the order they arrive:
    /// each takes its token at once, the balance going negative when the bucket is
    /// empty, and sleeps until the bucket has refilled to it. (Waiters that polled
    /// again for a free token would let one busy group starve the others.)
    pub async fn acquire(&self) {
        let wait = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let (tokens, last) = *state;
            let tokens =
                (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.burst) - 1.0;
            *state = (tokens, now);
            if tokens >= 0.0 {
                return;
            }
            Duration::from_secs_f64(-tokens / self.rate)
        };
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bursts_then_holds_the_sustained_rate() {
        let limiter = Limiter::new(20.0, 100.0);
        let start = Instant::now();
        for _ in 0..100 {
            limiter.acquire().await;
        }
        assert!(
            start.elapsed() < Duration::from_millis(1),
            "the burst is immediate"
        );
        for _ in 0..200 {
            limiter.acquire().await;
        }
        let elapsed = start.elapsed().as_secs_f64();
        assert!(
            (9.9..=10.1).contains(&elapsed),
            "200 more at 20/s take 10 s, took {elapsed}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn callers_share_a_saturated_bucket_fairly() {
        let limiter = std::sync::Arc::new(Limiter::new(10.0, 1.0));
        let counts: Vec<_> = (0..3)
            .map(|_| std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0)))
            .collect();
        for count in &counts {
            let (limiter, count) = (limiter.clone(), count.clone());
            tokio::spawn(async move {
                loop {
                    limiter.acquire().await;
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
        let counts: Vec<usize> = counts
            .iter()
            .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
            .collect();
        let total: usize = counts.iter().sum();
        assert!((300..=302).contains(&total), "10/s for 30 s: {counts:?}");
        let (min, max) = (counts.iter().min(), counts.iter().max());
        assert!(
            max.zip(min).is_some_and(|(max, min)| max - min <= 2),
            "each caller gets its turn: {counts:?}"
        );
    }
}
