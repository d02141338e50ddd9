//! `haresources`: resource groups, syntax only for now (the takeover issue acts on it).
//!
//! Layer: pure parser; it may not look at the system (no check that a script or
//! an interface exists). One logical line (a trailing `\` joins the next physical
//! line) is one group: the preferred node, then resources in start order.
//! - A bare IPv4 address, optionally `ADDR/BITS[/IFACE[/BROADCAST]]`, means
//!   `IPaddr::ADDR...`, as Heartbeat's ResourceManager reads it.
//! - `Name::a::b` is resource `Name` with arguments `a`, `b`; `Name` alone has none.
//! - `#` at the start of a word starts a comment to the end of the physical line.
//!
//! Checks: the node is an ha.cf node (case-insensitive, as Heartbeat lower-cases
//! node names); names are `[A-Za-z0-9_.-]+`; no empty argument; IPaddr/IPaddr2
//! take one `ADDR[/BITS[/IFACE[/BROADCAST]]]` argument; a group has at least one
//! resource; no resource (and no virtual address) appears twice in the file, since
//! both nodes would then start it.

use super::{ConfigError, ConfigWarning, FileKind};

/// One resource of a group, in start order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceSpec {
    /// The resource agent name (`IPaddr`, `drbddisk`, `Filesystem`, `apache`...).
    pub name: String,
    /// The `::`-separated arguments.
    pub args: Vec<String>,
    /// The word as written in the file (for messages and the digest).
    pub text: String,
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
    pub fn vip(&self) -> Option<std::net::Ipv4Addr> {
        if !is_ipaddr(&self.name) {
            return None;
        }
        let first = self.args.first()?;
        first.split('/').next()?.parse().ok()
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

/// One group: `NODE RESOURCE...`.
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
    if resource_words.is_empty() {
        return Err(error(line, format!("group of `{node}` has no resources: list them after the node, e.g. `{node} 192.168.69.100 apache`")));
    }
    let mut resources = Vec::with_capacity(resource_words.len());
    for word in resource_words {
        resources.push(parse_resource(word).map_err(|m| error(line, m))?);
    }
    Ok(Group {
        node,
        resources,
        line,
    })
}

/// One resource word.
fn parse_resource(word: &str) -> Result<ResourceSpec, String> {
    if !word.contains("::") && looks_like_address(word) {
        check_ipaddr_arg(word)?;
        return Ok(ResourceSpec {
            name: "IPaddr".into(),
            args: vec![word.to_string()],
            text: word.to_string(),
        });
    }
    let mut parts = word.split("::");
    let name = parts.next().unwrap_or("");
    let valid_name = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !valid_name {
        return Err(format!(
            "`{word}`: resource name `{name}` may hold only letters, digits, `_`, `.` and `-`"
        ));
    }
    let args: Vec<String> = parts.map(str::to_string).collect();
    if args.iter().any(String::is_empty) {
        return Err(format!("`{word}` has an empty argument: write `{name}::ARG::ARG` without `::::` or a trailing `::`"));
    }
    if is_ipaddr(name) {
        match args.as_slice() {
            [arg] => check_ipaddr_arg(arg)?,
            _ => return Err(format!("`{word}`: {name} takes one argument ADDR[/BITS[/IFACE[/BROADCAST]]], e.g. {name}::192.168.69.100/24/eth0")),
        }
    }
    Ok(ResourceSpec {
        name: name.to_string(),
        args,
        text: word.to_string(),
    })
}

/// Whether a resource agent is IPaddr or IPaddr2.
fn is_ipaddr(name: &str) -> bool {
    name == "IPaddr" || name == "IPaddr2"
}

/// Whether a bare word is meant as an address: its part before `/` is made of
/// digits and dots only and contains a dot.
fn looks_like_address(word: &str) -> bool {
    let head = word.split('/').next().unwrap_or("");
    head.contains('.') && head.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// `ADDR[/BITS[/IFACE[/BROADCAST]]]`.
fn check_ipaddr_arg(arg: &str) -> Result<(), String> {
    /// Longest interface name Linux accepts (IFNAMSIZ - 1).
    const IFACE_LEN_MAX: usize = 15;
    let parts: Vec<&str> = arg.split('/').collect();
    if parts.len() > 4 {
        return Err(format!(
            "`{arg}` has too many parts: use ADDR[/BITS[/IFACE[/BROADCAST]]]"
        ));
    }
    let addr: std::net::Ipv4Addr = parts[0]
        .parse()
        .map_err(|_| format!("`{}` is not a valid IPv4 address", parts[0]))?;
    if addr.is_unspecified() || addr.is_multicast() || addr.is_broadcast() {
        return Err(format!(
            "`{addr}` cannot be a virtual address: use a unicast address"
        ));
    }
    if let Some(bits) = parts.get(1) {
        match bits.parse::<u8>() {
            Ok(b) if b <= 32 => {}
            _ => {
                return Err(format!(
                    "`{arg}`: netmask bits `{bits}` must be a number from 0 to 32"
                ))
            }
        }
    }
    if let Some(iface) = parts.get(2) {
        let valid = !iface.is_empty()
            && iface.len() <= IFACE_LEN_MAX
            && iface.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
        if !valid {
            return Err(format!(
                "`{arg}`: `{iface}` is not an interface name, e.g. eth0"
            ));
        }
    }
    if let Some(broadcast) = parts.get(3) {
        broadcast
            .parse::<std::net::Ipv4Addr>()
            .map_err(|_| format!("`{arg}`: broadcast `{broadcast}` is not a valid IPv4 address"))?;
    }
    Ok(())
}

/// Refuses a resource or a virtual address already used earlier in the file.
fn check_duplicates(earlier: &[Group], group: &Group) -> Result<(), ConfigError> {
    for (i, resource) in group.resources.iter().enumerate() {
        let canonical = resource.canonical();
        let vip = resource.vip();
        let previous = earlier
            .iter()
            .flat_map(|g| g.resources.iter().map(move |r| (g.line, r)))
            .chain(group.resources[..i].iter().map(|r| (group.line, r)));
        for (line, other) in previous {
            if other.canonical() == canonical {
                return Err(error(group.line, format!("resource `{}` is already in the group on line {line}: each resource may run in one group only", resource.text)));
            }
            if let (Some(a), Some(b)) = (vip, other.vip()) {
                if a == b {
                    return Err(error(group.line, format!("virtual address {a} is already in the group on line {line}: each address may be managed once")));
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
            assert!(is_ipaddr(&res.groups[0].resources[0].name), "{word}");
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
