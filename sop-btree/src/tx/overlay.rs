//! [`Overlay`]: a write transaction's item-level changes to a leaf, kept
//! beside the leaf as read instead of in a copy of it.
//!
//! A leaf is shared with the node cache; the first write to it used to
//! copy it whole (`Arc::make_mut`: every item's key and value reference
//! counted, then dropped again after the commit) and the commit then
//! diffed the copy against its base to find the few items that changed.
//! With an overlay, a put or delete that neither splits nor underflows the
//! leaf is recorded here (sorted by key); the commit writes the overlay as
//! the leaf's delta directly (`crate::tx::commit`), and the leaf with its
//! changes is built once, for the cache. Anything else that needs the leaf
//! with its changes (a scan, a split, a repair) gets it built from the
//! overlay (`TxNode::effective`).

use bytes::Bytes;
use sop_core::{DeltaOp, Item, cmp_keys};

/// One key's change, and whether the leaf as read holds that key.
#[derive(Debug, Clone)]
struct Change {
    key: Bytes,
    /// `Some`: the item is now this; `None`: deleted.
    item: Option<Item>,
    /// Whether the leaf as read holds the key (a delete of a key it does
    /// not hold is no change at all).
    in_read: bool,
}

/// See the module documentation.
#[derive(Debug, Clone, Default)]
pub(crate) struct Overlay {
    /// Strictly ascending by key.
    changes: Vec<Change>,
}

impl Overlay {
    /// Whether nothing is changed.
    pub(crate) fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    fn position(&self, key: &[u8]) -> Result<usize, usize> {
        self.changes.binary_search_by(|c| cmp_keys(&c.key, key))
    }

    /// The change under `key`: `Some(Some(item))` put, `Some(None)`
    /// deleted, `None` untouched (as read).
    pub(crate) fn get(&self, key: &[u8]) -> Option<Option<&Item>> {
        self.position(key).ok().and_then(|i| self.changes.get(i)).map(|c| c.item.as_ref())
    }

    /// The change under `key` (as [`Overlay::get`]) with whether the leaf
    /// as read holds the key, when the overlay changed it.
    pub(crate) fn change(&self, key: &[u8]) -> Option<(Option<&Item>, bool)> {
        let c = self.position(key).ok().and_then(|i| self.changes.get(i))?;
        Some((c.item.as_ref(), c.in_read))
    }

    /// Records a put of `item`; `in_read` as for the key's first change.
    pub(crate) fn put(&mut self, item: Item, in_read: bool) {
        match self.position(&item.key) {
            Ok(i) => {
                if let Some(c) = self.changes.get_mut(i) {
                    c.item = Some(item);
                }
            }
            Err(i) => self.changes.insert(i, Change { key: item.key.clone(), item: Some(item), in_read }),
        }
    }

    /// Records a delete of `key`, which the leaf holds (as read, or put
    /// by this overlay); `in_read` as for the key's first change.
    pub(crate) fn delete(&mut self, key: Bytes, in_read: bool) {
        match self.position(&key) {
            // Put here and never in the leaf as read: no change after all.
            Ok(i) if !self.changes.get(i).is_some_and(|c| c.in_read) => {
                self.changes.remove(i);
            }
            Ok(i) => {
                if let Some(c) = self.changes.get_mut(i) {
                    c.item = None;
                }
            }
            Err(i) => self.changes.insert(i, Change { key, item: None, in_read }),
        }
    }

    /// The items of the leaf as read (`read`, sorted) with the changes.
    pub(crate) fn apply(&self, read: &[Item]) -> Vec<Item> {
        let mut out = Vec::with_capacity(read.len() + self.changes.len());
        let mut changes = self.changes.iter().peekable();
        for item in read {
            while let Some(c) = changes.next_if(|c| c.key < item.key) {
                out.extend(c.item.iter().cloned());
            }
            match changes.next_if(|c| c.key == item.key) {
                Some(c) => out.extend(c.item.iter().cloned()),
                None => out.push(item.clone()),
            }
        }
        out.extend(changes.flat_map(|c| c.item.iter().cloned()));
        out
    }

    /// The changes as a delta's operations on the leaf as read.
    pub(crate) fn ops(&self) -> Vec<DeltaOp> {
        self.changes.iter().filter_map(Change::op).collect()
    }

    /// The changes on top of `prior` (the operations that turn the base
    /// `base` into the leaf as read), as operations on `base`: an
    /// overlay's change wins; a delete of a key the base does not hold
    /// (put by `prior`) leaves no operation.
    pub(crate) fn ops_over(&self, prior: &[DeltaOp], base: &[Item]) -> Vec<DeltaOp> {
        self.ops_over_held(prior, |key| base.binary_search_by(|i| i.key.as_ref().cmp(key)).is_ok())
    }

    /// As [`Overlay::ops_over`], `prior` being the changes since a state
    /// of the leaf that holds the keys `held` says: a delete of a key that
    /// state lacks (put by `prior`) leaves no operation.
    pub(crate) fn ops_over_held(&self, prior: &[DeltaOp], held: impl Fn(&[u8]) -> bool) -> Vec<DeltaOp> {
        let mut out = Vec::with_capacity(prior.len() + self.changes.len());
        let mut changes = self.changes.iter().peekable();
        for op in prior {
            while let Some(c) = changes.next_if(|c| c.key < *op.key()) {
                out.extend(c.op());
            }
            match changes.next_if(|c| c.key == *op.key()) {
                Some(Change { item: Some(item), .. }) => out.push(DeltaOp::Put(item.clone())),
                Some(Change { key, item: None, .. }) => {
                    if held(key) {
                        out.push(DeltaOp::Delete(key.clone()));
                    }
                }
                None => out.push(op.clone()),
            }
        }
        out.extend(changes.filter_map(Change::op));
        out
    }
}

impl Change {
    fn op(&self) -> Option<DeltaOp> {
        match &self.item {
            Some(item) => Some(DeltaOp::Put(item.clone())),
            None => self.in_read.then(|| DeltaOp::Delete(self.key.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Overlay;
    use bytes::Bytes;
    use sop_cache::LeafSizes;
    use sop_core::{DeltaOp, Item, LeafDelta, TxId, Value};
    use sop_core::{KeyIndex, Node};

    fn item(k: u8, v: &str) -> Item {
        Item {
            key: Bytes::from(vec![k]),
            version: TxId::new(),
            value: Value::Inline(Bytes::from(v.to_owned())),
        }
    }

    fn size(items: &[Item]) -> usize {
        items.iter().map(Item::size_hint).sum()
    }

    /// Random overlays over random leaves, read directly and as a delta
    /// over a base: the same items as the changes made to a copy.
    #[test]
    fn an_overlay_applies_like_a_copy_and_its_ops_rebuild_it_from_the_base() {
        let mut next = crate::test_rng::below(0x9e37_79b9_7f4a_7c15);
        for round in 0..500 {
            let base: Vec<Item> = (0..40u8).filter(|_| next(2) == 0).map(|k| item(k * 2, "b")).collect();
            // The leaf as read: the base with a prior delta's changes.
            let mut read = base.clone();
            for _ in 0..next(6) {
                let k = next(80) as u8;
                match read.binary_search_by(|i| i.key[0].cmp(&k)) {
                    Ok(i) if next(2) == 0 => {
                        read.remove(i);
                    }
                    Ok(i) => read[i] = item(k, "p"),
                    Err(i) => read.insert(i, item(k, "p")),
                }
            }
            let mut copy = read.clone();
            let mut overlay = Overlay::default();
            for _ in 0..next(8) {
                let k = next(80) as u8;
                let in_read = overlay
                    .change(&[k])
                    .map(|(_, held)| held)
                    .unwrap_or_else(|| read.binary_search_by(|i| i.key[0].cmp(&k)).is_ok());
                match copy.binary_search_by(|i| i.key[0].cmp(&k)) {
                    Ok(i) if next(2) == 0 => {
                        copy.remove(i);
                        overlay.delete(Bytes::from(vec![k]), in_read);
                    }
                    Ok(i) => {
                        copy[i] = item(k, "o");
                        overlay.put(copy[i].clone(), in_read);
                    }
                    Err(i) => {
                        copy.insert(i, item(k, "o"));
                        overlay.put(copy[i].clone(), in_read);
                    }
                }
                assert_eq!(overlay.apply(&read), copy, "round {round}");
            }
            let ops = overlay.ops_over(&LeafDelta::diff(&base, &read), &base);
            assert!(ops.windows(2).all(|w| w[0].key() < w[1].key()), "round {round}: ops out of order");
            assert!(
                ops.iter().all(|op| !matches!(op, DeltaOp::Delete(k)
                    if base.binary_search_by(|i| i.key.as_ref().cmp(k)).is_err())),
                "round {round}: a delete of a key the base lacks"
            );
            let delta = LeafDelta { base: sop_core::PhysicalId::new(), chain: Vec::new(), ops };
            assert_eq!(delta.apply(&base), copy, "round {round}");
            let index = KeyIndex::of_node(&Node::Leaf { items: base.clone() });
            let sizes = LeafSizes::of(&base, &index, &delta.ops);
            assert_eq!(
                (sizes.base_size, sizes.size, sizes.len),
                (size(&base), size(&copy), copy.len()),
                "round {round}"
            );
            if read == base {
                let direct = LeafDelta { base: delta.base, chain: Vec::new(), ops: overlay.ops() };
                assert_eq!(direct.apply(&base), copy, "round {round}");
            }
        }
    }
}
