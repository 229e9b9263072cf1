//! Building a [`RouteTable`] from a validated config: pure, apart from carrying the
//! previous table's targets and upstream pools over.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

use super::{
    rules::Rules, Action, FixedResponse, Forward, ListenerRoutes, RouteTable, TargetGroup,
};
use crate::balance::Balancer;
use crate::config;
use crate::target::TargetSet;
use crate::upstream;

pub(super) fn build(
    config: &config::Config,
    previous: Option<&RouteTable>,
    discovered: &HashMap<String, Vec<SocketAddr>>,
) -> RouteTable {
    let mut to_drain = Vec::new();
    let groups: BTreeMap<String, Arc<TargetGroup>> = config
        .target_groups
        .values()
        .map(|g| {
            let old = previous.and_then(|p| p.groups.get(&g.name));
            let addrs = match &g.discovery {
                config::Discovery::Static(addrs) => addrs.clone(),
                // Not discovered yet (first poll running, or a reload restarted it): keep
                // what the group had, so a reload never empties a discovered group.
                _ => discovered
                    .get(&g.name)
                    .cloned()
                    .unwrap_or_else(|| old.map(|o| serving(&o.balancer)).unwrap_or_default()),
            };
            let built = group(g, &addrs, old.map(|o| &**o), &mut to_drain);
            (g.name.clone(), Arc::new(built))
        })
        .collect();
    let listeners = config
        .listeners
        .iter()
        .map(|l| {
            let mut actions: Vec<Action> =
                l.rules.iter().map(|r| action(&r.action, &groups)).collect();
            actions.push(action(&l.default_action, &groups));
            ListenerRoutes {
                name: l.name.clone(),
                limits: l.limits,
                desync_mode: l.desync_mitigation_mode,
                idle_timeout: l.idle_timeout,
                client_keep_alive: l.client_keep_alive,
                accept_proxy_protocol: l.accept_proxy_protocol,
                xff: l.xff,
                tls_headers: l.tls_headers,
                drop_invalid_header_fields: l.drop_invalid_header_fields,
                response_headers: (!l.response_headers.is_empty())
                    .then(|| l.response_headers.as_slice().into()),
                rules: Rules::build(&l.rules),
                actions,
            }
        })
        .collect();
    RouteTable {
        listeners,
        groups,
        to_drain,
        metrics_enabled: config.metrics_enabled,
    }
}

/// The addresses of a balancer's targets that are not draining.
fn serving(balancer: &Balancer) -> Vec<SocketAddr> {
    let targets = balancer.targets().targets();
    targets
        .iter()
        .filter(|t| !t.is_draining())
        .map(|t| t.addr)
        .collect()
}

fn group(
    config: &config::TargetGroup,
    addrs: &[SocketAddr],
    previous: Option<&TargetGroup>,
    to_drain: &mut Vec<Arc<crate::target::Target>>,
) -> TargetGroup {
    let empty = TargetSet::default();
    let targets = TargetSet::reconcile(
        addrs.iter().copied(),
        previous.map_or(&empty, |p| p.balancer.targets()),
        config.health_check.is_some(),
        config.deregistration_delay,
        to_drain,
    );
    let upstream = match previous {
        Some(p) if p.upstream.serves(config) => p.upstream.clone(),
        _ => upstream::Client::new(config),
    };
    TargetGroup {
        config: config.clone(),
        balancer: Balancer::new(config.algorithm, targets)
            .with_slow_start(config.slow_start)
            .with_fail_open_counter(
                previous.map_or_else(Default::default, |p| p.balancer.fail_open_counter()),
            ),
        upstream,
        counters: previous.map_or_else(Default::default, |p| Arc::clone(&p.counters)),
    }
}

fn action(action: &config::Action, groups: &BTreeMap<String, Arc<TargetGroup>>) -> Action {
    match action {
        config::Action::Forward {
            groups: weighted,
            stickiness,
        } => {
            // Validation guarantees every group exists.
            let resolved: Vec<(Arc<TargetGroup>, u32)> = weighted
                .iter()
                .filter_map(|w| Some((Arc::clone(groups.get(&w.group)?), w.weight)))
                .collect();
            Action::Forward(Forward {
                total_weight: resolved.iter().map(|(_, w)| w).sum(),
                groups: resolved,
                stickiness: *stickiness,
            })
        }
        config::Action::Redirect(r) => Action::Redirect(r.clone()),
        config::Action::FixedResponse(f) => Action::FixedResponse(FixedResponse {
            status: StatusCode::from_u16(f.status).unwrap_or(StatusCode::OK),
            content_type: HeaderValue::from_str(&f.content_type)
                .unwrap_or(HeaderValue::from_static("text/plain")),
            body: Bytes::from(f.body.clone()),
        }),
    }
}
