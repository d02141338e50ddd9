//! One heartbeat link (a UDP socket or a serial port) as the loop sees it.
//!
//! Layer: shell. [`Link`] dispatches to `udp` or `serial`; [`Retry`] is the shared
//! "device missing: log once, try again every second" policy, so a missing
//! interface or a dead pty never kills the daemon and never makes it spin.

use mio::{Registry, Token};

use super::serial::SerialLink;
use super::udp::UdpLink;
use crate::core::{Event, LinkId, Membership};
use crate::time::{Duration, Instant};
use crate::wire::Keyring;

/// How often a missing or failed device is opened again.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(1000);

/// Reopen policy: at most one attempt per [`RETRY_INTERVAL`], one `link_error` per streak.
#[derive(Clone, Copy, Debug, Default)]
pub struct Retry {
    at: Option<Instant>,
    reported: bool,
}

impl Retry {
    /// An attempt failed at `now`; returns true when this starts a streak (log it).
    pub fn failed(&mut self, now: Instant) -> bool {
        self.at = Some(now + RETRY_INTERVAL);
        let first = !self.reported;
        self.reported = true;
        first
    }

    /// The device works again: the next failure is logged.
    pub fn succeeded(&mut self) {
        self.at = None;
        self.reported = false;
    }

    /// Whether a reopen attempt is due.
    pub fn due(&self, now: Instant) -> bool {
        self.at.is_some_and(|at| at <= now)
    }

    /// When the next attempt is due.
    pub fn deadline(&self) -> Option<Instant> {
        self.at
    }
}

/// Why opening a link failed at start-up.
pub enum OpenError {
    /// Transient (device or interface missing, down): log, retry every second.
    Retry(i32),
    /// Cannot ever work as configured (permission, port in use): refuse to start.
    Fatal(super::cli::ShellError),
}

/// Inputs a link needs to decode frames and feed them to the core.
pub struct RxContext<'a> {
    /// The current iteration's time.
    pub now: Instant,
    /// Verifies MACs.
    pub keyring: &'a Keyring,
    /// The core.
    pub membership: &'a mut Membership,
}

/// A heartbeat link. Variants hold their fixed frame buffers inline on purpose:
/// a handful of links, allocated once at start-up.
#[allow(clippy::large_enum_variant)]
pub enum Link {
    /// bcast, mcast or ucast.
    Udp(UdpLink),
    /// A null-modem line.
    Serial(SerialLink),
}

impl Link {
    /// Its id (index in the membership's link arrays).
    pub fn id(&self) -> LinkId {
        match self {
            Link::Udp(l) => l.id(),
            Link::Serial(l) => l.id(),
        }
    }

    /// First open at start-up; `Retry` errors are already scheduled.
    pub fn open(
        &mut self,
        registry: &Registry,
        token: Token,
        now: Instant,
    ) -> Result<(), OpenError> {
        match self {
            Link::Udp(l) => l.open(registry, token, now),
            Link::Serial(l) => l.open(registry, token, now),
        }
    }

    /// Its readiness fired.
    pub fn on_ready(
        &mut self,
        registry: &Registry,
        event: &mio::event::Event,
        rx: RxContext,
    ) -> Option<Event> {
        match self {
            Link::Udp(l) => l.on_ready(rx),
            Link::Serial(l) => l.on_ready(registry, event, rx),
        }
    }

    /// Sends one encoded frame (a fresh heartbeat).
    pub fn send(&mut self, registry: &Registry, frame: &[u8], now: Instant) -> Option<Event> {
        match self {
            Link::Udp(l) => l.send(registry, frame, now),
            Link::Serial(l) => l.send(registry, frame, now),
        }
    }

    /// Timers: reopen attempts, serial pacing.
    pub fn tick(&mut self, registry: &Registry, token: Token, now: Instant) -> Option<Event> {
        match self {
            Link::Udp(l) => l.tick(registry, token, now),
            Link::Serial(l) => l.tick(registry, token, now),
        }
    }

    /// The next time [`Link::tick`] has work.
    pub fn deadline(&self) -> Option<Instant> {
        match self {
            Link::Udp(l) => l.deadline(),
            Link::Serial(l) => l.deadline(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_logs_once_per_streak_and_waits_a_second() {
        let mut r = Retry::default();
        let t0 = Instant::from_millis(5);
        assert!(!r.due(t0));
        assert!(r.failed(t0));
        assert!(!r.due(Instant::from_millis(1004)));
        assert!(r.due(Instant::from_millis(1005)));
        assert!(!r.failed(Instant::from_millis(1005)));
        r.succeeded();
        assert_eq!(r.deadline(), None);
        assert!(r.failed(Instant::from_millis(3000)));
    }
}
