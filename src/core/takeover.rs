//! Takeover: which node runs each `haresources` group, and the steps to get there.
//!
//! Layer: pure state machine (no I/O, time passed in, no allocation after `new`).
//! The design is docs/TAKEOVER.md; this module is its rules 1-9.
//!
//! Inputs: [`Takeover::handle_peer`] (membership's view of the peer and the group
//! adverts of its last heartbeat), [`Takeover::handle_action_done`] (a resource
//! agent finished), [`Takeover::handle_fence_done`], [`Takeover::handle_command`]
//! (`bascule standby|takeover`), [`Takeover::handle_ping`] and
//! [`Takeover::handle_timeout`]. Outputs, drained by the shell after every input:
//! [`Takeover::poll_action`] (run one resource agent; at most one outstanding per
//! group), [`Takeover::poll_fence`], [`Takeover::poll_escalate`],
//! [`Takeover::poll_event`], then [`Takeover::adverts`] into membership's
//! heartbeat and, when [`Takeover::take_changed`] says so, `Membership::send_now`;
//! last [`Takeover::poll_timeout`]. Time must never go backwards (asserted).
//!
//! Per-group local states (advertised as [`AdvertState`]):
//!
//! ```text
//!   Stopped --start allowed--> Starting{next} --last start ok--> Running
//!   Starting --start failed--> Stopping{next} (rollback) --all stopped--> Failed{until}
//!   Running --release--> Stopping{next} --all stopped--> Stopped (+offer)
//!   Running --monitor gave up--> Stopping{next} --all stopped--> Failed{until}
//!   Stopping --stop failed after retries--> Blocked (escalation; terminal)
//!   Failed --backoff over--> Stopped (+offer+want: willing)
//! ```
//!
//! Who may start (peer alive). Each node advertises per group its state and two
//! flags: `offer` (I will not start it: take it) and `want` (alone: please release
//! it to me; with `offer`: "willing", I release it but take it back if you will
//! not). A node starts a group only when the peer advertises it `Stopped` or
//! `Failed` and one of: the peer is `Failed` (in backoff, it will not start); the
//! peer offers; or this node is the group's preferred node, the peer does not want
//! it, and this node's advert has been unchanged for `settle`. A node that offers
//! never starts. Release before acquire: every stop ends with `offer`, and the
//! other node starts only after it sees that.
//!
//! Design change from TAKEOVER.md (a flaw found while proving rule 1-5 safe): a
//! flag a node *clears* can cross, in flight, a decision the peer takes on the old
//! flag (both start). So `offer` is sticky: it clears only once the peer holds the
//! group (advertises Starting/Running/Stopping/Blocked), when the peer is dead, or
//! by the tie-break when both offer (the preferred node clears a willing offer; the
//! other node clears only against a hard offer, i.e. `offer` without `want`, or a
//! `Failed` peer), and tie-breaks and the preferred-node start wait until this
//! node's own advert has been stable for `settle` (the shell passes `deadtime`:
//! by then the peer has seen it or has been declared dead). Starting on the peer's
//! explicit offer needs no wait, so a planned switchover costs one one-way delay.
//!
//! Invariants (asserted): a group never starts while the peer, alive, advertises
//! it Starting/Running/Stopping/Blocked; with the peer dead, only after a
//! successful fence when fencing is configured, and never when the dead peer last
//! advertised it Blocked without fencing; one outstanding action per group.

use heapless::{Deque, Vec};

use core::fmt::{self, Write};

use crate::config::AutoFailback;
use crate::time::{Duration, Instant};
use crate::wire::{AdvertState, GroupAdvert, GROUPS_MAX};

use super::membership::PeerState;

/// Event queue capacity: one input changes at most a few states per group (8) and
/// the fence; the shell drains after every input. Overflow drops and counts.
pub const EVENTS_MAX: usize = 64;

/// One group of `haresources`, as the takeover needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    /// The node index (ha.cf `node` order) named first on the line.
    pub preferred: u8,
    /// How many resources (started left to right, stopped right to left); >= 1.
    pub resources: u8,
    /// `monitor::T`: check every resource this often while running.
    pub monitor: Option<Duration>,
    /// `monitor::T::N`: failed checks after which the group is given to the peer
    /// (rule 9); >= 1.
    pub monitor_failures: u8,
}

/// `fence COMMAND`: timings of the fence step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FenceConfig {
    /// Wait before fencing when this node is not the preferred node of group 0,
    /// so the two nodes of a partition do not shoot each other.
    pub delay: Duration,
    /// Wait after a failed fence before trying again.
    pub retry: Duration,
}

/// Everything the takeover machine needs from the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TakeoverConfig {
    /// Our node index.
    pub local: u8,
    /// The groups, in `haresources` order (the same on both nodes: the config
    /// digest says so).
    pub groups: Vec<GroupConfig, GROUPS_MAX>,
    /// `auto_failback`.
    pub auto_failback: AutoFailback,
    /// `fence`, if configured.
    pub fence: Option<FenceConfig>,
    /// Whether `ping`/`ping_group` nodes are configured (rule 6).
    pub ping_configured: bool,
    /// How many times a failed stop is retried before `Blocked`.
    pub stop_retries: u8,
    /// First backoff after a failed start; doubles per failure.
    pub backoff_min: Duration,
    /// Backoff cap.
    pub backoff_max: Duration,
    /// How long our advert must be unchanged before we act on a tie-break or as the
    /// preferred node: `deadtime` (the peer has seen it by then, or is dead).
    pub settle: Duration,
}

/// Wait after a failed fence before the next attempt (ha.cf has no directive for
/// it): long enough not to hammer a PDU, short next to a takeover that waits for it.
pub const FENCE_RETRY: Duration = Duration::from_secs(5);

/// Why a parsed configuration does not fit the takeover machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TakeoverConfigError {
    /// More groups than a heartbeat can describe ([`GROUPS_MAX`]).
    TooManyGroups,
    /// A group with more than 255 resources (its index).
    TooManyResources(u8),
    /// A group's node is not an ha.cf node (its index; `Config::parse` prevents it).
    UnknownNode(u8),
}

impl fmt::Display for TakeoverConfigError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            TakeoverConfigError::TooManyGroups => {
                write!(f, "haresources has more than {GROUPS_MAX} groups")
            }
            TakeoverConfigError::TooManyResources(g) => {
                write!(f, "haresources group {g} has more than 255 resources")
            }
            TakeoverConfigError::UnknownNode(g) => {
                write!(f, "haresources group {g} names a node ha.cf does not list")
            }
        }
    }
}

impl TakeoverConfig {
    /// The takeover settings of a parsed configuration, for node index `local`:
    /// `settle` is `deadtime`, the backoff runs from `start_backoff` to its cap,
    /// `fence_delay` applies to the node that is not group 0's preferred one.
    pub fn from_config(
        config: &crate::config::Config,
        local: u8,
    ) -> Result<TakeoverConfig, TakeoverConfigError> {
        let ha = &config.ha;
        let mut groups = Vec::new();
        for (i, g) in config.resources.groups.iter().enumerate() {
            let index = i.min(u8::MAX as usize) as u8;
            let preferred = ha.nodes.iter().position(|n| *n == g.node);
            let preferred = preferred.ok_or(TakeoverConfigError::UnknownNode(index))?;
            let resources = u8::try_from(g.resources.len())
                .map_err(|_| TakeoverConfigError::TooManyResources(index))?;
            let group = GroupConfig {
                preferred: preferred as u8,
                resources,
                monitor: g.monitor,
                monitor_failures: g.monitor_failures.clamp(1, u8::MAX as u32) as u8,
            };
            groups
                .push(group)
                .map_err(|_| TakeoverConfigError::TooManyGroups)?;
        }
        let backoff_cap = Duration::from_millis(crate::config::hacf::START_BACKOFF_CAP_MS);
        Ok(TakeoverConfig {
            local,
            groups,
            auto_failback: ha.auto_failback,
            fence: ha.fence.as_ref().map(|_| FenceConfig {
                delay: ha.fence_delay,
                retry: FENCE_RETRY,
            }),
            ping_configured: !ha.ping_nodes.is_empty(),
            stop_retries: ha.stop_retries.min(u8::MAX as u32) as u8,
            backoff_min: ha.start_backoff,
            backoff_max: backoff_cap.max(ha.start_backoff),
            settle: ha.deadtime,
        })
    }
}

/// Which groups a command applies to (the guide's `hb_standby all|local|foreign`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// Every group.
    All,
    /// Groups whose preferred node is this one.
    Local,
    /// Groups whose preferred node is the peer.
    Foreign,
}

/// An operator command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Stop the groups here and offer them to the peer (sticky until `Takeover`).
    Standby(Which),
    /// Ask for the groups: the peer stops and offers them.
    Takeover(Which),
}

/// A resource agent operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Start the resource.
    Start,
    /// Stop the resource.
    Stop,
    /// Check the resource (monitor).
    Status,
}

impl Op {
    /// Every op, for exhaustive tests.
    pub const ALL: [Op; 3] = [Op::Start, Op::Stop, Op::Status];

    /// The word in logs, and the last argument an LSB script receives.
    pub const fn name(self) -> &'static str {
        match self {
            Op::Start => "start",
            Op::Stop => "stop",
            Op::Status => "status",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a resource agent ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Exit status 0.
    Ok,
    /// Non-zero exit status (or killed by a signal, as the shell encodes it).
    Failed {
        /// The exit code.
        code: i32,
    },
    /// The shell killed it after its time limit.
    Timeout,
}

/// Run this resource agent operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Action {
    /// Group index.
    pub group: u8,
    /// Resource index within the group.
    pub resource: u8,
    /// What to do.
    pub op: Op,
}

/// Why a group changed state (the `reason=` word).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The peer is dead (and fenced when fencing is configured).
    PeerDead,
    /// The peer offers the group.
    PeerOffer,
    /// The peer failed to start it and backs off.
    PeerFailed,
    /// We are the preferred node and the peer does not run it.
    Preferred,
    /// Every resource started.
    Started,
    /// Every resource stopped.
    Stopped,
    /// A start failed; rolled back.
    StartFailed,
    /// The rollback (or monitor give-up) finished; backing off.
    RolledBack,
    /// A stop failed after its retries.
    StopFailed,
    /// The backoff after a failed start is over.
    BackoffDone,
    /// `bascule standby`.
    Standby,
    /// The peer wants it (auto_failback, or `bascule takeover` there).
    PeerWant,
    /// The peer reaches more ping nodes.
    Ping,
    /// Both nodes ran it (partition healed); the peer keeps it.
    Conflict,
    /// The monitor failed too often.
    Monitor,
}

impl Reason {
    /// The `reason=` word.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::PeerDead => "peer_dead",
            Reason::PeerOffer => "peer_offer",
            Reason::PeerFailed => "peer_failed",
            Reason::Preferred => "preferred",
            Reason::Started => "started",
            Reason::Stopped => "stopped",
            Reason::StartFailed => "start_failed",
            Reason::RolledBack => "rolled_back",
            Reason::StopFailed => "stop_failed",
            Reason::BackoffDone => "backoff_done",
            Reason::Standby => "standby",
            Reason::PeerWant => "peer_want",
            Reason::Ping => "ping",
            Reason::Conflict => "conflict",
            Reason::Monitor => "monitor",
        }
    }
}

/// What the takeover machine reports (rendered as catalogue lines by the shell).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TakeoverEvent {
    /// A group's advertised state changed.
    GroupState {
        /// Group index.
        group: u8,
        /// Old state.
        from: AdvertState,
        /// New state.
        to: AdvertState,
        /// Why.
        reason: Reason,
    },
    /// A resource agent finished.
    Step {
        /// Group index.
        group: u8,
        /// Resource index.
        resource: u8,
        /// The operation.
        op: Op,
        /// How it ended.
        outcome: Outcome,
        /// From `poll_action` to `handle_action_done`.
        took_ms: u64,
    },
    /// The fence command starts now.
    FenceStart,
    /// The fence command finished.
    FenceDone {
        /// Whether it succeeded.
        ok: bool,
    },
    /// A stop failed for good: escalation runs.
    Escalate {
        /// Group index.
        group: u8,
    },
}

impl TakeoverEvent {
    /// The stable event name (first word of the line).
    pub const fn name(&self) -> &'static str {
        match self {
            TakeoverEvent::GroupState { .. } => "group_state",
            TakeoverEvent::Step { .. } => "takeover_step",
            TakeoverEvent::FenceStart => "fence_start",
            TakeoverEvent::FenceDone { .. } => "fence",
            TakeoverEvent::Escalate { .. } => "escalate",
        }
    }

    /// Renders the catalogue line (`key=value` words after the name).
    pub fn render(&self, out: &mut impl Write) -> fmt::Result {
        out.write_str(self.name())?;
        match *self {
            TakeoverEvent::GroupState {
                group,
                from,
                to,
                reason,
            } => write!(
                out,
                " group={group} from={from:?} to={to:?} reason={}",
                reason.name()
            ),
            TakeoverEvent::Step {
                group,
                resource,
                op,
                outcome,
                took_ms,
            } => {
                write!(out, " group={group} resource={resource} op={}", op.name())?;
                match outcome {
                    Outcome::Ok => write!(out, " result=ok")?,
                    Outcome::Failed { code } => write!(out, " result=failed code={code}")?,
                    Outcome::Timeout => write!(out, " result=timeout")?,
                }
                write!(out, " took_ms={took_ms}")
            }
            TakeoverEvent::FenceStart => Ok(()),
            TakeoverEvent::FenceDone { ok } => {
                write!(out, " result={}", if ok { "ok" } else { "failed" })
            }
            TakeoverEvent::Escalate { group } => write!(out, " group={group}"),
        }
    }
}

/// A group's local state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    /// Not running here.
    Stopped,
    /// Resources `0..next` started; `next` is starting.
    Starting {
        /// The resource being started.
        next: u8,
    },
    /// Every resource runs.
    Running,
    /// Resources `0..next` may still run; `next - 1` is stopping.
    Stopping {
        /// How many resources remain to stop.
        next: u8,
    },
    /// A start failed and was rolled back; no new start here before `until`.
    Failed {
        /// End of the backoff.
        until: Instant,
    },
    /// A stop failed after its retries: the group may still run here.
    Blocked,
}

impl GroupState {
    /// The advertised state.
    pub const fn advert(self) -> AdvertState {
        match self {
            GroupState::Stopped => AdvertState::Stopped,
            GroupState::Starting { .. } => AdvertState::Starting,
            GroupState::Running => AdvertState::Running,
            GroupState::Stopping { .. } => AdvertState::Stopping,
            GroupState::Failed { .. } => AdvertState::Failed,
            GroupState::Blocked => AdvertState::Blocked,
        }
    }
}

/// What a finished stop sequence leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AfterStop {
    /// A release: `Stopped` with `offer`.
    Stopped,
    /// A rollback or monitor give-up: `Failed` with backoff.
    Failed,
}

/// The monitor's progress within `Running`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Monitor {
    /// Waiting for `monitor_at`.
    Idle,
    /// Checking resource `r`.
    Status(u8),
    /// Restarting resource `r`: stopping it.
    RestartStop(u8),
    /// Restarting resource `r`: starting it.
    RestartStart(u8),
}

/// An action handed out (or about to be).
#[derive(Clone, Copy, Debug)]
struct Pending {
    action: Action,
    issued: Instant,
    polled: bool,
}

/// The fence step (rule 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fence {
    /// Not needed (peer alive) or not started.
    Idle,
    /// Waiting `delay` before fencing.
    Delay(Instant),
    /// To hand out through `poll_fence`.
    Due,
    /// The command runs.
    Running,
    /// Failed; try again at.
    Retry(Instant),
    /// Succeeded: the dead peer is fenced until it is seen alive again.
    Done,
}

/// One group's runtime state.
#[derive(Clone, Copy, Debug)]
struct Group {
    config: GroupConfig,
    state: GroupState,
    /// Sticky release (see the module doc).
    soft_offer: bool,
    /// `bascule standby` (hard offer until `takeover`).
    standby: bool,
    /// `bascule takeover`: advertise `want` until running here.
    want_cmd: bool,
    advert: GroupAdvert,
    advert_since: Instant,
    backoff: Duration,
    after_stop: AfterStop,
    action: Option<Pending>,
    stop_failures: u8,
    monitor: Monitor,
    monitor_at: Option<Instant>,
    monitor_failures: u8,
    escalate: bool,
}

/// The takeover state machine. See the module doc.
pub struct Takeover {
    config: TakeoverConfig,
    now_last: Instant,
    groups: Vec<Group, GROUPS_MAX>,
    peer: PeerState,
    /// The peer's last heartbeat says it sees us alive.
    peer_sees_us: bool,
    /// The peer's last adverts (kept after it dies, for the Blocked check).
    peer_adverts: [Option<GroupAdvert>; GROUPS_MAX],
    ping_local: u8,
    ping_peer: Option<u8>,
    fence: Fence,
    changed: bool,
    events: Deque<TakeoverEvent, EVENTS_MAX>,
    events_dropped: u64,
    stale_inputs: u64,
}

impl Takeover {
    /// Every group `Stopped`, the peer `Waiting` (rule 1: nothing starts before
    /// membership says alive or dead).
    pub fn new(config: TakeoverConfig, now: Instant) -> Takeover {
        assert!(config.local <= 1, "node index {}", config.local);
        assert!(config.backoff_min <= config.backoff_max, "backoff range");
        let mut groups = Vec::new();
        for g in &config.groups {
            assert!(g.resources >= 1, "a group has at least one resource");
            assert!(g.preferred <= 1, "preferred node index {}", g.preferred);
            assert!(g.monitor_failures >= 1, "monitor failures >= 1");
            let group = Group {
                config: *g,
                state: GroupState::Stopped,
                soft_offer: false,
                standby: false,
                want_cmd: false,
                advert: GroupAdvert::default(),
                advert_since: now,
                backoff: config.backoff_min,
                after_stop: AfterStop::Stopped,
                action: None,
                stop_failures: 0,
                monitor: Monitor::Idle,
                monitor_at: None,
                monitor_failures: 0,
                escalate: false,
            };
            groups
                .push(group)
                .expect("config.groups has the same capacity");
        }
        Takeover {
            config,
            now_last: now,
            groups,
            peer: PeerState::Waiting,
            peer_sees_us: false,
            peer_adverts: [None; GROUPS_MAX],
            ping_local: 0,
            ping_peer: None,
            fence: Fence::Idle,
            changed: false,
            events: Deque::new(),
            events_dropped: 0,
            stale_inputs: 0,
        }
    }

    // ---- Inputs ----

    /// Membership's view of the peer: `Membership::peer_state()`,
    /// `peer_adverts()` and `peer_sees_us()`, after every accepted frame and
    /// membership timeout. Adverts count only while the peer is alive; groups
    /// beyond the peer's count are unknown and never started on. While the peer
    /// does not see us alive (it booted, or hears us no more), it may hold us dead
    /// and take every group: we start nothing on its word.
    pub fn handle_peer(
        &mut self,
        now: Instant,
        state: PeerState,
        adverts: Option<&[GroupAdvert]>,
        sees_us: bool,
    ) {
        self.tick(now);
        if state == PeerState::Dead && self.peer != PeerState::Dead {
            // A standby is a hand-over to a live peer, as Heartbeat's hb_standby:
            // with the peer dead, the service must come back here, and it stays
            // here when the peer returns (no failback the operator did not ask for).
            for g in self.groups.iter_mut() {
                g.standby = false;
            }
        }
        self.peer = state;
        self.peer_sees_us = sees_us;
        if Self::alive(state) {
            for (g, slot) in self.peer_adverts.iter_mut().enumerate() {
                *slot = adverts.and_then(|a| a.get(g).copied());
            }
            self.fence = Fence::Idle;
        }
        self.evaluate(now);
    }

    /// How many ping nodes we reach and, from its heartbeat, the peer (rule 6).
    pub fn handle_ping(&mut self, now: Instant, local_reachable: u8, peer_reachable: Option<u8>) {
        self.tick(now);
        self.ping_local = local_reachable;
        self.ping_peer = peer_reachable;
        self.evaluate(now);
    }

    /// An operator command.
    pub fn handle_command(&mut self, now: Instant, command: Command) {
        self.tick(now);
        let local = self.config.local;
        for g in self.groups.iter_mut() {
            let which = match command {
                Command::Standby(w) | Command::Takeover(w) => w,
            };
            let mine = g.config.preferred == local;
            let selected = match which {
                Which::All => true,
                Which::Local => mine,
                Which::Foreign => !mine,
            };
            if !selected {
                continue;
            }
            match command {
                Command::Standby(_) => {
                    g.standby = true;
                    g.want_cmd = false;
                }
                Command::Takeover(_) => {
                    g.standby = false;
                    g.want_cmd = g.state != GroupState::Running;
                }
            }
        }
        self.evaluate(now);
    }

    /// A resource agent finished. A result that matches no outstanding action (a
    /// stale or duplicate report) is counted and ignored.
    pub fn handle_action_done(
        &mut self,
        now: Instant,
        group: u8,
        resource: u8,
        op: Op,
        outcome: Outcome,
    ) {
        self.tick(now);
        let g = group as usize;
        let matches = self
            .groups
            .get(g)
            .and_then(|grp| grp.action)
            .is_some_and(|p| p.polled && p.action.resource == resource && p.action.op == op);
        if !matches {
            self.stale_inputs += 1;
            return;
        }
        let pending = self.groups[g].action.take().expect("checked above");
        let took_ms = now.saturating_since(pending.issued).millis();
        self.push(TakeoverEvent::Step {
            group,
            resource,
            op,
            outcome,
            took_ms,
        });
        let ok = outcome == Outcome::Ok;
        match (self.groups[g].state, op) {
            (GroupState::Starting { next }, Op::Start) => self.on_start_done(now, g, next, ok),
            (GroupState::Stopping { next }, Op::Stop) => self.on_stop_done(now, g, next, ok),
            (GroupState::Running, _) => self.on_monitor_done(now, g, ok),
            (state, op) => panic!("group {g}: {op:?} outstanding in {state:?}"),
        }
        self.evaluate(now);
    }

    /// The fence command finished. Ignored (counted) when no fence was running.
    pub fn handle_fence_done(&mut self, now: Instant, ok: bool) {
        self.tick(now);
        if self.fence != Fence::Running {
            self.stale_inputs += 1;
            return;
        }
        self.push(TakeoverEvent::FenceDone { ok });
        self.fence = match (ok, self.config.fence) {
            (true, _) => Fence::Done,
            (false, Some(f)) => Fence::Retry(now + f.retry),
            (false, None) => unreachable!("a fence ran without fence config"),
        };
        self.evaluate(now);
    }

    /// Handles whatever is due at `now` (backoffs, monitors, settle, fence timers).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        self.evaluate(now);
    }

    // ---- Outputs ----

    /// The next resource agent operation to run (each handed out once).
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        let p = self
            .groups
            .iter_mut()
            .filter_map(|g| g.action.as_mut())
            .find(|p| !p.polled)?;
        p.polled = true;
        Some(p.action)
    }

    /// `Some(())`: run the fence command now (then `handle_fence_done`).
    #[must_use]
    pub fn poll_fence(&mut self) -> Option<()> {
        if self.fence != Fence::Due {
            return None;
        }
        self.fence = Fence::Running;
        self.push(TakeoverEvent::FenceStart);
        Some(())
    }

    /// A group whose stop failed for good: run the escalation (each once).
    #[must_use]
    pub fn poll_escalate(&mut self) -> Option<u8> {
        let g = self.groups.iter().position(|g| g.escalate)?;
        self.groups[g].escalate = false;
        Some(g as u8)
    }

    /// The next event, oldest first.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<TakeoverEvent> {
        self.events.pop_front()
    }

    /// The earliest instant at which `handle_timeout` may have work.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let now = self.now_last;
        let groups = self.groups.iter().flat_map(|g| {
            let backoff = match g.state {
                GroupState::Failed { until } => Some(until),
                _ => None,
            };
            let monitor = g.monitor_at.filter(|_| g.action.is_none());
            let settle = Some(g.advert_since + self.config.settle).filter(|t| *t > now);
            [backoff, monitor, settle]
        });
        let fence = match self.fence {
            Fence::Delay(t) | Fence::Retry(t) => Some(t),
            _ => None,
        };
        groups.chain([fence]).flatten().min()
    }

    /// What goes into our heartbeats (`Membership::set_local_adverts`).
    pub fn adverts(&self) -> Vec<GroupAdvert, GROUPS_MAX> {
        self.groups.iter().map(|g| g.advert).collect()
    }

    /// Whether an advert changed since the last `take_changed` (then the shell
    /// calls `Membership::send_now`).
    pub fn changed(&self) -> bool {
        self.changed
    }

    /// Returns and clears [`Takeover::changed`].
    pub fn take_changed(&mut self) -> bool {
        core::mem::take(&mut self.changed)
    }

    // ---- Getters ----

    /// A group's local state.
    pub fn group_state(&self, group: u8) -> GroupState {
        self.groups[group as usize].state
    }

    /// The configuration.
    pub fn config(&self) -> &TakeoverConfig {
        &self.config
    }

    /// Action or fence results that matched nothing outstanding.
    pub fn stale_inputs(&self) -> u64 {
        self.stale_inputs
    }

    /// Events dropped because the caller did not drain (should stay 0).
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped
    }

    /// Whether the dead peer has been fenced (for status and tests).
    pub fn fenced(&self) -> bool {
        self.fence == Fence::Done
    }

    // ---- Internals ----

    fn tick(&mut self, now: Instant) {
        assert!(
            now >= self.now_last,
            "time went backwards: {now} < {}",
            self.now_last
        );
        self.now_last = now;
    }

    fn alive(state: PeerState) -> bool {
        matches!(state, PeerState::Alive | PeerState::Late)
    }

    fn push(&mut self, event: TakeoverEvent) {
        if self.events.push_back(event).is_err() {
            self.events_dropped += 1;
        }
    }

    fn me_preferred(&self, g: usize) -> bool {
        self.groups[g].config.preferred == self.config.local
    }

    /// Rule 6: the peer reaches more ping nodes than we do.
    fn degraded(&self) -> bool {
        self.config.ping_configured
            && Self::alive(self.peer)
            && self.ping_peer.is_some_and(|p| self.ping_local < p)
    }

    /// Rule 3: whether we keep a group both nodes run.
    fn keeper(&self, g: usize) -> bool {
        match self.ping_peer.filter(|_| self.config.ping_configured) {
            Some(p) if p != self.ping_local => self.ping_local > p,
            _ => self.me_preferred(g),
        }
    }

    fn hard_offer(&self, g: usize) -> bool {
        self.groups[g].standby || self.degraded()
    }

    fn settled(&self, g: usize, now: Instant) -> bool {
        now >= self.groups[g].advert_since + self.config.settle
    }

    /// Our advert is published unchanged for `settle`: the peer has seen it.
    fn stable(&self, g: usize, now: Instant) -> bool {
        self.settled(g, now) && self.compute_advert(g) == self.groups[g].advert
    }

    /// Runs every rule after an input: fence, flags, per-group decisions, adverts.
    fn evaluate(&mut self, now: Instant) {
        for g in 0..self.groups.len() {
            self.update_flags(g, now);
            self.step_group(g, now);
        }
        self.update_fence(now);
        self.refresh_adverts(now);
    }

    /// The sticky offer (module doc): set by hard reasons, a wanting peer and every
    /// release; cleared when the peer holds the group, dies, or by the tie-break.
    fn update_flags(&mut self, g: usize, now: Instant) {
        let hard = self.hard_offer(g);
        let state = self.groups[g].state;
        let idle = matches!(state, GroupState::Stopped | GroupState::Failed { .. });
        let peer = self.peer_adverts[g].filter(|_| Self::alive(self.peer));
        let tie_break = peer.is_some_and(|p| {
            let peer_idle = matches!(p.state, AdvertState::Stopped | AdvertState::Failed);
            let peer_offers = p.offer || p.state == AdvertState::Failed;
            let peer_hard = (p.offer && !p.want) || p.state == AdvertState::Failed;
            let wins = if self.me_preferred(g) {
                peer_offers
            } else {
                peer_hard
            };
            peer_idle && wins
        });
        let settled = self.settled(g, now);
        let dead = self.peer == PeerState::Dead;
        let grp = &mut self.groups[g];
        if hard {
            grp.soft_offer = true;
        }
        if dead {
            grp.soft_offer = false;
        }
        let Some(p) = peer else { return };
        if p.state.holds() && !hard {
            grp.soft_offer = false;
        }
        if p.want && !p.offer && idle {
            grp.soft_offer = true;
        }
        // The tie-break acts on the advert the peer has had `settle` to see: not
        // when our stance changed in this very evaluation (not yet published).
        let published = self.compute_advert(g) == self.groups[g].advert;
        let grp = &mut self.groups[g];
        if grp.soft_offer
            && !hard
            && state == GroupState::Stopped
            && tie_break
            && settled
            && published
        {
            grp.soft_offer = false;
        }
    }

    /// Whether (and why) group `g`, `Stopped` here, may start now.
    fn may_start(&self, g: usize, now: Instant) -> Option<Reason> {
        let grp = &self.groups[g];
        if grp.standby {
            return None;
        }
        match self.peer {
            PeerState::Waiting => None,
            PeerState::Dead => self.may_take_from_dead(g).then_some(Reason::PeerDead),
            PeerState::Alive | PeerState::Late => {
                if self.degraded() || grp.soft_offer || !self.peer_sees_us {
                    return None;
                }
                let p = self.peer_adverts[g]?;
                match p.state {
                    AdvertState::Failed => Some(Reason::PeerFailed),
                    AdvertState::Stopped if p.offer => Some(Reason::PeerOffer),
                    AdvertState::Stopped
                        if self.me_preferred(g) && !p.want && self.stable(g, now) =>
                    {
                        Some(Reason::Preferred)
                    }
                    _ => None,
                }
            }
        }
    }

    /// Rule 2 with the Blocked rule: fenced when fencing is configured; never a
    /// group the dead peer last advertised Blocked unless it was fenced.
    fn may_take_from_dead(&self, g: usize) -> bool {
        let last_blocked = self.peer_adverts[g].is_some_and(|p| p.state == AdvertState::Blocked);
        match self.config.fence {
            Some(_) => self.fence == Fence::Done,
            None => !last_blocked,
        }
    }

    /// Whether (and why) group `g`, running or starting here, must be released.
    fn should_release(&self, g: usize) -> Option<Reason> {
        if self.groups[g].standby {
            return Some(Reason::Standby);
        }
        if !Self::alive(self.peer) {
            return None;
        }
        if self.degraded() {
            return Some(Reason::Ping);
        }
        let p = self.peer_adverts[g]?;
        match p.state {
            AdvertState::Starting | AdvertState::Running if !self.keeper(g) => {
                Some(Reason::Conflict)
            }
            AdvertState::Stopped if p.want && !p.offer => Some(Reason::PeerWant),
            _ => None,
        }
    }

    /// Decides for one group with nothing outstanding.
    fn step_group(&mut self, g: usize, now: Instant) {
        if self.groups[g].action.is_some() {
            return;
        }
        match self.groups[g].state {
            GroupState::Failed { until } if now >= until => {
                self.groups[g].soft_offer = true;
                self.set_state(g, GroupState::Stopped, Reason::BackoffDone);
                // Once more, now Stopped (a dead peer's group starts at once).
                self.step_group(g, now);
            }
            GroupState::Stopped => {
                if let Some(reason) = self.may_start(g, now) {
                    self.begin_start(g, now, reason);
                }
            }
            GroupState::Running => {
                if let Some(reason) = self.should_release(g) {
                    self.begin_stop(g, now, self.config_resources(g), AfterStop::Stopped, reason);
                } else {
                    self.step_monitor(g, now);
                }
            }
            // Starting/Stopping always have an action outstanding; Blocked is terminal.
            GroupState::Failed { .. } | GroupState::Blocked => {}
            state => panic!("group {g}: {state:?} with no action outstanding"),
        }
    }

    fn config_resources(&self, g: usize) -> u8 {
        self.groups[g].config.resources
    }

    fn begin_start(&mut self, g: usize, now: Instant, reason: Reason) {
        self.assert_may_start(g);
        self.set_state(g, GroupState::Starting { next: 0 }, reason);
        self.issue(g, now, 0, Op::Start);
    }

    /// The safety invariant, checked from a second path (the module doc).
    fn assert_may_start(&self, g: usize) {
        let peer = self.peer_adverts[g];
        if Self::alive(self.peer) {
            let p = peer.expect("start with an alive peer needs its advert");
            assert!(
                self.peer_sees_us,
                "group {g}: start while the peer may hold us dead"
            );
            assert!(
                !p.state.holds(),
                "group {g}: start while the peer advertises {:?}",
                p.state
            );
        } else {
            assert_eq!(
                self.peer,
                PeerState::Dead,
                "group {g}: start while the peer is {:?}",
                self.peer
            );
            assert!(
                self.config.fence.is_none() || self.fence == Fence::Done,
                "group {g}: start before fencing"
            );
            let blocked = peer.is_some_and(|p| p.state == AdvertState::Blocked);
            assert!(
                !blocked || self.fence == Fence::Done,
                "group {g}: start while the dead peer is Blocked"
            );
        }
    }

    /// Stops resources `0..next`, right to left, then `after`.
    fn begin_stop(&mut self, g: usize, now: Instant, next: u8, after: AfterStop, reason: Reason) {
        let grp = &mut self.groups[g];
        grp.soft_offer = true;
        grp.after_stop = after;
        grp.monitor = Monitor::Idle;
        grp.monitor_at = None;
        grp.stop_failures = 0;
        if next == 0 {
            self.finish_stop(g, now);
            return;
        }
        self.set_state(g, GroupState::Stopping { next }, reason);
        self.issue(g, now, next - 1, Op::Stop);
    }

    fn finish_stop(&mut self, g: usize, now: Instant) {
        let grp = &mut self.groups[g];
        match grp.after_stop {
            AfterStop::Stopped => self.set_state(g, GroupState::Stopped, Reason::Stopped),
            AfterStop::Failed => {
                let until = now + grp.backoff;
                grp.backoff = Duration::from_millis(
                    (grp.backoff.millis() * 2).min(self.config.backoff_max.millis()),
                );
                self.set_state(g, GroupState::Failed { until }, Reason::RolledBack);
            }
        }
    }

    fn on_start_done(&mut self, now: Instant, g: usize, next: u8, ok: bool) {
        if !ok {
            self.begin_stop(g, now, next + 1, AfterStop::Failed, Reason::StartFailed);
            return;
        }
        let started = next + 1;
        if let Some(reason) = self.should_release(g) {
            self.begin_stop(g, now, started, AfterStop::Stopped, reason);
        } else if started == self.config_resources(g) {
            let grp = &mut self.groups[g];
            grp.backoff = self.config.backoff_min;
            grp.want_cmd = false;
            grp.monitor_failures = 0;
            grp.monitor_at = grp.config.monitor.map(|m| now + m);
            self.set_state(g, GroupState::Running, Reason::Started);
        } else {
            self.groups[g].state = GroupState::Starting { next: started };
            self.issue(g, now, started, Op::Start);
        }
    }

    fn on_stop_done(&mut self, now: Instant, g: usize, next: u8, ok: bool) {
        if !ok {
            self.stop_failed(now, g, next);
            return;
        }
        self.groups[g].stop_failures = 0;
        let left = next - 1;
        if left == 0 {
            self.finish_stop(g, now);
        } else {
            self.groups[g].state = GroupState::Stopping { next: left };
            self.issue(g, now, left - 1, Op::Stop);
        }
    }

    /// Rule 8: retry the stop of resource `next - 1`; after the retries, Blocked.
    fn stop_failed(&mut self, now: Instant, g: usize, next: u8) {
        let grp = &mut self.groups[g];
        grp.stop_failures += 1;
        if grp.stop_failures <= self.config.stop_retries {
            self.issue(g, now, next - 1, Op::Stop);
            return;
        }
        grp.escalate = true;
        self.set_state(g, GroupState::Blocked, Reason::StopFailed);
        self.push(TakeoverEvent::Escalate { group: g as u8 });
    }

    /// Rule 9: check each resource in turn every `monitor` interval.
    fn step_monitor(&mut self, g: usize, now: Instant) {
        let grp = &self.groups[g];
        if grp.monitor == Monitor::Idle && grp.monitor_at.is_some_and(|t| now >= t) {
            self.groups[g].monitor = Monitor::Status(0);
            self.issue(g, now, 0, Op::Status);
        }
    }

    fn on_monitor_done(&mut self, now: Instant, g: usize, ok: bool) {
        let n = self.config_resources(g);
        match (self.groups[g].monitor, ok) {
            (Monitor::Status(r) | Monitor::RestartStart(r), true) if r + 1 < n => {
                self.groups[g].monitor = Monitor::Status(r + 1);
                self.issue(g, now, r + 1, Op::Status);
            }
            (Monitor::Status(_) | Monitor::RestartStart(_), true) => {
                let grp = &mut self.groups[g];
                grp.monitor = Monitor::Idle;
                grp.monitor_at = grp.config.monitor.map(|m| now + m);
            }
            (Monitor::Status(r), false) => {
                let grp = &mut self.groups[g];
                grp.monitor_failures += 1;
                if grp.monitor_failures >= grp.config.monitor_failures {
                    self.begin_stop(g, now, n, AfterStop::Failed, Reason::Monitor);
                } else {
                    grp.monitor = Monitor::RestartStop(r);
                    self.issue(g, now, r, Op::Stop);
                }
            }
            (Monitor::RestartStop(r), true) => {
                self.groups[g].monitor = Monitor::RestartStart(r);
                self.issue(g, now, r, Op::Start);
            }
            // The restart failed: the whole group goes (resources after `r` still
            // run; a resource that would not stop is stopped again in turn).
            (Monitor::RestartStop(_) | Monitor::RestartStart(_), false) => {
                self.begin_stop(g, now, n, AfterStop::Failed, Reason::Monitor);
            }
            (Monitor::Idle, _) => panic!("group {g}: monitor result while idle"),
        }
    }

    fn issue(&mut self, g: usize, now: Instant, resource: u8, op: Op) {
        let grp = &mut self.groups[g];
        assert!(grp.action.is_none(), "group {g}: second outstanding action");
        assert!(
            resource < grp.config.resources,
            "group {g}: resource {resource}"
        );
        let action = Action {
            group: g as u8,
            resource,
            op,
        };
        grp.action = Some(Pending {
            action,
            issued: now,
            polled: false,
        });
    }

    /// Changes a group's state; one `group_state` event when the advertised state changes.
    fn set_state(&mut self, g: usize, to: GroupState, reason: Reason) {
        let from = self.groups[g].state;
        self.groups[g].state = to;
        if from.advert() != to.advert() {
            let group = g as u8;
            self.push(TakeoverEvent::GroupState {
                group,
                from: from.advert(),
                to: to.advert(),
                reason,
            });
        }
    }

    /// Rule 2: fence a dead peer before taking anything over.
    fn update_fence(&mut self, now: Instant) {
        let Some(f) = self.config.fence else { return };
        if self.peer != PeerState::Dead {
            return;
        }
        match self.fence {
            Fence::Idle if self.wants_dead_takeover() => {
                let delayed = self
                    .config
                    .groups
                    .first()
                    .is_some_and(|g| g.preferred != self.config.local);
                self.fence = if delayed {
                    Fence::Delay(now + f.delay)
                } else {
                    Fence::Due
                };
            }
            Fence::Delay(t) | Fence::Retry(t) if now >= t => self.fence = Fence::Due,
            _ => {}
        }
    }

    /// Some group would start here if the dead peer were fenced.
    fn wants_dead_takeover(&self) -> bool {
        self.groups
            .iter()
            .any(|g| g.state == GroupState::Stopped && !g.standby)
    }

    fn refresh_adverts(&mut self, now: Instant) {
        for g in 0..self.groups.len() {
            let advert = self.compute_advert(g);
            let grp = &mut self.groups[g];
            if grp.advert != advert {
                grp.advert = advert;
                grp.advert_since = now;
                self.changed = true;
            }
        }
    }

    /// Our advert for group `g` (module doc: offer, willing, want).
    fn compute_advert(&self, g: usize) -> GroupAdvert {
        let grp = &self.groups[g];
        let hard = self.hard_offer(g);
        let failed = matches!(grp.state, GroupState::Failed { .. });
        let offer = hard || grp.soft_offer || failed;
        let want = if offer {
            !hard && !failed
        } else {
            grp.want_cmd || self.failback_want(g)
        };
        GroupAdvert {
            state: grp.state.advert(),
            offer,
            want,
        }
    }

    /// Rule 4: the preferred node asks for its group back.
    fn failback_want(&self, g: usize) -> bool {
        let peer_runs = self.peer_adverts[g]
            .is_some_and(|p| matches!(p.state, AdvertState::Starting | AdvertState::Running));
        self.config.auto_failback != AutoFailback::Off
            && self.me_preferred(g)
            && Self::alive(self.peer)
            && self.groups[g].state == GroupState::Stopped
            && peer_runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::String;
    use std::vec::Vec as StdVec;

    const SETTLE: u64 = 200;
    const BACKOFF_MIN: u64 = 1_000;
    const BACKOFF_MAX: u64 = 3_000;

    /// Node 0, one group preferred by `preferred` with two resources.
    fn config(local: u8, preferred: u8) -> TakeoverConfig {
        let mut groups = Vec::new();
        let group = GroupConfig {
            preferred,
            resources: 2,
            monitor: None,
            monitor_failures: 2,
        };
        groups.push(group).unwrap();
        TakeoverConfig {
            local,
            groups,
            auto_failback: AutoFailback::On,
            fence: None,
            ping_configured: false,
            stop_retries: 1,
            backoff_min: Duration::from_millis(BACKOFF_MIN),
            backoff_max: Duration::from_millis(BACKOFF_MAX),
            settle: Duration::from_millis(SETTLE),
        }
    }

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn adv(state: AdvertState, offer: bool, want: bool) -> GroupAdvert {
        GroupAdvert { state, offer, want }
    }

    const STOPPED: GroupAdvert = GroupAdvert {
        state: AdvertState::Stopped,
        offer: false,
        want: false,
    };
    const OFFER: GroupAdvert = GroupAdvert {
        state: AdvertState::Stopped,
        offer: true,
        want: false,
    };
    const RUNNING: GroupAdvert = GroupAdvert {
        state: AdvertState::Running,
        offer: false,
        want: false,
    };

    /// The peer, alive and seeing us, advertises `a` for group 0.
    fn peer(t: &mut Takeover, ms: u64, a: GroupAdvert) {
        t.handle_peer(at(ms), PeerState::Alive, Some(&[a]), true);
    }

    fn dead(t: &mut Takeover, ms: u64) {
        t.handle_peer(at(ms), PeerState::Dead, None, false);
    }

    fn action(op: Op, resource: u8) -> Option<Action> {
        Some(Action {
            group: 0,
            resource,
            op,
        })
    }

    fn ok(t: &mut Takeover, ms: u64, resource: u8, op: Op) {
        t.handle_action_done(at(ms), 0, resource, op, Outcome::Ok);
    }

    fn failed(t: &mut Takeover, ms: u64, resource: u8, op: Op) {
        t.handle_action_done(at(ms), 0, resource, op, Outcome::Failed { code: 1 });
    }

    fn events(t: &mut Takeover) -> StdVec<String> {
        let mut out = StdVec::new();
        while let Some(e) = t.poll_event() {
            let mut line = String::new();
            e.render(&mut line).unwrap();
            out.push(line);
        }
        out
    }

    fn advert(t: &Takeover) -> GroupAdvert {
        t.adverts()[0]
    }

    /// Preferred node 0 with the peer alive and Stopped, before `settle`.
    fn stopped() -> Takeover {
        let mut t = Takeover::new(config(0, 0), at(0));
        peer(&mut t, 10, STOPPED);
        assert_eq!(t.poll_action(), None);
        t
    }

    /// Starts group 0 at `SETTLE`; the first start is handed out.
    fn starting() -> Takeover {
        let mut t = stopped();
        t.handle_timeout(at(SETTLE));
        assert_eq!(t.poll_action(), action(Op::Start, 0));
        t
    }

    fn running() -> Takeover {
        let mut t = starting();
        ok(&mut t, 210, 0, Op::Start);
        assert_eq!(t.poll_action(), action(Op::Start, 1));
        ok(&mut t, 220, 1, Op::Start);
        assert_eq!(t.group_state(0), GroupState::Running);
        events(&mut t);
        t
    }

    /// Running, then `standby`: the last resource's stop is handed out.
    fn stopping() -> Takeover {
        let mut t = running();
        t.handle_command(at(300), Command::Standby(Which::All));
        assert_eq!(t.poll_action(), action(Op::Stop, 1));
        t
    }

    /// A start failed at once and was rolled back (Failed until 1230).
    fn failed_state() -> Takeover {
        let mut t = starting();
        failed(&mut t, 210, 0, Op::Start);
        assert_eq!(t.poll_action(), action(Op::Stop, 0));
        ok(&mut t, 230, 0, Op::Stop);
        assert_eq!(
            t.group_state(0),
            GroupState::Failed {
                until: at(230 + BACKOFF_MIN)
            }
        );
        t
    }

    fn blocked() -> Takeover {
        let mut t = stopping();
        failed(&mut t, 310, 1, Op::Stop);
        assert_eq!(t.poll_action(), action(Op::Stop, 1), "one retry");
        failed(&mut t, 320, 1, Op::Stop);
        assert_eq!(t.group_state(0), GroupState::Blocked);
        t
    }

    // ==== Tests for the Stopped state ====

    #[test]
    fn stopped_peer_waiting_starts_nothing() {
        let mut t = Takeover::new(config(0, 0), at(0));
        t.handle_timeout(at(5_000));
        assert_eq!(t.poll_action(), None);
        assert_eq!(t.group_state(0), GroupState::Stopped);
    }

    #[test]
    fn stopped_peer_dead_without_fence_starts_every_group() {
        let mut t = Takeover::new(config(1, 0), at(0));
        dead(&mut t, 1_000);
        assert_eq!(t.poll_action(), action(Op::Start, 0));
        assert_eq!(
            events(&mut t),
            ["group_state group=0 from=Stopped to=Starting reason=peer_dead"]
        );
    }

    #[test]
    fn stopped_preferred_waits_settle_then_starts() {
        let mut t = stopped();
        assert_eq!(t.poll_timeout(), Some(at(SETTLE)));
        t.handle_timeout(at(SETTLE - 1));
        assert_eq!(t.poll_action(), None);
        t.handle_timeout(at(SETTLE));
        assert_eq!(t.poll_action(), action(Op::Start, 0));
        assert_eq!(
            events(&mut t),
            ["group_state group=0 from=Stopped to=Starting reason=preferred"]
        );
    }

    #[test]
    fn stopped_not_preferred_waits_for_offer_then_starts_at_once() {
        let mut t = Takeover::new(config(1, 0), at(0));
        peer(&mut t, 10, STOPPED);
        t.handle_timeout(at(5_000));
        assert_eq!(t.poll_action(), None);
        peer(&mut t, 5_001, OFFER);
        assert_eq!(t.poll_action(), action(Op::Start, 0));
    }

    #[test]
    fn stopped_peer_holding_is_never_started() {
        for state in [
            AdvertState::Starting,
            AdvertState::Running,
            AdvertState::Stopping,
            AdvertState::Blocked,
        ] {
            for (offer, want) in [(false, false), (true, false), (true, true), (false, true)] {
                let mut t = Takeover::new(config(1, 0), at(0));
                peer(&mut t, 10, adv(state, offer, want));
                t.handle_timeout(at(5_000));
                assert_eq!(t.poll_action(), None, "{state:?} offer={offer} want={want}");
            }
        }
    }

    #[test]
    fn stopped_peer_not_seeing_us_starts_nothing() {
        let mut t = Takeover::new(config(1, 0), at(0));
        t.handle_peer(at(10), PeerState::Alive, Some(&[OFFER]), false);
        t.handle_timeout(at(5_000));
        assert_eq!(t.poll_action(), None);
        t.handle_peer(at(5_001), PeerState::Alive, Some(&[OFFER]), true);
        assert_eq!(t.poll_action(), action(Op::Start, 0));
    }

    #[test]
    fn stopped_peer_without_advert_for_group_starts_nothing() {
        let mut t = Takeover::new(config(0, 0), at(0));
        t.handle_peer(at(10), PeerState::Alive, Some(&[]), true);
        t.handle_timeout(at(5_000));
        assert_eq!(t.poll_action(), None);
    }

    #[test]
    fn stopped_dead_peer_last_blocked_without_fence_not_started() {
        let mut t = Takeover::new(config(1, 0), at(0));
        peer(&mut t, 10, adv(AdvertState::Blocked, false, false));
        dead(&mut t, 500);
        t.handle_timeout(at(5_000));
        assert_eq!(t.poll_action(), None);
    }

    #[test]
    fn stopped_dead_peer_fenced_first_retry_on_failure() {
        let mut c = config(0, 0);
        c.fence = Some(FenceConfig {
            delay: Duration::from_millis(100),
            retry: Duration::from_millis(300),
        });
        let mut t = Takeover::new(c, at(0));
        dead(&mut t, 1_000);
        assert_eq!(t.poll_action(), None, "no takeover before the fence");
        assert_eq!(t.poll_fence(), Some(()), "preferred node: no delay");
        assert_eq!(t.poll_fence(), None);
        t.handle_fence_done(at(1_050), false);
        assert_eq!(t.poll_action(), None, "a failed fence blocks the takeover");
        assert_eq!(t.poll_timeout(), Some(at(1_350)));
        t.handle_timeout(at(1_350));
        assert_eq!(t.poll_fence(), Some(()));
        t.handle_fence_done(at(1_400), true);
        assert!(t.fenced());
        assert_eq!(t.poll_action(), action(Op::Start, 0));
        assert_eq!(
            events(&mut t),
            [
                "fence_start",
                "fence result=failed",
                "fence_start",
                "fence result=ok",
                "group_state group=0 from=Stopped to=Starting reason=peer_dead"
            ]
        );
    }

    #[test]
    fn stopped_dead_peer_fence_delayed_when_not_preferred() {
        let mut c = config(1, 0);
        c.fence = Some(FenceConfig {
            delay: Duration::from_millis(100),
            retry: Duration::from_millis(300),
        });
        let mut t = Takeover::new(c, at(0));
        peer(&mut t, 10, RUNNING);
        dead(&mut t, 1_000);
        assert_eq!(t.poll_fence(), None);
        assert_eq!(t.poll_timeout(), Some(at(1_100)));
        t.handle_timeout(at(1_100));
        assert_eq!(t.poll_fence(), Some(()));
        // The peer comes back before the fence ends: its result no longer counts.
        peer(&mut t, 1_150, RUNNING);
        t.handle_fence_done(at(1_200), true);
        assert!(!t.fenced());
        assert_eq!(t.stale_inputs(), 1);
        assert_eq!(t.poll_action(), None);
    }

    #[test]
    fn stopped_peer_wants_we_offer() {
        let mut t = stopped();
        peer(&mut t, 20, adv(AdvertState::Stopped, false, true));
        assert_eq!(
            advert(&t),
            adv(AdvertState::Stopped, true, true),
            "willing offer"
        );
        t.handle_timeout(at(1_000));
        assert_eq!(t.poll_action(), None, "an offering node never starts");
    }

    #[test]
    fn stopped_failback_on_preferred_wants_group_back() {
        let mut t = Takeover::new(config(0, 0), at(0));
        peer(&mut t, 10, RUNNING);
        assert_eq!(advert(&t), adv(AdvertState::Stopped, false, true));
        assert!(t.take_changed());
        peer(&mut t, 500, OFFER);
        assert_eq!(
            t.poll_action(),
            action(Op::Start, 0),
            "the released group comes back"
        );
    }

    #[test]
    fn stopped_failback_off_no_want() {
        let mut c = config(0, 0);
        c.auto_failback = AutoFailback::Off;
        let mut t = Takeover::new(c, at(0));
        peer(&mut t, 10, RUNNING);
        assert_eq!(advert(&t), STOPPED);
        assert!(!t.changed());
    }

    #[test]
    fn stopped_both_offer_preferred_takes_it_after_settle() {
        // Both nodes stand by, then the preferred one's standby ends.
        let mut t = stopped();
        t.handle_command(at(20), Command::Standby(Which::All));
        peer(&mut t, 30, OFFER);
        t.handle_command(at(1_000), Command::Takeover(Which::All));
        assert_eq!(
            advert(&t),
            adv(AdvertState::Stopped, true, true),
            "willing first"
        );
        assert_eq!(t.poll_action(), None);
        t.handle_timeout(at(1_000 + SETTLE));
        assert_eq!(t.poll_action(), action(Op::Start, 0));
    }

    #[test]
    fn stopped_not_preferred_willing_waits_for_hard_offer() {
        let mut t = Takeover::new(config(1, 0), at(0));
        t.handle_command(at(0), Command::Standby(Which::All));
        t.handle_command(at(5), Command::Takeover(Which::All));
        peer(&mut t, 10, adv(AdvertState::Stopped, true, true));
        t.handle_timeout(at(1_000));
        assert_eq!(t.poll_action(), None, "the willing preferred node takes it");
        peer(&mut t, 1_001, OFFER);
        t.handle_timeout(at(1_001 + SETTLE));
        assert_eq!(
            t.poll_action(),
            action(Op::Start, 0),
            "a hard offer is taken"
        );
    }

    // ==== Tests for the Starting state ====

    #[test]
    fn starting_left_to_right_then_running() {
        let mut t = starting();
        assert_eq!(advert(&t).state, AdvertState::Starting);
        assert_eq!(t.poll_action(), None, "one action at a time");
        ok(&mut t, 230, 0, Op::Start);
        assert_eq!(t.poll_action(), action(Op::Start, 1));
        ok(&mut t, 260, 1, Op::Start);
        assert_eq!(t.group_state(0), GroupState::Running);
        assert_eq!(
            events(&mut t)[1..],
            [
                "takeover_step group=0 resource=0 op=start result=ok took_ms=30",
                "takeover_step group=0 resource=1 op=start result=ok took_ms=30",
                "group_state group=0 from=Starting to=Running reason=started"
            ]
        );
    }

    #[test]
    fn starting_failure_rolls_back_right_to_left_then_failed() {
        let mut t = starting();
        ok(&mut t, 210, 0, Op::Start);
        assert_eq!(t.poll_action(), action(Op::Start, 1));
        t.handle_action_done(at(220), 0, 1, Op::Start, Outcome::Timeout);
        assert_eq!(t.poll_action(), action(Op::Stop, 1), "the failed one too");
        ok(&mut t, 230, 1, Op::Stop);
        assert_eq!(t.poll_action(), action(Op::Stop, 0));
        ok(&mut t, 240, 0, Op::Stop);
        assert_eq!(
            t.group_state(0),
            GroupState::Failed {
                until: at(240 + BACKOFF_MIN)
            }
        );
        assert_eq!(advert(&t), adv(AdvertState::Failed, true, false));
        let lines = events(&mut t);
        assert!(lines.contains(
            &"takeover_step group=0 resource=1 op=start result=timeout took_ms=10".into()
        ));
        assert!(lines
            .contains(&"group_state group=0 from=Starting to=Stopping reason=start_failed".into()));
        assert!(lines
            .contains(&"group_state group=0 from=Stopping to=Failed reason=rolled_back".into()));
    }

    #[test]
    fn starting_standby_aborts_after_current_step() {
        let mut t = starting();
        t.handle_command(at(205), Command::Standby(Which::Local));
        assert_eq!(t.poll_action(), None, "the running step finishes first");
        ok(&mut t, 210, 0, Op::Start);
        assert_eq!(t.poll_action(), action(Op::Stop, 0));
        ok(&mut t, 220, 0, Op::Stop);
        assert_eq!(t.group_state(0), GroupState::Stopped);
        assert_eq!(advert(&t), OFFER);
    }

    // ==== Tests for the Running state ====

    #[test]
    fn running_standby_stops_right_to_left_then_offers() {
        let mut t = stopping();
        ok(&mut t, 310, 1, Op::Stop);
        assert_eq!(t.poll_action(), action(Op::Stop, 0));
        assert_eq!(advert(&t).state, AdvertState::Stopping);
        ok(&mut t, 320, 0, Op::Stop);
        assert_eq!(advert(&t), OFFER, "hard offer: the peer starts it");
        assert!(t.take_changed());
        peer(&mut t, 330, RUNNING);
        assert_eq!(advert(&t), OFFER, "standby stays until takeover");
    }

    #[test]
    fn stopped_standby_ends_when_the_peer_dies() {
        let mut t = stopping();
        ok(&mut t, 310, 1, Op::Stop);
        assert_eq!(t.poll_action(), action(Op::Stop, 0));
        ok(&mut t, 320, 0, Op::Stop);
        peer(&mut t, 330, RUNNING);
        assert_eq!(t.poll_action(), None, "standing by while the peer serves");
        dead(&mut t, 2_000);
        assert_eq!(
            t.poll_action(),
            action(Op::Start, 0),
            "the service comes back here when the peer dies"
        );
        ok(&mut t, 2_010, 0, Op::Start);
        assert_eq!(t.poll_action(), action(Op::Start, 1));
        ok(&mut t, 2_020, 1, Op::Start);
        peer(&mut t, 3_000, STOPPED);
        assert_eq!(t.poll_action(), None, "kept when the peer returns");
        assert_eq!(advert(&t).state, AdvertState::Running);
    }

    #[test]
    fn running_peer_want_releases_with_willing_offer() {
        let mut t = Takeover::new(config(1, 0), at(0));
        dead(&mut t, 10);
        assert_eq!(t.poll_action(), action(Op::Start, 0));
        ok(&mut t, 20, 0, Op::Start);
        assert_eq!(t.poll_action(), action(Op::Start, 1));
        ok(&mut t, 30, 1, Op::Start);
        peer(&mut t, 40, adv(AdvertState::Stopped, false, true));
        assert_eq!(t.poll_action(), action(Op::Stop, 1));
        ok(&mut t, 50, 1, Op::Stop);
        assert_eq!(t.poll_action(), action(Op::Stop, 0));
        ok(&mut t, 60, 0, Op::Stop);
        assert_eq!(advert(&t), adv(AdvertState::Stopped, true, true));
        peer(&mut t, 70, adv(AdvertState::Starting, false, false));
        assert_eq!(
            advert(&t),
            STOPPED,
            "the offer clears once the peer holds it"
        );
    }

    #[test]
    fn running_both_running_non_keeper_stops_keeper_stays() {
        let mut keeper = running();
        peer(&mut keeper, 300, RUNNING);
        assert_eq!(keeper.poll_action(), None, "the preferred node keeps it");
        let mut other = Takeover::new(config(1, 0), at(0));
        dead(&mut other, 10);
        assert_eq!(other.poll_action(), action(Op::Start, 0));
        ok(&mut other, 20, 0, Op::Start);
        assert_eq!(other.poll_action(), action(Op::Start, 1));
        ok(&mut other, 30, 1, Op::Start);
        events(&mut other);
        peer(&mut other, 300, RUNNING);
        assert_eq!(other.poll_action(), action(Op::Stop, 1));
        assert_eq!(
            events(&mut other),
            ["group_state group=0 from=Running to=Stopping reason=conflict"]
        );
    }

    #[test]
    fn running_ping_worse_than_peer_releases_and_keeps_on_conflict_when_better() {
        let mut c = config(0, 0);
        c.ping_configured = true;
        let mut t = Takeover::new(c.clone(), at(0));
        peer(&mut t, 10, STOPPED);
        t.handle_ping(at(10), 2, Some(2));
        t.handle_timeout(at(SETTLE));
        assert_eq!(t.poll_action(), action(Op::Start, 0));
        ok(&mut t, 210, 0, Op::Start);
        assert_eq!(t.poll_action(), action(Op::Start, 1));
        ok(&mut t, 220, 1, Op::Start);
        events(&mut t);
        t.handle_ping(at(300), 1, Some(2));
        assert_eq!(t.poll_action(), action(Op::Stop, 1));
        assert_eq!(
            events(&mut t),
            ["group_state group=0 from=Running to=Stopping reason=ping"]
        );
        assert_eq!(advert(&t), adv(AdvertState::Stopping, true, false));
        // The non-preferred node with better reachability keeps a conflict.
        let mut c1 = c;
        c1.local = 1;
        let mut other = Takeover::new(c1, at(0));
        other.handle_ping(at(0), 3, Some(1));
        dead(&mut other, 10);
        assert_eq!(other.poll_action(), action(Op::Start, 0));
        ok(&mut other, 20, 0, Op::Start);
        assert_eq!(other.poll_action(), action(Op::Start, 1));
        ok(&mut other, 30, 1, Op::Start);
        peer(&mut other, 40, RUNNING);
        assert_eq!(other.poll_action(), None);
    }

    #[test]
    fn running_monitor_restarts_then_gives_up() {
        let mut c = config(0, 0);
        c.groups[0].monitor = Some(Duration::from_millis(1_000));
        let mut t = Takeover::new(c, at(0));
        peer(&mut t, 10, STOPPED);
        t.handle_timeout(at(SETTLE));
        assert_eq!(t.poll_action(), action(Op::Start, 0));
        ok(&mut t, 210, 0, Op::Start);
        assert_eq!(t.poll_action(), action(Op::Start, 1));
        ok(&mut t, 220, 1, Op::Start);
        assert!(t.poll_timeout() <= Some(at(1_220)));
        t.handle_timeout(at(1_219));
        assert_eq!(t.poll_action(), None);
        t.handle_timeout(at(1_220));
        assert_eq!(t.poll_action(), action(Op::Status, 0));
        ok(&mut t, 1_230, 0, Op::Status);
        assert_eq!(t.poll_action(), action(Op::Status, 1));
        failed(&mut t, 1_240, 1, Op::Status);
        assert_eq!(t.poll_action(), action(Op::Stop, 1), "restart: stop");
        ok(&mut t, 1_250, 1, Op::Stop);
        assert_eq!(t.poll_action(), action(Op::Start, 1), "restart: start");
        ok(&mut t, 1_260, 1, Op::Start);
        assert_eq!(t.group_state(0), GroupState::Running);
        t.handle_timeout(at(2_260));
        assert_eq!(t.poll_action(), action(Op::Status, 0));
        failed(&mut t, 2_270, 0, Op::Status);
        assert_eq!(
            t.poll_action(),
            action(Op::Stop, 1),
            "second failure: the group goes"
        );
        ok(&mut t, 2_280, 1, Op::Stop);
        assert_eq!(t.poll_action(), action(Op::Stop, 0));
        ok(&mut t, 2_290, 0, Op::Stop);
        assert!(matches!(t.group_state(0), GroupState::Failed { .. }));
        assert_eq!(advert(&t).state, AdvertState::Failed);
    }

    // ==== Tests for the Stopping state ====

    #[test]
    fn stopping_failure_retried_then_blocked_and_escalated() {
        let mut t = blocked();
        assert_eq!(t.poll_escalate(), Some(0));
        assert_eq!(t.poll_escalate(), None, "once");
        assert_eq!(advert(&t).state, AdvertState::Blocked);
        let lines = events(&mut t);
        assert!(lines
            .contains(&"group_state group=0 from=Stopping to=Blocked reason=stop_failed".into()));
        assert!(lines.contains(&"escalate group=0".into()));
    }

    #[test]
    fn stopping_retry_success_continues() {
        let mut t = stopping();
        failed(&mut t, 310, 1, Op::Stop);
        assert_eq!(t.poll_action(), action(Op::Stop, 1));
        ok(&mut t, 320, 1, Op::Stop);
        assert_eq!(t.poll_action(), action(Op::Stop, 0));
    }

    // ==== Tests for the Failed state ====

    #[test]
    fn failed_backoff_over_becomes_willing_and_doubles() {
        let mut t = failed_state();
        assert!(t.poll_timeout() <= Some(at(1_230)));
        t.handle_timeout(at(1_229));
        assert!(matches!(t.group_state(0), GroupState::Failed { .. }));
        t.handle_timeout(at(1_230));
        assert_eq!(t.group_state(0), GroupState::Stopped);
        assert_eq!(advert(&t), adv(AdvertState::Stopped, true, true));
        // The peer failed too (hard): we take it again after settle, and the
        // next failure backs off twice as long.
        peer(&mut t, 1_240, adv(AdvertState::Failed, true, false));
        t.handle_timeout(at(1_230 + SETTLE));
        assert_eq!(t.poll_action(), action(Op::Start, 0));
        failed(&mut t, 1_500, 0, Op::Start);
        assert_eq!(t.poll_action(), action(Op::Stop, 0));
        ok(&mut t, 1_510, 0, Op::Stop);
        assert_eq!(
            t.group_state(0),
            GroupState::Failed {
                until: at(1_510 + 2 * BACKOFF_MIN)
            }
        );
    }

    #[test]
    fn failed_peer_failed_lets_us_start() {
        let mut t = Takeover::new(config(1, 0), at(0));
        peer(&mut t, 10, adv(AdvertState::Failed, true, false));
        assert_eq!(t.poll_action(), action(Op::Start, 0));
        assert_eq!(
            events(&mut t),
            ["group_state group=0 from=Stopped to=Starting reason=peer_failed"]
        );
    }

    #[test]
    fn failed_never_starts_during_backoff() {
        let mut t = failed_state();
        peer(&mut t, 300, OFFER);
        dead(&mut t, 400);
        t.handle_timeout(at(1_229));
        assert_eq!(t.poll_action(), None);
        t.handle_timeout(at(1_230));
        assert_eq!(
            t.poll_action(),
            action(Op::Start, 0),
            "dead peer: backoff over, start"
        );
    }

    // ==== Tests for the Blocked state ====

    #[test]
    fn blocked_stays_blocked_whatever_comes() {
        let mut t = blocked();
        peer(&mut t, 400, OFFER);
        dead(&mut t, 500);
        t.handle_command(at(600), Command::Takeover(Which::All));
        t.handle_timeout(at(10_000));
        assert_eq!(t.group_state(0), GroupState::Blocked);
        assert_eq!(t.poll_action(), None);
    }

    // ==== Tests for commands ====

    #[test]
    fn command_which_selects_local_or_foreign_groups() {
        let mut c = config(0, 0);
        c.groups
            .push(GroupConfig {
                preferred: 1,
                resources: 1,
                monitor: None,
                monitor_failures: 1,
            })
            .unwrap();
        let mut t = Takeover::new(c, at(0));
        t.handle_command(at(0), Command::Standby(Which::Foreign));
        assert_eq!(t.adverts()[..], [STOPPED, OFFER]);
        t.handle_command(at(1), Command::Takeover(Which::Local));
        assert_eq!(
            t.adverts()[..],
            [adv(AdvertState::Stopped, false, true), OFFER]
        );
    }

    // ==== Tests for stale and invalid inputs ====

    #[test]
    fn stale_action_results_are_counted_and_ignored() {
        let mut t = stopped();
        ok(&mut t, 20, 0, Op::Start);
        t.handle_action_done(at(20), 7, 0, Op::Start, Outcome::Ok);
        assert_eq!(t.stale_inputs(), 2, "idle group, unknown group");
        let mut t = Takeover::new(config(1, 0), at(0));
        dead(&mut t, 10);
        ok(&mut t, 11, 0, Op::Start);
        assert_eq!(t.stale_inputs(), 1, "not handed out yet");
        assert_eq!(t.poll_action(), action(Op::Start, 0));
        ok(&mut t, 12, 1, Op::Start);
        ok(&mut t, 12, 0, Op::Stop);
        assert_eq!(t.stale_inputs(), 3, "wrong resource, wrong op");
        ok(&mut t, 13, 0, Op::Start);
        ok(&mut t, 14, 0, Op::Start);
        assert_eq!(t.stale_inputs(), 4, "duplicate");
        assert_eq!(t.poll_action(), action(Op::Start, 1));
        t.handle_fence_done(at(15), true);
        assert_eq!(t.stale_inputs(), 5, "no fence running");
    }

    // ==== Tests for the configuration ====

    #[test]
    fn config_from_parsed_files() {
        let parsed = crate::config::Config::parse(
            include_str!("../../tests/fixtures/config/takeover/ha.cf"),
            include_str!("../../tests/fixtures/config/takeover/authkeys"),
            Some(include_str!(
                "../../tests/fixtures/config/takeover/haresources"
            )),
        )
        .unwrap();
        let c = TakeoverConfig::from_config(&parsed, 1).unwrap();
        assert_eq!(c.local, 1);
        assert_eq!(
            c.groups[..],
            [GroupConfig {
                preferred: 0,
                resources: 6,
                monitor: Some(Duration::from_secs(30)),
                monitor_failures: 3,
            }]
        );
        assert_eq!(c.auto_failback, AutoFailback::On);
        assert_eq!(
            c.fence,
            Some(FenceConfig {
                delay: Duration::from_secs(10),
                retry: FENCE_RETRY
            })
        );
        assert!(c.ping_configured);
        assert_eq!(c.stop_retries, 3);
        assert_eq!(c.backoff_min, Duration::from_secs(10));
        assert_eq!(c.settle, Duration::from_secs(60));
    }

    #[test]
    #[should_panic(expected = "time went backwards")]
    fn any_time_backwards_panics() {
        let mut t = stopped();
        t.handle_timeout(at(5));
    }

    #[test]
    fn adverts_change_flags_send_now() {
        let mut t = stopped();
        assert!(!t.take_changed());
        t.handle_timeout(at(SETTLE));
        assert!(t.changed());
        assert!(t.take_changed());
        assert!(!t.changed());
    }
}
