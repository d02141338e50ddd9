//! UDP heartbeat links: `bcast IF`, `mcast IF GROUP PORT TTL LOOP`, `ucast IF ADDR`.
//!
//! Layer: shell. Each link is one non-blocking socket bound to its interface
//! (SO_BINDTODEVICE) and to the address it receives on (the broadcast address,
//! the group, or our own address for ucast), so several links on one interface
//! and port never see each other's datagrams. Datagrams whose source is one of this host's own addresses
//! (our own broadcasts coming back) are dropped before decoding, so the core's
//! `reflection` counter counts only real reflections. A missing or down interface
//! is retried every second; failed sends are counted and logged once per streak.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};

use mio::{Interest, Registry, Token};
use nix::errno::Errno;
use nix::ifaddrs::getifaddrs;
use nix::net::if_::InterfaceFlags;
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};

use super::cli::ShellError;
use super::link::{OpenError, Retry, RxContext};
use crate::core::{Event, LinkId};
use crate::time::Instant;
use crate::wire::decode_datagram;
use crate::wire::FRAME_MAX;

/// Datagrams read per readiness event before yielding to other sources.
pub const DATAGRAMS_PER_READY_MAX: usize = 64;
/// This host's IPv4 addresses remembered for the reflection filter.
pub const OWN_ADDRS_MAX: usize = 32;
/// Receive buffer, bytes: larger than any valid frame so oversize ones are seen as `long`.
pub const DATAGRAM_MAX: usize = 2048;

/// What kind of UDP medium.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpKind {
    /// Broadcast to the interface's broadcast address.
    Bcast,
    /// Multicast group.
    Mcast {
        /// Group address.
        group: Ipv4Addr,
        /// TTL.
        ttl: u8,
        /// IP_MULTICAST_LOOP.
        loopback: bool,
    },
    /// Unicast to the peer's address.
    Ucast {
        /// Peer address.
        addr: Ipv4Addr,
    },
}

/// Facts about the host's interfaces, read with getifaddrs.
#[derive(Debug, Default)]
pub struct IfaceInfo {
    /// The interface's first IPv4 address, its broadcast address and whether it is up.
    pub iface: Option<(Ipv4Addr, Option<Ipv4Addr>, bool)>,
    /// Every IPv4 address of this host.
    pub own: heapless::Vec<Ipv4Addr, OWN_ADDRS_MAX>,
}

fn v4(addr: &Option<socket::SockaddrStorage>) -> Option<Ipv4Addr> {
    addr.as_ref()
        .and_then(|a| a.as_sockaddr_in())
        .map(|a| a.ip())
}

/// The directed broadcast address of `ip` in a subnet with `mask`.
pub fn broadcast_of(ip: Ipv4Addr, mask: Ipv4Addr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(ip) | !u32::from(mask))
}

/// Reads the interfaces; `iface` is the one the link uses.
pub fn iface_info(iface: &str) -> IfaceInfo {
    let mut info = IfaceInfo::default();
    let Ok(addrs) = getifaddrs() else { return info };
    for a in addrs {
        let Some(ip) = v4(&a.address) else { continue };
        let _ = info.own.push(ip);
        if a.interface_name == iface && info.iface.is_none() {
            // An address added without `brd` has no broadcast address; derive it
            // from the netmask, as the kernel would route it.
            let derived = v4(&a.netmask).map(|mask| broadcast_of(ip, mask));
            info.iface = Some((
                ip,
                v4(&a.broadcast).or(derived),
                a.flags.contains(InterfaceFlags::IFF_UP),
            ));
        }
    }
    info
}

/// One UDP link.
pub struct UdpLink {
    id: LinkId,
    name: String,
    iface: String,
    kind: UdpKind,
    port: u16,
    socket: Option<mio::net::UdpSocket>,
    dest: Option<SocketAddrV4>,
    own: heapless::Vec<Ipv4Addr, OWN_ADDRS_MAX>,
    retry: Retry,
    send_failing: bool,
    send_errors: u64,
    buf: [u8; DATAGRAM_MAX],
    scratch: [u8; FRAME_MAX],
}

impl UdpLink {
    /// A closed link; `port` is udpport (bcast, ucast) or the mcast line's port.
    pub fn new(id: LinkId, name: String, iface: String, kind: UdpKind, port: u16) -> UdpLink {
        UdpLink {
            id,
            name,
            iface,
            kind,
            port,
            socket: None,
            dest: None,
            own: heapless::Vec::new(),
            retry: Retry::default(),
            send_failing: false,
            send_errors: 0,
            buf: [0; DATAGRAM_MAX],
            scratch: [0; FRAME_MAX],
        }
    }

    /// Its id.
    pub fn id(&self) -> LinkId {
        self.id
    }

    /// Sends that failed since start (for debugging).
    pub fn send_errors(&self) -> u64 {
        self.send_errors
    }

    /// Opens the socket; transient failures are scheduled for retry.
    pub fn open(
        &mut self,
        registry: &Registry,
        token: Token,
        now: Instant,
    ) -> Result<(), OpenError> {
        match self.try_open(registry, token) {
            Ok(()) => {
                self.retry.succeeded();
                log::debug!("link {} open, sending to {:?}", self.name, self.dest);
                Ok(())
            }
            Err(errno) if is_fatal(errno) => Err(OpenError::Fatal(ShellError::Eth {
                link: self.name.clone(),
                error: std::io::Error::from_raw_os_error(errno as i32),
            })),
            Err(errno) => {
                self.retry.failed(now);
                Err(OpenError::Retry(errno as i32))
            }
        }
    }

    fn try_open(&mut self, registry: &Registry, token: Token) -> Result<(), Errno> {
        let info = iface_info(&self.iface);
        let Some((addr, bcast, up)) = info.iface else {
            return Err(Errno::ENODEV);
        };
        if !up {
            return Err(Errno::ENETDOWN);
        }
        self.own = info.own;
        let dest_ip = match self.kind {
            UdpKind::Bcast => bcast.ok_or(Errno::EADDRNOTAVAIL)?,
            UdpKind::Mcast { group, .. } => group,
            UdpKind::Ucast { addr } => addr,
        };
        // Bound to the address each kind receives on, so several media on one
        // interface and port never see each other's datagrams (which the core
        // would count as replays): bcast on the broadcast address, mcast on the
        // group, ucast on our own address. The kernel picks the source address
        // by device for sockets bound to broadcast or multicast addresses.
        let bind_ip = match self.kind {
            UdpKind::Bcast | UdpKind::Mcast { .. } => dest_ip,
            UdpKind::Ucast { .. } => addr,
        };
        let std_socket = self.bind_socket(bind_ip)?;
        if let UdpKind::Mcast {
            group,
            ttl,
            loopback,
        } = self.kind
        {
            let io = |e: std::io::Error| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
            std_socket.join_multicast_v4(&group, &addr).map_err(io)?;
            std_socket
                .set_multicast_ttl_v4(u32::from(ttl))
                .map_err(io)?;
            std_socket.set_multicast_loop_v4(loopback).map_err(io)?;
            set_multicast_if(&std_socket, addr)?;
        }
        let mut sock = mio::net::UdpSocket::from_std(std_socket);
        registry
            .register(&mut sock, token, Interest::READABLE)
            .map_err(|_| Errno::EIO)?;
        self.socket = Some(sock);
        self.dest = Some(SocketAddrV4::new(dest_ip, self.port));
        Ok(())
    }

    fn bind_socket(&self, ip: Ipv4Addr) -> Result<UdpSocket, Errno> {
        let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
        let fd: OwnedFd = socket::socket(AddressFamily::Inet, SockType::Datagram, flags, None)?;
        socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
        socket::setsockopt(
            &fd,
            sockopt::BindToDevice,
            &std::ffi::OsString::from(&self.iface),
        )?;
        if self.kind == UdpKind::Bcast {
            socket::setsockopt(&fd, sockopt::Broadcast, &true)?;
        }
        let [a, b, c, d] = ip.octets();
        socket::bind(fd.as_raw_fd(), &SockaddrIn::new(a, b, c, d, self.port))?;
        Ok(UdpSocket::from(fd))
    }

    /// Reads every waiting datagram and feeds the valid ones to the core.
    pub fn on_ready(&mut self, rx: RxContext) -> Option<Event> {
        let sock = self.socket.as_ref()?;
        for _ in 0..DATAGRAMS_PER_READY_MAX {
            let (n, src) = match sock.recv_from(&mut self.buf) {
                Ok(r) => r,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    log::debug!("link {} recv: {e}", self.name);
                    break;
                }
            };
            if let SocketAddr::V4(src) = src {
                if self.own.contains(src.ip()) {
                    log::trace!("link {} dropped our own datagram from {src}", self.name);
                    continue;
                }
            }
            match decode_datagram(rx.keyring, &self.buf[..n], &mut self.scratch) {
                Ok(repr) => {
                    if let Err(e) = rx.membership.handle_frame(rx.now, self.id, &repr) {
                        log::debug!("link {} frame from {src} refused: {e}", self.name);
                    }
                }
                Err(e) => {
                    log::debug!("link {} datagram from {src} rejected: {e}", self.name);
                    rx.membership.handle_frame_error(rx.now, self.id, e);
                }
            }
        }
        None
    }

    /// Sends one frame; the first failure of a streak becomes a `link_error`. If
    /// the interface vanished (ENODEV: a deleted and re-created veth has a new
    /// index, so the bound socket would never work again), the socket is closed
    /// and reopened every second.
    pub fn send(&mut self, registry: &Registry, frame: &[u8], now: Instant) -> Option<Event> {
        let (Some(sock), Some(dest)) = (self.socket.as_ref(), self.dest) else {
            return None;
        };
        let error = match sock.send_to(frame, SocketAddr::V4(dest)) {
            Ok(_) => {
                self.send_failing = false;
                return None;
            }
            Err(e) => e,
        };
        self.send_errors += 1;
        log::debug!("link {} send to {dest}: {error}", self.name);
        let errno = error.raw_os_error().unwrap_or(libc::EIO);
        if errno == libc::ENODEV || errno == libc::ENXIO {
            if let Some(mut sock) = self.socket.take() {
                let _ = registry.deregister(&mut sock);
            }
            self.retry.failed(now);
        }
        if error.kind() == ErrorKind::WouldBlock || self.send_failing {
            return None;
        }
        self.send_failing = true;
        Some(Event::LinkError {
            link: self.id,
            errno,
        })
    }

    /// Reopens a link that could not be opened yet.
    pub fn tick(&mut self, registry: &Registry, token: Token, now: Instant) -> Option<Event> {
        if self.socket.is_some() || !self.retry.due(now) {
            return None;
        }
        match self.try_open(registry, token) {
            Ok(()) => {
                self.retry.succeeded();
                log::debug!("link {} open after retry", self.name);
                None
            }
            Err(errno) => {
                let first = self.retry.failed(now);
                first.then_some(Event::LinkError {
                    link: self.id,
                    errno: errno as i32,
                })
            }
        }
    }

    /// Next reopen attempt.
    pub fn deadline(&self) -> Option<Instant> {
        self.retry.deadline()
    }
}

fn is_fatal(errno: Errno) -> bool {
    matches!(errno, Errno::EPERM | Errno::EACCES | Errno::EADDRINUSE)
}

fn set_multicast_if(sock: &UdpSocket, addr: Ipv4Addr) -> Result<(), Errno> {
    let value = libc::in_addr {
        s_addr: u32::from(addr).to_be(),
    };
    // SAFETY: valid socket fd, pointer and length of an owned in_addr.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_IF,
            &value as *const libc::in_addr as *const libc::c_void,
            std::mem::size_of::<libc::in_addr>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn broadcast_derived_from_netmask() {
        let ip = Ipv4Addr::new(10, 0, 0, 1);
        assert_eq!(
            broadcast_of(ip, Ipv4Addr::new(255, 0, 0, 0)),
            Ipv4Addr::new(10, 255, 255, 255)
        );
        let ip = Ipv4Addr::new(192, 168, 69, 14);
        assert_eq!(
            broadcast_of(ip, Ipv4Addr::new(255, 255, 255, 0)),
            Ipv4Addr::new(192, 168, 69, 255)
        );
    }
    use super::*;

    #[test]
    fn iface_info_knows_loopback() {
        let info = iface_info("lo");
        let (addr, _, up) = info.iface.expect("lo has an IPv4 address");
        assert_eq!(addr, Ipv4Addr::LOCALHOST);
        assert!(up);
        assert!(info.own.contains(&Ipv4Addr::LOCALHOST));
        assert!(iface_info("nonexistent0").iface.is_none());
    }
}
