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
pub mod haresources;
pub mod hacf;

pub use authkeys::{AuthKey, AuthKeys, AuthMethod};
pub use hacf::{AutoFailback, HaCf, Medium};
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
            write!(f, "{}:{}: {}", self.file.file_name(), self.line, self.message)
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
            write!(f, "{}:{}: {}", self.file.file_name(), self.line, self.message)
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
        Ok(Config { ha, auth, resources, warnings })
    }
}
