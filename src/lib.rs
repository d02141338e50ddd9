//! bascule: two Linux servers, one highly available pair.
//!
//! The crate is split in two halves, and the split is the design:
//!
//! ```text
//!   shell/   the only code that touches the world: one single-threaded mio loop
//!            (sockets, serial ports, the control socket, signals, timers), the
//!            logger thread, the boot-epoch file. It reads CLOCK_MONOTONIC once per
//!            iteration and feeds the core.
//!     |  frames in, timeouts, commands            ^  transmits, events, deadlines
//!     v                                           |
//!   core/    pure state machines (membership today; takeover and replication
//!            later). No I/O, no clock, no allocation after construction. Time is
//!            an argument (`time::Instant`), randomness comes from one seeded `Rng`.
//!   wire/    frame codecs: COBS framing, header, MAC, CRC. Pure, zero-copy.
//!   config/  parsers for the guide's files (ha.cf, authkeys, haresources). Pure:
//!            they take text and return typed settings or `file:line` errors.
//!   sim/     (test support) two real cores on virtual time with seeded
//!            faults, and checkers.
//! ```
//!
//! Rules every layer keeps:
//! - core, wire and config do no I/O and never read the clock.
//! - nothing on the heartbeat path allocates after start-up (a test counts).
//! - only `shell::log::log_event` logs at `info` or above, so every operator-visible
//!   line comes from the catalogue in README.md.
//!
//! See docs/ARCHITECTURE.md for how a heartbeat flows through these layers.

pub mod config;
pub mod core;
pub mod rng;
pub mod shell;
pub mod time;
pub mod wire;

/// Always compiled (integration tests do not see the library's `cfg(test)`);
/// nothing in the daemon uses it, so the linker drops it from the binary.
pub mod sim;
