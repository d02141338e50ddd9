//! The frame: header, payload, MAC, CRC (before COBS).
//!
//! Layer: pure. Follows smoltcp: [`Packet`] is a zero-copy view over `mod field`
//! byte ranges; once [`Packet::check_len`] succeeds no accessor panics. [`Repr`] is
//! the validated meaning with `parse`/`emit`/`buffer_len`.
//!
//! ```text
//!  0        1      2     3      4            8                16      18     20       24
//!  version  kind   key   node   boot_epoch   seq              len     flags  reserved
//!  u8       u8     u8    u8     u32 LE       u64 LE           u16 LE  u16 LE u32
//!  then payload[len], mac[16] (HMAC over header+payload, truncated), crc32c LE over all before
//! ```

use core::fmt;

/// Frame format version; a frame of another version is rejected (`FrameError::Version`).
pub const VERSION: u8 = 1;
/// Header length in bytes.
pub const HEADER_LEN: usize = 24;
/// Truncated MAC length in bytes (128 bits, as recommended for truncated HMAC).
pub const MAC_LEN: usize = 16;
/// CRC-32C length in bytes.
pub const CRC_LEN: usize = 4;

/// Frame kinds. Unknown codes are values (`Unknown`), counted and dropped by the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A heartbeat: liveness, timestamps, status, config digest.
    Heartbeat,
    /// A code this version does not know (a newer peer).
    Unknown(u8),
}

impl From<u8> for Kind {
    fn from(v: u8) -> Kind {
        match v {
            1 => Kind::Heartbeat,
            other => Kind::Unknown(other),
        }
    }
}

impl From<Kind> for u8 {
    fn from(k: Kind) -> u8 {
        match k {
            Kind::Heartbeat => 1,
            Kind::Unknown(v) => v,
        }
    }
}

/// Why a frame was refused. Small and `Copy`: it becomes a counter, never a panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameError {
    /// COBS decoding failed (line noise, a cut in the middle of a frame).
    Cobs,
    /// Shorter than header + mac + crc, or `len` points past the end.
    Short,
    /// Longer than `FRAME_MAX` (resynchronises at the next 0x00).
    Long,
    /// CRC mismatch (line noise).
    Crc,
    /// Unknown frame version.
    Version,
    /// The payload does not parse for its kind.
    Payload,
    /// The key id is not in our authkeys.
    UnknownKey,
    /// MAC mismatch (wrong key, or forged).
    Mac,
    /// `(boot_epoch, seq)` not newer than what was accepted (replay).
    Replay,
    /// The frame claims to come from this node (a reflection or our own broadcast).
    Reflection,
    /// The sender is not the configured peer.
    UnknownNode,
}

impl FrameError {
    /// Every variant, for counters indexed by `as usize` and for the catalogue test.
    pub const ALL: [FrameError; 11] = [
        FrameError::Cobs,
        FrameError::Short,
        FrameError::Long,
        FrameError::Crc,
        FrameError::Version,
        FrameError::Payload,
        FrameError::UnknownKey,
        FrameError::Mac,
        FrameError::Replay,
        FrameError::Reflection,
        FrameError::UnknownNode,
    ];

    /// The `reason=` word in `frame_rejected` lines.
    pub const fn name(self) -> &'static str {
        match self {
            FrameError::Cobs => "cobs",
            FrameError::Short => "short",
            FrameError::Long => "long",
            FrameError::Crc => "crc",
            FrameError::Version => "version",
            FrameError::Payload => "payload",
            FrameError::UnknownKey => "unknown_key",
            FrameError::Mac => "mac",
            FrameError::Replay => "replay",
            FrameError::Reflection => "reflection",
            FrameError::UnknownNode => "unknown_node",
        }
    }

    /// Index into counter arrays (position in [`FrameError::ALL`]).
    pub fn index(self) -> usize {
        FrameError::ALL.iter().position(|e| *e == self).expect("ALL lists every variant")
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The validated header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// What the payload is.
    pub kind: Kind,
    /// The authkeys id of the key that made the MAC.
    pub key: u8,
    /// Sender's index in the ha.cf `node` list (0 or 1).
    pub node: u8,
    /// Sender's boot generation: persisted, bumped at every start.
    pub boot_epoch: u32,
    /// Sender's frame sequence within this boot (starts at 1, strictly increasing).
    pub seq: u64,
    /// Reserved for later kinds; zero today.
    pub flags: u16,
}

/// The heartbeat payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HeartbeatPayload {
    /// Sender's monotonic clock when it built the frame, ms (wraps at 2^32).
    pub sent_ms: u32,
    /// The `sent_ms` of the last heartbeat the sender accepted from us (0 if none),
    /// so each side can measure the round trip.
    pub echo_ms: u32,
    /// Sender's view of us: 0 unknown, 1 alive (bit field, extended by later issues).
    pub status: u8,
    /// The sender's configuration digest (ha.cf, haresources, authkeys).
    pub digest: crate::config::digest::ConfigDigest,
}

/// A validated frame: header and decoded payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    /// The header.
    pub header: Header,
    /// The heartbeat payload (the only kind today).
    pub heartbeat: HeartbeatPayload,
}

/// A zero-copy view over an un-COBSed frame buffer.
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it.
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// The underlying bytes.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}
