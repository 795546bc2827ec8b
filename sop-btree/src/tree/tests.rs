//! Unit tests of the tree's algorithms over a node source in memory: split,
//! borrow, merge, root shrink and range walks, each checked against the
//! structural invariants and a `BTreeMap` model.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
use sop_core::{Error, Item, KeyIndex, LogicalId, Node, Result, Subject, TxId, Value};

use super::{NodeSource, Tree, fill};

/// Nodes in a map; counts loads and remembers freed ids. Like the
/// transaction's view, it indexes a node when it is loaded and drops the
/// index on the node's first change, so the searches run both ways.
#[derive(Debug, Default)]
struct Mem {
    nodes: HashMap<LogicalId, Arc<Node>>,
    indexes: HashMap<LogicalId, KeyIndex>,
    loads: usize,
    freed: Vec<LogicalId>,
}

impl Mem {
    /// A source holding one empty root leaf.
    fn with_root() -> (Self, LogicalId) {
        let mut mem = Self::default();
        let root = mem.alloc(Node::empty_leaf());
        (mem, root)
    }
}

impl NodeSource for Mem {
    async fn load(&mut self, id: LogicalId) -> Result<()> {
        self.loads += 1;
        let node = self.nodes.get(&id).ok_or(Error::NotFound(Subject::Node(id)))?;
        self.indexes.entry(id).or_insert_with(|| KeyIndex::of_node(node));
        Ok(())
    }

    fn node(&self, id: LogicalId) -> Result<&Arc<Node>> {
        self.nodes.get(&id).ok_or_else(|| Error::NotFound(Subject::Node(id)))
    }

    fn index(&self, id: LogicalId) -> Option<&KeyIndex> {
        self.indexes.get(&id)
    }

    fn node_mut(&mut self, id: LogicalId) -> Result<&mut Node> {
        self.indexes.remove(&id);
        let n = self.nodes.get_mut(&id).ok_or_else(|| Error::NotFound(Subject::Node(id)))?;
        Ok(Arc::make_mut(n))
    }

    fn set_node(&mut self, id: LogicalId, node: Node) -> Result<()> {
        *self.node_mut(id)? = node;
        Ok(())
    }

    fn alloc(&mut self, node: Node) -> LogicalId {
        let id = LogicalId::new();
        self.nodes.insert(id, Arc::new(node));
        id
    }

    fn free(&mut self, id: LogicalId) {
        self.nodes.remove(&id);
        self.indexes.remove(&id);
        self.freed.push(id);
    }
}

fn key(n: u32) -> Bytes {
    Bytes::from(format!("k{n:05}"))
}

fn item(n: u32) -> Item {
    Item {
        key: key(n),
        version: TxId::from_u128(u128::from(n)),
        value: Value::Inline(Bytes::from(n.to_string())),
    }
}

fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().build().expect("a runtime").block_on(f)
}

/// Checks every structural invariant from `root`; returns the items in
/// key order and the number of nodes reached.
fn check(mem: &Mem, root: LogicalId, slot: usize) -> (Vec<Bytes>, usize) {
    let mut keys = Vec::new();
    let mut leaf_depths = Vec::new();
    let mut reached = 0;
    let mut stack = vec![(root, 0usize, None::<Bytes>, None::<Bytes>)];
    while let Some((id, depth, lo, hi)) = stack.pop() {
        reached += 1;
        let node = mem.node(id).expect("every child resolves");
        let f = fill(node);
        assert!(f <= slot, "node {id} holds {f} > {slot}");
        let min = super::min_fill(slot);
        assert!(id == root || f >= min, "node {id} holds {f} < {min}");
        let in_range = |k: &Bytes| lo.as_ref().is_none_or(|l| k >= l) && hi.as_ref().is_none_or(|h| k < h);
        match node.as_ref() {
            Node::Leaf { items } => {
                assert!(items.windows(2).all(|w| w[0].key < w[1].key), "leaf {id} unsorted");
                assert!(items.iter().all(|i| in_range(&i.key)), "leaf {id} outside its separators");
                leaf_depths.push((depth, items.iter().map(|i| i.key.clone()).collect::<Vec<_>>(), lo));
            }
            Node::Internal { keys: seps, children } => {
                assert_eq!(children.len(), seps.len() + 1, "internal {id} shape");
                assert!(!(id == root && seps.is_empty()), "a root with one child was not shrunk");
                assert!(seps.windows(2).all(|w| w[0] < w[1]) && seps.iter().all(in_range));
                for (i, c) in children.iter().enumerate().rev() {
                    let clo = if i == 0 { lo.clone() } else { seps.get(i - 1).cloned() };
                    let chi = seps.get(i).cloned().or_else(|| hi.clone());
                    stack.push((*c, depth + 1, clo, chi));
                }
            }
        }
    }
    let depth = leaf_depths.first().map(|l| l.0);
    assert!(leaf_depths.iter().all(|l| Some(l.0) == depth), "leaves at different depths");
    leaf_depths.sort_by(|a, b| a.2.cmp(&b.2));
    for (_, k, _) in leaf_depths {
        keys.extend(k);
    }
    assert_eq!(reached, mem.nodes.len(), "every node held is reached from the root");
    (keys, reached)
}

#[test]
fn a_full_root_leaf_splits_into_two_children_under_the_same_root_id() {
    let (mut mem, root) = Mem::with_root();
    for n in 0..4 {
        assert!(run(Tree::new(&mut mem, root, 4).put(item(n))).unwrap().is_none());
    }
    assert!(mem.node(root).unwrap().is_leaf(), "4 items fit a slot of 4");
    run(Tree::new(&mut mem, root, 4).put(item(4))).unwrap();
    let Node::Internal { keys, children } = mem.node(root).unwrap().as_ref() else { panic!("root split") };
    assert_eq!((keys.clone(), children.len()), (vec![key(2)], 2));
    let (got, nodes) = check(&mem, root, 4);
    assert_eq!((got.len(), nodes), (5, 3));
}

#[test]
fn put_replaces_an_existing_key_and_returns_the_old_item() {
    let (mut mem, root) = Mem::with_root();
    run(Tree::new(&mut mem, root, 4).put(item(1))).unwrap();
    let mut newer = item(1);
    newer.version = TxId::from_u128(99);
    let old = run(Tree::new(&mut mem, root, 4).put(newer)).unwrap();
    assert_eq!(old.map(|i| i.version), Some(TxId::from_u128(1)));
    let found = run(Tree::new(&mut mem, root, 4).find(&key(1))).unwrap();
    assert_eq!(found.map(|i| i.version), Some(TxId::from_u128(99)));
    assert_eq!(run(Tree::new(&mut mem, root, 4).find(&key(2))).unwrap(), None);
}

/// Builds a root over two leaves, `left` and `right`, separated by the
/// first key of `right`.
fn two_leaves(left: &[u32], right: &[u32]) -> (Mem, LogicalId) {
    let mut mem = Mem::default();
    let leaf = |ns: &[u32]| Node::Leaf { items: ns.iter().map(|n| item(*n)).collect() };
    let (l, r) = (mem.alloc(leaf(left)), mem.alloc(leaf(right)));
    let root = mem.alloc(Node::Internal { keys: vec![key(right[0])], children: vec![l, r] });
    (mem, root)
}

#[test]
fn a_leaf_above_a_quarter_of_the_slot_is_left_alone() {
    // Slot 8: a leaf is repaired only under 2 items.
    let (mut mem, root) = two_leaves(&[0, 1, 2], &[3, 4, 5]);
    assert!(run(Tree::new(&mut mem, root, 8).delete(&key(0))).unwrap().is_some());
    let Node::Internal { keys, .. } = mem.node(root).unwrap().as_ref() else { panic!("still two leaves") };
    assert_eq!(keys, &vec![key(3)], "nothing moved");
    assert!(mem.freed.is_empty());
    assert_eq!(check(&mem, root, 8).0, (1..=5).map(key).collect::<Vec<_>>());
}

#[test]
fn a_nearly_empty_leaf_shares_evenly_with_a_sibling_too_full_to_merge() {
    // Slot 8: [0 1] loses 0, and 1 + 8 items do not fit in one leaf.
    let (mut mem, root) = two_leaves(&[0, 1], &[2, 3, 4, 5, 6, 7, 8, 9]);
    assert!(run(Tree::new(&mut mem, root, 8).delete(&key(0))).unwrap().is_some());
    let Node::Internal { keys, children } = mem.node(root).unwrap().as_ref() else {
        panic!("still two leaves")
    };
    assert_eq!((keys.clone(), children.len()), (vec![key(5)], 2), "four items left of the new separator");
    assert_eq!(fill(mem.node(children[0]).unwrap()), 4);
    assert!(mem.freed.is_empty(), "sharing frees nothing");
    assert_eq!(check(&mem, root, 8).0, (1..=9).map(key).collect::<Vec<_>>());
}

#[test]
fn an_emptied_leaf_merges_and_the_root_shrinks_into_a_leaf() {
    let (mut mem, root) = two_leaves(&[0, 1], &[2]);
    assert!(run(Tree::new(&mut mem, root, 4).delete(&key(2))).unwrap().is_some());
    assert!(mem.node(root).unwrap().is_leaf(), "the root took its only child's place");
    assert_eq!(mem.freed.len(), 2, "the merged right leaf and the absorbed child are freed");
    assert_eq!(check(&mem, root, 4).0, vec![key(0), key(1)]);
}

#[test]
fn deleting_an_absent_key_changes_nothing() {
    let (mut mem, root) = two_leaves(&[0, 1], &[2, 3]);
    assert!(run(Tree::new(&mut mem, root, 4).delete(&key(9))).unwrap().is_none());
    assert_eq!(check(&mem, root, 4).0.len(), 4);
    assert!(mem.freed.is_empty());
}

#[test]
fn a_missing_child_is_an_error_not_a_panic() {
    let (mut mem, root) = two_leaves(&[0, 1], &[2, 3]);
    let Node::Internal { children, .. } = mem.node(root).unwrap().as_ref().clone() else { unreachable!() };
    mem.nodes.remove(&children[1]);
    let got = run(Tree::new(&mut mem, root, 4).find(&key(3)));
    assert_eq!(got.unwrap_err().kind(), sop_core::ErrorKind::NotFound);
}

/// A small deterministic generator (no dependency, same sequence on every run).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u32) -> u32 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % u64::from(n)) as u32
    }
}

fn bound(kind: u32, n: u32) -> Bound<Bytes> {
    match kind {
        0 => Bound::Included(key(n)),
        1 => Bound::Excluded(key(n)),
        _ => Bound::Unbounded,
    }
}

fn model_range(model: &BTreeMap<Bytes, ()>, lo: &Bound<Bytes>, hi: &Bound<Bytes>) -> Vec<Bytes> {
    let inverted = match (lo, hi) {
        (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => {
            a > b || (a == b && !(matches!(lo, Bound::Included(_)) && matches!(hi, Bound::Included(_))))
        }
        _ => false,
    };
    if inverted {
        Vec::new()
    } else {
        model.range((lo.clone(), hi.clone())).map(|(k, ())| k.clone()).collect()
    }
}

/// Walks `[lo, hi]` batch by batch in one direction, as a cursor does.
fn walk(mem: &mut Mem, root: LogicalId, lo: &Bound<Bytes>, hi: &Bound<Bytes>, back: bool) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut at = Some(if back { hi.clone() } else { lo.clone() });
    while let Some(from) = at {
        let mut tree = Tree::new(&mut *mem, root, 4);
        let batch = if back { run(tree.scan_backward(lo, from)) } else { run(tree.scan_forward(from, hi)) };
        let batch = batch.unwrap();
        if back {
            out.extend(batch.items().iter().rev().map(|i| i.key.clone()));
        } else {
            out.extend(batch.items().iter().map(|i| i.key.clone()));
        }
        at = batch.next;
    }
    if back {
        out.reverse();
    }
    out
}

/// The cases of the model test, on the tree alone: random puts and deletes
/// on small slots (many splits, borrows, merges and root changes), every
/// invariant checked after each step, and range walks with every bound
/// kind in both directions compared with the model.
#[test]
fn random_puts_and_deletes_keep_every_invariant_and_match_a_model() {
    for (seed, slot) in [(1u64, 4usize), (2, 5), (3, 4), (4, 6), (5, 8), (6, 12)] {
        let mut rng = Lcg(seed);
        let (mut mem, root) = Mem::with_root();
        let mut model = BTreeMap::new();
        for step in 0..1500 {
            let n = rng.below(120);
            if rng.below(3) == 0 {
                let got = run(Tree::new(&mut mem, root, slot).delete(&key(n))).unwrap();
                assert_eq!(got.is_some(), model.remove(&key(n)).is_some(), "seed {seed} step {step}");
            } else {
                let got = run(Tree::new(&mut mem, root, slot).put(item(n))).unwrap();
                assert_eq!(got.is_some(), model.insert(key(n), ()).is_some(), "seed {seed} step {step}");
            }
            let (keys, _) = check(&mem, root, slot);
            assert_eq!(keys, model.keys().cloned().collect::<Vec<_>>(), "seed {seed} step {step}");
        }
        for _ in 0..300 {
            let lo = bound(rng.below(3), rng.below(130));
            let hi = bound(rng.below(3), rng.below(130));
            let want = model_range(&model, &lo, &hi);
            assert_eq!(walk(&mut mem, root, &lo, &hi, false), want, "forward {lo:?}..{hi:?}");
            assert_eq!(walk(&mut mem, root, &lo, &hi, true), want, "backward {lo:?}..{hi:?}");
            let all = run(Tree::new(&mut mem, root, slot).collect_range(lo.clone(), &hi)).unwrap();
            assert_eq!(all.into_iter().map(|i| i.key).collect::<Vec<_>>(), want);
        }
        // Empty the tree in random order: internal nodes underflow too,
        // sharing with and merging into their siblings.
        let mut left: Vec<Bytes> = model.keys().cloned().collect();
        while !left.is_empty() {
            let k = left.swap_remove(rng.below(left.len() as u32) as usize);
            assert!(run(Tree::new(&mut mem, root, slot).delete(&k)).unwrap().is_some());
            model.remove(&k);
            let (keys, _) = check(&mem, root, slot);
            assert_eq!(keys, model.keys().cloned().collect::<Vec<_>>(), "seed {seed} emptying");
        }
        assert!(mem.node(root).unwrap().is_leaf(), "an emptied tree is one root leaf");
    }
}

#[test]
fn a_range_walk_loads_one_path_per_leaf() {
    let (mut mem, root) = Mem::with_root();
    for n in 0..64 {
        run(Tree::new(&mut mem, root, 4).put(item(n))).unwrap();
    }
    let leaves = mem.nodes.values().filter(|n| n.is_leaf()).count();
    mem.loads = 0;
    let got = walk(&mut mem, root, &Bound::Unbounded, &Bound::Unbounded, false);
    assert_eq!(got.len(), 64);
    let depth = {
        let mut d = 1;
        let mut id = root;
        while let Node::Internal { children, .. } = mem.node(id).unwrap().as_ref() {
            id = children[0];
            d += 1;
        }
        d
    };
    assert_eq!(mem.loads, leaves * depth, "one descent per leaf, no more");
}
