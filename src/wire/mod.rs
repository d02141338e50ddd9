//! Wire layer: the bytes that cross every medium.
//!
//! Layer: pure, zero-copy, no allocation. One frame format for serial and UDP:
//!
//! ```text
//!   COBS( header[24] | payload[len] | mac[16] | crc32c[4] ) 0x00
//! ```
//!
//! Checks run cheapest first: COBS, length, CRC (line noise), version and kind,
//! MAC (constant-time), then replay (in the core, which knows the peer's epoch).
//! Peer input never panics: every failure is a [`FrameError`] value.

pub mod cobs;
pub mod frame;
pub mod mac;
pub mod stream;

pub use frame::{FrameError, Header, HeartbeatPayload, Kind, Packet, Repr};
pub use mac::Keyring;
pub use stream::{Feed, StreamDecoder};

/// Largest encoded frame we send or accept, before COBS (header + payload + mac + crc).
pub const FRAME_MAX: usize = 256;
/// Largest COBS-encoded frame including the trailing 0x00.
pub const ENCODED_MAX: usize = FRAME_MAX + FRAME_MAX / 254 + 2;
