//! `shell::blockdev` against a real NBD server: `nbdkit memory 64M` on a Unix
//! socket, exposed through nbdfuse + a loop device at a temporary device path.
//! mkfs.ext3, mount, write a file, unmount, tear down; expose again, mount, the
//! file is there; teardown leaves no loop device, no FUSE mount, no process.
//!
//! Bounded: every command has a deadline; the fixture unmounts, tears down
//! (forced), kills and reaps nbdkit on drop, panics included. Needs root (loop
//! devices, mount); otherwise prints one SKIP line.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use bascule::shell::blockdev::{
    expose, Backend, BlockdevError, ExposeSpec, Exposed, Job, JobResult, CONN_FILE, LOOP_FILE,
};

/// Deadline of one command (mkfs on 64 MiB through FUSE takes about a second).
const CMD_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

/// Runs a command with a deadline; panics with its output on failure.
#[track_caller]
fn sh(program: &str, args: &[&str]) -> String {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let deadline = Instant::now() + CMD_TIMEOUT;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{program} {args:?} did not finish in {CMD_TIMEOUT:?}");
        }
        sleep(POLL);
    }
    let out = child.wait_with_output().expect("output");
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Everything the test made; Drop undoes it in order, each step bounded.
struct Fixture {
    dir: PathBuf,
    mnt: PathBuf,
    nbdkit: Option<Child>,
    exposed: Option<Exposed>,
}

impl Fixture {
    fn sock(&self) -> PathBuf {
        self.dir.join("nbd.sock")
    }

    fn spec(&self) -> ExposeSpec {
        let mut spec = ExposeSpec::new(self.sock(), self.dir.join("drbd0"), self.dir.join("work"));
        spec.backend = Backend::FuseLoop; // the backend this machine has
        spec.step_timeout = Duration::from_secs(15);
        spec
    }

    fn is_mounted(&self) -> bool {
        let mp = self.mnt.to_string_lossy().into_owned();
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(mp.as_str()))
    }
}

impl Drop for Fixture {
    /// Server first (a dead server makes every FUSE request fail at once, a
    /// stopped one would make them wait), then the device (its drop aborts the
    /// FUSE connection while a file system is mounted), then the mount.
    fn drop(&mut self) {
        if let Some(mut kit) = self.nbdkit.take() {
            let _ = kit.kill();
            let _ = kit.wait();
        }
        drop(self.exposed.take()); // forced, bounded cleanup
        if self.is_mounted() {
            let mnt = self.mnt.to_string_lossy().into_owned();
            if !run_bounded("umount", &["-l", &mnt], CMD_TIMEOUT) {
                eprintln!("umount -l {mnt} did not finish: left behind");
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Runs a command, true if it ended well within `timeout`. On timeout it is
/// killed but not waited for: a process in D state ignores SIGKILL, and a
/// test must end even then.
fn run_bounded(program: &str, args: &[&str], timeout: Duration) -> bool {
    let Ok(mut child) = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return st.success();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            return false;
        }
        sleep(POLL);
    }
}

/// Starts nbdkit and waits (bounded) for its socket.
fn start_nbdkit(fx: &mut Fixture) {
    let kit = Command::new("nbdkit")
        .args(["-f", "--exit-with-parent", "--unix"])
        .arg(fx.sock())
        .args(["memory", "64M"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("nbdkit starts");
    fx.nbdkit = Some(kit);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fx.sock().exists() {
        assert!(Instant::now() < deadline, "nbdkit socket never appeared");
        sleep(POLL);
    }
}

/// Loop devices whose backing file lies under `dir` (sysfs: never opened).
fn loops_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for e in fs::read_dir("/sys/block").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        if let Ok(back) = fs::read_to_string(e.path().join("loop/backing_file")) {
            if back.trim().starts_with(&prefix) {
                found.push(name);
            }
        }
    }
    found
}

fn fuse_mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.contains(" - fuse") && l.split(' ').nth(4).is_some_and(|m| m.starts_with(&prefix))
        })
        .map(str::to_string)
        .collect()
}

fn pid_alive(pid: u32) -> bool {
    // A zombie is not alive; Exposed reaps its nbdfuse, so none should remain.
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(") ").next().map(|r| !r.starts_with('Z')))
        .unwrap_or(false)
}

#[track_caller]
fn assert_nothing_left(fx: &Fixture, nbdfuse_pid: u32, block: &Path) {
    assert!(
        loops_under(&fx.dir).is_empty(),
        "loop devices left: {:?}",
        loops_under(&fx.dir)
    );
    assert!(
        fuse_mounts_under(&fx.dir).is_empty(),
        "FUSE mounts left: {:?}",
        fuse_mounts_under(&fx.dir)
    );
    assert!(!pid_alive(nbdfuse_pid), "nbdfuse {nbdfuse_pid} still runs");
    assert!(
        fs::symlink_metadata(fx.dir.join("drbd0")).is_err(),
        "device link left"
    );
    for record in [CONN_FILE, LOOP_FILE] {
        assert!(
            !fx.dir.join("work").join(record).exists(),
            "{record} left after teardown"
        );
    }
    let name = block.file_name().unwrap().to_string_lossy().into_owned();
    let back =
        fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).unwrap_or_default();
    assert!(
        !back.contains(&*fx.dir.to_string_lossy()),
        "{name} still attached to {back}"
    );
}

/// Exposes, checks the device link, returns it.
fn expose_checked(fx: &mut Fixture) -> (PathBuf, u32) {
    let exposed = expose(&fx.spec()).unwrap_or_else(|e| panic!("expose: {e}"));
    let block = exposed.block().to_path_buf();
    assert_eq!(
        fs::read_link(fx.dir.join("drbd0")).unwrap(),
        block,
        "device path points at the loop device"
    );
    let name = block.file_name().unwrap().to_string_lossy().into_owned();
    let dio = fs::read_to_string(format!("/sys/block/{name}/loop/dio")).unwrap_or_default();
    assert_eq!(dio.trim(), "1", "{name} uses direct I/O");
    let pid = exposed.nbdfuse_pid().expect("nbdfuse runs");
    let conn = fs::read_to_string(fx.dir.join("work").join(CONN_FILE)).expect("fuse.conn record");
    assert_eq!(conn.trim(), exposed.fuse_conn().unwrap().to_string());
    let loop_name =
        fs::read_to_string(fx.dir.join("work").join(LOOP_FILE)).expect("loop.dev record");
    assert_eq!(
        Some(loop_name.trim()),
        block.file_name().and_then(|n| n.to_str())
    );
    fx.exposed = Some(exposed);
    (block, pid)
}

/// Root and the tools, a fresh directory named after TAG, nbdkit serving 64 MiB
/// of memory on a socket in it; None (after one SKIP line) when not possible.
fn fixture(tag: &str) -> Option<Fixture> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIP: needs root (loop devices, mount)");
        return None;
    }
    for p in ["nbdkit", "nbdfuse", "losetup", "mkfs.ext3", "fusermount3"] {
        if !have(p) {
            println!("SKIP: {p} not installed");
            return None;
        }
    }
    let dir = std::env::temp_dir().join(format!("bascule-blockdev-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("mnt")).unwrap();
    let mut fx = Fixture {
        mnt: dir.join("mnt"),
        dir,
        nbdkit: None,
        exposed: None,
    };
    start_nbdkit(&mut fx);
    Some(fx)
}

/// Exposes the device, makes an ext3 on it and mounts it on the fixture's
/// mount point: (device path, mount point, block device, nbdfuse pid).
fn expose_mkfs_mount(fx: &mut Fixture) -> (String, String, PathBuf, u32) {
    let dev = fx.dir.join("drbd0").to_string_lossy().into_owned();
    let mnt = fx.mnt.to_string_lossy().into_owned();
    let (block, pid) = expose_checked(fx);
    sh("mkfs.ext3", &["-q", "-F", &dev]);
    sh("mount", &[&dev, &mnt]);
    (dev, mnt, block, pid)
}

#[test]
fn expose_mkfs_mount_write_teardown_reexpose_file_is_there() {
    let Some(mut fx) = fixture("cycle") else {
        return;
    };
    // First exposure: a fresh file system and a file on it.
    let (dev, mnt, block, pid) = expose_mkfs_mount(&mut fx);
    fs::write(fx.mnt.join("hello.txt"), b"bascule was here\n").unwrap();
    sh("sync", &["-f", &format!("{mnt}/hello.txt")]);

    // Teardown refuses while mounted and hands the device back.
    let exposed = fx.exposed.take().unwrap();
    let (exposed, err) = exposed.teardown().expect_err("teardown while mounted");
    assert!(
        matches!(err, BlockdevError::Busy { ref mountpoint } if *mountpoint == mnt),
        "{err}"
    );
    fx.exposed = Some(exposed);
    assert!(
        fx.dir.join("drbd0").exists(),
        "a refused teardown leaves the device"
    );

    sh("umount", &[&mnt]);
    fx.exposed
        .take()
        .unwrap()
        .teardown()
        .unwrap_or_else(|(_, e)| panic!("teardown: {e}"));
    assert_nothing_left(&fx, pid, &block);

    // Second exposure of the same export: the file survived.
    let (block, pid) = expose_checked(&mut fx);
    sh("mount", &[&dev, &mnt]);
    let text = fs::read_to_string(fx.mnt.join("hello.txt")).expect("file after re-expose");
    assert_eq!(text, "bascule was here\n");
    sh("umount", &[&mnt]);
    fx.exposed
        .take()
        .unwrap()
        .teardown()
        .unwrap_or_else(|(_, e)| panic!("teardown: {e}"));
    assert_nothing_left(&fx, pid, &block);
}

#[test]
fn expose_without_a_server_fails_in_bounded_time_and_leaves_nothing() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !have("nbdfuse") {
        println!("SKIP: needs root and nbdfuse");
        return;
    }
    let dir = std::env::temp_dir().join(format!("bascule-blockdev-none-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let fx = Fixture {
        mnt: dir.join("mnt"),
        dir,
        nbdkit: None,
        exposed: None,
    };
    let t0 = Instant::now();
    let err = expose(&fx.spec()).expect_err("no NBD server behind the socket");
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t0.elapsed()
    );
    assert!(
        matches!(
            err,
            BlockdevError::Failed {
                step: "nbdfuse",
                ..
            } | BlockdevError::Timeout { step: "nbdfuse" }
        ),
        "{err}"
    );
    assert!(loops_under(&fx.dir).is_empty());
    assert!(fuse_mounts_under(&fx.dir).is_empty());
    assert!(fs::symlink_metadata(fx.dir.join("drbd0")).is_err());
}

/// Waits until `cond` holds or `timeout` passes; true if it held.
fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        sleep(POLL);
    }
    cond()
}

#[test]
fn jobs_expose_and_tear_down_off_the_loop_and_wake_it() {
    let Some(mut fx) = fixture("job") else {
        return;
    };
    const WAKE: mio::Token = mio::Token(7);
    let mut poll = mio::Poll::new().unwrap();
    let waker = std::sync::Arc::new(mio::Waker::new(poll.registry(), WAKE).unwrap());
    let mut events = mio::Events::with_capacity(4);
    // The loop's view: poll until woken, then ask the job (bounded).
    let mut wait_job = |job: &mut Job| -> JobResult {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "job never finished");
            poll.poll(&mut events, Some(Duration::from_millis(500)))
                .unwrap();
            if let Some(r) = job.poll() {
                return r;
            }
        }
    };
    let mut job = Job::expose(fx.spec(), waker.clone());
    let exposed = match wait_job(&mut job) {
        JobResult::Exposed(Ok(e)) => e,
        other => panic!("expose job: {other:?}"),
    };
    let (block, pid) = (
        exposed.block().to_path_buf(),
        exposed.nbdfuse_pid().unwrap(),
    );
    assert_eq!(fs::read_link(fx.dir.join("drbd0")).unwrap(), block);
    let mut job = Job::teardown(exposed, waker);
    match wait_job(&mut job) {
        JobResult::TornDown(Ok(())) => {}
        JobResult::TornDown(Err((exposed, e))) => {
            fx.exposed = Some(exposed);
            panic!("teardown job: {e}")
        }
        other => panic!("teardown job: {other:?}"),
    }
    assert_nothing_left(&fx, pid, &block);
}

/// The case that hangs hosts: the NBD server stops answering (SIGSTOP) under a
/// mounted ext3 with dirty data. Dropping the device must still end, in
/// bounded time, with no loop device, no FUSE mount, no nbdfuse: the FUSE
/// connection is aborted rather than waited on.
#[test]
fn a_frozen_server_under_a_mounted_fs_is_cleaned_up_in_bounded_time() {
    let Some(mut fx) = fixture("frozen") else {
        return;
    };
    let (_dev, mnt, block, pid) = expose_mkfs_mount(&mut fx);
    fs::write(fx.mnt.join("dirty.bin"), vec![0x5a; 4 << 20]).unwrap(); // in the page cache
    let kit = fx.nbdkit.as_ref().unwrap().id() as libc::pid_t;
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(kit, libc::SIGSTOP) };
    let t0 = Instant::now();
    // Dropped while mounted: the device aborts its FUSE connection first, so
    // the file system's writeback fails instead of waiting forever.
    drop(fx.exposed.take());
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(40), "cleanup took {took:?}");
    assert!(
        run_bounded("umount", &["-l", &mnt], Duration::from_secs(20)),
        "umount after the abort must not hang"
    );
    // Once its FUSE mount is gone the loop's backing file reads "/disk": so
    // look at our loop device by name, not by path.
    let name = block.file_name().unwrap().to_string_lossy().into_owned();
    let backing =
        || fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).unwrap_or_default();
    let ours = |b: &str| b.trim() == "/disk" || b.contains(&*fx.dir.to_string_lossy());
    assert!(
        eventually(Duration::from_secs(15), || !ours(&backing())),
        "{name} still attached to {}",
        backing()
    );
    assert!(fuse_mounts_under(&fx.dir).is_empty(), "FUSE mounts left");
    assert!(!pid_alive(pid), "nbdfuse {pid} still runs");
    // SAFETY: kill(2) on our own child; the fixture kills and reaps it.
    unsafe { libc::kill(kit, libc::SIGCONT) };
}

/// A previous daemon died without teardown (its `Exposed` never dropped) and
/// its server with it: `clean_stale` detaches the recorded loop device and
/// removes the records; the leaked nbdfuse is then stopped like the lab would.
#[test]
fn clean_stale_detaches_what_a_dead_instance_left() {
    let Some(mut fx) = fixture("stale") else {
        return;
    };
    let (block, pid) = expose_checked(&mut fx);
    std::mem::forget(fx.exposed.take()); // the daemon was killed: no teardown ran
    if let Some(mut kit) = fx.nbdkit.take() {
        let _ = kit.kill();
        let _ = kit.wait();
    }
    let work = fx.dir.join("work");
    let t0 = Instant::now();
    bascule::shell::blockdev::clean_stale(&work, Duration::from_secs(10));
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t0.elapsed()
    );
    let name = block.file_name().unwrap().to_string_lossy().into_owned();
    let backing =
        || fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).unwrap_or_default();
    // A detach of a loop device someone still has open (udev or a concurrent
    // test's probe) completes at its last close: give it a bounded moment.
    let detached = eventually(Duration::from_secs(5), || {
        !backing().contains(&*work.to_string_lossy())
    });
    assert!(detached, "{name} still attached to {}", backing());
    for record in [CONN_FILE, LOOP_FILE] {
        assert!(!work.join(record).exists(), "{record} left");
    }
    // The leaked nbdfuse: unmount (it exits), else kill; bounded either way.
    let mp = work.join("mnt").to_string_lossy().into_owned();
    let _ = run_bounded("fusermount3", &["-u", &mp], Duration::from_secs(10));
    if !eventually(Duration::from_secs(5), || !pid_alive(pid)) {
        // SAFETY: kill(2) on the nbdfuse this test started.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
    assert!(
        eventually(Duration::from_secs(5), || !pid_alive(pid)),
        "nbdfuse {pid} survives"
    );
    let _ = fs::remove_file(fx.dir.join("drbd0"));
}
