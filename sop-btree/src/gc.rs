//! Garbage collection of obsolete blobs: after a publish (deferred by the
//! grace period, parked behind older live transactions), and for recovery.

use std::sync::Arc;
use std::time::Duration;

use sop_core::{Intent, Result};

use crate::claims::Claim;
use crate::epoch::Job;
use crate::failpoint::CommitStep;
use crate::inner::DbInner;

/// After a publish: deletes the obsolete blobs, then removes the intent,
/// once all of these hold:
/// - `gc_grace` has passed (inline when it is zero; `flush_gc` skips it);
/// - on shared backends, `tx_timeout` has passed, since a transaction of
///   another process may still read them (no flush skips this);
/// - no transaction of this process that began before the publish is live
///   (`crate::epoch`): otherwise the deletion is parked until the last one
///   ends, and a flush does not wait for it.
pub(crate) async fn schedule_cleanup(db: &Arc<DbInner>, intent: Intent, claim: Claim) -> Result<()> {
    let mark = db.epochs.mark();
    let floor = if db.exclusive { Duration::ZERO } else { db.config.tx_timeout };
    if db.config.gc_grace.is_zero() && floor.is_zero() {
        return match park(db, mark, intent, claim) {
            Some((intent, _claim)) => cleanup(db, &intent).await,
            None => Ok(()),
        };
    }
    // Registered before the commit returns, so a later flush waits for it;
    // dropped when the task ends, panics or is dropped with the runtime.
    let deferred = db.gc.register();
    let weak = Arc::downgrade(db);
    let (grace, not_before) = (db.config.gc_grace, tokio::time::Instant::now() + floor);
    tokio::spawn(async move {
        tokio::select! {
            () = tokio::time::sleep(grace) => {}
            () = deferred.flush_requested() => {}
        }
        if tokio::time::Instant::now() < not_before {
            drop(deferred); // no flush waits out another process's transactions
            tokio::time::sleep_until(not_before).await;
        }
        // Hold the database only to run or park the deletion, and let go of
        // it before counting out, so that once a flush (or `close`) returns
        // no task holds it (nor its directory's lock).
        let Some(db) = weak.upgrade() else { return };
        if let Some((intent, _claim)) = park(&db, mark, intent, claim)
            && let Err(e) = cleanup(&db, &intent).await
        {
            tracing::warn!(tx = %intent.tx_id, error = %e, "deferred cleanup failed; recovery will finish it");
        }
        drop(db);
    });
    Ok(())
}

/// Parks the deletion until `mark` is clear, or hands it back to run now.
pub(crate) fn park(db: &Arc<DbInner>, mark: u64, intent: Intent, claim: Claim) -> Option<(Intent, Claim)> {
    let slot = Arc::new(std::sync::Mutex::new(Some((intent, claim))));
    let (weak, parked) = (Arc::downgrade(db), slot.clone());
    let job: Job = Box::new(move || {
        let taken = parked.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        let (Some(db), Some((intent, claim))) = (weak.upgrade(), taken) else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        // Counted in before the transaction whose end runs this returns.
        let deferred = db.gc.register();
        runtime.spawn(async move {
            if let Err(e) = cleanup(&db, &intent).await {
                tracing::warn!(tx = %intent.tx_id, error = %e, "deferred cleanup failed; recovery will finish it");
            }
            drop((db, claim));
            drop(deferred);
        });
    });
    match db.epochs.park_unless_clear(mark, job) {
        Ok(()) => None,
        Err(_) => slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take(),
    }
}

/// Drops a committed intent's obsolete blobs from the node cache: at
/// publish (the cache keeps live nodes), and again before they are deleted
/// (a transaction still reading one may have loaded it back meanwhile).
pub(crate) fn evict(db: &DbInner, intent: &Intent) {
    for id in &intent.obsolete {
        db.cache.remove(*id);
    }
}

/// Deletes a committed intent's obsolete blobs, then the intent. The
/// transaction is already committed, so a backend failure here is logged,
/// never returned (the caller must not think the commit failed): the intent
/// stays and recovery finishes the cleanup. Only a failpoint's simulated
/// crash is returned.
async fn cleanup(db: &DbInner, intent: &Intent) -> Result<()> {
    evict(db, intent);
    if let Err(e) = crate::removal::sweep(db, &intent.detached).await {
        tracing::warn!(tx = %intent.tx_id, error = %e, "sweeping a removed store failed; recovery will finish it");
        return Ok(());
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

/// Deletes a committed intent's obsolete blobs, then the intent; errors
/// are returned (recovery counts what it left).
pub(crate) async fn purge(db: &DbInner, intent: &Intent) -> Result<()> {
    evict(db, intent);
    crate::removal::sweep(db, &intent.detached).await?;
    db.blobs.delete_many(&intent.obsolete).await?;
    db.registry.remove_intent(intent.tx_id).await
}
