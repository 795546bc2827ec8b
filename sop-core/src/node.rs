//! [`Node`]: the decoded contents of one B-tree node blob, and its format.
//!
//! Nodes form a B+tree: leaves hold the items, internal nodes hold separator
//! keys and the [`LogicalId`]s of their children. Keys are byte strings
//! compared with `memcmp`. Decoding borrows from the blob's [`Bytes`], so a
//! decoded node costs one allocation per item vector, not one per key.

use bytes::Bytes;

use crate::codec::{Reader, begin_frame, open_frame, tag};
use crate::{Error, LogicalId, PhysicalId, Result, TxId};

/// One key-value item in a leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The key, in its order-preserving byte encoding.
    pub key: Bytes,
    /// The transaction that last wrote this item (its item-level version).
    pub version: TxId,
    /// The value, inline or in a blob of its own.
    pub value: Value,
}

/// Where an item's value lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Stored inside the node.
    Inline(Bytes),
    /// Stored in its own immutable blob (values above the store's
    /// threshold); `len` is the value's length in bytes.
    Blob {
        /// The value blob.
        id: PhysicalId,
        /// The value's length in bytes.
        len: u64,
    },
}

/// One B-tree node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A leaf: items sorted by key.
    Leaf {
        /// The items, sorted by key.
        items: Vec<Item>,
    },
    /// An internal node: `children.len() == keys.len() + 1`; child `i` holds
    /// keys `< keys[i]` and `>= keys[i - 1]`.
    Internal {
        /// Separator keys, sorted.
        keys: Vec<Bytes>,
        /// Child node ids.
        children: Vec<LogicalId>,
    },
}

const FORMAT_VERSION: u8 = 1;
const WHAT: &str = "node";
const LEAF: u8 = 0;
const INTERNAL: u8 = 1;
const VALUE_INLINE: u8 = 0;
const VALUE_BLOB: u8 = 1;

impl Node {
    /// An empty leaf, the root of a new store.
    #[must_use]
    pub fn empty_leaf() -> Self {
        Self::Leaf { items: Vec::new() }
    }

    /// Whether this node is a leaf.
    #[must_use]
    pub fn is_leaf(&self) -> bool {
        matches!(self, Self::Leaf { .. })
    }

    /// Every value blob this node references (for cleanup and checks).
    pub fn value_blobs(&self) -> impl Iterator<Item = PhysicalId> + '_ {
        let items: &[Item] = match self {
            Self::Leaf { items } => items,
            Self::Internal { .. } => &[],
        };
        items.iter().filter_map(|i| match i.value {
            Value::Blob { id, .. } => Some(id),
            Value::Inline(_) => None,
        })
    }

    /// The versioned, checksummed encoding.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut w = begin_frame(tag::NODE, FORMAT_VERSION, self.size_hint());
        match self {
            Self::Leaf { items } => {
                w.u8(LEAF);
                w.varint(items.len() as u64);
                for item in items {
                    encode_item(&mut w, item);
                }
            }
            Self::Internal { keys, children } => {
                w.u8(INTERNAL);
                w.varint(keys.len() as u64);
                keys.iter().for_each(|k| w.bytes(k));
                children.iter().for_each(|c| w.u128(c.as_u128()));
            }
        }
        w.finish_frame()
    }

    /// About how many bytes [`Node::encode`] writes.
    #[must_use]
    pub fn size_hint(&self) -> usize {
        match self {
            Self::Leaf { items } => items.iter().map(Item::size_hint).sum(),
            Self::Internal { keys, children } => {
                keys.iter().map(|k| k.len() + 4).sum::<usize>() + children.len() * 16
            }
        }
    }

    /// Decodes [`Node::encode`]'s output; keys and inline values share
    /// `bytes`' buffer.
    ///
    /// # Errors
    /// `Corruption` (or `UnsupportedVersion`) for bytes that are not a
    /// well-formed node; never panics.
    pub fn decode(bytes: &Bytes) -> Result<Self> {
        let (_, mut r) = open_frame(bytes, tag::NODE, FORMAT_VERSION, WHAT)?;
        let node = match r.u8()? {
            LEAF => {
                // An item is at least 1 (key len) + 16 (version) + 2 bytes.
                let n = r.count(19)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(decode_item(&mut r, bytes)?);
                }
                Self::Leaf { items }
            }
            INTERNAL => {
                let n = r.count(17)?;
                let mut keys = Vec::with_capacity(n);
                for _ in 0..n {
                    keys.push(slice_of(bytes, r.bytes()?));
                }
                let mut children = Vec::with_capacity(n + 1);
                for _ in 0..=n {
                    children.push(LogicalId::from_u128(r.u128()?));
                }
                Self::Internal { keys, children }
            }
            other => return Err(Error::corruption(WHAT, format!("unknown node kind {other}"))),
        };
        r.finish()?;
        Ok(node)
    }
}

impl Item {
    /// About how many bytes its encoding takes.
    #[must_use]
    pub fn size_hint(&self) -> usize {
        self.key.len()
            + 24
            + match &self.value {
                Value::Inline(v) => v.len() + 4,
                Value::Blob { .. } => 26,
            }
    }
}

/// Appends one item (key, version, value) in the node format.
pub(crate) fn encode_item(w: &mut crate::codec::Writer, item: &Item) {
    w.bytes(&item.key);
    w.u128(item.version.as_u128());
    match &item.value {
        Value::Inline(v) => {
            w.u8(VALUE_INLINE);
            w.bytes(v);
        }
        Value::Blob { id, len } => {
            w.u8(VALUE_BLOB);
            w.u128(id.as_u128());
            w.varint(*len);
        }
    }
}

/// Reads one item written by [`encode_item`]; its bytes share `whole`.
pub(crate) fn decode_item(r: &mut Reader<'_>, whole: &Bytes) -> Result<Item> {
    let key = slice_of(whole, r.bytes()?);
    let version = TxId::from_u128(r.u128()?);
    let value = match r.u8()? {
        VALUE_INLINE => Value::Inline(slice_of(whole, r.bytes()?)),
        VALUE_BLOB => Value::Blob { id: PhysicalId::from_u128(r.u128()?), len: r.varint()? },
        other => return Err(Error::corruption(WHAT, format!("unknown value kind {other}"))),
    };
    Ok(Item { key, version, value })
}

/// `part` is a sub-slice of `whole`; share its buffer instead of copying.
pub(crate) fn slice_of(whole: &Bytes, part: &[u8]) -> Bytes {
    whole.slice_ref(part)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn sample_leaf() -> Node {
        Node::Leaf {
            items: vec![
                Item {
                    key: Bytes::from_static(b"apple"),
                    version: TxId::new(),
                    value: Value::Inline(Bytes::from_static(b"red")),
                },
                Item {
                    key: Bytes::from_static(b"pear"),
                    version: TxId::new(),
                    value: Value::Blob { id: PhysicalId::new(), len: 1 << 20 },
                },
            ],
        }
    }

    fn sample_internal() -> Node {
        Node::Internal {
            keys: vec![Bytes::from_static(b"m"), Bytes::from_static(b"t")],
            children: vec![LogicalId::new(), LogicalId::new(), LogicalId::new()],
        }
    }

    #[test]
    fn nodes_round_trip() {
        for node in [Node::empty_leaf(), sample_leaf(), sample_internal()] {
            let bytes = Bytes::from(node.encode());
            assert_eq!(Node::decode(&bytes).unwrap(), node);
        }
        assert_eq!(sample_leaf().value_blobs().count(), 1);
    }

    #[test]
    fn truncation_and_bit_flips_are_corruption() {
        for node in [sample_leaf(), sample_internal()] {
            let bytes = node.encode();
            for n in 0..bytes.len() {
                let b = Bytes::copy_from_slice(&bytes[..n]);
                assert_eq!(Node::decode(&b).unwrap_err().kind(), ErrorKind::Corruption);
            }
            for i in 0..bytes.len() * 8 {
                let mut b = bytes.clone();
                b[i / 8] ^= 1 << (i % 8);
                let err = Node::decode(&Bytes::from(b)).unwrap_err();
                assert_eq!(err.kind(), ErrorKind::Corruption, "bit {i}");
            }
        }
    }

    #[test]
    fn forged_counts_with_valid_checksum_are_rejected() {
        let mut w = begin_frame(tag::NODE, FORMAT_VERSION, 0);
        w.u8(LEAF);
        w.varint(u64::MAX);
        let bytes = Bytes::from(w.finish_frame());
        assert_eq!(Node::decode(&bytes).unwrap_err().kind(), ErrorKind::Corruption);
        let mut w = begin_frame(tag::NODE, FORMAT_VERSION, 0);
        w.u8(9);
        let bytes = Bytes::from(w.finish_frame());
        assert_eq!(Node::decode(&bytes).unwrap_err().kind(), ErrorKind::Corruption);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        crate::codec::fuzz_frames(tag::NODE, FORMAT_VERSION, 0x9e37_79b9_7f4a_7c15, |b| {
            let _ = Node::decode(&b);
        });
    }
}
