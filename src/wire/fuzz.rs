//! Bodies of the wire fuzz targets, shared by `fuzz/` (cargo-fuzz, nightly) and
//! `tests/corpus_replay.rs` (stable), so CI replays the corpus through exactly the
//! checks the fuzzer runs.
//!
//! Layer: test support, compiled always (the fuzz crate links the normal library).
//! Each function asserts invariants, not only the absence of panics: a failed
//! assertion is a bug found. Allocation happens once (the shared test keyring);
//! the checks themselves use stack buffers.
//!
//! Fields are carved from the input bytes ([`Carver`]) instead of using the
//! `arbitrary` crate: zeros once the input runs out.

use std::sync::OnceLock;

use super::frame::{
    AdvertState, Adverts, GroupAdvert, Header, HeartbeatPayload, Kind, Packet, Repr, GROUPS_MAX,
};
use super::{cobs, codec, Feed, FrameError, Keyring, StreamDecoder, ENCODED_MAX, FRAME_MAX};
use crate::config::digest::ConfigDigest;
use crate::config::{AuthKey, AuthKeys, AuthMethod};
use crate::rng::Rng;

/// Largest piece [`frame_stream`] feeds at once, bytes (serial reads are small).
const SPLIT_MAX: u64 = 64;

/// The keyring every target uses: one key per method (ids 1 sha256, 2 sha1,
/// 3 md5, 4 crc), active 1. Fixed, so corpus files stay valid frames.
pub fn keyring() -> &'static Keyring {
    static RING: OnceLock<Keyring> = OnceLock::new();
    RING.get_or_init(|| {
        let key = |id, method, secret: &[u8]| AuthKey {
            id,
            method,
            secret: secret.to_vec(),
        };
        Keyring::new(AuthKeys {
            active: 1,
            keys: vec![
                key(1, AuthMethod::Sha256, b"fuzz sha256 key"),
                key(2, AuthMethod::Sha1, b"fuzz sha1 key"),
                key(3, AuthMethod::Md5, b"fuzz md5 key"),
                key(4, AuthMethod::Crc, b""),
            ],
        })
    })
}

/// Reads fixed-width fields off the front of the fuzz input; zeros when empty.
pub struct Carver<'a> {
    data: &'a [u8],
}

impl<'a> Carver<'a> {
    /// Carves from `data`.
    pub fn new(data: &'a [u8]) -> Carver<'a> {
        Carver { data }
    }

    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.data.len());
        out[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        out
    }

    /// One byte.
    pub fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }

    /// A little-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }

    /// A little-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }

    /// A little-endian u64.
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }

    /// Whatever is left.
    pub fn rest(&self) -> &'a [u8] {
        self.data
    }
}

/// Group adverts from carved bytes: a count byte (mod `GROUPS_MAX + 1`), then
/// always `GROUPS_MAX` advert bytes, each mapped onto a valid advert (a canonical
/// advert byte carves to itself).
fn carve_adverts(c: &mut Carver) -> Adverts {
    let count = c.u8() as usize % (GROUPS_MAX + 1);
    let mut adverts = [GroupAdvert::default(); GROUPS_MAX];
    for advert in adverts.iter_mut() {
        let b = c.u8();
        *advert = GroupAdvert {
            state: AdvertState::ALL[(b & 0x07) as usize % AdvertState::ALL.len()],
            offer: b & 0x08 != 0,
            want: b & 0x10 != 0,
        };
    }
    Adverts::from_slice(&adverts[..count]).expect("count <= GROUPS_MAX")
}

/// A `Repr` from carved fields, signed with one of [`keyring`]'s keys. `kind` is
/// any code, so unknown kinds are covered too.
pub fn carve_repr(c: &mut Carver) -> Repr {
    let ring = keyring();
    let keys = &ring.keys().keys;
    let key = keys[c.u8() as usize % keys.len()].id;
    Repr {
        header: Header {
            kind: Kind::from(c.u8()),
            key,
            node: c.u8(),
            boot_epoch: c.u32(),
            seq: c.u64(),
            flags: c.u16(),
        },
        heartbeat: HeartbeatPayload {
            sent_ms: c.u32(),
            echo_ms: c.u32(),
            status: c.u8(),
            echo_hold_ms: c.u16(),
            digest: ConfigDigest {
                ha_cf: c.u32(),
                haresources: c.u32(),
                authkeys: c.u32(),
            },
            // Struct fields evaluate in source order: adverts, then the ping count.
            adverts: carve_adverts(c),
            ping_reachable: c.u8(),
        },
    }
}

/// Fuzz target `frame_stream`: random bytes, split at random points, through the
/// stream decoder and `decode`; then a valid frame, which must come out.
///
/// Input: 8 bytes of split seed, 48 bytes carved into the final valid frame, then
/// the stream. Invariants: `feed` always makes progress; frames are at most
/// `FRAME_MAX`; every accepted frame is canonical (re-encoding its `Repr` gives
/// back its header and payload, and under full checks its exact bytes) and the
/// datagram path agrees with the stream path; after the garbage, the valid frame
/// decodes to its `Repr`.
pub fn frame_stream(data: &[u8]) {
    let ring = keyring();
    let mut c = Carver::new(data);
    let mut rng = Rng::new(c.u64());
    let valid = carve_repr(&mut c);
    let stream = c.rest();
    let mut dec = StreamDecoder::new();
    let mut pos = 0;
    while pos < stream.len() {
        let take = (1 + rng.below(SPLIT_MAX) as usize).min(stream.len() - pos);
        feed_checked(&mut dec, ring, &stream[pos..pos + take]);
        pos += take;
    }
    let mut enc = [0u8; ENCODED_MAX];
    let n = codec::encode(ring, &valid, &mut enc);
    let last = feed_checked(&mut dec, ring, &enc[..n]);
    assert_eq!(
        last,
        Some(expected(&valid)),
        "a valid frame after 0x00 must decode"
    );
}

/// What decoding an encoding of `repr` must give.
fn expected(repr: &Repr) -> Result<Repr, FrameError> {
    match repr.header.kind {
        Kind::Heartbeat => Ok(*repr),
        Kind::Unknown(_) => Err(FrameError::Payload),
    }
}

/// Feeds `input` fully, checking every outcome; returns the last decode result.
fn feed_checked(
    dec: &mut StreamDecoder,
    ring: &Keyring,
    mut input: &[u8],
) -> Option<Result<Repr, FrameError>> {
    let mut last = None;
    // Each outcome consumes at least one byte, so len + 1 rounds always suffice.
    for _ in 0..=input.len() {
        let before = input.len();
        match dec.feed(input) {
            Feed::Consumed => return last,
            Feed::Frame { frame, rest } => {
                assert!(
                    frame.len() <= FRAME_MAX,
                    "stream yielded {} bytes",
                    frame.len()
                );
                let result = codec::decode(ring, frame);
                check_decoded(ring, frame, &result);
                last = Some(result);
                input = rest;
            }
            Feed::Error { error, rest } => {
                assert!(
                    matches!(error, FrameError::Cobs | FrameError::Long),
                    "stream error {error}"
                );
                last = Some(Err(error));
                input = rest;
            }
        }
        assert!(input.len() < before, "feed made no progress");
    }
    panic!("feed did not finish within its input length");
}

/// Invariants on one decoded frame: canonical if accepted, and the datagram path
/// gives the same answer as the stream path.
fn check_decoded(ring: &Keyring, frame: &[u8], result: &Result<Repr, FrameError>) {
    // A FRAME_MAX frame may need one byte more than ENCODED_MAX with both delimiters.
    let mut enc = [0u8; ENCODED_MAX + 1];
    let n = cobs::encode(frame, &mut enc[1..]);
    enc[n + 1] = 0;
    let mut scratch = [0u8; FRAME_MAX];
    assert_eq!(
        &codec::decode_datagram(ring, &enc[..n + 2], &mut scratch),
        result,
        "datagram path disagrees"
    );
    let Ok(repr) = result else { return };
    let mut again = [0u8; ENCODED_MAX];
    let m = codec::encode(ring, repr, &mut again);
    let mut raw = [0u8; FRAME_MAX];
    let len = cobs::decode(&again[1..m - 1], &mut raw).expect("own encoding decodes");
    assert_eq!(len, frame.len(), "accepted frame is not canonical (length)");
    let signed = Packet::new_unchecked(frame).signed_bytes().len();
    assert_eq!(
        &raw[..signed],
        &frame[..signed],
        "accepted frame is not canonical (header/payload)"
    );
    if !cfg!(fuzzing) {
        assert_eq!(
            &raw[..len],
            frame,
            "accepted frame differs from its re-encoding"
        );
    }
}

/// Fuzz target `frame_roundtrip`: carved fields -> `Repr` -> `encode` -> every
/// decode path gives the `Repr` back (or `Payload` for an unknown kind).
///
/// Invariants: the encoding is `00 .. 00` with no other 0x00 and fits
/// `ENCODED_MAX`; the stream decoder fed in two pieces yields exactly one frame;
/// `decode`, `decode_datagram` and `Repr::parse` agree.
pub fn frame_roundtrip(data: &[u8]) {
    let ring = keyring();
    let mut c = Carver::new(data);
    let repr = carve_repr(&mut c);
    let split = c.u8() as usize;
    let want = expected(&repr);

    let mut enc = [0u8; ENCODED_MAX];
    let n = codec::encode(ring, &repr, &mut enc);
    assert!((3..=ENCODED_MAX).contains(&n), "encoded length {n}");
    assert_eq!((enc[0], enc[n - 1]), (0, 0), "delimiters");
    assert!(!enc[1..n - 1].contains(&0), "0x00 inside the encoding");

    let mut scratch = [0u8; FRAME_MAX];
    assert_eq!(
        codec::decode_datagram(ring, &enc[..n], &mut scratch),
        want,
        "datagram"
    );
    let mut raw = [0u8; FRAME_MAX];
    let len = cobs::decode(&enc[1..n - 1], &mut raw).expect("own encoding decodes");
    assert_eq!(len, repr.buffer_len());
    assert_eq!(
        Repr::parse(&Packet::new_unchecked(&raw[..len])),
        want,
        "Repr::parse"
    );

    let mut dec = StreamDecoder::new();
    let split = split.min(n);
    let first = feed_checked(&mut dec, ring, &enc[..split]);
    let second = feed_checked(&mut dec, ring, &enc[split..]);
    assert!(
        first.is_none() || second.is_none(),
        "one encoding, one outcome"
    );
    assert_eq!(first.or(second), Some(want), "stream");
}
