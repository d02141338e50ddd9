//! A test-only local NBD server: `NbdServer` + `DiskWorker` on a temp file, no
//! replication, so the server and the worker are tested alone with real clients.
//!
//! One thread runs a mio loop in the shape the daemon uses (events, completions,
//! `flush`, `poll_request`, submit). Every host request maps to the same disk
//! request: Read/Write on the data, Flush, Trim as Discard, WriteZeroes.
//!
//! Deadlines: the loop polls with a 100 ms timeout and checks a stop flag, and
//! [`Harness`]'s drop sets it, wakes the loop and joins it, then removes the
//! temp directory. [`run_client`] runs a client with a deadline and kills it (by
//! its pid) and reaps it on timeout or panic.
#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bascule::core::replication::{DiskId, DiskIo, DiskTarget, HostId, HostIo};
use bascule::shell::disk_worker::{DiskFiles, DiskWorker, Faults};
use bascule::shell::nbd::{NbdConfig, NbdServer, INFLIGHT_BYTES_MAX};
use mio::{Events, Poll, Token, Waker};

/// mio allows one Waker per Poll: the disk worker and the stop request share it.
const WAKE: Token = Token(1);
const NBD_FIRST: usize = 16;
const NBD_TOKENS: usize = 17;

/// Counters the loop keeps (checked by tests), and commands for it.
#[derive(Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub writes: AtomicU64,
    pub max_pending: AtomicU64,
    /// Current values, updated every iteration.
    pub pending: AtomicU64,
    pub connections: AtomicU64,
    controls: Mutex<Vec<Control>>,
    /// Controls pushed and applied so far.
    pushed: AtomicU64,
    applied: AtomicU64,
}

/// What a test can ask the loop to do (applied at its next iteration).
#[derive(Clone, Copy, Debug)]
pub enum Control {
    ReadOnly(bool),
    Size(u64),
    CloseAll,
    /// While true, requests are kept instead of going to the disk, so they
    /// stay in flight; false submits them.
    Hold(bool),
}

/// A running server; everything is torn down on drop.
pub struct Harness {
    pub dir: PathBuf,
    pub sock: PathBuf,
    pub disk: PathBuf,
    pub name: String,
    pub stats: Arc<Stats>,
    pub faults: Arc<Faults>,
    stop: Arc<AtomicBool>,
    stop_waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
    _cleanup: TempDir,
}

/// Options for [`Harness::start_with`].
pub struct Options {
    pub size: u64,
    pub read_only: bool,
    pub inflight_bytes_max: usize,
    pub threads: usize,
    /// Size of the backing file if larger than the export (room to grow).
    pub backing_size: Option<u64>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            size: 64 << 20,
            read_only: false,
            inflight_bytes_max: INFLIGHT_BYTES_MAX,
            threads: 4,
            backing_size: None,
        }
    }
}

impl Harness {
    /// A server for export "repl" of `size` bytes in a fresh temp dir named by `tag`.
    pub fn start(tag: &str, size: u64) -> Harness {
        Harness::start_with(
            tag,
            Options {
                size,
                ..Options::default()
            },
        )
    }

    pub fn start_with(tag: &str, opts: Options) -> Harness {
        let dir = std::env::temp_dir().join(format!("bascule-nbd-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Removes the directory if setting up below panics.
        let cleanup = TempDir(dir.clone());
        let disk = dir.join("disk.img");
        let sock = dir.join("nbd.sock");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&disk)
            .unwrap();
        let backing = opts.backing_size.unwrap_or(opts.size).max(opts.size);
        f.set_len(backing).unwrap();
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), WAKE).unwrap());
        let stop_waker = Arc::clone(&waker);
        let files = DiskFiles {
            data: f,
            data_bytes: backing,
            meta: None,
        };
        let worker = DiskWorker::new(files, opts.threads, waker).unwrap();
        let faults = worker.faults();
        let cfg = NbdConfig {
            path: sock.clone(),
            name: "repl".into(),
            size: opts.size,
            read_only: opts.read_only,
            token_first: NBD_FIRST,
            tokens: NBD_TOKENS,
            inflight_bytes_max: opts.inflight_bytes_max,
        };
        let server = NbdServer::bind(cfg, poll.registry()).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let (s, st) = (Arc::clone(&stop), Arc::clone(&stats));
        let thread = std::thread::spawn(move || serve(poll, server, worker, &s, &st));
        Harness {
            dir,
            _cleanup: cleanup,
            sock,
            disk,
            name: "repl".into(),
            stats,
            faults,
            stop,
            stop_waker,
            thread: Some(thread),
        }
    }

    /// Has the loop apply `c`; returns once it has (or panics after 10 s).
    #[track_caller]
    pub fn control(&self, c: Control) {
        self.stats.controls.lock().unwrap().push(c);
        let n = self.stats.pushed.fetch_add(1, Ordering::SeqCst) + 1;
        let _ = self.stop_waker.wake();
        self.wait_until("the loop to apply a control", 10, |s| {
            s.applied.load(Ordering::SeqCst) >= n
        });
    }

    /// Waits up to `secs` for `cond` on the stats; panics on timeout.
    #[track_caller]
    pub fn wait_until(&self, what: &str, secs: u64, cond: impl Fn(&Stats) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !cond(&self.stats) {
            assert!(
                Instant::now() < deadline,
                "timed out after {secs} s waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The export's URI for libnbd clients and qemu.
    pub fn uri(&self) -> String {
        format!("nbd+unix:///{}?socket={}", self.name, self.sock.display())
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.stop_waker.wake();
        if let Some(t) = self.thread.take() {
            // The loop checks the flag at least every 100 ms.
            let _ = t.join();
        }
        // The directory goes with `_cleanup`, after the loop stopped.
    }
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn to_disk(io: HostIo) -> DiskIo {
    match io {
        HostIo::Read { offset, len } => DiskIo::Read {
            target: DiskTarget::Data,
            offset,
            len,
        },
        HostIo::Write { offset, data, fua } => DiskIo::Write {
            target: DiskTarget::Data,
            offset,
            data,
            fua,
        },
        HostIo::Flush => DiskIo::Flush,
        HostIo::Trim { offset, len, fua } => DiskIo::Discard { offset, len, fua },
        HostIo::WriteZeroes { offset, len, fua } => DiskIo::WriteZeroes { offset, len, fua },
    }
}

fn serve(
    mut poll: Poll,
    mut server: NbdServer,
    worker: DiskWorker,
    stop: &AtomicBool,
    stats: &Stats,
) {
    let mut events = Events::with_capacity(64);
    let mut done = Vec::new();
    let mut batch = Vec::new();
    let mut hold = false;
    let start = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(100))) {
            assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "poll: {e}");
        }
        for ev in events.iter() {
            if server.owns(ev.token()) {
                let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
                let writable = ev.is_writable() || ev.is_write_closed();
                let short_read_ends = !(ev.is_read_closed() || ev.is_error());
                server.handle_event(ev.token(), readable, writable, short_read_ends);
            }
        }
        for c in std::mem::take(&mut *stats.controls.lock().unwrap()) {
            match c {
                Control::ReadOnly(ro) => server.set_read_only(ro),
                Control::Size(size) => server.set_size(size),
                Control::CloseAll => server.close_all(),
                Control::Hold(h) => hold = h,
            }
            stats.applied.fetch_add(1, Ordering::SeqCst);
        }
        let now_ms = start.elapsed().as_millis() as u64;
        server.expire_handshakes(bascule::time::Instant::from_millis(now_ms));
        worker.drain(&mut done);
        for (id, result) in done.drain(..) {
            server.complete(HostId(id.0), result);
        }
        server.flush();
        while let Some((id, io)) = server.poll_request() {
            stats.requests.fetch_add(1, Ordering::Relaxed);
            if matches!(io, HostIo::Write { .. }) {
                stats.writes.fetch_add(1, Ordering::Relaxed);
            }
            batch.push((DiskId(id.0), to_disk(io)));
        }
        stats
            .max_pending
            .fetch_max(server.pending() as u64, Ordering::Relaxed);
        stats
            .pending
            .store(server.pending() as u64, Ordering::Relaxed);
        stats
            .connections
            .store(server.connections() as u64, Ordering::Relaxed);
        if !hold {
            worker.submit_batch(batch.drain(..));
        }
    }
    server.shutdown();
    drop(worker); // joins the disk threads after their queued requests
}

/// A child that is killed (by pid) and reaped when dropped, panic or not.
pub struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// What a client run produced.
pub struct ClientOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl ClientOutput {
    /// Panics with the output unless the client exited 0.
    #[track_caller]
    pub fn ok(self) -> ClientOutput {
        assert!(
            self.status.success(),
            "client failed: {}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs `cmd` with stdin closed and output captured in files under `dir`;
/// kills it after `secs` seconds (the test then fails).
#[track_caller]
pub fn run_client(dir: &Path, cmd: &mut Command, secs: u64) -> ClientOutput {
    let out_path = dir.join("client.out");
    let err_path = dir.join("client.err");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut guard = ChildGuard(Some(child));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(st) = guard.0.as_mut().unwrap().try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            drop(guard);
            let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
            panic!("{cmd:?} did not finish in {secs} s (killed); stderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    guard.0 = None;
    ClientOutput {
        status,
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    }
}
