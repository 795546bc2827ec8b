//! The [`Registry`] contract: logical id → [`Handle`], store metadata and
//! commit intents, with one atomic validate-and-publish call.

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{
    Error, Handle, Intent, LogicalId, PhysicalId, Result, StoreInfo, Subject, TxId, VersionConflict,
};

/// "This handle must still be at this version" — a read-set entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionCheck {
    /// The handle read.
    pub id: LogicalId,
    /// The version seen when it was read.
    pub version: u64,
}

/// One change to the handle table, applied by [`Registry::publish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandleWrite {
    /// Point an existing handle at a new blob. Requires the handle to be at
    /// `expected`; it becomes `expected + 1`.
    Update {
        /// The node.
        id: LogicalId,
        /// The version the transaction saw.
        expected: u64,
        /// The new blob.
        physical_id: PhysicalId,
    },
    /// Create a handle at version 1. Requires the id to be absent.
    Insert {
        /// The new node.
        id: LogicalId,
        /// Its blob.
        physical_id: PhysicalId,
    },
    /// Delete a handle. Requires it to be at `expected`.
    Remove {
        /// The node.
        id: LogicalId,
        /// The version the transaction saw.
        expected: u64,
    },
}

impl HandleWrite {
    /// The logical id this write touches.
    #[must_use]
    pub fn id(&self) -> LogicalId {
        match *self {
            Self::Update { id, .. } | Self::Insert { id, .. } | Self::Remove { id, .. } => id,
        }
    }

    /// The version this write requires (`None`: the id must be absent).
    #[must_use]
    pub fn expected(&self) -> Option<u64> {
        match *self {
            Self::Update { expected, .. } | Self::Remove { expected, .. } => Some(expected),
            Self::Insert { .. } => None,
        }
    }

    /// The handle after this write (`None` for a removal).
    #[must_use]
    pub fn result(&self) -> Option<Handle> {
        match *self {
            Self::Update { id, expected, physical_id } => {
                Some(Handle { logical_id: id, physical_id, version: expected.wrapping_add(1) })
            }
            Self::Insert { id, physical_id } => Some(Handle::new(id, physical_id)),
            Self::Remove { .. } => None,
        }
    }
}

/// Everything one commit publishes, all or nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishRequest {
    /// The committing transaction.
    pub tx_id: TxId,
    /// Handles read but not written: each must still be at its version.
    pub checks: Vec<VersionCheck>,
    /// Handle changes; each id at most once.
    pub writes: Vec<HandleWrite>,
    /// Item-count deltas by store name; commutative, never a conflict.
    pub count_deltas: Vec<(String, i64)>,
    /// Committed counts the transaction read: each store's count must
    /// still be this value (else `Conflict`).
    pub count_checks: Vec<(String, u64)>,
    /// The intent record to store in the same atomic step, normally the
    /// transaction's intent marked [`crate::IntentState::Committed`].
    pub intent: Option<Intent>,
}

impl PublishRequest {
    /// Whether it only validates: no handle, count or intent to write.
    #[must_use]
    pub fn is_validation_only(&self) -> bool {
        self.writes.is_empty() && self.count_deltas.is_empty() && self.intent.is_none()
    }

    /// The error for a publish whose intent is no longer pending.
    #[must_use]
    pub fn intent_gone(&self) -> Error {
        Error::changed(Subject::Intent(self.tx_id), "is no longer pending (recovered)")
    }

    /// Rejects requests that write one id twice or check an id with two
    /// versions.
    ///
    /// # Errors
    /// `InvalidInput` naming the repeated id.
    pub fn check_shape(&self) -> Result<()> {
        // Sorted copies, not hash sets: a commit's request holds a few ids
        // (a transfer: two writes, three checks), and two hashed sets cost
        // 1.7 % of a transfer's instructions (`docs/BENCHMARKS.md`).
        let mut written: Vec<LogicalId> = self.writes.iter().map(HandleWrite::id).collect();
        written.sort_unstable();
        if let Some((id, _)) = written.iter().zip(written.iter().skip(1)).find(|(a, b)| a == b) {
            return Err(Error::invalid("publish request", format!("publish writes {id} twice")));
        }
        let mut checked: Vec<(LogicalId, u64)> = self.checks.iter().map(|c| (c.id, c.version)).collect();
        checked.sort_unstable();
        // Sorted by id, then version: two versions of one id lie side by side.
        let mut pairs = checked.iter().zip(checked.iter().skip(1));
        if let Some(((id, _), _)) = pairs.find(|((a, va), (b, vb))| a == b && va != vb) {
            return Err(Error::invalid("publish request", format!("publish checks {id} twice")));
        }
        Ok(())
    }

    /// Every id the request reads or writes, each once, sorted (the order
    /// in which backends take per-key locks).
    #[must_use]
    pub fn touched_ids(&self) -> Vec<LogicalId> {
        let mut ids: Vec<LogicalId> =
            self.checks.iter().map(|c| c.id).chain(self.writes.iter().map(HandleWrite::id)).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The conflicts of this request against the current versions given by
    /// `current` (`None`: absent). Empty means the request may be applied.
    /// Every backend decides with this one function, so they agree.
    pub fn conflicts(&self, mut current: impl FnMut(LogicalId) -> Option<u64>) -> Vec<VersionConflict> {
        let expectations = self
            .checks
            .iter()
            .map(|c| (c.id, Some(c.version)))
            .chain(self.writes.iter().map(|w| (w.id(), w.expected())));
        expectations
            .filter_map(|(id, expected)| {
                let actual = current(id);
                (actual != expected).then_some(VersionConflict { id, expected, actual })
            })
            .collect()
    }
}

/// The registry: the small, strongly consistent map at the heart of SOP.
///
/// # Contract
///
/// - [`Registry::publish`] is atomic: it applies the whole request or
///   nothing. It fails with [`Error::Conflict`] (listing *every* id whose
///   version differed, as decided by [`PublishRequest::conflicts`]) when any
///   check or write expectation does not hold, and with `NotFound` when a
///   count delta names an unknown store. A returned `Ok` is durable to the
///   backend's configured level. A `count_checks` entry that no longer
///   holds fails the request with a `Conflict` kind too, and so does a
///   request carrying an `intent` when the registry does not hold that
///   transaction's intent in state `Pending` (recovery aborted it): a
///   commit can never be published after recovery gave it up. A backend that
///   cannot know the outcome
///   returns `Indeterminate`.
/// - [`Registry::get_handles`] returns one entry per requested id, in the
///   same order; `None` for absent ids. Each returned handle carries its own
///   id, and callers may check it.
/// - Store names are unique: [`Registry::create_store`] fails with
///   `AlreadyExists`; [`Registry::remove_store`] with `NotFound`.
/// - Intents are keyed by transaction id; putting one again replaces it.
/// - Backend failures map to the [`crate::ErrorKind`]s they mean (`Io`,
///   `Timeout`, `Corruption` for undecodable records).
#[async_trait]
pub trait Registry: Send + Sync + fmt::Debug + 'static {
    /// The current handles of `ids`, in order, `None` where absent.
    async fn get_handles(&self, ids: &[LogicalId]) -> Result<Vec<Option<Handle>>>;

    /// Validate-and-publish: see the trait's contract.
    async fn publish(&self, request: &PublishRequest) -> Result<()>;

    /// As [`Registry::publish`], and in the same atomic write stores
    /// `blobs` (new, freshly generated ids) in the blob store this registry
    /// holds: a commit's staging and its publish as one write, all or
    /// nothing, so no pending intent is needed first. `request.intent`, if
    /// any, is the committed intent; no intent of the transaction may
    /// exist yet. A commit that makes no blob obsolete sends none: its one
    /// write leaves nothing to finish or clean up. Blobs come with handle
    /// writes (a request that writes no handle may stage none). Only a
    /// registry that holds a blob store implements it; the default is
    /// `Unsupported`.
    ///
    /// # Errors
    /// As [`Registry::publish`]; `Unsupported` for a registry without a
    /// blob store of its own.
    async fn publish_with_blobs(
        &self,
        request: &PublishRequest,
        blobs: Vec<(PhysicalId, Bytes)>,
    ) -> Result<()> {
        let _ = (request, blobs);
        Err(Error::Unsupported("this registry holds no blob store".into()))
    }

    /// Refuses, before anything of the commit is written, a request this
    /// registry could never apply in one atomic step (etcd: more
    /// operations than one transaction may hold). The commit calls it
    /// before its intent and blobs, so a refused commit leaves nothing
    /// behind; [`Registry::publish`] refuses such a request too. The
    /// default accepts every request.
    ///
    /// # Errors
    /// `InvalidInput` saying which limit the request exceeds.
    fn publish_limit(&self, request: &PublishRequest) -> Result<()> {
        let _ = request;
        Ok(())
    }

    /// Creates a store and its root handle in one atomic step.
    async fn create_store(&self, info: &StoreInfo, root: &Handle) -> Result<()>;

    /// The store's metadata, `None` if absent.
    async fn get_store(&self, name: &str) -> Result<Option<StoreInfo>>;

    /// Every store, sorted by name.
    async fn list_stores(&self) -> Result<Vec<StoreInfo>>;

    /// Removes a store's metadata and returns it. Its nodes' handles are
    /// removed separately, through [`Registry::publish`]. A registry that
    /// resolves a lost reply by reading back may also return it when a
    /// concurrent removal removed it: the store is gone either way.
    async fn remove_store(&self, name: &str) -> Result<StoreInfo>;

    /// Removes store `name`'s metadata only if its root is still `root`
    /// (not a store of the same name created since), atomically, and
    /// returns it; `None` when there is no such store or it has another
    /// root. The default reads and then removes, which is not atomic:
    /// every registry of this workspace overrides it.
    async fn remove_store_if_root(&self, name: &str, root: LogicalId) -> Result<Option<StoreInfo>> {
        match self.get_store(name).await? {
            Some(info) if info.root == root => self.remove_store(name).await.map(Some),
            _ => Ok(None),
        }
    }

    /// Stores (or replaces) an intent.
    async fn put_intent(&self, intent: &Intent) -> Result<()>;

    /// The intent of `tx_id`, `None` if absent.
    async fn get_intent(&self, tx_id: TxId) -> Result<Option<Intent>>;

    /// Intents created before `created_before_ms` (Unix milliseconds).
    /// An intent record that does not decode is skipped (one damaged
    /// record must not keep a database closed); [`Registry::damaged_intents`]
    /// names it.
    async fn list_intents(&self, created_before_ms: u64) -> Result<Vec<Intent>>;

    /// One line per stored intent record that does not decode (its key and
    /// the decoding error), for integrity checks; none for a registry that
    /// keeps intents decoded.
    async fn damaged_intents(&self) -> Result<Vec<String>>;

    /// Removes an intent; removing an absent one is not an error.
    async fn remove_intent(&self, tx_id: TxId) -> Result<()>;

    /// Removes intents (a batch of clean-ups); removing absent ones is not
    /// an error. One write where the registry can batch them; by default
    /// one [`Registry::remove_intent`] each, stopping at the first error
    /// (the rest stay for recovery).
    async fn remove_intents(&self, tx_ids: &[TxId]) -> Result<()> {
        for id in tx_ids {
            self.remove_intent(*id).await?;
        }
        Ok(())
    }

    /// Atomically marks a `Pending` intent `Aborted`, so that its publish
    /// can no longer succeed. Returns the intent's state afterwards
    /// (`Aborted`, or `Committed` when the publish won the race), `None`
    /// when there is no such intent.
    async fn abort_intent(&self, tx_id: TxId) -> Result<Option<crate::IntentState>>;

    /// Every handle (for integrity checks and leak detection).
    async fn list_handles(&self) -> Result<Vec<Handle>>;

    /// Gives back to the file system the space of removed records (and,
    /// for a registry that also holds the blobs, of deleted blobs): a full
    /// compaction. Contents are unchanged. The default does nothing, for
    /// registries that keep no dead space.
    ///
    /// # Errors
    /// Backend failures (`Io`).
    async fn compact(&self) -> Result<()> {
        Ok(())
    }

    /// Whether everything this registry has applied is durable. A registry
    /// that applies a publish before its sync (group commit) answers
    /// `false` while a write is not yet covered by a sync, including after
    /// a failed sync until a later one succeeds; a reader that would skip
    /// validation must then validate (and so wait for the sync). The
    /// default, for registries that acknowledge only what is durable or
    /// keep nothing on disk, is `true`.
    fn all_durable(&self) -> bool {
        true
    }
}

/// Conveniences over any [`Registry`]; implemented for every registry.
#[async_trait]
pub trait RegistryExt: Registry {
    /// The current handle of one id.
    ///
    /// # Errors
    /// As [`Registry::get_handles`].
    async fn get_handle(&self, id: LogicalId) -> Result<Option<Handle>> {
        Ok(self.get_handles(&[id]).await?.into_iter().next().flatten())
    }
}

impl<R: Registry + ?Sized> RegistryExt for R {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_list_every_moved_expectation() {
        let (a, b, c) = (LogicalId::new(), LogicalId::new(), LogicalId::new());
        let req = PublishRequest {
            checks: vec![VersionCheck { id: a, version: 3 }],
            writes: vec![
                HandleWrite::Update { id: b, expected: 1, physical_id: PhysicalId::new() },
                HandleWrite::Insert { id: c, physical_id: PhysicalId::new() },
            ],
            ..Default::default()
        };
        req.check_shape().unwrap();
        assert!(
            req.conflicts(|id| if id == a {
                Some(3)
            } else if id == b {
                Some(1)
            } else {
                None
            })
            .is_empty()
        );
        let all = req.conflicts(|_| Some(9));
        assert_eq!(all.len(), 3);
        assert_eq!(all[2], VersionConflict { id: c, expected: None, actual: Some(9) });
        assert_eq!(req.touched_ids().len(), 3);
    }

    #[test]
    fn repeated_writes_are_invalid() {
        let a = LogicalId::new();
        let req = PublishRequest {
            writes: vec![
                HandleWrite::Remove { id: a, expected: 1 },
                HandleWrite::Remove { id: a, expected: 1 },
            ],
            ..Default::default()
        };
        assert_eq!(req.check_shape().unwrap_err().kind(), crate::ErrorKind::InvalidInput);
    }

    #[test]
    fn an_id_checked_at_two_versions_is_invalid_wherever_it_sits() {
        let ids: Vec<LogicalId> = (0..6).map(|_| LogicalId::new()).collect();
        let check = |i: usize, version| VersionCheck { id: ids[i], version };
        // The same id at one version, twice and apart: allowed.
        let same = PublishRequest {
            checks: vec![check(3, 7), check(0, 1), check(5, 2), check(3, 7)],
            ..Default::default()
        };
        same.check_shape().unwrap();
        // At two versions, in either order, with other ids between.
        for checks in [
            vec![check(3, 7), check(0, 1), check(5, 2), check(3, 8)],
            vec![check(3, 8), check(4, 1), check(3, 7)],
            vec![check(2, 1), check(2, 1), check(2, 9)],
        ] {
            let req = PublishRequest { checks, ..Default::default() };
            assert_eq!(req.check_shape().unwrap_err().kind(), crate::ErrorKind::InvalidInput);
        }
        // A write repeated among others, not side by side in the request.
        let w = |i: usize| HandleWrite::Insert { id: ids[i], physical_id: PhysicalId::new() };
        let req = PublishRequest { writes: vec![w(4), w(1), w(2), w(4)], ..Default::default() };
        assert_eq!(req.check_shape().unwrap_err().kind(), crate::ErrorKind::InvalidInput);
    }
}
