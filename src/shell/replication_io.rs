//! The replicated disk's I/O: one [`ReplicationIo`] per drbd.conf resource of
//! this node, and the `bascule disk ...` commands.
//!
//! Layer: shell. At start-up (before the loop, so it may block) the backing store
//! is opened and its metadata, bitmap and activity log are read and decoded
//! ([`Store::open`], [`Store::read_md`]); a resource whose metadata was never
//! created is not started and says so (`disk_error ... run bascule disk
//! create-md RES`), the daemon runs on without it. In the loop the pure
//! [`Replica`] is pumped: host requests from the NBD server, completions from the
//! disk worker and messages from the peer go in; its actions come out (disk I/O
//! to the worker, messages to the replication connection through a bounded
//! queue, host completions to the NBD server, catalogue lines, handlers).
//!
//! Catalogue lines are rendered here ([`DiskLine`]) and logged through
//! `shell::log::log_disk_line`, so the wording is in one place.
//!
//! `create-md` is offline (`bascule disk create-md RES`): it writes fresh
//! metadata and refuses to overwrite valid metadata without `--force`.

use core::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::time::Duration as StdDuration;

use std::collections::VecDeque;
use std::sync::Arc;

use mio::{Registry, Token, Waker};

use super::agents::runner::{self, OpDone, OpId, OpRequest, Runner, SpawnError};
use super::agents::write_quoted;
use super::blockdev::{self, ExposeSpec, Exposed, Job, JobResult};
use super::cli::{Args, DiskCommand, DiskTarget, DiskVerb, ShellError};
use super::config_load::Loaded;
use super::control::{self, DiskStatus, SyncProgress};
use super::disk_worker::{DiskFiles, DiskWorker};
use super::log::log_disk_line;
use super::nbd::{self, NbdConfig, NbdServer};
use super::repl_conn::{self, ConnEvent, ReplConn, ReplConnConfig, SendError};
use crate::config::drbd::{self, ResolvedResource};
use crate::core::replication::engine::{Action, Command, Refused, ReplEvent, Replica, Status};
use crate::core::replication::md::{self, ActivityLog, Bitmap, Layout, MdError, Metadata};
use crate::core::replication::msg::PeerMsg;
use crate::core::replication::{
    ConnState, DiskId, DiskIo, DiskState, HostIo, IoResult, Payload, Role,
};
use crate::time::{Duration, Instant};

/// Where the NBD socket of resource `res` lives in the run dir.
pub fn socket_path(run_dir: &Path, res: &str) -> PathBuf {
    run_dir.join(format!("disk-{res}.sock"))
}

/// DRBD 8's external metadata slots: index N is at N x 128 MiB of the meta device.
pub const EXTERNAL_SLOT_BYTES: u64 = 128 << 20;
/// Size of the superblock read and written, bytes.
pub const SUPERBLOCK_BYTES: usize = 4096;
/// Chunk of zeroes written by `create-md` (bitmap and activity log areas).
const ZERO_CHUNK: usize = 1 << 20;
/// Between two tries of a refused `disk primary --wait` (the peer still Primary).
const WAIT_RETRY: StdDuration = StdDuration::from_millis(500);
/// Between two looks at the device while `--wait` waits for it.
const WAIT_POLL: StdDuration = StdDuration::from_millis(100);

/// Where a resource keeps its metadata (drbd.conf `meta-disk`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaDisk {
    /// At the end of the backing device.
    Internal,
    /// On another file or device; `index`: DRBD 8's 128 MiB slot, None for a
    /// whole device (`flexible-meta-disk`).
    External { path: PathBuf, index: Option<u32> },
}

/// The backing store of one resource, opened: the data file, the metadata
/// file (the same for internal metadata) and where things are.
#[derive(Debug)]
pub struct Store {
    /// The backing device or file (`disk`).
    pub data: File,
    /// The metadata device or file (`data` again for internal metadata).
    pub meta: File,
    /// Offset of the metadata area inside `meta`.
    pub meta_base: u64,
    /// Offsets inside the area and the usable size.
    pub layout: Layout,
    /// For messages: `/dev/hda5` or `/dev/hda5 (meta /dev/sdb1[0])`.
    pub describe: String,
}

/// The size of a file, or of a block device (BLKGETSIZE64).
pub fn size_of(file: &File) -> io::Result<u64> {
    let meta = file.metadata()?;
    if !meta.file_type().is_block_device() {
        return Ok(meta.len());
    }
    nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);
    let mut bytes: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which is valid.
    unsafe { blkgetsize64(std::os::fd::AsRawFd::as_raw_fd(file), &mut bytes) }
        .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
    Ok(bytes)
}

fn open_rw(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))
}

impl Store {
    /// Opens `disk` (and the external metadata) and computes the layout.
    pub fn open(disk: &Path, meta: &MetaDisk) -> Result<Store, String> {
        let data = open_rw(disk)?;
        let bytes = size_of(&data).map_err(|e| format!("size of {}: {e}", disk.display()))?;
        match meta {
            MetaDisk::Internal => {
                let layout = Layout::internal(bytes).ok_or_else(|| {
                    format!(
                        "{} is too small ({bytes} bytes) to hold data and internal metadata",
                        disk.display()
                    )
                })?;
                let meta = data
                    .try_clone()
                    .map_err(|e| format!("dup {}: {e}", disk.display()))?;
                Ok(Store {
                    data,
                    meta,
                    meta_base: layout.meta_base,
                    layout,
                    describe: disk.display().to_string(),
                })
            }
            MetaDisk::External { path, index } => {
                let meta = open_rw(path)?;
                let layout = Layout::external(bytes);
                let base = index.map_or(0, |i| u64::from(i) * EXTERNAL_SLOT_BYTES);
                let room = match index {
                    Some(_) => EXTERNAL_SLOT_BYTES,
                    None => {
                        size_of(&meta).map_err(|e| format!("size of {}: {e}", path.display()))?
                    }
                };
                if layout.meta_bytes > room {
                    return Err(format!(
                        "{} needs {} bytes of metadata, {} has {room}",
                        disk.display(),
                        layout.meta_bytes,
                        path.display()
                    ));
                }
                let slot = index.map_or(String::new(), |i| format!("[{i}]"));
                Ok(Store {
                    data,
                    meta,
                    meta_base: base,
                    layout,
                    describe: format!("{} (meta {}{slot})", disk.display(), path.display()),
                })
            }
        }
    }

    fn read_meta(&self, offset: u64, len: u64) -> Result<Vec<u8>, String> {
        let mut buf = vec![0u8; len as usize];
        self.meta
            .read_exact_at(&mut buf, self.meta_base + offset)
            .map_err(|e| format!("read metadata of {}: {e}", self.describe))?;
        Ok(buf)
    }

    fn write_meta(&self, offset: u64, bytes: &[u8]) -> Result<(), String> {
        self.meta
            .write_all_at(bytes, self.meta_base + offset)
            .map_err(|e| format!("write metadata of {}: {e}", self.describe))
    }

    /// The superblock as found: Ok, or why not.
    pub fn superblock(&self) -> Result<Result<Metadata, MdError>, String> {
        let bytes = self.read_meta(self.layout.superblock_offset, SUPERBLOCK_BYTES as u64)?;
        Ok(md::decode_superblock(&bytes))
    }

    /// Reads metadata, bitmap and activity log for the replica. After a crash
    /// as Primary (`primary_ind`), the extents of the activity log are marked out
    /// of sync: the peer may miss the last writes there.
    pub fn read_md(&self, res: &str) -> Result<(Metadata, Bitmap), String> {
        let md = match self.superblock()? {
            Ok(md) => md,
            Err(MdError::NotCreated) => {
                return Err(format!(
                    "no metadata on {}: run bascule disk create-md {res}",
                    self.describe
                ))
            }
            Err(e) => {
                return Err(format!(
                    "bad metadata on {} ({e:?}): run bascule disk create-md --force {res} (a full sync follows)",
                    self.describe
                ))
            }
        };
        if md.usable_bytes != self.layout.usable_bytes {
            return Err(format!(
                "metadata on {} records {} usable bytes, the device now gives {}: run bascule disk create-md --force {res}",
                self.describe, md.usable_bytes, self.layout.usable_bytes
            ));
        }
        let bits = self.read_meta(self.layout.bitmap_offset, self.layout.bitmap_bytes)?;
        let mut bitmap = Bitmap::decode(self.layout.usable_bytes, &bits);
        if md.flags.primary_ind {
            let al = self.read_meta(self.layout.al_offset, self.layout.al_bytes)?;
            for (offset, len) in ActivityLog::decode_extents(&al) {
                bitmap.set_range(offset, len);
            }
        }
        Ok((md, bitmap))
    }

    /// Writes fresh metadata: a new superblock (Inconsistent, just created),
    /// a clear bitmap and an empty activity log, then fsync. Returns the usable size.
    pub fn create_md(&self) -> Result<u64, String> {
        let zero = vec![0u8; ZERO_CHUNK];
        for (start, len) in [
            (self.layout.al_offset, self.layout.al_bytes),
            (self.layout.bitmap_offset, self.layout.bitmap_bytes),
        ] {
            let mut done = 0;
            while done < len {
                let n = (len - done).min(ZERO_CHUNK as u64) as usize;
                self.write_meta(start + done, &zero[..n])?;
                done += n as u64;
            }
        }
        let md = fresh_metadata(self.layout.usable_bytes);
        debug_assert!(md.check_size(&self.layout).is_ok());
        self.write_meta(self.layout.superblock_offset, &md::encode_superblock(&md))?;
        self.meta
            .sync_all()
            .map_err(|e| format!("fsync {}: {e}", self.describe))?;
        Ok(self.layout.usable_bytes)
    }
}

/// The superblock of a just-created resource: DRBD's "just created" current
/// identifier, nothing consistent (both sides start Inconsistent).
pub fn fresh_metadata(usable_bytes: u64) -> Metadata {
    Metadata::created(usable_bytes)
}

/// `bascule disk create-md RES [--force]` on one opened store; the answer line.
pub fn create_md_on(store: &Store, res: &str, force: bool) -> Result<String, ShellError> {
    let found = store.superblock().map_err(ShellError::Config)?;
    match (found, force) {
        (Err(MdError::NotCreated), _) | (_, true) => {}
        (Ok(md), false) => {
            return Err(ShellError::Refused(format!(
                "{res}: valid metadata on {} (generation {}, {} usable bytes): not overwritten; \
                 --force overwrites it and the next connection does a full sync",
                store.describe, md.generation, md.usable_bytes
            )))
        }
        (Err(e), false) => {
            return Err(ShellError::Refused(format!(
                "{res}: unreadable metadata on {} ({e:?}): not overwritten; --force overwrites it",
                store.describe
            )))
        }
    }
    let usable = store.create_md().map_err(ShellError::Config)?;
    Ok(format!(
        "{res}: metadata created on {}; usable size {} KiB ({})\n",
        store.describe,
        usable / 1024,
        human_bytes(usable)
    ))
}

/// `1073741824` -> `1.0 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `/dev/drbd0` -> 0 (the /proc/drbd line number); `fallback` without digits.
pub fn minor_of(device: &str, fallback: u32) -> u32 {
    let digits: String = device
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    digits.parse().unwrap_or(fallback)
}

/// The operator's view of one resource's replica.
pub fn disk_status(name: &str, minor: u32, device: &str, s: &Status, exposed: bool) -> DiskStatus {
    let sync = matches!(
        s.cstate,
        ConnState::SyncSource
            | ConnState::SyncTarget
            | ConnState::PausedSyncS
            | ConnState::PausedSyncT
    ) && s.sync_total_bytes > 0;
    DiskStatus {
        name: name.into(),
        minor,
        device: device.into(),
        protocol: s.protocol.to_string(),
        role: s.role.to_string(),
        peer_role: s.peer_role.to_string(),
        cstate: s.cstate.to_string(),
        dstate: s.dstate.to_string(),
        peer_dstate: s.peer_dstate.to_string(),
        ns_kib: s.ns_kib,
        nr_kib: s.nr_kib,
        dw_kib: s.dw_kib,
        dr_kib: s.dr_kib,
        ap_pending: s.ap_pending,
        out_of_sync_kib: s.out_of_sync_bytes / 1024,
        sync: sync.then_some(SyncProgress {
            total_kib: s.sync_total_bytes / 1024,
            left_kib: s.sync_left_bytes / 1024,
            speed_kib_s: s.sync_rate / 1024,
        }),
        exposed,
        wire_sent_bytes: 0,
        wire_received_bytes: 0,
        error: None,
    }
}

/// A resource that could not start (its error shows in `status`).
pub fn failed_status(name: &str, minor: u32, device: &str, error: &str) -> DiskStatus {
    DiskStatus {
        name: name.into(),
        minor,
        device: device.into(),
        protocol: "-".into(),
        role: Role::Unknown.to_string(),
        peer_role: Role::Unknown.to_string(),
        cstate: ConnState::StandAlone.to_string(),
        dstate: DiskState::Diskless.to_string(),
        peer_dstate: DiskState::DUnknown.to_string(),
        ns_kib: 0,
        nr_kib: 0,
        dw_kib: 0,
        dr_kib: 0,
        ap_pending: 0,
        out_of_sync_kib: 0,
        sync: None,
        exposed: false,
        wire_sent_bytes: 0,
        wire_received_bytes: 0,
        error: Some(error.into()),
    }
}

// ==== Catalogue lines ====

/// The catalogue lines of the replicated disks (`disk_*`).
#[derive(Clone, Copy, Debug)]
pub enum DiskLine<'a> {
    /// A line of the replica (state changes, sync, split brain, I/O errors).
    Repl { res: &'a str, event: &'a ReplEvent },
    /// The block device appeared at `device` (this node is Primary).
    Exposed {
        res: &'a str,
        device: &'a str,
        took_ms: u64,
    },
    /// The block device could not be set up or torn down.
    ExposeFailed {
        res: &'a str,
        device: &'a str,
        error: &'a str,
    },
    /// The block device was removed (demotion, shutdown).
    Removed { res: &'a str, device: &'a str },
    /// A drbd.conf handler ran; `code` is the exit code when it exited.
    Handler {
        res: &'a str,
        handler: &'a str,
        result: &'a str,
        code: Option<i32>,
        took_ms: u64,
    },
    /// An operator command (`bascule disk ...`, or the drbddisk agent's).
    Command {
        res: &'a str,
        command: &'a str,
        result: Result<(), &'a str>,
    },
    /// The resource cannot run (no metadata, backing device unusable).
    Error { res: &'a str, message: &'a str },
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// A connection state that means the link to the peer broke or was refused.
fn cstate_bad(c: ConnState) -> bool {
    matches!(
        c,
        ConnState::StandAlone
            | ConnState::Timeout
            | ConnState::BrokenPipe
            | ConnState::NetworkFailure
            | ConnState::ProtocolError
    )
}

fn dstate_level(d: DiskState) -> log::Level {
    match d {
        DiskState::Failed | DiskState::Diskless => log::Level::Error,
        DiskState::Outdated | DiskState::Inconsistent => log::Level::Warn,
        _ => log::Level::Info,
    }
}

impl DiskLine<'_> {
    /// error: split brain, I/O errors, a lost disk, a failed handler or device,
    /// a resource that cannot run; warn: a broken connection, stale data;
    /// info otherwise.
    pub fn level(&self) -> log::Level {
        use log::Level::{Error, Info, Warn};
        match self {
            DiskLine::Repl { event, .. } => match event {
                ReplEvent::Conn { to, .. } if cstate_bad(*to) => Warn,
                ReplEvent::Disk { to, .. } => dstate_level(*to),
                ReplEvent::PeerDisk { to, .. } => dstate_level(*to).max(Warn),
                ReplEvent::SplitBrain { .. } | ReplEvent::IoError { .. } => Error,
                _ => Info,
            },
            DiskLine::Exposed { .. } | DiskLine::Removed { .. } => Info,
            DiskLine::ExposeFailed { .. } | DiskLine::Error { .. } => Error,
            DiskLine::Handler { result, .. } if *result == "ok" => Info,
            DiskLine::Handler { .. } => Error,
            DiskLine::Command { result: Ok(()), .. } => Info,
            DiskLine::Command { .. } => Warn,
        }
    }

    /// The catalogue line.
    pub fn render(&self, out: &mut impl fmt::Write) -> fmt::Result {
        match self {
            DiskLine::Repl { res, event } => render_repl(out, res, event),
            DiskLine::Exposed {
                res,
                device,
                took_ms,
            } => write!(
                out,
                "disk_exposed res={res} device={device} took_ms={took_ms}"
            ),
            DiskLine::ExposeFailed { res, device, error } => {
                write!(out, "disk_expose_failed res={res} device={device} error=")?;
                write_quoted(out, error)
            }
            DiskLine::Removed { res, device } => {
                write!(out, "disk_removed res={res} device={device}")
            }
            DiskLine::Handler {
                res,
                handler,
                result,
                code,
                took_ms,
            } => {
                write!(
                    out,
                    "disk_handler res={res} handler={handler} result={result}"
                )?;
                if let Some(code) = code {
                    write!(out, " code={code}")?;
                }
                write!(out, " took_ms={took_ms}")
            }
            DiskLine::Command {
                res,
                command,
                result,
            } => {
                write!(out, "disk_command res={res} command=")?;
                write_quoted(out, command)?;
                match result {
                    Ok(()) => out.write_str(" result=ok"),
                    Err(why) => {
                        out.write_str(" result=refused reason=")?;
                        write_quoted(out, why)
                    }
                }
            }
            DiskLine::Error { res, message } => {
                write!(out, "disk_error res={res} message=")?;
                write_quoted(out, message)
            }
        }
    }
}

fn render_repl(out: &mut impl fmt::Write, res: &str, event: &ReplEvent) -> fmt::Result {
    match event {
        ReplEvent::Role { from, to } => write!(out, "disk_role res={res} from={from} to={to}"),
        ReplEvent::Conn { from, to } => write!(out, "disk_cstate res={res} from={from} to={to}"),
        ReplEvent::Disk { from, to } => write!(out, "disk_dstate res={res} from={from} to={to}"),
        ReplEvent::PeerDisk { from, to } => {
            write!(out, "disk_peer_dstate res={res} from={from} to={to}")
        }
        ReplEvent::SyncStart { source, full, kib } => write!(
            out,
            "disk_sync_start res={res} role={} full={} kib={kib}",
            if *source { "source" } else { "target" },
            yes_no(*full)
        ),
        ReplEvent::SyncDone { kib, ms } => {
            let kib_s = (kib * 1000).checked_div(*ms).unwrap_or(*kib);
            write!(
                out,
                "disk_sync_done res={res} kib={kib} took_ms={ms} kib_s={kib_s}"
            )
        }
        ReplEvent::SplitBrain { policy, resolved } => write!(
            out,
            "disk_split_brain res={res} policy={policy} resolved={resolved}"
        ),
        ReplEvent::IoError { op, offset } => {
            write!(out, "disk_io_error res={res} op={op} offset={offset}")
        }
        ReplEvent::Note { name, detail } => {
            write!(out, "disk_note res={res} name={name} detail=")?;
            write_quoted(out, detail)
        }
    }
}

// ==== The `disk` command line ====

/// `bascule disk ...`: `create-md` offline, everything else through the daemon.
pub fn client(args: &Args, node: &str, cmd: &DiskCommand) -> Result<(), ShellError> {
    match cmd.verb {
        DiskVerb::CreateMd { force } => {
            let specs = load_specs(args, node)?;
            let chosen = select(&specs, &cmd.target)?;
            for spec in chosen {
                let store = Store::open(&spec.disk, &spec.meta)
                    .map_err(|e| ShellError::Config(format!("{}: {e}", spec.name)))?;
                print!("{}", create_md_on(&store, &spec.name, force)?);
            }
            Ok(())
        }
        DiskVerb::Role => {
            let answer = control::client_request(&args.run_dir, &cmd.request_line())?;
            let answer = check_answer(answer)?;
            print!("{answer}");
            if answer.starts_with("Primary") {
                Ok(())
            } else {
                Err(ShellError::NotPrimary(format!(
                    "{}: not Primary here",
                    cmd.target.word()
                )))
            }
        }
        _ => {
            let answer = match cmd.wait_s {
                Some(secs) => wait_command(&args.run_dir, cmd, StdDuration::from_secs(secs))?,
                None => check_answer(control::client_request(&args.run_dir, &cmd.request_line())?)?,
            };
            print!("{answer}");
            Ok(())
        }
    }
}

/// `refused: ...` -> exit 10; `error: ...` -> usage (exit 2); else the answer.
pub fn check_answer(answer: String) -> Result<String, ShellError> {
    if let Some(why) = answer.strip_prefix("refused: ") {
        return Err(ShellError::Refused(why.trim_end().to_string()));
    }
    if let Some(why) = answer.strip_prefix("error: ") {
        return Err(ShellError::Usage(why.trim_end().to_string()));
    }
    Ok(answer)
}

/// What Heartbeat's drbddisk does around `drbdadm primary|secondary`: retry a
/// refusal until `wait` runs out (the peer may still be demoting after a
/// switchover), then wait until the role change is complete here (the device
/// is exposed after a promotion, gone after a demotion).
fn wait_command(
    run_dir: &Path,
    cmd: &DiskCommand,
    wait: StdDuration,
) -> Result<String, ShellError> {
    let start = std::time::Instant::now();
    let answer = loop {
        let answer = control::client_request(run_dir, &cmd.request_line())?;
        match check_answer(answer) {
            Err(ShellError::Refused(why)) if start.elapsed() + WAIT_RETRY < wait => {
                log::debug!("{}: {why}; retrying", cmd.request_line());
                std::thread::sleep(WAIT_RETRY);
            }
            other => break other?,
        }
    };
    let want_primary = matches!(cmd.verb, DiskVerb::Primary { .. });
    let names: Vec<String> = match &cmd.target {
        DiskTarget::One(n) => vec![n.clone()],
        DiskTarget::All => Vec::new(),
    };
    loop {
        let mut done = true;
        for name in &names {
            let role = control::client_request(run_dir, &format!("disk role {name}"))?;
            let ready = role.starts_with("Primary exposed");
            let gone = role.starts_with("Secondary") && role.contains("removed");
            done &= if want_primary { ready } else { gone };
        }
        if done {
            return Ok(answer);
        }
        if start.elapsed() >= wait {
            return Err(ShellError::Refused(format!(
                "{}: accepted, but not complete after {} s",
                cmd.request_line(),
                wait.as_secs()
            )));
        }
        std::thread::sleep(WAIT_POLL);
    }
}

/// What `create-md` needs of a drbd.conf resource, resolved for this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskSpec {
    /// The resource name (`repl`).
    pub name: String,
    /// `device` (`/dev/drbd0`).
    pub device: String,
    /// `disk` (`/dev/hda5`).
    pub disk: PathBuf,
    /// `meta-disk`.
    pub meta: MetaDisk,
}

impl DiskSpec {
    /// From the resolved drbd.conf resource.
    pub fn of(res: &ResolvedResource) -> DiskSpec {
        DiskSpec {
            name: res.name.clone(),
            device: res.device.path.clone(),
            disk: PathBuf::from(&res.disk),
            meta: match &res.meta_disk {
                drbd::MetaDisk::Internal => MetaDisk::Internal,
                drbd::MetaDisk::External { path, index } => MetaDisk::External {
                    path: PathBuf::from(path),
                    index: *index,
                },
            },
        }
    }
}

/// The drbd.conf resources of this node, in file order (the whole
/// configuration is checked first, as `run` would).
pub fn load_specs(args: &Args, node: &str) -> Result<Vec<DiskSpec>, ShellError> {
    let loaded = super::config_load::load(&args.config_dir, node)?;
    let Some(conf) = loaded.drbd.as_ref() else {
        return Err(ShellError::Config(format!(
            "{}: no such file: the replicated disks are defined there",
            args.config_dir
                .join(super::config_load::DRBD_CONF)
                .display()
        )));
    };
    conf.resources_on(&loaded.node)
        .iter()
        .map(|r| {
            conf.resource_for(&r.name, &loaded.node)
                .map(|res| DiskSpec::of(&res))
                .map_err(ShellError::Config)
        })
        .collect()
}

/// The resources `target` names; an unknown name is a usage error.
pub fn select<'a>(
    specs: &'a [DiskSpec],
    target: &DiskTarget,
) -> Result<Vec<&'a DiskSpec>, ShellError> {
    match target {
        DiskTarget::All => Ok(specs.iter().collect()),
        DiskTarget::One(name) => specs
            .iter()
            .find(|s| &s.name == name)
            .map(|s| vec![s])
            .ok_or_else(|| {
                let known: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
                ShellError::Usage(format!(
                    "no resource `{name}` for this node in drbd.conf (known: {})",
                    known.join(", ")
                ))
            }),
    }
}

// ==== The running resources ====

/// First token of the replicated disks: the handler runner's pipes, then
/// [`TOKENS_PER_DISK`] per resource.
pub const TOKEN_FIRST: usize = 512;
/// The disks' shared waker (after the handler runner's pipes).
pub const WAKER_TOKEN: usize = TOKEN_FIRST + runner::TOKENS;
/// Tokens of one resource: one spare, the replication connection's, then the
/// NBD server's (listener + connections).
pub const TOKENS_PER_DISK: usize = 32;
/// Resources this node may run (DRBD 8 allowed many; a pair of budget servers
/// has a few).
pub const DISKS_MAX: usize = 16;
/// NBD tokens of one resource: what is left after the waker and the connection.
const NBD_TOKENS: usize = TOKENS_PER_DISK - 1 - repl_conn::TOKENS;
/// Data worker threads per resource, besides its sync workers. Why two, not
/// more: buffered writes to one file serialise on its inode lock in the
/// kernel, so more threads only add wake-ups and lock spinning (4 ran 14.2k
/// 4 KiB writes/s at qd16 where batches on 1 or 2 ran 20.9k and 21.1k, same
/// lab, back to back); the second lets reads and a write stuck behind
/// writeback overlap.
pub const DISK_THREADS: usize = 2;
/// Bytes of peer messages the glue holds when the connection's own queue is
/// full; while above, no new host request is taken (the NBD server then stops
/// reading its clients): memory stays bounded under a slow link.
pub const SENDQ_BYTES_MAX: usize = 16 << 20;
/// Passes of the pump per loop iteration (each pass may unlock the next).
const PUMP_PASSES_MAX: usize = 8;
/// Longest a drbd.conf handler may run before it is killed.
pub const HANDLER_TIMEOUT: Duration = Duration::from_secs(60);
/// After the heartbeats declared the peer dead, how long the replication
/// connection has to deliver anything (it is pinged) before it is dropped as
/// dead too: a live link answers in milliseconds; a dead one would otherwise
/// hold a takeover's promotion until its idle timeout.
pub const PEER_PROBE_TIMEOUT: Duration = Duration::from_millis(1000);
/// Longest the daemon waits at exit for the block device to go.
const SHUTDOWN_TEARDOWN_MAX: StdDuration = StdDuration::from_secs(30);
/// After a failed listen (address not up yet), try again this much later.
const LISTEN_RETRY: Duration = Duration::from_secs(2);

/// The block device at drbd.conf's `device`, as the glue drives it: set up
/// and torn down by `blockdev` on a helper thread (nbdfuse connects back to our
/// own NBD socket, so the loop keeps serving meanwhile).
enum Exposure {
    /// Nothing at `device` (Secondary, or not yet).
    Absent,
    /// `blockdev::expose` runs.
    Starting { job: Job, since: Instant },
    /// Present: `mkfs`, `mount` work.
    Ready(Exposed),
    /// `Exposed::teardown` runs.
    Stopping { job: Job },
}

/// One message for the peer, encoded once.
struct OutMsg {
    kind: u8,
    header: Vec<u8>,
    payload: Option<Payload>,
}

impl OutMsg {
    fn bytes(&self) -> usize {
        self.header.len() + self.payload.as_ref().map_or(0, |p| p.len())
    }
}

/// One resource running here. See the module doc.
pub struct ReplicationIo {
    res: ResolvedResource,
    minor: u32,
    replica: Replica,
    worker: DiskWorker,
    conn: ReplConn,
    nbd: NbdServer,
    token_base: usize,
    sendq: VecDeque<OutMsg>,
    sendq_bytes: usize,
    done: Vec<(DiskId, IoResult)>,
    batch: Vec<(DiskId, DiskIo)>,
    header: Vec<u8>,
    exposure: Exposure,
    /// Whether the device should be there (Primary).
    expose_wanted: bool,
    /// The loop's waker, for the blockdev helper thread.
    waker: Arc<Waker>,
    /// Where the blockdev backend keeps its FUSE mount (absolute).
    work_dir: PathBuf,
    /// Connect asked but the listener could not bind yet: retry at this time.
    listen_retry: Option<Instant>,
    /// Messages received from the peer so far.
    rx_msgs: u64,
    /// A liveness probe: (deadline, `rx_msgs` when it started).
    probe: Option<(Instant, u64)>,
    role: Role,
}

/// A resource that could not start: shown in `status`, refused in commands.
struct FailedDisk {
    name: String,
    minor: u32,
    device: String,
    error: String,
}

#[allow(clippy::large_enum_variant)]
enum Slot {
    Running(ReplicationIo),
    Failed(FailedDisk),
}

impl Slot {
    fn name(&self) -> &str {
        match self {
            Slot::Running(r) => &r.res.name,
            Slot::Failed(f) => &f.name,
        }
    }
}

/// A handler child in flight.
struct HandlerRun {
    id: OpId,
    res: String,
    handler: &'static str,
}

/// Every replicated disk of this node, and the runner of their handlers.
pub struct Disks {
    slots: Vec<Slot>,
    runner: Runner,
    handlers: Vec<HandlerRun>,
}

impl ReplicationIo {
    /// Opens the backing store, reads the metadata, builds the replica, binds
    /// the NBD socket (read-only until promoted) and starts the disk worker.
    /// Blocking (reads the metadata): call before the loop runs.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        res: ResolvedResource,
        secret: &[u8],
        run_dir: &Path,
        registry: &Registry,
        waker: &Arc<Waker>,
        token_base: usize,
        index: u32,
        now: Instant,
    ) -> Result<ReplicationIo, String> {
        let spec = DiskSpec::of(&res);
        let store = Store::open(&spec.disk, &spec.meta)?;
        let (md, bitmap) = store.read_md(&res.name)?;
        let layout = store.layout;
        let files = DiskFiles {
            data: store.data,
            data_bytes: layout.usable_bytes,
            meta: Some((store.meta, store.meta_base)),
        };
        let worker = DiskWorker::new(files, DISK_THREADS, Arc::clone(waker))
            .map_err(|e| format!("disk worker threads: {e}"))?;
        let conn = open_conn(&res, secret, registry, token_base + 1)?;
        let nbd = open_nbd(
            &res.name,
            run_dir,
            layout.usable_bytes,
            registry,
            token_base,
        )?;
        let replica = Replica::new(res.replica_config(layout), md, bitmap, now);
        let work_dir = std::path::absolute(run_dir)
            .unwrap_or_else(|_| run_dir.to_path_buf())
            .join(format!("blockdev-{}", res.name));
        // A previous instance killed with the device up left its FUSE
        // connection and loop device: they go before anything is exposed.
        blockdev::clean_stale(
            &work_dir,
            StdDuration::from_millis(blockdev::STEP_TIMEOUT_MS),
        );
        Ok(ReplicationIo {
            minor: res
                .device
                .minor
                .unwrap_or(minor_of(&res.device.path, index)),
            res,
            replica,
            worker,
            conn,
            nbd,
            token_base,
            sendq: VecDeque::new(),
            sendq_bytes: 0,
            done: Vec::new(),
            batch: Vec::new(),
            header: Vec::with_capacity(256),
            exposure: Exposure::Absent,
            expose_wanted: false,
            waker: Arc::clone(waker),
            work_dir,
            listen_retry: None,
            rx_msgs: 0,
            probe: None,
            role: Role::Secondary,
        })
    }

    fn owns(&self, token: Token) -> bool {
        (self.token_base..self.token_base + TOKENS_PER_DISK).contains(&token.0)
    }

    fn on_token(&mut self, event: &mio::event::Event, now: Instant) {
        let token = event.token();
        if self.conn.owns(token) {
            self.conn.ready(token, event, now);
        } else if self.nbd.owns(token) {
            self.nbd.handle_event(
                token,
                event.is_readable(),
                event.is_writable(),
                !(event.is_read_closed() || event.is_error()),
            );
        }
        // The waker's token needs nothing: the pump drains the worker anyway.
    }

    fn poll_timeout(&self) -> Option<Instant> {
        [
            self.replica.poll_timeout(),
            self.conn.poll_timeout(),
            self.listen_retry,
            self.probe.map(|(deadline, _)| deadline),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.replica.poll_timeout().is_some_and(|t| t <= now) {
            self.replica.handle_timeout(now);
        }
        self.conn.handle_timeout(now);
        if self.listen_retry.is_some_and(|t| t <= now) {
            self.listen_retry = None;
            self.connect(now);
        }
        self.check_probe(now);
    }

    /// The heartbeats declared the peer dead: ping it on the replication
    /// connection, which is dropped if nothing at all arrives in time.
    fn probe_peer(&mut self, now: Instant) {
        if !self.conn.is_up() || self.probe.is_some() {
            return;
        }
        self.probe = Some((now + PEER_PROBE_TIMEOUT, self.rx_msgs));
        let mut header = Vec::new();
        let (kind, payload) = PeerMsg::Ping.encode(&mut header);
        let m = OutMsg {
            kind,
            header,
            payload,
        };
        self.sendq_bytes += m.bytes();
        self.sendq.push_back(m);
        self.flush_sends();
        self.conn.flush(now);
    }

    fn check_probe(&mut self, now: Instant) {
        let Some((deadline, mark)) = self.probe else {
            return;
        };
        if self.rx_msgs != mark || !self.conn.is_up() {
            self.probe = None;
            return;
        }
        if now < deadline {
            return;
        }
        self.probe = None;
        log_disk_line(&DiskLine::Repl {
            res: &self.res.name,
            event: &ReplEvent::Note {
                name: "peer_silent",
                detail: format!(
                    "heartbeats lost and nothing on the replication connection for {} ms: dropped",
                    PEER_PROBE_TIMEOUT.millis()
                ),
            },
        });
        // The Down event reaches the replica in the next pump; listen and
        // dial again at once, for when the peer comes back.
        self.conn.close();
        self.drop_sends();
        self.connect(now);
    }

    fn connect(&mut self, now: Instant) {
        if let Err(e) = self.conn.connect(now) {
            // The crossover address may not be configured yet: retry quietly.
            log::debug!(
                "disk_listen_failed res={} address={} error={e}",
                self.res.name,
                self.res.address
            );
            self.listen_retry = Some(now + LISTEN_RETRY);
        }
    }

    /// Moves everything that is ready: completions, peer messages, queued
    /// sends, host requests (while the send queue has room), actions.
    /// Returns the handlers the replica asked for.
    fn pump(&mut self, now: Instant, handlers: &mut Vec<&'static str>) {
        if matches!(
            self.exposure,
            Exposure::Starting { .. } | Exposure::Stopping { .. }
        ) {
            self.step_exposure(now);
        }
        for _ in 0..PUMP_PASSES_MAX {
            let mut work = false;
            self.worker.drain(&mut self.done);
            for (id, result) in self.done.drain(..) {
                log::trace!(
                    "disk_done res={} id={} ok={}",
                    self.res.name,
                    id.0,
                    result.is_ok()
                );
                self.replica.handle_disk_done(now, id, result);
                work = true;
            }
            while let Some(event) = self.conn.poll_event() {
                work = true;
                self.on_conn_event(now, event);
            }
            self.flush_sends();
            while self.sendq_bytes < SENDQ_BYTES_MAX {
                let Some((id, io)) = self.nbd.poll_request() else {
                    break;
                };
                if log::log_enabled!(log::Level::Trace) {
                    let what = match &io {
                        HostIo::Write { offset, data, fua } => {
                            format!("write offset={offset} len={} fua={fua}", data.len())
                        }
                        other => format!("{other:?}"),
                    };
                    log::trace!("disk_host res={} id={} {what}", self.res.name, id.0);
                }
                self.replica.handle_host(now, id, io);
                work = true;
            }
            while let Some(action) = self.replica.poll_action() {
                work = true;
                self.act(now, action, handlers);
            }
            if !self.batch.is_empty() {
                self.worker.submit_batch(self.batch.drain(..));
            }
            self.flush_sends();
            // On the write path now, not at the next turn of the loop.
            self.conn.flush(now);
            self.nbd.flush();
            if !work {
                break;
            }
        }
    }

    fn on_conn_event(&mut self, now: Instant, event: ConnEvent) {
        match event {
            ConnEvent::Up { .. } => self.replica.handle_peer_up(now),
            ConnEvent::Msg(kind, header, payload) => {
                self.rx_msgs += 1;
                match PeerMsg::decode(kind, &header, payload) {
                    Ok(msg) => self.replica.handle_peer_msg(now, msg),
                    Err(e) => {
                        // A peer speaking another dialect: drop the connection (the
                        // engine sees it break) rather than guess.
                        log::debug!(
                            "disk_bad_message res={} kind={kind} error={e:?}",
                            self.res.name
                        );
                        self.conn.close();
                        self.drop_sends();
                        self.replica.handle_peer_down(now);
                        self.connect(now);
                    }
                }
            }
            ConnEvent::Down(reason) => {
                log::debug!("disk_conn_down res={} reason={reason}", self.res.name);
                self.drop_sends();
                self.replica.handle_peer_down(now);
            }
            ConnEvent::Rejected { peer, reject } => {
                let detail = format!("{peer}: {reject:?}");
                log_disk_line(&DiskLine::Repl {
                    res: &self.res.name,
                    event: &ReplEvent::Note {
                        name: "peer_rejected",
                        detail,
                    },
                });
            }
            ConnEvent::Drained => {}
        }
    }

    fn drop_sends(&mut self) {
        self.sendq.clear();
        self.sendq_bytes = 0;
    }

    fn flush_sends(&mut self) {
        while let Some(m) = self.sendq.front() {
            match self.conn.send(m.kind, &m.header, m.payload.clone()) {
                Ok(()) => {
                    let m = self.sendq.pop_front().expect("front exists");
                    self.sendq_bytes -= m.bytes();
                }
                Err(SendError::Full) => return,
                Err(SendError::NotUp) => {
                    // The replica hears the Down event and resends what it must.
                    self.drop_sends();
                    return;
                }
            }
        }
    }

    fn act(&mut self, now: Instant, action: Action, handlers: &mut Vec<&'static str>) {
        if log::log_enabled!(log::Level::Trace) {
            log::trace!(
                "disk_action res={} {}",
                self.res.name,
                action_summary(&action)
            );
        }
        match action {
            Action::Disk { id, io } => self.batch.push((id, io)),
            Action::Send(msg) => {
                self.header.clear();
                let (kind, payload) = msg.encode(&mut self.header);
                let m = OutMsg {
                    kind,
                    header: self.header.clone(),
                    payload,
                };
                self.sendq_bytes += m.bytes();
                self.sendq.push_back(m);
                if self.sendq.len() == 1 {
                    self.flush_sends();
                }
            }
            Action::HostDone { id, result } => self.nbd.complete(id, result),
            Action::Connect => self.connect(now),
            Action::Disconnect => {
                // What the replica said before hanging up goes first: after
                // a split brain the peer must still get our report to see it
                // too (the Up and its report can arrive in one read, so the
                // report may still sit in the queues here).
                self.flush_sends();
                self.conn.flush(now);
                self.listen_retry = None;
                self.conn.close();
                self.drop_sends();
            }
            Action::Event(event) => {
                log_disk_line(&DiskLine::Repl {
                    res: &self.res.name,
                    event: &event,
                });
                if let ReplEvent::Role { to, .. } = event {
                    self.on_role(now, to);
                }
            }
            Action::RunHandler(name) => handlers.push(name),
        }
    }

    /// Primary: writable NBD export, the block device appears; Secondary:
    /// read-only export, the block device goes.
    fn on_role(&mut self, now: Instant, to: Role) {
        self.role = to;
        let primary = to == Role::Primary;
        // Connections stay: the device's own (nbdfuse) must live until its
        // teardown; from now on their writes get EPERM.
        self.nbd.set_read_only(!primary);
        self.expose(now, primary);
    }

    /// Wants the block device present (`up`) or gone; [`Self::step_exposure`]
    /// gets there one helper job at a time.
    fn expose(&mut self, now: Instant, up: bool) {
        self.expose_wanted = up;
        self.step_exposure(now);
    }

    /// Collects a finished blockdev job and starts the next one the wanted
    /// state needs. Never blocks.
    fn step_exposure(&mut self, now: Instant) {
        let device = self.res.device.path.clone();
        let name = self.res.name.clone();
        let exposure = std::mem::replace(&mut self.exposure, Exposure::Absent);
        self.exposure = match exposure {
            Exposure::Starting { mut job, since } => match job.poll() {
                None => Exposure::Starting { job, since },
                Some(JobResult::Exposed(Ok(exposed))) => {
                    log_disk_line(&DiskLine::Exposed {
                        res: &name,
                        device: &device,
                        took_ms: now.saturating_since(since).millis(),
                    });
                    Exposure::Ready(exposed)
                }
                Some(JobResult::Exposed(Err(e))) => {
                    let error = e.to_string();
                    log_disk_line(&DiskLine::ExposeFailed {
                        res: &name,
                        device: &device,
                        error: &error,
                    });
                    // Not retried by itself: `disk primary` again (or the
                    // drbddisk agent's next start) asks once more.
                    self.expose_wanted = false;
                    Exposure::Absent
                }
                Some(JobResult::TornDown(_)) => unreachable!("an expose job tore down"),
            },
            Exposure::Stopping { mut job } => match job.poll() {
                None => Exposure::Stopping { job },
                Some(JobResult::TornDown(Ok(()))) => {
                    log_disk_line(&DiskLine::Removed {
                        res: &name,
                        device: &device,
                    });
                    Exposure::Absent
                }
                Some(JobResult::TornDown(Err((exposed, error)))) => {
                    let error = error.to_string();
                    log_disk_line(&DiskLine::ExposeFailed {
                        res: &name,
                        device: &device,
                        error: &error,
                    });
                    Exposure::Ready(exposed)
                }
                Some(JobResult::Exposed(_)) => unreachable!("a teardown job exposed"),
            },
            other => other,
        };
        let exposure = std::mem::replace(&mut self.exposure, Exposure::Absent);
        self.exposure = match (exposure, self.expose_wanted) {
            (Exposure::Absent, true) => {
                let spec = ExposeSpec::new(
                    socket_path(self.nbd.path().parent().unwrap_or(Path::new("/")), &name),
                    PathBuf::from(&device),
                    self.work_dir.clone(),
                );
                Exposure::Starting {
                    job: Job::expose(spec, Arc::clone(&self.waker)),
                    since: now,
                }
            }
            (Exposure::Ready(exposed), false) => Exposure::Stopping {
                job: Job::teardown(exposed, Arc::clone(&self.waker)),
            },
            (other, _) => other,
        };
    }

    fn exposed(&self) -> bool {
        matches!(self.exposure, Exposure::Ready(_))
    }

    fn status(&self, now: Instant) -> DiskStatus {
        let mut d = disk_status(
            &self.res.name,
            self.minor,
            &self.res.device.path,
            &self.replica.status(now),
            self.exposed(),
        );
        (d.wire_sent_bytes, d.wire_received_bytes) = self.wire_bytes();
        d
    }

    /// `disk role`: `Primary exposed`, `Primary`, `Secondary removed` or `Secondary`.
    fn role_word(&self) -> &'static str {
        let gone = matches!(self.exposure, Exposure::Absent);
        match (self.role, self.exposed(), gone) {
            (Role::Primary, true, _) => "Primary exposed",
            (Role::Primary, false, _) => "Primary",
            (_, _, true) => "Secondary removed",
            _ => "Secondary",
        }
    }

    /// Applies an operator command; Err is the refusal's reason.
    fn command(&mut self, now: Instant, verb: &DiskVerb) -> Result<(), String> {
        let cmd = match *verb {
            DiskVerb::Primary { .. } if self.role == Role::Primary => return Ok(()),
            DiskVerb::Secondary if self.role != Role::Primary => return Ok(()),
            DiskVerb::Secondary => {
                if let Some(why) = device_busy(&self.res.device.path) {
                    return Err(why);
                }
                Command::Secondary
            }
            DiskVerb::Primary { force } => Command::Primary { force },
            DiskVerb::Connect { discard_my_data } => Command::Connect { discard_my_data },
            DiskVerb::Disconnect => Command::Disconnect,
            DiskVerb::Invalidate => Command::Invalidate,
            DiskVerb::Verify => Command::Verify,
            DiskVerb::Status | DiskVerb::Role | DiskVerb::CreateMd { .. } => return Ok(()),
        };
        self.replica
            .handle_command(now, cmd)
            .map_err(|Refused(why)| why)
    }

    /// Bytes the replication connection moved (the resync test reads them).
    pub fn wire_bytes(&self) -> (u64, u64) {
        let s = self.conn.stats();
        (s.bytes_sent, s.bytes_received)
    }

    /// At exit (blocking is allowed now): the device goes first, while the NBD
    /// socket still serves nbdfuse's last flush; then the socket and the
    /// connection. A job still running is waited for, bounded by blockdev's
    /// own step deadlines.
    fn shutdown(&mut self, start: Instant) {
        let exposure = std::mem::replace(&mut self.exposure, Exposure::Absent);
        let exposed = match exposure {
            Exposure::Ready(e) => Some(e),
            Exposure::Starting { mut job, .. } | Exposure::Stopping { mut job } => {
                match self.wait_job(&mut job, start) {
                    Some(JobResult::Exposed(Ok(e))) => Some(e),
                    Some(JobResult::TornDown(Err((e, _)))) => Some(e),
                    _ => None,
                }
            }
            Exposure::Absent => None,
        };
        if let Some(exposed) = exposed {
            let (tx, rx) = std::sync::mpsc::channel();
            // The teardown runs beside a small serving loop: nbdfuse flushes
            // through our NBD socket while it stops.
            std::thread::spawn(move || {
                let _ = tx.send(exposed.teardown().map_err(|(_, e)| e.to_string()));
            });
            let origin = std::time::Instant::now();
            let deadline = origin + SHUTDOWN_TEARDOWN_MAX;
            let mut handlers = Vec::new();
            loop {
                let now = start + Duration::from_millis(origin.elapsed().as_millis() as u64);
                match rx.try_recv() {
                    Ok(Ok(())) => {
                        log_disk_line(&DiskLine::Removed {
                            res: &self.res.name,
                            device: &self.res.device.path,
                        });
                        break;
                    }
                    Ok(Err(error)) => {
                        log_disk_line(&DiskLine::ExposeFailed {
                            res: &self.res.name,
                            device: &self.res.device.path,
                            error: &error,
                        });
                        break;
                    }
                    Err(_) if std::time::Instant::now() > deadline => break,
                    Err(_) => {}
                }
                self.serve_for_shutdown(now, &mut handlers);
                std::thread::sleep(StdDuration::from_millis(5));
            }
        }
        self.nbd.shutdown();
        self.conn.close();
    }

    /// Waits (bounded) for a blockdev job while serving the NBD socket.
    fn wait_job(&mut self, job: &mut Job, start: Instant) -> Option<JobResult> {
        let origin = std::time::Instant::now();
        let deadline = origin + SHUTDOWN_TEARDOWN_MAX;
        let mut handlers = Vec::new();
        while std::time::Instant::now() < deadline {
            if let Some(r) = job.poll() {
                return Some(r);
            }
            let now = start + Duration::from_millis(origin.elapsed().as_millis() as u64);
            self.serve_for_shutdown(now, &mut handlers);
            std::thread::sleep(StdDuration::from_millis(5));
        }
        None
    }

    /// Without the loop: NBD readiness is polled by hand (non-blocking
    /// sockets), so nbdfuse's final requests are answered.
    fn serve_for_shutdown(&mut self, now: Instant, handlers: &mut Vec<&'static str>) {
        let first = self.token_base + 1 + repl_conn::TOKENS;
        for t in first..first + NBD_TOKENS {
            self.nbd.handle_event(Token(t), true, true, false);
        }
        self.pump(now, handlers);
    }
}

/// The replication connection of `res` (listens and dials once the replica
/// asks to connect), registered from `token`.
fn open_conn(
    res: &ResolvedResource,
    secret: &[u8],
    registry: &Registry,
    token: usize,
) -> Result<ReplConn, String> {
    let mut cc = ReplConnConfig::new(
        &res.name,
        &res.host,
        &res.peer_host,
        secret,
        res.address,
        res.peer_address,
    );
    cc.connect_interval = res.connect_int.max(Duration::from_millis(100));
    cc.check()
        .map_err(|e| format!("replication connection: {e}"))?;
    let mut conn = ReplConn::new(cc);
    conn.register(registry, token)
        .map_err(|e| format!("register connection: {e}"))?;
    Ok(conn)
}

/// The NBD server of resource `name`, read-only until a promotion, on the
/// tokens after the connection's.
fn open_nbd(
    name: &str,
    run_dir: &Path,
    size: u64,
    registry: &Registry,
    token_base: usize,
) -> Result<NbdServer, String> {
    let path = socket_path(run_dir, name);
    NbdServer::bind(
        NbdConfig {
            path: path.clone(),
            name: name.into(),
            size,
            read_only: true,
            token_first: token_base + 1 + repl_conn::TOKENS,
            tokens: NBD_TOKENS,
            inflight_bytes_max: nbd::INFLIGHT_BYTES_MAX,
        },
        registry,
    )
    .map_err(|e| format!("NBD socket {}: {e}", path.display()))
}

/// One line for a trace of the replica's actions (no payload bytes).
fn action_summary(action: &Action) -> String {
    match action {
        Action::Disk { id, io } => match io {
            DiskIo::Write {
                target,
                offset,
                data,
                fua,
            } => format!(
                "disk id={} write {target:?} offset={offset} len={} fua={fua}",
                id.0,
                data.len()
            ),
            other => format!("disk id={} {other:?}", id.0),
        },
        Action::Send(msg) => {
            let mut h = Vec::new();
            let (kind, payload) = msg.encode(&mut h);
            format!(
                "send kind={kind} header_len={} payload={}",
                h.len(),
                payload.map_or(0, |p| p.len())
            )
        }
        Action::HostDone { id, result } => {
            format!("host_done id={} ok={}", id.0, result.is_ok())
        }
        other => format!("{other:?}"),
    }
}

/// Why the device cannot be demoted now: mounted (named with its mountpoint)
/// or used by another block device (a device-mapper or md holder in sysfs).
/// None when it may go. Reads only /proc and /sys: the device itself is never
/// opened here, since its I/O would go through nbdfuse to the NBD socket this
/// very loop serves.
pub fn device_busy(device: &str) -> Option<String> {
    let path = Path::new(device);
    if !path.exists() {
        return None;
    }
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
        for line in info.lines() {
            let mountpoint = line.split(' ').nth(4).unwrap_or("");
            let source = line
                .split(" - ")
                .nth(1)
                .and_then(|rest| rest.split(' ').nth(1))
                .unwrap_or("");
            if source == device || Path::new(source) == real {
                return Some(format!(
                    "{device} is mounted on {mountpoint}: unmount it first"
                ));
            }
        }
    }
    let name = real.file_name()?.to_str()?;
    let holders = std::fs::read_dir(format!("/sys/block/{name}/holders")).ok()?;
    let held: Vec<String> = holders
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    if held.is_empty() {
        None
    } else {
        Some(format!(
            "{device} is held by {}: release it first",
            held.join(", ")
        ))
    }
}

impl Disks {
    /// Starts every drbd.conf resource of this node. A resource that cannot
    /// start is logged (`disk_error`) and shown in `status`; the others run.
    pub fn start(
        loaded: &Loaded,
        run_dir: &Path,
        registry: &Registry,
        now: Instant,
    ) -> Result<Disks, ShellError> {
        let runner_registry = registry
            .try_clone()
            .map_err(|e| ShellError::io("clone epoll registry", e))?;
        let mut disks = Disks {
            slots: Vec::new(),
            runner: Runner::with_registry(runner_registry, TOKEN_FIRST),
            handlers: Vec::new(),
        };
        let Some(conf) = loaded.drbd.as_ref() else {
            return Ok(disks);
        };
        let names: Vec<String> = conf
            .resources_on(&loaded.node)
            .iter()
            .map(|r| r.name.clone())
            .collect();
        if names.len() > DISKS_MAX {
            return Err(ShellError::Config(format!(
                "drbd.conf: {} resources for {}, at most {DISKS_MAX}",
                names.len(),
                loaded.node
            )));
        }
        let authkey = loaded.config.auth.active_key().secret.clone();
        // One waker for every resource (mio wants one per Poll): the disk
        // workers and the blockdev helper threads share it.
        let waker = Arc::new(
            Waker::new(registry, Token(WAKER_TOKEN))
                .map_err(|e| ShellError::io("disk waker", e))?,
        );
        for (i, name) in names.iter().enumerate() {
            let res = conf
                .resource_for(name, &loaded.node)
                .map_err(ShellError::Config)?;
            let secret = res
                .shared_secret
                .as_ref()
                .map_or_else(|| authkey.clone(), |s| s.as_bytes().to_vec());
            let base = TOKEN_FIRST
                + runner::TOKENS.next_multiple_of(TOKENS_PER_DISK)
                + i * TOKENS_PER_DISK;
            let minor = res
                .device
                .minor
                .unwrap_or(minor_of(&res.device.path, i as u32));
            let device = res.device.path.clone();
            let started =
                ReplicationIo::start(res, &secret, run_dir, registry, &waker, base, i as u32, now);
            let slot = match started {
                Ok(r) => Slot::Running(r),
                Err(error) => {
                    log_disk_line(&DiskLine::Error {
                        res: name,
                        message: &error,
                    });
                    Slot::Failed(FailedDisk {
                        name: name.clone(),
                        minor,
                        device,
                        error,
                    })
                }
            };
            disks.slots.push(slot);
        }
        Ok(disks)
    }

    /// True for the handler runner's and every resource's tokens.
    pub fn owns(&self, token: Token) -> bool {
        token.0 >= TOKEN_FIRST
            && token.0
                < TOKEN_FIRST
                    + runner::TOKENS.next_multiple_of(TOKENS_PER_DISK)
                    + DISKS_MAX * TOKENS_PER_DISK
    }

    /// Readiness of one of our tokens.
    pub fn on_token(&mut self, event: &mio::event::Event, now: Instant) {
        let token = event.token();
        if self.runner.owns(token) {
            self.runner.on_token(token);
            return;
        }
        for slot in self.slots.iter_mut() {
            if let Slot::Running(r) = slot {
                if r.owns(token) {
                    r.on_token(event, now);
                    return;
                }
            }
        }
    }

    /// SIGCHLD: handlers that ended.
    pub fn on_sigchld(&mut self, now: Instant) {
        if self.runner.running() == 0 {
            return;
        }
        let done: Vec<OpDone> = self.runner.reap(now).collect();
        for d in done {
            let Some(i) = self.handlers.iter().position(|h| h.id == d.id) else {
                continue;
            };
            let h = self.handlers.swap_remove(i);
            let (result, code) = match d.outcome {
                runner::Outcome::Ok => ("ok", Some(0)),
                runner::Outcome::Failed { code } => ("failed", Some(code)),
                runner::Outcome::Signal { signal } => ("signal", Some(signal)),
                runner::Outcome::Timeout => ("timeout", None),
            };
            log_disk_line(&DiskLine::Handler {
                res: &h.res,
                handler: h.handler,
                result,
                code,
                took_ms: d.took_ms,
            });
        }
    }

    /// Timers of every resource and of the handler runner.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.runner.running() > 0 {
            self.runner.handle_timeout(now);
        }
        for slot in self.slots.iter_mut() {
            if let Slot::Running(r) = slot {
                r.handle_timeout(now);
            }
        }
    }

    /// Pumps every resource (see [`ReplicationIo`]) and starts the handlers
    /// they asked for.
    pub fn drain(&mut self, now: Instant) {
        let mut wanted = Vec::new();
        for i in 0..self.slots.len() {
            let Slot::Running(r) = &mut self.slots[i] else {
                continue;
            };
            r.pump(now, &mut wanted);
            if wanted.is_empty() {
                continue;
            }
            let res = r.res.clone();
            for handler in wanted.drain(..) {
                self.run_handler(now, &res, handler);
            }
        }
    }

    fn run_handler(&mut self, now: Instant, res: &ResolvedResource, handler: &'static str) {
        let h = &res.handlers;
        let command = match handler {
            "split-brain" => &h.split_brain,
            "local-io-error" => &h.local_io_error,
            "fence-peer" => &h.fence_peer,
            "pri-lost-after-sb" => &h.pri_lost_after_sb,
            _ => &None,
        };
        let Some(command) = command else {
            log::debug!(
                "disk_handler res={} handler={handler}: not configured",
                res.name
            );
            return;
        };
        let mut req = OpRequest::new("/bin/sh", &["-c", command], HANDLER_TIMEOUT);
        // The environment DRBD 8 gives its handlers.
        req.env = vec![
            ("DRBD_RESOURCE".into(), res.name.clone()),
            ("DRBD_PEER".into(), res.peer_host.clone()),
            ("DRBD_PEERS".into(), res.peer_host.clone()),
            (
                "DRBD_PEER_ADDRESS".into(),
                res.peer_address.ip().to_string(),
            ),
        ];
        match self.runner.spawn(req, now) {
            Ok(id) => self.handlers.push(HandlerRun {
                id,
                res: res.name.clone(),
                handler,
            }),
            Err(e) => log_disk_line(&DiskLine::Handler {
                res: &res.name,
                handler,
                result: if e == SpawnError::Busy {
                    "busy"
                } else {
                    "spawn_failed"
                },
                code: None,
                took_ms: 0,
            }),
        }
    }

    /// The earliest deadline of any resource or handler.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let resources = self.slots.iter().filter_map(|s| match s {
            Slot::Running(r) => r.poll_timeout(),
            Slot::Failed(_) => None,
        });
        resources.chain(self.runner.poll_timeout()).min()
    }

    /// Every resource for `status`.
    pub fn status(&self, now: Instant) -> Vec<DiskStatus> {
        self.slots
            .iter()
            .map(|s| match s {
                Slot::Running(r) => r.status(now),
                Slot::Failed(f) => failed_status(&f.name, f.minor, &f.device, &f.error),
            })
            .collect()
    }

    /// Answers a `disk ...` request from the control socket.
    pub fn answer(&mut self, now: Instant, cmd: &DiskCommand) -> String {
        let chosen = match self.chosen(&cmd.target) {
            Ok(chosen) => chosen,
            Err(error) => return error,
        };
        match cmd.verb {
            DiskVerb::Status => {
                let mut out = String::new();
                for i in chosen {
                    control::render_disk(&mut out, &self.slot_status(i, now));
                }
                out
            }
            DiskVerb::Role => format!("{}\n", self.role_of(&chosen)),
            DiskVerb::CreateMd { .. } => {
                "error: create-md works on a stopped daemon's disks (stop bascule first)\n".into()
            }
            _ => self.apply(now, cmd, &chosen),
        }
    }

    /// The slots `target` names, or the error line to answer.
    fn chosen(&self, target: &DiskTarget) -> Result<Vec<usize>, String> {
        let chosen: Vec<usize> = match target {
            DiskTarget::All => (0..self.slots.len()).collect(),
            DiskTarget::One(name) => match self.slots.iter().position(|s| s.name() == name) {
                Some(i) => vec![i],
                None => {
                    let known: Vec<&str> = self.slots.iter().map(Slot::name).collect();
                    return Err(format!(
                        "error: no resource `{name}` runs on this node (known: {})\n",
                        known.join(", ")
                    ));
                }
            },
        };
        if chosen.is_empty() {
            return Err(
                "error: no replicated disk runs on this node (drbd.conf has no resource for it)\n"
                    .into(),
            );
        }
        Ok(chosen)
    }

    fn slot_status(&self, i: usize, now: Instant) -> DiskStatus {
        match &self.slots[i] {
            Slot::Running(r) => r.status(now),
            Slot::Failed(f) => failed_status(&f.name, f.minor, &f.device, &f.error),
        }
    }

    /// `disk role`: every chosen resource Primary with its device, every one
    /// Secondary without it, or the mixed forms.
    fn role_of(&self, chosen: &[usize]) -> &'static str {
        let words: Vec<&str> = chosen
            .iter()
            .map(|i| match &self.slots[*i] {
                Slot::Running(r) => r.role_word(),
                Slot::Failed(_) => "Secondary removed",
            })
            .collect();
        let all = |w: &str| words.iter().all(|x| *x == w);
        if all("Primary exposed") {
            "Primary exposed"
        } else if all("Secondary removed") {
            "Secondary removed"
        } else if words.iter().any(|w| w.starts_with("Primary")) {
            "Primary"
        } else {
            "Secondary"
        }
    }

    /// Applies a state-changing command to each chosen resource; one
    /// `disk_command` line each; `ok:` or every refusal.
    fn apply(&mut self, now: Instant, cmd: &DiskCommand, chosen: &[usize]) -> String {
        let words = cmd.request_line();
        let command = words
            .strip_prefix("disk ")
            .and_then(|w| w.rsplit_once(' ').map(|(c, _)| c))
            .unwrap_or(cmd.verb.word())
            .to_string();
        let mut refusals = Vec::new();
        for &i in chosen {
            let (name, result) = match &mut self.slots[i] {
                Slot::Running(r) => (r.res.name.clone(), r.command(now, &cmd.verb)),
                // Nothing runs there: stopping it works, anything else is refused.
                Slot::Failed(f) => (
                    f.name.clone(),
                    match cmd.verb {
                        DiskVerb::Secondary | DiskVerb::Disconnect => Ok(()),
                        _ => Err(f.error.clone()),
                    },
                ),
            };
            log_disk_line(&DiskLine::Command {
                res: &name,
                command: &command,
                result: result.as_ref().map(|_| ()).map_err(String::as_str),
            });
            if let Err(why) = result {
                refusals.push(format!("{name}: {why}"));
            }
        }
        // The command's effects (role events, the device) follow in this pump.
        self.drain(now);
        if refusals.is_empty() {
            format!("ok: {words}\n")
        } else {
            format!("refused: {}\n", refusals.join("; "))
        }
    }

    /// The heartbeats declared the peer dead (see [`PEER_PROBE_TIMEOUT`]).
    pub fn peer_dead(&mut self, now: Instant) {
        for slot in self.slots.iter_mut() {
            if let Slot::Running(r) = slot {
                r.probe_peer(now);
            }
        }
    }

    /// Whether any resource is Primary here.
    pub fn any_primary(&self) -> bool {
        self.slots
            .iter()
            .any(|s| matches!(s, Slot::Running(r) if r.role == Role::Primary))
    }

    /// At exit (`now`: the loop's last time): the devices go, then the NBD
    /// sockets and the connections.
    pub fn shutdown(&mut self, now: Instant) {
        for slot in self.slots.iter_mut() {
            if let Slot::Running(r) = slot {
                r.shutdown(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(l: DiskLine) -> (log::Level, String) {
        let mut s = String::new();
        l.render(&mut s).unwrap();
        (l.level(), s)
    }

    #[test]
    fn repl_events_render_as_catalogued() {
        let res = "repl";
        let r = |event: ReplEvent| line(DiskLine::Repl { res, event: &event });
        assert_eq!(
            r(ReplEvent::Role {
                from: Role::Secondary,
                to: Role::Primary
            }),
            (
                log::Level::Info,
                "disk_role res=repl from=Secondary to=Primary".into()
            )
        );
        assert_eq!(
            r(ReplEvent::Conn {
                from: ConnState::Connected,
                to: ConnState::NetworkFailure
            })
            .0,
            log::Level::Warn
        );
        assert_eq!(
            r(ReplEvent::Disk {
                from: DiskState::UpToDate,
                to: DiskState::Diskless
            }),
            (
                log::Level::Error,
                "disk_dstate res=repl from=UpToDate to=Diskless".into()
            )
        );
        assert_eq!(
            r(ReplEvent::SyncStart {
                source: true,
                full: true,
                kib: 102400
            })
            .1,
            "disk_sync_start res=repl role=source full=yes kib=102400"
        );
        assert_eq!(
            r(ReplEvent::SyncDone {
                kib: 102400,
                ms: 2000
            })
            .1,
            "disk_sync_done res=repl kib=102400 took_ms=2000 kib_s=51200"
        );
        assert_eq!(
            r(ReplEvent::SyncDone { kib: 0, ms: 0 }).1,
            "disk_sync_done res=repl kib=0 took_ms=0 kib_s=0"
        );
        assert_eq!(
            r(ReplEvent::SplitBrain {
                policy: "disconnect",
                resolved: "disconnect"
            }),
            (
                log::Level::Error,
                "disk_split_brain res=repl policy=disconnect resolved=disconnect".into()
            )
        );
        assert_eq!(
            r(ReplEvent::Note {
                name: "verify_done",
                detail: "3 blocks \"differ\"".into()
            })
            .1,
            "disk_note res=repl name=verify_done detail=\"3 blocks \\\"differ\\\"\""
        );
    }

    #[test]
    fn glue_lines_render_as_catalogued() {
        assert_eq!(
            line(DiskLine::Command {
                res: "repl",
                command: "primary",
                result: Err("the peer is Primary")
            }),
            (
                log::Level::Warn,
                "disk_command res=repl command=\"primary\" result=refused reason=\"the peer is Primary\"".into()
            )
        );
        assert_eq!(
            line(DiskLine::Handler {
                res: "repl",
                handler: "split-brain",
                result: "failed",
                code: Some(1),
                took_ms: 5
            }),
            (
                log::Level::Error,
                "disk_handler res=repl handler=split-brain result=failed code=1 took_ms=5".into()
            )
        );
        assert_eq!(
            line(DiskLine::Error {
                res: "repl",
                message: "no metadata on /dev/hda5: run bascule disk create-md repl"
            })
            .1,
            "disk_error res=repl message=\"no metadata on /dev/hda5: run bascule disk create-md repl\""
        );
    }

    /// A sparse backing file of `mb` MiB in a fresh temp dir (removed on drop).
    struct Backing(PathBuf);

    impl Backing {
        fn new(tag: &str, mb: u64) -> Backing {
            let dir =
                std::env::temp_dir().join(format!("bascule-rio-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let f = File::create(dir.join("hda5.img")).unwrap();
            f.set_len(mb << 20).unwrap();
            Backing(dir)
        }
        fn disk(&self) -> PathBuf {
            self.0.join("hda5.img")
        }
    }

    impl Drop for Backing {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn create_md_then_read_back_and_refuse_overwrite() {
        let b = Backing::new("md", 64);
        let store = Store::open(&b.disk(), &MetaDisk::Internal).unwrap();
        let e = store.read_md("repl").unwrap_err();
        assert!(e.contains("run bascule disk create-md repl"), "{e}");
        let out = create_md_on(&store, "repl", false).unwrap();
        let usable = store.layout.usable_bytes;
        assert!(usable > 60 << 20 && usable < 64 << 20, "{usable}");
        assert!(
            out.contains(&format!("usable size {} KiB", usable / 1024)),
            "{out}"
        );
        let (md, bitmap) = store.read_md("repl").unwrap();
        assert_eq!(md.usable_bytes, usable);
        assert!(!md.flags.consistent, "fresh metadata is Inconsistent");
        assert_eq!(bitmap.count(), 0);
        let refused = create_md_on(&store, "repl", false).unwrap_err();
        assert_eq!(refused.exit_code(), 10, "{refused}");
        assert!(refused.to_string().contains("--force"), "{refused}");
        create_md_on(&store, "repl", true).unwrap();
        // The data area is untouched by create-md: only the tail is written.
        let data_end = store.layout.usable_bytes;
        let mut probe = vec![1u8; 4096];
        store
            .data
            .read_exact_at(&mut probe, data_end - 4096)
            .unwrap();
        assert!(probe.iter().all(|b| *b == 0));
    }

    #[test]
    fn external_metadata_slot_and_size_checks() {
        let b = Backing::new("ext", 16);
        let meta = b.0.join("meta.img");
        File::create(&meta).unwrap().set_len(256 << 20).unwrap();
        let ext = MetaDisk::External {
            path: meta.clone(),
            index: Some(1),
        };
        let store = Store::open(&b.disk(), &ext).unwrap();
        assert_eq!(store.meta_base, EXTERNAL_SLOT_BYTES);
        assert_eq!(store.layout.usable_bytes, 16 << 20);
        create_md_on(&store, "r1", false).unwrap();
        assert!(store.read_md("r1").is_ok());
        // Slot 0 is still empty.
        let slot0 = MetaDisk::External {
            path: meta,
            index: Some(0),
        };
        let other = Store::open(&b.disk(), &slot0).unwrap();
        assert!(other.read_md("r1").unwrap_err().contains("create-md"));
        let missing = Store::open(&b.0.join("nope"), &MetaDisk::Internal).unwrap_err();
        assert!(missing.contains("cannot open"), "{missing}");
    }

    fn disks_with(slots: Vec<Slot>) -> (mio::Poll, Disks) {
        let poll = mio::Poll::new().unwrap();
        let registry = poll.registry().try_clone().unwrap();
        let disks = Disks {
            slots,
            runner: Runner::with_registry(registry, TOKEN_FIRST),
            handlers: Vec::new(),
        };
        (poll, disks)
    }

    fn cmd(line: &str) -> DiskCommand {
        crate::shell::cli::parse_disk(line.split_whitespace()).unwrap()
    }

    #[test]
    fn answers_without_disks_and_for_a_resource_that_could_not_start() {
        let now = Instant::from_millis(5);
        let (_poll, mut none) = disks_with(Vec::new());
        for line in ["status", "role all", "primary all", "secondary all"] {
            let a = none.answer(now, &cmd(line));
            assert!(a.starts_with("error: no replicated disk"), "{line}: {a}");
        }
        let failed = Slot::Failed(FailedDisk {
            name: "repl".into(),
            minor: 0,
            device: "/dev/drbd0".into(),
            error: "no metadata on /dev/hda5: run bascule disk create-md repl".into(),
        });
        let (_poll, mut disks) = disks_with(vec![failed]);
        let status = disks.answer(now, &cmd("status repl"));
        assert!(
            status.contains("error: no metadata on /dev/hda5"),
            "{status}"
        );
        let primary = disks.answer(now, &cmd("primary --force repl"));
        assert_eq!(
            primary,
            "refused: repl: no metadata on /dev/hda5: run bascule disk create-md repl\n"
        );
        // Nothing runs there, so stopping it (drbddisk stop) succeeds.
        assert_eq!(
            disks.answer(now, &cmd("secondary repl")),
            "ok: disk secondary repl\n"
        );
        assert_eq!(disks.answer(now, &cmd("role repl")), "Secondary removed\n");
        let unknown = disks.answer(now, &cmd("primary r9"));
        assert!(unknown.starts_with("error: no resource `r9`"), "{unknown}");
        assert!(disks
            .answer(now, &cmd("create-md repl"))
            .starts_with("error:"));
        let s = disks.status(now);
        assert_eq!((s[0].dstate.as_str(), s[0].exposed), ("Diskless", false));
    }

    #[test]
    fn device_busy_says_nothing_for_a_missing_or_plain_path() {
        assert_eq!(device_busy("/nonexistent/drbd0"), None);
        let b = Backing::new("busy", 1);
        assert_eq!(device_busy(b.disk().to_str().unwrap()), None);
    }

    #[test]
    fn minor_and_sizes() {
        assert_eq!(minor_of("/dev/drbd0", 9), 0);
        assert_eq!(minor_of("/dev/drbd12", 9), 12);
        assert_eq!(minor_of("/dev/mapper/x", 9), 9);
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }

    #[test]
    fn answers_map_to_exit_codes() {
        assert_eq!(check_answer("ok: x\n".into()).unwrap(), "ok: x\n");
        assert_eq!(
            check_answer("refused: repl: the peer is Primary\n".into())
                .unwrap_err()
                .exit_code(),
            10
        );
        assert_eq!(
            check_answer("error: no resource\n".into())
                .unwrap_err()
                .exit_code(),
            2
        );
    }

    #[test]
    fn select_by_name_or_all() {
        let spec = |n: &str| DiskSpec {
            name: n.into(),
            device: "/dev/drbd0".into(),
            disk: "/dev/hda5".into(),
            meta: MetaDisk::Internal,
        };
        let specs = [spec("repl"), spec("r1")];
        assert_eq!(select(&specs, &DiskTarget::All).unwrap().len(), 2);
        assert_eq!(
            select(&specs, &DiskTarget::One("r1".into())).unwrap()[0].name,
            "r1"
        );
        let e = select(&specs, &DiskTarget::One("x".into())).unwrap_err();
        assert!(e.to_string().contains("known: repl, r1"), "{e}");
    }
}
