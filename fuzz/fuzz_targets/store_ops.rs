//! Arbitrary operation sequences on a store with slot length 4 (so that
//! every few operations split or merge nodes), in transactions that commit
//! or roll back, against a `BTreeMap` model; `check()` must pass after.
#![no_main]

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sop_btree::{Config, Database, StoreOptions};

#[derive(Debug, Arbitrary)]
enum Op {
    Upsert(u8, u8),
    Remove(u8),
    Get(u8),
    /// Bounds with their kinds (`% 3`: included, excluded, unbounded).
    Range(u8, u8, u8, u8, bool),
    Commit,
    Rollback,
}

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime"))
}

async fn db() -> &'static Database {
    static DB: tokio::sync::OnceCell<Database> = tokio::sync::OnceCell::const_new();
    DB.get_or_init(|| async {
        let mut config = Config::memory();
        config.cache.memory_bytes = 8 << 20;
        config.gc_grace = std::time::Duration::ZERO;
        Database::open(config).await.expect("open")
    })
    .await
}

fn key(k: u8) -> Vec<u8> {
    vec![b'k', k / 16, k % 16]
}

fn bound(kind: u8, key: &[u8]) -> Bound<&[u8]> {
    match kind % 3 {
        0 => Bound::Included(key),
        1 => Bound::Excluded(key),
        _ => Bound::Unbounded,
    }
}

/// The model's range, empty where `BTreeMap::range` would panic.
fn model_range(model: &BTreeMap<Vec<u8>, Vec<u8>>, lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> Vec<(Vec<u8>, Vec<u8>)> {
    if let (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) = (lo, hi)
        && (a > b || (a == b && !matches!((lo, hi), (Bound::Included(_), Bound::Included(_)))))
    {
        return Vec::new();
    }
    let range = (lo.map(<[u8]>::to_vec), hi.map(<[u8]>::to_vec));
    model.range(range).map(|(k, v)| (k.clone(), v.clone())).collect()
}

fuzz_target!(|ops: Vec<Op>| {
    rt().block_on(async {
        // One database for the whole run (opening one per input leaks the
        // cache's background tasks on this runtime); a fresh store per input.
        let db = db().await;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!("s{}", NEXT.fetch_add(1, Ordering::Relaxed));
        db.create_store(&name, StoreOptions { slot_length: 4, ..StoreOptions::default() })
            .await
            .expect("create");
        let mut committed: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut model = committed.clone();
        let mut tx = db.begin_write().await.expect("begin");
        let mut st = tx.bytes_store(&name).await.expect("store");
        for op in ops.iter().take(400) {
            match op {
                Op::Upsert(k, v) => {
                    st.upsert(&key(*k), &[*v]).await.expect("upsert");
                    model.insert(key(*k), vec![*v]);
                }
                Op::Remove(k) => {
                    let removed = st.remove(&key(*k)).await.expect("remove");
                    assert_eq!(removed, model.remove(&key(*k)).is_some());
                }
                Op::Get(k) => {
                    let got = st.get(&key(*k)).await.expect("get").map(|b| b.to_vec());
                    assert_eq!(got.as_ref(), model.get(&key(*k)));
                }
                Op::Range(a, b, lk, hk, rev) => {
                    let (lo, hi) = (key(*a.min(b)), key(*a.max(b)));
                    let (lo, hi) = (bound(*lk, &lo), bound(*hk, &hi));
                    let mut cur = if *rev { st.range_rev(lo, hi) } else { st.range(lo, hi) };
                    let got: Vec<(Vec<u8>, Vec<u8>)> = cur
                        .take(usize::MAX)
                        .await
                        .expect("range")
                        .into_iter()
                        .map(|(k, v)| (k.to_vec(), v.to_vec()))
                        .collect();
                    let mut want = model_range(&model, lo, hi);
                    if *rev {
                        want.reverse();
                    }
                    assert_eq!(got, want, "{lo:?}..{hi:?} reverse {rev}");
                }
                Op::Commit | Op::Rollback => {
                    if matches!(op, Op::Commit) {
                        tx.commit().await.expect("commit");
                        committed = model.clone();
                    } else {
                        tx.rollback().await;
                        model = committed.clone();
                    }
                    tx = db.begin_write().await.expect("begin");
                    st = tx.bytes_store(&name).await.expect("store");
                }
            }
        }
        tx.commit().await.expect("final commit");
        let report = db.check().await.expect("check");
        assert!(report.is_ok(), "{:?}", report.problems);
        assert_eq!(db.store_info(&name).await.expect("info").count, model.len() as u64);
        db.remove_store(&name).await.expect("remove store");
        db.flush_gc().await.expect("gc");
        let report = db.check().await.expect("check");
        assert!(report.is_ok() && report.stores == 0, "after remove_store: {:?}", report.problems);
    });
});
