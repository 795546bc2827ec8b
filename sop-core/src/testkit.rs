//! Test support for backends (feature `testkit`): the conformance suites
//! every [`Registry`](crate::Registry) and [`BlobStore`](crate::BlobStore)
//! backend runs, and the seeded fault plan of the fault-injecting wrappers.
//!
//! Each suite is a set of `pub async fn`s over a backend; a backend's tests
//! call them all. They panic with a message on a contract violation, like
//! any test assertion. [`fault`] decides and injects the faults of
//! `sop_store::FaultyStore` and `sop_registry::FaultyRegistry`.

pub mod blob;
pub mod fault;
pub mod registry;

pub use blob::run_blob_store_suite;
pub use registry::{reopen_keeps_everything, run_registry_suite};
