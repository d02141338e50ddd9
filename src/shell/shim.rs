//! TEMPORARY stand-ins for functions other helpers are adding in parallel
//! (wire::encode, decode, decode_datagram, StreamDecoder). Deleted after merging main.

use crate::wire::{Feed, FrameError, Keyring, Repr, ENCODED_MAX, FRAME_MAX};

/// Stand-in for `wire::encode`.
pub fn encode(keyring: &Keyring, repr: &Repr, out: &mut [u8; ENCODED_MAX]) -> usize {
    let _ = (keyring, repr, out);
    0
}

/// Stand-in for `wire::decode`.
pub fn decode(keyring: &Keyring, frame: &[u8]) -> Result<Repr, FrameError> {
    let _ = (keyring, frame);
    Err(FrameError::Short)
}

/// Stand-in for `wire::decode_datagram`.
pub fn decode_datagram(
    keyring: &Keyring,
    datagram: &[u8],
    scratch: &mut [u8; FRAME_MAX],
) -> Result<Repr, FrameError> {
    let _ = (keyring, datagram, scratch);
    Err(FrameError::Short)
}

/// Stand-in for `wire::StreamDecoder`.
pub struct StreamDecoder;

impl StreamDecoder {
    /// Stand-in.
    pub fn new() -> StreamDecoder {
        StreamDecoder
    }

    /// Stand-in.
    pub fn feed<'a, 'b>(&'b mut self, input: &'a [u8]) -> Feed<'a, 'b> {
        let _ = input;
        Feed::Consumed
    }
}
