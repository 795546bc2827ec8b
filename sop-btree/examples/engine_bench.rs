//! The engine-only benchmark: insert, point-read, scan and delete phases on
//! the embedded default, printing items/s. Run through `cargo xtask bench`
//! (`--quick`: 1/10 size; `--smoke`: a few seconds, for CI).

use std::ops::Bound;
use std::time::{Duration, Instant};

use sop_btree::{Config, Database, EmbeddedBlobs, StoreOptions};

struct Args {
    items: u64,
    batch: u64,
    reads_per_tx: u64,
}

fn parse() -> Args {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let items = if argv.iter().any(|a| a == "--smoke") {
        5_000
    } else if argv.iter().any(|a| a == "--quick") {
        100_000
    } else {
        1_000_000
    };
    Args { items, batch: 1_000, reads_per_tx: 100 }
}

/// xorshift64*: deterministic keys without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn key(i: u64) -> [u8; 16] {
    let mut r = Rng(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&r.next().to_le_bytes());
    k[8..].copy_from_slice(&i.to_le_bytes());
    k
}

fn report(phase: &str, items: u64, elapsed: Duration) {
    let rate = items as f64 / elapsed.as_secs_f64();
    println!("| {phase:<58} | {items:>9} | {:>9.2} | {rate:>12.0} |", elapsed.as_secs_f64());
}

async fn open(dir: &std::path::Path, sync: bool, blobs: EmbeddedBlobs) -> Database {
    let mut config = Config::embedded(dir);
    config.sync = sync;
    config.embedded_blobs = blobs;
    config.cache.memory_bytes = 1 << 30;
    Database::open(config).await.expect("open")
}

async fn insert(db: &Database, n: u64, batch: u64) -> Duration {
    let value = [7u8; 100];
    let start = Instant::now();
    for chunk in 0..n.div_ceil(batch) {
        let tx = db.begin_write().await.expect("begin");
        let s = tx.bytes_store("bench").await.expect("store");
        for i in chunk * batch..((chunk + 1) * batch).min(n) {
            s.insert(&key(i), &value).await.expect("insert");
        }
        tx.commit().await.expect("commit");
    }
    start.elapsed()
}

async fn point_reads(db: &Database, n: u64, per_tx: u64) -> Duration {
    let mut rng = Rng(42);
    let start = Instant::now();
    for _ in 0..n.div_ceil(per_tx) {
        let tx = db.begin_read().await.expect("begin");
        let s = tx.bytes_store("bench").await.expect("store");
        for _ in 0..per_tx {
            let v = s.get(&key(rng.next() % n)).await.expect("get");
            assert!(v.is_some(), "every key read exists");
        }
        tx.commit().await.expect("commit");
    }
    start.elapsed()
}

async fn scan(db: &Database, n: u64) -> Duration {
    let start = Instant::now();
    let tx = db.begin_read().await.expect("begin");
    let s = tx.bytes_store("bench").await.expect("store");
    let mut cur = s.range(Bound::Unbounded, Bound::Unbounded);
    let mut seen = 0;
    while cur.next().await.expect("next").is_some() {
        seen += 1;
    }
    assert_eq!(seen, n);
    tx.commit().await.expect("commit");
    start.elapsed()
}

async fn delete(db: &Database, n: u64, batch: u64) -> Duration {
    let start = Instant::now();
    for chunk in 0..n.div_ceil(batch) {
        let tx = db.begin_write().await.expect("begin");
        let s = tx.bytes_store("bench").await.expect("store");
        for i in chunk * batch..((chunk + 1) * batch).min(n) {
            assert!(s.remove(&key(i)).await.expect("remove"));
        }
        tx.commit().await.expect("commit");
    }
    start.elapsed()
}

#[tokio::main]
async fn main() {
    let args = parse();
    let root = std::env::temp_dir().join(format!("sop-engine-bench-{}", std::process::id()));
    let n = args.items;
    println!("SOP-rs engine benchmark: {n} items, 16-byte random keys, 100-byte values, embedded default");
    println!("| phase | items | seconds | items/s |");
    println!("|---|---:|---:|---:|");
    let mut opts = StoreOptions::default();
    if let Some(slot) = std::env::var("SOP_BENCH_SLOT").ok().and_then(|s| s.parse().ok()) {
        opts.slot_length = slot;
    }
    println!("slot length {}", opts.slot_length);
    // SOP_BENCH_ONLY_BIG_TX=1 runs only the one-transaction phases (profiling).
    let only_big = std::env::var_os("SOP_BENCH_ONLY_BIG_TX").is_some();
    let placements: &[EmbeddedBlobs] =
        if only_big { &[] } else { &[EmbeddedBlobs::Directory, EmbeddedBlobs::Registry] };
    for &blobs in placements {
        let db = open(&root.join(format!("{blobs:?}")), true, blobs).await;
        db.create_store("bench", opts).await.expect("create");
        let tag = format!("blobs: {blobs:?}");
        report(&format!("insert, 1000/tx, durable ({tag})"), n, insert(&db, n, args.batch).await);
        report(
            &format!("point reads, 100/read tx, warm ({tag})"),
            n,
            point_reads(&db, n, args.reads_per_tx).await,
        );
        report(&format!("full scan, one read tx ({tag})"), n, scan(&db, n).await);
        report(&format!("delete, 1000/tx, durable ({tag})"), n, delete(&db, n, args.batch).await);
        db.close().await.expect("close");
    }
    {
        let db = open(&root.join("nosync"), false, EmbeddedBlobs::Registry).await;
        db.create_store("bench", opts).await.expect("create");
        report("insert, one transaction, no fsync (Go's setup)", n, insert(&db, n, n).await);
        report("point reads, one read tx, no fsync", n, point_reads(&db, n, n).await);
        db.close().await.expect("close");
    }
    let _ = std::fs::remove_dir_all(&root);
}
