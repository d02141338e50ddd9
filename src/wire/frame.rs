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
//!
//! Heartbeat payload (36 bytes):
//!
//! ```text
//!  0        4        8       9             11      12           16                 20
//!  sent_ms  echo_ms  status  echo_hold_ms  groups  digest.ha_cf digest.haresources digest.authkeys
//!  u32 LE   u32 LE   u8      u16 LE        u8      u32 LE       u32 LE             u32 LE
//!  24              32             33
//!  adverts[8]      ping_reachable reserved
//!  u8 x 8          u8             3 x 0
//! ```
//!
//! `groups` (0..=[`GROUPS_MAX`]) says how many `adverts` bytes are used; each is one
//! [`GroupAdvert`]: bits 0-2 the sender's [`AdvertState`] for that group, bit 3
//! `offer`, bit 4 `want`, bits 5-7 zero. Unused advert bytes are zero.
//! `ping_reachable` is how many ping nodes the sender reaches (0 without ping nodes).
//!
//! Parsing is strict so that every accepted frame is canonical (re-emitting its
//! `Repr` gives the same bytes): reserved fields and unused adverts must be zero,
//! `len` must cover the buffer exactly, and a heartbeat payload is exactly 36 bytes.

use core::fmt;

/// Frame format version; a frame of another version is rejected (`FrameError::Version`).
pub const VERSION: u8 = 1;
/// Header length in bytes.
pub const HEADER_LEN: usize = 24;
/// Truncated MAC length in bytes (128 bits, as recommended for truncated HMAC).
pub const MAC_LEN: usize = 16;
/// CRC-32C length in bytes.
pub const CRC_LEN: usize = 4;
/// Shortest possible frame: header, empty payload, MAC and CRC.
pub const FRAME_MIN: usize = HEADER_LEN + MAC_LEN + CRC_LEN;
/// Heartbeat payload length in bytes (see `field::heartbeat`).
pub const HEARTBEAT_LEN: usize = field::heartbeat::LEN;

// The field table and the documented lengths agree.
const _: () = assert!(field::RESERVED.end == HEADER_LEN);
const _: () = assert!(HEARTBEAT_LEN == 36);

/// Most resource groups a heartbeat can describe (one advert byte each).
pub const GROUPS_MAX: usize = 8;
const _: () =
    assert!(field::heartbeat::ADVERTS.end - field::heartbeat::ADVERTS.start == GROUPS_MAX);

/// CRC-32C (Castagnoli, as iSCSI and ext4 use): better burst detection than the
/// Ethernet CRC-32 at the same cost.
const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// Byte ranges of the frame, smoltcp style. Header offsets are absolute; payload,
/// MAC and CRC depend on the `len` field; `heartbeat` offsets are relative to the
/// payload.
mod field {
    /// A byte range in the buffer.
    pub type Field = core::ops::Range<usize>;

    pub const VERSION: usize = 0;
    pub const KIND: usize = 1;
    pub const KEY: usize = 2;
    pub const NODE: usize = 3;
    pub const BOOT_EPOCH: Field = 4..8;
    pub const SEQ: Field = 8..16;
    pub const LEN: Field = 16..18;
    pub const FLAGS: Field = 18..20;
    pub const RESERVED: Field = 20..24;

    /// The payload of `len` bytes, after the header.
    pub const fn payload(len: usize) -> Field {
        super::HEADER_LEN..super::HEADER_LEN + len
    }

    /// The MAC, after the payload.
    pub const fn mac(len: usize) -> Field {
        payload(len).end..payload(len).end + super::MAC_LEN
    }

    /// The CRC, last.
    pub const fn crc(len: usize) -> Field {
        mac(len).end..mac(len).end + super::CRC_LEN
    }

    /// The heartbeat payload, relative to its start.
    pub mod heartbeat {
        use super::Field;

        pub const SENT_MS: Field = 0..4;
        pub const ECHO_MS: Field = 4..8;
        pub const STATUS: usize = 8;
        pub const ECHO_HOLD_MS: Field = 9..11;
        pub const GROUPS: usize = 11;
        pub const DIGEST_HA_CF: Field = 12..16;
        pub const DIGEST_HARESOURCES: Field = 16..20;
        pub const DIGEST_AUTHKEYS: Field = 20..24;
        pub const ADVERTS: Field = 24..32;
        pub const PING_REACHABLE: usize = 32;
        pub const RESERVED: Field = 33..36;
        pub const LEN: usize = RESERVED.end;
    }
}

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
    /// Longer than `FRAME_MAX` (resynchronises at the next 0x00), or longer than
    /// its `len` field says.
    Long,
    /// CRC mismatch (line noise).
    Crc,
    /// Unknown frame version.
    Version,
    /// The payload does not parse for its kind, the kind is unknown (checked only
    /// after the MAC, so this counts authentic frames from a newer peer), or a
    /// reserved field is not zero.
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
    /// An exact repeat of the last frame accepted on the same link. A serial link
    /// sends each heartbeat again while the line is idle, so that line noise costs
    /// a copy, not the heartbeat; a repeat proves nothing new, so it is ignored:
    /// counted in the link's stats, never summarised as a rejection.
    Repeat,
}

impl FrameError {
    /// Every variant, for counters indexed by `as usize` and for the catalogue test.
    pub const ALL: [FrameError; 12] = [
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
        FrameError::Repeat,
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
            FrameError::Repeat => "repeat",
        }
    }

    /// Index into counter arrays (position in [`FrameError::ALL`]).
    pub fn index(self) -> usize {
        FrameError::ALL
            .iter()
            .position(|e| *e == self)
            .expect("ALL lists every variant")
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

/// A node's state for one resource group, as it advertises it (3 bits on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum AdvertState {
    /// Not running here.
    #[default]
    Stopped,
    /// Resources are being started here.
    Starting,
    /// Every resource runs here.
    Running,
    /// Resources are being stopped here.
    Stopping,
    /// A start failed and was rolled back; this node waits before trying again.
    Failed,
    /// A stop failed after its retries: the group may still run here.
    Blocked,
}

impl AdvertState {
    /// Every state, in code order.
    pub const ALL: [AdvertState; 6] = [
        AdvertState::Stopped,
        AdvertState::Starting,
        AdvertState::Running,
        AdvertState::Stopping,
        AdvertState::Failed,
        AdvertState::Blocked,
    ];

    /// The word used in logs and status.
    pub const fn name(self) -> &'static str {
        match self {
            AdvertState::Stopped => "stopped",
            AdvertState::Starting => "starting",
            AdvertState::Running => "running",
            AdvertState::Stopping => "stopping",
            AdvertState::Failed => "failed",
            AdvertState::Blocked => "blocked",
        }
    }

    /// Whether the group may be active on the advertising node: the other node must
    /// not start it (release before acquire).
    pub const fn holds(self) -> bool {
        matches!(
            self,
            AdvertState::Starting
                | AdvertState::Running
                | AdvertState::Stopping
                | AdvertState::Blocked
        )
    }
}

/// One group's advert: the sender's state and its handover flags (one byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct GroupAdvert {
    /// The sender's state for the group.
    pub state: AdvertState,
    /// "I release this group for you": the sender will not start it.
    pub offer: bool,
    /// "I would like this group" (with `offer`: "I take it back if you will not").
    pub want: bool,
}

const ADVERT_STATE_MASK: u8 = 0x07;
const ADVERT_OFFER: u8 = 0x08;
const ADVERT_WANT: u8 = 0x10;

impl GroupAdvert {
    /// The wire byte.
    pub const fn to_byte(self) -> u8 {
        let state = self.state as u8;
        let offer = if self.offer { ADVERT_OFFER } else { 0 };
        let want = if self.want { ADVERT_WANT } else { 0 };
        state | offer | want
    }

    /// Parses a wire byte; `None` for an unknown state or a reserved bit set.
    pub fn from_byte(byte: u8) -> Option<GroupAdvert> {
        if byte & !(ADVERT_STATE_MASK | ADVERT_OFFER | ADVERT_WANT) != 0 {
            return None;
        }
        let state = *AdvertState::ALL.get((byte & ADVERT_STATE_MASK) as usize)?;
        Some(GroupAdvert {
            state,
            offer: byte & ADVERT_OFFER != 0,
            want: byte & ADVERT_WANT != 0,
        })
    }
}

/// Up to [`GROUPS_MAX`] group adverts. Unused slots are always the default advert,
/// so equality and the wire bytes agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Adverts {
    len: u8,
    items: [GroupAdvert; GROUPS_MAX],
}

impl Adverts {
    /// No groups.
    pub const EMPTY: Adverts = Adverts {
        len: 0,
        items: [GroupAdvert {
            state: AdvertState::Stopped,
            offer: false,
            want: false,
        }; GROUPS_MAX],
    };

    /// The adverts of `groups`; `None` if there are more than [`GROUPS_MAX`].
    pub fn from_slice(groups: &[GroupAdvert]) -> Option<Adverts> {
        if groups.len() > GROUPS_MAX {
            return None;
        }
        let mut adverts = Adverts::EMPTY;
        adverts.items[..groups.len()].copy_from_slice(groups);
        adverts.len = groups.len() as u8;
        Some(adverts)
    }

    /// The used adverts, group 0 first.
    pub fn as_slice(&self) -> &[GroupAdvert] {
        &self.items[..self.len as usize]
    }
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
    /// How long the sender held the echoed frame before sending this one, ms
    /// (saturating), so the receiver's round trip excludes the peer's keepalive wait.
    pub echo_hold_ms: u16,
    /// The sender's configuration digest (ha.cf, haresources, authkeys).
    pub digest: crate::config::digest::ConfigDigest,
    /// The sender's state for each resource group (the takeover handshake).
    pub adverts: Adverts,
    /// How many ping nodes the sender reaches (0 without ping nodes).
    pub ping_reachable: u8,
}

/// A validated frame: header and decoded payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    /// The header.
    pub header: Header,
    /// The heartbeat payload (the only kind today).
    pub heartbeat: HeartbeatPayload,
}

/// A zero-copy view over an un-COBSed frame buffer (header, payload, MAC, CRC).
///
/// Header accessors need `buffer.len() >= HEADER_LEN`; [`Packet::crc`] and
/// [`Packet::crc_ok`] read the buffer's last 4 bytes and need `buffer.len() >=
/// CRC_LEN`. After [`Packet::check_len`] succeeds, no accessor panics.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it.
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer and runs [`Packet::check_len`], so accessors cannot panic.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, FrameError> {
        let packet = Packet::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the buffer holds exactly one frame as its `len` field describes.
    ///
    /// `Short` if below [`FRAME_MIN`] or `len` points past the end; `Long` if above
    /// `FRAME_MAX` or there are bytes beyond the CRC.
    pub fn check_len(&self) -> Result<(), FrameError> {
        let have = self.buffer.as_ref().len();
        if have < FRAME_MIN {
            return Err(FrameError::Short);
        }
        if have > super::FRAME_MAX {
            return Err(FrameError::Long);
        }
        let want = self.total_len();
        match want.cmp(&have) {
            core::cmp::Ordering::Greater => Err(FrameError::Short),
            core::cmp::Ordering::Less => Err(FrameError::Long),
            core::cmp::Ordering::Equal => Ok(()),
        }
    }

    /// The underlying bytes.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn u16_at(&self, field: field::Field) -> u16 {
        let mut b = [0u8; 2];
        b.copy_from_slice(&self.buffer.as_ref()[field]);
        u16::from_le_bytes(b)
    }

    fn u32_at(&self, field: field::Field) -> u32 {
        read_u32(&self.buffer.as_ref()[field])
    }

    /// The format version.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }

    /// The frame kind.
    pub fn kind(&self) -> Kind {
        Kind::from(self.buffer.as_ref()[field::KIND])
    }

    /// The authkeys id of the key that made the MAC.
    pub fn key_id(&self) -> u8 {
        self.buffer.as_ref()[field::KEY]
    }

    /// The sender's node index.
    pub fn node(&self) -> u8 {
        self.buffer.as_ref()[field::NODE]
    }

    /// The sender's boot epoch.
    pub fn boot_epoch(&self) -> u32 {
        self.u32_at(field::BOOT_EPOCH)
    }

    /// The sender's sequence number.
    pub fn seq(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.buffer.as_ref()[field::SEQ]);
        u64::from_le_bytes(b)
    }

    /// The payload length field.
    pub fn payload_len(&self) -> u16 {
        self.u16_at(field::LEN)
    }

    /// The flags field.
    pub fn flags(&self) -> u16 {
        self.u16_at(field::FLAGS)
    }

    /// The reserved header word (must be zero).
    pub fn reserved(&self) -> u32 {
        self.u32_at(field::RESERVED)
    }

    /// Header + payload + MAC + CRC, as the `len` field says.
    pub fn total_len(&self) -> usize {
        field::crc(self.payload_len() as usize).end
    }

    /// The payload bytes.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::payload(self.payload_len() as usize)]
    }

    /// The bytes the MAC covers: header and payload.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[..field::payload(self.payload_len() as usize).end]
    }

    /// The MAC tag.
    pub fn mac(&self) -> &[u8] {
        &self.buffer.as_ref()[field::mac(self.payload_len() as usize)]
    }

    /// The CRC stored in the buffer's last 4 bytes (where it is once `check_len`
    /// holds; reading it there lets the CRC check run before `len` is trusted).
    pub fn crc(&self) -> u32 {
        let buf = self.buffer.as_ref();
        read_u32(&buf[buf.len() - CRC_LEN..])
    }

    /// CRC-32C of every byte before the buffer's last 4.
    pub fn compute_crc(&self) -> u32 {
        let buf = self.buffer.as_ref();
        CRC32C.checksum(&buf[..buf.len() - CRC_LEN])
    }

    /// Whether the stored CRC matches. Always true under `cfg(fuzzing)`, so the
    /// fuzzer reaches the later checks (smoltcp's checksum precedent).
    pub fn crc_ok(&self) -> bool {
        cfg!(fuzzing) || self.crc() == self.compute_crc()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn set_u16_at(&mut self, field: field::Field, v: u16) {
        self.buffer.as_mut()[field].copy_from_slice(&v.to_le_bytes());
    }

    fn set_u32_at(&mut self, field: field::Field, v: u32) {
        self.buffer.as_mut()[field].copy_from_slice(&v.to_le_bytes());
    }

    /// Sets the format version.
    pub fn set_version(&mut self, v: u8) {
        self.buffer.as_mut()[field::VERSION] = v;
    }

    /// Sets the frame kind.
    pub fn set_kind(&mut self, kind: Kind) {
        self.buffer.as_mut()[field::KIND] = kind.into();
    }

    /// Sets the key id.
    pub fn set_key_id(&mut self, id: u8) {
        self.buffer.as_mut()[field::KEY] = id;
    }

    /// Sets the sender's node index.
    pub fn set_node(&mut self, node: u8) {
        self.buffer.as_mut()[field::NODE] = node;
    }

    /// Sets the boot epoch.
    pub fn set_boot_epoch(&mut self, epoch: u32) {
        self.set_u32_at(field::BOOT_EPOCH, epoch);
    }

    /// Sets the sequence number.
    pub fn set_seq(&mut self, seq: u64) {
        self.buffer.as_mut()[field::SEQ].copy_from_slice(&seq.to_le_bytes());
    }

    /// Sets the payload length field.
    pub fn set_payload_len(&mut self, len: u16) {
        self.set_u16_at(field::LEN, len);
    }

    /// Sets the flags.
    pub fn set_flags(&mut self, flags: u16) {
        self.set_u16_at(field::FLAGS, flags);
    }

    /// Sets the reserved word (zero, except in tests of the parser).
    pub fn set_reserved(&mut self, v: u32) {
        self.set_u32_at(field::RESERVED, v);
    }

    /// The payload bytes, for writing.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = field::payload(self.payload_len() as usize);
        &mut self.buffer.as_mut()[range]
    }

    /// Writes the MAC tag.
    pub fn set_mac(&mut self, tag: &[u8; MAC_LEN]) {
        let range = field::mac(self.payload_len() as usize);
        self.buffer.as_mut()[range].copy_from_slice(tag);
    }

    /// Computes the CRC over everything before the last 4 bytes and stores it there.
    pub fn fill_crc(&mut self) {
        let crc = self.compute_crc();
        let buf = self.buffer.as_mut();
        let end = buf.len();
        buf[end - CRC_LEN..].copy_from_slice(&crc.to_le_bytes());
    }
}

/// The `count` used adverts of `bytes`; the unused ones must be zero.
fn parse_adverts(count: u8, bytes: &[u8]) -> Result<Adverts, FrameError> {
    let used = count as usize;
    if used > GROUPS_MAX || bytes[used..].iter().any(|b| *b != 0) {
        return Err(FrameError::Payload);
    }
    let mut adverts = Adverts::EMPTY;
    for (slot, byte) in adverts.items.iter_mut().zip(&bytes[..used]) {
        *slot = GroupAdvert::from_byte(*byte).ok_or(FrameError::Payload)?;
    }
    adverts.len = count;
    Ok(adverts)
}

fn read_u32(bytes: &[u8]) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(bytes);
    u32::from_le_bytes(b)
}

impl HeartbeatPayload {
    /// Parses exactly [`HEARTBEAT_LEN`] bytes; `Payload` on another length, a
    /// non-zero reserved byte, more than [`GROUPS_MAX`] groups, an invalid advert or a
    /// non-zero unused advert.
    pub fn parse(bytes: &[u8]) -> Result<HeartbeatPayload, FrameError> {
        use field::heartbeat as hb;
        if bytes.len() != hb::LEN || bytes[hb::RESERVED].iter().any(|b| *b != 0) {
            return Err(FrameError::Payload);
        }
        let adverts = parse_adverts(bytes[hb::GROUPS], &bytes[hb::ADVERTS])?;
        Ok(HeartbeatPayload {
            sent_ms: read_u32(&bytes[hb::SENT_MS]),
            echo_ms: read_u32(&bytes[hb::ECHO_MS]),
            status: bytes[hb::STATUS],
            echo_hold_ms: u16::from_le_bytes([
                bytes[hb::ECHO_HOLD_MS.start],
                bytes[hb::ECHO_HOLD_MS.start + 1],
            ]),
            digest: crate::config::digest::ConfigDigest {
                ha_cf: read_u32(&bytes[hb::DIGEST_HA_CF]),
                haresources: read_u32(&bytes[hb::DIGEST_HARESOURCES]),
                authkeys: read_u32(&bytes[hb::DIGEST_AUTHKEYS]),
            },
            adverts,
            ping_reachable: bytes[hb::PING_REACHABLE],
        })
    }

    /// Writes the payload into exactly [`HEARTBEAT_LEN`] bytes.
    pub fn emit(&self, bytes: &mut [u8]) {
        use field::heartbeat as hb;
        assert_eq!(bytes.len(), hb::LEN, "heartbeat payload buffer");
        bytes[hb::SENT_MS].copy_from_slice(&self.sent_ms.to_le_bytes());
        bytes[hb::ECHO_MS].copy_from_slice(&self.echo_ms.to_le_bytes());
        bytes[hb::STATUS] = self.status;
        bytes[hb::ECHO_HOLD_MS].copy_from_slice(&self.echo_hold_ms.to_le_bytes());
        bytes[hb::GROUPS] = self.adverts.len;
        for (b, advert) in bytes[hb::ADVERTS].iter_mut().zip(self.adverts.items) {
            *b = advert.to_byte();
        }
        bytes[hb::PING_REACHABLE] = self.ping_reachable;
        bytes[hb::RESERVED].fill(0);
        bytes[hb::DIGEST_HA_CF].copy_from_slice(&self.digest.ha_cf.to_le_bytes());
        bytes[hb::DIGEST_HARESOURCES].copy_from_slice(&self.digest.haresources.to_le_bytes());
        bytes[hb::DIGEST_AUTHKEYS].copy_from_slice(&self.digest.authkeys.to_le_bytes());
    }
}

impl Repr {
    /// Parses the header and payload of a frame. Checks length, version, reserved
    /// fields and kind; does not check the CRC or MAC (see `wire::decode`, which
    /// does, in cheapest-first order).
    ///
    /// Errors: `Short`/`Long` (length), `Version`, `Payload` (unknown kind,
    /// malformed payload, non-zero reserved field).
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, FrameError> {
        packet.check_len()?;
        if packet.version() != VERSION {
            return Err(FrameError::Version);
        }
        if packet.reserved() != 0 {
            return Err(FrameError::Payload);
        }
        let header = Header {
            kind: packet.kind(),
            key: packet.key_id(),
            node: packet.node(),
            boot_epoch: packet.boot_epoch(),
            seq: packet.seq(),
            flags: packet.flags(),
        };
        let heartbeat = match header.kind {
            Kind::Heartbeat => HeartbeatPayload::parse(packet.payload())?,
            // Authentic (when reached from `decode`) but not ours to understand.
            Kind::Unknown(_) => return Err(FrameError::Payload),
        };
        Ok(Repr { header, heartbeat })
    }

    /// Payload length for this frame (every kind carries a heartbeat payload today).
    pub const fn payload_len(&self) -> usize {
        HEARTBEAT_LEN
    }

    /// Bytes needed to emit this frame: header, payload, MAC and CRC.
    pub const fn buffer_len(&self) -> usize {
        field::crc(self.payload_len()).end
    }

    /// Writes header and payload. The MAC and CRC are left for the caller
    /// (`wire::encode` signs, then fills the CRC).
    ///
    /// Panics if the buffer is not exactly [`Repr::buffer_len`] bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        assert_eq!(
            packet.buffer.as_ref().len(),
            self.buffer_len(),
            "frame buffer length"
        );
        packet.set_version(VERSION);
        packet.set_kind(self.header.kind);
        packet.set_key_id(self.header.key);
        packet.set_node(self.header.node);
        packet.set_boot_epoch(self.header.boot_epoch);
        packet.set_seq(self.header.seq);
        packet.set_payload_len(self.payload_len() as u16);
        packet.set_flags(self.header.flags);
        packet.set_reserved(0);
        self.heartbeat.emit(packet.payload_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::digest::ConfigDigest;

    pub(crate) fn sample_repr() -> Repr {
        Repr {
            header: Header {
                kind: Kind::Heartbeat,
                key: 1,
                node: 1,
                boot_epoch: 0x0102_0304,
                seq: 0x1122_3344_5566_7788,
                flags: 0xA55A,
            },
            heartbeat: HeartbeatPayload {
                sent_ms: 1000,
                echo_ms: 990,
                status: 1,
                echo_hold_ms: 1234,
                digest: ConfigDigest {
                    ha_cf: 0xAAAA_0001,
                    haresources: 0xBBBB_0002,
                    authkeys: 0xCCCC_0003,
                },
                adverts: Adverts::from_slice(&[
                    GroupAdvert {
                        state: AdvertState::Running,
                        offer: false,
                        want: false,
                    },
                    GroupAdvert {
                        state: AdvertState::Blocked,
                        offer: true,
                        want: true,
                    },
                ])
                .unwrap(),
                ping_reachable: 3,
            },
        }
    }

    /// Bytes of a frame with a heartbeat payload.
    const FRAME_LEN: usize = HEADER_LEN + HEARTBEAT_LEN + MAC_LEN + CRC_LEN;

    fn emitted(repr: &Repr) -> [u8; FRAME_LEN] {
        let mut buf = [0u8; FRAME_LEN];
        assert_eq!(repr.buffer_len(), buf.len());
        repr.emit(&mut Packet::new_unchecked(&mut buf[..]));
        buf
    }

    #[test]
    fn emit_layout_is_little_endian_at_fixed_offsets() {
        let buf = emitted(&sample_repr());
        assert_eq!(&buf[..4], &[VERSION, 1, 1, 1]);
        assert_eq!(&buf[4..8], &[4, 3, 2, 1]);
        assert_eq!(
            &buf[8..16],
            &[0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]
        );
        assert_eq!(&buf[16..18], &[36, 0]);
        assert_eq!(&buf[18..20], &[0x5A, 0xA5]);
        assert_eq!(&buf[20..24], &[0; 4]);
        assert_eq!(&buf[24..28], &1000u32.to_le_bytes());
        assert_eq!(buf[32], 1);
        assert_eq!(&buf[44..48], &0xCCCC_0003u32.to_le_bytes());
        assert_eq!(buf[35], 2, "group count");
        assert_eq!(&buf[48..56], &[2, 0x1D, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&buf[56..60], &[3, 0, 0, 0]);
    }

    #[test]
    fn parse_emitted_gives_back_repr() {
        let repr = sample_repr();
        let buf = emitted(&repr);
        let packet = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(Repr::parse(&packet), Ok(repr));
        assert_eq!(packet.signed_bytes().len(), HEADER_LEN + HEARTBEAT_LEN);
    }

    #[test]
    fn check_len_short_and_long() {
        let buf = emitted(&sample_repr());
        assert_eq!(
            Packet::new_checked(&buf[..FRAME_MIN - 1]).err(),
            Some(FrameError::Short)
        );
        assert_eq!(
            Packet::new_checked(&buf[..FRAME_LEN - 1]).err(),
            Some(FrameError::Short)
        );
        let mut longer = [0u8; FRAME_LEN + 1];
        longer[..FRAME_LEN].copy_from_slice(&buf);
        assert_eq!(
            Packet::new_checked(&longer[..]).err(),
            Some(FrameError::Long)
        );
        let big = [0u8; crate::wire::FRAME_MAX + 1];
        assert_eq!(Packet::new_checked(&big[..]).err(), Some(FrameError::Long));
    }

    #[test]
    fn parse_rejects_version_reserved_kind_and_payload_len() {
        let repr = sample_repr();
        let mut buf = emitted(&repr);
        buf[field::VERSION] = 2;
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&buf[..])),
            Err(FrameError::Version)
        );
        let mut buf = emitted(&repr);
        buf[field::RESERVED.start] = 1;
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&buf[..])),
            Err(FrameError::Payload)
        );
        let mut buf = emitted(&repr);
        buf[HEADER_LEN + field::heartbeat::RESERVED.start] = 1;
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&buf[..])),
            Err(FrameError::Payload)
        );
        let mut buf = emitted(&repr);
        buf[field::KIND] = 0x7F;
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&buf[..])),
            Err(FrameError::Payload)
        );
    }

    #[test]
    fn parse_other_payload_len_is_payload() {
        // A heartbeat whose len is one short: the buffer is one byte shorter to match.
        let buf = emitted(&sample_repr());
        let mut short = [0u8; FRAME_LEN - 1];
        short.copy_from_slice(&buf[..FRAME_LEN - 1]);
        let mut packet = Packet::new_unchecked(&mut short[..]);
        packet.set_payload_len(HEARTBEAT_LEN as u16 - 1);
        assert_eq!(Repr::parse(&packet), Err(FrameError::Payload));
    }

    #[test]
    fn parse_rejects_bad_adverts() {
        let repr = sample_repr();
        let groups = HEADER_LEN + field::heartbeat::GROUPS;
        let adverts = HEADER_LEN + field::heartbeat::ADVERTS.start;
        let reject = |buf: &[u8]| Repr::parse(&Packet::new_unchecked(buf));
        let mut buf = emitted(&repr);
        buf[groups] = GROUPS_MAX as u8 + 1;
        assert_eq!(reject(&buf), Err(FrameError::Payload), "too many groups");
        let mut buf = emitted(&repr);
        buf[adverts + 2] = 1;
        assert_eq!(reject(&buf), Err(FrameError::Payload), "unused advert set");
        let mut buf = emitted(&repr);
        buf[adverts] = 6;
        assert_eq!(reject(&buf), Err(FrameError::Payload), "unknown state");
        let mut buf = emitted(&repr);
        buf[adverts] = 0x22;
        assert_eq!(reject(&buf), Err(FrameError::Payload), "reserved bit");
        let mut buf = emitted(&repr);
        buf[groups] = 3;
        assert_eq!(
            reject(&buf).map(|r| r.heartbeat.adverts.as_slice().len()),
            Ok(3),
            "a zero advert is a stopped group"
        );
    }

    #[test]
    fn advert_bytes_roundtrip() {
        let mut valid = 0;
        for b in 0..=255u8 {
            if let Some(advert) = GroupAdvert::from_byte(b) {
                assert_eq!(advert.to_byte(), b);
                valid += 1;
            }
        }
        assert_eq!(valid, AdvertState::ALL.len() * 4);
        assert!(Adverts::from_slice(&[GroupAdvert::default(); GROUPS_MAX + 1]).is_none());
    }

    #[test]
    fn kind_codes_roundtrip() {
        for v in 0..=255u8 {
            assert_eq!(u8::from(Kind::from(v)), v);
        }
        assert_eq!(Kind::from(1), Kind::Heartbeat);
    }

    #[test]
    fn frame_error_names_are_unique_and_indexed() {
        for (i, e) in FrameError::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
            assert_eq!(e.to_string(), e.name());
            assert_eq!(
                FrameError::ALL
                    .iter()
                    .filter(|o| o.name() == e.name())
                    .count(),
                1
            );
        }
    }
}
