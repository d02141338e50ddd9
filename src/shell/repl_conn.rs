//! The replication connection of one resource: TCP to the peer's replica,
//! authenticated, carrying the engine's opaque (kind, header, payload) frames.
//!
//! Layer: shell (sockets, getrandom). Lives inside the daemon's single mio loop
//! and never blocks; the bytes' meaning is `wire::repl`'s, the messages' the
//! engine's. One [`ReplConn`] per resource.
//!
//! # Lifecycle
//!
//! ```text
//!   StandAlone --connect()--> Connecting (listen on `address`, dial `peer_address`
//!        ^                      every connect_interval; each socket = a candidate)
//!        |                         | candidate authenticated and chosen
//!     close()                      v
//!        +------------------------ Up --(EOF, error, idle, bad frame, superseded)--> Connecting
//! ```
//!
//! Candidates: at most [`SLOTS`] sockets at once (outgoing or accepted), each
//! running its own `wire::repl::Handshake` under `handshake_timeout` (connect
//! time included). Both nodes dial each other, so two candidates may
//! authenticate; the *arbiter*, the node whose name sorts first, keeps the
//! first one that authenticates (sends Select on it) and closes the others; the
//! other node uses a socket only once Select arrives on it. A candidate that
//! authenticates on the arbiter while it is already Up is closed, and a
//! keepalive is sent on the live socket: if the peer restarted, that write draws
//! the RST that takes the stale connection down, and the peer's next dial wins.
//! Select arriving on a new socket while Up means the arbiter restarted: the old
//! one goes `Down(Superseded)`, the new one `Up`.
//!
//! # Events, in order
//!
//! `Up` once per connection, then `Msg`s in stream order, then exactly one `Down`;
//! `Rejected` for a candidate that failed authentication (never while it is the
//! live connection); `Drained` when a send refused with `Full` may be retried.
//!
//! # Bounds
//!
//! - send queue: `send_queue_bytes_max` bytes of frames (prefix + header +
//!   payload); `send` returns `Full` beyond it. Payloads are `Arc`s written with
//!   writev straight from the engine's buffer, never copied into a big buffer.
//! - receive: reading stops while [`EVENTS_MAX`] messages or
//!   [`EVENT_BYTES_MAX`] payload bytes wait in the event queue, and after
//!   [`READS_PER_CALL_MAX`] reads; the rest is read when `handle_timeout` runs
//!   (`poll_timeout` is due at once while work is pending).
//! - time: handshake_timeout per candidate; idle_timeout on the live socket
//!   (each side sends a keepalive frame after keepalive_interval of silence).
//!
//! # Driving it (the owner's side)
//!
//! `new(cfg)`, `register(registry, token_base)` (uses [`TOKENS`] tokens), then
//! `connect(now)`. Each loop turn: `ready(token, event, now)` for tokens it
//! `owns`; `handle_timeout(now)` (cheap when nothing is due; `poll_timeout`
//! returns a past instant, `Instant::ZERO`, while work is pending); drain
//! `poll_event` fully; `send` (and optionally `flush(now)` after a burst).
//! `Rejected` repeats every connect_interval while a misconfigured peer keeps
//! dialling: log it rate-limited. `close()` queues `Down(Closed)` itself.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, IoSlice, Read, Write};
use std::net::SocketAddr;

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use crate::core::replication::Payload;
use crate::time::{Duration, Instant};
use crate::wire::repl::{
    emit_prefix, Cause, FrameDecoder, FrameError, Handshake, HsStatus, Identity, Reject,
    CHALLENGE_LEN, HEADER_MAX, KIND_KEEPALIVE, PAYLOAD_MAX, PREFIX_LEN,
};

/// Connection slots (candidates plus the live one): one outgoing, one incoming
/// and the live socket while a restarted peer dials again. Accepted sockets
/// take at most `SLOTS - 1`, so our dial always has one.
pub const SLOTS: usize = 3;
/// Tokens used from `token_base`: the listener, then one per slot.
pub const TOKENS: usize = 1 + SLOTS;
/// Messages waiting in the event queue before reading pauses.
pub const EVENTS_MAX: usize = 64;
/// Payload bytes waiting in the event queue before reading pauses (8 full writes).
pub const EVENT_BYTES_MAX: usize = 8 << 20;
/// Reads (or writes) per socket per call, so one busy peer cannot starve the loop.
pub const READS_PER_CALL_MAX: usize = 64;
/// Per-socket receive buffer for small frames and handshake bytes.
pub const RX_BUF_BYTES: usize = 64 << 10;
/// Payload bytes still expected above which the socket is read straight into the
/// payload's own `Vec` (below it, one read picks up several small frames).
pub const DIRECT_READ_MIN: usize = 16 << 10;
/// Slices per writev (Linux's IOV_MAX is 1024; two per frame).
pub const IOVECS_MAX: usize = 64;
/// Accepts per listener event (more wait for the next call).
pub const ACCEPTS_PER_CALL_MAX: usize = 8;

/// Everything one resource's connection needs, passed explicitly.
#[derive(Clone, Debug)]
pub struct ReplConnConfig {
    /// Resource name (both sides must agree).
    pub resource: String,
    /// This node's name (`on NAME`).
    pub node: String,
    /// The peer's name.
    pub peer: String,
    /// `net { shared-secret }`, or the authkeys key when none is set.
    pub secret: Vec<u8>,
    /// This node's `address` (listened on).
    pub address: SocketAddr,
    /// The peer's `address` (dialled).
    pub peer_address: SocketAddr,
    /// DRBD's connect-int: pause between dials (10 s in DRBD).
    pub connect_interval: Duration,
    /// Longest time from dial or accept to an authenticated, selected connection.
    pub handshake_timeout: Duration,
    /// Send a keepalive after this much sending silence (DRBD's ping-int).
    pub keepalive_interval: Duration,
    /// Drop the connection after this much receiving silence (DRBD's timeout).
    pub idle_timeout: Duration,
    /// Send queue bound, bytes.
    pub send_queue_bytes_max: usize,
}

impl ReplConnConfig {
    /// DRBD's defaults: connect-int 10 s, ping-int 10 s... shortened where a
    /// replicated write would otherwise hang: keepalive 2 s, idle 6 s (DRBD's
    /// `timeout 60` tenths), handshake 5 s, 8 MiB send queue.
    pub fn new(
        resource: &str,
        node: &str,
        peer: &str,
        secret: &[u8],
        address: SocketAddr,
        peer_address: SocketAddr,
    ) -> ReplConnConfig {
        ReplConnConfig {
            resource: resource.into(),
            node: node.into(),
            peer: peer.into(),
            secret: secret.to_vec(),
            address,
            peer_address,
            connect_interval: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(6),
            send_queue_bytes_max: 8 << 20,
        }
    }

    /// Checks the relations the connection relies on.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.address == self.peer_address {
            return Err("address and peer address are the same");
        }
        if self.idle_timeout <= self.keepalive_interval {
            return Err("idle timeout must exceed the keepalive interval");
        }
        if self.send_queue_bytes_max < PREFIX_LEN + HEADER_MAX + PAYLOAD_MAX {
            return Err("send queue must hold at least one largest frame");
        }
        if self.connect_interval == Duration::ZERO || self.handshake_timeout == Duration::ZERO {
            return Err("connect interval and handshake timeout must be positive");
        }
        self.identity().check()
    }

    fn identity(&self) -> Identity {
        Identity {
            secret: self.secret.clone(),
            resource: self.resource.clone(),
            node: self.node.clone(),
            peer: self.peer.clone(),
            // The node with the smaller name arbitrates: both sides verify both
            // names in the handshake, so they always agree, even when the
            // addresses one dials and the other binds differ (NAT, 0.0.0.0).
            arbiter: self.node < self.peer,
        }
    }
}

/// Why the live connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownReason {
    /// `close()` was called here.
    Closed,
    /// The peer closed the stream.
    Eof,
    /// A socket error (reset, unreachable...).
    Io(ErrorKind),
    /// Nothing received for `idle_timeout`.
    Idle,
    /// The stream could not be decoded.
    Frame(FrameError),
    /// The arbiter chose a newer connection (it restarted).
    Superseded,
}

impl core::fmt::Display for DownReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DownReason::Closed => f.write_str("closed"),
            DownReason::Eof => f.write_str("eof"),
            DownReason::Io(k) => write!(f, "io_{k:?}"),
            DownReason::Idle => f.write_str("idle"),
            DownReason::Frame(e) => write!(f, "frame_{e}"),
            DownReason::Superseded => f.write_str("superseded"),
        }
    }
}

/// What the connection reports to its owner (drain with `poll_event`).
// Msg (header inline) is the common variant; boxing it would allocate per message
// to shrink the rare ones. The queue holds at most EVENTS_MAX + a few of them.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq, Eq)]
pub enum ConnEvent {
    /// Authenticated and chosen; messages may be sent.
    Up {
        /// The peer's socket address.
        peer: SocketAddr,
        /// We dialled it (rather than accepted it).
        outgoing: bool,
    },
    /// A message from the peer's engine: kind, header, payload (empty if none).
    Msg(u8, heapless::Vec<u8, HEADER_MAX>, Vec<u8>),
    /// The live connection ended; unsent messages were dropped.
    Down(DownReason),
    /// A candidate failed authentication (wrong secret, resource or peer name).
    Rejected {
        /// The other end's socket address.
        peer: SocketAddr,
        /// Why.
        reject: Reject,
    },
    /// The send queue has room again after a `Full`.
    Drained,
}

/// Why `send` refused a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// The queue is at its bound; wait for [`ConnEvent::Drained`].
    Full,
    /// No live connection; the message would go nowhere.
    NotUp,
}

/// Counters (the resync test counts bytes on the wire).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplStats {
    /// Bytes written to any socket (handshakes and framing included).
    pub bytes_sent: u64,
    /// Bytes read from any socket.
    pub bytes_received: u64,
    /// Frames queued with `send` and fully written.
    pub frames_sent: u64,
    /// Frames delivered as `Msg` (keepalives excluded).
    pub frames_received: u64,
    /// Connections that went Up.
    pub ups: u64,
    /// Candidates rejected (either side's verdict).
    pub rejects: u64,
    /// Dials started.
    pub dials: u64,
}

/// A queued frame: prefix and header together, the payload shared.
struct OutFrame {
    head: heapless::Vec<u8, { PREFIX_LEN + HEADER_MAX }>,
    payload: Option<Payload>,
    /// Bytes of head + payload already written.
    written: usize,
    /// Counted in `frames_sent` (keepalives are not).
    counted: bool,
}

impl OutFrame {
    fn len(&self) -> usize {
        self.head.len() + self.payload.as_ref().map_or(0, |p| p.len())
    }
}

enum Phase {
    /// Dial in progress (outgoing only).
    Dialling,
    /// Handshake running (or, off the arbiter, waiting for Select).
    Handshake(Box<Handshake>),
    /// The live connection.
    Up,
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    outgoing: bool,
    phase: Phase,
    /// Handshake bytes still to send before any frame (the arbiter's Select).
    pre: Vec<u8>,
    deadline: Instant,
    decoder: FrameDecoder,
    rx: Vec<u8>,
    rx_start: usize,
    rx_end: usize,
    /// Reading stopped at a bound, not at WouldBlock: resume without an event.
    rx_pending: bool,
    /// Writing stopped at a bound, or new frames queued: resume without an event.
    tx_pending: bool,
    last_rx: Instant,
    last_tx: Instant,
}

/// What a connection step decided, applied by the parent.
enum Outcome {
    Continue,
    Drop(Option<Reject>),
    Down(DownReason),
}

/// One resource's replication connection.
pub struct ReplConn {
    cfg: ReplConnConfig,
    id: Identity,
    registry: Option<Registry>,
    token_base: usize,
    listener: Option<TcpListener>,
    slots: [Option<Conn>; SLOTS],
    live: Option<usize>,
    active: bool,
    next_dial: Option<Instant>,
    sendq: VecDeque<OutFrame>,
    queued_bytes: usize,
    refused: bool,
    events: VecDeque<ConnEvent>,
    event_bytes: usize,
    stats: ReplStats,
    /// Within a readable event without the peer's end: a short read ends reading.
    short_read_ends: bool,
}

impl ReplConn {
    /// A StandAlone connection. Panics if `cfg` fails [`ReplConnConfig::check`]
    /// (the config loader checks it first, with file:line).
    pub fn new(cfg: ReplConnConfig) -> ReplConn {
        if let Err(e) = cfg.check() {
            panic!("replication connection config: {e}");
        }
        ReplConn {
            id: cfg.identity(),
            cfg,
            registry: None,
            token_base: 0,
            listener: None,
            slots: [None, None, None],
            live: None,
            active: false,
            next_dial: None,
            sendq: VecDeque::new(),
            queued_bytes: 0,
            refused: false,
            events: VecDeque::new(),
            event_bytes: 0,
            stats: ReplStats::default(),
            short_read_ends: false,
        }
    }

    /// Keeps a handle on the loop's registry; tokens `token_base ..
    /// token_base + TOKENS` are ours from now on.
    pub fn register(&mut self, registry: &Registry, token_base: usize) -> io::Result<()> {
        self.registry = Some(registry.try_clone()?);
        self.token_base = token_base;
        Ok(())
    }

    /// Whether `token` is one of ours.
    pub fn owns(&self, token: Token) -> bool {
        (self.token_base..self.token_base + TOKENS).contains(&token.0)
    }

    /// This node arbitrates between simultaneous connections.
    pub fn is_arbiter(&self) -> bool {
        self.id.arbiter
    }

    /// A live connection exists.
    pub fn is_up(&self) -> bool {
        self.live.is_some()
    }

    /// Counters.
    pub fn stats(&self) -> ReplStats {
        self.stats
    }

    /// Bytes waiting in the send queue.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// The listener's local address (tests bind port 0... and read it here).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Starts listening and dialling (DRBD's `connect`). Errors: binding the
    /// listener failed (address not on this host, or in use).
    pub fn connect(&mut self, now: Instant) -> io::Result<()> {
        let registry = self.registry.as_ref().expect("register before connect");
        if self.listener.is_none() {
            let mut listener = TcpListener::bind(self.cfg.address)?;
            registry.register(&mut listener, Token(self.token_base), Interest::READABLE)?;
            self.listener = Some(listener);
        }
        self.active = true;
        self.next_dial.get_or_insert(now);
        Ok(())
    }

    /// Stops everything (DRBD's `disconnect`): closes the sockets and the
    /// listener; `Down(Closed)` if a connection was live.
    pub fn close(&mut self) {
        self.active = false;
        self.next_dial = None;
        if let Some(live) = self.live {
            self.go_down(live, DownReason::Closed);
        }
        for slot in 0..SLOTS {
            self.drop_slot(slot);
        }
        if let (Some(mut l), Some(r)) = (self.listener.take(), self.registry.as_ref()) {
            let _ = r.deregister(&mut l);
        }
    }

    /// Queues a message for the peer. The payload is written from its `Arc`.
    pub fn send(
        &mut self,
        kind: u8,
        header: &[u8],
        payload: Option<Payload>,
    ) -> Result<(), SendError> {
        assert!(
            kind != KIND_KEEPALIVE,
            "kind 0 is the connection's keepalive"
        );
        let Some(live) = self.live else {
            return Err(SendError::NotUp);
        };
        let len = PREFIX_LEN + header.len() + payload.as_ref().map_or(0, |p| p.len());
        if !self.sendq.is_empty() && self.queued_bytes + len > self.cfg.send_queue_bytes_max {
            self.refused = true;
            return Err(SendError::Full);
        }
        self.push_frame(kind, header, payload, true);
        self.conn(live).tx_pending = true;
        Ok(())
    }

    /// Writes queued frames now instead of at the next `handle_timeout`: the
    /// owner calls it after a burst of `send`s to save a loop turn on the
    /// latency path. Errors surface as events, as from `ready`.
    pub fn flush(&mut self, now: Instant) {
        if let Some(live) = self.live {
            if self.conn(live).tx_pending {
                self.service(live, now);
            }
        }
    }

    /// Whether `send` would accept a largest frame now.
    pub fn can_send(&self) -> bool {
        self.live.is_some()
            && (self.sendq.is_empty()
                || self.queued_bytes + PREFIX_LEN + HEADER_MAX + PAYLOAD_MAX
                    <= self.cfg.send_queue_bytes_max)
    }

    /// The next event, in order.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ConnEvent> {
        let ev = self.events.pop_front()?;
        if let ConnEvent::Msg(_, _, p) = &ev {
            self.event_bytes -= p.len();
        }
        Some(ev)
    }

    /// The earliest time `handle_timeout` has work; `Instant::ZERO` when work
    /// is pending right now (bounded reads or queued writes).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = if self.active && self.live.is_none() {
            self.next_dial
        } else {
            None
        };
        for (slot, c) in self.slots.iter().enumerate() {
            let Some(c) = c else { continue };
            let deadline = if (c.rx_pending && self.events_room()) || c.tx_pending {
                Instant::ZERO
            } else if Some(slot) == self.live {
                let idle = c.last_rx + self.cfg.idle_timeout;
                if self.sendq.is_empty() {
                    idle.min(c.last_tx + self.cfg.keepalive_interval)
                } else {
                    // Frames are waiting for a writable event: no keepalive needed.
                    idle
                }
            } else {
                c.deadline
            };
            t = Some(t.map_or(deadline, |t| t.min(deadline)));
        }
        t
    }

    /// Readiness on one of our tokens (others are ignored).
    pub fn ready(&mut self, token: Token, event: &Event, now: Instant) {
        // Both directions are tried: writes stop at WouldBlock, reads at
        // WouldBlock or at a short read, unless the peer's end may be queued
        // behind the data (see `ReadResult::Drained`).
        if !self.owns(token) {
            return;
        }
        match token.0 - self.token_base {
            0 => self.accept_all(now),
            n => {
                self.short_read_ends = !(event.is_read_closed() || event.is_error());
                self.service(n - 1, now);
                self.short_read_ends = false;
            }
        }
    }

    /// Timers: dials, handshake deadlines, keepalives, idle, and pending work.
    pub fn handle_timeout(&mut self, now: Instant) {
        for slot in 0..SLOTS {
            let Some(c) = self.slots[slot].as_ref() else {
                continue;
            };
            if Some(slot) == self.live {
                if now >= c.last_rx + self.cfg.idle_timeout {
                    self.go_down(slot, DownReason::Idle);
                    continue;
                }
                if now >= c.last_tx + self.cfg.keepalive_interval && self.sendq.is_empty() {
                    self.push_frame(KIND_KEEPALIVE, &[], None, false);
                    self.conn(slot).tx_pending = true;
                }
            } else if now >= c.deadline {
                if matches!(c.phase, Phase::Dialling) {
                    // The peer never answered the SYN: a dial failure, not a rejection.
                    self.drop_slot(slot);
                } else {
                    self.reject_candidate(slot, Cause::Timeout);
                }
                continue;
            }
            let c = self.conn(slot);
            if c.rx_pending || c.tx_pending {
                self.service(slot, now);
            }
        }
        if self.active && self.live.is_none() && self.next_dial.is_some_and(|t| now >= t) {
            self.next_dial = Some(now + self.cfg.connect_interval);
            self.dial(now);
        }
    }

    // ---- sockets ----

    fn conn(&mut self, slot: usize) -> &mut Conn {
        self.slots[slot].as_mut().expect("slot in use")
    }

    fn free_slot(&self) -> Option<usize> {
        self.slots.iter().position(|s| s.is_none())
    }

    /// A slot for an accepted socket. Accepted sockets never take the last
    /// slot: one is always left for our own dial, so strangers holding silent
    /// connections open cannot keep us from reaching the peer.
    fn free_slot_incoming(&self) -> Option<usize> {
        let incoming = self.slots.iter().flatten().filter(|c| !c.outgoing).count();
        if incoming + 1 >= SLOTS {
            return None;
        }
        self.free_slot()
    }

    fn events_room(&self) -> bool {
        self.events.len() < EVENTS_MAX && self.event_bytes < EVENT_BYTES_MAX
    }

    fn dial(&mut self, now: Instant) {
        // One dial at a time.
        if self.slots.iter().flatten().any(|c| c.outgoing) {
            return;
        }
        let Some(slot) = self.free_slot() else { return };
        self.stats.dials += 1;
        match TcpStream::connect(self.cfg.peer_address) {
            Ok(stream) => self.install(slot, stream, self.cfg.peer_address, true, now),
            Err(e) => log::debug!("repl_dial_failed resource={} error={e}", self.cfg.resource),
        }
    }

    fn accept_all(&mut self, now: Instant) {
        for _ in 0..ACCEPTS_PER_CALL_MAX {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => match self.free_slot_incoming() {
                    Some(slot) => self.install(slot, stream, peer, false, now),
                    // Full: dropping closes it; the peer dials again later.
                    None => log::debug!("repl_accept_full resource={}", self.cfg.resource),
                },
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::debug!("repl_accept_error resource={} error={e}", self.cfg.resource);
                    return;
                }
            }
        }
        // Bound reached: the rest waits; a later dial or event brings us back.
        log::debug!("repl_accept_bound resource={}", self.cfg.resource);
    }

    fn install(
        &mut self,
        slot: usize,
        mut stream: TcpStream,
        peer: SocketAddr,
        outgoing: bool,
        now: Instant,
    ) {
        let registry = self.registry.as_ref().expect("registered");
        let token = Token(self.token_base + 1 + slot);
        if let Err(e) =
            registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
        {
            log::debug!(
                "repl_register_failed resource={} error={e}",
                self.cfg.resource
            );
            return;
        }
        let phase = if outgoing {
            Phase::Dialling
        } else {
            let _ = stream.set_nodelay(true);
            Phase::Handshake(Box::new(Handshake::new(&self.id, challenge())))
        };
        self.slots[slot] = Some(Conn {
            stream,
            peer,
            outgoing,
            phase,
            pre: Vec::new(),
            deadline: now + self.cfg.handshake_timeout,
            decoder: FrameDecoder::new(),
            rx: vec![0; RX_BUF_BYTES],
            rx_start: 0,
            rx_end: 0,
            rx_pending: false,
            // Send our Hello without waiting for an event.
            tx_pending: !outgoing,
            last_rx: now,
            last_tx: now,
        });
        // Send our Hello (or see an immediate dial result) without waiting.
        self.service(slot, now);
    }

    /// Reads and writes one socket as far as it goes, then applies the outcome.
    fn service(&mut self, slot: usize, now: Instant) {
        if self.slots[slot].is_none() {
            return;
        }
        let outcome = match self.conn(slot).phase {
            Phase::Dialling => self.finish_dial(slot),
            _ => Outcome::Continue,
        };
        let outcome = match outcome {
            Outcome::Continue => self.pump_rx(slot, now),
            other => other,
        };
        let outcome = match outcome {
            Outcome::Continue => self.pump_tx(slot, now),
            other => other,
        };
        match outcome {
            Outcome::Continue => {}
            Outcome::Drop(reject) => self.drop_candidate(slot, reject),
            Outcome::Down(reason) => self.go_down(slot, reason),
        }
    }

    fn finish_dial(&mut self, slot: usize) -> Outcome {
        let c = self.slots[slot].as_mut().expect("slot in use");
        match c.stream.take_error() {
            Ok(Some(e)) | Err(e) => {
                log::debug!("repl_dial_error error={e}");
                return Outcome::Drop(None);
            }
            Ok(None) => {}
        }
        match c.stream.peer_addr() {
            Ok(_) => {
                let _ = c.stream.set_nodelay(true);
                c.phase = Phase::Handshake(Box::new(Handshake::new(&self.id, challenge())));
                c.tx_pending = true;
                Outcome::Continue
            }
            // Still connecting: wait for the next event.
            Err(e) if e.kind() == ErrorKind::NotConnected => Outcome::Continue,
            Err(e) => {
                log::debug!("repl_dial_error error={e}");
                Outcome::Drop(None)
            }
        }
    }

    // ---- receiving ----

    fn pump_rx(&mut self, slot: usize, now: Instant) -> Outcome {
        if matches!(self.conn(slot).phase, Phase::Dialling) {
            return Outcome::Continue;
        }
        self.conn(slot).rx_pending = false;
        let mut drained = false;
        for _ in 0..READS_PER_CALL_MAX {
            match self.consume_buffered(slot) {
                Outcome::Continue => {}
                other => return other,
            }
            if self.slots[slot].is_none() {
                return Outcome::Continue;
            }
            let is_live = self.live == Some(slot);
            if is_live && !self.events_room() {
                self.conn(slot).rx_pending = true;
                return Outcome::Continue;
            }
            if drained && self.short_read_ends {
                return Outcome::Continue;
            }
            match self.read_once(slot, now) {
                Ok(ReadResult::More) => {}
                Ok(ReadResult::Drained) => drained = true,
                Ok(ReadResult::Blocked) => return Outcome::Continue,
                Err(outcome) => return outcome,
            }
        }
        self.conn(slot).rx_pending = true;
        Outcome::Continue
    }

    /// One read: straight into a large payload, else into the socket's buffer.
    fn read_once(&mut self, slot: usize, now: Instant) -> Result<ReadResult, Outcome> {
        let is_live = self.live == Some(slot);
        let c = self.conn(slot);
        let direct = is_live && c.decoder.payload_remaining() >= DIRECT_READ_MIN;
        let (result, asked) = if direct {
            let want = c.decoder.want();
            let asked = want.len();
            (c.stream.read(want), asked)
        } else {
            (c.stream.read(&mut c.rx), c.rx.len())
        };
        let n = match result {
            Ok(0) if is_live => return Err(Outcome::Down(DownReason::Eof)),
            Ok(0) => return Err(Outcome::Drop(None)),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(ReadResult::Blocked),
            Err(e) if e.kind() == ErrorKind::Interrupted => return Ok(ReadResult::More),
            Err(e) if is_live => return Err(Outcome::Down(DownReason::Io(e.kind()))),
            Err(_) => return Err(Outcome::Drop(None)),
        };
        c.last_rx = now;
        self.stats.bytes_received += n as u64;
        let c = self.conn(slot);
        if direct {
            match c.decoder.advance(n) {
                Ok(frame) => {
                    if let Some(f) = frame {
                        self.deliver(f.kind, f.header, f.payload);
                    }
                }
                Err(e) => return Err(Outcome::Down(DownReason::Frame(e))),
            }
        } else {
            c.rx_start = 0;
            c.rx_end = n;
        }
        Ok(if n < asked {
            ReadResult::Drained
        } else {
            ReadResult::More
        })
    }

    /// Feeds buffered bytes to the handshake or the frame decoder, until the
    /// buffer is empty or the event queue is full.
    fn consume_buffered(&mut self, slot: usize) -> Outcome {
        // Bound: each pass consumes bytes, completes a frame or leaves.
        for _ in 0..RX_BUF_BYTES + 1 {
            let c = self.slots[slot].as_mut().expect("slot in use");
            if c.rx_start == c.rx_end {
                return Outcome::Continue;
            }
            if let Phase::Handshake(hs) = &mut c.phase {
                let input = &c.rx[c.rx_start..c.rx_end];
                match hs.feed(&self.id, input) {
                    Ok((used, status)) => {
                        c.rx_start += used;
                        c.tx_pending = true;
                        match self.on_status(slot, status) {
                            Outcome::Continue => {}
                            other => return other,
                        }
                        if used == 0 && status != HsStatus::Selected {
                            return Outcome::Continue;
                        }
                    }
                    Err(reject) => return Outcome::Drop(Some(reject)),
                }
                continue;
            }
            if self.live != Some(slot) {
                // Authenticated candidate that is not (yet) chosen: the peer
                // sends nothing more until Select, so extra bytes are a violation.
                return Outcome::Drop(Some(Reject {
                    cause: Cause::Malformed,
                    by_peer: false,
                }));
            }
            if !self.events_room() {
                self.conn(slot).rx_pending = true;
                return Outcome::Continue;
            }
            let c = self.slots[slot].as_mut().expect("slot in use");
            let input = &c.rx[c.rx_start..c.rx_end];
            match c.decoder.feed(input) {
                Ok((used, frame)) => {
                    c.rx_start += used;
                    if let Some(f) = frame {
                        self.deliver(f.kind, f.header, f.payload);
                    }
                }
                Err(e) => return Outcome::Down(DownReason::Frame(e)),
            }
        }
        unreachable!("consume_buffered exceeded its bound");
    }

    fn deliver(&mut self, kind: u8, header: heapless::Vec<u8, HEADER_MAX>, payload: Vec<u8>) {
        if kind == KIND_KEEPALIVE {
            return;
        }
        self.stats.frames_received += 1;
        self.event_bytes += payload.len();
        self.events.push_back(ConnEvent::Msg(kind, header, payload));
    }

    // ---- handshake decisions ----

    /// Applies a handshake status: the arbiter's choice, or the peer's Select.
    fn on_status(&mut self, slot: usize, status: HsStatus) -> Outcome {
        match (status, self.id.arbiter, self.live) {
            // Still talking, or (off the arbiter) waiting for Select.
            (HsStatus::Pending, _, _) | (HsStatus::Authenticated, false, _) => Outcome::Continue,
            // The arbiter's first authenticated candidate wins.
            (HsStatus::Authenticated, true, None) => {
                let Phase::Handshake(hs) = &mut self.conn(slot).phase else {
                    unreachable!("status from a handshake");
                };
                hs.select();
                self.go_up(slot);
                Outcome::Continue
            }
            // Already live on another: close this one, probe the live one.
            (HsStatus::Authenticated, true, Some(live)) => {
                if self.sendq.is_empty() {
                    self.push_frame(KIND_KEEPALIVE, &[], None, false);
                    self.conn(live).tx_pending = true;
                }
                Outcome::Drop(None)
            }
            // The arbiter chose this one; a live older one was its past life.
            (HsStatus::Selected, false, live) => {
                if let Some(old) = live {
                    self.go_down(old, DownReason::Superseded);
                }
                self.go_up(slot);
                Outcome::Continue
            }
            (HsStatus::Selected, true, _) => unreachable!("the arbiter never receives Select"),
        }
    }

    fn go_up(&mut self, slot: usize) {
        let c = self.conn(slot);
        let Phase::Handshake(hs) = std::mem::replace(&mut c.phase, Phase::Up) else {
            unreachable!("up from a handshake");
        };
        c.pre = hs.output().to_vec();
        c.tx_pending = true;
        let (peer, outgoing) = (c.peer, c.outgoing);
        self.live = Some(slot);
        self.stats.ups += 1;
        self.refused = false;
        log::debug!(
            "repl_up resource={} peer={peer} outgoing={outgoing}",
            self.cfg.resource
        );
        self.events.push_back(ConnEvent::Up { peer, outgoing });
        for other in 0..SLOTS {
            if other != slot {
                self.drop_slot(other);
            }
        }
    }

    fn go_down(&mut self, slot: usize, reason: DownReason) {
        assert_eq!(
            self.live,
            Some(slot),
            "down on a connection that is not live"
        );
        self.live = None;
        self.drop_slot(slot);
        self.sendq.clear();
        self.queued_bytes = 0;
        self.refused = false;
        log::debug!("repl_down resource={} reason={reason}", self.cfg.resource);
        self.events.push_back(ConnEvent::Down(reason));
        // Dial again right away (a restarted peer is likely listening already),
        // then every connect_interval.
        if self.active {
            self.next_dial = Some(Instant::ZERO);
        }
    }

    fn reject_candidate(&mut self, slot: usize, cause: Cause) {
        let reject = Reject {
            cause,
            by_peer: false,
        };
        if let Phase::Handshake(hs) = &mut self.conn(slot).phase {
            hs.fail(reject);
        }
        self.drop_candidate(slot, Some(reject));
    }

    /// Closes a candidate, first trying to send its last handshake bytes (a
    /// Verdict naming the cause), and reports a rejection.
    fn drop_candidate(&mut self, slot: usize, reject: Option<Reject>) {
        if self.live == Some(slot) {
            // A live socket's errors are Down, never a silent drop.
            return self.go_down(slot, DownReason::Eof);
        }
        let c = self.conn(slot);
        if let Phase::Handshake(hs) = &c.phase {
            let _ = c.stream.write(hs.output());
        }
        let peer = c.peer;
        self.drop_slot(slot);
        if let Some(reject) = reject {
            self.stats.rejects += 1;
            self.events.push_back(ConnEvent::Rejected { peer, reject });
        }
    }

    fn drop_slot(&mut self, slot: usize) {
        if let Some(mut c) = self.slots[slot].take() {
            if let Some(r) = self.registry.as_ref() {
                let _ = r.deregister(&mut c.stream);
            }
        }
    }

    // ---- sending ----

    fn push_frame(&mut self, kind: u8, header: &[u8], payload: Option<Payload>, counted: bool) {
        let plen = payload.as_ref().map_or(0, |p| p.len());
        let mut head = heapless::Vec::new();
        let ok = head
            .extend_from_slice(&emit_prefix(kind, header.len(), plen))
            .is_ok()
            && head.extend_from_slice(header).is_ok();
        assert!(ok, "prefix and header fit (emit_prefix checked the header)");
        let frame = OutFrame {
            head,
            payload: payload.filter(|p| !p.is_empty()),
            written: 0,
            counted,
        };
        self.queued_bytes += frame.len();
        self.sendq.push_back(frame);
    }

    fn pump_tx(&mut self, slot: usize, now: Instant) -> Outcome {
        let c = self.conn(slot);
        c.tx_pending = false;
        match &mut c.phase {
            Phase::Dialling => Outcome::Continue,
            Phase::Handshake(hs) => match write_some(&mut c.stream, hs.output()) {
                Ok(n) => {
                    hs.sent(n);
                    self.stats.bytes_sent += n as u64;
                    Outcome::Continue
                }
                Err(_) => Outcome::Drop(None),
            },
            Phase::Up => self.flush_live(slot, now),
        }
    }

    /// Writes the Select leftover, then queued frames with writev, until
    /// WouldBlock, an empty queue, or the per-call bound.
    fn flush_live(&mut self, slot: usize, now: Instant) -> Outcome {
        let c = self.slots[slot].as_mut().expect("slot in use");
        if !c.pre.is_empty() {
            match write_some(&mut c.stream, &c.pre) {
                Ok(n) => {
                    c.pre.drain(..n);
                    self.stats.bytes_sent += n as u64;
                }
                Err(e) => return Outcome::Down(DownReason::Io(e.kind())),
            }
            if !c.pre.is_empty() {
                return Outcome::Continue;
            }
        }
        let mut blocked = false;
        for _ in 0..READS_PER_CALL_MAX {
            if self.sendq.is_empty() {
                break;
            }
            let c = self.slots[slot].as_mut().expect("slot in use");
            let n = match writev_queue(&mut c.stream, &self.sendq) {
                Ok(0) => {
                    blocked = true;
                    break;
                }
                Ok(n) => n,
                Err(e) => return Outcome::Down(DownReason::Io(e.kind())),
            };
            c.last_tx = now;
            self.stats.bytes_sent += n as u64;
            self.advance_sendq(n);
        }
        // At WouldBlock a writable event follows; only a bound needs another pass.
        let more = !self.sendq.is_empty() && !blocked;
        self.conn(slot).tx_pending = more;
        if self.refused && self.queued_bytes * 2 <= self.cfg.send_queue_bytes_max {
            self.refused = false;
            self.events.push_back(ConnEvent::Drained);
        }
        Outcome::Continue
    }

    fn advance_sendq(&mut self, mut n: usize) {
        self.queued_bytes -= n;
        while n > 0 {
            let front = self.sendq.front_mut().expect("wrote no more than queued");
            let left = front.len() - front.written;
            if n < left {
                front.written += n;
                return;
            }
            n -= left;
            let done = self.sendq.pop_front().expect("front exists");
            if done.counted {
                self.stats.frames_sent += 1;
            }
        }
    }
}

/// What one read found.
enum ReadResult {
    /// It filled what it asked for: the socket may hold more.
    More,
    /// A short read: the socket was empty when it returned. Edge-triggered
    /// epoll reports any byte that arrives later, so no read that would only
    /// say WouldBlock is needed (half the reads on a busy link were those).
    /// Only within a readable event that did not report the peer's end (an
    /// end queued behind the data raises no further event): elsewhere reads
    /// go on to WouldBlock.
    Drained,
    /// WouldBlock.
    Blocked,
}

/// One write; Ok(0) at WouldBlock, errors otherwise (EOF shows on the read side).
fn write_some(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<usize> {
    if bytes.is_empty() {
        return Ok(0);
    }
    loop {
        match stream.write(bytes) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(0),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// One writev over the head of the queue (prefix+header and payload slices,
/// the payload straight from its Arc). Ok(0) at WouldBlock.
fn writev_queue(stream: &mut TcpStream, q: &VecDeque<OutFrame>) -> io::Result<usize> {
    let mut iov: heapless::Vec<IoSlice<'_>, IOVECS_MAX> = heapless::Vec::new();
    for f in q {
        let head_done = f.written.min(f.head.len());
        let pay_done = f.written - head_done;
        let parts = [
            &f.head[head_done..],
            f.payload.as_ref().map_or(&[][..], |p| &p[pay_done..]),
        ];
        for part in parts.into_iter().filter(|p| !p.is_empty()) {
            if iov.push(IoSlice::new(part)).is_err() {
                break;
            }
        }
        if iov.is_full() {
            break;
        }
    }
    loop {
        match stream.write_vectored(&iov) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(0),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// A fresh challenge from the kernel's CSPRNG (getrandom; never blocks after boot).
fn challenge() -> [u8; CHALLENGE_LEN] {
    let mut c = [0u8; CHALLENGE_LEN];
    let mut filled = 0;
    // Bound: getrandom returns at most 32 MiB per call; 32 bytes come at once.
    for _ in 0..16 {
        let rest = &mut c[filled..];
        // SAFETY: the pointer and length describe `rest`, a live writable slice.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n > 0 {
            filled += n as usize;
        }
        if filled == CHALLENGE_LEN {
            return c;
        }
    }
    panic!("getrandom failed to deliver a challenge");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ReplConnConfig {
        ReplConnConfig::new(
            "r0",
            "debian1",
            "debian2",
            b"secret",
            "10.0.0.1:7788".parse().unwrap(),
            "10.0.0.2:7788".parse().unwrap(),
        )
    }

    #[test]
    fn config_defaults_pass_check_and_first_name_arbitrates() {
        let c = cfg();
        assert_eq!(c.check(), Ok(()));
        assert!(c.identity().arbiter);
        let mut other = c.clone();
        std::mem::swap(&mut other.node, &mut other.peer);
        assert!(!other.identity().arbiter);
    }

    #[test]
    fn config_check_refuses_what_the_connection_cannot_honour() {
        let mut c = cfg();
        c.peer_address = c.address;
        assert!(c.check().is_err());
        let mut c = cfg();
        c.idle_timeout = c.keepalive_interval;
        assert!(c.check().is_err());
        let mut c = cfg();
        c.send_queue_bytes_max = PAYLOAD_MAX;
        assert!(c.check().is_err());
        let mut c = cfg();
        c.peer = c.node.clone();
        assert!(c.check().is_err());
        let mut c = cfg();
        c.connect_interval = Duration::ZERO;
        assert!(c.check().is_err());
    }

    #[test]
    fn down_reasons_print_as_catalogue_words() {
        assert_eq!(DownReason::Idle.to_string(), "idle");
        assert_eq!(
            DownReason::Io(ErrorKind::ConnectionReset).to_string(),
            "io_ConnectionReset"
        );
        assert_eq!(
            DownReason::Frame(FrameError::PayloadLong(7)).to_string(),
            "frame_payload_long_7"
        );
    }

    #[test]
    fn standalone_connection_refuses_sends_and_sleeps() {
        let mut c = ReplConn::new(cfg());
        assert_eq!(c.send(1, b"", None), Err(SendError::NotUp));
        assert!(!c.can_send() && !c.is_up());
        assert_eq!(c.poll_timeout(), None);
        assert_eq!(c.poll_event(), None);
    }
}
