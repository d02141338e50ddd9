//! Command line: `bascule [--config-dir DIR] [--node NAME] [--run-dir DIR] [--state-dir DIR] COMMAND`.
//!
//! Layer: shell. Parses arguments by hand (no clap: the binary stays small), runs
//! one command and maps every failure to one line on stderr and its own exit code.
//! Nothing here knows about frames or timers.
//!
//! Exit codes (stable; scripts and the init script rely on them):
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success (`run` stopped by SIGTERM/SIGINT, `check-config` found no error) |
//! | 1 | internal error (a bug: please report) |
//! | 2 | usage: unknown option or command, missing argument |
//! | 3 | configuration: a file is missing or wrong (`file:line: message`), or this node is not in ha.cf |
//! | 4 | authkeys: readable or writable by group or others (must be mode 0600), or unreadable |
//! | 5 | I/O: the state dir, run dir, control socket or a log file cannot be written |
//! | 6 | serial: a serial port cannot be used at all (permission denied) |
//! | 7 | Ethernet: a UDP socket cannot be set up at all (permission denied, port in use) |
//! | 8 | `status`: no daemon answers on the control socket (not running) |
//! | 9 | `run`: another bascule already answers on the control socket |
//! | 10 | `disk ...`: the daemon (or `create-md`) refused the command; the message says why |
//!
//! `disk role RES` answers like an LSB `status`: 0 when Primary, 3 when not (the
//! drbddisk agent's status check).

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::core::takeover::{Command as TakeoverCommand, Which};

/// Default configuration directory (the guide's files are copied here).
pub const CONFIG_DIR_DEFAULT: &str = "/etc/bascule";
/// Default run directory (the control socket lives here).
pub const RUN_DIR_DEFAULT: &str = "/run/bascule";
/// Default state directory (the boot epoch lives here).
pub const STATE_DIR_DEFAULT: &str = "/var/lib/bascule";

/// Every way the shell can fail; each kind has its own exit code (see the module doc).
#[derive(Debug)]
pub enum ShellError {
    /// Bad command line; the message says what and the usage follows.
    Usage(String),
    /// A configuration file is missing or wrong; the message starts with `path:line:`.
    Config(String),
    /// authkeys has a bad mode or cannot be read; the message names the file and reason.
    Auth(String),
    /// A file or socket the daemon needs cannot be used.
    Io {
        /// What we were doing, with the path.
        what: String,
        /// The OS error.
        error: io::Error,
    },
    /// A serial port cannot be used at all.
    Serial {
        /// Device path.
        device: String,
        /// Why.
        error: String,
    },
    /// A UDP link cannot be set up at all.
    Eth {
        /// Link name (`eth1`, `eth1-mcast`...).
        link: String,
        /// The OS error.
        error: io::Error,
    },
    /// `status`: no daemon answers on the control socket.
    NotRunning(String),
    /// `run`: another daemon answers on the control socket.
    AlreadyRunning(String),
    /// `disk ...`: the command was refused (a Secondary asked to serve, a
    /// mounted device asked to demote, valid metadata without `--force`).
    Refused(String),
    /// `disk role`: the resource is not Primary here (LSB status 3).
    NotPrimary(String),
    /// A bug; should never be seen.
    Internal(String),
}

impl ShellError {
    /// The process exit code for this kind of failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            ShellError::Internal(_) => 1,
            ShellError::Usage(_) => 2,
            ShellError::Config(_) => 3,
            ShellError::Auth(_) => 4,
            ShellError::Io { .. } => 5,
            ShellError::Serial { .. } => 6,
            ShellError::Eth { .. } => 7,
            ShellError::NotRunning(_) => 8,
            ShellError::AlreadyRunning(_) => 9,
            ShellError::Refused(_) => 10,
            ShellError::NotPrimary(_) => 3,
        }
    }

    /// Wraps an I/O error with what we were doing.
    pub fn io(what: impl Into<String>, error: io::Error) -> ShellError {
        ShellError::Io {
            what: what.into(),
            error,
        }
    }
}

impl fmt::Display for ShellError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            ShellError::Usage(m) => write!(f, "usage: {m} (try `bascule help`)"),
            ShellError::Config(m) | ShellError::Auth(m) => f.write_str(m),
            ShellError::Io { what, error } => write!(f, "{what}: {error}"),
            ShellError::Serial { device, error } => write!(f, "serial {device}: {error}"),
            ShellError::Eth { link, error } => write!(f, "link {link}: {error}"),
            ShellError::NotRunning(m) | ShellError::AlreadyRunning(m) => f.write_str(m),
            ShellError::Refused(m) | ShellError::NotPrimary(m) => f.write_str(m),
            ShellError::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

impl std::error::Error for ShellError {}

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// The daemon, in the foreground.
    Run,
    /// Validate every file and print the effective settings.
    CheckConfig,
    /// Ask the running daemon for its state.
    Status {
        /// JSON instead of text.
        json: bool,
    },
    /// `standby|takeover [all|local|foreign]`: sent to the running daemon.
    Operator(TakeoverCommand),
    /// `disk ...`: the replicated disks.
    Disk(DiskCommand),
    /// Print the version.
    Version,
    /// Print the usage.
    Help,
}

/// Which replicated disks a `disk` command addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskTarget {
    /// Every resource of drbd.conf (`all`, as drbdadm).
    All,
    /// One resource by name.
    One(String),
}

impl DiskTarget {
    /// `all` or the name.
    pub fn word(&self) -> &str {
        match self {
            DiskTarget::All => "all",
            DiskTarget::One(name) => name,
        }
    }

    fn parse(word: &str) -> Result<DiskTarget, ShellError> {
        let plain = word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        match word {
            "all" => Ok(DiskTarget::All),
            w if plain && !w.is_empty() && !w.starts_with('-') => Ok(DiskTarget::One(w.into())),
            w => Err(ShellError::Usage(format!(
                "`{w}`: expected a drbd.conf resource name or `all`"
            ))),
        }
    }
}

/// `bascule disk VERB [flags] RES|all`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskVerb {
    /// `/proc/drbd`-like lines of the disks.
    Status,
    /// Promote (`--force`: the guide's `--do-what-I-say`).
    Primary {
        force: bool,
    },
    /// Demote (refused while the device is mounted or open).
    Secondary,
    /// `--discard-my-data`: become sync target after a split brain.
    Connect {
        discard_my_data: bool,
    },
    Disconnect,
    /// Resync the whole local disk from the peer.
    Invalidate,
    /// Compare both sides online.
    Verify,
    /// Offline: write fresh metadata (`--force` over valid metadata).
    CreateMd {
        force: bool,
    },
    /// Exit 0 when Primary with the device exposed (every resource for `all`),
    /// 3 otherwise: the drbddisk agent's status check.
    Role,
}

impl DiskVerb {
    /// The verb as typed (and as sent on the control socket).
    pub fn word(&self) -> &'static str {
        match self {
            DiskVerb::Status => "status",
            DiskVerb::Primary { .. } => "primary",
            DiskVerb::Secondary => "secondary",
            DiskVerb::Connect { .. } => "connect",
            DiskVerb::Disconnect => "disconnect",
            DiskVerb::Invalidate => "invalidate",
            DiskVerb::Verify => "verify",
            DiskVerb::CreateMd { .. } => "create-md",
            DiskVerb::Role => "role",
        }
    }
}

/// A parsed `disk` command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskCommand {
    /// What to do.
    pub verb: DiskVerb,
    /// On which resources.
    pub target: DiskTarget,
    /// `--wait SECS` (primary, secondary): retry a refusal while the peer is
    /// still Primary, then wait for the device to appear or go, at most this
    /// long (what Heartbeat's drbddisk script does around `drbdadm`).
    pub wait_s: Option<u64>,
}

impl DiskCommand {
    /// The control-socket request line: `disk VERB [--flag] RES`.
    pub fn request_line(&self) -> String {
        let flag = match self.verb {
            DiskVerb::Primary { force: true } => " --force",
            DiskVerb::Connect {
                discard_my_data: true,
            } => " --discard-my-data",
            _ => "",
        };
        format!("disk {}{} {}", self.verb.word(), flag, self.target.word())
    }
}

/// Parses the words after `disk`.
pub fn parse_disk<'a>(words: impl IntoIterator<Item = &'a str>) -> Result<DiskCommand, ShellError> {
    let mut words = words.into_iter();
    let verb_word = words
        .next()
        .ok_or_else(|| ShellError::Usage("disk needs a command (status, primary, secondary, connect, disconnect, invalidate, verify, create-md)".into()))?;
    let mut verb = match verb_word {
        "status" => DiskVerb::Status,
        "primary" => DiskVerb::Primary { force: false },
        "secondary" => DiskVerb::Secondary,
        "connect" => DiskVerb::Connect {
            discard_my_data: false,
        },
        "disconnect" => DiskVerb::Disconnect,
        "invalidate" => DiskVerb::Invalidate,
        "verify" => DiskVerb::Verify,
        "create-md" => DiskVerb::CreateMd { force: false },
        "role" => DiskVerb::Role,
        other => return Err(ShellError::Usage(format!("unknown disk command `{other}`"))),
    };
    let mut target = None;
    let mut wait_s = None;
    while let Some(word) = words.next() {
        match (word, &mut verb) {
            ("--force" | "--do-what-I-say", DiskVerb::Primary { force }) => *force = true,
            ("--force", DiskVerb::CreateMd { force }) => *force = true,
            ("--discard-my-data", DiskVerb::Connect { discard_my_data }) => *discard_my_data = true,
            ("--wait", DiskVerb::Primary { .. } | DiskVerb::Secondary) => {
                let v = words
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| ShellError::Usage("--wait needs seconds".into()))?;
                wait_s = Some(v);
            }
            (w, _) if target.is_none() && !w.starts_with('-') => {
                target = Some(DiskTarget::parse(w)?)
            }
            (w, _) => {
                return Err(ShellError::Usage(format!(
                    "disk {verb_word}: unexpected argument `{w}`"
                )))
            }
        }
    }
    let target = match (target, &verb) {
        (Some(t), _) => t,
        (None, DiskVerb::Status) => DiskTarget::All,
        (None, _) => {
            return Err(ShellError::Usage(format!(
                "disk {verb_word} needs a resource name or `all`"
            )))
        }
    };
    Ok(DiskCommand {
        verb,
        target,
        wait_s,
    })
}

/// The parsed command line, defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Args {
    /// Where ha.cf, authkeys and haresources are.
    pub config_dir: PathBuf,
    /// This node's name (`uname -n` unless given).
    pub node: Option<String>,
    /// Where the control socket lives.
    pub run_dir: PathBuf,
    /// Where the boot epoch lives.
    pub state_dir: PathBuf,
    /// The command.
    pub command: Command,
}

/// The text of `bascule help`.
pub const USAGE: &str = "\
usage: bascule [--config-dir DIR] [--node NAME] [--run-dir DIR] [--state-dir DIR] COMMAND

commands:
  run            run the daemon in the foreground (stop with SIGTERM or SIGINT)
  check-config   validate ha.cf, authkeys, haresources; print the effective settings
  status [--json]  ask the running daemon for the peer, link and group states
  standby [all|local|foreign]   stop the groups here and hand them to the peer
  takeover [all|local|foreign]  ask for the groups (and end a standby); default all
  disk status [RES|all]         the replicated disks, like /proc/drbd
  disk primary [--force] RES|all    promote (--force: this node's data wins, full sync)
  disk secondary RES|all        demote (refused while the device is mounted)
  disk connect [--discard-my-data] RES|all   reconnect (after a split brain: resync from the peer)
  disk disconnect|invalidate|verify RES|all
  disk create-md RES|all [--force]   offline: write fresh metadata, print the usable size
  version        print the version
  help           print this text

defaults: --config-dir /etc/bascule, --node `uname -n`, --run-dir /run/bascule,
          --state-dir /var/lib/bascule
";

/// Parses the arguments after the program name.
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Args, ShellError> {
    let mut parsed = Args {
        config_dir: PathBuf::from(CONFIG_DIR_DEFAULT),
        node: None,
        run_dir: PathBuf::from(RUN_DIR_DEFAULT),
        state_dir: PathBuf::from(STATE_DIR_DEFAULT),
        command: Command::Help,
    };
    let mut command: Option<Command> = None;
    let mut which_given = false;
    let mut iter = args.into_iter();
    while let Some(arg) = iter.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, ShellError> {
            match inline.clone().or_else(|| iter.next()) {
                Some(v) if !v.is_empty() => Ok(v),
                _ => Err(ShellError::Usage(format!("{name} needs a value"))),
            }
        };
        match (flag.as_str(), &command) {
            ("--config-dir", None) => parsed.config_dir = PathBuf::from(value("--config-dir")?),
            ("--node", None) => parsed.node = Some(value("--node")?),
            ("--run-dir", None) => parsed.run_dir = PathBuf::from(value("--run-dir")?),
            ("--state-dir", None) => parsed.state_dir = PathBuf::from(value("--state-dir")?),
            ("--json", Some(Command::Status { .. })) => {
                command = Some(Command::Status { json: true })
            }
            ("-h" | "--help", _) => command = Some(Command::Help),
            ("--version", None) => command = Some(Command::Version),
            ("disk", None) => {
                let rest: Vec<String> = iter.by_ref().collect();
                command = Some(Command::Disk(parse_disk(rest.iter().map(String::as_str))?));
            }
            (word, None) if !word.starts_with('-') => command = Some(parse_command(word)?),
            (word, Some(Command::Operator(c))) if !which_given && !word.starts_with('-') => {
                let which = super::control::parse_which(word).ok_or_else(|| {
                    ShellError::Usage(format!("`{word}`: expected all, local or foreign"))
                })?;
                which_given = true;
                command = Some(Command::Operator(match c {
                    TakeoverCommand::Standby(_) => TakeoverCommand::Standby(which),
                    TakeoverCommand::Takeover(_) => TakeoverCommand::Takeover(which),
                }));
            }
            (word, _) => return Err(ShellError::Usage(format!("unexpected argument `{word}`"))),
        }
    }
    parsed.command = command.ok_or_else(|| ShellError::Usage("missing command".into()))?;
    Ok(parsed)
}

fn parse_command(word: &str) -> Result<Command, ShellError> {
    match word {
        "run" => Ok(Command::Run),
        "check-config" => Ok(Command::CheckConfig),
        "status" => Ok(Command::Status { json: false }),
        "standby" => Ok(Command::Operator(TakeoverCommand::Standby(Which::All))),
        "takeover" => Ok(Command::Operator(TakeoverCommand::Takeover(Which::All))),
        "version" => Ok(Command::Version),
        "help" => Ok(Command::Help),
        other => Err(ShellError::Usage(format!("unknown command `{other}`"))),
    }
}

/// This host's node name, as `uname -n` prints it.
pub fn default_node_name() -> Result<String, ShellError> {
    let name = nix::unistd::gethostname()
        .map_err(|e| ShellError::io("gethostname", io::Error::from_raw_os_error(e as i32)))?;
    name.into_string()
        .map_err(|_| ShellError::Config("host name is not UTF-8; pass --node NAME".into()))
}

/// Entry point; returns the process exit code.
pub fn main() -> i32 {
    match parse_args(std::env::args().skip(1)).and_then(dispatch) {
        Ok(()) => 0,
        Err(error @ (ShellError::Config(_) | ShellError::Auth(_))) => {
            // Already `path[:line]: message`, as compilers print it.
            eprintln!("{error}");
            error.exit_code()
        }
        Err(error) => {
            eprintln!("bascule: {error}");
            error.exit_code()
        }
    }
}

fn dispatch(args: Args) -> Result<(), ShellError> {
    match args.command {
        Command::Help => {
            print!("{USAGE}");
            Ok(())
        }
        Command::Version => {
            println!("bascule {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::CheckConfig => {
            let node = node_name(&args)?;
            print!(
                "{}",
                super::config_load::check_config(&args.config_dir, &node)?
            );
            Ok(())
        }
        Command::Status { json } => {
            print!("{}", super::control::client_status(&args.run_dir, json)?);
            Ok(())
        }
        Command::Operator(command) => {
            let line = super::control::command_line(command);
            print!("{}", super::control::client_request(&args.run_dir, &line)?);
            Ok(())
        }
        Command::Disk(ref disk) => {
            let node = node_name(&args)?;
            super::replication_io::client(&args, &node, disk)
        }
        Command::Run => {
            let node = node_name(&args)?;
            super::event_loop::run(&args, &node)
        }
    }
}

fn node_name(args: &Args) -> Result<String, ShellError> {
    match &args.node {
        Some(n) => Ok(n.clone()),
        None => default_node_name(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(words: &[&str]) -> Result<Args, ShellError> {
        parse_args(words.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parse_defaults_filled_in() {
        let a = parse(&["run"]).unwrap();
        assert_eq!(a.command, Command::Run);
        assert_eq!(a.config_dir, PathBuf::from(CONFIG_DIR_DEFAULT));
        assert_eq!(a.run_dir, PathBuf::from(RUN_DIR_DEFAULT));
        assert_eq!(a.state_dir, PathBuf::from(STATE_DIR_DEFAULT));
        assert_eq!(a.node, None);
    }

    #[test]
    fn parse_every_option_both_forms() {
        let a = parse(&[
            "--config-dir",
            "/c",
            "--node=debian2",
            "--run-dir=/r",
            "--state-dir",
            "/s",
            "status",
            "--json",
        ])
        .unwrap();
        assert_eq!(a.config_dir, PathBuf::from("/c"));
        assert_eq!(a.node.as_deref(), Some("debian2"));
        assert_eq!(a.run_dir, PathBuf::from("/r"));
        assert_eq!(a.state_dir, PathBuf::from("/s"));
        assert_eq!(a.command, Command::Status { json: true });
    }

    #[test]
    fn parse_operator_commands_default_all() {
        let c = |w: &[&str]| parse(w).unwrap().command;
        assert_eq!(
            c(&["standby"]),
            Command::Operator(TakeoverCommand::Standby(Which::All))
        );
        assert_eq!(
            c(&["standby", "foreign"]),
            Command::Operator(TakeoverCommand::Standby(Which::Foreign))
        );
        assert_eq!(
            c(&["takeover", "local"]),
            Command::Operator(TakeoverCommand::Takeover(Which::Local))
        );
        for bad in [&["standby", "some"][..], &["takeover", "all", "local"]] {
            assert_eq!(parse(bad).unwrap_err().exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn parse_bad_input_is_usage_error() {
        for bad in [
            &[][..],
            &["frobnicate"],
            &["--node"],
            &["run", "extra"],
            &["--json", "status"],
            &["--bogus", "run"],
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}: {e}");
        }
    }

    #[test]
    fn parse_disk_commands() {
        let d = |w: &[&str]| match parse(w).unwrap().command {
            Command::Disk(d) => d,
            other => panic!("{other:?}"),
        };
        let one = |n: &str| DiskTarget::One(n.into());
        assert_eq!(d(&["disk", "status"]).target, DiskTarget::All);
        let p = d(&["disk", "primary", "--force", "repl"]);
        assert_eq!(p.verb, DiskVerb::Primary { force: true });
        assert_eq!(p.target, one("repl"));
        assert_eq!(p.request_line(), "disk primary --force repl");
        let p = d(&["disk", "primary", "all", "--do-what-I-say"]);
        assert_eq!(p.verb, DiskVerb::Primary { force: true });
        assert_eq!(p.target, DiskTarget::All);
        let c = d(&["disk", "connect", "--discard-my-data", "r0"]);
        assert_eq!(c.request_line(), "disk connect --discard-my-data r0");
        let m = d(&["disk", "create-md", "repl", "--force"]);
        assert_eq!(m.verb, DiskVerb::CreateMd { force: true });
        let w = d(&["disk", "secondary", "--wait", "30", "repl"]);
        assert_eq!(
            (w.wait_s, w.request_line()),
            (Some(30), "disk secondary repl".into())
        );
        assert_eq!(
            d(&["disk", "verify", "repl"]).request_line(),
            "disk verify repl"
        );
        for bad in [
            &["disk"][..],
            &["disk", "primary"],
            &["disk", "frob", "repl"],
            &["disk", "secondary", "--force", "repl"],
            &["disk", "primary", "a", "b"],
            &["disk", "primary", "--wait", "x", "repl"],
            &["disk", "status", "re/pl"],
        ] {
            assert_eq!(parse(bad).unwrap_err().exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn exit_codes_are_distinct() {
        let io = || io::Error::from_raw_os_error(libc::EIO);
        let all = [
            ShellError::Internal(String::new()),
            ShellError::Usage(String::new()),
            ShellError::Config(String::new()),
            ShellError::Auth(String::new()),
            ShellError::io("x", io()),
            ShellError::Serial {
                device: String::new(),
                error: String::new(),
            },
            ShellError::Eth {
                link: String::new(),
                error: io(),
            },
            ShellError::NotRunning(String::new()),
            ShellError::AlreadyRunning(String::new()),
            ShellError::Refused(String::new()),
        ];
        let mut codes: Vec<i32> = all.iter().map(ShellError::exit_code).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
    }
}
