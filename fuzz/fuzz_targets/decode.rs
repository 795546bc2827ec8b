//! Arbitrary bytes into every decoder of `sop-core`: `Ok` or an error,
//! never a panic, never an allocation sized by a forged length.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sop_core::{Handle, Intent, Node, StoreInfo};

fuzz_target!(|data: &[u8]| {
    let _ = Handle::decode(data);
    let _ = Intent::decode(data);
    let _ = StoreInfo::decode(data);
    if let Ok(node) = Node::decode(&Bytes::copy_from_slice(data)) {
        // What decodes must encode back to the same node.
        let again = Node::decode(&Bytes::from(node.encode())).expect("re-decode");
        assert_eq!(again, node);
    }
});
