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

/// Bytes of the superblock (a whole page so it is written atomically by any
/// disk with 4 KiB sectors, and never shares a page with the bitmap).
pub const SUPERBLOCK_BYTES: u64 = 4096;
/// Slots of the activity log ring: one 4 KiB transaction record each. Eight
/// slots so a torn write of the newest record still leaves seven older ones.
pub const AL_SLOTS: u64 = 8;
/// Bytes of one activity-log transaction record.
pub const AL_SLOT_BYTES: u64 = 4096;
/// Bytes of the activity log area (32 KiB, as DRBD 8).
pub const AL_BYTES: u64 = AL_SLOTS * AL_SLOT_BYTES;
/// Bytes of one bitmap page: the unit of a bitmap write.
pub const BITMAP_PAGE_BYTES: u64 = 4096;
/// Data bytes one bitmap page covers: 32768 bits of 4 KiB = 128 MiB.
pub const BITMAP_PAGE_COVERS: u64 = BITMAP_PAGE_BYTES * 8 * BLOCK_BYTES;

/// Bitmap area bytes for `usable_bytes` of data: 1 bit per 4 KiB block,
/// rounded up to whole 4 KiB pages.
pub fn bitmap_area_bytes(usable_bytes: u64) -> u64 {
    usable_bytes.div_ceil(BITMAP_PAGE_COVERS) * BITMAP_PAGE_BYTES
}

impl Layout {
    /// Layout for internal metadata at the end of a backing device of `backing_bytes`.
    /// None when the device is too small to hold any data.
    ///
    /// As DRBD 8, from the device's end backwards: superblock (last 4 KiB of
    /// the 4 KiB-rounded device), activity log, bitmap; the data is the largest
    /// multiple of 4 KiB in front of them. The layout depends only on
    /// `backing_bytes`, so attach finds the superblock without reading
    /// anything first.
    pub fn internal(backing_bytes: u64) -> Option<Layout> {
        let device = backing_bytes / BLOCK_BYTES * BLOCK_BYTES;
        let fixed = SUPERBLOCK_BYTES + AL_BYTES;
        let room = device.checked_sub(fixed)?;
        // With p bitmap pages the data is min(p pages' coverage, what is left
        // after them): increasing then decreasing in p; the best p is next to
        // the crossing room / (coverage + page).
        let cross = room / (BITMAP_PAGE_COVERS + BITMAP_PAGE_BYTES);
        let usable_for = |pages: u64| {
            let left = room.saturating_sub(pages * BITMAP_PAGE_BYTES);
            left.min(pages * BITMAP_PAGE_COVERS)
        };
        let usable_bytes = usable_for(cross).max(usable_for(cross + 1));
        if usable_bytes == 0 {
            return None;
        }
        let bitmap_bytes = bitmap_area_bytes(usable_bytes);
        let meta_bytes = bitmap_bytes + AL_BYTES + SUPERBLOCK_BYTES;
        let meta_base = device - meta_bytes;
        debug_assert!(usable_bytes <= meta_base && usable_bytes % BLOCK_BYTES == 0);
        Some(Layout {
            usable_bytes,
            meta_base,
            superblock_offset: bitmap_bytes + AL_BYTES,
            al_offset: bitmap_bytes,
            al_bytes: AL_BYTES,
            bitmap_offset: 0,
            bitmap_bytes,
            meta_bytes,
        })
    }
    /// Layout for external metadata: the data is the whole backing device.
    /// The meta area (its own file) holds superblock, activity log, bitmap in
    /// that order, so its size check needs only [`Layout::meta_bytes`].
    pub fn external(backing_bytes: u64) -> Layout {
        let usable_bytes = backing_bytes / BLOCK_BYTES * BLOCK_BYTES;
        let bitmap_bytes = bitmap_area_bytes(usable_bytes);
        Layout {
            usable_bytes,
            meta_base: 0,
            superblock_offset: 0,
            al_offset: SUPERBLOCK_BYTES,
            al_bytes: AL_BYTES,
            bitmap_offset: SUPERBLOCK_BYTES + AL_BYTES,
            bitmap_bytes,
            meta_bytes: SUPERBLOCK_BYTES + AL_BYTES + bitmap_bytes,
        }
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
pub fn sync_decision(
    local: &UuidView,
    peer: &UuidView,
    local_is_lower_tiebreak: bool,
) -> SyncDecision {
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
        Bitmap {
            words: vec![0; blocks.div_ceil(64) as usize],
            blocks,
            set: 0,
        }
    }
    pub fn blocks(&self) -> u64 {
        self.blocks
    }
    /// Bits set.
    pub fn count(&self) -> u64 {
        self.set
    }
    /// Marks the blocks covering [offset, offset+len) out of sync: every block
    /// the range touches, even partly (a partial write makes the block differ).
    /// The part beyond the data is ignored.
    pub fn set_range(&mut self, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        let first = offset / BLOCK_BYTES;
        let end = offset.saturating_add(len).div_ceil(BLOCK_BYTES);
        self.apply(first, end, true);
    }
    /// Marks the blocks inside [offset, offset+len) in sync: only blocks the
    /// range covers whole (a block half written to both sides may still differ
    /// in its other half).
    pub fn clear_range(&mut self, offset: u64, len: u64) {
        let first = offset.div_ceil(BLOCK_BYTES);
        let end = offset.saturating_add(len) / BLOCK_BYTES;
        self.apply(first, end, false);
    }
    pub fn set_all(&mut self) {
        self.apply(0, self.blocks, true);
    }
    /// Whether `block` is out of sync; false beyond the data.
    pub fn is_set(&self, block: u64) -> bool {
        block < self.blocks && self.words[(block / 64) as usize] & (1u64 << (block % 64)) != 0
    }
    /// First set block at or after `from`.
    pub fn next_set(&self, from: u64) -> Option<u64> {
        if from >= self.blocks {
            return None;
        }
        let mut index = (from / 64) as usize;
        let mut word = self.words[index] & (!0u64 << (from % 64));
        loop {
            if word != 0 {
                // Bits beyond `blocks` are never set, so this is in range.
                return Some(index as u64 * 64 + u64::from(word.trailing_zeros()));
            }
            index += 1;
            word = *self.words.get(index)?;
        }
    }
    /// ORs the peer's bitmap words in (the bitmap exchange before a resync).
    /// Words beyond this bitmap, and bits beyond the data in the last word,
    /// are dropped: a peer with a larger device cannot mark blocks we lack.
    pub fn merge_words(&mut self, first_word: usize, words: &[u64]) {
        let tail = self.tail_mask();
        let last = self.words.len();
        for (i, w) in words.iter().enumerate() {
            let index = match first_word.checked_add(i) {
                Some(index) if index < last => index,
                _ => break,
            };
            let mask = if index + 1 == last { tail } else { !0 };
            let old = self.words[index];
            let new = old | (w & mask);
            self.set += u64::from(new.count_ones() - old.count_ones());
            self.words[index] = new;
        }
    }
    pub fn words(&self) -> &[u64] {
        &self.words
    }
    /// The on-disk bytes of the words covering [offset, offset+len) of data,
    /// with the metadata-area offset to write them at (whole 4 KiB pages, so a
    /// bitmap update is one page write). Returns (meta_offset, bytes).
    ///
    /// Words are little-endian u64 (word i at byte 8*i of the bitmap area),
    /// bit b of a word is block 64*i+b. Consecutive pages are coalesced into
    /// one write of at most [`super::MAX_IO_BYTES`]. Empty for an empty range.
    pub fn encode_pages(&self, layout: &Layout, offset: u64, len: u64) -> Vec<(u64, Payload)> {
        let data_end = self.blocks * BLOCK_BYTES;
        let end = offset.saturating_add(len).min(data_end);
        if len == 0 || offset >= end {
            return Vec::new();
        }
        let first_page = offset / BITMAP_PAGE_COVERS;
        let end_page = end.div_ceil(BITMAP_PAGE_COVERS);
        let pages_per_write = super::MAX_IO_BYTES as u64 / BITMAP_PAGE_BYTES;
        let words_per_page = (BITMAP_PAGE_BYTES / 8) as usize;
        let mut out = Vec::new();
        let mut page = first_page;
        while page < end_page {
            let count = (end_page - page).min(pages_per_write);
            let mut bytes = Vec::with_capacity((count * BITMAP_PAGE_BYTES) as usize);
            let first_word = page as usize * words_per_page;
            for index in first_word..first_word + count as usize * words_per_page {
                let w = self.words.get(index).copied().unwrap_or(0);
                bytes.extend_from_slice(&w.to_le_bytes());
            }
            let at = layout.bitmap_offset + page * BITMAP_PAGE_BYTES;
            debug_assert!(at + bytes.len() as u64 <= layout.bitmap_offset + layout.bitmap_bytes);
            out.push((at, Payload::new(bytes)));
            page += count;
        }
        out
    }
    /// Decodes the whole on-disk bitmap (the bytes of the bitmap area, from
    /// its start). Missing bytes read as in sync; bits beyond the data are
    /// ignored, so a stale tail cannot make the count wrong.
    pub fn decode(usable_bytes: u64, bytes: &[u8]) -> Bitmap {
        let mut bitmap = Bitmap::new(usable_bytes);
        let words: Vec<u64> = bytes
            .chunks(8)
            .take(bitmap.words.len())
            .map(|c| {
                let mut b = [0u8; 8];
                b[..c.len()].copy_from_slice(c);
                u64::from_le_bytes(b)
            })
            .collect();
        bitmap.merge_words(0, &words);
        bitmap
    }

    /// Bits of the last word that are real blocks.
    fn tail_mask(&self) -> u64 {
        match self.blocks % 64 {
            0 => !0,
            n => (1u64 << n) - 1,
        }
    }

    /// Sets or clears blocks [first, end) (clamped to the data), keeping the count.
    fn apply(&mut self, first: u64, end: u64, value: bool) {
        let end = end.min(self.blocks);
        let mut block = first;
        while block < end {
            let index = (block / 64) as usize;
            let lo = block % 64;
            let hi = (end - index as u64 * 64).min(64);
            let mask = if hi - lo == 64 {
                !0u64
            } else {
                ((1u64 << (hi - lo)) - 1) << lo
            };
            let old = self.words[index];
            let new = if value { old | mask } else { old & !mask };
            self.set = self.set + u64::from(new.count_ones()) - u64::from(old.count_ones());
            self.words[index] = new;
            block = index as u64 * 64 + hi;
        }
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
    SizeMismatch {
        recorded: u64,
        actual: u64,
    },
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

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    // Tests for Layout.

    /// Every internal layout: data, then meta area, inside the device, no
    /// overlap, bitmap large enough, and no page of data given away needlessly.
    #[track_caller]
    fn check_internal(backing: u64) -> Layout {
        let l = Layout::internal(backing).expect("layout");
        assert_eq!(l.usable_bytes % BLOCK_BYTES, 0);
        assert!(l.usable_bytes > 0);
        assert!(l.usable_bytes <= l.meta_base, "{l:?}");
        assert_eq!(l.meta_base + l.meta_bytes, backing / 4096 * 4096, "{l:?}");
        assert_eq!(l.meta_base % 4096, 0);
        assert_eq!(l.bitmap_offset, 0);
        assert_eq!(l.al_offset, l.bitmap_bytes);
        assert_eq!(l.al_bytes, AL_BYTES);
        assert_eq!(l.superblock_offset, l.meta_bytes - SUPERBLOCK_BYTES);
        assert!(l.bitmap_bytes * 8 * BLOCK_BYTES >= l.usable_bytes);
        assert_eq!(l.bitmap_bytes, bitmap_area_bytes(l.usable_bytes));
        // One more data page would not fit with the bitmap it needs.
        let more = l.usable_bytes + BLOCK_BYTES;
        assert!(
            more + bitmap_area_bytes(more) + AL_BYTES + SUPERBLOCK_BYTES > backing,
            "{l:?}"
        );
        l
    }

    #[test]
    fn internal_layout_1gib() {
        let l = check_internal(GIB);
        // 8 bitmap pages cover 1 GiB; the data loses them plus 36 KiB.
        assert_eq!(l.bitmap_bytes, 8 * 4096);
        assert_eq!(l.usable_bytes, GIB - 8 * 4096 - AL_BYTES - SUPERBLOCK_BYTES);
        assert_eq!(l.meta_bytes, 8 * 4096 + AL_BYTES + SUPERBLOCK_BYTES);
    }

    #[test]
    fn internal_layout_various_sizes() {
        for backing in [
            44 * 1024,
            44 * 1024 + 4095,
            64 * MIB,
            128 * MIB,
            128 * MIB + 36 * 1024 + 4096,
            128 * MIB + 36 * 1024 + 8192,
            100 * GIB + 12345,
            3 * (1u64 << 40),
        ] {
            check_internal(backing);
        }
        for backing in (36 * 1024..200 * 1024).step_by(511) {
            if Layout::internal(backing).is_some() {
                check_internal(backing);
            }
        }
    }

    #[test]
    fn internal_layout_crossing_a_bitmap_page() {
        // Exactly one page of bitmap plus the 128 MiB it covers.
        let backing = 128 * MIB + 4096 + AL_BYTES + SUPERBLOCK_BYTES;
        let l = check_internal(backing);
        assert_eq!(l.usable_bytes, 128 * MIB);
        assert_eq!(l.bitmap_bytes, 4096);
        // One page more goes to a second bitmap page, with no data for it;
        // with three pages more the data gains two.
        let l = check_internal(backing + 4096);
        assert_eq!(l.usable_bytes, 128 * MIB);
        let l = check_internal(backing + 3 * 4096);
        assert_eq!(l.usable_bytes, 128 * MIB + 8192);
        assert_eq!(l.bitmap_bytes, 2 * 4096);
    }

    #[test]
    fn internal_layout_too_small() {
        assert_eq!(Layout::internal(0), None);
        assert_eq!(Layout::internal(SUPERBLOCK_BYTES + AL_BYTES), None);
        assert_eq!(Layout::internal(SUPERBLOCK_BYTES + AL_BYTES + 4096), None);
        let l = check_internal(SUPERBLOCK_BYTES + AL_BYTES + 8192);
        assert_eq!(l.usable_bytes, 4096);
    }

    #[test]
    fn external_layout() {
        let l = Layout::external(GIB + 100);
        assert_eq!(l.usable_bytes, GIB);
        assert_eq!(l.meta_base, 0);
        assert_eq!(l.superblock_offset, 0);
        assert_eq!(l.al_offset, SUPERBLOCK_BYTES);
        assert_eq!(l.bitmap_offset, SUPERBLOCK_BYTES + AL_BYTES);
        assert_eq!(l.bitmap_bytes, 8 * 4096);
        assert_eq!(l.meta_bytes, SUPERBLOCK_BYTES + AL_BYTES + 8 * 4096);
        let l = Layout::external(0);
        assert_eq!((l.usable_bytes, l.bitmap_bytes), (0, 0));
    }

    // Tests for Bitmap.

    /// The count is the number of set bits, recomputed the slow way.
    #[track_caller]
    fn check_count(b: &Bitmap) {
        let slow: u64 = (0..b.blocks()).filter(|&i| b.is_set(i)).count() as u64;
        assert_eq!(b.count(), slow);
        let ones: u64 = b.words().iter().map(|w| u64::from(w.count_ones())).sum();
        assert_eq!(b.count(), ones, "bits beyond the data are set");
    }

    #[test]
    fn bitmap_set_range_partial_blocks() {
        let mut b = Bitmap::new(1000 * 4096 + 100);
        assert_eq!(b.blocks(), 1000);
        b.set_range(4095, 2);
        assert!(b.is_set(0) && b.is_set(1) && !b.is_set(2));
        b.set_range(64 * 4096, 4096);
        assert!(b.is_set(64) && !b.is_set(63) && !b.is_set(65));
        assert_eq!(b.count(), 3);
        b.set_range(10 * 4096, 0);
        assert_eq!(b.count(), 3);
        check_count(&b);
    }

    #[test]
    fn bitmap_ranges_across_words_and_end() {
        let mut b = Bitmap::new(200 * 4096);
        b.set_range(60 * 4096, 80 * 4096); // blocks 60..140
        assert_eq!(b.count(), 80);
        assert!(!b.is_set(59) && b.is_set(60) && b.is_set(139) && !b.is_set(140));
        check_count(&b);
        // Beyond the end is ignored.
        b.set_range(190 * 4096, 100 * 4096);
        assert_eq!(b.count(), 90);
        b.set_range(u64::MAX - 10, 100);
        assert_eq!(b.count(), 90);
        assert!(!b.is_set(200) && !b.is_set(u64::MAX));
        check_count(&b);
        b.clear_range(64 * 4096, 64 * 4096);
        assert_eq!(b.count(), 90 - 64);
        assert!(b.is_set(63) && !b.is_set(64) && !b.is_set(127) && b.is_set(128));
        check_count(&b);
    }

    #[test]
    fn bitmap_clear_range_only_whole_blocks() {
        let mut b = Bitmap::new(10 * 4096);
        b.set_all();
        assert_eq!(b.count(), 10);
        b.clear_range(100, 4096); // covers no block whole
        assert_eq!(b.count(), 10);
        b.clear_range(100, 2 * 4096); // covers block 1 whole
        assert!(b.is_set(0) && !b.is_set(1) && b.is_set(2));
        b.clear_range(0, u64::MAX);
        assert_eq!(b.count(), 0);
        check_count(&b);
    }

    #[test]
    fn bitmap_set_all_masks_the_tail() {
        for blocks in [0, 1, 63, 64, 65, 127, 128, 1000] {
            let mut b = Bitmap::new(blocks * 4096);
            b.set_all();
            assert_eq!(b.count(), blocks);
            check_count(&b);
            b.set_all();
            assert_eq!(b.count(), blocks);
        }
    }

    #[test]
    fn bitmap_next_set() {
        let mut b = Bitmap::new(300 * 4096);
        assert_eq!(b.next_set(0), None);
        for block in [0, 5, 63, 64, 200, 299] {
            b.set_range(block * 4096, 1);
        }
        let mut found = Vec::new();
        let mut at = 0;
        while let Some(block) = b.next_set(at) {
            found.push(block);
            at = block + 1;
        }
        assert_eq!(found, vec![0, 5, 63, 64, 200, 299]);
        assert_eq!(b.next_set(65), Some(200));
        assert_eq!(b.next_set(300), None);
        assert_eq!(b.next_set(u64::MAX), None);
    }

    #[test]
    fn bitmap_merge_words() {
        let mut b = Bitmap::new(100 * 4096); // 2 words, 36 bits in the last
        b.set_range(0, 4096);
        b.merge_words(0, &[0b11, !0, !0, !0]);
        assert_eq!(b.count(), 2 + 36);
        check_count(&b);
        b.merge_words(1, &[1]);
        assert_eq!(b.count(), 38);
        b.merge_words(5, &[!0]);
        b.merge_words(usize::MAX, &[!0, !0]);
        assert_eq!(b.count(), 38);
        check_count(&b);
    }

    #[test]
    fn bitmap_encode_decode_round_trip() {
        let usable = 300 * MIB; // 3 bitmap pages, the last partly used
        let layout = Layout::external(usable);
        let mut b = Bitmap::new(usable);
        b.set_range(0, 1);
        b.set_range(129 * MIB, 8192);
        b.set_range(usable - 4096, 4096);
        let pages = b.encode_pages(&layout, 0, usable);
        assert_eq!(pages.len(), 1, "consecutive pages are one write");
        assert_eq!(pages[0].0, layout.bitmap_offset);
        assert_eq!(pages[0].1.len() as u64, layout.bitmap_bytes);
        let back = Bitmap::decode(usable, &pages[0].1);
        assert_eq!(back, b);
        // A short read is zeroes; a stale tail beyond the data is ignored.
        let mut bytes: Vec<u8> = pages[0].1.as_ref().clone();
        let last = bytes.len() - 1;
        bytes[last] = 0xff;
        let back = Bitmap::decode(usable, &bytes);
        assert_eq!(back, b);
        let back = Bitmap::decode(usable, &bytes[..4096]);
        assert_eq!(back.count(), 1);
        check_count(&back);
    }

    #[test]
    fn bitmap_encode_one_page_per_small_update() {
        let usable = 300 * MIB;
        let layout = Layout::internal(usable).unwrap();
        let mut b = Bitmap::new(layout.usable_bytes);
        b.set_range(129 * MIB, 1 << 20);
        let pages = b.encode_pages(&layout, 129 * MIB, 1 << 20);
        assert_eq!(pages.len(), 1);
        assert_eq!(pages[0].0, layout.bitmap_offset + 4096);
        assert_eq!(pages[0].1.len(), 4096);
        // The page holds the words at their place in the area.
        let word = ((MIB / 4096) as usize) / 64; // block 129 MiB/4K in page 1
        let w = u64::from_le_bytes(pages[0].1[word * 8..word * 8 + 8].try_into().unwrap());
        assert_eq!(w, !0);
        // A write straddling two pages is two pages, coalesced.
        let pages = b.encode_pages(&layout, 128 * MIB - 4096, 8192);
        assert_eq!(pages.len(), 1);
        assert_eq!(pages[0].0, layout.bitmap_offset);
        assert_eq!(pages[0].1.len(), 8192);
        assert!(b.encode_pages(&layout, 0, 0).is_empty());
        assert!(b
            .encode_pages(&layout, layout.usable_bytes, 4096)
            .is_empty());
    }

    #[test]
    fn bitmap_encode_splits_large_writes() {
        let usable = 300 * GIB; // 2400 pages
        let layout = Layout::external(usable);
        let b = Bitmap::new(usable);
        let pages = b.encode_pages(&layout, 0, usable);
        let total: u64 = pages.iter().map(|(_, p)| p.len() as u64).sum();
        assert_eq!(total, layout.bitmap_bytes);
        let mut at = layout.bitmap_offset;
        for (offset, p) in &pages {
            assert_eq!(*offset, at);
            assert!(p.len() <= super::super::MAX_IO_BYTES);
            at += p.len() as u64;
        }
    }
}
