//! Runs resource operations as child processes without blocking the loop.
//!
//! Layer: shell. May spawn processes, read their pipes and signal their process
//! groups; may not block (every pipe is non-blocking, reaping uses `WNOHANG`)
//! and never reads the clock: `now` is passed in by the loop.
//! Invariants: at most `OPS_MAX` children are tracked; a child is reported once
//! (`reap`), after which its pipes are closed; a child past its deadline gets
//! SIGKILL on its whole process group and is reported as `Timeout`.
//!
//! With a mio `Registry` (`Runner::with_registry`), the runner registers every
//! pipe itself under tokens `token_base .. token_base + TOKENS` and deregisters
//! it before closing it, so a reused fd number can never be confused: the loop
//! passes a readable token in that range to `on_token`. Without one (tests,
//! `Task::run_blocking`), `drain_all` polls every pipe. SIGCHLD (the loop's
//! signalfd) makes the loop call `reap(now)`; `poll_timeout()` and
//! `handle_timeout(now)` drive the deadlines.
//!
//! Orphan pipes: a script that starts a daemon often leaves it holding the
//! script's stdout/stderr. Closing our read end then would make the daemon's
//! next write fail with EPIPE or kill it with SIGPIPE (a web server logging
//! each request to stderr would break). So at `reap` a pipe not yet at EOF is
//! kept as an orphan, drained and discarded until its writers exit; at most
//! `ORPHANS_MAX` are kept, the oldest is closed first.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdin, Command, Stdio};

use crate::time::{Duration, Instant};

/// Concurrent operations: a group of GROUPS_MAX (8) groups stopping or starting
/// one resource each, plus monitors, fits twice over.
pub const OPS_MAX: usize = 16;
/// Bytes of stderr kept per operation: the tail is what explains a failure.
pub const STDERR_TAIL_MAX: usize = 4096;
/// Largest message written to a child's stdin (a mail); a fresh pipe holds 64 KiB,
/// so writing it at spawn never blocks.
pub const STDIN_MAX: usize = 16 * 1024;
/// Bytes read per `read` call while draining a pipe.
const READ_CHUNK: usize = 1024;
/// Reads per pipe per `on_readable`: bounds the work one chatty child costs.
const READS_PER_DRAIN_MAX: usize = 64;
/// Pipes kept open for daemons that inherited them (two per script at most):
/// eight services started by scripts that do not redirect their output.
pub const ORPHANS_MAX: usize = 16;
/// Tokens the runner uses from `token_base`: stdout and stderr of each slot,
/// then one per orphan.
pub const TOKENS: usize = 2 * OPS_MAX + ORPHANS_MAX;

/// Identifies one running operation (never reused within a `Runner`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub u64);

/// One command to run: the program, its arguments and limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpRequest {
    /// The program (an absolute path, or a name looked up in PATH).
    pub program: String,
    /// Arguments after the program.
    pub args: Vec<String>,
    /// Extra environment variables for the child.
    pub env: Vec<(String, String)>,
    /// Bytes written to stdin at spawn (then closed); stdin is /dev/null if None.
    pub stdin: Option<String>,
    /// After this long the process group is killed and the op is a `Timeout`.
    pub timeout: Duration,
}

impl OpRequest {
    /// A request with no environment and no stdin.
    pub fn new(program: &str, args: &[&str], timeout: Duration) -> OpRequest {
        OpRequest {
            program: program.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
            stdin: None,
            timeout,
        }
    }

    /// The command line as the log shows it: `ip addr add 10.0.0.1/24 ...`.
    pub fn command_line(&self) -> String {
        let mut out = self.program.clone();
        for arg in &self.args {
            out.push(' ');
            out.push_str(arg);
        }
        out
    }
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Exit status 0.
    Ok,
    /// A non-zero exit status.
    Failed {
        /// The exit code.
        code: i32,
    },
    /// Killed by a signal we did not send.
    Signal {
        /// The signal number.
        signal: i32,
    },
    /// Killed by us at its deadline.
    Timeout,
}

/// A finished operation, reported once by `reap`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpDone {
    /// The id `spawn` returned.
    pub id: OpId,
    /// How it ended.
    pub outcome: Outcome,
    /// The last `STDERR_TAIL_MAX` bytes of stderr (lossy UTF-8, trimmed).
    pub stderr_tail: String,
    /// From spawn to reap.
    pub took_ms: u64,
}

/// Why a child could not be started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpawnError {
    /// `OPS_MAX` operations already run.
    Busy,
    /// fork/exec failed (program missing, not executable...), with the errno.
    Exec(i32),
    /// The stdin message is longer than `STDIN_MAX` or the pipe took less.
    Stdin,
}

impl core::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        match self {
            SpawnError::Busy => write!(f, "{OPS_MAX} operations already running"),
            SpawnError::Exec(errno) => {
                write!(f, "exec failed: {}", io::Error::from_raw_os_error(*errno))
            }
            SpawnError::Stdin => write!(f, "stdin message longer than {STDIN_MAX} bytes"),
        }
    }
}

/// One tracked child.
struct Slot {
    id: OpId,
    child: Child,
    pipes: [Option<OwnedFd>; 2],
    tail: Vec<u8>,
    started: Instant,
    deadline: Instant,
    killed: bool,
}

/// Which pipe of a slot: stdout is read and discarded, stderr kept.
const STDOUT: usize = 0;
const STDERR: usize = 1;

/// A pipe outliving its op; `seq` orders them for eviction.
struct Orphan {
    pipe: OwnedFd,
    seq: u64,
}

/// The set of running operations.
pub struct Runner {
    slots: [Option<Slot>; OPS_MAX],
    orphans: [Option<Orphan>; ORPHANS_MAX],
    registry: Option<(mio::Registry, usize)>,
    next_id: u64,
    /// Orphans closed early because the table was full.
    pub orphans_evicted: u64,
}

impl Default for Runner {
    fn default() -> Self {
        Self::new()
    }
}

impl Runner {
    /// A runner whose pipes are polled by `drain_all` (tests, blocking use).
    pub fn new() -> Runner {
        Runner {
            slots: std::array::from_fn(|_| None),
            orphans: std::array::from_fn(|_| None),
            registry: None,
            next_id: 1,
            orphans_evicted: 0,
        }
    }

    /// A runner that registers its pipes with the loop's poll under tokens
    /// `token_base .. token_base + TOKENS`.
    pub fn with_registry(registry: mio::Registry, token_base: usize) -> Runner {
        Runner {
            registry: Some((registry, token_base)),
            ..Runner::new()
        }
    }

    /// Number of operations running (spawned and not yet reaped).
    pub fn running(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// Number of orphan pipes kept open.
    pub fn orphans(&self) -> usize {
        self.orphans.iter().flatten().count()
    }

    /// Starts `op` in its own process group, pipes non-blocking; never blocks.
    pub fn spawn(&mut self, op: OpRequest, now: Instant) -> Result<OpId, SpawnError> {
        let Some(index) = self.slots.iter().position(Option::is_none) else {
            return Err(SpawnError::Busy);
        };
        let stdin_bytes = op.stdin.as_deref().map(str::as_bytes);
        if stdin_bytes.is_some_and(|b| b.len() > STDIN_MAX) {
            return Err(SpawnError::Stdin);
        }
        let mut cmd = Command::new(&op.program);
        cmd.args(&op.args)
            .envs(op.env.iter().map(|(k, v)| (k, v)))
            .stdin(if stdin_bytes.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // The daemon blocks SIGTERM, SIGINT, SIGHUP and SIGCHLD for its signalfd,
        // and a blocked mask survives exec: a service started with it would
        // ignore `kill` (its stop script would wait, then SIGKILL it).
        // SAFETY: between fork and exec only async-signal-safe calls are allowed;
        // sigemptyset and sigprocmask are, and touch only the child's own mask.
        unsafe {
            cmd.pre_exec(|| {
                let mut empty: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut empty);
                if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| SpawnError::Exec(e.raw_os_error().unwrap_or(libc::EIO)))?;
        let pipes = [
            child.stdout.take().map(OwnedFd::from),
            child.stderr.take().map(OwnedFd::from),
        ];
        for fd in pipes.iter().flatten() {
            set_nonblocking(fd.as_raw_fd());
        }
        if let (Some(bytes), Some(stdin)) = (stdin_bytes, child.stdin.take()) {
            if write_all_nonblocking(stdin, bytes).is_err() {
                kill_group(&child);
                let _ = child.wait();
                return Err(SpawnError::Stdin);
            }
        }
        let id = OpId(self.next_id);
        self.next_id += 1;
        let slot = Slot {
            id,
            child,
            pipes,
            tail: Vec::with_capacity(STDERR_TAIL_MAX + READ_CHUNK),
            started: now,
            deadline: Instant::from_millis(now.millis().saturating_add(op.timeout.millis())),
            killed: false,
        };
        for (which, fd) in slot.pipes.iter().enumerate() {
            if let Some(fd) = fd {
                self.register(fd, 2 * index + which);
            }
        }
        self.slots[index] = Some(slot);
        Ok(id)
    }

    /// The pipe fds of `id` (stdout, stderr), for a loop that registers them
    /// itself (`Runner::new` only). Prefer `with_registry`: a pipe kept as an
    /// orphan at `reap` stays open under the loop's token, and only the runner
    /// knows when it closes.
    pub fn fds(&self, id: OpId) -> Vec<RawFd> {
        let Some(slot) = self.slots.iter().flatten().find(|s| s.id == id) else {
            return Vec::new();
        };
        slot.pipes
            .iter()
            .flatten()
            .map(AsRawFd::as_raw_fd)
            .collect()
    }

    /// Whether `token` is one of the runner's (with a registry).
    pub fn owns(&self, token: mio::Token) -> bool {
        self.registry
            .as_ref()
            .is_some_and(|(_, base)| (*base..*base + TOKENS).contains(&token.0))
    }

    /// Drains the pipe registered under `token`.
    pub fn on_token(&mut self, token: mio::Token) {
        let Some(offset) = self
            .registry
            .as_ref()
            .and_then(|(_, base)| token.0.checked_sub(*base))
        else {
            return;
        };
        if offset < 2 * OPS_MAX {
            self.drain_slot(offset / 2, offset % 2);
        } else if offset < TOKENS {
            self.drain_orphan(offset - 2 * OPS_MAX);
        }
    }

    /// Drains the pipe `fd` (stdout is discarded, stderr kept in the tail).
    pub fn on_readable(&mut self, fd: RawFd) {
        for index in 0..OPS_MAX {
            for which in [STDOUT, STDERR] {
                let matches = self.slots[index]
                    .as_ref()
                    .and_then(|s| s.pipes[which].as_ref())
                    .is_some_and(|p| p.as_raw_fd() == fd);
                if matches {
                    self.drain_slot(index, which);
                    return;
                }
            }
        }
        if let Some(j) = self
            .orphans
            .iter()
            .position(|o| o.as_ref().is_some_and(|o| o.pipe.as_raw_fd() == fd))
        {
            self.drain_orphan(j);
        }
    }

    /// Drains every pipe: for a loop that does not register them.
    pub fn drain_all(&mut self) {
        for index in 0..OPS_MAX {
            self.drain_slot(index, STDOUT);
            self.drain_slot(index, STDERR);
        }
        for j in 0..ORPHANS_MAX {
            self.drain_orphan(j);
        }
    }

    /// Reports the children that exited (waitpid WNOHANG on each tracked PID).
    pub fn reap(&mut self, now: Instant) -> impl Iterator<Item = OpDone> {
        let mut done = Vec::new();
        for index in 0..OPS_MAX {
            let status = match self.slots[index].as_mut().map(|s| s.child.try_wait()) {
                None | Some(Ok(None)) => continue,
                Some(Ok(Some(status))) => status,
                // ECHILD: someone else reaped it; report it as failed, never spin.
                Some(Err(_)) => std::process::ExitStatus::from_raw(0x7f00),
            };
            self.drain_slot(index, STDOUT);
            self.drain_slot(index, STDERR);
            let mut slot = self.slots[index].take().expect("checked above");
            for pipe in slot.pipes.iter_mut().filter_map(Option::take) {
                self.adopt(pipe);
            }
            let outcome = if slot.killed {
                Outcome::Timeout
            } else if let Some(code) = status.code() {
                if code == 0 {
                    Outcome::Ok
                } else {
                    Outcome::Failed { code }
                }
            } else {
                Outcome::Signal {
                    signal: status.signal().unwrap_or(0),
                }
            };
            done.push(OpDone {
                id: slot.id,
                outcome,
                stderr_tail: String::from_utf8_lossy(&slot.tail).trim().to_string(),
                took_ms: now.saturating_since(slot.started).millis(),
            });
        }
        done.sort_by_key(|d| d.id);
        done.into_iter()
    }

    /// The earliest deadline of a child not yet killed.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.slots
            .iter()
            .flatten()
            .filter(|s| !s.killed)
            .map(|s| s.deadline)
            .min()
    }

    /// Kills (SIGKILL, whole process group) every child past its deadline; each
    /// is then reported as `Timeout` by the next `reap`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for slot in self.slots.iter_mut().flatten() {
            if !slot.killed && slot.deadline <= now {
                kill_group(&slot.child);
                slot.killed = true;
            }
        }
    }

    /// Reads a slot's pipe until WouldBlock/EOF (bounded); EOF closes it.
    fn drain_slot(&mut self, index: usize, which: usize) {
        let Some(slot) = self.slots[index].as_mut() else {
            return;
        };
        let Some(pipe) = slot.pipes[which].as_ref() else {
            return;
        };
        let eof = drain(pipe, |bytes| {
            if which == STDERR {
                push_tail(&mut slot.tail, bytes);
            }
        });
        if eof {
            let pipe = slot.pipes[which].take().expect("checked above");
            self.close(pipe);
        }
    }

    fn drain_orphan(&mut self, j: usize) {
        let Some(orphan) = self.orphans[j].as_ref() else {
            return;
        };
        if drain(&orphan.pipe, |_| {}) {
            let orphan = self.orphans[j].take().expect("checked above");
            self.close(orphan.pipe);
        }
    }

    /// Keeps a pipe whose writers outlive the op (a daemon), evicting the
    /// oldest orphan when the table is full.
    fn adopt(&mut self, pipe: OwnedFd) {
        let j = match self.orphans.iter().position(Option::is_none) {
            Some(j) => j,
            None => {
                let oldest = (0..ORPHANS_MAX)
                    .min_by_key(|&j| self.orphans[j].as_ref().map_or(0, |o| o.seq))
                    .expect("ORPHANS_MAX > 0");
                let evicted = self.orphans[oldest].take().expect("table is full");
                self.close(evicted.pipe);
                self.orphans_evicted += 1;
                oldest
            }
        };
        self.deregister(&pipe);
        self.register(&pipe, 2 * OPS_MAX + j);
        self.orphans[j] = Some(Orphan {
            pipe,
            seq: self.next_id,
        });
        self.next_id += 1;
    }

    fn register(&self, fd: &OwnedFd, offset: usize) {
        assert!(offset < TOKENS);
        if let Some((registry, base)) = &self.registry {
            let token = mio::Token(base + offset);
            let source = &mut mio::unix::SourceFd(&fd.as_raw_fd());
            // A pipe that cannot be registered is still drained at reap.
            let _ = registry.register(source, token, mio::Interest::READABLE);
        }
    }

    fn deregister(&self, fd: &OwnedFd) {
        if let Some((registry, _)) = &self.registry {
            let _ = registry.deregister(&mut mio::unix::SourceFd(&fd.as_raw_fd()));
        }
    }

    /// Deregisters, then closes: the fd number is never reused while registered.
    fn close(&self, fd: OwnedFd) {
        self.deregister(&fd);
        drop(fd);
    }
}

/// Reads `pipe` until WouldBlock (bounded), handing bytes to `sink`; true at EOF.
fn drain(pipe: &OwnedFd, mut sink: impl FnMut(&[u8])) -> bool {
    let mut buf = [0u8; READ_CHUNK];
    for _ in 0..READS_PER_DRAIN_MAX {
        // SAFETY: buf is valid for READ_CHUNK bytes; the fd is open (owned).
        let n = unsafe { libc::read(pipe.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        match n {
            0 => return true,
            n if n > 0 => sink(&buf[..n as usize]),
            _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
            _ => return false,
        }
    }
    false
}

/// Appends to the tail, keeping its last `STDERR_TAIL_MAX` bytes.
fn push_tail(tail: &mut Vec<u8>, bytes: &[u8]) {
    tail.extend_from_slice(bytes);
    if tail.len() > STDERR_TAIL_MAX {
        let excess = tail.len() - STDERR_TAIL_MAX;
        tail.drain(..excess);
    }
    assert!(tail.len() <= STDERR_TAIL_MAX);
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on an fd we own; no memory is passed.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

/// Writes `bytes` to a fresh pipe without blocking, then closes it.
fn write_all_nonblocking(mut stdin: ChildStdin, bytes: &[u8]) -> io::Result<()> {
    set_nonblocking(stdin.as_raw_fd());
    stdin.write_all(bytes)
}

/// SIGKILL to the child's process group (its PID: it leads its own group).
fn kill_group(child: &Child) {
    let pgid = child.id() as libc::pid_t;
    assert!(pgid > 1, "a child never leads group 0 or 1");
    // SAFETY: kill has no memory preconditions; the group is our child's own.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant as StdInstant;

    const SECOND: Duration = Duration::from_secs(1);

    fn sh(script: &str, timeout: Duration) -> OpRequest {
        OpRequest::new("/bin/sh", &["-c", script], timeout)
    }

    /// Drives the runner like the loop would until `count` ops are done.
    fn run_until(runner: &mut Runner, count: usize) -> Vec<OpDone> {
        let origin = StdInstant::now();
        let mut done = Vec::new();
        while done.len() < count {
            let now = Instant::from_millis(origin.elapsed().as_millis() as u64);
            assert!(now.millis() < 10_000, "ops did not finish");
            runner.drain_all();
            runner.handle_timeout(now);
            done.extend(runner.reap(now));
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        done
    }

    // ==== Tests for the Running state ====

    #[test]
    fn running_exit_zero_reports_ok() {
        let mut r = Runner::new();
        let id = r.spawn(sh("exit 0", SECOND), Instant::ZERO).unwrap();
        let done = run_until(&mut r, 1);
        assert_eq!(done[0].id, id);
        assert_eq!(done[0].outcome, Outcome::Ok);
        assert_eq!(r.running(), 0);
    }

    #[test]
    fn running_exit_code_reports_failed_with_stderr() {
        let mut r = Runner::new();
        r.spawn(
            sh("echo out; echo 'boom here' >&2; exit 3", SECOND),
            Instant::ZERO,
        )
        .unwrap();
        let done = run_until(&mut r, 1);
        assert_eq!(done[0].outcome, Outcome::Failed { code: 3 });
        assert_eq!(done[0].stderr_tail, "boom here");
    }

    #[test]
    fn running_large_stderr_keeps_last_tail() {
        let mut r = Runner::new();
        let script = "i=0; while [ $i -lt 2000 ]; do echo line$i >&2; i=$((i+1)); done; exit 1";
        r.spawn(sh(script, Duration::from_secs(5)), Instant::ZERO)
            .unwrap();
        let done = run_until(&mut r, 1);
        assert!(done[0].stderr_tail.len() <= STDERR_TAIL_MAX);
        assert!(
            done[0].stderr_tail.ends_with("line1999"),
            "{}",
            done[0].stderr_tail
        );
    }

    #[test]
    fn running_past_deadline_kills_group_reports_timeout() {
        let mut r = Runner::new();
        // The grandchild `sleep` is in the group too: the kill reaches it.
        r.spawn(
            sh("sleep 30 & sleep 30", Duration::from_millis(100)),
            Instant::ZERO,
        )
        .unwrap();
        assert_eq!(r.poll_timeout(), Some(Instant::from_millis(100)));
        let start = StdInstant::now();
        let done = run_until(&mut r, 1);
        assert_eq!(done[0].outcome, Outcome::Timeout);
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn running_killed_by_other_signal_reports_signal() {
        let mut r = Runner::new();
        r.spawn(sh("kill -TERM $$", SECOND), Instant::ZERO).unwrap();
        let done = run_until(&mut r, 1);
        assert_eq!(
            done[0].outcome,
            Outcome::Signal {
                signal: libc::SIGTERM
            }
        );
    }

    #[test]
    fn running_stdin_message_reaches_child() {
        let mut r = Runner::new();
        let mut op = sh("read line; [ \"$line\" = hello ] || exit 9", SECOND);
        op.stdin = Some("hello\n".into());
        r.spawn(op, Instant::ZERO).unwrap();
        assert_eq!(run_until(&mut r, 1)[0].outcome, Outcome::Ok);
    }

    #[test]
    fn running_leader_exit_reported_while_grandchild_holds_pipes() {
        let mut r = Runner::new();
        // A script that starts a daemon keeping stdout/stderr: the op ends when
        // the script exits, not when the pipes close.
        r.spawn(
            sh("echo started >&2; sleep 30 & exit 0", SECOND),
            Instant::ZERO,
        )
        .unwrap();
        let start = StdInstant::now();
        let done = run_until(&mut r, 1);
        assert_eq!(done[0].outcome, Outcome::Ok);
        assert_eq!(done[0].stderr_tail, "started");
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
        // The daemon still holds both pipes: kept open, not closed under it.
        assert_eq!(r.orphans(), 2);
    }

    #[test]
    fn running_orphans_closed_at_eof_and_oldest_evicted_when_full() {
        let mut r = Runner::new();
        // Each daemon lives 0.3 s, holding both pipes.
        for _ in 0..(ORPHANS_MAX / 2 + 1) {
            r.spawn(sh("sleep 0.3 & exit 0", SECOND), Instant::ZERO)
                .unwrap();
        }
        run_until(&mut r, ORPHANS_MAX / 2 + 1);
        assert_eq!(r.orphans(), ORPHANS_MAX);
        assert_eq!(r.orphans_evicted, 2);
        let origin = StdInstant::now();
        while r.orphans() > 0 {
            assert!(
                origin.elapsed() < std::time::Duration::from_secs(5),
                "orphans never closed"
            );
            r.drain_all();
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn running_with_registry_drains_by_token() {
        let mut poll = mio::Poll::new().unwrap();
        let base = 100;
        let mut r = Runner::with_registry(poll.registry().try_clone().unwrap(), base);
        let id = r
            .spawn(sh("echo 'via token' >&2; exit 4", SECOND), Instant::ZERO)
            .unwrap();
        let mut events = mio::Events::with_capacity(8);
        let origin = StdInstant::now();
        let mut done = Vec::new();
        while done.is_empty() {
            assert!(origin.elapsed() < std::time::Duration::from_secs(5));
            poll.poll(&mut events, Some(std::time::Duration::from_millis(10)))
                .unwrap();
            for event in events.iter() {
                assert!(r.owns(event.token()));
                r.on_token(event.token());
            }
            done.extend(r.reap(Instant::ZERO));
        }
        assert!(!r.owns(mio::Token(base - 1)) && !r.owns(mio::Token(base + TOKENS)));
        assert_eq!(
            (done[0].id, done[0].outcome),
            (id, Outcome::Failed { code: 4 })
        );
        assert_eq!(done[0].stderr_tail, "via token");
    }

    // ==== Tests for the Idle state ====

    #[test]
    fn idle_missing_program_reports_exec_error() {
        let mut r = Runner::new();
        let op = OpRequest::new("/nonexistent/prog", &[], SECOND);
        assert_eq!(
            r.spawn(op, Instant::ZERO),
            Err(SpawnError::Exec(libc::ENOENT))
        );
        assert_eq!(r.running(), 0);
    }

    #[test]
    fn full_spawn_refused_busy_then_all_reaped() {
        let mut r = Runner::new();
        let mut ids = Vec::new();
        for i in 0..OPS_MAX {
            ids.push(
                r.spawn(sh(&format!("exit {}", i % 3), SECOND), Instant::ZERO)
                    .unwrap(),
            );
        }
        assert_eq!(
            r.spawn(sh("exit 0", SECOND), Instant::ZERO),
            Err(SpawnError::Busy)
        );
        let mut done = run_until(&mut r, OPS_MAX);
        done.sort_by_key(|d| d.id);
        for (i, d) in done.iter().enumerate() {
            assert_eq!(d.id, ids[i]);
            let want = match i % 3 {
                0 => Outcome::Ok,
                c => Outcome::Failed { code: c as i32 },
            };
            assert_eq!(d.outcome, want);
        }
        assert_eq!(r.running(), 0);
    }
}
