//! The boot epoch: a counter persisted in `<state-dir>/boot_epoch`, bumped at every start.
//!
//! Layer: shell (file I/O, runs before the loop starts, so it may block). The
//! epoch goes into every frame header, so a restarted node is never mistaken for
//! a replay. Written crash-safely: temp file, fsync, rename, fsync of the dir.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use super::cli::ShellError;

/// File name of the counter inside the state dir.
pub const BOOT_EPOCH_FILE: &str = "boot_epoch";

/// Reads the stored epoch (0 if absent), stores epoch + 1 durably and returns it.
pub fn bump_boot_epoch(state_dir: &Path) -> Result<u32, ShellError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(state_dir)
        .map_err(|e| ShellError::io(format!("state dir {}", state_dir.display()), e))?;
    let path = state_dir.join(BOOT_EPOCH_FILE);
    let old = match fs::read_to_string(&path) {
        Ok(text) => text.trim().parse::<u32>().map_err(|_| {
            ShellError::Config(format!(
                "{}: not a number: {:?} (delete it to start again from 1)",
                path.display(),
                text.trim()
            ))
        })?,
        Err(e) if e.kind() == ErrorKind::NotFound => 0,
        Err(e) => return Err(ShellError::io(format!("read {}", path.display()), e)),
    };
    let new = old
        .checked_add(1)
        .ok_or_else(|| ShellError::Config(format!("{}: epoch exhausted", path.display())))?;
    let tmp = state_dir.join(format!("{BOOT_EPOCH_FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        writeln!(f, "{new}")?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        File::open(state_dir)?.sync_all()
    };
    write().map_err(|e| ShellError::io(format!("write {}", path.display()), e))?;
    assert!(new > old);
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_starts_at_one_then_increments() {
        let dir = std::env::temp_dir().join(format!("bascule-state-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(bump_boot_epoch(&dir).unwrap(), 1);
        assert_eq!(bump_boot_epoch(&dir).unwrap(), 2);
        assert_eq!(
            fs::read_to_string(dir.join(BOOT_EPOCH_FILE)).unwrap(),
            "2\n"
        );
        fs::write(dir.join(BOOT_EPOCH_FILE), "junk").unwrap();
        assert_eq!(bump_boot_epoch(&dir).unwrap_err().exit_code(), 3);
        let _ = fs::remove_dir_all(&dir);
    }
}
