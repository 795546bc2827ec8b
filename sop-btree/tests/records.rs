//! On an object store, a commit's nodes are one record (one object, one
//! PUT), read back part by part; parts its successors replaced are
//! reclaimed once a record has no live part, and `check` stays clean
//! throughout.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sop_btree::{Config, Database, StoreOptions};
use sop_core::{BlobStore, Registry};
use sop_registry::MemRegistry;
use sop_store::ObjectBlobStore;

/// Objects in the store's directory: (records, dead lists, plain blobs).
fn objects(dir: &Path) -> (usize, usize, usize) {
    let mut out = (0, 0, 0);
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            let (r, d, b) = objects(&p);
            out = (out.0 + r, out.1 + d, out.2 + b);
        } else if p.extension().is_some_and(|x| x == "rec") {
            out.0 += 1;
        } else if p.extension().is_some_and(|x| x == "dead") {
            out.1 += 1;
        } else {
            out.2 += 1;
        }
    }
    out
}

fn key(i: u32) -> Vec<u8> {
    format!("k{:06}", (i * 7919) % 100_000).into_bytes()
}

async fn write(db: &Database, keys: std::ops::Range<u32>, value: Option<&'static [u8]>) {
    db.run_write(move |tx| {
        let keys = keys.clone();
        async move {
            let s = tx.bytes_store("s").await?;
            for i in keys {
                match value {
                    Some(v) => s.upsert(&key(i), v).await?,
                    None => {
                        s.remove(&key(i)).await?;
                    }
                }
            }
            Ok(())
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_is_one_record_and_dead_records_are_reclaimed() {
    let dir = tempfile::tempdir().unwrap();
    let registry: Arc<dyn Registry> = Arc::new(MemRegistry::new());
    let blobs: Arc<dyn BlobStore> = Arc::new(ObjectBlobStore::local(dir.path(), false).unwrap());
    let mut config = Config::from_parts(registry, blobs, true);
    config.gc_grace = Duration::ZERO;
    config.cache.memory_bytes = 1; // every read goes to the store
    let db = Database::open(config).await.unwrap();
    db.create_store("s", StoreOptions { slot_length: 16, ..StoreOptions::default() }).await.unwrap();
    db.flush_gc().await.unwrap();
    let before = objects(dir.path());

    // 2 000 items into 16-item leaves: hundreds of nodes, one object.
    write(&db, 0..2000, Some(b"first")).await;
    let after = objects(dir.path());
    assert_eq!(after.0, before.0 + 1, "one record for the commit: {before:?} -> {after:?}");
    assert_eq!(after.2, before.2, "no plain blob for nodes");
    let got = db.begin_read().await.unwrap().bytes_store("s").await.unwrap().get(&key(1234)).await.unwrap();
    assert_eq!(got.as_deref(), Some(&b"first"[..]));

    // Rewrite everything, then delete it: every record of the load dies.
    for c in 0..4 {
        write(&db, c * 500..(c + 1) * 500, Some(b"second")).await;
    }
    let got = db.begin_read().await.unwrap().bytes_store("s").await.unwrap().get(&key(77)).await.unwrap();
    assert_eq!(got.as_deref(), Some(&b"second"[..]));
    for c in 0..4 {
        write(&db, c * 500..(c + 1) * 500, None).await;
    }
    db.compact().await.unwrap();
    let report = db.check().await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    let left = objects(dir.path());
    eprintln!("before {before:?}, after the load {after:?}, left {left:?}");
    // What is live: the store's root leaf (one part of the last commit's
    // record) and at most one dead list of parts waiting for that record.
    assert!(left.0 <= 2 && left.1 <= 1, "left after deleting everything: {left:?}");
    assert_eq!(db.begin_read().await.unwrap().bytes_store("s").await.unwrap().count().await.unwrap(), 0);
}
