//! [`DeltaLeaf`]: a leaf delta as the cache holds it: its base leaf and
//! the delta's changes side by side, merged into one leaf only when a
//! reader needs it.
//!
//! A commit that changes a few items of a leaf writes them as a delta on
//! the leaf's base (`sop_core::LeafDelta`). Caching that version as one
//! merged leaf cost every write a pass over the whole leaf (each item's
//! key and value reference-counted into a new vector, then indexed), and
//! the next transaction to write the leaf diffed the merged leaf against
//! its base again to find the changes: at 100 000 items a 1 000-key commit
//! touches ~430 leaves of ~200 items, so those passes were most of a bulk
//! load's CPU. Kept as layers, a writer takes the base (shared, indexed
//! once) and the changes as they are, and adds its own on top; the merged
//! leaf is built once per version, by the first reader that needs it.

use std::sync::{Arc, OnceLock};

use sop_core::{DeltaOp, Error, Item, KeyIndex, LeafDelta, Node, PhysicalId, Result, cmp_keys};

/// See the module documentation.
#[derive(Debug)]
pub struct DeltaLeaf {
    /// The base and the changes; `None` when only the merged leaf is known
    /// (an entry read back from the disk tier).
    layers: Option<Layers>,
    /// The leaf with the changes applied, and its index.
    merged: OnceLock<(Arc<Node>, Arc<KeyIndex>)>,
    /// The earlier links of the delta's chain, oldest first
    /// (`sop_core::LeafDelta::chain`): blobs this leaf is read from, with
    /// its own and its base.
    chain: Vec<PhysicalId>,
    /// Whether its earlier links were read from the blob store (a cold
    /// load of a chain), not folded by the commit that wrote it or from
    /// the previous link's cached entry.
    links_read: bool,
    /// How many of the oldest blobs of the chain (its earlier links, then
    /// this delta) are restarts: deltas that fold the links before them
    /// back to the restart before, whose changes the layers keep apart
    /// ([`Layers::with_restart`]). 0 when not known (a cold load): the
    /// next restart then folds every change since the base.
    restarts: usize,
}

/// A delta leaf's base and changes.
#[derive(Debug, Clone)]
pub struct Layers {
    /// The base leaf (a full leaf blob's contents).
    pub base: Arc<Node>,
    /// The base's search index.
    pub base_index: Arc<KeyIndex>,
    /// The changes since the base in runs, oldest first, each strictly
    /// ascending by key; where runs change the same key, the newest run's
    /// change holds. A commit adds its link's changes as a run of their
    /// own, shared with the cache entry it was read from, instead of
    /// folding every earlier change into a new list: that fold cloned all
    /// of a leaf's changes since its base on every link (10 % of a mass
    /// delete's instructions, 8 % of an update's, `docs/BENCHMARKS.md`).
    /// Runs are merged as they come in, a run with the next when it is at
    /// most twice its size (as a binary counter carries), so a change is
    /// copied about log2(changes) times and a lookup searches as many
    /// runs.
    runs: Vec<Arc<Vec<DeltaOp>>>,
    /// How many of the oldest runs hold the changes of the chain's
    /// restarts (`DeltaLeaf::restarts`); the runs after them hold the
    /// links since the last restart. Runs merge only on their own side
    /// of this line, so the links since the last restart can be folded
    /// into a restart of their own ([`Layers::with_restart`]).
    restart_runs: usize,
    /// The leaf's counts with the changes applied, and the base's size.
    pub sizes: LeafSizes,
    /// See [`Layers::ops_size`].
    ops_size: usize,
    /// See [`Layers::restarts_size`].
    restarts_size: usize,
}

/// A delta leaf's item count and sizes (sums of `Item::size_hint`), which
/// a writer keeps up to date as it changes the leaf (the consolidation
/// decision needs them at every commit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafSizes {
    /// Items with the changes applied.
    pub len: usize,
    /// The base's size.
    pub base_size: usize,
    /// The size with the changes applied.
    pub size: usize,
}

impl LeafSizes {
    /// The sizes of the leaf `base` (sorted, indexed by `index`) once
    /// `ops` apply.
    #[must_use]
    pub fn of(base: &[Item], index: &KeyIndex, ops: &[DeltaOp]) -> Self {
        let base_size: usize = base.iter().map(Item::size_hint).sum();
        let mut sizes = Self { len: base.len(), base_size, size: base_size };
        for op in ops {
            sizes.apply(index.search(base, op.key()).ok().and_then(|i| base.get(i)), op);
        }
        sizes
    }

    /// Counts `op` in, `before` being the item the leaf held under its
    /// key until then.
    fn apply(&mut self, before: Option<&Item>, op: &DeltaOp) {
        if let Some(old) = before {
            self.size = self.size.saturating_sub(old.size_hint());
            self.len = self.len.saturating_sub(1);
        }
        if let DeltaOp::Put(item) = op {
            self.size += item.size_hint();
            self.len += 1;
        }
    }
}

impl Layers {
    /// The leaf `base` (a full leaf, indexed by `base_index`) with `ops`
    /// (strictly ascending by key). A delete of a key the base does not
    /// hold changes nothing and is dropped (a writer would otherwise copy
    /// it into every later delta).
    ///
    /// # Errors
    /// `Corruption` when `base` is not a leaf.
    pub fn new(base: Arc<Node>, base_index: Arc<KeyIndex>, mut ops: Vec<DeltaOp>) -> Result<Self> {
        let Node::Leaf { items } = base.as_ref() else {
            return Err(Error::corruption("leaf delta", "the base of a delta is not a leaf"));
        };
        ops.retain(|op| matches!(op, DeltaOp::Put(_)) || base_index.search(items, op.key()).is_ok());
        let sizes = LeafSizes::of(items, &base_index, &ops);
        Ok(Self::with_sizes(base, base_index, ops, sizes))
    }

    /// As [`Layers::new`], with the sizes known (by the writer that made
    /// `ops`; they must be [`LeafSizes::of`] the same leaf) and `ops`
    /// holding no delete of a key the base lacks.
    #[must_use]
    pub fn with_sizes(
        base: Arc<Node>,
        base_index: Arc<KeyIndex>,
        ops: Vec<DeltaOp>,
        sizes: LeafSizes,
    ) -> Self {
        let ops_size = LeafDelta::ops_size_hint(&ops);
        let runs = if ops.is_empty() { Vec::new() } else { vec![Arc::new(ops)] };
        Self { base, base_index, runs, restart_runs: 0, sizes, ops_size, restarts_size: 0 }
    }

    /// The same leaf with every change counted as a restart's (the
    /// layers of a delta with no chain, which holds every change since
    /// the base): the next links' changes fold apart from them.
    #[must_use]
    pub fn as_restart(mut self) -> Self {
        self.restart_runs = self.runs.len();
        self.restarts_size = self.ops_size;
        self
    }

    /// The same leaf with `ops` (strictly ascending by key; a link's
    /// changes) applied on top, `sizes` being the leaf's with them (as
    /// [`Layers::sizes_with`] gives, or as the writer that made `ops` kept
    /// them): the earlier runs shared, no lookup, no pass over the leaf or
    /// the earlier changes.
    #[must_use]
    pub fn with_run(&self, ops: Vec<DeltaOp>, sizes: LeafSizes) -> Self {
        let items = self.base_items();
        let ops_size = self.ops_size + ops.iter().map(DeltaOp::size_hint).sum::<usize>();
        let mut runs = Vec::with_capacity(self.runs.len() + 1);
        runs.extend(self.runs.iter().cloned());
        if !ops.is_empty() {
            runs.push(Arc::new(ops));
        }
        merge_runs(&mut runs, self.restart_runs, |k| self.base_index.search(items, k).is_ok());
        let layers = self.with_runs(runs, self.restart_runs, sizes, ops_size, self.restarts_size);
        layers.debug_check();
        layers
    }

    /// The same leaf with the links since the last restart replaced by a
    /// restart of theirs: `ops` are the changes since the last restart
    /// (strictly ascending by key, deleting only keys the leaf holds after
    /// the restarts: [`Layers::restarts_hold`]), `sizes` the leaf's with
    /// them. The restarts' runs are shared; the links' runs are dropped.
    #[must_use]
    pub fn with_restart(&self, ops: Vec<DeltaOp>, sizes: LeafSizes) -> Self {
        let items = self.base_items();
        let restarts_size = self.restarts_size + LeafDelta::ops_size_hint(&ops);
        let mut runs = Vec::with_capacity(self.restart_runs + 1);
        runs.extend(self.runs.iter().take(self.restart_runs).cloned());
        if !ops.is_empty() {
            runs.push(Arc::new(ops));
        }
        merge_runs(&mut runs, 0, |k| self.base_index.search(items, k).is_ok());
        let restart_runs = runs.len();
        let layers = self.with_runs(runs, restart_runs, sizes, restarts_size, restarts_size);
        layers.debug_check();
        layers
    }

    /// The same base and index with these runs and counts.
    fn with_runs(
        &self,
        runs: Vec<Arc<Vec<DeltaOp>>>,
        restart_runs: usize,
        sizes: LeafSizes,
        ops_size: usize,
        restarts_size: usize,
    ) -> Self {
        let (base, base_index) = (self.base.clone(), self.base_index.clone());
        Self { base, base_index, runs, restart_runs, sizes, ops_size, restarts_size }
    }

    /// Debug builds: the sizes and the size bound agree with the changes.
    fn debug_check(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        let items = self.base_items();
        debug_assert_eq!(self.sizes, LeafSizes::of(items, &self.base_index, &self.folded()), "sizes kept");
        let folded = LeafDelta::ops_size_hint(&self.folded());
        debug_assert!(self.ops_size >= folded, "a bound of the folded size");
        debug_assert!(self.restart_runs <= self.runs.len() && self.restarts_size <= self.ops_size);
    }

    /// The leaf's counts and sizes once `ops` (strictly ascending by key)
    /// apply on top: one lookup per change.
    #[must_use]
    pub fn sizes_with(&self, ops: &[DeltaOp]) -> LeafSizes {
        let items = self.base_items();
        let mut sizes = self.sizes;
        for op in ops {
            let before = match self.change(op.key()) {
                Some(item) => item,
                None => self.base_index.search(items, op.key()).ok().and_then(|i| items.get(i)),
            };
            sizes.apply(before, op);
        }
        sizes
    }

    /// The base's items.
    #[must_use]
    pub fn base_items(&self) -> &[Item] {
        match self.base.as_ref() {
            Node::Leaf { items } => items,
            Node::Internal { .. } => &[],
        }
    }

    /// The newest run's change to `key`, if a run changes it.
    fn newest(&self, key: &[u8]) -> Option<&DeltaOp> {
        newest_in(&self.runs, key)
    }

    /// The change to `key`: `Some(Some(item))` put, `Some(None)` deleted,
    /// `None` unchanged (as in the base).
    #[must_use]
    pub fn change(&self, key: &[u8]) -> Option<Option<&Item>> {
        self.newest(key).map(|op| match op {
            DeltaOp::Put(item) => Some(item),
            DeltaOp::Delete(_) => None,
        })
    }

    /// The changes since the base as one list, strictly ascending by key,
    /// with no delete of a key the base lacks (a copy: a delta written
    /// with no chain, or the merged leaf, needs them so).
    #[must_use]
    pub fn folded(&self) -> Vec<DeltaOp> {
        let items = self.base_items();
        let in_base = |k: &[u8]| self.base_index.search(items, k).is_ok();
        let mut runs = self.runs.iter();
        let first = runs.next().map(|r| r.as_ref().clone()).unwrap_or_default();
        runs.fold(first, |older, newer| LeafDelta::fold(&older, newer, in_base))
    }

    /// The changes of the links since the last restart as one list,
    /// strictly ascending by key, with no delete of a key the leaf lacks
    /// after the restarts ([`Layers::restarts_hold`]).
    #[must_use]
    pub fn links_folded(&self) -> Vec<DeltaOp> {
        let (restarts, links) = self.runs.split_at(self.restart_runs.min(self.runs.len()));
        let held = |k: &[u8]| held_after(restarts, k, |k| self.in_base(k));
        let mut links = links.iter();
        let first = links.next().map(|r| r.as_ref().clone()).unwrap_or_default();
        links.fold(first, |older, newer| LeafDelta::fold(&older, newer, held))
    }

    /// Whether the leaf holds `key` after the restarts' changes (before
    /// the links since).
    #[must_use]
    pub fn restarts_hold(&self, key: &[u8]) -> bool {
        let restarts = self.runs.get(..self.restart_runs).unwrap_or_default();
        held_after(restarts, key, |k| self.in_base(k))
    }

    /// Whether the base holds `key`.
    fn in_base(&self, key: &[u8]) -> bool {
        self.base_index.search(self.base_items(), key).is_ok()
    }

    /// The bytes the restarts' changes take in the delta chain: what a
    /// restart of the links since keeps.
    #[must_use]
    pub fn restarts_size(&self) -> usize {
        self.restarts_size
    }

    /// Every change of every run (a key changed by several runs once per
    /// run), oldest run first.
    pub fn ops(&self) -> impl Iterator<Item = &DeltaOp> {
        self.runs.iter().flat_map(|r| r.iter())
    }

    /// How many changes the runs hold (a key changed by several runs once
    /// per run): one addition per run.
    #[must_use]
    pub fn ops_count(&self) -> usize {
        self.runs.iter().map(|r| r.len()).sum()
    }

    /// How many runs the changes are kept in.
    #[must_use]
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    /// The bytes the changes since the base take in the delta chain (each
    /// link's changes, as `LeafDelta::ops_size_hint` counts them): the
    /// folded changes' size or more, where links changed the same key.
    #[must_use]
    pub fn ops_size(&self) -> usize {
        self.ops_size
    }
}

/// The change to `key` of the newest of `runs` that changes it.
fn newest_in<'a>(runs: &'a [Arc<Vec<DeltaOp>>], key: &[u8]) -> Option<&'a DeltaOp> {
    runs.iter().rev().find_map(|run| {
        let i = run.binary_search_by(|op| cmp_keys(op.key(), key)).ok()?;
        run.get(i)
    })
}

/// Whether the leaf holds `key` after `runs`: the newest run's change to
/// it, else `in_base`.
fn held_after(runs: &[Arc<Vec<DeltaOp>>], key: &[u8], in_base: impl Fn(&[u8]) -> bool) -> bool {
    newest_in(runs, key).map_or_else(|| in_base(key), |op| matches!(op, DeltaOp::Put(_)))
}

/// Merges the newest run into the one before while that one is at most
/// twice its size and not among the first `keep` runs (which merge only
/// among themselves). A delete that meets the put of its key in the merge
/// cancels it when the leaf did not hold the key just before the older
/// run (the newest earlier run's change to it, else the base): otherwise
/// it still hides that key. So a run deletes only keys the leaf holds just
/// before it, and [`Layers::folded`] holds no delete of a key the base
/// lacks (asking whether any earlier run changed the key kept deletes of
/// keys an earlier run had deleted already, which chain restarts then
/// copied on: `tests/layers_model.rs`).
fn merge_runs(runs: &mut Vec<Arc<Vec<DeltaOp>>>, keep: usize, in_base: impl Fn(&[u8]) -> bool) {
    while let [earlier @ .., older, newer] = runs.as_slice()
        && earlier.len() >= keep
        && older.len() <= 2 * newer.len()
    {
        // Whether the leaf holds `k` just before `older`: the newest
        // earlier run's change to it, else the base.
        let held = |k: &[u8]| held_after(earlier, k, &in_base);
        let merged = LeafDelta::fold(older, newer, held);
        runs.truncate(runs.len() - 2);
        runs.push(Arc::new(merged));
    }
}

impl DeltaLeaf {
    /// The leaf `base` (a full leaf, indexed by `base_index`) with `ops`,
    /// as [`Layers::new`].
    ///
    /// # Errors
    /// `Corruption` when `base` is not a leaf.
    pub fn layered(base: Arc<Node>, base_index: Arc<KeyIndex>, ops: Vec<DeltaOp>) -> Result<Self> {
        Layers::new(base, base_index, ops).map(Self::of_layers)
    }

    /// The leaf `layers` describe.
    #[must_use]
    pub fn of_layers(layers: Layers) -> Self {
        Self {
            layers: Some(layers),
            merged: OnceLock::new(),
            chain: Vec::new(),
            links_read: false,
            restarts: 0,
        }
    }

    /// A delta leaf known only merged (`node`).
    #[must_use]
    pub fn materialized(node: Arc<Node>) -> Self {
        let merged = OnceLock::new();
        let index = Arc::new(KeyIndex::of_node(&node));
        let _ = merged.set((node, index));
        Self { layers: None, merged, chain: Vec::new(), links_read: false, restarts: 0 }
    }

    /// The same leaf, read through a delta whose earlier links are
    /// `chain` (oldest first).
    #[must_use]
    pub fn with_chain(mut self, chain: Vec<PhysicalId>) -> Self {
        self.chain = chain;
        self
    }

    /// The same leaf, its chain's first `restarts` blobs being restarts
    /// (see [`DeltaLeaf::restarts`]): at most the chain's blobs with this
    /// delta's own, and 0 without layers. Set after the chain.
    #[must_use]
    pub fn with_restarts(mut self, restarts: usize) -> Self {
        let known = if self.layers.is_some() { self.chain.len() + 1 } else { 0 };
        self.restarts = restarts.min(known);
        self
    }

    /// How many of the oldest blobs of its chain (its earlier links, then
    /// this delta) are restarts, whose changes its layers keep apart from
    /// the links' after them.
    #[must_use]
    pub fn restarts(&self) -> usize {
        self.restarts
    }

    /// The same leaf, marked as loaded by reading its earlier links from
    /// the blob store.
    #[must_use]
    pub fn with_links_read(mut self) -> Self {
        self.links_read = true;
        self
    }

    /// Whether its earlier links were read from the blob store to load it
    /// (a cold read of its chain): a writer then shortens the chain, so
    /// that the next cold read does not pay for it again.
    #[must_use]
    pub fn links_read(&self) -> bool {
        self.links_read
    }

    /// The earlier links of the delta's chain, oldest first.
    #[must_use]
    pub fn chain(&self) -> &[PhysicalId] {
        &self.chain
    }

    /// The base and the changes, when known.
    #[must_use]
    pub fn layers(&self) -> Option<&Layers> {
        self.layers.as_ref()
    }

    /// The merged leaf and its index, built on the first call.
    pub fn merged(&self) -> (&Arc<Node>, &Arc<KeyIndex>) {
        let (node, index) = self.merged.get_or_init(|| {
            // Without layers the merged leaf was set when built.
            let items = self.layers.as_ref().map(|l| LeafDelta::apply_ops(l.base_items(), &l.folded()));
            let node = Arc::new(Node::Leaf { items: items.unwrap_or_default() });
            let index = Arc::new(KeyIndex::of_node(&node));
            (node, index)
        });
        (node, index)
    }

    /// About what the merged leaf weighs in memory ([`crate::node_weight`]
    /// of [`DeltaLeaf::merged`]): from the leaf's sizes when its layers
    /// are kept, with no pass over its items; else weighed.
    #[must_use]
    pub fn merged_weight(&self) -> usize {
        match &self.layers {
            Some(l) => crate::blob::leaf_weight(l.sizes.size, l.sizes.len),
            None => crate::node_weight(self.merged().0),
        }
    }

    /// The merged leaf and its index, if built.
    #[must_use]
    pub fn merged_if_built(&self) -> Option<(&Arc<Node>, &Arc<KeyIndex>)> {
        self.merged.get().map(|(n, i)| (n, i))
    }
}

#[cfg(test)]
mod tests {
    use super::{DeltaLeaf, Layers, LeafSizes};
    use bytes::Bytes;
    use sop_core::{DeltaOp, Item, KeyIndex, LeafDelta, Node, TxId, Value};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn item(k: u8, v: &str) -> Item {
        Item {
            key: Bytes::from(vec![k]),
            version: TxId::new(),
            value: Value::Inline(Bytes::from(v.to_owned())),
        }
    }

    /// A reader's front weighs the merged leaf from the leaf's sizes, with
    /// no pass over its items: for inline values exactly what weighing the
    /// merged leaf gives, and for a leaf read back merged only (no layers)
    /// the weighing itself, across puts, rewrites and deletes.
    #[test]
    fn the_merged_weight_is_the_merged_leafs_without_a_pass() {
        let base: Vec<Item> = (0..50u8).map(|k| item(k * 2, "base value")).collect();
        let node = Arc::new(Node::Leaf { items: base });
        let index = Arc::new(KeyIndex::of_node(&node));
        let mut layers = Layers::new(node, index, Vec::new()).unwrap();
        for step in 0..20u8 {
            let ops = vec![
                DeltaOp::Put(item(step * 5, &"x".repeat(usize::from(step)))),
                DeltaOp::Delete(Bytes::from(vec![step * 5 + 2])),
                DeltaOp::Put(item(step * 5 + 3, "new")),
            ];
            let sizes = layers.sizes_with(&ops);
            layers = layers.with_run(ops, sizes);
            let leaf = DeltaLeaf::of_layers(layers.clone());
            let weighed = crate::node_weight(leaf.merged().0);
            assert_eq!(leaf.merged_weight(), weighed, "step {step}");
            let merged_only = DeltaLeaf::materialized(leaf.merged().0.clone());
            assert_eq!(merged_only.merged_weight(), weighed, "step {step}, merged only");
        }
    }

    /// Random runs of changes, as writers make them (puts anywhere,
    /// deletes of keys the leaf holds, keys put and deleted again), added
    /// one run at a time: every lookup, the folded changes, the merged
    /// leaf and the counts agree with a plain map after each, the size
    /// counted bounds the folded changes' size, and the runs stay few.
    #[test]
    fn runs_added_one_by_one_read_as_the_changes_made_in_order() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for round in 0..200 {
            let base: Vec<Item> = (0..60u8).filter(|_| next(2) == 0).map(|k| item(k * 2, "b")).collect();
            let node = Arc::new(Node::Leaf { items: base.clone() });
            let index = Arc::new(KeyIndex::of_node(&node));
            let mut model: BTreeMap<u8, Item> = base.iter().map(|i| (i.key[0], i.clone())).collect();
            let mut layers = Layers::new(node.clone(), index.clone(), Vec::new()).unwrap();
            let mut total = 0;
            for step in 0..40 {
                let mut run: BTreeMap<u8, DeltaOp> = BTreeMap::new();
                for _ in 0..1 + next(4) {
                    let k = next(130) as u8;
                    let op = if model.contains_key(&k) && next(2) == 0 {
                        DeltaOp::Delete(Bytes::from(vec![k]))
                    } else {
                        DeltaOp::Put(item(k, &format!("{round}.{step}")))
                    };
                    run.insert(k, op);
                }
                let ops: Vec<DeltaOp> = run.values().cloned().collect();
                let sizes = layers.sizes_with(&ops);
                for (k, op) in &run {
                    match op {
                        DeltaOp::Put(i) => model.insert(*k, i.clone()),
                        DeltaOp::Delete(_) => model.remove(k),
                    };
                }
                total += run.len();
                layers = layers.with_run(ops, sizes);
                let want: Vec<Item> = model.values().cloned().collect();
                for k in 0..=255u8 {
                    let got = layers.change(&[k]).unwrap_or_else(|| base.iter().find(|i| i.key[0] == k));
                    assert_eq!(got, model.get(&k), "round {round} step {step} key {k}");
                }
                let folded = layers.folded();
                assert_eq!(LeafDelta::apply_ops(&base, &folded), want, "round {round} step {step}");
                assert_eq!(layers.sizes, LeafSizes::of(&base, &index, &folded), "round {round} step {step}");
                assert!(layers.ops_size() >= LeafDelta::ops_size_hint(&folded), "round {round} step {step}");
                let in_base = |k: &Bytes| base.iter().any(|i| i.key == k);
                assert!(
                    folded.iter().all(|op| matches!(op, DeltaOp::Put(_)) || in_base(op.key())),
                    "round {round} step {step}: a delete of a key the base lacks"
                );
                let bound = 2 + usize::BITS as usize - total.leading_zeros() as usize;
                assert!(layers.runs() <= bound, "round {round} step {step}: {} runs", layers.runs());
                let leaf = DeltaLeaf::of_layers(layers.clone());
                let Node::Leaf { items } = leaf.merged().0.as_ref() else { panic!("a leaf") };
                assert_eq!(items, &want, "round {round} step {step}");
            }
        }
    }
}
