//! On-disk metadata, DRBD 8 style: layout, superblock, generation identifiers
//! (and DRBD's comparison rules), the bitmap and the activity log.
//!
//! Layer: core (pure). The engine keeps the decoded [`Metadata`] and [`Bitmap`]
//! in memory and asks the shell to write the encoded bytes at [`Layout`] offsets
//! in the `DiskTarget::Meta` area. CONTRACT between the md and engine writers:
//! the signatures below; the md writer owns the bodies and may add items.
//!
//! On disk (all little-endian, every structure a whole 4 KiB page so one
//! write replaces it atomically on 4 KiB-sector disks): the superblock
//! (magic, version, MDF flags, uuids, size, generation, CRC32C); the
//! activity log, a ring of [`AL_SLOTS`] records each naming the whole hot
//! set (sequence number and CRC32C, so a torn record is skipped); the bitmap,
//! u64 words, bit b of word i = block 64*i+b. Internal metadata sits at the
//! end of the backing device as DRBD's: data, bitmap, AL, superblock.
//!
//! Uuid rules: [`compare`] is DRBD 8.4's drbd_uuid_compare (rule numbers in
//! comments and in [`UuidCompare::rule`]) plus drbd_sync_handshake's
//! disk-state override; the [`Uuids`] methods are DRBD's uuid life cycle;
//! [`after_sb_0pri`] and friends are drbd_asb_recover_*.

use super::engine::{AfterSb0, AfterSb1, AfterSb2};
use super::{Payload, BLOCK_BYTES};

/// CRC32C (Castagnoli), the checksum of the superblock and of AL records.
const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

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
            left.min(pages.saturating_mul(BITMAP_PAGE_COVERS))
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

/// DRBD's value of a current uuid that no data generation ever replaced:
/// `create-md` writes it, and two such disks need no initial sync.
pub const UUID_JUST_CREATED: u64 = 4;
/// What a sync source adds to its bitmap uuid when it starts a resync (DRBD's
/// UUID_NEW_BM_OFFSET), so a lost P_SYNC_UUID is recognisable (rules 51, 71).
pub const UUID_NEW_BM_OFFSET: u64 = 1 << 48;

/// A uuid without its "primary" bit: the value every comparison uses.
fn bare(uuid: u64) -> u64 {
    uuid & !1
}

impl Uuids {
    /// The identifiers `create-md` writes: no generation yet.
    pub fn just_created() -> Uuids {
        Uuids {
            current: UUID_JUST_CREATED,
            ..Uuids::default()
        }
    }

    /// Whether this node's current uuid says it is Primary (bit 0, kept by
    /// [`Uuids::set_primary`]); the peer's is read from its `ReportParams`.
    pub fn is_primary(&self) -> bool {
        self.current & 1 == 1
    }

    /// Sets or clears the "primary" bit of the current uuid (DRBD's
    /// __drbd_uuid_set on UI_CURRENT). The bit travels into the bitmap uuid
    /// at [`Uuids::new_current`], which is how discard-younger/older-primary
    /// later tell who was Primary when the data diverged.
    pub fn set_primary(&mut self, primary: bool) {
        self.current = bare(self.current) | u64::from(primary);
    }

    /// Shifts the history and puts `uuid` at its head (drbd_uuid_move_history).
    fn push_history(&mut self, uuid: u64) {
        self.history[1] = self.history[0];
        self.history[0] = uuid;
    }

    /// A new data generation starts here (drbd_uuid_new_current): a Primary
    /// lost its peer, or was promoted without one, or was forced. `fresh` is
    /// a random value from the caller (the core draws no randomness). The old
    /// current becomes the bitmap uuid, so the next connect knows the bitmap
    /// holds every change since the peer's current. If the bitmap uuid is
    /// already set (changes since an even older generation are still being
    /// tracked), it stays, and the old current goes to the history instead:
    /// a peer still at the bitmap uuid then resyncs by bitmap (rule 70)
    /// rather than not being recognised (DRBD overwrites it and warns).
    pub fn new_current(&mut self, fresh: u64) {
        let primary = self.is_primary();
        if self.bitmap == 0 {
            self.bitmap = self.current;
        } else {
            self.push_history(self.current);
        }
        let mut value = bare(fresh);
        // 0 and UUID_JUST_CREATED mean "no generation": never draw them.
        if value == 0 || value == UUID_JUST_CREATED {
            value ^= 0x5bd1_e995_0000_0000;
        }
        self.current = value | u64::from(primary);
    }

    /// Promotion (drbd_set_role): a new generation when the peer cannot see
    /// our writes (not connected, or its disk failed) and none was started
    /// since we last lost it (bitmap uuid unset), or always when `forced`
    /// (the guide's --do-what-I-say: our data is now the reference). Sets the
    /// primary bit. Returns true when the uuids changed generation (the
    /// engine writes the superblock before serving writes, and tells the peer).
    pub fn promote(&mut self, fresh: u64, peer_sees_writes: bool, forced: bool) -> bool {
        let new = (!peer_sees_writes && self.bitmap == 0) || forced;
        if new {
            self.new_current(fresh);
        }
        self.set_primary(true);
        new
    }

    /// Demotion: clears the primary bit (the generation stays).
    pub fn demote(&mut self) {
        self.set_primary(false);
    }

    /// The peer's disk became unreachable (connection lost, or its disk
    /// failed), DRBD's after_state_ch "lost contact to peer's data": a
    /// Primary with UpToDate data starts a new generation unless one is
    /// already running. Returns true when it did.
    pub fn lost_peer(&mut self, fresh: u64, primary: bool, up_to_date: bool) -> bool {
        let new = primary && up_to_date && self.bitmap == 0;
        if new {
            self.new_current(fresh);
        }
        new
    }

    /// The sync source starts a resync (drbd_gen_and_send_sync_uuid): a new
    /// bitmap uuid, derived from the old one (+UUID_NEW_BM_OFFSET) so that a
    /// lost P_SYNC_UUID can be undone (rules 51, 71), or `fresh` when there is
    /// none. The old one goes to the history. Returns the uuid to send in
    /// `PeerMsg::SyncUuid`.
    pub fn start_sync_source(&mut self, fresh: u64) -> u64 {
        let old = self.bitmap;
        let uuid = if old != 0 && old != UUID_JUST_CREATED {
            old.wrapping_add(UUID_NEW_BM_OFFSET)
        } else {
            match bare(fresh) {
                0 | UUID_JUST_CREATED => bare(fresh) ^ 0x6c07_8965_0000_0000,
                v => v,
            }
        };
        if old != 0 {
            self.push_history(old);
        }
        self.bitmap = bare(uuid);
        self.bitmap
    }

    /// The sync target received the source's `SyncUuid` (receive_sync_uuid):
    /// it takes it as its current (its data is now a mix, on its way to the
    /// source's generation) and drops its bitmap uuid; no history rotation.
    pub fn start_sync_target(&mut self, sync_uuid: u64) {
        let primary = self.is_primary();
        self.current = bare(sync_uuid) | u64::from(primary);
        self.bitmap = 0;
    }

    /// A resync finished on the source (drbd_resync_finished): both sides
    /// hold the same data, the bitmap uuid goes to the history.
    pub fn sync_finished_source(&mut self) {
        if self.bitmap != 0 {
            self.push_history(self.bitmap);
            self.bitmap = 0;
        }
    }

    /// A resync finished on the target (drbd_resync_finished): it takes the
    /// source's identifiers, so both sides compare equal afterwards, and ends
    /// with no bitmap uuid. `source`: the uuids the source reported, either
    /// before the sync (those [`compare`] saw, as DRBD's p_uuid) or after
    /// [`Uuids::start_sync_source`] (its bitmap uuid is then the sync uuid
    /// this node holds as current); both give what the source holds after
    /// [`Uuids::sync_finished_source`].
    pub fn sync_finished_target(&mut self, source: &Uuids) {
        let primary = self.is_primary();
        let mine = bare(self.current);
        if source.bitmap != 0 && bare(source.bitmap) == mine {
            // Reported after the sync started: finish it as the source will.
            let mut theirs = *source;
            theirs.sync_finished_source();
            self.history = theirs.history;
        } else {
            // DRBD: copy the peer's bitmap and history, drbd_uuid_set(UI_BITMAP,
            // own current) rotates, then drbd_uuid_set_bm(0) rotates again.
            self.history = source.history;
            if source.bitmap != 0 {
                self.push_history(source.bitmap);
            }
            self.push_history(mine);
        }
        self.bitmap = 0;
        self.current = bare(source.current) | u64::from(primary);
    }
}

/// DRBD's MDF_* bits as they are on disk and in `ReportParams::md_flags`.
pub mod mdf {
    pub const CONSISTENT: u32 = 1 << 0;
    pub const PRIMARY_IND: u32 = 1 << 1;
    pub const CONNECTED_IND: u32 = 1 << 2;
    pub const FULL_SYNC: u32 = 1 << 3;
    pub const WAS_UP_TO_DATE: u32 = 1 << 4;
    pub const PEER_OUT_DATED: u32 = 1 << 5;
}

impl MdFlags {
    /// DRBD's MDF bits (see [`mdf`]).
    pub fn to_bits(&self) -> u32 {
        let mut bits = 0;
        for (on, bit) in [
            (self.consistent, mdf::CONSISTENT),
            (self.primary_ind, mdf::PRIMARY_IND),
            (self.connected_ind, mdf::CONNECTED_IND),
            (self.full_sync, mdf::FULL_SYNC),
            (self.was_up_to_date, mdf::WAS_UP_TO_DATE),
            (self.peer_out_dated, mdf::PEER_OUT_DATED),
        ] {
            if on {
                bits |= bit;
            }
        }
        bits
    }
    /// Inverse of [`MdFlags::to_bits`]; unknown bits are ignored (a newer
    /// peer may send more).
    pub fn from_bits(bits: u32) -> MdFlags {
        MdFlags {
            consistent: bits & mdf::CONSISTENT != 0,
            primary_ind: bits & mdf::PRIMARY_IND != 0,
            connected_ind: bits & mdf::CONNECTED_IND != 0,
            full_sync: bits & mdf::FULL_SYNC != 0,
            was_up_to_date: bits & mdf::WAS_UP_TO_DATE != 0,
            peer_out_dated: bits & mdf::PEER_OUT_DATED != 0,
        }
    }
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

impl Metadata {
    /// What `create-md` writes: no generation, Inconsistent, for this size.
    pub fn created(usable_bytes: u64) -> Metadata {
        Metadata {
            uuids: Uuids::just_created(),
            flags: MdFlags::default(),
            usable_bytes,
            generation: 0,
        }
    }
    /// Refuses metadata made for another size (the device was resized, or the
    /// config points at another disk): the bitmap would not cover the data.
    pub fn check_size(&self, layout: &Layout) -> Result<(), MdError> {
        if self.usable_bytes == layout.usable_bytes {
            Ok(())
        } else {
            Err(MdError::SizeMismatch {
                recorded: self.usable_bytes,
                actual: layout.usable_bytes,
            })
        }
    }
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

/// The outcome of [`compare`]: the decision, and what the engine logs and
/// keeps from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UuidCompare {
    pub decision: SyncDecision,
    /// DRBD's rule number (drbd_uuid_compare), for the log line.
    pub rule: u32,
    /// The disk states overrode the uuids (drbd_sync_handshake: a consistent
    /// side always syncs an inconsistent one).
    pub by_disk_state: bool,
    /// Rules 34 and 71: this node missed the end of, or a lost packet of, an
    /// earlier resync as source; these corrected uuids replace its own (and
    /// are written to the superblock) before the sync starts.
    pub fixed_local: Option<Uuids>,
}

/// Compares both sides (rule numbers as DRBD's uuid_compare in comments).
/// `local_is_lower_tiebreak`: breaks the "both were primary, crashed" tie.
/// Exactly one of the two nodes passes true; that node keeps its data
/// (becomes the source) whenever nothing else decides.
pub fn sync_decision(
    local: &UuidView,
    peer: &UuidView,
    local_is_lower_tiebreak: bool,
) -> SyncDecision {
    compare(local, peer, local_is_lower_tiebreak).decision
}

/// [`sync_decision`] with the rule that decided it. The views' current uuids
/// carry the sides' present roles in bit 0 ([`Uuids::set_primary`]); their
/// `flags.primary_ind` say "was Primary and did not demote cleanly"
/// (DRBD's CRASHED_PRIMARY); `flags.consistent` false means Inconsistent.
///
/// A `Source` decision for a local side that is not consistent cannot be
/// carried out (DRBD: "I shall become SyncSource, but I am inconsistent!"):
/// the engine refuses the connection then.
pub fn compare(local: &UuidView, peer: &UuidView, local_is_lower_tiebreak: bool) -> UuidCompare {
    let mut out = uuid_rules(
        &local.uuids,
        &peer.uuids,
        local,
        peer,
        local_is_lower_tiebreak,
    );
    // Both nodes decide on their own; the rules are ordered, so histories
    // that contradict each other (each side's current in the other's past:
    // corruption or a uuid collision, never a real sequence of events) can
    // make both sides "Target". Running the peer's comparison too and
    // calling any disagreement a split brain (rule 110, bascule's own) makes
    // the two decisions mirror images by construction.
    let theirs = uuid_rules(
        &peer.uuids,
        &local.uuids,
        peer,
        local,
        !local_is_lower_tiebreak,
    );
    if mirror(theirs.decision) != out.decision {
        out = UuidCompare {
            decision: SyncDecision::SplitBrain,
            rule: 110,
            by_disk_state: false,
            fixed_local: None,
        };
    }
    // drbd_sync_handshake: disk states beat uuids when exactly one side is
    // Inconsistent; the uuids' "full" (or an ambiguous split brain) carries over.
    let (l_ok, p_ok) = (local.flags.consistent, peer.flags.consistent);
    if l_ok != p_ok && out.decision != SyncDecision::Unrelated {
        let full = match out.decision {
            SyncDecision::Source { full } | SyncDecision::Target { full } => full,
            SyncDecision::SplitBrain => out.rule != 90,
            _ => false,
        };
        let decision = if l_ok {
            SyncDecision::Source { full }
        } else {
            SyncDecision::Target { full }
        };
        out.by_disk_state = decision != out.decision;
        out.decision = decision;
    }
    out
}

/// The decision as the other side sees it.
fn mirror(decision: SyncDecision) -> SyncDecision {
    match decision {
        SyncDecision::Source { full } => SyncDecision::Target { full },
        SyncDecision::Target { full } => SyncDecision::Source { full },
        other => other,
    }
}

/// drbd_uuid_compare, rule by rule (DRBD 8.4, protocol >= 96 variants).
fn uuid_rules(l: &Uuids, p: &Uuids, lv: &UuidView, pv: &UuidView, lower: bool) -> UuidCompare {
    use SyncDecision::*;
    let done = |decision, rule| UuidCompare {
        decision,
        rule,
        by_disk_state: false,
        fixed_local: None,
    };
    // A zero current is as good as just created (DRBD treats it so in rules
    // 20 and 30; also here in 10, so two all-zero sides agree on NoSync).
    let created = |u: u64| bare(u) == UUID_JUST_CREATED || bare(u) == 0;
    let (l_cur, p_cur) = (bare(l.current), bare(p.current));

    // Rule 10: both just created: identical (empty) data.
    if created(l_cur) && created(p_cur) {
        return done(NoSync, 10);
    }
    // Rule 20: only we are new: everything comes from the peer.
    if created(l_cur) {
        return done(Target { full: true }, 20);
    }
    // Rule 30: only the peer is new.
    if created(p_cur) {
        return done(Source { full: true }, 30);
    }
    if l_cur == p_cur {
        // Rules 34/36: we still hold a bitmap uuid the peer has not: we were
        // SyncSource and missed the "resync finished" (34: the peer's history
        // proves it, correct ourselves) or the peer lost the sync uuid (36).
        if p.bitmap == 0 && l.bitmap != 0 {
            if bare(l.bitmap) == bare(p.history[0]) && bare(l.history[0]) == bare(p.history[1]) {
                let mut fixed = *l;
                fixed.push_history(fixed.bitmap);
                fixed.bitmap = 0;
                return UuidCompare {
                    fixed_local: Some(fixed),
                    ..done(Source { full: false }, 34)
                };
            }
            return done(Source { full: false }, 36);
        }
        // Rules 35/37: the mirror image: we were SyncTarget.
        if l.bitmap == 0 && p.bitmap != 0 {
            let corrected =
                bare(l.history[0]) == bare(p.bitmap) && bare(l.history[1]) == bare(p.history[0]);
            return done(Target { full: false }, if corrected { 35 } else { 37 });
        }
        // Rule 40: same generation and no bitmap uuid: only a crash of a
        // Primary can have left blocks differing (its activity log is in its
        // bitmap); neither crashed: a link hiccup, nothing to do.
        let rct = u8::from(lv.flags.primary_ind) + 2 * u8::from(pv.flags.primary_ind);
        if rct == 0 {
            return done(NoSync, 40);
        }
        // Rule 41: a Primary is present now: it keeps its data (two
        // Primaries with an unrotated generation "cannot happen": refuse).
        let (l_pri, p_pri) = (l.is_primary(), p.is_primary());
        if l_pri || p_pri {
            let decision = match (l_pri, p_pri) {
                (true, true) => SplitBrain,
                (true, false) => Source { full: false },
                _ => Target { full: false },
            };
            return done(decision, 41);
        }
        // Rule 40 (both Secondary now): the one that crashed as Primary is
        // the source; both crashed: the tiebreak.
        let decision = match rct {
            1 => Source { full: false },
            2 => Target { full: false },
            _ if lower => Source { full: false },
            _ => Target { full: false },
        };
        return done(decision, 40);
    }
    // Rule 50: the peer's bitmap tracks every change since our generation.
    if l_cur == bare(p.bitmap) {
        return done(Target { full: false }, 50);
    }
    // Rule 51: the same, but the peer started a resync as source and we
    // never got its sync uuid (its bitmap uuid is its previous one + offset).
    let p_h0 = bare(p.history[0]);
    if l_cur == p_h0 && p_h0 != 0 && p_h0.wrapping_add(UUID_NEW_BM_OFFSET) == bare(p.bitmap) {
        return done(Target { full: false }, 51);
    }
    // Rule 60: our generation is in the peer's past, beyond its bitmap.
    if p.history.iter().any(|&h| bare(h) == l_cur) {
        return done(Target { full: true }, 60);
    }
    // Rule 70: our bitmap tracks every change since the peer's generation.
    if bare(l.bitmap) == p_cur {
        return done(Source { full: false }, 70);
    }
    // Rule 71: mirror of 51; we undo our own lost sync-uuid step.
    let l_h0 = bare(l.history[0]);
    if l_h0 == p_cur && l_h0.wrapping_add(UUID_NEW_BM_OFFSET) == bare(l.bitmap) {
        let mut fixed = *l;
        fixed.bitmap = l.history[0];
        fixed.history[0] = l.history[1];
        return UuidCompare {
            fixed_local: Some(fixed),
            ..done(Source { full: false }, 71)
        };
    }
    // Rule 80: the peer's generation is in our past, beyond our bitmap.
    if l.history.iter().any(|&h| bare(h) == p_cur) {
        return done(Source { full: true }, 80);
    }
    // Rule 90: both started a new generation from the same one: split
    // brain, and both bitmaps together cover the difference (auto-recoverable).
    if bare(l.bitmap) == bare(p.bitmap) && bare(l.bitmap) != 0 {
        return done(SplitBrain, 90);
    }
    // Rule 100: a common ancestor further back: split brain, a resync must be
    // full. (Empty history slots do not count as common, unlike DRBD 8.4.)
    for lh in l.history.iter().map(|&h| bare(h)).filter(|&h| h != 0) {
        if p.history.iter().any(|&ph| bare(ph) == lh) {
            return done(SplitBrain, 100);
        }
    }
    // Rule 1000 (-1000 in DRBD): unrelated data.
    done(Unrelated, 1000)
}

/// Which side's changes a split-brain resolution throws away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Discard {
    /// This node becomes SyncTarget.
    Local,
    /// The peer becomes SyncTarget.
    Peer,
}

impl Discard {
    fn flip(self) -> Discard {
        match self {
            Discard::Local => Discard::Peer,
            Discard::Peer => Discard::Local,
        }
    }
}

/// The decision once a split brain is resolved by discarding one side: a
/// bitmap resync when both sides diverged from the same generation (rule 90:
/// the union of both bitmaps covers every difference), else a full one.
pub fn resolved_decision(discard: Discard, local: &UuidView, peer: &UuidView) -> SyncDecision {
    let (lb, pb) = (bare(local.uuids.bitmap), bare(peer.uuids.bitmap));
    let full = !(lb == pb && lb != 0);
    match discard {
        Discard::Local => SyncDecision::Target { full },
        Discard::Peer => SyncDecision::Source { full },
    }
}

/// `after-sb-0pri` (drbd_asb_recover_0p): no Primary now. None: not
/// resolved (disconnect). Younger/older primary fall back to zero-changes
/// then least-changes when the bitmap uuids do not tell (both or neither
/// were Primary when they diverged); ties go to the tiebreak: the node with
/// `local_is_lower_tiebreak` keeps its data.
pub fn after_sb_0pri(
    policy: AfterSb0,
    local: &UuidView,
    peer: &UuidView,
    local_is_lower_tiebreak: bool,
) -> Option<Discard> {
    // Bit 0 of the bitmap uuid: this side was Primary when it diverged.
    let l_pri = local.uuids.bitmap & 1 == 1;
    let p_pri = peer.uuids.bitmap & 1 == 1;
    let (l_ch, p_ch) = (local.dirty_blocks, peer.dirty_blocks);
    let tie = if local_is_lower_tiebreak {
        Discard::Peer
    } else {
        Discard::Local
    };
    let least = || match l_ch.cmp(&p_ch) {
        std::cmp::Ordering::Less => Discard::Local,
        std::cmp::Ordering::Greater => Discard::Peer,
        std::cmp::Ordering::Equal => tie,
    };
    let zero = || match (l_ch == 0, p_ch == 0) {
        (true, true) => Some(tie),
        (true, false) => Some(Discard::Local),
        (false, true) => Some(Discard::Peer),
        (false, false) => None,
    };
    // The younger Primary is the one that was not Primary at divergence.
    let younger = match (l_pri, p_pri) {
        (false, true) => Some(Discard::Local),
        (true, false) => Some(Discard::Peer),
        _ => None,
    };
    match policy {
        AfterSb0::Disconnect => None,
        AfterSb0::DiscardYoungerPrimary => younger.or_else(zero).or_else(|| Some(least())),
        AfterSb0::DiscardOlderPrimary => younger
            .map(Discard::flip)
            .or_else(zero)
            .or_else(|| Some(least())),
        AfterSb0::DiscardZeroChanges => zero(),
        AfterSb0::DiscardLeastChanges => Some(least()),
        AfterSb0::DiscardNode(local_discards) => Some(if local_discards {
            Discard::Local
        } else {
            Discard::Peer
        }),
    }
}

/// `after-sb-1pri` (drbd_asb_recover_1p): one Primary now (`local_primary`
/// says which). Consensus: the 0pri verdict only if it discards the
/// Secondary. For `CallPeerPrimaryLostAfterSb` (and `ViolentlyAs0p`) the
/// 0pri verdict stands even against the Primary: the engine then demotes
/// it, or, failing that, runs `pri-lost-after-sb` and disconnects.
pub fn after_sb_1pri(
    policy: AfterSb1,
    policy_0pri: AfterSb0,
    local_primary: bool,
    local: &UuidView,
    peer: &UuidView,
    local_is_lower_tiebreak: bool,
) -> Option<Discard> {
    let zero_pri = || after_sb_0pri(policy_0pri, local, peer, local_is_lower_tiebreak);
    let secondary = if local_primary {
        Discard::Peer
    } else {
        Discard::Local
    };
    match policy {
        AfterSb1::Disconnect => None,
        AfterSb1::Consensus => zero_pri().filter(|&d| d == secondary),
        AfterSb1::ViolentlyAs0p | AfterSb1::CallPeerPrimaryLostAfterSb => zero_pri(),
        AfterSb1::DiscardSecondary => Some(secondary),
    }
}

/// `after-sb-2pri` (drbd_asb_recover_2p): both Primary now. The loser must
/// be demoted by the engine (`CallPeerPrimaryLostAfterSb`: or its handler run).
pub fn after_sb_2pri(
    policy: AfterSb2,
    policy_0pri: AfterSb0,
    local: &UuidView,
    peer: &UuidView,
    local_is_lower_tiebreak: bool,
) -> Option<Discard> {
    match policy {
        AfterSb2::Disconnect => None,
        AfterSb2::ViolentlyAs0p | AfterSb2::CallPeerPrimaryLostAfterSb => {
            after_sb_0pri(policy_0pri, local, peer, local_is_lower_tiebreak)
        }
    }
}

/// `connect --discard-my-data` (drbd_sync_handshake): resolves only when
/// exactly one side gave it; that side discards.
pub fn manual_resolution(
    local_discard_my_data: bool,
    peer_discard_my_data: bool,
) -> Option<Discard> {
    match (local_discard_my_data, peer_discard_my_data) {
        (true, false) => Some(Discard::Local),
        (false, true) => Some(Discard::Peer),
        _ => None,
    }
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

/// Superblock layout (little-endian), one 4 KiB page:
/// magic (8) | version u32 | MDF flags u32 | current, bitmap, history[0],
/// history[1] u64 | usable_bytes u64 | generation u64 | block bytes u32 |
/// AL extent bytes u32 | zeroes | CRC32C of everything before it (last 4).
mod sb {
    pub const MAGIC: [u8; 8] = *b"BASCULMD";
    pub const VERSION: u32 = 1;
    pub const VERSION_AT: usize = 8;
    pub const FLAGS_AT: usize = 12;
    pub const UUIDS_AT: usize = 16;
    pub const USABLE_AT: usize = 48;
    pub const GENERATION_AT: usize = 56;
    pub const BLOCK_AT: usize = 64;
    pub const EXTENT_AT: usize = 68;
    pub const CRC_AT: usize = super::SUPERBLOCK_BYTES as usize - 4;
}

fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn get_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}
fn get_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// Superblock encoding (fixed size, magic, version, CRC32C).
/// Always [`SUPERBLOCK_BYTES`] long, so one page write replaces it whole.
pub fn encode_superblock(md: &Metadata) -> Vec<u8> {
    let mut b = vec![0u8; SUPERBLOCK_BYTES as usize];
    b[..8].copy_from_slice(&sb::MAGIC);
    put_u32(&mut b, sb::VERSION_AT, sb::VERSION);
    put_u32(&mut b, sb::FLAGS_AT, md.flags.to_bits());
    let u = &md.uuids;
    for (i, v) in [u.current, u.bitmap, u.history[0], u.history[1]]
        .into_iter()
        .enumerate()
    {
        put_u64(&mut b, sb::UUIDS_AT + 8 * i, v);
    }
    put_u64(&mut b, sb::USABLE_AT, md.usable_bytes);
    put_u64(&mut b, sb::GENERATION_AT, md.generation);
    put_u32(&mut b, sb::BLOCK_AT, BLOCK_BYTES as u32);
    put_u32(&mut b, sb::EXTENT_AT, AL_EXTENT_BYTES as u32);
    let crc = CRC32C.checksum(&b[..sb::CRC_AT]);
    put_u32(&mut b, sb::CRC_AT, crc);
    b
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MdError {
    /// No metadata here (never created): `bascule disk create-md RES`.
    NotCreated,
    /// The superblock is damaged (torn write, bit rot): refuse to attach
    /// rather than guess the generation.
    BadChecksum,
    /// Written by a newer bascule (or another layout): refuse to attach.
    UnsupportedVersion(u32),
    /// Created for `recorded` bytes of data; the device now gives `actual`.
    SizeMismatch { recorded: u64, actual: u64 },
}

impl std::fmt::Display for MdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MdError::NotCreated => write!(f, "no metadata (run `bascule disk create-md RES`)"),
            MdError::BadChecksum => write!(f, "metadata superblock checksum mismatch"),
            MdError::UnsupportedVersion(v) => write!(f, "metadata version {v} is not supported"),
            MdError::SizeMismatch { recorded, actual } => {
                write!(
                    f,
                    "metadata made for {recorded} bytes of data, the device now holds {actual}"
                )
            }
        }
    }
}

/// Inverse of [`encode_superblock`]. Checks in order: magic (else
/// NotCreated: all zeroes, or something that is not ours), version (a newer
/// format may checksum differently), then the CRC. A short buffer with our
/// magic is a damaged superblock.
pub fn decode_superblock(bytes: &[u8]) -> Result<Metadata, MdError> {
    if bytes.len() < 8 || bytes[..8] != sb::MAGIC {
        return Err(MdError::NotCreated);
    }
    if bytes.len() < SUPERBLOCK_BYTES as usize {
        return Err(MdError::BadChecksum);
    }
    let version = get_u32(bytes, sb::VERSION_AT);
    if version != sb::VERSION {
        return Err(MdError::UnsupportedVersion(version));
    }
    if CRC32C.checksum(&bytes[..sb::CRC_AT]) != get_u32(bytes, sb::CRC_AT) {
        return Err(MdError::BadChecksum);
    }
    // Block and extent sizes are fixed in this version; anything else is a
    // format we do not know, whatever its version field says.
    let (block, extent) = (get_u32(bytes, sb::BLOCK_AT), get_u32(bytes, sb::EXTENT_AT));
    if u64::from(block) != BLOCK_BYTES || u64::from(extent) != AL_EXTENT_BYTES {
        return Err(MdError::UnsupportedVersion(version));
    }
    let uuid = |i: usize| get_u64(bytes, sb::UUIDS_AT + 8 * i);
    Ok(Metadata {
        uuids: Uuids {
            current: uuid(0),
            bitmap: uuid(1),
            history: [uuid(2), uuid(3)],
        },
        flags: MdFlags::from_bits(get_u32(bytes, sb::FLAGS_AT)),
        usable_bytes: get_u64(bytes, sb::USABLE_AT),
        generation: get_u64(bytes, sb::GENERATION_AT),
    })
}

/// The activity log: the 4 MiB extents a Primary may be writing. Before a write
/// to an extent not in the log, the engine records the extent (one small
/// transaction write in the AL area) so that after a Primary crash only the
/// extents in the log need a resync. ACTIVITY_LOG_EXTENTS hot extents, LRU.
pub const AL_EXTENT_BYTES: u64 = 4 << 20;
pub const ACTIVITY_LOG_EXTENTS: usize = 127;

/// Activity-log transaction record, one [`AL_SLOT_BYTES`] slot of the ring
/// (little-endian): magic u32 | count u32 | seq u64 | count extent numbers
/// u32 | zeroes | CRC32C of everything before it (last 4). Each record holds
/// the whole hot set, so the newest intact record alone says what to resync;
/// a torn newest record falls back to the one before, which lacks only the
/// extent whose writes had not started yet (they wait for the record).
/// Recovery takes the union of all intact records (see
/// [`ActivityLog::decode_extents`]): a superset of the newest, at most
/// AL_SLOTS-1 extents more in steady state.
mod al {
    pub const MAGIC: u32 = u32::from_le_bytes(*b"BSAL");
    pub const COUNT_AT: usize = 4;
    pub const SEQ_AT: usize = 8;
    pub const EXTENTS_AT: usize = 16;
    pub const CRC_AT: usize = super::AL_SLOT_BYTES as usize - 4;
    /// Extents one record can hold.
    pub const CAPACITY: usize = (CRC_AT - EXTENTS_AT) / 4;
}

/// One hot extent: its number, when it was last touched (LRU), writes in
/// flight to it ([`ActivityLog::acquire`]), and the record that made it hot.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Hot {
    extent: u32,
    used: u64,
    in_flight: u32,
    seq: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActivityLog {
    hot: Vec<Hot>,
    /// Sequence number of the last record produced (0: none yet).
    seq: u64,
    /// Records up to this sequence number are on disk ([`ActivityLog::written`]).
    durable: u64,
    /// LRU clock.
    tick: u64,
}

impl Default for ActivityLog {
    fn default() -> Self {
        ActivityLog::new()
    }
}

impl ActivityLog {
    /// An empty log whose records start at sequence 1. Only for an AL area
    /// that holds no records (freshly created, or zeroed after its extents
    /// were applied to the bitmap): older records with higher sequence
    /// numbers would win after a crash. Otherwise use [`ActivityLog::resume`].
    pub fn new() -> ActivityLog {
        ActivityLog {
            hot: Vec::new(),
            seq: 0,
            durable: 0,
            tick: 0,
        }
    }

    /// The log as the on-disk AL area left it (at attach): the newest intact
    /// record's extents stay hot (so the next record still names them until
    /// the resync they caused is done), and sequence numbers continue after it.
    pub fn resume(bytes: &[u8]) -> ActivityLog {
        let mut log = ActivityLog::new();
        if let Some((seq, extents)) = newest_record(bytes) {
            log.seq = seq;
            log.durable = seq;
            for extent in extents {
                log.tick += 1;
                log.hot.push(Hot {
                    extent,
                    used: log.tick,
                    in_flight: 0,
                    seq,
                });
            }
        }
        log
    }

    /// The extent of a write at `offset`; Some(transaction) when it must be
    /// recorded on disk (at Layout::al_offset + returned offset) before the write
    /// may proceed; None when already hot.
    ///
    /// With `touch` alone the log is a plain LRU of [`ACTIVITY_LOG_EXTENTS`].
    /// The record must be written with FUA; "already hot" may still mean its
    /// record is being written: see [`ActivityLog::is_durable`].
    pub fn touch(&mut self, offset: u64, layout: &Layout) -> Option<(u64, Payload)> {
        self.get(offset, layout, false)
    }

    /// [`ActivityLog::touch`] that also counts a write in flight to the
    /// extent until [`ActivityLog::release`]: an extent with writes in flight
    /// is never evicted (a crash could leave them differing on both sides),
    /// so while every hot extent is busy the set grows past
    /// [`ACTIVITY_LOG_EXTENTS`] (up to what one record holds, 1019).
    pub fn acquire(&mut self, offset: u64, layout: &Layout) -> Option<(u64, Payload)> {
        self.get(offset, layout, true)
    }

    /// The write [`ActivityLog::acquire`]d at `offset` finished (on both
    /// sides, or failed and was marked out of sync).
    pub fn release(&mut self, offset: u64) {
        let extent = extent_of(offset);
        if let Some(hot) = self.hot.iter_mut().find(|h| h.extent == extent) {
            debug_assert!(hot.in_flight > 0, "release without acquire at {offset}");
            hot.in_flight = hot.in_flight.saturating_sub(1);
        }
    }

    /// Sequence number of the last record `touch`/`acquire` returned.
    pub fn last_seq(&self) -> u64 {
        self.seq
    }

    /// The engine wrote (durably) every record up to `seq`.
    pub fn written(&mut self, seq: u64) {
        self.durable = self.durable.max(seq.min(self.seq));
    }

    /// Whether writes to the extent of `offset` may proceed: it is hot and
    /// the record that made it hot is on disk ([`ActivityLog::written`]).
    pub fn is_durable(&self, offset: u64) -> bool {
        let extent = extent_of(offset);
        self.hot
            .iter()
            .any(|h| h.extent == extent && h.seq <= self.durable)
    }

    /// Hot extents, in no particular order.
    pub fn extents(&self) -> impl Iterator<Item = u64> + '_ {
        self.hot.iter().map(|h| u64::from(h.extent))
    }

    /// Extents recorded in the on-disk log (after a crash): (offset, len) ranges
    /// of data to mark out of sync. `bytes`: the whole AL area.
    ///
    /// The union of every intact record, not only the newest: then it does
    /// not matter whether the sequence numbers of the crashed run were above
    /// those of an older run whose records are still in other slots (a log
    /// made with [`ActivityLog::new`] over a used area). Stale records only
    /// add extents to resync; they never hide one. Sorted, no duplicates.
    pub fn decode_extents(bytes: &[u8]) -> Vec<(u64, u64)> {
        let mut extents: Vec<u32> = intact_records(bytes).flat_map(|(_, e)| e).collect();
        extents.sort_unstable();
        extents.dedup();
        extents
            .into_iter()
            .map(|e| (u64::from(e) * AL_EXTENT_BYTES, AL_EXTENT_BYTES))
            .collect()
    }

    fn get(&mut self, offset: u64, layout: &Layout, count: bool) -> Option<(u64, Payload)> {
        let extent = extent_of(offset);
        self.tick += 1;
        let tick = self.tick;
        if let Some(hot) = self.hot.iter_mut().find(|h| h.extent == extent) {
            hot.used = tick;
            hot.in_flight += u32::from(count);
            return None;
        }
        // Room is made before the record is built, so the record names
        // exactly the new hot set.
        // Back to ACTIVITY_LOG_EXTENTS (minus the newcomer) as soon as
        // enough extents are idle again after a busy period grew the set.
        while self.hot.len() >= ACTIVITY_LOG_EXTENTS {
            let idle = self
                .hot
                .iter()
                .enumerate()
                .filter(|(_, h)| h.in_flight == 0)
                .min_by_key(|(_, h)| h.used);
            let victim = match idle {
                Some((i, _)) => i,
                // All busy: grow, unless a record could not hold it; then the
                // least recently used goes even though busy (never reached
                // with sane queue depths: 1019 extents of writes in flight).
                None if self.hot.len() >= al::CAPACITY => self
                    .hot
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, h)| h.used)
                    .map(|(i, _)| i)
                    .expect("hot set not empty"),
                None => break,
            };
            self.hot.swap_remove(victim);
        }
        self.seq += 1;
        self.hot.push(Hot {
            extent,
            used: tick,
            in_flight: u32::from(count),
            seq: self.seq,
        });
        let slots = (layout.al_bytes / AL_SLOT_BYTES).max(1);
        let at = (self.seq % slots) * AL_SLOT_BYTES;
        Some((at, Payload::new(self.encode_record())))
    }

    fn encode_record(&self) -> Vec<u8> {
        let mut b = vec![0u8; AL_SLOT_BYTES as usize];
        put_u32(&mut b, 0, al::MAGIC);
        put_u32(&mut b, al::COUNT_AT, self.hot.len() as u32);
        put_u64(&mut b, al::SEQ_AT, self.seq);
        for (i, h) in self.hot.iter().enumerate() {
            put_u32(&mut b, al::EXTENTS_AT + 4 * i, h.extent);
        }
        let crc = CRC32C.checksum(&b[..al::CRC_AT]);
        put_u32(&mut b, al::CRC_AT, crc);
        b
    }
}

/// The AL extent number of a data offset. Extent numbers are u32: 16 PiB of
/// data, far beyond any backing store this runs on.
fn extent_of(offset: u64) -> u32 {
    u32::try_from(offset / AL_EXTENT_BYTES).expect("data offset below 16 PiB")
}

/// The records of an AL area whose magic and CRC are intact: (seq, extents).
fn intact_records(bytes: &[u8]) -> impl Iterator<Item = (u64, Vec<u32>)> + '_ {
    bytes
        .chunks_exact(AL_SLOT_BYTES as usize)
        .filter_map(|slot| {
            if get_u32(slot, 0) != al::MAGIC
                || CRC32C.checksum(&slot[..al::CRC_AT]) != get_u32(slot, al::CRC_AT)
            {
                return None;
            }
            let count = (get_u32(slot, al::COUNT_AT) as usize).min(al::CAPACITY);
            let extents = (0..count)
                .map(|i| get_u32(slot, al::EXTENTS_AT + 4 * i))
                .collect();
            Some((get_u64(slot, al::SEQ_AT), extents))
        })
}

/// The intact record with the highest sequence number in an AL area, if any.
fn newest_record(bytes: &[u8]) -> Option<(u64, Vec<u32>)> {
    intact_records(bytes).max_by_key(|(seq, _)| *seq)
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
        // (u128: near u64::MAX the sum itself would overflow.)
        let more = l.usable_bytes + BLOCK_BYTES;
        let needed = u128::from(more)
            + u128::from(bitmap_area_bytes(more))
            + u128::from(AL_BYTES + SUPERBLOCK_BYTES);
        assert!(needed > u128::from(backing), "{l:?}");
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
            u64::MAX,
            u64::MAX - 4096 * 1000,
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

    // Tests for the superblock.

    fn sample_md() -> Metadata {
        Metadata {
            uuids: Uuids {
                current: 0x1234_5678_9abc_def1,
                bitmap: 0xfeed_0000_0000_0002,
                history: [0xaa, 0xbb],
            },
            flags: MdFlags {
                consistent: true,
                was_up_to_date: true,
                primary_ind: true,
                connected_ind: false,
                peer_out_dated: true,
                full_sync: false,
            },
            usable_bytes: 1 << 30,
            generation: 77,
        }
    }

    #[test]
    fn superblock_round_trip() {
        let md = sample_md();
        let bytes = encode_superblock(&md);
        assert_eq!(bytes.len() as u64, SUPERBLOCK_BYTES);
        assert_eq!(decode_superblock(&bytes), Ok(md));
        let created = Metadata::created(4096);
        assert_eq!(decode_superblock(&encode_superblock(&created)), Ok(created));
        assert_eq!(created.uuids.current, UUID_JUST_CREATED);
    }

    #[test]
    fn superblock_not_created() {
        assert_eq!(decode_superblock(&[0u8; 4096]), Err(MdError::NotCreated));
        assert_eq!(decode_superblock(&[]), Err(MdError::NotCreated));
        let mut bytes = encode_superblock(&sample_md());
        bytes[0] ^= 1;
        assert_eq!(decode_superblock(&bytes), Err(MdError::NotCreated));
    }

    #[test]
    fn superblock_every_bit_flip_is_caught() {
        let bytes = encode_superblock(&sample_md());
        for bit in (64..4096 * 8).step_by(7) {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            let r = decode_superblock(&b);
            let version_byte = (sb::VERSION_AT..sb::VERSION_AT + 4).contains(&(bit / 8));
            if version_byte {
                assert!(
                    matches!(r, Err(MdError::UnsupportedVersion(_))),
                    "bit {bit}: {r:?}"
                );
            } else {
                assert_eq!(r, Err(MdError::BadChecksum), "bit {bit}");
            }
        }
        assert_eq!(decode_superblock(&bytes[..4000]), Err(MdError::BadChecksum));
    }

    #[test]
    fn superblock_unsupported_version() {
        let mut bytes = encode_superblock(&sample_md());
        put_u32(&mut bytes, sb::VERSION_AT, 9);
        let crc = CRC32C.checksum(&bytes[..sb::CRC_AT]);
        put_u32(&mut bytes, sb::CRC_AT, crc);
        assert_eq!(
            decode_superblock(&bytes),
            Err(MdError::UnsupportedVersion(9))
        );
    }

    #[test]
    fn metadata_size_check() {
        let layout = Layout::internal(1 << 30).unwrap();
        let md = Metadata::created(layout.usable_bytes);
        assert_eq!(md.check_size(&layout), Ok(()));
        let bigger = Layout::internal(2 << 30).unwrap();
        assert_eq!(
            md.check_size(&bigger),
            Err(MdError::SizeMismatch {
                recorded: layout.usable_bytes,
                actual: bigger.usable_bytes
            })
        );
    }

    #[test]
    fn md_flags_bits_are_drbds() {
        let f = MdFlags {
            consistent: true,
            primary_ind: true,
            ..MdFlags::default()
        };
        assert_eq!(f.to_bits(), 0b11);
        let all = sample_md().flags;
        assert_eq!(MdFlags::from_bits(all.to_bits()), all);
        assert!(MdFlags::from_bits(1 << 4).was_up_to_date);
        assert!(MdFlags::from_bits(1 << 5).peer_out_dated);
        assert!(MdFlags::from_bits(1 << 3).full_sync);
        assert!(MdFlags::from_bits(1 << 2).connected_ind);
        assert_eq!(MdFlags::from_bits(0xffff_ff00), MdFlags::default());
    }

    // Tests for uuid comparison, one per DRBD rule.

    /// A consistent view with these uuids.
    fn view(current: u64, bitmap: u64, history: [u64; 2]) -> UuidView {
        UuidView {
            uuids: Uuids {
                current,
                bitmap,
                history,
            },
            flags: MdFlags {
                consistent: true,
                was_up_to_date: true,
                ..MdFlags::default()
            },
            dirty_blocks: 0,
        }
    }

    /// Both sides' decisions, checking they mirror each other.
    #[track_caller]
    fn decide(local: &UuidView, peer: &UuidView) -> UuidCompare {
        let a = compare(local, peer, true);
        let b = compare(peer, local, false);
        assert_eq!(
            b.decision,
            mirror(a.decision),
            "sides disagree: {a:?} vs {b:?}"
        );
        assert_eq!(sync_decision(local, peer, true), a.decision);
        a
    }

    #[track_caller]
    fn expect(local: &UuidView, peer: &UuidView, decision: SyncDecision, rule: u32) {
        let c = decide(local, peer);
        assert_eq!((c.decision, c.rule), (decision, rule), "{c:?}");
    }

    const A: u64 = 0xa000_0000_0000_0010;
    const B: u64 = 0xb000_0000_0000_0020;
    const C: u64 = 0xc000_0000_0000_0030;
    const D: u64 = 0xd000_0000_0000_0040;
    const E: u64 = 0xe000_0000_0000_0050;

    #[test]
    fn rule_10_both_just_created() {
        let mut l = view(UUID_JUST_CREATED, 0, [0, 0]);
        l.flags.consistent = false;
        let p = l;
        expect(&l, &p, SyncDecision::NoSync, 10);
        // All-zero uuids count as just created.
        expect(
            &view(0, 0, [0, 0]),
            &view(UUID_JUST_CREATED, 0, [0, 0]),
            SyncDecision::NoSync,
            10,
        );
    }

    #[test]
    fn rule_20_30_forced_primary_after_create() {
        // The guide's --do-what-I-say on debian1: new generation, full sync.
        let mut forced = Uuids::just_created();
        assert!(forced.promote(A, true, true));
        let mut l = view(forced.current, forced.bitmap, forced.history);
        l.flags.consistent = true;
        let mut p = view(UUID_JUST_CREATED, 0, [0, 0]);
        p.flags.consistent = false;
        expect(&p, &l, SyncDecision::Target { full: true }, 20);
        expect(&l, &p, SyncDecision::Source { full: true }, 30);
    }

    #[test]
    fn rule_34_missed_resync_finished_as_source() {
        // We (source) still hold bitmap uuid B; the target finished and
        // moved B into its history.
        let l = view(A, B, [C, 0]);
        let p = view(A, 0, [B, C]);
        let c = compare(&l, &p, true);
        assert_eq!(
            (c.decision, c.rule),
            (SyncDecision::Source { full: false }, 34)
        );
        assert_eq!(
            c.fixed_local,
            Some(Uuids {
                current: A,
                bitmap: 0,
                history: [B, C]
            })
        );
        let c = compare(&p, &l, false);
        assert_eq!(
            (c.decision, c.rule),
            (SyncDecision::Target { full: false }, 35)
        );
        assert_eq!(c.fixed_local, None);
    }

    #[test]
    fn rule_36_37_sync_uuid_not_written() {
        let l = view(A, B, [0, 0]);
        let p = view(A, 0, [D, 0]);
        expect(&l, &p, SyncDecision::Source { full: false }, 36);
        expect(&p, &l, SyncDecision::Target { full: false }, 37);
    }

    #[test]
    fn rule_40_link_hiccup() {
        expect(
            &view(A, 0, [B, 0]),
            &view(A, 0, [B, 0]),
            SyncDecision::NoSync,
            40,
        );
    }

    #[test]
    fn rule_40_crashed_primary_is_source() {
        let mut l = view(A, 0, [B, 0]);
        l.flags.primary_ind = true;
        let p = view(A, 0, [B, 0]);
        expect(&l, &p, SyncDecision::Source { full: false }, 40);
        expect(&p, &l, SyncDecision::Target { full: false }, 40);
        // Both crashed as Primary: the tiebreak, and both sides agree.
        let mut p2 = p;
        p2.flags.primary_ind = true;
        expect(&l, &p2, SyncDecision::Source { full: false }, 40);
        assert_eq!(
            compare(&l, &p2, false).decision,
            SyncDecision::Target { full: false }
        );
    }

    #[test]
    fn rule_41_current_primary_keeps_its_data() {
        // The peer crashed as Primary; we are Primary now, same generation.
        let mut l = view(A | 1, 0, [0, 0]);
        let mut p = view(A, 0, [0, 0]);
        p.flags.primary_ind = true;
        expect(&l, &p, SyncDecision::Source { full: false }, 41);
        l.uuids.current = A;
        p.uuids.current = A | 1;
        expect(&l, &p, SyncDecision::Target { full: false }, 41);
        l.uuids.current = A | 1;
        expect(&l, &p, SyncDecision::SplitBrain, 41);
    }

    #[test]
    fn rule_50_70_bitmap_resync_after_disconnect() {
        // The Primary lost its peer: new current C, bitmap A = old current.
        let mut pri = Uuids {
            current: A | 1,
            bitmap: 0,
            history: [0, 0],
        };
        assert!(pri.lost_peer(C, true, true));
        assert_eq!(pri.bitmap, A | 1);
        let l = view(pri.current, pri.bitmap, pri.history);
        let p = view(A, 0, [0, 0]);
        expect(&p, &l, SyncDecision::Target { full: false }, 50);
        expect(&l, &p, SyncDecision::Source { full: false }, 70);
    }

    #[test]
    fn rule_51_71_lost_sync_uuid() {
        // The source started a resync from bitmap uuid A (now A+offset, A in
        // its history); the target never got the sync uuid.
        let mut src = Uuids {
            current: C,
            bitmap: A,
            history: [0, 0],
        };
        let sync = src.start_sync_source(E);
        assert_eq!(sync, A + UUID_NEW_BM_OFFSET);
        let l = view(src.current, src.bitmap, src.history);
        let p = view(A, 0, [0, 0]);
        expect(&p, &l, SyncDecision::Target { full: false }, 51);
        let c = decide(&l, &p);
        assert_eq!(
            (c.decision, c.rule),
            (SyncDecision::Source { full: false }, 71)
        );
        // The source undoes its step: back to bitmap uuid A.
        assert_eq!(
            c.fixed_local,
            Some(Uuids {
                current: C,
                bitmap: A,
                history: [0, 0]
            })
        );
    }

    #[test]
    fn rule_60_80_history_means_full_sync() {
        let l = view(B, 0, [A, 0]);
        let p = view(A, 0, [0, 0]);
        expect(&p, &l, SyncDecision::Target { full: true }, 60);
        expect(&l, &p, SyncDecision::Source { full: true }, 80);
        let l = view(B, 0, [D, A]);
        expect(&l, &p, SyncDecision::Source { full: true }, 80);
    }

    #[test]
    fn rule_90_split_brain_from_same_generation() {
        // Both became Primary while disconnected from generation A.
        let mut one = Uuids {
            current: A,
            bitmap: 0,
            history: [0, 0],
        };
        let mut two = one;
        assert!(one.promote(B, false, false));
        assert!(two.promote(C, false, false));
        let l = view(one.current, one.bitmap, one.history);
        let p = view(two.current, two.bitmap, two.history);
        expect(&l, &p, SyncDecision::SplitBrain, 90);
        assert_eq!(
            resolved_decision(Discard::Local, &l, &p),
            SyncDecision::Target { full: false }
        );
        assert_eq!(
            resolved_decision(Discard::Peer, &l, &p),
            SyncDecision::Source { full: false }
        );
    }

    #[test]
    fn rule_100_split_brain_with_common_history() {
        let l = view(B, D, [A, 0]);
        let p = view(C, E, [0, A]);
        expect(&l, &p, SyncDecision::SplitBrain, 100);
        assert_eq!(
            resolved_decision(Discard::Peer, &l, &p),
            SyncDecision::Source { full: true }
        );
        // Empty history slots are not a common ancestor.
        let l = view(B, D, [0, 0]);
        let p = view(C, E, [0, 0]);
        expect(&l, &p, SyncDecision::Unrelated, 1000);
    }

    #[test]
    fn rule_1000_unrelated() {
        expect(
            &view(A, B, [C, 0]),
            &view(D, E, [0, 0]),
            SyncDecision::Unrelated,
            1000,
        );
    }

    #[test]
    fn compare_ignores_the_primary_bit() {
        expect(
            &view(A | 1, 0, [0, 0]),
            &view(A, 0, [0, 0]),
            SyncDecision::NoSync,
            40,
        );
        expect(
            &view(C, A | 1, [0, 0]),
            &view(A, 0, [0, 0]),
            SyncDecision::Source { full: false },
            70,
        );
    }

    #[test]
    fn disk_state_overrides_uuids() {
        // Equal uuids but the peer is Inconsistent (an interrupted full sync):
        // we are the source, bitmap-based as the uuids said.
        let l = view(A, 0, [0, 0]);
        let mut p = view(A, 0, [0, 0]);
        p.flags.consistent = false;
        let c = decide(&l, &p);
        assert_eq!(c.decision, SyncDecision::Source { full: false });
        assert!(c.by_disk_state);
        // Uuids say "we are target, full" but we are the consistent one.
        let l = view(B, 0, [A, 0]);
        let mut p = view(A, 0, [0, 0]);
        p.flags.consistent = false;
        let c = decide(&p, &l);
        assert_eq!(
            (c.decision, c.rule),
            (SyncDecision::Target { full: true }, 60)
        );
        let c = decide(&l, &p);
        assert_eq!(c.decision, SyncDecision::Source { full: true });
        assert!(!c.by_disk_state);
        // Split brain (rule 100) with one Inconsistent side: full sync to it.
        let mut l = view(B, D, [A, 0]);
        l.flags.consistent = false;
        let p = view(C, E, [0, A]);
        let c = decide(&l, &p);
        assert_eq!(
            (c.decision, c.rule),
            (SyncDecision::Target { full: true }, 100)
        );
        // Rule 90 keeps a bitmap sync.
        let mut l = view(B, A, [0, 0]);
        l.flags.consistent = false;
        let p = view(C, A, [0, 0]);
        assert_eq!(
            decide(&l, &p).decision,
            SyncDecision::Target { full: false }
        );
        // Unrelated stays unrelated.
        let mut l = view(A, 0, [0, 0]);
        l.flags.consistent = false;
        assert_eq!(
            decide(&l, &view(B, 0, [0, 0])).decision,
            SyncDecision::Unrelated
        );
    }

    // Tests for the uuid life cycle, end to end through compare.

    #[test]
    fn life_cycle_disconnect_resync_reconnect() {
        // Created, forced primary on one, full sync to the other.
        let mut one = Uuids::just_created();
        let mut two = Uuids::just_created();
        one.promote(A, true, true);
        let one_before = one;
        let sync = one.start_sync_source(B);
        two.start_sync_target(sync);
        one.sync_finished_source();
        two.sync_finished_target(&one_before);
        assert_eq!(bare(one.current), bare(two.current));
        assert_eq!((one.bitmap, two.bitmap), (0, 0));
        assert_eq!(one.history, two.history);
        let (l, p) = (
            view(one.current, one.bitmap, one.history),
            view(two.current, two.bitmap, two.history),
        );
        expect(&l, &p, SyncDecision::NoSync, 40);

        // The Primary loses its peer and writes on: bitmap resync later.
        assert!(one.lost_peer(C, true, true));
        assert!(
            !one.lost_peer(D, true, true),
            "one generation per disconnection"
        );
        let (l, p) = (
            view(one.current, one.bitmap, one.history),
            view(two.current, two.bitmap, two.history),
        );
        expect(&l, &p, SyncDecision::Source { full: false }, 70);
        let one_before = one;
        let sync = one.start_sync_source(D);
        two.start_sync_target(sync);
        // The target may hold the source's report from after the sync start.
        let mut three = two;
        three.sync_finished_target(&one);
        one.sync_finished_source();
        two.sync_finished_target(&one_before);
        assert_eq!(three, two);
        assert_eq!(
            (bare(one.current), one.bitmap, one.history),
            (bare(two.current), two.bitmap, two.history)
        );
        assert!(one.is_primary() && !two.is_primary());

        // Demote, promote the other while connected: no new generation.
        one.demote();
        assert!(!one.is_primary());
        assert!(!two.promote(E, true, false));
        assert!(two.is_primary());
        let (l, p) = (
            view(one.current, one.bitmap, one.history),
            view(two.current, two.bitmap, two.history),
        );
        expect(&l, &p, SyncDecision::NoSync, 40);
    }

    #[test]
    fn new_current_keeps_an_older_bitmap_uuid() {
        // Primary lost its peer (bitmap A), then was forced again: the peer
        // at A still gets a bitmap resync.
        let mut u = Uuids {
            current: A | 1,
            bitmap: 0,
            history: [0, 0],
        };
        u.lost_peer(B, true, true);
        u.promote(C, false, true);
        assert_eq!(u.bitmap, A | 1);
        assert_eq!(u.history[0], B | 1);
        assert!(u.is_primary());
        let (l, p) = (view(u.current, u.bitmap, u.history), view(A, 0, [0, 0]));
        expect(&l, &p, SyncDecision::Source { full: false }, 70);
    }

    #[test]
    fn new_current_never_draws_reserved_values() {
        for fresh in [0, 1, UUID_JUST_CREATED, UUID_JUST_CREATED | 1] {
            let mut u = Uuids {
                current: A,
                ..Uuids::default()
            };
            u.new_current(fresh);
            assert!(
                bare(u.current) != 0 && bare(u.current) != UUID_JUST_CREATED,
                "{fresh}"
            );
            let mut u = Uuids {
                current: A,
                ..Uuids::default()
            };
            let s = u.start_sync_source(fresh);
            assert!(s != 0 && s != UUID_JUST_CREATED, "{fresh}");
        }
    }

    #[test]
    fn lost_peer_only_for_an_up_to_date_primary() {
        let mut u = Uuids {
            current: A,
            ..Uuids::default()
        };
        assert!(!u.lost_peer(B, false, true));
        assert!(!u.lost_peer(B, true, false));
        assert_eq!(
            u,
            Uuids {
                current: A,
                ..Uuids::default()
            }
        );
    }

    // Tests for split-brain resolution.

    fn sb_views(
        l_was_primary: bool,
        p_was_primary: bool,
        l_dirty: u64,
        p_dirty: u64,
    ) -> (UuidView, UuidView) {
        let mut l = view(B, A | u64::from(l_was_primary), [0, 0]);
        let mut p = view(C, A | u64::from(p_was_primary), [0, 0]);
        l.dirty_blocks = l_dirty;
        p.dirty_blocks = p_dirty;
        (l, p)
    }

    /// Both sides reach opposite verdicts (or both none).
    #[track_caller]
    fn sb0(policy: AfterSb0, l: &UuidView, p: &UuidView) -> Option<Discard> {
        let a = after_sb_0pri(policy, l, p, true);
        let mirrored = match policy {
            AfterSb0::DiscardNode(x) => AfterSb0::DiscardNode(!x),
            other => other,
        };
        let b = after_sb_0pri(mirrored, p, l, false);
        assert_eq!(a.map(Discard::flip), b, "{policy:?}");
        a
    }

    #[test]
    fn after_sb_0pri_younger_older_primary() {
        // We were Primary at divergence (older Primary), the peer promoted later.
        let (l, p) = sb_views(true, false, 10, 5);
        assert_eq!(
            sb0(AfterSb0::DiscardYoungerPrimary, &l, &p),
            Some(Discard::Peer)
        );
        assert_eq!(
            sb0(AfterSb0::DiscardOlderPrimary, &l, &p),
            Some(Discard::Local)
        );
        // Undecided by roles: falls back to least changes.
        let (l, p) = sb_views(true, true, 10, 5);
        assert_eq!(
            sb0(AfterSb0::DiscardYoungerPrimary, &l, &p),
            Some(Discard::Peer)
        );
        assert_eq!(
            sb0(AfterSb0::DiscardOlderPrimary, &l, &p),
            Some(Discard::Peer)
        );
        let (l, p) = sb_views(false, false, 0, 5);
        assert_eq!(
            sb0(AfterSb0::DiscardYoungerPrimary, &l, &p),
            Some(Discard::Local)
        );
    }

    #[test]
    fn after_sb_0pri_zero_changes() {
        let (l, p) = sb_views(false, false, 0, 7);
        assert_eq!(
            sb0(AfterSb0::DiscardZeroChanges, &l, &p),
            Some(Discard::Local)
        );
        let (l, p) = sb_views(false, false, 3, 0);
        assert_eq!(
            sb0(AfterSb0::DiscardZeroChanges, &l, &p),
            Some(Discard::Peer)
        );
        let (l, p) = sb_views(false, false, 3, 7);
        assert_eq!(sb0(AfterSb0::DiscardZeroChanges, &l, &p), None);
        let (l, p) = sb_views(false, false, 0, 0);
        assert_eq!(
            sb0(AfterSb0::DiscardZeroChanges, &l, &p),
            Some(Discard::Peer),
            "tiebreak: lower keeps"
        );
    }

    #[test]
    fn after_sb_0pri_least_changes_and_fixed() {
        let (l, p) = sb_views(false, false, 3, 7);
        assert_eq!(
            sb0(AfterSb0::DiscardLeastChanges, &l, &p),
            Some(Discard::Local)
        );
        let (l, p) = sb_views(false, false, 9, 7);
        assert_eq!(
            sb0(AfterSb0::DiscardLeastChanges, &l, &p),
            Some(Discard::Peer)
        );
        let (l, p) = sb_views(false, false, 7, 7);
        assert_eq!(
            sb0(AfterSb0::DiscardLeastChanges, &l, &p),
            Some(Discard::Peer)
        );
        assert_eq!(sb0(AfterSb0::Disconnect, &l, &p), None);
        assert_eq!(
            sb0(AfterSb0::DiscardNode(true), &l, &p),
            Some(Discard::Local)
        );
        assert_eq!(
            sb0(AfterSb0::DiscardNode(false), &l, &p),
            Some(Discard::Peer)
        );
    }

    #[test]
    fn after_sb_1pri_policies() {
        let (l, p) = sb_views(false, false, 3, 7); // least-changes discards local
        let z = AfterSb0::DiscardLeastChanges;
        // We are the Secondary: consensus agrees to discard us.
        assert_eq!(
            after_sb_1pri(AfterSb1::Consensus, z, false, &l, &p, true),
            Some(Discard::Local)
        );
        // We are the Primary: consensus refuses to discard the Primary.
        assert_eq!(
            after_sb_1pri(AfterSb1::Consensus, z, true, &l, &p, true),
            None
        );
        assert_eq!(
            after_sb_1pri(AfterSb1::ViolentlyAs0p, z, true, &l, &p, true),
            Some(Discard::Local)
        );
        assert_eq!(
            after_sb_1pri(AfterSb1::CallPeerPrimaryLostAfterSb, z, true, &l, &p, true),
            Some(Discard::Local)
        );
        assert_eq!(
            after_sb_1pri(AfterSb1::DiscardSecondary, z, true, &l, &p, true),
            Some(Discard::Peer)
        );
        assert_eq!(
            after_sb_1pri(AfterSb1::DiscardSecondary, z, false, &l, &p, true),
            Some(Discard::Local)
        );
        assert_eq!(
            after_sb_1pri(AfterSb1::Disconnect, z, false, &l, &p, true),
            None
        );
        assert_eq!(
            after_sb_1pri(
                AfterSb1::Consensus,
                AfterSb0::Disconnect,
                false,
                &l,
                &p,
                true
            ),
            None
        );
    }

    #[test]
    fn after_sb_2pri_policies() {
        let (l, p) = sb_views(false, false, 9, 7);
        let z = AfterSb0::DiscardLeastChanges;
        assert_eq!(after_sb_2pri(AfterSb2::Disconnect, z, &l, &p, true), None);
        assert_eq!(
            after_sb_2pri(AfterSb2::ViolentlyAs0p, z, &l, &p, true),
            Some(Discard::Peer)
        );
        assert_eq!(
            after_sb_2pri(AfterSb2::CallPeerPrimaryLostAfterSb, z, &l, &p, true),
            Some(Discard::Peer)
        );
    }

    #[test]
    fn manual_discard_my_data() {
        assert_eq!(manual_resolution(true, false), Some(Discard::Local));
        assert_eq!(manual_resolution(false, true), Some(Discard::Peer));
        assert_eq!(manual_resolution(true, true), None);
        assert_eq!(manual_resolution(false, false), None);
    }

    // Tests for the activity log.

    fn al_layout() -> Layout {
        Layout::internal(64 << 30).unwrap()
    }

    /// Writes each record where the log says into an AL area image.
    fn apply(area: &mut [u8], record: Option<(u64, Payload)>) -> bool {
        match record {
            Some((at, bytes)) => {
                assert_eq!(bytes.len() as u64, AL_SLOT_BYTES);
                assert_eq!(at % AL_SLOT_BYTES, 0);
                area[at as usize..at as usize + bytes.len()].copy_from_slice(&bytes);
                true
            }
            None => false,
        }
    }

    fn sorted(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
        v.sort();
        v
    }

    #[test]
    fn al_touch_records_new_extents_only() {
        let layout = al_layout();
        let mut area = vec![0u8; layout.al_bytes as usize];
        assert!(ActivityLog::decode_extents(&area).is_empty());
        let mut log = ActivityLog::new();
        assert!(apply(&mut area, log.touch(0, &layout)));
        assert!(!apply(&mut area, log.touch(4096, &layout)), "same extent");
        assert!(!apply(&mut area, log.touch(AL_EXTENT_BYTES - 1, &layout)));
        assert!(apply(
            &mut area,
            log.touch(5 * AL_EXTENT_BYTES + 10, &layout)
        ));
        assert_eq!(log.last_seq(), 2);
        assert_eq!(
            sorted(ActivityLog::decode_extents(&area)),
            vec![(0, AL_EXTENT_BYTES), (5 * AL_EXTENT_BYTES, AL_EXTENT_BYTES)]
        );
    }

    #[test]
    fn al_lru_keeps_127_extents() {
        let layout = al_layout();
        let mut area = vec![0u8; layout.al_bytes as usize];
        let mut log = ActivityLog::new();
        for e in 0..ACTIVITY_LOG_EXTENTS as u64 {
            assert!(apply(&mut area, log.touch(e * AL_EXTENT_BYTES, &layout)));
        }
        // Refresh extent 0: extent 1 is now the least recently used.
        assert!(!apply(&mut area, log.touch(0, &layout)));
        assert!(apply(&mut area, log.touch(1000 * AL_EXTENT_BYTES, &layout)));
        // The newest record no longer names extent 1; older ones in the
        // ring still do, and recovery takes their union.
        let newest = newest_record(&area).unwrap().1;
        assert_eq!(newest.len(), ACTIVITY_LOG_EXTENTS);
        assert!(newest.contains(&0) && !newest.contains(&1) && newest.contains(&1000));
        let union: Vec<u64> = ActivityLog::decode_extents(&area)
            .into_iter()
            .map(|(o, _)| o / AL_EXTENT_BYTES)
            .collect();
        assert_eq!(union.len(), ACTIVITY_LOG_EXTENTS + 1);
        assert!(log.extents().all(|e| union.contains(&e)));
        // Extent 1 is cold: touching it again needs a record.
        assert!(apply(&mut area, log.touch(AL_EXTENT_BYTES, &layout)));
    }

    #[test]
    fn al_torn_newest_record_falls_back() {
        let layout = al_layout();
        let mut area = vec![0u8; layout.al_bytes as usize];
        let mut log = ActivityLog::new();
        for e in 0..20u64 {
            apply(&mut area, log.touch(e * AL_EXTENT_BYTES, &layout));
        }
        // The record for extent 20 is torn (half written).
        let (at, bytes) = log.touch(20 * AL_EXTENT_BYTES, &layout).unwrap();
        let half = bytes.len() / 2;
        area[at as usize..at as usize + half].copy_from_slice(&bytes[..half]);
        let extents = sorted(ActivityLog::decode_extents(&area));
        assert_eq!(extents.len(), 20);
        assert!(extents.iter().all(|&(o, _)| o < 20 * AL_EXTENT_BYTES));
        // A bit flip anywhere in the newest record: the same.
        let mut area2 = area.clone();
        area2[at as usize..at as usize + bytes.len()].copy_from_slice(&bytes);
        assert_eq!(ActivityLog::decode_extents(&area2).len(), 21);
        area2[at as usize + 100] ^= 4;
        assert_eq!(ActivityLog::decode_extents(&area2).len(), 20);
    }

    #[test]
    fn al_ring_wraps_and_newest_wins() {
        let layout = al_layout();
        let slots = layout.al_bytes / AL_SLOT_BYTES;
        let mut area = vec![0u8; layout.al_bytes as usize];
        let mut log = ActivityLog::new();
        let mut offsets = Vec::new();
        for e in 0..(3 * slots + 3) {
            let (at, _) = log
                .touch(e * AL_EXTENT_BYTES, &layout)
                .map(|r| (r.0, apply(&mut area, Some(r))))
                .unwrap();
            offsets.push(at);
        }
        assert!(offsets.iter().all(|&o| o < layout.al_bytes));
        assert_eq!(offsets[0], offsets[slots as usize], "ring of {slots} slots");
        assert_eq!(
            ActivityLog::decode_extents(&area).len() as u64,
            3 * slots + 3
        );
    }

    #[test]
    fn al_resume_continues_sequence_and_hot_set() {
        let layout = al_layout();
        let mut area = vec![0u8; layout.al_bytes as usize];
        let mut log = ActivityLog::new();
        for e in [3u64, 9, 12] {
            apply(&mut area, log.touch(e * AL_EXTENT_BYTES, &layout));
        }
        let mut again = ActivityLog::resume(&area);
        assert_eq!(again.last_seq(), 3);
        assert!(
            again.touch(9 * AL_EXTENT_BYTES, &layout).is_none(),
            "still hot"
        );
        assert!(again.is_durable(9 * AL_EXTENT_BYTES));
        assert!(apply(&mut area, again.touch(50 * AL_EXTENT_BYTES, &layout)));
        assert_eq!(again.last_seq(), 4);
        // The new record wins and still names the old extents.
        assert_eq!(ActivityLog::decode_extents(&area).len(), 4);
        assert_eq!(ActivityLog::resume(&vec![0u8; 4096]), ActivityLog::new());
    }

    #[test]
    fn al_durability_tracking() {
        let layout = al_layout();
        let mut log = ActivityLog::new();
        assert!(!log.is_durable(0));
        assert!(log.touch(0, &layout).is_some());
        assert!(!log.is_durable(0), "record not written yet");
        assert!(log.touch(100, &layout).is_none());
        assert!(log.touch(AL_EXTENT_BYTES, &layout).is_some());
        log.written(1);
        assert!(log.is_durable(0));
        assert!(!log.is_durable(AL_EXTENT_BYTES));
        log.written(99); // clamped to the last record produced
        assert!(log.is_durable(AL_EXTENT_BYTES));
        assert!(log.touch(2 * AL_EXTENT_BYTES, &layout).is_some());
        assert!(!log.is_durable(2 * AL_EXTENT_BYTES));
    }

    #[test]
    fn al_busy_extents_are_not_evicted() {
        let layout = al_layout();
        let mut area = vec![0u8; layout.al_bytes as usize];
        let mut log = ActivityLog::new();
        let n = ACTIVITY_LOG_EXTENTS as u64;
        // Every hot extent has a write in flight.
        for e in 0..n {
            apply(&mut area, log.acquire(e * AL_EXTENT_BYTES, &layout));
        }
        assert!(apply(&mut area, log.acquire(n * AL_EXTENT_BYTES, &layout)));
        assert_eq!(
            log.extents().count() as u64,
            n + 1,
            "grew instead of evicting a busy extent"
        );
        assert_eq!(ActivityLog::decode_extents(&area).len() as u64, n + 1);
        // Extent 5 finishes; the next new extent evicts it (and only idle ones).
        log.release(5 * AL_EXTENT_BYTES);
        assert!(apply(
            &mut area,
            log.acquire((n + 1) * AL_EXTENT_BYTES, &layout)
        ));
        let hot: Vec<u64> = log.extents().collect();
        assert!(!hot.contains(&5) && hot.contains(&0) && hot.contains(&(n + 1)));
        assert_eq!(hot.len() as u64, n + 1);
        // Everything finishes: back to ACTIVITY_LOG_EXTENTS at the next record.
        for e in 0..=n + 1 {
            if e != 5 {
                log.release(e * AL_EXTENT_BYTES);
            }
        }
        assert!(apply(
            &mut area,
            log.touch((n + 2) * AL_EXTENT_BYTES, &layout)
        ));
        assert_eq!(log.extents().count(), ACTIVITY_LOG_EXTENTS);
    }

    #[test]
    fn al_crash_recovery_marks_bitmap() {
        // After a Primary crash: the AL's extents become out-of-sync ranges.
        let layout = Layout::internal(1 << 30).unwrap();
        let mut area = vec![0u8; layout.al_bytes as usize];
        let mut log = ActivityLog::new();
        apply(&mut area, log.touch(0, &layout));
        let last = layout.usable_bytes - 4096;
        apply(&mut area, log.touch(last, &layout));
        let mut bitmap = Bitmap::new(layout.usable_bytes);
        for (offset, len) in ActivityLog::decode_extents(&area) {
            bitmap.set_range(offset, len);
        }
        // The first extent whole, the last one up to the end of the data.
        let last_extent_start = last / AL_EXTENT_BYTES * AL_EXTENT_BYTES;
        let expected = AL_EXTENT_BYTES / 4096 + (layout.usable_bytes - last_extent_start) / 4096;
        assert_eq!(bitmap.count(), expected);
        check_count(&bitmap);
    }

    #[test]
    fn al_stale_records_of_an_older_run_do_not_hide_new_extents() {
        let layout = al_layout();
        let mut area = vec![0u8; layout.al_bytes as usize];
        // A long older run: high sequence numbers in every slot.
        let mut old = ActivityLog::new();
        for e in 0..200u64 {
            apply(&mut area, old.touch(e * AL_EXTENT_BYTES, &layout));
        }
        // Restarted with new() (sequence from 1) and wrote one extent.
        let mut fresh = ActivityLog::new();
        apply(&mut area, fresh.touch(7000 * AL_EXTENT_BYTES, &layout));
        let extents = ActivityLog::decode_extents(&area);
        assert!(extents.contains(&(7000 * AL_EXTENT_BYTES, AL_EXTENT_BYTES)));
        // Bounded: the older run's 7 surviving records add at most 127 + 6.
        assert!(
            extents.len() <= ACTIVITY_LOG_EXTENTS + 7,
            "{}",
            extents.len()
        );
    }

    /// Over many uuid sets, consistent or contradictory, both sides always
    /// reach mirror-image decisions (never both Target, never both Source).
    #[test]
    fn decisions_always_mirror_each_other() {
        let pool = [0u64, UUID_JUST_CREATED, A, B, C, D, A + UUID_NEW_BM_OFFSET];
        let pick = |rng: &mut crate::rng::Rng| pool[(rng.next_u64() % pool.len() as u64) as usize];
        let side = |rng: &mut crate::rng::Rng| {
            let bits = rng.next_u64();
            let (c, b, h0, h1) = (pick(rng), pick(rng), pick(rng), pick(rng));
            let mut v = view(c | (bits & 1), b | (bits >> 1 & 1), [h0, h1]);
            v.flags.consistent = bits >> 2 & 3 != 0;
            v.flags.primary_ind = bits >> 4 & 3 == 0;
            v.dirty_blocks = bits >> 8 & 3;
            v
        };
        let mut rng = crate::rng::Rng::new(7);
        let mut seen_rules = std::collections::BTreeSet::new();
        for _ in 0..100_000 {
            let (l, p) = (side(&mut rng), side(&mut rng));
            let a = compare(&l, &p, true);
            let b = compare(&p, &l, false);
            assert_eq!(
                b.decision,
                mirror(a.decision),
                "{l:?} {p:?}: {a:?} vs {b:?}"
            );
            seen_rules.insert(a.rule);
        }
        // The sample reaches every rule, so the property is not vacuous.
        for rule in [
            10, 20, 30, 34, 35, 36, 37, 40, 41, 50, 51, 60, 70, 71, 80, 90, 100, 110, 1000,
        ] {
            assert!(
                seen_rules.contains(&rule),
                "rule {rule} never reached: {seen_rules:?}"
            );
        }
    }

    #[test]
    fn rule_110_contradictory_histories() {
        // Each side's current is in the other's history: impossible in a real
        // sequence of events; both sides call it a split brain.
        let l = view(A, 0, [0, B]);
        let p = view(B, 0, [A, 0]);
        expect(&l, &p, SyncDecision::SplitBrain, 110);
    }

    /// Random ranges, merges and page round trips against a plain Vec<bool>.
    #[test]
    fn bitmap_matches_a_naive_model() {
        let mut rng = crate::rng::Rng::new(42);
        for blocks in [1u64, 63, 64, 65, 200, 4096 * 8 + 3] {
            let usable = blocks * BLOCK_BYTES;
            let layout = Layout::external(usable);
            let mut b = Bitmap::new(usable);
            let mut model = vec![false; blocks as usize];
            for _ in 0..300 {
                let offset = rng.next_u64() % (usable + 3 * BLOCK_BYTES);
                let len = rng.next_u64() % (40 * BLOCK_BYTES);
                let end = offset.saturating_add(len);
                match rng.next_u64() % 4 {
                    0 | 1 => {
                        b.set_range(offset, len);
                        if len > 0 {
                            for blk in offset / BLOCK_BYTES..end.div_ceil(BLOCK_BYTES).min(blocks) {
                                model[blk as usize] = true;
                            }
                        }
                    }
                    2 => {
                        b.clear_range(offset, len);
                        for blk in offset.div_ceil(BLOCK_BYTES)..(end / BLOCK_BYTES).min(blocks) {
                            model[blk as usize] = false;
                        }
                    }
                    _ => {
                        let first = (rng.next_u64() % (b.words().len() as u64 + 1)) as usize;
                        let w = rng.next_u64() & rng.next_u64();
                        b.merge_words(first, &[w]);
                        for bit in 0..64u64 {
                            let blk = first as u64 * 64 + bit;
                            if w >> bit & 1 == 1 && blk < blocks {
                                model[blk as usize] = true;
                            }
                        }
                    }
                }
                let from = rng.next_u64() % (blocks + 2);
                let want = (from..blocks).find(|&i| model[i as usize]);
                assert_eq!(b.next_set(from), want, "next_set({from}) of {blocks}");
            }
            for (i, &m) in model.iter().enumerate() {
                assert_eq!(b.is_set(i as u64), m, "block {i} of {blocks}");
            }
            check_count(&b);
            let pages = b.encode_pages(&layout, 0, usable);
            let bytes: Vec<u8> = pages.iter().flat_map(|(_, p)| p.iter().copied()).collect();
            assert_eq!(Bitmap::decode(usable, &bytes), b);
        }
    }

    /// Whatever the source's bitmap uuid, and whichever of its reports the
    /// target uses, a finished resync leaves both sides with equal uuids.
    #[test]
    fn sync_finished_leaves_equal_uuids() {
        for bitmap in [0, UUID_JUST_CREATED, B, B | 1] {
            let source = Uuids {
                current: C | 1,
                bitmap,
                history: [D, E],
            };
            let target = Uuids {
                current: A,
                bitmap: 0,
                history: [E, 0],
            };
            let mut src = source;
            let sync = src.start_sync_source(0x1234_5678_0000);
            let mut tgt = target;
            tgt.start_sync_target(sync);
            assert_eq!(bare(tgt.current), sync);
            let started = src;
            src.sync_finished_source();
            for report in [source, started] {
                let mut t = tgt;
                t.sync_finished_target(&report);
                assert_eq!(
                    (bare(t.current), t.bitmap, t.history),
                    (bare(src.current), src.bitmap, src.history),
                    "{bitmap:x} {report:?}"
                );
                assert!(!t.is_primary());
                let (l, p) = (
                    view(src.current, src.bitmap, src.history),
                    view(t.current, t.bitmap, t.history),
                );
                expect(&l, &p, SyncDecision::NoSync, 40);
            }
        }
    }

    /// Even with every extent busy, the hot set never outgrows one record.
    #[test]
    fn al_hot_set_is_bounded_by_a_record() {
        let layout = al_layout();
        let mut area = vec![0u8; layout.al_bytes as usize];
        let mut log = ActivityLog::new();
        for e in 0..(al::CAPACITY as u64 + 50) {
            assert!(apply(&mut area, log.acquire(e * AL_EXTENT_BYTES, &layout)));
            assert!(log.extents().count() <= al::CAPACITY);
        }
        assert_eq!(log.extents().count(), al::CAPACITY);
        assert_eq!(newest_record(&area).unwrap().1.len(), al::CAPACITY);
        // The newest extents are the ones kept.
        assert!(log.extents().any(|e| e == al::CAPACITY as u64 + 49));
        assert!(!log.extents().any(|e| e == 0));
    }
}
