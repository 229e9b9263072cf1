//! The emulated ECS cluster: moto in server mode with ecslb's patches
//! (`emulator/ecs_emulator.py`), seeded by `emulator/seed.py`, whose `--backends`
//! serves a real HTTP server on every running task's discovered address.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    let py = repo().join(".venv/bin/python");
    assert!(
        py.exists(),
        "the emulator's venv is missing: run emulator/setup.sh (scripts/test.sh does)"
    );
    py
}

/// Reads the child's stdout until a line starts with `prefix`; returns that line.
fn wait_for_line(child: &mut Child, prefix: &str) -> String {
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

    /// Resets the call counts.
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
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.seeder.kill();
        let _ = self.emulator.kill();
        let _ = self.seeder.wait();
        let _ = self.emulator.wait();
    }
}
