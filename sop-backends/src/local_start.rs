//! What the local test servers ([`crate::LocalEtcd`], [`crate::LocalS3`])
//! share about starting: a port found free is released before the server
//! binds it, so a test running in parallel can take it first and the
//! server exits at once; such a start is tried again on fresh ports.

use sop_core::Error;

/// How many times a local server is started on fresh ports when it exits
/// during start-up.
pub(crate) const START_ATTEMPTS: u32 = 3;

/// Why one start failed: the server exited (worth a retry on fresh
/// ports), or anything else.
pub(crate) enum Start {
    /// The server (or a member) exited during start-up.
    Exited(Error),
    /// Anything else: not retried.
    Failed(Error),
}

impl From<Error> for Start {
    fn from(e: Error) -> Self {
        Self::Failed(e)
    }
}
