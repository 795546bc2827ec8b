//! Review attacks on the guarantees of commit d7419f1 ("Issue 11
//! correctness"), on garbage collection by low-water mark: cursors, store
//! removal, close, shared and periodic recovery, a stress of readers, writers
//! and flushes. Each test states the invariant it attacks, from a user's
//! side. Tests marked `BROKE` failed on d7419f1 and pass since the fix named
//! in their doc; tests marked `HOLDS` passed from the start. (Split from one
//! file by theme; the shared helpers are `common/attack.rs`.)

mod common;

use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sop_btree::{Config, Database, ErrorKind, StoreOptions};
use sop_core::{BlobStore, Registry};
use sop_registry::MemRegistry;
use sop_store::ObjectBlobStore;

use common::attack::*;

/// BROKE (fixed). A cursor buffers a whole leaf's items (value blob pointers
/// included). `Cursor::next` serves buffered items through `value_of`
/// without `check_live`, so after its transaction committed (and released
/// its epoch) the cursor still reads value blobs that a later commit made
/// obsolete and GC deleted: `Corruption` instead of `Closed`.
#[tokio::test]
async fn attack_cursor_buffer_outlives_its_transaction_commit() {
    for end in ["commit", "rollback"] {
        let db = mem_db(Duration::ZERO).await;
        seed_big(&db, 5).await;
        let reader = db.begin_read().await.unwrap();
        let s = reader.bytes_store("s").await.unwrap();
        let mut cur = s.range(Bound::Unbounded, Bound::Unbounded);
        let (k, v) = cur.next().await.unwrap().unwrap();
        assert_eq!((&k[..], &v[..]), (&b"k0"[..], &big(1)[..]));
        if end == "commit" {
            reader.commit().await.unwrap();
        } else {
            reader.rollback().await;
        }
        replace_all(&db, 5, 2).await;
        tokio::time::timeout(Duration::from_secs(10), db.flush_gc()).await.expect("flush hangs").unwrap();
        let got = cur.next().await.map(|o| o.map(|(_, v)| v));
        assert_old_or_retryable(got, &big(1), &format!("cursor after {end}"));
    }
}

/// BROKE (fixed). `Database::remove_store` deletes every blob of the store at once
/// (`remove_store_contents`), bypassing the low-water mark: a live reader
/// that already loaded the leaf reads a value blob that is gone and gets
/// `Corruption` (a serial order puts it before the removal: it should read
/// the value, or at worst conflict).
#[tokio::test]
async fn attack_remove_store_under_a_live_reader() {
    let db = mem_db(Duration::ZERO).await;
    seed_big(&db, 3).await;
    let reader = db.begin_read().await.unwrap();
    let s = reader.bytes_store("s").await.unwrap();
    assert_eq!(s.get(b"small").await.unwrap().as_deref(), Some(&b"x"[..])); // loads the leaf
    db.remove_store("s").await.unwrap();
    db.flush_gc().await.unwrap();
    assert_old_or_retryable(s.get(b"k1").await, &big(1), "get after remove_store");
}

/// HOLDS. Replaced values stay readable to a live reader across flushes,
/// for point reads and a cursor (still live) that buffered the leaf, with
/// and without a grace period; `flush_gc` returns although the reader is
/// live; the old blobs go once it ends.
#[tokio::test]
async fn attack_live_cursor_across_commits_and_flushes() {
    for grace in [Duration::ZERO, Duration::from_millis(30)] {
        let db = mem_db(grace).await;
        seed_big(&db, 6).await;
        let reader = db.begin_read().await.unwrap();
        let s = reader.bytes_store("s").await.unwrap();
        let mut cur = s.range(Bound::Included(b"k0"), Bound::Included(b"k5"));
        assert_eq!(cur.next().await.unwrap().unwrap().1, big(1));
        for round in 2..5 {
            replace_all(&db, 6, round).await;
            tokio::time::timeout(Duration::from_secs(10), db.flush_gc()).await.expect("flush hangs").unwrap();
        }
        tokio::time::sleep(grace * 3).await;
        for i in 1..6 {
            let (k, v) = cur.next().await.unwrap().unwrap();
            assert_eq!(k, format!("k{i}").as_bytes());
            assert_eq!(v, big(1), "grace {grace:?}");
        }
        assert!(cur.next().await.unwrap().is_none());
        assert_eq!(s.get(b"k3").await.unwrap().unwrap(), big(1));
        assert!(reader.commit().await.unwrap_err().is_conflict());
        db.flush_gc().await.unwrap();
        common::assert_healthy(&db).await;
        let blobs = db.check().await.unwrap().blobs;
        assert!(blobs <= 7, "old value blobs never collected: {blobs}");
    }
}

/// HOLDS. A transaction clone and a store handle kept after commit fail
/// with `Closed`, never read collected blobs.
#[tokio::test]
async fn attack_handles_kept_after_commit() {
    let db = mem_db(Duration::ZERO).await;
    seed_big(&db, 2).await;
    let tx = db.begin_write().await.unwrap();
    let clone = tx.clone();
    let s = tx.bytes_store("s").await.unwrap();
    s.get(b"small").await.unwrap();
    tx.commit().await.unwrap();
    replace_all(&db, 2, 9).await;
    db.flush_gc().await.unwrap();
    assert_eq!(s.get(b"k0").await.unwrap_err().kind(), ErrorKind::Closed);
    assert_eq!(clone.bytes_store("s").await.unwrap_err().kind(), ErrorKind::Closed);
    assert_eq!(
        s.range(Bound::Unbounded, Bound::Unbounded).next().await.unwrap_err().kind(),
        ErrorKind::Closed
    );
    assert_eq!(clone.commit().await.unwrap_err().kind(), ErrorKind::Closed);
}

/// HOLDS. `close` with a live reader returns (does not wait for it) and does
/// not delete what it may read; the parked deletion runs when it ends.
#[tokio::test]
async fn attack_close_with_a_live_transaction() {
    for grace in [Duration::ZERO, Duration::from_millis(50)] {
        let db = mem_db(grace).await;
        seed_big(&db, 2).await;
        let reader = db.begin_read().await.unwrap();
        let s = reader.bytes_store("s").await.unwrap();
        s.get(b"small").await.unwrap();
        replace_all(&db, 2, 3).await;
        tokio::time::timeout(Duration::from_secs(10), db.close()).await.expect("close hangs").unwrap();
        // The cache is closed; a read may fail, but not with data loss.
        if let Err(e) = s.get(b"k1").await {
            assert_ne!(e.kind(), ErrorKind::Corruption, "{e}");
        }
        drop((s, reader));
    }
}

async fn shared_db(registry: Arc<dyn Registry>, blobs: Arc<dyn BlobStore>, timeout: Duration) -> Database {
    let mut config = Config::from_parts(registry, blobs, false);
    config.gc_grace = Duration::ZERO;
    config.tx_timeout = timeout;
    Database::open(config).await.unwrap()
}

/// BROKE (fixed). Shared backends: recovery (at open, or periodic, of any
/// database on the same parts) finishes a *committed* intent once the
/// intent is older than `tx_timeout`, measured from the intent's creation
/// (before staging), not from the publish. A transaction that began while
/// the commit was staging is still live (its deadline is its own begin +
/// `tx_timeout`) when recovery deletes the obsolete value blob it may read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_shared_recovery_outruns_a_reader_that_began_during_staging() {
    let registry: Arc<dyn Registry> = Arc::new(MemRegistry::new());
    let slow = common::TestBlobs::memory();
    let blobs: Arc<dyn BlobStore> = slow.clone();
    let timeout = Duration::from_millis(1000);
    let a = shared_db(registry.clone(), blobs.clone(), timeout).await;
    seed_big(&a, 1).await;
    slow.put_delay_ms.store(800, Ordering::SeqCst);
    let t0 = tokio::time::Instant::now();
    let writer = {
        let a = a.clone();
        tokio::spawn(async move {
            let tx = a.begin_write().await?;
            tx.bytes_store("s").await?.upsert(b"k0", &big(2)).await?;
            tx.commit().await
        })
    };
    tokio::time::sleep_until(t0 + Duration::from_millis(400)).await;
    // Begins while the commit stages: its deadline is t0 + 1.4 s.
    let reader = a.begin_read().await.unwrap();
    let s = reader.bytes_store("s").await.unwrap();
    assert_eq!(s.get(b"small").await.unwrap().as_deref(), Some(&b"x"[..])); // the leaf, before the publish
    writer.await.unwrap().unwrap();
    slow.put_delay_ms.store(0, Ordering::SeqCst);
    // Another database (another process, in real life) opens on the parts.
    tokio::time::sleep_until(t0 + Duration::from_millis(1100)).await;
    let other = shared_db(registry.clone(), blobs.clone(), timeout).await;
    other.recover().await.unwrap(); // as its open starts it, in the background
    assert!(t0.elapsed() < Duration::from_millis(1300), "too slow a machine for this timing");
    assert_old_or_retryable(s.get(b"k0").await, &big(1), "reader still live after another open");
    drop(other);
}

/// BROKE (fixed). Exclusive mode: a publish that applied but reported
/// `Indeterminate` leaves a *committed* intent and drops its claim;
/// periodic recovery then deletes its obsolete blobs at once, ignoring the
/// low-water mark, while a reader of this process that began before the
/// publish is live and may read them: `Corruption`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_periodic_recovery_ignores_the_low_water_mark_after_a_lost_reply() {
    let registry = Arc::new(LostReply::default());
    let mut config = Config::from_parts(registry.clone(), Arc::new(ObjectBlobStore::memory()), true);
    config.gc_grace = Duration::ZERO;
    config.tx_timeout = Duration::from_secs(2); // periodic recovery every 2 s
    let t0 = tokio::time::Instant::now();
    let db = Database::open(config).await.unwrap();
    seed_big(&db, 1).await;
    tokio::time::sleep_until(t0 + Duration::from_millis(1300)).await;
    let reader = db.begin_read().await.unwrap(); // deadline t0 + 3.3 s
    let s = reader.bytes_store("s").await.unwrap();
    s.get(b"small").await.unwrap();
    registry.armed.store(true, Ordering::SeqCst);
    let tx = db.begin_write().await.unwrap();
    tx.bytes_store("s").await.unwrap().upsert(b"k0", &big(2)).await.unwrap();
    let e = tx.commit().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Indeterminate);
    // The periodic recovery tick at t0 + ~2 s.
    tokio::time::sleep_until(t0 + Duration::from_millis(2600)).await;
    assert_old_or_retryable(s.get(b"k0").await, &big(1), "reader live across periodic recovery");
    drop((s, reader));
    // Recovery does finish the intent eventually (so the test above is not vacuous).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    while !registry.list_intents(u64::MAX).await.unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the committed intent was never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// HOLDS. Many readers scanning (cursors over several leaves, point reads)
/// while writers replace large values and `flush_gc` runs in a loop, with
/// transactions beginning and ending around every commit: no read ever
/// finds a blob missing, and a reader that commits sees one snapshot or
/// conflicts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_gc_stress_readers_writers_flushes() {
    for grace in [Duration::ZERO, Duration::from_millis(5)] {
        let db = mem_db(grace).await;
        let opts = StoreOptions { value_in_node_threshold: 16, slot_length: 4, ..StoreOptions::default() };
        db.create_store("s", opts).await.unwrap();
        db.run_write(|tx| async move {
            let s = tx.bytes_store("s").await?;
            for i in 0..16u8 {
                s.insert(&[i], &[0u8; 40]).await?;
            }
            Ok(())
        })
        .await
        .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for w in 0..2u8 {
            let (db, stop) = (db.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut round = 1u8;
                while !stop.load(Ordering::Relaxed) {
                    round = round.wrapping_add(1);
                    let v = round;
                    let r = db
                        .run_write(move |tx| async move {
                            let s = tx.bytes_store("s").await?;
                            // All 16 values always equal: a snapshot invariant.
                            for i in 0..16u8 {
                                s.upsert(&[i], &[v; 40]).await?;
                            }
                            Ok(())
                        })
                        .await;
                    if let Err(e) = r {
                        assert!(e.is_conflict(), "writer {w}: {e}");
                    }
                }
            }));
        }
        {
            let (db, stop) = (db.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    db.flush_gc().await.unwrap();
                    tokio::task::yield_now().await;
                }
            }));
        }
        for r in 0..3 {
            let (db, stop) = (db.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let tx = db.begin_read().await.unwrap();
                    let s = tx.bytes_store("s").await.unwrap();
                    let mut seen = Vec::new();
                    let mut cur = if r % 2 == 0 {
                        s.range(Bound::Unbounded, Bound::Unbounded)
                    } else {
                        s.range_rev(Bound::Unbounded, Bound::Unbounded)
                    };
                    let mut failed = None;
                    loop {
                        match cur.next().await {
                            Ok(Some((_, v))) => {
                                seen.push(v[0]);
                                tokio::task::yield_now().await;
                            }
                            Ok(None) => break,
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                    if let Some(e) = failed {
                        assert!(e.is_conflict(), "reader {r}: {:?}: {e}", e.kind());
                        continue;
                    }
                    assert_eq!(seen.len(), 16);
                    match tx.commit().await {
                        Ok(_) => {
                            assert!(seen.iter().all(|v| *v == seen[0]), "a torn snapshot committed: {seen:?}")
                        }
                        Err(e) => assert!(e.is_conflict(), "{e}"),
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
        db.flush_gc().await.unwrap();
        common::assert_healthy(&db).await;
    }
}

// ---------------------------------------------------------------------------
// 2. Stale handles and missing blobs
// ---------------------------------------------------------------------------
