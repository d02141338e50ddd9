//! Two replicating nodes on virtual time (the replicated disk's deterministic
//! simulation, src/sim/repl.rs): a fixed seed list, fresh seeds, and named
//! scenarios for the replication requirements.
//!
//! `SIM_SEED=0x...` replays one seed; `SIM_SEEDS=N` sets how many fresh seeds
//! (default 3); `SIM_LOG=1` prints the trace live.
#![cfg(feature = "sim")]

use bascule::sim::repl::{run_seed, Report};

/// Seeds that always run (CI): a spread, plus any seed that once failed.
const FIXED_SEEDS: [u64; 17] = [
    0x0,
    0x1,
    0x2,
    0x3,
    0x2a,
    0xbeef,
    0xcafe,
    0x5eed,
    0x1234_5678,
    0xdead_beef,
    0x0bad_f00d,
    0x7777,
    0x1_0000,
    0xffff_ffff,
    0x9e37_79b9_7f4a_7c15,
    0x600d_5eed,
    0xfeed_face,
];
const FRESH_SEEDS_DEFAULT: u64 = 3;

#[track_caller]
fn run_or_panic(seed: u64) -> Report {
    match run_seed(seed) {
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
    let mut total = Report::default();
    for seed in FIXED_SEEDS {
        let r = run_or_panic(seed);
        total.acked_writes += r.acked_writes;
        total.crashes += r.crashes;
        total.failovers_checked += r.failovers_checked;
        total.cuts += r.cuts;
        total.disk_failures += r.disk_failures;
    }
    eprintln!("{total:?}");
    // The schedule must actually exercise what the checks are about.
    assert!(total.acked_writes > 1000, "{total:?}");
    assert!(total.failovers_checked >= 5, "{total:?}");
    assert!(total.cuts >= 5 && total.disk_failures >= 2, "{total:?}");
}

#[test]
fn fresh_seeds() {
    if let Ok(seed) = std::env::var("SIM_SEED") {
        let seed = parse_seed(&seed);
        eprintln!("SIM_SEED=0x{seed:016x}");
        eprintln!("{:?}", run_or_panic(seed));
        return;
    }
    let count = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(FRESH_SEEDS_DEFAULT);
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    let mut seeds = bascule::rng::Rng::new(clock);
    for _ in 0..count {
        let seed = seeds.next_u64();
        eprintln!("SIM_SEED=0x{seed:016x}");
        run_or_panic(seed);
    }
}
