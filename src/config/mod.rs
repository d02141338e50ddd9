//! Parsers for the guide's configuration files, verbatim: `ha.cf`, `authkeys`,
//! `haresources` (and, in a later issue, `drbd.conf`).
//!
//! Layer: pure. Every parser takes the file's text (and its name, for messages) and
//! returns typed settings or a [`ConfigError`] with `file:line`. Reading the files,
//! checking the authkeys mode and resolving interfaces is the shell's job
//! (`shell::config_load`). Warnings (directives Heartbeat has that bascule does not
//! implement yet, risky timings, the unauthenticated `crc` method) are returned as
//! values, never logged here.

pub mod authkeys;
pub mod digest;
pub mod hacf;
pub mod haresources;

pub use authkeys::{AuthKey, AuthKeys, AuthMethod};
pub use hacf::{AutoFailback, HaCf, LogFacility, Medium};
pub use haresources::{Group, Haresources, ResourceSpec};

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
    /// `link NAME KIND ...` line per medium, the auth method and key id (never the
    /// secret), one `group NODE RESOURCE...` line per group, and the per-file
    /// digests the peer will compare.
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
            let resources: Vec<String> = group
                .resources
                .iter()
                .map(ResourceSpec::canonical)
                .collect();
            line(
                &mut out,
                "group",
                format!("{} {}", group.node, resources.join(" ")),
            );
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

/// Appends one `key value` line.
fn line(out: &mut String, key: &str, value: impl fmt::Display) {
    use fmt::Write;
    let _ = writeln!(out, "{key} {value}");
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

/// A parser error must point inside the file and say something.
fn fuzz_check_error<T>(result: &Result<T, ConfigError>, text: &str) {
    if let Err(e) = result {
        assert!(e.line <= text.lines().count(), "{e}: line past the end");
        assert!(!e.message.is_empty());
    }
}
