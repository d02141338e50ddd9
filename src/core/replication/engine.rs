//! The replica: one DRBD resource on one node, as a pure state machine.
//!
//! Layer: core (pure, quinn-proto shape). Inputs: `handle_*` with the current
//! time. Outputs: `poll_action` until None, then `poll_timeout`.
//! CONTRACT between the engine writer and the shell writer: the items below.
//! The engine writer owns this file and may add items; changing a signature
//! below needs the lead's word. TODO(skeleton): `todo!()` bodies are replaced
//! before this lands.

use super::md::{Bitmap, Layout, Metadata};
use super::msg::PeerMsg;
use super::{ConnState, DiskId, DiskIo, DiskState, HostId, HostIo, IoResult, Protocol, Role};
use crate::time::{Duration, Instant};

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
    Primary { force: bool },
    Secondary,
    /// `connect [--discard-my-data]`.
    Connect { discard_my_data: bool },
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
    Disk { id: DiskId, io: DiskIo },
    /// Send to the peer (on the authenticated connection, in order).
    Send(PeerMsg),
    /// Complete a host request.
    HostDone { id: HostId, result: IoResult },
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
    Role { from: Role, to: Role },
    Conn { from: ConnState, to: ConnState },
    Disk { from: DiskState, to: DiskState },
    PeerDisk { from: DiskState, to: DiskState },
    SyncStart { source: bool, full: bool, kib: u64 },
    SyncDone { kib: u64, ms: u64 },
    SplitBrain { policy: &'static str, resolved: &'static str },
    IoError { op: &'static str, offset: u64 },
    /// Anything else worth a line: short stable name and a detail.
    Note { name: &'static str, detail: String },
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

pub struct Replica {
    // owned by the engine writer
    _private: (),
}

impl Replica {
    /// A replica attached to a backing store whose metadata and bitmap the shell
    /// read and decoded (and the activity-log extents found there, marked in
    /// `bitmap` already when `md.flags.primary_ind` says we crashed as Primary).
    /// Starts Secondary, StandAlone, and asks to connect (Action::Connect).
    pub fn new(config: ReplicaConfig, md: Metadata, bitmap: Bitmap, now: Instant) -> Replica {
        let _ = (config, md, bitmap, now);
        todo!()
    }

    /// A host request from the NBD server. Completed later by Action::HostDone.
    pub fn handle_host(&mut self, now: Instant, id: HostId, io: HostIo) {
        let _ = (now, id, io);
        todo!()
    }

    pub fn handle_disk_done(&mut self, now: Instant, id: DiskId, result: IoResult) {
        let _ = (now, id, result);
        todo!()
    }

    /// The replication connection is up and authenticated.
    pub fn handle_peer_up(&mut self, now: Instant) {
        let _ = now;
        todo!()
    }

    pub fn handle_peer_msg(&mut self, now: Instant, msg: PeerMsg) {
        let _ = (now, msg);
        todo!()
    }

    /// The connection broke (or could not be made).
    pub fn handle_peer_down(&mut self, now: Instant) {
        let _ = now;
        todo!()
    }

    pub fn handle_command(&mut self, now: Instant, cmd: Command) -> Result<(), Refused> {
        let _ = (now, cmd);
        todo!()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = now;
        todo!()
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        todo!()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        todo!()
    }

    pub fn status(&self, now: Instant) -> Status {
        let _ = now;
        todo!()
    }

    /// True when the node may be shut down without losing acknowledged data
    /// (nothing in flight to disk or peer).
    pub fn idle(&self) -> bool {
        todo!()
    }
}
