//! Frame authentication: HMAC-SHA256/SHA1/MD5 truncated to 16 bytes, or none (`crc`).
//!
//! Layer: pure. Tags are compared only in constant time ([`constant_time_eq`]).
//! Signing and verifying allocate nothing: the HMAC state lives on the stack and is
//! keyed per frame (two extra compression blocks; heartbeats are a few per second).
//!
//! The `crc` method signs with an all-zero tag: it protects against line noise
//! (the frame CRC does that anyway) and authenticates nothing. Anyone may forge a
//! frame under a `crc` key id, exactly as with Heartbeat's `crc`; the config parser
//! warns about it.
//!
//! Under `cfg(fuzzing)` a tag mismatch is ignored (the key id is still checked), so
//! the fuzzer reaches the payload parser; smoltcp does the same with checksums.

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};

use super::frame::MAC_LEN;
use super::FrameError;
use crate::config::{AuthKey, AuthKeys, AuthMethod};

/// The keys from authkeys, ready to sign and verify. Built once at start-up.
pub struct Keyring {
    keys: AuthKeys,
}

impl Keyring {
    /// Builds the keyring from the parsed authkeys.
    ///
    /// Panics if the active key is not listed: the parser guarantees it, so a
    /// keyring that could not sign our own frames is a programmer error.
    pub fn new(keys: AuthKeys) -> Keyring {
        assert!(
            keys.key(keys.active).is_some(),
            "active authkeys id {} is not listed",
            keys.active
        );
        Keyring { keys }
    }

    /// The parsed keys.
    pub fn keys(&self) -> &AuthKeys {
        &self.keys
    }

    /// The id of the key that signs our outgoing frames (`auth N`), for
    /// `Header::key`.
    pub fn active_id(&self) -> u8 {
        self.keys.active
    }

    /// Whether frames signed with key `key_id` can be verified here.
    pub fn contains(&self, key_id: u8) -> bool {
        self.keys.key(key_id).is_some()
    }

    /// The truncated tag of `data` under key `key_id`.
    ///
    /// Panics if `key_id` is not listed: we only sign with our own keys.
    pub fn sign(&self, key_id: u8, data: &[u8]) -> [u8; MAC_LEN] {
        let key = self
            .keys
            .key(key_id)
            .expect("signing key id is listed in authkeys");
        tag(key, data)
    }

    /// Checks `tag` against `data` under key `key_id`, in constant time.
    ///
    /// Errors: [`FrameError::UnknownKey`] if the id is not listed,
    /// [`FrameError::Mac`] if the tag does not match.
    pub fn verify(&self, key_id: u8, data: &[u8], tag_in: &[u8]) -> Result<(), FrameError> {
        let key = self.keys.key(key_id).ok_or(FrameError::UnknownKey)?;
        let expected = tag(key, data);
        if constant_time_eq(&expected, tag_in) || cfg!(fuzzing) {
            Ok(())
        } else {
            Err(FrameError::Mac)
        }
    }
}

/// The tag of `data` under `key`, per its method.
fn tag(key: &AuthKey, data: &[u8]) -> [u8; MAC_LEN] {
    match key.method {
        AuthMethod::Sha256 => hmac_truncated::<Hmac<sha2::Sha256>>(&key.secret, data),
        AuthMethod::Sha1 => hmac_truncated::<Hmac<sha1::Sha1>>(&key.secret, data),
        AuthMethod::Md5 => hmac_truncated::<Hmac<md5::Md5>>(&key.secret, data),
        // No authentication: a fixed tag, so the frame layout stays the same.
        AuthMethod::Crc => [0u8; MAC_LEN],
    }
}

/// HMAC of `data` keyed by `secret`, truncated to its first [`MAC_LEN`] bytes.
fn hmac_truncated<M: Mac + KeyInit>(secret: &[u8], data: &[u8]) -> [u8; MAC_LEN] {
    let mut mac = <M as KeyInit>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(data);
    let full = mac.finalize().into_bytes();
    assert!(
        full.len() >= MAC_LEN,
        "every supported hash is at least 128 bits"
    );
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&full[..MAC_LEN]);
    out
}

/// Compares two byte strings in time that depends only on their lengths (which
/// are public): xor-accumulates every byte pair, no early exit. As quinn's
/// `constant_time::eq`. Used for every tag comparison, never `==`.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimiser from turning the fold into an early exit.
    core::hint::black_box(diff) == 0
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Every method under its own id: 1 sha256, 2 sha1, 3 md5, 4 crc; active 1.
    pub(crate) fn test_keys() -> AuthKeys {
        let key = |id, method, secret: &[u8]| AuthKey {
            id,
            method,
            secret: secret.to_vec(),
        };
        AuthKeys {
            active: 1,
            keys: vec![
                key(1, AuthMethod::Sha256, b"sha256 secret"),
                key(2, AuthMethod::Sha1, b"sha1 secret"),
                key(3, AuthMethod::Md5, b"md5 secret"),
                key(4, AuthMethod::Crc, b""),
            ],
        }
    }

    #[test]
    fn sign_sha256_matches_rfc4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let keys = AuthKeys {
            active: 7,
            keys: vec![AuthKey {
                id: 7,
                method: AuthMethod::Sha256,
                secret: b"Jefe".to_vec(),
            }],
        };
        let tag = Keyring::new(keys).sign(7, b"what do ya want for nothing?");
        let want = [
            0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24, 0x26, 0x08, 0x95,
            0x75, 0xc7,
        ];
        assert_eq!(tag, want);
    }

    #[test]
    fn sign_md5_matches_rfc2104_case_2() {
        // RFC 2202 test case 2 for HMAC-MD5.
        let keys = AuthKeys {
            active: 1,
            keys: vec![AuthKey {
                id: 1,
                method: AuthMethod::Md5,
                secret: b"Jefe".to_vec(),
            }],
        };
        let tag = Keyring::new(keys).sign(1, b"what do ya want for nothing?");
        let want = [
            0x75, 0x0c, 0x78, 0x3e, 0x6a, 0xb0, 0xb5, 0x03, 0xea, 0xa8, 0x6e, 0x31, 0x0a, 0x5d,
            0xb7, 0x38,
        ];
        assert_eq!(tag, want);
    }

    #[test]
    fn sign_sha1_matches_rfc2202_case_2() {
        let keys = AuthKeys {
            active: 1,
            keys: vec![AuthKey {
                id: 1,
                method: AuthMethod::Sha1,
                secret: b"Jefe".to_vec(),
            }],
        };
        let tag = Keyring::new(keys).sign(1, b"what do ya want for nothing?");
        let want = [
            0xef, 0xfc, 0xdf, 0x6a, 0xe5, 0xeb, 0x2f, 0xa2, 0xd2, 0x74, 0x16, 0xd5, 0xf1, 0x84,
            0xdf, 0x9c,
        ];
        assert_eq!(tag, want);
    }

    #[test]
    fn verify_every_method_accepts_own_tag() {
        let ring = Keyring::new(test_keys());
        for id in 1..=4 {
            let tag = ring.sign(id, b"payload");
            assert_eq!(ring.verify(id, b"payload", &tag), Ok(()));
        }
        assert_eq!(ring.sign(4, b"anything"), [0u8; MAC_LEN]);
    }

    #[test]
    fn verify_changed_data_is_mac() {
        let ring = Keyring::new(test_keys());
        for id in 1..=3 {
            let tag = ring.sign(id, b"payload");
            assert_eq!(ring.verify(id, b"paylOad", &tag), Err(FrameError::Mac));
        }
    }

    #[test]
    fn verify_other_key_is_mac() {
        let ring = Keyring::new(test_keys());
        let tag = ring.sign(1, b"payload");
        for id in 2..=4 {
            assert_eq!(ring.verify(id, b"payload", &tag), Err(FrameError::Mac));
        }
    }

    #[test]
    fn verify_unlisted_id_is_unknown_key() {
        let ring = Keyring::new(test_keys());
        assert_eq!(
            ring.verify(9, b"payload", &[0u8; MAC_LEN]),
            Err(FrameError::UnknownKey)
        );
        assert!(!ring.contains(9));
        assert_eq!(ring.active_id(), 1);
    }

    #[test]
    fn constant_time_eq_compares_content_and_length() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
