//! Wires the stages together: loads the config, binds every socket, builds the first
//! route table, serves, reloads on request, and drains on shutdown.
//!
//! Sockets are bound by [`App::bind`] before anything is served (so tests can bind
//! `127.0.0.1:0` and read the addresses back), then [`App::run`] serves until its stop
//! token fires.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::access_log::AccessLog;
use crate::config::{self, Config};
use crate::metrics::Metrics;
use crate::routing::{RouteTable, Routes};
use crate::{admin, listener, proxy};

/// A configured proxy with its sockets bound, ready to [`run`](App::run).
#[derive(Debug)]
pub struct App {
    listeners: Vec<TcpListener>,
    /// The access-log writer, when access logs are on (fixed until restart).
    access_log: Option<AccessLog>,
    admin: TcpListener,
    reloader: Arc<Reloader>,
}

impl App {
    /// Loads the config at `path` and binds the listeners and the admin listener.
    pub async fn bind(path: &Path) -> anyhow::Result<App> {
        let config = Config::load(path)?;
        let mut listeners = Vec::with_capacity(config.listeners.len());
        for l in &config.listeners {
            let socket = listener::bind(l.bind, l.client_speaks_first())
                .with_context(|| format!("cannot bind listener {:?} to {}", l.name, l.bind))?;
            listeners.push(socket);
        }
        // The admin API is HTTP: its clients speak first.
        let admin = listener::bind(config.admin.listen, true).with_context(|| {
            format!("cannot bind the admin listener to {}", config.admin.listen)
        })?;
        let terminators = config
            .listeners
            .iter()
            .map(|l| {
                l.tls
                    .as_ref()
                    .map(|tls| listener::tls::Terminator::new(&l.name, tls).map(Arc::new))
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("listener {:?}: {e}", l.name))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let access_log = AccessLog::spawn(&config.access_log)?;
        let routes = Routes::new(RouteTable::build(&config, None));
        let metrics = Arc::new(Metrics::new(
            config.listeners.iter().map(|l| l.name.clone()),
        ));
        let reloader = Arc::new(Reloader {
            metrics,
            path: path.to_owned(),
            routes,
            config: Mutex::new(config),
            ready: AtomicBool::new(false),
            discovered: Mutex::default(),
            terminators,
        });
        Ok(App {
            listeners,
            access_log,
            admin,
            reloader,
        })
    }

    /// The bound address of each listener, in config order.
    pub fn listener_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The bound address of the admin listener.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.local_addr().ok()
    }

    /// The access-log writer, if access logs are on (SIGHUP and SIGUSR1 reopen its file).
    pub fn access_log(&self) -> Option<AccessLog> {
        self.access_log.clone()
    }

    /// The reload handle (also used by the admin listener and SIGHUP).
    pub fn reloader(&self) -> Arc<Reloader> {
        Arc::clone(&self.reloader)
    }

    /// Serves until `stop` fires, then stops accepting and waits up to the configured
    /// shutdown timeout for in-flight requests to finish.
    pub async fn run(self, stop: CancellationToken) {
        let routes = self.reloader.routes.clone();
        let access_log = self.access_log;
        let mut serving = tokio::task::JoinSet::new();
        let protocols: Vec<config::Protocol> = self
            .reloader
            .config()
            .listeners
            .iter()
            .map(|l| l.protocol)
            .collect();
        for (index, (socket, protocol)) in self.listeners.into_iter().zip(protocols).enumerate() {
            let port = socket.local_addr().map_or(0, |a| a.port());
            let metrics = Arc::clone(&self.reloader.metrics);
            let tls = self.reloader.terminators[index].clone();
            tracing::info!(listener = %routes.load().listener(index).name, protocol = protocol.name(), addr = ?listener::http::local_addr(&socket), "listening");
            if protocol.is_http() {
                let scheme = if protocol == config::Protocol::Https {
                    "https"
                } else {
                    "http"
                };
                let proxy = Arc::new(proxy::Proxy::new(
                    routes.clone(),
                    Arc::clone(&metrics),
                    access_log.clone(),
                    index,
                    port,
                    scheme,
                ));
                serving.spawn(listener::http::serve(
                    metrics,
                    socket,
                    proxy,
                    routes.clone(),
                    index,
                    tls,
                    stop.clone(),
                ));
            } else {
                serving.spawn(listener::tcp::serve(
                    metrics,
                    socket,
                    routes.clone(),
                    index,
                    protocol,
                    tls,
                    stop.clone(),
                ));
            }
        }
        let background = CancellationToken::new();
        let health = crate::health::spawn(routes.clone(), background.clone());
        let discovery = crate::discovery::spawn(Arc::clone(&self.reloader), background.clone());
        let sweeper = tokio::spawn(sweep_drained(
            Arc::clone(&self.reloader),
            background.clone(),
        ));
        let idle = tokio::spawn(sweep_idle_connections(routes.clone(), background.clone()));
        let certificates = tokio::spawn(watch_certificates(
            Arc::clone(&self.reloader),
            background.clone(),
        ));
        let admin_stop = CancellationToken::new();
        let admin = tokio::spawn(admin::serve(
            self.admin,
            Arc::clone(&self.reloader),
            admin_stop.clone(),
        ));
        self.reloader.ready.store(true, Ordering::Relaxed);
        stop.cancelled().await;
        self.reloader.ready.store(false, Ordering::Relaxed);
        // Read at stop, not at start: a reload may have changed it since.
        let shutdown_timeout = self.reloader.config().shutdown_timeout;
        tracing::info!(timeout = ?shutdown_timeout, "shutting down: draining in-flight requests");
        let drained = tokio::time::timeout(shutdown_timeout, async {
            while serving.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("shutdown timeout reached with requests still in flight");
        }
        if let Some(log) = &access_log {
            log.flush().await;
        }
        admin_stop.cancel();
        background.cancel();
        // These tasks only end by cancellation; their results carry nothing.
        let _ = tokio::join!(admin, health, sweeper, idle, discovery, certificates);
    }
}

/// How often draining targets are looked at: one that is idle (or past its
/// deregistration delay) leaves its group within this time.
const DRAIN_SWEEP: Duration = Duration::from_millis(200);

/// Drops drained targets by rebuilding the table once any group has one.
async fn sweep_drained(reloader: Arc<Reloader>, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(DRAIN_SWEEP);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        let table = reloader.routes.load_full();
        let drained = table.groups().values().any(|g| {
            g.balancer
                .targets()
                .has_drained(g.config.deregistration_delay)
        });
        if drained {
            reloader.rebuild();
        }
    }
}

/// How often idle target connections are looked at: one its target closed, or idle
/// past its group's `idle_timeout`, is closed within this time.
const IDLE_SWEEP: Duration = Duration::from_secs(1);

/// Closes idle target connections that can no longer serve (see
/// [`crate::upstream::Pool::sweep`]), so that none lingers half-closed while no
/// request comes to take it.
async fn sweep_idle_connections(routes: Routes, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(IDLE_SWEEP);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        let table = routes.load_full();
        for group in table.groups().values() {
            for target in group.balancer.targets().targets() {
                target.pool.sweep(group.config.idle_timeout);
            }
        }
    }
}

/// How often certificate and trust-store files are looked at for changes.
const CERTIFICATE_POLL: Duration = Duration::from_secs(1);

/// Loads the certificates of TLS listeners again when their files change on disk (a
/// renewal, a rotation). A file that does not load leaves the previous certificate in
/// force, and is reported once per change.
async fn watch_certificates(reloader: Arc<Reloader>, stop: CancellationToken) {
    if reloader.terminators.iter().all(Option::is_none) {
        return;
    }
    let mut ticks = tokio::time::interval(CERTIFICATE_POLL);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        for terminator in reloader.terminators.iter().flatten() {
            let name = terminator.listener();
            match terminator.reload_changed_files() {
                Ok(false) => {}
                Ok(true) => {
                    tracing::info!(listener = %name, "certificates reloaded from their changed files")
                }
                Err(e) => {
                    tracing::error!(listener = %name, "changed certificate files not loaded, keeping the previous ones: {e}")
                }
            }
        }
    }
}

/// How often the config file is looked at by [`watch_config_file`].
const CONFIG_POLL: Duration = Duration::from_secs(1);

/// Reloads the config whenever its file changes (`ecslb run --watch`), until `stop`
/// fires. A change that does not validate is logged, once, and the running config
/// stays, as with SIGHUP; the next change is tried again.
pub async fn watch_config_file(reloader: Arc<Reloader>, stop: CancellationToken) {
    let mut seen = config::FileStamp::of(&reloader.path);
    let mut ticks = tokio::time::interval(CONFIG_POLL);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        let now = config::FileStamp::of(&reloader.path);
        if now == seen {
            continue;
        }
        seen = now;
        reloader.reload_and_log_off_thread().await;
    }
}

/// Re-reads the config file and swaps in a new route table.
#[derive(Debug)]
pub struct Reloader {
    /// Process metrics (reloads are counted here); shared with the listeners.
    pub metrics: Arc<Metrics>,
    path: PathBuf,
    routes: Routes,
    /// The config the current table was built from; reloads are serialised on it.
    config: Mutex<Config>,
    ready: AtomicBool,
    /// The latest address set of each discovered (ECS, Cloud Map) group.
    discovered: Mutex<HashMap<String, Vec<std::net::SocketAddr>>>,
    /// The TLS side of each listener that terminates TLS, by listener position.
    terminators: Vec<Option<Arc<listener::tls::Terminator>>>,
}

/// Why a reload was refused; the running config stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file does not load or validate.
    #[error("{0}")]
    Invalid(#[from] config::Error),
    /// The change needs a restart (listeners are bound once).
    #[error("{0}")]
    NeedsRestart(String),
}

impl ReloadError {
    /// One line per problem.
    pub fn problems(&self) -> Vec<String> {
        match self {
            ReloadError::Invalid(e) => e.problems.clone(),
            ReloadError::NeedsRestart(p) => vec![p.clone()],
        }
    }
}

impl Reloader {
    /// Loads the file again; if valid, builds and stores a new route table (targets,
    /// their health and pools carry over). On error the running config stays.
    pub fn reload(&self) -> Result<(), ReloadError> {
        let result = self.try_reload();
        self.metrics.count_reload(result.is_ok());
        result
    }

    fn try_reload(&self) -> Result<(), ReloadError> {
        let mut current = self.config.lock().unwrap_or_else(|p| p.into_inner());
        let next = Config::load(&self.path)?;
        for (i, (old, new)) in current.listeners.iter().zip(&next.listeners).enumerate() {
            if old.name != new.name || old.bind != new.bind || old.protocol != new.protocol {
                return Err(ReloadError::NeedsRestart(format!(
                    "{}: listeners[{i}]: name, bind and protocol of a listener change only with a restart",
                    self.path.display()
                )));
            }
        }
        if current.listeners.len() != next.listeners.len() || current.admin != next.admin {
            return Err(ReloadError::NeedsRestart(format!(
                "{}: adding or removing listeners, or moving the admin listener, needs a restart",
                self.path.display()
            )));
        }
        // Certificates first: validation loaded them, so this fails only on a trust
        // store rustls refuses; then nothing has changed yet.
        for (i, (terminator, l)) in self.terminators.iter().zip(&next.listeners).enumerate() {
            if let (Some(terminator), Some(tls)) = (terminator, &l.tls) {
                terminator.update(tls).map_err(|e| {
                    ReloadError::Invalid(config::Error {
                        problems: vec![format!("{}: listeners[{i}]: {e}", self.path.display())],
                    })
                })?;
            }
        }
        let discovered = self.discovered.lock().unwrap_or_else(|p| p.into_inner());
        let table = RouteTable::build_with(&next, Some(&self.routes.load_full()), &discovered);
        drop(discovered);
        self.routes.store(table);
        *current = next;
        Ok(())
    }

    /// Rebuilds the route table from the config in force (targets carried over), e.g.
    /// to drop targets that finished draining.
    pub fn rebuild(&self) {
        let current = self.config.lock().unwrap_or_else(|p| p.into_inner());
        let discovered = self.discovered.lock().unwrap_or_else(|p| p.into_inner());
        let table = RouteTable::build_with(&current, Some(&self.routes.load_full()), &discovered);
        drop(discovered);
        self.routes.store(table);
    }

    /// Takes a discovered group's new address set; rebuilds the table if it changed.
    pub fn publish(&self, group: &str, members: Vec<crate::discovery::Member>) {
        let addrs: Vec<std::net::SocketAddr> = members.iter().map(|m| m.addr).collect();
        {
            let mut discovered = self.discovered.lock().unwrap_or_else(|p| p.into_inner());
            if discovered.get(group) == Some(&addrs) {
                return;
            }
            tracing::info!(
                target_group = group,
                targets = addrs.len(),
                "discovered targets changed"
            );
            discovered.insert(group.to_owned(), addrs);
        }
        self.rebuild();
        // Label the group's targets with their tasks (kept across later rebuilds: the
        // labels live on the targets).
        let table = self.routes.load_full();
        if let Some(g) = table.groups().get(group) {
            for m in members {
                if let (Some(target), Some(ecs)) = (g.balancer.targets().find(m.addr), m.ecs) {
                    target.ecs.store(Some(Arc::new(ecs)));
                }
            }
        }
    }

    /// [`Reloader::reload_and_log`] on a blocking thread (for SIGHUP and `--watch`):
    /// reading and compiling the file is blocking work.
    pub async fn reload_and_log_off_thread(self: &Arc<Self>) {
        let reloader = Arc::clone(self);
        let _ = tokio::task::spawn_blocking(move || reloader.reload_and_log()).await;
    }

    /// Reloads and logs the outcome.
    pub fn reload_and_log(&self) {
        match self.reload() {
            Ok(()) => tracing::info!(path = %self.path.display(), "config reloaded"),
            Err(e) => {
                for problem in e.problems() {
                    tracing::error!("config reload rejected: {problem}");
                }
            }
        }
    }

    /// The config currently in force.
    pub fn config(&self) -> Config {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The route table handle.
    pub fn routes(&self) -> &Routes {
        &self.routes
    }

    /// Whether the listeners are serving and every discovered group has had its first
    /// successful discovery.
    pub fn is_ready(&self) -> bool {
        if !self.ready.load(Ordering::Relaxed) {
            return false;
        }
        let config = self.config.lock().unwrap_or_else(|p| p.into_inner());
        let discovered = self.discovered.lock().unwrap_or_else(|p| p.into_inner());
        config.target_groups.values().all(|g| {
            matches!(g.discovery, config::Discovery::Static(_)) || discovered.contains_key(&g.name)
        })
    }
}
