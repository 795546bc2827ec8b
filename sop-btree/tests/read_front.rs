//! Attacks on the handle cache's fronts: a read-only transaction resolves
//! a node id to its handle and its decoded node in one lookup. The
//! invariant, from a user's side: a front never serves a node other than
//! the one its handle's blob holds, so a reader never sees a value older
//! than the last commit before it began (nor a value a later commit wrote
//! while its commit still succeeds), whatever the cache size, splits,
//! merges, delta chains and garbage collection did in between.

mod common;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sop_btree::{Config, Database, StoreOptions};

async fn open(cache_bytes: usize) -> Database {
    let mut config = Config::memory();
    config.gc_grace = Duration::ZERO;
    config.cache.memory_bytes = cache_bytes;
    let db = Database::open(config).await.unwrap();
    // Small leaves: every round splits, merges and rewrites many of them.
    let opts = StoreOptions { slot_length: 8, ..StoreOptions::default() };
    db.create_store("s", opts).await.unwrap();
    db
}

/// A tiny deterministic generator (the test needs no crate for it).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn key(i: u64) -> Vec<u8> {
    format!("k{i:04}").into_bytes()
}

/// Every key of the key space read by a fresh read-only transaction, by
/// point gets and by scans both ways, against the model.
async fn assert_reads(db: &Database, model: &BTreeMap<Vec<u8>, Vec<u8>>, keys: u64, round: usize) {
    let tx = db.begin_read().await.unwrap();
    let s = tx.bytes_store("s").await.unwrap();
    for i in 0..keys {
        let got = s.get(&key(i)).await.unwrap();
        assert_eq!(got.as_deref(), model.get(&key(i)).map(Vec::as_slice), "round {round}, key {i}");
    }
    let mut fwd = Vec::new();
    let mut cur = s.range(Bound::Unbounded, Bound::Unbounded);
    while let Some((k, v)) = cur.next().await.unwrap() {
        fwd.push((k.to_vec(), v.to_vec()));
    }
    let want: Vec<(Vec<u8>, Vec<u8>)> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(fwd, want, "round {round}: forward scan");
    let mut rev = Vec::new();
    let mut cur = s.range_rev(Bound::Unbounded, Bound::Unbounded);
    while let Some((k, v)) = cur.next().await.unwrap() {
        rev.push((k.to_vec(), v.to_vec()));
    }
    rev.reverse();
    assert_eq!(rev, want, "round {round}: reverse scan");
    tx.commit().await.expect("a read-only transaction with no concurrent writer conflicted");
}

/// Rounds of random inserts, updates and removes, each followed by a
/// collection and a full read: with a cache big enough to keep every front,
/// and with one so small (a 1 KiB share of fronts per shard: one to three
/// leaves) that fronts are dropped and nodes evicted all the time.
#[tokio::test]
async fn readers_see_every_commit_through_fronts() {
    const KEYS: u64 = 300;
    for cache_bytes in [64 << 20, 256 << 10] {
        let db = open(cache_bytes).await;
        let mut model = BTreeMap::new();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ cache_bytes as u64);
        for round in 0..40 {
            let mut ops = Vec::new();
            for _ in 0..1 + rng.below(60) {
                let k = key(rng.below(KEYS));
                // Removes outweigh puts every fourth round, so leaves merge too.
                let put = rng.below(4) < if round % 4 == 3 { 1 } else { 3 };
                let v = put.then(|| format!("v{round}-{}", rng.below(1000)).into_bytes());
                ops.push((k, v));
            }
            let batch = ops.clone();
            db.run_write(move |tx| {
                let batch = batch.clone();
                async move {
                    let s = tx.bytes_store("s").await?;
                    for (k, v) in &batch {
                        match v {
                            Some(v) => s.upsert(k, v).await?,
                            None => s.remove(k).await.map(|_| ())?,
                        }
                    }
                    Ok(())
                }
            })
            .await
            .unwrap();
            for (k, v) in ops {
                match v {
                    Some(v) => model.insert(k, v),
                    None => model.remove(&k),
                };
            }
            db.flush_gc().await.unwrap();
            assert_reads(&db, &model, KEYS, round).await;
        }
        common::assert_healthy(&db).await;
    }
}

/// A bank under concurrent transfers: every read-only transaction that
/// commits saw balances that add up to the total. A front that served a
/// node of another version than its handle's would show a torn sum.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn committed_readers_never_see_a_torn_transfer() {
    const ACCOUNTS: u64 = 64;
    const TOTAL: u64 = ACCOUNTS * 100;
    for cache_bytes in [64 << 20, 256 << 10] {
        let db = open(cache_bytes).await;
        db.run_write(|tx| async move {
            let s = tx.bytes_store("s").await?;
            for i in 0..ACCOUNTS {
                s.insert(&key(i), &100u64.to_be_bytes()).await?;
            }
            Ok(())
        })
        .await
        .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (db, stop) = (db.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut rng, mut transfers) = (Rng(7), 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let (a, b) = (key(rng.below(ACCOUNTS)), key(rng.below(ACCOUNTS)));
                    db.run_write(move |tx| {
                        let (a, b) = (a.clone(), b.clone());
                        async move {
                            let s = tx.bytes_store("s").await?;
                            let read = |v: Option<bytes::Bytes>| {
                                u64::from_be_bytes(v.unwrap()[..8].try_into().unwrap())
                            };
                            let (x, y) = (read(s.get(&a).await?), read(s.get(&b).await?));
                            if a != b && x > 0 {
                                s.update(&a, &(x - 1).to_be_bytes()).await?;
                                s.update(&b, &(y + 1).to_be_bytes()).await?;
                            }
                            Ok(())
                        }
                    })
                    .await
                    .unwrap();
                    transfers += 1;
                }
                transfers
            })
        };
        let (mut committed, mut conflicts) = (0, 0);
        while committed < 150 {
            let tx = db.begin_read().await.unwrap();
            let s = tx.bytes_store("s").await.unwrap();
            let mut sum = 0;
            for i in 0..ACCOUNTS {
                let v = s.get(&key(i)).await.unwrap().expect("an account vanished");
                sum += u64::from_be_bytes(v[..8].try_into().unwrap());
                if i % 16 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            match tx.commit().await {
                Ok(_) => {
                    assert_eq!(sum, TOTAL, "a committed reader saw a torn transfer");
                    committed += 1;
                }
                Err(e) if e.is_conflict() => conflicts += 1,
                Err(e) => panic!("{e}"),
            }
        }
        stop.store(true, Ordering::Relaxed);
        let transfers = writer.await.unwrap();
        // The readers ran against live transfers, not after them.
        assert!(transfers > 10 && conflicts > 0, "{transfers} transfers, {conflicts} conflicts");
        common::assert_healthy(&db).await;
    }
}

/// A read-only transaction reads a leaf (through its front), a writer
/// changes an item it read there, and the transaction reads the leaf
/// again: it reads the version it first read (a repeatable read), and its
/// commit conflicts.
#[tokio::test]
async fn a_leaf_read_again_is_the_version_first_read() {
    let db = open(64 << 20).await;
    let put = |k: &'static [u8], v: &'static [u8]| {
        let db = db.clone();
        async move {
            db.run_write(move |tx| async move { tx.bytes_store("s").await?.upsert(k, v).await })
                .await
                .unwrap();
        }
    };
    // A read-only pass attaches the leaf's front, as any reader would.
    let warm = || {
        let db = db.clone();
        async move {
            db.run_read(|tx| async move { tx.bytes_store("s").await?.get(b"b").await }).await.unwrap();
        }
    };
    put(b"b", b"1").await;
    for second in [&b"b"[..], b"a"] {
        put(b"a", b"1").await;
        warm().await;
        let tx = db.begin_read().await.unwrap();
        let s = tx.bytes_store("s").await.unwrap();
        assert_eq!(s.get(b"a").await.unwrap().as_deref(), Some(&b"1"[..]));
        put(b"a", b"2").await;
        warm().await;
        assert_eq!(s.get(second).await.unwrap().as_deref(), Some(&b"1"[..]), "not the version first read");
        let e = tx.commit().await.expect_err("a read of the old state committed after the write");
        assert!(e.is_conflict(), "{e}");
    }
}

/// Between two reads of one key in a read-only transaction, writers split
/// the key's leaf (inserting beside it) or empty its neighbourhood (the
/// leaf borrows or merges away). The second read still finds the key: the
/// leaf is read as first read, never its newer version through the
/// parent as first read. The key never changed, so the commit succeeds.
#[tokio::test]
async fn a_key_read_twice_survives_a_split_or_merge_of_its_leaf_in_between() {
    let cases = ["split before", "split after", "merge left", "merge right", "merge both"];
    // Every key of the middle as the one read: wherever the leaves' bounds
    // fall, some cases move it to another leaf, or merge its leaf away.
    for (restructure, target) in cases.iter().flat_map(|&c| (8..32).map(move |t| (c, t))) {
        let db = open(64 << 20).await;
        db.run_write(|tx| async move {
            let s = tx.bytes_store("s").await?;
            for i in 0..40 {
                s.insert(&key(i), b"v").await?;
            }
            Ok(())
        })
        .await
        .unwrap();
        let all_keys = |db: Database| async move {
            db.run_read(|tx| async move {
                let s = tx.bytes_store("s").await?;
                for i in 0..40 {
                    s.get(&key(i)).await?;
                }
                Ok(())
            })
            .await
            .unwrap();
        };
        all_keys(db.clone()).await; // every leaf gets its front
        let tx = db.begin_read().await.unwrap();
        let s = tx.bytes_store("s").await.unwrap();
        assert_eq!(s.get(&key(target)).await.unwrap().as_deref(), Some(&b"v"[..]));
        db.run_write(move |tx| async move {
            let s = tx.bytes_store("s").await?;
            let (left, right) = match restructure {
                "merge left" => (target - 8..target, 0..0),
                "merge right" => (0..0, target + 1..target + 8),
                "merge both" => (target - 8..target, target + 1..target + 8),
                _ => (0..0, 0..0),
            };
            for i in left.chain(right) {
                s.remove(&key(i)).await?;
            }
            // Thirty keys just below (or above) the key: its leaf splits,
            // and the key moves to another leaf (or stays).
            let beside = if restructure == "split before" { target - 1 } else { target };
            for j in 0..30 * u64::from(restructure.starts_with("split")) {
                s.insert(format!("k{beside:04}-{j:02}").as_bytes(), b"w").await?;
            }
            Ok(())
        })
        .await
        .unwrap();
        all_keys(db.clone()).await; // the new leaves get fronts too
        let case = format!("{restructure}, key {target}");
        let again = s.get(&key(target)).await.unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(again.as_deref(), Some(&b"v"[..]), "{case}: a key that never changed read as absent");
        let done = tx.commit().await;
        done.unwrap_or_else(|e| panic!("{case}: a reader of an unchanged key failed: {e}"));
        common::assert_healthy(&db).await;
    }
}

/// Warm reads never wait, yet a task doing nothing else still lets the
/// other tasks of its worker run (tokio's cooperative budget is spent on
/// every call, as a lock's future spends it): on a runtime of one thread, a
/// reader looping until another task sets a flag ends. Without the budget
/// the reader looped forever and the flag's task never ran (seen as
/// readers starving writers in `tests/isolation.rs`).
#[test]
fn a_reader_of_warm_nodes_lets_the_other_tasks_of_its_thread_run() {
    for scan in [false, true] {
        let (ended, ends) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let reads = rt.block_on(async {
                let db = open(64 << 20).await;
                let tx = db.begin_write().await.unwrap();
                let s = tx.bytes_store("s").await.unwrap();
                for k in 0..64u8 {
                    s.upsert(&[k], b"v").await.unwrap();
                }
                tx.commit().await.unwrap();
                let flag = Arc::new(AtomicBool::new(false));
                let seen = flag.clone();
                let reader = tokio::spawn(async move {
                    let mut reads = 0u64;
                    while !seen.load(Ordering::Relaxed) {
                        let tx = db.begin_read().await.unwrap();
                        let s = tx.bytes_store("s").await.unwrap();
                        if scan {
                            let mut cur = s.range(Bound::Unbounded, Bound::Unbounded);
                            while cur.next_ref().await.unwrap().is_some() {}
                        } else {
                            assert!(s.get(&[7]).await.unwrap().is_some());
                        }
                        tx.commit().await.unwrap();
                        reads += 1;
                    }
                    reads
                });
                tokio::spawn(async move { flag.store(true, Ordering::Relaxed) });
                reader.await.unwrap()
            });
            let _ = ended.send(reads);
        });
        let reads = ends.recv_timeout(Duration::from_secs(60));
        assert!(reads.is_ok(), "scan {scan}: the reader never yielded, so the other task never ran");
    }
}
