//! `drbd.conf`, DRBD 8 syntax, read verbatim (the guide's file and the usual
//! options of DRBD 8.3 and 8.4 configurations carried over by migrating admins).
//!
//! Layer: pure parser. It may not read files or log: `include` goes through a
//! callback ([`IncludeReader`]) that the shell implements, and warnings are
//! returned in [`DrbdConf::warnings`]. Errors are a [`DrbdError`] whose file is
//! the path as the including file names it (`drbd.conf`, `drbd.d/r0.res`) and
//! whose line is 1-based.
//!
//! Syntax (as drbdadm's scanner): tokens are `{`, `}`, `;`, double-quoted
//! strings (with `\"` and `\\` escapes) and words (anything else up to a blank or
//! one of `{};"#`); `#` starts a comment to the end of the line. A statement is
//! words ended by `;` or followed by a `{ ... }` block.
//!
//! Structure:
//! - top level: `global { }`, `common { }`, `resource NAME { }`, `include "GLOB";`
//!   (relative to the including file's directory; wildcards `*`, `?`, `[...]` in
//!   the last path component only; a pattern that matches nothing is a warning,
//!   a plain path that does not exist is an error, as drbdadm), `skip ... { }`.
//! - in `common` and `resource`: `protocol A|B|C;`, sections `startup`, `disk`,
//!   `net`, `syncer`, `handlers`, `options`; and `device`, `disk PATH`,
//!   `meta-disk`, `flexible-meta-disk` at resource level, inherited by the `on`
//!   sections (DRBD 8.4). Resources inherit every option from `common`.
//! - `on HOST { device PATH [minor N] | minor N; disk PATH; address [ipv4|ipv6]
//!   IP:PORT; meta-disk internal | PATH [IDX]; }`: exactly two per resource.
//!
//! Semantics (DRBD 8.4's `drbd_limits.h` for defaults and ranges):
//! - sizes and rates: a bare number is in the option's unit (KiB/s for `rate` and
//!   `resync-rate`); the suffixes `K`, `M`, `G` (any case) are binary byte units,
//!   so `rate 100M` is 100 MiB/s = 104857600 bytes/s. Default 250 KiB/s.
//! - `timeout` and `ping-timeout` are tenths of a second; `connect-int`,
//!   `ping-int`, `wfc-timeout` and `degr-wfc-timeout` seconds (0 = wait forever
//!   for the last two). `timeout` must be below `connect-int` and `ping-int`.
//! - defaults: protocol C, `after-sb-*` disconnect, `on-io-error detach`.
//! - an option set twice in one scope is an error (drbdadm refuses it too); an
//!   option set in `common` and again in a resource takes the resource's value.
//! - unknown options are errors with a suggestion; the real DRBD 8 options that
//!   bascule does not implement ([`IGNORED`]) are accepted with a warning, which
//!   says why when ignoring them matters for safety (`fencing`,
//!   `allow-two-primaries`, ...).
//!
//! Invariants of an `Ok(DrbdConf)`: resource names are distinct; every resource
//! has exactly two `on` sections with distinct hosts, each with a device, a disk,
//! a meta-disk and an address; no two resources share a device, a disk or a
//! meta-disk slot on one host, nor an address; the two hosts of a resource have
//! different addresses; `timeout` < `ping-int` and `connect-int`. Nothing
//! recurses: blocks are built with an explicit stack, includes with a queue
//! bounded by [`INCLUDE_FILES_MAX`].

use core::fmt;
use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::core::replication::engine::{AfterSb0, AfterSb1, AfterSb2, OnIoError, ReplicaConfig};
use crate::core::replication::md::Layout;
use crate::core::replication::Protocol;
use crate::time::Duration;

/// Most files read through `include` (all levels together): a bound against a
/// file that includes itself, far above any real configuration.
pub const INCLUDE_FILES_MAX: usize = 64;
/// Deepest `{` nesting accepted: DRBD's deepest is 3 (resource, on, volume).
const DEPTH_MAX: usize = 8;
/// DRBD's default resync rate: 250 KiB/s (`DRBD_RESYNC_RATE_DEF`).
pub const RESYNC_RATE_DEFAULT_BYTES: u64 = 250 * 1024;
/// DRBD's lowest resync rate: 1 KiB/s (`DRBD_RESYNC_RATE_MIN`).
const RESYNC_RATE_MIN_BYTES: u64 = 1024;
/// DRBD's highest resync rate: 4 GiB/s (`DRBD_RESYNC_RATE_MAX` = 4 << 20 KiB/s).
const RESYNC_RATE_MAX_BYTES: u64 = 4 << 30;
/// DRBD's longest shared secret (`SHARED_SECRET_MAX`), in bytes.
pub const SHARED_SECRET_LEN_MAX: usize = 64;
/// Largest edit distance at which an option name is suggested.
const SUGGEST_DISTANCE_MAX: usize = 2;

/// Default `timeout`: 6 s (60 tenths).
const TIMEOUT_DEFAULT_MS: u64 = 6_000;
/// Default `connect-int`: 10 s.
const CONNECT_INT_DEFAULT_MS: u64 = 10_000;
/// Default `ping-int`: 10 s.
const PING_INT_DEFAULT_MS: u64 = 10_000;
/// Default `ping-timeout`: 500 ms (5 tenths).
const PING_TIMEOUT_DEFAULT_MS: u64 = 500;

/// A drbd.conf error: the file (as named by the including file, or the top
/// file's name), the 1-based line (0 for the file as a whole) and a sentence
/// an operator can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrbdError {
    /// `drbd.conf`, or an included file's path.
    pub file: String,
    /// 1-based line, 0 when the problem is not on one line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for DrbdError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        }
    }
}

impl std::error::Error for DrbdError {}

/// A non-fatal remark (an ignored option, an include that matched nothing),
/// reported by `check-config` and once at start-up; never logged from here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrbdWarning {
    /// The file it is about.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// What is ignored and, when it matters, why that is safe or not.
    pub message: String,
}

impl fmt::Display for DrbdWarning {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// Reads the files an `include` names. The parser stays pure: the shell lists
/// directories and reads files.
pub trait IncludeReader {
    /// The files matching `pattern` (already joined with the including file's
    /// directory; wildcards only in its last component, see [`glob_match`]),
    /// as `(path, text)` sorted by path; an empty list when nothing matches.
    /// `Err` for a file that exists but cannot be read.
    fn read_matching(&mut self, pattern: &str) -> Result<Vec<(String, String)>, String>;
}

/// A reader for configurations without `include` (and for tests): every
/// pattern names a literal key in the list.
impl IncludeReader for Vec<(String, String)> {
    fn read_matching(&mut self, pattern: &str) -> Result<Vec<(String, String)>, String> {
        let (dir, last) = match pattern.rsplit_once('/') {
            Some((dir, last)) => (Some(dir), last),
            None => (None, pattern),
        };
        let mut found: Vec<(String, String)> = self
            .iter()
            .filter(|(path, _)| {
                let (pdir, plast) = match path.rsplit_once('/') {
                    Some((d, l)) => (Some(d), l),
                    None => (None, path.as_str()),
                };
                pdir == dir && glob_match(last, plast)
            })
            .cloned()
            .collect();
        found.sort();
        Ok(found)
    }
}

/// Where a replicated device's metadata lives (`meta-disk`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaDisk {
    /// At the end of the backing disk (the guide's choice).
    Internal,
    /// On another device; `index` is DRBD 8's fixed 128 MiB slot (`PATH [IDX]`),
    /// None for flexible-size metadata (`flexible-meta-disk PATH`, or DRBD 8.4's
    /// `meta-disk PATH`).
    External {
        /// The metadata device or file.
        path: String,
        /// The slot, for fixed-size external metadata.
        index: Option<u32>,
    },
}

impl fmt::Display for MetaDisk {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            MetaDisk::Internal => write!(f, "internal"),
            MetaDisk::External { path, index: None } => write!(f, "{path}"),
            MetaDisk::External {
                path,
                index: Some(i),
            } => write!(f, "{path}[{i}]"),
        }
    }
}

/// `after-sb-0pri` as written: `discard-node-NAME` names a host, which only
/// [`DrbdConf::resource_for`] can turn into "this node" or "the peer".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AfterSb0Spec {
    /// Any policy that does not name a node.
    Policy(AfterSb0),
    /// `discard-node-NAME`: the named host's data is discarded.
    DiscardNode(String),
}

/// The settings of one scope (`common`, a resource). Every field is `None`
/// when the scope does not set it; [`Settings::inherit`] fills it from the
/// enclosing scope, and [`DrbdConf::resource_for`] applies DRBD's defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// `protocol`.
    pub protocol: Option<Protocol>,
    /// `net { cram-hmac-alg }`: the HMAC that authenticates the connection.
    pub cram_hmac_alg: Option<String>,
    /// `net { shared-secret }`.
    pub shared_secret: Option<String>,
    /// `net { after-sb-0pri }`.
    pub after_sb_0pri: Option<AfterSb0Spec>,
    /// `net { after-sb-1pri }`.
    pub after_sb_1pri: Option<AfterSb1>,
    /// `net { after-sb-2pri }`.
    pub after_sb_2pri: Option<AfterSb2>,
    /// `csums-alg` (net in 8.4, syncer in 8.3).
    pub csums_alg: Option<String>,
    /// `verify-alg` (net in 8.4, syncer in 8.3).
    pub verify_alg: Option<String>,
    /// `net { timeout }`, in ms.
    pub timeout_ms: Option<u64>,
    /// `net { connect-int }`, in ms.
    pub connect_int_ms: Option<u64>,
    /// `net { ping-int }`, in ms.
    pub ping_int_ms: Option<u64>,
    /// `net { ping-timeout }`, in ms.
    pub ping_timeout_ms: Option<u64>,
    /// `startup { wfc-timeout }`, in ms (0 = forever).
    pub wfc_timeout_ms: Option<u64>,
    /// `startup { degr-wfc-timeout }`, in ms (0 = forever).
    pub degr_wfc_timeout_ms: Option<u64>,
    /// `disk { on-io-error }`.
    pub on_io_error: Option<OnIoError>,
    /// `syncer { rate }` or `disk { resync-rate }`, in bytes/s.
    pub resync_rate_bytes: Option<u64>,
    /// `handlers { split-brain }`.
    pub split_brain: Option<String>,
    /// `handlers { local-io-error }`.
    pub local_io_error: Option<String>,
    /// `handlers { fence-peer }` (or its DRBD 8.2 name `outdate-peer`).
    pub fence_peer: Option<String>,
    /// `handlers { pri-lost-after-sb }`.
    pub pri_lost_after_sb: Option<String>,
    /// Resource-level `device`, inherited by the `on` sections.
    pub device: Option<Device>,
    /// Resource-level `disk PATH`, inherited by the `on` sections.
    pub disk: Option<String>,
    /// Resource-level `meta-disk`, inherited by the `on` sections.
    pub meta_disk: Option<MetaDisk>,
}

/// Copies every field of `parent` that `child` leaves unset.
macro_rules! inherit_fields {
    ($child:expr, $parent:expr, $($field:ident),*) => {$(
        if $child.$field.is_none() {
            $child.$field = $parent.$field.clone();
        }
    )*};
}

impl Settings {
    /// Fills every unset field from the enclosing scope (`common` for a
    /// resource): the innermost value wins, as in DRBD.
    pub fn inherit(&mut self, parent: &Settings) {
        inherit_fields!(
            self,
            parent,
            protocol,
            cram_hmac_alg,
            shared_secret,
            after_sb_0pri,
            after_sb_1pri,
            after_sb_2pri,
            csums_alg,
            verify_alg,
            timeout_ms,
            connect_int_ms,
            ping_int_ms,
            ping_timeout_ms,
            wfc_timeout_ms,
            degr_wfc_timeout_ms,
            on_io_error,
            resync_rate_bytes,
            split_brain,
            local_io_error,
            fence_peer,
            pri_lost_after_sb,
            device,
            disk,
            meta_disk
        );
    }
}

/// `device`: the path the replicated block device appears at, and DRBD's minor
/// when given (`device /dev/drbd0 minor 0;`, or `device minor 0;` for
/// `/dev/drbd0`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// Absolute path, e.g. `/dev/drbd0`.
    pub path: String,
    /// The minor number, when written.
    pub minor: Option<u32>,
}

/// One `on HOST { }` section, with the resource-level values inherited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostConf {
    /// The host name as written (matched against the node name ignoring case).
    pub name: String,
    /// Where the section starts, for messages: `file:line`.
    pub at: String,
    /// `device`.
    pub device: Device,
    /// `disk`: the backing device or file.
    pub disk: String,
    /// `address`: where this host listens for the replication connection.
    pub address: SocketAddr,
    /// `meta-disk`.
    pub meta_disk: MetaDisk,
}

/// One `resource NAME { }`, with `common` inherited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceConf {
    /// The resource name (`repl` in the guide).
    pub name: String,
    /// Where the resource starts, for messages: `file:line`.
    pub at: String,
    /// The options, `common`'s filled in where the resource has none.
    pub settings: Settings,
    /// The two `on` sections, in file order.
    pub hosts: [HostConf; 2],
}

/// A parsed drbd.conf (with its includes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrbdConf {
    /// Every resource, in file order.
    pub resources: Vec<ResourceConf>,
    /// Ignored options and includes that matched nothing, in reading order.
    pub warnings: Vec<DrbdWarning>,
}

/// The `handlers` a resource runs (commands as written, run by `sh -c`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Handlers {
    /// `split-brain`: split brain detected (not auto-resolved).
    pub split_brain: Option<String>,
    /// `local-io-error`: with `on-io-error call-local-io-error`.
    pub local_io_error: Option<String>,
    /// `fence-peer`: before promoting while the peer's state is unknown.
    pub fence_peer: Option<String>,
    /// `pri-lost-after-sb`: this Primary lost the split-brain resolution.
    pub pri_lost_after_sb: Option<String>,
}

/// One resource as this node runs it: everything the shell needs for this node
/// and its peer, DRBD's defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedResource {
    /// The resource name.
    pub name: String,
    /// This node's `on` section name.
    pub host: String,
    /// The peer's `on` section name.
    pub peer_host: String,
    /// Where the block device appears on this node.
    pub device: Device,
    /// This node's backing disk.
    pub disk: String,
    /// This node's metadata.
    pub meta_disk: MetaDisk,
    /// Where this node listens.
    pub address: SocketAddr,
    /// Where the peer listens.
    pub peer_address: SocketAddr,
    /// `protocol`.
    pub protocol: Protocol,
    /// Resync rate limit in bytes per second.
    pub resync_rate_bytes: u64,
    /// Split-brain policies, `discard-node-NAME` resolved for this node.
    pub after_sb_0pri: AfterSb0,
    /// With one Primary.
    pub after_sb_1pri: AfterSb1,
    /// With two Primaries.
    pub after_sb_2pri: AfterSb2,
    /// `on-io-error`.
    pub on_io_error: OnIoError,
    /// Handler commands.
    pub handlers: Handlers,
    /// The HMAC for the connection's challenge-response, when set.
    pub cram_hmac_alg: Option<String>,
    /// The connection's secret (never printed).
    pub shared_secret: Option<String>,
    /// `csums-alg`: resync compares digests first.
    pub csums_alg: Option<String>,
    /// `verify-alg`: online verify's digest.
    pub verify_alg: Option<String>,
    /// `timeout`: a request unanswered this long breaks the connection.
    pub timeout: Duration,
    /// `connect-int`: between connection attempts.
    pub connect_int: Duration,
    /// `ping-int`: idle time before a ping.
    pub ping_int: Duration,
    /// `ping-timeout`: how long a ping may go unanswered.
    pub ping_timeout: Duration,
    /// `wfc-timeout`: None waits forever for the peer at start-up.
    pub wfc_timeout: Option<Duration>,
    /// `degr-wfc-timeout`: the same, after a degraded shutdown.
    pub degr_wfc_timeout: Option<Duration>,
    /// True on the node whose replication address sorts lower (the engine's
    /// tiebreak where DRBD compares node addresses).
    pub lower_node: bool,
}

impl ResolvedResource {
    /// True when resync compares digests (`csums-alg` set).
    pub fn csums(&self) -> bool {
        self.csums_alg.is_some()
    }

    /// True when online verify is configured (`verify-alg` set).
    pub fn verify(&self) -> bool {
        self.verify_alg.is_some()
    }

    /// The engine's configuration, given the layout read from the metadata.
    pub fn replica_config(&self, layout: Layout) -> ReplicaConfig {
        ReplicaConfig {
            name: self.name.clone(),
            protocol: self.protocol,
            layout,
            resync_rate: self.resync_rate_bytes,
            csums: self.csums(),
            after_sb_0pri: self.after_sb_0pri,
            after_sb_1pri: self.after_sb_1pri,
            after_sb_2pri: self.after_sb_2pri,
            on_io_error: self.on_io_error,
            ping_interval: self.ping_int,
            ping_timeout: self.ping_timeout,
            lower_node: self.lower_node,
        }
    }

    /// One `drbd_resource NAME key=value...` line for `check-config`: every
    /// effective setting, the secret shown only as set or not.
    pub fn render_effective(&self) -> String {
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".to_string());
        let secs = |d: &Option<Duration>| d.map_or(0, |d| d.millis());
        format!(
            "drbd_resource {} host={} peer={} device={} disk={} meta_disk={} address={} \
             peer_address={} protocol={} resync_rate_bytes={} after_sb_0pri={:?} \
             after_sb_1pri={:?} after_sb_2pri={:?} on_io_error={:?} cram_hmac_alg={} \
             shared_secret={} csums_alg={} verify_alg={} timeout_ms={} connect_int_ms={} \
             ping_int_ms={} ping_timeout_ms={} wfc_timeout_ms={} degr_wfc_timeout_ms={} \
             handlers={}",
            self.name,
            self.host,
            self.peer_host,
            self.device.path,
            self.disk,
            self.meta_disk,
            self.address,
            self.peer_address,
            self.protocol,
            self.resync_rate_bytes,
            self.after_sb_0pri,
            self.after_sb_1pri,
            self.after_sb_2pri,
            self.on_io_error,
            opt(&self.cram_hmac_alg),
            if self.shared_secret.is_some() {
                "set"
            } else {
                "none"
            },
            opt(&self.csums_alg),
            opt(&self.verify_alg),
            self.timeout.millis(),
            self.connect_int.millis(),
            self.ping_int.millis(),
            self.ping_timeout.millis(),
            secs(&self.wfc_timeout),
            secs(&self.degr_wfc_timeout),
            self.handler_names(),
        )
    }

    /// The configured handlers' names, comma-separated (`none` when none).
    fn handler_names(&self) -> String {
        let h = &self.handlers;
        let names: Vec<&str> = [
            ("split-brain", &h.split_brain),
            ("local-io-error", &h.local_io_error),
            ("fence-peer", &h.fence_peer),
            ("pri-lost-after-sb", &h.pri_lost_after_sb),
        ]
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(n, _)| *n)
        .collect();
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(",")
        }
    }
}

impl DrbdConf {
    /// Parses `text` (the file named `file`, e.g. `drbd.conf`) and everything
    /// it includes through `reader`.
    pub fn parse(
        file: &str,
        text: &str,
        reader: &mut dyn IncludeReader,
    ) -> Result<DrbdConf, DrbdError> {
        let mut files = vec![file.to_string()];
        let mut warnings = Vec::new();
        let top = expand_includes(&mut files, text, reader, &mut warnings)?;
        let mut interp = Interp {
            files: &files,
            warnings: &mut warnings,
        };
        let resources = interp.top_level(&top)?;
        let conf = DrbdConf {
            resources,
            warnings,
        };
        conf.check_shared()?;
        Ok(conf)
    }

    /// The resource names, in file order.
    pub fn names(&self) -> Vec<&str> {
        self.resources.iter().map(|r| r.name.as_str()).collect()
    }

    /// The resource named `name`.
    pub fn resource(&self, name: &str) -> Option<&ResourceConf> {
        self.resources.iter().find(|r| r.name == name)
    }

    /// The resources that have an `on` section for `node` (DRBD ignores the
    /// others on this host): what `drbddisk` without a name means.
    pub fn resources_on(&self, node: &str) -> Vec<&ResourceConf> {
        self.resources
            .iter()
            .filter(|r| r.hosts.iter().any(|h| h.name.eq_ignore_ascii_case(node)))
            .collect()
    }

    /// Everything the shell needs to run resource `name` on `this_node` (its
    /// `on` section matched ignoring case, as node names are): this host's and
    /// the peer's sections, the options with DRBD's defaults. Errors name the
    /// resource's `file:line`.
    pub fn resource_for(&self, name: &str, this_node: &str) -> Result<ResolvedResource, String> {
        let Some(res) = self.resource(name) else {
            return Err(unknown_resource(name, &self.names()));
        };
        let Some(local) = res
            .hosts
            .iter()
            .position(|h| h.name.eq_ignore_ascii_case(this_node))
        else {
            return Err(format!(
                "{}: resource '{}' has no `on {}` section (hosts: {}, {})",
                res.at, res.name, this_node, res.hosts[0].name, res.hosts[1].name
            ));
        };
        let (host, peer) = (&res.hosts[local], &res.hosts[1 - local]);
        let s = &res.settings;
        let after_sb_0pri = match &s.after_sb_0pri {
            None => AfterSb0::Disconnect,
            Some(AfterSb0Spec::Policy(p)) => *p,
            Some(AfterSb0Spec::DiscardNode(n)) => {
                AfterSb0::DiscardNode(n.eq_ignore_ascii_case(&host.name))
            }
        };
        let ms = |v: Option<u64>, default: u64| Duration::from_millis(v.unwrap_or(default));
        let forever = |v: Option<u64>| v.filter(|ms| *ms > 0).map(Duration::from_millis);
        Ok(ResolvedResource {
            name: res.name.clone(),
            host: host.name.clone(),
            peer_host: peer.name.clone(),
            device: host.device.clone(),
            disk: host.disk.clone(),
            meta_disk: host.meta_disk.clone(),
            address: host.address,
            peer_address: peer.address,
            protocol: s.protocol.unwrap_or(Protocol::C),
            resync_rate_bytes: s.resync_rate_bytes.unwrap_or(RESYNC_RATE_DEFAULT_BYTES),
            after_sb_0pri,
            after_sb_1pri: s.after_sb_1pri.unwrap_or(AfterSb1::Disconnect),
            after_sb_2pri: s.after_sb_2pri.unwrap_or(AfterSb2::Disconnect),
            on_io_error: s.on_io_error.unwrap_or(OnIoError::Detach),
            handlers: Handlers {
                split_brain: s.split_brain.clone(),
                local_io_error: s.local_io_error.clone(),
                fence_peer: s.fence_peer.clone(),
                pri_lost_after_sb: s.pri_lost_after_sb.clone(),
            },
            cram_hmac_alg: s.cram_hmac_alg.clone(),
            shared_secret: s.shared_secret.clone(),
            csums_alg: s.csums_alg.clone(),
            verify_alg: s.verify_alg.clone(),
            timeout: ms(s.timeout_ms, TIMEOUT_DEFAULT_MS),
            connect_int: ms(s.connect_int_ms, CONNECT_INT_DEFAULT_MS),
            ping_int: ms(s.ping_int_ms, PING_INT_DEFAULT_MS),
            ping_timeout: ms(s.ping_timeout_ms, PING_TIMEOUT_DEFAULT_MS),
            wfc_timeout: forever(s.wfc_timeout_ms),
            degr_wfc_timeout: forever(s.degr_wfc_timeout_ms),
            lower_node: host.address < peer.address,
        })
    }

    /// No two resources share a device, disk or metadata slot on one host, nor
    /// an address anywhere.
    fn check_shared(&self) -> Result<(), DrbdError> {
        let mut seen: Vec<(String, String, &ResourceConf, &HostConf)> = Vec::new();
        for res in &self.resources {
            for host in &res.hosts {
                let host_key = host.name.to_ascii_lowercase();
                let mut keys = vec![
                    ("device", format!("{host_key} {}", host.device.path)),
                    ("disk", format!("{host_key} {}", host.disk)),
                    ("address", host.address.to_string()),
                ];
                if let MetaDisk::External { .. } = &host.meta_disk {
                    keys.push(("meta-disk", format!("{host_key} {}", host.meta_disk)));
                }
                for (what, key) in keys {
                    if let Some((_, _, other, _)) =
                        seen.iter().find(|(w, k, _, _)| *w == what && *k == key)
                    {
                        return Err(shared_error(what, &key, res, host, other));
                    }
                    seen.push((what.to_string(), key, res, host));
                }
            }
        }
        Ok(())
    }
}

/// "resources 'a' and 'b' use the same device ..." at the second host section.
fn shared_error(
    what: &str,
    key: &str,
    res: &ResourceConf,
    host: &HostConf,
    other: &ResourceConf,
) -> DrbdError {
    let (file, line) = split_at(&host.at);
    let shown = key.rsplit(' ').next().unwrap_or(key);
    let message = if other.name == res.name {
        format!(
            "both hosts of resource '{}' use {what} {shown}; each needs its own",
            res.name
        )
    } else {
        format!(
            "resources '{}' ({}) and '{}' both use {what} {shown} on {}",
            other.name, other.at, res.name, host.name
        )
    };
    DrbdError {
        file,
        line,
        message,
    }
}

/// `file:line` back into its parts (the `at` strings this module builds).
fn split_at(at: &str) -> (String, usize) {
    match at.rsplit_once(':') {
        Some((file, line)) => (file.to_string(), line.parse().unwrap_or(0)),
        None => (at.to_string(), 0),
    }
}

/// "drbd.conf has no resource 'x' (resources: a, b)", with a suggestion.
fn unknown_resource(name: &str, names: &[&str]) -> String {
    let list = if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    };
    match closest(name, names.iter().copied()) {
        Some(near) => format!(
            "drbd.conf has no resource '{name}'; did you mean '{near}'? (resources: {list})"
        ),
        None => format!("drbd.conf has no resource '{name}' (resources: {list})"),
    }
}

// ==== Option tables ====

/// The sections a `common` or `resource` block may hold.
const SECTIONS: [&str; 6] = ["startup", "disk", "net", "syncer", "handlers", "options"];

/// Options bascule implements, by section.
const IMPLEMENTED: [(&str, &str); 22] = [
    ("startup", "wfc-timeout"),
    ("startup", "degr-wfc-timeout"),
    ("disk", "on-io-error"),
    ("disk", "resync-rate"),
    ("net", "protocol"),
    ("net", "cram-hmac-alg"),
    ("net", "shared-secret"),
    ("net", "after-sb-0pri"),
    ("net", "after-sb-1pri"),
    ("net", "after-sb-2pri"),
    ("net", "csums-alg"),
    ("net", "verify-alg"),
    ("net", "ping-int"),
    ("net", "ping-timeout"),
    ("net", "timeout"),
    ("net", "connect-int"),
    ("syncer", "rate"),
    ("syncer", "verify-alg"),
    ("syncer", "csums-alg"),
    ("handlers", "split-brain"),
    ("handlers", "local-io-error"),
    ("handlers", "fence-peer"),
];

/// `pri-lost-after-sb` and `outdate-peer` are implemented too (kept out of the
/// fixed-size table above for readability).
const IMPLEMENTED_HANDLERS_EXTRA: [&str; 2] = ["pri-lost-after-sb", "outdate-peer"];

/// Real DRBD options (8.0 to 8.4, and a few of 0.7) that bascule accepts and
/// ignores, by section, with a note when ignoring them matters for safety or
/// changes behaviour (empty otherwise).
pub const IGNORED: [(&str, &str, &str); 86] = [
    ("global", "usage-count", ""),
    ("global", "minor-count", ""),
    ("global", "dialog-refresh", ""),
    ("global", "disable-ip-verification", ""),
    ("global", "udev-always-use-vnr", ""),
    ("global", "cmd-timeout-short", ""),
    ("global", "cmd-timeout-medium", ""),
    ("global", "cmd-timeout-long", ""),
    ("startup", "outdated-wfc-timeout", ""),
    ("startup", "wait-after-sb", ""),
    ("startup", "become-primary-on", "bascule never promotes at start-up: haresources' drbddisk or `bascule disk primary` does"),
    ("startup", "stacked-timeouts", ""),
    ("disk", "fencing", "bascule does not run DRBD's resource fencing: it outdates the peer over the heartbeat links, and ha.cf `fence` configures STONITH"),
    ("disk", "size", ""),
    ("disk", "max-bio-bvecs", ""),
    ("disk", "no-disk-barrier", ""),
    ("disk", "no-disk-flushes", "bascule always flushes; the option only costs speed in DRBD"),
    ("disk", "no-disk-drain", ""),
    ("disk", "no-md-flushes", "bascule always flushes its metadata"),
    ("disk", "disk-barrier", ""),
    ("disk", "disk-flushes", ""),
    ("disk", "disk-drain", ""),
    ("disk", "md-flushes", ""),
    ("disk", "al-extents", ""),
    ("disk", "al-updates", ""),
    ("disk", "c-plan-ahead", ""),
    ("disk", "c-delay-target", ""),
    ("disk", "c-fill-target", ""),
    ("disk", "c-max-rate", ""),
    ("disk", "c-min-rate", ""),
    ("disk", "disk-timeout", "a hung backing disk is not detected by a timeout"),
    ("disk", "read-balancing", ""),
    ("disk", "discard-zeroes-if-aligned", ""),
    ("disk", "rs-discard-granularity", ""),
    ("disk", "disable-write-same", ""),
    ("disk", "use-bmbv", ""),
    ("disk", "resync-after", ""),
    ("net", "sndbuf-size", ""),
    ("net", "rcvbuf-size", ""),
    ("net", "max-buffers", ""),
    ("net", "max-epoch-size", ""),
    ("net", "ko-count", "a peer that stops answering is dropped only after `timeout`"),
    ("net", "allow-two-primaries", "bascule never allows two Primaries"),
    ("net", "unplug-watermark", ""),
    ("net", "data-integrity-alg", "replicated data is not checksummed end to end (TCP's checksum only)"),
    ("net", "no-tcp-cork", ""),
    ("net", "tcp-cork", ""),
    ("net", "on-congestion", ""),
    ("net", "congestion-fill", ""),
    ("net", "congestion-extents", ""),
    ("net", "use-rle", ""),
    ("net", "rr-conflict", "a resync-direction conflict always disconnects"),
    ("net", "always-asbp", ""),
    ("net", "fencing", "bascule does not run DRBD's resource fencing: it outdates the peer over the heartbeat links, and ha.cf `fence` configures STONITH"),
    ("net", "discard-my-data", "use `bascule disk connect --discard-my-data RES` instead"),
    ("net", "csums-after-crash-only", ""),
    ("net", "sock-check-timeout", ""),
    ("net", "max-buffers-per-volume", ""),
    ("syncer", "after", ""),
    ("syncer", "resync-after", ""),
    ("syncer", "al-extents", ""),
    ("syncer", "use-rle", ""),
    ("syncer", "cpu-mask", ""),
    ("syncer", "delay-probe-volume", ""),
    ("syncer", "delay-probe-interval", ""),
    ("syncer", "throttle-threshold", ""),
    ("syncer", "hold-off-threshold", ""),
    ("syncer", "c-plan-ahead", ""),
    ("syncer", "c-delay-target", ""),
    ("syncer", "c-fill-target", ""),
    ("syncer", "c-max-rate", ""),
    ("syncer", "c-min-rate", ""),
    ("syncer", "on-no-data-accessible", ""),
    ("handlers", "pri-on-incon-degr", "the handler is not run"),
    ("handlers", "pri-lost", "the handler is not run"),
    ("handlers", "initial-split-brain", ""),
    ("handlers", "before-resync-target", ""),
    ("handlers", "after-resync-target", ""),
    ("handlers", "before-resync-source", ""),
    ("handlers", "out-of-sync", ""),
    ("handlers", "unfence-peer", ""),
    // DRBD 0.7 names still found in configurations carried over since.
    ("startup", "incon-degr-cmd", "the command is not run"),
    ("net", "on-disconnect", "bascule always reconnects"),
    ("syncer", "group", ""),
    ("options", "cpu-mask", ""),
    ("options", "on-no-data-accessible", ""),
];

/// True when `key` is implemented in `section`.
fn implemented(section: &str, key: &str) -> bool {
    IMPLEMENTED.contains(&(section, key))
        || (section == "handlers" && IMPLEMENTED_HANDLERS_EXTRA.contains(&key))
}

/// The note for an ignored option, when `key` is one in `section`.
fn ignored(section: &str, key: &str) -> Option<&'static str> {
    IGNORED
        .iter()
        .find(|(s, k, _)| *s == section && *k == key)
        .map(|(_, _, note)| *note)
}

/// "unknown option 'x' in section 'y'", with where it belongs or the closest
/// name of that section.
fn unknown_option(section: &str, key: &str) -> String {
    let elsewhere = IMPLEMENTED
        .iter()
        .map(|(s, k)| (*s, *k))
        .chain(IGNORED.iter().map(|(s, k, _)| (*s, *k)))
        .find(|(s, k)| *k == key && *s != section);
    if let Some((home, _)) = elsewhere {
        return format!(
            "unknown option '{key}' in section '{section}'; it belongs in section '{home}'"
        );
    }
    let names = IMPLEMENTED
        .iter()
        .filter(|(s, _)| *s == section)
        .map(|(_, k)| *k)
        .chain(
            IGNORED
                .iter()
                .filter(|(s, _, _)| *s == section)
                .map(|(_, k, _)| *k),
        );
    match closest(key, names) {
        Some(near) => {
            format!("unknown option '{key}' in section '{section}'; did you mean '{near}'?")
        }
        None => format!("unknown option '{key}' in section '{section}'"),
    }
}

/// The name nearest to `word` within [`SUGGEST_DISTANCE_MAX`] edits.
fn closest<'a>(word: &str, names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    names
        .map(|n| (edit_distance(word, n), n))
        .filter(|(d, _)| *d <= SUGGEST_DISTANCE_MAX)
        .min()
        .map(|(_, n)| n)
}

/// Levenshtein distance (short inputs: option names).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

// ==== Lexer and block tree ====

/// A word or string, with its line.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Word {
    text: String,
    line: usize,
}

/// One statement: words, then `;` (body None) or a `{ }` block (body Some).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stmt {
    /// Index in the file list, for messages.
    file: usize,
    line: usize,
    words: Vec<Word>,
    body: Option<Vec<Stmt>>,
}

/// One token.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Word(String),
    Open,
    Close,
    Semi,
}

/// Splits `text` into tokens with their lines. Errors: an unterminated string.
fn lex(text: &str) -> Result<Vec<(Tok, usize)>, (usize, String)> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            c if c.is_whitespace() => {}
            '#' => {
                while chars.peek().is_some_and(|c| *c != '\n') {
                    chars.next();
                }
            }
            '{' => out.push((Tok::Open, line)),
            '}' => out.push((Tok::Close, line)),
            ';' => out.push((Tok::Semi, line)),
            '"' => {
                let start = line;
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => return Err((start, "string never closed by `\"`".into())),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            None => return Err((start, "string never closed by `\"`".into())),
                            Some(e) => s.push(e),
                        },
                        Some(c) => {
                            if c == '\n' {
                                line += 1;
                            }
                            s.push(c);
                        }
                    }
                }
                out.push((Tok::Word(s), start));
            }
            c => {
                let mut s = String::from(c);
                while chars
                    .peek()
                    .is_some_and(|c| !c.is_whitespace() && !"{};\"#".contains(*c))
                {
                    s.extend(chars.next());
                }
                out.push((Tok::Word(s), line));
            }
        }
    }
    Ok(out)
}

/// The words gathered so far as one statement (None when there are none).
fn take_stmt(file: usize, words: &mut Vec<Word>) -> Option<Stmt> {
    let line = words.first()?.line;
    Some(Stmt {
        file,
        line,
        words: std::mem::take(words),
        body: None,
    })
}

/// One token inside a `skip { }` block: tracks the depth, and returns the
/// finished (empty) skip statement when its closing `}` comes.
fn skip_token(skipping: &mut Option<(Stmt, usize)>, tok: &Tok) -> Option<Stmt> {
    let (_, depth) = skipping.as_mut()?;
    match tok {
        Tok::Open => *depth += 1,
        Tok::Close if *depth == 1 => {
            let (mut stmt, _) = skipping.take()?;
            stmt.body = Some(Vec::new());
            return Some(stmt);
        }
        Tok::Close => *depth -= 1,
        _ => {}
    }
    None
}

/// Builds the statement tree of one file with an explicit stack (no recursion).
fn build(file: usize, text: &str) -> Result<Vec<Stmt>, (usize, String)> {
    // Each level: the statement whose block is open (None at top) and its body.
    let mut stack: Vec<(Option<Stmt>, Vec<Stmt>)> = vec![(None, Vec::new())];
    let mut words: Vec<Word> = Vec::new();
    // An open `skip { }` block and its depth: its content is not parsed, as in
    // drbdadm (only braces and strings must balance).
    let mut skipping: Option<(Stmt, usize)> = None;
    for (tok, line) in lex(text)? {
        if skipping.is_some() {
            if let Some(stmt) = skip_token(&mut skipping, &tok) {
                stack.last_mut().expect("level").1.push(stmt);
            }
            continue;
        }
        match tok {
            Tok::Word(text) => words.push(Word { text, line }),
            Tok::Semi => {
                let stmt = take_stmt(file, &mut words)
                    .ok_or((line, "`;` without an option before it".to_string()))?;
                stack.last_mut().expect("top level").1.push(stmt);
            }
            Tok::Open => {
                if stack.len() > DEPTH_MAX {
                    return Err((line, format!("blocks nested deeper than {DEPTH_MAX}")));
                }
                let stmt = take_stmt(file, &mut words)
                    .ok_or((line, "`{` without a section name before it".to_string()))?;
                if stmt.words[0].text == "skip" {
                    skipping = Some((stmt, 1));
                    continue;
                }
                stack.push((Some(stmt), Vec::new()));
            }
            Tok::Close => {
                if let Some(w) = words.first() {
                    return Err((w.line, format!("missing `;` after '{}'", w.text)));
                }
                let (Some(mut stmt), body) = stack.pop().expect("top level") else {
                    return Err((line, "`}` without a matching `{`".into()));
                };
                stmt.body = Some(body);
                stack.last_mut().expect("parent level").1.push(stmt);
            }
        }
    }
    if let Some((stmt, _)) = skipping {
        return Err((stmt.line, "`skip {` is never closed by `}`".into()));
    }
    if let Some(w) = words.first() {
        return Err((w.line, format!("missing `;` after '{}'", w.text)));
    }
    let (open, body) = stack.pop().expect("top level");
    match open {
        None => Ok(body),
        Some(stmt) => {
            let name = stmt.words[0].text.clone();
            // The innermost unclosed block: report where it opened.
            Err((stmt.line, format!("`{name} {{` is never closed by `}}`")))
        }
    }
}

/// True when `pattern` has a wildcard (`*`, `?`, `[`).
fn has_wildcard(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

/// Shell-style wildcard match of one path component, as glob(3) for drbdadm's
/// `include`: `*` any run, `?` one character, `[abc]`, `[a-z]`, `[!a]` one of a
/// set; a leading `.` must be matched literally. Iterative (backtracks to the
/// last `*` only), so linear in practice and never recursing.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    if n.first() == Some(&'.') && p.first() != Some(&'.') {
        return false;
    }
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        let step = match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
                continue;
            }
            Some('?') => Some(pi + 1),
            Some('[') => class_match(&p, pi, n[ni]),
            Some(c) if *c == n[ni] => Some(pi + 1),
            _ => None,
        };
        match (step, star) {
            (Some(next), _) => {
                pi = next;
                ni += 1;
            }
            (None, Some((sp, sn))) => {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            }
            (None, None) => return false,
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Matches `c` against the class starting at `p[start] == '['`: the index after
/// its `]` when it matches, None when it does not (or the class is unclosed
/// and `[` is not the character).
fn class_match(p: &[char], start: usize, c: char) -> Option<usize> {
    let mut i = start + 1;
    let negate = matches!(p.get(i), Some('!') | Some('^'));
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    while i < p.len() && (p[i] != ']' || first) {
        first = false;
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            hit |= p[i] <= c && c <= p[i + 2];
            i += 3;
        } else {
            hit |= p[i] == c;
            i += 1;
        }
    }
    if i >= p.len() {
        // Unclosed: `[` is an ordinary character.
        return (c == '[').then_some(start + 1);
    }
    (hit != negate).then_some(i + 1)
}

/// The directory part of `path` with its trailing `/`, or "" for a bare name.
fn dir_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(i) => &path[..=i],
        None => "",
    }
}

/// The files one `include` statement of file `including` reads: an error for
/// a malformed statement, a wildcard in a directory, an unreadable file or a
/// missing plain path; a warning for a pattern that matches nothing.
fn include_matches(
    stmt: &Stmt,
    including: &str,
    reader: &mut dyn IncludeReader,
    warnings: &mut Vec<DrbdWarning>,
) -> Result<Vec<(String, String)>, DrbdError> {
    let err = |message: String| DrbdError {
        file: including.to_string(),
        line: stmt.line,
        message,
    };
    let [_, pattern] = stmt.words.as_slice() else {
        return Err(err(
            "include takes one file name or pattern: include \"drbd.d/*.res\";".into(),
        ));
    };
    if stmt.body.is_some() {
        return Err(err("include takes no `{ }` block".into()));
    }
    let pattern = &pattern.text;
    let joined = if pattern.starts_with('/') {
        pattern.clone()
    } else {
        format!("{}{}", dir_of(including), pattern)
    };
    if has_wildcard(dir_of(&joined)) {
        return Err(err(format!(
            "include \"{pattern}\": wildcards are supported in the file name only"
        )));
    }
    let found = reader
        .read_matching(&joined)
        .map_err(|e| err(format!("include \"{pattern}\": {e}")))?;
    if found.is_empty() {
        if !has_wildcard(&joined) {
            return Err(err(format!(
                "include \"{pattern}\": no such file ({joined})"
            )));
        }
        warnings.push(DrbdWarning {
            file: including.to_string(),
            line: stmt.line,
            message: format!("include \"{pattern}\" matches no file ({joined})"),
        });
    }
    Ok(found)
}

/// Lexes the top file, then splices in every top-level `include` (breadth
/// first through a queue, bounded by [`INCLUDE_FILES_MAX`]). Returns the
/// top-level statements of every file in reading order.
fn expand_includes(
    files: &mut Vec<String>,
    text: &str,
    reader: &mut dyn IncludeReader,
    warnings: &mut Vec<DrbdWarning>,
) -> Result<Vec<Stmt>, DrbdError> {
    let at = |files: &[String], file: usize, (line, message): (usize, String)| DrbdError {
        file: files[file].clone(),
        line,
        message,
    };
    let mut pending: VecDeque<Stmt> = build(0, text).map_err(|e| at(files, 0, e))?.into();
    let mut out = Vec::new();
    while let Some(stmt) = pending.pop_front() {
        if stmt.words[0].text != "include" {
            out.push(stmt);
            continue;
        }
        let including = files[stmt.file].clone();
        let err = |message: String| DrbdError {
            file: including.clone(),
            line: stmt.line,
            message,
        };
        let found = include_matches(&stmt, &including, reader, warnings)?;
        // Included files' statements come before the rest of the queue, in
        // order, so that the reading order is the text order.
        let mut spliced = Vec::new();
        for (path, text) in found {
            if files.len() >= INCLUDE_FILES_MAX {
                return Err(err(format!(
                    "more than {INCLUDE_FILES_MAX} files included (does a file include itself?)"
                )));
            }
            files.push(path);
            let index = files.len() - 1;
            spliced.extend(build(index, &text).map_err(|e| at(files, index, e))?);
        }
        for s in spliced.into_iter().rev() {
            pending.push_front(s);
        }
    }
    Ok(out)
}

// ==== Interpretation ====

/// Walks the statement tree level by level (top, resource, section, `on`).
struct Interp<'a> {
    files: &'a [String],
    warnings: &'a mut Vec<DrbdWarning>,
}

/// A resource under construction: its settings, where each was set (to refuse
/// a second setting in one scope) and its `on` sections as written.
#[derive(Default)]
struct Scope {
    settings: Settings,
    /// (option name, line) for each option set in this scope.
    set: Vec<(String, usize)>,
    hosts: Vec<(Stmt, String)>,
}

impl Interp<'_> {
    fn error(&self, stmt: &Stmt, line: usize, message: String) -> DrbdError {
        DrbdError {
            file: self.files[stmt.file].clone(),
            line,
            message,
        }
    }

    fn at(&self, stmt: &Stmt) -> String {
        format!("{}:{}", self.files[stmt.file], stmt.line)
    }

    fn warn(&mut self, stmt: &Stmt, message: String) {
        self.warnings.push(DrbdWarning {
            file: self.files[stmt.file].clone(),
            line: stmt.line,
            message,
        });
    }

    /// The top level: `global`, `common`, `resource`, `skip` (includes are
    /// already spliced in). `common` applies to every resource, wherever it is.
    fn top_level(&mut self, top: &[Stmt]) -> Result<Vec<ResourceConf>, DrbdError> {
        let mut common: Option<(Scope, &Stmt)> = None;
        let mut resources: Vec<(Scope, &Stmt, String)> = Vec::new();
        for stmt in top {
            let keyword = stmt.words[0].text.as_str();
            let body = match (&stmt.body, keyword) {
                (_, "skip") => {
                    self.warn(stmt, "'skip' section ignored".into());
                    continue;
                }
                (Some(body), _) => body,
                (None, _) => {
                    return Err(self.error(stmt, stmt.line, format!(
                        "'{keyword}' at top level: expected global {{ }}, common {{ }}, resource NAME {{ }} or include \"FILE\";"
                    )))
                }
            };
            match (keyword, stmt.words.len()) {
                ("global", 1) => self.options("global", body, &mut Scope::default())?,
                ("common", 1) => {
                    if let Some((_, first)) = &common {
                        let first = self.at(first);
                        return Err(self.error(
                            stmt,
                            stmt.line,
                            format!("second `common` section (the first is at {first})"),
                        ));
                    }
                    let mut scope = Scope::default();
                    self.resource_body(body, &mut scope, false)?;
                    common = Some((scope, stmt));
                }
                ("resource", 2) => {
                    let name = stmt.words[1].text.clone();
                    self.check_resource_name(stmt, &name, &resources)?;
                    let mut scope = Scope::default();
                    self.resource_body(body, &mut scope, true)?;
                    resources.push((scope, stmt, name));
                }
                ("resource", _) => {
                    return Err(self.error(
                        stmt,
                        stmt.line,
                        "resource takes one name: resource NAME { ... }".into(),
                    ))
                }
                _ => {
                    let near = closest(
                        keyword,
                        ["global", "common", "resource", "include", "skip"].into_iter(),
                    );
                    let hint = near
                        .map(|n| format!("; did you mean '{n}'?"))
                        .unwrap_or_default();
                    return Err(self.error(
                        stmt,
                        stmt.line,
                        format!("unknown section '{keyword}' at top level{hint}"),
                    ));
                }
            }
        }
        let common = common.map(|(scope, _)| scope.settings).unwrap_or_default();
        resources
            .into_iter()
            .map(|(scope, stmt, name)| self.finish_resource(scope, stmt, name, &common))
            .collect()
    }

    fn check_resource_name(
        &self,
        stmt: &Stmt,
        name: &str,
        resources: &[(Scope, &Stmt, String)],
    ) -> Result<(), DrbdError> {
        let plain = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !plain {
            return Err(self.error(
                stmt,
                stmt.line,
                format!("resource name '{name}': use letters, digits, `_`, `.` and `-`"),
            ));
        }
        if name == "all" {
            return Err(self.error(
                stmt,
                stmt.line,
                "resource name 'all' is reserved: drbddisk and `bascule disk` use it for every resource".into(),
            ));
        }
        if let Some((_, first, _)) = resources.iter().find(|(_, _, n)| n == name) {
            let first = self.at(first);
            return Err(self.error(
                stmt,
                stmt.line,
                format!("resource '{name}' defined twice (first at {first})"),
            ));
        }
        Ok(())
    }

    /// The body of `common` or `resource`: sections, `protocol`, resource-level
    /// host options and (`in_resource` only) `on HOST` sections.
    fn resource_body(
        &mut self,
        body: &[Stmt],
        scope: &mut Scope,
        in_resource: bool,
    ) -> Result<(), DrbdError> {
        let container = if in_resource { "resource" } else { "common" };
        for stmt in body {
            let keyword = stmt.words[0].text.as_str();
            match (&stmt.body, keyword) {
                (Some(inner), section) if SECTIONS.contains(&section) && stmt.words.len() == 1 => {
                    self.options(section, inner, scope)?
                }
                (Some(_), "on") if in_resource => {
                    let [_, host] = stmt.words.as_slice() else {
                        return Err(self.error(stmt, stmt.line, "`on` takes one host name: on HOST { ... }".into()));
                    };
                    scope.hosts.push((stmt.clone(), host.text.clone()));
                }
                (Some(_), "volume" | "floating" | "stacked-on-top-of") => {
                    return Err(self.error(stmt, stmt.line, format!(
                        "'{keyword}' sections are not supported: bascule replicates one disk per resource between two `on HOST` sections"
                    )))
                }
                (None, "include") => {
                    return Err(self.error(
                        stmt,
                        stmt.line,
                        "include is supported at the top level only".into(),
                    ))
                }
                (None, "protocol" | "device" | "disk" | "meta-disk" | "flexible-meta-disk") => {
                    self.set_option(container, stmt, scope)?
                }
                (Some(_), "on") => {
                    return Err(self.error(
                        stmt,
                        stmt.line,
                        "`on HOST` sections belong in a resource, not in common".into(),
                    ))
                }
                (None, "startup" | "net" | "syncer" | "handlers" | "options" | "on") => {
                    return Err(self.error(stmt, stmt.line, format!("'{keyword}' here needs a `{{ }}` block")))
                }
                _ => {
                    let near = closest(keyword, SECTIONS.iter().copied().chain(["protocol", "device", "meta-disk", "on"]));
                    let hint = near.map(|n| format!("; did you mean '{n}'?")).unwrap_or_default();
                    return Err(self.error(stmt, stmt.line, format!("unknown option '{keyword}' in section '{container}'{hint}")));
                }
            }
        }
        Ok(())
    }

    /// The options of one section: implemented ones set `scope`, ignored ones
    /// warn, anything else is an error.
    fn options(
        &mut self,
        section: &str,
        body: &[Stmt],
        scope: &mut Scope,
    ) -> Result<(), DrbdError> {
        for stmt in body {
            let key = stmt.words[0].text.as_str();
            if stmt.body.is_some() {
                return Err(self.error(
                    stmt,
                    stmt.line,
                    format!(
                        "'{key}' in section '{section}' takes a value and `;`, not a `{{ }}` block"
                    ),
                ));
            }
            if implemented(section, key) {
                self.set_option(section, stmt, scope)?;
            } else if let Some(note) = ignored(section, key) {
                let message = if note.is_empty() {
                    format!("'{key}' is not implemented, ignored")
                } else {
                    format!("'{key}' is not implemented, ignored: {note}")
                };
                self.warn(stmt, message);
            } else {
                return Err(self.error(stmt, stmt.line, unknown_option(section, key)));
            }
        }
        Ok(())
    }

    /// Records one implemented option in `scope`, refusing a second setting.
    fn set_option(
        &mut self,
        section: &str,
        stmt: &Stmt,
        scope: &mut Scope,
    ) -> Result<(), DrbdError> {
        let key = stmt.words[0].text.as_str();
        // `csums-alg` in net (8.4) and syncer (8.3) is one setting; so is
        // `rate`/`resync-rate` and `fence-peer`/`outdate-peer`.
        let canonical = match key {
            "rate" => "resync-rate",
            "outdate-peer" => "fence-peer",
            "flexible-meta-disk" => "meta-disk",
            k => k,
        };
        if let Some((_, first)) = scope.set.iter().find(|(k, _)| k == canonical) {
            return Err(self.error(
                stmt,
                stmt.line,
                format!("'{key}' set twice (first at line {first})"),
            ));
        }
        scope.set.push((canonical.to_string(), stmt.line));
        let args: Vec<&str> = stmt.words[1..].iter().map(|w| w.text.as_str()).collect();
        apply(&mut scope.settings, key, &args).map_err(|m| {
            self.error(
                stmt,
                stmt.line,
                format!("{key}: {m} (in section '{section}')"),
            )
        })
    }

    /// Applies `common`, checks the `on` sections and the timeouts.
    fn finish_resource(
        &mut self,
        mut scope: Scope,
        stmt: &Stmt,
        name: String,
        common: &Settings,
    ) -> Result<ResourceConf, DrbdError> {
        scope.settings.inherit(common);
        let s = &scope.settings;
        if scope.hosts.len() != 2 {
            return Err(self.error(stmt, stmt.line, format!(
                "resource '{name}' has {} `on HOST` sections; it needs exactly two (bascule replicates between a pair)",
                scope.hosts.len()
            )));
        }
        self.check_policies(stmt, &name, s, &scope.hosts)?;
        let h0 = self.host(&scope.hosts[0].0, &scope.hosts[0].1, s)?;
        let h1 = self.host(&scope.hosts[1].0, &scope.hosts[1].1, s)?;
        if h0.name.eq_ignore_ascii_case(&h1.name) {
            return Err(self.error(
                &scope.hosts[1].0,
                scope.hosts[1].0.line,
                format!("resource '{name}': second `on {}` section", h1.name),
            ));
        }
        Ok(ResourceConf {
            name,
            at: self.at(stmt),
            settings: scope.settings.clone(),
            hosts: [h0, h1],
        })
    }

    /// `timeout` below the intervals, `discard-node-NAME` naming a host, and a
    /// warning when `call-pri-lost-after-sb` has no handler to call.
    fn check_policies(
        &mut self,
        stmt: &Stmt,
        name: &str,
        s: &Settings,
        hosts: &[(Stmt, String)],
    ) -> Result<(), DrbdError> {
        let timeout = s.timeout_ms.unwrap_or(TIMEOUT_DEFAULT_MS);
        for (other, value) in [
            ("ping-int", s.ping_int_ms.unwrap_or(PING_INT_DEFAULT_MS)),
            (
                "connect-int",
                s.connect_int_ms.unwrap_or(CONNECT_INT_DEFAULT_MS),
            ),
        ] {
            if timeout >= value {
                let message = format!(
                    "resource '{name}': timeout ({timeout} ms) must be less than {other} ({value} ms)"
                );
                return Err(self.error(stmt, stmt.line, message));
            }
        }
        if let Some(AfterSb0Spec::DiscardNode(node)) = &s.after_sb_0pri {
            if !hosts.iter().any(|(_, h)| h.eq_ignore_ascii_case(node)) {
                let message = format!(
                    "resource '{name}': after-sb-0pri discard-node-{node} names no `on` host of the resource"
                );
                return Err(self.error(stmt, stmt.line, message));
            }
        }
        let calls_handler = s.after_sb_1pri == Some(AfterSb1::CallPeerPrimaryLostAfterSb)
            || s.after_sb_2pri == Some(AfterSb2::CallPeerPrimaryLostAfterSb);
        if calls_handler && s.pri_lost_after_sb.is_none() {
            self.warn(stmt, format!(
                "resource '{name}': call-pri-lost-after-sb without a pri-lost-after-sb handler: nothing will be run"
            ));
        }
        Ok(())
    }

    /// One `on HOST { }` section, with the resource-level device, disk and
    /// meta-disk as defaults.
    fn host(&mut self, stmt: &Stmt, name: &str, res: &Settings) -> Result<HostConf, DrbdError> {
        let mut scope = Scope::default();
        let mut address: Option<SocketAddr> = None;
        for opt in stmt.body.as_deref().unwrap_or_default() {
            let key = opt.words[0].text.as_str();
            match (&opt.body, key) {
                (None, "address") => {
                    if address.is_some() {
                        return Err(self.error(
                            opt,
                            opt.line,
                            "'address' set twice in this section".into(),
                        ));
                    }
                    let args: Vec<&str> = opt.words[1..].iter().map(|w| w.text.as_str()).collect();
                    address = Some(
                        parse_address(&args)
                            .map_err(|m| self.error(opt, opt.line, format!("address: {m}")))?,
                    );
                }
                (None, "device" | "disk" | "meta-disk" | "flexible-meta-disk") => {
                    self.set_option("on", opt, &mut scope)?
                }
                (Some(_), "volume") => {
                    return Err(self.error(
                        opt,
                        opt.line,
                        "'volume' sections are not supported: one device per resource".into(),
                    ))
                }
                (None, "node-id") => self.warn(opt, "'node-id' is not implemented, ignored".into()),
                _ => {
                    let near = closest(
                        key,
                        [
                            "device",
                            "disk",
                            "address",
                            "meta-disk",
                            "flexible-meta-disk",
                        ]
                        .into_iter(),
                    );
                    let hint = near
                        .map(|n| format!("; did you mean '{n}'?"))
                        .unwrap_or_default();
                    return Err(self.error(
                        opt,
                        opt.line,
                        format!("unknown option '{key}' in section 'on {name}'{hint}"),
                    ));
                }
            }
        }
        let s = &mut scope.settings;
        s.inherit(res);
        let missing =
            |what: &str| self.error(stmt, stmt.line, format!("`on {name}` has no '{what}'"));
        Ok(HostConf {
            name: name.to_string(),
            at: self.at(stmt),
            device: s.device.clone().ok_or_else(|| missing("device"))?,
            disk: s.disk.clone().ok_or_else(|| missing("disk"))?,
            address: address.ok_or_else(|| missing("address"))?,
            meta_disk: s.meta_disk.clone().ok_or_else(|| missing("meta-disk"))?,
        })
    }
}

// ==== Values ====

/// Sets one implemented option from its arguments; the message says what is
/// wrong with the value (the caller adds file, line and option).
fn apply(s: &mut Settings, key: &str, args: &[&str]) -> Result<(), String> {
    match key {
        "device" => s.device = Some(parse_device(args)?),
        "meta-disk" => s.meta_disk = Some(parse_meta_disk(args, true)?),
        "flexible-meta-disk" => s.meta_disk = Some(parse_meta_disk(args, false)?),
        _ => {}
    }
    if matches!(key, "device" | "meta-disk" | "flexible-meta-disk") {
        return Ok(());
    }
    let [value] = args else {
        return Err(format!("takes one value, found {}", args.len()));
    };
    let value = *value;
    match key {
        "protocol" => s.protocol = Some(parse_protocol(value)?),
        "disk" => s.disk = Some(parse_disk(value)?),
        "cram-hmac-alg" => s.cram_hmac_alg = Some(parse_alg(value)?),
        "csums-alg" => s.csums_alg = Some(parse_alg(value)?),
        "verify-alg" => s.verify_alg = Some(parse_alg(value)?),
        "shared-secret" => s.shared_secret = Some(parse_secret(value)?),
        "after-sb-0pri" => s.after_sb_0pri = Some(parse_after_sb_0pri(value)?),
        "after-sb-1pri" => s.after_sb_1pri = Some(parse_after_sb_1pri(value)?),
        "after-sb-2pri" => s.after_sb_2pri = Some(parse_after_sb_2pri(value)?),
        "on-io-error" => s.on_io_error = Some(parse_on_io_error(value)?),
        "rate" | "resync-rate" => s.resync_rate_bytes = Some(parse_rate(value)?),
        "timeout" => s.timeout_ms = Some(parse_time(value, 100, 1, 600)?),
        "ping-timeout" => s.ping_timeout_ms = Some(parse_time(value, 100, 1, 300)?),
        "connect-int" => s.connect_int_ms = Some(parse_time(value, 1000, 1, 120)?),
        "ping-int" => s.ping_int_ms = Some(parse_time(value, 1000, 1, 120)?),
        "wfc-timeout" => s.wfc_timeout_ms = Some(parse_time(value, 1000, 0, 300_000)?),
        "degr-wfc-timeout" => s.degr_wfc_timeout_ms = Some(parse_time(value, 1000, 0, 300_000)?),
        "split-brain" => s.split_brain = Some(parse_command(value)?),
        "local-io-error" => s.local_io_error = Some(parse_command(value)?),
        "fence-peer" | "outdate-peer" => s.fence_peer = Some(parse_command(value)?),
        "pri-lost-after-sb" => s.pri_lost_after_sb = Some(parse_command(value)?),
        other => unreachable!("option table lists '{other}' without a parser"),
    }
    Ok(())
}

fn parse_protocol(value: &str) -> Result<Protocol, String> {
    match value {
        "A" | "a" => Ok(Protocol::A),
        "B" | "b" => Ok(Protocol::B),
        "C" | "c" => Ok(Protocol::C),
        _ => Err(format!("'{value}' is not A, B or C")),
    }
}

/// An absolute path (DRBD's `disk none`, a diskless node, is not supported).
fn parse_disk(value: &str) -> Result<String, String> {
    if value == "none" {
        return Err("diskless nodes (`disk none`) are not supported".into());
    }
    if !value.starts_with('/') {
        return Err(format!("'{value}' is not an absolute path"));
    }
    Ok(value.to_string())
}

/// `PATH`, `PATH minor N` or `minor N` (= /dev/drbdN).
fn parse_device(args: &[&str]) -> Result<Device, String> {
    let minor = |n: &str| {
        n.parse::<u32>()
            .ok()
            .filter(|m| *m < 1 << 20)
            .ok_or_else(|| format!("minor '{n}' is not a number below 1048576"))
    };
    match args {
        [path] => Ok(Device {
            path: parse_disk(path)?,
            minor: None,
        }),
        ["minor", n] => {
            let m = minor(n)?;
            Ok(Device {
                path: format!("/dev/drbd{m}"),
                minor: Some(m),
            })
        }
        [path, "minor", n] => Ok(Device {
            path: parse_disk(path)?,
            minor: Some(minor(n)?),
        }),
        _ => Err("expected PATH, PATH minor N or minor N".into()),
    }
}

/// `internal`, `PATH [IDX]`, `PATH[IDX]` or `PATH` (flexible). `indexed` is
/// false for `flexible-meta-disk`, which takes a path only.
fn parse_meta_disk(args: &[&str], indexed: bool) -> Result<MetaDisk, String> {
    let index = |s: &str| -> Result<u32, String> {
        s.strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| format!("'{s}' is not an index like [0]"))
    };
    match args {
        ["internal"] if indexed => Ok(MetaDisk::Internal),
        [path] => match path.find('[') {
            Some(i) if indexed => Ok(MetaDisk::External {
                path: parse_disk(&path[..i])?,
                index: Some(index(&path[i..])?),
            }),
            _ => Ok(MetaDisk::External {
                path: parse_disk(path)?,
                index: None,
            }),
        },
        [path, idx] if indexed => Ok(MetaDisk::External {
            path: parse_disk(path)?,
            index: Some(index(idx)?),
        }),
        _ if indexed => Err("expected internal, PATH or PATH [INDEX]".into()),
        _ => Err("expected one PATH".into()),
    }
}

/// `[ipv4|ipv6] IP:PORT` (IPv6 as `[ADDR]:PORT`).
fn parse_address(args: &[&str]) -> Result<SocketAddr, String> {
    let (family, text) = match args {
        [text] => (None, *text),
        [family, text] => (Some(*family), *text),
        _ => return Err("expected [ipv4|ipv6] IP:PORT, e.g. 10.0.0.1:7788".into()),
    };
    if let Some(f) = family {
        if !matches!(f, "ipv4" | "ipv6") {
            return Err(format!(
                "address family '{f}' is not supported (ipv4 or ipv6)"
            ));
        }
    }
    let addr: SocketAddr = text
        .parse()
        .map_err(|_| format!("'{text}' is not IP:PORT, e.g. 10.0.0.1:7788"))?;
    let family_ok = match family {
        Some("ipv6") => addr.is_ipv6(),
        _ => addr.is_ipv4(),
    };
    if !family_ok {
        return Err(format!(
            "'{text}' does not match its address family (write `ipv6 [ADDR]:PORT` for IPv6)"
        ));
    }
    if addr.port() == 0 {
        return Err("port 0 is not a port to listen on".into());
    }
    if addr.ip().is_unspecified() || addr.ip().is_multicast() {
        return Err(format!("'{}' is not a host address", addr.ip()));
    }
    Ok(addr)
}

/// A digest name as the kernel crypto API spells it (`sha1`, `md5`, `crc32c`).
fn parse_alg(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_()".contains(c));
    if !ok {
        return Err(format!(
            "'{value}' is not an algorithm name like sha1 or crc32c"
        ));
    }
    Ok(value.to_ascii_lowercase())
}

fn parse_secret(value: &str) -> Result<String, String> {
    if value.is_empty() || value.len() > SHARED_SECRET_LEN_MAX {
        return Err(format!(
            "the secret must be 1 to {SHARED_SECRET_LEN_MAX} bytes"
        ));
    }
    Ok(value.to_string())
}

fn parse_command(value: &str) -> Result<String, String> {
    if value.trim().is_empty() {
        return Err("the handler command is empty".into());
    }
    Ok(value.to_string())
}

fn parse_after_sb_0pri(value: &str) -> Result<AfterSb0Spec, String> {
    Ok(AfterSb0Spec::Policy(match value {
        "disconnect" => AfterSb0::Disconnect,
        "discard-younger-primary" => AfterSb0::DiscardYoungerPrimary,
        "discard-older-primary" => AfterSb0::DiscardOlderPrimary,
        "discard-zero-changes" => AfterSb0::DiscardZeroChanges,
        "discard-least-changes" => AfterSb0::DiscardLeastChanges,
        _ => match value.strip_prefix("discard-node-") {
            Some(node) if !node.is_empty() => {
                return Ok(AfterSb0Spec::DiscardNode(node.to_string()))
            }
            _ => {
                return Err(bad_value(
                    value,
                    &[
                        "disconnect",
                        "discard-younger-primary",
                        "discard-older-primary",
                        "discard-zero-changes",
                        "discard-least-changes",
                        "discard-node-NAME",
                    ],
                ))
            }
        },
    }))
}

fn parse_after_sb_1pri(value: &str) -> Result<AfterSb1, String> {
    match value {
        "disconnect" => Ok(AfterSb1::Disconnect),
        "consensus" => Ok(AfterSb1::Consensus),
        "violently-as0p" => Ok(AfterSb1::ViolentlyAs0p),
        "discard-secondary" => Ok(AfterSb1::DiscardSecondary),
        "call-pri-lost-after-sb" => Ok(AfterSb1::CallPeerPrimaryLostAfterSb),
        _ => Err(bad_value(
            value,
            &[
                "disconnect",
                "consensus",
                "violently-as0p",
                "discard-secondary",
                "call-pri-lost-after-sb",
            ],
        )),
    }
}

fn parse_after_sb_2pri(value: &str) -> Result<AfterSb2, String> {
    match value {
        "disconnect" => Ok(AfterSb2::Disconnect),
        "violently-as0p" => Ok(AfterSb2::ViolentlyAs0p),
        "call-pri-lost-after-sb" => Ok(AfterSb2::CallPeerPrimaryLostAfterSb),
        _ => Err(bad_value(
            value,
            &["disconnect", "violently-as0p", "call-pri-lost-after-sb"],
        )),
    }
}

fn parse_on_io_error(value: &str) -> Result<OnIoError, String> {
    match value {
        "detach" => Ok(OnIoError::Detach),
        "pass_on" => Ok(OnIoError::PassOn),
        "call-local-io-error" => Ok(OnIoError::CallLocalIoError),
        _ => Err(bad_value(
            value,
            &["detach", "pass_on", "call-local-io-error"],
        )),
    }
}

/// "'x' is not one of a, b, c", with the nearest when close.
fn bad_value(value: &str, names: &[&str]) -> String {
    match closest(value, names.iter().copied()) {
        Some(near) => format!(
            "'{value}' is not one of {}; did you mean '{near}'?",
            names.join(", ")
        ),
        None => format!("'{value}' is not one of {}", names.join(", ")),
    }
}

/// A rate: bare KiB/s, or with a K/M/G suffix (binary bytes), as drbdadm.
fn parse_rate(value: &str) -> Result<u64, String> {
    let (digits, unit) = match value.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&value[..i], c.to_ascii_uppercase()),
        _ => (value, 'K'),
    };
    let multiplier: u64 = match unit {
        'K' => 1 << 10,
        'M' => 1 << 20,
        'G' => 1 << 30,
        _ => {
            return Err(format!(
                "'{value}': the unit must be K, M or G (bare numbers are KiB/s)"
            ))
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{value}' is not a number with an optional K, M or G"))?;
    let bytes = n.saturating_mul(multiplier);
    if !(RESYNC_RATE_MIN_BYTES..=RESYNC_RATE_MAX_BYTES).contains(&bytes) {
        return Err(format!("'{value}' is outside 1K..4G (bytes per second)"));
    }
    Ok(bytes)
}

/// A whole number of `unit_ms` in `min..=max`, returned in ms.
fn parse_time(value: &str, unit_ms: u64, min: u64, max: u64) -> Result<u64, String> {
    let unit = if unit_ms == 100 {
        "tenths of a second"
    } else {
        "seconds"
    };
    let n: u64 = value
        .parse()
        .map_err(|_| format!("'{value}' is not a whole number of {unit}"))?;
    if !(min..=max).contains(&n) {
        return Err(format!("{n} is outside {min}..{max} ({unit})"));
    }
    Ok(n * unit_ms)
}

/// Fuzz entry for drbd.conf (for a `config_parse`-style target): `data` is
/// the file (lossy UTF-8), with no includes available. Asserts the parser's
/// invariants: no panic, an error points at a line of the file and says
/// something, and every `Ok` resource resolves for both of its hosts with
/// distinct addresses and `timeout` below `ping-int`.
pub fn fuzz_drbd(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match DrbdConf::parse("drbd.conf", &text, &mut Vec::new()) {
        Err(e) => {
            assert!(e.line <= text.lines().count().max(1), "{e}");
            assert!(!e.message.is_empty());
        }
        Ok(conf) => {
            for r in &conf.resources {
                for h in &r.hosts {
                    let resolved = conf.resource_for(&r.name, &h.name).expect("resolves");
                    assert_ne!(resolved.address, resolved.peer_address);
                    assert!(resolved.timeout < resolved.ping_int);
                    assert!(resolved.timeout < resolved.connect_int);
                    assert!(resolved.resync_rate_bytes >= RESYNC_RATE_MIN_BYTES);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    /// The guide's drbd.conf, cut byte for byte from the seed.
    const GUIDE: &str = include_str!("../../tests/fixtures/drbd/guide.conf");

    #[track_caller]
    fn parse_with(text: &str, files: &[(&str, &str)]) -> Result<DrbdConf, DrbdError> {
        let mut reader: Vec<(String, String)> = files
            .iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect();
        DrbdConf::parse("drbd.conf", text, &mut reader)
    }

    #[track_caller]
    fn ok(text: &str) -> DrbdConf {
        parse_with(text, &[]).unwrap_or_else(|e| panic!("{e}"))
    }

    #[track_caller]
    fn err(text: &str) -> DrbdError {
        match parse_with(text, &[]) {
            Ok(conf) => panic!("accepted: {conf:?}"),
            Err(e) => e,
        }
    }

    /// A valid resource around `body` (which goes before the `on` sections).
    fn res(body: &str) -> String {
        format!(
            "resource r0 {{\n{body}\n  on a {{ device /dev/drbd0; disk /dev/sdb1; \
             address 10.0.0.1:7788; meta-disk internal; }}\n  on b {{ device /dev/drbd0; \
             disk /dev/sdb1; address 10.0.0.2:7788; meta-disk internal; }}\n}}\n"
        )
    }

    fn addr(a: u8, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, a)), port)
    }

    // ==== Tests for the guide's file ====

    #[test]
    fn guide_fixture_is_the_seed_verbatim() {
        let seed = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/seed/000_bc351af37fc1dad2.txt"
        ));
        // The seed lives outside the repository; when present, the fixture
        // must be a byte-for-byte cut of it.
        if let Ok(seed) = seed {
            assert!(seed.contains(GUIDE), "fixture differs from the seed");
        }
        assert!(GUIDE.starts_with("resource repl {\n  protocol C;\n"));
        assert!(GUIDE.ends_with("    meta-disk   internal;\n  }\n}\n"));
    }

    fn guide_expected(host: &str) -> ResolvedResource {
        let (me, peer, lower) = match host {
            "debian1" => (1, 2, true),
            _ => (2, 1, false),
        };
        ResolvedResource {
            name: "repl".into(),
            host: host.into(),
            peer_host: if me == 1 { "debian2" } else { "debian1" }.into(),
            device: Device {
                path: "/dev/drbd0".into(),
                minor: None,
            },
            disk: "/dev/hda5".into(),
            meta_disk: MetaDisk::Internal,
            address: addr(me, 7788),
            peer_address: addr(peer, 7788),
            protocol: Protocol::C,
            resync_rate_bytes: 100 * 1024 * 1024,
            after_sb_0pri: AfterSb0::Disconnect,
            after_sb_1pri: AfterSb1::Disconnect,
            after_sb_2pri: AfterSb2::Disconnect,
            on_io_error: OnIoError::Detach,
            handlers: Handlers::default(),
            cram_hmac_alg: None,
            shared_secret: None,
            csums_alg: None,
            verify_alg: None,
            timeout: Duration::from_millis(6_000),
            connect_int: Duration::from_secs(10),
            ping_int: Duration::from_secs(10),
            ping_timeout: Duration::from_millis(500),
            wfc_timeout: None,
            degr_wfc_timeout: Some(Duration::from_secs(120)),
            lower_node: lower,
        }
    }

    #[test]
    fn guide_resolves_for_both_nodes() {
        let conf = ok(GUIDE);
        assert_eq!(conf.names(), ["repl"]);
        assert!(conf.warnings.is_empty(), "{:?}", conf.warnings);
        for host in ["debian1", "debian2"] {
            assert_eq!(
                conf.resource_for("repl", host).unwrap(),
                guide_expected(host)
            );
        }
        // Node names match ignoring case, as ha.cf's are lower-cased.
        assert_eq!(
            conf.resource_for("repl", "Debian2").unwrap().host,
            "debian2"
        );
        assert_eq!(conf.resources[0].at, "drbd.conf:1");
        assert_eq!(conf.resources[0].hosts[1].at, "drbd.conf:23");
    }

    #[test]
    fn guide_replica_config_carries_the_policies() {
        let conf = ok(GUIDE);
        let r = conf.resource_for("repl", "debian2").unwrap();
        let layout = Layout {
            usable_bytes: 4096,
            meta_base: 4096,
            superblock_offset: 0,
            al_offset: 4096,
            al_bytes: 4096,
            bitmap_offset: 8192,
            bitmap_bytes: 4096,
            meta_bytes: 12288,
        };
        let c = r.replica_config(layout);
        assert_eq!(c.name, "repl");
        assert_eq!(
            (c.protocol, c.resync_rate, c.csums),
            (Protocol::C, 104_857_600, false)
        );
        assert_eq!(c.on_io_error, OnIoError::Detach);
        assert_eq!(c.ping_interval, Duration::from_secs(10));
        assert_eq!(c.ping_timeout, Duration::from_millis(500));
        assert!(!c.lower_node);
        assert_eq!(c.layout, layout);
    }

    #[test]
    fn guide_renders_effective_settings_without_secret() {
        let text = "resource repl { net { shared-secret \"s3cr3t\"; cram-hmac-alg sha1; } \
                    on a { device /dev/drbd0; disk /dev/sdb1; address 10.0.0.1:7788; meta-disk internal; } \
                    on b { device /dev/drbd0; disk /dev/sdb1; address 10.0.0.2:7788; meta-disk internal; } }";
        let line = ok(text)
            .resource_for("repl", "a")
            .unwrap()
            .render_effective();
        assert!(!line.contains("s3cr3t"), "{line}");
        assert!(line.contains(" shared_secret=set "), "{line}");
        assert!(
            line.starts_with("drbd_resource repl host=a peer=b device=/dev/drbd0 "),
            "{line}"
        );
        let guide = ok(GUIDE)
            .resource_for("repl", "debian1")
            .unwrap()
            .render_effective();
        assert!(guide.contains(" resync_rate_bytes=104857600 "), "{guide}");
        assert!(guide.contains(" degr_wfc_timeout_ms=120000 "), "{guide}");
        assert!(guide.ends_with(" handlers=none"), "{guide}");
    }

    // ==== Tests for DRBD 8 options ====

    #[test]
    fn every_implemented_option_is_carried() {
        let conf = ok(&res(
            "  net { cram-hmac-alg sha256; shared-secret \"a b\\\"c\"; after-sb-0pri discard-zero-changes;\n\
             after-sb-1pri discard-secondary; after-sb-2pri violently-as0p; csums-alg crc32c;\n\
             verify-alg MD5; ping-int 3; ping-timeout 7; timeout 20; connect-int 5; protocol A; }\n\
             startup { wfc-timeout 30; degr-wfc-timeout 0; }\n\
             disk { on-io-error call-local-io-error; resync-rate 40M; }\n\
             handlers { split-brain \"/usr/lib/drbd/notify-split-brain.sh root\"; local-io-error /bin/lie;\n\
             fence-peer /usr/lib/drbd/crm-fence-peer.sh; pri-lost-after-sb /bin/pl; }",
        ));
        let r = conf.resource_for("r0", "b").unwrap();
        assert_eq!(r.cram_hmac_alg.as_deref(), Some("sha256"));
        assert_eq!(r.shared_secret.as_deref(), Some("a b\"c"));
        assert_eq!(r.after_sb_0pri, AfterSb0::DiscardZeroChanges);
        assert_eq!(r.after_sb_1pri, AfterSb1::DiscardSecondary);
        assert_eq!(r.after_sb_2pri, AfterSb2::ViolentlyAs0p);
        assert_eq!((r.csums(), r.verify()), (true, true));
        assert_eq!(r.verify_alg.as_deref(), Some("md5"));
        assert_eq!(r.ping_int, Duration::from_secs(3));
        assert_eq!(r.ping_timeout, Duration::from_millis(700));
        assert_eq!(r.timeout, Duration::from_secs(2));
        assert_eq!(r.connect_int, Duration::from_secs(5));
        assert_eq!(r.protocol, Protocol::A);
        assert_eq!(r.wfc_timeout, Some(Duration::from_secs(30)));
        assert_eq!(r.degr_wfc_timeout, None);
        assert_eq!(r.on_io_error, OnIoError::CallLocalIoError);
        assert_eq!(r.resync_rate_bytes, 40 << 20);
        assert_eq!(
            r.handlers.split_brain.as_deref(),
            Some("/usr/lib/drbd/notify-split-brain.sh root")
        );
        assert_eq!(r.handlers.local_io_error.as_deref(), Some("/bin/lie"));
        assert_eq!(
            r.handlers.fence_peer.as_deref(),
            Some("/usr/lib/drbd/crm-fence-peer.sh")
        );
        assert_eq!(r.handlers.pri_lost_after_sb.as_deref(), Some("/bin/pl"));
        assert!(r.lower_node == (r.address < r.peer_address));
        assert!(conf.warnings.is_empty(), "{:?}", conf.warnings);
    }

    #[test]
    fn drbd83_syncer_section_and_outdate_peer_alias() {
        let conf = ok(&res(
            "  syncer { rate 10000; verify-alg sha1; csums-alg md5; }\n  handlers { outdate-peer /bin/op; }",
        ));
        let r = conf.resource_for("r0", "a").unwrap();
        assert_eq!(r.resync_rate_bytes, 10_000 * 1024);
        assert_eq!(r.verify_alg.as_deref(), Some("sha1"));
        assert_eq!(r.csums_alg.as_deref(), Some("md5"));
        assert_eq!(r.handlers.fence_peer.as_deref(), Some("/bin/op"));
    }

    #[test]
    fn rate_units_are_binary_bytes_per_second() {
        for (value, bytes) in [
            ("100M", 100u64 << 20),
            ("100m", 100 << 20),
            ("250", 250 << 10),
            ("1k", 1 << 10),
            ("2G", 2 << 30),
            ("4G", 4 << 30),
        ] {
            assert_eq!(parse_rate(value), Ok(bytes), "{value}");
        }
        for bad in ["0", "5G", "12X", "M", "-1", "1.5M", ""] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn after_sb_discard_node_resolves_per_node() {
        let conf = ok(&res("  net { after-sb-0pri discard-node-B; }"));
        let on_a = conf.resource_for("r0", "a").unwrap();
        let on_b = conf.resource_for("r0", "b").unwrap();
        assert_eq!(on_a.after_sb_0pri, AfterSb0::DiscardNode(false));
        assert_eq!(on_b.after_sb_0pri, AfterSb0::DiscardNode(true));
    }

    #[test]
    fn every_policy_word_parses() {
        for (w, p) in [
            ("disconnect", AfterSb0::Disconnect),
            ("discard-younger-primary", AfterSb0::DiscardYoungerPrimary),
            ("discard-older-primary", AfterSb0::DiscardOlderPrimary),
            ("discard-least-changes", AfterSb0::DiscardLeastChanges),
        ] {
            assert_eq!(parse_after_sb_0pri(w), Ok(AfterSb0Spec::Policy(p)));
        }
        assert_eq!(parse_after_sb_1pri("consensus"), Ok(AfterSb1::Consensus));
        assert_eq!(
            parse_after_sb_1pri("violently-as0p"),
            Ok(AfterSb1::ViolentlyAs0p)
        );
        assert_eq!(
            parse_after_sb_1pri("call-pri-lost-after-sb"),
            Ok(AfterSb1::CallPeerPrimaryLostAfterSb)
        );
        assert_eq!(parse_after_sb_2pri("disconnect"), Ok(AfterSb2::Disconnect));
        assert_eq!(
            parse_after_sb_2pri("call-pri-lost-after-sb"),
            Ok(AfterSb2::CallPeerPrimaryLostAfterSb)
        );
        assert_eq!(parse_on_io_error("pass_on"), Ok(OnIoError::PassOn));
        let e = parse_on_io_error("detatch").unwrap_err();
        assert!(e.contains("did you mean 'detach'"), "{e}");
        assert!(parse_after_sb_0pri("discard-node-").is_err());
    }

    #[test]
    fn resource_level_host_options_and_device_forms() {
        let conf = ok("resource r { device minor 3; disk /dev/vg/r; meta-disk /dev/md0 [2];\n\
             on a { address 10.0.0.1:7789; }\n\
             on b { address ipv4 10.0.0.2:7789; device /dev/drbd9 minor 9; flexible-meta-disk /dev/md1; }\n}");
        let a = conf.resource_for("r", "a").unwrap();
        assert_eq!(
            a.device,
            Device {
                path: "/dev/drbd3".into(),
                minor: Some(3)
            }
        );
        assert_eq!(a.disk, "/dev/vg/r");
        assert_eq!(
            a.meta_disk,
            MetaDisk::External {
                path: "/dev/md0".into(),
                index: Some(2)
            }
        );
        let b = conf.resource_for("r", "b").unwrap();
        assert_eq!(
            b.device,
            Device {
                path: "/dev/drbd9".into(),
                minor: Some(9)
            }
        );
        assert_eq!(
            b.meta_disk,
            MetaDisk::External {
                path: "/dev/md1".into(),
                index: None
            }
        );
        assert_eq!(b.meta_disk.to_string(), "/dev/md1");
        assert_eq!(a.meta_disk.to_string(), "/dev/md0[2]");
        assert_eq!(
            parse_meta_disk(&["/dev/md0[1]"], true),
            Ok(MetaDisk::External {
                path: "/dev/md0".into(),
                index: Some(1)
            })
        );
    }

    #[test]
    fn ipv6_addresses() {
        let conf = ok("resource r { on a { device /dev/drbd0; disk /dev/x; address ipv6 [fd00::1]:7788; meta-disk internal; }\n\
             on b { device /dev/drbd0; disk /dev/x; address ipv6 [fd00::2]:7788; meta-disk internal; } }");
        let a = conf.resource_for("r", "a").unwrap();
        assert!(a.address.is_ipv6() && a.lower_node);
    }

    // ==== Tests for common inheritance ====

    #[test]
    fn common_is_inherited_and_resources_override() {
        let text = format!(
            "global {{ usage-count no; }}\ncommon {{ protocol A; syncer {{ rate 33M; }} net {{ after-sb-0pri discard-zero-changes; shared-secret common; }} }}\n{}{}",
            res("  syncer { rate 1M; }"),
            res("").replace("r0", "r1").replace("drbd0", "drbd1").replace(":7788", ":7789").replace("sdb1", "sdc1"),
        );
        let conf = ok(&text);
        let r0 = conf.resource_for("r0", "a").unwrap();
        let r1 = conf.resource_for("r1", "a").unwrap();
        assert_eq!((r0.protocol, r1.protocol), (Protocol::A, Protocol::A));
        assert_eq!(
            (r0.resync_rate_bytes, r1.resync_rate_bytes),
            (1 << 20, 33 << 20)
        );
        assert_eq!(r1.after_sb_0pri, AfterSb0::DiscardZeroChanges);
        assert_eq!(r1.shared_secret.as_deref(), Some("common"));
        // Only usage-count warns.
        assert_eq!(conf.warnings.len(), 1, "{:?}", conf.warnings);
        assert_eq!(conf.resources_on("A").len(), 2);
        assert!(conf.resources_on("c").is_empty());
    }

    #[test]
    fn common_after_the_resources_still_applies() {
        let text = format!("{}common {{ protocol B; }}\n", res(""));
        assert_eq!(
            ok(&text).resource_for("r0", "a").unwrap().protocol,
            Protocol::B
        );
    }

    // ==== Tests for warnings ====

    #[test]
    fn unimplemented_options_warn_with_their_line() {
        let conf = ok(&res(
            "  net {\n    max-buffers 8000;\n    allow-two-primaries;\n  }\n  disk { fencing resource-only; no-disk-flushes; }\n  startup { become-primary-on both; }",
        ));
        let got: Vec<String> = conf.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(got.len(), 5, "{got:?}");
        assert_eq!(
            got[0],
            "drbd.conf:3: 'max-buffers' is not implemented, ignored"
        );
        assert_eq!(
            got[1],
            "drbd.conf:4: 'allow-two-primaries' is not implemented, ignored: bascule never allows two Primaries"
        );
        assert!(got[2].starts_with("drbd.conf:6: 'fencing' is not implemented, ignored: bascule does not run DRBD's resource fencing"), "{got:?}");
        assert!(
            got[3].starts_with("drbd.conf:6: 'no-disk-flushes'"),
            "{got:?}"
        );
        assert!(got[4].starts_with("drbd.conf:7: 'become-primary-on' is not implemented, ignored: bascule never promotes"), "{got:?}");
    }

    #[test]
    fn ignored_table_has_no_duplicates_or_implemented_names() {
        for (i, (s, k, _)) in IGNORED.iter().enumerate() {
            assert!(!implemented(s, k), "{s} {k}");
            assert!(SECTIONS.contains(s) || *s == "global", "{s}");
            assert!(
                !IGNORED[..i].iter().any(|(s2, k2, _)| s2 == s && k2 == k),
                "{s} {k}"
            );
        }
        assert!(IGNORED.len() >= 60);
    }

    #[test]
    fn call_pri_lost_without_handler_warns() {
        let conf = ok(&res("  net { after-sb-1pri call-pri-lost-after-sb; }"));
        assert_eq!(conf.warnings.len(), 1);
        assert!(conf.warnings[0]
            .message
            .contains("without a pri-lost-after-sb handler"));
    }

    // ==== Tests for errors, each with its line ====

    #[test]
    fn errors_name_their_line() {
        let cases: [(&str, usize, &str); 30] = [
            ("resource r0 {\n  syncer {\n    rat 100M;\n  }\n}", 3, "unknown option 'rat' in section 'syncer'; did you mean 'rate'?"),
            ("resource r0 {\n  startup {\n    verify-alg sha1;\n  }\n}", 3, "unknown option 'verify-alg' in section 'startup'; it belongs in section 'net'"),
            ("resource r0 {\n  net { frobnicate 1; }\n}", 2, "unknown option 'frobnicate' in section 'net'"),
            ("resource r0 {\n\n  protocol D;\n}", 3, "protocol: 'D' is not A, B or C"),
            ("resource r0 {\n  syncer { rate 0; }\n}", 2, "rate: '0' is outside 1K..4G"),
            ("resource r0 {\n  net { timeout 0; }\n}", 2, "timeout: 0 is outside 1..600"),
            ("resource r0 {\n  net { ping-int ten; }\n}", 2, "'ten' is not a whole number of seconds"),
            ("resource r0 {\n  net { after-sb-1pri discard-younger-primary; }\n}", 2, "after-sb-1pri: 'discard-younger-primary' is not one of"),
            ("resource r0 {\n  disk { on-io-error panic; }\n}", 2, "on-io-error: 'panic' is not one of"),
            ("resource r0 {\n  net { shared-secret \"\"; }\n}", 2, "the secret must be 1 to 64 bytes"),
            ("resource r0 {\n  net { cram-hmac-alg sha1 md5; }\n}", 2, "cram-hmac-alg: takes one value, found 2"),
            ("resource r0 {\n  syncer { rate 1M; }\n  disk { resync-rate 2M; }\n}", 3, "'resync-rate' set twice (first at line 2)"),
            ("resource r0 {\n  net { csums-alg md5; }\n  syncer { csums-alg md5; }\n}", 3, "'csums-alg' set twice"),
            ("resource r0 {\n  net {\n    max-buffers 8000\n  }\n}", 3, "missing `;` after 'max-buffers'"),
            ("resource r0 {\n  net {\n}\n", 1, "`resource {` is never closed"),
            ("resource r0 {\n}\n}\n", 3, "`}` without a matching `{`"),
            ("resource r0 {\n  net { ; }\n}", 2, "`;` without an option"),
            ("resource r0 {\n  handlers { split-brain \"/bin/x\n; }\n}", 2, "string never closed"),
            ("global { usage-count yes; }\nresorce r0 { }\n", 2, "unknown section 'resorce' at top level; did you mean 'resource'?"),
            ("protocol C;\n", 1, "'protocol' at top level"),
            ("resource { }\n", 1, "resource takes one name"),
            ("resource r/0 { }\n", 1, "resource name 'r/0'"),
            ("resource r0 {\n  on a { device /dev/drbd0; disk /dev/x; address 10.0.0.1:7788; meta-disk internal; }\n}", 1, "has 1 `on HOST` sections; it needs exactly two"),
            ("resource r0 {\n  volume 0 { }\n}", 2, "'volume' sections are not supported"),
            ("resource r0 {\n  net sndbuf-size 0;\n}", 2, "'net' here needs a `{ }` block"),
            ("resource r0 {\n  syncer { rate { } }\n}", 2, "takes a value and `;`, not a `{ }` block"),
            ("common { }\ncommon { }\n", 2, "second `common` section (the first is at drbd.conf:1)"),
            ("include \"nothere.conf\";\n", 1, "include \"nothere.conf\": no such file (nothere.conf)"),
            ("include \"*/x.conf\";\n", 1, "wildcards are supported in the file name only"),
            ("include;\n", 1, "include takes one file name"),
        ];
        for (text, line, message) in cases {
            let e = err(text);
            assert_eq!(
                (e.file.as_str(), e.line),
                ("drbd.conf", line),
                "{text:?}: {e}"
            );
            assert!(
                e.message.contains(message),
                "{text:?}: got `{e}`, want `{message}`"
            );
        }
    }

    #[test]
    fn more_errors_name_their_line() {
        let cases: [(&str, usize, &str); 14] = [
            ("skip {\n  resource x {\n", 1, "`skip {` is never closed"),
            ("resource r0 {\n  on { }\n}", 2, "`on` takes one host name"),
            ("\ninclude \"x\" { }\n", 2, "include takes no `{ }` block"),
            (
                "resource r0 {\n  meta-disk /dev/md0 [x];\n}",
                2,
                "'[x]' is not an index like [0]",
            ),
            (
                "resource r0 {\n  device minor 2000000;\n}",
                2,
                "minor '2000000' is not a number below 1048576",
            ),
            (
                "resource r0 {\n  device drbd0;\n}",
                2,
                "'drbd0' is not an absolute path",
            ),
            (
                "resource r0 {\n  net { cram-hmac-alg \"sha 1\"; }\n}",
                2,
                "is not an algorithm name",
            ),
            (
                "resource r0 {\n  handlers { split-brain \" \"; }\n}",
                2,
                "the handler command is empty",
            ),
            (
                "resource r0 {\n  flexible-meta-disk /dev/md0 [1];\n}",
                2,
                "expected one PATH",
            ),
            (
                "resource r0 {\n  include \"x.res\";\n}",
                2,
                "include is supported at the top level only",
            ),
            ("resource all { }\n", 1, "resource name 'all' is reserved"),
            (
                "resource r0 {\n  protcol C;\n}",
                2,
                "unknown option 'protcol' in section 'resource'; did you mean 'protocol'?",
            ),
            (
                "common {\n  on a { }\n}",
                2,
                "`on HOST` sections belong in a resource, not in common",
            ),
            (
                "global {\n  usage-count yes;\n  minor-count 300 400;\n  verbose;\n}",
                4,
                "unknown option 'verbose' in section 'global'",
            ),
        ];
        let long_secret = format!(
            "resource r0 {{\n  net {{ shared-secret {}; }}\n}}",
            "x".repeat(65)
        );
        let e = err(&long_secret);
        assert_eq!(e.line, 2);
        assert!(e.message.contains("1 to 64 bytes"), "{e}");
        for (text, line, message) in cases {
            let e = err(text);
            assert_eq!(
                (e.file.as_str(), e.line),
                ("drbd.conf", line),
                "{text:?}: {e}"
            );
            assert!(
                e.message.contains(message),
                "{text:?}: got `{e}`, want `{message}`"
            );
        }
    }

    #[test]
    fn seeded_mutations_never_panic_and_errors_point_inside() {
        fuzz_drbd(b"");
        fuzz_drbd(&[0xff, b'{', 0x80, b'}', b'\n', 0xc3]);
        // Deterministic xorshift mutations of the guide and a full-featured
        // file: byte flips, inserted syntax characters, truncations. Bounded:
        // 2 seeds x 3000 rounds.
        const ROUNDS: usize = 3000;
        const ALPHABET: &[u8] = b" \t\n{};\"#[]:.-0123456789MKGabcdefnoprstu/";
        let full = res(
            "  net { after-sb-0pri discard-node-a; timeout 20; shared-secret \"x\"; }\n  syncer { rate 1M; al-extents 7; }\n  handlers { split-brain \"/bin/sb\"; }",
        );
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for seed in [GUIDE.as_bytes(), full.as_bytes()] {
            for _ in 0..ROUNDS {
                let mut data = seed.to_vec();
                for _ in 0..(next() % 4 + 1) {
                    let at = (next() as usize) % data.len().max(1);
                    let byte = ALPHABET[(next() as usize) % ALPHABET.len()];
                    match next() % 3 {
                        0 if !data.is_empty() => data[at] = byte,
                        1 => data.insert(at.min(data.len()), byte),
                        _ => data.truncate(at.max(1)),
                    }
                }
                fuzz_drbd(&data);
            }
        }
    }

    #[test]
    fn on_section_errors_name_their_line() {
        let host_a = "  on a { device /dev/drbd0; disk /dev/x; address 10.0.0.1:7788; meta-disk internal; }\n";
        let cases: [(&str, usize, &str); 11] = [
            ("  on b {\n    device /dev/drbd0;\n    disk /dev/x;\n    meta-disk internal;\n  }\n", 3, "`on b` has no 'address'"),
            ("  on b { device /dev/drbd0; disk /dev/x; address 10.0.0.2:7788; }\n", 3, "`on b` has no 'meta-disk'"),
            ("  on b { disk /dev/x; address 10.0.0.2:7788; meta-disk internal; }\n", 3, "`on b` has no 'device'"),
            ("  on b { device /dev/drbd0; address 10.0.0.2:7788; meta-disk internal; }\n", 3, "`on b` has no 'disk'"),
            ("  on b { device /dev/drbd0; disk /dev/x;\n    address 10.0.0.256:7788; meta-disk internal; }\n", 4, "address: '10.0.0.256:7788' is not IP:PORT"),
            ("  on b { device /dev/drbd0; disk /dev/x;\n    address 10.0.0.2; meta-disk internal; }\n", 4, "is not IP:PORT"),
            ("  on b { device /dev/drbd0; disk /dev/x;\n    address 10.0.0.2:0; meta-disk internal; }\n", 4, "port 0"),
            ("  on b { device /dev/drbd0; disk /dev/x;\n    address sdp 10.0.0.2:7788; meta-disk internal; }\n", 4, "address family 'sdp' is not supported"),
            ("  on b { device /dev/drbd0; disk /dev/x;\n    adress 10.0.0.2:7788; meta-disk internal; }\n", 4, "unknown option 'adress' in section 'on b'; did you mean 'address'?"),
            ("  on b { device /dev/drbd0; disk none; address 10.0.0.2:7788; meta-disk internal; }\n", 3, "diskless"),
            ("  on A { device /dev/drbd0; disk /dev/x; address 10.0.0.2:7788; meta-disk internal; }\n", 3, "second `on A` section"),
        ];
        for (host_b, line, message) in cases {
            let text = format!("resource r0 {{\n{host_a}{host_b}}}\n");
            let e = err(&text);
            assert_eq!(e.line, line, "{host_b:?}: {e}");
            assert!(
                e.message.contains(message),
                "{host_b:?}: got `{e}`, want `{message}`"
            );
        }
    }

    #[test]
    fn timeout_must_be_below_ping_and_connect_intervals() {
        let e = err(&res("  net { timeout 100; ping-int 10; }"));
        assert_eq!(e.line, 1);
        assert!(
            e.message
                .contains("timeout (10000 ms) must be less than ping-int (10000 ms)"),
            "{e}"
        );
        ok(&res("  net { timeout 99; }"));
    }

    #[test]
    fn discard_node_must_name_a_host() {
        let e = err(&res("  net { after-sb-0pri discard-node-c; }"));
        assert!(
            e.message.contains("discard-node-c names no `on` host"),
            "{e}"
        );
    }

    #[test]
    fn two_resources_may_not_share_a_device_disk_or_address() {
        let second = |from: &str, to: &str| res("").replace("r0", "r1").replace(from, to);
        // Same everything: the device is reported first.
        let e = err(&format!("{}{}", res(""), second("", "")));
        assert_eq!(e.line, 8, "{e}");
        assert!(
            e.message
                .contains("resources 'r0' (drbd.conf:1) and 'r1' both use device /dev/drbd0 on a"),
            "{e}"
        );
        let distinct = |t: String| t.replace("drbd0", "drbd1").replace("sdb1", "sdc1");
        let e = err(&format!("{}{}", res(""), distinct(second("", ""))));
        assert!(e.message.contains("both use address 10.0.0.1:7788"), "{e}");
        let e = err(&format!("{}{}", res(""), second("drbd0", "drbd1")));
        assert!(e.message.contains("both use disk /dev/sdb1 on a"), "{e}");
        ok(&format!(
            "{}{}",
            res(""),
            distinct(second(":7788", ":7789"))
        ));
        // Both hosts of one resource on one address.
        let e = err(&res("").replace("10.0.0.2", "10.0.0.1"));
        assert!(
            e.message
                .contains("both hosts of resource 'r0' use address 10.0.0.1:7788"),
            "{e}"
        );
    }

    #[test]
    fn resource_for_errors() {
        let conf = ok(GUIDE);
        let e = conf.resource_for("rep", "debian1").unwrap_err();
        assert_eq!(
            e,
            "drbd.conf has no resource 'rep'; did you mean 'repl'? (resources: repl)"
        );
        let e = conf.resource_for("data", "debian1").unwrap_err();
        assert_eq!(e, "drbd.conf has no resource 'data' (resources: repl)");
        let e = conf.resource_for("repl", "debian3").unwrap_err();
        assert_eq!(
            e,
            "drbd.conf:1: resource 'repl' has no `on debian3` section (hosts: debian1, debian2)"
        );
    }

    #[test]
    fn resource_defined_twice() {
        let e = err(&format!("{}{}", res(""), res("")));
        assert_eq!(e.line, 6);
        assert!(
            e.message
                .contains("resource 'r0' defined twice (first at drbd.conf:1)"),
            "{e}"
        );
    }

    // ==== Tests for include ====

    #[test]
    fn include_with_a_glob_reads_matching_files_in_order() {
        let top = "# top\nglobal { usage-count no; }\ninclude \"drbd.d/global_common.conf\";\ninclude \"drbd.d/*.res\";\n";
        let common = "common { protocol B; }\n";
        let r1 = res("")
            .replace("r0", "r1")
            .replace("drbd0", "drbd1")
            .replace(":7788", ":7789")
            .replace("sdb1", "sdc1");
        let files = [
            ("drbd.d/global_common.conf", common),
            ("drbd.d/r1.res", r1.as_str()),
            ("drbd.d/r0.res", &res("")),
            ("drbd.d/r2.res.orig", "garbage {"),
            ("other/r3.res", "garbage {"),
        ];
        let files: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, *t)).collect();
        let conf = parse_with(top, &files).unwrap();
        assert_eq!(conf.names(), ["r0", "r1"]);
        assert_eq!(conf.resources[0].at, "drbd.d/r0.res:1");
        assert_eq!(conf.resource_for("r1", "b").unwrap().protocol, Protocol::B);
        assert_eq!(conf.warnings.len(), 1);
        assert_eq!(conf.warnings[0].file, "drbd.conf");
    }

    #[test]
    fn include_is_relative_to_the_including_file_and_errors_name_it() {
        let files = [
            ("etc/drbd.d/a.conf", "include \"b.conf\";\n"),
            (
                "etc/drbd.d/b.conf",
                "\nresource r0 {\n  syncer { rat 1M; }\n}\n",
            ),
        ];
        let mut reader: Vec<(String, String)> = files
            .iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect();
        let e = DrbdConf::parse("etc/drbd.conf", "include \"drbd.d/a.conf\";", &mut reader)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "etc/drbd.d/b.conf:3: unknown option 'rat' in section 'syncer'; did you mean 'rate'?"
        );
    }

    #[test]
    fn include_glob_matching_nothing_warns() {
        let conf = parse_with(&format!("include \"drbd.d/*.res\";\n{GUIDE}"), &[]).unwrap();
        assert_eq!(conf.warnings.len(), 1);
        assert_eq!(
            conf.warnings[0].to_string(),
            "drbd.conf:1: include \"drbd.d/*.res\" matches no file (drbd.d/*.res)"
        );
    }

    #[test]
    fn include_loop_is_bounded() {
        let e = parse_with(
            "include \"self.conf\";",
            &[("self.conf", "include \"self.conf\";\n")],
        )
        .unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("self.conf", 1));
        assert!(e.message.contains("more than 64 files included"), "{e}");
    }

    #[test]
    fn include_reader_error_is_reported_at_the_include() {
        struct Failing;
        impl IncludeReader for Failing {
            fn read_matching(&mut self, _: &str) -> Result<Vec<(String, String)>, String> {
                Err("permission denied".into())
            }
        }
        let e = DrbdConf::parse("drbd.conf", "\ninclude \"x.res\";", &mut Failing).unwrap_err();
        assert_eq!(
            e.to_string(),
            "drbd.conf:2: include \"x.res\": permission denied"
        );
    }

    // ==== Tests for the lexer and glob_match ====

    #[test]
    fn lexer_handles_comments_strings_and_lines() {
        let toks = lex("a # c { ;\n\"x\\\"y;{\" b;}\n").unwrap();
        assert_eq!(
            toks,
            [
                (Tok::Word("a".into()), 1),
                (Tok::Word("x\"y;{".into()), 2),
                (Tok::Word("b".into()), 2),
                (Tok::Semi, 2),
                (Tok::Close, 2),
            ]
        );
        assert_eq!(lex("\n\n\"abc\n").unwrap_err().0, 3);
    }

    #[test]
    fn skip_sections_and_skip_warn() {
        let conf = ok(&format!("skip {{ resource old {{ garbage }} }}\n{GUIDE}"));
        assert_eq!(conf.names(), ["repl"]);
        assert_eq!(conf.warnings.len(), 1);
    }

    #[test]
    fn glob_match_cases() {
        for (p, n, want) in [
            ("*.res", "r0.res", true),
            ("*.res", "r0.res.orig", false),
            ("*.res", ".hidden.res", false),
            (".*.res", ".hidden.res", true),
            ("r?.res", "r1.res", true),
            ("r?.res", "r10.res", false),
            ("r[0-2].res", "r2.res", true),
            ("r[0-2].res", "r3.res", false),
            ("r[!0-2].res", "r3.res", true),
            ("r[!0-2].res", "r1.res", false),
            ("*a*b*", "xxaxxbxx", true),
            ("*a*b", "xxaxxbxxc", false),
            ("abc", "abc", true),
            ("*", "", true),
            ("[", "[", true),
            ("a[", "ab", false),
        ] {
            assert_eq!(glob_match(p, n), want, "{p} {n}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let text = "resource r { ".repeat(20);
        let e = err(&text);
        assert!(e.message.contains("nested deeper than 8"), "{e}");
    }
}
