//! Consistent Overhead Byte Stuffing: removes every 0x00 so 0x00 can delimit frames.
//!
//! Layer: pure, no allocation, every loop bounded by its input length.
//!
//! Encoding splits the input at each 0x00 into blocks; each block is written as a
//! code byte `n` (1..=0xFF) followed by `n - 1` non-zero data bytes. A code below
//! 0xFF means "a 0x00 followed this block" (the last such zero is implied by the
//! end of the frame and dropped); 0xFF means "254 data bytes, no zero". The output
//! never contains 0x00 and is at most [`max_encoded_len`] bytes long.
//!
//! The decoder is a transition function on `(state, byte)` modeled on the `cobs`
//! crate's `DecoderState`: [`Decoder::feed`] takes one byte and returns at most one
//! output byte, so the stream decoder can decode in place as bytes arrive, and
//! [`decode`] is the same machine run over a slice. Invariant: a decoder never
//! writes more bytes than it has read.

use super::FrameError;

/// Largest code byte: a block of 254 data bytes with no zero after it.
const CODE_MAX: u8 = 0xFF;

/// Worst-case encoded length of `len` input bytes (one extra byte per 254, plus the
/// first code byte). Excludes the 0x00 delimiter.
pub const fn max_encoded_len(len: usize) -> usize {
    len + len / (CODE_MAX as usize - 1) + 1
}

/// COBS-encodes `input` into `out` and returns the number of bytes written.
/// Writes no 0x00 and no delimiter.
///
/// Panics if `out` is shorter than [`max_encoded_len`]`(input.len())`: the caller
/// sizes its buffer from our own frame, so a short buffer is a programmer error.
pub fn encode(input: &[u8], out: &mut [u8]) -> usize {
    assert!(
        out.len() >= max_encoded_len(input.len()),
        "COBS output buffer too small"
    );
    let mut code_at = 0; // where the current block's code byte goes
    let mut write = 1; // next data byte position
    let mut code: u8 = 1; // 1 + data bytes in the current block
    for &byte in input {
        if byte == 0 {
            out[code_at] = code;
            code_at = write;
            write += 1;
            code = 1;
            continue;
        }
        out[write] = byte;
        write += 1;
        code += 1;
        if code == CODE_MAX {
            out[code_at] = code;
            code_at = write;
            write += 1;
            code = 1;
        }
    }
    out[code_at] = code;
    assert!(write <= max_encoded_len(input.len()));
    write
}

/// COBS-decodes `input` (without its 0x00 delimiter) into `out`; returns the length.
///
/// Errors: [`FrameError::Cobs`] if the input is empty, contains 0x00, or ends in the
/// middle of a block; [`FrameError::Long`] if the output does not fit in `out`.
/// Never panics, whatever the input.
pub fn decode(input: &[u8], out: &mut [u8]) -> Result<usize, FrameError> {
    let mut decoder = Decoder::new();
    let mut written = 0;
    for &byte in input {
        if let Some(data) = decoder.feed(byte) {
            let slot = out.get_mut(written).ok_or(FrameError::Long)?;
            *slot = data;
            written += 1;
        }
    }
    decoder.finish()?;
    Ok(written)
}

/// Where the decoder is within a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Nothing read yet: the next byte is the first code byte.
    Start,
    /// The next byte is a code byte; `zero` says the previous block implied a 0x00,
    /// which is emitted only now that we know the frame goes on.
    Code { zero: bool },
    /// Inside a block: `left` data bytes still to come, then a 0x00 if `zero`.
    Data { left: u8, zero: bool },
    /// A 0x00 arrived inside the chunk: nothing can repair it until `finish`.
    Invalid,
}

/// The streaming COBS decoder: one byte in, at most one byte out.
#[derive(Clone, Copy, Debug)]
pub struct Decoder {
    state: State,
}

impl Default for Decoder {
    fn default() -> Decoder {
        Decoder::new()
    }
}

impl Decoder {
    /// A decoder at the start of a chunk.
    pub const fn new() -> Decoder {
        Decoder {
            state: State::Start,
        }
    }

    /// Feeds one encoded byte; returns the decoded byte it completes, if any.
    pub fn feed(&mut self, byte: u8) -> Option<u8> {
        let (out, next) = step(self.state, byte);
        self.state = next;
        out
    }

    /// Ends the chunk (the 0x00 delimiter arrived). `Err(Cobs)` unless the chunk
    /// was non-empty and ended exactly at a block boundary. Resets the decoder.
    pub fn finish(&mut self) -> Result<(), FrameError> {
        let state = self.state;
        self.state = State::Start;
        match state {
            // Block boundary: any implied trailing zero is dropped.
            State::Code { .. } => Ok(()),
            // Empty chunk, cut block, or a 0x00 inside the chunk.
            State::Start | State::Data { .. } | State::Invalid => Err(FrameError::Cobs),
        }
    }
}

/// The transition function: `(state, byte) -> (output, next state)`.
fn step(state: State, byte: u8) -> (Option<u8>, State) {
    match (state, byte) {
        // A 0x00 never appears inside an encoded chunk.
        (_, 0) => (None, State::Invalid),
        // Once invalid, stay invalid until the delimiter.
        (State::Invalid, _) => (None, State::Invalid),
        // First code byte: no pending zero before it.
        (State::Start, code) => (None, open_block(code)),
        // A code byte after a block that implied a zero: the zero is real data now.
        (State::Code { zero: true }, code) => (Some(0), open_block(code)),
        // A code byte after a 0xFF block: no zero between the blocks.
        (State::Code { zero: false }, code) => (None, open_block(code)),
        // The last data byte of a block.
        (State::Data { left: 1, zero }, data) => (Some(data), State::Code { zero }),
        // A data byte with more to come.
        (State::Data { left, zero }, data) => (
            Some(data),
            State::Data {
                left: left - 1,
                zero,
            },
        ),
    }
}

/// The state after reading code byte `code` (non-zero).
fn open_block(code: u8) -> State {
    let zero = code != CODE_MAX;
    match code - 1 {
        // Code 1: an empty block, i.e. just a zero.
        0 => State::Code { zero },
        left => State::Data { left, zero },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    const MAX_LEN: usize = 600;

    fn roundtrip(input: &[u8]) {
        let mut enc = [0u8; max_encoded_len(MAX_LEN)];
        let n = encode(input, &mut enc);
        assert!(n <= max_encoded_len(input.len()));
        assert!(
            !enc[..n].contains(&0),
            "encoded output contains 0x00: {:?}",
            &enc[..n]
        );
        let mut dec = [0u8; MAX_LEN];
        let m = decode(&enc[..n], &mut dec).expect("own encoding decodes");
        assert_eq!(&dec[..m], input);
    }

    // ==== Tests for encode/decode ====

    #[test]
    fn encode_known_vectors_match_the_paper() {
        let cases: &[(&[u8], &[u8])] = &[
            (&[], &[0x01]),
            (&[0x00], &[0x01, 0x01]),
            (&[0x00, 0x00], &[0x01, 0x01, 0x01]),
            (&[0x11, 0x22, 0x00, 0x33], &[0x03, 0x11, 0x22, 0x02, 0x33]),
            (&[0x11, 0x00, 0x00, 0x00], &[0x02, 0x11, 0x01, 0x01, 0x01]),
        ];
        for (raw, enc) in cases {
            let mut out = [0u8; 16];
            let n = encode(raw, &mut out);
            assert_eq!(&out[..n], *enc);
            let mut dec = [0u8; 16];
            let m = decode(enc, &mut dec).unwrap();
            assert_eq!(&dec[..m], *raw);
        }
    }

    #[test]
    fn encode_block_boundaries_roundtrip() {
        for len in [253, 254, 255, 507, 508, 509] {
            let nonzero = [0x5Au8; MAX_LEN];
            roundtrip(&nonzero[..len]);
            let mut with_zero = nonzero;
            with_zero[len - 1] = 0;
            roundtrip(&with_zero[..len]);
        }
    }

    #[test]
    fn encode_random_inputs_roundtrip_without_zero() {
        let mut rng = Rng::new(0xC0B5);
        let mut buf = [0u8; MAX_LEN];
        for _ in 0..2000 {
            let len = rng.below(MAX_LEN as u64 + 1) as usize;
            let zero_bias = rng.below(4);
            for b in buf[..len].iter_mut() {
                // Mix dense-zero, sparse-zero and zero-free inputs.
                *b = if rng.below(4) < zero_bias {
                    0
                } else {
                    rng.next_u64() as u8
                };
            }
            roundtrip(&buf[..len]);
        }
    }

    #[test]
    fn decode_empty_is_cobs_error() {
        assert_eq!(decode(&[], &mut [0u8; 4]), Err(FrameError::Cobs));
    }

    #[test]
    fn decode_zero_inside_is_cobs_error() {
        assert_eq!(decode(&[0x02, 0x00], &mut [0u8; 4]), Err(FrameError::Cobs));
        assert_eq!(
            decode(&[0x01, 0x00, 0x01], &mut [0u8; 4]),
            Err(FrameError::Cobs)
        );
    }

    #[test]
    fn decode_cut_block_is_cobs_error() {
        assert_eq!(decode(&[0x03, 0x11], &mut [0u8; 4]), Err(FrameError::Cobs));
        assert_eq!(decode(&[0xFF], &mut [0u8; 4]), Err(FrameError::Cobs));
    }

    #[test]
    fn decode_output_too_small_is_long() {
        assert_eq!(
            decode(&[0x04, 1, 2, 3], &mut [0u8; 2]),
            Err(FrameError::Long)
        );
    }

    #[test]
    fn decode_random_garbage_never_panics_and_never_grows() {
        let mut rng = Rng::new(0xBAD);
        let mut input = [0u8; 64];
        for _ in 0..5000 {
            let len = rng.below(64) as usize;
            for b in input[..len].iter_mut() {
                *b = rng.next_u64() as u8;
            }
            let mut out = [0u8; 64];
            if let Ok(n) = decode(&input[..len], &mut out) {
                assert!(n <= len);
            }
        }
    }
}
