//! Fields carved from the input -> `Repr` -> `wire::encode` -> every decode path
//! gives the `Repr` back. Invariants in `bascule::wire::fuzz::frame_roundtrip`
//! (shared with tests/corpus_replay.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bascule::wire::fuzz::frame_roundtrip(data);
});
