//! Regression (issue 11, items 8 and 9): errors that were swallowed or
//! misread, and a limit that did not hold.
//! - A merge attempt whose discard failed to delete its staged blobs
//!   overwrote its intent on the next attempt, orphaning them for good;
//!   they are now carried into the next attempt's intent.
//! - The 4 096-byte key limit held for the user key, not for the stored
//!   form of keys in non-unique stores (escaped, plus an 18-byte suffix).
//! - A cursor step that failed (a leaf or a value in a blob of its own
//!   that could not be read) had already moved the cursor on: a caller
//!   that retried silently missed that item, or the rest of the range.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sop_btree::{Config, Database, ErrorKind, MAX_KEY_LEN, StoreOptions};
use sop_core::Registry;
use sop_registry::MemRegistry;

#[tokio::test]
async fn a_failed_discard_does_not_orphan_staged_blobs() {
    let registry: Arc<dyn Registry> = Arc::new(MemRegistry::new());
    let blobs = common::TestBlobs::memory();
    let open = || {
        let mut config = Config::from_parts(registry.clone(), blobs.clone(), true);
        config.gc_grace = Duration::ZERO;
        Database::open(config)
    };
    let db = open().await.unwrap();
    db.create_store("s", StoreOptions::default()).await.unwrap();
    let t1 = db.begin_write().await.unwrap();
    t1.store::<u32, u32>("s").await.unwrap().upsert(&1, &1).await.unwrap();
    // A concurrent blind write to the same leaf: t1's publish fails on the
    // node, its discard fails, and a swarm merge commits it.
    db.run_write(|tx| async move { tx.store::<u32, u32>("s").await?.upsert(&2, &2).await }).await.unwrap();
    blobs.fail_deletes.store(true, Ordering::SeqCst);
    let merged = t1.commit().await;
    blobs.fail_deletes.store(false, Ordering::SeqCst);
    assert_eq!(merged.unwrap().merges, 1);
    drop(t1);
    db.close().await.unwrap();
    drop(db);
    // Recovery (at the next open) finishes what the failed deletions left.
    let db = open().await.unwrap();
    assert!(registry.list_intents(u64::MAX).await.unwrap().is_empty());
    let report = db.check().await.unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    let got = db.run_read(|tx| async move { tx.store::<u32, u32>("s").await?.get(&1).await }).await.unwrap();
    assert_eq!(got, Some(1));
}

#[tokio::test]
async fn the_key_limit_holds_for_stored_keys_of_non_unique_stores() {
    let db = common::memory_db().await;
    db.create_store("dups", StoreOptions { unique: false, ..StoreOptions::default() }).await.unwrap();
    let tx = db.begin_write().await.unwrap();
    let s = tx.bytes_store("dups").await.unwrap();
    let err = s.insert(&vec![b'k'; MAX_KEY_LEN], b"v").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    // Zero bytes are escaped (doubled) in the stored form.
    let err = s.insert(&vec![0u8; MAX_KEY_LEN / 2], b"v").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    s.insert(&vec![b'k'; MAX_KEY_LEN - 18], b"v").await.unwrap();
    tx.commit().await.unwrap();
}

/// A cursor over values kept in blobs of their own, on a cold cache, while
/// every third blob read fails (an I/O error, not "gone"): a caller that
/// retries each failed step gets every item, in order, none skipped, with
/// `next` and with `next_ref`, in both directions.
#[tokio::test]
async fn a_cursor_step_that_failed_is_retried_not_skipped() {
    let registry: Arc<dyn Registry> = Arc::new(MemRegistry::new());
    let blobs = common::TestBlobs::memory();
    let open = || Database::open(Config::from_parts(registry.clone(), blobs.clone(), true));
    let db = open().await.unwrap();
    let opts = StoreOptions { slot_length: 4, value_in_node_threshold: 8, ..StoreOptions::default() };
    db.create_store("s", opts).await.unwrap();
    let expected: Vec<(Vec<u8>, Vec<u8>)> =
        (0..30u32).map(|k| (k.to_be_bytes().to_vec(), vec![k as u8; 20])).collect();
    let items = expected.clone();
    db.run_write(move |tx| {
        let items = items.clone();
        async move {
            let s = tx.bytes_store("s").await?;
            for (k, v) in items {
                s.insert(&k, &v).await?;
            }
            Ok(())
        }
    })
    .await
    .unwrap();
    db.close().await.unwrap();
    for (reverse, borrowed) in [(false, false), (true, false), (false, true), (true, true)] {
        let db = open().await.unwrap(); // a cold cache
        blobs.fail_get_every.store(3, Ordering::SeqCst);
        let tx = db.begin_read().await.unwrap();
        let s = tx.bytes_store("s").await.unwrap();
        let mut cur = match reverse {
            false => s.range(std::ops::Bound::Unbounded, std::ops::Bound::Unbounded),
            true => s.range_rev(std::ops::Bound::Unbounded, std::ops::Bound::Unbounded),
        };
        let (mut got, mut failures) = (Vec::new(), 0);
        loop {
            let step = match borrowed {
                false => cur.next().await.map(|o| o.map(|(k, v)| (k.to_vec(), v.to_vec()))),
                true => cur.next_ref().await.map(|o| o.map(|(k, v)| (k.to_vec(), v.to_vec()))),
            };
            match step {
                Ok(Some(kv)) => got.push(kv),
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
                    failures += 1;
                    assert!(failures < 1000, "no progress");
                }
            }
        }
        blobs.fail_get_every.store(0, Ordering::SeqCst);
        let mut want = expected.clone();
        if reverse {
            want.reverse();
        }
        assert!(failures > 0, "reverse={reverse} borrowed={borrowed}: no read failed");
        assert_eq!(got, want, "reverse={reverse} borrowed={borrowed}");
        tx.rollback().await;
        db.close().await.unwrap();
    }
}
