//! The `bascule` binary from the outside: check-config on the guide's files, the
//! authkeys mode refusal, `file:line:` errors, `status` without a daemon, and an
//! end-to-end pair: two daemons over a pty null-modem (made here with openpty and
//! a relay thread; never /dev/ttyS0), both see each other, one is killed, the
//! other declares it dead within deadtime + keepalive.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_bascule");

const GUIDE_HA_CF: &str = "\
logfacility none
node debian1 debian2
keepalive 2
warntime 10
deadtime 60
initdead 120
udpport 694
bcast eth1
auto_failback off
";
const GUIDE_AUTHKEYS: &str = "auth 1\n1 md5 \"Icimonsupermotdepasse\"\n";
const GUIDE_HARESOURCES: &str = "debian1 192.168.69.16 IPaddr::192.168.69.100 drbddisk::repl \
Filesystem::/dev/drbd0::/mnt/repl::ext3 apache MailTo::admin@example.com\n";

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p = std::env::temp_dir().join(format!("bascule-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_config(dir: &Path, ha_cf: &str, authkeys_mode: u32) {
    std::fs::write(dir.join("ha.cf"), ha_cf).unwrap();
    std::fs::write(dir.join("authkeys"), GUIDE_AUTHKEYS).unwrap();
    std::fs::set_permissions(
        dir.join("authkeys"),
        std::fs::Permissions::from_mode(authkeys_mode),
    )
    .unwrap();
    std::fs::write(dir.join("haresources"), GUIDE_HARESOURCES).unwrap();
    std::fs::write(dir.join("drbd.conf"), GUIDE_DRBD_CONF).unwrap();
}

/// The guide's drbd.conf, verbatim.
const GUIDE_DRBD_CONF: &str = include_str!("fixtures/drbd/guide.conf");

fn bascule(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_config_guide_files_exit_zero() {
    let t = TempDir::new("guide");
    write_config(&t.0, GUIDE_HA_CF, 0o600);
    let out = bascule(&[
        "--config-dir",
        t.0.to_str().unwrap(),
        "--node",
        "debian1",
        "check-config",
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("deadtime_ms 60000"), "{stdout}");
    assert!(stdout.contains("this_node debian1"), "{stdout}");
    assert!(stdout.contains("drbd_resource repl"), "{stdout}");
}

/// Runs `bascule ARGS`, killed after `limit` if still running (a daemon that
/// should have refused to start must not hang the test).
fn bascule_bounded(args: &[&str], limit: Duration) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
    (status.and_then(|s| s.code()), stderr)
}

#[test]
fn run_with_drbddisk_but_no_drbd_conf_names_the_file() {
    let t = TempDir::new("drbd");
    write_config(&t.0, GUIDE_HA_CF, 0o600);
    std::fs::remove_file(t.0.join("drbd.conf")).unwrap();
    let d = t.0.to_str().unwrap();
    let run_dir = format!("{d}/run");
    let state_dir = format!("{d}/state");
    let (code, stderr) = bascule_bounded(
        &[
            "--config-dir",
            d,
            "--node",
            "debian1",
            "--run-dir",
            &run_dir,
            "--state-dir",
            &state_dir,
            "run",
        ],
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(3), "stderr: {stderr}");
    assert!(stderr.contains("drbd.conf"), "{stderr}");
}

#[test]
fn check_config_authkeys_0644_refused_with_reason() {
    let t = TempDir::new("mode");
    write_config(&t.0, GUIDE_HA_CF, 0o644);
    let out = bascule(&[
        "--config-dir",
        t.0.to_str().unwrap(),
        "--node",
        "debian1",
        "check-config",
    ]);
    assert_eq!(out.status.code(), Some(4));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("authkeys") && stderr.contains("0644"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
}

#[test]
fn check_config_bad_directive_names_file_and_line() {
    let t = TempDir::new("bad");
    write_config(&t.0, &format!("{GUIDE_HA_CF}keepalve 2\n"), 0o600);
    let out = bascule(&[
        "--config-dir",
        t.0.to_str().unwrap(),
        "--node",
        "debian1",
        "check-config",
    ]);
    assert_eq!(out.status.code(), Some(3));
    let expected = format!("{}:10:", t.0.join("ha.cf").display());
    assert!(
        text(&out.stderr).starts_with(&expected),
        "{} does not start with {expected}",
        text(&out.stderr)
    );
}

#[test]
fn check_config_unknown_node_is_config_error() {
    let t = TempDir::new("node");
    write_config(&t.0, GUIDE_HA_CF, 0o600);
    let out = bascule(&[
        "--config-dir",
        t.0.to_str().unwrap(),
        "--node",
        "debian9",
        "check-config",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("debian1, debian2"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn status_without_daemon_exits_8() {
    let t = TempDir::new("status");
    let out = bascule(&["--run-dir", t.0.to_str().unwrap(), "status", "--json"]);
    assert_eq!(out.status.code(), Some(8));
    assert!(
        text(&out.stderr).contains("not running"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    assert_eq!(bascule(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(bascule(&[]).status.code(), Some(2));
    let help = bascule(&["help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(text(&help.stdout).contains("check-config"));
    assert_eq!(bascule(&["version"]).status.code(), Some(0));
}

// ==== End to end: two daemons over a pty null-modem ====

/// A pty pair per node and a relay thread copying between the two masters: a
/// null-modem cable whose ends are `/dev/pts/N` paths. Slaves stay open here so
/// the masters never see EIO while a daemon restarts.
struct NullModem {
    ends: [PathBuf; 2],
    _slaves: [OwnedFd; 2],
}

/// openpty's fds are inheritable: a spawned daemon would hold the master open
/// and never see the far end go away.
fn openpty_cloexec() -> nix::pty::OpenptyResult {
    let pty = nix::pty::openpty(None, None).unwrap();
    for fd in [&pty.master, &pty.slave] {
        let cloexec = nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC);
        nix::fcntl::fcntl(fd, cloexec).unwrap();
    }
    pty
}

fn pts_path(fd: &OwnedFd) -> PathBuf {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap()
}

fn relay(from: OwnedFd, to: OwnedFd) {
    let mut from = std::fs::File::from(from);
    let mut to = std::fs::File::from(to);
    let mut buf = [0u8; 512];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => std::thread::sleep(Duration::from_millis(10)),
            Ok(n) => {
                let _ = to.write_all(&buf[..n]);
            }
        }
    }
}

impl NullModem {
    fn new() -> NullModem {
        let a = openpty_cloexec();
        let b = openpty_cloexec();
        for slave in [&a.slave, &b.slave] {
            let mut t = nix::sys::termios::tcgetattr(slave).unwrap();
            nix::sys::termios::cfmakeraw(&mut t);
            nix::sys::termios::tcsetattr(slave, nix::sys::termios::SetArg::TCSANOW, &t).unwrap();
        }
        let ends = [pts_path(&a.slave), pts_path(&b.slave)];
        let (am, bm) = (a.master.try_clone().unwrap(), b.master.try_clone().unwrap());
        std::thread::spawn(move || relay(a.master, b.master));
        std::thread::spawn(move || relay(bm, am));
        NullModem {
            ends,
            _slaves: [a.slave, b.slave],
        }
    }
}

struct Node {
    name: &'static str,
    dir: TempDir,
    child: Option<Child>,
}

impl Node {
    fn start(name: &'static str, serial: &Path) -> Node {
        let dir = TempDir::new(name);
        let ha_cf = format!(
            "node debian1 debian2\nlogfile {}\nlogfacility none\nkeepalive 200ms\nwarntime 500ms\n\
             deadtime 1\ninitdead 2\nbaud 9600\nrealtime off\nserial {}\n",
            dir.0.join("ha.log").display(),
            serial.display()
        );
        write_config(&dir.0, &ha_cf, 0o600);
        // No groups and no disks: the guide's would run on this host.
        std::fs::write(dir.0.join("haresources"), "").unwrap();
        std::fs::remove_file(dir.0.join("drbd.conf")).unwrap();
        let mut node = Node {
            name,
            dir,
            child: None,
        };
        node.child = Some(
            node.command(&["run"])
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        node
    }

    fn command(&self, args: &[&str]) -> Command {
        let d = &self.dir.0;
        let mut c = Command::new(BIN);
        c.arg("--config-dir").arg(d).arg("--node").arg(self.name);
        c.arg("--run-dir")
            .arg(d.join("run"))
            .arg("--state-dir")
            .arg(d.join("state"));
        c.args(args);
        c
    }

    fn status_json(&self) -> String {
        text(&self.command(&["status", "--json"]).output().unwrap().stdout)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("ha.log")).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The number after `"key":` in a JSON text.
fn json_u64(json: &str, key: &str) -> u64 {
    let pat = format!("\"{key}\":");
    let at = json
        .find(&pat)
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + pat.len();
    json[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

/// Waits until `f` holds, or fails with `what` and `context()`.
#[track_caller]
fn wait_for(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> bool,
    context: impl Fn() -> String,
) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

#[test]
fn pair_over_pty_sees_peer_then_detects_death() {
    let modem = NullModem::new();
    let mut a = Node::start("debian1", &modem.ends[0]);
    let mut b = Node::start("debian2", &modem.ends[1]);
    let up = |n: &Node| {
        let s = n.status_json();
        s.contains("\"state\":\"Alive\"") && s.contains("\"state\":\"Up\"")
    };
    let ctx = || {
        format!(
            "debian1: {}\n{}\ndebian2: {}\n{}",
            a.status_json(),
            a.log(),
            b.status_json(),
            b.log()
        )
    };
    wait_for(
        "both peers Alive, link Up",
        Duration::from_secs(10),
        || up(&a) && up(&b),
        ctx,
    );
    assert!(a.status_json().contains("\"name\":\"debian2\""));

    // No allocation per heartbeat: the count grows by the same amount (the cost of
    // serving one status request) over 0.2 s and over 2 s (10 more heartbeats each way).
    let allocs = |n: &Node| json_u64(&n.status_json(), "allocations");
    let a0 = allocs(&a);
    std::thread::sleep(Duration::from_millis(200));
    let a1 = allocs(&a);
    std::thread::sleep(Duration::from_millis(2000));
    let a2 = allocs(&a);
    assert_eq!(
        a2 - a1,
        a1 - a0,
        "allocations: {a0} {a1} {a2}: the heartbeat path allocates"
    );

    // A second daemon with the same run dir refuses to start.
    let again = a.command(&["run"]).output().unwrap();
    assert_eq!(again.status.code(), Some(9), "{}", text(&again.stderr));

    // kill -9 debian2: debian1 declares it dead within deadtime + keepalive (+ slack).
    let mut child = b.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let took = wait_for(
        "peer_state to=Dead",
        Duration::from_secs(5),
        || a.log().contains(" to=Dead "),
        || a.log(),
    );
    assert!(
        took < Duration::from_millis(1000 + 200 + 600),
        "death detected after {took:?}"
    );

    // SIGTERM: clean shutdown, exit 0, socket removed.
    let mut child = a.child.take().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        a.log().contains("shutdown node=debian1 signal=15"),
        "{}",
        a.log()
    );
    assert!(!a.dir.0.join("run/bascule.sock").exists());
    drop(modem);
}

/// CPU time (user + system) of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn serial_far_end_gone_logs_once_and_does_not_spin() {
    let pty = openpty_cloexec();
    let path = pts_path(&pty.slave);
    drop(pty.slave);
    let node = Node::start("debian1", &path);
    let ctx = || node.log();
    wait_for(
        "startup",
        Duration::from_secs(5),
        || node.log().contains("startup "),
        ctx,
    );
    std::thread::sleep(Duration::from_millis(300));
    drop(pty.master); // the far end is gone: EOF/EIO, then the device vanishes
    let pid = node.child.as_ref().unwrap().id();
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_millis(2500));
    let spent = cpu_ticks(pid) - before;
    assert!(
        spent < 25,
        "daemon used {spent} ticks in 2.5 s with its serial port gone"
    );
    assert_eq!(
        node.log().matches("link_error ").count(),
        1,
        "{}",
        node.log()
    );
    assert!(
        node.status_json().contains("\"state\":\"Down\""),
        "{}",
        node.status_json()
    );
}

#[test]
fn disk_create_md_offline_refuses_to_overwrite_without_force() {
    let t = TempDir::new("createmd");
    write_config(&t.0, GUIDE_HA_CF, 0o600);
    let img = t.0.join("hda5.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let conf = GUIDE_DRBD_CONF.replace("/dev/hda5", img.to_str().unwrap());
    std::fs::write(t.0.join("drbd.conf"), conf).unwrap();
    let d = t.0.to_str().unwrap();
    let run = |args: &[&str]| {
        let mut all = vec!["--config-dir", d, "--node", "debian1"];
        all.extend_from_slice(args);
        bascule(&all)
    };
    let out = run(&["disk", "create-md", "repl"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("usable size"),
        "{}",
        text(&out.stdout)
    );
    let again = run(&["disk", "create-md", "all"]);
    assert_eq!(again.status.code(), Some(10), "{}", text(&again.stderr));
    assert!(
        text(&again.stderr).contains("--force"),
        "{}",
        text(&again.stderr)
    );
    let forced = run(&["disk", "create-md", "repl", "--force"]);
    assert_eq!(forced.status.code(), Some(0), "{}", text(&forced.stderr));
    let unknown = run(&["disk", "create-md", "r9"]);
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown.stderr));
    // Online commands need the daemon.
    let status = bascule(&["--run-dir", &format!("{d}/run"), "disk", "status"]);
    assert_eq!(status.status.code(), Some(8), "{}", text(&status.stderr));
}
