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
/// Media, logging and `realtime` are local and excluded, and so are the fence
/// command, fence_delay, fence_timeout and on_stop_failure (how this node acts);
/// whether fencing is on is shared, so one node never takes over unfenced while
/// the other would fence first.
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
    for ping in &ha.ping_nodes {
        let _ = write!(out, "ping {}", ping.name);
        for addr in &ping.addrs {
            let _ = write!(out, " {addr}");
        }
        out.push('\n');
    }
    let _ = writeln!(out, "deadping_ms {}", ha.deadping.millis());
    let _ = writeln!(
        out,
        "fence {}",
        if ha.fence.is_some() { "on" } else { "off" }
    );
    let _ = writeln!(out, "stop_retries {}", ha.stop_retries);
    let _ = writeln!(out, "start_backoff_ms {}", ha.start_backoff.millis());
    let _ = writeln!(out, "action_timeout_ms {}", ha.action_timeout.millis());
    out
}

/// haresources' groups, one line each: node, then every resource as
/// `Name::arg::arg` (a bare address as `IPaddr::ADDR`), then the monitor option.
pub fn haresources_canonical(config: &Config) -> String {
    let mut out = String::new();
    for group in &config.resources.groups {
        out.push_str(&group.canonical());
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

#[cfg(test)]
mod tests {
    use super::*;

    const HA_CF: &str = include_str!("../../tests/fixtures/config/guide-bcast/ha.cf");
    const AUTHKEYS: &str = include_str!("../../tests/fixtures/config/guide-bcast/authkeys");
    const HARESOURCES: &str = include_str!("../../tests/fixtures/config/guide-bcast/haresources");

    fn digest(ha_cf: &str, authkeys: &str, haresources: &str) -> ConfigDigest {
        let config = Config::parse(ha_cf, authkeys, Some(haresources)).expect("valid config");
        ConfigDigest::of(&config)
    }

    fn guide() -> ConfigDigest {
        digest(HA_CF, AUTHKEYS, HARESOURCES)
    }

    #[test]
    fn reformatting_keeps_every_digest() {
        let ha_cf = "# same settings, other spelling\nnode debian1\nnode debian2\n\
                     bcast eth1\nudpport 694\ninitdead 80000ms\ndeadtime 60 # s\n\
                     warntime 10.0\nkeepalive 2000ms\nauto_failback no\nlogfile /tmp/x\n";
        let authkeys = "# comment\n1 md5 \"Icimonsupermotdepasse\"\nauth 1\n";
        let haresources = "# group\ndebian1   IPaddr::192.168.69.16 192.168.69.100 \\\n  drbddisk::repl \
                           Filesystem::/dev/drbd0::/mnt/repl::ext3 apache MailTo::admin@example.com\n";
        assert_eq!(digest(ha_cf, authkeys, haresources), guide());
    }

    #[test]
    fn media_do_not_change_the_digest() {
        let serial = include_str!("../../tests/fixtures/config/guide-serial/ha.cf");
        let with_baud_19200 = serial.replace("baud 9600", "baud 19200");
        assert_eq!(
            digest(&with_baud_19200, AUTHKEYS, HARESOURCES).ha_cf,
            guide().ha_cf
        );
    }

    #[test]
    fn changing_deadtime_changes_only_ha_cf() {
        let changed = digest(
            &HA_CF.replace("deadtime 60", "deadtime 50"),
            AUTHKEYS,
            HARESOURCES,
        );
        assert_eq!(changed.differing(&guide()).as_slice(), ["ha.cf"]);
    }

    #[test]
    fn changing_each_cluster_setting_changes_ha_cf() {
        let edits = [
            ("keepalive 2", "keepalive 1"),
            ("warntime 10", "warntime 11"),
            ("initdead 80", "initdead 90"),
            ("auto_failback off", "auto_failback on"),
            ("udpport 694", "udpport 695"),
            ("node debian1 debian2", "node debian2 debian1"),
        ];
        for (from, to) in edits {
            let changed = digest(&HA_CF.replace(from, to), AUTHKEYS, HARESOURCES);
            assert_eq!(changed.differing(&guide()).as_slice(), ["ha.cf"], "{to}");
        }
    }

    #[test]
    fn shared_takeover_settings_change_ha_cf() {
        let base = format!("{HA_CF}ping 10.0.0.254\nfence /sbin/fence-a\n");
        let reference = digest(&base, AUTHKEYS, HARESOURCES);
        assert_eq!(reference.differing(&guide()).as_slice(), ["ha.cf"]);
        let shared = [
            "ping 10.0.0.253\n",
            "ping_group gw 10.0.1.1\n",
            "deadping 20\n",
            "stop_retries 2\n",
            "start_backoff 20\n",
            "action_timeout 60\n",
        ];
        for extra in shared {
            let changed = digest(&format!("{base}{extra}"), AUTHKEYS, HARESOURCES);
            assert_eq!(
                changed.differing(&reference).as_slice(),
                ["ha.cf"],
                "{extra}"
            );
        }
        let unfenced = digest(&format!("{HA_CF}ping 10.0.0.254\n"), AUTHKEYS, HARESOURCES);
        assert_eq!(unfenced.differing(&reference).as_slice(), ["ha.cf"]);
    }

    #[test]
    fn local_takeover_settings_keep_the_digest() {
        let base = format!("{HA_CF}fence /sbin/fence-a\n");
        let reference = digest(&base, AUTHKEYS, HARESOURCES);
        let local = [
            format!("{HA_CF}fence /usr/sbin/fence-b --other-args\n"),
            format!("{base}fence_delay 0\nfence_timeout 5\n"),
            format!("{base}on_stop_failure /bin/touch /tmp/marker\n"),
            // Shared settings written out at their defaults: values, not lines, count.
            format!("{base}stop_retries 3\nstart_backoff 10\naction_timeout 120\n"),
            format!("{base}deadping 60\n"),
        ];
        for text in local {
            assert_eq!(digest(&text, AUTHKEYS, HARESOURCES), reference, "{text}");
        }
    }

    #[test]
    fn monitor_option_changes_only_haresources() {
        let monitored = HARESOURCES.replace(" apache", " apache monitor::30");
        let changed = digest(HA_CF, AUTHKEYS, &monitored);
        assert_eq!(changed.differing(&guide()).as_slice(), ["haresources"]);
        let same = HARESOURCES.replace(" apache", " monitor::30000ms::3 apache");
        assert_eq!(digest(HA_CF, AUTHKEYS, &same), changed);
        let count = HARESOURCES.replace(" apache", " apache monitor::30::2");
        assert_ne!(digest(HA_CF, AUTHKEYS, &count), changed);
    }

    #[test]
    fn changing_the_secret_keeps_the_authkeys_digest() {
        let changed = digest(
            HA_CF,
            &AUTHKEYS.replace("Icimonsupermotdepasse", "other"),
            HARESOURCES,
        );
        assert_eq!(changed, guide());
    }

    #[test]
    fn changing_the_method_changes_only_authkeys() {
        let changed = digest(HA_CF, &AUTHKEYS.replace("md5", "sha256"), HARESOURCES);
        assert_eq!(changed.differing(&guide()).as_slice(), ["authkeys"]);
        let other_id = "auth 2\n2 md5 \"Icimonsupermotdepasse\"\n";
        assert_eq!(
            digest(HA_CF, other_id, HARESOURCES)
                .differing(&guide())
                .as_slice(),
            ["authkeys"]
        );
    }

    #[test]
    fn changing_a_group_changes_only_haresources() {
        let changed = digest(HA_CF, AUTHKEYS, &HARESOURCES.replace(" apache", " nginx"));
        assert_eq!(changed.differing(&guide()).as_slice(), ["haresources"]);
        let absent = Config::parse(HA_CF, AUTHKEYS, None).unwrap();
        assert_eq!(
            ConfigDigest::of(&absent).differing(&guide()).as_slice(),
            ["haresources"]
        );
    }

    #[test]
    fn canonical_texts_never_hold_the_secret() {
        let config = Config::parse(HA_CF, AUTHKEYS, Some(HARESOURCES)).unwrap();
        assert_eq!(authkeys_canonical(&config), "auth 1 md5\n");
        assert!(
            !ha_cf_canonical(&config).contains("eth1"),
            "media are local"
        );
        assert!(haresources_canonical(&config).starts_with("debian1 IPaddr::192.168.69.16 "));
    }

    #[test]
    fn differing_lists_every_file() {
        let a = ConfigDigest {
            ha_cf: 1,
            haresources: 2,
            authkeys: 3,
        };
        assert!(a.differing(&a).is_empty());
        assert_eq!(
            a.differing(&ConfigDigest::default()).as_slice(),
            ["ha.cf", "haresources", "authkeys"]
        );
    }
}
