//! An Elle-style history checker for list-append transactions.
//!
//! Every append writes a globally unique element, so each element names its
//! writer, and the final list of a key is that key's version order. From
//! the observed reads the checker builds the dependency graph between
//! committed transactions — write-write (ww), write-read (wr) and
//! read-write anti-dependencies (rw) — and reports every cycle (G0: ww
//! only; G1c: ww and wr; G2: with rw), every read of an aborted or
//! intermediate write (G1a, G1b), every read that is not a prefix of the
//! version order, every lost committed append, and every transaction that
//! does not see its own appends.
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, HashMap};

/// A list element: unique across the whole history.
pub type Elem = u64;

/// One operation and what it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Read a key's whole list.
    Read { key: u32, saw: Vec<Elem> },
    /// Append one element to a key's list.
    Append { key: u32, elem: Elem },
}

/// One transaction of the history.
#[derive(Debug, Clone)]
pub struct Txn {
    pub ops: Vec<Op>,
    pub committed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Edge {
    Ww,
    Wr,
    Rw,
}

/// Every anomaly in `history`, given each key's final list.
pub fn check(history: &[Txn], finals: &BTreeMap<u32, Vec<Elem>>) -> Vec<String> {
    let mut bad = Vec::new();
    // Who wrote each element, and each writer's appends per key in order.
    let mut writer: HashMap<Elem, usize> = HashMap::new();
    for (t, txn) in history.iter().enumerate() {
        for op in &txn.ops {
            if let Op::Append { elem, .. } = op
                && writer.insert(*elem, t).is_some()
            {
                bad.push(format!("element {elem} appended twice"));
            }
        }
    }
    let appends_of = |t: usize, key: u32| -> Vec<Elem> {
        history[t]
            .ops
            .iter()
            .filter_map(|o| match o {
                Op::Append { key: k, elem } if *k == key => Some(*elem),
                _ => None,
            })
            .collect()
    };
    // Version orders: committed elements only, every committed append present.
    for (key, order) in finals {
        for e in order {
            match writer.get(e) {
                Some(&w) if history[w].committed => {}
                Some(&w) => bad.push(format!("G1a: key {key} holds element {e} of aborted txn {w}")),
                None => bad.push(format!("key {key} holds element {e} that nobody appended")),
            }
        }
    }
    for (t, txn) in history.iter().enumerate().filter(|(_, t)| t.committed) {
        for op in &txn.ops {
            if let Op::Append { key, elem } = op
                && !finals.get(key).is_some_and(|o| o.contains(elem))
            {
                bad.push(format!("lost write: committed txn {t} appended {elem} to key {key}"));
            }
        }
    }
    let empty = Vec::new();
    let mut edges: BTreeMap<(usize, usize), Edge> = BTreeMap::new();
    let mut add = |from: usize, to: usize, e: Edge| {
        if from != to {
            let slot = edges.entry((from, to)).or_insert(e);
            *slot = (*slot).min(e);
        }
    };
    for order in finals.values() {
        for pair in order.windows(2) {
            if let (Some(&a), Some(&b)) = (writer.get(&pair[0]), writer.get(&pair[1])) {
                add(a, b, Edge::Ww);
            }
        }
    }
    for (t, txn) in history.iter().enumerate().filter(|(_, t)| t.committed) {
        let mut own: HashMap<u32, Vec<Elem>> = HashMap::new();
        for op in &txn.ops {
            match op {
                Op::Append { key, elem } => own.entry(*key).or_default().push(*elem),
                Op::Read { key, saw } => {
                    let order = finals.get(key).unwrap_or(&empty);
                    let mine = own.get(key).map_or(&[][..], Vec::as_slice);
                    if !saw.ends_with(mine) {
                        bad.push(format!("txn {t} does not see its own appends to key {key}: {saw:?}"));
                        continue;
                    }
                    // What others had committed when this read happened.
                    let before = &saw[..saw.len() - mine.len()];
                    for e in before {
                        if let Some(&w) = writer.get(e)
                            && !history[w].committed
                        {
                            bad.push(format!("G1a: txn {t} read element {e} of aborted txn {w}"));
                        }
                    }
                    if !order.starts_with(before) {
                        bad.push(format!("txn {t} read {before:?} of key {key}, not a prefix of {order:?}"));
                        continue;
                    }
                    if let Some(last) = before.last()
                        && let Some(&w) = writer.get(last)
                    {
                        let theirs = appends_of(w, *key);
                        if theirs.last() != Some(last) {
                            bad.push(format!("G1b: txn {t} read an intermediate append {last} of txn {w}"));
                        }
                        add(w, t, Edge::Wr);
                    }
                    if let Some(next) = order.get(before.len())
                        && let Some(&w) = writer.get(next)
                    {
                        add(t, w, Edge::Rw);
                    }
                }
            }
        }
    }
    bad.extend(cycles(history.len(), &edges));
    bad
}

/// Every strongly connected component of more than one transaction, named
/// by the anomaly its edge kinds make.
fn cycles(n: usize, edges: &BTreeMap<(usize, usize), Edge>) -> Vec<String> {
    let mut adj: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(a, b) in edges.keys() {
        adj[a].push(b);
    }
    let comps = tarjan(&adj);
    let mut out = Vec::new();
    for comp in comps.into_iter().filter(|c| c.len() > 1) {
        let inside: std::collections::HashSet<usize> = comp.iter().copied().collect();
        let kinds: std::collections::BTreeSet<Edge> = edges
            .iter()
            .filter(|((a, b), _)| inside.contains(a) && inside.contains(b))
            .map(|(_, e)| *e)
            .collect();
        let name = if kinds.contains(&Edge::Rw) {
            "G2"
        } else if kinds.contains(&Edge::Wr) {
            "G1c"
        } else {
            "G0"
        };
        out.push(format!("{name}: a dependency cycle among txns {comp:?} (edges {kinds:?})"));
    }
    out
}

/// Tarjan's strongly connected components, iteratively.
fn tarjan(adj: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = adj.len();
    let (mut index, mut low, mut on) = (vec![usize::MAX; n], vec![0; n], vec![false; n]);
    let (mut stack, mut comps, mut next) = (Vec::new(), Vec::new(), 0);
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        let mut work = vec![(root, 0usize)];
        while let Some(top) = work.len().checked_sub(1) {
            let (v, i) = work[top];
            if i == 0 && index[v] == usize::MAX {
                index[v] = next;
                low[v] = next;
                next += 1;
                stack.push(v);
                on[v] = true;
            }
            if let Some(&w) = adj[v].get(i) {
                work[top].1 += 1;
                if index[w] == usize::MAX {
                    work.push((w, 0));
                } else if on[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut comp = Vec::new();
                while let Some(w) = stack.pop() {
                    on[w] = false;
                    comp.push(w);
                    if w == v {
                        break;
                    }
                }
                comps.push(comp);
            }
        }
    }
    comps
}
