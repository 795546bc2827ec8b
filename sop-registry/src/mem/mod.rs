//! [`MemRegistry`]: a sharded in-memory registry.
//!
//! Handles live in `SHARDS` mutex-protected maps. A publish locks the
//! shards of every id it touches in ascending shard order (so publishes
//! never deadlock), decides with [`PublishRequest::conflicts`], and applies
//! everything before unlocking: publishes on disjoint shards run in
//! parallel, overlapping ones serialize. Lock order: shards ascending, then
//! stores, then intents. Critical sections never await.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use sop_core::sync::{Mutex, MutexGuard, lock};
use sop_core::{
    Error, Handle, HandleWrite, Intent, IntentState, LogicalId, PublishRequest, Registry, Result, StoreInfo,
    Subject, TxId,
};

#[cfg(all(test, sop_loom))]
mod loom_publish;

type Shard = HashMap<LogicalId, Handle>;

/// An in-memory [`Registry`]: fast, not durable, for tests and models.
#[derive(Debug)]
pub struct MemRegistry {
    shards: Vec<Mutex<Shard>>,
    stores: Mutex<BTreeMap<String, StoreInfo>>,
    intents: Mutex<HashMap<TxId, Intent>>,
}

impl Default for MemRegistry {
    fn default() -> Self {
        Self::with_shards(64)
    }
}

impl MemRegistry {
    /// An empty registry with 64 shards.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty registry with `shards` shards (at least one).
    #[must_use]
    pub fn with_shards(shards: usize) -> Self {
        Self {
            shards: (0..shards.max(1)).map(|_| Mutex::new(HashMap::new())).collect(),
            stores: Mutex::new(BTreeMap::new()),
            intents: Mutex::new(HashMap::new()),
        }
    }

    fn shard_of(&self, id: LogicalId) -> usize {
        let v = id.as_u128();
        let mixed = (v as u64) ^ ((v >> 64) as u64).rotate_left(17);
        (mixed % self.shards.len() as u64) as usize
    }

    fn shard(&self, idx: usize) -> &Mutex<Shard> {
        // `idx` comes from `shard_of`, which is always in range.
        &self.shards[idx % self.shards.len()]
    }

    /// Handles of `ids`, in order (synchronous core of `get_handles`).
    pub fn get_handles_sync(&self, ids: &[LogicalId]) -> Vec<Option<Handle>> {
        ids.iter().map(|id| lock(self.shard(self.shard_of(*id))).get(id).copied()).collect()
    }

    /// Validate-and-publish (synchronous core of [`Registry::publish`]).
    ///
    /// # Errors
    /// `Conflict`, `NotFound` (unknown store in a count delta) or
    /// `InvalidInput` (malformed request); nothing is applied then.
    pub fn publish_sync(&self, req: &PublishRequest) -> Result<()> {
        req.check_shape()?;
        let mut idx: Vec<usize> = req.touched_ids().iter().map(|id| self.shard_of(*id)).collect();
        idx.sort_unstable();
        idx.dedup();
        let mut guards: Vec<MutexGuard<'_, Shard>> = idx.iter().map(|&i| lock(self.shard(i))).collect();
        let slot = |id: LogicalId| idx.binary_search(&self.shard_of(id)).unwrap_or(0);
        let conflicts = req.conflicts(|id| guards[slot(id)].get(&id).map(|h| h.version));
        if !conflicts.is_empty() {
            return Err(Error::Conflict { conflicts });
        }
        let mut stores = lock(&self.stores);
        let names = req.count_deltas.iter().map(|(n, _)| n).chain(req.count_checks.iter().map(|(n, _)| n));
        if let Some(name) = names.into_iter().find(|n| !stores.contains_key(*n)) {
            return Err(Error::NotFound(Subject::Store(name.clone())));
        }
        if let Some((name, seen)) =
            req.count_checks.iter().find(|(n, c)| stores.get(n).is_some_and(|s| s.count != *c))
        {
            return Err(Error::changed(Subject::Count(name.clone()), format!("is no longer {seen}")));
        }
        let mut intents = lock(&self.intents);
        if let Some(intent) = &req.intent {
            let pending = intents.get(&intent.tx_id).is_some_and(|i| i.state == IntentState::Pending);
            if !pending {
                return Err(req.intent_gone());
            }
        }
        for w in &req.writes {
            let shard = &mut guards[slot(w.id())];
            match (w, w.result()) {
                (_, Some(h)) => shard.insert(h.logical_id, h),
                (HandleWrite::Remove { id, .. }, None) => shard.remove(id),
                (_, None) => None,
            };
        }
        for (name, delta) in &req.count_deltas {
            if let Some(info) = stores.get_mut(name) {
                info.apply_delta(*delta);
            }
        }
        if let Some(intent) = &req.intent {
            intents.insert(intent.tx_id, intent.clone());
        }
        Ok(())
    }

    fn create_store_sync(&self, info: &StoreInfo, root: &Handle) -> Result<()> {
        let mut shard = lock(self.shard(self.shard_of(root.logical_id)));
        let mut stores = lock(&self.stores);
        if stores.contains_key(&info.name) {
            return Err(Error::AlreadyExists(Subject::Store(info.name.clone())));
        }
        if shard.contains_key(&root.logical_id) {
            return Err(Error::AlreadyExists(Subject::Node(root.logical_id)));
        }
        shard.insert(root.logical_id, *root);
        stores.insert(info.name.clone(), info.clone());
        Ok(())
    }
}

#[async_trait]
impl Registry for MemRegistry {
    async fn get_handles(&self, ids: &[LogicalId]) -> Result<Vec<Option<Handle>>> {
        Ok(self.get_handles_sync(ids))
    }

    async fn publish(&self, request: &PublishRequest) -> Result<()> {
        self.publish_sync(request)
    }

    async fn create_store(&self, info: &StoreInfo, root: &Handle) -> Result<()> {
        self.create_store_sync(info, root)
    }

    async fn get_store(&self, name: &str) -> Result<Option<StoreInfo>> {
        Ok(lock(&self.stores).get(name).cloned())
    }

    async fn list_stores(&self) -> Result<Vec<StoreInfo>> {
        Ok(lock(&self.stores).values().cloned().collect())
    }

    async fn remove_store(&self, name: &str) -> Result<StoreInfo> {
        lock(&self.stores).remove(name).ok_or_else(|| Error::NotFound(Subject::Store(name.to_owned())))
    }

    async fn remove_store_if_root(&self, name: &str, root: LogicalId) -> Result<Option<StoreInfo>> {
        let mut stores = lock(&self.stores);
        if stores.get(name).is_some_and(|s| s.root == root) { Ok(stores.remove(name)) } else { Ok(None) }
    }

    async fn put_intent(&self, intent: &Intent) -> Result<()> {
        lock(&self.intents).insert(intent.tx_id, intent.clone());
        Ok(())
    }

    async fn get_intent(&self, tx_id: TxId) -> Result<Option<Intent>> {
        Ok(lock(&self.intents).get(&tx_id).cloned())
    }

    async fn damaged_intents(&self) -> Result<Vec<String>> {
        Ok(Vec::new()) // intents are kept decoded
    }

    async fn list_intents(&self, created_before_ms: u64) -> Result<Vec<Intent>> {
        let intents = lock(&self.intents);
        Ok(intents.values().filter(|i| i.created_at_ms < created_before_ms).cloned().collect())
    }

    async fn remove_intent(&self, tx_id: TxId) -> Result<()> {
        lock(&self.intents).remove(&tx_id);
        Ok(())
    }

    async fn abort_intent(&self, tx_id: TxId) -> Result<Option<IntentState>> {
        let mut intents = lock(&self.intents);
        Ok(intents.get_mut(&tx_id).map(|i| {
            if i.state == IntentState::Pending {
                i.state = IntentState::Aborted;
            }
            i.state
        }))
    }

    async fn list_handles(&self) -> Result<Vec<Handle>> {
        Ok(self.shards.iter().flat_map(|s| lock(s).values().copied().collect::<Vec<_>>()).collect())
    }
}

#[cfg(all(test, not(sop_loom)))]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance() {
        sop_core::testkit::run_registry_suite(Arc::new(MemRegistry::new())).await;
        sop_core::testkit::run_registry_suite(Arc::new(MemRegistry::with_shards(1))).await;
    }
}
