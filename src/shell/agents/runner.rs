//! Runs resource operations as child processes without blocking the loop.
//!
//! Layer: shell. May spawn processes, read their pipes and signal their process
//! groups; may not block (every pipe is non-blocking, reaping uses `WNOHANG`)
//! and never reads the clock: `now` is passed in by the loop.
//! Invariants: at most `OPS_MAX` children are tracked; a child is reported once
//! (`reap`), after which its pipes are closed; a child past its deadline gets
//! SIGKILL on its whole process group and is reported as `Timeout`.
//!
//! The loop registers `fds(id)` for readability and calls `on_readable(fd)`;
//! SIGCHLD (through its signalfd) makes it call `reap(now)`; `poll_timeout()` and
//! `handle_timeout(now)` drive the deadlines. Closing a pipe removes it from
//! epoll, so dropping the child's fds at `reap` needs no deregistration, but the
//! loop should deregister its token anyway before reusing it.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};

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
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    tail: Vec<u8>,
    started: Instant,
    deadline: Instant,
    killed: bool,
}

/// The set of running operations.
pub struct Runner {
    slots: Vec<Slot>,
    next_id: u64,
}

impl Default for Runner {
    fn default() -> Self {
        Self::new()
    }
}

impl Runner {
    /// An empty runner; its slot table is allocated once, here.
    pub fn new() -> Runner {
        Runner {
            slots: Vec::with_capacity(OPS_MAX),
            next_id: 1,
        }
    }

    /// Number of operations running (spawned and not yet reaped).
    pub fn running(&self) -> usize {
        self.slots.len()
    }

    /// Starts `op` in its own process group, pipes non-blocking; never blocks.
    pub fn spawn(&mut self, op: OpRequest, now: Instant) -> Result<OpId, SpawnError> {
        if self.slots.len() >= OPS_MAX {
            return Err(SpawnError::Busy);
        }
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
        let mut child = cmd
            .spawn()
            .map_err(|e| SpawnError::Exec(e.raw_os_error().unwrap_or(libc::EIO)))?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        for fd in [
            stdout.as_ref().map(AsRawFd::as_raw_fd),
            stderr.as_ref().map(AsRawFd::as_raw_fd),
        ]
        .into_iter()
        .flatten()
        {
            set_nonblocking(fd);
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
        self.slots.push(Slot {
            id,
            child,
            stdout,
            stderr,
            tail: Vec::with_capacity(STDERR_TAIL_MAX + READ_CHUNK),
            started: now,
            deadline: Instant::from_millis(now.millis().saturating_add(op.timeout.millis())),
            killed: false,
        });
        assert!(self.slots.len() <= OPS_MAX);
        Ok(id)
    }

    /// The pipe fds of `id` (stdout, stderr) to register for readability.
    pub fn fds(&self, id: OpId) -> Vec<RawFd> {
        let Some(slot) = self.slots.iter().find(|s| s.id == id) else {
            return Vec::new();
        };
        let out = slot.stdout.as_ref().map(AsRawFd::as_raw_fd);
        let err = slot.stderr.as_ref().map(AsRawFd::as_raw_fd);
        [out, err].into_iter().flatten().collect()
    }

    /// Drains the pipe `fd` (stdout is discarded, stderr kept in the tail).
    pub fn on_readable(&mut self, fd: RawFd) {
        for slot in &mut self.slots {
            let is_out = slot.stdout.as_ref().is_some_and(|p| p.as_raw_fd() == fd);
            let is_err = slot.stderr.as_ref().is_some_and(|p| p.as_raw_fd() == fd);
            if is_out || is_err {
                slot.drain(is_err);
                return;
            }
        }
    }

    /// Drains every pipe: for a loop that does not register them one by one.
    pub fn drain_all(&mut self) {
        for slot in &mut self.slots {
            slot.drain(false);
            slot.drain(true);
        }
    }

    /// Reports the children that exited (waitpid WNOHANG on each tracked PID).
    pub fn reap(&mut self, now: Instant) -> impl Iterator<Item = OpDone> {
        let mut done = Vec::new();
        let mut index = 0;
        while index < self.slots.len() {
            let status = match self.slots[index].child.try_wait() {
                Ok(Some(status)) => Some(status),
                Ok(None) => None,
                // ECHILD: someone else reaped it; report it as failed, never spin.
                Err(_) => Some(std::process::ExitStatus::from_raw(0x7f00)),
            };
            let Some(status) = status else {
                index += 1;
                continue;
            };
            let mut slot = self.slots.swap_remove(index);
            slot.drain(false);
            slot.drain(true);
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
            .filter(|s| !s.killed)
            .map(|s| s.deadline)
            .min()
    }

    /// Kills (SIGKILL, whole process group) every child past its deadline; each
    /// is then reported as `Timeout` by the next `reap`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for slot in &mut self.slots {
            if !slot.killed && slot.deadline <= now {
                kill_group(&slot.child);
                slot.killed = true;
            }
        }
    }
}

impl Slot {
    /// Reads a pipe until WouldBlock/EOF (bounded); EOF closes it.
    fn drain(&mut self, stderr: bool) {
        let mut buf = [0u8; READ_CHUNK];
        for _ in 0..READS_PER_DRAIN_MAX {
            let result = match (stderr, &mut self.stdout, &mut self.stderr) {
                (false, Some(pipe), _) => pipe.read(&mut buf),
                (true, _, Some(pipe)) => pipe.read(&mut buf),
                _ => return,
            };
            match result {
                Ok(0) => {
                    if stderr {
                        self.stderr = None
                    } else {
                        self.stdout = None
                    }
                    return;
                }
                Ok(n) if stderr => push_tail(&mut self.tail, &buf[..n]),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }
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
