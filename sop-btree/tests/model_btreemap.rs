//! Random operation sequences against `std::collections::BTreeMap` as the
//! model, over small slot lengths so that splits, borrows, merges and root
//! changes happen constantly; `Database::check` after every commit, and a
//! second database over the same registry and blobs (cold caches: every
//! leaf materialized from its base and delta) must read what the model
//! holds.

#![allow(clippy::map_entry)] // the model mirrors the API call by call

mod common;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use common::{bound, model_range, small};
use proptest::prelude::*;
use sop_btree::{Config, Database, ErrorKind, StoreOptions};
use sop_registry::MemRegistry;
use sop_store::ObjectBlobStore;

#[derive(Debug, Clone)]
enum Op {
    Insert(u16, u16),
    Upsert(u16, u16),
    Update(u16, u16),
    Remove(u16),
    Get(u16),
    /// The store's count, inside the transaction (its own writes counted).
    Count,
    /// Bounds `a`, `b` with their kinds (0 included, 1 excluded, 2 none).
    Scan(u16, u16, u8, u8, bool),
    Commit,
    Rollback,
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u16..300;
    prop_oneof![
        4 => (key.clone(), any::<u16>()).prop_map(|(k, v)| Op::Insert(k, v)),
        2 => (key.clone(), any::<u16>()).prop_map(|(k, v)| Op::Upsert(k, v)),
        1 => (key.clone(), any::<u16>()).prop_map(|(k, v)| Op::Update(k, v)),
        3 => key.clone().prop_map(Op::Remove),
        1 => key.clone().prop_map(Op::Get),
        1 => Just(Op::Count),
        2 => (key.clone(), key, 0u8..3, 0u8..3, any::<bool>())
            .prop_map(|(a, b, lk, hk, r)| Op::Scan(a, b, lk, hk, r)),
        1 => Just(Op::Commit),
        1 => Just(Op::Rollback),
    ]
}

fn k(n: u16) -> Vec<u8> {
    format!("key{n:05}").into_bytes()
}

/// Values vary in length so that some land in blobs of their own.
fn v(n: u16) -> Vec<u8> {
    vec![(n % 251) as u8; (n % 40) as usize]
}

/// One database's registry and blob store, to open it again cold.
#[derive(Clone)]
struct Parts(Arc<MemRegistry>, Arc<ObjectBlobStore>);

impl Parts {
    fn new() -> Self {
        Self(Arc::new(MemRegistry::new()), Arc::new(ObjectBlobStore::memory()))
    }

    async fn open(&self) -> Database {
        let mut config = Config::from_parts(self.0.clone(), self.1.clone(), true);
        config.gc_grace = Duration::ZERO;
        Database::open(config).await.expect("open memory db")
    }
}

async fn run(db: &Database, parts: &Parts, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut committed: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut model = committed.clone();
    let mut tx = db.begin_write().await.unwrap();
    for op in ops {
        let s = tx.bytes_store("m").await.unwrap();
        match op {
            Op::Insert(a, b) => {
                let r = s.insert(&k(*a), &v(*b)).await;
                if model.contains_key(&k(*a)) {
                    prop_assert_eq!(r.unwrap_err().kind(), ErrorKind::AlreadyExists);
                } else {
                    r.unwrap();
                    model.insert(k(*a), v(*b));
                }
            }
            Op::Upsert(a, b) => {
                s.upsert(&k(*a), &v(*b)).await.unwrap();
                model.insert(k(*a), v(*b));
            }
            Op::Update(a, b) => {
                let r = s.update(&k(*a), &v(*b)).await;
                if model.contains_key(&k(*a)) {
                    r.unwrap();
                    model.insert(k(*a), v(*b));
                } else {
                    prop_assert_eq!(r.unwrap_err().kind(), ErrorKind::NotFound);
                }
            }
            Op::Remove(a) => {
                prop_assert_eq!(s.remove(&k(*a)).await.unwrap(), model.remove(&k(*a)).is_some());
            }
            Op::Get(a) => {
                let got = s.get(&k(*a)).await.unwrap().map(|b| b.to_vec());
                prop_assert_eq!(got, model.get(&k(*a)).cloned());
            }
            Op::Count => {
                prop_assert_eq!(s.count().await.unwrap(), model.len() as u64);
            }
            Op::Scan(a, b, lk, hk, reverse) => {
                let (lo, hi) = (k(*a.min(b)), k(*a.max(b)));
                let (lo, hi) = (bound(*lk, &lo), bound(*hk, &hi));
                let mut cur = if *reverse { s.range_rev(lo, hi) } else { s.range(lo, hi) };
                let got: Vec<(Vec<u8>, Vec<u8>)> = cur
                    .take(usize::MAX)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .collect();
                let mut want = model_range(&model, lo, hi);
                if *reverse {
                    want.reverse();
                }
                prop_assert_eq!(got, want);
            }
            Op::Commit => {
                tx.commit().await.unwrap();
                committed = model.clone();
                verify(db, parts, &committed).await?;
                tx = db.begin_write().await.unwrap();
            }
            Op::Rollback => {
                tx.rollback().await;
                model = committed.clone();
                tx = db.begin_write().await.unwrap();
            }
        }
    }
    tx.commit().await.unwrap();
    verify(db, parts, &model).await
}

/// `db` and a cold database over the same parts both hold `model`.
async fn verify(
    db: &Database,
    parts: &Parts,
    model: &BTreeMap<Vec<u8>, Vec<u8>>,
) -> Result<(), TestCaseError> {
    let report = db.check().await.unwrap();
    prop_assert!(report.is_ok(), "{:#?}", report.problems);
    prop_assert_eq!(report.items, model.len() as u64);
    reads_model(db, model).await?;
    reads_model(&parts.open().await, model).await
}

async fn reads_model(db: &Database, model: &BTreeMap<Vec<u8>, Vec<u8>>) -> Result<(), TestCaseError> {
    let tx = db.begin_read().await.unwrap();
    let s = tx.bytes_store("m").await.unwrap();
    let all = s.range(Bound::Unbounded, Bound::Unbounded).take(usize::MAX).await.unwrap();
    let all: Vec<(Vec<u8>, Vec<u8>)> = all.into_iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
    let want: Vec<(Vec<u8>, Vec<u8>)> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    prop_assert_eq!(all, want);
    prop_assert_eq!(s.count().await.unwrap(), model.len() as u64);
    tx.commit().await.unwrap();
    Ok(())
}

fn check_slot(slot: u32, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let parts = Parts::new();
        let db = parts.open().await;
        let opts = StoreOptions { value_in_node_threshold: 24, ..small(slot) };
        db.create_store("m", opts).await.unwrap();
        run(&db, &parts, &ops).await
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn slot_4_matches_the_model(ops in prop::collection::vec(op(), 1..400)) {
        check_slot(4, ops)?;
    }

    #[test]
    fn slot_5_matches_the_model(ops in prop::collection::vec(op(), 1..400)) {
        check_slot(5, ops)?;
    }

    /// Leaves wide enough that most commits write deltas, and deltas on
    /// deltas, before one outgrows its share and the leaf is consolidated.
    #[test]
    fn slot_64_matches_the_model(ops in prop::collection::vec(op(), 1..600)) {
        check_slot(64, ops)?;
    }

    #[test]
    fn slot_16_matches_the_model(ops in prop::collection::vec(op(), 1..600)) {
        check_slot(16, ops)?;
    }
}

/// A deterministic long run: fill, then drain, through every tree shape.
#[tokio::test]
async fn fill_then_drain_keeps_every_invariant() {
    let parts = Parts::new();
    let db = parts.open().await;
    db.create_store("m", small(4)).await.unwrap();
    let mut model = BTreeMap::new();
    for round in 0..6u16 {
        let tx = db.begin_write().await.unwrap();
        let s = tx.bytes_store("m").await.unwrap();
        for i in 0..200u16 {
            let key = (i * 37 + round * 11) % 1000;
            s.upsert(&k(key), &v(i)).await.unwrap();
            model.insert(k(key), v(i));
        }
        tx.commit().await.unwrap();
        verify(&db, &parts, &model).await.unwrap();
    }
    let keys: Vec<Vec<u8>> = model.keys().cloned().collect();
    for chunk in keys.chunks(97) {
        let tx = db.begin_write().await.unwrap();
        let s = tx.bytes_store("m").await.unwrap();
        for key in chunk {
            assert!(s.remove(key).await.unwrap());
            model.remove(key);
        }
        tx.commit().await.unwrap();
        verify(&db, &parts, &model).await.unwrap();
    }
    assert!(model.is_empty());
}
