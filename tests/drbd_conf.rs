//! `bascule check-config` with a drbd.conf, from the outside: the guide's file
//! verbatim is accepted and its effective settings printed; a drbd.conf error
//! and a missing drbd.conf behind haresources' `drbddisk` fail with the full
//! path and line and the configuration exit code (3). Every run is bounded.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_bascule");
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
/// check-config only reads a few files: anything slower is a hang.
const RUN_DEADLINE: Duration = Duration::from_secs(20);
/// Exit code of a configuration error (README, `cli.rs`).
const EXIT_CONFIG: i32 = 3;

/// A config dir with the guide's ha.cf, authkeys (0600) and haresources;
/// removed on drop.
struct ConfigDir(PathBuf);

impl ConfigDir {
    fn new(tag: &str) -> ConfigDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("bascule-drbd-{tag}-{}-{nanos}", std::process::id()));
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

/// A child killed and reaped on drop, also when the test panics.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `bascule check-config` for `node`; (exit code, stdout, stderr).
fn check_config(dir: &Path, node: &str) -> (i32, String, String) {
    let child = Command::new(BIN)
        .args(["--config-dir", dir.to_str().unwrap(), "--node", node])
        .arg("check-config")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Reaped(child);
    let start = Instant::now();
    loop {
        if child.0.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            start.elapsed() < RUN_DEADLINE,
            "check-config still running after {RUN_DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Exited: its pipes are at EOF (small outputs fit the pipe buffer).
    let mut out = String::new();
    let mut err = String::new();
    use std::io::Read;
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let code = child.0.wait().unwrap().code().unwrap_or(-1);
    (code, out, err)
}

fn guide_drbd() -> String {
    std::fs::read_to_string(format!("{FIXTURES}/drbd/guide.conf")).unwrap()
}

#[test]
fn guide_drbd_conf_is_accepted_and_printed() {
    let d = ConfigDir::new("guide");
    d.write("drbd.conf", &guide_drbd());
    let (code, out, err) = check_config(&d.0, "debian2");
    assert_eq!(code, 0, "stderr: {err}");
    assert!(
        out.contains(
            "drbd_resource repl host=debian2 peer=debian1 device=/dev/drbd0 disk=/dev/hda5 \
             meta_disk=internal address=10.0.0.2:7788 peer_address=10.0.0.1:7788 protocol=C \
             resync_rate_bytes=104857600 after_sb_0pri=Disconnect after_sb_1pri=Disconnect \
             after_sb_2pri=Disconnect on_io_error=Detach cram_hmac_alg=none shared_secret=none \
             csums_alg=none verify_alg=none timeout_ms=6000 connect_int_ms=10000 \
             ping_int_ms=10000 ping_timeout_ms=500 wfc_timeout_ms=0 degr_wfc_timeout_ms=120000 \
             handlers=none\n"
        ),
        "{out}"
    );
}

#[test]
fn included_file_error_names_its_path_and_line() {
    let d = ConfigDir::new("include");
    d.write("drbd.conf", "include \"drbd.d/*.res\";\n");
    let broken = guide_drbd().replace("on-io-error detach;", "on-io-error detatch;");
    d.write("drbd.d/repl.res", &broken);
    let (code, _, err) = check_config(&d.0, "debian1");
    assert_eq!(code, EXIT_CONFIG, "stderr: {err}");
    let expected = format!(
        "{}:9: on-io-error: 'detatch' is not one of detach, pass_on, call-local-io-error; \
         did you mean 'detach'? (in section 'disk')",
        d.0.join("drbd.d/repl.res").display()
    );
    assert!(err.contains(&expected), "{err}");
}

#[test]
fn ignored_options_are_listed_as_warnings() {
    let d = ConfigDir::new("warn");
    let text = guide_drbd().replace(
        "  syncer {\n",
        "  net {\n    allow-two-primaries;\n  }\n  syncer {\n",
    );
    d.write("drbd.conf", &text);
    let (code, out, err) = check_config(&d.0, "debian1");
    assert_eq!(code, 0, "stderr: {err}");
    let expected = format!(
        "warning: {}:13: 'allow-two-primaries' is not implemented, ignored: bascule never \
         allows two Primaries\n",
        d.0.join("drbd.conf").display()
    );
    assert!(out.contains(&expected), "{out}");
}

#[test]
fn drbddisk_without_drbd_conf_names_the_expected_file() {
    let d = ConfigDir::new("absent");
    let (code, _, err) = check_config(&d.0, "debian1");
    assert_eq!(code, EXIT_CONFIG, "stderr: {err}");
    let expected = format!(
        "{}:1: drbddisk::repl: needs drbd.conf, and {} does not exist",
        d.0.join("haresources").display(),
        d.0.join("drbd.conf").display()
    );
    assert!(err.contains(&expected), "{err}");
}

#[test]
fn drbddisk_naming_another_resource_is_refused() {
    let d = ConfigDir::new("other");
    d.write(
        "drbd.conf",
        &guide_drbd().replace("resource repl", "resource data"),
    );
    let (code, _, err) = check_config(&d.0, "debian1");
    assert_eq!(code, EXIT_CONFIG, "stderr: {err}");
    assert!(
        err.contains(
            "haresources:1: drbddisk::repl: drbd.conf has no resource 'repl' (resources: data)"
        ),
        "{err}"
    );
}
