//! Serial heartbeat links: a null-modem line (or a pty in the lab).
//!
//! Layer: shell. The port is opened with serialport, every setting explicit (raw,
//! `baud` 8N1, no flow control), exclusive; then made non-blocking again
//! (serialport's open clears O_NONBLOCK), its input flushed (bytes queued while it
//! was closed are stale), and its raw fd registered with mio. Reads and writes use
//! the fd directly. Writes are paced to the line rate (baud / 10 bytes per second)
//! by [`TxSlot`], which holds at most one frame beyond the one being written: a
//! fresh heartbeat replaces an unsent one, so serial latency stays one frame time.
//! While the line would otherwise be idle, the slot sends the latest heartbeat
//! again (up to [`COPIES_MAX`] copies, and only when a copy ends before the next
//! heartbeat is due): at a bit error rate of 1e-3 half the frames arrive damaged,
//! and a copy turns "lost heartbeat" into "lost copy". The receiver ignores a copy
//! of a frame it already accepted (`FrameError::Repeat`), so copies add no
//! liveness an attacker could replay.
//! Never `tcdrain` (it blocks). EOF or EIO (the far end gone) closes the port and
//! it is reopened every second, with one `link_error` per streak.

use std::os::fd::{AsRawFd, BorrowedFd};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use nix::errno::Errno;
use serialport::{ClearBuffer, DataBits, FlowControl, Parity, SerialPort, StopBits, TTYPort};

use super::cli::ShellError;
use super::link::{OpenError, Retry, RxContext};
use crate::core::{Event, LinkId};
use crate::time::{Duration, Instant};
use crate::wire::{decode, StreamDecoder};
use crate::wire::{Feed, ENCODED_MAX};

/// Bytes read per `read` call.
pub const READ_CHUNK: usize = 256;
/// `read` calls per readiness event before yielding to other sources (bounds the work).
pub const READS_PER_READY_MAX: usize = 16;
/// Bits on the wire per byte at 8N1: start + 8 data + stop.
pub const BITS_PER_BYTE: u32 = 10;
/// Copies of each heartbeat sent on an otherwise idle line (the original included).
/// At BER 1e-3 a 71-byte frame is damaged 43% of the time; five copies lose a
/// heartbeat 1.5% of the time, so four lost in a row (death at deadtime = 5 x
/// keepalive) becomes a once-in-millions event. The line is a dedicated cable, and
/// five frames take 0.37 s at 9600 baud, so the cap only matters for slow keepalives.
pub const COPIES_MAX: u8 = 5;
/// A copy is sent only if it ends this long before the next heartbeat is due, so a
/// fresh heartbeat never waits behind a copy (scheduling jitter margin).
pub const COPY_MARGIN_MS: u64 = 10;

/// The transmit slot: the frame being written (with a cursor) and at most one
/// waiting frame. Pure: it decides what to write and when; the link does the I/O.
pub struct TxSlot {
    cur: [u8; ENCODED_MAX],
    cur_len: usize,
    cur_pos: usize,
    next: [u8; ENCODED_MAX],
    next_len: usize,
    line_free_at: Instant,
    bytes_per_s: u64,
    replaced: u64,
    keepalive: Duration,
    copies_left: u8,
    cur_is_copy: bool,
    fresh_due: Instant,
    copies: u64,
}

impl TxSlot {
    /// An empty slot for a line at `baud` (8N1) carrying a heartbeat every `keepalive`.
    pub fn new(baud: u32, keepalive: Duration) -> TxSlot {
        assert!(baud >= BITS_PER_BYTE);
        TxSlot {
            cur: [0; ENCODED_MAX],
            cur_len: 0,
            cur_pos: 0,
            next: [0; ENCODED_MAX],
            next_len: 0,
            line_free_at: Instant::ZERO,
            bytes_per_s: u64::from(baud / BITS_PER_BYTE),
            replaced: 0,
            keepalive,
            copies_left: 0,
            cur_is_copy: false,
            fresh_due: Instant::ZERO,
            copies: 0,
        }
    }

    /// Queues a fresh frame at `now`. If the current frame has not started, it is
    /// replaced; if it is partly written, the fresh one waits (replacing any older
    /// waiting one). The fresh frame may be copied until the next one is due.
    pub fn push(&mut self, frame: &[u8], now: Instant) {
        assert!(!frame.is_empty() && frame.len() <= ENCODED_MAX);
        self.copies_left = COPIES_MAX - 1;
        self.fresh_due = now + self.keepalive;
        if self.cur_pos == 0 || self.cur_pos == self.cur_len {
            self.replaced += u64::from(self.cur_pos < self.cur_len && !self.cur_is_copy);
            self.cur_is_copy = false;
            self.cur[..frame.len()].copy_from_slice(frame);
            self.cur_len = frame.len();
            self.cur_pos = 0;
            self.replaced += u64::from(self.next_len > 0);
            self.next_len = 0;
        } else {
            self.replaced += u64::from(self.next_len > 0);
            self.next[..frame.len()].copy_from_slice(frame);
            self.next_len = frame.len();
        }
    }

    /// The bytes to write now, if the line is free.
    pub fn writable(&self, now: Instant) -> Option<&[u8]> {
        (self.cur_pos < self.cur_len && now >= self.line_free_at)
            .then(|| &self.cur[self.cur_pos..self.cur_len])
    }

    /// `n` bytes went to the port at `now`: the line is busy for their wire time.
    pub fn wrote(&mut self, n: usize, now: Instant) {
        assert!(self.cur_pos + n <= self.cur_len);
        self.cur_pos += n;
        let busy_ms = (n as u64 * 1000).div_ceil(self.bytes_per_s);
        self.line_free_at = self.line_free_at.max(now) + Duration::from_millis(busy_ms);
        if self.cur_pos == self.cur_len && self.next_len > 0 {
            self.cur[..self.next_len].copy_from_slice(&self.next[..self.next_len]);
            self.cur_len = self.next_len;
            self.cur_pos = 0;
            self.next_len = 0;
            self.cur_is_copy = false;
        } else if self.cur_pos == self.cur_len && self.copies_left > 0 {
            self.copy_if_time();
        }
    }

    /// The line is idle after a complete frame: send it again if the copy ends
    /// before the next heartbeat is due.
    fn copy_if_time(&mut self) {
        let copy_ms = (self.cur_len as u64 * 1000).div_ceil(self.bytes_per_s);
        let ends = self.line_free_at + Duration::from_millis(copy_ms + COPY_MARGIN_MS);
        if ends <= self.fresh_due {
            self.copies_left -= 1;
            self.copies += 1;
            self.cur_is_copy = true;
            self.cur_pos = 0;
        } else {
            self.copies_left = 0;
        }
    }

    /// Copies sent so far (for status and tests).
    pub fn copies(&self) -> u64 {
        self.copies
    }

    /// Drops everything (the port closed).
    pub fn clear(&mut self) {
        self.copies_left = 0;
        self.cur_len = 0;
        self.cur_pos = 0;
        self.next_len = 0;
    }

    /// When the line is free for the pending bytes (None: nothing pending).
    pub fn deadline(&self) -> Option<Instant> {
        (self.cur_pos < self.cur_len).then_some(self.line_free_at)
    }

    /// Frames replaced by fresher ones before being sent.
    pub fn replaced(&self) -> u64 {
        self.replaced
    }
}

/// One serial link.
pub struct SerialLink {
    id: LinkId,
    name: String,
    device: String,
    baud: u32,
    port: Option<TTYPort>,
    token: Token,
    want_write: bool,
    decoder: StreamDecoder,
    /// False from open until the first 0x00: bytes before it are the tail of a
    /// frame sent while the port was closed, dropped without counting as noise.
    synced: bool,
    tx: TxSlot,
    retry: Retry,
}

fn serial_errno(e: &serialport::Error) -> Errno {
    match e.kind() {
        serialport::ErrorKind::NoDevice => Errno::ENODEV,
        serialport::ErrorKind::InvalidInput => Errno::EINVAL,
        serialport::ErrorKind::Io(std::io::ErrorKind::NotFound) => Errno::ENOENT,
        serialport::ErrorKind::Io(std::io::ErrorKind::PermissionDenied) => Errno::EACCES,
        _ => Errno::EIO,
    }
}

impl SerialLink {
    /// A closed link on `device` at `baud`.
    pub fn new(
        id: LinkId,
        name: String,
        device: String,
        baud: u32,
        keepalive: Duration,
    ) -> SerialLink {
        SerialLink {
            id,
            name,
            device,
            baud,
            port: None,
            token: Token(usize::MAX),
            want_write: false,
            decoder: StreamDecoder::new(),
            synced: false,
            tx: TxSlot::new(baud, keepalive),
            retry: Retry::default(),
        }
    }

    /// Its id.
    pub fn id(&self) -> LinkId {
        self.id
    }

    fn try_open(&mut self, registry: &Registry, token: Token) -> Result<(), Errno> {
        let port = serialport::new(&self.device, self.baud)
            .data_bits(DataBits::Eight)
            .parity(Parity::None)
            .stop_bits(StopBits::One)
            .flow_control(FlowControl::None)
            .timeout(std::time::Duration::ZERO)
            .exclusive(true)
            .dtr_on_open(true)
            .open_native()
            .map_err(|e| {
                log::debug!("serial {}: open: {e}", self.device);
                serial_errno(&e)
            })?;
        let fd = port.as_raw_fd();
        let borrowed = port.as_fd_borrowed();
        let flags = nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_SETFL(flags))?;
        port.clear(ClearBuffer::Input)
            .map_err(|e| serial_errno(&e))?;
        registry
            .register(&mut SourceFd(&fd), token, Interest::READABLE)
            .map_err(|_| Errno::EIO)?;
        self.port = Some(port);
        self.token = token;
        self.want_write = false;
        self.decoder = StreamDecoder::new();
        self.synced = false;
        self.tx.clear();
        Ok(())
    }

    /// Opens the port; a missing device is retried, permission denied is fatal.
    pub fn open(
        &mut self,
        registry: &Registry,
        token: Token,
        now: Instant,
    ) -> Result<(), OpenError> {
        match self.try_open(registry, token) {
            Ok(()) => {
                self.retry.succeeded();
                log::debug!(
                    "link {} open: {} at {} baud",
                    self.name,
                    self.device,
                    self.baud
                );
                Ok(())
            }
            Err(Errno::EACCES) | Err(Errno::EPERM) => Err(OpenError::Fatal(ShellError::Serial {
                device: self.device.clone(),
                error: "permission denied".into(),
            })),
            Err(errno) => {
                self.retry.failed(now);
                Err(OpenError::Retry(errno as i32))
            }
        }
    }

    /// The far end went away (EOF, EIO): close, retry every second.
    fn fail(&mut self, registry: &Registry, now: Instant, errno: Errno) -> Option<Event> {
        if let Some(port) = self.port.take() {
            let fd = port.as_raw_fd();
            let _ = registry.deregister(&mut SourceFd(&fd));
        }
        self.tx.clear();
        log::debug!("link {} closed: {}", self.name, errno.desc());
        self.retry.failed(now).then_some(Event::LinkError {
            link: self.id,
            errno: errno as i32,
        })
    }

    /// Readable: decode every complete frame; writable: continue the pending write.
    pub fn on_ready(
        &mut self,
        registry: &Registry,
        event: &mio::event::Event,
        rx: RxContext,
    ) -> Option<Event> {
        let now = rx.now;
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            if let Err(errno) = self.read_all(rx) {
                return self.fail(registry, now, errno);
            }
        }
        if event.is_writable() {
            return self.flush(registry, now);
        }
        None
    }

    fn read_all(&mut self, rx: RxContext) -> Result<(), Errno> {
        let Some(port) = self.port.as_ref() else {
            return Ok(());
        };
        let mut buf = [0u8; READ_CHUNK];
        for _ in 0..READS_PER_READY_MAX {
            let n = match nix::unistd::read(port.as_fd_borrowed(), &mut buf) {
                Ok(0) => return Err(Errno::EPIPE),
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Ok(()),
                Err(e) => return Err(e),
            };
            let mut input = &buf[..n];
            if !self.synced {
                let Some(start) = input.iter().position(|b| *b == 0) else {
                    continue; // still inside a frame that began before we opened
                };
                input = &input[start..];
                self.synced = true;
            }
            // Each step consumes at least one byte or ends: bounded by the chunk size.
            for _ in 0..=READ_CHUNK {
                match self.decoder.feed(input) {
                    Feed::Consumed => break,
                    Feed::Frame { frame, rest } => {
                        match decode(rx.keyring, frame) {
                            Ok(repr) => {
                                if let Err(e) = rx.membership.handle_frame(rx.now, self.id, &repr) {
                                    log::debug!("link {} frame refused: {e}", self.name);
                                }
                            }
                            Err(e) => rx.membership.handle_frame_error(rx.now, self.id, e),
                        }
                        input = rest;
                    }
                    Feed::Error { error, rest } => {
                        rx.membership.handle_frame_error(rx.now, self.id, error);
                        input = rest;
                    }
                }
            }
        }
        Ok(())
    }

    /// Queues a fresh heartbeat and writes it if the line is free.
    pub fn send(&mut self, registry: &Registry, frame: &[u8], now: Instant) -> Option<Event> {
        self.port.as_ref()?;
        self.tx.push(frame, now);
        self.flush(registry, now)
    }

    fn flush(&mut self, registry: &Registry, now: Instant) -> Option<Event> {
        let port = self.port.as_ref()?;
        let fd = port.as_raw_fd();
        let mut blocked = false;
        while let Some(bytes) = self.tx.writable(now) {
            match nix::unistd::write(port.as_fd_borrowed(), bytes) {
                Ok(n) if n > 0 => self.tx.wrote(n, now),
                Err(Errno::EINTR) => continue,
                // Ok(0) would loop forever: wait for writability like EAGAIN.
                Ok(_) | Err(Errno::EAGAIN) => {
                    blocked = true;
                    break;
                }
                Err(e) => return self.fail(registry, now, e),
            }
        }
        if blocked != self.want_write {
            let interest = if blocked {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let _ = registry.reregister(&mut SourceFd(&fd), self.token, interest);
            self.want_write = blocked;
        }
        None
    }

    /// Reopens a closed port; continues a paced write.
    pub fn tick(&mut self, registry: &Registry, token: Token, now: Instant) -> Option<Event> {
        if self.port.is_none() {
            if !self.retry.due(now) {
                return None;
            }
            return match self.try_open(registry, token) {
                Ok(()) => {
                    self.retry.succeeded();
                    log::debug!("link {} reopened", self.name);
                    None
                }
                Err(errno) => self.retry.failed(now).then_some(Event::LinkError {
                    link: self.id,
                    errno: errno as i32,
                }),
            };
        }
        if self.tx.writable(now).is_some() {
            return self.flush(registry, now);
        }
        None
    }

    /// Next reopen attempt or the time the line is free for pending bytes.
    pub fn deadline(&self) -> Option<Instant> {
        match self.port {
            None => self.retry.deadline(),
            Some(_) if self.want_write => None,
            Some(_) => self.tx.deadline(),
        }
    }
}

/// serialport's `TTYPort` implements `AsRawFd` but not `AsFd`, which nix's
/// `read`/`write` take.
trait AsFdBorrowed {
    fn as_fd_borrowed(&self) -> BorrowedFd<'_>;
}

impl AsFdBorrowed for TTYPort {
    fn as_fd_borrowed(&self) -> BorrowedFd<'_> {
        // SAFETY: the TTYPort owns the fd for as long as the borrow lives.
        unsafe { BorrowedFd::borrow_raw(self.as_raw_fd()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    // ==== Tests for the idle state ====

    #[test]
    fn idle_push_writable_at_once() {
        let mut s = TxSlot::new(9600, Duration::from_millis(50));
        assert_eq!(s.deadline(), None);
        s.push(&[1; 60], t(0));
        assert_eq!(s.writable(t(0)).unwrap().len(), 60);
    }

    // ==== Tests for the busy state ====

    #[test]
    fn busy_line_paced_to_baud() {
        let mut s = TxSlot::new(9600, Duration::from_millis(50));
        s.push(&[1; 60], t(0));
        s.wrote(60, t(0));
        // 60 bytes at 960 B/s = 62.5 ms, rounded up.
        s.push(&[2; 60], t(0));
        assert!(s.writable(t(62)).is_none());
        assert_eq!(s.deadline(), Some(t(63)));
        assert_eq!(s.writable(t(63)).unwrap()[0], 2);
    }

    #[test]
    fn busy_unsent_frame_replaced_by_fresh_one() {
        let mut s = TxSlot::new(9600, Duration::from_millis(50));
        s.push(&[1; 60], t(0));
        s.wrote(60, t(0));
        s.push(&[2; 60], t(0));
        s.push(&[3; 50], t(0));
        let w = s.writable(t(100)).unwrap();
        assert_eq!((w[0], w.len()), (3, 50));
        assert_eq!(s.replaced(), 1);
    }

    // ==== Tests for the partial-write state ====

    #[test]
    fn partial_write_finishes_then_newest() {
        let mut s = TxSlot::new(9600, Duration::from_millis(50));
        s.push(&[1; 60], t(0));
        s.wrote(20, t(0));
        s.push(&[2; 60], t(0));
        s.push(&[3; 60], t(0));
        // The partly written frame must be finished first.
        let w = s.writable(t(1000)).unwrap();
        assert_eq!((w[0], w.len()), (1, 40));
        s.wrote(40, t(1000));
        let w = s.writable(t(2000)).unwrap();
        assert_eq!((w[0], w.len()), (3, 60));
        assert_eq!(s.replaced(), 1);
    }

    // ==== Tests for the copy state ====

    #[test]
    fn copy_sent_while_line_idle_before_next_heartbeat() {
        let mut s = TxSlot::new(9600, Duration::from_millis(200));
        s.push(&[1; 60], t(0));
        s.wrote(60, t(0));
        // The line is free at 63 ms; a copy ends at 126 + margin, before 200 ms.
        assert_eq!(s.deadline(), Some(t(63)));
        assert_eq!(s.writable(t(63)).unwrap().len(), 60);
        s.wrote(60, t(63));
        // A second copy still fits (ends 189 + 10 <= 200); a third would not.
        assert_eq!(s.writable(t(126)).unwrap().len(), 60);
        s.wrote(60, t(126));
        assert_eq!(s.deadline(), None);
        assert_eq!(s.copies(), 2);
    }

    #[test]
    fn copy_never_delays_the_next_heartbeat() {
        let mut s = TxSlot::new(9600, Duration::from_millis(100));
        s.push(&[1; 60], t(0));
        s.wrote(60, t(0));
        // 63 + 63 + 10 > 100: no copy, the line stays free for the next heartbeat.
        assert_eq!(s.deadline(), None);
        assert_eq!(s.copies(), 0);
    }

    #[test]
    fn copy_not_started_is_replaced_by_fresh_frame_silently() {
        let mut s = TxSlot::new(9600, Duration::from_millis(1000));
        s.push(&[1; 60], t(0));
        s.wrote(60, t(0));
        assert_eq!(s.copies(), 1);
        s.push(&[2; 60], t(50));
        let w = s.writable(t(63)).unwrap();
        assert_eq!((w[0], w.len()), (2, 60));
        assert_eq!(s.replaced(), 0, "a copy is not a lost heartbeat");
    }
}
