//! End-to-end membership tests: two real daemons in the network-namespace lab
//! (`scripts/lab`), over a veth crossover (`eth1`), the public bridge (`eth0`) and
//! a paced 9600-baud null-modem (`ttyS0`).
//!
//! Layer: black-box tests of the `bascule` binary. They use the guide's files
//! verbatim (`scripts/lab config`), with the timers lowered in the lab's copy so
//! that a test takes seconds: keepalive 0.2 s, warntime 0.5 s, deadtime 1 s,
//! initdead 3 s. They observe only what an operator sees: `status --json`, the
//! log lines of the catalogue, and the timing of those lines.
//! Each test owns one lab (unique namespace prefix) and tears it down on drop,
//! even when it fails. Without root they print one SKIP line and pass.
//! Slow ones say so in their doc comment; the whole file takes about a minute
//! with `--test-threads=2`.

mod common;

use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::{all_up, field, line_time_ms, link, now_ms, peer_of, Json, Lab, NODES};

/// The lowered timers (the guide's are 2 / 10 / 60 / 80 s).
const TIMERS: [&str; 4] = ["keepalive=0.2", "warntime=0.5", "deadtime=1", "initdead=3"];
const KEEPALIVE_MS: u64 = 200;
const DEADTIME_MS: u64 = 1000;
/// Log timestamps are whole ms and both clocks are read by different processes.
const CLOCK_SLACK_MS: u64 = 20;
/// Start-up to both links up: a few keepalives, generous for a loaded CI box.
const UP_TIMEOUT: Duration = Duration::from_secs(10);
/// A link or the peer declared down: deadtime plus margin.
const DOWN_TIMEOUT: Duration = Duration::from_secs(4);
/// `frame_rejected` is summarised once per 10 s window per link and reason.
const REJECT_LOG_TIMEOUT: Duration = Duration::from_secs(15);
/// Link names of the `both` variant: `bcast eth1` and `serial /dev/ttyS0`.
const BOTH_LINKS: [&str; 2] = ["eth1", "ttyS0"];

/// A lab with both daemons running `variant` with `timers`, each seeing the
/// other on every one of `links`. None when not root.
fn pair(test: &str, variant: &str, timers: &[&str], links: &[&str]) -> Option<Lab> {
    let lab = Lab::up(test)?;
    lab.config_both(variant, timers);
    lab.start_both();
    for node in NODES {
        lab.wait_all_up(node, links, UP_TIMEOUT);
    }
    Some(lab)
}

fn peer_state(j: &Json) -> String {
    j.get("peer.state")
        .and_then(Json::as_str)
        .unwrap_or("?")
        .to_string()
}

fn daemon_pid(lab: &Lab, node: &str) -> i32 {
    lab.run(&["pid", node])
        .trim()
        .parse()
        .expect("lab pid prints a PID")
}

fn signal(pid: i32, sig: libc::c_int) {
    // SAFETY: kill has no memory preconditions; the PID is our lab's daemon.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

/// Sum of `links[name].rejected` over every reason.
fn rejected_total(j: &Json, name: &str) -> u64 {
    let Some(obj) = link(j, name)
        .and_then(|l| l.get("rejected"))
        .and_then(Json::as_object)
    else {
        return 0;
    };
    obj.iter().filter_map(|(_, v)| v.as_f64()).sum::<f64>() as u64
}

fn rejected(j: &Json, name: &str, reason: &str) -> u64 {
    link(j, name)
        .and_then(|l| l.get("rejected"))
        .and_then(|r| r.get(reason))
        .and_then(Json::as_f64)
        .unwrap_or(0.0) as u64
}

/// Asserts that neither node logged the peer dead after `marks`.
#[track_caller]
fn assert_no_death(lab: &Lab, marks: [usize; 2], why: &str) {
    for (node, mark) in NODES.iter().zip(marks) {
        let dead = lab.grep(node, mark, &["peer_state", "to=Dead"]);
        assert!(
            dead.is_empty(),
            "{why}: {node} declared its peer dead: {dead:?}"
        );
    }
}

fn marks(lab: &Lab) -> [usize; 2] {
    [lab.mark(NODES[0]), lab.mark(NODES[1])]
}

#[test]
fn both_links_up_on_both_nodes_with_peer_alive() {
    let Some(lab) = pair("both_links_up", "both", &TIMERS, &BOTH_LINKS) else {
        return;
    };
    for node in NODES {
        let j = lab.status(node).unwrap();
        assert_eq!(j.get("node").and_then(Json::as_str), Some(node), "{j}");
        assert_eq!(
            j.get("peer.name").and_then(Json::as_str),
            Some(peer_of(node)),
            "{j}"
        );
        let links = j.get("links").and_then(Json::as_array).expect("links[]");
        assert_eq!(
            links.len(),
            BOTH_LINKS.len(),
            "one entry per configured medium: {j}"
        );
        for name in BOTH_LINKS {
            let l = link(&j, name).unwrap();
            let rx_ok = l.get("rx_ok").and_then(Json::as_f64).unwrap_or(0.0);
            let age = l
                .get("last_rx_age_ms")
                .and_then(Json::as_f64)
                .expect("a frame was received");
            assert!(rx_ok >= 1.0, "{node} {name}: rx_ok={rx_ok}");
            assert!(
                age < DEADTIME_MS as f64,
                "{node} {name}: last frame {age} ms ago"
            );
        }
        assert!(
            !lab.grep(node, 0, &["startup"]).is_empty(),
            "{node} logged no startup line"
        );
        for name in BOTH_LINKS {
            let up = format!("link={name}");
            assert!(
                !lab.grep(node, 0, &["link_state", &up, "to=Up"]).is_empty(),
                "{node}: no {name} up line"
            );
        }
    }
}

/// The guide's two `ha.cf` files, unchanged but for the timers: `bcast eth1`;
/// then `baud 9600` + `bcast eth0` + `serial /dev/ttyS0`.
#[test]
fn guide_variants_bring_their_links_up() {
    let Some(lab) = pair("guide_variants", "bcast", &TIMERS, &["eth1"]) else {
        return;
    };
    for node in NODES {
        lab.run(&["stop", node]);
    }
    lab.config_both("serial", &TIMERS);
    lab.start_both();
    for node in NODES {
        let j = lab.wait_all_up(node, &["eth0", "ttyS0"], UP_TIMEOUT);
        let names: Vec<_> = j
            .get("links")
            .and_then(Json::as_array)
            .unwrap()
            .iter()
            .filter_map(|l| l.get("name"))
            .collect();
        assert_eq!(
            names.len(),
            2,
            "serial variant has eth0 and ttyS0 only: {j}"
        );
    }
}

/// Cuts `link` of debian1 alone: both sides log it down, nobody dies, it comes back.
fn cut_one_link_keeps_peer(test: &str, cut: &str, name: &str) {
    let Some(lab) = pair(test, "both", &TIMERS, &BOTH_LINKS) else {
        return;
    };
    let m = marks(&lab);
    lab.run(&["cut", "debian1", cut]);
    let link_eq = format!("link={name}");
    for (node, mark) in NODES.iter().zip(m) {
        lab.wait_log(
            node,
            mark,
            &["link_state", &link_eq, "to=Down"],
            DOWN_TIMEOUT,
        );
    }
    sleep(Duration::from_millis(DEADTIME_MS + 500));
    assert_no_death(&lab, m, &format!("{name} cut alone"));
    let other = BOTH_LINKS.iter().find(|l| **l != name).unwrap();
    for node in NODES {
        let j = lab.status(node).unwrap();
        assert_eq!(peer_state(&j), "Alive", "{node} with {name} cut: {j}");
        all_up(&j, &[other]).unwrap_or_else(|e| panic!("{node}: {e}: {j}"));
    }
    let m = marks(&lab);
    lab.run(&["heal", "debian1", cut]);
    for (node, mark) in NODES.iter().zip(m) {
        lab.wait_log(node, mark, &["link_state", &link_eq, "to=Up"], UP_TIMEOUT);
        lab.wait_all_up(node, &BOTH_LINKS, UP_TIMEOUT);
    }
}

#[test]
fn cut_eth1_alone_keeps_peer_alive_and_logs_link_down() {
    cut_one_link_keeps_peer("cut_eth1", "eth1", "eth1");
}

#[test]
fn cut_serial_alone_keeps_peer_alive_and_logs_link_down() {
    cut_one_link_keeps_peer("cut_serial", "serial", "ttyS0");
}

#[test]
fn cut_both_links_declares_peer_dead_within_deadtime_plus_keepalive() {
    let Some(lab) = pair("cut_both", "both", &TIMERS, &BOTH_LINKS) else {
        return;
    };
    let mark = lab.mark("debian2");
    // Both cuts without spawning a shell: the relay's socket, then one `ip`.
    let t_before = now_ms();
    lab.serial("cut both");
    lab.set_link("debian1", "eth1", false);
    let t_after = now_ms();
    let line = lab.wait_log("debian2", mark, &["peer_state", "to=Dead"], DOWN_TIMEOUT);
    let t_dead = line_time_ms(&line).unwrap_or_else(|| panic!("no timestamp in {line:?}"));
    let (early, late) = (
        t_dead.saturating_sub(t_after),
        t_dead.saturating_sub(t_before),
    );
    eprintln!(
        "cut_both: peer dead {early}..{late} ms after the cut (cut took {} ms): {line}",
        t_after - t_before
    );
    assert!(
        early <= DEADTIME_MS + KEEPALIVE_MS + CLOCK_SLACK_MS,
        "dead {early} ms after the cut, want <= deadtime {DEADTIME_MS} + keepalive {KEEPALIVE_MS}: {line}"
    );
    assert!(
        late + KEEPALIVE_MS + CLOCK_SLACK_MS >= DEADTIME_MS,
        "declared dead {late} ms after the cut: sooner than deadtime allows: {line}"
    );
    let silence: u64 = field(&line, "silence_ms")
        .and_then(|v| v.parse().ok())
        .expect("silence_ms");
    assert!(
        silence >= DEADTIME_MS,
        "silence_ms={silence} < deadtime: {line}"
    );
    for name in BOTH_LINKS {
        lab.wait_log(
            "debian2",
            mark,
            &["link_state", &format!("link={name}"), "to=Down"],
            DOWN_TIMEOUT,
        );
    }
    assert_eq!(peer_state(&lab.status("debian2").unwrap()), "Dead");
}

/// Same guide files but another secret on debian1: every frame fails the MAC
/// on both sides; the peer never becomes Alive and is Dead after initdead.
#[test]
fn wrong_key_is_rejected_logged_and_peer_counts_as_dead() {
    let Some(lab) = Lab::up("wrong_key") else {
        return;
    };
    lab.config(
        "debian1",
        "both",
        &[&TIMERS[..], &["key=NotTheGuidesPassword"]].concat(),
    );
    lab.config("debian2", "both", &TIMERS);
    lab.start_both();
    for node in NODES {
        let line = lab.wait_log(
            node,
            0,
            &["frame_rejected", "reason=mac"],
            REJECT_LOG_TIMEOUT,
        );
        eprintln!("wrong_key: {node}: {line}");
        lab.wait_status(
            node,
            "peer Dead after initdead",
            DOWN_TIMEOUT,
            |j| match peer_state(j).as_str() {
                "Dead" => Ok(()),
                s => Err(format!("peer.state={s}")),
            },
        );
        let j = lab.status(node).unwrap();
        assert!(
            rejected(&j, "eth1", "mac") > 0,
            "{node}: eth1 rejected.mac not counted: {j}"
        );
    }
    for node in NODES {
        let alive = lab.grep(node, 0, &["peer_state", "to=Alive"]);
        assert!(
            alive.is_empty(),
            "{node} believed a peer with the wrong key: {alive:?}"
        );
    }
}

/// Captures one heartbeat datagram from debian1 as it arrives on debian2's eth1
/// (AF_PACKET: independent of the daemon's own socket). Prints `DST SPORT HEX`.
const CAPTURE_PY: &str = r#"
import select, socket, struct, sys, time
ETH_P_IP = 0x0800
s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
s.bind(("eth1", ETH_P_IP))
end = time.monotonic() + 5
while time.monotonic() < end:
    if not select.select([s], [], [], 0.2)[0]:
        continue
    pkt = s.recv(65535)
    ihl = (pkt[0] & 15) * 4
    if pkt[9] != 17 or socket.inet_ntoa(pkt[12:16]) != "10.0.0.1":
        continue
    sport, dport = struct.unpack("!HH", pkt[ihl:ihl + 4])
    if dport == 694:
        print(socket.inet_ntoa(pkt[16:20]), sport, pkt[ihl + 8:].hex())
        sys.exit(0)
sys.exit(1)
"#;

/// Sends a captured payload N times, 100 ms apart, from debian1's eth1, with
/// the original source port and destination.
const REPLAY_PY: &str = r#"
import socket, sys, time
dst, sport, payload, n = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth1")
s.bind(("0.0.0.0", sport))
for _ in range(n):
    s.sendto(payload, (dst, 694))
    time.sleep(0.1)
"#;

const REPLAYS: u64 = 5;

/// The guide's first ha.cf (`bcast eth1`): a heartbeat captured while debian1
/// runs, replayed after debian1 stopped, is refused as a replay and does not
/// bring debian1 back to life.
#[test]
fn replayed_frame_is_rejected_and_does_not_revive_peer() {
    let Some(lab) = pair("replay", "bcast", &TIMERS, &["eth1"]) else {
        return;
    };
    let out = lab
        .in_ns("debian2", "python3")
        .args(["-c", CAPTURE_PY])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "no heartbeat captured on eth1: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let captured = String::from_utf8(out.stdout).unwrap();
    let words: Vec<&str> = captured.split_whitespace().collect();
    assert_eq!(words.len(), 3, "capture printed {captured:?}");
    // Let newer frames arrive first: the captured one must be old news, not
    // the link's latest frame (an exact repeat of that is a duplicate, ignored).
    let rx_ok = |j: &Json| {
        link(j, "eth1")
            .and_then(|l| l.get("rx_ok"))
            .and_then(Json::as_f64)
            .unwrap_or(0.0) as u64
    };
    let seen = rx_ok(&lab.status("debian2").unwrap());
    lab.wait_status(
        "debian2",
        "two more frames after the capture",
        DOWN_TIMEOUT,
        |j| {
            if rx_ok(j) >= seen + 2 {
                Ok(())
            } else {
                Err(format!("eth1 rx_ok={}", rx_ok(j)))
            }
        },
    );

    let mark = lab.mark("debian2");
    lab.run(&["stop", "debian1"]);
    lab.wait_log("debian2", mark, &["peer_state", "to=Dead"], DOWN_TIMEOUT);
    let mark = lab.mark("debian2");
    let st = lab
        .in_ns("debian1", "python3")
        .args([
            "-c",
            REPLAY_PY,
            words[0],
            words[1],
            words[2],
            &REPLAYS.to_string(),
        ])
        .status()
        .unwrap();
    assert!(st.success(), "replay sender failed");
    let j = lab.wait_status("debian2", "replays counted", DOWN_TIMEOUT, |j| {
        let n = rejected(j, "eth1", "replay");
        if n >= REPLAYS {
            Ok(())
        } else {
            Err(format!("eth1 rejected.replay={n}"))
        }
    });
    let line = lab.wait_log(
        "debian2",
        mark,
        &["frame_rejected", "link=eth1", "reason=replay"],
        REJECT_LOG_TIMEOUT,
    );
    eprintln!("replay: {line}");
    assert_eq!(
        peer_state(&lab.status("debian2").unwrap()),
        "Dead",
        "after replays: {j}"
    );
    let alive = lab.grep("debian2", mark, &["peer_state", "to=Alive"]);
    assert!(
        alive.is_empty(),
        "a replayed frame revived the peer: {alive:?}"
    );
}

/// Slow (~25 s): a serial-only pair under a bit error rate of 1e-3 for 20 s.
/// A heartbeat is about 71 bytes on the wire (568 bits), so about 45% of the
/// frames are lost (CRC, or COBS when a delimiter is hit, which can take the
/// next frame too; measured here: 47%). The timers therefore keep fifteen
/// keepalives per deadtime (0.2 s / 3 s): a false death needs fifteen lost
/// frames in a row (p ~ 1e-5 per window). With the 1 s deadtime of the other
/// tests (five frames, p ~ 2% per window) a death in 20 s would be expected,
/// and would be no bug: `Late` is the right state under this much noise.
#[test]
fn serial_bit_errors_cost_frames_never_the_peer() {
    const BER_TIMERS: [&str; 4] = ["keepalive=0.2", "warntime=1", "deadtime=3", "initdead=6"];
    const RUN: Duration = Duration::from_secs(20);
    let Some(lab) = pair("serial_ber", "serialonly", &BER_TIMERS, &["ttyS0"]) else {
        return;
    };
    let m = marks(&lab);
    lab.serial("ber 1e-3 both");
    let start = Instant::now();
    while start.elapsed() < RUN {
        for node in NODES {
            let j = lab.status(node).unwrap();
            assert_ne!(
                peer_state(&j),
                "Dead",
                "{node} after {:?} of BER 1e-3: {j}",
                start.elapsed()
            );
        }
        sleep(Duration::from_millis(200));
    }
    assert_no_death(&lab, m, "BER 1e-3 on the only link");
    let flipped = lab.serial_counter("a>b", "flipped") + lab.serial_counter("b>a", "flipped");
    // ~100 frames of 568 bits each way at 1e-3: about 115 flips expected.
    assert!(flipped > 50, "the relay flipped only {flipped} bits");
    for node in NODES {
        let j = lab.status(node).unwrap();
        let bad = rejected_total(&j, "ttyS0");
        let damaged = rejected(&j, "ttyS0", "crc") + rejected(&j, "ttyS0", "cobs");
        eprintln!("serial_ber: {node}: {bad} frames rejected ({damaged} crc/cobs), {flipped} bits flipped: {j}");
        assert!(
            damaged > 0,
            "{node}: damaged frames not counted as crc/cobs: {j}"
        );
        let state = peer_state(&j);
        assert!(
            state == "Alive" || state == "Late",
            "{node}: peer {state}: {j}"
        );
    }
}

/// Slow (~10 s): SIGSTOP shorter than deadtime is survived; longer is a death;
/// SIGCONT brings the peer back.
#[test]
fn sigstop_shorter_than_deadtime_survives_longer_kills_sigcont_revives() {
    const SHORT_STOP: Duration = Duration::from_millis(400);
    const LONG_STOP: Duration = Duration::from_millis(DEADTIME_MS * 2);
    let Some(lab) = pair("sigstop", "both", &TIMERS, &BOTH_LINKS) else {
        return;
    };
    let pid = daemon_pid(&lab, "debian1");

    let m = marks(&lab);
    signal(pid, libc::SIGSTOP);
    sleep(SHORT_STOP);
    signal(pid, libc::SIGCONT);
    sleep(Duration::from_millis(DEADTIME_MS + 500));
    assert_no_death(&lab, m, "SIGSTOP for 400 ms < deadtime");
    assert_eq!(peer_state(&lab.status("debian2").unwrap()), "Alive");

    let mark = lab.mark("debian2");
    signal(pid, libc::SIGSTOP);
    let stopped = Instant::now();
    let line = lab.wait_log("debian2", mark, &["peer_state", "to=Dead"], DOWN_TIMEOUT);
    eprintln!(
        "sigstop: dead {:?} after SIGSTOP: {line}",
        stopped.elapsed()
    );
    sleep(LONG_STOP.saturating_sub(stopped.elapsed()));
    let mark = lab.mark("debian2");
    signal(pid, libc::SIGCONT);
    lab.wait_log("debian2", mark, &["peer_state", "to=Alive"], UP_TIMEOUT);
    for node in NODES {
        lab.wait_all_up(node, &BOTH_LINKS, UP_TIMEOUT);
    }
}

/// kill -9 with the links down (power cut) is a death; the node back with a
/// restarted daemon is recognised by its new boot generation.
#[test]
fn crash_is_death_and_restart_is_peer_restarted_with_new_epoch() {
    let Some(lab) = pair("crash", "both", &TIMERS, &BOTH_LINKS) else {
        return;
    };
    let before = lab.status("debian2").unwrap();
    let old_epoch = before
        .get("peer.epoch")
        .and_then(Json::as_f64)
        .expect("peer.epoch known") as u64;

    let mark = lab.mark("debian2");
    lab.run(&["crash", "debian1"]);
    lab.wait_log("debian2", mark, &["peer_state", "to=Dead"], DOWN_TIMEOUT);
    lab.run(&["revive", "debian1"]);
    lab.start("debian1");
    let line = lab.wait_log("debian2", mark, &["peer_restarted"], UP_TIMEOUT);
    let num = |k: &str| -> u64 {
        field(&line, k)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {line}"))
    };
    assert_eq!(num("old_epoch"), old_epoch, "{line}");
    assert!(num("new_epoch") > old_epoch, "{line}");
    lab.wait_log("debian2", mark, &["peer_state", "to=Alive"], UP_TIMEOUT);
    let j = lab.wait_all_up("debian2", &BOTH_LINKS, UP_TIMEOUT);
    assert_eq!(
        j.get("peer.epoch").and_then(Json::as_f64).map(|e| e as u64),
        Some(num("new_epoch")),
        "{j}"
    );
    lab.wait_all_up("debian1", &BOTH_LINKS, UP_TIMEOUT);
}

/// The lab's own promise: the daemon's /dev/ttyS0 is the lab's pty, never the
/// host's console, and the guide's /var/log/ha.log lands in the lab.
#[test]
fn lab_daemon_sees_its_pty_as_dev_ttys0_and_logs_into_the_lab() {
    let Some(lab) = pair("lab_safety", "serialonly", &TIMERS, &["ttyS0"]) else {
        return;
    };
    for node in NODES {
        let out = lab.run(&["exec", node, "stat", "-L", "-c", "%t:%T", "/dev/ttyS0"]);
        let major = u32::from_str_radix(out.trim().split(':').next().unwrap(), 16).unwrap();
        assert!(
            (136..=143).contains(&major),
            "{node}: /dev/ttyS0 is {out} inside, not a pty"
        );
        let host = Command::new("stat")
            .args(["-L", "-c", "%t:%T", "/dev/ttyS0"])
            .output()
            .unwrap();
        assert_ne!(
            String::from_utf8_lossy(&host.stdout).trim(),
            out.trim(),
            "the host's ttyS0 is untouched"
        );
        let hostname = lab.run(&["exec", node, "hostname"]);
        assert_eq!(hostname.trim(), node);
        let ha_log = lab.dir.join(node).join("log/ha.log");
        let text = std::fs::read_to_string(&ha_log).unwrap_or_default();
        assert!(
            text.contains("startup"),
            "{}: no startup line in the guide's logfile",
            ha_log.display()
        );
    }
}
