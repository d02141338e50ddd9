//! Two nodes on virtual time, each a `Membership` plus a `Takeover`, exchanging
//! group adverts through real heartbeats (`Repr`s, delayed and dropped by a seeded
//! link). Resource agents finish after seeded delays and fail on purpose; the link
//! is partitioned; nodes crash, are fenced, escalate (reboot) and restart; the
//! operator sends standby/takeover commands.
//!
//! Checkers after every step:
//! - overlap: both nodes up and both `Starting`/`Running` one group. Never allowed
//!   with fencing configured; without it, only when it began while one node saw the
//!   other dead (a partition: the split brain accepted without fencing), and it must
//!   end within `HEAL_BOUND` once the link is healthy again;
//! - Blocked: a node never starts a group while the other, up and seen alive,
//!   is Blocked on it;
//! - truth: a node `Running` a group has every resource running (an injected
//!   resource death aside, which the monitor repairs), a `Stopped` one none;
//! - liveness: after a quiet phase (faults off, a `takeover all` on one node),
//!   each group runs on exactly one node.
//!
//! `SIM_SEED=0x...` replays one seed; `SIM_SEEDS=N` sets how many seeds (default
//! 80); `SIM_LOG=1` prints the trace.

use std::collections::VecDeque;
use std::fmt::Write as _;

use bascule::config::digest::ConfigDigest;
use bascule::config::AutoFailback;
use bascule::core::event::LinkId;
use bascule::core::takeover::{
    Action, Command, FenceConfig, GroupConfig, GroupState, Op, Outcome, Takeover, TakeoverConfig,
    Which,
};
use bascule::core::{Membership, MembershipConfig, PeerState};
use bascule::rng::Rng;
use bascule::time::{Duration, Instant};
use bascule::wire::Repr;

const STEP_MS: u64 = 2;
const KEEPALIVE_MS: u64 = 50;
const DEADTIME_MS: u64 = 200;
const CHAOS_MS: u64 = 40_000;
const QUIET_MS: u64 = 20_000;
/// How long an overlap born in a partition may last once the link is healthy.
const HEAL_BOUND_MS: u64 = 3_000;
/// Resources per group (group 0 prefers node 0, group 1 node 1).
const RESOURCES: [u8; 2] = [3, 2];
const GROUPS: usize = RESOURCES.len();
const ETH: LinkId = LinkId(0);
/// Seeds per run unless `SIM_SEEDS` says otherwise (3000 pass in release in ~20 s).
const SEEDS_DEFAULT: u64 = 80;

/// The knobs of one run, drawn from the seed.
#[derive(Clone, Copy, Debug)]
struct Knobs {
    fence: bool,
    auto_failback: AutoFailback,
    start_fail: f64,
    stop_fail: f64,
    fence_fail: f64,
    resource_death: f64,
    /// Ping nodes configured: each node's reachability (0..=PING_NODES) changes.
    ping: bool,
}

/// Ping nodes in runs with `Knobs::ping`.
const PING_NODES: u8 = 2;

/// A node: its machines and the truth about its resources.
struct Node {
    index: u8,
    up: bool,
    epoch: u32,
    down_until: Instant,
    m: Membership,
    t: Takeover,
    running: [[bool; 3]; GROUPS],
    /// Outstanding agent runs: (done at, action, outcome).
    actions: Vec<(Instant, Action, Outcome)>,
    fence_done: Option<(Instant, bool)>,
    /// Ping nodes this node reaches.
    reach: u8,
}

struct World {
    seed: u64,
    rng: Rng,
    knobs: Knobs,
    now: Instant,
    nodes: [Node; 2],
    /// In flight: (arrival, to, frame).
    wire: VecDeque<(Instant, usize, Repr)>,
    partition_until: Instant,
    /// Per group: when the current overlap began, if any.
    overlap_since: [Option<Instant>; GROUPS],
    healthy_since: Instant,
    quiet: bool,
    /// Both nodes saw each other alive when this step began (a decision taken in
    /// the step may rest on that view, before the step's frames arrived).
    seen_before: bool,
    log: String,
}

fn membership_config(local: u8, epoch: u32) -> MembershipConfig {
    MembershipConfig {
        local,
        peer: 1 - local,
        links: 1,
        keepalive: Duration::from_millis(KEEPALIVE_MS),
        warntime: Duration::from_millis(DEADTIME_MS / 2),
        deadtime: Duration::from_millis(DEADTIME_MS),
        initdead: Duration::from_millis(2 * DEADTIME_MS),
        boot_epoch: epoch,
        digest: ConfigDigest {
            ha_cf: 1,
            haresources: 2,
            authkeys: 3,
        },
        key: 1,
    }
}

fn takeover_config(local: u8, knobs: &Knobs) -> TakeoverConfig {
    let mut groups = heapless::Vec::new();
    for (g, resources) in RESOURCES.iter().enumerate() {
        let monitor = (g == 0).then(|| Duration::from_millis(300));
        let group = GroupConfig {
            preferred: g as u8,
            resources: *resources,
            monitor,
            monitor_failures: 3,
        };
        groups.push(group).unwrap();
    }
    TakeoverConfig {
        local,
        groups,
        auto_failback: knobs.auto_failback,
        fence: knobs.fence.then_some(FenceConfig {
            delay: Duration::from_millis(100),
            retry: Duration::from_millis(150),
        }),
        ping_configured: knobs.ping,
        stop_retries: 2,
        backoff_min: Duration::from_millis(300),
        backoff_max: Duration::from_millis(2_000),
        settle: Duration::from_millis(DEADTIME_MS),
    }
}

impl Node {
    fn boot(index: u8, epoch: u32, knobs: &Knobs, now: Instant) -> Node {
        Node {
            index,
            up: true,
            epoch,
            down_until: now,
            m: Membership::new(membership_config(index, epoch), now),
            t: Takeover::new(takeover_config(index, knobs), now),
            running: [[false; 3]; GROUPS],
            actions: Vec::new(),
            fence_done: None,
            reach: PING_NODES,
        }
    }

    fn state(&self, g: usize) -> GroupState {
        self.t.group_state(g as u8)
    }

    fn active(&self, g: usize) -> bool {
        self.up
            && matches!(
                self.state(g),
                GroupState::Starting { .. } | GroupState::Running
            )
    }

    fn sees_peer_alive(&self) -> bool {
        self.up && matches!(self.m.peer_state(), PeerState::Alive | PeerState::Late)
    }
}

impl World {
    fn new(seed: u64) -> World {
        let mut rng = Rng::new(seed);
        let knobs = Knobs {
            fence: rng.chance(0.5),
            auto_failback: [AutoFailback::On, AutoFailback::Off, AutoFailback::Legacy]
                [rng.below(3) as usize],
            start_fail: [0.0, 0.05, 0.2][rng.below(3) as usize],
            stop_fail: [0.0, 0.05, 0.3][rng.below(3) as usize],
            fence_fail: 0.3,
            resource_death: [0.0, 0.0005][rng.below(2) as usize],
            ping: rng.chance(0.5),
        };
        let now = Instant::ZERO;
        World {
            seed,
            rng,
            knobs,
            now,
            nodes: [Node::boot(0, 1, &knobs, now), Node::boot(1, 1, &knobs, now)],
            wire: VecDeque::new(),
            partition_until: now,
            overlap_since: [None; GROUPS],
            healthy_since: now,
            quiet: false,
            seen_before: false,
            log: String::new(),
        }
    }

    fn note(&mut self, line: String) {
        let line = format!("{:>7} {line}\n", self.now.millis());
        if std::env::var("SIM_LOG").is_ok() {
            print!("{line}");
        }
        self.log.push_str(&line);
    }

    fn fail(&self, what: String) -> String {
        let tail: Vec<&str> = self.log.lines().rev().take(80).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "{what}\nSIM_SEED={:#x} knobs={:?}\n--- last trace lines ---\n{}",
            self.seed,
            self.knobs,
            tail.join("\n")
        )
    }

    fn link_ok(&self) -> bool {
        self.now >= self.partition_until && self.nodes.iter().all(|n| n.up)
    }

    /// Injects faults and commands (chaos phase only).
    fn chaos(&mut self) {
        if self.quiet {
            return;
        }
        if self.rng.chance(0.0004) {
            let ms = 200 + self.rng.below(2_000);
            self.partition_until = self.now + Duration::from_millis(ms);
            self.note(format!("fault partition ms={ms}"));
        }
        if self.rng.chance(0.0002) {
            let n = self.rng.below(2) as usize;
            let ms = 300 + self.rng.below(3_000);
            self.crash(n, ms, "crash");
        }
        let r = &mut self.rng;
        if r.chance(0.0006) {
            let n = r.below(2) as usize;
            let which = [Which::All, Which::Local, Which::Foreign][r.below(3) as usize];
            let cmd = if r.chance(0.5) {
                Command::Standby(which)
            } else {
                Command::Takeover(which)
            };
            if self.nodes[n].up {
                self.note(format!("command node={n} {cmd:?}"));
                self.nodes[n].t.handle_command(self.now, cmd);
            }
        }
        if self.knobs.ping && self.rng.chance(0.0005) {
            let n = self.rng.below(2) as usize;
            let reach = self.rng.below(PING_NODES as u64 + 1) as u8;
            self.nodes[n].reach = reach;
            self.note(format!("fault node={n} ping_reachable={reach}"));
        }
        let death = self.knobs.resource_death;
        for n in 0..2 {
            if self.rng.chance(death) && self.nodes[n].up {
                // Only group 0 is monitored: a death elsewhere would go unseen.
                let g = 0;
                let r = self.rng.below(RESOURCES[g] as u64) as usize;
                if self.nodes[n].running[g][r] {
                    self.nodes[n].running[g][r] = false;
                    self.note(format!("fault node={n} group={g} resource={r} died"));
                }
            }
        }
    }

    /// The node goes down now (its resources die with it) and boots after `ms`.
    fn crash(&mut self, n: usize, ms: u64, why: &str) {
        if !self.nodes[n].up {
            return;
        }
        let node = &mut self.nodes[n];
        node.up = false;
        node.down_until = self.now + Duration::from_millis(ms);
        node.running = [[false; 3]; GROUPS];
        node.actions.clear();
        node.fence_done = None;
        self.note(format!("{why} node={n} down_ms={ms}"));
    }

    fn reboot_due(&mut self) {
        for n in 0..2 {
            let node = &self.nodes[n];
            if !node.up && self.now >= node.down_until {
                let epoch = node.epoch + 1;
                self.nodes[n] = Node::boot(n as u8, epoch, &self.knobs, self.now);
                self.note(format!("boot node={n} epoch={epoch}"));
            }
        }
    }

    fn deliver(&mut self) {
        let now = self.now;
        let mut later = VecDeque::new();
        while let Some((at, to, repr)) = self.wire.pop_front() {
            if at > now {
                later.push_back((at, to, repr));
                continue;
            }
            let node = &mut self.nodes[to];
            if node.up {
                let _ = node.m.handle_frame(now, ETH, &repr);
                node.t.handle_peer(
                    now,
                    node.m.peer_state(),
                    node.m.peer_adverts(),
                    node.m.peer_sees_us(),
                );
            }
        }
        self.wire = later;
    }

    fn finish_agents(&mut self, n: usize) {
        let now = self.now;
        let node = &mut self.nodes[n];
        let due: Vec<_> = node
            .actions
            .iter()
            .copied()
            .filter(|(at, ..)| *at <= now)
            .collect();
        node.actions.retain(|(at, ..)| *at > now);
        for (_, a, outcome) in due {
            let (g, r) = (a.group as usize, a.resource as usize);
            let outcome = match (a.op, outcome) {
                (Op::Start, Outcome::Ok) => {
                    node.running[g][r] = true;
                    outcome
                }
                (Op::Stop, Outcome::Ok) => {
                    node.running[g][r] = false;
                    outcome
                }
                (Op::Status, _) if !node.running[g][r] => Outcome::Failed { code: 3 },
                _ => outcome,
            };
            node.t
                .handle_action_done(now, a.group, a.resource, a.op, outcome);
        }
        if let Some((at, ok)) = node.fence_done.filter(|(at, _)| *at <= now) {
            let _ = at;
            node.fence_done = None;
            node.t.handle_fence_done(now, ok);
            if ok {
                let ms = 500 + self.rng.below(2_000);
                self.crash(1 - n, ms, "fenced");
            }
        }
    }

    /// Drains a node's outputs: agents, fence, escalation, adverts, heartbeats.
    fn drain(&mut self, n: usize) -> Result<(), String> {
        let now = self.now;
        while let Some(a) = self.nodes[n].t.poll_action() {
            let fail = match a.op {
                Op::Start => self.knobs.start_fail,
                Op::Stop => self.knobs.stop_fail,
                Op::Status => 0.0,
            };
            let fail = if self.quiet { 0.0 } else { fail };
            let outcome = if self.rng.chance(fail) {
                Outcome::Failed { code: 1 }
            } else {
                Outcome::Ok
            };
            let at = now + Duration::from_millis(1 + self.rng.below(40));
            if a.op == Op::Start {
                self.check_start(n, a.group as usize)?;
            }
            self.nodes[n].actions.push((at, a, outcome));
        }
        if self.nodes[n].t.poll_fence().is_some() {
            let ok = !self.rng.chance(if self.quiet {
                0.0
            } else {
                self.knobs.fence_fail
            });
            let at = now + Duration::from_millis(20 + self.rng.below(100));
            self.nodes[n].fence_done = Some((at, ok));
        }
        let mut lines = Vec::new();
        while let Some(e) = self.nodes[n].t.poll_event() {
            let mut line = format!("node={n} ");
            e.render(&mut line).unwrap();
            lines.push(line);
        }
        while let Some(e) = self.nodes[n].m.poll_event() {
            lines.push(format!("node={n} membership {e:?}"));
        }
        for line in lines {
            self.note(line);
        }
        if let Some(g) = self.nodes[n].t.poll_escalate() {
            let ms = 500 + self.rng.below(1_000);
            self.crash(n, ms, &format!("escalate group={g}"));
            return Ok(());
        }
        let node = &mut self.nodes[n];
        node.m.set_local_adverts(&node.t.adverts());
        if node.t.take_changed() {
            node.m.send_now(now);
        }
        while let Some(repr) = node.m.poll_transmit(now) {
            let lost = self.rng.chance(0.02) || now < self.partition_until;
            if !lost {
                let at = now + Duration::from_millis(1 + self.rng.below(8));
                self.wire.push_back((at, 1 - n, repr));
            }
        }
        Ok(())
    }

    /// The Blocked checker, at the moment a node hands out a start.
    fn check_start(&self, n: usize, g: usize) -> Result<(), String> {
        let other = &self.nodes[1 - n];
        if other.up && other.state(g) == GroupState::Blocked && self.nodes[n].sees_peer_alive() {
            return Err(self.fail(format!(
                "node {n} starts group {g} while node {} is Blocked",
                1 - n
            )));
        }
        Ok(())
    }

    fn step_node(&mut self, n: usize) -> Result<(), String> {
        if !self.nodes[n].up {
            return Ok(());
        }
        let now = self.now;
        self.finish_agents(n);
        let node = &mut self.nodes[n];
        if !node.up {
            return Ok(());
        }
        if node.m.poll_timeout().is_some_and(|t| t <= now) {
            node.m.handle_timeout(now);
        }
        node.t.handle_peer(
            now,
            node.m.peer_state(),
            node.m.peer_adverts(),
            node.m.peer_sees_us(),
        );
        if self.knobs.ping {
            node.m.set_local_ping_reachable(node.reach);
            node.t
                .handle_ping(now, node.reach, node.m.peer_ping_reachable());
        }
        if node.t.poll_timeout().is_some_and(|t| t <= now) {
            node.t.handle_timeout(now);
        }
        self.drain(n)
    }

    #[allow(clippy::needless_range_loop)] // g indexes nodes' arrays and RESOURCES alike
    fn check(&mut self) -> Result<(), String> {
        if !self.link_ok() {
            self.healthy_since = self.now;
        }
        for g in 0..GROUPS {
            let both = self.nodes[0].active(g) && self.nodes[1].active(g);
            match (both, self.overlap_since[g]) {
                (false, _) => self.overlap_since[g] = None,
                (true, None) => {
                    let seen_now = self.nodes.iter().all(Node::sees_peer_alive);
                    let seen = seen_now && self.seen_before;
                    if self.knobs.fence || seen {
                        return Err(self.fail(format!(
                            "group {g} active on both nodes (seen alive: {seen})"
                        )));
                    }
                    self.overlap_since[g] = Some(self.now);
                }
                (true, Some(born)) => {
                    let since = born.max(self.healthy_since);
                    let healthy_ms = self.now.saturating_since(since).millis();
                    if healthy_ms > HEAL_BOUND_MS {
                        return Err(self.fail(format!(
                            "group {g} still on both nodes {healthy_ms} ms after heal"
                        )));
                    }
                }
            }
            for node in self.nodes.iter().filter(|n| n.up) {
                let truth = &node.running[g][..RESOURCES[g] as usize];
                let idle = matches!(
                    node.state(g),
                    GroupState::Stopped | GroupState::Failed { .. }
                );
                if idle && truth.iter().any(|r| *r) {
                    return Err(self.fail(format!(
                        "node {} group {g} idle but resources run: {truth:?}",
                        node.index
                    )));
                }
            }
        }
        Ok(())
    }

    /// Liveness at the end of the quiet phase.
    #[allow(clippy::needless_range_loop)] // g indexes nodes' arrays and RESOURCES alike
    fn check_final(&self) -> Result<(), String> {
        let mut summary = String::new();
        for g in 0..GROUPS {
            let states = [self.nodes[0].state(g), self.nodes[1].state(g)];
            write!(summary, "group {g}: {states:?}; ").unwrap();
            let running: Vec<usize> = (0..2)
                .filter(|n| states[*n] == GroupState::Running)
                .collect();
            let [owner] = running[..] else {
                return Err(self.fail(format!(
                    "not exactly one owner after the quiet phase: {summary}"
                )));
            };
            let all = self.nodes[owner].running[g][..RESOURCES[g] as usize]
                .iter()
                .all(|r| *r);
            if !all {
                return Err(self.fail(format!(
                    "group {g} Running on {owner} but a resource is down"
                )));
            }
        }
        Ok(())
    }

    fn run(mut self) -> Result<(), String> {
        let end = CHAOS_MS + QUIET_MS;
        for _ in 0..end / STEP_MS {
            self.now = self.now + Duration::from_millis(STEP_MS);
            if !self.quiet && self.now.millis() >= CHAOS_MS {
                self.quiet = true;
                self.partition_until = self.now;
                for node in self.nodes.iter_mut() {
                    node.reach = PING_NODES;
                }
                self.note("quiet phase".into());
            }
            self.reboot_due();
            self.seen_before = self.nodes.iter().all(Node::sees_peer_alive);
            if self.quiet && self.now.millis() == CHAOS_MS + 4_000 {
                let n = self.rng.below(2) as usize;
                self.note(format!("command node={n} takeover all (quiet)"));
                self.nodes[n]
                    .t
                    .handle_command(self.now, Command::Takeover(Which::All));
            }
            self.chaos();
            self.deliver();
            for n in 0..2 {
                self.step_node(n)?;
            }
            self.check()?;
        }
        self.check_final()
    }
}

fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("SIM_SEED") {
        let s = s.trim();
        let parsed = match s.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => s.parse(),
        };
        return vec![parsed.expect("SIM_SEED: 0x-hex or decimal")];
    }
    let count: u64 = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEEDS_DEFAULT);
    (0..count)
        .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .collect()
}

#[test]
fn takeover_seed_sweep() {
    let mut failures = Vec::new();
    for seed in seeds() {
        if let Err(e) = World::new(seed).run() {
            failures.push(e);
            if failures.len() >= 3 {
                break;
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
