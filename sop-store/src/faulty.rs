//! [`FaultyStore`]: a blob store wrapper that injects failures, timeouts
//! and delays (feature `testkit`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use sop_core::record::RecordId;
use sop_core::testkit::fault::{FaultConfig, FaultPlan, FaultStats, OnTimeout};
use sop_core::{BlobStore, PhysicalId, Result};

/// Wraps a [`BlobStore`] and disturbs a seeded fraction of its calls.
///
/// Call `n` (counting from 0 across all methods; batch calls count each
/// blob) is decided by a hash of `(seed, n)` alone, so a run with the same
/// seed and the same call order meets the same faults. The fault step is
/// [`FaultPlan::step`]:
/// - a *failure* returns `Io` before the inner store sees the call;
/// - a *timeout* returns `Timeout` before the inner store sees the call;
/// - a *delay* sleeps before the call (a latency spike).
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn BlobStore>,
    plan: FaultPlan,
}

impl FaultyStore {
    /// Wraps `inner` with faults as configured, enabled.
    #[must_use]
    pub fn new(inner: Arc<dyn BlobStore>, config: FaultConfig) -> Self {
        Self { inner, plan: FaultPlan::new("faulty", config) }
    }

    /// Turns fault injection on or off (calls still count).
    pub fn set_enabled(&self, on: bool) {
        self.plan.set_enabled(on);
    }

    /// What has been injected so far.
    #[must_use]
    pub fn stats(&self) -> FaultStats {
        self.plan.stats()
    }

    /// The fault step around `call`, the inner store's `what` on blob `id`.
    fn step<T, F>(&self, what: &str, id: PhysicalId, call: F) -> impl Future<Output = Result<T>> + use<T, F>
    where
        F: Future<Output = Result<T>>,
    {
        self.plan.step(&format_args!("{what} {id}"), OnTimeout::NoAnswer, call)
    }
}

#[async_trait]
impl BlobStore for FaultyStore {
    async fn put(&self, id: PhysicalId, data: Bytes) -> Result<()> {
        self.step("put", id, self.inner.put(id, data)).await
    }

    async fn get(&self, id: PhysicalId) -> Result<Bytes> {
        self.step("get", id, self.inner.get(id)).await
    }

    async fn delete(&self, id: PhysicalId) -> Result<()> {
        self.step("delete", id, self.inner.delete(id)).await
    }

    /// Each plain blob, and each record (all its parts), is one step that
    /// may fail on its own.
    async fn put_many(&self, blobs: Vec<(PhysicalId, Bytes)>) -> Result<()> {
        let mut groups: Vec<Vec<(PhysicalId, Bytes)>> = Vec::new();
        let mut records: HashMap<RecordId, Vec<(PhysicalId, Bytes)>> = HashMap::new();
        for (id, b) in blobs {
            match id.part() {
                Some(p) => records.entry(p.record).or_default().push((id, b)),
                None => groups.push(vec![(id, b)]),
            }
        }
        groups.extend(records.into_values());
        stream::iter(groups)
            .map(|g| {
                let first = g[0].0;
                self.step("put", first, self.inner.put_many(g))
            })
            .buffer_unordered(8)
            .try_collect()
            .await
    }

    /// Each plain blob is one step; the parts, one (one dead list).
    async fn delete_many(&self, ids: &[PhysicalId]) -> Result<()> {
        let (parts, plain): (Vec<PhysicalId>, Vec<PhysicalId>) =
            ids.iter().partition(|id| id.part().is_some());
        let parts = async {
            match parts.first() {
                Some(&first) => self.step("delete", first, self.inner.delete_many(&parts)).await,
                None => Ok(()),
            }
        };
        let plain = stream::iter(plain).map(|id| self.delete(id)).buffer_unordered(8).try_collect::<()>();
        let (a, b) = futures::join!(parts, plain);
        a.and(b)
    }

    async fn list(&self) -> Result<Vec<PhysicalId>> {
        self.step("list", PhysicalId::default(), self.inner.list()).await
    }

    fn allocate(&self, lens: &[usize]) -> Vec<PhysicalId> {
        self.inner.allocate(lens)
    }

    async fn reclaim(&self) -> Result<()> {
        self.step("reclaim", PhysicalId::default(), self.inner.reclaim()).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sop_core::ErrorKind;

    use super::*;
    use crate::ObjectBlobStore;

    async fn run(seed: u64) -> (Vec<bool>, FaultStats) {
        let cfg = FaultConfig { seed, fail_ratio: 0.2, timeout_ratio: 0.1, ..FaultConfig::default() };
        let store = FaultyStore::new(Arc::new(ObjectBlobStore::memory()), cfg);
        let mut outcomes = Vec::new();
        for i in 0..500u32 {
            outcomes.push(store.put(PhysicalId::new(), Bytes::from(i.to_le_bytes().to_vec())).await.is_ok());
        }
        (outcomes, store.stats())
    }

    #[tokio::test]
    async fn faults_are_seeded_and_near_the_ratio() {
        let (a, stats) = run(42).await;
        let (b, _) = run(42).await;
        let (c, _) = run(43).await;
        assert_eq!(a, b, "same seed, same faults");
        assert_ne!(a, c, "another seed, other faults");
        assert_eq!(stats.calls, 500);
        assert!((70..=130).contains(&stats.failures), "{stats:?}");
        assert!((25..=75).contains(&stats.timeouts), "{stats:?}");
        assert_eq!(a.iter().filter(|ok| !**ok).count() as u64, stats.failures + stats.timeouts);
    }

    #[tokio::test]
    async fn disabled_store_passes_everything_through_and_conforms() {
        let cfg = FaultConfig { fail_ratio: 1.0, ..FaultConfig::default() };
        let store = FaultyStore::new(Arc::new(ObjectBlobStore::memory()), cfg);
        let id = PhysicalId::new();
        let err = store.put(id, Bytes::new()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io);
        assert_eq!(
            store.inner.get(id).await.unwrap_err().kind(),
            ErrorKind::NotFound,
            "failed before the inner put"
        );
        store.set_enabled(false);
        sop_core::testkit::run_blob_store_suite(&store).await;
    }

    #[tokio::test(start_paused = true)]
    async fn delays_are_injected() {
        let cfg = FaultConfig { delay_ratio: 1.0, delay: Duration::from_secs(5), ..FaultConfig::default() };
        let store = FaultyStore::new(Arc::new(ObjectBlobStore::memory()), cfg);
        let start = tokio::time::Instant::now();
        store.put(PhysicalId::new(), Bytes::new()).await.unwrap();
        assert!(start.elapsed() >= Duration::from_secs(5));
        assert_eq!(store.stats().delays, 1);
    }
}
