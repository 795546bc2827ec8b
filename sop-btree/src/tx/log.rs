//! The item-level log a transaction keeps for swarm merge: what it read
//! (with the versions seen) and what it wrote, in order.

use std::ops::{Bound, Range};
use std::sync::Arc;

use bytes::Bytes;
use sop_core::{Node, TxId};

use crate::tree::leaf_items;

/// The committed items one batch of a range read saw: positions in the
/// leaf as read (shared with the transaction's view, never copied), less
/// the keys the transaction had written itself.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) leaf: Arc<Node>,
    pub(crate) range: Range<usize>,
    /// Positions in `range` left out (the transaction's own writes).
    pub(crate) own: Vec<usize>,
}

impl Seen {
    /// The `(key, version)` pairs seen, ascending.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Bytes, TxId)> {
        let items = leaf_items(&self.leaf);
        self.range
            .clone()
            .filter(|i| !self.own.contains(i))
            .filter_map(move |i| items.get(i))
            .map(|i| (&i.key, i.version))
    }
}

/// One read whose result the application saw.
#[derive(Debug, Clone)]
pub(crate) enum ReadEntry {
    /// A point read (get, contains, or a write's precondition): the item
    /// version seen, or `None` for absent.
    Point { store: Arc<str>, key: Bytes, version: Option<TxId> },
    /// A range read (boxed: a log of point reads is moved whole as it
    /// grows, and the range's fields tripled every entry's size).
    Range(Box<RangeRead>),
    /// A count read: the committed count seen, and the transaction's own
    /// count delta it included, made of its first `writes_before` writes.
    /// A blind write logs no read, yet its delta depends on whether its key
    /// existed; a merge that changes that delta changes what `count()`
    /// returned, so it is a conflict.
    Count { store: Arc<str>, committed: u64, delta: i64, writes_before: usize },
}

/// A range read: every committed item in `[lo, hi]` as seen, excluding
/// keys the transaction had written before (`writes_before` writes).
#[derive(Debug, Clone)]
pub(crate) struct RangeRead {
    pub(crate) store: Arc<str>,
    pub(crate) lo: Bound<Bytes>,
    pub(crate) hi: Bound<Bytes>,
    pub(crate) seen: Seen,
    pub(crate) writes_before: usize,
}

/// One write, replayed as is by a swarm merge.
#[derive(Debug, Clone)]
pub(crate) struct WriteOp {
    pub(crate) store: Arc<str>,
    pub(crate) key: Bytes,
    /// `Some(value)`: put the value; `None`: remove the key.
    pub(crate) value: Option<Bytes>,
    /// What the write did to the store's count (-1, 0 or +1).
    pub(crate) delta: i8,
}
