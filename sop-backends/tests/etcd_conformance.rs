//! The registry conformance suite against `EtcdRegistry` on a real etcd
//! (Debian's `etcd-server`, started here on loopback ports and killed at
//! the end), plus what only a shared, remote registry has to get right:
//! two clients on one prefix, prefixes kept apart, etcd's size limits, a
//! lost reply resolved by reading the intent back, and a dead member.

use std::sync::Arc;

use sop_backends::{EtcdConfig, EtcdRegistry, LocalEtcd};
use sop_core::{
    ErrorKind, Handle, HandleWrite, Intent, IntentState, LogicalId, PhysicalId, PublishRequest, Registry,
    StoreInfo, StoreOptions, TxId, VersionCheck,
};

async fn cluster(members: usize, extra: &[&str]) -> (tempfile::TempDir, LocalEtcd) {
    let dir = tempfile::tempdir().unwrap();
    let etcd = LocalEtcd::start(dir.path(), members, extra)
        .await
        .expect("starting etcd (is etcd-server installed?)");
    (dir, etcd)
}

async fn open(etcd: &LocalEtcd, prefix: &str) -> EtcdRegistry {
    EtcdRegistry::from_url(&etcd.url(prefix)).await.expect("connecting")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_and_reopen() {
    let (_dir, etcd) = cluster(1, &[]).await;
    sop_core::testkit::run_registry_suite(Arc::new(open(&etcd, "suite").await)).await;
    let url = etcd.url("reopen");
    sop_core::testkit::reopen_keeps_everything(|| {
        let url = url.clone();
        async move { Arc::new(EtcdRegistry::from_url(&url).await.unwrap()) as Arc<dyn Registry> }
    })
    .await;
}

/// Two clients on one prefix are two processes sharing one database: what
/// one publishes the other sees at once, and their racing publishes of
/// one handle are decided by etcd, exactly one winning.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_clients_share_one_registry_and_prefixes_stay_apart() {
    let (_dir, etcd) = cluster(1, &[]).await;
    let (a, b, other) = (open(&etcd, "db").await, open(&etcd, "db").await, open(&etcd, "db2").await);
    let id = LogicalId::new();
    let first = PhysicalId::new();
    a.publish(&PublishRequest {
        writes: vec![HandleWrite::Insert { id, physical_id: first }],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(b.get_handles(&[id]).await.unwrap(), vec![Some(Handle::new(id, first))]);
    assert_eq!(other.get_handles(&[id]).await.unwrap(), vec![None], "db2 must not see db's keys");
    assert!(other.list_handles().await.unwrap().is_empty());

    let update = |physical_id| PublishRequest {
        tx_id: TxId::new(),
        writes: vec![HandleWrite::Update { id, expected: 1, physical_id }],
        ..Default::default()
    };
    let (ua, ub) = (update(PhysicalId::new()), update(PhysicalId::new()));
    let (ra, rb) = tokio::join!(a.publish(&ua), b.publish(&ub));
    assert!(ra.is_ok() != rb.is_ok(), "exactly one racing publish wins: {ra:?} {rb:?}");
    let loser = ra.err().or(rb.err()).unwrap();
    let sop_core::Error::Conflict { conflicts } = loser else { panic!("want a conflict, got {loser}") };
    assert_eq!((conflicts[0].id, conflicts[0].expected, conflicts[0].actual), (id, Some(1), Some(2)));

    // Stores and counts of one prefix are invisible under another.
    let root = Handle::new(LogicalId::new(), PhysicalId::new());
    let info = StoreInfo::new("s", StoreOptions::default(), root.logical_id).unwrap();
    a.create_store(&info, &root).await.unwrap();
    assert!(other.get_store("s").await.unwrap().is_none());
    assert_eq!(b.list_stores().await.unwrap().len(), 1);
}

/// Counts are sharded: many concurrent deltas to one store from two
/// clients add up exactly, and a publish that checked the count conflicts
/// with a delta committed after its read.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sharded_counts_are_exact_and_a_checked_count_is_validated() {
    let (_dir, etcd) = cluster(1, &[]).await;
    let (a, b) = (Arc::new(open(&etcd, "db").await), Arc::new(open(&etcd, "db").await));
    let root = Handle::new(LogicalId::new(), PhysicalId::new());
    a.create_store(&StoreInfo::new("s", StoreOptions::default(), root.logical_id).unwrap(), &root)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for t in 0..16 {
        let reg = if t % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            for _ in 0..20 {
                let req = PublishRequest { count_deltas: vec![("s".into(), 1)], ..Default::default() };
                let req = PublishRequest { tx_id: TxId::new(), ..req };
                reg.publish(&req).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(b.get_store("s").await.unwrap().unwrap().count, 320);

    let checked =
        PublishRequest { tx_id: TxId::new(), count_checks: vec![("s".into(), 320)], ..Default::default() };
    a.publish(&checked).await.expect("the count is still 320");
    b.publish(&PublishRequest {
        tx_id: TxId::new(),
        count_deltas: vec![("s".into(), -1)],
        ..Default::default()
    })
    .await
    .unwrap();
    let e = a.publish(&checked).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    b.remove_store("s").await.unwrap();
    let e = a.publish(&checked).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}

/// etcd holds at most `--max-txn-ops` operations per transaction: a
/// publish that needs more is refused with `InvalidInput` before anything
/// is sent (nothing applied), by `publish_limit` and by `publish`; raising
/// both limits lets it through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_past_etcds_limits_is_refused_whole() {
    let (_dir, etcd) = cluster(1, &["--max-txn-ops", "512"]).await;
    let reg = open(&etcd, "db").await;
    let ids: Vec<LogicalId> = (0..200).map(|_| LogicalId::new()).collect();
    let req = PublishRequest {
        tx_id: TxId::new(),
        writes: ids.iter().map(|&id| HandleWrite::Insert { id, physical_id: PhysicalId::new() }).collect(),
        ..Default::default()
    };
    let e = reg.publish_limit(&req).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("allows 128"), "{e}");
    assert_eq!(reg.publish(&req).await.unwrap_err().kind(), ErrorKind::InvalidInput);
    assert!(reg.get_handles(&ids).await.unwrap().iter().all(Option::is_none), "nothing applied");

    let wide = EtcdRegistry::from_url(&format!("{}?max_txn_ops=512", etcd.url("db"))).await.unwrap();
    wide.publish(&req).await.expect("fits once both limits allow 512");
    assert!(reg.get_handles(&ids).await.unwrap().iter().all(Option::is_some));
    // 201 reads of handles come back in order, over several transactions.
    let mut query = ids.clone();
    query.push(LogicalId::new());
    let got = reg.get_handles(&query).await.unwrap();
    assert_eq!(got.iter().filter(|h| h.is_some()).count(), 200);
    assert!(got.iter().zip(&query).take(200).all(|(h, id)| h.unwrap().logical_id == *id));

    // A request too large in bytes: an intent naming 100 000 blobs.
    let intent = Intent {
        state: IntentState::Committed,
        ..Intent::pending(TxId::new(), (0..100_000).map(|_| PhysicalId::new()).collect())
    };
    let big = PublishRequest { tx_id: intent.tx_id, intent: Some(intent), ..Default::default() };
    let e = reg.publish(&big).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(e.to_string().contains("max-request-bytes"), "{e}");
}

/// The intent decides a publish: it applies only while the intent is
/// pending, and aborting it (as recovery does) makes a later publish fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_intent_is_never_published() {
    let (_dir, etcd) = cluster(1, &[]).await;
    let reg = open(&etcd, "db").await;
    let tx = TxId::new();
    let staged = PhysicalId::new();
    reg.put_intent(&Intent::pending(tx, vec![staged])).await.unwrap();
    assert_eq!(reg.abort_intent(tx).await.unwrap(), Some(IntentState::Aborted));
    let id = LogicalId::new();
    let mut committed = Intent::pending(tx, vec![staged]);
    committed.state = IntentState::Committed;
    let req = PublishRequest {
        tx_id: tx,
        writes: vec![HandleWrite::Insert { id, physical_id: staged }],
        intent: Some(committed),
        ..Default::default()
    };
    let e = reg.publish(&req).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert_eq!(reg.get_handles(&[id]).await.unwrap(), vec![None]);
    assert_eq!(reg.abort_intent(TxId::new()).await.unwrap(), None);
}

/// With the only member dead nothing can be decided: a publish answers
/// with an error (`Indeterminate` when it may have applied), not a guess.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_cluster_gives_errors_not_guesses() {
    let (_dir, mut etcd) = cluster(1, &[]).await;
    let url = format!("{}?timeout_ms=500", etcd.url("db"));
    let reg = EtcdRegistry::from_url(&url).await.unwrap();
    let tx = TxId::new();
    reg.put_intent(&Intent::pending(tx, Vec::new())).await.unwrap();
    etcd.kill(0);
    let id = LogicalId::new();
    let mut committed = Intent::pending(tx, Vec::new());
    committed.state = IntentState::Committed;
    let req = PublishRequest {
        tx_id: tx,
        writes: vec![HandleWrite::Insert { id, physical_id: PhysicalId::new() }],
        intent: Some(committed),
        ..Default::default()
    };
    let e = reg.publish(&req).await.unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::Io | ErrorKind::Timeout | ErrorKind::Indeterminate), "{e}");
    let e = reg.get_handles(&[id]).await.unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::Io | ErrorKind::Timeout), "{e}");
    let e = EtcdRegistry::from_url(&url).await.unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::Io | ErrorKind::Timeout), "{e}");
}

/// A 3-member cluster keeps committing after one member dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_continue_on_a_quorum() {
    let (_dir, mut etcd) = cluster(3, &[]).await;
    let reg = open(&etcd, "db").await;
    let id = LogicalId::new();
    reg.publish(&PublishRequest {
        writes: vec![HandleWrite::Insert { id, physical_id: PhysicalId::new() }],
        ..Default::default()
    })
    .await
    .unwrap();
    etcd.kill(0);
    for version in 1..=20 {
        let req = PublishRequest {
            tx_id: TxId::new(),
            checks: vec![],
            writes: vec![HandleWrite::Update { id, expected: version, physical_id: PhysicalId::new() }],
            ..Default::default()
        };
        // The client may first try the dead member; it moves on.
        let mut tries = 0;
        loop {
            match reg.publish(&req).await {
                Ok(()) => break,
                Err(e) if e.kind() == ErrorKind::Conflict => {
                    // An earlier attempt applied although its reply was lost.
                    assert_eq!(reg.get_handles(&[id]).await.unwrap()[0].unwrap().version, version + 1);
                    break;
                }
                Err(e) => {
                    tries += 1;
                    assert!(tries < 20, "no progress on the quorum: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            }
        }
    }
    assert_eq!(reg.get_handles(&[id]).await.unwrap()[0].unwrap().version, 21);
}

/// A prefix written by another format, or holding damaged records, is
/// refused or reported, never misread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_formats_and_damaged_records_are_refused() {
    let (_dir, etcd) = cluster(1, &[]).await;
    let endpoints: Vec<String> = etcd.hosts().iter().map(|h| format!("http://{h}")).collect();
    let mut raw = etcd_client::Client::connect(&endpoints, None).await.unwrap();
    raw.put("future#format", [9u8], None).await.unwrap();
    let e = EtcdRegistry::from_url(&etcd.url("future")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corruption, "{e}");
    assert!(e.to_string().contains("version 9"), "{e}");
    raw.put("empty#format", b"", None).await.unwrap();
    assert_eq!(EtcdRegistry::from_url(&etcd.url("empty")).await.unwrap_err().kind(), ErrorKind::Corruption);

    let reg = open(&etcd, "db").await;
    let good = Intent::pending(TxId::new(), Vec::new());
    reg.put_intent(&good).await.unwrap();
    let bad = TxId::new();
    raw.put(format!("db#i/{:032x}", bad.as_u128()), b"not an intent".to_vec(), None).await.unwrap();
    let listed = reg.list_intents(u64::MAX).await.unwrap();
    assert_eq!(listed.iter().map(|i| i.tx_id).collect::<Vec<_>>(), vec![good.tx_id]);
    let damaged = reg.damaged_intents().await.unwrap();
    assert_eq!(damaged.len(), 1, "{damaged:?}");
    assert!(damaged[0].contains(&bad.to_string()), "{damaged:?}");

    // A handle whose record disagrees with etcd's version of its key (a
    // write that bypassed publish) is corruption, not a wrong version.
    let id = LogicalId::new();
    let h = Handle::new(id, PhysicalId::new());
    raw.put(format!("db#h/{:032x}", id.as_u128()), h.encode(), None).await.unwrap();
    raw.put(format!("db#h/{:032x}", id.as_u128()), h.encode(), None).await.unwrap();
    assert_eq!(reg.get_handles(&[id]).await.unwrap_err().kind(), ErrorKind::Corruption);
    assert_eq!(reg.list_handles().await.unwrap_err().kind(), ErrorKind::Corruption);
}

/// A read-only commit validates any number of nodes (read at one
/// revision, in chunks), with the exact conflicts; a version-0
/// expectation is never met by an absent handle (etcd reads a missing key
/// as version 0); a count read many times is one check, and read as two
/// different values cannot hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_of_any_size_and_edge_expectations() {
    let (_dir, etcd) = cluster(1, &[]).await;
    let reg = open(&etcd, "db").await;
    let ids: Vec<LogicalId> = (0..300).map(|_| LogicalId::new()).collect();
    for chunk in ids.chunks(100) {
        let writes =
            chunk.iter().map(|&id| HandleWrite::Insert { id, physical_id: PhysicalId::new() }).collect();
        reg.publish(&PublishRequest { tx_id: TxId::new(), writes, ..Default::default() }).await.unwrap();
    }
    let mut read = PublishRequest {
        tx_id: TxId::new(),
        checks: ids.iter().map(|&id| VersionCheck { id, version: 1 }).collect(),
        ..Default::default()
    };
    reg.publish_limit(&read).expect("validation has no size limit");
    reg.publish(&read).await.expect("300 unchanged nodes validate");
    let moved = ids[250];
    let bump = HandleWrite::Update { id: moved, expected: 1, physical_id: PhysicalId::new() };
    reg.publish(&PublishRequest { tx_id: TxId::new(), writes: vec![bump], ..Default::default() })
        .await
        .unwrap();
    let sop_core::Error::Conflict { conflicts } = reg.publish(&read).await.unwrap_err() else { panic!() };
    assert_eq!(conflicts.len(), 1);
    assert_eq!((conflicts[0].id, conflicts[0].actual), (moved, Some(2)));

    let absent = LogicalId::new();
    read.checks = vec![VersionCheck { id: absent, version: 0 }];
    assert_eq!(reg.publish(&read).await.unwrap_err().kind(), ErrorKind::Conflict, "a check of version 0");
    let update0 = HandleWrite::Update { id: absent, expected: 0, physical_id: PhysicalId::new() };
    let e = reg
        .publish(&PublishRequest { tx_id: TxId::new(), writes: vec![update0], ..Default::default() })
        .await;
    assert_eq!(e.unwrap_err().kind(), ErrorKind::Conflict, "an update of version 0");
    assert_eq!(reg.get_handles(&[absent]).await.unwrap(), vec![None], "nothing created");

    let root = Handle::new(LogicalId::new(), PhysicalId::new());
    reg.create_store(&StoreInfo::new("s", StoreOptions::default(), root.logical_id).unwrap(), &root)
        .await
        .unwrap();
    let mut counted = PublishRequest {
        tx_id: TxId::new(),
        count_checks: vec![("s".to_owned(), 0); 200],
        writes: vec![HandleWrite::Insert { id: LogicalId::new(), physical_id: PhysicalId::new() }],
        ..Default::default()
    };
    reg.publish(&counted).await.expect("one count read 200 times is one check");
    counted.writes = vec![HandleWrite::Insert { id: LogicalId::new(), physical_id: PhysicalId::new() }];
    counted.count_checks.push(("s".to_owned(), 7));
    assert_eq!(reg.publish(&counted).await.unwrap_err().kind(), ErrorKind::Conflict);
}

/// Databases whose prefixes nest or extend each other never see or
/// delete each other's keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_prefixes_stay_apart() {
    let (_dir, etcd) = cluster(1, &[]).await;
    let outer = open(&etcd, "db").await;
    let root = Handle::new(LogicalId::new(), PhysicalId::new());
    outer
        .create_store(&StoreInfo::new("a", StoreOptions::default(), root.logical_id).unwrap(), &root)
        .await
        .unwrap();
    outer
        .publish(&PublishRequest {
            tx_id: TxId::new(),
            count_deltas: vec![("a".into(), 5)],
            ..Default::default()
        })
        .await
        .unwrap();
    for other in ["db/s", "db/c/61", "dbx", "db/h"] {
        let inner = open(&etcd, other).await;
        let r = Handle::new(LogicalId::new(), PhysicalId::new());
        inner
            .create_store(&StoreInfo::new("a", StoreOptions::default(), r.logical_id).unwrap(), &r)
            .await
            .unwrap();
        inner.remove_store("a").await.unwrap();
        assert!(
            inner.list_handles().await.unwrap().iter().all(|h| h.logical_id != root.logical_id),
            "{other}"
        );
    }
    let stores = outer.list_stores().await.expect("the outer database still lists its stores");
    assert_eq!(stores.iter().map(|s| (s.name.as_str(), s.count)).collect::<Vec<_>>(), vec![("a", 5)]);
    assert_eq!(outer.list_handles().await.unwrap().len(), 1, "only its own root");
}

/// A lost reply to a store's creation or removal is resolved by reading
/// the store back: the caller hears success (the store is there, or gone),
/// never an I/O error for a request that was applied, and never "already
/// exists" or "not found" for its own request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_reply_to_creating_or_removing_a_store_is_resolved() {
    let (_dir, etcd) = cluster(1, &[]).await;
    let cut = proxy::Cut::default();
    let via = proxy::start(etcd.hosts()[0].clone(), cut.clone()).await;
    let reg = EtcdRegistry::from_url(&format!("etcd://{via}/db?timeout_ms=2000")).await.unwrap();
    let direct = open(&etcd, "db").await;
    let marker = || Some(b"db#s/cut".to_vec());
    let info = StoreInfo::new("cut", StoreOptions::default(), LogicalId::new()).unwrap();
    let root = Handle::new(info.root, PhysicalId::new());

    *cut.marker.lock().unwrap() = marker();
    reg.create_store(&info, &root).await.expect("created, whatever became of the reply");
    assert_eq!(cut.cuts.load(std::sync::atomic::Ordering::SeqCst), 1, "the reply was really cut");
    assert_eq!(direct.get_store("cut").await.unwrap().map(|s| s.root), Some(info.root));
    // Another creation under the name is still refused.
    let other = StoreInfo::new("cut", StoreOptions::default(), LogicalId::new()).unwrap();
    let e = reg.create_store(&other, &Handle::new(other.root, PhysicalId::new())).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");

    // The removal reads the store first: let that through, cut the removal.
    cut.skip.store(1, std::sync::atomic::Ordering::SeqCst);
    *cut.marker.lock().unwrap() = marker();
    let removed = reg.remove_store("cut").await.expect("removed, whatever became of the reply");
    assert_eq!(removed.root, info.root);
    assert_eq!(cut.cuts.load(std::sync::atomic::Ordering::SeqCst), 2, "the reply was really cut");
    assert_eq!(direct.get_store("cut").await.unwrap(), None);
    let e = reg.remove_store("cut").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}

#[test]
fn config_defaults_match_etcds() {
    let c = EtcdConfig::from_url("etcd://127.0.0.1:2379/db").unwrap();
    assert_eq!((c.max_txn_ops, c.max_request_bytes), (128, 1536 * 1024));
}

mod proxy {
    //! A loopback TCP proxy that, once armed with a marker, forwards the
    //! client's request that carries the marker to etcd and then cuts the
    //! connection instead of relaying etcd's reply: a reply lost after the
    //! request was applied (or refused).

    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    #[derive(Clone, Default)]
    pub(crate) struct Cut {
        pub(crate) marker: Arc<Mutex<Option<Vec<u8>>>>,
        /// Requests carrying the marker to let through before the cut.
        pub(crate) skip: Arc<AtomicUsize>,
        pub(crate) cuts: Arc<AtomicUsize>,
    }

    /// Listens on a free loopback port, forwarding to `target`.
    pub(crate) async fn start(target: String, cut: Cut) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&target).await else { continue };
                tokio::spawn(pipe(client, server, cut.clone()));
            }
        });
        addr
    }

    async fn pipe(client: TcpStream, server: TcpStream, cut: Cut) {
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        let armed = Arc::new(AtomicBool::new(false));
        let seen = armed.clone();
        let marker = cut.marker.clone();
        let skip = cut.skip.clone();
        let up = tokio::spawn(async move {
            let mut buf = vec![0u8; 1 << 16];
            while let Ok(n) = cr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let hit = marker
                    .lock()
                    .unwrap()
                    .as_ref()
                    .is_some_and(|m| buf[..n].windows(m.len()).any(|w| w == m));
                let skipped = hit
                    && skip.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |k| k.checked_sub(1)).is_ok();
                if hit && !skipped {
                    seen.store(true, Ordering::SeqCst); // before etcd can answer
                }
                if sw.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n) = sr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            if armed.load(Ordering::SeqCst) {
                *cut.marker.lock().unwrap() = None;
                cut.cuts.fetch_add(1, Ordering::SeqCst);
                break; // the reply is dropped and the connection closed
            }
            if cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        up.abort();
    }
}

/// The reply to a publish that etcd applied is lost (the connection cut
/// after the request went through): the registry reads the outcome back
/// from the intent and reports success, never a failure that would make
/// the caller redo or undo a committed transaction. A lost reply to a
/// publish that did not apply (a stale version) is reported as a
/// conflict, and the intent is aborted so the request can never apply
/// later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_reply_is_resolved_from_the_intent() {
    let (_dir, etcd) = cluster(1, &[]).await;
    let cut = proxy::Cut::default();
    let via = proxy::start(etcd.hosts()[0].clone(), cut.clone()).await;
    let reg = EtcdRegistry::from_url(&format!("etcd://{via}/db?timeout_ms=2000")).await.unwrap();
    let direct = open(&etcd, "db").await;

    let publish_cut = |id: LogicalId, write: HandleWrite| {
        let tx = TxId::new();
        let staged = PhysicalId::new();
        let mut committed = Intent::pending(tx, vec![staged]);
        committed.state = IntentState::Committed;
        *cut.marker.lock().unwrap() = Some(format!("db#h/{:032x}", id.as_u128()).into_bytes());
        (tx, PublishRequest { tx_id: tx, writes: vec![write], intent: Some(committed), ..Default::default() })
    };

    // The proxy cuts the connection once it has seen the request; now and
    // then that is before all of it reached etcd, which then never applies
    // it. Either outcome must be reported truly; try until etcd applied one.
    let mut applied = None;
    for attempt in 1..=10 {
        let id = LogicalId::new();
        let (tx, req) = publish_cut(id, HandleWrite::Insert { id, physical_id: PhysicalId::new() });
        reg.put_intent(&Intent::pending(tx, Vec::new())).await.unwrap();
        let got = reg.publish(&req).await;
        assert_eq!(cut.cuts.load(std::sync::atomic::Ordering::SeqCst), attempt, "the reply was really cut");
        let state = direct.get_intent(tx).await.unwrap().map(|i| i.state);
        if direct.get_handles(&[id]).await.unwrap()[0].map(|h| h.version) == Some(1) {
            got.expect("applied, so reported as applied despite the lost reply");
            assert_eq!(state, Some(IntentState::Committed));
            applied = Some(id);
            break;
        }
        assert_eq!(got.unwrap_err().kind(), ErrorKind::Conflict, "not applied: a conflict");
        assert_eq!(state, Some(IntentState::Aborted), "and can never apply later");
    }
    let id = applied.expect("etcd applied none of 10 publishes whose reply was cut");
    let cuts = cut.cuts.load(std::sync::atomic::Ordering::SeqCst);

    let (tx, req) = publish_cut(id, HandleWrite::Update { id, expected: 9, physical_id: PhysicalId::new() });
    reg.put_intent(&Intent::pending(tx, Vec::new())).await.unwrap();
    let e = reg.publish(&req).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert_eq!(cut.cuts.load(std::sync::atomic::Ordering::SeqCst), cuts + 1, "the reply was really cut");
    assert_eq!(direct.get_handles(&[id]).await.unwrap()[0].map(|h| h.version), Some(1), "not applied");
    assert_eq!(direct.get_intent(tx).await.unwrap().map(|i| i.state), Some(IntentState::Aborted));
}

/// A member that cannot start (here an option etcd refuses) is tried again
/// on fresh ports (the cure for a port taken by a parallel test between
/// choosing it and binding it) and, still failing, reported with its log,
/// well before the 30 s readiness timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_keeps_exiting_is_reported_with_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let began = std::time::Instant::now();
    let err = LocalEtcd::start(dir.path(), 1, &["--no-such-option"]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    let text = err.to_string();
    assert!(text.contains("exited") && text.contains("etcd.log"), "{text}");
    assert!(began.elapsed() < std::time::Duration::from_secs(25), "took {:?}", began.elapsed());
}
