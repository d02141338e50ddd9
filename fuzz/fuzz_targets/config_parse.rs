//! Arbitrary bytes as ha.cf / authkeys / haresources text through the config
//! parsers: never panics, and whatever parses satisfies the config invariants.
//! The body, `bascule::config::fuzz_config`, lives in the library (written by the
//! config work) so tests/corpus_replay.rs replays the same checks on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bascule::config::fuzz_config(data);
});
