//! Cluster mode end to end: three `sop serve` processes on one database,
//! sharing a 3-member etcd cluster (started here on loopback ports) and one
//! blob directory. Clients spread over the servers move money: the total
//! stays exact and every acknowledged transfer is in the ledger, while an
//! etcd member dies; a write through one server is read through another at
//! once; a server SIGKILLed mid-commit has its intents finished by the
//! survivors and `sop check` on the shared database is clean; the swarm
//! scenario spread over the three processes counts exactly 12 000.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::bank::{self, Transfer, account};
use common::{Server, run_sop};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sop_backends::LocalEtcd;
use sop_core::Registry;

const ACCOUNTS: u64 = 12;
/// The servers' transaction timeout: shared recovery finishes a dead
/// process's intents once they are this old.
const TX_TIMEOUT_SECS: &str = "2";

struct Cluster {
    dir: tempfile::TempDir,
    etcd: LocalEtcd,
    registry: String,
    blobs: String,
    servers: Vec<Server>,
}

impl Cluster {
    async fn start(servers: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let etcd = LocalEtcd::start(&dir.path().join("etcd"), 3, &[]).await.expect("etcd-server installed?");
        let registry = etcd.url("bank");
        let blobs = format!("file://{}", dir.path().join("blobs").display());
        let mut c = Self { dir, etcd, registry, blobs, servers: Vec::new() };
        for i in 0..servers {
            let s = c.server(i);
            c.servers.push(s);
        }
        c
    }

    fn data(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("data{i}"))
    }

    fn server(&self, i: usize) -> Server {
        Server::start(&self.data(i), &self.shared_args(&["--max-tx-timeout-secs", TX_TIMEOUT_SECS]))
    }

    fn shared_args<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        [&["--registry", self.registry.as_str(), "--blobs", self.blobs.as_str()][..], extra].concat()
    }

    fn bases(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.base.clone()).collect()
    }

    /// `sop check` on the shared database, from a process of its own.
    fn check(&self, scratch: &Path) {
        let data = scratch.to_str().unwrap();
        let args = [&["--data", data][..], &self.shared_args(&["check"])].concat();
        let (ok, stdout, stderr) = run_sop(&args);
        assert!(ok, "sop check failed:\n{stdout}\n{stderr}");
        assert!(stdout.contains(" 0 problem(s)"), "{stdout}");
    }
}

/// What one client saw.
#[derive(Debug, Default)]
struct Outcome {
    acked: Vec<String>,
    conflicts: u64,
    /// Transfers whose outcome the client cannot know (an error answer
    /// during a member's death, or no answer): they may or may not be in
    /// the ledger, never half.
    unknown: u64,
}

/// One client: `n` transfer attempts through `base`.
/// Transfer ids are `t-ROUND-CLIENT-N`: unique across rounds, as a ledger
/// key must be.
async fn client(base: String, round: usize, id: usize, n: usize) -> Outcome {
    let http = reqwest::Client::new();
    let mut out = Outcome::default();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ (id as u64 + 1);
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..n {
        let (a, b) = (next() % ACCOUNTS, next() % ACCOUNTS);
        if a == b {
            continue;
        }
        let tid = format!("t-{round}-{id:02}-{i:05}");
        let amount = (next() % 50) as i64 + 1;
        match bank::transfer(&http, &base, (&tid, &account(a), &account(b), amount), true).await {
            Transfer::Committed => out.acked.push(tid),
            Transfer::Conflict => out.conflicts += 1,
            Transfer::Unknown | Transfer::Unreachable => out.unknown += 1,
        }
    }
    out
}

async fn run_clients(
    bases: &[String],
    round: usize,
    clients: usize,
    per_client: usize,
) -> Vec<tokio::task::JoinHandle<Outcome>> {
    (0..clients)
        .map(|id| tokio::spawn(client(bases[id % bases.len()].clone(), round, id, per_client)))
        .collect()
}

async fn gather(tasks: Vec<tokio::task::JoinHandle<Outcome>>) -> Outcome {
    let mut all = Outcome::default();
    for t in tasks {
        let o = t.await.expect("client task");
        all.acked.extend(o.acked);
        all.conflicts += o.conflicts;
        all.unknown += o.unknown;
    }
    all
}

/// Reads every account and ledger entry through `srv` in one read
/// transaction: the total is exact, every acknowledged transfer is in
/// the ledger, each balance is what the ledger says. Returns the ledger's
/// size.
async fn verify(srv: &Server, acked: &[String]) -> usize {
    let [accounts, ledger] = read_all(srv, ["accounts", "ledger"]).await;
    bank::check_books(&accounts, &ledger, ACCOUNTS, acked)
}

/// Every item of `stores`, read in one read transaction that commits:
/// what an uncommitted transaction reads through a server whose caches
/// are stale may be old (optimistic reads), and its commit answers 409;
/// then it reads again.
async fn read_all<const N: usize>(srv: &Server, stores: [&str; N]) -> [Value; N] {
    for _ in 0..20 {
        let tx = srv.begin("read").await;
        let mut out = Vec::new();
        for store in stores {
            let (s, page) = srv.get(&format!("/v1/tx/{tx}/stores/{store}/items?limit=100000")).await;
            assert_eq!(s, StatusCode::OK, "{page}");
            assert_eq!(page["next"], Value::Null, "one page holds everything");
            out.push(page["items"].clone());
        }
        match srv.post(&format!("/v1/tx/{tx}/commit"), json!(null)).await {
            (StatusCode::OK, _) => return out.try_into().unwrap(),
            (StatusCode::CONFLICT, _) => continue,
            (s, b) => panic!("read commit answered {s}: {b}"),
        }
    }
    panic!("a read transaction conflicted 20 times in a row");
}

async fn batch_get(srv: &Server, store: &str, key: &str) -> Value {
    let (s, b) = srv.post("/v1/batch", json!({ "ops": [{ "op": "get", "store": store, "key": key }] })).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["results"][0]["value"].clone()
}

/// Transfers through three servers while an etcd member dies: the quorum
/// keeps committing, nothing acknowledged is lost, no transfer is half
/// applied; and each write through one server is what the next read
/// through another returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_servers_keep_the_bank_exact_while_an_etcd_member_dies() {
    let mut c = Cluster::start(3).await;
    bank::setup(&c.servers[0], ACCOUNTS).await;
    c.servers[1].create_store("probes", json!({})).await;
    for round in 0..5 {
        let (writer, reader) = (&c.servers[round % 3], &c.servers[(round + 1) % 3]);
        let body = json!({ "ops": [{ "op": "put", "store": "probes", "key": "p", "value": round }] });
        assert_eq!(writer.post("/v1/batch", body).await.0, StatusCode::OK);
        assert_eq!(
            batch_get(reader, "probes", "p").await,
            json!(round),
            "a stale read through another server"
        );
    }
    let tasks = run_clients(&c.bases(), 0, 9, 12).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    c.etcd.kill(0);
    let first = gather(tasks).await;
    let second = gather(run_clients(&c.bases(), 1, 9, 6).await).await;
    let acked: Vec<String> = first.acked.into_iter().chain(second.acked.iter().cloned()).collect();
    // 9 clients on 12 accounts conflict often (a client does not retry);
    // what matters is that commits go on and every outcome is known.
    assert!(second.acked.len() >= 5, "commits stalled on the remaining quorum: {second:?}");
    assert_eq!(second.unknown, 0, "after the member's death every outcome is known: {second:?}");
    let ledger = verify(&c.servers[2], &acked).await;
    eprintln!(
        "3 servers: {} acknowledged, {} conflicts retried, {} unknown at the member's death, {ledger} in the ledger",
        acked.len(),
        first.conflicts + second.conflicts,
        first.unknown
    );
    for s in &c.servers {
        assert_eq!(verify(s, &acked).await, ledger, "the servers disagree");
    }
}

/// A server killed mid-commit leaves intents; a survivor finishes them
/// once they are older than the transaction timeout, and `sop check` on
/// the shared database finds nothing wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_servers_intents_are_finished_by_a_survivor() {
    let c = Cluster::start(3).await;
    bank::setup(&c.servers[0], ACCOUNTS).await;
    let bases = c.bases();
    let tasks = run_clients(&bases, 0, 9, usize::MAX / 2).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.servers[1].signal("-KILL");
    tokio::time::sleep(Duration::from_millis(500)).await;
    for t in &tasks {
        t.abort();
    }
    // Every intent finished, the dead server's by a survivor: nothing is
    // landing any more (a commit holds its intent from before it stages
    // until after it published), so `check` sees a quiet database. (Waiting
    // only for intents older than the timeout let `check` run beside the
    // survivors' last commits, whose counts it read before walking their
    // items: "34 items but count says 33".)
    let registry = sop_backends::EtcdRegistry::from_url(&c.registry).await.unwrap();
    let mut waited = 0;
    loop {
        let left = registry.list_intents(u64::MAX).await.unwrap();
        if left.is_empty() {
            break;
        }
        waited += 1;
        assert!(waited < 200, "{} intents were never finished", left.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    verify(&c.servers[0], &[]).await;
    c.check(&c.dir.path().join("check"));
}

/// The swarm scenario spread over three processes: 40 clients, each one
/// transaction of 300 inserts into one new store, through the three
/// servers in turn: exactly 12 000 items by scan and by count, read
/// through every server.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_swarm_over_three_processes_counts_exactly() {
    const TASKS: u64 = 40;
    const KEYS: u64 = 300;
    let c = Cluster::start(3).await;
    c.servers[0].create_store("swarm", json!({})).await;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let base = c.servers[(t % 3) as usize].base.clone();
        tasks.push(tokio::spawn(async move {
            let ops: Vec<Value> = (0..KEYS)
                .map(|i| json!({ "op": "put", "store": "swarm", "key": format!("{:06}", i * TASKS + t), "value": t }))
                .collect();
            let http = reqwest::Client::new();
            for attempt in 1.. {
                let resp = http.post(format!("{base}/v1/batch")).json(&json!({ "ops": ops })).send().await.unwrap();
                match resp.status() {
                    StatusCode::OK => return,
                    StatusCode::CONFLICT if attempt < 20 => continue,
                    s => panic!("task {t}: {s} {}", resp.text().await.unwrap_or_default()),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for s in &c.servers {
        let (st, stores) = s.get("/v1/stores").await;
        assert_eq!(st, StatusCode::OK);
        let count =
            stores["stores"].as_array().unwrap().iter().find(|s| s["name"] == "swarm").unwrap()["count"]
                .clone();
        assert_eq!(count, json!(12_000));
        let [items] = read_all(s, ["swarm"]).await;
        let keys: Vec<&str> = items.as_array().unwrap().iter().map(|i| i["key"].as_str().unwrap()).collect();
        assert_eq!(keys.len(), 12_000);
        assert!(keys.iter().enumerate().all(|(i, k)| *k == format!("{i:06}")), "every key once, in order");
    }
}

/// The sum over `servers` of a counter of `/metrics` (all label sets whose
/// line starts with `prefix`).
async fn counter(servers: &[Server], prefix: &str) -> f64 {
    let mut total = 0.0;
    for s in servers {
        let (st, body) = s.get("/metrics").await;
        assert_eq!(st, StatusCode::OK);
        let text = body.as_str().expect("metrics are text").to_owned();
        total += text
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    total
}

/// Blobs on S3 (moto's server, from PyPI, started here on loopback): two
/// servers share an etcd registry and an S3 bucket through `--blobs
/// s3://...` and the usual `AWS_*` variables; the bank stays exact, and
/// each commit costs a small constant number of PUTs, counted by the
/// servers' `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bank_on_s3_blobs_counts_its_requests() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = LocalEtcd::start(&dir.path().join("etcd"), 1, &[]).await.expect("etcd-server installed?");
    let s3 = sop_backends::LocalS3::start(&dir.path().join("s3"))
        .expect("moto installed? cargo xtask ci sets it up");
    s3.create_bucket("sop-test").unwrap();
    let registry = etcd.url("bank");
    let servers: Vec<Server> = (0..2)
        .map(|i| {
            let mut cmd = common::sop();
            cmd.arg("--data").arg(dir.path().join(format!("data{i}")));
            cmd.args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--registry",
                &registry,
                "--blobs",
                "s3://sop-test/bank",
            ]);
            cmd.envs(s3.env());
            Server::spawn(cmd)
        })
        .collect();
    bank::setup(&servers[0], ACCOUNTS).await;
    let puts_before = counter(&servers, "sop_blob_requests_total{op=\"put\"}").await;
    let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();
    let out = gather(run_clients(&bases, 0, 6, 10).await).await;
    assert_eq!(out.unknown, 0, "{out:?}");
    let ledger = verify(&servers[1], &out.acked).await;
    assert_eq!(ledger, out.acked.len());
    let puts = counter(&servers, "sop_blob_requests_total{op=\"put\"}").await - puts_before;
    let attempts = (out.acked.len() as u64 + out.conflicts) as f64;
    let per_commit = puts / attempts;
    eprintln!(
        "S3: {} transfers acknowledged, {} conflicts, {puts} PUTs: {per_commit:.2} per commit attempt",
        out.acked.len(),
        out.conflicts
    );
    assert!(puts > 0.0, "no PUT reached the S3 server");
    // One record per commit attempt (its nodes: the accounts leaf, the
    // ledger leaf, now and then a split's new node) and, once its
    // garbage is due, one dead list; now and then a sweep's.
    assert!(per_commit <= 3.0, "{per_commit:.2} PUTs per commit attempt");

    // A commit that writes many nodes is still one PUT: 600 items into a
    // store of 16-item leaves write ~40-75 nodes.
    servers[0].create_store("bulk", json!({ "slot_length": 16 })).await;
    let ops: Vec<Value> = (0..600)
        .map(|i| json!({ "op": "put", "store": "bulk", "key": format!("{i:05}"), "value": i }))
        .collect();
    let before = counter(&servers, "sop_blob_requests_total{op=\"put\"}").await;
    let (status, body) = servers[1].post("/v1/batch", json!({ "ops": ops })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let bulk_puts = counter(&servers, "sop_blob_requests_total{op=\"put\"}").await - before;
    eprintln!("S3: a 600-item commit took {bulk_puts} PUTs");
    // (A dead list of an earlier commit's garbage may land meanwhile.)
    assert!((1.0..=4.0).contains(&bulk_puts), "{bulk_puts} PUTs for one commit of ~50 nodes");
    let (status, body) = servers[0]
        .post("/v1/batch", json!({ "ops": [{ "op": "get", "store": "bulk", "key": "00599" }] }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.to_string().contains("599"), "{body}");
}
