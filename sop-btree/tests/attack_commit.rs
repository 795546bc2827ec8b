//! Review attacks on the guarantees of commit d7419f1 ("Issue 11
//! correctness"), on commits: count checks and caps, counts under merge,
//! opacity of run_*, cancelled commits. Each test states the invariant it
//! attacks, from a user's side. Tests marked `BROKE` failed on d7419f1 and
//! pass since the fix named in their doc; tests marked `HOLDS` passed from
//! the start. (Split from one file by theme; the shared helpers are
//! `common/attack.rs`.)

mod common;

use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sop_btree::{Config, Database};
use sop_core::{Error, Registry};
use sop_registry::MemRegistry;

use common::attack::*;

#[cfg(feature = "embedded")]
/// HOLDS. Write skew through counts across two stores, on MemRegistry and
/// RocksRegistry (count checks atomic with count deltas), under real
/// concurrency and swarm merges: "if count(A) == 0 insert into B" racing
/// "if count(B) == 0 insert into A" never commits both; and a capped
/// insert ("if count < 5 insert") never overshoots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_count_write_skew_and_cap() {
    let dir = tempfile::tempdir().unwrap();
    for embedded in [false, true] {
        let db = if embedded { common::embedded_db(dir.path()).await } else { common::memory_db().await };
        for round in 0..20u32 {
            let (a, b) = (format!("a{round}"), format!("b{round}"));
            db.create_store(&a, common::small(4)).await.unwrap();
            db.create_store(&b, common::small(4)).await.unwrap();
            let mut tasks = Vec::new();
            for (read, write) in [(a.clone(), b.clone()), (b.clone(), a.clone())] {
                let db = db.clone();
                tasks.push(tokio::spawn(async move {
                    db.run_write(move |tx| {
                        let (read, write) = (read.clone(), write.clone());
                        async move {
                            if tx.bytes_store(&read).await?.count().await? == 0 {
                                tx.bytes_store(&write).await?.insert(b"k", b"v").await?;
                            }
                            Ok(())
                        }
                    })
                    .await
                }));
            }
            for t in tasks {
                t.await.unwrap().unwrap();
            }
            let (na, nb) = (db.store_info(&a).await.unwrap().count, db.store_info(&b).await.unwrap().count);
            assert_eq!(na + nb, 1, "write skew through counts (embedded={embedded}, round {round})");
        }
        db.create_store("cap", common::small(4)).await.unwrap();
        let mut tasks = Vec::new();
        for w in 0..6u32 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..6u32 {
                    let r = db
                        .run_write(move |tx| async move {
                            let s = tx.store::<u32, u32>("cap").await?;
                            if s.count().await? < 5 {
                                s.upsert(&(w * 100 + i), &0).await?;
                            }
                            Ok(())
                        })
                        .await;
                    if let Err(e) = r {
                        assert!(e.is_conflict(), "{e}");
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let n = db.store_info("cap").await.unwrap().count;
        let real = db
            .run_read(|tx| async move {
                Ok(tx.store::<u32, u32>("cap").await?.range(.., false, 1000).await?.len())
            })
            .await
            .unwrap();
        assert_eq!(n, real as u64, "count drifted from the items (embedded={embedded})");
        assert!(n <= 5, "the count cap overshot: {n} (embedded={embedded})");
        common::assert_healthy(&db).await;
        db.close().await.unwrap();
    }
}

/// HOLDS. A blind upsert followed by `count()`: a concurrent insert of the
/// same key changes the upsert's delta; the merged commit must not return
/// a count that no serial order gives (it conflicts instead).
#[tokio::test]
async fn attack_count_after_blind_upsert_under_merge() {
    let db = common::memory_db().await;
    db.create_store("s", common::small(64)).await.unwrap();
    let tx = db.begin_write().await.unwrap();
    let s = tx.bytes_store("s").await.unwrap();
    s.upsert(b"k", b"mine").await.unwrap();
    let seen = s.count().await.unwrap();
    assert_eq!(seen, 1);
    db.run_write(|tx| async move {
        let s = tx.bytes_store("s").await?;
        s.insert(b"k", b"theirs").await?;
        s.insert(b"other", b"x").await
    })
    .await
    .unwrap();
    // `tx` cannot serialize before `theirs` (its upsert would make
    // `theirs`' insert fail) and after it `count()` gives 2, not 1: the
    // commit must conflict rather than merge.
    let r = tx.commit().await;
    assert!(r.as_ref().is_err_and(Error::is_conflict), "committed a count no serial order gives: {r:?}");
}

// ---------------------------------------------------------------------------
// 5. Opacity of run_read / run_write
// ---------------------------------------------------------------------------

/// HOLDS. A closure that sums all accounts with a cursor (several leaves)
/// and fails when the sum is wrong never has that error returned, while
/// transfers commit concurrently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_opacity_of_a_cursor_sum() {
    let db = common::memory_db().await;
    common::open_accounts(&db, "acc", 4, 24).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mover = {
        let (db, stop) = (db.clone(), stop.clone());
        tokio::spawn(async move {
            let mut rng = Rng(42);
            while !stop.load(Ordering::Relaxed) {
                let (x, y) = (rng.below(24) as u32, rng.below(24) as u32);
                if x == y {
                    continue;
                }
                let r = db
                    .run_write(move |tx| async move {
                        let s = tx.store::<u32, i64>("acc").await?;
                        let (bx, by) = (s.get(&x).await?.unwrap_or(0), s.get(&y).await?.unwrap_or(0));
                        s.upsert(&x, &(bx - 7)).await?;
                        s.upsert(&y, &(by + 7)).await
                    })
                    .await;
                if let Err(e) = r {
                    assert!(e.is_conflict(), "{e}");
                }
            }
        })
    };
    for _ in 0..300 {
        let r = db
            .run_read(|tx| async move {
                let s = tx.bytes_store("acc").await?;
                let mut cur = s.range(Bound::Unbounded, Bound::Unbounded);
                let mut sum = 0i64;
                while let Some((_, v)) = cur.next().await? {
                    sum += postcard::from_bytes::<i64>(&v)
                        .map_err(|e| Error::invalid("value", e.to_string()))?;
                    tokio::task::yield_now().await;
                }
                if sum == 2400 { Ok(sum) } else { Err(Error::invalid("sum", format!("torn sum {sum}"))) }
            })
            .await;
        match r {
            Ok(sum) => assert_eq!(sum, 2400),
            Err(e) => assert!(e.is_conflict(), "run_read returned a closure error from a torn view: {e}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    mover.await.unwrap();
}

// ---------------------------------------------------------------------------
// 6. Cancel-safe commit and periodic recovery
// ---------------------------------------------------------------------------

/// HOLDS. Transfers whose commit futures are dropped at random points
/// (timeouts of 0..3 ms), racing each other (swarm merges), on a slow
/// blob store, with periodic recovery (exclusive mode, every 1 s) running
/// meanwhile: every commit applies fully or not at all (the total never
/// changes), no intent or orphan blob remains, and the tree is healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_cancelled_commits_with_merges_and_periodic_recovery() {
    let registry: Arc<dyn Registry> = Arc::new(MemRegistry::new());
    let slow = common::TestBlobs::memory();
    let mut config = Config::from_parts(registry.clone(), slow.clone(), true);
    config.gc_grace = Duration::ZERO;
    config.tx_timeout = Duration::from_millis(500);
    let db = Database::open(config).await.unwrap();
    common::open_accounts(&db, "acc", 4, 16).await;
    slow.put_delay_ms.store(2, Ordering::SeqCst);
    let mut tasks = Vec::new();
    for w in 0..4u64 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(7 + w);
            let start = tokio::time::Instant::now();
            while start.elapsed() < Duration::from_millis(2500) {
                let (x, y) = (rng.below(16) as u32, rng.below(16) as u32);
                let tx = db.begin_write().await.unwrap();
                let s = tx.store::<u32, i64>("acc").await.unwrap();
                let ok = async {
                    let (bx, by) = (s.get(&x).await?.unwrap_or(0), s.get(&y).await?.unwrap_or(0));
                    s.upsert(&x, &(bx - 3)).await?;
                    if x != y {
                        s.upsert(&y, &(by + 3)).await?;
                    } else {
                        s.upsert(&y, &bx).await?;
                    }
                    Ok::<_, Error>(())
                }
                .await;
                if ok.is_err() {
                    continue;
                }
                let budget = Duration::from_micros(rng.below(3000));
                match tokio::time::timeout(budget, tx.commit()).await {
                    Err(_) => {} // dropped mid-commit
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => assert!(e.is_conflict(), "{e}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    slow.put_delay_ms.store(0, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    db.flush_gc().await.unwrap();
    let total = db
        .run_read(|tx| async move {
            Ok(tx
                .store::<u32, i64>("acc")
                .await?
                .range(.., false, 100)
                .await?
                .iter()
                .map(|(_, v)| *v)
                .sum::<i64>())
        })
        .await
        .unwrap();
    assert_eq!(total, 1600, "a commit half-applied");
    assert!(registry.list_intents(u64::MAX).await.unwrap().is_empty(), "an intent was left behind");
    common::assert_healthy(&db).await;
}
