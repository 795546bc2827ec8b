//! [`LocalEtcd`]: an etcd cluster of local `etcd` processes on loopback
//! ports, for tests and benchmarks. Started by the test that uses it and
//! killed when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sop_core::{Error, Result};

use crate::local_start::{START_ATTEMPTS, Start};

/// How long the members get to elect a leader and answer.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// A running local etcd cluster (one or more members on 127.0.0.1).
#[derive(Debug)]
pub struct LocalEtcd {
    members: Vec<Member>,
}

#[derive(Debug)]
struct Member {
    client_port: u16,
    child: Option<Child>,
}

impl LocalEtcd {
    /// Starts `members` etcd processes forming one cluster, with data and
    /// logs under `dir`, and waits until the cluster answers. `extra` goes
    /// to every member (e.g. `["--max-txn-ops", "1024"]`).
    ///
    /// # Errors
    /// `NotFound`-flavoured `Io` when `etcd` is not installed (Debian's
    /// `etcd-server`; `cargo xtask ci` installs it); `Timeout` when the
    /// cluster does not answer within 30 s.
    pub async fn start(dir: &Path, members: usize, extra: &[&str]) -> Result<Self> {
        let mut attempt = 1;
        loop {
            match Self::start_once(dir, members, extra).await {
                Err(Start::Exited(e)) if attempt < START_ATTEMPTS => {
                    eprintln!("{e}; starting the local etcd again on fresh ports");
                    for i in 0..members {
                        let _ = std::fs::remove_dir_all(dir.join(format!("m{i}")).join("data"));
                    }
                    attempt += 1;
                }
                Err(Start::Exited(e) | Start::Failed(e)) => return Err(e),
                Ok(cluster) => return Ok(cluster),
            }
        }
    }

    /// One start on freshly chosen ports.
    async fn start_once(dir: &Path, members: usize, extra: &[&str]) -> Result<Self, Start> {
        let ports: Vec<(u16, u16)> =
            (0..members).map(|_| Ok((free_port()?, free_port()?))).collect::<Result<_>>()?;
        let cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("sop-{}", sop_core::TxId::new());
        let mut started = Self { members: Vec::new() };
        for (i, (client, peer)) in ports.iter().enumerate() {
            let data = dir.join(format!("m{i}"));
            std::fs::create_dir_all(&data)
                .map_err(|e| Error::io(format!("creating {}", data.display()), e))?;
            let log = std::fs::File::create(data.join("etcd.log"))
                .map_err(|e| Error::io(format!("creating {}", data.display()), e))?;
            let child = Command::new("etcd")
                .args(["--name", &format!("m{i}"), "--data-dir"])
                .arg(data.join("data"))
                .args(["--listen-client-urls", &format!("http://127.0.0.1:{client}")])
                .args(["--advertise-client-urls", &format!("http://127.0.0.1:{client}")])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args(["--initial-cluster", &cluster, "--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", &token])
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| {
                    Error::io(
                        "starting `etcd` (install Debian's etcd-server; `cargo xtask ci` does)".to_owned(),
                        e,
                    )
                })?;
            started.members.push(Member { client_port: *client, child: Some(child) });
        }
        started.wait_ready(dir).await?;
        Ok(started)
    }

    /// The members' client addresses, `127.0.0.1:PORT`.
    #[must_use]
    pub fn hosts(&self) -> Vec<String> {
        self.members.iter().map(|m| format!("127.0.0.1:{}", m.client_port)).collect()
    }

    /// `etcd://` URL of the whole cluster under `prefix` (options, if
    /// any, appended as given: `?max_txn_ops=1024`).
    #[must_use]
    pub fn url(&self, prefix: &str) -> String {
        format!("etcd://{}/{prefix}", self.hosts().join(","))
    }

    /// Kills member `i` (SIGKILL), as a crashed machine would stop.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members.get_mut(i).and_then(|m| m.child.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn wait_ready(&mut self, dir: &Path) -> Result<(), Start> {
        let deadline = Instant::now() + READY_WITHIN;
        let endpoints: Vec<String> = self.hosts().iter().map(|h| format!("http://{h}")).collect();
        loop {
            let answered = answers(&endpoints).await;
            // Checked after an answer too: a member that lost its port to
            // another process exits, and the answer came from that process.
            for (i, m) in self.members.iter_mut().enumerate() {
                if let Some(status) = m.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                    return Err(Start::Exited(Error::io(
                        format!("etcd member m{i} exited ({status}); see {}", log_of(dir, i).display()),
                        std::io::Error::other("etcd exited"),
                    )));
                }
            }
            if answered {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Start::Failed(Error::Timeout {
                    what: format!("local etcd in {}", dir.display()),
                    after: READY_WITHIN,
                }));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Whether the cluster serves a linearizable read.
async fn answers(endpoints: &[String]) -> bool {
    let opts = etcd_client::ConnectOptions::new()
        .with_timeout(Duration::from_secs(1))
        .with_connect_timeout(Duration::from_secs(1));
    let Ok(client) = etcd_client::Client::connect(endpoints, Some(opts)).await else { return false };
    client.kv_client().get("sop-ready-probe", None).await.is_ok()
}

fn log_of(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("m{i}")).join("etcd.log")
}

/// A port free on 127.0.0.1 now (the OS's choice).
fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("finding a free port".to_owned(), e))?;
    l.local_addr().map(|a| a.port()).map_err(|e| Error::io("finding a free port".to_owned(), e))
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
