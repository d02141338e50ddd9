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

use bascule::shell::blockdev::{expose, Backend, BlockdevError, ExposeSpec, Exposed};

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
    fn drop(&mut self) {
        if self.is_mounted() {
            // Lazy: never wait on a flush through a FUSE that may be gone.
            let _ = Command::new("timeout")
                .args(["10", "umount", "-l"])
                .arg(&self.mnt)
                .status();
        }
        drop(self.exposed.take()); // forced, bounded cleanup
        if let Some(mut kit) = self.nbdkit.take() {
            let _ = kit.kill();
            let _ = kit.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
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
    fx.exposed = Some(exposed);
    (block, pid)
}

#[test]
fn expose_mkfs_mount_write_teardown_reexpose_file_is_there() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIP: needs root (loop devices, mount)");
        return;
    }
    for p in ["nbdkit", "nbdfuse", "losetup", "mkfs.ext3", "fusermount3"] {
        if !have(p) {
            println!("SKIP: {p} not installed");
            return;
        }
    }
    let dir = std::env::temp_dir().join(format!("bascule-blockdev-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("mnt")).unwrap();
    let mut fx = Fixture {
        mnt: dir.join("mnt"),
        dir,
        nbdkit: None,
        exposed: None,
    };
    start_nbdkit(&mut fx);
    let dev = fx.dir.join("drbd0").to_string_lossy().into_owned();
    let mnt = fx.mnt.to_string_lossy().into_owned();

    // First exposure: a fresh file system and a file on it.
    let (block, pid) = expose_checked(&mut fx);
    sh("mkfs.ext3", &["-q", "-F", &dev]);
    sh("mount", &[&dev, &mnt]);
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
