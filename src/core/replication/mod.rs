//! The replicated disk (DRBD's model), pure: no I/O, no clock.
//!
//! Layer: core. The shell feeds a [`engine::Replica`] with host requests (from the
//! NBD server), disk completions (from the disk worker), peer messages (from the
//! authenticated replication connection) and the time; it drains actions: disk
//! I/O to run, messages to send, host requests to complete, catalogue events.
//!
//! Files:
//! - `mod.rs` (this file): the vocabulary shared by the core, the wire codecs and
//!   the shell: DRBD's state names, I/O requests and results, payloads.
//! - `md.rs`: on-disk metadata (layout, superblock, generation identifiers and
//!   DRBD's comparison rules, bitmap, activity log), encode/decode and decisions.
//! - `msg.rs`: the messages two replicas exchange and their encoding.
//! - `engine.rs`: the replica state machine.

use std::fmt;
use std::sync::Arc;

/// Bytes of data in flight. Shared so that one write goes to the local disk and
/// to the peer without a copy.
pub type Payload = Arc<Vec<u8>>;

/// The unit the bitmap tracks and resync moves: 4 KiB, as DRBD.
pub const BLOCK_BYTES: u64 = 4096;

/// Largest single host request or replicated write: 1 MiB. The NBD server
/// advertises it as its maximum payload, so a host write is never split.
pub const MAX_IO_BYTES: usize = 1 << 20;

/// The three replication protocols (drbd.conf `protocol A|B|C`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Acknowledged when on the local disk and handed to the network.
    A,
    /// Acknowledged when on the local disk and received by the peer.
    B,
    /// Acknowledged when on both disks.
    C,
}

/// DRBD's roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Primary,
    Secondary,
    /// The peer's role while not connected.
    Unknown,
}

/// DRBD's connection states (names as /proc/drbd prints them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    StandAlone,
    Disconnecting,
    Unconnected,
    Timeout,
    BrokenPipe,
    NetworkFailure,
    ProtocolError,
    TearDown,
    WFConnection,
    WFReportParams,
    Connected,
    StartingSyncS,
    StartingSyncT,
    WFBitMapS,
    WFBitMapT,
    WFSyncUUID,
    SyncSource,
    SyncTarget,
    VerifyS,
    VerifyT,
    PausedSyncS,
    PausedSyncT,
}

/// DRBD's disk states (names as /proc/drbd prints them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DiskState {
    Diskless,
    Attaching,
    Failed,
    Negotiating,
    Inconsistent,
    Outdated,
    DUnknown,
    Consistent,
    UpToDate,
}

macro_rules! display_debug {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }
    )*};
}
display_debug!(Protocol, Role, ConnState, DiskState);

/// Which file a disk request addresses: the backing device's data area or the
/// metadata (the same file for `meta-disk internal`; the shell maps offsets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskTarget {
    /// The replicated data, offsets from 0 to the usable size.
    Data,
    /// The metadata area, offsets from its start (see `md::Layout`).
    Meta,
}

/// One request to the local backing store. Offsets and lengths in bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskIo {
    Read {
        target: DiskTarget,
        offset: u64,
        len: u32,
    },
    /// `fua`: durable before completion (the worker writes with RWF_DSYNC).
    Write {
        target: DiskTarget,
        offset: u64,
        data: Payload,
        fua: bool,
    },
    /// fdatasync of the whole backing store.
    Flush,
    /// Discard (punch a hole or write zeroes: reads return zeroes afterwards).
    Discard {
        offset: u64,
        len: u32,
        fua: bool,
    },
    WriteZeroes {
        offset: u64,
        len: u32,
        fua: bool,
    },
}

/// What went wrong with an I/O, in errno terms (what NBD sends back).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoError {
    /// EIO: the backing store failed (or no good copy is reachable).
    Io,
    /// EPERM/EROFS: writing is not allowed here (Secondary).
    ReadOnly,
    /// EINVAL: out of range or malformed.
    Invalid,
    /// ENOSPC.
    NoSpace,
    /// ESHUTDOWN: the device is going away.
    Shutdown,
}

impl IoError {
    /// The errno the NBD server sends for this error.
    pub fn errno(self) -> u32 {
        match self {
            IoError::Io => 5,         // EIO
            IoError::ReadOnly => 1,   // EPERM
            IoError::Invalid => 22,   // EINVAL
            IoError::NoSpace => 28,   // ENOSPC
            IoError::Shutdown => 108, // ESHUTDOWN
        }
    }
}

/// Result of a disk or host request: read data for reads, nothing otherwise.
pub type IoResult = Result<Option<Payload>, IoError>;

/// One request from the host (the NBD server), in bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostIo {
    Read {
        offset: u64,
        len: u32,
    },
    Write {
        offset: u64,
        data: Payload,
        fua: bool,
    },
    Flush,
    Trim {
        offset: u64,
        len: u32,
        fua: bool,
    },
    WriteZeroes {
        offset: u64,
        len: u32,
        fua: bool,
    },
}

/// Identifies a host request across the core/shell boundary (the shell maps it
/// to its NBD connection and handle).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostId(pub u64);

/// Identifies a disk request across the core/shell boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DiskId(pub u64);

pub mod engine;
pub mod md;
pub mod msg;
