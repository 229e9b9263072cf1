//! The admin listener: `GET /healthz` (process alive), `GET /ready` (listeners serving),
//! `GET /metrics` (Prometheus), `GET /v1/sd/prometheus` (Prometheus HTTP service discovery),
//! `GET /v1/routes` and `GET /v1/targets` (JSON), `POST /v1/reload`.
//! Binds to loopback by default; it is not meant to face clients.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::Reloader;
use crate::config;
use crate::routing::RouteTable;
use crate::target::{now_ms, Health, Target};
use std::sync::atomic::Ordering;

/// Serves the admin API until `stop` fires.
pub async fn serve(listener: TcpListener, reloader: Arc<Reloader>, stop: CancellationToken) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = tokio::select! {
            accepted = crate::listener::accept(&listener) => accepted,
            () = stop.cancelled() => return,
        };
        let reloader = Arc::clone(&reloader);
        let service = service_fn(move |req| {
            let reloader = Arc::clone(&reloader);
            async move { Ok::<_, Infallible>(handle(&reloader, req).await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
        });
    }
}

async fn handle(reloader: &Arc<Reloader>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/metrics") => {
            let table = reloader.routes().load_full();
            if !table.metrics_enabled {
                return text(
                    StatusCode::NOT_FOUND,
                    "metrics are disabled ([metrics] enabled = false)\n",
                );
            }
            let body = reloader.metrics.render(&table);
            let mut resp = Response::new(Full::new(Bytes::from(body)));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        }
        (&Method::GET, "/v1/sd/prometheus") => json_response(
            StatusCode::OK,
            &service_discovery(&reloader.routes().load()),
        ),
        (&Method::GET, "/ready") if reloader.is_ready() => text(StatusCode::OK, "ready\n"),
        (&Method::GET, "/ready") => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        (&Method::GET, "/v1/routes") => json_response(StatusCode::OK, &routes(&reloader.config())),
        (&Method::GET, "/v1/targets") => {
            json_response(StatusCode::OK, &targets(&reloader.routes().load()))
        }
        (&Method::POST, "/v1/reload") => {
            let r = Arc::clone(reloader);
            match tokio::task::spawn_blocking(move || r.reload()).await {
                Ok(Ok(())) => json_response(StatusCode::OK, &json!({ "result": "reloaded" })),
                Ok(Err(e)) => {
                    for problem in e.problems() {
                        tracing::error!("config reload rejected: {problem}");
                    }
                    json_response(
                        StatusCode::BAD_REQUEST,
                        &json!({ "result": "rejected", "errors": e.problems() }),
                    )
                }
                Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "reload failed\n"),
            }
        }
        (
            _,
            "/healthz" | "/ready" | "/metrics" | "/v1/routes" | "/v1/targets" | "/v1/sd/prometheus"
            | "/v1/reload",
        ) => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// The listeners and their rules, as configured (rules by ascending priority).
pub fn routes(config: &config::Config) -> Value {
    let listeners: Vec<Value> = config
        .listeners
        .iter()
        .map(|l| {
            json!({
                "name": l.name,
                "bind": l.bind.to_string(),
                "protocol": l.protocol,
                "desync_mitigation_mode": l.desync_mitigation_mode,
                "rules": l.rules.iter().map(|r| json!({
                    "priority": r.priority,
                    "conditions": r.conditions,
                    "action": r.action,
                })).collect::<Vec<_>>(),
                "default_action": l.default_action,
            })
        })
        .collect();
    json!({ "listeners": listeners })
}

/// Every target group's targets with their state.
pub fn targets(table: &RouteTable) -> Value {
    let groups: Vec<Value> = table
        .groups()
        .values()
        .map(|g| {
            json!({
                "name": g.config.name,
                "algorithm": g.balancer.algorithm(),
                "fail_open_picks": g.balancer.fail_open_picks(),
                "targets": g.balancer.targets().targets().iter().map(|t| target_json(t)).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "target_groups": groups })
}

/// The targets in Prometheus HTTP service-discovery format: one entry per target
/// group, so Prometheus can scrape the targets themselves without asking AWS.
pub fn service_discovery(table: &RouteTable) -> Value {
    // One entry per target: each carries its own ECS labels.
    let entries: Vec<Value> = table
        .groups()
        .values()
        .flat_map(|g| {
            let name = g.config.name.clone();
            g.balancer
                .targets()
                .targets()
                .iter()
                .filter(|t| !t.is_draining())
                .map(move |t| {
                    let mut labels = serde_json::Map::new();
                    labels.insert("__meta_ecslb_target_group".into(), json!(name));
                    if let Some(ecs) = t.ecs.load_full() {
                        labels.insert("__meta_ecslb_ecs_task".into(), json!(ecs.task));
                        if let Some(service) = &ecs.service {
                            labels.insert("__meta_ecslb_ecs_service".into(), json!(service));
                        }
                    }
                    json!({ "targets": [t.addr.to_string()], "labels": labels })
                })
        })
        .collect();
    Value::Array(entries)
}

fn target_json(t: &Target) -> Value {
    let status = &t.status;
    let now = now_ms();
    let ago = |ms: u64| (ms != 0).then(|| now.saturating_sub(ms) as f64 / 1000.0);
    json!({
        "target": t.addr.to_string(),
        "state": t.health(),
        "reason": t.reason(),
        "in_flight": t.in_flight(),
        "last_check_seconds_ago": ago(status.last_check_ms.load(Ordering::Relaxed)),
        "consecutive_passes": status.passes.load(Ordering::Relaxed),
        "consecutive_failures": status.failures.load(Ordering::Relaxed),
        "healthy_for_seconds": ago(status.healthy_since_ms.load(Ordering::Relaxed)).filter(|_| t.health() == Health::Healthy),
        "draining_for_seconds": ago(status.draining_since_ms.load(Ordering::Relaxed)),
        "ejected": t.is_ejected(),
        "ejections": status.ejections.load(Ordering::Relaxed),
    })
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn json_response(status: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}
