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
//!   `udp`, Heartbeat's old name for `bcast`, is read as `bcast` with a warning.
//! - A timer set twice warns and the last value wins (Heartbeat keeps the last
//!   silently); `baud` twice is an error, as in Heartbeat.
//! - Two `ucast` lines on one interface are allowed (one file for both nodes: the
//!   shell drops the one naming this node's own address); any other repeated link
//!   name is an error, since links are named in logs and status.
//!
//! - Takeover directives (bascule's own where Heartbeat has none):
//!   - `ping ADDR...` and `ping_group NAME ADDR...` declare ping nodes, as Heartbeat
//!     (a group counts as reachable when any member answers); `deadping T`
//!     (default deadtime, as Heartbeat) is the silence after which one is lost.
//!   - `fence COMMAND [ARGS...]` runs before taking over from a dead peer; the rest
//!     of the line is split on blanks only (commas stay in arguments); COMMAND is an
//!     absolute path or a bare name looked up in PATH. `fence_delay T` (default
//!     [`FENCE_DELAY_DEFAULT_MS`], 0 allowed) is how long the non-preferred node
//!     waits before fencing, so the pair never shoot each other at once;
//!     `fence_timeout T` (default [`FENCE_TIMEOUT_DEFAULT_MS`]) bounds one attempt.
//!   - `stonith` and `stonith_host` are refused ([`STONITH_REFUSED`]): Heartbeat's
//!     plugins do not exist here and silently ignoring them would drop fencing.
//!   - `on_stop_failure reboot|/ABS/COMMAND [ARGS...]` (default reboot, as
//!     Heartbeat) after `stop_retries N` (default 3) failed stops; `ignore` is
//!     refused, since the peer would then start a resource that may still run here.
//!   - `start_backoff T` (default 10 s; doubled per failed start up to
//!     [`START_BACKOFF_CAP_MS`]) and `action_timeout T` (default 120 s, as
//!     Heartbeat's resource timeout) per start, stop or status.
//! - The digest ([`HaCf::digest_lines`], `digest.rs`) carries what both nodes must
//!   share to decide ownership alike: nodes, timers, auto_failback, ports, ping
//!   nodes and deadping, whether fencing is on, stop_retries, start_backoff and
//!   action_timeout. The fence command, fence_delay, fence_timeout and
//!   on_stop_failure are how *this* node acts and may differ.
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
/// Default `fence_delay`: long enough for a typical power switch or IPMI fence to
/// cut the non-preferred node before it fires its own.
pub const FENCE_DELAY_DEFAULT_MS: u64 = 10_000;
/// Default `fence_timeout`: one fence attempt, then it counts as failed (retried).
pub const FENCE_TIMEOUT_DEFAULT_MS: u64 = 60_000;
/// Default `stop_retries`: stops tried again before escalating.
pub const STOP_RETRIES_DEFAULT: u32 = 3;
/// Largest `stop_retries` accepted (more only delays the escalation).
pub const STOP_RETRIES_MAX: u32 = 100;
/// Default `start_backoff`: wait after a failed, rolled-back start.
pub const START_BACKOFF_DEFAULT_MS: u64 = 10_000;
/// The doubled backoff never exceeds this (5 min), and neither may `start_backoff`.
pub const START_BACKOFF_CAP_MS: u64 = 300_000;
/// Default `action_timeout` per start, stop or status (Heartbeat's resource timeout).
pub const ACTION_TIMEOUT_DEFAULT_MS: u64 = 120_000;
/// Most ping nodes (`ping` addresses plus `ping_group`s): a count fits in the heartbeat.
pub const PING_NODES_MAX: usize = 16;
/// Most addresses in one `ping_group`.
pub const PING_GROUP_ADDRS_MAX: usize = 16;
/// The error for Heartbeat's `stonith` and `stonith_host`.
pub const STONITH_REFUSED: &str = "stonith is not supported; use `fence COMMAND ARGS` (see README)";

/// Directives bascule implements.
const IMPLEMENTED: [&str; 26] = [
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
    "ping",
    "ping_group",
    "deadping",
    "fence",
    "fence_delay",
    "fence_timeout",
    "on_stop_failure",
    "stop_retries",
    "start_backoff",
    "action_timeout",
];

/// Directives whose arguments are the rest of the line split on blanks only
/// (a command line: commas belong to its arguments).
const COMMAND_DIRECTIVES: [&str; 2] = ["fence", "on_stop_failure"];

/// Directives Heartbeat 1-3 knows that bascule does not implement yet: accepted,
/// ignored and named in one warning, so a migrated ha.cf still starts.
/// (`stonith` and `stonith_host` are refused: see [`STONITH_REFUSED`].)
pub const UNIMPLEMENTED: [&str; 38] = [
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
    "quorum_server",
    "record_config_changes",
    "record_pengine_inputs",
    "respawn",
    "rtprio",
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
    /// `eth1-ucast`, and for serial the device without `/dev/` (`ttyS0`, and
    /// `pts/3` rather than a bare `3` that would say nothing).
    pub fn link_name(&self) -> String {
        match self {
            Medium::Bcast { iface, .. } => iface.clone(),
            Medium::Mcast { iface, .. } => format!("{iface}-mcast"),
            Medium::Ucast { iface, .. } => format!("{iface}-ucast"),
            Medium::Serial { device, .. } => match device.strip_prefix("/dev/") {
                Some(rest) => rest.to_string(),
                None => device.rsplit('/').next().unwrap_or(device).to_string(),
            },
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

/// A ping node: one `ping` address (named by itself) or one `ping_group`.
/// Reachable when any of its addresses answers within `deadping`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PingNode {
    /// The address as text for `ping`, the group's NAME for `ping_group`.
    pub name: String,
    /// Addresses probed (one for `ping`, 1..=[`PING_GROUP_ADDRS_MAX`] for a group).
    pub addrs: Vec<Ipv4Addr>,
    /// Declared by `ping_group`.
    pub group: bool,
    /// 1-based line in ha.cf.
    pub line: usize,
}

/// An external command and its arguments, run without a shell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandLine {
    /// An absolute path, or (for `fence`) a bare name looked up in PATH.
    pub program: String,
    /// Arguments, split on blanks.
    pub args: Vec<String>,
    /// 1-based line in ha.cf.
    pub line: usize,
}

impl CommandLine {
    /// `program arg...` as one line, for `check-config` and logs.
    pub fn render(&self) -> String {
        let mut out = self.program.clone();
        for arg in &self.args {
            out.push(' ');
            out.push_str(arg);
        }
        out
    }
}

/// `on_stop_failure`: what to do once a stop failed `stop_retries` more times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopFailure {
    /// Reboot this node (Heartbeat's behaviour), so the resource surely stops.
    Reboot,
    /// Run this command (the lab: a marker file; or a site's own escalation).
    Command(CommandLine),
}

impl StopFailure {
    /// `reboot` or the command line, for `check-config`.
    pub fn render(&self) -> String {
        match self {
            StopFailure::Reboot => "reboot".into(),
            StopFailure::Command(command) => command.render(),
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
    /// `ping` and `ping_group` in file order (at most [`PING_NODES_MAX`]).
    pub ping_nodes: Vec<PingNode>,
    /// `deadping` (default deadtime): silence after which a ping node is lost.
    pub deadping: Duration,
    /// `fence COMMAND ARGS`: run (and succeed) before taking over from a dead peer.
    pub fence: Option<CommandLine>,
    /// `fence_delay` (default [`FENCE_DELAY_DEFAULT_MS`]; may be 0): the
    /// non-preferred node's wait before fencing.
    pub fence_delay: Duration,
    /// `fence_timeout` (default [`FENCE_TIMEOUT_DEFAULT_MS`], > 0): one attempt's limit.
    pub fence_timeout: Duration,
    /// `on_stop_failure` (default reboot).
    pub on_stop_failure: StopFailure,
    /// `stop_retries` (default [`STOP_RETRIES_DEFAULT`], 0..=[`STOP_RETRIES_MAX`]).
    pub stop_retries: u32,
    /// `start_backoff` (default [`START_BACKOFF_DEFAULT_MS`], 0 < t <=
    /// [`START_BACKOFF_CAP_MS`]): first wait after a failed start, then doubled.
    pub start_backoff: Duration,
    /// `action_timeout` (default [`ACTION_TIMEOUT_DEFAULT_MS`], > 0) per resource operation.
    pub action_timeout: Duration,
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
    ping_nodes: Vec<PingNode>,
    deadping: Option<At<u64>>,
    fence: Option<CommandLine>,
    fence_delay: Option<At<u64>>,
    fence_timeout: Option<At<u64>>,
    on_stop_failure: Option<StopFailure>,
    stop_retries: Option<u32>,
    start_backoff: Option<At<u64>>,
    action_timeout: Option<At<u64>>,
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
        let args: Vec<&str> = if COMMAND_DIRECTIVES.contains(&directive) {
            command_words(content, directive)
        } else {
            words.collect()
        };
        builder.directive(directive, &args, line, warnings)?;
    }
    builder.finish(warnings)
}

/// The words after `directive` in `content`, split on blanks only.
fn command_words<'a>(content: &'a str, directive: &str) -> Vec<&'a str> {
    let start = content.trim_start_matches(|c: char| c.is_whitespace() || c == ',');
    let rest = start.strip_prefix(directive).unwrap_or("");
    rest.trim_start_matches(|c: char| c.is_whitespace() || c == ',')
        .split_whitespace()
        .collect()
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
            "ping" => self.ping(args, line),
            "ping_group" => self.ping_group(args, line),
            "deadping" | "fence_delay" | "fence_timeout" | "start_backoff" | "action_timeout" => {
                self.policy_time(directive, args, line, warnings)
            }
            "fence" => self.fence(args, line),
            "on_stop_failure" => self.on_stop_failure(args, line),
            "stop_retries" => self.stop_retries(args, line, warnings),
            "stonith" | "stonith_host" => Err(error(line, STONITH_REFUSED.into())),
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
        self.repeated(name, line, warnings);
        self.digest_lines.push(line);
    }

    /// Warns when setting `name` was already given (the last one wins).
    fn repeated(&mut self, name: &'static str, line: usize, warnings: &mut Vec<ConfigWarning>) {
        if let Some(first) = self.set_lines.iter().find(|s| s.value == name) {
            let message = format!(
                "`{name}` is also set on line {}; the last one (line {line}) wins",
                first.line
            );
            warnings.push(warning(line, message));
        }
        self.set_lines.push(At { value: name, line });
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

    /// `ping ADDR...`: one ping node per address.
    fn ping(&mut self, args: &[&str], line: usize) -> Result<(), ConfigError> {
        if args.is_empty() {
            return Err(error(
                line,
                "`ping` needs at least one address, e.g. `ping 192.168.69.1`".into(),
            ));
        }
        for word in args {
            let addr = parse_ping_addr(word).map_err(|m| error(line, m))?;
            self.push_ping_node(PingNode {
                name: addr.to_string(),
                addrs: vec![addr],
                group: false,
                line,
            })?;
        }
        Ok(())
    }

    /// `ping_group NAME ADDR...`: one ping node reachable through any address.
    fn ping_group(&mut self, args: &[&str], line: usize) -> Result<(), ConfigError> {
        let Some((name, words)) = args.split_first().filter(|(_, w)| !w.is_empty()) else {
            return Err(error(line, "`ping_group` takes NAME ADDR..., e.g. `ping_group routers 192.168.69.1 192.168.69.2`".into()));
        };
        let plain = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !plain || name.parse::<Ipv4Addr>().is_ok() {
            return Err(error(line, format!("ping_group name `{name}` must be a name of letters, digits, `_`, `.` and `-`, not an address")));
        }
        if words.len() > PING_GROUP_ADDRS_MAX {
            return Err(error(
                line,
                format!(
                    "ping_group `{name}` has {} addresses: at most {PING_GROUP_ADDRS_MAX}",
                    words.len()
                ),
            ));
        }
        let mut addrs = Vec::with_capacity(words.len());
        for word in words {
            let addr = parse_ping_addr(word).map_err(|m| error(line, m))?;
            if addrs.contains(&addr) {
                return Err(error(
                    line,
                    format!("ping_group `{name}` lists {addr} twice"),
                ));
            }
            addrs.push(addr);
        }
        self.push_ping_node(PingNode {
            name: name.to_string(),
            addrs,
            group: true,
            line,
        })
    }

    /// Adds a ping node unless its name or one of its addresses is already used.
    fn push_ping_node(&mut self, node: PingNode) -> Result<(), ConfigError> {
        let line = node.line;
        for other in &self.ping_nodes {
            let shared = node.addrs.iter().find(|a| other.addrs.contains(a));
            if let Some(addr) = shared {
                return Err(error(line, format!("ping address {addr} is already used on line {}: each address may be probed once", other.line)));
            }
            if other.name == node.name {
                return Err(error(
                    line,
                    format!(
                        "ping_group `{}` is already declared on line {}",
                        node.name, other.line
                    ),
                ));
            }
        }
        if self.ping_nodes.len() == PING_NODES_MAX {
            return Err(error(line, format!("too many ping nodes: at most {PING_NODES_MAX} (`ping` addresses plus `ping_group`s)")));
        }
        self.ping_nodes.push(node);
        self.digest_lines.push(line);
        Ok(())
    }

    /// `deadping`, `fence_delay`, `fence_timeout`, `start_backoff`, `action_timeout`.
    fn policy_time(
        &mut self,
        directive: &str,
        args: &[&str],
        line: usize,
        warnings: &mut Vec<ConfigWarning>,
    ) -> Result<(), ConfigError> {
        let word = single(directive, args, line)?;
        let ms = parse_time_ms(word).map_err(|m| error(line, format!("{directive}: {m}")))?;
        let value = Some(At { value: ms, line });
        // (slot, name, zero allowed, in the digest)
        let (slot, name, zero_ok, digest) = match directive {
            "deadping" => (&mut self.deadping, "deadping", false, true),
            "fence_delay" => (&mut self.fence_delay, "fence_delay", true, false),
            "fence_timeout" => (&mut self.fence_timeout, "fence_timeout", false, false),
            "start_backoff" => (&mut self.start_backoff, "start_backoff", false, true),
            _ => (&mut self.action_timeout, "action_timeout", false, true),
        };
        if ms == 0 && !zero_ok {
            return Err(error(line, format!("{name} must be more than 0 ms")));
        }
        if name == "start_backoff" && ms > START_BACKOFF_CAP_MS {
            return Err(error(line, format!("start_backoff ({ms} ms) may be at most {START_BACKOFF_CAP_MS} ms, the cap its doubling stops at")));
        }
        *slot = value;
        if digest {
            self.setting(name, line, warnings);
        } else {
            self.repeated(name, line, warnings);
        }
        Ok(())
    }

    /// `fence COMMAND [ARGS...]`: once only.
    fn fence(&mut self, args: &[&str], line: usize) -> Result<(), ConfigError> {
        if let Some(first) = &self.fence {
            return Err(error(
                line,
                format!(
                    "fence is given twice (first on line {}): keep one command",
                    first.line
                ),
            ));
        }
        let Some((program, rest)) = args.split_first() else {
            return Err(error(
                line,
                "`fence` needs a command, e.g. `fence /usr/local/sbin/fence-peer debian2`".into(),
            ));
        };
        let bare = program
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'+' | b'-'));
        let valid = (program.starts_with('/') && !program.ends_with('/'))
            || (bare && !program.starts_with('-') && !program.starts_with('.'));
        if !valid {
            return Err(error(line, format!("fence command `{program}` must be an absolute path or a bare command name found in PATH")));
        }
        self.fence = Some(command_line(program, rest, line));
        self.digest_lines.push(line);
        Ok(())
    }

    /// `on_stop_failure reboot|/ABS/COMMAND [ARGS...]`.
    fn on_stop_failure(&mut self, args: &[&str], line: usize) -> Result<(), ConfigError> {
        let policy = match args {
            [] => return Err(error(line, "`on_stop_failure` needs `reboot` or an absolute command path, e.g. `on_stop_failure reboot`".into())),
            ["reboot"] => StopFailure::Reboot,
            ["reboot", ..] => return Err(error(line, "`on_stop_failure reboot` takes no arguments".into())),
            ["ignore", ..] => return Err(error(line, "on_stop_failure `ignore` is refused: the peer would start a resource that may still run here; use `reboot` or a command".into())),
            [program, rest @ ..] if program.starts_with('/') && !program.ends_with('/') => {
                StopFailure::Command(command_line(program, rest, line))
            }
            [other, ..] => return Err(error(line, format!("on_stop_failure `{other}` is not valid: use `reboot` or an absolute command path such as /usr/local/sbin/escalate"))),
        };
        self.on_stop_failure = Some(policy);
        Ok(())
    }

    /// `stop_retries N`.
    fn stop_retries(
        &mut self,
        args: &[&str],
        line: usize,
        warnings: &mut Vec<ConfigWarning>,
    ) -> Result<(), ConfigError> {
        let word = single("stop_retries", args, line)?;
        let retries = word
            .parse::<u32>()
            .ok()
            .filter(|n| *n <= STOP_RETRIES_MAX)
            .ok_or_else(|| {
                error(
                    line,
                    format!("stop_retries `{word}` must be a number from 0 to {STOP_RETRIES_MAX}"),
                )
            })?;
        self.stop_retries = Some(retries);
        self.setting("stop_retries", line, warnings);
        Ok(())
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
        self.warn_policy(&timers, warnings);
        self.warn_ignored(warnings);
        let ms_or = |t: Option<At<u64>>, default_ms: u64| {
            Duration::from_millis(t.map_or(default_ms, |t| t.value))
        };
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
            ping_nodes: self.ping_nodes,
            deadping: ms_or(self.deadping, timers.deadtime),
            fence: self.fence,
            fence_delay: ms_or(self.fence_delay, FENCE_DELAY_DEFAULT_MS),
            fence_timeout: ms_or(self.fence_timeout, FENCE_TIMEOUT_DEFAULT_MS),
            on_stop_failure: self.on_stop_failure.unwrap_or(StopFailure::Reboot),
            stop_retries: self.stop_retries.unwrap_or(STOP_RETRIES_DEFAULT),
            start_backoff: ms_or(self.start_backoff, START_BACKOFF_DEFAULT_MS),
            action_timeout: ms_or(self.action_timeout, ACTION_TIMEOUT_DEFAULT_MS),
            digest_lines,
        };
        assert!(ha.nodes.len() == NODES && ha.nodes[0] != ha.nodes[1]);
        assert!(!ha.media.is_empty() && ha.media.len() <= LINKS_MAX);
        assert!(
            ha.keepalive.millis() > 0 && ha.keepalive < ha.deadtime && ha.deadtime <= ha.initdead
        );
        assert!(ha.ping_nodes.len() <= PING_NODES_MAX && ha.deadping.millis() > 0);
        assert!(ha.fence_timeout.millis() > 0 && ha.action_timeout.millis() > 0);
        assert!((1..=START_BACKOFF_CAP_MS).contains(&ha.start_backoff.millis()));
        Ok(ha)
    }

    /// Names every ignored (unimplemented) directive in one warning.
    fn warn_ignored(&self, warnings: &mut Vec<ConfigWarning>) {
        if self.ignored.is_empty() {
            return;
        }
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

    /// Takeover settings that have no effect or are risky (warnings).
    fn warn_policy(&self, timers: &Timers, warnings: &mut Vec<ConfigWarning>) {
        if let Some(At { line, value }) = self.deadping {
            if self.ping_nodes.is_empty() {
                warnings.push(warning(
                    line,
                    "deadping has no effect without `ping` or `ping_group`".into(),
                ));
            } else if value <= 2 * timers.keepalive {
                let message = format!(
                    "deadping ({value} ms) is at most 2 x keepalive ({} ms): \
                     two lost pings declare a ping node lost; make deadping larger",
                    timers.keepalive
                );
                warnings.push(warning(line, message));
            }
        }
        if self.fence.is_none() {
            for (name, set) in [
                ("fence_delay", self.fence_delay),
                ("fence_timeout", self.fence_timeout),
            ] {
                if let Some(At { line, .. }) = set {
                    warnings.push(warning(
                        line,
                        format!("{name} has no effect without `fence`"),
                    ));
                }
            }
        }
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

/// A ping address: unicast IPv4.
fn parse_ping_addr(word: &str) -> Result<Ipv4Addr, String> {
    word.parse::<Ipv4Addr>()
        .ok()
        .filter(|a| !a.is_unspecified() && !a.is_multicast() && !a.is_broadcast())
        .ok_or_else(|| {
            format!("ping address `{word}` is not a unicast IPv4 address such as 192.168.69.1")
        })
}

/// A [`CommandLine`] from its words.
fn command_line(program: &str, args: &[&str], line: usize) -> CommandLine {
    CommandLine {
        program: program.to_string(),
        args: args.iter().map(|a| a.to_string()).collect(),
        line,
    }
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
        "deadping" => "deadping 30",
        "fence_delay" => "fence_delay 10",
        "fence_timeout" => "fence_timeout 60",
        "start_backoff" => "start_backoff 10",
        "action_timeout" => "action_timeout 120",
        "stop_retries" => "stop_retries 3",
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

#[cfg(test)]
mod tests {
    use super::*;

    const GUIDE_BCAST: &str = include_str!("../../tests/fixtures/config/guide-bcast/ha.cf");
    const GUIDE_SERIAL: &str = include_str!("../../tests/fixtures/config/guide-serial/ha.cf");
    /// The smallest valid file: two nodes, one medium.
    const MINIMAL: &str = "node debian1 debian2\nbcast eth1\n";

    #[track_caller]
    fn ok(text: &str) -> (HaCf, Vec<ConfigWarning>) {
        let mut warnings = Vec::new();
        match parse(text, &mut warnings) {
            Ok(ha) => (ha, warnings),
            Err(e) => panic!("unexpected error: {e}\n--- text:\n{text}"),
        }
    }

    #[track_caller]
    fn err(text: &str) -> ConfigError {
        let mut warnings = Vec::new();
        match parse(text, &mut warnings) {
            Ok(ha) => panic!("unexpected success: {ha:?}\n--- text:\n{text}"),
            Err(e) => {
                assert_eq!(e.file, FileKind::HaCf);
                e
            }
        }
    }

    /// MINIMAL plus `extra` lines (which start on line 3).
    fn with(extra: &str) -> String {
        format!("{MINIMAL}{extra}")
    }

    #[track_caller]
    fn assert_err(text: &str, line: usize, needle: &str) {
        let e = err(text);
        assert_eq!(e.line, line, "{e}");
        assert!(
            e.message.contains(needle),
            "`{}` lacks `{needle}`",
            e.message
        );
    }

    fn ms(d: Duration) -> u64 {
        d.millis()
    }

    // ==== Tests for the guide's files ====

    #[test]
    fn guide_bcast_file_parses_verbatim() {
        let (ha, warnings) = ok(GUIDE_BCAST);
        assert_eq!(ha.nodes, ["debian1", "debian2"]);
        assert_eq!(ha.logfile.as_deref(), Some("/var/log/ha.log"));
        assert_eq!(ha.debugfile, None);
        assert_eq!(ha.logfacility, LogFacility::Facility(16));
        assert_eq!(ha.auto_failback, AutoFailback::Off);
        assert_eq!(
            (
                ms(ha.keepalive),
                ms(ha.warntime),
                ms(ha.deadtime),
                ms(ha.initdead)
            ),
            (2_000, 10_000, 60_000, 80_000)
        );
        assert_eq!(ha.udpport, 694);
        assert_eq!(ha.baud, BAUD_DEFAULT);
        assert!(ha.realtime);
        assert_eq!(
            ha.media,
            [Medium::Bcast {
                iface: "eth1".into(),
                line: 13
            }]
        );
        assert_eq!(ha.media[0].link_name(), "eth1");
        assert_eq!(ha.digest_lines, [1, 5, 7, 8, 9, 10, 12]);
        // initdead 80 < 2 x deadtime 60: the one warning, on the initdead line.
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].line, 10);
        assert!(warnings[0].message.contains("2 x deadtime"));
    }

    #[test]
    fn guide_serial_file_parses_verbatim() {
        let (ha, warnings) = ok(GUIDE_SERIAL);
        assert_eq!(ha.nodes, ["debian1", "debian2"]);
        assert_eq!(ha.baud, 9600);
        assert_eq!(ha.udpport, UDPPORT_DEFAULT);
        assert_eq!(
            ha.media,
            [
                Medium::Bcast {
                    iface: "eth0".into(),
                    line: 13
                },
                Medium::Serial {
                    device: "/dev/ttyS0".into(),
                    line: 14
                },
            ]
        );
        let names: Vec<String> = ha.media.iter().map(Medium::link_name).collect();
        assert_eq!(names, ["eth0", "ttyS0"]);
        assert_eq!(ha.digest_lines, [1, 5, 7, 8, 9, 10, 12]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
    }

    // ==== Tests for defaults ====

    #[test]
    fn minimal_file_gets_heartbeat_defaults() {
        let (ha, warnings) = ok(MINIMAL);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(ms(ha.keepalive), KEEPALIVE_DEFAULT_MS);
        assert_eq!(ms(ha.deadtime), DEADTIME_DEFAULT_MS);
        assert_eq!(ms(ha.warntime), DEADTIME_DEFAULT_MS / 2);
        assert_eq!(ms(ha.initdead), DEADTIME_DEFAULT_MS);
        assert_eq!(ha.udpport, UDPPORT_DEFAULT);
        assert_eq!(ha.baud, BAUD_DEFAULT);
        assert_eq!(ha.auto_failback, AutoFailback::Legacy);
        assert_eq!(ha.logfacility, LogFacility::None);
        assert_eq!((ha.logfile.clone(), ha.debugfile.clone()), (None, None));
        assert!(ha.realtime);
        assert_eq!(ha.digest_lines, [1]);
    }

    #[test]
    fn initdead_default_follows_heartbeat_rule() {
        // (deadtime, expected initdead): > 10 s -> deadtime; < 6 s -> 12 s; else 2 x.
        for (deadtime, initdead) in [
            (5, 12_000),
            (6, 12_000),
            (8, 16_000),
            (10, 20_000),
            (11, 11_000),
            (60, 60_000),
        ] {
            let (ha, _) = ok(&with(&format!("keepalive 1\ndeadtime {deadtime}\n")));
            assert_eq!(ms(ha.initdead), initdead, "deadtime {deadtime}");
        }
    }

    #[test]
    fn warntime_default_is_half_deadtime() {
        let (ha, _) = ok(&with("deadtime 60\n"));
        assert_eq!(ms(ha.warntime), 30_000);
    }

    // ==== Tests for node ====

    #[test]
    fn node_names_on_several_lines_and_commas_are_collected() {
        let (ha, _) = ok("node debian1\nnode DEBIAN2\nbcast eth1\n");
        assert_eq!(ha.nodes, ["debian1", "debian2"]);
        assert_eq!(ha.digest_lines, [1, 2]);
        let (ha, _) = ok("node debian1, debian2\nbcast eth1\n");
        assert_eq!(ha.nodes, ["debian1", "debian2"]);
    }

    #[test]
    fn node_errors_name_the_line() {
        assert_err("bcast eth1\n", 0, "no `node` line");
        assert_err("bcast eth1\nnode debian1\n", 2, "only one node");
        assert_err("node a b\nbcast eth1\nnode c\n", 3, "third node `c`");
        assert_err("node a b c\nbcast eth1\n", 1, "exactly two nodes");
        assert_err(
            "node a\nbcast eth1\nnode A\n",
            3,
            "listed twice (first on line 1)",
        );
        assert_err("node\nbcast eth1\n", 1, "needs the node names");
        assert_err("node a b=c\nbcast eth1\n", 1, "not a host name");
    }

    // ==== Tests for logging directives ====

    #[test]
    fn logfile_and_debugfile_take_one_path() {
        let (ha, _) = ok(&with(
            "logfile /var/log/ha.log\ndebugfile /var/log/ha-debug\n",
        ));
        assert_eq!(ha.logfile.as_deref(), Some("/var/log/ha.log"));
        assert_eq!(ha.debugfile.as_deref(), Some("/var/log/ha-debug"));
        assert_err(&with("logfile a b\n"), 3, "takes one value, got 2");
        assert_err(&with("debugfile\n"), 3, "needs a value");
    }

    #[test]
    fn logfacility_accepts_every_syslog_name_and_none() {
        for (name, code) in FACILITIES {
            let (ha, _) = ok(&with(&format!("logfacility {name}\n")));
            assert_eq!(ha.logfacility, LogFacility::Facility(code));
            assert_eq!(ha.logfacility.name(), name);
        }
        let (ha, _) = ok(&with("logfacility none\n"));
        assert_eq!(ha.logfacility, LogFacility::None);
        assert_err(
            &with("logfacility local8\n"),
            3,
            "unknown syslog facility `local8`",
        );
    }

    // ==== Tests for auto_failback and realtime ====

    #[test]
    fn auto_failback_takes_heartbeat_words() {
        let cases = [
            ("on", AutoFailback::On),
            ("yes", AutoFailback::On),
            ("TRUE", AutoFailback::On),
            ("1", AutoFailback::On),
            ("off", AutoFailback::Off),
            ("No", AutoFailback::Off),
            ("false", AutoFailback::Off),
            ("legacy", AutoFailback::Legacy),
            ("LEGACY", AutoFailback::Legacy),
        ];
        for (word, expected) in cases {
            let (ha, _) = ok(&with(&format!("auto_failback {word}\n")));
            assert_eq!(ha.auto_failback, expected, "{word}");
        }
        assert_err(&with("auto_failback maybe\n"), 3, "use on, off or legacy");
    }

    #[test]
    fn realtime_takes_boolean_words() {
        for (word, expected) in [
            ("on", true),
            ("off", false),
            ("yes", true),
            ("no", false),
            ("1", true),
            ("0", false),
        ] {
            let (ha, _) = ok(&with(&format!("realtime {word}\n")));
            assert_eq!(ha.realtime, expected, "{word}");
        }
        assert_err(&with("realtime fast\n"), 3, "use on or off");
    }

    // ==== Tests for timers ====

    #[test]
    fn time_words_convert_like_get_msec() {
        let cases = [
            ("2", 2_000),
            ("0.5", 500),
            (".5", 500),
            ("2.", 2_000),
            ("500ms", 500),
            ("500MS", 500),
            ("500msec", 500),
            ("1.5ms", 2),
            ("1500000us", 1_500),
            ("499us", 0),
            ("501usec", 1),
            ("0.001", 1),
            ("86400", TIME_MAX_MS),
        ];
        for (word, expected) in cases {
            assert_eq!(parse_time_ms(word), Ok(expected), "{word}");
        }
        for word in [
            "-1",
            "abc",
            "",
            ".",
            "1.2.3",
            "1e3",
            "2x",
            "0x10",
            "1234567890123",
            "86401",
        ] {
            assert!(parse_time_ms(word).is_err(), "{word} accepted");
        }
        assert!(parse_time_ms("2s")
            .unwrap_err()
            .contains("bare numbers are already seconds"));
    }

    #[test]
    fn timers_are_set_from_the_file() {
        let (ha, warnings) = ok(&with(
            "keepalive 500ms\nwarntime 1.5\ndeadtime 5\ninitdead 10\n",
        ));
        assert_eq!(
            (
                ms(ha.keepalive),
                ms(ha.warntime),
                ms(ha.deadtime),
                ms(ha.initdead)
            ),
            (500, 1_500, 5_000, 10_000)
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(ha.digest_lines, [1, 3, 4, 5, 6]);
    }

    #[test]
    fn timer_errors_name_the_line() {
        assert_err(&with("keepalive -1\n"), 3, "keepalive: `-1` is not a time");
        assert_err(
            &with("deadtime thirty\n"),
            3,
            "deadtime: `thirty` is not a time",
        );
        assert_err(&with("keepalive 0\n"), 3, "keepalive must be more than 0");
        assert_err(
            &with("keepalive 100us\n"),
            3,
            "keepalive must be more than 0",
        );
        assert_err(&with("warntime 0\n"), 3, "warntime must be more than 0");
        assert_err(&with("initdead 2 ms\n"), 3, "takes one value");
        assert_err(
            &with("keepalive 2\ndeadtime 2\n"),
            4,
            "must be longer than keepalive",
        );
        assert_err(
            &with("keepalive 5\ndeadtime 1\n"),
            4,
            "must be longer than keepalive",
        );
        assert_err(
            &with("deadtime 30\ninitdead 20\n"),
            4,
            "initdead (20000 ms) is shorter than deadtime",
        );
    }

    #[test]
    fn risky_timers_warn_like_heartbeat() {
        let (_, warnings) = ok(&with("keepalive 2\ndeadtime 4\ninitdead 12\n"));
        assert!(
            warnings
                .iter()
                .any(|w| w.line == 4 && w.message.contains("at most 2 x keepalive")),
            "{warnings:?}"
        );
        let (_, warnings) = ok(&with("deadtime 30\ninitdead 40\n"));
        assert!(
            warnings
                .iter()
                .any(|w| w.line == 4 && w.message.contains("less than 2 x deadtime")),
            "{warnings:?}"
        );
        let (_, warnings) = ok(&with("deadtime 10\nwarntime 10\ninitdead 20\n"));
        assert!(
            warnings
                .iter()
                .any(|w| w.line == 4 && w.message.contains("not shorter than deadtime")),
            "{warnings:?}"
        );
        let (_, warnings) = ok(&with("keepalive 2\nwarntime 2\n"));
        assert!(
            warnings
                .iter()
                .any(|w| w.line == 4 && w.message.contains("reported late")),
            "{warnings:?}"
        );
    }

    #[test]
    fn repeated_timer_warns_and_last_wins() {
        let (ha, warnings) = ok(&with("keepalive 1\nkeepalive 2\n"));
        assert_eq!(ms(ha.keepalive), 2_000);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].line, 4);
        assert!(warnings[0].message.contains("also set on line 3"));
    }

    // ==== Tests for udpport and baud ====

    #[test]
    fn udpport_applies_in_any_order() {
        let (ha, _) = ok("node a b\nbcast eth1\nudpport 1001\n");
        assert_eq!(ha.udpport, 1001);
        assert_eq!(ha.digest_lines, [1, 3]);
        assert_err(&with("udpport 0\n"), 3, "not a UDP port");
        assert_err(&with("udpport 65536\n"), 3, "not a UDP port");
        assert_err(&with("udpport ha\n"), 3, "not a UDP port");
    }

    #[test]
    fn baud_takes_standard_rates_once() {
        for rate in BAUD_RATES {
            let (ha, _) = ok(&with(&format!("baud {rate}\n")));
            assert_eq!(ha.baud, rate);
        }
        assert_err(&with("baud 9601\n"), 3, "not a serial speed");
        assert_err(
            &with("baud 9600\nbaud 19200\n"),
            4,
            "given twice (first on line 3)",
        );
    }

    // ==== Tests for media ====

    #[test]
    fn bcast_and_serial_take_several_names() {
        let (ha, _) = ok("node a b\nbcast eth0 eth1\nserial /dev/ttyS0, /dev/ttyUSB0\n");
        let names: Vec<String> = ha.media.iter().map(Medium::link_name).collect();
        assert_eq!(names, ["eth0", "eth1", "ttyS0", "ttyUSB0"]);
        assert!(ha.media.iter().all(|m| m.line() == 2 || m.line() == 3));
    }

    #[test]
    fn media_errors_name_the_line() {
        assert_err("node a b\n", 0, "no heartbeat medium");
        assert_err("node a b\nbcast\n", 2, "needs at least one name");
        assert_err("node a b\nserial\n", 2, "needs at least one name");
        assert_err(
            "node a b\nbcast eth1\nbcast eth1\n",
            3,
            "repeats the link `eth1` of line 2",
        );
        assert_err(
            "node a b\nbcast averyveryverylongname\n",
            2,
            "not an interface name",
        );
        assert_err("node a b\nbcast eth1/2\n", 2, "not an interface name");
        assert_err("node a b\nserial ttyS0\n", 2, "absolute path");
        assert_err(
            "node a b\nserial /dev/ttyS0 /dev/ttyS0\n",
            2,
            "repeats the link `ttyS0`",
        );
        let nine = "bcast e1 e2 e3 e4 e5 e6 e7 e8 e9\n";
        assert_err(&format!("node a b\n{nine}"), 2, "at most 8 links");
    }

    #[test]
    fn udp_alias_means_bcast_with_warning() {
        let (ha, warnings) = ok("node a b\nudp eth1\n");
        assert_eq!(
            ha.media,
            [Medium::Bcast {
                iface: "eth1".into(),
                line: 2
            }]
        );
        assert_eq!(warnings[0].line, 2);
        assert!(warnings[0].message.contains("write `bcast`"));
    }

    #[test]
    fn mcast_parses_and_validates_its_five_values() {
        let (ha, _) = ok("node a b\nmcast eth1 225.0.0.1 694 1 0\n");
        let expected = Medium::Mcast {
            iface: "eth1".into(),
            group: Ipv4Addr::new(225, 0, 0, 1),
            port: 694,
            ttl: 1,
            loopback: false,
            line: 2,
        };
        assert_eq!(ha.media, [expected]);
        assert_eq!(ha.media[0].link_name(), "eth1-mcast");
        let (ha, _) = ok("node a b\nmcast eth1 239.1.2.3 700 255 1\n");
        assert!(matches!(
            ha.media[0],
            Medium::Mcast {
                ttl: 255,
                loopback: true,
                port: 700,
                ..
            }
        ));
        assert_err(
            "node a b\nmcast eth1 225.0.0.1 694 1\n",
            2,
            "takes 5 values",
        );
        assert_err(
            "node a b\nmcast eth1 10.0.0.1 694 1 0\n",
            2,
            "not a multicast address",
        );
        assert_err("node a b\nmcast eth1 225.0.0.1 0 1 0\n", 2, "mcast port");
        assert_err("node a b\nmcast eth1 225.0.0.1 694 0 0\n", 2, "ttl `0`");
        assert_err("node a b\nmcast eth1 225.0.0.1 694 256 0\n", 2, "ttl `256`");
        assert_err(
            "node a b\nmcast eth1 225.0.0.1 694 1 2\n",
            2,
            "loop `2` must be 0 or 1",
        );
    }

    #[test]
    fn ucast_parses_one_file_for_both_nodes() {
        let (ha, _) = ok("node a b\nucast eth1 10.0.0.1\nucast eth1 10.0.0.2\n");
        assert_eq!(
            ha.media,
            [
                Medium::Ucast {
                    iface: "eth1".into(),
                    addr: Ipv4Addr::new(10, 0, 0, 1),
                    line: 2
                },
                Medium::Ucast {
                    iface: "eth1".into(),
                    addr: Ipv4Addr::new(10, 0, 0, 2),
                    line: 3
                },
            ]
        );
        assert_eq!(ha.media[0].link_name(), "eth1-ucast");
        assert_err(
            "node a b\nucast eth1 10.0.0.2\nucast eth1 10.0.0.2\n",
            3,
            "repeats the link",
        );
        assert_err(
            "node a b\nucast eth1 debian2\n",
            2,
            "not a unicast IPv4 address",
        );
        assert_err(
            "node a b\nucast eth1 224.0.0.1\n",
            2,
            "not a unicast IPv4 address",
        );
        assert_err("node a b\nucast eth1\n", 2, "takes 2 values");
    }

    // ==== Tests for takeover directives ====

    #[test]
    fn takeover_defaults_follow_heartbeat() {
        let (ha, warnings) = ok(MINIMAL);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(ha.ping_nodes.is_empty());
        assert_eq!(ms(ha.deadping), DEADTIME_DEFAULT_MS);
        assert_eq!(ha.fence, None);
        assert_eq!(ms(ha.fence_delay), FENCE_DELAY_DEFAULT_MS);
        assert_eq!(ms(ha.fence_timeout), 60_000);
        assert_eq!(ha.on_stop_failure, StopFailure::Reboot);
        assert_eq!(ha.stop_retries, 3);
        assert_eq!(ms(ha.start_backoff), 10_000);
        assert_eq!(ms(ha.action_timeout), 120_000);
        let (ha, _) = ok(&with("deadtime 12\n"));
        assert_eq!(ms(ha.deadping), 12_000, "deadping defaults to deadtime");
    }

    #[test]
    fn ping_and_ping_group_declare_ping_nodes() {
        let (ha, warnings) = ok(&with(
            "ping 10.0.0.254, 10.0.0.253\nping_group routers 10.0.1.1 10.0.1.2\nping 10.0.0.1\ndeadping 15\n",
        ));
        assert!(warnings.is_empty(), "{warnings:?}");
        let single = |name: &str, addr: Ipv4Addr, line| PingNode {
            name: name.into(),
            addrs: vec![addr],
            group: false,
            line,
        };
        assert_eq!(
            ha.ping_nodes,
            [
                single("10.0.0.254", Ipv4Addr::new(10, 0, 0, 254), 3),
                single("10.0.0.253", Ipv4Addr::new(10, 0, 0, 253), 3),
                PingNode {
                    name: "routers".into(),
                    addrs: vec![Ipv4Addr::new(10, 0, 1, 1), Ipv4Addr::new(10, 0, 1, 2)],
                    group: true,
                    line: 4,
                },
                single("10.0.0.1", Ipv4Addr::new(10, 0, 0, 1), 5),
            ]
        );
        assert_eq!(ms(ha.deadping), 15_000);
        assert_eq!(ha.digest_lines, [1, 3, 4, 5, 6]);
    }

    #[test]
    fn ping_errors_name_the_line() {
        assert_err(&with("ping\n"), 3, "`ping` needs at least one address");
        assert_err(
            &with("ping 10.0.0.1 gateway\n"),
            3,
            "ping address `gateway` is not a unicast",
        );
        assert_err(&with("ping 224.0.0.1\n"), 3, "not a unicast IPv4 address");
        assert_err(
            &with("ping 10.0.0.1\nping 10.0.0.1\n"),
            4,
            "10.0.0.1 is already used on line 3",
        );
        assert_err(
            &with("ping_group gw\n"),
            3,
            "`ping_group` takes NAME ADDR...",
        );
        assert_err(&with("ping_group 10.0.0.1 10.0.0.2\n"), 3, "not an address");
        assert_err(
            &with("ping_group g/w 10.0.0.2\n"),
            3,
            "ping_group name `g/w`",
        );
        assert_err(
            &with("ping_group gw 10.0.0.2 10.0.0.2\n"),
            3,
            "lists 10.0.0.2 twice",
        );
        assert_err(
            &with("ping_group gw 10.0.0.2\nping_group gw 10.0.0.3\n"),
            4,
            "`gw` is already declared on line 3",
        );
        assert_err(
            &with("ping 10.0.0.2\nping_group gw 10.0.0.3 10.0.0.2\n"),
            4,
            "already used on line 3",
        );
        let many: Vec<String> = (1..=17).map(|i| format!("10.0.0.{i}")).collect();
        assert_err(
            &with(&format!("ping {}\n", many.join(" "))),
            3,
            "too many ping nodes: at most 16",
        );
        assert_err(
            &with(&format!("ping_group gw {}\n", many.join(" "))),
            3,
            "has 17 addresses: at most 16",
        );
        assert_err(&with("deadping 0\n"), 3, "deadping must be more than 0 ms");
        assert_err(
            &with("deadping\n"),
            3,
            "`deadping` needs a value, e.g. `deadping 30`",
        );
    }

    #[test]
    fn deadping_warns_when_useless_or_short() {
        let (_, warnings) = ok(&with("deadping 10\n"));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].line, 3);
        assert!(warnings[0].message.contains("no effect without `ping`"));
        let (_, warnings) = ok(&with("ping 10.0.0.1\ndeadping 2\n"));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].line, 4);
        assert!(warnings[0].message.contains("at most 2 x keepalive"));
    }

    #[test]
    fn fence_takes_the_rest_of_the_line() {
        let (ha, warnings) = ok(&with(
            "fence /usr/local/sbin/fence-peer --hosts=a,b  -t 5 # comment\nfence_delay 0\nfence_timeout 30\n",
        ));
        assert!(warnings.is_empty(), "{warnings:?}");
        let fence = ha.fence.expect("fence");
        assert_eq!(fence.program, "/usr/local/sbin/fence-peer");
        assert_eq!(fence.args, ["--hosts=a,b", "-t", "5"]);
        assert_eq!(fence.line, 3);
        assert_eq!(
            fence.render(),
            "/usr/local/sbin/fence-peer --hosts=a,b -t 5"
        );
        assert_eq!((ms(ha.fence_delay), ms(ha.fence_timeout)), (0, 30_000));
        assert_eq!(
            ha.digest_lines,
            [1, 3],
            "only the fence line, not its timers"
        );
        let (ha, _) = ok(&with("fence fence_ipmilan\n"));
        assert_eq!(ha.fence.unwrap().program, "fence_ipmilan");
    }

    #[test]
    fn fence_errors_name_the_line() {
        assert_err(&with("fence\n"), 3, "`fence` needs a command");
        assert_err(
            &with("fence bin/fence-peer\n"),
            3,
            "must be an absolute path or a bare command name",
        );
        assert_err(&with("fence ./fence-peer\n"), 3, "must be an absolute path");
        assert_err(&with("fence -x\n"), 3, "must be an absolute path");
        assert_err(
            &with("fence /bin/true\nfence /bin/false\n"),
            4,
            "fence is given twice (first on line 3)",
        );
        assert_err(
            &with("fence_timeout 0\n"),
            3,
            "fence_timeout must be more than 0 ms",
        );
        assert_err(
            &with("fence_delay soon\n"),
            3,
            "fence_delay: `soon` is not a time",
        );
        let (_, warnings) = ok(&with("fence_delay 5\nfence_timeout 5\n"));
        let lines: Vec<usize> = warnings.iter().map(|w| w.line).collect();
        assert_eq!(lines, [3, 4], "{warnings:?}");
        assert!(warnings[0]
            .message
            .contains("fence_delay has no effect without `fence`"));
    }

    #[test]
    fn stonith_is_refused_with_the_fence_hint() {
        for directive in [
            "stonith baytech /etc/ha.d/conf/stonith.baytech",
            "stonith_host * null debian1 debian2",
        ] {
            let e = err(&with(&format!("{directive}\n")));
            assert_eq!(e.line, 3);
            assert_eq!(e.message, STONITH_REFUSED);
            assert!(e.message.contains("use `fence COMMAND ARGS`"));
        }
        assert!(!UNIMPLEMENTED.contains(&"stonith") && !UNIMPLEMENTED.contains(&"stonith_host"));
    }

    #[test]
    fn stop_and_start_policies_parse() {
        let (ha, warnings) = ok(&with(
            "on_stop_failure /usr/local/sbin/escalate --why=stop,failed\nstop_retries 0\nstart_backoff 300\naction_timeout 500ms\n",
        ));
        assert!(warnings.is_empty(), "{warnings:?}");
        let StopFailure::Command(command) = &ha.on_stop_failure else {
            panic!("{:?}", ha.on_stop_failure)
        };
        assert_eq!(command.program, "/usr/local/sbin/escalate");
        assert_eq!(command.args, ["--why=stop,failed"]);
        assert_eq!(
            ha.on_stop_failure.render(),
            "/usr/local/sbin/escalate --why=stop,failed"
        );
        assert_eq!(ha.stop_retries, 0);
        assert_eq!(ms(ha.start_backoff), START_BACKOFF_CAP_MS);
        assert_eq!(ms(ha.action_timeout), 500);
        assert_eq!(
            ha.digest_lines,
            [1, 4, 5, 6],
            "not the on_stop_failure line"
        );
        let (ha, _) = ok(&with("on_stop_failure reboot\n"));
        assert_eq!(ha.on_stop_failure, StopFailure::Reboot);
        let (_, warnings) = ok(&with("stop_retries 2\nstop_retries 4\n"));
        assert!(
            warnings[0].message.contains("also set on line 3"),
            "{warnings:?}"
        );
    }

    #[test]
    fn stop_and_start_policy_errors_name_the_line() {
        assert_err(
            &with("on_stop_failure\n"),
            3,
            "needs `reboot` or an absolute command path",
        );
        assert_err(
            &with("on_stop_failure ignore\n"),
            3,
            "`ignore` is refused: the peer would start a resource that may still run here",
        );
        assert_err(
            &with("on_stop_failure reboot now\n"),
            3,
            "`on_stop_failure reboot` takes no arguments",
        );
        assert_err(
            &with("on_stop_failure escalate\n"),
            3,
            "on_stop_failure `escalate` is not valid",
        );
        assert_err(
            &with("stop_retries -1\n"),
            3,
            "stop_retries `-1` must be a number from 0 to 100",
        );
        assert_err(&with("stop_retries 101\n"), 3, "from 0 to 100");
        assert_err(
            &with("stop_retries 1 2\n"),
            3,
            "`stop_retries` takes one value",
        );
        assert_err(
            &with("start_backoff 0\n"),
            3,
            "start_backoff must be more than 0 ms",
        );
        assert_err(&with("start_backoff 301\n"), 3, "may be at most 300000 ms");
        assert_err(
            &with("action_timeout 0\n"),
            3,
            "action_timeout must be more than 0 ms",
        );
        assert_err(
            &with("action_timeout 2 days\n"),
            3,
            "`action_timeout` takes one value",
        );
    }

    // ==== Tests for unknown and unimplemented directives ====

    #[test]
    fn unimplemented_directives_give_one_warning_naming_all() {
        let (_, warnings) = ok(&with("apiauth ipfail uid=hacluster\nrespawn hacluster /usr/lib/heartbeat/ipfail\nhbaping fc-card-name\n"));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let message = &warnings[0].message;
        for needle in [
            "`apiauth` (line 3)",
            "`respawn` (line 4)",
            "`hbaping` (line 5)",
        ] {
            assert!(message.contains(needle), "`{message}` lacks {needle}");
        }
    }

    #[test]
    fn every_unimplemented_directive_is_accepted() {
        for directive in UNIMPLEMENTED {
            let (_, warnings) = ok(&with(&format!("{directive} x\n")));
            assert!(warnings
                .iter()
                .any(|w| w.message.contains(&format!("`{directive}` (line 3)"))));
            assert!(!IMPLEMENTED.contains(&directive));
        }
    }

    #[test]
    fn unknown_directive_is_an_error_with_a_suggestion() {
        assert_err(
            &with("keepalve 2\n"),
            3,
            "unknown directive `keepalve`; did you mean `keepalive`?",
        );
        assert_err(&with("Keepalive 2\n"), 3, "did you mean `keepalive`?");
        let e = err(&with("frobnicate 2\n"));
        assert_eq!(e.message, "unknown directive `frobnicate`");
        assert_eq!(e.to_string(), "ha.cf:3: unknown directive `frobnicate`");
    }

    // ==== Tests for syntax ====

    #[test]
    fn comments_blank_lines_and_crlf_are_ignored() {
        let text = "# a comment\r\n  node debian1 debian2 # trailing\r\n\r\n\tbcast\teth1\r\nkeepalive 2#x\r\n";
        let (ha, _) = ok(text);
        assert_eq!(ha.nodes, ["debian1", "debian2"]);
        assert_eq!(
            ha.media,
            [Medium::Bcast {
                iface: "eth1".into(),
                line: 4
            }]
        );
        assert_eq!(ms(ha.keepalive), 2_000);
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("keepalive", "keepalive"), 0);
        assert_eq!(edit_distance("keepalve", "keepalive"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
