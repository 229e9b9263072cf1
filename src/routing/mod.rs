//! The compiled route table: per listener, its rules and actions; per target group, its
//! balancer and upstream client.
//!
//! A [`RouteTable`] is immutable. [`Routes`] holds the current one in a single
//! `ArcSwap`: the reconciler (start-up, reload) builds a whole new table and stores it;
//! requests `load()` it once and never lock.

mod glob;
mod rules;
mod table;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};

use crate::balance::{sticky, Balancer};
use crate::config;
use crate::upstream;

pub use rules::Request;

/// One immutable snapshot of everything the request path reads.
#[derive(Debug)]
pub struct RouteTable {
    listeners: Vec<ListenerRoutes>,
    groups: BTreeMap<String, Arc<TargetGroup>>,
    /// Targets this table removed from their groups: they start draining once the
    /// table is stored (not before: the previous table is still serving with them).
    to_drain: Vec<Arc<crate::target::Target>>,
    /// Whether the request path counts metrics (`[metrics] enabled`).
    pub metrics_enabled: bool,
}

impl RouteTable {
    /// Compiles `config`, carrying targets (with their health and in-flight counts) and
    /// upstream connection pools over from `previous`.
    pub fn build(config: &config::Config, previous: Option<&RouteTable>) -> Self {
        table::build(config, previous, &Default::default())
    }

    /// Like [`RouteTable::build`], with the latest addresses of discovered groups
    /// (ECS, Cloud Map) by group name; a discovered group missing from `discovered`
    /// keeps the addresses it had in `previous`.
    pub fn build_with(
        config: &config::Config,
        previous: Option<&RouteTable>,
        discovered: &std::collections::HashMap<String, Vec<std::net::SocketAddr>>,
    ) -> Self {
        table::build(config, previous, discovered)
    }

    /// The routes of the listener at this position in the config.
    pub fn listener(&self, index: usize) -> &ListenerRoutes {
        &self.listeners[index]
    }

    /// All listeners, in config order.
    pub fn listeners(&self) -> &[ListenerRoutes] {
        &self.listeners
    }

    /// Target groups by name.
    pub fn groups(&self) -> &BTreeMap<String, Arc<TargetGroup>> {
        &self.groups
    }
}

/// Fields a listener sets on its responses, replacing a target's of the same name.
pub type ResponseHeaders = Arc<[(http::HeaderName, http::HeaderValue)]>;

/// A listener's compiled rules.
#[derive(Debug)]
pub struct ListenerRoutes {
    /// Listener name.
    pub name: String,
    /// Request head limits.
    pub limits: config::Limits,
    /// Desync mitigation mode.
    pub desync_mode: config::DesyncMode,
    /// Idle timeout of client connections (read when a connection is accepted).
    pub idle_timeout: Duration,
    /// Age at which client connections end after their current response (read when a
    /// connection is accepted).
    pub client_keep_alive: Duration,
    /// Whether connections start with a PROXY protocol header (read at accept).
    pub accept_proxy_protocol: bool,
    /// What becomes of `X-Forwarded-For`.
    pub xff: config::Xff,
    /// Whether requests get `X-Amzn-Tls-Version` and `X-Amzn-Tls-Cipher-Suite`.
    pub tls_headers: bool,
    /// Whether header fields with names other than `[-A-Za-z0-9]+` are dropped.
    pub drop_invalid_header_fields: bool,
    /// Fields set on every response (`None`: the listener sets none).
    pub response_headers: Option<ResponseHeaders>,
    rules: rules::Rules,
    /// One action per rule id, then the default action last.
    actions: Vec<Action>,
}

impl ListenerRoutes {
    /// The action for a request, and the priority of the rule that matched (`None`:
    /// the listener's default action).
    ///
    /// ```
    /// # use std::path::Path;
    /// use ecslb::config::Config;
    /// use ecslb::routing::{Action, Request, RouteTable};
    /// let config = Config::parse(Path::new("inline.toml"), r#"
    ///     [[listeners]]
    ///     name = "web"
    ///     bind = "127.0.0.1:8080"
    ///     default_action = { fixed_response = { status = 404 } }
    ///     [[listeners.rules]]
    ///     priority = 10
    ///     conditions = { path = ["/api/*"] }
    ///     action = { forward = "api" }
    ///     [target_groups.api]
    ///     discovery = { static = ["127.0.0.1:3000"] }
    /// "#).unwrap();
    /// let table = RouteTable::build(&config, None);
    /// let headers = http::HeaderMap::new();
    /// let req = Request {
    ///     host: Some("example.com"), path: "/api/users", query: None,
    ///     method: &http::Method::GET, headers: &headers, source_ip: [127, 0, 0, 1].into(),
    /// };
    /// let (action, priority) = table.listener(0).route(&req);
    /// assert!(matches!(action, Action::Forward(_)));
    /// assert_eq!(priority, Some(10));
    /// ```
    pub fn route(&self, req: &Request<'_>) -> (&Action, Option<u32>) {
        match self.rules.find(req) {
            Some(id) => (&self.actions[id], Some(self.rules.priority(id))),
            None => (&self.actions[self.rules.len()], None),
        }
    }
}

/// What the request path does with a matched request.
#[derive(Debug)]
pub enum Action {
    /// Forward to a target group.
    Forward(Forward),
    /// Answer with a redirect.
    Redirect(config::Redirect),
    /// Answer with a fixed response.
    FixedResponse(FixedResponse),
}

/// A forward action, resolved to target groups.
#[derive(Debug)]
pub struct Forward {
    groups: Vec<(Arc<TargetGroup>, u32)>,
    total_weight: u32,
    /// Group stickiness duration, if on.
    pub stickiness: Option<Duration>,
}

impl Forward {
    /// The group for this request: the only one, the one named by a valid group
    /// stickiness cookie, or one drawn by weight. The flag says whether a new group
    /// stickiness cookie should be set.
    pub fn pick_group(&self, headers: &HeaderMap) -> (&Arc<TargetGroup>, bool) {
        if let [(only, _)] = self.groups.as_slice() {
            return (only, false);
        }
        if self.stickiness.is_some() {
            let sticky = sticky::find_cookie(headers, sticky::GROUP_COOKIE).and_then(|name| {
                self.groups
                    .iter()
                    .find(|(g, w)| *w > 0 && g.config.name == name)
            });
            if let Some((group, _)) = sticky {
                return (group, false);
            }
        }
        let mut draw = fastrand::u32(0..self.total_weight.max(1));
        for (group, weight) in &self.groups {
            if draw < *weight {
                return (group, self.stickiness.is_some());
            }
            draw -= weight;
        }
        (&self.groups[0].0, self.stickiness.is_some())
    }

    /// The groups and their weights.
    pub fn groups(&self) -> impl Iterator<Item = (&Arc<TargetGroup>, u32)> {
        self.groups.iter().map(|(g, w)| (g, *w))
    }
}

/// A fixed response, with its headers prepared once.
#[derive(Debug)]
pub struct FixedResponse {
    /// Status code.
    pub status: StatusCode,
    /// `Content-Type`.
    pub content_type: HeaderValue,
    /// Body.
    pub body: Bytes,
}

/// A target group at one instant: its settings, balancer (over its current targets)
/// and upstream client.
#[derive(Debug)]
pub struct TargetGroup {
    /// Validated settings.
    pub config: config::TargetGroup,
    /// Picks targets from the current target set.
    pub balancer: Balancer,
    /// Pooled client to the targets; carried across reloads while its settings hold.
    pub upstream: upstream::Client,
    /// Response times and recent request counts; carried across rebuilds.
    pub counters: Arc<crate::metrics::GroupCounters>,
}

/// The handle to the current route table: cheap to clone, readers never block.
#[derive(Debug, Clone)]
pub struct Routes(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    table: ArcSwap<RouteTable>,
    /// Bumped on every store, for stages that follow the table (health checks).
    version: tokio::sync::watch::Sender<u64>,
}

impl Routes {
    /// A handle holding `table`.
    pub fn new(table: RouteTable) -> Self {
        Self(Arc::new(Shared {
            table: ArcSwap::from_pointee(table),
            version: tokio::sync::watch::Sender::new(0),
        }))
    }

    /// The current table, for a short scope (do not hold across `.await`).
    pub fn load(&self) -> arc_swap::Guard<Arc<RouteTable>> {
        self.0.table.load()
    }

    /// The current table, owned (may be held across `.await`).
    pub fn load_full(&self) -> Arc<RouteTable> {
        self.0.table.load_full()
    }

    /// Replaces the table; requests already routed keep the one they loaded.
    pub fn store(&self, table: RouteTable) {
        let table = Arc::new(table);
        self.0.table.store(Arc::clone(&table));
        // Only now: until the store, the previous table was serving with these targets
        // and might have had no other. They stay in their sets until drained, unpicked.
        for target in &table.to_drain {
            target.start_draining();
        }
        self.0.version.send_modify(|v| *v += 1);
    }

    /// Notified after every [`Routes::store`].
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.version.subscribe()
    }
}
