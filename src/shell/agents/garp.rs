//! Gratuitous ARP: tells the segment's hosts and switches that a VIP moved.
//!
//! Layer: shell. `GarpSchedule` is pure (send times from a start instant);
//! `Garp` owns one non-blocking AF_PACKET socket bound to the interface and sends
//! an ARP request with sender = target = VIP to the broadcast address at each
//! scheduled time. It never blocks and never reads the clock.
//! Invariants: at most `GARP_SENDS_MAX` frames per schedule; a send error is
//! counted, not retried (the next scheduled frame is the retry).
//!
//! Why a request and not a reply: Linux updates an existing neighbour entry on
//! either, but only a request is also answered by nothing and accepted by every
//! stack (RFC 5227's "ARP announcement"); Heartbeat's send_arp does the same.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::time::Instant;

/// Frames in one burst: one may be lost, three rarely all are.
pub const GARP_COUNT: u32 = 3;
/// Between the frames of a burst.
pub const GARP_INTERVAL_MS: u64 = 200;
/// The burst is repeated this long after the start: a switch port that was
/// still learning (STP listening) or a host that ignored an entry refreshed
/// within its `locktime` (1 s by default on Linux) sees the second one.
pub const GARP_REPEAT_AFTER_MS: u64 = 2000;
/// Frames per schedule: two bursts.
pub const GARP_SENDS_MAX: u32 = 2 * GARP_COUNT;
/// Length of an Ethernet/IPv4 ARP payload.
const ARP_LEN: usize = 28;
/// `ETH_P_ARP` in host order.
const ETH_P_ARP: u16 = 0x0806;

/// When each gratuitous ARP is due: `GARP_COUNT` frames `GARP_INTERVAL_MS`
/// apart from `start`, then again from `start + GARP_REPEAT_AFTER_MS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GarpSchedule {
    start: Instant,
    sent: u32,
}

impl GarpSchedule {
    /// A schedule whose first frame is due at `start`.
    pub fn new(start: Instant) -> GarpSchedule {
        GarpSchedule { start, sent: 0 }
    }

    /// The due time of frame `n` (0-based).
    fn due(&self, n: u32) -> Instant {
        let burst = u64::from(n / GARP_COUNT) * GARP_REPEAT_AFTER_MS;
        let within = u64::from(n % GARP_COUNT) * GARP_INTERVAL_MS;
        Instant::from_millis(self.start.millis() + burst + within)
    }

    /// The next frame's due time; None when every frame was sent.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.sent < GARP_SENDS_MAX).then(|| self.due(self.sent))
    }

    /// How many frames are due at `now` (marked sent). A late loop sends one
    /// frame, not a catch-up burst of back-to-back copies.
    pub fn take_due(&mut self, now: Instant) -> u32 {
        let mut due = 0;
        while self.sent < GARP_SENDS_MAX && self.due(self.sent) <= now {
            self.sent += 1;
            due += 1;
        }
        assert!(self.sent <= GARP_SENDS_MAX);
        due.min(1)
    }

    /// Whether every frame is sent.
    pub fn is_done(&self) -> bool {
        self.sent == GARP_SENDS_MAX
    }
}

/// A gratuitous ARP sender for one VIP on one interface.
pub struct Garp {
    socket: OwnedFd,
    ifindex: i32,
    vip: Ipv4Addr,
    frame: [u8; ARP_LEN],
    schedule: GarpSchedule,
    /// Frames the kernel refused (the interface went down...).
    pub send_errors: u32,
    /// Frames sent.
    pub sent: u32,
}

impl Garp {
    /// Opens the socket on `iface` (the base name, `eth0`, not `eth0:0`) and
    /// schedules the frames for `vip` from `now`.
    pub fn new(iface: &str, vip: Ipv4Addr, now: Instant) -> io::Result<Garp> {
        let ifindex = ifindex(iface)?;
        let mac = hwaddr(iface)?;
        // SAFETY: socket() takes no pointers; the fd is wrapped at once.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_ARP.to_be()),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Garp {
            socket,
            ifindex,
            vip,
            frame: arp_announcement(mac, vip),
            schedule: GarpSchedule::new(now),
            send_errors: 0,
            sent: 0,
        })
    }

    /// The address this schedule announces: a stop of its IPaddr cancels it.
    #[must_use]
    pub fn vip(&self) -> Ipv4Addr {
        self.vip
    }

    /// The next send time; None when done.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.schedule.poll_timeout()
    }

    /// Sends the frames due at `now`; never blocks.
    pub fn handle_timeout(&mut self, now: Instant) {
        for _ in 0..self.schedule.take_due(now) {
            match self.send_one() {
                Ok(()) => self.sent += 1,
                Err(_) => self.send_errors += 1,
            }
        }
    }

    /// Whether every frame has been sent (or failed).
    pub fn is_done(&self) -> bool {
        self.schedule.is_done()
    }

    fn send_one(&self) -> io::Result<()> {
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_ARP.to_be();
        addr.sll_ifindex = self.ifindex;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        // SAFETY: frame and addr are valid for the lengths given.
        let n = unsafe {
            libc::sendto(
                self.socket.as_raw_fd(),
                self.frame.as_ptr().cast(),
                self.frame.len(),
                libc::MSG_DONTWAIT,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The ARP payload: request, sender = target = `vip`, target MAC zero.
pub fn arp_announcement(mac: [u8; 6], vip: Ipv4Addr) -> [u8; ARP_LEN] {
    let mut f = [0u8; ARP_LEN];
    f[0..2].copy_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    f[2..4].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    f[4] = 6;
    f[5] = 4;
    f[6..8].copy_from_slice(&1u16.to_be_bytes()); // op: request
    f[8..14].copy_from_slice(&mac);
    f[14..18].copy_from_slice(&vip.octets());
    f[24..28].copy_from_slice(&vip.octets());
    f
}

fn ifindex(iface: &str) -> io::Result<i32> {
    let name = std::ffi::CString::new(iface).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: name is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(index as i32)
}

/// The interface's MAC address (SIOCGIFHWADDR), read in the caller's netns.
pub fn hwaddr(iface: &str) -> io::Result<[u8; 6]> {
    if iface.len() >= libc::IFNAMSIZ {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    // SAFETY: ifreq is plain data; zeroed is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(iface.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: a datagram socket for the ioctl, closed by OwnedFd.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is fresh and owned here.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: req is a valid ifreq for SIOCGIFHWADDR.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (dst, src) in mac.iter_mut().zip(data.iter()) {
        *dst = *src as u8;
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    // ==== Tests for the GarpSchedule state ====

    #[test]
    fn schedule_on_time_sends_two_bursts() {
        let mut s = GarpSchedule::new(at(1000));
        let mut times = Vec::new();
        while let Some(t) = s.poll_timeout() {
            assert_eq!(s.take_due(at(t.millis() - 1)), 0);
            assert_eq!(s.take_due(t), 1);
            times.push(t.millis());
        }
        assert_eq!(times, [1000, 1200, 1400, 3000, 3200, 3400]);
        assert!(s.is_done());
    }

    #[test]
    fn schedule_late_loop_sends_one_not_a_catch_up_burst() {
        let mut s = GarpSchedule::new(at(0));
        assert_eq!(s.take_due(at(2100)), 1);
        assert_eq!(s.poll_timeout(), Some(at(2200)));
    }

    #[test]
    fn announcement_has_vip_as_sender_and_target() {
        let f = arp_announcement([2, 0, 0, 0, 0, 1], Ipv4Addr::new(192, 168, 69, 100));
        assert_eq!(&f[6..8], &[0, 1]);
        assert_eq!(&f[8..14], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(&f[14..18], &[192, 168, 69, 100]);
        assert_eq!(&f[18..24], &[0; 6]);
        assert_eq!(&f[24..28], &[192, 168, 69, 100]);
    }

    #[test]
    fn loopback_hwaddr_is_zero() {
        assert_eq!(hwaddr("lo").unwrap(), [0; 6]);
        assert!(hwaddr("no-such-if0").is_err());
    }
}
