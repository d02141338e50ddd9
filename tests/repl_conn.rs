//! Two replication connections in one mio loop on 127.0.0.1: dialling both
//! ways, authentication failures, 200 MiB under back-pressure, a peer that dies
//! or freezes, and reconnection.
//!
//! Layer: test harness over `shell::repl_conn`. Every wait has a deadline and
//! fails with what it waited for; sockets close when the `ReplConn`s drop
//! (panics included), and no child process or namespace is involved.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use bascule::shell::repl_conn::{ConnEvent, DownReason, ReplConn, ReplConnConfig, SendError};
use bascule::time::{Duration, Instant};
use bascule::wire::repl::Cause;
use mio::{Events, Poll};

const A_BASE: usize = 0;
const B_BASE: usize = 16;
const C_BASE: usize = 32;

/// `N` distinct ports nobody listens on right now (the kernel's choice, held
/// together so none repeats, then released).
fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port"))
        .collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Test timings: fast dials and short timeouts so every test takes seconds.
fn config(node: &str, peer: &str, own: u16, other: u16) -> ReplConnConfig {
    let mut c = ReplConnConfig::new("r0", node, peer, b"shared", addr(own), addr(other));
    c.connect_interval = Duration::from_millis(200);
    c.handshake_timeout = Duration::from_millis(1000);
    c.keepalive_interval = Duration::from_millis(100);
    c.idle_timeout = Duration::from_millis(600);
    c.send_queue_bytes_max = 4 << 20;
    c
}

/// Two connections (plus a restarted third), one loop, one clock.
struct Pair {
    poll: Poll,
    events: Events,
    origin: std::time::Instant,
    a: Option<ReplConn>,
    b: Option<ReplConn>,
    /// A third node: a restarted a or b on another port while the old one is frozen.
    c: Option<ReplConn>,
    /// Whether a is driven (false: frozen, as if SIGSTOPped: no reads, no FIN).
    a_driven: bool,
    /// Whether b is driven.
    b_driven: bool,
}

impl Pair {
    fn new(ca: ReplConnConfig, cb: ReplConnConfig) -> Pair {
        let poll = Poll::new().expect("mio poll");
        let mut pair = Pair {
            poll,
            events: Events::with_capacity(64),
            origin: std::time::Instant::now(),
            a: None,
            b: None,
            c: None,
            a_driven: true,
            b_driven: true,
        };
        pair.a = Some(pair.make(ca, A_BASE));
        pair.b = Some(pair.make(cb, B_BASE));
        pair
    }

    fn make(&self, cfg: ReplConnConfig, base: usize) -> ReplConn {
        let mut c = ReplConn::new(cfg);
        c.register(self.poll.registry(), base).expect("register");
        c
    }

    fn now(&self) -> Instant {
        Instant::from_millis(self.origin.elapsed().as_millis() as u64)
    }

    fn a(&mut self) -> &mut ReplConn {
        self.a.as_mut().expect("a exists")
    }

    fn b(&mut self) -> &mut ReplConn {
        self.b.as_mut().expect("b exists")
    }

    fn c(&mut self) -> &mut ReplConn {
        self.c.as_mut().expect("c exists")
    }

    /// The nodes being driven this step.
    fn driven(&mut self) -> impl Iterator<Item = &mut ReplConn> {
        let (da, db) = (self.a_driven, self.b_driven);
        [
            self.a.as_mut().filter(|_| da),
            self.b.as_mut().filter(|_| db),
            self.c.as_mut(),
        ]
        .into_iter()
        .flatten()
    }

    /// One loop iteration: poll (at most 50 ms), dispatch, timers.
    fn step(&mut self) {
        let now = self.now();
        let mut wait_ms = 50u64;
        for t in self.driven().filter_map(|c| c.poll_timeout()) {
            wait_ms = wait_ms.min(t.saturating_since(now).millis());
        }
        self.poll
            .poll(&mut self.events, Some(StdDuration::from_millis(wait_ms)))
            .expect("poll");
        let now = self.now();
        let events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        for ev in events.iter() {
            for node in self.driven().filter(|n| n.owns(ev.token())) {
                node.ready(ev.token(), ev, now);
            }
        }
        self.events = events;
        for node in self.driven() {
            node.handle_timeout(now);
        }
    }

    /// Steps until `done` holds, failing after `limit_ms` with `what`.
    #[track_caller]
    fn run_until(&mut self, limit_ms: u64, what: &str, mut done: impl FnMut(&mut Pair) -> bool) {
        let start = std::time::Instant::now();
        loop {
            if done(self) {
                return;
            }
            if start.elapsed() > StdDuration::from_millis(limit_ms) {
                let stats: Vec<_> = [&self.a, &self.b, &self.c]
                    .into_iter()
                    .flatten()
                    .map(|c| (c.is_up(), c.stats()))
                    .collect();
                panic!("timed out after {limit_ms} ms waiting for {what}; (up, stats): {stats:?}");
            }
            self.step();
        }
    }

    /// Steps for `ms`, collecting both sides' events.
    fn run_for(&mut self, ms: u64, ea: &mut Vec<ConnEvent>, eb: &mut Vec<ConnEvent>) {
        let start = std::time::Instant::now();
        while start.elapsed() < StdDuration::from_millis(ms) {
            self.step();
            drain(self.a.as_mut(), ea);
            drain(self.b.as_mut(), eb);
        }
    }
}

fn drain(c: Option<&mut ReplConn>, into: &mut Vec<ConnEvent>) {
    if let Some(c) = c {
        while let Some(e) = c.poll_event() {
            into.push(e);
        }
    }
}

fn ups(evs: &[ConnEvent]) -> usize {
    evs.iter()
        .filter(|e| matches!(e, ConnEvent::Up { .. }))
        .count()
}

fn downs(evs: &[ConnEvent]) -> Vec<DownReason> {
    evs.iter()
        .filter_map(|e| match e {
            ConnEvent::Down(r) => Some(*r),
            _ => None,
        })
        .collect()
}

/// A pair on fresh ports, both connecting from the same instant.
fn connected_pair() -> (Pair, Vec<ConnEvent>, Vec<ConnEvent>) {
    connected_pair_with(|_| {})
}

/// As `connected_pair`, both configs edited first.
fn connected_pair_with(
    edit: impl Fn(&mut ReplConnConfig),
) -> (Pair, Vec<ConnEvent>, Vec<ConnEvent>) {
    let [pa, pb] = free_ports();
    let (mut ca, mut cb) = (
        config("alpha", "beta", pa, pb),
        config("beta", "alpha", pb, pa),
    );
    edit(&mut ca);
    edit(&mut cb);
    let mut pair = Pair::new(ca, cb);
    let now = pair.now();
    pair.a().connect(now).expect("a listens");
    pair.b().connect(now).expect("b listens");
    let (mut ea, mut eb) = (Vec::new(), Vec::new());
    pair.run_until(5000, "both sides Up", |p| {
        drain(p.a.as_mut(), &mut ea);
        drain(p.b.as_mut(), &mut eb);
        ups(&ea) >= 1 && ups(&eb) >= 1
    });
    (pair, ea, eb)
}

#[test]
fn both_dial_at_once_exactly_one_connection_survives() {
    // Several rounds on fresh ports: the simultaneous dials race differently.
    for round in 0..5 {
        let (mut pair, mut ea, mut eb) = connected_pair();
        pair.run_for(800, &mut ea, &mut eb);
        assert_eq!(ups(&ea), 1, "round {round}: a {ea:?}");
        assert_eq!(ups(&eb), 1, "round {round}: b {eb:?}");
        assert!(
            downs(&ea).is_empty() && downs(&eb).is_empty(),
            "round {round}: {ea:?} {eb:?}"
        );
        let (sa, sb) = (pair.a().stats(), pair.b().stats());
        assert_eq!((sa.ups, sb.ups, sa.rejects, sb.rejects), (1, 1, 0, 0));
        // Exactly one connection: a message sent by a arrives once at b.
        pair.a()
            .send(7, b"hdr", Some(Arc::new(vec![1, 2, 3])))
            .unwrap();
        pair.b().send(8, b"", None).unwrap();
        pair.run_until(2000, "messages both ways", |p| {
            drain(p.a.as_mut(), &mut ea);
            drain(p.b.as_mut(), &mut eb);
            ea.iter().any(|e| matches!(e, ConnEvent::Msg(8, ..)))
                && eb.iter().any(|e| matches!(e, ConnEvent::Msg(7, ..)))
        });
        let msg = eb.iter().find(|e| matches!(e, ConnEvent::Msg(..))).unwrap();
        assert_eq!(
            *msg,
            ConnEvent::Msg(7, heapless::Vec::from_slice(b"hdr").unwrap(), vec![1, 2, 3])
        );
        // flush writes at once, without waiting for the loop's next turn.
        let before = pair.a().stats().bytes_sent;
        pair.a().send(9, b"now", None).unwrap();
        let now = pair.now();
        pair.a().flush(now);
        // (A keepalive queued just before may have gone out with it.)
        assert!(pair.a().stats().bytes_sent >= before + 11 + 3);
        assert_eq!(pair.a().queued_bytes(), 0);
        pair.run_until(2000, "the flushed message", |p| {
            drain(p.b.as_mut(), &mut eb);
            eb.iter().any(|e| matches!(e, ConnEvent::Msg(9, ..)))
        });
        // Keepalives flowed meanwhile and were not delivered as messages.
        assert_eq!(pair.b().stats().frames_received, 2);
    }
}

/// Runs a pair whose second side is misconfigured and returns both sides' rejects.
fn rejects_with(cb_edit: impl Fn(&mut ReplConnConfig)) -> (Vec<ConnEvent>, Vec<ConnEvent>) {
    let [pa, pb] = free_ports();
    let mut cb = config("beta", "alpha", pb, pa);
    cb_edit(&mut cb);
    let mut pair = Pair::new(config("alpha", "beta", pa, pb), cb);
    let now = pair.now();
    pair.a().connect(now).unwrap();
    pair.b().connect(now).unwrap();
    let (mut ea, mut eb) = (Vec::new(), Vec::new());
    pair.run_for(1200, &mut ea, &mut eb);
    assert_eq!(
        ups(&ea) + ups(&eb),
        0,
        "no Up with a bad peer: {ea:?} {eb:?}"
    );
    assert!(!causes(&ea).is_empty(), "a reports a rejection: {ea:?}");
    (ea, eb)
}

fn causes(evs: &[ConnEvent]) -> Vec<(Cause, bool)> {
    evs.iter()
        .filter_map(|e| match e {
            ConnEvent::Rejected { reject, .. } => Some((reject.cause, reject.by_peer)),
            _ => None,
        })
        .collect()
}

#[test]
fn wrong_secret_is_rejected_as_auth_on_both_sides() {
    let (ea, eb) = rejects_with(|c| c.secret = b"not the same".to_vec());
    assert!(causes(&ea).iter().all(|c| c.0 == Cause::Auth), "{ea:?}");
    assert!(causes(&eb).iter().any(|c| c.0 == Cause::Auth), "{eb:?}");
}

#[test]
fn wrong_resource_is_rejected_as_resource() {
    let (ea, _) = rejects_with(|c| c.resource = "r9".into());
    assert!(causes(&ea).contains(&(Cause::Resource, false)), "{ea:?}");
}

#[test]
fn wrong_peer_name_is_rejected_and_the_intruder_told() {
    // "gamma" dials alpha, which expects "beta".
    let (ea, eb) = rejects_with(|c| c.node = "gamma".into());
    assert!(causes(&ea).contains(&(Cause::PeerName, false)), "{ea:?}");
    assert!(causes(&eb).contains(&(Cause::PeerName, true)), "{eb:?}");
}

#[test]
fn silent_client_is_rejected_after_the_handshake_timeout() {
    let [pa, pb] = free_ports();
    let mut pair = Pair::new(
        config("alpha", "beta", pa, pb),
        config("beta", "alpha", pb, pa),
    );
    let now = pair.now();
    pair.a().connect(now).unwrap();
    // A client that connects and says nothing.
    let _silent = std::net::TcpStream::connect(addr(pa)).expect("dial a");
    let mut ea = Vec::new();
    pair.run_until(3000, "a timeout rejection", |p| {
        drain(p.a.as_mut(), &mut ea);
        causes(&ea).contains(&(Cause::Timeout, false))
    });
}

#[test]
fn two_hundred_mib_flow_with_bounded_queue() {
    const FRAMES: u64 = 200;
    let (mut pair, _, _) = connected_pair_with(|c| c.idle_timeout = Duration::from_secs(5));
    let limit = 4usize << 20;
    let payload = Arc::new(
        (0..(1usize << 20))
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let (mut sent, mut received, mut fulls, mut queued_max) = (0u64, 0u64, 0u64, 0usize);
    let mut may_send = true;
    let started = std::time::Instant::now();
    pair.run_until(60_000, "200 MiB received", |p| {
        while may_send && sent < FRAMES {
            match p.a().send(9, &sent.to_le_bytes(), Some(payload.clone())) {
                Ok(()) => sent += 1,
                Err(SendError::Full) => {
                    fulls += 1;
                    may_send = false;
                }
                Err(SendError::NotUp) => panic!("connection went down mid-stream"),
            }
        }
        queued_max = queued_max.max(p.a().queued_bytes());
        while let Some(ev) = p.a().poll_event() {
            match ev {
                ConnEvent::Drained => may_send = true,
                other => panic!("a: unexpected {other:?}"),
            }
        }
        while let Some(ev) = p.b().poll_event() {
            match ev {
                ConnEvent::Msg(9, header, data) => {
                    assert_eq!(&header[..], &received.to_le_bytes(), "in order, once");
                    assert_eq!(data.len(), 1 << 20);
                    assert!(data == *payload, "payload {received} intact");
                    received += 1;
                }
                other => panic!("b: unexpected {other:?}"),
            }
        }
        received == FRAMES
    });
    let secs = started.elapsed().as_secs_f64();
    eprintln!("200 MiB in {secs:.2} s, {fulls} Full refusals, queue max {queued_max} B");
    assert!(fulls > 0, "back-pressure was exercised");
    assert!(queued_max <= limit, "queue {queued_max} within {limit}");
    let (sa, sb) = (pair.a().stats(), pair.b().stats());
    assert_eq!(sa.frames_sent, FRAMES);
    assert!(sb.bytes_received >= FRAMES * (1 << 20), "{sb:?}");
}

#[test]
fn killed_peer_is_down_promptly_and_comes_back_after_restart() {
    let (mut pair, _, _) = connected_pair();
    // Dropping b closes its sockets as a killed process's would.
    let cb = config(
        "beta",
        "alpha",
        pair_port(&pair, false),
        pair_port(&pair, true),
    );
    pair.b = None;
    let t0 = std::time::Instant::now();
    let mut ea = Vec::new();
    pair.run_until(4000, "a Down after the peer died", |p| {
        drain(p.a.as_mut(), &mut ea);
        !downs(&ea).is_empty()
    });
    assert!(
        t0.elapsed() < StdDuration::from_millis(2500),
        "{:?}",
        t0.elapsed()
    );
    assert!(
        matches!(downs(&ea)[0], DownReason::Eof | DownReason::Io(_)),
        "{ea:?}"
    );
    // a keeps dialling into the void; then b restarts and listens again.
    pair.run_for(500, &mut ea, &mut Vec::new());
    let b = pair.make(cb, B_BASE);
    pair.b = Some(b);
    let now = pair.now();
    pair.b().connect(now).expect("b listens again");
    let mut eb = Vec::new();
    pair.run_until(3000, "Up again after restart", |p| {
        drain(p.a.as_mut(), &mut ea);
        drain(p.b.as_mut(), &mut eb);
        // (a's first Up went to connected_pair's vectors.)
        ups(&ea) == 1 && ups(&eb) == 1
    });
    assert_eq!(pair.a().stats().ups, 2);
    assert!(pair.a().stats().dials >= 2);
}

/// The ports of a pair: a's own (true) or b's own (false).
fn pair_port(pair: &Pair, a_side: bool) -> u16 {
    let c = if a_side { &pair.a } else { &pair.b };
    c.as_ref().unwrap().local_addr().unwrap().port()
}

#[test]
fn frozen_peer_is_down_by_idle_timeout() {
    let (mut pair, _, _) = connected_pair();
    pair.b_driven = false;
    let t0 = std::time::Instant::now();
    let mut ea = Vec::new();
    pair.run_until(5000, "a Down(Idle) while b is frozen", |p| {
        drain(p.a.as_mut(), &mut ea);
        !downs(&ea).is_empty()
    });
    assert_eq!(downs(&ea), vec![DownReason::Idle]);
    // idle_timeout is 600 ms after b's last keepalive (at most 100 ms before
    // the freeze): not much earlier, and not much later than slack allows.
    let took = t0.elapsed();
    assert!(took >= StdDuration::from_millis(450), "{took:?}");
    assert!(took < StdDuration::from_millis(3000), "{took:?}");
}

#[test]
fn close_and_connect_again_reconnects() {
    let (mut pair, mut ea, mut eb) = connected_pair();
    pair.b().close();
    pair.run_until(2000, "both Down after b closes", |p| {
        drain(p.a.as_mut(), &mut ea);
        drain(p.b.as_mut(), &mut eb);
        !downs(&ea).is_empty() && !downs(&eb).is_empty()
    });
    assert_eq!(downs(&eb), vec![DownReason::Closed]);
    assert!(pair.b().send(1, b"", None) == Err(SendError::NotUp));
    // b stays StandAlone: no Up while closed, even though a keeps dialling.
    pair.run_for(600, &mut ea, &mut eb);
    assert_eq!((ups(&ea), ups(&eb)), (1, 1));
    let now = pair.now();
    pair.b().connect(now).unwrap();
    pair.run_until(3000, "Up again after connect", |p| {
        drain(p.a.as_mut(), &mut ea);
        drain(p.b.as_mut(), &mut eb);
        ups(&ea) == 2 && ups(&eb) == 2
    });
}

#[test]
fn dial_retries_every_connect_interval_until_the_listener_appears() {
    let [pa, pb, nowhere] = free_ports();
    // b dials a port nobody listens on, so only a's dials can connect.
    let mut pair = Pair::new(
        config("alpha", "beta", pa, pb),
        config("beta", "alpha", pb, nowhere),
    );
    let now = pair.now();
    pair.a().connect(now).unwrap();
    let (mut ea, mut eb) = (Vec::new(), Vec::new());
    pair.run_for(700, &mut ea, &mut eb);
    assert_eq!(ups(&ea), 0);
    let dials = pair.a().stats().dials;
    assert!((2..=6).contains(&dials), "dials every 200 ms: {dials}");
    let now = pair.now();
    pair.b().connect(now).unwrap();
    pair.run_until(2000, "Up through a's dial", |p| {
        drain(p.a.as_mut(), &mut ea);
        drain(p.b.as_mut(), &mut eb);
        ups(&ea) == 1 && ups(&eb) == 1
    });
    assert!(
        matches!(ea[0], ConnEvent::Up { outgoing: true, .. }),
        "{ea:?}"
    );
}

#[test]
fn restarted_arbiter_supersedes_the_half_open_connection() {
    // alpha (first name) arbitrates; it freezes without closing its socket and
    // a new alpha on another port dials beta.
    let [p0, p1, p2] = free_ports();
    let mut pair = Pair::new(
        config("alpha", "beta", p0, p2),
        config("beta", "alpha", p2, p0),
    );
    assert!(pair.a().is_arbiter() && !pair.b().is_arbiter());
    let now = pair.now();
    pair.a().connect(now).unwrap();
    pair.b().connect(now).unwrap();
    let mut eb = Vec::new();
    pair.run_until(3000, "first Up", |p| {
        drain(p.b.as_mut(), &mut eb);
        p.a().is_up() && ups(&eb) == 1
    });
    pair.a_driven = false;
    pair.c = Some(pair.make(config("alpha", "beta", p1, p2), C_BASE));
    let now = pair.now();
    pair.c().connect(now).unwrap();
    let mut ec = Vec::new();
    pair.run_until(3000, "beta moves to the new alpha", |p| {
        drain(p.b.as_mut(), &mut eb);
        drain(p.c.as_mut(), &mut ec);
        ups(&eb) == 2 && ups(&ec) == 1
    });
    assert_eq!(downs(&eb), vec![DownReason::Superseded], "{eb:?}");
    // The new connection carries messages.
    pair.c().send(3, b"after", None).unwrap();
    pair.run_until(2000, "message on the new connection", |p| {
        drain(p.b.as_mut(), &mut eb);
        eb.iter().any(|e| matches!(e, ConnEvent::Msg(3, ..)))
    });
}

#[test]
fn restarted_peer_behind_a_half_open_connection_gets_in_after_idle() {
    // beta freezes without closing; a new beta on another port
    // dials alpha, which is still Up on the old connection: alpha turns it away
    // until the old one idles out, then takes the new beta.
    let [p0, p1, p2] = free_ports();
    let mut pair = Pair::new(
        config("alpha", "beta", p0, p2),
        config("beta", "alpha", p2, p0),
    );
    let now = pair.now();
    pair.a().connect(now).unwrap();
    pair.b().connect(now).unwrap();
    let mut ea = Vec::new();
    pair.run_until(3000, "first Up", |p| {
        drain(p.a.as_mut(), &mut ea);
        ups(&ea) == 1 && p.b().is_up()
    });
    pair.b_driven = false;
    pair.c = Some(pair.make(config("beta", "alpha", p1, p0), C_BASE));
    let now = pair.now();
    pair.c().connect(now).unwrap();
    let t0 = std::time::Instant::now();
    let mut ec = Vec::new();
    pair.run_until(6000, "alpha Up with the new beta", |p| {
        drain(p.a.as_mut(), &mut ea);
        drain(p.c.as_mut(), &mut ec);
        ups(&ea) == 2 && ups(&ec) == 1
    });
    assert_eq!(downs(&ea), vec![DownReason::Idle], "{ea:?}");
    // Idle (600 ms) plus a dial interval (200 ms), with slack for a loaded machine.
    assert!(
        t0.elapsed() < StdDuration::from_millis(4000),
        "{:?}",
        t0.elapsed()
    );
    assert!(
        ec.iter().all(|e| !matches!(e, ConnEvent::Rejected { .. })),
        "{ec:?}"
    );
}

/// xorshift64*: deterministic sizes for the mixed-size test.
fn next_rand(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// Frame `seq`'s header length and payload length, both directions' shapes.
fn shape(seq: u64) -> (usize, usize) {
    let mut s = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let r = next_rand(&mut s);
    let header = (r % 257) as usize;
    let payload = match (r >> 16) % 16 {
        0 => 0,
        1 => 1,
        2 => 16 << 10, // exactly the direct-read threshold
        3 => (16 << 10) - 1,
        4 => bascule::wire::repl::PAYLOAD_MAX,
        5 => 64 << 10,
        _ => ((r >> 24) % 9000) as usize,
    };
    (header, payload)
}

/// Frame `seq`'s payload: a window into one pattern, so building and checking
/// it is a memcpy/memcmp even in a debug build (the test must not starve the
/// loop it drives).
fn fill(pattern: &[u8], seq: u64, len: usize) -> &[u8] {
    let off = (seq % 251) as usize;
    &pattern[off..off + len]
}

fn pattern() -> Vec<u8> {
    (0..bascule::wire::repl::PAYLOAD_MAX + 256)
        .map(|i| (i % 253) as u8)
        .collect()
}

#[test]
fn mixed_sizes_both_ways_arrive_intact_and_in_order() {
    const FRAMES: u64 = 600;
    let pattern = pattern();
    // Bulk both ways in one debug-build thread: a generous idle timeout, so a
    // slow turn of this test's own checking cannot end the connection.
    let (mut pair, _, _) = connected_pair_with(|c| c.idle_timeout = Duration::from_secs(5));
    // Each side sends its own numbered stream and checks the other's.
    let mut sent = [0u64; 2];
    let mut got = [0u64; 2];
    pair.run_until(60_000, "mixed frames both ways", |p| {
        for side in 0..2 {
            let conn = if side == 0 { p.a() } else { p.b() };
            while sent[side] < FRAMES {
                let seq = sent[side];
                let (h, n) = shape(seq);
                let mut header = vec![side as u8; h];
                if h >= 8 {
                    header[..8].copy_from_slice(&seq.to_le_bytes());
                }
                let payload = (n > 0).then(|| Arc::new(fill(&pattern, seq, n).to_vec()));
                match conn.send(5 + side as u8, &header, payload) {
                    Ok(()) => sent[side] += 1,
                    Err(SendError::Full) => break,
                    Err(SendError::NotUp) => {
                        let evs: Vec<_> = std::iter::from_fn(|| conn.poll_event())
                            .filter(|e| !matches!(e, ConnEvent::Msg(..)))
                            .collect();
                        panic!("side {side} down mid-stream: {evs:?}")
                    }
                }
            }
            while let Some(ev) = conn.poll_event() {
                match ev {
                    ConnEvent::Msg(kind, header, payload) => {
                        let seq = got[side];
                        let from = 1 - side;
                        assert_eq!(kind, 5 + from as u8);
                        let (h, n) = shape(seq);
                        assert_eq!((header.len(), payload.len()), (h, n), "frame {seq}");
                        if h >= 8 {
                            assert_eq!(&header[..8], &seq.to_le_bytes());
                        }
                        assert!(payload == fill(&pattern, seq, n), "payload of frame {seq}");
                        got[side] += 1;
                    }
                    ConnEvent::Drained => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        got == [FRAMES, FRAMES]
    });
    assert_eq!(pair.a().stats().frames_received, FRAMES);
    assert_eq!(pair.b().stats().frames_sent, FRAMES);
}

#[test]
fn stranger_sending_garbage_is_rejected_without_touching_the_live_connection() {
    use std::io::Write;
    let (mut pair, mut ea, mut eb) = connected_pair();
    let a_port = pair.a().local_addr().unwrap().port();
    let mut stranger = std::net::TcpStream::connect(addr(a_port)).expect("dial a");
    stranger
        .write_all(b"GET / HTTP/1.0\r\n\r\n")
        .expect("write garbage");
    pair.run_until(2000, "a rejects the stranger", |p| {
        drain(p.a.as_mut(), &mut ea);
        drain(p.b.as_mut(), &mut eb);
        causes(&ea).contains(&(Cause::Malformed, false))
    });
    // Still one live connection, which carries messages.
    pair.a().send(4, b"still", None).unwrap();
    pair.run_until(2000, "message after the stranger", |p| {
        drain(p.b.as_mut(), &mut eb);
        eb.iter().any(|e| matches!(e, ConnEvent::Msg(4, ..)))
    });
    assert!(downs(&ea).is_empty() && downs(&eb).is_empty());
    assert_eq!(pair.a().stats().ups, 1);
}

#[test]
fn strangers_holding_silent_connections_cannot_block_our_dial() {
    let [pa, pb] = free_ports();
    // Strangers' slots free only after a's handshake timeout (3 s); a must
    // reach b well before that.
    let mut ca = config("alpha", "beta", pa, pb);
    ca.handshake_timeout = Duration::from_millis(3000);
    let mut pair = Pair::new(ca, config("beta", "alpha", pb, pa));
    let now = pair.now();
    pair.a().connect(now).unwrap();
    // Three silent strangers on a's listener, renewed faster than a's handshake
    // timeout could free their slots; b only dials a (which a cannot accept
    // while strangers hold the incoming slots), so a's own dial must get through.
    let mut strangers: Vec<std::net::TcpStream> = (0..3)
        .map(|_| std::net::TcpStream::connect(addr(pa)).expect("dial a"))
        .collect();
    pair.run_for(300, &mut Vec::new(), &mut Vec::new());
    let now = pair.now();
    pair.b().connect(now).unwrap();
    let (mut ea, mut eb) = (Vec::new(), Vec::new());
    pair.run_until(2500, "Up despite the strangers", |p| {
        drain(p.a.as_mut(), &mut ea);
        drain(p.b.as_mut(), &mut eb);
        if strangers.len() < 30 {
            strangers.push(std::net::TcpStream::connect(addr(pa)).expect("dial a"));
        }
        ups(&ea) == 1 && ups(&eb) == 1
    });
}
