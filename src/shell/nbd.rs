//! The NBD server: one export (the resource) on a Unix socket, many connections.
//!
//! Layer: shell. [`NbdServer`] owns a listener and its connections, registered in
//! the loop's mio registry under a token range `[token_first, token_first +
//! tokens)`: the listener is `token_first`, connection slot i is `token_first + 1
//! + i`. The protocol is [`crate::wire::nbd::Session`]; this file moves bytes.
//!
//! Driving it, once per loop iteration:
//! 1. [`NbdServer::handle_event`] for every ready token it [`owns`](NbdServer::owns);
//! 2. [`NbdServer::complete`] for every finished request, then [`NbdServer::flush`]
//!    (replies are queued by `complete` and sent together: one `writev` for a
//!    batch; `flush` also resumes connections paused by back-pressure);
//! 3. [`NbdServer::poll_request`] until None, handing each `(HostId, HostIo)` on.
//! 4. now and then (every iteration is fine) [`NbdServer::expire_handshakes`]
//!    with the loop's `now`.
//!
//! Every request returned by `poll_request` must be completed once, even after
//! its connection died (the reply is then dropped). Ids are never reused.
//!
//! Memory is bounded per connection: requests in flight count their payload (at
//! least 4 KiB each, so a flood of flushes counts too) and replies not yet sent
//! count their data; above `inflight_bytes_max` the connection is not read
//! until completions bring it below. The overshoot is at most one read buffer
//! and one 1 MiB payload.
//!
//! Read replies go out as `writev(header, data)` straight from the read's
//! [`Payload`]: no copy. WRITE payloads are read straight into the request's
//! `Vec` when a large part is still to come ([`DIRECT_READ_MIN`]).

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, IoSlice, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

use crate::core::replication::{HostId, HostIo, IoError, IoResult, Payload};
use crate::time::{Duration, Instant};
use crate::wire::nbd::{simple_reply, ExportInfo, Feed, Session, GREETING, SIMPLE_REPLY_LEN};

/// Size of the shared read buffer: many small requests per `read`.
pub const READ_BUF_BYTES: usize = 128 * 1024;
/// A WRITE payload with at least this much still to come is read directly
/// into its `Vec` instead of through the read buffer.
pub const DIRECT_READ_MIN: usize = 16 * 1024;
/// Default per-connection bound on bytes in flight.
pub const INFLIGHT_BYTES_MAX: usize = 32 << 20;
/// How long a client may take to finish the handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Smallest amount a request counts for back-pressure.
const REQUEST_COST_MIN: usize = 4096;
/// Slices per `writev` (Linux allows 1024; 64 covers 32 read replies).
const IOV_MAX: usize = 64;

/// Settings of one export.
#[derive(Clone, Debug)]
pub struct NbdConfig {
    /// The socket path (an old socket file there is replaced).
    pub path: PathBuf,
    /// The export name (the resource name).
    pub name: String,
    pub size: u64,
    pub read_only: bool,
    /// First token of the range, and how many tokens (listener + connections).
    pub token_first: usize,
    pub tokens: usize,
    pub inflight_bytes_max: usize,
}

/// Something to send, in order.
enum Out {
    /// Handshake bytes.
    Raw { buf: Vec<u8>, sent: usize },
    /// A simple reply, with the read data after it.
    Reply {
        hdr: [u8; SIMPLE_REPLY_LEN],
        data: Option<Payload>,
        sent: usize,
    },
}

impl Out {
    fn len(&self) -> usize {
        match self {
            Out::Raw { buf, .. } => buf.len(),
            Out::Reply { data, .. } => SIMPLE_REPLY_LEN + data.as_ref().map_or(0, |d| d.len()),
        }
    }
    fn sent_mut(&mut self) -> &mut usize {
        match self {
            Out::Raw { sent, .. } | Out::Reply { sent, .. } => sent,
        }
    }
    /// Pushes the unsent parts as slices.
    /// Puts the unsent parts (at most 2) into `iov` from `at`; returns the new end.
    fn slices<'a>(&'a self, iov: &mut [IoSlice<'a>], mut at: usize) -> usize {
        match self {
            Out::Raw { buf, sent } => {
                iov[at] = IoSlice::new(&buf[*sent..]);
                at += 1;
            }
            Out::Reply { hdr, data, sent } => {
                if *sent < SIMPLE_REPLY_LEN {
                    iov[at] = IoSlice::new(&hdr[*sent..]);
                    at += 1;
                }
                if let Some(d) = data {
                    let from = sent.saturating_sub(SIMPLE_REPLY_LEN);
                    if from < d.len() {
                        iov[at] = IoSlice::new(&d[from..]);
                        at += 1;
                    }
                }
            }
        }
        at
    }
}

struct Conn {
    stream: UnixStream,
    gen: u64,
    session: Session,
    wq: VecDeque<Out>,
    /// Requests handed out and not completed.
    inflight: usize,
    /// Back-pressure measure: costs of requests in flight plus unsent bytes.
    bytes: usize,
    /// DISC or a protocol close: read no more, close once drained.
    closing: bool,
    /// Stopped reading for back-pressure (resume reads until WouldBlock).
    paused: bool,
    /// Why it is closing, for the log line.
    reason: &'static str,
    /// When [`NbdServer::expire_handshakes`] first saw it still negotiating.
    negotiating_since: Option<Instant>,
}

/// What a request is waiting for.
struct Pending {
    slot: usize,
    gen: u64,
    handle: u64,
    cost: usize,
    /// Bytes a READ must return (None for other requests).
    read_len: Option<u32>,
}

/// The queues requests go through, split from the connections for borrowing.
struct Queues {
    ready: VecDeque<(HostId, HostIo)>,
    pending: HashMap<u64, Pending>,
    next_id: u64,
}

/// The NBD server of one export.
pub struct NbdServer {
    cfg: NbdConfig,
    registry: Registry,
    listener: Option<UnixListener>,
    conns: Vec<Option<Conn>>,
    next_gen: u64,
    q: Queues,
    rbuf: Box<[u8]>,
    scratch: Vec<u8>,
}

impl NbdServer {
    /// Binds the socket (replacing a stale one; mode 0600) and registers the listener.
    pub fn bind(cfg: NbdConfig, registry: &Registry) -> std::io::Result<NbdServer> {
        assert!(
            cfg.tokens >= 2,
            "an NBD server needs a listener token and at least one connection token"
        );
        // A socket left by an earlier run is replaced; anything else at the
        // path (a misconfigured data file?) is never removed.
        match std::fs::symlink_metadata(&cfg.path) {
            Ok(m) if m.file_type().is_socket() => std::fs::remove_file(&cfg.path)?,
            Ok(_) => {
                let msg = format!("{} exists and is not a socket", cfg.path.display());
                return Err(std::io::Error::new(ErrorKind::AlreadyExists, msg));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut listener = UnixListener::bind(&cfg.path)?;
        // Whoever can connect can write the replicated disk: owner only.
        std::fs::set_permissions(&cfg.path, std::fs::Permissions::from_mode(0o600))?;
        registry.register(&mut listener, Token(cfg.token_first), Interest::READABLE)?;
        let slots = cfg.tokens - 1;
        Ok(NbdServer {
            registry: registry.try_clone()?,
            listener: Some(listener),
            conns: (0..slots).map(|_| None).collect(),
            next_gen: 0,
            q: Queues {
                ready: VecDeque::new(),
                pending: HashMap::new(),
                next_id: 0,
            },
            rbuf: vec![0u8; READ_BUF_BYTES].into_boxed_slice(),
            scratch: Vec::new(),
            cfg,
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.cfg.path
    }

    /// True for the tokens of this server.
    pub fn owns(&self, token: Token) -> bool {
        (self.cfg.token_first..self.cfg.token_first + self.cfg.tokens).contains(&token.0)
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.conns.iter().filter(|c| c.is_some()).count()
    }

    /// Requests handed out by `poll_request` (or waiting there) and not completed.
    pub fn pending(&self) -> usize {
        self.q.pending.len()
    }

    /// Secondary: writes, trims and zeroes fail with EPERM from now on, and
    /// new connections see READ_ONLY.
    pub fn set_read_only(&mut self, read_only: bool) {
        self.cfg.read_only = read_only;
    }

    /// The export size checked by every later request and advertised to new
    /// connections.
    pub fn set_size(&mut self, size: u64) {
        self.cfg.size = size;
    }

    /// Closes connections still in the handshake [`HANDSHAKE_TIMEOUT`] after
    /// this was first called for them, so silent clients cannot hold every
    /// slot. Call with the loop's `now` every iteration or every second.
    pub fn expire_handshakes(&mut self, now: Instant) {
        for slot in 0..self.conns.len() {
            let Some(c) = self.conns[slot].as_mut() else {
                continue;
            };
            if c.session.in_transmission() {
                continue;
            }
            let since = *c.negotiating_since.get_or_insert(now);
            if now.saturating_since(since) >= HANDSHAKE_TIMEOUT {
                self.drop_conn(slot, "handshake_timeout");
            }
        }
    }

    /// Closes every connection now (their requests still complete; replies dropped).
    pub fn close_all(&mut self) {
        for slot in 0..self.conns.len() {
            self.drop_conn(slot, "close_all");
        }
    }

    /// Closes every connection and the listener, and removes the socket file.
    pub fn shutdown(&mut self) {
        self.close_all();
        if let Some(mut l) = self.listener.take() {
            let _ = self.registry.deregister(&mut l);
            let _ = std::fs::remove_file(&self.cfg.path);
        }
    }

    /// The next request to serve.
    #[must_use]
    pub fn poll_request(&mut self) -> Option<(HostId, HostIo)> {
        self.q.ready.pop_front()
    }

    /// Readiness for one of our tokens. An event with neither flag (an error
    /// or hang-up only) tries both, so the failure is seen and the slot freed.
    ///
    /// `short_read_ends`: the event is a readable edge that did not report the
    /// client's end, so a short read means the socket is empty and reading may
    /// stop there (edge-triggered epoll reports later bytes) without the read
    /// that would only say WouldBlock. False where an end may be queued behind
    /// the data, or without an event.
    pub fn handle_event(
        &mut self,
        token: Token,
        readable: bool,
        writable: bool,
        short_read_ends: bool,
    ) {
        if token.0 == self.cfg.token_first {
            self.accept();
            return;
        }
        let slot = token.0 - self.cfg.token_first - 1;
        if slot >= self.conns.len() || self.conns[slot].is_none() {
            return; // a stale event for a closed slot
        }
        let neither = !readable && !writable;
        if writable || neither {
            self.flush_conn(slot);
        }
        // Sent replies may have brought a paused connection under its bound.
        if readable || neither || self.resumable(slot) {
            self.read_conn(slot, readable && short_read_ends);
        }
        self.close_if_done(slot);
    }

    /// A request finished: queue its reply (sent by [`NbdServer::flush`]).
    pub fn complete(&mut self, id: HostId, result: IoResult) {
        let Some(p) = self.q.pending.remove(&id.0) else {
            log::debug!("nbd_complete_unknown res={} id={}", self.cfg.name, id.0);
            return;
        };
        let Some(conn) = self.conns[p.slot].as_mut().filter(|c| c.gen == p.gen) else {
            return; // its connection is gone: the reply is dropped
        };
        conn.inflight -= 1;
        conn.bytes -= p.cost;
        let (errno, data) = match (result, p.read_len) {
            (Err(e), _) => (e.errno(), None),
            (Ok(Some(data)), Some(len)) if data.len() == len as usize => (0, Some(data)),
            // Data of any other length would desynchronise the client's
            // stream for good: answer EIO instead (a bug upstream, logged).
            (Ok(data), Some(len)) => {
                let got = data.map(|d| d.len());
                log::debug!(
                    "nbd_read_length_wrong res={} want={len} got={got:?}",
                    self.cfg.name
                );
                (IoError::Io.errno(), None)
            }
            (Ok(_), None) => (0, None),
        };
        let out = Out::Reply {
            hdr: simple_reply(p.handle, errno),
            data,
            sent: 0,
        };
        conn.bytes += out.len();
        conn.wq.push_back(out);
    }

    /// Sends queued replies on every connection, resumes paused readers, and
    /// closes connections that finished. Call after a batch of `complete`s.
    pub fn flush(&mut self) {
        for slot in 0..self.conns.len() {
            let Some(conn) = &self.conns[slot] else {
                continue;
            };
            if !conn.wq.is_empty() {
                self.flush_conn(slot);
            }
            if self.resumable(slot) {
                self.read_conn(slot, false);
            }
            self.close_if_done(slot);
        }
    }

    /// Paused for back-pressure and now under the bound.
    fn resumable(&self, slot: usize) -> bool {
        self.conns[slot]
            .as_ref()
            .is_some_and(|c| c.paused && c.bytes <= self.cfg.inflight_bytes_max)
    }

    fn accept(&mut self) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            let (mut stream, _) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::debug!("nbd_accept_failed res={} error={e}", self.cfg.name);
                    return;
                }
            };
            let Some(slot) = self.conns.iter().position(Option::is_none) else {
                log::debug!("nbd_conn_refused res={} reason=slots_full", self.cfg.name);
                continue; // dropping the stream closes it
            };
            let token = Token(self.cfg.token_first + 1 + slot);
            if let Err(e) =
                self.registry
                    .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
            {
                log::debug!("nbd_register_failed res={} error={e}", self.cfg.name);
                continue;
            }
            self.next_gen += 1;
            let mut wq = VecDeque::new();
            wq.push_back(Out::Raw {
                buf: GREETING.to_vec(),
                sent: 0,
            });
            self.conns[slot] = Some(Conn {
                stream,
                gen: self.next_gen,
                session: Session::new(),
                wq,
                inflight: 0,
                bytes: 0,
                closing: false,
                paused: false,
                reason: "",
                negotiating_since: None,
            });
            log::debug!("nbd_conn_open res={} conn={slot}", self.cfg.name);
            self.flush_conn(slot);
            // Bytes may have arrived with the connection (edge-triggered).
            self.read_conn(slot, false);
            self.close_if_done(slot);
        }
    }

    /// Reads and parses until WouldBlock, a close, or back-pressure.
    fn read_conn(&mut self, slot: usize, short_read_ends: bool) {
        let export = ExportInfo {
            name: &self.cfg.name,
            size: self.cfg.size,
            read_only: self.cfg.read_only,
        };
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        let max = self.cfg.inflight_bytes_max;
        let mut failed = None;
        conn.paused = false;
        loop {
            if conn.closing {
                break;
            }
            if conn.bytes > max {
                conn.paused = true;
                break;
            }
            if let Some(direct) = conn
                .session
                .payload_slot()
                .filter(|s| s.len() >= DIRECT_READ_MIN)
            {
                let asked = direct.len();
                match read_uninit(&conn.stream, direct) {
                    Ok(0) => failed = Some("eof"),
                    Ok(n) => {
                        // SAFETY: read_uninit initialised the first n bytes of the slot.
                        if let Some(feed) = unsafe { conn.session.payload_advance(n) } {
                            on_feed(conn, slot, feed, &mut self.q);
                        }
                        if short_read_ends && n < asked {
                            break;
                        }
                        continue;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => failed = Some("read_error"),
                }
                break;
            }
            let n = match conn.stream.read(&mut self.rbuf) {
                Ok(0) => {
                    failed = Some("eof");
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    failed = Some("read_error");
                    break;
                }
            };
            let mut input = &self.rbuf[..n];
            while !input.is_empty() && !conn.closing {
                let (used, feed) = conn.session.feed(input, &export, &mut self.scratch);
                input = &input[used..];
                if !self.scratch.is_empty() {
                    let buf = std::mem::take(&mut self.scratch);
                    conn.bytes += buf.len();
                    conn.wq.push_back(Out::Raw { buf, sent: 0 });
                }
                on_feed(conn, slot, feed, &mut self.q);
            }
            if short_read_ends && n < self.rbuf.len() {
                break;
            }
        }
        if let Some(reason) = failed {
            self.drop_conn(slot, reason);
        } else {
            self.flush_conn(slot);
        }
    }

    /// Writes queued output until done or WouldBlock.
    fn flush_conn(&mut self, slot: usize) {
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        let mut failed = false;
        while !conn.wq.is_empty() {
            // On the stack: no allocation per writev.
            let mut iov = [IoSlice::new(&[]); IOV_MAX];
            let mut used = 0;
            for out in conn.wq.iter().take(IOV_MAX / 2) {
                used = out.slices(&mut iov, used);
            }
            let n = match conn.stream.write_vectored(&iov[..used]) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    failed = true;
                    break;
                }
            };
            advance(conn, n);
        }
        if failed {
            self.drop_conn(slot, "write_error");
        }
    }

    fn close_if_done(&mut self, slot: usize) {
        if let Some(c) = &self.conns[slot] {
            if c.closing && c.inflight == 0 && c.wq.is_empty() {
                let reason = c.reason;
                self.drop_conn(slot, reason);
            }
        }
    }

    fn drop_conn(&mut self, slot: usize, reason: &str) {
        if let Some(mut c) = self.conns[slot].take() {
            let _ = self.registry.deregister(&mut c.stream);
            log::debug!(
                "nbd_conn_close res={} conn={slot} reason={reason} inflight={}",
                self.cfg.name,
                c.inflight
            );
        }
    }
}

impl Drop for NbdServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// `read(2)` into uninitialised memory; returns how many bytes it wrote there.
fn read_uninit(stream: &UnixStream, buf: &mut [MaybeUninit<u8>]) -> std::io::Result<usize> {
    // SAFETY: the kernel writes at most buf.len() bytes into memory we own
    // exclusively for the call; uninitialised memory is fine as a read target.
    let n = unsafe { libc::read(stream.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Marks `n` bytes of the write queue sent.
fn advance(conn: &mut Conn, mut n: usize) {
    conn.bytes -= n.min(conn.bytes);
    while n > 0 {
        let out = conn.wq.front_mut().expect("wrote more than queued");
        let left = out.len() - *out.sent_mut();
        if n >= left {
            n -= left;
            conn.wq.pop_front();
        } else {
            *out.sent_mut() += n;
            n = 0;
        }
    }
}

/// Applies one parse result to a connection.
fn on_feed(conn: &mut Conn, slot: usize, feed: Feed, q: &mut Queues) {
    match feed {
        Feed::More | Feed::Ready => {}
        Feed::Request(req) => {
            let cost = match &req.io {
                HostIo::Read { len, .. } => *len as usize,
                HostIo::Write { data, .. } => data.len(),
                _ => 0,
            }
            .max(REQUEST_COST_MIN);
            let id = q.next_id;
            q.next_id += 1;
            q.pending.insert(
                id,
                Pending {
                    slot,
                    gen: conn.gen,
                    handle: req.handle,
                    cost,
                    read_len: match req.io {
                        HostIo::Read { len, .. } => Some(len),
                        _ => None,
                    },
                },
            );
            q.ready.push_back((HostId(id), req.io));
            conn.inflight += 1;
            conn.bytes += cost;
        }
        Feed::Reject { handle, errno } => {
            conn.bytes += SIMPLE_REPLY_LEN;
            conn.wq.push_back(Out::Reply {
                hdr: simple_reply(handle, errno),
                data: None,
                sent: 0,
            });
        }
        Feed::Disconnect => {
            conn.closing = true;
            conn.reason = "disc";
        }
        Feed::Close(why) => {
            conn.closing = true;
            conn.reason = why.as_str();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::nbd::{encode_request, CMD_READ, CMD_WRITE, IHAVEOPT, OPT_EXPORT_NAME};
    use mio::{Events, Poll};
    use std::sync::Arc;
    use std::time::{Duration as StdDuration, Instant as StdInstant};

    struct Rig {
        poll: Poll,
        events: Events,
        server: NbdServer,
        dir: PathBuf,
    }

    impl Rig {
        fn new(tag: &str) -> Rig {
            let dir =
                std::env::temp_dir().join(format!("bascule-nbdu-{}-{tag}", std::process::id()));
            let _ = std::fs::create_dir_all(&dir);
            let poll = Poll::new().unwrap();
            let cfg = NbdConfig {
                path: dir.join("sock"),
                name: "r0".into(),
                size: 1 << 20,
                read_only: false,
                token_first: 100,
                tokens: 3,
                inflight_bytes_max: INFLIGHT_BYTES_MAX,
            };
            let server = NbdServer::bind(cfg, poll.registry()).unwrap();
            Rig {
                poll,
                events: Events::with_capacity(16),
                server,
                dir,
            }
        }

        /// Runs the loop once (short poll) and returns the requests produced.
        fn turn(&mut self) -> Vec<(HostId, HostIo)> {
            self.poll
                .poll(&mut self.events, Some(StdDuration::from_millis(20)))
                .unwrap();
            for ev in self.events.iter() {
                assert!(self.server.owns(ev.token()));
                let short_read_ends = !(ev.is_read_closed() || ev.is_error());
                self.server.handle_event(
                    ev.token(),
                    ev.is_readable(),
                    ev.is_writable(),
                    short_read_ends,
                );
            }
            self.server.flush();
            std::iter::from_fn(|| self.server.poll_request()).collect()
        }

        /// A client through the old-style EXPORT_NAME handshake.
        fn client(&mut self) -> std::os::unix::net::UnixStream {
            let mut c = std::os::unix::net::UnixStream::connect(self.server.path()).unwrap();
            c.set_read_timeout(Some(StdDuration::from_secs(5))).unwrap();
            let mut m = 3u32.to_be_bytes().to_vec();
            m.extend(IHAVEOPT.to_be_bytes());
            m.extend(OPT_EXPORT_NAME.to_be_bytes());
            m.extend(2u32.to_be_bytes());
            m.extend(b"r0");
            c.write_all(&m).unwrap();
            let mut got: Vec<u8> = Vec::new();
            while got.len() < GREETING.len() + 10 {
                assert!(self.turn().is_empty());
                c.set_nonblocking(true).unwrap();
                let mut buf = [0u8; 64];
                if let Ok(n) = c.read(&mut buf) {
                    got.extend(&buf[..n]);
                }
                c.set_nonblocking(false).unwrap();
            }
            assert_eq!(&got[18..26], &(1u64 << 20).to_be_bytes());
            c
        }

        /// Turns until `n` requests came (bounded).
        fn requests(&mut self, n: usize) -> Vec<(HostId, HostIo)> {
            let deadline = StdInstant::now() + StdDuration::from_secs(5);
            let mut all = Vec::new();
            while all.len() < n {
                assert!(
                    StdInstant::now() < deadline,
                    "only {} of {n} requests",
                    all.len()
                );
                all.extend(self.turn());
            }
            all
        }
    }

    impl Drop for Rig {
        fn drop(&mut self) {
            self.server.shutdown();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn reply(c: &mut std::os::unix::net::UnixStream) -> (u32, u64) {
        let mut r = [0u8; 16];
        c.read_exact(&mut r).unwrap();
        (
            u32::from_be_bytes(r[4..8].try_into().unwrap()),
            u64::from_be_bytes(r[8..16].try_into().unwrap()),
        )
    }

    #[test]
    fn silent_handshake_expires_but_transmission_does_not() {
        let mut rig = Rig::new("hs");
        let mut done = rig.client();
        let mut silent = std::os::unix::net::UnixStream::connect(rig.server.path()).unwrap();
        silent
            .set_read_timeout(Some(StdDuration::from_secs(5)))
            .unwrap();
        let deadline = StdInstant::now() + StdDuration::from_secs(5);
        while rig.server.connections() < 2 {
            assert!(StdInstant::now() < deadline);
            rig.turn();
        }
        rig.server.expire_handshakes(Instant::from_millis(1000));
        rig.server.expire_handshakes(Instant::from_millis(10_999));
        assert_eq!(rig.server.connections(), 2);
        rig.server.expire_handshakes(Instant::from_millis(11_000));
        assert_eq!(rig.server.connections(), 1);
        let mut rest = Vec::new();
        silent.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, GREETING, "greeting, then closed");
        done.write_all(&encode_request(0, CMD_READ, 1, 0, 1))
            .unwrap();
        let reqs = rig.requests(1);
        rig.server.complete(reqs[0].0, Ok(Some(Arc::new(vec![0]))));
        rig.server.flush();
        assert_eq!(reply(&mut done), (0, 1));
    }

    #[test]
    fn bind_replaces_a_stale_socket_but_never_a_file() {
        let rig = Rig::new("bind");
        let poll = Poll::new().unwrap();
        let mut cfg = rig.server.cfg.clone();
        cfg.path = rig.dir.join("sock2");
        drop(NbdServer::bind(cfg.clone(), poll.registry()).unwrap());
        // shutdown removed it; leave a stale socket behind instead.
        let stale = std::os::unix::net::UnixListener::bind(&cfg.path).unwrap();
        drop(stale);
        let again = NbdServer::bind(cfg.clone(), poll.registry()).unwrap();
        let mode = std::fs::metadata(&cfg.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(again);
        std::fs::write(&cfg.path, b"precious").unwrap();
        let err = NbdServer::bind(cfg.clone(), poll.registry()).err().unwrap();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&cfg.path).unwrap(), b"precious");
    }

    #[test]
    fn read_of_wrong_length_is_eio_and_stream_stays_in_sync() {
        let mut rig = Rig::new("len");
        let mut c = rig.client();
        let mut m = encode_request(0, CMD_READ, 1, 0, 8).to_vec();
        m.extend(encode_request(0, CMD_READ, 2, 0, 8));
        m.extend(encode_request(0, CMD_READ, 3, 8, 4));
        c.write_all(&m).unwrap();
        let reqs = rig.requests(3);
        rig.server
            .complete(reqs[0].0, Ok(Some(Arc::new(vec![1; 7]))));
        rig.server.complete(reqs[1].0, Ok(None));
        rig.server
            .complete(reqs[2].0, Ok(Some(Arc::new(b"good".to_vec()))));
        rig.server.flush();
        assert_eq!(reply(&mut c), (5, 1));
        assert_eq!(reply(&mut c), (5, 2));
        assert_eq!(reply(&mut c), (0, 3));
        let mut d = [0u8; 4];
        c.read_exact(&mut d).unwrap();
        assert_eq!(&d, b"good");
        assert_eq!(rig.server.pending(), 0);
    }

    /// A request and the client's close, queued together before the server
    /// reads: the request is taken and the close seen (a short read must not
    /// end reading when the event reported the end).
    #[test]
    fn a_close_queued_behind_a_request_is_seen() {
        let mut rig = Rig::new("eofq");
        let mut c = rig.client();
        let mut m = encode_request(0, CMD_WRITE, 4, 0, 512).to_vec();
        m.extend([5u8; 512]);
        c.write_all(&m).unwrap();
        drop(c);
        let deadline = StdInstant::now() + StdDuration::from_secs(5);
        let mut got = Vec::new();
        while rig.server.connections() > 0 {
            assert!(StdInstant::now() < deadline, "the close was never seen");
            got.extend(rig.turn());
        }
        assert_eq!(got.len(), 1, "{got:?}");
    }

    /// A 1 MiB write arrives whole and in order whatever the split between
    /// the read buffer and direct reads; unknown and repeated ids are ignored.
    #[test]
    fn large_write_payload_and_unknown_completion() {
        let mut rig = Rig::new("big");
        let mut c = rig.client();
        let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 7 % 253) as u8).collect();
        let mut m = encode_request(0, CMD_WRITE, 9, 0, 1 << 20).to_vec();
        m.extend(&data);
        let writer = {
            let mut w = c.try_clone().unwrap();
            w.set_write_timeout(Some(StdDuration::from_secs(5)))
                .unwrap();
            std::thread::spawn(move || w.write_all(&m))
        };
        let reqs = rig.requests(1);
        writer.join().unwrap().unwrap();
        let HostIo::Write {
            offset: 0,
            data: got,
            fua: false,
        } = &reqs[0].1
        else {
            panic!("{:?}", reqs[0].1);
        };
        assert!(got[..] == data[..]);
        rig.server.complete(reqs[0].0, Ok(None));
        rig.server.complete(reqs[0].0, Ok(None)); // again: ignored
        rig.server.complete(HostId(12345), Ok(None)); // never issued: ignored
        rig.server.flush();
        assert_eq!(reply(&mut c), (0, 9));
    }
}
