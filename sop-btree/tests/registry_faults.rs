//! The engine over a registry whose publish fails on a seeded fraction of
//! calls — sometimes before applying (a clean failure), sometimes after
//! (an `Indeterminate` outcome, as a timeout on a remote registry gives).
//! Acknowledged transactions are never lost, cleanly failed ones never
//! appear, indeterminate ones appear wholly or not at all, and after a
//! restart recovery leaves no orphan and the money adds up.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use common::{assert_healthy, bounded, open_accounts, rounds, small};
use sop_btree::{Config, Database, ErrorKind};
use sop_core::{
    BlobStore, Error, Handle, Intent, IntentState, LogicalId, PublishRequest, Registry, Result, StoreInfo,
    TxId,
};
use sop_registry::MemRegistry;
use sop_store::ObjectBlobStore;

/// Fails every 7th publish before applying it and every 11th after.
#[derive(Debug)]
struct FlakyRegistry {
    inner: MemRegistry,
    calls: AtomicU64,
    on: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl Registry for FlakyRegistry {
    async fn get_handles(&self, ids: &[LogicalId]) -> Result<Vec<Option<Handle>>> {
        self.inner.get_handles(ids).await
    }
    async fn publish(&self, request: &PublishRequest) -> Result<()> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let on = self.on.load(Ordering::SeqCst) && request.intent.is_some();
        if on && n % 7 == 3 {
            return Err(Error::backend("flaky", ErrorKind::Io, std::io::Error::other("publish refused")));
        }
        self.inner.publish(request).await?;
        if on && n % 11 == 5 {
            return Err(Error::Indeterminate("publish timed out after applying".into()));
        }
        Ok(())
    }
    async fn create_store(&self, info: &StoreInfo, root: &Handle) -> Result<()> {
        self.inner.create_store(info, root).await
    }
    async fn get_store(&self, name: &str) -> Result<Option<StoreInfo>> {
        self.inner.get_store(name).await
    }
    async fn list_stores(&self) -> Result<Vec<StoreInfo>> {
        self.inner.list_stores().await
    }
    async fn remove_store(&self, name: &str) -> Result<StoreInfo> {
        self.inner.remove_store(name).await
    }
    async fn put_intent(&self, intent: &Intent) -> Result<()> {
        self.inner.put_intent(intent).await
    }
    async fn get_intent(&self, tx_id: TxId) -> Result<Option<Intent>> {
        self.inner.get_intent(tx_id).await
    }
    async fn list_intents(&self, created_before_ms: u64) -> Result<Vec<Intent>> {
        self.inner.list_intents(created_before_ms).await
    }
    async fn remove_intent(&self, tx_id: TxId) -> Result<()> {
        self.inner.remove_intent(tx_id).await
    }
    async fn abort_intent(&self, tx_id: TxId) -> Result<Option<IntentState>> {
        self.inner.abort_intent(tx_id).await
    }
    async fn list_handles(&self) -> Result<Vec<Handle>> {
        self.inner.list_handles().await
    }
}

const ACCOUNTS: u32 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indeterminate_publishes_are_all_or_nothing_and_recovered() {
    let flaky = Arc::new(FlakyRegistry {
        inner: MemRegistry::new(),
        calls: AtomicU64::new(0),
        on: std::sync::atomic::AtomicBool::new(false),
    });
    let registry: Arc<dyn Registry> = flaky.clone();
    let blobs: Arc<dyn BlobStore> = Arc::new(ObjectBlobStore::memory());
    let mut config = Config::from_parts(registry.clone(), blobs.clone(), true);
    config.gc_grace = Duration::ZERO;
    let db = Database::open(config.clone()).await.unwrap();
    open_accounts(&db, "bank", 4, ACCOUNTS).await;
    db.create_store("ledger", small(4)).await.unwrap();

    flaky.on.store(true, Ordering::SeqCst);
    let (mut acked, mut clean_fail, mut unknown) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..rounds(120) {
        let (from, to) = (i % ACCOUNTS, (i * 3 + 1) % ACCOUNTS);
        let r = bounded(db.run_write(|tx| async move {
            let bank = tx.store::<u32, i64>("bank").await?;
            let a = bank.get(&from).await?.unwrap_or(0);
            let b = bank.get(&to).await?.unwrap_or(0);
            if from != to {
                bank.update(&from, &(a - 3)).await?;
                bank.update(&to, &(b + 3)).await?;
            }
            tx.store::<u32, u8>("ledger").await?.insert(&i, &0).await
        }))
        .await;
        match r {
            Ok(()) => acked.push(i),
            Err(e) if e.kind() == ErrorKind::Indeterminate => unknown.push(i),
            Err(_) => clean_fail.push(i),
        }
    }
    assert!(!unknown.is_empty() && !clean_fail.is_empty(), "both fault kinds happened");
    flaky.on.store(false, Ordering::SeqCst);
    drop(db);

    let db = Database::open(config).await.unwrap();
    let (total, ledger) = db
        .run_read(|tx| async move {
            let bank = tx.store::<u32, i64>("bank").await?;
            let total: i64 = bank.range(.., false, usize::MAX).await?.iter().map(|(_, v)| v).sum();
            let ledger = tx.store::<u32, u8>("ledger").await?.range(.., false, usize::MAX).await?;
            Ok((total, ledger.into_iter().map(|(k, _)| k).collect::<Vec<u32>>()))
        })
        .await
        .unwrap();
    println!("acked {}, failed {}, indeterminate {}", acked.len(), clean_fail.len(), unknown.len());
    assert_eq!(total, i64::from(ACCOUNTS) * 100, "no transfer was torn");
    for i in &acked {
        assert!(ledger.contains(i), "acknowledged transfer {i} was lost");
    }
    for i in &clean_fail {
        assert!(!ledger.contains(i), "cleanly failed transfer {i} is visible");
    }
    for i in &ledger {
        assert!(acked.contains(i) || unknown.contains(i), "transfer {i} came from nowhere");
    }
    assert_healthy(&db).await;
}
