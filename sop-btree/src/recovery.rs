//! Recovery of crashed commits, deferred deletion of obsolete blobs, and
//! store removal.

use std::sync::Arc;

use sop_core::{Error, HandleWrite, Intent, IntentState, PublishRequest, Result, StoreInfo, TxId};

use crate::check::walk;
use crate::config::CommitStep;
use crate::db::{Database, DbInner};

impl Database {
    /// Finishes or undoes every abandoned intent, and finishes removing
    /// half-removed stores. With `exclusive` (no other process shares the
    /// backends) every intent is abandoned; otherwise only those older than
    /// the transaction timeout.
    ///
    /// Only the listings must succeed. Each intent and each store is
    /// finished on its own: one that fails (a flaky backend) is logged and
    /// left for the next recovery, since what it holds is garbage (blobs
    /// no handle references) or an unfinished removal, never data a
    /// transaction needs. Returns how many were left.
    pub(crate) async fn recover(&self, exclusive: bool) -> Result<usize> {
        let db = &self.inner;
        let cutoff = if exclusive {
            u64::MAX
        } else {
            sop_core::now_millis().saturating_sub(db.config.tx_timeout.as_millis() as u64)
        };
        let mut left = 0;
        for intent in db.registry.list_intents(cutoff).await? {
            if let Err(e) = finish_intent(db, &intent).await {
                tracing::warn!(tx = %intent.tx_id, error = %e, "recovering an intent failed; left for the next recovery");
                left += 1;
            }
        }
        for store in db.registry.list_stores().await? {
            if let Err(e) = finish_removal(db, &store).await {
                tracing::warn!(store = %store.name, error = %e, "finishing a store's removal failed; left for the next recovery");
                left += 1;
            }
        }
        Ok(left)
    }
}

/// Removes the record of a store whose root handle is gone (its removal
/// was interrupted after the contents went).
async fn finish_removal(db: &DbInner, store: &StoreInfo) -> Result<()> {
    if db.registry.get_handles(&[store.root]).await?.first().copied().flatten().is_none() {
        tracing::warn!(store = %store.name, "finishing the removal of a half-removed store");
        db.registry.remove_store(&store.name).await?;
    }
    Ok(())
}

/// On shared backends, recovers abandoned intents of crashed peers every
/// `tx_timeout` (at least every second) while the database is open.
pub(crate) fn spawn_periodic(db: &Arc<DbInner>) {
    let weak = Arc::downgrade(db);
    let every = db.config.tx_timeout.max(std::time::Duration::from_secs(1));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(db) = weak.upgrade() else { return };
            if let Err(e) = (Database { inner: db }).recover(false).await {
                tracing::warn!(error = %e, "periodic recovery failed; retrying later");
            }
        }
    });
}

/// Deletes what an intent left behind, then the intent. A pending intent
/// is first aborted atomically, so that its commit, should it still be
/// running somewhere, can no longer publish.
async fn finish_intent(db: &DbInner, listed: &Intent) -> Result<()> {
    let fresh;
    let intent = match listed.state {
        IntentState::Pending => match db.registry.abort_intent(listed.tx_id).await? {
            None => return Ok(()),
            Some(IntentState::Committed) => {
                // Its publish won the race: finish it as committed.
                fresh = db.registry.get_intent(listed.tx_id).await?;
                match &fresh {
                    Some(i) => i,
                    None => return Ok(()),
                }
            }
            Some(_) => listed,
        },
        _ => listed,
    };
    let garbage = match intent.state {
        IntentState::Committed => &intent.obsolete,
        IntentState::Pending | IntentState::Aborted => &intent.staged,
    };
    tracing::info!(tx = %intent.tx_id, state = ?intent.state, blobs = garbage.len(), "recovering intent");
    db.blobs.delete_many(garbage).await?;
    db.registry.remove_intent(intent.tx_id).await
}

/// After a publish: deletes the obsolete blobs after the grace period
/// (inline when it is zero), then removes the intent.
pub(crate) async fn schedule_cleanup(db: &Arc<DbInner>, intent: Intent) -> Result<()> {
    if db.config.gc_grace.is_zero() {
        return cleanup(db, &intent).await;
    }
    // Registered before the commit returns, so a later flush waits for it;
    // dropped when the task ends, panics or is dropped with the runtime.
    let deferred = db.gc.register();
    let db2 = db.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = tokio::time::sleep(db2.config.gc_grace) => {}
            () = deferred.flush_requested() => {}
        }
        if let Err(e) = cleanup(&db2, &intent).await {
            tracing::warn!(tx = %intent.tx_id, error = %e, "deferred cleanup failed; recovery will finish it");
        }
        // Let go of the database before counting out, so that once a flush
        // (or `close`) returns no task holds it (nor its directory's lock).
        drop(db2);
        drop(deferred);
    });
    Ok(())
}

/// Deletes a committed intent's obsolete blobs, then the intent. The
/// transaction is already committed, so a backend failure here is logged,
/// never returned (the caller must not think the commit failed): the intent
/// stays and recovery finishes the cleanup. Only a failpoint's simulated
/// crash is returned.
async fn cleanup(db: &DbInner, intent: &Intent) -> Result<()> {
    for id in &intent.obsolete {
        db.cache.remove(*id);
    }
    if let Err(e) = db.blobs.delete_many(&intent.obsolete).await {
        tracing::warn!(tx = %intent.tx_id, error = %e, "deleting obsolete blobs failed; recovery will finish it");
        return Ok(());
    }
    db.failpoint(CommitStep::ObsoleteDeleted)?;
    if let Err(e) = db.registry.remove_intent(intent.tx_id).await {
        tracing::warn!(tx = %intent.tx_id, error = %e, "removing an intent failed; recovery will finish it");
    }
    Ok(())
}

/// Removes every node handle of a store and its blobs, through a committed
/// intent so that a crash midway is finished by recovery.
pub(crate) async fn remove_store_contents(db: &DbInner, info: &StoreInfo) -> Result<()> {
    let walked = walk(db, info).await?;
    let tx_id = TxId::new();
    let mut intent = Intent::pending(tx_id, Vec::new());
    db.registry.put_intent(&intent).await?;
    intent.state = IntentState::Committed;
    intent.obsolete = walked.blobs.clone();
    let writes = walked.nodes.iter().map(|n| HandleWrite::Remove { id: n.id, expected: n.version }).collect();
    let request = PublishRequest { tx_id, writes, intent: Some(intent.clone()), ..PublishRequest::default() };
    if let Err(e) = db.registry.publish(&request).await {
        if e.is_conflict() {
            // Nothing was published: the intent is ours to drop.
            db.registry.remove_intent(tx_id).await?;
        }
        return Err(match e {
            Error::Conflict { .. } => {
                Error::ItemConflict(format!("store {:?} changed while being removed", info.name))
            }
            other => other,
        });
    }
    for n in &walked.nodes {
        db.handles.forget(n.id);
    }
    db.blobs.delete_many(&intent.obsolete).await?;
    db.registry.remove_intent(tx_id).await
}
