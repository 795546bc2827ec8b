//! The server under load: 16 clients doing read-modify-write transfers,
//! a graceful shutdown in the middle of it, and a SIGKILL in the middle of
//! it followed by a restart and `sop check`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::bank::{self, Transfer, account};
use common::{Server, data_dir, run_sop};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ACCOUNTS: u64 = 20;

/// What the clients saw.
#[derive(Debug, Default)]
struct Outcome {
    /// Transfers whose commit answered 200.
    acked: Vec<String>,
    /// Commits answered 409 (then retried).
    conflicts: u64,
    /// Requests that failed without an HTTP answer (server gone).
    unreachable: u64,
}

/// One client: transfers until `per_client` are acknowledged or `stop`;
/// any answer but 2xx/409 is a failure, except the server going away.
async fn client(base: String, id: usize, per_client: usize, stop: Arc<AtomicBool>) -> Outcome {
    let http = reqwest::Client::new();
    let mut out = Outcome::default();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ (id as u64 + 1);
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut n = 0;
    while out.acked.len() < per_client && !stop.load(Ordering::Relaxed) {
        let (a, b) = (next() % ACCOUNTS, next() % ACCOUNTS);
        if a == b {
            continue;
        }
        let amount = (next() % 50) as i64 + 1;
        let tid = format!("t-{id:02}-{n:05}");
        n += 1;
        match bank::transfer(&http, &base, (&tid, &account(a), &account(b), amount), false).await {
            Transfer::Committed => out.acked.push(tid),
            Transfer::Conflict => out.conflicts += 1,
            Transfer::Unknown | Transfer::Unreachable => {
                out.unreachable += 1;
                return out;
            }
        }
    }
    out
}

async fn run_clients(
    srv: &Server,
    clients: usize,
    per_client: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Outcome>> {
    (0..clients).map(|id| tokio::spawn(client(srv.base.clone(), id, per_client, stop.clone()))).collect()
}

async fn gather(tasks: Vec<tokio::task::JoinHandle<Outcome>>) -> Outcome {
    let mut all = Outcome::default();
    for t in tasks {
        let o = t.await.expect("client task");
        all.acked.extend(o.acked);
        all.conflicts += o.conflicts;
        all.unreachable += o.unreachable;
    }
    all
}

/// Reads every account and ledger entry in one read transaction and
/// checks: the total is exact; every acknowledged transfer is in the
/// ledger; each balance is what the ledger says (no partial transfer).
async fn verify(srv: &Server, acked: &[String]) -> usize {
    let tx = srv.begin("read").await;
    let (s, accounts) = srv.get(&format!("/v1/tx/{tx}/stores/accounts/items?limit=100000")).await;
    assert_eq!(s, StatusCode::OK, "{accounts}");
    let (s, ledger) = srv.get(&format!("/v1/tx/{tx}/stores/ledger/items?limit=100000")).await;
    assert_eq!(s, StatusCode::OK, "{ledger}");
    assert_eq!(srv.post(&format!("/v1/tx/{tx}/commit"), json!(null)).await.0, StatusCode::OK);
    bank::check_books(&accounts["items"], &ledger["items"], ACCOUNTS, acked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_clients_keep_the_total_exact() {
    let (_d, data) = data_dir();
    let srv = Server::start(&data, &[]);
    bank::setup(&srv, ACCOUNTS).await;
    let stop = Arc::new(AtomicBool::new(false));
    let out = gather(run_clients(&srv, 16, 15, &stop).await).await;
    assert_eq!(out.unreachable, 0);
    assert_eq!(out.acked.len(), 16 * 15);
    let in_ledger = verify(&srv, &out.acked).await;
    assert_eq!(in_ledger, 16 * 15, "the ledger holds exactly the committed transfers");
    eprintln!("16 clients: {} transfers, {} conflicts retried", out.acked.len(), out.conflicts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_then_exits_zero() {
    let (_d, data) = data_dir();
    let mut srv = Server::start(&data, &[]);
    bank::setup(&srv, ACCOUNTS).await;
    // An open transaction at shutdown is rolled back, not published.
    let open = srv.begin("write").await;
    srv.put(&format!("/v1/tx/{open}/stores/ledger/items/never"), json!(1)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = run_clients(&srv, 8, usize::MAX, &stop).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = srv.terminate().await;
    stop.store(true, Ordering::Relaxed);
    let out = gather(tasks).await;
    assert!(status.success(), "exit status {status:?}");
    assert!(!out.acked.is_empty());

    let srv = Server::start(&data, &[]);
    let in_ledger = verify(&srv, &out.acked).await;
    assert!(in_ledger >= out.acked.len());
    let (s, b) =
        srv.post("/v1/batch", json!({ "ops": [{ "op": "get", "store": "ledger", "key": "never" }] })).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["results"][0], Value::Null, "an uncommitted transaction was published");
    eprintln!("sigterm: {} transfers acknowledged before the drain", out.acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_load_then_restart_and_check() {
    let (_d, data) = data_dir();
    let mut srv = Server::start(&data, &[]);
    bank::setup(&srv, ACCOUNTS).await;
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = run_clients(&srv, 16, usize::MAX, &stop).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    srv.signal("-KILL");
    let status = srv.wait(Duration::from_secs(10)).await;
    assert!(!status.success());
    let out = gather(tasks).await;
    assert!(out.acked.len() > 10, "too little load before the kill: {}", out.acked.len());
    assert!(out.unreachable > 0, "the clients should have seen the server die");

    let mut srv = Server::start(&data, &[]);
    let in_ledger = verify(&srv, &out.acked).await;
    assert!(srv.terminate().await.success());
    let (ok, stdout, stderr) = run_sop(&["--data", data.to_str().unwrap(), "check"]);
    assert!(ok, "sop check failed after the crash:\n{stdout}\n{stderr}");
    assert!(stdout.contains("0 problem(s)"), "{stdout}");
    eprintln!("sigkill: {} acknowledged, {in_ledger} in the ledger after restart", out.acked.len());
}
