//! Conformance suites every [`Registry`](crate::Registry) and
//! [`BlobStore`](crate::BlobStore) backend runs (feature `testkit`).
//!
//! Each suite is a set of `pub async fn`s over a backend; a backend's tests
//! call them all. They panic with a message on a contract violation, like
//! any test assertion.

pub mod blob;
pub mod registry;

pub use blob::run_blob_store_suite;
pub use registry::{reopen_keeps_everything, run_registry_suite};
