//! Store removal in pieces that fit any registry: one small publish
//! detaches the store's tree, and clean-up sweeps it a few nodes at a time.
//!
//! 1. **Detach** (one atomic publish, three records whatever the store's
//!    size): the root's handle is removed (at the version read: a
//!    concurrent commit to the store conflicts, as any commit that read the
//!    root does afterwards) and a fresh id takes over the root's blob; the
//!    committed intent names that id in `Intent::detached`. The store is
//!    gone from here on (its metadata follows; a store whose root handle
//!    is gone is finished off by recovery).
//! 2. **Sweep** (`sweep`, run by the intent's clean-up once no
//!    transaction that may still read the tree is live, or by recovery):
//!    the detached tree is walked and removed one depth at a time, deepest
//!    first, [`SWEEP_CHUNK`] nodes per publish (a chunk never mixes
//!    depths), each chunk's blobs deleted before its handles (values, then
//!    delta bases and links, then the node's own blob, each step its own
//!    deletion, so a node whose blob is left still names what is left of
//!    the rest: its blob is read alone for them when a part is gone). A crash between the two leaves handles
//!    whose blobs are gone, but whose children are all removed already
//!    (their depth went first); the next sweep (the intent is still
//!    there) removes those first. A walk that cannot read a blob for another
//!    reason than its being gone stops the sweep (retried later): it must
//!    not lose a subtree. Then the intent goes.
//!
//! The old single publish removed every handle at once: on etcd a store of
//! more than ~100 nodes could not be removed at all (128 operations per
//! transaction, and an intent naming every blob past 1.5 MiB).

use std::sync::Arc;

use sop_core::{
    Error, HandleWrite, Intent, IntentState, LogicalId, PhysicalId, PublishRequest, Result, StoreInfo,
    Subject, TxId,
};

use crate::gc::schedule_cleanup;
use crate::inner::DbInner;
use crate::walk::walk_from;

/// Node handles removed per publish while sweeping: within etcd's default
/// 128 operations per transaction (a removal is one compare and one
/// delete).
pub(crate) const SWEEP_CHUNK: usize = 48;

/// Detaches a store's tree (step 1 above) and schedules its sweep.
///
/// # Errors
/// `Conflict` (the store changed while being removed); registry errors.
pub(crate) async fn remove_store_contents(db: &Arc<DbInner>, info: &StoreInfo) -> Result<()> {
    let changed = || Error::changed(Subject::Store(info.name.clone()), "changed while being removed");
    let Some(root) = db.registry.get_handles(&[info.root]).await?.into_iter().next().flatten() else {
        // Detached already (an interrupted removal, which recovery would
        // finish): what is left is the record, which the caller removes.
        return Ok(());
    };
    let tx_id = TxId::new();
    let claim = db.claim(tx_id);
    let mut intent = Intent::pending(tx_id, Vec::new());
    db.registry.put_intent(&intent).await?;
    let detached = LogicalId::new();
    intent.state = IntentState::Committed;
    intent.detached = vec![detached];
    let writes = vec![
        HandleWrite::Remove { id: info.root, expected: root.version },
        HandleWrite::Insert { id: detached, physical_id: root.physical_id },
    ];
    let request = PublishRequest { tx_id, writes, intent: Some(intent.clone()), ..PublishRequest::default() };
    if let Err(e) = db.publish(&request).await {
        if e.is_conflict() {
            // Nothing was published: the intent is ours to drop.
            db.registry.remove_intent(tx_id).await?;
            return Err(changed());
        }
        return Err(e);
    }
    // A transaction that read the store before may still read its blobs:
    // the sweep waits for it like any clean-up.
    schedule_cleanup(db, intent, claim).await
}

/// Removes every node under each of `roots` (step 2 above): blobs first,
/// then handles, children before parents. Idempotent: what an earlier,
/// interrupted sweep removed is skipped.
///
/// # Errors
/// Registry and blob store errors; a `Conflict` when two processes sweep
/// one tree at once (the next sweep finishes it).
pub(crate) async fn sweep(db: &DbInner, roots: &[LogicalId]) -> Result<()> {
    for &root in roots {
        let walked = walk_from(db, root, "(removed store)").await?;
        if walked.incomplete {
            return Err(Error::io(
                "sweeping a removed store",
                std::io::Error::other(format!(
                    "part of the tree under {root} could not be read; retried later"
                )),
            ));
        }
        // Nodes whose blob (or a blob they are read through) an
        // interrupted sweep deleted have no children left and no values
        // (deleted first): they go first, with what is left of their
        // delta's base and links. Then depth by depth, deepest first, so
        // that a node goes only after all its children went.
        let gone = walked.unreadable.into_iter().map(|(id, version, own, parts)| Doomed {
            id,
            version,
            own,
            parts,
            values: Vec::new(),
        });
        remove_chunks(db, gone.collect()).await?;
        let mut nodes = walked.nodes;
        nodes.sort_by_key(|n| std::cmp::Reverse(n.depth));
        for level in nodes.chunk_by(|a, b| a.depth == b.depth) {
            let level = level.iter().map(|n| Doomed {
                id: n.id,
                version: n.version,
                own: n.physical,
                parts: n.parts.clone(),
                values: n.values.clone(),
            });
            remove_chunks(db, level.collect()).await?;
        }
    }
    Ok(())
}

/// A node a sweep removes: its handle, its own blob, the blobs it is
/// read through (a delta's base and links) and its values' blobs.
struct Doomed {
    id: LogicalId,
    version: u64,
    own: PhysicalId,
    parts: Vec<PhysicalId>,
    values: Vec<PhysicalId>,
}

/// Removes `nodes`, [`SWEEP_CHUNK`] at a time: their values, then the
/// blobs they are read through, then their own blobs, then the handles.
/// Each step is its own deletion, so a sweep cut anywhere (a deletion of
/// several blobs is not atomic on object storage) leaves every node
/// either readable with all it names, or unreadable with no values left
/// and its own blob naming what is left of the rest.
async fn remove_chunks(db: &DbInner, nodes: Vec<Doomed>) -> Result<()> {
    for chunk in nodes.chunks(SWEEP_CHUNK) {
        let values: Vec<PhysicalId> = chunk.iter().flat_map(|n| n.values.iter().copied()).collect();
        let parts: Vec<PhysicalId> = chunk.iter().flat_map(|n| n.parts.iter().copied()).collect();
        let own: Vec<PhysicalId> =
            chunk.iter().map(|n| n.own).filter(|b| *b != crate::handles::EMPTY_ROOT).collect();
        for b in values.iter().chain(&parts).chain(&own) {
            db.cache.remove(*b);
        }
        for step in [&values, &parts, &own] {
            if !step.is_empty() {
                db.blobs.delete_many(step).await?;
            }
        }
        let writes = chunk.iter().map(|n| HandleWrite::Remove { id: n.id, expected: n.version }).collect();
        db.publish(&PublishRequest { tx_id: TxId::new(), writes, ..Default::default() }).await?;
    }
    Ok(())
}
