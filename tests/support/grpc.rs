//! Real gRPC peers (grpcio, in the test venv): the server and client of
//! `tests/support/grpc_peer.py`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::moto::{python, repo, wait_for_line};

fn peer() -> std::path::PathBuf {
    repo().join("tests/support/grpc_peer.py")
}

/// A gRPC server named `name` (its Echo answers `name:request`); killed on drop.
pub struct Server {
    pub addr: SocketAddr,
    child: Child,
}

impl Server {
    /// Starts one on a free port of 127.0.0.1, over TLS with `tls` (cert, key) if given.
    pub fn start(name: &str, tls: Option<(&Path, &Path)>) -> Server {
        Self::start_with(name, tls, &[])
    }

    /// [`Server::start`] with `settings` in its environment: `MAX_CONNECTION_AGE_MS`
    /// (each connection closes with a GOAWAY that long after it opened),
    /// `MAX_CONCURRENT_STREAMS` (the streams a connection may carry at once).
    pub fn start_with(
        name: &str,
        tls: Option<(&Path, &Path)>,
        settings: &[(&str, &str)],
    ) -> Server {
        let mut cmd = Command::new(python());
        cmd.arg(peer())
            .args(["server", name])
            .envs(settings.iter().copied());
        if let Some((cert, key)) = tls {
            cmd.args([cert, key]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the gRPC server starts");
        let line = wait_for_line(&mut child, "listening ");
        let port: u16 = line["listening ".len()..].trim().parse().expect("a port");
        Server {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes `calls` Echo calls through `addr`, 8 at a time; returns how many ended with
/// each status ("OK", or the code and message).
pub async fn call_many(addr: SocketAddr, calls: usize) -> serde_json::Value {
    let mut cmd = Command::new(python());
    cmd.arg(peer())
        .args(["many", &addr.to_string(), &calls.to_string()]);
    run(cmd).await
}

/// Opens `streams` long-lived server-streaming calls through `addr`, each once the
/// last one's first message came; returns how many got theirs within 5 s ("OK") and
/// how many did not.
pub async fn hold_many(addr: SocketAddr, streams: usize) -> serde_json::Value {
    let mut cmd = Command::new(python());
    cmd.arg(peer())
        .args(["hold", &addr.to_string(), &streams.to_string()]);
    run(cmd).await
}

/// Runs the client against `addr` (TLS trusting the CA file, for the server name, if
/// `tls` is given): `calls` Echo calls, then Fail, Count and Chat. Returns its JSON
/// report; panics with its stderr if it fails.
pub async fn call(addr: SocketAddr, calls: usize, tls: Option<(&Path, &str)>) -> serde_json::Value {
    let mut cmd = Command::new(python());
    cmd.arg(peer())
        .args(["client", &addr.to_string(), &calls.to_string()]);
    if let Some((ca, name)) = tls {
        cmd.arg(ca).arg(name);
    }
    run(cmd).await
}

/// Runs a client; returns the JSON it prints, or panics with its stderr.
async fn run(mut cmd: Command) -> serde_json::Value {
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("the client task")
        .expect("the gRPC client runs");
    assert!(
        out.status.success(),
        "the gRPC client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the client prints JSON")
}
