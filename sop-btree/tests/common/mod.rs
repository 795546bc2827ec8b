//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ops::Bound;
use std::time::Duration;

use sop_btree::{Config, Database, EmbeddedBlobs, StoreOptions};

/// An in-memory database with immediate cleanup (no grace period).
pub(crate) async fn memory_db() -> Database {
    let mut config = Config::memory();
    config.gc_grace = Duration::ZERO;
    Database::open(config).await.expect("open memory db")
}

/// An embedded database in `dir` with immediate cleanup (default blob
/// placement: the registry's RocksDB).
pub(crate) async fn embedded_db(dir: &std::path::Path) -> Database {
    embedded_db_with(dir, EmbeddedBlobs::default()).await
}

/// An embedded database with blobs where `blobs` says.
pub(crate) async fn embedded_db_with(dir: &std::path::Path, blobs: EmbeddedBlobs) -> Database {
    let mut config = Config::embedded(dir);
    config.gc_grace = Duration::ZERO;
    config.embedded_blobs = blobs;
    Database::open(config).await.expect("open embedded db")
}

/// Store options with a small slot length, so splits and merges happen.
pub(crate) fn small(slot_length: u32) -> StoreOptions {
    StoreOptions { slot_length, ..StoreOptions::default() }
}

/// Asserts that `Database::check` finds nothing wrong.
pub(crate) async fn assert_healthy(db: &Database) {
    let report = db.check().await.expect("check runs");
    assert!(report.is_ok(), "check found problems: {:#?}", report.problems);
}

/// Creates store `name` with `accounts` accounts (`u32 -> i64`) of 100 each.
pub(crate) async fn open_accounts(db: &Database, name: &'static str, slot: u32, accounts: u32) {
    db.create_store(name, small(slot)).await.expect("create accounts");
    db.run_write(|tx| async move {
        let s = tx.store::<u32, i64>(name).await?;
        for a in 0..accounts {
            s.insert(&a, &100).await?;
        }
        Ok(())
    })
    .await
    .expect("seed accounts");
}

/// Creates store `name` (slot length 4) holding `i -> i` for `i` in `0..n`.
pub(crate) async fn seeded_store(db: &Database, name: &'static str, n: u32) {
    db.create_store(name, small(4)).await.expect("create store");
    db.run_write(|tx| async move {
        let s = tx.store::<u32, u32>(name).await?;
        for i in 0..n {
            s.insert(&i, &i).await?;
        }
        Ok(())
    })
    .await
    .expect("seed store");
}

/// Rounds of a fault test: `SOP_FAULT_ROUNDS` (the long campaign,
/// `cargo xtask faults`), else `default` (the CI variant).
pub(crate) fn rounds(default: u32) -> u32 {
    std::env::var("SOP_FAULT_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The fault seed: `SOP_FAULT_SEED` (set by `cargo xtask faults`), else 7.
pub(crate) fn fault_seed() -> u64 {
    std::env::var("SOP_FAULT_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(7)
}

/// Runs `f`, failing the test if it takes over 60 s (a deadlock or a hang
/// under faults).
pub(crate) async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(60), f).await.expect("an operation hung under faults")
}

/// A bound of kind 0 (included), 1 (excluded) or 2 (unbounded) at `key`.
pub(crate) fn bound(kind: u8, key: &[u8]) -> Bound<&[u8]> {
    match kind {
        0 => Bound::Included(key),
        1 => Bound::Excluded(key),
        _ => Bound::Unbounded,
    }
}

/// The model's range, empty where `BTreeMap::range` would panic (start
/// past end, or an empty excluded interval).
pub(crate) fn model_range(
    model: &BTreeMap<Vec<u8>, Vec<u8>>,
    lo: Bound<&[u8]>,
    hi: Bound<&[u8]>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    if let (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) = (lo, hi)
        && (a > b || (a == b && !matches!((lo, hi), (Bound::Included(_), Bound::Included(_)))))
    {
        return Vec::new();
    }
    let range = (lo.map(<[u8]>::to_vec), hi.map(<[u8]>::to_vec));
    model.range(range).map(|(k, v)| (k.clone(), v.clone())).collect()
}
