//! Underflow repair after a removal: borrow from a sibling, or merge with
//! it; shrink the root when it is left with one child.

use sop_core::{LogicalId, Node, Result};

use super::{NodeSource, Path, Tree, bad_node, fill};

impl<S: NodeSource> Tree<S> {
    /// Restores fill bounds along `path` (leaf last) after a removal.
    pub(super) async fn rebalance(&mut self, path: &Path) -> Result<()> {
        let min = self.slot / 2;
        for level in (1..path.len()).rev() {
            let (id, _) = path[level];
            if fill(self.nodes.node(id)?) >= min {
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
            if fill(self.nodes.node(sibling)?) > min {
                self.borrow(parent, li, lid, rid, sibling == lid)?;
                break;
            }
            self.merge(parent, li, lid, rid)?;
        }
        self.shrink_root(path[0].0).await
    }

    /// Moves one entry from the sibling into the underfull node through the
    /// parent's separator `li`.
    fn borrow(
        &mut self,
        parent: LogicalId,
        li: usize,
        lid: LogicalId,
        rid: LogicalId,
        from_left: bool,
    ) -> Result<()> {
        let mut left = self.nodes.node(lid)?.as_ref().clone();
        let mut right = self.nodes.node(rid)?.as_ref().clone();
        let Node::Internal { keys: pkeys, .. } = self.nodes.node(parent)?.as_ref() else {
            return Err(bad_node(parent));
        };
        let sep = pkeys.get(li).cloned().ok_or_else(|| bad_node(parent))?;
        let new_sep = match (&mut left, &mut right) {
            (Node::Leaf { items: l }, Node::Leaf { items: r }) => {
                if from_left {
                    let moved = l.pop().ok_or_else(|| bad_node(lid))?;
                    r.insert(0, moved);
                } else {
                    let moved = r.remove(0);
                    l.push(moved);
                }
                r.first().map(|i| i.key.clone()).ok_or_else(|| bad_node(rid))?
            }
            (Node::Internal { keys: lk, children: lc }, Node::Internal { keys: rk, children: rc }) => {
                if from_left {
                    rk.insert(0, sep);
                    rc.insert(0, lc.pop().ok_or_else(|| bad_node(lid))?);
                    lk.pop().ok_or_else(|| bad_node(lid))?
                } else {
                    lk.push(sep);
                    lc.push(rc.remove(0));
                    rk.remove(0)
                }
            }
            _ => return Err(bad_node(parent)),
        };
        self.nodes.set_node(lid, left)?;
        self.nodes.set_node(rid, right)?;
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
