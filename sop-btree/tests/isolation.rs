//! Serializability, proven by the classic anomalies: lost update, write
//! skew, phantom, and torn reads under concurrent transfers. Item counts
//! are commutative and never conflict.

mod common;

use std::ops::Bound;
use std::sync::Arc;

use common::{assert_healthy, memory_db, open_accounts, small};
use sop_btree::{Database, ErrorKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_update_never_happens() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::default_db(dir.path()).await;
    db.create_store("c", small(8)).await.unwrap();
    db.run_write(|tx| async move { tx.store::<String, u64>("c").await?.insert(&"n".into(), &0).await })
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                // The application retries without limit; conflicts are expected.
                loop {
                    let r = db
                        .run_write(|tx| async move {
                            let c = tx.store::<String, u64>("c").await?;
                            let n = c.get(&"n".into()).await?.unwrap_or(0);
                            c.update(&"n".into(), &(n + 1)).await
                        })
                        .await;
                    match r {
                        Ok(()) => break,
                        Err(e) if e.kind() == ErrorKind::Conflict => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let n = db
        .run_read(|tx| async move { tx.store::<String, u64>("c").await?.get(&"n".into()).await })
        .await
        .unwrap();
    assert_eq!(n, Some(80), "every increment counted once");
    assert!(db.stats().conflicts + db.stats().retries > 0, "the increments did contend: {:?}", db.stats());
    assert_healthy(&db).await;
}

#[tokio::test]
async fn write_skew_is_prevented() {
    // Two doctors on call; each may go off call only if the other stays.
    let db = memory_db().await;
    db.create_store("oncall", small(4)).await.unwrap();
    db.run_write(|tx| async move {
        let s = tx.store::<String, bool>("oncall").await?;
        s.insert(&"alice".into(), &true).await?;
        s.insert(&"bob".into(), &true).await
    })
    .await
    .unwrap();
    let t1 = db.begin_write().await.unwrap();
    let t2 = db.begin_write().await.unwrap();
    for (tx, me) in [(&t1, "alice"), (&t2, "bob")] {
        let s = tx.store::<String, bool>("oncall").await.unwrap();
        let a = s.get(&"alice".into()).await.unwrap().unwrap();
        let b = s.get(&"bob".into()).await.unwrap().unwrap();
        assert!(a && b);
        s.update(&me.into(), &false).await.unwrap();
    }
    let r1 = t1.commit().await;
    let r2 = t2.commit().await;
    assert!(r1.is_ok(), "the first commit wins: {r1:?}");
    assert_eq!(r2.unwrap_err().kind(), ErrorKind::Conflict, "the second must fail");
    let on = db
        .run_read(|tx| async move {
            let s = tx.store::<String, bool>("oncall").await?;
            Ok((s.get(&"alice".into()).await?, s.get(&"bob".into()).await?))
        })
        .await
        .unwrap();
    assert_eq!(on, (Some(false), Some(true)), "someone stays on call");
}

#[tokio::test]
async fn phantom_insert_into_a_read_range_fails_the_reader() {
    let db = memory_db().await;
    db.create_store("p", small(4)).await.unwrap();
    db.run_write(|tx| async move {
        let s = tx.store::<u32, u32>("p").await?;
        for i in (0..100).step_by(10) {
            s.insert(&i, &i).await?;
        }
        Ok(())
    })
    .await
    .unwrap();
    let t1 = db.begin_write().await.unwrap();
    let s1 = t1.store::<u32, u32>("p").await.unwrap();
    let seen = s1.range(20..60, false, 100).await.unwrap().len();
    assert_eq!(seen, 4);
    // T1 writes elsewhere, based on what it counted.
    s1.upsert(&1000, &(seen as u32)).await.unwrap();

    db.run_write(|tx| async move { tx.store::<u32, u32>("p").await?.insert(&45, &45).await }).await.unwrap();
    let err = t1.commit().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "the range T1 read gained a key");
}

#[tokio::test]
async fn count_reads_are_validated_but_count_deltas_never_conflict() {
    let db = memory_db().await;
    db.create_store("n", small(64)).await.unwrap();
    // Blind inserts of distinct keys from many transactions at once: the
    // count deltas commute, none of them conflicts on the count.
    let txs: Vec<_> = futures_join(&db, 6).await;
    for (i, tx) in txs.iter().enumerate() {
        tx.store::<u32, u32>("n").await.unwrap().upsert(&(i as u32), &1).await.unwrap();
    }
    for tx in &txs {
        tx.commit().await.unwrap();
    }
    assert_eq!(db.store_info("n").await.unwrap().count, 6);
    // A transaction that read the count fails if the count moved.
    let reader = db.begin_write().await.unwrap();
    let seen = reader.store::<u32, u32>("n").await.unwrap().count().await.unwrap();
    reader.store::<u32, u32>("n").await.unwrap().upsert(&999, &(seen as u32)).await.unwrap();
    db.run_write(|tx| async move { tx.store::<u32, u32>("n").await?.upsert(&500, &0).await }).await.unwrap();
    assert_eq!(reader.commit().await.unwrap_err().kind(), ErrorKind::Conflict);
}

async fn futures_join(db: &Database, n: usize) -> Vec<sop_btree::Transaction> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(db.begin_write().await.unwrap());
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_never_see_a_torn_view_of_concurrent_transfers() {
    const ACCOUNTS: u32 = 40;
    const TOTAL: i64 = ACCOUNTS as i64 * 100;
    let dir = tempfile::tempdir().unwrap();
    let db = common::default_db(dir.path()).await;
    open_accounts(&db, "bank", 5, ACCOUNTS).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4u32 {
        let db = db.clone();
        writers.push(tokio::spawn(async move {
            let mut done = 0;
            for i in 0..25u32 {
                let (from, to) = ((w * 7 + i * 3) % ACCOUNTS, (w * 11 + i * 5 + 1) % ACCOUNTS);
                let r = db
                    .run_write(|tx| async move {
                        let s = tx.store::<u32, i64>("bank").await?;
                        let a = s.get(&from).await?.unwrap_or(0);
                        let b = s.get(&to).await?.unwrap_or(0);
                        if from != to {
                            s.update(&from, &(a - 7)).await?;
                            s.update(&to, &(b + 7)).await?;
                        }
                        Ok(())
                    })
                    .await;
                if r.is_ok() {
                    done += 1;
                }
            }
            done
        }));
    }
    let mut readers = Vec::new();
    for _ in 0..3 {
        let (db, stop) = (db.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let mut checked = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || checked == 0 {
                let tx = db.begin_read().await.unwrap();
                let s = tx.bytes_store("bank").await.unwrap();
                let all = s.range(Bound::Unbounded, Bound::Unbounded).take(usize::MAX).await;
                let Ok(all) = all else { continue };
                let sum: i64 = all.iter().map(|(_, v)| postcard::from_bytes::<i64>(v).unwrap()).sum();
                if tx.commit().await.is_ok() {
                    assert_eq!(sum, TOTAL, "a committed reader saw a torn view");
                    checked += 1;
                }
            }
            checked
        }));
    }
    let mut committed = 0;
    for w in writers {
        committed += w.await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut checked = 0;
    for r in readers {
        checked += r.await.unwrap();
    }
    assert!(committed > 0 && checked > 0, "committed {committed}, checked {checked}");
    assert_healthy(&db).await;
}
