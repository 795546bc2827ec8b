//! The order-preserving key encoding: `memcmp` order of the encoded bytes
//! equals the natural order of the values.
//!
//! - Unsigned integers: fixed-width big-endian.
//! - Signed integers: sign bit flipped, then big-endian.
//! - `bool`: one byte, 0 or 1.
//! - Strings and byte strings: every `0x00` written as `0x00 0xFF`, then a
//!   `0x00 0x00` terminator, so that a prefix sorts first and tuples of
//!   strings compare element by element.
//! - Tuples: the elements' encodings concatenated.

use sop_core::{Error, Result};

/// A type usable as a typed store's key.
pub trait Key: Sized {
    /// Appends this key's order-preserving encoding to `out`.
    fn encode_key(&self, out: &mut Vec<u8>);

    /// Reads one key from the front of `input`, advancing it.
    ///
    /// # Errors
    /// `Corruption` when `input` is not a valid encoding.
    fn decode_key(input: &mut &[u8]) -> Result<Self>;

    /// The encoding as a new vector.
    fn to_key_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_key(&mut out);
        out
    }

    /// Decodes a whole buffer holding exactly one key.
    ///
    /// # Errors
    /// `Corruption` for an invalid encoding or trailing bytes.
    fn from_key_bytes(mut input: &[u8]) -> Result<Self> {
        let k = Self::decode_key(&mut input)?;
        if input.is_empty() { Ok(k) } else { Err(Error::corruption("key", "trailing bytes")) }
    }
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
    if input.len() < n {
        return Err(Error::corruption("key", format!("truncated: wanted {n} bytes, {} left", input.len())));
    }
    let (head, tail) = input.split_at(n);
    *input = tail;
    Ok(head)
}

macro_rules! unsigned_key {
    ($($t:ty),*) => {$(
        impl Key for $t {
            fn encode_key(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_be_bytes());
            }
            fn decode_key(input: &mut &[u8]) -> Result<Self> {
                let b = take(input, size_of::<$t>())?;
                Ok(<$t>::from_be_bytes(b.try_into().map_err(|_| Error::corruption("key", "width"))?))
            }
        }
    )*};
}

macro_rules! signed_key {
    ($($t:ty => $u:ty),*) => {$(
        impl Key for $t {
            fn encode_key(&self, out: &mut Vec<u8>) {
                let flipped = (*self as $u) ^ (1 << (<$u>::BITS - 1));
                out.extend_from_slice(&flipped.to_be_bytes());
            }
            fn decode_key(input: &mut &[u8]) -> Result<Self> {
                let u = <$u>::decode_key(input)?;
                Ok((u ^ (1 << (<$u>::BITS - 1))) as $t)
            }
        }
    )*};
}

unsigned_key!(u8, u16, u32, u64, u128);
signed_key!(i8 => u8, i16 => u16, i32 => u32, i64 => u64, i128 => u128);

impl Key for bool {
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn decode_key(input: &mut &[u8]) -> Result<Self> {
        match take(input, 1)? {
            [0] => Ok(false),
            [1] => Ok(true),
            _ => Err(Error::corruption("key", "bad bool")),
        }
    }
}

/// Writes a byte string escaped and terminated (see the module doc).
pub(crate) fn encode_bytes(b: &[u8], out: &mut Vec<u8>) {
    for &byte in b {
        out.push(byte);
        if byte == 0 {
            out.push(0xff);
        }
    }
    out.extend_from_slice(&[0, 0]);
}

/// Reads an escaped, terminated byte string.
pub(crate) fn decode_bytes(input: &mut &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        match take(input, 1)? {
            [0] => match take(input, 1)? {
                [0] => return Ok(out),
                [0xff] => out.push(0),
                _ => return Err(Error::corruption("key", "bad escape in byte string")),
            },
            [b] => out.push(*b),
            _ => return Err(Error::corruption("key", "truncated")),
        }
    }
}

impl Key for Vec<u8> {
    fn encode_key(&self, out: &mut Vec<u8>) {
        encode_bytes(self, out);
    }
    fn decode_key(input: &mut &[u8]) -> Result<Self> {
        decode_bytes(input)
    }
}

impl Key for String {
    fn encode_key(&self, out: &mut Vec<u8>) {
        encode_bytes(self.as_bytes(), out);
    }
    fn decode_key(input: &mut &[u8]) -> Result<Self> {
        String::from_utf8(decode_bytes(input)?)
            .map_err(|e| Error::corruption("key", format!("bad UTF-8: {e}")))
    }
}

macro_rules! tuple_key {
    ($($name:ident),+) => {
        impl<$($name: Key),+> Key for ($($name,)+) {
            #[allow(non_snake_case)]
            fn encode_key(&self, out: &mut Vec<u8>) {
                let ($($name,)+) = self;
                $($name.encode_key(out);)+
            }
            fn decode_key(input: &mut &[u8]) -> Result<Self> {
                Ok(($($name::decode_key(input)?,)+))
            }
        }
    };
}

tuple_key!(A, B);
tuple_key!(A, B, C);
tuple_key!(A, B, C, D);

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn enc<K: Key>(k: &K) -> Vec<u8> {
        k.to_key_bytes()
    }

    proptest! {
        #[test]
        fn signed_order_holds(a: i64, b: i64) {
            prop_assert_eq!(a.cmp(&b), enc(&a).cmp(&enc(&b)));
            prop_assert_eq!(i64::from_key_bytes(&enc(&a)).unwrap(), a);
        }

        #[test]
        fn unsigned_order_holds(a: u32, b: u32) {
            prop_assert_eq!(a.cmp(&b), enc(&a).cmp(&enc(&b)));
        }

        #[test]
        fn byte_string_order_holds(a: Vec<u8>, b: Vec<u8>) {
            prop_assert_eq!(a.cmp(&b), enc(&a).cmp(&enc(&b)));
            prop_assert_eq!(Vec::<u8>::from_key_bytes(&enc(&a)).unwrap(), a);
        }

        #[test]
        fn tuple_order_holds(a: (String, i32), b: (String, i32)) {
            prop_assert_eq!(a.cmp(&b), enc(&a).cmp(&enc(&b)));
            prop_assert_eq!(<(String, i32)>::from_key_bytes(&enc(&a)).unwrap(), a);
        }

        #[test]
        fn garbage_never_panics(bytes: Vec<u8>) {
            let _ = <(String, u64, Vec<u8>)>::from_key_bytes(&bytes);
            let _ = i128::from_key_bytes(&bytes);
        }
    }

    #[test]
    fn prefixes_sort_first_even_with_zero_bytes() {
        let keys: Vec<Vec<u8>> = vec![vec![], vec![0], vec![0, 0], vec![0, 1], vec![1], vec![1, 0]];
        let encoded: Vec<Vec<u8>> = keys.iter().map(enc).collect();
        assert!(encoded.windows(2).all(|w| w[0] < w[1]));
        assert!(String::from_key_bytes(&[0xff, 0xfe, 0, 0]).is_err(), "invalid UTF-8");
        assert!(bool::from_key_bytes(&[2]).is_err());
    }
}
