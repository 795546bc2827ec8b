//! The transactional B-tree engine of SOP-rs.
//!
//! A [`Database`] holds many named stores (B+trees). Transactions are
//! optimistic and serializable: every node read is recorded with its
//! version and validated, atomically with the publish of the writes, at
//! commit ("two points in time"). Two transactions that touch different
//! items of the same node both commit (swarm merge); only a real
//! item-level conflict returns [`ErrorKind::Conflict`].
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use sop_btree::{Config, Database, StoreOptions};
//!
//! let db = Database::open(Config::memory()).await?;
//! db.create_store("orders", StoreOptions::default()).await?;
//! let tx = db.begin_write().await?;
//! let orders = tx.store::<u64, String>("orders").await?;
//! orders.insert(&7, &"seven".to_string()).await?;
//! tx.commit().await?;
//!
//! let total = db
//!     .run_read(|tx| async move { tx.store::<u64, String>("orders").await?.count().await })
//!     .await?;
//! assert_eq!(total, 1);
//! # Ok::<(), sop_btree::Error>(()) }).unwrap();
//! ```
//!
//! Limits: keys up to [`MAX_KEY_LEN`] bytes, values up to
//! [`MAX_VALUE_LEN`] bytes (values above a store's
//! `value_in_node_threshold` live in blobs of their own); slot length
//! 4..=10 000.
#![deny(missing_docs, rustdoc::broken_intra_doc_links)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod check;
mod claims;
mod clock;
mod collector;
mod config;
mod db;
mod epoch;
mod failpoint;
mod gc;
mod gc_gate;
mod handles;
mod inner;
mod key;
mod recovery;
mod removal;
mod store;
mod tree;
mod tx;
mod walk;

#[cfg(test)]
mod test_rng;

pub use check::CheckReport;
pub use config::{Backend, Config, EmbeddedBlobs};
pub use db::{Database, DbStats};
pub use failpoint::{CommitStep, Failpoint};
pub use key::Key;
pub use sop_cache::{CacheConfig, DiskTier};
pub use sop_core::{BlobStore, Error, ErrorKind, Registry, Result, StoreInfo, StoreOptions, TxId};
pub use store::{Cursor, ItemId, Store, TypedStore};
pub use tx::write::{MAX_KEY_LEN, MAX_VALUE_LEN};
pub use tx::{CommitInfo, Transaction};

/// The README's code blocks, compiled as doc tests so that they stay true.
#[cfg(all(doctest, feature = "embedded"))]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
