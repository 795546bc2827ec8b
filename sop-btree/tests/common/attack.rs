//! Helpers of the review attacks (`attack_*.rs`): large values in their own
//! blobs, databases with a chosen grace period, and a small generator.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use sop_btree::{Config, Database, ErrorKind, StoreOptions};
use sop_core::{
    Error, Handle, Intent, IntentState, LogicalId, PublishRequest, Registry, Result, StoreInfo, TxId,
};
use sop_registry::MemRegistry;

pub(crate) fn big(n: u8) -> Vec<u8> {
    vec![n; 3000]
}

pub(crate) fn big_opts() -> StoreOptions {
    StoreOptions { value_in_node_threshold: 64, ..StoreOptions::default() }
}

pub(crate) async fn mem_db(grace: Duration) -> Database {
    let mut config = Config::memory();
    config.gc_grace = grace;
    Database::open(config).await.unwrap()
}

/// Store `s` with large values `k0..k{n}` = big(1), and `small` = "x".
pub(crate) async fn seed_big(db: &Database, n: u8) {
    db.create_store("s", big_opts()).await.unwrap();
    db.run_write(move |tx| async move {
        let s = tx.bytes_store("s").await?;
        for i in 0..n {
            s.insert(format!("k{i}").as_bytes(), &big(1)).await?;
        }
        s.insert(b"small", b"x").await
    })
    .await
    .unwrap();
}

pub(crate) async fn replace_all(db: &Database, n: u8, v: u8) {
    db.run_write(move |tx| async move {
        let s = tx.bytes_store("s").await?;
        for i in 0..n {
            s.upsert(format!("k{i}").as_bytes(), &big(v)).await?;
        }
        Ok(())
    })
    .await
    .unwrap();
}

/// A read that may legitimately fail with a conflict, `Closed` or `Timeout`,
/// or succeed with the old value; anything else (above all `Corruption`,
/// "the blob is missing") breaks "GC never deletes what a live
/// transaction may read".
pub(crate) fn assert_old_or_retryable(got: Result<Option<Bytes>>, old: &[u8], what: &str) {
    match got {
        Ok(Some(v)) => assert_eq!(&v[..], old, "{what}: a wrong value"),
        Ok(None) => panic!("{what}: an existing key read as absent"),
        Err(e) => assert!(
            e.is_conflict() || matches!(e.kind(), ErrorKind::Closed | ErrorKind::Timeout),
            "{what}: {:?}: {e}",
            e.kind()
        ),
    }
}

/// A small deterministic generator (xorshift), seeded per test.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A registry whose publish of a write transaction applies and then loses
/// its reply (`Indeterminate`) when armed, as a remote registry may; it
/// counts the publishes that reach it (validations included). With `slow`,
/// publishes and store removals run in a task of their own after a delay,
/// as a registry call on a blocking thread outlives a dropped caller; with
/// `undurable`, it reports holding writes not yet durable.
#[derive(Debug, Default)]
pub(crate) struct LostReply {
    pub(crate) inner: Arc<MemRegistry>,
    pub(crate) armed: AtomicBool,
    pub(crate) publishes: AtomicU64,
    pub(crate) slow: AtomicBool,
    pub(crate) undurable: AtomicBool,
    /// Publishes of a store removal's sweep (handle removals only, with
    /// no intent) seen so far.
    pub(crate) sweeps: AtomicU64,
    /// The sweep publish (by number, from 1) that fails, applied nothing,
    /// as a registry gone at that moment (0: none).
    pub(crate) fail_sweep: AtomicU64,
    /// Every sweep publish from this number on fails (0: none).
    pub(crate) fail_sweeps_from: AtomicU64,
}

/// How long a `slow` call waits before it applies.
pub(crate) const SLOW: Duration = Duration::from_millis(100);

impl LostReply {
    /// Runs `call` on the inner registry, detached and late when `slow`.
    async fn maybe_slow<T: Send + 'static, F>(&self, call: impl FnOnce(Arc<MemRegistry>) -> F) -> Result<T>
    where
        F: Future<Output = Result<T>> + Send + 'static,
    {
        let fut = call(self.inner.clone());
        if !self.slow.load(Ordering::SeqCst) {
            return fut.await;
        }
        let task = tokio::spawn(async move {
            tokio::time::sleep(SLOW).await;
            fut.await
        });
        task.await.map_err(|e| Error::Indeterminate(e.to_string()))?
    }
}

#[async_trait]
impl Registry for LostReply {
    async fn get_handles(&self, ids: &[LogicalId]) -> Result<Vec<Option<Handle>>> {
        self.inner.get_handles(ids).await
    }
    async fn publish(&self, request: &PublishRequest) -> Result<()> {
        self.publishes.fetch_add(1, Ordering::SeqCst);
        let sweep = request.intent.is_none()
            && !request.writes.is_empty()
            && request.writes.iter().all(|w| matches!(w, sop_core::HandleWrite::Remove { .. }));
        if sweep {
            let n = self.sweeps.fetch_add(1, Ordering::SeqCst) + 1;
            let from = self.fail_sweeps_from.load(Ordering::SeqCst);
            if n == self.fail_sweep.load(Ordering::SeqCst) || (from > 0 && n >= from) {
                return Err(Error::io("a sweep's publish", std::io::Error::other("injected")));
            }
        }
        let req = request.clone();
        self.maybe_slow(|r| async move { r.publish(&req).await }).await?;
        if request.intent.is_some() && self.armed.swap(false, Ordering::SeqCst) {
            return Err(Error::Indeterminate("the reply was lost".into()));
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
        let name = name.to_owned();
        self.maybe_slow(|r| async move { r.remove_store(&name).await }).await
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
    async fn damaged_intents(&self) -> Result<Vec<String>> {
        self.inner.damaged_intents().await
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
    fn all_durable(&self) -> bool {
        !self.undurable.load(Ordering::SeqCst)
    }
}
