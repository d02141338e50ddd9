//! The log catalogue in README.md is an interface: this test renders a sample of
//! every `core::Event` variant, every `TakeoverEvent` and `AgentEvent` variant
//! (each form with different keys), and the shell's `config_warning`, and checks
//! that README's catalogue section has a sample line with the same event name and
//! the same keys in the same order; and that every sample line in that section
//! names a known event. An event with several forms (`takeover_step` ok, with a
//! warning, failed) has one sample per form.
//!
//! README format: a section whose heading contains "catalogue"; in it each entry
//! carries a literal sample line in backticks, e.g.
//! `peer_state peer=debian2 from=Alive to=Dead reason=deadtime silence_ms=60000`.

use bascule::config::{ConfigWarning, FileKind};
use bascule::core::event::{FileSet, PeerReason};
use bascule::core::replication::engine::ReplEvent;
use bascule::core::replication::{ConnState, DiskState, Role};
use bascule::core::takeover::{Op, Outcome, Reason, TakeoverEvent};
use bascule::core::{Event, LinkId, LinkState, Names, PeerState};
use bascule::shell::agents::{self, AgentError, AgentEvent, ErrorKind, Finished};
use bascule::shell::agents::{ResourceState, Warning};
use bascule::shell::replication_io::DiskLine;
use bascule::wire::{AdvertState, FrameError};

/// One sample of every variant. The exhaustive match in `variant_index` makes a
/// new variant a compile error here until it gets a sample (and a README line).
fn samples() -> Vec<Event> {
    let link = LinkId(0);
    vec![
        Event::Startup {
            links: 2,
            boot_epoch: 7,
            keepalive_ms: 2000,
            warntime_ms: 10000,
            deadtime_ms: 60000,
            initdead_ms: 120000,
        },
        Event::Shutdown { signal: 15 },
        Event::LinkState {
            link,
            from: LinkState::Up,
            to: LinkState::Down,
            silence_ms: 60000,
        },
        Event::PeerState {
            from: PeerState::Alive,
            to: PeerState::Dead,
            reason: PeerReason::Deadtime,
            silence_ms: 60000,
        },
        Event::HeartbeatLate {
            link,
            interval_ms: 10500,
        },
        Event::PeerRestarted {
            old_epoch: 3,
            new_epoch: 4,
        },
        Event::ConfigMismatch {
            files: FileSet(FileSet::HARESOURCES),
        },
        Event::ConfigMatch,
        Event::FrameRejected {
            link: LinkId(1),
            reason: FrameError::Crc,
            count: 17,
            window_s: 10,
        },
        Event::LinkError {
            link: LinkId(1),
            errno: 5,
        },
        Event::LoopLag { lag_ms: 240 },
        Event::RealtimeDegraded {
            what: "mlockall",
            errno: 1,
        },
        Event::Unauthenticated,
        Event::LogDropped { count: 12 },
    ]
}

fn variant_index(e: &Event) -> usize {
    match e {
        Event::Startup { .. } => 0,
        Event::Shutdown { .. } => 1,
        Event::LinkState { .. } => 2,
        Event::PeerState { .. } => 3,
        Event::HeartbeatLate { .. } => 4,
        Event::PeerRestarted { .. } => 5,
        Event::ConfigMismatch { .. } => 6,
        Event::ConfigMatch => 7,
        Event::FrameRejected { .. } => 8,
        Event::LinkError { .. } => 9,
        Event::LoopLag { .. } => 10,
        Event::RealtimeDegraded { .. } => 11,
        Event::Unauthenticated => 12,
        Event::LogDropped { .. } => 13,
    }
}
const VARIANTS: usize = 14;

fn names() -> Names {
    Names {
        node: "debian1".into(),
        peer: "debian2".into(),
        links: vec!["eth1".into(), "ttyS0".into()],
    }
}

/// One sample of every takeover event form.
fn takeover_samples() -> Vec<TakeoverEvent> {
    let step = |op, outcome| TakeoverEvent::Step {
        group: 0,
        resource: 1,
        op,
        outcome,
        took_ms: 120,
    };
    vec![
        TakeoverEvent::GroupState {
            group: 0,
            from: AdvertState::Stopped,
            to: AdvertState::Starting,
            reason: Reason::PeerDead,
        },
        step(Op::Start, Outcome::Ok),
        step(Op::Stop, Outcome::Failed { code: 1 }),
        step(Op::Stop, Outcome::Timeout),
        TakeoverEvent::FenceStart,
        TakeoverEvent::FenceDone { ok: true },
        TakeoverEvent::Escalate { group: 0 },
    ]
}

fn takeover_index(e: &TakeoverEvent) -> usize {
    match e {
        TakeoverEvent::GroupState { .. } => 0,
        TakeoverEvent::Step { .. } => 1,
        TakeoverEvent::FenceStart => 2,
        TakeoverEvent::FenceDone { .. } => 3,
        TakeoverEvent::Escalate { .. } => 4,
    }
}
const TAKEOVER_VARIANTS: usize = 5;

/// Agent results: ok, ok with a warning, a failed command, a refusal.
fn agent_results() -> Vec<Result<Finished, AgentError>> {
    let ok = |warning| Finished {
        state: ResourceState::Running,
        warning,
        garp: None,
        took_ms: 35,
    };
    let error = |kind, cmd: Option<&str>, code| AgentError {
        kind,
        resource: "apache".into(),
        op: agents::Op::Start,
        cmd: cmd.map(String::from),
        code,
        stderr: "apache2: could not bind to port 80".into(),
        took_ms: 120,
    };
    vec![
        Ok(ok(None)),
        Ok(ok(Some(Warning::NoSendmail))),
        Err(error(
            ErrorKind::Exit,
            Some("/etc/init.d/apache start"),
            Some(1),
        )),
        Err(error(ErrorKind::Refused, None, None)),
    ]
}

/// Every agent event line (each variant, each `Step` form).
fn agent_lines() -> Vec<String> {
    let results = agent_results();
    let mut events: Vec<AgentEvent> = results
        .iter()
        .map(|result| AgentEvent::Step {
            group: "0",
            resource: "apache",
            op: agents::Op::Start,
            result,
        })
        .collect();
    events.push(AgentEvent::AlreadyActive {
        resource: "192.168.69.100",
    });
    events.push(AgentEvent::GarpFailed {
        iface: "eth0",
        vip: "192.168.69.100".parse().unwrap(),
        sent: 0,
        errors: 1,
    });
    let mut seen = [false; 3];
    for e in &events {
        seen[match e {
            AgentEvent::Step { .. } => 0,
            AgentEvent::AlreadyActive { .. } => 1,
            AgentEvent::GarpFailed { .. } => 2,
        }] = true;
    }
    assert!(seen.iter().all(|s| *s), "agent samples miss a variant");
    events
        .iter()
        .map(|e| {
            let mut s = String::new();
            e.render(&mut s).unwrap();
            s
        })
        .collect()
}

/// Every replicated-disk line: each `ReplEvent` variant and each glue line.
fn disk_lines() -> Vec<String> {
    let events = [
        ReplEvent::Role {
            from: Role::Secondary,
            to: Role::Primary,
        },
        ReplEvent::Conn {
            from: ConnState::WFConnection,
            to: ConnState::Connected,
        },
        ReplEvent::Disk {
            from: DiskState::Inconsistent,
            to: DiskState::UpToDate,
        },
        ReplEvent::PeerDisk {
            from: DiskState::DUnknown,
            to: DiskState::Inconsistent,
        },
        ReplEvent::SyncStart {
            source: true,
            full: true,
            kib: 102400,
        },
        ReplEvent::SyncDone {
            kib: 102400,
            ms: 2000,
        },
        ReplEvent::SplitBrain {
            policy: "disconnect",
            resolved: "disconnect",
        },
        ReplEvent::IoError {
            op: "write",
            offset: 4096,
        },
        ReplEvent::Note {
            name: "verify_done",
            detail: "3 blocks differ".into(),
        },
    ];
    let mut seen = [false; 9];
    for e in &events {
        seen[match e {
            ReplEvent::Role { .. } => 0,
            ReplEvent::Conn { .. } => 1,
            ReplEvent::Disk { .. } => 2,
            ReplEvent::PeerDisk { .. } => 3,
            ReplEvent::SyncStart { .. } => 4,
            ReplEvent::SyncDone { .. } => 5,
            ReplEvent::SplitBrain { .. } => 6,
            ReplEvent::IoError { .. } => 7,
            ReplEvent::Note { .. } => 8,
        }] = true;
    }
    assert!(seen.iter().all(|s| *s), "ReplEvent samples miss a variant");
    let res = "repl";
    let device = "/dev/drbd0";
    let mut lines: Vec<DiskLine> = events
        .iter()
        .map(|event| DiskLine::Repl { res, event })
        .collect();
    lines.extend([
        DiskLine::Exposed {
            res,
            device,
            took_ms: 180,
        },
        DiskLine::ExposeFailed {
            res,
            device,
            error: "nbdfuse: exit 1",
        },
        DiskLine::Removed { res, device },
        DiskLine::Handler {
            res,
            handler: "split-brain",
            result: "ok",
            code: Some(0),
            took_ms: 12,
        },
        DiskLine::Command {
            res,
            command: "primary --force",
            result: Ok(()),
        },
        DiskLine::Command {
            res,
            command: "secondary",
            result: Err("mounted"),
        },
        DiskLine::Error {
            res,
            message: "no metadata",
        },
    ]);
    let mut glue = [false; 7];
    for l in &lines {
        glue[match l {
            DiskLine::Repl { .. } => 0,
            DiskLine::Exposed { .. } => 1,
            DiskLine::ExposeFailed { .. } => 2,
            DiskLine::Removed { .. } => 3,
            DiskLine::Handler { .. } => 4,
            DiskLine::Command { .. } => 5,
            DiskLine::Error { .. } => 6,
        }] = true;
    }
    assert!(glue.iter().all(|s| *s), "DiskLine samples miss a variant");
    lines
        .iter()
        .map(|l| {
            let mut s = String::new();
            l.render(&mut s).unwrap();
            s
        })
        .collect()
}

/// Every rendered sample line: each Event variant, the takeover and agent
/// events, then config_warning.
fn rendered() -> Vec<String> {
    let names = names();
    let mut lines: Vec<String> = samples()
        .iter()
        .map(|e| {
            let mut s = String::new();
            e.render(&names, &mut s).unwrap();
            s
        })
        .collect();
    let w = ConfigWarning {
        file: FileKind::HaCf,
        line: 10,
        message: "initdead (80000 ms) is less than 2 x deadtime (60000 ms)".into(),
    };
    let mut s = String::new();
    bascule::shell::log::render_config_warning(&w, &mut s).unwrap();
    lines.push(s);
    for e in takeover_samples() {
        let mut s = String::new();
        e.render(&mut s).unwrap();
        lines.push(s);
    }
    lines.extend(agent_lines());
    lines.extend(disk_lines());
    lines
}

/// The event name and the keys of a `name k=v k="quoted v" ...` line.
fn parse_line(line: &str) -> (String, Vec<String>) {
    let (name, mut rest) = line.split_once(' ').unwrap_or((line, ""));
    let mut keys = Vec::new();
    while !rest.is_empty() {
        rest = rest.trim_start();
        let Some(eq) = rest.find('=') else {
            panic!("no key=value in {line:?} at {rest:?}")
        };
        keys.push(rest[..eq].to_string());
        rest = &rest[eq + 1..];
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut end = None;
            let mut escaped = false;
            for (i, c) in quoted.char_indices() {
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let end = end.unwrap_or_else(|| panic!("unterminated quote in {line:?}"));
            rest = &quoted[end + 1..];
        } else {
            rest = rest.find(' ').map_or("", |sp| &rest[sp..]);
        }
    }
    (name.to_string(), keys)
}

fn is_event_word(w: &str) -> bool {
    !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c == '_')
}

/// `event key=...`: an event word, then a `key=` token (so commands in backticks,
/// like a grep example, are not taken for samples).
fn is_sample(span: &str) -> bool {
    let mut words = span.split(' ');
    let first = words.next().unwrap_or("");
    let second = words.next().unwrap_or("");
    let key = second.split_once('=').map_or("", |(k, _)| k);
    is_event_word(first) && is_event_word(key)
}

/// The backticked sample lines of README's catalogue section.
fn catalogue_samples() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let readme = std::fs::read_to_string(path).expect("README.md");
    let mut in_section: Option<usize> = None;
    let mut samples = Vec::new();
    for line in readme.lines() {
        let level = line.chars().take_while(|c| *c == '#').count();
        if level > 0 && line[level..].starts_with(' ') {
            if line.to_lowercase().contains("catalogue") {
                in_section = Some(level);
                continue;
            }
            if in_section.is_some_and(|l| level <= l) {
                in_section = None;
            }
        }
        if in_section.is_none() {
            continue;
        }
        for (i, span) in line.split('`').enumerate() {
            if i % 2 == 1 && is_sample(span) {
                samples.push(span.to_string());
            }
        }
        // An event without keys (`fence_start`): the whole sample cell.
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() >= 3 {
            let last = cells[cells.len() - 2];
            let word = last.strip_prefix('`').and_then(|l| l.strip_suffix('`'));
            if let Some(word) = word.filter(|w| is_event_word(w)) {
                samples.push(word.to_string());
            }
        }
    }
    assert!(
        !samples.is_empty(),
        "README.md has no catalogue section with sample lines"
    );
    samples
}

#[test]
fn every_variant_has_a_sample() {
    let mut seen = [false; VARIANTS];
    for e in samples() {
        seen[variant_index(&e)] = true;
    }
    assert!(
        seen.iter().all(|s| *s),
        "samples() misses a variant: {seen:?}"
    );
}

#[test]
fn every_takeover_variant_has_a_sample() {
    let mut seen = [false; TAKEOVER_VARIANTS];
    for e in takeover_samples() {
        seen[takeover_index(&e)] = true;
    }
    assert!(
        seen.iter().all(|s| *s),
        "takeover samples miss a variant: {seen:?}"
    );
}

#[test]
fn every_event_is_in_the_readme_catalogue_with_the_same_keys() {
    let catalogue: Vec<(String, Vec<String>)> =
        catalogue_samples().iter().map(|s| parse_line(s)).collect();
    for line in rendered() {
        let (name, keys) = parse_line(&line);
        let forms: Vec<&Vec<String>> = catalogue
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, k)| k)
            .collect();
        assert!(
            !forms.is_empty(),
            "README catalogue has no sample for `{name}`; the code renders:\n  `{line}`"
        );
        assert!(
            forms.contains(&&keys),
            "keys of `{name}` match no README sample {forms:?}; the code renders:\n  `{line}`"
        );
    }
}

#[test]
fn every_readme_sample_is_a_known_event() {
    let known: Vec<String> = rendered().iter().map(|l| parse_line(l).0).collect();
    for sample in catalogue_samples() {
        let (name, _) = parse_line(&sample);
        assert!(
            known.contains(&name),
            "README catalogue names unknown event `{name}`: `{sample}`"
        );
    }
}

#[test]
fn print_rendered_samples() {
    // `cargo test --test catalogue -- --nocapture print` shows the lines to paste.
    for line in rendered() {
        println!("`{line}`");
    }
}

#[test]
fn parse_line_handles_quotes() {
    let (name, keys) = parse_line("link_error link=eth1 errno=19 error=\"No such device\"");
    assert_eq!(name, "link_error");
    assert_eq!(keys, ["link", "errno", "error"]);
}
