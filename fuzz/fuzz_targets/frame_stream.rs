//! Random bytes, split at random points, through the stream decoder and
//! `wire::decode`; then a valid frame that must come out. The invariants are
//! asserted in `bascule::wire::fuzz::frame_stream` (shared with
//! tests/corpus_replay.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bascule::wire::fuzz::frame_stream(data);
});
