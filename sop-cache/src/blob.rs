//! [`CachedBlob`]: what the cache holds, and its disk-tier encoding.

use std::io::{Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use foyer::Code;
use sop_core::{KeyIndex, Node, PhysicalId, Value};

/// A cached blob: a decoded node, a leaf materialized from a delta, or a
/// raw value blob. Nodes are cached with their [`KeyIndex`] (build them
/// with [`CachedBlob::node`] and [`CachedBlob::delta`]).
#[derive(Debug, Clone)]
pub enum CachedBlob {
    /// A decoded B-tree node (a full node blob).
    Node {
        /// The node.
        node: Arc<Node>,
        /// Its keys' search index.
        index: Arc<KeyIndex>,
    },
    /// A leaf delta blob, materialized: its base's items with its changes
    /// applied, and the base it applies to.
    Delta {
        /// The leaf as the delta describes it.
        node: Arc<Node>,
        /// Its keys' search index.
        index: Arc<KeyIndex>,
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
        Self::Node { index: Arc::new(KeyIndex::of_node(&node)), node }
    }

    /// A leaf delta on `base`, materialized as `node`, indexed.
    #[must_use]
    pub fn delta(node: Arc<Node>, base: PhysicalId) -> Self {
        Self::Delta { index: Arc::new(KeyIndex::of_node(&node)), node, base }
    }

    /// Approximate memory cost in bytes, used to fill the cache's capacity.
    #[must_use]
    pub fn weight(&self) -> usize {
        match self {
            Self::Value(b) => b.len() + 32,
            Self::Node { node, .. } => node_weight(node),
            Self::Delta { node, .. } => node_weight(node) + 16,
        }
    }
}

/// The node's bytes in memory, its key index's 16-byte word per key
/// included.
fn node_weight(node: &Node) -> usize {
    match node {
        Node::Leaf { items } => {
            64 + items
                .iter()
                .map(|i| {
                    let value = match &i.value {
                        Value::Inline(v) => v.len(),
                        Value::Blob { .. } => 24,
                    };
                    i.key.len() + value + 96
                })
                .sum::<usize>()
        }
        Node::Internal { keys, children } => {
            64 + keys.iter().map(|k| k.len() + 48).sum::<usize>() + children.len() * 16
        }
    }
}

const TAG_NODE: u8 = 0;
const TAG_VALUE: u8 = 1;
const TAG_DELTA: u8 = 2;

fn io_err(e: std::io::Error) -> foyer::Error {
    foyer::Error::io_error(e)
}

impl Code for CachedBlob {
    fn encode(&self, writer: &mut impl Write) -> foyer::Result<()> {
        let (tag, bytes) = match self {
            Self::Node { node, .. } => (TAG_NODE, Bytes::from(node.encode())),
            Self::Delta { node, base, .. } => {
                let mut b = base.as_u128().to_le_bytes().to_vec();
                b.extend_from_slice(&node.encode());
                (TAG_DELTA, Bytes::from(b))
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
            TAG_DELTA if bytes.len() >= 16 => {
                let mut base = [0u8; 16];
                base.copy_from_slice(&bytes[..16]);
                Node::decode(&bytes.slice(16..))
                    .map(|n| Self::delta(Arc::new(n), PhysicalId::from_u128(u128::from_le_bytes(base))))
                    .map_err(|e| io_err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
            }
            t => Err(io_err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("unknown cache tag {t}"),
            ))),
        }
    }

    fn estimated_size(&self) -> usize {
        5 + match self {
            Self::Node { node, .. } => node_weight(node),
            Self::Delta { node, .. } => node_weight(node) + 16,
            Self::Value(b) => b.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_encoding_round_trips_and_rejects_garbage() {
        for blob in [
            CachedBlob::node(Arc::new(Node::empty_leaf())),
            CachedBlob::delta(Arc::new(Node::empty_leaf()), PhysicalId::new()),
            CachedBlob::Value(Bytes::from_static(b"v")),
        ] {
            let mut buf = Vec::new();
            blob.encode(&mut buf).unwrap();
            let back = CachedBlob::decode(&mut buf.as_slice()).unwrap();
            match (blob, back) {
                (CachedBlob::Node { node: a, index: i }, CachedBlob::Node { node: b, index: j }) => {
                    assert_eq!((a, i), (b, j));
                }
                (
                    CachedBlob::Delta { node: a, base: x, index: i },
                    CachedBlob::Delta { node: b, base: y, index: j },
                ) => {
                    assert_eq!((a, x, i), (b, y, j));
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
