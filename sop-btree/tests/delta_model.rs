//! Many small commits concentrated on a few leaves (long delta chains,
//! chain restarts, consolidations) against a `BTreeMap` model: keys of
//! every length around eight bytes with 0x00/0xff bytes (one of them
//! empty), keys put, deleted and put again across commits, deletes of
//! keys never held, a writer reading its own writes and the leaf as read;
//! every read (get, scans both ways with every kind of bound, count)
//! checked, the database reopened now and then (cold chains), with a
//! default and a tiny cache.

mod common;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::attack::Rng;
use common::{assert_healthy, bound, model_range, small};
use sop_btree::{Config, Database};
use sop_cache::CacheConfig;
use sop_core::{BlobStore, DeltaOp, LeafDelta, Node};
use sop_registry::MemRegistry;
use sop_store::ObjectBlobStore;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// 300 distinct keys of 0..=12 bytes over {0x00, 0x01, 0x80, 0xff}, sorted.
fn keys(rng: &mut Rng) -> Vec<Vec<u8>> {
    const ALPHABET: [u8; 4] = [0x00, 0x01, 0x80, 0xff];
    let mut set = std::collections::BTreeSet::new();
    set.insert(Vec::new());
    while set.len() < 300 {
        let len = rng.below(13) as usize;
        set.insert((0..len).map(|_| ALPHABET[rng.below(4) as usize]).collect::<Vec<u8>>());
    }
    set.into_iter().collect()
}

fn value(rng: &mut Rng, tag: u64) -> Vec<u8> {
    let len = match rng.below(20) {
        0 => 1500 + rng.below(500) as usize, // out of the node (threshold 1024)
        1 => 0,
        _ => rng.below(120) as usize,
    };
    let mut v = tag.to_be_bytes().to_vec();
    v.resize(len.max(8), (tag % 251) as u8);
    v.truncate(len);
    v
}

async fn open(registry: &Arc<MemRegistry>, blobs: &Arc<ObjectBlobStore>, tiny_cache: bool) -> Database {
    open_with(registry, blobs, tiny_cache, true).await
}

/// `exclusive: false` for databases that share the registry while open.
async fn open_with(
    registry: &Arc<MemRegistry>,
    blobs: &Arc<ObjectBlobStore>,
    tiny_cache: bool,
    exclusive: bool,
) -> Database {
    let mut config = Config::from_parts(registry.clone(), blobs.clone(), exclusive);
    config.gc_grace = Duration::ZERO;
    if tiny_cache {
        // A disk tier under it when SOP_DELTA_DISK is set: entries come
        // back from disk merged only (no layers).
        let disk = std::env::var_os("SOP_DELTA_DISK").map(|dir| sop_cache::DiskTier {
            dir: std::path::PathBuf::from(dir).join(format!("{:x}", Arc::as_ptr(blobs) as usize)),
            capacity_bytes: 16 << 20,
        });
        config.cache = CacheConfig { memory_bytes: 8 << 10, disk };
    }
    Database::open(config).await.unwrap()
}

fn pairs(rows: Vec<(Bytes, Bytes)>) -> Vec<(Vec<u8>, Vec<u8>)> {
    rows.into_iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
}

/// Where two lists first differ (the whole lists are long).
fn first_difference(got: &[(Vec<u8>, Vec<u8>)], want: &[(Vec<u8>, Vec<u8>)]) -> String {
    let i = got.iter().zip(want).position(|(g, w)| g != w).unwrap_or(got.len().min(want.len()));
    let short = |e: Option<&(Vec<u8>, Vec<u8>)>| {
        e.map(|(k, v)| format!("{k:?} => {} bytes {:?}..", v.len(), &v[..v.len().min(10)]))
    };
    format!(
        "{} items, {} expected; at {i}: got {:?}, want {:?}",
        got.len(),
        want.len(),
        short(got.get(i)),
        short(want.get(i))
    )
}

fn same(got: &[(Vec<u8>, Vec<u8>)], want: &[(Vec<u8>, Vec<u8>)], what: &str) {
    assert!(got == want, "{what}: {}", first_difference(got, want));
}

type Reads = (
    Vec<(Vec<u8>, Vec<u8>)>,
    Vec<(Vec<u8>, Vec<u8>)>,
    u64,
    Vec<Option<Vec<u8>>>,
    Vec<(Vec<(Vec<u8>, Vec<u8>)>, Vec<(Vec<u8>, Vec<u8>)>)>,
);

/// Full scans both ways, the count, gets of every key and `ranges` random
/// bounded scans both ways, in one read transaction (retried when it
/// conflicts: another database's commit under it), then checked.
async fn check_reads(
    db: &Database,
    model: &Model,
    pool: &[Vec<u8>],
    rng: &mut Rng,
    ranges: usize,
    what: &str,
) {
    let bounds: Vec<(usize, usize, u8, u8)> = (0..ranges)
        .map(|_| {
            let a = rng.below(pool.len() as u64) as usize;
            let b = (a + rng.below(40) as usize).min(pool.len() - 1);
            (a, b, rng.below(3) as u8, rng.below(3) as u8)
        })
        .collect();
    let reads: Reads = db
        .run_read(|tx| {
            let bounds = bounds.clone();
            async move {
                let s = tx.bytes_store("s").await?;
                let fwd = pairs(s.range(Bound::Unbounded, Bound::Unbounded).take(10_000).await?);
                let mut rev = pairs(s.range_rev(Bound::Unbounded, Bound::Unbounded).take(10_000).await?);
                rev.reverse();
                let count = s.count().await?;
                let mut gets = Vec::new();
                for k in pool {
                    gets.push(s.get(k).await?.map(|v| v.to_vec()));
                }
                let mut scans = Vec::new();
                for (a, b, ka, kb) in bounds {
                    let (lo, hi) = (bound(ka, &pool[a]), bound(kb, &pool[b]));
                    let f = pairs(s.range(lo, hi).take(10_000).await?);
                    let mut r = pairs(s.range_rev(lo, hi).take(10_000).await?);
                    r.reverse();
                    scans.push((f, r));
                }
                Ok((fwd, rev, count, gets, scans))
            }
        })
        .await
        .unwrap();
    let (fwd, rev, count, gets, scans) = reads;
    let all: Vec<(Vec<u8>, Vec<u8>)> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    same(&fwd, &all, &format!("{what}: forward scan"));
    same(&rev, &all, &format!("{what}: reverse scan"));
    assert_eq!(count, model.len() as u64, "{what}: count");
    for (k, got) in pool.iter().zip(gets) {
        assert!(
            got.as_ref() == model.get(k),
            "{what}: get {k:?}: {:?} want {:?}",
            got.map(|v| v.len()),
            model.get(k).map(Vec::len)
        );
    }
    for ((a, b, ka, kb), (f, r)) in bounds.into_iter().zip(scans) {
        let (lo, hi) = (bound(ka, &pool[a]), bound(kb, &pool[b]));
        let want = model_range(model, lo, hi);
        same(&f, &want, &format!("{what}: range {lo:?}..{hi:?}"));
        same(&r, &want, &format!("{what}: reverse range {lo:?}..{hi:?}"));
    }
}

/// Deltas with no chain (first deltas and restarts) hold no delete of a
/// key their base lacks (`Layers::folded`'s promise): counts them.
async fn stray_deletes(blobs: &ObjectBlobStore) -> usize {
    let mut stray = 0;
    for id in blobs.list().await.unwrap() {
        let b: Bytes = blobs.get(id).await.unwrap();
        if !LeafDelta::is_delta(&b) {
            continue;
        }
        let d = LeafDelta::decode(&b).unwrap();
        if !d.chain.is_empty() {
            continue;
        }
        let Ok(base) = blobs.get(d.base).await else { continue };
        let Ok(Node::Leaf { items }) = Node::decode(&base) else { continue };
        for op in &d.ops {
            if let DeltaOp::Delete(k) = op
                && items.binary_search_by(|i| i.key.as_ref().cmp(k)).is_err()
            {
                stray += 1;
            }
        }
    }
    stray
}

/// (delta blobs, the longest chain among them, full blobs).
async fn chains(blobs: &ObjectBlobStore) -> (usize, usize, usize) {
    let (mut deltas, mut longest, mut full) = (0, 0, 0);
    for id in blobs.list().await.unwrap() {
        let b: Bytes = blobs.get(id).await.unwrap();
        if LeafDelta::is_delta(&b) {
            deltas += 1;
            longest = longest.max(LeafDelta::decode(&b).unwrap().chain.len() + 1);
        } else {
            full += 1;
        }
    }
    (deltas, longest, full)
}

async fn run(seed: u64, tiny_cache: bool, commits: u32) -> usize {
    let mut rng = Rng(seed);
    let pool = keys(&mut rng);
    let (registry, blobs) = (Arc::new(MemRegistry::new()), Arc::new(ObjectBlobStore::memory()));
    let mut db = open(&registry, &blobs, tiny_cache).await;
    // 300 keys, leaves of up to 160 items: two or three leaves.
    db.create_store("s", small(160)).await.unwrap();
    let mut model = Model::new();
    // A load of half the keys.
    {
        let tx = db.begin_write().await.unwrap();
        let s = tx.bytes_store("s").await.unwrap();
        for (i, k) in pool.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
            let v = value(&mut rng, i as u64);
            s.upsert(k, &v).await.unwrap();
            model.insert(k.clone(), v);
        }
        tx.commit().await.unwrap();
    }
    let mut stray = 0;
    let (mut seen_longest, mut last_longest, mut restarts, mut consolidations) = (0, 0, 0, 0);
    for c in 0..commits {
        // Most commits change a window of 30 keys (one leaf), the window
        // moving now and then.
        let window = (c / 97) as usize * 61 % (pool.len() - 30);
        let pick = |rng: &mut Rng| -> usize {
            if rng.below(8) == 0 {
                rng.below(pool.len() as u64) as usize
            } else {
                window + rng.below(30) as usize
            }
        };
        let tx = db.begin_write().await.unwrap();
        let s = tx.bytes_store("s").await.unwrap();
        let mut local = model.clone();
        let ops = if rng.below(25) == 0 { 10 + rng.below(30) } else { 1 + rng.below(4) };
        for _ in 0..ops {
            let k = &pool[pick(&mut rng)];
            // Read first: the leaf as read (through its delta's layers)
            // and this transaction's own writes.
            if rng.below(2) == 0 {
                let probe = &pool[pick(&mut rng)];
                assert_eq!(
                    s.get(probe).await.unwrap().map(|v| v.to_vec()),
                    local.get(probe).cloned(),
                    "commit {c}: a writer's get of {probe:?}"
                );
            }
            match rng.below(10) {
                0..=3 => {
                    let tag = u64::from(c) << 8 | rng.below(256);
                    let v = value(&mut rng, tag);
                    s.upsert(k, &v).await.unwrap();
                    local.insert(k.clone(), v);
                }
                4..=6 => {
                    let had = s.remove(k).await.unwrap();
                    assert_eq!(had, local.remove(k).is_some(), "commit {c}: remove {k:?}");
                }
                7 => {
                    // Put and delete again in one transaction.
                    let v = value(&mut rng, u64::from(c));
                    s.upsert(k, &v).await.unwrap();
                    assert!(s.remove(k).await.unwrap());
                    local.remove(k);
                }
                8 => {
                    // Delete and put again in one transaction.
                    let had = s.remove(k).await.unwrap();
                    assert_eq!(had, local.contains_key(k), "commit {c}: remove {k:?}");
                    let v = value(&mut rng, u64::from(c) + 7);
                    s.upsert(k, &v).await.unwrap();
                    local.insert(k.clone(), v);
                }
                _ => {
                    assert_eq!(s.count().await.unwrap(), local.len() as u64, "commit {c}: a writer's count");
                    let a = pick(&mut rng);
                    let b = (a + rng.below(20) as usize).min(pool.len() - 1);
                    let (lo, hi) = (bound(rng.below(3) as u8, &pool[a]), bound(rng.below(3) as u8, &pool[b]));
                    let got = pairs(s.range(lo, hi).take(10_000).await.unwrap());
                    assert_eq!(got, model_range(&local, lo, hi), "commit {c}: a writer's scan");
                }
            }
        }
        if rng.below(30) == 0 {
            tx.rollback().await;
        } else {
            tx.commit().await.unwrap();
            model = local;
        }
        db.flush_gc().await.unwrap();
        let (deltas, longest, _) = chains(&blobs).await;
        assert!(longest <= 16, "commit {c}: a chain of {longest} blobs");
        seen_longest = seen_longest.max(longest);
        restarts += usize::from(longest < last_longest && longest > 0);
        consolidations += usize::from(longest == 0 && last_longest > 0);
        last_longest = longest;
        let _ = deltas;
        if c % 10 == 9 {
            check_reads(&db, &model, &pool, &mut rng, 4, &format!("seed {seed:x} commit {c}")).await;
        } else {
            // A point read of a key of the window by a reader.
            let k = pool[window + rng.below(30) as usize].clone();
            let got = db.run_read(|tx| {
                let k = k.clone();
                async move { tx.bytes_store("s").await?.get(&k).await }
            });
            assert_eq!(got.await.unwrap().map(|v| v.to_vec()), model.get(&k).cloned(), "commit {c}: get");
        }
        if c % 50 == 49 {
            db.flush_gc().await.unwrap();
            assert_healthy(&db).await;
            stray += stray_deletes(&blobs).await;
            db.close().await.unwrap();
            drop(db);
            db = open(&registry, &blobs, tiny_cache).await;
            check_reads(&db, &model, &pool, &mut rng, 8, &format!("seed {seed:x} commit {c}, reopened"))
                .await;
        }
    }
    eprintln!(
        "seed {seed:x}: longest chain {seen_longest}, chains shortened {restarts} times, all deltas gone {consolidations} times, cache stats {:?}",
        db.cache_stats()
    );
    if !tiny_cache {
        assert!(seen_longest > 9, "chains never grew past their first level: {seen_longest}");
    }
    db.flush_gc().await.unwrap();
    assert_healthy(&db).await;
    let cold = open(&registry, &blobs, false).await;
    check_reads(&cold, &model, &pool, &mut rng, 8, "cold at the end").await;
    stray
}

/// Seeds: `SOP_DELTA_SEEDS` more than the fixed ones (a longer campaign).
fn seeds(fixed: &[u64]) -> Vec<u64> {
    let extra: u64 = std::env::var("SOP_DELTA_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    fixed.iter().copied().chain((1..=extra).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)).collect()
}

#[tokio::test]
async fn small_commits_on_a_few_leaves_read_as_a_map_default_cache() {
    let mut stray = 0;
    for seed in seeds(&[0x2545_f491_4f6c_dd1d_u64, 0x9e37_79b9_7f4a_7c15]) {
        stray += run(seed, false, 600).await;
    }
    eprintln!("deltas with no chain holding deletes of keys their base lacks: {stray}");
}

#[tokio::test]
async fn small_commits_on_a_few_leaves_read_as_a_map_tiny_cache() {
    let mut stray = 0;
    for seed in seeds(&[0x1234_5678_9abc_def1_u64]) {
        stray += run(seed, true, 600).await;
    }
    eprintln!("deltas with no chain holding deletes of keys their base lacks: {stray}");
}

/// A key put by a large commit, deleted by a medium one, put and deleted
/// again by two small ones (their runs merged; the older two not), then
/// small commits until the chain restarts: the restart's delta, written
/// from `Layers::folded`, must hold no delete of the key (its base never
/// held it). Reads are right either way.
#[tokio::test]
async fn a_chain_restart_writes_no_delete_of_a_key_its_base_lacks() {
    let (registry, blobs) = (Arc::new(MemRegistry::new()), Arc::new(ObjectBlobStore::memory()));
    let db = open(&registry, &blobs, false).await;
    db.create_store("s", small(400)).await.unwrap();
    let key = |i: u32| i.to_be_bytes().to_vec();
    // Base items large, later puts small: the changes stay a small share.
    let value_of = |k: u32| if k < 300 { vec![7u8; 300] } else { vec![8u8] };
    let mut model = Model::new();
    let commit = |puts: Vec<u32>, dels: Vec<u32>| {
        let db = &db;
        async move {
            let tx = db.begin_write().await.unwrap();
            let s = tx.bytes_store("s").await.unwrap();
            for k in &puts {
                s.upsert(&k.to_be_bytes(), &value_of(*k)).await.unwrap();
            }
            for k in &dels {
                assert!(s.remove(&k.to_be_bytes()).await.unwrap());
            }
            tx.commit().await.unwrap();
        }
    };
    let apply = |model: &mut Model, puts: &[u32], dels: &[u32]| {
        for k in puts {
            model.insert(key(*k), value_of(*k));
        }
        for k in dels {
            model.remove(&key(*k));
        }
    };
    // The base: 150 even keys.
    let base: Vec<u32> = (0..150).map(|i| i * 2).collect();
    commit(base.clone(), vec![]).await;
    apply(&mut model, &base, &[]);
    let k = 1001; // odd: never in the base
    // P: 100 puts, k among them (more than twice all that comes after it).
    let p: Vec<u32> = (0..100).map(|i| 1001 + i * 2).collect();
    commit(p.clone(), vec![]).await;
    apply(&mut model, &p, &[]);
    // D: 30 changes, the delete of k among them (more than twice all
    // that comes after it).
    let d: Vec<u32> = (0..29).map(|i| i * 4 + 1).collect();
    commit(d.clone(), vec![k]).await;
    apply(&mut model, &d, &[k]);
    commit(vec![k], vec![]).await;
    apply(&mut model, &[k], &[]);
    commit(vec![], vec![k]).await;
    apply(&mut model, &[], &[k]);
    let mut i = 0;
    while chains(&blobs).await.1 < 16 || i < 20 {
        let one = vec![2001 + i * 2];
        commit(one.clone(), vec![]).await;
        apply(&mut model, &one, &[]);
        i += 1;
        db.flush_gc().await.unwrap();
        let (deltas, longest, full) = chains(&blobs).await;
        eprintln!("after {i} single puts: {deltas} deltas, longest chain {longest}, {full} full blobs");
        if longest == 1 {
            break;
        }
    }
    let mut rng = Rng(1);
    let pool: Vec<Vec<u8>> = (0..2100).map(key).collect();
    check_reads(&db, &model, &pool, &mut rng, 4, "warm").await;
    check_reads(&open(&registry, &blobs, false).await, &model, &pool, &mut rng, 4, "cold").await;
    let after_first = stray_deletes(&blobs).await;
    // Another 16 links and restart: the delete is copied on.
    for j in 0..16 {
        let one = vec![3001 + j * 2];
        commit(one.clone(), vec![]).await;
        apply(&mut model, &one, &[]);
    }
    db.flush_gc().await.unwrap();
    let (deltas, longest, full) = chains(&blobs).await;
    eprintln!("16 more: {deltas} deltas, longest chain {longest}, {full} full blobs");
    let after_second = stray_deletes(&blobs).await;
    eprintln!("stray deletes after the first restart {after_first}, after the second {after_second}");
    check_reads(&db, &model, &pool, &mut rng, 4, "warm").await;
    assert_eq!(after_first + after_second, 0, "a delta with no chain deletes a key its base lacks");
}

/// Two databases over the same registry and blobs (two processes), taking
/// turns at small commits on the same leaf: each loads the other's new
/// links on top of the previous link it holds cached (`cached_link`,
/// `sizes_with`, `with_run`), or cold; both read as the model after each.
#[tokio::test]
async fn two_databases_taking_turns_on_one_leaf() {
    let mut rng = Rng(0x5151_2727_abcd_0001);
    let pool = keys(&mut rng);
    let (registry, blobs) = (Arc::new(MemRegistry::new()), Arc::new(ObjectBlobStore::memory()));
    let dbs =
        [open_with(&registry, &blobs, false, false).await, open_with(&registry, &blobs, false, false).await];
    dbs[0].create_store("s", small(400)).await.unwrap();
    let mut model = Model::new();
    let load: Vec<(Vec<u8>, Vec<u8>)> =
        pool.iter().step_by(2).enumerate().map(|(i, k)| (k.clone(), value(&mut rng, i as u64))).collect();
    dbs[0]
        .run_write(|tx| {
            let load = load.clone();
            async move {
                let s = tx.bytes_store("s").await?;
                for (k, v) in load {
                    s.upsert(&k, &v).await?;
                }
                Ok(())
            }
        })
        .await
        .unwrap();
    model.extend(load);
    let (mut seen_longest, mut retries) = (0, 0);
    for c in 0..400u32 {
        // Runs of turns by the same database now and then.
        let who = if rng.below(3) == 0 { 0 } else { (c / 2 % 2) as usize };
        let ops: Vec<(u64, Vec<u8>, Vec<u8>)> = (0..1 + rng.below(3))
            .map(|_| {
                let k = pool[rng.below(60) as usize + 100].clone();
                let kind = rng.below(3);
                let tag = u64::from(c) << 8 | rng.below(256);
                (kind, k, value(&mut rng, tag))
            })
            .collect();
        let mut attempts = 0;
        let before = model.clone();
        let after = dbs[who]
            .run_write(|tx| {
                attempts += 1;
                let (ops, mut local) = (ops.clone(), before.clone());
                async move {
                    // Checked once committed: a stale read conflicts.
                    let s = tx.bytes_store("s").await?;
                    let mut wrong = Vec::new();
                    for (kind, k, v) in ops {
                        if s.get(&k).await?.map(|v| v.to_vec()) != local.get(&k).cloned() {
                            wrong.push(format!("a writer's get of {k:?}"));
                        }
                        if kind == 0 {
                            if s.remove(&k).await? != local.remove(&k).is_some() {
                                wrong.push(format!("remove {k:?}"));
                            }
                        } else {
                            s.upsert(&k, &v).await?;
                            local.insert(k, v);
                        }
                    }
                    if s.count().await? != local.len() as u64 {
                        wrong.push("a writer's count".to_owned());
                    }
                    Ok((local, wrong))
                }
            })
            .await
            .unwrap();
        retries += attempts - 1;
        let (after, wrong) = after;
        assert!(wrong.is_empty(), "commit {c} by {who}: {wrong:?}");
        model = after;
        seen_longest = seen_longest.max(chains(&blobs).await.1);
        for (i, db) in dbs.iter().enumerate() {
            if c % 5 == 4 || rng.below(2) == 0 {
                check_reads(db, &model, &pool, &mut rng, 2, &format!("commit {c} by {who}, read by {i}"))
                    .await;
            }
        }
    }
    eprintln!("longest chain {seen_longest}, retries {retries}");
    assert!(seen_longest >= 8, "chains stayed short: {seen_longest}");
    for db in &dbs {
        assert_healthy(db).await;
    }
}

/// Writers open at once on one delta-chained leaf, each changing its own
/// keys of it, committed in a random order: later commits merge (their
/// writes replayed on the leaf as the earlier ones left it, through its
/// layers); every read agrees with the model after each round, the
/// database reopened now and then.
#[tokio::test]
async fn concurrent_writers_on_one_leaf_merge_onto_its_layers() {
    let mut rng = Rng(0x7777_1234_0bad_cafe);
    let pool = keys(&mut rng);
    let (registry, blobs) = (Arc::new(MemRegistry::new()), Arc::new(ObjectBlobStore::memory()));
    let mut db = open(&registry, &blobs, false).await;
    db.create_store("s", small(400)).await.unwrap();
    let mut model = Model::new();
    {
        let tx = db.begin_write().await.unwrap();
        let s = tx.bytes_store("s").await.unwrap();
        for (i, k) in pool.iter().enumerate().filter(|(i, _)| i % 3 != 0) {
            let v = value(&mut rng, i as u64);
            s.upsert(k, &v).await.unwrap();
            model.insert(k.clone(), v);
        }
        tx.commit().await.unwrap();
    }
    let (mut merges, mut conflicts, mut seen_longest) = (0, 0, 0);
    for round in 0..250u32 {
        let n = 2 + rng.below(3) as usize;
        let window = 100 + (round as usize / 50) * 20;
        let mut txs = Vec::new();
        for w in 0..n {
            let tx = db.begin_write().await.unwrap();
            let s = tx.bytes_store("s").await.unwrap();
            let mut changes: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
            let mut local = model.clone();
            for _ in 0..1 + rng.below(3) {
                // Keys of this writer only: i % n == w.
                let i = window + (rng.below(40) as usize / n) * n + w;
                let k = pool[i].clone();
                if rng.below(2) == 0 {
                    let had = s.remove(&k).await.unwrap();
                    assert_eq!(had, local.remove(&k).is_some(), "round {round}: remove {k:?}");
                    changes.push((k, None));
                } else {
                    let tag = u64::from(round) << 8 | w as u64;
                    let v = value(&mut rng, tag);
                    s.upsert(&k, &v).await.unwrap();
                    local.insert(k.clone(), v.clone());
                    changes.push((k, Some(v)));
                }
            }
            txs.push((tx, changes));
        }
        while !txs.is_empty() {
            let (tx, changes) = txs.swap_remove(rng.below(txs.len() as u64) as usize);
            match tx.commit().await {
                Ok(info) => {
                    merges += info.merges;
                    for (k, v) in changes {
                        match v {
                            Some(v) => model.insert(k, v),
                            None => model.remove(&k),
                        };
                    }
                }
                Err(e) => {
                    assert_eq!(e.kind(), sop_btree::ErrorKind::Conflict, "round {round}: {e}");
                    conflicts += 1;
                }
            }
        }
        seen_longest = seen_longest.max(chains(&blobs).await.1);
        check_reads(&db, &model, &pool, &mut rng, 3, &format!("round {round}")).await;
        if round % 60 == 59 {
            db.flush_gc().await.unwrap();
            assert_healthy(&db).await;
            db.close().await.unwrap();
            drop(db);
            db = open(&registry, &blobs, false).await;
            check_reads(&db, &model, &pool, &mut rng, 6, &format!("round {round}, reopened")).await;
        }
    }
    eprintln!("merges {merges}, conflicts {conflicts}, longest chain {seen_longest}");
    assert!(merges > 100, "few merges: {merges}");
    db.flush_gc().await.unwrap();
    assert_healthy(&db).await;
}
