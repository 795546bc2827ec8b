//! [`HandleCache`], the in-process cache of registry handles (read through
//! `crate::clock::resolve`); and [`EMPTY_ROOT`].
//!
//! With the embedded registry every publish goes through this process, and
//! `DbInner::publish` writes its new handles through to this cache (or
//! forgets the ids it wrote, when the outcome is unknown) before the
//! publish counts as finished on the `crate::clock`; a reader that sees an
//! older handle in between only costs a conflict at validation, which
//! asks the registry. An entry is only ever replaced by a higher version,
//! so out-of-order write-throughs cannot regress it; and a write-through
//! never refills an entry that was forgotten (or cleared) after its
//! publish started ([`HandleCache::observe_since`]): the forgotten entry
//! may have held a newer version than the late write-through's (found by
//! a serializability history: a publish stalled between the registry and
//! its write-through put back a version two commits old, which read-only
//! transactions then read without validation).

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
    shards: Vec<RwLock<Shard>>,
    max_per_shard: usize,
}

/// One shard: its entries, and how many times an entry left it other
/// than by being replaced with a newer version (forgotten, or the shard
/// emptied).
#[derive(Debug, Default)]
struct Shard {
    map: HashMap<LogicalId, Handle>,
    removals: u64,
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
        let shards = (0..shards.max(1)).map(|_| RwLock::new(Shard::default())).collect();
        Self { shards, max_per_shard: max_per_shard.max(1) }
    }

    fn shard(&self, id: LogicalId) -> &RwLock<Shard> {
        let v = id.as_u128();
        let i = ((v as u64) ^ ((v >> 64) as u64)) as usize % self.shards.len();
        #[expect(clippy::indexing_slicing, reason = "i < shards.len(), which is at least 1")]
        &self.shards[i]
    }

    /// The cached handle of `id`.
    #[must_use]
    pub(crate) fn get(&self, id: LogicalId) -> Option<Handle> {
        self.shard(id).read().unwrap_or_else(std::sync::PoisonError::into_inner).map.get(&id).copied()
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
        if still_valid() {
            shard.record(h, self.max_per_shard);
        }
    }

    /// A mark of `id`'s shard, to pass to [`HandleCache::observe_since`]:
    /// taken before a publish is sent.
    #[must_use]
    pub(crate) fn mark(&self, id: LogicalId) -> u64 {
        self.shard(id).read().unwrap_or_else(std::sync::PoisonError::into_inner).removals
    }

    /// A publish's write-through of `h`: replaces an older cached version;
    /// fills an empty entry only if no entry of the shard was forgotten or
    /// cleared since `mark` (which may have held a version newer than `h`,
    /// published and written through while this publish was in flight).
    pub(crate) fn observe_since(&self, h: Handle, mark: u64) {
        let mut shard = self.shard(h.logical_id).write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if shard.map.contains_key(&h.logical_id) || shard.removals == mark {
            shard.record(h, self.max_per_shard);
        }
    }

    /// Forgets `id` (removed, or found stale at validation).
    pub(crate) fn forget(&self, id: LogicalId) {
        let mut shard = self.shard(id).write().unwrap_or_else(std::sync::PoisonError::into_inner);
        shard.map.remove(&id);
        shard.removals += 1;
    }
}

impl Shard {
    /// Records `h` unless a newer version is already known.
    fn record(&mut self, h: Handle, max: usize) {
        let newer = self.map.get(&h.logical_id).is_none_or(|old| old.version < h.version);
        if newer {
            if self.map.len() >= max {
                self.map.clear();
                self.removals += 1;
            }
            self.map.insert(h.logical_id, h);
        }
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

    /// A publish of version 2 marked before it was sent; a later publish
    /// of version 3 writes through, then a conflict forgets the id: the
    /// stalled write-through of 2 never puts the older version back.
    #[test]
    fn loom_a_late_write_through_never_refills_a_forgotten_entry() {
        loom::model(|| {
            let id = LogicalId::from_u128(5);
            let cache = Arc::new(HandleCache::with_shards(1, 4));
            let mark = cache.mark(id);
            let (c1, c2) = (cache.clone(), cache.clone());
            let late = thread::spawn(move || c1.observe_since(h(id, 2), mark));
            let later = thread::spawn(move || {
                c2.observe(h(id, 3));
                c2.forget(id);
            });
            late.join().unwrap();
            later.join().unwrap();
            assert!(matches!(cache.get(id).map(|h| h.version), None | Some(3)));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn h(id: LogicalId, version: u64) -> Handle {
        let mut h = Handle::new(id, PhysicalId::from_u128(u128::from(version)));
        h.version = version;
        h
    }

    /// The interleaving a serializability history found, step by step.
    #[test]
    fn a_stalled_write_through_does_not_bring_back_an_older_version() {
        let (cache, id) = (HandleCache::with_shards(2, 8), LogicalId::new());
        let mark = cache.mark(id); // publish A (version 2) is sent, then stalls
        cache.observe(h(id, 3)); // publish B applies after A and writes through
        cache.forget(id); // a conflicting writer forgets the id
        cache.observe_since(h(id, 2), mark); // A's write-through, late
        assert_eq!(cache.get(id), None, "version 2 came back after 3 was published");

        // Without a removal in between, a write-through fills the entry,
        // and replaces only older versions.
        let mark = cache.mark(id);
        cache.observe_since(h(id, 4), mark);
        assert_eq!(cache.get(id).map(|h| h.version), Some(4));
        cache.observe_since(h(id, 3), mark);
        assert_eq!(cache.get(id).map(|h| h.version), Some(4));
    }

    /// Emptying a full shard counts as a removal too.
    #[test]
    fn a_cleared_shard_is_not_refilled_by_a_late_write_through() {
        let cache = HandleCache::with_shards(1, 2);
        let id = LogicalId::new();
        let mark = cache.mark(id);
        cache.observe(h(id, 3));
        cache.observe(h(LogicalId::new(), 1));
        cache.observe(h(LogicalId::new(), 1)); // full: the shard is emptied
        cache.observe_since(h(id, 2), mark);
        assert_eq!(cache.get(id), None);
    }
}
