//! Two simulated nodes on virtual time: a fixed seed list, fresh seeds, and named
//! scenarios for the membership requirements.
//!
//! `SIM_SEED=0x...` replays one seed; `SIM_SEEDS=N` sets how many fresh seeds
//! (default 20); `SIM_LOG=1` prints the trace live.

use bascule::core::event::{Event, PeerReason};
use bascule::core::PeerState;
use bascule::sim::fault::{Dir, Fault, Scenario, Span, Timing, ETH, SERIAL};
use bascule::sim::{run_seed, Report, Sim};
use bascule::time::{Duration, Instant};

/// Seeds that always run (CI): a spread, plus any seed that once failed.
const FIXED_SEEDS: [u64; 20] = [
    0x0, 0x1, 0x2, 0x3, 0x2a, 0xbeef, 0xcafe, 0x5eed, 0x1234_5678, 0xdead_beef, 0x0bad_f00d, 0x7777, 0x1_0000,
    0xffff_ffff, 0x8000_0000_0000_0000, 0x9e37_79b9_7f4a_7c15, 0x1357_9bdf, 0x2468_ace0, 0x600d_5eed, 0xfeed_face,
];
/// Fresh seeds per run unless `SIM_SEEDS` says otherwise.
const FRESH_SEEDS_DEFAULT: u64 = 20;

#[track_caller]
fn run_or_panic(seed: u64) -> Report {
    match run_seed(seed) {
        Ok(report) => report,
        Err(failure) => panic!("{failure}"),
    }
}

#[track_caller]
fn run(scenario: Scenario) -> Report {
    match Sim::new(scenario).run() {
        Ok(report) => report,
        Err(failure) => panic!("{failure}"),
    }
}

fn parse_seed(s: &str) -> u64 {
    let s = s.trim();
    let parsed = match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.unwrap_or_else(|_| panic!("SIM_SEED={s}: expected 0x-hex or decimal"))
}

#[test]
fn fixed_seeds() {
    if std::env::var("SIM_SEED").is_ok() {
        return;
    }
    for seed in FIXED_SEEDS {
        run_or_panic(seed);
    }
}

#[test]
fn fresh_seeds() {
    if let Ok(seed) = std::env::var("SIM_SEED") {
        let seed = parse_seed(&seed);
        eprintln!("SIM_SEED=0x{seed:016x}");
        run_or_panic(seed);
        return;
    }
    let count = std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(FRESH_SEEDS_DEFAULT);
    let clock = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() as u64;
    let mut seeds = bascule::rng::Rng::new(clock);
    for _ in 0..count {
        let seed = seeds.next_u64();
        eprintln!("SIM_SEED=0x{seed:016x}");
        run_or_panic(seed);
    }
}
