//! Recovery of crashed commits, deferred deletion of obsolete blobs, and
//! store removal.

use std::sync::Arc;
use std::time::Duration;

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
        for damaged in db.registry.damaged_intents().await? {
            tracing::error!(%damaged, "an intent record does not decode; skipped (`check` reports it)");
        }
        let mut left = 0;
        for intent in db.registry.list_intents(cutoff).await? {
            if db.owns(intent.tx_id) {
                continue; // a commit or clean-up of this process is on it
            }
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

/// An intent this process is working on: periodic recovery skips it until
/// the claim drops (the commit failed, or its clean-up is done).
#[derive(Debug)]
pub(crate) struct Claim {
    db: std::sync::Weak<DbInner>,
    tx_id: TxId,
}

impl Claim {
    pub(crate) fn new(db: &Arc<DbInner>, tx_id: TxId) -> Self {
        db.owned.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(tx_id);
        Self { db: Arc::downgrade(db), tx_id }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(db) = self.db.upgrade() {
            db.owned.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&self.tx_id);
        }
    }
}

impl DbInner {
    /// Whether a commit or clean-up of this process holds `tx_id`'s intent.
    fn owns(&self, tx_id: TxId) -> bool {
        self.owned.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(&tx_id)
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

/// Every `tx_timeout` (at least every second) while the database is open,
/// forgets transactions long past their deadline that were never ended
/// (`Epochs::sweep`) and recovers abandoned intents: on shared backends those of crashed peers
/// older than `tx_timeout`; in exclusive mode every intent no commit or
/// clean-up of this process holds (a commit that failed mid-way).
pub(crate) fn spawn_periodic(db: &Arc<DbInner>) {
    let weak = Arc::downgrade(db);
    let every = db.config.tx_timeout.max(std::time::Duration::from_secs(1));
    let exclusive = db.exclusive;
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(db) = weak.upgrade() else { return };
            db.epochs.sweep();
            if let Err(e) = (Database { inner: db }).recover(exclusive).await {
                tracing::warn!(error = %e, "periodic recovery failed; retrying later");
            }
        }
    });
}

/// Deletes what an intent left behind, then the intent. A pending intent
/// is first aborted atomically, so that its commit, should it still be
/// running somewhere, can no longer publish. A committed intent's obsolete
/// blobs may still be read: they wait for this process's transactions that
/// began before now (`crate::epoch`), and on shared backends are left
/// alone until the intent (stamped at publish) is `2 × tx_timeout` old, so
/// that no live transaction of any process can still reach them.
async fn finish_intent(db: &Arc<DbInner>, listed: &Intent) -> Result<()> {
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
    if intent.state == IntentState::Committed {
        let young = sop_core::now_millis().saturating_sub(2 * db.config.tx_timeout.as_millis() as u64);
        if !db.exclusive && intent.created_at_ms > young {
            return Ok(()); // a transaction of another process may still read its blobs
        }
        tracing::info!(tx = %intent.tx_id, blobs = intent.obsolete.len(), "recovering a committed intent");
        let claim = db.claim(intent.tx_id);
        return match park(db, db.epochs.mark(), intent.clone(), claim) {
            Some((intent, _claim)) => purge(db, &intent).await,
            None => Ok(()),
        };
    }
    tracing::info!(tx = %intent.tx_id, state = ?intent.state, blobs = intent.staged.len(), "recovering intent");
    db.blobs.delete_many(&intent.staged).await?;
    db.registry.remove_intent(intent.tx_id).await
}

/// Deletes a committed intent's obsolete blobs, then the intent; errors
/// are returned (recovery counts what it left).
async fn purge(db: &DbInner, intent: &Intent) -> Result<()> {
    for id in &intent.obsolete {
        db.cache.remove(*id);
    }
    db.blobs.delete_many(&intent.obsolete).await?;
    db.registry.remove_intent(intent.tx_id).await
}

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
fn park(db: &Arc<DbInner>, mark: u64, intent: Intent, claim: Claim) -> Option<(Intent, Claim)> {
    let slot = Arc::new(std::sync::Mutex::new(Some((intent, claim))));
    let (weak, parked) = (Arc::downgrade(db), slot.clone());
    let job: crate::epoch::Job = Box::new(move || {
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
pub(crate) async fn remove_store_contents(db: &Arc<DbInner>, info: &StoreInfo) -> Result<()> {
    let walked = walk(db, info).await?;
    let tx_id = TxId::new();
    let claim = db.claim(tx_id);
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
    // A transaction that read the store before may still read its blobs.
    schedule_cleanup(db, intent, claim).await
}
