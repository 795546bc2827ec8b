//! Failpoints: the test hook that stops a commit at a chosen step, as a
//! crash would.

use std::sync::Arc;

use sop_core::Result;

/// A step of the commit protocol, as reported to a [`Failpoint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommitStep {
    /// The pending intent is written; nothing staged yet.
    IntentWritten,
    /// Every dirty node and large value is staged in the blob store.
    BlobsStaged,
    /// Validate-and-publish succeeded: the transaction is committed.
    Published,
    /// The obsolete blobs are deleted; the intent is about to be removed.
    ObsoleteDeleted,
}

/// A test hook called at each [`CommitStep`]. Returning an error stops the
/// commit on the spot, as a crash would: no cleanup runs.
pub type Failpoint = Arc<dyn Fn(CommitStep) -> Result<()> + Send + Sync>;
