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
//! exactly as Heartbeat reads it. A `#` inside a secret is part of the secret.
//! Heartbeat (`sscanf("%d%s%s")`) kept only the first word of the secret; bascule
//! keeps the whole rest of the line and warns when it holds blanks, so a phrase
//! is not silently cut short. Differences from Heartbeat, on purpose: key
//! numbers are 1..=255 (a frame carries a u8; Heartbeat allowed 0..=15), and the
//! mode check refuses any group or other bit, not only the read bits.
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
            // Heartbeat refuses this too ("Auth method [crc] doesn't use a key").
            return Err(error(
                line,
                format!("key {id}: crc takes no secret; remove the text after `crc`"),
            ));
        }
        return Ok(AuthKey {
            id,
            method,
            secret: Vec::new(),
        });
    }
    if secret.contains(char::is_whitespace) {
        let message = format!(
            "key {id}: the secret contains blanks; bascule uses the whole rest of the line \
             (Heartbeat used only its first word)"
        );
        warnings.push(warning(line, message));
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

#[cfg(test)]
mod tests {
    use super::*;

    const GUIDE: &str = include_str!("../../tests/fixtures/config/guide-bcast/authkeys");

    #[track_caller]
    fn ok(text: &str) -> (AuthKeys, Vec<ConfigWarning>) {
        let mut warnings = Vec::new();
        match parse(text, &mut warnings) {
            Ok(auth) => (auth, warnings),
            Err(e) => panic!("unexpected error: {e}\n--- text:\n{text}"),
        }
    }

    #[track_caller]
    fn assert_err(text: &str, line: usize, needle: &str) {
        let mut warnings = Vec::new();
        let e = parse(text, &mut warnings).expect_err(text);
        assert_eq!(e.file, FileKind::AuthKeys);
        assert_eq!(e.line, line, "{e}");
        assert!(
            e.message.contains(needle),
            "`{}` lacks `{needle}`",
            e.message
        );
    }

    // ==== Tests for the guide's file ====

    #[test]
    fn guide_file_keeps_quotes_in_the_secret() {
        let (auth, warnings) = ok(GUIDE);
        assert_eq!(auth.active, 1);
        let key = auth.active_key();
        assert_eq!((key.id, key.method), (1, AuthMethod::Md5));
        // Heartbeat reads the rest of the line literally: the quotes are part of the key.
        assert_eq!(key.secret, b"\"Icimonsupermotdepasse\"");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0]
            .message
            .contains("md5 is kept for Heartbeat compatibility"));
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let (auth, _) = ok(GUIDE);
        let shown = format!("{auth:?}");
        assert!(!shown.contains("Icimonsupermotdepasse"), "{shown}");
        assert!(shown.contains("<23 bytes>"), "{shown}");
    }

    // ==== Tests for methods and keys ====

    #[test]
    fn every_method_parses_and_all_keys_are_kept() {
        let text = "# keys\n\nauth 2\n1 sha256 s3cret with spaces  \n2 SHA1 abc#def\n3 md5 x\n4 crc\n255 sha256 last\n";
        let (auth, warnings) = ok(text);
        assert_eq!(auth.active, 2);
        let ids: Vec<u8> = auth.keys.iter().map(|k| k.id).collect();
        assert_eq!(ids, [1, 2, 3, 4, 255]);
        assert_eq!(auth.key(1).unwrap().secret, b"s3cret with spaces");
        assert_eq!(auth.key(2).unwrap().method, AuthMethod::Sha1);
        assert_eq!(auth.key(2).unwrap().secret, b"abc#def");
        assert_eq!(auth.key(4).unwrap().secret, b"");
        assert!(auth.key(5).is_none());
        let weaker: Vec<_> = warnings
            .iter()
            .filter(|w| w.message.contains("sha1 is kept"))
            .collect();
        assert_eq!(weaker.len(), 1, "{warnings:?}");
    }

    #[test]
    fn method_names_round_trip() {
        for method in AuthMethod::ALL {
            assert_eq!(AuthMethod::from_name(method.name()), Some(method));
        }
        assert_eq!(AuthMethod::from_name("sha512"), None);
    }

    #[test]
    fn sha256_active_gives_no_warning() {
        let (_, warnings) = ok("auth 1\n1 sha256 secret\n");
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn crc_active_warns_loudly() {
        let (auth, warnings) = ok("auth 1\n1 crc\n");
        assert_eq!(auth.active_key().method, AuthMethod::Crc);
        assert_eq!(warnings.len(), 1);
        assert_eq!(
            warnings[0].to_string(),
            "authkeys: method crc authenticates nothing: anyone on the link can forge heartbeats; use sha256"
        );
    }

    #[test]
    fn crc_with_text_is_refused_like_heartbeat() {
        assert_err("auth 1\n1 sha256 k\n2 crc junk\n", 3, "crc takes no secret");
    }

    #[test]
    fn secret_with_blanks_is_kept_whole_with_a_warning() {
        let (auth, warnings) = ok("auth 1\n1 sha256 two words\n");
        assert_eq!(auth.active_key().secret, b"two words");
        assert!(warnings
            .iter()
            .any(|w| w.line == 2 && w.message.contains("first word")));
    }

    #[test]
    fn auth_line_may_carry_a_comment() {
        let (auth, _) = ok("auth 1 # the sending key\n1 sha256 k\n");
        assert_eq!(auth.active, 1);
    }

    // ==== Tests for errors ====

    #[test]
    fn errors_name_the_line() {
        assert_err("1 sha256 k\n", 0, "no `auth N` line");
        assert_err(
            "auth 2\n1 sha256 k\n",
            1,
            "`auth 2` names a key that is not listed (listed: 1)",
        );
        assert_err("auth 1\n", 1, "listed: none");
        assert_err(
            "auth 1\nauth 1\n1 sha256 k\n",
            2,
            "`auth` is given twice (first on line 1)",
        );
        assert_err("auth\n1 sha256 k\n", 1, "needs the number");
        assert_err("auth 1 2\n1 sha256 k\n", 1, "takes one key number");
        assert_err(
            "auth 1\n1 sha256 a\n1 md5 b\n",
            3,
            "key 1 is listed twice (first on line 2)",
        );
        assert_err("auth 1\n0 sha256 k\n", 2, "out of range: use 1 to 255");
        assert_err("auth 1\n256 sha256 k\n", 2, "out of range");
        assert_err("auth 1\n-1 sha256 k\n", 2, "not a key number");
        assert_err("auth 0\n", 1, "out of range");
        assert_err(
            "auth 1\nkey sha256 k\n",
            2,
            "`key` is not a key number or `auth`",
        );
        assert_err(
            "auth 1\n1 sha512 k\n",
            2,
            "unknown method `sha512` for key 1",
        );
        assert_err("auth 1\n1\n", 2, "key 1 has no method");
        assert_err("auth 1\n1 md5\n", 2, "key 1 (md5) has no secret");
        assert_err("auth 1\n1 md5    \n", 2, "has no secret");
        let long = "x".repeat(KEY_LEN_MAX + 1);
        assert_err(&format!("auth 1\n1 sha256 {long}\n"), 2, "longer than 256");
        let (auth, _) = ok(&format!("auth 1\n1 sha256 {}\n", "x".repeat(KEY_LEN_MAX)));
        assert_eq!(auth.active_key().secret.len(), KEY_LEN_MAX);
    }

    // ==== Tests for check_mode ====

    #[test]
    fn check_mode_refuses_group_or_other_bits() {
        assert_eq!(check_mode(0o100600), Ok(()));
        assert_eq!(check_mode(0o400), Ok(()));
        assert_eq!(
            check_mode(0o100644),
            Err(
                "mode 0644 lets group or others read the keys; run chmod 0600 authkeys".to_string()
            )
        );
        assert!(check_mode(0o640).unwrap_err().contains("read"));
        assert!(check_mode(0o620)
            .unwrap_err()
            .contains("mode 0620 lets group or others change"));
        assert!(check_mode(0o601).is_err());
    }
}
