//! Swarm merge: node-level clashes whose item-level reads still hold are
//! merged at commit; real item-level conflicts still fail. Plus the swarm
//! acceptance scenario of the Go original, on the embedded engine (on the
//! memory registry over blob files in a build without it).

mod common;

use std::ops::Bound;
use std::time::Instant;

use common::{assert_healthy, memory_db, small};
use sop_btree::ErrorKind;
use sop_btree::StoreOptions;

#[tokio::test]
async fn different_keys_in_the_same_leaf_both_commit() {
    let db = memory_db().await;
    db.create_store("s", small(64)).await.unwrap();
    db.run_write(|tx| async move { tx.bytes_store("s").await?.insert(b"m", b"0").await }).await.unwrap();
    let t1 = db.begin_write().await.unwrap();
    let t2 = db.begin_write().await.unwrap();
    t1.bytes_store("s").await.unwrap().insert(b"a", b"1").await.unwrap();
    t2.bytes_store("s").await.unwrap().insert(b"z", b"2").await.unwrap();
    assert_eq!(t1.commit().await.unwrap().merges, 0);
    let info = t2.commit().await.unwrap();
    assert_eq!(info.merges, 1, "the second commit merged instead of failing");
    let tx = db.begin_read().await.unwrap();
    let all =
        tx.bytes_store("s").await.unwrap().range(Bound::Unbounded, Bound::Unbounded).take(10).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(db.store_info("s").await.unwrap().count, 3);
    assert_healthy(&db).await;
}

/// A range read that covers the transaction's own earlier write still
/// merges when a concurrent commit changed only another key of the leaf:
/// what the scan saw excludes the own write, as the re-check does.
#[tokio::test]
async fn a_scan_over_an_own_write_merges_with_a_change_elsewhere_in_the_leaf() {
    let db = memory_db().await;
    db.create_store("s", small(64)).await.unwrap();
    db.run_write(|tx| async move {
        let s = tx.bytes_store("s").await?;
        for k in [&b"b"[..], b"d", b"x"] {
            s.insert(k, b"0").await?;
        }
        Ok(())
    })
    .await
    .unwrap();
    let t1 = db.begin_write().await.unwrap();
    let s1 = t1.bytes_store("s").await.unwrap();
    s1.insert(b"c", b"1").await.unwrap();
    let seen = s1.range(Bound::Included(&b"a"[..]), Bound::Included(&b"e"[..])).take(10).await.unwrap();
    assert_eq!(seen.len(), 3, "b, c (own) and d");
    db.run_write(|tx| async move { tx.bytes_store("s").await?.upsert(b"x", b"2").await }).await.unwrap();
    assert_eq!(t1.commit().await.unwrap().merges, 1, "the scan over an own write did not merge");
    assert_healthy(&db).await;
}

#[tokio::test]
async fn read_then_update_of_the_same_key_lets_only_one_commit() {
    let db = memory_db().await;
    db.create_store("s", small(64)).await.unwrap();
    db.run_write(|tx| async move { tx.store::<u8, u32>("s").await?.insert(&1, &10).await }).await.unwrap();
    let t1 = db.begin_write().await.unwrap();
    let t2 = db.begin_write().await.unwrap();
    for (tx, add) in [(&t1, 1), (&t2, 2)] {
        let s = tx.store::<u8, u32>("s").await.unwrap();
        let v = s.get(&1).await.unwrap().unwrap();
        s.update(&1, &(v + add)).await.unwrap();
    }
    t1.commit().await.unwrap();
    assert_eq!(t2.commit().await.unwrap_err().kind(), ErrorKind::Conflict);
    let v = db.run_read(|tx| async move { tx.store::<u8, u32>("s").await?.get(&1).await }).await.unwrap();
    assert_eq!(v, Some(11));
}

#[tokio::test]
async fn a_scanned_range_that_gained_a_key_fails_but_an_untouched_one_merges() {
    let db = memory_db().await;
    db.create_store("s", small(64)).await.unwrap();
    db.run_write(|tx| async move {
        let s = tx.store::<u32, u32>("s").await?;
        for i in 0..20 {
            s.insert(&(i * 10), &i).await?;
        }
        Ok(())
    })
    .await
    .unwrap();
    // T1 scans [50, 100) and writes a summary; T2 inserts 75 (in range).
    let t1 = db.begin_write().await.unwrap();
    let s1 = t1.store::<u32, u32>("s").await.unwrap();
    let n = s1.range(50..100, false, 100).await.unwrap().len() as u32;
    s1.upsert(&1_000_000, &n).await.unwrap();
    db.run_write(|tx| async move { tx.store::<u32, u32>("s").await?.insert(&75, &0).await }).await.unwrap();
    assert_eq!(t1.commit().await.unwrap_err().kind(), ErrorKind::Conflict);

    // T3 scans [0, 30); a concurrent insert of 155 lands in the same leaf
    // but outside the range: T3 merges.
    let t3 = db.begin_write().await.unwrap();
    let s3 = t3.store::<u32, u32>("s").await.unwrap();
    let n = s3.range(0..30, false, 100).await.unwrap().len() as u32;
    s3.upsert(&2_000_000, &n).await.unwrap();
    db.run_write(|tx| async move { tx.store::<u32, u32>("s").await?.insert(&155, &0).await }).await.unwrap();
    assert_eq!(t3.commit().await.unwrap().merges, 1);
    assert_healthy(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swarm_of_40_tasks_inserting_300_keys_each_into_an_empty_store() {
    const TASKS: u32 = 40;
    const KEYS: u32 = 300;
    let dir = tempfile::tempdir().unwrap();
    let db = common::default_db(dir.path()).await;
    db.create_store("swarm", StoreOptions::default()).await.unwrap();
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let db = db.clone();
        handles.push(tokio::spawn(async move {
            let mut attempts = 0;
            loop {
                attempts += 1;
                let tx = db.begin_write().await.unwrap();
                let s = tx.store::<u32, String>("swarm").await.unwrap();
                for i in 0..KEYS {
                    let key = i * TASKS + t; // every task touches every part of the tree
                    s.insert(&key, &format!("task {t} item {i}")).await.unwrap();
                }
                match tx.commit().await {
                    Ok(info) => return (attempts - 1, info.merges),
                    Err(e) if e.kind() == ErrorKind::Conflict && attempts < 10 => continue,
                    Err(e) => panic!("task {t} gave up after {attempts} attempts: {e}"),
                }
            }
        }));
    }
    let (mut retries, mut merges) = (0, 0);
    for h in handles {
        let (r, m) = h.await.unwrap();
        retries += r;
        merges += m;
    }
    let elapsed = start.elapsed();
    let tx = db.begin_read().await.unwrap();
    let s = tx.store::<u32, String>("swarm").await.unwrap();
    let all = s.range(.., false, usize::MAX).await.unwrap();
    let count = s.count().await.unwrap();
    tx.commit().await.unwrap();
    let stats = db.stats();
    println!(
        "swarm: {TASKS} tasks x {KEYS} keys in {elapsed:?}: merges {merges}, application retries {retries}, \
         conflicts {}, commits {}",
        stats.conflicts, stats.commits
    );
    assert_eq!(all.len(), (TASKS * KEYS) as usize);
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(count, u64::from(TASKS * KEYS));
    assert_healthy(&db).await;
}

/// A point read of a key the transaction wrote itself is answered from its
/// own write and not logged: a concurrent commit that changed only another
/// key of the leaf still merges. (Were the own key logged with the
/// version the transaction put there, the re-check would find the
/// committed version differ and fail with `Conflict`.)
#[tokio::test]
async fn a_get_of_an_own_write_merges_with_a_change_elsewhere_in_the_leaf() {
    let db = memory_db().await;
    db.create_store("s", small(64)).await.unwrap();
    db.run_write(|tx| async move { tx.bytes_store("s").await?.insert(b"m", b"0").await }).await.unwrap();
    let t1 = db.begin_write().await.unwrap();
    let s1 = t1.bytes_store("s").await.unwrap();
    s1.upsert(b"a", b"1").await.unwrap();
    assert_eq!(s1.get(b"a").await.unwrap().as_deref(), Some(&b"1"[..]), "the own write read back");
    db.run_write(|tx| async move { tx.bytes_store("s").await?.upsert(b"z", b"2").await }).await.unwrap();
    assert_eq!(t1.commit().await.unwrap().merges, 1, "the get of an own write was logged as a read");
    assert_healthy(&db).await;
}
