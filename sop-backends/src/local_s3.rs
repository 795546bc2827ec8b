//! [`LocalS3`]: an S3-compatible server (moto's server mode, from PyPI) on
//! a loopback port, for tests and benchmarks. Started by the test that
//! uses it, killed when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sop_core::{Error, Result};

use crate::local_start::{START_ATTEMPTS, Start};

/// How long the server gets to answer.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// A running local S3 server.
#[derive(Debug)]
pub struct LocalS3 {
    child: Child,
    port: u16,
}

impl LocalS3 {
    /// Starts moto's S3 server on a free loopback port, logging to
    /// `dir/moto.log`. The binary is `$SOP_MOTO_SERVER`, else
    /// `moto_server` on the `PATH` (`cargo xtask ci` installs moto in a
    /// virtualenv and sets the variable).
    ///
    /// # Errors
    /// `Io` when the server cannot start; `Timeout` when it does not
    /// answer within 30 s.
    pub fn start(dir: &Path) -> Result<Self> {
        let mut attempt = 1;
        loop {
            match Self::start_once(dir) {
                Err(Start::Exited(e)) if attempt < START_ATTEMPTS => {
                    eprintln!("{e}; starting the local S3 server again on a fresh port");
                    attempt += 1;
                }
                Err(Start::Exited(e) | Start::Failed(e)) => return Err(e),
                Ok(s3) => return Ok(s3),
            }
        }
    }

    /// One start on a freshly chosen port.
    fn start_once(dir: &Path) -> Result<Self, Start> {
        let bin =
            std::env::var_os("SOP_MOTO_SERVER").map_or_else(|| PathBuf::from("moto_server"), PathBuf::from);
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("finding a free port", e))?;
            l.local_addr().map_err(|e| Error::io("finding a free port", e))?.port()
        };
        std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let log = std::fs::File::create(dir.join("moto.log"))
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                Error::io(
                    format!(
                        "starting {} (moto[server] from PyPI; `cargo xtask ci` installs it)",
                        bin.display()
                    ),
                    e,
                )
            })?;
        let mut s3 = Self { child, port };
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let answered = s3.request("GET", "/").is_ok();
            // Checked after an answer too: a server that lost its port to
            // another process exits, and the answer came from that process.
            if let Ok(Some(status)) = s3.child.try_wait() {
                return Err(Start::Exited(Error::io(
                    format!("moto exited ({status}); see {}", dir.join("moto.log").display()),
                    std::io::Error::other("moto exited"),
                )));
            }
            if answered {
                return Ok(s3);
            }
            if Instant::now() > deadline {
                return Err(Start::Failed(Error::Timeout {
                    what: "local S3 server".into(),
                    after: READY_WITHIN,
                }));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The endpoint, `http://127.0.0.1:PORT`.
    #[must_use]
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `AWS_*` variables that point `object_store` (and so
    /// `--blobs s3://...`) at this server.
    #[must_use]
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "sop-test".into()),
            ("AWS_SECRET_ACCESS_KEY", "sop-test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_DEFAULT_REGION", "us-east-1".into()),
        ]
    }

    /// Creates bucket `name`.
    ///
    /// # Errors
    /// `Io` when the server refuses or does not answer.
    pub fn create_bucket(&self, name: &str) -> Result<()> {
        let status = self.request("PUT", &format!("/{name}"))?;
        if status / 100 == 2 {
            Ok(())
        } else {
            Err(Error::io(format!("creating bucket {name}"), std::io::Error::other(format!("HTTP {status}"))))
        }
    }

    /// One bodiless HTTP/1.1 request; the response's status.
    fn request(&self, method: &str, path: &str) -> Result<u16> {
        let io = |e| Error::io(format!("{method} {path} on the local S3 server"), e);
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).map_err(io)?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(io)?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        );
        stream.write_all(req.as_bytes()).map_err(io)?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).map_err(io)?;
        std::str::from_utf8(&head[9..12])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::corruption("HTTP response", "no status"))
    }
}

impl Drop for LocalS3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
