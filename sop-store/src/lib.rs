//! Blob stores for SOP-rs.
//!
//! A blob store holds immutable node and value blobs keyed by
//! [`PhysicalId`](sop_core::PhysicalId). This crate has:
//!
//! - [`ObjectBlobStore`]: any [`object_store::ObjectStore`], built from a URL
//!   (`file:///path`, `memory://`, `s3://bucket/prefix`, `gs://bucket`,
//!   `az://container`); cloud credentials come from the standard
//!   environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`);
//! - `FaultyStore` (feature `testkit`): a wrapper that fails, times out or
//!   delays a seeded fraction of calls, for reliability tests.
//!
//! A commit's node blobs are packed into one record ([`sop_core::record`]):
//! one PUT per commit, a ranged GET per node. It is not a cache (see
//! `sop-cache`).
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use sop_core::{BlobStore, PhysicalId};
//! use sop_store::ObjectBlobStore;
//!
//! let store = ObjectBlobStore::from_url("memory://")?;
//! let id = PhysicalId::new();
//! store.put(id, "node bytes".into()).await?;
//! assert_eq!(store.get(id).await?, "node bytes");
//! # Ok::<(), sop_core::Error>(()) }).unwrap();
//! ```
#![deny(missing_docs, rustdoc::broken_intra_doc_links)]

#[cfg(feature = "testkit")]
mod faulty;
mod object;
mod records;

#[cfg(feature = "testkit")]
pub use faulty::FaultyStore;
pub use object::ObjectBlobStore;
pub use records::Swept;
