//! [`HandleTable`]: every handle of a registry in memory, authoritative
//! (the embedded RocksDB registry's, in `sop-backends`).
//!
//! The embedded registry is exclusive (its lock file keeps the directory to
//! one process), so this process makes every change to its handles and can
//! answer reads from memory: the table is loaded once at open and updated
//! by every write of the `handles` column family, under the same locks and
//! right after the same `WriteBatch` (a publish's stripe locks, a store's
//! creation), so that it never disagrees with what RocksDB holds. A publish
//! validates against it with no RocksDB read; `get_handles` is a hash
//! lookup per id. Memory: one entry (~56 bytes with the map's overhead)
//! per node, not per item (~6 000 nodes for 1 000 000 items of 116 bytes).
//!
//! A handle record that does not decode is not in the table: its id is
//! remembered as damaged and read from RocksDB, which reports the
//! `Corruption`, until a write replaces it.

use rustc_hash::{FxHashMap, FxHashSet};
use sop_core::sync::RwLock;
use sop_core::sync::atomic::{AtomicBool, Ordering};
use sop_core::{Handle, HandleWrite, LogicalId};

/// Shards of the table, so that readers of different ids rarely meet on
/// one lock (two in the loom model, which explores every interleaving).
#[cfg(not(sop_loom))]
const SHARDS: usize = 64;
#[cfg(sop_loom)]
const SHARDS: usize = 2;

/// [`HandleTable::get`]'s answer for an id whose stored record does not
/// decode: read it from the store for the `Corruption` error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damaged;

/// See the module documentation.
#[derive(Debug)]
pub struct HandleTable {
    shards: Vec<RwLock<FxHashMap<LogicalId, Handle>>>,
    /// Ids whose stored record does not decode.
    damaged: RwLock<FxHashSet<LogicalId>>,
    /// Whether `damaged` may hold any id: it only shrinks after open, so
    /// a get of a healthy registry takes no lock for it.
    any_damaged: AtomicBool,
}

impl HandleTable {
    /// A table of `handles`, with the ids of `damaged` records.
    #[must_use]
    pub fn new(handles: impl IntoIterator<Item = Handle>, damaged: FxHashSet<LogicalId>) -> Self {
        let mut shards: Vec<FxHashMap<LogicalId, Handle>> =
            (0..SHARDS).map(|_| FxHashMap::default()).collect();
        for h in handles {
            if let Some(shard) = shards.get_mut(shard_of(h.logical_id)) {
                shard.insert(h.logical_id, h);
            }
        }
        let any_damaged = AtomicBool::new(!damaged.is_empty());
        Self {
            shards: shards.into_iter().map(RwLock::new).collect(),
            damaged: RwLock::new(damaged),
            any_damaged,
        }
    }

    fn shard(&self, id: LogicalId) -> Option<&RwLock<FxHashMap<LogicalId, Handle>>> {
        self.shards.get(shard_of(id))
    }

    /// The handle of `id`: `Ok(None)` when absent.
    ///
    /// # Errors
    /// [`Damaged`] when its record is damaged.
    pub fn get(&self, id: LogicalId) -> Result<Option<Handle>, Damaged> {
        if self.is_damaged(id) {
            return Err(Damaged);
        }
        let shard = self.shard(id).ok_or(Damaged)?;
        Ok(shard.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&id).copied())
    }

    fn is_damaged(&self, id: LogicalId) -> bool {
        if !self.any_damaged.load(Ordering::Acquire) {
            return false;
        }
        self.damaged.read().unwrap_or_else(std::sync::PoisonError::into_inner).contains(&id)
    }

    /// Records `h` as written.
    pub fn put(&self, h: Handle) {
        if let Some(shard) = self.shard(h.logical_id) {
            shard.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(h.logical_id, h);
        }
        self.undamage(h.logical_id);
    }

    /// Records a publish's handle writes as applied: inserts first, then
    /// updates, then removals. A reader (which takes no stripe lock) may
    /// see part of a publish, as with any registry read outside one
    /// (validation at commit catches it), but never a node naming a child
    /// it cannot find: a new child is there before the parent that names
    /// it, and a removed child goes after the parent stopped naming it.
    pub fn apply(&self, writes: &[HandleWrite]) {
        let inserts = writes.iter().filter(|w| matches!(w, HandleWrite::Insert { .. }));
        let updates = writes.iter().filter(|w| matches!(w, HandleWrite::Update { .. }));
        let removals = writes.iter().filter(|w| matches!(w, HandleWrite::Remove { .. }));
        for w in inserts.chain(updates).chain(removals) {
            match w.result() {
                Some(h) => self.put(h),
                None => {
                    if let Some(shard) = self.shard(w.id()) {
                        shard.write().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&w.id());
                    }
                    self.undamage(w.id());
                }
            }
        }
    }

    fn undamage(&self, id: LogicalId) {
        if self.is_damaged(id) {
            let mut damaged = self.damaged.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            damaged.remove(&id);
            if damaged.is_empty() {
                self.any_damaged.store(false, Ordering::Release);
            }
        }
    }
}

fn shard_of(id: LogicalId) -> usize {
    // The low bits of a UUIDv7 are random.
    usize::try_from(id.as_u128() % SHARDS as u128).unwrap_or(0)
}

#[cfg(all(test, not(sop_loom)))]
mod tests {
    use super::*;
    use sop_core::PhysicalId;

    #[test]
    fn writes_are_read_back_and_damaged_ids_say_so_until_rewritten() {
        let (a, b, c) = (LogicalId::new(), LogicalId::new(), LogicalId::new());
        let ha = Handle::new(a, PhysicalId::new());
        let table = HandleTable::new([ha], [c].into_iter().collect());
        assert_eq!(table.get(a), Ok(Some(ha)));
        assert_eq!(table.get(b), Ok(None));
        assert_eq!(table.get(c), Err(Damaged));
        let (pa, pc) = (PhysicalId::new(), PhysicalId::new());
        table.apply(&[
            HandleWrite::Update { id: a, expected: 1, physical_id: pa },
            HandleWrite::Insert { id: b, physical_id: pc },
            HandleWrite::Remove { id: b, expected: 1 },
            HandleWrite::Insert { id: c, physical_id: pc },
        ]);
        assert_eq!(table.get(a), Ok(Some(Handle { logical_id: a, physical_id: pa, version: 2 })));
        assert_eq!(table.get(b), Ok(None), "inserted, then removed");
        assert_eq!(table.get(c), Ok(Some(Handle::new(c, pc))), "a damaged record rewritten");
    }

    /// The apply order, attacked by a concurrent reader: each publish
    /// moves parent `p` to a new blob that names a new child and drops the
    /// old child, its writes listed in the worst order (removal, update,
    /// insert). A reader that finds the child `p` names missing must find
    /// that `p` has moved on meanwhile: never a parent naming a child not
    /// yet inserted or already removed.
    #[test]
    fn a_reader_never_sees_a_parent_naming_a_missing_child() {
        const ROUNDS: usize = 20_000;
        let p = LogicalId::new();
        let blobs: Vec<PhysicalId> = (0..=ROUNDS).map(|_| PhysicalId::new()).collect();
        let children: Vec<LogicalId> = (0..=ROUNDS).map(|_| LogicalId::new()).collect();
        let first = [Handle::new(p, blobs[0]), Handle::new(children[0], PhysicalId::new())];
        let table = HandleTable::new(first, FxHashSet::default());
        let child_of: FxHashMap<PhysicalId, LogicalId> =
            blobs.iter().copied().zip(children.iter().copied()).collect();
        let done = AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for i in 1..=ROUNDS {
                    table.apply(&[
                        HandleWrite::Remove { id: children[i - 1], expected: 1 },
                        HandleWrite::Update { id: p, expected: i as u64, physical_id: blobs[i] },
                        HandleWrite::Insert { id: children[i], physical_id: PhysicalId::new() },
                    ]);
                }
                done.store(true, Ordering::SeqCst);
            });
            let mut checked = 0u64;
            while !done.load(Ordering::SeqCst) {
                let Ok(Some(parent)) = table.get(p) else { panic!("the parent is always there") };
                let child = child_of[&parent.physical_id];
                if table.get(child) == Ok(None) {
                    let now = table.get(p).ok().flatten().map(|h| h.physical_id);
                    assert_ne!(now, Some(parent.physical_id), "{parent:?} names {child}, which is missing");
                }
                checked += 1;
            }
            assert!(checked > 0);
        });
    }
}

#[cfg(all(test, sop_loom))]
mod loom_tests {
    use super::*;
    use sop_core::PhysicalId;
    use sop_core::sync::{Arc, thread};

    /// A publish moves parent `p` to a blob naming a new child and drops
    /// the old child, its writes listed removal-first, while a reader
    /// resolves the parent, then the child it names, then the parent
    /// again: in no interleaving is the child missing while the parent
    /// still names it. Fixed ids (the model must be deterministic): all
    /// three on one shard's lock, then the old child on another.
    #[test]
    fn loom_a_reader_never_sees_a_parent_naming_a_missing_child() {
        for (p, old, new) in [(2, 4, 6), (1, 2, 3)] {
            loom::model(move || apply_against_a_reader(p, old, new));
        }
    }

    fn apply_against_a_reader(p: u128, old: u128, new: u128) {
        let (p, old, new) = (LogicalId::from_u128(p), LogicalId::from_u128(old), LogicalId::from_u128(new));
        let (b0, b1) = (PhysicalId::from_u128(10), PhysicalId::from_u128(11));
        let first = [Handle::new(p, b0), Handle::new(old, PhysicalId::from_u128(12))];
        let table = Arc::new(HandleTable::new(first, FxHashSet::default()));
        let writer = {
            let table = table.clone();
            thread::spawn(move || {
                table.apply(&[
                    HandleWrite::Remove { id: old, expected: 1 },
                    HandleWrite::Update { id: p, expected: 1, physical_id: b1 },
                    HandleWrite::Insert { id: new, physical_id: PhysicalId::from_u128(13) },
                ]);
            })
        };
        let parent = table.get(p).ok().flatten().map(|h| h.physical_id);
        let child = if parent == Some(b0) { old } else { new };
        if table.get(child) == Ok(None) {
            let now = table.get(p).ok().flatten().map(|h| h.physical_id);
            assert_ne!(now, parent, "the parent names {child}, which is missing");
        }
        writer.join().unwrap();
    }
}
