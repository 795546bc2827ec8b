//! [`ObjectBlobStore`]: blobs in any `object_store` backend.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt, stream};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use sop_core::blob::DEFAULT_PARALLELISM;
use sop_core::record::{PartRef, RecordId};
use sop_core::{BlobStore, Error, ErrorKind, PhysicalId, Result, Subject};
use url::Url;

use crate::records::RecordState;

/// A [`BlobStore`] over any [`ObjectStore`].
///
/// A blob lives at `<prefix>/<xx>/<physical id>`, where `xx` is the id's
/// last byte in hex: random bits, so that blobs spread over 256 folders.
/// Puts use `PutMode::Create`, so an existing blob is never overwritten.
///
/// [`BlobStore::allocate`] packs a commit's blobs into one record (one
/// PUT; see [`sop_core::record`] and `records.rs`): a part is read with
/// one ranged GET, deleted by a dead list, and its record reclaimed by
/// [`ObjectBlobStore::sweep`] once every part of it is dead.
#[derive(Clone)]
pub struct ObjectBlobStore {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) prefix: Path,
    name: &'static str,
    pub(crate) records: Arc<RecordState>,
}

impl fmt::Debug for ObjectBlobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectBlobStore({} at {:?})", self.name, self.prefix.as_ref())
    }
}

impl ObjectBlobStore {
    /// Blobs in `store` under `prefix`.
    #[must_use]
    pub fn new(store: Arc<dyn ObjectStore>, prefix: Path) -> Self {
        Self { store, prefix, name: "object_store", records: Arc::default() }
    }

    /// Blobs in a local directory (created if missing). With `fsync`, every
    /// put syncs the file and its directory before returning.
    ///
    /// # Errors
    /// `Io` when the directory cannot be created.
    pub fn local(dir: impl AsRef<std::path::Path>, fsync: bool) -> Result<Self> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let fs = LocalFileSystem::new_with_prefix(dir).map_err(|e| from_os(e, "opening directory"))?;
        Ok(Self {
            store: Arc::new(fs.with_fsync(fsync)),
            prefix: Path::default(),
            name: "local",
            records: Arc::default(),
        })
    }

    /// Blobs in memory (lost on drop).
    #[must_use]
    pub fn memory() -> Self {
        Self {
            store: Arc::new(InMemory::new()),
            prefix: Path::default(),
            name: "memory",
            records: Arc::default(),
        }
    }

    /// A store from a URL: `file:///abs/path` (fsync on), `memory://`,
    /// `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`.
    ///
    /// # Errors
    /// `InvalidInput` for a malformed URL or an unknown scheme;
    /// `Unsupported` for a cloud scheme in a build without feature `cloud`.
    pub fn from_url(url: &str) -> Result<Self> {
        let parsed =
            Url::parse(url).map_err(|e| Error::invalid("url", format!("blob store URL {url:?}: {e}")))?;
        match parsed.scheme() {
            "file" => {
                let path = parsed
                    .to_file_path()
                    .map_err(|()| Error::invalid("url", format!("{url:?} is not an absolute file path")))?;
                Self::local(path, true)
            }
            "memory" => Ok(Self::memory()),
            "s3" | "s3a" | "gs" | "az" | "azure" | "abfs" | "abfss" => cloud(&parsed),
            other => Err(Error::invalid(
                "url",
                format!("blob store URL {url:?}: unknown scheme {other:?} (use file, memory, s3, gs or az)"),
            )),
        }
    }

    fn path(&self, id: PhysicalId) -> Path {
        let name = id.to_string();
        let shard = format!("{:02x}", id.as_u128() & 0xff);
        self.prefix.clone().join(shard).join(name)
    }
}

#[cfg(feature = "cloud")]
fn cloud(url: &Url) -> Result<ObjectBlobStore> {
    use object_store::aws::AmazonS3Builder;
    use object_store::azure::MicrosoftAzureBuilder;
    use object_store::gcp::GoogleCloudStorageBuilder;

    let s = url.as_str();
    let (store, name): (Arc<dyn ObjectStore>, &'static str) = match url.scheme() {
        "s3" | "s3a" => {
            (Arc::new(AmazonS3Builder::from_env().with_url(s).build().map_err(config_err)?), "s3")
        }
        "gs" => {
            (Arc::new(GoogleCloudStorageBuilder::from_env().with_url(s).build().map_err(config_err)?), "gcs")
        }
        _ => (Arc::new(MicrosoftAzureBuilder::from_env().with_url(s).build().map_err(config_err)?), "azure"),
    };
    let prefix = Path::from_url_path(url.path()).map_err(|e| Error::invalid("url", format!("{s:?}: {e}")))?;
    Ok(ObjectBlobStore { store, prefix, name, records: Arc::default() })
}

#[cfg(not(feature = "cloud"))]
fn cloud(url: &Url) -> Result<ObjectBlobStore> {
    Err(Error::Unsupported(format!("{url}: this build has no cloud blob stores (feature `cloud`)")))
}

#[cfg(feature = "cloud")]
fn config_err(e: object_store::Error) -> Error {
    Error::invalid("blob store configuration", e.to_string())
}

pub(crate) fn from_os(e: object_store::Error, context: &str) -> Error {
    use object_store::Error as E;
    let kind = match &e {
        E::NotFound { .. } => ErrorKind::NotFound,
        E::AlreadyExists { .. } => ErrorKind::AlreadyExists,
        E::NotSupported { .. } | E::NotImplemented { .. } => ErrorKind::Unsupported,
        E::InvalidPath { .. } => ErrorKind::InvalidInput,
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => ErrorKind::Io,
        _ => ErrorKind::Io,
    };
    match kind {
        ErrorKind::NotFound => Error::NotFound(Subject::Other(format!("{context}: {e}"))),
        ErrorKind::AlreadyExists => Error::AlreadyExists(Subject::Other(format!("{context}: {e}"))),
        _ => Error::backend("object_store", kind, e),
    }
}

/// Counts one request to the object store (`metrics` counters, exported
/// by the server at `/metrics`: on object storage each request is billed,
/// and a commit's count is a cost to watch).
pub(crate) fn count(op: &'static str) {
    metrics::counter!("sop_blob_requests_total", "op" => op).increment(1);
}

impl ObjectBlobStore {
    /// One counted PUT that never overwrites (`PutMode::Create`).
    pub(crate) async fn put_new(&self, path: &Path, body: PutPayload, what: &str) -> Result<()> {
        count("put");
        metrics::counter!("sop_blob_put_bytes_total").increment(body.content_length() as u64);
        let opts = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
        self.store.put_opts(path, body, opts).await.map(|_| ()).map_err(|e| from_os(e, what))
    }

    /// One counted DELETE; an absent object is fine.
    pub(crate) async fn delete_object(&self, path: &Path, what: &str) -> Result<()> {
        count("delete");
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(from_os(e, what)),
        }
    }

    async fn put_plain(&self, id: PhysicalId, data: Bytes) -> Result<()> {
        self.put_new(&self.path(id), PutPayload::from_bytes(data), &format!("blob {id}")).await
    }

    async fn delete_plain(&self, id: PhysicalId) -> Result<()> {
        self.delete_object(&self.path(id), &format!("deleting blob {id}")).await
    }
}

#[async_trait]
impl BlobStore for ObjectBlobStore {
    async fn put(&self, id: PhysicalId, data: Bytes) -> Result<()> {
        match id.part() {
            Some(part) => self.put_record(part.record, vec![(part, data)]).await,
            None => self.put_plain(id, data).await,
        }
    }

    async fn get(&self, id: PhysicalId) -> Result<Bytes> {
        if let Some(part) = id.part() {
            return self.get_part(id, part).await;
        }
        count("get");
        let got = self.store.get(&self.path(id)).await.map_err(|e| from_os(e, &format!("blob {id}")))?;
        got.bytes().await.map_err(|e| from_os(e, &format!("reading blob {id}")))
    }

    async fn delete(&self, id: PhysicalId) -> Result<()> {
        match id.part() {
            Some(_) => self.delete_parts(&[id]).await,
            None => self.delete_plain(id).await,
        }
    }

    /// One PUT per record (all its parts at once), one per plain blob.
    async fn put_many(&self, blobs: Vec<(PhysicalId, Bytes)>) -> Result<()> {
        let mut records: HashMap<RecordId, Vec<(PartRef, Bytes)>> = HashMap::new();
        let mut puts: Vec<BoxFuture<'_, Result<()>>> = Vec::new();
        for (id, data) in blobs {
            match id.part() {
                Some(part) => records.entry(part.record).or_default().push((part, data)),
                None => puts.push(self.put_plain(id, data).boxed()),
            }
        }
        puts.extend(records.into_iter().map(|(record, parts)| self.put_record(record, parts).boxed()));
        let results: Vec<Result<()>> =
            stream::iter(puts).buffer_unordered(DEFAULT_PARALLELISM).collect().await;
        results.into_iter().collect()
    }

    /// Plain blobs deleted one request each; parts listed in one dead list.
    async fn delete_many(&self, ids: &[PhysicalId]) -> Result<()> {
        let (parts, plain): (Vec<PhysicalId>, Vec<PhysicalId>) =
            ids.iter().partition(|id| id.part().is_some());
        let mut deletes: Vec<BoxFuture<'_, Result<()>>> =
            plain.into_iter().map(|id| self.delete_plain(id).boxed()).collect();
        deletes.push(self.delete_parts(&parts).boxed());
        let results: Vec<Result<()>> =
            stream::iter(deletes).buffer_unordered(DEFAULT_PARALLELISM).collect().await;
        results.into_iter().collect()
    }

    async fn list(&self) -> Result<Vec<PhysicalId>> {
        count("list");
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let metas: Vec<_> =
            self.store.list(prefix).try_collect().await.map_err(|e| from_os(e, "listing blobs"))?;
        let mut ids = Vec::new();
        let mut records = Vec::new();
        for name in metas.iter().filter_map(|m| m.location.filename()) {
            if let Some(hex) = name.strip_suffix(".rec") {
                records.extend(RecordId::from_hex(hex));
            } else if let Ok(id) = name.parse() {
                ids.push(id);
            }
        }
        ids.extend(self.live_parts(records).await?);
        Ok(ids)
    }

    fn allocate(&self, lens: &[usize]) -> Vec<PhysicalId> {
        sop_core::record::layout(lens)
    }

    async fn reclaim(&self) -> Result<()> {
        self.sweep().await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_store_conforms() {
        sop_core::testkit::run_blob_store_suite(&ObjectBlobStore::memory()).await;
    }

    #[tokio::test]
    async fn local_store_conforms_with_and_without_fsync() {
        for fsync in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            sop_core::testkit::run_blob_store_suite(&ObjectBlobStore::local(dir.path(), fsync).unwrap())
                .await;
        }
    }

    #[tokio::test]
    async fn file_url_store_conforms_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let url = Url::from_directory_path(dir.path()).unwrap().to_string();
        let store = ObjectBlobStore::from_url(&url).unwrap();
        sop_core::testkit::run_blob_store_suite(&store).await;
        let id = PhysicalId::new();
        store.put(id, Bytes::from_static(b"kept")).await.unwrap();
        drop(store);
        let again = ObjectBlobStore::from_url(&url).unwrap();
        assert_eq!(again.get(id).await.unwrap(), Bytes::from_static(b"kept"));
        assert_eq!(again.list().await.unwrap(), vec![id]);
    }

    #[test]
    fn bad_urls_are_invalid_input() {
        for url in ["not a url", "ftp://host/x", "file://relative"] {
            let err = ObjectBlobStore::from_url(url).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{url}: {err}");
        }
    }

    #[cfg(feature = "cloud")]
    #[test]
    fn cloud_urls_build_without_network() {
        // Building a client does no I/O; credentials are only needed later.
        let s3 = ObjectBlobStore::from_url("s3://bucket/some/prefix").unwrap();
        assert_eq!(
            s3.path(PhysicalId::from_u128(0x1ab)).as_ref(),
            format!("some/prefix/ab/{}", PhysicalId::from_u128(0x1ab))
        );
    }
}
