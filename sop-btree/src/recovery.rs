//! Recovery of crashed commits (at open and periodically), and of a
//! half-done store removal (`crate::removal`).

use std::sync::Arc;

use sop_core::{Intent, IntentState, Result, StoreInfo};

use crate::gc::{park, purge};
use crate::inner::DbInner;

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
pub(crate) async fn recover(db: &Arc<DbInner>, exclusive: bool) -> Result<usize> {
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
        if db.claims.holds(intent.tx_id) {
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

/// Removes the record of a store whose root handle is gone (its removal
/// was interrupted after the contents went, or is under way in some
/// process, which then finds the record gone: the same end).
async fn finish_removal(db: &DbInner, store: &StoreInfo) -> Result<()> {
    if db.registry.get_handles(&[store.root]).await?.first().copied().flatten().is_none() {
        tracing::info!(store = %store.name, "removing the record of a store whose tree is detached");
        db.bracketed(db.registry.remove_store_if_root(&store.name, store.root)).await?;
    }
    Ok(())
}

/// Every `tx_timeout` (at least every second) while the database is open,
/// forgets transactions long past their deadline that were never ended
/// (`Epochs::sweep`) and recovers abandoned intents: on shared backends those of crashed peers
/// older than `tx_timeout`; in exclusive mode every intent no commit or
/// clean-up of this process holds (a commit that failed mid-way). With
/// `now`, the first round runs at once.
pub(crate) fn spawn_periodic(db: &Arc<DbInner>, now: bool) {
    let weak = Arc::downgrade(db);
    let every = db.config.tx_timeout.max(std::time::Duration::from_secs(1));
    let exclusive = db.exclusive;
    tokio::spawn(async move {
        let mut first = now;
        loop {
            if !std::mem::take(&mut first) {
                tokio::time::sleep(every).await;
            }
            let Some(db) = weak.upgrade() else { return };
            db.epochs.sweep();
            if let Err(e) = recover(&db, exclusive).await {
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
