//! The daemon: start-up, the single-threaded mio loop, shutdown.
//!
//! Layer: shell. [`Daemon`] owns the cores (membership, and the takeover inside
//! `takeover_io::TakeoverIo` with its agent runner; replication later) and every
//! source: the signalfd (SIGTERM, SIGINT, SIGHUP, SIGCHLD), the control socket and
//! its connections, one socket or fd per link, the runner's child pipes. Each
//! iteration: `poll` with the timeout from the earliest deadline; read the clock
//! once; dispatch every ready token (`on_token`, a match on [`Source`]); reap
//! children after a SIGCHLD; `handle_timeout(now)`; link timers; then
//! [`Daemon::drain_outputs`]: membership's events, the takeover step (the peer's
//! view in, agents out, our adverts into the heartbeat), `poll_transmit` (encode
//! once, send on every link), and the next deadline. Nothing on the heartbeat path
//! allocates: frames go through fixed buffers. A later disk worker wakes the loop
//! through a `mio::Waker` under its own token.

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::time::Duration as StdDuration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::agents::runner;
use super::cli::{Args, ShellError};
use super::config_load::{self, Loaded};
use super::control::{self, ConnOutcome, ControlServer, LinkStatus, Request, StatusSnapshot};
use super::link::{Link, OpenError, RxContext};
use super::log::{self as slog, log_event, LogSettings};
use super::ping::PingProber;
use super::replication_io::Disks;
use super::serial::SerialLink;
use super::takeover_io::TakeoverIo;
use super::udp::{iface_info, UdpKind, UdpLink};
use crate::config::digest::ConfigDigest;
use crate::config::{AuthMethod, Medium};
use crate::core::membership::LINKS_MAX;
use crate::core::takeover::{Command, Which};
use crate::core::{Event, LinkId, Membership, MembershipConfig, Names};
use crate::time::{Duration, Instant};
use crate::wire::encode;
use crate::wire::{Keyring, ENCODED_MAX};

/// The signalfd.
pub const SIGNAL: Token = Token(0);
/// The control socket listener.
pub const CONTROL: Token = Token(1);
/// The ICMP socket of the ping prober.
pub const PING: Token = Token(2);
/// First control connection token (slot i is `CONTROL_CONN_FIRST + i`).
pub const CONTROL_CONN_FIRST: usize = 16;
/// First link token (link i is `LINK_FIRST + i`).
pub const LINK_FIRST: usize = 64;
/// First token of the resource agent runner's pipes (`runner::TOKENS` of them).
pub const RUNNER_FIRST: usize = 128;
/// Readiness events handled per `poll` call.
pub const EVENTS_CAPACITY: usize = 64;
/// Longest `poll` sleep, so housekeeping (dropped log lines) runs at least this often.
pub const POLL_TIMEOUT_MAX: Duration = Duration::from_millis(1000);
/// Heartbeats drained per iteration (one is due per keepalive; more is a bug bound).
pub const TRANSMITS_PER_ITERATION_MAX: usize = 4;
/// Events drained per iteration; the rest wait for the next one.
pub const EVENTS_PER_ITERATION_MAX: usize = 64;
/// Loop lag below this never warns, ms (scheduler noise).
pub const LOOP_LAG_WARN_MIN_MS: u64 = 10;
/// At most one `loop_lag` line per this interval (the worst lag in it is reported).
pub const LOOP_LAG_REPORT_INTERVAL: Duration = Duration::from_millis(10_000);

/// Who a token belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// SIGTERM, SIGINT, SIGHUP.
    Signal,
    /// A new control connection.
    Control,
    /// An ICMP reply for the ping prober.
    Ping,
    /// Control connection in slot i.
    ControlConn(usize),
    /// Link i.
    Link(usize),
    /// A pipe of a resource agent child (the runner's token).
    Runner,
    /// A replicated disk's socket, waker or handler pipe.
    Disk,
    /// Not ours (ignored).
    Unknown,
}

impl Source {
    /// Classifies a token.
    pub fn of(token: Token) -> Source {
        match token.0 {
            0 => Source::Signal,
            1 => Source::Control,
            2 => Source::Ping,
            t if (CONTROL_CONN_FIRST..CONTROL_CONN_FIRST + control::CONN_MAX).contains(&t) => {
                Source::ControlConn(t - CONTROL_CONN_FIRST)
            }
            t if (LINK_FIRST..LINK_FIRST + LINKS_MAX).contains(&t) => Source::Link(t - LINK_FIRST),
            t if (RUNNER_FIRST..RUNNER_FIRST + runner::TOKENS).contains(&t) => Source::Runner,
            t if t >= super::replication_io::TOKEN_FIRST => Source::Disk,
            _ => Source::Unknown,
        }
    }
}

fn link_token(i: usize) -> Token {
    Token(LINK_FIRST + i)
}

/// The monotonic clock, read once per iteration, as `time::Instant` from start.
pub struct Clock {
    origin: std::time::Instant,
}

impl Clock {
    /// Starts at zero now.
    pub fn new() -> Clock {
        Clock {
            origin: std::time::Instant::now(),
        }
    }

    /// Milliseconds since start (CLOCK_MONOTONIC).
    pub fn now(&self) -> Instant {
        Instant::from_millis(self.origin.elapsed().as_millis() as u64)
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::new()
    }
}

/// Detects iterations that woke late and reports them, rate-limited.
#[derive(Debug)]
pub struct LagMonitor {
    warn_ms: u64,
    worst_ms: u64,
    last_report: Option<Instant>,
}

impl LagMonitor {
    /// Warns beyond half a keepalive (at least [`LOOP_LAG_WARN_MIN_MS`]).
    pub fn new(keepalive: Duration) -> LagMonitor {
        LagMonitor {
            warn_ms: (keepalive.millis() / 2).max(LOOP_LAG_WARN_MIN_MS),
            worst_ms: 0,
            last_report: None,
        }
    }

    /// The loop asked to wake at `deadline` and woke at `now`.
    pub fn observe(&mut self, deadline: Instant, now: Instant) -> Option<Event> {
        let lag_ms = now.saturating_since(deadline).millis();
        if lag_ms < self.warn_ms {
            return None;
        }
        self.worst_ms = self.worst_ms.max(lag_ms);
        if self
            .last_report
            .is_some_and(|t| now.saturating_since(t) < LOOP_LAG_REPORT_INTERVAL)
        {
            return None;
        }
        self.last_report = Some(now);
        Some(Event::LoopLag {
            lag_ms: std::mem::take(&mut self.worst_ms),
        })
    }
}

/// One link per medium, minus `ucast` lines that name one of our own addresses.
pub fn build_links(loaded: &Loaded) -> Vec<(Link, String)> {
    let ha = &loaded.config.ha;
    let own = iface_info("").own;
    let mut links = Vec::new();
    for medium in &ha.media {
        let id = LinkId(links.len() as u8);
        let name = medium.link_name();
        let link = match medium {
            Medium::Bcast { iface, .. } => Link::Udp(UdpLink::new(
                id,
                name.clone(),
                iface.clone(),
                UdpKind::Bcast,
                ha.udpport,
            )),
            Medium::Mcast {
                iface,
                group,
                port,
                ttl,
                loopback,
                ..
            } => {
                let kind = UdpKind::Mcast {
                    group: *group,
                    ttl: *ttl,
                    loopback: *loopback,
                };
                Link::Udp(UdpLink::new(id, name.clone(), iface.clone(), kind, *port))
            }
            Medium::Ucast { iface, addr, line } => {
                if own.contains(addr) {
                    log::debug!("ha.cf:{line}: ucast {iface} {addr} is our own address: skipped");
                    continue;
                }
                Link::Udp(UdpLink::new(
                    id,
                    name.clone(),
                    iface.clone(),
                    UdpKind::Ucast { addr: *addr },
                    ha.udpport,
                ))
            }
            Medium::Serial { device, .. } => Link::Serial(SerialLink::new(
                id,
                name.clone(),
                device.clone(),
                ha.baud,
                ha.keepalive,
            )),
        };
        links.push((link, name));
    }
    links
}

/// The ping prober when ha.cf has ping nodes and the raw socket opens (root);
/// otherwise None, and ping nodes do not move groups (said at debug level).
fn open_ping(loaded: &Loaded, registry: &mio::Registry, now: Instant) -> Option<PingProber> {
    let ha = &loaded.config.ha;
    if ha.ping_nodes.is_empty() {
        return None;
    }
    let prober = match PingProber::open(&ha.ping_nodes, ha.keepalive, ha.deadping, now) {
        Ok(p) => p,
        Err(e) => {
            log::debug!("ping nodes not probed: raw ICMP socket: {e}");
            return None;
        }
    };
    let fd = prober.raw_fd();
    match registry.register(&mut SourceFd(&fd), PING, Interest::READABLE) {
        Ok(()) => Some(prober),
        Err(e) => {
            log::debug!("ping nodes not probed: register: {e}");
            None
        }
    }
}

/// How the drbddisk agent runs this binary's `disk` client against this
/// daemon: the same binary and the same directories, made absolute (the
/// agent's children do not share our idea of the working directory).
fn disk_cli(args: &Args, node: &str) -> super::agents::DiskCli {
    let abs = |p: &std::path::Path| {
        std::path::absolute(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .display()
            .to_string()
    };
    let program = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "bascule".into());
    super::agents::DiskCli {
        program,
        global: vec![
            "--config-dir".into(),
            abs(&args.config_dir),
            "--node".into(),
            node.into(),
            "--run-dir".into(),
            abs(&args.run_dir),
        ],
    }
}

/// Registers the control socket and the signalfd with the loop.
fn register_sources(
    registry: &mio::Registry,
    control: &mut ControlServer,
    signals: &SignalFd,
) -> Result<(), ShellError> {
    control
        .register(registry, CONTROL)
        .map_err(|e| ShellError::io("register control socket", e))?;
    registry
        .register(
            &mut SourceFd(&signals.as_raw_fd()),
            SIGNAL,
            Interest::READABLE,
        )
        .map_err(|e| ShellError::io("register signalfd", e))
}

/// The running daemon. See the module doc.
pub struct Daemon {
    poll: Poll,
    clock: Clock,
    names: Names,
    keyring: Keyring,
    membership: Membership,
    digest: ConfigDigest,
    links: Vec<Link>,
    signals: SignalFd,
    control: ControlServer,
    tx_frame: [u8; ENCODED_MAX],
    boot_epoch: u32,
    lag: LagMonitor,
    takeover: TakeoverIo,
    ping: Option<PingProber>,
    /// The replicated disks (drbd.conf resources of this node).
    disks: Disks,
    stop: Option<i32>,
    /// A second SIGTERM/SIGINT: exit without waiting for the release.
    force_stop: bool,
    /// The shutdown release (`standby all`) was issued.
    releasing: bool,
    /// SIGCHLD seen: reap before the next drain.
    sigchld: bool,
}

/// `bascule run`: start, loop until SIGTERM/SIGINT, shut down cleanly.
pub fn run(args: &Args, node: &str) -> Result<(), ShellError> {
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGCHLD,
    ] {
        mask.add(s);
    }
    // Blocked before any thread exists, so every thread inherits the mask.
    mask.thread_block()
        .map_err(|e| ShellError::io("block signals", e.into()))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| ShellError::io("signalfd", e.into()))?;
    super::realtime::prepare();
    let loaded = config_load::load(&args.config_dir, node)?;
    let control = ControlServer::bind(&args.run_dir)?;
    let ha = &loaded.config.ha;
    let settings = LogSettings {
        level: slog::level_from_env(std::env::var("RUST_LOG").ok().as_deref()),
        stderr: true,
        logfile: ha.logfile.clone(),
        debugfile: ha.debugfile.clone(),
        facility: ha.logfacility,
        syslog_path: slog::SYSLOG_PATH.into(),
    };
    let logger = slog::init(settings)?;
    let result = Daemon::start(args, loaded, signals, control).and_then(Daemon::run_loop);
    logger.finish();
    result
}

impl Daemon {
    fn start(
        args: &Args,
        loaded: Loaded,
        signals: SignalFd,
        mut control: ControlServer,
    ) -> Result<Daemon, ShellError> {
        let clock = Clock::new();
        let boot_epoch = super::state::bump_boot_epoch(&args.state_dir)?;
        let poll = Poll::new().map_err(|e| ShellError::io("epoll", e))?;
        let (links, link_names): (Vec<Link>, Vec<String>) =
            build_links(&loaded).into_iter().unzip();
        if links.is_empty() || links.len() > LINKS_MAX {
            let m = format!(
                "needs 1 to {LINKS_MAX} heartbeat media (bcast, mcast, ucast, serial), found {}",
                links.len()
            );
            return Err(ShellError::Config(config_load::located(
                &loaded.dir,
                crate::config::FileKind::HaCf,
                0,
                &m,
            )));
        }
        let registry = poll.registry();
        register_sources(registry, &mut control, &signals)?;
        let ha = &loaded.config.ha;
        let now = clock.now();
        let digest = ConfigDigest::of(&loaded.config);
        let config = MembershipConfig {
            local: loaded.local,
            peer: loaded.peer,
            links: links.len() as u8,
            keepalive: ha.keepalive,
            warntime: ha.warntime,
            deadtime: ha.deadtime,
            initdead: ha.initdead,
            boot_epoch,
            digest,
            key: loaded.config.auth.active,
        };
        let runner_registry = registry
            .try_clone()
            .map_err(|e| ShellError::io("clone epoll registry", e))?;
        let ping = open_ping(&loaded, registry, now);
        let mut takeover =
            TakeoverIo::new(&loaded, runner_registry, RUNNER_FIRST, ping.is_some(), now)?;
        takeover.set_disk_cli(disk_cli(args, &loaded.node));
        let disks = Disks::start(&loaded, &args.run_dir, registry, now)?;
        let mut daemon = Daemon {
            names: Names {
                node: loaded.node.clone(),
                peer: loaded.peer_name.clone(),
                links: link_names,
            },
            keyring: Keyring::new(loaded.config.auth.clone()),
            membership: Membership::new(config, now),
            lag: LagMonitor::new(ha.keepalive),
            digest,
            links,
            signals,
            control,
            tx_frame: [0; ENCODED_MAX],
            boot_epoch,
            takeover,
            ping,
            disks,
            stop: None,
            force_stop: false,
            releasing: false,
            sigchld: false,
            poll,
            clock,
        };
        daemon.announce(&loaded, now)?;
        Ok(daemon)
    }

    /// Opens the links and logs the start-up lines, then goes real-time.
    fn announce(&mut self, loaded: &Loaded, now: Instant) -> Result<(), ShellError> {
        let ha = &loaded.config.ha;
        log_event(
            &self.names,
            &Event::Startup {
                links: self.links.len() as u8,
                boot_epoch: self.boot_epoch,
                keepalive_ms: ha.keepalive.millis(),
                warntime_ms: ha.warntime.millis(),
                deadtime_ms: ha.deadtime.millis(),
                initdead_ms: ha.initdead.millis(),
            },
        );
        if loaded.config.auth.active_key().method == AuthMethod::Crc {
            log_event(&self.names, &Event::Unauthenticated);
        }
        for w in &loaded.config.warnings {
            slog::log_config_warning(w);
        }
        for (i, link) in self.links.iter_mut().enumerate() {
            match link.open(self.poll.registry(), link_token(i), now) {
                Ok(()) => {}
                Err(OpenError::Retry(errno)) => log_event(
                    &self.names,
                    &Event::LinkError {
                        link: link.id(),
                        errno,
                    },
                ),
                Err(OpenError::Fatal(e)) => return Err(e),
            }
        }
        // Before real-time: a script's `status` may take a while.
        self.takeover.check_already_active();
        if ha.realtime {
            for event in super::realtime::apply() {
                log_event(&self.names, &event);
            }
        }
        Ok(())
    }

    /// The loop; returns after SIGTERM/SIGINT.
    fn run_loop(mut self) -> Result<(), ShellError> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        let mut now = self.clock.now();
        self.drain_outputs(now);
        while !self.may_exit(now) {
            let deadline = self.next_deadline(now);
            // The sleep is measured from a fresh reading (never fed to the core), so
            // the time this iteration spent working does not make the next one late.
            let sleep = deadline.saturating_since(self.clock.now());
            let timeout = StdDuration::from_millis(sleep.millis());
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(ShellError::io("epoll_wait", e)),
            }
            now = self.clock.now();
            if let Some(event) = self.lag.observe(deadline, now) {
                log_event(&self.names, &event);
            }
            for event in events.iter() {
                self.on_token(event, now);
            }
            self.after_tokens(now);
        }
        log_event(
            &self.names,
            &Event::Shutdown {
                signal: self.stop.unwrap_or(0),
            },
        );
        self.disks.shutdown(self.clock.now());
        self.control.remove();
        Ok(())
    }

    /// Timers and outputs of one iteration, after its ready tokens.
    fn after_tokens(&mut self, now: Instant) {
        if std::mem::take(&mut self.sigchld) {
            self.takeover.on_sigchld(now);
            self.disks.on_sigchld(now);
        }
        self.membership.handle_timeout(now);
        self.takeover.handle_timeout(now);
        self.disks.handle_timeout(now);
        if let Some(ping) = self.ping.as_mut() {
            ping.handle_timeout(now);
        }
        self.tick_links(now);
        self.drain_outputs(now);
    }

    /// After SIGTERM/SIGINT: exit once no group runs here. Groups that run are
    /// released first (as `standby all`: stopped, offered to the peer, which
    /// starts them without waiting for deadtime); a second signal exits at once.
    fn may_exit(&mut self, now: Instant) -> bool {
        if self.stop.is_none() {
            return false;
        }
        if self.force_stop || !self.takeover.holds_any() {
            return true;
        }
        if !self.releasing {
            self.releasing = true;
            self.takeover.command(now, Command::Standby(Which::All));
            self.drain_outputs(now);
        }
        false
    }

    fn next_deadline(&self, now: Instant) -> Instant {
        let mut deadline = now + POLL_TIMEOUT_MAX;
        let link_deadlines = self.links.iter().filter_map(Link::deadline);
        for d in self
            .membership
            .poll_timeout()
            .into_iter()
            .chain(self.takeover.poll_timeout())
            .chain(self.ping.as_ref().map(|p| p.poll_timeout(now)))
            .chain(self.disks.poll_timeout())
            .chain(link_deadlines)
        {
            deadline = deadline.min(d);
        }
        deadline.max(now)
    }

    /// Dispatches one readiness event.
    fn on_token(&mut self, event: &mio::event::Event, now: Instant) {
        match Source::of(event.token()) {
            Source::Signal => self.on_signal(),
            Source::Control => self
                .control
                .on_listener_ready(self.poll.registry(), |slot| {
                    Token(CONTROL_CONN_FIRST + slot)
                }),
            Source::ControlConn(slot) => {
                let outcome =
                    self.control
                        .on_conn_ready(slot, self.poll.registry(), event.is_writable());
                if let ConnOutcome::Request(request) = outcome {
                    let answer = self.answer(request, now);
                    self.control
                        .reply(slot, self.poll.registry(), event.token(), answer);
                }
            }
            Source::Link(i) if i < self.links.len() => {
                let rx = RxContext {
                    now,
                    keyring: &self.keyring,
                    membership: &mut self.membership,
                };
                if let Some(e) = self.links[i].on_ready(self.poll.registry(), event, rx) {
                    log_event(&self.names, &e);
                }
            }
            Source::Runner => self.takeover.on_token(event.token()),
            Source::Disk => self.disks.on_token(event, now),
            Source::Ping => {
                if let Some(ping) = self.ping.as_mut() {
                    ping.on_readable(now);
                }
            }
            Source::Link(_) | Source::Unknown => {}
        }
    }

    fn on_signal(&mut self) {
        // Bounded: at most a handful of distinct signals can be pending.
        for _ in 0..16 {
            match self.signals.read_signal() {
                Ok(Some(info)) if info.ssi_signo == Signal::SIGHUP as u32 => {
                    log::debug!("SIGHUP: configuration reload is not implemented yet; ignored");
                }
                Ok(Some(info)) if info.ssi_signo == Signal::SIGCHLD as u32 => self.sigchld = true,
                Ok(Some(info)) => {
                    self.force_stop = self.stop.is_some();
                    self.stop = Some(info.ssi_signo as i32);
                }
                Ok(None) => return,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    log::debug!("signalfd read: {e}");
                    return;
                }
            }
        }
    }

    fn tick_links(&mut self, now: Instant) {
        for (i, link) in self.links.iter_mut().enumerate() {
            if let Some(e) = link.tick(self.poll.registry(), link_token(i), now) {
                log_event(&self.names, &e);
            }
        }
    }

    /// Drains the cores' outputs: membership's events, the takeover step (its
    /// adverts go into the next heartbeat), transmits on every link, then events.
    fn drain_outputs(&mut self, now: Instant) {
        self.drain_membership_events(now);
        if let Some(ping) = self.ping.as_ref() {
            let local = ping.reachable(now);
            self.membership.set_local_ping_reachable(local);
            let peer = self.membership.peer_ping_reachable();
            self.takeover.ping(now, local, peer);
        }
        self.takeover.step(now, &mut self.membership);
        self.disks.drain(now);
        for _ in 0..TRANSMITS_PER_ITERATION_MAX {
            let Some(repr) = self.membership.poll_transmit(now) else {
                break;
            };
            let n = encode(&self.keyring, &repr, &mut self.tx_frame);
            assert!(n <= ENCODED_MAX);
            if n == 0 {
                continue;
            }
            for link in self.links.iter_mut() {
                if let Some(e) = link.send(self.poll.registry(), &self.tx_frame[..n], now) {
                    log_event(&self.names, &e);
                }
            }
        }
        self.drain_membership_events(now);
        let dropped = slog::take_dropped();
        if dropped > 0 {
            log_event(&self.names, &Event::LogDropped { count: dropped });
        }
    }

    fn drain_membership_events(&mut self, now: Instant) {
        for _ in 0..EVENTS_PER_ITERATION_MAX {
            let Some(event) = self.membership.poll_event() else {
                break;
            };
            log_event(&self.names, &event);
            if let Event::PeerState {
                to: crate::core::PeerState::Dead,
                ..
            } = event
            {
                // The heartbeats say the peer is gone: make the replication
                // connections prove the opposite quickly, so a takeover's
                // promotion does not wait for their idle timeout.
                self.disks.peer_dead(now);
            }
        }
    }

    fn answer(&mut self, request: Request, now: Instant) -> Vec<u8> {
        match request {
            Request::Status => control::render_text(&self.snapshot(now)).into_bytes(),
            Request::StatusJson => control::render_json(&self.snapshot(now)).into_bytes(),
            Request::Command(command) => {
                self.takeover.command(now, command);
                format!("ok: {}\n", control::command_line(command)).into_bytes()
            }
            Request::Disk(cmd) => self.disks.answer(now, &cmd).into_bytes(),
            Request::Unknown => b"error: unknown request (try `status`, `status json`, \
`standby all|local|foreign` or `takeover all|local|foreign`)\n"
                .to_vec(),
        }
    }

    /// Copies the state `status` shows.
    pub fn snapshot(&self, now: Instant) -> StatusSnapshot {
        let allocations = super::alloc_count::allocations();
        let m = &self.membership;
        let links = (0..self.links.len())
            .map(|i| {
                let id = LinkId(i as u8);
                let stats = m.link_stats(id);
                LinkStatus {
                    name: self.names.links[i].clone(),
                    state: format!("{:?}", m.link_state(id)),
                    last_rx_age_ms: m.link_last_rx(id).map(|t| now.saturating_since(t).millis()),
                    rx_ok: stats.rx_ok,
                    gap_max_ms: stats.gap_max_ms,
                    rtt_ms: stats.rtt_ms,
                    rejected: stats.rx_rejected,
                }
            })
            .collect();
        StatusSnapshot {
            node: self.names.node.clone(),
            boot_epoch: self.boot_epoch,
            uptime_ms: now.millis(),
            peer: self.names.peer.clone(),
            peer_state: format!("{:?}", m.peer_state()),
            peer_epoch: m.peer_epoch(),
            config_match: m.peer_digest().map(|d| d == self.digest),
            links,
            groups: self.takeover.status(m),
            disks: self.disks.status(now),
            allocations,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_classify_and_unknown_ignored() {
        assert_eq!(Source::of(SIGNAL), Source::Signal);
        assert_eq!(Source::of(CONTROL), Source::Control);
        assert_eq!(
            Source::of(Token(CONTROL_CONN_FIRST + 3)),
            Source::ControlConn(3)
        );
        assert_eq!(Source::of(link_token(2)), Source::Link(2));
        assert_eq!(Source::of(Token(LINK_FIRST + LINKS_MAX)), Source::Unknown);
        assert_eq!(Source::of(Token(7)), Source::Unknown);
        assert_eq!(Source::of(Token(RUNNER_FIRST)), Source::Runner);
        assert_eq!(
            Source::of(Token(RUNNER_FIRST + runner::TOKENS - 1)),
            Source::Runner
        );
        assert_eq!(
            Source::of(Token(RUNNER_FIRST + runner::TOKENS)),
            Source::Unknown
        );
    }

    #[test]
    fn lag_reported_once_per_window_with_worst() {
        let mut lag = LagMonitor::new(Duration::from_millis(200));
        let t = Instant::from_millis;
        assert_eq!(lag.observe(t(1000), t(1050)), None);
        assert_eq!(
            lag.observe(t(1000), t(1100)),
            Some(Event::LoopLag { lag_ms: 100 })
        );
        assert_eq!(lag.observe(t(2000), t(2300)), None);
        assert_eq!(lag.observe(t(2000), t(2150)), None);
        assert_eq!(
            lag.observe(t(12_000), t(12_120)),
            Some(Event::LoopLag { lag_ms: 300 })
        );
    }

    #[test]
    fn link_names_follow_the_brief() {
        let l = 1;
        assert_eq!(
            Medium::Bcast {
                iface: "eth1".into(),
                line: l
            }
            .link_name(),
            "eth1"
        );
        let ucast = Medium::Ucast {
            iface: "eth1".into(),
            addr: std::net::Ipv4Addr::new(10, 0, 0, 2),
            line: l,
        };
        assert_eq!(ucast.link_name(), "eth1-ucast");
        assert_eq!(
            Medium::Serial {
                device: "/dev/ttyS0".into(),
                line: l
            }
            .link_name(),
            "ttyS0"
        );
        let pts = Medium::Serial {
            device: "/dev/pts/3".into(),
            line: l,
        };
        assert_eq!(pts.link_name(), "pts/3");
    }
}
