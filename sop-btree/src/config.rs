//! [`Config`]: how a [`crate::Database`] is opened.

use std::fmt;
#[cfg(feature = "embedded")]
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sop_cache::CacheConfig;
use sop_core::{BlobStore, Registry};

use crate::failpoint::Failpoint;

pub use sop_backends::EmbeddedBlobs;

/// Where the database lives.
#[derive(Clone)]
pub enum Backend {
    /// The embedded default in a directory (feature `embedded`): a RocksDB
    /// registry in `<path>/registry`; blobs in its `blobs` column family
    /// or in `<path>/blobs` (see [`EmbeddedBlobs`]).
    #[cfg(feature = "embedded")]
    Embedded(PathBuf),
    /// Everything in memory (tests; lost on drop).
    Memory,
    /// Explicit parts. `exclusive` says whether this process is the only
    /// one using them (then recovery finishes every intent on open).
    Parts {
        /// The registry.
        registry: Arc<dyn Registry>,
        /// The blob store.
        blobs: Arc<dyn BlobStore>,
        /// No other process uses these parts.
        exclusive: bool,
    },
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            #[cfg(feature = "embedded")]
            Self::Embedded(p) => write!(f, "Embedded({})", p.display()),
            Self::Memory => f.write_str("Memory"),
            Self::Parts { registry, blobs, exclusive } => {
                write!(f, "Parts({registry:?}, {blobs:?}, exclusive: {exclusive})")
            }
        }
    }
}

/// Open-time settings of a [`crate::Database`].
#[derive(Clone)]
pub struct Config {
    /// Where the data lives.
    pub backend: Backend,
    /// The node cache.
    pub cache: CacheConfig,
    /// Where the embedded backend keeps blobs (feature `embedded`).
    pub embedded_blobs: EmbeddedBlobs,
    /// Make every commit durable before it returns (WAL and blob fsync).
    /// Default `true`.
    pub sync: bool,
    /// A transaction's time limit; also the age after which recovery
    /// treats a shared database's intents as abandoned. Default 60 s.
    pub tx_timeout: Duration,
    /// Attempts `run_write`/`run_read` make before returning `Conflict`.
    /// Default 10.
    pub max_retries: u32,
    /// Swarm merges a commit tries before returning `Conflict`. Default 8.
    pub max_merges: u32,
    /// Delay before obsolete blobs are deleted. Default 1 s. Whatever its
    /// value, a blob is never deleted while a transaction of this process
    /// that may read it is live, nor (on shared backends) sooner than
    /// `tx_timeout` after it became obsolete.
    pub gc_grace: Duration,
    /// Test hook at each commit step.
    pub failpoint: Option<Failpoint>,
    /// Test hook of SOP-rs's own tests (feature `testkit`), default `true`.
    /// `false` skips the validation of nodes a transaction only read, which
    /// breaks serializability: it exists so that the history checker can be
    /// shown to catch the anomalies. Not part of the API.
    #[cfg(feature = "testkit")]
    #[doc(hidden)]
    pub validate_reads: bool,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("backend", &self.backend)
            .field("cache", &self.cache)
            .field("embedded_blobs", &self.embedded_blobs)
            .field("sync", &self.sync)
            .field("tx_timeout", &self.tx_timeout)
            .field("max_retries", &self.max_retries)
            .field("max_merges", &self.max_merges)
            .field("gc_grace", &self.gc_grace)
            .field("failpoint", &self.failpoint.is_some())
            .finish_non_exhaustive()
    }
}

impl Config {
    fn with_backend(backend: Backend) -> Self {
        Self {
            backend,
            cache: CacheConfig::default(),
            embedded_blobs: EmbeddedBlobs::default(),
            sync: true,
            tx_timeout: Duration::from_secs(60),
            max_retries: 10,
            max_merges: 8,
            gc_grace: Duration::from_secs(1),
            failpoint: None,
            #[cfg(feature = "testkit")]
            validate_reads: true,
        }
    }

    /// The embedded default in directory `path` (created if missing);
    /// feature `embedded`.
    #[cfg(feature = "embedded")]
    pub fn embedded(path: impl Into<PathBuf>) -> Self {
        Self::with_backend(Backend::Embedded(path.into()))
    }

    /// Everything in memory.
    #[must_use]
    pub fn memory() -> Self {
        Self::with_backend(Backend::Memory)
    }

    /// Explicit registry and blob store.
    pub fn from_parts(registry: Arc<dyn Registry>, blobs: Arc<dyn BlobStore>, exclusive: bool) -> Self {
        Self::with_backend(Backend::Parts { registry, blobs, exclusive })
    }
}
