//! [`CachedBlob`]: what the cache holds, and its disk-tier encoding.

use std::io::{Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use foyer::Code;
use sop_core::{KeyIndex, Node, PhysicalId, Value};

use crate::DeltaLeaf;

/// A cached blob: a decoded node, a leaf delta over its base, or a raw
/// value blob. Nodes are cached with their [`KeyIndex`] (build them with
/// [`CachedBlob::node`]).
#[derive(Debug, Clone)]
pub enum CachedBlob {
    /// A decoded B-tree node (a full node blob).
    Node {
        /// The node.
        node: Arc<Node>,
        /// Its keys' search index.
        index: Arc<KeyIndex>,
        /// [`node_weight`] of `node`, weighed once when the entry is made
        /// (a reader that makes the node a handle's front needs it too:
        /// weighed again on every attach, it was a quarter of the point
        /// reads' time at 1 000 000 items, `docs/BENCHMARKS.md`).
        weight: usize,
    },
    /// A leaf delta blob: its base's items and its changes, merged on
    /// demand ([`DeltaLeaf`]).
    Delta {
        /// The leaf.
        leaf: Arc<DeltaLeaf>,
        /// The full leaf blob the delta applies to.
        base: PhysicalId,
    },
    /// A separately stored value, as bytes.
    Value(Bytes),
}

impl CachedBlob {
    /// A full node blob's contents, indexed.
    #[must_use]
    pub fn node(node: Arc<Node>) -> Self {
        Self::Node { index: Arc::new(KeyIndex::of_node(&node)), weight: node_weight(&node), node }
    }

    /// A leaf delta on `base`.
    #[must_use]
    pub fn delta(leaf: DeltaLeaf, base: PhysicalId) -> Self {
        Self::Delta { leaf: Arc::new(leaf), base }
    }

    /// Approximate memory cost in bytes, used to fill the cache's capacity.
    #[must_use]
    pub fn weight(&self) -> usize {
        match self {
            Self::Value(b) => b.len() + 32,
            Self::Node { weight, .. } => *weight,
            Self::Delta { leaf, .. } => delta_weight(leaf),
        }
    }
}

/// A delta leaf's bytes in memory: the base it keeps alive and its
/// changes. The merged leaf a reader may build (its vector and index
/// words, ~100 bytes an item; its keys and values are the base's and the
/// changes') is not reserved for: reserving it made the cache hold so few
/// leaves at 1 000 000 items that point reads fell from 461 000 to 99 600
/// gets/s and full scans from 9.1 to 2.8 million items/s, for 23 MiB less
/// peak RSS (648 → 625 MiB; `sop-bench --runs 1 --engines sop --phases
/// main`, 2026-12-03).
fn delta_weight(leaf: &DeltaLeaf) -> usize {
    let Some(layers) = leaf.layers() else {
        return leaf.merged_if_built().map_or(64, |(node, _)| node_weight(node)) + 16;
    };
    // The changes' from their encoded size, kept as they were added, and
    // their count: an item in memory is its key and value and ~96 bytes
    // past them (its `Bytes` handles, its place in a run), encoded ~20
    // past them. A pass over the changes here, with a cache miss for
    // most, was 2.5 % of a 1 000 000-item load (`perf`, 2026-12-05).
    let ops = layers.ops_size() + 76 * layers.ops_count();
    // The base's `node_weight` from its size, with no pass over its items.
    leaf_weight(layers.sizes.base_size, layers.base_items().len()) + ops + 16 + leaf.chain().len() * 16
}

/// [`node_weight`] of a leaf of `len` items whose `Item::size_hint`s sum
/// to `size`, with no pass over its items: an item weighs its
/// `size_hint` plus about 68 bytes (exactly, for inline values).
pub(crate) fn leaf_weight(size: usize, len: usize) -> usize {
    64 + size + len * 68
}

/// About how many bytes a decoded node takes in memory, its key index's
/// 16-byte word per key included (the node cache's weight of a full node
/// blob): one pass over its entries.
#[must_use]
pub fn node_weight(node: &Node) -> usize {
    match node {
        Node::Leaf { items } => {
            64 + items.iter().map(|i| i.key.len() + value_weight(&i.value) + 96).sum::<usize>()
        }
        Node::Internal { keys, children } => {
            64 + keys.iter().map(|k| k.len() + 48).sum::<usize>() + children.len() * 16
        }
    }
}

fn value_weight(value: &Value) -> usize {
    match value {
        Value::Inline(v) => v.len(),
        Value::Blob { .. } => 24,
    }
}

const TAG_NODE: u8 = 0;
const TAG_VALUE: u8 = 1;
/// A delta with no chain: its base, then the merged leaf.
const TAG_DELTA: u8 = 2;
/// A delta with a chain: its base, the link count (`u32`), the links,
/// then the merged leaf.
const TAG_CHAIN: u8 = 3;

fn io_err(e: std::io::Error) -> foyer::Error {
    foyer::Error::io_error(e)
}

impl Code for CachedBlob {
    fn encode(&self, writer: &mut impl Write) -> foyer::Result<()> {
        let (tag, bytes) = match self {
            Self::Node { node, .. } => (TAG_NODE, Bytes::from(node.encode())),
            Self::Delta { leaf, base } => {
                let mut b = base.as_u128().to_le_bytes().to_vec();
                let tag = if leaf.chain().is_empty() {
                    TAG_DELTA
                } else {
                    let n = u32::try_from(leaf.chain().len())
                        .map_err(|_| io_err(std::io::Error::other("chain too long to cache")))?;
                    b.extend_from_slice(&n.to_le_bytes());
                    leaf.chain().iter().for_each(|l| b.extend_from_slice(&l.as_u128().to_le_bytes()));
                    TAG_CHAIN
                };
                b.extend_from_slice(&leaf.merged().0.encode());
                (tag, Bytes::from(b))
            }
            Self::Value(b) => (TAG_VALUE, b.clone()),
        };
        let len = u32::try_from(bytes.len())
            .map_err(|_| io_err(std::io::Error::other("blob too large to cache")))?;
        writer.write_all(&[tag]).map_err(io_err)?;
        writer.write_all(&len.to_le_bytes()).map_err(io_err)?;
        writer.write_all(&bytes).map_err(io_err)
    }

    fn decode(reader: &mut impl Read) -> foyer::Result<Self> {
        let mut head = [0u8; 5];
        reader.read_exact(&mut head).map_err(io_err)?;
        let [tag, l0, l1, l2, l3] = head;
        let len = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
        let mut buf = Vec::new();
        reader.take(len as u64).read_to_end(&mut buf).map_err(io_err)?;
        if buf.len() != len {
            return Err(io_err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "short cached blob")));
        }
        let bytes = Bytes::from(buf);
        match tag {
            TAG_NODE => Node::decode(&bytes)
                .map(|n| Self::node(Arc::new(n)))
                .map_err(|e| io_err(std::io::Error::new(std::io::ErrorKind::InvalidData, e))),
            TAG_VALUE => Ok(Self::Value(bytes)),
            TAG_DELTA | TAG_CHAIN => decode_delta(&bytes, tag == TAG_CHAIN)
                .ok_or_else(|| {
                    io_err(std::io::Error::new(std::io::ErrorKind::InvalidData, "bad cached delta"))
                })?
                .map_err(|e| io_err(std::io::Error::new(std::io::ErrorKind::InvalidData, e))),
            t => Err(io_err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("unknown cache tag {t}"),
            ))),
        }
    }

    fn estimated_size(&self) -> usize {
        5 + match self {
            Self::Node { weight, .. } => *weight,
            // The disk tier stores the merged leaf.
            Self::Delta { leaf, .. } => {
                20 + 16 * leaf.chain().len()
                    + leaf.layers().map_or_else(|| leaf.merged().0.size_hint(), |l| l.sizes.size)
            }
            Self::Value(b) => b.len(),
        }
    }
}

/// A cached delta as [`CachedBlob::encode`] writes it (`chained`: with a
/// link count and links); `None` when the bytes are too short.
fn decode_delta(bytes: &Bytes, chained: bool) -> Option<sop_core::Result<CachedBlob>> {
    let id = |at: usize| -> Option<PhysicalId> {
        let b: [u8; 16] = bytes.get(at..at + 16)?.try_into().ok()?;
        Some(PhysicalId::from_u128(u128::from_le_bytes(b)))
    };
    let base = id(0)?;
    let mut at = 16;
    let mut chain = Vec::new();
    if chained {
        let n: [u8; 4] = bytes.get(16..20)?.try_into().ok()?;
        let n = u32::from_le_bytes(n) as usize;
        at = 20;
        // Every link is 16 bytes of what is left.
        if n > bytes.len().saturating_sub(at) / 16 {
            return None;
        }
        for _ in 0..n {
            chain.push(id(at)?);
            at += 16;
        }
    }
    let node = Node::decode(&bytes.slice(at..));
    Some(node.map(|n| {
        let leaf = DeltaLeaf::materialized(Arc::new(n)).with_chain(chain);
        CachedBlob::delta(leaf, base)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sop_core::DeltaOp;

    fn item(k: &str) -> sop_core::Item {
        sop_core::Item {
            key: Bytes::copy_from_slice(k.as_bytes()),
            version: sop_core::TxId::new(),
            value: Value::Inline(Bytes::copy_from_slice(k.as_bytes())),
        }
    }

    fn layered() -> DeltaLeaf {
        let base = Arc::new(Node::Leaf { items: vec![item("a"), item("b"), item("c")] });
        let index = Arc::new(KeyIndex::of_node(&base));
        let ops = vec![
            DeltaOp::Put(item("aa")),
            DeltaOp::Delete(Bytes::from_static(b"b")),
            DeltaOp::Put(item("c")),
            DeltaOp::Delete(Bytes::from_static(b"zz")), // not in the base
        ];
        DeltaLeaf::layered(base, index, ops).unwrap()
    }

    #[test]
    fn a_layered_delta_merges_its_changes_over_its_base() {
        let leaf = layered();
        assert!(leaf.merged_if_built().is_none(), "merged only when asked");
        let layers = leaf.layers().unwrap();
        assert_eq!(layers.sizes.len, 3);
        assert_eq!(layers.sizes.size, leaf.merged().0.size_hint());
        let weight = CachedBlob::Delta { leaf: Arc::new(layered()), base: PhysicalId::new() }.weight();
        let base_weight = node_weight(&layers.base);
        assert!(weight >= base_weight && weight < base_weight + 600, "{weight} for a base of {base_weight}");
        assert!(layers.change(b"b").unwrap().is_none(), "deleted");
        assert_eq!(layers.change(b"aa").unwrap().unwrap().key.as_ref(), b"aa");
        assert!(layers.change(b"a").is_none(), "unchanged");
        assert_eq!(layers.folded().len(), 3, "a delete of a key the base lacks is dropped");
        let Node::Leaf { items } = leaf.merged().0.as_ref() else { panic!("a leaf") };
        let keys: Vec<&[u8]> = items.iter().map(|i| i.key.as_ref()).collect();
        assert_eq!(keys, [&b"a"[..], b"aa", b"c"]);
        let not_leaf = Arc::new(Node::Internal { keys: vec![], children: vec![sop_core::LogicalId::new()] });
        let index = Arc::new(KeyIndex::of_node(&not_leaf));
        let err = DeltaLeaf::layered(not_leaf, index, Vec::new()).unwrap_err();
        assert_eq!(err.kind(), sop_core::ErrorKind::Corruption);
    }

    #[test]
    fn disk_encoding_round_trips_and_rejects_garbage() {
        for blob in [
            CachedBlob::node(Arc::new(Node::empty_leaf())),
            CachedBlob::delta(layered(), PhysicalId::new()),
            CachedBlob::delta(
                layered().with_chain(vec![PhysicalId::new(), PhysicalId::new()]),
                PhysicalId::new(),
            ),
            CachedBlob::Value(Bytes::from_static(b"v")),
        ] {
            let mut buf = Vec::new();
            blob.encode(&mut buf).unwrap();
            let back = CachedBlob::decode(&mut buf.as_slice()).unwrap();
            match (blob, back) {
                (
                    CachedBlob::Node { node: a, index: i, weight: w },
                    CachedBlob::Node { node: b, index: j, weight: x },
                ) => {
                    assert_eq!((a, i, w), (b, j, x));
                }
                (CachedBlob::Delta { leaf: a, base: x }, CachedBlob::Delta { leaf: b, base: y }) => {
                    assert_eq!(x, y);
                    assert_eq!(a.chain(), b.chain());
                    assert!(b.layers().is_none(), "read back merged only");
                    assert_eq!(a.merged(), b.merged());
                }
                (CachedBlob::Value(a), CachedBlob::Value(b)) => assert_eq!(a, b),
                _ => panic!("kind changed"),
            }
            for n in 0..buf.len() {
                assert!(CachedBlob::decode(&mut &buf[..n]).is_err(), "prefix {n}");
            }
        }
    }
}
