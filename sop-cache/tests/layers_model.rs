//! `Layers` against a plain map: runs of changes as writers make them
//! (puts anywhere, deletes of keys the leaf holds, keys put, deleted and
//! put again across runs), over keys of every length around the eight
//! bytes `cmp_keys` reads as a number, with 0x00 and 0xff bytes and keys
//! that are prefixes of each other.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use sop_cache::{DeltaLeaf, Layers, LeafSizes};
use sop_core::{DeltaOp, Item, KeyIndex, LeafDelta, Node, TxId, Value, cmp_keys};

struct Rng(u64);
impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A key of 0..=12 bytes over a small alphabet with both ends of a byte.
fn key(rng: &mut Rng) -> Vec<u8> {
    const ALPHABET: [u8; 4] = [0x00, 0x01, 0x80, 0xff];
    let len = rng.next(13) as usize;
    (0..len).map(|_| ALPHABET[rng.next(4) as usize]).collect()
}

fn item(k: &[u8], v: &str) -> Item {
    Item {
        key: Bytes::copy_from_slice(k),
        version: TxId::new(),
        value: Value::Inline(Bytes::from(v.to_owned())),
    }
}

#[test]
fn cmp_keys_orders_as_slices_do_with_extreme_bytes() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut keys: Vec<Vec<u8>> =
        vec![vec![], vec![0], vec![0xff], vec![0; 8], vec![0xff; 8], vec![0; 9], vec![0xff; 9]];
    for _ in 0..3000 {
        keys.push(key(&mut rng));
    }
    for a in &keys {
        for b in &keys {
            assert_eq!(cmp_keys(a, b), a.as_slice().cmp(b.as_slice()), "{a:?} vs {b:?}");
        }
    }
    assert_eq!(cmp_keys(&[0x80; 8], &[0x7f; 8]), Ordering::Greater, "unsigned, not signed");
}

/// The engine-level scenario of runs `[P: put k] [D: delete k] [X: put k,
/// delete k]` where P and D never merge (each more than twice the next):
/// the merged run keeps the delete (an older run holds k), and the folded
/// changes then hold a delete of a key the base lacks.
#[test]
fn a_key_put_deleted_put_and_deleted_again_across_unmerged_runs() {
    let base: Vec<Item> = (0..10u8).map(|k| item(&[k * 2], "b")).collect();
    let node = Arc::new(Node::Leaf { items: base.clone() });
    let index = Arc::new(KeyIndex::of_node(&node));
    let k: &[u8] = &[101];
    let mut layers = Layers::new(node, index.clone(), Vec::new()).unwrap();
    let mut model: BTreeMap<Vec<u8>, Item> = base.iter().map(|i| (i.key.to_vec(), i.clone())).collect();
    let mut add = |layers: &mut Layers, run: Vec<DeltaOp>| {
        for op in &run {
            match op {
                DeltaOp::Put(i) => model.insert(i.key.to_vec(), i.clone()),
                DeltaOp::Delete(k) => model.remove(k.as_ref()),
            };
        }
        let sizes = layers.sizes_with(&run);
        *layers = layers.with_run(run, sizes);
        model.values().cloned().collect::<Vec<Item>>()
    };
    // P: 10 puts (k among them); D: 4 changes (the delete of k among them);
    // X: put k; Y: delete k.
    let p: Vec<DeltaOp> = (100..110u8).map(|x| DeltaOp::Put(item(&[x + 1], "p"))).collect();
    add(&mut layers, p);
    let d = vec![
        DeltaOp::Put(item(&[1], "d")),
        DeltaOp::Put(item(&[3], "d")),
        DeltaOp::Put(item(&[5], "d")),
        DeltaOp::Delete(Bytes::copy_from_slice(k)),
    ];
    add(&mut layers, d);
    assert_eq!(layers.runs(), 2);
    add(&mut layers, vec![DeltaOp::Put(item(k, "x"))]);
    let want = add(&mut layers, vec![DeltaOp::Delete(Bytes::copy_from_slice(k))]);
    assert_eq!(layers.change(k), Some(None), "deleted");
    let folded = layers.folded();
    assert_eq!(LeafDelta::apply_ops(&base, &folded), want, "reads right");
    let base_items = layers.base_items();
    assert_eq!(layers.sizes, LeafSizes::of(base_items, &index, &folded));
    let stray: Vec<&DeltaOp> = folded
        .iter()
        .filter(|op| matches!(op, DeltaOp::Delete(_)) && base_items.iter().all(|i| i.key != op.key()))
        .collect();
    assert!(
        stray.is_empty(),
        "folded holds deletes of keys the base lacks: {stray:?} (runs {})",
        layers.runs()
    );
}

#[test]
fn random_runs_over_prefix_heavy_keys_read_as_the_changes_made_in_order() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let (mut stray_rounds, mut restarts) = (0, 0);
    for round in 0..300 {
        // A pool of keys, some in the base.
        let mut pool: Vec<Vec<u8>> = (0..40).map(|_| key(&mut rng)).collect();
        pool.sort();
        pool.dedup();
        let base: Vec<Item> = pool.iter().filter(|_| rng.next(2) == 0).map(|k| item(k, "b")).collect();
        let node = Arc::new(Node::Leaf { items: base.clone() });
        let index = Arc::new(KeyIndex::of_node(&node));
        let mut model: BTreeMap<Vec<u8>, Item> = base.iter().map(|i| (i.key.to_vec(), i.clone())).collect();
        // Sometimes start from a non-empty first run (a cold load).
        let mut layers = Layers::new(node.clone(), index.clone(), Vec::new()).unwrap();
        let mut stray = false;
        // The leaf as the last restart left it (the base before one).
        let mut at_restart = model.clone();
        for step in 0..60 {
            let mut run: BTreeMap<Vec<u8>, DeltaOp> = BTreeMap::new();
            // Run sizes from 1 to ~12, skewed small, so that merges vary.
            let n = if rng.next(5) == 0 { 1 + rng.next(12) } else { 1 + rng.next(3) };
            for _ in 0..n {
                let k = pool[rng.next(pool.len() as u64) as usize].clone();
                let held = match run.get(&k) {
                    Some(DeltaOp::Put(_)) => true,
                    Some(DeltaOp::Delete(_)) => false,
                    None => model.contains_key(&k),
                };
                // A writer deletes only keys the leaf holds as read.
                if held && rng.next(2) == 0 {
                    // A put then a delete within one run of a key the leaf
                    // as read lacks leaves no change (as the overlay does).
                    if matches!(run.get(&k), Some(DeltaOp::Put(_))) && !model.contains_key(&k) {
                        run.remove(&k);
                    } else {
                        run.insert(k.clone(), DeltaOp::Delete(Bytes::from(k)));
                    }
                } else {
                    run.insert(k.clone(), DeltaOp::Put(item(&k, &format!("{round}.{step}"))));
                }
            }
            let ops: Vec<DeltaOp> = run.values().cloned().collect();
            for (k, op) in &run {
                match op {
                    DeltaOp::Put(i) => model.insert(k.clone(), i.clone()),
                    DeltaOp::Delete(_) => model.remove(k),
                };
            }
            let sizes = layers.sizes_with(&ops);
            if rng.next(6) == 0 {
                // A restart: the links since the last restart and this
                // run's changes, as the commit folds them.
                let restart = LeafDelta::fold(&layers.links_folded(), &ops, |k| layers.restarts_hold(k));
                layers = layers.with_restart(restart, sizes);
                at_restart = model.clone();
                restarts += 1;
            } else {
                layers = layers.with_run(ops, sizes);
            }
            let want: Vec<Item> = model.values().cloned().collect();
            check_restarts(&layers, &at_restart, &want, &pool, &format!("round {round} step {step}"));
            for k in &pool {
                let got = match layers.change(k) {
                    Some(c) => c,
                    None => base.iter().find(|i| i.key == k),
                };
                assert_eq!(got, model.get(k), "round {round} step {step} key {k:?}");
            }
            let folded = layers.folded();
            assert!(
                folded.windows(2).all(|w| w[0].key() < w[1].key()),
                "round {round} step {step}: folded not strictly ascending"
            );
            assert_eq!(LeafDelta::apply_ops(&base, &folded), want, "round {round} step {step}");
            assert_eq!(layers.sizes, LeafSizes::of(&base, &index, &folded), "round {round} step {step}");
            assert_eq!(layers.sizes.len, want.len(), "round {round} step {step}");
            assert!(layers.ops_size() >= LeafDelta::ops_size_hint(&folded), "round {round} step {step}");
            stray |= folded
                .iter()
                .any(|op| matches!(op, DeltaOp::Delete(_)) && base.iter().all(|i| i.key != op.key()));
            let leaf = DeltaLeaf::of_layers(layers.clone());
            let Node::Leaf { items } = leaf.merged().0.as_ref() else { panic!("a leaf") };
            assert_eq!(items, &want, "round {round} step {step}");
            // A cold load of the same state: the folded changes as one run.
            let cold = Layers::new(node.clone(), index.clone(), folded.clone()).unwrap();
            assert_eq!(cold.sizes, layers.sizes, "round {round} step {step}: a cold load's sizes");
            // A delta with no chain loaded cold is all restart.
            check_restarts(
                &cold.as_restart(),
                &model,
                &want,
                &pool,
                &format!("round {round} step {step} cold"),
            );
        }
        stray_rounds += usize::from(stray);
    }
    eprintln!("rounds whose folded changes held a delete of a key the base lacks: {stray_rounds} of 300");
    assert!(restarts > 1000, "only {restarts} restarts tried");
}

/// The links since the last restart, folded, turn the leaf as that
/// restart left it (`at_restart`) into the leaf (`want`), deleting only
/// keys it holds; `restarts_hold` answers as `at_restart`; the restarts'
/// size bounds their changes' and stays within the whole chain's.
fn check_restarts(
    layers: &Layers,
    at_restart: &BTreeMap<Vec<u8>, Item>,
    want: &[Item],
    pool: &[Vec<u8>],
    what: &str,
) {
    let links = layers.links_folded();
    assert!(links.windows(2).all(|w| w[0].key() < w[1].key()), "{what}: links not strictly ascending");
    let restarted: Vec<Item> = at_restart.values().cloned().collect();
    assert_eq!(LeafDelta::apply_ops(&restarted, &links), want, "{what}: the restart and its links");
    for op in &links {
        if let DeltaOp::Delete(k) = op {
            assert!(
                at_restart.contains_key(k.as_ref()),
                "{what}: a link deletes {k:?}, not held at the restart"
            );
        }
    }
    for k in pool {
        assert_eq!(layers.restarts_hold(k), at_restart.contains_key(k), "{what}: held at the restart {k:?}");
    }
    assert!(layers.restarts_size() <= layers.ops_size(), "{what}: restarts' size past the chain's");
}
