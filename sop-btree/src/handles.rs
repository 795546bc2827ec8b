//! [`HandleCache`], the in-process cache of registry handles (read through
//! `crate::clock::resolve`); and [`EMPTY_ROOT`].
//!
//! With the embedded registry every publish goes through this process, and
//! `DbInner::publish` writes its new handles through to this cache (or
//! forgets the ids it wrote, when the outcome is unknown) before the
//! publish counts as finished on the `crate::clock`; a reader that sees an
//! older handle in between only costs a conflict at validation, which
//! asks the registry. An entry is only ever replaced by a higher version,
//! so out-of-order write-throughs cannot regress it.

use rustc_hash::FxHashMap as HashMap;

use sop_core::sync::RwLock;
use sop_core::{Handle, LogicalId, PhysicalId};

/// The physical id of an empty root leaf: it has no blob, so that creating
/// a store is one atomic registry call.
pub(crate) const EMPTY_ROOT: PhysicalId = PhysicalId::from_u128(0);

const SHARDS: usize = 64;
/// Entries per shard before the shard is emptied (4 M handles in all, about
/// 300 MB): a crude bound, harmless because every entry can be re-read.
const MAX_PER_SHARD: usize = 1 << 16;

/// `LogicalId -> Handle`, sharded; a shard is emptied when it is full.
/// Its synchronization is model-checked by `cargo xtask loom`.
#[derive(Debug)]
pub(crate) struct HandleCache {
    shards: Vec<RwLock<HashMap<LogicalId, Handle>>>,
    max_per_shard: usize,
}

impl Default for HandleCache {
    fn default() -> Self {
        Self::new()
    }
}

impl HandleCache {
    /// 64 shards of up to 65 536 handles.
    #[must_use]
    pub(crate) fn new() -> Self {
        Self::with_shards(SHARDS, MAX_PER_SHARD)
    }

    /// `shards` shards (at least 1) of up to `max_per_shard` handles.
    #[must_use]
    pub(crate) fn with_shards(shards: usize, max_per_shard: usize) -> Self {
        let shards = (0..shards.max(1)).map(|_| RwLock::new(HashMap::default())).collect();
        Self { shards, max_per_shard: max_per_shard.max(1) }
    }

    fn shard(&self, id: LogicalId) -> &RwLock<HashMap<LogicalId, Handle>> {
        let v = id.as_u128();
        let i = ((v as u64) ^ ((v >> 64) as u64)) as usize % self.shards.len();
        #[expect(clippy::indexing_slicing, reason = "i < shards.len(), which is at least 1")]
        &self.shards[i]
    }

    /// The cached handle of `id`.
    #[must_use]
    pub(crate) fn get(&self, id: LogicalId) -> Option<Handle> {
        self.shard(id).read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&id).copied()
    }

    /// Records `h` unless a newer version is already known.
    pub(crate) fn observe(&self, h: Handle) {
        self.observe_if(h, || true);
    }

    /// Records `h` unless a newer version is already known or `still_valid`,
    /// asked under the shard's lock (so after any write-through that got
    /// the lock first), says no.
    pub(crate) fn observe_if(&self, h: Handle, still_valid: impl FnOnce() -> bool) {
        let mut shard = self.shard(h.logical_id).write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !still_valid() {
            return;
        }
        let newer = shard.get(&h.logical_id).is_none_or(|old| old.version < h.version);
        if newer {
            if shard.len() >= self.max_per_shard {
                shard.clear();
            }
            shard.insert(h.logical_id, h);
        }
    }

    /// Forgets `id` (removed, or found stale at validation).
    pub(crate) fn forget(&self, id: LogicalId) {
        self.shard(id).write().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id);
    }
}

#[cfg(all(test, sop_loom))]
pub(crate) mod loom_tests {
    use super::HandleCache;
    use sop_core::sync::{Arc, thread};
    use sop_core::{Handle, LogicalId, PhysicalId};

    /// A handle of `id` at `version` (its blob named after the version).
    pub(crate) fn h(id: LogicalId, version: u64) -> Handle {
        let mut h = Handle::new(id, PhysicalId::from_u128(u128::from(version)));
        h.version = version;
        h
    }

    #[test]
    fn loom_handle_cache_keeps_the_newest_version() {
        loom::model(|| {
            let id = LogicalId::from_u128(7);
            let cache = Arc::new(HandleCache::with_shards(1, 4));
            let (c1, c2) = (cache.clone(), cache.clone());
            let t1 = thread::spawn(move || c1.observe(h(id, 2)));
            let t2 = thread::spawn(move || c2.observe(h(id, 3)));
            t1.join().unwrap();
            t2.join().unwrap();
            assert_eq!(cache.get(id).map(|h| h.version), Some(3));
        });
    }

    #[test]
    fn loom_readers_see_whole_handles_and_forget_never_resurrects() {
        loom::model(|| {
            let id = LogicalId::from_u128(9);
            let cache = Arc::new(HandleCache::with_shards(1, 4));
            cache.observe(h(id, 2));
            let (c1, c2, c3) = (cache.clone(), cache.clone(), cache.clone());
            let t1 = thread::spawn(move || c1.observe(h(id, 3)));
            let t2 = thread::spawn(move || c2.forget(id));
            let t3 = thread::spawn(move || c3.get(id));
            t1.join().unwrap();
            t2.join().unwrap();
            let seen = t3.join().unwrap();
            assert!(matches!(
                seen.map(|h| (h.version, h.physical_id.as_u128())),
                None | Some((2, 2)) | Some((3, 3))
            ));
            // Version 2 never comes back once 3 was observed or 2 forgotten.
            assert!(matches!(cache.get(id).map(|h| h.version), None | Some(3)));
        });
    }
}
