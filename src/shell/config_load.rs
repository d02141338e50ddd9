//! Reads the config dir (ha.cf, authkeys, haresources, drbd.conf and what it
//! includes) and resolves this node.
//!
//! Layer: shell (file I/O and the authkeys mode check); parsing is `config`'s.
//! Every error names the full path and line (`/etc/bascule/ha.cf:12: message`), so
//! an operator can jump straight to it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::cli::ShellError;
use crate::config::drbd::{glob_match, DrbdConf, DrbdError, DrbdWarning, IncludeReader};
use crate::config::{Config, ConfigError, ConfigWarning, FileKind};

/// The replicated disk's configuration file in the config dir.
pub const DRBD_CONF: &str = "drbd.conf";

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
    /// `<dir>/drbd.conf` and its includes; None when the file is absent.
    pub drbd: Option<DrbdConf>,
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
    let drbd = load_drbd(dir)?;
    let expected = dir.join(DRBD_CONF);
    crate::config::check_drbddisk(
        &config.resources,
        drbd.as_ref(),
        &nodes[local],
        &nodes[peer],
        &expected.display().to_string(),
    )
    .map_err(|e| config_error(dir, &e))?;
    Ok(Loaded {
        node: nodes[local].clone(),
        peer_name: nodes[peer].clone(),
        local: local as u8,
        peer: peer as u8,
        dir: dir.to_path_buf(),
        config,
        drbd,
    })
}

/// `<dir>/<file>:<line>: message` for a drbd.conf error (the file may be an
/// included one, named relative to the config dir or absolute).
pub fn drbd_error(dir: &Path, e: &DrbdError) -> ShellError {
    let path = dir.join(&e.file);
    ShellError::Config(if e.line == 0 {
        format!("{}: {}", path.display(), e.message)
    } else {
        format!("{}:{}: {}", path.display(), e.line, e.message)
    })
}

/// A drbd.conf warning line as `check-config` prints it.
pub fn drbd_warning_line(dir: &Path, w: &DrbdWarning) -> String {
    format!(
        "warning: {}:{}: {}",
        dir.join(&w.file).display(),
        w.line,
        w.message
    )
}

/// Reads `<dir>/drbd.conf` with its includes; None when it does not exist.
pub fn load_drbd(dir: &Path) -> Result<Option<DrbdConf>, ShellError> {
    let path = dir.join(DRBD_CONF);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ShellError::Config(format!(
                "{}: cannot read: {}",
                path.display(),
                e
            )))
        }
    };
    let mut reader = DirReader { dir };
    DrbdConf::parse(DRBD_CONF, &text, &mut reader)
        .map(Some)
        .map_err(|e| drbd_error(dir, &e))
}

/// Resolves drbd.conf's `include` patterns in the config dir: relative
/// patterns from the config dir (the parser has already joined them with the
/// including file's directory), wildcards in the last component matched with
/// [`glob_match`], matches in name order, as glob(3).
struct DirReader<'a> {
    dir: &'a Path,
}

impl IncludeReader for DirReader<'_> {
    fn read_matching(&mut self, pattern: &str) -> Result<Vec<(String, String)>, String> {
        let (parent, last) = match pattern.rsplit_once('/') {
            Some((parent, last)) => (format!("{parent}/"), last),
            None => (String::new(), pattern),
        };
        let names: Vec<String> = if last.contains(['*', '?', '[']) {
            let listing = match std::fs::read_dir(self.dir.join(&parent)) {
                Ok(listing) => listing,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(format!("cannot list {parent}: {e}")),
            };
            let mut names: Vec<String> = listing
                .filter_map(|entry| entry.ok())
                .filter(|entry| entry.file_type().is_ok_and(|t| !t.is_dir()))
                .filter_map(|entry| entry.file_name().into_string().ok())
                .filter(|name| glob_match(last, name))
                .collect();
            names.sort();
            names
        } else {
            vec![last.to_string()]
        };
        let mut found = Vec::new();
        for name in names {
            let rel = format!("{parent}{name}");
            match std::fs::read_to_string(self.dir.join(&rel)) {
                Ok(text) => found.push((rel, text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("cannot read {rel}: {e}")),
            }
        }
        Ok(found)
    }
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
    if let Some(drbd) = &loaded.drbd {
        for res in drbd.resources_on(&loaded.node) {
            let resolved = drbd
                .resource_for(&res.name, &loaded.node)
                .map_err(ShellError::Config)?;
            out.push_str(&resolved.render_effective());
            out.push('\n');
        }
    }
    for w in &loaded.config.warnings {
        out.push_str(&warning_line(dir, w));
        out.push('\n');
    }
    for w in loaded.drbd.iter().flat_map(|d| &d.warnings) {
        out.push_str(&drbd_warning_line(dir, w));
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

    /// A fresh config dir with the guide's ha.cf, authkeys (0600) and
    /// haresources (which uses drbddisk::repl); removed on drop.
    struct ConfigDir(PathBuf);

    impl ConfigDir {
        fn new(tag: &str) -> ConfigDir {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let dir = std::env::temp_dir().join(format!(
                "bascule-drbdconf-{tag}-{}-{nanos}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            for file in ["ha.cf", "authkeys", "haresources"] {
                let from = format!("{FIXTURES}/config/guide-bcast/{file}");
                std::fs::copy(from, dir.join(file)).unwrap();
            }
            let mode = std::fs::Permissions::from_mode(0o600);
            std::fs::set_permissions(dir.join("authkeys"), mode).unwrap();
            ConfigDir(dir)
        }

        fn write(&self, rel: &str, text: &str) {
            let path = self.0.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
    }

    impl Drop for ConfigDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn guide_drbd() -> String {
        std::fs::read_to_string(format!("{FIXTURES}/drbd/guide.conf")).unwrap()
    }

    fn message(e: ShellError) -> String {
        match e {
            ShellError::Config(m) => m,
            other => panic!("not a config error: {other:?}"),
        }
    }

    #[test]
    fn load_reads_the_guide_drbd_conf() {
        let d = ConfigDir::new("guide");
        d.write("drbd.conf", &guide_drbd());
        let loaded = load(&d.0, "debian2").unwrap();
        let drbd = loaded.drbd.as_ref().expect("drbd.conf loaded");
        let r = drbd.resource_for("repl", &loaded.node).unwrap();
        assert_eq!(r.peer_address.to_string(), "10.0.0.1:7788");
        let out = check_config(&d.0, "debian1").unwrap();
        assert!(
            out.contains("drbd_resource repl host=debian1 peer=debian2 device=/dev/drbd0 disk=/dev/hda5 meta_disk=internal address=10.0.0.1:7788 peer_address=10.0.0.2:7788 protocol=C resync_rate_bytes=104857600 "),
            "{out}"
        );
    }

    #[test]
    fn drbddisk_without_drbd_conf_is_refused_naming_the_file() {
        let d = ConfigDir::new("absent");
        let e = message(load(&d.0, "debian1").unwrap_err());
        let expected = format!(
            "{}:1: drbddisk::repl: needs drbd.conf, and {} does not exist",
            d.0.join("haresources").display(),
            d.0.join("drbd.conf").display()
        );
        assert_eq!(e, expected);
        // Without drbddisk, no drbd.conf is needed.
        d.write("haresources", "debian1 192.168.69.16 apache\n");
        assert!(load(&d.0, "debian1").unwrap().drbd.is_none());
    }

    #[test]
    fn drbd_errors_and_warnings_carry_full_path_and_line() {
        let d = ConfigDir::new("errors");
        d.write(
            "drbd.conf",
            "global { usage-count yes; }\ninclude \"drbd.d/*.res\";\n",
        );
        d.write(
            "drbd.d/repl.res",
            &guide_drbd().replace("rate 100M;", "rate 100M;\n    al-extents 257;"),
        );
        d.write("drbd.d/notes.txt", "not drbd syntax {");
        let out = check_config(&d.0, "debian1").unwrap();
        let usage = format!(
            "warning: {}:1: 'usage-count' is not implemented, ignored\n",
            d.0.join("drbd.conf").display()
        );
        let al = format!(
            "warning: {}:14: 'al-extents' is not implemented, ignored\n",
            d.0.join("drbd.d/repl.res").display()
        );
        assert!(out.contains(&usage) && out.contains(&al), "{out}");
        d.write(
            "drbd.d/repl.res",
            &guide_drbd().replace("rate 100M;", "rat 100M;"),
        );
        let e = message(load(&d.0, "debian1").unwrap_err());
        assert_eq!(
            e,
            format!(
                "{}:13: unknown option 'rat' in section 'syncer'; did you mean 'rate'?",
                d.0.join("drbd.d/repl.res").display()
            )
        );
        d.write(
            "drbd.d/repl.res",
            &guide_drbd().replace("resource repl", "resource data"),
        );
        let e = message(load(&d.0, "debian1").unwrap_err());
        assert!(
            e.ends_with(
                "haresources:1: drbddisk::repl: drbd.conf has no resource 'repl' (resources: data)"
            ),
            "{e}"
        );
    }

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
