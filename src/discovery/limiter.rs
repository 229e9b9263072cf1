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

    /// Waits until a call may be made.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                let (tokens, last) = *state;
                let tokens =
                    (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.burst);
                if tokens >= 1.0 {
                    *state = (tokens - 1.0, now);
                    return;
                }
                *state = (tokens, now);
                Duration::from_secs_f64((1.0 - tokens) / self.rate)
            };
            tokio::time::sleep(wait).await;
        }
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
}
