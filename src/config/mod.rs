//! Parsers for the guide's configuration files, verbatim: `ha.cf`, `authkeys`,
//! `haresources` and `drbd.conf` (with its own error type, since `include`
//! brings in files of any name: [`drbd::DrbdError`]).
//!
//! Layer: pure. Every parser takes the file's text (and its name, for messages) and
//! returns typed settings or a [`ConfigError`] with `file:line`. Reading the files,
//! checking the authkeys mode (with [`authkeys::check_mode`]) and resolving
//! interfaces is the shell's job (`shell::config_load`). Warnings (directives Heartbeat has that bascule does not
//! implement yet, risky timings, the unauthenticated `crc` method) are returned as
//! values, never logged here.

pub mod authkeys;
pub mod digest;
pub mod drbd;
pub mod hacf;
pub mod haresources;

pub use authkeys::{AuthKey, AuthKeys, AuthMethod};
pub use drbd::{DrbdConf, ResolvedResource};
pub use hacf::{AutoFailback, CommandLine, HaCf, LogFacility, Medium, PingNode, StopFailure};
pub use haresources::{Group, Haresources, Resource, ResourceSpec};

use core::fmt;

/// Which configuration file a message is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// `ha.cf`: nodes, timers, media, logging.
    HaCf,
    /// `authkeys`: the shared keys that authenticate frames.
    AuthKeys,
    /// `haresources`: resource groups and their preferred node.
    Haresources,
}

impl FileKind {
    /// Position in the order files are read and reported (ha.cf, authkeys, haresources).
    pub const fn order(self) -> u8 {
        match self {
            FileKind::HaCf => 0,
            FileKind::AuthKeys => 1,
            FileKind::Haresources => 2,
        }
    }

    /// The file's name inside the config dir, as operators know it.
    pub const fn file_name(self) -> &'static str {
        match self {
            FileKind::HaCf => "ha.cf",
            FileKind::AuthKeys => "authkeys",
            FileKind::Haresources => "haresources",
        }
    }
}

/// A configuration error: which file, which line (1-based; 0 when the problem is
/// the file as a whole, e.g. a missing `node` line), and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the error is in.
    pub file: FileKind,
    /// 1-based line number, 0 for whole-file problems.
    pub line: usize,
    /// One sentence an operator can act on, e.g. "unknown directive `keepalve`".
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.file_name(), self.message)
        } else {
            write!(
                f,
                "{}:{}: {}",
                self.file.file_name(),
                self.line,
                self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// A non-fatal remark on the configuration, reported once at start-up and by
/// `check-config` (never logged from here).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The file the warning is about.
    pub file: FileKind,
    /// 1-based line number, 0 for whole-file remarks.
    pub line: usize,
    /// What is risky or ignored, and what to do about it.
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.file_name(), self.message)
        } else {
            write!(
                f,
                "{}:{}: {}",
                self.file.file_name(),
                self.line,
                self.message
            )
        }
    }
}

/// Everything the daemon needs from the config dir, parsed and cross-checked.
#[derive(Clone, Debug)]
pub struct Config {
    /// `ha.cf`.
    pub ha: HaCf,
    /// `authkeys`.
    pub auth: AuthKeys,
    /// `haresources` (empty when the file is absent).
    pub resources: Haresources,
    /// Every warning from every file, in file then line order.
    pub warnings: Vec<ConfigWarning>,
}

impl Config {
    /// Parses the three files' texts and checks them against each other (every
    /// haresources node is an ha.cf node). `haresources` may be `None` (absent file).
    pub fn parse(
        ha_cf: &str,
        authkeys: &str,
        haresources: Option<&str>,
    ) -> Result<Config, ConfigError> {
        let mut warnings = Vec::new();
        let ha = hacf::parse(ha_cf, &mut warnings)?;
        let auth = authkeys::parse(authkeys, &mut warnings)?;
        let resources = match haresources {
            Some(text) => haresources::parse(text, &ha.nodes, &mut warnings)?,
            None => Haresources::default(),
        };
        warnings.sort_by_key(|w| (w.file.order(), w.line));
        Ok(Config {
            ha,
            auth,
            resources,
            warnings,
        })
    }

    /// The effective settings for `bascule check-config`: one `key value` line
    /// each, in a fixed order, defaults filled in, timers in milliseconds, one
    /// `link NAME KIND ...` line per medium, the takeover settings (`ping ADDR` or
    /// `ping_group NAME ADDR...` per ping node, `fence none` when unset), the auth
    /// method and key id (never the secret), one `group NODE RESOURCE...
    /// [monitor::MSms::N]` line per group, and the per-file digests the peer will
    /// compare.
    pub fn render_effective(&self) -> String {
        let ha = &self.ha;
        let mut out = String::new();
        for node in &ha.nodes {
            line(&mut out, "node", node);
        }
        line(&mut out, "keepalive_ms", ha.keepalive.millis());
        line(&mut out, "warntime_ms", ha.warntime.millis());
        line(&mut out, "deadtime_ms", ha.deadtime.millis());
        line(&mut out, "initdead_ms", ha.initdead.millis());
        line(&mut out, "auto_failback", ha.auto_failback.name());
        line(&mut out, "udpport", ha.udpport);
        line(&mut out, "baud", ha.baud);
        line(&mut out, "realtime", if ha.realtime { "on" } else { "off" });
        line(&mut out, "logfile", ha.logfile.as_deref().unwrap_or("none"));
        line(
            &mut out,
            "debugfile",
            ha.debugfile.as_deref().unwrap_or("none"),
        );
        line(&mut out, "logfacility", ha.logfacility.name());
        for medium in &ha.media {
            line(&mut out, "link", render_medium(medium, ha));
        }
        render_takeover(&mut out, ha);
        let key = self.auth.active_key();
        line(&mut out, "auth_method", key.method.name());
        line(&mut out, "auth_id", key.id);
        let ids: Vec<String> = self
            .auth
            .keys
            .iter()
            .map(|k| format!("{}:{}", k.id, k.method.name()))
            .collect();
        line(&mut out, "auth_accepted", ids.join(" "));
        for group in &self.resources.groups {
            line(&mut out, "group", group.canonical());
        }
        let d = digest::ConfigDigest::of(self);
        line(&mut out, "digest_ha_cf", format!("{:08x}", d.ha_cf));
        line(
            &mut out,
            "digest_haresources",
            format!("{:08x}", d.haresources),
        );
        line(&mut out, "digest_authkeys", format!("{:08x}", d.authkeys));
        out
    }
}

/// Cross-checks haresources' `drbddisk` resources against drbd.conf, so that
/// `check-config` and `run` refuse what would fail at takeover time:
/// `drbddisk::RES` must name a drbd.conf resource that has an `on` section for
/// `this_node` and pairs it with ha.cf's `peer_node`; `drbddisk` without a name
/// means every resource with an `on this_node` section, and there must be one.
/// Without a drbd.conf (`drbd` None) any `drbddisk` is an error naming
/// `expected_path`, the file that was looked for. Errors carry the group's
/// haresources line.
pub fn check_drbddisk(
    resources: &Haresources,
    drbd: Option<&DrbdConf>,
    this_node: &str,
    peer_node: &str,
    expected_path: &str,
) -> Result<(), ConfigError> {
    for group in &resources.groups {
        for spec in &group.resources {
            let Resource::DrbdDisk { resource } = &spec.typed else {
                continue;
            };
            let error = |message: String| ConfigError {
                file: FileKind::Haresources,
                line: group.line,
                message: format!("{}: {message}", spec.text),
            };
            let Some(drbd) = drbd else {
                return Err(error(format!(
                    "needs drbd.conf, and {expected_path} does not exist"
                )));
            };
            let names: Vec<&str> = if resource == haresources::DRBD_ALL {
                drbd.resources_on(this_node)
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect()
            } else {
                vec![resource.as_str()]
            };
            if names.is_empty() {
                return Err(error(format!(
                    "drbd.conf has no resource with an `on {this_node}` section"
                )));
            }
            for name in names {
                let resolved = drbd.resource_for(name, this_node).map_err(&error)?;
                if !resolved.peer_host.eq_ignore_ascii_case(peer_node) {
                    return Err(error(format!(
                        "drbd.conf's resource '{name}' pairs {} with {}, but ha.cf's peer is {peer_node}",
                        resolved.host, resolved.peer_host
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Appends one `key value` line.
fn line(out: &mut String, key: &str, value: impl fmt::Display) {
    use fmt::Write;
    let _ = writeln!(out, "{key} {value}");
}

/// The takeover settings of ha.cf, one `key value` line each.
fn render_takeover(out: &mut String, ha: &HaCf) {
    for ping in &ha.ping_nodes {
        let addrs: Vec<String> = ping.addrs.iter().map(|a| a.to_string()).collect();
        if ping.group {
            line(
                out,
                "ping_group",
                format!("{} {}", ping.name, addrs.join(" ")),
            );
        } else {
            line(out, "ping", &ping.name);
        }
    }
    line(out, "deadping_ms", ha.deadping.millis());
    match &ha.fence {
        Some(command) => line(out, "fence", command.render()),
        None => line(out, "fence", "none"),
    }
    line(out, "fence_delay_ms", ha.fence_delay.millis());
    line(out, "fence_timeout_ms", ha.fence_timeout.millis());
    line(out, "on_stop_failure", ha.on_stop_failure.render());
    line(out, "stop_retries", ha.stop_retries);
    line(out, "start_backoff_ms", ha.start_backoff.millis());
    line(out, "start_backoff_max_ms", hacf::START_BACKOFF_CAP_MS);
    line(out, "action_timeout_ms", ha.action_timeout.millis());
}

/// `NAME KIND key=value...` for one medium.
fn render_medium(medium: &Medium, ha: &HaCf) -> String {
    let name = medium.link_name();
    match medium {
        Medium::Bcast { iface, .. } => format!("{name} bcast iface={iface} port={}", ha.udpport),
        Medium::Mcast {
            iface,
            group,
            port,
            ttl,
            loopback,
            ..
        } => {
            format!(
                "{name} mcast iface={iface} group={group} port={port} ttl={ttl} loop={}",
                u8::from(*loopback)
            )
        }
        Medium::Ucast { iface, addr, .. } => {
            format!("{name} ucast iface={iface} addr={addr} port={}", ha.udpport)
        }
        Medium::Serial { device, .. } => format!("{name} serial device={device} baud={}", ha.baud),
    }
}

/// Fuzz entry for the config parsers (target `config_parse`): `data` holds
/// ha.cf, authkeys and haresources separated by 0xFF bytes (lossy UTF-8). Runs
/// every parser and asserts their invariants: no panic, errors carry a line
/// inside the file and a message, and every `Ok` result is well formed.
pub fn fuzz_config(data: &[u8]) {
    /// Separator between the three texts: never valid in UTF-8.
    const SEPARATOR: u8 = 0xFF;
    let mut parts = data
        .splitn(3, |b| *b == SEPARATOR)
        .map(String::from_utf8_lossy);
    let ha_text = parts.next().unwrap_or_default();
    let auth_text = parts.next().unwrap_or_default();
    let res_text = parts.next().unwrap_or_default();
    let mut warnings = Vec::new();
    let ha = hacf::parse(&ha_text, &mut warnings);
    fuzz_check_error(&ha, &ha_text);
    if let Ok(ha) = &ha {
        assert_eq!(ha.nodes.len(), 2);
        assert_ne!(ha.nodes[0], ha.nodes[1]);
        assert!(
            ha.keepalive.millis() > 0 && ha.keepalive < ha.deadtime && ha.deadtime <= ha.initdead
        );
        assert!(ha.warntime.millis() > 0 && !ha.media.is_empty());
        assert!(ha
            .digest_lines
            .iter()
            .all(|l| (1..=ha_text.lines().count()).contains(l)));
        fuzz_check_takeover(ha);
    }
    let auth = authkeys::parse(&auth_text, &mut warnings);
    fuzz_check_error(&auth, &auth_text);
    if let Ok(auth) = &auth {
        assert!(auth.key(auth.active).is_some());
        for key in &auth.keys {
            assert!(key.id >= 1 && key.secret.len() <= authkeys::KEY_LEN_MAX);
            assert_eq!(key.secret.is_empty(), key.method == AuthMethod::Crc);
            assert_eq!(auth.keys.iter().filter(|k| k.id == key.id).count(), 1);
        }
    }
    let nodes = match &ha {
        Ok(ha) => ha.nodes.clone(),
        Err(_) => vec!["debian1".to_string(), "debian2".to_string()],
    };
    let resources = haresources::parse(&res_text, &nodes, &mut warnings);
    fuzz_check_error(&resources, &res_text);
    if let Ok(resources) = &resources {
        for group in &resources.groups {
            assert!(!group.resources.is_empty() && nodes.contains(&group.node));
            fuzz_check_group(group);
        }
    }
    let all_ok = ha.is_ok() && auth.is_ok() && resources.is_ok();
    match Config::parse(&ha_text, &auth_text, Some(&res_text)) {
        Ok(config) => {
            assert!(all_ok);
            assert_eq!(
                digest::ConfigDigest::of(&config),
                digest::ConfigDigest::of(&config)
            );
            assert!(config.render_effective().contains("auth_method "));
        }
        Err(_) => assert!(!all_ok),
    }
}

/// The takeover settings of an `Ok` ha.cf are within their documented ranges.
fn fuzz_check_takeover(ha: &HaCf) {
    assert!(ha.ping_nodes.len() <= hacf::PING_NODES_MAX && ha.deadping.millis() > 0);
    for ping in &ha.ping_nodes {
        assert!(!ping.addrs.is_empty() && ping.addrs.len() <= hacf::PING_GROUP_ADDRS_MAX);
        assert_eq!(
            ping.group,
            ping.addrs.len() != 1 || ping.name != ping.addrs[0].to_string()
        );
    }
    if let Some(fence) = &ha.fence {
        assert!(!fence.program.is_empty() && !fence.program.contains(char::is_whitespace));
    }
    if let StopFailure::Command(command) = &ha.on_stop_failure {
        assert!(command.program.starts_with('/'));
    }
    assert!(ha.fence_timeout.millis() > 0 && ha.action_timeout.millis() > 0);
    assert!(ha.stop_retries <= hacf::STOP_RETRIES_MAX);
    assert!((1..=hacf::START_BACKOFF_CAP_MS).contains(&ha.start_backoff.millis()));
}

/// Every resource of an `Ok` group is typed consistently with its spec.
fn fuzz_check_group(group: &Group) {
    assert!((1..=haresources::MONITOR_FAILURES_MAX).contains(&group.monitor_failures));
    assert!(group.monitor.map_or(true, |m| m.millis() > 0));
    for spec in &group.resources {
        assert_eq!(
            spec.vip().is_some(),
            matches!(spec.typed, Resource::IpAddr { .. })
        );
        match &spec.typed {
            Resource::Filesystem {
                mountpoint, fstype, ..
            } => {
                assert!(mountpoint.starts_with('/') && !fstype.is_empty())
            }
            Resource::MailTo { .. } => assert!(spec.typed.mail_addrs().count() >= 1),
            Resource::DrbdDisk { resource } => assert!(!resource.is_empty()),
            Resource::Script { name, args } => {
                assert!(
                    name == &spec.name && args == &spec.args && name != haresources::MONITOR_WORD
                )
            }
            Resource::IpAddr { .. } => {}
        }
    }
}

/// A parser error must point inside the file and say something.
fn fuzz_check_error<T>(result: &Result<T, ConfigError>, text: &str) {
    if let Err(e) = result {
        assert!(e.line <= text.lines().count(), "{e}: line past the end");
        assert!(!e.message.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BCAST_HA_CF: &str = include_str!("../../tests/fixtures/config/guide-bcast/ha.cf");
    const SERIAL_HA_CF: &str = include_str!("../../tests/fixtures/config/guide-serial/ha.cf");
    const AUTHKEYS: &str = include_str!("../../tests/fixtures/config/guide-bcast/authkeys");
    const HARESOURCES: &str = include_str!("../../tests/fixtures/config/guide-bcast/haresources");
    const TAKEOVER_HA_CF: &str = include_str!("../../tests/fixtures/config/takeover/ha.cf");
    const TAKEOVER_HARESOURCES: &str =
        include_str!("../../tests/fixtures/config/takeover/haresources");

    // ==== Tests for Config::parse ====

    #[test]
    fn guide_files_parse_together() {
        for ha_cf in [BCAST_HA_CF, SERIAL_HA_CF] {
            let config = Config::parse(ha_cf, AUTHKEYS, Some(HARESOURCES)).expect("guide files");
            assert_eq!(config.ha.nodes, ["debian1", "debian2"]);
            assert_eq!(config.auth.active_key().method, AuthMethod::Md5);
            assert_eq!(config.resources.groups.len(), 1);
            // initdead < 2 x deadtime (ha.cf), then md5 is weaker (authkeys).
            let files: Vec<FileKind> = config.warnings.iter().map(|w| w.file).collect();
            assert_eq!(
                files,
                [FileKind::HaCf, FileKind::AuthKeys],
                "{:?}",
                config.warnings
            );
        }
    }

    #[test]
    fn takeover_fixture_parses_with_every_new_setting() {
        let config = Config::parse(TAKEOVER_HA_CF, AUTHKEYS, Some(TAKEOVER_HARESOURCES))
            .expect("takeover fixture");
        let ha = &config.ha;
        let names: Vec<&str> = ha.ping_nodes.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["192.168.69.1", "switches"]);
        assert_eq!(ha.deadping.millis(), 30_000);
        let fence = ha.fence.as_ref().expect("fence");
        assert_eq!(fence.args, ["--peer=debian2,debian1", "--timeout", "20"]);
        assert_eq!(
            (ha.fence_delay.millis(), ha.fence_timeout.millis()),
            (10_000, 60_000)
        );
        assert!(matches!(ha.on_stop_failure, StopFailure::Command(_)));
        assert_eq!(ha.stop_retries, 3);
        let group = &config.resources.groups[0];
        assert_eq!(group.resources.len(), 6);
        assert_eq!(group.monitor, Some(crate::time::Duration::from_secs(30)));
        assert_eq!(group.monitor_failures, 3);
        // Only authkeys' md5 warning: nothing in the new directives is risky.
        assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    }

    #[test]
    fn absent_haresources_is_empty() {
        let config = Config::parse(BCAST_HA_CF, AUTHKEYS, None).unwrap();
        assert!(config.resources.groups.is_empty());
    }

    #[test]
    fn first_error_names_its_file() {
        let e = Config::parse("node a\nbcast eth1\n", AUTHKEYS, None).unwrap_err();
        assert_eq!(e.file, FileKind::HaCf);
        let e = Config::parse(BCAST_HA_CF, "auth 2\n1 md5 x\n", None).unwrap_err();
        assert_eq!(e.to_string(), format!("authkeys:1: {}", e.message));
        let e = Config::parse(BCAST_HA_CF, AUTHKEYS, Some("debian3 apache\n")).unwrap_err();
        assert_eq!(e.file, FileKind::Haresources);
    }

    #[test]
    fn warnings_are_sorted_by_file_then_line() {
        let ha_cf = "node a b\nbcast eth1\nrespawn x /bin/true\ndeadtime 30\ninitdead 40\n";
        let config = Config::parse(ha_cf, "auth 1\n1 crc\n", None).unwrap();
        let order: Vec<(u8, usize)> = config
            .warnings
            .iter()
            .map(|w| (w.file.order(), w.line))
            .collect();
        assert_eq!(order, [(0, 0), (0, 5), (1, 0)], "{:?}", config.warnings);
    }

    #[test]
    fn config_error_display_omits_line_zero() {
        let e = ConfigError {
            file: FileKind::HaCf,
            line: 0,
            message: "no `node` line".into(),
        };
        assert_eq!(e.to_string(), "ha.cf: no `node` line");
        let w = ConfigWarning {
            file: FileKind::Haresources,
            line: 4,
            message: "m".into(),
        };
        assert_eq!(w.to_string(), "haresources:4: m");
    }

    // ==== Tests for check_drbddisk ====

    const GUIDE_DRBD: &str = include_str!("../../tests/fixtures/drbd/guide.conf");

    fn drbd(text: &str) -> DrbdConf {
        DrbdConf::parse("drbd.conf", text, &mut Vec::new()).expect("drbd.conf")
    }

    fn groups(text: &str) -> Haresources {
        let nodes = ["debian1".to_string(), "debian2".to_string()];
        haresources::parse(text, &nodes, &mut Vec::new()).expect("haresources")
    }

    #[test]
    fn drbddisk_names_a_drbd_conf_resource() {
        let conf = drbd(GUIDE_DRBD);
        let ok = |text: &str, node: &str, peer: &str| {
            check_drbddisk(
                &groups(text),
                Some(&conf),
                node,
                peer,
                "/etc/bascule/drbd.conf",
            )
        };
        assert_eq!(ok(HARESOURCES, "debian1", "debian2"), Ok(()));
        assert_eq!(ok(HARESOURCES, "debian2", "debian1"), Ok(()));
        assert_eq!(
            ok("debian1 drbddisk apache\n", "debian2", "debian1"),
            Ok(())
        );
        assert_eq!(ok("debian1 apache\n", "debian3", "debian1"), Ok(()));
        let e = ok(
            "debian1 apache\ndebian2 drbddisk::rep\n",
            "debian1",
            "debian2",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "haresources:2: drbddisk::rep: drbd.conf has no resource 'rep'; did you mean 'repl'? (resources: repl)"
        );
        let e = ok(HARESOURCES, "debian3", "debian1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "haresources:1: drbddisk::repl: drbd.conf:1: resource 'repl' has no `on debian3` section (hosts: debian1, debian2)"
        );
        let e = ok("debian1 drbddisk\n", "debian3", "debian1").unwrap_err();
        assert!(
            e.message
                .contains("no resource with an `on debian3` section"),
            "{e}"
        );
        let e = ok(HARESOURCES, "debian1", "debian9").unwrap_err();
        assert!(
            e.message
                .contains("pairs debian1 with debian2, but ha.cf's peer is debian9"),
            "{e}"
        );
    }

    #[test]
    fn drbddisk_without_drbd_conf_names_the_expected_file() {
        let e = check_drbddisk(
            &groups(HARESOURCES),
            None,
            "debian1",
            "debian2",
            "/etc/bascule/drbd.conf",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "haresources:1: drbddisk::repl: needs drbd.conf, and /etc/bascule/drbd.conf does not exist"
        );
        let none = groups("debian1 apache\n");
        assert_eq!(
            check_drbddisk(&none, None, "debian1", "debian2", "x"),
            Ok(())
        );
    }

    // ==== Tests for render_effective ====

    #[test]
    fn render_effective_prints_the_serial_guide() {
        let config = Config::parse(SERIAL_HA_CF, AUTHKEYS, Some(HARESOURCES)).unwrap();
        let d = digest::ConfigDigest::of(&config);
        let expected = format!(
            "node debian1\nnode debian2\nkeepalive_ms 2000\nwarntime_ms 10000\ndeadtime_ms 60000\n\
             initdead_ms 80000\nauto_failback off\nudpport 694\nbaud 9600\nrealtime on\n\
             logfile /var/log/ha.log\ndebugfile none\nlogfacility local0\n\
             link eth0 bcast iface=eth0 port=694\nlink ttyS0 serial device=/dev/ttyS0 baud=9600\n\
             deadping_ms 60000\nfence none\nfence_delay_ms 10000\nfence_timeout_ms 60000\n\
             on_stop_failure reboot\nstop_retries 3\nstart_backoff_ms 10000\n\
             start_backoff_max_ms 300000\naction_timeout_ms 120000\n\
             auth_method md5\nauth_id 1\nauth_accepted 1:md5\n\
             group debian1 IPaddr::192.168.69.16 IPaddr::192.168.69.100 drbddisk::repl \
             Filesystem::/dev/drbd0::/mnt/repl::ext3 apache MailTo::admin@example.com\n\
             digest_ha_cf {:08x}\ndigest_haresources {:08x}\ndigest_authkeys {:08x}\n",
            d.ha_cf, d.haresources, d.authkeys
        );
        assert_eq!(config.render_effective(), expected);
    }

    #[test]
    fn render_effective_names_mcast_and_ucast_links_and_hides_secrets() {
        let ha_cf = "node a b\nmcast eth1 225.0.0.1 700 2 1\nucast eth0 10.0.0.2\n";
        let config = Config::parse(ha_cf, "auth 1\n1 sha256 topsecret\n2 crc\n", None).unwrap();
        let text = config.render_effective();
        assert!(
            text.contains(
                "link eth1-mcast mcast iface=eth1 group=225.0.0.1 port=700 ttl=2 loop=1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("link eth0-ucast ucast iface=eth0 addr=10.0.0.2 port=694\n"),
            "{text}"
        );
        assert!(text.contains("auth_accepted 1:sha256 2:crc\n"), "{text}");
        assert!(!text.contains("topsecret"), "{text}");
        assert!(!text.contains("group "), "{text}");
    }

    #[test]
    fn render_effective_prints_takeover_settings() {
        let ha_cf = "node a b\nbcast eth1\nping 10.0.0.254\nping_group gw 10.0.1.1 10.0.1.2\n\
                     deadping 20\nfence /usr/local/sbin/fence-peer --host=b,port=2 -v\n\
                     fence_delay 0\nfence_timeout 30\non_stop_failure /bin/touch /tmp/escalated\n\
                     stop_retries 1\nstart_backoff 5\naction_timeout 90\n";
        let config = Config::parse(ha_cf, AUTHKEYS, Some("a apache monitor::30\n")).unwrap();
        let text = config.render_effective();
        let expected = "ping 10.0.0.254\nping_group gw 10.0.1.1 10.0.1.2\ndeadping_ms 20000\n\
                        fence /usr/local/sbin/fence-peer --host=b,port=2 -v\nfence_delay_ms 0\n\
                        fence_timeout_ms 30000\non_stop_failure /bin/touch /tmp/escalated\n\
                        stop_retries 1\nstart_backoff_ms 5000\nstart_backoff_max_ms 300000\n\
                        action_timeout_ms 90000\n";
        assert!(text.contains(expected), "{text}");
        assert!(
            text.contains("group a apache monitor::30000ms::3\n"),
            "{text}"
        );
    }

    // ==== Tests for fuzz_config ====

    fn corpus_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/config_parse")
    }

    #[test]
    fn fuzz_config_accepts_every_seed() {
        let mut seen = 0;
        for entry in std::fs::read_dir(corpus_dir()).expect("corpus dir") {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            fuzz_config(&data);
            seen += 1;
        }
        assert!(seen >= 5, "only {seen} seeds");
    }

    #[test]
    fn guide_seeds_parse_ok() {
        for name in [
            "guide-bcast",
            "guide-serial",
            "takeover-full",
            "takeover-commas-and-groups",
        ] {
            let data = std::fs::read(corpus_dir().join(name)).unwrap();
            let parts: Vec<String> = data
                .split(|b| *b == 0xFF)
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            assert!(
                Config::parse(&parts[0], &parts[1], Some(&parts[2])).is_ok(),
                "{name}"
            );
        }
    }

    #[test]
    fn fuzz_config_survives_seeded_mutations() {
        // Deterministic xorshift mutations of the guide seeds: byte flips, inserts of
        // syntax characters, truncations. Bounded: 2 seeds x 2000 rounds.
        const ROUNDS: usize = 2000;
        const ALPHABET: &[u8] = b" \t\n\\#:/.,-0123456789msu\xffabcdefnodeauthcrc";
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for name in ["guide-bcast", "crc-and-mcast-ucast", "takeover-full"] {
            let seed = std::fs::read(corpus_dir().join(name)).unwrap();
            for _ in 0..ROUNDS {
                let mut data = seed.clone();
                for _ in 0..(next() % 4 + 1) {
                    let at = (next() as usize) % data.len().max(1);
                    let byte = ALPHABET[(next() as usize) % ALPHABET.len()];
                    match next() % 3 {
                        0 if !data.is_empty() => data[at] = byte,
                        1 => data.insert(at.min(data.len()), byte),
                        _ => data.truncate(at.max(1)),
                    }
                }
                fuzz_config(&data);
            }
        }
    }

    #[test]
    fn refused_seeds_fail_on_their_line() {
        for (name, file, line) in [
            ("stonith-refused", FileKind::HaCf, 3),
            ("takeover-errors", FileKind::HaCf, 3),
        ] {
            let data = std::fs::read(corpus_dir().join(name)).unwrap();
            let parts: Vec<String> = data
                .split(|b| *b == 0xFF)
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            let e = Config::parse(&parts[0], &parts[1], Some(&parts[2])).unwrap_err();
            assert_eq!((e.file, e.line), (file, line), "{name}: {e}");
        }
    }

    #[test]
    fn fuzz_config_handles_empty_and_binary_input() {
        fuzz_config(b"");
        fuzz_config(b"\xff\xff\xff\xff");
        fuzz_config(&[0u8, 0x80, 0xfe, 0xff, b'\n', 0xc3]);
    }
}
