//! The registry conformance suite.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use crate::{
    ErrorKind, Handle, HandleWrite, Intent, IntentState, LogicalId, PhysicalId, PublishRequest, Registry,
    StoreInfo, StoreOptions, TxId, VersionCheck,
};

/// Runs every registry test that needs no reopen.
pub async fn run_registry_suite(reg: Arc<dyn Registry>) {
    handles_round_trip(&*reg).await;
    publish_is_all_or_nothing(&*reg).await;
    stores_and_count_deltas(&*reg).await;
    intents_lifecycle(&*reg).await;
    exactly_non_conflicting_publishes_win(reg.clone()).await;
    cas_counter_is_exact(reg.clone(), 8, 25).await;
    concurrent_count_deltas_are_exact(reg.clone()).await;
    removal_by_root_spares_a_recreated_store(&*reg).await;
}

/// `remove_store_if_root` removes a store only while its root is the one
/// given: a store of the same name created since is left alone.
pub async fn removal_by_root_spares_a_recreated_store(reg: &dyn Registry) {
    let (old_root, new_root) =
        (Handle::new(LogicalId::new(), PhysicalId::new()), Handle::new(LogicalId::new(), PhysicalId::new()));
    let name = format!("recreated-{}", TxId::new());
    let info = StoreInfo::new(&name, StoreOptions::default(), new_root.logical_id).expect("info");
    reg.create_store(&info, &new_root).await.expect("create");
    let spared = reg.remove_store_if_root(&name, old_root.logical_id).await.expect("remove if root");
    assert_eq!(spared, None, "a store with another root was removed");
    assert!(reg.get_store(&name).await.expect("get").is_some());
    let removed = reg.remove_store_if_root(&name, new_root.logical_id).await.expect("remove if root");
    assert_eq!(removed.map(|s| s.root), Some(new_root.logical_id));
    assert!(reg.get_store(&name).await.expect("get").is_none());
    assert_eq!(reg.remove_store_if_root(&name, new_root.logical_id).await.expect("absent"), None);
}

fn insert(id: LogicalId, physical_id: PhysicalId) -> HandleWrite {
    HandleWrite::Insert { id, physical_id }
}

async fn publish_inserts(reg: &dyn Registry, ids: &[LogicalId]) -> Vec<Handle> {
    let writes = ids.iter().map(|&id| insert(id, PhysicalId::new())).collect::<Vec<_>>();
    let req = PublishRequest { tx_id: TxId::new(), writes: writes.clone(), ..Default::default() };
    reg.publish(&req).await.expect("publishing fresh inserts");
    writes.iter().filter_map(HandleWrite::result).collect()
}

/// Inserted handles come back in request order; absent ids give `None`.
pub async fn handles_round_trip(reg: &dyn Registry) {
    let ids: Vec<LogicalId> = (0..5).map(|_| LogicalId::new()).collect();
    let handles = publish_inserts(reg, &ids).await;
    let missing = LogicalId::new();
    let mut query: Vec<LogicalId> = ids.iter().rev().copied().collect();
    query.insert(2, missing);
    let got = reg.get_handles(&query).await.expect("get_handles");
    assert_eq!(got.len(), query.len(), "one answer per id");
    for (id, h) in query.iter().zip(&got) {
        if *id == missing {
            assert_eq!(*h, None, "absent id must give None");
        } else {
            let want = handles.iter().find(|h| h.logical_id == *id).copied();
            assert_eq!(*h, want, "answers must pair with ids by position");
        }
    }
    assert!(reg.get_handles(&[]).await.expect("empty get").is_empty());
    let all = reg.list_handles().await.expect("list_handles");
    assert!(ids.iter().all(|id| all.iter().any(|h| h.logical_id == *id)));
}

/// A request with one stale expectation applies nothing and names every
/// stale id.
pub async fn publish_is_all_or_nothing(reg: &dyn Registry) {
    let ids: Vec<LogicalId> = (0..3).map(|_| LogicalId::new()).collect();
    let h = publish_inserts(reg, &ids).await;
    let fresh = LogicalId::new();
    let req = PublishRequest {
        tx_id: TxId::new(),
        checks: vec![VersionCheck { id: ids[0], version: 7 }],
        writes: vec![
            HandleWrite::Update { id: ids[1], expected: 1, physical_id: PhysicalId::new() },
            HandleWrite::Remove { id: ids[2], expected: 5 },
            insert(fresh, PhysicalId::new()),
        ],
        ..Default::default()
    };
    let err = reg.publish(&req).await.expect_err("stale versions must conflict");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    let crate::Error::Conflict { conflicts } = err else { panic!("want Error::Conflict, got {err}") };
    let named: HashSet<LogicalId> = conflicts.iter().map(|c| c.id).collect();
    assert_eq!(named, HashSet::from([ids[0], ids[2]]), "exactly the stale ids");
    let now = reg.get_handles(&[ids[1], fresh]).await.expect("get");
    assert_eq!(now, vec![Some(h[1]), None], "nothing of a conflicted request is applied");

    // The same request with the right versions applies wholly.
    let ok = PublishRequest {
        tx_id: TxId::new(),
        checks: vec![VersionCheck { id: ids[0], version: 1 }],
        writes: vec![
            HandleWrite::Update { id: ids[1], expected: 1, physical_id: PhysicalId::new() },
            HandleWrite::Remove { id: ids[2], expected: 1 },
            insert(fresh, PhysicalId::new()),
        ],
        ..Default::default()
    };
    reg.publish(&ok).await.expect("valid publish");
    let now = reg.get_handles(&[ids[0], ids[1], ids[2], fresh]).await.expect("get");
    assert_eq!(now[0], Some(h[0]));
    assert_eq!(now[1], ok.writes[0].result());
    assert_eq!(now[1].map(|h| h.version), Some(2));
    assert_eq!(now[2], None);
    assert_eq!(now[3], ok.writes[2].result());
    let dup = PublishRequest { writes: vec![insert(fresh, PhysicalId::new()); 2], ..Default::default() };
    assert_eq!(reg.publish(&dup).await.unwrap_err().kind(), ErrorKind::InvalidInput);
}

/// Store metadata CRUD; count deltas apply with the publish or not at all.
pub async fn stores_and_count_deltas(reg: &dyn Registry) {
    let name = format!("store-{}", TxId::new());
    let root = Handle::new(LogicalId::new(), PhysicalId::new());
    let info = StoreInfo::new(&name, StoreOptions::default(), root.logical_id).expect("info");
    reg.create_store(&info, &root).await.expect("create_store");
    let again = reg.create_store(&info, &root).await.unwrap_err();
    assert_eq!(again.kind(), ErrorKind::AlreadyExists);
    assert_eq!(reg.get_store(&name).await.expect("get"), Some(info.clone()));
    assert_eq!(reg.get_handles(&[root.logical_id]).await.expect("root"), vec![Some(root)]);
    let listed = reg.list_stores().await.expect("list");
    assert!(listed.windows(2).all(|w| w[0].name < w[1].name), "sorted by name");
    assert!(listed.contains(&info));

    let req = PublishRequest {
        tx_id: TxId::new(),
        count_deltas: vec![(name.clone(), 5), (name.clone(), -2)],
        ..Default::default()
    };
    reg.publish(&req).await.expect("deltas");
    assert_eq!(reg.get_store(&name).await.expect("get").map(|s| s.count), Some(3));

    let stale = PublishRequest {
        tx_id: TxId::new(),
        writes: vec![insert(LogicalId::new(), PhysicalId::new())],
        count_checks: vec![(name.clone(), 2)],
        ..Default::default()
    };
    assert_eq!(reg.publish(&stale).await.unwrap_err().kind(), ErrorKind::Conflict, "count moved");
    let held = PublishRequest { count_checks: vec![(name.clone(), 3)], ..Default::default() };
    reg.publish(&held).await.expect("count still 3");

    let id = LogicalId::new();
    let bad = PublishRequest {
        tx_id: TxId::new(),
        writes: vec![insert(id, PhysicalId::new())],
        count_deltas: vec![(name.clone(), 1), ("no-such-store".into(), 1)],
        ..Default::default()
    };
    assert_eq!(reg.publish(&bad).await.unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(reg.get_handles(&[id]).await.expect("get"), vec![None], "nothing applied");
    assert_eq!(reg.get_store(&name).await.expect("get").map(|s| s.count), Some(3));

    assert_eq!(reg.remove_store(&name).await.expect("remove").name, name);
    assert_eq!(reg.remove_store(&name).await.unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(reg.get_store(&name).await.expect("get"), None);
}

/// Intents: put, list by age, marked committed by publish, removed.
pub async fn intents_lifecycle(reg: &dyn Registry) {
    let mut intent = Intent::pending(TxId::new(), vec![PhysicalId::new()]);
    intent.created_at_ms = 1_000;
    reg.put_intent(&intent).await.expect("put_intent");
    assert_eq!(reg.get_intent(intent.tx_id).await.expect("get"), Some(intent.clone()));
    let old = reg.list_intents(2_000).await.expect("list");
    assert!(old.contains(&intent));
    assert!(!reg.list_intents(1_000).await.expect("list").contains(&intent), "strictly older");

    let id = LogicalId::new();
    let mut committed = intent.clone();
    committed.state = IntentState::Committed;
    committed.obsolete = vec![PhysicalId::new()];
    let req = PublishRequest {
        tx_id: intent.tx_id,
        writes: vec![insert(id, PhysicalId::new())],
        intent: Some(committed.clone()),
        ..Default::default()
    };
    reg.publish(&req).await.expect("publish with intent");
    assert_eq!(reg.get_intent(intent.tx_id).await.expect("get"), Some(committed));

    // A conflicted publish leaves the intent as it was.
    let mut other = Intent::pending(TxId::new(), vec![]);
    reg.put_intent(&other).await.expect("put");
    let mut marked = other.clone();
    marked.state = IntentState::Committed;
    let conflicted = PublishRequest {
        tx_id: other.tx_id,
        writes: vec![insert(id, PhysicalId::new())],
        intent: Some(marked),
        ..Default::default()
    };
    assert_eq!(reg.publish(&conflicted).await.unwrap_err().kind(), ErrorKind::Conflict);
    other.state = IntentState::Pending;
    assert_eq!(reg.get_intent(other.tx_id).await.expect("get"), Some(other.clone()));

    // Recovery aborts a pending intent; a late publish of it then fails and
    // applies nothing. A committed intent cannot be aborted.
    let late = Intent::pending(TxId::new(), vec![PhysicalId::new()]);
    reg.put_intent(&late).await.expect("put");
    assert_eq!(reg.abort_intent(late.tx_id).await.expect("abort"), Some(IntentState::Aborted));
    assert_eq!(reg.abort_intent(late.tx_id).await.expect("abort twice"), Some(IntentState::Aborted));
    let fresh = LogicalId::new();
    let mut late_commit = late.clone();
    late_commit.state = IntentState::Committed;
    let req = PublishRequest {
        tx_id: late.tx_id,
        writes: vec![insert(fresh, PhysicalId::new())],
        intent: Some(late_commit),
        ..Default::default()
    };
    assert_eq!(reg.publish(&req).await.unwrap_err().kind(), ErrorKind::Conflict, "aborted intent");
    assert_eq!(reg.get_handles(&[fresh]).await.expect("get"), vec![None]);
    let never_put = PublishRequest {
        tx_id: TxId::new(),
        intent: Some(Intent::pending(TxId::new(), vec![])),
        ..Default::default()
    };
    assert_eq!(reg.publish(&never_put).await.unwrap_err().kind(), ErrorKind::Conflict, "no intent");
    assert_eq!(reg.abort_intent(intent.tx_id).await.expect("abort"), Some(IntentState::Committed));
    assert_eq!(reg.abort_intent(TxId::new()).await.expect("abort absent"), None);
    reg.remove_intent(late.tx_id).await.expect("remove");

    for tx in [intent.tx_id, other.tx_id] {
        reg.remove_intent(tx).await.expect("remove");
        reg.remove_intent(tx).await.expect("removing twice is fine");
        assert_eq!(reg.get_intent(tx).await.expect("get"), None);
    }
}

/// Many tasks publish updates over overlapping id pairs, all expecting the
/// initial version: the winners are pairwise disjoint, every loser overlaps
/// a winner, and the final handles are exactly the winners' writes.
pub async fn exactly_non_conflicting_publishes_win(reg: Arc<dyn Registry>) {
    const IDS: usize = 8;
    const TASKS: usize = 24;
    let ids: Vec<LogicalId> = (0..IDS).map(|_| LogicalId::new()).collect();
    publish_inserts(&*reg, &ids).await;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let pair = [ids[t % IDS], ids[(t * 5 + 1) % IDS]];
        let writes: Vec<HandleWrite> = pair
            .iter()
            .collect::<HashSet<_>>()
            .into_iter()
            .map(|&id| HandleWrite::Update { id, expected: 1, physical_id: PhysicalId::new() })
            .collect();
        let reg = reg.clone();
        tasks.push(tokio::spawn(async move {
            let req = PublishRequest { tx_id: TxId::new(), writes, ..Default::default() };
            let won = match reg.publish(&req).await {
                Ok(()) => true,
                Err(e) if e.kind() == ErrorKind::Conflict => false,
                Err(e) => panic!("unexpected publish error: {e}"),
            };
            (won, req.writes)
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.expect("task"));
    }
    let winners: Vec<&Vec<HandleWrite>> = results.iter().filter(|r| r.0).map(|r| &r.1).collect();
    assert!(!winners.is_empty(), "someone must win");
    let mut claimed = HashSet::new();
    for w in &winners {
        for write in w.iter() {
            assert!(claimed.insert(write.id()), "two winners wrote {}", write.id());
        }
    }
    for (_, writes) in results.iter().filter(|r| !r.0) {
        assert!(writes.iter().any(|w| claimed.contains(&w.id())), "a loser that overlaps no winner");
    }
    let now = reg.get_handles(&ids).await.expect("get");
    for (id, h) in ids.iter().zip(now) {
        let h = h.expect("handle present");
        let winner_write = winners.iter().flat_map(|w| w.iter()).find(|w| w.id() == *id);
        match winner_write {
            Some(w) => assert_eq!(Some(h), w.result(), "final handle is the winner's"),
            None => assert_eq!(h.version, 1, "untouched ids keep their version"),
        }
    }
}

/// `tasks` × `per_task` increments of a counter kept in one handle, each a
/// read-then-publish loop retried on conflict: the total is exact.
pub async fn cas_counter_is_exact(reg: Arc<dyn Registry>, tasks: u64, per_task: u64) {
    let id = LogicalId::new();
    reg.publish(&PublishRequest {
        tx_id: TxId::new(),
        writes: vec![insert(id, PhysicalId::from_u128(0))],
        ..Default::default()
    })
    .await
    .expect("counter");
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let reg = reg.clone();
        handles.push(tokio::spawn(async move {
            let mut retries = 0u64;
            for _ in 0..per_task {
                loop {
                    let h = reg.get_handles(&[id]).await.expect("get")[0].expect("counter");
                    let next = PhysicalId::from_u128(h.physical_id.as_u128() + 1);
                    let req = PublishRequest {
                        tx_id: TxId::new(),
                        writes: vec![HandleWrite::Update { id, expected: h.version, physical_id: next }],
                        ..Default::default()
                    };
                    match reg.publish(&req).await {
                        Ok(()) => break,
                        Err(e) if e.kind() == ErrorKind::Conflict => retries += 1,
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                    tokio::task::yield_now().await;
                }
            }
            retries
        }));
    }
    for h in handles {
        h.await.expect("task");
    }
    let h = reg.get_handles(&[id]).await.expect("get")[0].expect("counter");
    assert_eq!(h.physical_id.as_u128(), u128::from(tasks * per_task), "lost update");
    assert_eq!(h.version, tasks * per_task + 1);
}

/// Count deltas from concurrent publishes never conflict and sum exactly.
pub async fn concurrent_count_deltas_are_exact(reg: Arc<dyn Registry>) {
    let name = format!("counted-{}", TxId::new());
    let root = Handle::new(LogicalId::new(), PhysicalId::new());
    let info = StoreInfo::new(&name, StoreOptions::default(), root.logical_id).expect("info");
    reg.create_store(&info, &root).await.expect("create");
    let base = PublishRequest { count_deltas: vec![(name.clone(), 1000)], ..Default::default() };
    reg.publish(&base).await.expect("base count");
    let mut tasks = Vec::new();
    for t in 0..16i64 {
        let (reg, name) = (reg.clone(), name.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                let req = PublishRequest {
                    tx_id: TxId::new(),
                    count_deltas: vec![(name.clone(), if t % 4 == 0 { -1 } else { 3 })],
                    ..Default::default()
                };
                reg.publish(&req).await.expect("deltas never conflict");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let count = reg.get_store(&name).await.expect("get").expect("store").count;
    assert_eq!(count, 1000 + 12 * 10 * 3 - 4 * 10);
    reg.remove_store(&name).await.expect("remove");
}

/// Writes through one instance, drops it, reopens with `open`, and checks
/// that handles, stores, counts and intents all survived.
pub async fn reopen_keeps_everything<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Registry>>,
{
    let reg = open().await;
    let ids: Vec<LogicalId> = (0..10).map(|_| LogicalId::new()).collect();
    let handles = publish_inserts(&*reg, &ids).await;
    let root = Handle::new(LogicalId::new(), PhysicalId::new());
    let info = StoreInfo::new("durable", StoreOptions::default(), root.logical_id).expect("info");
    reg.create_store(&info, &root).await.expect("create");
    let update = HandleWrite::Update { id: ids[0], expected: 1, physical_id: PhysicalId::new() };
    let intent = Intent::pending(TxId::new(), vec![PhysicalId::new()]);
    reg.put_intent(&intent).await.expect("intent");
    reg.publish(&PublishRequest {
        tx_id: TxId::new(),
        writes: vec![update],
        count_deltas: vec![("durable".into(), 42)],
        ..Default::default()
    })
    .await
    .expect("publish");
    drop(reg);

    let reg = open().await;
    let got = reg.get_handles(&ids).await.expect("get");
    assert_eq!(got[0], update.result());
    assert_eq!(&got[1..], &handles[1..].iter().copied().map(Some).collect::<Vec<_>>()[..]);
    let store = reg.get_store("durable").await.expect("get").expect("store survives");
    assert_eq!(store.count, 42);
    assert_eq!(store.root, root.logical_id);
    assert_eq!(reg.get_intent(intent.tx_id).await.expect("get"), Some(intent));
}
