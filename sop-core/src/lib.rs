//! Core types, traits and binary formats of SOP-rs.
//!
//! SOP-rs is a transactional, ordered key-value engine built from three
//! decoupled layers: a *registry* mapping each node's [`LogicalId`] to its
//! current [`Handle`] (the "pheromone"), a *blob store* holding immutable
//! node blobs keyed by [`PhysicalId`], and a per-process node cache.
//!
//! This crate holds what every layer shares:
//!
//! - ids ([`LogicalId`], [`PhysicalId`], [`TxId`]) and [`Handle`];
//! - store metadata ([`StoreInfo`], [`StoreOptions`]);
//! - the error type ([`Error`], with a matchable [`ErrorKind`]);
//! - the backend contracts [`Registry`] and [`BlobStore`];
//! - the versioned, checksummed binary formats of handles, nodes, store
//!   metadata and intents ([`codec`], [`Node`]).
//!
//! It is *not* an engine: it does no I/O and depends on no runtime. The
//! B-tree and transactions live in `sop-btree`.
//!
//! ```
//! use sop_core::{Handle, LogicalId, PhysicalId};
//!
//! let handle = Handle::new(LogicalId::new(), PhysicalId::new());
//! let bytes = handle.encode();
//! assert_eq!(Handle::decode(&bytes)?, handle);
//! # Ok::<(), sop_core::Error>(())
//! ```
#![deny(missing_docs, rustdoc::broken_intra_doc_links)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]

pub mod blob;
pub mod codec;
mod delta;
mod error;
mod handle;
mod id;
mod intent;
mod node;
pub mod record;
pub mod registry;
mod search;
mod store;
#[doc(hidden)]
pub mod sync;
#[cfg(feature = "testkit")]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::missing_panics_doc)]
pub mod testkit;

pub use blob::BlobStore;
pub use delta::{DeltaOp, LeafDelta};
pub use error::{Error, ErrorKind, Result, Subject, VersionConflict};
pub use handle::Handle;
pub use id::{LogicalId, PhysicalId, TxId};
pub use intent::{Intent, IntentState};
pub use node::{Item, Node, Value};
pub use registry::{HandleWrite, PublishRequest, Registry, RegistryExt, VersionCheck};
pub use search::{KeyIndex, Located, cmp_keys};
pub use store::{StoreInfo, StoreOptions};

/// Milliseconds since the Unix epoch, the timestamp unit of every record.
///
/// This is the only place `sop-core` reads a clock; it does no other I/O.
#[must_use]
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
