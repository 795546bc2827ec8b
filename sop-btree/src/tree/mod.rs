//! The B+tree algorithms over a [`NodeSource`]: descend, find, put, delete,
//! split, rebalance and range walks. The tree knows only its node source,
//! not the transaction, the registry or the database: the transaction's
//! view implements [`NodeSource`] (`crate::tx::state`), and the unit tests
//! use a map in memory.
//!
//! Leaves hold items sorted by key; internal nodes hold separator keys and
//! child [`LogicalId`]s, child `i` holding keys in `[keys[i-1], keys[i])`.
//! A node holds at most `slot` items (leaf) or keys (internal); every
//! non-root node at least `slot / 4` (`min_fill`: merges are lazy). The
//! root's logical id never changes: a root split moves its halves into two
//! new children, and a root left with one child takes that child's contents.
//!
//! Nodes are loaded (async) while descending; changes are then applied to
//! the source's private copies (synchronously).

mod rebalance;
mod scan;

pub(crate) use rebalance::min_fill;
pub(crate) use scan::leaf_items;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use sop_core::{Item, KeyIndex, Located, LogicalId, Node, Result};

/// Where the tree's nodes come from and where its changes go.
///
/// A source hands out nodes by logical id. `load` must be called before
/// `node`/`node_mut`/`set_node` on an id; a node the source created with
/// `alloc` needs no load.
pub(crate) trait NodeSource: Send {
    /// Makes node `id` available, loading it on first use.
    fn load(&mut self, id: LogicalId) -> impl Future<Output = Result<()>> + Send;
    /// Makes node `id` available without waiting when it can (loaded
    /// before, or in memory): whether it did. When not, `load` must be
    /// awaited; a source that cannot tell answers `false`. (A warm read's
    /// descent then builds no load future per level: their set-up and
    /// tear-down were a tenth of a point read's instructions.)
    fn try_load(&mut self, _id: LogicalId) -> bool {
        false
    }
    /// Node `id`, already loaded.
    fn node(&self, id: LogicalId) -> Result<&Arc<Node>>;
    /// The search index of node `id` as [`NodeSource::node`] returns it,
    /// if it has one: never an index of other keys (a node as read, before
    /// a change since, or a base under changes kept aside).
    fn index(&self, _id: LogicalId) -> Option<&KeyIndex> {
        None
    }
    /// Node `id` for writing: copied on first write.
    fn node_mut(&mut self, id: LogicalId) -> Result<&mut Node>;
    /// Replaces node `id`'s contents.
    fn set_node(&mut self, id: LogicalId, node: Node) -> Result<()>;
    /// Adds a new node; returns its id.
    fn alloc(&mut self, node: Node) -> LogicalId;
    /// Drops node `id` from the tree.
    fn free(&mut self, id: LogicalId);
    /// For node `id` (loaded): `None` when it is a leaf, else the position
    /// of the child `target` selects and that child. A source may answer
    /// with one lookup of the node where `is_leaf`, `node` and `index`
    /// take three.
    fn child(&self, id: LogicalId, target: Target<'_>) -> Result<Option<(usize, LogicalId)>> {
        let node = self.node(id)?;
        if node.is_leaf() {
            return Ok(None);
        }
        child_of(id, node, self.index(id), target).map(Some)
    }
    /// The item under `key` in leaf `id` (loaded), with the changes the
    /// source keeps aside (a source that keeps a leaf's changes beside
    /// it, not in its node, finds the key there first).
    fn leaf_item(&self, id: LogicalId, key: &[u8]) -> Result<Option<&Item>> {
        item_in(id, self.node(id)?, self.index(id), key)
    }
    /// Puts `item` in leaf `id` itself when that takes no split (the leaf
    /// keeps at most `slot` items): the item it replaced. A source that
    /// does not, declines and hands the item back.
    fn put_in_leaf(&mut self, _id: LogicalId, item: Item, _slot: usize) -> Result<Placed> {
        Ok(Placed::Declined(item))
    }
    /// Removes `key` from leaf `id` itself when that leaves at least `min`
    /// items (no repair): `Some(removed)`, `Some(None)` when absent;
    /// `None` when the source declines.
    fn remove_from_leaf(&mut self, _id: LogicalId, _key: &[u8], _min: usize) -> Result<Option<Option<Item>>> {
        Ok(None)
    }
}

/// What [`NodeSource::put_in_leaf`] did.
#[derive(Debug)]
pub(crate) enum Placed {
    /// Put; the item replaced, if any.
    Done(Option<Item>),
    /// Not put: the tree puts it (and splits).
    Declined(Item),
}

impl<T: NodeSource> NodeSource for &mut T {
    fn load(&mut self, id: LogicalId) -> impl Future<Output = Result<()>> + Send {
        (**self).load(id)
    }
    fn try_load(&mut self, id: LogicalId) -> bool {
        (**self).try_load(id)
    }
    fn child(&self, id: LogicalId, target: Target<'_>) -> Result<Option<(usize, LogicalId)>> {
        (**self).child(id, target)
    }
    fn leaf_item(&self, id: LogicalId, key: &[u8]) -> Result<Option<&Item>> {
        (**self).leaf_item(id, key)
    }
    fn node(&self, id: LogicalId) -> Result<&Arc<Node>> {
        (**self).node(id)
    }
    fn index(&self, id: LogicalId) -> Option<&KeyIndex> {
        (**self).index(id)
    }
    fn node_mut(&mut self, id: LogicalId) -> Result<&mut Node> {
        (**self).node_mut(id)
    }
    fn set_node(&mut self, id: LogicalId, node: Node) -> Result<()> {
        (**self).set_node(id, node)
    }
    fn alloc(&mut self, node: Node) -> LogicalId {
        (**self).alloc(node)
    }
    fn free(&mut self, id: LogicalId) {
        (**self).free(id);
    }
    fn put_in_leaf(&mut self, id: LogicalId, item: Item, slot: usize) -> Result<Placed> {
        (**self).put_in_leaf(id, item, slot)
    }
    fn remove_from_leaf(&mut self, id: LogicalId, key: &[u8], min: usize) -> Result<Option<Option<Item>>> {
        (**self).remove_from_leaf(id, key, min)
    }
}

/// One B+tree: its root and fill bound, over a node source.
#[derive(Debug)]
pub(crate) struct Tree<S> {
    nodes: S,
    root: LogicalId,
    slot: usize,
}

/// Where a descent goes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target<'a> {
    /// The leaf whose range holds this key.
    Key(&'a [u8]),
    /// The rightmost leaf holding keys strictly below this key.
    Below(&'a [u8]),
    /// The leftmost leaf.
    First,
    /// The rightmost leaf.
    Last,
}

/// A root-to-leaf path: each node with the index of the child taken.
pub(crate) type Path = Vec<(LogicalId, usize)>;

/// The number of entries that decide a node's fill: items or keys.
pub(crate) fn fill(node: &Node) -> usize {
    match node {
        Node::Leaf { items } => items.len(),
        Node::Internal { keys, .. } => keys.len(),
    }
}

fn child_index(keys: &[Bytes], target: Target<'_>, index: Option<&KeyIndex>) -> usize {
    match target {
        Target::Key(k) => match locate(index, keys.len(), k) {
            Located::Found(i) => i + 1,
            Located::Absent(i) => i,
            Located::Compare(lo, hi) => partition_in(keys, (lo, hi), |s| s.as_ref() <= k),
        },
        Target::Below(k) => match locate(index, keys.len(), k) {
            Located::Found(i) | Located::Absent(i) => i,
            Located::Compare(lo, hi) => partition_in(keys, (lo, hi), |s| s.as_ref() < k),
        },
        Target::First => 0,
        Target::Last => keys.len(),
    }
}

/// Where `key` stands among a node's `len` entries: by the node's index
/// (`KeyIndex::locate`), or, for a node without one (a node this
/// transaction changed), to be found by comparing all of them.
fn locate(index: Option<&KeyIndex>, len: usize, key: &[u8]) -> Located {
    match index {
        Some(x) if x.len() == len => x.locate(key),
        _ => Located::Compare(0, len),
    }
}

/// `entries.partition_point(pred)`, knowing that `pred` holds before `lo`
/// and fails from `hi` on.
fn partition_in<T>(entries: &[T], (lo, hi): (usize, usize), pred: impl FnMut(&T) -> bool) -> usize {
    match entries.get(lo..hi) {
        Some(part) => lo + part.partition_point(pred),
        None => entries.partition_point(pred),
    }
}

/// The position of `key` among a leaf's sorted `items` (as
/// `binary_search_by`), located by the leaf's index where it has one.
pub(crate) fn search_items(
    items: &[Item],
    index: Option<&KeyIndex>,
    key: &[u8],
) -> std::result::Result<usize, usize> {
    match index {
        Some(index) => index.search(items, key),
        None => items.binary_search_by(|i| i.key.as_ref().cmp(key)),
    }
}

/// The position of the child of internal node `id` (`node`, searched by
/// `index`) that `target` selects, and that child.
pub(crate) fn child_of(
    id: LogicalId,
    node: &Node,
    index: Option<&KeyIndex>,
    target: Target<'_>,
) -> Result<(usize, LogicalId)> {
    let Node::Internal { keys, children } = node else { return Err(bad_node(id)) };
    let idx = child_index(keys, target, index);
    Ok((idx, *children.get(idx).ok_or_else(|| bad_node(id))?))
}

/// The item under `key` in leaf `id` (`node`, searched by `index`).
pub(crate) fn item_in<'a>(
    id: LogicalId,
    node: &'a Node,
    index: Option<&KeyIndex>,
    key: &[u8],
) -> Result<Option<&'a Item>> {
    let Node::Leaf { items } = node else { return Err(bad_node(id)) };
    Ok(search_items(items, index, key).ok().and_then(|i| items.get(i)))
}

impl<S: NodeSource> Tree<S> {
    /// The tree rooted at `root` whose nodes hold at most `slot` entries.
    pub(crate) fn new(nodes: S, root: LogicalId, slot: usize) -> Self {
        Self { nodes, root, slot }
    }

    /// Loads the path from the root to the leaf `target` selects.
    pub(crate) async fn descend(&mut self, target: Target<'_>) -> Result<Path> {
        // Room for the depth of any tree that fits in memory (a path grown
        // from empty reallocated on most writes: 0.7 % of a bulk load).
        let mut path = Vec::with_capacity(8);
        let mut id = self.root;
        loop {
            if !self.nodes.try_load(id) {
                self.nodes.load(id).await?;
            }
            let Some((idx, next)) = self.nodes.child(id, target)? else {
                path.push((id, 0));
                return Ok(path);
            };
            path.push((id, idx));
            id = next;
        }
    }

    /// The leaf that holds (or would hold) `key`, without recording the
    /// path (a point read needs no allocation for it).
    async fn leaf_for(&mut self, key: &[u8]) -> Result<LogicalId> {
        let mut id = self.root;
        loop {
            if !self.nodes.try_load(id) {
                self.nodes.load(id).await?;
            }
            match self.nodes.child(id, Target::Key(key))? {
                Some((_, next)) => id = next,
                None => return Ok(id),
            }
        }
    }

    /// The item under `key`, if any.
    pub(crate) async fn find(&mut self, key: &[u8]) -> Result<Option<Item>> {
        self.find_map(key, Item::clone).await
    }

    /// `f` of the item under `key`, if any, without cloning the item (a
    /// point read takes only what it returns and logs).
    pub(crate) async fn find_map<T>(&mut self, key: &[u8], f: impl FnOnce(&Item) -> T) -> Result<Option<T>> {
        let leaf = self.leaf_for(key).await?;
        Ok(self.nodes.leaf_item(leaf, key)?.map(f))
    }

    /// Puts `item`, replacing an item with the same key; returns the old one.
    pub(crate) async fn put(&mut self, item: Item) -> Result<Option<Item>> {
        let path = self.descend(Target::Key(&item.key)).await?;
        let leaf = leaf_of(&path)?;
        let item = match self.nodes.put_in_leaf(leaf, item, self.slot)? {
            Placed::Done(old) => return Ok(old),
            Placed::Declined(item) => item,
        };
        let Node::Leaf { items } = self.nodes.node_mut(leaf)? else { return Err(bad_node(leaf)) };
        let old = match items.binary_search_by(|i| i.key.as_ref().cmp(&item.key)) {
            Ok(i) => items.get_mut(i).map(|slot| std::mem::replace(slot, item)),
            Err(i) => {
                items.insert(i, item);
                None
            }
        };
        if old.is_none() {
            self.split_path(&path)?;
        }
        Ok(old)
    }

    /// Removes the item under `key`; returns it.
    pub(crate) async fn delete(&mut self, key: &[u8]) -> Result<Option<Item>> {
        let path = self.descend(Target::Key(key)).await?;
        let leaf = leaf_of(&path)?;
        // Removed in place unless the leaf would need repair (the root
        // leaf never does).
        let min = if path.len() == 1 { 0 } else { min_fill(self.slot) };
        if let Some(removed) = self.nodes.remove_from_leaf(leaf, key, min)? {
            return Ok(removed);
        }
        let Node::Leaf { items } = self.nodes.node(leaf)?.as_ref() else { return Err(bad_node(leaf)) };
        let Ok(i) = search_items(items, self.nodes.index(leaf), key) else { return Ok(None) };
        let Node::Leaf { items } = self.nodes.node_mut(leaf)? else { return Err(bad_node(leaf)) };
        let old = items.remove(i);
        self.rebalance(&path).await?;
        Ok(Some(old))
    }

    /// Splits overfull nodes from the leaf of `path` upwards.
    fn split_path(&mut self, path: &Path) -> Result<()> {
        for level in (0..path.len()).rev() {
            let (id, _) = path[level];
            if fill(self.nodes.node(id)?) <= self.slot {
                return Ok(());
            }
            let node = self.nodes.node(id)?.as_ref().clone();
            let (left, sep, right) = split_node(node);
            if level == 0 {
                let left_id = self.nodes.alloc(left);
                let right_id = self.nodes.alloc(right);
                let root = Node::Internal { keys: vec![sep], children: vec![left_id, right_id] };
                self.nodes.set_node(id, root)?;
                return Ok(());
            }
            self.nodes.set_node(id, left)?;
            let right_id = self.nodes.alloc(right);
            let (parent, idx) = path[level - 1];
            let Node::Internal { keys, children } = self.nodes.node_mut(parent)? else {
                return Err(bad_node(parent));
            };
            keys.insert(idx, sep);
            children.insert(idx + 1, right_id);
        }
        Ok(())
    }
}

/// Splits a node in two halves and the separator between them.
fn split_node(node: Node) -> (Node, Bytes, Node) {
    match node {
        Node::Leaf { mut items } => {
            let right = items.split_off(items.len() / 2);
            let sep = right.first().map(|i| i.key.clone()).unwrap_or_default();
            (Node::Leaf { items }, sep, Node::Leaf { items: right })
        }
        Node::Internal { mut keys, mut children } => {
            let mid = keys.len() / 2;
            let right_keys = keys.split_off(mid + 1);
            let sep = keys.pop().unwrap_or_default();
            let right_children = children.split_off(mid + 1);
            (
                Node::Internal { keys, children },
                sep,
                Node::Internal { keys: right_keys, children: right_children },
            )
        }
    }
}

fn leaf_of(path: &Path) -> Result<LogicalId> {
    path.last().map(|(id, _)| *id).ok_or_else(|| sop_core::Error::corruption("tree", "empty path"))
}

/// A node whose shape does not fit its place in the tree.
pub(crate) fn bad_node(id: LogicalId) -> sop_core::Error {
    sop_core::Error::corruption("tree", format!("node {id} has the wrong shape for its place"))
}
