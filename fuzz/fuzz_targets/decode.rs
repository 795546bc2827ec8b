//! Arbitrary bytes into every decoder of `sop-core`: `Ok` or an error,
//! never a panic, never an allocation sized by a forged length.
#![no_main]

use std::alloc::System;

use bytes::Bytes;
use cap::Cap;
use libfuzzer_sys::fuzz_target;
use sop_core::record::{self, RecordId};
use sop_core::{Handle, Intent, LeafDelta, Node, PhysicalId, StoreInfo};

/// Rust allocations are capped at 64 MiB in all: decoding an input of at
/// most 4 KiB that asks for more has trusted a forged count, and the failed
/// allocation aborts the run, which libFuzzer reports as a crash.
#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, 64 << 20);

fuzz_target!(|data: &[u8]| {
    let _ = Handle::decode(data);
    let _ = Intent::decode(data);
    let _ = StoreInfo::decode(data);
    let _ = record::header_parts(data);
    if let Ok(ids) = record::decode_header(RecordId::random(), data) {
        // A record header names parts that tile the record after it.
        let parts: Vec<_> = ids.iter().map(|id| id.part().expect("a part id")).collect();
        let end = parts.last().map_or(0, |p| p.range().end);
        assert!(record::tiles_record(&parts, end));
    }
    if let Ok(parts) = record::decode_dead(data) {
        let ids: Vec<PhysicalId> = parts.iter().map(|p| p.id()).collect();
        assert_eq!(record::decode_dead(&record::encode_dead(&ids)).expect("re-decode"), parts);
    }
    if let Ok(node) = Node::decode(&Bytes::copy_from_slice(data)) {
        // What decodes must encode back to the same node.
        let again = Node::decode(&Bytes::from(node.encode())).expect("re-decode");
        assert_eq!(again, node);
    }
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(delta) = LeafDelta::decode(&bytes) {
        // A delta that decodes re-encodes to itself, and applied to an
        // empty leaf gives its puts in strictly ascending key order.
        let again = LeafDelta::decode(&Bytes::from(delta.encode())).expect("re-decode");
        assert_eq!(again, delta);
        let out = delta.apply(&[]);
        assert!(out.windows(2).all(|w| w[0].key < w[1].key));
    }
});
