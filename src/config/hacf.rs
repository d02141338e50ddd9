//! `ha.cf`, with Heartbeat's semantics.
//!
//! Layer: pure parser. It may not read files, resolve interfaces or log; it returns
//! typed settings, or the first [`ConfigError`] with its line, plus warnings.
//!
//! Syntax (as Heartbeat's `parse_config`): one directive per line, `#` starts a
//! comment anywhere on a line, words are separated by blanks or commas
//! (`node debian1, debian2` is two nodes). Directive names are case-sensitive.
//!
//! Semantics, taken from Heartbeat's `heartbeat/config.c` where it has a rule:
//! - Times are seconds when bare (`2`, `0.5`), milliseconds with `ms`/`msec`,
//!   microseconds with `us`/`usec`, rounded to the nearest millisecond.
//! - Defaults: keepalive 1 s and deadtime 30 s (Heartbeat's compiled-in values);
//!   warntime = deadtime / 2; initdead = deadtime when deadtime > 10 s, 12 s when
//!   deadtime < 6 s, else 2 x deadtime; udpport 694; baud 19200; auto_failback
//!   legacy; logfacility none; realtime on.
//! - Booleans (`auto_failback`, `realtime`) take Heartbeat's words: on/off,
//!   yes/no, y/n, true/false, 1/0, in any case; `auto_failback` also `legacy`.
//! - Heartbeat wants `udpport` before the media; bascule accepts any order and
//!   uses the one `udpport` for every `bcast` and `ucast` medium. `mcast` names
//!   its own port on its line, as in Heartbeat.
//! - Node names are lower-cased, as Heartbeat does; bascule is a pair, so exactly
//!   two distinct nodes.
//! - Directives Heartbeat has that bascule does not implement yet are accepted
//!   and named in one warning; unknown words are errors (with a suggestion).
//!
//! Invariants of an `Ok(HaCf)`: two distinct nodes, at least one and at most
//! [`LINKS_MAX`] media with distinct link names, 0 < keepalive < deadtime <=
//! initdead, 0 < warntime, every time <= [`TIME_MAX_MS`].

use super::{ConfigError, ConfigWarning, FileKind};
use crate::core::membership::LINKS_MAX;
use crate::time::Duration;
use std::net::Ipv4Addr;

/// Heartbeat's default UDP port (`udpport`), registered as "ha-cluster".
pub const UDPPORT_DEFAULT: u16 = 694;
/// Heartbeat's default serial speed (`baud`).
pub const BAUD_DEFAULT: u32 = 19200;
/// Heartbeat's compiled-in `keepalive` (config.c: `heartbeat_ms = 1000`).
pub const KEEPALIVE_DEFAULT_MS: u64 = 1_000;
/// Heartbeat's compiled-in `deadtime` (config.c: `deadtime_ms = 30000`).
pub const DEADTIME_DEFAULT_MS: u64 = 30_000;
/// Longest time accepted for any timer: one day. Longer is surely a typo, and the
/// bound keeps every timer sum far from overflow.
pub const TIME_MAX_MS: u64 = 86_400_000;
/// Below this deadtime, Heartbeat's default initdead is a flat 12 s.
const INITDEAD_FLAT_BELOW_MS: u64 = 6_000;
/// Heartbeat's default initdead when deadtime is short.
const INITDEAD_FLAT_MS: u64 = 12_000;
/// Above this deadtime, Heartbeat's default initdead is deadtime itself.
const INITDEAD_SAME_ABOVE_MS: u64 = 10_000;
/// Serial speeds accepted by `baud`: the standard termios rates from 300 up to
/// Heartbeat's highest (460800).
pub const BAUD_RATES: [u32; 12] = [
    300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800,
];
/// Longest interface name Linux accepts (IFNAMSIZ - 1).
pub const IFACE_LEN_MAX: usize = 15;
/// Longest node name accepted (a host name label set is at most 64 in `uname`).
pub const NODE_LEN_MAX: usize = 64;
/// Nodes in a bascule cluster: a pair.
pub const NODES: usize = 2;

/// Directives bascule implements.
const IMPLEMENTED: [&str; 16] = [
    "node",
    "logfile",
    "debugfile",
    "logfacility",
    "auto_failback",
    "keepalive",
    "warntime",
    "deadtime",
    "initdead",
    "udpport",
    "bcast",
    "mcast",
    "ucast",
    "serial",
    "baud",
    "realtime",
];

/// Directives Heartbeat 1-3 knows that bascule does not implement yet: accepted,
/// ignored and named in one warning, so a migrated ha.cf still starts.
/// (`stonith` and `stonith_host` will be refused once fencing exists.)
pub const UNIMPLEMENTED: [&str; 43] = [
    "apiauth",
    "autojoin",
    "badpack_warn",
    "cluster",
    "compression",
    "compression_threshold",
    "conn_logd_time",
    "coredumps",
    "coreroot",
    "crm",
    "deadping",
    "debug",
    "enable_config_writes",
    "env",
    "hbaping",
    "hbgenmethod",
    "hopfudge",
    "log_badpack",
    "logdaemon",
    "max_rexmit_delay",
    "mcast6",
    "memreserve",
    "msgfmt",
    "nice_failback",
    "normalpoll",
    "openais",
    "pacemaker",
    "ping",
    "ping_group",
    "quorum_server",
    "record_config_changes",
    "record_pengine_inputs",
    "respawn",
    "rtprio",
    "stonith",
    "stonith_host",
    "syslogmsgfmt",
    "traditional_compression",
    "ucast6",
    "use_apphbd",
    "use_logd",
    "uuidfrom",
    "watchdog",
];

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

impl Medium {
    /// The link's name in logs and status: `eth1` for bcast, `eth1-mcast`,
    /// `eth1-ucast`, and the device's basename (`ttyS0`) for serial.
    pub fn link_name(&self) -> String {
        match self {
            Medium::Bcast { iface, .. } => iface.clone(),
            Medium::Mcast { iface, .. } => format!("{iface}-mcast"),
            Medium::Ucast { iface, .. } => format!("{iface}-ucast"),
            Medium::Serial { device, .. } => {
                device.rsplit('/').next().unwrap_or(device).to_string()
            }
        }
    }

    /// The directive that declared it (`bcast`, `mcast`, `ucast`, `serial`).
    pub const fn kind(&self) -> &'static str {
        match self {
            Medium::Bcast { .. } => "bcast",
            Medium::Mcast { .. } => "mcast",
            Medium::Ucast { .. } => "ucast",
            Medium::Serial { .. } => "serial",
        }
    }

    /// The 1-based ha.cf line that declared it.
    pub const fn line(&self) -> usize {
        match self {
            Medium::Bcast { line, .. }
            | Medium::Mcast { line, .. }
            | Medium::Ucast { line, .. }
            | Medium::Serial { line, .. } => *line,
        }
    }
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

impl AutoFailback {
    /// The word as written in ha.cf and printed by `check-config`.
    pub const fn name(self) -> &'static str {
        match self {
            AutoFailback::On => "on",
            AutoFailback::Off => "off",
            AutoFailback::Legacy => "legacy",
        }
    }
}

/// `logfacility`: a syslog facility, or `none`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFacility {
    /// Do not log to syslog.
    None,
    /// The syslog facility code (e.g. local0 = 16), as in `<syslog.h>` >> 3.
    Facility(u8),
}

/// Syslog facility names and their codes (`<syslog.h>` value >> 3).
pub const FACILITIES: [(&str, u8); 20] = [
    ("kern", 0),
    ("user", 1),
    ("mail", 2),
    ("daemon", 3),
    ("auth", 4),
    ("syslog", 5),
    ("lpr", 6),
    ("news", 7),
    ("uucp", 8),
    ("cron", 9),
    ("authpriv", 10),
    ("ftp", 11),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

impl LogFacility {
    /// Parses a facility name (`local0`, `daemon`...) or `none`.
    pub fn from_name(word: &str) -> Option<LogFacility> {
        if word == "none" {
            return Some(LogFacility::None);
        }
        FACILITIES
            .iter()
            .find(|(name, _)| *name == word)
            .map(|(_, code)| LogFacility::Facility(*code))
    }

    /// The name as written in ha.cf (`none` when syslog is off).
    pub fn name(self) -> &'static str {
        match self {
            LogFacility::None => "none",
            LogFacility::Facility(code) => FACILITIES
                .iter()
                .find(|(_, c)| *c == code)
                .map(|(name, _)| *name)
                .unwrap_or("unknown"),
        }
    }
}

/// The effective settings of `ha.cf`, defaults filled in as Heartbeat does.
#[derive(Clone, Debug, PartialEq)]
pub struct HaCf {
    /// `node` names in file order (exactly two: bascule is a pair), lower-cased.
    pub nodes: Vec<String>,
    /// `logfile PATH`.
    pub logfile: Option<String>,
    /// `debugfile PATH`.
    pub debugfile: Option<String>,
    /// `logfacility`; Heartbeat's default is none.
    pub logfacility: LogFacility,
    /// `auto_failback`; Heartbeat's default is legacy.
    pub auto_failback: AutoFailback,
    /// `keepalive` (default 1 s, Heartbeat's): the heartbeat interval.
    pub keepalive: Duration,
    /// `warntime` (default deadtime / 2, Heartbeat's rule): late-heartbeat warning.
    pub warntime: Duration,
    /// `deadtime` (default 30 s): silence on every link after which the peer is dead.
    pub deadtime: Duration,
    /// `initdead` (default: see the module doc): the longer wait for the peer at start-up.
    pub initdead: Duration,
    /// `udpport` (default 694), used by every bcast and ucast medium.
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

/// A value given with the line it came from (for messages about it).
#[derive(Clone, Copy)]
struct At<T> {
    value: T,
    line: usize,
}

/// What the lines said so far; `finish` fills defaults and checks the whole.
#[derive(Default)]
struct Builder {
    nodes: Vec<At<String>>,
    logfile: Option<String>,
    debugfile: Option<String>,
    logfacility: Option<LogFacility>,
    auto_failback: Option<AutoFailback>,
    keepalive: Option<At<u64>>,
    warntime: Option<At<u64>>,
    deadtime: Option<At<u64>>,
    initdead: Option<At<u64>>,
    udpport: Option<u16>,
    baud: Option<At<u32>>,
    realtime: Option<bool>,
    media: Vec<Medium>,
    ignored: Vec<At<String>>,
    digest_lines: Vec<usize>,
    set_lines: Vec<At<&'static str>>,
}

/// Parses `ha.cf`. Pushes warnings (unimplemented directives, deadtime <= 2 x
/// keepalive, initdead < 2 x deadtime, warntime out of range, repeated settings)
/// into `warnings`.
pub fn parse(text: &str, warnings: &mut Vec<ConfigWarning>) -> Result<HaCf, ConfigError> {
    let mut builder = Builder::default();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.split('#').next().unwrap_or("");
        let mut words = content
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|w| !w.is_empty());
        let Some(directive) = words.next() else {
            continue;
        };
        let args: Vec<&str> = words.collect();
        builder.directive(directive, &args, line, warnings)?;
    }
    builder.finish(warnings)
}

/// An ha.cf error at `line`.
fn error(line: usize, message: String) -> ConfigError {
    ConfigError {
        file: FileKind::HaCf,
        line,
        message,
    }
}

/// An ha.cf warning at `line`.
fn warning(line: usize, message: String) -> ConfigWarning {
    ConfigWarning {
        file: FileKind::HaCf,
        line,
        message,
    }
}

impl Builder {
    /// Applies one directive line.
    fn directive(
        &mut self,
        directive: &str,
        args: &[&str],
        line: usize,
        warnings: &mut Vec<ConfigWarning>,
    ) -> Result<(), ConfigError> {
        match directive {
            "node" => self.node(args, line),
            "logfile" => {
                self.logfile = Some(single(directive, args, line)?.to_string());
                Ok(())
            }
            "debugfile" => {
                self.debugfile = Some(single(directive, args, line)?.to_string());
                Ok(())
            }
            "logfacility" => self.logfacility(args, line),
            "auto_failback" => self.auto_failback(args, line),
            "keepalive" | "warntime" | "deadtime" | "initdead" => {
                self.timer(directive, args, line, warnings)
            }
            "udpport" => self.udpport(args, line),
            "baud" => self.baud(args, line),
            "realtime" => self.realtime(args, line),
            "bcast" | "serial" => self.per_word_medium(directive, args, line),
            "udp" => {
                // Heartbeat's DIRTYALIASKLUDGE: `udp` is the old name of `bcast`.
                warnings.push(warning(
                    line,
                    "`udp` is Heartbeat's old name for `bcast`; write `bcast`".into(),
                ));
                self.per_word_medium("bcast", args, line)
            }
            "mcast" => self.mcast(args, line),
            "ucast" => self.ucast(args, line),
            _ if UNIMPLEMENTED.contains(&directive) => {
                self.ignored.push(At {
                    value: directive.to_string(),
                    line,
                });
                Ok(())
            }
            _ => Err(error(line, unknown_directive(directive))),
        }
    }

    /// Records a cluster-wide line for the digest and a repeated setting warning.
    fn setting(&mut self, name: &'static str, line: usize, warnings: &mut Vec<ConfigWarning>) {
        if let Some(first) = self.set_lines.iter().find(|s| s.value == name) {
            let message = format!(
                "`{name}` is also set on line {}; the last one (line {line}) wins",
                first.line
            );
            warnings.push(warning(line, message));
        }
        self.set_lines.push(At { value: name, line });
        self.digest_lines.push(line);
    }

    /// `node NAME...`: several names per line, several lines.
    fn node(&mut self, args: &[&str], line: usize) -> Result<(), ConfigError> {
        if args.is_empty() {
            return Err(error(
                line,
                "`node` needs the node names, e.g. `node debian1 debian2`".into(),
            ));
        }
        for word in args {
            let name = word.to_ascii_lowercase();
            check_node_name(&name).map_err(|m| error(line, m))?;
            if let Some(first) = self.nodes.iter().find(|n| n.value == name) {
                let message = format!(
                    "node `{name}` is listed twice (first on line {})",
                    first.line
                );
                return Err(error(line, message));
            }
            if self.nodes.len() == NODES {
                let message = format!(
                    "third node `{name}`: bascule runs exactly two nodes (here {} and {}); \
                     a larger cluster needs Pacemaker/Corosync",
                    self.nodes[0].value, self.nodes[1].value
                );
                return Err(error(line, message));
            }
            self.nodes.push(At { value: name, line });
        }
        self.digest_lines.push(line);
        Ok(())
    }

    /// `logfacility NAME|none`.
    fn logfacility(&mut self, args: &[&str], line: usize) -> Result<(), ConfigError> {
        let word = single("logfacility", args, line)?;
        let facility = LogFacility::from_name(word).ok_or_else(|| {
            let names: Vec<&str> = FACILITIES.iter().map(|(n, _)| *n).collect();
            error(
                line,
                format!(
                    "unknown syslog facility `{word}`: use one of {} or none",
                    names.join(" ")
                ),
            )
        })?;
        self.logfacility = Some(facility);
        Ok(())
    }

    /// `auto_failback on|off|legacy` (and Heartbeat's other boolean words).
    fn auto_failback(&mut self, args: &[&str], line: usize) -> Result<(), ConfigError> {
        let word = single("auto_failback", args, line)?;
        let value = if word.eq_ignore_ascii_case("legacy") {
            AutoFailback::Legacy
        } else {
            match parse_bool(word) {
                Some(true) => AutoFailback::On,
                Some(false) => AutoFailback::Off,
                None => {
                    return Err(error(
                        line,
                        format!("auto_failback `{word}` is not valid: use on, off or legacy"),
                    ))
                }
            }
        };
        self.auto_failback = Some(value);
        self.digest_lines.push(line);
        Ok(())
    }

    /// `keepalive`, `warntime`, `deadtime`, `initdead`.
    fn timer(
        &mut self,
        directive: &str,
        args: &[&str],
        line: usize,
        warnings: &mut Vec<ConfigWarning>,
    ) -> Result<(), ConfigError> {
        let word = single(directive, args, line)?;
        let ms = parse_time_ms(word).map_err(|m| error(line, format!("{directive}: {m}")))?;
        let value = Some(At { value: ms, line });
        let name = match directive {
            "keepalive" => {
                if ms == 0 {
                    return Err(error(line, "keepalive must be more than 0 ms".into()));
                }
                self.keepalive = value;
                "keepalive"
            }
            "warntime" => {
                if ms == 0 {
                    return Err(error(line, "warntime must be more than 0 ms".into()));
                }
                self.warntime = value;
                "warntime"
            }
            "deadtime" => {
                self.deadtime = value;
                "deadtime"
            }
            _ => {
                self.initdead = value;
                "initdead"
            }
        };
        self.setting(name, line, warnings);
        Ok(())
    }

    /// `udpport PORT`.
    fn udpport(&mut self, args: &[&str], line: usize) -> Result<(), ConfigError> {
        let word = single("udpport", args, line)?;
        let port = parse_port(word).map_err(|m| error(line, format!("udpport: {m}")))?;
        self.udpport = Some(port);
        self.digest_lines.push(line);
        Ok(())
    }

    /// `baud RATE`: once only, as Heartbeat ("Baudrate multiply specified").
    fn baud(&mut self, args: &[&str], line: usize) -> Result<(), ConfigError> {
        let word = single("baud", args, line)?;
        if let Some(first) = self.baud {
            return Err(error(
                line,
                format!(
                    "baud is given twice (first on line {}): keep one",
                    first.line
                ),
            ));
        }
        let rate = word
            .parse::<u32>()
            .ok()
            .filter(|r| BAUD_RATES.contains(r))
            .ok_or_else(|| {
                let rates: Vec<String> = BAUD_RATES.iter().map(|r| r.to_string()).collect();
                error(
                    line,
                    format!(
                        "baud `{word}` is not a serial speed: use one of {}",
                        rates.join(" ")
                    ),
                )
            })?;
        self.baud = Some(At { value: rate, line });
        self.digest_lines.push(line);
        Ok(())
    }

    /// `realtime on|off`.
    fn realtime(&mut self, args: &[&str], line: usize) -> Result<(), ConfigError> {
        let word = single("realtime", args, line)?;
        let value = parse_bool(word).ok_or_else(|| {
            error(
                line,
                format!("realtime `{word}` is not valid: use on or off"),
            )
        })?;
        self.realtime = Some(value);
        Ok(())
    }

    /// `bcast IF...` and `serial DEV...`: one medium per word.
    fn per_word_medium(
        &mut self,
        directive: &str,
        args: &[&str],
        line: usize,
    ) -> Result<(), ConfigError> {
        if args.is_empty() {
            let example = if directive == "bcast" {
                "bcast eth1"
            } else {
                "serial /dev/ttyS1"
            };
            return Err(error(
                line,
                format!("`{directive}` needs at least one name, e.g. `{example}`"),
            ));
        }
        for word in args {
            let medium = if directive == "bcast" {
                check_iface(word).map_err(|m| error(line, m))?;
                Medium::Bcast {
                    iface: word.to_string(),
                    line,
                }
            } else {
                check_serial(word).map_err(|m| error(line, m))?;
                Medium::Serial {
                    device: word.to_string(),
                    line,
                }
            };
            self.push_medium(medium)?;
        }
        Ok(())
    }

    /// `mcast IF GROUP PORT TTL LOOP`.
    fn mcast(&mut self, args: &[&str], line: usize) -> Result<(), ConfigError> {
        let [iface, group, port, ttl, loopback] = args else {
            return Err(error(
                line,
                format!(
                    "`mcast` takes 5 values IF GROUP PORT TTL LOOP, e.g. `mcast eth1 225.0.0.1 694 1 0`; got {}",
                    args.len()
                ),
            ));
        };
        check_iface(iface).map_err(|m| error(line, m))?;
        let group = group
            .parse::<Ipv4Addr>()
            .ok()
            .filter(Ipv4Addr::is_multicast)
            .ok_or_else(|| error(line, format!("mcast group `{group}` is not a multicast address (224.0.0.0 to 239.255.255.255)")))?;
        let port = parse_port(port).map_err(|m| error(line, format!("mcast port: {m}")))?;
        let ttl = ttl.parse::<u8>().ok().filter(|t| *t >= 1).ok_or_else(|| {
            error(
                line,
                format!("mcast ttl `{ttl}` must be a number from 1 to 255"),
            )
        })?;
        let loopback = match *loopback {
            "0" => false,
            "1" => true,
            other => return Err(error(line, format!("mcast loop `{other}` must be 0 or 1"))),
        };
        self.push_medium(Medium::Mcast {
            iface: iface.to_string(),
            group,
            port,
            ttl,
            loopback,
            line,
        })
    }

    /// `ucast IF ADDR`.
    fn ucast(&mut self, args: &[&str], line: usize) -> Result<(), ConfigError> {
        let [iface, addr] = args else {
            return Err(error(
                line,
                format!(
                    "`ucast` takes 2 values IF ADDR, e.g. `ucast eth1 10.0.0.2`; got {}",
                    args.len()
                ),
            ));
        };
        check_iface(iface).map_err(|m| error(line, m))?;
        let addr = addr
            .parse::<Ipv4Addr>()
            .ok()
            .filter(|a| !a.is_unspecified() && !a.is_multicast() && !a.is_broadcast())
            .ok_or_else(|| {
                error(
                    line,
                    format!(
                        "ucast address `{addr}` is not a unicast IPv4 address such as 10.0.0.2"
                    ),
                )
            })?;
        self.push_medium(Medium::Ucast {
            iface: iface.to_string(),
            addr,
            line,
        })
    }

    /// Adds a medium unless it repeats one (same link, or same ucast target).
    fn push_medium(&mut self, medium: Medium) -> Result<(), ConfigError> {
        let line = medium.line();
        for other in &self.media {
            let clash = match (&medium, other) {
                // Two ucast lines on one interface are the usual "one file for both
                // nodes" pattern (one names this node and is dropped by the shell).
                (
                    Medium::Ucast {
                        addr: a, iface: i, ..
                    },
                    Medium::Ucast {
                        addr: b, iface: j, ..
                    },
                ) => a == b && i == j,
                _ => medium.link_name() == other.link_name(),
            };
            if clash {
                let message = format!(
                    "`{} {}` repeats the link `{}` of line {}: each link may be declared once",
                    medium.kind(),
                    medium_target(&medium),
                    other.link_name(),
                    other.line()
                );
                return Err(error(line, message));
            }
        }
        if self.media.len() == LINKS_MAX {
            return Err(error(
                line,
                format!("too many heartbeat media: bascule handles at most {LINKS_MAX} links"),
            ));
        }
        self.media.push(medium);
        Ok(())
    }

    /// Fills defaults and checks the file as a whole.
    fn finish(self, warnings: &mut Vec<ConfigWarning>) -> Result<HaCf, ConfigError> {
        match self.nodes.len() {
            0 => {
                return Err(error(
                    0,
                    "no `node` line: list the pair's two nodes, e.g. `node debian1 debian2`".into(),
                ))
            }
            1 => {
                let only = &self.nodes[0];
                let message = format!(
                    "only one node (`{}`): bascule is a pair, list both nodes, e.g. `node {} OTHER`",
                    only.value, only.value
                );
                return Err(error(only.line, message));
            }
            _ => {}
        }
        if self.media.is_empty() {
            let message = "no heartbeat medium: add `bcast IF`, `ucast IF ADDR`, `mcast IF GROUP PORT TTL LOOP` or `serial DEV`";
            return Err(error(0, message.into()));
        }
        let timers = Timers::resolve(&self)?;
        timers.warn(&self, warnings);
        if !self.ignored.is_empty() {
            let list: Vec<String> = self
                .ignored
                .iter()
                .map(|i| format!("`{}` (line {})", i.value, i.line))
                .collect();
            let message = format!(
                "not implemented by bascule yet, ignored: {}; remove them or expect Heartbeat's behaviour to be missing",
                list.join(", ")
            );
            warnings.push(warning(0, message));
        }
        let mut digest_lines = self.digest_lines;
        digest_lines.sort_unstable();
        digest_lines.dedup();
        let ha = HaCf {
            nodes: self.nodes.into_iter().map(|n| n.value).collect(),
            logfile: self.logfile,
            debugfile: self.debugfile,
            logfacility: self.logfacility.unwrap_or(LogFacility::None),
            auto_failback: self.auto_failback.unwrap_or(AutoFailback::Legacy),
            keepalive: Duration::from_millis(timers.keepalive),
            warntime: Duration::from_millis(timers.warntime),
            deadtime: Duration::from_millis(timers.deadtime),
            initdead: Duration::from_millis(timers.initdead),
            udpport: self.udpport.unwrap_or(UDPPORT_DEFAULT),
            baud: self.baud.map_or(BAUD_DEFAULT, |b| b.value),
            media: self.media,
            realtime: self.realtime.unwrap_or(true),
            digest_lines,
        };
        assert!(ha.nodes.len() == NODES && ha.nodes[0] != ha.nodes[1]);
        assert!(!ha.media.is_empty() && ha.media.len() <= LINKS_MAX);
        assert!(
            ha.keepalive.millis() > 0 && ha.keepalive < ha.deadtime && ha.deadtime <= ha.initdead
        );
        Ok(ha)
    }
}

/// The four timers with defaults applied, in milliseconds.
struct Timers {
    keepalive: u64,
    warntime: u64,
    deadtime: u64,
    initdead: u64,
}

impl Timers {
    /// Applies Heartbeat's defaults and its hard rules (errors).
    fn resolve(b: &Builder) -> Result<Timers, ConfigError> {
        let keepalive = b.keepalive.map_or(KEEPALIVE_DEFAULT_MS, |t| t.value);
        let deadtime = b.deadtime.map_or(DEADTIME_DEFAULT_MS, |t| t.value);
        let warntime = b.warntime.map_or((deadtime / 2).max(1), |t| t.value);
        let initdead = b.initdead.map_or(
            if deadtime > INITDEAD_SAME_ABOVE_MS {
                deadtime
            } else if deadtime < INITDEAD_FLAT_BELOW_MS {
                INITDEAD_FLAT_MS
            } else {
                2 * deadtime
            },
            |t| t.value,
        );
        if deadtime <= keepalive {
            let line = b.deadtime.or(b.keepalive).map_or(0, |t| t.line);
            let message = format!(
                "deadtime ({deadtime} ms) must be longer than keepalive ({keepalive} ms); \
                 Heartbeat recommends at least 2 x keepalive, e.g. keepalive 2 and deadtime 30"
            );
            return Err(error(line, message));
        }
        if initdead < deadtime {
            let line = b.initdead.or(b.deadtime).map_or(0, |t| t.line);
            let message = format!(
                "initdead ({initdead} ms) is shorter than deadtime ({deadtime} ms): \
                 make initdead at least deadtime, ideally 2 x deadtime"
            );
            return Err(error(line, message));
        }
        Ok(Timers {
            keepalive,
            warntime,
            deadtime,
            initdead,
        })
    }

    /// Heartbeat's advisory rules (warnings).
    fn warn(&self, b: &Builder, warnings: &mut Vec<ConfigWarning>) {
        let Timers {
            keepalive,
            warntime,
            deadtime,
            initdead,
        } = *self;
        if deadtime <= 2 * keepalive {
            let line = b.deadtime.map_or(0, |t| t.line);
            let message = format!(
                "deadtime ({deadtime} ms) is at most 2 x keepalive ({keepalive} ms): \
                 two lost heartbeats declare the peer dead; make deadtime larger"
            );
            warnings.push(warning(line, message));
        }
        if let Some(At { line, .. }) = b.initdead {
            if initdead < 2 * deadtime {
                let message = format!(
                    "initdead ({initdead} ms) is less than 2 x deadtime ({deadtime} ms): \
                     at boot the peer may be declared dead before its network is up"
                );
                warnings.push(warning(line, message));
            }
        }
        let line = b.warntime.map_or(0, |t| t.line);
        if warntime >= deadtime {
            let message = format!(
                "warntime ({warntime} ms) is not shorter than deadtime ({deadtime} ms): \
                 no late-heartbeat warning will come before the peer is declared dead"
            );
            warnings.push(warning(line, message));
        } else if warntime <= keepalive {
            let message = format!(
                "warntime ({warntime} ms) is at most keepalive ({keepalive} ms): \
                 every heartbeat would be reported late; make warntime larger"
            );
            warnings.push(warning(line, message));
        }
    }
}

/// Heartbeat's `cl_str_to_boolean` words, case-insensitive.
pub fn parse_bool(word: &str) -> Option<bool> {
    const TRUE: [&str; 5] = ["true", "on", "yes", "y", "1"];
    const FALSE: [&str; 5] = ["false", "off", "no", "n", "0"];
    if TRUE.iter().any(|t| word.eq_ignore_ascii_case(t)) {
        Some(true)
    } else if FALSE.iter().any(|f| word.eq_ignore_ascii_case(f)) {
        Some(false)
    } else {
        None
    }
}

/// Parses a Heartbeat time (`2`, `0.5`, `500ms`, `1500000us`) into milliseconds,
/// rounded to the nearest millisecond as Heartbeat's `get_msec` does.
pub fn parse_time_ms(word: &str) -> Result<u64, String> {
    const USAGE: &str = "use seconds (`2`, `0.5`) or milliseconds (`500ms`)";
    /// Most digits accepted on either side of the point (keeps u128 math exact).
    const DIGITS_MAX: usize = 12;
    let split = word
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(word.len());
    let (number, unit) = word.split_at(split);
    let unit_us: u128 = match unit.to_ascii_lowercase().as_str() {
        "" => 1_000_000,
        "ms" | "msec" => 1_000,
        "us" | "usec" => 1,
        "s" | "sec" => {
            return Err(format!(
                "`{word}`: bare numbers are already seconds; write `{number}`"
            ))
        }
        _ => return Err(format!("`{word}` is not a time: {USAGE}")),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let has_digits = !whole.is_empty() || !fraction.is_empty();
    let valid = has_digits
        && !fraction.contains('.')
        && whole.len() <= DIGITS_MAX
        && fraction.len() <= DIGITS_MAX;
    if !valid {
        return Err(format!("`{word}` is not a time: {USAGE}"));
    }
    let whole_value: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| format!("`{word}`: {USAGE}"))?
    };
    let fraction_value: u128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().map_err(|_| format!("`{word}`: {USAGE}"))?
    };
    let scale = 10u128.pow(fraction.len() as u32);
    let total_us = whole_value * unit_us + fraction_value * unit_us / scale;
    let ms = (total_us + 500) / 1_000;
    if ms > u128::from(TIME_MAX_MS) {
        return Err(format!(
            "`{word}` is longer than one day ({TIME_MAX_MS} ms); check the unit"
        ));
    }
    Ok(ms as u64)
}

/// Parses a UDP port 1..=65535.
fn parse_port(word: &str) -> Result<u16, String> {
    word.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("`{word}` is not a UDP port (1 to 65535)"))
}

/// The one value of a single-valued directive.
fn single<'a>(directive: &str, args: &[&'a str], line: usize) -> Result<&'a str, ConfigError> {
    match args {
        [value] => Ok(value),
        [] => Err(error(
            line,
            format!("`{directive}` needs a value, e.g. `{}`", example(directive)),
        )),
        _ => Err(error(
            line,
            format!(
                "`{directive}` takes one value, got {}: `{}`",
                args.len(),
                args.join(" ")
            ),
        )),
    }
}

/// A sample line for a directive, used in messages.
fn example(directive: &str) -> &'static str {
    match directive {
        "logfile" => "logfile /var/log/ha.log",
        "debugfile" => "debugfile /var/log/ha-debug",
        "logfacility" => "logfacility local0",
        "auto_failback" => "auto_failback off",
        "keepalive" => "keepalive 2",
        "warntime" => "warntime 10",
        "deadtime" => "deadtime 30",
        "initdead" => "initdead 60",
        "udpport" => "udpport 694",
        "baud" => "baud 19200",
        _ => "realtime on",
    }
}

/// A node name: a host name (letters, digits, `-`, `_`, `.`), as `uname -n` gives.
fn check_node_name(name: &str) -> Result<(), String> {
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !valid_chars || name.len() > NODE_LEN_MAX {
        return Err(format!(
            "node name `{name}` is not a host name: use letters, digits, `-`, `_` and `.` \
             (at most {NODE_LEN_MAX}), as `uname -n` prints"
        ));
    }
    Ok(())
}

/// An interface name as Linux accepts it.
fn check_iface(iface: &str) -> Result<(), String> {
    let valid = !iface.is_empty()
        && iface.len() <= IFACE_LEN_MAX
        && iface
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
    if !valid {
        return Err(format!(
            "`{iface}` is not an interface name (at most {IFACE_LEN_MAX} characters, no `/` or `:`), e.g. eth1"
        ));
    }
    Ok(())
}

/// A serial device: an absolute path with a basename (the link's name).
fn check_serial(device: &str) -> Result<(), String> {
    if !device.starts_with('/') || device.ends_with('/') {
        return Err(format!(
            "serial device `{device}` must be an absolute path such as /dev/ttyS1"
        ));
    }
    Ok(())
}

/// What a medium names, for messages (`eth1`, `eth1 10.0.0.2`, `/dev/ttyS0`).
fn medium_target(medium: &Medium) -> String {
    match medium {
        Medium::Bcast { iface, .. } => iface.clone(),
        Medium::Mcast { iface, group, .. } => format!("{iface} {group}"),
        Medium::Ucast { iface, addr, .. } => format!("{iface} {addr}"),
        Medium::Serial { device, .. } => device.clone(),
    }
}

/// "unknown directive `keepalve`", with the closest known directive if near.
fn unknown_directive(word: &str) -> String {
    /// Largest edit distance at which a directive is suggested.
    const SUGGEST_DISTANCE_MAX: usize = 2;
    let closest = IMPLEMENTED
        .iter()
        .chain(UNIMPLEMENTED.iter())
        .map(|known| (edit_distance(word, known), *known))
        .min();
    match closest {
        Some((distance, known)) if distance <= SUGGEST_DISTANCE_MAX => {
            format!("unknown directive `{word}`; did you mean `{known}`?")
        }
        _ => format!("unknown directive `{word}`"),
    }
}

/// Levenshtein distance (bounded inputs: directive words of one config line).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}
