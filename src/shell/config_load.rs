//! Reads the config dir (ha.cf, authkeys, haresources) and resolves this node.
//!
//! Layer: shell (file I/O and the authkeys mode check); parsing is `config`'s.
//! Every error names the full path and line (`/etc/bascule/ha.cf:12: message`), so
//! an operator can jump straight to it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::cli::ShellError;
use crate::config::{Config, ConfigError, ConfigWarning, FileKind};

/// A configuration ready to run: parsed, cross-checked, this node resolved.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The parsed files.
    pub config: Config,
    /// The config dir, for messages.
    pub dir: PathBuf,
    /// Our index in ha.cf's `node` list.
    pub local: u8,
    /// The peer's index.
    pub peer: u8,
    /// Our name.
    pub node: String,
    /// The peer's name.
    pub peer_name: String,
}

/// `<dir>/<file>:<line>: message` (line omitted when 0).
pub fn located(dir: &Path, file: FileKind, line: usize, message: &str) -> String {
    let path = dir.join(file.file_name());
    if line == 0 {
        format!("{}: {}", path.display(), message)
    } else {
        format!("{}:{}: {}", path.display(), line, message)
    }
}

/// A parse error with the full path.
pub fn config_error(dir: &Path, e: &ConfigError) -> ShellError {
    ShellError::Config(located(dir, e.file, e.line, &e.message))
}

/// A warning line as `check-config` prints it.
pub fn warning_line(dir: &Path, w: &ConfigWarning) -> String {
    format!("warning: {}", located(dir, w.file, w.line, &w.message))
}

fn read(dir: &Path, file: FileKind) -> Result<Option<String>, ShellError> {
    let path = dir.join(file.file_name());
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && file == FileKind::Haresources => {
            Ok(None)
        }
        Err(e) => Err(ShellError::Config(format!(
            "{}: cannot read: {}",
            path.display(),
            e
        ))),
    }
}

/// Refuses an authkeys readable by group or others, as Heartbeat does.
fn check_authkeys_mode(dir: &Path) -> Result<(), ShellError> {
    let path = dir.join(FileKind::AuthKeys.file_name());
    let meta = std::fs::metadata(&path)
        .map_err(|e| ShellError::Auth(format!("{}: cannot read: {}", path.display(), e)))?;
    crate::config::authkeys::check_mode(meta.permissions().mode())
        .map_err(|reason| ShellError::Auth(format!("{}: {}", path.display(), reason)))
}

/// Reads and checks everything; `node` must be one of ha.cf's nodes.
pub fn load(dir: &Path, node: &str) -> Result<Loaded, ShellError> {
    let ha_cf = read(dir, FileKind::HaCf)?.unwrap_or_default();
    check_authkeys_mode(dir)?;
    let authkeys = read(dir, FileKind::AuthKeys)?.unwrap_or_default();
    let haresources = read(dir, FileKind::Haresources)?;
    let config = Config::parse(&ha_cf, &authkeys, haresources.as_deref())
        .map_err(|e| config_error(dir, &e))?;
    let nodes = &config.ha.nodes;
    let not_pair = || {
        located(
            dir,
            FileKind::HaCf,
            0,
            &format!("needs exactly two `node` lines, found {}", nodes.len()),
        )
    };
    if nodes.len() != 2 {
        return Err(ShellError::Config(not_pair()));
    }
    // ha.cf node names are lower-cased (as Heartbeat does); so is ours, so that a
    // host named `Debian1` finds `node debian1`.
    let Some(local) = nodes.iter().position(|n| n.eq_ignore_ascii_case(node)) else {
        let message = format!(
            "this node `{}` is not one of the nodes ({}); pass --node NAME",
            node,
            nodes.join(", ")
        );
        return Err(ShellError::Config(located(
            dir,
            FileKind::HaCf,
            0,
            &message,
        )));
    };
    let peer = 1 - local;
    Ok(Loaded {
        node: nodes[local].clone(),
        peer_name: nodes[peer].clone(),
        local: local as u8,
        peer: peer as u8,
        dir: dir.to_path_buf(),
        config,
    })
}

/// `check-config`: the effective settings and every warning, or the first error.
pub fn check_config(dir: &Path, node: &str) -> Result<String, ShellError> {
    let loaded = load(dir, node)?;
    let mut out = loaded.config.render_effective();
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&format!(
        "this_node {}\npeer_node {}\n",
        loaded.node, loaded.peer_name
    ));
    for w in &loaded.config.warnings {
        out.push_str(&warning_line(dir, w));
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn located_names_full_path_and_line() {
        let dir = Path::new("/etc/bascule");
        assert_eq!(
            located(dir, FileKind::HaCf, 12, "bad"),
            "/etc/bascule/ha.cf:12: bad"
        );
        assert_eq!(
            located(dir, FileKind::AuthKeys, 0, "bad"),
            "/etc/bascule/authkeys: bad"
        );
    }
}
