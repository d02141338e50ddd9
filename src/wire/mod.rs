//! Wire layer: the bytes that cross every medium.
//!
//! Layer: pure, zero-copy, no allocation. One frame format for serial and UDP:
//!
//! ```text
//!   0x00 COBS( header[24] | payload[len] | mac[16] | crc32c[4] ) 0x00
//! ```
//!
//! The leading 0x00 ends any partial chunk a receiver holds, so a frame cut by a
//! glitch never takes the next one down with it ([`codec`] has the details).
//!
//! Checks run cheapest first: COBS, length, CRC (line noise), version, key id and
//! MAC (constant-time), kind and payload (an unknown kind only after the MAC), then
//! replay (in the core, which knows the peer's epoch).
//! Peer input never panics: every failure is a [`FrameError`] value.

pub mod cobs;
pub mod codec;
pub mod frame;
#[doc(hidden)]
pub mod fuzz;
pub mod mac;
pub mod nbd;
pub mod repl;
pub mod stream;

pub use codec::{decode, decode_datagram, encode};
pub use frame::{
    AdvertState, Adverts, FrameError, GroupAdvert, Header, HeartbeatPayload, Kind, Packet, Repr,
    GROUPS_MAX,
};
pub use mac::Keyring;
pub use stream::{Feed, StreamDecoder};

/// Largest encoded frame we send or accept, before COBS (header + payload + mac + crc).
pub const FRAME_MAX: usize = 256;
/// Largest COBS-encoded chunk including its trailing 0x00 (what the stream
/// decoder accepts). Our own frames are far shorter, so they fit with the leading
/// 0x00 too (`encode` asserts it).
pub const ENCODED_MAX: usize = FRAME_MAX + FRAME_MAX / 254 + 2;
