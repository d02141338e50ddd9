//! The messages two replicas exchange (DRBD's packets, simplified), and their
//! encoding into the (kind, header, payload) triples that `wire::repl` frames.
//!
//! Layer: core (pure). CONTRACT between the engine writer and the wire writer:
//! the engine produces and consumes [`PeerMsg`]; `encode`/`decode` here turn
//! them into a kind byte, a small fixed header and an optional payload that
//! travels without a copy. The engine writer owns this file and may add
//! variants.
//!
//! Encoding: one kind byte (see [`kind`]), then a fixed little-endian header
//! whose length depends only on the kind (decode rejects any other length), then
//! the payload: the data bytes of `Data`, `RsData` and `ReadReply` (shared, not
//! copied), the bitmap words of `Bitmap` (little-endian u64s), nothing for the
//! rest (decode rejects a payload there). Enumerations travel as one byte each.

use super::md::Uuids;
use std::sync::Arc;

use super::{DiskState, Payload, Protocol, Role, MAX_IO_BYTES};

/// Sequence number of a replicated write (acknowledgements name it).
pub type Seq = u64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerMsg {
    /// First message after authentication, and again whenever the state the
    /// peer must know changes (role, disk state, uuids).
    ReportParams {
        protocol: Protocol,
        usable_bytes: u64,
        role: Role,
        disk: DiskState,
        uuids: Uuids,
        /// Bits set in the sender's bitmap.
        dirty_blocks: u64,
        /// Sender's flags (crashed primary, consistent...), DRBD's MDF bits.
        md_flags: u32,
        /// `connect --discard-my-data` was given on the sender.
        discard_my_data: bool,
    },
    /// A replicated host write (P_DATA).
    Data {
        seq: Seq,
        offset: u64,
        data: Payload,
        fua: bool,
    },
    /// Replicated discard / write-zeroes (both read back as zeroes).
    Zero {
        seq: Seq,
        offset: u64,
        len: u32,
        fua: bool,
        discard: bool,
    },
    /// Protocol B: the peer received `seq`.
    RecvAck {
        seq: Seq,
    },
    /// Protocol C: the peer wrote `seq` (P_WRITE_ACK).
    WriteAck {
        seq: Seq,
    },
    /// The peer failed to write `seq` (it marks it out of sync).
    NegAck {
        seq: Seq,
    },
    /// All writes before it must be on stable storage on the peer before it acks
    /// (a host flush / the barrier between epochs).
    Barrier {
        nr: u64,
    },
    BarrierAck {
        nr: u64,
    },
    /// Bitmap exchange before a resync: `words` starting at `first_word`; `last`
    /// ends the exchange.
    Bitmap {
        first_word: u64,
        words: Vec<u64>,
        last: bool,
    },
    /// The sync source tells the target the new bitmap uuid (P_SYNC_UUID).
    SyncUuid {
        uuid: u64,
    },
    /// Resync: the target asks for a range; the source answers with data, or
    /// (with csums) the target sends its digest and the source answers InSync.
    RsRequest {
        offset: u64,
        len: u32,
    },
    RsCsumRequest {
        offset: u64,
        len: u32,
        digest: [u8; 32],
    },
    RsData {
        offset: u64,
        data: Payload,
    },
    RsInSync {
        offset: u64,
        len: u32,
    },
    /// The source could not read the range.
    RsNegAck {
        offset: u64,
        len: u32,
    },
    /// Online verify: digest of a range on each side.
    OvRequest {
        offset: u64,
        len: u32,
    },
    OvReply {
        offset: u64,
        len: u32,
        digest: [u8; 32],
    },
    /// Reads forwarded to the peer (a Diskless Primary reads through it).
    ReadRequest {
        id: u64,
        offset: u64,
        len: u32,
    },
    ReadReply {
        id: u64,
        data: Payload,
    },
    ReadError {
        id: u64,
    },
    /// Role/disk state change (P_STATE).
    State {
        role: Role,
        disk: DiskState,
    },
    /// New generation identifiers while connected (DRBD's P_UUIDS): a node
    /// whose Primary peer lost its disk starts a new generation and tells it,
    /// so the Diskless Primary knows which data it now exposes.
    Uuids {
        uuids: Uuids,
    },
    /// Liveness on an idle connection.
    Ping,
    PingAck,
}

/// Error decoding a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    UnknownKind(u8),
    BadHeader,
    BadPayload,
}

/// Kind bytes on the wire. Stable: a changed number is a protocol break.
pub mod kind {
    pub const REPORT_PARAMS: u8 = 1;
    pub const DATA: u8 = 2;
    pub const ZERO: u8 = 3;
    pub const RECV_ACK: u8 = 4;
    pub const WRITE_ACK: u8 = 5;
    pub const NEG_ACK: u8 = 6;
    pub const BARRIER: u8 = 7;
    pub const BARRIER_ACK: u8 = 8;
    pub const BITMAP: u8 = 9;
    pub const SYNC_UUID: u8 = 10;
    pub const RS_REQUEST: u8 = 11;
    pub const RS_CSUM_REQUEST: u8 = 12;
    pub const RS_DATA: u8 = 13;
    pub const RS_IN_SYNC: u8 = 14;
    pub const RS_NEG_ACK: u8 = 15;
    pub const OV_REQUEST: u8 = 16;
    pub const OV_REPLY: u8 = 17;
    pub const READ_REQUEST: u8 = 18;
    pub const READ_REPLY: u8 = 19;
    pub const READ_ERROR: u8 = 20;
    pub const STATE: u8 = 21;
    pub const PING: u8 = 22;
    pub const PING_ACK: u8 = 23;
    pub const UUIDS: u8 = 24;
}

/// Largest fixed header of any kind (ReportParams), for buffer sizing.
pub const HEADER_MAX: usize = 64;

/// Largest bitmap words in one `Bitmap` message (32 KiB of words).
pub const BITMAP_WORDS_MAX: usize = 4096;

fn protocol_byte(p: Protocol) -> u8 {
    match p {
        Protocol::A => 0,
        Protocol::B => 1,
        Protocol::C => 2,
    }
}

fn protocol_from(b: u8) -> Result<Protocol, DecodeError> {
    Ok(match b {
        0 => Protocol::A,
        1 => Protocol::B,
        2 => Protocol::C,
        _ => return Err(DecodeError::BadHeader),
    })
}

fn role_byte(r: Role) -> u8 {
    match r {
        Role::Primary => 0,
        Role::Secondary => 1,
        Role::Unknown => 2,
    }
}

fn role_from(b: u8) -> Result<Role, DecodeError> {
    Ok(match b {
        0 => Role::Primary,
        1 => Role::Secondary,
        2 => Role::Unknown,
        _ => return Err(DecodeError::BadHeader),
    })
}

const DISK_STATES: [DiskState; 9] = [
    DiskState::Diskless,
    DiskState::Attaching,
    DiskState::Failed,
    DiskState::Negotiating,
    DiskState::Inconsistent,
    DiskState::Outdated,
    DiskState::DUnknown,
    DiskState::Consistent,
    DiskState::UpToDate,
];

fn disk_byte(d: DiskState) -> u8 {
    DISK_STATES
        .iter()
        .position(|&x| x == d)
        .expect("every DiskState is listed") as u8
}

fn disk_from(b: u8) -> Result<DiskState, DecodeError> {
    DISK_STATES
        .get(b as usize)
        .copied()
        .ok_or(DecodeError::BadHeader)
}

fn bool_from(b: u8) -> Result<bool, DecodeError> {
    match b {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::BadHeader),
    }
}

/// Appends little-endian fields.
struct Put<'a>(&'a mut Vec<u8>);

impl Put<'_> {
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.0.extend_from_slice(v);
        self
    }
}

/// Reads little-endian fields from a header whose exact length was checked.
struct Get<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Get<'a> {
    /// Fails unless the header is exactly `len` bytes.
    fn exact(buf: &'a [u8], len: usize) -> Result<Get<'a>, DecodeError> {
        if buf.len() != len {
            return Err(DecodeError::BadHeader);
        }
        Ok(Get { buf, at: 0 })
    }
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[self.at..self.at + N]);
        self.at += N;
        out
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
}

fn no_payload(payload: &[u8]) -> Result<(), DecodeError> {
    if payload.is_empty() {
        Ok(())
    } else {
        Err(DecodeError::BadPayload)
    }
}

fn data_payload(payload: Vec<u8>) -> Result<Payload, DecodeError> {
    if payload.len() > MAX_IO_BYTES {
        return Err(DecodeError::BadPayload);
    }
    Ok(Arc::new(payload))
}

impl PeerMsg {
    /// The kind byte, the fixed header bytes into `header`, and the payload
    /// that follows it on the wire (if any). `header` is cleared first.
    pub fn encode(&self, header: &mut Vec<u8>) -> (u8, Option<Payload>) {
        header.clear();
        let mut h = Put(header);
        match self {
            PeerMsg::ReportParams {
                protocol,
                usable_bytes,
                role,
                disk,
                uuids,
                dirty_blocks,
                md_flags,
                discard_my_data,
            } => {
                h.u8(protocol_byte(*protocol))
                    .u8(role_byte(*role))
                    .u8(disk_byte(*disk))
                    .u8(u8::from(*discard_my_data))
                    .u32(*md_flags)
                    .u64(*usable_bytes)
                    .u64(uuids.current)
                    .u64(uuids.bitmap)
                    .u64(uuids.history[0])
                    .u64(uuids.history[1])
                    .u64(*dirty_blocks);
                (kind::REPORT_PARAMS, None)
            }
            PeerMsg::Data {
                seq,
                offset,
                data,
                fua,
            } => {
                h.u64(*seq).u64(*offset).u8(u8::from(*fua));
                (kind::DATA, Some(data.clone()))
            }
            PeerMsg::Zero {
                seq,
                offset,
                len,
                fua,
                discard,
            } => {
                h.u64(*seq)
                    .u64(*offset)
                    .u32(*len)
                    .u8(u8::from(*fua))
                    .u8(u8::from(*discard));
                (kind::ZERO, None)
            }
            PeerMsg::RecvAck { seq } => {
                h.u64(*seq);
                (kind::RECV_ACK, None)
            }
            PeerMsg::WriteAck { seq } => {
                h.u64(*seq);
                (kind::WRITE_ACK, None)
            }
            PeerMsg::NegAck { seq } => {
                h.u64(*seq);
                (kind::NEG_ACK, None)
            }
            PeerMsg::Barrier { nr } => {
                h.u64(*nr);
                (kind::BARRIER, None)
            }
            PeerMsg::BarrierAck { nr } => {
                h.u64(*nr);
                (kind::BARRIER_ACK, None)
            }
            PeerMsg::Bitmap {
                first_word,
                words,
                last,
            } => {
                h.u64(*first_word).u8(u8::from(*last));
                let mut bytes = Vec::with_capacity(words.len() * 8);
                for w in words {
                    bytes.extend_from_slice(&w.to_le_bytes());
                }
                (kind::BITMAP, Some(Arc::new(bytes)))
            }
            PeerMsg::SyncUuid { uuid } => {
                h.u64(*uuid);
                (kind::SYNC_UUID, None)
            }
            PeerMsg::RsRequest { offset, len } => {
                h.u64(*offset).u32(*len);
                (kind::RS_REQUEST, None)
            }
            PeerMsg::RsCsumRequest {
                offset,
                len,
                digest,
            } => {
                h.u64(*offset).u32(*len).bytes(digest);
                (kind::RS_CSUM_REQUEST, None)
            }
            PeerMsg::RsData { offset, data } => {
                h.u64(*offset);
                (kind::RS_DATA, Some(data.clone()))
            }
            PeerMsg::RsInSync { offset, len } => {
                h.u64(*offset).u32(*len);
                (kind::RS_IN_SYNC, None)
            }
            PeerMsg::RsNegAck { offset, len } => {
                h.u64(*offset).u32(*len);
                (kind::RS_NEG_ACK, None)
            }
            PeerMsg::OvRequest { offset, len } => {
                h.u64(*offset).u32(*len);
                (kind::OV_REQUEST, None)
            }
            PeerMsg::OvReply {
                offset,
                len,
                digest,
            } => {
                h.u64(*offset).u32(*len).bytes(digest);
                (kind::OV_REPLY, None)
            }
            PeerMsg::ReadRequest { id, offset, len } => {
                h.u64(*id).u64(*offset).u32(*len);
                (kind::READ_REQUEST, None)
            }
            PeerMsg::ReadReply { id, data } => {
                h.u64(*id);
                (kind::READ_REPLY, Some(data.clone()))
            }
            PeerMsg::ReadError { id } => {
                h.u64(*id);
                (kind::READ_ERROR, None)
            }
            PeerMsg::State { role, disk } => {
                h.u8(role_byte(*role)).u8(disk_byte(*disk));
                (kind::STATE, None)
            }
            PeerMsg::Uuids { uuids } => {
                h.u64(uuids.current)
                    .u64(uuids.bitmap)
                    .u64(uuids.history[0])
                    .u64(uuids.history[1]);
                (kind::UUIDS, None)
            }
            PeerMsg::Ping => (kind::PING, None),
            PeerMsg::PingAck => (kind::PING_ACK, None),
        }
    }

    /// Inverse of `encode`. `payload` is the bytes that followed the header.
    pub fn decode(kind: u8, header: &[u8], payload: Vec<u8>) -> Result<PeerMsg, DecodeError> {
        let msg = match kind {
            kind::REPORT_PARAMS => {
                let mut g = Get::exact(header, 56)?;
                no_payload(&payload)?;
                let protocol = protocol_from(g.u8())?;
                let role = role_from(g.u8())?;
                let disk = disk_from(g.u8())?;
                let discard_my_data = bool_from(g.u8())?;
                let md_flags = g.u32();
                let usable_bytes = g.u64();
                let uuids = Uuids {
                    current: g.u64(),
                    bitmap: g.u64(),
                    history: [g.u64(), g.u64()],
                };
                let dirty_blocks = g.u64();
                PeerMsg::ReportParams {
                    protocol,
                    usable_bytes,
                    role,
                    disk,
                    uuids,
                    dirty_blocks,
                    md_flags,
                    discard_my_data,
                }
            }
            kind::DATA => {
                let mut g = Get::exact(header, 17)?;
                let (seq, offset, fua) = (g.u64(), g.u64(), bool_from(g.u8())?);
                PeerMsg::Data {
                    seq,
                    offset,
                    data: data_payload(payload)?,
                    fua,
                }
            }
            kind::ZERO => {
                let mut g = Get::exact(header, 22)?;
                no_payload(&payload)?;
                let (seq, offset, len) = (g.u64(), g.u64(), g.u32());
                let fua = bool_from(g.u8())?;
                let discard = bool_from(g.u8())?;
                PeerMsg::Zero {
                    seq,
                    offset,
                    len,
                    fua,
                    discard,
                }
            }
            kind::RECV_ACK
            | kind::WRITE_ACK
            | kind::NEG_ACK
            | kind::BARRIER
            | kind::BARRIER_ACK
            | kind::SYNC_UUID
            | kind::READ_ERROR => {
                let v = Get::exact(header, 8)?.u64();
                no_payload(&payload)?;
                match kind {
                    kind::RECV_ACK => PeerMsg::RecvAck { seq: v },
                    kind::WRITE_ACK => PeerMsg::WriteAck { seq: v },
                    kind::NEG_ACK => PeerMsg::NegAck { seq: v },
                    kind::BARRIER => PeerMsg::Barrier { nr: v },
                    kind::BARRIER_ACK => PeerMsg::BarrierAck { nr: v },
                    kind::SYNC_UUID => PeerMsg::SyncUuid { uuid: v },
                    _ => PeerMsg::ReadError { id: v },
                }
            }
            kind::BITMAP => {
                let mut g = Get::exact(header, 9)?;
                let first_word = g.u64();
                let last = bool_from(g.u8())?;
                if payload.len() % 8 != 0 || payload.len() / 8 > BITMAP_WORDS_MAX {
                    return Err(DecodeError::BadPayload);
                }
                let words = payload
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().expect("chunks of 8")))
                    .collect();
                PeerMsg::Bitmap {
                    first_word,
                    words,
                    last,
                }
            }
            kind::RS_REQUEST | kind::RS_IN_SYNC | kind::RS_NEG_ACK | kind::OV_REQUEST => {
                let mut g = Get::exact(header, 12)?;
                no_payload(&payload)?;
                let (offset, len) = (g.u64(), g.u32());
                match kind {
                    kind::RS_REQUEST => PeerMsg::RsRequest { offset, len },
                    kind::RS_IN_SYNC => PeerMsg::RsInSync { offset, len },
                    kind::RS_NEG_ACK => PeerMsg::RsNegAck { offset, len },
                    _ => PeerMsg::OvRequest { offset, len },
                }
            }
            kind::RS_CSUM_REQUEST | kind::OV_REPLY => {
                let mut g = Get::exact(header, 44)?;
                no_payload(&payload)?;
                let (offset, len, digest) = (g.u64(), g.u32(), g.take::<32>());
                if kind == kind::OV_REPLY {
                    PeerMsg::OvReply {
                        offset,
                        len,
                        digest,
                    }
                } else {
                    PeerMsg::RsCsumRequest {
                        offset,
                        len,
                        digest,
                    }
                }
            }
            kind::RS_DATA => {
                let offset = Get::exact(header, 8)?.u64();
                PeerMsg::RsData {
                    offset,
                    data: data_payload(payload)?,
                }
            }
            kind::READ_REQUEST => {
                let mut g = Get::exact(header, 20)?;
                no_payload(&payload)?;
                PeerMsg::ReadRequest {
                    id: g.u64(),
                    offset: g.u64(),
                    len: g.u32(),
                }
            }
            kind::READ_REPLY => {
                let id = Get::exact(header, 8)?.u64();
                PeerMsg::ReadReply {
                    id,
                    data: data_payload(payload)?,
                }
            }
            kind::STATE => {
                let mut g = Get::exact(header, 2)?;
                no_payload(&payload)?;
                PeerMsg::State {
                    role: role_from(g.u8())?,
                    disk: disk_from(g.u8())?,
                }
            }
            kind::UUIDS => {
                let mut g = Get::exact(header, 32)?;
                no_payload(&payload)?;
                let uuids = Uuids {
                    current: g.u64(),
                    bitmap: g.u64(),
                    history: [g.u64(), g.u64()],
                };
                PeerMsg::Uuids { uuids }
            }
            kind::PING | kind::PING_ACK => {
                Get::exact(header, 0)?;
                no_payload(&payload)?;
                if kind == kind::PING {
                    PeerMsg::Ping
                } else {
                    PeerMsg::PingAck
                }
            }
            other => return Err(DecodeError::UnknownKind(other)),
        };
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(n: usize, seed: u8) -> Payload {
        Arc::new(
            (0..n)
                .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
                .collect(),
        )
    }

    /// One of every variant, with distinct non-zero field values so a swapped
    /// field fails the round trip.
    fn samples() -> Vec<PeerMsg> {
        vec![
            PeerMsg::ReportParams {
                protocol: Protocol::B,
                usable_bytes: 0x1122_3344_5566_7000,
                role: Role::Primary,
                disk: DiskState::Outdated,
                uuids: Uuids {
                    current: 0xA1,
                    bitmap: 0xB2,
                    history: [0xC3, 0xD4],
                },
                dirty_blocks: 77,
                md_flags: 0x8000_0005,
                discard_my_data: true,
            },
            PeerMsg::Data {
                seq: 9,
                offset: 4096 * 3,
                data: payload(4096, 1),
                fua: true,
            },
            PeerMsg::Zero {
                seq: 10,
                offset: 8192,
                len: 65536,
                fua: false,
                discard: true,
            },
            PeerMsg::RecvAck { seq: 11 },
            PeerMsg::WriteAck { seq: 12 },
            PeerMsg::NegAck { seq: 13 },
            PeerMsg::Barrier { nr: 14 },
            PeerMsg::BarrierAck { nr: 15 },
            PeerMsg::Bitmap {
                first_word: 16,
                words: vec![1, u64::MAX, 0x8000_0000_0000_0001],
                last: true,
            },
            PeerMsg::Bitmap {
                first_word: 0,
                words: vec![],
                last: false,
            },
            PeerMsg::SyncUuid {
                uuid: 0xDEAD_BEEF_0000_0001,
            },
            PeerMsg::RsRequest {
                offset: 131072,
                len: 131072,
            },
            PeerMsg::RsCsumRequest {
                offset: 4096,
                len: 8192,
                digest: [7; 32],
            },
            PeerMsg::RsData {
                offset: 65536,
                data: payload(8192, 2),
            },
            PeerMsg::RsInSync {
                offset: 1 << 40,
                len: 4096,
            },
            PeerMsg::RsNegAck {
                offset: 12288,
                len: 4096,
            },
            PeerMsg::OvRequest {
                offset: 16384,
                len: 4096,
            },
            PeerMsg::OvReply {
                offset: 20480,
                len: 4096,
                digest: [0x5a; 32],
            },
            PeerMsg::ReadRequest {
                id: 21,
                offset: 24576,
                len: 512,
            },
            PeerMsg::ReadReply {
                id: 22,
                data: payload(512, 3),
            },
            PeerMsg::ReadError { id: 23 },
            PeerMsg::State {
                role: Role::Secondary,
                disk: DiskState::Diskless,
            },
            PeerMsg::Uuids {
                uuids: Uuids {
                    current: 0x31,
                    bitmap: 0x32,
                    history: [0x33, 0x34],
                },
            },
            PeerMsg::Ping,
            PeerMsg::PingAck,
        ]
    }

    #[test]
    fn every_variant_round_trips() {
        let mut header = vec![0xFF; 3]; // stale content: encode must clear it
        let mut kinds = std::collections::HashSet::new();
        for msg in samples() {
            let (k, payload) = msg.encode(&mut header);
            assert!(header.len() <= HEADER_MAX, "{msg:?}");
            kinds.insert(k);
            let bytes = payload.map(|p| p.to_vec()).unwrap_or_default();
            assert_eq!(PeerMsg::decode(k, &header, bytes), Ok(msg.clone()));
        }
        assert_eq!(kinds.len(), 24, "one distinct kind per variant");
    }

    #[test]
    fn data_payload_is_shared_not_copied() {
        let data = payload(4096, 9);
        let msg = PeerMsg::Data {
            seq: 1,
            offset: 0,
            data: data.clone(),
            fua: false,
        };
        let (_, out) = msg.encode(&mut Vec::new());
        assert!(Arc::ptr_eq(&out.unwrap(), &data));
    }

    #[test]
    fn every_header_length_but_the_right_one_is_refused() {
        let mut header = Vec::new();
        for msg in samples() {
            let (k, payload) = msg.encode(&mut header);
            let bytes = payload.map(|p| p.to_vec()).unwrap_or_default();
            for len in 0..HEADER_MAX + 2 {
                if len == header.len() {
                    continue;
                }
                let mut h = header.clone();
                h.resize(len, 0);
                assert_eq!(
                    PeerMsg::decode(k, &h, bytes.clone()),
                    Err(DecodeError::BadHeader),
                    "{msg:?} len {len}"
                );
            }
        }
    }

    #[test]
    fn bad_enums_bools_kinds_and_payloads_are_refused() {
        let mut header = Vec::new();
        let (k, _) = samples()[0].encode(&mut header);
        for byte in 0..4 {
            let mut h = header.clone();
            h[byte] = 0xEE;
            assert_eq!(
                PeerMsg::decode(k, &h, vec![]),
                Err(DecodeError::BadHeader),
                "byte {byte}"
            );
        }
        let (k, _) = PeerMsg::Data {
            seq: 1,
            offset: 0,
            data: payload(1, 0),
            fua: false,
        }
        .encode(&mut header);
        header[16] = 2;
        assert_eq!(
            PeerMsg::decode(k, &header, vec![1]),
            Err(DecodeError::BadHeader)
        );
        assert_eq!(
            PeerMsg::decode(k, &header[..16], vec![1]),
            Err(DecodeError::BadHeader)
        );
        header[16] = 0;
        assert_eq!(
            PeerMsg::decode(k, &header, vec![0; MAX_IO_BYTES + 1]),
            Err(DecodeError::BadPayload)
        );
        let (k, _) = PeerMsg::Ping.encode(&mut header);
        assert_eq!(
            PeerMsg::decode(k, &header, vec![0]),
            Err(DecodeError::BadPayload)
        );
        let (k, _) = PeerMsg::Bitmap {
            first_word: 0,
            words: vec![],
            last: true,
        }
        .encode(&mut header);
        assert_eq!(
            PeerMsg::decode(k, &header, vec![0; 7]),
            Err(DecodeError::BadPayload)
        );
        assert_eq!(
            PeerMsg::decode(0, &[], vec![]),
            Err(DecodeError::UnknownKind(0))
        );
        assert_eq!(
            PeerMsg::decode(25, &[], vec![]),
            Err(DecodeError::UnknownKind(25))
        );
        assert_eq!(
            PeerMsg::decode(0xFF, &[], vec![]),
            Err(DecodeError::UnknownKind(0xFF))
        );
    }
}
