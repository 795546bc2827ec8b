//! [`HandleCache`]: the in-process cache of registry handles.
//!
//! With the embedded registry every publish goes through this process, and
//! the commit writes its new handles through to this cache right after the
//! publish, so the cache is coherent up to that instant; a reader that sees
//! an older handle in between only costs a conflict at validation, which
//! always asks the registry. An entry is only ever replaced by a higher
//! version, so out-of-order write-throughs cannot regress it.

use std::sync::RwLock;

use rustc_hash::FxHashMap as HashMap;

use sop_core::{Handle, LogicalId};

const SHARDS: usize = 64;
/// Entries per shard before the shard is emptied (4 M handles in all, about
/// 300 MB): a crude bound, harmless because every entry can be re-read.
const MAX_PER_SHARD: usize = 1 << 16;

/// `LogicalId -> Handle`, sharded.
#[derive(Debug)]
pub(crate) struct HandleCache {
    shards: Vec<RwLock<HashMap<LogicalId, Handle>>>,
}

impl HandleCache {
    pub(crate) fn new() -> Self {
        Self { shards: (0..SHARDS).map(|_| RwLock::new(HashMap::default())).collect() }
    }

    fn shard(&self, id: LogicalId) -> &RwLock<HashMap<LogicalId, Handle>> {
        let v = id.as_u128();
        let i = ((v as u64) ^ ((v >> 64) as u64)) as usize % SHARDS;
        &self.shards[i]
    }

    pub(crate) fn get(&self, id: LogicalId) -> Option<Handle> {
        self.shard(id).read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&id).copied()
    }

    /// Records `h` unless a newer version is already known.
    pub(crate) fn observe(&self, h: Handle) {
        let mut shard = self.shard(h.logical_id).write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let newer = shard.get(&h.logical_id).is_none_or(|old| old.version < h.version);
        if newer {
            if shard.len() >= MAX_PER_SHARD {
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
