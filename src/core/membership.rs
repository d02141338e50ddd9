//! Membership: is the peer alive, and over which links?
//!
//! Layer: pure state machine (no I/O, time passed in, no allocation after `new`).
//!
//! Inputs: [`Membership::handle_frame`] (a frame that passed the wire checks),
//! [`Membership::handle_frame_error`] (one that did not), and
//! [`Membership::handle_timeout`]. Outputs: [`Membership::poll_transmit`] (a
//! heartbeat to send on every link), [`Membership::poll_event`] (catalogue events)
//! and [`Membership::poll_timeout`] (the next deadline).
//!
//! Peer states: `Waiting` (start-up, `initdead` running) -> `Alive` <-> `Late`
//! (silence > `warntime`) -> `Dead` (silence on every link > `deadtime`, or no
//! peer within `initdead`) -> `Alive` again when valid frames return. Each link is
//! `Down` until its first valid frame, then `Up`, and `Down` again after
//! `deadtime` of silence on that link. The peer is alive while any link delivers.
//!
//! Replay and reflection: a frame from our own node index is a `Reflection`; a
//! frame whose `(boot_epoch, seq)` is not newer than the last accepted *on that
//! link* is a `Replay`, and so is one older than a window behind the newest seq
//! accepted on any link (the same heartbeat legitimately arrives once per link).
//! A newer `boot_epoch` is a restarted peer: its sequence starts again.

use crate::config::digest::ConfigDigest;
use crate::time::{Duration, Instant};
use crate::wire::{FrameError, Repr};

use super::event::{Event, LinkId};

/// Most links a node can have (media in ha.cf). Bounds every per-link array.
pub const LINKS_MAX: usize = 8;

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
    pub const ALL: [PeerState; 4] = [PeerState::Waiting, PeerState::Alive, PeerState::Late, PeerState::Dead];
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

/// The membership state machine. See the module doc.
pub struct Membership {
    _config: MembershipConfig,
}

impl Membership {
    /// A node at start-up: peer `Waiting`, every link `Down`, first heartbeat due now.
    pub fn new(config: MembershipConfig, now: Instant) -> Membership {
        let _ = now;
        todo!("membership helper: {:?}", config)
    }

    /// A frame that passed COBS, CRC, version and MAC arrived on `link`. Returns the
    /// reason if the core refuses it (reflection, unknown node, replay); refused
    /// frames are counted as by `handle_frame_error`.
    pub fn handle_frame(&mut self, now: Instant, link: LinkId, repr: &Repr) -> Result<(), FrameError> {
        let _ = (now, link, repr);
        todo!()
    }

    /// A frame failed the wire checks on `link`: count it; summarised as one
    /// `frame_rejected` event per link and reason per window.
    pub fn handle_frame_error(&mut self, now: Instant, link: LinkId, error: FrameError) {
        let _ = (now, link, error);
        todo!()
    }

    /// Handles every timer due at `now` (each exactly once).
    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = now;
        todo!()
    }

    /// A heartbeat to send on every link, when one is due at `now`.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Repr> {
        let _ = now;
        todo!()
    }

    /// The next catalogue event, oldest first.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        todo!()
    }

    /// The earliest deadline at which `handle_timeout` or `poll_transmit` has work.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        todo!()
    }

    /// The peer's state.
    pub fn peer_state(&self) -> PeerState {
        todo!()
    }

    /// A link's state.
    pub fn link_state(&self, link: LinkId) -> LinkState {
        let _ = link;
        todo!()
    }

    /// When the last valid frame arrived on `link`.
    pub fn link_last_rx(&self, link: LinkId) -> Option<Instant> {
        let _ = link;
        todo!()
    }

    /// A link's counters.
    pub fn link_stats(&self, link: LinkId) -> &LinkStats {
        let _ = link;
        todo!()
    }

    /// The peer's boot generation, once seen.
    pub fn peer_epoch(&self) -> Option<u32> {
        todo!()
    }

    /// The peer's configuration digest, once seen.
    pub fn peer_digest(&self) -> Option<ConfigDigest> {
        todo!()
    }
}
