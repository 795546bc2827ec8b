//! Garbage collection of obsolete blobs: after a publish (deferred by the
//! grace period, parked behind older live transactions), and for recovery.

use std::sync::{Arc, Weak};
use std::time::Duration;

use sop_core::{Intent, Result};
use tokio::time::Instant;

use crate::claims::Claim;
use crate::collector::{BATCH_WINDOW, Collector, Due};
use crate::epoch::Job;
use crate::failpoint::CommitStep;
use crate::gc_gate::{Deferred, GcGate};
use crate::inner::DbInner;

/// After a publish: deletes the obsolete blobs, then removes the intent,
/// once all of these hold:
/// - `gc_grace` has passed (inline when it is zero; `flush_gc` skips it;
///   otherwise queued to the collector, `crate::collector`, which runs
///   the clean-ups due in batches);
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
            Some((intent, _claim)) => cleanup(db, std::slice::from_ref(&intent)).await,
            None => Ok(()),
        };
    }
    let now = Instant::now();
    let floor = if db.exclusive { now } else { now + floor };
    let due = (now + db.config.gc_grace, floor);
    // Registered before the commit returns, so a later flush waits for it.
    if db.collector.push(due, mark, (intent, claim), db.gc.register()) {
        tokio::spawn(collect(db.collector.clone(), Arc::downgrade(db), db.gc.clone()));
    }
    Ok(())
}

/// The collector's task: runs the queue in batches until it is empty
/// (`crate::collector`).
async fn collect(collector: Arc<Collector>, db: Weak<DbInner>, gate: GcGate) {
    while let Some((grace_ends, floor)) = collector.front() {
        if !gate.flushing() {
            tokio::select! {
                () = tokio::time::sleep_until(grace_ends + BATCH_WINDOW) => {}
                () = gate.flush_started() => {}
            }
        }
        if gate.flushing() {
            collector.release_under_floor(Instant::now());
        }
        tokio::time::sleep_until(floor).await;
        let batch = collector.take_due(Instant::now(), gate.flushing());
        if batch.is_empty() {
            continue; // a flush that ended before the grace did
        }
        // Hold the database only to run the batch, and let go of it before
        // counting the batch out: once a flush (or `close`) returns, no
        // task holds it (nor its directory's lock).
        let Some(strong) = db.upgrade() else { return };
        let counted = run_batch(&strong, batch).await;
        drop(strong);
        drop(counted);
    }
}

/// Runs a batch of the collector's clean-ups (`crate::collector`): parks
/// those that a live transaction of this process may still need, cleans
/// up the rest together; hands back their flush registrations, to be
/// dropped once the caller has let go of the database.
async fn run_batch(db: &Arc<DbInner>, batch: Vec<Due>) -> Vec<Option<Deferred>> {
    let mut ready = Vec::new();
    let mut claims = Vec::new();
    let mut deferred = Vec::with_capacity(batch.len());
    for due in batch {
        deferred.push(due.deferred);
        if let Some((intent, claim)) = park(db, due.mark, due.intent, due.claim) {
            ready.push(intent);
            claims.push(claim);
        }
    }
    if let Err(e) = cleanup(db, &ready).await {
        tracing::warn!(intents = ready.len(), error = %e, "deferred cleanup failed; recovery will finish it");
    }
    drop(claims);
    deferred
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
            if let Err(e) = cleanup(&db, std::slice::from_ref(&intent)).await {
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

/// Deletes committed intents' obsolete blobs (one deletion for all), then
/// the intents (one removal for all). The transactions are already
/// committed, so a backend failure here is logged, never returned (the
/// caller must not think a commit failed): the intents stay and recovery
/// finishes the clean-up. Only a failpoint's simulated crash is returned.
async fn cleanup(db: &DbInner, intents: &[Intent]) -> Result<()> {
    let mut swept = Vec::with_capacity(intents.len());
    for intent in intents {
        evict(db, intent);
        match crate::removal::sweep(db, &intent.detached).await {
            Ok(()) => swept.push(intent),
            Err(e) => {
                tracing::warn!(tx = %intent.tx_id, error = %e, "sweeping a removed store failed; recovery will finish it");
            }
        }
    }
    if swept.is_empty() {
        return Ok(());
    }
    let obsolete: Vec<_> = swept.iter().flat_map(|i| i.obsolete.iter().copied()).collect();
    if let Err(e) = db.blobs.delete_many(&obsolete).await {
        tracing::warn!(intents = swept.len(), error = %e, "deleting obsolete blobs failed; recovery will finish it");
        return Ok(());
    }
    db.failpoint(CommitStep::ObsoleteDeleted)?;
    let ids: Vec<_> = swept.iter().map(|i| i.tx_id).collect();
    if let Err(e) = db.registry.remove_intents(&ids).await {
        tracing::warn!(intents = ids.len(), error = %e, "removing intents failed; recovery will finish them");
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
