//! `ha.cf`, with Heartbeat's semantics.
//!
//! Layer: pure parser. Syntax: one directive per line, words separated by blanks,
//! `#` starts a comment. Times are seconds when bare (`2`, `0.5`) or milliseconds
//! with `ms` (`500ms`). Directives Heartbeat has but bascule does not implement yet
//! are accepted with one warning naming them; unknown words are errors.

use super::{ConfigError, ConfigWarning, FileKind};
use crate::time::Duration;

/// Heartbeat's default UDP port (`udpport`), registered as "ha-cluster".
pub const UDPPORT_DEFAULT: u16 = 694;
/// Heartbeat's default serial speed (`baud`).
pub const BAUD_DEFAULT: u32 = 19200;

/// One heartbeat medium, in file order. Each becomes one link of the membership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Medium {
    /// `bcast IF`: UDP broadcast on interface IF (one entry per interface named).
    Bcast {
        /// Interface name, e.g. `eth1`.
        iface: String,
        /// 1-based line in ha.cf.
        line: usize,
    },
    /// `mcast IF GROUP PORT TTL LOOP`: UDP multicast.
    Mcast {
        /// Interface name.
        iface: String,
        /// Multicast group.
        group: std::net::Ipv4Addr,
        /// UDP port.
        port: u16,
        /// Multicast TTL (1..=255).
        ttl: u8,
        /// IP_MULTICAST_LOOP.
        loopback: bool,
        /// 1-based line in ha.cf.
        line: usize,
    },
    /// `ucast IF ADDR`: UDP unicast to ADDR. A line naming this node's own address
    /// is ignored by the shell, so one file serves both nodes.
    Ucast {
        /// Interface name.
        iface: String,
        /// Peer address.
        addr: std::net::Ipv4Addr,
        /// 1-based line in ha.cf.
        line: usize,
    },
    /// `serial DEV`: a null-modem line (one entry per device named).
    Serial {
        /// Device path, e.g. `/dev/ttyS0`.
        device: String,
        /// 1-based line in ha.cf.
        line: usize,
    },
}

/// `auto_failback on|off|legacy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoFailback {
    /// Groups move back to their preferred node when it returns.
    On,
    /// Groups stay where they run.
    Off,
    /// Heartbeat's legacy behaviour (on, unless the peer runs without auto_failback).
    Legacy,
}

/// `logfacility`: a syslog facility, or `none`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFacility {
    /// Do not log to syslog.
    None,
    /// The syslog facility code (e.g. local0 = 16), as in `<syslog.h>` >> 3.
    Facility(u8),
}

/// The effective settings of `ha.cf`, defaults filled in as Heartbeat does.
#[derive(Clone, Debug, PartialEq)]
pub struct HaCf {
    /// `node` names in file order (exactly two: bascule is a pair).
    pub nodes: Vec<String>,
    /// `logfile PATH`.
    pub logfile: Option<String>,
    /// `debugfile PATH`.
    pub debugfile: Option<String>,
    /// `logfacility`; Heartbeat's default is none.
    pub logfacility: LogFacility,
    /// `auto_failback`; Heartbeat's default is legacy.
    pub auto_failback: AutoFailback,
    /// `keepalive` (default 2 s): the heartbeat interval.
    pub keepalive: Duration,
    /// `warntime` (default: deadtime * 3 / 4... see parser doc): late-heartbeat warning.
    pub warntime: Duration,
    /// `deadtime` (default 30 s): silence on every link after which the peer is dead.
    pub deadtime: Duration,
    /// `initdead` (default: deadtime): the longer wait for the peer at start-up.
    pub initdead: Duration,
    /// `udpport` (default 694).
    pub udpport: u16,
    /// `baud` (default 19200).
    pub baud: u32,
    /// Every medium in file order.
    pub media: Vec<Medium>,
    /// `realtime on|off` (default on): mlockall and a real-time priority.
    pub realtime: bool,
    /// 1-based ha.cf lines that carry cluster-wide settings (node and timing lines),
    /// used for the config digest.
    pub digest_lines: Vec<usize>,
}

/// Parses `ha.cf`. Pushes warnings (unimplemented directives, deadtime <= 2 x
/// keepalive, initdead < 2 x deadtime) into `warnings`.
pub fn parse(text: &str, warnings: &mut Vec<ConfigWarning>) -> Result<HaCf, ConfigError> {
    let _ = (text, warnings, FileKind::HaCf);
    todo!("config helper")
}
