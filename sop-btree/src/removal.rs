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
//!    the detached tree is walked and removed children before parents,
//!    [`SWEEP_CHUNK`] nodes per publish, each chunk's blobs deleted before
//!    its handles. A crash between the two leaves handles whose blobs are
//!    gone, but whose children are already removed; the next sweep (the
//!    intent is still there) removes them. Then the intent goes.
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
    let root =
        db.registry.get_handles(&[info.root]).await?.into_iter().next().flatten().ok_or_else(changed)?;
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
        let mut walked = walk_from(db, root, "(removed store)").await?;
        // Deepest first: a node goes only after all its children went.
        walked.nodes.sort_by_key(|n| std::cmp::Reverse(n.depth));
        let mut doomed: Vec<(LogicalId, u64, Vec<PhysicalId>)> =
            walked.nodes.into_iter().map(|n| (n.id, n.version, n.blobs)).collect();
        // Nodes whose blob an interrupted sweep already deleted (their
        // children went before them) go last.
        doomed.extend(walked.unreadable.into_iter().map(|(id, version, blob)| (id, version, vec![blob])));
        for chunk in doomed.chunks(SWEEP_CHUNK) {
            let blobs: Vec<PhysicalId> = chunk
                .iter()
                .flat_map(|(_, _, b)| b.iter().copied())
                .filter(|b| *b != crate::handles::EMPTY_ROOT)
                .collect();
            for b in &blobs {
                db.cache.remove(*b);
            }
            db.blobs.delete_many(&blobs).await?;
            let writes =
                chunk.iter().map(|(id, version, _)| HandleWrite::Remove { id: *id, expected: *version });
            let request =
                PublishRequest { tx_id: TxId::new(), writes: writes.collect(), ..Default::default() };
            db.publish(&request).await?;
        }
    }
    Ok(())
}
