//! Whole-frame encode and decode: Repr <-> signed, CRC'd, COBS-framed bytes.
//!
//! Layer: pure, no allocation (one `[u8; FRAME_MAX]` on the stack per call).
//!
//! On the wire a frame is `00 COBS(header | payload | mac | crc) 00`. The leading
//! 0x00 is not required by COBS: it ends whatever partial chunk the receiver holds
//! (a frame cut by a serial glitch, line noise), so the frame after a cut always
//! comes out; the receiver skips the resulting empty chunk (`00 00`).
//!
//! [`decode`] checks, cheapest first, each failure a [`FrameError`]:
//! 1. buffer length: `Short` below `FRAME_MIN`, `Long` above `FRAME_MAX`;
//! 2. CRC-32C over everything but the last 4 bytes: `Crc`. It runs before the `len`
//!    field is trusted, so line noise in `len` is counted as `Crc`, not `Short`;
//! 3. version: `Version`;
//! 4. `len` against the buffer: `Short`/`Long`;
//! 5. key id and MAC (constant time): `UnknownKey`, `Mac`;
//! 6. kind, reserved fields and payload: `Payload`. An unknown kind is reported only
//!    after the MAC, so the core counts authentic frames from a newer peer, never
//!    forged ones.
//!
//! Replay, reflection and unknown nodes are the core's checks (it knows the peer).

use super::cobs;
use super::frame::{Packet, Repr, FRAME_MIN};
use super::{FrameError, Keyring, ENCODED_MAX, FRAME_MAX};

// Every frame we can emit fits `out` with both delimiters.
const _: () =
    assert!(cobs::max_encoded_len(FRAME_MIN + super::frame::HEARTBEAT_LEN) + 2 <= ENCODED_MAX);

/// Encodes `repr` into `out` as `00 COBS(frame) 00`, signed with the key
/// `repr.header.key`, and returns the number of bytes used.
///
/// Panics if that key is not in `keyring` (we sign only with our own keys).
pub fn encode(keyring: &Keyring, repr: &Repr, out: &mut [u8; ENCODED_MAX]) -> usize {
    let len = repr.buffer_len();
    assert!(len <= FRAME_MAX, "frame of {len} bytes exceeds FRAME_MAX");
    assert!(
        cobs::max_encoded_len(len) + 2 <= ENCODED_MAX,
        "encoded frame fits with both delimiters"
    );
    assert!(
        keyring.contains(repr.header.key),
        "signing key {} is not in authkeys",
        repr.header.key
    );
    let mut raw = [0u8; FRAME_MAX];
    let mut packet = Packet::new_unchecked(&mut raw[..len]);
    repr.emit(&mut packet);
    let tag = keyring.sign(repr.header.key, packet.signed_bytes());
    packet.set_mac(&tag);
    packet.fill_crc();
    out[0] = 0;
    let n = cobs::encode(&raw[..len], &mut out[1..]);
    out[n + 1] = 0;
    n + 2
}

/// Decodes one COBS-decoded frame (what [`super::StreamDecoder`] yields): checks
/// length, CRC, version, key id, MAC and payload, in that order (see the module
/// doc). Never panics, whatever the bytes.
pub fn decode(keyring: &Keyring, frame: &[u8]) -> Result<Repr, FrameError> {
    if frame.len() < FRAME_MIN {
        return Err(FrameError::Short);
    }
    if frame.len() > FRAME_MAX {
        return Err(FrameError::Long);
    }
    let packet = Packet::new_unchecked(frame);
    if !packet.crc_ok() {
        return Err(FrameError::Crc);
    }
    if packet.version() != super::frame::VERSION {
        return Err(FrameError::Version);
    }
    packet.check_len()?;
    keyring.verify(packet.key_id(), packet.signed_bytes(), packet.mac())?;
    Repr::parse(&packet)
}

/// Decodes a UDP datagram, which carries the same bytes as serial: an optional
/// leading 0x00, the COBS-encoded frame, then a 0x00. `scratch` holds the
/// COBS-decoded frame.
///
/// `Cobs` if the trailing 0x00 is missing, another 0x00 appears, or the COBS is
/// malformed; `Long` if it cannot be one of our frames; then as [`decode`].
pub fn decode_datagram(
    keyring: &Keyring,
    datagram: &[u8],
    scratch: &mut [u8; FRAME_MAX],
) -> Result<Repr, FrameError> {
    let body = datagram.strip_prefix(&[0]).unwrap_or(datagram);
    let body = body.strip_suffix(&[0]).ok_or(FrameError::Cobs)?;
    if body.len() > ENCODED_MAX - 1 {
        return Err(FrameError::Long);
    }
    let n = cobs::decode(body, scratch)?;
    decode(keyring, &scratch[..n])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::digest::ConfigDigest;
    use crate::config::{AuthKey, AuthKeys, AuthMethod};
    use crate::rng::Rng;
    use crate::wire::frame::{Header, HeartbeatPayload, Kind, CRC_LEN};
    use crate::wire::mac::tests::test_keys;
    use crate::wire::{Feed, StreamDecoder};

    fn repr(key: u8, seq: u64) -> Repr {
        Repr {
            header: Header {
                kind: Kind::Heartbeat,
                key,
                node: 0,
                boot_epoch: 7,
                seq,
                flags: 0,
            },
            heartbeat: HeartbeatPayload {
                sent_ms: 123_456,
                echo_ms: 123_000,
                status: 1,
                echo_hold_ms: 77,
                digest: ConfigDigest {
                    ha_cf: 0xDEAD_BEEF,
                    haresources: 0,
                    authkeys: 0x0BAD_F00D,
                },
                adverts: crate::wire::Adverts::from_slice(&[crate::wire::GroupAdvert {
                    state: crate::wire::AdvertState::Stopping,
                    offer: true,
                    want: false,
                }])
                .unwrap(),
                ping_reachable: 2,
            },
        }
    }

    fn encoded(ring: &Keyring, r: &Repr) -> Vec<u8> {
        let mut out = [0u8; ENCODED_MAX];
        let n = encode(ring, r, &mut out);
        out[..n].to_vec()
    }

    /// The COBS-decoded frame inside an encoding.
    fn raw(enc: &[u8]) -> Vec<u8> {
        let mut out = [0u8; FRAME_MAX];
        let n = cobs::decode(&enc[1..enc.len() - 1], &mut out).unwrap();
        out[..n].to_vec()
    }

    fn recrc(frame: &mut [u8]) {
        let mut packet = Packet::new_unchecked(frame);
        packet.fill_crc();
    }

    /// Feeds `input` fully; decodes every frame that comes out.
    fn stream_results(
        dec: &mut StreamDecoder,
        ring: &Keyring,
        mut input: &[u8],
    ) -> Vec<Result<Repr, FrameError>> {
        let mut results = Vec::new();
        for _ in 0..=input.len() {
            match dec.feed(input) {
                Feed::Consumed => return results,
                Feed::Frame { frame, rest } => {
                    results.push(decode(ring, frame));
                    input = rest;
                }
                Feed::Error { error, rest } => {
                    results.push(Err(error));
                    input = rest;
                }
            }
        }
        panic!("feed made no progress");
    }

    // ==== Tests for encode/decode of valid frames ====

    #[test]
    fn encode_every_method_roundtrips_by_stream_and_datagram() {
        let ring = Keyring::new(test_keys());
        for key in 1..=4 {
            let r = repr(key, 42);
            let enc = encoded(&ring, &r);
            assert_eq!((enc[0], enc[enc.len() - 1]), (0, 0));
            assert!(!enc[1..enc.len() - 1].contains(&0));
            let mut dec = StreamDecoder::new();
            assert_eq!(stream_results(&mut dec, &ring, &enc), vec![Ok(r)]);
            let mut scratch = [0u8; FRAME_MAX];
            assert_eq!(decode_datagram(&ring, &enc, &mut scratch), Ok(r));
            assert_eq!(decode_datagram(&ring, &enc[1..], &mut scratch), Ok(r));
        }
    }

    // ==== Tests for decode of damaged frames ====

    #[test]
    fn decode_any_single_bit_flip_is_rejected() {
        let ring = Keyring::new(test_keys());
        for key in 1..=4 {
            let r = repr(key, 99);
            let good = encoded(&ring, &r);
            for bit in 0..good.len() * 8 {
                let mut bad = good.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                let mut dec = StreamDecoder::new();
                // A trailing 0x00 flushes a chunk whose delimiter the flip removed.
                let mut input = bad.clone();
                input.push(0);
                let results = stream_results(&mut dec, &ring, &input);
                assert!(
                    results.iter().all(|res| res.is_err()),
                    "key {key} bit {bit}: {results:?}"
                );
                // And the next good frame still comes out: the stream resynced.
                assert_eq!(
                    stream_results(&mut dec, &ring, &good),
                    vec![Ok(r)],
                    "key {key} bit {bit}"
                );
                let mut scratch = [0u8; FRAME_MAX];
                assert!(
                    decode_datagram(&ring, &bad, &mut scratch).is_err(),
                    "datagram key {key} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn decode_wrong_secret_is_mac() {
        let ring = Keyring::new(test_keys());
        let mut other_keys = test_keys();
        other_keys.keys[0].secret = b"another secret".to_vec();
        let other = Keyring::new(other_keys);
        let enc = encoded(&other, &repr(1, 1));
        assert_eq!(decode(&ring, &raw(&enc)), Err(FrameError::Mac));
    }

    #[test]
    fn decode_unlisted_key_id_is_unknown_key() {
        let ring = Keyring::new(test_keys());
        let other = Keyring::new(AuthKeys {
            active: 9,
            keys: vec![AuthKey {
                id: 9,
                method: AuthMethod::Sha256,
                secret: b"x".to_vec(),
            }],
        });
        let enc = encoded(&other, &repr(9, 1));
        assert_eq!(decode(&ring, &raw(&enc)), Err(FrameError::UnknownKey));
    }

    #[test]
    fn decode_truncated_is_short() {
        let ring = Keyring::new(test_keys());
        let frame = raw(&encoded(&ring, &repr(1, 1)));
        for len in 0..FRAME_MIN {
            assert_eq!(
                decode(&ring, &frame[..len]),
                Err(FrameError::Short),
                "len {len}"
            );
        }
        // Cut after the header but with a consistent CRC: `len` points past the end.
        for len in FRAME_MIN..frame.len() {
            let mut cut = frame[..len].to_vec();
            recrc(&mut cut);
            assert_eq!(decode(&ring, &cut), Err(FrameError::Short), "len {len}");
        }
        // Cut without fixing the CRC: line noise, counted as such.
        assert_eq!(
            decode(&ring, &frame[..frame.len() - 1]),
            Err(FrameError::Crc)
        );
    }

    #[test]
    fn decode_trailing_bytes_is_long() {
        let ring = Keyring::new(test_keys());
        let mut frame = raw(&encoded(&ring, &repr(1, 1)));
        frame.extend_from_slice(&[0; CRC_LEN]);
        recrc(&mut frame);
        assert_eq!(decode(&ring, &frame), Err(FrameError::Long));
        assert_eq!(decode(&ring, &[0u8; FRAME_MAX + 1]), Err(FrameError::Long));
    }

    #[test]
    fn decode_version_2_is_version() {
        let ring = Keyring::new(test_keys());
        let mut frame = raw(&encoded(&ring, &repr(1, 1)));
        frame[0] = 2;
        assert_eq!(decode(&ring, &frame), Err(FrameError::Crc));
        recrc(&mut frame);
        assert_eq!(decode(&ring, &frame), Err(FrameError::Version));
    }

    #[test]
    fn decode_unknown_kind_signed_is_payload() {
        let ring = Keyring::new(test_keys());
        let mut r = repr(1, 1);
        r.header.kind = Kind::Unknown(0x42);
        assert_eq!(
            decode(&ring, &raw(&encoded(&ring, &r))),
            Err(FrameError::Payload)
        );
    }

    #[test]
    fn decode_datagram_without_delimiter_is_cobs() {
        let ring = Keyring::new(test_keys());
        let enc = encoded(&ring, &repr(1, 1));
        let mut scratch = [0u8; FRAME_MAX];
        assert_eq!(
            decode_datagram(&ring, &enc[..enc.len() - 1], &mut scratch),
            Err(FrameError::Cobs)
        );
        assert_eq!(
            decode_datagram(&ring, &[], &mut scratch),
            Err(FrameError::Cobs)
        );
        assert_eq!(
            decode_datagram(&ring, &[0, 0], &mut scratch),
            Err(FrameError::Cobs)
        );
        let mut two = enc.clone();
        two.extend_from_slice(&enc);
        assert_eq!(
            decode_datagram(&ring, &two, &mut scratch),
            Err(FrameError::Cobs)
        );
        assert_eq!(
            decode_datagram(&ring, &[0x42; 400], &mut scratch),
            Err(FrameError::Cobs)
        );
        let mut long = vec![0x42u8; 400];
        long.push(0);
        assert_eq!(
            decode_datagram(&ring, &long, &mut scratch),
            Err(FrameError::Long)
        );
    }

    // ==== Tests for the stream of frames ====

    #[test]
    fn stream_byte_by_byte_gives_every_frame() {
        let ring = Keyring::new(test_keys());
        let frames: Vec<Repr> = (1..=4).map(|k| repr(k, k as u64)).collect();
        let mut dec = StreamDecoder::new();
        let mut got = Vec::new();
        for r in &frames {
            for b in encoded(&ring, r) {
                got.extend(stream_results(&mut dec, &ring, &[b]));
            }
        }
        assert_eq!(got, frames.iter().map(|r| Ok(*r)).collect::<Vec<_>>());
    }

    #[test]
    fn stream_random_splits_with_garbage_between_gives_every_frame() {
        let ring = Keyring::new(test_keys());
        for seed in 0..50 {
            let mut rng = Rng::new(seed);
            let mut stream = Vec::new();
            let mut want = Vec::new();
            for i in 0..20u64 {
                for _ in 0..rng.below(300) {
                    stream.push(rng.next_u64() as u8);
                }
                let r = repr(1 + rng.below(4) as u8, i);
                stream.extend(encoded(&ring, &r));
                want.push(r);
            }
            let mut dec = StreamDecoder::new();
            let mut got = Vec::new();
            let mut pos = 0;
            while pos < stream.len() {
                let take = (1 + rng.below(80) as usize).min(stream.len() - pos);
                got.extend(stream_results(&mut dec, &ring, &stream[pos..pos + take]));
                pos += take;
            }
            let oks: Vec<Repr> = got.into_iter().filter_map(Result::ok).collect();
            assert_eq!(oks, want, "seed {seed}");
        }
    }

    #[test]
    fn stream_cut_frame_then_good_frame_gives_good_frame() {
        let ring = Keyring::new(test_keys());
        let first = encoded(&ring, &repr(1, 1));
        let second = repr(3, 2);
        for cut in 1..first.len() - 1 {
            let mut stream = first[..cut].to_vec();
            stream.extend(encoded(&ring, &second));
            let mut dec = StreamDecoder::new();
            let got = stream_results(&mut dec, &ring, &stream);
            assert_eq!(got.last(), Some(&Ok(second)), "cut at {cut}");
            assert_eq!(got.iter().filter(|r| r.is_ok()).count(), 1, "cut at {cut}");
        }
    }
}
