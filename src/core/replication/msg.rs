//! The messages two replicas exchange (DRBD's packets, simplified), and their
//! encoding into the (kind, header, payload) triples that `wire::repl` frames.
//!
//! Layer: core (pure). CONTRACT between the engine writer and the wire writer:
//! the engine produces and consumes [`PeerMsg`]; `encode`/`decode` here turn
//! them into a kind byte, a small fixed header and an optional payload that
//! travels without a copy. The engine writer owns this file and may add
//! variants. TODO(skeleton): `todo!()` bodies are replaced before this lands.

use super::md::Uuids;
use super::{DiskState, Payload, Protocol, Role};

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
    Data { seq: Seq, offset: u64, data: Payload, fua: bool },
    /// Replicated discard / write-zeroes (both read back as zeroes).
    Zero { seq: Seq, offset: u64, len: u32, fua: bool, discard: bool },
    /// Protocol B: the peer received `seq`.
    RecvAck { seq: Seq },
    /// Protocol C: the peer wrote `seq` (P_WRITE_ACK).
    WriteAck { seq: Seq },
    /// The peer failed to write `seq` (it marks it out of sync).
    NegAck { seq: Seq },
    /// All writes before it must be on stable storage on the peer before it acks
    /// (a host flush / the barrier between epochs).
    Barrier { nr: u64 },
    BarrierAck { nr: u64 },
    /// Bitmap exchange before a resync: `words` starting at `first_word`; `last`
    /// ends the exchange.
    Bitmap { first_word: u64, words: Vec<u64>, last: bool },
    /// The sync source tells the target the new bitmap uuid (P_SYNC_UUID).
    SyncUuid { uuid: u64 },
    /// Resync: the target asks for a range; the source answers with data, or
    /// (with csums) the target sends its digest and the source answers InSync.
    RsRequest { offset: u64, len: u32 },
    RsCsumRequest { offset: u64, len: u32, digest: [u8; 32] },
    RsData { offset: u64, data: Payload },
    RsInSync { offset: u64, len: u32 },
    /// The source could not read the range.
    RsNegAck { offset: u64, len: u32 },
    /// Online verify: digest of a range on each side.
    OvRequest { offset: u64, len: u32 },
    OvReply { offset: u64, len: u32, digest: [u8; 32] },
    /// Reads forwarded to the peer (a Diskless Primary reads through it).
    ReadRequest { id: u64, offset: u64, len: u32 },
    ReadReply { id: u64, data: Payload },
    ReadError { id: u64 },
    /// Role/disk state change (P_STATE).
    State { role: Role, disk: DiskState },
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

impl PeerMsg {
    /// The kind byte, the fixed header bytes into `header`, and the payload
    /// that follows it on the wire (if any). `header` is cleared first.
    pub fn encode(&self, header: &mut Vec<u8>) -> (u8, Option<Payload>) {
        let _ = header;
        todo!()
    }

    /// Inverse of `encode`. `payload` is the bytes that followed the header.
    pub fn decode(kind: u8, header: &[u8], payload: Vec<u8>) -> Result<PeerMsg, DecodeError> {
        let _ = (kind, header, payload);
        todo!()
    }
}
