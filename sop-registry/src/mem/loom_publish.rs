//! loom model of `MemRegistry::publish_sync`: no lost update, no partial
//! publish, no deadlock between publishes that lock shards in any mix.

use loom::sync::Arc;
use loom::thread;
use sop_core::{HandleWrite, LogicalId, PhysicalId, PublishRequest};

use super::MemRegistry;

fn ids(reg: &MemRegistry) -> (LogicalId, LogicalId, LogicalId) {
    // Three ids spread over both shards, so publishes lock several shards.
    let mut found: Vec<LogicalId> = Vec::new();
    let mut n = 1u128;
    while found.len() < 3 {
        let id = LogicalId::from_u128(n);
        let want = found.len() % 2;
        if reg.shard_of(id) == want {
            found.push(id);
        }
        n += 1;
    }
    (found[0], found[1], found[2])
}

fn setup() -> (Arc<MemRegistry>, LogicalId, LogicalId, LogicalId) {
    let reg = MemRegistry::with_shards(2);
    let (a, b, c) = ids(&reg);
    let writes = [a, b, c]
        .iter()
        .map(|&id| HandleWrite::Insert { id, physical_id: PhysicalId::from_u128(0) })
        .collect();
    reg.publish_sync(&PublishRequest { writes, ..Default::default() }).unwrap();
    (Arc::new(reg), a, b, c)
}

fn update(ids: &[LogicalId], physical: u128) -> PublishRequest {
    let writes = ids
        .iter()
        .map(|&id| HandleWrite::Update { id, expected: 1, physical_id: PhysicalId::from_u128(physical) })
        .collect();
    PublishRequest { writes, ..Default::default() }
}

#[test]
fn loom_overlapping_publishes_exactly_one_wins_wholly() {
    loom::model(|| {
        let (reg, a, b, c) = setup();
        let r1 = reg.clone();
        let t1 = thread::spawn(move || r1.publish_sync(&update(&[a, b], 1)).is_ok());
        let r2 = reg.clone();
        let t2 = thread::spawn(move || r2.publish_sync(&update(&[c, b], 2)).is_ok());
        let (w1, w2) = (t1.join().unwrap(), t2.join().unwrap());
        assert!(w1 ^ w2, "exactly one of two overlapping publishes wins");
        let h = reg.get_handles_sync(&[a, b, c]);
        let phys: Vec<u128> = h.iter().map(|h| h.unwrap().physical_id.as_u128()).collect();
        if w1 {
            assert_eq!(phys, vec![1, 1, 0], "T1 applied wholly, T2 not at all");
        } else {
            assert_eq!(phys, vec![0, 2, 2], "T2 applied wholly, T1 not at all");
        }
    });
}

#[test]
fn loom_cas_increments_are_never_lost() {
    loom::model(|| {
        let (reg, a, _, _) = setup();
        let spawn_incr = |reg: Arc<MemRegistry>| {
            thread::spawn(move || {
                loop {
                    let h = reg.get_handles_sync(&[a])[0].unwrap();
                    let next = PhysicalId::from_u128(h.physical_id.as_u128() + 1);
                    let w = HandleWrite::Update { id: a, expected: h.version, physical_id: next };
                    if reg.publish_sync(&PublishRequest { writes: vec![w], ..Default::default() }).is_ok() {
                        break;
                    }
                    thread::yield_now();
                }
            })
        };
        let t1 = spawn_incr(reg.clone());
        let t2 = spawn_incr(reg.clone());
        t1.join().unwrap();
        t2.join().unwrap();
        let h = reg.get_handles_sync(&[a])[0].unwrap();
        assert_eq!(h.physical_id.as_u128(), 2, "lost update");
        assert_eq!(h.version, 3);
    });
}
