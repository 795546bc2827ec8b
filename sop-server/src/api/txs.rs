//! [`TxTable`]: the server's open transactions, by id, with their deadlines.
//!
//! A transaction lives until it is committed, rolled back, or its timeout
//! (counted from `POST /v1/tx`) passes; the reaper then rolls it back and
//! remembers its id, so that later requests get `410 expired` rather than
//! `404`.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use sop_btree::{Database, Transaction};

use super::error::{ApiError, ApiResult, ErrorCode};
use crate::wire::Mode;

/// How many expired ids are remembered for `410` answers.
const EXPIRED_MEMORY: usize = 100_000;

/// One open transaction.
#[derive(Debug)]
pub(crate) struct OpenTx {
    pub(crate) tx: Transaction,
    pub(crate) mode: Mode,
    deadline: Instant,
}

impl OpenTx {
    /// Fails with `wrong_mode` unless this is a write transaction.
    pub(crate) fn check_writable(&self) -> ApiResult<()> {
        match self.mode {
            Mode::Write => Ok(()),
            Mode::Read => {
                Err(ApiError::new(ErrorCode::WrongMode, format!("transaction {} is read-only", self.tx.id())))
            }
        }
    }
}

/// Limits on transactions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TxLimits {
    /// Timeout when `timeout_ms` is not given.
    pub(crate) default_timeout: Duration,
    /// The largest `timeout_ms` accepted.
    pub(crate) max_timeout: Duration,
    /// Open transactions at most; more get `429`.
    pub(crate) max_open: usize,
}

/// The open transactions.
#[derive(Debug)]
pub(crate) struct TxTable {
    open: DashMap<String, Arc<OpenTx>>,
    expired: Mutex<(VecDeque<String>, HashSet<String>)>,
    limits: TxLimits,
}

impl TxTable {
    pub(crate) fn new(limits: TxLimits) -> Self {
        Self { open: DashMap::new(), expired: Mutex::default(), limits }
    }

    /// The limits this table enforces.
    pub(crate) fn limits(&self) -> TxLimits {
        self.limits
    }

    /// Open transactions now.
    pub(crate) fn len(&self) -> usize {
        self.open.len()
    }

    /// Starts a transaction and returns its id.
    pub(crate) async fn begin(
        &self,
        db: &Database,
        mode: Mode,
        timeout_ms: Option<u64>,
    ) -> ApiResult<String> {
        let timeout = match timeout_ms {
            None => self.limits.default_timeout,
            Some(0) => return Err(ApiError::invalid("timeout_ms must be at least 1")),
            Some(ms) => Duration::from_millis(ms),
        };
        if timeout > self.limits.max_timeout {
            return Err(ApiError::invalid(format!(
                "timeout_ms {} exceeds the limit of {}",
                timeout.as_millis(),
                self.limits.max_timeout.as_millis()
            )));
        }
        if self.open.len() >= self.limits.max_open {
            return Err(ApiError::new(
                ErrorCode::TooManyTransactions,
                format!("{} transactions are open; commit or roll some back", self.limits.max_open),
            ));
        }
        let tx = db.begin_with_timeout(mode == Mode::Write, timeout).await?;
        let id = tx.id().to_string();
        let open = OpenTx { tx, mode, deadline: Instant::now() + timeout };
        self.open.insert(id.clone(), Arc::new(open));
        Ok(id)
    }

    /// The open transaction `id`.
    pub(crate) fn get(&self, id: &str) -> ApiResult<Arc<OpenTx>> {
        match self.open.get(id) {
            Some(t) if t.deadline > Instant::now() => Ok(t.clone()),
            Some(_) => Err(ApiError::expired(id)),
            None => Err(self.missing(id)),
        }
    }

    /// Removes transaction `id` to finish it (commit or rollback).
    pub(crate) fn take(&self, id: &str) -> ApiResult<Arc<OpenTx>> {
        self.open.remove(id).map(|(_, t)| t).ok_or_else(|| self.missing(id))
    }

    fn missing(&self, id: &str) -> ApiError {
        let expired = self.expired.lock().unwrap_or_else(PoisonError::into_inner);
        if expired.1.contains(id) { ApiError::expired(id) } else { ApiError::tx_not_found(id) }
    }

    /// Rolls back every transaction past its deadline.
    pub(crate) async fn reap(&self) {
        let now = Instant::now();
        let due: Vec<String> =
            self.open.iter().filter(|e| e.value().deadline <= now).map(|e| e.key().clone()).collect();
        for id in due {
            if let Some((_, t)) = self.open.remove(&id) {
                t.tx.rollback().await;
                tracing::debug!(tx = %id, "rolled back an expired transaction");
                self.remember_expired(id);
            }
        }
    }

    fn remember_expired(&self, id: String) {
        let mut guard = self.expired.lock().unwrap_or_else(PoisonError::into_inner);
        let (order, set) = &mut *guard;
        if order.len() >= EXPIRED_MEMORY
            && let Some(old) = order.pop_front()
        {
            set.remove(&old);
        }
        set.insert(id.clone());
        order.push_back(id);
    }

    /// Runs [`TxTable::reap`] every `every` until the table is dropped.
    pub(crate) fn spawn_reaper(self: &Arc<Self>, every: Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(table) => table.reap().await,
                    None => return,
                }
            }
        });
    }

    /// Rolls back every open transaction (shutdown).
    pub(crate) async fn rollback_all(&self) {
        let ids: Vec<String> = self.open.iter().map(|e| e.key().clone()).collect();
        for id in ids {
            if let Some((_, t)) = self.open.remove(&id) {
                t.tx.rollback().await;
            }
        }
    }
}
