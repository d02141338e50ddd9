//! `authkeys`: which key signs outgoing frames, and every key accepted on receive.
//!
//! Layer: pure parser. It may not read the file or its metadata: the shell reads
//! the mode and asks [`check_mode`], which refuses a file group or others can
//! access, as Heartbeat does.
//!
//! Syntax (Heartbeat's `parse_authfile`): blank lines and lines whose first
//! non-blank character is `#` are ignored; `auth N` selects the sending key;
//! `N METHOD [SECRET]` lists a key. The secret is the rest of the line after the
//! method, with surrounding blanks trimmed and taken *literally*: the guide's
//! `1 md5 "Icimonsupermotdepasse"` has a 23-byte secret that includes both quotes,
//! exactly as Heartbeat reads it, so a migrated pair keeps interoperating. A `#`
//! inside a secret is part of the secret.
//!
//! Invariants of an `Ok(AuthKeys)`: the active key is listed; ids are distinct
//! and in 1..=255; sha256/sha1/md5 keys have 1..=[`KEY_LEN_MAX`] bytes of secret;
//! crc keys have none.

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
    /// Every method, strongest first.
    pub const ALL: [AuthMethod; 4] = [
        AuthMethod::Sha256,
        AuthMethod::Sha1,
        AuthMethod::Md5,
        AuthMethod::Crc,
    ];

    /// Parses the method word (case-insensitive, as Heartbeat's plugin names).
    pub fn from_name(word: &str) -> Option<AuthMethod> {
        AuthMethod::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(word))
    }

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
        write!(
            f,
            "AuthKey {{ id: {}, method: {:?}, secret: <{} bytes> }}",
            self.id,
            self.method,
            self.secret.len()
        )
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
        self.key(self.active)
            .expect("parser guarantees the active key exists")
    }

    /// The key with this id, if listed.
    pub fn key(&self, id: u8) -> Option<&AuthKey> {
        self.keys.iter().find(|k| k.id == id)
    }
}

/// The warning for an active `crc` method (exact text, so operators can grep it).
pub const CRC_WARNING: &str =
    "method crc authenticates nothing: anyone on the link can forge heartbeats; use sha256";

/// Refuses an authkeys file mode that lets group or others access the keys
/// (`mode & 0o077 != 0`), with the reason and the fix, as Heartbeat refuses to
/// start. The shell passes `metadata.mode()`.
pub fn check_mode(mode: u32) -> Result<(), String> {
    /// Permission bits for group and others.
    const GROUP_OTHER_MASK: u32 = 0o077;
    /// Read bits for group and others.
    const GROUP_OTHER_READ: u32 = 0o044;
    if mode & GROUP_OTHER_MASK == 0 {
        return Ok(());
    }
    let what = if mode & GROUP_OTHER_READ != 0 {
        "read"
    } else {
        "change"
    };
    Err(format!(
        "mode {:04o} lets group or others {what} the keys; run chmod 0600 authkeys",
        mode & 0o7777
    ))
}

/// Parses `authkeys`. Warns loudly when the active method is `crc`, and once
/// when it is md5 or sha1 (kept for Heartbeat compatibility, weaker than sha256).
pub fn parse(text: &str, warnings: &mut Vec<ConfigWarning>) -> Result<AuthKeys, ConfigError> {
    let mut active: Option<(u8, usize)> = None;
    let mut keys: Vec<AuthKey> = Vec::new();
    let mut key_lines: Vec<usize> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.trim();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let (first, rest) = split_word(content);
        if first == "auth" {
            if let Some((_, first_line)) = active {
                return Err(error(
                    line,
                    format!("`auth` is given twice (first on line {first_line}): keep one"),
                ));
            }
            active = Some((parse_auth_line(rest, line)?, line));
            continue;
        }
        let key = parse_key_line(first, rest, line, warnings)?;
        if let Some(position) = keys.iter().position(|k| k.id == key.id) {
            let message = format!(
                "key {} is listed twice (first on line {}): give each key its own number",
                key.id, key_lines[position]
            );
            return Err(error(line, message));
        }
        keys.push(key);
        key_lines.push(line);
    }
    let Some((active, auth_line)) = active else {
        return Err(error(
            0,
            "no `auth N` line: add `auth 1` to choose the key that signs heartbeats".into(),
        ));
    };
    let Some(key) = keys.iter().find(|k| k.id == active) else {
        let listed: Vec<String> = keys.iter().map(|k| k.id.to_string()).collect();
        let listed = if listed.is_empty() {
            "none".to_string()
        } else {
            listed.join(", ")
        };
        return Err(error(auth_line, format!("`auth {active}` names a key that is not listed (listed: {listed}); add a line `{active} sha256 SECRET`")));
    };
    match key.method {
        AuthMethod::Crc => warnings.push(warning(0, CRC_WARNING.into())),
        AuthMethod::Md5 | AuthMethod::Sha1 => warnings.push(warning(auth_line, format!(
            "method {} is kept for Heartbeat compatibility; sha256 is stronger: use `N sha256 SECRET` on both nodes",
            key.method.name()
        ))),
        AuthMethod::Sha256 => {}
    }
    let auth = AuthKeys { active, keys };
    assert!(auth.key(auth.active).is_some());
    Ok(auth)
}

/// An authkeys error at `line`.
fn error(line: usize, message: String) -> ConfigError {
    ConfigError {
        file: FileKind::AuthKeys,
        line,
        message,
    }
}

/// An authkeys warning at `line`.
fn warning(line: usize, message: String) -> ConfigWarning {
    ConfigWarning {
        file: FileKind::AuthKeys,
        line,
        message,
    }
}

/// Splits off the first blank-separated word; the rest is left-trimmed.
fn split_word(text: &str) -> (&str, &str) {
    match text.find(char::is_whitespace) {
        Some(end) => (&text[..end], text[end..].trim_start()),
        None => (text, ""),
    }
}

/// A key number 1..=255.
fn parse_id(word: &str, line: usize) -> Result<u8, ConfigError> {
    match word.parse::<u32>() {
        Ok(id) if (1..=255).contains(&id) => Ok(id as u8),
        Ok(_) => Err(error(
            line,
            format!("key number {word} is out of range: use 1 to 255"),
        )),
        Err(_) => Err(error(
            line,
            format!(
                "`{word}` is not a key number or `auth`: lines are `auth N` or `N METHOD SECRET`"
            ),
        )),
    }
}

/// The rest of an `auth N` line: one key number, then optionally a comment.
fn parse_auth_line(rest: &str, line: usize) -> Result<u8, ConfigError> {
    let (word, after) = split_word(rest);
    if word.is_empty() {
        return Err(error(
            line,
            "`auth` needs the number of the key that signs heartbeats, e.g. `auth 1`".into(),
        ));
    }
    if !after.is_empty() && !after.starts_with('#') {
        return Err(error(
            line,
            format!("`auth` takes one key number, got `{rest}`"),
        ));
    }
    parse_id(word, line)
}

/// One `N METHOD [SECRET]` line.
fn parse_key_line(
    first: &str,
    rest: &str,
    line: usize,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<AuthKey, ConfigError> {
    let id = parse_id(first, line)?;
    let (method_word, secret) = split_word(rest);
    if method_word.is_empty() {
        return Err(error(
            line,
            format!("key {id} has no method: write `{id} sha256 SECRET`"),
        ));
    }
    let method = AuthMethod::from_name(method_word).ok_or_else(|| {
        error(line, format!("unknown method `{method_word}` for key {id}: use sha256 (recommended), sha1, md5 or crc"))
    })?;
    if method == AuthMethod::Crc {
        if !secret.is_empty() {
            warnings.push(warning(
                line,
                format!("key {id}: crc takes no secret; the text after `crc` is ignored"),
            ));
        }
        return Ok(AuthKey {
            id,
            method,
            secret: Vec::new(),
        });
    }
    if secret.is_empty() {
        return Err(error(
            line,
            format!(
                "key {id} ({}) has no secret: write `{id} {} SECRET`",
                method.name(),
                method.name()
            ),
        ));
    }
    if secret.len() > KEY_LEN_MAX {
        return Err(error(
            line,
            format!(
                "key {id}: the secret is {} bytes, longer than {KEY_LEN_MAX}; use a shorter one",
                secret.len()
            ),
        ));
    }
    Ok(AuthKey {
        id,
        method,
        secret: secret.as_bytes().to_vec(),
    })
}
