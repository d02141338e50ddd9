//! Runs the replica's disk requests on worker threads, so the loop never blocks.
//!
//! Layer: shell. The loop calls [`DiskWorker::submit`] with a
//! [`DiskId`] and a [`DiskIo`]; a worker thread runs it with `pread`/`pwrite`
//! (any alignment), `pwritev2(RWF_DSYNC)` for a FUA write, `fdatasync` for
//! Flush, `fallocate(PUNCH_HOLE|KEEP_SIZE)` for Discard and
//! `fallocate(ZERO_RANGE|KEEP_SIZE)` for WriteZeroes (each falling back to writing
//! zeroes where the file system or device refuses), and pushes `(id, result)` to
//! a completion queue. Requests that wait for the device (Flush, FUA) go to
//! their own sync workers, so a long flush never holds up plain writes; data
//! workers take the queue in batches. The loop is woken through a `mio::Waker`,
//! once per batch: a worker wakes only when the queue's `wake_pending` flag was
//! clear, and [`DiskWorker::drain`] clears it before taking the queue, so a
//! completion is never stranded and a burst of completions costs one wake.
//! After a flush, the pages of large writes it made durable are dropped from the
//! page cache (see [`LARGE_WRITE_BYTES`]).
//!
//! Data and metadata: [`DiskTarget::Data`] offsets go to the data fd from 0 and
//! must stay below `data_bytes` (so a stray data write can never clobber internal
//! metadata); [`DiskTarget::Meta`] offsets go to the metadata fd plus
//! `meta_base` (the same file for `meta-disk internal`).
//!
//! Requests run concurrently and may complete in any order: ordering conflicting
//! writes is the engine's job (as DRBD's), not the worker's. A Flush syncs what
//! completed before it was submitted.
//!
//! Error injection (tests, the disk-error lab): [`Faults`] makes chosen ops fail
//! with EIO. Set it in-process with [`DiskWorker::faults`], or point the
//! environment variable `BASCULE_FAIL_DISK` at a file (re-read when its
//! modification time or length changes, checked at most every 50 ms) with one
//! rule a line:
//!
//! ```text
//!   # comment
//!   data START END     fail reads/writes/discards/zeroes of data touching [START, END)
//!   meta START END     the same for the metadata area
//!   after N            every op after the first N (counted from when the rule is read) fails
//!   all                every op fails, flushes included
//!   slow flush MS      every Flush waits MS milliseconds before it runs (a slow cache flush)
//! ```
//!
//! A missing file means no faults; a malformed line is ignored and logged.

use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration as StdDuration, Instant as StdInstant, SystemTime};

use mio::Waker;

use crate::core::replication::{DiskId, DiskIo, DiskTarget, IoError, IoResult};

/// Environment variable naming a fault-rule file (see the module doc).
pub const FAIL_DISK_ENV: &str = "BASCULE_FAIL_DISK";
/// Largest chunk written per call when zeroes are written by hand. Why not
/// more: the zeroes are a static, and `mlockall` keeps every page of the
/// binary resident; a 1 MiB static was a quarter of the idle daemon's RSS
/// (4.9 MiB against the 4 MiB goal) for a fallback that is rarely taken.
const ZERO_CHUNK: usize = 64 << 10;
/// How often the fault file's modification time is checked.
const FAULT_FILE_CHECK: StdDuration = StdDuration::from_millis(50);

/// Where the backing store is.
pub struct DiskFiles {
    /// The data file or device (offset 0 = first byte of replicated data).
    pub data: File,
    /// Data bytes addressable (the usable size; internal metadata lies beyond).
    pub data_bytes: u64,
    /// The metadata file (a clone of `data` for internal metadata) and the
    /// offset of the metadata area in it. None: Meta requests fail with EINVAL.
    pub meta: Option<(File, u64)>,
}

/// Which operations fail (error injection).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultRules {
    pub data_ranges: Vec<(u64, u64)>,
    pub meta_ranges: Vec<(u64, u64)>,
    /// Every op after this many (counted from when the rules were set) fails.
    pub fail_after: Option<u64>,
    pub all: bool,
    /// Every Flush waits this long before it runs (a slow device cache flush).
    pub slow_flush_ms: Option<u64>,
}

impl FaultRules {
    /// Parses the rule file format of the module doc. Bad lines are returned
    /// as `(line number, text)` and otherwise ignored.
    pub fn parse(text: &str) -> (FaultRules, Vec<(usize, String)>) {
        let mut rules = FaultRules::default();
        let mut bad = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            let words: Vec<&str> = line.split_whitespace().collect();
            let num = |s: &str| s.parse::<u64>().ok();
            let ok = match words.as_slice() {
                [] => true,
                ["all"] => {
                    rules.all = true;
                    true
                }
                ["after", n] => num(n).map(|n| rules.fail_after = Some(n)).is_some(),
                ["slow", "flush", ms] => num(ms).map(|ms| rules.slow_flush_ms = Some(ms)).is_some(),
                [which @ ("data" | "meta"), a, b] => match (num(a), num(b)) {
                    (Some(a), Some(b)) if a < b => {
                        let list = if *which == "data" {
                            &mut rules.data_ranges
                        } else {
                            &mut rules.meta_ranges
                        };
                        list.push((a, b));
                        true
                    }
                    _ => false,
                },
                _ => false,
            };
            if !ok {
                bad.push((i + 1, line.to_string()));
            }
        }
        (rules, bad)
    }

    fn hits(&self, target: DiskTarget, offset: u64, len: u64) -> bool {
        let ranges = match target {
            DiskTarget::Data => &self.data_ranges,
            DiskTarget::Meta => &self.meta_ranges,
        };
        let end = offset.saturating_add(len.max(1));
        ranges.iter().any(|&(a, b)| offset < b && a < end)
    }
}

/// What identifies a version of the fault file: (mtime, length), None if absent.
type FileStamp = Option<(SystemTime, u64)>;

/// Error injection state shared by the workers.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Mutex<FaultRules>,
    /// Ops counted since the rules were set (for `after N`).
    ops: AtomicU64,
    /// Fast path: false while no rule is set.
    active: AtomicBool,
    /// The fault file and when it was last looked at ((mtime, length), check time): a change of either reloads it.
    file: Option<PathBuf>,
    file_state: Mutex<(FileStamp, Option<StdInstant>)>,
}

impl Faults {
    /// Faults from `BASCULE_FAIL_DISK` if set, else none.
    pub fn from_env() -> Faults {
        match std::env::var_os(FAIL_DISK_ENV) {
            Some(path) => Faults::from_file(PathBuf::from(path)),
            None => Faults::default(),
        }
    }

    /// Faults from a rule file (which may not exist yet).
    pub fn from_file(path: PathBuf) -> Faults {
        Faults {
            file: Some(path),
            active: AtomicBool::new(true),
            ..Faults::default()
        }
    }

    /// Replaces the rules (and restarts the `after N` count).
    pub fn set(&self, rules: FaultRules) {
        let any = rules != FaultRules::default() || self.file.is_some();
        *self.rules.lock().unwrap() = rules;
        self.ops.store(0, Ordering::SeqCst);
        self.active.store(any, Ordering::SeqCst);
    }

    /// Re-reads the rule file if it changed.
    fn refresh(&self) {
        let Some(path) = &self.file else { return };
        let mut st = self.file_state.lock().unwrap();
        let now = StdInstant::now();
        if st
            .1
            .is_some_and(|t| now.duration_since(t) < FAULT_FILE_CHECK)
        {
            return;
        }
        st.1 = Some(now);
        let stamp = std::fs::metadata(path)
            .and_then(|m| Ok((m.modified()?, m.len())))
            .ok();
        if stamp == st.0 {
            return;
        }
        st.0 = stamp;
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let (rules, bad) = FaultRules::parse(&text);
        for (line, text) in bad {
            log::debug!(
                "disk_fault_rule_bad file={}:{line} text={text:?}",
                path.display()
            );
        }
        *self.rules.lock().unwrap() = rules;
        self.ops.store(0, Ordering::SeqCst);
    }

    /// How long a Flush is held before it runs (`slow flush MS`), if at all.
    fn flush_delay(&self) -> Option<StdDuration> {
        if !self.active.load(Ordering::Relaxed) {
            return None;
        }
        self.refresh();
        let ms = self.rules.lock().unwrap().slow_flush_ms?;
        Some(StdDuration::from_millis(ms))
    }

    /// True when this op must fail. `range`: None for a flush.
    fn should_fail(&self, range: Option<(DiskTarget, u64, u64)>) -> bool {
        if !self.active.load(Ordering::Relaxed) {
            return false;
        }
        self.refresh();
        let rules = self.rules.lock().unwrap();
        let count = self.ops.fetch_add(1, Ordering::SeqCst);
        if rules.all || rules.fail_after.is_some_and(|n| count >= n) {
            return true;
        }
        range.is_some_and(|(t, o, l)| rules.hits(t, o, l))
    }
}

/// The queues shared between the loop and the workers.
struct Shared {
    jobs: Mutex<Jobs>,
    /// Data workers wait here for `Jobs::queue`.
    job_ready: Condvar,
    /// The sync workers wait here for `Jobs::sync`.
    sync_ready: Condvar,
    done: Mutex<Vec<(DiskId, IoResult)>>,
    wake_pending: AtomicBool,
    waker: Arc<Waker>,
    files: DiskFiles,
    faults: Arc<Faults>,
    /// The data range that large writes touched since the last flush began
    /// (see [`LARGE_WRITE_BYTES`]).
    large: Mutex<Option<(u64, u64)>>,
}

struct Jobs {
    /// Reads, writes, discards and zeroes that need no durability.
    queue: VecDeque<(DiskId, DiskIo)>,
    /// Flushes and FUA requests: they wait for the disk itself.
    sync: VecDeque<(DiskId, DiskIo)>,
    stop: bool,
}

/// Data workers plus [`SYNC_THREADS`] sync workers; completions come back
/// through [`drain`].
///
/// Why two kinds: a flush (or a FUA write) waits for the device, milliseconds
/// when the page cache holds much dirty data, and must never hold up the
/// plain writes queued behind it (nor their protocol C acknowledgements).
/// Why batches: on one file, buffered writes serialise on the inode lock in
/// the kernel anyway, so several threads each taking one request only add
/// wake-ups and lock spinning; a data worker takes every queued request (up
/// to [`WORKER_BATCH_MAX`]), runs them in order and wakes the loop once.
///
/// [`drain`]: DiskWorker::drain
pub struct DiskWorker {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

/// A data write at least this large is dropped from the page cache once a
/// flush has made it durable. Why: the kernel caches a large write in large
/// folios (up to 2 MiB), and every later 4 KiB write into one makes ext4 walk
/// all of the folio's buffers, and its writeback lock the whole folio: after
/// a full sync (512 KiB resync writes) the SyncTarget's 4 KiB random writes
/// ran at a fraction of their speed (`ext4_block_write_begin` 11 % of all
/// CPU). Dropping only clean pages never loses data; the next read of the
/// range comes from the disk.
pub const LARGE_WRITE_BYTES: usize = 64 << 10;

/// Sync workers per disk: two, so that a FUA write (an activity-log record,
/// a journal commit) need not wait for a long barrier flush to finish.
pub const SYNC_THREADS: usize = 2;

/// Most requests a data worker takes from the queue at once.
pub const WORKER_BATCH_MAX: usize = 64;

/// Whether a request waits for the disk (goes to the sync worker).
fn is_sync(io: &DiskIo) -> bool {
    match io {
        DiskIo::Flush => true,
        DiskIo::Write { fua, .. }
        | DiskIo::Discard { fua, .. }
        | DiskIo::WriteZeroes { fua, .. } => *fua,
        DiskIo::Read { .. } => false,
    }
}

impl DiskWorker {
    /// Starts `threads` data workers (at least one) and the sync workers on
    /// `files`; `waker` is the loop's waker. mio allows only one `Waker` per
    /// `Poll`, so it may be shared with other wakers of the loop: call
    /// [`DiskWorker::drain`] on every wake of that token (an empty drain is
    /// cheap). Faults come from `BASCULE_FAIL_DISK`.
    pub fn new(files: DiskFiles, threads: usize, waker: Arc<Waker>) -> std::io::Result<DiskWorker> {
        advise_random(&files.data);
        let shared = Arc::new(Shared {
            jobs: Mutex::new(Jobs {
                queue: VecDeque::new(),
                sync: VecDeque::new(),
                stop: false,
            }),
            job_ready: Condvar::new(),
            sync_ready: Condvar::new(),
            done: Mutex::new(Vec::new()),
            wake_pending: AtomicBool::new(false),
            waker,
            files,
            faults: Arc::new(Faults::from_env()),
            large: Mutex::new(None),
        });
        let mut handles = Vec::new();
        for i in 0..SYNC_THREADS + threads.max(1) {
            let s = Arc::clone(&shared);
            let sync = i < SYNC_THREADS;
            let name = if sync {
                format!("disk-sync-{i}")
            } else {
                format!("disk-{}", i - SYNC_THREADS)
            };
            let h = std::thread::Builder::new()
                .name(name)
                .spawn(move || worker(&s, sync));
            match h {
                Ok(h) => handles.push(h),
                Err(e) => {
                    let w = DiskWorker {
                        shared,
                        threads: handles,
                    };
                    drop(w);
                    return Err(e);
                }
            }
        }
        Ok(DiskWorker {
            shared,
            threads: handles,
        })
    }

    /// The error-injection hook.
    pub fn faults(&self) -> Arc<Faults> {
        Arc::clone(&self.shared.faults)
    }

    /// Queues one request (never blocks on the disk).
    pub fn submit(&self, id: DiskId, io: DiskIo) {
        self.submit_batch(std::iter::once((id, io)));
    }

    /// Queues several requests with one lock and wakes one worker of each kind
    /// that got work (a data worker that leaves work queued wakes the next).
    pub fn submit_batch(&self, batch: impl IntoIterator<Item = (DiskId, DiskIo)>) {
        let (mut data, mut sync) = (false, false);
        let mut jobs = self.shared.jobs.lock().unwrap();
        for (id, io) in batch {
            if is_sync(&io) {
                jobs.sync.push_back((id, io));
                sync = true;
            } else {
                jobs.queue.push_back((id, io));
                data = true;
            }
        }
        drop(jobs);
        if data {
            self.shared.job_ready.notify_one();
        }
        if sync {
            self.shared.sync_ready.notify_one();
        }
    }

    /// Moves every completion so far into `out` (call when the waker fires).
    pub fn drain(&self, out: &mut Vec<(DiskId, IoResult)>) {
        self.shared.wake_pending.store(false, Ordering::SeqCst);
        let mut done = self.shared.done.lock().unwrap();
        if out.is_empty() {
            std::mem::swap(out, &mut *done);
        } else {
            out.append(&mut done);
        }
    }
}

impl Drop for DiskWorker {
    /// Stops the workers after the requests already queued and joins them.
    fn drop(&mut self) {
        self.shared.jobs.lock().unwrap().stop = true;
        self.shared.job_ready.notify_all();
        self.shared.sync_ready.notify_all();
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}

/// One worker: a sync worker runs `Jobs::sync` one request at a time, a
/// data worker takes batches from `Jobs::queue`. Each completion is published
/// as it is done (a drain for another reason sees it); the loop is woken once
/// per batch.
fn worker(s: &Shared, sync: bool) {
    let mut batch: Vec<(DiskId, DiskIo)> = Vec::with_capacity(WORKER_BATCH_MAX);
    loop {
        {
            let mut jobs = s.jobs.lock().unwrap();
            loop {
                let q = if sync {
                    &mut jobs.sync
                } else {
                    &mut jobs.queue
                };
                if !q.is_empty() {
                    let n = if sync {
                        1
                    } else {
                        q.len().min(WORKER_BATCH_MAX)
                    };
                    batch.extend(q.drain(..n));
                    let more = !q.is_empty();
                    drop(jobs);
                    if more && !sync {
                        s.job_ready.notify_one();
                    }
                    break;
                }
                if jobs.stop {
                    return;
                }
                jobs = if sync {
                    s.sync_ready.wait(jobs).unwrap()
                } else {
                    s.job_ready.wait(jobs).unwrap()
                };
            }
        }
        for (id, io) in batch.drain(..) {
            let drop_after = match &io {
                DiskIo::Write {
                    target: DiskTarget::Data,
                    offset,
                    data,
                    ..
                } if data.len() >= LARGE_WRITE_BYTES => {
                    let mut large = s.large.lock().unwrap();
                    let end = offset + data.len() as u64;
                    *large =
                        Some(large.map_or((*offset, end), |(a, b)| (a.min(*offset), b.max(end))));
                    None
                }
                DiskIo::Flush => s.large.lock().unwrap().take(),
                _ => None,
            };
            let result = run(&s.files, &s.faults, io);
            if let (Ok(_), Some((start, end))) = (&result, drop_after) {
                drop_cached(&s.files.data, start, end);
            }
            s.done.lock().unwrap().push((id, result));
        }
        if !s.wake_pending.swap(true, Ordering::SeqCst) {
            if let Err(e) = s.waker.wake() {
                log::debug!("disk_wake_failed error={e}");
            }
        }
    }
}

/// Runs one request on the calling thread.
pub fn run(files: &DiskFiles, faults: &Faults, io: DiskIo) -> IoResult {
    let range = match &io {
        DiskIo::Read {
            target,
            offset,
            len,
        } => Some((*target, *offset, *len as u64)),
        DiskIo::Write {
            target,
            offset,
            data,
            ..
        } => Some((*target, *offset, data.len() as u64)),
        DiskIo::Discard { offset, len, .. } | DiskIo::WriteZeroes { offset, len, .. } => {
            Some((DiskTarget::Data, *offset, *len as u64))
        }
        DiskIo::Flush => None,
    };
    if faults.should_fail(range) {
        return Err(IoError::Io);
    }
    if let Some((target, offset, len)) = range {
        if target == DiskTarget::Data
            && offset
                .checked_add(len)
                .map_or(true, |end| end > files.data_bytes)
        {
            return Err(IoError::Invalid);
        }
    }
    match io {
        DiskIo::Read {
            target,
            offset,
            len,
        } => {
            let (file, base) = locate(files, target)?;
            let buf = read_full(file, len as usize, base + offset).map_err(map_err)?;
            Ok(Some(Arc::new(buf)))
        }
        DiskIo::Write {
            target,
            offset,
            data,
            fua,
        } => {
            let (file, base) = locate(files, target)?;
            if fua {
                write_dsync(file, &data, base + offset).map_err(map_err)?;
            } else {
                file.write_all_at(&data, base + offset).map_err(map_err)?;
            }
            Ok(None)
        }
        DiskIo::Flush => {
            if let Some(delay) = faults.flush_delay() {
                std::thread::sleep(delay);
            }
            files.data.sync_data().map_err(map_err)?;
            if let Some((meta, _)) = &files.meta {
                if !same_file(&files.data, meta) {
                    meta.sync_data().map_err(map_err)?;
                }
            }
            Ok(None)
        }
        DiskIo::Discard { offset, len, fua } => {
            zero_range(&files.data, offset, len as u64, libc::FALLOC_FL_PUNCH_HOLE)?;
            sync_if(&files.data, fua)
        }
        DiskIo::WriteZeroes { offset, len, fua } => {
            zero_range(&files.data, offset, len as u64, libc::FALLOC_FL_ZERO_RANGE)?;
            sync_if(&files.data, fua)
        }
    }
}

/// Tells the kernel the data area is read at random (POSIX_FADV_RANDOM).
/// Why: a resync reads the whole area in 128 KiB chunks; with readahead on,
/// the page cache fills with large folios (up to 2 MiB of zeroes from a
/// sparse file), and every later 4 KiB host write into one makes ext4 walk
/// all of its buffer heads (`ext4_block_write_begin`): measured at half the
/// 4k random-write IOPS after a full sync. Without readahead a read caches
/// exactly what it asked for, and the hint changes no data or ordering.
/// Best effort: a file that refuses the hint is served all the same.
fn advise_random(file: &File) {
    // SAFETY: posix_fadvise only reads its arguments; the fd is open.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
    if rc != 0 {
        log::debug!("disk_fadvise_failed error={rc}");
    }
}

/// Drops the clean cached pages of `[start, end)` (POSIX_FADV_DONTNEED; dirty
/// pages stay). Best effort, like [`advise_random`].
fn drop_cached(file: &File, start: u64, end: u64) {
    // SAFETY: posix_fadvise only reads its arguments; the fd is open.
    let rc = unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            start as libc::off_t,
            (end - start) as libc::off_t,
            libc::POSIX_FADV_DONTNEED,
        )
    };
    if rc != 0 {
        log::debug!("disk_fadvise_failed error={rc}");
    }
}

/// Whether two handles name one file (internal metadata: the same backing
/// file). Why: the data's fdatasync already made the metadata durable, and a
/// second one still costs a device cache flush; on a Secondary every barrier
/// flushed twice. On any doubt (fstat failed), they are treated as different.
fn same_file(a: &File, b: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (a.metadata(), b.metadata()) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

fn locate(files: &DiskFiles, target: DiskTarget) -> Result<(&File, u64), IoError> {
    match target {
        DiskTarget::Data => Ok((&files.data, 0)),
        DiskTarget::Meta => files
            .meta
            .as_ref()
            .map(|(f, b)| (f, *b))
            .ok_or(IoError::Invalid),
    }
}

/// pread of `len` bytes into a fresh buffer, never zero-filled first (a
/// memset of up to 1 MiB per read costs as much as the copy). Bytes past the
/// end of a short file read as zeroes, as from a sparse file of full size.
fn read_full(file: &File, len: usize, offset: u64) -> std::io::Result<Vec<u8>> {
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    while buf.len() < len {
        let at = buf.len();
        let spare = &mut buf.spare_capacity_mut()[..len - at];
        // SAFETY: pread writes at most spare.len() bytes into memory the Vec
        // owns; the length is raised only by what the kernel reports written.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                spare.len(),
                (offset + at as u64) as libc::off_t,
            )
        };
        match n {
            0 => break,
            // SAFETY: n bytes at the end of the initialised part were just written.
            n if n > 0 => unsafe { buf.set_len(at + n as usize) },
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    buf.resize(len, 0);
    Ok(buf)
}

/// A FUA write: `pwritev2(RWF_DSYNC)`, durable when it returns, like a write
/// to a file opened `O_DSYNC`. Why not pwrite + fdatasync: fdatasync writes
/// back every dirty page of the file, and with internal metadata an activity
/// log record (FUA) then waited for, and stalled behind, milliseconds of
/// unrelated data writeback; RWF_DSYNC syncs this range (and the metadata
/// needed to read it back) and flushes the device cache. Kernels without
/// RWF_DSYNC (before 4.7) get the write and an fdatasync.
fn write_dsync(file: &File, data: &[u8], offset: u64) -> std::io::Result<()> {
    let mut done = 0usize;
    while done < data.len() {
        let rest = &data[done..];
        let iov = libc::iovec {
            iov_base: rest.as_ptr() as *mut libc::c_void,
            iov_len: rest.len(),
        };
        // SAFETY: one iovec over memory we borrow for the call; the fd is open.
        let n = unsafe {
            libc::pwritev2(
                file.as_raw_fd(),
                &iov,
                1,
                (offset + done as u64) as libc::off_t,
                libc::RWF_DSYNC,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL) => {
                    file.write_all_at(rest, offset + done as u64)?;
                    return file.sync_data();
                }
                _ => return Err(e),
            }
        }
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        done += n as usize;
    }
    Ok(())
}

fn sync_if(file: &File, fua: bool) -> IoResult {
    if fua {
        file.sync_data().map_err(map_err)?;
    }
    Ok(None)
}

/// fallocate with `mode | KEEP_SIZE`; where that is unsupported, writes zeroes.
fn zero_range(file: &File, offset: u64, len: u64, mode: libc::c_int) -> Result<(), IoError> {
    if len == 0 {
        return Ok(());
    }
    let rc = unsafe {
        // SAFETY: fallocate on an fd we own, with plain integer arguments.
        libc::fallocate(
            file.as_raw_fd(),
            mode | libc::FALLOC_FL_KEEP_SIZE,
            offset as i64,
            len as i64,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL) | Some(libc::ENODEV) => {}
        _ => return Err(map_err(e)),
    }
    static ZEROES: [u8; ZERO_CHUNK] = [0; ZERO_CHUNK];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(ZERO_CHUNK as u64) as usize;
        file.write_all_at(&ZEROES[..n], offset + done)
            .map_err(map_err)?;
        done += n as u64;
    }
    Ok(())
}

/// errno to the replication's error vocabulary (NBD maps EDQUOT/EFBIG to ENOSPC).
pub fn map_err(e: std::io::Error) -> IoError {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG) => IoError::NoSpace,
        Some(libc::EROFS) | Some(libc::EPERM) | Some(libc::EACCES) => IoError::ReadOnly,
        Some(libc::EINVAL) => IoError::Invalid,
        _ => IoError::Io,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll, Token};

    /// A temp directory removed on drop (also when a test panics).
    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    impl std::ops::Deref for Dir {
        type Target = std::path::Path;
        fn deref(&self) -> &std::path::Path {
            &self.0
        }
    }

    fn temp_file(name: &str, len: u64) -> (Dir, File) {
        let dir = std::env::temp_dir().join(format!("bascule-dw-{}-{name}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("disk");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.set_len(len).unwrap();
        (Dir(dir), f)
    }

    /// Submits `ios` and waits (bounded) until all complete; results by id.
    fn run_all(w: &DiskWorker, poll: &mut Poll, ios: Vec<DiskIo>) -> Vec<IoResult> {
        let n = ios.len();
        w.submit_batch(
            ios.into_iter()
                .enumerate()
                .map(|(i, io)| (DiskId(i as u64), io)),
        );
        let mut got: Vec<Option<IoResult>> = vec![None; n];
        let mut events = Events::with_capacity(8);
        let deadline = StdInstant::now() + StdDuration::from_secs(10);
        let mut done = Vec::new();
        while got.iter().any(Option::is_none) {
            assert!(
                StdInstant::now() < deadline,
                "disk worker did not complete in 10 s"
            );
            poll.poll(&mut events, Some(StdDuration::from_millis(100)))
                .unwrap();
            w.drain(&mut done);
            for (id, r) in done.drain(..) {
                got[id.0 as usize] = Some(r);
            }
        }
        got.into_iter().map(Option::unwrap).collect()
    }

    fn worker_on(name: &str, len: u64) -> (Dir, DiskWorker, Poll) {
        let (dir, f) = temp_file(name, len);
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(7)).unwrap());
        let meta = f.try_clone().unwrap();
        let files = DiskFiles {
            data: f,
            data_bytes: len - 4096,
            meta: Some((meta, len - 4096)),
        };
        (dir, DiskWorker::new(files, 3, waker).unwrap(), poll)
    }

    #[test]
    fn a_clone_is_the_same_file_another_file_is_not() {
        let (_d1, a) = temp_file("same-a", 4096);
        let (_d2, b) = temp_file("same-b", 4096);
        assert!(same_file(&a, &a.try_clone().unwrap()));
        assert!(!same_file(&a, &b));
    }

    #[test]
    fn write_read_discard_zeroes_flush_meta() {
        let (dir, w, mut poll) = worker_on("basic", 1 << 20);
        let data = Arc::new(
            (0..10_000u32)
                .map(|i| (i % 251) as u8 + 1)
                .collect::<Vec<u8>>(),
        );
        let r = run_all(
            &w,
            &mut poll,
            vec![
                DiskIo::Write {
                    target: DiskTarget::Data,
                    offset: 3,
                    data: data.clone(),
                    fua: true,
                },
                DiskIo::Write {
                    target: DiskTarget::Meta,
                    offset: 10,
                    data: Arc::new(b"meta".to_vec()),
                    fua: false,
                },
            ],
        );
        assert_eq!(r, vec![Ok(None), Ok(None)]);
        let r = run_all(
            &w,
            &mut poll,
            vec![
                DiskIo::Read {
                    target: DiskTarget::Data,
                    offset: 3,
                    len: 10_000,
                },
                DiskIo::Read {
                    target: DiskTarget::Meta,
                    offset: 10,
                    len: 4,
                },
                DiskIo::Flush,
            ],
        );
        assert_eq!(r[0], Ok(Some(data.clone())));
        assert_eq!(
            r[1],
            Ok(Some(Arc::new(b"meta".to_vec()))),
            "meta is at base + offset"
        );
        assert_eq!(r[2], Ok(None));
        let raw = std::fs::read(dir.join("disk")).unwrap();
        assert_eq!(&raw[(1 << 20) - 4086..(1 << 20) - 4082], b"meta");
        let r = run_all(
            &w,
            &mut poll,
            vec![
                DiskIo::Discard {
                    offset: 4096,
                    len: 4096,
                    fua: false,
                },
                DiskIo::WriteZeroes {
                    offset: 100,
                    len: 50,
                    fua: true,
                },
            ],
        );
        assert_eq!(r, vec![Ok(None), Ok(None)]);
        let r = run_all(
            &w,
            &mut poll,
            vec![DiskIo::Read {
                target: DiskTarget::Data,
                offset: 3,
                len: 10_000,
            }],
        );
        let mut want = data.to_vec();
        want[97..147].fill(0);
        want[4093..8189].fill(0);
        assert_eq!(r[0], Ok(Some(Arc::new(want))));
        // Past the data area: refused, the metadata is safe.
        let r = run_all(
            &w,
            &mut poll,
            vec![DiskIo::Write {
                target: DiskTarget::Data,
                offset: (1 << 20) - 4097,
                data: Arc::new(vec![1, 2]),
                fua: false,
            }],
        );
        assert_eq!(r, vec![Err(IoError::Invalid)]);
        drop(w);
    }

    #[test]
    fn injected_faults() {
        let (_dir, w, mut poll) = worker_on("faults", 1 << 20);
        let (rules, bad) = FaultRules::parse("# test\ndata 8192 12288\nbogus\nmeta 0 1\n");
        assert_eq!(bad, vec![(3, "bogus".to_string())]);
        w.faults().set(rules);
        let rd = |offset, len| DiskIo::Read {
            target: DiskTarget::Data,
            offset,
            len,
        };
        let r = run_all(
            &w,
            &mut poll,
            vec![
                rd(0, 8192),
                rd(8191, 2),
                rd(12288, 10),
                DiskIo::Discard {
                    offset: 12000,
                    len: 1000,
                    fua: false,
                },
                DiskIo::Read {
                    target: DiskTarget::Meta,
                    offset: 0,
                    len: 1,
                },
                DiskIo::Flush,
            ],
        );
        let ok = |r: &IoResult| r.is_ok();
        assert_eq!(
            r.iter().map(ok).collect::<Vec<_>>(),
            vec![true, false, true, false, false, true]
        );
        assert_eq!(r[1], Err(IoError::Io));
        w.faults().set(FaultRules::parse("after 2").0);
        let r = run_all(&w, &mut poll, vec![DiskIo::Flush]);
        let r2 = run_all(&w, &mut poll, vec![DiskIo::Flush]);
        let r3 = run_all(&w, &mut poll, vec![DiskIo::Flush, rd(0, 1)]);
        assert_eq!((r, r2), (vec![Ok(None)], vec![Ok(None)]));
        assert_eq!(r3, vec![Err(IoError::Io), Err(IoError::Io)]);
        w.faults().set(FaultRules::default());
        assert_eq!(
            run_all(&w, &mut poll, vec![rd(0, 1)]),
            vec![Ok(Some(Arc::new(vec![0])))]
        );
        drop(w);
    }

    /// A file shorter than the data area reads as zeroes past its end.
    #[test]
    fn short_file_reads_zeroes_past_its_end() {
        let (_dir, f) = temp_file("short", 1000);
        f.write_all_at(&[7u8; 1000], 0).unwrap();
        let files = DiskFiles {
            data: f,
            data_bytes: 8192,
            meta: None,
        };
        let faults = Faults::default();
        let r = run(
            &files,
            &faults,
            DiskIo::Read {
                target: DiskTarget::Data,
                offset: 500,
                len: 7000,
            },
        );
        let mut want = vec![7u8; 500];
        want.resize(7000, 0);
        assert_eq!(r, Ok(Some(Arc::new(want))));
        let meta = run(
            &files,
            &faults,
            DiskIo::Read {
                target: DiskTarget::Meta,
                offset: 0,
                len: 1,
            },
        );
        assert_eq!(meta, Err(IoError::Invalid), "no metadata file configured");
    }

    /// The rule file is picked up when it appears or changes, and dropped
    /// when it goes away.
    #[test]
    fn fault_file_is_reread() {
        let (dir, f) = temp_file("ffile", 8192);
        let files = DiskFiles {
            data: f,
            data_bytes: 8192,
            meta: None,
        };
        let rules = dir.join("faults");
        let faults = Faults::from_file(rules.clone());
        let rd = || {
            run(
                &files,
                &faults,
                DiskIo::Read {
                    target: DiskTarget::Data,
                    offset: 4096,
                    len: 10,
                },
            )
        };
        let settle = || std::thread::sleep(FAULT_FILE_CHECK + StdDuration::from_millis(20));
        assert!(rd().is_ok(), "no file: no faults");
        std::fs::write(&rules, "data 4000 4100\n").unwrap();
        settle();
        assert_eq!(rd(), Err(IoError::Io));
        std::fs::write(&rules, "data 0 10 # elsewhere now, and a longer file\n").unwrap();
        settle();
        assert!(rd().is_ok());
        std::fs::write(&rules, "all\n").unwrap();
        settle();
        assert_eq!(run(&files, &faults, DiskIo::Flush), Err(IoError::Io));
        std::fs::remove_file(&rules).unwrap();
        settle();
        assert!(rd().is_ok());
    }

    /// A slow flush (`slow flush MS`) holds neither plain writes nor reads:
    /// they run on the data workers and complete while it waits.
    #[test]
    fn a_slow_flush_holds_up_no_plain_write() {
        let (_dir, w, mut poll) = worker_on("slowflush", 1 << 20);
        let (rules, bad) = FaultRules::parse(
            "slow flush 1000
",
        );
        assert!(bad.is_empty());
        assert_eq!(rules.slow_flush_ms, Some(1000));
        w.faults().set(rules);
        let t0 = StdInstant::now();
        // One batch, the flush first: a worker that took the batch whole
        // would run the writes after it.
        let writes = (1..=8).map(|i| {
            (
                DiskId(i),
                DiskIo::Write {
                    target: DiskTarget::Data,
                    offset: i * 4096,
                    data: Arc::new(vec![i as u8; 4096]),
                    fua: false,
                },
            )
        });
        w.submit_batch(std::iter::once((DiskId(0), DiskIo::Flush)).chain(writes));
        let mut events = Events::with_capacity(8);
        let mut order = Vec::new();
        let mut done = Vec::new();
        let deadline = t0 + StdDuration::from_secs(10);
        while order.len() < 9 {
            assert!(StdInstant::now() < deadline, "not all done: {order:?}");
            poll.poll(&mut events, Some(StdDuration::from_millis(100)))
                .unwrap();
            w.drain(&mut done);
            for (id, r) in done.drain(..) {
                assert!(r.is_ok(), "{id:?}: {r:?}");
                order.push(id.0);
            }
        }
        assert_eq!(
            order.last(),
            Some(&0),
            "the writes waited for the flush: {order:?}"
        );
        assert!(
            t0.elapsed() >= StdDuration::from_millis(1000),
            "the flush was not held"
        );
    }

    /// A burst of completions wakes the loop far fewer times than it completes.
    #[test]
    fn wakes_are_coalesced() {
        let (_dir, w, mut poll) = worker_on("wakes", 1 << 20);
        let n = 2000;
        w.submit_batch((0..n).map(|i| {
            (
                DiskId(i),
                DiskIo::Read {
                    target: DiskTarget::Data,
                    offset: i,
                    len: 1,
                },
            )
        }));
        let mut events = Events::with_capacity(8);
        let mut wakes = 0;
        let mut done = Vec::new();
        let deadline = StdInstant::now() + StdDuration::from_secs(10);
        // Let the workers finish before draining: all completions, few wakes.
        std::thread::sleep(StdDuration::from_millis(200));
        while done.len() < n as usize {
            assert!(StdInstant::now() < deadline);
            poll.poll(&mut events, Some(StdDuration::from_millis(100)))
                .unwrap();
            wakes += events.iter().count();
            w.drain(&mut done);
        }
        assert!(wakes < 10, "{wakes} wakes for {n} completions");
        drop(w);
    }

    /// Pages of `[offset, offset + len)` of `file` in the page cache (mincore).
    fn resident_pages(file: &File, offset: u64, len: usize) -> usize {
        let page = 4096usize;
        // SAFETY: a fresh read-only shared mapping of an open file, unmapped
        // before return; mincore writes one byte per page into `vec`.
        unsafe {
            let addr = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                offset as libc::off_t,
            );
            assert_ne!(addr, libc::MAP_FAILED, "mmap");
            let mut vec = vec![0u8; len.div_ceil(page)];
            let rc = libc::mincore(addr, len, vec.as_mut_ptr());
            libc::munmap(addr, len);
            assert_eq!(rc, 0, "mincore");
            vec.iter().filter(|&&b| b & 1 == 1).count()
        }
    }

    /// A large write leaves the page cache once a flush made it durable; a
    /// small one stays (and so does a large one nobody flushed yet).
    #[test]
    fn large_writes_leave_the_page_cache_after_a_flush() {
        let (_dir, w, mut poll) = worker_on("dontneed", 8 << 20);
        let big = 1usize << 20;
        let small_at = 4u64 << 20;
        let writes = vec![
            DiskIo::Write {
                target: DiskTarget::Data,
                offset: 0,
                data: Arc::new(vec![7u8; big]),
                fua: false,
            },
            DiskIo::Write {
                target: DiskTarget::Data,
                offset: small_at,
                data: Arc::new(vec![9u8; 4096]),
                fua: false,
            },
        ];
        assert!(run_all(&w, &mut poll, writes).iter().all(Result::is_ok));
        let data = &w.shared.files.data;
        let before = resident_pages(data, 0, big);
        assert!(before > 0, "a fresh write is cached");
        assert!(run_all(&w, &mut poll, vec![DiskIo::Flush])[0].is_ok());
        // SAFETY: statfs fills the struct we pass.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::fstatfs(data.as_raw_fd(), &mut st) };
        if rc == 0 && st.f_type == libc::TMPFS_MAGIC {
            eprintln!("tmpfs keeps its pages: residency not checked");
            return;
        }
        assert_eq!(
            resident_pages(data, 0, big),
            0,
            "{before} pages were cached"
        );
        assert_eq!(resident_pages(data, small_at, 4096), 1);
        let read = run_all(
            &w,
            &mut poll,
            vec![DiskIo::Read {
                target: DiskTarget::Data,
                offset: 4096,
                len: 4096,
            }],
        );
        assert_eq!(
            read[0].as_ref().unwrap().as_deref().unwrap(),
            &vec![7u8; 4096]
        );
    }

    /// Flushes and FUA writes go to the sync workers, everything else to the
    /// data workers.
    #[test]
    fn durable_requests_are_the_sync_workers() {
        let w = |fua| DiskIo::Write {
            target: DiskTarget::Meta,
            offset: 0,
            data: Arc::new(vec![0u8; 512]),
            fua,
        };
        assert!(is_sync(&DiskIo::Flush));
        assert!(is_sync(&w(true)));
        assert!(!is_sync(&w(false)));
        assert!(is_sync(&DiskIo::Discard {
            offset: 0,
            len: 4096,
            fua: true
        }));
        assert!(!is_sync(&DiskIo::WriteZeroes {
            offset: 0,
            len: 4096,
            fua: false
        }));
        assert!(!is_sync(&DiskIo::Read {
            target: DiskTarget::Data,
            offset: 0,
            len: 1
        }));
    }
}
