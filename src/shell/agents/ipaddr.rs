//! `IPaddr`/`IPaddr2::ADDR[/BITS[/IFACE[/BROADCAST]]]`: a virtual address.
//!
//! Layer: shell. Reads the interfaces with getifaddrs (status needs no child);
//! start and stop run `ip addr add|del` through the runner; the gratuitous ARP
//! after a start is the loop's (`Finished::garp`, `garp::Garp`). The decisions
//! (which interface, which label) are pure functions over a list of addresses.
//! Start: the interface is the one whose IPv4 subnet contains the address when
//! none is given; the address is added as a secondary one with the first free
//! label `IFACE:N`, as the guide shows (`eth0:0`), and `brd +` unless a
//! broadcast is given. Stop removes it wherever it is; absent, stop succeeds.

use std::net::Ipv4Addr;

use nix::ifaddrs::getifaddrs;

use super::find_program;
use super::runner::OpRequest;
use super::{
    Accept, AgentContext, AgentError, ErrorKind, Finished, GarpTarget, Op, Plan, ResourceState,
    Step,
};
use crate::config::{Resource, ResourceSpec};

/// Longest interface name or label Linux accepts (IFNAMSIZ - 1).
const IFNAME_LEN_MAX: usize = 15;
/// Labels tried per interface: more aliases than this on one NIC is a mistake.
const LABELS_MAX: u32 = 256;

/// One IPv4 address of the host, as getifaddrs reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostAddr {
    /// The label (`eth0`, `eth0:0`); its part before `:` is the interface.
    pub label: String,
    /// The address.
    pub ip: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
}

impl HostAddr {
    /// The interface the label belongs to.
    pub fn iface(&self) -> &str {
        self.label.split(':').next().unwrap_or(&self.label)
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = mask_of(self.prefix);
        u32::from(self.ip) & mask == u32::from(ip) & mask
    }
}

/// The parsed argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipArg {
    /// The address.
    pub ip: Ipv4Addr,
    /// Prefix length, when given.
    pub prefix: Option<u8>,
    /// Interface, when given.
    pub iface: Option<String>,
    /// Broadcast address, when given.
    pub broadcast: Option<Ipv4Addr>,
}

impl VipArg {
    /// The typed resource's address, or None for another resource type.
    pub fn of(resource: &Resource) -> Option<VipArg> {
        match resource {
            Resource::IpAddr {
                addr,
                bits,
                iface,
                broadcast,
                ..
            } => Some(VipArg {
                ip: *addr,
                prefix: *bits,
                iface: iface.clone(),
                broadcast: *broadcast,
            }),
            _ => None,
        }
    }
}

/// The netmask of a prefix length, host order.
fn mask_of(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

/// The host's IPv4 addresses (empty when getifaddrs fails).
pub fn host_addrs() -> Vec<HostAddr> {
    let Ok(addrs) = getifaddrs() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for a in addrs {
        let ip = a
            .address
            .as_ref()
            .and_then(|s| s.as_sockaddr_in())
            .map(|s| s.ip());
        let mask = a
            .netmask
            .as_ref()
            .and_then(|s| s.as_sockaddr_in())
            .map(|s| s.ip());
        if let (Some(ip), Some(mask)) = (ip, mask) {
            let prefix = u32::from(mask).leading_ones() as u8;
            out.push(HostAddr {
                label: a.interface_name,
                ip,
                prefix,
            });
        }
    }
    out
}

/// Where `vip` is configured on this host, if anywhere.
pub fn find_vip(vip: Ipv4Addr) -> Option<HostAddr> {
    host_addrs().into_iter().find(|a| a.ip == vip)
}

/// The interface (and its prefix) whose primary subnet contains `vip`:
/// loopback and host routes (/32) never match.
pub fn iface_for(vip: Ipv4Addr, addrs: &[HostAddr]) -> Option<(String, u8)> {
    addrs
        .iter()
        .filter(|a| !a.label.contains(':') && !a.ip.is_loopback() && a.prefix < 32 && a.ip != vip)
        .find(|a| a.contains(vip))
        .map(|a| (a.iface().to_string(), a.prefix))
}

/// The first free `IFACE:N` label; None when the name would be too long.
pub fn free_label(iface: &str, addrs: &[HostAddr]) -> Option<String> {
    (0..LABELS_MAX)
        .map(|n| format!("{iface}:{n}"))
        .take_while(|l| l.len() <= IFNAME_LEN_MAX)
        .find(|l| addrs.iter().all(|a| &a.label != l))
}

fn ip_program() -> String {
    find_program("ip")
}

/// The `ip addr add` arguments for `arg`, given the host's addresses.
pub fn add_args(arg: &VipArg, addrs: &[HostAddr]) -> Result<(String, Vec<String>), String> {
    let by_subnet = iface_for(arg.ip, addrs);
    let iface = match (&arg.iface, &by_subnet) {
        (Some(i), _) => i.clone(),
        (None, Some((i, _))) => i.clone(),
        (None, None) => {
            return Err(format!(
            "no interface has a subnet containing {}: give the interface, e.g. IPaddr::{}/24/eth0",
            arg.ip, arg.ip
        ))
        }
    };
    let own_prefix = addrs.iter().find(|a| a.label == iface).map(|a| a.prefix);
    let prefix = arg
        .prefix
        .or(by_subnet.map(|(_, p)| p))
        .or(own_prefix)
        .unwrap_or(32);
    let brd = arg.broadcast.map_or("+".to_string(), |b| b.to_string());
    let mut args: Vec<String> = vec![
        "addr".into(),
        "add".into(),
        format!("{}/{prefix}", arg.ip),
        "brd".into(),
        brd,
    ];
    args.extend(["dev".to_string(), iface.clone()]);
    if let Some(label) = free_label(&iface, addrs) {
        args.extend(["label".to_string(), label]);
    }
    Ok((iface, args))
}

/// Plans `op`.
pub(crate) fn plan(spec: &ResourceSpec, op: Op, ctx: &AgentContext) -> Plan {
    let Some(arg) = VipArg::of(&spec.typed) else {
        unreachable!("Task::new dispatches only IpAddr resources here");
    };
    let addrs = host_addrs();
    let present = addrs.iter().find(|a| a.ip == arg.ip).cloned();
    let state = |s| Finished {
        state: s,
        warning: None,
        garp: None,
        took_ms: 0,
    };
    match (op, present) {
        (Op::Status, p) => Plan::Done(Ok(state(if p.is_some() {
            ResourceState::Running
        } else {
            ResourceState::Stopped
        }))),
        (Op::Stop, None) => Plan::Done(Ok(state(ResourceState::Stopped))),
        (Op::Stop, Some(a)) => {
            let args = [
                "addr",
                "del",
                &format!("{}/{}", a.ip, a.prefix),
                "dev",
                a.iface(),
            ];
            let req = OpRequest::new(&ip_program(), &args, ctx.timeout);
            Plan::Steps {
                steps: vec![Step::new(req, Accept::Zero)],
                finish: state(ResourceState::Stopped),
            }
        }
        // Already there (a restart, or a retried start): announce it again.
        (Op::Start, Some(a)) => {
            let garp = Some(GarpTarget {
                iface: a.iface().to_string(),
                vip: arg.ip,
            });
            Plan::Done(Ok(Finished {
                garp,
                ..state(ResourceState::Running)
            }))
        }
        (Op::Start, None) => start_plan(spec, &arg, &addrs, ctx),
    }
}

/// `ip addr add` on the interface found for `arg`, then a GARP.
fn start_plan(spec: &ResourceSpec, arg: &VipArg, addrs: &[HostAddr], ctx: &AgentContext) -> Plan {
    match add_args(arg, addrs) {
        Err(m) => Plan::Done(Err(AgentError::plain(
            ErrorKind::NoInterface,
            spec,
            Op::Start,
            m,
        ))),
        Ok((iface, args)) => {
            let mut req = OpRequest::new(&ip_program(), &[], ctx.timeout);
            req.args = args;
            let garp = Some(GarpTarget { iface, vip: arg.ip });
            let finish = Finished {
                state: ResourceState::Running,
                warning: None,
                garp,
                took_ms: 0,
            };
            Plan::Steps {
                steps: vec![Step::new(req, Accept::Zero)],
                finish,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(label: &str, ip: &str, prefix: u8) -> HostAddr {
        HostAddr {
            label: label.into(),
            ip: ip.parse().unwrap(),
            prefix,
        }
    }

    fn parse_arg(word: &str) -> VipArg {
        VipArg::of(&super::super::spec(word).typed).unwrap()
    }

    fn host() -> Vec<HostAddr> {
        vec![
            addr("lo", "127.0.0.1", 8),
            addr("eth1", "10.0.0.1", 8),
            addr("eth0", "192.168.69.14", 24),
            addr("eth0:0", "192.168.69.101", 24),
        ]
    }

    // ==== Tests for the Start state ====

    #[test]
    fn start_without_iface_finds_it_by_subnet_with_next_label() {
        let arg = parse_arg("192.168.69.100");
        let (iface, args) = add_args(&arg, &host()).unwrap();
        assert_eq!(iface, "eth0");
        assert_eq!(
            args.join(" "),
            "addr add 192.168.69.100/24 brd + dev eth0 label eth0:1"
        );
    }

    #[test]
    fn start_with_full_arg_uses_it() {
        let arg = parse_arg("10.9.9.9/16/eth1/10.9.255.255");
        let (_, args) = add_args(&arg, &host()).unwrap();
        assert_eq!(
            args.join(" "),
            "addr add 10.9.9.9/16 brd 10.9.255.255 dev eth1 label eth1:0"
        );
    }

    #[test]
    fn start_no_matching_subnet_names_the_address() {
        let arg = parse_arg("172.16.1.1");
        let err = add_args(&arg, &host()).unwrap_err();
        assert!(err.contains("172.16.1.1"), "{err}");
    }

    #[test]
    fn start_long_iface_gets_no_label() {
        let addrs = vec![addr("enp0s31f6abcdef", "10.1.0.1", 24)];
        assert_eq!(free_label("enp0s31f6abcdef", &addrs), None);
        assert_eq!(free_label("eth0", &host()).as_deref(), Some("eth0:1"));
    }

    // ==== Tests for the Status state ====

    #[test]
    fn status_of_absent_address_is_stopped_and_stop_succeeds() {
        let s = super::super::spec("IPaddr::203.0.113.77");
        let ctx = AgentContext::detect("/nonexistent".into(), "n".into());
        for op in [Op::Status, Op::Stop] {
            let Plan::Done(Ok(f)) = plan(&s, op, &ctx) else {
                panic!("done")
            };
            assert_eq!(f.state, ResourceState::Stopped);
        }
    }

    #[test]
    fn status_of_loopback_address_is_running() {
        let s = super::super::spec("IPaddr::127.0.0.1");
        let ctx = AgentContext::detect("/nonexistent".into(), "n".into());
        let Plan::Done(Ok(f)) = plan(&s, Op::Status, &ctx) else {
            panic!("done")
        };
        assert_eq!(f.state, ResourceState::Running);
    }
}
