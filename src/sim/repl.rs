//! Deterministic simulation of two replicating nodes (the replicated disk).
//!
//! Layer: test support (allocates freely; never used by the daemon). Two real
//! [`Replica`]s on virtual time, each with in-memory backing stores that have a
//! *volatile write cache* (a crash keeps a random part of the unflushed blocks
//! and loses the rest; FUA writes and flushes are durable), disk requests that
//! complete after a random latency and so out of order, and one TCP-like
//! connection: in order within a connection, delayed, everything in flight lost
//! when it breaks. Every message goes through `PeerMsg::encode`/`decode`.
//!
//! [`Cluster`] is the harness (used by the engine's unit tests and named
//! scenarios); [`run_seed`] is the randomized run: a client on the Primary
//! writes, reads and flushes and records what was acknowledged, while the
//! schedule cuts the link (visibly or silently), crashes either node, fails
//! either node's disk (a Diskless Primary serves through its peer until it is
//! re-attached by a restart), promotes the survivor, promotes a cut-off
//! Secondary on purpose (split brain, resolved with `--discard-my-data` on
//! it) and invalidates the Secondary. Checks:
//! - a read returns the last acknowledged write of every block it covers;
//! - when a Primary that was Connected to an UpToDate peer crashes, the peer is
//!   promoted and holds every acknowledged write (protocol C) or every write
//!   acknowledged before the last completed flush (A, B), block by block;
//! - otherwise the crashed Primary restarts, is promoted again and holds every
//!   flushed write;
//! - whenever both nodes are Connected, UpToDate and quiet, their data is
//!   identical; at the end (faults healed) they converge to that state;
//! - no host request fails, the engine never panics, the run is bounded.
//!
//! A failure carries `SIM_SEED=0x... cargo test --features sim --test
//! sim_replication` and the last trace lines; `SIM_LOG=1` prints the trace live.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use crate::core::replication::engine::{
    Action, AfterSb0, AfterSb1, AfterSb2, Command, OnIoError, Refused, ReplEvent, Replica,
    ReplicaConfig, Status,
};
use crate::core::replication::md::{self, ActivityLog, Bitmap, Layout, Metadata};
use crate::core::replication::msg::PeerMsg;
use crate::core::replication::{
    ConnState, DiskId, DiskIo, DiskState, DiskTarget, HostId, HostIo, IoError, IoResult, Protocol,
    Role, BLOCK_BYTES,
};
use crate::rng::Rng;
use crate::time::{Duration, Instant};

/// Replicated bytes in the simulation: 8 MiB (2048 blocks, two AL extents).
pub const USABLE_BYTES: u64 = 8 << 20;
/// Trace lines kept for a failure report.
pub const TRACE_KEEP: usize = 200;
/// Steps a run may take before it is declared a livelock.
pub const STEPS_MAX: u64 = 3_000_000;

/// A backing store with a volatile write cache, block-granular.
#[derive(Clone, Debug)]
pub struct SimDisk {
    durable: Vec<u8>,
    cache: BTreeMap<u64, Vec<u8>>,
}

impl SimDisk {
    pub fn new(bytes: u64) -> SimDisk {
        SimDisk {
            durable: vec![0; bytes as usize],
            cache: BTreeMap::new(),
        }
    }

    pub fn len(&self) -> u64 {
        self.durable.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.durable.is_empty()
    }

    fn block(&self, b: u64) -> &[u8] {
        match self.cache.get(&b) {
            Some(v) => v,
            None => {
                let at = (b * BLOCK_BYTES) as usize;
                &self.durable[at..at + BLOCK_BYTES as usize]
            }
        }
    }

    /// What a read sees now (cache over durable).
    pub fn read(&self, offset: u64, len: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(len as usize);
        let mut at = offset;
        while at < offset + len {
            let b = at / BLOCK_BYTES;
            let within = (at % BLOCK_BYTES) as usize;
            let take = ((BLOCK_BYTES as usize - within) as u64).min(offset + len - at) as usize;
            out.extend_from_slice(&self.block(b)[within..within + take]);
            at += take as u64;
        }
        out
    }

    pub fn write(&mut self, offset: u64, data: &[u8], fua: bool) {
        let mut at = offset;
        let mut src = 0usize;
        while src < data.len() {
            let b = at / BLOCK_BYTES;
            let within = (at % BLOCK_BYTES) as usize;
            let take = (BLOCK_BYTES as usize - within).min(data.len() - src);
            let mut blk = self.block(b).to_vec();
            blk[within..within + take].copy_from_slice(&data[src..src + take]);
            if fua {
                self.cache.remove(&b);
                let d = (b * BLOCK_BYTES) as usize;
                self.durable[d..d + BLOCK_BYTES as usize].copy_from_slice(&blk);
            } else {
                self.cache.insert(b, blk);
            }
            at += take as u64;
            src += take;
        }
    }

    pub fn flush(&mut self) {
        for (b, blk) in std::mem::take(&mut self.cache) {
            let d = (b * BLOCK_BYTES) as usize;
            self.durable[d..d + BLOCK_BYTES as usize].copy_from_slice(&blk);
        }
    }

    /// Power loss: each cached block independently made it or not.
    pub fn crash(&mut self, rng: &mut Rng) {
        for (b, blk) in std::mem::take(&mut self.cache) {
            if rng.chance(0.5) {
                let d = (b * BLOCK_BYTES) as usize;
                self.durable[d..d + BLOCK_BYTES as usize].copy_from_slice(&blk);
            }
        }
    }
}

/// One node: the replica (None while crashed), its disks and what the
/// harness collected from its actions.
pub struct NodeSim {
    pub replica: Option<Replica>,
    pub data: SimDisk,
    pub meta: SimDisk,
    disk_q: Vec<(Instant, DiskId, DiskIo)>,
    pub wants_connect: bool,
    /// Every data-area request fails with EIO while set.
    pub fail_data: bool,
    pub host_done: Vec<(HostId, IoResult)>,
    pub events: Vec<(Instant, ReplEvent)>,
    pub handlers: Vec<&'static str>,
    /// Bytes of data (Data, RsData, ReadReply payloads) this node sent.
    pub data_sent: u64,
    pub rs_data_sent: u64,
}

impl NodeSim {
    pub fn r(&self) -> &Replica {
        self.replica.as_ref().expect("node is up")
    }
    pub fn up(&self) -> bool {
        self.replica.is_some()
    }
    /// The completion of host request `id`, if it came.
    pub fn done(&self, id: u64) -> Option<&IoResult> {
        self.host_done
            .iter()
            .find(|(h, _)| h.0 == id)
            .map(|(_, r)| r)
    }
}

/// Names of the nodes in traces.
pub const NODE_NAMES: [&str; 2] = ["A", "B"];

/// A message on the wire: kind, header, payload bytes.
type Wire = (u8, Vec<u8>, Vec<u8>);

/// Two nodes, their disks and the link between them, on virtual time.
pub struct Cluster {
    pub now: Instant,
    pub nodes: [NodeSim; 2],
    pub cfg: [ReplicaConfig; 2],
    pub rng: Rng,
    conn: bool,
    q: [VecDeque<(Instant, Wire)>; 2],
    /// False: the link is cut (no connection can be made; an open one broke).
    pub net_up: bool,
    /// True: the link delivers nothing for now, as TCP over a dead path: what
    /// is sent waits, and arrives in order when the path heals, unless a peer
    /// gave up on the connection first (pings).
    pub silent: bool,
    connect_at: Option<Instant>,
    pub disk_latency_ms: u64,
    pub net_latency_ms: u64,
    pub trace: VecDeque<String>,
    live_log: bool,
    pub steps: u64,
}

/// A config for the simulation's nodes.
pub fn sim_config(protocol: Protocol, lower_node: bool) -> ReplicaConfig {
    ReplicaConfig {
        name: "r0".into(),
        protocol,
        layout: Layout::external(USABLE_BYTES),
        resync_rate: 0,
        csums: false,
        after_sb_0pri: AfterSb0::Disconnect,
        after_sb_1pri: AfterSb1::Disconnect,
        after_sb_2pri: AfterSb2::Disconnect,
        on_io_error: OnIoError::Detach,
        ping_interval: Duration::from_millis(1000),
        ping_timeout: Duration::from_millis(500),
        lower_node,
    }
}

impl Cluster {
    /// Two freshly created (`create-md`) nodes, both Secondary/Inconsistent,
    /// connecting. `cfg` is node A's; B gets the same with `lower_node` flipped.
    pub fn new(seed: u64, cfg: ReplicaConfig) -> Cluster {
        let mut b = cfg.clone();
        b.lower_node = !cfg.lower_node;
        let layout = cfg.layout;
        let node = || {
            let mut meta = SimDisk::new(layout.meta_bytes);
            let sb = md::encode_superblock(&Metadata::created(layout.usable_bytes));
            meta.write(layout.superblock_offset, &sb, true);
            NodeSim {
                replica: None,
                data: SimDisk::new(layout.usable_bytes),
                meta,
                disk_q: Vec::new(),
                wants_connect: false,
                fail_data: false,
                host_done: Vec::new(),
                events: Vec::new(),
                handlers: Vec::new(),
                data_sent: 0,
                rs_data_sent: 0,
            }
        };
        let mut c = Cluster {
            now: Instant::ZERO,
            nodes: [node(), node()],
            cfg: [cfg, b],
            rng: Rng::new(seed),
            conn: false,
            q: [VecDeque::new(), VecDeque::new()],
            net_up: true,
            silent: false,
            connect_at: None,
            disk_latency_ms: 2,
            net_latency_ms: 1,
            trace: VecDeque::new(),
            live_log: std::env::var_os("SIM_LOG").is_some(),
            steps: 0,
        };
        c.restart(0);
        c.restart(1);
        c
    }

    pub fn log(&mut self, node: Option<usize>, line: String) {
        let who = node.map_or("-", |n| NODE_NAMES[n]);
        let line = format!("[t={} {who}] {line}", self.now.millis());
        if self.live_log {
            eprintln!("{line}");
        }
        if self.trace.len() == TRACE_KEEP {
            self.trace.pop_front();
        }
        self.trace.push_back(line);
    }

    pub fn r(&self, i: usize) -> &Replica {
        self.nodes[i].r()
    }

    pub fn status(&self, i: usize) -> Status {
        self.nodes[i].r().status(self.now)
    }

    /// (Re)starts node `i` from what its disks hold, as the shell's attach:
    /// superblock, bitmap, and the activity log's extents when it crashed as
    /// Primary.
    pub fn restart(&mut self, i: usize) {
        let cfg = self.cfg[i].clone();
        let l = cfg.layout;
        let n = &mut self.nodes[i];
        let sb = n.meta.read(l.superblock_offset, md::SUPERBLOCK_BYTES);
        let meta = md::decode_superblock(&sb).expect("superblock decodes");
        let mut bitmap = Bitmap::decode(
            l.usable_bytes,
            &n.meta.read(l.bitmap_offset, l.bitmap_bytes),
        );
        if meta.flags.primary_ind {
            for (off, len) in ActivityLog::decode_extents(&n.meta.read(l.al_offset, l.al_bytes)) {
                let len = len.min(l.usable_bytes.saturating_sub(off));
                bitmap.set_range(off, len);
            }
        }
        n.replica = Some(Replica::new(cfg, meta, bitmap, self.now));
        let line = format!(
            "start dirty_blocks={} md={:?}",
            self.nodes[i].r().bitmap().count(),
            meta
        );
        self.log(Some(i), line);
        self.drain(i);
    }

    /// Power loss on node `i`: replica gone, caches partly lost, link broken.
    pub fn crash(&mut self, i: usize) {
        self.log(Some(i), "CRASH".into());
        let n = &mut self.nodes[i];
        n.replica = None;
        n.disk_q.clear();
        n.wants_connect = false;
        n.data.crash(&mut self.rng);
        n.meta.crash(&mut self.rng);
        self.break_conn();
    }

    pub fn host(&mut self, i: usize, id: u64, io: HostIo) {
        let line = match &io {
            HostIo::Write { offset, data, fua } => {
                format!(
                    "host {id} write block={} blocks={} fua={fua}",
                    offset / BLOCK_BYTES,
                    data.len() as u64 / BLOCK_BYTES
                )
            }
            HostIo::Read { offset, len } => {
                format!("host {id} read block={} len={len}", offset / BLOCK_BYTES)
            }
            other => format!("host {id} {other:?}"),
        };
        self.log(Some(i), line);
        let now = self.now;
        if let Some(r) = self.nodes[i].replica.as_mut() {
            r.handle_host(now, HostId(id), io);
        }
        self.drain(i);
    }

    pub fn command(&mut self, i: usize, cmd: Command) -> Result<(), Refused> {
        let now = self.now;
        self.log(Some(i), format!("command {cmd:?}"));
        let res = self.nodes[i]
            .replica
            .as_mut()
            .expect("node is up")
            .handle_command(now, cmd);
        if let Err(e) = &res {
            self.log(Some(i), format!("refused: {}", e.0));
        }
        self.drain(i);
        res
    }

    /// Cuts the link (both sides see the connection break now).
    pub fn cut(&mut self) {
        self.log(None, "CUT".into());
        self.net_up = false;
        self.break_conn();
    }

    pub fn heal(&mut self) {
        self.log(None, "HEAL".into());
        self.net_up = true;
        self.silent = false;
        self.maybe_connect();
    }

    fn break_conn(&mut self) {
        self.q = [VecDeque::new(), VecDeque::new()];
        self.connect_at = None;
        if !self.conn {
            return;
        }
        self.conn = false;
        self.log(None, "connection closed".into());
        let now = self.now;
        for i in 0..2 {
            if let Some(r) = self.nodes[i].replica.as_mut() {
                r.handle_peer_down(now);
            }
            self.drain(i);
        }
        self.maybe_connect();
    }

    /// Node `i` closes the connection (TCP FIN): what it sent before still
    /// arrives, then the peer sees the end; what the peer sends is lost.
    fn close_from(&mut self, i: usize) {
        if !self.conn {
            return;
        }
        self.conn = false;
        self.connect_at = None;
        let j = 1 - i;
        let pending = std::mem::take(&mut self.q[i]);
        self.q[j].clear();
        self.log(None, format!("connection closed by {}", NODE_NAMES[i]));
        let now = self.now;
        if !self.silent {
            for (_, (kind, header, payload)) in pending {
                let msg = PeerMsg::decode(kind, &header, payload).expect("every message decodes");
                if let Some(r) = self.nodes[j].replica.as_mut() {
                    r.handle_peer_msg(now, msg);
                }
            }
        }
        for k in [j, i] {
            if let Some(r) = self.nodes[k].replica.as_mut() {
                r.handle_peer_down(now);
            }
        }
        self.drain(j);
        self.drain(i);
        self.maybe_connect();
    }

    fn maybe_connect(&mut self) {
        let want = self.nodes.iter().all(|n| n.up() && n.wants_connect);
        if !self.conn && want && self.net_up && self.connect_at.is_none() {
            self.connect_at = Some(self.now + Duration::from_millis(5));
        }
    }

    /// Runs node `i`'s actions.
    fn drain(&mut self, i: usize) {
        loop {
            let Some(r) = self.nodes[i].replica.as_mut() else {
                return;
            };
            let Some(action) = r.poll_action() else { break };
            self.apply(i, action);
        }
        self.maybe_connect();
    }

    fn apply(&mut self, i: usize, action: Action) {
        match action {
            Action::Disk { id, io } => {
                let lat = self.rng.below(self.disk_latency_ms + 1);
                let due = self.now + Duration::from_millis(lat);
                self.nodes[i].disk_q.push((due, id, io));
            }
            Action::Send(msg) => {
                if let PeerMsg::Data { data, .. } | PeerMsg::ReadReply { data, .. } = &msg {
                    self.nodes[i].data_sent += data.len() as u64;
                }
                if let PeerMsg::RsData { data, .. } = &msg {
                    self.nodes[i].rs_data_sent += data.len() as u64;
                }
                if !self.conn {
                    return;
                }
                let mut header = Vec::new();
                let (kind, payload) = msg.encode(&mut header);
                let payload = payload.map(|p| p.to_vec()).unwrap_or_default();
                let lat = self.rng.below(self.net_latency_ms + 1);
                let mut due = self.now + Duration::from_millis(lat);
                if let Some((last, _)) = self.q[i].back() {
                    due = due.max(*last);
                }
                self.q[i].push_back((due, (kind, header, payload)));
            }
            Action::HostDone { id, result } => {
                let ok = result.as_ref().map(|_| "ok").map_err(|e| *e);
                self.log(Some(i), format!("host {} done {ok:?}", id.0));
                self.nodes[i].host_done.push((id, result));
            }
            Action::Connect => {
                self.nodes[i].wants_connect = true;
            }
            Action::Disconnect => {
                self.nodes[i].wants_connect = false;
                self.log(Some(i), "disconnect".into());
                self.close_from(i);
            }
            Action::Event(e) => {
                self.log(Some(i), format!("{e:?}"));
                self.nodes[i].events.push((self.now, e));
            }
            Action::RunHandler(h) => {
                self.log(Some(i), format!("handler {h}"));
                self.nodes[i].handlers.push(h);
            }
        }
    }

    /// The earliest pending thing.
    fn next_time(&self) -> Option<Instant> {
        let mut t: Option<Instant> = self.connect_at;
        let mut take = |x: Instant| t = Some(t.map_or(x, |y| y.min(x)));
        for (i, n) in self.nodes.iter().enumerate() {
            for (due, _, _) in &n.disk_q {
                take(*due);
            }
            if let Some((due, _)) = self.q[i].front().filter(|_| !self.silent) {
                take(*due);
            }
            if let Some(to) = n.replica.as_ref().and_then(|r| r.poll_timeout()) {
                take(to);
            }
        }
        t
    }

    /// One step: jump to the earliest pending thing (not past `limit`) and do
    /// everything due then. False when nothing is pending before `limit`.
    pub fn step(&mut self, limit: Instant) -> bool {
        self.steps += 1;
        assert!(self.steps < STEPS_MAX, "livelock: {STEPS_MAX} steps");
        let Some(t) = self.next_time() else {
            return false;
        };
        if t > limit {
            return false;
        }
        self.now = self.now.max(t);
        let now = self.now;
        if self.connect_at.is_some_and(|c| c <= now) {
            self.connect_at = None;
            let want = self.nodes.iter().all(|n| n.up() && n.wants_connect);
            if !self.conn && want && self.net_up {
                self.conn = true;
                self.log(None, "connection up".into());
                for i in 0..2 {
                    self.nodes[i]
                        .replica
                        .as_mut()
                        .expect("up")
                        .handle_peer_up(now);
                    self.drain(i);
                }
            }
        }
        for i in 0..2 {
            // Disk completions, oldest first.
            loop {
                let n = &mut self.nodes[i];
                let Some(pos) = n
                    .disk_q
                    .iter()
                    .enumerate()
                    .filter(|(_, (due, _, _))| *due <= now)
                    .min_by_key(|(_, (due, id, _))| (*due, *id))
                    .map(|(p, _)| p)
                else {
                    break;
                };
                let (_, id, io) = n.disk_q.swap_remove(pos);
                let result = Self::execute(n, &io);
                if let Some(r) = n.replica.as_mut() {
                    r.handle_disk_done(now, id, result);
                }
                self.drain(i);
            }
            // Messages from i to the other.
            while !self.silent && self.q[i].front().is_some_and(|(due, _)| *due <= now) {
                let (_, (kind, header, payload)) = self.q[i].pop_front().expect("checked");
                let msg = PeerMsg::decode(kind, &header, payload).expect("every message decodes");
                let j = 1 - i;
                if let Some(r) = self.nodes[j].replica.as_mut() {
                    r.handle_peer_msg(now, msg);
                }
                self.drain(j);
            }
        }
        for i in 0..2 {
            let due = self.nodes[i]
                .replica
                .as_ref()
                .and_then(|r| r.poll_timeout());
            if due.is_some_and(|d| d <= now) {
                self.nodes[i]
                    .replica
                    .as_mut()
                    .expect("up")
                    .handle_timeout(now);
                self.drain(i);
            }
        }
        true
    }

    fn execute(n: &mut NodeSim, io: &DiskIo) -> IoResult {
        let fail = n.fail_data;
        match io {
            DiskIo::Read {
                target,
                offset,
                len,
            } => {
                if fail && *target == DiskTarget::Data {
                    return Err(IoError::Io);
                }
                let disk = if *target == DiskTarget::Data {
                    &n.data
                } else {
                    &n.meta
                };
                Ok(Some(Arc::new(disk.read(*offset, u64::from(*len)))))
            }
            DiskIo::Write {
                target,
                offset,
                data,
                fua,
            } => {
                if fail && *target == DiskTarget::Data {
                    return Err(IoError::Io);
                }
                let disk = if *target == DiskTarget::Data {
                    &mut n.data
                } else {
                    &mut n.meta
                };
                disk.write(*offset, data, *fua);
                Ok(None)
            }
            DiskIo::Flush => {
                if fail {
                    return Err(IoError::Io);
                }
                n.data.flush();
                n.meta.flush();
                Ok(None)
            }
            DiskIo::Discard { offset, len, fua } | DiskIo::WriteZeroes { offset, len, fua } => {
                if fail {
                    return Err(IoError::Io);
                }
                n.data.write(*offset, &vec![0; *len as usize], *fua);
                Ok(None)
            }
        }
    }

    /// Runs until `t` (virtual).
    pub fn run_until_time(&mut self, t: Instant) {
        while self.step(t) {}
        self.now = self.now.max(t);
    }

    pub fn run_for(&mut self, ms: u64) {
        let t = self.now + Duration::from_millis(ms);
        self.run_until_time(t);
    }

    /// Steps until `pred` holds (checked after every step) or `ms` pass.
    pub fn run_until(&mut self, ms: u64, pred: impl Fn(&Cluster) -> bool) -> bool {
        let limit = self.now + Duration::from_millis(ms);
        loop {
            if pred(self) {
                return true;
            }
            if !self.step(limit) {
                self.now = self.now.max(limit);
                return pred(self);
            }
        }
    }

    /// Both up, Connected (not syncing), both UpToDate, nothing in flight.
    pub fn settled(&self) -> bool {
        self.nodes.iter().all(|n| {
            n.replica.as_ref().is_some_and(|r| {
                r.cstate() == ConnState::Connected && r.dstate() == DiskState::UpToDate && r.idle()
            }) && n.disk_q.is_empty()
        }) && self.q.iter().all(|q| q.is_empty())
    }

    /// Whether both data areas hold the same bytes (first differing block).
    pub fn first_difference(&self) -> Option<u64> {
        let (a, b) = (&self.nodes[0].data, &self.nodes[1].data);
        (0..USABLE_BYTES / BLOCK_BYTES).find(|&blk| a.block(blk) != b.block(blk))
    }

    /// Initial setup as in the guide: A `primary --force`, full sync to B.
    pub fn bootstrap(&mut self) {
        self.run_until(1000, |c| c.r(0).cstate() == ConnState::Connected);
        self.command(0, Command::Primary { force: true })
            .expect("forced primary");
        let ok = self.run_until(60_000, |c| c.settled());
        assert!(
            ok,
            "initial sync did not finish: {:?} {:?}",
            self.status(0),
            self.status(1)
        );
    }

    pub fn trace_text(&self) -> String {
        self.trace.iter().map(|l| format!("  {l}\n")).collect()
    }
}

// ==== the randomized run ====================================================

/// Content of one block written by the client: its tag, repeated.
pub fn block_of(tag: u64) -> Vec<u8> {
    tag.to_le_bytes().repeat((BLOCK_BYTES / 8) as usize)
}

/// The tag a block holds (0 for never written), None when torn or foreign.
pub fn tag_of(block: &[u8]) -> Option<u64> {
    let tag = u64::from_le_bytes(block[..8].try_into().expect("8 bytes"));
    (block == block_of(tag).as_slice()).then_some(tag)
}

/// What the client knows of one block.
#[derive(Clone, Debug, Default)]
struct BlockModel {
    /// Last acknowledged write.
    acked: u64,
    /// A write in flight (the client never overlaps its own writes).
    pending: Option<u64>,
    /// Value as of the last completed flush.
    flushed: u64,
    /// Every tag written since the last completed flush (acked or not).
    since_flush: Vec<u64>,
}

#[derive(Clone, Debug)]
enum ClientOp {
    Write { first: u64, tags: Vec<u64> },
    Read { first: u64, blocks: u64 },
    Flush,
}

/// The client: sends requests to the Primary, checks reads, remembers.
struct Client {
    blocks: Vec<BlockModel>,
    inflight: BTreeMap<u64, (usize, ClientOp)>,
    busy: Vec<bool>,
    next_id: u64,
    flushing: bool,
    acked_writes: u64,
}

/// A failed randomized run.
#[derive(Clone, Debug)]
pub struct Failure {
    pub seed: u64,
    pub at: Instant,
    pub message: String,
    pub setup: String,
    pub trace: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        writeln!(
            f,
            "replication simulation failed at t={}: {}",
            self.at.millis(),
            self.message
        )?;
        writeln!(
            f,
            "reproduce: SIM_SEED=0x{:016x} cargo test --features sim --test sim_replication",
            self.seed
        )?;
        writeln!(f, "setup: {}", self.setup)?;
        write!(f, "last trace lines:\n{}", self.trace)
    }
}

/// What a finished run did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub acked_writes: u64,
    pub crashes: u64,
    pub failovers_checked: u64,
    pub cuts: u64,
    pub disk_failures: u64,
    pub split_brains: u64,
    pub invalidates: u64,
    pub verifies: u64,
    pub steps: u64,
}

struct Run {
    c: Cluster,
    client: Client,
    setup: String,
    report: Report,
    /// Node that is to be promoted once it is back (its peer was not UpToDate).
    promote_on_restart: Option<usize>,
    /// A Secondary promoted during a cut (split brain on purpose); the
    /// client never writes there, and its changes are discarded after.
    rogue: Option<usize>,
    restart_at: [Option<Instant>; 2],
    last_compare: Instant,
}

type Check = Result<(), String>;

/// Runs one randomized scenario.
pub fn run_seed(seed: u64) -> Result<Report, Failure> {
    let mut rng = Rng::new(seed ^ 0x7265_706c);
    let protocol = [Protocol::A, Protocol::B, Protocol::C][rng.below(3) as usize];
    let mut cfg = sim_config(protocol, rng.chance(0.5));
    cfg.csums = rng.chance(0.3);
    cfg.resync_rate = if rng.chance(0.5) {
        0
    } else {
        (8 + rng.below(40)) << 20
    };
    let setup = format!(
        "protocol={protocol} csums={} resync_rate={}",
        cfg.csums, cfg.resync_rate
    );
    let c = Cluster::new(seed, cfg);
    let blocks = (USABLE_BYTES / BLOCK_BYTES) as usize;
    let mut run = Run {
        c,
        client: Client {
            blocks: vec![BlockModel::default(); blocks],
            inflight: BTreeMap::new(),
            busy: vec![false; blocks],
            next_id: 1,
            flushing: false,
            acked_writes: 0,
        },
        setup,
        report: Report::default(),
        promote_on_restart: None,
        rogue: None,
        restart_at: [None, None],
        last_compare: Instant::ZERO,
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run.go(&mut rng)));
    let message = match outcome {
        Ok(Ok(())) => {
            run.report.steps = run.c.steps;
            run.report.acked_writes = run.client.acked_writes;
            return Ok(run.report);
        }
        Ok(Err(m)) => m,
        Err(panic) => {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            format!("panic: {text}")
        }
    };
    Err(Failure {
        seed,
        at: run.c.now,
        message,
        setup: run.setup.clone(),
        trace: run.c.trace_text(),
    })
}

impl Run {
    fn primary(&self) -> Option<usize> {
        (0..2).filter(|&i| Some(i) != self.rogue).find(|&i| {
            self.c.nodes[i]
                .replica
                .as_ref()
                .is_some_and(|r| r.role() == Role::Primary)
        })
    }

    fn go(&mut self, rng: &mut Rng) -> Check {
        self.c.bootstrap();
        let chaos_until = self.c.now + Duration::from_millis(6000 + rng.below(6000));
        let mut next_chaos = self.c.now + Duration::from_millis(300 + rng.below(1500));
        let mut next_client = self.c.now;
        let mut heal_at: Option<Instant> = None;
        let mut fail_until: [Option<Instant>; 2] = [None, None];
        while self.c.now < chaos_until {
            let limit = [
                Some(next_chaos),
                Some(next_client),
                heal_at,
                self.restart_at[0],
                self.restart_at[1],
            ]
            .into_iter()
            .flatten()
            .min()
            .expect("some");
            while self.c.step(limit) {
                self.collect()?;
            }
            self.c.now = self.c.now.max(limit);
            self.collect()?;
            let now = self.c.now;
            #[allow(clippy::needless_range_loop)]
            for i in 0..2 {
                if self.restart_at[i].is_some_and(|t| t <= now) {
                    self.restart_at[i] = None;
                    self.c.nodes[i].fail_data = false;
                    self.c.restart(i);
                    if self.promote_on_restart == Some(i) {
                        self.promote_on_restart = None;
                        self.promote_and_check(i, false)?;
                    }
                }
                if fail_until[i].is_some_and(|t| t <= now) {
                    fail_until[i] = None;
                    self.c.nodes[i].fail_data = false;
                }
                // A detached Secondary gets its disk back (re-attach = restart).
                let detached = self.c.nodes[i].replica.as_ref().is_some_and(|r| {
                    r.dstate() == DiskState::Diskless && r.role() == Role::Secondary
                });
                if detached && self.restart_at[i].is_none() {
                    self.c.crash(i);
                    self.report.crashes += 1;
                    self.restart_at[i] = Some(now + Duration::from_millis(100 + rng.below(400)));
                }
            }
            if heal_at.is_some_and(|t| t <= now) {
                if self.end_rogue() {
                    heal_at = None;
                    self.c.heal();
                } else {
                    heal_at = Some(now + Duration::from_millis(20));
                }
            }
            self.resolve_split_brain();
            if now >= next_client {
                self.client_step(rng);
                next_client = now + Duration::from_millis(1 + rng.below(4));
            }
            if now >= next_chaos {
                next_chaos = now + Duration::from_millis(300 + rng.below(1500));
                self.chaos(rng, &mut heal_at, &mut fail_until)?;
            }
            self.maybe_compare()?;
        }
        self.finish()
    }

    fn chaos(
        &mut self,
        rng: &mut Rng,
        heal_at: &mut Option<Instant>,
        fail_until: &mut [Option<Instant>; 2],
    ) -> Check {
        let now = self.c.now;
        let both_up =
            self.c.nodes.iter().all(|n| n.up()) && self.restart_at.iter().all(|r| r.is_none());
        let Some(p) = self.primary() else {
            return Ok(());
        };
        let s = 1 - p;
        if both_up && self.c.r(p).dstate() == DiskState::Diskless && self.rogue.is_none() {
            // The Diskless Primary served I/O through its peer for a while;
            // now it gets its disk back (re-attach = restart, failing over).
            self.report.crashes += 1;
            return self.crash_primary(p, rng);
        }
        match rng.below(12) {
            0..=2 if heal_at.is_none() && self.c.net_up => {
                self.report.cuts += 1;
                if rng.chance(0.5) {
                    self.c.log(None, "SILENT".into());
                    self.c.silent = true;
                } else {
                    self.c.cut();
                    let s_ok = self.c.nodes[s]
                        .replica
                        .as_ref()
                        .is_some_and(|r| r.dstate() == DiskState::UpToDate);
                    if both_up && s_ok && self.rogue.is_none() && rng.chance(0.4) {
                        self.make_rogue(s, rng)?;
                    }
                }
                *heal_at = Some(now + Duration::from_millis(100 + rng.below(2500)));
            }
            3 if both_up && self.rogue.is_none() => {
                self.report.crashes += 1;
                self.crash_primary(p, rng)?;
            }
            4 if both_up && self.rogue.is_none() => {
                self.report.crashes += 1;
                self.c.crash(s);
                self.restart_at[s] = Some(now + Duration::from_millis(100 + rng.below(1500)));
            }
            5 if both_up && self.rogue.is_none() => {
                self.report.disk_failures += 1;
                self.c.log(Some(s), "DISK FAILING".into());
                self.c.nodes[s].fail_data = true;
                fail_until[s] = Some(now + Duration::from_millis(50 + rng.below(300)));
            }
            8 if both_up
                && self.c.r(s).cstate() == ConnState::Connected
                && self.rogue.is_none() =>
            {
                self.report.invalidates += 1;
                self.c
                    .command(s, Command::Invalidate)
                    .map_err(|e| format!("invalidate: {}", e.0))?;
            }
            // Online verify under load: differences it reports (writes in
            // flight) are only marked out of sync, never a data change.
            9 if both_up
                && self.rogue.is_none()
                && (0..2).all(|i| {
                    self.c.r(i).cstate() == ConnState::Connected
                        && self.c.r(i).dstate() == DiskState::UpToDate
                }) =>
            {
                self.report.verifies += 1;
                self.c
                    .command(p, Command::Verify)
                    .map_err(|e| format!("verify: {}", e.0))?;
            }
            6 if both_up && self.rogue.is_none() => {
                self.report.disk_failures += 1;
                self.c.log(Some(p), "DISK FAILING (primary)".into());
                self.c.nodes[p].fail_data = true;
            }
            _ => {}
        }
        Ok(())
    }

    /// Split brain on purpose: the cut-off Secondary `s` is promoted and
    /// writes a few blocks of its own (the client never sees them).
    fn make_rogue(&mut self, s: usize, rng: &mut Rng) -> Check {
        self.c
            .command(s, Command::Primary { force: false })
            .map_err(|e| format!("rogue promotion: {}", e.0))?;
        self.rogue = Some(s);
        self.report.split_brains += 1;
        for k in 0..3 {
            let block = rng.below(USABLE_BYTES / BLOCK_BYTES);
            let id = (1 << 40) + self.client.next_id * 4 + k;
            let data = Arc::new(block_of(0xbad0_0000 + k));
            self.c.host(
                s,
                id,
                HostIo::Write {
                    offset: block * BLOCK_BYTES,
                    data,
                    fua: false,
                },
            );
        }
        Ok(())
    }

    /// Before the link heals, the rogue Primary steps down (once its own
    /// writes are done). False: not yet.
    fn end_rogue(&mut self) -> bool {
        let Some(r) = self.rogue else { return true };
        if self.c.r(r).role() == Role::Secondary {
            return true;
        }
        self.c.command(r, Command::Secondary).is_ok()
    }

    /// Split brain detected (both StandAlone): the rogue's changes go.
    fn resolve_split_brain(&mut self) {
        let Some(r) = self.rogue else { return };
        if !self.c.nodes.iter().all(|n| n.up()) {
            return;
        }
        let alone = (0..2).all(|i| {
            self.c.nodes[i]
                .replica
                .as_ref()
                .is_some_and(|x| x.cstate() == ConnState::StandAlone)
        });
        if !alone || self.c.r(r).role() != Role::Secondary {
            return;
        }
        self.rogue = None;
        let _ = self.c.command(
            r,
            Command::Connect {
                discard_my_data: true,
            },
        );
        let _ = self.c.command(
            1 - r,
            Command::Connect {
                discard_my_data: false,
            },
        );
    }

    /// Crashes the Primary. If its peer was Connected and UpToDate (and the
    /// Primary saw it so), the peer is promoted now and must hold every
    /// acknowledged write; otherwise the old Primary comes back and is promoted.
    fn crash_primary(&mut self, p: usize, rng: &mut Rng) -> Check {
        let s = 1 - p;
        let connected = |r: &Replica| r.cstate() == ConnState::Connected;
        let survivor_ok = connected(self.c.r(p))
            && connected(self.c.r(s))
            && self.c.r(s).dstate() == DiskState::UpToDate
            && !self.c.silent;
        self.c.crash(p);
        // Requests to the crashed node are never answered.
        let lost: Vec<u64> = self
            .client
            .inflight
            .iter()
            .filter(|(_, (n, _))| *n == p)
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            self.client.inflight.remove(&id);
        }
        self.restart_at[p] = Some(self.c.now + Duration::from_millis(100 + rng.below(1500)));
        if survivor_ok {
            self.promote_and_check(s, true)
        } else {
            self.promote_on_restart = Some(p);
            Ok(())
        }
    }

    /// Promotes `i`, lets its disk settle, and compares every block with the
    /// client's model; then the model restarts from what `i` holds.
    fn promote_and_check(&mut self, i: usize, replicated: bool) -> Check {
        self.c
            .command(i, Command::Primary { force: false })
            .map_err(|e| format!("promotion of the survivor refused: {}", e.0))?;
        let settled = self.c.run_until(5000, |c| {
            c.nodes[i].r().idle() && c.nodes[i].disk_q.is_empty()
        });
        if !settled {
            return Err("the promoted node did not settle".into());
        }
        self.collect()?;
        self.report.failovers_checked += 1;
        let strict = replicated && self.c.cfg[i].protocol == Protocol::C;
        for (b, m) in self.client.blocks.iter_mut().enumerate() {
            let got = tag_of(
                &self.c.nodes[i]
                    .data
                    .read(b as u64 * BLOCK_BYTES, BLOCK_BYTES),
            );
            let Some(got) = got else {
                return Err(format!("block {b} torn on the promoted node"));
            };
            let ok = if strict {
                got == m.acked || m.pending == Some(got)
            } else {
                got == m.flushed || m.since_flush.contains(&got)
            };
            if !ok {
                return Err(format!(
                    "failover to {}: block {b} holds {got:#x}, acked {:#x} pending {:?} flushed {:#x} since_flush {:?}",
                    NODE_NAMES[i], m.acked, m.pending, m.flushed, m.since_flush
                ));
            }
            *m = BlockModel {
                acked: got,
                pending: None,
                flushed: got,
                since_flush: Vec::new(),
            };
        }
        self.client.busy.iter_mut().for_each(|b| *b = false);
        self.client.inflight.clear();
        self.client.flushing = false;
        Ok(())
    }

    fn client_step(&mut self, rng: &mut Rng) {
        let Some(p) = self.primary() else { return };
        if self.client.inflight.len() >= 8 {
            return;
        }
        let c = &mut self.client;
        if c.flushing {
            if c.inflight.is_empty() {
                let id = c.next_id;
                c.next_id += 1;
                c.inflight.insert(id, (p, ClientOp::Flush));
                self.c.host(p, id, HostIo::Flush);
            }
            return;
        }
        let nblocks = c.blocks.len() as u64;
        let roll = rng.below(100);
        if roll < 8 {
            c.flushing = true;
            return;
        }
        let count = 1 + rng.below(4);
        let first = rng.below(nblocks - count);
        let range = first as usize..(first + count) as usize;
        if c.busy[range.clone()].iter().any(|b| *b) {
            return;
        }
        c.busy[range.clone()].iter_mut().for_each(|b| *b = true);
        let id = c.next_id;
        c.next_id += 1;
        if roll < 70 {
            let tags: Vec<u64> = (0..count).map(|k| (id << 8) | (k + 1)).collect();
            let mut data = Vec::with_capacity((count * BLOCK_BYTES) as usize);
            for (k, &tag) in tags.iter().enumerate() {
                let m = &mut c.blocks[first as usize + k];
                m.pending = Some(tag);
                m.since_flush.push(tag);
                data.extend_from_slice(&block_of(tag));
            }
            let fua = rng.chance(0.1);
            c.inflight.insert(id, (p, ClientOp::Write { first, tags }));
            self.c.host(
                p,
                id,
                HostIo::Write {
                    offset: first * BLOCK_BYTES,
                    data: Arc::new(data),
                    fua,
                },
            );
        } else {
            c.inflight.insert(
                id,
                (
                    p,
                    ClientOp::Read {
                        first,
                        blocks: count,
                    },
                ),
            );
            let len = (count * BLOCK_BYTES) as u32;
            self.c.host(
                p,
                id,
                HostIo::Read {
                    offset: first * BLOCK_BYTES,
                    len,
                },
            );
        }
    }

    /// Takes the host completions and checks them.
    fn collect(&mut self) -> Check {
        #[allow(clippy::needless_range_loop)]
        for i in 0..2 {
            for (id, result) in std::mem::take(&mut self.c.nodes[i].host_done) {
                let Some((node, op)) = self.client.inflight.remove(&id.0) else {
                    continue;
                };
                debug_assert_eq!(node, i);
                let diskless = self.c.nodes[i]
                    .replica
                    .as_ref()
                    .is_some_and(|r| r.dstate() == DiskState::Diskless);
                let c = &mut self.client;
                let result = match result {
                    Ok(r) => r,
                    // A Diskless Primary that lost its peer cannot serve:
                    // the write may or may not be somewhere (it stays pending).
                    Err(IoError::Io) if diskless => {
                        match op {
                            ClientOp::Write { first, tags } => {
                                (0..tags.len()).for_each(|k| c.busy[first as usize + k] = false)
                            }
                            ClientOp::Read { first, blocks } => (0..blocks as usize)
                                .for_each(|k| c.busy[first as usize + k] = false),
                            ClientOp::Flush => c.flushing = false,
                        }
                        continue;
                    }
                    Err(e) => return Err(format!("host request {} ({op:?}) failed: {e:?}", id.0)),
                };
                match op {
                    ClientOp::Write { first, tags } => {
                        c.acked_writes += 1;
                        for (k, tag) in tags.into_iter().enumerate() {
                            let b = first as usize + k;
                            c.blocks[b].acked = tag;
                            c.blocks[b].pending = None;
                            c.busy[b] = false;
                        }
                    }
                    ClientOp::Read { first, blocks } => {
                        let data = result.ok_or("read without data")?;
                        for k in 0..blocks as usize {
                            let b = first as usize + k;
                            c.busy[b] = false;
                            let chunk =
                                &data[k * BLOCK_BYTES as usize..(k + 1) * BLOCK_BYTES as usize];
                            let got = tag_of(chunk);
                            if got != Some(c.blocks[b].acked) {
                                return Err(format!(
                                    "read of block {b} on {} returned {got:?}, last acked {:#x}",
                                    NODE_NAMES[i], c.blocks[b].acked
                                ));
                            }
                        }
                    }
                    ClientOp::Flush => {
                        c.flushing = false;
                        for m in &mut c.blocks {
                            m.flushed = m.acked;
                            m.since_flush.clear();
                            if let Some(p) = m.pending {
                                m.since_flush.push(p);
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// When both are settled, their data must be identical.
    fn maybe_compare(&mut self) -> Check {
        if self.c.now.saturating_since(self.last_compare).millis() < 250 || !self.c.settled() {
            return Ok(());
        }
        self.last_compare = self.c.now;
        match self.c.first_difference() {
            Some(b) => {
                let tag =
                    |i: usize| tag_of(&self.c.nodes[i].data.read(b * BLOCK_BYTES, BLOCK_BYTES));
                Err(format!(
                    "both UpToDate and Connected but block {b} differs: A {:?} B {:?} acked {:#x}",
                    tag(0),
                    tag(1),
                    self.client.blocks[b as usize].acked
                ))
            }
            None => Ok(()),
        }
    }

    /// Faults healed: both converge, identical, holding every acknowledged write.
    fn finish(&mut self) -> Check {
        for _ in 0..100 {
            if self.end_rogue() {
                break;
            }
            self.c.run_for(10);
            self.collect()?;
        }
        self.c.heal();
        if let Some(p) = self.primary() {
            let both_up =
                self.c.nodes.iter().all(|n| n.up()) && self.restart_at.iter().all(|r| r.is_none());
            if both_up && self.c.r(p).dstate() == DiskState::Diskless {
                let mut rng = Rng::new(self.c.now.millis());
                self.crash_primary(p, &mut rng)?;
            }
        }
        for i in 0..2 {
            self.c.nodes[i].fail_data = false;
        }
        let deadline = self.c.now + Duration::from_millis(60_000);
        while self.c.now < deadline {
            let next = [self.restart_at[0], self.restart_at[1]]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(deadline);
            while self.c.step(next) {
                self.collect()?;
            }
            self.c.now = self.c.now.max(next);
            for i in 0..2 {
                if self.restart_at[i].is_some_and(|t| t <= self.c.now) {
                    self.restart_at[i] = None;
                    self.c.restart(i);
                    if self.promote_on_restart == Some(i) {
                        self.promote_on_restart = None;
                        self.promote_and_check(i, false)?;
                    }
                }
            }
            if self.restart_at.iter().all(|r| r.is_none()) {
                break;
            }
        }
        let mut ok = false;
        for _ in 0..600 {
            ok = self.c.run_until(100, |c| c.settled());
            self.collect()?;
            if ok {
                break;
            }
            self.resolve_split_brain();
        }
        self.collect()?;
        if !ok {
            return Err(format!(
                "no convergence after healing: A {:?} / B {:?}",
                self.c.nodes[0]
                    .replica
                    .as_ref()
                    .map(|r| r.status(self.c.now)),
                self.c.nodes[1]
                    .replica
                    .as_ref()
                    .map(|r| r.status(self.c.now))
            ));
        }
        if let Some(b) = self.c.first_difference() {
            return Err(format!("converged but block {b} differs"));
        }
        let p = self.primary().ok_or("no Primary at the end")?;
        for (b, m) in self.client.blocks.iter().enumerate() {
            let got = tag_of(
                &self.c.nodes[p]
                    .data
                    .read(b as u64 * BLOCK_BYTES, BLOCK_BYTES),
            );
            let ok = got == Some(m.acked) || (m.pending.is_some() && got == m.pending);
            if !ok {
                return Err(format!(
                    "at the end block {b} holds {got:?}, acked {:#x}",
                    m.acked
                ));
            }
        }
        Ok(())
    }
}
