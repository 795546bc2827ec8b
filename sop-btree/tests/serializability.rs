//! Serializability, checked on recorded histories: concurrent clients run
//! list-append transactions on the embedded engine (slot length 4, so that
//! leaves split under contention), every operation's result is recorded,
//! and the Elle-style checker in `history/` looks for dependency cycles and
//! dirty reads. A build with read validation turned off must be caught.
#![cfg(feature = "embedded")]

mod common;
mod history;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use history::{Elem, Op, Txn, check};
use sop_btree::{Config, Database, ErrorKind, StoreOptions};

const STORE: &str = "lists";

fn key(k: u32) -> Vec<u8> {
    format!("k{k:03}").into_bytes()
}

fn decode(v: &[u8]) -> Vec<Elem> {
    v.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect()
}

/// Runs `clients` × `per_client` random transactions (their plans drawn
/// from `seed`); returns the history and each key's final list.
async fn run(
    db: &Database,
    seed: u64,
    clients: u64,
    per_client: usize,
    keys: u32,
) -> (Vec<Txn>, BTreeMap<u32, Vec<Elem>>) {
    let next_elem = Arc::new(AtomicU64::new(1));
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (db, next_elem) = (db.clone(), next_elem.clone());
            tokio::spawn(async move {
                let mut seed = 0x2545_f491_4f6c_dd1d_u64 ^ (seed << 20) ^ (c + 1).wrapping_mul(0x9e37_79b9);
                let mut rnd = move |n: u64| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed % n
                };
                let mut out = Vec::new();
                for _ in 0..per_client {
                    let plan: Vec<(bool, u32)> =
                        (0..1 + rnd(4)).map(|_| (rnd(2) == 0, rnd(u64::from(keys)) as u32)).collect();
                    let tx = db.begin_write().await.unwrap();
                    let st = tx.bytes_store(STORE).await.unwrap();
                    let mut ops = Vec::new();
                    for (read, k) in plan {
                        let cur = st.get(&key(k)).await.unwrap().map(|b| decode(&b)).unwrap_or_default();
                        if read {
                            ops.push(Op::Read { key: k, saw: cur });
                        } else {
                            let elem = next_elem.fetch_add(1, Ordering::Relaxed);
                            let mut bytes: Vec<u8> = cur.iter().flat_map(|e| e.to_le_bytes()).collect();
                            bytes.extend_from_slice(&elem.to_le_bytes());
                            st.upsert(&key(k), &bytes).await.unwrap();
                            ops.push(Op::Append { key: k, elem });
                        }
                    }
                    let committed = match tx.commit().await {
                        Ok(_) => true,
                        Err(e) if e.kind() == ErrorKind::Conflict => false,
                        Err(e) => panic!("commit failed: {e}"),
                    };
                    out.push(Txn { ops, committed });
                }
                out
            })
        })
        .collect();
    let mut history = Vec::new();
    for t in tasks {
        history.extend(t.await.unwrap());
    }
    let finals = db
        .run_read(|tx| async move {
            let st = tx.bytes_store(STORE).await?;
            let mut m = BTreeMap::new();
            for k in 0..keys {
                if let Some(v) = st.get(&key(k)).await? {
                    m.insert(k, decode(&v));
                }
            }
            Ok(m)
        })
        .await
        .unwrap();
    (history, finals)
}

async fn open(dir: &std::path::Path, validate_reads: bool) -> Database {
    let mut config = Config::embedded(dir);
    config.validate_reads = validate_reads;
    config.sync = false;
    let db = Database::open(config).await.unwrap();
    db.create_store(STORE, StoreOptions { slot_length: 4, ..StoreOptions::default() }).await.unwrap();
    db
}

/// `SOP_SERIAL_ROUNDS` (the long campaign, `cargo xtask serial`), else 1.
fn serial_rounds() -> u64 {
    std::env::var("SOP_SERIAL_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1)
}

/// Each round is a fresh database, its own seed, and 16, 8 or 32 clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn histories_of_the_engine_are_serializable() {
    let (mut committed_all, mut aborted_all) = (0, 0);
    let rounds = serial_rounds();
    for round in 0..rounds {
        let clients = [16, 8, 32][(round % 3) as usize];
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path(), true).await;
        let (history, finals) = run(&db, round, clients, 40, 24).await;
        let committed = history.iter().filter(|t| t.committed).count();
        let aborted = history.len() - committed;
        let anomalies = check(&history, &finals);
        assert!(anomalies.is_empty(), "round {round}: anomalies:\n{}", anomalies.join("\n"));
        assert!(committed >= history.len() / 4, "too few commits: {committed} of {}", history.len());
        assert!(aborted > 0, "no contention: the run proves little");
        common::assert_healthy(&db).await;
        eprintln!("round {round}, {clients} clients: {committed} committed, {aborted} aborted, serializable");
        committed_all += committed;
        aborted_all += aborted;
    }
    eprintln!("serializable: {rounds} rounds, {committed_all} committed, {aborted_all} aborted, no anomaly");
}

/// A dependency cycle or a read that no serial order explains (a round may
/// show only lost writes; those alone do not prove the cycle search works).
fn is_cycle_anomaly(a: &str) -> bool {
    a.starts_with("G2") || a.starts_with("G1c") || a.contains("not a prefix")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_checker_catches_a_build_without_read_validation() {
    let mut found = Vec::new();
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path(), false).await;
        let (history, finals) = run(&db, round, 16, 40, 24).await;
        let anomalies = check(&history, &finals);
        if let Some(first) = anomalies.first() {
            eprintln!("round {round}: {} anomalies, e.g. {first}", anomalies.len());
        }
        found.extend(anomalies);
        if found.iter().any(|a| is_cycle_anomaly(a)) {
            break;
        }
    }
    assert!(!found.is_empty(), "read validation off, yet no anomaly found in 5 rounds");
    assert!(found.iter().any(|a| is_cycle_anomaly(a)));
}

#[test]
fn the_checker_names_each_anomaly() {
    use Op::{Append as A, Read as R};
    let t = |ops: Vec<Op>, committed| Txn { ops, committed };
    let finals = |v: &[(u32, &[Elem])]| v.iter().map(|(k, l)| (*k, l.to_vec())).collect::<BTreeMap<_, _>>();

    // Serial: T0 appends 1 to x; T1 reads [1] and appends 2 to y.
    let ok = [
        t(vec![A { key: 0, elem: 1 }], true),
        t(vec![R { key: 0, saw: vec![1] }, A { key: 1, elem: 2 }], true),
    ];
    assert!(check(&ok, &finals(&[(0, &[1]), (1, &[2])])).is_empty());

    // Write skew: each reads the other's key empty, then appends.
    let skew = [
        t(vec![R { key: 0, saw: vec![] }, A { key: 1, elem: 1 }], true),
        t(vec![R { key: 1, saw: vec![] }, A { key: 0, elem: 2 }], true),
    ];
    let found = check(&skew, &finals(&[(0, &[2]), (1, &[1])]));
    assert!(found.iter().any(|a| a.starts_with("G2")), "{found:?}");

    // Aborted read: T1 saw T0's element though T0 aborted.
    let dirty = [t(vec![A { key: 0, elem: 1 }], false), t(vec![R { key: 0, saw: vec![1] }], true)];
    let found = check(&dirty, &finals(&[]));
    assert!(found.iter().any(|a| a.starts_with("G1a")), "{found:?}");

    // Intermediate read: T0 appended 1 then 2; T1 saw only [1].
    let inter = [
        t(vec![A { key: 0, elem: 1 }, A { key: 0, elem: 2 }], true),
        t(vec![R { key: 0, saw: vec![1] }], true),
    ];
    let found = check(&inter, &finals(&[(0, &[1, 2])]));
    assert!(found.iter().any(|a| a.starts_with("G1b")), "{found:?}");

    // G0: two keys ordered T0<T1 on one and T1<T0 on the other.
    let g0 = [
        t(vec![A { key: 0, elem: 1 }, A { key: 1, elem: 4 }], true),
        t(vec![A { key: 0, elem: 2 }, A { key: 1, elem: 3 }], true),
    ];
    let found = check(&g0, &finals(&[(0, &[1, 2]), (1, &[3, 4])]));
    assert!(found.iter().any(|a| a.starts_with("G0")), "{found:?}");

    // A lost committed append.
    let lost = [t(vec![A { key: 0, elem: 1 }], true)];
    assert!(check(&lost, &finals(&[])).iter().any(|a| a.starts_with("lost write")));
}
