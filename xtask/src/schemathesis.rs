//! `cargo xtask schemathesis`: the API fuzzer Schemathesis against a real
//! `sop serve`, once without and once with a bearer token, driven by the
//! OpenAPI document the server serves. Any failure Schemathesis reports
//! (a status, body, content type or header the document does not allow, a
//! 5xx, valid input refused or invalid input accepted) fails the task.
//!
//! Schemathesis 4 lives in a virtualenv in the target directory, made on
//! first use. `SOP_ST_EXAMPLES` (default 100) and `SOP_ST_SEED` (default 1)
//! tune the run.

use std::env;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{cargo_with, target_dir};

/// The token of the authenticated run, and the file holding it.
const TOKEN: &str = "schemathesis-token";
const TOKEN_FILE: &str = "token";
/// Schemathesis' configuration file.
const CONFIG_FILE: &str = "schemathesis.toml";

/// Schemathesis' configuration: the statuses that count as refusing invalid
/// input and as accepting valid input are its defaults plus 410 in both (a
/// transaction id it picked up from `POST /v1/tx` may have expired since:
/// gone, whatever the rest of the request) and 413 for invalid input (an
/// over-long key, or too many batch ops, is refused as too large).
const CONFIG: &str = r#"[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "410", "413", "415", "422", "428", "429", "5xx"]

[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "410", "429", "5xx"]
"#;

/// Runs Schemathesis against a server without and with a token.
pub(crate) fn run() -> Result<(), String> {
    let st = install()?;
    crate::rocksdb::prebuild()?;
    crate::run(cargo_with(&["build", "-p", "sop-server", "--bin", "sop"]))?;
    let scratch = target_dir().join("schemathesis-run");
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let write = |name: &str, text: &str| {
        let path = scratch.join(name);
        fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    write(CONFIG_FILE, CONFIG)?;
    write(TOKEN_FILE, &format!("{TOKEN}\n"))?;
    let sop = target_dir().join("debug").join("sop");
    let tools = Tools { st, sop, scratch };
    let outcome = tools.fuzz(false).and_then(|()| tools.fuzz(true));
    let _ = fs::remove_dir_all(&tools.scratch);
    outcome
}

/// The `st` of the virtualenv, installing Schemathesis when missing.
pub(crate) fn install() -> Result<PathBuf, String> {
    crate::venv_tool("venv-schemathesis", "schemathesis==4.*", "st")
}

/// What a run uses.
struct Tools {
    /// Schemathesis' command.
    st: PathBuf,
    /// The `sop` binary.
    sop: PathBuf,
    /// The run's directory: configuration, token, data, reports.
    scratch: PathBuf,
}

impl Tools {
    /// One Schemathesis run against a fresh server, with a token or not.
    fn fuzz(&self, auth: bool) -> Result<(), String> {
        let token_file = self.scratch.join(TOKEN_FILE);
        let token_file = auth.then_some(token_file.as_path());
        let data = self.scratch.join(if auth { "data-auth" } else { "data-open" });
        let server = Server::start(&self.sop, &data, token_file)?;
        let examples = env::var("SOP_ST_EXAMPLES").unwrap_or_else(|_| "100".into());
        let seed = env::var("SOP_ST_SEED").unwrap_or_else(|_| "1".into());
        let mut cmd = Command::new(&self.st);
        cmd.arg("--config-file").arg(self.scratch.join(CONFIG_FILE));
        cmd.args(["run", &format!("{}/v1/openapi.json", server.base), "--checks", "all"]);
        cmd.args(["--max-examples", &examples, "--seed", &seed, "--generation-database", "none"]);
        // The stateful phase is left out: it takes every id `POST /v1/tx`
        // returns for a resource that lives on, which a committed
        // transaction does not (its id is then 404, by design).
        // One worker: Hypothesis' caches are not thread-safe (two workers
        // now and then end a run with an internal `FlakyFailure`).
        cmd.args(["--phases", "examples,coverage,fuzzing", "--workers", "1", "--request-timeout", "20"]);
        cmd.args(["--no-color", "--suppress-health-check", "all"]);
        if auth {
            cmd.args(["-H", &format!("Authorization: Bearer {TOKEN}")]);
        }
        // Schemathesis writes its reports under the working directory.
        cmd.current_dir(&self.scratch);
        let outcome = crate::run(cmd);
        drop(server);
        let mode = if auth { "with a token" } else { "without a token" };
        outcome.map_err(|e| format!("Schemathesis found failures ({mode}): {e}"))
    }
}

/// A running `sop serve`, killed when dropped.
struct Server {
    child: Child,
    /// Its first line gives the address; kept open after that so that the
    /// server never writes to a closed pipe.
    stdout: BufReader<ChildStdout>,
    base: String,
}

impl Server {
    /// Starts `sop serve` on a free loopback port and waits for `/health`.
    fn start(sop: &Path, data: &Path, token_file: Option<&Path>) -> Result<Self, String> {
        let mut cmd = Command::new(sop);
        cmd.arg("--data").arg(data).args(["serve", "--listen", "127.0.0.1:0"]);
        if let Some(t) = token_file {
            cmd.arg("--token-file").arg(t);
        }
        cmd.env("RUST_LOG", "error").stdout(Stdio::piped()).stderr(Stdio::inherit());
        println!("\n$ {}", format!("{cmd:?}").replace('"', ""));
        let mut child = cmd.spawn().map_err(|e| format!("{}: {e}", sop.display()))?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            return Err("no stdout from sop serve".into());
        };
        let mut server = Self { child, stdout: BufReader::new(stdout), base: String::new() };
        let mut line = String::new();
        server.stdout.read_line(&mut line).map_err(|e| format!("reading sop's first line: {e}"))?;
        let base = line.split_whitespace().find(|w| w.starts_with("http://"));
        server.base = base.ok_or_else(|| format!("no address in sop's first line {line:?}"))?.to_owned();
        server.wait_healthy(Duration::from_secs(30))?;
        Ok(server)
    }

    /// Polls `GET /health` until it answers 200.
    fn wait_healthy(&self, limit: Duration) -> Result<(), String> {
        let addr = self.base.trim_start_matches("http://");
        let start = Instant::now();
        while start.elapsed() < limit {
            if health_ok(addr) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("{}/health did not answer 200 within {limit:?}", self.base))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `GET /health` over HTTP/1.1.
fn health_ok(addr: &str) -> bool {
    let Ok(mut sock) = TcpStream::connect(addr) else { return false };
    let _ = sock.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if sock.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = sock.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}
