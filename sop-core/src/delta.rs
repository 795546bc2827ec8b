//! [`LeafDelta`]: a leaf's item-level changes since its *base*, a full leaf
//! blob — what a commit writes for a leaf it changed a little, instead of
//! the whole leaf.
//!
//! A delta is one link of a *chain*: its changes apply to its base with the
//! changes of the earlier links of its chain (`LeafDelta::chain`, oldest
//! first) applied in order, so the next commit to the leaf writes only its
//! own changes, as a new link naming every earlier one; nothing of the
//! leaf becomes obsolete. A delta with an empty chain holds every change
//! since its base (format version 1 wrote only those: they still decode).
//! The engine writes a full leaf again (consolidation) once a chain grows
//! past a length or its changes outgrow a share of the base.

use std::cmp::Ordering;

use bytes::Bytes;

use crate::codec::{begin_frame, open_frame, tag};
use crate::node::{decode_item, encode_item, slice_of};
use crate::search::cmp_keys;
use crate::{Error, Item, PhysicalId, Result, Value};

/// Version 2 added the chain; version 1 (no chain) is still read.
const FORMAT_VERSION: u8 = 2;
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

    /// About how many bytes it takes encoded.
    #[must_use]
    pub fn size_hint(&self) -> usize {
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
    /// The earlier links, oldest first: deltas on the same base whose
    /// changes apply before these (empty: these are every change since
    /// the base).
    pub chain: Vec<PhysicalId>,
    /// The changes, in strictly ascending key order.
    pub ops: Vec<DeltaOp>,
}

impl LeafDelta {
    /// The most earlier links a delta may name (the engine writes at most
    /// 15; a decoder refuses more, so that damaged bytes cannot make a
    /// reader fetch thousands of blobs).
    pub const MAX_CHAIN: usize = 64;

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

    /// The items of the base with the changes applied (sorted by key),
    /// for a delta with no chain (a link's changes apply on top of its
    /// chain's: fold them first).
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

    /// The changes `older` followed by `newer` (both strictly ascending by
    /// key) as one list of changes: where both change a key, `newer`'s
    /// wins; a delete of a key `in_base` says the base lacks (put by
    /// `older` only) is no change and is dropped.
    #[must_use]
    pub fn fold(older: &[DeltaOp], newer: &[DeltaOp], in_base: impl Fn(&[u8]) -> bool) -> Vec<DeltaOp> {
        let mut out = Vec::with_capacity(older.len() + newer.len());
        let (mut i, mut j) = (0, 0);
        while let (Some(o), Some(n)) = (older.get(i), newer.get(j)) {
            match cmp_keys(o.key(), n.key()) {
                Ordering::Less => {
                    out.push(o.clone());
                    i += 1;
                }
                Ordering::Greater => {
                    out.push(n.clone());
                    j += 1;
                }
                Ordering::Equal => {
                    if !matches!(n, DeltaOp::Delete(key) if !in_base(key)) {
                        out.push(n.clone());
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        out.extend_from_slice(older.get(i..).unwrap_or_default());
        out.extend_from_slice(newer.get(j..).unwrap_or_default());
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
        // The base's id, the chain's (16 bytes each and a length) and the
        // changes: sized whole, the buffer grew by copies on most links.
        let ids = 16 * (self.chain.len() + 1) + 10;
        let mut w = begin_frame(tag::DELTA, FORMAT_VERSION, ids + Self::ops_size_hint(&self.ops));
        w.u128(self.base.as_u128());
        w.varint(self.chain.len() as u64);
        for link in &self.chain {
            w.u128(link.as_u128());
        }
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
        let (version, mut r) = open_frame(bytes, tag::DELTA, FORMAT_VERSION, WHAT)?;
        let base = PhysicalId::from_u128(r.u128()?);
        let mut chain = Vec::new();
        if version >= 2 {
            let n = r.count(16)?;
            if n > Self::MAX_CHAIN {
                return Err(Error::corruption(WHAT, format!("a chain of {n} links")));
            }
            chain.reserve(n);
            for _ in 0..n {
                chain.push(PhysicalId::from_u128(r.u128()?));
            }
        }
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
        Ok(Self { base, chain, ops })
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
        let delta = LeafDelta { base: PhysicalId::new(), chain: Vec::new(), ops };
        assert_eq!(delta.apply(&base), new);
        let bytes = Bytes::from(delta.encode());
        assert!(LeafDelta::is_delta(&bytes));
        assert_eq!(LeafDelta::decode(&bytes).unwrap(), delta);
        assert!(LeafDelta::diff(&new, &new).is_empty());
        assert_eq!(LeafDelta::apply_ops(&base, &LeafDelta::diff(&base, &[])), vec![]);
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
            chain: vec![PhysicalId::new(), PhysicalId::new()],
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
        let long = LeafDelta { chain: vec![PhysicalId::new(); LeafDelta::MAX_CHAIN + 1], ..delta.clone() };
        let err = LeafDelta::decode(&Bytes::from(long.encode())).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption, "a chain past the bound: {err}");
        let longest = LeafDelta { chain: vec![PhysicalId::new(); LeafDelta::MAX_CHAIN], ..delta.clone() };
        assert_eq!(LeafDelta::decode(&Bytes::from(longest.encode())).unwrap(), longest);
        let backwards = LeafDelta { ops: delta.ops.iter().rev().cloned().collect(), ..delta.clone() };
        let err = LeafDelta::decode(&Bytes::from(backwards.encode())).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
        // A node blob is not a delta, and the other way round.
        let node = crate::Node::Leaf { items: vec![item("a", "1")] }.encode();
        assert!(!LeafDelta::is_delta(&node));
        assert!(LeafDelta::decode(&Bytes::from(node)).is_err());
        assert!(crate::Node::decode(&Bytes::from(delta.encode())).is_err());
    }

    /// A chain's links folded in order give the leaf the changes made one
    /// after the other give; a delete of a key only a link put vanishes.
    #[test]
    fn folding_a_chain_gives_the_changes_made_in_order() {
        let base = vec![item("b", "1"), item("d", "2"), item("f", "3")];
        let in_base = |k: &[u8]| base.iter().any(|i| i.key.as_ref() == k);
        let mut leaf = base.clone();
        let mut folded = Vec::new();
        let steps: [&[(&str, Option<&str>)]; 4] = [
            &[("a", Some("x")), ("d", None)],
            &[("a", None), ("c", Some("y")), ("f", Some("z"))],
            &[("d", Some("back")), ("g", Some("w"))],
            &[("b", None), ("c", Some("y2")), ("g", None)],
        ];
        for step in steps {
            let ops: Vec<DeltaOp> = step
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => DeltaOp::Put(item(k, v)),
                    None => DeltaOp::Delete(Bytes::copy_from_slice(k.as_bytes())),
                })
                .collect();
            leaf = LeafDelta::apply_ops(&leaf, &ops);
            folded = LeafDelta::fold(&folded, &ops, in_base);
            assert_eq!(LeafDelta::apply_ops(&base, &folded), leaf);
        }
        let keys: Vec<&[u8]> = folded.iter().map(|op| op.key().as_ref()).collect();
        assert_eq!(keys, [&b"b"[..], b"c", b"d", b"f"], "a and g, put then deleted, leave nothing");
    }

    /// A delta of format version 1 (no chain; 2026-12-02) still decodes,
    /// as a delta with an empty chain. The bytes are a fixture: they
    /// pin the old layout, not the current encoder's.
    #[test]
    fn a_version_one_delta_still_decodes() {
        let fixture = V1_FIXTURE;
        let bytes = Bytes::from(hex(fixture));
        let delta = LeafDelta::decode(&bytes).unwrap();
        assert_eq!(delta.base, PhysicalId::from_u128(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10));
        assert!(delta.chain.is_empty());
        assert_eq!(delta.ops.len(), 2);
        let DeltaOp::Put(put) = &delta.ops[0] else { panic!("a put first") };
        assert_eq!((put.key.as_ref(), &put.value), (&b"a"[..], &Value::Inline(Bytes::from_static(b"v"))));
        assert_eq!(delta.ops[1], DeltaOp::Delete(Bytes::from_static(b"c")));
        // The same delta written today is version 2 and reads back equal.
        let again = LeafDelta::decode(&Bytes::from(delta.encode())).unwrap();
        assert_eq!(again, delta);
    }

    const V1_FIXTURE: &str =
        "4401100f0e0d0c0b0a0908070605040302010200016188887777666655554444333322221111000176010163ccca1479";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// The fixture is a version-1 delta as docs/format.md lays it out
    /// (written field by field here, as the version-1 encoder did).
    #[test]
    fn version_one_layout() {
        let put = Item {
            key: Bytes::from_static(b"a"),
            version: TxId::from_u128(0x1111_2222_3333_4444_5555_6666_7777_8888),
            value: Value::Inline(Bytes::from_static(b"v")),
        };
        let mut w = begin_frame(tag::DELTA, 1, 64);
        w.u128(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10);
        w.varint(2);
        w.u8(PUT);
        encode_item(&mut w, &put);
        w.u8(DELETE);
        w.bytes(b"c");
        let bytes = w.finish_frame();
        let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(text, V1_FIXTURE);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        crate::codec::fuzz_frames(tag::DELTA, FORMAT_VERSION, 0x2545_f491_4f6c_dd1d, |b| {
            let _ = LeafDelta::decode(&b);
        });
    }
}
