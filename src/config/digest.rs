//! Digest of the cluster-wide configuration, compared between the two nodes.
//!
//! Layer: pure. One 32-bit digest per file: ha.cf's node and timing lines,
//! haresources' groups, the authkeys method (never the key). Carried in every
//! heartbeat so a node can say *which file* differs from its peer's.

use super::Config;
use core::fmt::Write;

/// CRC-32C (Castagnoli, the iSCSI polynomial), the same CRC as the frame trailer.
const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// CRC-32C of a canonical text.
fn crc32c(text: &str) -> u32 {
    CRC32C.checksum(text.as_bytes())
}

/// ha.cf's cluster-wide settings from the parsed values, one `key value` per line,
/// so comments, spacing, units (`2` vs `2000ms`) and line order do not matter.
/// Media, logging and `realtime` are local and excluded.
pub fn ha_cf_canonical(config: &Config) -> String {
    let ha = &config.ha;
    let mut out = String::new();
    for node in &ha.nodes {
        let _ = writeln!(out, "node {node}");
    }
    let _ = writeln!(out, "keepalive_ms {}", ha.keepalive.millis());
    let _ = writeln!(out, "warntime_ms {}", ha.warntime.millis());
    let _ = writeln!(out, "deadtime_ms {}", ha.deadtime.millis());
    let _ = writeln!(out, "initdead_ms {}", ha.initdead.millis());
    let _ = writeln!(out, "auto_failback {}", ha.auto_failback.name());
    let _ = writeln!(out, "udpport {}", ha.udpport);
    let _ = writeln!(out, "baud {}", ha.baud);
    out
}

/// haresources' groups, one line each: node, then every resource as
/// `Name::arg::arg` (a bare address as `IPaddr::ADDR`).
pub fn haresources_canonical(config: &Config) -> String {
    let mut out = String::new();
    for group in &config.resources.groups {
        out.push_str(&group.node);
        for resource in &group.resources {
            out.push(' ');
            out.push_str(&resource.canonical());
        }
        out.push('\n');
    }
    out
}

/// The active authkeys method and key id: never the secret.
pub fn authkeys_canonical(config: &Config) -> String {
    let key = config.auth.active_key();
    format!("auth {} {}\n", key.id, key.method.name())
}

/// Per-file digests, in the order ha.cf, haresources, authkeys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConfigDigest {
    /// Nodes and timers of ha.cf (not media: those name local interfaces).
    pub ha_cf: u32,
    /// The haresources groups, whitespace-normalised.
    pub haresources: u32,
    /// The active authkeys method and id, never the secret.
    pub authkeys: u32,
}

impl ConfigDigest {
    /// Computes the digest of a parsed configuration.
    pub fn of(config: &Config) -> ConfigDigest {
        ConfigDigest {
            ha_cf: crc32c(&ha_cf_canonical(config)),
            haresources: crc32c(&haresources_canonical(config)),
            authkeys: crc32c(&authkeys_canonical(config)),
        }
    }

    /// Names of the files whose digests differ, e.g. `["ha.cf", "haresources"]`.
    pub fn differing(&self, other: &ConfigDigest) -> heapless::Vec<&'static str, 3> {
        let mut out = heapless::Vec::new();
        if self.ha_cf != other.ha_cf {
            let _ = out.push("ha.cf");
        }
        if self.haresources != other.haresources {
            let _ = out.push("haresources");
        }
        if self.authkeys != other.authkeys {
            let _ = out.push("authkeys");
        }
        out
    }
}
