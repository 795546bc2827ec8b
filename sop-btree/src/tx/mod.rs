//! [`Transaction`]: optimistic, serializable, spanning any number of stores.

mod commit;
mod conflict;
mod detach;
pub(crate) mod log;
mod overlay;
pub(crate) mod state;
pub(crate) mod write;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use sop_core::{Result, TxId};

use crate::inner::DbInner;
use detach::RunToEnd;
use state::TxState;

/// What a successful commit did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitInfo {
    /// Node-level clashes resolved by swarm merge during this commit.
    pub merges: u32,
}

/// A transaction. Cheap to clone (clones share it); store handles from
/// `Transaction::store` and `Transaction::bytes_store` act on it.
///
/// Reads record the versions they saw; [`Transaction::commit`] validates
/// them and publishes the writes atomically, or fails with `Conflict`.
/// Dropping the last clone without committing rolls back (nothing was
/// published, so nothing needs undoing).
#[derive(Debug, Clone)]
pub struct Transaction {
    pub(crate) shared: Arc<TxShared>,
}

#[derive(Debug)]
pub(crate) struct TxShared {
    pub(crate) db: Arc<DbInner>,
    pub(crate) id: TxId,
    /// Whether the transaction may write (fixed at begin).
    pub(crate) writable: bool,
    pub(crate) state: tokio::sync::Mutex<TxState>,
    /// The state's `over` flag, for checks without its lock.
    over: Arc<std::sync::atomic::AtomicBool>,
}

impl TxShared {
    /// The state, locked. Uncontended (a transaction's calls are usually
    /// sequential), it is taken without building the lock's future, a
    /// twentieth of a warm point read's instructions; a queued waiter is
    /// never overtaken (tokio hands a released lock to the queue first).
    /// Tokio's cooperative budget is spent as the lock's future spends it:
    /// without, a task whose reads all find their nodes in memory never
    /// yielded, and starved the other tasks of its worker (readers looping
    /// on warm scans kept the writers they waited for from ever running,
    /// `tests/isolation.rs`).
    pub(crate) async fn lock(&self) -> tokio::sync::MutexGuard<'_, TxState> {
        tokio::task::consume_budget().await;
        match self.state.try_lock() {
            Ok(st) => st,
            Err(_) => self.state.lock().await,
        }
    }
}

impl Drop for TxShared {
    fn drop(&mut self) {
        if !self.state.get_mut().finished {
            self.db.counters.rollbacks.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Transaction {
    pub(crate) fn new(db: Arc<DbInner>, writable: bool) -> Self {
        let timeout = db.config.tx_timeout;
        Self::with_timeout(db, writable, timeout)
    }

    pub(crate) fn with_timeout(db: Arc<DbInner>, writable: bool, timeout: std::time::Duration) -> Self {
        // The place in the low-water mark outlives the deadline by one more
        // time limit: a margin for a read that began just before it.
        let expiry = std::time::Instant::now() + timeout.saturating_mul(2);
        let state = TxState::new(writable, timeout, db.epochs.begin(expiry), db.clock.now());
        let (id, over) = (state.id, state.over.clone());
        let state = tokio::sync::Mutex::new(state);
        Self { shared: Arc::new(TxShared { db, id, writable, state, over }) }
    }

    /// This transaction's id (also the item version of what it writes).
    #[must_use]
    pub fn id(&self) -> TxId {
        self.shared.id
    }

    /// Validates and publishes. A node-level clash whose item-level reads
    /// still hold is merged (the writes are replayed on the fresh nodes)
    /// without re-running application code.
    ///
    /// A write transaction's protocol finishes (published, or undone) even
    /// when the future returned here is dropped, as when a client
    /// disconnects mid-commit: it runs in the caller's task while that
    /// polls it, and a drop hands what is left to a task of its own
    /// (`RunToEnd`). Nothing is left half-done.
    ///
    /// # Errors
    /// `Conflict` when an item this transaction read changed (retry the
    /// transaction); `Timeout` past the transaction's deadline; backend
    /// errors (`Io`, `Indeterminate`). The transaction is over either way.
    pub async fn commit(&self) -> Result<CommitInfo> {
        if !self.shared.writable {
            // A read-only commit stages nothing: dropped half-way it leaves
            // nothing behind, so it needs no task of its own. Most are
            // decided at once; the rest are boxed, so that this future stays
            // small (held inline, the full commit made it 3 KB, and every
            // future awaiting a commit moved that much with it).
            if let Some(outcome) = self.shared.commit_quiet() {
                return outcome;
            }
            return Box::pin(self.shared.commit()).await;
        }
        let shared = self.shared.clone();
        RunToEnd::new(async move { shared.commit().await }).await
    }

    /// Checks, without publishing anything, that everything this
    /// transaction read is still current, then ends it (as a rollback).
    ///
    /// # Errors
    /// `Conflict` when something it read has changed since.
    pub(crate) async fn validate(&self) -> Result<()> {
        let db = &self.shared.db;
        let mut st = self.shared.lock().await;
        let outcome = if st.finished { Ok(()) } else { conflict::validate(db, &st).await };
        if !st.finished {
            db.counters.rollbacks.fetch_add(1, Ordering::Relaxed);
        }
        st.finish();
        outcome
    }

    /// Ends the transaction without publishing anything.
    pub async fn rollback(&self) {
        let mut st = self.shared.lock().await;
        if !st.finished {
            st.finish();
            self.shared.db.counters.rollbacks.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl TxShared {
    /// Fails once the transaction is over (committed, rolled back or
    /// failed): one atomic load, no clock read.
    pub(crate) fn check_open(&self) -> sop_core::Result<()> {
        if self.over.load(Ordering::Acquire) {
            return Err(sop_core::Error::Closed(format!("transaction {}", self.id)));
        }
        Ok(())
    }

    /// A read-only commit decided without waiting: the state is not
    /// locked, the transaction is live and nothing was published since it
    /// began (`commit::quiet`). `None`: the full commit decides.
    fn commit_quiet(&self) -> Option<Result<CommitInfo>> {
        let mut st = self.state.try_lock().ok()?;
        if st.check_live().is_err() || !commit::quiet(&self.db, &st) {
            return None;
        }
        Some(self.conclude(&mut st, Ok(CommitInfo::default())))
    }

    async fn commit(&self) -> Result<CommitInfo> {
        let mut st = self.lock().await;
        let outcome = match st.check_live() {
            Ok(()) => commit::commit(&self.db, &mut st).await,
            Err(e) => Err(e),
        };
        self.conclude(&mut st, outcome)
    }

    /// Ends the transaction with the commit's `outcome`, counted.
    fn conclude(&self, st: &mut TxState, outcome: Result<CommitInfo>) -> Result<CommitInfo> {
        st.finish();
        let counters = &self.db.counters;
        match &outcome {
            Ok(info) => {
                counters.commits.fetch_add(1, Ordering::Relaxed);
                counters.merges.fetch_add(u64::from(info.merges), Ordering::Relaxed);
            }
            Err(e) if e.is_conflict() => {
                counters.conflicts.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {}
        }
        outcome
    }
}
