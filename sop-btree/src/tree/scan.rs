//! Range walks, one leaf at a time: each batch returns the leaf's items in
//! the range, the interval the batch covered, and where the next batch
//! starts (the leaf's fence key in the parent), so a cursor moves in
//! amortized constant time and a swarm merge can re-check exactly the
//! interval a batch covered.

use std::ops::{Bound, Range};
use std::sync::Arc;

use bytes::Bytes;
use sop_core::{Item, KeyIndex, Node, Result};

use super::{NodeSource, Path, Target, Tree, bad_node};

/// One leaf's worth of a range read: the leaf as read (shared, not
/// copied) and the positions of its items in range.
#[derive(Debug)]
pub(crate) struct Batch {
    /// The leaf the batch read.
    pub(crate) leaf: Arc<Node>,
    /// Positions in `leaf` of the items in range (ascending).
    pub(crate) range: Range<usize>,
    /// The key interval this batch covered (ascending `lo`, `hi`).
    pub(crate) lo: Bound<Bytes>,
    pub(crate) hi: Bound<Bytes>,
    /// The bound where the next batch starts (`from` going forward, `to`
    /// going backward); `None` when the range is exhausted.
    pub(crate) next: Option<Bound<Bytes>>,
}

/// Whether the keys below upper bound `a` include every key below upper
/// bound `b` (so a leaf ending at `a` finishes a range ending at `b`).
/// `Excluded(x)` reaches `Included(y)` only when `x > y`: a leaf whose
/// fence is `x` does not hold `x` itself.
pub(super) fn upper_reaches(a: &Bound<Bytes>, b: &Bound<Bytes>) -> bool {
    match (a, b) {
        (Bound::Unbounded, _) => true,
        (_, Bound::Unbounded) => false,
        (Bound::Excluded(x), Bound::Included(y)) => x > y,
        (Bound::Included(x) | Bound::Excluded(x), Bound::Included(y) | Bound::Excluded(y)) => x >= y,
    }
}

/// The leaf's fence keys from the path: (lower, upper).
fn fences(tx: &impl NodeSource, path: &Path) -> Result<(Option<Bytes>, Option<Bytes>)> {
    let (mut lower, mut upper) = (None, None);
    for &(id, idx) in path.iter().rev().skip(1) {
        let Node::Internal { keys, .. } = tx.node(id)?.as_ref() else { return Err(bad_node(id)) };
        if upper.is_none() && idx < keys.len() {
            upper = keys.get(idx).cloned();
        }
        if lower.is_none() && idx > 0 {
            lower = keys.get(idx - 1).cloned();
        }
    }
    Ok((lower, upper))
}

impl Batch {
    /// The items in range, ascending.
    pub(crate) fn items(&self) -> &[Item] {
        leaf_items(&self.leaf).get(self.range.clone()).unwrap_or_default()
    }
}

/// The items of a leaf (none for an internal node).
pub(crate) fn leaf_items(node: &Node) -> &[Item] {
    match node {
        Node::Leaf { items } => items,
        Node::Internal { .. } => &[],
    }
}

/// The leaf at the end of `path` and the positions of its items in
/// `[from, to]`.
fn leaf_range(
    tx: &impl NodeSource,
    path: &Path,
    from: &Bound<Bytes>,
    to: &Bound<Bytes>,
) -> Result<(Arc<Node>, Range<usize>)> {
    let (leaf, _) = *path.last().ok_or_else(|| sop_core::Error::corruption("tree", "empty path"))?;
    let node = tx.node(leaf)?.clone();
    let Node::Leaf { items } = node.as_ref() else { return Err(bad_node(leaf)) };
    // Found by the leaf's key index when it has one: a binary search by
    // comparisons touched an item and its key per probe (key searches were
    // 7 % of a short scan's time at 1 000 000 items, `docs/BENCHMARKS.md`).
    let index = tx.index(leaf);
    let start = match from {
        Bound::Unbounded => 0,
        Bound::Included(k) => position(index, items, k, false),
        Bound::Excluded(k) => position(index, items, k, true),
    };
    let end = match to {
        Bound::Unbounded => items.len(),
        Bound::Included(k) => position(index, items, k, true),
        Bound::Excluded(k) => position(index, items, k, false),
    };
    Ok((node, start..end.max(start)))
}

/// The first position in sorted `items` whose key is above `key` (`past`)
/// or at least `key`, by `index` when it describes `items`.
fn position(index: Option<&KeyIndex>, items: &[Item], key: &[u8], past: bool) -> usize {
    let found = match index {
        Some(index) => index.search(items, key),
        None => items.binary_search_by(|i| i.key.as_ref().cmp(key)),
    };
    match found {
        Ok(i) if past => i + 1,
        Ok(i) | Err(i) => i,
    }
}

impl<S: NodeSource> Tree<S> {
    /// The first batch of `[from, to]` at or after `from`.
    pub(crate) async fn scan_forward(&mut self, from: Bound<Bytes>, to: &Bound<Bytes>) -> Result<Batch> {
        let target = match &from {
            Bound::Unbounded => Target::First,
            Bound::Included(k) | Bound::Excluded(k) => Target::Key(k),
        };
        let path = self.descend(target).await?;
        let (_, upper) = fences(&self.nodes, &path)?;
        let (leaf, range) = leaf_range(&self.nodes, &path, &from, to)?;
        let leaf_hi = upper.clone().map_or(Bound::Unbounded, Bound::Excluded);
        let (hi, next) = if upper_reaches(&leaf_hi, to) {
            (to.clone(), None)
        } else {
            (leaf_hi, upper.map(Bound::Included))
        };
        Ok(Batch { leaf, range, lo: from, hi, next })
    }

    /// The first batch of `[from, to]` at or before `to` (a reader walks its
    /// items from the last).
    pub(crate) async fn scan_backward(&mut self, from: &Bound<Bytes>, to: Bound<Bytes>) -> Result<Batch> {
        let target = match &to {
            Bound::Unbounded => Target::Last,
            Bound::Included(k) => Target::Key(k),
            Bound::Excluded(k) => Target::Below(k),
        };
        let path = self.descend(target).await?;
        let (lower, _) = fences(&self.nodes, &path)?;
        let (leaf, range) = leaf_range(&self.nodes, &path, from, &to)?;
        let below_from = match (&lower, from) {
            (None, _) => true,
            (Some(_), Bound::Unbounded) => false,
            (Some(l), Bound::Included(f) | Bound::Excluded(f)) => l <= f,
        };
        let (lo, next) = match lower {
            Some(l) if !below_from => (Bound::Included(l.clone()), Some(Bound::Excluded(l))),
            _ => (from.clone(), None),
        };
        Ok(Batch { leaf, range, lo, hi: to, next })
    }

    /// Every item in `[lo, hi]`, ascending (used to re-check range reads).
    pub(crate) async fn collect_range(&mut self, lo: Bound<Bytes>, hi: &Bound<Bytes>) -> Result<Vec<Item>> {
        let mut out = Vec::new();
        let mut from = Some(lo);
        while let Some(f) = from {
            let batch = self.scan_forward(f, hi).await?;
            out.extend_from_slice(batch.items());
            from = batch.next;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn an_exclusive_fence_reaches_an_inclusive_bound_only_past_it() {
        assert!(!upper_reaches(&Bound::Excluded(b("k")), &Bound::Included(b("k"))));
        assert!(upper_reaches(&Bound::Excluded(b("l")), &Bound::Included(b("k"))));
        assert!(upper_reaches(&Bound::Excluded(b("k")), &Bound::Excluded(b("k"))));
        assert!(!upper_reaches(&Bound::Excluded(b("j")), &Bound::Excluded(b("k"))));
        assert!(upper_reaches(&Bound::Included(b("k")), &Bound::Included(b("k"))));
        assert!(upper_reaches(&Bound::Unbounded, &Bound::Unbounded));
        assert!(!upper_reaches(&Bound::Excluded(b("z")), &Bound::Unbounded));
    }
}

#[cfg(test)]
mod position_tests {
    use super::position;
    use bytes::Bytes;
    use sop_core::{Item, KeyIndex, Node, TxId, Value};
    use std::ops::Bound;

    fn in_lower(key: &[u8], lo: &Bound<Bytes>) -> bool {
        match lo {
            Bound::Included(b) => key >= b.as_ref(),
            Bound::Excluded(b) => key > b.as_ref(),
            Bound::Unbounded => true,
        }
    }

    fn in_upper(key: &[u8], hi: &Bound<Bytes>) -> bool {
        match hi {
            Bound::Included(b) => key <= b.as_ref(),
            Bound::Excluded(b) => key < b.as_ref(),
            Bound::Unbounded => true,
        }
    }

    /// A leaf's range found through its key index is the range the
    /// bounds' predicates give, for every bound kind, with probes that
    /// are present, absent, shorter, longer and past either end, over
    /// fixed-length and mixed-length keys that share prefixes.
    #[test]
    fn positions_by_the_index_are_the_predicates_ranges() {
        let mut next = crate::test_rng::below(0x9e37_79b9_7f4a_7c15);
        for round in 0..300 {
            let fixed = round % 2 == 0;
            let mut keys: Vec<Vec<u8>> = (0..next(40))
                .map(|_| {
                    let len = if fixed { 16 } else { 1 + next(20) as usize };
                    (0..len).map(|_| b"ab\x00\xff"[next(4) as usize]).collect()
                })
                .collect();
            keys.sort();
            keys.dedup();
            let items: Vec<Item> = keys
                .iter()
                .map(|k| Item {
                    key: Bytes::from(k.clone()),
                    version: TxId::new(),
                    value: Value::Inline(Bytes::new()),
                })
                .collect();
            let index = KeyIndex::of_node(&Node::Leaf { items: items.clone() });
            for _ in 0..40 {
                let probe: Bytes = match (next(3), keys.is_empty()) {
                    (0, false) => Bytes::from(keys[next(keys.len() as u64) as usize].clone()),
                    _ => {
                        let len = if fixed && next(2) == 0 { 16 } else { next(22) as usize };
                        Bytes::from((0..len).map(|_| b"ab\x00\xff"[next(4) as usize]).collect::<Vec<u8>>())
                    }
                };
                for bound in
                    [Bound::Included(probe.clone()), Bound::Excluded(probe.clone()), Bound::Unbounded]
                {
                    let lower = items.partition_point(|i| !in_lower(&i.key, &bound));
                    let upper = items.partition_point(|i| in_upper(&i.key, &bound));
                    for by in [Some(&index), None] {
                        let (start, end) = match &bound {
                            Bound::Unbounded => (0, items.len()),
                            Bound::Included(k) => {
                                (position(by, &items, k, false), position(by, &items, k, true))
                            }
                            Bound::Excluded(k) => {
                                (position(by, &items, k, true), position(by, &items, k, false))
                            }
                        };
                        assert_eq!((start, end), (lower, upper), "round {round}, probe {probe:?}, {bound:?}");
                    }
                }
            }
        }
    }
}
