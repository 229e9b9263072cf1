//! The `ecslb` command: `run` serves a config, `check` validates one and prints what it
//! compiles to. Everything else lives in the library.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use ecslb::config::{self, Action, Config, Discovery, MutualTls, Xff, XffMode};

// glibc malloc showed up at ~5% of CPU under load (per-request header maps, buffers).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// ecslb: an ECS-aware load-balancer proxy with ALB semantics.
///
/// Listener rules, target groups and health follow AWS Application Load Balancer
/// semantics; the config is one TOML file (see config/example.toml).
#[derive(Debug, Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,

    /// Log output format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human, env = "ECSLB_LOG_FORMAT")]
    log_format: LogFormat,

    /// Log filter, in tracing-subscriber's EnvFilter syntax (e.g. "info", "ecslb=debug").
    #[arg(long, global = true, default_value = "info", env = "ECSLB_LOG")]
    log_level: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the listeners of a config file until SIGTERM or SIGINT.
    ///
    /// SIGHUP reloads the config and reopens the access log file; SIGUSR1 only reopens
    /// the access log file (after log rotation renamed it).
    ///
    /// ECS and Cloud Map discovery take their AWS settings from the standard chain:
    /// AWS_REGION, AWS_PROFILE, credentials from the environment, profile, ECS task role
    /// or instance metadata; AWS_ENDPOINT_URL points them at an emulator.
    Run {
        /// Path to the TOML config file.
        #[arg(short, long, value_name = "FILE", env = "ECSLB_CONFIG")]
        config: PathBuf,

        /// Runtime worker threads [default: the number of cores].
        #[arg(long, value_name = "N", env = "ECSLB_WORKERS")]
        workers: Option<usize>,

        /// Keep every worker polling for events instead of sleeping between them, as
        /// HAProxy's `busy-polling`: each worker uses a whole core, even when idle.
        ///
        /// Waking a sleeping core costs the core that wakes it an interrupt and, in a
        /// VM, a trip through the hypervisor. Polling saves that where ecslb has cores
        /// to itself and is not kept busy: on a VM, one client connection at a time got
        /// 2.5 times the requests/s with a third of the p99 latency (benches/README.md);
        /// with 50 connections keeping its core busy anyway, it gained nothing. Off by
        /// default.
        #[arg(long, env = "ECSLB_BUSY_POLL")]
        busy_poll: bool,

        /// With --workers 1: after its last work, keep polling for events for this long
        /// (at most 500us) before sleeping, e.g. "50us"; "0" sleeps at once.
        ///
        /// Saves most of the interrupts that wake a sleeping core, at the cost of CPU
        /// time that counts as ecslb's. On a VM, with 50 connections, 50us cut those
        /// interrupts by four fifths or more, and the p99 latency by 0.1 to 0.4 ms
        /// (benches/README.md). An idle proxy still sleeps.
        #[arg(long, value_name = "DURATION", default_value = "0", value_parser = parse_poll_window, env = "ECSLB_POLL_BEFORE_SLEEP", conflicts_with = "busy_poll")]
        poll_before_sleep: std::time::Duration,

        /// Also reload the config whenever its file changes (looked at every second);
        /// a change that does not validate is logged and the running config stays.
        #[arg(long, env = "ECSLB_WATCH")]
        watch: bool,
    },
    /// Validate a config file and print its listeners, rules and target groups.
    ///
    /// Exits 1 and prints every problem (file:line: field: message) if it is invalid.
    Check {
        /// Path to the TOML config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Otherwise a failed write (stderr's reader gone: EPIPE) is reported with
        // `eprintln!`, which panics on the same failure, in whichever task logged.
        .log_internal_errors(false);
    match cli.log_format {
        LogFormat::Human => subscriber.init(),
        LogFormat::Json => subscriber.json().init(),
    }
    let result = match cli.command {
        Command::Check { config } => check(&config),
        Command::Run {
            config,
            workers,
            busy_poll,
            poll_before_sleep,
            watch,
        } => run(config, workers, busy_poll, poll_before_sleep, watch),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Not `eprintln!`: it panics when stderr is gone, and the exit code is 1.
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Raises the soft limit on open files to the hard limit, as Go's runtime does for
/// every program and HAProxy for itself: each proxied connection holds two
/// descriptors, and the soft limit most services start with (1024 under systemd, whose
/// hard limit is 524288) would stop the proxy accepting at about 500 connections.
/// Returns the limit in force (`None`: unlimited).
fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let (Some(current), Some(maximum)) = (limit.current, limit.maximum) else {
        return limit.current;
    };
    if current >= maximum {
        return Some(current);
    }
    let raised = Rlimit {
        current: Some(maximum),
        maximum: Some(maximum),
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => {
            tracing::info!(from = current, to = maximum, "raised the open files limit");
            Some(maximum)
        }
        Err(e) => {
            tracing::warn!(error = %e, limit = current, "cannot raise the open files limit");
            Some(current)
        }
    }
}

fn run(
    path: PathBuf,
    workers: Option<usize>,
    busy_poll: bool,
    poll_before_sleep: std::time::Duration,
    watch: bool,
) -> anyhow::Result<()> {
    if !poll_before_sleep.is_zero() && workers != Some(1) {
        anyhow::bail!(
            "--poll-before-sleep needs --workers 1: tokio's multi-threaded runtime would \
             hand the work that keeps a worker polling to another worker"
        );
    }
    let open_files = raise_open_files_limit();
    let mut runtime = if workers == Some(1) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    runtime.enable_all();
    if let Some(n) = workers.filter(|&n| n > 1) {
        runtime.worker_threads(n);
    }
    ecslb::runtime::poll_before_sleeping(&mut runtime, poll_before_sleep);
    let runtime = runtime.build().context("cannot start the runtime")?;
    if !poll_before_sleep.is_zero() {
        runtime.spawn(ecslb::runtime::idle_task());
    }
    if busy_poll {
        for _ in 0..runtime.metrics().num_workers() {
            runtime.spawn(poll_without_sleeping());
        }
    }
    runtime.block_on(async move {
        let app = ecslb::app::App::bind(&path).await?;
        tracing::info!(admin = ?app.admin_addr(), listeners = ?app.listener_addrs(), open_files = %open_files.map_or("unlimited".into(), |n| n.to_string()), busy_poll, poll_before_sleep = ?poll_before_sleep, "ecslb started");
        let stop = CancellationToken::new();
        let signals = tokio::spawn(ecslb::shutdown::watch_signals(
            stop.clone(),
            app.reloader(),
            app.access_log(),
        ));
        if watch {
            // Ends with `stop`.
            tokio::spawn(ecslb::app::watch_config_file(app.reloader(), stop.clone()));
        }
        app.run(stop).await;
        signals.abort();
        tracing::info!("stopped");
        Ok(())
    })
}

/// `--poll-before-sleep`'s value: a duration of at most [`ecslb::runtime::MAX_WINDOW`].
fn parse_poll_window(s: &str) -> Result<std::time::Duration, String> {
    let window = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    let max = ecslb::runtime::MAX_WINDOW;
    if window > max {
        return Err(format!(
            "at most {}: the kernel's timer tick would keep a longer window open",
            humantime::format_duration(max)
        ));
    }
    Ok(window)
}

/// Keeps one worker from sleeping: a task that is always ready, but yields at once.
///
/// A worker whose tasks all yielded polls for I/O events without waiting (a zero
/// timeout to `epoll_wait`) before it runs them again, so with one of these tasks per
/// worker no worker sleeps. Work stealing spreads them: a worker left without tasks
/// takes one from a worker that has two.
async fn poll_without_sleeping() {
    loop {
        tokio::task::yield_now().await;
    }
}

/// What `X-Forwarded-For` processing `check` does not mention.
const DEFAULT_XFF: Xff = Xff {
    mode: XffMode::Append,
    client_port: false,
};

/// Prints what `ecslb check` says of a valid config. Written whole at the end, and a
/// closed pipe (`ecslb check ... | head`) is not an error.
fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let mut out = String::new();
    writeln!(out, "{}: ok", path.display())?;
    writeln!(out, "admin: {}", config.admin.listen)?;
    for l in &config.listeners {
        let desync = if l.protocol.is_http() {
            format!(
                ", client keep-alive {}, desync mitigation {:?}",
                humantime::format_duration(l.client_keep_alive),
                l.desync_mitigation_mode
            )
        } else {
            String::new()
        };
        writeln!(
            out,
            "listener {:?} {} on {} (idle timeout {}{desync})",
            l.name,
            l.protocol.name(),
            l.bind,
            humantime::format_duration(l.idle_timeout),
        )?;
        if l.accept_proxy_protocol {
            writeln!(out, "  accepts the PROXY protocol (v1, v2)")?;
        }
        if l.protocol.is_http() && l.xff != DEFAULT_XFF {
            let port = if l.xff.client_port {
                ", with the client's port"
            } else {
                ""
            };
            writeln!(
                out,
                "  X-Forwarded-For: {}{port}",
                serde_json::to_string(&l.xff.mode)?
            )?;
        }
        if l.drop_invalid_header_fields {
            writeln!(
                out,
                "  drops header fields with names other than [-A-Za-z0-9]+"
            )?;
        }
        if l.tls_headers {
            writeln!(
                out,
                "  X-Amzn-Tls-Version and X-Amzn-Tls-Cipher-Suite to targets"
            )?;
        }
        for (name, value) in &l.response_headers {
            let value = String::from_utf8_lossy(value.as_bytes());
            writeln!(out, "  sets on responses: {name}: {value}")?;
        }
        if let Some(tls) = &l.tls {
            writeln!(
                out,
                "  tls: policy {}, alpn {}{}",
                serde_json::to_string(&tls.policy)?,
                serde_json::to_string(&tls.alpn)?,
                match &tls.mutual_tls {
                    MutualTls::Verify(ca) => format!(
                        ", client certificates verified against {}",
                        ca.path.display()
                    ),
                    MutualTls::Passthrough => {
                        ", client certificates passed through unverified".to_owned()
                    }
                    MutualTls::Off => String::new(),
                }
            )?;
            for (i, c) in tls.certificates.iter().enumerate() {
                writeln!(
                    out,
                    "  certificate {}{}: {} for [{}]",
                    c.cert.display(),
                    if i == 0 { " (default)" } else { "" },
                    c.key.display(),
                    c.loaded.names.join(", ")
                )?;
            }
        }
        for r in &l.rules {
            writeln!(
                out,
                "  rule {:>5}: {} -> {}",
                r.priority,
                serde_json::to_string(&r.conditions)?,
                describe(&r.action)
            )?;
        }
        writeln!(out, "  default: {}", describe(&l.default_action))?;
    }
    for g in config.target_groups.values() {
        let source = match &g.discovery {
            Discovery::Static(addrs) => {
                let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
                format!("static [{}]", addrs.join(", "))
            }
            Discovery::Ecs(e) => format!(
                "ecs cluster {:?} {:?} container {:?} port {} every {}",
                e.cluster,
                e.tasks,
                e.container,
                e.port,
                humantime::format_duration(e.refresh)
            ),
            Discovery::CloudMap(m) => format!(
                "cloud_map {}/{} ({}) every {}",
                m.namespace,
                m.service,
                m.health_status,
                humantime::format_duration(m.refresh)
            ),
        };
        let http = if g.protocol.is_http() {
            format!(
                " {:?}, response timeout {}, idle timeout {}",
                g.protocol_version,
                humantime::format_duration(g.response_timeout),
                humantime::format_duration(g.idle_timeout)
            )
        } else {
            String::new()
        };
        writeln!(
            out,
            "target group {:?}: {:?}{http}, {:?}, {source}",
            g.name, g.protocol, g.algorithm,
        )?;
        if g.protocol.is_tls() {
            let t = &g.tls;
            writeln!(
                out,
                "  tls to targets: verify {}, trust {}, name {}",
                t.verify,
                t.ca.as_ref()
                    .map_or("system roots".into(), |ca| ca.path.display().to_string()),
                t.server_name
                    .as_deref()
                    .unwrap_or("the target's IP address")
            )?;
        }
        if g.proxy_protocol_v2 {
            writeln!(out, "  sends a PROXY protocol v2 header to targets")?;
        }
        match &g.health_check {
            Some(h) if h.protocol == config::HealthProtocol::Tcp => writeln!(
            out,
                "  health check: Tcp connect every {} (timeout {}, healthy {}, unhealthy {})",
                humantime::format_duration(h.interval),
                humantime::format_duration(h.timeout),
                h.healthy_threshold,
                h.unhealthy_threshold,
            )?,
            Some(h) => writeln!(
            out,
                "  health check: {}{:?} {} every {} (timeout {}, healthy {}, unhealthy {}, matcher {})",
                match h.version {
                    config::ProtocolVersion::Http1 => "",
                    config::ProtocolVersion::Http2 => "HTTP/2 over ",
                    config::ProtocolVersion::Grpc => "gRPC over ",
                },
                h.protocol,
                h.path,
                humantime::format_duration(h.interval),
                humantime::format_duration(h.timeout),
                h.healthy_threshold,
                h.unhealthy_threshold,
                h.matcher
            )?,
            None => writeln!(out, "  health check: none (targets taken as healthy)")?,
        }
    }
    match std::io::stdout().write_all(out.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn describe(action: &Action) -> String {
    match action {
        Action::Forward { groups, stickiness } => {
            let groups: Vec<String> = groups
                .iter()
                .map(|g| format!("{}:{}", g.group, g.weight))
                .collect();
            match stickiness {
                Some(d) => format!(
                    "forward [{}] (group stickiness {})",
                    groups.join(", "),
                    humantime::format_duration(*d)
                ),
                None => format!("forward [{}]", groups.join(", ")),
            }
        }
        Action::Redirect(r) => format!(
            "redirect {} {}://{}:{}{}?{}",
            r.status, r.protocol, r.host, r.port, r.path, r.query
        ),
        Action::FixedResponse(f) => format!(
            "fixed_response {} {} ({} bytes)",
            f.status,
            f.content_type,
            f.body.len()
        ),
    }
}
