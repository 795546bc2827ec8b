//! Registry backends for SOP-rs.
//!
//! A registry maps each B-tree node's [`LogicalId`](sop_core::LogicalId) to
//! its current [`Handle`](sop_core::Handle), keeps store metadata and commit
//! intents, and offers one atomic validate-and-publish call
//! ([`Registry::publish`](sop_core::Registry::publish)). This crate has:
//!
//! - [`MemRegistry`]: in memory, sharded, for tests and loom models;
//! - `FaultyRegistry` (feature `testkit`): a wrapper that fails, delays or
//!   loses the reply of a seeded fraction of calls, for fault campaigns;
//! - [`stripes`]: the lock stripes a registry's validate-and-publish takes
//!   (also used by the RocksDB registry in `sop-backends`), loom-checked;
//! - [`group`]: group commit (one leader syncs the log for every writer
//!   waiting), loom-checked;
//! - [`table`]: every handle of an exclusive registry in memory (the
//!   RocksDB registry's), its apply order loom-checked.
//!
//! The embedded default registry, on RocksDB, lives in `sop-backends`, the
//! one crate that builds backends; this crate compiles no C++. It is not a
//! cluster registry: every registry here belongs to one process.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use sop_core::{HandleWrite, LogicalId, PhysicalId, PublishRequest, Registry, RegistryExt};
//! use sop_registry::MemRegistry;
//!
//! let reg = MemRegistry::new();
//! let id = LogicalId::new();
//! let write = HandleWrite::Insert { id, physical_id: PhysicalId::new() };
//! reg.publish(&PublishRequest { writes: vec![write], ..Default::default() }).await?;
//! assert_eq!(reg.get_handle(id).await?.map(|h| h.version), Some(1));
//! # Ok::<(), sop_core::Error>(()) }).unwrap();
//! ```
#![deny(missing_docs, rustdoc::broken_intra_doc_links)]

#[cfg(feature = "testkit")]
mod faulty;
pub mod group;
mod mem;
pub mod stripes;
pub mod table;

#[cfg(feature = "testkit")]
pub use faulty::FaultyRegistry;
pub use mem::MemRegistry;
