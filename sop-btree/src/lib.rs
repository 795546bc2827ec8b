//! The transactional B-tree engine of SOP-rs: `Database`, transactions,
//! typed stores, the commit protocol, recovery and garbage collection.
//!
//! This crate is the one an application depends on. It is being built on
//! the foundation crates (`sop-core`, `sop-registry`, `sop-store`,
//! `sop-cache`); until the engine lands it only re-exports the shared core
//! types, so that the workspace layering is in place and tested.
#![deny(missing_docs, rustdoc::broken_intra_doc_links)]

pub use sop_core::{Error, ErrorKind, Result, StoreOptions};
