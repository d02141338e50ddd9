//! No heap allocation on the heartbeat path in steady state.
//!
//! A counting `#[global_allocator]` counts allocations made by this test's own
//! thread (the harness allocates on others). Two `Membership`s exchange heartbeats
//! on two links, with timeouts and event draining, exactly as the shell drives
//! them, through the real wire path: `wire::encode` (HMAC-SHA256, CRC, COBS),
//! then `StreamDecoder::feed` + `wire::decode` on the serial link and
//! `wire::decode_datagram` on the Ethernet link. After a warm-up, 1000 exchanges
//! must not allocate at all.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bascule::config::digest::ConfigDigest;
use bascule::core::{LinkId, Membership, MembershipConfig, PeerState};
use bascule::sim::sim_keyring;
use bascule::time::{Duration, Instant};
use bascule::wire::{self, Feed, Keyring, StreamDecoder, ENCODED_MAX, FRAME_MAX};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCS.with(Cell::get)
}

/// Heartbeat exchanges before counting (first frames, links coming up).
const WARM_UP: usize = 20;
/// Exchanges counted.
const EXCHANGES: usize = 1000;
const LINKS: u8 = 2;
const ETH: LinkId = LinkId(0);
const SERIAL: LinkId = LinkId(1);

fn config(local: u8) -> MembershipConfig {
    MembershipConfig {
        local,
        peer: 1 - local,
        links: LINKS,
        keepalive: Duration::from_millis(50),
        warntime: Duration::from_millis(100),
        deadtime: Duration::from_millis(150),
        initdead: Duration::from_millis(300),
        boot_epoch: 1 + u32::from(local),
        digest: ConfigDigest {
            ha_cf: 1,
            haresources: 2,
            authkeys: 3,
        },
        key: 1,
    }
}

/// What each node's shell holds: the keys and one stream decoder (serial).
struct Shell {
    keyring: Keyring,
    serial: [StreamDecoder; 2],
}

/// One loop iteration at the next deadline: timers, transmit to the other node on
/// every link through the wire, drain events. Returns the time it ran at.
fn exchange(nodes: &mut [Membership; 2], shell: &mut Shell) -> Instant {
    let now = nodes
        .iter()
        .filter_map(Membership::poll_timeout)
        .min()
        .expect("heartbeat timer armed");
    for from in 0..2 {
        nodes[from].handle_timeout(now);
        if let Some(repr) = nodes[from].poll_transmit(now) {
            let mut bytes = [0u8; ENCODED_MAX];
            let len = wire::encode(&shell.keyring, &repr, &mut bytes);
            let to = &mut nodes[1 - from];
            let mut scratch = [0u8; FRAME_MAX];
            let datagram = wire::decode_datagram(&shell.keyring, &bytes[..len], &mut scratch);
            assert_eq!(
                to.handle_frame(now, ETH, &datagram.expect("valid datagram")),
                Ok(())
            );
            let mut input = &bytes[..len];
            let mut frames = 0;
            while let Feed::Frame { frame, rest } = shell.serial[1 - from].feed(input) {
                let decoded = wire::decode(&shell.keyring, frame).expect("valid serial frame");
                assert_eq!(to.handle_frame(now, SERIAL, &decoded), Ok(()));
                frames += 1;
                input = rest;
            }
            assert_eq!(frames, 1, "one frame per heartbeat on the serial stream");
        }
        for node in nodes.iter_mut() {
            while node.poll_event().is_some() {}
        }
    }
    now
}

#[test]
fn steady_state_heartbeats_do_not_allocate() {
    let start = Instant::from_millis(1_000);
    let mut nodes = [
        Membership::new(config(0), start),
        Membership::new(config(1), start),
    ];
    let mut shell = Shell {
        keyring: sim_keyring(),
        serial: [StreamDecoder::new(), StreamDecoder::new()],
    };
    for _ in 0..WARM_UP {
        exchange(&mut nodes, &mut shell);
    }
    assert_eq!(nodes[0].peer_state(), PeerState::Alive);
    let before = allocations();
    let mut last = start;
    for _ in 0..EXCHANGES {
        last = exchange(&mut nodes, &mut shell);
    }
    let during = allocations() - before;
    assert_eq!(
        during, 0,
        "{during} allocations in {EXCHANGES} heartbeat exchanges"
    );
    assert!(
        last > start + Duration::from_secs(40),
        "time advanced: {last}"
    );
    assert_eq!(nodes[1].peer_state(), PeerState::Alive);
    assert!(nodes[0].link_stats(SERIAL).rx_ok >= EXCHANGES as u64 / 2);
    assert!(nodes[0].link_stats(ETH).rx_ok >= EXCHANGES as u64 / 2);
}

#[test]
fn counter_sees_allocations() {
    let before = allocations();
    let v = std::hint::black_box(vec![1u8; 64]);
    assert!(allocations() > before, "the counting allocator works");
    drop(v);
}
