//! `sop-bench --cluster`: cluster mode's throughput with 1, 2 and 3
//! processes on one database (an etcd cluster and an S3 server started
//! here on loopback: moto when `SOP_MOTO_SERVER` names it, else a shared
//! directory), and what each commit costs: registry calls, blob requests
//! and bytes, and the node cache's hit rate. Each process is this binary
//! in child mode (`--cluster-child`), with its own caches, running bank
//! transfers (read two accounts, write both) from several tasks. Object
//! store requests are the blob store's own counts
//! (`sop_blob_requests_total{op}`, read from a recorder in each child):
//! record PUTs, dead lists and sweeps included.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::{Value, json};
use sop_btree::{Config, Database, ErrorKind, StoreOptions};
use sop_core::{
    BlobStore, Handle, Intent, IntentState, LogicalId, PhysicalId, PublishRequest, Registry, Result,
    StoreInfo, TxId,
};

const ACCOUNTS: u32 = 10_000;
const TASKS: usize = 8;

/// Runs the cluster benchmark: prints a Markdown table, returns the JSON.
pub(crate) fn run(secs: u64) -> std::result::Result<Value, String> {
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let dir = tempfile_dir()?;
        let etcd =
            sop_backends::LocalEtcd::start(&dir.join("etcd"), 3, &[]).await.map_err(|e| e.to_string())?;
        let s3 = std::env::var_os("SOP_MOTO_SERVER").map(|_| sop_backends::LocalS3::start(&dir.join("s3")));
        let (blobs, env, _s3) = match s3 {
            Some(Ok(s3)) => {
                s3.create_bucket("bench").map_err(|e| e.to_string())?;
                let env = s3.env();
                ("s3://bench/db".to_owned(), env, Some(s3))
            }
            Some(Err(e)) => return Err(format!("local S3: {e}")),
            None => (format!("file://{}", dir.join("blobs").display()), Vec::new(), None),
        };
        // Each round on a database of its own: the processes of a round
        // exit with their deferred deletions undone, and the next round
        // must not spend its time recovering them.
        let mut rows = Vec::new();
        let mut load = Value::Null;
        for procs in 1..=3usize {
            let registry = etcd.url(&format!("bench{procs}"));
            let blobs = format!("{blobs}/round{procs}");
            load = seed(&registry, &blobs, &env).await?;
            // All children first, then their reports: they run at once.
            let mut children = Vec::new();
            for _ in 0..procs {
                let exe = std::env::current_exe().map_err(|e| e.to_string())?;
                let child = std::process::Command::new(exe)
                    .args(["--cluster-child", &registry, &blobs, &secs.to_string()])
                    .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::inherit())
                    .spawn()
                    .map_err(|e| e.to_string())?;
                children.push(child);
            }
            let mut reports = Vec::new();
            for c in children {
                let out = c.wait_with_output().map_err(|e| e.to_string())?;
                let line = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("").to_owned();
                reports
                    .push(serde_json::from_str::<Value>(&line).map_err(|e| format!("child: {e}: {line:?}"))?);
            }
            rows.push(summarize(procs, secs, &reports));
        }
        let _ = std::fs::remove_dir_all(&dir);
        print_table(&rows, &blobs);
        println!(
            "\nloading: {} commits of 1 000 items, {:.1} nodes written and {:.2} PUTs per commit",
            load["seed_commits"], load["nodes_per_commit"].as_f64().unwrap_or(0.0), load["puts_per_commit"].as_f64().unwrap_or(0.0)
        );
        Ok(json!({ "cluster": rows, "load": load, "blobs": blobs, "etcd_members": 3, "tasks_per_process": TASKS }))
    })
}

fn tempfile_dir() -> std::result::Result<std::path::PathBuf, String> {
    let base = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| "target".into(), std::path::PathBuf::from);
    let dir = base.join("sop-bench-cluster");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

async fn open(
    registry: &str,
    blobs: &str,
    counters: &Arc<Counters>,
) -> std::result::Result<Database, String> {
    let dir = std::env::temp_dir();
    let parts =
        sop_backends::from_urls(&dir, Some(registry), Some(blobs)).await.map_err(|e| e.to_string())?;
    let reg = Arc::new(CountingRegistry { inner: parts.registry, c: counters.clone() });
    let blobs = Arc::new(CountingBlobs { inner: parts.blobs, c: counters.clone() });
    let mut config = Config::from_parts(reg, blobs, false);
    config.tx_timeout = Duration::from_secs(10);
    Database::open(config).await.map_err(|e| e.to_string())
}

/// Creates the accounts (in batches that fit etcd's transaction limit).
/// Returns the loading commits' costs (nodes written and PUTs per commit).
async fn seed(registry: &str, blobs: &str, env: &[(&str, String)]) -> std::result::Result<Value, String> {
    // The parent has no AWS_* variables of its own: a child seeds.
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = std::process::Command::new(exe)
        .args(["--cluster-child", registry, blobs, "seed"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err("seeding the accounts failed".into());
    }
    let line = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("").to_owned();
    serde_json::from_str(&line).map_err(|e| format!("seed: {e}: {line:?}"))
}

/// Installs a metrics recorder; returns a reader of the blob store's
/// request count for one operation (`sop_blob_requests_total{op}`).
fn record_requests() -> impl Fn(&str) -> u64 {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _ = metrics::set_global_recorder(recorder);
    move |op: &str| {
        let prefix = format!("sop_blob_requests_total{{op=\"{op}\"}} ");
        let text = handle.render();
        text.lines().find_map(|l| l.strip_prefix(&prefix)?.trim().parse::<f64>().ok()).map_or(0, |v| v as u64)
    }
}

/// Child mode: `--cluster-child REGISTRY BLOBS SECS|seed`.
pub(crate) fn child(args: &[String]) -> std::result::Result<(), String> {
    let [registry, blobs, what] = args else { return Err("--cluster-child REGISTRY BLOBS SECS|seed".into()) };
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let counters = Arc::new(Counters::default());
        let requests = record_requests();
        let db = open(registry, blobs, &counters).await?;
        if what == "seed" {
            db.create_store("accounts", StoreOptions::default()).await.map_err(|e| e.to_string())?;
            let (before, puts_before) = (counters.snapshot(), requests("put"));
            for batch in 0..ACCOUNTS / 1000 {
                db.run_write(move |tx| async move {
                    let s = tx.store::<u32, i64>("accounts").await?;
                    for a in batch * 1000..(batch + 1) * 1000 {
                        s.insert(&a, &100).await?;
                    }
                    Ok(())
                })
                .await
                .map_err(|e| e.to_string())?;
            }
            let commits = u64::from(ACCOUNTS / 1000);
            let nodes = (counters.snapshot()[3] - before[3]) as f64 / commits as f64;
            let puts = (requests("put") - puts_before) as f64 / commits as f64;
            println!("{}", json!({ "seed_commits": commits, "nodes_per_commit": nodes, "puts_per_commit": puts }));
            return db.close().await.map_err(|e| e.to_string());
        }
        let secs: u64 = what.parse().map_err(|_| format!("seconds: {what}"))?;
        let until = Instant::now() + Duration::from_secs(secs);
        let (commits, conflicts) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let before = counters.snapshot();
        let ops = ["put", "get", "delete", "list", "head"];
        let req_before: Vec<u64> = ops.iter().map(|op| requests(op)).collect();
        let cache_before = db.cache_stats();
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let (db, commits, conflicts) = (db.clone(), commits.clone(), conflicts.clone());
                tokio::spawn(async move {
                    let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ (std::process::id() as u64) << 8 ^ t as u64;
                    while Instant::now() < until {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        let (a, b) = ((seed % u64::from(ACCOUNTS)) as u32, ((seed >> 32) % u64::from(ACCOUNTS)) as u32);
                        if a == b {
                            continue;
                        }
                        let tx = db.begin_write().await.expect("begin");
                        let r = async {
                            let s = tx.store::<u32, i64>("accounts").await?;
                            let (x, y) = (s.get(&a).await?.unwrap_or(0), s.get(&b).await?.unwrap_or(0));
                            s.update(&a, &(x - 1)).await?;
                            s.update(&b, &(y + 1)).await?;
                            tx.commit().await
                        }
                        .await;
                        match r {
                            Ok(_) => commits.fetch_add(1, Ordering::Relaxed),
                            Err(e) if e.kind() == ErrorKind::Conflict => conflicts.fetch_add(1, Ordering::Relaxed),
                            Err(e) => panic!("transfer: {e}"),
                        };
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.map_err(|e| e.to_string())?;
        }
        let after = counters.snapshot();
        let cache = db.cache_stats();
        let d = |i: usize| after[i] - before[i];
        let req: serde_json::Map<String, Value> =
            ops.iter().zip(req_before).map(|(op, b)| ((*op).to_owned(), json!(requests(op) - b))).collect();
        let report = json!({
            "commits": commits.load(Ordering::Relaxed), "conflicts": conflicts.load(Ordering::Relaxed),
            "registry_calls": d(0), "registry_publishes": d(1), "registry_handle_reads": d(2),
            "blob_puts": d(3), "blob_put_bytes": d(4), "blob_gets": d(5), "blob_get_bytes": d(6), "blob_deletes": d(7),
            "cache_hits": cache.hits - cache_before.hits, "cache_misses": cache.misses - cache_before.misses,
            "requests": req,
        });
        println!("{report}");
        // Left to recovery: no wait for deferred deletions here.
        Ok(())
    })
}

fn summarize(procs: usize, secs: u64, reports: &[Value]) -> Value {
    let sum = |k: &str| reports.iter().map(|r| r[k].as_u64().unwrap_or(0)).sum::<u64>();
    let commits = sum("commits").max(1) as f64;
    let per = |k: &str| sum(k) as f64 / commits;
    let hits = sum("cache_hits") as f64;
    let requests: serde_json::Map<String, Value> = ["put", "get", "delete", "list", "head"]
        .iter()
        .map(|op| {
            let n: u64 = reports.iter().map(|r| r["requests"][op].as_u64().unwrap_or(0)).sum();
            ((*op).to_owned(), json!(n as f64 / commits))
        })
        .collect();
    json!({
        "processes": procs,
        "commits_per_s": sum("commits") as f64 / secs as f64,
        "conflict_rate": sum("conflicts") as f64 / (sum("commits") + sum("conflicts")).max(1) as f64,
        "registry_calls_per_commit": per("registry_calls"),
        "registry_publishes_per_commit": per("registry_publishes"),
        "handle_reads_per_commit": per("registry_handle_reads"),
        "nodes_written_per_commit": per("blob_puts"),
        "requests_per_commit": requests,
        "blob_put_bytes_per_commit": per("blob_put_bytes"),
        "blob_gets_per_commit": per("blob_gets"),
        "cache_hit_rate": hits / (hits + sum("cache_misses") as f64).max(1.0),
    })
}

fn print_table(rows: &[Value], blobs: &str) {
    println!("## cluster (3-member etcd on loopback, blobs {blobs}, {TASKS} tasks per process)\n");
    println!(
        "| processes | commits/s | conflicts | registry calls/commit | publishes/commit | handle reads/commit | nodes written/commit | PUTs/commit | PUT bytes/commit | GETs/commit | other requests/commit | cache hit rate |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
        let q = |op: &str| r["requests_per_commit"][op].as_f64().unwrap_or(0.0);
        println!(
            "| {} | {:.0} | {:.1} % | {:.1} | {:.2} | {:.1} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.1} % |",
            r["processes"],
            f("commits_per_s"),
            100.0 * f("conflict_rate"),
            f("registry_calls_per_commit"),
            f("registry_publishes_per_commit"),
            f("handle_reads_per_commit"),
            f("nodes_written_per_commit"),
            q("put"),
            f("blob_put_bytes_per_commit"),
            q("get"),
            q("delete") + q("list") + q("head"),
            100.0 * f("cache_hit_rate")
        );
    }
}

/// Calls and bytes, counted by the wrappers below.
#[derive(Debug, Default)]
struct Counters {
    registry_calls: AtomicU64,
    publishes: AtomicU64,
    handle_reads: AtomicU64,
    puts: AtomicU64,
    put_bytes: AtomicU64,
    gets: AtomicU64,
    get_bytes: AtomicU64,
    deletes: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> [u64; 8] {
        [
            &self.registry_calls,
            &self.publishes,
            &self.handle_reads,
            &self.puts,
            &self.put_bytes,
            &self.gets,
            &self.get_bytes,
            &self.deletes,
        ]
        .map(|c| c.load(Ordering::Relaxed))
    }
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

#[derive(Debug)]
struct CountingRegistry {
    inner: Arc<dyn Registry>,
    c: Arc<Counters>,
}

#[async_trait]
impl Registry for CountingRegistry {
    async fn get_handles(&self, ids: &[LogicalId]) -> Result<Vec<Option<Handle>>> {
        bump(&self.c.registry_calls, 1);
        bump(&self.c.handle_reads, 1);
        self.inner.get_handles(ids).await
    }
    async fn publish(&self, request: &PublishRequest) -> Result<()> {
        bump(&self.c.registry_calls, 1);
        bump(&self.c.publishes, 1);
        self.inner.publish(request).await
    }
    fn publish_limit(&self, request: &PublishRequest) -> Result<()> {
        self.inner.publish_limit(request)
    }
    async fn create_store(&self, info: &StoreInfo, root: &Handle) -> Result<()> {
        bump(&self.c.registry_calls, 1);
        self.inner.create_store(info, root).await
    }
    async fn get_store(&self, name: &str) -> Result<Option<StoreInfo>> {
        bump(&self.c.registry_calls, 1);
        self.inner.get_store(name).await
    }
    async fn list_stores(&self) -> Result<Vec<StoreInfo>> {
        bump(&self.c.registry_calls, 1);
        self.inner.list_stores().await
    }
    async fn remove_store(&self, name: &str) -> Result<StoreInfo> {
        bump(&self.c.registry_calls, 1);
        self.inner.remove_store(name).await
    }
    async fn put_intent(&self, intent: &Intent) -> Result<()> {
        bump(&self.c.registry_calls, 1);
        self.inner.put_intent(intent).await
    }
    async fn get_intent(&self, tx_id: TxId) -> Result<Option<Intent>> {
        bump(&self.c.registry_calls, 1);
        self.inner.get_intent(tx_id).await
    }
    async fn list_intents(&self, created_before_ms: u64) -> Result<Vec<Intent>> {
        bump(&self.c.registry_calls, 1);
        self.inner.list_intents(created_before_ms).await
    }
    async fn damaged_intents(&self) -> Result<Vec<String>> {
        self.inner.damaged_intents().await
    }
    async fn remove_intent(&self, tx_id: TxId) -> Result<()> {
        bump(&self.c.registry_calls, 1);
        self.inner.remove_intent(tx_id).await
    }
    async fn abort_intent(&self, tx_id: TxId) -> Result<Option<IntentState>> {
        bump(&self.c.registry_calls, 1);
        self.inner.abort_intent(tx_id).await
    }
    async fn list_handles(&self) -> Result<Vec<Handle>> {
        bump(&self.c.registry_calls, 1);
        self.inner.list_handles().await
    }
}

#[derive(Debug)]
struct CountingBlobs {
    inner: Arc<dyn BlobStore>,
    c: Arc<Counters>,
}

#[async_trait]
impl BlobStore for CountingBlobs {
    async fn put(&self, id: PhysicalId, data: Bytes) -> Result<()> {
        bump(&self.c.puts, 1);
        bump(&self.c.put_bytes, data.len() as u64);
        self.inner.put(id, data).await
    }
    async fn get(&self, id: PhysicalId) -> Result<Bytes> {
        bump(&self.c.gets, 1);
        let b = self.inner.get(id).await?;
        bump(&self.c.get_bytes, b.len() as u64);
        Ok(b)
    }
    async fn delete(&self, id: PhysicalId) -> Result<()> {
        bump(&self.c.deletes, 1);
        self.inner.delete(id).await
    }
    async fn put_many(&self, blobs: Vec<(PhysicalId, Bytes)>) -> Result<()> {
        bump(&self.c.puts, blobs.len() as u64);
        bump(&self.c.put_bytes, blobs.iter().map(|(_, b)| b.len() as u64).sum());
        self.inner.put_many(blobs).await
    }
    async fn delete_many(&self, ids: &[PhysicalId]) -> Result<()> {
        bump(&self.c.deletes, ids.len() as u64);
        self.inner.delete_many(ids).await
    }
    async fn list(&self) -> Result<Vec<PhysicalId>> {
        self.inner.list().await
    }
    fn allocate(&self, lens: &[usize]) -> Vec<PhysicalId> {
        self.inner.allocate(lens)
    }
    async fn reclaim(&self) -> Result<()> {
        self.inner.reclaim().await
    }
}
