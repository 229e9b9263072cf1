//! ecslb: an ECS-aware load-balancer proxy with ALB semantics.
//!
//! # Layout
//! Data flows through the modules in this order:
//!
//! - [`config`]: the TOML file, parsed and validated into a typed [`config::Config`]
//!   (every problem reported at once, with file, line and field).
//! - [`discovery`]: ECS and Cloud Map polled per target group; each change publishes the
//!   group's full address set and rebuilds the route table.
//! - [`target`]: [`target::Target`]s (one `ip:port`, with atomic health and in-flight
//!   count) and the [`target::TargetSet`] of a target group at one instant.
//! - [`health`]: active health checks and passive outlier detection, written into each
//!   target's atomics (no table rebuild on a flip).
//! - [`balance`]: a [`balance::Balancer`] built from a target set picks a target per request.
//! - [`routing`]: the compiled [`routing::RouteTable`] (listener rules, actions, target
//!   groups), swapped whole in one `ArcSwap` on every change; requests read it lock-free.
//! - [`listener`]: accepts connections (HTTP/1.1 and HTTP/2) and serves them with [`proxy`].
//! - [`proxy`]: the one L7 request path: route, pick, forward, stream the response back.
//! - [`upstream`]: pooled keep-alive clients to targets (HTTP/1.1 or HTTP/2).
//! - [`metrics`]: counters held where they are counted; `/metrics` rendered from the
//!   route table, so series follow the live targets.
//! - [`access_log`]: one JSON line per request with ALB's access-log fields, written by
//!   a task of its own off the request path.
//! - [`admin`]: the admin listener (`/healthz`, `/ready`, `/v1/routes`, `/v1/targets`,
//!   `POST /v1/reload`).
//! - [`app`]: wires the stages together, owns reload and graceful shutdown.

pub mod access_log;
pub mod admin;
pub mod app;
pub mod balance;
pub mod config;
pub mod discovery;
pub mod health;
pub mod listener;
pub mod metrics;
pub mod proxy;
pub mod routing;
pub mod runtime;
pub mod shutdown;
pub mod target;
pub mod tls;
pub mod upstream;
