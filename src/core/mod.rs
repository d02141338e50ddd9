//! The core: pure state machines. No I/O, no clock, no allocation after `new`.
//!
//! Each machine follows quinn-proto's shape: `handle_*` methods take inputs with the
//! current time, `poll_*` methods drain outputs (transmits, events, the next
//! deadline). The shell drains in this order after every input: `poll_transmit`,
//! `poll_event`, then `poll_timeout` to arm its poll.

pub mod event;
pub mod membership;
pub mod replication;
pub mod takeover;

pub use event::{Event, LinkId, Names};
pub use membership::{LinkState, Membership, MembershipConfig, PeerState};
