//! The engine over a blob store that fails, times out and stalls on a
//! seeded fraction of calls: every transaction commits wholly or returns an
//! error; nothing acknowledged is lost; after the faults stop and recovery
//! runs, the invariants hold and the money adds up.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{assert_healthy, bounded, fault_seed, open_accounts, rounds, small};
use sop_btree::{Config, Database};
use sop_core::testkit::fault::FaultConfig;
use sop_core::{BlobStore, Registry};
use sop_registry::MemRegistry;
use sop_store::{FaultyStore, ObjectBlobStore};

const ACCOUNTS: u32 = 12;

fn config(registry: Arc<dyn Registry>, blobs: Arc<dyn BlobStore>) -> Config {
    let mut config = Config::from_parts(registry, blobs, true);
    config.gc_grace = Duration::ZERO;
    config.max_retries = 3;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_never_tear_or_lose_a_transaction() {
    let registry: Arc<dyn Registry> = Arc::new(MemRegistry::new());
    let inner: Arc<dyn BlobStore> = Arc::new(ObjectBlobStore::memory());
    let faults = FaultConfig {
        seed: fault_seed(),
        fail_ratio: 0.08,
        timeout_ratio: 0.04,
        delay_ratio: 0.05,
        delay: Duration::from_millis(2),
    };
    let faulty = Arc::new(FaultyStore::new(inner.clone(), faults));
    faulty.set_enabled(false);
    let db = Database::open(config(registry.clone(), faulty.clone())).await.unwrap();
    open_accounts(&db, "bank", 4, ACCOUNTS).await;
    db.create_store("ledger", small(4)).await.unwrap();

    faulty.set_enabled(true);
    let mut acknowledged = Vec::new();
    let mut failed = 0;
    for i in 0..rounds(150) {
        let (from, to) = (i % ACCOUNTS, (i * 7 + 3) % ACCOUNTS);
        let r = bounded(db.run_write(|tx| async move {
            let bank = tx.store::<u32, i64>("bank").await?;
            let a = bank.get(&from).await?.unwrap_or(0);
            let b = bank.get(&to).await?.unwrap_or(0);
            if from != to {
                bank.update(&from, &(a - 5)).await?;
                bank.update(&to, &(b + 5)).await?;
            }
            tx.store::<u32, (u32, u32)>("ledger").await?.insert(&i, &(from, to)).await
        }))
        .await;
        match r {
            Ok(()) => acknowledged.push(i),
            Err(_) => failed += 1,
        }
    }
    let stats = faulty.stats();
    assert!(stats.failures + stats.timeouts > 0, "faults were injected: {stats:?}");
    assert!(!acknowledged.is_empty(), "some transactions got through");
    println!("faults: {stats:?}; acknowledged {}, failed {failed}", acknowledged.len());

    // Faults stop; a restart runs recovery.
    faulty.set_enabled(false);
    drop(db);
    let db = Database::open(config(registry, faulty)).await.unwrap();
    let (total, ledger) = db
        .run_read(|tx| async move {
            let bank = tx.store::<u32, i64>("bank").await?;
            let total: i64 = bank.range(.., false, usize::MAX).await?.iter().map(|(_, v)| v).sum();
            let ledger = tx.store::<u32, (u32, u32)>("ledger").await?.range(.., false, usize::MAX).await?;
            Ok((total, ledger))
        })
        .await
        .unwrap();
    assert_eq!(total, i64::from(ACCOUNTS) * 100, "no transfer was torn");
    let recorded: Vec<u32> = ledger.iter().map(|(k, _)| *k).collect();
    for i in &acknowledged {
        assert!(recorded.contains(i), "acknowledged transfer {i} was lost");
    }
    // The registry never failed, so every error meant "not committed": a
    // transfer that returned an error must not be there either.
    assert_eq!(recorded, acknowledged, "the ledger holds exactly the acknowledged transfers");
    assert_healthy(&db).await;
}

/// A crashed commit's intent whose recovery fails (every blob delete
/// fails) does not keep the database from opening; it stays listed and the
/// next open, with the store healthy again, finishes it.
#[tokio::test]
async fn an_intent_whose_recovery_fails_is_left_for_the_next_open() {
    use sop_core::{Intent, PhysicalId};

    let registry: Arc<dyn Registry> = Arc::new(MemRegistry::new());
    let inner: Arc<dyn BlobStore> = Arc::new(ObjectBlobStore::memory());
    let faulty =
        Arc::new(FaultyStore::new(inner.clone(), FaultConfig { fail_ratio: 1.0, ..FaultConfig::default() }));
    // What a commit that crashed after staging leaves: a pending intent
    // naming a blob no handle references.
    let staged = PhysicalId::new();
    inner.put(staged, bytes::Bytes::from_static(b"staged")).await.unwrap();
    let intent = Intent::pending(sop_core::TxId::new(), vec![staged]);
    registry.put_intent(&intent).await.unwrap();

    let db =
        Database::open(config(registry.clone(), faulty.clone())).await.expect("opens despite the faults");
    assert_eq!(registry.list_intents(u64::MAX).await.unwrap().len(), 1, "the intent is left");
    assert!(inner.get(staged).await.is_ok(), "its blob could not be deleted");
    drop(db);

    faulty.set_enabled(false);
    let db = Database::open(config(registry.clone(), faulty)).await.unwrap();
    assert!(registry.list_intents(u64::MAX).await.unwrap().is_empty(), "the next open finished it");
    assert!(inner.list().await.unwrap().is_empty(), "and deleted its blob");
    assert_healthy(&db).await;
}
