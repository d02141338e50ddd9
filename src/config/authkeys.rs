//! `authkeys`: which key signs outgoing frames, and every key accepted on receive.
//!
//! Layer: pure parser. The mode check (refuse a file readable by group or others)
//! needs the file's metadata and lives in the shell, with the same message.

use super::{ConfigError, ConfigWarning, FileKind};

/// Longest key accepted, in bytes (HMAC takes any length; this bounds memory).
pub const KEY_LEN_MAX: usize = 256;

/// An authentication method, as Heartbeat names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    /// HMAC-SHA256 (recommended).
    Sha256,
    /// HMAC-SHA1.
    Sha1,
    /// HMAC-MD5 (the guide's choice).
    Md5,
    /// CRC only: integrity against line noise, no authentication at all.
    Crc,
}

impl AuthMethod {
    /// The word used in authkeys and in logs.
    pub const fn name(self) -> &'static str {
        match self {
            AuthMethod::Sha256 => "sha256",
            AuthMethod::Sha1 => "sha1",
            AuthMethod::Md5 => "md5",
            AuthMethod::Crc => "crc",
        }
    }
}

/// One `N method key` line.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthKey {
    /// The key number N (1..=255); carried in each frame so the receiver picks the key.
    pub id: u8,
    /// The method.
    pub method: AuthMethod,
    /// The secret (empty for `crc`). Never printed: Debug redacts it.
    pub secret: Vec<u8>,
}

impl core::fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        write!(f, "AuthKey {{ id: {}, method: {:?}, secret: <{} bytes> }}", self.id, self.method, self.secret.len())
    }
}

/// The parsed file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthKeys {
    /// The `auth N` selection: the id of the key that signs outgoing frames.
    pub active: u8,
    /// Every listed key, in file order (all are accepted on receive).
    pub keys: Vec<AuthKey>,
}

impl AuthKeys {
    /// The key that signs outgoing frames.
    pub fn active_key(&self) -> &AuthKey {
        self.key(self.active).expect("parser guarantees the active key exists")
    }

    /// The key with this id, if listed.
    pub fn key(&self, id: u8) -> Option<&AuthKey> {
        self.keys.iter().find(|k| k.id == id)
    }
}

/// Parses `authkeys`. Warns loudly when the active method is `crc`.
pub fn parse(text: &str, warnings: &mut Vec<ConfigWarning>) -> Result<AuthKeys, ConfigError> {
    let _ = (text, warnings, FileKind::AuthKeys);
    todo!("config helper")
}
