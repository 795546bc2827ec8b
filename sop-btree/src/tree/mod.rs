//! The B+tree algorithms, over a transaction's private view ([`TxState`]).
//!
//! Leaves hold items sorted by key; internal nodes hold separator keys and
//! child [`LogicalId`]s, child `i` holding keys in `[keys[i-1], keys[i])`.
//! A node holds at most `slot` items (leaf) or keys (internal); every
//! non-root node at least `slot / 2`. The root's logical id never changes:
//! a root split moves its halves into two new children, and a root left
//! with one child takes that child's contents.
//!
//! Nodes are loaded (async) while descending; changes are then applied to
//! the transaction's private copies (synchronously).

mod rebalance;
mod scan;

use bytes::Bytes;
use sop_core::{Item, LogicalId, Node, Result};

use crate::db::DbInner;
use crate::tx::state::TxState;

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

fn child_index(keys: &[Bytes], target: Target<'_>) -> usize {
    match target {
        Target::Key(k) => keys.partition_point(|s| s.as_ref() <= k),
        Target::Below(k) => keys.partition_point(|s| s.as_ref() < k),
        Target::First => 0,
        Target::Last => keys.len(),
    }
}

impl TxState {
    /// Loads the path from `root` to the leaf `target` selects.
    pub(crate) async fn descend(
        &mut self,
        db: &DbInner,
        root: LogicalId,
        target: Target<'_>,
    ) -> Result<Path> {
        let mut path = Vec::new();
        let mut id = root;
        loop {
            self.load(db, id).await?;
            match self.node(id)?.as_ref() {
                Node::Leaf { .. } => {
                    path.push((id, 0));
                    return Ok(path);
                }
                Node::Internal { keys, children } => {
                    let idx = child_index(keys, target);
                    let next = *children.get(idx).ok_or_else(|| bad_node(id))?;
                    path.push((id, idx));
                    id = next;
                }
            }
        }
    }

    /// The item under `key`, if any.
    pub(crate) async fn find(&mut self, db: &DbInner, root: LogicalId, key: &[u8]) -> Result<Option<Item>> {
        let path = self.descend(db, root, Target::Key(key)).await?;
        let leaf = leaf_of(&path)?;
        let Node::Leaf { items } = self.node(leaf)?.as_ref() else { return Err(bad_node(leaf)) };
        Ok(items.binary_search_by(|i| i.key.as_ref().cmp(key)).ok().and_then(|i| items.get(i).cloned()))
    }

    /// Puts `item`, replacing an item with the same key; returns the old one.
    pub(crate) async fn put(
        &mut self,
        db: &DbInner,
        root: LogicalId,
        slot: usize,
        item: Item,
    ) -> Result<Option<Item>> {
        let path = self.descend(db, root, Target::Key(&item.key)).await?;
        let leaf = leaf_of(&path)?;
        let Node::Leaf { items } = self.node_mut(leaf)? else { return Err(bad_node(leaf)) };
        let old = match items.binary_search_by(|i| i.key.as_ref().cmp(&item.key)) {
            Ok(i) => items.get_mut(i).map(|slot| std::mem::replace(slot, item)),
            Err(i) => {
                items.insert(i, item);
                None
            }
        };
        if old.is_none() {
            self.split_path(&path, slot)?;
        }
        Ok(old)
    }

    /// Removes the item under `key`; returns it.
    pub(crate) async fn delete(
        &mut self,
        db: &DbInner,
        root: LogicalId,
        slot: usize,
        key: &[u8],
    ) -> Result<Option<Item>> {
        let path = self.descend(db, root, Target::Key(key)).await?;
        let leaf = leaf_of(&path)?;
        let Node::Leaf { items } = self.node(leaf)?.as_ref() else { return Err(bad_node(leaf)) };
        let Ok(i) = items.binary_search_by(|it| it.key.as_ref().cmp(key)) else { return Ok(None) };
        let Node::Leaf { items } = self.node_mut(leaf)? else { return Err(bad_node(leaf)) };
        let old = items.remove(i);
        self.rebalance(db, &path, slot).await?;
        Ok(Some(old))
    }

    /// Splits overfull nodes from the leaf of `path` upwards.
    fn split_path(&mut self, path: &Path, slot: usize) -> Result<()> {
        for level in (0..path.len()).rev() {
            let (id, _) = path[level];
            if fill(self.node(id)?) <= slot {
                return Ok(());
            }
            let node = self.node(id)?.as_ref().clone();
            let (left, sep, right) = split_node(node);
            if level == 0 {
                let left_id = self.new_node(left);
                let right_id = self.new_node(right);
                self.set_node(id, Node::Internal { keys: vec![sep], children: vec![left_id, right_id] })?;
                return Ok(());
            }
            self.set_node(id, left)?;
            let right_id = self.new_node(right);
            let (parent, idx) = path[level - 1];
            let Node::Internal { keys, children } = self.node_mut(parent)? else {
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

pub(crate) fn bad_node(id: LogicalId) -> sop_core::Error {
    sop_core::Error::corruption("tree", format!("node {id} has the wrong shape for its place"))
}
