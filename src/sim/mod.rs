//! Deterministic simulation of two nodes (membership today).
//!
//! Layer: test support (allocates freely; never used by the daemon). Two real
//! [`Membership`] values, node A (index 0) and node B (index 1), joined by two
//! links, `eth` and `serial`, on virtual time. Each direction of each link has its
//! own seeded [`Rng`] and asks the scenario's faults for a [`Verdict`] on every
//! frame (see [`fault`]). The clock jumps to the earliest of: a pending delivery,
//! a node's `poll_timeout`, a fault boundary, a checker deadline. A run is bounded
//! in steps ([`Sim::run`] fails instead of hanging on a livelock).
//!
//! Checkers, after every step (see [`check`] for the per-node mirror):
//! - (a) safety: when Y declares X `Dead` (deadtime) at `t`, Y accepted nothing in
//!   `(t - deadtime, t]`, and no original frame of X's current incarnation
//!   (undamaged, signed with a key Y shares) *arrived* at Y in
//!   `(t - (deadtime - keepalive), t]`. Why that window: a frame
//!   that arrives but is refused as a replay was overtaken on its link by a newer
//!   one accepted at most `delay_max` earlier, and the generator keeps
//!   `delay_max <= keepalive / 2`. At `initdead`, no original frame arrived at all.
//! - (b) detection: Y never stays un-`Dead` longer than `deadtime + keepalive`
//!   after its last accepted frame (or `initdead + keepalive` after it started,
//!   or after it resumed from a freeze); and for every span in which X is crashed,
//!   frozen or cut off on all links, Y is `Dead` by `T + deadtime + keepalive +
//!   latency + delay_max` (or `initdead` after Y started, if later).
//! - (c) recovery: from `heal + deadtime + 2 * keepalive` on, both nodes see each
//!   other `Alive` on every link.
//! - (d) no duplicated or replayed frame is accepted; counters equal results.
//! - (e) every transition event starts from the state the previous one left and
//!   is an edge of the transition table; the machine's getters agree.
//!
//! A failure carries `SIM_SEED=0x... cargo test --test sim`, the schedule and the
//! last lines of the trace (`[t=12.345 A] ...`; set `SIM_LOG=1` to print it live).

pub mod check;
pub mod fault;
pub mod repl;

use std::collections::VecDeque;
use std::fmt;

use crate::config::digest::ConfigDigest;
use crate::config::{AuthKey, AuthKeys, AuthMethod};
use crate::core::event::{Event, Names};
use crate::core::membership::{
    LinkState, Membership, MembershipConfig, PeerState, FRAME_SUMMARY_WINDOW,
};
use crate::core::LinkId;
use crate::rng::Rng;
use crate::time::{Duration, Instant};
use crate::wire::{self, Feed, FrameError, Keyring, Repr, StreamDecoder, ENCODED_MAX, FRAME_MAX};

use check::Mirror;
use fault::{Fault, Scenario, Verdict, LATENCY_MS, LINKS, LINK_NAMES, NODE_NAMES, SERIAL};

use crate::shell::serial::{BITS_PER_BYTE, COPIES_MAX, COPY_MARGIN_MS};

/// The simulated null-modem's speed (the guide's `baud 9600`).
const SERIAL_BAUD: u64 = 9600;

/// Line time of a frame of `len` encoded bytes at `SERIAL_BAUD`, 8N1, rounded up.
fn serial_frame_ms(len: usize) -> u64 {
    (len as u64 * 1000).div_ceil(SERIAL_BAUD / u64::from(BITS_PER_BYTE))
}

/// Steps allowed per keepalive of virtual time (two nodes x two links of
/// deliveries, a timeout and transmit each, duplicates and replays, with margin).
pub const STEPS_PER_KEEPALIVE: u64 = 64;
/// Frames remembered per direction for replay faults.
pub const HISTORY_MAX: usize = 256;
/// Trace lines kept for a failure report.
pub const TRACE_KEEP: usize = 150;
/// Boot epochs of the two nodes at the start (distinct, to catch mix-ups).
pub const EPOCH_START: [u32; 2] = [10, 20];

/// A failed run: everything needed to reproduce and understand it.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The scenario's seed.
    pub seed: u64,
    /// Virtual time of the failure.
    pub at: Instant,
    /// What went wrong.
    pub message: String,
    /// The schedule.
    pub scenario: String,
    /// The last trace lines.
    pub trace: Vec<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        writeln!(f, "simulation failed at t={}: {}", self.at, self.message)?;
        writeln!(
            f,
            "reproduce: SIM_SEED=0x{:016x} cargo test --test sim",
            self.seed
        )?;
        write!(f, "{}", self.scenario)?;
        writeln!(f, "last {} trace lines:", self.trace.len())?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

/// What a finished run did, for named tests to assert on.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Steps taken.
    pub steps: u64,
    /// Heartbeats sent, per node.
    pub sent: [u64; 2],
    /// Every event, with its time and node.
    pub events: Vec<(Instant, usize, Event)>,
    /// Frames accepted and refused, all nodes and links.
    pub accepted: u64,
    /// Frames refused (core refusals and wire errors).
    pub rejected: u64,
}

impl Report {
    /// Times at which `node` declared its peer `to`.
    pub fn peer_became(&self, node: usize, to: PeerState) -> Vec<Instant> {
        let became = |e: &Event| matches!(e, Event::PeerState { to: t, .. } if *t == to);
        self.events
            .iter()
            .filter(|(_, n, e)| *n == node && became(e))
            .map(|(t, _, _)| *t)
            .collect()
    }
}

/// Where a delivered frame came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// The frame as sent.
    Original,
    /// A second copy.
    Duplicate,
    /// An old captured frame, sent again.
    Replay,
    /// The sender's own frame, looped back to it.
    Reflection,
}

/// One encoded frame in flight: the bytes the receiver decodes, and what was
/// sent (for the trace and the checkers only).
#[derive(Clone, Copy, Debug)]
struct Frame {
    bytes: [u8; ENCODED_MAX],
    len: usize,
    sent: Repr,
    /// A bit was flipped on the line.
    damaged: bool,
}

impl Frame {
    fn encode(keyring: &Keyring, repr: &Repr) -> Frame {
        let mut bytes = [0u8; ENCODED_MAX];
        let len = wire::encode(keyring, repr, &mut bytes);
        Frame {
            bytes,
            len,
            sent: *repr,
            damaged: false,
        }
    }

    /// The same frame with one random bit flipped ("the most likely, and the
    /// hardest to detect" error), delimiters included.
    fn flip_one_bit(mut self, rng: &mut Rng) -> Frame {
        let bit = rng.below(self.len as u64 * 8) as usize;
        self.bytes[bit / 8] ^= 1 << (bit % 8);
        self.damaged = true;
        self
    }
}

#[derive(Clone, Copy, Debug)]
struct Delivery {
    at: Instant,
    order: u64,
    to: usize,
    link: usize,
    frame: Frame,
    origin: Origin,
}

struct Node {
    m: Option<Membership>,
    epoch: u32,
    frozen: bool,
    /// Frames that arrived while frozen, handled at resume.
    inbox: Vec<Delivery>,
    /// Per link; only the serial link is a byte stream (Ethernet: datagrams).
    decoders: [StreamDecoder; LINKS],
    incarnation: Instant,
    resumed: Instant,
    /// When this incarnation last sent a heartbeat (None: not since start or resume).
    last_sent: Option<Instant>,
    mirror: Mirror,
}

/// A detection deadline (checker b): Y must be `Dead` at `at`.
#[derive(Clone, Copy, Debug)]
struct Detection {
    at: Instant,
    observer: usize,
    silent_from: Instant,
}

/// Two nodes, two links, a schedule of faults, on virtual time.
pub struct Sim {
    scenario: Scenario,
    now: Instant,
    nodes: [Node; 2],
    /// Per direction: `[link][from]`.
    rngs: [[Rng; 2]; LINKS],
    history: [[VecDeque<Frame>; 2]; LINKS],
    /// Each node's authkeys (the same HMAC-SHA256 key, id 1, unless the
    /// scenario says the keys differ).
    keyrings: [Keyring; 2],
    pending: Vec<Delivery>,
    order: u64,
    detections: Vec<Detection>,
    trace: VecDeque<String>,
    live_log: bool,
    names: [Names; 2],
    report: Report,
}

impl Sim {
    /// Both nodes start at time 0.
    pub fn new(scenario: Scenario) -> Sim {
        let seed = scenario.seed;
        let rng = |i: u64| Rng::new(seed ^ (0xD1B5_4A32_D192_ED03u64.wrapping_mul(i + 1)));
        let nodes = [0, 1].map(|n| Node {
            m: Some(Membership::new(
                node_config(&scenario, n, EPOCH_START[n]),
                Instant::ZERO,
            )),
            epoch: EPOCH_START[n],
            frozen: false,
            inbox: Vec::new(),
            decoders: [StreamDecoder::new(), StreamDecoder::new()],
            incarnation: Instant::ZERO,
            resumed: Instant::ZERO,
            last_sent: None,
            mirror: Mirror::default(),
        });
        let names = [0, 1].map(|n| Names {
            node: NODE_NAMES[n].into(),
            peer: NODE_NAMES[1 - n].into(),
            links: LINK_NAMES.iter().map(|s| s.to_string()).collect(),
        });
        let detections = detections(&scenario);
        let keyring_b = if scenario.keys_differ {
            wrong_keyring()
        } else {
            sim_keyring()
        };
        Sim {
            scenario,
            now: Instant::ZERO,
            nodes,
            rngs: [[rng(0), rng(1)], [rng(2), rng(3)]],
            history: Default::default(),
            keyrings: [sim_keyring(), keyring_b],
            pending: Vec::new(),
            order: 0,
            detections,
            trace: VecDeque::new(),
            live_log: std::env::var_os("SIM_LOG").is_some(),
            names,
            report: Report::default(),
        }
    }

    /// Runs to the scenario's end, checking after every step.
    pub fn run(mut self) -> Result<Report, Failure> {
        let keepalives = self.scenario.end.millis() / self.scenario.timing.keepalive.millis() + 1;
        let steps_max = keepalives * STEPS_PER_KEEPALIVE + 1000;
        self.apply_node_faults();
        while self.report.steps < steps_max {
            self.report.steps += 1;
            match self.step() {
                Ok(true) => {}
                Ok(false) => return self.finish(),
                Err(message) => return Err(self.failure(message)),
            }
        }
        Err(self.failure(format!(
            "no progress: {steps_max} steps before the end (livelock?)"
        )))
    }

    fn finish(self) -> Result<Report, Failure> {
        for (node, name) in self.nodes.iter().zip(NODE_NAMES) {
            if node.m.is_some() {
                let window_ms = FRAME_SUMMARY_WINDOW.millis();
                if let Err(message) = node.mirror.check_summaries(self.now, window_ms) {
                    return Err(self.failure(format!("node {name}: {message}")));
                }
            }
        }
        Ok(self.report)
    }

    fn failure(&self, message: String) -> Failure {
        Failure {
            seed: self.scenario.seed,
            at: self.now,
            message,
            scenario: self.scenario.to_string(),
            trace: self.trace.iter().cloned().collect(),
        }
    }

    fn log(&mut self, node: Option<usize>, line: fmt::Arguments) {
        let who = node.map_or("-", |n| NODE_NAMES[n]);
        let line = format!("[t={} {}] {}", self.now, who, line);
        if self.live_log {
            eprintln!("{line}");
        }
        if self.trace.len() == TRACE_KEEP {
            self.trace.pop_front();
        }
        self.trace.push_back(line);
    }

    /// One step: move the clock, apply node faults, deliver, run timers, check.
    /// `Ok(false)` once the end is reached.
    fn step(&mut self) -> Result<bool, String> {
        let next = self.next_time();
        assert!(next >= self.now, "the clock went backwards");
        if next > self.scenario.end {
            return Ok(false);
        }
        self.now = next;
        self.apply_node_faults();
        for n in 0..2 {
            self.resume_if_thawed(n)?;
        }
        self.deliver_due()?;
        for n in 0..2 {
            self.service(n)?;
        }
        self.check_step()?;
        Ok(true)
    }

    fn next_time(&self) -> Instant {
        let deliveries = self.pending.iter().map(|d| d.at);
        let timers = self
            .nodes
            .iter()
            .filter(|n| !n.frozen)
            .filter_map(|n| n.m.as_ref()?.poll_timeout());
        let edges = self
            .scenario
            .faults
            .iter()
            .flat_map(|f| [f.span.from, f.span.until])
            .filter(|t| *t > self.now);
        let checks = self
            .detections
            .iter()
            .map(|d| d.at)
            .chain(Some(self.recovered_at()))
            .filter(|t| *t > self.now);
        deliveries
            .chain(timers)
            .chain(edges)
            .chain(checks)
            .chain(Some(self.scenario.end + Duration::from_millis(1)))
            .min()
            .expect("end is always there")
    }

    /// Crashes, restarts and freezes as the schedule says at `now`.
    fn apply_node_faults(&mut self) {
        for n in 0..2 {
            let active = |crash: bool| {
                self.scenario.faults.iter().any(|f| {
                    f.span.contains(self.now)
                        && match f.fault {
                            Fault::Crash { node } => crash && node == n,
                            Fault::Freeze { node } => !crash && node == n,
                            _ => false,
                        }
                })
            };
            let (crashed, frozen) = (active(true), active(false));
            let node = &mut self.nodes[n];
            if crashed && node.m.is_some() {
                node.m = None;
                node.inbox.clear();
                self.log(Some(n), format_args!("crash"));
            } else if !crashed && self.nodes[n].m.is_none() {
                let node = &mut self.nodes[n];
                node.epoch += 1;
                node.m = Some(Membership::new(
                    node_config(&self.scenario, n, node.epoch),
                    self.now,
                ));
                node.mirror = Mirror::default();
                node.decoders = [StreamDecoder::new(), StreamDecoder::new()];
                node.incarnation = self.now;
                node.resumed = self.now;
                node.last_sent = None;
                let epoch = node.epoch;
                self.log(Some(n), format_args!("restart boot_epoch={epoch}"));
            }
            let node = &mut self.nodes[n];
            if frozen && !node.frozen {
                node.frozen = true;
                self.log(Some(n), format_args!("freeze"));
            } else if !frozen && node.frozen {
                node.frozen = false;
                node.resumed = self.now;
                self.log(Some(n), format_args!("resume"));
            }
        }
    }

    /// A node that just resumed handles what queued up while it was frozen.
    fn resume_if_thawed(&mut self, n: usize) -> Result<(), String> {
        if self.nodes[n].frozen || self.nodes[n].inbox.is_empty() || self.nodes[n].m.is_none() {
            return Ok(());
        }
        for d in std::mem::take(&mut self.nodes[n].inbox) {
            self.handle_delivery(d)?;
        }
        Ok(())
    }

    fn deliver_due(&mut self) -> Result<(), String> {
        while let Some(i) = self.earliest_due() {
            let d = self.pending.swap_remove(i);
            let node = &mut self.nodes[d.to];
            if node.m.is_none() {
                continue;
            }
            if node.frozen {
                node.inbox.push(d);
                continue;
            }
            self.handle_delivery(d)?;
        }
        Ok(())
    }

    fn earliest_due(&self) -> Option<usize> {
        let due = self
            .pending
            .iter()
            .enumerate()
            .filter(|(_, d)| d.at <= self.now);
        due.min_by_key(|(_, d)| (d.at, d.order)).map(|(i, _)| i)
    }

    /// One frame reaches a running node: decode it as the shell would, feed
    /// every result to the core, check it, drain events.
    fn handle_delivery(&mut self, d: Delivery) -> Result<(), String> {
        let peer_epoch = self.nodes[1 - d.to].epoch;
        let node = &mut self.nodes[d.to];
        let current = d.frame.sent.header.boot_epoch == peer_epoch && d.at >= node.incarnation;
        let authentic = !self.scenario.keys_differ;
        if d.origin == Origin::Original && !d.frame.damaged && current && authentic {
            node.mirror.last_genuine_arrival = Some(d.at);
        }
        for result in self.decode(&d) {
            self.feed(&d, result)?;
        }
        self.drain_events(d.to)
    }

    /// The wire layer's view of the bytes: a stream on serial, datagrams on eth.
    fn decode(&mut self, d: &Delivery) -> Vec<Result<Repr, FrameError>> {
        let mut input = &d.frame.bytes[..d.frame.len];
        if d.link != SERIAL {
            let mut scratch = [0u8; FRAME_MAX];
            let keyring = &self.keyrings[d.to];
            return vec![wire::decode_datagram(keyring, input, &mut scratch)];
        }
        let decoder = &mut self.nodes[d.to].decoders[d.link];
        let mut out = Vec::new();
        loop {
            match decoder.feed(input) {
                Feed::Consumed => return out,
                Feed::Frame { frame, rest } => {
                    out.push(wire::decode(&self.keyrings[d.to], frame));
                    input = rest;
                }
                Feed::Error { error, rest } => {
                    out.push(Err(error));
                    input = rest;
                }
            }
        }
    }

    /// One decoded result into the core; the mirror records what it said.
    fn feed(&mut self, d: &Delivery, decoded: Result<Repr, FrameError>) -> Result<(), String> {
        let (n, now, link) = (d.to, self.now, d.link);
        let node = &mut self.nodes[n];
        let m = node.m.as_mut().expect("delivered to a running node");
        let id = LinkId(link as u8);
        let result = match decoded {
            Ok(repr) => m.handle_frame(now, id, &repr).map(|()| repr),
            Err(error) => {
                m.handle_frame_error(now, id, error);
                Err(error)
            }
        };
        match result {
            Ok(repr) => {
                node.mirror.accept(now, link, &repr)?;
                self.report.accepted += 1;
            }
            Err(reason) => {
                node.mirror.reject(now, link, reason);
                self.report.rejected += 1;
            }
        }
        let (e, s) = (d.frame.sent.header.boot_epoch, d.frame.sent.header.seq);
        let verdict = result.map(|_| ());
        self.log(
            Some(n),
            format_args!(
                "rx {} epoch={e} seq={s} {:?} sent={} {verdict:?}",
                LINK_NAMES[link], d.origin, d.at
            ),
        );
        Ok(())
    }

    /// Timers, then the heartbeat (at most one per due time), then events.
    fn service(&mut self, n: usize) -> Result<(), String> {
        let now = self.now;
        let node = &mut self.nodes[n];
        if node.frozen {
            return Ok(());
        }
        let Some(m) = node.m.as_mut() else {
            return Ok(());
        };
        m.handle_timeout(now);
        let heartbeat = m.poll_transmit(now);
        if m.poll_transmit(now).is_some() {
            return Err(format!(
                "node {} returned two heartbeats at {now}",
                NODE_NAMES[n]
            ));
        }
        self.drain_events(n)?;
        if let Some(repr) = heartbeat {
            // The clock lands exactly on deadlines here, so a running node sends
            // exactly every keepalive: no drift, no burst. The one exception is the
            // catch-up heartbeat sent on resuming, after which the old cadence goes on.
            let keepalive = self.scenario.timing.keepalive;
            let node = &mut self.nodes[n];
            let previous = node.last_sent.filter(|t| *t > node.resumed);
            if let Some(gap) = previous.map(|t| now - t).filter(|gap| *gap != keepalive) {
                return Err(format!("{} sent heartbeats {gap} apart", NODE_NAMES[n]));
            }
            node.last_sent = Some(now);
            self.report.sent[n] += 1;
            let frame = Frame::encode(&self.keyrings[n], &repr);
            for link in 0..LINKS {
                for copy in 0..self.copies(link, frame.len) {
                    let offset = Duration::from_millis(copy * serial_frame_ms(frame.len));
                    self.send(n, link, frame, offset);
                }
            }
        }
        Ok(())
    }

    /// How many copies of a frame the shell's serial writer sends (see
    /// `shell::serial::TxSlot`): while each copy ends before the next heartbeat.
    fn copies(&self, link: usize, len: usize) -> u64 {
        if link != SERIAL {
            return 1;
        }
        let keepalive_ms = self.scenario.timing.keepalive.millis();
        let frame_ms = serial_frame_ms(len);
        let mut copies = 1;
        while copies < u64::from(COPIES_MAX)
            && (copies + 1) * frame_ms + COPY_MARGIN_MS <= keepalive_ms
        {
            copies += 1;
        }
        copies
    }

    /// A heartbeat from `from` enters `link` `offset` after now (a serial copy
    /// leaves one frame time after the previous): the faults decide its fate.
    fn send(&mut self, from: usize, link: usize, frame: Frame, offset: Duration) {
        let now = self.now;
        let rng = &mut self.rngs[link][from];
        let verdict = self
            .scenario
            .faults
            .iter()
            .map(|f| f.on_frame(rng, now, link, from))
            .find(|v| *v != Verdict::Pass)
            .unwrap_or(Verdict::Pass);
        let base = now + offset + Duration::from_millis(LATENCY_MS[link]);
        let to = 1 - from;
        let deliver = |sim: &mut Sim, at: Instant, to: usize, frame: Frame, origin: Origin| {
            sim.order += 1;
            let order = sim.order;
            sim.pending.push(Delivery {
                at,
                order,
                to,
                link,
                frame,
                origin,
            });
        };
        match verdict {
            Verdict::Pass => deliver(self, base, to, frame, Origin::Original),
            Verdict::Deliver(extra) => deliver(self, base + extra, to, frame, Origin::Original),
            Verdict::Drop => {}
            Verdict::Corrupt => {
                let damaged = frame.flip_one_bit(&mut self.rngs[link][from]);
                deliver(self, base, to, damaged, Origin::Original);
            }
            Verdict::Duplicate(extra) => {
                deliver(self, base, to, frame, Origin::Original);
                deliver(self, base + extra, to, frame, Origin::Duplicate);
            }
            Verdict::Replay => {
                deliver(self, base, to, frame, Origin::Original);
                let history = &self.history[link][from];
                if !history.is_empty() {
                    let old = history[self.rngs[link][from].below(history.len() as u64) as usize];
                    deliver(self, base, to, old, Origin::Replay);
                }
            }
            Verdict::Reflect => {
                deliver(self, base, to, frame, Origin::Original);
                deliver(self, base, from, frame, Origin::Reflection);
            }
        }
        let history = &mut self.history[link][from];
        if history.len() == HISTORY_MAX {
            history.pop_front();
        }
        history.push_back(frame);
    }

    fn drain_events(&mut self, n: usize) -> Result<(), String> {
        while let Some(event) = self.nodes[n].m.as_mut().and_then(Membership::poll_event) {
            let mut line = String::new();
            event
                .render(&self.names[n], &mut line)
                .expect("render to a String");
            self.log(Some(n), format_args!("{line}"));
            self.report.events.push((self.now, n, event));
            self.nodes[n].mirror.on_event(&event)?;
            self.check_death(n, &event)?;
        }
        Ok(())
    }

    /// Checker (a), when node `n` declares its peer dead.
    fn check_death(&self, n: usize, event: &Event) -> Result<(), String> {
        let Event::PeerState {
            to: PeerState::Dead,
            reason,
            ..
        } = *event
        else {
            return Ok(());
        };
        let t = self.scenario.timing;
        let mirror = &self.nodes[n].mirror;
        let name = NODE_NAMES[n];
        if let Some(last) = mirror.last_accept {
            if last + t.deadtime > self.now {
                return Err(format!(
                    "{name} declared the peer dead ({reason:?}) {} after a valid frame",
                    self.now - last
                ));
            }
        }
        let window = Duration::from_millis(t.deadtime.millis() - t.keepalive.millis());
        let arrival = mirror.last_genuine_arrival;
        let fresh = match (reason, arrival) {
            (crate::core::event::PeerReason::Initdead, Some(a)) => Some(a),
            (_, Some(a)) if a + window > self.now => Some(a),
            _ => None,
        };
        match fresh {
            Some(a) => Err(format!(
                "{name} declared the peer dead ({reason:?}) but a fresh frame arrived at {a}"
            )),
            None => Ok(()),
        }
    }

    /// When checker (c) starts to apply.
    fn recovered_at(&self) -> Instant {
        let t = self.scenario.timing;
        self.scenario.heal() + t.deadtime + t.keepalive + t.keepalive
    }

    fn check_step(&mut self) -> Result<(), String> {
        for (n, name) in NODE_NAMES.iter().enumerate() {
            let node = &self.nodes[n];
            let Some(m) = node.m.as_ref() else { continue };
            node.mirror
                .compare(m)
                .map_err(|e| format!("node {name}: {e}"))?;
            if !node.frozen {
                self.check_detected(n)?;
            }
        }
        if self.now >= self.recovered_at() && !self.scenario.keys_differ {
            self.check_recovered()?;
        }
        Ok(())
    }

    /// Checker (b) for observer `n` (running, not frozen).
    fn check_detected(&self, n: usize) -> Result<(), String> {
        let t = self.scenario.timing;
        let node = &self.nodes[n];
        let (reference, limit) = match node.mirror.last_accept {
            Some(last) => (last.max(node.resumed), t.deadtime),
            None => (node.resumed, t.initdead),
        };
        if node.mirror.peer != PeerState::Dead && self.now > reference + limit + t.keepalive {
            return Err(format!(
                "{} still sees the peer {:?}: nothing accepted since {reference}",
                NODE_NAMES[n], node.mirror.peer
            ));
        }
        for d in self
            .detections
            .iter()
            .filter(|d| d.observer == n && d.at == self.now)
        {
            let stopped = |s: &fault::Scheduled| {
                s.stops(n)
                    && s.span.overlaps(&fault::Span {
                        from: d.silent_from,
                        until: d.at,
                    })
            };
            // Excused: Y was stopped itself, or is a young incarnation still in
            // `initdead` (the relative check above covers it).
            let young = node.incarnation + t.initdead + t.keepalive > d.at;
            let excused = self.scenario.faults.iter().any(stopped)
                || node.incarnation > d.silent_from
                || young;
            if !excused && node.mirror.peer != PeerState::Dead {
                return Err(format!(
                    "{} not dead-declared by {}: the peer went silent at {}",
                    NODE_NAMES[n], d.at, d.silent_from
                ));
            }
        }
        Ok(())
    }

    /// Checker (c): long enough after the last fault, all is well again.
    fn check_recovered(&self) -> Result<(), String> {
        for (node, name) in self.nodes.iter().zip(NODE_NAMES) {
            let m = node
                .m
                .as_ref()
                .ok_or("a node is still crashed after heal")?;
            let links_up = (0..LINKS).all(|l| m.link_state(LinkId(l as u8)) == LinkState::Up);
            if node.frozen || m.peer_state() != PeerState::Alive || !links_up {
                return Err(format!(
                    "{name} has not recovered by {} (healed at {}): peer {:?}, links {:?}",
                    self.recovered_at(),
                    self.scenario.heal(),
                    m.peer_state(),
                    node.mirror.links
                ));
            }
        }
        Ok(())
    }
}

/// The checker (b) deadlines a scenario implies: for every span in which X is
/// silent towards Y and that lasts long enough, Y must be `Dead` by
/// `T + deadtime + keepalive + latency + delay_max` (`initdead` if Y is younger).
fn detections(scenario: &Scenario) -> Vec<Detection> {
    let t = scenario.timing;
    let slack = Duration::from_millis(
        LATENCY_MS.iter().max().copied().unwrap_or(0) + scenario.delay_max_ms(),
    );
    let mut out = Vec::new();
    for s in &scenario.faults {
        for x in 0..2 {
            if !s.silences(x) {
                continue;
            }
            let by_deadtime = s.span.from + t.deadtime + t.keepalive + slack;
            let by_initdead = Instant::ZERO + t.initdead + t.keepalive;
            let at = by_deadtime.max(by_initdead);
            if at < s.span.until {
                out.push(Detection {
                    at,
                    observer: 1 - x,
                    silent_from: s.span.from,
                });
            }
        }
    }
    out
}

/// The machine configuration of node `n` in a scenario.
pub fn node_config(scenario: &Scenario, n: usize, boot_epoch: u32) -> MembershipConfig {
    let t = scenario.timing;
    MembershipConfig {
        local: n as u8,
        peer: 1 - n as u8,
        links: LINKS as u8,
        keepalive: t.keepalive,
        warntime: t.warntime,
        deadtime: t.deadtime,
        initdead: t.initdead,
        boot_epoch,
        digest: ConfigDigest {
            ha_cf: 0x1111,
            haresources: 0x2222,
            authkeys: 0x3333,
        },
        key: 1,
    }
}

/// The pair's authkeys: one HMAC-SHA256 key, id 1 (what `node_config` signs with).
pub fn sim_keyring() -> Keyring {
    let key = AuthKey {
        id: 1,
        method: AuthMethod::Sha256,
        secret: b"bascule sim secret".to_vec(),
    };
    Keyring::new(AuthKeys {
        active: 1,
        keys: vec![key],
    })
}

/// Authkeys with the same id and method as [`sim_keyring`] but another secret.
pub fn wrong_keyring() -> Keyring {
    let key = AuthKey {
        id: 1,
        method: AuthMethod::Sha256,
        secret: b"not the same secret".to_vec(),
    };
    Keyring::new(AuthKeys {
        active: 1,
        keys: vec![key],
    })
}

/// Generates the scenario of `seed` and runs it.
pub fn run_seed(seed: u64) -> Result<Report, Failure> {
    Sim::new(Scenario::generate(seed)).run()
}
