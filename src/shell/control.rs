//! The control socket: `<run-dir>/bascule.sock`, and the `status` client.
//!
//! Layer: shell. Protocol: the client writes one line, `status`, `status json`,
//! `standby all|local|foreign`, `takeover all|local|foreign` or
//! `disk VERB [--flag] RES|all` (see `cli::DiskCommand::request_line`);
//! the daemon writes the answer and closes. Connections are non-blocking in the
//! loop, at most [`CONN_MAX`] at once, requests at most [`REQUEST_MAX`] bytes.
//! Rendering works on a plain [`StatusSnapshot`], so it is tested without a daemon.

use std::fmt::Write as _;
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration as StdDuration;

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

use super::cli::{DiskCommand, ShellError};
use crate::core::takeover::{Command, Which};
use crate::wire::FrameError;

/// Socket file name inside the run dir.
pub const SOCKET_NAME: &str = "bascule.sock";
/// Simultaneous control connections; beyond this the oldest is closed (status is rare).
pub const CONN_MAX: usize = 8;
/// Longest request line, bytes (`disk connect --discard-my-data NAME` with a
/// long resource name fits).
pub const REQUEST_MAX: usize = 256;
/// Initial capacity of a status answer, bytes (one link is about 400 bytes of JSON).
pub const ANSWER_CAPACITY: usize = 4096;
/// How long the `status` client waits for the daemon's answer.
pub const CLIENT_TIMEOUT_MS: u64 = 5000;

/// A request from a control client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Text status.
    Status,
    /// JSON status.
    StatusJson,
    /// `standby|takeover all|local|foreign`.
    Command(Command),
    /// `disk VERB RES|all`.
    Disk(DiskCommand),
    /// Anything else (answered with an error line).
    Unknown,
}

/// One link's state, as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkStatus {
    /// `eth1`, `ttyS0`...
    pub name: String,
    /// `Up` or `Down`.
    pub state: String,
    /// Age of the last valid frame, ms; None if never.
    pub last_rx_age_ms: Option<u64>,
    /// Valid frames accepted.
    pub rx_ok: u64,
    /// Largest gap between valid frames, ms.
    pub gap_max_ms: u64,
    /// Last round trip, ms.
    pub rtt_ms: Option<u64>,
    /// Frames refused, indexed like `FrameError::ALL`.
    pub rejected: [u64; FrameError::ALL.len()],
}

/// One resource of a group, as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceStatus {
    /// As written in haresources.
    pub text: String,
    /// `running`, `stopped`, `failed` or `unknown` (no op ran yet).
    pub state: String,
}

/// One haresources group, as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupStatus {
    /// Stable name: the group's first resource as written.
    pub name: String,
    /// The node running (or starting) it, or `none`.
    pub owner: String,
    /// This node's state for it (`Stopped`, `Starting`, `Running`...).
    pub state: String,
    /// Its resources, in start order.
    pub resources: Vec<ResourceStatus>,
}

/// A resync in progress, as `/proc/drbd` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncProgress {
    /// KiB to sync when it started.
    pub total_kib: u64,
    /// KiB still to sync.
    pub left_kib: u64,
    /// Current speed, KiB/s.
    pub speed_kib_s: u64,
}

/// One replicated disk (drbd.conf resource), as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskStatus {
    /// The resource name (`repl`).
    pub name: String,
    /// The minor number (`/dev/drbd0` -> 0), as /proc/drbd numbers lines.
    pub minor: u32,
    /// The device path from drbd.conf.
    pub device: String,
    /// `A`, `B` or `C`.
    pub protocol: String,
    /// DRBD's state names.
    pub role: String,
    pub peer_role: String,
    pub cstate: String,
    pub dstate: String,
    pub peer_dstate: String,
    /// /proc/drbd counters, KiB: network sent/received, disk written/read.
    pub ns_kib: u64,
    pub nr_kib: u64,
    pub dw_kib: u64,
    pub dr_kib: u64,
    /// Application requests not yet completed.
    pub ap_pending: u64,
    /// KiB marked out of sync in the bitmap.
    pub out_of_sync_kib: u64,
    /// Set while a resync runs.
    pub sync: Option<SyncProgress>,
    /// Bytes the replication connection wrote and read since start, framing
    /// and handshakes included (what a resync really cost on the wire).
    pub wire_sent_bytes: u64,
    pub wire_received_bytes: u64,
    /// The block device is present at `device` (Primary only).
    pub exposed: bool,
    /// Why the resource is not running (metadata missing, disk unusable).
    pub error: Option<String>,
}

/// Everything `status` shows, copied out of the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusSnapshot {
    /// This node.
    pub node: String,
    /// Our boot generation.
    pub boot_epoch: u32,
    /// Time since start, ms.
    pub uptime_ms: u64,
    /// The peer's name.
    pub peer: String,
    /// `Waiting`, `Alive`, `Late`, `Dead`.
    pub peer_state: String,
    /// The peer's boot generation, once seen.
    pub peer_epoch: Option<u32>,
    /// Whether the peer's config digest matches ours (None: not seen yet).
    pub config_match: Option<bool>,
    /// Every link in ha.cf order.
    pub links: Vec<LinkStatus>,
    /// Every haresources group in file order.
    pub groups: Vec<GroupStatus>,
    /// Every drbd.conf resource of this node, in file order.
    pub disks: Vec<DiskStatus>,
    /// Heap allocations since start, read before this answer was built.
    pub allocations: u64,
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// The text answer, in the spirit of `cl_status` and `/proc/drbd`.
pub fn render_text(s: &StatusSnapshot) -> String {
    let mut out = String::with_capacity(ANSWER_CAPACITY);
    let config = match s.config_match {
        Some(true) => "match",
        Some(false) => "MISMATCH",
        None => "unknown",
    };
    let _ = writeln!(
        out,
        "node: {}  boot_epoch: {}  uptime_ms: {}",
        s.node, s.boot_epoch, s.uptime_ms
    );
    let _ = writeln!(
        out,
        "peer: {}  state: {}  epoch: {}  config: {}",
        s.peer,
        s.peer_state,
        opt(s.peer_epoch),
        config
    );
    for l in &s.links {
        let _ = write!(
            out,
            "link: {:<12} {:<4}  last_rx_ms: {:<6} rx_ok: {:<8} copies: {:<8} gap_max_ms: {:<6} rtt_ms: {:<4} rejected:",
            l.name,
            l.state,
            opt(l.last_rx_age_ms),
            l.rx_ok,
            l.rejected[FrameError::Repeat.index()],
            l.gap_max_ms,
            opt(l.rtt_ms)
        );
        let mut any = false;
        // Serial copies of an accepted heartbeat are expected, not rejections.
        for (e, n) in FrameError::ALL
            .iter()
            .zip(l.rejected.iter())
            .filter(|(e, n)| **n > 0 && **e != FrameError::Repeat)
        {
            let _ = write!(out, " {}={}", e.name(), n);
            any = true;
        }
        out.push_str(if any { "\n" } else { " none\n" });
    }
    for g in &s.groups {
        let _ = write!(
            out,
            "group: {:<24} owner: {:<10} state: {:<8} resources:",
            g.name, g.owner, g.state
        );
        for r in &g.resources {
            let _ = write!(out, " {}={}", r.text, r.state);
        }
        out.push('\n');
    }
    for d in &s.disks {
        render_disk(&mut out, d);
    }
    out
}

/// `1234567` -> `1,234,567` (as /proc/drbd prints the speed).
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The progress lines of a resync, DRBD 8's format:
/// `[=====>..............] sync'ed: 45.2% (56320/102400)K` then
/// `finish: 0:00:12 speed: 4,096 (K/sec)`.
pub fn render_sync(out: &mut String, p: &SyncProgress) {
    let total = p.total_kib.max(1);
    let done = p.total_kib.saturating_sub(p.left_kib);
    // Per mille, as DRBD computes it, so 45.2% prints from integers.
    let permille = (done.saturating_mul(1000) / total).min(1000);
    let x = (permille / 50) as usize;
    let bar: String = std::iter::repeat('=')
        .take(x.saturating_sub(1))
        .chain(std::iter::once('>'))
        .chain(std::iter::repeat('.').take(20 - x.min(20)))
        .collect();
    let _ = writeln!(
        out,
        "    [{bar}] sync'ed: {}.{}% ({}/{})K",
        permille / 10,
        permille % 10,
        p.left_kib,
        p.total_kib
    );
    let secs = p.left_kib.checked_div(p.speed_kib_s);
    let finish = match secs {
        Some(s) => format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60),
        None => "-:--:--".into(),
    };
    let _ = writeln!(
        out,
        "    finish: {finish} speed: {} (K/sec)",
        thousands(p.speed_kib_s)
    );
}

/// One disk in `/proc/drbd`'s shape, under a header naming the resource.
pub fn render_disk(out: &mut String, d: &DiskStatus) {
    let _ = writeln!(
        out,
        "disk: {:<12} device: {:<12} protocol: {}  exposed: {}",
        d.name,
        d.device,
        d.protocol,
        if d.exposed { "yes" } else { "no" }
    );
    if let Some(e) = &d.error {
        let _ = writeln!(out, "{:>2}: cs:Unconfigured  error: {e}", d.minor);
        return;
    }
    let _ = writeln!(
        out,
        "{:>2}: cs:{} st:{}/{} ld:{}/{}",
        d.minor, d.cstate, d.role, d.peer_role, d.dstate, d.peer_dstate
    );
    let _ = writeln!(
        out,
        "    ns:{} nr:{} dw:{} dr:{} ap:{} oos:{}",
        d.ns_kib, d.nr_kib, d.dw_kib, d.dr_kib, d.ap_pending, d.out_of_sync_kib
    );
    if let Some(p) = &d.sync {
        render_sync(out, p);
    }
}

/// Appends `s` as a JSON string literal.
pub fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json_opt(out: &mut String, v: Option<u64>) {
    match v {
        Some(v) => {
            let _ = write!(out, "{v}");
        }
        None => out.push_str("null"),
    }
}

/// The JSON answer (one object, one line).
pub fn render_json(s: &StatusSnapshot) -> String {
    // Preallocated so the number of allocations per answer does not depend on its length.
    let mut o = String::with_capacity(ANSWER_CAPACITY);
    o.push_str("{\"node\":");
    json_string(&mut o, &s.node);
    let _ = write!(
        o,
        ",\"boot_epoch\":{},\"uptime_ms\":{},\"peer\":{{\"name\":",
        s.boot_epoch, s.uptime_ms
    );
    json_string(&mut o, &s.peer);
    o.push_str(",\"state\":");
    json_string(&mut o, &s.peer_state);
    o.push_str(",\"epoch\":");
    json_opt(&mut o, s.peer_epoch.map(u64::from));
    o.push_str(",\"config_match\":");
    o.push_str(match s.config_match {
        Some(true) => "true",
        Some(false) => "false",
        None => "null",
    });
    o.push_str("},\"links\":[");
    for (i, l) in s.links.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        o.push_str("{\"name\":");
        json_string(&mut o, &l.name);
        o.push_str(",\"state\":");
        json_string(&mut o, &l.state);
        o.push_str(",\"last_rx_age_ms\":");
        json_opt(&mut o, l.last_rx_age_ms);
        let _ = write!(
            o,
            ",\"rx_ok\":{},\"copies\":{},\"gap_max_ms\":{},\"rtt_ms\":",
            l.rx_ok,
            l.rejected[FrameError::Repeat.index()],
            l.gap_max_ms
        );
        json_opt(&mut o, l.rtt_ms);
        o.push_str(",\"rejected\":{");
        let reasons = FrameError::ALL.iter().zip(l.rejected.iter());
        let reasons = reasons.filter(|(e, _)| **e != FrameError::Repeat);
        for (j, (e, n)) in reasons.enumerate() {
            let _ = write!(o, "{}\"{}\":{}", if j > 0 { "," } else { "" }, e.name(), n);
        }
        o.push_str("}}");
    }
    o.push_str("],\"groups\":[");
    for (i, g) in s.groups.iter().enumerate() {
        json_group(&mut o, i, g);
    }
    o.push_str("],\"disks\":[");
    for (i, d) in s.disks.iter().enumerate() {
        json_disk(&mut o, i, d);
    }
    let _ = writeln!(o, "],\"allocations\":{}}}", s.allocations);
    o
}

fn json_disk(o: &mut String, i: usize, d: &DiskStatus) {
    if i > 0 {
        o.push(',');
    }
    o.push_str("{\"name\":");
    json_string(o, &d.name);
    let _ = write!(o, ",\"minor\":{},\"device\":", d.minor);
    json_string(o, &d.device);
    for (key, value) in [
        ("protocol", &d.protocol),
        ("role", &d.role),
        ("peer_role", &d.peer_role),
        ("cstate", &d.cstate),
        ("dstate", &d.dstate),
        ("peer_dstate", &d.peer_dstate),
    ] {
        let _ = write!(o, ",\"{key}\":");
        json_string(o, value);
    }
    let _ = write!(
        o,
        ",\"out_of_sync_kib\":{},\"ns_kib\":{},\"nr_kib\":{},\"dw_kib\":{},\"dr_kib\":{},\"ap_pending\":{},\"exposed\":{},\"wire_sent_bytes\":{},\"wire_received_bytes\":{}",
        d.out_of_sync_kib,
        d.ns_kib,
        d.nr_kib,
        d.dw_kib,
        d.dr_kib,
        d.ap_pending,
        d.exposed,
        d.wire_sent_bytes,
        d.wire_received_bytes
    );
    o.push_str(",\"sync\":");
    match &d.sync {
        Some(p) => {
            let _ = write!(
                o,
                "{{\"total_kib\":{},\"left_kib\":{},\"speed_kib_s\":{}}}",
                p.total_kib, p.left_kib, p.speed_kib_s
            );
        }
        None => o.push_str("null"),
    }
    o.push_str(",\"error\":");
    match &d.error {
        Some(e) => json_string(o, e),
        None => o.push_str("null"),
    }
    o.push('}');
}

fn json_group(o: &mut String, i: usize, g: &GroupStatus) {
    if i > 0 {
        o.push(',');
    }
    o.push_str("{\"name\":");
    json_string(o, &g.name);
    o.push_str(",\"owner\":");
    json_string(o, &g.owner);
    o.push_str(",\"state\":");
    json_string(o, &g.state);
    o.push_str(",\"resources\":[");
    for (j, r) in g.resources.iter().enumerate() {
        o.push_str(if j > 0 { ",{\"text\":" } else { "{\"text\":" });
        json_string(o, &r.text);
        o.push_str(",\"state\":");
        json_string(o, &r.state);
        o.push('}');
    }
    o.push_str("]}");
}

/// `all`, `local` or `foreign`.
pub fn parse_which(word: &str) -> Option<Which> {
    match word {
        "all" => Some(Which::All),
        "local" => Some(Which::Local),
        "foreign" => Some(Which::Foreign),
        _ => None,
    }
}

/// The word of a [`Which`].
pub fn which_word(which: Which) -> &'static str {
    match which {
        Which::All => "all",
        Which::Local => "local",
        Which::Foreign => "foreign",
    }
}

/// The request line of an operator command (`standby all`).
pub fn command_line(command: Command) -> String {
    match command {
        Command::Standby(w) => format!("standby {}", which_word(w)),
        Command::Takeover(w) => format!("takeover {}", which_word(w)),
    }
}

/// Parses a request line (without the newline).
pub fn parse_request(line: &[u8]) -> Request {
    let Ok(text) = std::str::from_utf8(line).map(str::trim) else {
        return Request::Unknown;
    };
    match text.split_once(' ') {
        None if text == "status" => Request::Status,
        Some(("status", "json")) => Request::StatusJson,
        Some(("standby", w)) => {
            parse_which(w).map_or(Request::Unknown, |w| Request::Command(Command::Standby(w)))
        }
        Some(("takeover", w)) => {
            parse_which(w).map_or(Request::Unknown, |w| Request::Command(Command::Takeover(w)))
        }
        Some(("disk", rest)) => match super::cli::parse_disk(rest.split_whitespace()) {
            Ok(d) => Request::Disk(d),
            Err(_) => Request::Unknown,
        },
        _ => Request::Unknown,
    }
}

struct Conn {
    stream: UnixStream,
    request: [u8; REQUEST_MAX],
    request_len: usize,
    reply: Vec<u8>,
    sent: usize,
    serial: u64,
}

/// The listening socket and its connections.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    conns: [Option<Conn>; CONN_MAX],
    accepted: u64,
}

/// What a readable connection produced.
pub enum ConnOutcome {
    /// Nothing complete yet, or the connection closed.
    Pending,
    /// A complete request: answer it with [`ControlServer::reply`].
    Request(Request),
}

impl ControlServer {
    /// Creates the run dir (0755) and binds the socket; refuses if a daemon answers.
    pub fn bind(run_dir: &Path) -> Result<ControlServer, ShellError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(run_dir)
            .map_err(|e| ShellError::io(format!("run dir {}", run_dir.display()), e))?;
        let path = run_dir.join(SOCKET_NAME);
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(&path).is_ok() {
                return Err(ShellError::AlreadyRunning(format!(
                    "another bascule is running: it answers on {}",
                    path.display()
                )));
            }
            std::fs::remove_file(&path)
                .map_err(|e| ShellError::io(format!("remove stale {}", path.display()), e))?;
        }
        let listener = UnixListener::bind(&path)
            .map_err(|e| ShellError::io(format!("control socket {}", path.display()), e))?;
        Ok(ControlServer {
            listener,
            path,
            conns: Default::default(),
            accepted: 0,
        })
    }

    /// Registers the listener under `token`.
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(&mut self.listener, token, Interest::READABLE)
    }

    /// Removes the socket file (at shutdown).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }

    /// Accepts every pending connection; `token_of(slot)` names each one's token.
    pub fn on_listener_ready(&mut self, registry: &Registry, token_of: impl Fn(usize) -> Token) {
        for _ in 0..CONN_MAX * 2 {
            let mut stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::debug!("control accept: {e}");
                    return;
                }
            };
            let slot = self.free_slot(registry);
            if registry
                .register(&mut stream, token_of(slot), Interest::READABLE)
                .is_err()
            {
                continue;
            }
            self.accepted += 1;
            let serial = self.accepted;
            self.conns[slot] = Some(Conn {
                stream,
                request: [0; REQUEST_MAX],
                request_len: 0,
                reply: Vec::new(),
                sent: 0,
                serial,
            });
        }
    }

    fn free_slot(&mut self, registry: &Registry) -> usize {
        if let Some(i) = self.conns.iter().position(Option::is_none) {
            return i;
        }
        let oldest = (0..CONN_MAX)
            .min_by_key(|i| self.conns[*i].as_ref().map(|c| c.serial))
            .unwrap_or(0);
        self.close(oldest, registry);
        oldest
    }

    fn close(&mut self, slot: usize, registry: &Registry) {
        if let Some(mut c) = self.conns[slot].take() {
            let _ = registry.deregister(&mut c.stream);
        }
    }

    /// Reads from connection `slot`; returns a request once a full line arrived.
    pub fn on_conn_ready(
        &mut self,
        slot: usize,
        registry: &Registry,
        writable: bool,
    ) -> ConnOutcome {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return ConnOutcome::Pending;
        };
        if !conn.reply.is_empty() {
            if writable {
                self.flush(slot, registry);
            }
            return ConnOutcome::Pending;
        }
        loop {
            if conn.request_len == REQUEST_MAX {
                self.close(slot, registry);
                return ConnOutcome::Pending;
            }
            match conn.stream.read(&mut conn.request[conn.request_len..]) {
                Ok(0) => break,
                Ok(n) => conn.request_len += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return ConnOutcome::Pending,
                Err(_) => break,
            }
            if let Some(end) = conn.request[..conn.request_len]
                .iter()
                .position(|b| *b == b'\n')
            {
                return ConnOutcome::Request(parse_request(&conn.request[..end]));
            }
        }
        // EOF without a newline: take what came as the request.
        if conn.request_len > 0 {
            let len = conn.request_len;
            return ConnOutcome::Request(parse_request(&conn.request[..len]));
        }
        self.close(slot, registry);
        ConnOutcome::Pending
    }

    /// Queues the answer for `slot`, writes what the socket takes, closes when done.
    pub fn reply(&mut self, slot: usize, registry: &Registry, token: Token, answer: Vec<u8>) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        conn.reply = answer;
        conn.sent = 0;
        let _ = registry.reregister(&mut conn.stream, token, Interest::WRITABLE);
        self.flush(slot, registry);
    }

    fn flush(&mut self, slot: usize, registry: &Registry) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        while conn.sent < conn.reply.len() {
            match conn.stream.write(&conn.reply[conn.sent..]) {
                Ok(n) => conn.sent += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => break,
            }
        }
        self.close(slot, registry);
    }
}

impl Drop for ControlServer {
    /// The socket file is ours (bind refused to start over a live one): never leave
    /// it behind, whatever way the daemon stops.
    fn drop(&mut self) {
        self.remove();
    }
}

/// `bascule status [--json]`: asks the daemon and returns its answer.
pub fn client_status(run_dir: &Path, json: bool) -> Result<String, ShellError> {
    client_request(run_dir, if json { "status json" } else { "status" })
}

/// Sends one request line to the daemon and returns its answer.
pub fn client_request(run_dir: &Path, request: &str) -> Result<String, ShellError> {
    let path = run_dir.join(SOCKET_NAME);
    let mut stream = std::os::unix::net::UnixStream::connect(&path).map_err(|e| {
        ShellError::NotRunning(format!(
            "bascule is not running (nothing answers on {}: {})",
            path.display(),
            e
        ))
    })?;
    let timeout = Some(StdDuration::from_millis(CLIENT_TIMEOUT_MS));
    let io_err = |e| ShellError::io(format!("control socket {}", path.display()), e);
    stream.set_read_timeout(timeout).map_err(io_err)?;
    stream.set_write_timeout(timeout).map_err(io_err)?;
    let line = format!("{request}\n");
    stream.write_all(line.as_bytes()).map_err(io_err)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).map_err(io_err)?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StatusSnapshot {
        let mut rejected = [0; FrameError::ALL.len()];
        rejected[FrameError::Crc.index()] = 3;
        StatusSnapshot {
            node: "debian1".into(),
            boot_epoch: 7,
            uptime_ms: 1234,
            peer: "deb\"ian2".into(),
            peer_state: "Alive".into(),
            peer_epoch: Some(3),
            config_match: Some(true),
            links: vec![
                LinkStatus {
                    name: "eth1".into(),
                    state: "Up".into(),
                    last_rx_age_ms: Some(12),
                    rx_ok: 99,
                    gap_max_ms: 2001,
                    rtt_ms: None,
                    rejected,
                },
                LinkStatus {
                    name: "ttyS0".into(),
                    state: "Down".into(),
                    last_rx_age_ms: None,
                    rx_ok: 0,
                    gap_max_ms: 0,
                    rtt_ms: None,
                    rejected: [0; FrameError::ALL.len()],
                },
            ],
            groups: vec![GroupStatus {
                name: "192.168.69.100".into(),
                owner: "debian1".into(),
                state: "Running".into(),
                resources: vec![
                    ResourceStatus {
                        text: "192.168.69.100".into(),
                        state: "running".into(),
                    },
                    ResourceStatus {
                        text: "web".into(),
                        state: "unknown".into(),
                    },
                ],
            }],
            disks: vec![sample_disk()],
            allocations: 5,
        }
    }

    fn sample_disk() -> DiskStatus {
        DiskStatus {
            name: "repl".into(),
            minor: 0,
            device: "/dev/drbd0".into(),
            protocol: "C".into(),
            role: "Primary".into(),
            peer_role: "Secondary".into(),
            cstate: "SyncSource".into(),
            dstate: "UpToDate".into(),
            peer_dstate: "Inconsistent".into(),
            ns_kib: 46080,
            nr_kib: 0,
            dw_kib: 12,
            dr_kib: 46100,
            ap_pending: 0,
            out_of_sync_kib: 56320,
            sync: Some(SyncProgress {
                total_kib: 102400,
                left_kib: 56320,
                speed_kib_s: 4096,
            }),
            exposed: true,
            wire_sent_bytes: 0,
            wire_received_bytes: 0,
            error: None,
        }
    }

    #[test]
    fn disk_text_is_proc_drbd_like_with_progress() {
        let mut t = String::new();
        render_disk(&mut t, &sample_disk());
        assert!(
            t.contains(" 0: cs:SyncSource st:Primary/Secondary ld:UpToDate/Inconsistent\n"),
            "{t}"
        );
        assert!(t.contains("ns:46080 nr:0 dw:12 dr:46100"), "{t}");
        assert!(
            t.contains("[========>...........] sync'ed: 45.0% (56320/102400)K\n"),
            "{t}"
        );
        assert!(t.contains("finish: 0:00:13 speed: 4,096 (K/sec)"), "{t}");
        let mut d = sample_disk();
        d.sync = None;
        d.error = Some("run bascule disk create-md repl".into());
        let mut t = String::new();
        render_disk(&mut t, &d);
        assert!(t.contains("error: run bascule disk create-md repl"), "{t}");
    }

    #[test]
    fn progress_bar_ends_and_thousands() {
        let mut t = String::new();
        render_sync(
            &mut t,
            &SyncProgress {
                total_kib: 1000,
                left_kib: 1000,
                speed_kib_s: 0,
            },
        );
        assert!(
            t.contains("[>....................] sync'ed: 0.0% (1000/1000)K"),
            "{t}"
        );
        assert!(t.contains("finish: -:--:--"), "{t}");
        let mut t = String::new();
        render_sync(
            &mut t,
            &SyncProgress {
                total_kib: 102400,
                left_kib: 56320,
                speed_kib_s: 0,
            },
        );
        assert!(t.contains("sync'ed: 45.0%"), "{t}");
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn json_has_every_key_and_escapes() {
        let j = render_json(&sample());
        for key in [
            "\"node\":\"debian1\"",
            "\"boot_epoch\":7",
            "\"uptime_ms\":1234",
            "\"name\":\"deb\\\"ian2\"",
            "\"state\":\"Alive\"",
            "\"epoch\":3",
            "\"last_rx_age_ms\":12",
            "\"last_rx_age_ms\":null",
            "\"rx_ok\":99",
            "\"gap_max_ms\":2001",
            "\"crc\":3",
            "\"groups\":[{\"name\":\"192.168.69.100\",\"owner\":\"debian1\",\"state\":\"Running\"",
            "\"resources\":[{\"text\":\"192.168.69.100\",\"state\":\"running\"},{\"text\":\"web\",\"state\":\"unknown\"}]}]",
            "\"disks\":[{\"name\":\"repl\",\"minor\":0,\"device\":\"/dev/drbd0\",\"protocol\":\"C\",\"role\":\"Primary\",\"peer_role\":\"Secondary\",\"cstate\":\"SyncSource\",\"dstate\":\"UpToDate\",\"peer_dstate\":\"Inconsistent\",\"out_of_sync_kib\":56320",
            "\"sync\":{\"total_kib\":102400,\"left_kib\":56320,\"speed_kib_s\":4096},\"error\":null}]",
            "\"allocations\":5}",
        ] {
            assert!(j.contains(key), "{key} missing in {j}");
        }
    }

    #[test]
    fn text_lists_every_link() {
        let t = render_text(&sample());
        assert!(t.contains("peer: deb\"ian2  state: Alive"), "{t}");
        assert!(t.contains("link: eth1"), "{t}");
        assert!(t.contains("crc=3"), "{t}");
        assert!(
            t.contains("link: ttyS0") && t.contains("rejected: none"),
            "{t}"
        );
        assert!(t.contains("group: 192.168.69.100"), "{t}");
        assert!(t.contains("owner: debian1"), "{t}");
        assert!(t.contains("192.168.69.100=running web=unknown"), "{t}");
    }

    #[test]
    fn request_parse_known_and_unknown() {
        assert_eq!(parse_request(b"status"), Request::Status);
        assert_eq!(parse_request(b"status json\r"), Request::StatusJson);
        assert_eq!(parse_request(b"reboot"), Request::Unknown);
        assert_eq!(
            parse_request(b"standby all"),
            Request::Command(Command::Standby(Which::All))
        );
        assert_eq!(
            parse_request(b"takeover foreign\r"),
            Request::Command(Command::Takeover(Which::Foreign))
        );
        assert_eq!(parse_request(b"standby some"), Request::Unknown);
        assert_eq!(parse_request(b"status xml"), Request::Unknown);
        assert_eq!(
            command_line(Command::Takeover(Which::Local)),
            "takeover local"
        );
        assert_eq!(parse_request(&[0xff]), Request::Unknown);
        let Request::Disk(d) = parse_request(b"disk primary --force repl\n") else {
            panic!("disk request")
        };
        assert_eq!(d.request_line(), "disk primary --force repl");
        assert_eq!(parse_request(b"disk frob repl"), Request::Unknown);
    }

    #[test]
    fn bind_refuses_live_socket_and_replaces_stale_one() {
        let dir = std::env::temp_dir().join(format!("bascule-ctl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = ControlServer::bind(&dir).unwrap();
        let e = ControlServer::bind(&dir)
            .err()
            .expect("a live socket must be refused");
        assert_eq!(e.exit_code(), 9, "{e}");
        drop(first);
        assert!(!dir.join(SOCKET_NAME).exists(), "removed on drop");
        // As after kill -9: the file stays, nobody answers.
        drop(std::os::unix::net::UnixListener::bind(dir.join(SOCKET_NAME)).unwrap());
        assert!(dir.join(SOCKET_NAME).exists());
        let second = ControlServer::bind(&dir).unwrap();
        drop(second);
        assert!(!dir.join(SOCKET_NAME).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn client_without_daemon_is_not_running() {
        let e = client_status(Path::new("/nonexistent/bascule-test"), false).unwrap_err();
        assert_eq!(e.exit_code(), 8);
    }
}
