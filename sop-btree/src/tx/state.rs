//! [`TxState`]: a transaction's private state — its [`View`] of the nodes
//! it read (with the versions seen) or changed, its item-level log, its
//! count deltas — and [`Loader`], the view as the tree's node source.

use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::Bytes;
use sop_cache::{CachedBlob, DeltaLeaf, Layers, LeafSizes};
use sop_core::{Error, Item, KeyIndex, LeafDelta, LogicalId, Node, PhysicalId, Result, Subject, TxId};

use crate::clock::Stamp;
use crate::epoch::EpochGuard;
use crate::handles::{EMPTY_ROOT, Front};
use crate::inner::{CachedStore, DbInner, store_not_found};
use crate::tree::{NodeSource, Placed, Target, Tree, child_of, item_in, search_items};
use crate::tx::log::{ReadEntry, WriteOp};
use crate::tx::overlay::Overlay;

/// One node as the transaction sees it.
#[derive(Debug, Clone)]
pub(crate) struct TxNode {
    /// The node as read, or as this transaction changed it in place (a
    /// copy of its own); a leaf's changes may instead sit in `overlay`.
    /// For a leaf read through a delta with `prior` set, the delta's base.
    pub(crate) node: Arc<Node>,
    /// For a leaf read through a delta, as the cache keeps it: the delta's
    /// changes, which lie between `node` (the base) and `overlay`
    /// (`sop_cache::DeltaLeaf`). The leaf as read is `node` with them.
    prior: Option<Arc<DeltaLeaf>>,
    // `physical` is `None` also for a store's blob-less empty root.
    /// The handle version read; `None` for a node this transaction created.
    pub(crate) version: Option<u64>,
    /// The blob it was read from; `None` for a new node.
    pub(crate) physical: Option<PhysicalId>,
    pub(crate) dirty: bool,
    /// For a leaf read from a blob: the full leaf blob a delta written for
    /// it would apply to (`crate::tx::commit`).
    pub(crate) base: Option<Base>,
    /// The search index of `node` as read (for a leaf with `prior`, the
    /// base's); dropped on its first change.
    pub(crate) index: Option<Arc<KeyIndex>>,
    /// A leaf's changes kept aside, `node` being the leaf as read
    /// (`crate::tx::overlay`).
    pub(crate) overlay: Overlay,
    /// The items the leaf as read holds (`node`, with `prior` when set)
    /// with the overlay applied; kept while the
    /// leaf is `overlaid` (unused, and not kept, once it is copied).
    len: usize,
    /// How the overlay changed the leaf's size (`Item::size_hint` sums),
    /// kept as `len` is.
    size_change: isize,
    /// `node` with the overlay applied, built on first use.
    merged: OnceLock<Arc<Node>>,
}

/// The full leaf a leaf's next delta applies to: the leaf's own blob when
/// that is a full leaf, else the base of the delta it was read from.
#[derive(Debug, Clone)]
pub(crate) struct Base {
    pub(crate) id: PhysicalId,
    pub(crate) node: Arc<Node>,
    /// `node`'s search index.
    pub(crate) index: Arc<KeyIndex>,
    /// Whether the leaf was read from a delta (on `id`), not from `id`.
    pub(crate) under_delta: bool,
    /// The earlier links of the delta it was read from, oldest first (the
    /// delta itself is the leaf's `physical`).
    pub(crate) chain: Vec<PhysicalId>,
}

impl TxNode {
    /// An entry for `node`, unchanged.
    fn new(node: Arc<Node>, version: Option<u64>, physical: Option<PhysicalId>) -> Self {
        let len = crate::tree::fill(&node);
        Self {
            node,
            prior: None,
            version,
            physical,
            dirty: false,
            base: None,
            index: None,
            overlay: Overlay::default(),
            len,
            size_change: 0,
            merged: OnceLock::new(),
        }
    }

    /// An entry for a leaf read through a delta, kept as its base and
    /// changes (`layers` are `leaf`'s).
    fn layered(leaf: Arc<DeltaLeaf>, layers: &Layers, version: u64, physical: PhysicalId) -> Self {
        let mut entry = Self::new(layers.base.clone(), Some(version), Some(physical));
        entry.index = Some(layers.base_index.clone());
        entry.len = layers.sizes.len;
        entry.prior = Some(leaf);
        entry
    }

    /// The node with this transaction's changes.
    pub(crate) fn effective(&self) -> &Arc<Node> {
        match (&self.prior, self.overlay.is_empty()) {
            (None, true) => &self.node,
            (Some(prior), true) => prior.merged().0,
            (prior, false) => self.merged.get_or_init(|| {
                // Built straight from the base, the delta's changes and the
                // overlay when no reader has merged the delta yet: merging
                // it first built a leaf and its index that this commit
                // replaces (a whole-leaf write, a split).
                if let Some(layers) =
                    prior.as_ref().filter(|p| p.merged_if_built().is_none()).and_then(|p| p.layers())
                {
                    let base = layers.base_items();
                    let ops = self.overlay.ops_over(&layers.folded(), base);
                    return Arc::new(Node::Leaf { items: LeafDelta::apply_ops(base, &ops) });
                }
                let read = prior.as_ref().map_or(&self.node, |p| p.merged().0);
                match read.as_ref() {
                    Node::Leaf { items } => Arc::new(Node::Leaf { items: self.overlay.apply(items) }),
                    internal => Arc::new(internal.clone()), // overlays are on leaves only
                }
            }),
        }
    }

    /// The search index of `effective()`, when it has one.
    fn effective_index(&self) -> Option<&KeyIndex> {
        let index = match (&self.prior, self.overlay.is_empty()) {
            (None, true) => self.index.as_deref(),
            (Some(prior), true) => prior.merged_if_built().map(|(_, index)| index.as_ref()),
            (_, false) => None,
        };
        debug_assert!(
            index.is_none_or(|i| i.len() == crate::tree::fill(self.effective())),
            "an index of other keys than the node's"
        );
        index
    }

    /// Whether changes to this leaf may go to its overlay: it is as read,
    /// or changed through the overlay only (not copied, not built here).
    fn overlaid(&self) -> bool {
        self.node.is_leaf() && self.version.is_some() && (!self.dirty || !self.overlay.is_empty())
    }

    /// Whether the node was changed as a private copy (a split, a repair):
    /// dirty, and not through its overlay alone.
    pub(crate) fn copied(&self) -> bool {
        self.dirty && !self.layered_read()
    }

    /// Whether finding an item takes more than a search of `node`.
    fn layered_read(&self) -> bool {
        self.prior.is_some() || !self.overlay.is_empty()
    }

    /// The item under `key` in the leaf as read (the delta's change, else
    /// `node` searched by its index).
    fn read_item(&self, key: &[u8]) -> Option<&Item> {
        if let Some(change) = self.prior.as_ref().and_then(|p| p.layers()).and_then(|l| l.change(key)) {
            return change;
        }
        let Node::Leaf { items } = self.node.as_ref() else { return None };
        search_items(items, self.index.as_deref(), key).ok().and_then(|i| items.get(i))
    }

    /// Whether the delta this leaf was read through was loaded by reading
    /// its earlier links from the blob store.
    pub(crate) fn prior_links_read(&self) -> bool {
        self.prior.as_ref().is_some_and(|p| p.links_read())
    }

    /// How many of the oldest blobs of the chain this leaf was read
    /// through are restarts (`sop_cache::DeltaLeaf::restarts`).
    pub(crate) fn prior_restarts(&self) -> usize {
        self.prior.as_ref().map_or(0, |p| p.restarts())
    }

    /// The base and the delta's changes this leaf was read through.
    pub(crate) fn prior_layers(&self) -> Option<&Layers> {
        self.prior.as_ref().and_then(|p| p.layers())
    }

    /// The leaf's count and size as this transaction leaves it, and its
    /// base's size, without a pass over the leaf where the delta it was
    /// read through knows them.
    pub(crate) fn leaf_sizes(&self, base: &Base) -> LeafSizes {
        let prior = self.prior_layers().map(|l| l.sizes);
        let base_size = prior.map_or_else(|| base.node.size_hint(), |s| s.base_size);
        if !self.layered_read() {
            let node = self.effective();
            return LeafSizes { len: crate::tree::fill(node), base_size, size: node.size_hint() };
        }
        let read = match prior {
            Some(s) => s.size,
            None if Arc::ptr_eq(&self.node, &base.node) => base_size,
            None => self.node.size_hint(),
        };
        LeafSizes { len: self.len, base_size, size: read.saturating_add_signed(self.size_change) }
    }

    /// The item under `key` with the overlay applied, and whether the
    /// leaf as read holds the key.
    fn current(&self, key: &[u8]) -> (Option<Item>, bool) {
        match self.overlay.change(key) {
            Some((item, held)) => (item.cloned(), held),
            None => {
                let found = self.read_item(key).cloned();
                let held = found.is_some();
                (found, held)
            }
        }
    }

    /// Notes a change made through the overlay; `len` is the new count.
    /// The leaf is as read with the overlay (`overlaid`), so an overlay
    /// that is empty again (a key put and then deleted) leaves nothing to
    /// write: the leaf is a clean read once more.
    fn changed(&mut self, len: usize) {
        self.len = len;
        self.dirty = !self.overlay.is_empty();
        self.merged = OnceLock::new();
    }

    /// Turns the delta and the overlay into a copy of the node's own (for
    /// changes the overlay does not take), reusing the built node.
    fn materialize(&mut self) {
        if self.layered_read() {
            let node = self.effective().clone();
            self.node = node;
            self.prior = None;
            self.overlay = Overlay::default();
            self.merged = OnceLock::new();
            self.size_change = 0;
        }
    }

    /// The blobs that hold this node as read: its own, and its delta's
    /// base and earlier links (freed together when the node is rewritten
    /// whole or removed).
    pub(crate) fn blobs(&self) -> impl Iterator<Item = PhysicalId> {
        let under = self.base.as_ref().filter(|b| b.under_delta);
        let base = under.map(|b| b.id);
        let links = under.into_iter().flat_map(|b| b.chain.iter().copied());
        self.physical.into_iter().chain(base).chain(links)
    }

    /// The earlier links of the delta this leaf was read from, and its
    /// own blob: the chain a new link on it names.
    pub(crate) fn links(&self) -> impl Iterator<Item = PhysicalId> {
        let under = self.base.as_ref().filter(|b| b.under_delta);
        under.into_iter().flat_map(|b| b.chain.iter().copied()).chain(self.physical)
    }
}

/// The nodes a transaction read, changed, created or removed.
#[derive(Debug, Default)]
pub(crate) struct View {
    /// Keyed by our own random ids, so a fast non-keyed hasher is safe.
    pub(crate) nodes: FxHashMap<LogicalId, TxNode>,
    /// Nodes removed: the version read and the blobs to free.
    pub(crate) removed: FxHashMap<LogicalId, (u64, Vec<PhysicalId>)>,
}

/// The nodes a read-only transaction's view first makes room for: grown
/// from empty one entry at a time, a 100-get read transaction's map
/// rehashed its entries five times (4 % of its instructions,
/// `docs/BENCHMARKS.md`).
const VIEW_START: usize = 32;

/// The same for a writer's view. An entry takes about 240 bytes, so room
/// for 32 was a 14 KiB allocation for a transfer that reads five nodes
/// (1.6 % of its instructions). Past it, a writer's map grows by
/// `VIEW_START` at least, so that a bulk write, which reads hundreds of
/// nodes, rehashes no more often than before.
const WRITER_VIEW_START: usize = 8;

impl View {
    /// Adds node `id` as read (by a writer when `writable`).
    fn insert(&mut self, id: LogicalId, entry: TxNode, writable: bool) {
        let room = self.nodes.capacity();
        if self.nodes.len() == room {
            let start = if writable { WRITER_VIEW_START } else { VIEW_START };
            self.nodes.reserve(if room == 0 { start } else { room.max(VIEW_START) });
        }
        self.nodes.insert(id, entry);
    }
}

/// A transaction's view with the database it loads from: the node source
/// the tree's algorithms run on.
#[derive(Debug)]
pub(crate) struct Loader<'a> {
    view: &'a mut View,
    db: &'a DbInner,
    /// The root of the tree being read: a missing blob under a tree whose
    /// root is gone is a store removed meanwhile, not data loss.
    root: LogicalId,
    /// Whether the transaction may write: only then are leaves loaded with
    /// the base a delta of theirs would apply to.
    writable: bool,
}

/// A store as the transaction sees it.
#[derive(Debug, Clone)]
pub(crate) struct TxStore {
    /// The name (shared by every log entry about this store), root and
    /// options (its `count` is not the committed count).
    pub(crate) meta: CachedStore,
    /// The committed count, read from the registry on first use.
    pub(crate) committed: Option<u64>,
    pub(crate) delta: i64,
    /// Keys this transaction wrote. (A non-keyed hasher: only the
    /// transaction's own client chooses these keys.)
    pub(crate) written: FxHashSet<Bytes>,
}

/// The private state of one transaction.
#[derive(Debug)]
pub(crate) struct TxState {
    pub(crate) id: TxId,
    pub(crate) writable: bool,
    pub(crate) deadline: Instant,
    pub(crate) timeout: std::time::Duration,
    /// The nodes read, changed, created and removed.
    pub(crate) view: View,
    pub(crate) stores: FxHashMap<Arc<str>, TxStore>,
    pub(crate) reads: Vec<ReadEntry>,
    pub(crate) writes: Vec<WriteOp>,
    /// Value blobs made unreachable by this transaction's writes.
    pub(crate) obsolete_values: Vec<PhysicalId>,
    /// Large values written by this transaction, staged at commit.
    pub(crate) pending_values: FxHashMap<PhysicalId, Bytes>,
    /// Blobs staged by earlier publish attempts whose discard failed: they
    /// go into every later intent (staged, and obsolete once committed), so
    /// that clean-up or recovery deletes them.
    pub(crate) leftover: Vec<PhysicalId>,
    /// Set when the transaction committed, rolled back or failed.
    pub(crate) finished: bool,
    /// Set while a write changes the view, cleared when it has logged
    /// itself: still set, the write was dropped (cancelled) or failed
    /// midway (a delete that had removed its item was repairing the tree),
    /// and the view no longer matches the write log and counts, so the
    /// transaction can only be rolled back (`check_live`).
    pub(crate) writing: bool,
    /// `finished`, readable without the state's lock (`TxShared::check_live`).
    pub(crate) over: Arc<AtomicBool>,
    /// This transaction's place among the live ones (`crate::epoch`);
    /// dropped when it finishes, releasing blobs it might have read.
    pub(crate) epoch: Option<EpochGuard>,
    /// Counters for the swarm-merge report.
    pub(crate) merges: u32,
    /// The publish clock when the transaction began (`crate::clock`).
    pub(crate) begun: Stamp,
}

impl TxState {
    pub(crate) fn new(writable: bool, timeout: std::time::Duration, epoch: EpochGuard, begun: Stamp) -> Self {
        Self {
            begun,
            id: TxId::new(),
            writable,
            deadline: Instant::now() + timeout,
            timeout,
            view: View::default(),
            stores: FxHashMap::default(),
            reads: Vec::new(),
            writes: Vec::new(),
            obsolete_values: Vec::new(),
            pending_values: FxHashMap::default(),
            leftover: Vec::new(),
            finished: false,
            writing: false,
            over: Arc::default(),
            epoch: Some(epoch),
            merges: 0,
        }
    }

    /// Forgets every node and store snapshot (keeps the logs): the start of
    /// a swarm merge, which re-reads everything fresh.
    pub(crate) fn reset_view(&mut self) {
        self.view = View::default();
        self.obsolete_values.clear();
        self.pending_values.clear();
        for s in self.stores.values_mut() {
            s.delta = 0;
            s.written.clear();
        }
    }

    /// Fails if the transaction is over or past its deadline.
    pub(crate) fn check_live(&self) -> Result<()> {
        if self.finished {
            return Err(Error::Closed(format!("transaction {}", self.id)));
        }
        if self.writing {
            return Err(Error::Closed(format!(
                "transaction {}: a write was cancelled or failed midway; roll it back",
                self.id
            )));
        }
        if Instant::now() > self.deadline {
            return Err(Error::Timeout { what: format!("transaction {}", self.id), after: self.timeout });
        }
        Ok(())
    }

    /// Fails unless this is a write transaction.
    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(Error::invalid("transaction", format!("transaction {} is read-only", self.id)))
        }
    }

    /// Marks the transaction over and releases its place among the live
    /// ones (blobs only it could still reach may now be collected).
    pub(crate) fn finish(&mut self) {
        self.finished = true;
        self.over.store(true, Ordering::Release);
        self.epoch = None;
    }

    /// The tree rooted at `root` (fill bound `slot`) over this view.
    pub(crate) fn tree<'a>(&'a mut self, db: &'a DbInner, root: LogicalId, slot: usize) -> Tree<Loader<'a>> {
        Tree::new(Loader { view: &mut self.view, db, root, writable: self.writable }, root, slot)
    }

    /// The store snapshot `name`, loading it from the registry on first use.
    pub(crate) async fn store(&mut self, db: &DbInner, name: &str) -> Result<&mut TxStore> {
        if !self.stores.contains_key(name) {
            let cached = db.cached_store(name).await?;
            let name = cached.name.clone();
            let store = TxStore { meta: cached, committed: None, delta: 0, written: FxHashSet::default() };
            self.stores.insert(name, store);
        }
        self.stores.get_mut(name).ok_or_else(|| store_not_found(name))
    }
}

impl NodeSource for Loader<'_> {
    /// Makes sure node `id` is in the view, loading it if needed.
    ///
    /// A handle from the handle cache may be stale, its blob collected
    /// since (another process moved the node): a missing blob makes the
    /// read ask the registry once more and go on with the fresh handle. A
    /// handle the registry confirms whose blob is still missing is data
    /// loss (`Corruption`), unless the tree's root is gone (the store was
    /// removed and its sweep is under way); a node that moved again
    /// meanwhile, or such a store, is a retryable conflict.
    async fn load(&mut self, id: LogicalId) -> Result<()> {
        let db = self.db;
        if self.try_load(id) {
            return Ok(());
        }
        let mut handle = db.handle(id).await?;
        let mut refreshed = 0;
        let entry = loop {
            let Some(h) = handle else {
                db.forget_store_with_root(id);
                return Err(moved(id));
            };
            match fetch(db, h, self.writable).await {
                Ok(entry) => break entry,
                Err(e) if e.kind() != sop_core::ErrorKind::NotFound => return Err(e),
                Err(_) if refreshed == 2 => return Err(moved(id)),
                Err(_) => {
                    refreshed += 1;
                    let fresh = db.refresh_handle(id).await?;
                    if fresh == Some(h) && id != self.root && db.refresh_handle(self.root).await?.is_none() {
                        db.forget_store_with_root(self.root);
                        return Err(moved(id));
                    }
                    if fresh == Some(h) {
                        return Err(Error::corruption(
                            "node",
                            format!(
                                "node {id} is at version {} but its blob {} is missing",
                                h.version, h.physical_id
                            ),
                        ));
                    }
                    handle = fresh;
                }
            }
        };
        self.view.insert(id, entry, self.writable);
        Ok(())
    }

    /// In the view already, or (read-only) a front of the handle cache:
    /// no `.await`, no load future.
    fn try_load(&mut self, id: LogicalId) -> bool {
        if self.view.nodes.contains_key(&id) {
            return true;
        }
        if self.writable {
            return false;
        }
        let Some((h, front)) = self.db.handles.get_front(id) else { return false };
        let mut entry = TxNode::new(front.node, Some(h.version), Some(h.physical_id));
        entry.index = Some(front.index);
        self.view.insert(id, entry, self.writable);
        true
    }

    /// One lookup of the node; a leaf is told by the node as read, so
    /// that its changes are not built to learn that it is a leaf.
    fn child(&self, id: LogicalId, target: Target<'_>) -> Result<Option<(usize, LogicalId)>> {
        let n = self.view.nodes.get(&id).ok_or_else(|| not_loaded(id))?;
        if n.node.is_leaf() {
            return Ok(None);
        }
        child_of(id, n.effective(), n.effective_index(), target).map(Some)
    }

    /// One lookup of the leaf. When its changes sit in an overlay or a
    /// delta beside it, the key is found there, or in the node as read
    /// by its index, without building the leaf with its changes.
    fn leaf_item(&self, id: LogicalId, key: &[u8]) -> Result<Option<&Item>> {
        let n = self.view.nodes.get(&id).ok_or_else(|| not_loaded(id))?;
        if n.layered_read() {
            return Ok(match n.overlay.get(key) {
                Some(changed) => changed,
                None => n.read_item(key),
            });
        }
        item_in(id, n.effective(), n.effective_index(), key)
    }

    /// Node `id` with this transaction's changes; it must be in the view.
    fn node(&self, id: LogicalId) -> Result<&Arc<Node>> {
        self.view.nodes.get(&id).map(TxNode::effective).ok_or_else(|| not_loaded(id))
    }

    /// The search index of node `id` as `node` returns it.
    fn index(&self, id: LogicalId) -> Option<&KeyIndex> {
        self.view.nodes.get(&id).and_then(TxNode::effective_index)
    }

    /// Puts `item` in leaf `id`'s overlay when that needs no split.
    fn put_in_leaf(&mut self, id: LogicalId, item: Item, slot: usize) -> Result<Placed> {
        let entry = self.view.nodes.get_mut(&id).ok_or_else(|| not_loaded(id))?;
        if !entry.overlaid() {
            return Ok(Placed::Declined(item));
        }
        let (old, held) = entry.current(&item.key);
        let len = entry.len + usize::from(old.is_none());
        if len > slot {
            return Ok(Placed::Declined(item));
        }
        entry.size_change += signed(item.size_hint()) - old.as_ref().map_or(0, |o| signed(o.size_hint()));
        entry.overlay.put(item, held);
        entry.changed(len);
        Ok(Placed::Done(old))
    }

    /// Deletes `key` from leaf `id`'s overlay when that leaves at least
    /// `min` items (no repair).
    fn remove_from_leaf(&mut self, id: LogicalId, key: &[u8], min: usize) -> Result<Option<Option<Item>>> {
        let entry = self.view.nodes.get_mut(&id).ok_or_else(|| not_loaded(id))?;
        if !entry.overlaid() {
            return Ok(None);
        }
        let (old, held) = entry.current(key);
        let Some(old) = old else { return Ok(Some(None)) };
        if entry.len <= min {
            return Ok(None);
        }
        entry.size_change -= signed(old.size_hint());
        entry.overlay.delete(old.key.clone(), held);
        entry.changed(entry.len - 1);
        Ok(Some(Some(old)))
    }

    /// Node `id` for writing: copied on first write (or built from its
    /// overlay), marked dirty (its search index is dropped: it described
    /// the node as read).
    fn node_mut(&mut self, id: LogicalId) -> Result<&mut Node> {
        let entry = self.view.nodes.get_mut(&id).ok_or_else(|| not_loaded(id))?;
        entry.materialize();
        entry.dirty = true;
        entry.index = None;
        Ok(Arc::make_mut(&mut entry.node))
    }

    /// Replaces node `id`'s contents.
    fn set_node(&mut self, id: LogicalId, node: Node) -> Result<()> {
        let entry = self.view.nodes.get_mut(&id).ok_or_else(|| not_loaded(id))?;
        entry.overlay = Overlay::default();
        entry.prior = None;
        entry.size_change = 0;
        entry.merged = OnceLock::new();
        entry.dirty = true;
        entry.index = None;
        entry.node = Arc::new(node);
        Ok(())
    }

    /// Adds a node created by this transaction.
    fn alloc(&mut self, node: Node) -> LogicalId {
        let id = LogicalId::new();
        let mut entry = TxNode::new(Arc::new(node), None, None);
        entry.dirty = true;
        self.view.nodes.insert(id, entry);
        id
    }

    /// Removes node `id` from the tree.
    fn free(&mut self, id: LogicalId) {
        if let Some(entry) = self.view.nodes.remove(&id)
            && let Some(v) = entry.version
            && entry.physical.is_some()
        {
            self.view.removed.insert(id, (v, entry.blobs().collect()));
        }
    }
}

/// The node a handle names, as a clean view entry.
async fn fetch(db: &DbInner, handle: sop_core::Handle, with_base: bool) -> Result<TxNode> {
    let id = handle.physical_id;
    let version = Some(handle.version);
    if id == EMPTY_ROOT {
        return Ok(TxNode::new(Arc::new(Node::empty_leaf()), version, None));
    }
    // A hit is taken here; only a miss awaits the cache's loader, boxed
    // (a large future, moved with every read's otherwise).
    let blob = match db.cache.get_in_memory(id) {
        Some(hit) if !matches!(hit, CachedBlob::Value(_)) => hit,
        _ => Box::pin(db.cache.node_blob(id, &db.blobs)).await?,
    };
    // `weight`: what the node weighs as a reader's front (unused by a
    // writer, which attaches none).
    let (node, index, base, weight) = match blob {
        CachedBlob::Delta { leaf, base } if with_base => match leaf.layers() {
            // A writer takes the base and the changes as they are.
            Some(layers) => {
                let mut entry = TxNode::layered(leaf.clone(), layers, handle.version, id);
                let (node, index) = (layers.base.clone(), layers.base_index.clone());
                let chain = leaf.chain().to_vec();
                entry.base = Some(Base { id: base, node, index, under_delta: true, chain });
                return Ok(entry);
            }
            // Known merged only (the cache's disk tier): diffed at commit.
            None => {
                let (node, index) = leaf.merged();
                let b = Box::pin(db.cache.node_and_base(base, &db.blobs)).await?;
                let chain = leaf.chain().to_vec();
                let base = Base { id: base, node: b.node, index: b.index, under_delta: true, chain };
                (node.clone(), index.clone(), Some(base), 0)
            }
        },
        CachedBlob::Delta { leaf, .. } => {
            let (node, index) = leaf.merged();
            (node.clone(), index.clone(), None, leaf.merged_weight())
        }
        CachedBlob::Node { node, index, weight } => {
            let base = (with_base && node.is_leaf()).then(|| Base {
                id,
                node: node.clone(),
                index: index.clone(),
                under_delta: false,
                chain: Vec::new(),
            });
            (node, index, base, weight)
        }
        CachedBlob::Value(_) => return Err(Error::corruption("node", format!("blob {id} is a value"))),
    };
    // A reader's node becomes its handle's front: the next reader's load
    // takes handle and node in one lookup.
    if !with_base {
        db.handles.attach(handle, Front { node: node.clone(), index: index.clone() }, weight);
    }
    let mut entry = TxNode::new(node, version, Some(id));
    entry.base = base;
    entry.index = Some(index);
    Ok(entry)
}

/// A size as a signed change.
fn signed(size: usize) -> isize {
    isize::try_from(size).unwrap_or(isize::MAX)
}

/// A node vanished or moved under a transaction: retryable.
pub(crate) fn moved(id: LogicalId) -> Error {
    Error::changed(Subject::Node(id), "changed while the transaction read it")
}

fn not_loaded(id: LogicalId) -> Error {
    Error::corruption("transaction", format!("node {id} used before it was loaded"))
}
