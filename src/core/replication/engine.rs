//! The replica: one DRBD resource on one node, as a pure state machine.
//!
//! Layer: core (pure, quinn-proto shape). Inputs: `handle_*` with the current
//! time. Outputs: `poll_action` until None, then `poll_timeout`.
//! CONTRACT between the engine writer and the shell writer: the items below.
//! The engine writer owns this file and may add items; changing a signature
//! below needs the lead's word.
//!
//! How the pieces fit (DRBD 8's model, simplified):
//! - Every state change goes through one `set_*` function that emits the
//!   catalogue event, so an observer sees each transition exactly once.
//! - Metadata is written to `DiskTarget::Meta` (always FUA) on every uuid/flag
//!   change. Host requests carry a *meta fence*: they are not acknowledged
//!   before every metadata write issued before them is durable. A host write is
//!   not even started before the activity-log record naming its extents and
//!   the last superblock write (a promotion's `primary_ind`) are durable, so
//!   after a Primary crash every extent it may have written is in the on-disk
//!   activity log and the flag says to use it.
//! - Writes to the data area go through a FIFO range lock: an overlapping later
//!   write (host, peer, resync) waits for the earlier one's local completion, so
//!   both disks apply overlapping writes in the same order, and a resync read on
//!   the source and its `RsData` are ordered with the host writes around it.
//! - The Primary keeps a transfer log of replicated writes not yet covered by a
//!   `BarrierAck` (DRBD's epochs); if the connection breaks, all of them are
//!   marked out of sync, because the peer may have lost them from its volatile
//!   cache. A barrier is sent on every host flush, every `EPOCH_WRITES_MAX`
//!   writes and `EPOCH_AGE_MAX` after an epoch's first write, which bounds the
//!   log in size and in age.
//! - Resync is driven by the SyncTarget (`RsRequest`), rate-limited by a token
//!   bucket on `now`. The target clears bits after its write completes; the
//!   cleared bits reach the on-disk bitmap only after a flush of the data.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::md::{
    self, ActivityLog, Bitmap, Discard, Layout, MdFlags, Metadata, SyncDecision, UuidView, Uuids,
};
use super::msg::{PeerMsg, Seq, BITMAP_WORDS_MAX};
use super::{
    ConnState, DiskId, DiskIo, DiskState, DiskTarget, HostId, HostIo, IoError, IoResult, Payload,
    Protocol, Role, BLOCK_BYTES, MAX_IO_BYTES,
};
use crate::rng::Rng;
use crate::time::{Duration, Instant};

/// Resync requests the SyncTarget keeps in flight.
pub const RS_MAX_IN_FLIGHT: usize = 32;
/// Largest resync request: 512 KiB (128 blocks). Why this size: the sync's
/// cost is per request (a message each way, a read, a write, two thread
/// hand-offs), so 128 KiB synced at ~400 MiB/s on the lab's veth and 512 KiB
/// at ~700 MiB/s; 1 MiB was slower again (306 MiB/s: a whole window of 32
/// requests outgrows the send and event queues, and 1 MiB page-cache folios
/// slow later 4 KiB writes on the target).
pub const RS_CHUNK_BYTES: u64 = 512 << 10;
/// Largest checksum-based resync request and online-verify request: 128 KiB.
/// Smaller than `RS_CHUNK_BYTES` because a digest mismatch resends, or marks
/// out of sync, the whole chunk.
pub const RS_CSUM_CHUNK_BYTES: u64 = 128 << 10;
/// Resync progress (SyncTarget) is made durable every this many bytes.
pub const RS_PERSIST_BYTES: u64 = 64 << 20;
/// Replicated writes per epoch before the Primary closes it with a barrier
/// (bounds the transfer log and what a peer crash can cost: the writes of
/// unacknowledged epochs are marked out of sync and resynced, never lost).
/// 2048 is DRBD's default `max-epoch-size`. Why not smaller: each barrier
/// costs the Secondary an fdatasync that writes back the epoch's scattered
/// dirty pages while its replicated writes wait on them; with 64, strace
/// showed ~300 fdatasyncs of 3.5 ms per 20000 4k writes and qd16 ran
/// 12.0k IOPS against 13.4k with 2048 (same machine, back to back). A host
/// flush still closes its epoch at once, and a FUA write is written FUA on
/// the peer, so durability never waits for an epoch to fill.
pub const EPOCH_WRITES_MAX: usize = 2048;
/// An epoch is also closed this long after its first write, so that the
/// transfer log (what a disconnect marks out of sync) holds at most about
/// this much of the most recent writing, not 2048 writes of a quiet hour:
/// a resync after a disconnect then sends about what was written while
/// disconnected. At most one barrier (one fdatasync on the Secondary) per
/// this interval for this reason.
pub const EPOCH_AGE_MAX: Duration = Duration::from_millis(100);

/// A sequential host write ending this close to the end of its activity-log
/// extent records the next extent ahead (half an extent, 2 MiB). Why: a
/// stream finds every new extent cold (LRU over more extents than the log
/// holds misses every time), and each of its writes there waited for an AL
/// record (a FUA write, ~1.4 ms in the lab): 1 MiB writes at qd4 ran 0.71k
/// MB/s, and 0.90k with no AL misses at all.
pub const AL_PREFETCH_BYTES: u64 = md::AL_EXTENT_BYTES / 2;

/// `after-sb-0pri` (no primary when split brain is detected).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterSb0 {
    Disconnect,
    DiscardYoungerPrimary,
    DiscardOlderPrimary,
    DiscardZeroChanges,
    DiscardLeastChanges,
    DiscardNode(bool), // true: discard the local node's data (discard-node-NAME = this node)
}

/// `after-sb-1pri` (one primary).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterSb1 {
    Disconnect,
    Consensus,
    ViolentlyAs0p,
    DiscardSecondary,
    CallPeerPrimaryLostAfterSb,
}

/// `after-sb-2pri` (two primaries).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterSb2 {
    Disconnect,
    ViolentlyAs0p,
    CallPeerPrimaryLostAfterSb,
}

/// `on-io-error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnIoError {
    Detach,
    PassOn,
    CallLocalIoError,
}

/// The resource as configured (from drbd.conf, resolved for this node).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaConfig {
    pub name: String,
    pub protocol: Protocol,
    pub layout: Layout,
    /// Resync rate limit in bytes per second (`syncer { rate }` / `resync-rate`).
    pub resync_rate: u64,
    /// `csums-alg` set: resync compares digests first.
    pub csums: bool,
    pub after_sb_0pri: AfterSb0,
    pub after_sb_1pri: AfterSb1,
    pub after_sb_2pri: AfterSb2,
    pub on_io_error: OnIoError,
    /// Interval of pings on an idle connection, and how long without any
    /// message before the connection is declared dead.
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// Tiebreak where DRBD uses node addresses: true on the node whose
    /// replication address sorts lower.
    pub lower_node: bool,
}

/// Operator commands (`bascule disk ...`), applied by the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// `primary [--force]`: force = make this node's data authoritative
    /// (the guide's --do-what-I-say), starting a full sync to the peer.
    Primary {
        force: bool,
    },
    Secondary,
    /// `connect [--discard-my-data]`.
    Connect {
        discard_my_data: bool,
    },
    Disconnect,
    /// Mark the whole local disk out of sync (resync from the peer).
    Invalidate,
    /// Online verify.
    Verify,
}

/// Why a command was refused (printed to the operator, exit code 10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused(pub String);

/// What the shell must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Run this I/O on the backing store; report with `handle_disk_done(id, ..)`.
    Disk {
        id: DiskId,
        io: DiskIo,
    },
    /// Send to the peer (on the authenticated connection, in order).
    Send(PeerMsg),
    /// Complete a host request.
    HostDone {
        id: HostId,
        result: IoResult,
    },
    /// Open the replication connection (connect and accept) / close it.
    Connect,
    Disconnect,
    /// A catalogue line.
    Event(ReplEvent),
    /// Run a drbd.conf handler (`split-brain`, `local-io-error`, ...).
    RunHandler(&'static str),
}

/// Catalogue events (one line each; the shell renders them as
/// `disk_<name> res=... key=value`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplEvent {
    Role {
        from: Role,
        to: Role,
    },
    Conn {
        from: ConnState,
        to: ConnState,
    },
    Disk {
        from: DiskState,
        to: DiskState,
    },
    PeerDisk {
        from: DiskState,
        to: DiskState,
    },
    SyncStart {
        source: bool,
        full: bool,
        kib: u64,
    },
    SyncDone {
        kib: u64,
        ms: u64,
    },
    SplitBrain {
        policy: &'static str,
        resolved: &'static str,
    },
    IoError {
        op: &'static str,
        offset: u64,
    },
    /// Anything else worth a line: short stable name and a detail.
    Note {
        name: &'static str,
        detail: String,
    },
}

/// A snapshot for `bascule status` / `disk status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub role: Role,
    pub peer_role: Role,
    pub cstate: ConnState,
    pub dstate: DiskState,
    pub peer_dstate: DiskState,
    pub protocol: Protocol,
    pub usable_bytes: u64,
    pub out_of_sync_bytes: u64,
    /// During a sync: bytes to sync when it started, bytes left, bytes/s.
    pub sync_total_bytes: u64,
    pub sync_left_bytes: u64,
    pub sync_rate: u64,
    /// /proc/drbd counters in KiB: network sent/received, disk written/read.
    pub ns_kib: u64,
    pub nr_kib: u64,
    pub dw_kib: u64,
    pub dr_kib: u64,
    /// Application writes not yet acknowledged / pending.
    pub ap_pending: u64,
}

fn digest(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// What a host write stores until it completes.
#[derive(Clone, Debug)]
enum HostKind {
    Read {
        offset: u64,
        len: u32,
    },
    /// Write, trim or write-zeroes: `data` None for the two zeroing kinds.
    Write {
        offset: u64,
        len: u32,
        data: Option<Payload>,
        fua: bool,
        discard: bool,
    },
    Flush,
}

#[derive(Debug)]
struct HostReq {
    kind: HostKind,
    /// Waiting for the local disk (write, read, flush).
    local: bool,
    /// Offsets `ActivityLog::acquire`d for this write, released at completion.
    al_offsets: Vec<u64>,
    /// A write not issued yet (waiting for its AL record or the range lock).
    queued: bool,
    /// Waiting for the peer (ack, barrier ack, read reply).
    peer: bool,
    /// Not acknowledged before every metadata write with a smaller seq is done.
    meta_fence: u64,
    /// Replicated as this sequence number (acks name it).
    seq: Option<Seq>,
    /// The local disk failed it: only the peer's copy can complete it.
    local_failed: bool,
    error: Option<IoError>,
    data: Option<Payload>,
}

/// What a `DiskId` was issued for.
#[derive(Clone, Debug)]
enum Op {
    /// Superblock, bitmap page or activity-log record (FUA).
    Meta {
        /// The metadata seqs this write carries (later writes to the same
        /// place coalesced into it).
        seqs: Vec<u64>,
        offset: u64,
    },
    HostWrite {
        host: HostId,
        range: (u64, u64),
    },
    HostRead {
        host: HostId,
    },
    HostFlush {
        host: HostId,
    },
    /// The Secondary applies a replicated write.
    PeerWrite {
        seq: Seq,
        range: (u64, u64),
        write_ack: bool,
    },
    /// The Secondary flushes for a barrier (and every earlier one).
    BarrierFlush {
        nr: u64,
    },
    /// SyncTarget writes resync data.
    RsWrite {
        range: (u64, u64),
    },
    /// SyncSource reads for `RsData` (or to compare with the target's digest).
    RsRead {
        range: (u64, u64),
        digest: Option<[u8; 32]>,
    },
    /// SyncTarget reads its own range to send a digest.
    CsumRead {
        range: (u64, u64),
    },
    /// Verify: read the local range; `peer` is the peer's digest when we are
    /// answering (VerifyT) or None when we asked (VerifyS).
    OvRead {
        range: (u64, u64),
        reply_to_peer: bool,
    },
    /// Serving the peer's read (it is Diskless).
    PeerRead {
        id: u64,
    },
    /// Flush before cleared bitmap bits are persisted; carries the bitmap
    /// as it was when the flush was issued (what the flush covers) and
    /// whether the data may then be marked consistent.
    SyncFlush {
        bitmap: Box<Bitmap>,
        consistent: bool,
    },
}

/// Work that needs the range lock before it may issue its disk op.
#[derive(Clone, Debug)]
enum Job {
    Host(HostId),
    Peer {
        seq: Seq,
        offset: u64,
        io: DiskIo,
        len: u64,
        write_ack: bool,
    },
    RsWrite {
        offset: u64,
        data: Payload,
    },
    RsRead {
        offset: u64,
        len: u32,
        digest: Option<[u8; 32]>,
    },
}

/// A running resync (either side) or verify.
#[derive(Debug)]
struct Resync {
    source: bool,
    full: bool,
    started: Instant,
    total_blocks: u64,
    /// Bitmap exchange: ours sent, the peer's merged.
    peer_bitmap_done: bool,
    /// Target: the SyncUuid arrived (requests may start).
    running: bool,
    /// Target: next block to look at, and requests in flight (offset -> len).
    cursor: u64,
    inflight: BTreeMap<u64, u32>,
    /// Token bucket (bytes) and when it was last refilled.
    tokens: u64,
    refilled: Instant,
    wake_at: Option<Instant>,
    /// The target reported UpToDate / the source finished: waiting for the
    /// flush before the bitmap is persisted.
    bytes_done: u64,
    /// `bytes_done` when progress was last persisted.
    persisted_bytes: u64,
}

/// Online verify progress (VerifyS side drives it).
#[derive(Debug)]
struct Verify {
    cursor: u64,
    inflight: usize,
    /// Digests of our own reads waiting for the peer's, and vice versa.
    mine: BTreeMap<u64, [u8; 32]>,
    theirs: BTreeMap<u64, [u8; 32]>,
    found: u64,
}

/// What we know of the peer from its last ReportParams / State.
#[derive(Clone, Copy, Debug)]
struct PeerParams {
    uuids: Uuids,
    flags: MdFlags,
    dirty_blocks: u64,
}

pub struct Replica {
    cfg: ReplicaConfig,
    md: Metadata,
    bitmap: Bitmap,
    al: ActivityLog,
    rng: Rng,
    role: Role,
    peer_role: Role,
    cstate: ConnState,
    dstate: DiskState,
    peer_dstate: DiskState,
    actions: VecDeque<Action>,
    next_disk: u64,
    ops: BTreeMap<DiskId, Op>,
    hosts: BTreeMap<HostId, HostReq>,
    /// Host writes in arrival order, waiting for the activity-log reset and
    /// then for the metadata writes issued before them (their AL records
    /// among them): (fence once their AL records are issued, id).
    start_wait: VecDeque<(Option<u64>, HostId)>,
    /// The AL area is zeroed once the metadata writes before this fence are
    /// done (see `new`), and host writes wait until the zeroing is done
    /// (`al_zeroing`: the fence is the zero write's).
    al_reset_fence: Option<u64>,
    al_zeroing: bool,
    /// Activity-log records in flight: metadata seq -> AL record seq.
    al_meta: BTreeMap<u64, u64>,
    /// One past the last byte of the last host write (sequential streams
    /// record their next extent ahead: [`AL_PREFETCH_BYTES`]).
    al_stream_end: Option<u64>,
    /// Host writes start only after the metadata writes before this fence
    /// (the last superblock write) are durable.
    md_fence: u64,
    /// Range lock: holders (range, disk id) and FIFO waiters.
    holders: Vec<((u64, u64), DiskId)>,
    waiters: VecDeque<((u64, u64), Job)>,
    meta_next: u64,
    meta_inflight: BTreeSet<u64>,
    /// Primary: replicated writes waiting for an ack: seq -> (host, range, ack needed).
    next_seq: Seq,
    sent: BTreeMap<Seq, (HostId, (u64, u64), bool)>,
    /// Transfer log: ranges of writes per epoch not yet covered by a BarrierAck.
    epoch: u64,
    epoch_writes: usize,
    /// When the open epoch got its first write (closed by EPOCH_AGE_MAX).
    epoch_opened: Option<Instant>,
    /// The time of the latest input (the engine reads no clock).
    clock: Instant,
    tl: Vec<(u64, Seq, (u64, u64))>,
    /// Barriers sent for host flushes: nr -> host request.
    barriers: BTreeMap<u64, Vec<HostId>>,
    /// Secondary: peer writes in flight (seq), barriers waiting for them.
    peer_inflight: BTreeSet<Seq>,
    last_peer_seq: Seq,
    barrier_wait: VecDeque<(u64, Seq)>,
    /// Secondary: the highest barrier whose writes are all done locally and
    /// whose flush has not started yet.
    barrier_ready: Option<u64>,
    /// Secondary: a barrier flush is running.
    barrier_flushing: bool,
    /// Reads sent to the peer: id -> host request.
    next_read: u64,
    peer_reads: BTreeMap<u64, HostId>,
    peer: Option<PeerParams>,
    discard_my_data: bool,
    /// True from handle_peer_up until handle_peer_down.
    link_up: bool,
    last_rx: Instant,
    last_tx: Instant,
    /// The generation of the data this node exposes (DRBD's ed_uuid): its own
    /// current uuid while it has a disk; once Diskless, the peer's, which it
    /// adopts while connected and must find again to reconnect.
    ed_uuid: u64,
    /// When the outstanding Ping was sent (None: none outstanding).
    ping_sent: Option<Instant>,
    /// Our bitmap count as sent in the last ReportParams (split-brain policies
    /// must compare the same numbers on both sides).
    reported_dirty: u64,
    sync: Option<Resync>,
    verify: Option<Verify>,
    /// Bitmap pages to persist once the data flush (`SyncFlush`) is done.
    sync_flush_pending: bool,
    /// Another progress write was asked for while one was pending.
    sync_flush_again: bool,
    /// The resync finished: the data becomes consistent on disk once the
    /// flush covering its last writes is done.
    consistent_after_flush: bool,
    /// Metadata places with a write in flight, and the newest content to
    /// write there next: two writes to one place are never in flight
    /// together (the disk may reorder them and leave the older).
    meta_busy: BTreeMap<u64, Option<(Payload, Vec<u64>)>>,
    sync_total_bytes: u64,
    sync_rate: u64,
    ns: u64,
    nr: u64,
    dw: u64,
    dr: u64,
}

impl Replica {
    /// A replica attached to a backing store whose metadata and bitmap the shell
    /// read and decoded (and the activity-log extents found there, marked in
    /// `bitmap` already when `md.flags.primary_ind` says we crashed as Primary).
    /// Starts Secondary, StandAlone, and asks to connect (Action::Connect).
    ///
    /// Disk state from the flags, as DRBD's attach: not consistent ->
    /// Inconsistent; consistent but not was-up-to-date -> Outdated; otherwise
    /// Consistent (it becomes UpToDate when the peer agrees on connect, or on
    /// promotion while alone).
    pub fn new(config: ReplicaConfig, md: Metadata, bitmap: Bitmap, now: Instant) -> Replica {
        let seed = md.uuids.current
            ^ md.generation.rotate_left(17)
            ^ now.millis().rotate_left(33)
            ^ if config.lower_node {
                0x5bd1_e995_0000_0001
            } else {
                0x9e37_79b9_7f4a_7c15
            };
        let dstate = if !md.flags.consistent {
            DiskState::Inconsistent
        } else if !md.flags.was_up_to_date {
            DiskState::Outdated
        } else {
            DiskState::Consistent
        };
        let mut r = Replica {
            cfg: config,
            md,
            bitmap,
            al: ActivityLog::new(),
            rng: Rng::new(seed),
            role: Role::Secondary,
            peer_role: Role::Unknown,
            cstate: ConnState::StandAlone,
            dstate,
            peer_dstate: DiskState::DUnknown,
            actions: VecDeque::new(),
            next_disk: 1,
            ops: BTreeMap::new(),
            hosts: BTreeMap::new(),
            start_wait: VecDeque::new(),
            al_reset_fence: None,
            al_zeroing: false,
            al_meta: BTreeMap::new(),
            al_stream_end: None,
            md_fence: 0,
            holders: Vec::new(),
            waiters: VecDeque::new(),
            meta_next: 0,
            meta_inflight: BTreeSet::new(),
            next_seq: 1,
            sent: BTreeMap::new(),
            epoch: 1,
            epoch_writes: 0,
            epoch_opened: None,
            clock: now,
            tl: Vec::new(),
            barriers: BTreeMap::new(),
            peer_inflight: BTreeSet::new(),
            last_peer_seq: 0,
            barrier_wait: VecDeque::new(),
            barrier_ready: None,
            barrier_flushing: false,
            next_read: 1,
            peer_reads: BTreeMap::new(),
            peer: None,
            discard_my_data: false,
            link_up: false,
            last_rx: now,
            last_tx: now,
            ping_sent: None,
            ed_uuid: 0,
            reported_dirty: 0,
            sync: None,
            verify: None,
            sync_flush_pending: false,
            sync_flush_again: false,
            consistent_after_flush: false,
            meta_busy: BTreeMap::new(),
            sync_total_bytes: 0,
            sync_rate: 0,
            ns: 0,
            nr: 0,
            dw: 0,
            dr: 0,
        };
        // We start Secondary: the uuid's primary bit says so (md compares it).
        r.md.uuids.set_primary(false);
        // The AL area may hold records of an earlier run whose sequence
        // numbers a fresh log would lose to after a crash. The shell marked
        // their extents in `bitmap` when we crashed as Primary: make those bits
        // durable first, then zero the area; host writes wait for both.
        if r.md.flags.primary_ind {
            r.write_bitmap_all();
        }
        r.al_reset_fence = Some(r.meta_next);
        r.pump_start_wait();
        r.push(Action::Event(ReplEvent::Disk {
            from: DiskState::Diskless,
            to: dstate,
        }));
        // A crashed Primary keeps `primary_ind` until the peer has seen it in
        // the handshake (DRBD's crashed-primary rule needs it there); it is
        // cleared when the handshake or the resync that follows completes.
        r.set_cstate(ConnState::Unconnected);
        r.push(Action::Connect);
        r.set_cstate(ConnState::WFConnection);
        r
    }

    // ---- small helpers -------------------------------------------------

    fn push(&mut self, a: Action) {
        if let Action::Send(m) = &a {
            self.ns += match m {
                PeerMsg::Data { data, .. }
                | PeerMsg::RsData { data, .. }
                | PeerMsg::ReadReply { data, .. } => data.len() as u64,
                _ => 0,
            };
        }
        self.actions.push_back(a);
    }

    /// Queues a message; dropped when the link is down (the peer will learn
    /// everything again in the next handshake).
    fn send(&mut self, m: PeerMsg) {
        if !self.link_up {
            return;
        }
        self.push(Action::Send(m));
    }

    fn note(&mut self, name: &'static str, detail: String) {
        self.push(Action::Event(ReplEvent::Note { name, detail }));
    }

    fn disk(&mut self, io: DiskIo, op: Op) -> DiskId {
        let id = DiskId(self.next_disk);
        self.next_disk += 1;
        self.ops.insert(id, op);
        self.push(Action::Disk { id, io });
        id
    }

    fn set_role(&mut self, to: Role) {
        if self.role != to {
            let from = std::mem::replace(&mut self.role, to);
            self.push(Action::Event(ReplEvent::Role { from, to }));
        }
    }

    fn set_peer_role(&mut self, to: Role) {
        self.peer_role = to;
    }

    fn set_cstate(&mut self, to: ConnState) {
        if self.cstate != to {
            let from = std::mem::replace(&mut self.cstate, to);
            self.push(Action::Event(ReplEvent::Conn { from, to }));
        }
    }

    fn set_dstate(&mut self, to: DiskState) {
        if self.dstate != to {
            let from = std::mem::replace(&mut self.dstate, to);
            self.push(Action::Event(ReplEvent::Disk { from, to }));
        }
    }

    fn set_peer_dstate(&mut self, to: DiskState) {
        if self.peer_dstate != to {
            let from = std::mem::replace(&mut self.peer_dstate, to);
            self.push(Action::Event(ReplEvent::PeerDisk { from, to }));
        }
    }

    fn has_disk(&self) -> bool {
        !matches!(self.dstate, DiskState::Diskless | DiskState::Failed)
    }

    /// Connected to a peer whose data is UpToDate (what a Diskless Primary
    /// needs to serve anything).
    fn peer_has_good_data(&self) -> bool {
        self.replicating() && self.peer_dstate == DiskState::UpToDate
    }

    fn good_data(d: DiskState) -> bool {
        matches!(d, DiskState::UpToDate | DiskState::Consistent)
    }

    /// The handshake is done: writes are replicated, the peer's state known.
    fn replicating(&self) -> bool {
        matches!(
            self.cstate,
            ConnState::Connected
                | ConnState::WFBitMapS
                | ConnState::WFBitMapT
                | ConnState::WFSyncUUID
                | ConnState::SyncSource
                | ConnState::SyncTarget
                | ConnState::VerifyS
                | ConnState::VerifyT
        ) && self.peer_dstate != DiskState::Diskless
    }

    // ---- metadata ------------------------------------------------------

    fn meta_write(&mut self, offset: u64, data: Payload) -> u64 {
        let seq = self.meta_next;
        self.meta_next += 1;
        self.meta_inflight.insert(seq);
        if !self.has_disk() {
            // Nothing to write to: count it done at once.
            self.meta_inflight.remove(&seq);
            return seq;
        }
        match self.meta_busy.get_mut(&offset) {
            Some(Some((next, seqs))) => {
                *next = data;
                seqs.push(seq);
            }
            Some(slot @ None) => *slot = Some((data, vec![seq])),
            None => {
                self.meta_busy.insert(offset, None);
                self.issue_meta(offset, data, vec![seq]);
            }
        }
        seq
    }

    fn issue_meta(&mut self, offset: u64, data: Payload, seqs: Vec<u64>) {
        let io = DiskIo::Write {
            target: DiskTarget::Meta,
            offset,
            data,
            fua: true,
        };
        self.disk(io, Op::Meta { seqs, offset });
    }

    /// Writes the superblock (every uuid/flag change goes through here).
    fn write_md(&mut self) {
        self.md.generation += 1;
        let bytes = md::encode_superblock(&self.md);
        let at = self.cfg.layout.superblock_offset;
        self.meta_write(at, Arc::new(bytes));
        // No host write starts before this is durable (a promotion's
        // primary_ind is what makes the activity log count after a crash).
        self.md_fence = self.meta_next;
    }

    fn write_bitmap_range(&mut self, offset: u64, len: u64) {
        for (at, page) in self.bitmap.encode_pages(&self.cfg.layout, offset, len) {
            self.meta_write(at, page);
        }
    }

    fn write_bitmap_all(&mut self) {
        let usable = self.cfg.layout.usable_bytes;
        if usable > 0 {
            self.write_bitmap_range(0, usable);
        }
    }

    /// Every metadata write issued before `fence` is durable.
    fn meta_done_before(&self, fence: u64) -> bool {
        self.meta_inflight.first().map_or(true, |&s| s >= fence)
    }

    fn random_uuid(&mut self) -> u64 {
        loop {
            // Bit 0 is DRBD's primary flag; never 0 (= "no uuid").
            let v = self.rng.next_u64() & !1;
            if v != 0 {
                return v;
            }
        }
    }

    /// DRBD's drbd_uuid_new_current (md's rules), logged.
    fn new_current_uuid(&mut self) {
        let fresh = self.random_uuid();
        self.md.uuids.new_current(fresh);
        self.note(
            "new_current_uuid",
            format!("uuid={:016x}", self.md.uuids.current),
        );
    }

    /// The peer's data became unreachable: a Primary starts a new generation
    /// (md's `lost_peer`), written before anything else is acknowledged.
    fn lost_peer(&mut self) {
        let fresh = self.random_uuid();
        let (primary, up) = (
            self.role == Role::Primary,
            self.dstate == DiskState::UpToDate,
        );
        if self.has_disk() && self.md.uuids.lost_peer(fresh, primary, up) {
            self.note(
                "new_current_uuid",
                format!("uuid={:016x}", self.md.uuids.current),
            );
            self.write_md();
        }
    }

    fn set_disk_good(&mut self) {
        self.md.flags.consistent = true;
        self.md.flags.was_up_to_date = true;
        self.md.flags.full_sync = false;
    }

    fn report_params(&mut self) {
        self.reported_dirty = self.bitmap.count();
        let mut uuids = self.md.uuids;
        if !self.has_disk() {
            uuids.current = self.ed_uuid;
        }
        let msg = PeerMsg::ReportParams {
            protocol: self.cfg.protocol,
            usable_bytes: self.cfg.layout.usable_bytes,
            role: self.role,
            disk: self.dstate,
            uuids,
            dirty_blocks: self.bitmap.count(),
            md_flags: self.md.flags.to_bits(),
            discard_my_data: self.discard_my_data,
        };
        self.send(msg);
    }

    fn send_state(&mut self) {
        if self.link_up {
            let (role, disk) = (self.role, self.dstate);
            self.send(PeerMsg::State { role, disk });
        }
    }
}

// ---- host requests ------------------------------------------------------
impl Replica {
    fn host_done(&mut self, id: HostId, result: IoResult) {
        if let Some(req) = self.hosts.remove(&id) {
            for at in req.al_offsets {
                self.al.release(at);
            }
        }
        self.push(Action::HostDone { id, result });
    }

    /// Completes `id` when nothing it waits for is left.
    fn try_complete(&mut self, id: HostId) {
        let Some(req) = self.hosts.get(&id) else {
            return;
        };
        if req.queued || req.local || req.peer || !self.meta_done_before(req.meta_fence) {
            return;
        }
        let result = match req.error {
            Some(e) => Err(e),
            None => Ok(req.data.clone()),
        };
        self.host_done(id, result);
    }

    fn try_complete_all(&mut self) {
        let ids: Vec<HostId> = self.hosts.keys().copied().collect();
        for id in ids {
            self.try_complete(id);
        }
    }

    fn new_req(&mut self, id: HostId, kind: HostKind) {
        let req = HostReq {
            kind,
            local: false,
            al_offsets: Vec::new(),
            queued: false,
            peer: false,
            meta_fence: 0,
            seq: None,
            local_failed: false,
            error: None,
            data: None,
        };
        self.hosts.insert(id, req);
    }

    fn host_read(&mut self, id: HostId, offset: u64, len: u32) {
        self.new_req(id, HostKind::Read { offset, len });
        let local_ok = self.dstate == DiskState::UpToDate
            || (self.role == Role::Secondary && self.dstate == DiskState::Consistent);
        if local_ok {
            self.hosts.get_mut(&id).expect("just inserted").local = true;
            let io = DiskIo::Read {
                target: DiskTarget::Data,
                offset,
                len,
            };
            self.disk(io, Op::HostRead { host: id });
        } else if !self.read_through_peer(id, offset, len) {
            self.host_done(id, Err(IoError::Io));
        }
    }

    /// Sends a read to the peer when it has good data. False when it cannot.
    fn read_through_peer(&mut self, id: HostId, offset: u64, len: u32) -> bool {
        if !(self.replicating() && self.peer_dstate == DiskState::UpToDate) {
            return false;
        }
        let rid = self.next_read;
        self.next_read += 1;
        self.peer_reads.insert(rid, id);
        if let Some(req) = self.hosts.get_mut(&id) {
            req.peer = true;
        }
        self.send(PeerMsg::ReadRequest {
            id: rid,
            offset,
            len,
        });
        true
    }

    fn host_write(
        &mut self,
        id: HostId,
        offset: u64,
        len: u32,
        data: Option<Payload>,
        fua: bool,
        discard: bool,
    ) {
        if self.role != Role::Primary {
            self.push(Action::HostDone {
                id,
                result: Err(IoError::ReadOnly),
            });
            return;
        }
        if !self.has_disk() && !self.peer_has_good_data() {
            self.push(Action::HostDone {
                id,
                result: Err(IoError::Io),
            });
            return;
        }
        self.new_req(
            id,
            HostKind::Write {
                offset,
                len,
                data,
                fua,
                discard,
            },
        );
        if let Some(req) = self.hosts.get_mut(&id) {
            req.queued = true;
        }
        // Not acknowledged before the metadata written so far is durable.
        let fence = self.meta_next;
        if let Some(req) = self.hosts.get_mut(&id) {
            req.meta_fence = fence;
        }
        self.start_wait.push_back((None, id));
        self.pump_start_wait();
    }

    /// Activity log first: the extents a write touches are recorded on disk
    /// before any of its data may reach the disk. Returns the fence.
    fn al_acquire(&mut self, id: HostId) {
        let range = match self.hosts.get(&id).map(|r| &r.kind) {
            Some(HostKind::Write { offset, len, .. }) => {
                (*offset, *offset + u64::from(*len).max(1) - 1)
            }
            _ => return,
        };
        if !self.has_disk() {
            return;
        }
        let mut offsets = vec![range.0];
        if range.1 / md::AL_EXTENT_BYTES != range.0 / md::AL_EXTENT_BYTES {
            offsets.push(range.1);
        }
        for &at in &offsets {
            if let Some((off, rec)) = self.al.acquire(at, &self.cfg.layout) {
                let record = self.al.last_seq();
                let base = self.cfg.layout.al_offset;
                let seq = self.meta_write(base + off, rec);
                self.al_meta.insert(seq, record);
            }
        }
        if let Some(req) = self.hosts.get_mut(&id) {
            req.al_offsets = offsets;
        }
        self.al_prefetch(range);
    }

    /// A write that continues the previous one and ends within
    /// [`AL_PREFETCH_BYTES`] of its extent's end records the next extent now,
    /// so the stream finds it hot and durable instead of waiting for its
    /// record. Never waited on; it only makes the log name one more extent
    /// (a crash resyncs it too, never less).
    fn al_prefetch(&mut self, range: (u64, u64)) {
        let sequential = self.al_stream_end == Some(range.0);
        self.al_stream_end = Some(range.1 + 1);
        let ext = md::AL_EXTENT_BYTES;
        let next = (range.1 / ext + 1) * ext;
        if !sequential || next - range.1 > AL_PREFETCH_BYTES || next >= self.cfg.layout.usable_bytes
        {
            return;
        }
        if let Some((off, rec)) = self.al.touch(next, &self.cfg.layout) {
            let record = self.al.last_seq();
            let base = self.cfg.layout.al_offset;
            let seq = self.meta_write(base + off, rec);
            self.al_meta.insert(seq, record);
        }
    }

    /// Starts the host writes that may start: the AL area was reset, the last
    /// superblock write is durable, and the AL records naming their extents
    /// are durable. Writes to hot extents do not wait behind a write whose
    /// extent is being recorded (the range lock orders overlapping ones).
    fn pump_start_wait(&mut self) {
        while let Some(fence) = self.al_reset_fence {
            if self.has_disk() && !self.meta_done_before(fence) {
                return;
            }
            if self.al_zeroing || !self.has_disk() {
                self.al_reset_fence = None;
            } else {
                let (at, len) = (self.cfg.layout.al_offset, self.cfg.layout.al_bytes);
                self.meta_write(at, Arc::new(vec![0; len as usize]));
                self.al_zeroing = true;
                self.al_reset_fence = Some(self.meta_next);
            }
        }
        if self.has_disk() && !self.meta_done_before(self.md_fence) {
            return;
        }
        let mut i = 0;
        while i < self.start_wait.len() {
            let id = self.start_wait[i].1;
            if self.start_wait[i].0.is_none() {
                self.al_acquire(id);
                self.start_wait[i].0 = Some(0);
            }
            let ready = !self.has_disk()
                || self.hosts.get(&id).map_or(true, |r| {
                    r.al_offsets.iter().all(|&o| self.al.is_durable(o))
                });
            if ready {
                self.start_wait.remove(i);
                self.start_host_write(id);
            } else {
                i += 1;
            }
        }
    }

    fn start_host_write(&mut self, id: HostId) {
        let Some(HostKind::Write { offset, len, .. }) = self.hosts.get(&id).map(|r| r.kind.clone())
        else {
            return;
        };
        if self.has_disk() {
            self.acquire((offset, offset + u64::from(len)), Job::Host(id));
        } else {
            self.issue_host_write(id);
        }
    }

    /// The range lock is held (or there is no local disk): write locally and
    /// send to the peer at the same time. Returns the local disk op.
    fn issue_host_write(&mut self, id: HostId) -> Option<DiskId> {
        let req = self.hosts.get(&id)?;
        let HostKind::Write {
            offset,
            len,
            data,
            fua,
            discard,
        } = req.kind.clone()
        else {
            return None;
        };
        let range = (offset, offset + u64::from(len));
        let mut local = None;
        if self.has_disk() {
            let io = match (&data, discard) {
                (Some(d), _) => DiskIo::Write {
                    target: DiskTarget::Data,
                    offset,
                    data: d.clone(),
                    fua,
                },
                (None, true) => DiskIo::Discard { offset, len, fua },
                (None, false) => DiskIo::WriteZeroes { offset, len, fua },
            };
            local = Some(self.disk(io, Op::HostWrite { host: id, range }));
        }
        // Without a disk, only an UpToDate peer makes a write worth doing.
        let replicate = self.replicating() && (local.is_some() || self.peer_has_good_data());
        let req = self.hosts.get_mut(&id).expect("checked above");
        req.local = local.is_some();
        req.queued = false;
        // Without a local copy only the peer's write can complete it.
        req.local_failed |= local.is_none();
        if local.is_none() && !replicate {
            req.error = Some(IoError::Io);
        } else if replicate {
            let seq = self.next_seq;
            self.next_seq += 1;
            // Protocol C, a FUA write and a Diskless Primary need the peer's
            // write; B its receipt; A nothing.
            let write_ack = self.cfg.protocol == Protocol::C || fua || local.is_none();
            let wait = write_ack || self.cfg.protocol == Protocol::B;
            req.seq = Some(seq);
            req.peer = wait;
            if wait {
                self.sent.insert(seq, (id, range, write_ack));
            }
            let msg = match data {
                Some(data) => PeerMsg::Data {
                    seq,
                    offset,
                    data,
                    fua,
                },
                None => PeerMsg::Zero {
                    seq,
                    offset,
                    len,
                    fua,
                    discard,
                },
            };
            self.send(msg);
            self.tl.push((self.epoch, seq, range));
            if self.epoch_writes == 0 {
                self.epoch_opened = Some(self.clock);
            }
            self.epoch_writes += 1;
            if self.epoch_writes >= EPOCH_WRITES_MAX {
                self.send_barrier(None);
            }
        } else if local.is_some() {
            // Alone: the block is out of sync with the peer; the bitmap page is
            // durable before the write is acknowledged.
            self.bitmap.set_range(range.0, range.1 - range.0);
            self.write_bitmap_range(range.0, range.1 - range.0);
            let fence = self.meta_next;
            self.hosts.get_mut(&id).expect("checked above").meta_fence = fence;
        }
        if local.is_none() {
            self.try_complete(id);
        }
        local
    }

    fn send_barrier(&mut self, host: Option<HostId>) {
        let nr = self.epoch;
        self.epoch += 1;
        self.epoch_writes = 0;
        self.epoch_opened = None;
        self.send(PeerMsg::Barrier { nr });
        if let Some(h) = host {
            self.barriers.entry(nr).or_default().push(h);
        }
    }

    fn host_flush(&mut self, id: HostId) {
        if self.role == Role::Primary && !self.has_disk() && !self.peer_has_good_data() {
            // No durable copy of the whole device is reachable.
            self.push(Action::HostDone {
                id,
                result: Err(IoError::Io),
            });
            return;
        }
        self.new_req(id, HostKind::Flush);
        if self.has_disk() {
            self.hosts.get_mut(&id).expect("just inserted").local = true;
            self.disk(DiskIo::Flush, Op::HostFlush { host: id });
        }
        if self.role == Role::Primary && self.replicating() {
            self.hosts.get_mut(&id).expect("just inserted").peer = true;
            self.send_barrier(Some(id));
        }
        self.try_complete(id);
    }

    /// The peer can no longer confirm anything: every write it has not
    /// confirmed durable (unacked, or not covered by a BarrierAck) is marked
    /// out of sync and persisted before the requests waiting on it complete.
    fn fail_peer_pending(&mut self) {
        let mut ranges: Vec<(u64, u64)> = self.tl.drain(..).map(|(_, _, r)| r).collect();
        // The open epoch's writes are in `ranges` now: nothing left to close.
        self.epoch_writes = 0;
        self.epoch_opened = None;
        let sent = std::mem::take(&mut self.sent);
        let mut waiting = Vec::new();
        for (_, (host, range, _)) in sent {
            ranges.push(range);
            waiting.push(host);
        }
        for (_, hosts) in std::mem::take(&mut self.barriers) {
            waiting.extend(hosts);
        }
        for range in &ranges {
            self.bitmap.set_range(range.0, range.1 - range.0);
        }
        if self.has_disk() {
            for range in &ranges {
                self.write_bitmap_range(range.0, range.1 - range.0);
            }
        }
        let fence = self.meta_next;
        for host in waiting {
            if let Some(req) = self.hosts.get_mut(&host) {
                req.peer = false;
                req.meta_fence = req.meta_fence.max(fence);
                if req.local_failed {
                    // Neither copy is known good.
                    req.error = Some(IoError::Io);
                }
            }
        }
        for (_, host) in std::mem::take(&mut self.peer_reads) {
            if let Some(req) = self.hosts.get_mut(&host) {
                req.peer = false;
                req.error = Some(IoError::Io);
            }
        }
        self.try_complete_all();
    }
}

// ---- range lock ---------------------------------------------------------
impl Replica {
    fn acquire(&mut self, range: (u64, u64), job: Job) {
        let busy = self.holders.iter().any(|(r, _)| overlaps(*r, range))
            || self.waiters.iter().any(|(r, _)| overlaps(*r, range));
        if busy {
            self.waiters.push_back((range, job));
        } else if let Some(id) = self.run_job(job) {
            self.holders.push((range, id));
        }
    }

    fn release(&mut self, id: DiskId) {
        let before = self.holders.len();
        self.holders.retain(|(_, h)| *h != id);
        if self.holders.len() == before {
            return;
        }
        let mut i = 0;
        while i < self.waiters.len() {
            let range = self.waiters[i].0;
            let busy = self.holders.iter().any(|(r, _)| overlaps(*r, range))
                || self
                    .waiters
                    .iter()
                    .take(i)
                    .any(|(r, _)| overlaps(*r, range));
            if busy {
                i += 1;
                continue;
            }
            let (_, job) = self.waiters.remove(i).expect("index checked");
            if let Some(id) = self.run_job(job) {
                self.holders.push((range, id));
            }
        }
    }

    fn run_job(&mut self, job: Job) -> Option<DiskId> {
        match job {
            Job::Host(id) => self.issue_host_write(id),
            Job::Peer {
                seq,
                offset,
                io,
                len,
                write_ack,
            } => {
                if !self.has_disk() {
                    self.peer_inflight.remove(&seq);
                    self.send(PeerMsg::NegAck { seq });
                    self.check_barriers();
                    return None;
                }
                Some(self.disk(
                    io,
                    Op::PeerWrite {
                        seq,
                        range: (offset, offset + len),
                        write_ack,
                    },
                ))
            }
            Job::RsWrite { offset, data } => {
                if !self.has_disk() {
                    return None;
                }
                let range = (offset, offset + data.len() as u64);
                let io = DiskIo::Write {
                    target: DiskTarget::Data,
                    offset,
                    data,
                    fua: false,
                };
                Some(self.disk(io, Op::RsWrite { range }))
            }
            Job::RsRead {
                offset,
                len,
                digest,
            } => {
                if !self.has_disk() {
                    self.send(PeerMsg::RsNegAck { offset, len });
                    return None;
                }
                let range = (offset, offset + u64::from(len));
                let io = DiskIo::Read {
                    target: DiskTarget::Data,
                    offset,
                    len,
                };
                Some(self.disk(io, Op::RsRead { range, digest }))
            }
        }
    }
}

// ---- disk completions ---------------------------------------------------
impl Replica {
    /// A local I/O failed. Returns true when the disk was detached (the
    /// caller may then fall back on the peer), false for `pass_on`.
    fn local_error(&mut self, op: &'static str, offset: u64) -> bool {
        self.push(Action::Event(ReplEvent::IoError { op, offset }));
        match self.cfg.on_io_error {
            OnIoError::PassOn => false,
            OnIoError::Detach | OnIoError::CallLocalIoError => {
                if self.cfg.on_io_error == OnIoError::CallLocalIoError {
                    self.push(Action::RunHandler("local-io-error"));
                }
                self.detach();
                true
            }
        }
    }

    fn detach(&mut self) {
        if !self.has_disk() {
            return;
        }
        self.ed_uuid = self.md.uuids.current;
        self.set_dstate(DiskState::Failed);
        self.set_dstate(DiskState::Diskless);
        // Writes waiting for the lock can no longer go to this disk.
        self.meta_inflight.clear();
        self.meta_busy.clear();
        if self.sync.take().is_some() {
            // Nothing to sync to or from any more; the peer learns it from
            // our State (Diskless) and ends its side too.
            self.note("resync_abort", "reason=detached".into());
            self.set_cstate(ConnState::Connected);
        }
        self.verify = None;
        self.send_state();
        self.pump_start_wait();
    }

    pub fn handle_disk_done(&mut self, now: Instant, id: DiskId, result: IoResult) {
        self.clock = self.clock.max(now);
        let Some(op) = self.ops.remove(&id) else {
            self.note("disk_done_unknown", format!("id={}", id.0));
            return;
        };
        match op {
            Op::Meta { seqs, offset } => {
                if result.is_err() {
                    self.local_error("meta-write", offset);
                }
                for seq in seqs {
                    self.meta_inflight.remove(&seq);
                    if let Some(record) = self.al_meta.remove(&seq) {
                        self.al.written(record);
                    }
                }
                if let Some(Some((data, seqs))) = self.meta_busy.remove(&offset) {
                    if self.has_disk() {
                        self.meta_busy.insert(offset, None);
                        self.issue_meta(offset, data, seqs);
                    } else {
                        seqs.iter().for_each(|s| {
                            self.meta_inflight.remove(s);
                        });
                    }
                }
                self.pump_start_wait();
                self.try_complete_all();
            }
            Op::HostWrite { host, range } => self.host_write_done(id, host, range, result),
            Op::HostRead { host } => self.host_read_done(host, result),
            Op::HostFlush { host } => {
                // Detached: the flush holds only if the peer's copy is whole.
                if result.is_err() && !(self.local_error("flush", 0) && self.peer_has_good_data()) {
                    self.set_host_error(host);
                }
                if let Some(req) = self.hosts.get_mut(&host) {
                    req.local = false;
                }
                self.try_complete(host);
            }
            Op::PeerWrite {
                seq,
                range,
                write_ack,
            } => {
                self.release(id);
                self.peer_inflight.remove(&seq);
                match result {
                    Ok(_) => {
                        self.dw += range.1 - range.0;
                        if write_ack {
                            self.send(PeerMsg::WriteAck { seq });
                        }
                    }
                    Err(_) => {
                        self.local_error("peer-write", range.0);
                        self.send(PeerMsg::NegAck { seq });
                    }
                }
                self.check_barriers();
            }
            Op::BarrierFlush { nr } => {
                self.barrier_flushing = false;
                if result.is_err() {
                    self.local_error("flush", 0);
                }
                // After a failed flush we are Diskless and said so (State):
                // the Primary has already marked what we did not confirm.
                if self.has_disk() {
                    self.send(PeerMsg::BarrierAck { nr });
                }
                self.check_barriers();
            }
            Op::RsWrite { range } => {
                self.release(id);
                let len = range.1 - range.0;
                let ok = result.is_ok();
                if ok {
                    self.dw += len;
                    self.bitmap.clear_range(range.0, len);
                } else {
                    self.local_error("resync-write", range.0);
                }
                let mut persist = false;
                if let Some(s) = self.sync.as_mut().filter(|s| !s.source) {
                    s.inflight.remove(&range.0);
                    if ok {
                        s.bytes_done += len;
                    }
                    // A crash mid-sync restarts from the last persisted bitmap:
                    // persist every RS_PERSIST_BYTES so it never redoes much.
                    if s.bytes_done - s.persisted_bytes >= RS_PERSIST_BYTES {
                        s.persisted_bytes = s.bytes_done;
                        persist = true;
                    }
                }
                if persist {
                    self.persist_sync_progress();
                }
                self.rs_pump(now);
            }
            Op::RsRead {
                range,
                digest: want,
            } => {
                let (offset, len) = (range.0, (range.1 - range.0) as u32);
                match result {
                    Ok(Some(data)) => {
                        self.dr += u64::from(len);
                        // The source's own bits: the target has (or will have)
                        // this content; its bitmap keeps the bit until written.
                        self.bitmap.clear_range(offset, u64::from(len));
                        if let Some(s) = self.sync.as_mut() {
                            s.bytes_done += u64::from(len);
                        }
                        if want.is_some_and(|d| d == digest(&data)) {
                            self.send(PeerMsg::RsInSync { offset, len });
                        } else {
                            self.send(PeerMsg::RsData { offset, data });
                        }
                    }
                    _ => {
                        self.local_error("resync-read", offset);
                        self.send(PeerMsg::RsNegAck { offset, len });
                    }
                }
                // Only now: a host write waiting for this range must send its
                // Data after our RsData, or the target would apply them in the
                // wrong order.
                self.release(id);
            }
            Op::CsumRead { range } => {
                let (offset, len) = (range.0, (range.1 - range.0) as u32);
                match result {
                    Ok(Some(data)) => {
                        self.dr += u64::from(len);
                        let digest = digest(&data);
                        self.send(PeerMsg::RsCsumRequest {
                            offset,
                            len,
                            digest,
                        });
                    }
                    // Cannot read our own copy: ask for the data itself.
                    _ => self.send(PeerMsg::RsRequest { offset, len }),
                }
            }
            Op::OvRead {
                range,
                reply_to_peer,
            } => self.ov_read_done(range, reply_to_peer, result),
            Op::PeerRead { id: rid } => match result {
                Ok(Some(data)) => {
                    self.dr += data.len() as u64;
                    self.send(PeerMsg::ReadReply { id: rid, data });
                }
                _ => {
                    self.local_error("read", 0);
                    self.send(PeerMsg::ReadError { id: rid });
                }
            },
            Op::SyncFlush { bitmap, consistent } => {
                if result.is_err() {
                    self.local_error("flush", 0);
                }
                self.sync_flush_pending = false;
                if self.has_disk() {
                    // The bitmap as of the flush: bits cleared by resync
                    // writes after it are not covered yet.
                    let usable = self.cfg.layout.usable_bytes;
                    for (at, page) in bitmap.encode_pages(&self.cfg.layout, 0, usable) {
                        self.meta_write(at, page);
                    }
                    if consistent && self.consistent_after_flush {
                        self.consistent_after_flush = false;
                        self.set_disk_good();
                    }
                    self.write_md();
                }
                if std::mem::take(&mut self.sync_flush_again) {
                    self.persist_sync_progress();
                }
            }
        }
    }

    fn set_host_error(&mut self, host: HostId) {
        if let Some(req) = self.hosts.get_mut(&host) {
            req.error = Some(IoError::Io);
        }
    }

    fn host_write_done(&mut self, id: DiskId, host: HostId, range: (u64, u64), result: IoResult) {
        self.release(id);
        match result {
            Ok(_) => self.dw += range.1 - range.0,
            Err(_) => {
                // Detached, only an UpToDate peer's copy can complete it.
                let detached = self.local_error("write", range.0) && self.peer_has_good_data();
                let Some(req) = self.hosts.get_mut(&host) else {
                    return;
                };
                req.local_failed = true;
                // Only the peer's copy can complete it: it must be written
                // there (protocol C semantics), else the host gets EIO.
                match req.seq.and_then(|s| self.sent.get_mut(&s)) {
                    Some(entry) if detached => entry.2 = true,
                    _ if detached && req.seq.is_some() => {}
                    _ => req.error = Some(IoError::Io),
                }
            }
        }
        if let Some(req) = self.hosts.get_mut(&host) {
            req.local = false;
        }
        self.try_complete(host);
    }

    fn host_read_done(&mut self, host: HostId, result: IoResult) {
        let Some(req) = self.hosts.get_mut(&host) else {
            return;
        };
        req.local = false;
        let HostKind::Read { offset, len } = req.kind else {
            return;
        };
        match result {
            Ok(data) => {
                self.dr += u64::from(len);
                req.data = data;
            }
            Err(_) => {
                if !(self.local_error("read", offset) && self.read_through_peer(host, offset, len))
                {
                    self.set_host_error(host);
                }
            }
        }
        self.try_complete(host);
    }

    /// Secondary: acknowledge barriers whose writes are all done locally,
    /// after a flush that started once they were.
    ///
    /// One barrier flush runs at a time; barriers that become ready meanwhile
    /// share the next one, acknowledged by the highest number (a `BarrierAck`
    /// covers every earlier epoch). Why: a flush of a page cache full of dirty
    /// data (just after a full sync) takes long on a real disk, and one flush
    /// per barrier (every `EPOCH_WRITES_MAX` writes) tied up every disk worker
    /// in fdatasync while the replicated writes, and so every protocol C
    /// acknowledgement, queued behind them. Later writes never wait for a
    /// barrier's flush, as in DRBD.
    fn check_barriers(&mut self) {
        while let Some(&(nr, last)) = self.barrier_wait.front() {
            if self.peer_inflight.first().is_some_and(|&s| s <= last) {
                break;
            }
            self.barrier_wait.pop_front();
            if self.has_disk() {
                self.barrier_ready = Some(nr);
            } else {
                self.send(PeerMsg::BarrierAck { nr });
            }
        }
        if !self.has_disk() {
            // Lost the disk before flushing: as when the flush fails, no ack
            // (the Primary marks what we did not confirm).
            self.barrier_ready = None;
        } else if !self.barrier_flushing {
            if let Some(nr) = self.barrier_ready.take() {
                self.barrier_flushing = true;
                self.disk(DiskIo::Flush, Op::BarrierFlush { nr });
            }
        }
    }
}

// ---- connection and handshake -------------------------------------------
impl Replica {
    /// The replication connection is up and authenticated.
    pub fn handle_peer_up(&mut self, now: Instant) {
        self.clock = self.clock.max(now);
        if self.cstate == ConnState::StandAlone {
            // We were told to stay alone; the shell raced us.
            self.push(Action::Disconnect);
            return;
        }
        if self.link_up {
            // A new connection replaces one we never saw break.
            self.teardown();
        }
        self.link_up = true;
        self.last_rx = now;
        self.last_tx = now;
        self.ping_sent = None;
        self.set_cstate(ConnState::WFReportParams);
        self.report_params();
    }

    /// The connection broke (or could not be made).
    pub fn handle_peer_down(&mut self, now: Instant) {
        self.clock = self.clock.max(now);
        let _ = now;
        if !self.link_up {
            return;
        }
        self.teardown();
        if self.cstate != ConnState::StandAlone {
            self.set_cstate(ConnState::Unconnected);
            self.push(Action::Connect);
            self.set_cstate(ConnState::WFConnection);
        }
    }

    /// Forgets the connection: pending peer work is failed or marked out of
    /// sync, resync progress persisted, a Primary starts a new data generation.
    fn teardown(&mut self) {
        self.link_up = false;
        self.ping_sent = None;
        self.fail_peer_pending();
        self.barrier_wait.clear();
        // A running barrier flush still completes (and clears the flag).
        self.barrier_ready = None;
        if let Some(s) = self.sync.take() {
            self.note(
                "resync_interrupted",
                format!("source={} left_kib={}", s.source, self.bitmap.count() * 4),
            );
            self.persist_sync_progress();
        }
        self.verify = None;
        self.lost_peer();
        self.peer = None;
        self.set_peer_role(Role::Unknown);
        self.set_peer_dstate(DiskState::DUnknown);
    }

    /// Cleared bits reach the disk only after the data they stand for: flush,
    /// then write the bitmap and superblock (see `Op::SyncFlush`).
    fn persist_sync_progress(&mut self) {
        if !self.has_disk() {
            return;
        }
        if self.sync_flush_pending {
            self.sync_flush_again = true;
            return;
        }
        self.sync_flush_pending = true;
        let op = Op::SyncFlush {
            bitmap: Box::new(self.bitmap.clone()),
            consistent: self.consistent_after_flush,
        };
        self.disk(DiskIo::Flush, op);
    }

    /// Ends the connection on our side and stays StandAlone.
    fn go_standalone(&mut self) {
        self.push(Action::Disconnect);
        if self.link_up {
            self.teardown();
        }
        self.set_cstate(ConnState::StandAlone);
    }

    pub fn handle_peer_msg(&mut self, now: Instant, msg: PeerMsg) {
        self.clock = self.clock.max(now);
        if !self.link_up {
            return;
        }
        self.last_rx = now;
        self.ping_sent = None;
        if let Some((offset, len)) = Self::range_of(&msg) {
            let usable = self.cfg.layout.usable_bytes;
            let fits =
                len <= MAX_IO_BYTES as u64 && offset.checked_add(len).is_some_and(|e| e <= usable);
            if !fits {
                // The peer's ranges index our disk: never trust one blindly.
                self.note(
                    "protocol_error",
                    format!("msg=range offset={offset} len={len}"),
                );
                self.go_standalone_then_retry();
                return;
            }
        }
        match msg {
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
                let peer = PeerParams {
                    uuids,
                    flags: MdFlags::from_bits(md_flags),
                    dirty_blocks,
                };
                self.on_report_params(
                    now,
                    protocol,
                    usable_bytes,
                    role,
                    disk,
                    peer,
                    discard_my_data,
                );
            }
            PeerMsg::Data {
                seq,
                offset,
                data,
                fua,
            } => {
                self.nr += data.len() as u64;
                let len = data.len() as u64;
                let io = DiskIo::Write {
                    target: DiskTarget::Data,
                    offset,
                    data,
                    fua,
                };
                self.on_peer_write(seq, offset, len, io, fua);
            }
            PeerMsg::Zero {
                seq,
                offset,
                len,
                fua,
                discard,
            } => {
                let io = if discard {
                    DiskIo::Discard { offset, len, fua }
                } else {
                    DiskIo::WriteZeroes { offset, len, fua }
                };
                self.on_peer_write(seq, offset, u64::from(len), io, fua);
            }
            PeerMsg::RecvAck { seq } => self.on_ack(seq, false),
            PeerMsg::WriteAck { seq } => self.on_ack(seq, true),
            PeerMsg::NegAck { seq } => {
                // Protocol A keeps no ack entry: the transfer log knows the range.
                let unacked = self
                    .tl
                    .iter()
                    .find(|(_, s, _)| *s == seq)
                    .map(|(_, _, r)| *r);
                if let (None, Some(range)) = (self.sent.get(&seq), unacked) {
                    self.bitmap.set_range(range.0, range.1 - range.0);
                    self.write_bitmap_range(range.0, range.1 - range.0);
                }
                if let Some((host, range, _)) = self.sent.remove(&seq) {
                    self.bitmap.set_range(range.0, range.1 - range.0);
                    self.write_bitmap_range(range.0, range.1 - range.0);
                    let fence = self.meta_next;
                    if let Some(req) = self.hosts.get_mut(&host) {
                        req.peer = false;
                        req.meta_fence = req.meta_fence.max(fence);
                        if req.local_failed {
                            req.error = Some(IoError::Io);
                        }
                    }
                    self.try_complete(host);
                }
            }
            PeerMsg::Barrier { nr } => {
                self.barrier_wait.push_back((nr, self.last_peer_seq));
                self.check_barriers();
            }
            PeerMsg::BarrierAck { nr } => {
                self.tl.retain(|(e, _, _)| *e > nr);
                let done: Vec<u64> = self.barriers.range(..=nr).map(|(k, _)| *k).collect();
                for k in done {
                    for host in self.barriers.remove(&k).unwrap_or_default() {
                        if let Some(req) = self.hosts.get_mut(&host) {
                            req.peer = false;
                        }
                        self.try_complete(host);
                    }
                }
            }
            PeerMsg::Bitmap {
                first_word,
                words,
                last,
            } => self.on_bitmap(now, first_word, &words, last),
            PeerMsg::SyncUuid { uuid } => self.on_sync_uuid(now, uuid),
            PeerMsg::RsRequest { offset, len } => self.on_rs_request(offset, len, None),
            PeerMsg::RsCsumRequest {
                offset,
                len,
                digest,
            } => self.on_rs_request(offset, len, Some(digest)),
            PeerMsg::RsData { offset, data } => {
                self.nr += data.len() as u64;
                let expected = self
                    .sync
                    .as_ref()
                    .is_some_and(|s| !s.source && s.inflight.contains_key(&offset));
                if expected && self.has_disk() {
                    let range = (offset, offset + data.len() as u64);
                    self.acquire(range, Job::RsWrite { offset, data });
                } else if let Some(s) = self.sync.as_mut() {
                    s.inflight.remove(&offset);
                    self.rs_pump(now);
                }
            }
            PeerMsg::RsInSync { offset, len } => {
                if let Some(s) = self.sync.as_mut().filter(|s| !s.source) {
                    s.inflight.remove(&offset);
                    s.bytes_done += u64::from(len);
                    self.bitmap.clear_range(offset, u64::from(len));
                    self.rs_pump(now);
                }
            }
            PeerMsg::RsNegAck { offset, len } => {
                self.push(Action::Event(ReplEvent::IoError {
                    op: "peer-resync-read",
                    offset,
                }));
                let _ = len;
                // The source cannot give us this range: stop here; the bits
                // stay set and the next connection tries again.
                self.go_standalone_then_retry();
            }
            PeerMsg::OvRequest { offset, len } => self.on_ov_request(offset, len),
            PeerMsg::OvReply {
                offset,
                len,
                digest,
            } => self.on_ov_reply(offset, len, digest),
            PeerMsg::ReadRequest { id, offset, len } => {
                if self.has_disk() && Self::good_data(self.dstate) {
                    let io = DiskIo::Read {
                        target: DiskTarget::Data,
                        offset,
                        len,
                    };
                    self.disk(io, Op::PeerRead { id });
                } else {
                    self.send(PeerMsg::ReadError { id });
                }
            }
            PeerMsg::ReadReply { id, data } => {
                self.nr += data.len() as u64;
                if let Some(host) = self.peer_reads.remove(&id) {
                    if let Some(req) = self.hosts.get_mut(&host) {
                        req.peer = false;
                        req.data = Some(data);
                    }
                    self.try_complete(host);
                }
            }
            PeerMsg::ReadError { id } => {
                if let Some(host) = self.peer_reads.remove(&id) {
                    if let Some(req) = self.hosts.get_mut(&host) {
                        req.peer = false;
                        req.error = Some(IoError::Io);
                    }
                    self.try_complete(host);
                }
            }
            PeerMsg::State { role, disk } => self.on_state(now, role, disk),
            PeerMsg::Uuids { uuids } => {
                if let Some(p) = self.peer.as_mut() {
                    p.uuids = uuids;
                }
                if !self.has_disk() {
                    self.ed_uuid = uuids.current;
                }
            }
            PeerMsg::Ping => self.send(PeerMsg::PingAck),
            PeerMsg::PingAck => {}
        }
    }

    /// The data range a message addresses, for validation.
    fn range_of(msg: &PeerMsg) -> Option<(u64, u64)> {
        match msg {
            PeerMsg::Data { offset, data, .. } | PeerMsg::RsData { offset, data } => {
                Some((*offset, data.len() as u64))
            }
            PeerMsg::Zero { offset, len, .. }
            | PeerMsg::RsRequest { offset, len }
            | PeerMsg::RsCsumRequest { offset, len, .. }
            | PeerMsg::RsInSync { offset, len }
            | PeerMsg::RsNegAck { offset, len }
            | PeerMsg::OvRequest { offset, len }
            | PeerMsg::OvReply { offset, len, .. }
            | PeerMsg::ReadRequest { offset, len, .. } => Some((*offset, u64::from(*len))),
            _ => None,
        }
    }

    /// Drops the connection and asks for a new one (the peer is alive but this
    /// connection cannot go on).
    fn go_standalone_then_retry(&mut self) {
        self.push(Action::Disconnect);
        self.teardown();
        self.set_cstate(ConnState::Unconnected);
        self.push(Action::Connect);
        self.set_cstate(ConnState::WFConnection);
    }

    fn on_ack(&mut self, seq: Seq, write: bool) {
        let Some(&(host, _, need_write)) = self.sent.get(&seq) else {
            return;
        };
        if need_write && !write {
            return;
        }
        self.sent.remove(&seq);
        if let Some(req) = self.hosts.get_mut(&host) {
            req.peer = false;
        }
        self.try_complete(host);
    }

    fn on_peer_write(&mut self, seq: Seq, offset: u64, len: u64, io: DiskIo, fua: bool) {
        self.last_peer_seq = seq;
        if self.role == Role::Primary {
            // Two Primaries: refuse to apply (it would race our own writes).
            self.send(PeerMsg::NegAck { seq });
            return;
        }
        if self.cfg.protocol == Protocol::B {
            self.send(PeerMsg::RecvAck { seq });
        }
        let write_ack = self.cfg.protocol == Protocol::C || fua;
        if self.peer_dstate == DiskState::Diskless {
            // A Diskless Primary writes through us: its old disk will need
            // these blocks when it comes back.
            self.bitmap.set_range(offset, len);
            self.write_bitmap_range(offset, len);
        }
        self.peer_inflight.insert(seq);
        self.acquire(
            (offset, offset + len),
            Job::Peer {
                seq,
                offset,
                io,
                len,
                write_ack,
            },
        );
    }

    fn on_state(&mut self, now: Instant, role: Role, disk: DiskState) {
        let was = self.peer_dstate;
        if matches!(self.cstate, ConnState::VerifyT) {
            self.set_cstate(ConnState::Connected);
        }
        self.set_peer_role(role);
        self.set_peer_dstate(disk);
        if role == Role::Primary && self.role == Role::Primary {
            // Both promoted at once while connected: never two writers.
            self.note("handshake_refused", "reason=two_primaries".into());
            self.go_standalone();
            return;
        }
        if disk == DiskState::Diskless && self.sync.take().is_some() {
            self.note("resync_abort", "reason=peer_detached".into());
            self.set_cstate(ConnState::Connected);
        }
        if disk == DiskState::Diskless && was != DiskState::Diskless {
            // It cannot confirm writes any more: mark what it did not. Its
            // old disk may come back later: start a new data generation so
            // the next handshake sees that this copy moved on.
            self.fail_peer_pending();
            if self.role == Role::Primary {
                self.lost_peer();
            } else if self.has_disk()
                && self.md.uuids.bitmap == 0
                && self.dstate == DiskState::UpToDate
            {
                // A Diskless Primary writes through us from now on.
                self.new_current_uuid();
                self.write_md();
                let uuids = self.md.uuids;
                self.send(PeerMsg::Uuids { uuids });
            }
        }
        if disk == DiskState::UpToDate && self.sync.as_ref().is_some_and(|s| s.source) {
            self.finish_sync_source(now);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_report_params(
        &mut self,
        now: Instant,
        protocol: Protocol,
        usable_bytes: u64,
        role: Role,
        disk: DiskState,
        peer: PeerParams,
        peer_discard: bool,
    ) {
        let handshake = self.cstate == ConnState::WFReportParams;
        let renegotiate = self.cstate == ConnState::Connected;
        self.peer = Some(peer);
        self.set_peer_role(role);
        if !handshake && !renegotiate {
            self.set_peer_dstate(disk);
            return;
        }
        if usable_bytes != self.cfg.layout.usable_bytes || protocol != self.cfg.protocol {
            self.note(
                "handshake_refused",
                format!(
                    "reason=mismatch size={} peer_size={} protocol={} peer_protocol={}",
                    self.cfg.layout.usable_bytes, usable_bytes, self.cfg.protocol, protocol
                ),
            );
            self.go_standalone();
            return;
        }
        if renegotiate {
            self.report_params();
        }
        self.set_peer_dstate(disk);
        let both_primary = role == Role::Primary && self.role == Role::Primary;
        let decision = self.decide(&peer, disk, role, peer_discard);
        self.discard_my_data = false;
        // Both Primary: diverged data is a split brain, which `decide` already
        // reported (after-sb-2pri, the handler) and, when the policy resolved
        // it, the victim demoted itself. Anything else would be two writers.
        if both_primary && matches!(decision, Some(SyncDecision::NoSync)) {
            self.note("handshake_refused", "reason=two_primaries".into());
            self.go_standalone();
            return;
        }
        match decision {
            None => {}
            Some(SyncDecision::NoSync) => self.connected_in_sync(),
            Some(SyncDecision::Source { full }) => self.start_sync(now, true, full),
            Some(SyncDecision::Target { full }) => self.start_sync(now, false, full),
            Some(SyncDecision::SplitBrain | SyncDecision::Unrelated) => {
                unreachable!("decide resolves these")
            }
        }
    }

    /// DRBD's uuid comparison (md::compare, with its disk-state override),
    /// split brain through the after-sb policies, and the engine's own
    /// refusals (a Primary never becomes SyncTarget, an inconsistent side
    /// never SyncSource). None: the connection was dropped.
    fn decide(
        &mut self,
        peer: &PeerParams,
        peer_disk: DiskState,
        peer_role: Role,
        peer_discard: bool,
    ) -> Option<SyncDecision> {
        if !self.has_disk() || peer_disk == DiskState::Diskless {
            // A Diskless Primary may only expose the data it exposed before
            // (DRBD: "Can only connect to data with current UUID"); the side
            // with the data just connects, the Diskless side refuses.
            let same = (self.ed_uuid ^ peer.uuids.current) & !1 == 0;
            if !self.has_disk() && self.role == Role::Primary && !same {
                return self.refuse("diskless_primary_data_generation_differs");
            }
            return Some(SyncDecision::NoSync);
        }
        let local = UuidView {
            uuids: self.md.uuids,
            flags: self.md.flags,
            dirty_blocks: self.reported_dirty,
        };
        let remote = UuidView {
            uuids: peer.uuids,
            flags: peer.flags,
            dirty_blocks: peer.dirty_blocks,
        };
        let cmp = md::compare(&local, &remote, self.cfg.lower_node);
        self.note(
            "sync_decision",
            format!(
                "rule={} decision={:?} by_disk_state={}",
                cmp.rule, cmp.decision, cmp.by_disk_state
            ),
        );
        if let Some(fixed) = cmp.fixed_local {
            self.md.uuids = fixed;
            self.write_md();
        }
        let d = match cmp.decision {
            SyncDecision::Unrelated => return self.refuse("unrelated_data"),
            SyncDecision::SplitBrain => {
                return self.split_brain(&local, &remote, peer_role, peer_discard)
            }
            d => d,
        };
        match d {
            SyncDecision::Source { .. } if !self.md.flags.consistent => {
                self.refuse("inconsistent_would_be_sync_source")
            }
            SyncDecision::Target { .. } if self.role == Role::Primary => {
                self.refuse("primary_would_be_sync_target")
            }
            SyncDecision::Source { .. } if peer_role == Role::Primary => {
                self.refuse("primary_peer_would_be_sync_target")
            }
            other => Some(other),
        }
    }

    fn refuse(&mut self, reason: &str) -> Option<SyncDecision> {
        self.note("handshake_refused", format!("reason={reason}"));
        self.go_standalone();
        None
    }

    fn connected_in_sync(&mut self) {
        self.set_cstate(ConnState::Connected);
        let mut changed = false;
        if Self::good_data(self.dstate) && Self::good_data(self.peer_dstate) {
            self.set_dstate(DiskState::UpToDate);
            if !self.md.flags.was_up_to_date || !self.md.flags.consistent {
                self.set_disk_good();
                changed = true;
            }
            if self.bitmap.count() > 0 {
                // Same generation on both sides: stale bits would only cause
                // a needless resync later.
                self.bitmap.clear_range(0, self.cfg.layout.usable_bytes);
                self.write_bitmap_all();
            }
        }
        if self.role == Role::Secondary && self.md.flags.primary_ind {
            self.md.flags.primary_ind = false;
            changed = true;
        }
        if changed {
            self.write_md();
        }
        self.send_state();
    }
}

// ---- split brain --------------------------------------------------------
impl Replica {
    /// Both sides changed the data: the split-brain handler runs, then
    /// `--discard-my-data` or the after-sb policies (md's verdicts) pick the
    /// side whose changes are thrown away. A Primary victim demotes first
    /// (or, busy, runs `pri-lost-after-sb` and disconnects). None: not
    /// resolved, both sides stay StandAlone.
    fn split_brain(
        &mut self,
        local: &UuidView,
        remote: &UuidView,
        peer_role: Role,
        peer_discard: bool,
    ) -> Option<SyncDecision> {
        self.push(Action::RunHandler("split-brain"));
        let lower = self.cfg.lower_node;
        let (p0, p1, p2) = (
            self.cfg.after_sb_0pri,
            self.cfg.after_sb_1pri,
            self.cfg.after_sb_2pri,
        );
        let me_primary = self.role == Role::Primary;
        let primaries = usize::from(me_primary) + usize::from(peer_role == Role::Primary);
        let (policy, verdict) = match md::manual_resolution(self.discard_my_data, peer_discard) {
            Some(d) => ("discard-my-data", Some(d)),
            None => match primaries {
                0 => (sb0_name(p0), md::after_sb_0pri(p0, local, remote, lower)),
                1 => (
                    sb1_name(p1),
                    md::after_sb_1pri(p1, p0, me_primary, local, remote, lower),
                ),
                _ => (
                    sb2_name(p2),
                    md::after_sb_2pri(p2, p0, local, remote, lower),
                ),
            },
        };
        let Some(discard) = verdict else {
            self.push(Action::Event(ReplEvent::SplitBrain {
                policy,
                resolved: "disconnect",
            }));
            self.go_standalone();
            return None;
        };
        if discard == Discard::Local && me_primary {
            if !self.hosts.is_empty() {
                self.push(Action::RunHandler("pri-lost-after-sb"));
                self.push(Action::Event(ReplEvent::SplitBrain {
                    policy,
                    resolved: "disconnect",
                }));
                self.go_standalone();
                return None;
            }
            self.set_role(Role::Secondary);
            self.md.uuids.demote();
            self.md.flags.primary_ind = false;
            self.send_state();
        }
        let resolved = match discard {
            Discard::Local => "discard-local",
            Discard::Peer => "discard-peer",
        };
        self.push(Action::Event(ReplEvent::SplitBrain { policy, resolved }));
        Some(md::resolved_decision(discard, local, remote))
    }
}

fn sb0_name(p: AfterSb0) -> &'static str {
    match p {
        AfterSb0::Disconnect => "disconnect",
        AfterSb0::DiscardYoungerPrimary => "discard-younger-primary",
        AfterSb0::DiscardOlderPrimary => "discard-older-primary",
        AfterSb0::DiscardZeroChanges => "discard-zero-changes",
        AfterSb0::DiscardLeastChanges => "discard-least-changes",
        AfterSb0::DiscardNode(_) => "discard-node",
    }
}

fn sb1_name(p: AfterSb1) -> &'static str {
    match p {
        AfterSb1::Disconnect => "disconnect",
        AfterSb1::Consensus => "consensus",
        AfterSb1::ViolentlyAs0p => "violently-as0p",
        AfterSb1::DiscardSecondary => "discard-secondary",
        AfterSb1::CallPeerPrimaryLostAfterSb => "call-pri-lost-after-sb",
    }
}

fn sb2_name(p: AfterSb2) -> &'static str {
    match p {
        AfterSb2::Disconnect => "disconnect",
        AfterSb2::ViolentlyAs0p => "violently-as0p",
        AfterSb2::CallPeerPrimaryLostAfterSb => "call-pri-lost-after-sb",
    }
}

// ---- resync -------------------------------------------------------------
impl Replica {
    fn start_sync(&mut self, now: Instant, source: bool, full: bool) {
        if full {
            self.bitmap.set_all();
        }
        if source {
            self.set_dstate(DiskState::UpToDate);
            self.set_peer_dstate(DiskState::Inconsistent);
        } else {
            self.set_dstate(DiskState::Inconsistent);
            self.set_peer_dstate(DiskState::UpToDate);
            self.md.flags.consistent = false;
            // A flush still pending from an earlier sync must not mark this one done.
            self.consistent_after_flush = false;
            self.write_md();
        }
        self.write_bitmap_all();
        self.sync = Some(Resync {
            source,
            full,
            started: now,
            total_blocks: 0,
            peer_bitmap_done: false,
            running: false,
            cursor: 0,
            inflight: BTreeMap::new(),
            tokens: RS_CHUNK_BYTES,
            refilled: now,
            wake_at: None,
            bytes_done: 0,
            persisted_bytes: 0,
        });
        self.set_cstate(if source {
            ConnState::WFBitMapS
        } else {
            ConnState::WFBitMapT
        });
        let words = self.bitmap.words().to_vec();
        let chunks: Vec<&[u64]> = words.chunks(BITMAP_WORDS_MAX).collect();
        if chunks.is_empty() {
            self.send(PeerMsg::Bitmap {
                first_word: 0,
                words: Vec::new(),
                last: true,
            });
        }
        for (i, chunk) in chunks.iter().enumerate() {
            let msg = PeerMsg::Bitmap {
                first_word: (i * BITMAP_WORDS_MAX) as u64,
                words: chunk.to_vec(),
                last: i + 1 == chunks.len(),
            };
            self.send(msg);
        }
    }

    fn on_bitmap(&mut self, now: Instant, first_word: u64, words: &[u64], last: bool) {
        let waiting = self.sync.as_ref().is_some_and(|s| !s.peer_bitmap_done);
        let fits = (first_word as usize).saturating_add(words.len()) <= self.bitmap.words().len();
        if !waiting || !fits {
            self.note(
                "protocol_error",
                format!("msg=bitmap first_word={first_word}"),
            );
            self.go_standalone_then_retry();
            return;
        }
        self.bitmap.merge_words(first_word as usize, words);
        if !last {
            return;
        }
        let total = self.bitmap.count();
        let s = self.sync.as_mut().expect("checked above");
        s.peer_bitmap_done = true;
        s.total_blocks = total;
        let (source, full) = (s.source, s.full);
        self.sync_total_bytes = total * BLOCK_BYTES;
        self.write_bitmap_all();
        self.push(Action::Event(ReplEvent::SyncStart {
            source,
            full,
            kib: total * BLOCK_BYTES / 1024,
        }));
        if source {
            // DRBD's drbd_gen_and_send_sync_uuid: the target takes this as its
            // current uuid, so an interrupted sync resumes bitmap-based.
            let fresh = self.random_uuid();
            let uuid = self.md.uuids.start_sync_source(fresh);
            self.write_md();
            self.send(PeerMsg::SyncUuid { uuid });
            self.set_cstate(ConnState::SyncSource);
        } else {
            self.set_cstate(ConnState::WFSyncUUID);
        }
        let _ = now;
    }

    fn on_sync_uuid(&mut self, now: Instant, uuid: u64) {
        if self.cstate != ConnState::WFSyncUUID {
            self.note("protocol_error", "msg=sync_uuid".into());
            return;
        }
        self.md.uuids.start_sync_target(uuid);
        self.write_md();
        self.set_cstate(ConnState::SyncTarget);
        if let Some(s) = self.sync.as_mut() {
            s.running = true;
            s.refilled = now;
        }
        self.rs_pump(now);
    }

    fn on_rs_request(&mut self, offset: u64, len: u32, digest: Option<[u8; 32]>) {
        let end = offset.checked_add(u64::from(len));
        let valid = self.cstate == ConnState::SyncSource
            && len > 0
            && len as usize <= MAX_IO_BYTES
            && end.is_some_and(|e| e <= self.cfg.layout.usable_bytes);
        if !valid {
            self.send(PeerMsg::RsNegAck { offset, len });
            return;
        }
        self.acquire(
            (offset, offset + u64::from(len)),
            Job::RsRead {
                offset,
                len,
                digest,
            },
        );
    }

    /// SyncTarget: keep up to RS_MAX_IN_FLIGHT requests going, within the rate.
    fn rs_pump(&mut self, now: Instant) {
        let rate = self.cfg.resync_rate;
        let csums = self.cfg.csums;
        let blocks = self.bitmap.blocks();
        let Some(s) = self.sync.as_mut().filter(|s| !s.source && s.running) else {
            return;
        };
        if rate > 0 {
            let elapsed = now.saturating_since(s.refilled).millis();
            let cap = RS_CHUNK_BYTES.max(rate / 10);
            s.tokens = (s.tokens + rate.saturating_mul(elapsed) / 1000).min(cap);
            s.refilled = now;
        }
        s.wake_at = None;
        let mut requests = Vec::new();
        let mut restarted = false;
        while s.inflight.len() < RS_MAX_IN_FLIGHT {
            let Some(b) = self.bitmap.next_set(s.cursor) else {
                // Bits set behind the cursor (a failed write): go round once more.
                if s.inflight.is_empty() && !restarted && self.bitmap.count() > 0 && s.cursor > 0 {
                    s.cursor = 0;
                    restarted = true;
                    continue;
                }
                break;
            };
            let chunk = if csums {
                RS_CSUM_CHUNK_BYTES
            } else {
                RS_CHUNK_BYTES
            };
            let mut n = 1;
            while n < chunk / BLOCK_BYTES && b + n < blocks && self.bitmap.is_set(b + n) {
                n += 1;
            }
            let (offset, len) = (b * BLOCK_BYTES, n * BLOCK_BYTES);
            if rate > 0 && s.tokens < len {
                let ms = ((len - s.tokens) * 1000).div_ceil(rate).max(1);
                s.wake_at = Some(now + Duration::from_millis(ms));
                break;
            }
            s.tokens = s.tokens.saturating_sub(len);
            s.inflight.insert(offset, len as u32);
            s.cursor = b + n;
            requests.push((offset, len as u32));
        }
        let finished = s.inflight.is_empty() && self.bitmap.count() == 0;
        for (offset, len) in requests {
            if csums {
                let io = DiskIo::Read {
                    target: DiskTarget::Data,
                    offset,
                    len,
                };
                self.disk(
                    io,
                    Op::CsumRead {
                        range: (offset, offset + u64::from(len)),
                    },
                );
            } else {
                self.send(PeerMsg::RsRequest { offset, len });
            }
        }
        if finished {
            self.finish_sync_target(now);
        }
    }

    fn sync_done_event(&mut self, now: Instant) {
        if let Some(s) = self.sync.take() {
            let ms = now.saturating_since(s.started).millis();
            let kib = s.total_blocks * BLOCK_BYTES / 1024;
            self.sync_rate = (s.total_blocks * BLOCK_BYTES * 1000)
                .checked_div(ms)
                .unwrap_or(0);
            self.push(Action::Event(ReplEvent::SyncDone { kib, ms }));
        }
    }

    fn finish_sync_target(&mut self, now: Instant) {
        self.sync_done_event(now);
        let source = self.peer.map(|p| p.uuids).unwrap_or_default();
        self.md.uuids.sync_finished_target(&source);
        if self.role == Role::Secondary {
            self.md.flags.primary_ind = false;
        }
        self.set_dstate(DiskState::UpToDate);
        self.set_cstate(ConnState::Connected);
        // Durable order: data flushed, then bitmap and superblock saying
        // consistent (SyncFlush); until then the superblock says inconsistent.
        self.consistent_after_flush = true;
        self.write_md();
        self.persist_sync_progress();
        self.send_state();
    }

    fn finish_sync_source(&mut self, now: Instant) {
        self.sync_done_event(now);
        self.md.uuids.sync_finished_source();
        if self.role == Role::Secondary {
            self.md.flags.primary_ind = false;
        }
        self.set_cstate(ConnState::Connected);
        self.write_bitmap_all();
        self.write_md();
    }
}

// ---- online verify ------------------------------------------------------
impl Replica {
    fn verify_pump(&mut self) {
        let usable = self.cfg.layout.usable_bytes;
        let Some(v) = self.verify.as_mut() else {
            return;
        };
        let mut reqs = Vec::new();
        while v.inflight < RS_MAX_IN_FLIGHT && v.cursor < usable {
            let len = RS_CSUM_CHUNK_BYTES.min(usable - v.cursor);
            reqs.push((v.cursor, len as u32));
            v.cursor += len;
            v.inflight += 1;
        }
        let done = v.inflight == 0 && v.cursor >= usable;
        let found = v.found;
        for (offset, len) in reqs {
            self.send(PeerMsg::OvRequest { offset, len });
            let io = DiskIo::Read {
                target: DiskTarget::Data,
                offset,
                len,
            };
            self.disk(
                io,
                Op::OvRead {
                    range: (offset, offset + u64::from(len)),
                    reply_to_peer: false,
                },
            );
        }
        if done {
            self.verify = None;
            self.push(Action::Event(ReplEvent::Note {
                name: "verify_done",
                detail: format!("out_of_sync_kib={}", found * BLOCK_BYTES / 1024),
            }));
            self.write_bitmap_all();
            self.set_cstate(ConnState::Connected);
            self.send_state();
        }
    }

    fn on_ov_request(&mut self, offset: u64, len: u32) {
        if self.cstate == ConnState::Connected {
            self.set_cstate(ConnState::VerifyT);
        }
        let in_range = offset
            .checked_add(u64::from(len))
            .is_some_and(|e| e <= self.cfg.layout.usable_bytes);
        if !self.has_disk() || !in_range || len as usize > MAX_IO_BYTES {
            // A digest of nothing never matches: the range is marked.
            self.send(PeerMsg::OvReply {
                offset,
                len,
                digest: [0; 32],
            });
            return;
        }
        let io = DiskIo::Read {
            target: DiskTarget::Data,
            offset,
            len,
        };
        self.disk(
            io,
            Op::OvRead {
                range: (offset, offset + u64::from(len)),
                reply_to_peer: true,
            },
        );
    }

    fn ov_read_done(&mut self, range: (u64, u64), reply_to_peer: bool, result: IoResult) {
        let (offset, len) = (range.0, (range.1 - range.0) as u32);
        let d = match result {
            Ok(Some(data)) => {
                self.dr += data.len() as u64;
                digest(&data)
            }
            _ => {
                self.local_error("verify-read", offset);
                [0xFF; 32]
            }
        };
        if reply_to_peer {
            self.send(PeerMsg::OvReply {
                offset,
                len,
                digest: d,
            });
            return;
        }
        if let Some(v) = self.verify.as_mut() {
            v.mine.insert(offset, d);
        }
        self.ov_compare(offset, len);
    }

    fn on_ov_reply(&mut self, offset: u64, len: u32, d: [u8; 32]) {
        if let Some(v) = self.verify.as_mut() {
            v.theirs.insert(offset, d);
        }
        self.ov_compare(offset, len);
    }

    fn ov_compare(&mut self, offset: u64, len: u32) {
        let Some(v) = self.verify.as_mut() else {
            return;
        };
        let (Some(a), Some(b)) = (v.mine.get(&offset).copied(), v.theirs.get(&offset).copied())
        else {
            return;
        };
        v.mine.remove(&offset);
        v.theirs.remove(&offset);
        v.inflight -= 1;
        if a != b {
            v.found += u64::from(len) / BLOCK_BYTES;
            self.bitmap.set_range(offset, u64::from(len));
            self.push(Action::Event(ReplEvent::Note {
                name: "verify_out_of_sync",
                detail: format!("offset={offset} len={len}"),
            }));
        }
        self.verify_pump();
    }
}

// ---- commands, time, outputs --------------------------------------------
impl Replica {
    /// A host request from the NBD server. Completed later by Action::HostDone.
    pub fn handle_host(&mut self, now: Instant, id: HostId, io: HostIo) {
        self.clock = self.clock.max(now);
        let _ = now;
        let usable = self.cfg.layout.usable_bytes;
        let range_ok = |offset: u64, len: u64| {
            len as usize <= MAX_IO_BYTES && offset.checked_add(len).is_some_and(|e| e <= usable)
        };
        if self.hosts.contains_key(&id) {
            self.push(Action::HostDone {
                id,
                result: Err(IoError::Invalid),
            });
            return;
        }
        match io {
            HostIo::Read { offset, len } if range_ok(offset, u64::from(len)) => {
                if len == 0 {
                    self.push(Action::HostDone {
                        id,
                        result: Ok(Some(Arc::new(Vec::new()))),
                    });
                } else {
                    self.host_read(id, offset, len);
                }
            }
            HostIo::Write { offset, data, fua } if range_ok(offset, data.len() as u64) => {
                let len = data.len() as u32;
                if len == 0 {
                    self.push(Action::HostDone {
                        id,
                        result: Ok(None),
                    });
                } else {
                    self.host_write(id, offset, len, Some(data), fua, false);
                }
            }
            HostIo::Trim { offset, len, fua } if range_ok(offset, u64::from(len)) => {
                self.host_write(id, offset, len, None, fua, true)
            }
            HostIo::WriteZeroes { offset, len, fua } if range_ok(offset, u64::from(len)) => {
                self.host_write(id, offset, len, None, fua, false)
            }
            HostIo::Flush => self.host_flush(id),
            _ => self.push(Action::HostDone {
                id,
                result: Err(IoError::Invalid),
            }),
        }
    }

    pub fn handle_command(&mut self, now: Instant, cmd: Command) -> Result<(), Refused> {
        self.clock = self.clock.max(now);
        let _ = now;
        match cmd {
            Command::Primary { force } => self.cmd_primary(force),
            Command::Secondary => {
                if self.role != Role::Primary {
                    return Ok(());
                }
                if !self.hosts.is_empty() {
                    return Err(Refused(format!(
                        "{} host requests in flight; retry when they complete",
                        self.hosts.len()
                    )));
                }
                self.set_role(Role::Secondary);
                self.md.uuids.demote();
                self.md.flags.primary_ind = false;
                self.write_md();
                self.send_state();
                Ok(())
            }
            Command::Connect { discard_my_data } => {
                self.discard_my_data = discard_my_data;
                if self.cstate == ConnState::StandAlone {
                    self.set_cstate(ConnState::Unconnected);
                    self.push(Action::Connect);
                    self.set_cstate(ConnState::WFConnection);
                }
                Ok(())
            }
            Command::Disconnect => {
                if self.cstate != ConnState::StandAlone {
                    self.set_cstate(ConnState::Disconnecting);
                    self.go_standalone();
                }
                Ok(())
            }
            Command::Invalidate => {
                if self.role == Role::Primary {
                    return Err(Refused("invalidate on a Primary: demote it first".into()));
                }
                if self.sync.is_some() || self.verify.is_some() {
                    return Err(Refused(format!("busy: {}", self.cstate)));
                }
                if !self.has_disk() {
                    return Err(Refused("no local disk".into()));
                }
                self.bitmap.set_all();
                self.write_bitmap_all();
                self.set_dstate(DiskState::Inconsistent);
                self.md.flags.consistent = false;
                self.write_md();
                self.renegotiate();
                Ok(())
            }
            Command::Verify => {
                if self.cstate != ConnState::Connected {
                    return Err(Refused(format!(
                        "verify needs a Connected resource (now {})",
                        self.cstate
                    )));
                }
                if !(self.has_disk()
                    && self.peer_dstate == DiskState::UpToDate
                    && self.dstate == DiskState::UpToDate)
                {
                    return Err(Refused("verify needs both disks UpToDate".into()));
                }
                self.set_cstate(ConnState::VerifyS);
                let v = Verify {
                    cursor: 0,
                    inflight: 0,
                    mine: BTreeMap::new(),
                    theirs: BTreeMap::new(),
                    found: 0,
                };
                self.verify = Some(v);
                self.verify_pump();
                Ok(())
            }
        }
    }

    /// Asks the peer to compare again (our uuids or disk changed while Connected).
    fn renegotiate(&mut self) {
        if self.cstate == ConnState::Connected && self.link_up {
            self.set_cstate(ConnState::WFReportParams);
            self.report_params();
        }
    }

    fn cmd_primary(&mut self, force: bool) -> Result<(), Refused> {
        if self.role == Role::Primary {
            return Ok(());
        }
        if self.link_up && self.peer_role == Role::Primary {
            return Err(Refused(
                "the peer is Primary (one Primary at a time)".into(),
            ));
        }
        let syncing_target = matches!(
            self.cstate,
            ConnState::SyncTarget
                | ConnState::WFBitMapT
                | ConnState::WFSyncUUID
                | ConnState::WFReportParams
        );
        let alone = !self.replicating();
        let diskless_ok =
            !self.has_disk() && self.replicating() && self.peer_dstate == DiskState::UpToDate;
        let good = self.dstate == DiskState::UpToDate
            || (alone && self.dstate == DiskState::Consistent)
            || diskless_ok;
        if !good && !force {
            return Err(Refused(format!(
                "disk is {}: not UpToDate (use --force to make this copy authoritative)",
                self.dstate
            )));
        }
        if syncing_target && !diskless_ok {
            return Err(Refused(format!(
                "connection is {}: wait for it to settle",
                self.cstate
            )));
        }
        if !self.has_disk() && !diskless_ok {
            return Err(Refused("no local disk and no UpToDate peer".into()));
        }
        self.set_role(Role::Primary);
        let forced = !good;
        if self.has_disk() {
            let fresh = self.random_uuid();
            // The peer sees our writes only when it is connected with a disk.
            let peer_sees = !alone && self.peer_dstate != DiskState::Diskless;
            if self.md.uuids.promote(fresh, peer_sees, forced) {
                self.note(
                    "new_current_uuid",
                    format!("uuid={:016x}", self.md.uuids.current),
                );
            }
            self.set_dstate(DiskState::UpToDate);
            self.set_disk_good();
            if forced {
                // --force: this copy is the data from now on, all of it.
                self.bitmap.set_all();
                self.write_bitmap_all();
            }
        }
        self.md.flags.primary_ind = true;
        self.write_md();
        if forced && self.cstate == ConnState::Connected {
            self.renegotiate();
        } else {
            self.send_state();
        }
        Ok(())
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.clock = self.clock.max(now);
        if self.link_up {
            if let Some(sent) = self.ping_sent {
                if now.saturating_since(sent) >= self.cfg.ping_timeout {
                    self.note(
                        "ping_timeout",
                        format!("silent_ms={}", now.saturating_since(self.last_rx).millis()),
                    );
                    self.push(Action::Disconnect);
                    self.set_cstate(ConnState::NetworkFailure);
                    self.teardown();
                    self.set_cstate(ConnState::Unconnected);
                    self.push(Action::Connect);
                    self.set_cstate(ConnState::WFConnection);
                    return;
                }
            } else if now.saturating_since(self.last_rx) >= self.cfg.ping_interval {
                self.ping_sent = Some(now);
                self.send(PeerMsg::Ping);
            }
        }
        if self
            .sync
            .as_ref()
            .and_then(|s| s.wake_at)
            .is_some_and(|t| t <= now)
        {
            self.rs_pump(now);
        }
        if self.link_up && self.epoch_opened.is_some_and(|t| t + EPOCH_AGE_MAX <= now) {
            self.send_barrier(None);
        }
    }

    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        let a = self.actions.pop_front();
        if matches!(a, Some(Action::Send(_))) {
            // Sending is what the peer's idle timer sees; ours counts from rx.
        }
        a
    }

    /// The next deadline: a ping to send or its answer to wait for, or the
    /// resync token bucket refilling.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let ping = if self.link_up {
            Some(match self.ping_sent {
                Some(sent) => sent + self.cfg.ping_timeout,
                None => self.last_rx + self.cfg.ping_interval,
            })
        } else {
            None
        };
        let rs = self.sync.as_ref().and_then(|s| s.wake_at);
        let epoch = if self.link_up {
            self.epoch_opened.map(|t| t + EPOCH_AGE_MAX)
        } else {
            None
        };
        [ping, rs, epoch].into_iter().flatten().min()
    }

    pub fn status(&self, now: Instant) -> Status {
        let (left, rate) = match &self.sync {
            Some(s) => {
                let ms = now.saturating_since(s.started).millis();
                let rate = (s.bytes_done * 1000).checked_div(ms).unwrap_or(0);
                (self.bitmap.count() * BLOCK_BYTES, rate)
            }
            None => (0, self.sync_rate),
        };
        Status {
            role: self.role,
            peer_role: self.peer_role,
            cstate: self.cstate,
            dstate: self.dstate,
            peer_dstate: self.peer_dstate,
            protocol: self.cfg.protocol,
            usable_bytes: self.cfg.layout.usable_bytes,
            out_of_sync_bytes: self.bitmap.count() * BLOCK_BYTES,
            sync_total_bytes: if self.sync.is_some() {
                self.sync_total_bytes
            } else {
                0
            },
            sync_left_bytes: left,
            sync_rate: rate,
            ns_kib: self.ns / 1024,
            nr_kib: self.nr / 1024,
            dw_kib: self.dw / 1024,
            dr_kib: self.dr / 1024,
            ap_pending: self.hosts.len() as u64,
        }
    }

    /// True when the node may be shut down without losing acknowledged data
    /// (nothing in flight to disk or peer).
    pub fn idle(&self) -> bool {
        self.hosts.is_empty()
            && self.ops.is_empty()
            && self.waiters.is_empty()
            && self.start_wait.is_empty()
            && self.sent.is_empty()
            && self.barriers.is_empty()
            && self.actions.is_empty()
    }

    /// Read-only views for tests, the simulation and the shell.
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn cstate(&self) -> ConnState {
        self.cstate
    }
    pub fn dstate(&self) -> DiskState {
        self.dstate
    }
    pub fn metadata(&self) -> &Metadata {
        &self.md
    }
    pub fn bitmap(&self) -> &Bitmap {
        &self.bitmap
    }
}

#[cfg(test)]
mod tests {
    //! Scenario tests on the simulation harness (`crate::sim::repl::Cluster`:
    //! two replicas, volatile-cache disks, one connection, virtual time),
    //! plus a few on a lone replica where the exact action order matters.
    use super::*;
    use crate::sim::repl::{block_of, sim_config, tag_of, Cluster, USABLE_BYTES};

    const A: usize = 0;
    const B: usize = 1;

    fn cluster(protocol: Protocol) -> Cluster {
        Cluster::new(7, sim_config(protocol, true))
    }

    fn write(c: &mut Cluster, node: usize, id: u64, block: u64, tag: u64) {
        let io = HostIo::Write {
            offset: block * BLOCK_BYTES,
            data: Arc::new(block_of(tag)),
            fua: false,
        };
        c.host(node, id, io);
    }

    #[track_caller]
    fn done_ok(c: &Cluster, node: usize, id: u64) {
        data_of(c, node, id);
    }

    /// The successful completion's data (None for writes and flushes).
    #[track_caller]
    fn data_of(c: &Cluster, node: usize, id: u64) -> Option<Payload> {
        match c.nodes[node].done(id) {
            Some(Ok(data)) => data.clone(),
            other => panic!("request {id} on {node}: {other:?}\n{}", c.trace_text()),
        }
    }

    fn tag_on(c: &Cluster, node: usize, block: u64) -> Option<u64> {
        tag_of(&c.nodes[node].data.read(block * BLOCK_BYTES, BLOCK_BYTES))
    }

    fn events(c: &Cluster, node: usize) -> Vec<ReplEvent> {
        c.nodes[node]
            .events
            .iter()
            .map(|(_, e)| e.clone())
            .collect()
    }

    fn lone(protocol: Protocol) -> Replica {
        let cfg = sim_config(protocol, true);
        let md = Metadata::created(USABLE_BYTES);
        Replica::new(cfg, md, Bitmap::new(USABLE_BYTES), Instant::ZERO)
    }

    fn drain(r: &mut Replica) -> Vec<Action> {
        std::iter::from_fn(|| r.poll_action()).collect()
    }

    /// Alone and forced Primary (its metadata writes not yet completed).
    fn lone_primary(t: Instant) -> Replica {
        let mut r = lone(Protocol::C);
        r.handle_command(t, Command::Primary { force: true })
            .unwrap();
        r
    }

    /// Completes metadata writes (and drops every other action) until none
    /// is left; returns the offsets written.
    fn settle_meta(r: &mut Replica, t: Instant) -> Vec<u64> {
        let mut written = Vec::new();
        loop {
            let metas: Vec<(DiskId, u64)> = drain(r).iter().filter_map(meta_write_of).collect();
            if metas.is_empty() {
                return written;
            }
            for (id, offset) in metas {
                written.push(offset);
                r.handle_disk_done(t, id, Ok(None));
            }
        }
    }

    /// The id and offset of a metadata write action.
    fn meta_write_of(a: &Action) -> Option<(DiskId, u64)> {
        match a {
            Action::Disk {
                id,
                io:
                    DiskIo::Write {
                        target: DiskTarget::Meta,
                        offset,
                        ..
                    },
            } => Some((*id, *offset)),
            _ => None,
        }
    }

    /// A one-block host write of `block_of(id)` at `offset`.
    fn host_write(r: &mut Replica, t: Instant, id: u64, offset: u64) {
        r.handle_host(
            t,
            HostId(id),
            HostIo::Write {
                offset,
                data: Arc::new(block_of(id)),
                fua: false,
            },
        );
    }

    // ---- roles and states ---------------------------------------------

    #[test]
    fn starts_secondary_standalone_and_asks_to_connect() {
        let mut r = lone(Protocol::C);
        let actions = drain(&mut r);
        let conn = actions
            .iter()
            .position(|a| *a == Action::Connect)
            .expect("asks to connect");
        let unconnected = Action::Event(ReplEvent::Conn {
            from: ConnState::StandAlone,
            to: ConnState::Unconnected,
        });
        let wf = Action::Event(ReplEvent::Conn {
            from: ConnState::Unconnected,
            to: ConnState::WFConnection,
        });
        assert!(actions.iter().position(|a| *a == unconnected).unwrap() < conn);
        assert!(actions.iter().position(|a| *a == wf).unwrap() > conn);
        let s = r.status(Instant::ZERO);
        assert_eq!(
            (s.role, s.cstate, s.dstate),
            (
                Role::Secondary,
                ConnState::WFConnection,
                DiskState::Inconsistent
            )
        );
        assert_eq!(s.peer_dstate, DiskState::DUnknown);
        // Created metadata is not a Primary's: promotion needs --force.
        assert!(r
            .handle_command(Instant::ZERO, Command::Primary { force: false })
            .is_err());
    }

    #[test]
    fn fresh_pair_connects_inconsistent_then_forced_primary_full_syncs() {
        let mut c = cluster(Protocol::C);
        assert!(
            c.run_until(1000, |c| c.r(A).cstate() == ConnState::Connected
                && c.r(B).cstate() == ConnState::Connected)
        );
        assert_eq!(
            (c.r(A).dstate(), c.r(B).dstate()),
            (DiskState::Inconsistent, DiskState::Inconsistent)
        );
        write(&mut c, A, 1, 0, 0x11);
        c.run_for(10);
        assert_eq!(
            c.nodes[A].done(1),
            Some(&Err(IoError::ReadOnly)),
            "a Secondary refuses writes"
        );
        c.bootstrap();
        let kib = USABLE_BYTES / 1024;
        assert!(events(&c, A).contains(&ReplEvent::SyncStart {
            source: true,
            full: true,
            kib
        }));
        assert!(events(&c, B).contains(&ReplEvent::SyncStart {
            source: false,
            full: true,
            kib
        }));
        assert!(events(&c, B)
            .iter()
            .any(|e| matches!(e, ReplEvent::SyncDone { kib: k, .. } if *k == kib)));
        assert_eq!(c.status(A).peer_dstate, DiskState::UpToDate);
        assert_eq!(c.status(B).peer_role, Role::Primary);
        assert_eq!(
            c.r(A).metadata().uuids.current & !1,
            c.r(B).metadata().uuids.current & !1
        );
        assert_eq!(c.first_difference(), None);
        // Every state change was an event, each from the state the last one left.
        for node in [A, B] {
            let mut cur = ConnState::StandAlone;
            for e in events(&c, node) {
                if let ReplEvent::Conn { from, to } = e {
                    assert_eq!(from, cur);
                    cur = to;
                }
            }
            assert_eq!(cur, c.r(node).cstate());
        }
    }

    #[test]
    fn one_primary_at_a_time_and_demotion_waits_for_requests() {
        let mut c = cluster(Protocol::C);
        c.bootstrap();
        let err = c.command(B, Command::Primary { force: true }).unwrap_err();
        assert!(err.0.contains("peer is Primary"), "{err:?}");
        write(&mut c, A, 1, 3, 0x31);
        assert!(
            c.command(A, Command::Secondary).is_err(),
            "a write is in flight"
        );
        c.run_for(50);
        done_ok(&c, A, 1);
        c.command(A, Command::Secondary).unwrap();
        c.run_for(10);
        assert_eq!(c.status(B).peer_role, Role::Secondary);
        c.command(B, Command::Primary { force: false }).unwrap();
        c.run_for(10);
        assert_eq!(c.status(A).peer_role, Role::Primary);
        // The new Primary reads what the old one wrote; the Secondary reads locally.
        c.host(
            B,
            2,
            HostIo::Read {
                offset: 3 * BLOCK_BYTES,
                len: BLOCK_BYTES as u32,
            },
        );
        c.host(
            A,
            3,
            HostIo::Read {
                offset: 3 * BLOCK_BYTES,
                len: BLOCK_BYTES as u32,
            },
        );
        c.run_for(20);
        for (n, id) in [(B, 2), (A, 3)] {
            let data = data_of(&c, n, id).unwrap();
            assert_eq!(tag_of(&data), Some(0x31));
        }
    }

    // ---- replicated writes ----------------------------------------------

    #[test]
    fn protocol_c_acknowledges_only_after_the_peer_wrote() {
        let mut c = cluster(Protocol::C);
        c.bootstrap();
        c.silent = true;
        write(&mut c, A, 1, 10, 0xc1);
        c.run_for(200);
        assert_eq!(c.nodes[A].done(1), None, "no WriteAck yet");
        assert_eq!(tag_on(&c, A, 10), Some(0xc1), "local write done");
        c.heal();
        c.run_for(20);
        done_ok(&c, A, 1);
        assert_eq!(tag_on(&c, B, 10), Some(0xc1));
    }

    #[test]
    fn protocol_a_acknowledges_when_local_and_sent() {
        let mut c = cluster(Protocol::A);
        c.bootstrap();
        c.silent = true;
        write(&mut c, A, 1, 10, 0xa1);
        c.run_for(20);
        done_ok(&c, A, 1);
        assert_eq!(
            tag_on(&c, B, 10),
            Some(0),
            "the peer has not got it: protocol A can lose it"
        );
        // A flush is a flush on both: it waits for the peer's barrier ack.
        c.host(A, 2, HostIo::Flush);
        c.run_for(200);
        assert_eq!(c.nodes[A].done(2), None);
        c.heal();
        c.run_for(20);
        done_ok(&c, A, 2);
        assert_eq!(tag_on(&c, B, 10), Some(0xa1));
        assert!(c.nodes[B].data.read(10 * BLOCK_BYTES, 8) == 0xa1u64.to_le_bytes());
    }

    /// A lone Primary driven by hand: protocol B acknowledges on RecvAck, a
    /// FUA write only on WriteAck.
    #[test]
    fn protocol_b_waits_for_receipt_and_fua_for_the_peer_write() {
        let mut r = lone(Protocol::B);
        let t = Instant::ZERO;
        // Every metadata write completes at once; returns the other actions.
        fn run(r: &mut Replica, t: Instant) -> Vec<Action> {
            let mut out = Vec::new();
            loop {
                let actions = drain(r);
                if actions.is_empty() {
                    return out;
                }
                for a in actions {
                    match meta_write_of(&a) {
                        Some((id, _)) => r.handle_disk_done(t, id, Ok(None)),
                        None => out.push(a),
                    }
                }
            }
        }
        run(&mut r, t);
        r.handle_peer_up(t);
        let created = Metadata::created(USABLE_BYTES);
        let params = PeerMsg::ReportParams {
            protocol: Protocol::B,
            usable_bytes: USABLE_BYTES,
            role: Role::Secondary,
            disk: DiskState::Inconsistent,
            uuids: created.uuids,
            dirty_blocks: 0,
            md_flags: created.flags.to_bits(),
            discard_my_data: false,
        };
        r.handle_peer_msg(t, params.clone());
        run(&mut r, t);
        assert_eq!(r.cstate(), ConnState::Connected, "both fresh: rule 10");
        r.handle_command(t, Command::Primary { force: true })
            .unwrap();
        assert_eq!(r.cstate(), ConnState::WFReportParams, "forced: renegotiate");
        r.handle_peer_msg(t, params);
        r.handle_peer_msg(
            t,
            PeerMsg::Bitmap {
                first_word: 0,
                words: vec![0; 32],
                last: true,
            },
        );
        let actions = run(&mut r, t);
        assert!(actions
            .iter()
            .any(|a| matches!(a, Action::Send(PeerMsg::SyncUuid { .. }))));
        assert_eq!(r.cstate(), ConnState::SyncSource);
        for (hid, fua) in [(1u64, false), (2, true)] {
            let data = Arc::new(block_of(hid));
            r.handle_host(
                t,
                HostId(hid),
                HostIo::Write {
                    offset: hid * BLOCK_BYTES,
                    data,
                    fua,
                },
            );
            let mut local = None;
            let mut seq = None;
            for a in run(&mut r, t) {
                match a {
                    Action::Disk {
                        id,
                        io:
                            DiskIo::Write {
                                target: DiskTarget::Data,
                                fua: f,
                                ..
                            },
                    } => {
                        assert_eq!(f, fua);
                        local = Some(id);
                    }
                    Action::Send(PeerMsg::Data { seq: s, fua: f, .. }) => {
                        assert_eq!(f, fua);
                        seq = Some(s);
                    }
                    _ => {}
                }
            }
            let (local, seq) = (local.expect("local write"), seq.expect("replicated"));
            r.handle_disk_done(t, local, Ok(None));
            let done = |acts: &[Action]| {
                acts.iter()
                    .any(|a| matches!(a, Action::HostDone { id, result: Ok(_) } if id.0 == hid))
            };
            assert!(!done(&run(&mut r, t)), "waits for the peer");
            r.handle_peer_msg(t, PeerMsg::RecvAck { seq });
            assert_eq!(
                done(&run(&mut r, t)),
                !fua,
                "B: receipt is enough unless FUA"
            );
            if fua {
                r.handle_peer_msg(t, PeerMsg::WriteAck { seq });
                assert!(done(&run(&mut r, t)));
            }
        }
        assert!(r.idle() || r.status(t).ap_pending == 0);
    }

    /// A write that continues the previous one near its extent's end records
    /// the next extent ahead (never waited on); a jump elsewhere does not.
    #[test]
    fn a_sequential_stream_records_its_next_extent_ahead() {
        let t = Instant::ZERO;
        let mut r = lone_primary(t);
        let layout = sim_config(Protocol::C, true).layout;
        let al_area = layout.al_offset..layout.al_offset + layout.al_bytes;
        let ext = md::AL_EXTENT_BYTES;
        // AL records written while the metadata settles.
        let settle = |r: &mut Replica| {
            settle_meta(r, t)
                .iter()
                .filter(|o| al_area.contains(o))
                .count()
        };
        settle(&mut r);
        let write = |r: &mut Replica, id: u64, offset: u64| host_write(r, t, id, offset);
        let hot = |r: &Replica, e: u64| r.al.extents().any(|x| x == e);
        // The sim's disk has two extents. First write, 1 MiB before the end
        // of extent 0: extent 0 only (nothing to continue).
        write(&mut r, 1, ext - (1 << 20));
        assert_eq!(settle(&mut r), 1);
        assert!(hot(&r, 0) && !hot(&r, 1));
        // The next block continues it: extent 1 is recorded ahead.
        write(&mut r, 2, ext - (1 << 20) + BLOCK_BYTES);
        assert_eq!(settle(&mut r), 1, "one record, for extent 1");
        assert!(hot(&r, 1));
        // Continuing at the end of the last extent: nothing past the disk.
        write(&mut r, 3, 2 * ext - 2 * BLOCK_BYTES);
        write(&mut r, 4, 2 * ext - BLOCK_BYTES);
        assert_eq!(settle(&mut r), 0);

        // Another node: a stream early in extent 0, then a jump near its end.
        let mut r = lone_primary(t);
        settle(&mut r);
        write(&mut r, 1, 1 << 20);
        write(&mut r, 2, (1 << 20) + BLOCK_BYTES);
        settle(&mut r);
        assert!(!hot(&r, 1), "3 MiB before the end: nothing ahead");
        write(&mut r, 3, ext - BLOCK_BYTES);
        assert_eq!(settle(&mut r), 0);
        assert!(!hot(&r, 1), "a jump is not a stream");
    }

    /// Alone and Primary, driven by hand: a write to a cold extent waits for
    /// its activity-log record; writes to hot extents do not wait behind it.
    #[test]
    fn activity_log_record_precedes_the_data_write() {
        let t = Instant::ZERO;
        let mut r = lone_primary(t);
        settle_meta(&mut r, t);
        let layout = sim_config(Protocol::C, true).layout;
        let write = |r: &mut Replica, id: u64, offset: u64| {
            host_write(r, t, id, offset);
            let (mut meta, mut data) = (Vec::new(), Vec::new());
            for a in drain(r) {
                if let Some(m) = meta_write_of(&a) {
                    meta.push(m);
                } else if let Action::Disk {
                    id,
                    io:
                        DiskIo::Write {
                            target: DiskTarget::Data,
                            ..
                        },
                } = a
                {
                    data.push(id);
                }
            }
            (meta, data)
        };
        let (meta, data) = write(&mut r, 1, 0);
        assert!(data.is_empty(), "no data before the AL record");
        let al: Vec<_> = meta
            .iter()
            .filter(|(_, o)| (layout.al_offset..layout.al_offset + layout.al_bytes).contains(o))
            .collect();
        assert_eq!(al.len(), 1, "{meta:?}");
        r.handle_disk_done(t, al[0].0, Ok(None));
        // Its bitmap page (alone: out of sync with the peer) comes with the data.
        let actions = drain(&mut r);
        assert!(actions.iter().any(|a| matches!(
            a,
            Action::Disk {
                io: DiskIo::Write {
                    target: DiskTarget::Data,
                    ..
                },
                ..
            }
        )));
        // Extent 1 is cold: its write waits; one to hot extent 0 does not.
        let (meta1, data1) = write(&mut r, 2, md::AL_EXTENT_BYTES);
        assert!(data1.is_empty() && !meta1.is_empty());
        let (meta0, data0) = write(&mut r, 3, 8 * BLOCK_BYTES);
        assert_eq!(data0.len(), 1, "hot extent: straight to disk");
        assert!(meta0
            .iter()
            .all(|(_, o)| !(layout.al_offset..layout.al_offset + layout.al_bytes).contains(o)));
        for (id, _) in meta1 {
            r.handle_disk_done(t, id, Ok(None));
        }
        assert!(drain(&mut r).iter().any(|a| matches!(
            a,
            Action::Disk {
                io: DiskIo::Write {
                    target: DiskTarget::Data,
                    ..
                },
                ..
            }
        )));
    }

    /// Two writes alone touch the same bitmap page: the second page write
    /// waits for the first and carries both bits (never two in flight to one
    /// place, which the disk could reorder).
    #[test]
    fn metadata_writes_to_one_place_never_overlap() {
        let t = Instant::ZERO;
        let mut r = lone_primary(t);
        let layout = sim_config(Protocol::C, true).layout;
        let page = layout.bitmap_offset;
        let mut inflight: Vec<(DiskId, DiskIo)> = Vec::new();
        let collect = |r: &mut Replica, inflight: &mut Vec<(DiskId, DiskIo)>| {
            for a in drain(r) {
                if let Action::Disk { id, io } = a {
                    inflight.push((id, io));
                }
            }
        };
        collect(&mut r, &mut inflight);
        for id in 1..=2u64 {
            r.handle_host(
                t,
                HostId(id),
                HostIo::Write {
                    offset: id * 64 * BLOCK_BYTES,
                    data: Arc::new(block_of(id)),
                    fua: false,
                },
            );
            collect(&mut r, &mut inflight);
        }
        // Complete everything but bitmap-page writes until the writes are issued.
        for _ in 0..20 {
            let (done, keep): (Vec<_>, Vec<_>) = inflight.drain(..).partition(|(_, io)| {
                !matches!(io, DiskIo::Write { target: DiskTarget::Meta, offset, .. } if *offset == page)
            });
            inflight = keep;
            for (id, io) in done {
                let res = if matches!(io, DiskIo::Read { .. }) {
                    Ok(Some(Arc::new(vec![0; 4096])))
                } else {
                    Ok(None)
                };
                r.handle_disk_done(t, id, res);
                collect(&mut r, &mut inflight);
            }
            let page_writes = inflight.iter().filter(|(_, io)| matches!(io, DiskIo::Write { target: DiskTarget::Meta, offset, .. } if *offset == page)).count();
            assert!(
                page_writes <= 1,
                "{page_writes} writes to the bitmap page in flight"
            );
        }
        // Finish the page writes one at a time: the last carries both bits.
        let mut last = None;
        while let Some(pos) = inflight.iter().position(|(_, io)| matches!(io, DiskIo::Write { target: DiskTarget::Meta, offset, .. } if *offset == page)) {
            let (id, io) = inflight.remove(pos);
            if let DiskIo::Write { data, .. } = &io {
                last = Some(data.clone());
            }
            r.handle_disk_done(t, id, Ok(None));
            collect(&mut r, &mut inflight);
        }
        let last = Bitmap::decode(USABLE_BYTES, &last.expect("page written"));
        assert!(
            last.is_set(64) && last.is_set(128),
            "newest page has both bits"
        );
    }

    #[test]
    fn overlapping_writes_are_serialised() {
        let mut c = cluster(Protocol::C);
        c.bootstrap();
        c.disk_latency_ms = 20;
        let big = |tag: u64| Arc::new([block_of(tag), block_of(tag)].concat());
        c.host(
            A,
            1,
            HostIo::Write {
                offset: 0,
                data: big(0x1),
                fua: false,
            },
        );
        c.host(
            A,
            2,
            HostIo::Write {
                offset: BLOCK_BYTES,
                data: big(0x2),
                fua: false,
            },
        );
        c.run_for(300);
        done_ok(&c, A, 1);
        done_ok(&c, A, 2);
        for n in [A, B] {
            assert_eq!(
                (tag_on(&c, n, 0), tag_on(&c, n, 1), tag_on(&c, n, 2)),
                (Some(1), Some(2), Some(2))
            );
        }
    }

    #[test]
    fn disconnected_writes_resync_exactly_the_dirty_blocks() {
        let mut c = cluster(Protocol::C);
        c.bootstrap();
        let before = c.nodes[A].rs_data_sent;
        c.cut();
        for (i, block) in [5u64, 6, 7, 100, 1000, 2047].into_iter().enumerate() {
            write(&mut c, A, i as u64 + 1, block, 0x500 + block);
        }
        c.run_for(50);
        for id in 1..=6 {
            done_ok(&c, A, id);
        }
        assert_eq!(c.status(A).out_of_sync_bytes, 6 * BLOCK_BYTES);
        assert_eq!(
            c.status(B).dstate,
            DiskState::UpToDate,
            "no fencing: B keeps its state"
        );
        c.heal();
        assert!(c.run_until(5000, |c| c.settled()));
        assert_eq!(
            c.nodes[A].rs_data_sent - before,
            6 * BLOCK_BYTES,
            "only the dirty blocks"
        );
        assert_eq!(tag_on(&c, B, 2047), Some(0x500 + 2047));
        assert_eq!(c.first_difference(), None);
        assert_eq!(c.status(A).out_of_sync_bytes, 0);
    }

    #[test]
    fn unacked_writes_are_marked_when_the_link_breaks() {
        let mut c = cluster(Protocol::C);
        c.bootstrap();
        c.silent = true;
        write(&mut c, A, 1, 42, 0x42);
        c.run_for(100);
        assert_eq!(c.nodes[A].done(1), None);
        c.cut();
        c.run_for(20);
        done_ok(&c, A, 1);
        assert!(c.r(A).bitmap().is_set(42));
        c.heal();
        assert!(c.run_until(5000, |c| c.settled()));
        assert_eq!(tag_on(&c, B, 42), Some(0x42));
    }

    #[test]
    fn a_crashed_primary_resyncs_only_its_activity_log() {
        let cfg = sim_config(Protocol::C, true);
        let mut c = Cluster::new(
            9,
            ReplicaConfig {
                layout: md::Layout::external(32 << 20),
                ..cfg.clone()
            },
        );
        // The harness's USABLE_BYTES is 8 MiB; this cluster's layout is 32 MiB.
        c.bootstrap();
        write(&mut c, A, 1, 10, 0x77);
        c.run_for(50);
        done_ok(&c, A, 1);
        c.crash(A);
        c.restart(A);
        let dirty = c.r(A).bitmap().count() * BLOCK_BYTES;
        assert_eq!(dirty, md::AL_EXTENT_BYTES, "one hot extent, not the 32 MiB");
        assert!(c.run_until(5000, |c| c.settled()));
        assert_eq!(c.first_difference(), None);
    }

    // ---- resync -----------------------------------------------------------

    #[test]
    fn resync_respects_the_rate() {
        let mut cfg = sim_config(Protocol::C, true);
        cfg.resync_rate = 16 << 20;
        let mut c = Cluster::new(3, cfg);
        c.run_until(1000, |c| c.r(A).cstate() == ConnState::Connected);
        c.command(A, Command::Primary { force: true }).unwrap();
        let t0 = c.now;
        assert!(c.run_until(10_000, |c| c.settled()));
        let ms = c.now.saturating_since(t0).millis();
        // 8 MiB at 16 MiB/s: about 500 ms (one RS_CHUNK_BYTES burst is free).
        assert!((400..=800).contains(&ms), "took {ms} ms");
        let rate = c.status(B).sync_rate;
        assert!(rate <= 20 << 20, "{rate}");
    }

    #[test]
    fn csums_skip_identical_blocks() {
        let mut cfg = sim_config(Protocol::C, true);
        cfg.csums = true;
        let mut c = Cluster::new(4, cfg);
        c.bootstrap();
        let before = c.nodes[A].rs_data_sent;
        write(&mut c, A, 1, 8, 0x88);
        c.run_for(50);
        // Corrupt one block on B behind the engine's back, then invalidate B.
        c.nodes[B]
            .data
            .write(9 * BLOCK_BYTES, &block_of(0xbad), true);
        c.command(B, Command::Invalidate).unwrap();
        assert!(c.run_until(5000, |c| c.settled()));
        assert_eq!(
            c.nodes[A].rs_data_sent - before,
            128 << 10,
            "only the differing chunk travels"
        );
        assert_eq!(c.first_difference(), None);
    }

    #[test]
    fn host_writes_during_a_resync_stay_correct() {
        let mut cfg = sim_config(Protocol::C, true);
        cfg.resync_rate = 8 << 20;
        let mut c = Cluster::new(5, cfg);
        c.run_until(1000, |c| c.r(A).cstate() == ConnState::Connected);
        c.command(A, Command::Primary { force: true }).unwrap();
        c.run_for(100);
        assert_eq!(c.r(A).cstate(), ConnState::SyncSource);
        for id in 1..200u64 {
            write(&mut c, A, id, (id * 37) % 2048, id);
            c.run_for(3);
        }
        assert!(c.run_until(10_000, |c| c.settled()));
        assert_eq!(c.first_difference(), None);
        for id in 150..200u64 {
            assert_eq!(tag_on(&c, B, (id * 37) % 2048), Some(id));
        }
    }

    // ---- split brain ------------------------------------------------------

    fn split(c: &mut Cluster) {
        c.bootstrap();
        c.cut();
        write(c, A, 101, 1, 0xa);
        c.command(B, Command::Primary { force: false }).unwrap();
        write(c, B, 201, 2, 0xb);
        write(c, B, 202, 3, 0xb);
        c.run_for(50);
    }

    #[test]
    fn an_idle_epoch_closes_so_a_later_disconnect_marks_nothing_acknowledged() {
        // Ten replicated writes, then quiet: the epoch closes after
        // EPOCH_AGE_MAX and the BarrierAck empties the transfer log, so a
        // disconnect afterwards owes the peer nothing (the resync after it
        // sends only what is written while disconnected).
        let mut c = cluster(Protocol::C);
        c.bootstrap();
        for i in 0..10 {
            write(&mut c, A, 300 + i, i, 0xc);
        }
        c.run_for(EPOCH_AGE_MAX.millis() * 3);
        for i in 0..10 {
            done_ok(&c, A, 300 + i);
        }
        c.cut();
        c.run_for(50);
        assert_eq!(
            c.r(A).bitmap().count(),
            0,
            "acknowledged, flushed epochs are not resynced"
        );
    }

    #[test]
    fn two_primaries_reconnecting_is_a_split_brain_on_both() {
        // Both nodes still Primary when the link comes back (the takeover
        // promoted the survivor of a partition, the old Primary never demoted):
        // DRBD's after-sb-2pri case, detected and reported on both sides.
        let mut c = cluster(Protocol::C);
        split(&mut c);
        assert_eq!(c.r(A).role(), Role::Primary);
        assert_eq!(c.r(B).role(), Role::Primary);
        c.heal();
        c.run_for(500);
        for n in [A, B] {
            assert_eq!(c.r(n).cstate(), ConnState::StandAlone, "node {n}");
            assert!(c.nodes[n].handlers.contains(&"split-brain"), "node {n}");
            assert!(
                events(&c, n).contains(&ReplEvent::SplitBrain {
                    policy: "disconnect",
                    resolved: "disconnect"
                }),
                "node {n}"
            );
        }
        assert_eq!(
            (tag_on(&c, A, 2), tag_on(&c, B, 1)),
            (Some(0), Some(0)),
            "nothing merged"
        );
    }

    #[test]
    fn split_brain_is_detected_and_never_merged() {
        let mut c = cluster(Protocol::C);
        split(&mut c);
        c.command(B, Command::Secondary).unwrap();
        c.heal();
        c.run_for(500);
        for n in [A, B] {
            assert_eq!(c.r(n).cstate(), ConnState::StandAlone, "node {n}");
            assert!(c.nodes[n].handlers.contains(&"split-brain"));
            assert!(events(&c, n).contains(&ReplEvent::SplitBrain {
                policy: "disconnect",
                resolved: "disconnect"
            }));
        }
        assert_eq!(
            (tag_on(&c, A, 2), tag_on(&c, B, 1)),
            (Some(0), Some(0)),
            "nothing merged"
        );
        // --discard-my-data on B: B becomes SyncTarget of A's data.
        c.command(
            B,
            Command::Connect {
                discard_my_data: true,
            },
        )
        .unwrap();
        c.command(
            A,
            Command::Connect {
                discard_my_data: false,
            },
        )
        .unwrap();
        assert!(c.run_until(5000, |c| c.settled()), "{}", c.trace_text());
        assert_eq!(c.first_difference(), None);
        assert_eq!((tag_on(&c, B, 1), tag_on(&c, B, 2)), (Some(0xa), Some(0)));
    }

    #[test]
    fn after_sb_policies_pick_the_victim() {
        // 1pri discard-secondary: B (demoted) loses its changes.
        let mut cfg = sim_config(Protocol::C, true);
        cfg.after_sb_1pri = AfterSb1::DiscardSecondary;
        let mut c = Cluster::new(11, cfg.clone());
        split(&mut c);
        c.command(B, Command::Secondary).unwrap();
        c.heal();
        assert!(c.run_until(5000, |c| c.settled()), "{}", c.trace_text());
        assert_eq!((tag_on(&c, B, 1), tag_on(&c, B, 2)), (Some(0xa), Some(0)));
        assert!(events(&c, B).contains(&ReplEvent::SplitBrain {
            policy: "discard-secondary",
            resolved: "discard-local"
        }));
        // 0pri discard-least-changes: A wrote 1 block, B 2: A loses.
        cfg.after_sb_0pri = AfterSb0::DiscardLeastChanges;
        cfg.after_sb_1pri = AfterSb1::Disconnect;
        let mut c = Cluster::new(12, cfg.clone());
        split(&mut c);
        c.command(B, Command::Secondary).unwrap();
        c.command(A, Command::Secondary).unwrap();
        c.heal();
        assert!(
            c.run_until(5000, |c| c.r(A).cstate() == ConnState::Connected
                && c.r(A).idle())
        );
        c.run_for(100);
        assert_eq!((tag_on(&c, A, 1), tag_on(&c, A, 2)), (Some(0), Some(0xb)));
        assert_eq!(c.first_difference(), None);
        // 2pri disconnect: both stay Primary and StandAlone.
        let mut c = Cluster::new(13, sim_config(Protocol::C, true));
        split(&mut c);
        c.heal();
        c.run_for(300);
        assert_eq!(
            (c.r(A).cstate(), c.r(B).cstate()),
            (ConnState::StandAlone, ConnState::StandAlone)
        );
        assert_eq!(
            (c.r(A).role(), c.r(B).role()),
            (Role::Primary, Role::Primary)
        );
    }

    // ---- disk errors, verify, pings ---------------------------------------

    #[test]
    fn a_failing_primary_disk_detaches_and_io_continues_through_the_peer() {
        let mut c = cluster(Protocol::C);
        c.bootstrap();
        write(&mut c, A, 1, 4, 0x44);
        c.run_for(20);
        c.nodes[A].fail_data = true;
        write(&mut c, A, 2, 5, 0x55);
        c.run_for(50);
        done_ok(&c, A, 2);
        assert_eq!(c.r(A).dstate(), DiskState::Diskless);
        assert!(events(&c, A)
            .iter()
            .any(|e| matches!(e, ReplEvent::IoError { op: "write", .. })));
        assert_eq!(c.status(B).peer_dstate, DiskState::Diskless);
        write(&mut c, A, 3, 6, 0x66);
        c.run_for(50);
        c.host(
            A,
            4,
            HostIo::Read {
                offset: 4 * BLOCK_BYTES,
                len: 3 * BLOCK_BYTES as u32,
            },
        );
        c.run_for(50);
        done_ok(&c, A, 3);
        let data = data_of(&c, A, 4).unwrap();
        let tags: Vec<_> = data.chunks(BLOCK_BYTES as usize).map(tag_of).collect();
        assert_eq!(tags, vec![Some(0x44), Some(0x55), Some(0x66)]);
        // Alone and Diskless: nothing can serve the host.
        c.cut();
        write(&mut c, A, 5, 7, 0x77);
        c.run_for(20);
        assert_eq!(c.nodes[A].done(5), Some(&Err(IoError::Io)));
    }

    #[test]
    fn pass_on_returns_the_error_and_keeps_the_disk() {
        let mut cfg = sim_config(Protocol::C, true);
        cfg.on_io_error = OnIoError::PassOn;
        let mut c = Cluster::new(21, cfg);
        c.bootstrap();
        c.nodes[A].fail_data = true;
        c.host(
            A,
            1,
            HostIo::Read {
                offset: 0,
                len: 4096,
            },
        );
        c.run_for(20);
        assert_eq!(c.nodes[A].done(1), Some(&Err(IoError::Io)));
        assert_eq!(c.r(A).dstate(), DiskState::UpToDate);
    }

    #[test]
    fn verify_marks_differences_out_of_sync() {
        let mut c = cluster(Protocol::C);
        c.bootstrap();
        c.nodes[B]
            .data
            .write(700 * BLOCK_BYTES, &block_of(0xbad), true);
        c.command(A, Command::Verify).unwrap();
        assert!(
            c.run_until(5000, |c| c.r(A).cstate() == ConnState::Connected
                && c.r(A).idle())
        );
        assert!(events(&c, A).iter().any(|e| matches!(
            e,
            ReplEvent::Note {
                name: "verify_out_of_sync",
                ..
            }
        )));
        assert_eq!(
            c.status(A).out_of_sync_bytes,
            128 << 10,
            "the chunk holding block 700"
        );
        assert_eq!(c.r(B).cstate(), ConnState::Connected);
        // A reconnect resyncs it.
        c.command(A, Command::Disconnect).unwrap();
        c.command(
            A,
            Command::Connect {
                discard_my_data: false,
            },
        )
        .unwrap();
        assert!(c.run_until(5000, |c| c.settled()));
        assert_eq!(c.first_difference(), None);
    }

    #[test]
    fn a_silent_peer_is_declared_down_after_ping_timeout() {
        let mut c = cluster(Protocol::C);
        c.bootstrap();
        c.silent = true;
        let t0 = c.now;
        assert!(c.run_until(5000, |c| c.r(A).cstate() != ConnState::Connected));
        let ms = c.now.saturating_since(t0).millis();
        // ping-int 1000 + ping-timeout 500, from the last message received.
        assert!((1400..=1600).contains(&ms), "{ms}");
        let timed_out = |n| {
            events(&c, n).iter().any(|e| {
                matches!(
                    e,
                    ReplEvent::Note {
                        name: "ping_timeout",
                        ..
                    }
                )
            })
        };
        assert!(timed_out(A) || timed_out(B));
        c.heal();
        assert!(c.run_until(5000, |c| c.settled()));
    }

    #[test]
    fn a_peer_with_another_protocol_or_size_is_refused() {
        for (protocol, size) in [(Protocol::A, USABLE_BYTES), (Protocol::C, USABLE_BYTES / 2)] {
            let t = Instant::ZERO;
            let mut r = lone(Protocol::C);
            drain(&mut r);
            r.handle_peer_up(t);
            let created = Metadata::created(size);
            r.handle_peer_msg(
                t,
                PeerMsg::ReportParams {
                    protocol,
                    usable_bytes: size,
                    role: Role::Secondary,
                    disk: DiskState::Inconsistent,
                    uuids: created.uuids,
                    dirty_blocks: 0,
                    md_flags: 0,
                    discard_my_data: false,
                },
            );
            let actions = drain(&mut r);
            assert!(actions.contains(&Action::Disconnect));
            assert!(actions.iter().any(|a| matches!(
                a,
                Action::Event(ReplEvent::Note {
                    name: "handshake_refused",
                    ..
                })
            )));
            assert_eq!(r.cstate(), ConnState::StandAlone);
            // The operator's connect starts over.
            r.handle_command(
                t,
                Command::Connect {
                    discard_my_data: false,
                },
            )
            .unwrap();
            assert!(drain(&mut r).contains(&Action::Connect));
            assert_eq!(r.cstate(), ConnState::WFConnection);
        }
    }

    #[test]
    fn bad_host_requests_are_invalid() {
        let mut c = cluster(Protocol::C);
        c.bootstrap();
        c.host(
            A,
            1,
            HostIo::Read {
                offset: USABLE_BYTES - 4096,
                len: 8192,
            },
        );
        c.host(
            A,
            2,
            HostIo::Write {
                offset: u64::MAX - 10,
                data: Arc::new(vec![1; 512]),
                fua: false,
            },
        );
        c.run_for(10);
        assert_eq!(c.nodes[A].done(1), Some(&Err(IoError::Invalid)));
        assert_eq!(c.nodes[A].done(2), Some(&Err(IoError::Invalid)));
    }

    #[test]
    fn unaligned_writes_trim_and_zeroes_replicate() {
        let mut c = cluster(Protocol::C);
        c.bootstrap();
        c.host(
            A,
            1,
            HostIo::Write {
                offset: 1000,
                data: Arc::new(vec![7; 5000]),
                fua: true,
            },
        );
        c.host(
            A,
            2,
            HostIo::Trim {
                offset: 40960,
                len: 8192,
                fua: false,
            },
        );
        c.host(
            A,
            3,
            HostIo::WriteZeroes {
                offset: 81920,
                len: 4096,
                fua: false,
            },
        );
        c.run_for(50);
        for id in 1..=3 {
            done_ok(&c, A, id);
        }
        assert_eq!(c.nodes[B].data.read(1000, 5000), vec![7; 5000]);
        assert_eq!(c.first_difference(), None);
    }

    // ---- robustness ---------------------------------------------------------

    /// Any sequence of well-formed messages, completions, host requests and
    /// commands, in any state, never panics (a confused or hostile peer
    /// costs the connection, never the daemon).
    #[test]
    fn random_inputs_never_panic() {
        use crate::rng::Rng;
        let mut states = std::collections::BTreeSet::new();
        let mut actions = 0u64;
        for seed in 0..40u64 {
            let mut rng = Rng::new(seed);
            let mut r = lone([Protocol::A, Protocol::B, Protocol::C][(seed % 3) as usize]);
            let mut now = Instant::ZERO;
            let mut disks: Vec<(DiskId, bool)> = Vec::new();
            let mut next_host = 1u64;
            for _ in 0..1500 {
                now = now + Duration::from_millis(rng.below(50));
                let off = |rng: &mut Rng| {
                    if rng.chance(0.05) {
                        u64::MAX - rng.below(10_000)
                    } else {
                        rng.below(USABLE_BYTES / BLOCK_BYTES) * BLOCK_BYTES
                    }
                };
                let len = |rng: &mut Rng| (1 + rng.below(8)) as u32 * BLOCK_BYTES as u32;
                let uuid = |rng: &mut Rng| [0, 4, 0x10, 0x11, 0x20, 0x21][rng.below(6) as usize];
                let uuids = |rng: &mut Rng| Uuids {
                    current: uuid(rng),
                    bitmap: uuid(rng),
                    history: [uuid(rng), uuid(rng)],
                };
                let handshaking = matches!(
                    r.cstate(),
                    ConnState::WFBitMapS | ConnState::WFBitMapT | ConnState::WFSyncUUID
                );
                let pick = if handshaking && rng.chance(0.7) {
                    3
                } else {
                    rng.below(14)
                };
                match pick {
                    0 => r.handle_peer_up(now),
                    1 => r.handle_peer_down(now),
                    2 => {
                        let msg = PeerMsg::ReportParams {
                            protocol: r.cfg.protocol,
                            usable_bytes: USABLE_BYTES,
                            role: [Role::Primary, Role::Secondary][rng.below(2) as usize],
                            disk: [
                                DiskState::UpToDate,
                                DiskState::Inconsistent,
                                DiskState::Diskless,
                                DiskState::Consistent,
                            ][rng.below(4) as usize],
                            uuids: uuids(&mut rng),
                            dirty_blocks: rng.below(100),
                            md_flags: rng.below(64) as u32,
                            discard_my_data: rng.chance(0.2),
                        };
                        r.handle_peer_msg(now, msg);
                    }
                    3 | 4 => {
                        let (o, l) = (off(&mut rng), len(&mut rng));
                        let seq = rng.below(50);
                        let kind = match r.cstate() {
                            ConnState::WFBitMapS | ConnState::WFBitMapT if rng.chance(0.5) => 100,
                            ConnState::WFSyncUUID if rng.chance(0.5) => 8,
                            _ => rng.below(16),
                        };
                        let msg = match kind {
                            100 => PeerMsg::Bitmap {
                                first_word: 0,
                                words: vec![rng.next_u64() & rng.next_u64(); 32],
                                last: true,
                            },
                            0 => PeerMsg::Data {
                                seq,
                                offset: o,
                                data: Arc::new(vec![1; l as usize]),
                                fua: rng.chance(0.5),
                            },
                            1 => PeerMsg::Zero {
                                seq,
                                offset: o,
                                len: l,
                                fua: false,
                                discard: rng.chance(0.5),
                            },
                            2 => PeerMsg::RecvAck { seq },
                            3 => PeerMsg::WriteAck { seq },
                            4 => PeerMsg::NegAck { seq },
                            5 => PeerMsg::Barrier { nr: seq },
                            6 => PeerMsg::BarrierAck { nr: seq },
                            7 => PeerMsg::Bitmap {
                                first_word: rng.below(40),
                                words: vec![rng.next_u64(); rng.below(4) as usize],
                                last: rng.chance(0.5),
                            },
                            8 => PeerMsg::SyncUuid {
                                uuid: uuid(&mut rng),
                            },
                            9 => PeerMsg::RsRequest { offset: o, len: l },
                            10 => PeerMsg::RsData {
                                offset: o,
                                data: Arc::new(vec![2; l as usize]),
                            },
                            11 => PeerMsg::RsInSync { offset: o, len: l },
                            12 => PeerMsg::OvReply {
                                offset: o,
                                len: l,
                                digest: [0; 32],
                            },
                            13 => PeerMsg::ReadRequest {
                                id: seq,
                                offset: o,
                                len: l,
                            },
                            14 => PeerMsg::State {
                                role: Role::Secondary,
                                disk: DiskState::UpToDate,
                            },
                            _ => PeerMsg::Uuids {
                                uuids: uuids(&mut rng),
                            },
                        };
                        r.handle_peer_msg(now, msg);
                    }
                    5..=7 => {
                        if !disks.is_empty() {
                            let k = rng.below(disks.len() as u64) as usize;
                            let (id, read) = disks.swap_remove(k);
                            let res = if rng.chance(0.05) {
                                Err(IoError::Io)
                            } else if read {
                                Ok(Some(Arc::new(vec![0; 4096])))
                            } else {
                                Ok(None)
                            };
                            r.handle_disk_done(now, id, res);
                        }
                    }
                    8 | 9 => {
                        let io = match rng.below(4) {
                            0 => HostIo::Read {
                                offset: off(&mut rng),
                                len: len(&mut rng),
                            },
                            1 => HostIo::Flush,
                            _ => HostIo::Write {
                                offset: off(&mut rng),
                                data: Arc::new(vec![3; len(&mut rng) as usize]),
                                fua: rng.chance(0.2),
                            },
                        };
                        r.handle_host(now, HostId(next_host), io);
                        next_host += 1;
                    }
                    10 => {
                        let cmd = [
                            Command::Primary {
                                force: rng.chance(0.5),
                            },
                            Command::Secondary,
                            Command::Connect {
                                discard_my_data: rng.chance(0.5),
                            },
                            Command::Disconnect,
                            Command::Invalidate,
                            Command::Verify,
                        ][rng.below(6) as usize];
                        let _ = r.handle_command(now, cmd);
                    }
                    _ => r.handle_timeout(now),
                }
                while let Some(a) = r.poll_action() {
                    actions += 1;
                    if let Action::Disk { id, io } = a {
                        disks.push((id, matches!(io, DiskIo::Read { .. })));
                    }
                }
                states.insert(format!("{:?}", r.cstate()));
                let _ = r.status(now);
            }
        }
        // The inputs reached deep states, not just the refusals.
        for s in ["Connected", "SyncSource", "SyncTarget", "StandAlone"] {
            assert!(states.contains(s), "{s} never reached: {states:?}");
        }
        assert!(actions > 10_000, "{actions}");
    }
}
