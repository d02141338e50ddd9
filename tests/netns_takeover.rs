//! End-to-end takeover tests: two daemons in the network-namespace lab run one
//! group, a VIP and the lab's web service (`scripts/lab-web/apache` as
//! `resource.d/apache`), and a client in the lab reaches it by the VIP.
//!
//! Layer: black-box tests of the `bascule` binary, observed as an operator would:
//! `status --json` (groups, owner), `ip addr` in a node's namespace, and `curl`
//! from the lab's client namespace (the web service answers `node=<hostname>`).
//! Timers are lowered (keepalive 0.2 s, deadtime 1 s, initdead 3 s) so each test
//! takes seconds. `on_stop_failure` is a marker script: a test never reboots.
//! Each test owns one lab and tears it down on drop (`lab down` also stops the
//! web servers: their pidfiles live in the lab dir). Without root: SKIP.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Json, Lab, NODES};

const TIMERS: [&str; 4] = ["keepalive=0.2", "warntime=0.5", "deadtime=1", "initdead=3"];
const DEADTIME: Duration = Duration::from_secs(1);
const VIP: &str = "192.168.69.100";
/// The group: the guide's VIP (with its netmask and interface) and the web service.
const HARESOURCES: &str = "debian1 IPaddr::192.168.69.100/24/eth0 apache\n";
/// Both daemons up and the group running on its preferred node: initdead, the
/// settle (deadtime) and the starts, with room for a loaded box.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// A takeover after a crash: deadtime, then the starts (the web server binds in
/// tens of ms), plus margin.
const TAKEOVER_MARGIN: Duration = Duration::from_secs(6);

/// A lab whose two nodes run the web group; None when not root.
fn group_lab(test: &str) -> Option<Lab> {
    custom_lab(test, HARESOURCES, "", &[])
}

/// A lab whose nodes run `haresources`, with `extra` appended to ha.cf and
/// `scripts` (name, text) in each node's etc (`@ETC@` and `@NODE_DIR@` replaced).
fn custom_lab(test: &str, haresources: &str, extra: &str, scripts: &[(&str, &str)]) -> Option<Lab> {
    media_lab(test, "bcast", &[], haresources, extra, scripts)
}

/// `custom_lab` with the lab's media `variant` (`bcast`, `both`...) and more
/// `lab config` overrides (`auto_failback=on`).
fn media_lab(
    test: &str,
    variant: &str,
    overrides: &[&str],
    haresources: &str,
    extra: &str,
    scripts: &[(&str, &str)],
) -> Option<Lab> {
    let lab = Lab::up(test)?;
    let mut config: Vec<&str> = TIMERS.to_vec();
    config.extend_from_slice(overrides);
    lab.config_both(variant, &config);
    let apache = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lab-web/apache");
    let lab_dir = lab.dir.display().to_string();
    for node in NODES {
        let etc = lab.dir.join(node).join("etc");
        std::fs::write(etc.join("haresources"), haresources).unwrap();
        let node_dir = lab.dir.join(node).display().to_string();
        let fill = |t: &str| {
            t.replace("@ETC@", &etc.display().to_string())
                .replace("@NODE_DIR@", &node_dir)
        };
        std::fs::create_dir_all(etc.join("resource.d")).unwrap();
        for (name, text) in scripts {
            write_script(&etc.join(name), &fill(text));
        }
        let marker = lab.dir.join(node).join("escalated");
        let escalate = etc.join("escalate");
        write_script(
            &escalate,
            &format!("#!/bin/sh\ntouch {}\n", marker.display()),
        );
        let mut ha = std::fs::read_to_string(etc.join("ha.cf")).unwrap();
        ha.push_str(&format!("on_stop_failure {}\n", escalate.display()));
        ha.push_str(&fill(extra));
        std::fs::write(etc.join("ha.cf"), ha).unwrap();
        // Pidfiles under the lab dir: `lab down` stops what a test leaves behind.
        write_script(
            &etc.join("resource.d/apache"),
            &format!(
                "#!/bin/sh\nLAB_WEB_RUN_DIR={lab_dir}/pids LAB_WEB_LOG={lab_dir}/{node}/log/lab-web.log \
                 exec {} \"$@\"\n",
                apache.display()
            ),
        );
    }
    for node in NODES {
        lab.start(node);
    }
    Some(lab)
}

fn write_script(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The first group's `(owner, state)` in a status.
fn group(j: &Json) -> Result<(String, String), String> {
    let groups = j
        .get("groups")
        .and_then(Json::as_array)
        .ok_or("no groups")?;
    let g = groups.first().ok_or("no group")?;
    let s = |k: &str| g.get(k).and_then(Json::as_str).unwrap_or("?").to_string();
    Ok((s("owner"), s("state")))
}

/// Waits until `node` runs the group itself.
fn wait_running(lab: &Lab, node: &str, timeout: Duration) -> Json {
    lab.wait_status(node, "runs the group", timeout, |j| match group(j)? {
        (owner, state) if owner == node && state == "Running" => Ok(()),
        other => Err(format!("group {other:?}")),
    })
}

/// Whether `node`'s namespace carries the VIP.
fn has_vip(lab: &Lab, node: &str) -> bool {
    let out = lab
        .in_ns(node, "ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains(&format!("inet {VIP}/"))
}

/// `curl http://VIP/` from the client namespace: the answer, or why not.
fn curl_vip(lab: &Lab) -> Result<String, String> {
    let out = lab
        .in_ns("client", "curl")
        .args(["-s", "--max-time", "2", &format!("http://{VIP}/")])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() && !body.is_empty() {
        Ok(body)
    } else {
        Err(format!("curl {}: {body}", out.status))
    }
}

/// Waits until the client gets an answer from `node` by the VIP.
fn wait_served_by(lab: &Lab, node: &str, timeout: Duration) -> String {
    common::poll(&format!("client reaches {node} by {VIP}"), timeout, || {
        let body = curl_vip(lab)?;
        if body.contains(&format!("node={node}")) {
            Ok(body)
        } else {
            Err(format!("answered by another node: {body}"))
        }
    })
}

fn output(c: &mut Command) -> String {
    String::from_utf8_lossy(&c.output().unwrap().stdout).into_owned()
}

/// `node`'s eth0 MAC address.
fn mac_of(lab: &Lab, node: &str) -> String {
    let link = output(lab.in_ns(node, "ip").args(["-o", "link", "show", "eth0"]));
    let after = link
        .split("link/ether ")
        .nth(1)
        .unwrap_or_else(|| panic!("{link}"));
    after.split(' ').next().unwrap().to_string()
}

/// `bascule CMD...` against `node`'s control socket; its stdout.
fn bascule(lab: &Lab, node: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_bascule"))
        .arg("--run-dir")
        .arg(lab.dir.join(node).join("run"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "bascule {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The preferred node takes the group at start; when it crashes, the peer has
/// the VIP and the web service within deadtime plus margin and the client gets
/// its answer from it.
#[test]
fn crash_of_the_holder_moves_vip_and_web_to_the_peer() {
    let Some(lab) = group_lab("crash_of_the_holder_moves_vip_and_web_to_the_peer") else {
        return;
    };
    wait_running(&lab, "debian1", START_TIMEOUT);
    assert!(has_vip(&lab, "debian1"), "VIP on debian1");
    assert!(!has_vip(&lab, "debian2"), "VIP only on debian1");
    wait_served_by(&lab, "debian1", Duration::from_secs(5));
    let j = lab.status("debian2").unwrap();
    assert_eq!(
        group(&j).unwrap().0,
        "debian1",
        "debian2 sees debian1 own it: {j}"
    );

    let crashed = Instant::now();
    lab.run(&["crash", "debian1"]);
    wait_running(&lab, "debian2", DEADTIME + TAKEOVER_MARGIN);
    assert!(has_vip(&lab, "debian2"), "VIP moved to debian2");
    wait_served_by(&lab, "debian2", Duration::from_secs(5));
    let took = crashed.elapsed();
    assert!(took <= DEADTIME + TAKEOVER_MARGIN, "takeover took {took:?}");
    // The gratuitous ARP: the client's entry for the VIP is debian2's MAC.
    let mac = mac_of(&lab, "debian2");
    let neigh = output(lab.in_ns("client", "ip").args(["neigh", "show", VIP]));
    assert!(
        neigh.contains(&mac),
        "client ARP {neigh:?}, debian2 eth0 is {mac}"
    );
    let from = 0;
    lab.wait_log(
        "debian2",
        from,
        &["group_state", "to=Running", "reason=started"],
        Duration::from_secs(1),
    );
    assert!(!lab.dir.join("debian2/escalated").exists(), "no escalation");
}

/// `bascule standby` on the holder releases the group; the peer starts it and
/// the client is served by the peer.
#[test]
fn standby_on_the_holder_moves_the_group() {
    let Some(lab) = group_lab("standby_on_the_holder_moves_the_group") else {
        return;
    };
    wait_running(&lab, "debian1", START_TIMEOUT);
    wait_served_by(&lab, "debian1", Duration::from_secs(5));
    let released = Instant::now();
    let reply = bascule(&lab, "debian1", &["standby"]);
    assert!(reply.contains("ok: standby all"), "{reply}");
    wait_running(&lab, "debian2", Duration::from_secs(8));
    lab.wait_status(
        "debian1",
        "released the group",
        Duration::from_secs(2),
        |j| match group(j)? {
            (owner, state) if owner == "debian2" && state == "Stopped" => Ok(()),
            other => Err(format!("group {other:?}")),
        },
    );
    // A planned switchover: the stops, one heartbeat, the starts (no deadtime).
    let took = released.elapsed();
    assert!(took < Duration::from_secs(3), "switchover took {took:?}");
    assert!(!has_vip(&lab, "debian1"), "VIP gone from debian1");
    assert!(has_vip(&lab, "debian2"), "VIP on debian2");
    wait_served_by(&lab, "debian2", Duration::from_secs(5));
    let text = bascule(&lab, "debian2", &["status"]);
    assert!(
        text.contains("group: IPaddr::192.168.69.100/24/eth0"),
        "{text}"
    );
    assert!(text.contains("apache=running"), "{text}");
}

/// With `fence` configured, the survivor runs the fence command (told which peer
/// to shoot) and takes over only after it succeeded.
#[test]
fn crash_with_fence_fences_then_takes_over() {
    let fence = "#!/bin/sh\necho \"$BASCULE_PEER $BASCULE_NODE\" >@NODE_DIR@/fenced\n";
    let Some(lab) = custom_lab(
        "crash_with_fence_fences_then_takes_over",
        HARESOURCES,
        "fence @ETC@/fence\nfence_delay 0\n",
        &[("fence", fence)],
    ) else {
        return;
    };
    wait_running(&lab, "debian1", START_TIMEOUT);
    let from = lab.mark("debian2");
    lab.run(&["crash", "debian1"]);
    wait_running(&lab, "debian2", DEADTIME + TAKEOVER_MARGIN);
    let marker = std::fs::read_to_string(lab.dir.join("debian2/fenced")).unwrap();
    assert_eq!(marker.trim(), "debian1 debian2");
    let log = lab.log("debian2");
    let at = |pat: &[&str]| {
        log.iter()
            .skip(from)
            .position(|l| common::has_tokens(l, pat))
            .unwrap_or_else(|| panic!("no {pat:?} in {log:#?}"))
    };
    let fenced = at(&["fence", "result=ok"]);
    assert!(at(&["fence_start"]) < fenced);
    assert!(fenced < at(&["group_state", "to=Starting", "reason=peer_dead"]));
    wait_served_by(&lab, "debian2", Duration::from_secs(5));
}

/// A resource that cannot be stopped: after `stop_retries` the group is
/// Blocked, `on_stop_failure` runs (a marker here, never a reboot), and the peer
/// does not start the group.
#[test]
fn stop_failure_blocks_and_escalates() {
    let stuck = "#!/bin/sh\ncase $1 in\n  start) touch @NODE_DIR@/stuck ;;\n  stop) exit 1 ;;\n  \
                 status) [ -e @NODE_DIR@/stuck ] || exit 3 ;;\nesac\n";
    let Some(lab) = custom_lab(
        "stop_failure_blocks_and_escalates",
        "debian1 stuck\n",
        "stop_retries 1\n",
        &[("resource.d/stuck", stuck)],
    ) else {
        return;
    };
    wait_running(&lab, "debian1", START_TIMEOUT);
    bascule(&lab, "debian1", &["standby"]);
    lab.wait_log(
        "debian1",
        0,
        &["group_state", "to=Blocked", "reason=stop_failed"],
        Duration::from_secs(10),
    );
    lab.wait_log(
        "debian1",
        0,
        &["escalate", "group=0"],
        Duration::from_secs(2),
    );
    common::poll("escalation marker", Duration::from_secs(5), || {
        lab.dir
            .join("debian1/escalated")
            .exists()
            .then_some(())
            .ok_or_else(|| "no marker yet".to_string())
    });
    std::thread::sleep(DEADTIME);
    let j = lab.status("debian2").unwrap();
    let (owner, state) = group(&j).unwrap();
    assert_eq!(
        state, "Stopped",
        "debian2 must not start a Blocked group: {j}"
    );
    assert_ne!(owner, "debian2", "{j}");
}

/// Both nodes ping the lab's client; when debian1 loses its public link (the
/// heartbeat still runs on the crossover), it reaches fewer ping nodes than
/// debian2 and hands the group over (rule 6).
#[test]
fn ping_loss_hands_the_group_to_the_better_connected_peer() {
    let Some(lab) = custom_lab(
        "ping_loss_hands_the_group_to_the_better_connected_peer",
        HARESOURCES,
        "ping 192.168.69.10\n",
        &[],
    ) else {
        return;
    };
    wait_running(&lab, "debian1", START_TIMEOUT);
    lab.run(&["cut", "debian1", "eth0"]);
    wait_running(&lab, "debian2", Duration::from_secs(8));
    lab.wait_log(
        "debian1",
        0,
        &["group_state", "from=Running", "to=Stopping", "reason=ping"],
        Duration::from_secs(1),
    );
    wait_served_by(&lab, "debian2", Duration::from_secs(5));
}

/// SIGTERM on the holder releases the group before the daemon exits: the peer
/// starts it on the offer (no deadtime wait) and the stopped node keeps no VIP.
#[test]
fn sigterm_releases_the_group_before_exit() {
    let Some(lab) = group_lab("sigterm_releases_the_group_before_exit") else {
        return;
    };
    wait_running(&lab, "debian1", START_TIMEOUT);
    let stopped = Instant::now();
    lab.run(&["stop", "debian1"]);
    assert!(
        !has_vip(&lab, "debian1"),
        "debian1 released its VIP before exiting"
    );
    let log = lab.log("debian1");
    let at = |pat: &[&str]| log.iter().position(|l| common::has_tokens(l, pat));
    let released = at(&["group_state", "to=Stopped", "reason=stopped"]);
    assert!(released.is_some(), "{log:#?}");
    assert!(released < at(&["shutdown", "signal=15"]), "{log:#?}");
    wait_running(&lab, "debian2", Duration::from_secs(5));
    wait_served_by(&lab, "debian2", Duration::from_secs(5));
    let took = stopped.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "handover on SIGTERM took {took:?}"
    );
}

/// A fence command that fails blocks the takeover: the survivor retries it and
/// never starts the group of a peer it could not fence.
#[test]
fn failing_fence_blocks_the_takeover() {
    let Some(lab) = custom_lab(
        "failing_fence_blocks_the_takeover",
        HARESOURCES,
        "fence @ETC@/fence\nfence_delay 0\n",
        &[("fence", "#!/bin/sh\necho 'PDU unreachable' >&2\nexit 1\n")],
    ) else {
        return;
    };
    wait_running(&lab, "debian1", START_TIMEOUT);
    let from = lab.mark("debian2");
    lab.run(&["crash", "debian1"]);
    lab.wait_log(
        "debian2",
        from,
        &["fence", "result=failed"],
        DEADTIME + TAKEOVER_MARGIN,
    );
    std::thread::sleep(Duration::from_secs(2));
    let j = lab.status("debian2").unwrap();
    assert_eq!(
        group(&j).unwrap().1,
        "Stopped",
        "no takeover without a fence: {j}"
    );
    assert!(!has_vip(&lab, "debian2"), "no VIP on debian2");
    assert!(
        lab.grep("debian2", from, &["group_state", "to=Starting"])
            .is_empty(),
        "debian2 started the group"
    );
}

/// A resource that cannot start on debian1: debian1 rolls back what it started
/// (the VIP) in reverse order, backs off, and debian2 takes the group.
#[test]
fn start_failure_rolls_back_and_the_peer_takes_over() {
    let broken = "#!/bin/sh\ncase $1 in\n  start) [ \"$(hostname)\" = debian1 ] && \
                  { echo 'broken on debian1' >&2; exit 1; }; touch @NODE_DIR@/up ;;\n  \
                  stop) rm -f @NODE_DIR@/up ;;\n  status) [ -e @NODE_DIR@/up ] || exit 3 ;;\nesac\n";
    let Some(lab) = custom_lab(
        "start_failure_rolls_back_and_the_peer_takes_over",
        "debian1 IPaddr::192.168.69.100/24/eth0 broken\n",
        "",
        &[("resource.d/broken", broken)],
    ) else {
        return;
    };
    wait_running(&lab, "debian2", START_TIMEOUT);
    let failed = lab.wait_log(
        "debian1",
        0,
        &[
            "takeover_step",
            "resource=broken",
            "op=start",
            "result=failed",
        ],
        Duration::from_secs(1),
    );
    assert!(failed.contains("stderr=\"broken on debian1\""), "{failed}");
    lab.wait_log(
        "debian1",
        0,
        &[
            "takeover_step",
            "resource=IPaddr::192.168.69.100/24/eth0",
            "op=stop",
            "result=ok",
        ],
        Duration::from_secs(1),
    );
    lab.wait_log(
        "debian1",
        0,
        &["group_state", "to=Failed", "reason=rolled_back"],
        Duration::from_secs(1),
    );
    assert!(!has_vip(&lab, "debian1"), "rolled back");
    assert!(has_vip(&lab, "debian2"), "taken over");
}

/// The group's VIP holders, read with `ip addr` in both nodes' namespaces.
fn vip_holders(lab: &Lab) -> Vec<&'static str> {
    NODES.into_iter().filter(|n| has_vip(lab, n)).collect()
}

/// Waits until exactly one node holds the VIP, both statuses name it the owner
/// and it stays so for `stable`; returns that node.
fn wait_single_owner(lab: &Lab, timeout: Duration, stable: Duration) -> &'static str {
    let mut since: Option<(Instant, &'static str)> = None;
    common::poll("exactly one VIP holder, agreed and stable", timeout, || {
        let holders = vip_holders(lab);
        let agreed = match holders.as_slice() {
            [one] => NODES.iter().all(|n| {
                lab.status(n)
                    .ok()
                    .and_then(|j| group(&j).ok())
                    .is_some_and(|(owner, _)| owner == *one)
            }),
            _ => false,
        };
        if !agreed {
            since = None;
            return Err(format!("VIP on {holders:?}"));
        }
        let one = holders[0];
        match since {
            Some((t, n)) if n == one && t.elapsed() >= stable => Ok(one),
            Some((_, n)) if n == one => Err(format!("{one} alone, not yet for {stable:?}")),
            _ => {
                since = Some((Instant::now(), one));
                Err(format!("{one} alone since now"))
            }
        }
    })
}

/// PID of the lab web server in `node`'s namespace (its pidfile is named after
/// the netns inode, see scripts/lab-web/apache), if one runs.
fn web_pid(lab: &Lab, node: &str) -> Option<i32> {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(format!("/run/netns/{}", lab.ns(node)))
        .ok()?
        .ino();
    let text = std::fs::read_to_string(lab.dir.join(format!("pids/net-{ino}.pid"))).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

/// Kills `node`'s web server behind the daemon's back (SIGKILL, by the PID of
/// its pidfile: a process this lab started); returns the PID killed.
fn kill_web(lab: &Lab, node: &str) -> i32 {
    let pid = web_pid(lab, node).unwrap_or_else(|| panic!("no web server on {node}"));
    // SAFETY: kill(2) has no memory preconditions; the PID is the lab's server.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "kill {pid}");
    common::poll(
        "the killed web server is gone",
        Duration::from_secs(2),
        || {
            let gone = std::fs::read_to_string(format!("/proc/{pid}/status")).map_or(true, |s| {
                s.lines()
                    .any(|l| l.starts_with("State:") && l.contains('Z'))
            });
            gone.then_some(()).ok_or_else(|| format!("{pid} alive"))
        },
    );
    pid
}

/// Freeze (SIGSTOP) of the holder for longer than deadtime: the peer takes
/// over. After the thaw the two see each other and settle on one holder of the
/// VIP within a bound, and the client is served by it.
#[test]
fn freeze_of_the_holder_moves_the_group_and_the_thaw_keeps_one_owner() {
    let Some(lab) = group_lab("freeze_of_the_holder_moves_the_group_and_the_thaw_keeps_one_owner")
    else {
        return;
    };
    wait_running(&lab, "debian1", START_TIMEOUT);
    wait_served_by(&lab, "debian1", Duration::from_secs(5));
    lab.run(&["freeze", "debian1"]);
    wait_running(&lab, "debian2", DEADTIME + TAKEOVER_MARGIN);
    assert!(has_vip(&lab, "debian2"), "VIP on debian2");
    wait_served_by(&lab, "debian2", Duration::from_secs(5));
    let thawed = Instant::now();
    lab.run(&["thaw", "debian1"]);
    let owner = wait_single_owner(&lab, Duration::from_secs(8), Duration::from_secs(2));
    eprintln!(
        "after the thaw {owner} keeps the group ({:?})",
        thawed.elapsed()
    );
    assert_eq!(
        owner, "debian1",
        "rule 3: the preferred node keeps the group"
    );
    // The client's ARP entry pointed at debian2: the keeper announced again.
    wait_served_by(&lab, owner, Duration::from_secs(3));
    assert_eq!(vip_holders(&lab), [owner], "still one holder");
    for node in NODES {
        assert!(
            !lab.dir.join(node).join("escalated").exists(),
            "no escalation on {node}"
        );
    }
}

/// Crash of debian1, debian2 takes over, debian1 comes back: returns the lab
/// with debian1's daemon started again and seeing its peer.
fn crash_and_return(test: &str, auto_failback: &str) -> Option<Lab> {
    let lab = media_lab(test, "bcast", &[auto_failback], HARESOURCES, "", &[])?;
    wait_running(&lab, "debian1", START_TIMEOUT);
    lab.run(&["crash", "debian1"]);
    wait_running(&lab, "debian2", DEADTIME + TAKEOVER_MARGIN);
    wait_served_by(&lab, "debian2", Duration::from_secs(5));
    // The crashed node's VIP and web server died with it (a reboot).
    lab.in_ns("debian1", "ip")
        .args(["addr", "del", &format!("{VIP}/24"), "dev", "eth0"])
        .status()
        .unwrap();
    if web_pid(&lab, "debian1").is_some() {
        kill_web(&lab, "debian1");
    }
    lab.run(&["revive", "debian1"]);
    lab.start("debian1");
    lab.wait_all_up("debian1", &[], Duration::from_secs(5));
    Some(lab)
}

/// auto_failback on: the preferred node, back after a crash, gets its group back
/// (the other stops it first); the client is served by it.
#[test]
fn auto_failback_on_moves_the_group_back_to_the_preferred_node() {
    let Some(lab) = crash_and_return(
        "auto_failback_on_moves_the_group_back_to_the_preferred_node",
        "auto_failback=on",
    ) else {
        return;
    };
    wait_running(&lab, "debian1", Duration::from_secs(10));
    lab.wait_status(
        "debian2",
        "released the group",
        Duration::from_secs(2),
        |j| match group(j)? {
            (owner, state) if owner == "debian1" && state == "Stopped" => Ok(()),
            other => Err(format!("group {other:?}")),
        },
    );
    assert_eq!(vip_holders(&lab), ["debian1"]);
    wait_served_by(&lab, "debian1", Duration::from_secs(5));
}

/// auto_failback off: the preferred node comes back and leaves the group on the
/// node that runs it.
#[test]
fn auto_failback_off_leaves_the_group_where_it_runs() {
    let Some(lab) = crash_and_return(
        "auto_failback_off_leaves_the_group_where_it_runs",
        "auto_failback=off",
    ) else {
        return;
    };
    lab.wait_status(
        "debian1",
        "sees debian2 own it",
        Duration::from_secs(5),
        |j| match group(j)? {
            (owner, state) if owner == "debian2" && state == "Stopped" => Ok(()),
            other => Err(format!("group {other:?}")),
        },
    );
    // initdead and the settle are past by then: a failback would have begun.
    std::thread::sleep(Duration::from_secs(5));
    let j = lab.status("debian1").unwrap();
    assert_eq!(
        group(&j).unwrap(),
        ("debian2".into(), "Stopped".into()),
        "{j}"
    );
    let j = lab.status("debian2").unwrap();
    assert_eq!(
        group(&j).unwrap(),
        ("debian2".into(), "Running".into()),
        "{j}"
    );
    assert_eq!(vip_holders(&lab), ["debian2"]);
    assert!(
        lab.grep("debian1", 0, &["group_state", "to=Starting"])
            .len()
            == 1,
        "debian1 started the group only at the first start"
    );
    wait_served_by(&lab, "debian2", Duration::from_secs(3));
}

/// scripts/probe-http running in the client namespace.
struct Probe {
    child: std::process::Child,
}

impl Probe {
    /// Starts the probe (`--fault-file` marks the instant measured from); waits
    /// until it has had good answers in a row.
    fn start(lab: &Lab, fault_file: &Path, duration_s: u32) -> Probe {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/probe-http");
        let ready = lab.dir.join("probe.ready");
        let child = lab
            .in_ns("client", "python3")
            .arg(script)
            .args(["--duration", &duration_s.to_string(), "--after-new-s", "2"])
            .arg("--fault-file")
            .arg(fault_file)
            .arg("--ready-file")
            .arg(&ready)
            .arg("--log")
            .arg(lab.dir.join("probe.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let probe = Probe { child };
        common::poll("probe ready", Duration::from_secs(5), || {
            ready.exists().then_some(()).ok_or("not yet".to_string())
        });
        probe
    }

    /// Waits for the probe's end; its JSON summary.
    fn finish(mut self) -> Json {
        use std::io::Read;
        let mut text = String::new();
        let mut stdout = self.child.stdout.take().expect("piped stdout");
        stdout.read_to_string(&mut text).unwrap();
        self.child.wait().unwrap();
        Json::parse(text.trim()).unwrap_or_else(|e| panic!("probe summary ({e}): {text}"))
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        // Only on a panic before finish(): the probe is this test's child.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Longest the client may go without an answer around the heal of a partition.
const HEAL_GAP_MAX: Duration = Duration::from_secs(1);

/// Both heartbeat links cut (crossover and serial; the public eth0 stays): with
/// no fencing both run the group (the accepted split brain). On the heal the
/// nodes agree who keeps it without stopping it there: the client, probing
/// every 20 ms, sees no gap longer than HEAL_GAP_MAX, and one node keeps the VIP.
#[test]
fn heal_after_a_partition_keeps_the_service_answering() {
    let Some(lab) = media_lab(
        "heal_after_a_partition_keeps_the_service_answering",
        "both",
        &[],
        HARESOURCES,
        "",
        &[],
    ) else {
        return;
    };
    wait_running(&lab, "debian1", START_TIMEOUT);
    lab.wait_all_up("debian2", &[], Duration::from_secs(5));
    lab.run(&["cut", "debian1", "eth1"]);
    lab.run(&["cut", "debian1", "serial"]);
    wait_running(&lab, "debian2", DEADTIME + TAKEOVER_MARGIN);
    assert_eq!(vip_holders(&lab), NODES, "split brain: both hold the VIP");
    // Let debian2's gratuitous ARPs (repeated a little later) settle the
    // client's entry, so the probe measures the heal, not the split.
    std::thread::sleep(Duration::from_secs(2));
    let fault = lab.dir.join("healed");
    let probe = Probe::start(&lab, &fault, 12);
    // The probe measures from just before the heal (the crossover alone heals
    // the membership).
    std::fs::write(&fault, "").unwrap();
    std::thread::sleep(Duration::from_millis(60));
    lab.run(&["heal", "debian1", "eth1"]);
    lab.run(&["heal", "debian1", "serial"]);
    let keeper = wait_single_owner(&lab, Duration::from_secs(8), Duration::from_secs(1));
    assert_eq!(
        keeper, "debian1",
        "rule 3: the preferred node keeps the group"
    );
    let summary = probe.finish();
    eprintln!("heal: {keeper} keeps the group; probe {summary}");
    // null: no two good answers after the heal at all.
    let gap = summary
        .get("longest_gap_s")
        .and_then(Json::as_f64)
        .unwrap_or(99.0);
    assert!(
        gap <= HEAL_GAP_MAX.as_secs_f64(),
        "the client went {gap} s without an answer around the heal: {summary}"
    );
    wait_served_by(&lab, keeper, Duration::from_secs(2));
    let loser = common::peer_of(keeper);
    lab.wait_log(
        loser,
        0,
        &[
            "group_state",
            "from=Running",
            "to=Stopping",
            "reason=conflict",
        ],
        Duration::from_secs(1),
    );
    assert!(
        lab.grep(keeper, 0, &["group_state", "from=Running", "to=Stopping"])
            .is_empty(),
        "the keeper never stopped the group"
    );
}

/// `monitor::1::2`: the web server killed behind the daemon's back is restarted
/// (status fails, stop, start); killed again, the second failure gives the group
/// to the peer.
#[test]
fn monitor_restarts_a_dead_resource_then_moves_the_group() {
    let Some(lab) = custom_lab(
        "monitor_restarts_a_dead_resource_then_moves_the_group",
        "debian1 IPaddr::192.168.69.100/24/eth0 apache monitor::1::2\n",
        "",
        &[],
    ) else {
        return;
    };
    wait_running(&lab, "debian1", START_TIMEOUT);
    wait_served_by(&lab, "debian1", Duration::from_secs(5));
    let from = lab.mark("debian1");
    let first = kill_web(&lab, "debian1");
    // The failed check logs `op=status result=stopped`, then the restart's stop
    // and start follow.
    lab.wait_log(
        "debian1",
        from,
        &[
            "takeover_step",
            "resource=apache",
            "op=status",
            "result=stopped",
        ],
        Duration::from_secs(3),
    );
    lab.wait_log(
        "debian1",
        from,
        &["takeover_step", "resource=apache", "op=stop", "result=ok"],
        Duration::from_secs(3),
    );
    lab.wait_log(
        "debian1",
        from,
        &["takeover_step", "resource=apache", "op=start", "result=ok"],
        Duration::from_secs(3),
    );
    let restarted = web_pid(&lab, "debian1").expect("web server restarted");
    assert_ne!(restarted, first);
    wait_served_by(&lab, "debian1", Duration::from_secs(3));
    let j = lab.status("debian1").unwrap();
    assert_eq!(
        group(&j).unwrap(),
        ("debian1".into(), "Running".into()),
        "{j}"
    );

    kill_web(&lab, "debian1");
    lab.wait_log(
        "debian1",
        from,
        &[
            "group_state",
            "from=Running",
            "to=Stopping",
            "reason=monitor",
        ],
        Duration::from_secs(3),
    );
    wait_running(&lab, "debian2", Duration::from_secs(6));
    assert_eq!(vip_holders(&lab), ["debian2"]);
    wait_served_by(&lab, "debian2", Duration::from_secs(3));
}
