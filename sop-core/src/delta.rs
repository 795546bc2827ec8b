//! [`LeafDelta`]: a leaf's item-level changes since its *base*, a full leaf
//! blob — what a commit writes for a leaf it changed a little, instead of
//! the whole leaf.
//!
//! A delta is cumulative: it holds every change since the base, so a reader
//! needs exactly two blobs (base and delta) and the next commit to the leaf
//! writes a new delta on the same base, which makes the previous delta
//! obsolete and leaves the base alone. The engine writes a full leaf again
//! (consolidation) once a delta would outgrow a share of its base.

use bytes::Bytes;

use crate::codec::{begin_frame, open_frame, tag};
use crate::node::{decode_item, encode_item, slice_of};
use crate::{Error, Item, PhysicalId, Result, Value};

const FORMAT_VERSION: u8 = 1;
const WHAT: &str = "leaf delta";
const PUT: u8 = 0;
const DELETE: u8 = 1;

/// One change to a leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaOp {
    /// The item is now this (added or replaced).
    Put(Item),
    /// The item under this key is gone.
    Delete(Bytes),
}

impl DeltaOp {
    /// The key it changes.
    #[must_use]
    pub fn key(&self) -> &Bytes {
        match self {
            Self::Put(item) => &item.key,
            Self::Delete(key) => key,
        }
    }

    fn size_hint(&self) -> usize {
        match self {
            Self::Put(item) => item.size_hint() + 1,
            Self::Delete(key) => key.len() + 3,
        }
    }
}

/// A leaf as changes to a base leaf; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafDelta {
    /// The full leaf blob the changes apply to.
    pub base: PhysicalId,
    /// The changes, in strictly ascending key order.
    pub ops: Vec<DeltaOp>,
}

impl LeafDelta {
    /// The changes that turn the items `base` into the items `new` (both
    /// sorted by key): a put for every item added or rewritten (a new item
    /// version), a delete for every key gone.
    #[must_use]
    pub fn diff(base: &[Item], new: &[Item]) -> Vec<DeltaOp> {
        let mut ops = Vec::new();
        let (mut b, mut n) = (base.iter().peekable(), new.iter().peekable());
        loop {
            match (b.peek(), n.peek()) {
                (None, None) => return ops,
                (Some(old), None) => {
                    ops.push(DeltaOp::Delete(old.key.clone()));
                    b.next();
                }
                (None, Some(item)) => {
                    ops.push(DeltaOp::Put((*item).clone()));
                    n.next();
                }
                (Some(old), Some(item)) => match key_order(&old.key, &item.key) {
                    std::cmp::Ordering::Less => {
                        ops.push(DeltaOp::Delete(old.key.clone()));
                        b.next();
                    }
                    std::cmp::Ordering::Greater => {
                        ops.push(DeltaOp::Put((*item).clone()));
                        n.next();
                    }
                    std::cmp::Ordering::Equal => {
                        if !unchanged(old, item) {
                            ops.push(DeltaOp::Put((*item).clone()));
                        }
                        b.next();
                        n.next();
                    }
                },
            }
        }
    }

    /// The items of the base with the changes applied (sorted by key).
    #[must_use]
    pub fn apply(&self, base: &[Item]) -> Vec<Item> {
        Self::apply_ops(base, &self.ops)
    }

    /// The items of `base` with `ops` (sorted by key, as a delta's)
    /// applied.
    #[must_use]
    pub fn apply_ops(base: &[Item], ops: &[DeltaOp]) -> Vec<Item> {
        let mut out = Vec::with_capacity(base.len() + ops.len());
        let mut ops = ops.iter().peekable();
        for item in base {
            while let Some(op) = ops.next_if(|op| op.key() < &item.key) {
                if let DeltaOp::Put(new) = op {
                    out.push(new.clone());
                }
            }
            match ops.next_if(|op| op.key() == &item.key) {
                Some(DeltaOp::Put(new)) => out.push(new.clone()),
                Some(DeltaOp::Delete(_)) => {}
                None => out.push(item.clone()),
            }
        }
        for op in ops {
            if let DeltaOp::Put(new) = op {
                out.push(new.clone());
            }
        }
        out
    }

    /// About how many bytes the changes take encoded.
    #[must_use]
    pub fn ops_size_hint(ops: &[DeltaOp]) -> usize {
        ops.iter().map(DeltaOp::size_hint).sum::<usize>() + 32
    }

    /// Whether `bytes` is framed as a leaf delta (a cheap peek at the tag;
    /// [`LeafDelta::decode`] checks everything).
    #[must_use]
    pub fn is_delta(bytes: &[u8]) -> bool {
        bytes.first() == Some(&tag::DELTA)
    }

    /// The versioned, checksummed encoding.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut w = begin_frame(tag::DELTA, FORMAT_VERSION, Self::ops_size_hint(&self.ops));
        w.u128(self.base.as_u128());
        w.varint(self.ops.len() as u64);
        for op in &self.ops {
            match op {
                DeltaOp::Put(item) => {
                    w.u8(PUT);
                    encode_item(&mut w, item);
                }
                DeltaOp::Delete(key) => {
                    w.u8(DELETE);
                    w.bytes(key);
                }
            }
        }
        w.finish_frame()
    }

    /// Decodes [`LeafDelta::encode`]'s output; keys and values share
    /// `bytes`' buffer.
    ///
    /// # Errors
    /// `Corruption` (or `UnsupportedVersion`) for bytes that are not a
    /// well-formed delta, including changes out of key order; never panics.
    pub fn decode(bytes: &Bytes) -> Result<Self> {
        let (_, mut r) = open_frame(bytes, tag::DELTA, FORMAT_VERSION, WHAT)?;
        let base = PhysicalId::from_u128(r.u128()?);
        // A change is at least 1 (kind) + 1 (key length) byte.
        let n = r.count(2)?;
        let mut ops: Vec<DeltaOp> = Vec::with_capacity(n);
        for _ in 0..n {
            let op = match r.u8()? {
                PUT => DeltaOp::Put(decode_item(&mut r, bytes)?),
                DELETE => DeltaOp::Delete(slice_of(bytes, r.bytes()?)),
                other => return Err(Error::corruption(WHAT, format!("unknown change kind {other}"))),
            };
            if ops.last().is_some_and(|last| last.key() >= op.key()) {
                return Err(Error::corruption(WHAT, "changes out of key order"));
            }
            ops.push(op);
        }
        r.finish()?;
        Ok(Self { base, ops })
    }
}

/// Whether two byte strings are the same slice of one buffer: an item a
/// transaction did not touch shares its base's buffers, so most of a
/// diff's comparisons end here without reading the bytes.
fn same_slice(a: &Bytes, b: &Bytes) -> bool {
    a.as_ptr() == b.as_ptr() && a.len() == b.len()
}

/// The order of two keys, without comparing bytes when they are one slice.
fn key_order(a: &Bytes, b: &Bytes) -> std::cmp::Ordering {
    if same_slice(a, b) { std::cmp::Ordering::Equal } else { a.cmp(b) }
}

/// Whether `new` is `old` unchanged (keys already known equal).
fn unchanged(old: &Item, new: &Item) -> bool {
    old.version == new.version
        && match (&old.value, &new.value) {
            (Value::Inline(a), Value::Inline(b)) => same_slice(a, b) || a == b,
            (a, b) => a == b,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorKind, TxId};

    fn item(k: &str, v: &str) -> Item {
        Item {
            key: Bytes::copy_from_slice(k.as_bytes()),
            version: TxId::new(),
            value: Value::Inline(Bytes::copy_from_slice(v.as_bytes())),
        }
    }

    #[test]
    fn diff_then_apply_gives_the_new_items_and_the_delta_round_trips() {
        let base = vec![item("b", "1"), item("d", "2"), item("f", "3"), item("h", "4")];
        let mut new = base.clone();
        new.remove(3); // h deleted
        new[1] = item("d", "22"); // d rewritten
        new.insert(0, item("a", "0")); // a added before everything
        new.insert(3, item("e", "5")); // e added in the middle
        new.push(item("z", "9")); // z added after everything
        let ops = LeafDelta::diff(&base, &new);
        assert_eq!(ops.len(), 5, "{ops:?}");
        let delta = LeafDelta { base: PhysicalId::new(), ops };
        assert_eq!(delta.apply(&base), new);
        let bytes = Bytes::from(delta.encode());
        assert!(LeafDelta::is_delta(&bytes));
        assert_eq!(LeafDelta::decode(&bytes).unwrap(), delta);
        assert!(LeafDelta::diff(&new, &new).is_empty());
        assert_eq!(LeafDelta { base: delta.base, ops: LeafDelta::diff(&base, &[]) }.apply(&base), vec![]);
    }

    /// Equal contents in other buffers are unchanged; a rewrite at the same
    /// version, or a new version of equal bytes, is a change.
    #[test]
    fn diff_compares_contents_not_buffers() {
        let base = vec![item("b", "1"), item("d", "2"), item("f", "3")];
        let mut new: Vec<Item> = base
            .iter()
            .map(|i| Item {
                key: Bytes::copy_from_slice(&i.key),
                version: i.version,
                value: match &i.value {
                    Value::Inline(v) => Value::Inline(Bytes::copy_from_slice(v)),
                    other => other.clone(),
                },
            })
            .collect();
        assert!(LeafDelta::diff(&base, &new).is_empty(), "copies of equal items are no change");
        new[1].value = Value::Inline(Bytes::from_static(b"x"));
        new[2].version = TxId::new();
        let ops = LeafDelta::diff(&base, &new);
        assert_eq!(ops, vec![DeltaOp::Put(new[1].clone()), DeltaOp::Put(new[2].clone())]);
    }

    #[test]
    fn damaged_or_disordered_deltas_are_corruption_never_a_panic() {
        let delta = LeafDelta {
            base: PhysicalId::new(),
            ops: vec![DeltaOp::Put(item("a", "1")), DeltaOp::Delete(Bytes::from_static(b"c"))],
        };
        let bytes = delta.encode();
        for n in 0..bytes.len() {
            let b = Bytes::copy_from_slice(&bytes[..n]);
            assert_eq!(LeafDelta::decode(&b).unwrap_err().kind(), ErrorKind::Corruption);
        }
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert_eq!(
                LeafDelta::decode(&Bytes::from(b)).unwrap_err().kind(),
                ErrorKind::Corruption,
                "bit {i}"
            );
        }
        let backwards = LeafDelta { base: delta.base, ops: delta.ops.iter().rev().cloned().collect() };
        let err = LeafDelta::decode(&Bytes::from(backwards.encode())).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
        // A node blob is not a delta, and the other way round.
        let node = crate::Node::Leaf { items: vec![item("a", "1")] }.encode();
        assert!(!LeafDelta::is_delta(&node));
        assert!(LeafDelta::decode(&Bytes::from(node)).is_err());
        assert!(crate::Node::decode(&Bytes::from(delta.encode())).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        crate::codec::fuzz_frames(tag::DELTA, FORMAT_VERSION, 0x2545_f491_4f6c_dd1d, |b| {
            let _ = LeafDelta::decode(&b);
        });
    }
}
