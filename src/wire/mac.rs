//! Frame authentication: HMAC-SHA256/SHA1/MD5 truncated to 16 bytes, or none (`crc`).
//!
//! Layer: pure. Tags are compared only in constant time.

use crate::config::AuthKeys;

/// The keys from authkeys, ready to sign and verify. Built once at start-up.
pub struct Keyring {
    keys: AuthKeys,
}

impl Keyring {
    /// Builds the keyring from the parsed authkeys.
    pub fn new(keys: AuthKeys) -> Keyring {
        Keyring { keys }
    }

    /// The parsed keys.
    pub fn keys(&self) -> &AuthKeys {
        &self.keys
    }
}
