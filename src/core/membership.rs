//! Membership: is the peer alive, and over which links?
//!
//! Layer: pure state machine (no I/O, time passed in, no allocation after `new`).
//!
//! Inputs: [`Membership::handle_frame`] (a frame that passed the wire checks),
//! [`Membership::handle_frame_error`] (one that did not), and
//! [`Membership::handle_timeout`]. Outputs: [`Membership::poll_transmit`] (a
//! heartbeat to send on every link), [`Membership::poll_event`] (catalogue events)
//! and [`Membership::poll_timeout`] (the next deadline). Time must never go
//! backwards between calls (asserted).
//!
//! Peer states: `Waiting` (start-up, `initdead` running) -> `Alive` <-> `Late`
//! (silence > `warntime`) -> `Dead` (silence on every link > `deadtime`, or no
//! peer within `initdead`) -> `Alive` again when valid frames return. Each link is
//! `Down` until its first valid frame, then `Up`, and `Down` again after
//! `deadtime` of silence on that link. The peer is alive while any link delivers.
//!
//! ```text
//!   state    input                     next     event
//!   Waiting  valid frame               Alive    peer_state reason=heartbeat
//!   Waiting  PeerDead (initdead)       Dead     peer_state reason=initdead
//!   Alive    valid frame               Alive    (heartbeat_late if gap > warntime)
//!   Alive    PeerLate (warntime)       Late     peer_state reason=warntime
//!   Alive    PeerDead (deadtime)       Dead     peer_state reason=deadtime
//!   Late     valid frame               Alive    peer_state reason=heartbeat
//!   Late     PeerDead (deadtime)       Dead     peer_state reason=deadtime
//!   Dead     valid frame               Alive    peer_state reason=heartbeat
//!   any      refused frame             same     counted; frame_rejected per window
//! ```
//!
//! Other events: `heartbeat_late` when a valid frame arrives on an `Up` link more
//! than `warntime` after the previous one there; `peer_restarted` on a newer
//! epoch; `config_mismatch` (naming the files) on the first frame of each peer
//! epoch and whenever the peer's digest changes to a new mismatch, and
//! `config_match` when it becomes equal again; `frame_rejected` once per
//! [`FRAME_SUMMARY_WINDOW`] per (link, reason), never per frame.
//!
//! Timers ([`Timer`]): `Heartbeat` (next transmit, consumed by `poll_transmit`),
//! `PeerLate`, `PeerDead`, one `LinkDown` per link, `FrameSummary` (the end of the
//! current rejection-counting window). Invariants: a link's `LinkDown` deadline is
//! never later than `PeerDead` (any valid frame re-arms both), so every link is
//! `Down` before the peer is declared `Dead`; each due timer is handled once and
//! is stopped or moved past `now` by its handler (asserted).
//!
//! Replay and reflection: a frame from our own node index is a `Reflection`; a
//! frame whose `(boot_epoch, seq)` is not newer than the last accepted *on that
//! link* is a `Replay`, and so is one more than [`REPLAY_WINDOW`] behind the newest
//! seq accepted on any link (the same heartbeat legitimately arrives once per
//! link). An older `boot_epoch` than the peer's known one is a `Replay`; a newer
//! one is a restarted peer: its sequence starts again on every link.

use heapless::Deque;

use crate::config::digest::ConfigDigest;
use crate::time::{Duration, Instant};
use crate::wire::{Adverts, FrameError, GroupAdvert, Header, HeartbeatPayload, Kind, Repr};

use super::event::{Event, FileSet, LinkId, PeerReason};

/// Most links a node can have (media in ha.cf). Bounds every per-link array.
pub const LINKS_MAX: usize = 8;

/// How far (in seqs) a frame may lag the newest seq accepted on any link and still
/// be accepted on a link that has not seen it. 64 heartbeats is 3 s at the fastest
/// keepalive (50 ms): far more than the skew between Ethernet and a 9600-baud line
/// (one or two frames), far less than a replay captured minutes ago.
pub const REPLAY_WINDOW: u64 = 64;

/// Refused frames are summarised once per window and per (link, reason), so line
/// noise costs one log line per 10 s, never one per frame.
pub const FRAME_SUMMARY_WINDOW: Duration = Duration::from_secs(10);

/// Event queue capacity. The shell drains after every input; the worst single
/// input is a `handle_timeout` after a frozen loop: one `frame_rejected` per link
/// and reason (8 x 11 = 88), one `link_state` per link (8), `Alive->Late` and
/// `Late->Dead` (2): 98 events. A frame produces at most 5. 128 covers it; if a
/// caller does not drain, further events are dropped and counted
/// ([`Membership::events_dropped`]), never a panic and never an allocation.
pub const EVENTS_MAX: usize = 128;

/// Status bit in our heartbeat: we see the peer `Alive` or `Late`.
pub const STATUS_PEER_ALIVE: u8 = 1;

/// The peer, as this node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerState {
    /// Start-up: no frame yet, `initdead` running.
    Waiting,
    /// Valid heartbeats arrive.
    Alive,
    /// Silence longer than `warntime` (but shorter than `deadtime`).
    Late,
    /// Silence on every link longer than `deadtime` (or `initdead` at start-up).
    Dead,
}

impl PeerState {
    /// Every state, for exhaustive tests.
    pub const ALL: [PeerState; 4] = [
        PeerState::Waiting,
        PeerState::Alive,
        PeerState::Late,
        PeerState::Dead,
    ];

    /// Whether `self -> to` is an edge of the transition table (module doc), so
    /// tests and the simulation can check every event against one definition.
    pub fn may_become(self, to: PeerState) -> bool {
        use PeerState::*;
        matches!(
            (self, to),
            (Waiting, Alive)
                | (Waiting, Dead)
                | (Alive, Late)
                | (Alive, Dead)
                | (Late, Alive)
                | (Late, Dead)
                | (Dead, Alive)
        )
    }
}

/// One link, as this node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkState {
    /// Valid frames arrive on this link.
    Up,
    /// No valid frame yet, or none for `deadtime`.
    Down,
}

/// What the membership needs to know, fixed at start-up.
#[derive(Clone, Copy, Debug)]
pub struct MembershipConfig {
    /// Our index in the ha.cf `node` list.
    pub local: u8,
    /// The peer's index.
    pub peer: u8,
    /// Number of links (1..=LINKS_MAX).
    pub links: u8,
    /// Heartbeat interval.
    pub keepalive: Duration,
    /// Late-heartbeat warning threshold.
    pub warntime: Duration,
    /// Silence after which the peer (or a link) is dead.
    pub deadtime: Duration,
    /// Wait for the peer at start-up.
    pub initdead: Duration,
    /// Our boot generation.
    pub boot_epoch: u32,
    /// Our configuration digest (sent in every heartbeat, compared with the peer's).
    pub digest: ConfigDigest,
    /// The authkeys id that signs our frames.
    pub key: u8,
}

/// Per-link counters for `status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Valid frames accepted.
    pub rx_ok: u64,
    /// Frames refused, by `FrameError::index()`.
    pub rx_rejected: [u64; FrameError::ALL.len()],
    /// Largest gap between consecutive valid frames, ms (since start).
    pub gap_max_ms: u64,
    /// Last measured round trip (from `echo_ms`), ms.
    pub rtt_ms: Option<u64>,
}

/// The membership's timers. The declaration order is the order in which timers
/// due at the same instant are handled: links go down before the peer dies, so
/// the log reads "link down, link down, peer dead".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// A link's `deadtime` of silence.
    LinkDown(u8),
    /// The peer's `warntime` of silence.
    PeerLate,
    /// The peer's `deadtime` of silence (`initdead` while `Waiting`).
    PeerDead,
    /// The end of the rejected-frames counting window.
    FrameSummary,
    /// The next heartbeat to send (consumed by `poll_transmit`, not `handle_timeout`).
    Heartbeat,
}

impl Timer {
    /// Number of timers (slots in the table).
    const COUNT: usize = LINKS_MAX + 4;

    fn index(self) -> usize {
        match self {
            Timer::LinkDown(l) => l as usize,
            Timer::PeerLate => LINKS_MAX,
            Timer::PeerDead => LINKS_MAX + 1,
            Timer::FrameSummary => LINKS_MAX + 2,
            Timer::Heartbeat => LINKS_MAX + 3,
        }
    }

    fn from_index(i: usize) -> Timer {
        match i {
            l if l < LINKS_MAX => Timer::LinkDown(l as u8),
            l if l == LINKS_MAX => Timer::PeerLate,
            l if l == LINKS_MAX + 1 => Timer::PeerDead,
            l if l == LINKS_MAX + 2 => Timer::FrameSummary,
            l => {
                assert_eq!(l, LINKS_MAX + 3, "timer index out of range");
                Timer::Heartbeat
            }
        }
    }
}

/// One optional deadline per [`Timer`] (quinn's `TimerTable`).
#[derive(Clone, Debug)]
struct TimerTable([Option<Instant>; Timer::COUNT]);

impl TimerTable {
    fn get(&self, timer: Timer) -> Option<Instant> {
        self.0[timer.index()]
    }

    fn set(&mut self, timer: Timer, at: Instant) {
        self.0[timer.index()] = Some(at);
    }

    fn stop(&mut self, timer: Timer) {
        self.0[timer.index()] = None;
    }

    fn earliest(&self) -> Option<Instant> {
        self.0.iter().flatten().min().copied()
    }

    /// The `handle_timeout` timer due first at `now`: the smallest `(deadline,
    /// index)`, so ties go in declaration order. The heartbeat is not one of them.
    fn next_due(&self, now: Instant) -> Option<Timer> {
        let due = self
            .0
            .iter()
            .enumerate()
            .filter_map(|(i, at)| Some((at.filter(|at| *at <= now)?, i)));
        let handled = due.filter(|(_, i)| Timer::from_index(*i) != Timer::Heartbeat);
        handled.min().map(|(_, i)| Timer::from_index(i))
    }
}

/// What this node knows about one link.
#[derive(Clone, Copy, Debug)]
struct Link {
    state: LinkState,
    last_rx: Option<Instant>,
    /// Last seq accepted on this link in the peer's current epoch; 0 = none (the
    /// peer numbers from 1; a seq of 0 is always refused as a replay).
    seq_last: u64,
    stats: LinkStats,
    /// Rejections in the current summary window, by `FrameError::index()`.
    window: [u32; FrameError::ALL.len()],
}

impl Link {
    const NEW: Link = Link {
        state: LinkState::Down,
        last_rx: None,
        seq_last: 0,
        stats: LINK_STATS_ZERO,
        window: [0; FrameError::ALL.len()],
    };
}

const LINK_STATS_ZERO: LinkStats = LinkStats {
    rx_ok: 0,
    rx_rejected: [0; FrameError::ALL.len()],
    gap_max_ms: 0,
    rtt_ms: None,
};

/// What this node knows about the peer.
#[derive(Clone, Copy, Debug)]
struct Peer {
    state: PeerState,
    epoch: Option<u32>,
    /// Newest seq accepted on any link in `epoch`.
    seq_max: u64,
    last_rx: Option<Instant>,
    digest: Option<ConfigDigest>,
    /// The `sent_ms` of the last accepted heartbeat, echoed back for the RTT.
    echo_ms: u32,
    /// When that heartbeat arrived (to tell the peer how long we held its echo).
    echo_rx_at: Instant,
    /// The mismatch last reported (`None`: digests equal or not compared yet).
    mismatch: Option<FileSet>,
    /// The group adverts and ping count of the last accepted heartbeat.
    adverts: Option<(Adverts, u8)>,
    /// The last accepted heartbeat's status says the peer sees us alive.
    sees_us: bool,
}

/// How a frame that passed the replay checks relates to the peer's epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Epoch {
    /// The first epoch we see from the peer.
    First,
    /// The epoch we know.
    Same,
    /// A newer epoch: the peer restarted (carries the old one).
    Newer(u32),
}

/// The membership state machine. See the module doc.
pub struct Membership {
    config: MembershipConfig,
    started: Instant,
    /// Latest `now` seen, to assert time is monotonic.
    now_last: Instant,
    timers: TimerTable,
    peer: Peer,
    links: [Link; LINKS_MAX],
    /// Seq of the last heartbeat we sent (0: none yet).
    seq: u64,
    events: Deque<Event, EVENTS_MAX>,
    events_dropped: u64,
    /// Our group adverts, copied into every heartbeat (set by the takeover shell).
    adverts: Adverts,
    /// How many ping nodes we reach, copied into every heartbeat.
    ping_reachable: u8,
}

impl Membership {
    /// A node at start-up: peer `Waiting`, every link `Down`, first heartbeat due now.
    pub fn new(config: MembershipConfig, now: Instant) -> Membership {
        assert!(
            config.links >= 1 && config.links as usize <= LINKS_MAX,
            "links out of range: {}",
            config.links
        );
        assert_ne!(config.local, config.peer, "local and peer must differ");
        assert!(
            config.keepalive > Duration::ZERO && config.deadtime > Duration::ZERO,
            "zero timers: {config:?}"
        );
        let mut timers = TimerTable([None; Timer::COUNT]);
        timers.set(Timer::Heartbeat, now);
        timers.set(Timer::PeerDead, now + config.initdead);
        let peer = Peer {
            state: PeerState::Waiting,
            epoch: None,
            seq_max: 0,
            last_rx: None,
            digest: None,
            echo_ms: 0,
            echo_rx_at: now,
            mismatch: None,
            adverts: None,
            sees_us: false,
        };
        Membership {
            config,
            started: now,
            now_last: now,
            timers,
            peer,
            links: [Link::NEW; LINKS_MAX],
            seq: 0,
            events: Deque::new(),
            events_dropped: 0,
            adverts: Adverts::EMPTY,
            ping_reachable: 0,
        }
    }

    /// A frame that passed COBS, CRC, version and MAC arrived on `link`. Returns the
    /// reason if the core refuses it (reflection, unknown node, replay); refused
    /// frames are counted as by `handle_frame_error`.
    pub fn handle_frame(
        &mut self,
        now: Instant,
        link: LinkId,
        repr: &Repr,
    ) -> Result<(), FrameError> {
        self.tick(now);
        let l = self.link_index(link);
        match self.check_frame(l, &repr.header) {
            Err(error) => {
                self.count_rejected(now, l, error);
                Err(error)
            }
            Ok(epoch) => {
                self.accept(now, l, repr, epoch);
                Ok(())
            }
        }
    }

    /// A frame failed the wire checks on `link`: count it; summarised as one
    /// `frame_rejected` event per link and reason per window.
    pub fn handle_frame_error(&mut self, now: Instant, link: LinkId, error: FrameError) {
        self.tick(now);
        let l = self.link_index(link);
        self.count_rejected(now, l, error);
    }

    /// Handles every timer due at `now` (each exactly once).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        // Bounded: every handler stops its timer or moves it past `now`, so each
        // timer fires at most once per call.
        for _ in 0..Timer::COUNT {
            let Some(timer) = self.timers.next_due(now) else {
                return;
            };
            self.on_timer(now, timer);
            assert!(
                self.timers.get(timer).map_or(true, |at| at > now),
                "timer {timer:?} fired at {now} but was neither re-armed nor stopped"
            );
        }
        assert!(
            self.timers.next_due(now).is_none(),
            "timers still due after handling each once"
        );
    }

    /// A heartbeat to send on every link, when one is due at `now`.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Repr> {
        self.tick(now);
        let due = self
            .timers
            .get(Timer::Heartbeat)
            .expect("the heartbeat timer is always armed");
        if due > now {
            return None;
        }
        // Keep the cadence when slightly late; after a stall, one heartbeat and
        // start again from now (never a backlog of stale heartbeats).
        let cadence = due + self.config.keepalive;
        let next = if cadence > now {
            cadence
        } else {
            now + self.config.keepalive
        };
        self.timers.set(Timer::Heartbeat, next);
        self.seq += 1;
        let alive = matches!(self.peer.state, PeerState::Alive | PeerState::Late);
        let header = Header {
            kind: Kind::Heartbeat,
            key: self.config.key,
            node: self.config.local,
            boot_epoch: self.config.boot_epoch,
            seq: self.seq,
            flags: 0,
        };
        let heartbeat = HeartbeatPayload {
            sent_ms: now.millis() as u32,
            echo_ms: self.peer.echo_ms,
            status: if alive { STATUS_PEER_ALIVE } else { 0 },
            echo_hold_ms: u16::try_from(now.saturating_since(self.peer.echo_rx_at).millis())
                .unwrap_or(u16::MAX),
            digest: self.config.digest,
            adverts: self.adverts,
            ping_reachable: self.ping_reachable,
        };
        Some(Repr { header, heartbeat })
    }

    /// Makes the next heartbeat due at `now`, so a takeover state change reaches the
    /// peer after one one-way delay instead of up to a keepalive later. The cadence
    /// restarts from that heartbeat.
    pub fn send_now(&mut self, now: Instant) {
        self.tick(now);
        self.timers.set(Timer::Heartbeat, now);
    }

    /// Sets the group adverts copied into every heartbeat from now on (the takeover
    /// machine's `adverts()`). Panics above `GROUPS_MAX` groups (a config bug).
    pub fn set_local_adverts(&mut self, adverts: &[GroupAdvert]) {
        self.adverts = Adverts::from_slice(adverts).expect("at most GROUPS_MAX groups");
    }

    /// Sets how many ping nodes we reach, copied into every heartbeat from now on.
    pub fn set_local_ping_reachable(&mut self, reachable: u8) {
        self.ping_reachable = reachable;
    }

    /// The group adverts of the last heartbeat accepted from the peer (`None`
    /// before the first). They stay after the peer dies: the caller passes them
    /// on only while the peer is alive.
    pub fn peer_adverts(&self) -> Option<&[GroupAdvert]> {
        self.peer
            .adverts
            .as_ref()
            .map(|(adverts, _)| adverts.as_slice())
    }

    /// Whether the peer's last accepted heartbeat says it sees us alive (its
    /// `status`). Until it does, the peer may hold us dead and take every group,
    /// so the takeover starts nothing on its word.
    pub fn peer_sees_us(&self) -> bool {
        self.peer.adverts.is_some() && self.peer.sees_us
    }

    /// How many ping nodes the peer reaches, from its last accepted heartbeat.
    pub fn peer_ping_reachable(&self) -> Option<u8> {
        self.peer.adverts.map(|(_, ping)| ping)
    }

    /// The next catalogue event, oldest first.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The earliest deadline at which `handle_timeout` or `poll_transmit` has work.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.earliest()
    }

    /// The peer's state.
    pub fn peer_state(&self) -> PeerState {
        self.peer.state
    }

    /// A link's state.
    pub fn link_state(&self, link: LinkId) -> LinkState {
        self.links[self.link_index(link)].state
    }

    /// When the last valid frame arrived on `link`.
    pub fn link_last_rx(&self, link: LinkId) -> Option<Instant> {
        self.links[self.link_index(link)].last_rx
    }

    /// A link's counters.
    pub fn link_stats(&self, link: LinkId) -> &LinkStats {
        &self.links[self.link_index(link)].stats
    }

    /// The peer's boot generation, once seen.
    pub fn peer_epoch(&self) -> Option<u32> {
        self.peer.epoch
    }

    /// The peer's configuration digest, once seen.
    pub fn peer_digest(&self) -> Option<ConfigDigest> {
        self.peer.digest
    }

    /// When the last valid frame arrived on any link (for `status` and the sim).
    pub fn peer_last_rx(&self) -> Option<Instant> {
        self.peer.last_rx
    }

    /// The configuration this machine was built with.
    pub fn config(&self) -> &MembershipConfig {
        &self.config
    }

    /// Events dropped because the caller did not drain the queue (should stay 0).
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped
    }

    /// Seq of the last heartbeat returned by `poll_transmit` (0: none yet).
    pub fn seq_sent(&self) -> u64 {
        self.seq
    }

    fn tick(&mut self, now: Instant) {
        assert!(
            now >= self.now_last,
            "time went backwards: {now} < {}",
            self.now_last
        );
        self.now_last = now;
    }

    fn link_index(&self, link: LinkId) -> usize {
        assert!(
            link.0 < self.config.links,
            "link {} out of range ({} links)",
            link.0,
            self.config.links
        );
        link.0 as usize
    }

    fn push(&mut self, event: Event) {
        if self.events.push_back(event).is_err() {
            self.events_dropped += 1;
        }
    }

    /// Who sent it and is it fresh: the core's refusals (module doc).
    fn check_frame(&self, l: usize, header: &Header) -> Result<Epoch, FrameError> {
        if header.node == self.config.local {
            return Err(FrameError::Reflection);
        }
        if header.node != self.config.peer {
            return Err(FrameError::UnknownNode);
        }
        if header.kind != Kind::Heartbeat {
            return Err(FrameError::Payload);
        }
        if header.seq == 0 {
            return Err(FrameError::Replay);
        }
        let Some(known) = self.peer.epoch else {
            return Ok(Epoch::First);
        };
        if header.boot_epoch < known {
            return Err(FrameError::Replay);
        }
        if header.boot_epoch > known {
            return Ok(Epoch::Newer(known));
        }
        // Same epoch: a copy of the last frame on this link is a serial repeat;
        // otherwise strictly newer on this link, and within the window overall.
        if header.seq == self.links[l].seq_last {
            return Err(FrameError::Repeat);
        }
        if header.seq <= self.links[l].seq_last
            || header.seq.saturating_add(REPLAY_WINDOW) < self.peer.seq_max
        {
            return Err(FrameError::Replay);
        }
        Ok(Epoch::Same)
    }

    /// A valid, fresh frame: update sequence tracking, the link, the peer, the digest.
    fn accept(&mut self, now: Instant, l: usize, repr: &Repr, epoch: Epoch) {
        let header = &repr.header;
        if let Epoch::Newer(old_epoch) = epoch {
            self.push(Event::PeerRestarted {
                old_epoch,
                new_epoch: header.boot_epoch,
            });
            for link in self.links.iter_mut() {
                link.seq_last = 0;
            }
            self.peer.seq_max = 0;
        }
        self.peer.epoch = Some(header.boot_epoch);
        self.peer.seq_max = self.peer.seq_max.max(header.seq);
        self.links[l].seq_last = header.seq;
        self.on_link_rx(now, l);
        self.on_peer_rx(now);
        let heartbeat = &repr.heartbeat;
        if heartbeat.echo_ms != 0 {
            // Our send time came back after the peer held it `echo_hold_ms`.
            let since_ms = (now.millis() as u32).wrapping_sub(heartbeat.echo_ms);
            let rtt_ms = since_ms.saturating_sub(u32::from(heartbeat.echo_hold_ms));
            self.links[l].stats.rtt_ms = Some(u64::from(rtt_ms));
        }
        self.peer.echo_ms = heartbeat.sent_ms;
        self.peer.echo_rx_at = now;
        self.peer.adverts = Some((heartbeat.adverts, heartbeat.ping_reachable));
        self.peer.sees_us = heartbeat.status & STATUS_PEER_ALIVE != 0;
        self.on_digest(heartbeat.digest, epoch != Epoch::Same);
    }

    /// A valid frame on link `l`: counters, `Down -> Up`, late warning, its timer.
    fn on_link_rx(&mut self, now: Instant, l: usize) {
        let warntime_ms = self.config.warntime.millis();
        let link = &mut self.links[l];
        let gap_ms = link.last_rx.map(|t| now.saturating_since(t).millis());
        let was = link.state;
        link.stats.rx_ok += 1;
        link.stats.gap_max_ms = link.stats.gap_max_ms.max(gap_ms.unwrap_or(0));
        link.last_rx = Some(now);
        link.state = LinkState::Up;
        let link = LinkId(l as u8);
        match (was, gap_ms) {
            (LinkState::Down, _) => self.push(Event::LinkState {
                link,
                from: LinkState::Down,
                to: LinkState::Up,
                silence_ms: 0,
            }),
            (LinkState::Up, Some(interval_ms)) if interval_ms > warntime_ms => {
                self.push(Event::HeartbeatLate { link, interval_ms })
            }
            (LinkState::Up, _) => {}
        }
        self.timers
            .set(Timer::LinkDown(l as u8), now + self.config.deadtime);
    }

    /// A valid frame on any link: the peer is `Alive`, its timers start again.
    fn on_peer_rx(&mut self, now: Instant) {
        let silence_ms = self
            .peer
            .last_rx
            .map_or(0, |t| now.saturating_since(t).millis());
        self.peer.last_rx = Some(now);
        if self.peer.state != PeerState::Alive {
            self.set_peer_state(PeerState::Alive, PeerReason::Heartbeat, silence_ms);
        }
        self.timers.set(Timer::PeerLate, now + self.config.warntime);
        self.timers.set(Timer::PeerDead, now + self.config.deadtime);
    }

    /// Compares digests on the first frame of each epoch and on every change;
    /// reports each distinct mismatch once, and the return to equality.
    fn on_digest(&mut self, digest: ConfigDigest, new_epoch: bool) {
        if !new_epoch && self.peer.digest == Some(digest) {
            return;
        }
        self.peer.digest = Some(digest);
        let files = file_set(&self.config.digest, &digest);
        if files.0 != 0 {
            if new_epoch || self.peer.mismatch != Some(files) {
                self.peer.mismatch = Some(files);
                self.push(Event::ConfigMismatch { files });
            }
        } else if self.peer.mismatch.take().is_some() {
            self.push(Event::ConfigMatch);
        }
    }

    /// One refused frame on link `l`; opens a summary window if none is open.
    fn count_rejected(&mut self, now: Instant, l: usize, error: FrameError) {
        let link = &mut self.links[l];
        link.stats.rx_rejected[error.index()] += 1;
        if error == FrameError::Repeat {
            return; // expected on serial: counted, never reported as a rejection
        }
        link.window[error.index()] = link.window[error.index()].saturating_add(1);
        if self.timers.get(Timer::FrameSummary).is_none() {
            self.timers
                .set(Timer::FrameSummary, now + FRAME_SUMMARY_WINDOW);
        }
    }

    fn on_timer(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::LinkDown(l) => self.on_link_down(now, l as usize),
            Timer::PeerLate => self.on_peer_late(now),
            Timer::PeerDead => self.on_peer_dead(now),
            Timer::FrameSummary => self.on_frame_summary(),
            Timer::Heartbeat => unreachable!("the heartbeat timer is consumed by poll_transmit"),
        }
    }

    /// `deadtime` of silence on one link: `Up -> Down`.
    fn on_link_down(&mut self, now: Instant, l: usize) {
        self.timers.stop(Timer::LinkDown(l as u8));
        let link = &mut self.links[l];
        assert_eq!(
            link.state,
            LinkState::Up,
            "LinkDown armed on a link that is not Up"
        );
        link.state = LinkState::Down;
        let silence_ms = now
            .saturating_since(link.last_rx.expect("an Up link has received"))
            .millis();
        self.push(Event::LinkState {
            link: LinkId(l as u8),
            from: LinkState::Up,
            to: LinkState::Down,
            silence_ms,
        });
    }

    /// `warntime` of silence on every link: `Alive -> Late`.
    fn on_peer_late(&mut self, now: Instant) {
        self.timers.stop(Timer::PeerLate);
        assert_eq!(
            self.peer.state,
            PeerState::Alive,
            "PeerLate armed while not Alive"
        );
        let silence_ms = now
            .saturating_since(self.peer.last_rx.expect("Alive peer has sent"))
            .millis();
        self.set_peer_state(PeerState::Late, PeerReason::Warntime, silence_ms);
    }

    /// `deadtime` (or `initdead` while `Waiting`) of silence: the peer is `Dead`.
    fn on_peer_dead(&mut self, now: Instant) {
        self.timers.stop(Timer::PeerDead);
        self.timers.stop(Timer::PeerLate);
        let links = &self.links[..self.config.links as usize];
        assert!(
            links.iter().all(|l| l.state == LinkState::Down),
            "peer dead while a link is Up"
        );
        let (reason, since) = match self.peer.state {
            PeerState::Waiting => (PeerReason::Initdead, self.started),
            PeerState::Alive | PeerState::Late => (
                PeerReason::Deadtime,
                self.peer.last_rx.expect("Alive peer has sent"),
            ),
            PeerState::Dead => unreachable!("PeerDead armed while Dead"),
        };
        self.set_peer_state(
            PeerState::Dead,
            reason,
            now.saturating_since(since).millis(),
        );
    }

    /// End of the counting window: one event per (link, reason) seen in it.
    fn on_frame_summary(&mut self) {
        self.timers.stop(Timer::FrameSummary);
        let window_s = (FRAME_SUMMARY_WINDOW.millis() / 1000) as u32;
        for l in 0..self.config.links as usize {
            for reason in FrameError::ALL {
                let count = core::mem::take(&mut self.links[l].window[reason.index()]);
                if count > 0 {
                    self.push(Event::FrameRejected {
                        link: LinkId(l as u8),
                        reason,
                        count,
                        window_s,
                    });
                }
            }
        }
    }

    /// The one place the peer state changes.
    fn set_peer_state(&mut self, to: PeerState, reason: PeerReason, silence_ms: u64) {
        let from = self.peer.state;
        assert!(
            from.may_become(to),
            "illegal peer transition {from:?} -> {to:?}"
        );
        self.peer.state = to;
        self.push(Event::PeerState {
            from,
            to,
            reason,
            silence_ms,
        });
    }
}

/// Which files differ between two digests.
fn file_set(ours: &ConfigDigest, theirs: &ConfigDigest) -> FileSet {
    let mut bits = 0;
    if ours.ha_cf != theirs.ha_cf {
        bits |= FileSet::HA_CF;
    }
    if ours.haresources != theirs.haresources {
        bits |= FileSet::HARESOURCES;
    }
    if ours.authkeys != theirs.authkeys {
        bits |= FileSet::AUTHKEYS;
    }
    FileSet(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEPALIVE: u64 = 100;
    const WARNTIME: u64 = 300;
    const DEADTIME: u64 = 500;
    const INITDEAD: u64 = 1000;
    const PEER_EPOCH: u32 = 7;
    const ETH: LinkId = LinkId(0);
    const SERIAL: LinkId = LinkId(1);

    fn config() -> MembershipConfig {
        MembershipConfig {
            local: 0,
            peer: 1,
            links: 2,
            keepalive: Duration::from_millis(KEEPALIVE),
            warntime: Duration::from_millis(WARNTIME),
            deadtime: Duration::from_millis(DEADTIME),
            initdead: Duration::from_millis(INITDEAD),
            boot_epoch: 3,
            digest: ConfigDigest {
                ha_cf: 1,
                haresources: 2,
                authkeys: 3,
            },
            key: 1,
        }
    }

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    /// A heartbeat from the peer, as the wire layer would hand it over.
    fn frame(epoch: u32, seq: u64) -> Repr {
        Repr {
            header: Header {
                kind: Kind::Heartbeat,
                key: 1,
                node: 1,
                boot_epoch: epoch,
                seq,
                flags: 0,
            },
            heartbeat: HeartbeatPayload {
                sent_ms: 1000u32.wrapping_add(seq as u32),
                echo_ms: 0,
                status: 1,
                echo_hold_ms: 0,
                digest: config().digest,
                adverts: Adverts::EMPTY,
                ping_reachable: 0,
            },
        }
    }

    /// `rx!(m, time T, link L, seq S [, epoch E])`: deliver a peer heartbeat.
    macro_rules! rx {
        ($m:expr, time $t:expr, link $l:expr, seq $s:expr) => {
            rx!($m, time $t, link $l, seq $s, epoch PEER_EPOCH)
        };
        ($m:expr, time $t:expr, link $l:expr, seq $s:expr, epoch $e:expr) => {
            $m.handle_frame(at($t), $l, &frame($e, $s))
        };
    }

    /// `tx!(m, time T)`: the heartbeat due at T, if any.
    macro_rules! tx {
        ($m:expr, time $t:expr) => {
            $m.poll_transmit(at($t))
        };
    }

    /// `timeout!(m, time T)`: handle the timers due at T.
    macro_rules! timeout {
        ($m:expr, time $t:expr) => {
            $m.handle_timeout(at($t))
        };
    }

    /// Drains every event.
    #[track_caller]
    fn events(m: &mut Membership) -> Vec<Event> {
        core::iter::from_fn(|| m.poll_event()).collect()
    }

    fn peer(from: PeerState, to: PeerState, reason: PeerReason, silence_ms: u64) -> Event {
        Event::PeerState {
            from,
            to,
            reason,
            silence_ms,
        }
    }

    fn link(link: LinkId, from: LinkState, to: LinkState, silence_ms: u64) -> Event {
        Event::LinkState {
            link,
            from,
            to,
            silence_ms,
        }
    }

    fn waiting() -> Membership {
        Membership::new(config(), at(0))
    }

    /// Peer Alive since t=100 on eth (seq 1), events drained.
    fn alive() -> Membership {
        let mut m = waiting();
        assert_eq!(rx!(m, time 100, link ETH, seq 1), Ok(()));
        events(&mut m);
        assert_eq!(m.peer_state(), PeerState::Alive);
        m
    }

    /// Peer Late since t=400 (last frame at 100), events drained.
    fn late() -> Membership {
        let mut m = alive();
        timeout!(m, time 400);
        assert_eq!(
            events(&mut m),
            vec![peer(
                PeerState::Alive,
                PeerState::Late,
                PeerReason::Warntime,
                300
            )]
        );
        m
    }

    /// Peer Dead since t=600 (last frame at 100), events drained.
    fn dead() -> Membership {
        let mut m = late();
        timeout!(m, time 600);
        let got = events(&mut m);
        assert_eq!(
            got.last(),
            Some(&peer(
                PeerState::Late,
                PeerState::Dead,
                PeerReason::Deadtime,
                500
            ))
        );
        m
    }

    // ==== Tests for the Waiting state ====

    #[test]
    fn waiting_new_heartbeat_due_now() {
        let mut m = waiting();
        assert_eq!(m.poll_timeout(), Some(at(0)));
        let hb = tx!(m, time 0).expect("first heartbeat due at start");
        assert_eq!(hb.header.seq, 1);
        assert_eq!(hb.header.node, 0);
        assert_eq!(hb.header.boot_epoch, 3);
        assert_eq!(hb.header.kind, Kind::Heartbeat);
        assert_eq!(hb.heartbeat.status, 0);
        assert_eq!(tx!(m, time 0), None);
        assert_eq!(m.poll_timeout(), Some(at(KEEPALIVE)));
        assert_eq!(m.peer_state(), PeerState::Waiting);
        assert_eq!(m.link_state(ETH), LinkState::Down);
    }

    #[test]
    fn waiting_frame_becomes_alive() {
        let mut m = waiting();
        assert_eq!(rx!(m, time 250, link SERIAL, seq 1), Ok(()));
        assert_eq!(
            events(&mut m),
            vec![
                link(SERIAL, LinkState::Down, LinkState::Up, 0),
                peer(
                    PeerState::Waiting,
                    PeerState::Alive,
                    PeerReason::Heartbeat,
                    0
                ),
            ]
        );
        assert_eq!(m.peer_epoch(), Some(PEER_EPOCH));
        assert_eq!(m.link_last_rx(SERIAL), Some(at(250)));
        assert_eq!(m.link_state(ETH), LinkState::Down);
    }

    #[test]
    fn waiting_initdead_becomes_dead() {
        let mut m = waiting();
        timeout!(m, time INITDEAD - 1);
        assert_eq!(events(&mut m), vec![]);
        timeout!(m, time INITDEAD);
        assert_eq!(
            events(&mut m),
            vec![peer(
                PeerState::Waiting,
                PeerState::Dead,
                PeerReason::Initdead,
                INITDEAD
            )]
        );
    }

    #[test]
    fn waiting_reflection_refused() {
        let mut m = waiting();
        let mut repr = frame(PEER_EPOCH, 1);
        repr.header.node = 0;
        assert_eq!(
            m.handle_frame(at(10), ETH, &repr),
            Err(FrameError::Reflection)
        );
        assert_eq!(m.peer_state(), PeerState::Waiting);
        assert_eq!(
            m.link_stats(ETH).rx_rejected[FrameError::Reflection.index()],
            1
        );
        assert_eq!(m.peer_epoch(), None);
    }

    #[test]
    fn waiting_unknown_node_refused() {
        let mut m = waiting();
        let mut repr = frame(PEER_EPOCH, 1);
        repr.header.node = 5;
        assert_eq!(
            m.handle_frame(at(10), ETH, &repr),
            Err(FrameError::UnknownNode)
        );
        assert_eq!(m.peer_state(), PeerState::Waiting);
    }

    #[test]
    fn waiting_unknown_kind_refused() {
        let mut m = waiting();
        let mut repr = frame(PEER_EPOCH, 1);
        repr.header.kind = Kind::Unknown(9);
        assert_eq!(m.handle_frame(at(10), ETH, &repr), Err(FrameError::Payload));
        assert_eq!(m.peer_state(), PeerState::Waiting);
    }

    #[test]
    fn waiting_seq_zero_refused() {
        let mut m = waiting();
        assert_eq!(rx!(m, time 10, link ETH, seq 0), Err(FrameError::Replay));
        assert_eq!(m.peer_state(), PeerState::Waiting);
        assert_eq!(
            rx!(m, time 20, link SERIAL, seq 0, epoch PEER_EPOCH + 1),
            Err(FrameError::Replay)
        );
    }

    // ==== Tests for the Alive state ====

    #[test]
    fn alive_next_frame_rearms_timers() {
        let mut m = alive();
        assert_eq!(rx!(m, time 200, link ETH, seq 2), Ok(()));
        timeout!(m, time 499);
        assert_eq!(events(&mut m), vec![]);
        assert_eq!(m.peer_state(), PeerState::Alive);
        assert_eq!(m.link_stats(ETH).gap_max_ms, 100);
        assert_eq!(m.link_stats(ETH).rx_ok, 2);
    }

    #[test]
    fn alive_same_frame_other_link_accepted() {
        let mut m = alive();
        assert_eq!(rx!(m, time 110, link SERIAL, seq 1), Ok(()));
        assert_eq!(
            events(&mut m),
            vec![link(SERIAL, LinkState::Down, LinkState::Up, 0)]
        );
    }

    #[test]
    fn alive_replay_same_link_refused() {
        let mut m = alive();
        assert_eq!(rx!(m, time 160, link ETH, seq 2), Ok(()));
        assert_eq!(rx!(m, time 170, link ETH, seq 1), Err(FrameError::Replay));
        assert_eq!(m.link_stats(ETH).rx_rejected[FrameError::Replay.index()], 1);
        assert_eq!(m.link_stats(ETH).rx_ok, 2);
    }

    #[test]
    fn alive_repeat_of_last_frame_ignored_without_refresh() {
        let mut m = alive();
        assert_eq!(rx!(m, time 150, link ETH, seq 1), Err(FrameError::Repeat));
        assert_eq!(m.link_stats(ETH).rx_rejected[FrameError::Repeat.index()], 1);
        assert_eq!(m.link_stats(ETH).rx_ok, 1);
        // A repeat proves nothing new: the deadlines still run from the original.
        assert_eq!(m.peer_last_rx(), Some(at(100)));
        // And it is never summarised as a rejection.
        timeout!(m, time 150 + FRAME_SUMMARY_WINDOW.millis());
        assert!(!events(&mut m)
            .iter()
            .any(|e| matches!(e, Event::FrameRejected { .. })));
    }

    #[test]
    fn alive_old_seq_other_link_beyond_window_refused() {
        let mut m = alive();
        let newest = 1 + REPLAY_WINDOW + 10;
        assert_eq!(rx!(m, time 150, link ETH, seq newest), Ok(()));
        assert_eq!(
            rx!(m, time 160, link SERIAL, seq newest - REPLAY_WINDOW - 1),
            Err(FrameError::Replay)
        );
        assert_eq!(
            rx!(m, time 170, link SERIAL, seq newest - REPLAY_WINDOW),
            Ok(())
        );
    }

    #[test]
    fn alive_older_epoch_refused() {
        let mut m = alive();
        assert_eq!(
            rx!(m, time 150, link SERIAL, seq 99, epoch PEER_EPOCH - 1),
            Err(FrameError::Replay)
        );
        assert_eq!(m.link_state(SERIAL), LinkState::Down);
        assert_eq!(m.peer_epoch(), Some(PEER_EPOCH));
    }

    #[test]
    fn alive_newer_epoch_restarts_sequence() {
        let mut m = alive();
        assert_eq!(rx!(m, time 150, link ETH, seq 50), Ok(()));
        assert_eq!(
            rx!(m, time 200, link ETH, seq 1, epoch PEER_EPOCH + 1),
            Ok(())
        );
        assert_eq!(
            events(&mut m),
            vec![Event::PeerRestarted {
                old_epoch: PEER_EPOCH,
                new_epoch: PEER_EPOCH + 1
            }]
        );
        assert_eq!(m.peer_state(), PeerState::Alive);
        assert_eq!(
            rx!(m, time 210, link SERIAL, seq 1, epoch PEER_EPOCH + 1),
            Ok(())
        );
        assert_eq!(rx!(m, time 220, link ETH, seq 51), Err(FrameError::Replay));
    }

    #[test]
    fn alive_late_gap_warns_heartbeat_late() {
        let mut m = alive();
        assert_eq!(rx!(m, time 100 + WARNTIME, link ETH, seq 2), Ok(()));
        assert_eq!(events(&mut m), vec![]);
        assert_eq!(
            rx!(m, time 100 + 2 * WARNTIME - 1, link SERIAL, seq 3),
            Ok(())
        );
        events(&mut m);
        assert_eq!(rx!(m, time 100 + 2 * WARNTIME + 1, link ETH, seq 4), Ok(()));
        assert_eq!(
            events(&mut m),
            vec![Event::HeartbeatLate {
                link: ETH,
                interval_ms: WARNTIME + 1
            }]
        );
    }

    #[test]
    fn alive_warntime_exactly_becomes_late() {
        let mut m = alive();
        timeout!(m, time 100 + WARNTIME - 1);
        assert_eq!(m.peer_state(), PeerState::Alive);
        timeout!(m, time 100 + WARNTIME);
        assert_eq!(
            events(&mut m),
            vec![peer(
                PeerState::Alive,
                PeerState::Late,
                PeerReason::Warntime,
                WARNTIME
            )]
        );
    }

    #[test]
    fn alive_frozen_loop_late_links_down_then_dead() {
        let mut m = alive();
        assert_eq!(rx!(m, time 100, link SERIAL, seq 1), Ok(()));
        events(&mut m);
        timeout!(m, time 5000);
        assert_eq!(
            events(&mut m),
            vec![
                peer(
                    PeerState::Alive,
                    PeerState::Late,
                    PeerReason::Warntime,
                    4900
                ),
                link(ETH, LinkState::Up, LinkState::Down, 4900),
                link(SERIAL, LinkState::Up, LinkState::Down, 4900),
                peer(PeerState::Late, PeerState::Dead, PeerReason::Deadtime, 4900),
            ]
        );
        timeout!(m, time 5000);
        assert_eq!(events(&mut m), vec![]);
    }

    #[test]
    fn alive_frozen_loop_frames_first_keeps_alive() {
        let mut m = alive();
        assert_eq!(rx!(m, time 5000, link ETH, seq 2), Ok(()));
        timeout!(m, time 5000);
        assert_eq!(m.peer_state(), PeerState::Alive);
        assert_eq!(
            events(&mut m),
            vec![Event::HeartbeatLate {
                link: ETH,
                interval_ms: 4900
            }]
        );
    }

    #[test]
    fn alive_heartbeat_carries_status_and_echo() {
        let mut m = alive();
        let hb = tx!(m, time 100).expect("due");
        assert_eq!(hb.heartbeat.status, STATUS_PEER_ALIVE);
        assert_eq!(hb.heartbeat.echo_ms, 1001);
        assert_eq!(hb.heartbeat.sent_ms, 100);
        assert_eq!(hb.heartbeat.digest, config().digest);
        assert_eq!(hb.header.key, 1);
    }

    #[test]
    fn alive_heartbeat_carries_adverts_and_ping() {
        use crate::wire::AdvertState;
        let mut m = alive();
        let ours = [GroupAdvert {
            state: AdvertState::Running,
            offer: false,
            want: true,
        }];
        m.set_local_adverts(&ours);
        m.set_local_ping_reachable(2);
        let hb = tx!(m, time 100).expect("due");
        assert_eq!(hb.heartbeat.adverts.as_slice(), &ours);
        assert_eq!(hb.heartbeat.ping_reachable, 2);
    }

    #[test]
    fn alive_peer_adverts_kept_from_last_frame() {
        use crate::wire::AdvertState;
        let mut m = alive();
        assert_eq!(m.peer_adverts(), Some(&[][..]));
        let theirs = [GroupAdvert {
            state: AdvertState::Stopped,
            offer: true,
            want: false,
        }];
        let mut repr = frame(PEER_EPOCH, 2);
        repr.heartbeat.adverts = Adverts::from_slice(&theirs).unwrap();
        repr.heartbeat.ping_reachable = 1;
        assert_eq!(m.handle_frame(at(150), ETH, &repr), Ok(()));
        assert_eq!(m.peer_adverts(), Some(&theirs[..]));
        assert_eq!(m.peer_ping_reachable(), Some(1));
        assert!(m.peer_sees_us(), "frame() carries status 1");
        repr = frame(PEER_EPOCH, 3);
        repr.heartbeat.status = 0;
        assert_eq!(m.handle_frame(at(160), ETH, &repr), Ok(()));
        assert!(!m.peer_sees_us());
    }

    #[test]
    fn alive_send_now_makes_heartbeat_due_then_cadence_restarts() {
        let mut m = alive();
        assert!(tx!(m, time 100).is_some());
        assert!(tx!(m, time 130).is_none());
        m.send_now(at(130));
        assert!(tx!(m, time 130).is_some());
        assert!(tx!(m, time 200).is_none());
        assert!(tx!(m, time 230).is_some());
    }

    #[test]
    fn alive_echo_measures_rtt_across_wrap() {
        let mut m = alive();
        let mut repr = frame(PEER_EPOCH, 2);
        repr.heartbeat.echo_ms = u32::MAX - 4;
        let now = (1u64 << 32) + 5;
        assert_eq!(m.handle_frame(at(now), ETH, &repr), Ok(()));
        assert_eq!(m.link_stats(ETH).rtt_ms, Some(10));
    }

    #[test]
    fn alive_echo_hold_time_excluded_from_rtt() {
        let mut m = alive();
        // The peer held our frame (sent at 1000) 180 ms before answering at 1200.
        let mut repr = frame(PEER_EPOCH, 2);
        repr.heartbeat.echo_ms = 1000;
        repr.heartbeat.echo_hold_ms = 180;
        assert_eq!(m.handle_frame(at(1200), ETH, &repr), Ok(()));
        assert_eq!(m.link_stats(ETH).rtt_ms, Some(20));
        // And we tell the peer how long we hold its frame: from 1200 to our send.
        timeout!(m, time 1250);
        let hb = m.poll_transmit(at(1250)).or_else(|| {
            let due = m.poll_timeout().expect("heartbeat armed");
            m.poll_transmit(due)
        });
        let hb = hb.expect("a heartbeat");
        assert_eq!(hb.heartbeat.echo_ms, repr.heartbeat.sent_ms);
        assert!(hb.heartbeat.echo_hold_ms >= 50, "{:?}", hb.heartbeat);
    }

    #[test]
    fn alive_digest_mismatch_reported_once_then_match() {
        let mut m = alive();
        let mut repr = frame(PEER_EPOCH, 2);
        repr.heartbeat.digest.haresources = 99;
        assert_eq!(m.handle_frame(at(200), ETH, &repr), Ok(()));
        let files = FileSet(FileSet::HARESOURCES);
        assert_eq!(events(&mut m), vec![Event::ConfigMismatch { files }]);
        repr.header.seq = 3;
        assert_eq!(m.handle_frame(at(300), ETH, &repr), Ok(()));
        assert_eq!(events(&mut m), vec![]);
        repr.header.seq = 4;
        repr.heartbeat.digest.ha_cf = 99;
        assert_eq!(m.handle_frame(at(400), ETH, &repr), Ok(()));
        let files = FileSet(FileSet::HARESOURCES | FileSet::HA_CF);
        assert_eq!(events(&mut m), vec![Event::ConfigMismatch { files }]);
        assert_eq!(rx!(m, time 500, link ETH, seq 5), Ok(()));
        assert_eq!(events(&mut m), vec![Event::ConfigMatch]);
        assert_eq!(rx!(m, time 600, link ETH, seq 6), Ok(()));
        assert_eq!(events(&mut m), vec![]);
    }

    #[test]
    fn alive_digest_mismatch_repeated_after_restart() {
        let mut m = waiting();
        let mut repr = frame(PEER_EPOCH, 1);
        repr.heartbeat.digest.authkeys = 0;
        assert_eq!(m.handle_frame(at(10), ETH, &repr), Ok(()));
        assert!(events(&mut m).contains(&Event::ConfigMismatch {
            files: FileSet(FileSet::AUTHKEYS)
        }));
        repr.header.boot_epoch += 1;
        assert_eq!(m.handle_frame(at(20), ETH, &repr), Ok(()));
        assert_eq!(
            events(&mut m),
            vec![
                Event::PeerRestarted {
                    old_epoch: PEER_EPOCH,
                    new_epoch: PEER_EPOCH + 1
                },
                Event::ConfigMismatch {
                    files: FileSet(FileSet::AUTHKEYS)
                },
            ]
        );
    }

    #[test]
    fn alive_rejections_summarised_once_per_window() {
        let mut m = alive();
        for t in 0..50 {
            m.handle_frame_error(at(200 + t), SERIAL, FrameError::Crc);
        }
        m.handle_frame_error(at(300), ETH, FrameError::Mac);
        assert_eq!(rx!(m, time 300, link ETH, seq 2), Ok(()));
        assert_eq!(rx!(m, time 300, link ETH, seq 1), Err(FrameError::Replay));
        assert_eq!(m.poll_timeout(), Some(at(0)), "heartbeat still first");
        timeout!(m, time 200 + FRAME_SUMMARY_WINDOW.millis() - 1);
        assert!(!events(&mut m)
            .iter()
            .any(|e| matches!(e, Event::FrameRejected { .. })));
        timeout!(m, time 200 + FRAME_SUMMARY_WINDOW.millis());
        let summary: Vec<Event> = events(&mut m)
            .into_iter()
            .filter(|e| matches!(e, Event::FrameRejected { .. }))
            .collect();
        assert_eq!(
            summary,
            vec![
                Event::FrameRejected {
                    link: ETH,
                    reason: FrameError::Mac,
                    count: 1,
                    window_s: 10
                },
                Event::FrameRejected {
                    link: ETH,
                    reason: FrameError::Replay,
                    count: 1,
                    window_s: 10
                },
                Event::FrameRejected {
                    link: SERIAL,
                    reason: FrameError::Crc,
                    count: 50,
                    window_s: 10
                },
            ]
        );
        assert_eq!(
            m.link_stats(SERIAL).rx_rejected[FrameError::Crc.index()],
            50
        );
        timeout!(m, time 100_000);
        assert!(!events(&mut m)
            .iter()
            .any(|e| matches!(e, Event::FrameRejected { .. })));
    }

    #[test]
    fn alive_heartbeat_no_backlog_after_stall() {
        let mut m = alive();
        // Due at 0, sent at 100: next from now.
        assert!(tx!(m, time 100).is_some());
        assert_eq!(m.timers.get(Timer::Heartbeat), Some(at(200)));
        assert!(tx!(m, time 200).is_some());
        assert_eq!(tx!(m, time 250), None);
        // Slightly late: the cadence is kept.
        assert_eq!(tx!(m, time 330).map(|r| r.header.seq), Some(3));
        assert_eq!(m.timers.get(Timer::Heartbeat), Some(at(400)));
        // Frozen 5 s: one heartbeat, then from now.
        assert_eq!(tx!(m, time 5300).map(|r| r.header.seq), Some(4));
        assert_eq!(tx!(m, time 5300), None);
        assert_eq!(m.timers.get(Timer::Heartbeat), Some(at(5400)));
    }

    // ==== Tests for the Late state ====

    #[test]
    fn late_frame_becomes_alive() {
        let mut m = late();
        assert_eq!(rx!(m, time 450, link SERIAL, seq 2), Ok(()));
        assert_eq!(
            events(&mut m),
            vec![
                link(SERIAL, LinkState::Down, LinkState::Up, 0),
                peer(
                    PeerState::Late,
                    PeerState::Alive,
                    PeerReason::Heartbeat,
                    350
                ),
            ]
        );
        timeout!(m, time 450 + WARNTIME);
        assert_eq!(m.peer_state(), PeerState::Late);
    }

    #[test]
    fn late_deadtime_exactly_becomes_dead() {
        let mut m = late();
        timeout!(m, time 100 + DEADTIME - 1);
        assert_eq!(events(&mut m), vec![]);
        timeout!(m, time 100 + DEADTIME);
        assert_eq!(
            events(&mut m),
            vec![
                link(ETH, LinkState::Up, LinkState::Down, DEADTIME),
                peer(
                    PeerState::Late,
                    PeerState::Dead,
                    PeerReason::Deadtime,
                    DEADTIME
                ),
            ]
        );
    }

    #[test]
    fn late_replay_stays_late() {
        let mut m = late();
        assert_eq!(rx!(m, time 450, link ETH, seq 1), Err(FrameError::Repeat));
        assert_eq!(rx!(m, time 450, link ETH, seq 0), Err(FrameError::Replay));
        assert_eq!(m.peer_state(), PeerState::Late);
        assert_eq!(events(&mut m), vec![]);
    }

    // ==== Tests for the Dead state ====

    #[test]
    fn dead_frame_returns_alive() {
        let mut m = dead();
        assert_eq!(rx!(m, time 2000, link ETH, seq 2), Ok(()));
        assert_eq!(
            events(&mut m),
            vec![
                link(ETH, LinkState::Down, LinkState::Up, 0),
                peer(
                    PeerState::Dead,
                    PeerState::Alive,
                    PeerReason::Heartbeat,
                    1900
                ),
            ]
        );
    }

    #[test]
    fn dead_timeouts_do_nothing() {
        let mut m = dead();
        assert_eq!(m.poll_timeout(), Some(at(0)), "only the heartbeat remains");
        timeout!(m, time 1_000_000);
        assert_eq!(events(&mut m), vec![]);
        assert!(tx!(m, time 1_000_000).is_some_and(|r| r.heartbeat.status == 0));
    }

    #[test]
    fn dead_replay_of_old_frame_refused() {
        let mut m = dead();
        assert_eq!(rx!(m, time 2000, link ETH, seq 1), Err(FrameError::Repeat));
        assert_eq!(m.peer_state(), PeerState::Dead);
        assert_eq!(rx!(m, time 2000, link ETH, seq 0), Err(FrameError::Replay));
        assert_eq!(m.peer_state(), PeerState::Dead);
    }

    #[test]
    fn dead_restarted_peer_recognised() {
        let mut m = dead();
        assert_eq!(
            rx!(m, time 2000, link ETH, seq 1, epoch PEER_EPOCH + 1),
            Ok(())
        );
        let got = events(&mut m);
        assert_eq!(
            got[0],
            Event::PeerRestarted {
                old_epoch: PEER_EPOCH,
                new_epoch: PEER_EPOCH + 1
            }
        );
        assert_eq!(m.peer_state(), PeerState::Alive);
    }

    // ==== Tests for the Up and Down link states ====

    #[test]
    fn up_one_link_silent_goes_down_peer_alive() {
        let mut m = alive();
        assert_eq!(rx!(m, time 110, link SERIAL, seq 1), Ok(()));
        for (i, t) in (200..=1000).step_by(100).enumerate() {
            assert_eq!(rx!(m, time t, link SERIAL, seq 2 + i as u64), Ok(()));
            timeout!(m, time t);
        }
        let got = events(&mut m);
        assert_eq!(
            got,
            vec![
                link(SERIAL, LinkState::Down, LinkState::Up, 0),
                link(ETH, LinkState::Up, LinkState::Down, DEADTIME)
            ]
        );
        assert_eq!(m.link_state(ETH), LinkState::Down);
        assert_eq!(m.peer_state(), PeerState::Alive);
    }

    #[test]
    fn down_refused_frame_stays_down() {
        let mut m = alive();
        m.handle_frame_error(at(150), SERIAL, FrameError::Crc);
        assert_eq!(m.link_state(SERIAL), LinkState::Down);
        assert_eq!(m.link_last_rx(SERIAL), None);
    }

    #[test]
    #[should_panic(expected = "time went backwards")]
    fn any_time_backwards_panics() {
        let mut m = alive();
        timeout!(m, time 50);
    }

    // ==== Exhaustive: every state x input sample ====

    /// Discards an input's result (the exhaustive test checks state, not results).
    fn ignore<T>(_: T) {}

    /// Builds a machine in `state`, at time 1000 at the earliest.
    fn in_state(state: PeerState) -> Membership {
        match state {
            PeerState::Waiting => waiting(),
            PeerState::Alive => alive(),
            PeerState::Late => late(),
            PeerState::Dead => dead(),
        }
    }

    #[test]
    fn every_state_every_input_allowed_next_state() {
        type Input = fn(&mut Membership, u64);
        let inputs: [(&str, Input); 12] = [
            ("fresh", |m, t| ignore(rx!(m, time t, link ETH, seq 100))),
            ("fresh other link", |m, t| {
                ignore(rx!(m, time t, link SERIAL, seq 100))
            }),
            ("replay", |m, t| ignore(rx!(m, time t, link ETH, seq 1))),
            ("far behind", |m, t| {
                ignore(rx!(m, time t, link SERIAL, seq 0))
            }),
            ("older epoch", |m, t| {
                ignore(rx!(m, time t, link ETH, seq 500, epoch PEER_EPOCH - 1))
            }),
            ("newer epoch", |m, t| {
                ignore(rx!(m, time t, link ETH, seq 1, epoch PEER_EPOCH + 1))
            }),
            ("max seq", |m, t| {
                ignore(rx!(m, time t, link ETH, seq u64::MAX, epoch u32::MAX))
            }),
            ("reflection", |m, t| {
                let mut r = frame(PEER_EPOCH, 200);
                r.header.node = 0;
                ignore(m.handle_frame(at(t), ETH, &r));
            }),
            ("crc", |m, t| {
                m.handle_frame_error(at(t), SERIAL, FrameError::Crc)
            }),
            ("timeout", |m, t| m.handle_timeout(at(t))),
            ("transmit", |m, t| ignore(m.poll_transmit(at(t)))),
            ("far timeout", |m, t| m.handle_timeout(at(t + 1_000_000))),
        ];
        for state in PeerState::ALL {
            for (name, input) in inputs {
                for dt in [0, 1, WARNTIME, DEADTIME, INITDEAD, 10 * INITDEAD] {
                    let mut m = in_state(state);
                    let t = 1000 + dt;
                    input(&mut m, t);
                    m.handle_timeout(at(m.now_last.millis()));
                    let mut now = state;
                    for e in events(&mut m) {
                        if let Event::PeerState { from, to, .. } = e {
                            assert_eq!(from, now, "{state:?} + {name} at {t}: chain broken");
                            assert!(
                                from.may_become(to),
                                "{state:?} + {name}: {from:?} -> {to:?}"
                            );
                            now = to;
                        }
                    }
                    assert_eq!(
                        m.peer_state(),
                        now,
                        "{state:?} + {name} at {t}: events disagree with state"
                    );
                    let up = (0..2).any(|l| m.link_state(LinkId(l)) == LinkState::Up);
                    assert!(
                        !(now == PeerState::Dead && up),
                        "{state:?} + {name}: Dead with a link Up"
                    );
                    assert!(
                        m.poll_timeout().is_some(),
                        "the heartbeat timer is always armed"
                    );
                }
            }
        }
    }
}
