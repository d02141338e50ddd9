//! The takeover's I/O: runs what `core::takeover` asks for and feeds results back.
//!
//! Layer: shell. [`TakeoverIo`] owns the pure [`Takeover`] machine, the agent
//! [`Runner`] (its pipes registered with the loop under `token_base..`), one
//! in-flight agent [`Task`] per group, the GARP senders of freshly started VIPs,
//! the fence command and the `on_stop_failure` escalation. The loop calls
//! [`TakeoverIo::step`] once per iteration, after membership has taken its
//! inputs: the peer's view goes into the machine, its outputs are drained
//! (actions spawn agents, a fence spawns the `fence` command, an escalation
//! spawns `on_stop_failure`), events are logged through `shell::log`, and the
//! machine's adverts go back into membership's heartbeat (sent at once when they
//! changed). SIGCHLD makes the loop call [`TakeoverIo::on_sigchld`].
//!
//! May: spawn children, open GARP sockets. May not: block (every child runs
//! through the runner), or allocate per iteration when no group is configured
//! and nothing runs (the heartbeat path stays allocation-free).
//! Invariants: at most one task per group, and it always matches the machine's
//! outstanding action; every task ends in exactly one `handle_action_done`.

use crate::config::{Resource, ResourceSpec, StopFailure};
use crate::core::takeover::{self, Action, Command, Outcome, Takeover, TakeoverConfig};
use crate::core::{Membership, PeerState};
use crate::time::{Duration, Instant};
use crate::wire::AdvertState;

use super::agents::garp::Garp;
use super::agents::runner::{self, OpDone, OpId, OpRequest, Runner};
use super::agents::{self, AgentContext, AgentEvent, Finished, Next, ResourceState, Task};
use super::cli::ShellError;
use super::config_load::{located, Loaded};
use super::control::{GroupStatus, ResourceStatus};
use super::log::{log_agent_event, log_takeover_event};

/// Output drain passes per `step`: each pass may finish instant tasks (a VIP's
/// status) that free the machine to hand out the next action; bounded.
pub const DRAIN_PASSES_MAX: usize = 16;
/// Events drained per pass.
const EVENTS_PER_PASS_MAX: usize = 64;
/// `on_stop_failure reboot`: forced twice, so systemd does not wait for units that
/// might hang on the very resource that failed to stop.
pub const REBOOT_PROGRAM: &str = "systemctl";
/// Arguments of [`REBOOT_PROGRAM`].
pub const REBOOT_ARGS: [&str; 3] = ["reboot", "--force", "--force"];
/// Time limit of the escalation command.
pub const ESCALATE_TIMEOUT: Duration = Duration::from_secs(60);
/// One in-flight agent operation of a group.
struct InFlight {
    action: Action,
    task: Task,
    op: Option<OpId>,
}

/// One group's shell-side state.
struct GroupIo {
    /// The group index as logs show it (`group=0`).
    label: String,
    /// Stable name for `status`: the first resource as written.
    name: String,
    specs: Vec<ResourceSpec>,
    /// Last known state of each resource: None until an op ran.
    states: Vec<Option<ResourceState>>,
    failed: Vec<bool>,
    inflight: Option<InFlight>,
    /// The VIPs this node added at its last start: announced again when the
    /// peer releases the group while it runs here too (a healed partition, a
    /// thawed node), since the client's ARP entry may point at the peer.
    vips: Vec<agents::GarpTarget>,
    /// The peer's advertised state for the group at the last step.
    peer_was: AdvertState,
}

/// The fence command and its limits.
struct FenceIo {
    request: OpRequest,
    running: Option<OpId>,
}

/// See the module doc.
pub struct TakeoverIo {
    takeover: Takeover,
    runner: Runner,
    ctx: AgentContext,
    groups: Vec<GroupIo>,
    fence: Option<FenceIo>,
    escalation: StopFailure,
    garps: Vec<Garp>,
    node: String,
    peer: String,
    /// Ping counts last given to the machine (local, peer).
    ping: (u8, Option<u8>),
}

impl TakeoverIo {
    /// Builds the machine and its I/O; `registry` and `token_base` are the runner's;
    /// `ping` says whether ping nodes are probed (rule 6 applies only then).
    pub fn new(
        loaded: &Loaded,
        registry: mio::Registry,
        token_base: usize,
        ping: bool,
        now: Instant,
    ) -> Result<TakeoverIo, ShellError> {
        let config = &loaded.config;
        let mut tc = TakeoverConfig::from_config(config, loaded.local).map_err(|e| {
            ShellError::Config(located(
                &loaded.dir,
                crate::config::FileKind::Haresources,
                0,
                &e.to_string(),
            ))
        })?;
        // Without a prober (no ping nodes, or no raw socket) counts mean nothing.
        tc.ping_configured = ping;
        let mut ctx = AgentContext::detect(loaded.dir.clone(), loaded.node.clone());
        ctx.timeout = config.ha.action_timeout;
        let groups = config
            .resources
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| GroupIo {
                label: i.to_string(),
                name: g
                    .resources
                    .first()
                    .map_or_else(|| format!("group{i}"), |r| r.text.clone()),
                specs: g.resources.clone(),
                states: vec![None; g.resources.len()],
                failed: vec![false; g.resources.len()],
                inflight: None,
                vips: Vec::new(),
                peer_was: AdvertState::Stopped,
            })
            .collect();
        let fence = config.ha.fence.as_ref().map(|cmd| {
            let args: Vec<&str> = cmd.args.iter().map(String::as_str).collect();
            let mut request = OpRequest::new(&cmd.program, &args, config.ha.fence_timeout);
            request.env = vec![
                ("BASCULE_PEER".into(), loaded.peer_name.clone()),
                ("BASCULE_NODE".into(), loaded.node.clone()),
            ];
            FenceIo {
                request,
                running: None,
            }
        });
        Ok(TakeoverIo {
            takeover: Takeover::new(tc, now),
            runner: Runner::with_registry(registry, token_base),
            ctx,
            groups,
            fence,
            escalation: config.ha.on_stop_failure.clone(),
            garps: Vec::new(),
            node: loaded.node.clone(),
            peer: loaded.peer_name.clone(),
            ping: (0, None),
        })
    }

    /// Start-up check: a resource already active here before we started it is a
    /// critical error (another cluster manager or the OS started it); logged, and
    /// the daemon still runs.
    pub fn check_already_active(&self) {
        for spec in self.groups.iter().flat_map(|g| g.specs.iter()) {
            if agents::check_already_active(spec, &self.ctx) {
                log_agent_event(&AgentEvent::AlreadyActive {
                    resource: &spec.text,
                });
            }
        }
    }

    /// Whether `token` is one of the runner's pipes.
    pub fn owns(&self, token: mio::Token) -> bool {
        self.runner.owns(token)
    }

    /// A runner pipe is readable.
    pub fn on_token(&mut self, token: mio::Token) {
        self.runner.on_token(token);
    }

    /// SIGCHLD: reap finished children and feed their results.
    pub fn on_sigchld(&mut self, now: Instant) {
        if self.runner.running() == 0 {
            return;
        }
        let done: Vec<OpDone> = self.runner.reap(now).collect();
        for d in done {
            self.on_op_done(now, d);
        }
    }

    /// How many ping nodes we and (from its heartbeat) the peer reach; the
    /// machine hears only changes.
    pub fn ping(&mut self, now: Instant, local: u8, peer: Option<u8>) {
        if self.ping != (local, peer) {
            self.ping = (local, peer);
            self.takeover.handle_ping(now, local, peer);
        }
    }

    /// An operator command (`bascule standby|takeover`).
    pub fn command(&mut self, now: Instant, command: Command) {
        self.takeover.handle_command(now, command);
    }

    /// Timers of the runner (kills past their deadline) and of the GARP senders.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.runner.running() > 0 {
            self.runner.handle_timeout(now);
        }
        if self.garps.is_empty() {
            return;
        }
        for garp in self.garps.iter_mut() {
            garp.handle_timeout(now);
        }
        self.garps.retain(|garp| {
            if garp.is_done() && garp.send_errors > 0 {
                log::debug!("garp: {} of {} frames failed", garp.send_errors, garp.sent);
            }
            !garp.is_done()
        });
    }

    /// Feeds membership's view in, drains the machine's outputs, puts its adverts
    /// into the heartbeat (and asks for one at once when they changed).
    pub fn step(&mut self, now: Instant, m: &mut Membership) {
        self.takeover
            .handle_peer(now, m.peer_state(), m.peer_adverts(), m.peer_sees_us());
        self.reannounce(now, m.peer_adverts());
        for _ in 0..DRAIN_PASSES_MAX {
            if !self.drain_once(now) {
                break;
            }
        }
        m.set_local_adverts(&self.takeover.adverts());
        if self.takeover.take_changed() {
            m.send_now(now);
        }
    }

    /// Rule 3 keeps a group running on one node while the other stops it; the
    /// client may have learnt the VIP from the stopping node's gratuitous ARP
    /// (it took the group during the partition), so the keeper announces its
    /// VIPs again as soon as the peer starts to stop it. Without this the VIP
    /// stays dark until the client's ARP entry expires (tens of seconds).
    fn reannounce(&mut self, now: Instant, peer: Option<&[crate::wire::GroupAdvert]>) {
        let Some(peer) = peer else {
            return;
        };
        for g in 0..self.groups.len() {
            let theirs = peer.get(g).map_or(AdvertState::Stopped, |a| a.state);
            let was = std::mem::replace(&mut self.groups[g].peer_was, theirs);
            let ours = self.takeover.group_state(g as u8);
            if peer_releases(was, theirs) && ours == takeover::GroupState::Running {
                for target in self.groups[g].vips.clone() {
                    self.start_garp(now, &target.iface, target.vip);
                }
            }
        }
    }

    /// The earliest instant something here is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let garps = self.garps.iter().filter_map(Garp::poll_timeout);
        [self.takeover.poll_timeout(), self.runner.poll_timeout()]
            .into_iter()
            .flatten()
            .chain(garps)
            .min()
    }

    /// One pass over the outputs; true when a task finished at once (another pass
    /// may have work).
    fn drain_once(&mut self, now: Instant) -> bool {
        self.drain_events();
        let mut again = false;
        while let Some(action) = self.takeover.poll_action() {
            again |= self.start_action(now, action);
        }
        if self.takeover.poll_fence().is_some() {
            self.start_fence(now);
            again = true;
        }
        while let Some(group) = self.takeover.poll_escalate() {
            self.drain_events();
            self.escalate(now, group);
        }
        self.drain_events();
        again
    }

    fn drain_events(&mut self) {
        for _ in 0..EVENTS_PER_PASS_MAX {
            let Some(event) = self.takeover.poll_event() else {
                return;
            };
            log_takeover_event(&event);
        }
    }

    /// Creates the task for `action` and drives it; true if it finished at once.
    fn start_action(&mut self, now: Instant, action: Action) -> bool {
        let g = action.group as usize;
        let group = &mut self.groups[g];
        assert!(
            group.inflight.is_none(),
            "group {g}: two actions outstanding"
        );
        let spec = &group.specs[action.resource as usize];
        let op = action.op;
        // A VIP being released must not be announced any more: a burst still due
        // (up to GARP_REPEAT_AFTER_MS after its start) would point the segment back
        // at this node's MAC after the peer took the VIP over.
        if let (takeover::Op::Stop, Resource::IpAddr { addr, .. }) = (op, &spec.typed) {
            let vip = *addr;
            self.garps.retain(|garp| garp.vip() != vip);
        }
        group.inflight = Some(InFlight {
            action,
            task: Task::new(spec, op, &self.ctx),
            op: None,
        });
        self.drive(now, g)
    }

    /// Runs the group's task until it waits on a child or is done; true if done.
    fn drive(&mut self, now: Instant, g: usize) -> bool {
        loop {
            let Some(inflight) = self.groups[g].inflight.as_mut() else {
                return false;
            };
            match inflight.task.poll() {
                Next::Wait => return false,
                Next::Spawn(req) => match self.runner.spawn(req, now) {
                    Ok(id) => {
                        inflight.op = Some(id);
                        return false;
                    }
                    Err(e) => inflight.task.on_spawn_error(e),
                },
                Next::Done(result) => {
                    let inflight = self.groups[g].inflight.take().expect("checked above");
                    self.finish(now, g, inflight.action, result);
                    return true;
                }
            }
        }
    }

    /// A task ended: log it, remember the resource's state, start the GARP of a
    /// fresh VIP, tell the machine.
    fn finish(
        &mut self,
        now: Instant,
        g: usize,
        action: Action,
        result: Result<Finished, agents::AgentError>,
    ) {
        let group = &mut self.groups[g];
        let r = action.resource as usize;
        let spec = &group.specs[r];
        let op = action.op;
        log_agent_event(&AgentEvent::Step {
            group: &group.label,
            resource: &spec.text,
            op,
            result: &result,
        });
        let outcome = outcome_of(action.op, &result);
        group.failed[r] = outcome != Outcome::Ok;
        if let Ok(f) = &result {
            group.states[r] = Some(f.state);
            if let (takeover::Op::Start, Some(target)) = (action.op, &f.garp) {
                self.start_garp(now, &target.iface, target.vip);
                let vips = &mut self.groups[g].vips;
                if !vips.contains(target) {
                    vips.push(target.clone());
                }
            }
        }
        self.takeover
            .handle_action_done(now, action.group, action.resource, action.op, outcome);
    }

    fn start_garp(&mut self, now: Instant, iface: &str, vip: std::net::Ipv4Addr) {
        match Garp::new(iface, vip, now) {
            Ok(mut garp) => {
                garp.handle_timeout(now);
                self.garps.push(garp);
            }
            Err(e) => {
                log::debug!("garp {iface} {vip}: {e}");
                log_agent_event(&AgentEvent::GarpFailed {
                    iface,
                    vip,
                    sent: 0,
                    errors: 1,
                });
            }
        }
    }

    fn start_fence(&mut self, now: Instant) {
        let Some(fence) = self.fence.as_mut() else {
            // The machine fences only when configured (FenceConfig from ha.cf).
            self.takeover.handle_fence_done(now, false);
            return;
        };
        match self.runner.spawn(fence.request.clone(), now) {
            Ok(id) => fence.running = Some(id),
            Err(e) => {
                log::debug!("fence {}: {e}", fence.request.command_line());
                self.takeover.handle_fence_done(now, false);
            }
        }
    }

    /// `on_stop_failure`: the configured command, or a forced reboot, which is
    /// refused outside the host's network namespace (a lab node must never
    /// reboot the machine it shares).
    fn escalate(&mut self, now: Instant, group: u8) {
        let mut request = match &self.escalation {
            StopFailure::Command(cmd) => {
                let args: Vec<&str> = cmd.args.iter().map(String::as_str).collect();
                OpRequest::new(&cmd.program, &args, ESCALATE_TIMEOUT)
            }
            StopFailure::Reboot if in_host_netns() => {
                OpRequest::new(REBOOT_PROGRAM, &REBOOT_ARGS, ESCALATE_TIMEOUT)
            }
            StopFailure::Reboot => {
                log::error!("escalate: reboot refused: not in the host's network namespace");
                return;
            }
        };
        request.env = vec![
            ("BASCULE_NODE".into(), self.node.clone()),
            ("BASCULE_PEER".into(), self.peer.clone()),
            ("BASCULE_GROUP".into(), group.to_string()),
        ];
        if let Err(e) = self.runner.spawn(request, now) {
            log::error!("escalate: cannot run on_stop_failure: {e}");
        }
    }

    fn on_op_done(&mut self, now: Instant, done: OpDone) {
        if let Some(fence) = self.fence.as_mut().filter(|f| f.running == Some(done.id)) {
            fence.running = None;
            if !done.stderr_tail.is_empty() {
                log::debug!("fence stderr: {}", done.stderr_tail);
            }
            let ok = done.outcome == runner::Outcome::Ok;
            self.takeover.handle_fence_done(now, ok);
            return;
        }
        let owner = self
            .groups
            .iter()
            .position(|g| g.inflight.as_ref().is_some_and(|f| f.op == Some(done.id)));
        let Some(g) = owner else {
            log::debug!("child {:?} ended: {:?}", done.id, done.outcome);
            return;
        };
        let inflight = self.groups[g].inflight.as_mut().expect("found above");
        inflight.op = None;
        inflight.task.on_done(&done);
        self.drive(now, g);
    }

    /// The groups as `status` shows them.
    pub fn status(&self, m: &Membership) -> Vec<GroupStatus> {
        let peer_adverts = if matches!(m.peer_state(), PeerState::Alive | PeerState::Late) {
            m.peer_adverts()
        } else {
            None
        };
        self.groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let local = self.takeover.group_state(i as u8).advert();
                let peer = peer_adverts.and_then(|a| a.get(i)).map(|a| a.state);
                let holds =
                    |s: AdvertState| matches!(s, AdvertState::Running | AdvertState::Starting);
                let owner = if holds(local) {
                    self.node.clone()
                } else if peer.is_some_and(holds) {
                    self.peer.clone()
                } else {
                    "none".into()
                };
                GroupStatus {
                    name: g.name.clone(),
                    owner,
                    state: format!("{local:?}"),
                    resources: g
                        .specs
                        .iter()
                        .zip(g.states.iter().zip(g.failed.iter()))
                        .map(|(spec, (state, failed))| ResourceStatus {
                            text: spec.text.clone(),
                            state: resource_state_name(*state, *failed).into(),
                        })
                        .collect(),
                }
            })
            .collect()
    }

    /// Whether a group may run here (Starting, Running or Stopping): the daemon
    /// does not exit before they are released.
    pub fn holds_any(&self) -> bool {
        (0..self.groups.len()).any(|g| {
            matches!(
                self.takeover.group_state(g as u8).advert(),
                AdvertState::Starting | AdvertState::Running | AdvertState::Stopping
            )
        })
    }

    /// Lets the drbddisk agent reach the daemon's replicated disks.
    pub fn set_disk_cli(&mut self, cli: agents::DiskCli) {
        self.ctx.disk_cli = Some(cli);
    }

    /// The machine (for tests and status).
    pub fn takeover(&self) -> &Takeover {
        &self.takeover
    }
}

/// `running`, `stopped`, `failed` (the last op failed) or `unknown` (none ran).
pub fn resource_state_name(state: Option<ResourceState>, failed: bool) -> &'static str {
    match (failed, state) {
        (true, _) => "failed",
        (false, Some(ResourceState::Running)) => "running",
        (false, Some(ResourceState::Stopped)) => "stopped",
        (false, None) => "unknown",
    }
}

/// What the machine hears of an agent result. A `status` that finds the resource
/// stopped is a failed check (LSB code 3) while the group should be running.
pub fn outcome_of(op: takeover::Op, result: &Result<Finished, agents::AgentError>) -> Outcome {
    match result {
        Ok(f) if op == takeover::Op::Status && f.state == ResourceState::Stopped => {
            Outcome::Failed { code: 3 }
        }
        Ok(_) => Outcome::Ok,
        Err(e) if e.kind == agents::ErrorKind::Timeout => Outcome::Timeout,
        Err(e) => Outcome::Failed {
            code: e.code.unwrap_or(-1),
        },
    }
}

/// Whether the peer's advert went from `was` to `theirs` by starting to stop
/// the group. `Stopping` may be the first state seen after a heal (the peer
/// resolved the conflict before its `Running` reached us), and a `Running` that
/// ends is a release even when its `Stopping` was lost.
pub fn peer_releases(was: AdvertState, theirs: AdvertState) -> bool {
    theirs != was && (theirs == AdvertState::Stopping || was == AdvertState::Running)
}

/// Whether this process shares PID 1's network namespace (false when unknown).
pub fn in_host_netns() -> bool {
    let ours = std::fs::read_link("/proc/self/ns/net");
    let init = std::fs::read_link("/proc/1/ns/net");
    matches!((ours, init), (Ok(a), Ok(b)) if a == b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shell::agents::{AgentError, ErrorKind};

    fn finished(state: ResourceState) -> Result<Finished, AgentError> {
        Ok(Finished {
            state,
            warning: None,
            garp: None,
            took_ms: 1,
        })
    }

    fn failed(kind: ErrorKind, code: Option<i32>) -> Result<Finished, AgentError> {
        Err(AgentError {
            kind,
            resource: "web".into(),
            op: agents::Op::Start,
            cmd: None,
            code,
            stderr: String::new(),
            took_ms: 1,
        })
    }

    // ==== Tests for the outcome mapping ====

    #[test]
    fn outcome_ok_failed_timeout_map() {
        let start = takeover::Op::Start;
        assert_eq!(
            outcome_of(start, &finished(ResourceState::Running)),
            Outcome::Ok
        );
        assert_eq!(
            outcome_of(start, &failed(ErrorKind::Exit, Some(7))),
            Outcome::Failed { code: 7 }
        );
        assert_eq!(
            outcome_of(start, &failed(ErrorKind::Timeout, None)),
            Outcome::Timeout
        );
        assert_eq!(
            outcome_of(start, &failed(ErrorKind::NoScript, None)),
            Outcome::Failed { code: -1 }
        );
    }

    #[test]
    fn peer_releases_on_stopping_or_leaving_running() {
        use AdvertState::{Blocked, Failed, Running, Starting, Stopped, Stopping};
        assert!(peer_releases(Running, Stopping));
        assert!(
            peer_releases(Stopped, Stopping),
            "first advert after a heal"
        );
        assert!(peer_releases(Running, Stopped), "its Stopping was lost");
        assert!(peer_releases(Running, Failed));
        assert!(!peer_releases(Stopping, Stopping), "only the change counts");
        assert!(
            !peer_releases(Stopping, Stopped),
            "announced at Stopping already"
        );
        assert!(!peer_releases(Stopped, Running));
        assert!(!peer_releases(Stopped, Starting));
        assert!(!peer_releases(Stopped, Blocked));
    }

    #[test]
    fn status_stopped_is_a_failed_check() {
        let status = takeover::Op::Status;
        assert_eq!(
            outcome_of(status, &finished(ResourceState::Stopped)),
            Outcome::Failed { code: 3 }
        );
        assert_eq!(
            outcome_of(status, &finished(ResourceState::Running)),
            Outcome::Ok
        );
        // A stop that finds nothing running worked.
        assert_eq!(
            outcome_of(takeover::Op::Stop, &finished(ResourceState::Stopped)),
            Outcome::Ok
        );
    }

    #[test]
    fn resource_state_names() {
        assert_eq!(resource_state_name(None, false), "unknown");
        assert_eq!(
            resource_state_name(Some(ResourceState::Running), false),
            "running"
        );
        assert_eq!(
            resource_state_name(Some(ResourceState::Stopped), false),
            "stopped"
        );
        assert_eq!(
            resource_state_name(Some(ResourceState::Running), true),
            "failed"
        );
    }
}
