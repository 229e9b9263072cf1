//! Discovery: keeps each target group's membership up to date from ECS or Cloud Map
//! (static groups need nothing). One provider task per discovered group polls its
//! source and publishes the full address set when it changes; the reloader rebuilds the
//! route table with it.
//!
//! A failed poll publishes nothing: the last good set stays, the error is logged once
//! per streak with the retry delay, and retries back off with jitter. Providers follow
//! the route table: a reload that leaves a group's discovery settings unchanged keeps
//! its provider (and its state) running.

mod cloud_map;
mod ec2;
mod ecs;
pub mod limiter;
mod tasks;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::app::Reloader;
use crate::config::Discovery;
use limiter::Limiter;

/// Why a poll failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An AWS API call failed (the SDK's message, with its cause chain).
    #[error("{0}")]
    Aws(String),
}

/// One discovered target: its address and, from ECS, its task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Where requests go.
    pub addr: SocketAddr,
    /// The ECS task and service, for metric and service-discovery labels.
    pub ecs: Option<crate::target::EcsLabels>,
}

/// The longest wait between retries after errors.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

enum Provider {
    Ecs(Box<ecs::Ecs>),
    CloudMap(cloud_map::CloudMap),
}

impl Provider {
    async fn poll(&mut self, count: &(dyn Fn(&'static str) + Sync)) -> Result<Vec<Member>, Error> {
        match self {
            Provider::Ecs(p) => p.poll(count).await,
            Provider::CloudMap(p) => p.poll(count).await,
        }
    }
}

struct Running {
    settings: Discovery,
    task: JoinHandle<()>,
}

/// Starts the discovery supervisor; it runs until `stop` fires.
pub fn spawn(reloader: Arc<Reloader>, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut changes = reloader.routes().subscribe();
        let mut running: HashMap<String, Running> = HashMap::new();
        let mut sdk: Option<aws_config::SdkConfig> = None;
        // One bucket for the process: ECS's quota is per account and region. Sized at
        // start (`[aws] api_rate`, `api_burst`).
        let (limiter, api_timeout) = {
            let config = reloader.config();
            let limiter = Limiter::new(config.aws_api_rate, config.aws_api_burst);
            (Arc::new(limiter), config.aws_api_timeout)
        };
        loop {
            let config = reloader.config();
            let wanted: HashMap<String, Discovery> = config
                .target_groups
                .values()
                .filter(|g| !matches!(g.discovery, Discovery::Static(_)))
                .map(|g| (g.name.clone(), g.discovery.clone()))
                .collect();
            running.retain(|name, r| {
                let keep = wanted.get(name) == Some(&r.settings);
                if !keep {
                    r.task.abort();
                }
                keep
            });
            for (name, settings) in wanted {
                if running.contains_key(&name) {
                    continue;
                }
                let sdk = match &sdk {
                    Some(sdk) => sdk.clone(),
                    None => {
                        let loaded = aws_config::defaults(aws_config::BehaviorVersion::latest())
                            .timeout_config(api_timeouts(api_timeout))
                            .load()
                            .await;
                        sdk = Some(loaded.clone());
                        loaded
                    }
                };
                let (provider, refresh) = match &settings {
                    Discovery::Ecs(e) => {
                        let ecs = ecs::Ecs::new(&sdk, e.clone(), Arc::clone(&limiter));
                        (Provider::Ecs(Box::new(ecs)), e.refresh)
                    }
                    Discovery::CloudMap(m) => {
                        let cloud_map =
                            cloud_map::CloudMap::new(&sdk, m.clone(), Arc::clone(&limiter));
                        (Provider::CloudMap(cloud_map), m.refresh)
                    }
                    Discovery::Static(_) => continue,
                };
                let task =
                    tokio::spawn(run(Arc::clone(&reloader), name.clone(), provider, refresh));
                running.insert(name, Running { settings, task });
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { break },
                () = stop.cancelled() => break,
            }
        }
        for r in running.into_values() {
            r.task.abort();
        }
    })
}

/// The SDK's timeouts for every ECS and Cloud Map call: `attempt` (`[aws]
/// api_timeout`) bounds each attempt. The SDK sets no limit of its own, so an endpoint
/// that accepts connections and never answers would otherwise stall discovery (and its
/// error log) for good; with it, the attempt fails and the SDK retries.
fn api_timeouts(attempt: Duration) -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(attempt.min(Duration::from_secs(3)))
        .operation_attempt_timeout(attempt)
        .build()
}

/// Polls one group's source forever (the supervisor aborts it).
async fn run(reloader: Arc<Reloader>, group: String, mut provider: Provider, refresh: Duration) {
    let metrics = Arc::clone(&reloader.metrics);
    let count = |api: &'static str| metrics.count_api_call(api);
    let mut failures: u32 = 0;
    loop {
        let delay = match provider.poll(&count).await {
            Ok(addrs) => {
                if failures > 0 {
                    tracing::info!(target_group = %group, failures, "discovery recovered");
                }
                failures = 0;
                metrics.count_discovery(&group, true);
                reloader.publish(&group, addrs);
                refresh
            }
            Err(e) => {
                failures += 1;
                metrics.count_discovery(&group, false);
                let backoff = refresh
                    .saturating_mul(1 << failures.min(6))
                    .min(MAX_BACKOFF);
                let delay = backoff.mul_f64(0.5 + fastrand::f64() / 2.0);
                if failures == 1 {
                    tracing::warn!(target_group = %group, error = %e, retry_in = ?delay,
                        "discovery failed; keeping the last known targets");
                }
                delay
            }
        };
        tokio::time::sleep(delay).await;
    }
}
