//! [`walk`]: every node of a store read straight from the registry, and
//! every blob it references (for `check` and store removal).

use std::sync::Arc;

use bytes::Bytes;
use sop_core::{LeafDelta, LogicalId, Node, PhysicalId, Result, StoreInfo};

use crate::handles::EMPTY_ROOT;
use crate::inner::DbInner;

/// One node reached by a walk.
#[derive(Debug, Clone)]
pub(crate) struct WalkedNode {
    pub(crate) id: LogicalId,
    pub(crate) version: u64,
    pub(crate) node: Arc<Node>,
    pub(crate) depth: usize,
    /// Keys in this node must lie in `[lo, hi)`.
    pub(crate) lo: Option<Bytes>,
    pub(crate) hi: Option<Bytes>,
    /// The node's own blob (`EMPTY_ROOT` for an empty root).
    pub(crate) physical: PhysicalId,
    /// The blobs it is read through besides its own: a delta's base and
    /// earlier links.
    pub(crate) parts: Vec<PhysicalId>,
    /// Its values' blobs.
    pub(crate) values: Vec<PhysicalId>,
}

/// Every node of a store (read straight from the registry) and every blob
/// it references.
#[derive(Debug, Default)]
pub(crate) struct Walk {
    pub(crate) nodes: Vec<WalkedNode>,
    pub(crate) blobs: Vec<PhysicalId>,
    pub(crate) problems: Vec<String>,
    /// Nodes whose handle exists but whose blob, or a blob it is read
    /// through, is gone: id, version, blob, and the delta base and links
    /// its blob still names (a sweep interrupted after deleting some).
    pub(crate) unreadable: Vec<(LogicalId, u64, PhysicalId, Vec<PhysicalId>)>,
    /// Whether a blob could not be read for another reason than being
    /// gone (the walk is incomplete: a sweep must not act on it).
    pub(crate) incomplete: bool,
}

/// The base and links a delta blob names, read from the blob alone (its
/// base or a link may be gone): nothing when the blob is gone too (it is
/// deleted after them) or is a full node; `None` when it cannot be read
/// or decoded for another reason (the walk is then incomplete).
async fn delta_parts(db: &DbInner, blob: PhysicalId) -> Option<Vec<PhysicalId>> {
    let bytes = match db.blobs.get(blob).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == sop_core::ErrorKind::NotFound => return Some(Vec::new()),
        Err(_) => return None,
    };
    if !LeafDelta::is_delta(&bytes) {
        return Some(Vec::new());
    }
    let delta = LeafDelta::decode(&bytes).ok()?;
    Some(std::iter::once(delta.base).chain(delta.chain).collect())
}

pub(crate) async fn walk(db: &DbInner, info: &StoreInfo) -> Result<Walk> {
    walk_from(db, info.root, &info.name).await
}

/// Every node under `root` (of the store called `name`, for messages).
pub(crate) async fn walk_from(db: &DbInner, root: LogicalId, name: &str) -> Result<Walk> {
    let mut out = Walk::default();
    let mut stack = vec![(root, 0usize, None::<Bytes>, None::<Bytes>)];
    while let Some((id, depth, lo, hi)) = stack.pop() {
        let Some(h) = db.registry.get_handles(&[id]).await?.into_iter().next().flatten() else {
            out.problems.push(format!("store {name:?}: dangling reference to node {id}"));
            continue;
        };
        let mut parts = Vec::new();
        let node = if h.physical_id == EMPTY_ROOT {
            Arc::new(Node::empty_leaf())
        } else {
            match db.cache.node_and_base(h.physical_id, &db.blobs).await {
                Ok(loaded) => {
                    out.blobs.push(h.physical_id);
                    parts.extend(loaded.base); // a delta's base leaf
                    parts.extend(loaded.chain); // and its earlier links
                    loaded.node
                }
                Err(e) => {
                    out.problems.push(format!("store {name:?}: node {id}: {e}"));
                    let parts = match e.kind() {
                        sop_core::ErrorKind::NotFound => delta_parts(db, h.physical_id).await,
                        _ => None,
                    };
                    match parts {
                        Some(parts) => {
                            // Still referenced (a sweep finishing them is
                            // under way), whatever of them is left.
                            out.blobs.push(h.physical_id);
                            out.blobs.extend(parts.iter().copied());
                            out.unreadable.push((id, h.version, h.physical_id, parts));
                        }
                        None => out.incomplete = true,
                    }
                    continue;
                }
            }
        };
        let values: Vec<PhysicalId> = node.value_blobs().collect();
        out.blobs.extend(parts.iter().chain(&values).copied());
        if let Node::Internal { keys, children } = node.as_ref() {
            for (i, child) in children.iter().enumerate() {
                let clo = if i == 0 { lo.clone() } else { keys.get(i - 1).cloned() };
                let chi = keys.get(i).cloned().or_else(|| hi.clone());
                stack.push((*child, depth + 1, clo, chi));
            }
        }
        out.nodes.push(WalkedNode {
            id,
            version: h.version,
            node,
            depth,
            lo,
            hi,
            physical: h.physical_id,
            parts,
            values,
        });
    }
    Ok(out)
}
