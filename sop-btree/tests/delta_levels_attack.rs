//! Review attacks on the two-level delta chains (de57ddc): level restarts
//! (`level_restart`), the cache's restarts count (`DeltaLeaf::restarts`,
//! `cached_link`) and the restarts' runs (`Layers::restart_runs`), with
//! two databases over one registry and blob store (two processes) taking
//! turns and racing on the same leaf, caches that evict (a tiny memory
//! tier, a disk tier that gives entries back merged only), reopens (cold
//! chains), rollbacks, merges after conflicts, splits and consolidations.
//!
//! Checked all along:
//! - every read (gets, scans both ways, count) of both databases, and of a
//!   cold one, agrees with a `BTreeMap` model;
//! - every live delta (a handle's blob): its chain's links exist, are on
//!   the same base, each naming the links before it; applied in order from
//!   the base, no link, restart or the delta itself deletes a key the leaf
//!   does not hold just before it; at most 16 blobs;
//! - every commit to a leaf read through a delta is a link (its chain the
//!   previous chain and delta), a level restart (a strict prefix of it,
//!   made only of blobs written as restarts: a restarts count that took a
//!   link for a restart would keep it), a full restart (no chain) or a
//!   whole leaf;
//! - `Database::check` (no orphan, no missing blob) and, at the end, no
//!   intent left (nothing obsolete kept back).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::attack::Rng;
use common::{assert_healthy, bound, model_range, small};
use sop_btree::{Config, Database, ErrorKind};
use sop_cache::{CacheConfig, DiskTier};
use sop_core::{BlobStore, DeltaOp, LeafDelta, LogicalId, Node, PhysicalId, Registry};
use sop_registry::MemRegistry;
use sop_store::ObjectBlobStore;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// Shared backends defer deletions by this much (`Config::tx_timeout`).
const TX_TIMEOUT: Duration = Duration::from_millis(700);

#[derive(Clone, Copy, Debug)]
enum Cache {
    Default,
    /// A memory tier of this many bytes.
    Tiny(usize),
    /// A small memory tier over a disk tier (entries come back merged
    /// only, with no layers and no restarts count).
    Disk,
}

struct Env {
    registry: Arc<MemRegistry>,
    blobs: Arc<ObjectBlobStore>,
    cache: Cache,
    dirs: Vec<tempfile::TempDir>,
    /// Open exclusive (one process: deletions at once, held back only by
    /// this process's transactions).
    exclusive: bool,
}

impl Env {
    fn new(cache: Cache) -> Self {
        Self {
            registry: Arc::new(MemRegistry::new()),
            blobs: Arc::new(ObjectBlobStore::memory()),
            cache,
            dirs: Vec::new(),
            exclusive: false,
        }
    }

    async fn open(&mut self) -> Database {
        let mut config = Config::from_parts(self.registry.clone(), self.blobs.clone(), self.exclusive);
        config.gc_grace = Duration::ZERO;
        config.tx_timeout = TX_TIMEOUT;
        config.max_merges = 50;
        match self.cache {
            Cache::Default => {}
            Cache::Tiny(bytes) => config.cache = CacheConfig { memory_bytes: bytes, disk: None },
            Cache::Disk => {
                let dir = tempfile::tempdir().unwrap();
                config.cache = CacheConfig {
                    memory_bytes: 16 << 10,
                    disk: Some(DiskTier { dir: dir.path().to_path_buf(), capacity_bytes: 16 << 20 }),
                };
                self.dirs.push(dir);
            }
        }
        Database::open(config).await.unwrap()
    }
}

fn key(i: u32) -> Vec<u8> {
    i.to_be_bytes().to_vec()
}

/// A small value (the changes stay a small share of a base of large ones).
/// One in 40 is large (a blob of its own, out of the leaf).
fn small_value(rng: &mut Rng, tag: u64) -> Vec<u8> {
    let len = if rng.below(40) == 0 { 1500 } else { 1 + rng.below(10) as usize };
    let mut v = tag.to_be_bytes().to_vec();
    v.resize(len.max(8), 0x5a);
    v.truncate(len);
    v
}

fn pairs(rows: Vec<(Bytes, Bytes)>) -> Vec<(Vec<u8>, Vec<u8>)> {
    rows.into_iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
}

/// Full scans both ways, the count, gets of `probe` and a few bounded
/// scans, in one read transaction, against the model.
async fn check_reads(db: &Database, model: &Model, probe: &[Vec<u8>], rng: &mut Rng, what: &str) {
    let bounds: Vec<(usize, usize, u8, u8)> = (0..3)
        .map(|_| {
            let a = rng.below(probe.len() as u64) as usize;
            let b = (a + rng.below(30) as usize).min(probe.len() - 1);
            (a, b, rng.below(3) as u8, rng.below(3) as u8)
        })
        .collect();
    type Got = (
        Vec<(Vec<u8>, Vec<u8>)>,
        Vec<(Vec<u8>, Vec<u8>)>,
        u64,
        Vec<Option<Vec<u8>>>,
        Vec<Vec<(Vec<u8>, Vec<u8>)>>,
    );
    let got: Got = db
        .run_read(|tx| {
            let bounds = bounds.clone();
            async move {
                let s = tx.bytes_store("s").await?;
                let fwd = pairs(s.range(Bound::Unbounded, Bound::Unbounded).take(100_000).await?);
                let mut rev = pairs(s.range_rev(Bound::Unbounded, Bound::Unbounded).take(100_000).await?);
                rev.reverse();
                let count = s.count().await?;
                let mut gets = Vec::new();
                for k in probe {
                    gets.push(s.get(k).await?.map(|v| v.to_vec()));
                }
                let mut scans = Vec::new();
                for (a, b, ka, kb) in bounds {
                    scans.push(pairs(
                        s.range(bound(ka, &probe[a]), bound(kb, &probe[b])).take(100_000).await?,
                    ));
                }
                Ok((fwd, rev, count, gets, scans))
            }
        })
        .await
        .unwrap();
    let (fwd, rev, count, gets, scans) = got;
    let all: Vec<(Vec<u8>, Vec<u8>)> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    if fwd != all {
        let i = fwd.iter().zip(&all).position(|(g, w)| g != w).unwrap_or(fwd.len().min(all.len()));
        panic!(
            "{what}: forward scan: {} items, want {}; first difference at {i}: got {:?} want {:?}",
            fwd.len(),
            all.len(),
            fwd.get(i).map(|p| &p.0),
            all.get(i).map(|p| &p.0)
        );
    }
    assert!(rev == all, "{what}: reverse scan differs");
    assert_eq!(count, model.len() as u64, "{what}: count");
    for (k, got) in probe.iter().zip(gets) {
        assert_eq!(got.as_ref(), model.get(k), "{what}: get {k:?}");
    }
    for ((a, b, ka, kb), got) in bounds.into_iter().zip(scans) {
        let want = model_range(model, bound(ka, &probe[a]), bound(kb, &probe[b]));
        assert!(got == want, "{what}: range {a}..{b} ({ka},{kb})");
    }
}

/// A few gets by a reader: the leaf's current blob enters this database's
/// cache (through `cached_link` when it holds the previous one).
async fn peek(db: &Database, model: &Model, keys: &[Vec<u8>], what: &str) {
    let got: Vec<Option<Vec<u8>>> = db
        .run_read(|tx| async move {
            let s = tx.bytes_store("s").await?;
            let mut out = Vec::new();
            for k in keys {
                out.push(s.get(k).await?.map(|v| v.to_vec()));
            }
            Ok(out)
        })
        .await
        .unwrap();
    for (k, g) in keys.iter().zip(got) {
        assert_eq!(g.as_ref(), model.get(k), "{what}: a reader's get of {k:?}");
    }
}

/// What the driver saw of the chains, commit by commit.
#[derive(Default, Debug)]
struct Census {
    links: usize,
    level_restarts: usize,
    /// Level restarts that kept at least one restart before them.
    deep_restarts: usize,
    /// Level restarts that folded a blob written as a restart (another
    /// database's restart taken for a link).
    folded_restarts: usize,
    full_restarts: usize,
    whole: usize,
    longest: usize,
    /// Per leaf: its blob and that blob's chain when last seen.
    last: HashMap<LogicalId, (PhysicalId, Vec<PhysicalId>, bool)>,
    /// Blobs written as restarts (level or full, or a first delta).
    restarts: HashSet<PhysicalId>,
}

impl Census {
    /// Looks at every leaf's blob since the last look (one commit since).
    async fn observe(&mut self, env: &Env, what: &str) {
        let handles = env.registry.list_handles().await.unwrap();
        for h in handles {
            let Ok(b) = env.blobs.get(h.physical_id).await else { continue };
            let prev = self.last.get(&h.logical_id).cloned();
            if prev.as_ref().is_some_and(|p| p.0 == h.physical_id) {
                continue;
            }
            if !LeafDelta::is_delta(&b) {
                if prev.is_some_and(|p| p.2) {
                    self.whole += 1;
                }
                self.last.insert(h.logical_id, (h.physical_id, Vec::new(), false));
                continue;
            }
            check_delta(env, h.physical_id, what).await;
            let d = LeafDelta::decode(&b).unwrap();
            self.longest = self.longest.max(d.chain.len() + 1);
            if d.chain.is_empty() {
                self.full_restarts += 1;
                self.restarts.insert(h.physical_id);
            } else if let Some((p, c, true)) = &prev {
                let mut was: Vec<PhysicalId> = c.clone();
                was.push(*p);
                if d.chain == was {
                    self.links += 1;
                } else if d.chain.len() < was.len() && was.starts_with(&d.chain) {
                    self.level_restarts += 1;
                    self.restarts.insert(h.physical_id);
                    for kept in &d.chain {
                        assert!(
                            self.restarts.contains(kept),
                            "{what}: a level restart {} keeps {kept}, which was written as a link \
                             (the restarts count took a link for a restart); chain {:?}, before {:?}",
                            h.physical_id,
                            d.chain,
                            was
                        );
                    }
                    self.deep_restarts += usize::from(d.chain.len() > 1);
                    let dropped = &was[d.chain.len()..];
                    self.folded_restarts += usize::from(dropped.iter().any(|b| self.restarts.contains(b)));
                } else {
                    panic!("{what}: leaf {}: chain {:?} after {:?}", h.logical_id, d.chain, was);
                }
            }
            self.last.insert(h.logical_id, (h.physical_id, d.chain, true));
        }
    }
}

/// Every live delta read from the blob store: its chain sound, and no
/// blob of it deleting a key the leaf lacks just before it.
async fn check_live_chains(env: &Env, what: &str) -> usize {
    let mut deltas = 0;
    for h in env.registry.list_handles().await.unwrap() {
        deltas += usize::from(check_delta(env, h.physical_id, what).await);
    }
    deltas
}

/// Blob `id` (a live one), when a delta: its chain's links exist, are on
/// its base and each names the links before it; applied in order from the
/// base, no link and not the delta deletes a key the leaf lacks just
/// before it; ops strictly ascending; at most 16 blobs. Whether a delta.
async fn check_delta(env: &Env, id: PhysicalId, what: &str) -> bool {
    let b = env.blobs.get(id).await.unwrap_or_else(|e| panic!("{what}: live blob {id}: {e}"));
    if !LeafDelta::is_delta(&b) {
        return false;
    }
    let d = LeafDelta::decode(&b).unwrap();
    assert!(d.chain.len() < 16, "{what}: a chain of {} blobs", d.chain.len() + 1);
    let base = env.blobs.get(d.base).await.unwrap_or_else(|e| panic!("{what}: base {}: {e}", d.base));
    assert!(!LeafDelta::is_delta(&base), "{what}: a delta as base");
    let Node::Leaf { items } = Node::decode(&base).unwrap() else { panic!("{what}: a base not a leaf") };
    let mut held: BTreeSet<Bytes> = items.iter().map(|i| i.key.clone()).collect();
    let apply = |held: &mut BTreeSet<Bytes>, ops: &[DeltaOp], who: String| {
        assert!(ops.windows(2).all(|w| w[0].key() < w[1].key()), "{what}: {who}: ops not ascending");
        for op in ops {
            match op {
                DeltaOp::Put(i) => {
                    held.insert(i.key.clone());
                }
                DeltaOp::Delete(k) => {
                    assert!(held.remove(k), "{what}: {who} deletes {k:?}, which the leaf lacks before it");
                }
            }
        }
    };
    for (i, l) in d.chain.iter().enumerate() {
        let lb = env.blobs.get(*l).await.unwrap_or_else(|e| panic!("{what}: link {i} {l} of {id}: {e}"));
        let ld = LeafDelta::decode(&lb).unwrap();
        assert_eq!(ld.base, d.base, "{what}: link {l} on another base");
        assert_eq!(ld.chain.as_slice(), &d.chain[..i], "{what}: link {l} of another chain");
        apply(&mut held, &ld.ops, format!("link {i} ({l}) of {id}"));
    }
    apply(&mut held, &d.ops, format!("delta {id} (chain {})", d.chain.len()));
    true
}

/// The end of a run: deletions done, nothing left behind, a cold reader
/// agrees.
async fn finish(
    env: &mut Env,
    dbs: &[Database],
    model: &Model,
    probe: &[Vec<u8>],
    rng: &mut Rng,
    what: &str,
) {
    // A closed database's clean-ups are left to recovery, which finishes a
    // committed intent of another process once it is 2 x tx_timeout old.
    tokio::time::sleep(2 * TX_TIMEOUT + Duration::from_millis(200)).await;
    for db in dbs {
        db.flush_gc().await.unwrap();
    }
    for db in dbs {
        db.recover().await.unwrap();
        db.flush_gc().await.unwrap();
    }
    let intents = env.registry.list_intents(u64::MAX).await.unwrap();
    assert!(
        intents.is_empty(),
        "{what}: {} intents left: {:?}",
        intents.len(),
        intents
            .iter()
            .map(|i| (
                i.state,
                i.staged.len(),
                i.obsolete.len(),
                i.detached.len(),
                sop_core::now_millis().saturating_sub(i.created_at_ms)
            ))
            .collect::<Vec<_>>()
    );
    for db in dbs {
        assert_healthy(db).await;
    }
    check_live_chains(env, what).await;
    let cold = env.open().await;
    check_reads(&cold, model, probe, rng, &format!("{what}: cold at the end")).await;
    cold.close().await.unwrap();
}

/// One write transaction's operations: (kind, key, value).
type Ops = Vec<(u64, Vec<u8>, Vec<u8>)>;

/// Applies `ops` in a write transaction of `db`; commits unless
/// `rollback`. Returns the model after it, or `None` when it conflicted
/// (nothing applied). Its reads (gets, removes' answers) are checked
/// against the model once it committed: a read of another database's
/// stale state is allowed only in a transaction that then conflicts.
async fn write(db: &Database, model: &Model, ops: &Ops, rollback: bool, what: &str) -> Option<Model> {
    let tx = db.begin_write().await.unwrap();
    let s = tx.bytes_store("s").await.unwrap();
    let mut local = model.clone();
    let mut wrong = Vec::new();
    for (kind, k, v) in ops {
        match kind {
            // Put.
            0..=3 => {
                s.upsert(k, v).await.unwrap();
                local.insert(k.clone(), v.clone());
            }
            // Delete.
            4..=6 => {
                let had = s.remove(k).await.unwrap();
                if had != local.remove(k).is_some() {
                    wrong.push(format!("remove {k:?} answered {had}"));
                }
            }
            // Put, then delete.
            7 => {
                s.upsert(k, v).await.unwrap();
                if !s.remove(k).await.unwrap() {
                    wrong.push(format!("remove of {k:?} just put answered false"));
                }
                local.remove(k);
            }
            // Delete, then put.
            8 => {
                let had = s.remove(k).await.unwrap();
                if had != local.contains_key(k) {
                    wrong.push(format!("remove {k:?} (then put) answered {had}"));
                }
                s.upsert(k, v).await.unwrap();
                local.insert(k.clone(), v.clone());
            }
            // A read through the leaf's layers and the overlay.
            _ => {
                let got = s.get(k).await.unwrap().map(|v| v.to_vec());
                if got.as_ref() != local.get(k) {
                    wrong.push(format!(
                        "get {k:?}: {:?} want {:?}",
                        got.map(|v| v.len()),
                        local.get(k).map(Vec::len)
                    ));
                }
            }
        }
    }
    if rollback {
        tx.rollback().await;
        return Some(model.clone());
    }
    match tx.commit().await {
        Ok(_) => {
            assert!(wrong.is_empty(), "{what}: committed after wrong reads: {wrong:?}");
            Some(local)
        }
        Err(e) if e.kind() == ErrorKind::Conflict => None,
        Err(e) => panic!("{what}: commit: {e}"),
    }
}

/// Keys: a base of even keys 0..400 with large values (one leaf of a
/// slot of 400); commits change keys 100..180 (odd ones never in the
/// base), so chains run through their levels; now and then a burst of
/// keys 1000.. splits the leaf and a later one deletes them again.
/// What a run mixes in besides single commits.
#[derive(Clone, Copy, Debug)]
struct Mode {
    /// Both databases read the leaf after every commit (so each holds the
    /// other's newest blob, and `cached_link` finds it), else a random share.
    peek_all: bool,
    /// Reopens (cold caches).
    reopen: bool,
    /// Two writers at once, one per database.
    concurrent: bool,
    /// Bursts that split the leaf and delete the keys again.
    bursts: bool,
    /// One database only (its two writers at once race in one process).
    single: bool,
    /// Two writers at once in half the steps (so both often stand at a
    /// level's end together, and the later one merges onto the earlier
    /// one's restart or link).
    race: bool,
}

const ALL: Mode =
    Mode { peek_all: false, reopen: true, concurrent: true, bursts: true, single: false, race: false };
const WARM: Mode =
    Mode { peek_all: true, reopen: false, concurrent: false, bursts: false, single: false, race: false };
const SINGLE: Mode =
    Mode { peek_all: false, reopen: true, concurrent: true, bursts: true, single: true, race: false };
const RACE: Mode =
    Mode { peek_all: true, reopen: false, concurrent: true, bursts: false, single: false, race: true };

async fn alternate(seed: u64, cache: Cache, mode: Mode, steps: u32) -> Census {
    let started = std::time::Instant::now();
    let mut rng = Rng(seed);
    let mut env = Env::new(cache);
    let mut dbs = vec![env.open().await];
    if !mode.single {
        dbs.push(env.open().await);
    }
    let mut model = load_one_leaf(&dbs[0]).await;
    let probe: Vec<Vec<u8>> = (90..190u32).map(key).chain((1000..1010).map(key)).collect();
    let window: Vec<Vec<u8>> = (100..180u32).map(key).collect();
    let mut census = Census::default();
    census.observe(&env, "load").await;
    let (mut who, mut burst, mut conflicts, mut merged_pairs, mut reopens) = (0usize, false, 0, 0, 0);
    // Per seed: how often the other database reads between commits (so
    // holds the previous link cached) and how long a database's runs are.
    let read_share = if mode.peek_all { 4 } else { 1 + rng.below(4) };
    let stay = 1 + rng.below(4);
    for step in 0..steps {
        let what = format!("seed {seed:x} {cache:?} {mode:?} step {step}");
        if rng.below(stay + 1) != 0 {
            who = (1 - who) % dbs.len();
        }
        let mk_ops = |rng: &mut Rng, class: Option<usize>| -> Ops {
            let n = 1 + rng.below(3);
            (0..n)
                .map(|_| {
                    let mut i = rng.below(window.len() as u64) as usize;
                    if let Some(c) = class {
                        i = i / 2 * 2 + c;
                    }
                    let tag = u64::from(step) << 8 | rng.below(256);
                    (rng.below(10), window[i].clone(), small_value(rng, tag))
                })
                .collect()
        };
        let mut roll = rng.below(100);
        if mode.race && roll >= 50 {
            roll = 0;
        }
        roll = match roll {
            0..=11 if !mode.concurrent => 99,
            12 if !mode.bursts => 99,
            13..=15 if !mode.reopen => 99,
            r => r,
        };
        match roll {
            // Two writers at once, one in each database, on their own keys
            // of the leaf, committed in a random order: the later one
            // conflicts and merges onto what the first wrote.
            0..=11 => {
                let ops = [mk_ops(&mut rng, Some(0)), mk_ops(&mut rng, Some(1))];
                let first = rng.below(2) as usize;
                let other = dbs.len() - 1;
                let txs = [dbs[0].begin_write().await.unwrap(), dbs[other].begin_write().await.unwrap()];
                let mut locals = [model.clone(), model.clone()];
                let mut stale = [false, false];
                for w in 0..2 {
                    let s = txs[w].bytes_store("s").await.unwrap();
                    for (kind, k, v) in &ops[w] {
                        if kind % 2 == 0 {
                            s.upsert(k, v).await.unwrap();
                            locals[w].insert(k.clone(), v.clone());
                        } else {
                            // Checked if it commits: a stale read must conflict.
                            let had = s.remove(k).await.unwrap();
                            if had != locals[w].remove(k).is_some() {
                                stale[w] = true;
                            }
                        }
                    }
                }
                let [t0, t1] = txs;
                let mut txs = [Some(t0), Some(t1)];
                for w in [first, 1 - first] {
                    let tx = txs[w].take().unwrap();
                    match tx.commit().await {
                        Ok(info) => {
                            // A remove's answer read before the other's
                            // commit is rechecked by the merge.
                            assert!(!stale[w] || info.merges > 0, "{what}: committed after a stale remove");
                            merged_pairs += usize::from(info.merges > 0);
                            for (kind, k, v) in &ops[w] {
                                if kind % 2 == 0 {
                                    model.insert(k.clone(), v.clone());
                                } else {
                                    model.remove(k);
                                }
                            }
                        }
                        Err(e) => {
                            assert_eq!(e.kind(), ErrorKind::Conflict, "{what}: {e}");
                            conflicts += 1;
                        }
                    }
                    census.observe(&env, &what).await;
                }
            }
            // A burst: many keys at once (a split), or their deletion.
            12 => {
                let burst_keys: Vec<u32> = (1000..1300).collect();
                let tx = dbs[who].begin_write().await.unwrap();
                let s = tx.bytes_store("s").await.unwrap();
                for k in &burst_keys {
                    if burst {
                        s.remove(&key(*k)).await.unwrap();
                        model.remove(&key(*k));
                    } else {
                        s.upsert(&key(*k), b"burst").await.unwrap();
                        model.insert(key(*k), b"burst".to_vec());
                    }
                }
                tx.commit().await.unwrap();
                burst = !burst;
                census.observe(&env, &what).await;
            }
            // A reopen: that database's cache is cold.
            13..=15 => {
                let db = dbs.swap_remove(who);
                db.close().await.unwrap();
                drop(db);
                let fresh = env.open().await;
                dbs.insert(who, fresh);
                reopens += 1;
            }
            _ => {
                let ops = mk_ops(&mut rng, None);
                let rollback = rng.below(12) == 0;
                match write(&dbs[who], &model, &ops, rollback, &what).await {
                    Some(after) => model = after,
                    None => conflicts += 1,
                }
                census.observe(&env, &what).await;
            }
        }
        // Readers: the other database (and this one) load the leaf's new
        // blob now, or not (then their next load finds no cached link).
        for (i, db) in dbs.iter().enumerate() {
            if rng.below(4) < read_share {
                let ks: Vec<Vec<u8>> =
                    (0..3).map(|_| window[rng.below(window.len() as u64) as usize].clone()).collect();
                peek(db, &model, &ks, &format!("{what} db {i}")).await;
            }
        }
        if step % 25 == 24 {
            for (i, db) in dbs.iter().enumerate() {
                check_reads(db, &model, &probe, &mut rng, &format!("{what} db {i}")).await;
            }
        }
        if step % 100 == 99 {
            check_live_chains(&env, &what).await;
            assert_healthy(&dbs[0]).await;
        }
    }
    finish(&mut env, &dbs, &model, &probe, &mut rng, &format!("seed {seed:x} {cache:?}")).await;
    eprintln!(
        "seed {seed:x} {cache:?}: {census:?} conflicts {conflicts} merged pairs {merged_pairs} reopens {reopens}, {elapsed:?}",
        elapsed = started.elapsed(),
        census = (
            census.links,
            census.level_restarts,
            census.deep_restarts,
            census.folded_restarts,
            census.full_restarts,
            census.whole,
            census.longest
        ),
    );
    for db in dbs {
        db.close().await.unwrap();
    }
    census
}

#[tokio::test]
async fn two_databases_alternating_through_level_restarts_default_cache_mixed() {
    alternate(0x2545_f491_4f6c_dd1d, Cache::Default, ALL, 600).await;
    alternate(0x1234_5678_9abc_def1, Cache::Default, ALL, 400).await;
}

#[tokio::test]
async fn two_databases_alternating_through_level_restarts_default_cache_mixed_2() {
    alternate(0x9e37_79b9_7f4a_7c15, Cache::Default, ALL, 700).await;
}

/// Both databases hold each other's newest blob: restarts written by one
/// are loaded by the other through `cached_link` (taken for links), so the
/// two count restarts differently and restart at different points.
#[tokio::test]
async fn two_databases_alternating_through_level_restarts_both_warm() {
    let mut total = Census::default();
    for seed in [0x0bad_cafe_0000_0001_u64, 0x5eed_0000_1111_2223, 0x7357_7357_0000_0003] {
        let c = alternate(seed, Cache::Default, WARM, 500).await;
        total.level_restarts += c.level_restarts;
        total.deep_restarts += c.deep_restarts;
        total.folded_restarts += c.folded_restarts;
        total.longest = total.longest.max(c.longest);
    }
    eprintln!(
        "level restarts {}, deep {}, folded restarts {}, longest {}",
        total.level_restarts, total.deep_restarts, total.folded_restarts, total.longest
    );
    assert!(total.level_restarts > 20, "few level restarts: {}", total.level_restarts);
    assert!(total.folded_restarts > 0, "no restart was ever folded as a link");
}

/// Both warm, and two writers at once (one per database) in half the
/// steps: level restarts and links merged after a conflict.
#[tokio::test]
async fn two_databases_racing_through_level_restarts_both_warm() {
    for seed in [0x2718_2818_2845_9045_u64, 0x3141_5926_5358_9793] {
        alternate(seed, Cache::Default, RACE, 400).await;
    }
    alternate(0x1618_0339_8874_9894, Cache::Tiny(64 << 10), RACE, 300).await;
}

#[tokio::test]
async fn two_databases_alternating_through_level_restarts_tiny_cache() {
    for (seed, bytes) in [
        (0x5151_2727_abcd_0001_u64, 8 << 10),
        (0x0bad_f00d_1234_5679, 48 << 10),
        (0x7777_1234_0bad_cafe, 96 << 10),
    ] {
        alternate(seed, Cache::Tiny(bytes), ALL, 300).await;
    }
}

#[tokio::test]
async fn two_databases_alternating_through_level_restarts_tiny_cache_warm() {
    for (seed, bytes) in [(0x5151_2727_abcd_0011_u64, 48 << 10), (0x0bad_f00d_1234_5611, 96 << 10)] {
        alternate(seed, Cache::Tiny(bytes), WARM, 500).await;
    }
}

/// One database: two writers at once race in one process (a level
/// restart merged after a conflict), tiny and default caches, reopens.
#[tokio::test]
async fn one_database_racing_writers_through_level_restarts() {
    alternate(0x6a09_e667_f3bc_c909, Cache::Default, SINGLE, 500).await;
    alternate(0xbb67_ae85_84ca_a73b, Cache::Tiny(48 << 10), SINGLE, 400).await;
}

#[tokio::test]
async fn two_databases_alternating_through_level_restarts_disk_tier() {
    alternate(0x3c6e_f372_fe94_f82b, Cache::Disk, ALL, 500).await;
}

/// The current blob of the one leaf of store "s" and its chain (empty for
/// a whole leaf or a delta with no chain), and whether it is a delta.
async fn leaf_shape(env: &Env) -> (PhysicalId, Vec<PhysicalId>, bool) {
    let mut found = None;
    for h in env.registry.list_handles().await.unwrap() {
        let b = env.blobs.get(h.physical_id).await.unwrap();
        if LeafDelta::is_delta(&b) {
            assert!(found.is_none(), "more than one delta leaf");
            found = Some((h.physical_id, LeafDelta::decode(&b).unwrap().chain, true));
        } else if let Ok(Node::Leaf { .. }) = Node::decode(&b) {
            found.get_or_insert((h.physical_id, Vec::new(), false));
        }
    }
    found.unwrap()
}

/// Scripted: database A writes a chain through its first level restart
/// while database B reads every blob (its cache holds each, loaded
/// through `cached_link`); B takes A's restart for a link (restarts count
/// 1 where A's is 2). Then:
/// - `b_first`: B commits where its count says a level is full and A's
///   does not: B's restart keeps only the first delta and folds A's
///   restart, which becomes obsolete;
/// - else A goes on to its own second level restart (keeping its first
///   restart); B loads it on top of A's first restart, as a link again,
///   and commits until its own level restart, which folds both of A's
///   restarts.
///
/// Then A loads B's restart (cold: A dropped the blob it names) and
/// writes a delta with no chain. Every commit mixes puts and deletes
/// (keys the base holds, keys the chain put); every read of both, and of
/// a cold database, agrees with the model; every delta's blobs delete
/// only keys held just before them.
/// Store "s" with 200 even keys and 100-byte values, loaded in one
/// commit (one leaf of up to 400 items): the model of it.
async fn load_one_leaf(db: &Database) -> Model {
    db.create_store("s", small(400)).await.unwrap();
    let load: Model = (0..200u32).map(|i| (key(i * 2), vec![(i % 251) as u8; 100])).collect();
    let l = load.clone();
    db.run_write(|tx| {
        let l = l.clone();
        async move {
            let s = tx.bytes_store("s").await?;
            for (k, v) in l {
                s.upsert(&k, &v).await?;
            }
            Ok(())
        }
    })
    .await
    .unwrap();
    load
}

async fn scripted_cross_restart(b_first: bool) {
    let mut rng = Rng(if b_first { 0xfeed_0001 } else { 0xfeed_0002 });
    let mut env = Env::new(Cache::Default);
    let dbs = [env.open().await, env.open().await];
    let mut model = load_one_leaf(&dbs[0]).await;
    let window: Vec<Vec<u8>> = (100..130u32).map(key).collect();
    let probe: Vec<Vec<u8>> = (90..140u32).map(key).collect();
    let mut step = 0u32;
    // One commit by `who`, then both databases read the leaf.
    let mut commit = |who: usize, model: &mut Model, rng: &mut Rng| {
        step += 1;
        let ops: Ops = (0..1 + rng.below(3))
            .map(|_| {
                let k = window[rng.below(window.len() as u64) as usize].clone();
                let tag = u64::from(step) << 8 | rng.below(256);
                (rng.below(9), k, small_value(rng, tag))
            })
            .collect();
        let what = format!("b_first {b_first} commit {step} by {who}");
        let (dbs, env, probe) = (&dbs, &env, &probe);
        let before = model.clone();
        async move {
            let after = write(&dbs[who], &before, &ops, false, &what)
                .await
                .expect("no conflict: one writer at a time");
            check_delta(env, leaf_shape(env).await.0, &what).await;
            for (i, db) in dbs.iter().enumerate() {
                peek(db, &after, probe, &format!("{what}, read by {i}")).await;
            }
            after
        }
    };
    let (a, b) = (0, 1);
    // A: the first delta (no chain), then links until its level restart.
    // (A commit may change nothing: a key put and deleted again.)
    while !leaf_shape(&env).await.2 {
        model = commit(a, &mut model, &mut rng).await;
    }
    let (first, chain, _) = leaf_shape(&env).await;
    assert!(chain.is_empty(), "the first delta has no chain");
    loop {
        let (_, before, _) = leaf_shape(&env).await;
        model = commit(a, &mut model, &mut rng).await;
        let (_, now, _) = leaf_shape(&env).await;
        if now.len() < before.len() {
            assert_eq!(now, vec![first], "A's first level restart keeps the first delta");
            break;
        }
    }
    let (a_restart, _, _) = leaf_shape(&env).await;
    if b_first {
        // A links while the chain (with the new blob) is under 9 blobs:
        // A counts 2 restarts, so 7 links; B counts 1, so 8.
        while leaf_shape(&env).await.1.len() + 1 < 9 {
            model = commit(a, &mut model, &mut rng).await;
        }
        let (_, before, _) = leaf_shape(&env).await;
        assert!(before.contains(&a_restart));
        model = commit(b, &mut model, &mut rng).await;
        let (_, now, _) = leaf_shape(&env).await;
        assert_eq!(now, vec![first], "B's level restart folds A's restart (B took it for a link)");
    } else {
        // A goes on to its second level restart, keeping its first.
        loop {
            let (_, before, _) = leaf_shape(&env).await;
            model = commit(a, &mut model, &mut rng).await;
            let (_, now, _) = leaf_shape(&env).await;
            if now.len() < before.len() {
                assert_eq!(now, vec![first, a_restart], "A's second level restart keeps its first");
                break;
            }
        }
        // B links on A's second restart (1 restart by its count) until
        // its level is full.
        loop {
            let (was, before, _) = leaf_shape(&env).await;
            model = commit(b, &mut model, &mut rng).await;
            let (is, now, _) = leaf_shape(&env).await;
            if now.len() < before.len() {
                assert_eq!(now, vec![first], "B's level restart folds both of A's restarts");
                break;
            }
            assert!(is == was || now.len() == before.len() + 1, "B links");
        }
    }
    // A: B's restart names A's first delta, a restart A kept cached when
    // it linked on top of it (the registry is shared): A loads B's
    // restart on top of it, with no cold read, and links.
    let (b_restart, kept, _) = leaf_shape(&env).await;
    model = commit(a, &mut model, &mut rng).await;
    let (_, now, delta) = leaf_shape(&env).await;
    let linked: Vec<PhysicalId> = kept.iter().copied().chain([b_restart]).collect();
    assert!(delta && now == linked, "A links on B's restart: {now:?}, not {linked:?}");
    // More of both, taking turns.
    for i in 0..60 {
        model = commit(i % 2, &mut model, &mut rng).await;
    }
    for (i, db) in dbs.iter().enumerate() {
        check_reads(db, &model, &probe, &mut rng, &format!("b_first {b_first}: db {i} at the end")).await;
    }
    finish(&mut env, &dbs, &model, &probe, &mut rng, &format!("b_first {b_first}")).await;
}

#[tokio::test]
async fn a_restart_of_another_database_is_folded_as_a_link_when_its_level_fills_first() {
    scripted_cross_restart(true).await;
}

#[tokio::test]
async fn two_restarts_of_another_database_are_folded_as_links() {
    scripted_cross_restart(false).await;
}

/// A longer campaign: `SOP_LEVELS_SEEDS` seeds of each mode and cache
/// (nothing when unset).
#[tokio::test]
async fn campaign() {
    let n: u64 = std::env::var("SOP_LEVELS_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    for i in 1..=n {
        let seed = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let cache = match i % 4 {
            0 => Cache::Default,
            1 => Cache::Tiny(48 << 10),
            2 => Cache::Tiny(8 << 10),
            _ => Cache::Tiny(160 << 10),
        };
        let mode = match i % 4 {
            0 => ALL,
            1 => WARM,
            2 => RACE,
            _ => SINGLE,
        };
        alternate(seed, cache, mode, 400).await;
    }
}

/// A reader (a read transaction begun before, and one of another
/// database) holds the leaf as one link of a level; then the writer's
/// level restart makes the links obsolete and the collector runs. The
/// reader, reading on with a cache too small to keep the leaf, sees its
/// snapshot's data or a retryable conflict, never a missing blob; the
/// blobs still named by the live chain all exist.
#[tokio::test]
async fn a_reader_across_a_level_restart_and_its_collection() {
    for (tiny, exclusive) in [(false, false), (true, false), (true, true)] {
        let mut env = Env::new(if tiny { Cache::Tiny(8 << 10) } else { Cache::Default });
        env.exclusive = exclusive;
        let dbs = if exclusive {
            let db = env.open().await;
            // A second "reader database" is the same one here.
            let second = db.clone();
            [db, second]
        } else {
            [env.open().await, env.open().await]
        };
        let mut model = load_one_leaf(&dbs[0]).await;
        let mut rng = Rng(0xabcd_ef01);
        let probe: Vec<Vec<u8>> = (90..140u32).map(key).collect();
        // Commits until the chain holds a restart and a few links.
        let mut step = 0u64;
        let mut one = |model: &mut Model, rng: &mut Rng| {
            step += 1;
            let k = key(100 + 2 * rng.below(20) as u32 + 1);
            let v = small_value(rng, step);
            model.insert(k.clone(), v.clone());
            let db = &dbs[0];
            async move {
                db.run_write(move |tx| {
                    let (k, v) = (k.clone(), v.clone());
                    async move { tx.bytes_store("s").await?.upsert(&k, &v).await }
                })
                .await
                .unwrap();
            }
        };
        for _ in 0..12 {
            one(&mut model, &mut rng).await;
        }
        let snapshot = model.clone();
        let readers = [dbs[0].begin_read().await.unwrap(), dbs[1].begin_read().await.unwrap()];
        for r in &readers {
            let s = r.bytes_store("s").await.unwrap();
            assert_eq!(s.get(&probe[0]).await.unwrap().map(|v| v.to_vec()), snapshot.get(&probe[0]).cloned());
        }
        // Through the next level restart, and collected.
        for _ in 0..10 {
            one(&mut model, &mut rng).await;
        }
        dbs[0].flush_gc().await.unwrap();
        for (i, r) in readers.into_iter().enumerate() {
            let s = r.bytes_store("s").await.unwrap();
            let mut got = Vec::new();
            let mut failed = None;
            for k in &probe {
                match s.get(k).await {
                    Ok(v) => got.push(v.map(|v| v.to_vec())),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            match failed {
                None => {
                    let want: Vec<Option<Vec<u8>>> = probe.iter().map(|k| snapshot.get(k).cloned()).collect();
                    let latest: Vec<Option<Vec<u8>>> = probe.iter().map(|k| model.get(k).cloned()).collect();
                    assert!(
                        got == want || got == latest,
                        "tiny {tiny}: reader {i} read neither its snapshot nor the latest"
                    );
                    let c = r.commit().await;
                    eprintln!(
                        "tiny {tiny}: reader {i} read {}; commit {:?}",
                        if got == want { "its snapshot" } else { "the latest" },
                        c.as_ref().map(|_| ()).map_err(|e| e.kind())
                    );
                    if got != want {
                        assert!(
                            c.is_err(),
                            "tiny {tiny}: reader {i} committed after reading past its snapshot"
                        );
                    }
                }
                Some(e) => {
                    eprintln!("tiny {tiny}: reader {i}: {e} ({:?})", e.kind());
                    assert!(e.is_conflict(), "tiny {tiny}: reader {i}: {e}");
                }
            }
        }
        check_live_chains(&env, &format!("tiny {tiny}")).await;
        for db in &dbs {
            check_reads(db, &model, &probe, &mut rng, &format!("tiny {tiny}: after")).await;
        }
        finish(&mut env, &dbs, &model, &probe, &mut rng, &format!("tiny {tiny}")).await;
    }
}
