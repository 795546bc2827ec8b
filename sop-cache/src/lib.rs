//! The node cache of SOP-rs: `PhysicalId -> decoded node`, on foyer.
//!
//! Because a blob under a [`PhysicalId`] never changes, an entry of this
//! cache can never be stale: a reader first learns from the registry which
//! physical id is current, then asks the cache for it. Nothing is ever
//! invalidated; entries leave only by eviction.
//!
//! [`NodeCache`] keeps decoded [`Node`]s (and raw value blobs) in a memory
//! tier and, optionally, encoded on a local disk tier. Concurrent misses on
//! one id load it once (`inflight.rs`; with a disk tier, foyer's in-flight
//! fetch deduplication). Hits,
//! misses and evictions are counted through the `metrics` crate
//! (`sop_cache_hits_total`, `sop_cache_misses_total`,
//! `sop_cache_evictions_total`) and in [`NodeCache::stats`].
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use sop_cache::{CacheConfig, NodeCache};
//! use sop_core::{BlobStore, Node, PhysicalId};
//!
//! let blobs: Arc<dyn BlobStore> = Arc::new(sop_store::ObjectBlobStore::memory());
//! let id = PhysicalId::new();
//! blobs.put(id, Node::empty_leaf().encode().into()).await?;
//! let cache = NodeCache::new(&CacheConfig::default()).await?;
//! let node = cache.node(id, &blobs).await?; // loads and decodes
//! let again = cache.node(id, &blobs).await?; // served from memory
//! assert!(Arc::ptr_eq(&node, &again));
//! assert_eq!(cache.stats().misses, 1);
//! # Ok::<(), sop_core::Error>(()) }).unwrap();
//! ```
#![deny(missing_docs, rustdoc::broken_intra_doc_links)]

mod blob;
mod cache;
mod delta_leaf;
mod inflight;

pub use blob::{CachedBlob, node_weight};
pub use cache::{CacheConfig, CacheStats, DiskTier, LoadedNode, NodeCache};
pub use delta_leaf::{DeltaLeaf, Layers, LeafSizes};
#[doc(no_inline)]
pub use sop_core::{Node, PhysicalId};
