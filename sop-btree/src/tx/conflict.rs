//! Conflict detection: validation of a read set without publishing, and
//! swarm merge — re-checking every logged read on fresh state and
//! replaying the writes there — when a publish meets a node-level clash.

use std::ops::Bound;

use bytes::Bytes;
use sop_core::{Error, LogicalId, PublishRequest, Result, Subject, VersionCheck};

use crate::inner::DbInner;
use crate::tx::log::{RangeRead, ReadEntry};
use crate::tx::state::TxState;

/// Validates the read set without publishing: every node read (written
/// ones at the version read before the write) and every count read.
pub(crate) async fn validate(db: &DbInner, st: &TxState) -> Result<()> {
    if db.unchanged_since(st.begun) {
        return Ok(());
    }
    let mut request = PublishRequest { tx_id: st.id, ..PublishRequest::default() };
    for (&id, n) in &st.view.nodes {
        if let Some(version) = n.version {
            request.checks.push(VersionCheck { id, version });
        }
    }
    for (&id, (version, _)) in &st.view.removed {
        request.checks.push(VersionCheck { id, version: *version });
    }
    request.count_checks = count_checks(st);
    db.publish(&request).await
}

pub(super) fn count_checks(st: &TxState) -> Vec<(String, u64)> {
    st.reads
        .iter()
        .filter_map(|r| match r {
            ReadEntry::Count { store, committed, .. } => Some((store.to_string(), *committed)),
            _ => None,
        })
        .collect()
}

/// Swarm merge: re-checks every logged read on fresh state, then replays
/// the writes there. Fails with `Conflict` when any read changed.
pub(super) async fn merge(db: &DbInner, st: &mut TxState) -> Result<()> {
    st.reset_view();
    let reads = st.reads.clone();
    for entry in &reads {
        recheck(db, st, entry).await?;
    }
    st.replay_writes(db).await?;
    recheck_count_bases(st)
}

async fn recheck(db: &DbInner, st: &mut TxState, entry: &ReadEntry) -> Result<()> {
    match entry {
        ReadEntry::Point { store, key, version } => {
            let (root, slot) = tree_of(db, st, store).await?;
            let now = st.tree(db, root, slot).find(key).await?.map(|i| i.version);
            if now != *version {
                return Err(item_changed(store, key));
            }
        }
        ReadEntry::Range(range) => {
            let RangeRead { store, lo, hi, seen, writes_before } = range.as_ref();
            let (root, slot) = tree_of(db, st, store).await?;
            let own: std::collections::HashSet<Bytes> = st
                .writes
                .iter()
                .take(*writes_before)
                .filter(|w| &w.store == store)
                .map(|w| w.key.clone())
                .collect();
            let fresh = st.tree(db, root, slot).collect_range(lo.clone(), hi).await?;
            let now = fresh.iter().filter(|i| !own.contains(&i.key)).map(|i| (&i.key, i.version));
            if !now.eq(seen.iter()) {
                let subject = Subject::Range { store: store.to_string() };
                return Err(Error::changed(subject, format!("{} changed", show(lo, hi))));
            }
        }
        ReadEntry::Count { store, committed, .. } => {
            let now = db.registry.get_store(store).await?.map(|s| s.count);
            if now != Some(*committed) {
                return Err(Error::changed(Subject::Count(store.to_string()), "changed"));
            }
        }
    }
    Ok(())
}

/// A store's root and slot length, from the transaction's snapshot.
async fn tree_of(db: &DbInner, st: &mut TxState, store: &str) -> Result<(LogicalId, usize)> {
    let info = &st.store(db, store).await?.meta.info;
    Ok((info.root, info.options.slot_length as usize))
}

fn item_changed(store: &str, key: &Bytes) -> Error {
    Error::changed(Subject::Key { store: store.to_owned(), key: key.clone() }, "changed")
}

fn show(lo: &Bound<Bytes>, hi: &Bound<Bytes>) -> String {
    format!("{lo:?}..{hi:?}")
}

/// Fails when a merge changed the own count delta that a logged
/// `count()` included (see [`ReadEntry::Count`]).
fn recheck_count_bases(st: &TxState) -> Result<()> {
    for r in &st.reads {
        let ReadEntry::Count { store, delta, writes_before, .. } = r else { continue };
        let now: i64 = st
            .writes
            .iter()
            .take(*writes_before)
            .filter(|w| w.store == *store)
            .map(|w| i64::from(w.delta))
            .sum();
        if now != *delta {
            let subject = Subject::Count(store.to_string());
            return Err(Error::changed(subject, "included writes whose effect changed"));
        }
    }
    Ok(())
}
