//! The backends SOP-rs runs on, built in one place.
//!
//! - `embedded` (feature `rocksdb`): the embedded default in a directory —
//!   a `RocksRegistry` in `<dir>/registry`, with blobs in its `blobs`
//!   column family (`RocksBlobStore`) or in `<dir>/blobs`.
//! - [`memory`]: everything in memory.
//! - [`from_urls`]: a registry and a blob store named by URL
//!   (`rocksdb://PATH`, `memory://`; `file://`, `memory://`, `s3://`,
//!   `gs://`, `az://`), as `sop serve --registry/--blobs` takes them.
//! - `EtcdRegistry` (feature `etcd`): the shared registry of cluster
//!   mode, `etcd://HOST:PORT[,HOST:PORT...]/PREFIX`; `LocalEtcd` starts a
//!   local cluster for tests; `LocalS3` (feature `cloud`) a local S3
//!   server (moto) for tests.
//!
//! RocksDB is compiled only with feature `rocksdb` (on by default here;
//! the engine `sop-btree` turns it on with its own `embedded` feature, so
//! that the engine builds and tests without RocksDB).
//!
//! ```
//! # #[cfg(feature = "rocksdb")] {
//! let dir = tempfile::tempdir()?;
//! let parts = sop_backends::embedded(dir.path(), true, sop_backends::EmbeddedBlobs::Registry)?;
//! assert!(parts.exclusive);
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs, rustdoc::broken_intra_doc_links)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod choose;
#[cfg(feature = "etcd")]
mod etcd;
#[cfg(feature = "cloud")]
mod local_s3;
#[cfg(any(feature = "etcd", feature = "cloud"))]
mod local_start;
#[cfg(feature = "rocksdb")]
mod rocks;

#[cfg(feature = "rocksdb")]
pub use choose::embedded;
pub use choose::{Backends, EmbeddedBlobs, from_urls, memory};
#[cfg(feature = "etcd")]
pub use etcd::{EtcdConfig, EtcdRegistry, LocalEtcd};
#[cfg(feature = "cloud")]
pub use local_s3::LocalS3;
#[cfg(feature = "rocksdb")]
pub use rocks::{RocksBlobStore, RocksConfig, RocksRegistry};
