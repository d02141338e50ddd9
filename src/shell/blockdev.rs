//! The replicated device as a host block device at drbd.conf's `device` path.
//!
//! Layer: shell. The Primary serves its replicated disk over an NBD Unix socket;
//! this module turns that socket into a block device at the configured `device`
//! path (`/dev/drbd0`) so that `mkfs.ext3 /dev/drbd0` and `mount /dev/drbd0
//! /mnt/repl` work as in the guide. Two backends:
//!
//! - [`Backend::KernelNbd`], where the kernel has the `nbd` driver
//!   (`/sys/module/nbd` exists): `nbd-client -unix SOCK /dev/nbdN`, the device
//!   path a symlink to `/dev/nbdN`. Written from nbd-client's manual; this
//!   development machine has no nbd driver, so it is UNTESTED.
//! - [`Backend::FuseLoop`] everywhere else: `nbdfuse` serves the export as a
//!   file in a FUSE mount under a work directory, `losetup --direct-io=on`
//!   attaches a loop device to that file (direct I/O: no second page cache, and
//!   a flush of the file system reaches the NBD server as a flush), the device
//!   path a symlink to `/dev/loopN`. Tested by `tests/blockdev_expose.rs`.
//!
//! Setup and teardown run external programs that may take a while (nbdfuse
//! connects back to our own NBD server, so the loop must keep serving while they
//! run). The loop therefore never calls [`expose`] or [`Exposed::teardown`]
//! itself: it calls [`Job::expose`] / [`Job::teardown`], which run them on a
//! helper thread, and gets the outcome from [`Job::poll`] after the thread woke
//! it through its `mio::Waker`. Tests call the blocking functions directly.
//!
//! Invariants: every command runs with a deadline and is reaped, on timeout
//! too; the nbdfuse child is owned by [`Exposed`] and reaped by teardown or
//! drop; teardown refuses while a file system on the device is mounted (an
//! unmount is the Filesystem agent's job, done in haresources order); a FUSE
//! connection that stops answering is aborted (fusectl) rather than left with
//! callers in D state, since a dead nbdfuse under a mounted ext3 can hang
//! `sync` host-wide. A device path that exists and is not a symlink (a real
//! `/dev/drbd0` of a loaded drbd module) is never replaced.

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// How often a bounded wait looks at its child or file again.
const POLL_MS: u64 = 10;
/// Default deadline of one setup or teardown step (one command, or nbdfuse
/// becoming ready): seconds on a loaded 2-vCPU machine, never forever.
pub const STEP_TIMEOUT_MS: u64 = 15_000;
/// After fusermount -u (or an abort), how long nbdfuse gets to exit before its
/// FUSE connection is aborted and it is killed.
const NBDFUSE_EXIT_MS: u64 = 3_000;
/// Where the kernel publishes FUSE connections (fusectl).
const FUSECTL: &str = "/sys/fs/fuse/connections";
/// Name of the nbdfuse file inside its mount directory.
const FUSE_FILE: &str = "disk";
/// Bytes of a failed command's stderr kept in an error.
const STDERR_KEEP: usize = 400;
/// Files in the work dir naming the FUSE connection id and the loop device
/// while they exist. Once the daemon's mount namespace is gone nothing else
/// ties them to us (the loop's backing file then reads "/disk"), yet a FUSE
/// server that died under a mounted file system leaves its callers in D
/// state until someone aborts that connection: `scripts/lab` reads these.
pub const CONN_FILE: &str = "fuse.conn";
/// See [`CONN_FILE`].
pub const LOOP_FILE: &str = "loop.dev";

/// nbdfuse runs under this small shell (args: daemon pid, work dir, the
/// nbdfuse command). Seen on this kernel: when the daemon (the NBD server)
/// dies under a mounted ext3, nbdfuse exits and one of its threads deadlocks
/// in the kernel on its own FUSE connection (D state; `sync` and every
/// journal commit behind it hang host-wide). So the supervisor watches the
/// daemon: once it is gone while nbdfuse still runs, it aborts nbdfuse's
/// recorded connection (power-loss semantics: the device fails at once,
/// nothing waits). It never aborts after nbdfuse is gone (the id may be
/// reused), and it outlives nbdfuse in the mount namespace, so the namespace
/// is never torn down inside nbdfuse's own exit.
const SUPERVISOR_SH: &str = r#"d=$1 w=$2; shift 2
"$@" &
f=$!
state() { cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null; }
alive() { case $(state "$1") in ''|Z|X) return 1;; esac; }
abort() {
    c=$(cat "$w/fuse.conn" 2>/dev/null)
    [ -n "$c" ] && [ -e "/sys/fs/fuse/connections/$c/abort" ] && echo 1 >"/sys/fs/fuse/connections/$c/abort"
}
while alive "$d" && alive "$f"; do sleep 0.2; done
if alive "$f"; then abort; fi
# Exiting, but a thread still in the kernel after 1 s: stuck on its own
# connection (still nbdfuse's: it holds it until its last thread is gone).
n=0
while [ "$(state "$f")" = Z ] && [ "$(ls "/proc/$f/task" 2>/dev/null | wc -l)" -gt 1 ]; do
    n=$((n + 1))
    if [ "$n" -eq 5 ]; then abort; fi
    sleep 0.2
done
wait "$f""#;

/// How the device reaches the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The kernel's NBD client (`nbd-client`, `/dev/nbdN`). Untested here.
    KernelNbd,
    /// nbdfuse + a loop device with direct I/O.
    FuseLoop,
}

impl Backend {
    /// The kernel nbd driver when loaded, else FUSE + loop: hosts without the
    /// module (like the development VM, which cannot modprobe) still get a
    /// real block device.
    pub fn detect() -> Backend {
        if Path::new("/sys/module/nbd").exists() {
            Backend::KernelNbd
        } else {
            Backend::FuseLoop
        }
    }
}

/// What to expose where.
#[derive(Clone, Debug)]
pub struct ExposeSpec {
    /// The NBD server's Unix socket (the daemon's `disk-RES.sock`).
    pub socket: PathBuf,
    /// drbd.conf `device`: where the block device appears (`/dev/drbd0`).
    pub device: PathBuf,
    /// A private directory for the FUSE mount, pid file and nbdfuse's log (in
    /// the run dir); created if missing. Absolute, so that `lab down` can tell
    /// the loop device is the lab's from its backing file name.
    pub work_dir: PathBuf,
    /// Which backend; `Backend::detect()` unless a test forces one.
    pub backend: Backend,
    /// Deadline of each step.
    pub step_timeout: Duration,
}

impl ExposeSpec {
    /// A spec with the detected backend and the default step deadline.
    pub fn new(socket: PathBuf, device: PathBuf, work_dir: PathBuf) -> ExposeSpec {
        ExposeSpec {
            socket,
            device,
            work_dir,
            backend: Backend::detect(),
            step_timeout: Duration::from_millis(STEP_TIMEOUT_MS),
        }
    }
}

/// Why exposing or tearing down failed. Each says which step and path.
#[derive(Debug)]
pub enum BlockdevError {
    /// A program could not be started (not installed?).
    Spawn { program: String, err: io::Error },
    /// A step did not finish within its deadline (its process was killed).
    Timeout { step: &'static str },
    /// A command failed.
    Failed {
        step: &'static str,
        status: String,
        stderr: String,
    },
    /// A file operation failed.
    Io { path: PathBuf, err: io::Error },
    /// The device path exists and is not a symlink we may replace.
    DeviceExists { path: PathBuf },
    /// A file system on the device is still mounted: unmount it first.
    Busy { mountpoint: String },
    /// No free /dev/nbdN (kernel backend).
    NoNbdDevice,
}

impl fmt::Display for BlockdevError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockdevError::Spawn { program, err } => write!(f, "cannot run {program}: {err}"),
            BlockdevError::Timeout { step } => write!(f, "{step}: no answer in time"),
            BlockdevError::Failed {
                step,
                status,
                stderr,
            } => {
                write!(f, "{step} failed ({status}): {stderr}")
            }
            BlockdevError::Io { path, err } => write!(f, "{}: {err}", path.display()),
            BlockdevError::DeviceExists { path } => {
                write!(
                    f,
                    "{} exists and is not a symlink: not replacing it",
                    path.display()
                )
            }
            BlockdevError::Busy { mountpoint } => write!(f, "still mounted on {mountpoint}"),
            BlockdevError::NoNbdDevice => write!(f, "no free /dev/nbdN"),
        }
    }
}

impl std::error::Error for BlockdevError {}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BlockdevError + '_ {
    move |err| BlockdevError::Io {
        path: path.to_path_buf(),
        err,
    }
}

// ==== bounded commands ====

/// Runs a command to completion within `timeout`; kills and reaps it on
/// timeout. stdout is returned; stderr is kept for the error. Outputs here are
/// a line or two, far below a pipe's capacity, so reading after exit is safe.
fn run(
    step: &'static str,
    program: &str,
    args: &[&str],
    timeout: Duration,
) -> Result<String, BlockdevError> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| BlockdevError::Spawn {
            program: program.to_string(),
            err,
        })?;
    let status = wait_deadline(&mut child, timeout).ok_or(BlockdevError::Timeout { step })?;
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    if !status.success() {
        err.truncate(STDERR_KEEP);
        return Err(BlockdevError::Failed {
            step,
            status: status.to_string(),
            stderr: err.trim().to_string(),
        });
    }
    Ok(out)
}

/// Waits for `child` until `timeout`; on timeout kills it and reaps it (a
/// child in D state on a stuck FUSE request is not reaped: it is left to the
/// caller's abort, and None is returned either way).
fn wait_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(POLL_MS)),
            _ => {
                let _ = child.kill();
                // Bounded reap: SIGKILL ends it unless it is stuck in the kernel.
                let reap_by = Instant::now() + Duration::from_millis(NBDFUSE_EXIT_MS);
                while Instant::now() < reap_by {
                    if let Ok(Some(_)) = child.try_wait() {
                        break;
                    }
                    thread::sleep(Duration::from_millis(POLL_MS));
                }
                return None;
            }
        }
    }
}

// ==== mounts, loop devices, FUSE connections ====

/// One line of /proc/self/mountinfo: (major:minor, mount point, fs type).
fn mounts() -> Vec<(String, String, String)> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let dash = f.iter().position(|x| *x == "-")?;
            Some((
                f.get(2)?.to_string(),
                unescape(f.get(4)?),
                f.get(dash + 1)?.to_string(),
            ))
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = u32::from(b[i + 1] - b'0') * 64
                + u32::from(b[i + 2] - b'0') * 8
                + u32::from(b[i + 3] - b'0');
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The "major:minor" of a block device node (`/sys/block/NAME/dev`).
fn block_majmin(dev: &Path) -> Option<String> {
    let name = dev.file_name()?.to_str()?;
    Some(
        fs::read_to_string(format!("/sys/block/{name}/dev"))
            .ok()?
            .trim()
            .to_string(),
    )
}

/// Where a file system on `dev` is mounted in this mount namespace, if it is.
fn mounted_on(dev: &Path) -> Option<String> {
    let majmin = block_majmin(dev)?;
    mounts()
        .into_iter()
        .find(|(mm, _, _)| *mm == majmin)
        .map(|(_, mp, _)| mp)
}

/// The FUSE connection id of the FUSE mount at `mountpoint` (the minor of its
/// anonymous st_dev, the directory name under fusectl).
fn fuse_conn_of(mountpoint: &Path) -> Option<u32> {
    let mp = mountpoint.to_str()?;
    mounts()
        .into_iter()
        .find(|(_, m, t)| m == mp && (t == "fuse" || t.starts_with("fuse.")))
        .and_then(|(mm, _, _)| mm.strip_prefix("0:")?.parse().ok())
}

/// Aborts FUSE connection `conn`: every request waiting on it fails at once,
/// so nothing stays in D state behind a server that stopped answering. Mounts
/// fusectl first if nobody has.
fn abort_fuse(conn: u32, timeout: Duration) {
    let abort = PathBuf::from(format!("{FUSECTL}/{conn}/abort"));
    if !abort.exists() && !Path::new(FUSECTL).join(conn.to_string()).exists() {
        let _ = run(
            "mount fusectl",
            "mount",
            &["-t", "fusectl", "fusectl", FUSECTL],
            timeout,
        );
    }
    if abort.exists() {
        log::debug!("blockdev_fuse_abort conn={conn}");
        let _ = fs::write(&abort, b"1");
    }
}

/// Points `device` at `target` (a symlink), replacing only a stale symlink.
fn link_device(device: &Path, target: &Path) -> Result<(), BlockdevError> {
    match fs::symlink_metadata(device) {
        Ok(m) if m.file_type().is_symlink() => fs::remove_file(device).map_err(io_err(device))?,
        Ok(_) => {
            return Err(BlockdevError::DeviceExists {
                path: device.to_path_buf(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(BlockdevError::Io {
                path: device.to_path_buf(),
                err: e,
            })
        }
    }
    std::os::unix::fs::symlink(target, device).map_err(io_err(device))
}

/// Removes `device` if it is still our symlink to `target`.
fn unlink_device(device: &Path, target: &Path) {
    if fs::read_link(device).is_ok_and(|t| t == target) {
        let _ = fs::remove_file(device);
    }
}

// ==== the exposed device ====

/// A block device exposed at `spec.device`. Tear it down with
/// [`Exposed::teardown`]; dropping it does a forced, bounded cleanup (for
/// panics and daemon exit), which aborts the FUSE connection rather than wait
/// on it.
#[derive(Debug)]
pub struct Exposed {
    // Boxed parts keep `Exposed` small: teardown's error hands it back inside
    // a `Result` (the tuple API the loop's glue is built on).
    spec: Box<ExposeSpec>,
    /// `/dev/loopN` or `/dev/nbdN`: what `spec.device` points at.
    block: PathBuf,
    /// The FUSE side (FuseLoop only).
    fuse: Option<Box<FuseSide>>,
    /// Set once teardown completed: drop has nothing left to do.
    done: bool,
}

#[derive(Debug)]
struct FuseSide {
    /// The supervisor shell (see `SUPERVISOR_SH`); nbdfuse is its child.
    nbdfuse: Child,
    /// nbdfuse's own pid, from its pid file once it serves.
    pid: Option<u32>,
    mountpoint: PathBuf,
    conn: Option<u32>,
}

impl Exposed {
    /// The device path (drbd.conf `device`).
    pub fn device(&self) -> &Path {
        &self.spec.device
    }

    /// The kernel block device behind it (`/dev/loopN` or `/dev/nbdN`).
    pub fn block(&self) -> &Path {
        &self.block
    }

    /// The nbdfuse process id (FuseLoop), for diagnostics and tests.
    pub fn nbdfuse_pid(&self) -> Option<u32> {
        self.fuse.as_ref().and_then(|f| f.pid)
    }

    /// The FUSE connection id (FuseLoop), for diagnostics and tests.
    pub fn fuse_conn(&self) -> Option<u32> {
        self.fuse.as_ref().and_then(|f| f.conn)
    }

    /// Takes the device away: refuses while a file system on it is mounted
    /// (returns self with `Busy`), else removes the device link, detaches the
    /// loop device (or nbd-client -d), stops nbdfuse (fusermount3 -u, then
    /// abort, then SIGKILL: never SIGTERM) and removes its mount point.
    pub fn teardown(mut self) -> Result<(), (Exposed, BlockdevError)> {
        if let Some(mountpoint) = mounted_on(&self.block) {
            return Err((self, BlockdevError::Busy { mountpoint }));
        }
        let t = self.spec.step_timeout;
        unlink_device(&self.spec.device, &self.block);
        let block = self.block.to_string_lossy().into_owned();
        let detached = match self.spec.backend {
            Backend::KernelNbd => run("nbd-client -d", "nbd-client", &["-d", &block], t),
            Backend::FuseLoop => self.detach_loop(&block),
        };
        if let Err(error) = detached {
            return Err((self, error));
        }
        // Records last: the supervisor needs them if nbdfuse's exit sticks.
        self.stop_nbdfuse();
        self.forget_records();
        self.done = true;
        Ok(())
    }

    /// losetup -d, retried once after aborting the FUSE connection when the
    /// detach hangs on it (its final flush waits on nbdfuse).
    fn detach_loop(&mut self, block: &str) -> Result<String, BlockdevError> {
        let t = self.spec.step_timeout;
        if !self.loop_is_ours() {
            // Already detached (`lab down`, an admin): the number may even be
            // someone else's device by now, so never detach it blindly.
            return Ok(String::new());
        }
        match run("losetup -d", "losetup", &["-d", block], t) {
            Err(BlockdevError::Timeout { .. }) => {
                if let Some(conn) = self.fuse.as_ref().and_then(|f| f.conn) {
                    abort_fuse(conn, t);
                }
                run("losetup -d", "losetup", &["-d", block], t)
            }
            other => other,
        }
    }

    /// True while our loop device is still attached to our FUSE file: its
    /// backing file is that path, or, once the FUSE mount is detached from
    /// every namespace, the same file seen from its own root (`/disk`).
    fn loop_is_ours(&self) -> bool {
        let Some(name) = self.block.file_name().and_then(|n| n.to_str()) else {
            return false;
        };
        let Ok(back) = fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")) else {
            return false; // not attached
        };
        let back = back.trim_end_matches('\n');
        let file = self.fuse.as_ref().map(|f| f.mountpoint.join(FUSE_FILE));
        file.is_some_and(|f| Path::new(back) == f || back == format!("/{FUSE_FILE}"))
    }

    /// Removes the [`CONN_FILE`]/[`LOOP_FILE`] records once both are gone.
    fn forget_records(&self) {
        let _ = fs::remove_file(self.spec.work_dir.join(CONN_FILE));
        let _ = fs::remove_file(self.spec.work_dir.join(LOOP_FILE));
    }

    /// Stops nbdfuse and reaps it; bounded. A clean unmount first (nbdfuse
    /// exits by itself), then abort the connection, then SIGKILL.
    fn stop_nbdfuse(&mut self) {
        let t = self.spec.step_timeout;
        let Some(mut f) = self.fuse.take() else {
            return;
        };
        let exit = Duration::from_millis(NBDFUSE_EXIT_MS);
        let mp = f.mountpoint.to_string_lossy().into_owned();
        let _ = run("fusermount3 -u", "fusermount3", &["-u", &mp], t);
        // The supervisor exits right after nbdfuse (within its 0.2 s poll).
        if wait_exit(&mut f.nbdfuse, exit).is_none() {
            // No SIGTERM: nbdfuse exiting with its connection live can
            // deadlock on that connection (seen). Abort first; it then exits.
            if let Some(conn) = f.conn {
                abort_fuse(conn, t);
            }
            if wait_exit(&mut f.nbdfuse, exit).is_none() {
                signal_nbdfuse(&f, libc::SIGKILL);
                let _ = wait_exit(&mut f.nbdfuse, exit);
            }
        }
        if fuse_conn_of(&f.mountpoint).is_some() {
            let _ = run("umount -l", "umount", &["-l", &mp], t);
        }
        if let Some(conn) = f.conn {
            if Path::new(FUSECTL).join(conn.to_string()).exists()
                && fuse_conn_of(&f.mountpoint).is_none()
            {
                // Unmounted and its server gone, yet alive: held by a stuck request.
                abort_fuse(conn, t);
            }
        }
        let _ = fs::remove_dir(&f.mountpoint);
    }
}

/// Sends `sig` to nbdfuse itself (not its supervisor), if its pid is known
/// and it is still the supervisor's child.
fn signal_nbdfuse(f: &FuseSide, sig: libc::c_int) {
    let Some(pid) = f.pid else { return };
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let ppid = stat.rsplit(") ").next().and_then(|r| r.split(' ').nth(1));
    if ppid == Some(f.nbdfuse.id().to_string().as_str()) {
        // SAFETY: kill(2) on our supervisor's child, checked just above.
        unsafe { libc::kill(pid as libc::pid_t, sig) };
    }
}

/// Waits up to `timeout` for `child` to exit on its own (no kill).
fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(POLL_MS));
    }
}

impl Drop for Exposed {
    /// Forced cleanup when teardown did not run (a panic, daemon exit with the
    /// device still up). A mounted file system is not unmounted here (that may
    /// need a flush the server can no longer serve): the FUSE connection is
    /// aborted first so its I/O fails instead of hanging, then everything else
    /// goes, each step bounded.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let t = self
            .spec
            .step_timeout
            .min(Duration::from_millis(NBDFUSE_EXIT_MS));
        self.spec.step_timeout = t;
        unlink_device(&self.spec.device, &self.block);
        if mounted_on(&self.block).is_some() {
            if let Some(conn) = self.fuse.as_ref().and_then(|f| f.conn) {
                abort_fuse(conn, t);
            }
        }
        let block = self.block.to_string_lossy().into_owned();
        let _ = match self.spec.backend {
            _ if block.is_empty() => Ok(String::new()), // setup failed before it
            Backend::KernelNbd => run("nbd-client -d", "nbd-client", &["-d", &block], t),
            Backend::FuseLoop => self.detach_loop(&block),
        };
        let conn = self.fuse.as_ref().and_then(|f| f.conn);
        self.stop_nbdfuse();
        let attached = self.block.file_name().is_some_and(|n| {
            Path::new("/sys/block")
                .join(n)
                .join("loop/backing_file")
                .exists()
        });
        let alive = conn.is_some_and(|c| Path::new(FUSECTL).join(c.to_string()).exists());
        if !attached && !alive {
            self.forget_records(); // else left for `lab down` to find
        }
    }
}

// ==== a previous instance's leftovers ====

/// Cleans what a previous instance of the daemon left in `work_dir` when it
/// died without teardown (kill -9, crash): aborts its recorded FUSE connection
/// if it still exists and no mount in this namespace uses it (a dead server
/// under a mounted file system leaves its callers, `sync` included, in D
/// state until then), detaches its recorded loop device if that is still
/// attached to the old FUSE file, and removes the records. Bounded; call it
/// (off the loop) before the first [`expose`] after start-up.
pub fn clean_stale(work_dir: &Path, step_timeout: Duration) {
    let read = |name: &str| fs::read_to_string(work_dir.join(name)).ok();
    if let Some(conn) = read(CONN_FILE).and_then(|c| c.trim().parse::<u32>().ok()) {
        let in_use_here = mounts().iter().any(|(mm, _, _)| *mm == format!("0:{conn}"));
        if !in_use_here && Path::new(FUSECTL).join(conn.to_string()).exists() {
            abort_fuse(conn, step_timeout);
        }
    }
    if let Some(name) = read(LOOP_FILE).map(|n| n.trim().to_string()) {
        let back =
            fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).unwrap_or_default();
        let file = work_dir.join("mnt").join(FUSE_FILE);
        let back = back.trim_end_matches('\n');
        if name.starts_with("loop") && (Path::new(back) == file || back == format!("/{FUSE_FILE}"))
        {
            let dev = format!("/dev/{name}");
            let _ = run("losetup -d stale", "losetup", &["-d", &dev], step_timeout);
        }
    }
    let _ = fs::remove_file(work_dir.join(CONN_FILE));
    let _ = fs::remove_file(work_dir.join(LOOP_FILE));
}

// ==== setup ====

/// Exposes `spec.socket` at `spec.device`, blocking (up to a few step
/// deadlines). Call it from a helper thread ([`Job::expose`]) or a test.
pub fn expose(spec: &ExposeSpec) -> Result<Exposed, BlockdevError> {
    if let Ok(m) = fs::symlink_metadata(&spec.device) {
        if !m.file_type().is_symlink() {
            return Err(BlockdevError::DeviceExists {
                path: spec.device.clone(),
            });
        }
    }
    match spec.backend {
        Backend::FuseLoop => expose_fuse_loop(spec),
        Backend::KernelNbd => expose_kernel_nbd(spec),
    }
}

/// nbdfuse WORK/mnt/disk --unix SOCK, wait for its pid file, losetup with
/// direct I/O, symlink.
fn expose_fuse_loop(spec: &ExposeSpec) -> Result<Exposed, BlockdevError> {
    let t = spec.step_timeout;
    let mountpoint = spec.work_dir.join("mnt");
    fs::create_dir_all(&mountpoint).map_err(io_err(&mountpoint))?;
    if fuse_conn_of(&mountpoint).is_some() {
        // A stale mount of a crashed run: lazily detach it (its server is gone).
        let _ = run(
            "umount -l stale",
            "umount",
            &["-l", &mountpoint.to_string_lossy()],
            t,
        );
    }
    let pidfile = spec.work_dir.join("nbdfuse.pid");
    let logfile = spec.work_dir.join("nbdfuse.log");
    let _ = fs::remove_file(&pidfile);
    let log = fs::File::create(&logfile).map_err(io_err(&logfile))?;
    let log2 = log.try_clone().map_err(io_err(&logfile))?;
    let file = mountpoint.join(FUSE_FILE);
    let _ = fs::remove_file(spec.work_dir.join(CONN_FILE)); // never a stale id
    let nbdfuse = Command::new("sh")
        .arg("-c")
        .arg(SUPERVISOR_SH)
        .arg("bascule-nbdfuse")
        .arg(std::process::id().to_string())
        .arg(&spec.work_dir)
        .arg("nbdfuse")
        .arg("-P")
        .arg(&pidfile)
        .arg(&file)
        .arg("--unix")
        .arg(&spec.socket)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|err| BlockdevError::Spawn {
            program: "nbdfuse".into(),
            err,
        })?;
    let mut exposed = Exposed {
        spec: Box::new(spec.clone()),
        block: PathBuf::new(),
        fuse: Some(Box::new(FuseSide {
            nbdfuse,
            pid: None,
            mountpoint: mountpoint.clone(),
            conn: None,
        })),
        done: false,
    };
    wait_nbdfuse_ready(&mut exposed, &pidfile, &logfile)?;
    let conn = fuse_conn_of(&mountpoint);
    if let Some(f) = exposed.fuse.as_mut() {
        f.conn = conn;
    }
    if let Some(c) = conn {
        let _ = fs::write(spec.work_dir.join(CONN_FILE), format!("{c}\n"));
    }
    let out = run(
        "losetup",
        "losetup",
        &[
            "--find",
            "--show",
            "--direct-io=on",
            &file.to_string_lossy(),
        ],
        t,
    )?;
    let block = PathBuf::from(out.trim());
    if !block.starts_with("/dev") {
        return Err(BlockdevError::Failed {
            step: "losetup",
            status: "ok".into(),
            stderr: out,
        });
    }
    if let Some(name) = block.file_name() {
        let _ = fs::write(
            spec.work_dir.join(LOOP_FILE),
            format!("{}\n", name.to_string_lossy()),
        );
    }
    exposed.block = block;
    link_device(&spec.device, &exposed.block)?;
    Ok(exposed)
}

/// Ready when nbdfuse wrote its pid file (it does so once it serves) and the
/// FUSE mount is listed; an early exit or the deadline is an error carrying
/// nbdfuse's log. The caller's `exposed` reaps it on drop.
fn wait_nbdfuse_ready(
    exposed: &mut Exposed,
    pidfile: &Path,
    logfile: &Path,
) -> Result<(), BlockdevError> {
    let deadline = Instant::now() + exposed.spec.step_timeout;
    let f = exposed.fuse.as_mut().expect("fuse side set before waiting");
    loop {
        if fs::metadata(pidfile).is_ok_and(|m| m.len() > 0) && fuse_conn_of(&f.mountpoint).is_some()
        {
            f.pid = fs::read_to_string(pidfile)
                .ok()
                .and_then(|p| p.trim().parse().ok());
            return Ok(());
        }
        if let Ok(Some(status)) = f.nbdfuse.try_wait() {
            let mut log = fs::read_to_string(logfile).unwrap_or_default();
            log.truncate(STDERR_KEEP);
            return Err(BlockdevError::Failed {
                step: "nbdfuse",
                status: status.to_string(),
                stderr: log,
            });
        }
        if Instant::now() >= deadline {
            return Err(BlockdevError::Timeout { step: "nbdfuse" });
        }
        thread::sleep(Duration::from_millis(POLL_MS));
    }
}

/// nbd-client -unix SOCK /dev/nbdN, symlink. UNTESTED (no nbd driver on the
/// development machine): written from nbd-client(8) 3.24's synopsis,
/// `nbd-client -unix path nbd-device [-block-size N]`, `nbd-client -d dev`.
fn expose_kernel_nbd(spec: &ExposeSpec) -> Result<Exposed, BlockdevError> {
    let block = free_nbd_device().ok_or(BlockdevError::NoNbdDevice)?;
    let dev = block.to_string_lossy().into_owned();
    let sock = spec.socket.to_string_lossy().into_owned();
    run(
        "nbd-client",
        "nbd-client",
        &["-unix", &sock, &dev, "-b", "4096"],
        spec.step_timeout,
    )?;
    let exposed = Exposed {
        spec: Box::new(spec.clone()),
        block,
        fuse: None,
        done: false,
    };
    link_device(&spec.device, &exposed.block)?;
    Ok(exposed)
}

/// The first /dev/nbdN with no client attached (no `pid` in sysfs).
fn free_nbd_device() -> Option<PathBuf> {
    (0..256)
        .map(|n| (n, PathBuf::from(format!("/sys/block/nbd{n}"))))
        .take_while(|(_, p)| p.exists())
        .find(|(_, p)| !p.join("pid").exists())
        .map(|(n, _)| PathBuf::from(format!("/dev/nbd{n}")))
        .filter(|p| fs::metadata(p).is_ok_and(|m| m.file_type().is_block_device()))
}

// ==== off the loop: a helper thread per job ====

/// What a finished [`Job`] hands back.
#[derive(Debug)]
pub enum JobResult {
    /// From [`Job::expose`].
    Exposed(Result<Exposed, BlockdevError>),
    /// From [`Job::teardown`]; on failure the device is handed back (still up).
    TornDown(Result<(), (Exposed, BlockdevError)>),
}

/// A setup or teardown running on a helper thread so the loop never waits on
/// nbdfuse, losetup or nbd-client. The thread wakes the loop when done; the
/// loop then calls [`Job::poll`]. At most one job per device at a time (the
/// caller's state machine ensures it).
#[derive(Debug)]
pub struct Job {
    rx: mpsc::Receiver<JobResult>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Job {
    /// Starts exposing `spec` on a helper thread.
    pub fn expose(spec: ExposeSpec, waker: Arc<mio::Waker>) -> Job {
        Job::spawn(waker, move || JobResult::Exposed(expose(&spec)))
    }

    /// Starts tearing `exposed` down on a helper thread.
    pub fn teardown(exposed: Exposed, waker: Arc<mio::Waker>) -> Job {
        Job::spawn(waker, move || JobResult::TornDown(exposed.teardown()))
    }

    fn spawn(waker: Arc<mio::Waker>, work: impl FnOnce() -> JobResult + Send + 'static) -> Job {
        let (tx, rx) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("blockdev".into())
            .spawn(move || {
                let _ = tx.send(work());
                let _ = waker.wake();
            })
            .expect("spawn the blockdev helper thread");
        Job {
            rx,
            thread: Some(thread),
        }
    }

    /// The result once the job finished (never blocks); None while it runs.
    pub fn poll(&mut self) -> Option<JobResult> {
        let r = self.rx.try_recv().ok()?;
        if let Some(t) = self.thread.take() {
            let _ = t.join(); // it has sent its result: it is exiting
        }
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_teardown_is_cheap_to_return() {
        // clippy's result_large_err limit: the tuple must stay below 128 bytes.
        let size = std::mem::size_of::<(Exposed, BlockdevError)>();
        assert!(size < 128, "(Exposed, BlockdevError) is {size} bytes");
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape(r"/srv/my\040data"), "/srv/my data");
        assert_eq!(unescape(r"/a\134b"), r"/a\b");
        assert_eq!(unescape(r"/trailing\04"), r"/trailing\04");
    }

    #[test]
    fn a_real_file_at_the_device_path_is_never_replaced() {
        let dir =
            std::env::temp_dir().join(format!("bascule-blockdev-unit-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let dev = dir.join("drbd0");
        fs::write(&dev, b"not a symlink").unwrap();
        let err = link_device(&dev, Path::new("/dev/loop7")).unwrap_err();
        assert!(matches!(err, BlockdevError::DeviceExists { .. }), "{err}");
        fs::remove_file(&dev).unwrap();
        std::os::unix::fs::symlink("/dev/loop3", &dev).unwrap();
        link_device(&dev, Path::new("/dev/loop7")).unwrap();
        assert_eq!(fs::read_link(&dev).unwrap(), Path::new("/dev/loop7"));
        unlink_device(&dev, Path::new("/dev/loop6"));
        assert!(fs::symlink_metadata(&dev).is_ok(), "not ours: kept");
        unlink_device(&dev, Path::new("/dev/loop7"));
        assert!(fs::symlink_metadata(&dev).is_err(), "ours: removed");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_command_past_its_deadline_is_killed_and_reported() {
        let t0 = Instant::now();
        let err = run("sleep", "sleep", &["30"], Duration::from_millis(200)).unwrap_err();
        assert!(
            matches!(err, BlockdevError::Timeout { step: "sleep" }),
            "{err}"
        );
        assert!(t0.elapsed() < Duration::from_secs(5));
        let err = run("false", "false", &[], Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, BlockdevError::Failed { .. }), "{err}");
    }
}
