//! The [`BlobStore`] contract: immutable blobs keyed by [`PhysicalId`].

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, stream};

use crate::{PhysicalId, Result};

/// How many blob operations the batch calls run at once by default.
pub const DEFAULT_PARALLELISM: usize = 32;

/// Where node and value blobs live.
///
/// # Contract
///
/// - A blob, once put, never changes: [`BlobStore::put`] of an existing id
///   fails with `AlreadyExists` and leaves the stored blob as it was.
/// - [`BlobStore::get`] of an absent id fails with `NotFound`.
/// - [`BlobStore::delete`] is idempotent: deleting an absent id is `Ok`.
/// - A successful `put` is durable to the backend's configured level.
/// - Batch calls may run their operations in parallel and in any order;
///   they return the first error after every operation has been tried or
///   stopped. Wrappers must implement every method so that no default
///   shadows the inner store's own batching.
#[async_trait]
pub trait BlobStore: Send + Sync + fmt::Debug + 'static {
    /// Stores a new blob.
    async fn put(&self, id: PhysicalId, data: Bytes) -> Result<()>;

    /// Reads a blob.
    async fn get(&self, id: PhysicalId) -> Result<Bytes>;

    /// Deletes a blob if present.
    async fn delete(&self, id: PhysicalId) -> Result<()>;

    /// Stores many new blobs, in parallel. Not atomic: on an error some of
    /// the other blobs may be stored (a commit's intent names them all, so
    /// recovery finds them), but none is still being written once this
    /// returns: every put runs to its end before the first error is
    /// reported.
    async fn put_many(&self, blobs: Vec<(PhysicalId, Bytes)>) -> Result<()> {
        let results: Vec<Result<()>> = stream::iter(blobs)
            .map(|(id, data)| self.put(id, data))
            .buffer_unordered(DEFAULT_PARALLELISM)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// Deletes many blobs, in parallel; absent ones are skipped. As with
    /// [`BlobStore::put_many`], every delete runs to its end before the
    /// first error is reported.
    async fn delete_many(&self, ids: &[PhysicalId]) -> Result<()> {
        let results: Vec<Result<()>> = stream::iter(ids.iter().copied())
            .map(|id| self.delete(id))
            .buffer_unordered(DEFAULT_PARALLELISM)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// Every blob id in the store (for leak checks; may be slow).
    async fn list(&self) -> Result<Vec<PhysicalId>>;

    /// Ids for new blobs of these lengths that one [`BlobStore::put_many`]
    /// will store together. By default a fresh id each; a store that packs
    /// them into records ([`crate::record`]) returns part ids, and its
    /// `put_many` must then get all the parts of a record at once.
    fn allocate(&self, lens: &[usize]) -> Vec<PhysicalId> {
        lens.iter().map(|_| PhysicalId::new()).collect()
    }

    /// Frees the space of deleted blobs that deletion itself leaves in
    /// place (a record whose parts are all deleted). By default nothing to
    /// do. After a delete, `get` of a part may still return its bytes until
    /// its record is reclaimed; it never returns other bytes.
    async fn reclaim(&self) -> Result<()> {
        Ok(())
    }
}
