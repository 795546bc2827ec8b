//! [`KeyIndex`]: a compact, cache-friendly summary of one node's sorted
//! keys that locates a key, usually without comparing whole keys.
//!
//! A node's keys live behind `Bytes` handles that point into the blob they
//! were decoded from, interleaved with values; a plain binary search over
//! a 200-item leaf touches two cache lines per probe (the item, then its
//! key's bytes). Measured on a 100 000-item tree, those misses were two
//! thirds of a warm point read. The index keeps one 16-byte *word* per
//! key, in one contiguous array: the first 15 bytes that follow the prefix
//! all of the node's keys share (zero-padded), then that suffix's length
//! (16 standing for "longer than 15"). The search interpolates into the
//! words and gallops from its guess (one or two cache lines), and compares
//! whole keys only when the word cannot decide: two suffixes longer than
//! 15 bytes that agree on their first 15.
//!
//! Correctness rests on two properties of the word, for keys sharing the
//! node's prefix: it never decreases as the key grows (truncating and
//! zero-padding preserve `<=`; among equal padded bytes the shorter key,
//! a prefix of the longer, is the smaller, and so is its length), and two
//! keys with equal words whose suffixes are at most 15 bytes long are the
//! same key.

use bytes::Bytes;

use crate::{Item, Node};

/// See the module documentation. Built from a node that is not changed
/// afterwards (a decoded or committed node); a node being written has none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyIndex {
    /// The bytes every key of the node starts with.
    shared: Shared,
    /// Per key, its word (the module documentation), big-endian.
    words: Box<[u128]>,
    /// Set when every suffix has this one length, at most 16 bytes: the
    /// words are then the suffixes themselves, zero-padded, with no length
    /// byte, and decide equality for probes of that length (fixed-size
    /// keys, whose 16-byte suffixes would not fit beside a length).
    fixed: Option<usize>,
    /// The first and the last word (zero when empty), kept beside the
    /// prefix: the search's interpolation reads both before its guess,
    /// and from the array they are two cache misses on a cold node
    /// (measured as 7.5 % of a warm point read, with its guess's miss).
    ends: (u128, u128),
}

/// Where [`KeyIndex::locate`] places a key among a node's entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Located {
    /// Entry `i` is the key.
    Found(usize),
    /// The key is absent; `i` entries are below it.
    Absent(usize),
    /// Every entry before `lo` is below the key and every entry from `hi`
    /// on is above it; whole keys must be compared in `lo..hi`.
    Compare(usize, usize),
}

/// Suffix bytes a word holds; its last byte holds the suffix's length.
const WORD_BYTES: usize = 15;

/// Up to this many shared bytes are kept inside the index itself, on the
/// cache line its reference count shares, not behind a pointer into the
/// node's blob (a cache miss per search, measured at 9% of a point read).
const INLINE: usize = 30;

/// A node's shared key prefix, inline when short.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shared {
    Inline { len: u8, bytes: [u8; INLINE] },
    Spilled(Bytes),
}

impl Default for Shared {
    fn default() -> Self {
        Self::Inline { len: 0, bytes: [0; INLINE] }
    }
}

impl Shared {
    fn new(prefix: &Bytes) -> Self {
        let mut bytes = [0; INLINE];
        match (bytes.get_mut(..prefix.len()), u8::try_from(prefix.len())) {
            (Some(dst), Ok(len)) => {
                dst.copy_from_slice(prefix);
                Self::Inline { len, bytes }
            }
            _ => Self::Spilled(prefix.clone()),
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Self::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            Self::Spilled(b) => b,
        }
    }
}

impl KeyIndex {
    /// The index of a node's keys: a leaf's item keys or an internal
    /// node's separators.
    #[must_use]
    pub fn of_node(node: &Node) -> Self {
        match node {
            Node::Leaf { items } => Self::of_keys(items.iter().map(|i: &Item| &i.key)),
            Node::Internal { keys, .. } => Self::of_keys(keys.iter()),
        }
    }

    /// The index of `keys`, which must be sorted.
    fn of_keys<'a, I>(keys: I) -> Self
    where
        I: ExactSizeIterator<Item = &'a Bytes> + DoubleEndedIterator + Clone,
    {
        let (Some(first), Some(last)) = (keys.clone().next(), keys.clone().next_back()) else {
            return Self::default();
        };
        let n = first.iter().zip(last.iter()).take_while(|(a, b)| a == b).count();
        // Sorted keys share whatever the first and the last share.
        let shared = Shared::new(&first.slice(..n));
        let suffix_len = first.len() - n;
        let fixed = (suffix_len <= 16 && keys.clone().all(|k| k.len().checked_sub(n) == Some(suffix_len)))
            .then_some(suffix_len);
        let words: Box<[u128]> = keys.map(|k| word(k.get(n..).unwrap_or_default(), fixed)).collect();
        Self { shared, ends: ends(&words), words, fixed }
    }

    /// The number of keys indexed.
    #[must_use]
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Whether no key is indexed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The position of `key` among a leaf's sorted `items` (as
    /// `binary_search_by`), located by this index when it is the leaf's
    /// (as many keys), else by comparing keys.
    pub fn search(&self, items: &[Item], key: &[u8]) -> Result<usize, usize> {
        let by = |i: &Item| i.key.as_ref().cmp(key);
        let (lo, hi) = match self.len() == items.len() {
            true => match self.locate(key) {
                Located::Found(i) => return Ok(i),
                Located::Absent(i) => return Err(i),
                Located::Compare(lo, hi) => (lo, hi),
            },
            false => (0, items.len()),
        };
        match items.get(lo..hi) {
            Some(part) => part.binary_search_by(by).map(|i| lo + i).map_err(|i| lo + i),
            None => items.binary_search_by(by),
        }
    }

    /// Where `key` stands among the node's entries.
    #[must_use]
    pub fn locate(&self, key: &[u8]) -> Located {
        let shared = self.shared.as_slice();
        let n = shared.len();
        let head = key.get(..n).unwrap_or(key);
        let shared_head = shared.get(..head.len()).unwrap_or_default();
        match cmp_short(head, shared_head) {
            std::cmp::Ordering::Less => return Located::Absent(0),
            std::cmp::Ordering::Greater => return Located::Absent(self.len()),
            // Shorter than the shared prefix and equal to its start: a
            // proper prefix of every entry, so below all of them.
            std::cmp::Ordering::Equal if key.len() < n => return Located::Absent(0),
            std::cmp::Ordering::Equal => {}
        }
        let suffix = key.get(n..).unwrap_or_default();
        let w = word(suffix, self.fixed);
        let lo = lower_bound(&self.words, self.ends, w);
        if self.decides(suffix.len(), w) {
            // Equal words that hold whole suffixes are equal keys.
            return match self.words.get(lo) {
                Some(&e) if e == w => Located::Found(lo),
                _ => Located::Absent(lo),
            };
        }
        Located::Compare(lo, gallop(&self.words, lo, |e| e <= w))
    }

    /// Whether the word `w` of a probe's suffix of `len` bytes decides
    /// equality with an entry's word: it holds the whole suffix, and so
    /// does every word equal to it.
    fn decides(&self, len: usize, w: u128) -> bool {
        match self.fixed {
            Some(fixed) => len == fixed,
            None => (w & 0xff) as usize <= WORD_BYTES,
        }
    }
}

/// The first index whose word is not below `w`, starting from an
/// interpolated guess: words past a shared prefix are spread about evenly
/// over their range (random keys, counters), so the guess lands within a
/// few entries of the answer, and doubling steps from it touch one or two
/// cache lines where a binary search over a leaf's words touches five.
/// Skewed words cost at most about twice a binary search. `(first,
/// last)` are the words' ends, passed in so that they cost no access to
/// `words`.
fn lower_bound(words: &[u128], (first, last): (u128, u128), w: u128) -> usize {
    if words.is_empty() || w <= first {
        return 0;
    }
    if w > last {
        return words.len();
    }
    // first < w <= last, so last > first; the guess is below len.
    // In 64-bit parts: converting a u128 to f64 is a software routine
    // (1.5 % of a warm point read's time), a u64 is one instruction.
    let span = last - first;
    let shift = (u128::BITS - span.leading_zeros()).saturating_sub(u64::BITS);
    let share = ((w - first) >> shift) as u64 as f64 / (span >> shift) as u64 as f64;
    let guess = ((share * (words.len() - 1) as f64) as usize).min(words.len() - 1);
    match words.get(guess) {
        Some(&e) if e < w => gallop(words, guess + 1, |e| e < w),
        _ => {
            // The answer is at or before `guess`: step back by doubling
            // until a word below `w`, then search the gap.
            let (mut hi, mut step) = (guess, 1);
            let lo = loop {
                match hi.checked_sub(step) {
                    Some(p) if words.get(p).is_some_and(|&e| e >= w) => {
                        hi = p;
                        step *= 2;
                    }
                    Some(p) => break p + 1,
                    None => break 0,
                }
            };
            lo + words.get(lo..hi).map_or(0, |gap| gap.partition_point(|&e| e < w))
        }
    }
}

/// The first and the last of `words` (zero when empty).
fn ends(words: &[u128]) -> (u128, u128) {
    (words.first().copied().unwrap_or(0), words.last().copied().unwrap_or(0))
}

/// The first index from `start` on whose word fails `pred`, which holds on
/// a prefix of `words` that reaches at least to `start`: doubling steps,
/// then a binary search of the last step.
fn gallop(words: &[u128], start: usize, pred: impl Fn(u128) -> bool) -> usize {
    let (mut lo, mut step) = (start, 1);
    loop {
        let probe = lo + step - 1;
        match words.get(probe) {
            Some(&e) if pred(e) => {
                lo = probe + 1;
                step *= 2;
            }
            _ => {
                let hi = probe.min(words.len());
                return lo + words.get(lo..hi).map_or(0, |part| part.partition_point(|&e| pred(e)));
            }
        }
    }
}

/// The word of a key's suffix `b`: its first 15 bytes, zero-padded, then
/// its length (16 for any longer), as a big-endian number; in a node of
/// `fixed`-length suffixes, its first 16 bytes, zero-padded.
fn word(b: &[u8], fixed: Option<usize>) -> u128 {
    let mut w = [0u8; 16];
    if fixed.is_some() {
        for (d, s) in w.iter_mut().zip(b) {
            *d = *s;
        }
        return u128::from_be_bytes(w);
    }
    for (d, s) in w.iter_mut().zip(b.iter().take(WORD_BYTES)) {
        *d = *s;
    }
    if let Some(last) = w.last_mut() {
        *last = u8::try_from(b.len().min(WORD_BYTES + 1)).unwrap_or(16);
    }
    u128::from_be_bytes(w)
}

/// Orders two byte strings as `[u8]`'s `cmp` does; those of at most eight
/// bytes (a node's shared key prefix, mostly one or two bytes) as two
/// numbers, zero-padded, then by length, with no call to `memcmp`.
#[inline]
fn cmp_short(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    if a.len() > 8 || b.len() > 8 {
        return a.cmp(b);
    }
    let padded = |s: &[u8]| {
        let mut w = [0u8; 8];
        w.iter_mut().zip(s).for_each(|(d, s)| *d = *s);
        u64::from_be_bytes(w)
    };
    padded(a).cmp(&padded(b)).then(a.len().cmp(&b.len()))
}

/// Orders two keys as `[u8]`'s `cmp` does, deciding most pairs on their
/// first eight bytes as one number instead of a call to `memcmp` (the
/// changes of a leaf delta are searched and merged by key on every write:
/// `memcmp` calls were half of those lookups' instructions).
#[must_use]
#[inline]
pub fn cmp_keys(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    if let (Some(x), Some(y)) = (a.first_chunk::<8>(), b.first_chunk::<8>()) {
        let (x, y) = (u64::from_be_bytes(*x), u64::from_be_bytes(*y));
        if x != y {
            return x.cmp(&y);
        }
    }
    a.cmp(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{TxId, Value};
    use proptest::prelude::*;

    proptest! {
        /// Keys of every length around the eight bytes the fast path
        /// reads, from a small alphabet so that prefixes often agree.
        #[test]
        fn cmp_keys_orders_as_slices_do(
            a in proptest::collection::vec(0u8..3, 0..20),
            b in proptest::collection::vec(0u8..3, 0..20),
        ) {
            prop_assert_eq!(cmp_keys(&a, &b), a.cmp(&b));
            prop_assert_eq!(cmp_keys(&a, &a), std::cmp::Ordering::Equal);
            prop_assert_eq!(cmp_short(&a, &b), a.cmp(&b));
            prop_assert_eq!(cmp_short(&a, &a), std::cmp::Ordering::Equal);
        }
    }

    /// Every pair of strings of up to four bytes over 0x00, 0x01 and
    /// 0xff, and eight- and nine-byte ones: zero padding never hides a
    /// trailing zero byte, and the length decides prefixes.
    #[test]
    fn cmp_short_orders_every_short_pair_as_slices_do() {
        let mut all: Vec<Vec<u8>> = vec![vec![]];
        for _ in 0..4 {
            let longer: Vec<Vec<u8>> = all
                .iter()
                .filter(|s| s.len() == all.last().map_or(0, Vec::len))
                .flat_map(|s| [0u8, 1, 0xff].map(|b| [s.as_slice(), &[b]].concat()))
                .collect();
            all.extend(longer);
        }
        all.extend([vec![0; 8], vec![0xff; 8], vec![0; 9], [vec![1; 7], vec![0]].concat()]);
        for a in &all {
            for b in &all {
                assert_eq!(cmp_short(a, b), a.cmp(b), "{a:?} vs {b:?}");
            }
        }
    }

    fn leaf(keys: &[Vec<u8>]) -> Node {
        let items = keys
            .iter()
            .map(|k| Item {
                key: Bytes::from(k.clone()),
                version: TxId::from_u128(1),
                value: Value::Inline(Bytes::new()),
            })
            .collect();
        Node::Leaf { items }
    }

    /// What the index promises, against a plain comparison of every key.
    fn check(keys: &[Vec<u8>], probe: &[u8]) {
        let node = leaf(keys);
        let index = KeyIndex::of_node(&node);
        let Node::Leaf { items } = &node else { unreachable!() };
        let plain = items.binary_search_by(|i| i.key.as_ref().cmp(probe));
        assert_eq!(index.search(items, probe), plain, "search, probe {probe:?} over {keys:?}");
        // An index of another node's length is not used: a plain search.
        let Node::Leaf { items: fewer } = leaf(keys.get(1..).unwrap_or_default()) else { unreachable!() };
        let plain = fewer.binary_search_by(|i| i.key.as_ref().cmp(probe));
        assert_eq!(index.search(&fewer, probe), plain, "search of other items, probe {probe:?}");
        let below = keys.iter().filter(|k| k.as_slice() < probe).count();
        let found = keys.iter().position(|k| k.as_slice() == probe);
        match index.locate(probe) {
            Located::Found(i) => assert_eq!(Some(i), found, "probe {probe:?} over {keys:?}"),
            Located::Absent(i) => assert_eq!((i, found), (below, None), "probe {probe:?} over {keys:?}"),
            Located::Compare(lo, hi) => {
                // Only a suffix too long for its word leaves a choice, and
                // then exactly the entries with the probe's word.
                let shared = index.shared.as_slice();
                let suffix = &probe[shared.len()..];
                let w = word(suffix, index.fixed);
                assert!(!index.decides(suffix.len(), w), "a deciding word left a comparison: {probe:?}");
                let want = (
                    index.words.iter().filter(|&&e| e < w).count(),
                    index.words.iter().filter(|&&e| e <= w).count(),
                );
                assert_eq!((lo, hi), want, "probe {probe:?} over {keys:?}");
                for (i, k) in keys.iter().enumerate() {
                    assert!(i >= lo || k.as_slice() < probe, "entry {i} {k:?} before {lo}");
                    assert!(i < hi || k.as_slice() > probe, "entry {i} {k:?} from {hi}");
                }
            }
        }
    }

    #[test]
    fn shared_prefixes_short_keys_and_probes_outside_the_node() {
        let keys: Vec<Vec<u8>> = vec![
            b"user:0001".to_vec(),
            b"user:0001\0".to_vec(),
            b"user:0002".to_vec(),
            b"user:00020000000000x".to_vec(),
        ];
        for probe in [
            &b""[..],
            b"u",
            b"user:",
            b"user:0001",
            b"user:0001\0",
            b"user:00015",
            b"user:0002",
            b"user:00020000000000",
            b"user:00020000000000x",
            b"user:1",
            b"v",
            b"usea",
            b"\xff",
        ] {
            check(&keys, probe);
        }
        check(&[], b"x");
        check(&[b"only".to_vec()], b"only");
        check(&[b"only".to_vec()], b"onl");
        check(&[vec![], vec![0], vec![0, 0]], &[]);
        check(&[vec![], vec![0], vec![0, 0]], &[0]);
        // Suffixes longer than a word that agree on its 15 bytes.
        let x15 = [b"a".to_vec(), vec![b'x'; 15]].concat();
        let mut tails: Vec<Vec<u8>> = vec![
            [x15.clone(), b"1".to_vec()].concat(),
            [x15.clone(), b"2".to_vec()].concat(),
            x15.clone(),
            b"b".to_vec(),
        ];
        tails.sort();
        for probe in [
            x15.clone(),
            [x15.clone(), b"1".to_vec()].concat(),
            [x15.clone(), b"15".to_vec()].concat(),
            [x15.clone(), b"3".to_vec()].concat(),
            x15[..15].to_vec(),
        ] {
            check(&tails, &probe);
        }
        // A shared prefix too long to keep inline.
        let long: Vec<Vec<u8>> = (0..5u8).map(|i| [vec![7; 40], vec![i; 3]].concat()).collect();
        for probe in [vec![7; 39], vec![7; 40], [vec![7; 40], vec![2; 3]].concat(), vec![7; 41], vec![8]] {
            check(&long, &probe);
        }
    }

    #[test]
    fn internal_nodes_index_their_separators() {
        let node = Node::Internal {
            keys: vec![Bytes::from_static(b"b"), Bytes::from_static(b"d")],
            children: vec![crate::LogicalId::from_u128(1); 3],
        };
        let index = KeyIndex::of_node(&node);
        assert_eq!(index.len(), 2);
        assert_eq!(index.locate(b"c"), Located::Absent(1));
        assert_eq!(index.locate(b"d"), Located::Found(1));
        assert_eq!(index.locate(b"e"), Located::Absent(2));
    }

    proptest! {
        #[test]
        fn interpolated_search_finds_what_a_scan_finds(
            mut words in proptest::collection::vec(
                prop_oneof![any::<u128>(), 0u128..64, Just(u128::MAX), Just(0)], 0..300),
            probe in prop_oneof![any::<u128>(), 0u128..64, Just(u128::MAX), Just(0)],
        ) {
            words.sort_unstable();
            let below = words.iter().filter(|&&e| e < probe).count();
            let not_above = words.iter().filter(|&&e| e <= probe).count();
            prop_assert_eq!(lower_bound(&words, ends(&words), probe), below);
            prop_assert_eq!(gallop(&words, below, |e| e <= probe), not_above);
        }

        #[test]
        fn fixed_length_keys_are_located_exactly(
            len in 0usize..20,
            seeds in proptest::collection::vec(any::<u64>(), 0..40),
            probe_len in 0usize..22,
            probe_seed in any::<u64>(),
        ) {
            // Keys of one length over a small alphabet: shared prefixes,
            // equal 16-byte heads and probes of other lengths.
            let key = |seed: u64, n: usize| (0..n).map(|i| ((seed >> (i % 32 * 2)) & 3) as u8).collect::<Vec<u8>>();
            let mut keys: Vec<Vec<u8>> = seeds.iter().map(|&s| key(s, len)).collect();
            keys.sort();
            keys.dedup();
            check(&keys, &key(probe_seed, probe_len));
            if let Some(k) = keys.first() {
                check(&keys, k);
            }
        }

        #[test]
        fn candidates_bound_every_search(
            mut keys in proptest::collection::vec(proptest::collection::vec(0u8..3, 0..20), 0..40),
            probe in proptest::collection::vec(0u8..3, 0..20),
            prefix in proptest::collection::vec(any::<u8>(), 0..3),
        ) {
            // Small alphabets and a shared prefix make equal words and
            // keys that are prefixes of each other common.
            for k in &mut keys {
                k.splice(0..0, prefix.iter().copied());
            }
            keys.sort();
            keys.dedup();
            let mut p = prefix.clone();
            p.extend_from_slice(&probe);
            check(&keys, &p);
            check(&keys, &probe);
        }
    }
}
