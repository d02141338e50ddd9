//! `haresources`: resource groups, parsed into typed resources (the takeover acts on them).
//!
//! Layer: pure parser; it may not look at the system (no check that a script or
//! an interface exists). One logical line (a trailing `\` joins the next physical
//! line) is one group: the preferred node, then resources in start order.
//! - A bare IPv4 address, optionally `ADDR/BITS[/IFACE[/BROADCAST]]`, means
//!   `IPaddr::ADDR...`, as Heartbeat's ResourceManager reads it.
//! - `Name::a::b` is resource `Name` with arguments `a`, `b`; `Name` alone has none.
//! - `#` at the start of a word starts a comment to the end of the physical line.
//! - `monitor::T[::N]` anywhere after the node is not a resource but a group
//!   option (bascule's, Heartbeat has none): check every resource's status every
//!   `T` (a Heartbeat time: `30`, `500ms`); after `N` failed checks since the group started
//!   (default [`MONITOR_FAILURES_DEFAULT`]) the group is stopped and offered to
//!   the peer. A script named `monitor` therefore cannot be used.
//!
//! Typed resources ([`Resource`]), by agent name (case-sensitive, as the script
//! names are):
//! - `IPaddr`/`IPaddr2::ADDR[/BITS[/IFACE[/BROADCAST]]]`, or a bare address.
//! - `Filesystem::DEVICE::MOUNTPOINT::FSTYPE[::OPTIONS]`: the mountpoint is an
//!   absolute path other than `/`; the type is required (bascule does not guess).
//! - `MailTo::ADDR[,ADDR...][::SUBJECT]`: each address `user@domain` or a local
//!   user name, as Heartbeat's MailTo hands them to `mail`.
//! - `drbddisk[::RESOURCE]`: the DRBD resource, `all` when absent (as Heartbeat's
//!   drbddisk script does).
//! - Anything else is an LSB script or a systemd unit with its arguments.
//!
//! Checks: the node is an ha.cf node (case-insensitive, as Heartbeat lower-cases
//! node names); names are `[A-Za-z0-9_.-]+`; no empty argument; each typed
//! resource's arguments as above; a group has at least one resource and at most
//! one `monitor`; no resource, virtual address or mountpoint appears twice in the
//! file, since both nodes would then start it.

use super::hacf::parse_time_ms;
use super::{ConfigError, ConfigWarning, FileKind};
use crate::time::Duration;
use std::net::Ipv4Addr;

/// Failed status checks (since the group started) before a monitored group moves, when the
/// `monitor::T` word gives no count: one failure may be a slow check, three is
/// a resource that is down.
pub const MONITOR_FAILURES_DEFAULT: u32 = 3;
/// Largest failure count accepted in `monitor::T::N` (more is surely a typo).
pub const MONITOR_FAILURES_MAX: u32 = 100;
/// The group-option word `monitor::T[::N]` (never a resource).
pub const MONITOR_WORD: &str = "monitor";
/// The DRBD resource `drbddisk` manages when given none: Heartbeat's drbddisk
/// script then acts on every resource.
pub const DRBD_ALL: &str = "all";

/// A resource with its arguments checked and typed, as the takeover runs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resource {
    /// `IPaddr::ADDR[/BITS[/IFACE[/BROADCAST]]]` (also a bare address) or `IPaddr2::...`.
    IpAddr {
        /// The virtual address (unicast).
        addr: Ipv4Addr,
        /// Netmask bits (0..=32); `None`: taken from the interface's route.
        bits: Option<u8>,
        /// Interface; `None`: the one whose subnet holds `addr`.
        iface: Option<String>,
        /// Broadcast address; `None`: derived from addr and bits.
        broadcast: Option<Ipv4Addr>,
        /// Written `IPaddr2` (same behaviour in bascule; kept for messages).
        v2: bool,
    },
    /// `Filesystem::DEVICE::MOUNTPOINT::FSTYPE[::OPTIONS]`.
    Filesystem {
        /// What to mount (`/dev/drbd0`, `LABEL=x`, `host:/export`).
        device: String,
        /// Absolute path, not `/`.
        mountpoint: String,
        /// Filesystem type (`ext3`, `xfs`...), never empty.
        fstype: String,
        /// `mount -o` options, e.g. `rw,noatime`.
        options: Option<String>,
    },
    /// `MailTo::ADDR[,ADDR...][::SUBJECT]`: mail on start and stop.
    MailTo {
        /// One or more comma-separated addresses, as written.
        addr: String,
        /// Subject prefix; `None`: the agent's default.
        subject: Option<String>,
    },
    /// `drbddisk[::RESOURCE]`: promote the DRBD resource (refused at start until
    /// replication lands).
    DrbdDisk {
        /// The DRBD resource name, [`DRBD_ALL`] when none is given.
        resource: String,
    },
    /// Any other agent: an LSB script (resource.d, then /etc/init.d) or a systemd unit.
    Script {
        /// The script or unit name.
        name: String,
        /// Arguments passed before start/stop/status.
        args: Vec<String>,
    },
}

impl Resource {
    /// The agent name as written in haresources (`IPaddr`, `IPaddr2`,
    /// `Filesystem`, `MailTo`, `drbddisk`, or the script name), for logs.
    pub fn agent(&self) -> &str {
        match self {
            Resource::IpAddr { v2: false, .. } => "IPaddr",
            Resource::IpAddr { v2: true, .. } => "IPaddr2",
            Resource::Filesystem { .. } => "Filesystem",
            Resource::MailTo { .. } => "MailTo",
            Resource::DrbdDisk { .. } => "drbddisk",
            Resource::Script { name, .. } => name,
        }
    }

    /// The mail addresses of a MailTo resource, one per comma-separated item.
    pub fn mail_addrs(&self) -> impl Iterator<Item = &str> {
        let list = match self {
            Resource::MailTo { addr, .. } => addr.as_str(),
            _ => "",
        };
        list.split(',').filter(|a| !a.is_empty())
    }
}

/// One resource of a group, in start order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceSpec {
    /// The resource agent name (`IPaddr`, `drbddisk`, `Filesystem`, `apache`...).
    pub name: String,
    /// The `::`-separated arguments.
    pub args: Vec<String>,
    /// The word as written in the file (for messages and the digest).
    pub text: String,
    /// The checked, typed meaning of `name` and `args`.
    pub typed: Resource,
}

/// One resource group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// The preferred node.
    pub node: String,
    /// Resources in start order.
    pub resources: Vec<ResourceSpec>,
    /// 1-based line where the group starts.
    pub line: usize,
    /// `monitor::T`: status-check interval; `None`: the group is not monitored.
    pub monitor: Option<Duration>,
    /// `monitor::T::N`: failed checks since the group started before it moves
    /// ([`MONITOR_FAILURES_DEFAULT`] when not given; 1..=[`MONITOR_FAILURES_MAX`]).
    pub monitor_failures: u32,
}

impl Group {
    /// `NODE RESOURCE... [monitor::MSms::N]` with every resource canonical, for
    /// the digest and `check-config`.
    pub fn canonical(&self) -> String {
        let mut out = self.node.clone();
        for resource in &self.resources {
            out.push(' ');
            out.push_str(&resource.canonical());
        }
        if let Some(interval) = self.monitor {
            out.push_str(&format!(
                " {MONITOR_WORD}::{}ms::{}",
                interval.millis(),
                self.monitor_failures
            ));
        }
        out
    }

    /// The typed resources in start order.
    pub fn resources_typed(&self) -> impl DoubleEndedIterator<Item = &Resource> {
        self.resources.iter().map(|r| &r.typed)
    }
}

/// The parsed file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Haresources {
    /// Groups in file order.
    pub groups: Vec<Group>,
}

/// Longest physical-line run joined into one group, a bound on the loop and on
/// a runaway continuation.
pub const CONTINUATION_LINES_MAX: usize = 1000;

impl ResourceSpec {
    /// The normalised `Name::arg::arg` form (a bare address becomes `IPaddr::ADDR`),
    /// used by the digest and `check-config`.
    pub fn canonical(&self) -> String {
        let mut out = self.name.clone();
        for arg in &self.args {
            out.push_str("::");
            out.push_str(arg);
        }
        out
    }

    /// The virtual address of an IPaddr/IPaddr2 resource.
    pub fn vip(&self) -> Option<Ipv4Addr> {
        match self.typed {
            Resource::IpAddr { addr, .. } => Some(addr),
            _ => None,
        }
    }

    /// The mountpoint of a Filesystem resource.
    pub fn mountpoint(&self) -> Option<&str> {
        match &self.typed {
            Resource::Filesystem { mountpoint, .. } => Some(mountpoint),
            _ => None,
        }
    }
}

/// Parses `haresources`; every group's node must be one of `nodes` (from ha.cf).
pub fn parse(
    text: &str,
    nodes: &[String],
    warnings: &mut Vec<ConfigWarning>,
) -> Result<Haresources, ConfigError> {
    // No haresources remark is a warning today: every problem found is an error.
    let _ = &warnings;
    let physical: Vec<&str> = text.lines().collect();
    let mut groups: Vec<Group> = Vec::new();
    let mut index = 0;
    while index < physical.len() {
        let line = index + 1;
        let mut words: Vec<&str> = Vec::new();
        let mut joined = 0;
        loop {
            let (content, continued) = logical_part(physical[index]);
            words.extend(content.split_whitespace());
            index += 1;
            joined += 1;
            if !continued || index == physical.len() {
                break;
            }
            if joined == CONTINUATION_LINES_MAX {
                return Err(error(line, format!("group continues over more than {CONTINUATION_LINES_MAX} lines: check the trailing backslashes")));
            }
        }
        if words.is_empty() {
            continue;
        }
        let group = parse_group(&words, nodes, line)?;
        check_duplicates(&groups, &group)?;
        groups.push(group);
    }
    Ok(Haresources { groups })
}

/// An haresources error at `line`.
fn error(line: usize, message: String) -> ConfigError {
    ConfigError {
        file: FileKind::Haresources,
        line,
        message,
    }
}

/// A physical line without its comment, and whether it ends with `\`.
fn logical_part(raw: &str) -> (&str, bool) {
    let mut content = raw;
    let mut at_word_start = true;
    for (i, c) in raw.char_indices() {
        if c == '#' && at_word_start {
            content = &raw[..i];
            break;
        }
        at_word_start = c.is_whitespace();
    }
    let trimmed = content.trim_end();
    match trimmed.strip_suffix('\\') {
        Some(rest) if content.len() == raw.len() => (rest, true),
        _ => (trimmed, false),
    }
}

/// One group: `NODE RESOURCE...` (with at most one `monitor::T[::N]` word).
fn parse_group(words: &[&str], nodes: &[String], line: usize) -> Result<Group, ConfigError> {
    let (node_word, resource_words) = words.split_first().expect("caller skips empty groups");
    let node = node_word.to_ascii_lowercase();
    if !nodes.iter().any(|n| n.eq_ignore_ascii_case(&node)) {
        let known = if nodes.is_empty() {
            "none".to_string()
        } else {
            nodes.join(", ")
        };
        return Err(error(line, format!("node `{node_word}` is not a node of ha.cf (known nodes: {known}); a group starts with its preferred node")));
    }
    let mut resources = Vec::with_capacity(resource_words.len());
    let mut monitor: Option<(Duration, u32)> = None;
    for word in resource_words {
        if is_monitor_word(word) {
            if monitor.is_some() {
                return Err(error(
                    line,
                    format!("`{word}`: the group already has a `monitor` word; give one per group"),
                ));
            }
            monitor = Some(parse_monitor(word).map_err(|m| error(line, m))?);
            continue;
        }
        resources.push(parse_resource(word).map_err(|m| error(line, m))?);
    }
    if resources.is_empty() {
        return Err(error(line, format!("group of `{node}` has no resources: list them after the node, e.g. `{node} 192.168.69.100 apache`")));
    }
    Ok(Group {
        node,
        resources,
        line,
        monitor: monitor.map(|(interval, _)| interval),
        monitor_failures: monitor.map_or(MONITOR_FAILURES_DEFAULT, |(_, n)| n),
    })
}

/// Whether a word is the `monitor` group option rather than a resource.
fn is_monitor_word(word: &str) -> bool {
    word == MONITOR_WORD
        || word
            .strip_prefix(MONITOR_WORD)
            .is_some_and(|r| r.starts_with("::"))
}

/// `monitor::T[::N]`: the interval (more than 0) and the failure count.
fn parse_monitor(word: &str) -> Result<(Duration, u32), String> {
    const USAGE: &str =
        "write `monitor::SECONDS` or `monitor::SECONDS::FAILURES`, e.g. `monitor::30::3`";
    let args: Vec<&str> = word.split("::").skip(1).collect();
    let (time, count) = match args.as_slice() {
        [time] => (*time, None),
        [time, count] => (*time, Some(*count)),
        _ => return Err(format!("`{word}`: {USAGE}")),
    };
    let ms = parse_time_ms(time).map_err(|m| format!("`{word}`: interval {m}"))?;
    if ms == 0 {
        return Err(format!(
            "`{word}`: the monitor interval must be more than 0"
        ));
    }
    let failures = match count {
        None => MONITOR_FAILURES_DEFAULT,
        Some(c) => c
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MONITOR_FAILURES_MAX).contains(n))
            .ok_or_else(|| {
                format!("`{word}`: failure count `{c}` must be a number from 1 to {MONITOR_FAILURES_MAX}")
            })?,
    };
    Ok((Duration::from_millis(ms), failures))
}

/// One resource word.
fn parse_resource(word: &str) -> Result<ResourceSpec, String> {
    if !word.contains("::") && looks_like_address(word) {
        let typed = parse_ipaddr_arg(word, false)?;
        return Ok(ResourceSpec {
            name: "IPaddr".into(),
            args: vec![word.to_string()],
            text: word.to_string(),
            typed,
        });
    }
    let mut parts = word.split("::");
    let name = parts.next().unwrap_or("");
    if !is_plain_name(name) {
        return Err(format!(
            "`{word}`: resource name `{name}` may hold only letters, digits, `_`, `.` and `-`"
        ));
    }
    let args: Vec<String> = parts.map(str::to_string).collect();
    if args.iter().any(String::is_empty) {
        return Err(format!("`{word}` has an empty argument: write `{name}::ARG::ARG` without `::::` or a trailing `::`"));
    }
    let typed = type_resource(word, name, &args)?;
    Ok(ResourceSpec {
        name: name.to_string(),
        args,
        text: word.to_string(),
        typed,
    })
}

/// Whether a word is a plain name: `[A-Za-z0-9_.-]+`.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The typed meaning of `name::args` (`word` is the whole word, for messages).
fn type_resource(word: &str, name: &str, args: &[String]) -> Result<Resource, String> {
    match (name, args) {
        ("IPaddr" | "IPaddr2", [arg]) => parse_ipaddr_arg(arg, name == "IPaddr2"),
        ("IPaddr" | "IPaddr2", _) => Err(format!("`{word}`: {name} takes one argument ADDR[/BITS[/IFACE[/BROADCAST]]], e.g. {name}::192.168.69.100/24/eth0")),
        ("Filesystem", _) => parse_filesystem(word, args),
        ("MailTo", _) => parse_mailto(word, args),
        ("drbddisk", []) => Ok(Resource::DrbdDisk {
            resource: DRBD_ALL.to_string(),
        }),
        ("drbddisk", [resource]) if is_plain_name(resource) => Ok(Resource::DrbdDisk {
            resource: resource.clone(),
        }),
        ("drbddisk", _) => Err(format!("`{word}`: drbddisk takes at most one DRBD resource name (letters, digits, `_`, `.`, `-`), e.g. drbddisk::repl")),
        _ => Ok(Resource::Script {
            name: name.to_string(),
            args: args.to_vec(),
        }),
    }
}

/// `Filesystem::DEVICE::MOUNTPOINT::FSTYPE[::OPTIONS]`.
fn parse_filesystem(word: &str, args: &[String]) -> Result<Resource, String> {
    let (device, mountpoint, fstype, options) = match args {
        [d, m, t] => (d, m, t, None),
        [d, m, t, o] => (d, m, t, Some(o.clone())),
        _ => return Err(format!("`{word}`: Filesystem takes DEVICE::MOUNTPOINT::FSTYPE[::OPTIONS], e.g. Filesystem::/dev/drbd0::/mnt/repl::ext3")),
    };
    if !mountpoint.starts_with('/') {
        return Err(format!(
            "`{word}`: mountpoint `{mountpoint}` must be an absolute path such as /mnt/repl"
        ));
    }
    if mountpoint.trim_end_matches('/').is_empty() {
        return Err(format!(
            "`{word}`: mountpoint cannot be `/`: give the directory to mount on, such as /mnt/repl"
        ));
    }
    let valid_type = fstype
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !valid_type {
        return Err(format!("`{word}`: filesystem type `{fstype}` may hold only letters, digits, `_`, `.` and `-`, e.g. ext3"));
    }
    Ok(Resource::Filesystem {
        device: device.clone(),
        mountpoint: mountpoint.clone(),
        fstype: fstype.clone(),
        options,
    })
}

/// `MailTo::ADDR[,ADDR...][::SUBJECT]`.
fn parse_mailto(word: &str, args: &[String]) -> Result<Resource, String> {
    let (addr, subject) = match args {
        [a] => (a, None),
        [a, s] => (a, Some(s.clone())),
        _ => {
            return Err(format!(
                "`{word}`: MailTo takes ADDR[,ADDR...][::SUBJECT], e.g. MailTo::admin@example.com"
            ))
        }
    };
    for one in addr.split(',') {
        if !looks_like_mail_address(one) {
            return Err(format!("`{word}`: `{one}` is not a mail address: use user@domain or a local user name, several separated by commas"));
        }
    }
    Ok(Resource::MailTo {
        addr: addr.clone(),
        subject,
    })
}

/// `user@domain` (each part a run of `[A-Za-z0-9_.+-]`, the domain with no
/// leading or trailing dot) or a local user name.
fn looks_like_mail_address(text: &str) -> bool {
    let atom = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'+' | b'-'))
    };
    match text.split_once('@') {
        None => atom(text),
        Some((user, domain)) => {
            atom(user) && atom(domain) && !domain.starts_with('.') && !domain.ends_with('.')
        }
    }
}

/// Whether a bare word is meant as an address: its part before `/` is made of
/// digits and dots only and contains a dot.
fn looks_like_address(word: &str) -> bool {
    let head = word.split('/').next().unwrap_or("");
    head.contains('.') && head.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// `ADDR[/BITS[/IFACE[/BROADCAST]]]` as an [`Resource::IpAddr`].
fn parse_ipaddr_arg(arg: &str, v2: bool) -> Result<Resource, String> {
    /// Longest interface name Linux accepts (IFNAMSIZ - 1).
    const IFACE_LEN_MAX: usize = 15;
    let parts: Vec<&str> = arg.split('/').collect();
    if parts.len() > 4 {
        return Err(format!(
            "`{arg}` has too many parts: use ADDR[/BITS[/IFACE[/BROADCAST]]]"
        ));
    }
    let addr: Ipv4Addr = parts[0]
        .parse()
        .map_err(|_| format!("`{}` is not a valid IPv4 address", parts[0]))?;
    if addr.is_unspecified() || addr.is_multicast() || addr.is_broadcast() {
        return Err(format!(
            "`{addr}` cannot be a virtual address: use a unicast address"
        ));
    }
    let bits = match parts.get(1) {
        None => None,
        Some(bits) => match bits.parse::<u8>() {
            Ok(b) if b <= 32 => Some(b),
            _ => {
                return Err(format!(
                    "`{arg}`: netmask bits `{bits}` must be a number from 0 to 32"
                ))
            }
        },
    };
    let iface = match parts.get(2) {
        None => None,
        Some(iface) => {
            let valid = !iface.is_empty()
                && iface.len() <= IFACE_LEN_MAX
                && iface.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
            if !valid {
                return Err(format!(
                    "`{arg}`: `{iface}` is not an interface name, e.g. eth0"
                ));
            }
            Some(iface.to_string())
        }
    };
    let broadcast = match parts.get(3) {
        None => None,
        Some(broadcast) => Some(broadcast.parse::<Ipv4Addr>().map_err(|_| {
            format!("`{arg}`: broadcast `{broadcast}` is not a valid IPv4 address")
        })?),
    };
    Ok(Resource::IpAddr {
        addr,
        bits,
        iface,
        broadcast,
        v2,
    })
}

/// Refuses a resource, a virtual address or a mountpoint already used earlier
/// in the file.
fn check_duplicates(earlier: &[Group], group: &Group) -> Result<(), ConfigError> {
    for (i, resource) in group.resources.iter().enumerate() {
        let canonical = resource.canonical();
        let previous = earlier
            .iter()
            .flat_map(|g| g.resources.iter().map(move |r| (g.line, r)))
            .chain(group.resources[..i].iter().map(|r| (group.line, r)));
        for (line, other) in previous {
            if other.canonical() == canonical {
                return Err(error(group.line, format!("resource `{}` is already in the group on line {line}: each resource may run in one group only", resource.text)));
            }
            if let (Some(a), Some(b)) = (resource.vip(), other.vip()) {
                if a == b {
                    return Err(error(group.line, format!("virtual address {a} is already in the group on line {line}: each address may be managed once")));
                }
            }
            if let (Some(a), Some(b)) = (resource.mountpoint(), other.mountpoint()) {
                if a.trim_end_matches('/') == b.trim_end_matches('/') {
                    return Err(error(group.line, format!("mountpoint {a} is already in the group on line {line}: each mountpoint may be mounted once")));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUIDE: &str = include_str!("../../tests/fixtures/config/guide-bcast/haresources");

    fn nodes() -> Vec<String> {
        vec!["debian1".to_string(), "debian2".to_string()]
    }

    #[track_caller]
    fn ok(text: &str) -> Haresources {
        let mut warnings = Vec::new();
        match parse(text, &nodes(), &mut warnings) {
            Ok(res) => res,
            Err(e) => panic!("unexpected error: {e}\n--- text:\n{text}"),
        }
    }

    #[track_caller]
    fn assert_err(text: &str, line: usize, needle: &str) {
        let mut warnings = Vec::new();
        let e = parse(text, &nodes(), &mut warnings).expect_err(text);
        assert_eq!(e.file, FileKind::Haresources);
        assert_eq!(e.line, line, "{e}");
        assert!(
            e.message.contains(needle),
            "`{}` lacks `{needle}`",
            e.message
        );
    }

    fn canonical(group: &Group) -> Vec<String> {
        group
            .resources
            .iter()
            .map(ResourceSpec::canonical)
            .collect()
    }

    // ==== Tests for the guide's file ====

    #[test]
    fn guide_line_parses_in_order() {
        let res = ok(GUIDE);
        assert_eq!(res.groups.len(), 1);
        let group = &res.groups[0];
        assert_eq!((group.node.as_str(), group.line), ("debian1", 1));
        assert_eq!(
            canonical(group),
            [
                "IPaddr::192.168.69.16",
                "IPaddr::192.168.69.100",
                "drbddisk::repl",
                "Filesystem::/dev/drbd0::/mnt/repl::ext3",
                "apache",
                "MailTo::admin@example.com",
            ]
        );
        assert_eq!(group.resources[0].text, "192.168.69.16");
        assert_eq!(group.resources[3].args, ["/dev/drbd0", "/mnt/repl", "ext3"]);
        assert!(group.resources[4].args.is_empty());
        assert_eq!(
            group.resources[0].vip(),
            Some(std::net::Ipv4Addr::new(192, 168, 69, 16))
        );
        assert_eq!(group.resources[2].vip(), None);
    }

    #[test]
    fn guide_line_is_typed() {
        let res = ok(GUIDE);
        let typed: Vec<&Resource> = res.groups[0].resources_typed().collect();
        let ip = |a, b, c, d| Resource::IpAddr {
            addr: Ipv4Addr::new(a, b, c, d),
            bits: None,
            iface: None,
            broadcast: None,
            v2: false,
        };
        let expected = [
            ip(192, 168, 69, 16),
            ip(192, 168, 69, 100),
            Resource::DrbdDisk {
                resource: "repl".into(),
            },
            Resource::Filesystem {
                device: "/dev/drbd0".into(),
                mountpoint: "/mnt/repl".into(),
                fstype: "ext3".into(),
                options: None,
            },
            Resource::Script {
                name: "apache".into(),
                args: vec![],
            },
            Resource::MailTo {
                addr: "admin@example.com".into(),
                subject: None,
            },
        ];
        assert_eq!(typed, expected.iter().collect::<Vec<_>>());
        let agents: Vec<&str> = typed.iter().map(|r| r.agent()).collect();
        assert_eq!(
            agents,
            [
                "IPaddr",
                "IPaddr",
                "drbddisk",
                "Filesystem",
                "apache",
                "MailTo"
            ]
        );
        assert_eq!(res.groups[0].monitor, None);
        assert_eq!(res.groups[0].monitor_failures, MONITOR_FAILURES_DEFAULT);
    }

    // ==== Tests for typed resources ====

    #[test]
    fn ipaddr_fields_are_typed() {
        let res = ok("debian1 IPaddr2::10.0.0.5/24/eth1/10.0.0.255 10.0.0.6/16
");
        let typed: Vec<&Resource> = res.groups[0].resources_typed().collect();
        assert_eq!(
            *typed[0],
            Resource::IpAddr {
                addr: Ipv4Addr::new(10, 0, 0, 5),
                bits: Some(24),
                iface: Some("eth1".into()),
                broadcast: Some(Ipv4Addr::new(10, 0, 0, 255)),
                v2: true,
            }
        );
        assert_eq!(typed[0].agent(), "IPaddr2");
        assert_eq!(
            *typed[1],
            Resource::IpAddr {
                addr: Ipv4Addr::new(10, 0, 0, 6),
                bits: Some(16),
                iface: None,
                broadcast: None,
                v2: false,
            }
        );
    }

    #[test]
    fn filesystem_mailto_drbddisk_and_scripts_are_typed() {
        let text = "debian1 Filesystem::LABEL=data::/srv/data/::xfs::rw,noatime \
                      MailTo::root,ops@example.com::bascule drbddisk mysql::--fast::x
";
        let res = ok(text);
        let typed: Vec<&Resource> = res.groups[0].resources_typed().collect();
        assert_eq!(
            *typed[0],
            Resource::Filesystem {
                device: "LABEL=data".into(),
                mountpoint: "/srv/data/".into(),
                fstype: "xfs".into(),
                options: Some("rw,noatime".into()),
            }
        );
        assert_eq!(
            *typed[1],
            Resource::MailTo {
                addr: "root,ops@example.com".into(),
                subject: Some("bascule".into()),
            }
        );
        let addrs: Vec<&str> = typed[1].mail_addrs().collect();
        assert_eq!(addrs, ["root", "ops@example.com"]);
        assert_eq!(typed[2].mail_addrs().count(), 0);
        assert_eq!(
            *typed[2],
            Resource::DrbdDisk {
                resource: DRBD_ALL.into()
            }
        );
        assert_eq!(
            *typed[3],
            Resource::Script {
                name: "mysql".into(),
                args: vec!["--fast".into(), "x".into()],
            }
        );
        assert_eq!(res.groups[0].resources[0].mountpoint(), Some("/srv/data/"));
    }

    #[test]
    fn typed_resource_errors_name_the_line() {
        assert_err(
            "debian1 apache\ndebian2 Filesystem::/dev/drbd0::mnt::ext3\n",
            2,
            "mountpoint `mnt` must be an absolute path",
        );
        assert_err(
            "debian1 Filesystem::/dev/drbd0::/::ext3\n",
            1,
            "cannot be `/`",
        );
        assert_err(
            "debian1 Filesystem::/dev/drbd0::/mnt/repl\n",
            1,
            "Filesystem takes DEVICE::MOUNTPOINT::FSTYPE",
        );
        assert_err(
            "debian1 Filesystem::a::/m::ext3::o::x\n",
            1,
            "Filesystem takes",
        );
        assert_err(
            "debian1 Filesystem::/dev/sdb1::/m::ext3=x\n",
            1,
            "filesystem type `ext3=x`",
        );
        assert_err("debian1 MailTo\n", 1, "MailTo takes ADDR");
        assert_err("debian1 MailTo::a@b::s::x\n", 1, "MailTo takes ADDR");
        for bad in [
            "@example.com",
            "admin@",
            "a@b@c",
            "a,,b",
            "a@.com",
            "a@com.",
            "<a@b>",
            "a,",
        ] {
            assert_err(
                &format!("debian1 MailTo::{bad}\n"),
                1,
                "is not a mail address",
            );
        }
        assert_err("debian1 drbddisk::a::b\n", 1, "drbddisk takes at most one");
        assert_err("debian1 drbddisk::r=1\n", 1, "drbddisk takes at most one");
        assert_err(
            "debian1 Filesystem::/dev/a::/mnt/x::ext3\ndebian2 Filesystem::/dev/b::/mnt/x/::xfs\n",
            2,
            "mountpoint /mnt/x/ is already in the group on line 1",
        );
    }

    // ==== Tests for the monitor option ====

    #[test]
    fn monitor_word_sets_interval_and_failures() {
        let res = ok("debian1 apache monitor::30
debian2 monitor::500ms::5 mysql
");
        assert_eq!(res.groups[0].monitor, Some(Duration::from_secs(30)));
        assert_eq!(res.groups[0].monitor_failures, MONITOR_FAILURES_DEFAULT);
        assert_eq!(canonical(&res.groups[0]), ["apache"]);
        assert_eq!(res.groups[1].monitor, Some(Duration::from_millis(500)));
        assert_eq!(res.groups[1].monitor_failures, 5);
        assert_eq!(canonical(&res.groups[1]), ["mysql"]);
    }

    #[test]
    fn monitor_errors_name_the_line() {
        assert_err(
            "debian1 apache\ndebian2 mysql monitor\n",
            2,
            "write `monitor::SECONDS`",
        );
        assert_err("debian1 apache monitor::0\n", 1, "must be more than 0");
        assert_err(
            "debian1 apache monitor::x\n",
            1,
            "interval `x` is not a time",
        );
        assert_err("debian1 apache monitor::30::0\n", 1, "failure count `0`");
        assert_err("debian1 apache monitor::30::101\n", 1, "from 1 to 100");
        assert_err(
            "debian1 apache monitor::30::3::1\n",
            1,
            "write `monitor::SECONDS`",
        );
        assert_err(
            "debian1 apache monitor::30 monitor::10\n",
            1,
            "already has a `monitor` word",
        );
        assert_err("debian1 monitor::30\n", 1, "has no resources");
    }

    // ==== Tests for syntax ====

    #[test]
    fn comments_blanks_and_continuations_are_handled() {
        let text = "# groups\n\ndebian1 192.168.69.16 \\\n   drbddisk::repl \\\n   apache # web\n  # indented comment\ndebian2 10.0.0.50/8/eth1 mysql\n";
        let res = ok(text);
        assert_eq!(res.groups.len(), 2);
        assert_eq!(res.groups[0].line, 3);
        assert_eq!(
            canonical(&res.groups[0]),
            ["IPaddr::192.168.69.16", "drbddisk::repl", "apache"]
        );
        assert_eq!(res.groups[1].line, 7);
        assert_eq!(
            canonical(&res.groups[1]),
            ["IPaddr::10.0.0.50/8/eth1", "mysql"]
        );
    }

    #[test]
    fn continuation_at_end_of_file_ends_the_group() {
        let res = ok("debian1 apache \\\n");
        assert_eq!(canonical(&res.groups[0]), ["apache"]);
        assert!(ok("").groups.is_empty());
    }

    #[test]
    fn node_is_matched_case_insensitively() {
        let res = ok("DEBIAN2 apache\n");
        assert_eq!(res.groups[0].node, "debian2");
    }

    #[test]
    fn addresses_take_bits_iface_and_broadcast() {
        for word in [
            "192.168.69.16",
            "192.168.69.16/24",
            "192.168.69.16/24/eth0",
            "192.168.69.16/24/eth0/192.168.69.255",
            "IPaddr::192.168.69.16/0",
            "IPaddr2::192.168.69.16/32/eth0",
        ] {
            let res = ok(&format!("debian1 {word}\n"));
            let typed = &res.groups[0].resources[0].typed;
            assert!(matches!(typed, Resource::IpAddr { .. }), "{word}");
        }
    }

    #[test]
    fn filesystem_options_may_hold_commas_and_equals() {
        let res = ok("debian1 Filesystem::/dev/drbd0::/mnt/repl::ext3::rw,noatime,data=ordered\n");
        assert_eq!(
            res.groups[0].resources[0].args[3],
            "rw,noatime,data=ordered"
        );
    }

    // ==== Tests for errors ====

    #[test]
    fn errors_name_the_line() {
        assert_err(
            "debian3 apache\n",
            1,
            "node `debian3` is not a node of ha.cf (known nodes: debian1, debian2)",
        );
        assert_err("\ndebian1\n", 2, "has no resources");
        assert_err("debian1 \\\n\n", 1, "has no resources");
        assert_err("debian1 apa/che\n", 1, "resource name `apa/che`");
        assert_err("debian1 ::x\n", 1, "resource name ``");
        assert_err(
            "debian1 Filesystem::/dev/drbd0::::ext3\n",
            1,
            "empty argument",
        );
        assert_err("debian1 drbddisk::\n", 1, "empty argument");
        assert_err(
            "debian1 192.168.69.300\n",
            1,
            "`192.168.69.300` is not a valid IPv4 address",
        );
        assert_err("debian1 192.168.69.16/33\n", 1, "netmask bits `33`");
        assert_err("debian1 192.168.69.16/x\n", 1, "netmask bits `x`");
        assert_err("debian1 192.168.69.16/24//\n", 1, "not an interface name");
        assert_err(
            "debian1 192.168.69.16/24/eth0/300.0.0.1\n",
            1,
            "broadcast `300.0.0.1`",
        );
        assert_err(
            "debian1 192.168.69.16/24/eth0/1.2.3.4/5\n",
            1,
            "too many parts",
        );
        assert_err("debian1 IPaddr\n", 1, "IPaddr takes one argument");
        assert_err(
            "debian1 IPaddr2::1.2.3.4::x\n",
            1,
            "IPaddr2 takes one argument",
        );
        assert_err("debian1 IPaddr::debian\n", 1, "not a valid IPv4 address");
        assert_err("debian1 0.0.0.0\n", 1, "cannot be a virtual address");
        assert_err("debian1 224.0.0.1\n", 1, "cannot be a virtual address");
    }

    #[test]
    fn duplicates_across_groups_are_refused() {
        assert_err(
            "debian1 apache\ndebian2 apache\n",
            2,
            "`apache` is already in the group on line 1",
        );
        assert_err(
            "debian1 apache apache\n",
            1,
            "already in the group on line 1",
        );
        assert_err(
            "debian1 10.0.0.1\ndebian2 IPaddr::10.0.0.1\n",
            2,
            "already in the group",
        );
        assert_err(
            "debian1 10.0.0.1/8\ndebian2 IPaddr2::10.0.0.1/24/eth1\n",
            2,
            "virtual address 10.0.0.1",
        );
        let res = ok("debian1 10.0.0.1 apache\ndebian2 10.0.0.2 mysql\n");
        assert_eq!(res.groups.len(), 2);
    }

    #[test]
    fn error_display_has_file_and_line() {
        let mut warnings = Vec::new();
        let e = parse("\n\ndebian9 x\n", &nodes(), &mut warnings).unwrap_err();
        assert!(
            e.to_string().starts_with("haresources:3: node `debian9`"),
            "{e}"
        );
    }
}
