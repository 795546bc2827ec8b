//! The commit protocol: intent → stage → validate-and-publish → cleanup,
//! with swarm merge (`super::conflict`) on node-level clashes. When the
//! blob store is the registry's own, intent, staging and publish are one
//! atomic write (`Registry::publish_with_blobs`).

use std::sync::Arc;

use bytes::Bytes;
use sop_cache::{CachedBlob, DeltaLeaf, Layers, LeafSizes};
use sop_core::{
    BlobStore, DeltaOp, Error, HandleWrite, Intent, IntentState, Item, LeafDelta, Node, PhysicalId,
    PublishRequest, Result, VersionCheck,
};

use super::CommitInfo;
use super::conflict::{count_checks, merge};
use crate::claims::Claim;
use crate::failpoint::CommitStep;
use crate::handles::EMPTY_ROOT;
use crate::inner::DbInner;
use crate::tx::state::{Base, TxNode, TxState};

/// Everything one publish attempt writes.
struct Plan {
    request: PublishRequest,
    /// Blobs to stage, with what the node cache should hold for a node.
    staged: Vec<(PhysicalId, Bytes, Option<CachedBlob>)>,
    /// Blobs the leaves were read from that stay live as links of the
    /// chains written: they leave the cache on publish.
    superseded: Vec<PhysicalId>,
    /// Whether the blobs and the committed intent go in the publish's own
    /// atomic write (the blob store is the registry's own): nothing is
    /// written ahead of the publish, so a failed attempt leaves nothing.
    one_write: bool,
}

/// A leaf is written as a delta while its changes since its base (all of
/// its chain's) plus the bytes the base holds for nothing (items deleted
/// since, or moved out by a split) stay within this share (numerator,
/// denominator) of the base's encoding; past it, the leaf is written whole
/// again (consolidation), which starts a new base. Counting the dead bytes
/// keeps a mass delete or a split from pinning a base full of gone items.
/// Measured (`sop-bench --quick --engines sop --phases main`, 2026-12-03):
/// bytes written per inserted item 961 at a quarter, 743 at a half; a
/// chain's link holds only its commit's changes, so the share no longer
/// sets what each commit writes, only how often the base is rewritten.
const DELTA_SHARE: (usize, usize) = (1, 2);

/// A leaf's delta chain holds at most this many blobs (the newest
/// included): a cold read of the leaf reads its base and every one.
/// Measured as `DELTA_SHARE`: 32 wrote 717 bytes per item against 743 for
/// 16, and cold point reads fell from 2 589 to 1 432 per second.
///
/// The chain has two levels: restarts, then links. A commit to a leaf
/// whose links since the last restart number `LEVEL_LINKS` writes a
/// restart instead of a link: its changes since the last restart, in one
/// delta whose chain is the restarts before it, which makes those links
/// obsolete. Once the restarts number `MAX_RESTARTS`, the restart holds
/// every change since the base and has no chain. A change is so written
/// about three times before the leaf is consolidated (as a link, in a
/// restart, in a full restart), where a restart of the whole chain every
/// `MAX_LINKS` links wrote it about once per restart until consolidation.
const MAX_LINKS: usize = MAX_RESTARTS + LEVEL_LINKS;
/// See `MAX_LINKS`.
const MAX_RESTARTS: usize = 8;
/// See `MAX_LINKS`.
const LEVEL_LINKS: usize = 8;
const _: () = assert!(MAX_LINKS <= LeafDelta::MAX_CHAIN, "readers refuse longer chains");

/// How one dirty node is written.
struct Encoded {
    bytes: Bytes,
    /// What the node cache holds for it.
    cached: CachedBlob,
    /// The blobs it makes obsolete.
    obsolete: Vec<PhysicalId>,
    /// The blob it was read from, still live (a link of its chain) but no
    /// longer the leaf's: it leaves the cache.
    superseded: Option<PhysicalId>,
}

/// How one dirty node is written: a new link on the delta chain it was
/// read through, a restart, or the whole node; `keep_restarts` as
/// [`plan`]'s.
fn encode_dirty(n: &TxNode, keep_restarts: bool) -> Encoded {
    if let Some(base) = &n.base
        && let Node::Leaf { items: base_items } = base.node.as_ref()
    {
        let sizes = n.leaf_sizes(base);
        if let Some((bytes, layers, chain)) = link(n, base, sizes) {
            if within_share(layers.ops_size(), sizes, false) {
                let restarts = n.prior_restarts();
                let leaf = DeltaLeaf::of_layers(layers).with_chain(chain).with_restarts(restarts);
                let cached = CachedBlob::delta(leaf, base.id);
                // The delta read, a restart, stays cached where another
                // process shares the registry: its next restart names the
                // restarts as its chain, and a load finds the last one
                // here (`cached_link`) instead of reading the chain cold
                // (after which its next commit restarts the whole chain).
                let keep = keep_restarts && restarts == base.chain.len() + 1;
                let superseded = n.physical.filter(|_| !keep);
                return Encoded { bytes, cached, obsolete: Vec::new(), superseded };
            }
        } else if let Some(e) = level_restart(n, base, sizes) {
            return e;
        } else if let Some(ops) = delta_ops(n, base_items)
            && within_share(LeafDelta::ops_size_hint(&ops), sizes, n.copied())
        {
            debug_assert_eq!(sizes, LeafSizes::of(base_items, &base.index, &ops), "sizes kept");
            let bytes = Bytes::from(LeafDelta { base: base.id, chain: Vec::new(), ops }.encode());
            // A delta with no chain replaces the delta it was read from
            // and that delta's links, never the base.
            let obsolete = if base.under_delta { n.links().collect() } else { Vec::new() };
            // Cached as the base and the changes decoded from the delta's
            // one buffer (`sop_cache::DeltaLeaf`): no pass over the leaf
            // here, and the next writer takes the changes as they are.
            // Merged by the first reader that needs the whole leaf.
            let leaf = LeafDelta::decode(&bytes)
                .map(|d| {
                    let (node, index) = (base.node.clone(), base.index.clone());
                    let layers = Layers::with_sizes(node, index, d.ops, sizes).as_restart();
                    DeltaLeaf::of_layers(layers).with_restarts(1)
                })
                .unwrap_or_else(|_| DeltaLeaf::materialized(n.effective().clone()));
            let cached = CachedBlob::delta(leaf, base.id);
            return Encoded { bytes, cached, obsolete, superseded: None };
        }
    }
    let node = n.effective();
    let obsolete = n.blobs().filter(|p| *p != EMPTY_ROOT).collect();
    Encoded {
        bytes: Bytes::from(node.encode()),
        cached: CachedBlob::node(node.clone()),
        obsolete,
        superseded: None,
    }
}

/// A delta's base may hold at most this share (numerator, denominator) of
/// its bytes for nothing (items moved out) when the leaf was copied (a
/// split or a repair, not changed through its overlay): a split moves
/// about half of a leaf out, so both halves are written whole and no base
/// keeps a moved half alive. A leaf whose items were deleted through its
/// overlay is bounded by `DELTA_SHARE` alone (its changes and dead bytes
/// within half of the base): at a quarter, a leaf emptied by random
/// deletes was rewritten whole about every quarter of its items, some
/// three times its bytes in all (measured: `sop-bench --quick --phases
/// main`, 100 000 deletes, docs/BENCHMARKS.md).
const DEAD_SHARE: (usize, usize) = (1, 4);

/// Whether changes to a leaf of `sizes` that take `ops_size` bytes
/// (`LeafDelta::ops_size_hint`) stay a delta (`DELTA_SHARE`, and
/// `DEAD_SHARE` for a `copied` leaf).
fn within_share(ops_size: usize, sizes: LeafSizes, copied: bool) -> bool {
    let dead = sizes.base_size.saturating_sub(sizes.size);
    (!copied || dead * DEAD_SHARE.1 <= sizes.base_size * DEAD_SHARE.0)
        && (ops_size + dead) * DELTA_SHARE.1 <= sizes.base_size * DELTA_SHARE.0
}

/// For a leaf read through a delta's layers and changed only through its
/// overlay, with room on its chain: the new link (this transaction's
/// changes, naming the delta read and its links), the leaf's layers with
/// the link's changes on top (`sizes` the leaf's with them), and the
/// link's chain.
fn link(n: &TxNode, base: &Base, sizes: LeafSizes) -> Option<(Bytes, Layers, Vec<PhysicalId>)> {
    let prior = n.prior_layers()?;
    let links = (base.chain.len() + 1).saturating_sub(n.prior_restarts());
    if !base.under_delta || links >= LEVEL_LINKS || base.chain.len() + 1 >= MAX_LINKS || n.prior_links_read()
    {
        // A full level of links, or a chain a cold read had to read link
        // by link: restart it (see `MAX_LINKS`; after a cold read, one
        // delta with no chain, so that the next cold read of the leaf is
        // two blobs again).
        return None;
    }
    let link = LeafDelta { base: base.id, chain: n.links().collect(), ops: n.overlay.ops() };
    let bytes = Bytes::from(link.encode());
    // The run keeps the overlay's items, not items decoded from the
    // link's buffer: a link holds a few changes, so one buffer for them
    // saves no cache misses, and decoding what was just encoded (its
    // checksum, two vectors) was 3 % of an update's instructions.
    let LeafDelta { ops, chain, .. } = link;
    Some((bytes, prior.with_run(ops, sizes), chain))
}

/// For a leaf read through a delta's layers and changed only through its
/// overlay, whose chain has a full level of links after fewer than
/// `MAX_RESTARTS` restarts (`MAX_LINKS`): a restart holding the links'
/// changes and this transaction's, naming the restarts as its chain.
/// `None` when the chain's restarts are not known (a cold load: every
/// change since the base is folded instead), are full, or the restarts
/// with this one would outgrow `DELTA_SHARE`.
fn level_restart(n: &TxNode, base: &Base, sizes: LeafSizes) -> Option<Encoded> {
    let prior = n.prior_layers()?;
    let restarts = n.prior_restarts();
    if !base.under_delta || n.prior_links_read() || restarts == 0 || restarts >= MAX_RESTARTS {
        return None;
    }
    let ops = n.overlay.ops_over_held(&prior.links_folded(), |k| prior.restarts_hold(k));
    if !within_share(prior.restarts_size() + LeafDelta::ops_size_hint(&ops), sizes, false) {
        return None;
    }
    let chain: Vec<PhysicalId> = n.links().take(restarts).collect();
    let obsolete: Vec<PhysicalId> = n.links().skip(restarts).collect();
    let delta = LeafDelta { base: base.id, chain, ops };
    let bytes = Bytes::from(delta.encode());
    let LeafDelta { ops, chain, .. } = delta;
    let leaf =
        DeltaLeaf::of_layers(prior.with_restart(ops, sizes)).with_chain(chain).with_restarts(restarts + 1);
    Some(Encoded { bytes, cached: CachedBlob::delta(leaf, base.id), obsolete, superseded: None })
}

/// The changes that turn a dirty leaf's base (`base`) into the leaf as
/// this transaction leaves it; `None` for an internal node. A leaf changed
/// through its overlay takes the overlay as it is (on a leaf read whole)
/// or on top of the delta it was read through, without building the leaf.
fn delta_ops(n: &TxNode, base: &[Item]) -> Option<Vec<DeltaOp>> {
    let Node::Leaf { items: read } = n.node.as_ref() else { return None };
    if let Some(prior) = n.prior_layers() {
        // Read as the base and a delta's changes (`n.node` is the base).
        return Some(n.overlay.ops_over(&prior.folded(), base));
    }
    if n.overlay.is_empty() {
        return Some(LeafDelta::diff(base, read));
    }
    match &n.base {
        Some(b) if b.under_delta => Some(n.overlay.ops_over(&LeafDelta::diff(base, read), base)),
        _ => Some(n.overlay.ops()),
    }
}

/// Whether `st` is read-only and nothing was published since it began:
/// everything it read is still current, and its commit is decided without
/// a plan. (A read transaction's plan, a check per node it read, and its
/// claim, a lock every committer takes, were a tenth of a short scan's
/// instructions, for a request the commit then discarded.)
pub(super) fn quiet(db: &DbInner, st: &TxState) -> bool {
    !st.writable && st.leftover.is_empty() && db.unchanged_since(st.begun)
}

pub(super) async fn commit(db: &Arc<DbInner>, st: &mut TxState) -> Result<CommitInfo> {
    if quiet(db, st) {
        return Ok(CommitInfo::default());
    }
    // Periodic recovery leaves this transaction's intent alone until the
    // commit and its clean-up are done with it.
    let claim = db.claim(st.id);
    let mut merges = 0;
    loop {
        let one_write = db.blobs_in_registry && st.leftover.is_empty();
        let mut plan = plan(st, db.blobs.as_ref(), one_write, !db.exclusive)?;
        #[cfg(feature = "testkit")]
        if !db.config.validate_reads {
            plan.request.checks.clear();
        }
        // A commit the registry could never apply whole is refused before
        // its intent or any blob is written.
        db.registry.publish_limit(&plan.request)?;
        let unstaged = plan.staged.is_empty();
        let outcome = if unstaged && plan.request.is_validation_only() && db.unchanged_since(st.begun) {
            // Validation only, and nothing published since this
            // transaction began: everything it read is still current.
            Ok(())
        } else if unstaged && plan.request.intent.is_none() {
            db.publish(&plan.request).await
        } else {
            publish_with_intent(db, st, &mut plan).await
        };
        match outcome {
            Ok(()) => {
                // Published: this transaction reads nothing more, so it no
                // longer holds back the collection of what it replaced.
                st.finish();
                after_publish(db, &plan, claim).await?;
                return Ok(CommitInfo { merges });
            }
            Err(e) if e.is_conflict() && merges < db.config.max_merges => {
                discard(db, st, &mut plan).await;
                forget_conflicted(db, &e);
                merge(db, st).await?;
                merges += 1;
                st.merges = merges;
            }
            Err(e) if e.is_conflict() => {
                discard(db, st, &mut plan).await;
                forget_conflicted(db, &e);
                return Err(e);
            }
            // Any other error: the outcome may be unknown; leave the intent
            // for recovery, which sees whether it was marked committed.
            Err(e) => return Err(e),
        }
    }
}

/// The publish of `st`'s view; `one_write` as [`Plan::one_write`];
/// `keep_restarts` (another process may write the same leaves) keeps a
/// restart that a new link supersedes in the cache. The node blobs' ids
/// come from the blob store, which may pack them into one record
/// ([`BlobStore::allocate`]).
fn plan(st: &TxState, blobs: &dyn BlobStore, one_write: bool, keep_restarts: bool) -> Result<Plan> {
    let mut request = PublishRequest { tx_id: st.id, ..PublishRequest::default() };
    let mut obsolete: Vec<PhysicalId> = st.obsolete_values.clone();
    let mut superseded = Vec::new();
    // Sized up front: a read transaction's checks and a bulk write's
    // dirty nodes number in the hundreds.
    let dirty_n = st.view.nodes.values().filter(|n| n.dirty).count();
    let mut dirty = Vec::with_capacity(dirty_n);
    request.checks.reserve(st.view.nodes.len() - dirty_n);
    request.writes.reserve(dirty_n + st.view.removed.len());
    for (&id, n) in &st.view.nodes {
        match (n.dirty, n.version) {
            (false, Some(version)) => request.checks.push(VersionCheck { id, version }),
            (false, None) => {}
            (true, version) => {
                let e = encode_dirty(n, keep_restarts);
                obsolete.extend(e.obsolete);
                superseded.extend(e.superseded);
                dirty.push((id, version, e.bytes, e.cached));
            }
        }
    }
    let lens: Vec<usize> = dirty.iter().map(|d| d.2.len()).collect();
    let mut staged = Vec::with_capacity(dirty.len() + st.pending_values.len());
    let ids = blobs.allocate(&lens);
    if ids.len() != lens.len() {
        return Err(Error::invalid(
            "blob store",
            format!("allocate gave {} ids for {} blobs (a wrapper that drops some?)", ids.len(), lens.len()),
        ));
    }
    for ((id, version, bytes, cached), physical_id) in dirty.into_iter().zip(ids) {
        staged.push((physical_id, bytes, Some(cached)));
        request.writes.push(match version {
            Some(expected) => HandleWrite::Update { id, expected, physical_id },
            None => HandleWrite::Insert { id, physical_id },
        });
    }
    for (&id, (expected, blobs)) in &st.view.removed {
        request.writes.push(HandleWrite::Remove { id, expected: *expected });
        obsolete.extend(blobs.iter().copied());
    }
    staged.extend(st.pending_values.iter().map(|(id, v)| (*id, v.clone(), None)));
    request.count_deltas =
        st.stores.iter().filter(|(_, s)| s.delta != 0).map(|(n, s)| (n.to_string(), s.delta)).collect();
    request.count_checks = count_checks(st);
    // One write with nothing made obsolete leaves nothing for anyone to
    // finish or clean up: its blobs and handles land together or not at
    // all, so it needs no intent (a single-key update or transfer: the
    // intent's lookup, its write and its later removal were about a
    // tenth of the commit's instructions).
    let writes = !request.writes.is_empty() || !staged.is_empty();
    if !st.leftover.is_empty() || (writes && (!one_write || !obsolete.is_empty())) {
        let ids = staged.iter().map(|s| s.0).chain(st.leftover.iter().copied()).collect();
        let mut intent = Intent::pending(st.id, ids);
        intent.state = IntentState::Committed;
        obsolete.extend(st.leftover.iter().copied());
        intent.obsolete = obsolete;
        request.intent = Some(intent);
    }
    Ok(Plan { request, staged, superseded, one_write })
}

async fn publish_with_intent(db: &DbInner, st: &TxState, plan: &mut Plan) -> Result<()> {
    let blobs: Vec<(PhysicalId, Bytes)> = plan.staged.iter().map(|(id, b, _)| (*id, b.clone())).collect();
    if plan.one_write {
        // The steps of the two-write protocol, for the crash tests: here
        // nothing is written before the publish.
        db.failpoint(CommitStep::IntentWritten)?;
        db.failpoint(CommitStep::BlobsStaged)?;
        stamp(plan);
        return db.publish_with_blobs(&plan.request, blobs).await;
    }
    let mut pending = plan.request.intent.clone().unwrap_or_else(|| Intent::pending(st.id, Vec::new()));
    pending.state = IntentState::Pending;
    pending.obsolete.clear();
    db.registry.put_intent(&pending).await?;
    db.failpoint(CommitStep::IntentWritten)?;
    db.blobs.put_many(blobs).await?;
    db.failpoint(CommitStep::BlobsStaged)?;
    stamp(plan);
    db.publish(&plan.request).await
}

/// Stamps the committed intent at publish: shared recovery measures from
/// it how long a transaction of another process may still read the blobs
/// it makes obsolete.
fn stamp(plan: &mut Plan) {
    if let Some(intent) = &mut plan.request.intent {
        intent.created_at_ms = sop_core::now_millis();
    }
}

/// After a successful publish: caches, then deferred deletion.
async fn after_publish(db: &Arc<DbInner>, plan: &Plan, claim: Claim) -> Result<()> {
    db.failpoint(CommitStep::Published)?;
    for (id, _, cached) in &plan.staged {
        if let Some(cached) = cached {
            db.cache.insert(*id, cached.clone());
        }
    }
    // A leaf's previous link is read through its new one now; cached,
    // it would count its base a second time against the cache's size.
    for id in &plan.superseded {
        db.cache.remove(*id);
    }
    if let Some(intent) = plan.request.intent.clone() {
        // What this commit replaced leaves the cache now, not when it is
        // evicted: the cache holds the live nodes, not every version ever
        // written (a transaction still reading one reloads it from its
        // blob, which outlives it).
        crate::gc::evict(db, &intent);
        crate::gc::schedule_cleanup(db, intent, claim).await?;
    }
    Ok(())
}

/// A failed attempt's staged blobs are garbage: delete them and the
/// intent. When the deletion fails, the intent stays (recovery can find
/// them) and the blobs are carried into the next attempt's intent, which
/// replaces this one.
async fn discard(db: &DbInner, st: &mut TxState, plan: &mut Plan) {
    let Some(intent) = plan.request.intent.take() else { return };
    if plan.one_write {
        return; // a conflicted one-write publish wrote nothing
    }
    match db.blobs.delete_many(&intent.staged).await {
        Ok(()) => {
            st.leftover.clear();
            if let Err(e) = db.registry.remove_intent(st.id).await {
                tracing::warn!(tx = %st.id, error = %e, "removing a discarded intent failed; recovery will finish it");
            }
        }
        Err(e) => {
            tracing::warn!(tx = %st.id, error = %e, "deleting a failed attempt's blobs failed; carried into the next intent");
            st.leftover = intent.staged;
        }
    }
}

fn forget_conflicted(db: &DbInner, e: &Error) {
    if let Error::Conflict { conflicts } = e {
        for c in conflicts {
            db.handles.forget(c.id);
        }
    }
}
