//! End-to-end tests of the replicated disk: two daemons in the network-namespace
//! lab replicate the guide's resource `repl` (drbd.conf verbatim but for the
//! backing disk, a sparse file per node) over the crossover link.
//!
//! Layer: black-box tests of the `bascule` binary, observed as an operator
//! would: `bascule disk ...` (exit codes, answers), `status --json` (`disks[]`),
//! the catalogue lines, and the data itself through the NBD socket
//! (`<run-dir>/disk-repl.sock`) with the small NBD client below (every socket
//! read and write has a timeout). Each test owns one lab (unique prefix) and
//! tears it down on drop; every wait is bounded. Without root: SKIP.

mod common;

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Json, Lab, NODES};

const TIMERS: [&str; 4] = ["keepalive=0.2", "warntime=0.5", "deadtime=1", "initdead=3"];
/// The backing disk of each node (sparse).
const DISK_MB: u64 = 64;
/// Connected after both start (a dial, the handshake).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// A full sync of 64 MiB at the guide's 100M rate takes under a second; margin
/// for a loaded machine.
const SYNC_TIMEOUT: Duration = Duration::from_secs(40);
/// Socket timeout of the test's NBD client.
const NBD_IO_TIMEOUT: Duration = Duration::from_secs(10);
const BLOCK: u64 = 4096;
/// The kill test writes only in the first 8 MiB: two 4 MiB activity-log
/// extents, plus the one its sequential stream records ahead
/// (`AL_PREFETCH_BYTES`): all a crashed Primary's resync may move.
const AL_BOUND_KIB: u64 = 3 * 4096;

// ==== The lab ====

fn backing(lab: &Lab, node: &str) -> PathBuf {
    lab.dir.join(node).join("hda5.img")
}

/// A lab whose nodes have the guide's drbd.conf verbatim (`lab config ...
/// drbd=guide`: /dev/hda5 is the node's backing file in its private /dev),
/// `haresources` (`none`, `guide` or a file) and fresh metadata on both
/// backing disks; daemons not started.
fn disk_lab_with(test: &str, haresources: &str) -> Option<Lab> {
    disk_lab_media(test, "bcast", haresources)
}

/// `disk_lab_with` on the lab's media `variant` (`serial`: heartbeats on eth0
/// and the null-modem, so eth1 carries the replication alone).
fn disk_lab_media(test: &str, variant: &str, haresources: &str) -> Option<Lab> {
    let lab = Lab::up(test)?;
    let disk_mb = format!("disk_mb={DISK_MB}");
    let haresources = format!("haresources={haresources}");
    let mut config: Vec<&str> = TIMERS.to_vec();
    config.extend(["drbd=guide", &disk_mb, &haresources]);
    lab.config_both(variant, &config);
    for node in NODES {
        assert!(
            backing(&lab, node).exists(),
            "lab config made no {node} disk"
        );
        let out = bascule(&lab, node, &["disk", "create-md", "repl"]);
        assert!(out.status.success(), "create-md {node}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("usable size"),
            "{}",
            text(&out)
        );
    }
    Some(lab)
}

/// The guide's disks, no groups.
fn disk_lab(test: &str) -> Option<Lab> {
    disk_lab_with(test, "none")
}

/// One test of this file at a time, across processes too (nextest runs each
/// test in its own): each moves hundreds of MiB through FUSE and loop devices
/// on a 2-CPU machine, and run together they measure each other. A file lock,
/// taken with a deadline below nextest's (8 min for these tests): the other
/// tests of this file together take 2 to 3 minutes on a loaded machine.
struct Serial {
    /// Held open: the lock goes with it.
    _lock: std::fs::File,
}

const SERIAL_LOCK: &str = "/tmp/bascule-netns-replication.lock";
const SERIAL_WAIT: Duration = Duration::from_secs(420);

fn serial() -> Serial {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(SERIAL_LOCK)
        .unwrap();
    let start = Instant::now();
    loop {
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Serial { _lock: f };
        }
        assert!(
            start.elapsed() < SERIAL_WAIT,
            "another netns_replication test held {SERIAL_LOCK} for {SERIAL_WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `node`'s daemon with `env` added (BASCULE_FAIL_DISK...).
fn start_with_env(lab: &Lab, node: &str, env: &[(&str, &str)]) {
    let mut c = lab_command(lab);
    c.args(["start", node]).envs(env.iter().copied());
    let out = run_bounded(c, Duration::from_secs(30));
    assert!(out.status.success(), "lab start {node}: {}", text(&out));
}

/// `bascule --config-dir .. --node N --run-dir .. ARGS` in `node`'s
/// namespaces (its /dev: /dev/hda5, /dev/drbd0), bounded.
fn bascule(lab: &Lab, node: &str, args: &[&str]) -> Output {
    let d = lab.dir.join(node);
    let mut c = lab_command(lab);
    c.args(["exec", node, env!("CARGO_BIN_EXE_bascule")])
        .arg("--config-dir")
        .arg(d.join("etc"))
        .arg("--node")
        .arg(node)
        .arg("--run-dir")
        .arg(d.join("run"))
        .arg("--state-dir")
        .arg(d.join("state"))
        .args(args);
    run_bounded(c, Duration::from_secs(90))
}

/// `scripts/lab` for this lab.
fn lab_command(lab: &Lab) -> Command {
    let mut c = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lab"));
    c.env("LAB_PREFIX", &lab.prefix)
        .env("LAB_DIR", &lab.dir)
        .env("BASCULE_BIN", env!("CARGO_BIN_EXE_bascule"))
        .stdin(Stdio::null());
    c
}

/// `sh -c SCRIPT` in `node`'s namespaces (mkfs, mount...); must succeed.
#[track_caller]
fn sh(lab: &Lab, node: &str, script: &str) -> String {
    let mut c = lab_command(lab);
    c.args(["exec", node, "sh", "-c", script]);
    let out = run_bounded(c, Duration::from_secs(60));
    assert!(out.status.success(), "{node}: {script}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `c` to its end, killed after `limit`.
fn run_bounded(mut c: Command, limit: Duration) -> Output {
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("{c:?} ran past {limit:?}: {}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn text(out: &Output) -> String {
    format!(
        "status {} stdout {:?} stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `bascule disk ARGS` on `node`, which must succeed.
#[track_caller]
fn disk_ok(lab: &Lab, node: &str, args: &[&str]) -> String {
    let mut all = vec!["disk"];
    all.extend_from_slice(args);
    let out = bascule(lab, node, &all);
    assert!(
        out.status.success(),
        "{node}: bascule disk {}: {}",
        args.join(" "),
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The first disk of a status.
fn disk_of(j: &Json) -> Result<&Json, String> {
    j.get("disks")
        .and_then(Json::as_array)
        .and_then(|d| d.first())
        .ok_or_else(|| "no disks[]".to_string())
}

fn field(d: &Json, key: &str) -> String {
    d.get(key)
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
        .unwrap_or_default()
}

fn num(d: &Json, key: &str) -> u64 {
    d.get(key).and_then(Json::as_f64).unwrap_or(-1.0) as u64
}

/// Waits until `node`'s disk shows every `key=value` of `want`.
#[track_caller]
fn wait_disk(lab: &Lab, node: &str, want: &[(&str, &str)], timeout: Duration) -> Json {
    let what = format!("disk {want:?}");
    let j = lab.wait_status(node, &what, timeout, |j| {
        let d = disk_of(j)?;
        for (k, v) in want {
            let got = field(d, k);
            if got != *v {
                return Err(format!("{k}={got}"));
            }
        }
        Ok(())
    });
    disk_of(&j).unwrap().clone()
}

/// Both nodes connected with the same data, `primary` Primary.
#[track_caller]
fn wait_synced(lab: &Lab, primary: &str, timeout: Duration) {
    let secondary = common::peer_of(primary);
    let want = |role: &'static str, peer: &'static str| {
        [
            ("cstate", "Connected"),
            ("role", role),
            ("peer_role", peer),
            ("dstate", "UpToDate"),
            ("peer_dstate", "UpToDate"),
        ]
    };
    wait_disk(lab, primary, &want("Primary", "Secondary"), timeout);
    wait_disk(lab, secondary, &want("Secondary", "Primary"), timeout);
}

/// Starts both, makes `debian1` Primary with `--force` and waits for the full sync.
fn start_synced(lab: &Lab) {
    lab.start_both();
    force_sync_from_debian1(lab);
}

/// Both daemons started: once both are Connected and Inconsistent, debian1 is
/// forced Primary and the full sync runs to its end.
fn force_sync_from_debian1(lab: &Lab) {
    for node in NODES {
        wait_disk(
            lab,
            node,
            &[("cstate", "Connected"), ("dstate", "Inconsistent")],
            CONNECT_TIMEOUT,
        );
    }
    disk_ok(lab, "debian1", &["primary", "--force", "repl"]);
    wait_synced(lab, "debian1", SYNC_TIMEOUT);
}

fn socket(lab: &Lab, node: &str) -> PathBuf {
    lab.dir.join(node).join("run/disk-repl.sock")
}

// ==== A small NBD client (fixed newstyle, NBD_OPT_GO, simple replies) ====

const NBD_IHAVEOPT: u64 = 0x4948_4156_454F_5054;
const NBD_REP_MAGIC: u64 = 0x0003_e889_0455_65a9;
const NBD_REQUEST_MAGIC: u32 = 0x2560_9513;
const NBD_REPLY_MAGIC: u32 = 0x6744_6698;
const NBD_OPT_GO: u32 = 7;
const NBD_REP_ACK: u32 = 1;
const NBD_CMD_READ: u16 = 0;
const NBD_CMD_WRITE: u16 = 1;
const NBD_CMD_DISC: u16 = 2;
const NBD_CMD_FLUSH: u16 = 3;
const NBD_CMD_FLAG_FUA: u16 = 1;

/// One NBD connection; requests one at a time (queue depth 1).
struct Nbd {
    s: UnixStream,
    handle: u64,
    /// Export size from NBD_INFO_EXPORT.
    size: u64,
}

fn be_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes(b.try_into().unwrap())
}
fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b.try_into().unwrap())
}
fn be_u64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b.try_into().unwrap())
}

impl Nbd {
    fn connect(path: &Path, export: &str) -> io::Result<Nbd> {
        let s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(NBD_IO_TIMEOUT))?;
        s.set_write_timeout(Some(NBD_IO_TIMEOUT))?;
        let mut n = Nbd {
            s,
            handle: 0,
            size: 0,
        };
        let mut hello = [0u8; 18];
        n.s.read_exact(&mut hello)?;
        if &hello[..8] != b"NBDMAGIC" || be_u64(&hello[8..16]) != NBD_IHAVEOPT {
            return Err(io::Error::other("not an NBD newstyle server"));
        }
        n.s.write_all(&3u32.to_be_bytes())?; // FIXED_NEWSTYLE | NO_ZEROES
        let mut opt = Vec::new();
        opt.extend_from_slice(&NBD_IHAVEOPT.to_be_bytes());
        opt.extend_from_slice(&NBD_OPT_GO.to_be_bytes());
        opt.extend_from_slice(&((4 + export.len() + 2) as u32).to_be_bytes());
        opt.extend_from_slice(&(export.len() as u32).to_be_bytes());
        opt.extend_from_slice(export.as_bytes());
        opt.extend_from_slice(&0u16.to_be_bytes());
        n.s.write_all(&opt)?;
        for _ in 0..16 {
            let mut rep = [0u8; 20];
            n.s.read_exact(&mut rep)?;
            if be_u64(&rep[..8]) != NBD_REP_MAGIC {
                return Err(io::Error::other("bad option reply magic"));
            }
            let kind = be_u32(&rep[12..16]);
            let mut data = vec![0u8; be_u32(&rep[16..20]) as usize];
            n.s.read_exact(&mut data)?;
            if kind == NBD_REP_ACK {
                return Ok(n);
            }
            if kind & 0x8000_0000 != 0 {
                return Err(io::Error::other(format!("NBD_OPT_GO refused: {kind:#x}")));
            }
            if data.len() >= 12 && be_u16(&data[..2]) == 0 {
                n.size = be_u64(&data[2..10]);
            }
        }
        Err(io::Error::other("no ACK to NBD_OPT_GO"))
    }

    fn request(
        &mut self,
        kind: u16,
        flags: u16,
        offset: u64,
        len: u32,
        data: &[u8],
    ) -> io::Result<()> {
        self.handle += 1;
        let mut req = Vec::with_capacity(28 + data.len());
        req.extend_from_slice(&NBD_REQUEST_MAGIC.to_be_bytes());
        req.extend_from_slice(&flags.to_be_bytes());
        req.extend_from_slice(&kind.to_be_bytes());
        req.extend_from_slice(&self.handle.to_be_bytes());
        req.extend_from_slice(&offset.to_be_bytes());
        req.extend_from_slice(&len.to_be_bytes());
        req.extend_from_slice(data);
        self.s.write_all(&req)
    }

    /// The reply to the last request: Ok, or the server's errno as an error.
    fn reply(&mut self, read_len: usize) -> io::Result<Vec<u8>> {
        let mut rep = [0u8; 16];
        self.s.read_exact(&mut rep)?;
        if be_u32(&rep[..4]) != NBD_REPLY_MAGIC || be_u64(&rep[8..16]) != self.handle {
            return Err(io::Error::other("bad reply"));
        }
        let errno = be_u32(&rep[4..8]);
        if errno != 0 {
            return Err(io::Error::from_raw_os_error(errno as i32));
        }
        let mut data = vec![0u8; read_len];
        self.s.read_exact(&mut data)?;
        Ok(data)
    }

    fn write(&mut self, offset: u64, data: &[u8], fua: bool) -> io::Result<()> {
        let flags = if fua { NBD_CMD_FLAG_FUA } else { 0 };
        self.request(NBD_CMD_WRITE, flags, offset, data.len() as u32, data)?;
        self.reply(0).map(|_| ())
    }

    fn read(&mut self, offset: u64, len: u32) -> io::Result<Vec<u8>> {
        self.request(NBD_CMD_READ, 0, offset, len, &[])?;
        self.reply(len as usize)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.request(NBD_CMD_FLUSH, 0, 0, 0, &[])?;
        self.reply(0).map(|_| ())
    }
}

impl Drop for Nbd {
    fn drop(&mut self) {
        let _ = self.request(NBD_CMD_DISC, 0, 0, 0, &[]);
    }
}

/// A 4 KiB block that says who wrote it: `tag` and `seq` repeated.
fn pattern(tag: u64, seq: u64) -> Vec<u8> {
    let word = (tag << 40 | seq).to_le_bytes();
    word.iter().copied().cycle().take(BLOCK as usize).collect()
}

/// Panics with a short message (not 4096 numbers) when a block differs.
#[track_caller]
fn check_block(got: &[u8], tag: u64, seq: u64, what: &str) {
    if got != pattern(tag, seq).as_slice() {
        let first = u64::from_le_bytes(got[..8].try_into().unwrap());
        panic!(
            "{what}: want tag {tag} seq {seq}, found tag {} seq {} (first word {first:#x})",
            first >> 40,
            first & ((1 << 40) - 1)
        );
    }
}

/// Connects to `node`'s NBD socket, retrying while it is (re)bound.
#[track_caller]
fn nbd(lab: &Lab, node: &str) -> Nbd {
    let path = socket(lab, node);
    common::poll(
        &format!("NBD socket of {node}"),
        Duration::from_secs(10),
        || Nbd::connect(&path, "repl").map_err(|e| e.to_string()),
    )
}

// ==== Tests ====

/// The guide's section 2: both start Secondary/Inconsistent, connected; the
/// forced primary syncs everything; data written on debian1 is on debian2
/// after a demote/promote; the Secondary refuses writes.
#[test]
fn guide_section2_sync_then_switch_primary() {
    let _serial = serial();
    let Some(lab) = disk_lab("guide_section2") else {
        return;
    };
    lab.start_both();
    for node in NODES {
        let d = wait_disk(
            &lab,
            node,
            &[
                ("cstate", "Connected"),
                ("role", "Secondary"),
                ("peer_role", "Secondary"),
                ("dstate", "Inconsistent"),
                ("peer_dstate", "Inconsistent"),
            ],
            CONNECT_TIMEOUT,
        );
        assert_eq!(field(&d, "name"), "repl");
    }
    // Neither side may promote Inconsistent data without --force.
    let out = bascule(&lab, "debian1", &["disk", "primary", "repl"]);
    assert_eq!(out.status.code(), Some(10), "{}", text(&out));
    let mark = lab.mark("debian1");
    disk_ok(&lab, "debian1", &["primary", "--force", "repl"]);
    lab.wait_log(
        "debian1",
        mark,
        &["disk_sync_start", "res=repl", "role=source", "full=yes"],
        SYNC_TIMEOUT,
    );
    lab.wait_log(
        "debian1",
        mark,
        &["disk_sync_done", "res=repl"],
        SYNC_TIMEOUT,
    );
    wait_synced(&lab, "debian1", SYNC_TIMEOUT);
    let status = disk_ok(&lab, "debian1", &["status", "repl"]);
    assert!(
        status.contains("cs:Connected st:Primary/Secondary ld:UpToDate/UpToDate"),
        "{status}"
    );
    // Write through debian1, read on debian2 after switching roles.
    let mut c = nbd(&lab, "debian1");
    assert_eq!(c.size % BLOCK, 0);
    for i in 0..64 {
        c.write(i * BLOCK * 7, &pattern(1, i), false).unwrap();
    }
    c.flush().unwrap();
    drop(c);
    // The Secondary serves no writes.
    let mut s = nbd(&lab, "debian2");
    let e = s.write(0, &pattern(9, 9), false).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
    drop(s);
    let refused = bascule(&lab, "debian2", &["disk", "primary", "repl"]);
    assert_eq!(
        refused.status.code(),
        Some(10),
        "one Primary at a time: {}",
        text(&refused)
    );
    disk_ok(&lab, "debian1", &["secondary", "repl"]);
    disk_ok(&lab, "debian2", &["primary", "repl"]);
    wait_synced(&lab, "debian2", SYNC_TIMEOUT);
    let mut c = nbd(&lab, "debian2");
    for i in 0..64 {
        check_block(
            &c.read(i * BLOCK * 7, BLOCK as u32).unwrap(),
            1,
            i,
            &format!("block {i}"),
        );
    }
    drop(c);
    // The guide's steps with the block device: mkfs.ext3 and mount on the
    // Primary, write a file, unmount, demote; promote the other; the file is there.
    disk_ok(&lab, "debian2", &["secondary", "--wait", "20", "repl"]);
    disk_ok(&lab, "debian1", &["primary", "--wait", "20", "repl"]);
    sh(
        &lab,
        "debian1",
        "test -b /dev/drbd0 && mkfs.ext3 -q /dev/drbd0",
    );
    sh(
        &lab,
        "debian1",
        "mount /dev/drbd0 /mnt/repl && echo 'bonjour debian1' > /mnt/repl/guide.txt && sync",
    );
    let refused = bascule(&lab, "debian1", &["disk", "secondary", "repl"]);
    assert_eq!(
        refused.status.code(),
        Some(10),
        "mounted: {}",
        text(&refused)
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("mounted on /mnt/repl"),
        "{}",
        text(&refused)
    );
    sh(&lab, "debian1", "umount /mnt/repl");
    disk_ok(&lab, "debian1", &["secondary", "--wait", "20", "repl"]);
    sh(&lab, "debian1", "test ! -e /dev/drbd0");
    disk_ok(&lab, "debian2", &["primary", "--wait", "20", "repl"]);
    let file = sh(
        &lab,
        "debian2",
        "mount /dev/drbd0 /mnt/repl && cat /mnt/repl/guide.txt; umount /mnt/repl",
    );
    assert_eq!(file, "bonjour debian1\n");
    let role = bascule(&lab, "debian2", &["disk", "role", "repl"]);
    assert_eq!(role.status.code(), Some(0), "{}", text(&role));
    let role = bascule(&lab, "debian1", &["disk", "role", "repl"]);
    assert_eq!(role.status.code(), Some(3), "{}", text(&role));
}

/// Kills the Primary (SIGKILL) at random moments while a writer streams
/// numbered writes to it (FUA when `fua`) and records every acknowledgement;
/// promotes the survivor and reads back the acknowledged writes there. Returns,
/// per trial, (acknowledged, lost) where lost counts acknowledged writes not on
/// the survivor, after checking that what it has is a prefix of what was
/// written (no holes: replication keeps the order). The killed node restarts
/// and resyncs (a bitmap resync within its activity log) before the next
/// trial, the roles alternating.
fn kill_trials(lab: &Lab, tag: &str, trials: u64, fua: bool, cut: bool) -> Vec<(u64, u64)> {
    start_synced(lab);
    let seed = common::now_ms();
    eprintln!("[{tag}] seed {seed}");
    let mut rng = seed | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let window: u64 = 2048; // blocks written round-robin (8 MiB)
    let mut primary = "debian1";
    let mut results = Vec::new();
    for trial in 1..=trials {
        let survivor = common::peer_of(primary);
        let acked = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut c = nbd(lab, primary);
        let writer = {
            let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(20);
                for seq in 1.. {
                    if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
                        return;
                    }
                    let offset = (seq % window) * BLOCK;
                    if c.write(offset, &pattern(trial, seq), fua).is_err() {
                        return;
                    }
                    acked.store(seq, Ordering::SeqCst);
                }
            })
        };
        std::thread::sleep(Duration::from_millis(50 + next() % 700));
        if cut {
            // As a power cut: what is in the kernel's socket buffers never
            // leaves (a plain kill lets the kernel deliver it).
            lab.run(&["cut", primary, "eth1"]);
            std::thread::sleep(Duration::from_millis(100));
        }
        let pid: i32 = lab.run(&["pid", primary]).trim().parse().unwrap();
        // SAFETY: kill(2) on the lab daemon's PID, which this test started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        std::thread::sleep(Duration::from_millis(20));
        stop.store(true, Ordering::SeqCst);
        writer.join().unwrap();
        let last = acked.load(Ordering::SeqCst);
        assert!(last > 0, "trial {trial}: no write was acknowledged");
        wait_disk(
            lab,
            survivor,
            &[("peer_dstate", "DUnknown")],
            CONNECT_TIMEOUT,
        );
        disk_ok(lab, survivor, &["primary", "repl"]);
        let mut c = nbd(lab, survivor);
        // The write after `last` may or may not have landed: skip its block.
        let first = last.saturating_sub(window - 2).max(1);
        let mut lost = 0;
        for seq in first..=last {
            let got = c.read((seq % window) * BLOCK, BLOCK as u32).unwrap();
            if got == pattern(trial, seq) {
                assert!(
                    lost == 0,
                    "trial {trial}: write {seq} is on {survivor} but {lost} earlier ones are not"
                );
            } else {
                lost += 1;
            }
        }
        drop(c);
        eprintln!("[{tag}] trial {trial}: {last} acked, {lost} lost on {survivor}");
        results.push((last, lost));
        // The killed node comes back and catches up from the new Primary: a
        // bitmap resync bounded by its activity log, not a full sync.
        let mark = lab.mark(survivor);
        if cut {
            lab.run(&["heal", primary, "eth1"]);
        }
        lab.start(primary);
        wait_synced(lab, survivor, SYNC_TIMEOUT);
        let sync = lab.wait_log(
            survivor,
            mark,
            &["disk_sync_start", "res=repl"],
            SYNC_TIMEOUT,
        );
        let kib: u64 = common::field(&sync, "kib").unwrap().parse().unwrap();
        assert!(
            sync.contains("full=no") && kib <= AL_BOUND_KIB,
            "trial {trial}: resync after the crash not bounded by the activity log: {sync}"
        );
        primary = survivor;
    }
    results
}

/// The guide's section 2 step 3 as an operator sees it: with `syncer { rate
/// 16M; }` the full sync of 64 MiB takes about 4 s, `disk status` shows the
/// progress bar, percentage, remaining KiB, ETA and speed meanwhile,
/// `status --json` its numbers, and the configured rate is honoured.
#[test]
fn full_sync_progress_shows_and_rate_is_honoured() {
    let _serial = serial();
    let Some(lab) = disk_lab("sync_progress") else {
        return;
    };
    for node in NODES {
        let conf = lab.dir.join(node).join("etc/drbd.conf");
        let text = std::fs::read_to_string(&conf).unwrap();
        assert!(text.contains("rate 100M;"), "the guide's syncer rate");
        std::fs::write(&conf, text.replace("rate 100M;", "rate 16M;")).unwrap();
    }
    lab.start_both();
    wait_disk(&lab, "debian1", &[("cstate", "Connected")], CONNECT_TIMEOUT);
    let started = Instant::now();
    disk_ok(&lab, "debian1", &["primary", "--force", "repl"]);
    let text = common::poll("a progress bar", SYNC_TIMEOUT, || {
        let t = disk_ok(&lab, "debian1", &["status", "repl"]);
        if t.contains("cs:SyncSource") && t.contains("sync'ed:") && t.contains("finish:") {
            Ok(t)
        } else {
            Err(t)
        }
    });
    assert!(
        text.contains("st:Primary/Secondary ld:UpToDate/Inconsistent"),
        "{text}"
    );
    assert!(
        text.contains("] sync'ed: ") && text.contains("K\n"),
        "{text}"
    );
    assert!(
        text.contains(" speed: ") && text.contains(" (K/sec)"),
        "{text}"
    );
    let j = lab.status("debian1").unwrap();
    let d = disk_of(&j).unwrap();
    let sync = d.get("sync").expect("sync while syncing");
    assert_eq!(num(sync, "total_kib"), 65496, "{d}");
    assert!(num(sync, "left_kib") <= 65496, "{d}");
    wait_synced(&lab, "debian1", SYNC_TIMEOUT);
    let took = started.elapsed();
    // 64 MiB at 16 MiB/s: 4 s; not faster than the rate allows (10% slack
    // for the token bucket's first burst).
    assert!(
        took >= Duration::from_millis(3600),
        "sync took {took:?}: rate ignored"
    );
    let done = lab.wait_log("debian1", 0, &["disk_sync_done", "res=repl"], SYNC_TIMEOUT);
    let kib_s: u64 = common::field(&done, "kib_s").unwrap().parse().unwrap();
    assert!(kib_s <= 16 * 1024 * 11 / 10, "{done}");
    assert!(kib_s >= 16 * 1024 * 8 / 10, "well below the rate: {done}");
}

/// Protocol C: 20 kills of the Primary under a stream of FUA writes; every
/// acknowledged write is on the promoted Secondary.
#[test]
fn protocol_c_kill_primary_keeps_every_acked_write() {
    let _serial = serial();
    let Some(lab) = disk_lab("kill_primary") else {
        return;
    };
    let started = Instant::now();
    for (trial, (acked, lost)) in kill_trials(&lab, "kill_primary", 20, true, false)
        .iter()
        .enumerate()
    {
        assert_eq!(
            *lost,
            0,
            "trial {}: {lost} of {acked} acknowledged writes lost",
            trial + 1
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(170),
        "{:?}",
        started.elapsed()
    );
}

/// Protocol A (acknowledged once written locally and handed to the network):
/// the same kills, after cutting the crossover link as a power cut would, show
/// what it may lose, the writes still in flight, and that what the survivor
/// has is a prefix of what was written. Ordinary (non-FUA) writes: a FUA write
/// waits for the peer under every protocol.
#[test]
fn protocol_a_kill_primary_loses_at_most_the_writes_in_flight() {
    let _serial = serial();
    let Some(lab) = disk_lab("kill_proto_a") else {
        return;
    };
    for node in NODES {
        let conf = lab.dir.join(node).join("etc/drbd.conf");
        let text = std::fs::read_to_string(&conf).unwrap();
        assert!(text.contains("protocol C;"));
        std::fs::write(&conf, text.replace("protocol C;", "protocol A;")).unwrap();
    }
    let results = kill_trials(&lab, "kill_proto_a", 3, false, true);
    let lost: u64 = results.iter().map(|r| r.1).sum();
    let acked: u64 = results.iter().map(|r| r.0).sum();
    eprintln!("[kill_proto_a] protocol A lost {lost} of {acked} acknowledged writes");
    // In flight is bounded by the send queues: far less than what was acked.
    assert!(lost < acked, "lost {lost} of {acked}");
}

/// Disconnected, the Primary writes; on reconnect only the dirty blocks
/// travel: the bytes on the wire stay within 10% (plus the handshake and the
/// bitmap exchange) of the dirty bytes.
#[test]
fn resync_after_disconnect_sends_only_dirty_blocks() {
    let _serial = serial();
    let Some(lab) = disk_lab("resync_dirty") else {
        return;
    };
    start_synced(&lab);
    disk_ok(&lab, "debian1", &["disconnect", "repl"]);
    wait_disk(
        &lab,
        "debian1",
        &[("cstate", "StandAlone")],
        CONNECT_TIMEOUT,
    );
    let mut c = nbd(&lab, "debian1");
    // 4 MiB in scattered 4 KiB writes, some of them twice.
    let mut blocks = std::collections::BTreeSet::new();
    for i in 0..1200u64 {
        let b = (i * 7919) % 4096;
        blocks.insert(b);
        c.write(b * BLOCK * 3, &pattern(2, i), false).unwrap();
    }
    c.flush().unwrap();
    drop(c);
    let dirty = blocks.len() as u64 * BLOCK;
    let d = wait_disk(
        &lab,
        "debian1",
        &[("cstate", "StandAlone")],
        CONNECT_TIMEOUT,
    );
    assert_eq!(num(&d, "out_of_sync_kib") * 1024, dirty, "{d}");
    let sent_before = num(&d, "wire_sent_bytes");
    let mark = lab.mark("debian1");
    disk_ok(&lab, "debian1", &["connect", "repl"]);
    let line = lab.wait_log(
        "debian1",
        mark,
        &["disk_sync_start", "role=source", "full=no"],
        SYNC_TIMEOUT,
    );
    assert!(line.contains(&format!("kib={}", dirty / 1024)), "{line}");
    wait_synced(&lab, "debian1", SYNC_TIMEOUT);
    let d = disk_of(&lab.status("debian1").unwrap()).unwrap().clone();
    let sent = num(&d, "wire_sent_bytes") - sent_before;
    let overhead = 64 * 1024;
    eprintln!("[resync_dirty] dirty {dirty} B, sent {sent} B");
    assert!(
        sent <= dirty + dirty / 10 + overhead,
        "resync sent {sent} bytes for {dirty} dirty bytes"
    );
    assert!(
        sent >= dirty,
        "resync sent {sent} bytes, less than the {dirty} dirty bytes"
    );
    // And the data is there: promote debian2 after a clean switch.
    disk_ok(&lab, "debian1", &["secondary", "repl"]);
    disk_ok(&lab, "debian2", &["primary", "repl"]);
    let mut c = nbd(&lab, "debian2");
    for i in 1100..1200u64 {
        let b = (i * 7919) % 4096;
        check_block(&c.read(b * BLOCK * 3, BLOCK as u32).unwrap(), 2, i, "block");
    }
}

/// Both nodes made Primary while disconnected (debian2 demoted again before
/// the reconnect, as after a failback): on reconnect split brain is detected,
/// both stay StandAlone, nothing is merged; `connect
/// --discard-my-data` on the victim resolves it with a resync from the other.
#[test]
fn split_brain_detected_and_discard_my_data_recovers() {
    let _serial = serial();
    let Some(lab) = disk_lab("split_brain") else {
        return;
    };
    // The guide's file plus a split-brain handler (DRBD 8's environment).
    for node in NODES {
        let conf = lab.dir.join(node).join("etc/drbd.conf");
        let marker = lab.dir.join(node).join("split-brain-handler");
        let text = std::fs::read_to_string(&conf).unwrap().replacen(
            "resource repl {\n",
            &format!(
                "resource repl {{\n  handlers {{\n    split-brain \"echo $DRBD_RESOURCE $DRBD_PEER > {}\";\n  }}\n",
                marker.display()
            ),
            1,
        );
        std::fs::write(&conf, text).unwrap();
    }
    start_synced(&lab);
    for node in NODES {
        disk_ok(&lab, node, &["disconnect", "repl"]);
        wait_disk(&lab, node, &[("cstate", "StandAlone")], CONNECT_TIMEOUT);
    }
    disk_ok(&lab, "debian2", &["primary", "repl"]);
    for (tag, node) in [(11, "debian1"), (22, "debian2")] {
        let mut c = nbd(&lab, node);
        c.write(0, &pattern(tag, 0), true).unwrap();
    }
    // As after a failback: debian2 hands the service back (demotes) before the
    // link heals; its data still diverged from debian1's.
    disk_ok(&lab, "debian2", &["secondary", "repl"]);
    let marks: Vec<usize> = NODES.iter().map(|n| lab.mark(n)).collect();
    for node in NODES {
        disk_ok(&lab, node, &["connect", "repl"]);
    }
    for (node, mark) in NODES.iter().zip(&marks) {
        lab.wait_log(
            node,
            *mark,
            &["disk_split_brain", "res=repl"],
            CONNECT_TIMEOUT,
        );
        wait_disk(&lab, node, &[("cstate", "StandAlone")], CONNECT_TIMEOUT);
        lab.wait_log(
            node,
            *mark,
            &[
                "disk_handler",
                "res=repl",
                "handler=split-brain",
                "result=ok",
            ],
            CONNECT_TIMEOUT,
        );
        let marker = lab.dir.join(node).join("split-brain-handler");
        let said = std::fs::read_to_string(&marker).unwrap_or_default();
        assert_eq!(said, format!("repl {}\n", common::peer_of(node)), "{node}");
    }
    // Nothing merged: each keeps its own block 0.
    for (tag, node) in [(11, "debian1"), (22, "debian2")] {
        let mut c = nbd(&lab, node);
        check_block(&c.read(0, BLOCK as u32).unwrap(), tag, 0, node);
    }
    disk_ok(&lab, "debian2", &["connect", "--discard-my-data", "repl"]);
    disk_ok(&lab, "debian1", &["connect", "repl"]);
    wait_synced(&lab, "debian1", SYNC_TIMEOUT);
    let mut c = nbd(&lab, "debian2");
    check_block(
        &c.read(0, BLOCK as u32).unwrap(),
        11,
        0,
        "debian2 took debian1's data",
    );
}

/// An after-sb policy resolves a split brain by itself: with
/// `after-sb-1pri discard-secondary`, the node that was Secondary at the
/// reconnect drops its changes and resyncs from the Primary.
#[test]
fn split_brain_after_sb_1pri_discard_secondary_resolves_itself() {
    let _serial = serial();
    let Some(lab) = disk_lab("after_sb") else {
        return;
    };
    for node in NODES {
        let conf = lab.dir.join(node).join("etc/drbd.conf");
        let text = std::fs::read_to_string(&conf).unwrap().replacen(
            "resource repl {\n",
            "resource repl {\n  net {\n    after-sb-0pri discard-younger-primary;\n    after-sb-1pri discard-secondary;\n  }\n",
            1,
        );
        std::fs::write(&conf, text).unwrap();
    }
    start_synced(&lab);
    for node in NODES {
        disk_ok(&lab, node, &["disconnect", "repl"]);
        wait_disk(&lab, node, &[("cstate", "StandAlone")], CONNECT_TIMEOUT);
    }
    disk_ok(&lab, "debian2", &["primary", "repl"]);
    for (tag, node) in [(41, "debian1"), (42, "debian2")] {
        let mut c = nbd(&lab, node);
        c.write(BLOCK, &pattern(tag, 1), true).unwrap();
    }
    disk_ok(&lab, "debian2", &["secondary", "repl"]);
    let marks: Vec<usize> = NODES.iter().map(|n| lab.mark(n)).collect();
    for node in NODES {
        disk_ok(&lab, node, &["connect", "repl"]);
    }
    lab.wait_log(
        "debian2",
        marks[1],
        &[
            "disk_split_brain",
            "policy=discard-secondary",
            "resolved=discard-local",
        ],
        CONNECT_TIMEOUT,
    );
    lab.wait_log(
        "debian1",
        marks[0],
        &[
            "disk_split_brain",
            "policy=discard-secondary",
            "resolved=discard-peer",
        ],
        CONNECT_TIMEOUT,
    );
    wait_synced(&lab, "debian1", SYNC_TIMEOUT);
    let mut c = nbd(&lab, "debian2");
    check_block(
        &c.read(BLOCK, BLOCK as u32).unwrap(),
        41,
        1,
        "debian2 took debian1's block",
    );
}

/// Lost heartbeats alone never make two Primaries: the heartbeat links are cut
/// while the replication link (eth1) still works; debian2 declares debian1
/// dead and pings the replication connection, which answers, so it stays
/// connected and debian2's promotion is refused while debian1 is Primary.
#[test]
fn heartbeats_lost_but_replication_alive_keeps_the_connection() {
    let _serial = serial();
    let Some(lab) = disk_lab_media("hb_lost", "serial", "none") else {
        return;
    };
    start_synced(&lab);
    let mark = lab.mark("debian2");
    lab.run(&["cut", "debian1", "eth0"]);
    lab.run(&["cut", "debian1", "serial"]);
    lab.wait_log("debian2", mark, &["peer_state", "to=Dead"], CONNECT_TIMEOUT);
    // Past the probe's deadline (1 s), with margin.
    std::thread::sleep(Duration::from_millis(2000));
    assert!(
        lab.grep("debian2", mark, &["name=peer_silent"]).is_empty(),
        "the live replication connection was dropped"
    );
    wait_disk(
        &lab,
        "debian2",
        &[("cstate", "Connected"), ("peer_role", "Primary")],
        CONNECT_TIMEOUT,
    );
    let out = bascule(&lab, "debian2", &["disk", "primary", "repl"]);
    assert_eq!(out.status.code(), Some(10), "{}", text(&out));
    lab.run(&["heal", "debian1", "all"]);
}

/// Starts the pair with debian1's disk faults read from a rule file (empty for
/// now), makes debian1 Primary and waits for the full sync; returns the file.
fn synced_with_fault_file(lab: &Lab) -> PathBuf {
    let rules = lab.dir.join("debian1-faults");
    std::fs::write(&rules, "# no faults yet\n").unwrap();
    start_with_env(
        lab,
        "debian1",
        &[("BASCULE_FAIL_DISK", rules.to_str().unwrap())],
    );
    lab.start("debian2");
    force_sync_from_debian1(lab);
    rules
}

/// `on-io-error detach`: the Primary's backing disk starts failing; the node
/// goes Diskless and I/O continues through the peer.
#[test]
fn failing_disk_detaches_and_io_continues_through_the_peer() {
    let _serial = serial();
    let Some(lab) = disk_lab("failing_disk") else {
        return;
    };
    let rules = synced_with_fault_file(&lab);
    let mut c = nbd(&lab, "debian1");
    c.write(0, &pattern(3, 0), true).unwrap();
    let mark = lab.mark("debian1");
    std::fs::write(&rules, format!("data 0 {}\n", DISK_MB << 20)).unwrap();
    // The worker rereads the rules within 50 ms; the next write fails locally.
    std::thread::sleep(Duration::from_millis(200));
    for i in 1..=32u64 {
        c.write(i * BLOCK, &pattern(3, i), true).unwrap();
    }
    lab.wait_log(
        "debian1",
        mark,
        &["disk_io_error", "res=repl"],
        CONNECT_TIMEOUT,
    );
    wait_disk(
        &lab,
        "debian1",
        &[("dstate", "Diskless"), ("role", "Primary")],
        CONNECT_TIMEOUT,
    );
    for i in 0..=32u64 {
        check_block(
            &c.read(i * BLOCK, BLOCK as u32).unwrap(),
            3,
            i,
            &format!("block {i}"),
        );
    }
    // The peer holds them: switch and read there.
    drop(c);
    disk_ok(&lab, "debian1", &["secondary", "repl"]);
    disk_ok(&lab, "debian2", &["primary", "repl"]);
    let mut c = nbd(&lab, "debian2");
    for i in 0..=32u64 {
        check_block(
            &c.read(i * BLOCK, BLOCK as u32).unwrap(),
            3,
            i,
            &format!("block {i}"),
        );
    }
}

/// "The mio loop never blocks on the disk; a slow flush must not delay a
/// heartbeat": the Primary's flushes are held 3 s (`slow flush 3000`, three
/// times deadtime) while a host flush waits on one; meanwhile plain writes
/// complete, and neither node sees the other Late or Dead.
#[test]
fn a_slow_flush_delays_neither_heartbeats_nor_other_writes() {
    let _serial = serial();
    let Some(lab) = disk_lab("slow_flush") else {
        return;
    };
    let rules = synced_with_fault_file(&lab);
    let marks: Vec<usize> = NODES.iter().map(|n| lab.mark(n)).collect();
    std::fs::write(&rules, "slow flush 3000\n").unwrap();
    // The worker rereads the rules within 50 ms.
    std::thread::sleep(Duration::from_millis(200));
    let flusher = {
        let mut c = nbd(&lab, "debian1");
        std::thread::spawn(move || {
            let t0 = Instant::now();
            c.flush().map(|_| t0.elapsed())
        })
    };
    // Let the flush reach the disk worker, then write beside it.
    std::thread::sleep(Duration::from_millis(300));
    let mut c = nbd(&lab, "debian1");
    let t0 = Instant::now();
    for i in 0..16u64 {
        c.write(i * BLOCK, &pattern(5, i), false).unwrap();
    }
    let writes = t0.elapsed();
    let flushed = flusher.join().unwrap().unwrap();
    assert!(
        flushed >= Duration::from_millis(2500),
        "the flush was not held ({flushed:?}): the fault rule did not apply"
    );
    assert!(
        writes < Duration::from_millis(1500),
        "16 plain writes took {writes:?} beside a held flush"
    );
    for (node, mark) in NODES.iter().zip(&marks) {
        let late = lab.grep(node, *mark, &["peer_state"]);
        let late: Vec<&String> = late
            .iter()
            .filter(|l| l.contains("to=Late") || l.contains("to=Dead"))
            .collect();
        assert!(late.is_empty(), "{node} saw its peer late: {late:?}");
    }
    std::fs::write(&rules, "# done\n").unwrap();
    for i in 0..16u64 {
        check_block(
            &c.read(i * BLOCK, BLOCK as u32).unwrap(),
            5,
            i,
            &format!("block {i}"),
        );
    }
}

/// The web server of the takeover test: serves /mnt/repl (the replicated disk
/// once Filesystem mounted it) on port 80; the pidfile appears once it listens.
const WEB_PY: &str = r#"import http.server, os, socketserver, sys
pidfile = sys.argv[1]
os.chdir("/mnt/repl")
class Server(socketserver.TCPServer):
    allow_reuse_address = True
srv = Server(("0.0.0.0", 80), http.server.SimpleHTTPRequestHandler)
with open(pidfile + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(pidfile + ".tmp", pidfile)
srv.serve_forever()
"#;

/// The guide's `apache` as an LSB script starting WEB_PY (setsid, so the
/// agent's process group is not the server's).
const APACHE_SH: &str = r#"#!/bin/sh
PIDFILE=@PIDS@/web-@NODE@.pid
running() { [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }
case "$1" in
start)
    running && exit 0
    rm -f "$PIDFILE"
    setsid python3 @ETC@/web.py "$PIDFILE" </dev/null >>@ETC@/web.log 2>&1 &
    i=0
    while [ $i -lt 200 ]; do [ -s "$PIDFILE" ] && exit 0; sleep 0.05; i=$((i + 1)); done
    exit 1 ;;
stop)
    if running; then kill "$(cat "$PIDFILE")"; sleep 0.2; fi
    rm -f "$PIDFILE"; exit 0 ;;
status)
    if running; then echo running; exit 0; fi
    echo stopped; exit 3 ;;
esac
exit 2
"#;

/// `curl` from the lab's client to the VIP; the body or why not.
fn fetch_page(lab: &Lab) -> Result<String, String> {
    let mut c = lab_command(lab);
    c.args([
        "exec",
        "client",
        "curl",
        "-sS",
        "--max-time",
        "2",
        "http://192.168.69.100/index.html",
    ]);
    let out = run_bounded(c, Duration::from_secs(10));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(text(&out))
    }
}

/// The guide's whole haresources line (two VIPs, drbddisk::repl,
/// Filesystem::/dev/drbd0::/mnt/repl::ext3, apache, MailTo): debian1 serves a
/// page from the replicated disk; it crashes; debian2 takes the group over and
/// serves the same page from its copy of the disk.
#[test]
fn guide_haresources_crash_takeover_serves_the_page_from_the_replicated_disk() {
    let _serial = serial();
    let Some(lab) = disk_lab("takeover_guide") else {
        return;
    };
    let pids = lab.dir.join("pids");
    std::fs::create_dir_all(&pids).unwrap();
    for node in NODES {
        let etc = lab.dir.join(node).join("etc");
        std::fs::write(etc.join("web.py"), WEB_PY).unwrap();
        std::fs::create_dir_all(etc.join("resource.d")).unwrap();
        let script = APACHE_SH
            .replace("@PIDS@", &pids.display().to_string())
            .replace("@NODE@", node)
            .replace("@ETC@", &etc.display().to_string());
        let path = etc.join("resource.d/apache");
        std::fs::write(&path, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // The guide's section 2 first (no groups yet): sync, mkfs, the page.
    start_synced(&lab);
    disk_ok(&lab, "debian1", &["primary", "--wait", "20", "repl"]);
    sh(&lab, "debian1", "mkfs.ext3 -q /dev/drbd0");
    sh(
        &lab,
        "debian1",
        "mount /dev/drbd0 /mnt/repl && echo 'served from repl' > /mnt/repl/index.html && umount /mnt/repl",
    );
    disk_ok(&lab, "debian1", &["secondary", "--wait", "20", "repl"]);
    for node in NODES {
        lab.run(&["stop", node]);
    }
    // Then the cluster, with the guide's haresources verbatim on both nodes.
    let line = "debian1 192.168.69.16 IPaddr::192.168.69.100 drbddisk::repl \
                Filesystem::/dev/drbd0::/mnt/repl::ext3 apache MailTo::admin@example.com\n";
    for node in NODES {
        std::fs::write(lab.dir.join(node).join("etc/haresources"), line).unwrap();
    }
    lab.start_both();
    let page = common::poll(
        "debian1 serves the page by the VIP",
        Duration::from_secs(40),
        || fetch_page(&lab),
    );
    assert_eq!(page, "served from repl\n");
    let d = wait_disk(&lab, "debian1", &[("role", "Primary")], CONNECT_TIMEOUT);
    assert_eq!(field(&d, "exposed"), "true", "{d}");
    let mark = lab.mark("debian2");
    lab.run(&["crash", "debian1"]);
    let crashed = Instant::now();
    let page = common::poll(
        "debian2 serves the page by the VIP",
        Duration::from_secs(60),
        || fetch_page(&lab),
    );
    assert_eq!(page, "served from repl\n");
    eprintln!(
        "[takeover_guide] crash to the page served by debian2: {} ms (replication link {})",
        crashed.elapsed().as_millis(),
        if lab.grep("debian2", mark, &["name=peer_silent"]).is_empty() {
            "closed by the kernel"
        } else {
            "silent: dropped by the probe"
        }
    );
    lab.wait_log(
        "debian2",
        mark,
        &["disk_role", "res=repl", "to=Primary"],
        CONNECT_TIMEOUT,
    );
    lab.wait_log(
        "debian2",
        mark,
        &[
            "takeover_step",
            "resource=Filesystem::/dev/drbd0::/mnt/repl::ext3",
            "op=start",
            "result=ok",
        ],
        CONNECT_TIMEOUT,
    );
}
