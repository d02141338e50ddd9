//! `Filesystem::DEV::MOUNTPOINT::FSTYPE[::OPTIONS]`: a mounted filesystem.
//!
//! Layer: shell. Status reads `/proc/self/mountinfo` (no child); start runs
//! `fsck -a` for types without a journal, then `mount`; stop kills what holds
//! the mount (`fuser -km`, best effort) and unmounts, once more on failure
//! (a killed holder may still be exiting). Mounted at start and absent at stop
//! both succeed, so a retried op never fails for having worked before.
//! Invariant: the mount point is compared in its canonical form (no trailing
//! `/`), with mountinfo's octal escapes (`\040` for a space) decoded.

use super::runner::OpRequest;
use super::{find_program, Accept, AgentContext, Finished, Op, Plan, ResourceState, Step};
use crate::config::{Resource, ResourceSpec};

/// Types whose crash recovery is an fsck, not a journal replay: Heartbeat's
/// Filesystem agent checks them before mounting a disk taken from a dead node.
pub const FSCK_TYPES: [&str; 5] = ["ext2", "vfat", "msdos", "fat", "minix"];
/// The mount table of the caller's mount namespace.
const MOUNTINFO: &str = "/proc/self/mountinfo";

/// The parsed arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsArg {
    /// The device (`/dev/drbd0`, `LABEL=x`...).
    pub dev: String,
    /// The mount point, without a trailing `/`.
    pub mountpoint: String,
    /// `-t` type.
    pub fstype: String,
    /// `-o` options, when given.
    pub options: Option<String>,
}

impl FsArg {
    /// The typed resource's arguments, or None for another resource type.
    pub fn of(resource: &Resource) -> Option<FsArg> {
        match resource {
            Resource::Filesystem {
                device,
                mountpoint,
                fstype,
                options,
            } => Some(FsArg {
                dev: device.clone(),
                mountpoint: canonical(mountpoint),
                fstype: fstype.clone(),
                options: options.clone(),
            }),
            _ => None,
        }
    }
}

fn canonical(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.into()
    }
}

/// Decodes mountinfo's `\ooo` escapes.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        if let Some(d) = octal {
            out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `mountpoint` appears in a mountinfo text.
pub fn mounted_in(mountinfo: &str, mountpoint: &str) -> bool {
    let want = canonical(mountpoint);
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| unescape(mp) == want)
}

/// Whether `mountpoint` is mounted in this mount namespace.
pub fn is_mounted(mountpoint: &str) -> bool {
    std::fs::read_to_string(MOUNTINFO).is_ok_and(|t| mounted_in(&t, mountpoint))
}

/// Plans `op`.
pub(crate) fn plan(spec: &ResourceSpec, op: Op, ctx: &AgentContext) -> Plan {
    let Some(fs) = FsArg::of(&spec.typed) else {
        unreachable!("Task::new dispatches only Filesystem resources here");
    };
    let mounted = is_mounted(&fs.mountpoint);
    let finish = |s| Finished {
        state: s,
        warning: None,
        garp: None,
        took_ms: 0,
    };
    match (op, mounted) {
        (Op::Status, true) | (Op::Start, true) => Plan::Done(Ok(finish(ResourceState::Running))),
        (Op::Status, false) | (Op::Stop, false) => Plan::Done(Ok(finish(ResourceState::Stopped))),
        (Op::Start, false) => Plan::Steps {
            steps: start_steps(&fs, ctx),
            finish: finish(ResourceState::Running),
        },
        (Op::Stop, true) => Plan::Steps {
            steps: stop_steps(&fs, ctx),
            finish: finish(ResourceState::Stopped),
        },
    }
}

fn start_steps(fs: &FsArg, ctx: &AgentContext) -> Vec<Step> {
    let mut steps = Vec::new();
    if FSCK_TYPES.contains(&fs.fstype.as_str()) {
        let fsck = OpRequest::new(&find_program("fsck"), &["-a", &fs.dev], ctx.timeout);
        steps.push(Step::new(fsck, Accept::Fsck));
    }
    let mut args = vec!["-t", &fs.fstype];
    if let Some(o) = &fs.options {
        args.extend(["-o", o]);
    }
    args.extend([fs.dev.as_str(), fs.mountpoint.as_str()]);
    steps.push(Step::new(
        OpRequest::new(&find_program("mount"), &args, ctx.timeout),
        Accept::Zero,
    ));
    steps
}

fn stop_steps(fs: &FsArg, ctx: &AgentContext) -> Vec<Step> {
    let fuser = OpRequest::new(
        &find_program("fuser"),
        &["-km", &fs.mountpoint],
        ctx.timeout,
    );
    let umount = OpRequest::new(&find_program("umount"), &[&fs.mountpoint], ctx.timeout);
    let mut second = Step::new(umount, Accept::Zero);
    second.retry_from = Some(0);
    vec![Step::new(fuser, Accept::Any), second]
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
        40 22 7:0 / /srv/my\\040data rw shared:2 - ext3 /dev/loop0 rw\n";

    fn parse(word: &str) -> FsArg {
        FsArg::of(&super::super::spec(word).typed).unwrap()
    }

    fn ctx() -> AgentContext {
        AgentContext::detect("/nonexistent".into(), "n".into())
    }

    // ==== Tests for the Status state ====

    #[test]
    fn status_mountinfo_matches_escaped_and_trailing_slash() {
        assert!(mounted_in(INFO, "/srv/my data/"));
        assert!(mounted_in(INFO, "/"));
        assert!(!mounted_in(INFO, "/srv"));
    }

    // ==== Tests for the Start state ====

    #[test]
    fn start_ext2_runs_fsck_then_mount_with_options() {
        let fs = parse("Filesystem::/dev/sdb1::/nonexistent-mp/::ext2::noatime");
        let lines: Vec<String> = start_steps(&fs, &ctx())
            .iter()
            .map(|s| s.req.command_line())
            .collect();
        assert!(lines[0].ends_with("fsck -a /dev/sdb1"), "{lines:?}");
        assert!(
            lines[1].ends_with("mount -t ext2 -o noatime /dev/sdb1 /nonexistent-mp"),
            "{lines:?}"
        );
    }

    #[test]
    fn start_ext3_skips_fsck() {
        let fs = parse("Filesystem::/dev/drbd0::/data::ext3");
        let steps = start_steps(&fs, &ctx());
        assert_eq!(steps.len(), 1);
        assert_eq!(steps[0].accept, Accept::Zero);
    }

    // ==== Tests for the Stop state ====

    #[test]
    fn stop_unmounted_succeeds_and_mounted_kills_then_unmounts_with_retry() {
        let s = super::super::spec("Filesystem::/dev/x::/nonexistent-mp::ext3");
        assert!(matches!(plan(&s, Op::Stop, &ctx()), Plan::Done(Ok(_))));
        let fs = FsArg::of(&s.typed).unwrap();
        let steps = stop_steps(&fs, &ctx());
        assert!(steps[0]
            .req
            .command_line()
            .ends_with("fuser -km /nonexistent-mp"));
        assert_eq!(steps[1].retry_from, Some(0));
    }
}
