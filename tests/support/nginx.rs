//! A real nginx (Debian's `nginx` package) as a target: one `server` block the test
//! writes, served on a free loopback port from a temp prefix directory, in the
//! foreground with one process; killed on drop.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{binary, free_port, TempDir};

/// A running nginx.
pub struct Nginx {
    /// The address its server listens on.
    pub addr: SocketAddr,
    child: Child,
    dir: TempDir,
}

/// Starts nginx with `server`, a `server { ... }` block in which `@ADDR@` stands for
/// the listen address, and waits until it accepts connections. nginx cannot be handed
/// a bound socket, so a port taken between picking and binding makes it exit: then it
/// is started again on another.
pub async fn start_nginx(server: &str) -> Nginx {
    let bin = binary("nginx", "nginx");
    let mut log = String::new();
    for _ in 0..3 {
        let dir = TempDir::new();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let d = dir.0.display();
        let config = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\nevents {{ worker_connections 256; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  \
             proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  \
             uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  {}\n}}\n",
            server.replace("@ADDR@", &addr.to_string())
        );
        let conf = dir.0.join("nginx.conf");
        std::fs::write(&conf, config).expect("the nginx config is written");
        let child = Command::new(&bin)
            .arg("-p")
            .arg(&dir.0)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", bin.display()));
        let mut nginx = Nginx { addr, child, dir };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = nginx.child.try_wait() {
                break; // exited: most likely the port was taken
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return nginx;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        log = nginx.log();
    }
    panic!("nginx did not start; its error log:\n{log}");
}

impl Nginx {
    /// What nginx has logged so far (its error log, at level info).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
