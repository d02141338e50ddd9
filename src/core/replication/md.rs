//! On-disk metadata, DRBD 8 style: layout, superblock, generation identifiers
//! (and DRBD's comparison rules), the bitmap and the activity log.
//!
//! Layer: core (pure). The engine keeps the decoded [`Metadata`] and [`Bitmap`]
//! in memory and asks the shell to write the encoded bytes at [`Layout`] offsets
//! in the `DiskTarget::Meta` area. CONTRACT between the md and engine writers:
//! the signatures below; the md writer owns the bodies and may add items.
//! TODO(skeleton): every `todo!()` here is replaced before this lands.

use super::{Payload, BLOCK_BYTES};

/// Where things are in the metadata area, and the usable data size.
/// `meta-disk internal`: the area is the tail of the backing device (data is
/// [0, usable_bytes)); external: a separate file or device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Bytes of replicated data (what the host sees), a multiple of 4 KiB.
    pub usable_bytes: u64,
    /// Offset of the metadata area in the backing store (internal), or 0 (external).
    pub meta_base: u64,
    /// Offsets inside the metadata area.
    pub superblock_offset: u64,
    pub al_offset: u64,
    pub al_bytes: u64,
    pub bitmap_offset: u64,
    pub bitmap_bytes: u64,
    /// Total size of the metadata area.
    pub meta_bytes: u64,
}

impl Layout {
    /// Layout for internal metadata at the end of a backing device of `backing_bytes`.
    /// None when the device is too small to hold any data.
    pub fn internal(backing_bytes: u64) -> Option<Layout> {
        let _ = (backing_bytes, BLOCK_BYTES);
        todo!()
    }
    /// Layout for external metadata: the data is the whole backing device.
    pub fn external(backing_bytes: u64) -> Layout {
        let _ = backing_bytes;
        todo!()
    }
}

/// DRBD's generation identifiers (data generation UUIDs). Bit 0 of `current` is
/// the "primary" flag as in DRBD.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Uuids {
    pub current: u64,
    pub bitmap: u64,
    pub history: [u64; 2],
}

/// Persistent disk flags (DRBD's MDF_*).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MdFlags {
    /// The data is consistent (a resync is not half done).
    pub consistent: bool,
    /// The data was UpToDate when last written (not Outdated).
    pub was_up_to_date: bool,
    /// This node was Primary and did not demote cleanly (crashed primary).
    pub primary_ind: bool,
    pub connected_ind: bool,
    /// Marked Outdated by the peer (fencing).
    pub peer_out_dated: bool,
    pub full_sync: bool,
}

/// The superblock's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Metadata {
    pub uuids: Uuids,
    pub flags: MdFlags,
    /// Usable size recorded at create-md (refuse to attach a different size).
    pub usable_bytes: u64,
    /// Monotonic counter of superblock writes.
    pub generation: u64,
}

/// What a reconnect must do, from comparing both sides' generation identifiers
/// (DRBD's drbd_uuid_compare rules).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncDecision {
    /// Identical data: nothing to do.
    NoSync,
    /// This node becomes SyncSource; `full`: every block, else the bitmaps' union.
    Source { full: bool },
    /// This node becomes SyncTarget.
    Target { full: bool },
    /// Both sides changed the data independently.
    SplitBrain,
    /// The histories share nothing: refuse to connect.
    Unrelated,
}

/// One side's view for the decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UuidView {
    pub uuids: Uuids,
    pub flags: MdFlags,
    /// Bits set in this side's bitmap.
    pub dirty_blocks: u64,
}

/// Compares both sides (rule numbers as DRBD's uuid_compare in comments).
/// `local_is_lower_tiebreak`: breaks the "both were primary, crashed" tie.
pub fn sync_decision(local: &UuidView, peer: &UuidView, local_is_lower_tiebreak: bool) -> SyncDecision {
    let _ = (local, peer, local_is_lower_tiebreak);
    todo!()
}

/// One bit per 4 KiB block of the usable data. Set = out of sync with the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bitmap {
    words: Vec<u64>,
    blocks: u64,
    set: u64,
}

impl Bitmap {
    pub fn new(usable_bytes: u64) -> Bitmap {
        let blocks = usable_bytes / BLOCK_BYTES;
        Bitmap { words: vec![0; blocks.div_ceil(64) as usize], blocks, set: 0 }
    }
    pub fn blocks(&self) -> u64 {
        self.blocks
    }
    /// Bits set.
    pub fn count(&self) -> u64 {
        self.set
    }
    /// Marks the blocks covering [offset, offset+len) out of sync.
    pub fn set_range(&mut self, offset: u64, len: u64) {
        let _ = (offset, len, &mut self.words);
        todo!()
    }
    pub fn clear_range(&mut self, offset: u64, len: u64) {
        let _ = (offset, len);
        todo!()
    }
    pub fn set_all(&mut self) {
        todo!()
    }
    pub fn is_set(&self, block: u64) -> bool {
        let _ = block;
        todo!()
    }
    /// First set block at or after `from`.
    pub fn next_set(&self, from: u64) -> Option<u64> {
        let _ = from;
        todo!()
    }
    /// ORs the peer's bitmap words in (the bitmap exchange before a resync).
    pub fn merge_words(&mut self, first_word: usize, words: &[u64]) {
        let _ = (first_word, words);
        todo!()
    }
    pub fn words(&self) -> &[u64] {
        &self.words
    }
    /// The on-disk bytes of the words covering [offset, offset+len) of data,
    /// with the metadata-area offset to write them at (whole 4 KiB pages, so a
    /// bitmap update is one page write). Returns (meta_offset, bytes).
    pub fn encode_pages(&self, layout: &Layout, offset: u64, len: u64) -> Vec<(u64, Payload)> {
        let _ = (layout, offset, len);
        todo!()
    }
    /// Decodes the whole on-disk bitmap.
    pub fn decode(usable_bytes: u64, bytes: &[u8]) -> Bitmap {
        let _ = (usable_bytes, bytes);
        todo!()
    }
}

/// Superblock encoding (fixed size, magic, version, CRC32C).
pub fn encode_superblock(md: &Metadata) -> Vec<u8> {
    let _ = md;
    todo!()
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MdError {
    /// No metadata here (never created): `bascule disk create-md RES`.
    NotCreated,
    BadChecksum,
    UnsupportedVersion(u32),
    SizeMismatch { recorded: u64, actual: u64 },
}

pub fn decode_superblock(bytes: &[u8]) -> Result<Metadata, MdError> {
    let _ = bytes;
    todo!()
}

/// The activity log: the 4 MiB extents a Primary may be writing. Before a write
/// to an extent not in the log, the engine records the extent (one small
/// transaction write in the AL area) so that after a Primary crash only the
/// extents in the log need a resync. ACTIVITY_LOG_EXTENTS hot extents, LRU.
pub const AL_EXTENT_BYTES: u64 = 4 << 20;
pub const ACTIVITY_LOG_EXTENTS: usize = 127;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActivityLog {
    // owned by the md writer
    _private: (),
}

impl ActivityLog {
    pub fn new() -> ActivityLog {
        todo!()
    }
    /// The extent of a write at `offset`; Some(transaction) when it must be
    /// recorded on disk (at Layout::al_offset + returned offset) before the write
    /// may proceed; None when already hot.
    pub fn touch(&mut self, offset: u64, layout: &Layout) -> Option<(u64, Payload)> {
        let _ = (offset, layout);
        todo!()
    }
    /// Extents recorded in the on-disk log (after a crash): (offset, len) ranges
    /// of data to mark out of sync.
    pub fn decode_extents(bytes: &[u8]) -> Vec<(u64, u64)> {
        let _ = bytes;
        todo!()
    }
}
