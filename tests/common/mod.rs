//! Helpers for the end-to-end tests in network namespaces.
//!
//! Layer: test harness, outside the crate. `Lab` is a guard around `scripts/lab`:
//! it brings a private lab up with a unique prefix (tests run in parallel) and
//! always takes it down on drop, panics included. Waits poll with a timeout and
//! fail with a description of what was awaited and what was last seen, like
//! drbd-reactor's `poll_nodes`. `Json` is a small reader for `status --json`
//! (the crate has no JSON dependency, and tests must not add one).
//! Invariants: a test never touches a namespace or a process its lab did not
//! create; every wait is bounded.
#![allow(dead_code)] // each tests/*.rs uses its own subset

use std::fs;
use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Poll period of every wait: short against the 200 ms keepalive of the tests.
pub const POLL_MS: u64 = 20;
/// Labs made by this test process so far (part of the unique prefix).
static LABS: AtomicUsize = AtomicUsize::new(0);

/// `n` in base 36, lower case (lab prefixes are [a-z0-9]).
pub fn base36(mut n: u64) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(digits[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ascii")
}

/// The two servers of the guide.
pub const NODES: [&str; 2] = ["debian1", "debian2"];

/// Returns the other node's name.
pub fn peer_of(node: &str) -> &'static str {
    if node == "debian1" {
        "debian2"
    } else {
        "debian1"
    }
}

/// A running lab: namespaces, bridge, crossover, null-modem relay. Dropping it
/// runs `scripts/lab down`.
pub struct Lab {
    /// Namespace prefix, unique per lab (`b<pid base 36><n base 36>`).
    pub prefix: String,
    /// The lab's state directory.
    pub dir: PathBuf,
    script: PathBuf,
    bin: PathBuf,
    test: String,
}

/// True when this process may create network namespaces.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

impl Lab {
    /// Brings a fresh lab up for `test`, or prints one SKIP line and returns
    /// None when not root (the namespace tests need CAP_NET_ADMIN).
    pub fn up(test: &str) -> Option<Lab> {
        if !is_root() {
            println!("SKIP: needs CAP_NET_ADMIN (run as root): {test}");
            return None;
        }
        let n = LABS.fetch_add(1, Ordering::SeqCst);
        // Unique across concurrent test processes (nextest runs one process per
        // test): the whole PID, base 36 (<= 5 chars), then this process's count.
        let prefix = format!("b{}{}", base36(std::process::id() as u64), base36(n as u64));
        assert!(prefix.len() <= 8, "lab prefix too long: {prefix}");
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let lab = Lab {
            dir: PathBuf::from(format!("/tmp/bascule-lab-{prefix}")),
            prefix,
            script: root.join("scripts/lab"),
            bin: PathBuf::from(env!("CARGO_BIN_EXE_bascule")),
            test: test.to_string(),
        };
        // A lab left by a killed earlier run with the same prefix.
        let _ = lab.try_run(&["down"]);
        lab.run(&["up"]);
        eprintln!("[{test}] lab {} in {}", lab.prefix, lab.dir.display());
        Some(lab)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.script);
        c.args(args)
            .env("LAB_PREFIX", &self.prefix)
            .env("LAB_DIR", &self.dir)
            .env("BASCULE_BIN", &self.bin)
            .stdin(Stdio::null());
        c
    }

    /// Runs `scripts/lab ARGS`; returns its output whatever the exit status.
    pub fn try_run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("scripts/lab runs")
    }

    /// Runs `scripts/lab ARGS`, panics on failure; returns stdout.
    #[track_caller]
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.try_run(args);
        assert!(
            out.status.success(),
            "[{}] scripts/lab {} failed ({}):\n{}{}",
            self.test,
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes the guide's files for `node` (`lab config`).
    pub fn config(&self, node: &str, variant: &str, overrides: &[&str]) {
        let mut args = vec!["config", node, variant];
        args.extend_from_slice(overrides);
        self.run(&args);
    }

    /// Same files for both nodes.
    pub fn config_both(&self, variant: &str, overrides: &[&str]) {
        for node in NODES {
            self.config(node, variant, overrides);
        }
    }

    /// Starts the daemon of `node`; returns its PID once its control socket exists.
    pub fn start(&self, node: &str) -> u32 {
        let out = self.run(&["start", node]);
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("[{}] lab start {node} printed {out:?}", self.test))
    }

    /// Starts both daemons.
    pub fn start_both(&self) {
        for node in NODES {
            self.start(node);
        }
    }

    /// Network namespace of `node`.
    pub fn ns(&self, node: &str) -> String {
        format!("{}-{}", self.prefix, node)
    }

    /// Sets an interface of `node` down or up directly with `ip` (a few ms,
    /// for tests that time the cut).
    pub fn set_link(&self, node: &str, dev: &str, up: bool) {
        let st = Command::new("ip")
            .args([
                "-n",
                &self.ns(node),
                "link",
                "set",
                dev,
                if up { "up" } else { "down" },
            ])
            .status()
            .expect("ip runs");
        assert!(
            st.success(),
            "ip link set {dev} failed in {}",
            self.ns(node)
        );
    }

    /// Sends one command to the null-modem relay's control socket directly
    /// (no process spawn: the cut happens when this returns).
    pub fn serial(&self, cmd: &str) -> String {
        let me = self.dir.join(format!(
            "ctl-{}-{}",
            std::process::id(),
            LABS.fetch_add(1, Ordering::SeqCst)
        ));
        let sock = UnixDatagram::bind(&me).expect("bind control client");
        sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        sock.send_to(cmd.as_bytes(), self.dir.join("nullmodem.sock"))
            .expect("relay control socket");
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).expect("relay answers");
        let _ = fs::remove_file(&me);
        let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(
            !reply.starts_with("error"),
            "relay refused {cmd:?}: {reply}"
        );
        reply
    }

    /// The relay's counter `key` for direction `dir` (`a>b`: debian1 -> debian2).
    pub fn serial_counter(&self, dir: &str, key: &str) -> u64 {
        let stats = self.serial("stats");
        let line = stats
            .lines()
            .find(|l| l.starts_with(dir))
            .expect("direction in stats");
        field(line, key)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {key} in {line}")) as u64
    }

    /// `bascule status --json` for `node`, parsed.
    pub fn status(&self, node: &str) -> Result<Json, String> {
        let out = Command::new(&self.bin)
            .arg("--node")
            .arg(node)
            .arg("--run-dir")
            .arg(self.dir.join(node).join("run"))
            .arg("--state-dir")
            .arg(self.dir.join(node).join("state"))
            .arg("--config-dir")
            .arg(self.dir.join(node).join("etc"))
            .args(["status", "--json"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "status {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        Json::parse(text.trim()).map_err(|e| format!("bad JSON ({e}): {text}"))
    }

    /// The daemon's log (stderr), every line so far.
    pub fn log(&self, node: &str) -> Vec<String> {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(self.dir.join(node).join("log/daemon.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s.lines().map(str::to_string).collect()
    }

    /// A position in `node`'s log: later searches look only after it.
    pub fn mark(&self, node: &str) -> usize {
        self.log(node).len()
    }

    /// Lines of `node`'s log after `from` that hold every token of `pat`.
    pub fn grep(&self, node: &str, from: usize, pat: &[&str]) -> Vec<String> {
        self.log(node)
            .into_iter()
            .skip(from)
            .filter(|l| has_tokens(l, pat))
            .collect()
    }

    /// Waits for a line holding every token of `pat` after line `from`.
    #[track_caller]
    pub fn wait_log(&self, node: &str, from: usize, pat: &[&str], timeout: Duration) -> String {
        let what = format!("[{}] {node} logs {pat:?}", self.test);
        poll(&what, timeout, || {
            self.grep(node, from, pat)
                .into_iter()
                .next()
                .ok_or_else(|| {
                    let log = self.log(node);
                    let tail: Vec<_> = log
                        .iter()
                        .skip(log.len().saturating_sub(8))
                        .cloned()
                        .collect();
                    format!("last lines:\n  {}", tail.join("\n  "))
                })
        })
    }

    /// Waits until `node`'s status satisfies `ok` (which says why not otherwise).
    #[track_caller]
    pub fn wait_status(
        &self,
        node: &str,
        what: &str,
        timeout: Duration,
        ok: impl Fn(&Json) -> Result<(), String>,
    ) -> Json {
        let what = format!("[{}] {node}: {what}", self.test);
        poll(&what, timeout, || {
            let j = self.status(node)?;
            ok(&j)
                .map(|()| j.clone())
                .map_err(|e| format!("{e}; status {j}"))
        })
    }

    /// Waits until `node` sees its peer Alive with every link Up.
    #[track_caller]
    pub fn wait_all_up(&self, node: &str, links: &[&str], timeout: Duration) -> Json {
        self.wait_status(node, "peer Alive on every link", timeout, |j| {
            all_up(j, links)
        })
    }

    /// Runs a command inside `node`'s network namespace (`ip netns exec`).
    pub fn in_ns(&self, node: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(node), program]);
        c
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for node in NODES {
                let log = self.log(node);
                let tail = &log[log.len().saturating_sub(30)..];
                eprintln!(
                    "[{}] ---- {node} log (last {} lines)\n{}",
                    self.test,
                    tail.len(),
                    tail.join("\n")
                );
            }
            if std::env::var_os("BASCULE_KEEP_LAB").is_some() {
                eprintln!(
                    "[{}] BASCULE_KEEP_LAB: lab {} kept in {}",
                    self.test,
                    self.prefix,
                    self.dir.display()
                );
                return;
            }
        }
        let out = self.try_run(&["down"]);
        if !out.status.success() {
            eprintln!(
                "[{}] lab down failed: {}",
                self.test,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Peer Alive and each of `links` present and Up.
pub fn all_up(j: &Json, links: &[&str]) -> Result<(), String> {
    let state = j
        .get("peer.state")
        .and_then(Json::as_str)
        .ok_or("no peer.state")?;
    if state != "Alive" {
        return Err(format!("peer.state={state}"));
    }
    for name in links {
        let st = link(j, name)
            .ok_or(format!("no link {name}"))?
            .get("state")
            .and_then(Json::as_str)
            .unwrap_or("?");
        if st != "Up" {
            return Err(format!("link {name} state={st}"));
        }
    }
    Ok(())
}

/// The entry of `links[]` named `name`.
pub fn link<'a>(j: &'a Json, name: &str) -> Option<&'a Json> {
    j.get("links")?
        .as_array()?
        .iter()
        .find(|l| l.get("name").and_then(Json::as_str) == Some(name))
}

/// Polls `f` every `POLL_MS` until it returns Ok or `timeout` passes; then
/// panics with `what` and the last reason `f` gave.
#[track_caller]
pub fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(why) if start.elapsed() >= timeout => {
                panic!(
                    "timed out after {:?} waiting for: {what}\n  last: {why}",
                    timeout
                )
            }
            Err(_) => sleep(Duration::from_millis(POLL_MS)),
        }
    }
}

/// True when every token of `pat` is a whitespace-separated word of `line`
/// (so `to=Dead` never matches `to=Deadline`).
pub fn has_tokens(line: &str, pat: &[&str]) -> bool {
    pat.iter().all(|p| line.split_whitespace().any(|w| w == *p))
}

/// The value of `key=value` in a log or stats line.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// Milliseconds since the Unix epoch of a log line's `2026-11-28T01:02:03.456Z` prefix.
pub fn line_time_ms(line: &str) -> Option<u64> {
    let ts = line.split_whitespace().next()?;
    let b = ts.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| ts.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let frac = ts.get(20..)?.trim_end_matches('Z');
    let ms = format!("{frac:0<3}").get(0..3)?.parse::<i64>().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(((days * 24 + h) * 60 + mi) * 60_000 + s * 1000 + ms).ok()
}

/// Wall clock now, ms since the Unix epoch (the daemon stamps its log with it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// A parsed JSON value (just enough for `status --json`).
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    /// null
    Null,
    /// true / false
    Bool(bool),
    /// any number
    Num(f64),
    /// a string
    Str(String),
    /// an array
    Arr(Vec<Json>),
    /// an object, keys in document order
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// Parses one JSON document.
    pub fn parse(s: &str) -> Result<Json, String> {
        let mut p = Parser {
            b: s.as_bytes(),
            i: 0,
        };
        let v = p.value()?;
        p.ws();
        if p.i != p.b.len() {
            return Err(format!("trailing bytes at {}", p.i));
        }
        Ok(v)
    }

    /// Follows a dotted path of object keys: `peer.state`.
    pub fn get(&self, path: &str) -> Option<&Json> {
        path.split('.').try_fold(self, |v, k| match v {
            Json::Obj(kv) => kv.iter().find(|(key, _)| key == k).map(|(_, v)| v),
            _ => None,
        })
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        if let Json::Str(s) = self {
            Some(s)
        } else {
            None
        }
    }

    /// The number, if this is one.
    pub fn as_f64(&self) -> Option<f64> {
        if let Json::Num(n) = self {
            Some(*n)
        } else {
            None
        }
    }

    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&[Json]> {
        if let Json::Arr(a) = self {
            Some(a)
        } else {
            None
        }
    }

    /// The members, if this is an object.
    pub fn as_object(&self) -> Option<&[(String, Json)]> {
        if let Json::Obj(o) = self {
            Some(o)
        } else {
            None
        }
    }
}

impl std::fmt::Display for Json {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Json::Null => f.write_str("null"),
            Json::Bool(b) => write!(f, "{b}"),
            Json::Num(n) => write!(f, "{n}"),
            Json::Str(s) => write!(f, "{s:?}"),
            Json::Arr(a) => {
                f.write_str("[")?;
                for (i, v) in a.iter().enumerate() {
                    write!(f, "{}{v}", if i > 0 { "," } else { "" })?;
                }
                f.write_str("]")
            }
            Json::Obj(o) => {
                f.write_str("{")?;
                for (i, (k, v)) in o.iter().enumerate() {
                    write!(f, "{}{k:?}:{v}", if i > 0 { "," } else { "" })?;
                }
                f.write_str("}")
            }
        }
    }
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && self.b[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Result<(), String> {
        self.ws();
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected '{}' at {}", c as char, self.i))
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        self.ws();
        match self.b.get(self.i) {
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => self.string().map(Json::Str),
            Some(b't') => self.word("true", Json::Bool(true)),
            Some(b'f') => self.word("false", Json::Bool(false)),
            Some(b'n') => self.word("null", Json::Null),
            Some(_) => self.number(),
            None => Err("unexpected end".into()),
        }
    }

    fn word(&mut self, w: &str, v: Json) -> Result<Json, String> {
        if self.b[self.i..].starts_with(w.as_bytes()) {
            self.i += w.len();
            Ok(v)
        } else {
            Err(format!("bad literal at {}", self.i))
        }
    }

    fn number(&mut self) -> Result<Json, String> {
        let start = self.i;
        while self.i < self.b.len()
            && matches!(
                self.b[self.i],
                b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'
            )
        {
            self.i += 1;
        }
        let s = std::str::from_utf8(&self.b[start..self.i]).map_err(|e| e.to_string())?;
        s.parse()
            .map(Json::Num)
            .map_err(|_| format!("bad number {s:?} at {start}"))
    }

    fn string(&mut self) -> Result<String, String> {
        self.eat(b'"')?;
        let mut out = String::new();
        loop {
            let c = *self.b.get(self.i).ok_or("unterminated string")?;
            self.i += 1;
            match c {
                b'"' => return Ok(out),
                b'\\' => {
                    let e = *self.b.get(self.i).ok_or("bad escape")?;
                    self.i += 1;
                    match e {
                        b'n' => out.push('\n'),
                        b't' => out.push('\t'),
                        b'r' => out.push('\r'),
                        b'u' => {
                            let hex = self.b.get(self.i..self.i + 4).ok_or("bad \\u")?;
                            let code = u32::from_str_radix(
                                std::str::from_utf8(hex).map_err(|e| e.to_string())?,
                                16,
                            )
                            .map_err(|e| e.to_string())?;
                            out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                            self.i += 4;
                        }
                        other => out.push(other as char),
                    }
                }
                _ => {
                    // Copy a whole UTF-8 sequence.
                    let start = self.i - 1;
                    while self.i < self.b.len() && (self.b[self.i] & 0xC0) == 0x80 {
                        self.i += 1;
                    }
                    out.push_str(
                        std::str::from_utf8(&self.b[start..self.i]).map_err(|e| e.to_string())?,
                    );
                }
            }
        }
    }

    fn array(&mut self) -> Result<Json, String> {
        self.eat(b'[')?;
        let mut v = Vec::new();
        self.ws();
        if self.b.get(self.i) == Some(&b']') {
            self.i += 1;
            return Ok(Json::Arr(v));
        }
        loop {
            v.push(self.value()?);
            self.ws();
            match self.b.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(Json::Arr(v));
                }
                _ => return Err(format!("expected ',' or ']' at {}", self.i)),
            }
        }
    }

    fn object(&mut self) -> Result<Json, String> {
        self.eat(b'{')?;
        let mut kv = Vec::new();
        self.ws();
        if self.b.get(self.i) == Some(&b'}') {
            self.i += 1;
            return Ok(Json::Obj(kv));
        }
        loop {
            self.ws();
            let k = self.string()?;
            self.eat(b':')?;
            kv.push((k, self.value()?));
            self.ws();
            match self.b.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(Json::Obj(kv));
                }
                _ => return Err(format!("expected ',' or '}}' at {}", self.i)),
            }
        }
    }
}
