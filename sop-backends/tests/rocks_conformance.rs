//! The registry conformance suite against `RocksRegistry`, plus reopen.

use std::sync::Arc;

use sop_backends::{RocksConfig, RocksRegistry};
use sop_core::{ErrorKind, Registry};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance() {
    let dir = tempfile::tempdir().unwrap();
    let reg = RocksRegistry::open(dir.path(), &RocksConfig::default()).unwrap();
    sop_core::testkit::run_registry_suite(Arc::new(reg)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsynced_mode_passes_too() {
    let dir = tempfile::tempdir().unwrap();
    let config = RocksConfig { sync: false, lock_stripes: 3 };
    let reg = RocksRegistry::open(dir.path(), &config).unwrap();
    sop_core::testkit::run_registry_suite(Arc::new(reg)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_after_drop_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    sop_core::testkit::reopen_keeps_everything(|| {
        let path = path.clone();
        async move {
            Arc::new(RocksRegistry::open(&path, &RocksConfig::default()).unwrap()) as Arc<dyn Registry>
        }
    })
    .await;
}

#[tokio::test]
async fn second_open_of_a_locked_directory_is_an_error() {
    // Regression (issue 11, item 8): this was an `Io` error, which the
    // server told apart by searching its text for "lock".
    let dir = tempfile::tempdir().unwrap();
    let first = RocksRegistry::open(dir.path(), &RocksConfig::default()).unwrap();
    let err = RocksRegistry::open(dir.path(), &RocksConfig::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Locked, "{err}");
    drop(first);
    RocksRegistry::open(dir.path(), &RocksConfig::default()).unwrap();
}

#[tokio::test]
async fn an_undecodable_intent_is_reported_and_skipped() {
    // Regression (issue 11, item 8): one undecodable intent made
    // `list_intents` (and so opening a database) fail.
    use sop_core::{Intent, TxId};
    let dir = tempfile::tempdir().unwrap();
    let good = Intent::pending(TxId::new(), Vec::new());
    {
        let reg = RocksRegistry::open(dir.path(), &RocksConfig::default()).unwrap();
        reg.put_intent(&good).await.unwrap();
    }
    {
        let cfs = ["handles", "stores", "counts", "intents", "meta", "blobs"];
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(false);
        let raw = rocksdb::DB::open_cf(&opts, dir.path(), cfs).unwrap();
        let cf = raw.cf_handle("intents").unwrap();
        raw.put_cf(cf, [7u8; 16], b"not an intent").unwrap();
    }
    let reg = RocksRegistry::open(dir.path(), &RocksConfig::default()).unwrap();
    let listed = reg.list_intents(u64::MAX).await.unwrap();
    assert_eq!(listed.iter().map(|i| i.tx_id).collect::<Vec<_>>(), vec![good.tx_id]);
    let damaged = reg.damaged_intents().await.unwrap();
    assert_eq!(damaged.len(), 1, "{damaged:?}");
    assert!(damaged[0].contains("07070707"), "{damaged:?}");
}

#[tokio::test]
async fn blob_store_in_the_registry_conforms_and_survives_reopen() {
    use sop_core::{BlobStore, PhysicalId};
    let dir = tempfile::tempdir().unwrap();
    let id = PhysicalId::new();
    {
        let reg = RocksRegistry::open(dir.path(), &RocksConfig::default()).unwrap();
        let blobs = reg.blob_store();
        sop_core::testkit::run_blob_store_suite(&blobs).await;
        blobs.put(id, vec![9u8; 10_000].into()).await.unwrap();
    }
    let reg = RocksRegistry::open(dir.path(), &RocksConfig::default()).unwrap();
    assert_eq!(reg.blob_store().get(id).await.unwrap().len(), 10_000);
    assert_eq!(reg.blob_store().list().await.unwrap(), vec![id]);
}

/// `publish_with_blobs`: the blobs, the handles and the committed intent
/// land in one write or not at all; a conflict stores no blob; a request
/// whose intent already exists, or that stages blobs with no handle write,
/// is refused before anything is written; one with handle writes and no
/// intent (a commit that frees nothing) lands without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_with_blobs_is_all_or_nothing() {
    use bytes::Bytes;
    use sop_core::{
        BlobStore, HandleWrite, Intent, IntentState, LogicalId, PhysicalId, PublishRequest, TxId,
    };
    let dir = tempfile::tempdir().unwrap();
    let reg = RocksRegistry::open(dir.path(), &RocksConfig::default()).unwrap();
    let blobs = reg.blob_store();
    let request = |id, write: HandleWrite| {
        let tx_id = TxId::new();
        let mut intent = Intent::pending(tx_id, vec![id]);
        intent.state = IntentState::Committed;
        PublishRequest { tx_id, writes: vec![write], intent: Some(intent), ..PublishRequest::default() }
    };
    let (node, first) = (LogicalId::new(), PhysicalId::new());
    let req = request(first, HandleWrite::Insert { id: node, physical_id: first });
    reg.publish_with_blobs(&req, vec![(first, Bytes::from_static(b"one"))]).await.unwrap();
    assert_eq!(blobs.get(first).await.unwrap(), Bytes::from_static(b"one"));
    assert_eq!(reg.get_handles(&[node]).await.unwrap()[0].map(|h| h.physical_id), Some(first));
    let intent = reg.get_intent(req.tx_id).await.unwrap().expect("the committed intent is written with it");
    assert_eq!(intent.state, IntentState::Committed);

    // A stale expected version: conflict, and the staged blob is not stored.
    let second = PhysicalId::new();
    let stale = request(second, HandleWrite::Update { id: node, expected: 7, physical_id: second });
    let e = reg.publish_with_blobs(&stale, vec![(second, Bytes::from_static(b"two"))]).await.unwrap_err();
    assert!(e.is_conflict(), "{e}");
    assert_eq!(
        blobs.get(second).await.unwrap_err().kind(),
        ErrorKind::NotFound,
        "a conflicted publish stored a blob"
    );
    assert!(reg.get_intent(stale.tx_id).await.unwrap().is_none());

    // The transaction's intent exists already (written ahead): refused.
    let third = PhysicalId::new();
    let ahead = request(third, HandleWrite::Update { id: node, expected: 1, physical_id: third });
    reg.put_intent(&Intent::pending(ahead.tx_id, vec![third])).await.unwrap();
    assert!(reg.publish_with_blobs(&ahead, vec![(third, Bytes::from_static(b"3"))]).await.is_err());
    assert_eq!(blobs.get(third).await.unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(reg.get_handles(&[node]).await.unwrap()[0].map(|h| h.version), Some(1));

    // Blobs and handles with no intent (a commit that makes nothing
    // obsolete): published together, and no intent left behind.
    let mut bare = request(third, HandleWrite::Update { id: node, expected: 1, physical_id: third });
    bare.intent = None;
    reg.publish_with_blobs(&bare, vec![(third, Bytes::from_static(b"3"))]).await.unwrap();
    assert_eq!(blobs.get(third).await.unwrap(), Bytes::from_static(b"3"));
    assert_eq!(
        reg.get_handles(&[node]).await.unwrap()[0].map(|h| (h.version, h.physical_id)),
        Some((2, third))
    );
    assert!(reg.get_intent(bare.tx_id).await.unwrap().is_none());

    // Blobs that no handle write of the request goes with: invalid input,
    // and nothing stored.
    let fourth = PhysicalId::new();
    let lone = PublishRequest { tx_id: TxId::new(), ..PublishRequest::default() };
    let e = reg.publish_with_blobs(&lone, vec![(fourth, Bytes::from_static(b"4"))]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert_eq!(blobs.get(fourth).await.unwrap_err().kind(), ErrorKind::NotFound);
}

/// The handle table in memory (loaded at open) answers as RocksDB would:
/// handles written before a reopen are read back; a handle record that
/// does not decode opens, reads as `Corruption` (never as absent) and
/// fails a publish that checks it; a handle inserted once the record is
/// gone reads back, in memory and after a reopen.
#[tokio::test]
async fn the_handle_table_matches_what_rocksdb_holds() {
    use sop_core::{
        ErrorKind, Handle, HandleWrite, LogicalId, PhysicalId, PublishRequest, TxId, VersionCheck,
    };
    let dir = tempfile::tempdir().unwrap();
    let (kept, damaged) = (LogicalId::new(), LogicalId::new());
    {
        let reg = RocksRegistry::open(dir.path(), &RocksConfig::default()).unwrap();
        let writes = vec![
            HandleWrite::Insert { id: kept, physical_id: PhysicalId::new() },
            HandleWrite::Insert { id: damaged, physical_id: PhysicalId::new() },
        ];
        reg.publish(&PublishRequest { tx_id: TxId::new(), writes, ..Default::default() }).await.unwrap();
    }
    let kept_handle = {
        let reg = RocksRegistry::open(dir.path(), &RocksConfig::default()).unwrap();
        reg.get_handles(&[kept]).await.unwrap()[0].expect("read back after a reopen")
    };
    {
        let cfs = ["handles", "stores", "counts", "intents", "meta", "blobs"];
        let raw = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path(), cfs).unwrap();
        raw.put_cf(raw.cf_handle("handles").unwrap(), damaged.to_bytes(), b"not a handle").unwrap();
    }
    let reg = RocksRegistry::open(dir.path(), &RocksConfig::default()).unwrap();
    assert_eq!(reg.get_handles(&[kept]).await.unwrap(), vec![Some(kept_handle)]);
    let err = reg.get_handles(&[damaged]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
    let check = PublishRequest {
        tx_id: TxId::new(),
        checks: vec![VersionCheck { id: damaged, version: 1 }],
        ..Default::default()
    };
    assert_eq!(reg.publish(&check).await.unwrap_err().kind(), ErrorKind::Corruption);
    // Validation refuses any write over the damaged record; once it is
    // gone (deleted while the registry is closed), the id is absent and
    // can be inserted again.
    let fresh = PhysicalId::new();
    {
        drop(reg);
        let cfs = ["handles", "stores", "counts", "intents", "meta", "blobs"];
        let raw = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path(), cfs).unwrap();
        raw.delete_cf(raw.cf_handle("handles").unwrap(), damaged.to_bytes()).unwrap();
    }
    let reg = RocksRegistry::open(dir.path(), &RocksConfig::default()).unwrap();
    assert_eq!(reg.get_handles(&[damaged]).await.unwrap(), vec![None]);
    let insert = vec![HandleWrite::Insert { id: damaged, physical_id: fresh }];
    reg.publish(&PublishRequest { tx_id: TxId::new(), writes: insert, ..Default::default() }).await.unwrap();
    assert_eq!(reg.get_handles(&[damaged]).await.unwrap(), vec![Some(Handle::new(damaged, fresh))]);
    drop(reg);
    let reg = RocksRegistry::open(dir.path(), &RocksConfig::default()).unwrap();
    assert_eq!(
        reg.get_handles(&[damaged, kept]).await.unwrap(),
        vec![Some(Handle::new(damaged, fresh)), Some(kept_handle)]
    );
}

/// The handles' column family keeps its memtable as a vector
/// (`handles_descriptor`), which RocksDB reads only when the registry
/// opens. Many writers (whose write groups now insert one batch after
/// another) insert, update, remove and insert again their own handles,
/// across a compaction, so that every id has versions in table files and
/// in the memtable, and deletions over both: the table in memory, and
/// the table loaded again by a reopen, hold exactly the last handle of
/// each id, as a model of each writer's ids says.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn handles_survive_many_versions_deletes_and_a_reopen() {
    use sop_core::{Handle, HandleWrite, LogicalId, PhysicalId, PublishRequest, TxId};
    use std::collections::HashMap;
    let dir = tempfile::tempdir().unwrap();
    let reg = Arc::new(RocksRegistry::open(dir.path(), &RocksConfig::default()).unwrap());
    let mut tasks = Vec::new();
    for writer in 0..8u64 {
        let reg = reg.clone();
        tasks.push(tokio::spawn(async move {
            let ids: Vec<LogicalId> = (0..12).map(|_| LogicalId::new()).collect();
            let mut model: HashMap<LogicalId, Handle> = HashMap::new();
            let mut seed = writer.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            for round in 0..150 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let id = ids[(seed % ids.len() as u64) as usize];
                let physical_id = PhysicalId::new();
                let (write, after) = match model.get(&id).copied() {
                    None => (HandleWrite::Insert { id, physical_id }, Some(Handle::new(id, physical_id))),
                    Some(h) if round % 5 == 0 => (HandleWrite::Remove { id, expected: h.version }, None),
                    Some(h) => (
                        HandleWrite::Update { id, expected: h.version, physical_id },
                        Some(h.next(physical_id)),
                    ),
                };
                let req = PublishRequest { tx_id: TxId::new(), writes: vec![write], ..Default::default() };
                reg.publish(&req).await.unwrap();
                match after {
                    Some(h) => model.insert(id, h),
                    None => model.remove(&id),
                };
                if writer == 0 && round == 75 {
                    reg.compact().await.unwrap();
                }
            }
            (ids, model)
        }));
    }
    let mut expected = Vec::new();
    for t in tasks {
        let (ids, model) = t.await.unwrap();
        expected.extend(ids.into_iter().map(|id| (id, model.get(&id).copied())));
    }
    let ids: Vec<LogicalId> = expected.iter().map(|(id, _)| *id).collect();
    let want: Vec<Option<Handle>> = expected.iter().map(|(_, h)| *h).collect();
    assert!(want.iter().any(Option::is_none) && want.iter().any(Option::is_some), "both kinds covered");
    assert_eq!(reg.get_handles(&ids).await.unwrap(), want, "in memory");
    drop(reg);
    let reg = RocksRegistry::open(dir.path(), &RocksConfig::default()).unwrap();
    assert_eq!(reg.get_handles(&ids).await.unwrap(), want, "loaded again after a reopen");
    assert_eq!(reg.list_handles().await.unwrap().len(), want.iter().flatten().count(), "nothing else listed");
}

/// Once the log outgrows its bound (`MAX_WAL_BYTES`), the column
/// families flush and a new log starts. Every commit written across
/// several such switches, and across reopens (each replaying the live
/// log), reads back exactly; a handle removed reads as absent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_survive_log_switches_and_reopens() {
    use bytes::Bytes;
    use sop_core::{BlobStore, HandleWrite, LogicalId, PhysicalId, PublishRequest, TxId};
    let dir = tempfile::tempdir().unwrap();
    let mut written: Vec<(LogicalId, PhysicalId, u8)> = Vec::new();
    for round in 0..3u8 {
        let reg = RocksRegistry::open(dir.path(), &RocksConfig::default()).unwrap();
        // ~24 MiB a round: past the 16 MiB bound on the log.
        for i in 0..240u32 {
            let (node, blob) = (LogicalId::new(), PhysicalId::new());
            let fill = round.wrapping_mul(97).wrapping_add(i as u8);
            let req = PublishRequest {
                tx_id: TxId::new(),
                writes: vec![HandleWrite::Insert { id: node, physical_id: blob }],
                ..PublishRequest::default()
            };
            reg.publish_with_blobs(&req, vec![(blob, Bytes::from(vec![fill; 100 << 10]))]).await.unwrap();
            written.push((node, blob, fill));
        }
        // One handle of the round removed again: absent after the reopens.
        let (gone, _, _) = written.pop().unwrap();
        let req = PublishRequest {
            tx_id: TxId::new(),
            writes: vec![HandleWrite::Remove { id: gone, expected: 1 }],
            ..PublishRequest::default()
        };
        reg.publish(&req).await.unwrap();
        assert!(reg.get_handles(&[gone]).await.unwrap()[0].is_none());
    }
    let log = std::fs::read_to_string(dir.path().join("LOG")).unwrap();
    assert!(log.contains("while max_total_wal_size is"), "the log never outgrew its bound");
    let reg = RocksRegistry::open(dir.path(), &RocksConfig::default()).unwrap();
    let blobs = reg.blob_store();
    let ids: Vec<LogicalId> = written.iter().map(|w| w.0).collect();
    let handles = reg.get_handles(&ids).await.unwrap();
    for ((node, blob, fill), handle) in written.iter().zip(handles) {
        assert_eq!(handle.map(|h| h.physical_id), Some(*blob), "node {node}");
        let bytes = blobs.get(*blob).await.unwrap();
        assert!(bytes.len() == 100 << 10 && bytes.iter().all(|b| b == fill), "blob {blob}");
    }
}
