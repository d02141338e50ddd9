//! NBD server side, as a pure codec: fixed newstyle handshake and simple replies.
//!
//! Layer: wire (pure: no I/O, no clock). The shell owns the socket; it hands
//! [`Session::feed`] whatever bytes a `read` returned, in pieces of any size, and
//! gets back one [`Feed`] at a time plus the bytes consumed. Handshake replies are
//! appended to an output `Vec` the shell sends; transmission replies are encoded by
//! [`simple_reply`] when the request completes (in any order, as NBD allows).
//!
//! Phases (transition table):
//!
//! ```text
//!   (server sent GREETING)
//!   ClientFlags --4 bytes, known bits--> OptHeader
//!   OptHeader --16 bytes, IHAVEOPT--> OptData{opt,len}   (len > OPT_DATA_MAX: Close)
//!   OptData --EXPORT_NAME ok / GO ok--> Transmission (Feed::Ready)
//!           --INFO, LIST, unknown--> OptHeader (replies appended)
//!           --ABORT, EXPORT_NAME unknown name--> Closed
//!   Transmission --28 bytes, WRITE--> Payload --len bytes--> Transmission (Feed::Request)
//!                --READ/FLUSH/TRIM/WRITE_ZEROES--> Transmission (Feed::Request)
//!                --bad request--> Transmission (Feed::Reject{errno})
//!                --DISC--> Closed (Feed::Disconnect)
//!                --bad magic, WRITE > MAX_IO_BYTES--> Closed (Feed::Close)
//! ```
//!
//! A WRITE's payload goes into one `Vec` allocated once from the header (never
//! zero-filled: 1 MiB memsets cost as much as the copy); the shell can read the
//! socket straight into its spare capacity ([`Session::payload_slot`]), and the `Vec`
//! becomes the [`Payload`] of [`HostIo::Write`] without another copy.
//!
//! Options beyond the brief (STARTTLS, STRUCTURED_REPLY, meta contexts, extended
//! headers) are answered `NBD_REP_ERR_UNSUP`, so clients fall back to simple
//! replies. Spec: NetworkBlockDevice/nbd `doc/proto.md`.

use std::mem::MaybeUninit;
use std::sync::Arc;

use crate::core::replication::{HostIo, Payload, MAX_IO_BYTES};

/// "NBDMAGIC": the first 8 bytes the server sends.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// "IHAVEOPT": newstyle negotiation (server greeting and every option request).
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Magic of every option reply.
pub const REPLY_MAGIC_OPT: u64 = 0x0003_e889_0455_65a9;
/// Magic of a transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

/// Handshake flags (server).
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flags.
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

/// Transmission flags.
pub const TFLAG_HAS_FLAGS: u16 = 1 << 0;
pub const TFLAG_READ_ONLY: u16 = 1 << 1;
pub const TFLAG_SEND_FLUSH: u16 = 1 << 2;
pub const TFLAG_SEND_FUA: u16 = 1 << 3;
pub const TFLAG_SEND_TRIM: u16 = 1 << 5;
pub const TFLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub const TFLAG_CAN_MULTI_CONN: u16 = 1 << 8;

/// Options.
pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_STARTTLS: u32 = 5;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;

/// Option reply types.
pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_ERR_UNSUP: u32 = (1 << 31) + 1;
pub const REP_ERR_INVALID: u32 = (1 << 31) + 3;
pub const REP_ERR_UNKNOWN: u32 = (1 << 31) + 6;

/// Info types (NBD_REP_INFO payloads).
pub const INFO_EXPORT: u16 = 0;
pub const INFO_NAME: u16 = 1;
pub const INFO_BLOCK_SIZE: u16 = 3;

/// Commands.
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_WRITE_ZEROES: u16 = 6;
/// Command flags.
pub const CMD_FLAG_FUA: u16 = 1 << 0;
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;

/// Block sizes advertised with NBD_INFO_BLOCK_SIZE: any byte alignment works
/// (the disk worker uses pread/pwrite), 4 KiB is the bitmap's block, and the
/// maximum is the largest request the replication carries unsplit.
pub const BLOCK_SIZE_MIN: u32 = 1;
pub const BLOCK_SIZE_PREFERRED: u32 = 4096;
pub const BLOCK_SIZE_MAX: u32 = MAX_IO_BYTES as u32;

/// Largest option payload accepted (an export name is at most 4096 bytes, plus
/// the INFO/GO framing and a generous list of info requests). More: disconnect.
pub const OPT_DATA_MAX: usize = 8192;

/// errno values sent in simple replies.
pub const EPERM: u32 = 1;
pub const EINVAL: u32 = 22;
pub const ENOSPC: u32 = 28;

/// Length of a transmission request header.
pub const REQUEST_LEN: usize = 28;
/// Length of a simple reply header.
pub const SIMPLE_REPLY_LEN: usize = 16;

/// What the server sends first: NBDMAGIC, IHAVEOPT, handshake flags.
pub const GREETING: [u8; 18] = {
    let mut g = [0u8; 18];
    let m = NBDMAGIC.to_be_bytes();
    let o = IHAVEOPT.to_be_bytes();
    let f = (FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes();
    let mut i = 0;
    while i < 8 {
        g[i] = m[i];
        g[8 + i] = o[i];
        i += 1;
    }
    g[16] = f[0];
    g[17] = f[1];
    g
};

/// The export as the server currently sees it (checked on every request, so a
/// demotion to read-only applies to open connections at once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportInfo<'a> {
    /// The export name (the resource name); the empty name also selects it.
    pub name: &'a str,
    pub size: u64,
    pub read_only: bool,
}

impl ExportInfo<'_> {
    /// Transmission flags for this export.
    pub fn transmission_flags(&self) -> u16 {
        let mut f = TFLAG_HAS_FLAGS
            | TFLAG_SEND_FLUSH
            | TFLAG_SEND_FUA
            | TFLAG_SEND_TRIM
            | TFLAG_SEND_WRITE_ZEROES
            | TFLAG_CAN_MULTI_CONN;
        if self.read_only {
            f |= TFLAG_READ_ONLY;
        }
        f
    }

    fn matches(&self, name: &[u8]) -> bool {
        name.is_empty() || name == self.name.as_bytes()
    }
}

/// A transmission request ready to be served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The client's opaque handle (cookie), echoed in the reply.
    pub handle: u64,
    pub io: HostIo,
}

/// Why a session ends without a DISC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Client flags with unknown bits.
    ClientFlags,
    /// An option or request header with the wrong magic.
    Magic,
    /// Option data longer than [`OPT_DATA_MAX`] or a WRITE longer than
    /// [`MAX_IO_BYTES`]: we would have to buffer or skip an unbounded payload.
    TooBig,
    /// NBD_OPT_ABORT (an ACK was appended).
    Abort,
    /// NBD_OPT_EXPORT_NAME with a name we do not export (the spec says close).
    UnknownExport,
}

impl CloseReason {
    /// Short stable name for log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClientFlags => "client_flags",
            CloseReason::Magic => "bad_magic",
            CloseReason::TooBig => "too_big",
            CloseReason::Abort => "abort",
            CloseReason::UnknownExport => "unknown_export",
        }
    }
}

/// One result of [`Session::feed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Feed {
    /// The input is used up; nothing complete yet.
    More,
    /// Handshake finished: transmission starts (replies already appended).
    Ready,
    /// A request to serve.
    Request(Request),
    /// A request refused without doing anything: reply with this errno.
    Reject { handle: u64, errno: u32 },
    /// NBD_CMD_DISC: finish in-flight requests, then close.
    Disconnect,
    /// Close now (anything appended to the output may still be sent).
    Close(CloseReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    ClientFlags,
    OptHeader,
    OptData {
        opt: u32,
        len: usize,
    },
    Transmission,
    /// A WRITE's payload; `reject` is the errno to answer instead once it is read.
    Payload {
        handle: u64,
        offset: u64,
        fua: bool,
        reject: Option<u32>,
    },
    Closed,
}

/// One NBD connection's protocol state (server side).
#[derive(Debug)]
pub struct Session {
    phase: Phase,
    /// Partial fixed-size header (client flags, option header, request).
    hdr: [u8; REQUEST_LEN],
    hdr_len: usize,
    /// Option data being gathered.
    opt: Vec<u8>,
    /// WRITE payload being gathered: its length so far, `want` bytes in all.
    payload: Vec<u8>,
    want: usize,
    no_zeroes: bool,
}

impl Default for Session {
    fn default() -> Session {
        Session::new()
    }
}

impl Session {
    /// A session whose [`GREETING`] the shell has sent (or is about to).
    pub fn new() -> Session {
        Session {
            phase: Phase::ClientFlags,
            hdr: [0; REQUEST_LEN],
            hdr_len: 0,
            opt: Vec::new(),
            payload: Vec::new(),
            want: 0,
            no_zeroes: false,
        }
    }

    /// True once the handshake is over.
    pub fn in_transmission(&self) -> bool {
        matches!(self.phase, Phase::Transmission | Phase::Payload { .. })
    }

    /// True after a close or disconnect: feed returns nothing more.
    pub fn closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Where the rest of the current WRITE payload goes (uninitialised), for a
    /// direct socket read; None outside a payload.
    pub fn payload_slot(&mut self) -> Option<&mut [MaybeUninit<u8>]> {
        match self.phase {
            Phase::Payload { .. } => {
                let left = self.want - self.payload.len();
                Some(&mut self.payload.spare_capacity_mut()[..left])
            }
            _ => None,
        }
    }

    /// `n` bytes were read into [`Session::payload_slot`]. Returns the request
    /// (or its rejection) when the payload is complete.
    ///
    /// # Safety
    /// The first `n` bytes of the slot last returned by `payload_slot` must
    /// have been initialised (written by `read`).
    pub unsafe fn payload_advance(&mut self, n: usize) -> Option<Feed> {
        let len = self.payload.len();
        assert!(len + n <= self.want, "payload overrun");
        // SAFETY: the caller initialised these bytes; capacity >= want.
        unsafe { self.payload.set_len(len + n) };
        self.payload_done()
    }

    /// Consumes bytes from `input` until one thing completes or the input is
    /// used up. Returns the bytes used (always all of them with `Feed::More`)
    /// and what happened; handshake replies are appended to `out`.
    pub fn feed(&mut self, input: &[u8], export: &ExportInfo, out: &mut Vec<u8>) -> (usize, Feed) {
        let mut used = 0;
        loop {
            let rest = &input[used..];
            let step = match self.phase {
                Phase::Closed => return (used, Feed::More),
                Phase::ClientFlags => self.fill(rest, 4).map(|n| (n, self.on_client_flags())),
                Phase::OptHeader => self.fill(rest, 16).map(|n| (n, self.on_opt_header())),
                Phase::OptData { opt, len } => {
                    let take = rest.len().min(len - self.opt.len());
                    self.opt.extend_from_slice(&rest[..take]);
                    if self.opt.len() == len {
                        Ok((take, self.on_option(opt, export, out)))
                    } else {
                        Err(take)
                    }
                }
                Phase::Transmission => self
                    .fill(rest, REQUEST_LEN)
                    .map(|n| (n, self.on_request(export))),
                Phase::Payload { .. } => {
                    let take = rest.len().min(self.want - self.payload.len());
                    self.payload.extend_from_slice(&rest[..take]);
                    match self.payload_done() {
                        Some(feed) => Ok((take, Some(feed))),
                        None => Err(take),
                    }
                }
            };
            match step {
                Err(n) => return (used + n, Feed::More),
                Ok((n, None)) => used += n,
                Ok((n, Some(feed))) => return (used + n, feed),
            }
        }
    }

    /// Copies into the header buffer until it holds `need` bytes. Ok(consumed)
    /// when complete (hdr_len reset for the next header), Err(consumed) if not.
    fn fill(&mut self, input: &[u8], need: usize) -> Result<usize, usize> {
        let take = input.len().min(need - self.hdr_len);
        self.hdr[self.hdr_len..self.hdr_len + take].copy_from_slice(&input[..take]);
        self.hdr_len += take;
        if self.hdr_len == need {
            self.hdr_len = 0;
            Ok(take)
        } else {
            Err(take)
        }
    }

    fn close(&mut self, why: CloseReason) -> Option<Feed> {
        self.phase = Phase::Closed;
        Some(Feed::Close(why))
    }

    fn on_client_flags(&mut self) -> Option<Feed> {
        let flags = be32(&self.hdr[0..4]);
        if flags & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
            return self.close(CloseReason::ClientFlags);
        }
        self.no_zeroes = flags & FLAG_C_NO_ZEROES != 0;
        self.phase = Phase::OptHeader;
        None
    }

    fn on_opt_header(&mut self) -> Option<Feed> {
        if be64(&self.hdr[0..8]) != IHAVEOPT {
            return self.close(CloseReason::Magic);
        }
        let opt = be32(&self.hdr[8..12]);
        let len = be32(&self.hdr[12..16]) as usize;
        if len > OPT_DATA_MAX {
            return self.close(CloseReason::TooBig);
        }
        self.opt.clear();
        self.phase = Phase::OptData { opt, len };
        None
    }

    /// A complete option: reply, and move on.
    fn on_option(&mut self, opt: u32, export: &ExportInfo, out: &mut Vec<u8>) -> Option<Feed> {
        self.phase = Phase::OptHeader;
        match opt {
            OPT_EXPORT_NAME => {
                if !export.matches(&self.opt) {
                    return self.close(CloseReason::UnknownExport);
                }
                out.extend_from_slice(&export.size.to_be_bytes());
                out.extend_from_slice(&export.transmission_flags().to_be_bytes());
                if !self.no_zeroes {
                    out.extend_from_slice(&[0u8; 124]);
                }
                self.phase = Phase::Transmission;
                Some(Feed::Ready)
            }
            OPT_ABORT => {
                opt_reply(out, opt, REP_ACK, &[]);
                self.close(CloseReason::Abort)
            }
            OPT_LIST => {
                if self.opt.is_empty() {
                    let name = export.name.as_bytes();
                    let mut data = Vec::with_capacity(4 + name.len());
                    data.extend_from_slice(&(name.len() as u32).to_be_bytes());
                    data.extend_from_slice(name);
                    opt_reply(out, opt, REP_SERVER, &data);
                    opt_reply(out, opt, REP_ACK, &[]);
                } else {
                    opt_reply(out, opt, REP_ERR_INVALID, &[]);
                }
                None
            }
            OPT_INFO | OPT_GO => self.on_info_go(opt, export, out),
            _ => {
                opt_reply(out, opt, REP_ERR_UNSUP, &[]);
                None
            }
        }
    }

    fn on_info_go(&mut self, opt: u32, export: &ExportInfo, out: &mut Vec<u8>) -> Option<Feed> {
        let Some((name, requests)) = parse_info_request(&self.opt) else {
            opt_reply(out, opt, REP_ERR_INVALID, &[]);
            return None;
        };
        if !export.matches(name) {
            opt_reply(out, opt, REP_ERR_UNKNOWN, &[]);
            return None;
        }
        let mut info = [0u8; 12];
        info[0..2].copy_from_slice(&INFO_EXPORT.to_be_bytes());
        info[2..10].copy_from_slice(&export.size.to_be_bytes());
        info[10..12].copy_from_slice(&export.transmission_flags().to_be_bytes());
        opt_reply(out, opt, REP_INFO, &info);
        // Sent whether asked or not: the spec allows it, and a client that
        // ignores it can still never exceed the 1 MiB maximum unknowingly.
        let mut bs = [0u8; 14];
        bs[0..2].copy_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
        bs[2..6].copy_from_slice(&BLOCK_SIZE_MIN.to_be_bytes());
        bs[6..10].copy_from_slice(&BLOCK_SIZE_PREFERRED.to_be_bytes());
        bs[10..14].copy_from_slice(&BLOCK_SIZE_MAX.to_be_bytes());
        opt_reply(out, opt, REP_INFO, &bs);
        if requests.chunks_exact(2).any(|r| be16(r) == INFO_NAME) {
            let mut data = Vec::with_capacity(2 + export.name.len());
            data.extend_from_slice(&INFO_NAME.to_be_bytes());
            data.extend_from_slice(export.name.as_bytes());
            opt_reply(out, opt, REP_INFO, &data);
        }
        opt_reply(out, opt, REP_ACK, &[]);
        if opt == OPT_GO {
            self.phase = Phase::Transmission;
            return Some(Feed::Ready);
        }
        None
    }

    /// A complete 28-byte request header.
    fn on_request(&mut self, export: &ExportInfo) -> Option<Feed> {
        let h = &self.hdr;
        if be32(&h[0..4]) != REQUEST_MAGIC {
            return self.close(CloseReason::Magic);
        }
        let flags = be16(&h[4..6]);
        let kind = be16(&h[6..8]);
        let handle = be64(&h[8..16]);
        let offset = be64(&h[16..24]);
        let len = be32(&h[24..28]);
        let fua = flags & CMD_FLAG_FUA != 0;
        let in_range = len > 0
            && offset
                .checked_add(len as u64)
                .is_some_and(|end| end <= export.size);
        // The spec: EINVAL for a flag not documented for the command, ENOSPC
        // for a write past the end, EINVAL for a read or trim past it.
        let flags_ok = flags & !allowed_flags(kind) == 0;
        let reject = |errno| Some(Feed::Reject { handle, errno });
        let io = match kind {
            CMD_WRITE => {
                return self.start_payload(handle, offset, len, fua, in_range && flags_ok, export)
            }
            CMD_DISC => {
                self.phase = Phase::Closed;
                return Some(Feed::Disconnect);
            }
            _ if !flags_ok => return reject(EINVAL),
            CMD_READ if !in_range || len as usize > MAX_IO_BYTES => return reject(EINVAL),
            CMD_READ => HostIo::Read { offset, len },
            CMD_FLUSH => HostIo::Flush,
            CMD_TRIM | CMD_WRITE_ZEROES if export.read_only => return reject(EPERM),
            CMD_TRIM if !in_range => return reject(EINVAL),
            CMD_WRITE_ZEROES if !in_range => return reject(if len == 0 { EINVAL } else { ENOSPC }),
            CMD_TRIM => HostIo::Trim { offset, len, fua },
            // NO_HOLE needs nothing: the disk worker never punches holes for
            // WRITE_ZEROES, so the range always stays allocated.
            CMD_WRITE_ZEROES => HostIo::WriteZeroes { offset, len, fua },
            _ => return reject(EINVAL),
        };
        Some(Feed::Request(Request { handle, io }))
    }

    fn start_payload(
        &mut self,
        handle: u64,
        offset: u64,
        len: u32,
        fua: bool,
        ok: bool,
        export: &ExportInfo,
    ) -> Option<Feed> {
        if len as usize > MAX_IO_BYTES {
            return self.close(CloseReason::TooBig);
        }
        if len == 0 {
            return Some(Feed::Reject {
                handle,
                errno: EINVAL,
            });
        }
        let reject = if export.read_only {
            Some(EPERM)
        } else if !ok {
            Some(if offset.saturating_add(len as u64) > export.size {
                ENOSPC
            } else {
                EINVAL
            })
        } else {
            None
        };
        // One allocation of the exact size; it becomes the Payload as is.
        self.payload = Vec::with_capacity(len as usize);
        self.want = len as usize;
        self.phase = Phase::Payload {
            handle,
            offset,
            fua,
            reject,
        };
        None
    }

    fn payload_done(&mut self) -> Option<Feed> {
        let Phase::Payload {
            handle,
            offset,
            fua,
            reject,
        } = self.phase
        else {
            return None;
        };
        if self.payload.len() < self.want {
            return None;
        }
        self.phase = Phase::Transmission;
        let data = std::mem::take(&mut self.payload);
        self.want = 0;
        if let Some(errno) = reject {
            return Some(Feed::Reject { handle, errno });
        }
        let data: Payload = Arc::new(data);
        Some(Feed::Request(Request {
            handle,
            io: HostIo::Write { offset, data, fua },
        }))
    }
}

/// Command flags the spec documents for each command we offer.
fn allowed_flags(kind: u16) -> u16 {
    match kind {
        CMD_WRITE | CMD_TRIM => CMD_FLAG_FUA,
        CMD_WRITE_ZEROES => CMD_FLAG_FUA | CMD_FLAG_NO_HOLE,
        _ => 0,
    }
}

/// Splits INFO/GO data: (name, info requests as u16 pairs). None if malformed.
fn parse_info_request(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let name_len = be32(data.get(0..4)?) as usize;
    let name = data.get(4..4usize.checked_add(name_len)?)?;
    let rest = &data[4 + name_len..];
    let n = be16(rest.get(0..2)?) as usize;
    let requests = &rest[2..];
    (requests.len() == 2 * n).then_some((name, requests))
}

/// Appends one option reply.
pub fn opt_reply(out: &mut Vec<u8>, opt: u32, kind: u32, data: &[u8]) {
    out.extend_from_slice(&REPLY_MAGIC_OPT.to_be_bytes());
    out.extend_from_slice(&opt.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
}

/// A simple reply header (read data, if any, follows it on the wire).
pub fn simple_reply(handle: u64, errno: u32) -> [u8; SIMPLE_REPLY_LEN] {
    let mut r = [0u8; SIMPLE_REPLY_LEN];
    r[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    r[4..8].copy_from_slice(&errno.to_be_bytes());
    r[8..16].copy_from_slice(&handle.to_be_bytes());
    r
}

/// Encodes a request (client side; used by tests and fuzzing to build input).
pub fn encode_request(
    flags: u16,
    kind: u16,
    handle: u64,
    offset: u64,
    len: u32,
) -> [u8; REQUEST_LEN] {
    let mut r = [0u8; REQUEST_LEN];
    r[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    r[4..6].copy_from_slice(&flags.to_be_bytes());
    r[6..8].copy_from_slice(&kind.to_be_bytes());
    r[8..16].copy_from_slice(&handle.to_be_bytes());
    r[16..24].copy_from_slice(&offset.to_be_bytes());
    r[24..28].copy_from_slice(&len.to_be_bytes());
    r
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPORT: ExportInfo<'static> = ExportInfo {
        name: "repl",
        size: 1 << 20,
        read_only: false,
    };

    fn opt(o: u32, data: &[u8]) -> Vec<u8> {
        let mut v = IHAVEOPT.to_be_bytes().to_vec();
        v.extend_from_slice(&o.to_be_bytes());
        v.extend_from_slice(&(data.len() as u32).to_be_bytes());
        v.extend_from_slice(data);
        v
    }

    fn go_data(name: &str, infos: &[u16]) -> Vec<u8> {
        let mut v = (name.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(name.as_bytes());
        v.extend_from_slice(&(infos.len() as u16).to_be_bytes());
        for i in infos {
            v.extend_from_slice(&i.to_be_bytes());
        }
        v
    }

    /// Feeds `input` in pieces of `piece` bytes; collects every non-More result.
    fn drive(
        s: &mut Session,
        input: &[u8],
        piece: usize,
        export: &ExportInfo,
        out: &mut Vec<u8>,
    ) -> Vec<Feed> {
        let mut feeds = Vec::new();
        for chunk in input.chunks(piece.max(1)) {
            let mut rest = chunk;
            loop {
                let (n, f) = s.feed(rest, export, out);
                assert!(n <= rest.len());
                rest = &rest[n..];
                if f == Feed::More {
                    assert!(rest.is_empty() || s.closed());
                    break;
                }
                feeds.push(f);
            }
        }
        feeds
    }

    fn fill(slot: &mut [MaybeUninit<u8>], bytes: &[u8]) {
        for (d, b) in slot.iter_mut().zip(bytes) {
            d.write(*b);
        }
    }

    /// Parses option replies: (option, type, data).
    fn replies(mut out: &[u8]) -> Vec<(u32, u32, Vec<u8>)> {
        let mut v = Vec::new();
        while !out.is_empty() {
            assert_eq!(be64(&out[0..8]), REPLY_MAGIC_OPT);
            let len = be32(&out[16..20]) as usize;
            v.push((
                be32(&out[8..12]),
                be32(&out[12..16]),
                out[20..20 + len].to_vec(),
            ));
            out = &out[20 + len..];
        }
        v
    }

    fn transmission(piece: usize) -> Session {
        let mut s = Session::new();
        let mut input = (FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)
            .to_be_bytes()
            .to_vec();
        input.extend(opt(OPT_GO, &go_data("repl", &[])));
        let mut out = Vec::new();
        assert_eq!(
            drive(&mut s, &input, piece, &EXPORT, &mut out),
            vec![Feed::Ready]
        );
        assert!(s.in_transmission());
        s
    }

    // Tests for the handshake.

    #[test]
    fn greeting_bytes() {
        assert_eq!(&GREETING[0..8], b"NBDMAGIC");
        assert_eq!(&GREETING[8..16], b"IHAVEOPT");
        assert_eq!(&GREETING[16..18], &[0, 3]);
    }

    #[test]
    fn go_replies_export_block_size_ack_in_any_piece_size() {
        for piece in [1, 3, 7, 1000] {
            let mut s = Session::new();
            let mut input = FLAG_C_FIXED_NEWSTYLE.to_be_bytes().to_vec();
            input.extend(opt(OPT_GO, &go_data("repl", &[INFO_BLOCK_SIZE, INFO_NAME])));
            input.extend(encode_request(0, CMD_FLUSH, 9, 0, 0));
            let mut out = Vec::new();
            let feeds = drive(&mut s, &input, piece, &EXPORT, &mut out);
            let flush = Feed::Request(Request {
                handle: 9,
                io: HostIo::Flush,
            });
            assert_eq!(feeds, vec![Feed::Ready, flush], "piece {piece}");
            let r = replies(&out);
            assert_eq!(r.len(), 4);
            assert_eq!((r[0].0, r[0].1), (OPT_GO, REP_INFO));
            assert_eq!(be16(&r[0].2[0..2]), INFO_EXPORT);
            assert_eq!(be64(&r[0].2[2..10]), 1 << 20);
            let flags = be16(&r[0].2[10..12]);
            assert_eq!(flags & TFLAG_READ_ONLY, 0);
            assert_ne!(flags & TFLAG_CAN_MULTI_CONN, 0);
            assert_eq!(be16(&r[1].2[0..2]), INFO_BLOCK_SIZE);
            assert_eq!(be32(&r[1].2[10..14]), MAX_IO_BYTES as u32);
            assert_eq!(&r[2].2[2..], b"repl");
            assert_eq!(r[3].1, REP_ACK);
        }
    }

    #[test]
    fn info_stays_in_options_and_unknown_name_is_err_unknown() {
        let mut s = Session::new();
        let mut input = 1u32.to_be_bytes().to_vec();
        input.extend(opt(OPT_INFO, &go_data("", &[])));
        input.extend(opt(OPT_GO, &go_data("other", &[])));
        input.extend(opt(OPT_GO, b"\0\0\0\x09repl")); // truncated: invalid
        let mut out = Vec::new();
        assert!(drive(&mut s, &input, 5, &EXPORT, &mut out).is_empty());
        assert!(!s.in_transmission());
        let kinds: Vec<u32> = replies(&out).iter().map(|r| r.1).collect();
        assert_eq!(
            kinds,
            vec![
                REP_INFO,
                REP_INFO,
                REP_ACK,
                REP_ERR_UNKNOWN,
                REP_ERR_INVALID
            ]
        );
    }

    #[test]
    fn list_unsupported_and_abort() {
        let mut s = Session::new();
        let mut input = 1u32.to_be_bytes().to_vec();
        input.extend(opt(OPT_LIST, &[]));
        input.extend(opt(OPT_STRUCTURED_REPLY, &[]));
        input.extend(opt(OPT_STARTTLS, &[]));
        input.extend(opt(OPT_ABORT, &[]));
        input.extend(opt(OPT_LIST, &[])); // after close: ignored
        let mut out = Vec::new();
        let feeds = drive(&mut s, &input, 1000, &EXPORT, &mut out);
        assert_eq!(feeds, vec![Feed::Close(CloseReason::Abort)]);
        let r = replies(&out);
        assert_eq!(r[0].1, REP_SERVER);
        assert_eq!(&r[0].2, b"\0\0\0\x04repl");
        let kinds: Vec<u32> = r[1..].iter().map(|r| r.1).collect();
        assert_eq!(kinds, vec![REP_ACK, REP_ERR_UNSUP, REP_ERR_UNSUP, REP_ACK]);
    }

    #[test]
    fn export_name_zeroes_unless_no_zeroes() {
        for (flags, len) in [(1u32, 8 + 2 + 124), (3, 10)] {
            let mut s = Session::new();
            let mut input = flags.to_be_bytes().to_vec();
            input.extend(opt(OPT_EXPORT_NAME, b"repl"));
            let mut out = Vec::new();
            let ro = ExportInfo {
                read_only: true,
                ..EXPORT
            };
            assert_eq!(drive(&mut s, &input, 2, &ro, &mut out), vec![Feed::Ready]);
            assert_eq!(out.len(), len);
            assert_eq!(be64(&out[0..8]), 1 << 20);
            assert_ne!(be16(&out[8..10]) & TFLAG_READ_ONLY, 0);
        }
        let mut s = Session::new();
        let mut input = 1u32.to_be_bytes().to_vec();
        input.extend(opt(OPT_EXPORT_NAME, b"nope"));
        let feeds = drive(&mut s, &input, 100, &EXPORT, &mut Vec::new());
        assert_eq!(feeds, vec![Feed::Close(CloseReason::UnknownExport)]);
    }

    #[test]
    fn garbage_closes() {
        let mut s = Session::new();
        assert_eq!(
            drive(&mut s, &[0, 0, 0, 4], 4, &EXPORT, &mut Vec::new()),
            vec![Feed::Close(CloseReason::ClientFlags)]
        );
        let mut s = Session::new();
        let mut input = 1u32.to_be_bytes().to_vec();
        input.extend(b"NOTMAGIC\0\0\0\x01\0\0\0\0");
        assert_eq!(
            drive(&mut s, &input, 4, &EXPORT, &mut Vec::new()),
            vec![Feed::Close(CloseReason::Magic)]
        );
        let mut s = Session::new();
        let mut input = 1u32.to_be_bytes().to_vec();
        input.extend(&opt(99, &[])[..12]);
        input.extend(&(OPT_DATA_MAX as u32 + 1).to_be_bytes());
        assert_eq!(
            drive(&mut s, &input, 4, &EXPORT, &mut Vec::new()),
            vec![Feed::Close(CloseReason::TooBig)]
        );
    }

    // Tests for the transmission phase.

    #[test]
    fn write_payload_in_pieces_and_direct_slot() {
        for piece in [1, 5, 4096, 100_000] {
            let mut s = transmission(piece);
            let mut input = encode_request(CMD_FLAG_FUA, CMD_WRITE, 7, 4096, 5000).to_vec();
            input.extend((0..5000u32).map(|i| i as u8));
            input.extend(encode_request(0, CMD_READ, 8, 1, 3));
            let feeds = drive(&mut s, &input, piece, &EXPORT, &mut Vec::new());
            let data = Arc::new((0..5000u32).map(|i| i as u8).collect::<Vec<u8>>());
            assert_eq!(
                feeds,
                vec![
                    Feed::Request(Request {
                        handle: 7,
                        io: HostIo::Write {
                            offset: 4096,
                            data,
                            fua: true
                        }
                    }),
                    Feed::Request(Request {
                        handle: 8,
                        io: HostIo::Read { offset: 1, len: 3 }
                    }),
                ]
            );
        }
        let mut s = transmission(100);
        let hdr = encode_request(0, CMD_WRITE, 1, 0, 10);
        let (n, f) = s.feed(&hdr, &EXPORT, &mut Vec::new());
        assert_eq!((n, f), (REQUEST_LEN, Feed::More));
        fill(s.payload_slot().unwrap(), b"abcd");
        // SAFETY: 4 bytes written just above.
        assert_eq!(unsafe { s.payload_advance(4) }, None);
        assert_eq!(s.payload_slot().unwrap().len(), 6);
        fill(s.payload_slot().unwrap(), b"efghij");
        let Some(Feed::Request(Request {
            io: HostIo::Write { data, .. },
            ..
        })) = (unsafe { s.payload_advance(6) })
        else {
            panic!("no write");
        };
        assert_eq!(&data[..], b"abcdefghij");
        assert!(s.payload_slot().is_none());
    }

    #[test]
    fn bad_requests_are_rejected_and_stream_stays_in_sync() {
        let mut s = transmission(64);
        let ro = ExportInfo {
            read_only: true,
            ..EXPORT
        };
        let mut input = Vec::new();
        input.extend(encode_request(0, CMD_READ, 1, (1 << 20) - 1, 2)); // past the end
        input.extend(encode_request(0, CMD_READ, 2, 0, 0)); // empty
        input.extend(encode_request(0, CMD_READ, 3, 0, MAX_IO_BYTES as u32 + 1));
        input.extend(encode_request(0, CMD_WRITE, 4, 0, 3)); // read-only: EPERM after payload
        input.extend(b"xyz");
        input.extend(encode_request(0, CMD_TRIM, 5, 0, 4096));
        input.extend(encode_request(0, 5, 6, 0, 4096)); // CACHE: not offered
        input.extend(encode_request(0, CMD_READ, 7, u64::MAX, 2)); // overflow
        input.extend(encode_request(CMD_FLAG_FUA, CMD_READ, 11, 0, 512)); // FUA is for writes
        input.extend(encode_request(0, CMD_READ, 8, 0, 512));
        input.extend(encode_request(0, CMD_DISC, 9, 0, 0));
        input.extend(encode_request(0, CMD_READ, 10, 0, 512)); // after DISC: ignored
        let feeds = drive(&mut s, &input, 13, &ro, &mut Vec::new());
        let rej = |handle, errno| Feed::Reject { handle, errno };
        assert_eq!(
            feeds,
            vec![
                rej(1, EINVAL),
                rej(2, EINVAL),
                rej(3, EINVAL),
                rej(4, EPERM),
                rej(5, EPERM),
                rej(6, EINVAL),
                rej(7, EINVAL),
                rej(11, EINVAL),
                Feed::Request(Request {
                    handle: 8,
                    io: HostIo::Read {
                        offset: 0,
                        len: 512
                    }
                }),
                Feed::Disconnect,
            ]
        );
    }

    #[test]
    fn trim_zeroes_flags_and_oversize_write_closes() {
        let mut s = transmission(64);
        let mut input = Vec::new();
        input.extend(encode_request(CMD_FLAG_FUA, CMD_TRIM, 1, 0, 1 << 20));
        input.extend(encode_request(
            CMD_FLAG_NO_HOLE,
            CMD_WRITE_ZEROES,
            2,
            10,
            20,
        ));
        input.extend(encode_request(0, CMD_WRITE, 4, (1 << 20) - 1, 2)); // past the end: ENOSPC
        input.extend(b"ab");
        input.extend(encode_request(CMD_FLAG_NO_HOLE, CMD_WRITE, 5, 0, 1)); // NO_HOLE is not for WRITE
        input.extend(b"c");
        input.extend(encode_request(0, CMD_WRITE_ZEROES, 6, 1 << 20, 1)); // past the end: ENOSPC
        input.extend(encode_request(0, CMD_WRITE, 3, 0, MAX_IO_BYTES as u32 + 1));
        let feeds = drive(&mut s, &input, 64, &EXPORT, &mut Vec::new());
        assert_eq!(
            feeds,
            vec![
                Feed::Request(Request {
                    handle: 1,
                    io: HostIo::Trim {
                        offset: 0,
                        len: 1 << 20,
                        fua: true
                    }
                }),
                Feed::Request(Request {
                    handle: 2,
                    io: HostIo::WriteZeroes {
                        offset: 10,
                        len: 20,
                        fua: false
                    }
                }),
                Feed::Reject {
                    handle: 4,
                    errno: ENOSPC
                },
                Feed::Reject {
                    handle: 5,
                    errno: EINVAL
                },
                Feed::Reject {
                    handle: 6,
                    errno: ENOSPC
                },
                Feed::Close(CloseReason::TooBig),
            ]
        );
        let mut s = transmission(64);
        let mut bad = encode_request(0, CMD_READ, 1, 0, 1);
        bad[0] ^= 1;
        assert_eq!(
            drive(&mut s, &bad, 64, &EXPORT, &mut Vec::new()),
            vec![Feed::Close(CloseReason::Magic)]
        );
    }

    #[test]
    fn simple_reply_layout() {
        let r = simple_reply(0x0102_0304_0506_0708, EINVAL);
        assert_eq!(&r[0..4], &[0x67, 0x44, 0x66, 0x98]);
        assert_eq!(be32(&r[4..8]), 22);
        assert_eq!(be64(&r[8..16]), 0x0102_0304_0506_0708);
    }

    /// Random valid request streams, cut at random points, decode to exactly
    /// the requests encoded (a property check of the incremental parser).
    #[test]
    fn random_request_streams_round_trip() {
        let mut x: u64 = 0x1234_5678_9abc_def1;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for _ in 0..200 {
            let mut input = Vec::new();
            let mut want = Vec::new();
            for handle in 0..(1 + rnd(20)) {
                let offset = rnd(1 << 19);
                let len = 1 + rnd(70_000) as u32;
                let fua = rnd(2) == 1;
                let flags = if fua { CMD_FLAG_FUA } else { 0 };
                let io = match rnd(5) {
                    0 => HostIo::Read { offset, len },
                    1 => {
                        let data: Vec<u8> = (0..len).map(|_| rnd(256) as u8).collect();
                        input.extend(encode_request(flags, CMD_WRITE, handle, offset, len));
                        input.extend(&data);
                        want.push(Feed::Request(Request {
                            handle,
                            io: HostIo::Write {
                                offset,
                                data: Arc::new(data),
                                fua,
                            },
                        }));
                        continue;
                    }
                    2 => HostIo::Flush,
                    3 => HostIo::Trim { offset, len, fua },
                    _ => HostIo::WriteZeroes { offset, len, fua },
                };
                let (kind, flags, offset, len) = match io {
                    HostIo::Read { offset, len } => (CMD_READ, 0, offset, len),
                    HostIo::Flush => (CMD_FLUSH, 0, 0, 0),
                    HostIo::Trim { offset, len, .. } => (CMD_TRIM, flags, offset, len),
                    HostIo::WriteZeroes { offset, len, .. } => {
                        (CMD_WRITE_ZEROES, flags, offset, len)
                    }
                    HostIo::Write { .. } => unreachable!(),
                };
                input.extend(encode_request(flags, kind, handle, offset, len));
                want.push(Feed::Request(Request { handle, io }));
            }
            let mut s = transmission(64);
            let mut got = Vec::new();
            let mut rest = &input[..];
            while !rest.is_empty() {
                let cut = (1 + rnd(9000) as usize).min(rest.len());
                got.extend(drive(&mut s, &rest[..cut], cut, &EXPORT, &mut Vec::new()));
                rest = &rest[cut..];
            }
            assert_eq!(got, want);
        }
    }

    /// Arbitrary bytes never panic and every consumed count stays in bounds.
    #[test]
    fn random_input_never_panics() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..2000 {
            let mut s = if round % 2 == 0 {
                Session::new()
            } else {
                transmission(64)
            };
            let len = (round * 7) % 300;
            let input: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = drive(&mut s, &input, 1 + round % 11, &EXPORT, &mut Vec::new());
        }
    }
}
