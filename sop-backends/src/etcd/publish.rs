//! Validate-and-publish as ONE etcd transaction.
//!
//! 1. Read, in one snapshot: the transaction's intent, the stores its
//!    counts name, every counter shard of a store whose count it read, and
//!    for each store whose count it changes one shard (chosen by the
//!    transaction's id, so concurrent commits to one store mostly add to
//!    different keys).
//! 2. Check what the snapshot decides (the intent still `Pending`, the
//!    stores present, the counts read unchanged), then send one
//!    transaction: compare every checked and written handle's etcd
//!    version (which equals the handle's version: every publish writes a
//!    handle once), the intent's and the chosen shards' mod revisions, the
//!    stores' create revisions, and that no shard of a checked count moved
//!    since the snapshot; then put every handle, shard and the intent.
//! 3. A failed compare reads the handles back: any moved handle is a
//!    `Conflict` naming every one; otherwise only a shard, the intent or
//!    a store moved, and the publish starts over from 1.
//!
//! A transaction whose reply is lost (a timeout, a broken connection) may
//! or may not have applied. Its outcome is read back, never guessed: the
//! intent is aborted with a compare (`abort_intent`), which either finds it
//! `Committed` (the publish applied) or makes sure the publish never will
//! (it compares the intent's mod revision, which the abort moved).

use std::collections::BTreeMap;

use etcd_client::{Compare, CompareOp, GetOptions, KeyValue, Txn, TxnOp};
use sop_core::{Error, IntentState, PublishRequest, Registry, Result, Subject, VersionConflict};

use super::error::surely_not_applied;
use super::{EtcdRegistry, decode_count, ranges, sum_counts};

/// Attempts before a publish whose shards keep moving gives up (with a
/// `Conflict`, which the engine retries).
const ATTEMPTS: u32 = 64;
/// Reads of the intent when resolving a lost reply.
const RESOLVE_ATTEMPTS: u32 = 5;
/// Bytes a request spends per operation beyond its key and value (gRPC
/// and protobuf framing, compare fields), counted generously.
const OP_OVERHEAD: usize = 48;

/// What the snapshot read.
struct Snapshot {
    revision: i64,
    /// The intent's mod revision (0 when the request carries none).
    intent_mod: i64,
    /// Each named store's create revision.
    stores: BTreeMap<String, i64>,
    /// Each changed count's chosen shard: its key, value and mod revision.
    shards: BTreeMap<String, (Vec<u8>, i64, i64)>,
}

/// What the request asks of one store's count.
#[derive(Debug, Clone, Copy, Default)]
struct CountUse {
    /// The net delta to add, if any.
    delta: Option<i64>,
    /// The count the transaction read, if it read it.
    seen: Option<u64>,
}

/// The stores the request's counts name, each once. Two different counts
/// read for one store cannot both hold: `Conflict`.
fn stores_named(req: &PublishRequest) -> Result<BTreeMap<&str, CountUse>> {
    let mut named: BTreeMap<&str, CountUse> = BTreeMap::new();
    for (name, seen) in &req.count_checks {
        let u = named.entry(name).or_default();
        if u.seen.is_some_and(|s| s != *seen) {
            return Err(Error::changed(Subject::Count(name.clone()), "was read as two different counts"));
        }
        u.seen = Some(*seen);
    }
    for (name, delta) in &req.count_deltas {
        let u = named.entry(name).or_default();
        u.delta = Some(u.delta.unwrap_or(0).saturating_add(*delta));
    }
    Ok(named)
}

/// Refuses a request that one etcd transaction cannot hold. A request
/// that only validates has no limit: it is checked in chunks read at one
/// revision ([`validate`]).
pub(super) fn limit(reg: &EtcdRegistry, req: &PublishRequest) -> Result<()> {
    if req.is_validation_only() {
        return Ok(());
    }
    let named = stores_named(req)?;
    let deltas = named.values().filter(|u| u.delta.is_some()).count();
    let checked = named.values().filter(|u| u.seen.is_some()).count();
    let intent = usize::from(req.intent.is_some());
    let compares = req.checks.len() + req.writes.len() + intent + named.len() + checked + deltas;
    let puts = req.writes.len() + deltas + intent;
    let reads = intent + named.len() + checked + deltas;
    let ops = compares.max(puts).max(reads);
    let max = reg.config().max_txn_ops;
    if ops > max {
        return Err(Error::invalid(
            "transaction",
            format!(
                "its commit needs {ops} operations in one etcd transaction ({} nodes read, {} written); \
                 this registry allows {max} (etcd's --max-txn-ops, `max_txn_ops` in the URL): \
                 change fewer items per transaction, or raise both limits",
                req.checks.len(),
                req.writes.len()
            ),
        ));
    }
    let key = reg.keys().handle(sop_core::LogicalId::default()).len();
    let handle_bytes = 2 * key + 46 + 2 * OP_OVERHEAD;
    let intent_bytes = req.intent.as_ref().map_or(0, |i| i.encode().len() + 2 * (key + OP_OVERHEAD));
    // Per store: its key (read, compared), the counter prefix and its range
    // end (read, compared) and a shard key (read, compared, put).
    let per_store = |n: &str| 8 * (key + n.len() * 2 + OP_OVERHEAD);
    let bytes = (req.checks.len() * (key + OP_OVERHEAD))
        + req.writes.len() * handle_bytes
        + intent_bytes
        + named.keys().map(|n| per_store(n)).sum::<usize>();
    let max = reg.config().max_request_bytes;
    if bytes > max {
        return Err(Error::invalid(
            "transaction",
            format!(
                "its commit needs about {bytes} bytes in one etcd request; this registry allows {max} \
                 (etcd's --max-request-bytes, `max_request_bytes` in the URL)"
            ),
        ));
    }
    Ok(())
}

pub(super) async fn publish(reg: &EtcdRegistry, req: &PublishRequest) -> Result<()> {
    req.check_shape()?;
    limit(reg, req)?;
    // etcd reads a missing key as version 0: an expectation of version 0
    // (never a real handle's) must not be met by an absent id.
    let zero =
        req.checks.iter().any(|c| c.version == 0) || req.writes.iter().any(|w| w.expected() == Some(0));
    if zero {
        conflicts(reg, req).await?;
    }
    if req.is_validation_only() {
        return validate(reg, req).await;
    }
    let named = stores_named(req)?;
    for attempt in 0..ATTEMPTS {
        let snap = snapshot(reg, req, &named, attempt).await?;
        if let Err(e) = decide(req, &snap.1) {
            // As every backend: moved handles are reported first.
            conflicts(reg, req).await?;
            return Err(e);
        }
        let txn = transaction(reg, req, &named, &snap.0);
        match reg.txn(txn, "publishing").await {
            Ok(resp) if resp.succeeded() => return Ok(()),
            Ok(_) => conflicts(reg, req).await?,
            Err(e) => return resolve(reg, req, e).await,
        }
    }
    let subject =
        req.count_deltas.first().map_or(Subject::Intent(req.tx_id), |(n, _)| Subject::Count(n.clone()));
    Err(Error::changed(subject, format!("kept moving during {ATTEMPTS} publish attempts")))
}

/// A request that only validates: every handle version and count it
/// checks, read at one revision (a consistent snapshot, however many
/// transactions of gets it takes), compared with what it expects.
async fn validate(reg: &EtcdRegistry, req: &PublishRequest) -> Result<()> {
    let named = stores_named(req)?;
    let k = reg.keys();
    let ids = req.touched_ids();
    let mut keys: Vec<Vec<u8>> = ids.iter().map(|id| k.handle(*id)).collect();
    keys.extend(named.keys().map(|n| k.store(n)));
    let (found, revision) = reg.get_many(keys, 0).await?;
    let (handles, stores) = found.split_at(ids.len());
    let current: Vec<Option<u64>> = ids
        .iter()
        .zip(handles)
        .map(|(id, kv)| kv.as_ref().map(|kv| super::decode_handle(*id, kv).map(|h| h.version)).transpose())
        .collect::<Result<_>>()?;
    let version_of = |id| ids.binary_search(&id).ok().and_then(|i| current.get(i).copied().flatten());
    let conflicts = req.conflicts(version_of);
    if !conflicts.is_empty() {
        return Err(Error::Conflict { conflicts });
    }
    for ((name, u), store) in named.iter().zip(stores) {
        if store.is_none() {
            return Err(Error::NotFound(Subject::Store((*name).to_owned())));
        }
        let Some(seen) = u.seen else { continue };
        let opts = GetOptions::new().with_prefix().with_revision(revision);
        let mut resp = reg.get(k.counts(name), Some(opts), "reading a count").await?;
        if u64::try_from(sum_counts(&resp.take_kvs())?).unwrap_or(0) != seen {
            return Err(Error::changed(Subject::Count((*name).to_owned()), format!("is no longer {seen}")));
        }
    }
    Ok(())
}

/// What the snapshot says about the request, beyond handle versions.
struct Facts {
    intent: Option<IntentState>,
    missing_store: Option<String>,
    /// A checked count and its value now, when it differs.
    moved_count: Option<(String, u64)>,
}

fn decide(req: &PublishRequest, facts: &Facts) -> Result<()> {
    if let Some(name) = &facts.missing_store {
        return Err(Error::NotFound(Subject::Store(name.clone())));
    }
    if let Some((name, seen)) = &facts.moved_count {
        return Err(Error::changed(Subject::Count(name.clone()), format!("is no longer {seen}")));
    }
    if req.intent.is_some() && facts.intent != Some(IntentState::Pending) {
        return Err(req.intent_gone());
    }
    Ok(())
}

/// Fails with `Conflict` naming every handle whose version moved, if any.
async fn conflicts(reg: &EtcdRegistry, req: &PublishRequest) -> Result<()> {
    let ids = req.touched_ids();
    let current = reg.get_handles(&ids).await?;
    let version_of =
        |id| ids.binary_search(&id).ok().and_then(|i| current.get(i).copied().flatten()).map(|h| h.version);
    let conflicts: Vec<VersionConflict> = req.conflicts(version_of);
    if conflicts.is_empty() { Ok(()) } else { Err(Error::Conflict { conflicts }) }
}

/// Reads everything the transaction compares beyond handle versions.
async fn snapshot(
    reg: &EtcdRegistry,
    req: &PublishRequest,
    named: &BTreeMap<&str, CountUse>,
    attempt: u32,
) -> Result<(Snapshot, Facts)> {
    let k = reg.keys();
    let shards = reg.config().count_shards;
    let shard = |name: &str| k.count(name, shard_for(req, attempt, shards));
    let mut ops = Vec::new();
    if req.intent.is_some() {
        ops.push(TxnOp::get(k.intent(req.tx_id), None));
    }
    for (name, u) in named {
        ops.push(TxnOp::get(k.store(name), None));
        if u.seen.is_some() {
            ops.push(TxnOp::get(k.counts(name), Some(GetOptions::new().with_prefix())));
        }
        if u.delta.is_some() {
            ops.push(TxnOp::get(shard(name), None));
        }
    }
    let resp = reg.read_txn(Txn::new().and_then(ops), "reading a publish's state").await?;
    let revision = resp.header().map_or(0, |h| h.revision());
    let mut got = ranges(&resp).into_iter();
    let mut next = || got.next().ok_or_else(|| Error::corruption("etcd response", "a read lost its answers"));
    let mut snap = Snapshot { revision, intent_mod: 0, stores: BTreeMap::new(), shards: BTreeMap::new() };
    let mut facts = Facts { intent: None, missing_store: None, moved_count: None };
    if req.intent.is_some()
        && let Some(kv) = next()?.first()
    {
        snap.intent_mod = kv.mod_revision();
        facts.intent = Some(sop_core::Intent::decode(kv.value())?.state);
    }
    for (name, u) in named {
        match next()?.first() {
            Some(kv) => snap.stores.insert((*name).to_owned(), kv.create_revision()),
            None => {
                facts.missing_store.get_or_insert_with(|| (*name).to_owned());
                None
            }
        };
        if let Some(seen) = u.seen {
            let now = u64::try_from(sum_counts(&next()?)?).unwrap_or(0);
            if now != seen && facts.moved_count.is_none() {
                facts.moved_count = Some(((*name).to_owned(), seen));
            }
        }
        if u.delta.is_some() {
            let kv: Option<KeyValue> = next()?.into_iter().next();
            let value = kv.as_ref().map(decode_count).transpose()?.unwrap_or(0);
            let modified = kv.map_or(0, |kv| kv.mod_revision());
            snap.shards.insert((*name).to_owned(), (shard(name), value, modified));
        }
    }
    Ok((snap, facts))
}

/// The counter shard this request adds to on this attempt.
fn shard_for(req: &PublishRequest, attempt: u32, shards: u32) -> u32 {
    let spread = (req.tx_id.as_u128() % u128::from(shards)) as u32;
    (spread + attempt) % shards
}

/// The one transaction: every compare, then every write.
fn transaction(
    reg: &EtcdRegistry,
    req: &PublishRequest,
    named: &BTreeMap<&str, CountUse>,
    snap: &Snapshot,
) -> Txn {
    let k = reg.keys();
    let version = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let mut when: Vec<Compare> =
        req.checks
            .iter()
            .map(|c| Compare::version(k.handle(c.id), CompareOp::Equal, version(c.version)))
            .chain(req.writes.iter().map(|w| {
                Compare::version(k.handle(w.id()), CompareOp::Equal, w.expected().map_or(0, version))
            }))
            .collect();
    let mut then: Vec<TxnOp> = req
        .writes
        .iter()
        .map(|w| match w.result() {
            Some(h) => TxnOp::put(k.handle(h.logical_id), h.encode(), None),
            None => TxnOp::delete(k.handle(w.id()), None),
        })
        .collect();
    for (name, created) in &snap.stores {
        when.push(Compare::create_revision(k.store(name), CompareOp::Equal, *created));
    }
    for name in named.iter().filter(|(_, u)| u.seen.is_some()).map(|(n, _)| n) {
        // No shard of a checked count changed (or appeared) since the read.
        when.push(Compare::mod_revision(k.counts(name), CompareOp::Less, snap.revision + 1).with_prefix());
    }
    for (name, u) in named {
        let (Some(delta), Some((key, value, modified))) = (u.delta, snap.shards.get(*name)) else { continue };
        when.push(Compare::mod_revision(key.clone(), CompareOp::Equal, *modified));
        then.push(TxnOp::put(key.clone(), value.saturating_add(delta).to_le_bytes(), None));
    }
    if let Some(intent) = &req.intent {
        let key = k.intent(req.tx_id);
        when.push(Compare::mod_revision(key.clone(), CompareOp::Equal, snap.intent_mod));
        then.push(TxnOp::put(key, intent.encode(), None));
    }
    Txn::new().when(when).and_then(then)
}

/// A publish whose reply was lost: its outcome, read back.
async fn resolve(reg: &EtcdRegistry, req: &PublishRequest, e: Error) -> Result<()> {
    if surely_not_applied(&e) || req.is_validation_only() {
        return Err(e); // nothing was (or could have been) written
    }
    if req.intent.is_none() {
        return Err(Error::Indeterminate(format!("publish of {}: {e}", req.tx_id)));
    }
    let mut last = e;
    for attempt in 0..RESOLVE_ATTEMPTS {
        match reg.abort_intent(req.tx_id).await {
            Ok(Some(IntentState::Committed)) => return Ok(()),
            Ok(Some(_)) => {
                return Err(Error::changed(
                    Subject::Intent(req.tx_id),
                    format!("was not published (its reply was lost: {last}; the intent is now aborted)"),
                ));
            }
            Ok(None) => break,
            Err(e) => last = e,
        }
        tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
    }
    Err(Error::Indeterminate(format!(
        "publish of {}: the reply was lost and its intent could not be read back: {last}",
        req.tx_id
    )))
}
