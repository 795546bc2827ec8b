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

use std::sync::Arc as StdArc;

use rustc_hash::FxHashMap as HashMap;

use sop_core::sync::RwLock;
use sop_core::{Handle, KeyIndex, LogicalId, Node, PhysicalId};

/// The physical id of an empty root leaf: it has no blob, so that creating
/// a store is one atomic registry call.
pub(crate) const EMPTY_ROOT: PhysicalId = PhysicalId::from_u128(0);

const SHARDS: usize = 64;
/// Entries per shard before the shard is emptied (4 M handles in all, about
/// 300 MB): a crude bound, harmless because every entry can be re-read.
const MAX_PER_SHARD: usize = 1 << 16;

/// `LogicalId -> Handle`, sharded; a shard is emptied when it is full.
/// Its synchronization is model-checked by `cargo xtask loom`.
///
/// An entry may also hold its *front*: the decoded node its handle's blob
/// holds ([`HandleCache::attach`]), so that a reader resolves a node id
/// to its handle and its node in one lookup, with no trip through the
/// node cache. A front is only ever the node of the entry's own handle
/// (blobs are immutable): replacing or forgetting the handle drops it.
/// Fronts keep their nodes alive past the node cache's eviction, so they
/// are bounded: a shard over its share of `front_budget` bytes drops all
/// of its fronts (every front can be attached again).
#[derive(Debug)]
pub(crate) struct HandleCache {
    shards: Vec<RwLock<Shard>>,
    max_per_shard: usize,
    front_per_shard: usize,
}

/// One shard: its entries, how many times an entry left it other than by
/// being replaced with a newer version (forgotten, or the shard emptied),
/// and the bytes its fronts weigh.
#[derive(Debug, Default)]
struct Shard {
    map: HashMap<LogicalId, Entry>,
    removals: u64,
    front_bytes: usize,
}

/// A cached handle and, when attached, its front with the bytes it weighs.
#[derive(Debug)]
struct Entry {
    handle: Handle,
    front: Option<(Front, usize)>,
}

/// The decoded node a handle's blob holds, with its search index.
#[derive(Debug, Clone)]
pub(crate) struct Front {
    /// The node (a delta leaf's, merged).
    pub(crate) node: StdArc<Node>,
    /// Its keys' search index.
    pub(crate) index: StdArc<KeyIndex>,
}

/// Front bytes a cache built by [`HandleCache::new`] keeps in all (the
/// default node cache's quarter).
const FRONT_BUDGET: usize = 64 << 20;

impl Default for HandleCache {
    fn default() -> Self {
        Self::new()
    }
}

impl HandleCache {
    /// 64 shards of up to 65 536 handles, with 64 MiB of fronts.
    #[must_use]
    pub(crate) fn new() -> Self {
        Self::with_front_budget(FRONT_BUDGET)
    }

    /// 64 shards of up to 65 536 handles, with `front_budget` bytes of
    /// fronts in all.
    #[must_use]
    pub(crate) fn with_front_budget(front_budget: usize) -> Self {
        let mut cache = Self::with_shards(SHARDS, MAX_PER_SHARD);
        cache.front_per_shard = front_budget / SHARDS;
        cache
    }

    /// `shards` shards (at least 1) of up to `max_per_shard` handles, with
    /// the default front budget.
    #[must_use]
    pub(crate) fn with_shards(shards: usize, max_per_shard: usize) -> Self {
        let front_per_shard = FRONT_BUDGET / shards.max(1);
        let shards = (0..shards.max(1)).map(|_| RwLock::new(Shard::default())).collect();
        Self { shards, max_per_shard: max_per_shard.max(1), front_per_shard }
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
        self.shard(id)
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .map
            .get(&id)
            .map(|e| e.handle)
    }

    /// The cached handle of `id` with its front, when one is attached.
    #[must_use]
    pub(crate) fn get_front(&self, id: LogicalId) -> Option<(Handle, Front)> {
        let shard = self.shard(id).read().unwrap_or_else(std::sync::PoisonError::into_inner);
        shard.map.get(&id).and_then(|e| Some((e.handle, e.front.as_ref()?.0.clone())))
    }

    /// Attaches `front`, the node `h`'s blob holds, to `h`'s entry, if the
    /// entry still holds `h` itself; the front weighs `weight` bytes (as
    /// the node cache weighed the node: no pass over its entries here).
    pub(crate) fn attach(&self, h: Handle, front: Front, weight: usize) {
        let mut shard = self.shard(h.logical_id).write().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Only an attach that lands may drop the shard's fronts: a refused
        // one (another handle, a front already there, a node over the
        // whole share) costs no scan and drops nothing.
        let lands = shard.map.get(&h.logical_id).is_some_and(|e| e.handle == h && e.front.is_none());
        if !lands || weight > self.front_per_shard {
            return;
        }
        if shard.front_bytes.saturating_add(weight) > self.front_per_shard {
            shard.drop_fronts();
        }
        if let Some(entry) = shard.map.get_mut(&h.logical_id) {
            entry.front = Some((front, weight));
            shard.front_bytes += weight;
        }
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
        if let Some(old) = shard.map.remove(&id) {
            shard.unweigh(&old);
        }
        shard.removals += 1;
    }
}

impl Shard {
    /// Records `h` unless a newer version is already known.
    fn record(&mut self, h: Handle, max: usize) {
        let newer = self.map.get(&h.logical_id).is_none_or(|old| old.handle.version < h.version);
        if newer {
            if self.map.len() >= max {
                self.map.clear();
                self.front_bytes = 0;
                self.removals += 1;
            }
            if let Some(old) = self.map.insert(h.logical_id, Entry { handle: h, front: None }) {
                self.unweigh(&old);
            }
        }
    }

    /// Takes a replaced or removed entry's front off the shard's weight.
    fn unweigh(&mut self, old: &Entry) {
        if let Some((_, weight)) = &old.front {
            self.front_bytes = self.front_bytes.saturating_sub(*weight);
        }
    }

    /// Drops every front (the shard is over its share of the budget).
    fn drop_fronts(&mut self) {
        for entry in self.map.values_mut() {
            entry.front = None;
        }
        self.front_bytes = 0;
    }
}

#[cfg(all(test, sop_loom))]
pub(crate) mod loom_tests {
    use super::HandleCache;
    use super::tests::front;
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

    /// A reader's attach of the node of version 2 races a publish's
    /// write-through of version 3: a front is only ever returned with the
    /// handle whose blob holds it.
    #[test]
    fn loom_a_front_never_outlives_its_handle() {
        loom::model(|| {
            let id = LogicalId::from_u128(11);
            let cache = Arc::new(HandleCache::with_shards(1, 4));
            cache.observe(h(id, 2));
            let (c1, c2, c3) = (cache.clone(), cache.clone(), cache.clone());
            let reader = thread::spawn(move || c1.attach(h(id, 2), front(2), 10));
            let writer = thread::spawn(move || c2.observe(h(id, 3)));
            let other =
                thread::spawn(move || c3.get_front(id).map(|(h, f)| (h.version, crate::tree::fill(&f.node))));
            reader.join().unwrap();
            writer.join().unwrap();
            let seen = other.join().unwrap();
            assert!(matches!(seen, None | Some((2, 2))), "{seen:?}");
            assert!(cache.get_front(id).is_none(), "version 3's entry holds version 2's node");
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A front standing for the node of `version`: a leaf of that many items.
    pub(crate) fn front(version: u64) -> Front {
        let items = (0..version)
            .map(|i| sop_core::Item {
                key: bytes::Bytes::from(i.to_be_bytes().to_vec()),
                version: sop_core::TxId::from_u128(1),
                value: sop_core::Value::Inline(bytes::Bytes::new()),
            })
            .collect();
        let node = std::sync::Arc::new(sop_core::Node::Leaf { items });
        let index = std::sync::Arc::new(sop_core::KeyIndex::of_node(&node));
        Front { node, index }
    }

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

    /// A front is attached only to the handle whose node it is, leaves with
    /// that handle (replaced, forgotten or cleared), and is bounded.
    #[test]
    fn a_front_belongs_to_its_handle_and_is_bounded() {
        let cache = HandleCache::with_shards(1, 8);
        let id = LogicalId::new();
        cache.attach(h(id, 2), front(2), 10);
        assert!(cache.get_front(id).is_none(), "attached with no entry");
        cache.observe(h(id, 2));
        cache.attach(h(id, 1), front(1), 10);
        assert!(cache.get_front(id).is_none(), "attached to another version's entry");
        cache.attach(h(id, 2), front(2), 10);
        let (got, f) = cache.get_front(id).expect("attached");
        assert_eq!((got.version, crate::tree::fill(&f.node)), (2, 2));
        cache.observe(h(id, 2));
        assert!(cache.get_front(id).is_some(), "the same version kept its front");
        cache.observe(h(id, 3));
        assert!(cache.get_front(id).is_none(), "a newer handle kept the old node");
        assert_eq!(cache.get(id).map(|h| h.version), Some(3));
        cache.attach(h(id, 3), front(3), 10);
        cache.forget(id);
        assert!(cache.get_front(id).is_none() && cache.get(id).is_none());

        // A handle of the same version naming another blob is another
        // handle: no front of the first blob's node lands on it.
        let other = LogicalId::new();
        cache.observe(h(other, 5));
        let mut elsewhere = h(other, 5);
        elsewhere.physical_id = PhysicalId::from_u128(99);
        cache.attach(elsewhere, front(5), 10);
        assert!(cache.get_front(other).is_none(), "attached to a handle of another blob");

        // Over the shard's share of the budget, the shard's fronts go.
        let mut small = HandleCache::with_shards(1, 8);
        small.front_per_shard = 250;
        let (a, b) = (LogicalId::new(), LogicalId::new());
        small.observe(h(a, 1));
        small.observe(h(b, 1));
        small.attach(h(a, 1), front(1), 200);
        small.attach(h(b, 1), front(1), 200);
        assert!(small.get_front(a).is_none() && small.get_front(b).is_some());
        small.attach(h(a, 1), front(1), 260);
        assert!(small.get_front(a).is_none(), "a front over the whole share");
        assert_eq!(small.get(a).map(|h| h.version), Some(1), "dropping fronts keeps handles");
        // A refused attach (a front already there, another version, too
        // big) drops nothing.
        small.attach(h(b, 1), front(1), 200);
        small.attach(h(a, 2), front(2), 200);
        small.attach(h(a, 1), front(1), 260);
        assert!(small.get_front(b).is_some(), "a refused attach dropped the shard's fronts");
    }

    /// A front that cannot land is refused and counted nowhere: on
    /// another handle's entry, or heavier than the whole share.
    #[test]
    fn a_front_that_cannot_land_is_refused() {
        let mut cache = HandleCache::with_shards(1, 8);
        cache.front_per_shard = 100;
        let id = LogicalId::new();
        cache.observe(h(id, 3));
        cache.attach(h(id, 2), front(2), 10); // another handle's
        assert!(cache.get_front(id).is_none());
        cache.attach(h(id, 3), front(3), 101); // over the whole share
        assert!(cache.get_front(id).is_none());
        assert_eq!(cache.shards[0].read().unwrap().front_bytes, 0, "a refused front counted");
        cache.attach(h(id, 3), front(2), 100);
        assert!(cache.get_front(id).is_some(), "a front of exactly the share");
    }

    /// The bytes a shard's fronts weigh follow every way a front leaves:
    /// replaced, forgotten, cleared with a full shard, dropped.
    #[test]
    fn front_bytes_follow_every_front_that_leaves() {
        let weight = |c: &HandleCache| c.shards[0].read().unwrap().front_bytes;
        let cache = HandleCache::with_shards(1, 3);
        let (a, b) = (LogicalId::new(), LogicalId::new());
        cache.observe(h(a, 1));
        cache.observe(h(b, 1));
        cache.attach(h(a, 1), front(1), 10);
        cache.attach(h(a, 1), front(1), 10);
        cache.attach(h(b, 1), front(1), 7);
        assert_eq!(weight(&cache), 17, "a second attach counted twice");
        cache.observe(h(a, 2));
        assert_eq!(weight(&cache), 7, "a replaced handle's front still counted");
        cache.forget(b);
        assert_eq!(weight(&cache), 0, "a forgotten handle's front still counted");
        cache.observe(h(a, 3));
        cache.attach(h(a, 3), front(3), 5);
        cache.observe(h(LogicalId::new(), 1));
        cache.observe(h(LogicalId::new(), 1));
        assert_eq!(weight(&cache), 5);
        cache.observe(h(LogicalId::new(), 1)); // full: the shard is emptied
        assert_eq!(weight(&cache), 0, "an emptied shard's fronts still counted");
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
