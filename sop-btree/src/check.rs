//! `Database::check`: the structural invariants of every store, plus
//! handle and blob reachability (no orphan blob, no dangling handle).

use std::collections::HashSet;

use bytes::Bytes;
use sop_core::{Error, LogicalId, Node, PhysicalId, Result, StoreInfo};

use crate::inner::DbInner;
use crate::tree::fill;
use crate::walk::{WalkedNode, walk, walk_from};

/// What [`crate::Database::check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Stores checked.
    pub stores: usize,
    /// Nodes reached from the stores' roots.
    pub nodes: usize,
    /// Items in all stores.
    pub items: u64,
    /// Blobs in the blob store.
    pub blobs: usize,
    /// Every problem found, one line each; empty when all is well.
    pub problems: Vec<String>,
}

impl CheckReport {
    /// Whether no problem was found.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

fn keys_of(node: &Node) -> Vec<Bytes> {
    match node {
        Node::Leaf { items } => items.iter().map(|i| i.key.clone()).collect(),
        Node::Internal { keys, .. } => keys.clone(),
    }
}

fn check_node(info: &StoreInfo, n: &WalkedNode, problems: &mut Vec<String>) {
    let name = &info.name;
    let keys = keys_of(&n.node);
    if !keys.windows(2).all(|w| w[0] < w[1]) {
        problems.push(format!("store {name:?}: node {} keys are not strictly sorted", n.id));
    }
    let in_range =
        |k: &Bytes| n.lo.as_ref().is_none_or(|lo| k >= lo) && n.hi.as_ref().is_none_or(|hi| k < hi);
    if !keys.iter().all(in_range) {
        problems.push(format!("store {name:?}: node {} has keys outside its parent's separators", n.id));
    }
    let slot = info.options.slot_length as usize;
    let f = fill(&n.node);
    let is_root = n.id == info.root;
    let min = crate::tree::min_fill(slot);
    if f > slot || (!is_root && f < min) {
        problems.push(format!("store {name:?}: node {} holds {f} entries, outside {min}..={slot}", n.id));
    }
    if let Node::Internal { keys, children } = n.node.as_ref()
        && (children.len() != keys.len() + 1 || (is_root && keys.is_empty()))
    {
        problems.push(format!(
            "store {name:?}: internal node {} has {} keys, {} children",
            n.id,
            keys.len(),
            children.len()
        ));
    }
}

/// The report of [`crate::Database::check`].
pub(crate) async fn check(db: &DbInner) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let mut reached: HashSet<LogicalId> = HashSet::new();
    let mut referenced: HashSet<PhysicalId> = HashSet::new();
    // Intents first (see `check_blobs`). A removed store's tree that a
    // committed intent still has to sweep is neither a leak nor damage.
    report.problems.extend(db.registry.damaged_intents().await?);
    let intents = db.registry.list_intents(u64::MAX).await?;
    let mut in_flight: HashSet<PhysicalId> = HashSet::new();
    for intent in &intents {
        in_flight.extend(intent.staged.iter().chain(&intent.obsolete).copied());
        for root in &intent.detached {
            let walked = walk_from(db, *root, "(removed store)").await?;
            if walked.incomplete {
                // A node of the tree could not be read (not for being
                // gone): what is under it would look unreferenced.
                let why = walked.problems.join("; ");
                return Err(Error::io(
                    "checking a removed store's tree",
                    std::io::Error::other(format!("part of the tree under {root} could not be read: {why}")),
                ));
            }
            reached.extend(walked.nodes.iter().map(|n| n.id).chain(walked.unreadable.iter().map(|u| u.0)));
            in_flight.extend(walked.blobs);
        }
    }
    for info in db.registry.list_stores().await? {
        if db.registry.get_handles(&[info.root]).await?.first().copied().flatten().is_none() {
            // Half-removed (its tree detached, the record not yet gone):
            // recovery finishes it; its tree is a detached one above.
            continue;
        }
        let walked = walk(db, &info).await?;
        report.problems.extend(walked.problems);
        let leaf_depths: HashSet<usize> =
            walked.nodes.iter().filter(|n| n.node.is_leaf()).map(|n| n.depth).collect();
        if leaf_depths.len() > 1 {
            report.problems.push(format!("store {:?}: leaves at depths {leaf_depths:?}", info.name));
        }
        let mut items = 0u64;
        for n in &walked.nodes {
            check_node(&info, n, &mut report.problems);
            if let Node::Leaf { items: it } = n.node.as_ref() {
                items += it.len() as u64;
            }
            reached.insert(n.id);
        }
        if items != info.count {
            report
                .problems
                .push(format!("store {:?}: {items} items but count says {}", info.name, info.count));
        }
        report.items += items;
        report.nodes += walked.nodes.len();
        report.stores += 1;
        referenced.extend(walked.blobs);
    }
    for h in db.registry.list_handles().await? {
        if !reached.contains(&h.logical_id) {
            report.problems.push(format!("unreferenced node handle {}", h.logical_id));
        }
    }
    check_blobs(db, &referenced, &in_flight, &mut report).await?;
    Ok(report)
}

/// Blobs against what references them. The intents (`in_flight`) were
/// listed before the blobs: a clean-up running meanwhile deletes an
/// intent's blobs before the intent, so a blob listed is either still
/// named by an intent listed before it or already gone. (Blobs first
/// reported blobs deleted between the two listings as orphans.)
async fn check_blobs(
    db: &DbInner,
    referenced: &HashSet<PhysicalId>,
    in_flight: &HashSet<PhysicalId>,
    report: &mut CheckReport,
) -> Result<()> {
    let stored: HashSet<PhysicalId> = db.blobs.list().await?.into_iter().collect();
    report.blobs = stored.len();
    for id in stored.iter().filter(|id| !referenced.contains(id) && !in_flight.contains(id)) {
        report.problems.push(format!("orphan blob {id}"));
    }
    for id in referenced.iter().filter(|id| !stored.contains(id)) {
        report.problems.push(format!("referenced blob {id} is missing"));
    }
    Ok(())
}
