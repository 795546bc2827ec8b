//! [`FaultyRegistry`]: a registry wrapper that injects failures, lost
//! replies and delays (feature `testkit`).

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use sop_core::testkit::fault::{FaultConfig, FaultPlan, FaultStats, OnTimeout};
use sop_core::{Handle, Intent, IntentState, LogicalId, PublishRequest, Registry, Result};
use sop_core::{StoreInfo, TxId};

/// Wraps a [`Registry`] and disturbs a seeded fraction of its calls, as a
/// remote registry under trouble would.
///
/// Every call is numbered (across all methods) and goes through
/// [`FaultPlan::step`]:
/// - a *failure* returns `Io` before the inner registry sees the call;
/// - a *timeout* on a call that changes state (publish, store and intent
///   writes) lets the inner call run and then reports `Indeterminate`, the
///   worst case of a lost reply; on a read it returns `Timeout`;
/// - a *delay* sleeps before the call (a latency spike).
#[derive(Debug)]
pub struct FaultyRegistry {
    inner: Arc<dyn Registry>,
    plan: FaultPlan,
}

impl FaultyRegistry {
    /// Wraps `inner` with faults as configured, enabled.
    #[must_use]
    pub fn new(inner: Arc<dyn Registry>, config: FaultConfig) -> Self {
        Self { inner, plan: FaultPlan::new("faulty-registry", config) }
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

    /// A read: a timeout replaces its answer.
    fn read<T, F>(&self, what: &str, call: F) -> impl Future<Output = Result<T>> + use<T, F>
    where
        F: Future<Output = Result<T>>,
    {
        self.plan.step(&what, OnTimeout::NoAnswer, call)
    }

    /// A write: a timeout loses the reply of a call that ran.
    fn write<T, F>(&self, what: &str, call: F) -> impl Future<Output = Result<T>> + use<T, F>
    where
        F: Future<Output = Result<T>>,
    {
        self.plan.step(&what, OnTimeout::LoseReply, call)
    }
}

#[async_trait]
impl Registry for FaultyRegistry {
    async fn get_handles(&self, ids: &[LogicalId]) -> Result<Vec<Option<Handle>>> {
        self.read("get_handles", self.inner.get_handles(ids)).await
    }
    async fn publish(&self, request: &PublishRequest) -> Result<()> {
        self.write("publish", self.inner.publish(request)).await
    }
    async fn create_store(&self, info: &StoreInfo, root: &Handle) -> Result<()> {
        self.write("create_store", self.inner.create_store(info, root)).await
    }
    async fn get_store(&self, name: &str) -> Result<Option<StoreInfo>> {
        self.read("get_store", self.inner.get_store(name)).await
    }
    async fn list_stores(&self) -> Result<Vec<StoreInfo>> {
        self.read("list_stores", self.inner.list_stores()).await
    }
    async fn remove_store(&self, name: &str) -> Result<StoreInfo> {
        self.write("remove_store", self.inner.remove_store(name)).await
    }
    async fn remove_store_if_root(&self, name: &str, root: LogicalId) -> Result<Option<StoreInfo>> {
        self.write("remove_store", self.inner.remove_store_if_root(name, root)).await
    }
    async fn put_intent(&self, intent: &Intent) -> Result<()> {
        self.write("put_intent", self.inner.put_intent(intent)).await
    }
    async fn get_intent(&self, tx_id: TxId) -> Result<Option<Intent>> {
        self.read("get_intent", self.inner.get_intent(tx_id)).await
    }
    async fn list_intents(&self, created_before_ms: u64) -> Result<Vec<Intent>> {
        self.read("list_intents", self.inner.list_intents(created_before_ms)).await
    }
    async fn damaged_intents(&self) -> Result<Vec<String>> {
        self.read("damaged_intents", self.inner.damaged_intents()).await
    }
    async fn remove_intent(&self, tx_id: TxId) -> Result<()> {
        self.write("remove_intent", self.inner.remove_intent(tx_id)).await
    }
    async fn abort_intent(&self, tx_id: TxId) -> Result<Option<IntentState>> {
        self.write("abort_intent", self.inner.abort_intent(tx_id)).await
    }
    async fn list_handles(&self) -> Result<Vec<Handle>> {
        self.read("list_handles", self.inner.list_handles()).await
    }
    async fn compact(&self) -> Result<()> {
        self.write("compact", self.inner.compact()).await
    }
    fn all_durable(&self) -> bool {
        self.inner.all_durable()
    }
    fn publish_limit(&self, request: &PublishRequest) -> Result<()> {
        self.inner.publish_limit(request)
    }
}

#[cfg(all(test, not(sop_loom)))]
mod tests {
    use std::time::Duration;

    use sop_core::{ErrorKind, HandleWrite, PhysicalId, RegistryExt};

    use super::*;
    use crate::MemRegistry;

    fn insert(id: LogicalId) -> PublishRequest {
        let write = HandleWrite::Insert { id, physical_id: PhysicalId::new() };
        PublishRequest { writes: vec![write], ..PublishRequest::default() }
    }

    #[tokio::test]
    async fn a_failure_never_reaches_the_inner_registry() {
        let inner = Arc::new(MemRegistry::new());
        let reg =
            FaultyRegistry::new(inner.clone(), FaultConfig { fail_ratio: 1.0, ..FaultConfig::default() });
        let id = LogicalId::new();
        assert_eq!(reg.publish(&insert(id)).await.unwrap_err().kind(), ErrorKind::Io);
        assert_eq!(inner.get_handle(id).await.unwrap(), None);
        assert_eq!(reg.get_handles(&[id]).await.unwrap_err().kind(), ErrorKind::Io);
        assert_eq!(reg.stats().failures, 2);
    }

    #[tokio::test]
    async fn a_timed_out_write_applied_and_a_timed_out_read_did_not_answer() {
        let inner = Arc::new(MemRegistry::new());
        let reg =
            FaultyRegistry::new(inner.clone(), FaultConfig { timeout_ratio: 1.0, ..FaultConfig::default() });
        let id = LogicalId::new();
        assert_eq!(reg.publish(&insert(id)).await.unwrap_err().kind(), ErrorKind::Indeterminate);
        assert_eq!(inner.get_handle(id).await.unwrap().map(|h| h.version), Some(1), "the write applied");
        assert_eq!(reg.get_handles(&[id]).await.unwrap_err().kind(), ErrorKind::Timeout);
        // A write the inner registry refuses reports that, not a lost reply.
        assert_eq!(reg.publish(&insert(id)).await.unwrap_err().kind(), ErrorKind::Conflict);
    }

    #[tokio::test(start_paused = true)]
    async fn delays_are_injected() {
        let cfg = FaultConfig { delay_ratio: 1.0, delay: Duration::from_secs(5), ..FaultConfig::default() };
        let reg = FaultyRegistry::new(Arc::new(MemRegistry::new()), cfg);
        let start = tokio::time::Instant::now();
        reg.list_stores().await.unwrap();
        assert!(start.elapsed() >= Duration::from_secs(5));
        assert_eq!(reg.stats().delays, 1);
    }

    #[tokio::test]
    async fn disabled_it_passes_everything_through_and_conforms() {
        let reg = FaultyRegistry::new(
            Arc::new(MemRegistry::new()),
            FaultConfig { fail_ratio: 1.0, ..FaultConfig::default() },
        );
        reg.set_enabled(false);
        sop_core::testkit::run_registry_suite(Arc::new(reg)).await;
    }
}
