//! Operator-facing events: the log-message catalogue, as a type.
//!
//! Layer: pure. The core produces events; `shell::log::log_event` is the only
//! place that writes them at `info` or above. Rendering is here (pure) so that a
//! test can render every variant and compare it with the catalogue in README.md.
//! Format: `<event> key=value ...`; event names are snake_case and never change;
//! state values are the exact variant names.

use core::fmt::{self, Write};

use super::membership::{LinkState, PeerState};
use crate::wire::FrameError;

/// Index of a link (medium) in ha.cf order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkId(pub u8);

/// Names the renderer needs: the peer's name and each link's name (`eth1`,
/// `ttyS0`, `eth0:ucast`...). Built once by the shell.
#[derive(Clone, Debug, Default)]
pub struct Names {
    /// This node's name.
    pub node: String,
    /// The peer's name.
    pub peer: String,
    /// Link names, indexed by `LinkId`.
    pub links: Vec<String>,
}

impl Names {
    fn link(&self, id: LinkId) -> &str {
        self.links
            .get(id.0 as usize)
            .map(String::as_str)
            .unwrap_or("?")
    }
}

/// Why the peer changed state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerReason {
    /// A valid heartbeat arrived.
    Heartbeat,
    /// No valid heartbeat for `warntime`.
    Warntime,
    /// No valid heartbeat on any link for `deadtime`.
    Deadtime,
    /// The peer never appeared within `initdead` after start-up.
    Initdead,
}

impl PeerReason {
    const fn name(self) -> &'static str {
        match self {
            PeerReason::Heartbeat => "heartbeat",
            PeerReason::Warntime => "warntime",
            PeerReason::Deadtime => "deadtime",
            PeerReason::Initdead => "initdead",
        }
    }
}

/// Which configuration files differ between the nodes (bit set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FileSet(pub u8);

impl FileSet {
    /// ha.cf node/timing lines differ.
    pub const HA_CF: u8 = 1;
    /// haresources differs.
    pub const HARESOURCES: u8 = 2;
    /// authkeys method differs.
    pub const AUTHKEYS: u8 = 4;
}

impl fmt::Display for FileSet {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let mut first = true;
        for (bit, name) in [
            (Self::HA_CF, "ha.cf"),
            (Self::HARESOURCES, "haresources"),
            (Self::AUTHKEYS, "authkeys"),
        ] {
            if self.0 & bit != 0 {
                if !first {
                    f.write_char(',')?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

/// Every line an operator may see at `info` or above. Each variant is one entry of
/// the catalogue in README.md (a test keeps them in step).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The daemon started: who we are, who the peer is, timers, boot generation.
    Startup {
        /// Number of links configured.
        links: u8,
        /// Our boot generation (persisted, bumped at each start).
        boot_epoch: u32,
        /// keepalive in ms.
        keepalive_ms: u64,
        /// warntime in ms.
        warntime_ms: u64,
        /// deadtime in ms.
        deadtime_ms: u64,
        /// initdead in ms.
        initdead_ms: u64,
    },
    /// The daemon stops (signal).
    Shutdown {
        /// The signal number that asked for it.
        signal: i32,
    },
    /// A link changed state (first valid frame, or silence for deadtime).
    LinkState {
        /// Which link.
        link: LinkId,
        /// Old state.
        from: LinkState,
        /// New state.
        to: LinkState,
        /// Silence on that link when it changed, ms (0 when coming up).
        silence_ms: u64,
    },
    /// The peer changed state.
    PeerState {
        /// Old state.
        from: PeerState,
        /// New state.
        to: PeerState,
        /// Why.
        reason: PeerReason,
        /// Silence on every link, ms.
        silence_ms: u64,
    },
    /// A heartbeat arrived later than `warntime` after the previous one on that link
    /// (Heartbeat's "Late heartbeat: Node X: interval N ms").
    HeartbeatLate {
        /// Link it arrived on.
        link: LinkId,
        /// Gap since the previous valid frame on that link, ms.
        interval_ms: u64,
    },
    /// The peer restarted: a frame with a newer boot generation arrived.
    PeerRestarted {
        /// The generation we knew (0: none yet).
        old_epoch: u32,
        /// The new one.
        new_epoch: u32,
    },
    /// The peer's configuration digest differs from ours; names the files.
    ConfigMismatch {
        /// Which files differ.
        files: FileSet,
    },
    /// The peer's configuration digest matches ours again (after a mismatch).
    ConfigMatch,
    /// Frames refused on a link, summarised once per window (never one line per frame).
    FrameRejected {
        /// Link they arrived on.
        link: LinkId,
        /// Why they were refused.
        reason: FrameError,
        /// How many in the window.
        count: u32,
        /// Window length, seconds.
        window_s: u32,
    },
    /// A link's device or socket failed (EIO on a serial port, ENETDOWN...).
    LinkError {
        /// Which link.
        link: LinkId,
        /// errno.
        errno: i32,
    },
    /// The event loop ran late (a stalled iteration), ms beyond the deadline.
    LoopLag {
        /// How late, ms.
        lag_ms: u64,
    },
    /// Real-time scheduling or memory locking was refused by the host.
    RealtimeDegraded {
        /// `mlockall` or `sched_setscheduler`.
        what: &'static str,
        /// errno.
        errno: i32,
    },
    /// The active authkeys method is `crc`: frames are not authenticated.
    Unauthenticated,
    /// Log lines were dropped because the log writer fell behind.
    LogDropped {
        /// How many.
        count: u64,
    },
}

impl Event {
    /// The stable event name (first word of the line).
    pub const fn name(&self) -> &'static str {
        match self {
            Event::Startup { .. } => "startup",
            Event::Shutdown { .. } => "shutdown",
            Event::LinkState { .. } => "link_state",
            Event::PeerState { .. } => "peer_state",
            Event::HeartbeatLate { .. } => "heartbeat_late",
            Event::PeerRestarted { .. } => "peer_restarted",
            Event::ConfigMismatch { .. } => "config_mismatch",
            Event::ConfigMatch => "config_match",
            Event::FrameRejected { .. } => "frame_rejected",
            Event::LinkError { .. } => "link_error",
            Event::LoopLag { .. } => "loop_lag",
            Event::RealtimeDegraded { .. } => "realtime_degraded",
            Event::Unauthenticated => "unauthenticated",
            Event::LogDropped { .. } => "log_dropped",
        }
    }

    /// The level: error when an operator must act, warn when redundancy is
    /// degraded, info for every other state transition.
    pub fn level(&self) -> log::Level {
        use log::Level::*;
        match self {
            Event::Startup { .. } | Event::Shutdown { .. } | Event::ConfigMatch => Info,
            Event::LinkState { to, .. } => match to {
                LinkState::Up => Info,
                LinkState::Down => Warn,
            },
            Event::PeerState { to, .. } => match to {
                PeerState::Alive => Info,
                PeerState::Waiting | PeerState::Late => Warn,
                PeerState::Dead => Error,
            },
            Event::HeartbeatLate { .. } => Warn,
            Event::PeerRestarted { .. } => Info,
            Event::ConfigMismatch { .. } => Error,
            Event::FrameRejected { .. } => Warn,
            Event::LinkError { .. } => Warn,
            Event::LoopLag { .. } => Warn,
            Event::RealtimeDegraded { .. } => Warn,
            Event::Unauthenticated => Error,
            Event::LogDropped { .. } => Warn,
        }
    }

    /// Writes the catalogue line, `<event> key=value ...`, without a newline.
    pub fn render(&self, names: &Names, out: &mut impl Write) -> fmt::Result {
        out.write_str(self.name())?;
        match *self {
            Event::Startup { links, boot_epoch, keepalive_ms, warntime_ms, deadtime_ms, initdead_ms } => write!(
                out,
                " node={} peer={} links={} boot_epoch={} keepalive_ms={} warntime_ms={} deadtime_ms={} initdead_ms={}",
                names.node, names.peer, links, boot_epoch, keepalive_ms, warntime_ms, deadtime_ms, initdead_ms
            ),
            Event::Shutdown { signal } => write!(out, " node={} signal={}", names.node, signal),
            Event::LinkState { link, from, to, silence_ms } => write!(
                out,
                " peer={} link={} from={:?} to={:?} silence_ms={}",
                names.peer,
                names.link(link),
                from,
                to,
                silence_ms
            ),
            Event::PeerState { from, to, reason, silence_ms } => write!(
                out,
                " peer={} from={:?} to={:?} reason={} silence_ms={}",
                names.peer,
                from,
                to,
                reason.name(),
                silence_ms
            ),
            Event::HeartbeatLate { link, interval_ms } => {
                write!(out, " peer={} link={} interval_ms={}", names.peer, names.link(link), interval_ms)
            }
            Event::PeerRestarted { old_epoch, new_epoch } => {
                write!(out, " peer={} old_epoch={} new_epoch={}", names.peer, old_epoch, new_epoch)
            }
            Event::ConfigMismatch { files } => write!(out, " peer={} files={}", names.peer, files),
            Event::ConfigMatch => write!(out, " peer={}", names.peer),
            Event::FrameRejected { link, reason, count, window_s } => write!(
                out,
                " link={} reason={} count={} window_s={}",
                names.link(link),
                reason,
                count,
                window_s
            ),
            Event::LinkError { link, errno } => write!(
                out,
                " link={} errno={} error=\"{}\"",
                names.link(link),
                errno,
                nix::errno::Errno::from_raw(errno).desc()
            ),
            Event::LoopLag { lag_ms } => write!(out, " lag_ms={}", lag_ms),
            Event::RealtimeDegraded { what, errno } => write!(
                out,
                " what={} errno={} error=\"{}\"",
                what,
                errno,
                nix::errno::Errno::from_raw(errno).desc()
            ),
            Event::Unauthenticated => write!(out, " method=crc"),
            Event::LogDropped { count } => write!(out, " count={}", count),
        }
    }
}
