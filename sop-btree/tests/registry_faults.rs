//! The engine over `FaultyRegistry`: every registry call may fail before it
//! applies, lose its reply after it applied (`Indeterminate`, as a timeout
//! on a remote registry gives) or stall, on a seeded fraction of calls, while
//! four clients transfer money concurrently. Acknowledged transfers are never
//! lost, cleanly failed ones never appear, the others appear wholly or not at
//! all; reopening under faults fails cleanly or recovers; once the faults
//! stop, recovery leaves no orphan and every balance matches the ledger.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{assert_healthy, bounded, fault_seed, open_accounts, rounds, small};
use sop_btree::{Config, Database, ErrorKind};
use sop_core::testkit::fault::FaultConfig;
use sop_core::{BlobStore, Registry};
use sop_registry::{FaultyRegistry, MemRegistry};
use sop_store::ObjectBlobStore;

const ACCOUNTS: u32 = 10;
const CLIENTS: u32 = 4;
const AMOUNT: i64 = 3;

/// How a transfer ended, as its client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Acknowledged,
    /// An error that says the transfer did not happen.
    Failed,
    /// `Indeterminate`: it may or may not have happened.
    Unknown,
}

fn config(registry: Arc<dyn Registry>, blobs: Arc<dyn BlobStore>) -> Config {
    let mut config = Config::from_parts(registry, blobs, true);
    config.gc_grace = Duration::ZERO;
    config.max_retries = 3;
    config
}

fn transfer_of(i: u32) -> (u32, u32) {
    (i % ACCOUNTS, (i * 3 + 1) % ACCOUNTS)
}

async fn transfer(db: &Database, i: u32) -> Outcome {
    let (from, to) = transfer_of(i);
    let r = bounded(db.run_write(|tx| async move {
        let bank = tx.store::<u32, i64>("bank").await?;
        let a = bank.get(&from).await?.unwrap_or(0);
        let b = bank.get(&to).await?.unwrap_or(0);
        if from != to {
            bank.update(&from, &(a - AMOUNT)).await?;
            bank.update(&to, &(b + AMOUNT)).await?;
        }
        tx.store::<u32, u8>("ledger").await?.insert(&i, &0).await
    }))
    .await;
    match r {
        Ok(()) => Outcome::Acknowledged,
        Err(e) if e.kind() == ErrorKind::Indeterminate => Outcome::Unknown,
        Err(_) => Outcome::Failed,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_faults_never_lose_or_tear_a_transfer() {
    let inner: Arc<dyn Registry> = Arc::new(MemRegistry::new());
    let blobs: Arc<dyn BlobStore> = Arc::new(ObjectBlobStore::memory());
    let faults = FaultConfig {
        seed: fault_seed(),
        fail_ratio: 0.04,
        timeout_ratio: 0.03,
        delay_ratio: 0.05,
        delay: Duration::from_millis(2),
    };
    let faulty = Arc::new(FaultyRegistry::new(inner, faults));
    faulty.set_enabled(false);
    let db = Database::open(config(faulty.clone(), blobs.clone())).await.unwrap();
    open_accounts(&db, "bank", 4, ACCOUNTS).await;
    db.create_store("ledger", small(4)).await.unwrap();

    faulty.set_enabled(true);
    let total = rounds(120);
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..CLIENTS {
        let db = db.clone();
        clients.spawn(async move {
            let mut out = Vec::new();
            for i in (c..total).step_by(CLIENTS as usize) {
                out.push((i, transfer(&db, i).await));
            }
            out
        });
    }
    let mut outcomes = BTreeMap::new();
    while let Some(done) = clients.join_next().await {
        outcomes.extend(done.unwrap());
    }
    let count = |o: Outcome| outcomes.values().filter(|v| **v == o).count();
    let stats = faulty.stats();
    println!(
        "registry faults: {stats:?}; acknowledged {}, failed {}, indeterminate {}",
        count(Outcome::Acknowledged),
        count(Outcome::Failed),
        count(Outcome::Unknown)
    );
    assert!(stats.failures > 0 && stats.timeouts > 0 && stats.delays > 0, "{stats:?}");
    assert!(count(Outcome::Acknowledged) > 0 && count(Outcome::Failed) > 0, "both outcomes happened");
    drop(db);

    // Reopening while the faults go on: only the listings must succeed
    // (an intent whose recovery fails is left for the next open), so most
    // attempts open; none panics or hangs.
    let mut opened = 0;
    for attempt in 0..8 {
        match bounded(Database::open(config(faulty.clone(), blobs.clone()))).await {
            Ok(db) => {
                bounded(db.close()).await.unwrap();
                opened += 1;
            }
            Err(e) => println!("reopen {attempt} under faults: {e}"),
        }
    }
    println!("{opened} of 8 reopens under faults succeeded");
    assert!(opened > 0, "no reopen under faults succeeded");

    faulty.set_enabled(false);
    let db = Database::open(config(faulty.clone(), blobs)).await.unwrap();
    let (balances, ledger) = db
        .run_read(|tx| async move {
            let bank = tx.store::<u32, i64>("bank").await?.range(.., false, usize::MAX).await?;
            let ledger = tx.store::<u32, u8>("ledger").await?.range(.., false, usize::MAX).await?;
            Ok((bank, ledger.into_iter().map(|(k, _)| k).collect::<Vec<u32>>()))
        })
        .await
        .unwrap();
    for (i, o) in &outcomes {
        match o {
            Outcome::Acknowledged => assert!(ledger.contains(i), "acknowledged transfer {i} was lost"),
            Outcome::Failed => assert!(!ledger.contains(i), "failed transfer {i} is visible"),
            Outcome::Unknown => {}
        }
    }
    // Every balance is what the ledger says: no transfer is partly there.
    let mut expected: BTreeMap<u32, i64> = (0..ACCOUNTS).map(|a| (a, 100)).collect();
    for i in &ledger {
        assert!(outcomes.contains_key(i), "transfer {i} came from nowhere");
        let (from, to) = transfer_of(*i);
        if from != to {
            *expected.entry(from).or_default() -= AMOUNT;
            *expected.entry(to).or_default() += AMOUNT;
        }
    }
    assert_eq!(balances.into_iter().collect::<BTreeMap<_, _>>(), expected, "balances match the ledger");
    assert_healthy(&db).await;
}
