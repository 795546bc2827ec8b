//! `Database::compact` gives the space of deleted data back and changes no
//! contents (embedded default, where RocksDB keeps dead bytes until a
//! compaction).
#![cfg(feature = "embedded")]

mod common;

use std::path::Path;

use sop_btree::StoreOptions;

fn dir_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let m = e.metadata().unwrap();
            if m.is_dir() { dir_bytes(&e.path()) } else { m.blocks() * 512 }
        })
        .sum()
}

fn key(i: u32) -> Vec<u8> {
    format!("k{i:06}").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compact_reclaims_deleted_space_and_keeps_contents() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::embedded_db(dir.path()).await;
    db.create_store("a", StoreOptions::default()).await.unwrap();
    db.create_store("b", StoreOptions::default()).await.unwrap();
    let value = vec![b'v'; 1000];
    for chunk in 0..20u32 {
        let v = value.clone();
        db.run_write(move |tx| {
            let v = v.clone();
            async move {
                let (a, b) = (tx.bytes_store("a").await?, tx.bytes_store("b").await?);
                for i in chunk * 500..(chunk + 1) * 500 {
                    a.upsert(&key(i), &v).await?;
                    if i % 100 == 0 {
                        b.upsert(&key(i), &v).await?;
                    }
                }
                Ok(())
            }
        })
        .await
        .unwrap();
    }
    let loaded = dir_bytes(dir.path());
    db.remove_store("a").await.unwrap();
    db.compact().await.unwrap();
    let compacted = dir_bytes(dir.path());
    // 10 MB of values went in, 100 KB stay: the rest must be given back.
    assert!(loaded > 10 << 20, "loaded only {loaded} bytes");
    assert!(compacted < loaded / 2, "compact kept {compacted} of {loaded} bytes");
    let got = db
        .run_read(|tx| async move {
            let b = tx.bytes_store("b").await?;
            let mut n = 0;
            for i in (0..10_000).step_by(100) {
                n += usize::from(b.get(&key(i)).await?.is_some());
            }
            Ok(n)
        })
        .await
        .unwrap();
    assert_eq!(got, 100);
    let report = db.check().await.unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    db.close().await.unwrap();
}
