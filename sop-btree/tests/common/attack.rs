//! Helpers of the review attacks (`attack_*.rs`): large values in their own
//! blobs, databases with a chosen grace period, and a small generator.

use std::time::Duration;

use bytes::Bytes;
use sop_btree::{Config, Database, ErrorKind, StoreOptions};
use sop_core::Result;

pub(crate) fn big(n: u8) -> Vec<u8> {
    vec![n; 3000]
}

pub(crate) fn big_opts() -> StoreOptions {
    StoreOptions { value_in_node_threshold: 64, ..StoreOptions::default() }
}

pub(crate) async fn mem_db(grace: Duration) -> Database {
    let mut config = Config::memory();
    config.gc_grace = grace;
    Database::open(config).await.unwrap()
}

/// Store `s` with large values `k0..k{n}` = big(1), and `small` = "x".
pub(crate) async fn seed_big(db: &Database, n: u8) {
    db.create_store("s", big_opts()).await.unwrap();
    db.run_write(move |tx| async move {
        let s = tx.bytes_store("s").await?;
        for i in 0..n {
            s.insert(format!("k{i}").as_bytes(), &big(1)).await?;
        }
        s.insert(b"small", b"x").await
    })
    .await
    .unwrap();
}

pub(crate) async fn replace_all(db: &Database, n: u8, v: u8) {
    db.run_write(move |tx| async move {
        let s = tx.bytes_store("s").await?;
        for i in 0..n {
            s.upsert(format!("k{i}").as_bytes(), &big(v)).await?;
        }
        Ok(())
    })
    .await
    .unwrap();
}

/// A read that may legitimately fail with a conflict, `Closed` or `Timeout`,
/// or succeed with the old value; anything else (above all `Corruption`,
/// "the blob is missing") breaks "GC never deletes what a live
/// transaction may read".
pub(crate) fn assert_old_or_retryable(got: Result<Option<Bytes>>, old: &[u8], what: &str) {
    match got {
        Ok(Some(v)) => assert_eq!(&v[..], old, "{what}: a wrong value"),
        Ok(None) => panic!("{what}: an existing key read as absent"),
        Err(e) => assert!(
            e.is_conflict() || matches!(e.kind(), ErrorKind::Closed | ErrorKind::Timeout),
            "{what}: {:?}: {e}",
            e.kind()
        ),
    }
}

/// A small deterministic generator (xorshift), seeded per test.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
