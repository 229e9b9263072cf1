//! The emulated ECS cluster: moto in server mode with ecslb's patches
//! (`emulator/ecs_emulator.py`), seeded by `emulator/seed.py`, whose `--backends`
//! serves a real HTTP server on every running task's discovered address.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn python() -> PathBuf {
    let py = repo().join(".venv/bin/python");
    assert!(
        py.exists(),
        "the emulator's venv is missing: run emulator/setup.sh (scripts/test.sh does)"
    );
    py
}

/// Reads the child's stdout until a line starts with `prefix`; returns that line.
pub fn wait_for_line(child: &mut Child, prefix: &str) -> String {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    let wanted = prefix.to_owned();
    std::thread::spawn(move || {
        let mut found = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if !found && line.starts_with(&wanted) {
                found = true;
                let _ = tx.send(line);
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(90))
        .unwrap_or_else(|_| panic!("no line starting with {prefix:?} within 90 s"))
}

/// A running emulator, seeded, with its task backends; both are killed on drop.
pub struct Cluster {
    pub endpoint: String,
    emulator: Child,
    seeder: Child,
}

impl Cluster {
    /// Starts the emulator on a free port, seeds the demo cluster (services `web`:
    /// awsvpc ×3 and `api`: bridge ×2 in cluster `demo`, Cloud Map `local`/`web`) and
    /// serves every running task.
    pub fn start() -> Cluster {
        Self::start_with(&[])
    }

    /// [`Cluster::start`] with extra emulator flags (e.g. `--stop-delay 1`).
    pub fn start_with(flags: &[&str]) -> Cluster {
        Self::start_seeded(flags, &[])
    }

    /// [`Cluster::start`] plus a fleet: service `name` of `tasks` awsvpc tasks in cluster
    /// `demo`, in the subnet 127.16.16.0/20 (`seed.py --fleet`, up to 4,091 tasks),
    /// container `app` port 8080, health UNKNOWN, with no backends: for discovery at
    /// scale. The fleet's seeding calls are counted: reset the calls before measuring.
    pub fn start_with_fleet(name: &str, tasks: usize) -> Cluster {
        Self::start_seeded(&[], &["--fleet", &format!("{name}={tasks}")])
    }

    fn start_seeded(flags: &[&str], seed_flags: &[&str]) -> Cluster {
        let mut emulator = Command::new(python())
            .arg(repo().join("emulator/ecs_emulator.py"))
            .args(flags)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the emulator starts");
        let ready = wait_for_line(&mut emulator, "READY ");
        let endpoint = ready.trim_start_matches("READY ").trim().to_owned();
        let mut seeder = Command::new(python())
            .arg(repo().join("emulator/seed.py"))
            .arg(&endpoint)
            .args(seed_flags)
            .arg("--backends")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the seeder starts");
        wait_for_line(&mut seeder, "SERVING ");
        Cluster {
            endpoint,
            emulator,
            seeder,
        }
    }

    /// Environment for an ecslb process that should talk to this emulator.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// An ECS client for this emulator (configured explicitly, not from the environment).
    pub fn ecs(&self) -> aws_sdk_ecs::Client {
        let config = aws_sdk_ecs::Config::builder()
            .behavior_version(aws_sdk_ecs::config::BehaviorVersion::latest())
            .region(aws_sdk_ecs::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_ecs::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .endpoint_url(&self.endpoint)
            .build();
        aws_sdk_ecs::Client::from_conf(config)
    }

    /// The emulator's count of AWS calls by action (`ECS.ListTasks`, ...).
    pub async fn calls(&self) -> serde_json::Value {
        let r = super::get(&format!("{}/_ecslb/calls", self.endpoint)).await;
        serde_json::from_str(&r.body).expect("calls are JSON")
    }

    /// The emulator's log of AWS calls since the last reset, in arrival order.
    pub async fn call_log(&self) -> Vec<Call> {
        let r = super::get(&format!("{}/_ecslb/calls/log", self.endpoint)).await;
        let v: serde_json::Value = serde_json::from_str(&r.body).expect("the call log is JSON");
        assert_eq!(v["dropped"], 0, "the emulator's call log overflowed");
        v["calls"]
            .as_array()
            .expect("calls is a list")
            .iter()
            .map(|c| Call {
                t: c["t"].as_f64().expect("t is a number"),
                action: c["action"].as_str().expect("action is a string").to_owned(),
                status: c["status"]
                    .as_u64()
                    .and_then(|s| u16::try_from(s).ok())
                    .expect("status is a number"),
            })
            .collect()
    }

    /// Resets the call counts (and the call log).
    pub async fn reset_calls(&self) {
        super::post(&format!("{}/_ecslb/calls/reset", self.endpoint)).await;
    }

    /// Makes the next `count` calls (-1: all, until [`Cluster::heal`]) fail with `status`.
    pub async fn fail(&self, status: u16, count: i64) {
        let body = serde_json::json!({ "status": status, "actions": ["*"], "count": count });
        let req = http::Request::post(format!("{}/_ecslb/fail", self.endpoint))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_string(),
            )))
            .unwrap();
        super::send(&super::client(), req).await;
    }

    /// Drops every failure rule.
    pub async fn heal(&self) {
        super::post(&format!("{}/_ecslb/fail/reset", self.endpoint)).await;
    }

    /// Sets a service's desired task count (ECS UpdateService).
    pub async fn scale(&self, service: &str, desired: i32) {
        self.ecs()
            .update_service()
            .cluster("demo")
            .service(service)
            .desired_count(desired)
            .send()
            .await
            .expect("UpdateService");
    }

    /// Sets a task's health (the emulator reads it from the `ecslb:health` tag).
    pub async fn set_health(&self, task_arn: &str, health: &str) {
        let tag = aws_sdk_ecs::types::Tag::builder()
            .key("ecslb:health")
            .value(health)
            .build();
        self.ecs()
            .tag_resource()
            .resource_arn(task_arn)
            .tags(tag)
            .send()
            .await
            .expect("TagResource");
    }

    /// The ARNs of a service's running tasks.
    pub async fn tasks(&self, service: &str) -> Vec<String> {
        let out = self
            .ecs()
            .list_tasks()
            .cluster("demo")
            .service_name(service)
            .send()
            .await
            .expect("ListTasks");
        out.task_arns().to_vec()
    }

    /// The ENI addresses of a service's running awsvpc tasks, every page of them
    /// (these calls are counted by the emulator like any other).
    pub async fn task_addresses(&self, service: &str) -> Vec<std::net::Ipv4Addr> {
        let ecs = self.ecs();
        let mut arns = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = ecs
                .list_tasks()
                .cluster("demo")
                .service_name(service)
                .set_next_token(token.take())
                .send()
                .await
                .expect("ListTasks");
            arns.extend(page.task_arns().iter().cloned());
            match page.next_token() {
                Some(next) => token = Some(next.to_owned()),
                None => break,
            }
        }
        let mut out = Vec::new();
        for batch in arns.chunks(100) {
            let described = ecs
                .describe_tasks()
                .cluster("demo")
                .set_tasks(Some(batch.to_vec()))
                .send()
                .await
                .expect("DescribeTasks");
            for task in described.tasks() {
                let ip: Option<std::net::Ipv4Addr> = task
                    .attachments()
                    .iter()
                    .flat_map(|a| a.details())
                    .find(|d| d.name() == Some("privateIPv4Address"))
                    .and_then(|d| d.value()?.parse().ok());
                out.extend(ip);
            }
        }
        out
    }
}

/// One AWS call as the emulator logged it (`GET /_ecslb/calls/log`).
#[derive(Debug, Clone)]
pub struct Call {
    /// When the call reached the emulator, in seconds since the emulator started.
    pub t: f64,
    /// `Service.Action`, e.g. `ECS.ListTasks`.
    pub action: String,
    /// The HTTP status answered (0 while the call is in progress).
    pub status: u16,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.seeder.kill();
        let _ = self.emulator.kill();
        let _ = self.seeder.wait();
        let _ = self.emulator.wait();
    }
}

/// A TCP door between ecslb and the emulator: closing it makes the emulator
/// unreachable to ecslb (new connections refused, open ones cut), as if it had
/// stopped, while the emulator keeps its state; reopening it on the same port lets
/// ecslb back in.
pub struct Gate {
    /// The endpoint to give ecslb (`AWS_ENDPOINT_URL`).
    pub endpoint: String,
    addr: std::net::SocketAddr,
    upstream: std::net::SocketAddr,
    forwarding: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Gate {
    /// An open gate in front of `cluster`.
    pub async fn open(cluster: &Cluster) -> Gate {
        let upstream = cluster
            .endpoint
            .trim_start_matches("http://")
            .parse()
            .expect("the emulator endpoint is http://ip:port");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let gate = Gate {
            endpoint: format!("http://{addr}"),
            addr,
            upstream,
            forwarding: std::sync::Mutex::new(None),
        };
        gate.forward(listener);
        gate
    }

    fn forward(&self, listener: tokio::net::TcpListener) {
        let upstream = self.upstream;
        let task = tokio::spawn(async move {
            // Owned here: aborting this task cuts every open connection too.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        *self.forwarding.lock().unwrap() = Some(task);
    }

    /// Closes the gate: the port refuses connections and open ones are cut.
    pub async fn close(&self) {
        let task = self.forwarding.lock().unwrap().take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// Makes the endpoint silent: open connections are cut, and new ones are accepted
    /// and held without an answer, as by a black-holed or wedged endpoint.
    pub async fn silence(&self) {
        self.close().await;
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((client, _)) = listener.accept().await {
                held.push(client);
            }
        });
        *self.forwarding.lock().unwrap() = Some(task);
    }

    /// Opens the gate again on the same port (after [`Gate::close`] or [`Gate::silence`]).
    pub async fn reopen(&self) {
        self.close().await;
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.forward(listener);
    }

    /// [`Cluster::env`] with the endpoint through this gate.
    pub fn env(&self, cluster: &Cluster) -> Vec<(&'static str, String)> {
        let mut env = cluster.env();
        for (k, v) in &mut env {
            if *k == "AWS_ENDPOINT_URL" {
                *v = self.endpoint.clone();
            }
        }
        env
    }
}
