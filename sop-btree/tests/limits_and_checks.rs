//! Transaction timeouts, size limits, drop-rollback, and proof that
//! `Database::check` catches damage (so the tests relying on it can fail).

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{assert_healthy, seeded_store, small};
use sop_btree::{Config, Database, ErrorKind};
use sop_core::{BlobStore, HandleWrite, LogicalId, PhysicalId, PublishRequest, Registry};
use sop_registry::MemRegistry;
use sop_store::ObjectBlobStore;

#[tokio::test]
async fn a_transaction_past_its_timeout_fails_and_publishes_nothing() {
    let mut config = Config::memory();
    config.tx_timeout = Duration::from_millis(50);
    let db = Database::open(config).await.unwrap();
    db.create_store("s", small(4)).await.unwrap();
    let tx = db.begin_write().await.unwrap();
    let s = tx.bytes_store("s").await.unwrap();
    s.insert(b"k", b"v").await.unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(s.get(b"k").await.unwrap_err().kind(), ErrorKind::Timeout);
    assert_eq!(tx.commit().await.unwrap_err().kind(), ErrorKind::Timeout);
    assert_eq!(db.store_info("s").await.unwrap().count, 0);
}

#[tokio::test]
async fn a_transaction_with_its_own_timeout() {
    let mut config = Config::memory();
    config.tx_timeout = Duration::from_secs(5);
    let db = Database::open(config).await.unwrap();
    db.create_store("s", small(4)).await.unwrap();
    for bad in [Duration::ZERO, Duration::from_secs(6)] {
        assert_eq!(db.begin_with_timeout(true, bad).await.unwrap_err().kind(), ErrorKind::InvalidInput);
    }
    let short = db.begin_with_timeout(true, Duration::from_millis(40)).await.unwrap();
    let long = db.begin_with_timeout(true, Duration::from_secs(5)).await.unwrap();
    for tx in [&short, &long] {
        tx.bytes_store("s").await.unwrap().upsert(tx.id().to_string().as_bytes(), b"v").await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(short.commit().await.unwrap_err().kind(), ErrorKind::Timeout);
    long.commit().await.unwrap();
    assert_eq!(db.store_info("s").await.unwrap().count, 1);
    let read = db.begin_with_timeout(false, Duration::from_secs(1)).await.unwrap();
    let err = read.bytes_store("s").await.unwrap().upsert(b"x", b"y").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "a read transaction refuses writes");
}

#[tokio::test]
async fn oversize_values_are_invalid_input_and_dropped_transactions_roll_back() {
    let db = Database::open(Config::memory()).await.unwrap();
    db.create_store("s", small(4)).await.unwrap();
    {
        let tx = db.begin_write().await.unwrap();
        let s = tx.bytes_store("s").await.unwrap();
        let huge = vec![0u8; sop_btree::MAX_VALUE_LEN + 1];
        assert_eq!(s.insert(b"k", &huge).await.unwrap_err().kind(), ErrorKind::InvalidInput);
        s.insert(b"kept?", b"no").await.unwrap();
    } // dropped without commit
    assert_eq!(db.stats().rollbacks, 1);
    let tx = db.begin_read().await.unwrap();
    assert_eq!(tx.bytes_store("s").await.unwrap().get(b"kept?").await.unwrap(), None);
}

#[tokio::test]
async fn check_reports_orphan_blobs_dangling_handles_and_bad_counts() {
    let (registry, blobs, db) = in_memory_with_grace(Duration::ZERO).await;
    seeded_store(&db, "s", 20).await;
    assert_healthy(&db).await;

    blobs.put(PhysicalId::new(), Bytes::from_static(b"stray")).await.unwrap();
    let report = db.check().await.unwrap();
    assert!(report.problems.iter().any(|p| p.contains("orphan blob")), "{:?}", report.problems);

    let stray = LogicalId::new();
    let req = PublishRequest {
        writes: vec![HandleWrite::Insert { id: stray, physical_id: PhysicalId::new() }],
        count_deltas: vec![("s".into(), 5)],
        ..Default::default()
    };
    registry.publish(&req).await.unwrap();
    let report = db.check().await.unwrap();
    let text = report.problems.join("\n");
    assert!(text.contains("unreferenced node handle"), "{text}");
    assert!(
        text.contains("25 items but count says") || text.contains("20 items but count says 25"),
        "{text}"
    );
}

#[tokio::test]
async fn flush_gc_deletes_obsolete_blobs_without_waiting_out_the_grace_period() {
    let (registry, blobs, db) = in_memory_with_grace(Duration::from_secs(30)).await;
    db.create_store("s", small(4)).await.unwrap();
    for round in 0..3u32 {
        db.run_write(|tx| async move { tx.store::<u32, u32>("s").await?.upsert(&1, &round).await })
            .await
            .unwrap();
    }
    assert_eq!(blobs.list().await.unwrap().len(), 3, "old versions wait out the grace period");
    let start = std::time::Instant::now();
    db.flush_gc().await.unwrap();
    assert!(start.elapsed() < Duration::from_secs(5), "flush did not wait 30 s");
    assert_eq!(blobs.list().await.unwrap().len(), 1, "only the current leaf remains");
    assert!(registry.list_intents(u64::MAX).await.unwrap().is_empty());
    assert_healthy(&db).await;
}

/// Without a flush, the clean-ups of a stream of commits run once their
/// grace period ends (the collector's batches), and not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_clean_ups_run_when_their_grace_ends_without_a_flush() {
    let (registry, blobs, db) = in_memory_with_grace(Duration::from_millis(1500)).await;
    db.create_store("s", small(4)).await.unwrap();
    for round in 0..20u32 {
        db.run_write(|tx| async move { tx.store::<u32, u32>("s").await?.upsert(&(round % 3), &round).await })
            .await
            .unwrap();
    }
    assert!(!registry.list_intents(u64::MAX).await.unwrap().is_empty(), "cleaned up before the grace ended");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !registry.list_intents(u64::MAX).await.unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "clean-ups never ran without a flush");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(blobs.list().await.unwrap().len(), 1, "only the current leaf remains");
    assert_healthy(&db).await;
}

/// A database over an in-memory registry and blob store (returned too, to
/// look behind the engine) whose obsolete blobs wait `grace`.
async fn in_memory_with_grace(grace: Duration) -> (Arc<MemRegistry>, Arc<ObjectBlobStore>, Database) {
    let registry = Arc::new(MemRegistry::new());
    let blobs = Arc::new(ObjectBlobStore::memory());
    let mut config = Config::from_parts(registry.clone(), blobs.clone(), true);
    config.gc_grace = grace;
    (registry, blobs, Database::open(config).await.unwrap())
}

/// Regression: `flush_gc` used a shared on/off flag, so one flush ending
/// switched it off under another, and a deletion registered then made the
/// second flush wait out the whole grace period. The hand-off is now
/// `sop_core::GcGate` (loom-checked); here flushes overlap each other and
/// commits for real, with a grace period of an hour that nothing may wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlapping_flushes_and_commits_never_wait_out_the_grace_period() {
    let (registry, _, db) = in_memory_with_grace(Duration::from_secs(3600)).await;
    db.create_store("s", small(4)).await.unwrap();
    // The old race hit about one run in two of a round; eight rounds.
    let rounds = async {
        for _ in 0..8 {
            commit_and_flush_at_once(&db).await;
        }
        db.flush_gc().await.unwrap();
    };
    tokio::time::timeout(Duration::from_secs(120), rounds)
        .await
        .expect("a flush waited out the 1 h grace period");
    assert!(registry.list_intents(u64::MAX).await.unwrap().is_empty(), "every deferred deletion ran");
    assert_healthy(&db).await;
}

/// Four writers commit 150 upserts each while four tasks flush 150 times.
async fn commit_and_flush_at_once(db: &Database) {
    let mut work = tokio::task::JoinSet::new();
    for w in 0..4u32 {
        let db = db.clone();
        work.spawn(async move {
            for i in 0..150u32 {
                let key = w * 1000 + i % 8;
                db.run_write(|tx| async move { tx.store::<u32, u32>("s").await?.upsert(&key, &i).await })
                    .await
                    .unwrap();
            }
        });
    }
    for _ in 0..4 {
        let db = db.clone();
        work.spawn(async move {
            for _ in 0..150 {
                db.flush_gc().await.unwrap();
                tokio::task::yield_now().await;
            }
        });
    }
    while let Some(done) = work.join_next().await {
        done.unwrap();
    }
}

#[cfg(feature = "embedded")]
/// Regression: a deferred deletion counted itself out before it let go of
/// the database, so `close` could return while a task still held it and a
/// reopen of the directory found RocksDB's lock taken (the benchmark's
/// reopen hit this). After `close` and drop, the directory reopens at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_closed_database_reopens_at_once_though_deletions_were_deferred() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..30u32 {
        let mut config = Config::embedded(dir.path());
        config.gc_grace = Duration::from_secs(3600);
        config.sync = false;
        let db = Database::open(config).await.unwrap_or_else(|e| panic!("reopen {round}: {e}"));
        if round == 0 {
            db.create_store("s", small(4)).await.unwrap();
        }
        let mut writers = tokio::task::JoinSet::new();
        for w in 0..4u32 {
            let db = db.clone();
            writers.spawn(async move {
                for i in 0..10u32 {
                    let key = w * 100 + i % 3;
                    db.run_write(
                        |tx| async move { tx.store::<u32, u32>("s").await?.upsert(&key, &round).await },
                    )
                    .await
                    .unwrap();
                }
            });
        }
        while let Some(w) = writers.join_next().await {
            w.unwrap();
        }
        db.close().await.unwrap();
        drop(db);
    }
}
