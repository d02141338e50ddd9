//! Resource agents against the real kernel: VIPs in network namespaces, a
//! loop-device filesystem, a resource.d script that starts a daemon.
//!
//! Layer: integration tests of `bascule::shell::agents` (the library, not the
//! binary). They need root; otherwise each prints one SKIP line and passes.
//!
//! How agent code runs inside a namespace: `in_netns` spawns a thread that
//! enters `/run/netns/NAME` with setns(CLONE_NEWNET). A network namespace is
//! per thread, so that thread's getifaddrs, AF_PACKET socket and every child it
//! spawns (`ip addr add`) live in the namespace while the test stays outside.
//! (A mount namespace cannot be entered by a multi-threaded process, so the
//! filesystem test mounts on a temporary mount point of the host instead.)
//!
//! Topology of the VIP test (unique prefix per test, deleted on drop, panics
//! included): a client namespace with a bridge `br0` (192.168.69.10/24) and two
//! server namespaces `s1` (192.168.69.14) and `s2` (192.168.69.15), each on a
//! veth `eth0` whose peer is a port of the bridge. No traffic leaves them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use bascule::config::ResourceSpec;
use bascule::shell::agents::garp::Garp;
use bascule::shell::agents::runner::Runner;
use bascule::shell::agents::{
    check_already_active, AgentContext, AgentError, ErrorKind, Finished, GarpTarget, Op,
    ResourceState, Task,
};

/// Namespaces made by this process so far (part of the unique prefix).
static COUNTER: AtomicUsize = AtomicUsize::new(0);
/// Per-command deadline of the agents in these tests.
const OP_TIMEOUT_S: u64 = 20;
/// Longest a GARP schedule runs (two bursts) plus margin.
const GARP_TIMEOUT: Duration = Duration::from_secs(5);

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn skip(test: &str) -> bool {
    if !is_root() {
        println!("SKIP: {test} needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN)");
        return true;
    }
    false
}

fn unique(tag: &str) -> String {
    format!(
        "bta{}{}{}",
        std::process::id() % 10000,
        COUNTER.fetch_add(1, Ordering::SeqCst),
        tag
    )
}

/// Runs a command, panicking with its stderr on failure; returns stdout.
#[track_caller]
fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A resource word typed by the haresources parser, as the daemon gets it.
fn spec(word: &str) -> ResourceSpec {
    let text = format!("n {word}");
    let mut parsed =
        bascule::config::haresources::parse(&text, &["n".to_string()], &mut Vec::new())
            .expect("a valid resource word");
    parsed.groups.remove(0).resources.remove(0)
}

fn ctx(config_dir: &Path) -> AgentContext {
    let mut c = AgentContext::detect(config_dir.to_path_buf(), "debian1".into());
    c.timeout = bascule::time::Duration::from_secs(OP_TIMEOUT_S);
    c
}

fn agent(word: &str, op: Op, ctx: &AgentContext) -> Result<Finished, AgentError> {
    Task::new(&spec(word), op, ctx).run_blocking(&mut Runner::new())
}

/// Runs `f` on a thread inside network namespace `ns`.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("netns file");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("netns thread")
}

/// Sends the whole GARP schedule for `target`, as the loop would drive it.
fn announce(target: &GarpTarget) -> (u32, u32) {
    let origin = Instant::now();
    let now = || bascule::time::Instant::from_millis(origin.elapsed().as_millis() as u64);
    let mut garp = Garp::new(&target.iface, target.vip, now()).expect("garp socket");
    while !garp.is_done() {
        assert!(
            origin.elapsed() < GARP_TIMEOUT,
            "GARP schedule did not finish"
        );
        garp.handle_timeout(now());
        sleep(Duration::from_millis(10));
    }
    (garp.sent, garp.send_errors)
}

/// A client namespace with a bridge and two servers; deleted on drop.
struct Lan {
    client: String,
    servers: [String; 2],
}

impl Lan {
    fn up() -> Lan {
        let lan = Lan {
            client: unique("c"),
            servers: [unique("s1"), unique("s2")],
        };
        for ns in [&lan.client, &lan.servers[0], &lan.servers[1]] {
            run(&["ip", "netns", "add", ns]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        let c = lan.client.as_str();
        run(&["ip", "-n", c, "link", "add", "br0", "type", "bridge"]);
        run(&[
            "ip",
            "-n",
            c,
            "addr",
            "add",
            "192.168.69.10/24",
            "dev",
            "br0",
        ]);
        run(&["ip", "-n", c, "link", "set", "br0", "up"]);
        for (i, (s, addr)) in lan
            .servers
            .iter()
            .zip(["192.168.69.14/24", "192.168.69.15/24"])
            .enumerate()
        {
            let port = format!("p{i}");
            run(&[
                "ip", "-n", s, "link", "add", "eth0", "type", "veth", "peer", "name", &port,
                "netns", c,
            ]);
            run(&["ip", "-n", c, "link", "set", &port, "master", "br0", "up"]);
            run(&["ip", "-n", s, "addr", "add", addr, "dev", "eth0"]);
            run(&["ip", "-n", s, "link", "set", "eth0", "up"]);
        }
        lan
    }

    fn mac(&self, server: usize) -> String {
        let out = run(&["ip", "-n", &self.servers[server], "link", "show", "eth0"]);
        let after = out.split("link/ether ").nth(1).expect("ether line");
        after.split_whitespace().next().unwrap().to_string()
    }

    /// The client's neighbour entry for `ip`: `(lladdr, state)`.
    fn neigh(&self, ip: &str) -> Option<String> {
        let out = run(&["ip", "-n", &self.client, "neigh", "show", ip]);
        out.split("lladdr ")
            .nth(1)
            .map(|s| s.split_whitespace().next().unwrap().to_string())
    }

    fn addr_show(&self, server: usize) -> String {
        run(&[
            "ip",
            "-n",
            &self.servers[server],
            "addr",
            "show",
            "dev",
            "eth0",
        ])
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in [&self.client, &self.servers[0], &self.servers[1]] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

const VIP: &str = "IPaddr::192.168.69.100";

/// Starts the VIP in `ns` and sends its GARP schedule; returns frames sent.
fn vip_start_announced(ns: &str, ctx: &AgentContext) -> u32 {
    let ctx = ctx.clone();
    in_netns(ns, move || {
        let f = agent(VIP, Op::Start, &ctx).expect("VIP start");
        assert_eq!(f.state, ResourceState::Running);
        let target = f.garp.expect("a start announces the VIP");
        assert_eq!(target.iface, "eth0", "found by subnet");
        let (sent, errors) = announce(&target);
        assert_eq!(errors, 0);
        sent
    })
}

// ==== Tests for the IPaddr agent ====

/// Slow: about 6 s (two GARP schedules).
#[test]
fn ipaddr_moves_between_servers_and_garp_repoints_client() {
    if skip("ipaddr_moves_between_servers_and_garp_repoints_client") {
        return;
    }
    let lan = Lan::up();
    let ctx = ctx(Path::new("/nonexistent-ha.d"));
    assert_eq!(vip_start_announced(&lan.servers[0], &ctx), 6);
    let shown = lan.addr_show(0);
    assert!(
        shown.contains("inet 192.168.69.100/24 brd 192.168.69.255 scope global secondary eth0:0"),
        "{shown}"
    );
    let (c1, c2) = (ctx.clone(), ctx.clone());
    assert!(in_netns(&lan.servers[0], move || check_already_active(
        &spec(VIP),
        &c1
    )));
    assert!(!in_netns(&lan.servers[1], move || check_already_active(
        &spec(VIP),
        &c2
    )));

    // The client resolves the VIP: its ARP entry points at s1.
    run(&[
        "ip",
        "netns",
        "exec",
        &lan.client,
        "ping",
        "-c",
        "1",
        "-W",
        "2",
        "192.168.69.100",
    ]);
    assert_eq!(lan.neigh("192.168.69.100"), Some(lan.mac(0)));

    // Release on s1, acquire on s2: the client sends nothing meanwhile.
    let c = ctx.clone();
    let stopped = in_netns(&lan.servers[0], move || agent(VIP, Op::Stop, &c)).expect("stop");
    assert_eq!(stopped.state, ResourceState::Stopped);
    assert!(!lan.addr_show(0).contains("192.168.69.100"));
    assert_ne!(lan.mac(0), lan.mac(1));
    vip_start_announced(&lan.servers[1], &ctx);
    assert_eq!(
        lan.neigh("192.168.69.100"),
        Some(lan.mac(1)),
        "GARP repointed the client"
    );

    let c = ctx.clone();
    let status = in_netns(&lan.servers[1], move || agent(VIP, Op::Status, &c)).unwrap();
    assert_eq!(status.state, ResourceState::Running);
    let c = ctx.clone();
    in_netns(&lan.servers[1], move || agent(VIP, Op::Stop, &c)).expect("stop");
    assert!(!lan.addr_show(1).contains("192.168.69.100"));
}

#[test]
fn ipaddr_second_vip_gets_next_label_and_foreign_subnet_is_refused() {
    if skip("ipaddr_second_vip_gets_next_label_and_foreign_subnet_is_refused") {
        return;
    }
    let lan = Lan::up();
    let ctx = ctx(Path::new("/nonexistent-ha.d"));
    let c = ctx.clone();
    let (first, second, foreign) = in_netns(&lan.servers[0], move || {
        (
            agent("IPaddr::192.168.69.100", Op::Start, &c),
            agent("IPaddr2::192.168.69.101/24", Op::Start, &c),
            agent("IPaddr::10.99.0.1", Op::Start, &c),
        )
    });
    first.unwrap();
    second.unwrap();
    let shown = lan.addr_show(0);
    assert!(
        shown.contains("192.168.69.101/24 brd 192.168.69.255 scope global secondary eth0:1"),
        "{shown}"
    );
    let e = foreign.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NoInterface);
    assert!(e.to_string().contains("10.99.0.1"), "{e}");
}

// ==== Tests for the Filesystem agent ====

/// A loop device with a fresh filesystem and a mount point; detached on drop.
struct LoopFs {
    dir: PathBuf,
    dev: String,
}

impl LoopFs {
    fn new(fstype: &str) -> LoopFs {
        let dir = std::env::temp_dir().join(unique(&format!("fs{fstype}")));
        std::fs::create_dir_all(dir.join("mnt")).unwrap();
        let image = dir.join("disk.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(16 << 20)
            .unwrap();
        let dev = run(&["losetup", "--find", "--show", image.to_str().unwrap()])
            .trim()
            .to_string();
        let fs = LoopFs { dir, dev };
        run(&[&format!("mkfs.{fstype}"), "-q", "-F", &fs.dev]);
        fs
    }

    fn mountpoint(&self) -> String {
        self.dir.join("mnt").to_string_lossy().into_owned()
    }

    fn word(&self, fstype: &str) -> String {
        format!("Filesystem::{}::{}::{fstype}", self.dev, self.mountpoint())
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let mp = self.mountpoint();
        let _ = Command::new("umount")
            .args(["-l", &mp])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn filesystem_mounts_and_stop_kills_holder_then_unmounts() {
    if skip("filesystem_mounts_and_stop_kills_holder_then_unmounts") {
        return;
    }
    let fs = LoopFs::new("ext3");
    let ctx = ctx(Path::new("/nonexistent-ha.d"));
    let word = fs.word("ext3");
    assert!(!check_already_active(&spec(&word), &ctx));
    assert_eq!(
        agent(&word, Op::Start, &ctx).unwrap().state,
        ResourceState::Running
    );
    assert!(run(&["findmnt", "-n", &fs.mountpoint()]).contains(&fs.dev));
    assert!(check_already_active(&spec(&word), &ctx));
    // A process whose cwd is on the filesystem keeps it busy.
    let mut holder = Command::new("sh")
        .args(["-c", "exec sleep 300"])
        .current_dir(fs.mountpoint())
        .spawn()
        .unwrap();
    let stopped = agent(&word, Op::Stop, &ctx).expect("stop kills the holder and unmounts");
    assert_eq!(stopped.state, ResourceState::Stopped);
    let status = holder.wait().unwrap();
    assert!(!status.success(), "holder killed: {status:?}");
    assert_eq!(
        agent(&word, Op::Status, &ctx).unwrap().state,
        ResourceState::Stopped
    );
}

#[test]
fn filesystem_ext2_is_checked_before_mount() {
    if skip("filesystem_ext2_is_checked_before_mount") {
        return;
    }
    let fs = LoopFs::new("ext2");
    let ctx = ctx(Path::new("/nonexistent-ha.d"));
    let word = fs.word("ext2");
    assert!(agent(&word, Op::Start, &ctx).is_ok());
    assert!(agent(&word, Op::Stop, &ctx).is_ok());
    let e = agent(
        &format!("Filesystem::/dev/nonexistent::{}::ext3", fs.mountpoint()),
        Op::Start,
        &ctx,
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Exit);
    assert!(
        e.cmd
            .as_deref()
            .unwrap()
            .contains("mount -t ext3 /dev/nonexistent"),
        "{e}"
    );
    assert!(!e.stderr.is_empty(), "{e}");
}

// ==== Tests for script resources ====

/// A resource.d script that starts a background daemon (the lab's web server
/// shape): the start op ends although the daemon keeps running.
#[test]
fn script_starting_a_daemon_completes_and_status_follows() {
    if skip("script_starting_a_daemon_completes_and_status_follows") {
        return;
    }
    let dir = std::env::temp_dir().join(unique("script"));
    std::fs::create_dir_all(dir.join("resource.d")).unwrap();
    let pidfile = dir.join("daemon.pid");
    let script = format!(
        "#!/bin/sh\nP={p}\ncase \"$1\" in\n\
         start) sleep 300 </dev/null >/dev/null 2>&1 & echo $! > $P;;\n\
         stop) [ -e $P ] && kill $(cat $P); rm -f $P;;\n\
         status) [ -e $P ] && kill -0 $(cat $P) 2>/dev/null && exit 0; exit 3;;\n\
         *) exit 2;;\nesac\n",
        p = pidfile.display()
    );
    let path = dir.join("resource.d/daemon");
    std::fs::write(&path, script).unwrap();
    run(&["chmod", "755", path.to_str().unwrap()]);
    let ctx = ctx(&dir);
    let started = Instant::now();
    assert_eq!(
        agent("daemon", Op::Start, &ctx).unwrap().state,
        ResourceState::Running
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "start did not wait for the daemon"
    );
    assert!(check_already_active(&spec("daemon"), &ctx));
    assert_eq!(
        agent("daemon", Op::Stop, &ctx).unwrap().state,
        ResourceState::Stopped
    );
    assert_eq!(
        agent("daemon", Op::Status, &ctx).unwrap().state,
        ResourceState::Stopped
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A daemon that inherited the script's stdout and stderr and keeps writing to
/// them must survive the script's end (the runner keeps the pipes as orphans).
/// Its status script counts it alive when running, sleeping or in disk sleep
/// (`D`: forking `sleep` on a loaded machine): only gone, zombie or stopped
/// means dead (the test failed 1 in ~35 runs under load while it looked for
/// R or S only).
#[test]
fn script_daemon_writing_to_inherited_stderr_survives() {
    if skip("script_daemon_writing_to_inherited_stderr_survives") {
        return;
    }
    let dir = std::env::temp_dir().join(unique("chatty"));
    std::fs::create_dir_all(dir.join("resource.d")).unwrap();
    let pidfile = dir.join("chatty.pid");
    let script = format!(
        "#!/bin/sh\nP={p}\ncase \"$1\" in\n\
         start) sh -c 'while :; do echo tick >&2; echo tock; sleep 0.05; done' & echo $! > $P;;\n\
         stop) kill $(cat $P); rm -f $P;;\n\
         status) [ -e $P ] && grep -q '^State:[[:space:]]*[RSD]' /proc/$(cat $P)/status && exit 0; exit 3;;\n\
         esac\n",
        p = pidfile.display()
    );
    let path = dir.join("resource.d/chatty");
    std::fs::write(&path, script).unwrap();
    run(&["chmod", "755", path.to_str().unwrap()]);
    let ctx = ctx(&dir);
    let mut runner = Runner::new();
    let started = Task::new(&spec("chatty"), Op::Start, &ctx).run_blocking(&mut runner);
    assert_eq!(started.unwrap().state, ResourceState::Running);
    assert_eq!(runner.orphans(), 2, "the daemon holds stdout and stderr");
    for _ in 0..20 {
        runner.drain_all();
        sleep(Duration::from_millis(25));
    }
    let status = Task::new(&spec("chatty"), Op::Status, &ctx).run_blocking(&mut runner);
    let proc_state = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).ok())
        .and_then(|st| {
            st.lines()
                .find(|l| l.starts_with("State:"))
                .map(str::to_string)
        });
    assert_eq!(
        status.unwrap().state,
        ResourceState::Running,
        "daemon survived its writes (its {proc_state:?} now)"
    );
    let stopped = Task::new(&spec("chatty"), Op::Stop, &ctx).run_blocking(&mut runner);
    assert_eq!(stopped.unwrap().state, ResourceState::Stopped);
    let origin = Instant::now();
    while runner.orphans() > 0 {
        assert!(
            origin.elapsed() < Duration::from_secs(5),
            "orphan pipes closed when the daemon exits"
        );
        runner.drain_all();
        sleep(Duration::from_millis(10));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
