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

use sop_core::{DeltaOp, Error, Item, KeyIndex, LeafDelta, Node, Result};

/// See the module documentation.
#[derive(Debug)]
pub struct DeltaLeaf {
    /// The base and the changes; `None` when only the merged leaf is known
    /// (an entry read back from the disk tier).
    layers: Option<Layers>,
    /// The leaf with the changes applied, and its index.
    merged: OnceLock<(Arc<Node>, Arc<KeyIndex>)>,
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
    /// How many items the leaf holds with the changes applied.
    pub len: usize,
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
    /// (strictly ascending by key).
    ///
    /// # Errors
    /// `Corruption` when `base` is not a leaf.
    pub fn layered(base: Arc<Node>, base_index: Arc<KeyIndex>, ops: Vec<DeltaOp>) -> Result<Self> {
        let Node::Leaf { items } = base.as_ref() else {
            return Err(Error::corruption("leaf delta", "the base of a delta is not a leaf"));
        };
        let held = |key: &[u8]| items.binary_search_by(|i| i.key.as_ref().cmp(key)).is_ok();
        let mut len = items.len();
        for op in &ops {
            match (op, held(op.key())) {
                (DeltaOp::Put(_), false) => len += 1,
                (DeltaOp::Delete(_), true) => len = len.saturating_sub(1),
                _ => {}
            }
        }
        let layers = Layers { base, base_index, ops, len };
        Ok(Self { layers: Some(layers), merged: OnceLock::new() })
    }

    /// A delta leaf known only merged (`node`).
    #[must_use]
    pub fn materialized(node: Arc<Node>) -> Self {
        let merged = OnceLock::new();
        let index = Arc::new(KeyIndex::of_node(&node));
        let _ = merged.set((node, index));
        Self { layers: None, merged }
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
