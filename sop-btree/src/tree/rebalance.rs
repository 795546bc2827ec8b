//! Underflow repair after a removal, lazily: a node is repaired only when
//! it is nearly empty (under [`min_fill`]: a quarter of the slot), by
//! merging it with a sibling when both fit in one node, else by sharing
//! their entries evenly; the root shrinks when it is left with one child.
//!
//! Repairing at half full, as a textbook B-tree does, made a random mass
//! delete borrow one entry per removal once leaves neared half: two whole
//! leaves copied and written per deleted item. A quarter leaves every node
//! that was split (half full) or evenly shared (more than half) a long way
//! from its next repair.

use sop_core::{LogicalId, Node, Result};

use super::{NodeSource, Path, Tree, bad_node, fill};

/// The fewest entries a non-root node holds: a quarter of `slot`, at least
/// one (slots are at least 4).
pub(crate) fn min_fill(slot: usize) -> usize {
    (slot / 4).max(1)
}

impl<S: NodeSource> Tree<S> {
    /// Restores fill bounds along `path` (leaf last) after a removal.
    pub(super) async fn rebalance(&mut self, path: &Path) -> Result<()> {
        let min = min_fill(self.slot);
        for level in (1..path.len()).rev() {
            let (id, _) = path[level];
            let node = self.nodes.node(id)?;
            let (filled, is_leaf) = (fill(node), node.is_leaf());
            if filled >= min {
                break;
            }
            let (parent, idx) = path[level - 1];
            let Node::Internal { children, .. } = self.nodes.node(parent)?.as_ref() else {
                return Err(bad_node(parent));
            };
            let (li, ri) = if idx > 0 { (idx - 1, idx) } else { (idx, idx + 1) };
            let (Some(&lid), Some(&rid)) = (children.get(li), children.get(ri)) else {
                return Err(bad_node(parent));
            };
            let sibling = if lid == id { rid } else { lid };
            self.nodes.load(sibling).await?;
            // Merged, two internal nodes also take their separator.
            if filled + fill(self.nodes.node(sibling)?) + usize::from(!is_leaf) > self.slot {
                self.share(parent, li, lid, rid)?;
                break;
            }
            self.merge(parent, li, lid, rid)?;
        }
        self.shrink_root(path[0].0).await
    }

    /// Shares the entries of siblings `lid` and `rid` (separated by the
    /// parent's key `li`) evenly between them: called when they do not fit
    /// in one node, so each ends with at least `slot / 2` entries, less
    /// one for the right half of two internal nodes (which gives a key to
    /// the parent): always at least `min_fill(slot)`.
    fn share(&mut self, parent: LogicalId, li: usize, lid: LogicalId, rid: LogicalId) -> Result<()> {
        let left = self.nodes.node(lid)?.clone();
        let right = self.nodes.node(rid)?.clone();
        let Node::Internal { keys: pkeys, .. } = self.nodes.node(parent)?.as_ref() else {
            return Err(bad_node(parent));
        };
        let sep = pkeys.get(li).cloned().ok_or_else(|| bad_node(parent))?;
        let (new_left, new_sep, new_right) = match (left.as_ref(), right.as_ref()) {
            (Node::Leaf { items: l }, Node::Leaf { items: r }) => {
                let mut all: Vec<_> = l.iter().chain(r).cloned().collect();
                let upper = all.split_off(all.len() / 2);
                let sep = upper.first().map(|i| i.key.clone()).ok_or_else(|| bad_node(rid))?;
                (Node::Leaf { items: all }, sep, Node::Leaf { items: upper })
            }
            (Node::Internal { keys: lk, children: lc }, Node::Internal { keys: rk, children: rc }) => {
                let mut keys: Vec<_> =
                    lk.iter().cloned().chain(std::iter::once(sep)).chain(rk.iter().cloned()).collect();
                let mut children: Vec<_> = lc.iter().chain(rc).copied().collect();
                let m = keys.len() / 2;
                let upper_keys = keys.split_off(m + 1);
                let sep = keys.pop().ok_or_else(|| bad_node(parent))?;
                let upper_children = children.split_off(m + 1);
                (
                    Node::Internal { keys, children },
                    sep,
                    Node::Internal { keys: upper_keys, children: upper_children },
                )
            }
            _ => return Err(bad_node(parent)),
        };
        self.nodes.set_node(lid, new_left)?;
        self.nodes.set_node(rid, new_right)?;
        let Node::Internal { keys, .. } = self.nodes.node_mut(parent)? else { return Err(bad_node(parent)) };
        if let Some(k) = keys.get_mut(li) {
            *k = new_sep;
        }
        Ok(())
    }

    /// Merges `rid` into `lid` and drops separator `li` from the parent.
    fn merge(&mut self, parent: LogicalId, li: usize, lid: LogicalId, rid: LogicalId) -> Result<()> {
        let mut left = self.nodes.node(lid)?.as_ref().clone();
        let right = self.nodes.node(rid)?.as_ref().clone();
        let Node::Internal { keys: pkeys, .. } = self.nodes.node(parent)?.as_ref() else {
            return Err(bad_node(parent));
        };
        let sep = pkeys.get(li).cloned().ok_or_else(|| bad_node(parent))?;
        match (&mut left, right) {
            (Node::Leaf { items: l }, Node::Leaf { items: r }) => l.extend(r),
            (Node::Internal { keys: lk, children: lc }, Node::Internal { keys: rk, children: rc }) => {
                lk.push(sep);
                lk.extend(rk);
                lc.extend(rc);
            }
            _ => return Err(bad_node(parent)),
        }
        self.nodes.set_node(lid, left)?;
        self.nodes.free(rid);
        let Node::Internal { keys, children } = self.nodes.node_mut(parent)? else {
            return Err(bad_node(parent));
        };
        keys.remove(li);
        children.remove(li + 1);
        Ok(())
    }

    /// A root with no keys and one child takes the child's place.
    async fn shrink_root(&mut self, root: LogicalId) -> Result<()> {
        loop {
            let child = match self.nodes.node(root)?.as_ref() {
                Node::Internal { keys, children } if keys.is_empty() => {
                    *children.first().ok_or_else(|| bad_node(root))?
                }
                _ => return Ok(()),
            };
            self.nodes.load(child).await?;
            let contents = self.nodes.node(child)?.as_ref().clone();
            self.nodes.set_node(root, contents)?;
            self.nodes.free(child);
        }
    }
}
