//! The embedded registry's format version: a format-1 directory (full node
//! blobs only, written before leaf deltas) and a format-2 one (deltas with
//! no chain) open, read and are marked format 3; a newer format is refused
//! clearly.

use sop_backends::{RocksConfig, RocksRegistry};
use sop_core::{Error, ErrorKind, Handle, LogicalId, PhysicalId, Registry, StoreInfo, StoreOptions};

const CFS: [&str; 6] = ["handles", "stores", "counts", "intents", "meta", "blobs"];

fn set_format(dir: &std::path::Path, version: u8) {
    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir, CFS).unwrap();
    db.put_cf(db.cf_handle("meta").unwrap(), b"format", [version]).unwrap();
}

fn format_of(dir: &std::path::Path) -> Vec<u8> {
    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir, CFS).unwrap();
    db.get_cf(db.cf_handle("meta").unwrap(), b"format").unwrap().unwrap()
}

#[tokio::test]
async fn older_formats_are_read_and_upgraded_and_a_newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = Handle::new(LogicalId::new(), PhysicalId::new());
    {
        let registry = RocksRegistry::open(dir.path(), &RocksConfig::default()).unwrap();
        let info = StoreInfo::new("s", StoreOptions::default(), root.logical_id).unwrap();
        registry.create_store(&info, &root).await.unwrap();
    }
    assert_eq!(format_of(dir.path()), [3], "a new directory is format 3");
    for old in [1, 2] {
        set_format(dir.path(), old);
        {
            let registry = RocksRegistry::open(dir.path(), &RocksConfig::default()).unwrap();
            assert_eq!(registry.list_stores().await.unwrap().len(), 1, "format {old} contents");
            assert_eq!(registry.get_handles(&[root.logical_id]).await.unwrap(), vec![Some(root)]);
        }
        assert_eq!(format_of(dir.path()), [3], "format {old} was not upgraded");
    }
    set_format(dir.path(), 4);
    let err = RocksRegistry::open(dir.path(), &RocksConfig::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
    assert!(matches!(err, Error::UnsupportedVersion { version: 4, .. }), "{err}");
}
