//! Resource agents: what starting, stopping and checking one haresources
//! resource means on this host.
//!
//! Layer: shell. An agent turns `(ResourceSpec, Op)` into a `Task`: either an
//! answer known at once (a VIP's status read with getifaddrs, a refused
//! `drbddisk`) or a short sequence of commands (`fsck` then `mount`) that the
//! loop runs through `runner::Runner` without blocking. The task decides what
//! each exit code means; the loop only spawns, reaps and feeds results back:
//!
//! ```text
//! let mut task = Task::new(&spec, Op::Start, &ctx);
//! loop { match task.poll() {
//!     Next::Spawn(req) => match runner.spawn(req, now) { Ok(id) => /* wait for OpDone */,
//!                                                       Err(e) => task.on_spawn_error(e) },
//!     Next::Done(result) => break result, // Finished{garp: Some(..)} → start a garp::Garp
//! } }
//! // on OpDone for id: task.on_done(&done)
//! ```
//!
//! Arguments come checked and typed from the parser (`ResourceSpec::typed`);
//! agents never re-parse them, they only look at the host.
//! Agents: `IPaddr`/`IPaddr2` (ipaddr.rs, GARP in garp.rs), `Filesystem`
//! (filesystem.rs), `MailTo` (mailto.rs), anything else is a script or a
//! systemd unit (script.rs). `drbddisk` runs this binary's `disk` client
//! against the daemon's control socket, as Heartbeat's drbddisk ran `drbdadm`
//! (the loop stays free to answer it): start = `disk primary --wait`, stop =
//! `disk secondary --wait`, status = `disk role`.
//! Invariants: a task spawns at most one command at a time and ends exactly
//! once with `Next::Done`; a stop of something not running succeeds (stop is
//! idempotent, so a retried stop never fails for having worked the first time).

pub mod filesystem;
pub mod garp;
pub mod ipaddr;
pub mod mailto;
pub mod runner;
pub mod script;

use core::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::config::{Resource, ResourceSpec};
use crate::time::Duration;
use runner::{OpDone, OpRequest, Outcome, SpawnError};

/// Longest a command of an agent may run before its process group is killed:
/// an fsck of a big non-journaled disk is the slow case Heartbeat knew.
pub const OP_TIMEOUT_DEFAULT: Duration = Duration::from_secs(300);
/// Longest the start-up check waits for a script's `status`.
pub const STARTUP_STATUS_TIMEOUT: Duration = Duration::from_secs(10);
/// Where Heartbeat and LSB keep service scripts, after `<config-dir>/resource.d`.
pub const INIT_D: &str = "/etc/init.d";
/// Exists when systemd is PID 1 (what `sd_booted()` checks).
pub const SYSTEMD_RUN_DIR: &str = "/run/systemd/system";

/// What to do with a resource: the takeover machine's own `Op`, so an action
/// needs no translation on its way to an agent.
pub use crate::core::takeover::Op;

/// A resource's state as an op left it (or `status` found it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceState {
    /// Active on this node.
    Running,
    /// Not active on this node.
    Stopped,
}

/// A success that the operator should still hear about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Warning {
    /// MailTo found no `/usr/sbin/sendmail`: no mail was sent.
    NoSendmail,
}

impl Warning {
    /// The text for the log.
    pub const fn message(self) -> &'static str {
        match self {
            Warning::NoSendmail => "no /usr/sbin/sendmail: no mail sent",
        }
    }
}

/// A VIP that was just added: the loop starts a `garp::Garp` for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GarpTarget {
    /// The base interface (`eth0`).
    pub iface: String,
    /// The address to announce.
    pub vip: Ipv4Addr,
}

/// A successful op.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finished {
    /// The resource's state afterwards (for `status`: what was found).
    pub state: ResourceState,
    /// Set when it worked but with something to report.
    pub warning: Option<Warning>,
    /// Set after an IPaddr start.
    pub garp: Option<GarpTarget>,
    /// Sum of the commands' run times.
    pub took_ms: u64,
}

impl Finished {
    /// What a successful `op` leaves: stopped after a stop, running otherwise.
    pub(crate) fn after(op: Op) -> Finished {
        Finished::state(if op == Op::Stop {
            ResourceState::Stopped
        } else {
            ResourceState::Running
        })
    }

    fn state(state: ResourceState) -> Finished {
        Finished {
            state,
            warning: None,
            garp: None,
            took_ms: 0,
        }
    }
}

/// What went wrong, as a value tests and the log can match on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The resource is not supported by this version (`drbddisk`).
    Refused,
    /// No interface carries a subnet containing the VIP.
    NoInterface,
    /// No script in resource.d or init.d and no systemd unit.
    NoScript,
    /// A command exited non-zero.
    Exit,
    /// A command was killed by a signal.
    Signal,
    /// A command ran past its deadline and was killed.
    Timeout,
    /// A command could not be started.
    Spawn,
    /// `status` answered neither running (0) nor stopped (3).
    StatusUnknown,
}

impl ErrorKind {
    /// The `result=` word of the log line.
    pub const fn name(self) -> &'static str {
        match self {
            ErrorKind::Refused => "refused",
            ErrorKind::NoInterface => "no_interface",
            ErrorKind::NoScript => "no_script",
            ErrorKind::Exit => "failed",
            ErrorKind::Signal => "signal",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Spawn => "spawn_failed",
            ErrorKind::StatusUnknown => "status_unknown",
        }
    }
}

/// A failed op with everything the log needs: which resource, which command,
/// its exit code and its stderr.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// The resource as written in haresources.
    pub resource: String,
    /// The op that failed.
    pub op: Op,
    /// The command line, when a command ran.
    pub cmd: Option<String>,
    /// The exit code (or signal number for `Signal`).
    pub code: Option<i32>,
    /// The command's stderr tail, or a sentence for errors without a command.
    pub stderr: String,
    /// Milliseconds spent before the failure.
    pub took_ms: u64,
}

impl AgentError {
    /// An error found without running anything.
    pub fn plain(kind: ErrorKind, spec: &ResourceSpec, op: Op, message: String) -> AgentError {
        AgentError {
            kind,
            resource: spec.text.clone(),
            op,
            cmd: None,
            code: None,
            stderr: message,
            took_ms: 0,
        }
    }
}

/// `resource=R op=start result=failed cmd="..." code=1 stderr="..."`.
impl fmt::Display for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "resource={} op={} result={}",
            self.resource,
            self.op,
            self.kind.name()
        )?;
        if let Some(cmd) = &self.cmd {
            write!(f, " cmd=")?;
            write_quoted(f, cmd)?;
        }
        if let Some(code) = self.code {
            write!(f, " code={code}")?;
        }
        write!(f, " stderr=")?;
        write_quoted(f, &self.stderr)?;
        write!(f, " took_ms={}", self.took_ms)
    }
}

/// Writes `"text"` with `"` and `\` escaped and newlines as ` | `.
pub fn write_quoted(out: &mut impl fmt::Write, text: &str) -> fmt::Result {
    out.write_char('"')?;
    for c in text.chars() {
        match c {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            '\n' => out.write_str(" | ")?,
            c if c.is_control() => out.write_char(' ')?,
            c => out.write_char(c)?,
        }
    }
    out.write_char('"')
}

/// Host facts and settings every agent reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentContext {
    /// The configuration directory (`/etc/ha.d`); scripts are in `resource.d/`.
    pub config_dir: PathBuf,
    /// The LSB script directory (`/etc/init.d`; a test may point elsewhere).
    pub init_d: PathBuf,
    /// systemd is PID 1: units are a fallback for names without a script.
    pub systemd: bool,
    /// The MTA entry point MailTo uses.
    pub sendmail: PathBuf,
    /// This node's name, for mail subjects.
    pub node: String,
    /// Per-command deadline.
    pub timeout: Duration,
    /// How the drbddisk agent reaches the daemon (None: drbddisk refused).
    pub disk_cli: Option<DiskCli>,
}

/// This binary and the global options that reach the running daemon: what the
/// drbddisk agent runs (`bascule --run-dir R ... disk primary --wait S RES`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskCli {
    /// The bascule binary (`/proc/self/exe` resolved at start-up).
    pub program: String,
    /// `--config-dir C --node N --run-dir R`.
    pub global: Vec<String>,
}

/// Longest the drbddisk agent retries a refused promotion (the peer still
/// demoting after a switchover) and waits for the device; Heartbeat's
/// drbddisk tried 6 times a second apart, exposure adds a mount of nbdfuse.
pub const DRBDDISK_WAIT: Duration = Duration::from_secs(60);

impl AgentContext {
    /// The context of this host for `config_dir`.
    pub fn detect(config_dir: PathBuf, node: String) -> AgentContext {
        AgentContext {
            config_dir,
            init_d: PathBuf::from(INIT_D),
            systemd: std::path::Path::new(SYSTEMD_RUN_DIR).is_dir(),
            sendmail: PathBuf::from(mailto::SENDMAIL),
            node,
            timeout: OP_TIMEOUT_DEFAULT,
            disk_cli: None,
        }
    }
}

/// How a step's outcome is judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Accept {
    /// Exit 0 only.
    Zero,
    /// fsck: 0 clean, 1 errors corrected, 2 reboot advised, 3 = 1|2; 4+ fails.
    Fsck,
    /// Anything, even a failure to spawn (best effort: `fuser -km`).
    Any,
    /// LSB status: 0 running, 3 stopped, anything else an error.
    LsbStatus,
}

/// One command of a plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Step {
    pub(crate) req: OpRequest,
    pub(crate) accept: Accept,
    /// On failure, go back to this step once (umount after a second kill).
    pub(crate) retry_from: Option<usize>,
}

impl Step {
    pub(crate) fn new(req: OpRequest, accept: Accept) -> Step {
        Step {
            req,
            accept,
            retry_from: None,
        }
    }
}

/// What an agent decided: an answer now, or commands to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    Done(Result<Finished, AgentError>),
    Steps { steps: Vec<Step>, finish: Finished },
}

/// Retries of a step with `retry_from` per task.
const RETRIES_MAX: u32 = 1;

/// One op on one resource, driven by the loop.
#[derive(Debug)]
pub struct Task {
    resource: String,
    op: Op,
    plan: Option<Plan>,
    index: usize,
    retries: u32,
    waiting: bool,
    took_ms: u64,
}

/// What the loop should do next for a task.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Spawn this command, then call `on_done` (or `on_spawn_error`).
    Spawn(OpRequest),
    /// A command is running: wait for its `OpDone`.
    Wait,
    /// The op is over (reported once).
    Done(Result<Finished, AgentError>),
}

impl Task {
    /// Plans `op` on `spec` (reads the host: interfaces, mounts, script paths).
    pub fn new(spec: &ResourceSpec, op: Op, ctx: &AgentContext) -> Task {
        let plan = match &spec.typed {
            Resource::IpAddr { .. } => ipaddr::plan(spec, op, ctx),
            Resource::Filesystem { .. } => filesystem::plan(spec, op, ctx),
            Resource::MailTo { .. } => mailto::plan(spec, op, ctx),
            Resource::DrbdDisk { .. } => drbddisk_plan(spec, op, ctx),
            Resource::Script { .. } => script::plan(spec, op, ctx),
        };
        Task {
            resource: spec.text.clone(),
            op,
            plan: Some(plan),
            index: 0,
            retries: 0,
            waiting: false,
            took_ms: 0,
        }
    }

    /// The resource as written in haresources.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The op.
    pub fn op(&self) -> Op {
        self.op
    }

    /// The next thing to do (named `poll`, not `next`: it is no iterator); `Done` is returned once, then `Wait` forever.
    pub fn poll(&mut self) -> Next {
        if self.waiting {
            return Next::Wait;
        }
        match self.plan.take() {
            None => Next::Wait,
            Some(Plan::Done(result)) => Next::Done(result),
            Some(Plan::Steps { steps, mut finish }) => {
                if self.index < steps.len() {
                    let req = steps[self.index].req.clone();
                    self.plan = Some(Plan::Steps { steps, finish });
                    self.waiting = true;
                    Next::Spawn(req)
                } else {
                    finish.took_ms = self.took_ms;
                    Next::Done(Ok(finish))
                }
            }
        }
    }

    /// The command `poll` asked for ended.
    pub fn on_done(&mut self, done: &OpDone) {
        assert!(self.waiting, "on_done without a spawned command");
        self.waiting = false;
        self.took_ms += done.took_ms;
        let Some(Plan::Steps { steps, mut finish }) = self.plan.take() else {
            unreachable!("waiting implies a step plan");
        };
        let step = &steps[self.index];
        let failure = match (step.accept, done.outcome) {
            (Accept::Any, _) => None,
            (_, Outcome::Ok) => {
                finish.state = if self.op == Op::Stop {
                    ResourceState::Stopped
                } else {
                    ResourceState::Running
                };
                None
            }
            (Accept::Fsck, Outcome::Failed { code }) if code <= 3 => None,
            (Accept::LsbStatus, Outcome::Failed { code: 3 }) => {
                finish.state = ResourceState::Stopped;
                None
            }
            (Accept::LsbStatus, Outcome::Failed { .. }) => Some(ErrorKind::StatusUnknown),
            (_, Outcome::Failed { .. }) => Some(ErrorKind::Exit),
            (_, Outcome::Signal { .. }) => Some(ErrorKind::Signal),
            (_, Outcome::Timeout) => Some(ErrorKind::Timeout),
        };
        let Some(kind) = failure else {
            self.index += 1;
            self.plan = Some(Plan::Steps { steps, finish });
            return;
        };
        if let Some(back) = step.retry_from.filter(|_| self.retries < RETRIES_MAX) {
            self.retries += 1;
            self.index = back;
            self.plan = Some(Plan::Steps { steps, finish });
            return;
        }
        let code = match done.outcome {
            Outcome::Failed { code } => Some(code),
            Outcome::Signal { signal } => Some(signal),
            _ => None,
        };
        self.plan = Some(Plan::Done(Err(AgentError {
            kind,
            resource: self.resource.clone(),
            op: self.op,
            cmd: Some(step.req.command_line()),
            code,
            stderr: done.stderr_tail.clone(),
            took_ms: self.took_ms,
        })));
    }

    /// The command `poll` asked for could not be started.
    pub fn on_spawn_error(&mut self, err: SpawnError) {
        assert!(self.waiting, "on_spawn_error without a spawned command");
        self.waiting = false;
        let Some(Plan::Steps { steps, finish }) = self.plan.take() else {
            unreachable!("waiting implies a step plan");
        };
        let step = &steps[self.index];
        if step.accept == Accept::Any {
            self.index += 1;
            self.plan = Some(Plan::Steps { steps, finish });
            return;
        }
        self.plan = Some(Plan::Done(Err(AgentError {
            kind: ErrorKind::Spawn,
            resource: self.resource.clone(),
            op: self.op,
            cmd: Some(step.req.command_line()),
            code: None,
            stderr: err.to_string(),
            took_ms: self.took_ms,
        })));
    }

    /// Runs the task to its end, blocking (sleeping between polls): for the
    /// start-up check before the loop runs, for tools and for tests. Never
    /// call it from the loop.
    pub fn run_blocking(mut self, runner: &mut runner::Runner) -> Result<Finished, AgentError> {
        /// Between polls of the child.
        const POLL_MS: u64 = 5;
        let origin = std::time::Instant::now();
        let now = || crate::time::Instant::from_millis(origin.elapsed().as_millis() as u64);
        let mut id = None;
        loop {
            match self.poll() {
                Next::Done(result) => return result,
                Next::Spawn(req) => match runner.spawn(req, now()) {
                    Ok(spawned) => id = Some(spawned),
                    Err(e) => self.on_spawn_error(e),
                },
                Next::Wait => {
                    runner.drain_all();
                    runner.handle_timeout(now());
                    let done: Vec<OpDone> = runner.reap(now()).collect();
                    for d in done.iter().filter(|d| Some(d.id) == id) {
                        self.on_done(d);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(POLL_MS));
                }
            }
        }
    }
}

fn drbddisk_plan(spec: &ResourceSpec, op: Op, ctx: &AgentContext) -> Plan {
    let Resource::DrbdDisk { resource } = &spec.typed else {
        unreachable!("drbddisk_plan on {}", spec.text);
    };
    let Some(cli) = &ctx.disk_cli else {
        return match op {
            Op::Start => Plan::Done(Err(AgentError::plain(
                ErrorKind::Refused,
                spec,
                op,
                format!("{} needs the daemon's replicated disks", spec.text),
            ))),
            Op::Stop | Op::Status => Plan::Done(Ok(Finished::state(ResourceState::Stopped))),
        };
    };
    // Leave the runner's deadline room to report the client's own refusal.
    let wait_s = DRBDDISK_WAIT
        .millis()
        .min(ctx.timeout.millis().saturating_sub(5_000))
        .max(1_000)
        / 1000;
    let wait = wait_s.to_string();
    let mut args: Vec<&str> = cli.global.iter().map(String::as_str).collect();
    args.push("disk");
    let accept = match op {
        Op::Start => {
            args.extend(["primary", "--wait", &wait]);
            Accept::Zero
        }
        Op::Stop => {
            args.extend(["secondary", "--wait", &wait]);
            Accept::Zero
        }
        Op::Status => {
            args.push("role");
            Accept::LsbStatus
        }
    };
    args.push(resource);
    let req = OpRequest::new(&cli.program, &args, ctx.timeout);
    Plan::Steps {
        steps: vec![Step::new(req, accept)],
        finish: Finished::after(op),
    }
}

/// Whether `spec` is already active on this host before bascule started it (a
/// VIP the OS configured, a mounted filesystem, a service running): the usual
/// cause of a split service. Scripts are asked `status` (blocking, at most
/// `STARTUP_STATUS_TIMEOUT`): call this before the loop starts.
pub fn check_already_active(spec: &ResourceSpec, ctx: &AgentContext) -> bool {
    match &spec.typed {
        Resource::IpAddr { addr, .. } => ipaddr::find_vip(*addr).is_some(),
        Resource::Filesystem { mountpoint, .. } => filesystem::is_mounted(mountpoint),
        Resource::MailTo { .. } | Resource::DrbdDisk { .. } => false,
        Resource::Script { .. } => {
            let mut short = ctx.clone();
            short.timeout = STARTUP_STATUS_TIMEOUT;
            let task = Task::new(spec, Op::Status, &short);
            let mut runner = runner::Runner::new();
            matches!(
                task.run_blocking(&mut runner),
                Ok(Finished {
                    state: ResourceState::Running,
                    ..
                })
            )
        }
    }
}

/// Directories searched for system tools, so a daemon started with a bare PATH
/// still finds `mount` and `fsck`.
const TOOL_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// The absolute path of tool `name`, or `name` itself (left to PATH).
pub(crate) fn find_program(name: &str) -> String {
    TOOL_DIRS
        .iter()
        .map(|d| format!("{d}/{name}"))
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or_else(|| name.to_string())
}

/// Operator-visible lines of the agents, proposed for the catalogue (the lead
/// wires them into `core::Event`); rendered here so the wording is in one place.
#[derive(Clone, Copy, Debug)]
pub enum AgentEvent<'a> {
    /// One op of one resource of a takeover or release ended.
    Step {
        /// The group (its first resource, as `bascule status` names it).
        group: &'a str,
        /// The resource as written in haresources.
        resource: &'a str,
        /// The op.
        op: Op,
        /// How it ended.
        result: &'a Result<Finished, AgentError>,
    },
    /// A resource was active before bascule started it (split-service risk).
    AlreadyActive {
        /// The resource as written in haresources.
        resource: &'a str,
    },
    /// A GARP schedule ended with frames the kernel refused.
    GarpFailed {
        /// The interface.
        iface: &'a str,
        /// The VIP.
        vip: Ipv4Addr,
        /// Frames sent.
        sent: u32,
        /// Frames refused.
        errors: u32,
    },
}

impl AgentEvent<'_> {
    /// `error` for a failed step and a resource already active (an operator
    /// must act), `warn` for a warning or GARP trouble, `info` otherwise.
    pub fn level(&self) -> log::Level {
        match self {
            AgentEvent::Step { result: Err(_), .. } | AgentEvent::AlreadyActive { .. } => {
                log::Level::Error
            }
            AgentEvent::Step {
                result: Ok(Finished {
                    warning: Some(_), ..
                }),
                ..
            } => log::Level::Warn,
            AgentEvent::GarpFailed { .. } => log::Level::Warn,
            AgentEvent::Step {
                op: Op::Status,
                result:
                    Ok(Finished {
                        state: ResourceState::Stopped,
                        ..
                    }),
                ..
            } => log::Level::Warn,
            AgentEvent::Step { .. } => log::Level::Info,
        }
    }

    /// The catalogue line.
    pub fn render(&self, out: &mut impl fmt::Write) -> fmt::Result {
        match self {
            AgentEvent::Step { group, result: Ok(f), resource, op } => {
                // A status that finds the resource stopped is a failed check (the
                // monitor restarts it): say so rather than `ok`.
                let result = if *op == Op::Status && f.state == ResourceState::Stopped {
                    "stopped"
                } else {
                    "ok"
                };
                write!(out, "takeover_step group={group} resource={resource} op={op} result={result}")?;
                if let Some(w) = f.warning {
                    out.write_str(" warning=")?;
                    write_quoted(out, w.message())?;
                }
                write!(out, " took_ms={}", f.took_ms)
            }
            AgentEvent::Step { group, result: Err(e), .. } => write!(out, "takeover_step group={group} {e}"),
            AgentEvent::AlreadyActive { resource } => write!(
                out,
                "resource_already_active resource={resource} message=\"active before bascule started it: stop it or remove it from the OS configuration\""
            ),
            AgentEvent::GarpFailed { iface, vip, sent, errors } => {
                write!(out, "garp_failed iface={iface} vip={vip} sent={sent} errors={errors}")
            }
        }
    }
}

/// A resource as the haresources parser types it (tests write one word).
#[cfg(test)]
pub(crate) fn spec(word: &str) -> ResourceSpec {
    let text = format!("n {word}");
    let mut parsed = crate::config::haresources::parse(&text, &["n".to_string()], &mut Vec::new())
        .expect("a valid resource word");
    parsed.groups.remove(0).resources.remove(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use runner::OpId;

    fn ctx() -> AgentContext {
        AgentContext {
            config_dir: PathBuf::from("/nonexistent-bascule"),
            init_d: PathBuf::from("/nonexistent-bascule-init"),
            systemd: false,
            sendmail: PathBuf::from("/nonexistent-sendmail"),
            node: "debian1".into(),
            timeout: Duration::from_secs(5),
            disk_cli: None,
        }
    }

    fn done(outcome: Outcome) -> OpDone {
        OpDone {
            id: OpId(1),
            outcome,
            stderr_tail: "oops".into(),
            took_ms: 7,
        }
    }

    fn steps(list: Vec<Step>) -> Task {
        Task {
            resource: "X".into(),
            op: Op::Stop,
            plan: Some(Plan::Steps {
                steps: list,
                finish: Finished::state(ResourceState::Stopped),
            }),
            index: 0,
            retries: 0,
            waiting: false,
            took_ms: 0,
        }
    }

    fn req(name: &str) -> OpRequest {
        OpRequest::new(name, &["a"], Duration::from_secs(1))
    }

    // ==== Tests for the Task state ====

    #[test]
    fn task_drbddisk_without_daemon_refused_with_clear_error() {
        let mut t = Task::new(&spec("drbddisk::repl"), Op::Start, &ctx());
        let Next::Done(Err(e)) = t.poll() else {
            panic!("refused")
        };
        assert_eq!(e.kind, ErrorKind::Refused);
        assert_eq!(
            e.stderr,
            "drbddisk::repl needs the daemon's replicated disks"
        );
        assert_eq!(t.poll(), Next::Wait);
        let mut stop = Task::new(&spec("drbddisk::repl"), Op::Stop, &ctx());
        assert!(matches!(stop.poll(), Next::Done(Ok(_))));
    }

    #[test]
    fn task_drbddisk_runs_the_disk_client() {
        let mut c = ctx();
        c.disk_cli = Some(DiskCli {
            program: "/usr/sbin/bascule".into(),
            global: vec!["--run-dir".into(), "/run/bascule".into()],
        });
        let line = |word: &str, op: Op, c: &AgentContext| {
            let mut t = Task::new(&spec(word), op, c);
            let Next::Spawn(req) = t.poll() else {
                panic!("spawns the client")
            };
            req.command_line()
        };
        assert_eq!(
            line("drbddisk::repl", Op::Start, &c),
            "/usr/sbin/bascule --run-dir /run/bascule disk primary --wait 1 repl"
        );
        c.timeout = Duration::from_secs(300);
        assert_eq!(
            line("drbddisk::repl", Op::Stop, &c),
            "/usr/sbin/bascule --run-dir /run/bascule disk secondary --wait 60 repl"
        );
        assert_eq!(
            line("drbddisk", Op::Status, &c),
            "/usr/sbin/bascule --run-dir /run/bascule disk role all"
        );
        // Status maps LSB codes: 3 (not Primary) is stopped, not an error.
        let mut t = Task::new(&spec("drbddisk::repl"), Op::Status, &c);
        let _ = t.poll();
        t.on_done(&done(Outcome::Failed { code: 3 }));
        let Next::Done(Ok(f)) = t.poll() else {
            panic!("stopped")
        };
        assert_eq!(f.state, ResourceState::Stopped);
    }

    #[test]
    fn task_failed_step_reports_cmd_code_stderr() {
        let mut t = steps(vec![
            Step::new(req("first"), Accept::Zero),
            Step::new(req("second"), Accept::Zero),
        ]);
        assert_eq!(t.poll(), Next::Spawn(req("first")));
        assert_eq!(t.poll(), Next::Wait);
        t.on_done(&done(Outcome::Failed { code: 2 }));
        let Next::Done(Err(e)) = t.poll() else {
            panic!("failed")
        };
        assert_eq!(
            e.to_string(),
            "resource=X op=stop result=failed cmd=\"first a\" code=2 stderr=\"oops\" took_ms=7"
        );
    }

    #[test]
    fn task_retry_from_reruns_once_then_fails() {
        let mut second = Step::new(req("umount"), Accept::Zero);
        second.retry_from = Some(0);
        let mut t = steps(vec![Step::new(req("fuser"), Accept::Any), second]);
        for _ in 0..2 {
            assert_eq!(t.poll(), Next::Spawn(req("fuser")));
            t.on_spawn_error(SpawnError::Exec(libc::ENOENT));
            assert_eq!(t.poll(), Next::Spawn(req("umount")));
            t.on_done(&done(Outcome::Timeout));
        }
        let Next::Done(Err(e)) = t.poll() else {
            panic!("failed")
        };
        assert_eq!(e.kind, ErrorKind::Timeout);
        assert_eq!(e.cmd.as_deref(), Some("umount a"));
    }

    #[test]
    fn task_lsb_status_maps_codes() {
        for (outcome, want) in [
            (Outcome::Ok, Ok(ResourceState::Running)),
            (Outcome::Failed { code: 3 }, Ok(ResourceState::Stopped)),
            (Outcome::Failed { code: 1 }, Err(ErrorKind::StatusUnknown)),
        ] {
            let mut t = steps(vec![Step::new(req("s"), Accept::LsbStatus)]);
            t.op = Op::Status;
            let _ = t.poll();
            t.on_done(&done(outcome));
            let Next::Done(got) = t.poll() else {
                panic!("done")
            };
            assert_eq!(got.map(|f| f.state).map_err(|e| e.kind), want);
        }
    }

    #[test]
    fn task_fsck_accepts_corrected_errors() {
        let mut t = steps(vec![
            Step::new(req("fsck"), Accept::Fsck),
            Step::new(req("mount"), Accept::Zero),
        ]);
        let _ = t.poll();
        t.on_done(&done(Outcome::Failed { code: 1 }));
        assert_eq!(t.poll(), Next::Spawn(req("mount")));
    }

    #[test]
    fn event_lines_render_as_proposed() {
        let render = |e: AgentEvent| {
            let mut line = String::new();
            e.render(&mut line).unwrap();
            (e.level(), line)
        };
        let ok = Ok(Finished {
            took_ms: 12,
            ..Finished::state(ResourceState::Running)
        });
        let step = |result| AgentEvent::Step {
            group: "192.168.69.100",
            resource: "apache",
            op: Op::Start,
            result,
        };
        assert_eq!(
            render(step(&ok)),
            (
                log::Level::Info,
                "takeover_step group=192.168.69.100 resource=apache op=start result=ok took_ms=12"
                    .into()
            )
        );
        let warned = Ok(Finished {
            warning: Some(Warning::NoSendmail),
            ..Finished::state(ResourceState::Running)
        });
        assert!(render(step(&warned))
            .1
            .contains("result=ok warning=\"no /usr/sbin/sendmail: no mail sent\""));
        let failed = Err(AgentError {
            kind: ErrorKind::Exit,
            resource: "apache".into(),
            op: Op::Start,
            cmd: Some("/etc/ha.d/resource.d/apache start".into()),
            code: Some(1),
            stderr: "port 80 \"busy\"\nbye".into(),
            took_ms: 40,
        });
        assert_eq!(
            render(step(&failed)),
            (
                log::Level::Error,
                "takeover_step group=192.168.69.100 resource=apache op=start result=failed \
                 cmd=\"/etc/ha.d/resource.d/apache start\" code=1 stderr=\"port 80 \\\"busy\\\" | bye\" took_ms=40"
                    .into()
            )
        );
        let garp = AgentEvent::GarpFailed {
            iface: "eth0",
            vip: Ipv4Addr::new(192, 168, 69, 100),
            sent: 4,
            errors: 2,
        };
        assert_eq!(
            render(garp).1,
            "garp_failed iface=eth0 vip=192.168.69.100 sent=4 errors=2"
        );
        assert!(render(AgentEvent::AlreadyActive {
            resource: "192.168.69.100"
        })
        .1
        .starts_with("resource_already_active resource=192.168.69.100 message=\""));
    }

    #[test]
    fn op_words_are_the_script_arguments() {
        let words: Vec<String> = Op::ALL.iter().map(Op::to_string).collect();
        assert_eq!(words, ["start", "stop", "status"]);
    }
}
