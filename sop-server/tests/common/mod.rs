//! Shared helpers: start the real `sop` binary on a random loopback port
//! and talk to it over HTTP.
#![allow(dead_code, unreachable_pub)]

pub mod bank;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The `sop` binary under test.
pub fn sop() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sop"))
}

/// A running `sop serve`.
pub struct Server {
    pub child: Child,
    /// Kept open so that the server never writes to a closed pipe.
    _stdout: BufReader<ChildStdout>,
    pub base: String,
    pub http: reqwest::Client,
    pub token: Option<String>,
}

impl Server {
    /// Starts `sop --data DIR serve --listen 127.0.0.1:0 EXTRA...` and
    /// waits for its "listening on" line.
    pub fn start(data: &Path, extra: &[&str]) -> Self {
        let mut cmd = sop();
        cmd.arg("--data").arg(data).args(["serve", "--listen", "127.0.0.1:0"]).args(extra);
        Self::spawn(cmd)
    }

    /// Spawns a prepared `serve` command.
    pub fn spawn(mut cmd: Command) -> Self {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env("RUST_LOG", std::env::var("SOP_TEST_LOG").unwrap_or("warn".into()));
        let mut child = cmd.spawn().expect("spawn sop serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        let mut stdout = BufReader::new(stdout);
        stdout.read_line(&mut line).expect("read the listening line");
        let base = line
            .split_whitespace()
            .find(|w| w.starts_with("http://") || w.starts_with("https://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        Self { child, _stdout: stdout, base, http: reqwest::Client::new(), token: None }
    }

    /// Sends a request; returns the status and the JSON body (`Null` if none).
    pub async fn req(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("send");
        let status = resp.status();
        let bytes = resp.bytes().await.expect("body");
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, v)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.req(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.req(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.req(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.req(Method::DELETE, path, None).await
    }

    /// Creates a store with default options.
    pub async fn create_store(&self, name: &str, options: Value) {
        let (s, b) = self.put(&format!("/v1/stores/{name}"), options).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }

    /// Begins a transaction and returns its id.
    pub async fn begin(&self, mode: &str) -> String {
        let (s, b) = self.post("/v1/tx", json!({ "mode": mode })).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        b["tx"].as_str().expect("tx id").to_owned()
    }

    /// Sends SIGTERM and waits (bounded) for the exit. Async, so that the
    /// test's own connections keep answering (an HTTP/2 ping unanswered
    /// would hold the server's drain).
    pub async fn terminate(&mut self) -> ExitStatus {
        self.signal("-TERM");
        self.wait(Duration::from_secs(60)).await
    }

    /// Sends a signal (`-TERM`, `-KILL`, ...) with `kill`.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill").args([sig, &pid]).status().expect("kill");
        assert!(ok.success(), "kill {sig} {pid}");
    }

    /// Waits for the process to exit, at most `limit`.
    pub async fn wait(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            assert!(start.elapsed() < limit, "server did not exit within {limit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh temporary directory and the data directory inside it.
pub fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    (dir, data)
}

/// Runs `sop ARGS` to completion: (success, stdout, stderr).
pub fn run_sop(args: &[&str]) -> (bool, String, String) {
    let out = sop().args(args).env("RUST_LOG", "warn").output().expect("run sop");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
