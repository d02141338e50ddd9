//! Logging: the catalogue lines (`log_event`) and the log backend.
//!
//! Layer: shell. [`log_event`], [`log_takeover_event`], [`log_agent_event`] and
//! [`log_disk_line`] are the only functions that log at `info` or above, so every operator-visible
//! line comes from a catalogued `render` (`core::Event`, `TakeoverEvent`,
//! `AgentEvent`: the README catalogue). The backend formats `2026-11-28T01:02:03.456Z LEVEL target: message`
//! into a fixed buffer and hands it to a logger thread over a bounded channel with
//! `try_send`: the event loop never waits on a slow disk or syslog. When the
//! channel is full the line is dropped and counted; the loop reports the count as
//! `log_dropped`. The logger thread writes stderr, the ha.cf `logfile`, the
//! `debugfile` (debug level too) and syslog (RFC 3164 to /dev/log) when
//! `logfacility` is not `none`.

use core::fmt::{self, Write as _};
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;

use log::{Level, LevelFilter, Log, Metadata, Record};

use super::agents::AgentEvent;
use super::cli::ShellError;
use super::replication_io::DiskLine;
use crate::config::{hacf::LogFacility, ConfigWarning};
use crate::core::takeover::TakeoverEvent;
use crate::core::{Event, Names};
use crate::wire::AdvertState;

/// Longest log line kept, bytes; longer lines are truncated (catalogue lines are < 200).
pub const LINE_MAX: usize = 384;
/// Lines queued for the logger thread; a burst beyond this is dropped and counted
/// (a full second of events at the worst plausible rate is far less).
pub const QUEUE_LEN: usize = 256;
/// Stack of the logger thread, bytes: small, because `mlockall` makes stacks resident.
pub const LOGGER_STACK_BYTES: usize = 128 * 1024;
/// Where syslog listens.
pub const SYSLOG_PATH: &str = "/dev/log";

/// A line with fixed capacity, so formatting never allocates.
pub type Line = heapless::String<LINE_MAX>;

/// Writes into a [`Line`], silently truncating (a log line must never fail).
pub struct Truncating<'a>(pub &'a mut Line);

impl fmt::Write for Truncating<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if self.0.push(c).is_err() {
                break;
            }
        }
        Ok(())
    }
}

/// Logs one catalogue event at its level, target `bascule`. The only info+ path.
pub fn log_event(names: &Names, event: &Event) {
    let level = event.level();
    if !log::log_enabled!(target: "bascule", level) {
        return;
    }
    let mut line = Line::new();
    let _ = event.render(names, &mut Truncating(&mut line));
    log::log!(target: "bascule", level, "{}", line.as_str());
}

/// Renders a config warning as a catalogue line.
pub fn render_config_warning(w: &ConfigWarning, out: &mut impl fmt::Write) -> fmt::Result {
    write!(
        out,
        "config_warning file={} line={} message=\"",
        w.file.file_name(),
        w.line
    )?;
    for c in w.message.chars() {
        match c {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            '\n' => out.write_char(' ')?,
            c => out.write_char(c)?,
        }
    }
    out.write_char('"')
}

/// Logs a config warning once at start-up: `config_warning file=ha.cf line=12 message="..."`.
pub fn log_config_warning(w: &ConfigWarning) {
    let mut line = Line::new();
    let _ = render_config_warning(w, &mut Truncating(&mut line));
    log::warn!(target: "bascule", "{}", line.as_str());
}

/// The level of a takeover event: a group that failed to start or cannot be
/// stopped, a failed fence and an escalation need the operator.
pub fn takeover_level(event: &TakeoverEvent) -> Level {
    match event {
        TakeoverEvent::GroupState {
            to: AdvertState::Blocked,
            ..
        }
        | TakeoverEvent::Escalate { .. }
        | TakeoverEvent::FenceDone { ok: false } => Level::Error,
        TakeoverEvent::GroupState {
            to: AdvertState::Failed,
            ..
        }
        | TakeoverEvent::FenceStart => Level::Warn,
        TakeoverEvent::GroupState { .. } | TakeoverEvent::FenceDone { ok: true } => Level::Info,
        // The agent's own `takeover_step` line (resource text, command, stderr) is
        // the catalogue line; the machine's record of it is for debugging.
        TakeoverEvent::Step { .. } => Level::Debug,
    }
}

/// Logs one takeover event (the catalogue's `group_state`, `fence_start`,
/// `fence`, `escalate`; `takeover_step` at debug).
pub fn log_takeover_event(event: &TakeoverEvent) {
    let level = takeover_level(event);
    if !log::log_enabled!(target: "bascule", level) {
        return;
    }
    let mut line = Line::new();
    let _ = event.render(&mut Truncating(&mut line));
    log::log!(target: "bascule", level, "{}", line.as_str());
}

/// Logs one resource agent event (`takeover_step`, `resource_already_active`,
/// `garp_failed`).
pub fn log_agent_event(event: &AgentEvent) {
    let level = event.level();
    if !log::log_enabled!(target: "bascule", level) {
        return;
    }
    let mut line = Line::new();
    let _ = event.render(&mut Truncating(&mut line));
    log::log!(target: "bascule", level, "{}", line.as_str());
}

/// Logs one replicated-disk line (`disk_role`, `disk_cstate`, ... `disk_error`).
pub fn log_disk_line(line: &DiskLine) {
    let level = line.level();
    if !log::log_enabled!(target: "bascule", level) {
        return;
    }
    let mut text = Line::new();
    let _ = line.render(&mut Truncating(&mut text));
    log::log!(target: "bascule", level, "{}", text.as_str());
}

/// Lines dropped because the queue was full, since the last call (the loop reports them).
pub fn take_dropped() -> u64 {
    DROPPED.swap(0, Ordering::Relaxed)
}

static DROPPED: AtomicU64 = AtomicU64::new(0);

/// What the backend needs from ha.cf and the environment.
#[derive(Clone, Debug)]
pub struct LogSettings {
    /// Threshold for stderr, logfile and syslog.
    pub level: LevelFilter,
    /// Write to stderr (foreground).
    pub stderr: bool,
    /// ha.cf `logfile`.
    pub logfile: Option<String>,
    /// ha.cf `debugfile` (gets debug lines too).
    pub debugfile: Option<String>,
    /// ha.cf `logfacility`.
    pub facility: LogFacility,
    /// The syslog socket ([`SYSLOG_PATH`]; tests use their own).
    pub syslog_path: std::path::PathBuf,
}

/// `RUST_LOG`-style level: the most verbose level word found (default info).
pub fn level_from_env(value: Option<&str>) -> LevelFilter {
    let Some(v) = value else {
        return LevelFilter::Info;
    };
    let v = v.to_ascii_lowercase();
    for (word, level) in [
        ("trace", LevelFilter::Trace),
        ("debug", LevelFilter::Debug),
        ("info", LevelFilter::Info),
    ] {
        if v.contains(word) {
            return level;
        }
    }
    for (word, level) in [
        ("warn", LevelFilter::Warn),
        ("error", LevelFilter::Error),
        ("off", LevelFilter::Off),
    ] {
        if v.contains(word) {
            return level;
        }
    }
    LevelFilter::Info
}

struct Message {
    wall_ms: u64,
    level: Level,
    /// `target: message`; `split` is where the message starts.
    text: Line,
    split: usize,
}

// Lines travel by value in the channel's preallocated slots: no allocation per line.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Line(Message),
    Stop,
}

struct Backend {
    tx: SyncSender<Msg>,
    level: LevelFilter,
    max: LevelFilter,
}

impl Log for Backend {
    fn enabled(&self, meta: &Metadata) -> bool {
        let ours = meta.target().starts_with("bascule");
        meta.level() <= self.max && (ours || meta.level() <= Level::Warn)
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut text = Line::new();
        let _ = write!(Truncating(&mut text), "{}: ", record.target());
        let split = text.len();
        let _ = write!(Truncating(&mut text), "{}", record.args());
        let wall_ms = wall_clock_ms();
        match self.tx.try_send(Msg::Line(Message {
            wall_ms,
            level: record.level(),
            text,
            split,
        })) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
        let _ = self.level;
    }

    fn flush(&self) {}
}

/// Stops the logger thread after it wrote every queued line.
pub struct LoggerHandle {
    tx: SyncSender<Msg>,
    thread: Option<JoinHandle<()>>,
}

impl LoggerHandle {
    /// Flushes and joins the logger thread (at shutdown).
    pub fn finish(mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Installs the backend and starts the logger thread. Opens the log files first
/// so a missing directory is a start-up error, not a silent loss.
pub fn init(settings: LogSettings) -> Result<LoggerHandle, ShellError> {
    let open = |path: &str| {
        OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| ShellError::io(format!("log file {path}"), e))
    };
    let logfile = settings.logfile.as_deref().map(open).transpose()?;
    let debugfile = settings.debugfile.as_deref().map(open).transpose()?;
    let max = if debugfile.is_some() {
        settings.level.max(LevelFilter::Debug)
    } else {
        settings.level
    };
    let (tx, rx) = sync_channel(QUEUE_LEN);
    let sinks = Sinks::new(&settings, logfile, debugfile);
    let thread = std::thread::Builder::new()
        .name("bascule-log".into())
        .stack_size(LOGGER_STACK_BYTES)
        .spawn(move || logger_thread(rx, sinks))
        .map_err(|e| ShellError::io("spawn logger thread", e))?;
    let backend = Backend {
        tx: tx.clone(),
        level: settings.level,
        max,
    };
    log::set_boxed_logger(Box::new(backend))
        .map_err(|_| ShellError::Internal("logger installed twice".into()))?;
    log::set_max_level(max);
    Ok(LoggerHandle {
        tx,
        thread: Some(thread),
    })
}

struct Sinks {
    level: LevelFilter,
    stderr: bool,
    logfile: Option<File>,
    debugfile: Option<File>,
    facility: LogFacility,
    syslog: Option<UnixDatagram>,
    syslog_path: std::path::PathBuf,
    syslog_reported: bool,
    pid: u32,
    buf: Vec<u8>,
}

impl Sinks {
    fn new(s: &LogSettings, logfile: Option<File>, debugfile: Option<File>) -> Sinks {
        let syslog = match s.facility {
            LogFacility::None => None,
            LogFacility::Facility(_) => UnixDatagram::unbound().ok(),
        };
        Sinks {
            level: s.level,
            stderr: s.stderr,
            logfile,
            debugfile,
            facility: s.facility,
            syslog,
            syslog_path: s.syslog_path.clone(),
            syslog_reported: false,
            pid: std::process::id(),
            buf: Vec::with_capacity(LINE_MAX + 64),
        }
    }

    fn write(&mut self, m: &Message) {
        self.buf.clear();
        let _ = write_prefix(&mut self.buf, m.wall_ms, m.level);
        self.buf.extend_from_slice(m.text.as_bytes());
        self.buf.push(b'\n');
        if let Some(f) = self.debugfile.as_mut() {
            let _ = f.write_all(&self.buf);
        }
        if m.level > self.level {
            return;
        }
        if self.stderr {
            let _ = std::io::stderr().write_all(&self.buf);
        }
        if let Some(f) = self.logfile.as_mut() {
            let _ = f.write_all(&self.buf);
        }
        self.write_syslog(m);
    }

    fn write_syslog(&mut self, m: &Message) {
        let (LogFacility::Facility(code), Some(sock)) = (self.facility, self.syslog.as_ref())
        else {
            return;
        };
        self.buf.clear();
        let _ = write_syslog_header(&mut self.buf, code, m.level, m.wall_ms, self.pid);
        self.buf.extend_from_slice(m.text[m.split..].as_bytes());
        if let Err(e) = sock.send_to(&self.buf, &self.syslog_path) {
            if !self.syslog_reported {
                self.syslog_reported = true;
                let path = self.syslog_path.display();
                let _ = writeln!(
                    std::io::stderr(),
                    "bascule: syslog {path}: {e} (will keep trying, silently)"
                );
            }
        }
    }
}

fn logger_thread(rx: Receiver<Msg>, mut sinks: Sinks) {
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Line(m) => sinks.write(&m),
            Msg::Stop => break,
        }
    }
    // Lines that raced with Stop.
    while let Ok(Msg::Line(m)) = rx.try_recv() {
        sinks.write(&m);
    }
}

/// Milliseconds since the Unix epoch (wall clock: log timestamps only).
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Days since 1970-01-01 -> (year, month, day) (Howard Hinnant's civil_from_days).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `2026-11-28T01:02:03.456Z LEVEL ` (UTC).
pub fn write_prefix(
    out: &mut impl std::io::Write,
    wall_ms: u64,
    level: Level,
) -> std::io::Result<()> {
    let secs = (wall_ms / 1000) as i64;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    write!(
        out,
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z {:<5} ",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60,
        wall_ms % 1000,
        level
    )
}

/// Syslog severity for a log level (RFC 5424 numbers).
pub const fn syslog_severity(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// `<PRI>Mmm dd hh:mm:ss bascule[pid]: ` with the local time (RFC 3164).
pub fn write_syslog_header(
    out: &mut impl std::io::Write,
    facility: u8,
    level: Level,
    wall_ms: u64,
    pid: u32,
) -> std::io::Result<()> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t: libc::time_t = (wall_ms / 1000) as libc::time_t;
    // SAFETY: localtime_r writes only into `tm`, which we own.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe { libc::localtime_r(&t, &mut tm) };
    let pri = u16::from(facility) * 8 + u16::from(syslog_severity(level));
    write!(
        out,
        "<{pri}>{} {:>2} {:02}:{:02}:{:02} bascule[{pid}]: ",
        MONTHS[tm.tm_mon.clamp(0, 11) as usize],
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FileKind;

    #[test]
    fn prefix_is_utc_with_millis() {
        let mut out = Vec::new();
        // 2026-11-28T01:02:03.456Z
        write_prefix(&mut out, 1_795_827_723_456, Level::Warn).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-11-28T01:02:03.456Z WARN  "
        );
        let mut out = Vec::new();
        write_prefix(&mut out, 0, Level::Info).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1970-01-01T00:00:00.000Z INFO  "
        );
    }

    #[test]
    fn syslog_header_has_pri_and_pid() {
        let mut out = Vec::new();
        write_syslog_header(&mut out, 16, Level::Error, 0, 42).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("<131>"), "{s}");
        assert!(s.ends_with(" bascule[42]: "), "{s}");
    }

    #[test]
    fn config_warning_line_escapes_quotes() {
        let w = ConfigWarning {
            file: FileKind::HaCf,
            line: 12,
            message: "say \"x\"".into(),
        };
        let mut s = String::new();
        render_config_warning(&w, &mut s).unwrap();
        assert_eq!(
            s,
            "config_warning file=ha.cf line=12 message=\"say \\\"x\\\"\""
        );
    }

    fn message(level: Level, target: &str, text: &str) -> Message {
        let mut line = Line::new();
        let _ = write!(Truncating(&mut line), "{target}: {text}");
        Message {
            wall_ms: 0,
            level,
            text: line,
            split: target.len() + 2,
        }
    }

    #[test]
    fn sinks_write_logfile_debugfile_and_syslog_by_level() {
        let dir = std::env::temp_dir().join(format!("bascule-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let syslog = UnixDatagram::bind(dir.join("log")).unwrap();
        syslog.set_nonblocking(true).unwrap();
        let settings = LogSettings {
            level: LevelFilter::Info,
            stderr: false,
            logfile: None,
            debugfile: None,
            facility: LogFacility::Facility(16),
            syslog_path: dir.join("log"),
        };
        let file = |name: &str| File::create(dir.join(name)).unwrap();
        let mut sinks = Sinks::new(&settings, Some(file("ha.log")), Some(file("debug.log")));
        sinks.write(&message(
            Level::Info,
            "bascule",
            "peer_state peer=b from=Alive to=Dead",
        ));
        sinks.write(&message(Level::Debug, "bascule::shell::udp", "detail"));
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
        assert_eq!(read("ha.log").lines().count(), 1);
        assert!(read("ha.log").ends_with("Z INFO  bascule: peer_state peer=b from=Alive to=Dead\n"));
        assert_eq!(read("debug.log").lines().count(), 2);
        let mut buf = [0u8; 512];
        let n = syslog.recv(&mut buf).unwrap();
        let datagram = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(datagram.starts_with("<134>"), "{datagram}");
        assert!(
            datagram.ends_with("]: peer_state peer=b from=Alive to=Dead"),
            "{datagram}"
        );
        assert!(
            syslog.recv(&mut buf).is_err(),
            "debug lines never go to syslog at level info"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn truncating_writer_never_fails() {
        let mut line = Line::new();
        let long = "x".repeat(LINE_MAX * 2);
        write!(Truncating(&mut line), "{long}").unwrap();
        assert_eq!(line.len(), LINE_MAX);
    }

    #[test]
    fn level_from_env_picks_most_verbose() {
        assert_eq!(level_from_env(None), LevelFilter::Info);
        assert_eq!(level_from_env(Some("debug")), LevelFilter::Debug);
        assert_eq!(level_from_env(Some("bascule=trace")), LevelFilter::Trace);
        assert_eq!(level_from_env(Some("warn")), LevelFilter::Warn);
    }
}
