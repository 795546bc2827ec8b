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

use sop_core::{DeltaOp, Error, Item, KeyIndex, LeafDelta, Node, PhysicalId, Result};

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
}

/// A delta leaf's base and changes.
#[derive(Debug)]
pub struct Layers {
    /// The base leaf (a full leaf blob's contents).
    pub base: Arc<Node>,
    /// The base's search index.
    pub base_index: Arc<KeyIndex>,
    /// The changes, strictly ascending by key (as `LeafDelta::decode`
    /// checks).
    pub ops: Vec<DeltaOp>,
    /// The leaf's counts with the changes applied, and the base's size.
    pub sizes: LeafSizes,
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
        let (mut len, mut size) = (base.len(), base_size);
        for op in ops {
            if let Ok(i) = index.search(base, op.key())
                && let Some(old) = base.get(i)
            {
                size = size.saturating_sub(old.size_hint());
                len = len.saturating_sub(1);
            }
            if let DeltaOp::Put(item) = op {
                size += item.size_hint();
                len += 1;
            }
        }
        Self { len, base_size, size }
    }
}

impl Layers {
    /// The base's items.
    #[must_use]
    pub fn base_items(&self) -> &[Item] {
        match self.base.as_ref() {
            Node::Leaf { items } => items,
            Node::Internal { .. } => &[],
        }
    }

    /// The change to `key`: `Some(Some(item))` put, `Some(None)` deleted,
    /// `None` unchanged (as in the base).
    #[must_use]
    pub fn change(&self, key: &[u8]) -> Option<Option<&Item>> {
        let i = self.ops.binary_search_by(|op| op.key().as_ref().cmp(key)).ok()?;
        self.ops.get(i).map(|op| match op {
            DeltaOp::Put(item) => Some(item),
            DeltaOp::Delete(_) => None,
        })
    }
}

impl DeltaLeaf {
    /// The leaf `base` (a full leaf, indexed by `base_index`) with `ops`
    /// (strictly ascending by key). A delete of a key the base does not
    /// hold changes nothing and is dropped (a writer would otherwise copy
    /// it into every later delta).
    ///
    /// # Errors
    /// `Corruption` when `base` is not a leaf.
    pub fn layered(base: Arc<Node>, base_index: Arc<KeyIndex>, mut ops: Vec<DeltaOp>) -> Result<Self> {
        let Node::Leaf { items } = base.as_ref() else {
            return Err(Error::corruption("leaf delta", "the base of a delta is not a leaf"));
        };
        ops.retain(|op| matches!(op, DeltaOp::Put(_)) || base_index.search(items, op.key()).is_ok());
        let sizes = LeafSizes::of(items, &base_index, &ops);
        Ok(Self::layered_with(base, base_index, ops, sizes))
    }

    /// As [`DeltaLeaf::layered`], with the sizes known (by the writer that
    /// made `ops`; they must be [`LeafSizes::of`] the same leaf).
    #[must_use]
    pub fn layered_with(
        base: Arc<Node>,
        base_index: Arc<KeyIndex>,
        ops: Vec<DeltaOp>,
        sizes: LeafSizes,
    ) -> Self {
        let layers = Layers { base, base_index, ops, sizes };
        Self { layers: Some(layers), merged: OnceLock::new(), chain: Vec::new(), links_read: false }
    }

    /// A delta leaf known only merged (`node`).
    #[must_use]
    pub fn materialized(node: Arc<Node>) -> Self {
        let merged = OnceLock::new();
        let index = Arc::new(KeyIndex::of_node(&node));
        let _ = merged.set((node, index));
        Self { layers: None, merged, chain: Vec::new(), links_read: false }
    }

    /// The same leaf, read through a delta whose earlier links are
    /// `chain` (oldest first).
    #[must_use]
    pub fn with_chain(mut self, chain: Vec<PhysicalId>) -> Self {
        self.chain = chain;
        self
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
            let items = self.layers.as_ref().map(|l| LeafDelta::apply_ops(l.base_items(), &l.ops));
            let node = Arc::new(Node::Leaf { items: items.unwrap_or_default() });
            let index = Arc::new(KeyIndex::of_node(&node));
            (node, index)
        });
        (node, index)
    }

    /// The merged leaf and its index, if built.
    #[must_use]
    pub fn merged_if_built(&self) -> Option<(&Arc<Node>, &Arc<KeyIndex>)> {
        self.merged.get().map(|(n, i)| (n, i))
    }
}
