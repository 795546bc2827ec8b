//! The engine on cluster mode's backends: several `Database`s (one per
//! process, as far as the engine can tell: each with its own node and
//! handle caches) sharing one etcd registry and one blob directory, on a
//! real local etcd. What one commits, another reads at once; money moved
//! concurrently through both stays exact; the swarm scenario spread over
//! them counts exactly.

mod common;

use std::time::Duration;

use sop_backends::LocalEtcd;
use sop_btree::{Config, Database, ErrorKind, StoreOptions};

struct Cluster {
    _dir: tempfile::TempDir,
    etcd: LocalEtcd,
    dbs: Vec<Database>,
}

/// `n` databases on one fresh etcd prefix and one blob directory.
async fn cluster(n: usize) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let etcd = LocalEtcd::start(&dir.path().join("etcd"), 1, &[]).await.expect("etcd-server installed?");
    let blobs = format!("file://{}", dir.path().join("blobs").display());
    let mut dbs = Vec::new();
    for _ in 0..n {
        let parts =
            sop_backends::from_urls(dir.path(), Some(&etcd.url("db")), Some(&blobs)).await.expect("backends");
        assert!(!parts.exclusive, "an etcd registry is shared");
        let mut config = Config::from_parts(parts.registry, parts.blobs, parts.exclusive);
        config.gc_grace = Duration::ZERO;
        config.tx_timeout = Duration::from_secs(5);
        dbs.push(Database::open(config).await.expect("open"));
    }
    Cluster { _dir: dir, etcd, dbs }
}

async fn get(db: &Database, key: u32) -> Option<i64> {
    db.run_read(move |tx| async move { tx.store::<u32, i64>("s").await?.get(&key).await }).await.unwrap()
}

/// A write committed through A is what B reads next, although B's caches
/// held the older version of the same leaf: B's cached handle is stale,
/// its read-only transaction fails validation and reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commit_through_one_database_is_read_through_another_at_once() {
    let c = cluster(2).await;
    let (a, b) = (&c.dbs[0], &c.dbs[1]);
    a.create_store("s", common::small(16)).await.unwrap();
    a.run_write(|tx| async move {
        let s = tx.store::<u32, i64>("s").await?;
        for k in 0..100 {
            s.insert(&k, &0).await?;
        }
        Ok(())
    })
    .await
    .unwrap();
    for round in 1..=10i64 {
        assert_eq!(get(b, 7).await, Some(round - 1), "B warmed its caches on the old version");
        a.run_write(move |tx| async move { tx.store::<u32, i64>("s").await?.upsert(&7, &round).await })
            .await
            .unwrap();
        assert_eq!(get(b, 7).await, Some(round), "B read a stale value after A's commit");
        let count =
            b.run_read(|tx| async move { tx.store::<u32, i64>("s").await?.count().await }).await.unwrap();
        assert_eq!(count, 100);
    }
    // A store created and filled through B is there for A.
    b.create_store("t", StoreOptions::default()).await.unwrap();
    b.run_write(|tx| async move { tx.bytes_store("t").await?.insert(b"k", b"v").await }).await.unwrap();
    let v = a.run_read(|tx| async move { tx.bytes_store("t").await?.get(b"k").await }).await.unwrap();
    assert_eq!(v.as_deref(), Some(&b"v"[..]));
    for db in &c.dbs {
        common::assert_healthy(db).await;
    }
}

/// Bank transfers through two databases at once: every acknowledged
/// transfer is applied exactly once, so the total never changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfers_through_two_databases_keep_the_total() {
    const ACCOUNTS: u32 = 20;
    let c = cluster(2).await;
    common::open_accounts(&c.dbs[0], "s", 8, ACCOUNTS).await;
    let mut tasks = Vec::new();
    for t in 0..6u32 {
        let db = c.dbs[(t % 2) as usize].clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..15u32 {
                let (from, to) = ((t * 7 + i * 3) % ACCOUNTS, (t * 5 + i * 11 + 1) % ACCOUNTS);
                if from == to {
                    continue;
                }
                // `run_write` retries a conflict 10 times; six writers on
                // twenty accounts through two caches can exhaust that, and
                // then the caller retries, as a user would.
                for attempt in 1.. {
                    let done = db
                        .run_write(move |tx| async move {
                            let s = tx.store::<u32, i64>("s").await?;
                            let (f, g) = (s.get(&from).await?.unwrap_or(0), s.get(&to).await?.unwrap_or(0));
                            s.update(&from, &(f - 3)).await?;
                            s.update(&to, &(g + 3)).await?;
                            Ok(())
                        })
                        .await;
                    match done {
                        Ok(()) => break,
                        Err(e) if e.kind() == ErrorKind::Conflict && attempt < 20 => continue,
                        Err(e) => panic!("transfer {t}/{i} failed after {attempt} attempts: {e}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for db in &c.dbs {
        let total = db
            .run_read(|tx| async move {
                let s = tx.store::<u32, i64>("s").await?;
                let all = s.range(.., false, usize::MAX).await?;
                Ok(all.iter().map(|(_, v)| *v).sum::<i64>())
            })
            .await
            .unwrap();
        assert_eq!(total, i64::from(ACCOUNTS) * 100);
        common::assert_healthy(db).await;
    }
}

/// The swarm scenario (40 tasks × 300 inserts, one transaction each, into
/// one new store) spread over three databases: exactly 12 000 items by
/// scan and by count, from each of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_swarm_spread_over_three_databases_counts_exactly() {
    const TASKS: u32 = 40;
    const KEYS: u32 = 300;
    let c = cluster(3).await;
    c.dbs[0].create_store("swarm", StoreOptions::default()).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let db = c.dbs[(t % 3) as usize].clone();
        tasks.push(tokio::spawn(async move {
            for attempt in 1.. {
                let tx = db.begin_write().await.unwrap();
                let s = tx.store::<u32, String>("swarm").await.unwrap();
                for i in 0..KEYS {
                    s.insert(&(i * TASKS + t), &format!("task {t} item {i}")).await.unwrap();
                }
                match tx.commit().await {
                    Ok(_) => return,
                    Err(e) if e.kind() == ErrorKind::Conflict && attempt < 20 => continue,
                    Err(e) => panic!("task {t} gave up after {attempt} attempts: {e}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for db in &c.dbs {
        let (all, count) = db
            .run_read(|tx| async move {
                let s = tx.store::<u32, String>("swarm").await?;
                Ok((s.range(.., false, usize::MAX).await?, s.count().await?))
            })
            .await
            .unwrap();
        assert_eq!((all.len(), count), (12_000, 12_000));
        assert!(all.iter().enumerate().all(|(i, (k, _))| *k as usize == i), "every key once, in order");
    }
    common::assert_healthy(&c.dbs[2]).await;
}

/// A store of 100 000 items (a few hundred nodes: far more than one etcd
/// transaction may hold) is removed: detached in one small publish, then
/// swept a chunk at a time; afterwards no handle, blob or intent of it is
/// left, and `check` is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_of_100_000_items_is_removed_on_etcd() {
    let c = cluster(1).await;
    let db = &c.dbs[0];
    db.create_store("big", StoreOptions { slot_length: 64, ..StoreOptions::default() }).await.unwrap();
    db.create_store("kept", StoreOptions::default()).await.unwrap();
    db.run_write(|tx| async move { tx.store::<u32, u32>("kept").await?.insert(&1, &1).await }).await.unwrap();
    for batch in 0..50u32 {
        db.run_write(move |tx| async move {
            let s = tx.store::<u32, u32>("big").await?;
            for k in batch * 2000..(batch + 1) * 2000 {
                s.insert(&k, &k).await?;
            }
            Ok(())
        })
        .await
        .unwrap();
    }
    let before = db.check().await.unwrap();
    assert!(before.is_ok(), "{:?}", before.problems);
    assert!(before.nodes > 1_000, "a store of {} nodes proves little", before.nodes);
    db.remove_store("big").await.expect("removed despite etcd's 128 operations per transaction");
    assert!(db.list_stores().await.unwrap().iter().all(|s| s.name != "big"));
    // The sweep runs once no transaction may still read the tree (on a
    // shared registry: `tx_timeout`, 5 s here).
    let registry = sop_backends::EtcdRegistry::from_url(&c.etcd.url("db")).await.unwrap();
    let mut waited = 0;
    loop {
        let handles = sop_core::Registry::list_handles(&registry).await.unwrap().len();
        let intents = sop_core::Registry::list_intents(&registry, u64::MAX).await.unwrap().len();
        if handles == 1 && intents == 0 {
            break;
        }
        waited += 1;
        assert!(waited < 120, "{handles} handles and {intents} intents left after the sweep");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let after = db.check().await.unwrap();
    assert!(after.is_ok(), "{:?}", after.problems);
    assert_eq!((after.stores, after.items), (1, 1));
}
