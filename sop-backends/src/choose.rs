//! Choosing and opening backends: the embedded default, memory, or the
//! registry and blob store that URLs name.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sop_core::{BlobStore, Error, Registry, Result};
use sop_registry::MemRegistry;
use sop_store::ObjectBlobStore;

#[cfg(feature = "rocksdb")]
use crate::rocks::{RocksConfig, RocksRegistry};

/// A registry and a blob store, ready for a database.
#[derive(Clone)]
pub struct Backends {
    /// The registry.
    pub registry: Arc<dyn Registry>,
    /// The blob store.
    pub blobs: Arc<dyn BlobStore>,
    /// Whether no other process can use these backends (both live in this
    /// process or behind a directory lock): then recovery finishes every
    /// intent on open.
    pub exclusive: bool,
    /// Whether `blobs` is the registry's own blob store, so that
    /// [`sop_core::Registry::publish_with_blobs`] stages a commit's blobs
    /// in its publish's one atomic write.
    pub blobs_in_registry: bool,
}

impl fmt::Debug for Backends {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Backends({:?}, {:?}, exclusive: {}, blobs in registry: {})",
            self.registry, self.blobs, self.exclusive, self.blobs_in_registry
        )
    }
}

/// Where the embedded backend keeps node and value blobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmbeddedBlobs {
    /// Files in `<dir>/blobs`, each fsynced when `sync` is on.
    Directory,
    /// A column family of the registry's RocksDB database (the default):
    /// staging and publishing share one synced WAL write per commit, which
    /// measured 1.5x faster for durable inserts and 2.7x for durable
    /// deletes than a directory (`docs/BENCHMARKS.md`).
    #[default]
    Registry,
}

/// The embedded default in directory `dir` (created if missing): a RocksDB
/// registry in `<dir>/registry`, blobs where `blobs` says. With `sync`
/// every publish is synced to the WAL and every blob file fsynced.
///
/// # Errors
/// `Locked` when another process has the directory open; `Io`,
/// `Corruption` (a foreign or damaged registry) from RocksDB.
#[cfg(feature = "rocksdb")]
pub fn embedded(dir: &Path, sync: bool, blobs: EmbeddedBlobs) -> Result<Backends> {
    let mut parts = rocks_at(&dir.join("registry"), sync)?;
    if blobs == EmbeddedBlobs::Directory {
        parts.blobs = Arc::new(ObjectBlobStore::local(dir.join("blobs"), sync)?);
        parts.blobs_in_registry = false;
    }
    Ok(parts)
}

/// Everything in memory (lost on drop).
#[must_use]
pub fn memory() -> Backends {
    Backends {
        registry: Arc::new(MemRegistry::new()),
        blobs: Arc::new(ObjectBlobStore::memory()),
        exclusive: true,
        blobs_in_registry: false,
    }
}

/// The registry and blob store that `registry` and `blobs` name, with
/// `dir` for the defaults:
/// - registry: `rocksdb://PATH` (an empty path means `<dir>/registry`),
///   `memory://`, or (feature `etcd`) `etcd://HOST:PORT[,...]/PREFIX`
///   (`EtcdConfig::from_url`); `None` or `""` means `rocksdb://`;
/// - blobs: any URL of `ObjectBlobStore::from_url` (`file://`, `memory://`,
///   `s3://`, `gs://`, `az://`); `None` means the registry's own: the
///   RocksDB registry's `blobs` column family, or memory with `memory://`.
///   An etcd registry holds no blobs: it needs a blob URL that every
///   process sharing the database reaches.
///
/// A RocksDB registry holds its directory's lock, so the result is
/// exclusive; an etcd registry is shared (cluster mode), so it is not.
///
/// # Errors
/// `InvalidInput` for an unknown scheme, a malformed URL, or an etcd
/// registry without blobs; as `embedded` or `EtcdRegistry::connect`
/// when opening the registry fails.
pub async fn from_urls(dir: &Path, registry: Option<&str>, blobs: Option<&str>) -> Result<Backends> {
    let registry = registry.filter(|r| !r.is_empty()).unwrap_or("rocksdb://");
    // The blob URL first: a bad one must not leave a registry created.
    let named_blobs: Option<Arc<dyn BlobStore>> = match blobs {
        Some(url) => Some(Arc::new(ObjectBlobStore::from_url(url)?)),
        None => None,
    };
    let mut parts = if let Some(path) = registry.strip_prefix("rocksdb://") {
        let path = if path.is_empty() { dir.join("registry") } else { PathBuf::from(path) };
        rocks_at(&path, true)?
    } else if registry == "memory://" {
        memory()
    } else if registry.starts_with("etcd://") {
        let Some(blobs) = named_blobs.clone() else {
            return Err(Error::invalid(
                "url",
                format!(
                    "registry {registry:?} holds no blobs: name a blob store every process reaches \
                     (--blobs s3://BUCKET/PREFIX, or file://DIR on storage they all mount)"
                ),
            ));
        };
        etcd_at(registry, blobs).await?
    } else {
        return Err(Error::invalid(
            "url",
            format!(
                "registry {registry:?} is not supported (supported: rocksdb://PATH, memory://, etcd://HOST:PORT/PREFIX)"
            ),
        ));
    };
    if let Some(b) = named_blobs {
        parts.blobs = b;
        parts.blobs_in_registry = false;
    }
    Ok(parts)
}

/// A RocksDB registry at `path` with blobs in its own column family.
#[cfg(feature = "rocksdb")]
fn rocks_at(path: &Path, sync: bool) -> Result<Backends> {
    let r = RocksRegistry::open(path, &RocksConfig { sync, ..RocksConfig::default() })?;
    let b = Arc::new(r.blob_store());
    Ok(Backends { registry: Arc::new(r), blobs: b, exclusive: true, blobs_in_registry: true })
}

/// An etcd registry (shared: not exclusive) with `blobs`.
#[cfg(feature = "etcd")]
async fn etcd_at(url: &str, blobs: Arc<dyn BlobStore>) -> Result<Backends> {
    let registry = crate::etcd::EtcdRegistry::from_url(url).await?;
    Ok(Backends { registry: Arc::new(registry), blobs, exclusive: false, blobs_in_registry: false })
}

#[cfg(not(feature = "etcd"))]
async fn etcd_at(url: &str, _blobs: Arc<dyn BlobStore>) -> Result<Backends> {
    Err(Error::Unsupported(format!(
        "registry {url}: this build has no etcd (feature `etcd` of sop-backends)"
    )))
}

#[cfg(not(feature = "rocksdb"))]
fn rocks_at(path: &Path, _sync: bool) -> Result<Backends> {
    Err(Error::Unsupported(format!(
        "registry rocksdb://{}: this build has no RocksDB (feature `rocksdb` of sop-backends)",
        path.display()
    )))
}

#[cfg(test)]
mod tests {
    use sop_core::{ErrorKind, PhysicalId};

    use super::*;

    #[cfg(feature = "rocksdb")]
    #[tokio::test]
    async fn the_default_registry_keeps_its_blobs_and_a_second_open_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let parts = from_urls(dir.path(), Some(""), None).await.unwrap();
        let id = PhysicalId::new();
        parts.blobs.put_many(vec![(id, bytes::Bytes::from_static(b"x"))]).await.unwrap();
        assert!(dir.path().join("registry").is_dir());
        let again = from_urls(dir.path(), Some("rocksdb://"), None).await.unwrap_err();
        assert_eq!(again.kind(), ErrorKind::Locked);
        drop(parts);
        let reopened = embedded(dir.path(), true, EmbeddedBlobs::Registry).unwrap();
        assert_eq!(reopened.blobs.get(id).await.unwrap().as_ref(), b"x");
    }

    #[tokio::test]
    async fn memory_and_file_urls_combine_and_unknown_schemes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().join("b").display());
        let parts = from_urls(dir.path(), Some("memory://"), Some(&url)).await.unwrap();
        let id = PhysicalId::new();
        parts.blobs.put_many(vec![(id, bytes::Bytes::from_static(b"y"))]).await.unwrap();
        assert!(dir.path().join("b").is_dir(), "the blob landed in the directory the URL names");
        let etcd_without_blobs = (Some("etcd://127.0.0.1:2379/db"), None);
        for (reg, blobs) in [
            (Some("etcd://x"), Some("memory://")),
            etcd_without_blobs,
            (Some("zk://h:1/p"), None),
            (None, Some("ftp://x")),
        ] {
            let e = from_urls(dir.path(), reg, blobs).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{reg:?} {blobs:?}: {e}");
        }
        assert!(!dir.path().join("registry").exists(), "a refused URL opened nothing");
    }

    #[cfg(feature = "rocksdb")]
    #[tokio::test]
    async fn embedded_directory_blobs_are_files() {
        let dir = tempfile::tempdir().unwrap();
        let parts = embedded(dir.path(), false, EmbeddedBlobs::Directory).unwrap();
        parts.blobs.put_many(vec![(PhysicalId::new(), bytes::Bytes::from_static(b"z"))]).await.unwrap();
        assert!(dir.path().join("blobs").is_dir());
    }
}
