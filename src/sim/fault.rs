//! Faults and scenarios: what the simulated network and nodes do wrong, and when.
//!
//! Layer: simulation only (allocates freely). A [`Scenario`] is the whole
//! schedule of a run: timers, a list of [`Scheduled`] faults, the end time. It is
//! either built by hand (named tests) or drawn from a seed ([`Scenario::generate`]).
//! Faults on frames are turned into [`Verdict`]s per direction of each link,
//! turmoil style: the active faults are asked in rule order (by [`Scheduled::rank`]:
//! losses before delays before copies) and the first one that is not `Pass` wins.

use core::fmt;

use crate::rng::Rng;
use crate::time::{Duration, Instant};

/// Link 0 of the simulated pair: a crossover Ethernet.
pub const ETH: usize = 0;
/// Link 1: a 9600-baud null-modem.
pub const SERIAL: usize = 1;
/// Links in the simulated pair.
pub const LINKS: usize = 2;
/// Link names, for logs.
pub const LINK_NAMES: [&str; LINKS] = ["eth", "serial"];
/// Node names, for logs (node index 0 and 1).
pub const NODE_NAMES: [&str; 2] = ["A", "B"];

/// One-way latency of each link when no fault applies, ms. Ethernet: a switchless
/// crossover. Serial: a model figure smaller than the 67 ms a 64-byte frame really
/// takes at 9600 baud, so that the fastest keepalive (50 ms) stays meaningful.
pub const LATENCY_MS: [u64; LINKS] = [1, 10];
/// Bits on the serial line per frame (67 bytes COBS-encoded, 8N1 = 10 bits a
/// byte), to turn a bit error rate into a per-frame corruption probability.
pub const SERIAL_FRAME_BITS: i32 = 670;
/// Faults start within this horizon of a generated scenario.
pub const FAULT_HORIZON: Duration = Duration::from_secs(40);
/// Generated scenarios run at least this long.
pub const RUN_MIN: Duration = Duration::from_secs(60);
/// Quiet time kept after the heal-and-recover bound, so checker (c) sees a period.
pub const QUIET_TAIL: Duration = Duration::from_secs(5);

/// The heartbeat timers of both nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Heartbeat interval.
    pub keepalive: Duration,
    /// Late-heartbeat threshold.
    pub warntime: Duration,
    /// Death threshold.
    pub deadtime: Duration,
    /// Death threshold at start-up.
    pub initdead: Duration,
}

impl Timing {
    /// Timers in the guide's proportions from a keepalive and a deadtime multiple.
    pub fn new(keepalive_ms: u64, deadtime_ms: u64) -> Timing {
        Timing {
            keepalive: Duration::from_millis(keepalive_ms),
            warntime: Duration::from_millis((deadtime_ms / 2).max(2 * keepalive_ms)),
            deadtime: Duration::from_millis(deadtime_ms),
            initdead: Duration::from_millis(2 * deadtime_ms),
        }
    }
}

/// A span of virtual time, `[from, until)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// First instant inside.
    pub from: Instant,
    /// First instant after.
    pub until: Instant,
}

impl Span {
    /// The span from `from_ms` to `until_ms`.
    pub fn ms(from_ms: u64, until_ms: u64) -> Span {
        assert!(from_ms <= until_ms, "empty span {from_ms}..{until_ms}");
        Span {
            from: Instant::from_millis(from_ms),
            until: Instant::from_millis(until_ms),
        }
    }

    /// Whether `t` is inside.
    pub fn contains(&self, t: Instant) -> bool {
        self.from <= t && t < self.until
    }

    /// Whether the two spans share an instant.
    pub fn overlaps(&self, other: &Span) -> bool {
        self.from < other.until && other.from < self.until
    }
}

/// Which direction(s) of a link a fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Frames sent by node 0 (A) to node 1 (B).
    AtoB,
    /// Frames sent by B to A.
    BtoA,
    /// Both.
    Both,
}

impl Dir {
    /// Whether frames sent by `from` are affected.
    pub fn from_node(self, from: usize) -> bool {
        matches!(
            (self, from),
            (Dir::Both, _) | (Dir::AtoB, 0) | (Dir::BtoA, 1)
        )
    }
}

/// One kind of fault.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    /// Each frame is lost with probability `p`.
    Loss { link: usize, dir: Dir, p: f64 },
    /// Bit errors on the serial line at rate `ber` per bit: a frame hit gets one
    /// random bit flipped (delimiters included) and goes through the real stream
    /// decoder and `wire::decode`, which must refuse it (CRC, COBS, length).
    BitFlips { ber: f64 },
    /// Each frame is delayed by a uniform 0..=max_ms extra (reorders frames).
    Delay { link: usize, max_ms: u64 },
    /// With probability `p`, a second copy arrives up to `max_ms` later.
    Duplicate { link: usize, p: f64, max_ms: u64 },
    /// With probability `p`, an old frame captured on this link is sent again.
    Replay { link: usize, p: f64 },
    /// Every frame also comes back to its sender (a looped cable or bridge).
    Reflect { link: usize },
    /// Every frame is dropped (`link: None`: on every link).
    Partition { link: Option<usize>, dir: Dir },
    /// The node stops (SIGSTOP): no input handled, nothing sent; frames for it
    /// queue up and are handled when it resumes, with a late `now`.
    Freeze { node: usize },
    /// The node crashes; at the end of the span it restarts with `boot_epoch + 1`.
    Crash { node: usize },
}

/// A fault active during a span.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scheduled {
    /// When.
    pub span: Span,
    /// What.
    pub fault: Fault,
}

/// What happens to one frame in one direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// This rule does not apply; ask the next one.
    Pass,
    /// Deliver after this extra delay.
    Deliver(Duration),
    /// Lose it.
    Drop,
    /// Deliver it damaged (fails the CRC).
    Corrupt,
    /// Deliver it, and a copy after this extra delay.
    Duplicate(Duration),
    /// Deliver it, and an old captured frame as well.
    Replay,
    /// Deliver it, and loop it back to the sender as well.
    Reflect,
}

impl Scheduled {
    /// Rule precedence: faults that lose frames are asked first, so a partition
    /// drops everything even while a duplicate or replay fault is active.
    pub fn rank(&self) -> u8 {
        match self.fault {
            Fault::Crash { .. } | Fault::Freeze { .. } => 0,
            Fault::Partition { .. } => 1,
            Fault::Loss { .. } => 2,
            Fault::BitFlips { .. } => 3,
            Fault::Delay { .. } => 4,
            Fault::Duplicate { .. } => 5,
            Fault::Replay { .. } => 6,
            Fault::Reflect { .. } => 7,
        }
    }

    /// The verdict of this fault on a frame sent by `from` on `link` at `now`.
    pub fn on_frame(&self, rng: &mut Rng, now: Instant, link: usize, from: usize) -> Verdict {
        if !self.span.contains(now) {
            return Verdict::Pass;
        }
        match self.fault {
            Fault::Loss { link: l, dir, p }
                if l == link && dir.from_node(from) && rng.chance(p) =>
            {
                Verdict::Drop
            }
            Fault::BitFlips { ber } if link == SERIAL => {
                let clean = (1.0 - ber).powi(SERIAL_FRAME_BITS);
                if rng.chance(1.0 - clean) {
                    Verdict::Corrupt
                } else {
                    Verdict::Pass
                }
            }
            Fault::Delay { link: l, max_ms } if l == link => {
                Verdict::Deliver(Duration::from_millis(rng.below(max_ms + 1)))
            }
            Fault::Duplicate { link: l, p, max_ms } if l == link && rng.chance(p) => {
                Verdict::Duplicate(Duration::from_millis(rng.below(max_ms + 1)))
            }
            Fault::Replay { link: l, p } if l == link && rng.chance(p) => Verdict::Replay,
            Fault::Reflect { link: l } if l == link => Verdict::Reflect,
            Fault::Partition { link: l, dir }
                if l.map_or(true, |l| l == link) && dir.from_node(from) =>
            {
                Verdict::Drop
            }
            _ => Verdict::Pass,
        }
    }

    /// Whether, during its span, no frame from `from` reaches the other node at all.
    pub fn silences(&self, from: usize) -> bool {
        match self.fault {
            Fault::Freeze { node } | Fault::Crash { node } => node == from,
            Fault::Partition { link: None, dir } => dir.from_node(from),
            _ => false,
        }
    }

    /// Whether node `node` is frozen or crashed during the span.
    pub fn stops(&self, node: usize) -> bool {
        matches!(self.fault, Fault::Freeze { node: n } | Fault::Crash { node: n } if n == node)
    }

    /// Longest extra delay this fault can add to a frame, ms.
    pub fn delay_max_ms(&self) -> u64 {
        match self.fault {
            Fault::Delay { max_ms, .. } | Fault::Duplicate { max_ms, .. } => max_ms,
            _ => 0,
        }
    }
}

/// A whole run: timers, faults, end time, and the seed of every random choice.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Seeds the per-direction RNGs (and generated the schedule, if generated).
    pub seed: u64,
    /// Both nodes' timers.
    pub timing: Timing,
    /// The faults, in rule order.
    pub faults: Vec<Scheduled>,
    /// When the run stops.
    pub end: Instant,
    /// Node B's authkeys secret differs from A's (a misconfigured pair): every
    /// frame fails the MAC, each side sees the other `Dead` and logs `mac`
    /// refusals. Checker (c) does not apply (nothing ever heals).
    pub keys_differ: bool,
}

impl Scenario {
    /// No faults: two healthy nodes for `end_ms`.
    pub fn quiet(seed: u64, timing: Timing, end_ms: u64) -> Scenario {
        Scenario {
            seed,
            timing,
            faults: Vec::new(),
            end: Instant::from_millis(end_ms),
            keys_differ: false,
        }
    }

    /// Adds a fault during `span` (kept in rule precedence order).
    pub fn with(mut self, span: Span, fault: Fault) -> Scenario {
        self.faults.push(Scheduled { span, fault });
        self.faults.sort_by_key(Scheduled::rank);
        self
    }

    /// When the last fault ends (the origin if none).
    pub fn heal(&self) -> Instant {
        self.faults
            .iter()
            .map(|f| f.span.until)
            .max()
            .unwrap_or(Instant::ZERO)
    }

    /// Longest extra delay any fault can add, ms (kept <= keepalive by the
    /// generator: checker (a) relies on it).
    pub fn delay_max_ms(&self) -> u64 {
        self.faults
            .iter()
            .map(Scheduled::delay_max_ms)
            .max()
            .unwrap_or(0)
    }

    /// A random scenario: keepalive 50..=2000 ms, deadtime 3..=10 keepalives, up to
    /// 6 faults starting within [`FAULT_HORIZON`], lengths around deadtime (both
    /// sides of it), then quiet until every node must see its peer again.
    pub fn generate(seed: u64) -> Scenario {
        let mut rng = Rng::new(seed);
        let keepalive_ms = 50 + rng.below(1951);
        let multiple = 3 + rng.below(8);
        let deadtime_ms = keepalive_ms * multiple;
        let warntime_ms = keepalive_ms * (2 + rng.below(multiple - 2));
        let timing = Timing {
            keepalive: Duration::from_millis(keepalive_ms),
            warntime: Duration::from_millis(warntime_ms),
            deadtime: Duration::from_millis(deadtime_ms),
            initdead: Duration::from_millis(2 * deadtime_ms),
        };
        let mut scenario = Scenario {
            seed,
            timing,
            faults: Vec::new(),
            end: Instant::ZERO,
            keys_differ: false,
        };
        for _ in 0..rng.below(7) {
            let from_ms = rng.below(FAULT_HORIZON.millis());
            let len_ms = 1 + rng.below(3 * deadtime_ms);
            let span = Span::ms(from_ms, from_ms + len_ms);
            scenario.faults.push(Scheduled {
                span,
                fault: random_fault(&mut rng, keepalive_ms),
            });
        }
        scenario.faults.sort_by_key(Scheduled::rank);
        let recovered = scenario.heal()
            + timing.initdead
            + timing.deadtime
            + timing.keepalive
            + timing.keepalive;
        scenario.end = (recovered + QUIET_TAIL).max(Instant::ZERO + RUN_MIN);
        scenario
    }
}

fn random_fault(rng: &mut Rng, keepalive_ms: u64) -> Fault {
    let link = rng.below(LINKS as u64) as usize;
    let node = rng.below(2) as usize;
    let dir = [Dir::AtoB, Dir::BtoA, Dir::Both][rng.below(3) as usize];
    let p = (1 + rng.below(90)) as f64 / 100.0;
    match rng.below(10) {
        0 => Fault::Loss { link, dir, p },
        1 => Fault::BitFlips {
            ber: [1e-4, 1e-3, 1e-2][rng.below(3) as usize],
        },
        2 => Fault::Delay {
            link: ETH,
            max_ms: rng.below(keepalive_ms / 2 + 1),
        },
        3 => Fault::Duplicate {
            link,
            p,
            max_ms: rng.below(keepalive_ms / 2 + 1),
        },
        4 => Fault::Replay { link, p },
        5 => Fault::Partition {
            link: Some(link),
            dir,
        },
        6 => Fault::Partition { link: None, dir },
        7 => Fault::Freeze { node },
        8 => Fault::Reflect { link },
        _ => Fault::Crash { node },
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let t = &self.timing;
        writeln!(
            f,
            "scenario seed=0x{:016x} keepalive={} warntime={} deadtime={} initdead={} end={}",
            self.seed, t.keepalive, t.warntime, t.deadtime, t.initdead, self.end
        )?;
        if self.keys_differ {
            writeln!(f, "  B's authkeys secret differs from A's")?;
        }
        if self.faults.is_empty() {
            writeln!(f, "  (no faults)")?;
        }
        for s in &self.faults {
            writeln!(f, "  {} .. {}  {:?}", s.span.from, s.span.until, s.fault)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_same_seed_same_scenario() {
        let a = Scenario::generate(5);
        let b = Scenario::generate(5);
        assert_eq!(a.faults, b.faults);
        assert_eq!(a.timing, b.timing);
    }

    #[test]
    fn generate_keeps_bounds() {
        for seed in 0..500 {
            let s = Scenario::generate(seed);
            let ka = s.timing.keepalive.millis();
            assert!((50..=2000).contains(&ka));
            assert!(s.timing.deadtime.millis() >= 3 * ka && s.timing.deadtime.millis() <= 10 * ka);
            assert!(s.timing.warntime.millis() >= 2 * ka && s.timing.warntime < s.timing.deadtime);
            assert!(s.delay_max_ms() <= ka / 2);
            assert!(s.end >= s.heal() + s.timing.deadtime);
        }
    }
}
