//! ICMP echo prober for ha.cf `ping` and `ping_group` nodes (takeover rule 6).
//!
//! Layer: shell. One raw ICMP socket (root), non-blocking, registered with the
//! loop. Every `interval` (keepalive) one echo request goes to every address;
//! a ping node is reachable while one of its addresses answered within
//! `deadping`. The count goes into our heartbeats and, with the peer's count,
//! into the takeover machine. May not block or allocate after `open`: requests
//! and replies use fixed buffers.
//! Invariants: only echo replies carrying our identifier and coming from a
//! configured address count; anything else on the raw socket is ignored.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::config::PingNode;
use crate::time::{Duration, Instant};

/// Bytes of an echo request: 8 header + 8 payload.
pub const ECHO_LEN: usize = 16;
/// Receive buffer: an IPv4 header with options (60) plus a generous ICMP message.
const RX_LEN: usize = 256;
/// Replies read per readiness event (bounds the work of an ICMP flood).
const READS_PER_EVENT_MAX: usize = 64;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;

/// One ping node's addresses and when one of them last answered.
struct Target {
    addrs: Vec<Ipv4Addr>,
    last_reply: Option<Instant>,
}

/// See the module doc.
pub struct PingProber {
    socket: OwnedFd,
    ident: u16,
    seq: u16,
    targets: Vec<Target>,
    interval: Duration,
    deadping: Duration,
    next_probe: Instant,
}

impl PingProber {
    /// Opens the raw socket (needs CAP_NET_RAW); the first probes go out at `now`.
    pub fn open(
        nodes: &[PingNode],
        interval: Duration,
        deadping: Duration,
        now: Instant,
    ) -> io::Result<PingProber> {
        assert!(interval.millis() > 0, "ping interval must be positive");
        // SAFETY: socket() takes no pointers; the fd is wrapped at once.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::IPPROTO_ICMP,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor nothing else owns.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        let targets = nodes
            .iter()
            .map(|n| Target {
                addrs: n.addrs.clone(),
                last_reply: None,
            })
            .collect();
        Ok(PingProber {
            socket,
            ident: (std::process::id() & 0xffff) as u16,
            seq: 0,
            targets,
            interval,
            deadping,
            next_probe: now,
        })
    }

    /// The socket, for registration with the loop.
    pub fn raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Ping nodes reachable at `now`.
    pub fn reachable(&self, now: Instant) -> u8 {
        let n = self
            .targets
            .iter()
            .filter(|t| {
                t.last_reply
                    .is_some_and(|r| now.saturating_since(r) < self.deadping)
            })
            .count();
        n.min(u8::MAX as usize) as u8
    }

    /// The next probe, or the next time a node turns unreachable after `now`.
    pub fn poll_timeout(&self, now: Instant) -> Instant {
        self.targets
            .iter()
            .filter_map(|t| t.last_reply.map(|r| r + self.deadping))
            .filter(|t| *t > now)
            .fold(self.next_probe, Instant::min)
    }

    /// Sends the probes due at `now` (one per address per interval).
    pub fn handle_timeout(&mut self, now: Instant) {
        if now < self.next_probe {
            return;
        }
        while self.next_probe <= now {
            self.next_probe = self.next_probe + self.interval;
        }
        self.seq = self.seq.wrapping_add(1);
        let request = echo_request(self.ident, self.seq);
        for addr in self.targets.iter().flat_map(|t| t.addrs.iter()) {
            if let Err(e) = send_to(&self.socket, &request, *addr) {
                log::debug!("ping {addr}: {e}");
            }
        }
    }

    /// Reads every pending reply.
    pub fn on_readable(&mut self, now: Instant) {
        let mut buf = [0u8; RX_LEN];
        for _ in 0..READS_PER_EVENT_MAX {
            // SAFETY: buf is valid for RX_LEN bytes; no address is asked for.
            let n = unsafe {
                libc::recv(
                    self.socket.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n <= 0 {
                return;
            }
            if let Some(from) = parse_reply(&buf[..n as usize], self.ident) {
                for t in self.targets.iter_mut().filter(|t| t.addrs.contains(&from)) {
                    t.last_reply = Some(now);
                }
            }
        }
    }
}

/// An ICMP echo request with our identifier and sequence number.
pub fn echo_request(ident: u16, seq: u16) -> [u8; ECHO_LEN] {
    let mut p = [0u8; ECHO_LEN];
    p[0] = ICMP_ECHO_REQUEST;
    p[4..6].copy_from_slice(&ident.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    p[8..].copy_from_slice(b"bascule\0");
    let sum = checksum(&p);
    p[2..4].copy_from_slice(&sum.to_be_bytes());
    p
}

/// The Internet checksum (RFC 1071).
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The source of an echo reply carrying `ident` (an IPv4 packet as a raw socket
/// delivers it); None for anything else.
pub fn parse_reply(packet: &[u8], ident: u16) -> Option<Ipv4Addr> {
    let ihl = usize::from(*packet.first()? & 0x0f) * 4;
    let icmp = packet.get(ihl..)?;
    if ihl < 20 || icmp.len() < 8 || icmp[0] != ICMP_ECHO_REPLY || icmp[1] != 0 {
        return None;
    }
    if u16::from_be_bytes([icmp[4], icmp[5]]) != ident {
        return None;
    }
    let src = packet.get(12..16)?;
    Some(Ipv4Addr::new(src[0], src[1], src[2], src[3]))
}

fn send_to(socket: &OwnedFd, data: &[u8], addr: Ipv4Addr) -> io::Result<()> {
    // SAFETY: sockaddr_in is plain data; zeroed is a valid value.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as u16;
    sa.sin_addr.s_addr = u32::from(addr).to_be();
    // SAFETY: data and sa are valid for the lengths given.
    let n = unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_DONTWAIT,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(ident: u16, kind: u8) -> Vec<u8> {
        let mut p = vec![0u8; 20];
        p[0] = 0x45;
        p[12..16].copy_from_slice(&[192, 168, 69, 10]);
        let mut icmp = echo_request(ident, 1).to_vec();
        icmp[0] = kind;
        p.extend_from_slice(&icmp);
        p
    }

    // ==== Tests for the packet format ====

    #[test]
    fn echo_request_checksum_verifies() {
        let p = echo_request(0x1234, 7);
        assert_eq!(p[0], ICMP_ECHO_REQUEST);
        assert_eq!(checksum(&p), 0, "a packet with its checksum sums to zero");
    }

    #[test]
    fn reply_ours_parsed_others_ignored() {
        let ours = reply(0x1234, ICMP_ECHO_REPLY);
        assert_eq!(
            parse_reply(&ours, 0x1234),
            Some(Ipv4Addr::new(192, 168, 69, 10))
        );
        assert_eq!(parse_reply(&ours, 0x4321), None, "another prober's reply");
        assert_eq!(parse_reply(&reply(0x1234, ICMP_ECHO_REQUEST), 0x1234), None);
        assert_eq!(parse_reply(&ours[..24], 0x1234), None, "truncated");
        assert_eq!(parse_reply(&[], 0x1234), None);
        assert_eq!(parse_reply(&[0x4f], 0x1234), None, "options past the end");
    }
}
