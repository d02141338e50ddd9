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
    let lab = Lab::up(test)?;
    lab.config_both("bcast", &TIMERS);
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
