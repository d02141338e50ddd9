//! Stream decoder for byte streams (serial): accumulates bytes up to 0x00.
//!
//! Layer: pure, fixed buffer. Follows postcard's `CobsAccumulator`: `feed` always
//! hands back the unconsumed input so the caller loops, and decoding resyncs at
//! every 0x00.

/// Result of feeding bytes to a [`StreamDecoder`].
pub enum Feed<'a, 'b> {
    /// Consumed everything; no complete frame yet.
    Consumed,
    /// A complete, COBS-decoded frame (not yet CRC/MAC checked) and the rest of the input.
    Frame {
        /// The decoded frame bytes.
        frame: &'b [u8],
        /// Unconsumed input.
        rest: &'a [u8],
    },
    /// A delimited chunk that failed (too long, or bad COBS); the rest of the input.
    Error {
        /// Why.
        error: super::FrameError,
        /// Unconsumed input.
        rest: &'a [u8],
    },
}

/// Accumulates a byte stream into frames in a fixed buffer.
pub struct StreamDecoder {
    _buf: [u8; super::ENCODED_MAX],
}
