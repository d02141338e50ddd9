//! Stream decoder for byte streams (serial): accumulates bytes up to 0x00.
//!
//! Layer: pure, fixed buffer, no allocation. Follows postcard's `CobsAccumulator`:
//! `feed` always hands back the unconsumed input so the caller loops, and decoding
//! resyncs at every 0x00.
//!
//! Bytes are COBS-decoded in place as they arrive ([`cobs::Decoder`] never writes
//! more than it reads), so one `[u8; ENCODED_MAX]` buffer suffices. Per chunk
//! (bytes between two 0x00):
//! - empty chunk (`00 00`, the leading delimiter every frame carries): skipped;
//! - more than `ENCODED_MAX - 1` bytes: one `Error{Long}` as soon as that is known,
//!   then every byte up to the next 0x00 is skipped;
//! - bad COBS at the delimiter: `Error{Cobs}`; decoded longer than `FRAME_MAX`:
//!   `Error{Long}`;
//! - otherwise `Frame`, to be checked by `wire::decode`.
//!
//! Invariant: each `feed` call is one pass over its input; every returned `rest`
//! is a strict suffix of `input`, so a caller looping on `rest` terminates.

use super::cobs;
use super::{FrameError, ENCODED_MAX, FRAME_MAX};

/// Most encoded bytes a chunk may have, excluding its 0x00 delimiter.
const CHUNK_MAX: usize = ENCODED_MAX - 1;

/// Result of feeding bytes to a [`StreamDecoder`].
#[derive(Debug, PartialEq, Eq)]
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
    /// Decoded bytes of the current chunk, `buf[..decoded]`.
    buf: [u8; ENCODED_MAX],
    /// How many decoded bytes are in `buf`.
    decoded: usize,
    /// How many encoded bytes the current chunk has had.
    encoded: usize,
    /// The COBS state within the current chunk.
    cobs: cobs::Decoder,
    /// The current chunk overflowed and was reported; skip to the next 0x00.
    skipping: bool,
}

impl Default for StreamDecoder {
    fn default() -> StreamDecoder {
        StreamDecoder::new()
    }
}

impl StreamDecoder {
    /// An empty decoder, as if just after a 0x00.
    pub const fn new() -> StreamDecoder {
        StreamDecoder {
            buf: [0; ENCODED_MAX],
            decoded: 0,
            encoded: 0,
            cobs: cobs::Decoder::new(),
            skipping: false,
        }
    }

    /// Forgets any partial chunk (the next byte starts a new one).
    pub fn reset(&mut self) {
        self.decoded = 0;
        self.encoded = 0;
        self.cobs = cobs::Decoder::new();
        self.skipping = false;
    }

    /// Feeds bytes until a frame or error completes, or the input runs out.
    /// Call again with `rest` until it returns [`Feed::Consumed`].
    pub fn feed<'a, 'b>(&'b mut self, input: &'a [u8]) -> Feed<'a, 'b> {
        for (i, &byte) in input.iter().enumerate() {
            let rest = &input[i + 1..];
            if byte == 0 {
                if let Some(outcome) = self.end_chunk() {
                    return match outcome {
                        Ok(len) => Feed::Frame {
                            frame: &self.buf[..len],
                            rest,
                        },
                        Err(error) => Feed::Error { error, rest },
                    };
                }
                continue;
            }
            if self.skipping {
                continue;
            }
            if self.encoded == CHUNK_MAX {
                // Too long to be ours: report once, resync at the next 0x00.
                self.skipping = true;
                return Feed::Error {
                    error: FrameError::Long,
                    rest,
                };
            }
            self.encoded += 1;
            if let Some(data) = self.cobs.feed(byte) {
                assert!(
                    self.decoded < self.encoded,
                    "COBS never decodes more than it reads"
                );
                self.buf[self.decoded] = data;
                self.decoded += 1;
            }
        }
        Feed::Consumed
    }

    /// The 0x00 delimiter arrived: resets for the next chunk and says what the
    /// ended one was. `None` for nothing to report (empty, or already reported).
    fn end_chunk(&mut self) -> Option<Result<usize, FrameError>> {
        let (skipping, encoded, decoded) = (self.skipping, self.encoded, self.decoded);
        let cobs = self.cobs.finish();
        self.reset();
        if skipping || encoded == 0 {
            return None;
        }
        Some(match cobs {
            Err(e) => Err(e),
            Ok(()) if decoded > FRAME_MAX => Err(FrameError::Long),
            Ok(()) => Ok(decoded),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` fully and collects what came out (frames as copies).
    fn drain(
        dec: &mut StreamDecoder,
        mut input: &[u8],
        out: &mut Vec<Result<Vec<u8>, FrameError>>,
    ) {
        for _ in 0..=input.len() {
            match dec.feed(input) {
                Feed::Consumed => return,
                Feed::Frame { frame, rest } => {
                    out.push(Ok(frame.to_vec()));
                    assert!(rest.len() < input.len());
                    input = rest;
                }
                Feed::Error { error, rest } => {
                    out.push(Err(error));
                    assert!(rest.len() < input.len());
                    input = rest;
                }
            }
        }
        panic!("feed did not make progress");
    }

    fn encoded(raw: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; cobs::max_encoded_len(raw.len())];
        let n = cobs::encode(raw, &mut out);
        out.truncate(n);
        out.push(0);
        out
    }

    // ==== Tests for the Idle state (between chunks) ====

    #[test]
    fn idle_empty_chunks_are_skipped_silently() {
        let mut dec = StreamDecoder::new();
        let mut out = Vec::new();
        drain(&mut dec, &[0, 0, 0, 0], &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn idle_frame_comes_out_whole() {
        let mut dec = StreamDecoder::new();
        let mut out = Vec::new();
        drain(&mut dec, &encoded(b"\x01\x00\x02hello"), &mut out);
        assert_eq!(out, vec![Ok(b"\x01\x00\x02hello".to_vec())]);
    }

    // ==== Tests for the Accumulating state (inside a chunk) ====

    #[test]
    fn accumulating_byte_by_byte_gives_same_frames() {
        let mut stream = encoded(b"first\x00frame");
        stream.extend(encoded(b"second"));
        let mut dec = StreamDecoder::new();
        let mut out = Vec::new();
        for b in &stream {
            drain(&mut dec, core::slice::from_ref(b), &mut out);
        }
        assert_eq!(
            out,
            vec![Ok(b"first\x00frame".to_vec()), Ok(b"second".to_vec())]
        );
    }

    #[test]
    fn accumulating_cut_block_is_cobs_error() {
        let mut dec = StreamDecoder::new();
        let mut out = Vec::new();
        drain(&mut dec, &[0x05, 1, 2, 0], &mut out);
        assert_eq!(out, vec![Err(FrameError::Cobs)]);
    }

    #[test]
    fn accumulating_decoded_too_long_is_long() {
        // 258 encoded bytes decoding to 257 > FRAME_MAX (the zero costs no byte).
        let mut raw = [7u8; FRAME_MAX + 1];
        raw[100] = 0;
        let enc = encoded(&raw);
        assert_eq!(enc.len() - 1, CHUNK_MAX);
        let mut dec = StreamDecoder::new();
        let mut out = Vec::new();
        drain(&mut dec, &enc, &mut out);
        assert_eq!(out, vec![Err(FrameError::Long)]);
    }

    // ==== Tests for the Skipping state (overflowed chunk) ====

    #[test]
    fn skipping_reports_long_once_then_resyncs() {
        let mut stream = vec![0x42u8; 3 * ENCODED_MAX];
        stream.push(0);
        stream.extend(encoded(b"good"));
        let mut dec = StreamDecoder::new();
        let mut out = Vec::new();
        drain(&mut dec, &stream, &mut out);
        assert_eq!(out, vec![Err(FrameError::Long), Ok(b"good".to_vec())]);
    }

    #[test]
    fn skipping_survives_split_feeds() {
        let mut dec = StreamDecoder::new();
        let mut out = Vec::new();
        for _ in 0..10 {
            drain(&mut dec, &[0x42u8; 100], &mut out);
        }
        drain(&mut dec, &[0], &mut out);
        drain(&mut dec, &encoded(b"ok"), &mut out);
        assert_eq!(out, vec![Err(FrameError::Long), Ok(b"ok".to_vec())]);
    }
}
